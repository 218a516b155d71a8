"""Capture overhead and trace size, measured side by side in one run.

    python benchmarks/capture_overhead.py [--rounds 300] [--size 65536] [--emulate gfx942]

Runs examples/sdma_stress.py's workload alternately without and with recording and prints the ratio of the
best runs and the median ratio of back-to-back pairs (target: <= 1.15x on the emulator), then the trace's
bytes per submitted packet and compression ratio, and the same figures for every sample trace in
traces/samples/.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))

from sdma_stress import stress  # noqa: E402

from kfdtrace.capture import record  # noqa: E402
from kfdtrace.driver import System  # noqa: E402
from kfdtrace.traces.format import TraceReader  # noqa: E402


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def size_figures(path: str) -> str:
    with TraceReader(path) as r:
        packets = sum((r.summary or {}).get("packets", {}).values()) or 1
        s = r.summary or {}
        raw, packed = s.get("trace_raw_bytes", 0), max(1, s.get("trace_compressed_bytes", 1))
    size = os.path.getsize(path)
    return (f"{size:>9} bytes, {packets:>6} packets, {size / packets:6.1f} bytes/packet, "
            f"compression {raw / packed:5.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--size", type=int, default=64 << 10)
    ap.add_argument("--emulate", default="gfx942")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    plain, recorded = [], []
    with tempfile.TemporaryDirectory() as tmp:
        trace = os.path.join(tmp, "stress.kfdtrace")
        for _ in range(args.repeat):
            with System.open(emulate=args.emulate) as system:
                plain.append(timed(lambda: stress(system, args.rounds, args.size)))  # noqa: B023
            with record(trace), System.open(emulate=args.emulate) as system:
                recorded.append(timed(lambda: stress(system, args.rounds, args.size)))  # noqa: B023
        p, r = min(plain), min(recorded)
        pairs = sorted(b / a for a, b in zip(plain, recorded, strict=True))
        print(f"sdma_stress x{args.rounds} ({args.size} B) on {args.emulate}: plain {p * 1e3:.1f} ms, "
              f"recorded {r * 1e3:.1f} ms (best of {args.repeat}), overhead {r / p:.3f}x; "
              f"median of paired runs {pairs[len(pairs) // 2]:.3f}x (target <= 1.15x)")
        print(f"  its trace: {size_figures(trace)}")
    for sample in sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "traces", "samples", "*.kfdtrace"))):
        print(f"  sample {os.path.basename(sample):24s} {size_figures(sample)}")


if __name__ == "__main__":
    main()
