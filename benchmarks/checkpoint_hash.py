"""Checkpointing a buffer against a memmove of it, and the key functions' speed, measured side by side.

    python benchmarks/checkpoint_hash.py [--mib 64] [--repeat 5] [--emulate gfx942]

One emulated GTT buffer of --mib MiB, filled with random bytes. Each round times, in turn:

- memmove: ctypes.memmove of the buffer into another one (the yardstick)
- capture checkpoint: MemoryRecorder.checkpoint_entry on the buffer when its content is already recorded (the
  hashing pass over every chunk, nothing stored), writing to a real trace in a temp dir
- replay verification: the replay engine's comparison of the buffer against that checkpoint's entry (each
  chunk read and keyed with the trace's key function)
- each key function over the buffer's chunks: XXH3-128 (format 2.x keys), SHA-256 (1.x keys) and BLAKE2b-128

and prints, per line, best and median of --repeat rounds (GB/s of buffer bytes) and the ratio of each to
memmove's (target for the checkpoint and its verification: <= 1.2x).
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import os
import statistics
import tempfile
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
from timing import timed

from kfdtrace.capture.memory import MemoryRecorder, TrackedBuffer
from kfdtrace.capture.recorder import DEFAULT_CHUNK
from kfdtrace.capture.trace_file import TraceFile
from kfdtrace.driver import System
from kfdtrace.replay.engine import Instance, ReplayBuffer
from kfdtrace.traces.format import KEY_FUNCTIONS, TraceReader

KEYS: dict[str, Callable[[memoryview], bytes]] = {
    "xxh3-128 (2.x keys)": KEY_FUNCTIONS[2],
    "sha256[:16] (1.x keys)": KEY_FUNCTIONS[1],
    "blake2b-128": lambda data: hashlib.blake2b(data, digest_size=16).digest(),
}


def chunks(view: memoryview, chunk: int) -> list[memoryview]:
    return [view[lo:lo + chunk] for lo in range(0, len(view), chunk)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--emulate", default="gfx942")
    args = ap.parse_args()
    size, chunk = args.mib << 20, DEFAULT_CHUNK
    with System.open(emulate=args.emulate) as system, tempfile.TemporaryDirectory() as tmp:
        dev = system.devices[0]
        buf = dev.alloc(size, "gtt", name="checkpointed")
        buf.write(np.random.default_rng(1).integers(0, 256, size, dtype=np.uint8))
        copy = np.ones(size, np.uint8)
        path = os.path.join(tmp, "bench.kfdtrace")
        trace = TraceFile(path, {"chunk_size": chunk})
        memory = MemoryRecorder(trace, chunk)
        tracked = TrackedBuffer(handle=1, gpu_id=dev.gpu_id, va=buf.va, size=size, domain="gtt", flags=0,
                                mmap_offset=0, cpu=buf.cpu, name="checkpointed")
        entry = memory.checkpoint_entry(tracked)  # the first checkpoint stores every chunk
        trace.close({})
        view = memoryview((ctypes.c_char * size).from_address(buf.cpu)).cast("B")
        pieces = chunks(view, chunk)
        with TraceReader(path) as reader:
            replay = SimpleNamespace(s=SimpleNamespace(chunk=chunk), trace=reader)  # what Instance._compare uses
            cases: dict[str, Callable[[], object]] = {
                "memmove": lambda: ctypes.memmove(copy.ctypes.data, buf.cpu, size),
                "capture checkpoint": lambda: memory.checkpoint_entry(tracked),
                "replay verification": lambda: Instance._compare(replay, ReplayBuffer(buf), entry),
                **{name: lambda key=key: [key(p) for p in pieces] for name, key in KEYS.items()},
            }
            assert cases["capture checkpoint"]() == entry and cases["replay verification"]() is None
            times: dict[str, list[float]] = {name: [] for name in cases}
            for _ in range(args.repeat):
                for name, fn in cases.items():
                    times[name].append(timed(fn))
        buf.free()
    base = min(times["memmove"]), statistics.median(times["memmove"])
    print(f"{args.mib} MiB buffer, {chunk >> 10} KiB chunks, {args.repeat} rounds: best / median")
    for name, t in times.items():
        best, median = min(t), statistics.median(t)
        print(f"{name:24} {size / best / 1e9:6.2f} / {size / median / 1e9:6.2f} GB/s   {best / base[0]:5.2f}x / "
              f"{median / base[1]:5.2f}x memmove")


if __name__ == "__main__":
    main()
