"""Check kfdtrace.driver.drm_ioctl against the installed DRM headers (drm.h, amdgpu_drm.h), compiled with gcc.

The header is KFDTRACE_AMDGPU_DRM_H when set, else the kernel's uapi copy (/usr/include/drm/amdgpu_drm.h, where
a distribution's linux-libc-dev ships it) or libdrm's (/usr/include/libdrm/amdgpu_drm.h: Debian's libdrm-dev).
Request codes and constants come from running a small C program, layouts from its DWARF, walked as
tests/test_kfd_abi.py walks the KFD ones; an older header's struct must be a prefix of ours (ABI_CHANGES).
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kfdtrace.driver import drm_ioctl as D
from tests.test_kfd_abi import Layout, compare_struct, dwarf_layouts

CANDIDATES = [Path("/usr/include/drm/amdgpu_drm.h"), Path("/usr/include/libdrm/amdgpu_drm.h")]
INSTALL_HINT = "install them with `apt-get install gcc libdrm-dev` (or a linux-libc-dev that ships drm/)"
STRUCTS = ["drm_version", "drm_amdgpu_info", "drm_amdgpu_query_fw", "drm_amdgpu_info_device",
           "drm_amdgpu_info_vram_gtt"]
REQUESTS = {"VERSION": "DRM_IOCTL_VERSION", "AMDGPU_INFO": "DRM_IOCTL_AMDGPU_INFO"}
HEADER_VERSION = (3, 0)  # amdgpu_drm.h carries no version: every recorded layout change may postdate it


def _header() -> Path:
    named = os.environ.get("KFDTRACE_AMDGPU_DRM_H")
    found = [Path(named)] if named else [c for c in CANDIDATES if c.is_file()]
    if not found or not found[0].is_file():
        pytest.fail(f"no amdgpu_drm.h (looked for {named or ', '.join(map(str, CANDIDATES))}); {INSTALL_HINT}")
    return found[0]


@pytest.fixture(scope="module")
def header(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, int], dict[str, Layout]]:
    """(header text, request codes by our name, layouts by struct name)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail(f"gcc not found: the DRM ABI check needs gcc and the DRM headers; {INSTALL_HINT}")
    path = _header()
    tmp = tmp_path_factory.mktemp("drm_abi")
    src = ["#include <stdio.h>", f'#include "{path.resolve()}"']
    src += [f"struct {s} kfdtrace_v_{s};" for s in STRUCTS]
    src += ["int main(void) {"]
    src += [rf'printf("{ours} %lu\n", (unsigned long){macro});' for ours, macro in REQUESTS.items()]
    src += ["return 0; }"]
    (tmp / "abi.c").write_text("\n".join(src) + "\n")
    cc = subprocess.run([gcc, "-g", "-O0", "-I", str(path.parent), "-o", str(tmp / "abi"), str(tmp / "abi.c")],
                        capture_output=True, text=True)
    assert cc.returncode == 0, f"gcc failed on {path}:\n{cc.stderr}"
    out = subprocess.run([str(tmp / "abi")], capture_output=True, text=True, check=True).stdout
    codes = {name: int(value) for name, value in (line.split() for line in out.splitlines())}
    layouts = dwarf_layouts(tmp / "abi", set(STRUCTS))
    assert set(layouts) == set(STRUCTS), f"no DWARF for {sorted(set(STRUCTS) - set(layouts))}"
    text = path.read_text() + (path.parent / "drm.h").read_text()  # amdgpu_drm.h includes "drm.h"
    return re.sub(r"\\\n", " ", text), codes, layouts


def test_requests_match_the_header(header):
    _, codes, _ = header
    assert {name: D.BY_NAME[name].request for name in REQUESTS} == codes


def test_structs_match_the_header(header):
    _, _, layouts = header
    problems = [p for name, layout in layouts.items() for p in compare_struct(name, layout, HEADER_VERSION, D)]
    assert not problems, "\n".join(problems)


def test_constants_match_the_header(header):
    text, _, _ = header

    def defined(prefix: str) -> dict[str, int]:
        return {n: int(v, 0) for n, v in re.findall(rf"^#define\s+{prefix}(\w+)\s+(0x[0-9a-fA-F]+|\d+)\b", text, re.M)}

    families, queries, flags = defined("AMDGPU_FAMILY_"), defined("AMDGPU_INFO_"), defined("AMDGPU_IDS_FLAGS_")
    assert {f.name: f.value for f in D.AmdgpuFamily if f.name in families} == \
        {n: v for n, v in families.items() if n in D.AmdgpuFamily.__members__}
    assert {"AI", "NV", "VGH", "YC"} <= families.keys()  # the ones every header read has
    assert all(queries[q.name] == q.value for q in D.AmdgpuInfoQuery)
    assert flags["FUSION"] == D.AMDGPU_IDS_FLAGS_FUSION
    assert flags.get("GANG_SUBMIT", D.AMDGPU_IDS_FLAGS_GANG_SUBMIT) == D.AMDGPU_IDS_FLAGS_GANG_SUBMIT  # newer only
    base = defined("DRM_COMMAND_")
    assert (base["BASE"], base["END"]) == (D.DRM_COMMAND_BASE, D.DRM_COMMAND_END)


def test_newer_layout_is_the_upstream_one():
    """include/uapi/drm/amdgpu_drm.h @ 0030595c: drm_amdgpu_info_device ends with userq_ip_mask and pad, 448
    bytes; the 2.4.114-era header's 368 bytes (up to tcc_disabled_mask) are a prefix, two paddings renamed."""
    assert ctypes.sizeof(D.drm_amdgpu_info_device) == 448
    assert D.drm_amdgpu_info_device.min_engine_clock.offset == 368
    assert ctypes.sizeof(D.drm_version) == 64 and ctypes.sizeof(D.drm_amdgpu_info) == 32
    change = D.ABI_CHANGES[0]
    assert change.old_size == 368 and change.renamed == {"_pad": "pcie_gen", "_pad1": "pcie_num_lanes"}
