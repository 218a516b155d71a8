"""Realistic emulated KFD topologies: one board spec per supported target, plus a CPU node.

Boards are data. Numbers marked "dump" were copied from captured nodes/N/properties text (sources named per
board); the rest are plausible values for the real part (CU counts and VRAM from the product, the other keys
following the dumped boards of the same family) and are marked "plausible". Per-instance keys (counts of
banks/caches/links, location_id, drm_render_minor, simd_id_base, gpu_id, cwsr_size, ctl_stack_size) are
derived when a topology is built, so they stay consistent with the files actually emitted.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from kfdtrace.driver.families import UnsupportedTarget, queue_sizes, target_by_name
from kfdtrace.driver.topology import (
    HEAP_TYPE_FB_PRIVATE,
    HEAP_TYPE_FB_PUBLIC,
    HEAP_TYPE_SYSTEM,
    IOLINK_TYPE_PCIEXPRESS,
    IOLINK_TYPE_XGMI,
    NODE_PROPERTY_ORDER,
    Node,
    Topology,
)

GIB = 1 << 30
MIB = 1 << 20
# KFD reports a dGPU's VRAM 16 MiB short of the marketed size (dumps: 24 GiB 25753026560, 64 GiB 68702699520,
# 192 GiB 206141652992, 8 GiB 8573157376).
_VRAM_RESERVED = 16 * MIB

# HSA_CACHE_TYPE_* (kfd_topology.h): DATA 1, INSTRUCTION 2, CPU 4, HSACU 8.
_DATA_CACHE = 1 | 8
_INST_CACHE = 2 | 8

_SIMD_ID_BASE = 0x80001000  # first GPU processor id (dumps: 2147487744); later GPUs continue after its SIMDs
_RENDER_MINOR_BASE = 128

# Keys every GPU node prints with the same value on all supported boards (dumps: MI300X, RX 7900 XTX).
_GPU_COMMON: dict[str, int] = {
    "cpu_cores_count": 0, "cpu_core_id_base": 0, "lds_size_in_kb": 64, "gds_size_in_kb": 0, "num_gws": 64,
    "max_slots_scratch_cu": 32, "vendor_id": 0x1002, "domain": 0, "local_mem_size": 0, "capability2": 0,
    "num_xcc": 1,
}  # fmt: skip

# Keys shared by a family. CDNA: MI300X dump (8 waves/SIMD, 4 SIMD/CU, 24 CP queues, 8 SDMA queues/engine).
# RDNA3: RX 7900 XTX dump. RDNA2: 16 waves/SIMD (Mesa ac_gpu_info: gfx10.3+), 24 CP queues as on non-MES gfx9.
# RDNA4: as RDNA3. SDMA queues/engine: kfd_device.c kfd_device_info_set_sdma_info (8, minus 2 reserved on
# SDMA 6.x/7.x, 2 on the 5.2.1/5.2.3/5.2.6 APUs).
_FAMILY_COMMON: dict[str, dict[str, int]] = {
    "CDNA": {"max_waves_per_simd": 8, "wave_front_size": 64, "simd_per_cu": 4, "simd_arrays_per_engine": 1,
             "num_sdma_queues_per_engine": 8, "num_cp_queues": 24},
    "RDNA2": {"max_waves_per_simd": 16, "wave_front_size": 32, "simd_per_cu": 2, "simd_arrays_per_engine": 2,
              "num_sdma_queues_per_engine": 8, "num_cp_queues": 24, "debug_prop": 1495},
    "RDNA3": {"max_waves_per_simd": 16, "wave_front_size": 32, "simd_per_cu": 2, "simd_arrays_per_engine": 2,
              "num_sdma_queues_per_engine": 6, "num_cp_queues": 8, "debug_prop": 1495},
}  # fmt: skip
_FAMILY_COMMON["RDNA4"] = _FAMILY_COMMON["RDNA3"]


@dataclass(frozen=True)
class Cache:
    """One GPU cache level as the kernel's cache tables describe it (size in KiB)."""

    level: int
    size_kb: int
    line_size: int
    type: int = _DATA_CACHE
    cu_shared: int = 1  # CUs per instance (1 = per-CU L1; 0 = whole GPU)


