"""PM4 kernel dispatch (ComputeQueue.dispatch): the registers, user SGPRs, kernel arguments, dispatch packet and
scratch a dispatch sets up, read back from the ring the emulated command processor stopped on (it does not run
kernels yet) and from GPU memory, against the code object's descriptor and metadata."""

from __future__ import annotations

import ctypes
import os

import numpy as np
import pytest

from kfdtrace.driver import GpuFault, System
from kfdtrace.driver.aql import AQL
from kfdtrace.driver.dispatch import PACKET_BYTES
from kfdtrace.driver.kernargs import KernargError, Launch, Local, pack
from kfdtrace.driver.registers import SH_START

HERE = os.path.dirname(__file__)
BUILT = os.path.join(HERE, "..", "driver", "kernels", "built")
FIXTURES = os.path.join(HERE, "fixtures", "code_objects")
TARGETS = ["gfx90a", "gfx942", "gfx1030", "gfx1100", "gfx1201"]


class Dispatched:
    """What one dispatch put on the ring: SH register values by name, the DISPATCH_DIRECT packet, how often each
    register was written, and the packets in order."""

    def __init__(self, queue):
        d = queue.dialect
        self.packets = list(d.iter_packets(queue.ring.read(0, queue.wptr)))
        names = {SH_START + i: n for i, n in d.registers.sh.items()}
        self.regs: dict[str, int] = {}
        self.writes: dict[str, int] = {}
        for p in self.packets:
            if p.name == "SET_SH_REG":
                for offset, v in d.writes(p).items():
                    self.regs[names[offset]] = v
                    self.writes[names[offset]] = self.writes.get(names[offset], 0) + 1
        self.direct = next(p for p in self.packets if p.name == "DISPATCH_DIRECT")
        self.registers = d.registers

    def field(self, register: str, name: str, value: int | None = None) -> int:
        return self.registers[register].decode(self.regs[register] if value is None else value)[name]

    def user_data(self, n: int) -> list[int]:
        return [self.regs[f"COMPUTE_USER_DATA_{i}"] for i in range(n)]


def dispatch(target: str, path: str, kernel: str, grid, block, *args, make=None):
    """Dispatch on a fresh emulated GPU; (Dispatched, loaded kernel, device memory reader)."""
    system = System.open(emulate=target)
    dev = system.devices[0]
    k = dev.load(path).kernel(kernel)
    q = dev.compute_queue()
    buffers = make(dev) if make else ()
    q.dispatch(k, grid, block, *buffers, *args).submit()
    try:
        q.sync(timeout=5)
    except GpuFault as fault:  # placeholder arguments may make the kernel fault: these tests read registers
        assert "at: DISPATCH_DIRECT" in str(fault), fault
    seen = Dispatched(q)
    return system, seen, k


def sgpr_positions(kd) -> dict[str, int]:
    """The first user SGPR of each enabled user SGPR value."""
    at, n = {}, 0
    for name, count in kd.user_sgprs:
        at[name] = n
        n += count
    return at


def read(addr: int, n: int) -> bytes:
    return ctypes.string_at(addr, n)  # GTT buffers are mapped for the CPU at their GPU address


