"""Trace writer throughput against raw zstd on the same bytes, measured side by side.

    python benchmarks/trace_writer.py [--records 200000] [--level 3]

Writes records shaped like a capture's (doorbells with 32 bytes of packets, ioctls with 88-byte structs) and
prints the writer's MB/s of packed record bytes next to zstd compressing those same packed bytes at the same
level in one call, plus the compression ratio.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import msgpack
import zstandard

from kfdtrace.traces.format import TraceWriter


def records(n: int):
    ring = bytes.fromhex("01000000ff0f0000000000000010000000000000002000000000000000000000")
    struct_bytes = bytes(range(88))
    for i in range(n):
        if i % 10 == 9:
            yield "ioctl", {"seq": i, "fd": 3, "request": 0xC0604B02, "name": "CREATE_QUEUE", "data": struct_bytes,
                            "tid": 1234, "t": i * 1000}
        else:
            yield "doorbell", {"queue": i % 4, "value": i * 32, "ring": ring, "t": i * 1000}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--level", type=int, default=3)
    args = ap.parse_args()
    items = list(records(args.records))
    packed = b"".join(msgpack.packb([t, f]) for t, f in items)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.kfdtrace")
        t0 = time.perf_counter()
        with TraceWriter(path, {"bench": True}, level=args.level) as w:
            for t, f in items:
                w.record(t, **f)
        writer_s = time.perf_counter() - t0
        size = os.path.getsize(path)
    t0 = time.perf_counter()
    raw = zstandard.ZstdCompressor(level=args.level).compress(packed)
    zstd_s = time.perf_counter() - t0
    mb = len(packed) / 1e6
    print(f"{args.records} records, {mb:.1f} MB packed")
    print(f"writer:   {mb / writer_s:7.1f} MB/s  ({writer_s * 1e6 / args.records:.2f} us/record), "
          f"file {size / 1e6:.2f} MB, ratio {len(packed) / size:.1f}x")
    print(f"raw zstd: {mb / zstd_s:7.1f} MB/s on the same bytes, {len(raw) / 1e6:.2f} MB, "
          f"ratio {len(packed) / len(raw):.1f}x")
    print(f"writer / raw zstd throughput: {zstd_s / writer_s:.2f}")


if __name__ == "__main__":
    main()
