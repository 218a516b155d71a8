"""Timeline semaphores across 2**32: four queues in a pipeline (q1 -> q2 -> q3 -> q4), each stage waiting on
the previous stage's semaphore and signalling its own, with values 2**32-2 .. 2**32+3, everything queued up
front; then a late waiter on a value the timeline has already passed across the wrap must not block."""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and not __package__:  # run as a script: make `tests.workloads` importable
    sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from kfdtrace.driver import System  # noqa: E402
from tests.workloads.common import TIMEOUT, expect_bytes, expect_u32, random_bytes, rng, run_as_script  # noqa: E402

GPUS = 1
BASE = 2**32 - 3  # every semaphore starts here; the values signalled are BASE+1 .. BASE+6
STEPS = 6
SLOT = 4096


def run(system: System, seed: int = 4) -> None:
    gpu = system.devices[0]
    gen = rng(seed)
    go = system.semaphore("sw.go")
    stage_sems = [system.semaphore(f"sw.s{i}") for i in range(1, 5)]
    for s in (go, *stage_sems):
        s.signal(BASE)
    queues = [gpu.sdma_queue(name=f"sw.q{i}") for i in range(1, 5)]
    inp = gpu.alloc(STEPS * SLOT, "gtt", name="sw.in")
    stages = [gpu.alloc(STEPS * SLOT, "vram", name=f"sw.stage{i}") for i in range(1, 4)]
    out = gpu.alloc(STEPS * SLOT, "gtt", name="sw.out")
    chain = [inp, *stages, out]
    waits = [go, *stage_sems[:3]]
    for k in range(STEPS):  # the whole pipeline is queued before the CPU lets anything through
        value = BASE + 1 + k
        for i, q in enumerate(queues):
            q.wait(waits[i], value).copy(chain[i + 1], chain[i], SLOT, dst_offset=k * SLOT, src_offset=k * SLOT)
            q.signal(stage_sems[i], value).submit()
    data = random_bytes(gen, STEPS * SLOT)
    for k in range(STEPS):
        inp.write(data[k * SLOT:(k + 1) * SLOT], k * SLOT)
        go.signal(BASE + 1 + k)
    last = stage_sems[3]
    last.wait(BASE + STEPS, TIMEOUT)
    expect_bytes("pipeline output", out.read(), data)
    for s in stage_sems:
        if s.value != BASE + STEPS:
            raise AssertionError(f"semaphore {s.label} is {s.value:#x}, expected {BASE + STEPS:#x}")
    # A waiter that arrives late: every stage semaphore is at 2**32+3 now; waits for values before and after
    # the low dword wrapped must pass at once.
    marks = gpu.alloc(4096, "gtt", name="sw.marks")
    late = queues[1]
    for j, value in enumerate((BASE + 1, 2**32 - 1, 2**32, BASE + STEPS)):
        late.wait(stage_sems[0], value).fence(marks, 0xA0 + j, offset=4 * j)
    late.sync(TIMEOUT)
    for j in range(4):
        expect_u32(f"late waiter {j}", marks.read(4 * j, 4), 0xA0 + j)
    for q in queues:
        q.destroy()
    for b in (*chain, marks):
        b.free()
    for s in (go, *stage_sems):
        s.free()


def main() -> None:
    run_as_script(__name__)


if __name__ == "__main__":
    main()
