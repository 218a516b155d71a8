"""Which GPUs a program may use: ROCR_VISIBLE_DEVICES, then HIP_VISIBLE_DEVICES, as the ROCm stack applies them.

ROCr filters the KFD topology's GPU nodes first (ROCm/ROCR-Runtime runtime/hsa-runtime/core/runtime/
amd_topology.cpp with amd_filter_device.cpp, RvdFilter), then HIP filters what ROCr exposes (ROCm/clr
rocclr/device/rocm/rocdevice.cpp, Device::init). Ray hands a task its GPUs through HIP_VISIBLE_DEVICES.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping

from kfdtrace.driver.errors import DeviceError
from kfdtrace.driver.families import UnsupportedTarget, target_by_version
from kfdtrace.driver.topology import Node

ENV_ROCR_VISIBLE = "ROCR_VISIBLE_DEVICES"
ENV_HIP_VISIBLE = "HIP_VISIBLE_DEVICES"
VISIBILITY_VARIABLES = (ENV_ROCR_VISIBLE, ENV_HIP_VISIBLE)  # in the order they apply


def gpu_uuid(node: Node) -> str | None:
    """The GPU's UUID as ROCr forms it: "GPU-" and its unique_id in 16 hex digits; None when unique_id is 0.

    ROCR-Runtime amd_filter_device.cpp RvdFilter::BuildDeviceUuidList (and amd_gpu_agent.cpp,
    HSA_AMD_AGENT_INFO_UUID): `"GPU-" << setfill('0') << setw(16) << hex << UniqueID`; a device whose
    UniqueID is 0 has no UUID ("GPU-XX") and can only be named by index.
    """
    unique_id = node.properties.get("unique_id", 0)
    return f"GPU-{unique_id:016x}" if unique_id else None


def visible_gpus(gpus: list[Node], environ: Mapping[str, str]) -> list[Node]:
    """The GPUs of `gpus` (the topology's GPU nodes, in topology order) a program may use, in device order.

    Each variable, when set, is a comma-separated list of entries: a decimal index into the GPUs left so far
    (ROCR_VISIBLE_DEVICES: the topology's GPU nodes; HIP_VISIBLE_DEVICES: what ROCR_VISIBLE_DEVICES left)
    or a UUID ("GPU-" and hex digits, any case; a prefix naming one GPU is enough, as in ROCr; HIP matches
    UUIDs too since ROCm 6.2, clr CHANGELOG). The listed order is the device order. Unset: no filtering.
    Set but empty (or blank): no GPU, as ROCr does and as Ray reads it (clr would read an empty
    HIP_VISIBLE_DEVICES as unset).

    Where ROCm is lax we are strict: ROCr and HIP silently keep the entries before the first bad one (an
    index out of range, a UUID matching no GPU, a malformed entry; for ROCr also a UUID prefix matching
    several GPUs or a repeated GPU, where HIP takes the first match and skips repeats) and drop the rest.
    Here any of those is a DeviceError naming the variable, its value and the GPUs there are, so a mistyped
    list never quietly runs on fewer GPUs. Indices are plain decimal (ROCr's strtol would also take 0x1 or
    010), and CUDA_VISIBLE_DEVICES, HIP's fallback, is not read.
    """
    for name in VISIBILITY_VARIABLES:
        if name in environ:
            gpus = _select(name, environ[name], gpus)
    return gpus


def visibility(environ: Mapping[str, str]) -> str:
    """The visibility variables set in `environ`, as a shell would set them ("" when neither is)."""
    return " ".join(f"{name}={shlex.quote(environ[name])}" for name in VISIBILITY_VARIABLES if name in environ)


def _select(name: str, value: str, gpus: list[Node]) -> list[Node]:
    if not value.strip():
        return []
    chosen: list[Node] = []
    for entry in value.split(","):
        node = _pick(name, value, entry.strip(), gpus)
        if any(node is c for c in chosen):
            raise _error(name, value, f"{entry.strip()} names GPU {gpus.index(node)} again", gpus)
        chosen.append(node)
    return chosen


def _pick(name: str, value: str, entry: str, gpus: list[Node]) -> Node:
    if entry.isascii() and entry.isdigit():
        if int(entry) >= len(gpus):
            raise _error(name, value, f"index {entry} is out of range", gpus)
        return gpus[int(entry)]
    if len(entry) > 4 and entry.upper().startswith("GPU-"):
        matches = [n for n in gpus if (gpu_uuid(n) or "").upper().startswith(entry.upper())]
        if len(matches) != 1:
            raise _error(name, value, f"{entry} matches {len(matches) or 'no'} GPU{'s' * (len(matches) > 1)}",
                         gpus)
        return matches[0]
    raise _error(name, value, f"{entry!r} is neither a GPU index nor a GPU-<hex> UUID", gpus)


def _error(name: str, value: str, problem: str, gpus: list[Node]) -> DeviceError:
    kind = "GPU" if name == ENV_ROCR_VISIBLE else "visible GPU"
    listing = ", ".join(f"{i}: {_describe(n)}" for i, n in enumerate(gpus))
    there = {0: f"there is no {kind}", 1: f"there is 1 {kind} ({listing})"}.get(
        len(gpus), f"there are {len(gpus)} {kind}s ({listing})")
    return DeviceError(f"{name}={shlex.quote(value)}: {problem}; {there}")


def _describe(node: Node) -> str:
    try:
        target = target_by_version(node.gfx_target_version).name
    except UnsupportedTarget:
        target = f"gfx_target_version {node.gfx_target_version}"
    uuid = gpu_uuid(node)
    return f"{target} gpu_id {node.gpu_id:#06x}" + (f" {uuid}" if uuid else "")
