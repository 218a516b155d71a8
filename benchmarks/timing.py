"""Timing helpers the benchmark scripts share (each script runs from this folder, so `import timing` works)."""

from __future__ import annotations

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
