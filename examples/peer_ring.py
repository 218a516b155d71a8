"""Multi-GPU peer-copy ring: a buffer travels GPU0 -> GPU1 -> ... -> GPU0 over peer copies, each hop ordered
by a timeline semaphore, and comes back unchanged.

    KFDTRACE_EMULATE=gfx942,gfx942,gfx942 python examples/peer_ring.py [--laps 20] [--size 1048576]
"""

from __future__ import annotations

import argparse

import numpy as np

from kfdtrace.driver import System


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--laps", type=int, default=20)
    ap.add_argument("--size", type=int, default=1 << 20)
    args = ap.parse_args()
    with System.open() as system:
        gpus = system.devices
        if len(gpus) < 2:
            raise SystemExit(f"peer_ring needs two or more GPUs, this system has {len(gpus)}")
        # One VRAM slot per GPU, each mapped on its neighbour that copies into it.
        slots = [g.alloc(args.size, "vram", name=f"slot{i}", map_to=(gpus[i - 1],)) for i, g in enumerate(gpus)]
        queues = [g.sdma_queue(name=f"hop{i}") for i, g in enumerate(gpus)]
        hop = system.semaphore("hop")
        data = np.random.default_rng(7).integers(0, 256, args.size, dtype=np.uint8)
        slots[0].write(data)
        n, step = len(gpus), 0
        for _ in range(args.laps):
            for i in range(n):  # GPU i pushes its slot to GPU i+1 once the previous hop has landed
                queues[i].wait(hop, step).copy(slots[(i + 1) % n], slots[i], args.size).signal(hop, step + 1)
                step += 1
        for q in queues:
            q.submit()
        hop.wait(step, timeout=60)
        if not np.array_equal(slots[0].numpy(), data):
            raise SystemExit("the buffer came back changed")
        print(f"{args.laps} laps around {n} GPUs ({step} peer copies of {args.size} bytes): ok")


if __name__ == "__main__":
    main()
