"""Driver integration tests, written once and run on every backend (see conftest.BACKENDS)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from kfdtrace.driver import BoundsError, DeviceError, GpuFault, OutOfMemory, Semaphore, System, WaitTimeout
from kfdtrace.driver.selftest import copy_sizes, run_selftest

from .conftest import BACKENDS, open_backend

SMALL_COPY = 1 << 20  # tests split copies at this size so that > max-copy runs stay cheap on 1 GiB families


# The selftest moves more than one COPY_LINEAR's maximum: 1 GiB + 13 bytes on most families, seconds of page
# faults in the emulator. The suite runs it whole where the maximum is 4 MiB; other tests cover every family.
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b.id in ("real", "gfx942")] + ["gfx942,gfx942"])
def test_selftest_passes(backend):
    system = open_backend(backend)
    lines: list[str] = []
    try:
        assert run_selftest(system, lines.append), "\n".join(lines)
    finally:
        system.close()
    assert sum(line.startswith("ok") for line in lines) >= 7 * len(lines[:-1]) // 8


@pytest.mark.parametrize("index", [0, -1])
def test_copy_roundtrip_every_size(system, index):
    dev = system.devices[index]
    q = dev.sdma_queue(max_copy=min(SMALL_COPY, dev.target.sdma_max_copy))
    for size in [*copy_sizes(dev)[:-1], q.max_copy * 2 + 13]:
        data = os.urandom(size)
        src, mid, out = dev.alloc(size, "userptr"), dev.alloc(size, "vram"), dev.alloc(size + 64, "gtt")
        src.write(data)
        q.copy(mid, src, size).copy(out, mid, size).sync()
        assert out.read(0, size) == data
        assert out.read(size) == bytes(64)  # bytes past the copy stay untouched


def test_copy_splits_at_family_max(system):
    dev = system.devices[0]
    q = dev.sdma_queue()
    size = dev.target.sdma_max_copy * 2 + 8
    a, b = dev.alloc(size, "vram"), dev.alloc(size, "vram")
    # discarded unsubmitted: executing 2 GiB on the 1 GiB families is test_copy_roundtrip_every_size's job
    packets = [q.dialect.decode(p) for p in q.copy(b, a, size).discard()]
    assert [p.name for p in packets] == ["COPY_LINEAR"] * 3
    assert [p.fields["count"] + 1 for p in packets] == [dev.target.sdma_max_copy] * 2 + [8]
    assert q.discard() == []


def test_fill_and_numpy_view(system):
    dev = system.devices[0]
    q = dev.sdma_queue()
    buf = dev.alloc(1 << 16, "vram")
    q.fill(buf, 0x11223344, 4096, offset=4096).sync()
    words = buf.numpy("<u4")
    assert (words[1024:2048] == 0x11223344).all()
    assert not words[:1024].any() and not words[2048:].any()


def test_ring_wraps_many_times(system):
    dev = system.devices[0]
    q = dev.sdma_queue(ring_size=1024)
    buf = dev.alloc(4096, "gtt")
    for i in range(200):  # 200 fences * 16 bytes = 3 ring lengths, submitted one by one
        q.fence(buf, i, offset=4 * (i % 8)).submit()
    q.sync()
    assert q.wptr > 3 * 1024
    assert list(buf.numpy("<u4")[:8]) == list(range(192, 200))  # the last fence into each slot


def test_ring_wrap_pads_with_nops(system):
    """28-byte copies and 16-byte fences do not divide a 1 KiB ring: the tail is padded, never split."""
    dev = system.devices[0]
    q = dev.sdma_queue(ring_size=1024)
    src, dst = dev.alloc(4096, "gtt"), dev.alloc(4096, "gtt")
    src.write(bytes(range(256)) * 16)
    for i in range(100):
        q.copy(dst, src, 8, dst_offset=8 * i, src_offset=8 * i).fence(dst, i, offset=4000).submit()
    q.sync()
    assert dst.read(0, 800) == src.read(0, 800)
    assert dst.numpy("<u4")[1000] == 99
    written = 100 * (len(q.dialect.build("COPY_LINEAR")) + len(q.dialect.build("FENCE")))
    assert q.wptr > written, "the ring's end was never padded"  # the difference is NOP padding


def test_ring_back_pressure_waits_for_the_engine(system):
    dev = system.devices[0]
    q = dev.sdma_queue(ring_size=1024)
    gate, buf = system.semaphore("gate"), dev.alloc(4096, "gtt")
    q.wait(gate, 1)
    for i in range(300):  # far more than the ring holds while the engine is held by the gate
        q.fence(buf, i)
    timer = threading.Timer(0.05, gate.signal, args=(1,))
    timer.start()
    q.submit()  # blocks on the full ring until the gate opens
    q.sync()
    timer.join()
    assert buf.numpy("<u4")[0] == 299


def test_cpu_gpu_ping_pong(system):
    dev = system.devices[0]
    q = dev.sdma_queue()
    ping, pong = system.semaphore("ping"), system.semaphore("pong")
    for i in range(1, 21):
        q.wait(ping, i).signal(pong, i)
    q.submit()
    for i in range(1, 21):
        ping.signal(i)
        pong.wait(i, timeout=5)
    assert pong.value == 20


def test_cross_queue_ping_pong(system):
    devs = system.devices
    a, b = devs[0].sdma_queue(name="a"), devs[-1].sdma_queue(name="b")
    ab, ba = system.semaphore("ab"), system.semaphore("ba")
    rounds = 25
    for i in range(1, rounds + 1):
        a.signal(ab, i).wait(ba, i)
        b.wait(ab, i).signal(ba, i)
    b.submit()
    a.submit()
    ba.wait(rounds, timeout=10)
    assert ab.value == rounds


def test_semaphore_64bit_gpu_wait_across_dword(system):
    dev = system.devices[0]
    q = dev.sdma_queue()
    sem, done = system.semaphore(), system.semaphore()
    target = (1 << 32) + 2
    q.wait(sem, target).signal(done, 1).submit()
    sem.signal(0xFFFFFFFF)
    with pytest.raises(WaitTimeout):
        done.wait(1, timeout=0.05)
    sem.signal(target)
    done.wait(1, timeout=5)


@pytest.mark.parametrize("target", [2**64 - 1, 2**64 - (1 << 31)])
def test_a_gpu_wait_for_a_value_near_the_top_of_the_timeline_waits(system, target):
    """Campaign 76: a target within 2**31 of 2**64 was polled on the biased word, whose copy of it wrapped to a
    small number the word already held: the wait passed at once."""
    dev = system.devices[0]
    q = dev.sdma_queue()
    sem, done = system.semaphore(), system.semaphore()
    q.wait(sem, target).signal(done, 1).submit()
    with pytest.raises(WaitTimeout):
        done.wait(1, timeout=0.05)
    sem.signal(target)
    done.wait(1, timeout=5)


def test_wait_timeout_names_queue_pointers(system):
    dev = system.devices[0]
    q = dev.sdma_queue(name="stuck")
    never, done = system.semaphore("never"), system.semaphore("done")
    q.wait(never, 1).signal(done, 1).submit()
    with pytest.raises(WaitTimeout) as err:
        done.wait(1, timeout=0.2)
    msg = str(err.value)
    assert "rptr=" in msg and "wptr=" in msg and "POLL_REGMEM" in msg and "stuck" in msg
    never.signal(1)
    done.wait(1, timeout=5)


def test_vm_fault_names_address_and_packet(system):
    dev = system.devices[0]
    q = dev.sdma_queue()
    buf = dev.alloc(4096, "gtt")
    unmapped = 0x7F00_DEAD_0000
    q.copy(buf, unmapped, 256)
    with pytest.raises(GpuFault) as err:
        q.sync(timeout=5)
    msg = str(err.value)
    assert f"{unmapped:#x}" in msg and "COPY_LINEAR" in msg


def test_alloc_beyond_vram_is_refused(system):
    dev = system.devices[0]
    with pytest.raises(OutOfMemory) as err:
        dev.alloc(dev.vram_size + (1 << 30), "vram")
    assert "ALLOC_MEMORY_OF_GPU" in str(err.value)
    assert dev.free_vram() <= dev.vram_size


def test_copy_out_of_bounds_is_refused(system):
    dev = system.devices[0]
    q = dev.sdma_queue()
    a, b = dev.alloc(4096, "gtt"), dev.alloc(8192, "gtt")
    with pytest.raises(BoundsError, match=r"outside its 0x1000 bytes"):
        q.copy(a, b, 8192)
    with pytest.raises(BoundsError):
        q.copy(b, a, 16, src_offset=4090)
    assert q.discard() == []


def test_unmapped_peer_buffer_is_refused(emulated):
    d0, d1 = emulated("gfx942,gfx1100").devices
    q = d0.sdma_queue()
    theirs = d1.alloc(4096, "vram")
    with pytest.raises(DeviceError, match="not mapped on GPU"):
        q.fill(theirs, 0, 4096)
    theirs.map_to(d0)
    q.fill(theirs, 7, 4096).sync()
    assert theirs.numpy("<u4")[0] == 7


def test_buffers_carry_names_and_free_releases_vram(system):
    dev = system.devices[0]
    before = dev.free_vram()
    buf = dev.alloc(1 << 20, "vram", name="weights")
    assert buf.name == "weights" and "weights" in repr(buf)
    assert dev.free_vram() == before - (1 << 20)
    buf.free()
    assert dev.free_vram() == before


def test_xgmi_queue_where_the_board_has_xgmi():
    from kfdtrace.driver.system import System

    with System.open(emulate="gfx942") as s:
        dev = s.devices[0]
        assert dev.node.num_sdma_xgmi_engines > 0
        q = dev.sdma_queue(engine="xgmi")
        buf = dev.alloc(4096, "gtt")
        q.fence(buf, 5).sync()
        assert buf.numpy("<u4")[0] == 5
    with System.open(emulate="gfx1100") as s, pytest.raises(DeviceError, match="xGMI|EINVAL|Invalid"):
        s.devices[0].sdma_queue(engine="xgmi")


@pytest.mark.parametrize("op, start, src, cmp, expected", [
    ("ADD64", 0xFFFF_FFFF, 1, 0, 1 << 32),
    ("CMPSWAP64", 5, 9, 5, 9),
    ("CMPSWAP64_NORET", 5, 9, 4, 5),
    ("UMAX64", 3, 1 << 40, 0, 1 << 40),
    ("SMIN64", 3, (1 << 64) - 1, 0, (1 << 64) - 1),  # -1 is less than 3 when signed
    ("INC64", 7, 7, 0, 0),  # wraps to 0 at src
])
def test_sdma_atomics(system, op, start, src, cmp, expected):
    from kfdtrace.driver.sdma import AtomicOp

    dev = system.devices[0]
    q = dev.sdma_queue()
    buf = dev.alloc(4096, "gtt")
    buf.numpy("<u8")[0] = start
    q.packet("ATOMIC", addr=buf.va, src_data=src, cmp_data=cmp, atomic_op=AtomicOp[op]).sync()
    assert int(buf.numpy("<u8")[0]) == expected


def test_gcr_and_indirect_buffer(system):
    dev = system.devices[0]
    q = dev.sdma_queue()
    out, ib = dev.alloc(4096, "gtt"), dev.alloc(4096, "gtt")
    has_gcr = "GCR_REQ" in q.dialect
    assert has_gcr == (dev.target.family.sdma_dialect != "sdma4.4")  # SDMA 5.0 introduced GCR_REQ
    if has_gcr:
        q.packet("GCR_REQ", base_va=0, limit_va=0, gcr_control_lo=0x1F)
    body = q.dialect.build("FENCE", addr=out.va, data=0xFEED) + q.dialect.build("FENCE", addr=out.va + 4, data=7)
    ib.write(body)
    q.packet("INDIRECT", ib_base=ib.va, ib_size=len(body) // 4).sync()
    assert list(out.numpy("<u4")[:2]) == [0xFEED, 7]


@pytest.mark.parametrize("domain", ["gtt", "vram"])
def test_buffer_keeps_the_size_asked_for(system, domain):
    dev = system.devices[0]
    q = dev.sdma_queue()
    for size in (1, 255, 256, 1000, 4095, 4097):
        buf, back = dev.alloc(size, domain), dev.alloc(size, "gtt")
        assert buf.size == size and buf.alloc_size == -(-size // 4096) * 4096
        assert len(buf.read()) == size and len(buf.numpy()) == size
        if size % 4:
            with pytest.raises(ValueError, match=f"is {size} bytes, not a whole number of uint32"):
                buf.numpy("<u4")
        assert buf.addr(size) == buf.va + size  # the end itself is a valid empty span
        for offset, n in ((size, 1), (size - 1, 2), (0, size + 1)):
            with pytest.raises(BoundsError, match=f"outside its {size:#x} bytes"):
                buf.read(offset, n)
        data = os.urandom(size)
        buf.write(data)
        q.copy(back, buf, size).sync()
        assert back.read() == data
        buf.free()
        back.free()


def test_fixed_size_domains_keep_their_size(system):
    dev = system.devices[0]
    assert dev.alloc(1, "doorbell").size == 0x2000
    assert dev.alloc(1, "mmio").size == 4096


def test_sdma_stress_with_a_size_off_the_page():
    env = {**os.environ, "KFDTRACE_EMULATE": "gfx942"}
    script = os.path.join(os.path.dirname(__file__), "..", "examples", "sdma_stress.py")
    res = subprocess.run([sys.executable, script, "--size", "1000", "--rounds", "30"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "30 rounds of 1000 bytes" in res.stdout


def test_semaphore_view_over_existing_memory(system):
    dev = system.devices[0]
    q, buf = dev.sdma_queue(), dev.alloc(4104, "gtt")
    buf.numpy("<u8")[1] = 41
    polled = Semaphore.view(system, buf, 8, name="polled")
    assert polled.value == 41 and polled.event_id is None  # kept its value, made no event
    event = system.event()
    woken = Semaphore.view(system, buf, 4096, event_id=event.id)
    q.signal(polled, 42).signal(woken, 1 << 33).submit()
    polled.wait(42, timeout=5)
    woken.wait(1 << 33, timeout=5)
    assert int(buf.numpy("<u8")[1]) == 42 and buf.read(4096, 8) == (1 << 33).to_bytes(8, "little")
    polled.free()  # a view owns nothing: the bytes stay
    assert polled.value == 42


def test_semaphore_view_is_bounds_checked(emulated):
    system = emulated("gfx942")
    dev = system.devices[0]
    buf = dev.alloc(4096, "gtt")
    with pytest.raises(BoundsError):
        Semaphore.view(system, buf, 4092)  # 4 of its 8 bytes lie past the end
    with pytest.raises(BoundsError):
        Semaphore.view(system, buf, -8)
    with pytest.raises(ValueError, match="alignment"):
        Semaphore.view(system, buf, 4)
    with pytest.raises(DeviceError, match="no CPU mapping"):
        Semaphore.view(system, dev.alloc(4096, "vram", cpu_access=False), 0)


def test_a_freed_semaphore_is_freed_once_and_used_never(system):
    """Freeing twice gave the slot and event back twice, so two later semaphores shared them: a wait on one
    returned on the other's signal."""
    a = system.semaphore("a")
    a.free()
    b = system.semaphore("b")
    a.free()  # nothing: a's slot is b's now
    c = system.semaphore("c")
    assert len({a.addr, b.addr, c.addr}) == 2 and b.addr != c.addr and b.event_id != c.event_id
    c.signal(1)
    assert b.value == 0
    q = system.devices[0].sdma_queue()
    for use in (lambda: a.signal(1), lambda: a.wait(1, timeout=0.1), lambda: a.value, lambda: q.signal(a, 1),
                lambda: q.wait(a, 1)):
        with pytest.raises(DeviceError, match="semaphore 'a' was freed"):
            use()
    q.discard()


