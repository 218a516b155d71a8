"""Userptr buffers (the process's own pages handed to the GPU) as copy source and destination: userptr ->
VRAM -> userptr, GTT -> userptr at odd offsets, userptr -> GTT, and a second round written through a raw view."""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and not __package__:  # run as a script: make `tests.workloads` importable
    sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

import numpy as np  # noqa: E402

from kfdtrace.driver import System  # noqa: E402
from tests.workloads.common import KIB, TIMEOUT, expect_bytes, random_bytes, rng, run_as_script  # noqa: E402

GPUS = 1


def run(system: System, size: int = 256 * KIB, seed: int = 6) -> None:
    gpu = system.devices[0]
    gen = rng(seed)
    usrc = gpu.alloc(size, "userptr", name="up.src")
    udst = gpu.alloc(size, "userptr", name="up.dst")
    vram = gpu.alloc(size, "vram", cpu_access=False, name="up.vram")
    gtt_in, gtt_out = gpu.alloc(size, "gtt", name="up.gtt_in"), gpu.alloc(size, "gtt", name="up.gtt_out")
    q, done = gpu.sdma_queue(name="up"), system.semaphore("up.done")
    data, extra = random_bytes(gen, size), random_bytes(gen, size)
    usrc.write(data)
    gtt_in.write(extra)
    q.copy(vram, usrc, size).copy(udst, vram, size)
    q.copy(gtt_out, usrc, size - 3, dst_offset=3)
    q.signal(done, 1).submit()
    done.wait(1, TIMEOUT)
    expect_bytes("userptr -> VRAM -> userptr", udst.read(), data)
    want_out = np.zeros(size, np.uint8)
    want_out[3:] = data[:size - 3]
    expect_bytes("userptr -> GTT at +3", gtt_out.read(), want_out)
    q.copy(udst, gtt_in, 1000, dst_offset=17, src_offset=5).signal(done, 2).submit()  # GTT -> userptr
    done.wait(2, TIMEOUT)
    want = data.copy()
    want[17:1017] = extra[5:1005]
    expect_bytes("GTT -> userptr at +17", udst.read(), want)
    view = usrc.numpy()  # round 2: the source written through a raw view of the user's pages
    view[::4096] = 0x5C
    data[::4096] = 0x5C
    q.copy(vram, usrc, size).copy(udst, vram, size).signal(done, 3).submit()
    done.wait(3, TIMEOUT)
    expect_bytes("raw-view userptr -> VRAM -> userptr", udst.read(), data)
    q.destroy()
    for b in (usrc, udst, vram, gtt_in, gtt_out):
        b.free()
    done.free()


def main() -> None:
    run_as_script(__name__)


if __name__ == "__main__":
    main()
