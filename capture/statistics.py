"""A recording's summary figures, read back from the frames written (kept off the submission path)."""

from __future__ import annotations

from collections import Counter

from kfdtrace.driver.packets import Dialect, PacketError
from kfdtrace.driver.sdma import DIALECTS
from kfdtrace.traces import records as R
from kfdtrace.traces.format import TraceError, TraceReader


def packet_counts(path: str) -> tuple[dict[str, int], str | None]:
    """'dialect:NAME' -> count of every submitted packet in the trace at `path` (flushed), and what stopped the
    count early (None when nothing did)."""
    counts: Counter[str] = Counter()
    dialects: dict[int, Dialect | None] = {}
    try:
        with TraceReader(path) as trace:
            for r in trace.records({R.QUEUE, R.DOORBELL}):
                if r.type == R.QUEUE:
                    dialects[r.fields["queue"]] = DIALECTS.get(r.fields["dialect"] or "")
                elif (d := dialects.get(r.fields["queue"])) is not None:
                    counts.update(f"{d.name}:{p.name}" for p in d.iter_packets(r.fields["ring"]))
    except (TraceError, PacketError) as exc:
        counts["undecodable"] = 1
        return dict(counts), f"packet statistics incomplete: {exc}"
    return dict(counts), None
