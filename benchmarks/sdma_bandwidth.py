"""Emulated SDMA copy bandwidth against a plain host memmove of the same size, measured side by side.

    python benchmarks/sdma_bandwidth.py [--emulate gfx942] [--max-mib 256]

Prints, per size, the emulated copy's GB/s, memmove's GB/s and their ratio (target: >= 0.5x at 64 MiB),
then the per-submission overhead of a tiny copy: build + ring + doorbell + completion seen by the CPU (target
<= 15 us for copy + FENCE).
Buffers are touched before timing, so both sides measure copying, not page faults.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics

import numpy as np
from timing import best_of

from kfdtrace.driver import System


def bandwidth(system: System, max_mib: int) -> None:
    dev = system.devices[0]
    q = dev.sdma_queue(name="bench")
    print(f"{'size':>8}  {'SDMA GB/s':>9}  {'memmove GB/s':>12}  {'ratio':>5}   ({dev.target.name}, "
          f"{dev.target.sdma_max_copy >> 20} MiB per COPY_LINEAR)")
    size = 1 << 20
    while size <= max_mib << 20:
        src, dst = dev.alloc(size, "vram"), dev.alloc(size, "vram")
        src.fill(1)
        dst.fill(2)
        a, b = np.ones(size, np.uint8), np.zeros(size, np.uint8)
        repeat = max(3, min(50, (256 << 20) // size))
        sdma = best_of(lambda: q.copy(dst, src, size).sync(), repeat)  # noqa: B023
        host = best_of(lambda: ctypes.memmove(b.ctypes.data, a.ctypes.data, size), repeat)  # noqa: B023
        print(f"{size >> 20:>5} MiB  {size / sdma / 1e9:9.2f}  {size / host / 1e9:12.2f}  {host / sdma:5.2f}x")
        src.free()
        dst.free()
        size *= 4 if size < 64 << 20 else 2
    q.destroy()


def submission_overhead(system: System, n: int = 2000, runs: int = 5) -> None:
    """A 64-byte copy's round trip, three ways: building its packet alone; copy + FENCE, the CPU polling the
    fence's dword (the least a program can do to see a copy complete); copy + timeline-semaphore signal, the
    CPU waiting on the semaphore (the driver's path: two 64-bit words of FENCEs and a TRAP)."""
    dev = system.devices[0]
    q = dev.sdma_queue(name="tiny")
    src, dst, flag = dev.alloc(4096, "gtt"), dev.alloc(4096, "gtt"), dev.alloc(4096, "gtt")
    word = ctypes.c_uint32.from_address(flag.cpu_addr(0))
    sem = system.semaphore("tiny")

    def build() -> None:
        for _ in range(n):
            q.copy(dst, src, 64)
        q.discard()

    def fenced() -> None:
        base = word.value
        for i in range(base + 1, base + n + 1):
            q.copy(dst, src, 64).fence(flag, i).submit()
            while word.value != i:
                pass

    def signalled() -> None:
        base = sem.value
        for i in range(base + 1, base + n + 1):
            q.copy(dst, src, 64).signal(sem, i).submit()
            sem.wait(i)

    for label, fn in (("build only", build), ("build + ring + complete (copy + FENCE, CPU polls)", fenced),
                      ("build + ring + complete (copy + semaphore signal, CPU waits)", signalled)):
        times = [best_of(fn, 1) / n * 1e6 for _ in range(runs)]
        print(f"tiny copy, {label}: {min(times):6.1f} / {statistics.median(times):6.1f} / {max(times):6.1f} us "
              f"(min / median / max of {runs} runs of {n})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--emulate", default="gfx942")
    ap.add_argument("--max-mib", type=int, default=256)
    args = ap.parse_args()
    with System.open(emulate=args.emulate) as system:
        bandwidth(system, args.max_mib)
        submission_overhead(system)


if __name__ == "__main__":
    main()
