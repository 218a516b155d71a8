"""SDMA copy/fill stress across two queues ordered by timeline semaphores.

Queue A fills and copies into a staging buffer and signals `staged`; queue B waits for it, copies the stage
out and signals `drained`, which A waits for before reusing the stage. The CPU checks every result.

    python examples/sdma_stress.py [--iterations 200] [--size 65536]    (KFDTRACE_EMULATE=gfx1100 to choose GPUs)
"""

from __future__ import annotations

import argparse

import numpy as np
from kfdtrace.driver import System


def stress(system: System, iterations: int, size: int) -> None:
    """The workload itself, on an open system (benchmarks/capture_overhead.py runs it too)."""
    gpu = system.devices[0]
    qa, qb = gpu.sdma_queue(name="producer"), gpu.sdma_queue(name="consumer")
    source = gpu.alloc(size, "gtt", name="source")
    stage = gpu.alloc(size, "vram", name="stage")
    result = gpu.alloc(size, "gtt", name="result")
    staged, drained = system.semaphore("staged"), system.semaphore("drained")
    rng = np.random.default_rng(1)
    for i in range(1, iterations + 1):
        if i % 2:  # odd rounds copy fresh CPU data, even rounds fill a pattern
            data = rng.integers(0, 256, size, dtype=np.uint8)
            source.write(data)
            qa.wait(drained, i - 1).copy(stage, source, size).signal(staged, i).submit()
            expected = data
        else:
            qa.wait(drained, i - 1).fill(stage, 0x01010101 * (i & 0xFF), size).signal(staged, i).submit()
            expected = np.full(size, i & 0xFF, np.uint8)
        qb.wait(staged, i).copy(result, stage, size).signal(drained, i).submit()
        drained.wait(i)
        if not np.array_equal(result.numpy(), expected):
            raise SystemExit(f"round {i}: result differs")
    for q in (qa, qb):
        q.destroy()
    for b in (source, stage, result):
        b.free()
    for s in (staged, drained):
        s.free()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--size", type=int, default=64 << 10, help="bytes per copy (a multiple of 4)")
    args = ap.parse_args()
    with System.open() as system:
        stress(system, args.iterations, args.size)
        print(f"{args.iterations} rounds of {args.size} bytes on {system.devices[0]}: ok")


if __name__ == "__main__":
    main()
