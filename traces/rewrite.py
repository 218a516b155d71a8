"""Writing a trace made from another's records (`kfdtrace trim`, `minimize`, `redact`): the blobs its records
name, copied once under the new trace's keys, and the summary capture would have written for them."""

from __future__ import annotations

from collections import Counter

from kfdtrace.traces import records as R
from kfdtrace.traces.format import TraceReader, TraceWriter
from kfdtrace.traces.walk import Submission


class TraceCopy:
    """Records of `trace` (or made from them) written to `w`, with what a summary counts."""

    def __init__(self, trace: TraceReader, w: TraceWriter):
        self.trace, self.w = trace, w
        self.keys: dict[bytes, bytes] = {}  # the source's blob keys -> the new trace's
        self.counts: Counter[str] = Counter()
        self.packets: Counter[str] = Counter()
        self.payload = 0
        self.first_t: int | None = None
        self.last_t: int | None = None

    def key(self, old: bytes) -> bytes:
        """The new trace's key of the source's blob `old`, copying it the first time."""
        new = self.keys.get(old)
        if new is None:
            new = self.keys[old] = self.w.blob(self.trace.blob(old))
        return new

    def record(self, type_: str, fields: dict, sub: Submission | None = None, data: bytes | None = None) -> None:
        """Write a record (its blobs copied); `sub`: what a doorbell submitted, for the packet counts; `data`: a
        `mem` record's, or a code object's, new contents."""
        fields = dict(fields)
        if type_ == R.MEM:
            fields["key"] = self.key(fields["key"]) if data is None else self.w.blob(data)
            self.payload += fields["size"]
        elif type_ == R.CODE_OBJECT:
            fields["key"] = self.key(fields["key"]) if data is None else self.w.blob(data)
        elif type_ == R.CHECKPOINT:
            fields["buffers"] = [{**b, "keys": [self.key(k) for k in b["keys"]]} for b in fields["buffers"]]
        t = fields.get("t")
        if type(t) is int:
            self.first_t = t if self.first_t is None else min(self.first_t, t)
            self.last_t = t if self.last_t is None else max(self.last_t, t)
        if sub is not None and sub.queue is not None and sub.queue.dialect is not None:
            self.packets.update(f"{sub.queue.dialect.name}:{p.name}" for p in sub.packets)
        self.counts[type_] += 1
        self.w.record_fields(type_, fields)  # fields named by any key a trace may hold (not only strs)

    def summary(self, keep: tuple[str, ...] = ()) -> dict:
        """The summary capture would write for these records (the writer's figures as of before the index), with
        the source summary's `keep` fields, which still hold of them, as they were."""
        self.w.write_frames()
        c = self.counts
        source = self.trace.summary or {}
        return {"duration_ns": (self.last_t - self.first_t) if self.first_t is not None else 0,
                "ioctls": c[R.IOCTL], "submissions": c[R.DOORBELL], "checkpoints": c[R.CHECKPOINT],
                "buffers": c[R.ALLOC], "packets": dict(self.packets), "payload_bytes": self.payload,
                "exit_status": None, **{k: source[k] for k in keep if k in source},
                **{f"trace_{k}": v for k, v in self.w.stats.items()}}
