"""The DRM render-node ioctls clients make on /dev/dri/renderD* of an amdgpu GPU: structures and the ONE table.

Sources read: torvalds/linux ``include/uapi/drm/drm.h`` (DRM_IOCTL_BASE 'd', DRM_COMMAND_BASE 0x40,
``struct drm_version``), ``include/uapi/drm/amdgpu_drm.h`` @ 0030595c3e8b48b32a12b8354ce9dbe00efd632f (``struct
drm_amdgpu_info``, ``struct drm_amdgpu_info_device`` with ``userq_ip_mask``, AMDGPU_INFO_*, AMDGPU_FAMILY_*),
``drivers/gpu/drm/drm_ioctl.c`` (drm_ioctl, drm_version, drm_copy_field) and
``drivers/gpu/drm/amd/amdgpu/amdgpu_kms.c`` amdgpu_info_ioctl @ 63207455963053ca212e61c75f43b3502ea69f0e.

As in kfdtrace.driver.kfd_ioctl, every structure is the NEWEST layout (amdgpu KMS 3.64); an older header's
layout is a prefix of it, the renames are listed in :data:`ABI_CHANGES`, and ``tests/test_drm_abi.py`` checks
both against the installed header with gcc. The table :data:`IOCTLS` is the only list of names, numbers,
directions and argument structs; :data:`BY_NR` derives from it.
"""

from __future__ import annotations

import ctypes
import enum

from kfdtrace.driver.kfd_ioctl import AbiChange, IocDir, Ioctl

u32 = ctypes.c_uint32
u64 = ctypes.c_uint64

DRM_IOCTL_BASE = ord("d")
DRM_COMMAND_BASE = 0x40  # driver ioctls take nrs DRM_COMMAND_BASE .. DRM_COMMAND_END - 1
DRM_COMMAND_END = 0xA0

# What amdgpu's struct drm_driver says of itself (amdgpu_drv.c: KMS_DRIVER_MAJOR/MINOR/PATCHLEVEL, DRIVER_NAME,
# DRIVER_DESC). The date is "0" since drm_version stopped reporting driver dates (drm_ioctl.c: "Driver date is
# deprecated. Userspace expects a non-empty string.").
DRIVER_VERSION = (3, 64, 0)  # 3.64.0: "Userq IP support query" (drm_amdgpu_info_device.userq_ip_mask)
DRIVER_NAME, DRIVER_DATE, DRIVER_DESC = b"amdgpu", b"0", b"AMD GPU"


class drm_version(ctypes.Structure):
    """DRM_IOCTL_VERSION: the numbers come back; each string is copied into the caller's buffer (up to its
    *_len) and *_len is set to the string's full length, as drm_copy_field does."""

    _fields_ = [
        ("version_major", ctypes.c_int),
        ("version_minor", ctypes.c_int),
        ("version_patchlevel", ctypes.c_int),
        ("name_len", ctypes.c_ulong),  # __kernel_size_t
        ("name", u64),  # char __user *
        ("date_len", ctypes.c_ulong),
        ("date", u64),
        ("desc_len", ctypes.c_ulong),
        ("desc", u64),
    ]


class AmdgpuInfoQuery(enum.IntEnum):
    """The ``AMDGPU_INFO_*`` queries (drm_amdgpu_info.query) the emulated GPU answers; amdgpu has 0x00..0x24."""

    VRAM_GTT = 0x14
    DEV_INFO = 0x16


class AmdgpuFamily(enum.IntEnum):
    """``AMDGPU_FAMILY_*``: drm_amdgpu_info_device.family (amdgpu_discovery.c picks it from the GC version)."""

    AI = 141  # Vega10 .. GC 9.4.x
    NV = 143  # Navi10 .. Navi24
    VGH = 144  # Van Gogh
    GC_11_0_0 = 145
    YC = 146  # Yellow Carp
    GC_11_0_1 = 148
    GC_10_3_6 = 149
    GC_11_5_0 = 150
    GC_10_3_7 = 151
    GC_12_0_0 = 152


# drm_amdgpu_info_device.ids_flags
AMDGPU_IDS_FLAGS_FUSION = 0x01  # an APU
AMDGPU_IDS_FLAGS_GANG_SUBMIT = 0x10  # set by amdgpu_info_ioctl unless under SR-IOV


class drm_amdgpu_query_fw(ctypes.Structure):
    _fields_ = [("fw_type", u32), ("ip_instance", u32), ("index", u32), ("_pad", u32)]


class _mode_crtc(ctypes.Structure):
    _fields_ = [("id", u32), ("_pad", u32)]


class _query_hw_ip(ctypes.Structure):
    _fields_ = [("type", u32), ("ip_instance", u32)]


class _read_mmr_reg(ctypes.Structure):
    _fields_ = [("dword_offset", u32), ("count", u32), ("instance", u32), ("flags", u32)]


class _vbios_info(ctypes.Structure):
    _fields_ = [("type", u32), ("offset", u32)]


class _one_type(ctypes.Structure):
    _fields_ = [("type", u32)]


class drm_amdgpu_info_union(ctypes.Union):
    """The anonymous per-query union of ``struct drm_amdgpu_info`` (name is ours)."""

    _fields_ = [
        ("mode_crtc", _mode_crtc),
        ("query_hw_ip", _query_hw_ip),
        ("read_mmr_reg", _read_mmr_reg),
        ("query_fw", drm_amdgpu_query_fw),
        ("vbios_info", _vbios_info),
        ("sensor_info", _one_type),
        ("video_cap", _one_type),
    ]