@dataclass(frozen=True)
class Board:
    """An emulated GPU board: fixed node properties plus memory, caches and link data."""

    key: str  # "mi300x"
    target: str  # "gfx942"
    marketing_name: str
    kfd_name: str  # nodes/N/name: lower-cased amdgpu_asic_name ("ip discovery" for IP-discovery ASICs)
    source: str
    properties: Mapping[str, int]  # per-board node properties (family and common keys are merged in)
    vram_bytes: int
    vram_heap_type: int = HEAP_TYPE_FB_PUBLIC  # FB_PRIVATE = host cannot see all VRAM (small BAR)
    vram_width: int = 256
    mem_clk_max: int = 1000
    caches: tuple[Cache, ...] = ()
    pcie_gen: int = 4  # 0 = integrated (APU): KFD reports no PCIe bandwidth
    pcie_width: int = 16
    location_id: int = 0x0300  # PCI bus<<8 | devfn of the first instance
    unique_id: int = 0
    hive_id: int = 0  # nonzero: instances share an xGMI hive and link over xGMI
    xgmi_bandwidth: int = 0  # MB/s per xGMI peer link

    @property
    def cu_count(self) -> int:
        return self.properties["simd_count"] // self.node_properties()["simd_per_cu"]

    def node_properties(self) -> dict[str, int]:
        """The board's fixed node properties: common, family and board keys merged."""
        family = target_by_name(self.target).family.name
        merged = {**_GPU_COMMON, **_FAMILY_COMMON["CDNA" if family.startswith("CDNA") else family]}
        merged.update(self.properties)
        return merged


def _vram(gib: int) -> int:
    return gib * GIB - _VRAM_RESERVED


def _rdna_caches(l2_kb: int, l3_kb: int, l0_kb: int = 32) -> tuple[Cache, ...]:
    l1 = (Cache(1, l0_kb, 128), Cache(1, 32, 64, _INST_CACHE, cu_shared=2))
    caches = (*l1, Cache(2, l2_kb, 128, cu_shared=0))
    return caches + ((Cache(3, l3_kb, 64, cu_shared=0),) if l3_kb else ())


_CDNA2_CACHES = (
    Cache(1, 16, 64),
    Cache(1, 64, 64, _INST_CACHE, cu_shared=2),
    Cache(2, 8192, 128, cu_shared=0),
)
_CDNA3_CACHES = (
    Cache(1, 32, 128),
    Cache(1, 64, 64, _INST_CACHE, cu_shared=2),
    Cache(2, 4096, 128, cu_shared=0),
    Cache(3, 262144, 64, cu_shared=0),  # 256 MiB Infinity Cache
)

