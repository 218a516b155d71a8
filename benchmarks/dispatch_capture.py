"""Capture overhead and trace size of a dispatch-heavy workload, measured side by side in one run.

    python benchmarks/dispatch_capture.py [--repeat 5] [--dispatches 2000] [--emulate gfx942]

examples/many_dispatches.py (2000 dispatches of vector_add over 64 floats, one workgroup each: PM4 ten to a
doorbell, AQL one packet a doorbell; a queue sync every 100) on a PM4 and on an AQL queue: the workload run
alternately without and with recording, each run in a fresh system (after one unmeasured run of each), as
benchmarks/capture_overhead.py does. Prints the process CPU time (every thread: the emulator's engines and shader
and the recorder's included) and the wall time, min / median / max, with the paired ratios (target: CPU <=
1.15x) and what recording added per dispatch. Then each trace's bytes per dispatch: the whole file, its
command-record frames as stored (blobs excluded: capture_overhead.py's "command bytes"), its blob frames (CPU
writes: inputs and kernel arguments, code objects, checkpoints), and the records per dispatch by type.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections import Counter
from collections.abc import Callable

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))

from capture_overhead import run  # noqa: E402
from many_dispatches import dispatches  # noqa: E402

from kfdtrace.driver import System  # noqa: E402
from kfdtrace.traces.format import BLOBS, RECORDS, TraceReader  # noqa: E402

TARGET = 1.15  # CPU with capture / without


def spread(values: list[float], fmt: str = ".3f", scale: float = 1.0) -> str:
    return " / ".join(f"{v * scale:{fmt}}" for v in (min(values), statistics.median(values), max(values)))


Row = tuple[str, str, str, str]


def overhead(name: str, workload: Callable[[System], None], n: int, emulate: str, repeat: int,
             trace: str) -> list[Row]:
    """The table's rows for `repeat` pairs of runs of `workload` without and with recording into `trace`."""
    run(workload, emulate, None), run(workload, emulate, trace)  # warm-up: bytecode, code objects, page cache
    plain, recorded = [], []
    for _ in range(repeat):
        plain.append(run(workload, emulate, None))
        recorded.append(run(workload, emulate, trace))
    rows: list[Row] = []
    for i, what in enumerate(("CPU", "wall")):
        p, r = [x[i] for x in plain], [x[i] for x in recorded]
        pairs = [b / a for a, b in zip(p, r, strict=True)]
        added = [(b - a) / n for a, b in zip(p, r, strict=True)]
        rows += [(name, f"{what}, plain", f"{spread(p)} s", ""),
                 (name, f"{what}, recorded", f"{spread(r)} s", ""),
                 (name, f"{what}, recorded / plain, paired", f"{spread(pairs)}x",
                  f"target <= {TARGET:.2f}x" if i == 0 else ""),
                 (name, f"{what} recording added per dispatch", f"{spread(added, '.0f', 1e6)} us", "")]
    return rows


def size_rows(name: str, path: str, n: int) -> list[Row]:
    """Bytes per dispatch: the file, its record frames (stored), its blob frames (stored); records per dispatch."""
    with TraceReader(path) as r:
        records, blobs = r.stored_bytes(RECORDS), r.stored_bytes(BLOBS)
        counts = Counter(rec.type for rec in r.records())
    size = os.path.getsize(path)
    top = ", ".join(f"{t} {c / n:.2f}" for t, c in counts.most_common(8))
    return [(name, "trace file bytes per dispatch", f"{size / n:.0f}", f"{size:,} bytes"),
            (name, "command-record bytes per dispatch", f"{records / n:.0f}", "record frames as stored"),
            (name, "blob bytes per dispatch", f"{blobs / n:.0f}", "CPU writes, code objects, checkpoints"),
            (name, "records per dispatch", f"{sum(counts.values()) / n:.1f}", top)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--emulate", default="gfx942")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dispatches", type=int, default=2000)
    args = ap.parse_args()
    n = args.dispatches
    with tempfile.TemporaryDirectory() as tmp:
        rows: list[Row] = [("workload", "what", "min / median / max", "against")]
        for queue, aql in (("PM4", False), ("AQL", True)):
            name = f"{queue} {n} dispatches"
            trace = os.path.join(tmp, f"dispatches-{queue}.kfdtrace")
            rows += overhead(name, lambda system: dispatches(system, n, aql),  # noqa: B023
                             n, args.emulate, args.repeat, trace)
            rows += size_rows(name, trace, n)
    print(f"many_dispatches capture on {args.emulate}, {args.repeat} pairs each, min / median / max "
          f"(sizes: of the last recording):")
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print(f"  {row[0]:{widths[0]}}  {row[1]:{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]}")


if __name__ == "__main__":
    main()
