"""A dispatch-heavy workload: many tiny kernel launches (the corpus's vector_add over 64 floats, one workgroup of 64).

Dispatch i adds slice i of two inputs into slice i of the output (each slice 64 floats, its pointers moved along
the buffers, so every dispatch's kernel arguments differ). On a PM4 compute queue the dispatches go to the ring
`batch` at a time, one doorbell each batch; on an AQL queue (--aql) each dispatch is its own packet and doorbell.
Every `sync` dispatches the CPU waits for the queue (which bounds the kernel-argument buffers held), and at the end
it checks every sum. The launches, not the arithmetic, are the work: capture and replay costs of dispatches show
here.

    python examples/many_dispatches.py [--dispatches 2000] [--aql] [--batch 10] [--sync 100]
    (KFDTRACE_EMULATE=gfx942 ...)
"""

from __future__ import annotations

import argparse

import numpy as np

from kfdtrace.driver import System
from kfdtrace.driver.kernels.device import corpus

ELEMENTS = 64  # floats per dispatch: one workgroup of 64 work-items


def dispatches(system: System, n: int = 2000, aql: bool = False, batch: int = 10, sync: int = 100) -> None:
    """The workload itself, on an open system (benchmarks/dispatch_capture.py runs it too)."""
    gpu = system.devices[0]
    kernel = corpus(gpu).kernel("vector_add")
    rng = np.random.default_rng(11)
    a, b = rng.standard_normal(n * ELEMENTS, np.float32), rng.standard_normal(n * ELEMENTS, np.float32)
    bufs = [gpu.alloc(n * ELEMENTS * 4, "gtt", name=name) for name in ("a", "b", "c")]
    bufs[0].write(a.tobytes())
    bufs[1].write(b.tobytes())
    q = gpu.aql_queue(name="many dispatches") if aql else gpu.compute_queue(name="many dispatches")
    count = np.uint32(ELEMENTS)
    try:
        for i in range(n):
            at = i * ELEMENTS * 4
            q.dispatch(kernel, (ELEMENTS,), (ELEMENTS,), *(buf.va + at for buf in bufs), count)
            if not aql and (i % batch == batch - 1 or i == n - 1):
                q.submit()
            if i % sync == sync - 1:
                q.sync(timeout=600)
        q.sync(timeout=600)
        c = np.frombuffer(bufs[2].read(0, n * ELEMENTS * 4), np.float32)
        wrong = c != a + b
        if wrong.any():
            first = int(np.argmax(wrong))
            raise SystemExit(f"{n} dispatches of vector_add on {gpu}: {int(wrong.sum())} of {n * ELEMENTS} sums "
                             f"are wrong, the first in dispatch {first // ELEMENTS}")
    finally:
        q.destroy()
        for buf in bufs:
            buf.free()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dispatches", type=int, default=2000)
    ap.add_argument("--aql", action="store_true", help="dispatch through an AQL queue instead of PM4")
    ap.add_argument("--batch", type=int, default=10, help="PM4 dispatches per doorbell")
    ap.add_argument("--sync", type=int, default=100, help="dispatches between waits for the queue")
    args = ap.parse_args()
    if args.dispatches < 1 or args.batch < 1 or args.sync < 1:
        raise SystemExit("--dispatches, --batch and --sync are positive")
    with System.open() as system:
        dispatches(system, args.dispatches, args.aql, args.batch, args.sync)
        print(f"{args.dispatches} dispatches of vector_add over {ELEMENTS} floats on {system.devices[0]} "
              f"({'AQL' if args.aql else 'PM4'}): ok")


if __name__ == "__main__":
    main()
