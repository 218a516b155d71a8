"""Capture overhead and trace size, measured side by side in one run.

    python benchmarks/capture_overhead.py [--repeat 5] [--emulate gfx942] [--chunks]

For three workloads, examples/sdma_stress.py (300 rounds of 64 KiB, and 2000 rounds, where the fixed cost
of start-up weighs little) and examples/small_copies.py (2000 submissions of 16 copies of 64 bytes), runs the
workload alternately without and with recording, each run in a fresh system (after one unmeasured run of
each), and prints the process CPU time (every thread: the emulator's engines and the recorder's included) and
the wall time of each, min/median/max, with the median of the back-to-back pairs' ratios (targets: CPU <=
1.10x on the stress example, <= 1.25x on the small copies). Then each trace's size: bytes of command records
(record frames as stored, blobs excluded) per submitted packet dword (target <= 0.5), and the same for every
sample trace in traces/samples/. --chunks adds the chunk-size trade-off of sparse CPU writes.
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))

from sdma_stress import stress  # noqa: E402
from small_copies import gather  # noqa: E402
from timing import best_of  # noqa: E402

from kfdtrace.capture import record  # noqa: E402
from kfdtrace.driver import System  # noqa: E402
from kfdtrace.traces.format import RECORDS, TraceReader  # noqa: E402

WORKLOADS: dict[str, tuple[Callable[[System], None], float]] = {
    "sdma_stress x300 (64 KiB)": (lambda system: stress(system, 300, 64 << 10), 1.10),
    # the same stress long enough that the start-up's flushed ioctls weigh little: what each submission costs
    "sdma_stress x2000 (64 KiB)": (lambda system: stress(system, 2000, 64 << 10), 1.10),
    "small_copies 2000x16 (64 B)": (lambda system: gather(system, 2000, 16, 64), 1.25),
}


def size_figures(path: str) -> str:
    """Command-record bytes per submitted packet dword, and the file's bytes per packet."""
    with TraceReader(path) as r:
        packets = sum((r.summary or {}).get("packets", {}).values()) or 1
        stored = r.stored_bytes(RECORDS)
        dwords = sum(len(rec.fields.get("ring") or b"") // 4 for rec in r.records([r.submission_type])) or 1
    size = os.path.getsize(path)
    return (f"{size:>9} bytes, {packets:>6} packets, {stored / dwords:5.2f} command bytes/packet dword "
            f"(target <= 0.5), {size / packets:6.1f} file bytes/packet")


def run(workload: Callable[[System], None], emulate: str, trace: str | None) -> tuple[float, float]:
    """(CPU seconds of the whole process, wall seconds) of one run of `workload`, recorded into `trace`."""
    c0, t0 = time.process_time(), time.perf_counter()
    if trace is None:
        with System.open(emulate=emulate) as system:
            workload(system)
    else:
        with record(trace), System.open(emulate=emulate) as system:
            workload(system)
    return time.process_time() - c0, time.perf_counter() - t0


def spread(values: list[float], scale: float = 1e3) -> str:
    return f"{min(values) * scale:7.1f} / {statistics.median(values) * scale:7.1f} / {max(values) * scale:7.1f}"


def overhead(name: str, workload: Callable[[System], None], target: float, emulate: str, repeat: int,
             tmp: str) -> str:
    trace = os.path.join(tmp, name.split()[0] + ".kfdtrace")
    run(workload, emulate, None), run(workload, emulate, trace)  # warm-up: generated codecs, plans, page cache
    plain, recorded = [], []
    for _ in range(repeat):
        plain.append(run(workload, emulate, None))
        recorded.append(run(workload, emulate, trace))
    print(f"{name} on {emulate}, {repeat} pairs, min / median / max ms:")
    for i, what in enumerate(("CPU ", "wall")):
        p, r = [x[i] for x in plain], [x[i] for x in recorded]
        pairs = [b / a for a, b in zip(p, r, strict=True)]
        goal = f" (target <= {target:.2f}x)" if i == 0 else ""
        print(f"  {what} plain {spread(p)}   recorded {spread(r)}   paired ratio {min(pairs):.3f} / "
              f"{statistics.median(pairs):.3f} / {max(pairs):.3f}x{goal}")
    return trace


def sparse_writes(system: System, rounds: int = 200) -> None:
    """A workload the chunk size matters to: 256-byte CPU writes scattered over a 4 MiB input, each read by
    a copy."""
    gpu = system.devices[0]
    src, dst = gpu.alloc(4 << 20, "gtt", name="input"), gpu.alloc(4096, "gtt", name="out")
    q = gpu.sdma_queue()
    for i in range(rounds):
        offset = (i * 2654435761) % ((4 << 20) - 256) & ~255
        src.write(os.urandom(256), offset)
        q.copy(dst, src, 256, src_offset=offset)
        if i % 20 == 19:
            q.sync()
    q.sync()


def chunk_tradeoff(emulate: str) -> None:
    """Recording time and trace size of sparse_writes for each chunk size."""
    with tempfile.TemporaryDirectory() as tmp:
        for chunk in (4 << 10, 16 << 10, 64 << 10, 256 << 10):
            trace = os.path.join(tmp, f"sparse-{chunk}.kfdtrace")
            with record(trace, chunk_size=chunk), System.open(emulate=emulate) as system:
                took = best_of(lambda: sparse_writes(system), 3)  # noqa: B023
            print(f"  chunk {chunk >> 10:>3} KiB: sparse writes recorded in {took * 1e3:6.1f} ms, "
                  f"trace {os.path.getsize(trace) / 1e6:6.2f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--emulate", default="gfx942")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--chunks", action="store_true", help="also measure the chunk-size trade-off")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name, (workload, target) in WORKLOADS.items():
            trace = overhead(name, workload, target, args.emulate, args.repeat, tmp)
            print(f"  its trace: {size_figures(trace)}")
    if args.chunks:
        print("chunk size trade-off (200 scattered 256-byte writes into a 4 MiB input, each read by a copy):")
        chunk_tradeoff(args.emulate)
    for sample in sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "traces", "samples", "*.kfdtrace"))):
        print(f"  sample {os.path.basename(sample):28s} {size_figures(sample)}")


if __name__ == "__main__":
    main()
