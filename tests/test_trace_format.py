"""The trace file format: round trips, blobs, the index, filtering, recovery, and hostile files."""

from __future__ import annotations

import errno
import gc
import os
import random
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import zlib

import msgpack
import pytest
import zstandard

from kfdtrace.traces import format as F
from kfdtrace.traces.format import CLOCK_KEY, Record, TraceError, TraceReader, TraceWriter

RND = random.Random(7)
FIELDS = [
    ("ioctl", {"seq": 1, "data": RND.randbytes(88), "request": 0xC0604B02, "name": "CREATE_QUEUE", "type": 2}),
    ("doorbell", {"queue": 0, "value": 2**64 - 1, "ring": b"\x01" * 28, "neg": -(2**63)}),
    ("note", {"text": "ünïcode ✓", "nested": [1, [2, {"k": None, "b": True, 7: b""}], -5, {}], "f": False}),
]


def expected(i: int) -> tuple[str, dict]:
    t, f = FIELDS[i % len(FIELDS)]
    return t, {"i": i, **f}


def write(path, n=300, frame_bytes=2048, close=True, blob_every=50, **kw) -> TraceWriter:
    """n records cycling through FIELDS (a third of them doorbells), a 5000-byte blob every `blob_every`;
    close=False leaves the file a writer killed after flush() leaves (no index, no footer)."""
    w = TraceWriter(str(path), {"name": "t"}, frame_bytes=frame_bytes, **kw)
    for i in range(n):
        if i % blob_every == 0:
            w.blob(bytes([i % 7]) * 5000)
        t, f = expected(i)
        assert w.record(t, **f) == i
    w.close({"done": True})
    if not close:
        unclose(path)
    return w


def unclose(path) -> None:
    """Cut a closed trace's index frame and footer off."""
    data = path.read_bytes()
    path.write_bytes(data[:F.FOOTER.unpack(data[-F.FOOTER.size:])[1]])


def same(a, b) -> bool:
    """Equal, and with the same types all the way down (True is not 1, b"" is not "")."""
    return repr(a) == repr(b)


def frame(kind: int, codec: int, payload: bytes, raw_len: int | None = None, count: int = 1, first: int = 0) -> bytes:
    """A frame laid out as the writer does, CRC included: for crafting hostile files."""
    raw_len = len(payload) if raw_len is None else raw_len
    head = F.FRAME.pack(F.FRAME_MAGIC, kind, codec, 0, len(payload), raw_len, count, first, 0)[:-4]
    return head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload


def closed_file(data: bytes, index: dict) -> bytes:
    """`data` (header and frames) closed with the index `index` and a valid footer."""
    index_frame = frame(F.INDEX, F.STORED, msgpack.packb(index), count=0)
    body = F.FOOTER_MAGIC + struct.pack("<QQ", len(data), len(index_frame))
    return data + index_frame + body + struct.pack("<I", zlib.crc32(body))


@pytest.fixture
def deadline():
    """Turns a hang into a failure."""
    def expire(*_):
        raise AssertionError("took too long: a loop that does not advance?")
    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


# -- round trips ------------------------------------------------------------------------------------------
def test_round_trip_every_record_identical(tmp_path):
    path = tmp_path / "a.kfdtrace"
    w = write(path)
    with TraceReader(str(path)) as r:
        got = list(r.records())
        assert len(got) == 300 and all(isinstance(x, Record) for x in got)
        for i, rec in enumerate(got):
            t, f = expected(i)
            assert rec.n == i and rec.type == t and same(rec.fields, f)
        assert r.header == {"name": "t"} and r.summary == {"done": True} and not r.recovered
        assert r.version == (F.FORMAT_MAJOR, F.FORMAT_MINOR) and r.recovery_note == ""
        assert r.record_count == 300 and r.submissions == 100
        assert r.counts == {"ioctl": 100, "doorbell": 100, "note": 100}
        assert r.verify() == w.stats["frames"] - 1  # every frame but the index


def test_records_are_packed_exactly_as_msgpack_packs_them(tmp_path):
    """The writer's packer (msgspec) makes the bytes msgpack's Packer makes: FORMAT.md's payloads."""
    class Name(str):  # record types may be str subclasses (traces.records.RecordType): stored as plain str
        pass

    subclassed = {"s": type("S", (str,), {})("s"), "i": type("I", (int,), {})(3), "b": type("B", (bytes,), {})(b"b"),
                  "f": type("F", (float,), {})(1.5)}
    records = [expected(i) for i in range(30)] + [("sub", subclassed)]
    path = tmp_path / "p.kfdtrace"
    with TraceWriter(str(path), {}, frame_bytes=1 << 20) as w:
        for i, (t, f) in enumerate(records):
            assert (w.record(t, **f) if i % 2 else w.record_fields(Name(t), f)) == i
    with TraceReader(str(path)) as r:
        (entry,) = r.frames
        _, raw = r._frame(entry)
        assert all(type(x.type) is str for x in r.records())
    assert raw == msgpack.Packer(use_bin_type=True).pack([list(x) for x in records])


def test_record_numbers_and_a_field_called_type(tmp_path):
    path = tmp_path / "n.kfdtrace"
    with TraceWriter(str(path), {}, frame_bytes=64) as w:
        assert [w.record("queue", type=i, queue=i) for i in range(50)] == list(range(50))
    with TraceReader(str(path)) as r:
        assert [(x.n, x.fields["type"]) for x in r.records()] == [(i, i) for i in range(50)]
        assert len(r.frames) > 10  # 64-byte frames: many


def test_index_and_footer_are_written_at_close(tmp_path):
    path = tmp_path / "i.kfdtrace"
    write(path)
    data = path.read_bytes()
    magic, offset, length, crc = F.FOOTER.unpack(data[-F.FOOTER.size:])
    assert magic == F.FOOTER_MAGIC and crc == zlib.crc32(data[-F.FOOTER.size:-4])
    assert offset + length == len(data) - F.FOOTER.size and data[offset:offset + 4] == F.FRAME_MAGIC
    assert data[offset + 4] == F.INDEX
    with TraceReader(str(path)) as r:
        assert not r.recovered
        kinds = [f.kind for f in r.frames]
        assert kinds.count(F.BLOBS) >= 1 and kinds.count(F.RECORDS) > 5
        recs = [f for f in r.frames if f.kind == F.RECORDS]
        assert sum(f.count for f in recs) == 300 and recs[0].first == 0
        assert all(a.first + a.count == b.first for a, b in zip(recs, recs[1:], strict=False))
        subs = [(f.first_submission, f.last_submission) for f in recs if f.first_submission is not None]
        assert subs[0][0] == 0 and subs[-1][1] == 99


def test_closing_on_an_exception_and_closing_twice(tmp_path):
    path = tmp_path / "x.kfdtrace"
    with pytest.raises(RuntimeError), TraceWriter(str(path), {}) as w:
        w.record("a", x=1)
        raise RuntimeError("workload failed")
    assert w.closed
    w.close()  # again: nothing
    with pytest.raises(TraceError, match="closed"):
        w.record("a", x=2)
    with TraceReader(str(path)) as r:
        assert not r.recovered and [x.fields for x in r.records()] == [{"x": 1}]


def test_stats(tmp_path):
    path = tmp_path / "s.kfdtrace"
    w = TraceWriter(str(path), {}, frame_bytes=1024)
    for i in range(100):
        w.record("doorbell" if i % 4 == 0 else "ioctl", i=i, data=bytes(40))
    w.blob(b"a" * 3000)
    w.blob(b"a" * 3000)
    w.blob(b"b" * 10)
    s = w.stats
    assert s["records"] == 100 and s["submissions"] == 25 and s["blobs"] == 2 and s["blob_bytes"] == 3010
    assert s["dedup_hits"] == 1 and s["frames"] >= 4 and s["file_bytes"] == os.path.getsize(path)
    w.close()
    s = w.stats
    assert s["file_bytes"] == os.path.getsize(path) and s["raw_bytes"] > s["compressed_bytes"] > 0
    assert s["raw_bytes"] > 100 * 45  # every record's packed bytes went through a frame


