"""Family registry: target lookups, gfx names, and KFD's context-save sizes (worked examples from kfd_queue.c)."""

from pathlib import Path

import pytest

from kfdtrace.driver.families import (
    TARGETS,
    QueueSizes,
    UnsupportedTarget,
    gfx_name,
    queue_sizes,
    target_by_name,
    target_by_version,
)
from kfdtrace.driver.topology import parse_properties

FIXTURES = Path(__file__).parent / "fixtures" / "topologies"


def fixture_props(name: str) -> dict[str, int]:
    return parse_properties((FIXTURES / name).read_text())


EXPECTED = [
    ("gfx90a", 90010, "CDNA2", 64, "sdma4.4", "gfx9"),
    ("gfx942", 90402, "CDNA3", 64, "sdma4.4", "gfx9"),
    ("gfx1030", 100300, "RDNA2", 32, "sdma5", "gfx10"),
    ("gfx1031", 100301, "RDNA2", 32, "sdma5", "gfx10"),
    ("gfx1032", 100302, "RDNA2", 32, "sdma5", "gfx10"),
    ("gfx1033", 100303, "RDNA2", 32, "sdma5", "gfx10"),
    ("gfx1034", 100304, "RDNA2", 32, "sdma5", "gfx10"),
    ("gfx1035", 100305, "RDNA2", 32, "sdma5", "gfx10"),
    ("gfx1036", 100306, "RDNA2", 32, "sdma5", "gfx10"),
    ("gfx1100", 110000, "RDNA3", 32, "sdma6", "gfx11"),
    ("gfx1101", 110001, "RDNA3", 32, "sdma6", "gfx11"),
    ("gfx1102", 110002, "RDNA3", 32, "sdma6", "gfx11"),
    ("gfx1103", 110003, "RDNA3", 32, "sdma6", "gfx11"),
    ("gfx1200", 120000, "RDNA4", 32, "sdma7", "gfx12"),
    ("gfx1201", 120001, "RDNA4", 32, "sdma7", "gfx12"),
]


@pytest.mark.parametrize("name,version,family,wave,sdma,pm4", EXPECTED)
def test_lookup_by_version_and_name(name, version, family, wave, sdma, pm4):
    target = target_by_version(version)
    assert target is target_by_name(name)
    assert (target.name, target.gfx_target_version) == (name, version)
    f = target.family
    assert (f.name, f.wave_size, f.sdma_dialect, f.pm4_dialect) == (family, wave, sdma, pm4)
    assert f.doorbell_size == 8 and target.wave_size == wave
    major_minor = {"sdma4.4": (4, 4), "sdma5": (5, 2), "sdma6": (6, 0), "sdma7": (7, 0)}
    assert target.sdma_version[:2] == major_minor[sdma]


def test_registry_is_exactly_the_supported_set():
    assert [t.name for t in TARGETS] == [e[0] for e in EXPECTED]


def test_name_lookup_ignores_case_and_features():
    assert target_by_name("GFX942:sramecc+:xnack-").gfx_target_version == 90402


def test_sdma_copy_limits_are_the_kernels_within_each_familys_count_width():
    # The kernel's copy_max_bytes / fill_max_bytes are 0x400000 on every SDMA version (sdma_v4_0.c ..
    # sdma_v7_0.c *_buffer_funcs): what kfdtrace emits and replay splits to.
    assert {t.sdma_max_copy for t in TARGETS} == {0x400000}
    # The count (bytes - 1) is 22 bits in the vega10/navi10 headers; ROCR uses the 30-bit form only on gfx90a
    # and gfx10.3+, so gfx942, which shares gfx90a's SDMA 4.4 dialect, stays at 22 bits.
    assert target_by_name("gfx942").sdma_copy_limit == 1 << 22
    assert {t.name for t in TARGETS if t.sdma_copy_limit == 1 << 30} == {t.name for t in TARGETS} - {"gfx942"}
    assert all(t.sdma_max_copy <= t.sdma_copy_limit for t in TARGETS)


def test_sdma_versions():
    assert target_by_name("gfx90a").sdma_version == (4, 4, 0)
    assert target_by_name("gfx942").sdma_version == (4, 4, 2)
    assert target_by_name("gfx1030").sdma_version == (5, 2, 0)
    assert target_by_name("gfx1100").sdma_version == (6, 0, 0)
    assert target_by_name("gfx1200").sdma_version == (7, 0, 0)


@pytest.mark.parametrize("bad", [90403, 0, 110501, "90402"])
def test_unknown_version_lists_supported(bad):
    with pytest.raises(UnsupportedTarget) as info:
        target_by_version(bad)
    message = str(info.value)
    assert repr(bad) in message
    for t in TARGETS:
        assert f"{t.name} ({t.gfx_target_version})" in message
    assert isinstance(info.value, ValueError)


def test_unknown_name():
    with pytest.raises(UnsupportedTarget, match=r"'gfx908'.*gfx90a \(90010\).*gfx1201 \(120001\)"):
        target_by_name("gfx908")


@pytest.mark.parametrize(
    "version,name",
    [(90402, "gfx942"), (90010, "gfx90a"), (90012, "gfx90c"), (110000, "gfx1100"), (100300, "gfx1030"),
     (100306, "gfx1036"), (110501, "gfx1151"), (120001, "gfx1201"), (90500, "gfx950"), (80003, "gfx803")],
)  # fmt: skip
def test_gfx_name(version, name):
    assert gfx_name(version) == name


