"""Compute and copies at once: compute-bound kernels on two compute queues while SDMA copies run on two
engines, and, with two GPUs, peer copies to the second GPU, all ordered by timeline semaphores.

Each round the first SDMA engine stages the round's input into VRAM and signals `staged`; one of two compute
queues (they take turns) waits for it, runs collatz (a loop of data-dependent length per work-item) over the
stage and signals its `computed` semaphore; the second SDMA engine waits for that, copies the result out to
host memory and signals `drained`, which the first engine waits for before it reuses the stage. With a second
GPU, a peer copy (on the first GPU's xGMI engine when it has one) carries each result into the second GPU's
VRAM and signals `mirrored`, and the second GPU's SDMA copies it to host memory from there. Two stages let
round r+1's copy in overlap round r's kernel. The CPU checks every round's result (and its mirror) against
numpy.

    python examples/overlap.py [--rounds 6] [--n 4096]   (KFDTRACE_EMULATE=gfx90a or gfx942,gfx942 ...)
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
    # below 2**14: two neighbouring starts never make a word that looks like a GPU address (0x7fxx_xxxx_xxxx here),
    # which a replay that moves buffers would refuse as a relocation hazard
    inputs = [rng.integers(1, 1 << 14, n, dtype=np.uint32) for _ in range(rounds)]
    with System.open() as system:
        gpu, peer = system.devices[0], (system.devices[1] if len(system.devices) > 1 else None)
        kernel = corpus(gpu).kernel("collatz")
        copy_in = gpu.sdma_queue(engine=0, name="copy in")
        copy_out = gpu.sdma_queue(engine=1 if gpu.node.num_sdma_engines > 1 else 0, name="copy out")
        computes = [gpu.compute_queue(name=f"collatz{i}") for i in range(2)]
        host_in = [gpu.alloc(n * 4, "gtt", name=f"input{r}") for r in range(rounds)]
        host_out = [gpu.alloc(n * 4, "gtt", name=f"steps{r}") for r in range(rounds)]
        stages = [gpu.alloc(n * 4, "vram", cpu_access=False, name=f"stage{i}") for i in range(2)]
        results = [gpu.alloc(n * 4, "vram", cpu_access=False, name=f"result{i}") for i in range(2)]
        staged, drained, mirrored = (system.semaphore(s) for s in ("staged", "drained", "mirrored"))
        # one per compute queue: the two run at once, so one semaphore's values could arrive out of order
        computed = [system.semaphore(f"computed{i}") for i in range(2)]
        queues = [copy_in, *computes, copy_out]
        if peer is not None:
            engine = "xgmi" if gpu.node.num_sdma_xgmi_engines else 0
            copy_peer, peer_out = gpu.sdma_queue(engine=engine, name="peer copy"), peer.sdma_queue(name="peer out")
            mirrors = [peer.alloc(n * 4, "vram", cpu_access=False, map_to=(gpu,), name=f"mirror{i}") for i in range(2)]
            peer_host = [peer.alloc(n * 4, "gtt", name=f"peer steps{r}") for r in range(rounds)]
            queues += [copy_peer, peer_out]
        for r in range(rounds):
            host_in[r].write(inputs[r])
        t0 = time.perf_counter()
        for r in range(1, rounds + 1):
            stage, result = stages[r % 2], results[r % 2]
            copy_in.wait(drained, max(r - 2, 0)).copy(stage, host_in[r - 1], n * 4).signal(staged, r)
            compute = computes[r % 2].wait(staged, r)
            if peer is not None:  # the result buffer is free once the peer copy of round r - 2 has read it
                compute.wait(mirrored, max(r - 2, 0))
            compute.dispatch(kernel, (n,), (64,), stage, result, np.uint32(n)).signal(computed[r % 2], r)
            copy_out.wait(computed[r % 2], r).copy(host_out[r - 1], result, n * 4).signal(drained, r)
            if peer is not None:
                mirror = mirrors[r % 2]
                copy_peer.wait(computed[r % 2], r).wait(drained, max(r - 2, 0)).copy(mirror, result, n * 4)
                copy_peer.signal(mirrored, r)
                peer_out.wait(mirrored, r).copy(peer_host[r - 1], mirror, n * 4)
        for q in queues:
            q.submit()
        drained.wait(rounds, timeout=600)
        if peer is not None:
            mirrored.wait(rounds, timeout=600)
            peer_out.sync(timeout=600)
        seconds = time.perf_counter() - t0
        for r in range(rounds):
            want = COLLATZ.expected({"start": inputs[r], "steps": np.zeros(n, np.uint32), "n": np.uint32(n)})
            got = [np.frombuffer(host_out[r].read(0, n * 4), np.uint32)]
            if peer is not None:
                got.append(np.frombuffer(peer_host[r].read(0, n * 4), np.uint32))
            for where, g in zip(("", " (mirror)"), got, strict=False):
                if not np.array_equal(g, want["steps"]):
                    raise SystemExit(f"round {r + 1}{where}: {int((g != want['steps']).sum())} of {n} results are "
                                     f"wrong")
        where = f"{gpu} and {peer}" if peer is not None else f"{gpu}"
        print(f"{rounds} rounds of copy in / collatz on 2 compute queues / copy out overlapped on {where}: ok in "
              f"{seconds:.3f} s")


if __name__ == "__main__":
    main()
