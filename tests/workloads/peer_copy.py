"""Peer copies between two GPUs: GPU0 stages data in its VRAM (mapped on GPU1 at allocation), GPU1 pulls it
into its own VRAM over the peer mapping, GPU0 pulls it back from GPU1's VRAM (mapped later with map_to), and
GPU1 fills a pattern straight into GPU0's VRAM; a queue on each GPU, ordered by one semaphore."""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and not __package__:  # run as a script: make `tests.workloads` importable
    sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

import numpy as np  # noqa: E402

from kfdtrace.driver import System  # noqa: E402
from tests.workloads.common import KIB, TIMEOUT, expect_bytes, need_gpus, random_bytes, rng, run_as_script  # noqa: E402

GPUS = 2


def run(system: System, size: int = 512 * KIB, seed: int = 11) -> None:
    need_gpus(system, 2, "peer_copy")
    g0, g1 = system.devices[:2]
    a0 = g0.alloc(size, "vram", name="pc.a0", map_to=(g1,))
    b1 = g1.alloc(size, "vram", name="pc.b1")
    b1.map_to(g0)
    src0, out0 = g0.alloc(size, "gtt", name="pc.src0"), g0.alloc(size, "gtt", name="pc.out0")
    out1 = g1.alloc(size, "gtt", name="pc.out1")
    q0, q1 = g0.sdma_queue(name="pc.q0"), g1.sdma_queue(name="pc.q1")
    hop = system.semaphore("pc.hop")
    data = random_bytes(rng(seed), size)
    src0.write(data)
    q0.copy(a0, src0, size).signal(hop, 1).submit()
    q1.wait(hop, 1).copy(b1, a0, size).copy(out1, b1, size).signal(hop, 2).submit()  # GPU1 reads GPU0's VRAM
    q0.wait(hop, 2).copy(out0, b1, size).signal(hop, 3).submit()  # GPU0 reads GPU1's VRAM
    q1.wait(hop, 3).fill(a0, 0x0BADF00D, size // 2, offset=size // 4).signal(hop, 4).submit()  # GPU1 writes GPU0's
    q0.wait(hop, 4).copy(src0, a0, size).signal(hop, 5).submit()
    hop.wait(5, TIMEOUT)
    expect_bytes("GPU0 VRAM -> GPU1 VRAM -> GPU1 GTT", out1.read(), data)
    expect_bytes("GPU1 VRAM -> GPU0 GTT", out0.read(), data)
    want = data.copy()
    want[size // 4:size // 4 + size // 2] = np.frombuffer((0x0BADF00D).to_bytes(4, "little") * (size // 8), np.uint8)
    expect_bytes("GPU1's fill into GPU0's VRAM", src0.read(), want)
    for q in (q0, q1):
        q.destroy()
    b1.unmap_from(g0)
    for b in (a0, b1, src0, out0, out1):
        b.free()
    hop.free()


def main() -> None:
    run_as_script(__name__)


if __name__ == "__main__":
    main()
