"""The emulated render node answers its DRM ioctls as the kernel does. Each test names the function it follows.

Sources read: torvalds/linux drivers/gpu/drm/drm_ioctl.c (drm_ioctl, drm_version, drm_copy_field),
drivers/gpu/drm/amd/amdgpu/amdgpu_kms.c @ 63207455 (amdgpu_info_ioctl), amdgpu_discovery.c
(amdgpu_discovery_set_ip_blocks: adev->family by GC version, AMD_IS_APU), soc15.c / nv.c / soc21.c / soc24.c
*_common_early_init (external_rev_id), include/uapi/drm/amdgpu_drm.h.
"""

from __future__ import annotations

import ctypes
import errno

import pytest

from kfdtrace.driver import drm_ioctl as D
from kfdtrace.driver import kfd_ioctl as K
from kfdtrace.driver.families import target_by_name

INFO = D.BY_NAME["AMDGPU_INFO"]
VERSION = D.BY_NAME["VERSION"]


def _errno_of(fn) -> int:
    with pytest.raises(OSError) as err:
        fn()
    return err.value.errno


def _dev_info(system, dev, size: int = ctypes.sizeof(D.drm_amdgpu_info_device)) -> D.drm_amdgpu_info_device:
    out = D.drm_amdgpu_info_device()
    ctypes.memset(ctypes.addressof(out), 0xEE, ctypes.sizeof(out))
    args = D.drm_amdgpu_info(return_pointer=ctypes.addressof(out), return_size=size, query=D.AmdgpuInfoQuery.DEV_INFO)
    system.sys.ioctl(dev.drm_fd, INFO.request, args)
    return out


def test_version_copies_each_string_up_to_the_callers_length_and_returns_the_full_one(emulated):
    """drm_version / drm_copy_field: len = min(strlen, *_len) bytes go to the buffer (no NUL), *_len becomes
    strlen; a NULL buffer gets nothing. amdgpu: "amdgpu", "AMD GPU", date "0" ("Driver date is deprecated"),
    KMS 3.64.0."""
    system = emulated("gfx1100")
    name, desc = ctypes.create_string_buffer(b"\xff" * 16), ctypes.create_string_buffer(b"\xff" * 16)
    v = D.drm_version(name_len=3, name=ctypes.addressof(name), date_len=64, date=0, desc_len=16,
                      desc=ctypes.addressof(desc))
    system.sys.ioctl(system.devices[0].drm_fd, VERSION.request, v)
    assert (v.version_major, v.version_minor, v.version_patchlevel) == (3, 64, 0)
    assert name.raw[:4] == b"amd\xff" and v.name_len == 6
    assert v.date_len == 1  # NULL buffer: only the length
    assert desc.raw[:8] == b"AMD GPU\xff" and v.desc_len == 7


def test_version_sent_as_ior_reads_nothing_in_but_still_answers(emulated):
    """drm_ioctl: bytes are copied in only if `cmd & ioctl->cmd & IOC_IN` (both directions agree), out likewise,
    and the kernel copy is zero-filled past what came in: an _IOR VERSION sees NULL buffers and zero lengths."""
    system = emulated("gfx1100")
    name = ctypes.create_string_buffer(b"\xff" * 8)
    v = D.drm_version(name_len=8, name=ctypes.addressof(name))
    system.sys.ioctl(system.devices[0].drm_fd, K.ioc(K.IocDir.READ, 0x00, ctypes.sizeof(v), D.DRM_IOCTL_BASE), v)
    assert name.raw == b"\xff" * 8 + b"\0"  # the caller's pointer never reached the kernel
    assert (v.name_len, v.name, v.version_major) == (6, 0, 3)


def test_a_drm_ioctl_the_emulator_does_not_model_is_enotty(emulated):
    """Not the kernel: drm_ioctl answers EINVAL past its core and driver tables and handles the rest; the
    emulator knows only kfdtrace.driver.drm_ioctl.IOCTLS and refuses the others with ENOTTY."""
    system = emulated("gfx1100")
    gem_create = K.ioc(K.IocDir.READ_WRITE, D.DRM_COMMAND_BASE + 0x00, 32, D.DRM_IOCTL_BASE)
    buf = (ctypes.c_char * 32)()
    assert _errno_of(lambda: system.sys.ioctl(system.devices[0].drm_fd, gem_create, buf)) == errno.ENOTTY


