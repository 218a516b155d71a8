"""Producer/consumer ping-pong between the CPU and a GPU.

The CPU writes a value and signals `ping`; the GPU, already waiting, copies it to the reply slot, adds its
own FENCE, and signals `pong`; the CPU checks both before the next round.

    python examples/ping_pong.py [--rounds 100]
"""

from __future__ import annotations

import argparse

from kfdtrace.driver import System


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=100)
    args = ap.parse_args()
    with System.open() as system:
        gpu = system.devices[-1]
        q = gpu.sdma_queue(name="responder")
        mailbox, reply = gpu.alloc(4096, "gtt", name="mailbox"), gpu.alloc(4096, "gtt", name="reply")
        ping, pong = system.semaphore("ping"), system.semaphore("pong")
        for i in range(1, args.rounds + 1):  # the GPU side is queued up front: it waits on each ping
            q.wait(ping, i).copy(reply, mailbox, 8).fence(reply, i, offset=8).signal(pong, i)
        q.submit()
        for i in range(1, args.rounds + 1):
            mailbox.write((i * 0x9E3779B97F4A7C15 & (2**64 - 1)).to_bytes(8, "little"))
            ping.signal(i)
            pong.wait(i)
            got, seen = int.from_bytes(reply.read(0, 8), "little"), int.from_bytes(reply.read(8, 4), "little")
            if got != i * 0x9E3779B97F4A7C15 & (2**64 - 1) or seen != i:
                raise SystemExit(f"round {i}: reply {got:#x}/{seen} is wrong")
        print(f"{args.rounds} ping-pong rounds with {gpu}: ok")


if __name__ == "__main__":
    main()