# -- blobs ------------------------------------------------------------------------------------------------
def test_blobs_are_stored_once_and_read_back_in_any_order(tmp_path):
    path = tmp_path / "b.kfdtrace"
    contents = [random.Random(i).randbytes(3000 + i) for i in range(40)]
    with TraceWriter(str(path), {}, frame_bytes=8192) as w:
        keys = [w.blob(c) for c in contents]
        assert [w.blob(c) for c in contents] == keys  # all hits
        assert w.stats["blobs"] == 40 and w.stats["dedup_hits"] == 40
        assert len(set(keys)) == 40 and all(k == F.blob_key(c) and len(k) == 16 for k, c in zip(keys, contents,
                                                                                                 strict=True))
    data = path.read_bytes()
    assert all(data.count(c) == 1 for c in contents)  # random bytes are stored uncompressed, once
    with TraceReader(str(path)) as r:
        assert sum(f.kind == F.BLOBS for f in r.frames) > 5  # several blob frames
        order = list(range(40))
        random.Random(1).shuffle(order)
        assert all(r.blob(keys[i]) == contents[i] for i in order)
        with pytest.raises(TraceError, match="no blob 0000"):
            r.blob(b"\0" * 16)


def test_a_blob_or_record_too_large_for_a_frame_is_refused_and_nothing_is_lost(tmp_path):
    path = tmp_path / "big.kfdtrace"
    with TraceWriter(str(path), {}) as w:
        w.record("a", i=0)
        with pytest.raises(TraceError, match="exceeds the .*frame limit"):
            w.blob(bytes(F.MAX_BLOB_BYTES + 1), key=b"k" * 16)
        with pytest.raises(TraceError, match="'a' record of .* exceeds"):
            w.record("a", data=bytes(F.MAX_FRAME_BYTES))
        with pytest.raises(TraceError, match="cannot store a 'a' record"):
            w.record("a", data=object())
        with pytest.raises(TraceError, match="cannot store a 'a' record"):
            w.record("a", n=2**64)
        with pytest.raises(TraceError, match="record type must be"):
            w.record(5, i=1)
        assert w.record("a", i=1) == 1
        key = w.blob(b"small")
    with TraceReader(str(path)) as r:
        assert [x.fields for x in r.records()] == [{"i": 0}, {"i": 1}] and r.blob(key) == b"small"


def test_a_record_that_would_overfill_a_frame_gets_its_own(tmp_path, monkeypatch):
    monkeypatch.setattr(F, "MAX_RECORD_BYTES", 3000)  # the 64 MiB limit, scaled down
    path = tmp_path / "own.kfdtrace"
    with TraceWriter(str(path), {}, frame_bytes=1000) as w:
        for i in range(5):
            w.record("small", i=i, pad=bytes(80))
        assert w.record("big", pad=bytes(2800)) == 5  # 5 x ~95 pending + 2800 > 3000: two frames
        with pytest.raises(TraceError, match=r"'big' record of 30\d\d bytes exceeds"):
            w.record("big", pad=bytes(3000))
        assert w.record("small", i=5) == 6
    with TraceReader(str(path)) as r:
        assert [f.count for f in r.frames if f.kind == F.RECORDS] == [5, 1, 1]
        assert [x.n for x in r.records()] == list(range(7)) and len(next(r.records({"big"})).fields["pad"]) == 2800


def test_a_clock_field_is_stored_as_differences_within_a_frame_and_read_back_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(F, "MAX_RECORD_BYTES", 3000)
    path = tmp_path / "clock.kfdtrace"
    times = [1_000_000_000 + 37 * i * i for i in range(40)]
    with TraceWriter(str(path), {"name": "c"}, frame_bytes=1000, clock="t") as w:
        for i, t in enumerate(times[:30]):
            w.record("tick", t=t, i=i)
        w.record("no clock", i=30)
        w.record("big", t=times[30], pad=bytes(2800))  # overfills the pending frame: moved to its own
        for i, t in enumerate(times[31:], 31):
            w.record("tick", t=t, i=i)
    with TraceReader(str(path)) as r:
        got = [(x.type, x.fields.get("t")) for x in r.records()]
        assert CLOCK_KEY not in r.header
        frames = [[fields["t"] for _, fields in msgpack.unpackb(r._payload(e.offset, r._frame_head(e.offset)))
                   if "t" in fields] for e in r.frames if e.kind == F.RECORDS]
    assert got == [("tick", t) for t in times[:30]] + [("no clock", None), ("big", times[30])] + \
        [("tick", t) for t in times[31:]]
    assert len(frames) == 3 and frames[1] == [times[30]]  # the big record alone, its time whole
    for stored in frames:  # a frame's first clock is whole, the others are differences
        assert stored[0] >= times[0] and all(0 < t < 37 * 80 for t in stored[1:]), stored


def rings(n: int, seed: int = 5) -> list[tuple[str, dict]]:
    """Doorbells of a few queues (nil included), each ring a counter and an address that move, with other
    records and the cases stored as they are (an empty ring, a bool or str queue, a ring that is not a bin)."""
    rnd, out = random.Random(seed), []
    for i in range(n):
        q = rnd.choice([0, 1, 7, None])
        words = [0x10 + q if q is not None else 0, i, 0x7F00_0000_1000 + 64 * (i % 5), rnd.randrange(1 << 64)]
        ring = b"".join(w.to_bytes(8, "little") for w in words[: rnd.choice([2, 3, 4])])
        out.append(("doorbell", {"t": 1000 + 9 * i, "queue": q, "value": 8 * i, "ring": ring}))
        if i % 11 == 0:
            out.append(("ioctl", {"t": 1001 + 9 * i, "ring": ring, "queue": q}))  # not a submission
        if i % 17 == 0:
            out.append(("doorbell", {"queue": [True, "a", 1.0, None][i % 4], "ring": ring}))
            out.append(("doorbell", {"queue": q, "ring": [b"", "text", 5, None][i % 4]}))
    return out


def stored_rings(r: TraceReader) -> list[list]:
    """Each records frame's doorbell rings as stored."""
    return [[f.get("ring") for t, f in msgpack.unpackb(r._payload(e.offset, r._frame_head(e.offset)))
             if t == "doorbell"] for e in r.frames if e.kind == F.RECORDS]


def test_a_delta_field_is_stored_as_differences_within_a_frame_and_read_back_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(F, "MAX_RECORD_BYTES", 6000)
    path = tmp_path / "delta.kfdtrace"
    want = rings(400)
    want.insert(200, ("doorbell", {"t": 5000, "queue": 1, "ring": bytes(range(256)) * 20}))  # its own frame
    with TraceWriter(str(path), {}, frame_bytes=2000, clock="t", delta=("ring", "queue")) as w:
        for i, (t, f) in enumerate(want):
            if i % 3 == 0:  # any bin is a bin: what the reader gets back is bytes
                f = {**f, "ring": bytearray(f["ring"])} if type(f["ring"]) is bytes else f
            w.record_fields(t, f)
    with TraceReader(str(path)) as r:
        assert r.delta == ("ring", "queue") and F.DELTA_KEY not in r.header and r.version == (3, F.FORMAT_MINOR)
        got = [(x.type, x.fields) for x in r.records()]
        stored = stored_rings(r)
    assert got == want
    assert len(stored) > 10 and [len(x) for x in stored].count(1) >= 1  # the big one alone
    assert bytes(range(256)) * 20 in [x[0] for x in stored]  # whole, as a frame's first is
    # a queue's later ring of the same length differs in its counter and address only: mostly zeros stored
    zeros = [x.count(0) / len(x) for frame in stored for x in frame if type(x) is bytes and len(x) == 32]
    assert sum(z > 0.6 for z in zeros) > len(zeros) / 2


