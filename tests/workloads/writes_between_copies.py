"""CPU writes between copies: write a source, copy it, write the same source again (whole, then a few bytes,
then through a raw numpy view), copy each version to another place; every version must land unchanged."""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and not __package__:  # run as a script: make `tests.workloads` importable
    sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

import numpy as np  # noqa: E402

from kfdtrace.driver import System  # noqa: E402
from tests.workloads.common import KIB, TIMEOUT, expect_bytes, random_bytes, rng, run_as_script  # noqa: E402

GPUS = 1


def run(system: System, size: int = 192 * KIB, seed: int = 3) -> None:
    gpu = system.devices[0]
    gen = rng(seed)
    src = gpu.alloc(size, "gtt", name="wbc.src")
    places = [gpu.alloc(size, "vram" if i % 2 else "gtt", name=f"wbc.dst{i}") for i in range(6)]
    q, done = gpu.sdma_queue(name="wbc"), system.semaphore("wbc.done")
    versions: list[np.ndarray] = []
    current = np.zeros(size, np.uint8)

    def copy_out(i: int) -> None:
        q.copy(places[i], src, size).signal(done, i + 1).submit()
        done.wait(i + 1, TIMEOUT)  # the source may only change once the GPU has read it
        versions.append(current.copy())

    current[:] = random_bytes(gen, size)  # 1: the whole source
    src.write(current)
    copy_out(0)
    current[:] = random_bytes(gen, size)  # 2: the whole source again
    src.write(current)
    copy_out(1)
    for off, n in ((5, 3), (64 * KIB - 2, 4), (size - 1, 1)):  # 3: a few bytes, across a chunk boundary too
        patch = random_bytes(gen, n)
        src.write(patch, off)
        current[off:off + n] = patch
    copy_out(2)
    src.fill(0xEE, 100 * KIB, 7)  # 4: Buffer.fill of a few bytes
    current[100 * KIB:100 * KIB + 7] = 0xEE
    copy_out(3)
    view = src.numpy()  # 5: writes through a raw view, which the driver does not see
    view[1000:1010] = np.arange(10, dtype=np.uint8)
    current[1000:1010] = np.arange(10, dtype=np.uint8)
    copy_out(4)
    view[:] = 0x42  # 6: the whole buffer through the view
    current[:] = 0x42
    copy_out(5)
    # Without a CPU wait in between: write, copy, and the next copy reads what the GPU just wrote (queue order).
    q.copy(places[0], places[5], size).copy(places[1], places[4], size).signal(done, 7).submit()
    done.wait(7, TIMEOUT)
    for i, place in enumerate(places):
        want = versions[5] if i == 0 else versions[4] if i == 1 else versions[i]
        expect_bytes(f"copy of source version {i + 1} in {place.label}", place.read(), want)
    q.destroy()
    for b in (src, *places):
        b.free()
    done.free()


def main() -> None:
    run_as_script(__name__)


if __name__ == "__main__":
    main()