BOARDS: tuple[Board, ...] = (
    Board(
        "mi250x", "gfx90a", "AMD Instinct MI250X (one GCD)", "aldebaran",
        "plausible: 110 CUs/GCD (8 SE x 14), 5 SDMA = 2 PCIe + 3 xGMI (kfd_get_num_sdma_engines), 64 GB bank "
        "68702699520 (ROCm/rocm_smi_lib src/rocm_smi_kfd.cc comment), debug_prop as the MI100 dump in "
        "mrodden/rocmi tests/test_kfd.py",
        {"simd_count": 440, "array_count": 8, "cu_per_simd_array": 14, "gfx_target_version": 90010,
         "device_id": 0x740C, "num_sdma_engines": 2, "num_sdma_xgmi_engines": 3,
         "max_engine_clk_fcompute": 1700,
         "fw_version": 78, "capability": 746037888, "debug_prop": 1494, "sdma_fw_version": 9},
        _vram(64), vram_width=4096, mem_clk_max=1600, caches=_CDNA2_CACHES, location_id=0x2900,
        unique_id=0x5E3A_91C4_0B7D_2F16, hive_id=0x3A1F_6C2E_9B04_D857, xgmi_bandwidth=50000,
    ),
    Board(
        "mi210", "gfx90a", "AMD Instinct MI210", "aldebaran",
        "plausible: 104 CUs, 64 GB (68702699520 as MI2xx in rocm_smi_kfd.cc), PCIe card without a bridge",
        {"simd_count": 416, "array_count": 8, "cu_per_simd_array": 13, "gfx_target_version": 90010,
         "device_id": 0x740F, "num_sdma_engines": 2, "num_sdma_xgmi_engines": 3,
         "max_engine_clk_fcompute": 1700,
         "fw_version": 78, "capability": 746037888, "debug_prop": 1494, "sdma_fw_version": 9},
        _vram(64), vram_width=4096, mem_clk_max=1600, caches=_CDNA2_CACHES, location_id=0x0300,
        unique_id=0x1B6D_55A0_C3E8_7F42,
    ),
    Board(
        "mi300x", "gfx942", "AMD Instinct MI300X", "ip discovery",
        "dump: makodevai/gpuq tests/test_hip_runtime.py @377f512b (tests/fixtures/topologies/"
        "mi300x.properties); VRAM 206141652992 as rocm-smi reports on MI300X; memory width/clock plausible",
        {"simd_count": 1216, "array_count": 32, "cu_per_simd_array": 10, "gfx_target_version": 90402,
         "device_id": 29857, "num_sdma_engines": 2, "num_sdma_xgmi_engines": 14,
         "max_engine_clk_fcompute": 2100,
         "fw_version": 166, "capability": 746037888, "debug_prop": 1511, "sdma_fw_version": 22, "num_xcc": 8},
        _vram(192), vram_width=8192, mem_clk_max=1300, caches=_CDNA3_CACHES, pcie_gen=5, location_id=18176,
        unique_id=4376936076086227261, hive_id=10631624818852212319, xgmi_bandwidth=64000,
    ),
    Board(
        "rx6900xt", "gfx1030", "AMD Radeon RX 6900 XT", "sienna_cichlid",
        "plausible: 80 CUs (4 SE x 2 SA x 10), 16 GB; device_id 29615 and simd_count 160 from a public "
        "Linux GPU-probe test fixture; Navi21 has 4 SDMA engines, all PCIe",
        {"simd_count": 160, "array_count": 8, "cu_per_simd_array": 10, "gfx_target_version": 100300,
         "device_id": 29615, "num_sdma_engines": 4, "num_sdma_xgmi_engines": 0,
         "max_engine_clk_fcompute": 2250,
         "fw_version": 118, "capability": 671588992, "sdma_fw_version": 83},
        _vram(16), mem_clk_max=1000, caches=_rdna_caches(4096, 131072, l0_kb=16),
    ),
    Board(
        "rx6700xt", "gfx1031", "AMD Radeon RX 6700 XT", "navy_flounder",
        "plausible: 40 CUs (2 SE x 2 SA x 10), 12 GB, 2 SDMA engines",
        {"simd_count": 80, "array_count": 4, "cu_per_simd_array": 10, "gfx_target_version": 100301,
         "device_id": 0x73DF, "num_sdma_engines": 2, "num_sdma_xgmi_engines": 0,
         "max_engine_clk_fcompute": 2581,
         "fw_version": 118, "capability": 671588992, "sdma_fw_version": 83},
        _vram(12), vram_width=192, mem_clk_max=1000, caches=_rdna_caches(3072, 98304, l0_kb=16),
    ),
    Board(
        "rx6600", "gfx1032", "AMD Radeon RX 6600", "dimgrey_cavefish",
        "simd_count 56, device_id 29695 and bank 8573157376 from a public Rust GPU-probe test fixture "
        "(captured); the rest plausible (2 SE x 2 SA x 8 max CUs)",
        {"simd_count": 56, "array_count": 4, "cu_per_simd_array": 8, "gfx_target_version": 100302,
         "device_id": 29695, "num_sdma_engines": 2, "num_sdma_xgmi_engines": 0,
         "max_engine_clk_fcompute": 2491,
         "fw_version": 118, "capability": 671588992, "sdma_fw_version": 83},
        _vram(8), vram_width=128, mem_clk_max=875, caches=_rdna_caches(2048, 32768, l0_kb=16),
        pcie_width=8,
    ),
    Board(
        "steamdeck", "gfx1033", "AMD Custom APU 0405 (Van Gogh)", "vangogh",
        "plausible: 8 CUs (1 SE x 2 SA x 4), APU (bank = GTT-sized, as the gfx1036 capture); SDMA 5.2.1 "
        "has 2 queues per engine (kfd_device.c)",
        {"simd_count": 16, "array_count": 2, "cu_per_simd_array": 4, "gfx_target_version": 100303,
         "device_id": 0x163F, "num_sdma_engines": 1, "num_sdma_xgmi_engines": 0,
         "num_sdma_queues_per_engine": 2,
         "max_engine_clk_fcompute": 1600, "fw_version": 118, "capability": 671588992, "sdma_fw_version": 83},
        8 * GIB - 256 * MIB, vram_width=128, mem_clk_max=2750, caches=_rdna_caches(1024, 0, l0_kb=16),
        pcie_gen=0, location_id=0x0400,
    ),
    Board(
        "rx6500xt", "gfx1034", "AMD Radeon RX 6500 XT", "beige_goby",
        "plausible: 16 CUs (1 SE x 2 SA x 8), 4 GB, PCIe 4.0 x4, one SDMA engine",
        {"simd_count": 32, "array_count": 2, "cu_per_simd_array": 8, "gfx_target_version": 100304,
         "device_id": 0x743F, "num_sdma_engines": 1, "num_sdma_xgmi_engines": 0,
         "max_engine_clk_fcompute": 2815,
         "fw_version": 118, "capability": 671588992, "sdma_fw_version": 83},
        _vram(4), vram_width=64, mem_clk_max=1125, caches=_rdna_caches(1024, 16384, l0_kb=16), pcie_width=4,
    ),
    Board(
        "radeon680m", "gfx1035", "AMD Radeon 680M (Rembrandt)", "yellow_carp",
        "plausible: 12 CUs (1 SE x 2 SA x 6), APU with GTT-sized bank; SDMA 5.2.3: 2 queues per engine",
        {"simd_count": 24, "array_count": 2, "cu_per_simd_array": 6, "gfx_target_version": 100305,
         "device_id": 0x1681, "num_sdma_engines": 1, "num_sdma_xgmi_engines": 0,
         "num_sdma_queues_per_engine": 2,
         "max_engine_clk_fcompute": 2400, "fw_version": 118, "capability": 671588992, "sdma_fw_version": 83},
        16377958400, vram_width=128, mem_clk_max=3000, caches=_rdna_caches(2048, 0, l0_kb=16), pcie_gen=0,
        location_id=0x6400,
    ),
    Board(
        "raphael", "gfx1036", "AMD Radeon Graphics (Raphael iGPU)", "ip discovery",
        "captured: simd_count 4, location_id 31232 (public Go test fixture), device_id 5710 and bank "
        "16377958400 (public Rust test fixture); SDMA 5.2.6: 2 queues per engine; rest plausible",
        {"simd_count": 4, "array_count": 1, "simd_arrays_per_engine": 1, "cu_per_simd_array": 2,
         "gfx_target_version": 100306, "device_id": 5710, "num_sdma_engines": 1, "num_sdma_xgmi_engines": 0,
         "num_sdma_queues_per_engine": 2, "max_engine_clk_fcompute": 2200, "fw_version": 118,
         "capability": 671588992, "sdma_fw_version": 83},
        16377958400, vram_width=128, mem_clk_max=2400, caches=_rdna_caches(256, 0, l0_kb=16), pcie_gen=0,
        location_id=31232,
    ),
    Board(
        "rx7900xtx", "gfx1100", "AMD Radeon RX 7900 XTX", "ip discovery",
        "dump: public test fixture labelled as a real card's nodes/1/properties (tests/fixtures/topologies/"
        "rx7900xtx.properties); bank 25753026560 from two fixtures; width/clock plausible",
        {"simd_count": 192, "array_count": 12, "cu_per_simd_array": 8, "gfx_target_version": 110000,
         "device_id": 29772, "num_sdma_engines": 2, "num_sdma_xgmi_engines": 0,
         "max_engine_clk_fcompute": 2482,
         "fw_version": 2150, "capability": 671588992, "debug_prop": 1495, "sdma_fw_version": 21},
        _vram(24), vram_width=384, mem_clk_max=1249, caches=_rdna_caches(6144, 98304), location_id=768,
        unique_id=11420932837461522459,
    ),
    Board(
        "rx7800xt", "gfx1101", "AMD Radeon RX 7800 XT", "ip discovery",
        "plausible: 60 CUs (3 SE x 2 SA x 10), 16 GB; other keys as the RX 7900 XTX dump",
        {"simd_count": 120, "array_count": 6, "cu_per_simd_array": 10, "gfx_target_version": 110001,
         "device_id": 0x747E, "num_sdma_engines": 2, "num_sdma_xgmi_engines": 0,
         "max_engine_clk_fcompute": 2430,
         "fw_version": 2150, "capability": 671588992, "sdma_fw_version": 21},
        _vram(16), mem_clk_max=1219, caches=_rdna_caches(4096, 65536),
    ),
    Board(
        "rx7600", "gfx1102", "AMD Radeon RX 7600", "ip discovery",
        "plausible: 32 CUs (2 SE x 2 SA x 8), 8 GB, PCIe 4.0 x8",
        {"simd_count": 64, "array_count": 4, "cu_per_simd_array": 8, "gfx_target_version": 110002,
         "device_id": 0x7480, "num_sdma_engines": 2, "num_sdma_xgmi_engines": 0,
         "max_engine_clk_fcompute": 2655,
         "fw_version": 2150, "capability": 671588992, "sdma_fw_version": 21},
        _vram(8), vram_width=128, mem_clk_max=1125, caches=_rdna_caches(2048, 32768), pcie_width=8,
    ),
    Board(
        "radeon780m", "gfx1103", "AMD Radeon 780M (Phoenix)", "ip discovery",
        "plausible: 12 CUs (1 SE x 2 SA x 6), APU with GTT-sized bank, one SDMA engine",
        {"simd_count": 24, "array_count": 2, "cu_per_simd_array": 6, "gfx_target_version": 110003,
         "device_id": 0x15BF, "num_sdma_engines": 1, "num_sdma_xgmi_engines": 0,
         "max_engine_clk_fcompute": 2700,
         "fw_version": 2150, "capability": 671588992, "sdma_fw_version": 21},
        16377958400, vram_width=128, mem_clk_max=2800, caches=_rdna_caches(2048, 0), pcie_gen=0,
        location_id=0xC400,
    ),
    Board(
        "rx9060xt", "gfx1200", "AMD Radeon RX 9060 XT", "ip discovery",
        "plausible: 32 CUs (2 SE x 2 SA x 8), 16 GB, PCIe 5.0 x16; other keys as the R9700 fixture",
        {"simd_count": 64, "array_count": 4, "cu_per_simd_array": 8, "gfx_target_version": 120000,
         "device_id": 0x7590, "num_sdma_engines": 2, "num_sdma_xgmi_engines": 0,
         "max_engine_clk_fcompute": 3130,
         "fw_version": 3010, "capability": 671588992, "sdma_fw_version": 14},
        _vram(16), vram_width=128, mem_clk_max=1250, caches=_rdna_caches(4096, 32768), pcie_gen=5,
    ),
    Board(
        "r9700", "gfx1201", "AMD Radeon AI PRO R9700", "ip discovery",
        "partial dump: public OCaml test fixture (tests/fixtures/topologies/"
        "r9700_gfx1201_partial.properties: simd/array/CU layout, gfx_target_version, location_id 1280, "
        "fw_version 3010, bank heap_type 2 size 34208743424); completed plausibly: device_id, SDMA counts, "
        "clocks, capability, debug_prop, sdma_fw_version, unique_id, memory width/clock",
        {"simd_count": 128, "array_count": 8, "cu_per_simd_array": 8, "gfx_target_version": 120001,
         "device_id": 0x7551, "num_sdma_engines": 2, "num_sdma_xgmi_engines": 0,
         "max_engine_clk_fcompute": 2920,
         "fw_version": 3010, "capability": 671588992, "sdma_fw_version": 14},
        34208743424, vram_heap_type=HEAP_TYPE_FB_PRIVATE, mem_clk_max=1258, caches=_rdna_caches(8192, 65536),
        pcie_gen=5, location_id=1280,
    ),
    Board(
        "rx9070xt", "gfx1201", "AMD Radeon RX 9070 XT", "ip discovery",
        "plausible: 64 CUs (4 SE x 2 SA x 8), 16 GB, PCIe 5.0 x16; other keys as the R9700 fixture",
        {"simd_count": 128, "array_count": 8, "cu_per_simd_array": 8, "gfx_target_version": 120001,
         "device_id": 0x7550, "num_sdma_engines": 2, "num_sdma_xgmi_engines": 0,
         "max_engine_clk_fcompute": 2970,
         "fw_version": 3010, "capability": 671588992, "sdma_fw_version": 14},
        _vram(16), mem_clk_max=1258, caches=_rdna_caches(8192, 65536), pcie_gen=5,
    ),
)  # fmt: skip