class drm_amdgpu_info(ctypes.Structure):
    """DRM_IOCTL_AMDGPU_INFO: `query` is answered into the caller's buffer at return_pointer, at most
    return_size bytes of it (like snprintf's size)."""

    _anonymous_ = ("u",)
    _fields_ = [("return_pointer", u64), ("return_size", u32), ("query", u32), ("u", drm_amdgpu_info_union)]


class drm_amdgpu_info_vram_gtt(ctypes.Structure):
    _fields_ = [("vram_size", u64), ("vram_cpu_accessible_size", u64), ("gtt_size", u64)]


class drm_amdgpu_info_device(ctypes.Structure):
    """AMDGPU_INFO_DEV_INFO's answer (clocks in kHz)."""

    _fields_ = [
        ("device_id", u32),  # PCI device id
        ("chip_rev", u32),  # internal revision (adev->rev_id)
        ("external_rev", u32),
        ("pci_rev", u32),
        ("family", u32),  # AmdgpuFamily
        ("num_shader_engines", u32),
        ("num_shader_arrays_per_engine", u32),
        ("gpu_counter_freq", u32),  # kHz
        ("max_engine_clock", u64),  # kHz
        ("max_memory_clock", u64),  # kHz
        ("cu_active_number", u32),
        ("cu_ao_mask", u32),  # "INVALID, DON'T use it"
        ("cu_bitmap", u32 * 16),  # [4][4] in the header: [shader engine][shader array]
        ("enabled_rb_pipes_mask", u32),
        ("num_rb_pipes", u32),
        ("num_hw_gfx_contexts", u32),
        ("pcie_gen", u32),  # _pad before
        ("ids_flags", u64),
        ("virtual_address_offset", u64),
        ("virtual_address_max", u64),
        ("virtual_address_alignment", u32),
        ("pte_fragment_size", u32),
        ("gart_page_size", u32),
        ("ce_ram_size", u32),
        ("vram_type", u32),
        ("vram_bit_width", u32),
        ("vce_harvest_config", u32),
        ("gc_double_offchip_lds_buf", u32),
        ("prim_buf_gpu_addr", u64),
        ("pos_buf_gpu_addr", u64),
        ("cntl_sb_buf_gpu_addr", u64),
        ("param_buf_gpu_addr", u64),
        ("prim_buf_size", u32),
        ("pos_buf_size", u32),
        ("cntl_sb_buf_size", u32),
        ("param_buf_size", u32),
        ("wave_front_size", u32),
        ("num_shader_visible_vgprs", u32),
        ("num_cu_per_sh", u32),
        ("num_tcc_blocks", u32),
        ("gs_vgt_table_depth", u32),
        ("gs_prim_buffer_depth", u32),
        ("max_gs_waves_per_vgt", u32),
        ("pcie_num_lanes", u32),  # _pad1 before
        ("cu_ao_bitmap", u32 * 16),  # [4][4]
        ("high_va_offset", u64),
        ("high_va_max", u64),
        ("pa_sc_tile_steering_override", u32),
        ("tcc_disabled_mask", u64),
        ("min_engine_clock", u64),
        ("min_memory_clock", u64),
        ("tcp_cache_size", u32),  # this and below: set on gfx11+ only
        ("num_sqc_per_wgp", u32),
        ("sqc_data_cache_size", u32),
        ("sqc_inst_cache_size", u32),
        ("gl1c_cache_size", u32),
        ("gl2c_cache_size", u32),
        ("mall_size", u64),
        ("enabled_rb_pipes_mask_hi", u32),
        ("shadow_size", u32),
        ("shadow_alignment", u32),
        ("csa_size", u32),
        ("csa_alignment", u32),
        ("userq_ip_mask", u32),
        ("pad", u32),
    ]


# Layout changes: `since` is the amdgpu KMS version whose layout we model (3.64); the minor that made each
# change was not pinned down. Older headers (libdrm 2.4.114: 368 bytes, ending at tcc_disabled_mask) are a prefix.
ABI_CHANGES: tuple[AbiChange, ...] = (
    AbiChange((3, 64), drm_amdgpu_info_device, "PCIe fields in former padding, gfx11 cache sizes, user queues",
              old_size=368, renamed={"_pad": "pcie_gen", "_pad1": "pcie_num_lanes"}),
)

_RW, _W = IocDir.READ_WRITE, IocDir.WRITE
_D = DRM_IOCTL_BASE

# `since` is the amdgpu KMS interface version (3.0: the first amdgpu).
IOCTLS: tuple[Ioctl, ...] = (
    Ioctl("VERSION", 0x00, _RW, drm_version, (3, 0), base=_D),  # DRM core, DRM_RENDER_ALLOW
    # DRM_IOW although the answer is written through return_pointer; DRM_AUTH | DRM_RENDER_ALLOW.
    Ioctl("AMDGPU_INFO", DRM_COMMAND_BASE + 0x05, _W, drm_amdgpu_info, (3, 0), base=_D),
)

BY_NR: dict[int, Ioctl] = {i.nr: i for i in IOCTLS}
BY_NAME: dict[str, Ioctl] = {i.name: i for i in IOCTLS}