def test_gfx_name_matches_registry():
    for t in TARGETS:
        assert gfx_name(t.gfx_target_version) == t.name


@pytest.mark.parametrize("bad", [0, -1, 91600, 90016])
def test_gfx_name_rejects_non_versions(bad):
    with pytest.raises(ValueError):
        gfx_name(bad)


def test_queue_sizes_mi300x():
    sizes = queue_sizes(fixture_props("mi300x.properties"))
    assert sizes.ctl_stack_size == 12288
    assert sizes.cwsr_size == 23203840
    assert sizes.debug_memory_size == 48640
    assert sizes.eop_buffer_size == 4096
    assert sizes.cwsr_size == sizes.ctl_stack_size + sizes.wg_data_size
    # The CWSR mapping covers every XCC: ALIGN((cwsr + debug) * 8, 4096).
    assert sizes.cwsr_allocation(8) == 186019840


def test_queue_sizes_7900xtx():
    sizes = queue_sizes(fixture_props("rx7900xtx.properties"))
    assert (sizes.ctl_stack_size, sizes.cwsr_size) == (40960, 46047232)
    assert sizes.debug_memory_size == 98304
    assert sizes.cwsr_allocation(1) == 46145536


def test_queue_sizes_gfx1201_match_the_captured_values():
    props = fixture_props("r9700_gfx1201_partial.properties")
    sizes = queue_sizes(props)
    assert (sizes.ctl_stack_size, sizes.cwsr_size) == (28672, 30699520)
    assert (sizes.ctl_stack_size, sizes.cwsr_size) == (props["ctl_stack_size"], props["cwsr_size"])


RDNA2_80CU = {"gfx_target_version": 100300, "simd_count": 160, "simd_per_cu": 2, "array_count": 8,
              "simd_arrays_per_engine": 2, "num_xcc": 1}  # fmt: skip


def test_gfx10_control_stack_is_clamped():
    # 80 CUs * 32 waves * 12 bytes would need 32 KiB; kfd_queue.c caps gfx10.x at 0x7000.
    sizes = queue_sizes(RDNA2_80CU)
    assert sizes.ctl_stack_size == 0x7000
    assert sizes.cwsr_size == 0x7000 + 80 * 0x55000


def test_gfx9_wave_count_is_limited_by_shader_arrays():
    # 110 CUs * 40 waves = 4400 > 8 arrays * 512 = 4096.
    props = {"gfx_target_version": 90010, "simd_count": 440, "simd_per_cu": 4, "array_count": 8,
             "simd_arrays_per_engine": 1}  # fmt: skip
    sizes = queue_sizes(props)
    assert sizes.debug_memory_size == 4096 * 32
    assert sizes.ctl_stack_size == 36864


def test_navi33_uses_the_small_vgpr_file():
    props = {**RDNA2_80CU, "gfx_target_version": 110002, "simd_count": 64}
    assert queue_sizes(props).wg_data_size == 32 * (0x40000 + 0x4000 + 0x10000 + 0x1000)
    props["gfx_target_version"] = 110000
    assert queue_sizes(props).wg_data_size == 32 * (0x60000 + 0x4000 + 0x10000 + 0x1000)


def test_pre_carrizo_has_no_sizes():
    assert queue_sizes({"gfx_target_version": 70000}) == QueueSizes(0, 0, 0, 0, 0)


def test_amdgpu_ids_are_family_data_keyed_by_gc_version():
    """amdgpu_discovery_set_ip_blocks: adev->family by GC version (9.4.x AI; 10.3.0/2/4/5 NV; 10.3.1 VGH; 10.3.3
    YC; 10.3.6 GC_10_3_6; 11.0.0/2/3 GC_11_0_0; 11.0.1 GC_11_0_1; 12.0.x GC_12_0_0), and AMD_IS_APU for 10.3.1,
    10.3.3, 10.3.6, 11.0.1; *_common_early_init: external_rev_id = rev_id + a per-GC-version offset, except
    device 0x1681 (nv.c: 0x20)."""
    by_gc = {t.gc_version: t for t in TARGETS}
    assert {gc: t.amdgpu_family.name for gc, t in by_gc.items() if gc[0] == 10} == {
        (10, 3, 0): "NV", (10, 3, 2): "NV", (10, 3, 4): "NV", (10, 3, 5): "NV", (10, 3, 1): "VGH",
        (10, 3, 3): "YC", (10, 3, 6): "GC_10_3_6"}
    assert {t.name for t in TARGETS if t.apu} == {"gfx1033", "gfx1035", "gfx1036", "gfx1103"}
    assert {t.name: t.external_rev_offset for t in TARGETS if t.family.gfx_major == 11} == {
        "gfx1100": 0x1, "gfx1101": 0x20, "gfx1102": 0x10, "gfx1103": 0x1}
    yc = target_by_name("gfx1035")
    assert (yc.external_rev(0x1681, 3), yc.external_rev(0x1682, 3)) == (0x20, 0x04)


def test_nbif_versions_only_where_a_source_gives_them():
    """NBIF of device/ip_discovery: CHIP_ALDEBARAN's hard-coded 7.4.4, MI300's 7.9.0, Navi31's 4.3.0, GC 12's
    nbif_v6_3_1; the others are unknown (None), not guessed."""
    known = {t.name: t.nbif_version for t in TARGETS if t.nbif_version}
    assert known == {"gfx90a": (7, 4, 4), "gfx942": (7, 9, 0), "gfx1100": (4, 3, 0), "gfx1200": (6, 3, 1),
                     "gfx1201": (6, 3, 1)}
