"""SDMA copy/fill stress across two queues ordered by timeline semaphores.

Each round, queue A copies the CPU's input (two rounds in three) or fills a pattern into one of two VRAM
stages and signals `staged`; queue B waits for it, copies the stage into a VRAM sink and signals `drained`,
which A waits for before reusing that stage. At the end of every batch B also copies the sink out to the CPU,
which checks it and writes the next batch's input. Stages and sink have no CPU mapping, as a GPU stress's
working buffers would not.

    python examples/sdma_stress.py [--rounds 200] [--batch 25] [--size 65536]   (KFDTRACE_EMULATE=gfx1100 ...)
"""

from __future__ import annotations

import argparse

import numpy as np

from kfdtrace.driver import System


def stress(system: System, rounds: int, size: int, batch: int = 25) -> None:
    """The workload itself, on an open system (benchmarks/capture_overhead.py runs it too)."""
    gpu = system.devices[0]
    qa, qb = gpu.sdma_queue(name="producer"), gpu.sdma_queue(name="consumer")
    source, result = gpu.alloc(size, "gtt", name="source"), gpu.alloc(size, "gtt", name="result")
    stages = [gpu.alloc(size, "vram", cpu_access=False, name=f"stage{i}") for i in range(2)]
    sink = gpu.alloc(size, "vram", cpu_access=False, name="sink")
    staged, drained = system.semaphore("staged"), system.semaphore("drained")
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, size, dtype=np.uint8)
    source.write(data)
    for r in range(1, rounds + 1):
        stage = stages[r % 2]
        qa.wait(drained, r - 2 if r > 1 else 0)  # the stage was last used two rounds ago
        if r % 3:  # two rounds in three copy the CPU's input, the third fills a pattern
            qa.copy(stage, source, size)
            expected = data
        else:
            qa.fill(stage, 0x01010101 * (r & 0xFF), size)
            expected = np.full(size, r & 0xFF, np.uint8)
        qa.signal(staged, r).submit()
        qb.wait(staged, r).copy(sink, stage, size)
        if r % batch == 0 or r == rounds:
            qb.copy(result, sink, size)
        qb.signal(drained, r).submit()
        if r % batch == 0 or r == rounds:
            drained.wait(r)
            if not np.array_equal(np.frombuffer(result.read(), np.uint8), expected):
                raise SystemExit(f"round {r}: result differs")
            data = rng.integers(0, 256, size, dtype=np.uint8)
            source.write(data)
    for q in (qa, qb):
        q.destroy()
    for b in (source, result, sink, *stages):
        b.free()
    for s in (staged, drained):
        s.free()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--batch", type=int, default=25, help="rounds between CPU checks")
    ap.add_argument("--size", type=int, default=64 << 10, help="bytes per copy (a multiple of 4)")
    args = ap.parse_args()
    with System.open() as system:
        stress(system, args.rounds, args.size, args.batch)
        print(f"{args.rounds} rounds of {args.size} bytes on {system.devices[0]}: ok")


if __name__ == "__main__":
    main()