def test_a_wrong_device_or_packet_name_is_named(system):
    dev = system.devices[0]
    with pytest.raises(TypeError, match=r"buffers map to Devices \(system.devices\[i\]\), not 'x'"):
        dev.alloc(4096, "gtt").map_to("x")
    with pytest.raises(KeyError, match="has no packet 'BOGUS'"):
        dev.sdma_queue().packet("BOGUS")


def test_emit_appends_encoded_packets(system):
    dev = system.devices[0]
    q, buf = dev.sdma_queue(), dev.alloc(4096, "gtt")
    two = q.dialect.build("FENCE", addr=buf.va, data=7) + q.dialect.build("FENCE", addr=buf.va + 4, data=9)
    q.fence(buf, 5, offset=8).emit(two).sync()
    assert list(buf.numpy("<u4")[:3]) == [7, 9, 5]
    with pytest.raises(ValueError, match="whole dwords"):
        q.emit(b"\0\0\0")


def test_emit_never_cuts_between_a_conditional_and_what_it_may_skip(system):
    """A submission of more than half the ring goes on it in units; the NOPs padding a unit to the ring's end must
    not fall in the dwords a COND_EXE skips, or the packet it governs runs in their place."""
    dev = system.devices[0]
    q, out, flag = dev.sdma_queue(ring_size=4096), dev.alloc(4096, "gtt"), dev.alloc(4096, "gtt")
    for i in range(127):  # the ring's write pointer at 2032
        q.fence(out, i, offset=64)
    q.sync()
    build = q.dialect.build
    fences = b"".join(build("FENCE", addr=out.va + 64, data=i) for i in range(126))
    skipped = build("FENCE", addr=out.va, data=0xBAD)
    cond = build("COND_EXE", addr=flag.va, reference=1, exec_count=len(skipped) // 4)  # flag holds 0: skip
    # 2036 bytes up to the skipped fence: cut there, the next unit would not fit before the ring's end
    q.emit(fences + cond + skipped + build("FENCE", addr=out.va + 4, data=0x600D)).sync()
    assert out.read(0, 8) == bytes(4) + (0x600D).to_bytes(4, "little")
    with pytest.raises(ValueError, match="in one piece .* do not fit a 4096-byte ring"):
        q.emit(build("COND_EXE", addr=flag.va, reference=1, exec_count=1024) + fences * 2 + fences[:64])


def test_event_wait_is_announced_to_recorders(emulated):
    system = emulated("gfx1100")
    seen = []
    system.sys.annotate = lambda kind, **fields: seen.append((kind, fields))
    event = system.event()
    with pytest.raises(WaitTimeout):
        event.wait(timeout=0.01)
    event.set()
    event.wait(timeout=1)
    waits = [f for kind, f in seen if kind == "cpu_event_wait"]
    assert waits == [{"event": event.id, "timeout": 0.01, "ok": False}, {"event": event.id, "timeout": 1, "ok": True}]


def test_a_semaphore_outliving_its_system_says_so_instead_of_crashing():
    system = System.open(emulate="gfx942")
    sem = system.semaphore("late")
    system.close()
    assert "freed" in repr(sem)
    with pytest.raises(DeviceError, match="was freed"):
        sem.value  # noqa: B018
    with pytest.raises(DeviceError, match="was freed"):
        sem.signal(1)


def test_unwrapped_ring_bytes_continue_at_the_ring_start():
    from kfdtrace.driver.ring_queue import unwrapped

    ring = memoryview(b"abcdefgh")
    assert unwrapped(ring, 2, 3) == b"cde"
    assert unwrapped(ring, 8 * 5 + 6, 4) == b"ghab"  # pointers are monotonic: taken modulo the ring
    assert unwrapped(ring, 3, 8) == b"defghabc" and unwrapped(ring, 0, 0) == b""


def test_a_destroyed_queue_or_signal_still_shows_itself():
    """repr (what a traceback shows) of a queue or signal whose memory is gone reads what was kept, never the
    unmapped pages (it once crashed the interpreter)."""
    from kfdtrace.driver.aql_queue import HsaSignal

    with System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        sdma, aql = gpu.sdma_queue(name="s"), gpu.aql_queue(name="a")
        signal = HsaSignal(system, 7, name="sig")
        out = gpu.alloc(4096, "gtt")
        sdma.fill(out, 1, 4096).sync()
        rptr = sdma.rptr
        sdma.destroy(), aql.destroy(), signal.free()
    assert f"rptr={rptr:#x}" in repr(sdma) and "read=0 write=0" in repr(aql) and "value=7" in repr(signal)


def test_a_cpu_mapping_the_process_cannot_have_is_out_of_memory_and_frees_the_buffer(monkeypatch):
    """Campaign 74: with the process at vm.max_map_count, the CPU mapping of a new buffer failed with a bare
    OSError, which a replay took for an internal error."""
    import errno
    import mmap

    with System.open(emulate="gfx942") as system:
        dev = system.devices[0]
        real = dev.sys.mmap

        def mmap_(addr, length, prot, flags, fd, offset):
            if flags & mmap.MAP_SHARED:
                raise OSError(errno.ENOMEM, "Cannot allocate memory")
            return real(addr, length, prot, flags, fd, offset)

        before = len(dev.buffers)
        monkeypatch.setattr(dev.sys, "mmap", mmap_)
        with pytest.raises(OutOfMemory, match=r"cannot map it for the CPU \(Cannot allocate memory\): this process "
                                              r"holds more mappings than the machine allows"):
            dev.alloc(4096, "gtt", name="one too many")
        assert len(dev.buffers) == before


def test_a_buffer_write_while_another_thread_is_importing_numpy(monkeypatch):
    """Campaign 84: a write looked up numpy.ndarray in a module another thread had begun to import (a replay's
    --concurrent instances): AttributeError. A module without its names yet holds no array to write."""
    import types

    monkeypatch.setitem(sys.modules, "numpy", types.ModuleType("numpy"))  # as sys.modules has it mid-import
    with System.open(emulate="gfx942") as system:
        buffer = system.devices[0].alloc(4096, "gtt")
        buffer.write(b"\x01\x02", 8)
        assert buffer.read(8, 2) == b"\x01\x02"


def test_a_freed_buffer_s_addresses_can_be_kept_for_the_next_buffer_there(emulated):
    """Buffer.free(keep_addresses=True) leaves the range reserved: no other allocation takes it until one is made
    there with `reserved=` (a replay's buffer taking a freed one's recorded address, with other instances' threads
    allocating meanwhile); a reservation the new buffer does not fit in is given back."""
    from kfdtrace.driver.errors import AddressInUse

    gpu = emulated("gfx942").devices[0]
    old = gpu.alloc(8192, "gtt", name="old")
    va = old.va
    kept = old.free(keep_addresses=True)
    assert kept is not None and kept[0] <= va and va + 8192 <= kept[0] + kept[1]
    with pytest.raises(AddressInUse):
        gpu.alloc(4096, "gtt", va=va)
    new = gpu.alloc(4096, "gtt", name="new", va=va, reserved=kept)
    new.write(b"\x5a" * 4096)
    assert new.va == va and new.read(0, 4) == b"\x5a" * 4 and gpu.alloc(4096, "gtt").va != va
    again = new.free(keep_addresses=True)
    try:  # it does not fit: given back, then placed there as any buffer asking for an address is
        gpu.alloc(64 << 20, "gtt", name="big", va=va, reserved=again).free()
    except AddressInUse:  # (what lies after it is taken)
        pass
    assert gpu.alloc(4096, "gtt", va=va).va == va  # given back either way
    assert old.free() is None  # freed once
