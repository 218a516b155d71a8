"""The emulated GPU answers like amdkfd: errno for bad arguments, struct growth, faults and honest refusals."""

from __future__ import annotations

import ctypes
import errno
import logging
import threading
import time

import pytest

from kfdtrace.driver import DeviceError, GpuFault
from kfdtrace.driver import kfd_ioctl as K
from kfdtrace.driver.errors import EMULATOR_LOG, NOT_EMULATED
from kfdtrace.driver.memory import PAGE
from kfdtrace.driver.pm4 import CopySel, DataSel
from kfdtrace.driver.sdma import defaults
from tests.emulated import engine_of


def _errno_of(fn) -> int:
    with pytest.raises(DeviceError) as err:
        fn()
    return err.value.errno


def _queue_args(dev, **over):
    ring, ptrs = dev.alloc(4096, "gtt"), dev.alloc(PAGE, "gtt")
    args = dict(ring_base_address=ring.va, ring_size=4096, read_pointer_address=ptrs.va,
                write_pointer_address=ptrs.va + 8, gpu_id=dev.gpu_id, queue_type=K.QueueType.SDMA,
                queue_percentage=100, queue_priority=7)
    args.update(over)
    return args


@pytest.mark.parametrize("change, expected", [
    (dict(ring_size=3000), errno.EINVAL),
    (dict(queue_priority=16), errno.EINVAL),
    (dict(queue_percentage=101), errno.EINVAL),
    (dict(queue_type=9), 524),  # kernel-internal ENOTSUPP, as amdkfd returns it
    (dict(gpu_id=0x1), errno.EINVAL),
    (dict(ring_base_address=1 << 50), errno.EFAULT),
    (dict(queue_type=K.QueueType.SDMA_BY_ENG_ID, sdma_engine_id=99), errno.EINVAL),
])
def test_create_queue_errno(emulated, change, expected):
    dev = emulated("gfx942").devices[0]
    assert _errno_of(lambda: dev.kfd.ioctl("CREATE_QUEUE", **_queue_args(dev, **change))) == expected


def test_create_queue_checks_pointer_and_ring_mappings(emulated):
    dev = emulated("gfx1100").devices[0]
    big = dev.alloc(2 * PAGE, "gtt")
    bad_wptr = _queue_args(dev, write_pointer_address=big.va)  # in a 2-page mapping: not exactly one page
    assert _errno_of(lambda: dev.kfd.ioctl("CREATE_QUEUE", **bad_wptr)) == errno.EINVAL
    bad_ring = _queue_args(dev, ring_base_address=big.va + PAGE)  # not the start of its mapping
    assert _errno_of(lambda: dev.kfd.ioctl("CREATE_QUEUE", **bad_ring)) == errno.EINVAL
    small_ring = _queue_args(dev, ring_size=512)  # clamped up to 1024, not refused
    assert dev.kfd.ioctl("CREATE_QUEUE", **small_ring).doorbell_offset >> 62 == 3


def test_sdma_queue_slots_run_out_with_enomem(emulated):
    dev = emulated("gfx1100").devices[0]
    props = dev.node.properties
    slots = props["num_sdma_engines"] * props["num_sdma_queues_per_engine"]
    for _ in range(slots):
        dev.kfd.ioctl("CREATE_QUEUE", **_queue_args(dev))
    assert _errno_of(lambda: dev.kfd.ioctl("CREATE_QUEUE", **_queue_args(dev))) == errno.ENOMEM


