"""`kfdtrace redact`: a copy of a trace fit to attach to a public bug report.

What goes: the command line (it names files and arguments), the trace's name, host facts beyond kernel,
machine, system and Python versions (HOST_KEPT), file paths in notes, the topology's unique ids; and, unless
`keep_data`, the contents of CPU writes that nothing the replay checks depends on: those to buffers no packet
reads and no checkpoint hashes, replaced by a deterministic fill of the same size. What stays, and is said: the contents
the GPU reads or the checkpoints verify (replacing them would make the replay differ), device paths, and the
names the program gave its buffers, queues and threads.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections import Counter
from dataclasses import dataclass, field

from kfdtrace.traces import records as R
from kfdtrace.traces.contents import KnownMemory, called, chunk_size
from kfdtrace.traces.format import Record, TraceReader, TraceWriter
from kfdtrace.traces.rewrite import TraceCopy
from kfdtrace.traces.trim import NOTE_SOURCE
from kfdtrace.traces.walk import TraceState

HOST_KEPT = ("kernel", "machine", "system", "python")
TOPOLOGY_IDS = ("unique_id", "hive_id")  # node properties that identify a part (serial-like), not its kind
FILL = b"kfdtrace redacted "
# a file path inside a text: absolute (a file:// URL's too), relative through a folder ("runs/acme.kfdtrace":
# campaign 94), a Windows one, or a trace's or bundle's own name
PATH = re.compile(r"(?<![\w.+@-])(?:/+(?:[\w.+@-]+/)*[\w.+@-]+|(?:[\w.+@-]+/)+[\w.+@-]+"
                  r"|[A-Za-z]:\\(?:[^\\\s]+\\)*[^\\\s]+|[\w.+@-]+\.(?i:kfdtrace|tar\.zst))")
DEVICES = re.compile(r"/dev/(kfd|dri/\w+)$")
FILES = (R.OPEN, R.CLOSE, R.MMAP, R.MUNMAP)  # records naming a file the workload opened: device paths stay


@dataclass
class RedactReport:
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    def note(self, where: list[str], line: str) -> None:
        """Add `line` to `where` (removed or kept) unless it is there already (a backend record repeats the
        header's machine)."""
        if line not in where:
            where.append(line)

    def lines(self) -> list[str]:
        return [*(f"removed: {x}" for x in self.removed), *(f"kept: {x}" for x in self.kept)]


def fill(size: int) -> bytes:
    return (FILL * (size // len(FILL) + 1))[:size]


def redact_header(header: dict, report: RedactReport) -> dict:
    """The header with what kfdtrace knows it holds (records.HEADER) alone, redacted."""
    h = {k: v for k, v in header.items() if k in R.HEADER}
    unknown = sorted(str(k) for k in header if k not in R.HEADER)
    if unknown:
        report.note(report.removed, f"header entries kfdtrace does not know (it cannot tell what they hold): "
                                    f"{', '.join(unknown)}")
    if h.get("command"):
        report.removed.append(f"the command line ({len(h['command'])} arguments)")
        h["command"] = None
    if h.get("name"):  # the program's or the trace file's name, or the one given to capture: it may say whose
        report.removed.append("the trace's name")
        h["name"] = None
    return redact_machine(h, report)


def redact_machine(h: dict, report: RedactReport) -> dict:
    """The header's (or a `backend` record's) machine description without host names and hardware ids."""
    h = dict(h)
    host = h.get("host")
    if isinstance(host, dict):
        gone = sorted(str(k) for k in host if k not in HOST_KEPT)
        h["host"] = {k: v for k, v in host.items() if k in HOST_KEPT}
        if gone:
            report.note(report.removed, f"host facts: {', '.join(gone)}")
        report.note(report.kept, f"host {', '.join(k for k in HOST_KEPT if k in h['host'])} (replay and triage use "
                                 f"them)")
    topology = h.get("topology")
    if isinstance(topology, dict) and isinstance(topology.get("nodes"), list):
        ids = 0
        nodes = []
        for node in topology["nodes"]:
            props = node.get("properties") if isinstance(node, dict) else None
            if isinstance(props, dict):
                ids += sum(1 for k in TOPOLOGY_IDS if props.get(k))
                node = {**node, "properties": {k: (0 if k in TOPOLOGY_IDS else v) for k, v in props.items()}}
            nodes.append(node)
        h["topology"] = {**topology, "nodes": nodes}
        if ids:
            report.note(report.removed, f"hardware ids from the topology ({', '.join(TOPOLOGY_IDS)})")
    return h


def _paths(text: str) -> tuple[str, int]:
    n = 0

    def hide(m: re.Match) -> str:
        nonlocal n
        if DEVICES.match(m.group(0)):
            return m.group(0)
        n += 1
        return "<path>"

    return PATH.sub(hide, text), n


def _needed(trace: TraceReader) -> set[int]:
    """The alloc record numbers of buffers whose contents the replay depends on: read by a packet (an address
    it holds and does not write, in an indirect buffer it calls too), by a dispatch (any buffer live then: a
    kernel reads through addresses it is given by value or finds in memory, not only through its pointer
    arguments), or hashed by a checkpoint. A buffer made where one a packet read was freed is needed too: a packet
    queued before the free may read it (campaign 115)."""
    state, owner, needed = TraceState(trace.header), {}, set()  # owner: buffer va -> its alloc record number
    memory = KnownMemory(state, chunk_size(trace), trace.blob, trace)  # the kernel arguments dispatches are read from
    freed_read: list[tuple[int, int]] = []  # [start, end) of each buffer freed after a packet read it
    for r in R.checked(trace.records()):
        if r.type == R.FREE and (b := state.buffers.get(r.fields["handle"])) is not None and \
                owner.get(b.va) in needed:
            freed_read.append((b.va, b.va + b.size))
        sub = state.apply(r)
        if r.type == R.ALLOC:
            owner[r.fields["va"]] = r.n
            va, end = r.fields["va"], r.fields["va"] + r.fields["size"]
            if any(lo < end and va < hi for lo, hi in freed_read):
                needed.add(r.n)
        elif r.type == R.CHECKPOINT:
            needed.update(owner[b.va] for e in r.fields["buffers"] if (b := state.buffer_at(e["va"])) and b.va in owner)
        if sub is None:
            memory.apply(r, None)
            continue
        try:  # with the packets of the indirect buffers they call, which read memory too
            packets = [x for p in sub.packets
                       for x in ([p, *called(memory, state, sub, p)] if p.defn.indirect is not None else [p])]
        except ValueError:  # an indirect buffer the trace does not hold could read anything
            needed.update(owner.values())
            continue
        for p in packets:
            access = memory.access(sub, p)
            if isinstance(access, str):  # a kernel not known could read anything
                needed.update(owner.values())
                continue
            if access is not None:  # a kernel reads what it can name: addresses passed by value or kept in memory too
                needed.update(owner[b.va] for b in state.buffers.values() if b.va in owner)
                continue
            for addr, size in p.read_ranges() + [(a, None) for a in (access.reads if access else [])]:
                # (a copy may run on into the next buffer)
                needed.update(owner[b.va] for b in state.buffers_over(addr, size) if b.va in owner)
        if sub.error:  # packets it holds that were not read could read anything
            needed.update(owner.values())
    return needed


def _size(trace: TraceReader, r: Record) -> int:
    """The size of the CPU write `r` (a `mem` record), which its blob must hold exactly (not what the record
    claims alone: a hostile one claims 2**63 bytes)."""
    size = len(trace.blob(r.fields["key"]))
    if size != r.fields["size"]:
        raise ValueError(f"record {r.n} (mem) claims {r.fields['size']} bytes, its blob holds {size} (corrupt trace)")
    return size


def redact(trace: TraceReader, out: str, keep_data: bool = False) -> RedactReport:
    """Write the redacted copy of `trace` to `out`; what was removed and what was kept."""
    report = RedactReport()
    needed = set() if keep_data else _needed(trace)
    filled = kept = paths = 0
    debug: Counter[bool | None] = Counter()  # code objects with debug information zeroed, without, unreadable
    try:
        with TraceWriter(out, redact_header(trace.header, report), clock=trace.clock, delta=trace.delta,
                         submission_type=trace.submission_type) as w:
            copy, state, owner = TraceCopy(trace, w), TraceState(trace.header), {}
            for r in R.checked(trace.records()):
                sub = state.apply(r)
                if r.type == R.ALLOC:
                    owner[r.fields["va"]] = r.n
                if r.type == R.MEM and not keep_data:
                    b = state.buffer_at(r.fields["va"])
                    if b is not None and owner.get(b.va) in needed:
                        kept += 1
                    else:
                        copy.record(r.type, r.fields, data=fill(_size(trace, r)))
                        filled += 1
                        continue
                elif r.type == R.NOTE:
                    text, trimmed = NOTE_SOURCE.subn("<path>", r.fields["text"])  # trim's source, spaces and all
                    text, n = _paths(text)
                    paths += n + trimmed
                    copy.record(r.type, {**r.fields, "text": text})
                    continue
                elif r.type == R.BACKEND:
                    copy.record(r.type, redact_machine(r.fields, report))
                    continue
                elif r.type == R.CODE_OBJECT:
                    data, n = _without_debug_info(trace.blob(r.fields["key"]))
                    debug[n > 0 if n is not None else None] += 1
                    copy.record(r.type, r.fields, data=data if n else None)
                    continue
                elif r.type in FILES and isinstance(r.fields["path"], str):
                    path, n = _paths(r.fields["path"])
                    paths += n
                    copy.record(r.type, {**r.fields, "path": path}, sub)
                    continue
                copy.record(r.type, r.fields, sub)
            # every record is kept: what the summary says of them holds (the queues left with work, which a replay
            # lets stand still, above all)
            w.close(copy.summary(keep=("exit_status", "kernels", "racy", "failed_ioctls", "undrained")))
    except BaseException:
        with contextlib.suppress(OSError):  # a redacted copy of part of a trace would pass for the whole
            if os.path.isfile(out):
                os.unlink(out)
        raise
    if paths:
        report.removed.append(f"{paths} file paths (in notes, and of files the workload opened)")
    if keep_data:
        report.kept.append("every CPU write's contents (--keep-data)")
    else:
        report.removed.append(f"the contents of {filled} CPU-written chunks nothing reads or checks (filled with "
                              f"{FILL.decode().strip()!r})")
        if kept:
            report.kept.append(f"the contents of {kept} CPU-written chunks of buffers the GPU may read or a "
                               "checkpoint verifies (the replay depends on them; a write the GPU overwrites or never "
                               "reads after is kept with the rest of its buffer's; once a trace runs a kernel, every "
                               "live buffer counts: a kernel may read any buffer whose address it can find)")
    if debug[True]:
        report.removed.append(f"the debug information of {debug[True]} code objects (the build's paths and source "
                              f"file names; their code and metadata are kept, and their hashes change)")
    if debug[None]:
        report.kept.append(f"{debug[None]} code objects as they were: their ELF section headers cannot be read, so "
                           f"whatever debug information they hold stays")
    report.kept.append("device paths, the names the program gave its buffers, queues and threads, and the kernels' "
                       "names")
    return report


def _without_debug_info(data: bytes) -> tuple[bytes, int | None]:
    """A code object without its DWARF contents (zeroed bytes: driver/code_object.py); n None: unreadable."""
    from kfdtrace.driver.code_object import CodeObjectError, without_debug_info

    try:
        return without_debug_info(data)
    except CodeObjectError:
        return data, None
