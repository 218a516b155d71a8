"""`kfdtrace dump`: every record of a trace decoded, in stream order, streamed one record at a time.

Ioctls show their argument structs by field name (enums and flags by name, kfd_ioctl.MEANINGS), the ioctl's
end only the fields the kernel changed; doorbells show the packets they submitted, by the packet tables'
names, with each address they hold named by the buffer it lands in; memory records and checkpoints name
their buffers. `--json` gives the same as one JSON object per record (bytes in hex).
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

from kfdtrace.driver.packets import Dialect, Packet, PacketDef
from kfdtrace.driver.pm4 import Pm4Dialect
from kfdtrace.replay.compute import Access
from kfdtrace.traces import records as R
from kfdtrace.traces.contents import KnownMemory, chunk_size, is_data
from kfdtrace.traces.format import Record, TraceError, TraceReader
from kfdtrace.traces.printable import printable
from kfdtrace.traces.walk import Submission, TraceState, ioctl_args, ioctl_entry, reads, register_pointers

# The --kind groups, by record type; types no group names are "other".
KINDS: dict[str, frozenset[str]] = {
    "ioctl": frozenset({R.IOCTL, R.IOCTL_END, R.OPEN, R.CLOSE, R.MMAP, R.MUNMAP, R.ALLOC, R.BUFFER, R.MAP, R.UNMAP,
                        R.CPU_MAP, R.FREE, R.QUEUE, R.QUEUE_NAME, R.QUEUE_DESTROY}),
    "packet": frozenset({R.DOORBELL}),
    "memory": frozenset({R.MEM, R.CHECKPOINT}),
    "sync": frozenset({R.CPU_SIGNAL, R.CPU_WAIT, R.SIGNAL_WAIT, R.EVENT, R.EVENT_DESTROY, R.EVENT_SET, R.EVENT_RESET,
                       R.EVENT_WAIT}),
}
KINDS["other"] = frozenset(R.RECORD_TYPES) - frozenset().union(*KINDS.values())
QUEUE_TYPES = frozenset({R.DOORBELL, R.QUEUE, R.QUEUE_NAME, R.QUEUE_DESTROY})
MAX_BUFFER_BYTES = 4 << 30  # what --buffers writes at most: a trace can name one blob any number of times
MAX_DEPTH = 16  # lists and maps shown inside one another; a trace is untrusted, and Python's recursion bounded
TOO_DEEP = f"(nested deeper than {MAX_DEPTH})"
MAX_SHOWN = 1 << 12  # packets whose words `Dumper.lines` keeps for the next like it


class DumpError(TraceError):
    """A dump that cannot go on (a range or a directory that makes no sense, the --buffers limit)."""


@dataclass(frozen=True)
class Selection:
    """Which records to show: `submits` (first, last) submission numbers, inclusive, with the records around
    them (from those after submission first-1 to those before submission last+1); `queue`: of the records
    that name a queue, only that queue's; `kinds`: only these groups of KINDS."""

    submits: tuple[int, int] | None = None
    queue: int | None = None
    kinds: frozenset[str] | None = None

    def types(self) -> frozenset[str] | None:
        return None if self.kinds is None else frozenset().union(*(KINDS[k] for k in self.kinds))


OPEN_END = 1 << 63  # the last of a range 'A..': up to the trace's last submission


def parse_range(text: str) -> tuple[int, int]:
    """'A..B' (inclusive), 'A..' (last OPEN_END) or '..B', or 'A' alone, as (first, last)."""
    m = re.fullmatch(r"\s*(\d*)\s*(\.\.)?\s*(\d*)\s*", text)
    if not m or not (m[1] or m[3]) or (not m[2] and not m[1]):
        raise ValueError(f"submission range {text!r}: give A..B, A.., ..B or A (submission numbers from 0)")
    first = int(m[1]) if m[1] else 0
    last = (int(m[3]) if m[3] else OPEN_END) if m[2] else first
    if last < first:
        raise ValueError(f"submission range {text!r}: {last} is before {first}")
    return first, last


FLOATS = {"float": struct.Struct("<f"), "double": struct.Struct("<d")}  # by-value arguments shown as numbers


