"""`kfdtrace diff A B`: the first structural difference between two traces, then how many records, packets,
buffers, memory chunks and checkpoints differ.

Two recordings of the same workload differ in what the machine chose: where buffers landed, handles, fds,
times, thread ids, pointers inside ioctl structs. None of that is a difference. Each trace is followed with
its own `TraceState`, and every value is compared in a normalised form:

* an address (a packet field the tables tag as one, a record's `va`/`addr`, an ioctl field named like an
  address or any ioctl field whose value lands in a buffer) is `buffer+offset`, the buffer by its name, or
  by `#k`, its place in its thread's allocation order, when it has none; 0 stays 0, any other address is
  `outside`;
* an ioctl field the IDENTITY table names as a handle is the buffer it names, a GPU id is the GPU's place in
  the trace header, an event its place among its thread's events, and pointers, offsets, fds, pids, clocks,
  queue ids and event slots are not compared;
* a register-writing packet's values are compared by register, and the addresses its registers hold (the
  dialect's address registers such as COMPUTE_PGM, a pointer in two consecutive COMPUTE_USER_DATA registers)
  as addresses;
* memory contents (a CPU write, a checkpoint's chunk) are compared by blob key, unless aligned 8-byte words in
  them hold addresses inside live buffers (kernel arguments, pointer tables): then by a digest of the bytes
  with those words zeroed, and where each of them points (dword-aligned ones too: the addresses in the packets
  of an indirect buffer the CPU wrote); the first CPU write that differs says where its
  bytes part ('first differing byte +0x18: A 00 04 .., B e8 03 ..': a kernel's by-value argument, say), or
  which pointer differs first ('first differing pointer +0x0: A a+0x0, B 0x1007f..': one in no buffer);
* a GPU clock a packet wrote (the tables' volatile addresses: a timestamp) is zeroed in the checkpoint chunk
  holding it;
* a wait that timed out (a program polling: an ioctl that ended with wait_result TIMEOUT, a CPU wait record
  that is not ok) and an ioctl that sleeps (the table's `blocking` ones, WAIT_EVENTS: a semaphore wait sleeps
  as often as the GPU's signals wake it) are counted, not compared: how many of them a run makes is timing; what the
  program waited for is in its CPU wait records, which are compared;
* buffers are matched by allocation order and compared by name, role, size, domain, GPU and flags; queues by
  creation order, and submissions per queue;
* each thread's records form streams of their own (threads by name: the first thread's, then each other's), as
  threads interleave otherwise on every run. What the process makes once, or hands out of a pool the threads
  share (a semaphore slot), goes to whichever thread asks first, and does differ when another does.

Each kind of item (ioctls, each with what its end changed, and the opens, mmaps and closes around them;
buffers; queues; the submissions of each queue; CPU writes; checkpoints; sync records) is compared in stream
order in its own stream. Where two items differ, the next WINDOW items of both are aligned as a sequence diff
aligns lines, to tell a changed item (compared field by field) from items only one trace has; ioctls the
other trace makes a little later are the same ioctls in another order (a program freeing its buffers from a
set), counted but not a difference. The two traces are read once each, a record at a time, the one with
fewer items waiting read next; when one trace runs MAX_AHEAD items ahead of the other in a stream, that
stream is no longer compared, and the result says so.
"""

from __future__ import annotations

import contextlib
import itertools
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from functools import cached_property, lru_cache
from typing import Any

from kfdtrace.driver.packets import Dialect, Packet, PacketError
from kfdtrace.driver.pm4 import Pm4Dialect
from kfdtrace.traces import records as R
from kfdtrace.traces.contents import EVENT_PAGE, KnownMemory, called, chunk_size
from kfdtrace.traces.format import Record, TraceError, TraceReader
from kfdtrace.traces.walk import (
    MAX_PENDING_IOCTLS,
    BufferInfo,
    Submission,
    TraceState,
    ioctl_args,
    ioctl_entry,
    register_pointers,
)

MAX_AHEAD = 4096  # items one trace may have waiting in a stream for the other before the stream is given up
MAX_DEPTH = 16  # nested lists and maps in a compared value (a checkpoint's wait) beyond which it is not looked into
WINDOW = 64  # items of each trace aligned at once when two differ (a stream waits for as many)

# How a field's value is compared, by field name ("_x": any name ending in _x): anything not named here is
# compared as it is, or as an address when it lands in a buffer.
IDENTITY: dict[str, str] = {
    "_ptr": "address", "_pointer": "address", "_address": "address", "_addr": "address", "address": "address",
    "addr": "address", "va": "address",
    "handle": "handle",
    "gpu_id": "gpu", "gpuid": "gpu",
    "mmap_offset": "offset", "event_page_offset": "offset", "doorbell_offset": "offset",
    "_fd": "fd", "pid": "pid", "_clock_counter": "clock", "available": "amount",
    # numbered by the kernel in creation order over every thread: which thread got which is scheduling. A queue is
    # compared by its own record; an event by its place among its thread's (its `event` record names it)
    "queue_id": "queue id", "event_id": "event", "event_trigger_data": "event", "event": "event",
    "event_slot_index": "event slot",
}
OUTSIDE = "outside"  # an address outside every live buffer
NAMING = frozenset({R.BUFFER, R.QUEUE_NAME})  # records that name what the record before them made
UNCOMPARED = frozenset({R.THREAD, R.NOTE, R.BACKEND})  # record types whose numbers may differ
CLOCK_BYTES = 8  # what a packet writing a GPU clock writes there
MEMORY_RECORDS = frozenset({R.ALLOC, R.FREE, R.MEM})  # what tells the indirect buffers the CPU wrote
POLLED = ("wait_result", "TIMEOUT")  # an ioctl ending with this field value polled: how many is timing
BUFFER_MAP = frozenset({R.ALLOC, R.FREE, R.BUFFER})  # records that change where addresses land and their names
GROUPS: dict[str, str] = {  # kind -> what its items are called
    "ioctl": "ioctls", "buffer": "buffers", "queue": "queues", "submission": "submissions", "packet": "packets",
    "mem": "mem chunks", "checkpoint": "checkpoints", "sync": "sync records", "code_object": "code objects",
}
# what an open, close, mmap or munmap is compared by (not its fd, offset or address: every run has its own)
SYSCALLS = {R.OPEN: ("path", "flags"), R.CLOSE: ("path",), R.MMAP: ("path", "length", "prot", "flags"),
            R.MUNMAP: ("path", "length")}
