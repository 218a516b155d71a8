"""Whole replay against the workload it replays, CPU measured side by side in one run.

    python benchmarks/replay_cpu.py [--runs 3] [--emulate gfx942]

For examples/small_copies.py (2000 submissions of 16 copies of 64 bytes) and examples/sdma_stress.py
(--rounds 5000), records the workload once, then alternates: the workload run plainly (no capture) and
`replay TRACE --emulate-recorded`, each as its own process on the same emulator. Prints the CPU seconds
(user + system of the child) min / median / max, the median of the paired ratios (targets: <= 1.0x on the
small copies, <= 0.8x on the stress) and the replay's packets per second of CPU. One unmeasured run of each
comes first (bytecode and page cache).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

from timing import paired_cpu

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(HERE, "..", "examples")
WORKLOADS = {  # name: (script and arguments, target ratio)
    "small_copies 2000x16 (64 B)": (["small_copies.py"], 1.0),
    "sdma_stress x5000": (["sdma_stress.py", "--rounds", "5000"], 0.8),
}


def packets_of(trace: str) -> int:
    from kfdtrace.traces.format import TraceReader

    with TraceReader(trace) as r:
        return sum(n for k, n in (r.summary or {}).get("packets", {}).items() if k != "undecodable")


def spread(values: list[float]) -> str:
    return f"{min(values):6.3f} / {statistics.median(values):6.3f} / {max(values):6.3f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--emulate", default="gfx942")
    args = ap.parse_args()
    # Bytecode is cached, as it is for an installed package: compiling our sources on every start (which
    # PYTHONDONTWRITEBYTECODE would make both sides do) is not what this measures.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["KFDTRACE_EMULATE"] = args.emulate
    with tempfile.TemporaryDirectory() as tmp:
        for name, (script, target) in WORKLOADS.items():
            workload = [sys.executable, os.path.join(EXAMPLES, script[0]), *script[1:]]
            trace = os.path.join(tmp, f"{script[0]}.kfdtrace")
            subprocess.run([sys.executable, "-m", "kfdtrace.capture.cli", "run", "-o", trace, *workload[1:]],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True, env=env)
            replay = [sys.executable, "-m", "kfdtrace.replay.cli", trace, "--emulate-recorded"]
            plain, replayed = paired_cpu(workload, replay, env, args.runs)
            pairs = [r / p for p, r in zip(plain, replayed, strict=True)]
            print(f"{name} on {args.emulate}: plain {spread(plain)}, replay {spread(replayed)} CPU; paired ratio "
                  f"{min(pairs):.2f} / {statistics.median(pairs):.2f} / {max(pairs):.2f}x (target <= {target}x); "
                  f"{packets_of(trace) / min(replayed) / 1e3:.0f}k packets per CPU second")


if __name__ == "__main__":
    main()