def test_alloc_and_free_errno(emulated):
    dev = emulated("gfx942").devices[0]
    kfd = dev.kfd
    base = dict(va_addr=0x10_0000_0000, size=PAGE, gpu_id=dev.gpu_id, flags=int(K.AllocMemFlags.GTT))
    assert _errno_of(lambda: kfd.ioctl("ALLOC_MEMORY_OF_GPU", **{**base, "size": 100})) == errno.EINVAL
    assert _errno_of(lambda: kfd.ioctl("ALLOC_MEMORY_OF_GPU", **{**base, "flags": 0})) == errno.EINVAL
    assert _errno_of(lambda: kfd.ioctl("ALLOC_MEMORY_OF_GPU", **{**base, "gpu_id": 7})) == errno.EINVAL
    huge = {**base, "size": dev.vram_size + PAGE, "flags": int(K.AllocMemFlags.VRAM)}
    assert _errno_of(lambda: kfd.ioctl("ALLOC_MEMORY_OF_GPU", **huge)) == errno.ENOMEM
    buf = dev.alloc(PAGE, "gtt")
    assert _errno_of(lambda: kfd.ioctl("FREE_MEMORY_OF_GPU", handle=buf.handle)) == errno.EBUSY  # still mapped
    assert _errno_of(lambda: kfd.ioctl("FREE_MEMORY_OF_GPU", handle=0xDEAD)) == errno.EINVAL
    other = dev.alloc(PAGE, "gtt")
    overlapping = kfd.ioctl("ALLOC_MEMORY_OF_GPU", **{**base, "va_addr": other.va})
    ids = (ctypes.c_uint32 * 1)(dev.gpu_id)
    with pytest.raises(DeviceError, match="overlaps"):
        kfd.ioctl("MAP_MEMORY_TO_GPU", handle=overlapping.handle, device_ids_array_ptr=ctypes.addressof(ids),
                  n_devices=1, n_success=0)


def test_vram_without_public_has_no_cpu_mapping(emulated):
    dev = emulated("gfx1201").devices[0]
    private = dev.alloc(PAGE, "vram", cpu_access=False)
    assert private.cpu is None
    with pytest.raises(DeviceError, match="no CPU mapping"):
        private.read()
    q = dev.sdma_queue()
    out = dev.alloc(PAGE, "gtt")
    q.fill(private, 0x5A5A5A5A, PAGE).copy(out, private, PAGE).sync()
    assert out.read(0, 4) == b"ZZZZ"


def test_older_shorter_struct_works_and_is_zero_filled(emulated):
    """A caller built against interface 1.11 (88-byte create_queue_args) gets the kernel's treatment: only
    _IOC_SIZE bytes are read, the rest (sdma_engine_id) is zero."""
    system = emulated("gfx942")
    dev = system.devices[0]
    old_size = 88
    args = K.kfd_ioctl_create_queue_args(**_queue_args(dev, queue_type=K.QueueType.SDMA_BY_ENG_ID))
    assert ctypes.sizeof(args) > old_size
    args.sdma_engine_id = 0xFFFF  # beyond the old struct: must be ignored
    old_request = K.ioc(K.IocDir.READ_WRITE, 0x02, old_size)
    system.sys.ioctl(system.kfd.fd, old_request, args)
    assert args.doorbell_offset >> 62 == 3
    assert args.sdma_engine_id == 0xFFFF  # bytes past _IOC_SIZE are not written back either
    new = K.kfd_ioctl_create_queue_args(**_queue_args(dev, queue_type=K.QueueType.SDMA_BY_ENG_ID))
    new.sdma_engine_id = 0xFFFF
    with pytest.raises(OSError) as err:
        system.sys.ioctl(system.kfd.fd, K.BY_NAME["CREATE_QUEUE"].request, new)
    assert err.value.errno == errno.EINVAL


def test_unmodeled_ioctl_is_refused_by_name(emulated, caplog):
    system = emulated("gfx942")
    with pytest.raises(DeviceError, match="SVM") as err:
        system.kfd.ioctl("SVM", start_addr=0, size=0, op=0, nattr=0)
    assert err.value.errno == errno.EOPNOTSUPP
    assert "AMDKFD_IOC_SVM" in caplog.text
    assert _errno_of(lambda: system.kfd.ioctl("DBG_REGISTER_DEPRECATED", gpu_id=0)) == errno.EPERM


def test_ioctl_on_a_render_node_is_enotty(emulated):
    system = emulated("gfx942")
    with pytest.raises(OSError) as err:
        system.sys.ioctl(system.devices[0].drm_fd, K.BY_NAME["GET_VERSION"].request, K.kfd_ioctl_get_version_args())
    assert err.value.errno == errno.ENOTTY


def test_packet_the_engine_does_not_execute_is_a_named_error(emulated):
    system = emulated("gfx1100")
    dev = system.devices[0]
    q = dev.sdma_queue(name="pre")
    q.packet("PRE_EXE", dev_sel=1, exec_count=0)
    with pytest.raises(GpuFault, match="PRE_EXE") as err:
        q.sync(timeout=5)
    assert "stopped a queue" in str(err.value)


