"""Large CPU writes: several multi-MiB, overlapping, unaligned Buffer.write calls into a GTT buffer, copied
to CPU-visible VRAM, to VRAM without a CPU mapping, and back out; two rounds, each checked byte for byte."""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and not __package__:  # run as a script: make `tests.workloads` importable
    sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

import numpy as np  # noqa: E402

from kfdtrace.driver import System  # noqa: E402
from tests.workloads.common import MIB, TIMEOUT, expect_bytes, random_bytes, rng, run_as_script  # noqa: E402

GPUS = 1


def run(system: System, size: int = 6 * MIB, writes: int = 3, rounds: int = 2, seed: int = 1) -> None:
    gpu = system.devices[0]
    src = gpu.alloc(size, "gtt", name="lw.src")
    vram = gpu.alloc(size, "vram", name="lw.vram")
    hidden = gpu.alloc(size, "vram", cpu_access=False, name="lw.hidden")
    out = gpu.alloc(size, "gtt", name="lw.out")
    q, done = gpu.sdma_queue(name="lw"), system.semaphore("lw.done")
    gen = rng(seed)
    expected = np.zeros(size, np.uint8)
    for r in range(1, rounds + 1):
        for j in range(writes):  # each write starts further in (at an odd offset) and runs to the end
            offset = j * (size // (2 * writes)) + (j * 13 if j else 0)
            data = random_bytes(gen, size - offset)
            src.write(data, offset)
            expected[offset:] = data
        q.copy(vram, src, size).copy(hidden, vram, size).copy(out, hidden, size).signal(done, r).submit()
        done.wait(r, TIMEOUT)
        expect_bytes(f"round {r}: VRAM after the copy", vram.read(), expected)
        expect_bytes(f"round {r}: GTT after VRAM and back", out.read(), expected)
    q.destroy()
    for b in (src, vram, hidden, out):
        b.free()
    done.free()


def main() -> None:
    run_as_script(__name__)


if __name__ == "__main__":
    main()
