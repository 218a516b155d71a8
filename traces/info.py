"""What a trace holds, in a few lines: `capture run`'s closing summary and `kfdtrace info`."""

from __future__ import annotations

import os
from collections import defaultdict

from kfdtrace.traces import records as R
from kfdtrace.traces.format import TraceReader


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 10_000 else f"{n} bytes"


def format_packets(packets: dict[str, int]) -> list[str]:
    """'sdma6: COPY_LINEAR 400, FENCE 800' per engine dialect, most frequent first."""
    by_engine: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for key, n in packets.items():
        engine, _, op = key.partition(":")
        by_engine[engine].append((op, n))
    return [f"{engine}: " + ", ".join(f"{op} {n}" for op, n in sorted(ops, key=lambda x: -x[1]))
            for engine, ops in sorted(by_engine.items())]


def format_summary(s: dict) -> list[str]:
    """The lines of a recording's summary (a Recorder.close() result, or a trace's stored summary)."""
    status = s.get("exit_status")
    lines = [f"duration {s['duration_ns'] / 1e9:.3f} s" + (f", workload exit status {status}" if status is not None
                                                            else ""),
             f"{s['ioctls']} ioctls, {s['submissions']} submissions, {s['checkpoints']} checkpoints, "
             f"{s['buffers']} buffers"]
    if s.get("failed_ioctls"):
        lines.append("failed ioctls: " + ", ".join(f"{what} x{n}" for what, n in sorted(s["failed_ioctls"].items())))
    packets = s.get("packets") or {}
    lines.append(f"{sum(packets.values())} packets" + (":" if packets else ""))
    lines += [f"  {line}" for line in format_packets(packets)]
    if s.get("kernels"):
        lines.append("kernels dispatched: " + ", ".join(f"{k} {n}" for k, n in sorted(s["kernels"].items(),
                                                                                     key=lambda x: -x[1])))
    if s.get("racy"):
        lines.append("left out of checkpoints, decided by a race between queues: " + "; ".join(s["racy"]))
    lines.append(f"CPU-write payload {_mb(s['payload_bytes'])}")
    if "trace_file_bytes" in s:
        raw, packed = s["trace_raw_bytes"], max(1, s["trace_compressed_bytes"])
        lines.append(f"trace {_mb(s['trace_file_bytes'])}: {s['trace_records']} records in {s['trace_frames']} "
                     f"frames, {s['trace_blobs']} blobs ({s['trace_dedup_hits']} deduplicated), "
                     f"compression {raw / packed:.1f}x")
    return lines


def _header_lines(h: dict) -> list[str]:
    lines = []
    if h.get("name"):
        lines.append(f"name: {h['name']}")
    lines.append(f"command: {' '.join(h.get('command') or [])}")
    host = h.get("host") or {}
    kfd = h.get("kfd_version")
    lines.append(f"recorded {h.get('created')} on {h.get('backend')} backend, kernel {host.get('kernel')}, "
                 f"KFD interface {'.'.join(map(str, kfd)) if kfd else 'unknown'}")
    for g in h.get("gpus") or []:
        lines.append(f"  GPU node {g['node']} id {g['gpu_id']:#06x}: {g['target']} ({g['family']}, "
                     f"{g['sdma']}, {g['pm4']})")
    return lines


def facts(path: str, check: bool = False, shown: str | None = None) -> dict:
    """What `kfdtrace info` tells, as data: the header, the summary and the index's counts, read without
    decoding the records (`check`: also read and verify every frame, and check every record against the record
    table). Header and summary are checked against their tables; bytes in them stay bytes. `shown`: the path to
    give for it (a bundle's, for the trace extracted from it)."""
    with TraceReader(path) as r:
        out = {"path": shown or path, "format": f"{r.version[0]}.{r.version[1]}",
               "header": R.check_map(f"{path}: the header", r.header, R.HEADER),
               "recovered": r.recovered, "recovery_note": r.recovery_note or None,
               "summary": R.check_map(f"{path}: the summary", r.summary, R.SUMMARY) if r.summary else None,
               "records": r.record_count, "submissions": r.submissions,
               "counts": dict(sorted(r.counts.items(), key=lambda x: -x[1])), "file_bytes": os.path.getsize(path)}
        if check:
            out["checked"] = {"frames": r.verify(), "records": _checked(r)}
        return out


def _checked(r: TraceReader) -> int:
    """How many records `r` holds, each checked against the record table (and a checkpoint's entries against
    their keys); MalformedRecord at the first that is not."""
    n = 0
    for rec in R.checked(r.records()):
        if rec.type == R.CHECKPOINT and (why := R.checkpoint_problem(rec, r.blob_key, r.has_blob)):
            raise R.MalformedRecord(why)
        known = R.RECORD_TYPES.get(rec.type)  # (a type of a later format passes unchecked)
        for name in known.blobs if known is not None else ():  # campaign 88: a lost blob named passed the check
            if not r.has_blob(key := rec.fields[name]):
                raise R.MalformedRecord(f"record {rec.n} ({rec.type}): its {name} names blob {key.hex()}, which the "
                                        f"trace lacks (corrupt trace)")
        n += 1
    return n


def describe(path: str, check: bool = False, shown: str | None = None) -> list[str]:
    """`kfdtrace info`: `facts` in a few lines."""
    f = facts(path, check, shown)
    h = f["header"]
    lines = [f"{f['path']}: kfdtrace trace format {f['format']}, written by kfdtrace {h.get('kfdtrace_version')}"]
    lines += _header_lines(h)
    if f["recovered"]:
        lines.append(f"RECOVERED: {f['recovery_note']}")
    if f["summary"]:
        lines += format_summary(f["summary"])
    lines.append(f"{f['records']} records, {f['submissions']} submissions; by type: "
                 + ", ".join(f"{t} {n}" for t, n in f["counts"].items()))
    lines.append(f"file {_mb(f['file_bytes'])}")
    if check:
        lines.append(f"checked: all {f['checked']['frames']} frames are intact, and all {f['checked']['records']} "
                     "records are well-formed")
    return lines
