"""A seeded, structure-aware trace mutator (issue 8).

`make_case(sample, seed, out)` reads a sample trace record by record, applies one to three mutations chosen by
`seed` and writes the result to `out`; it returns a one-line description of what it did, so that a failure
names its seed and its mutations and `make_case` with the same seed rebuilds the same file.

Three levels of mutation:
- structural (most cases): records and the header are edited as Python values — a field dropped, a value's type
  changed, an int set to a boundary value, a byte flipped in a bytes field (ring bytes, ioctl data, blob keys),
  an address pointed at the last bytes of another buffer, records swapped, duplicated or deleted, a record's
  type renamed, a blob's data changed under its old key — and re-encoded with TraceWriter, so CRCs, index and
  footer are valid and only the reader's content checks and the replayer stand between the mutation and a
  crash;
- msgpack (frame): one records or blobs frame is decoded, one object inside it replaced (a record that is not
  [str, map], a map with non-str keys, deep nesting, ...), re-packed with a valid CRC, and the index and footer
  rewritten around the new frame size;
- bytes: a few bytes of the file flipped at random offsets (CRCs then catch most of it).
"""

from __future__ import annotations

import glob
import os
import random
import struct
import zlib
from typing import Any

import msgpack

from kfdtrace.traces import format as F
from kfdtrace.traces.format import TraceReader, TraceWriter

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLES_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "traces", "samples"))

BOUNDARY_INTS = (0, 1, -1, 2, 7, 4095, 4096, 65536, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**48, 2**63 - 1, 2**63,
                 2**64 - 1, -(2**63), 1 << 40, (1 << 34) + 1, 64 << 20)
ADDRESS_FIELDS = ("va", "addr", "ring", "rptr", "wptr", "dst", "src", "cpu")
# record types the replayer acts on: mutated more often than the ioctl log
INTERESTING = {"alloc": 4, "buffer": 3, "map": 2, "cpu_map": 2, "mmap": 2, "event": 3, "queue": 5, "queue_name": 1,
               "cpu_signal": 4, "mem": 5, "doorbell": 8, "cpu_wait": 5, "checkpoint": 6, "queue_destroy": 3,
               "event_destroy": 2, "free": 2, "unmap": 2, "munmap": 1, "thread": 1, "open": 1, "close": 1}


def samples() -> list[str]:
    return sorted(glob.glob(os.path.join(SAMPLES_DIR, "*.kfdtrace")))


def sample_targets(path: str) -> str:
    """The --emulate spec of the GPUs a sample was recorded on (from its unmutated header)."""
    with TraceReader(path) as r:
        return ",".join(g["target"] for g in r.header["gpus"])


class Trace:
    """A trace as Python values: header, records [type, fields], blobs {key: data}, summary."""

    def __init__(self, path: str):
        with TraceReader(path) as r:
            self.header = dict(r.header)
            self.submission_type = r.submission_type
            self.records: list[list[Any]] = [[rec.type, rec.fields] for rec in r.records()]
            self.blobs: dict[bytes, bytes] = {key: r.blob(key) for key in r._blobs}
            self.summary = r.summary

    def write(self, path: str) -> None:
        """Write with TraceWriter: every blob first (so keys a mutation points at exist when they can), then
        every record; records the writer refuses are left out (their mutation is then a no-op)."""
        with TraceWriter(path, self.header, submission_type=self.submission_type) as w:
            for key, data in self.blobs.items():
                w.blob(data, key)
            for type_, fields in self.records:
                try:
                    w.record_fields(type_, fields)  # fields named by anything msgpack packs, not only strs
                except F.TraceError:
                    pass
            w.close(self.summary)


# -- values ----------------------------------------------------------------------------------------------------
def _paths(value: Any, path: tuple = ()) -> list[tuple]:
    """Every path to a value inside nested dicts and lists (the root excluded)."""
    out = []
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return out
    for k, v in items:
        out.append(path + (k,))
        out.extend(_paths(v, path + (k,)))
    return out


def _get(root: Any, path: tuple) -> Any:
    for k in path:
        root = root[k]
    return root


def _other_type(rng: random.Random, value: Any) -> Any:
    choices = [7, -3, "x", "", 1.5, float("nan"), float("inf"), b"\x00" * 8, b"", [1, 2], [], None, {}, {"a": 1},
               True, 2**64 - 1, "a" * 300]
    choices = [c for c in choices if type(c) is not type(value)]
    return rng.choice(choices)