@pytest.mark.parametrize("target", TARGETS)
def test_a_dispatch_sets_the_program_resources_and_arguments(target):
    path = os.path.join(BUILT, f"corpus-{target}.co")
    system, seen, k = dispatch(target, path, "vector_add", (1000,), (256,), np.uint32(1000),
                               make=lambda dev: [dev.alloc(4096, "gtt") for _ in range(3)])
    with system:
        kd = k.kernel.descriptor
        regs = seen.registers
        assert regs.join("COMPUTE_PGM", seen.regs) == k.entry_address
        priv = 1 << 20 if target == "gfx1100" else 0  # tinygrad's gfx11 CWSR workaround
        assert seen.regs["COMPUTE_PGM_RSRC1"] == kd.compute_pgm_rsrc1 | priv
        assert seen.regs["COMPUTE_PGM_RSRC2"] & ~regs["COMPUTE_PGM_RSRC2"].encode(lds_size=0x1FF) == \
            kd.compute_pgm_rsrc2
        assert seen.regs["COMPUTE_PGM_RSRC3"] == kd.compute_pgm_rsrc3
        # the user SGPRs the descriptor enables, in order (gfx90a/gfx1030 also get the private segment buffer),
        # then zeros up to USER_SGPR_COUNT
        at = sgpr_positions(kd)
        assert "kernarg_segment_ptr" in at and set(at) <= {"kernarg_segment_ptr", "private_segment_buffer",
                                                          "flat_scratch_init"}
        data = seen.user_data(kd.user_sgpr_count)
        kernargs = data[at["kernarg_segment_ptr"]] | data[at["kernarg_segment_ptr"] + 1] << 32
        used = sum(n for _, n in kd.user_sgprs)
        assert data[used:] == [0] * (kd.user_sgpr_count - used)
        md = k.kernel.metadata
        launch = Launch.of((1000,), (256,))
        laid = read(kernargs, md.kernarg_segment_size)
        pointers = [int.from_bytes(laid[a.offset:a.offset + 8], "little") for a in md.explicit_args[:3]]
        assert laid == pack(md, [*pointers, np.uint32(1000)], launch).data
        # shape: 4 workgroups, the last of 232 work-items
        assert (seen.direct.dim_x, seen.direct.dim_y, seen.direct.dim_z) == (4, 1, 1)
        assert seen.field("COMPUTE_NUM_THREAD_X", "num_thread_full") == 256
        assert seen.field("COMPUTE_NUM_THREAD_X", "num_thread_partial") == 1000 % 256
        initiator = regs["COMPUTE_DISPATCH_INITIATOR"].decode(seen.direct.dispatch_initiator)
        assert initiator["compute_shader_en"] == initiator["force_start_at_000"] == initiator["partial_tg_en"] == 1
        assert initiator.get("cs_w32_en", 0) == (kd.wave_size == 32)
        assert seen.packets[seen.packets.index(seen.direct) + 1].name == "EVENT_WRITE"  # later packets wait


@pytest.mark.parametrize("target", TARGETS)
def test_the_dispatch_pointer_points_at_the_dispatch_packet(target):
    system, seen, k = dispatch(target, os.path.join(FIXTURES, f"args-{target}.co"), "ids", (10, 7, 5), (4, 4, 4),
                               make=lambda dev: [dev.alloc(4096, "gtt")])
    with system:
        kd = k.kernel.descriptor
        at = sgpr_positions(kd)
        d = seen.user_data(kd.user_sgpr_count)
        packet_va = d[at["dispatch_ptr"]] | d[at["dispatch_ptr"] + 1] << 32
        kernargs = d[at["kernarg_segment_ptr"]] | d[at["kernarg_segment_ptr"] + 1] << 32
        assert packet_va % PACKET_BYTES == 0
        p = AQL.decode(read(packet_va, PACKET_BYTES), 0)
        assert p.name == "KERNEL_DISPATCH" and p.kernel_object == k.descriptor_address
        assert p.kernarg_address == kernargs and p.dimensions == 3
        assert (p.grid_size_x, p.grid_size_y, p.grid_size_z) == (10, 7, 5)
        assert (p.workgroup_size_x, p.workgroup_size_y, p.workgroup_size_z) == (4, 4, 4)
        assert (seen.direct.dim_x, seen.direct.dim_y, seen.direct.dim_z) == (3, 2, 2)
        assert [seen.field(f"COMPUTE_NUM_THREAD_{a}", "num_thread_partial") for a in "XYZ"] == [2, 3, 1]