@pytest.mark.parametrize("target, device_id, family, external_rev, apu", [
    ("gfx90a", 0x740C, D.AmdgpuFamily.AI, 0x3C, False),      # soc15.c GC 9.4.2: rev_id + 0x3c
    ("gfx942", 29857, D.AmdgpuFamily.AI, 0x46, False),       # soc15.c GC 9.4.3: rev_id + 0x46
    ("gfx1030", 29615, D.AmdgpuFamily.NV, 0x28, False),      # nv.c GC 10.3.0: rev_id + 0x28
    ("gfx1033", 0x163F, D.AmdgpuFamily.VGH, 0x01, True),     # nv.c GC 10.3.1 (Van Gogh): rev_id + 0x01
    ("gfx1035", 0x1681, D.AmdgpuFamily.YC, 0x20, True),      # nv.c GC 10.3.3: device 0x1681 -> 0x20
    ("gfx1036", 5710, D.AmdgpuFamily.GC_10_3_6, 0x01, True),
    ("gfx1100", 29772, D.AmdgpuFamily.GC_11_0_0, 0x01, False),  # soc21.c GC 11.0.0: rev_id + 0x1
    ("gfx1102", 0x7480, D.AmdgpuFamily.GC_11_0_0, 0x10, False),  # GC 11.0.2: + 0x10
    ("gfx1103", 0x15BF, D.AmdgpuFamily.GC_11_0_1, 0x01, True),
    ("gfx1201", 0x7551, D.AmdgpuFamily.GC_12_0_0, 0x50, False),  # soc24.c GC 12.0.1: rev_id + 0x50
])
def test_dev_info_identifies_the_part_as_amdgpu_does(emulated, target, device_id, family, external_rev, apu):
    """amdgpu_info_ioctl AMDGPU_INFO_DEV_INFO: device_id = pdev->device, chip_rev = rev_id, external_rev,
    family = adev->family, ids_flags FUSION on APUs and GANG_SUBMIT off SR-IOV; CU and engine counts."""
    system = emulated(target)
    dev = system.devices[0]
    info = _dev_info(system, dev)
    p = dev.node.properties
    assert (info.device_id, info.family, info.external_rev, info.chip_rev) == (device_id, family, external_rev, 0)
    assert info.ids_flags == D.AMDGPU_IDS_FLAGS_GANG_SUBMIT | (D.AMDGPU_IDS_FLAGS_FUSION if apu else 0)
    assert info.cu_active_number == p["simd_count"] // p["simd_per_cu"]
    assert info.num_shader_engines * info.num_shader_arrays_per_engine == p["array_count"]
    assert info.num_cu_per_sh == p["cu_per_simd_array"] and info.wave_front_size == p["wave_front_size"]
    assert info.max_engine_clock == p["max_engine_clk_fcompute"] * 1000  # kHz
    assert info.userq_ip_mask == 0 and info.pad == 0  # zero-filled (kzalloc), not left as the caller's bytes
    assert target_by_name(target).amdgpu_family == family


def test_info_copies_at_most_return_size_bytes(emulated):
    """amdgpu_info_ioctl: copy_to_user(out, dev_info, min(size, sizeof(*dev_info))): an older, shorter struct
    gets its prefix, nothing past it is written."""
    system = emulated("gfx942")
    info = _dev_info(system, system.devices[0], size=8)
    assert (info.device_id, info.chip_rev) == (29857, 0)
    assert info.external_rev == 0xEEEEEEEE  # untouched past return_size


def test_info_errors(emulated):
    """amdgpu_info_ioctl: !return_size || !return_pointer -> EINVAL; an unknown query -> "Invalid request",
    EINVAL."""
    system = emulated("gfx942")
    fd = system.devices[0].drm_fd
    out = D.drm_amdgpu_info_device()
    ok = dict(return_pointer=ctypes.addressof(out), return_size=ctypes.sizeof(out))
    for args in (dict(ok, return_size=0), dict(ok, return_pointer=0), dict(ok, query=0x7F)):
        query = args.pop("query", D.AmdgpuInfoQuery.DEV_INFO)
        assert _errno_of(lambda a=args, q=query: system.sys.ioctl(fd, INFO.request, D.drm_amdgpu_info(query=q, **a))) \
            == errno.EINVAL


def test_vram_gtt_reports_the_banks_and_the_cpu_visible_part(emulated):
    """AMDGPU_INFO_VRAM_GTT: vram_size, vram_cpu_accessible_size (the BAR: all of VRAM on a large-BAR board), and
    the GTT domain's size (amdgpu_ttm_init: TTM's page limit by default)."""
    system = emulated("gfx1201,gfx1100")  # the R9700 board is small-BAR
    for dev in system.devices:
        out = D.drm_amdgpu_info_vram_gtt()
        system.sys.ioctl(dev.drm_fd, INFO.request, D.drm_amdgpu_info(
            return_pointer=ctypes.addressof(out), return_size=ctypes.sizeof(out), query=D.AmdgpuInfoQuery.VRAM_GTT))
        assert out.vram_size == dev.vram_size and out.gtt_size == system.sys.machine.max_ttm_mem > 0
        assert (out.vram_cpu_accessible_size == out.vram_size) == dev.node.large_bar


def test_kfd_ioctls_on_a_render_node_and_drm_ioctls_on_kfd_are_enotty(emulated):
    """Each file answers its own driver's table: /dev/kfd's kfd_ioctl has no nr 0x45 (ENOTTY), and a KFD request
    on the render node is a DRM nr the emulator does not model."""
    system = emulated("gfx942")
    args = D.drm_amdgpu_info()
    assert _errno_of(lambda: system.sys.ioctl(system.kfd.fd, INFO.request, args)) == errno.ENOTTY
    version = K.kfd_ioctl_get_version_args()
    assert _errno_of(lambda: system.sys.ioctl(system.devices[0].drm_fd, K.BY_NAME["GET_VERSION"].request,
                                              version)) == errno.ENOTTY