@pytest.mark.parametrize("fields, error", [
    ({"mem_poll": 0, "func": 3}, "POLL_REGMEM polling a register, not memory, is not emulated"),
    ({"mem_poll": 1, "func": 7}, "POLL_REGMEM func=7 is reserved"),
    ({"mem_poll": 1, "func": 3, "retry_count": 5}, "POLL_REGMEM retry_count=0x5 (only 0xfff) is emulated"),
])
def test_a_poll_the_engine_cannot_make_is_a_named_error(emulated, fields, error):
    dev = emulated("gfx942").devices[0]
    q, flag = dev.sdma_queue(), dev.alloc(PAGE, "gtt")
    q.packet("POLL_REGMEM", **{"addr": flag.va, "ref": 1, "mask": 0xFFFFFFFF, "retry_count": 0xFFF, **fields})
    with pytest.raises(GpuFault, match="POLL_REGMEM"):
        q.sync(timeout=5)
    assert engine_of(q).error.startswith(error)


@pytest.mark.parametrize("target", ["gfx90a", "gfx1201"])
def test_cond_exe_runs_or_skips_what_it_governs(emulated, target):
    dev = emulated(target).devices[0]
    q, flag, out = dev.sdma_queue(), dev.alloc(PAGE, "gtt"), dev.alloc(PAGE, "gtt")
    flag.write((7).to_bytes(4, "little"))
    for i, reference in enumerate((7, 8)):  # equal: the fence runs; not equal: it is skipped
        fence = q.dialect.build("FENCE", addr=out.va + 4 * i, data=0xA0 + i, **defaults(q.dialect, "FENCE"))
        q.emit(q.dialect.build("COND_EXE", addr=flag.va, reference=reference, exec_count=len(fence) // 4) + fence)
    q.fence(out, 0xCC, offset=8).sync(timeout=5)
    assert [int.from_bytes(out.read(4 * i, 4), "little") for i in range(3)] == [0xA0, 0, 0xCC]


@pytest.mark.parametrize("target", ["gfx942", "gfx1201"])
def test_what_a_false_cond_exe_skips_at_a_submissions_end_never_runs(emulated, target):
    """Campaign 115: the engine went on past the skipped dwords but moved its read pointer past the COND_EXE
    alone, so the next doorbell ran the FENCE it had skipped."""
    dev = emulated(target).devices[0]
    q, flag, out = dev.sdma_queue(), dev.alloc(PAGE, "gtt"), dev.alloc(PAGE, "gtt")
    fence = q.dialect.build("FENCE", addr=out.va, data=0xBAD, **defaults(q.dialect, "FENCE"))
    q.emit(q.dialect.build("COND_EXE", addr=flag.va, reference=0xFFFF, exec_count=len(fence) // 4) + fence)
    q.sync(timeout=5)
    q.fence(out, 0xCC, offset=8).sync(timeout=5)
    assert [int.from_bytes(out.read(4 * i, 4), "little") for i in range(3)] == [0, 0, 0xCC]
    assert q.rptr == q.wptr


@pytest.mark.parametrize("target, kind, name, fields, error, limit", [
    ("gfx942", "sdma", "SEM", {"signal": 1}, "the emulated SDMA engine does not execute SEM", True),
    ("gfx942", "sdma", "TIMESTAMP_GET", {}, "the emulated SDMA engine does not execute TIMESTAMP_GET", True),
    ("gfx942", "sdma", "POLL_REGMEM", {"mem_poll": 1, "func": 3, "retry_count": 5, "ref": 1, "mask": 1},
     "POLL_REGMEM retry_count=0x5 (only 0xfff) is emulated", True),
    ("gfx942", "sdma", "POLL_REGMEM", {"mem_poll": 1, "func": 7, "retry_count": 0xFFF}, "POLL_REGMEM func=7 is "
     "reserved", False),
    ("gfx942", "sdma", "ATOMIC", {"atomic_op": 0x7F}, "ATOMIC atomic_op=0x7f is not one of the 64-bit TC_OPs", True),
    ("gfx942", "sdma", "COPY_LINEAR", {"count": 3, "src_sw": 1}, "COPY_LINEAR src_sw=1 (byte swapping) is not "
     "emulated", True),
    ("gfx1100", "sdma", "CONST_FILL", {"count": 3, "sw": 2}, "CONST_FILL sw=2 (byte swapping) is not emulated", True),
    # campaign 73: these ran as a plain copy or fill
    ("gfx942", "sdma", "COPY_LINEAR", {"count": 3, "broadcast": 1}, "COPY_LINEAR broadcast=1 (COPY_BROADCAST_LINEAR, "
     "two destinations) is not emulated", True),
    ("gfx1201", "sdma", "CONST_FILL", {"count": 3, "compress": 1}, "CONST_FILL compress=1 is not emulated", True),
    ("gfx1201", "sdma", "COPY_LINEAR", {"count": 3, "cpv": 1, "payload": (0x30C003F).to_bytes(4, "little")},
     "COPY_LINEAR with DCC word 0x30c003f (compression) is not emulated", True),
    ("gfx1100", "sdma", "WRITE_LINEAR", {"sw": 1}, "WRITE_LINEAR sw=1 (byte swapping) is not emulated", True),
    ("gfx1100", "compute", "WAIT_REG_MEM", {"operation": 1, "function": 3, "mem_space": 1},
     "WAIT_REG_MEM operation=1 (only 0, wait) is emulated", True),
    ("gfx942", "compute", "ATOMIC_MEM", {"command": 1}, "ATOMIC_MEM command=1 (only 0, a single pass) is emulated",
     True),
])
def test_what_the_emulator_does_not_do_is_its_limit_not_a_fault(emulated, caplog, target, kind, name, fields, error,
                                                               limit):
    """A packet the hardware runs but the emulated engine does not stops the queue logged as NOT_EMULATED (a replay
    then says "cannot replay here"); a packet no hardware runs stops it as the program's fault."""
    dev = emulated(target).devices[0]
    q, buf = getattr(dev, f"{kind}_queue")(), dev.alloc(PAGE, "gtt")
    addresses = {f: buf.va for f in q.dialect[name].address_fields}
    fields = dict(fields)
    payload = fields.pop("payload", bytes(4) if name == "WRITE_LINEAR" else b"")
    q.packet(name, payload=payload, **{**addresses, **fields})
    with caplog.at_level(logging.ERROR, EMULATOR_LOG), pytest.raises(GpuFault, match="stopped a queue"):
        q.sync(timeout=5)
    assert engine_of(q).error.startswith(error), engine_of(q).error
    assert [getattr(r, NOT_EMULATED, False) for r in caplog.records if error in r.getMessage()] == [limit]


def test_a_doorbell_behind_the_read_pointer_stops_the_queue(emulated):
    """The engine would run the ring's stale bytes around to it (it used to ignore it, silently)."""
    dev = emulated("gfx942").devices[0]
    q, out = dev.sdma_queue(name="back"), dev.alloc(PAGE, "gtt")
    q.fence(out, 1).sync(timeout=5)
    dev.sys.doorbell_store(q.doorbell, 0)
    with pytest.raises(GpuFault, match="stopped a queue"):
        q.fence(out, 2).sync(timeout=5)
    assert engine_of(q).error.startswith("the doorbell moved the write pointer to 0x0, behind the read pointer")
    assert out.read(0, 4) == (1).to_bytes(4, "little")


@pytest.mark.parametrize("kind, name, offset, fields, n", [
    ("sdma", "FENCE", 1, {"data": 7}, 4),
    ("sdma", "ATOMIC", 4, {"atomic_op": 47, "src_data": 1}, 8),  # ADD64 on a dword boundary only
    ("sdma", "POLL_REGMEM", 2, {"mem_poll": 1, "func": 3, "ref": 0, "mask": 1, "retry_count": 0xFFF}, 4),
    ("sdma", "WRITE_LINEAR", 2, {}, 4),
    ("sdma", "CONST_FILL", 2, {"data": 7, "count": 7, "fillsize": 2}, 4),  # campaign 100: it filled 8 bytes from +2
    ("compute", "WRITE_DATA", 2, {"dst_sel": 5}, 4),
    # campaign 107: the address fields drop the low bits (soc15d.h COPY_DATA, kfd_pm4_headers_ai.h RELEASE_MEM)
    ("compute", "COPY_DATA", 1, {"src_sel": CopySel.TC_L2, "dst_sel": CopySel.TC_L2}, 4),
    ("compute", "COPY_DATA", 4, {"src_sel": CopySel.TC_L2, "dst_sel": CopySel.TC_L2, "count_sel": 1}, 8),
    ("compute", "RELEASE_MEM", 4, {"data_sel": DataSel.DATA64, "data": 5}, 8),
    ("compute", "RELEASE_MEM", 4, {"data_sel": DataSel.GPU_CLOCK}, 8),
])
def test_a_memory_packet_at_an_unaligned_address_stops_the_queue(emulated, kind, name, offset, fields, n):
    """The engines read and write whole dwords (qwords for 64-bit atomics): bytes written at an address the kernel
    never emits are no result of a GPU's."""
    dev = emulated("gfx942").devices[0]
    q, buf = getattr(dev, f"{kind}_queue")(), dev.alloc(PAGE, "gtt")
    address = next(iter(q.dialect[name].address_fields))
    payload = bytes(4) if name in ("WRITE_LINEAR", "WRITE_DATA") else b""
    q.packet(name, payload=payload, **{address: buf.va + offset, **fields})
    with pytest.raises(GpuFault, match="stopped a queue"):
        q.sync(timeout=5)
    assert engine_of(q).error.startswith(f"address {buf.va + offset:#x} is not {n}-byte aligned")
    assert buf.read(0, 16) == bytes(16)


def test_a_conditional_skipping_past_the_write_pointer_stops_the_queue(emulated):
    """Campaign 107: a false COND_EXE skipping more dwords than were submitted after it put the read pointer past the
    write pointer, and the next doorbell, moving forward, was said to go behind the read pointer."""
    dev = emulated("gfx942").devices[0]
    q, flag, out = dev.sdma_queue(), dev.alloc(PAGE, "gtt"), dev.alloc(PAGE, "gtt")
    q.packet("COND_EXE", addr=flag.va, reference=1, exec_count=64).fence(out, 1)
    with pytest.raises(GpuFault, match="stopped a queue"):
        q.sync(timeout=5)
    assert engine_of(q).error.startswith("it skips 0x100 bytes after it, past the write pointer ("), engine_of(q).error
    assert q.rptr <= q.wptr and out.read(0, 4) == bytes(4)


def test_a_dword_fill_of_bytes_not_whole_dwords_stops_the_queue_and_the_driver_refuses_one(emulated):
    """Campaign 100: CONST_FILL of dwords (count in bytes) filled 7 bytes exactly; SdmaQueue.fill took an unaligned
    offset."""
    dev = emulated("gfx942").devices[0]
    q, buf = dev.sdma_queue(), dev.alloc(PAGE, "gtt")
    q.packet("CONST_FILL", dst=buf.va, data=0xAABBCCDD, count=6, fillsize=2)
    with pytest.raises(GpuFault, match="stopped a queue"):
        q.sync(timeout=5)
    assert engine_of(q).error.startswith("CONST_FILL of dwords: 7 bytes is not a whole number of dwords")
    assert buf.read(0, 16) == bytes(16)
    with pytest.raises(ValueError, match=r"CONST_FILL fills whole dwords: address 0x[0-9a-f]+2 is not 4-byte aligned"):
        dev.sdma_queue().fill(buf, 1, 8, offset=2)


@pytest.mark.parametrize("prot, expected", [(None, errno.EFAULT), ("r", errno.EFAULT), ("rw", 0)])
def test_a_userptr_of_host_memory_not_mapped_writable_is_efault(emulated, prot, expected):
    """amdgpu_ttm_tt_get_user_pages takes every page writable; the emulator took any page-aligned address, and
    the GPU's first access to it killed the process."""
    import mmap

    from kfdtrace.driver.syscalls import libc_mmap, libc_munmap

    system = emulated("gfx942")
    dev = system.devices[0]
    host = libc_mmap(0, PAGE, mmap.PROT_READ | (mmap.PROT_WRITE if prot == "rw" else 0),
                     mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    if prot is None:
        libc_munmap(host, PAGE)
    try:
        alloc = lambda: system.kfd.ioctl("ALLOC_MEMORY_OF_GPU", va_addr=0x1_0000_0000, size=PAGE,  # noqa: E731
                                         mmap_offset=host, gpu_id=dev.gpu_id,
                                         flags=K.AllocMemFlags.USERPTR | K.AllocMemFlags.WRITABLE)
        if expected:
            assert _errno_of(alloc) == expected
        else:
            system.kfd.ioctl("FREE_MEMORY_OF_GPU", handle=alloc().handle)
    finally:
        if prot is not None:
            libc_munmap(host, PAGE)


def test_unknown_opcode_is_a_named_error(emulated):
    system = emulated("gfx90a")
    q = system.devices[0].sdma_queue(name="garbage")
    q.emit(bytes([0x7F, 0, 0, 0]))
    with pytest.raises(GpuFault) as err:
        q.sync(timeout=5)
    assert "garbage" in str(err.value) and "rptr=0x0" in str(err.value)


def test_blocked_queue_does_not_spin_a_core(emulated):
    system = emulated("gfx942")
    dev = system.devices[0]
    q = dev.sdma_queue()
    gate, done = system.semaphore(), system.semaphore()
    q.wait(gate, 1).signal(done, 1).submit()
    cpu0, wall0 = time.process_time(), time.monotonic()
    threading.Event().wait(0.5)
    cpu = time.process_time() - cpu0
    wall = time.monotonic() - wall0
    assert cpu < 0.5 * wall, f"{cpu:.3f} s of CPU in {wall:.3f} s while the queue waited"
    gate.signal(1)
    done.wait(1, timeout=5)


def _engine_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("sdma-q")}


def test_a_quick_submission_completes_in_the_ringing_thread(emulated):
    system = emulated("gfx1100")
    dev = system.devices[0]
    q = dev.sdma_queue()
    src, dst, sem = dev.alloc(PAGE, "gtt"), dev.alloc(PAGE, "gtt"), system.semaphore()
    src.write(bytes(range(256)) * 16)
    engine = next(e for e in system.sys.machine.queues.values() if e.queue_id == q.queue_id).engine
    ran = []
    original = engine._execute_raw
    engine._execute_raw = lambda *packet: (ran.append(threading.current_thread()), original(*packet))[1]
    q.copy(dst, src, 64).signal(sem, 1).submit()
    assert sem.value == 1 and dst.read(0, 64) == src.read(0, 64) and q.idle  # done when submit returned
    assert set(ran) == {threading.current_thread()}


@pytest.mark.parametrize("work", ["poll", "big copy", "indirect"])
def test_work_that_may_wait_or_run_long_goes_to_the_engine_thread(emulated, work):
    system = emulated("gfx942")
    dev = system.devices[0]
    q = dev.sdma_queue()
    gate, done = system.semaphore(), system.semaphore()
    src, dst = dev.alloc(1 << 20, "gtt"), dev.alloc(1 << 20, "gtt")
    src.write(b"\x5a" * (1 << 20))
    engine = next(e for e in system.sys.machine.queues.values() if e.queue_id == q.queue_id).engine
    ran = []
    original = engine._execute_raw
    engine._execute_raw = lambda d, *packet: (ran.append((d.name, threading.current_thread().name)),
                                              original(d, *packet))[1]
    q.fence(dst, 1)  # quick: the ringing thread runs it
    if work == "poll":
        q.wait(gate, 1)
    elif work == "big copy":
        q.copy(dst, src, 1 << 20)
    else:
        ib = dev.alloc(PAGE, "gtt")
        ib.write(q.dialect.build("FENCE", addr=dst.va + 8, data=3) + q.dialect.build("NOP", count=3))
        q.packet("INDIRECT", ib_base=ib.va, ib_size=8)
    q.signal(done, 1).submit()
    if work == "poll":
        time.sleep(0.01)
        assert done.value == 0  # the engine's thread waits; the submitting thread went on
        gate.signal(1)
    done.wait(1, timeout=5)
    me = threading.current_thread().name
    assert ran[0] == ("FENCE", me)
    first = next(i for i, (_, thread) in enumerate(ran) if thread != me)  # from here on, the engine's thread
    assert all(thread == f"sdma-q{q.queue_id}" for _, thread in ran[first:]), ran
    assert ran[first][0] == {"poll": "POLL_REGMEM", "big copy": "COPY_LINEAR", "indirect": "INDIRECT"}[work]
    assert dst.read(0, 4) == (b"\x5a" * 4 if work == "big copy" else b"\x01\0\0\0")


def test_destroying_a_queue_waits_for_the_thread_executing_its_packets(emulated):
    system = emulated("gfx942")
    dev = system.devices[0]
    q = dev.sdma_queue()
    gate = system.semaphore()
    q.wait(gate, 1).submit()
    name = f"sdma-q{q.queue_id}"
    assert name in _engine_threads()
    q.destroy()  # the engine's thread stops in its poll and is joined
    assert name not in _engine_threads()


def test_gpu_waits_on_another_gpus_signal(emulated):
    system = emulated("gfx90a,gfx1201")
    a, b = (d.sdma_queue() for d in system.devices)
    sem, out = system.semaphore(), system.devices[1].alloc(PAGE, "gtt")
    b.wait(sem, 5).fence(out, 0xAB).submit()
    time.sleep(0.01)
    assert out.numpy("<u4")[0] == 0
    a.signal(sem, 5).submit()
    b.sync(timeout=5)
    assert out.numpy("<u4")[0] == 0xAB


def test_queue_buffers_cannot_be_unmapped_while_the_queue_lives(emulated):
    dev = emulated("gfx1030").devices[0]
    q = dev.sdma_queue()
    assert _errno_of(lambda: q.ring.unmap_from(dev)) == errno.EBUSY
    assert _errno_of(lambda: q.ptrs.free()) == errno.EBUSY
    q.destroy()
    assert q.ring.handle is None and q.ptrs.handle is None  # destroy released them


def test_only_wait_events_is_a_blocking_ioctl():
    assert [e.name for e in K.IOCTLS if e.blocking] == ["WAIT_EVENTS"]


def test_a_sleeping_wait_does_not_hold_the_process_lock(emulated):
    system = emulated("gfx942")
    dev, event = system.devices[0], system.event()
    waiter = threading.Thread(target=event.wait, kwargs={"timeout": 5})
    waiter.start()
    time.sleep(0.02)  # the waiter is asleep in WAIT_EVENTS now
    t0 = time.monotonic()
    q, buf = dev.sdma_queue(), dev.alloc(PAGE, "gtt")
    q.fence(buf, 3).sync(timeout=1)
    took = time.monotonic() - t0
    event.set()
    waiter.join(timeout=5)
    assert not waiter.is_alive() and took < 1 and buf.numpy("<u4")[0] == 3


def test_an_indirect_buffer_that_runs_itself_stops_the_queue(emulated):
    dev = emulated("gfx942").devices[0]
    q, ib = dev.sdma_queue(name="ib"), dev.alloc(PAGE, "gtt")
    loop = q.dialect.build("INDIRECT", ib_base=ib.va, ib_size=8)
    ib.write(loop + q.dialect.build("NOP", count=(32 - len(loop)) // 4 - 1))  # 8 dwords: itself, then padding
    q.emit(loop)
    with pytest.raises(GpuFault, match="stopped a queue.*at: INDIRECT"):  # the log says: nests too deep
        q.sync(timeout=5)


def test_gtt_beyond_the_kfd_system_memory_limits_is_enomem_and_free_gives_it_back():
    """An 8 GiB host: the TTM page limit (half of RAM) bounds GTT, as amdgpu_amdkfd_reserve_mem_limit does."""
    from kfdtrace.driver.backend import open_syscalls
    from kfdtrace.driver.emulator.boards import emulated_topology
    from kfdtrace.driver.errors import OutOfMemory
    from kfdtrace.driver.system import System

    topology = emulated_topology(["gfx942"])
    topology.nodes[0].mem_banks[0]["size_in_bytes"] = 8 << 30
    with System(open_syscalls(topology=topology)) as system:
        dev = system.devices[0]
        first = dev.alloc(3 << 30, "gtt")
        with pytest.raises(OutOfMemory, match="under the TTM page limit of 0x100000000") as err:
            dev.alloc(1 << 30, "gtt")
        assert err.value.errno == errno.ENOMEM
        first.free()
        dev.alloc(7 << 29, "gtt").free()  # 3.5 GiB fits once the first is freed
        assert dev.alloc(20 << 30, "vram")  # VRAM has its own accounting


@pytest.mark.parametrize("ram, system_limit, ttm_limit", [
    (8 << 30, (8 << 30) - (8 << 24) - (3 << 29), 4 << 30),  # RAM - RAM/64 - AMDGPU_RESERVE_MEM_LIMIT
    (2 << 30, ((2 << 30) - (2 << 24)) // 2, 1 << 30),  # under twice the reserve: halved instead
])
def test_system_memory_limits_follow_amdgpu_amdkfd_gpuvm_init_mem_limits(ram, system_limit, ttm_limit):
    from kfdtrace.driver.emulator.kfd import system_memory_limits

    assert system_memory_limits(ram) == (system_limit, ttm_limit)