@pytest.mark.parametrize("target", TARGETS)
def test_dynamic_lds_is_counted_in_the_lds_size(target):
    path = os.path.join(BUILT, f"corpus-{target}.co")
    system, seen, k = dispatch(target, path, "dot_dynamic2", (256,), (256,), Local(1000), Local(600),
                               make=lambda dev: [dev.alloc(4096, "gtt") for _ in range(3)])
    with system:
        static = k.kernel.metadata.group_segment_fixed_size
        assert seen.field("COMPUTE_PGM_RSRC2", "lds_size") == -(-(static + 1600) // 512)


@pytest.mark.parametrize("target", TARGETS)
def test_a_kernel_that_needs_scratch_gets_it(target):
    path = os.path.join(BUILT, f"corpus-{target}.co")
    kernel = "mode_scratch"

    def buffers(dev):
        return [dev.alloc(1 << 16, "gtt") for a in dev.load(path).kernel(kernel).kernel.metadata.explicit_args
                if a.value_kind == "global_buffer"]

    with System.open(emulate=target) as probe:
        scalars = [np.uint32(64) for a in probe.devices[0].load(path).kernel(kernel).kernel.metadata.explicit_args
                   if a.value_kind == "by_value"]
    system, seen, k = dispatch(target, path, kernel, (64,), (64,), *scalars, make=buffers)
    with system:
        kd = k.kernel.descriptor
        unit = 1024 if target.startswith("gfx9") else 256
        wavesize = seen.field("COMPUTE_TMPRING_SIZE", "wavesize")
        assert seen.field("COMPUTE_TMPRING_SIZE", "waves") > 0
        assert wavesize * unit >= kd.private_segment_fixed_size * 64  # a wave64's lanes each get their bytes
        base = seen.registers.join("COMPUTE_DISPATCH_SCRATCH_BASE", seen.regs)
        xccs = 8 if target == "gfx942" else 1
        assert seen.writes["COMPUTE_DISPATCH_SCRATCH_BASE_LO"] == xccs  # one share per XCC, under PRED_EXEC
        if target in ("gfx90a", "gfx1030"):  # absolute flat scratch: the base travels in user SGPRs too
            names = [name for name, _ in kd.user_sgprs]
            d = seen.user_data(kd.user_sgpr_count)
            assert names == ["private_segment_buffer", "kernarg_segment_ptr", "flat_scratch_init"]
            assert d[0] | (d[1] & 0xFFFF) << 32 == base and d[1] >> 31 == 1  # swizzled buffer resource
            assert d[6] | d[7] << 32 == base
        if xccs > 1:
            preds = [p for p in seen.packets[:seen.packets.index(seen.direct)] if p.name == "PRED_EXEC"]
            assert sorted(p.xcc_mask for p in preds if p.exec_count) == [1 << x for x in range(8)]


def test_kernel_arguments_are_freed_once_the_queue_is_past_them():
    with System.open(emulate="gfx1100") as system:
        dev = system.devices[0]
        q, out = dev.compute_queue(), dev.alloc(4096, "gtt")
        held = dev.alloc(4096, "gtt")
        q.hold(held)
        q.write_data(out, b"\1\0\0\0").sync()
        assert held.handle is not None  # the submission that used it is done, but nothing looked yet
        q.write_data(out, b"\2\0\0\0").sync()
        assert held.handle is None
        kept = dev.alloc(4096, "gtt")
        q.hold(kept)
        q.discard()  # never submitted: freed at once
        assert kept.handle is None


def test_a_kernel_of_another_device_or_a_bad_shape_is_refused():
    with System.open(emulate="gfx942,gfx942") as system:
        a, b = system.devices
        k = a.load(os.path.join(BUILT, "corpus-gfx942.co")).kernel("vector_add")
        with pytest.raises(ValueError, match="not on this queue"):
            b.compute_queue().dispatch(k, 64, 64, 0, 0, 0, 1)
        q = a.compute_queue()
        with pytest.raises(KernargError, match="at most"):
            q.dispatch(k, 2048, 2048, 0, 0, 0, 1)
        with pytest.raises(KernargError, match="takes 4 arguments"):
            q.dispatch(k, 64, 64, 0, 0, 0)
        assert q.discard() == []


@pytest.mark.parametrize("target", TARGETS)
def test_an_aql_dispatch_is_one_packet_with_its_arguments_in_gpu_memory(target):
    with System.open(emulate=target) as system:
        dev = system.devices[0]
        k = dev.load(os.path.join(BUILT, f"corpus-{target}.co")).kernel("dot_dynamic2")
        q = dev.aql_queue()
        bufs = [dev.alloc(4096, "gtt") for _ in range(3)]
        index = q.dispatch(k, (300,), (256,), *bufs, Local(1000), Local(600))
        p = q.packet_at(index)
        assert p.name == "KERNEL_DISPATCH" and p.kernel_object == k.descriptor_address
        assert (p.dimensions, p.grid_size_x, p.workgroup_size_x) == (1, 300, 256)
        md = k.kernel.metadata
        assert p.group_segment_size == md.group_segment_fixed_size + 1600
        expected = pack(md, [*bufs, Local(1000), Local(600)], Launch.of(300, 256)).data
        assert read(p.kernarg_address, md.kernarg_segment_size) == expected
        q.sync(timeout=30)  # the emulated GPU runs it
        assert q.read_index > index


@pytest.mark.parametrize("target", ["gfx90a", "gfx942", "gfx1100"])
def test_an_aql_queue_gets_scratch_for_a_kernel_that_needs_it(target):
    with System.open(emulate=target) as system:
        dev = system.devices[0]
        k = dev.load(os.path.join(BUILT, f"corpus-{target}.co")).kernel("mode_scratch")
        q = dev.aql_queue()
        assert q.amd_queue.scratch_backing_memory_location == 0
        args = [dev.alloc(1 << 16, "gtt") if a.value_kind == "global_buffer" else np.uint32(64)
                for a in k.kernel.metadata.explicit_args]
        index = q.dispatch(k, 64, 64, *args)
        aq, kd = q.amd_queue, k.kernel.descriptor
        assert aq.scratch_backing_memory_location == q.scratch.area.base() != 0
        assert aq.scratch_wave64_lane_byte_size >= kd.private_segment_fixed_size
        assert aq.scratch_backing_memory_byte_size == q.scratch.area.buffer.size
        assert aq.compute_tmpring_size != 0 and aq.max_cu_id > 0 and aq.max_wave_id > 0
        assert q.packet_at(index).private_segment_size == kd.private_segment_fixed_size


@pytest.mark.parametrize("target", TARGETS)
def test_a_repeated_dispatch_is_the_dispatch_built_afresh(target, monkeypatch):
    """pm4_dispatch makes the packets around the user SGPRs once per kernel, launch and scratch: a dispatch made
    from them is byte for byte the one built from nothing, whatever its SGPRs (with and without scratch)."""
    from kfdtrace.driver import dispatch as dispatch_module

    with System.open(emulate=target) as system:
        dev = system.devices[0]
        program = dev.load(os.path.join(BUILT, f"corpus-{target}.co"))
        q = dev.compute_queue()
        for name, scratch in (("vector_add", None), ("mode_scratch", q.scratch.ensure(256, q.hold))):
            kernel = program.kernel(name)
            kd = kernel.kernel.descriptor
            args = pack(kernel.kernel.metadata, [0] * len(kernel.kernel.metadata.explicit_args), Launch.of(96, 64))
            for launch in (Launch.of(96, 64), Launch.of((64, 3), (32, 2))):
                built = []
                for seed in range(3):
                    sgprs = [(seed * 0x9E3779B9 + i * 0x01000193) & 0xFFFFFFFF for i in range(kd.user_sgpr_count)]
                    memo = dispatch_module.pm4_dispatch(q.dialect, kernel, launch, args, sgprs, scratch, q.num_xcc)
                    monkeypatch.setattr(dispatch_module, "_AROUND_SGPRS", {})
                    fresh = dispatch_module.pm4_dispatch(q.dialect, kernel, launch, args, sgprs, scratch, q.num_xcc)
                    assert memo == fresh
                    built.append(memo)
                    names = {SH_START + i: n for i, n in q.dialect.registers.sh.items()}
                    regs = {names[o]: v for p in q.dialect.iter_packets(memo) if p.name == "SET_SH_REG"
                            for o, v in q.dialect.writes(p).items()}
                    assert [regs[f"COMPUTE_USER_DATA_{i}"] for i in range(len(sgprs))] == sgprs
                    user_data = zip(q.dialect.registers.user_data, sgprs, strict=False)
                    assert q.dialect.set_sh_reg(**{r.name: v for r, v in user_data}) in memo  # as it was built
                assert len(set(built)) == 3