def _plain(value: Any, depth: int = 0) -> Any:
    """A record's field value as JSON can hold it: bytes as hex, map keys as strs; what is nested deeper than
    MAX_DEPTH (a hostile trace's) as a note saying so."""
    if type(value) is bytes:
        return value.hex()
    if type(value) in (list, dict) and depth >= MAX_DEPTH:
        return TOO_DEEP
    if type(value) is list:
        return [_plain(v, depth + 1) for v in value]
    if type(value) is dict:
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    return value


class Dumper:
    """Turns a trace's records into entries (dicts, JSON-ready) and text lines."""

    def __init__(self, trace: TraceReader, selection: Selection = Selection(), buffers: str | None = None):
        self.trace, self.sel = trace, selection
        self.state = TraceState(trace.header)
        self.buffers_dir = buffers
        self.written = 0  # bytes --buffers wrote
        self._types = selection.types()
        self._chunk = chunk_size(trace)
        # what each buffer holds as the records go: with --buffers, for the inputs of each packet; in a trace of
        # kernels, for the arguments of each dispatch
        follow = buffers is not None or bool(trace.counts.get(R.CODE_OBJECT))
        self.memory = KnownMemory(self.state, self._chunk, trace.blob, trace) if follow else None
        self.arguments: dict[int, list[tuple[str, object, str | None]]] = {}  # the doorbell's dispatches' arguments
        if buffers is not None:
            os.makedirs(buffers, exist_ok=True)

    def entries(self) -> Iterator[dict]:
        """The selected records as entries, in stream order."""
        for r, sub in self.selected():
            yield self.entry(r, sub)

    def lines(self) -> Iterator[list[str]]:
        """The selected records as text, a list of lines each, in stream order."""
        state = self.state
        where, find = state.where, state.by_va.find
        shown: dict[tuple[PacketDef, tuple[int, ...]], str] = {}  # a packet's words by its dwords, while names hold
        naming = state.naming
        for r, sub in self.selected():
            f = r.fields
            if sub is None:
                yield text(self.entry(r, sub))
                continue
            q, base, launches = sub.queue, sub.base, sub.launches
            fixed = sub.fixed() if q is not None else None  # (none is cut short then)
            if fixed is None and (sub.error or q is None) or type(f["t"]) is not int or f["tid"] is None:
                out = text(self.entry(r, sub))  # its line and what went wrong, the packets decoded going after it
            else:  # a doorbell of a known queue, the most frequent record: its line worded as `text` would
                out = [f"#{r.n:<7} {f['t'] / 1e6:11.3f} ms [{f['tid']}] doorbell submission {sub.number}"
                       f"{' ' + q.name if q.name else ''} queue={f['queue']} value={_value(f['value'])}"]
            if state.naming != naming or len(shown) >= MAX_SHOWN:
                shown.clear()
                naming = state.naming
            if fixed is not None:  # a ring of fixed-size packets that launch nothing: worded from its dwords
                packets = []
                for at, d, dwords in fixed:
                    key = (d, dwords)
                    words = shown.get(key)
                    if words is None:
                        words = shown[key] = d.show(dwords, where)
                    packets.append(f"    @{base + at:#07x} {words}")
                out[1:1] = packets
                yield out
                continue
            pm4 = q is not None and isinstance(q.dialect, Pm4Dialect)
            packets = []
            for i, p in enumerate(sub.packets):
                if p.payload:
                    words = p.show(where)
                else:  # a stream repeats its packets: each is worded once
                    key = (p.defn, p.dwords)
                    words = shown.get(key)
                    if words is None:
                        words = shown[key] = p.show(where)
                line = f"    @{base + p.offset:#07x} {words}"
                if launches and i in launches:
                    args = ", ".join(f"{name}={_value(v)}" + (f" ({at})" if at else "")
                                     for name, v, at in self.arguments.get(i, ()))
                    line += f"  [runs {launches[i]}({args})]"  # not an address's name
                if pm4:
                    line += "".join(f" ({what}={va:#_x} {where(va) or 'outside every buffer'})"
                                    for what, va, _ in register_pointers(q.dialect, p, find))
                packets.append(line)
            out[1:1] = packets
            yield out

    def selected(self) -> Iterator[tuple[Record, Submission | None]]:
        """The selected records, each with what it submitted when it is a doorbell."""
        sel, state = self.sel, self.state
        first, last = sel.submits or (0, OPEN_END)
        for r in R.checked(self.trace.records()):
            before = state.submissions  # submissions before this record
            sub = state.apply(r)
            if sel.submits is not None and before > last + 1:
                return
            chosen = (sel.submits is None or (first <= sub.number <= last if sub is not None else first <= before)) \
                and (self._types is None or r.type in self._types) \
                and (sel.queue is None or r.type not in QUEUE_TYPES or r.fields.get("queue") == sel.queue)
            if self.memory is not None:
                if chosen and sub is not None and sub.launches:  # read before the submission's writes are noted
                    self.arguments = self._arguments(sub)
                if chosen and sub is not None and self.buffers_dir is not None and self.memory.understood(sub):
                    self._inputs(r.n, sub)
                else:
                    self.memory.apply(r, sub)
            if chosen:
                yield r, sub

    def entry(self, r: Record, sub: Submission | None) -> dict:
        f, known = r.fields, R.RECORD_TYPES.get(r.type)
        # the fields its type names (readers ignore others: FORMAT.md), none of them in place of the dump's own
        e: dict[str, Any] = {k if type(k) is str else str(k): _plain(v) for k, v in f.items()
                             if known is None or k in known.fields}
        e = {"n": r.n, "record": r.type, **{k: v for k, v in e.items() if k not in ("n", "record")}}
        extra = _EXTRA.get(r.type)
        if extra is not None:
            extra(self, r, e)
        if sub is not None:
            self._submission(sub, e)
        return e

    # -- what each record type adds ---------------------------------------------------------------
    def _ioctl(self, r: Record, e: dict) -> None:
        args = ioctl_args(r.fields["request"], r.fields["data"])
        if args is not None:
            e["args"] = args

    def _ioctl_end(self, r: Record, e: dict) -> None:
        begun = self.state.ended
        if begun is None:
            return
        request, data_in = begun
        entry = ioctl_entry(request)
        e["name"] = entry.name if entry else None
        data_out = r.fields["data"]
        if data_out is not None:
            before, after = ioctl_args(request, data_in), ioctl_args(request, data_out)
            if after is not None:
                e["args"] = {k: v for k, v in after.items() if before is None or before.get(k) != v}

    def _named_va(self, r: Record, e: dict) -> None:
        where = self.state.where(r.fields["va"])
        if where:
            e["where"] = where

    def _named_addr(self, r: Record, e: dict) -> None:
        where = self.state.where(r.fields["addr"])
        if where:
            e["where"] = where

    def _mem(self, r: Record, e: dict) -> None:
        self._named_va(r, e)
        if self.buffers_dir is not None:
            va, size = r.fields["va"], r.fields["size"]
            buf = self.state.buffer_at(va)
            if buf is None or va + size > buf.va + buf.size:  # one blob named by many records: written each time
                raise DumpError(f"record {r.n} (mem): bytes [{va:#x}, {va + size:#x}) are not inside one buffer "
                                f"(corrupt trace)")
            self._write_blobs(r.n, "cpu-write", e.get("where") or f"{va:#x}", [r.fields["key"]], size)

    def _checkpoint(self, r: Record, e: dict) -> None:
        for entry, out in zip(r.fields["buffers"], e["buffers"], strict=True):
            where = self.state.where(entry["va"])
            if where:
                out["where"] = where
            if self.buffers_dir is not None:
                self._write_blobs(r.n, "checkpoint", entry.get("name") or where or f"{entry['va']:#x}", entry["keys"],
                                  entry["size"])

    def _submission(self, sub: Submission, e: dict) -> None:
        e["submission"] = sub.number
        if sub.queue is not None:
            e["queue_name"] = sub.queue.name
            e["start"] = sub.base
        e["packets"] = [self._packet(p, sub.base, sub.queue.dialect if sub.queue else None) for p in sub.packets]
        for i, name in sub.launches.items():
            e["packets"][i]["kernel"] = name
            if i in self.arguments:
                e["packets"][i]["arguments"] = [{"name": n, "value": v, **({"where": at} if at else {})}
                                                for n, v, at in self.arguments[i]]
        if sub.error:
            e["error"] = sub.error

    def _packet(self, p: Packet, base: int, dialect: Dialect | None) -> dict:
        out: dict[str, Any] = {"at": base + p.offset, "name": p.name, "fields": p.fields}
        held = p.addresses()
        held.update((what, va) for what, va, _ in register_pointers(dialect, p, self.state.by_va.find))
        if held:
            out["addresses"] = {k: {"addr": v, "where": self.state.where(v)} for k, v in held.items()}
        if p.payload:
            out["payload"] = p.payload.hex()
        return out

    def _arguments(self, sub: Submission) -> dict[int, list[tuple[str, object, str | None]]]:
        """By packet index, the explicit arguments of each dispatch `sub` launches, as the trace knows them: (name,
        value: an int, a float or the bytes as hex, the buffer a pointer points into). Every packet is read, in
        order: a PM4 dispatch's kernel is the one the packets before it set up."""
        assert self.memory is not None
        found = {}
        for i, p in enumerate(sub.packets):
            access = self.memory.access(sub, p)
            if i in sub.launches and access is not None and not isinstance(access, str):
                found[i] = self._named(access)
        return found

    def _named(self, access: Access) -> list[tuple[str, object, str | None]]:
        out: list[tuple[str, object, str | None]] = []
        for arg, raw in access.arguments:
            name, value = printable(arg.name) if arg.name else f"+{arg.offset:#x}", int.from_bytes(raw, "little")
            if arg.value_kind == "global_buffer":
                out.append((name, value, self.state.where(value) if value else None))
            elif arg.type_name in FLOATS and len(raw) == FLOATS[arg.type_name].size:
                out.append((name, FLOATS[arg.type_name].unpack(raw)[0], None))
            else:  # an 8-byte one landing in a buffer is named too: an address passed as an integer, mostly
                out.append((name, value if len(raw) <= 8 else raw.hex(),
                            self.state.where(value) if len(raw) == 8 and value else None))
        return out

    # -- --buffers ---------------------------------------------------------------------------------
    def _inputs(self, n: int, sub: Submission) -> None:
        """Write what each packet of doorbell record `n` reads, where the trace knows it whole (a buffer the GPU
        wrote since its last checkpoint is not known), once per buffer, and a dispatch's kernel arguments alone
        (a slice of the buffer they are in, a queue's arena); then note what the packet writes."""
        assert self.memory is not None
        done: set[int] = set()
        for i, p in enumerate(sub.packets):
            access = self.memory.access(sub, p)
            dispatch = access if access is not None and not isinstance(access, str) else None
            if dispatch is not None and dispatch.kernargs and (hit := self.memory.at(dispatch.kernargs[0])):
                done.add(hit[0].va)
                self._write_file(n, f"in.{i}", hit[0].label, dispatch.kernargs[1])
            for addr in reads(p) + (dispatch.reads if dispatch else []):
                hit = self.memory.at(addr)
                if hit is None or hit[0].va in done or not is_data(hit[0]):
                    continue
                keys = hit[1].whole(hit[0])
                if keys is not None:
                    done.add(hit[0].va)
                    self._write_blobs(n, f"in.{i}", hit[0].label, keys, hit[0].size)
            self.memory.wrote(sub, p, access)

    def _write_blobs(self, n: int, what: str, name: str, keys: list[bytes], size: int) -> None:
        """The bytes `keys` hold, as one file named by record, what and buffer, written a blob at a time: each
        must be the piece of the `size` bytes it stands for (one key: all of them; more: the trace's chunk size,
        the last one the rest). A missing blob, one of another size or the MAX_BUFFER_BYTES limit is an
        error, and leaves no file."""
        self._check_limit(n, size)
        chunk = size if len(keys) == 1 else self._chunk or size  # what each piece holds but the last
        if len(keys) != 1 and len(keys) != -(-size // max(chunk, 1)):
            raise DumpError(f"record {n} ({what}): its {len(keys)} chunks do not make {size} bytes (corrupt trace)")
        path = self._path(n, what, name)
        try:
            with open(path, "wb") as out:
                for i, key in enumerate(keys):
                    data, want = self.trace.blob(key), min(chunk, size - i * chunk)
                    if len(data) != want:
                        raise DumpError(f"record {n} ({what}): chunk {i} holds {len(data)} bytes, not the {want} "
                                        f"of {size} it stands for (corrupt trace)")
                    out.write(data)
        except BaseException:
            os.unlink(path)
            raise
        self.written += size

    def _check_limit(self, n: int, size: int) -> None:
        if self.written + size > MAX_BUFFER_BYTES:
            raise DumpError(f"--buffers: would write more than {MAX_BUFFER_BYTES >> 30} GiB (record {n}); "
                            "dump a range with --submits")

    def _write_file(self, n: int, what: str, name: str, data: bytes) -> None:
        """`data` as one file named by record, what and buffer (the MAX_BUFFER_BYTES limit is an error)."""
        self._check_limit(n, len(data))
        with open(self._path(n, what, name), "wb") as out:
            out.write(data)
        self.written += len(data)

    def _path(self, n: int, what: str, name: str) -> str:
        assert self.buffers_dir is not None
        safe = re.sub(r"[^A-Za-z0-9_.+-]", "_", name)[:80]
        return os.path.join(self.buffers_dir, f"{n:08d}.{what}.{safe}.bin")


_EXTRA: dict[str, Callable[[Dumper, Record, dict], None]] = {
    R.IOCTL: Dumper._ioctl,
    R.IOCTL_END: Dumper._ioctl_end,
    R.FREE: Dumper._named_va,
    R.MEM: Dumper._mem,
    R.CHECKPOINT: Dumper._checkpoint,
    R.CPU_SIGNAL: Dumper._named_addr,
    R.CPU_WAIT: Dumper._named_addr,
    R.SIGNAL_WAIT: Dumper._named_addr,
}


# -- text -----------------------------------------------------------------------------------------------
_SKIP = frozenset({"n", "record", "t", "tid", "args", "packets", "where", "data", "ring", "buffers", "submission",
                   "queue_name", "start", "error", "in_flight", "racy"})


def _value(v: Any, depth: int = 0) -> str:
    if isinstance(v, dict | list) and depth >= MAX_DEPTH:
        return TOO_DEEP
    if isinstance(v, dict):
        return "{" + " ".join(f"{k}={_value(x, depth + 1)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_value(x, depth + 1) for x in v) + "]"
    if isinstance(v, bool) or not isinstance(v, int):
        return str(v)
    return f"{v:#x}" if v >= 4096 else str(v)


def text(e: dict) -> list[str]:
    """An entry as lines: the record's own line, then its checkpointed buffers or what went wrong."""
    t = e.get("t")
    head = f"#{e['n']:<7} {t / 1e6:11.3f} ms" if isinstance(t, int) else f"#{e['n']:<7} {'':14}"
    words = [head, f"[{e['tid']}]" if e.get("tid") is not None else "[-]", e["record"]]
    if e["record"] == R.DOORBELL:
        words.append(f"submission {e['submission']} {e.get('queue_name') or ''}".rstrip())
    words += [f"{k}={_value(v)}" for k, v in e.items() if k not in _SKIP and v is not None]
    if e.get("where"):
        words.append(f"({e['where']})")
    if "args" in e:
        words.append(_value(e["args"]))
    elif e["record"] in (R.IOCTL, R.IOCTL_END) and e.get("data"):
        words.append(f"data={e['data']}")
    lines = [" ".join(words)]
    for b in e.get("buffers") or ():
        lines.append(f"    {b.get('name') or b.get('where') or hex(b['va'])}: va={b['va']:#_x} size={b['size']} "
                     f"chunks={len(b['keys'])}")
    for b in e.get("in_flight") or ():
        lines.append(f"    in flight: {b.get('name') or hex(b['va'])}")
    for b in e.get("racy") or ():
        lines.append(f"    left out, a race decided it: {b.get('name') or hex(b['va'])} ({b['why']})")
    if e.get("error"):
        lines.append(f"    ({e['error']})")
    return lines


_JSON = msgspec.json.Encoder()


def to_json(value: Any) -> str:
    """`value` as one line of JSON: bytes in hex, map keys as strs."""
    return _JSON.encode(_plain(value)).decode()


def dump(trace: TraceReader, write: Callable[[str], None], selection: Selection = Selection(),
         as_json: bool = False, buffers: str | None = None) -> int:
    """Write the selected records (text lines, or JSON Lines); how many records."""
    n = 0
    dumper = Dumper(trace, selection, buffers)
    if as_json:
        encode = _JSON.encode
        for e in dumper.entries():
            n += 1
            write(encode(e).decode())  # entries are plain already
        return n
    for lines in dumper.lines():
        n += 1
        for line in lines:
            write(printable(line))  # names and notes are the trace's
    return n