def _flip(rng: random.Random, data: bytes) -> bytes:
    if not data:
        return b"\xff"
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 4))):
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    return bytes(b)


def _buffers(trace: Trace) -> list[tuple[int, int]]:
    """(va, size) of every recorded buffer (alloc/buffer records)."""
    out = []
    for type_, fields in trace.records:
        if type_ in ("alloc", "buffer") and isinstance(fields, dict):
            va, size = fields.get("va"), fields.get("size")
            if type(va) is int and type(size) is int and size > 0:
                out.append((va, size))
    return out


def _buffer_end(rng: random.Random, trace: Trace) -> int:
    bufs = _buffers(trace)
    if not bufs:
        return rng.choice(BOUNDARY_INTS)
    va, size = rng.choice(bufs)
    return va + size - rng.choice((1, 2, 4, 8, 16, 24))


# -- structural mutations --------------------------------------------------------------------------------------
def _pick_record(rng: random.Random, trace: Trace) -> int:
    weights = [INTERESTING.get(t, 1) if isinstance(t, str) else 1 for t, _ in trace.records]
    return rng.choices(range(len(trace.records)), weights)[0]


def mutate_value(rng: random.Random, trace: Trace, i: int) -> str:
    """Change one value somewhere inside record i's fields."""
    type_, fields = trace.records[i]
    paths = _paths(fields)
    if not paths:
        fields["fuzz"] = 1
        return f"record {i} ({type_}): add field fuzz"
    path = rng.choice(paths)
    parent, key = _get(fields, path[:-1]), path[-1]
    old = parent[key]
    where = f"record {i} ({type_}) {'.'.join(map(str, path))}"
    kind = rng.random()
    if kind < 0.15:
        del parent[key]
        return f"{where}: dropped"
    if isinstance(old, bytes) and len(old) == F.KEY_BYTES and trace.blobs and kind < 0.4:
        parent[key] = rng.choice(sorted(trace.blobs))
        return f"{where}: key -> another blob's {parent[key].hex()}"
    if isinstance(old, bytes) and kind < 0.7:
        if rng.random() < 0.8:
            parent[key] = _flip(rng, old)
            return f"{where}: byte flipped"
        cut = rng.randrange(len(old) + 1)
        parent[key] = old[:cut] if rng.random() < 0.5 else old + bytes(rng.randrange(1, 64))
        return f"{where}: bytes resized to {len(parent[key])}"
    if type(old) is int and kind < 0.75:
        if isinstance(key, str) and key in ADDRESS_FIELDS and rng.random() < 0.5:
            parent[key] = _buffer_end(rng, trace)
            return f"{where}: {old} -> another buffer's end {parent[key]}"
        new = rng.choice(BOUNDARY_INTS) if rng.random() < 0.8 else old + rng.choice((-8, -1, 1, 8, 4096))
        parent[key] = new
        return f"{where}: {old} -> {new}"
    if isinstance(old, list) and old and kind < 0.6:
        op = rng.choice(("drop", "dup", "empty"))
        if op == "drop":
            del old[rng.randrange(len(old))]
        elif op == "dup":
            old.append(old[rng.randrange(len(old))])
        else:
            old.clear()
        return f"{where}: list {op}"
    new = _other_type(rng, old)
    parent[key] = new
    return f"{where}: {type(old).__name__} -> {type(new).__name__} {str(new)[:20]}"


def mutate_ring_address(rng: random.Random, trace: Trace, i: int) -> str:
    """Overwrite 8 bytes of a doorbell's ring at an aligned offset with another buffer's last bytes."""
    type_, fields = trace.records[i]
    ring = fields.get("ring")
    if not isinstance(ring, bytes) or len(ring) < 8:
        return mutate_value(rng, trace, i)
    at = rng.randrange(0, len(ring) - 7, 4)
    addr = _buffer_end(rng, trace) if rng.random() < 0.7 else rng.choice(BOUNDARY_INTS) % 2**64
    fields["ring"] = ring[:at] + struct.pack("<Q", addr) + ring[at + 8:]
    return f"record {i} ({type_}) ring[{at}:{at + 8}] = {addr:#x}"