BOARDS_BY_KEY: dict[str, Board] = {b.key: b for b in BOARDS}
# The board a bare target name emulates.
DEFAULT_BOARD: dict[str, str] = {
    "gfx90a": "mi250x", "gfx942": "mi300x", "gfx1030": "rx6900xt", "gfx1031": "rx6700xt", "gfx1032": "rx6600",
    "gfx1033": "steamdeck", "gfx1034": "rx6500xt", "gfx1035": "radeon680m", "gfx1036": "raphael",
    "gfx1100": "rx7900xtx", "gfx1101": "rx7800xt", "gfx1102": "rx7600", "gfx1103": "radeon780m",
    "gfx1200": "rx9060xt", "gfx1201": "r9700",
}  # fmt: skip

# The CPU node: a 64-core EPYC 9554 (128 logical CPUs), as in an MI300X platform. Plausible values; node_show
# prints the GPU-only keys (max_engine_clk_fcompute .. num_xcc) for GPU nodes only.
CPU_NAME = ""  # the kernel leaves a CPU node's name empty
CPU_MAX_ENGINE_CLK_CCOMPUTE = 3750  # cpufreq max of CPU 0 in MHz; the kernel prints it on every node
CPU_MEMORY_BYTES = 270215905280
SYSTEM_PROPERTIES = {"platform_oem": 0, "platform_id": 0, "platform_rev": 0}