def test_a_ring_moved_to_a_frame_of_its_own_is_stored_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(F, "MAX_RECORD_BYTES", 2500)
    path = tmp_path / "moved.kfdtrace"
    ring = bytes(range(200)) * 6
    later = (int.from_bytes(ring, "little") + 12345).to_bytes(len(ring), "little")
    want = [("doorbell", {"queue": 3, "ring": ring}), ("note", {"pad": bytes(300)}),
            ("doorbell", {"queue": 3, "ring": later})]  # 2 x 1200 + 300 > 2500: the last goes on its own
    with TraceWriter(str(path), {}, frame_bytes=2000, delta=("ring", "queue")) as w:
        for t, f in want:
            w.record_fields(t, f)
    with TraceReader(str(path)) as r:
        assert [(x.type, x.fields) for x in r.records()] == want
        assert [f.count for f in r.frames if f.kind == F.RECORDS] == [2, 1] and stored_rings(r)[1] == [later]


def test_a_delta_field_needs_format_3_and_two_strs(tmp_path):
    def header(**keys) -> bytes:
        raw = msgpack.packb({"kfdtrace.submission_type": "doorbell", **keys})
        return F.FILE_HEADER.pack(F.MAGIC, 3, 0, len(raw), zlib.crc32(raw)) + raw
    path = tmp_path / "h.kfdtrace"
    for keys, major in [({F.DELTA_KEY: "ring", F.DELTA_BY_KEY: "queue"}, 2), ({F.DELTA_KEY: "ring"}, 3),
                        ({F.DELTA_KEY: "ring", F.DELTA_BY_KEY: 5}, 3)]:
        data = bytearray(header(**keys))
        data[8:10] = major.to_bytes(2, "little")
        path.write_bytes(bytes(data))
        with pytest.raises(TraceError, match=r"h.kfdtrace: the header's delta field is not two strs of format 3.x "
                                             r"\(corrupt trace\)$"):
            TraceReader(str(path))
    with pytest.raises(ValueError, match="two different field names"):
        TraceWriter(str(path), {}, clock="t", delta=("t", "queue"))


# -- filtering --------------------------------------------------------------------------------------------
def test_records_by_type_and_start(tmp_path):
    path = tmp_path / "c.kfdtrace"
    write(path)
    with TraceReader(str(path)) as r:
        assert [x.n for x in r.records({"doorbell"}, start=250)] == list(range(250, 300, 3))
        assert [x.n for x in r.records(start=297)] == [297, 298, 299]
        assert list(r.records(start=300)) == [] and list(r.records({"nothing"})) == []
        assert [x.type for x in r.records({"note", "ioctl"})][:4] == ["ioctl", "note", "ioctl", "note"]


