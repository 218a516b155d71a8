"""Timing helpers the benchmark scripts share (each script runs from this folder, so `import timing` works)."""

from __future__ import annotations

import resource
import subprocess
import time
from collections.abc import Callable


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of `fn` takes."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """The fastest of `repeat` calls of `fn`, in seconds."""
    return min(timed(fn) for _ in range(repeat))


def cpu_seconds(argv: list[str], env: dict[str, str]) -> float:
    """CPU (user + system) of one child process running `argv` to a successful end (SystemExit, with its
    stderr's end, when it fails)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    if done.returncode:
        raise SystemExit(f"{' '.join(argv)} failed with status {done.returncode}:\n{done.stderr.decode()[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def paired_cpu(first: list[str], second: list[str], env: dict[str, str], runs: int) -> tuple[list[float], list[float]]:
    """The CPU seconds of two commands run alternately `runs` times each, after one unmeasured run of each."""
    cpu_seconds(first, env), cpu_seconds(second, env)
    a, b = [], []
    for _ in range(runs):
        a.append(cpu_seconds(first, env))
        b.append(cpu_seconds(second, env))
    return a, b
