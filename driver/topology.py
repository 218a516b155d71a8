"""KFD topology: read it from sysfs, hold it as plain data, and write it back in the kernel's file format.

The tree under /sys/devices/virtual/kfd/kfd/topology (torvalds/linux drivers/gpu/drm/amd/amdkfd/
kfd_topology.c):
  generation_id, system_properties
  nodes/N/{gpu_id, name, properties}
  nodes/N/{mem_banks, caches, io_links, p2p_links}/M/properties
Every properties file is "key value" lines of unsigned decimal integers, except a cache's "sibling_map" line,
a comma-separated list of 0/1 bits. That line is held as two integers: "sibling_map" (bit i = entry i) and
"sibling_map_bits" (the number of entries), so that writing it back gives the same text.

All file access goes through a SysfsReader, the one syscall boundary for sysfs.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kfdtrace.driver.syscalls import KFD_TOPOLOGY

# Memory heap types (kfd_topology.h / HSA): system RAM, then VRAM visible to the host (large BAR) or not.
HEAP_TYPE_SYSTEM = 0
HEAP_TYPE_FB_PUBLIC = 1
HEAP_TYPE_FB_PRIVATE = 2
VRAM_HEAP_TYPES = (HEAP_TYPE_FB_PUBLIC, HEAP_TYPE_FB_PRIVATE)

# IO link types (kfd_crat.h CRAT_IOLINK_TYPE_*).
IOLINK_TYPE_PCIEXPRESS = 2
IOLINK_TYPE_XGMI = 11

# Property order of each file, as kfd_topology.c prints it. node_show prints everything up to num_cp_queues
# for every node, the block from max_engine_clk_fcompute to num_xcc only for GPU nodes, and
# max_engine_clk_ccompute last. cwsr_size/ctl_stack_size (upstream 8fc2796dea6f) and capability2 exist only
# on newer kernels; keys absent from a node are simply not printed.
NODE_PROPERTY_ORDER: tuple[str, ...] = (
    "cpu_cores_count", "simd_count", "mem_banks_count", "caches_count", "io_links_count", "p2p_links_count",
    "cpu_core_id_base", "simd_id_base", "max_waves_per_simd", "lds_size_in_kb", "gds_size_in_kb", "num_gws",
    "wave_front_size", "array_count", "simd_arrays_per_engine", "cu_per_simd_array", "simd_per_cu",
    "max_slots_scratch_cu", "gfx_target_version", "vendor_id", "device_id", "location_id", "domain",
    "drm_render_minor", "hive_id", "num_sdma_engines", "num_sdma_xgmi_engines", "num_sdma_queues_per_engine",
    "num_cp_queues", "cwsr_size", "ctl_stack_size", "max_engine_clk_fcompute", "local_mem_size", "fw_version",
    "capability", "capability2", "debug_prop", "sdma_fw_version", "unique_id", "num_xcc",
    "max_engine_clk_ccompute",
)  # fmt: skip
MEM_BANK_PROPERTY_ORDER = ("heap_type", "size_in_bytes", "flags", "width", "mem_clk_max")
CACHE_PROPERTY_ORDER = (
    "processor_id_low", "level", "size", "cache_line_size", "cache_lines_per_tag", "association", "latency",
    "type", "sibling_map",
)  # fmt: skip
IO_LINK_PROPERTY_ORDER = (
    "type", "version_major", "version_minor", "node_from", "node_to", "weight", "min_latency", "max_latency",
    "min_bandwidth", "max_bandwidth", "recommended_transfer_size", "recommended_sdma_engine_id_mask", "flags",
)  # fmt: skip
SYSTEM_PROPERTY_ORDER = ("platform_oem", "platform_id", "platform_rev")

_BITS_SUFFIX = "_bits"
_SUBDIRS = ("mem_banks", "caches", "io_links", "p2p_links")
_SUBDIR_ORDER = {
    "mem_banks": MEM_BANK_PROPERTY_ORDER,
    "caches": CACHE_PROPERTY_ORDER,
    "io_links": IO_LINK_PROPERTY_ORDER,
    "p2p_links": IO_LINK_PROPERTY_ORDER,
}


class SysfsReader(Protocol):
    """The sysfs half of the syscall boundary (kfdtrace.driver.syscalls implements it for real)."""

    def read_sysfs(self, path: str) -> str: ...  # whole file text; raises FileNotFoundError
    def list_sysfs(self, path: str) -> list[str]: ...  # names in a directory; raises FileNotFoundError


class TopologyError(ValueError):
    """The topology tree is missing something required or holds a malformed file."""


class DirectorySysfs:
    """SysfsReader over a real directory: absolute sysfs paths are looked up under `root` ("/" = as-is)."""

    def __init__(self, root: str | os.PathLike[str] = "/") -> None:
        self.root = Path(root)

    def _real(self, path: str) -> Path:
        return Path(path) if str(self.root) == "/" else self.root / path.lstrip("/")

    def read_sysfs(self, path: str) -> str:
        real = self._real(path)
        if real.is_dir():
            raise FileNotFoundError(f"{path} is a directory")
        return real.read_text()

    def list_sysfs(self, path: str) -> list[str]:
        real = self._real(path)
        if not real.is_dir():
            raise FileNotFoundError(f"no directory {path}")
        return sorted(os.listdir(real))


class DictSysfs:
    """SysfsReader over an in-memory tree {absolute path: file text}; directories are implied by the paths."""

    def __init__(self, files: Mapping[str, str]) -> None:
        self.files: dict[str, str] = {}
        self._dirs: dict[str, set[str]] = {}
        for path, text in files.items():
            norm = _normpath(path)
            self.files[norm] = text
            child, parent = norm, posixpath.dirname(norm)
            while child != parent:
                self._dirs.setdefault(parent, set()).add(posixpath.basename(child))
                child, parent = parent, posixpath.dirname(parent)

    def read_sysfs(self, path: str) -> str:
        try:
            return self.files[_normpath(path)]
        except KeyError:
            raise FileNotFoundError(f"no file {path}") from None

    def list_sysfs(self, path: str) -> list[str]:
        try:
            return sorted(self._dirs[_normpath(path)])
        except KeyError:
            raise FileNotFoundError(f"no directory {path}") from None


def _normpath(path: str) -> str:
    return posixpath.normpath("/" + path.lstrip("/"))


# A properties file is one page (kfd_topology.c's sysfs show functions print into PAGE_SIZE): a bit list, "0," or
# "1," an entry, has at most half as many entries.
MAX_BIT_LIST = 2048


def parse_properties(text: str) -> dict[str, int]:
    """Parse a KFD properties file ("key value" lines); blank and '#' lines are ignored.

    Values are unsigned decimal integers (64-bit ones such as hive_id may exceed 2**63). A "sibling_map" bit
    list becomes the integer mask "sibling_map" plus its length "sibling_map_bits".
    """
    props: dict[str, int] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, _, value = stripped.partition(" ")
        value = value.strip()
        if key == "sibling_map" or "," in value:
            bits = [b for b in value.split(",") if b.strip()]
            if any(b.strip() not in ("0", "1") for b in bits):
                raise ValueError(f"malformed bit list in property line {line!r}")
            props[key] = sum(1 << i for i, b in enumerate(bits) if b.strip() == "1")
            props[key + _BITS_SUFFIX] = len(bits)
            continue
        if not value.isdigit():
            raise ValueError(f"malformed property line {line!r} (want 'key unsigned-integer')")
        props[key] = int(value)
    return props


def format_properties(props: Mapping[str, int], order: Iterable[str] = ()) -> str:
    """Inverse of parse_properties: one "key value" line each, keys of `order` first, the rest as given."""
    order = tuple(order)
    keys = [k for k in order if k in props] + [k for k in props if k not in order]
    bit_keys = {k[: -len(_BITS_SUFFIX)] for k in props if k.endswith(_BITS_SUFFIX)} & set(props)
    lines = []
    for key in keys:
        if key.endswith(_BITS_SUFFIX) and key[: -len(_BITS_SUFFIX)] in bit_keys:
            continue
        value = props[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise TypeError(f"property {key} must be an unsigned int, not {value!r}")
        if key in bit_keys:
            count = props[key + _BITS_SUFFIX]
            bits = ",".join(str((value >> i) & 1) for i in range(count))
            lines.append(f"{key} {bits}" if bits else key)
        else:
            lines.append(f"{key} {value}")
    return "".join(line + "\n" for line in lines)


PropertyList = list[dict[str, int]]
_U64_MAX = 2**64 - 1


def _plain(props: Mapping[str, int]) -> dict[str, int | str]:
    return {k: str(v) if v > _U64_MAX else v for k, v in props.items()}


@dataclass
class Node:
    """One topology node: a CPU (gpu_id 0) or a GPU, with its property dicts."""

    index: int
    gpu_id: int
    name: str
    properties: dict[str, int]
    mem_banks: PropertyList = field(default_factory=list)
    caches: PropertyList = field(default_factory=list)
    io_links: PropertyList = field(default_factory=list)
    p2p_links: PropertyList = field(default_factory=list)

    @property
    def is_gpu(self) -> bool:
        return self.gpu_id != 0

    @property
    def gfx_target_version(self) -> int:
        return self.properties.get("gfx_target_version", 0)

    @property
    def num_xcc(self) -> int:
        return self.properties.get("num_xcc") or 1

    @property
    def cu_count(self) -> int:
        """Compute units: simd_count / simd_per_cu (0 on CPU nodes)."""
        simd_per_cu = self.properties.get("simd_per_cu", 0)
        return self.properties.get("simd_count", 0) // simd_per_cu if simd_per_cu else 0

    @property
    def resident_waves(self) -> int:
        """Waves the GPU holds at once, whatever their registers: simd_count * max_waves_per_simd."""
        return self.properties.get("simd_count", 0) * self.properties.get("max_waves_per_simd", 0)

    @property
    def vram_size(self) -> int:
        """Bytes of the node's frame-buffer banks (heap types FB_PUBLIC and FB_PRIVATE)."""
        return sum(b.get("size_in_bytes", 0) for b in self.mem_banks if b.get("heap_type") in VRAM_HEAP_TYPES)

    @property
    def large_bar(self) -> bool:
        """The host sees all of the GPU's VRAM (kfd_dev_is_large_bar), which the topology shows as frame-buffer
        banks that are all FB_PUBLIC (kfd_crat.c reports FB_PRIVATE when part of VRAM is not host-visible).
        Only then may a VRAM buffer be allocated PUBLIC (kfd_ioctl_alloc_memory_of_gpu: EINVAL otherwise)."""
        return not any(b.get("heap_type") == HEAP_TYPE_FB_PRIVATE for b in self.mem_banks)

    @property
    def num_sdma_engines(self) -> int:
        return self.properties.get("num_sdma_engines", 0)

    @property
    def num_sdma_xgmi_engines(self) -> int:
        return self.properties.get("num_sdma_xgmi_engines", 0)

    @property
    def drm_render_minor(self) -> int:
        return self.properties.get("drm_render_minor", 0)

    def to_dict(self) -> dict[str, Any]:
        """Plain data; integers wider than 64 bits (long sibling maps) become decimal strings for msgpack."""
        return {
            "index": self.index,
            "gpu_id": self.gpu_id,
            "name": self.name,
            "properties": _plain(self.properties),
            **{sub: [_plain(p) for p in getattr(self, sub)] for sub in _SUBDIRS},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Node:
        """The node `to_dict` gave (ValueError or TypeError for data no kernel's sysfs could hold)."""
        return cls(
            index=int(data["index"]),
            gpu_id=int(data["gpu_id"]),
            name=str(data["name"]),
            properties=_properties(data["properties"]),
            **{sub: [_properties(p) for p in data.get(sub, ())] for sub in _SUBDIRS},
        )


def _properties(data: Mapping[str, Any]) -> dict[str, int]:
    """A properties dict from plain data: unsigned values, bit lists no longer than a properties file holds."""
    props = {str(k): int(v) for k, v in data.items()}
    for key, value in props.items():
        if value < 0:
            raise ValueError(f"{key} is {value}: properties are unsigned")
        if key.endswith(_BITS_SUFFIX) and value > MAX_BIT_LIST:
            raise ValueError(f"{key} is {value}: a properties file holds a bit list of at most {MAX_BIT_LIST}")
    return props


@dataclass
class Topology:
    """The whole KFD topology: system properties and nodes (node 0 is normally the CPU)."""

    system_properties: dict[str, int]
    nodes: list[Node]
    generation_id: int = 1

    @property
    def gpus(self) -> list[Node]:
        return [n for n in self.nodes if n.is_gpu]

    def gpu(self, gpu_id: int) -> Node:
        """The GPU node with this gpu_id; KeyError naming the known ids otherwise."""
        for node in self.nodes:
            if node.is_gpu and node.gpu_id == gpu_id:
                return node
        raise KeyError(f"no GPU with gpu_id {gpu_id}; known: {[n.gpu_id for n in self.gpus]}")

    def link(self, node_from: int, node_to: int) -> dict[str, int] | None:
        """The io_link or p2p_link from node index `node_from` to `node_to`, if any (io_links first)."""
        node = next((n for n in self.nodes if n.index == node_from), None)  # skipped nodes leave gaps
        for link in (node.io_links + node.p2p_links) if node else ():
            if link.get("node_to") == node_to:
                return link
        return None

    def to_dict(self) -> dict[str, Any]:
        """Plain data (ints, strings, lists, dicts) for msgpack/JSON."""
        return {
            "generation_id": self.generation_id,
            "system_properties": dict(self.system_properties),
            "nodes": [n.to_dict() for n in self.nodes],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Topology:
        return cls(
            system_properties={str(k): int(v) for k, v in data.get("system_properties", {}).items()},
            nodes=[Node.from_dict(n) for n in data["nodes"]],
            generation_id=int(data.get("generation_id", 1)),
        )


def _read_props(sysfs: SysfsReader, path: str) -> dict[str, int]:
    text = sysfs.read_sysfs(path)
    try:
        return parse_properties(text)
    except ValueError as e:
        raise TopologyError(f"{path}: {e}") from None


def _read_int(sysfs: SysfsReader, path: str, default: int) -> int:
    try:
        text = sysfs.read_sysfs(path).strip()
    except FileNotFoundError:
        return default
    if not text.isdigit():
        raise TopologyError(f"{path}: expected an unsigned integer, got {text!r}")
    return int(text)


def _numbered(sysfs: SysfsReader, path: str) -> list[int]:
    try:
        names = sysfs.list_sysfs(path)
    except FileNotFoundError:
        return []
    return sorted(int(n) for n in names if n.isdigit())


def _read_entries(sysfs: SysfsReader, node_path: str, sub: str) -> PropertyList:
    entries = []
    for i in _numbered(sysfs, f"{node_path}/{sub}"):
        path = f"{node_path}/{sub}/{i}/properties"
        try:
            entries.append(_read_props(sysfs, path))
        except FileNotFoundError:
            raise TopologyError(f"missing {path}") from None
    return entries


def read_topology(sysfs: SysfsReader, root: str = KFD_TOPOLOGY) -> Topology:
    """Read the KFD topology tree under `root` through `sysfs`.

    Missing mem_banks/caches/io_links/p2p_links directories, names and system properties are tolerated;
    a GPU node (gpu_id != 0) without a properties file is a TopologyError naming the path. A node whose files
    cannot be read for permission (a GPU outside the process's device cgroup: kfd_topology.c answers EPERM
    through kfd_devcgroup_check_permission) is left out, as libhsakmt does; the others keep their indices.
    """
    root = root.rstrip("/")
    try:
        indices = sorted(int(n) for n in sysfs.list_sysfs(f"{root}/nodes") if n.isdigit())
    except FileNotFoundError:
        raise TopologyError(f"no KFD topology: missing directory {root}/nodes") from None
    try:
        system_properties = _read_props(sysfs, f"{root}/system_properties")
    except FileNotFoundError:
        system_properties = {}
    nodes = []
    for index in indices:
        try:
            nodes.append(_read_node(sysfs, f"{root}/nodes/{index}", index))
        except PermissionError:
            continue
    generation_id = _read_int(sysfs, f"{root}/generation_id", 0)
    return Topology(system_properties, nodes, generation_id)


def _read_node(sysfs: SysfsReader, node_path: str, index: int) -> Node:
    gpu_id = _read_int(sysfs, f"{node_path}/gpu_id", 0)
    try:
        name = sysfs.read_sysfs(f"{node_path}/name").removesuffix("\n")
    except FileNotFoundError:
        name = ""
    try:
        properties = _read_props(sysfs, f"{node_path}/properties")
    except FileNotFoundError:
        if gpu_id:
            raise TopologyError(f"GPU node {index} (gpu_id {gpu_id}) has no {node_path}/properties") from None
        properties = {}
    entries = (_read_entries(sysfs, node_path, sub) for sub in _SUBDIRS)
    return Node(index, gpu_id, name, properties, *entries)


def write_sysfs_tree(topology: Topology, root: str = KFD_TOPOLOGY) -> dict[str, str]:
    """The topology as {absolute path: file text} in the kernel's format (usable by DictSysfs)."""
    root = root.rstrip("/")
    files = {
        f"{root}/generation_id": f"{topology.generation_id}\n",
        f"{root}/system_properties": format_properties(topology.system_properties, SYSTEM_PROPERTY_ORDER),
    }
    for node in topology.nodes:
        node_path = f"{root}/nodes/{node.index}"
        files[f"{node_path}/gpu_id"] = f"{node.gpu_id}\n"
        files[f"{node_path}/name"] = f"{node.name}\n"
        files[f"{node_path}/properties"] = format_properties(node.properties, NODE_PROPERTY_ORDER)
        for sub in _SUBDIRS:
            for i, props in enumerate(getattr(node, sub)):
                files[f"{node_path}/{sub}/{i}/properties"] = format_properties(props, _SUBDIR_ORDER[sub])
        if node.is_gpu:  # kfd_build_sysfs_node_entry adds "used_memory" (VRAM in use, bytes) to a GPU's banks
            for i in range(len(node.mem_banks)):
                files[f"{node_path}/mem_banks/{i}/used_memory"] = "0\n"
    return files


def dump_to_directory(
    topology: Topology, directory: str | os.PathLike[str], root: str = KFD_TOPOLOGY
) -> None:
    """Write the tree under `directory` (DirectorySysfs(directory) reads it back), empty subdirs included."""
    base = Path(directory)
    for path, text in write_sysfs_tree(topology, root).items():
        target = base / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    for node in topology.nodes:
        for sub in (*_SUBDIRS, "perf"):  # the kernel creates these directories even when empty
            (base / root.strip("/") / "nodes" / str(node.index) / sub).mkdir(parents=True, exist_ok=True)