def corrupt_payload(path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset + F.FRAME.size + 1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_frames_outside_the_request_are_not_read(tmp_path):
    """A damaged frame before `start`, or without the wanted types, does not matter: it is never read."""
    path = tmp_path / "skip.kfdtrace"
    with TraceWriter(str(path), {}, frame_bytes=1000) as w:
        for i in range(100):
            w.record("early", i=i, pad=bytes(1000))  # a frame each
        for i in range(100):
            w.record("late", i=i)
    with TraceReader(str(path)) as r:
        early = r.frames[0]
    corrupt_payload(path, early.offset)
    with TraceReader(str(path)) as r:
        assert len(list(r.records(start=100))) == 100 and len(list(r.records({"late"}))) == 100
        with pytest.raises(TraceError, match=f"frame at byte {early.offset}: checksum mismatch"):
            list(r.records())


def test_records_stream_frame_by_frame(tmp_path):
    """Records of good frames come out before a bad frame further on is even read."""
    path = tmp_path / "lazy.kfdtrace"
    write(path, n=100, frame_bytes=512)
    with TraceReader(str(path)) as r:
        last = [f for f in r.frames if f.kind == F.RECORDS][-1]
    corrupt_payload(path, last.offset)
    with TraceReader(str(path)) as r:
        it = r.records()
        assert next(it).n == 0
        got = []
        with pytest.raises(TraceError, match=f"frame at byte {last.offset}"):
            got.extend(x.n for x in it)
        assert got == list(range(1, last.first))


def test_records_from_submission(tmp_path):
    path = tmp_path / "k.kfdtrace"
    write(path, frame_bytes=700)
    with TraceReader(str(path)) as r:
        doorbells = [x.n for x in r.records({"doorbell"})]
        for k in (0, 1, 37, 60, 99):
            recs = list(r.records_from_submission(k))
            entry = next(f for f in r.frames if f.kind == F.RECORDS and f.first <= doorbells[k] < f.first + f.count)
            assert recs[0].n == entry.first and [x.n for x in recs] == list(range(entry.first, 300))
            assert doorbells[k] in [x.n for x in r.records_from_submission(k, {"doorbell"})]
        assert list(r.records_from_submission(100)) == [] and list(r.records_from_submission(-1)) == []


@pytest.mark.parametrize("close", [True, False])
def test_submission_type_is_chosen_by_the_writer_and_kept_through_recovery(tmp_path, close):
    path = tmp_path / "d.kfdtrace"
    write(path, n=90, close=close, frame_bytes=500, submission_type="note")
    with TraceReader(str(path)) as r:
        assert r.recovered is not close and r.submission_type == "note" and r.submissions == 30
        assert r.header == {"name": "t"}  # the format's own header key is not the caller's
        assert [x.n for x in r.records_from_submission(29, {"note"})][-1] == 89


# -- recovery ---------------------------------------------------------------------------------------------
def test_a_killed_writer_leaves_every_flushed_record(tmp_path):
    path = tmp_path / "killed.kfdtrace"
    code = textwrap.dedent(f"""
        import os, signal
        from kfdtrace.traces.format import TraceWriter
        w = TraceWriter({str(path)!r}, {{"name": "killed"}}, frame_bytes=4096)
        for i in range(3000):
            w.record("doorbell", i=i, ring=bytes([i % 251]) * 32, big=2**64 - 1)
            if i % 1000 == 0:
                w.blob(b"z%d" % i)
        w.flush()
        w.record("lost", i=-1)
        w.blob(b"lost")
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert proc.returncode == -signal.SIGKILL
    with TraceReader(str(path)) as r:
        assert r.recovered and r.recovery_note.startswith("trace was not closed: recovered 3000 records in ")
        assert r.summary is None and r.header == {"name": "killed"} and r.submissions == 3000
        got = list(r.records())
        assert [(x.n, x.fields) for x in got] == [(i, {"i": i, "ring": bytes([i % 251]) * 32, "big": 2**64 - 1})
                                                  for i in range(3000)]
        assert all(r.blob(F.blob_key(b"z%d" % i)) == b"z%d" % i for i in (0, 1000, 2000))
        with pytest.raises(TraceError, match="no blob"):
            r.blob(F.blob_key(b"lost"))


def frame_spans(path) -> tuple[int, list[tuple[int, int, int]]]:
    """(end of the file header, [(offset, end, kind)] of every frame including the index)."""
    data = path.read_bytes()
    offset = F.FILE_HEADER.size + F.FILE_HEADER.unpack_from(data)[3]
    start, spans = offset, []
    while offset < len(data) - F.FOOTER.size:
        head = F.FRAME.unpack_from(data, offset)
        spans.append((offset, offset + F.FRAME.size + head[4], head[1]))
        offset = spans[-1][1]
    return start, spans


def test_truncation_at_every_byte_recovers_complete_frames_or_fails_cleanly(tmp_path, deadline):
    path = tmp_path / "full.kfdtrace"
    write(path, n=24, frame_bytes=200, blob_every=10)
    data = path.read_bytes()
    start, spans = frame_spans(path)
    with TraceReader(str(path)) as r:
        full = list(r.records())
        by_frame = {f.offset: f for f in r.frames}
    assert len(by_frame) > 10
    cut, opened = tmp_path / "cut.kfdtrace", 0
    cut.write_bytes(data)
    for n in reversed(range(len(data))):
        os.truncate(cut, n)
        complete = [s for s in spans if s[1] <= n and s[2] != F.INDEX]
        try:
            with TraceReader(str(cut)) as r:
                got = list(r.records())
                blobs = [f for f in r.frames if f.kind == F.BLOBS]
                note = r.recovery_note
        except TraceError as exc:
            assert n < start and "\n" not in str(exc) and str(cut) in str(exc)
            continue
        opened += 1
        assert n >= start and r.recovered
        want = sum(by_frame[o].count for o, _, k in complete if k == F.RECORDS)
        assert got == full[:want] and r.record_count == want
        assert len(blobs) == sum(k == F.BLOBS for *_, k in complete)
        stop = max((e for _, e, _ in complete), default=start)
        assert f"recovered {want} records" in note and f"stopped at byte {stop} " in note
        if n in {o for o, *_ in spans} or n == start:
            assert note.endswith("(end of file)")
        elif stop < n:
            assert "truncated frame" in note or "index frame" in note
    assert opened == len(data) - start


def flip_outcome(path) -> tuple[str, str]:
    """Read everything; ("ok", note), ("error", message), or ("corrupt", note) when every record reads but
    verify() calls the trace corrupt (a recovered trace whose index was damaged)."""
    try:
        with TraceReader(str(path)) as r:
            try:
                r.verify()  # every frame, blobs included
            except TraceError as exc:
                if not r.recovered:
                    raise
                assert "\n" not in str(exc) and str(exc).endswith("(corrupt trace)")
                return ("corrupt", f"{len(list(r.records()))} {r.recovered} {r.recovery_note}")
            recs = list(r.records())
            return ("ok", f"{len(recs)} {r.recovered} {r.recovery_note}")
    except TraceError as exc:
        assert "\n" not in str(exc)
        return ("error", str(exc))


def test_a_flipped_byte_is_caught_and_named(tmp_path, deadline):
    """Closed trace: a flip in a frame is an error naming that frame; in the index or footer, a rebuilt
    index with every record; in the file header, an error."""
    path = tmp_path / "f.kfdtrace"
    write(path, n=24, frame_bytes=200, blob_every=10)
    data = path.read_bytes()
    start, spans = frame_spans(path)
    fd = os.open(path, os.O_WRONLY)
    for pos in range(len(data)):
        os.pwrite(fd, bytes([data[pos] ^ 0xFF]), pos)
        what, text = flip_outcome(path)
        os.pwrite(fd, data[pos:pos + 1], pos)
        span = next((s for s in spans if s[0] <= pos < s[1]), None)
        if pos in (10, 11):  # the minor version has no checksum: a newer minor reads the same
            assert what == "ok" and "False" in text, (pos, text)
        elif pos < start:
            assert what == "error", pos
        elif span is None or span[2] == F.INDEX:  # footer or index: read from the frames, corrupt if the index is
            assert what in ("ok", "corrupt") and text.startswith("24 True trace") and "(end of file)" not in text, \
                (pos, text)
            assert (what == "corrupt") == (span is not None and "index unusable" in text), (pos, text)
        else:
            assert what == "error" and f"frame at byte {span[0]}:" in text, (pos, text)
    os.close(fd)


def test_recovery_stops_at_a_damaged_frame(tmp_path):
    path = tmp_path / "u.kfdtrace"
    write(path, n=40, frame_bytes=300, blob_every=15, close=False)
    _, spans = frame_spans(path)
    victim = [s for s in spans if s[2] == F.RECORDS][3]
    corrupt_payload(path, victim[0])
    with TraceReader(str(path)) as r:
        assert r.recovered and f"stopped at byte {victim[0]} (checksum mismatch" in r.recovery_note
        assert all(f.offset < victim[0] for f in r.frames)


def test_a_bad_index_behind_a_good_footer_is_rebuilt(tmp_path):
    path = tmp_path / "idx.kfdtrace"
    write(path, n=30, close=False)
    data = path.read_bytes()
    for index in ({"frames": [[10**9, 1, 0, 30, {"x": 30}, None, None]], "blobs": {}, "records": 30,
                   "submissions": 0, "counts": {}, "summary": None},
                  {"frames": "nonsense"}, [1, 2, 3],
                  {"frames": [], "blobs": {}, "records": 999, "submissions": 0, "counts": {}, "summary": None}):
        path.write_bytes(closed_file(data, index))
        with TraceReader(str(path)) as r:
            assert r.recovered and r.recovery_note.startswith("trace index unusable") and r.record_count == 30


def test_an_index_that_lies_is_rebuilt_and_fails_verification(tmp_path):
    """Index lies the frames give away: a frame listed twice (verify() would read it once per entry), a blob
    key that is an int (bytes(2**40) would allocate it), a blob position past its frame, totals by type that
    differ from the frames'. Each trace reads from its frames; verify() (info --check) calls it corrupt."""
    path = tmp_path / "lie.kfdtrace"
    write(path, n=30, blob_every=10)
    at = F.FOOTER.unpack(path.read_bytes()[-F.FOOTER.size:])[1]
    with TraceReader(str(path)) as r:
        index = msgpack.unpackb(r._payload(at, r._frame_head(at)), strict_map_key=False)
        blob_frame = next(f.offset for f in r.frames if f.kind == F.BLOBS)
    unclose(path)
    data = path.read_bytes()
    key = next(iter(index["blobs"]))
    lies = {"a frame twice": {**index, "frames": index["frames"] + index["frames"][-1:]},
            "an int key": {**index, "blobs": {**index["blobs"], 1 << 40: [blob_frame, 0]}},
            "a position past the frame": {**index, "blobs": {**index["blobs"], key: [blob_frame, 99]}},
            "counts by type": {**index, "counts": {**index["counts"], "doorbell": 1 << 62}}}
    for lie, bad in lies.items():
        path.write_bytes(closed_file(data, bad))
        with TraceReader(str(path)) as r:
            assert r.recovered and r.record_count == 30 and r.recovery_note.startswith("trace index unusable"), lie
            assert [x.n for x in r.records()] == list(range(30))
            with pytest.raises(TraceError, match=r"lie.kfdtrace: trace index unusable \(malformed index: .*\) "
                                                 r"\(corrupt trace\)$"):
                r.verify()
    path.write_bytes(closed_file(data, index))  # the truth
    with TraceReader(str(path)) as r:
        assert not r.recovered and r.verify() == len(index["frames"])


def test_a_trace_read_up_to_a_damaged_frame_fails_verification(tmp_path):
    path = tmp_path / "d.kfdtrace"
    write(path, n=40, frame_bytes=300, blob_every=15)
    _, spans = frame_spans(path)
    victim = [s for s in spans if s[2] == F.BLOBS][1]
    corrupt_payload(path, victim[0])
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # and the footer: the index is not read, the frames are scanned up to the damaged one
    path.write_bytes(bytes(data))
    with TraceReader(str(path)) as r:
        assert r.recovered and len(list(r.records())) > 0
        with pytest.raises(TraceError, match=f"frame at byte {victim[0]}: checksum mismatch \\(corrupt trace\\)$"):
            r.verify()
    unclose_written = tmp_path / "killed.kfdtrace"  # what a kill leaves is no damage
    write(unclose_written, n=40, frame_bytes=300, close=False)
    with TraceReader(str(unclose_written)) as r:
        assert r.recovered and r.damage is None and r.verify() > 0


def test_killed_while_writing_the_footer_keeps_the_summary(tmp_path):
    path = tmp_path / "sum.kfdtrace"
    write(path, n=30)
    path.write_bytes(path.read_bytes()[:-5])
    with TraceReader(str(path)) as r:
        assert r.recovered and r.summary == {"done": True} and r.record_count == 30
        assert "index frame without a valid footer" in r.recovery_note


# -- hostile files ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("content", [b"", b"KFD", os.urandom(4096), b"KFDTRACE" + os.urandom(200),
                                     b"KFDTRACE\x01\x00\x00\x00\xff\xff\xff\xff\x00\x00\x00\x00",
                                     b"\0" * 100000], ids=["empty", "short", "random", "magic", "length", "zeros"])
