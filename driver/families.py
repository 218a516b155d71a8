"""GPU family registry: the supported targets and the data that differs between them.

Families differ in data, not in code paths: callers look a target up here and read its fields
(wave size, packet dialects, SDMA copy limits, the IP versions and ids amdgpu reports) instead of branching on
names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kfdtrace.driver.drm_ioctl import AmdgpuFamily

PAGE_SIZE = 4096


class UnsupportedTarget(ValueError):
    """A GPU target (name or gfx_target_version) that kfdtrace does not support."""

    def __init__(self, value: object, extra: str = "") -> None:
        self.value = value
        supported = ", ".join(f"{t.name} ({t.gfx_target_version})" for t in TARGETS)
        super().__init__(f"unsupported GPU target {value!r}; supported targets: {supported}{extra}")


@dataclass(frozen=True)
class Family:
    """What a GPU family shares: ISA generation, wave size and packet dialects."""

    name: str  # "CDNA2", "CDNA3", "RDNA2", "RDNA3", "RDNA4"
    gfx_major: int  # 9, 10, 11, 12
    wave_size: int  # default (native) wavefront size: 64 on CDNA, 32 on RDNA
    sdma_dialect: str  # "sdma4.4", "sdma5", "sdma6", "sdma7"
    pm4_dialect: str  # "gfx9", "gfx10", "gfx11", "gfx12"
    # kfd_device.c kfd_device_info_init: KFD_IS_SOC15 -> doorbell_size = 8 (all of these families).
    doorbell_size: int = 8
    # AMDGPUUsage "Packed work-item IDs": gfx90a, gfx940-942, gfx11 and gfx12 pack X/Y/Z into v0; gfx10.3 not.
    packed_workitem_ids: bool = True
    isa: str = ""  # the instruction tables (kfdtrace.driver.isa) the emulated GPU decodes the family's code with
    # Bits of the COPY_LINEAR `count` (bytes - 1) the family's SDMA engine takes: the packet table's field is
    # 30 bits so any client's stream decodes, but the vega10 and navi10 headers mask it to 22 bits, and ROCR
    # (amd_blit_sdma / amd_gpu_agent) uses the 30-bit form only on gfx90a and gfx10.3+ (gfx942: 0x3fffff).
    sdma_count_bits: int = 22
    # Bytes one COPY_LINEAR (and CONST_FILL) moves in what kfdtrace emits and replay splits to: the kernel's own
    # copy_max_bytes / fill_max_bytes, 0x400000 on every SDMA version (sdma_v4_0.c .. sdma_v7_0.c
    # *_buffer_funcs). ROCR goes further (0x3fffffff bytes where the count is 30 bits) by its own choice; a
    # queue may be asked for that much (SdmaQueue max_copy) but replay stays within what amdgpu itself emits.
    sdma_max_copy: int = 0x400000
    # kfd_process_queue_manager.c pqm_update_mqd: GC 10.0 up to 12.1 group CUs in WGPs, so a queue's CU mask must
    # enable them in adjacent pairs.
    cu_pairs: bool = False
    # A VALU result of 16 bits written to a VGPR's low half zeroes the high half on gfx9 (the legacy behaviour; the
    # F16 MAC and MADAK/MADMK forms, which keep it, are not emulated); from gfx10 every 16-bit instruction keeps
    # it (LLVM GCNSubtarget::zeroesHigh16BitsOfDest, "mostly derived from experimentation").
    valu16_zeroes_high: bool = False


CDNA2 = Family("CDNA2", 9, 64, "sdma4.4", "gfx9", isa="gfx90a", sdma_count_bits=30, valu16_zeroes_high=True)
CDNA3 = Family("CDNA3", 9, 64, "sdma4.4", "gfx9", isa="gfx942", valu16_zeroes_high=True)
RDNA2 = Family("RDNA2", 10, 32, "sdma5", "gfx10", packed_workitem_ids=False, isa="gfx1030", sdma_count_bits=30,
               cu_pairs=True)
RDNA3 = Family("RDNA3", 11, 32, "sdma6", "gfx11", isa="gfx1100", sdma_count_bits=30, cu_pairs=True)
RDNA4 = Family("RDNA4", 12, 32, "sdma7", "gfx12", isa="gfx1201", sdma_count_bits=30, cu_pairs=True)
FAMILIES: tuple[Family, ...] = (CDNA2, CDNA3, RDNA2, RDNA3, RDNA4)


@dataclass(frozen=True)
class Target:
    """One compiler target (gfxNNNN) as KFD reports it in gfx_target_version."""

    name: str  # "gfx942"
    gfx_target_version: int  # 90402
    family: Family
    # SDMA IP version of the part named here. Navi2x minors follow kfd_device.c
    # kfd_device_info_set_sdma_info comments; Navi3x/Navi4x minors are amdgpu IP-discovery values.
    sdma_version: tuple[int, int, int]
    # GC (graphics core) IP version, as IP discovery reports it (device/ip_discovery/die/0/GC/0): kfd_device.c
    # kgd2kfd_probe maps these to the gfx_target_version above.
    gc_version: tuple[int, int, int]
    # AMDGPU_FAMILY_* of drm_amdgpu_info_device.family: amdgpu_discovery.c amdgpu_discovery_set_ip_blocks picks
    # it from the GC version (9.4.x AI; 10.3.0/2/4/5 NV; 10.3.1 VGH; 10.3.3 YC; 10.3.6, 11.0.1, 12.0.x their own).
    amdgpu_family: AmdgpuFamily
    # external_rev_id = rev_id + this (soc15.c / nv.c / soc21.c / soc24.c *_common_early_init, per GC version);
    # EXTERNAL_REV_BY_DEVICE overrides it for a PCI device id.
    external_rev_offset: int
    # NBIF (NBIO) IP version under device/ip_discovery/die/0/NBIF/0; None where no source read gives it (the
    # kernel takes it from the board's discovery table, so only some parts are written down anywhere):
    # gfx90a: amdgpu_discovery.c hard-codes NBIO 7.4.4 for CHIP_ALDEBARAN. gfx942: the MI300 (GC 9.4.3)
    # enablement ships nbio_7_9_0 register headers with gc_9_4_3/sdma_4_4_2, and AMD's MI300 SR-IOV host driver
    # programs nbio_7_9_0. gfx1100: tinygrad@a9069c17 test/mockgpu/amd/amddriver.py pairs NBIF 4.3.0 with
    # GC 11.0.0 / SDMA 6.0.0 (soc21_common_set_clockgating_state handles NBIO 4.3.0/4.3.1/7.7.0). gfx1200/1201:
    # soc24 (GC 12.0.x) drives the NBIF through nbif_v6_3_1 (amdgpu_discovery.c: IP_VERSION(6, 3, 1)), and
    # tinygrad's autogen/am/regs lists nbif_6_3_1 for the RX 9060 XT. Navi2x, gfx1101-1103: not found.
    nbif_version: tuple[int, int, int] | None

    @property
    def wave_size(self) -> int:
        return self.family.wave_size

    @property
    def sdma_max_copy(self) -> int:
        """Bytes per COPY_LINEAR packet kfdtrace emits by default and replay splits to (the kernel's limit)."""
        return self.family.sdma_max_copy

    @property
    def sdma_copy_limit(self) -> int:
        """The most bytes one COPY_LINEAR can move on this hardware: its count field's range."""
        return 1 << self.family.sdma_count_bits

    @property
    def apu(self) -> bool:
        """An integrated GPU: amdgpu sets AMD_IS_APU by GC version (amdgpu_discovery_set_ip_blocks)."""
        return self.gc_version in _APU_GC_VERSIONS

    def external_rev(self, device_id: int, rev_id: int) -> int:
        """drm_amdgpu_info_device.external_rev of this part with PCI `device_id` and internal `rev_id`."""
        return EXTERNAL_REV_BY_DEVICE.get(device_id, rev_id + self.external_rev_offset)


_F = AmdgpuFamily
TARGETS: tuple[Target, ...] = (
    Target("gfx90a", 90010, CDNA2, (4, 4, 0), (9, 4, 2), _F.AI, 0x3C, (7, 4, 4)),  # Aldebaran
    Target("gfx942", 90402, CDNA3, (4, 4, 2), (9, 4, 3), _F.AI, 0x46, (7, 9, 0)),  # Aqua Vanjaram (MI300)
    Target("gfx1030", 100300, RDNA2, (5, 2, 0), (10, 3, 0), _F.NV, 0x28, None),  # Sienna Cichlid
    Target("gfx1031", 100301, RDNA2, (5, 2, 2), (10, 3, 2), _F.NV, 0x32, None),  # Navy Flounder
    Target("gfx1032", 100302, RDNA2, (5, 2, 4), (10, 3, 4), _F.NV, 0x3C, None),  # Dimgrey Cavefish
    Target("gfx1033", 100303, RDNA2, (5, 2, 1), (10, 3, 1), _F.VGH, 0x01, None),  # Van Gogh (APU)
    Target("gfx1034", 100304, RDNA2, (5, 2, 5), (10, 3, 5), _F.NV, 0x46, None),  # Beige Goby
    Target("gfx1035", 100305, RDNA2, (5, 2, 3), (10, 3, 3), _F.YC, 0x01, None),  # Yellow Carp (APU)
    Target("gfx1036", 100306, RDNA2, (5, 2, 6), (10, 3, 6), _F.GC_10_3_6, 0x01, None),  # GC 10.3.6 (Raphael iGPU)
    Target("gfx1100", 110000, RDNA3, (6, 0, 0), (11, 0, 0), _F.GC_11_0_0, 0x01, (4, 3, 0)),  # Navi31
    Target("gfx1101", 110001, RDNA3, (6, 0, 2), (11, 0, 3), _F.GC_11_0_0, 0x20, None),  # Navi32 (GC 11.0.3)
    Target("gfx1102", 110002, RDNA3, (6, 0, 3), (11, 0, 2), _F.GC_11_0_0, 0x10, None),  # Navi33 (GC 11.0.2)
    Target("gfx1103", 110003, RDNA3, (6, 0, 1), (11, 0, 1), _F.GC_11_0_1, 0x01, None),  # Phoenix (APU)
    Target("gfx1200", 120000, RDNA4, (7, 0, 0), (12, 0, 0), _F.GC_12_0_0, 0x40, (6, 3, 1)),  # Navi44
    Target("gfx1201", 120001, RDNA4, (7, 0, 1), (12, 0, 1), _F.GC_12_0_0, 0x50, (6, 3, 1)),  # Navi48
)
# The GC versions of the targets above that amdgpu_discovery_set_ip_blocks marks AMD_IS_APU.
_APU_GC_VERSIONS = frozenset({(10, 3, 1), (10, 3, 3), (10, 3, 6), (11, 0, 1)})

# nv.c nv_common_early_init, GC 10.3.3: "if (adev->pdev->device == 0x1681) adev->external_rev_id = 0x20".
EXTERNAL_REV_BY_DEVICE: dict[int, int] = {0x1681: 0x20}

_BY_VERSION = {t.gfx_target_version: t for t in TARGETS}
_BY_NAME = {t.name: t for t in TARGETS}


def target_by_version(version: int) -> Target:
    """The target whose KFD gfx_target_version is `version`; UnsupportedTarget if none."""
    try:
        return _BY_VERSION[version]
    except (KeyError, TypeError):
        raise UnsupportedTarget(version) from None


def target_by_name(name: str) -> Target:
    """The target named `name` ("gfx942"; case and ":feature" suffixes ignored); UnsupportedTarget if none."""
    key = name.strip().lower().split(":", 1)[0] if isinstance(name, str) else name
    try:
        return _BY_NAME[key]
    except (KeyError, TypeError):
        raise UnsupportedTarget(name) from None


def gfx_name(version: int) -> str:
    """LLVM processor name for a gfx_target_version: 90402 -> "gfx942", 90010 -> "gfx90a".

    The version is major*10000 + minor*100 + stepping; LLVM spells minor and stepping as one hex digit each.
    """
    major, minor, step = version // 10000, version // 100 % 100, version % 100
    if version <= 0 or minor > 15 or step > 15:
        raise ValueError(f"not a gfx_target_version: {version}")
    return f"gfx{major}{minor:x}{step:x}"


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


@dataclass(frozen=True)
class QueueSizes:
    """Per-queue buffer sizes KFD requires of a compute queue (kfd_queue.c)."""

    ctl_stack_size: int
    wg_data_size: int
    cwsr_size: int
    debug_memory_size: int
    eop_buffer_size: int

    def cwsr_allocation(self, num_xcc: int = 1, ctx_save_restore_size: int | None = None) -> int:
        """Bytes of the CWSR buffer mapping a queue with this ctx_save_restore_size (default: cwsr_size) needs:
        kfd_queue_acquire_buffers takes ALIGN((ctx_save_restore_size + debug_memory_size) * num_xcc, PAGE) of
        the queue's own size, not the node's (since d15deafab5d7)."""
        size = self.cwsr_size if ctx_save_restore_size is None else ctx_save_restore_size
        return _align((size + self.debug_memory_size) * max(num_xcc, 1), PAGE_SIZE)


# Constants of torvalds/linux drivers/gpu/drm/amd/amdkfd/kfd_queue.c (kfd_queue_ctx_save_restore_size).
_SGPR_SIZE_PER_CU = 0x4000
_LDS_SIZE_PER_CU = 0x10000
_HWREG_SIZE_PER_CU = 0x1000
_DEBUGGER_BYTES_PER_WAVE = 32
_DEBUGGER_BYTES_ALIGN = 64
_CONTEXT_SAVE_AREA_HEADER = 40  # SIZEOF_HSA_USER_CONTEXT_SAVE_AREA_HEADER


def _vgpr_size_per_cu(gfxv: int) -> int:
    # kfd_get_vgpr_size_per_cu. Navi33 (110002) is absent on purpose: it has the smaller VGPR file.
    if gfxv in (90402, 90010, 90008, 90500):
        return 0x80000
    if gfxv in (110000, 110001, 120000, 120001):
        return 0x60000
    return 0x40000


def queue_sizes(props: Mapping[str, int]) -> QueueSizes:
    """KFD's context-save sizes for a GPU node, from its sysfs properties.

    Follows kfd_queue_ctx_save_restore_size() in kfd_queue.c: cu_num = simd_count / simd_per_cu / num_xcc;
    wave_num = min(cu_num*40, array_count/simd_arrays_per_engine*512) before gfx10.1, else cu_num*32;
    ctl_stack_size = ALIGN(40 + wave_num*(8 or 12) + 8, PAGE) (gfx10.x clamps it to 0x7000);
    cwsr_size = ctl_stack_size + ALIGN(cu_num*per-CU context, PAGE); debug = ALIGN(wave_num*32, 64).
    Targets before 80001 get zeros, as the kernel leaves them unset.
    """
    gfxv = props.get("gfx_target_version", 0)
    if gfxv < 80001:
        return QueueSizes(0, 0, 0, 0, 0)
    num_xcc = props.get("num_xcc") or 1
    cu_num = props["simd_count"] // props["simd_per_cu"] // num_xcc
    if gfxv < 100100:
        # sysfs prints array_count multiplied by NUM_XCC (kfd_topology.c node_show); the kernel formula
        # uses the per-XCC value it holds internally.
        arrays = props["array_count"] // num_xcc
        wave_num = min(cu_num * 40, arrays // props["simd_arrays_per_engine"] * 512)
    else:
        wave_num = cu_num * 32
    lds = (props.get("lds_size_in_kb", 64) << 10) if gfxv == 90500 else _LDS_SIZE_PER_CU
    per_cu = _vgpr_size_per_cu(gfxv) + _SGPR_SIZE_PER_CU + lds + _HWREG_SIZE_PER_CU
    wg_data_size = _align(cu_num * per_cu, PAGE_SIZE)
    ctl = wave_num * (12 if gfxv >= 100100 else 8) + 8
    ctl_stack_size = _align(_CONTEXT_SAVE_AREA_HEADER + ctl, PAGE_SIZE)
    if gfxv // 10000 == 10:
        # "HW design limits control stack size to 0x7000" (kfd_queue.c).
        ctl_stack_size = min(ctl_stack_size, 0x7000)
    return QueueSizes(
        ctl_stack_size=ctl_stack_size,
        wg_data_size=wg_data_size,
        cwsr_size=ctl_stack_size + wg_data_size,
        debug_memory_size=_align(wave_num * _DEBUGGER_BYTES_PER_WAVE, _DEBUGGER_BYTES_ALIGN),
        eop_buffer_size=0x8000 if gfxv == 80002 else 4096,
    )