def mutate_records(rng: random.Random, trace: Trace) -> str:
    recs, n = trace.records, len(trace.records)
    op = rng.choice(("swap", "swap_near", "dup", "delete", "retype", "retype"))
    i = _pick_record(rng, trace)
    if op in ("swap", "swap_near"):
        j = rng.randrange(n) if op == "swap" else min(n - 1, max(0, i + rng.choice((-2, -1, 1, 2))))
        recs[i], recs[j] = recs[j], recs[i]
        return f"swap records {i} and {j}"
    if op == "dup":
        j = rng.randrange(n + 1) if rng.random() < 0.5 else i + 1
        recs.insert(j, [recs[i][0], _copy(recs[i][1])])
        return f"duplicate record {i} ({recs[i][0]}) at {j}"
    if op == "delete":
        del recs[i]
        return f"delete record {i}"
    old = recs[i][0]
    types = sorted({t for t, _ in recs if isinstance(t, str)} | {"x", "doorbell2", "ioctl_end"})
    recs[i][0] = rng.choice([t for t in types if t != old])
    return f"record {i} type {old} -> {recs[i][0]}"


def mutate_blob(rng: random.Random, trace: Trace) -> str:
    """Change a blob's data under its old key (the reader must notice), or replace it by another blob's."""
    if not trace.blobs:
        return mutate_records(rng, trace)
    key = rng.choice(sorted(trace.blobs))
    op = rng.random()
    if op < 0.6:
        trace.blobs[key] = _flip(rng, trace.blobs[key])
        return f"blob {key.hex()}: byte flipped (old key kept)"
    if op < 0.8:
        trace.blobs[key] = trace.blobs[key][: rng.randrange(len(trace.blobs[key]) + 1)]
        return f"blob {key.hex()}: truncated to {len(trace.blobs[key])} (old key kept)"
    del trace.blobs[key]
    return f"blob {key.hex()}: dropped"


def mutate_header(rng: random.Random, trace: Trace) -> str:
    paths = [p for p in _paths(trace.header)]
    path = rng.choice(paths)
    parent, key = _get(trace.header, path[:-1]), path[-1]
    old = parent[key]
    where = f"header {'.'.join(map(str, path))}"
    if rng.random() < 0.3:
        del parent[key]
        return f"{where}: dropped"
    new = rng.choice(BOUNDARY_INTS) if type(old) is int and rng.random() < 0.6 else _other_type(rng, old)
    parent[key] = new
    return f"{where}: {str(old)[:20]} -> {str(new)[:20]}"


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def mutate_structure(rng: random.Random, trace: Trace) -> str:
    r = rng.random()
    if r < 0.45:
        return mutate_value(rng, trace, _pick_record(rng, trace))
    if r < 0.6:
        doorbells = [i for i, (t, _) in enumerate(trace.records) if t == "doorbell"]
        return mutate_ring_address(rng, trace, rng.choice(doorbells)) if doorbells else mutate_records(rng, trace)
    if r < 0.8:
        return mutate_records(rng, trace)
    if r < 0.92:
        return mutate_blob(rng, trace)
    return mutate_header(rng, trace)


# -- frame (msgpack) and byte mutations on the written file ---------------------------------------------------
def _frames(data: bytes) -> list[tuple[int, tuple, bytes]]:
    """(offset, head fields, payload) of every frame after the file header, index included."""
    length = F.FILE_HEADER.unpack_from(data)[3]
    offset, out = F.FILE_HEADER.size + length, []
    end = len(data) - F.FOOTER.size
    while offset + F.FRAME.size <= end:
        head = F.FRAME.unpack_from(data, offset)
        payload = data[offset + F.FRAME.size: offset + F.FRAME.size + head[4]]
        out.append((offset, head, payload))
        offset += F.FRAME.size + head[4]
    return out


def _raw(head: tuple, payload: bytes) -> bytes:
    import zstandard
    return zstandard.ZstdDecompressor().decompress(payload) if head[2] == F.ZSTD else payload


def _frame_bytes(kind: int, raw: bytes, count: int, first: int) -> bytes:
    head = F.FRAME.pack(F.FRAME_MAGIC, kind, F.STORED, 0, len(raw), len(raw), count, first, 0)[:-4]
    return head + struct.pack("<I", zlib.crc32(raw, zlib.crc32(head))) + raw


def _nested(depth: int) -> list:
    value: list = [0]
    for _ in range(depth):
        value = [value]
    return value


HOSTILE_OBJECTS = [None, 1, "doorbell", b"\x00" * 16, [], ["doorbell"], ["doorbell", {}, 1], [1, {}],
                   ["doorbell", []], ["doorbell", {1: 2}], ["doorbell", {"ring": {b"k": [None]}}],
                   ["doorbell", {"queue": _nested(200)}], ["doorbell", {"ring": _nested(40)}],
                   [b"\x01" * 16, b"data"], [b"\x01" * 15, b""], [b"\x01" * 16], [b"\x01" * 16, "text"],
                   {"a": 1}, 2**64 - 1, -(2**63), 1.5]