def test_garbage_files_are_refused(tmp_path, content, deadline):
    bad = tmp_path / "g.kfdtrace"
    bad.write_bytes(content)
    with pytest.raises(TraceError) as err:
        TraceReader(str(bad))
    assert str(err.value).startswith(f"{bad}: ") and "\n" not in str(err.value)


def test_random_bytes_after_a_good_header_recover_nothing(tmp_path, deadline):
    path = tmp_path / "r.kfdtrace"
    TraceWriter(str(path), {"name": "h"}).flush()
    head = path.read_bytes()
    for seed in range(30):
        path.write_bytes(head + random.Random(seed).randbytes(seed * 97))
        with TraceReader(str(path)) as r:
            assert r.recovered and r.record_count == 0 and list(r.records()) == []


def test_not_a_file(tmp_path, deadline):
    with pytest.raises(TraceError, match="No such file"):
        TraceReader(str(tmp_path / "nope.kfdtrace"))
    with pytest.raises(TraceError, match="not a regular file"):
        TraceReader(str(tmp_path))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(TraceError, match="not a regular file"):
        TraceReader(str(fifo))  # and no hang waiting for a writer


def append_frames(path, *frames: bytes) -> None:
    with open(path, "ab") as f:
        f.write(b"".join(frames))


def zstd_claiming(size: int, body: bytes) -> bytes:
    """A zstd frame whose header claims `size` content bytes (single segment: zstd would allocate it)."""
    return (b"\x28\xb5\x2f\xfd" + b"\xe0" + struct.pack("<Q", size)
            + struct.pack("<I", 1 | (len(body) << 3))[:3] + body)


def test_frames_claiming_huge_sizes_are_refused_without_allocating(tmp_path):
    path = tmp_path / "h.kfdtrace"
    write(path, n=3, close=False)
    clean = path.read_bytes()
    for crafted, reason in [
        (frame(F.RECORDS, F.ZSTD, b"x" * 16, raw_len=0xFFFFFFFF, first=3), "frame limit"),
        (frame(F.RECORDS, F.ZSTD, zstd_claiming(10 << 30, b"\x90"), raw_len=1, first=3), "declares 10737418240"),
        (frame(F.RECORDS, F.ZSTD, zstandard.ZstdCompressor(write_content_size=False).compress(bytes(10 << 20)),
               raw_len=1000, first=3), "cannot decompress"),
    ]:
        path.write_bytes(clean)
        append_frames(path, crafted)
        with TraceReader(str(path)) as r:
            assert r.recovered and r.record_count == 3 and reason in r.recovery_note
    path.write_bytes(clean)
    append_frames(path, frame(F.RECORDS, F.STORED, msgpack.packb([["a", {"x": bytes(20000)}]]), first=3))
    with TraceReader(str(path), max_frame_bytes=10000) as r:  # a reader's own, lower limit
        assert r.record_count == 3 and "over the 10000-byte frame limit" in r.recovery_note


@pytest.mark.parametrize("payload, reason", [
    (msgpack.packb([["note", {"x": msgpack.ExtType(5, b"code")}]]), "extension type"),
    (msgpack.packb([["note", {"t": msgpack.Timestamp(1)}]]), "extension type"),
    (msgpack.packb([{"type": "note"}]), "not [type, fields]"),
    (msgpack.packb([[5, {}]]), "not [type, fields]"),
    (msgpack.packb([["a", {}], ["b", {}]]), "do not match the frame head"),
    (msgpack.packb({"not": "a list"}), "do not match the frame head"),
    (b"\x91" * 5000 + b"\xc0", "malformed msgpack"),
    (b"\xdd\xff\xff\xff\xff", "malformed msgpack"),  # an array claiming 4 billion items
])
def test_malformed_payloads_are_refused(tmp_path, payload, reason):
    path = tmp_path / "e.kfdtrace"
    write(path, n=3, close=False)
    append_frames(path, frame(F.RECORDS, F.STORED, payload, first=3))
    with TraceReader(str(path)) as r:
        assert r.record_count == 3 and reason in r.recovery_note


def test_a_records_frame_out_of_sequence_stops_recovery(tmp_path):
    path = tmp_path / "seq.kfdtrace"
    write(path, n=3, close=False)
    append_frames(path, frame(F.RECORDS, F.STORED, msgpack.packb([["note", {}]]), first=99))
    with TraceReader(str(path)) as r:
        assert r.record_count == 3 and "starts at record 99, not 3" in r.recovery_note


# -- versions ---------------------------------------------------------------------------------------------
def patch_version(path, major: int, minor: int) -> None:
    data = bytearray(path.read_bytes())
    struct.pack_into("<HH", data, 8, major, minor)
    path.write_bytes(bytes(data))


def test_a_newer_major_is_refused_naming_both_versions(tmp_path):
    path = tmp_path / "v.kfdtrace"
    write(path, n=3)
    patch_version(path, 4, 0)
    with pytest.raises(TraceError, match=r"v.kfdtrace: is trace format 4\.0; this kfdtrace reads formats 1\.x, 2\.x "
                                         r"and 3\.x: upgrade kfdtrace$"):
        TraceReader(str(path))
    patch_version(path, 0, 9)
    with pytest.raises(TraceError, match=r"format 0\.9; this kfdtrace reads formats 1\.x, 2\.x and 3\.x$"):
        TraceReader(str(path))


def test_a_newer_minor_is_read_ignoring_what_it_added(tmp_path):
    path = tmp_path / "m.kfdtrace"
    with TraceWriter(str(path), {}) as w:
        for i in range(3):
            w.record(*expected(i)[:1], **expected(i)[1])
        w.record("from_the_future", x=1, new_field=[1])
    unclose(path)
    append_frames(path, frame(9, F.STORED, b"\xc0", count=0),  # a frame kind added by the newer minor
                  frame(F.RECORDS, F.STORED, msgpack.packb([["note", {"i": 4}]]), first=4))
    patch_version(path, F.FORMAT_MAJOR, F.FORMAT_MINOR + 7)
    with TraceReader(str(path)) as r:
        assert r.version == (F.FORMAT_MAJOR, F.FORMAT_MINOR + 7) and r.record_count == 5
        assert [x.type for x in r.records()] == ["ioctl", "doorbell", "note", "from_the_future", "note"]
    patch_version(path, F.FORMAT_MAJOR, F.FORMAT_MINOR)  # the same frames from this minor: corrupt
    with TraceReader(str(path)) as r:
        assert r.record_count == 4 and "unknown frame kind 9" in r.recovery_note


# -- writing failures -------------------------------------------------------------------------------------
def test_write_failures_are_trace_errors():
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    with pytest.raises(TraceError, match="write failed at byte 0: No space left"):
        TraceWriter("/dev/full", {})
    with pytest.raises(TraceError, match="cannot create"):
        TraceWriter("/nonexistent-dir/x.kfdtrace", {})


