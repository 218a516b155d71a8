"""Trace writer throughput against raw zstd at the same level on the same packed bytes, in the same run.

    python benchmarks/trace_writer.py [--records 200000] [--level 3] [--frame-kib 256] [--repeat 3]

The records are shaped like a capture's: doorbells (queue, value, 32 bytes of SDMA packets, monotonic ns)
and, one in eight, ioctl pairs with 88-byte argument structs. Throughput is MB/s of packed record bytes (the
writer's raw payload); each figure is the best of --repeat runs, the runs of all lines interleaved, and the
writer's ratio to raw zstd is also given run by run (min / median / max). Lines:

- writer, record_fields(): TraceWriter.record_fields(type, fields) for every record, then close() (index and
  footer), to a file in a temp dir; the writer compresses and writes full frames on its background thread
- writer, record(): the same through record(type, **fields), which pays Python's keyword-argument unpacking
- writer, clock "t": the same with the clock field capture uses (`t` stored as differences within a frame, so
  its frames are not raw zstd's bytes)
- pack only: packing the same records one by one with the writer's packer (msgspec), no compression: the
  writer's floor is the larger of this and raw zstd when its thread has a core of its own, their sum when not
- pack only, msgpack: the same with msgpack's Packer (what the writer used before)
- raw zstd: one ZstdCompressor at the same level over the same packed bytes, in frame-sized pieces
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable

import msgpack
import msgspec
import zstandard
from timing import timed

from kfdtrace.traces.format import TraceWriter


def make_records(n: int, seed: int = 1) -> list[tuple[str, dict]]:
    """Capture-shaped records: mostly doorbells with a 32-byte SDMA packet, some ioctl/ioctl_end pairs."""
    rnd = random.Random(seed)
    t = time.monotonic_ns()
    wptr, out = 0, []
    struct_bytes = bytearray(rnd.randbytes(88))
    for i in range(n):
        t += rnd.randrange(500, 20_000)
        if i % 8 == 7:
            struct_bytes[0:8] = rnd.randbytes(8)  # an address or handle changes, the rest stays
            out.append(("ioctl", {"seq": i, "fd": 4, "request": 0xC0584B1B, "name": "ALLOC_MEMORY_OF_GPU",
                                  "data": bytes(struct_bytes), "tid": 140_235_412_873_024, "t": t}))
        else:
            wptr += 32
            src, dst = 0x7F00_0000_0000 + rnd.randrange(1 << 20) * 64, 0x7F10_0000_0000 + rnd.randrange(1 << 20) * 64
            ring = (b"\x01\x00\x00\x00" + (4095).to_bytes(4, "little") + b"\x00" * 4 + src.to_bytes(8, "little")
                    + dst.to_bytes(8, "little") + b"\x00" * 4)
            out.append(("doorbell", {"queue": 3, "value": wptr, "ring": ring, "t": t}))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--level", type=int, default=3)
    ap.add_argument("--frame-kib", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    items = make_records(args.records)
    frame = args.frame_kib << 10
    packed = b"".join(msgpack.packb([t, f]) for t, f in items)
    pieces = [packed[i:i + frame] for i in range(0, len(packed), frame)]
    mb = len(packed) / 1e6
    stats: dict[str, int] = {}
    stored: list[int] = []

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.kfdtrace")

        def write(keywords: bool, clock: str | None = None) -> None:
            with TraceWriter(path, {"bench": True}, level=args.level, frame_bytes=frame, clock=clock) as w:
                if keywords:
                    record = w.record
                    for t, f in items:
                        record(t, **f)
                else:
                    record_fields = w.record_fields
                    for t, f in items:
                        record_fields(t, f)
            if clock is None:
                stats.update(w.stats)

        def pack(packer: Callable[[object], bytes]) -> None:
            for t, f in items:
                packer((t, f))

        def raw_zstd() -> None:
            z = zstandard.ZstdCompressor(level=args.level)
            stored[:] = [len(z.compress(p)) for p in pieces]

        cases: dict[str, Callable[[], None]] = {
            "writer, record_fields()": lambda: write(False),
            "writer, record()": lambda: write(True),
            'writer, clock "t"': lambda: write(False, "t"),
            "pack only": lambda: pack(msgspec.msgpack.Encoder().encode),
            "pack only, msgpack": lambda: pack(msgpack.Packer(use_bin_type=True).pack),
            "raw zstd": raw_zstd,
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.repeat):
            for name, fn in cases.items():
                times[name].append(timed(fn))
    best = {name: min(t) for name, t in times.items()}
    print(f"{args.records} records, {mb:.1f} MB packed ({len(packed) / args.records:.0f} B/record), zstd level "
          f"{args.level}, {args.frame_kib} KiB frames, best of {args.repeat}")
    for name, s in best.items():
        print(f"{name + ':':24} {mb / s:7.1f} MB/s  {s * 1e9 / args.records:6.0f} ns/record")
    print(f"file {stats['file_bytes'] / 1e6:.2f} MB in {stats['frames']} frames, ratio "
          f"{len(packed) / stats['file_bytes']:.2f}x; raw zstd {sum(stored) / 1e6:.2f} MB, ratio "
          f"{len(packed) / sum(stored):.2f}x")
    floor = best["pack only"] + best["raw zstd"]
    for name in ("writer, record_fields()", "writer, record()", 'writer, clock "t"'):
        runs = sorted(z / w for z, w in zip(times["raw zstd"], times[name], strict=True))
        print(f"{name}: {best['raw zstd'] / best[name]:.2f}x raw zstd's throughput (run by run {runs[0]:.2f} / "
              f"{statistics.median(runs):.2f} / {runs[-1]:.2f}x), {floor / best[name]:.2f}x pack + zstd's")


if __name__ == "__main__":
    main()
