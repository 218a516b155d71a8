"""Compute and copies at once: a compute-bound kernel on a compute queue while SDMA copies run on two engines,
ordered by timeline semaphores.

Each round the first SDMA engine stages the round's input into VRAM and signals `staged`; the compute queue
waits for it, runs collatz (a loop of data-dependent length per work-item) over the stage and signals
`computed`; the second SDMA engine waits for that, copies the result out to host memory and signals
`drained`, which the first engine waits for before it reuses the stage. Two stages let round r+1's copy in
overlap round r's kernel. The CPU checks every round's result against numpy.

    python examples/overlap.py [--rounds 6] [--n 4096]   (KFDTRACE_EMULATE=gfx90a ...)
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from kfdtrace.driver import System
from kfdtrace.driver.kernels.device import corpus
from kfdtrace.driver.kernels.reference import CASES

COLLATZ = next(c for c in CASES if c.kernel == "collatz")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--n", type=int, default=4096)
    args = ap.parse_args()
    n, rounds = args.n, args.rounds
    rng = np.random.default_rng(2)
    inputs = [rng.integers(1, 1 << 16, n, dtype=np.uint32) for _ in range(rounds)]
    with System.open() as system:
        gpu = system.devices[0]
        kernel = corpus(gpu).kernel("collatz")
        copy_in = gpu.sdma_queue(engine=0, name="copy in")
        copy_out = gpu.sdma_queue(engine=1 if gpu.node.num_sdma_engines > 1 else 0, name="copy out")
        compute = gpu.compute_queue(name="collatz")
        host_in = [gpu.alloc(n * 4, "gtt", name=f"input{r}") for r in range(rounds)]
        host_out = [gpu.alloc(n * 4, "gtt", name=f"steps{r}") for r in range(rounds)]
        stages = [gpu.alloc(n * 4, "vram", cpu_access=False, name=f"stage{i}") for i in range(2)]
        results = [gpu.alloc(n * 4, "vram", cpu_access=False, name=f"result{i}") for i in range(2)]
        staged, computed, drained = (system.semaphore(s) for s in ("staged", "computed", "drained"))
        for r in range(rounds):
            host_in[r].write(inputs[r])
        t0 = time.perf_counter()
        for r in range(1, rounds + 1):
            stage, result = stages[r % 2], results[r % 2]
            copy_in.wait(drained, max(r - 2, 0)).copy(stage, host_in[r - 1], n * 4).signal(staged, r)
            compute.wait(staged, r).dispatch(kernel, (n,), (64,), stage, result, np.uint32(n)).signal(computed, r)
            copy_out.wait(computed, r).copy(host_out[r - 1], result, n * 4).signal(drained, r)
        for q in (copy_in, compute, copy_out):
            q.submit()
        drained.wait(rounds, timeout=600)
        seconds = time.perf_counter() - t0
        for r in range(rounds):
            want = COLLATZ.expected({"start": inputs[r], "steps": np.zeros(n, np.uint32), "n": np.uint32(n)})
            got = np.frombuffer(host_out[r].read(0, n * 4), np.uint32)
            if not np.array_equal(got, want["steps"]):
                raise SystemExit(f"round {r + 1}: {int((got != want['steps']).sum())} of {n} results are wrong")
        print(f"{rounds} rounds of copy in / collatz / copy out overlapped on {gpu}: ok in {seconds:.3f} s")


if __name__ == "__main__":
    main()
