"""AQL queues on every family: the packet table and layouts against amd-facts §9, and the driver's AqlQueue and
HsaSignal against the emulated AQL packet processor."""

from __future__ import annotations

import ctypes
import errno
import logging
import struct
import threading

import pytest

from kfdtrace.driver import DeviceError, GpuFault
from kfdtrace.driver import aql_queue as aq
from kfdtrace.driver import kfd_ioctl as K
from kfdtrace.driver.aql import (
    AQL,
    AmdQueue,
    AmdSignal,
    FenceScope,
    HsaQueue,
    PacketType,
    QueueProperties,
    SignalCondition,
    header,
    pm4_ib_packet,
)
from kfdtrace.driver.aql_queue import HsaSignal, dispatch_packet
from kfdtrace.driver.families import queue_sizes
from kfdtrace.driver.memory import PAGE
from kfdtrace.driver.pm4 import DIALECTS as PM4
from kfdtrace.driver.pm4 import CopySel, WriteDst
from kfdtrace.driver.sdma import PollFunc
from kfdtrace.driver.system import System
from tests.emulated import FAMILIES, engine_of, u32

INVALID_HEADER = 1


@pytest.fixture(params=FAMILIES)
def system(request):
    s = System.open(emulate=request.param)
    yield s
    s.close()


def _headers(q) -> list[int]:
    ring = q.ring.read()
    return [struct.unpack_from("<H", ring, i * 64)[0] for i in range(q.size)]


def _ib(dev, *packets: bytes):
    """A GTT buffer holding PM4 packets; (buffer, bytes)."""
    data = b"".join(packets)
    buf = dev.alloc(PAGE, "gtt")
    buf.write(data)
    return buf, len(data)


# -- layouts (amd-facts §9: offsets compiled from ROCR's headers) ------------------------------------------
def _offsets(struct_type) -> dict[str, tuple[int, int]]:
    return {name: (getattr(struct_type, name).offset, getattr(struct_type, name).size)
            for name, *_ in struct_type._fields_}


def test_amd_signal_layout():
    assert ctypes.sizeof(AmdSignal) == 64
    assert _offsets(AmdSignal) == {
        "kind": (0, 8), "value": (8, 8), "event_mailbox_ptr": (16, 8), "event_id": (24, 4), "reserved1": (28, 4),
        "start_ts": (32, 8), "end_ts": (40, 8), "queue_ptr": (48, 8), "reserved3": (56, 8)}


def test_amd_queue_layout():
    assert ctypes.sizeof(HsaQueue) == 40 and ctypes.sizeof(AmdQueue) == 256
    assert _offsets(HsaQueue) == {"type": (0, 4), "features": (4, 4), "base_address": (8, 8),
                                  "doorbell_signal": (16, 8), "size": (24, 4), "reserved1": (28, 4), "id": (32, 8)}
    offsets = _offsets(AmdQueue)
    assert {k: v[0] for k, v in offsets.items() if not k.startswith("reserved")} == {
        "hsa_queue": 0, "caps": 40, "write_dispatch_id": 56, "group_segment_aperture_base_hi": 64,
        "private_segment_aperture_base_hi": 68, "max_cu_id": 72, "max_wave_id": 76,
        "max_legacy_doorbell_dispatch_id_plus_1": 80, "legacy_doorbell_lock": 88, "read_dispatch_id": 128,
        "read_dispatch_id_field_base_byte_offset": 136, "compute_tmpring_size": 140,
        "scratch_resource_descriptor": 144, "scratch_backing_memory_location": 160,
        "scratch_backing_memory_byte_size": 168, "scratch_wave64_lane_byte_size": 176, "queue_properties": 180}
    assert offsets["write_dispatch_id"][1] == offsets["read_dispatch_id"][1] == 8
    assert offsets["scratch_resource_descriptor"][1] == 16