def test_flush_blobs_writes_only_a_full_enough_blob_frame(tmp_path):
    path = tmp_path / "fb.kfdtrace"
    w = TraceWriter(str(path), {}, frame_bytes=1 << 20)
    w.record("note", text="buffered")
    w.blob(b"a" * 1000)
    w.flush_blobs(at_least=4096)  # too little: nothing written
    assert w.stats["frames"] == 0
    w.blob(b"b" * 5000)
    w.flush_blobs(at_least=4096)
    assert w.stats["frames"] == 1 and w.stats["records"] == 1  # the blobs went out, the record stays buffered
    w.close()
    with TraceReader(str(path)) as r:
        assert [x.type for x in r.records()] == ["note"] and r.blob(F.blob_key(b"b" * 5000)) == b"b" * 5000


@pytest.mark.parametrize("key", [3_000_000_000, 1.5, b"short", "k" * 16])
def test_the_writer_refuses_a_blob_key_that_is_not_16_bytes(tmp_path, key):
    with TraceWriter(str(tmp_path / "t.kfdtrace"), {}) as w, pytest.raises(TraceError, match="a blob key is 16"):
        w.blob(b"data", key)


def test_stored_bytes_by_frame_kind(tmp_path):
    path = tmp_path / "sizes.kfdtrace"
    with TraceWriter(str(path), {}, frame_bytes=4096) as w:
        for i in range(200):
            w.record("r", i=i, pad=bytes(100))
        w.blob(os.urandom(3000))
    with TraceReader(str(path)) as r:
        records, blobs = r.stored_bytes(F.RECORDS), r.stored_bytes(F.BLOBS)
    assert 0 < records < 200 * 100 // 4  # zeros compress
    assert 3000 <= blobs < 3100  # random bytes do not
    assert records + blobs < os.path.getsize(path)


# -- the background writer --------------------------------------------------------------------------------
def write_mixed(w: TraceWriter, n: int) -> list[int]:
    """n clocked records with a blob every 40, through both calls; their numbers."""
    numbers = []
    for i in range(n):
        if i % 40 == 0:
            w.blob(random.Random(i).randbytes(700) + bytes(2000))
        t, f = expected(i)
        fields = {"t": 1_000 + 17 * i, **f}
        numbers.append(w.record_fields(t, fields) if i % 2 else w.record(t, **fields))
    return numbers


def test_frames_written_in_the_background_are_the_frames_written_in_line(tmp_path, monkeypatch):
    """Full frames go to the worker thread; writing each one on the recording thread instead makes the same
    file, byte for byte."""
    background = tmp_path / "bg.kfdtrace"
    with TraceWriter(str(background), {"name": "t"}, frame_bytes=1500, clock="t") as w:
        assert write_mixed(w, 600) == list(range(600))
        assert w.stats["frames"] > 20
    monkeypatch.setattr(F._Output, "submit", F._Output.write)
    in_line = tmp_path / "inline.kfdtrace"
    with TraceWriter(str(in_line), {"name": "t"}, frame_bytes=1500, clock="t") as w:
        write_mixed(w, 600)
    assert background.read_bytes() == in_line.read_bytes()
    with TraceReader(str(background)) as r:
        assert r.verify() > 20 and r.record_count == 600 and not r.recovered


def test_the_callers_fields_are_left_as_they_were(tmp_path):
    path = tmp_path / "f.kfdtrace"
    with TraceWriter(str(path), {}, clock="t", delta=("ring", "q"), submission_type="a") as w:
        fields = {"t": 5_000, "data": [1, 2], "ring": b"\x01\x02"}
        w.record_fields("a", fields)
        assert fields == {"t": 5_000, "data": [1, 2], "ring": b"\x01\x02"}
        fields["t"], fields["data"][0] = 7_000, 9  # reused by the caller: the record is already packed
        w.record_fields("a", fields)
        assert fields["ring"] == b"\x01\x02"
        bad = {"t": 9_000, "x": object(), "ring": b"\x05\x06"}
        with pytest.raises(TraceError, match="cannot store a 'a' record"):
            w.record_fields("a", bad)
        assert bad["t"] == 9_000 and bad["ring"] == b"\x05\x06" and list(bad) == ["t", "x", "ring"]
        w.record_fields("a", {"t": 9_500, "ring": b"\x03\x02"})  # the refused record is no link in the chain
    with TraceReader(str(path)) as r:
        assert [x.fields for x in r.records()] == [{"t": 5_000, "data": [1, 2], "ring": b"\x01\x02"},
                                                   {"t": 7_000, "data": [9, 2], "ring": b"\x01\x02"},
                                                   {"t": 9_500, "ring": b"\x03\x02"}]


def writer_threads(but: frozenset[threading.Thread] = frozenset()) -> list[threading.Thread]:
    """The writers' worker threads alive, but those in `but`."""
    return [t for t in threading.enumerate() if t.name == "kfdtrace-writer" and t not in but]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_a_failed_background_write_stops_recording_until_a_flush_writes_everything(tmp_path, monkeypatch, code,
                                                                                     deadline):
    """The worker's write fails half-way through a frame: the file is cut back to the frame boundary, the next
    record call says why, records are refused until a flush succeeds (once space was freed), and the file then
    closes with every record that was accepted."""
    path = tmp_path / "full.kfdtrace"
    others = frozenset(writer_threads())
    w = TraceWriter(str(path), {"name": "full"}, frame_bytes=1024, clock="t")
    real_write, failing = os.write, [True]

    def write(fd: int, data) -> int:
        if fd == w._out.fd and failing[0]:
            if len(data) > 100:
                return real_write(fd, data[:100])  # part of the frame, then the failure
            raise OSError(code, os.strerror(code))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    accepted = []
    with pytest.raises(TraceError, match=f"write failed at byte {path.stat().st_size}: {os.strerror(code)}"):
        for i in range(100_000):  # until the worker's failure reaches a record call
            accepted.append(w.record("r", t=i * 10, i=i, pad=bytes(50)))
    assert accepted == list(range(len(accepted))) and len(accepted) >= 10
    with pytest.raises(TraceError, match=os.strerror(code)):
        w.record("r", t=0, i=-1)  # still refused
    with TraceReader(str(path)) as r:  # cut back to the end of the header: no partial frame
        assert r.recovered and r.record_count == 0 and r.recovery_note.endswith("(end of file)")
    with pytest.raises(TraceError, match=os.strerror(code)):
        w.flush()  # the disk is still full
    failing[0] = False
    w.flush()  # space freed: the frames kept are written, then the buffered records
    assert w.record("r", t=123_456, i=len(accepted)) == len(accepted)
    w.close({"ok": True})
    assert not writer_threads(others)
    with TraceReader(str(path)) as r:
        assert not r.recovered and r.summary == {"ok": True}
        assert [x.fields["i"] for x in r.records()] == list(range(len(accepted) + 1))
        assert [x.fields["t"] for x in r.records()][:3] == [0, 10, 20]


def test_close_ends_the_worker_and_a_dropped_writer_ends_it_too(tmp_path, deadline):
    path, others = tmp_path / "w.kfdtrace", frozenset(writer_threads())
    with TraceWriter(str(path), {}, frame_bytes=512) as w:
        for i in range(200):
            w.record("r", i=i, pad=bytes(40))
        assert len(writer_threads(others)) == 1
    assert not writer_threads(others)
    dropped = tmp_path / "dropped.kfdtrace"
    w = TraceWriter(str(dropped), {}, frame_bytes=512)
    for i in range(200):
        w.record("r", i=i, pad=bytes(40))
    (worker,), handed_over = writer_threads(others), w._first
    del w
    gc.collect()
    worker.join()  # the frames it was handed written, it ends
    with TraceReader(str(dropped)) as r:
        assert r.recovered and [x.fields["i"] for x in r.records()] == list(range(handed_over))
        assert handed_over > 100


