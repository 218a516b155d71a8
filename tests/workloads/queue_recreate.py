"""Queue destroy and re-create: queue A writes 11 into dst and syncs, and is destroyed; queue B is created
(it gets A's queue id back), writes 22 and syncs. Five such generations, each checked, so queue ids, rings,
doorbells and sync semaphores are all reused."""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and not __package__:  # run as a script: make `tests.workloads` importable
    sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from kfdtrace.driver import System  # noqa: E402
from tests.workloads.common import TIMEOUT, expect_bytes, expect_u32, run_as_script  # noqa: E402

GPUS = 1


def run(system: System, generations: int = 5) -> None:
    gpu = system.devices[0]
    dst = gpu.alloc(4096, "gtt", name="qr.dst")
    src = gpu.alloc(4096, "gtt", name="qr.src")
    src.write(bytes(range(256)) * 16)
    first_id = None
    for g in range(generations):
        q = gpu.sdma_queue(name=f"qr.{chr(ord('A') + g)}")
        if first_id is None:
            first_id = q.queue_id
        elif q.queue_id != first_id:
            raise AssertionError(f"generation {g}: queue id {q.queue_id}, expected the freed id {first_id} back")
        value = 11 * (g + 1)
        q.fence(dst, value, offset=4 * g).copy(dst, src, 64, dst_offset=1024 + 64 * g, src_offset=g)
        q.sync(TIMEOUT)
        expect_u32(f"generation {g}: value from queue {q.label}", dst.read(4 * g, 4), value)
        expect_bytes(f"generation {g}: copy", dst.read(1024 + 64 * g, 64), src.read(g, 64))
        q.destroy()
    for g in range(generations):
        expect_u32(f"value of generation {g} at the end", dst.read(4 * g, 4), 11 * (g + 1))
    dst.free()
    src.free()


def main() -> None:
    run_as_script(__name__)


if __name__ == "__main__":
    main()
