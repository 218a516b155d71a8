"""Event ping-pong between the CPU and a GPU: the CPU writes a mailbox and submits a copy followed by a TRAP
with a KFD event's id, then sleeps on the event (system.event(), q.trap(ev.id), ev.wait()); each round's
reply goes to its own slot. Then the semaphore variant: the GPU side queued up front, each round waiting on
`ping`, answering with a copy and a FENCE, and signalling `pong`."""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and not __package__:  # run as a script: make `tests.workloads` importable
    sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from kfdtrace.driver import System  # noqa: E402
from tests.workloads.common import TIMEOUT, expect_bytes, expect_u32, run_as_script  # noqa: E402

GPUS = 1
SLOT = 64


def message(round_: int, salt: int) -> bytes:
    return bytes((round_ * 31 + salt + i * 7) & 0xFF for i in range(16))


def run(system: System, rounds: int = 16) -> None:
    gpu = system.devices[-1]
    q = gpu.sdma_queue(name="epp")
    mailbox = gpu.alloc(4096, "gtt", name="epp.mailbox")
    replies = gpu.alloc(rounds * SLOT, "gtt", name="epp.replies")
    ev = system.event()
    for i in range(rounds):  # CPU -> GPU by submission, GPU -> CPU by TRAP on the event
        mailbox.write(message(i, 1))
        q.copy(replies, mailbox, 16, dst_offset=i * SLOT).fence(replies, 0xE0 + i, offset=i * SLOT + 16)
        q.trap(ev.id).submit()
        ev.wait(TIMEOUT)
        expect_bytes(f"event round {i}: reply", replies.read(i * SLOT, 16), message(i, 1))
        expect_u32(f"event round {i}: fence", replies.read(i * SLOT + 16, 4), 0xE0 + i)
    ev.destroy()

    mailbox2 = gpu.alloc(4096, "gtt", name="epp.mailbox2")
    replies2 = gpu.alloc(rounds * SLOT, "gtt", name="epp.replies2")
    ping, pong = system.semaphore("epp.ping"), system.semaphore("epp.pong")
    for i in range(1, rounds + 1):  # the GPU side first: every round waits on its ping
        q.wait(ping, i).copy(replies2, mailbox2, 16, dst_offset=i * SLOT - SLOT)
        q.fence(replies2, i, offset=i * SLOT - SLOT + 16).signal(pong, i)
    q.submit()
    for i in range(1, rounds + 1):
        mailbox2.write(message(i, 2))
        ping.signal(i)
        pong.wait(i, TIMEOUT)
        expect_bytes(f"semaphore round {i}: reply", replies2.read(i * SLOT - SLOT, 16), message(i, 2))
        expect_u32(f"semaphore round {i}: fence", replies2.read(i * SLOT - SLOT + 16, 4), i)
    q.sync(TIMEOUT)
    for i in range(rounds):  # nothing was overwritten later
        expect_bytes(f"event reply {i} at the end", replies.read(i * SLOT, 16), message(i, 1))
    q.destroy()
    for b in (mailbox, replies, mailbox2, replies2):
        b.free()
    ping.free()
    pong.free()


def main() -> None:
    run_as_script(__name__)


if __name__ == "__main__":
    main()