_PCIE_GTS = {1: 2.5, 2: 5, 3: 8, 4: 16, 5: 32}
_PCIE_MIN_BANDWIDTH = 312  # MB/s of PCIe 1.0 x1 as KFD counts it (GT/s * lanes / 8 * 1000)
_PCIE_WEIGHT = 20
_XGMI_WEIGHT = 15
# CRAT_IOLINK_FLAGS_* (kfd_crat.h). kfd_topology.c kfd_set_iolink_non_coherent marks the CPU -> GPU PCIe link
# and both directions of a GPU <-> GPU PCIe link NON_COHERENT; a GPU's own link to the CPU and xGMI links
# (other than Vega20's) stay only ENABLED.
_LINK_ENABLED = 1 << 0
_LINK_NON_COHERENT = 1 << 1
# The kernel's amdkfd keeps a process's GPUs in pdds[MAX_GPU_INSTANCE] (kfd_priv.h: 64) and refuses to open
# more; it is also how many render minors 128..191 name. An emulated machine has at most this many GPUs.
MAX_GPUS = 64
_LIMIT_NOTE = f"a process can open at most {MAX_GPUS} GPUs (MAX_GPU_INSTANCE in the kernel's amdkfd kfd_priv.h)"


def supported_names() -> list[str]:
    """Target names and board keys accepted by emulated_topology / parse_emulate_spec."""
    return list(DEFAULT_BOARD) + [b.key for b in BOARDS]


