"""The trace container: round trips, dedup, the index, recovery, and hostile files."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import textwrap
import zlib

import pytest

from kfdtrace.traces import format as F
from kfdtrace.traces.format import TraceError, TraceReader, TraceWriter

RECORDS = [
    ("ioctl", {"seq": 1, "data": bytes(range(88)), "request": 0xC0604B02, "name": "CREATE_QUEUE"}),
    ("doorbell", {"queue": 0, "value": 2**64 - 1, "ring": b"\x01" * 28}),
    ("note", {"text": "ünïcode", "nested": [1, [2, {"k": None, "b": True}], -5]}),
]


def write(path, n=300, frame_bytes=2048, close=True, **header):
    w = TraceWriter(str(path), {"name": "t", **header}, frame_bytes=frame_bytes)
    for i in range(n):
        t, f = RECORDS[i % len(RECORDS)]
        w.record(t, i=i, **f)
        if i % 50 == 0:
            w.blob(bytes([i % 7]) * 5000)
    if close:
        w.close({"done": True})
    else:
        w.flush()
    return w


def frame(kind: int, codec: int, payload: bytes, raw_len: int | None = None) -> bytes:
    """A frame as the writer lays it out (checksum included), for crafting hostile files."""
    raw_len = len(payload) if raw_len is None else raw_len
    head = F.FRAME.pack(F.FRAME_MAGIC, kind, codec, 0, len(payload), raw_len, 1, 3, 0)[:-4]
    return head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload


def test_round_trip_every_record(tmp_path):
    path = tmp_path / "a.kfdtrace"
    w = write(path)
    with TraceReader(str(path)) as r:
        got = list(r.records())
        assert [(x.n, x.type) for x in got] == [(i, RECORDS[i % 3][0]) for i in range(300)]
        for i, rec in enumerate(got):
            assert rec.fields == {"i": i, **RECORDS[i % 3][1]}
        assert r.header == {"name": "t"} and r.summary == {"done": True} and not r.recovered
        assert r.record_count == 300 and r.submissions == 100 and r.counts["doorbell"] == 100
        assert r.version == (F.FORMAT_MAJOR, F.FORMAT_MINOR)
        assert r.verify() == w.stats["frames"] - 1  # all but the index


def test_blobs_are_deduplicated_and_random_access(tmp_path):
    path = tmp_path / "b.kfdtrace"
    with TraceWriter(str(path), {}) as w:
        k1, k2, k3 = w.blob(b"x" * 100), w.blob(b"x" * 100), w.blob(b"y" * 100)
        assert k1 == k2 != k3 and len(k1) == 16 and k1 == F.blob_key(b"x" * 100)
        assert w.stats["blobs"] == 2 and w.stats["dedup_hits"] == 1
    with TraceReader(str(path)) as r:
        assert r.blob(k3) == b"y" * 100 and r.blob(k1) == b"x" * 100
        with pytest.raises(TraceError, match="no blob"):
            r.blob(b"\0" * 16)


def test_filtering_by_type_start_and_submission(tmp_path):
    path = tmp_path / "c.kfdtrace"
    write(path)
    with TraceReader(str(path)) as r:
        assert [x.n for x in r.records({"doorbell"}, start=250)] == list(range(250, 300, 3))
        first = next(x for x in r.records_from_submission(60) if x.type == "doorbell")
        assert first.n <= 60 * 3 + 1  # starts at the frame holding submission 60, at or before it
        assert list(r.records_from_submission(10_000)) == []


def test_a_killed_writer_leaves_what_it_flushed(tmp_path):
    path = tmp_path / "k.kfdtrace"
    code = textwrap.dedent(f"""
        import os, signal
        from kfdtrace.traces.format import TraceWriter
        w = TraceWriter({str(path)!r}, {{"name": "killed"}})
        for i in range(1000):
            w.record("doorbell", i=i)
        w.blob(b"z" * 10)
        w.flush()
        w.record("lost", i=-1)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert proc.returncode == -signal.SIGKILL
    with TraceReader(str(path)) as r:
        assert r.recovered and "not closed" in r.recovery_note and r.summary is None
        assert [x.fields["i"] for x in r.records()] == list(range(1000))
        assert r.blob(F.blob_key(b"z" * 10)) == b"z" * 10


