"""The record types of a trace and the fields of each: one table that capture writes by (its type names are
the constants below), that replay, `kfdtrace info` and the tests check records against before reading them,
and that capture/README.md documents (a test keeps the two the same).

A trace is untrusted input, so a reader checks a record before using it: every field the table names must be
there with the type the table gives (fields a later version adds are optional, so older traces still read).
Fields the table does not name are ignored, as FORMAT.md's minor versions require; `strict` checking, for
traces this kfdtrace wrote itself, refuses them too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from kfdtrace.traces.format import KEY_BYTES, Record, TraceError

Check = Callable[[Any], bool]


class MalformedRecord(TraceError):
    """A record, header or summary without a field the table requires, or with one of the wrong type."""


# check -> the same test as a Python expression of `{v}`, for the checkers generated per record type
_INLINE: dict[Check, str] = {}


def _inline(check: Check, expr: str) -> Check:
    _INLINE[check] = expr
    return check


def of_type(*types: type) -> Check:
    def check(v: Any) -> bool:
        return type(v) in types

    if all(t.__module__ == "builtins" for t in types):
        _inline(check, " or ".join(f"type({{v}}) is {t.__name__}" for t in types))
    return check


def u64(v: Any) -> bool:
    return type(v) is int and 0 <= v < 1 << 64


def blob_key(v: Any) -> bool:
    return type(v) is bytes and len(v) == KEY_BYTES


_inline(u64, "type({v}) is int and 0 <= {v} < 18446744073709551616")
_inline(blob_key, f"type({{v}}) is bytes and len({{v}}) == {KEY_BYTES}")


def optional(check: Check) -> Check:
    def optional_(v: Any) -> bool:
        return v is None or check(v)

    if check in _INLINE:
        _inline(optional_, f"{{v}} is None or {_INLINE[check]}")
    return optional_


def list_of(check: Check) -> Check:
    return lambda v: type(v) is list and all(check(x) for x in v)


def map_of(fields: dict[str, Check]) -> Check:
    return lambda v: type(v) is dict and all(ok(v.get(name)) for name, ok in fields.items())


def str_map_of(check: Check) -> Check:
    return lambda v: type(v) is dict and all(type(k) is str and check(x) for k, x in v.items())


INT, NUM, BOOL, STR, BIN, DICT = of_type(int), of_type(int, float), of_type(bool), of_type(str), of_type(bytes), \
    of_type(dict)


class RecordType(str):
    """A record type: its name (what the writer is given and the reader finds) and its fields. `ok(fields)`
    is `problem(fields, .fields) is None` (absent optional fields set to None too), generated from the table:
    readers check every record."""

    fields: dict[str, Check]
    blobs: tuple[str, ...]  # the fields that name a blob by its key
    ok: Callable[[dict], bool]
    rule: tuple[Callable[[dict], bool], str] | None  # a check across its fields, and what it says when it fails

    def __new__(cls, name: str, /, rule: tuple[Callable[[dict], bool], str] | None = None,
                **fields: Check) -> RecordType:
        self = super().__new__(cls, name)
        self.fields, self.rule = {**COMMON, **fields}, rule
        self.blobs = tuple(name for name, check in self.fields.items() if check is blob_key)
        typed = _checker(self.fields)
        self.ok = typed if rule is None else (lambda f, holds=rule[0]: typed(f) and holds(f))
        return self


def _checker(table: dict[str, Check]) -> Callable[[dict], bool]:
    """A function telling whether `fields` passes every check of `table`, setting absent optional fields to
    None as `problem` does; a check with no expression is called."""
    body, ns = [], {}
    for i, (name, check) in enumerate(table.items()):
        test = _INLINE.get(check)
        if test is None:
            ns[f"_c{i}"], test = check, f"_c{i}({{v}})"
        body.append(f"    v = get({name!r})\n    if not ({test.format(v='v')}):\n        return False\n")
        if check(None):  # optional: an absent one reads as null
            body.append(f"    if v is None:\n        f.setdefault({name!r}, None)\n")
    exec(compile(f"def ok(f):\n    get = f.get\n{''.join(body)}    return True\n", "<record check>", "exec"), ns)
    return ns["ok"]


COMMON: dict[str, Check] = {
    "t": optional(INT),  # nanoseconds since the recording started
    "tid": optional(INT),  # the recording thread, named by its `thread` record
}
GPU = {"node": INT, "gpu_id": INT, "target": STR, "family": STR, "sdma": STR, "pm4": STR}
MACHINE = {  # the header's description of the machine; a `backend` record repeats it for a second backend
    "backend": STR,
    "kfd_version": optional(list_of(INT)),
    "host": optional(DICT),
    "topology": optional(DICT),  # Topology.from_dict checks the rest
    "gpus": list_of(map_of(GPU)),
}
HEADER = {
    "kfdtrace_version": optional(STR),
    "name": optional(STR),
    "command": optional(list_of(STR)),
    "created": optional(STR),
    **{k: optional(c) for k, c in MACHINE.items()},  # absent when the workload never opened a GPU
    "chunk_size": optional(INT),  # replay needs it, and says so
    "tracking": optional(STR),
}
SUMMARY = {
    "duration_ns": INT,
    "ioctls": INT,
    "submissions": INT,
    "checkpoints": INT,
    "buffers": INT,
    "packets": str_map_of(INT),
    "payload_bytes": INT,
    "exit_status": optional(INT),
    "kernels": optional(str_map_of(INT)),  # dispatches by kernel name (2.1)
    "racy": optional(list_of(STR)),  # "buffer: why" of the buffers checkpoints left out for a race (3.1)
    "failed_ioctls": optional(str_map_of(INT)),  # "NAME ERRNO" -> ioctls that failed so (3.2)
    "undrained": optional(list_of(INT)),  # queues alive at the recording's end with work left (3.2)
    # the trace writer's figures (TraceWriter.stats)
    **{f"trace_{k}": INT for k in ("records", "submissions", "frames", "raw_bytes", "compressed_bytes", "blobs",
                                   "blob_bytes", "dedup_hits", "file_bytes")},
}
# `fault`: the wait ended because a GPU stopped a queue (what the driver said); `ok` is false then
WAIT = {"timeout": NUM, "ok": BOOL, "fault": optional(STR)}  # fault: 3.2
CHECKPOINTED = {"va": u64, "size": u64, "name": optional(STR), "keys": list_of(blob_key), "hash": optional(BIN)}

THREAD = RecordType("thread", tid=INT, name=STR)
OPEN = RecordType("open", path=STR, flags=INT, fd=INT)
CLOSE = RecordType("close", fd=INT, path=optional(STR))
IOCTL = RecordType("ioctl", seq=INT, fd=INT, request=u64, name=optional(STR), data=BIN)
IOCTL_END = RecordType("ioctl_end", seq=INT, ret=INT, errno=INT, data=optional(BIN))
MMAP = RecordType("mmap", path=STR, fd=INT, offset=u64, addr=u64, length=u64, prot=INT, flags=INT)
MUNMAP = RecordType("munmap", path=optional(STR), addr=u64, length=u64)
ALLOC = RecordType("alloc", handle=u64, gpu=INT, va=u64, size=u64, domain=STR, flags=u64, cpu=optional(u64),
                   rule=(lambda f: f["va"] + f["size"] <= 1 << 64, "runs past the end of the 64-bit address space"))
BUFFER = RecordType("buffer", handle=optional(u64), va=u64, name=optional(STR), role=STR, size=optional(u64))
MAP = RecordType("map", handle=u64, gpus=list_of(INT))
UNMAP = RecordType("unmap", handle=u64, gpus=list_of(INT))
CPU_MAP = RecordType("cpu_map", handle=u64, va=u64, addr=u64)
FREE = RecordType("free", handle=u64, va=u64)
QUEUE = RecordType("queue", queue=INT, gpu=INT, type=INT, ring=u64, ring_size=u64, rptr=u64, wptr=u64,
                   doorbell_offset=u64, engine=INT, dialect=optional(STR))
QUEUE_NAME = RecordType("queue_name", queue=INT, name=STR)
QUEUE_DESTROY = RecordType("queue_destroy", queue=INT, wptr=optional(u64), rptr=optional(u64))
# a store to a doorbell of no queue the recorder knows has queue null and the doorbell's `addr`
DOORBELL = RecordType("doorbell", queue=optional(INT), value=u64, ring=BIN, addr=optional(u64))
MEM = RecordType("mem", va=u64, size=INT, key=blob_key)
CPU_SIGNAL = RecordType("cpu_signal", addr=u64, value=u64, name=optional(STR))
CPU_WAIT = RecordType("cpu_wait", addr=u64, value=u64, **WAIT)
# a CPU wait on an AQL signal (decremented by the packets that complete it): `condition` (SignalCondition)
# compares its value with `value`; `seen` is the value the wait returned on
SIGNAL_WAIT = RecordType("signal_wait", addr=u64, value=INT, condition=INT, seen=INT, **WAIT)
EVENT = RecordType("event", event=INT, type=INT, auto_reset=BOOL)
EVENT_DESTROY = RecordType("event_destroy", event=INT)
EVENT_SET = RecordType("event_set", event=INT)
EVENT_RESET = RecordType("event_reset", event=INT)
EVENT_WAIT = RecordType("event_wait", event=INT, **WAIT)
CHECKPOINT = RecordType("checkpoint", wait=DICT, buffers=list_of(map_of(CHECKPOINTED)),
                        in_flight=optional(list_of(map_of({"va": u64, "name": optional(STR)}))),
                        racy=optional(list_of(map_of({"va": u64, "name": optional(STR), "why": STR}))))
# a code object loaded into GPU memory: its bytes as given (an ELF, or an offload bundle), where its image lies,
# its target, each kernel's descriptor and first instruction's addresses, and what a replay calls it (2.2)
CODE_OBJECT = RecordType("code_object", va=u64, size=u64, key=blob_key, target=STR, kernels=str_map_of(u64),
                         entries=optional(str_map_of(u64)), name=optional(STR))
BACKEND = RecordType("backend", **MACHINE)
NOTE = RecordType("note", text=STR)

RECORD_TYPES: dict[str, RecordType] = {t: t for t in (
    THREAD, OPEN, CLOSE, IOCTL, IOCTL_END, MMAP, MUNMAP, ALLOC, BUFFER, MAP, UNMAP, CPU_MAP, FREE, QUEUE,
    QUEUE_NAME, QUEUE_DESTROY, DOORBELL, MEM, CPU_SIGNAL, CPU_WAIT, SIGNAL_WAIT, EVENT, EVENT_DESTROY, EVENT_SET,
    EVENT_RESET,
    EVENT_WAIT, CHECKPOINT, CODE_OBJECT, BACKEND, NOTE)}


def problem(fields: dict, table: dict[str, Check], strict: bool = False) -> str | None:
    """What is wrong with `fields` against `table` ('has no 'va' field'), or None; when nothing is, every field
    the table names is in `fields` (an absent optional one as None)."""
    for name, ok in table.items():
        value = fields.get(name)
        if not ok(value):
            return f"has no {name!r} field" if name not in fields else \
                f"has a malformed ({type(value).__name__}) {name!r} field"
        fields.setdefault(name, None)  # an optional field that is absent reads as null
    if strict and (extra := fields.keys() - table.keys()):
        return f"has fields the record table does not name: {', '.join(sorted(map(str, extra)))}"
    return None


def check(r: Record, strict: bool = False) -> Record:
    """`r` if its fields are what the table says (any record of a type the table does not know, unless
    `strict`); else MalformedRecord naming the record and the field."""
    t = RECORD_TYPES.get(r.type)
    if t is not None and not strict and t.ok(r.fields):
        return r
    why = "is of a type the record table does not know" if t is None and strict else \
        None if t is None else problem(r.fields, t.fields, strict)
    if why is None and t is not None and t.rule is not None and not t.rule[0](r.fields):
        why = t.rule[1]
    if why:
        raise MalformedRecord(f"record {r.n} ({r.type}) {why} (corrupt trace)")
    return r


def checked(records: Iterable[Record], strict: bool = False) -> Iterator[Record]:
    """The records, each checked against the table (`check`'s passing case inline: every record pays it)."""
    types = RECORD_TYPES
    for r in records:
        t = types.get(r.type)
        yield r if not strict and (t is None or t.ok(r.fields)) else check(r, strict)


def checkpoint_problem(r: Record, blob_key: Callable[[bytes], bytes],
                       has_blob: Callable[[bytes], bool] = lambda key: True) -> str | None:
    """What is wrong with a checkpoint record's entries beyond their fields' types (an entry's `hash` is the key
    of its chunk keys put together; a recorder hashes a buffer, of one byte or more, once a checkpoint; with
    `has_blob`, each chunk's blob is there), or None."""
    seen: set[int] = set()
    for entry in r.fields["buffers"]:
        if (lost := next((k for k in entry["keys"] if not has_blob(k)), None)) is not None:
            return f"record {r.n} (checkpoint): its entry for the buffer at {entry['va']:#x} names blob " \
                   f"{lost.hex()}, which the trace lacks (corrupt trace)"
        if entry["size"] == 0 or entry["va"] in seen:
            return f"record {r.n} (checkpoint): {'an entry of no bytes' if entry['size'] == 0 else 'a second entry'} " \
                   f"for the buffer at {entry['va']:#x} (corrupt trace)"
        seen.add(entry["va"])
        if entry.get("hash") is not None and entry["hash"] != blob_key(b"".join(entry["keys"])):
            return f"record {r.n} (checkpoint): the hash of its entry for the buffer at {entry['va']:#x} does not " \
                   f"match the entry's keys (corrupt trace)"
    return None


def check_map(what: str, fields: dict, table: dict[str, Check]) -> dict:
    """`fields` (a trace's header or summary) if it is what `table` says, else MalformedRecord."""
    why = "is not a map" if type(fields) is not dict else problem(fields, table)
    if why:
        raise MalformedRecord(f"{what} {why} (corrupt trace)")
    return fields