# kinds whose items may come in another order without meaning anything else: freeing a program's buffers in
# another order (capture's own System.close frees from a set) reorders their ioctls, and nothing more. Buffers
# are not reorderable (their thread's allocation order is how they are matched), nor submissions, CPU writes and
# signals.
REORDERABLE = frozenset({"ioctl"})
SYNC = (R.CPU_SIGNAL, R.CPU_WAIT, R.EVENT, R.EVENT_DESTROY, R.EVENT_SET, R.EVENT_RESET, R.EVENT_WAIT)

Fields = tuple[tuple[str, Any], ...]  # (name, normalised value), in a fixed order
# a stream: (kind, None), or (kind, the name of the thread whose records it holds) for a thread but the first, or
# ("submission", the queue's creation ordinal, or (its thread's name, its ordinal there)): threads interleave
# differently on every run, and each thread's own records come in its order
Key = tuple[str, int | str | tuple[str, int] | None]
SIDES = ("A", "B")


@lru_cache(maxsize=4096)
def identity(name: str) -> str | None:
    """How IDENTITY compares a field of this name, or None: as it is."""
    how = IDENTITY.get(name)
    if how is None:
        how = next((h for k, h in IDENTITY.items() if k[0] == "_" and name.endswith(k)), None)
    return how


def plain(value: Any, depth: int = 0) -> Any:
    """A value as JSON holds it: bytes as hex, map keys as strs; nesting beyond MAX_DEPTH as one str (a
    hostile trace's 900 nested lists would otherwise exhaust Python's recursion)."""
    if type(value) is bytes:
        return value.hex()
    if type(value) in (list, dict) and depth >= MAX_DEPTH:
        return "(nested too deep)"
    if type(value) is list:
        return [plain(v, depth + 1) for v in value]
    if type(value) is dict:
        return {str(k): plain(v, depth + 1) for k, v in value.items()}
    if type(value) is float and value != value:
        return "NaN"  # which equals itself: a trace is the same as itself
    return value


def show(value: Any) -> str:
    """A normalised value in a message: blob keys shortened, big numbers in hex."""
    if type(value) is str and len(value) == 32 and all(c in "0123456789abcdef" for c in value):
        return value[:12] + "…"
    if type(value) is int and value >= 1 << 20:
        return hex(value)
    if type(value) is list:
        return "[" + ", ".join(map(show, value)) + "]"
    return "none" if value is None else str(value)


@dataclass(eq=False)
class Item:
    """One thing a trace did, normalised: `fields` compare, `packets` too for a submission."""

    n: int  # its record
    label: str  # 'submission 17 (queue 1 consumer)', 'ioctl 12 ALLOC_MEMORY_OF_GPU'
    fields: Fields
    packets: tuple[Fields, ...] = ()
    data: Callable[[], bytes | None] | None = None  # a memory chunk's bytes as compared (not compared themselves)

    def same(self, other: Item) -> bool:
        return self.fields == other.fields and self.packets == other.packets

    @cached_property
    def sig(self) -> Any:
        """The compared values, hashable."""
        return _frozen((self.fields, self.packets))


def _frozen(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, _frozen(v)) for k, v in value.items())
    return value


@dataclass
class Difference:
    kind: str  # a GROUPS key, or 'header' / 'records'
    text: str
    a_record: int | None = None
    b_record: int | None = None
    what: str | None = None  # the item: 'submission 17 (queue 1 consumer)'
    field: str | None = None  # what in it: 'packet 3 COPY_LINEAR field count'
    a: Any = None
    b: Any = None
    detail: str | None = None  # where two chunks' bytes part: 'first differing byte +0x18: A 00 10 .., B e8 03 ..'

    @property
    def order(self) -> float:
        """Where it happens in the streams (the header first, record counts last)."""
        if self.kind == "header":
            return -1
        at = [n for n in (self.a_record, self.b_record) if n is not None]
        return min(at) if at else float("inf")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "text": self.text, "what": self.what, "field": self.field, "a": self.a,
                "b": self.b, "a_record": self.a_record, "b_record": self.b_record, "detail": self.detail}


@dataclass
class Tally:
    """One kind's counts: item pairs compared and differing, items only one trace has, items not compared."""

    compared: int = 0
    differ: int = 0
    only: list[int] = field(default_factory=lambda: [0, 0])
    uncompared: list[int] = field(default_factory=lambda: [0, 0])
    reordered: int = 0  # pairs that are the same items in another order (REORDERABLE): not a difference
    first: Difference | None = None

    def line(self, noun: str) -> str:
        words = [f"{noun}: {self.compared} compared, {self.differ} differ"]
        if self.reordered:
            words.append(f"{self.reordered} the same in another order")
        words += [f"{n} only in {s}" for s, n in zip(SIDES, self.only, strict=True) if n]
        if any(self.uncompared):
            words.append(f"not compared after the traces parted: A {self.uncompared[0]}, B {self.uncompared[1]}")
        return ", ".join(words)

    def to_dict(self) -> dict:
        return {"compared": self.compared, "differ": self.differ, "reordered": self.reordered,
                "only_a": self.only[0], "only_b": self.only[1],
                "uncompared_a": self.uncompared[0], "uncompared_b": self.uncompared[1],
                "first": self.first.to_dict() if self.first else None}


@dataclass
class DiffResult:
    a: str
    b: str
    first: Difference | None
    tallies: dict[str, Tally]
    counts: tuple[dict[str, int], dict[str, int]]  # records by type in A, in B
    recovered: tuple[str | None, str | None]  # why A, B were read by recovery (not closed, damaged index)
    polls: tuple[int, int]  # waits that slept or timed out in A, in B (Side.polls): counted, not compared
    others: list[Difference]  # differences outside the streams: the header, record counts, streams given up

    @property
    def differs(self) -> bool:
        return self.first is not None

    def lines(self) -> list[str]:
        ca, cb = self.counts
        out = [f"{tag}: {path} ({sum(c.values())} records" + (f"; RECOVERED: {note})" if note else ")")
               for tag, path, c, note in zip(SIDES, (self.a, self.b), self.counts, self.recovered, strict=True)]
        out.append(f"first difference: {self.first.text}" if self.first else "no difference")
        out.append("summary:")
        types = [t for t in sorted(ca.keys() | cb.keys()) if ca.get(t, 0) != cb.get(t, 0)]
        out.append(f"  records: A {sum(ca.values())}, B {sum(cb.values())}"
                   + ("; by type: " + ", ".join(f"{t} A {ca.get(t, 0)} B {cb.get(t, 0)}" for t in types)
                      if types else ", the same number of each type"))
        out += [f"  {t.line(GROUPS[k])}" for k, t in self.tallies.items()]
        if any(self.polls):
            out.append(f"  waits that slept or timed out, as ioctls and as CPU wait records (not compared: how many "
                       f"is timing): A {self.polls[0]}, B {self.polls[1]}")
        seen = [t.first for t in self.tallies.values() if t.first] + self.others
        if len(seen) > 1:
            out.append("first difference of each kind:")
            out += [f"  {d.kind}: {d.text}" for d in sorted(seen, key=lambda d: d.order)]
        return out

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "differs": self.differs,
                "first": self.first.to_dict() if self.first else None,
                "records": {"a": dict(self.counts[0]), "b": dict(self.counts[1])},
                "recovered": {"a": self.recovered[0], "b": self.recovered[1]},
                "timed_out_waits": {"a": self.polls[0], "b": self.polls[1]},
                "kinds": {k: t.to_dict() for k, t in self.tallies.items()},
                "others": [d.to_dict() for d in self.others]}


