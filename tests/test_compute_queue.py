"""PM4 compute queues on every family: the driver's ComputeQueue against the emulated command processor."""

from __future__ import annotations

import dataclasses
import errno
import logging
import struct
import threading
import time

import pytest

from kfdtrace.driver import DeviceError, GpuFault, WaitTimeout
from kfdtrace.driver import compute_queue as cq
from kfdtrace.driver.families import queue_sizes
from kfdtrace.driver.memory import PAGE
from kfdtrace.driver.packets import MAX_IB_DEPTH
from kfdtrace.driver.pm4 import CopySel, DataSel, IntSel, WaitFunc, WriteDst
from kfdtrace.driver.sdma import AtomicOp
from kfdtrace.driver.system import System
from tests.emulated import FAMILIES, engine_of, u32


@pytest.fixture(params=FAMILIES)
def system(request):
    s = System.open(emulate=request.param)
    yield s
    s.close()


# -- creation ---------------------------------------------------------------------------------------------
def test_create_and_destroy_with_the_sizes_the_topology_demands(system):
    dev = system.devices[0]
    system.semaphore().free()  # the semaphore pool (each queue's `done`) is made once, on first use
    before = set(dev.buffers)
    q = dev.compute_queue(name="c")
    sizes, num_xcc = queue_sizes(dev.node.properties), dev.node.properties.get("num_xcc") or 1
    assert q.eop.size == sizes.eop_buffer_size == 4096
    assert q.cwsr.size == sizes.cwsr_allocation(num_xcc) >= sizes.cwsr_size * num_xcc
    assert q.eop.domain == q.cwsr.domain == "vram" and q.eop.cpu is None
    machine = dev.sys.machine
    assert type(engine_of(q)).__name__ == "CommandProcessor" and engine_of(q).num_xcc == num_xcc
    queue_id = q.queue_id
    q.destroy()
    assert queue_id not in machine.queues and set(dev.buffers) == before
    with pytest.raises(DeviceError, match=r"destroyed; make a new one with device.compute_queue\(\)"):
        q.write_data(0x1000, b"1234").submit()


@pytest.mark.parametrize("wrong", [
    dict(eop_buffer_size=8192),  # must equal the topology's
    dict(ctl_stack_size=0x1000),  # must equal the topology's
    dict(cwsr_size=0x1000),  # below the topology's
    dict(debug_memory_size=1 << 20),  # the CWSR buffer is then not the size KFD maps
])
def test_wrong_context_sizes_are_einval_and_leave_nothing_behind(system, monkeypatch, wrong):
    dev = system.devices[0]
    real = queue_sizes(dev.node.properties)
    if "ctl_stack_size" in wrong and real.ctl_stack_size == wrong["ctl_stack_size"]:
        wrong = dict(ctl_stack_size=real.ctl_stack_size + PAGE)
    monkeypatch.setattr(cq, "queue_sizes", lambda props: dataclasses.replace(queue_sizes(props), **wrong))
    system.semaphore().free()
    before = set(dev.buffers)
    with pytest.raises(DeviceError, match="CREATE_QUEUE") as err:
        dev.compute_queue()
    assert err.value.errno == errno.EINVAL
    assert set(dev.buffers) == before and not dev.sys.machine.queues


# -- memory packets -------------------------------------------------------------------------------------
def test_write_data_and_copy_data(system):
    dev = system.devices[0]
    q, buf = dev.compute_queue(), dev.alloc(3 * PAGE, "gtt")
    data = bytes(range(256)) * 20  # 5120 bytes: two WRITE_DATA packets
    q.write_data(buf, data, offset=PAGE).write_data(buf, u32(0xDEADBEEF, 0x01234567))
    q.copy_data(buf, buf, dst_offset=16).copy_data(buf, buf, size=8, dst_offset=24).timestamp(buf, offset=40)
    q.sync()
    words = buf.numpy("<u4")
    assert buf.read(PAGE, len(data)) == data
    assert list(words[:2]) == [0xDEADBEEF, 0x01234567]
    assert list(words[4:8]) == [0xDEADBEEF, 0, 0xDEADBEEF, 0x01234567]
    assert buf.numpy("<u8")[5] > 0  # the GPU clock
    with pytest.raises(ValueError, match="4 or 8 bytes"):
        q.copy_data(buf, buf, size=2)