def mutate_frame(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """Replace one element of a records or blobs frame's array (or one field of a record) with a hostile object,
    re-pack the frame stored with a valid CRC, and rewrite the index offsets and the footer to match."""
    frames = _frames(data)
    body = [f for f in frames if f[1][1] in (F.RECORDS, F.BLOBS)]
    if not body:
        return mutate_bytes(rng, data)
    offset, head, payload = rng.choice(body)
    items = msgpack.unpackb(_raw(head, payload), raw=False, strict_map_key=False)
    i = rng.randrange(len(items))
    if head[1] == F.RECORDS and isinstance(items[i][1], dict) and items[i][1] and rng.random() < 0.5:
        key = rng.choice(sorted(items[i][1]))
        items[i][1][key] = rng.choice(HOSTILE_OBJECTS)
        what = f"frame at {offset}: record {head[7] + i} field {key} -> hostile object"
    elif rng.random() < 0.2:
        items.append(items[i])
        what = f"frame at {offset}: element {i} repeated (count mismatch)"
    else:
        items[i] = rng.choice(HOSTILE_OBJECTS)
        what = f"frame at {offset}: element {i} -> {str(items[i])[:40]}"
    new = _frame_bytes(head[1], msgpack.packb(items, use_bin_type=True), head[6], head[7])
    delta = len(new) - (F.FRAME.size + len(payload))
    out = bytearray(data[:offset]) + new + data[offset + F.FRAME.size + len(payload):]
    return _fix_index(bytes(out), offset, delta), what


def _fix_index(data: bytes, changed: int, delta: int) -> bytes:
    """Shift every offset after `changed` by delta in the index, rewrite the index frame and the footer."""
    frames = _frames(data)
    index = [f for f in frames if f[1][1] == F.INDEX]
    if not index:
        return data
    offset, head, payload = index[-1]
    idx = msgpack.unpackb(_raw(head, payload), raw=False, strict_map_key=False)

    def shift(o):
        return o + delta if o > changed else o
    idx["frames"] = [[shift(e[0]), *e[1:]] for e in idx["frames"]]
    idx["blobs"] = {k: [shift(v[0]), v[1]] for k, v in idx["blobs"].items()}
    frame = _frame_bytes(F.INDEX, msgpack.packb(idx, use_bin_type=True), 0, 0)
    footer = F.FOOTER_MAGIC + struct.pack("<QQ", offset, len(frame))
    return data[:offset] + frame + footer + struct.pack("<I", zlib.crc32(footer))


def mutate_bytes(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    b = bytearray(data)
    flips = []
    for _ in range(rng.choice((1, 1, 2, 3, 8))):
        at = rng.randrange(len(b))
        b[at] ^= rng.randrange(1, 256)
        flips.append(at)
    if rng.random() < 0.1:
        cut = rng.randrange(len(b))
        return bytes(b[:cut]), f"bytes flipped at {flips}, truncated to {cut}"
    return bytes(b), f"bytes flipped at {flips}"


# -- cases -----------------------------------------------------------------------------------------------------
_CACHE: dict[str, Trace] = {}


def _load(path: str) -> Trace:
    if path not in _CACHE:
        _CACHE[path] = Trace(path)
    return _CACHE[path]


def make_case(sample: str, seed: int, out: str) -> str:
    """Write the mutated trace for (sample, seed) to `out`; returns a description of the mutations."""
    rng = random.Random(f"{os.path.basename(sample)}:{seed}")
    base = _load(sample)
    trace = Trace.__new__(Trace)
    trace.header, trace.submission_type = _copy(base.header), base.submission_type
    trace.records = [[t, _copy(f)] for t, f in base.records]
    trace.blobs, trace.summary = dict(base.blobs), _copy(base.summary)
    level = rng.random()
    done = []
    if level < 0.8:
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            done.append(mutate_structure(rng, trace))
    trace.write(out)
    if level >= 0.8:
        with open(out, "rb") as f:
            data = f.read()
        data, what = mutate_frame(rng, data) if level < 0.92 else mutate_bytes(rng, data)
        done.append(what)
        with open(out, "wb") as f:
            f.write(data)
    return "; ".join(done)