# -- one trace, read as items ----------------------------------------------------------------------------
def waited_on(fields: Iterable[tuple[str, Any]], record: str | None) -> tuple:
    """(record type, what a wait record waited on, as normalised: its address and value, or its event)."""
    f = dict(fields)
    return record, f.get("addr"), f.get("value"), f.get("event")


class Side:
    """A trace read a record at a time into normalised items, each for one stream."""

    def __init__(self, reader: TraceReader):
        header = R.check_map(f"{reader.path}: the header", reader.header, R.HEADER)
        self.path = reader.path
        self.reader = reader
        self.recovered = reader.recovery_note if reader.recovered else None
        self.targets = [g["target"] for g in header.get("gpus") or ()]
        self.gpu_index = {g["gpu_id"]: i for i, g in enumerate(header.get("gpus") or ())}
        self.state = TraceState(header)
        self.records: Iterator[Record] = R.checked(reader.records())
        self.counts: Counter[str] = Counter()
        self.polled: Counter[str] = Counter()  # records of waits that slept or timed out, by type
        # (stream, wait record type, what it waited on) -> the record of the last such wait that timed out, till one
        # on it completes: where the other trace's completed wait has nothing to compare with
        self.timed_out: dict[tuple, int] = {}
        # content(), while the buffers stay
        self.contents: dict[tuple[bytes, int, tuple[int, ...]], tuple[Any, list[str], tuple[int, ...]]] = {}
        self.clocks: dict[int, set[int]] = {}  # buffer va -> offsets of the GPU clocks packets wrote in it
        self.chunk = chunk_size(reader) or 0  # bytes of each checkpointed chunk
        self.memory = KnownMemory(self.state, self.chunk, reader.blob, reader)  # what the CPU wrote: indirect buffers
        self.done = False
        self.handles: dict[int, str] = {}  # handle of a live buffer -> its place in its thread's allocation order
        self.queue_order: dict[int, int | tuple[str, int]] = {}  # live queue id -> its place in creation order
        self.queue_keys: dict[int, Key] = {}  # live queue id -> the stream of its creating thread
        self.threads: dict[int, str] = {}  # thread id -> its name
        self.events: dict[int, str] = {}  # live event id -> 'event 2' (of its thread, if not the first's)
        # a loaded code object's kernel descriptors and entry points: address -> the kernel's name, by object va
        self.kernel_at: dict[int, str] = {}
        self.kernels_of: dict[int, list[int]] = {}
        self.first_thread: str | None = None
        self.numbers: Counter[Key] = Counter()  # items so far per stream
        self.deferred: list[tuple[Key, Callable[[], Item]]] = []  # items waiting for the records that name them
        self.begun: dict[int, Begun] = {}  # ioctls begun and not ended, by seq
        self.ready: list[tuple[Key, Item]] = []  # items made by the record read last

    def step(self) -> list[tuple[Key, Item]]:
        """The items the next record completes (all that are left once the trace ends: then `done`)."""
        r = next(self.records, None)
        if r is None:
            self.done = True
            self._flush()
            for b in list(self.begun.values()):
                self._ended(b, None)
            self.begun.clear()
        else:
            self.counts[r.type] += 1
            if self.deferred and r.type not in NAMING:
                self._flush()
            if r.type in BUFFER_MAP or len(self.contents) > 4096:
                self.contents.clear()
            sub = self.state.apply(r)
            if r.type in MEMORY_RECORDS:
                self.memory.apply(r, None)
            make = _MAKERS.get(r.type)
            if make is not None:
                make(self, r, sub)
        out, self.ready = self.ready, []
        return out

    def compared(self, kind: str) -> int:
        """How many records of this type are compared (an ioctl and its end for each poll are not)."""
        return self.counts[kind] - self.polled[kind]

    @property
    def polls(self) -> int:
        """How many waits slept or timed out: ioctls, and CPU wait records (a CPU wait on an event is both)."""
        return sum(n for kind, n in self.polled.items() if kind != R.IOCTL_END)

    def _flush(self) -> None:
        self.ready += [(key, make()) for key, make in self.deferred]
        self.deferred.clear()

    def _number(self, key: Key) -> int:
        k = self.numbers[key]
        self.numbers[key] = k + 1
        return k

    def _threaded(self, key: Key, r: Record) -> Key:
        """The stream of `key`'s kind for the thread that made `r` (the first thread's is `key` itself)."""
        name = self.threads.get(r.fields.get("tid"))
        return key if name is None or name == self.first_thread else (key[0], name)

    # -- normalising ----------------------------------------------------------------------------------
    def buffer_name(self, buf: BufferInfo) -> str:
        return buf.name or f"#{self.handles.get(buf.handle, '?')}"

    def where(self, addr: int) -> str | int:
        """An address as 'buffer+0x10' (0 as 0, any other address outside every buffer as OUTSIDE)."""
        if addr == 0:
            return 0
        kernel = self.kernel_at.get(addr)
        if kernel is not None:
            return kernel
        hit = self.state.by_va.find(addr)
        if hit is not None and hit[2].role == EVENT_PAGE:  # a slot: an event's mailbox, named as its event is
            slot, at = divmod(addr - hit[0], 8)
            return f"the mailbox of {self.events.get(slot, 'an event id')}" + (f"+{at:#x}" if at else "")
        return OUTSIDE if hit is None else f"{self.buffer_name(hit[2])}+{addr - hit[0]:#x}"

    def _mailbox(self, p: Packet, held: dict[str, int]) -> str | None:
        """The field holding the value `p` stores to an event's mailbox (the event id, by convention)."""
        signal = p.defn.signal
        if signal is None or signal[0] not in held:
            return None
        hit = self.state.by_va.find(held[signal[0]])
        return signal[1] if hit is not None and hit[2].role == EVENT_PAGE else None

    def value(self, name: str, v: Any) -> Any:
        """A field's value as it is compared (IDENTITY)."""
        if type(v) is not int:
            return plain(v)
        how = identity(name)
        if how is None:
            return self.where(v) if v and self.state.by_va.find(v) is not None else v
        if how in ("queue id", "event slot"):  # 0 is one too
            return f"a {how}"
        if how == "event":
            return self.events.get(v, "an event id")
        if v == 0:
            return 0
        if how == "address":
            return self.where(v)
        if how == "handle":
            buf = self.state.buffers.get(v)
            return self.buffer_name(buf) if buf is not None else "a handle"
        if how == "gpu":
            i = self.gpu_index.get(v)
            return f"gpu {i}" if i is not None else "an unknown gpu"
        return f"a {how}"  # not compared: every run has its own

    def flat(self, args: dict, prefix: str = "") -> list[tuple[str, Any]]:
        """A decoded ioctl struct as (dotted name, normalised value) pairs."""
        out: list[tuple[str, Any]] = []
        for k, v in args.items():
            self._flat(f"{prefix}{k}", k, v, out)
        return out

    def _flat(self, path: str, name: str, v: Any, out: list[tuple[str, Any]]) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                self._flat(f"{path}.{k}", k, x, out)
        elif isinstance(v, list):
            for i, x in enumerate(v):
                self._flat(f"{path}[{i}]", name, x, out)
        else:
            out.append((path, self.value(name, v)))

    def by_table(self, r: Record) -> list[tuple[str, Any]]:
        """A record's fields in the record table's order (times and threads left out), normalised."""
        f = r.fields
        return [(k, self.value(k, f[k])) for k in R.RECORD_TYPES[r.type].fields if k not in R.COMMON]

    def packet(self, p: Packet, dialect: Dialect | None) -> Fields:
        held = p.addresses()
        event = p.defn.event_field if p.defn.event_of(p.fields) is not None else None  # by its place (campaign 104)
        events = {event, self._mailbox(p, held)}
        out = [("packet", p.name), *((k, self.where(v) if k in held else self.value("event", v) if k in events else v)
                                     for k, v in p.fields.items())]
        registers = self.registers(p, dialect) if isinstance(dialect, Pm4Dialect) and p.payload else None
        if registers is not None:
            out += registers
        elif p.payload:
            out.append(("payload", self._payload(p.payload)))
        return tuple(out)

    def _payload(self, data: bytes) -> str:
        """A packet's inline bytes as compared: in hex, each dword-aligned 8-byte word that holds an address inside
        a live buffer shown as where it points ('[b2+0x0]': a pointer the packet writes; campaign 115)."""
        found, parts, at = self._addresses(data, 0), [], 0
        for offset in sorted(found):
            parts += [data[at:offset].hex(), f"[{self.where(found[offset])}]"]
            at = offset + 8
        return "".join([*parts, data[at:].hex()])

    def registers(self, p: Packet, dialect: Pm4Dialect) -> list[tuple[str, Any]] | None:
        """The registers packet `p` writes by name, those holding an address normalised; None for a packet that
        writes none."""
        try:
            values: dict[int, Any] = dict(dialect.writes(p))
        except PacketError:
            return None
        for what, va, (first, *rest) in register_pointers(dialect, p, self.state.by_va.find):
            values[first.offset] = self.where(va)
            values.update({r.offset: f"(part of {what})" for r in rest})
        names = dialect.registers.names
        return [(names.get(o, f"register {o:#x}"), v) for o, v in values.items()]

    def content(self, key: bytes, va: int, clocks: tuple[int, ...] = ()) -> tuple[Any, list[str],
                                                                                   Callable[[], bytes | None] | None]:
        """What a memory chunk at `va` holds, as compared: (its blob key, []), or, when aligned 8-byte words in
        it hold addresses inside live buffers or GPU clocks (at `clocks`), (a digest of it with those words
        zeroed, where each address points: '+0x8 out+0x0'); then its bytes as compared, read when asked. A blob
        the trace lacks is compared by its key."""
        if type(key) is not bytes:
            return plain(key), [], None
        known = self.contents.get((key, va % 8, clocks))
        if known is None:
            known = self.contents[(key, va % 8, clocks)] = self._content(key, va, clocks)
        compared, pointers, zeroed = known
        return compared, pointers, lambda: self._zeroed(key, zeroed)

    def _zeroed(self, key: bytes, offsets: tuple[int, ...]) -> bytes | None:
        """The blob `key` with the 8-byte words at `offsets` zeroed; None when the trace lacks it."""
        try:
            data = self.reader.blob(key)
        except TraceError:
            return None
        if not offsets:
            return data
        zeroed = bytearray(data)
        for at in offsets:
            zeroed[at:at + 8] = bytes(8)
        return bytes(zeroed)

    def _addresses(self, data: bytes, va: int) -> dict[int, int]:
        """Offset -> the address there, of each 8-byte word of `data` (lying at `va`) that holds an address inside a
        live buffer: 8-byte aligned words, then dword-aligned ones (packets' addresses)."""
        import numpy as np

        found: dict[int, int] = {}
        for skip in (-va % 8, (4 - va) % 8):
            words = np.frombuffer(data, np.uint64, (len(data) - skip) // 8, skip) if len(data) >= skip + 8 else ()
            for i in self.state.by_va.held(words).tolist():
                at = skip + 8 * i
                if at - 4 not in found:  # not the high half of one found already
                    found[at] = int(words[i])
        return found

    def _content(self, key: bytes, va: int, clocks: tuple[int, ...]) -> tuple[Any, list[str], tuple[int, ...]]:
        import hashlib

        try:
            data = self.reader.blob(key)
        except TraceError:
            return key.hex(), [], ()
        found = self._addresses(data, va)
        if not found and not clocks:
            return key.hex(), [], ()
        pointers = [f"+{at:#x} {self.where(found[at])}" for at in sorted(found)]
        offsets = tuple(sorted({*found, *clocks}))
        return hashlib.blake2b(self._zeroed(key, offsets), digest_size=16).hexdigest(), pointers, offsets

    # -- records -> items -----------------------------------------------------------------------------
    def _emit(self, key: Key, n: int, label: str, fields: list[tuple[str, Any]],
              packets: tuple[Fields, ...] = ()) -> None:
        self.ready.append((key, Item(n, label, tuple(fields), packets)))

    def _syscall(self, r: Record, sub: Submission | None) -> None:
        f = r.fields
        # in one stream whatever the thread: a mapping the process makes once (the event page) is made by whichever
        # thread needs it first
        self._number(IOCTLS)
        self._emit(IOCTLS, r.n, f"{r.type} {f['path'] or ''}".rstrip(), [(k, f[k]) for k in SYSCALLS[r.type]])

    def _ioctl(self, r: Record, sub: Submission | None) -> None:
        """An ioctl becomes an item at its end, which adds what the call changed."""
        f = r.fields
        name = _ioctl_name(f["request"], f["name"])
        args = ioctl_args(f["request"], f["data"])
        fields = [("name", name), *(self.flat(args) if args is not None else [("bytes", len(f["data"]))])]
        if f["seq"] in self.begun or len(self.begun) >= MAX_PENDING_IOCTLS:
            self._ended(self.begun.pop(f["seq"] if f["seq"] in self.begun else next(iter(self.begun))), None)
        self.begun[f["seq"]] = Begun(r.n, name, fields, f["request"], f["data"], self._threaded(IOCTLS, r))

    def _ioctl_end(self, r: Record, sub: Submission | None) -> None:
        f = r.fields
        begun = self.begun.pop(f["seq"], None)
        if begun is None:
            key = self._threaded(IOCTLS, r)
            self._number(key)
            self._emit(key, r.n, "the end of an ioctl not begun", [("ret", f["ret"]), ("errno", f["errno"])])
        else:
            self._ended(begun, f)

    def _ended(self, b: Begun, end: dict | None) -> None:
        """The item of ioctl `b`, ended by the fields of `end` (None: it never ended)."""
        fields = b.fields
        if end is None:
            fields.append(("ended", False))
        else:
            fields += [("ended", True), ("ret", end["ret"]), ("errno", end["errno"])]
            after = ioctl_args(b.request, end["data"]) if end["data"] is not None else None
            sleeps = getattr(ioctl_entry(b.request), "blocking", False)  # DRM's table says nothing of it
            if sleeps or after is not None and after.get(POLLED[0]) == POLLED[1]:
                self.polled.update((R.IOCTL, R.IOCTL_END))
                return
            if after is not None:
                before = ioctl_args(b.request, b.data) or {}
                was = dict(self.flat(before))  # compared as normalised: a queue id the call set is no value
                fields += [(f"out {k}", v) for k, v in self.flat(after) if was.get(k) != v]
        self._emit(b.key, b.n, f"ioctl {self._number(b.key)} {b.name}", fields)

    def _alloc(self, r: Record, sub: Submission | None) -> None:
        f = r.fields
        buf = self.state.buffers.get(f["handle"])
        key = self._threaded(BUFFERS, r)
        k = self._number(key)
        ordinal = str(k) if key[1] is None else f"{key[1]}:{k}"
        if buf is not None and buf.va == f["va"]:
            self.handles[f["handle"]] = ordinal
        else:
            buf = None  # refused: it overlaps a live buffer

        def item() -> Item:  # once the `buffer` record after it has named it
            name, role, size = (buf.name, buf.role, buf.size) if buf is not None else (None, "user", f["size"])
            fields = [("name", name), ("role", role), ("size", size), ("domain", f["domain"]),
                      ("gpu", self.value("gpu_id", f["gpu"])), ("flags", f["flags"])]
            return Item(r.n, f"buffer {ordinal} ({name or 'unnamed'})", tuple(fields))

        self.deferred.append((key, item))

    def _thread(self, r: Record, sub: Submission | None) -> None:
        self.threads[r.fields["tid"]] = r.fields["name"]
        if self.first_thread is None:
            self.first_thread = r.fields["name"]

    def _free(self, r: Record, sub: Submission | None) -> None:
        self.handles.pop(r.fields["handle"], None)
        for addr in self.kernels_of.pop(r.fields["va"], ()):
            self.kernel_at.pop(addr, None)
        self.clocks.pop(r.fields["va"], None)

    def _queue(self, r: Record, sub: Submission | None) -> None:
        f = r.fields
        key = self.queue_keys[f["queue"]] = self._threaded(QUEUES, r)
        k = self._number(key)
        order = self.queue_order[f["queue"]] = k if key[1] is None else (key[1], k)
        q = self.state.queues[f["queue"]]
        fields = [("type", q.kind), ("gpu", self.value("gpu_id", f["gpu"])), ("engine", f["engine"]),
                  ("ring", self.where(f["ring"])), ("ring_size", f["ring_size"]),
                  ("dialect", q.dialect.name if q.dialect is not None else None)]

        def item() -> Item:  # once the `queue_name` record after it has named it
            return Item(r.n, _queue(order) + (f" ({q.name})" if q.name else ""), (*fields, ("name", q.name)))

        self.deferred.append((key, item))

    def _queue_destroy(self, r: Record, sub: Submission | None) -> None:
        """Where its pointers stood (rptr short of wptr: it had not drained)."""
        f = r.fields
        order = self.queue_order.pop(f["queue"], None)
        key = self.queue_keys.pop(f["queue"], QUEUES)
        self._number(key)
        label = "the end of an unknown queue" if order is None else f"the end of {_queue(order)}"
        self._emit(key, r.n, label, [("destroyed", order), ("wptr", f["wptr"]), ("rptr", f["rptr"])])

    def _doorbell(self, r: Record, sub: Submission | None) -> None:
        assert sub is not None
        q = sub.queue
        order = self.queue_order.get(q.queue) if q is not None else None
        key = ("submission", order)
        where = "unknown queue" if order is None else _queue(order) + (f" {q.name}" if q.name else "")
        self._number(key)
        ran = list(sub.packets)
        for p in sub.packets:
            if p.defn.indirect is not None:
                with contextlib.suppress(ValueError):  # what an IB the trace does not hold wrote is not masked
                    ran += called(self.memory, self.state, sub, p)
        for p in ran:
            if p.defn.volatile and p.volatile:  # a GPU clock differs on every run: masked in checkpoints
                for addr in p.written_addresses():
                    if (buf := self.state.buffer_at(addr)) is not None:
                        self.clocks.setdefault(buf.va, set()).add(addr - buf.va)
        self._emit(key, r.n, f"submission {sub.number} ({where})",
                   [("bytes", len(r.fields["ring"])), ("wptr", r.fields["value"]), ("error", sub.error)],
                   tuple(self.packet(p, q.dialect if q is not None else None) for p in sub.packets))

    def _mem(self, r: Record, sub: Submission | None) -> None:
        f = r.fields
        fields = self.by_table(r)
        key, pointers, data = self.content(f["key"], f["va"])
        fields = [(k, key if k == "key" else v) for k, v in fields]
        if pointers:
            fields.append(("pointers", pointers))
        key = self._threaded(MEMS, r)
        self.ready.append((key, Item(r.n, f"mem {self._number(key)} ({fields[0][1]})", tuple(fields), (), data)))

    def _checkpoint(self, r: Record, sub: Submission | None) -> None:
        f = r.fields
        fields = [(f"wait {k}", self.value(str(k), v)) for k, v in f["wait"].items()]
        # by buffer name: capture lists them in VA order, which is where buffers happened to land
        for at, e in sorted(((f"buffer {self.where(e['va'])}", e) for e in f["buffers"]), key=lambda x: x[0]):
            fields += [(f"{at} size", e["size"]), (f"{at} chunks", len(e["keys"]))]
            held = self.clocks.get(e["va"], ())
            for j, key in enumerate(e["keys"]):
                lo = j * self.chunk
                clocks = tuple(sorted(o - lo for o in held if lo <= o and o + CLOCK_BYTES <= lo + self.chunk))
                digest, pointers, _ = self.content(key, e["va"], clocks)  # chunks are whole pages: aligned as va
                fields.append((f"{at} chunk {j}", digest))
                if pointers:
                    fields.append((f"{at} chunk {j} pointers", pointers))
        # (not which buffers another queue was still writing then: that is timing, as how long a wait slept)
        fields.append(("racy", sorted(str(self.where(x["va"])) for x in f["racy"] or ())))
        key = self._threaded(CHECKPOINTS, r)
        self._emit(key, r.n, f"checkpoint {self._number(key)}", fields)

    def _code_object(self, r: Record, sub: Submission | None) -> None:
        """A loaded code object: compared by its bytes (blob key), target, name and kernels."""
        f = r.fields
        named = {**{va: f"the descriptor of kernel {k}" for k, va in f["kernels"].items()},
                 **{va: f"the code of kernel {k}" for k, va in (f.get("entries") or {}).items()}}
        self.kernel_at.update(named)
        self.kernels_of.setdefault(f["va"], []).extend(named)
        fields = [("name", f["name"]), ("target", f["target"]), ("key", plain(f["key"])), ("size", f["size"]),
                  ("kernels", sorted(f["kernels"])), ("loaded at", self.where(f["va"]))]
        key = self._threaded(CODE_OBJECTS, r)
        self._emit(key, r.n, f"code object {self._number(key)} ({f['name'] or 'unnamed'})", fields)

    def _sync(self, r: Record, sub: Submission | None) -> None:
        key = self._threaded(SYNCS, r)
        if "ok" in r.fields:
            waited = (key, *waited_on(self.by_table(r), r.type))
            if r.fields["ok"] is False:
                self.polled[r.type] += 1
                self.timed_out[waited] = r.n
                return
            self.timed_out.pop(waited, None)
        if r.type == R.EVENT:
            k = self._number(("event", key[1]))
            self.events[r.fields["event"]] = f"event {k}" if key[1] is None else f"event {k} of {key[1]}"
        self._emit(key, r.n, f"sync {self._number(key)} ({r.type})", [("record", r.type), *self.by_table(r)])
        if r.type == R.EVENT_DESTROY:  # its id may be given again: to another event (campaign 104)
            self.events.pop(r.fields["event"], None)


@dataclass
class Begun:
    """An ioctl whose end has not been read yet: its record, name, normalised arguments and argument bytes, and
    the stream of the thread that made it."""

    n: int
    name: str
    fields: list[tuple[str, Any]]
    request: int
    data: bytes
    key: Key


def _ioctl_name(request: int, recorded: str | None) -> str:
    entry = ioctl_entry(request)
    return entry.name if entry is not None else recorded or f"request {request:#x}"


def _queue(order: int | tuple[str, int]) -> str:
    """'queue 1', or 'queue 0 of Thread-1 (worker)' for a queue another thread than the first made."""
    return f"queue {order}" if isinstance(order, int) else f"queue {order[1]} of {order[0]}"


IOCTLS: Key = ("ioctl", None)
BUFFERS: Key = ("buffer", None)
QUEUES: Key = ("queue", None)
MEMS: Key = ("mem", None)
CHECKPOINTS: Key = ("checkpoint", None)
SYNCS: Key = ("sync", None)
CODE_OBJECTS: Key = ("code_object", None)
_MAKERS: dict[str, Callable[[Side, Record, Submission | None], None]] = {
    R.OPEN: Side._syscall, R.CLOSE: Side._syscall, R.MMAP: Side._syscall, R.MUNMAP: Side._syscall,
    R.IOCTL: Side._ioctl, R.IOCTL_END: Side._ioctl_end,
    R.ALLOC: Side._alloc, R.FREE: Side._free, R.THREAD: Side._thread,
    R.QUEUE: Side._queue, R.QUEUE_DESTROY: Side._queue_destroy,
    R.DOORBELL: Side._doorbell,
    R.MEM: Side._mem,
    R.CHECKPOINT: Side._checkpoint,
    R.CODE_OBJECT: Side._code_object,
    **{t: Side._sync for t in SYNC},
}


# -- two traces, stream by stream ------------------------------------------------------------------------
def noun(key: Key, n: int = 2) -> str:
    """What `n` items of stream `key` are: '2 submissions on queue 1', '1 buffer'."""
    kind, queue = key
    word = "submissions" if kind == "submission" else GROUPS[kind]
    word = word[:-1] if n == 1 else word
    if kind == "submission":
        return f"{word} on " + ("unknown queues" if queue is None else f"queue {queue}")
    return word


PARTED_WORD = 8  # bytes `parted` shows of each side


def parted(a: bytes | None, b: bytes | None) -> str | None:
    """Where two chunks' bytes first differ, with the aligned 8 bytes around it on each side: 'first differing
    byte +0x18: A 00 10 00 00 00 00 00 00, B e8 03 00 00 00 00 00 00' (None: a chunk's bytes are unknown)."""
    if a is None or b is None:
        return None
    import numpy as np

    n = min(len(a), len(b))
    differ = np.flatnonzero(np.frombuffer(a, np.uint8, n) != np.frombuffer(b, np.uint8, n))
    at = int(differ[0]) if len(differ) else n
    if at == len(a) == len(b):
        return None
    start = at - at % PARTED_WORD
    return (f"first differing byte +{at:#x}: A {a[start:start + PARTED_WORD].hex(' ') or '(ends)'}, "
            f"B {b[start:start + PARTED_WORD].hex(' ') or '(ends)'}")


def pointed(a: Item, b: Item) -> str | None:
    """Where two chunks' pointers first differ, when they do: 'first differing pointer +0x0: A dev_a+0x0, B
    0x1007fb3e92b6000' (a word one side holds as no pointer is its value; the bytes `parted` compares have each
    side's pointers zeroed, so a pointer against a plain word would show as zeros)."""
    ours = [{int(at, 16): where for at, where in (p.split(" ", 1) for p in dict(item.fields).get("pointers", ()))}
            for item in (a, b)]
    if ours[0] == ours[1]:
        return None
    at = min(o for o in {*ours[0], *ours[1]} if ours[0].get(o) != ours[1].get(o))
    sides = []
    for item, held in zip((a, b), ours, strict=True):
        if at in held:
            sides.append(held[at])
            continue
        data = item.data() if item.data is not None else None
        word = data[at:at + 8] if data is not None else b""
        sides.append(f"{int.from_bytes(word, 'little'):#x}" if len(word) == 8 else "(ends)")
    return f"first differing pointer +{at:#x}: A {sides[0]}, B {sides[1]}"


def first_field(a: Fields, b: Fields) -> tuple[str, Any, Any] | None:
    """(name, value in A, value in B) of the first field that differs; a field one lacks has value None."""
    for (na, va), (nb, vb) in zip(a, b, strict=False):
        if na != nb:
            return f"{na} (B: {nb})", va, vb
        if va != vb:
            return na, va, vb
    if len(a) != len(b):
        name = (a[len(b)] if len(a) > len(b) else b[len(a)])[0]
        return name, dict(a).get(name), dict(b).get(name)
    return None


class Stream:
    """One kind's items from both traces, waiting to be paired."""

    def __init__(self, key: Key):
        self.key = key
        self.waiting: tuple[deque[Item], deque[Item]] = (deque(), deque())
        self.given_up = False
        self.extra = [0, 0]  # items one trace has after the other ended
        self.first_extra: list[Item | None] = [None, None]


class Differ:
    """Two traces' items, stream by stream: the tallies of each kind and the differences found."""

    def __init__(self, sides: tuple[Side, Side]):
        self.sides = sides
        self.streams: dict[Key, Stream] = {}
        self.waiting = [0, 0]  # items waiting in all streams, per trace
        self.tallies = {k: Tally() for k in GROUPS}
        self.others: list[Difference] = []

    def run(self) -> None:
        """Read both traces to their ends, comparing as they go."""
        a, b = self.sides
        while not (a.done and b.done):
            i = 1 if a.done else 0 if b.done else int(self.waiting[1] < self.waiting[0])
            was_done = self.sides[i].done
            for key, item in self.sides[i].step():
                self.add(i, key, item)
            if self.sides[i].done and not was_done:
                for s in list(self.streams.values()):
                    self.settle(s)

    def add(self, i: int, key: Key, item: Item) -> None:
        s = self.streams.get(key)
        if s is None:
            s = self.streams[key] = Stream(key)
        if s.given_up:
            self._uncompared(s, i, item)
            return
        s.waiting[i].append(item)
        self.waiting[i] += 1
        if len(s.waiting[i]) > MAX_AHEAD:
            self.give_up(s, i)
        else:
            self.settle(s)

    def settle(self, s: Stream) -> None:
        """Pair the items of `s` that can be paired now."""
        qa, qb = s.waiting
        while qa and qb:
            if qa[0].same(qb[0]):
                self._pair(s, self._pop(s, 0), self._pop(s, 1))
                continue
            if not all(len(q) >= WINDOW or side.done for q, side in zip(s.waiting, self.sides, strict=True)):
                return  # two differ: wait for enough items to align
            self._align(s)
        for i in (0, 1):
            if s.waiting[i] and self.sides[1 - i].done:
                while s.waiting[i]:
                    self._extra(s, i, self._pop(s, i))

    def _align(self, s: Stream) -> None:
        """The first items of `s` differ: align the next WINDOW items of both traces as a sequence diff does,
        and take its first step: items changed (compared as pairs), or items only one trace has. In a
        REORDERABLE kind, runs of those items that the other trace has a little later are paired with those."""
        qa, qb = s.waiting
        wa, wb = list(itertools.islice(qa, WINDOW)), list(itertools.islice(qb, WINDOW))
        tag, _, i2, _, j2 = SequenceMatcher(None, [x.sig for x in wa], [x.sig for x in wb],
                                            autojunk=False).get_opcodes()[0]
        xa, xb = [self._pop(s, 0) for _ in range(i2)], [self._pop(s, 1) for _ in range(j2)]
        if s.key[0] in REORDERABLE and tag != "equal":
            xa, xb = self._moved(s, 0, xa), self._moved(s, 1, xb)
        n = min(len(xa), len(xb))
        for a, b in zip(xa[:n], xb[:n], strict=True):
            self._pair(s, a, b)
        if len(xa) > n:
            self._skipped(s, 0, xa[n:], qb[0] if qb else None)
        if len(xb) > n:
            self._skipped(s, 1, xb[n:], qa[0] if qa else None)

    def _moved(self, s: Stream, i: int, items: list[Item]) -> list[Item]:
        """`items`, taken from trace `i`, less the runs of them that the other trace has, in the same order,
        within its next WINDOW items: those are paired and counted as reordered. A run is two items or more
        (or the one item taken), so that a lone item alike in many places (an munmap of a size) is not moved."""
        later, left, k = s.waiting[1 - i], [], 0
        t = self.tallies[s.key[0]]
        while k < len(items):
            at, n = _longest_run(items, k, later)
            if n < min(2, len(items)):
                left.append(items[k])
                k += 1
                continue
            for _ in range(n):
                del later[at]
            self.waiting[1 - i] -= n
            t.compared, t.reordered, k = t.compared + n, t.reordered + n, k + n
        return left

    def _pop(self, s: Stream, i: int) -> Item:
        self.waiting[i] -= 1
        return s.waiting[i].popleft()

    def _note(self, kind: str, d: Difference) -> None:
        t = self.tallies[kind]
        if t.first is None or d.order < t.first.order:
            t.first = d

    def _pair(self, s: Stream, a: Item, b: Item) -> None:
        kind = s.key[0]
        t = self.tallies[kind]
        t.compared += 1
        found = self._packets(a, b) if kind == "submission" else None
        if found is None:
            found = first_field(a.fields, b.fields)
        if found is None:
            return
        t.differ += 1
        name, va, vb = found
        what = a.label if a.label == b.label else f"{a.label} (B: {b.label})"
        d = Difference(kind, f"{what}, {name}: A {show(va)}, B {show(vb)} (records A#{a.n}, B#{b.n})", a.n, b.n,
                       what, name, va, vb)
        if name == "key" and a.data is not None and b.data is not None and \
                (t.first is None or d.order < t.first.order):
            d.detail = pointed(a, b) or parted(a.data(), b.data())
            if d.detail:
                d.text = d.text.replace(" (records", f"; {d.detail} (records", 1)
        self._note(kind, d)

    def _packets(self, a: Item, b: Item) -> tuple[str, Any, Any] | None:
        """Tally two submissions' packets; the first difference among them."""
        t, found = self.tallies["packet"], None
        for i, (pa, pb) in enumerate(zip(a.packets, b.packets, strict=False)):
            t.compared += 1
            if pa == pb:
                continue
            t.differ += 1
            if found is None:
                name, va, vb = first_field(pa, pb) or ("packet", None, None)
                found = (f"packet {i}", va, vb) if name == "packet" else \
                    (f"packet {i} {pa[0][1]} field {name}", va, vb)
        more = len(a.packets) - len(b.packets)
        if more:
            t.only[0 if more > 0 else 1] += abs(more)
            if found is None:
                longer = a.packets if more > 0 else b.packets
                found = (f"{SIDES[more < 0]} has {abs(more)} more packets, from packet {len(longer) - abs(more)}",
                         len(a.packets), len(b.packets))
        return found

    def _skipped(self, s: Stream, i: int, items: list[Item], other: Item | None) -> None:
        """Trace `i` has `items` here that the other has not; the other goes on with `other`."""
        self._only(s.key[0], i, items)
        first, k, tag, oth = items[0], len(items), SIDES[i], SIDES[1 - i]
        text = f"{tag} has {k} more {noun(s.key, k)} here: from {first.label} at {tag}#{first.n}"
        fields = dict(first.fields)
        timed_out = self.sides[1 - i].timed_out.get((s.key, *waited_on(first.fields, fields.get("record"))))
        if timed_out is not None:  # (the other's, not compared: a program polling makes as many as timing does)
            text += f", a wait that completed where {oth}'s at {oth}#{timed_out} timed out"
        if other is not None:
            text += f" ({oth} goes on with {other.label} at {oth}#{other.n})"
        at = (first.n, other.n if other else None)
        self._note(s.key[0], Difference(s.key[0], text, *(at if i == 0 else at[::-1]), what=first.label,
                                        a=k * (i == 0), b=k * (i == 1)))

    def _only(self, kind: str, i: int, items: list[Item]) -> None:
        self.tallies[kind].only[i] += len(items)
        self.tallies["packet"].only[i] += sum(len(x.packets) for x in items)

    def _extra(self, s: Stream, i: int, item: Item) -> None:
        s.extra[i] += 1
        if s.first_extra[i] is None:
            s.first_extra[i] = item
        self._only(s.key[0], i, [item])

    def _uncompared(self, s: Stream, i: int, item: Item) -> None:
        self.tallies[s.key[0]].uncompared[i] += 1
        self.tallies["packet"].uncompared[i] += len(item.packets)

    def give_up(self, s: Stream, i: int) -> None:
        """Trace `i` ran MAX_AHEAD items ahead of the other in `s`: stop comparing it."""
        first, tag = s.waiting[i][0], SIDES[i]
        text = (f"{tag} runs more than {MAX_AHEAD} {noun(s.key)} ahead of {SIDES[1 - i]} from {first.label} at "
                f"{tag}#{first.n}: no longer compared")
        self.others.append(Difference(s.key[0], text, *_one_side(i, first.n), what=first.label))
        s.given_up = True
        for j in (0, 1):
            while s.waiting[j]:
                self._uncompared(s, j, self._pop(s, j))

    def finish(self) -> None:
        """Once both traces ended: what one has more of at the end of a stream, and record counts."""
        for s in self.streams.values():
            for i in (0, 1):
                item, n = s.first_extra[i], s.extra[i]
                if item is not None:
                    text = f"{SIDES[i]} has {n} more {noun(s.key, n)}, from {item.label} at {SIDES[i]}#{item.n}"
                    self._note(s.key[0], Difference(s.key[0], text, *_one_side(i, item.n), what=item.label,
                                                    a=n * (i == 0), b=n * (i == 1)))
        a, b = self.sides
        if a.targets != b.targets:
            self.others.insert(0, Difference("header", f"GPUs: A {', '.join(a.targets) or 'none'}, "
                                                       f"B {', '.join(b.targets) or 'none'}", a=a.targets, b=b.targets))
        for t in sorted((a.counts.keys() | b.counts.keys()) - UNCOMPARED):
            if a.compared(t) != b.compared(t):
                self.others.append(Difference("records", f"{t} records: A {a.counts[t]}, B {b.counts[t]}",
                                              field=t, a=a.counts[t], b=b.counts[t]))
                break

    def result(self) -> DiffResult:
        found = [t.first for t in self.tallies.values() if t.first is not None] + self.others
        first = min(found, key=lambda d: d.order) if found else None
        a, b = self.sides
        return DiffResult(a.path, b.path, first, self.tallies, (dict(a.counts), dict(b.counts)),
                          (a.recovered, b.recovered), (a.polls, b.polls), self.others)


def _one_side(i: int, n: int) -> tuple[int | None, int | None]:
    """(A's record, B's record) of something only trace `i` has, at its record `n`."""
    return (n, None) if i == 0 else (None, n)


def _longest_run(items: list[Item], k: int, q: deque[Item]) -> tuple[int, int]:
    """(where, length) of the longest run of `items` from `k` on that `q`'s first WINDOW items hold in order."""
    window = list(itertools.islice(q, WINDOW))
    best = (0, 0)
    for start in range(len(window)):
        n = 0
        while k + n < len(items) and start + n < len(window) and window[start + n].same(items[k + n]):
            n += 1
        if n > best[1]:
            best = (start, n)
    return best


def diff_traces(a: TraceReader, b: TraceReader) -> DiffResult:
    """Compare two traces, reading each once (TraceError for a corrupt one)."""
    d = Differ((Side(a), Side(b)))
    d.run()
    d.finish()
    return d.result()
