"""GPU timestamps around copies: TIMESTAMP_GET_GLOBAL before and after each of a few copies into one buffer;
the stamps must be non-zero and never go backwards, and the copies must be exact (the timestamp buffer
differs on every run, so a replay must not compare it)."""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and not __package__:  # run as a script: make `tests.workloads` importable
    sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

import numpy as np  # noqa: E402

from kfdtrace.driver import System  # noqa: E402
from tests.workloads.common import KIB, TIMEOUT, expect_bytes, random_bytes, rng, run_as_script  # noqa: E402

GPUS = 1


def run(system: System, copies: int = 6, size: int = 256 * KIB, seed: int = 14) -> None:
    gpu = system.devices[0]
    stamps = gpu.alloc(4096, "gtt", name="ts.stamps")
    src, dst = gpu.alloc(size, "gtt", name="ts.src"), gpu.alloc(copies * size, "vram", name="ts.dst")
    q, done = gpu.sdma_queue(name="ts"), system.semaphore("ts.done")
    data = random_bytes(rng(seed), size)
    src.write(data)
    for i in range(copies):
        q.timestamp(stamps, offset=16 * i).copy(dst, src, size, dst_offset=i * size)
        q.timestamp(stamps, offset=16 * i + 8)
    q.signal(done, 1).submit()
    done.wait(1, TIMEOUT)
    t = np.frombuffer(stamps.read(0, 16 * copies), np.uint64)
    if not t.all():
        raise AssertionError(f"a timestamp is zero: {t.tolist()}")
    if (np.diff(t.astype(np.int64)) < 0).any():
        raise AssertionError(f"timestamps go backwards: {t.tolist()}")
    for i in range(copies):
        expect_bytes(f"copy {i} between timestamps", dst.read(i * size, size), data)
    q.destroy()
    for b in (stamps, src, dst):
        b.free()
    done.free()


def main() -> None:
    run_as_script(__name__)


if __name__ == "__main__":
    main()
