"""The driver's thread-safety contract (driver/system.py): several threads making semaphores, events, buffers
and queues at once, and submitting to shared or separate queues, on the emulated GPUs."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable

import pytest

from kfdtrace.driver import System

TRIALS = 200


@pytest.fixture(autouse=True)
def eager_thread_switches():
    """Switch threads every few microseconds instead of every 5 ms, so races have room to show."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(before)


def run_together(n: int, work: Callable[[int], None]) -> None:
    """Run work(0..n-1) on n threads released by one barrier; re-raise the first error any of them had."""
    barrier, errors = threading.Barrier(n), []

    def body(i: int) -> None:
        try:
            barrier.wait()
            work(i)
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]


def test_concurrent_first_semaphores_share_one_pool_and_get_events():
    for _ in range(TRIALS):
        with System.open(emulate="gfx1100") as system:
            sems = [None, None]
            run_together(2, lambda i: sems.__setitem__(i, system.semaphore(f"s{i}")))  # noqa: B023
            pools = [b for d in system.devices for b in d.buffers if b.name == "semaphores"]
            assert len(pools) == 1
            assert sems[0].buffer is sems[1].buffer is pools[0] and sems[0].addr != sems[1].addr
            assert None not in (sems[0].event_id, sems[1].event_id) and sems[0].event_id != sems[1].event_id


def test_concurrent_first_events_get_ids_of_their_own():
    for _ in range(TRIALS):
        with System.open(emulate="gfx1100") as system:  # the event page went to the kernel as it opened
            events = [None, None]
            run_together(2, lambda i: events.__setitem__(i, system.event()))  # noqa: B023
            assert {events[0].id, events[1].id} == {1, 2}
            events[1].set()
            events[1].wait(timeout=1)


def test_semaphores_released_concurrently_are_all_reusable():
    with System.open(emulate="gfx942") as system:
        sems = [system.semaphore() for _ in range(64)]
        run_together(4, lambda i: [s.free() for s in sems[i::4]])
        again = [system.semaphore() for _ in range(64)]
        assert {s.offset for s in again} == {s.offset for s in sems}


def copy_rounds(system: System, queue_of: Callable[[int], object], threads: int, rounds: int = 20) -> None:
    """Each thread copies its own random bytes CPU -> VRAM -> CPU through its queue and checks them."""
    dev = system.devices[0]
    size = 3000 + 17  # not a multiple of 4 or of a page

    def work(i: int) -> None:
        q = queue_of(i)
        src, mid, out = dev.alloc(size, "gtt"), dev.alloc(size, "vram"), dev.alloc(size, "gtt")
        done = system.semaphore(f"t{i}")
        for r in range(1, rounds + 1):
            data = os.urandom(size)
            src.write(data)
            q.copy(mid, src, size).copy(out, mid, size).signal(done, r).submit()
            done.wait(r, timeout=5)
            assert out.read() == data, f"thread {i} round {r}: bytes differ"

    run_together(threads, work)


def drains(q, timeout: float = 5.0) -> bool:
    """Whether the queue reads past everything submitted within `timeout`: a wait returns once its signal is
    written, a moment before the engine moves the read pointer past the signal packet."""
    deadline = time.monotonic() + timeout
    while not q.idle and time.monotonic() < deadline:
        time.sleep(0.001)
    return q.idle


@pytest.mark.parametrize("target", ["gfx942", "gfx1100"])
@pytest.mark.parametrize("threads", [2, 4])
def test_threads_share_one_queue(target, threads):
    with System.open(emulate=target) as system:
        q = system.devices[0].sdma_queue(name="shared")
        copy_rounds(system, lambda i: q, threads)
        assert drains(q)


@pytest.mark.parametrize("target", ["gfx942", "gfx1100"])
@pytest.mark.parametrize("threads", [2, 4])
def test_threads_with_a_queue_each(target, threads):
    with System.open(emulate=target) as system:
        dev = system.devices[0]
        queues = [dev.sdma_queue(name=f"q{i}") for i in range(threads)]
        copy_rounds(system, queues.__getitem__, threads)
        assert all(drains(q) for q in queues)


def test_packets_built_in_lockstep_reach_the_ring_per_thread():
    """Two threads build fences packet by packet in lockstep on one queue: each submission is one thread's
    packets only, contiguous on the ring."""
    with System.open(emulate="gfx942") as system:
        dev = system.devices[0]
        q, buf = dev.sdma_queue(), dev.alloc(4096, "gtt")
        step, n = threading.Barrier(2), 8

        def work(i: int) -> None:
            for k in range(n):
                q.fence(buf, (i << 8) | k, offset=4 * i)
                step.wait()
            q.submit()

        run_together(2, work)
        q.sync()
        fences = [p.fields["data"] for p in q.dialect.iter_packets(q.ring.read(0, q.wptr)) if p.name == "FENCE"]
        owners = [v >> 8 for v in fences[:2 * n]]
        assert owners in ([0] * n + [1] * n, [1] * n + [0] * n)
        assert [v & 0xFF for v in fences[:2 * n]] == [*range(n), *range(n)]


def test_syncs_from_several_threads_each_return():
    with System.open(emulate="gfx1100") as system:
        dev = system.devices[0]
        q, buf = dev.sdma_queue(), dev.alloc(4096, "gtt")
        run_together(4, lambda i: [q.fence(buf, k, offset=4 * i).sync(timeout=5) for k in range(25)])
        assert list(buf.numpy("<u4")[:4]) == [24] * 4


def test_concurrent_alloc_map_free_and_queues_on_the_emulator():
    """4 threads allocate, CPU-map, use and free buffers, and make queues, with a few hundred buffers alive."""
    with System.open(emulate="gfx942,gfx1100") as system:
        d0, d1 = system.devices

        def work(i: int) -> None:
            dev = system.devices[i % 2]
            peers = (d1,) if dev is d0 else ()
            for k in range(6):
                q = dev.sdma_queue()
                bufs = [dev.alloc(4096 * (1 + j % 3) + i, ("gtt", "vram", "userptr")[j % 3], map_to=peers)
                        for j in range(60)]
                for j, buf in enumerate(bufs):
                    buf.write(bytes([i, j]) * 8)
                    assert buf.read(0, 16) == bytes([i, j]) * 8
                q.fill(bufs[k], 0x01010101 * k, 16).sync(timeout=5)
                assert bufs[k].read(0, 16) == bytes([k]) * 16
                q.destroy()
                for buf in bufs:
                    buf.free()

        run_together(4, work)
        assert {b.name for b in d0.buffers} == {"semaphores"} and not d1.buffers  # the event page is the kernel's
        assert not d0.queues and not d1.queues
