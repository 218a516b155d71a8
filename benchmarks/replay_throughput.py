"""Replay engine throughput, measured side by side in one run.

    python benchmarks/replay_throughput.py [--packets 300000] [--target gfx1100]

1. Packets per second through decode + relocate + re-encode (no execution) for a large SDMA stream, both
   within one dialect (sdma4.4 -> sdma4.4) and across (sdma4.4 -> sdma6, sdma6 -> sdma4.4), of one submission's
   packets repeated (targets: >= 1M/s) and of packets all distinct (>= 400k/s), the distinct ones side by side
   with the general way (every packet's fields decoded, relocated into a new dict and encoded, as
   `Translator.packet` does). Best of --repeat runs: one run of a shared machine swings by half.
2. End-to-end: the sdma_stress workload recorded on the emulator, then replayed; replay time against the
   capture's own run time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))

from sdma_stress import stress  # noqa: E402
from timing import best_of  # noqa: E402

from kfdtrace.capture import record  # noqa: E402
from kfdtrace.driver import System  # noqa: E402
from kfdtrace.driver.sdma import DIALECTS  # noqa: E402
from kfdtrace.replay.engine import Options  # noqa: E402
from kfdtrace.replay.session import replay_trace  # noqa: E402
from kfdtrace.replay.translate import Relocation, Translator  # noqa: E402

BASE, SIZE, MOVED = 0x7F00_0000_0000, 64 << 20, 0x5500_0000_0000


def unit(d, i: int = 0) -> bytes:
    """A submission-like mix: copy, two fences, a poll and a trap; `i` moves every address (distinct packets)."""
    at = BASE + 64 * i
    return (d.build("COPY_LINEAR", count=4095, src=at, dst=at + 0x100000)
            + d.build("FENCE", addr=at + 0x200000, data=7) + d.build("FENCE", addr=at + 0x200004, data=0)
            + d.build("POLL_REGMEM", addr=at + 0x200008, ref=3, mask=0xFFFFFFFF, func=5, mem_poll=1,
                      retry_count=0xFFF) + d.build("TRAP", int_context=4 + i % 2))


def stream(dialect, n: int, distinct: bool = False) -> bytes:
    """n packets: the mix repeated, or (distinct) with every packet's addresses different."""
    d = DIALECTS[dialect]
    if distinct:
        return b"".join(unit(d, i) for i in range(n // 5))
    return unit(d) * (n // 5)


def codec(src: str, dst: str, n: int, repeat: int, distinct: bool = False, general: bool = False) -> float:
    """Packets per second translating `n` packets from `src` to `dst` (a fresh translator per run); `general`:
    each packet decoded and translated the general way, `Translator.packet`."""
    relocation = Relocation()
    relocation.add(BASE, SIZE, MOVED)
    data = stream(src, n, distinct)

    def run() -> None:
        t = Translator(DIALECTS[src], DIALECTS[dst], 1 << 30, relocation)
        if general:
            assert b"".join(b for p in t.src.iter_packets(data) for b in t.packet(p, "bench"))
        else:
            assert t.ring(data, "bench")

    return (n // 5 * 5) / best_of(run, repeat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=300_000)
    ap.add_argument("--target", default="gfx1100")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    for distinct, target in ((False, "1M, repeated packets"), (True, "400k, all distinct")):
        for src, dst in (("sdma4.4", "sdma4.4"), ("sdma4.4", "sdma6"), ("sdma6", "sdma4.4"), ("sdma6", "sdma7")):
            rate = codec(src, dst, args.packets, args.repeat, distinct)
            line = f"decode+relocate+encode {src:7s} -> {dst:7s}: {rate / 1e3:7.0f}k packets/s (target >= {target})"
            if distinct:
                general = codec(src, dst, args.packets, args.repeat, distinct, general=True)
                line += f"; the general way {general / 1e3:4.0f}k, {rate / general:.1f}x"
            print(line)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "stress.kfdtrace")
        with record(path), System.open(emulate="gfx942") as system:
            t0 = time.perf_counter()
            stress(system, 300, 64 << 10)
            captured = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = replay_trace(path, Options(), emulate=args.target)
        total = time.perf_counter() - t0
        r = report.results[0]
        print(f"end to end: capture run {captured * 1e3:.1f} ms on gfx942; "
              f"replay on {args.target} {r.seconds * 1e3:.1f} ms "
              f"({total * 1e3:.1f} ms with checking and set-up), {r.packets} packets, status {report.status}, "
              f"ratio {r.seconds / captured:.2f}x")


if __name__ == "__main__":
    main()
