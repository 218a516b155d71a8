"""Trace writer throughput against raw zstd at the same level on the same packed bytes, in the same run.

    python benchmarks/trace_writer.py [--records 200000] [--level 3] [--frame-kib 256] [--repeat 3]

The records are shaped like a capture's: doorbells (queue, value, 32 bytes of SDMA packets, monotonic ns)
and, one in eight, ioctl pairs with 88-byte argument structs. Throughput is MB/s of packed record bytes (the
writer's raw payload); each figure is the best of --repeat runs. Lines:

- writer: TraceWriter.record() for every record, then close() (index and footer), to a file in a temp dir
- pack only: msgpack-packing the same records one by one, no compression (the writer's floor in Python)
- raw zstd: one ZstdCompressor at the same level over the same packed bytes, in frame-sized pieces
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time

import msgpack
import zstandard
from timing import best_of

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
    pack = msgpack.Packer(use_bin_type=True).pack
    packed = b"".join(pack([t, f]) for t, f in items)
    pieces = [packed[i:i + frame] for i in range(0, len(packed), frame)]
    mb = len(packed) / 1e6

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.kfdtrace")
        stats: dict[str, int] = {}

        def write() -> None:
            with TraceWriter(path, {"bench": True}, level=args.level, frame_bytes=frame) as w:
                record = w.record
                for t, f in items:
                    record(t, **f)
            stats.update(w.stats)

        writer_s = best_of(write, args.repeat)

    def pack_only() -> None:
        buf = bytearray()
        for t, f in items:
            buf += pack([t, f])

    def raw_zstd() -> None:
        z = zstandard.ZstdCompressor(level=args.level)
        stored.clear()
        stored.extend(len(z.compress(p)) for p in pieces)

    stored: list[int] = []
    pack_s = best_of(pack_only, args.repeat)
    zstd_s = best_of(raw_zstd, args.repeat)
    print(f"{args.records} records, {mb:.1f} MB packed ({len(packed) / args.records:.0f} B/record), zstd level "
          f"{args.level}, {args.frame_kib} KiB frames, best of {args.repeat}")
    print(f"writer:    {mb / writer_s:7.1f} MB/s  {writer_s * 1e9 / args.records:6.0f} ns/record  file "
          f"{stats['file_bytes'] / 1e6:.2f} MB in {stats['frames']} frames, ratio "
          f"{len(packed) / stats['file_bytes']:.2f}x")
    print(f"pack only: {mb / pack_s:7.1f} MB/s  {pack_s * 1e9 / args.records:6.0f} ns/record")
    print(f"raw zstd:  {mb / zstd_s:7.1f} MB/s  {zstd_s * 1e9 / args.records:6.0f} ns/record  "
          f"{sum(stored) / 1e6:.2f} MB, ratio {len(packed) / sum(stored):.2f}x")
    print(f"writer time = {writer_s / zstd_s:.1f}x raw zstd, {writer_s / (pack_s + zstd_s):.2f}x pack + zstd")


if __name__ == "__main__":
    main()
