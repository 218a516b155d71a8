"""Fills with non-uniform patterns and copies past the per-packet limits: CONST_FILL of dword patterns at
dword offsets, a fill longer than the 4 MiB fill limit of SDMA 4/5, a copy of 9 MiB + 3 bytes (split on every
family, at odd offsets), and inline WRITE_LINEAR data longer than one packet; expectations built with numpy."""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and not __package__:  # run as a script: make `tests.workloads` importable
    sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

import numpy as np  # noqa: E402

from kfdtrace.driver import System  # noqa: E402
from tests.workloads.common import KIB, MIB, TIMEOUT, expect_bytes, random_bytes, rng, run_as_script  # noqa: E402

GPUS = 1


def pattern(value: int, n: int) -> np.ndarray:
    return np.frombuffer((value & 0xFFFFFFFF).to_bytes(4, "little") * (n // 4), np.uint8)


def run(system: System, seed: int = 15) -> None:
    gpu = system.devices[0]
    gen = rng(seed)
    size = 10 * MIB
    a = gpu.alloc(size, "vram", name="fp.a")
    b = gpu.alloc(size, "gtt", name="fp.b")
    q, done = gpu.sdma_queue(name="fp"), system.semaphore("fp.done")
    want_a = np.zeros(size, np.uint8)
    fills = [(0, 4, 0x01020304), (4, 64, 0xFFFFFFFF), (68, 4092, 0x80000001), (4 * KIB, 4 * MIB + 8, 0xDEADBEEF),
             (5 * MIB, 12, 0), (5 * MIB + 12, 1 * MIB, 0x00FF00FF)]
    for off, n, value in fills:
        q.fill(a, value, n, offset=off)
        want_a[off:off + n] = pattern(value, n)
    inline = random_bytes(gen, 10 * KIB + 4)  # three WRITE_LINEAR packets
    q.write_data(a, inline.tobytes(), offset=8 * MIB + 4)
    want_a[8 * MIB + 4:8 * MIB + 4 + inline.size] = inline
    q.signal(done, 1).submit()
    done.wait(1, TIMEOUT)
    expect_bytes("fills and inline writes", a.read(), want_a)
    data = random_bytes(gen, size)
    b.write(data)
    n = 9 * MIB + 3
    q.copy(a, b, n, dst_offset=1, src_offset=size - n).signal(done, 2).submit()  # longer than any max copy
    done.wait(2, TIMEOUT)
    want_a[1:1 + n] = data[size - n:]
    expect_bytes("a 9 MiB + 3 copy at odd offsets", a.read(), want_a)
    q.copy(b, a, size).signal(done, 3).submit()
    done.wait(3, TIMEOUT)
    expect_bytes("VRAM back to GTT", b.read(), want_a)
    q.destroy()
    a.free()
    b.free()
    done.free()


def main() -> None:
    run_as_script(__name__)


if __name__ == "__main__":
    main()
