"""The emulated GPU's view of a dispatch (driver/emulator/launch.py): what DISPATCH_DIRECT and KERNEL_DISPATCH
start, and every wave's initial SGPRs, VGPRs, EXEC and scratch (AMDGPUUsage "Initial Kernel Execution State")."""

from __future__ import annotations

import pytest

from kfdtrace.driver import System
from kfdtrace.driver.emulator.launch import TTMP
from kfdtrace.driver.kernel_descriptor import layout_for
from kfdtrace.driver.kernels.device import corpus, kernel_arguments
from kfdtrace.driver.kernels.reference import CASES
from tests.emulated import FAMILIES, engine_of


def launched(system, kernel: str, grid, block, queue: str = "pm4"):
    """Dispatch a corpus kernel (with its case's arguments) on a PM4 or AQL queue; the kernel and the launch the
    CP started: from its registers at DISPATCH_DIRECT, or from the KERNEL_DISPATCH packet."""
    dev = system.devices[0]
    k = corpus(dev).kernel(kernel)
    case = next(c for c in CASES if c.kernel == kernel)
    q = dev.compute_queue() if queue == "pm4" else dev.aql_queue()
    q.dispatch(k, grid, block, *kernel_arguments(dev, case, case.inputs())[0])
    q.sync(timeout=60)
    return k, engine_of(q).last_launch


def sgpr_at(kd, name: str) -> int:
    n = 0
    for user, count in kd.user_sgprs:
        if user == name:
            return n
        n += count
    raise KeyError(name)


@pytest.mark.parametrize("target", FAMILIES)
@pytest.mark.parametrize("queue", ["pm4", "aql"])
def test_waves_start_with_their_ids_and_the_kernels_arguments(target, queue):
    with System.open(emulate=target) as system:
        k, launch = launched(system, "vector_add", (1000,), (256,), queue)
        kd = k.kernel.descriptor
        assert launch.entry == k.entry_address and launch.wave_size == kd.wave_size
        assert (launch.groups, launch.block, launch.last) == ((4, 1, 1), (256, 1, 1), (232, 1, 1))
        ws = kd.wave_size
        at = sgpr_at(kd, "kernarg_segment_ptr")
        kernargs = launch.user_sgprs[at] | launch.user_sgprs[at + 1] << 32
        assert kernargs != 0 and len(launch.user_sgprs) == kd.user_sgpr_count
        full, last = launch.waves((0, 0, 0)), launch.waves((3, 0, 0))
        assert len(full) == 256 // ws and len(last) == -(-232 // ws)
        assert all(w.exec_mask == (1 << ws) - 1 for w in full)
        assert last[-1].exec_mask == (1 << (232 - (len(last) - 1) * ws)) - 1
        architected = layout_for(system.devices[0].target.family).architected_sgprs
        for w in last:
            if not architected:
                assert w.sgprs[kd.system_sgpr_start] == 3  # workgroup id X, right after USER_SGPR_COUNT
            assert w.sgprs[at] | w.sgprs[at + 1] << 32 == kernargs
            lanes = w.exec_mask.bit_length()
            assert list(w.vgprs[0][:lanes]) == list(range(w.index * ws, w.index * ws + lanes))  # X; Y, Z 0
            assert not w.vgprs[0][lanes:].any()


@pytest.mark.parametrize("target", FAMILIES)
def test_three_dimensional_ids_are_packed_where_the_family_packs_them(target):
    with System.open(emulate=target) as system:
        k, launch = launched(system, "stencil3d_7pt", (10, 6, 5), (8, 4, 2))
        assert launch.group_size((1, 1, 2)) == (2, 2, 1) and launch.groups == (2, 2, 3)
        kd = k.kernel.descriptor
        waves = launch.waves((1, 1, 2))
        assert len(waves) == 1 and waves[0].exec_mask == 0b1111  # 2 x 2 x 1 work-items
        dims = kd.workitem_id_dims
        x, y = waves[0].vgprs[0][:4] & 0x3FF, None
        if system.devices[0].target.family.packed_workitem_ids:
            y = waves[0].vgprs[0][:4] >> 10 & 0x3FF
            assert set(waves[0].vgprs) == {0}
        else:
            y = waves[0].vgprs[1][:4]
            assert set(waves[0].vgprs) == set(range(dims))
        assert list(x) == [0, 1, 0, 1] and list(y) == [0, 0, 1, 1]
        assert dims >= 2
        tgid = [i for i, on in enumerate(kd.workgroup_id_enables) if on]
        if layout_for(system.devices[0].target.family).architected_sgprs:  # GFX12: TTMP9 = X, TTMP7 = Y | Z << 16
            st = launch.start(1 + 2 * (1 + 2 * 2), 1)
            assert (st.ttmps[TTMP + 9][0], st.ttmps[TTMP + 7][0]) == (1, 1 | 2 << 16)
            assert not any(name.startswith("workgroup_id") for name in kd.system_sgprs)
        else:
            assert [waves[0].sgprs[kd.system_sgpr_start + j] for j in range(len(tgid))] == \
                [(1, 1, 2)[i] for i in tgid]


@pytest.mark.parametrize("target", FAMILIES)
def test_scratch_slots_are_given_as_the_family_takes_them(target):
    with System.open(emulate=target) as system:
        k, launch = launched(system, "mode_scratch", (128,), (128,))
        kd = k.kernel.descriptor
        waves = launch.waves((0, 0, 0))
        assert launch.scratch is not None and launch.scratch.wave_bytes >= kd.private_segment_fixed_size * 64
        offsets = [w.index * launch.scratch.wave_bytes for w in waves]
        if launch.architected_scratch:  # FLAT_SCRATCH = the XCC's base + the wave's slot
            assert [w.flat_scratch - launch.scratch.bases[w.xcc] for w in waves] == offsets
        else:  # the scratch wave offset: the last system SGPR
            last = kd.system_sgpr_start + len(kd.system_sgprs) - 1
            assert kd.system_sgprs[-1] == "private_segment_wavefront_offset"
            assert [w.sgprs[last] for w in waves] == offsets and all(w.flat_scratch is None for w in waves)


@pytest.mark.parametrize("target", FAMILIES)
def test_pm4_and_aql_start_the_same_kernel_the_same_way(target):
    with System.open(emulate=target) as one, System.open(emulate=target) as other:  # a stopped queue stays so
        k1, pm4 = launched(one, "reduce_max_dynamic", (1000,), (128,))
        k2, aql = launched(other, "reduce_max_dynamic", (1000,), (128,), "aql")
        assert pm4.entry - k1.program.buffer.va == aql.entry - k2.program.buffer.va == k1.kernel.entry_offset
        assert (pm4.groups, pm4.block, pm4.last, pm4.wave_size, pm4.lds_bytes) == \
            (aql.groups, aql.block, aql.last, aql.wave_size, aql.lds_bytes)
        assert pm4.lds_bytes >= 256  # the dynamic __local block counts
        assert pm4.fields == aql.fields and len(pm4.user_sgprs) == len(aql.user_sgprs)
