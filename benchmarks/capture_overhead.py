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

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))

from sdma_stress import stress  # noqa: E402
from timing import best_of, timed  # noqa: E402

from kfdtrace.capture import record  # noqa: E402
from kfdtrace.driver import System  # noqa: E402
from kfdtrace.traces.format import TraceReader  # noqa: E402


def size_figures(path: str) -> str:
    with TraceReader(path) as r:
        packets = sum((r.summary or {}).get("packets", {}).values()) or 1
        s = r.summary or {}
        raw, packed = s.get("trace_raw_bytes", 0), max(1, s.get("trace_compressed_bytes", 1))
    size = os.path.getsize(path)
    return (f"{size:>9} bytes, {packets:>6} packets, {size / packets:6.1f} bytes/packet, "
            f"compression {raw / packed:5.1f}x")


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
    print("chunk size trade-off (200 scattered 256-byte writes into a 4 MiB input, each read by a copy):")
    chunk_tradeoff(args.emulate)
    for sample in sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "traces", "samples", "*.kfdtrace"))):
        print(f"  sample {os.path.basename(sample):24s} {size_figures(sample)}")


if __name__ == "__main__":
    main()
