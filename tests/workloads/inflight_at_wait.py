"""A buffer still in flight at a wait, in one thread: queue A gets a large CONST_FILL into CPU-visible VRAM
and nothing waits for it yet; queue B does a small copy and signals S; the CPU waits on S (A may still be
filling) and only later on A's semaphore. Both results are checked. (A recorder that checkpoints at the wait
on S must not hash the buffer A is still writing.)"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and not __package__:  # run as a script: make `tests.workloads` importable
    sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

import numpy as np  # noqa: E402

from kfdtrace.driver import System  # noqa: E402
from tests.workloads.common import MIB, TIMEOUT, expect_bytes, random_bytes, rng, run_as_script  # noqa: E402

GPUS = 1
PATTERN = 0x8C3A5E17  # not one repeated byte: the engine cannot memset it


def run(system: System, size: int = 48 * MIB, seed: int = 10) -> None:
    gpu = system.devices[0]
    big = gpu.alloc(size, "vram", name="ifw.big")
    src, dst = gpu.alloc(4096, "gtt", name="ifw.src"), gpu.alloc(4096, "gtt", name="ifw.dst")
    qa, qb = gpu.sdma_queue(name="ifw.A"), gpu.sdma_queue(name="ifw.B")
    sa, sb = system.semaphore("ifw.A.sem"), system.semaphore("ifw.B.sem")
    data = random_bytes(rng(seed), 4096)
    src.write(data)
    qa.fill(big, PATTERN, size).signal(sa, 1).submit()  # large, and nothing waits for it yet
    qb.copy(dst, src, 4096).signal(sb, 1).submit()
    sb.wait(1, TIMEOUT)
    expect_bytes("B's small copy", dst.read(), data)
    sa.wait(1, TIMEOUT)
    words = big.numpy(np.uint32)
    bad = np.flatnonzero(words != PATTERN)
    if bad.size:
        raise AssertionError(f"A's fill: {bad.size} of {words.size} dwords are not {PATTERN:#x}, first at "
                             f"+{int(bad[0]) * 4:#x} ({int(words[bad[0]]):#x})")
    del words
    for q in (qa, qb):
        q.destroy()
    for b in (big, src, dst):
        b.free()
    sa.free()
    sb.free()


def main() -> None:
    run_as_script(__name__)


if __name__ == "__main__":
    main()