def _field_bytes(packet_name: str) -> dict[str, tuple[int, int]]:
    """(byte offset, bytes) of each whole-byte field of a packet definition."""
    out = {}
    for f in AQL[packet_name].fields:
        start = f.dword * 32 + getattr(f, "shift", 0)
        if start % 8 == 0 and f.width % 8 == 0:
            out[f.name] = (start // 8, f.width // 8)
    return out


def test_packet_layouts():
    assert all(d.size == 16 for d in AQL)  # every packet is 64 bytes
    assert _field_bytes("KERNEL_DISPATCH") == {
        "workgroup_size_x": (4, 2), "workgroup_size_y": (6, 2), "workgroup_size_z": (8, 2), "grid_size_x": (12, 4),
        "grid_size_y": (16, 4), "grid_size_z": (20, 4), "private_segment_size": (24, 4),
        "group_segment_size": (28, 4), "kernel_object": (32, 8), "kernarg_address": (40, 8),
        "completion_signal": (56, 8)}
    for barrier in ("BARRIER_AND", "BARRIER_OR"):
        assert _field_bytes(barrier) == {**{f"dep_signal{i}": (8 + 8 * i, 8) for i in range(5)},
                                         "completion_signal": (56, 8)}
    assert _field_bytes("BARRIER_VALUE") == {"signal": (8, 8), "value": (16, 8), "mask": (24, 8), "cond": (32, 4),
                                             "completion_signal": (56, 8)}
    assert _field_bytes("AGENT_DISPATCH") == {"agent_type": (2, 2), "return_address": (8, 8), "arg0": (16, 8),
                                              "arg1": (24, 8), "arg2": (32, 8), "arg3": (40, 8),
                                              "completion_signal": (56, 8)}
    assert _field_bytes("PM4_IB")["dw_cnt_remain"] == (20, 4) and _field_bytes("PM4_IB")["completion_signal"] == (56, 8)


def test_headers_and_the_pm4_ib_packet_as_tinygrad_builds_them():
    assert header(PacketType.KERNEL_DISPATCH) == 0x1502  # tinygrad AQL_HDR | type
    for name in ("gfx9", "gfx10", "gfx11", "gfx12"):
        pm4 = PM4[name]
        p = pm4_ib_packet(pm4, 0x12340000, 24, 0x5000, barrier=1, acquire_fence_scope=FenceScope.SYSTEM,
                          release_fence_scope=FenceScope.SYSTEM)
        words = struct.unpack("<16I", p.encode())
        assert words[0] == 0x00011500  # header 0x1500 | AMD_AQL_FORMAT_PM4_IB << 16
        assert pm4.decode(p.encode()[4:20]).fields["ib_base"] == 0x12340000
        assert words[1:5] == struct.unpack("<4I", pm4.build("INDIRECT_BUFFER", ib_base=0x12340000, ib_size=24, valid=1))
        assert words[5] == 0xA and words[6:14] == (0,) * 8 and words[14] == 0x5000 and words[15] == 0
    assert AQL["PM4_IB"].indirect == ("ib_base", "ib_size") and AQL.indirect_dialect == "pm4"


def test_decode_keeps_a_dispatch_setup_apart_from_the_vendor_format():
    p = dispatch_packet(0x1000, (256, 4, 2), (64, 2, 1), 0x2000, private_segment_size=16, group_segment_size=512,
                        completion_signal=0x3000)
    data = p.encode()
    assert struct.unpack_from("<HH", data) == (0x1502, 3)  # header, setup.dimensions
    back = AQL.decode(data)
    assert back.name == "KERNEL_DISPATCH" and back == p and back.encode() == data
    assert (back.grid_size_x, back.grid_size_y, back.grid_size_z) == (256, 4, 2)  # work-items, not groups
    assert dispatch_packet(1, (100,), (10,), 2).dimensions == 1
    with pytest.raises(ValueError, match="same 1 to 3 dimensions"):
        dispatch_packet(1, (1, 2), (1,), 2)
    for name in ("BARRIER_VALUE", "PM4_IB"):
        assert AQL.decode(AQL.build(name)).name == name
    with pytest.raises(ValueError, match="unknown packet type=0x7"):
        AQL.decode(u32(7) + bytes(60))
    with pytest.raises(ValueError, match="unknown packet type=0x0 amd_format=0x9"):
        AQL.decode(u32(0x90000) + bytes(60))


def test_addresses_and_signals_are_tagged():
    p = AQL.packet("BARRIER_AND", dep_signal0=0x1000, dep_signal3=0x2000, completion_signal=0x3000)
    assert AQL.dependencies(p) == [0x1000, 0, 0, 0x2000, 0] and AQL.completion(p) == 0x3000
    moved = p.relocate(lambda a: a + 0x10000)
    assert AQL.dependencies(moved) == [0x11000, 0x10000, 0x10000, 0x12000, 0x10000]
    assert AQL.completion(moved) == 0x13000
    d = dispatch_packet(0x1000, (1,), (1,), 0x2000, completion_signal=0x3000)
    assert d.addresses() == {"kernel_object": 0x1000, "kernarg_address": 0x2000, "completion_signal": 0x3000}
    assert d.written_addresses() == [0x3000]  # the completion signal: the processor writes it
    assert AQL.dependencies(AQL.packet("BARRIER_VALUE", signal=0x40)) == [0x40]


# -- creation -------------------------------------------------------------------------------------------
def test_create_and_destroy(system):
    dev = system.devices[0]
    before = set(dev.buffers)
    q = dev.aql_queue(packets=64, name="aql")
    sizes, num_xcc = queue_sizes(dev.node.properties), dev.node.properties.get("num_xcc") or 1
    assert q.ring.size == 64 * 64 and _headers(q) == [INVALID_HEADER] * 64
    assert q.eop.size == sizes.eop_buffer_size and q.cwsr.size == sizes.cwsr_allocation(num_xcc)
    amdq = q.amd_queue
    assert (amdq.hsa_queue.base_address, amdq.hsa_queue.size, amdq.read_dispatch_id_field_base_byte_offset) == (
        q.ring.va, 64, 128)
    engine = engine_of(q)
    assert type(engine).__name__ == "AqlProcessor" and engine.slots == 64 and engine.num_xcc == num_xcc
    assert engine.rptr_host == dev.sys.machine.gpus[dev.gpu_id].vm.translate(q.amd_queue_buffer.va + 128, 8)
    q.destroy()
    assert not dev.sys.machine.queues and set(dev.buffers) == before
    with pytest.raises(DeviceError, match=r"destroyed; make a new one with device.aql_queue\(\)"):
        q.barrier_and()
    for wrong in (8, 100):
        with pytest.raises(ValueError, match="power of two of at least 16"):
            dev.aql_queue(packets=wrong)


@pytest.mark.parametrize("wrong", ["ring_size_in_packets", "eop_buffer_size", "ctl_stack_size"])
def test_the_kernel_refuses_wrong_sizes_with_einval(system, monkeypatch, wrong):
    dev = system.devices[0]
    real_ioctl = dev.kfd.ioctl

    def ioctl(name, **args):
        if name == "CREATE_QUEUE":
            if wrong == "ring_size_in_packets":
                args["ring_size"] //= 64  # ROCR passes bytes: 4096 "bytes" is one page of a 64-page ring
            else:
                args[wrong] += PAGE
        return real_ioctl(name, **args)

    monkeypatch.setattr(dev.kfd, "ioctl", ioctl)
    before = set(dev.buffers)
    with pytest.raises(DeviceError, match="CREATE_QUEUE") as err:
        dev.aql_queue(packets=4096)
    assert err.value.errno == errno.EINVAL
    assert set(dev.buffers) == before and not dev.sys.machine.queues


# -- producer protocol ----------------------------------------------------------------------------------
def test_a_small_ring_wraps_and_the_doorbell_gets_each_packet_index(system):
    q = system.devices[0].aql_queue(packets=16)
    doorbell = ctypes.c_uint64.from_address(q.doorbell)
    done = HsaSignal(system, 40)
    for i in range(40):
        assert q.barrier_and(completion=done) == i
        assert doorbell.value == i  # the index of the packet just written, not the count
    done.wait(0, timeout=10)
    q.sync()
    assert q.read_index == q.write_index == 41 and engine_of(q).announced == 41
    assert _headers(q) == [INVALID_HEADER] * 16  # every processed slot released


def test_a_full_ring_waits_for_the_processor(system):
    q, gate = system.devices[0].aql_queue(packets=16), HsaSignal(system, 0, "gate")
    q.barrier_value(gate, 1)  # index 0 holds the processor
    for _ in range(15):
        q.barrier_and()
    assert q.write_index == 16 and q.read_index == 0
    producer = threading.Thread(target=q.barrier_and)
    producer.start()
    while q.write_index < 17:  # the producer has its index and waits for slot 0 to be released
        producer.join(0.001)
    assert AQL.decode(q.ring.read(0, 64)).name == "BARRIER_VALUE"  # slot 0 was not overwritten
    gate.signal(1)
    producer.join(10)
    assert not producer.is_alive()
    q.sync()
    assert q.read_index == 18


def test_an_announced_slot_whose_header_is_invalid_is_not_processed(system):
    q = system.devices[0].aql_queue(packets=16)
    index = q.amd_queue.write_dispatch_id
    q.amd_queue.write_dispatch_id = index + 1  # a producer that reserved and rang before writing its header
    system.devices[0].sys.doorbell_store(q.doorbell, index)
    follow = threading.Thread(target=q.sync)
    follow.start()  # the next packet is behind the INVALID slot
    assert q.read_index == 0
    done = HsaSignal(system, 1)
    packet = AQL.build("BARRIER_AND", completion_signal=done.handle)
    q.ring.write(packet[4:], 4)
    q.ring.write(packet[:4], 0)  # the header, last
    done.wait(0, timeout=10)
    follow.join(10)
    assert not follow.is_alive() and q.read_index == 2
    with pytest.raises(ValueError, match="INVALID packet would never be processed"):
        q.submit(AQL.build("INVALID"))


# -- barriers -------------------------------------------------------------------------------------------
def test_barrier_and_waits_for_every_dependency_and_completes_its_own(system):
    q = system.devices[0].aql_queue()
    a, b, done = HsaSignal(system, 1, "a"), HsaSignal(system, 2, "b"), HsaSignal(system, 1, "done")
    q.barrier_and([a, 0, b], completion=done)  # a zero handle counts as satisfied
    a.signal(0)
    b.signal(1)
    assert done.value == 1 and q.read_index == 0
    b.signal(0)
    assert done.wait(0, timeout=10) == 0
    q.sync()
    assert q.read_index == 2


def test_barrier_or_waits_for_any_dependency(system):
    q = system.devices[0].aql_queue()
    a, b, done = HsaSignal(system, 1, "a"), HsaSignal(system, 1, "b"), HsaSignal(system, 2, "done")
    q.barrier_or([0, a, b], completion=done)  # a zero handle counts as not satisfied
    q.barrier_or([b], completion=done)
    assert done.value == 2
    b.signal(0)
    done.wait(0, timeout=10)
    assert a.value == 1


@pytest.mark.parametrize(("start", "value", "condition", "mask", "then"), [
    (0, 1, SignalCondition.GTE, (1 << 64) - 1, 1),
    (5, 5, SignalCondition.NE, (1 << 64) - 1, 6),
    (3, 0, SignalCondition.LT, (1 << 64) - 1, -1),  # signed: -1 < 0
    (0x1FF, 0x200, SignalCondition.EQ, 0xF00, 0x2FF),  # (value & mask) == 0x200
])
def test_barrier_value(system, start, value, condition, mask, then):
    q = system.devices[0].aql_queue()
    sig, done = HsaSignal(system, start, "sig"), HsaSignal(system, 1, "done")
    q.barrier_value(sig, value, condition, mask, completion=done)
    assert done.value == 1
    sig.signal(then)
    done.wait(0, timeout=10)


@pytest.mark.parametrize("profiling", [False, True])
def test_a_profiling_queue_stamps_each_completion_signal_with_the_gpu_clock(system, profiling):
    """Campaign 91: with amd_queue_t's ENABLE_PROFILING set, the CP writes the GPU clock as a packet begins and as
    it completes into its completion signal's start_ts and end_ts (ROCR Queue::SetProfiling); the emulated
    processor left them 0. Without the property they stay as they were."""
    q = system.devices[0].aql_queue()
    if profiling:
        q.amd_queue.queue_properties |= QueueProperties.ENABLE_PROFILING
    gate, first, second = HsaSignal(system, 1, "gate"), HsaSignal(system, 1, "first"), HsaSignal(system, 1, "second")
    q.barrier_and([gate], completion=first)
    q.barrier_and([0], completion=second)
    gate.signal(0)
    second.wait(0, timeout=10)
    stamps = [(s._signal.start_ts, s._signal.end_ts) for s in (first, second)]
    if profiling:
        (a, b), (c, d) = stamps
        assert 0 < a <= b <= c <= d, stamps
    else:
        assert stamps == [(0, 0), (0, 0)]


def test_a_completion_signal_wakes_a_cpu_wait_through_its_event(system, monkeypatch):
    monkeypatch.setattr(aq, "SLEEP_SLICE_MS", 60_000)  # a wait that polled would sleep a minute
    woken = []
    real = System.wait_events

    def watch(self, ids, timeout_ms):
        ok = real(self, ids, timeout_ms)
        woken.append((ids[0], ok))
        return ok

    monkeypatch.setattr(System, "wait_events", watch)
    q, gate, done = system.devices[0].aql_queue(), HsaSignal(system, 0, "gate"), HsaSignal(system, 1, "done")
    q.barrier_value(gate, 1, completion=done)
    threading.Timer(0.05, gate.signal, args=(1,)).start()
    done.wait(0, timeout=60)
    assert woken and all(ok for _, ok in woken) and {eid for eid, _ in woken} == {done.event_id}
    mailbox = ctypes.c_uint64.from_address(system.event_mailbox(done.event_id)).value
    assert mailbox == K.UNSIGNALED_EVENT_SLOT  # the kernel found the id the processor stored, and acknowledged it


# -- PM4 indirect buffers and ordering with SDMA --------------------------------------------------------
def test_a_pm4_indirect_buffer_runs_on_the_command_processor(system):
    dev = system.devices[0]
    q, out, done = dev.aql_queue(), dev.alloc(PAGE, "gtt"), HsaSignal(system, 1)
    write = q.pm4_dialect.build("WRITE_DATA", u32(7, 8, 9), dst_sel=WriteDst.MEMORY, wr_confirm=1, dst=out.va)
    ib, size = _ib(dev, write)
    q.pm4(ib, size, completion=done)
    done.wait(0, timeout=10)
    assert list(out.numpy("<u4")[:3]) == [7, 8, 9]


def test_sdma_and_aql_order_each_other_both_ways(system):
    dev = system.devices[0]
    q, sdma = dev.aql_queue(name="aql"), dev.sdma_queue(name="sdma")
    a, b, c = dev.alloc(PAGE, "gtt"), dev.alloc(PAGE, "vram"), dev.alloc(PAGE, "gtt")
    to_aql, gate = HsaSignal(system, 0, "to aql"), HsaSignal(system, 0, "gate")
    from_aql, finished = HsaSignal(system, 1, "from aql"), system.semaphore("finished")
    copy = q.pm4_dialect.build("COPY_DATA", src_sel=CopySel.TC_L2, dst_sel=CopySel.TC_L2, count_sel=1, wr_confirm=1,
                       src=a.va, dst=b.va)
    ib, size = _ib(dev, copy)
    q.barrier_value(to_aql, 1)  # SDMA -> AQL: the copy waits for SDMA's fill
    q.barrier_value(gate, 1)
    q.pm4(ib, size, completion=from_aql)
    poll = {"mask": 0xFFFFFFFF, "func": PollFunc.EQ, "mem_poll": 1, "interval": 10, "retry_count": 0xFFF}
    value = from_aql.handle + AmdSignal.value.offset
    sdma.fill(a, 0x5A5A5A5A, 8).signal(to_aql.semaphore(), 1)
    sdma.packet("POLL_REGMEM", addr=value, ref=0, **poll).packet("POLL_REGMEM", addr=value + 4, ref=0, **poll)
    sdma.copy(c, b, 8).signal(finished, 1).submit()  # AQL -> SDMA: the copy waits for the AQL completion
    gate.signal(1)
    finished.wait(1, timeout=10)
    assert list(c.numpy("<u4")[:2]) == [0x5A5A5A5A] * 2


# -- faults and refusals --------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["completion", "dependency"])
def test_a_bad_signal_address_is_a_vm_fault(system, where):
    q = system.devices[0].aql_queue(name="faulty")
    bad = 0x7F00_DEAD_0000
    q.barrier_and([bad] if where == "dependency" else [], completion=bad if where == "completion" else 0)
    with pytest.raises(GpuFault) as err:
        q.sync(timeout=5)
    assert "VM fault at address" in str(err.value) and "BARRIER_AND" in str(err.value)
    error = engine_of(q).error
    assert "VM fault" in error and f"AQL queue {q.queue_id} packet 0" in error


def test_a_kernel_dispatch_of_no_kernel_is_a_vm_fault(system, caplog):
    q = system.devices[0].aql_queue(name="dispatch")
    q.barrier_and()
    q.submit(dispatch_packet(0x1000, (64,), (64,), 0x2000))  # kernel_object 0x1000: no buffer there
    with caplog.at_level(logging.ERROR, "kfdtrace.emulator"), pytest.raises(GpuFault, match="VM fault"):
        q.sync(timeout=5)
    error = engine_of(q).error
    assert "read of 64 bytes at 0x1000" in error and "KERNEL_DISPATCH" in error
    assert f"AQL queue {q.queue_id} packet 1 (slot 1)" in error and error in caplog.text
    assert q.read_index == 1  # stopped on the dispatch, which keeps its slot


@pytest.mark.parametrize(("raw", "message"), [
    (u32(7), "unknown packet type=0x7"),
    (u32(PacketType.AGENT_DISPATCH), "agent dispatch packets are not emulated"),
    (u32(PacketType.BARRIER_AND | 3 << 9), "acquire_fence_scope=3 is not a fence scope"),
])
def test_packets_the_processor_refuses_stop_the_queue_with_a_named_error(system, raw, message):
    q = system.devices[0].aql_queue()
    q.submit(raw + bytes(60))
    with pytest.raises(GpuFault):
        q.sync(timeout=5)
    assert message in engine_of(q).error and f"AQL queue {q.queue_id} packet 0" in engine_of(q).error


def test_several_threads_submit(system):
    q = system.devices[0].aql_queue(packets=16)
    done = HsaSignal(system, 4 * 50, "done")

    def produce():
        for _ in range(50):
            q.barrier_and(completion=done)

    threads = [threading.Thread(target=produce) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    done.wait(0, timeout=30)
    q.sync()
    assert q.read_index == q.write_index == 201 and _headers(q) == [INVALID_HEADER] * 16


def test_queues_on_two_gpus_share_signals():
    with System.open(emulate="gfx942,gfx1100") as system:
        d0, d1 = system.devices
        a, b = d0.aql_queue(name="a"), d1.aql_queue(name="b")
        ab, ba = HsaSignal(system, 1, "ab"), HsaSignal(system, 1, "ba")
        b.barrier_and([ab], completion=ba)
        a.barrier_and(completion=ab)
        ba.wait(0, timeout=10)
        assert ab.value == 0 and ba.value == 0


def test_a_queue_destroyed_while_its_kernel_runs_logs_no_error(caplog):
    """Campaign 52: a replay stopped on a corrupt record while an AQL kernel ran printed two lines on stderr, the
    emulator's "the queue was stopped while its kernel ran" first: a queue being destroyed says nothing."""
    import numpy as np

    from kfdtrace.driver.kernels.device import corpus

    with caplog.at_level(logging.ERROR), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        x, y, c = (gpu.alloc(1 << 22, "gtt", name=n) for n in "xyc")
        q = gpu.aql_queue()
        q.dispatch(corpus(gpu).kernel("vector_add"), (1 << 20,), (64,), x, y, c, np.uint32(1 << 20))
        q.destroy()  # long before the kernel is done
    assert not [r for r in caplog.records if "stopped while its kernel ran" in r.getMessage()]


def test_a_barrier_packet_passes_by_what_its_dependency_signals_hold():
    """AqlDialect.passes, which the emulated processor polls and a replay asks whether a queue is held: BARRIER_AND's
    non-zero dependencies all at 0, BARRIER_OR's some, BARRIER_VALUE's (value & mask) by its condition, signed."""
    values = {0x1000: 0, 0x2000: 5, 0x3000: -3}
    both = AQL.packet("BARRIER_AND", dep_signal0=0x1000, dep_signal1=0x2000)
    assert AQL.passes(both, values.get) is False
    assert AQL.passes(AQL.packet("BARRIER_AND", dep_signal0=0x1000), values.get) is True
    assert AQL.passes(AQL.packet("BARRIER_OR", dep_signal0=0x2000, dep_signal1=0x1000), values.get) is True
    assert AQL.passes(AQL.packet("BARRIER_OR"), values.get) is False  # no signal to reach 0: never
    assert AQL.passes(AQL.packet("BARRIER_AND", dep_signal0=0x4000), values.get) is None  # unreadable

    def below(mask: int = (1 << 64) - 1, cond: int = SignalCondition.LT):
        return AQL.packet("BARRIER_VALUE", signal=0x3000, value=(1 << 64) - 2, mask=mask, cond=cond)
    assert AQL.passes(below(), values.get) is True  # -3 < -2, signed
    assert AQL.passes(below(mask=0xff), values.get) is False  # 0xfd
    with pytest.raises(ValueError, match="cond=7 is not a signal condition"):
        AQL.passes(below(cond=7), values.get)
