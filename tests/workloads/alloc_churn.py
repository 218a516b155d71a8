"""Alloc/free churn with address reuse: a buffer is written, copied out, freed, and a buffer of another size
(and domain) is allocated at the very same address (`va=`), used as a copy source and as a destination, and
freed again; meanwhile unrelated buffers come and go at whatever address the driver picks."""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and not __package__:  # run as a script: make `tests.workloads` importable
    sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

import numpy as np  # noqa: E402

from kfdtrace.driver import System  # noqa: E402
from tests.workloads.common import KIB, TIMEOUT, expect_bytes, random_bytes, rng, run_as_script  # noqa: E402

GPUS = 1
SLOT = 64 * KIB
SIZES = [SLOT, SLOT, 48 * KIB, 48 * KIB, 32 * KIB, 24 * KIB, 24 * KIB, 16 * KIB, 12 * KIB, 8 * KIB, 4 * KIB]


def run(system: System, rounds: int = 12, seed: int = 7) -> None:
    gpu = system.devices[0]
    gen = rng(seed)
    q, done = gpu.sdma_queue(name="ac"), system.semaphore("ac.done")
    out = gpu.alloc(rounds * SLOT, "gtt", name="ac.out")
    feed = gpu.alloc(SLOT, "gtt", name="ac.feed")
    expected = np.zeros(rounds * SLOT, np.uint8)
    churn = gpu.alloc(SLOT, "gtt", name="ac.r0")  # the address every round reuses
    va, step = churn.va, 0
    others = []
    for r in range(rounds):
        size = churn.size
        n = min(size, SLOT) - r  # a different, odd length each round
        data = random_bytes(gen, n)
        churn.write(data)
        step += 1
        q.copy(out, churn, n, dst_offset=r * SLOT).signal(done, step).submit()
        done.wait(step, TIMEOUT)
        expected[r * SLOT:r * SLOT + n] = data
        # The GPU writes into the reused buffer too, then it goes to `out` through a VRAM hop.
        fresh = random_bytes(gen, 512)
        feed.write(fresh)
        step += 1
        q.copy(churn, feed, 512, dst_offset=64).signal(done, step).submit()
        done.wait(step, TIMEOUT)
        expect_bytes(f"round {r}: GPU write into the reused buffer", churn.read(64, 512), fresh)
        if r % 3 == 0:  # unrelated buffers come and go at addresses the driver picks
            others.append(gpu.alloc(int(gen.integers(1, 64)) * 4096, "gtt", name=f"ac.other{r}"))
        if r % 4 == 1 and others:
            others.pop(0).free()
        churn.free()
        # Never larger than the last buffer there: the rest of a bigger range may have been handed out since.
        size = SIZES[min(r + 1, len(SIZES) - 1)]
        domain = "vram" if r % 2 else "gtt"
        churn = gpu.alloc(size, domain, va=va, name=f"ac.r{r + 1}")
        if churn.va != va:
            raise AssertionError(f"round {r}: asked for {va:#x}, got {churn.va:#x}")
        if churn.read(0, 64) != bytes(64):
            raise AssertionError(f"round {r}: a new {domain} buffer at a reused address is not zeroed")
    churn.free()
    for b in others:
        b.free()
    expect_bytes("every round's copy", out.read(), expected)
    q.destroy()
    out.free()
    feed.free()
    done.free()


def main() -> None:
    run_as_script(__name__)


if __name__ == "__main__":
    main()