def board_for(name: str) -> Board:
    """The board a target name ("gfx942") or board key ("mi210") stands for; UnsupportedTarget otherwise."""
    key = name.strip().lower()
    if key in BOARDS_BY_KEY:
        return BOARDS_BY_KEY[key]
    if key in DEFAULT_BOARD:
        return BOARDS_BY_KEY[DEFAULT_BOARD[key]]
    target_by_name(key)  # raises UnsupportedTarget for names that are not targets at all
    raise UnsupportedTarget(name, extra=_boards_note())  # a target without a board (never, kept for safety)


def _boards_note() -> str:
    return "; boards: " + ", ".join(f"{b.key} ({b.target})" for b in BOARDS)


def parse_emulate_spec(spec: str) -> list[str]:
    """Split "gfx942,gfx1100" (also "2xgfx942", board keys like "mi210") into a list of names, validated.

    Exactly the names `supported_names` lists, lower case, separated by single commas with no spaces; anything
    else (an empty spec or item, upper case, spaces, more than MAX_GPUS GPUs) raises a one-line ValueError
    naming the bad item."""
    names: list[str] = []
    for item in spec.split(","):
        count, name = _parse_item(item, spec)
        if len(names) + count > MAX_GPUS:
            raise ValueError(f"{spec!r} asks for more than {MAX_GPUS} GPUs: {_LIMIT_NOTE}")
        names.extend([name] * count)
    return names


def _parse_item(item: str, spec: str) -> tuple[int, str]:
    """One item of an emulate spec: (how many, name); UnsupportedTarget naming the item otherwise."""
    head, sep, name = item.partition("x")
    if not (sep and head.isascii() and head.isdigit() and len(head) < 20):
        head, name = "1", item
    if name in supported_names() and int(head) >= 1 and head == str(int(head)):
        return int(head), name
    if not spec:
        hint = "; (the list is empty: name at least one GPU)"
    elif not item:
        hint = f"; (an empty item in {spec!r}: separate names with single commas)"
    elif item != item.strip():
        hint = f"; (no spaces around names: {item.strip()!r})"
    elif item.lower() != item:
        hint = f"; (names are lower case: {item.lower()!r})"
    else:
        hint = ""
    raise UnsupportedTarget(item, extra=_boards_note() + hint)