def test_a_process_that_exits_without_closing_its_writer_exits(tmp_path):
    path = tmp_path / "exit.kfdtrace"
    code = textwrap.dedent(f"""
        from kfdtrace.traces.format import TraceWriter
        w = TraceWriter({str(path)!r}, {{}}, frame_bytes=512)
        for i in range(20000):
            w.record("r", i=i, pad=bytes(40))
    """)
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
    with TraceReader(str(path)) as r:  # what the worker wrote before the exit, whole frames only
        assert r.recovered and [x.fields["i"] for x in r.records()] == list(range(r.record_count))


# -- the journal: flushed records no full frame holds yet -------------------------------------------------
def killed_writer(path, body: str, frame_bytes: int = 1 << 20, delta: tuple[str, str] | None = None) -> None:
    """Run `body` with `w`, a TraceWriter on `path` with clock "t", in a child that SIGKILLs itself after."""
    code = (f"import os, signal\nfrom kfdtrace.traces import format as F\n"
            f"w = F.TraceWriter({str(path)!r}, {{'name': 'journal'}}, frame_bytes={frame_bytes}, clock='t', "
            f"delta={delta!r})\n"
            f"{textwrap.dedent(body)}\nos.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert proc.returncode == -signal.SIGKILL


def test_flushes_leave_no_frames_and_a_kill_loses_no_flushed_record(tmp_path):
    path = tmp_path / "journal.kfdtrace"
    killed_writer(path, """
        for i in range(60):
            w.record("ioctl" if i % 3 else "note", t=1000 + 7 * i, i=i, pad=bytes(i))
            if i % 3 == 2:
                w.flush()  # the writer's flushes: twenty, none filling a frame
        w.record("lost", t=5000)
    """)
    with TraceReader(str(path)) as r:
        assert r.recovered and "(the last from the journal at byte " in r.recovery_note
        got = [(x.n, x.type, x.fields) for x in r.records()]
        journal = r.frames[0].offset
    assert got == [(i, "ioctl" if i % 3 else "note", {"t": 1000 + 7 * i, "i": i, "pad": bytes(i)})
                   for i in range(60)]  # every clock exact, each flush's first one included
    assert journal % F.JOURNAL_PAGE == 0 and journal >= F.JOURNAL_GAP  # past the (no) frames, a gap on
    assert len(r.frames) == 20  # one journal frame per flush


def test_a_kill_after_any_flush_loses_no_flushed_ring(tmp_path):
    """Journal frames start their own chains of differences: a ring whose previous one lies in the frames (or
    an earlier journal frame) is whole in the journal, whatever flush the writer died after."""
    want = rings(150, seed=9)
    # flushes every 4 records leave most slots unseen in a journal frame; every 29, most are seen (then the
    # rest of the frame is copied as it is)
    for stop, every in ((1, 4), (2, 4), (5, 4), (40, 4), (77, 4), (len(want), 4), (77, 29), (len(want), 29)):
        path = tmp_path / f"j{stop}-{every}.kfdtrace"
        killed_writer(path, f"""
            import sys
            sys.path.insert(0, {os.path.dirname(__file__)!r})
            from test_trace_format import rings
            for i, (t, f) in enumerate(rings(150, seed=9)[:{stop}]):
                w.record_fields(t, f)
                if i % {every} == 1 or i == {stop} - 1:
                    w.flush()
        """, frame_bytes=3000 if every == 4 else 12000, delta=("ring", "queue"))
        with TraceReader(str(path)) as r:
            assert [(x.type, x.fields) for x in r.records()] == want[:stop], stop


def test_a_closed_trace_keeps_no_journal(tmp_path):
    path = tmp_path / "closed.kfdtrace"
    with TraceWriter(str(path), {}, clock="t") as w:
        for i in range(50):
            w.record("ioctl", t=i, i=i)
            w.flush()
    with TraceReader(str(path)) as r:
        assert not r.recovered and [x.fields["i"] for x in r.records()] == list(range(50))
        assert len(r.frames) == 1  # fifty flushes, one records frame
    assert os.path.getsize(path) == w.stats["file_bytes"] < F.JOURNAL_GAP  # nothing past the footer


def test_a_full_frame_drops_the_journal_it_holds(tmp_path):
    path = tmp_path / "dropped.kfdtrace"
    killed_writer(path, """
        w.record("first", t=1)
        w.flush()
        w._hand_over()  # the pending frame, journaled record included, goes to the frames
        w.flush()
        w._out.wait()
    """)
    assert os.path.getsize(path) < F.JOURNAL_GAP  # the journal was cut off once a frame held its record
    with TraceReader(str(path)) as r:
        assert [x.fields for x in r.records()] == [{"t": 1}] and "journal" not in r.recovery_note


def test_a_frame_that_would_reach_the_journal_moves_it_first_and_a_torn_one_loses_nothing(tmp_path):
    """A blob frame bigger than the gap is written where the journal was: the journal is copied past it
    first. The child's write(2) of that frame stops halfway, as a SIGKILL between pages can stop it."""
    path = tmp_path / "torn.kfdtrace"
    killed_writer(path, """
        for i in range(10):
            w.record("ioctl", t=i, i=i)
            w.flush()
        real_write = os.write
        def torn(fd, data):  # the big frame's write(2) is cut short by a kill
            if len(data) > F.JOURNAL_GAP:
                real_write(fd, bytes(data)[:len(data) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
            return real_write(fd, data)
        F.os.write = torn
        w.blob(os.urandom(3 * F.JOURNAL_GAP))
        w.flush()
    """)
    with TraceReader(str(path)) as r:
        assert r.recovered and [x.fields["i"] for x in r.records()] == list(range(10))
        assert r.frames[0].offset > 3 * F.JOURNAL_GAP  # the moved journal, past where the blob frame goes


def killed_after_six_flushes(path) -> None:
    """A writer killed after six records, each flushed on its own: a journal of six frames."""
    killed_writer(path, """
        for i in range(6):
            w.record("ioctl", t=i, i=i)
            w.flush()
    """)


def test_a_damaged_journal_frame_ends_the_records_there(tmp_path):
    path = tmp_path / "damaged.kfdtrace"
    killed_after_six_flushes(path)
    with TraceReader(str(path)) as r:
        third = r.frames[2].offset
    corrupt_payload(path, third)
    with TraceReader(str(path)) as r:
        assert [x.fields["i"] for x in r.records()] == [0, 1]  # the two before it, and nothing made up
        assert f"stopped at byte {third} (checksum mismatch" in r.recovery_note


def test_what_a_kill_leaves_past_the_journal_is_no_damage(tmp_path):
    """A journal moved further on, then the kill: zeros past it, and a torn copy. Readers took it for a recovered
    trace, but `info --check` called it corrupt."""
    path = tmp_path / "moved.kfdtrace"
    killed_after_six_flushes(path)
    with TraceReader(str(path)) as r:
        journal = r.frames[0].offset
    data = path.read_bytes()
    path.write_bytes(data + bytes(2 * F.JOURNAL_PAGE) + data[journal:journal + (len(data) - journal) // 2])
    with TraceReader(str(path)) as r:
        assert r.recovered and r.damage is None, r.recovery_note
        assert [x.fields["i"] for x in r.records()] == list(range(6))


def test_journal_truncated_anywhere_recovers_its_whole_frames(tmp_path):
    path = tmp_path / "cut.kfdtrace"
    killed_writer(path, """
        for i in range(8):
            w.record("ioctl", t=i, i=i, pad=bytes(40))
            w.flush()
    """)
    data = path.read_bytes()
    with TraceReader(str(path)) as r:
        ends = [f.offset + F.FRAME.size + r._frame_head(f.offset).stored for f in r.frames]
    cut = tmp_path / "cutting.kfdtrace"
    for n in range(ends[0] - F.FRAME.size - 1, len(data) + 1, 7):
        cut.write_bytes(data[:n])
        with TraceReader(str(cut)) as r:
            assert [x.fields["i"] for x in r.records()] == list(range(sum(e <= n for e in ends)))


def test_a_file_full_of_journal_lookalikes_is_searched_in_bounded_time(tmp_path, deadline):
    """Past a broken frame, page after page of heads that look like the journal's first frame, each claiming
    a payload of nearly 64 MiB with a wrong CRC: the reader reads a few of them, not all, and says so."""
    path = tmp_path / "lookalikes.kfdtrace"
    write(path, n=5, close=False)
    data = bytearray(path.read_bytes())
    end = len(data)
    data += bytes(F._page_after(end) - end)
    size = 60 << 20
    head = F.FRAME.pack(F.FRAME_MAGIC, F.RECORDS, F.STORED, 0, size, size, 1, 5, 0)
    with open(path, "wb") as f:
        f.write(data)
        for i in range(64):  # 64 lookalikes, one per page, in a sparse file of 64 MiB
            f.seek(len(data) + i * F.JOURNAL_PAGE)
            f.write(head)
        f.truncate(len(data) + size + 64 * F.JOURNAL_PAGE)
    reads = []
    real = F.TraceReader._payload
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(F.TraceReader, "_payload", lambda self, at, h: (reads.append(at), real(self, at, h))[1])
        with TraceReader(str(path)) as r:
            assert r.record_count == 5 and "journal" not in r.recovery_note
    assert len([a for a in reads if a >= len(data)]) == F.JOURNAL_CANDIDATES


def test_an_index_leaving_out_frames_or_misplacing_blobs_fails_verification(tmp_path):
    """Campaign 96: an index that left out the last records frame (its totals made to agree) made every tool read
    a shorter trace, and `info --check` passed it; so did one that left out a blobs frame in the middle, and one
    that sent a blob key to another blob's place. The first is rebuilt from the frames on open; each fails
    verify()."""
    path = tmp_path / "out.kfdtrace"
    write(path, n=60, frame_bytes=300, blob_every=10)
    at = F.FOOTER.unpack(path.read_bytes()[-F.FOOTER.size:])[1]
    with TraceReader(str(path)) as r:
        index = msgpack.unpackb(r._payload(at, r._frame_head(at)), strict_map_key=False)
    unclose(path)
    data = path.read_bytes()
    *_, last = index["frames"]
    assert last[1] == F.RECORDS
    shorter = {**index, "frames": index["frames"][:-1], "records": index["records"] - last[3],
               "counts": {t: n - last[4].get(t, 0) for t, n in index["counts"].items() if n - last[4].get(t, 0)}}
    path.write_bytes(closed_file(data, shorter))
    with TraceReader(str(path)) as r:
        assert r.recovered and r.recovery_note.startswith("trace index unusable (malformed index: the frames it "
                                                          "lists do not run up to it)")
        assert [x.n for x in r.records()] == list(range(60))
        with pytest.raises(TraceError, match=r"\(corrupt trace\)$"):
            r.verify()
    middle = next(e for e in index["frames"][1:-1] if e[1] == F.BLOBS)
    keys = [k for k, (offset, _) in index["blobs"].items() if offset == middle[0]]
    first, second = list(index["blobs"])[:2]
    swapped = {**index["blobs"], first: index["blobs"][second], second: index["blobs"][first]}
    lies = {"a blobs frame left out": ({**index, "frames": [e for e in index["frames"] if e is not middle],
                                        "blobs": {k: v for k, v in index["blobs"].items() if k not in keys}},
                                       rf"frame at byte {middle[0]}: a frame the index does not list"),
            "two blobs swapped": ({**index, "blobs": swapped}, f"the index places blob {first.hex()} where it is not")}
    for lie, (bad, message) in lies.items():
        path.write_bytes(closed_file(data, bad))
        with TraceReader(str(path)) as r:
            assert not r.recovered, lie
            with pytest.raises(TraceError, match=rf"{message} \(corrupt trace\)$"):
                r.verify()
    path.write_bytes(closed_file(data, index))  # the truth
    with TraceReader(str(path)) as r:
        assert not r.recovered and r.verify() == len(index["frames"])


def test_a_killed_writers_frames_and_journal_pass_the_full_check(tmp_path):
    """Campaign 97: the check that each frame begins where the one before ends (f64f827) took the journal, past its
    gap, for a frame the index does not list: `info --check` called a killed workload's trace corrupt."""
    path = tmp_path / "killed.kfdtrace"
    killed_writer(path, """
        for i in range(200):
            w.record("ioctl", t=i, i=i, pad=bytes(40))
            if i % 50 == 49:
                w.blob(bytes([i]) * 3000)
                w.blob(bytes([i]) * 3000)  # one blob twice: the scan keeps the first
        w.flush()
    """, frame_bytes=2048)
    with TraceReader(str(path)) as r:
        assert r.recovered and r.damage is None and "journal" in r.recovery_note, r.recovery_note
        assert len(r.frames) > 2 and r.verify() == len(r.frames)
        assert [x.fields["i"] for x in r.records()] == list(range(200))


def test_a_trace_that_changes_while_it_is_read_says_so_not_that_it_is_corrupt(tmp_path):
    """Campaign 101: `info --check` (or a replay) of a trace its capture was still writing sometimes said 'corrupt
    trace': the writer had moved its journal on and written a frame where the reader found it."""
    path = tmp_path / "live.kfdtrace"
    killed_writer(path, """
        for i in range(200):
            w.record("ioctl", t=i, i=i, pad=bytes(40))
        w.flush()
    """, frame_bytes=2048)
    with TraceReader(str(path)) as r:
        assert r.recovered and len(r.frames) > 2
        victim = r.frames[1].offset
        with open(path, "r+b") as f:  # what the writer does: another frame where this one was, the file grown
            f.seek(victim)
            f.write(b"\xff" * 64)
            f.seek(0, os.SEEK_END)
            f.write(bytes(4096))
        with pytest.raises(TraceError, match=r"live\.kfdtrace: it changed while it was read \(is its capture still "
                                             r"writing it\?\)"):
            r.verify()
    with TraceReader(str(path)) as r:
        assert r.damage is not None  # opened after the change: what it holds now is damaged
        with pytest.raises(TraceError, match=r"\(corrupt trace\)"):
            r.verify()
        with open(path, "ab") as f:  # and the file changes again: the damage found may be the writer's move
            f.write(bytes(4096))
        with pytest.raises(TraceError, match=r"it changed while it was read"):
            r.verify()


FORMAT_2_0 = os.path.join(os.path.dirname(__file__), "fixtures", "traces", "sdma_stress-gfx942-format2.kfdtrace")


@pytest.mark.parametrize("target", ["gfx942", "gfx1100"])
def test_a_format_2_0_trace_of_the_driver_before_event_mailboxes_reads_and_replays(target):
    """The sdma_stress sample as format 2.0 wrote it (sha256 keys, a frame per flush), recorded by a driver that
    raised TRAPs without writing their events' mailboxes (the kernel then sets nothing; its CPU waits poll)."""
    from kfdtrace.replay.engine import EXIT_OK, Options
    from kfdtrace.replay.session import replay_trace

    with TraceReader(FORMAT_2_0) as r:
        assert r.version == (2, 0) and r.submissions > 0
    report = replay_trace(FORMAT_2_0, Options(), emulate=target)
    assert report.status == EXIT_OK, report.lines()
