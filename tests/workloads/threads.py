"""Submitting threads: two, then four threads, first with a queue each, then sharing one queue (submissions
serialised by the workload's own lock: a queue's pending packets are per queue, not per thread). Each thread
allocates its own buffers and semaphore, runs rounds of write -> copy to VRAM -> copy back -> signal -> wait,
checks every round, and the main thread joins them and re-raises the first failure."""

from __future__ import annotations

import contextlib
import os
import sys
import threading

if __name__ == "__main__" and not __package__:  # run as a script: make `tests.workloads` importable
    sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from kfdtrace.driver import System  # noqa: E402
from tests.workloads.common import KIB, TIMEOUT, expect_bytes, random_bytes, rng, run_as_script  # noqa: E402

GPUS = 1


def run_threads(system: System, n_threads: int, shared_queue: bool, rounds: int = 8, size: int = 64 * KIB,
                seed: int = 9) -> None:
    gpu = system.devices[0]
    tag = f"t{n_threads}{'s' if shared_queue else 'q'}"
    shared = gpu.sdma_queue(name=f"{tag}.shared") if shared_queue else None
    lock = threading.Lock() if shared_queue else contextlib.nullcontext()
    errors: list[BaseException | None] = [None] * n_threads
    start = threading.Barrier(n_threads)

    def worker(k: int) -> None:
        try:
            gen = rng(seed * 100 + k)
            name = f"{tag}.{k}"
            q = shared or gpu.sdma_queue(name=name)
            src, out = gpu.alloc(size, "gtt", name=f"{name}.src"), gpu.alloc(size, "gtt", name=f"{name}.out")
            mid = gpu.alloc(size, "vram", cpu_access=False, name=f"{name}.mid")
            sem = system.semaphore(f"{name}.sem")
            start.wait(TIMEOUT)
            for i in range(1, rounds + 1):
                data = random_bytes(gen, size)
                src.write(data)
                with lock:
                    q.copy(mid, src, size).copy(out, mid, size).signal(sem, i).submit()
                sem.wait(i, TIMEOUT)
                expect_bytes(f"thread {k} of {n_threads} ({'shared queue' if shared else 'own queue'}) round {i}",
                             out.read(), data)
            if shared is None:
                q.destroy()
            for b in (src, out, mid):
                b.free()
            sem.free()
        except BaseException as exc:  # handed to the main thread
            errors[k] = exc
            start.abort()

    threads = [threading.Thread(target=worker, args=(k,), name=f"{tag}-{k}") for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if any(t.is_alive() for t in threads):
        raise AssertionError(f"{tag}: a submitting thread did not finish in 60 s")
    failed = [e for e in errors if e is not None and not isinstance(e, threading.BrokenBarrierError)]
    failed += [e for e in errors if isinstance(e, threading.BrokenBarrierError)]
    if failed:
        raise failed[0]
    if shared is not None:
        shared.destroy()


def run(system: System) -> None:
    for n in (2, 4):
        for shared in (False, True):
            run_threads(system, n, shared)


def main() -> None:
    run_as_script(__name__)


if __name__ == "__main__":
    main()