def test_truncation_at_every_offset_recovers_or_fails_cleanly(tmp_path):
    path = tmp_path / "full.kfdtrace"
    write(path, n=60, frame_bytes=512)
    data = path.read_bytes()
    cut = tmp_path / "cut.kfdtrace"
    recovered = 0
    for n in range(0, len(data), 7):
        cut.write_bytes(data[:n])
        try:
            with TraceReader(str(cut)) as r:
                recs = list(r.records())
                assert [x.n for x in recs] == list(range(len(recs)))
                recovered += r.recovered
        except TraceError as exc:
            assert "\n" not in str(exc) and str(cut) in str(exc)
    assert recovered > 10


def test_flipped_bytes_are_caught(tmp_path):
    path = tmp_path / "f.kfdtrace"
    write(path, n=60, frame_bytes=512)
    data = path.read_bytes()
    bad = tmp_path / "bad.kfdtrace"
    caught = 0
    for pos in range(0, len(data), max(1, len(data) // 97)):
        flipped = bytearray(data)
        flipped[pos] ^= 0x40
        bad.write_bytes(bytes(flipped))
        try:
            with TraceReader(str(bad)) as r:
                r.verify()
                list(r.records())
                assert r.recovered  # a flip in the index or footer: rebuilt by scanning
        except TraceError:
            caught += 1
    assert caught > 50


@pytest.mark.parametrize("content", [b"", b"KFD", os.urandom(4096), b"KFDTRACE" + os.urandom(200)])
def test_garbage_files(tmp_path, content):
    bad = tmp_path / "g.kfdtrace"
    bad.write_bytes(content)
    with pytest.raises(TraceError) as err:
        TraceReader(str(bad))
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(TraceError, match="No such file"):
        TraceReader(str(tmp_path / "nope.kfdtrace"))


def test_a_frame_claiming_huge_sizes_is_refused_without_allocating(tmp_path):
    path = tmp_path / "h.kfdtrace"
    write(path, n=3, close=False)
    with open(path, "ab") as f:  # a well-formed frame that says it inflates to 4 GiB
        f.write(frame(F.RECORDS, F.ZSTD, b"x" * 16, raw_len=0xFFFFFFFF))
    with TraceReader(str(path)) as r:
        assert r.recovered and "limit" in r.recovery_note and r.record_count == 3


def test_newer_major_is_rejected_naming_both_versions(tmp_path):
    path = tmp_path / "v.kfdtrace"
    write(path, n=3)
    data = bytearray(path.read_bytes())
    struct.pack_into("<HH", data, 8, F.FORMAT_MAJOR + 1, 4)
    path.write_bytes(bytes(data))
    with pytest.raises(TraceError, match=rf"format {F.FORMAT_MAJOR + 1}\.4; this kfdtrace reads format "
                                         rf"{F.FORMAT_MAJOR}\.x: upgrade"):
        TraceReader(str(path))


def test_newer_minor_is_read(tmp_path):
    path = tmp_path / "m.kfdtrace"
    write(path, n=3)
    data = bytearray(path.read_bytes())
    struct.pack_into("<H", data, 10, F.FORMAT_MINOR + 7)
    path.write_bytes(bytes(data))
    with TraceReader(str(path)) as r:
        assert r.version == (F.FORMAT_MAJOR, F.FORMAT_MINOR + 7) and r.record_count == 3


def test_msgpack_extension_types_are_refused(tmp_path):
    import msgpack

    path = tmp_path / "e.kfdtrace"
    write(path, n=3, close=False)
    payload = msgpack.packb([["note", {"x": msgpack.ExtType(5, b"code")}]])
    with open(path, "ab") as f:
        f.write(frame(F.RECORDS, F.STORED, payload))
    with TraceReader(str(path)) as r:
        assert r.record_count == 3 and "extension type" in r.recovery_note
