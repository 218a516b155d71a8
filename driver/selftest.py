"""`kfdtrace selftest`: end-to-end checks of the driver on whatever backend is open."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable

import numpy as np

from kfdtrace.driver.errors import BoundsError
from kfdtrace.driver.kernels.device import QUEUES, corpus, run_case
from kfdtrace.driver.kernels.reference import CASES, Case
from kfdtrace.driver.memory import FIXED_SIZES
from kfdtrace.driver.system import Device, System

Check = Callable[[System, Device], None]


class CheckFailed(AssertionError):
    pass


def expect(cond: bool, message: str) -> None:
    if not cond:
        raise CheckFailed(message)


def copy_sizes(device: Device) -> list[int]:
    """Small, odd, page-crossing, and larger than one COPY_LINEAR can move."""
    return [1, 3, 4, 4097, 65536 + 5, device.target.sdma_max_copy + 13]


def pattern(size: int) -> np.ndarray:
    """Random bytes with a period of 4099 (prime, so a misplaced chunk shows), cheap at any size."""
    return np.resize(np.frombuffer(os.urandom(4099), np.uint8), size)


def check_alloc_kinds(system: System, dev: Device) -> None:
    for domain in ("vram", "gtt", "userptr", "doorbell", "mmio"):
        buf = dev.alloc(8192, domain, name=f"selftest {domain}")
        size_ok = buf.size == FIXED_SIZES.get(domain, 8192) <= buf.alloc_size
        expect(buf.va % 4096 == 0 and size_ok, f"{domain}: bad placement {buf}")
        if buf.cpu is not None:
            buf.write(b"kfdtrace")
            expect(buf.read(0, 8) == b"kfdtrace", f"{domain}: CPU read-back differs")
        buf.free()
    try:
        dev.alloc(4096, "gtt").read(4000, 200)
    except BoundsError:
        pass
    else:
        raise CheckFailed("a read past a buffer's end was not refused")


def check_copy_roundtrip(system: System, dev: Device) -> None:
    q = dev.sdma_queue(name="selftest copy")
    try:
        for size in copy_sizes(dev):
            data = pattern(size)
            host, vram_a, vram_b = dev.alloc(size, "gtt"), dev.alloc(size, "vram"), dev.alloc(size, "vram")
            host.write(data)
            q.copy(vram_a, host, size).copy(vram_b, vram_a, size).fill(host, 0, size & ~3).sync()
            expect(not host.numpy()[:size & ~3].any(), "the host buffer was not cleared")
            q.copy(host, vram_b, size).sync()
            expect(np.array_equal(host.numpy(), data), f"{size}-byte copy host->VRAM->VRAM->host differs")
            for b in (host, vram_a, vram_b):
                b.free()
    finally:
        q.destroy()


def check_fill(system: System, dev: Device) -> None:
    q = dev.sdma_queue(name="selftest fill")
    size = dev.target.sdma_max_copy + 4096
    buf = dev.alloc(size, "vram")
    buf.fill(0)
    q.fill(buf, 0xA5C3E1F0, size - 8, offset=4).sync()
    arr = buf.numpy("<u4")
    expect(arr[0] == 0 and arr[-1] == 0, "fill wrote outside its range")
    expect((arr[1:-1] == 0xA5C3E1F0).all(), "fill left words unfilled")
    q.destroy()
    buf.free()


def check_fence_timestamp(system: System, dev: Device) -> None:
    q = dev.sdma_queue(name="selftest fence")
    buf = dev.alloc(4096, "gtt")
    q.fence(buf, 0xC0FFEE, offset=8).timestamp(buf, offset=16).timestamp(buf, offset=24).sync()
    words = buf.numpy("<u8")
    expect(buf.numpy("<u4")[2] == 0xC0FFEE, "FENCE value not written")
    expect(words[2] > 0 and words[3] >= words[2], f"timestamps not monotonic: {words[2]}, {words[3]}")
    q.destroy()
    buf.free()


def check_semaphores(system: System, dev: Device) -> None:
    q = dev.sdma_queue(name="selftest semaphore")
    sem, gate = system.semaphore("selftest sem"), system.semaphore("selftest gate")
    big = (7 << 32) | 5
    q.signal(sem, big).submit()
    sem.wait(big, timeout=5)
    expect(sem.value == big, f"64-bit signal landed as {sem.value:#x}")
    buf = dev.alloc(4096, "gtt")
    q.wait(gate, 3).fence(buf, 1).signal(sem, big + 1).submit()
    time.sleep(0.01)
    expect(buf.numpy("<u4")[0] == 0, "GPU wait did not hold the queue")
    gate.signal(3)  # a CPU signal the GPU sees
    sem.wait(big + 1, timeout=5)
    expect(buf.numpy("<u4")[0] == 1, "the queue did not resume after the CPU signal")
    q.destroy()
    for s in (sem, gate):
        s.free()
    buf.free()


def check_events(system: System, dev: Device) -> None:
    ev = system.event()
    ev.set()
    ev.wait(timeout=1)
    q = dev.sdma_queue(name="selftest trap")
    q.trap(ev.id).submit()
    ev.wait(timeout=5)
    q.destroy()
    ev.destroy()


def check_two_queues(system: System, dev: Device) -> None:
    producer, consumer = dev.sdma_queue(name="producer"), dev.sdma_queue(name="consumer")
    size = 1 << 20
    src, mid, out = dev.alloc(size, "gtt"), dev.alloc(size, "vram"), dev.alloc(size, "gtt")
    data = os.urandom(size)
    src.write(data)
    ready, done = system.semaphore("ready"), system.semaphore("done")
    consumer.wait(ready, 1).copy(out, mid, size).signal(done, 1).submit()  # queued first, must wait
    producer.copy(mid, src, size).signal(ready, 1).submit()
    done.wait(1, timeout=10)
    expect(out.read() == data, "consumer copied before the producer finished")
    for x in (producer, consumer):
        x.destroy()
    for b in (src, mid, out):
        b.free()
    ready.free()
    done.free()


def check_peer_copy(system: System, dev: Device) -> None:
    peers = [d for d in system.devices if d is not dev]
    if not peers:
        return
    peer = peers[0]
    size = 3 << 20
    data = pattern(size)
    mine, theirs = dev.alloc(size, "vram", map_to=(peer,)), peer.alloc(size, "vram", map_to=(dev,))
    back = dev.alloc(size, "gtt")
    mine.write(data)
    q = dev.sdma_queue(name="peer")
    q.copy(theirs, mine, size).copy(back, theirs, size).sync()
    expect(np.array_equal(back.numpy(), data), f"peer copy {dev} -> {peer} -> {dev} differs")
    q.destroy()
    for b in (mine, theirs, back):
        b.free()


CHECKS: list[tuple[str, Check]] = [
    ("alloc/map/free (vram, gtt, userptr, doorbell, mmio)", check_alloc_kinds),
    ("SDMA copy host->VRAM->VRAM->host", check_copy_roundtrip),
    ("SDMA const fill", check_fill),
    ("SDMA fence and timestamps", check_fence_timestamp),
    ("timeline semaphores (GPU/CPU signal and wait)", check_semaphores),
    ("events (CPU set, GPU trap)", check_events),
    ("two queues ordered by a semaphore", check_two_queues),
    ("peer-to-peer copy", check_peer_copy),
]


def check_kernel(system: System, dev: Device, case: Case) -> None:
    """One corpus kernel through a PM4 and an AQL queue, each result against its numpy reference."""
    program = corpus(dev)
    for queue in QUEUES:
        values = case.inputs()
        case.verify(values, run_case(dev, program, case, values, queue))


def run_selftest(system: System, echo: Callable[[str], None] = print) -> bool:
    """Run every check on every device, then every corpus kernel; prints one line per check and returns True
    when all passed."""
    ok = True
    kernel_checks = [(f"kernel {c.kernel} (PM4, AQL) vs numpy", functools.partial(check_kernel, case=c))
                     for c in CASES]
    for dev in system.devices:
        for name, check in CHECKS + kernel_checks:
            if check is check_peer_copy and len(system.devices) < 2:
                continue
            t0 = time.perf_counter()
            try:
                check(system, dev)
            except Exception as exc:  # a failed check is reported and the run goes on
                ok = False
                echo(f"FAIL  {dev}  {name}: {type(exc).__name__}: {exc}")
            else:
                echo(f"ok    {dev}  {name}  ({(time.perf_counter() - t0) * 1000:.0f} ms)")
    echo(f"{'all checks passed' if ok else 'some checks FAILED'} on {len(system.devices)} GPU(s), "
         f"backend {system.backend}")
    return ok
