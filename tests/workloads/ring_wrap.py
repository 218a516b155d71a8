"""Ring wrap with many small submissions: a 1 KiB ring (the smallest the driver allows) and 400 submissions
of an inline write plus a FENCE each, so the ring wraps dozens of times and the driver waits for room; a
semaphore checkpoint every 50 submissions."""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and not __package__:  # run as a script: make `tests.workloads` importable
    sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

import numpy as np  # noqa: E402

from kfdtrace.driver import System  # noqa: E402
from tests.workloads.common import TIMEOUT, expect_bytes, run_as_script  # noqa: E402

GPUS = 1


def run(system: System, submissions: int = 400) -> None:
    gpu = system.devices[0]
    q = gpu.sdma_queue(ring_size=1024, name="rw")
    sem = system.semaphore("rw.sem")
    out = gpu.alloc(submissions * 16, "gtt", name="rw.out")
    want = np.zeros(submissions * 4, np.uint32)
    for i in range(submissions):
        words = [i * 2654435761 & 0xFFFFFFFF, ~i & 0xFFFFFFFF, i | 0x80000000]
        q.write_data(out, np.array(words, np.uint32).tobytes(), offset=16 * i)
        q.fence(out, i ^ 0x5A5A, offset=16 * i + 12)
        want[4 * i:4 * i + 4] = [*words, i ^ 0x5A5A]
        if i % 50 == 49:
            q.signal(sem, i + 1)
        q.submit()
        if i % 50 == 49:
            sem.wait(i + 1, TIMEOUT)
            expect_bytes(f"after submission {i}", out.read(0, 16 * (i + 1)), want[:4 * (i + 1)])
    q.sync(TIMEOUT)
    if q.wptr <= 4 * q.ring_size:
        raise AssertionError(f"the ring wrapped only {q.wptr // q.ring_size} times")
    expect_bytes("every submission's words", out.read(0, want.nbytes), want)
    q.destroy()
    out.free()
    sem.free()


def main() -> None:
    run_as_script(__name__)


if __name__ == "__main__":
    main()