def test_indirect_buffer(system):
    dev = system.devices[0]
    q, out, ib = dev.compute_queue(), dev.alloc(PAGE, "gtt"), dev.alloc(PAGE, "gtt")
    d = q.dialect
    inner = d.build("WRITE_DATA", u32(7), dst_sel=WriteDst.MEMORY, dst=out.va + 4)
    body = d.build("WRITE_DATA", u32(0xFEED), dst_sel=WriteDst.MEMORY, dst=out.va) + d.build("NOP", count=0x3FFF)
    body += d.build("INDIRECT_BUFFER", ib_base=ib.va + 512, ib_size=len(inner) // 4, valid=1)  # one level down
    ib.write(body)
    ib.write(inner, 512)
    q.indirect(ib, len(body)).sync()
    assert list(out.numpy("<u4")[:2]) == [0xFEED, 7]


def test_an_indirect_buffer_that_runs_itself_stops_the_queue(system, caplog):
    dev = system.devices[0]
    q, ib = dev.compute_queue(name="loop"), dev.alloc(PAGE, "gtt")
    loop = q.dialect.build("INDIRECT_BUFFER", ib_base=ib.va, ib_size=4, valid=1)
    ib.write(loop)
    q.indirect(ib, len(loop))
    with caplog.at_level(logging.ERROR, "kfdtrace.emulator"), pytest.raises(GpuFault, match="at: INDIRECT_BUFFER"):
        q.sync(timeout=5)
    assert f"nest more than {MAX_IB_DEPTH} deep" in engine_of(q).error


def test_ring_wraps_with_pm4_nop_padding(system):
    """20-byte WRITE_DATAs do not divide a 1 KiB ring: the tail is padded with NOPs, one-dword ones included."""
    dev = system.devices[0]
    q, buf = dev.compute_queue(ring_size=1024), dev.alloc(PAGE, "gtt")
    for i in range(150):
        q.write_data(buf, u32(i), offset=4 * (i % 8)).submit()
    q.sync()
    assert list(buf.numpy("<u4")[:8]) == [144, 145, 146, 147, 148, 149, 142, 143]
    assert q.wptr > 2 * 1024 and q.rptr == q.wptr
    reported = int(q.ptrs.numpy("<u8")[0])  # the CP reports a dword offset within the ring
    assert reported == q.wptr // 4 % (1024 // 4)


def test_back_pressure_waits_for_the_command_processor(system):
    dev = system.devices[0]
    q, gate, buf = dev.compute_queue(ring_size=1024), system.semaphore("gate"), dev.alloc(PAGE, "gtt")
    q.wait(gate, 1)
    for i in range(200):  # far more than the ring holds while the CP is held by the gate
        q.write_data(buf, u32(i))
    timer = threading.Timer(0.05, gate.signal, args=(1,))
    timer.start()
    q.submit()  # blocks on the full ring until the gate opens
    q.sync()
    timer.join()
    assert buf.numpy("<u4")[0] == 199


# -- semaphores -----------------------------------------------------------------------------------------
def test_a_cpu_signal_releases_a_waiting_queue(system):
    dev = system.devices[0]
    q, buf = dev.compute_queue(), dev.alloc(PAGE, "gtt")
    go, done = system.semaphore("go"), system.semaphore("done")
    q.wait(go, 3).write_data(buf, u32(42)).signal(done, 1).submit()
    go.signal(2)
    time.sleep(0.02)
    assert done.value == 0 and buf.numpy("<u4")[0] == 0  # still held
    go.signal(3)
    done.wait(1, timeout=5)
    assert buf.numpy("<u4")[0] == 42


@pytest.mark.parametrize("target", [(1 << 32) + 2, (1 << 31) + 5])  # across the dword; the biased word
def test_gpu_wait_on_64_bit_values(system, target):
    q = system.devices[0].compute_queue()
    sem, done = system.semaphore(), system.semaphore()
    q.wait(sem, target).signal(done, 1).submit()
    sem.signal(target - 3)
    time.sleep(0.02)
    assert done.value == 0
    sem.signal(target)
    done.wait(1, timeout=5)


def test_signal_wakes_a_cpu_wait_through_the_kfd_event(system, monkeypatch):
    q, sem = system.devices[0].compute_queue(), system.semaphore("woken")
    fired = []
    real = System.wait_events

    def watch(self, ids, timeout_ms):
        ok = real(self, ids, timeout_ms)
        fired.append((ids[0], ok))
        return ok

    monkeypatch.setattr(System, "wait_events", watch)
    gate = system.semaphore("gate")
    q.wait(gate, 1).signal(sem, 5).submit()
    threading.Timer(0.05, gate.signal, args=(1,)).start()
    sem.wait(5, timeout=5)
    # the signal's interrupt set the event: a wait ended by it, or (CI, a loaded machine: the time slice ended
    # first and the value was read) it is still set
    assert (sem.event_id, True) in fired or real(system, [sem.event_id], 0)
    ev = system.event()
    mailbox = dict(addr=system.event_mailbox(ev.id), data_sel=DataSel.DATA32, data=ev.id, int_ctxid=ev.id)
    for quiet in (IntSel.NONE, IntSel.DATA_AFTER_WRITE_CONFIRM):  # no interrupt, whatever int_ctxid holds
        q.packet("RELEASE_MEM", int_sel=quiet, **mailbox).sync()
    assert not system.wait_events([ev.id], 0)
    q.packet("RELEASE_MEM", int_sel=IntSel.INTERRUPT, **mailbox).submit()
    ev.wait(timeout=5)  # the mailbox and the interrupt: no memory to poll


def test_sdma_and_compute_order_each_other_both_ways(system):
    dev = system.devices[0]
    sdma, comp = dev.sdma_queue(name="sdma"), dev.compute_queue(name="compute")
    src, mid, out = dev.alloc(PAGE, "gtt"), dev.alloc(PAGE, "vram"), dev.alloc(PAGE, "gtt")
    to_compute, to_sdma = system.semaphore("to compute"), system.semaphore("to sdma")
    for i in range(1, 11):
        src.write(u32(i * 11, i * 13))
        comp.wait(to_compute, i).copy_data(mid, mid, size=8, dst_offset=8).write_data(mid, u32(i), offset=16)
        comp.signal(to_sdma, i).submit()
        sdma.copy(mid, src, 8).signal(to_compute, i).wait(to_sdma, i).copy(out, mid, 24).sync()
        assert list(out.numpy("<u4")[:5]) == [i * 11, i * 13, i * 11, i * 13, i]


def test_compute_queues_on_two_gpus_order_each_other():
    with System.open(emulate="gfx942,gfx1100") as system:
        d0, d1 = system.devices
        a, b = d0.compute_queue(name="a"), d1.compute_queue(name="b")
        ab, ba = system.semaphore("ab"), system.semaphore("ba")
        for i in range(1, 21):
            a.signal(ab, i).wait(ba, i)
            b.wait(ab, i).signal(ba, i)
        b.submit()
        a.submit()
        ba.wait(20, timeout=10)
        assert ab.value == 20


def test_a_stuck_wait_is_named_in_the_timeout(system):
    q = system.devices[0].compute_queue(name="stuck")
    never, done = system.semaphore("never"), system.semaphore("done")
    q.wait(never, 1).signal(done, 1).submit()
    with pytest.raises(WaitTimeout) as err:
        done.wait(1, timeout=0.2)
    assert "stuck" in str(err.value) and "at: WAIT_REG_MEM" in str(err.value)
    never.signal(1)
    done.wait(1, timeout=5)


def test_release_mem_atomic_add_where_the_dialect_has_it(system):
    q, buf = system.devices[0].compute_queue(), system.devices[0].alloc(PAGE, "gtt")
    buf.write(u32(40))
    add = q.dialect.packet("RELEASE_MEM", data_sel=DataSel.ATOMIC_ADD32, addr=buf.va, data=2)
    q.emit(add.encode())
    if "addr" in add.addresses():  # gfx10.3+
        q.sync()
        assert buf.numpy("<u4")[0] == 42
    else:
        with pytest.raises(GpuFault, match="at: RELEASE_MEM"):
            q.sync(timeout=5)
        assert "data_sel=7 is not emulated" in engine_of(q).error


def test_atomic_mem_changes_a_64_bit_word_and_wait_reg_mem64_compares_all_of_one(system):
    q, buf = system.devices[0].compute_queue(), system.devices[0].alloc(PAGE, "gtt")
    buf.write(struct.pack("<Q", 5))
    target = (1 << 40) + 7  # the low dwords of the value and of the wait's reference agree: a 32-bit poll passes
    q.packet("ATOMIC_MEM", atomic=AtomicOp.SUB64, addr=buf.va, src_data=6)  # 5 - 6: a borrow across the dword
    q.packet("WAIT_REG_MEM64", function=WaitFunc.EQ, mem_space=1, addr=buf.va + 8, reference=target,
             mask=(1 << 64) - 1)
    q.packet("ATOMIC_MEM", atomic=AtomicOp.ADD64, addr=buf.va, src_data=1 << 33)
    q.submit()
    buf.write(struct.pack("<Q", 7), 8)
    time.sleep(0.05)
    assert struct.unpack("<Q", buf.read(0, 8))[0] == (1 << 64) - 1  # held at the wait: 7 is not 2**40 + 7
    buf.write(struct.pack("<Q", target), 8)
    q.sync(timeout=5)
    assert struct.unpack("<Q", buf.read(0, 8))[0] == (1 << 33) - 1


def test_atomic_mem_refuses_what_it_cannot_do(system):
    dev = system.devices[0]
    for fields, error in [(dict(atomic=0x08), "ATOMIC_MEM atomic=0x8 is not one of the 64-bit TC_OPs the emulated "
                                              "engine executes"),
                          (dict(atomic=AtomicOp.CMPSWAP64, command=1), "ATOMIC_MEM command=1 (only 0, a single "
                                                                        "pass) is emulated")]:
        q, buf = dev.compute_queue(), dev.alloc(PAGE, "gtt")
        q.packet("ATOMIC_MEM", addr=buf.va, **fields)
        with pytest.raises(GpuFault, match="at: ATOMIC_MEM"):
            q.sync(timeout=5)
        assert engine_of(q).error.startswith(error)


# -- faults and refusals --------------------------------------------------------------------------------
def test_a_write_to_an_unmapped_address_is_a_vm_fault(system):
    q = system.devices[0].compute_queue()
    unmapped = 0x7F00_DEAD_0000
    q.write_data(unmapped, u32(1))
    with pytest.raises(GpuFault) as err:
        q.sync(timeout=5)
    msg = str(err.value)
    assert f"VM fault at address {unmapped:#x}" in msg and "WRITE_DATA" in msg
    assert "VM fault" in engine_of(q).error and "PM4 compute queue" in engine_of(q).error


@pytest.mark.parametrize("packet", ["DISPATCH_DIRECT", "DISPATCH_INDIRECT"])
def test_a_dispatch_with_no_program_is_a_named_error(system, packet, caplog):
    q = system.devices[0].compute_queue(name="dispatch")
    q.write_data(q.ptrs, u32(0), offset=64)  # something before it: the error names a non-zero ring offset
    q.write_data(q.ptrs, struct.pack("<3I", 4, 1, 1), offset=128)  # DISPATCH_INDIRECT's workgroup counts
    fields = dict(dim_x=4, dim_y=1, dim_z=1) if packet == "DISPATCH_DIRECT" else dict(addr=q.ptrs.va + 128)
    q.packet(packet, dispatch_initiator=1, **fields)
    with caplog.at_level(logging.ERROR, "kfdtrace.emulator"), pytest.raises(GpuFault, match=f"at: {packet}"):
        q.sync(timeout=5)
    error = engine_of(q).error
    assert error.startswith("DISPATCH_DIRECT before COMPUTE_PGM_LO/HI were set: no program to run")
    assert f"PM4 compute queue {q.queue_id} ring offset {q.rptr % q.ring_size:#x}" in error
    assert q.rptr > 0 and error in caplog.text


def test_a_register_poll_is_a_named_unsupported_error(system):
    q = system.devices[0].compute_queue()
    q.packet("WAIT_REG_MEM", mem_space=0, addr=0x2E40, reference=1, mask=1, function=WaitFunc.EQ)
    with pytest.raises(GpuFault, match="at: WAIT_REG_MEM"):
        q.sync(timeout=5)
    assert "polling a register, not memory, is not emulated" in engine_of(q).error


# -- the command processor's registers, selects and predicates ------------------------------------------
def test_registers_by_name_and_copy_data_selects(system):
    dev = system.devices[0]
    q, buf = dev.compute_queue(), dev.alloc(PAGE, "gtt")
    regs = q.dialect.registers
    user0, user1 = regs["COMPUTE_USER_DATA_0"].offset, regs["COMPUTE_USER_DATA_2"].offset
    q.set_sh_reg(COMPUTE_PGM_LO=0x1234, COMPUTE_PGM_HI=0x56)
    q.packet("SET_UCONFIG_REG", u32(0xE0000000), reg_offset=regs.uconfig_index("GRBM_GFX_INDEX"))
    q.packet("WRITE_DATA", u32(0xAB, 0xCD), dst_sel=WriteDst.REGISTER, dst=user0)  # USER_DATA_0, _1
    q.packet("COPY_DATA", src_sel=CopySel.REGISTER, dst_sel=CopySel.TC_L2, count_sel=1, src=user0, dst=buf.va)
    q.packet("COPY_DATA", src_sel=CopySel.IMMEDIATE, dst_sel=CopySel.REGISTER, src=0x77, dst=user1)
    q.packet("COPY_DATA", src_sel=CopySel.IMMEDIATE, dst_sel=CopySel.TC_L2, count_sel=1, src=0x1_0000_0002,
             dst=buf.va + 8)
    q.packet("COPY_DATA", src_sel=CopySel.TC_L2, dst_sel=CopySel.REGISTER, src=buf.va + 8, dst=user1 + 1)
    q.packet("RELEASE_MEM", data_sel=DataSel.DATA32, addr=buf.va + 16, data=0xFFFF_0000_1111)
    q.packet("RELEASE_MEM", data_sel=DataSel.GPU_CLOCK, addr=buf.va + 24)
    q.sync()
    cp = engine_of(q)
    assert cp.register("COMPUTE_PGM_LO") == 0x1234 and cp.register("COMPUTE_PGM_HI") == 0x56
    assert cp.register("GRBM_GFX_INDEX") == 0xE0000000
    assert [cp.register(f"COMPUTE_USER_DATA_{i}") for i in range(4)] == [0xAB, 0xCD, 0x77, 2]
    assert q.dialect.register_addresses(q.dialect.decode(q.dialect.set_sh_reg(COMPUTE_PGM_LO=0x1234,
                                                                              COMPUTE_PGM_HI=0x56))) == {
        "COMPUTE_PGM": 0x56_0000_1234 << 8}
    u8 = buf.numpy("<u8")
    assert u8[0] == 0xCD_0000_00AB and u8[1] == 0x1_0000_0002 and buf.numpy("<u4")[4] == 0x1111 and u8[3] > 0
    with pytest.raises(KeyError, match="no register"):
        cp.register("COMPUTE_NO_SUCH")


def test_pred_exec_selects_xccs_that_exist(system):
    """Each XCC keeps its own registers; packets predicated off every XCC of the node are skipped."""
    dev = system.devices[0]
    q, buf = dev.compute_queue(), dev.alloc(PAGE, "gtt")
    cp, n = engine_of(q), engine_of(q).num_xcc
    assert n == (8 if dev.target.name == "gfx942" else 1)  # the emulated MI300X has 8 XCCs; the others one
    last = 1 << (n - 1)
    set_lo = q.dialect.set_sh_reg(COMPUTE_RESTART_X=5)
    write = q.dialect.build("WRITE_DATA", u32(9), dst_sel=WriteDst.MEMORY, dst=buf.va)
    q.set_sh_reg(COMPUTE_RESTART_X=1)
    q.packet("PRED_EXEC", exec_count=len(set_lo) // 4, xcc_mask=last).emit(set_lo)  # the last XCC only
    absent = 0xFF & ~((1 << n) - 1)  # the XCCs the node does not have (none of 8 bits on the 8-XCC MI300X)
    q.packet("PRED_EXEC", exec_count=len(write) // 4, xcc_mask=absent).emit(write)
    q.packet("PRED_EXEC", exec_count=0, xcc_mask=0).write_data(buf, u32(3), offset=4)  # governs nothing
    q.sync()
    assert [cp.register("COMPUTE_RESTART_X", x) for x in range(n)] == [1] * (n - 1) + [5]
    assert list(buf.numpy("<u4")[:2]) == [0, 3]


# -- threads ------------------------------------------------------------------------------------------
def test_threads_submit_to_one_compute_queue(system):
    dev = system.devices[0]
    q, buf = dev.compute_queue(name="shared"), dev.alloc(PAGE, "gtt")
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(40):
                q.write_data(buf, u32(t, i), offset=8 * t).copy_data(buf, buf, dst_offset=256 + 4 * t,
                                                                      src_offset=8 * t + 4)
                if i % 10 == 9:
                    q.sync()
                else:
                    q.submit()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    q.sync()
    assert not errors
    words = buf.numpy("<u4")
    assert [tuple(words[2 * t:2 * t + 2]) for t in range(4)] == [(t, 39) for t in range(4)]
    assert list(words[64:68]) == [39] * 4  # each copy ran after its own thread's write


def test_a_queue_at_a_wait_is_blocked_only_while_the_memory_it_polls_does_not_pass():
    """RingQueue.blocked, which a replay asks before it takes the queues for standing: a wait whose memory passes
    already (the engine yet to poll it again) holds the queue for a moment only; memory it cannot read counts as
    blocking."""
    with System.open(emulate="gfx942") as system:
        q, sem = system.devices[0].compute_queue(), system.semaphore()
        buffer = sem.buffer

        def load(va: int, size: int) -> int | None:
            at = va - buffer.va
            return int.from_bytes(buffer.read(at, size), "little") if 0 <= at <= buffer.size - size else None
        q.wait(sem, 1).submit()
        deadline = time.monotonic() + 30
        while not q.waiting and time.monotonic() < deadline:
            time.sleep(0.001)
        assert q.waiting and q.blocked(load)
        assert not q.blocked(lambda va, size: 1) and q.blocked(lambda va, size: None)
        sem.signal(1)
        q.sync(timeout=30)
        assert not q.blocked(load)
        q.destroy()