def _pcie_bandwidth(board: Board) -> tuple[int, int]:
    if not board.pcie_gen:
        return 0, 0
    return _PCIE_MIN_BANDWIDTH, int(_PCIE_GTS[board.pcie_gen] * board.pcie_width / 8 * 1000)


def _link(
    kind: int, node_from: int, node_to: int, weight: int, bandwidth: tuple[int, int], sdma_mask: int,
    flags: int = _LINK_ENABLED,
) -> dict[str, int]:
    return {
        "type": kind, "version_major": 0, "version_minor": 0, "node_from": node_from, "node_to": node_to,
        "weight": weight, "min_latency": 0, "max_latency": 0, "min_bandwidth": bandwidth[0],
        "max_bandwidth": bandwidth[1], "recommended_transfer_size": 0,
        "recommended_sdma_engine_id_mask": sdma_mask, "flags": flags,
    }  # fmt: skip


def _caches(board: Board, props: Mapping[str, int], simd_id_base: int) -> list[dict[str, int]]:
    # fill_in_l1_pcache: per-CU caches carry a 4-byte sibling map of the CUs sharing them;
    # fill_in_l2_l3_pcache: GPU-wide caches carry 4 bytes per shader array (per XCC) of active-CU bits.
    arrays = props["array_count"]
    cus_per_array = min(board.cu_count // arrays, 32)
    out = []
    for cache in board.caches:
        if cache.cu_shared:
            mask, bits = (1 << cache.cu_shared) - 1, 32
        else:
            bits = 32 * arrays
            mask = sum(((1 << cus_per_array) - 1) << (32 * i) for i in range(arrays))
        out.append({
            "processor_id_low": simd_id_base, "level": cache.level, "size": cache.size_kb,
            "cache_line_size": cache.line_size, "cache_lines_per_tag": 0, "association": 0, "latency": 0,
            "type": cache.type, "sibling_map": mask, "sibling_map_bits": bits,
        })  # fmt: skip
    return out


def _gpu_id(board: Board, location_id: int, unique_id: int, taken: set[int]) -> int:
    # The kernel hashes PCI and device data into KFD_GPU_ID_HASH_WIDTH (16) bits; any stable nonzero id does.
    gpu_id = zlib.crc32(f"{board.key}:{location_id}:{unique_id}".encode()) & 0xFFFF
    while gpu_id == 0 or gpu_id in taken:
        gpu_id = (gpu_id + 1) & 0xFFFF
    taken.add(gpu_id)
    return gpu_id


def _next_location(start: int, used: set[int]) -> int:
    bus = start >> 8
    while bus == 0 or (bus << 8) in used:
        bus = (bus + 0x11) % 0x100  # 0x11 is coprime to 256, so every bus is tried
    used.add(bus << 8)
    return bus << 8


def _stable_u64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def _gpu_nodes(boards: list[Board]) -> list[Node]:
    used_locations: set[int] = set()
    taken_ids: set[int] = set()
    seen: set[str] = set()
    gpus: list[Node] = []
    simd_id_base = _SIMD_ID_BASE
    for i, board in enumerate(boards):
        location_id = _next_location(board.location_id, used_locations)
        # The first instance of a board keeps its recorded unique_id; copies get a stable made-up one.
        unique_id = board.unique_id if board.key not in seen else 0
        unique_id = unique_id or _stable_u64(f"{board.key}:{location_id}")
        seen.add(board.key)
        props = board.node_properties()
        props.update(
            simd_id_base=simd_id_base, location_id=location_id, drm_render_minor=_RENDER_MINOR_BASE + i,
            hive_id=board.hive_id, unique_id=unique_id, max_engine_clk_ccompute=CPU_MAX_ENGINE_CLK_CCOMPUTE,
        )  # fmt: skip
        sizes = queue_sizes(props)
        props.update(cwsr_size=sizes.cwsr_size, ctl_stack_size=sizes.ctl_stack_size)
        bank = {"heap_type": board.vram_heap_type, "size_in_bytes": board.vram_bytes, "flags": 0,
                "width": board.vram_width, "mem_clk_max": board.mem_clk_max}  # fmt: skip
        gpu_id = _gpu_id(board, location_id, unique_id, taken_ids)
        gpus.append(Node(i + 1, gpu_id, board.kfd_name, props, [bank], _caches(board, props, simd_id_base)))
        simd_id_base += props["simd_count"]
    return gpus


def _peer_link(node: Node, board: Board, peer: Node, peer_board: Board, ordinal: int) -> None:
    if board.hive_id and board.hive_id == peer_board.hive_id:
        # Same xGMI hive: a direct CRAT io_link. kfd_set_recommended_sdma_engines spreads the peers over the
        # xGMI SDMA engines.
        xgmi = node.num_sdma_xgmi_engines
        mask = 1 << (node.num_sdma_engines + ordinal % xgmi) if xgmi else (1 << node.num_sdma_engines) - 1
        bandwidth = (board.xgmi_bandwidth, board.xgmi_bandwidth)
        node.io_links.append(_link(IOLINK_TYPE_XGMI, node.index, peer.index, _XGMI_WEIGHT, bandwidth, mask))
    else:
        # kfd_add_peer_prop: GPU -> CPU -> GPU, a copy of the peer's (node_to's) link to the CPU with the weights
        # summed and min_bandwidth the narrower of the two; max_bandwidth is min(iolink2, iolink2) in the
        # kernel, i.e. the value of the node the link is listed under alone.
        ours, theirs = _pcie_bandwidth(board), _pcie_bandwidth(peer_board)
        bandwidth = (min(ours[0], theirs[0]), ours[1])
        link = _link(IOLINK_TYPE_PCIEXPRESS, node.index, peer.index, 2 * _PCIE_WEIGHT, bandwidth,
                     (1 << peer.num_sdma_engines) - 1, _LINK_ENABLED | _LINK_NON_COHERENT)
        node.p2p_links.append(link)


def emulated_topology(targets: list[str]) -> Topology:
    """A topology with a CPU node 0 and one GPU node per name in `targets` (targets or board keys), in order.

    GPUs get distinct gpu_id, location_id, unique_id and drm_render_minor (128, 129, ...). Each GPU has a PCIe
    io_link to the CPU (and the CPU one back). GPUs of one xGMI hive (same nonzero hive_id) link to each other
    with xGMI io_links, as the kernel's CRAT does; every other GPU pair gets PCIe p2p_links both ways.
    Unknown names raise families.UnsupportedTarget; more than MAX_GPUS names a ValueError.
    """
    if len(targets) > MAX_GPUS:
        raise ValueError(f"{len(targets)} GPUs asked for: {_LIMIT_NOTE}")
    boards = [board_for(t) for t in targets]
    gpus = _gpu_nodes(boards)
    system_bank = {"heap_type": HEAP_TYPE_SYSTEM, "size_in_bytes": CPU_MEMORY_BYTES, "flags": 0, "width": 0,
                   "mem_clk_max": 4800}  # fmt: skip
    cpu = Node(0, 0, CPU_NAME, _cpu_properties(), [system_bank])
    for node, board in zip(gpus, boards, strict=True):
        mask = (1 << node.num_sdma_engines) - 1
        bandwidth = _pcie_bandwidth(board)
        node.io_links.append(_link(IOLINK_TYPE_PCIEXPRESS, node.index, 0, _PCIE_WEIGHT, bandwidth, mask))
        cpu.io_links.append(_link(IOLINK_TYPE_PCIEXPRESS, 0, node.index, _PCIE_WEIGHT, bandwidth, mask,
                                  _LINK_ENABLED | _LINK_NON_COHERENT))
    for node, board in zip(gpus, boards, strict=True):
        peers = [(p, b) for p, b in zip(gpus, boards, strict=True) if p is not node]
        for ordinal, (peer, peer_board) in enumerate(peers):
            _peer_link(node, board, peer, peer_board, ordinal)
    nodes = [cpu, *gpus]
    for node in nodes:
        node.properties.update(
            mem_banks_count=len(node.mem_banks), caches_count=len(node.caches),
            io_links_count=len(node.io_links), p2p_links_count=len(node.p2p_links),
        )  # fmt: skip
        node.properties = _in_kernel_order(node.properties)
    return Topology(dict(SYSTEM_PROPERTIES), nodes, generation_id=1 + len(gpus))


def _cpu_properties() -> dict[str, int]:
    props = dict.fromkeys(NODE_PROPERTY_ORDER[: NODE_PROPERTY_ORDER.index("max_engine_clk_fcompute")], 0)
    props.update(cpu_cores_count=128, max_engine_clk_ccompute=CPU_MAX_ENGINE_CLK_CCOMPUTE)
    return props


def _in_kernel_order(props: Mapping[str, int]) -> dict[str, int]:
    ordered = {k: props[k] for k in NODE_PROPERTY_ORDER if k in props}
    ordered.update((k, v) for k, v in props.items() if k not in ordered)
    return ordered
