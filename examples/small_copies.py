"""A command-heavy workload: many submissions of many tiny copies (a transpose by DMA, one 64-byte piece per copy).

The source is a grid of pieces (rows x cols, row-major); the destination receives it transposed. Each
submission copies 16 consecutive destination pieces, which come from 16 rows of the source, one copy each;
every `batch` submissions the queue signals a semaphore, the CPU waits for it and checks the pieces moved so
far. The packets, not the bytes, are the work: capture and replay costs show here.

    python examples/small_copies.py [--submissions 2000] [--copies 16] [--piece 64] [--batch 100]
"""

from __future__ import annotations

import argparse

import numpy as np

from kfdtrace.driver import System


def gather(system: System, submissions: int = 2000, copies: int = 16, piece: int = 64, batch: int = 100) -> None:
    """The workload itself, on an open system (benchmarks/capture_overhead.py runs it too)."""
    gpu = system.devices[0]
    q = gpu.sdma_queue(name="gather")
    pieces = submissions * copies
    source = gpu.alloc(pieces * piece, "gtt", name="source")
    dest = gpu.alloc(pieces * piece, "gtt", name="dest")
    done = system.semaphore("gathered")
    rows = 2 * copies
    cols = -(-pieces // rows)
    rng = np.random.default_rng(7)
    data = rng.integers(0, 256, (pieces, piece), dtype=np.uint8)
    # destination piece i is the source's piece at (row i % rows, column i // rows): the grid transposed
    order = np.array([(i % rows) * cols + i // rows for i in range(pieces)])
    if len(set(order.tolist())) != pieces or order.max() >= pieces:
        raise SystemExit(f"{pieces} pieces do not fill a {rows}-row grid: choose submissions * copies "
                         f"divisible by {rows}")
    source.write(data.tobytes())
    checked = 0
    for s in range(1, submissions + 1):
        for i in range((s - 1) * copies, s * copies):
            q.copy(dest, source, piece, dst_offset=i * piece, src_offset=int(order[i]) * piece)
        if s % batch == 0 or s == submissions:
            q.signal(done, s)
        q.submit()
        if s % batch == 0 or s == submissions:
            done.wait(s)
            got = np.frombuffer(dest.read(checked * piece, (s * copies - checked) * piece), np.uint8)
            if not np.array_equal(got.reshape(-1, piece), data[order[checked:s * copies]]):
                raise SystemExit(f"submission {s}: gathered pieces differ")
            checked = s * copies
    q.destroy()
    for b in (source, dest):
        b.free()
    done.free()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--submissions", type=int, default=2000)
    ap.add_argument("--copies", type=int, default=16, help="copies per submission")
    ap.add_argument("--piece", type=int, default=64, help="bytes per copy (a multiple of 4)")
    ap.add_argument("--batch", type=int, default=100, help="submissions between CPU checks")
    args = ap.parse_args()
    with System.open() as system:
        gather(system, args.submissions, args.copies, args.piece, args.batch)
        print(f"{args.submissions} submissions of {args.copies} copies of {args.piece} bytes on "
              f"{system.devices[0]}: ok")


if __name__ == "__main__":
    main()
