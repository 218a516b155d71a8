"""CLI start-up CPU: `kfdtrace --help`, `kfdtrace info FILE` and `replay --help` against the CPU of importing
what every command needs anyway (`python -c "import click, msgpack, zstandard"`), measured side by side.

    python benchmarks/cli_startup.py [--runs 7]

Prints min/median/max CPU seconds (user + system, of the child process) per command and its median's ratio to
the baseline's, after one unmeasured run of each (with bytecode caches, as an installed kfdtrace runs).
Target: <= 2.0x (numpy and the driver load only where a command needs them).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLE = os.path.join(HERE, "..", "traces", "samples", "sdma_stress-gfx942.kfdtrace")


# as installed: with the bytecode caches Python writes (a sandbox that turns them off would time the compiler)
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def cpu_seconds(argv: list[str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=ENV)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    tool = os.path.dirname(sys.executable)
    commands = {
        "baseline import": [sys.executable, "-c", "import click, msgpack, zstandard"],
        "kfdtrace --help": [shutil.which("kfdtrace", path=tool) or "kfdtrace", "--help"],
        "kfdtrace info": [shutil.which("kfdtrace", path=tool) or "kfdtrace", "info", SAMPLE],
        "replay --help": [shutil.which("replay", path=tool) or "replay", "--help"],
    }
    times = {name: [] for name in commands}
    for argv in commands.values():  # unmeasured: writes the bytecode caches
        cpu_seconds(argv)
    for _ in range(args.runs):  # interleaved, so the machine's state changes hit every command alike
        for name, argv in commands.items():
            times[name].append(cpu_seconds(argv))
    base = statistics.median(times["baseline import"])
    print(f"{'command':>16}  {'min':>6}  {'median':>6}  {'max':>6}  {'ratio':>6}   (CPU seconds, {args.runs} runs)")
    for name, t in times.items():
        med = statistics.median(t)
        print(f"{name:>16}  {min(t):6.3f}  {med:6.3f}  {max(t):6.3f}  {med / base:5.2f}x")


if __name__ == "__main__":
    main()
