"""Packet codec throughput: decode, encode and decode+relocate+encode rates over a mixed SDMA stream, and the
microseconds one build or decode of each kind of packet takes, side by side with the general way (build: a Packet
made and encoded; decode: with every field read, the work decode did before its fields were read on demand).

Run: python benchmarks/packet_codec.py [dialect] [packets]
"""

from __future__ import annotations

import sys
import time
import timeit

from kfdtrace.driver.sdma import DIALECTS, PollFunc


def mixed_stream(dialect_name: str, n: int) -> bytes:
    """n packets cycling COPY_LINEAR, FENCE, POLL_REGMEM, TRAP with changing addresses."""
    d = DIALECTS[dialect_name]
    out = []
    for i in range(n // 4):
        va = 0x7F00_0000_0000 + (i << 12)
        out.append(d.build("COPY_LINEAR", count=0xFFF, src=va, dst=va + 0x20_0000))
        out.append(d.build("FENCE", addr=va + 0x40_0000, data=i & 0xFFFF_FFFF))
        out.append(d.build("POLL_REGMEM", func=PollFunc.GE, mem_poll=1, addr=va + 0x40_0000, ref=i,
                           mask=0xFFFF_FFFF, interval=4, retry_count=0xFFF))
        out.append(d.build("TRAP", int_context=i & 0xFFF_FFFF))
    return b"".join(out)


def rate(label: str, n: int, fn) -> float:
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    r = n / best
    print(f"{label:<28} {r / 1e3:8.0f} k packets/s")
    return r


# (packet, fields) the per-kind lines build and decode: a copy, a semaphore signal and a wait, a trap
KINDS = (("COPY_LINEAR", dict(count=63, src=0x7F00_0000_1000, dst=0x7F00_0020_0000)),
         ("FENCE", dict(addr=0x7F00_0040_0000, data=1)),
         ("POLL_REGMEM", dict(func=PollFunc.GE, mem_poll=1, addr=0x7F00_0040_0000, ref=1, mask=0xFFFF_FFFF,
                              interval=4, retry_count=0xFFF)),
         ("TRAP", dict(int_context=5)))


def us(stmt: str, names: dict, number: int = 20_000, repeat: int = 7) -> float:
    """Microseconds one run of `stmt` (over `names`) takes, best of `repeat` runs."""
    return min(timeit.repeat(stmt, globals=names, number=number, repeat=repeat)) / number * 1e6


def per_kind(d) -> None:
    """Build and decode of each kind of packet: the way taken now against the general way, side by side."""
    print(f"{'us per packet':<14}{'build':>8}{'general':>9}{'ratio':>7}{'decode':>9}{'+fields':>9}{'ratio':>7}")
    for name, kw in KINDS:
        ns = {"d": d, "name": name, "kw": kw, "raw": d.build(name, **kw)}
        built, general = us("d.build(name, **kw)", ns), us("d.packet(name, **kw).encode()", ns)
        decoded, read = us("d.decode(raw)", ns), us("d.decode(raw).fields", ns)
        print(f"{name:<14}{built:8.2f}{general:9.2f}{general / built:6.1f}x{decoded:9.2f}{read:9.2f}"
              f"{read / decoded:6.1f}x")


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "sdma6"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
    d = DIALECTS[name]
    stream = mixed_stream(name, n)
    packets = list(d.iter_packets(stream))
    assert len(packets) == n and b"".join(p.encode() for p in packets) == stream
    delta = 0x1000_0000

    def decode() -> None:
        for _ in d.iter_packets(stream):
            pass

    def encode() -> None:
        for p in packets:
            p.encode()

    def replace() -> None:  # the generic way: read the tagged addresses, replace them
        out = []
        for p in d.iter_packets(stream):
            moved = {k: v + delta for k, v in p.addresses().items()}
            out.append((p.replace(**moved) if moved else p).encode())
        b"".join(out)

    def relocate() -> None:  # Packet.relocate: the same, in one call
        def move(va: int) -> int:
            return va + delta
        b"".join([p.relocate(move).encode() for p in d.iter_packets(stream)])

    print(f"{name}: {n} packets, {len(stream)} bytes (COPY_LINEAR/FENCE/POLL_REGMEM/TRAP)")
    rate("decode", n, decode)
    rate("encode", n, encode)
    rate("decode+replace+encode", n, replace)
    rate("decode+relocate+encode", n, relocate)
    per_kind(d)


if __name__ == "__main__":
    main()
