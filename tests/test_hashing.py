"""Content keys: the key function of each format major, blobs checked with their file's, format 1.x traces
still read and replayed with SHA-256 keys, and capture hashing chunks in place."""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import sys

import pytest
import xxhash

from kfdtrace.capture.memory import MemoryRecorder, TrackedBuffer
from kfdtrace.capture.trace_file import TraceFile
from kfdtrace.traces import format as F
from kfdtrace.traces.format import FrameError, TraceError, TraceReader, TraceWriter

FORMAT1 = os.path.join(os.path.dirname(__file__), "fixtures", "traces", "ping_pong-gfx1100-format1.kfdtrace")
CHUNK = 4096


def sha256_key(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()[:16]


def test_each_major_has_its_key_function():
    data = bytes(range(256)) * 100
    assert F.KEY_FUNCTIONS[1](data) == sha256_key(data)
    assert F.KEY_FUNCTIONS[2](data) == xxhash.xxh3_128(data).digest() and len(F.KEY_FUNCTIONS[2](data)) == 16
    assert F.KEY_FUNCTIONS[3] is F.KEY_FUNCTIONS[2]  # 3.0 changed how ring bytes are stored, not the keys
    assert F.FORMAT_MAJOR == 3 and F.blob_key(data) == F.KEY_FUNCTIONS[3](data)
    assert F.blob_key(memoryview(data)[100:300]) == F.blob_key(data[100:300])  # any buffer, no copy needed


def test_a_written_trace_is_3_x_and_keyed_with_xxh3(tmp_path):
    path = str(tmp_path / "k.kfdtrace")
    with TraceWriter(path, {}) as w:
        key = w.blob(b"content" * 1000)
    assert key == xxhash.xxh3_128_digest(b"content" * 1000)
    with TraceReader(path) as r:
        assert r.version == (3, F.FORMAT_MINOR) and r.blob_key is F.KEY_FUNCTIONS[3]
        assert r.blob(key) == b"content" * 1000


@pytest.mark.parametrize("wrong_key", [F.blob_key(b"original"), sha256_key(b"flipped")],
                         ids=["another content's key", "the 1.x key of this content"])
def test_a_corrupted_blob_in_a_2_x_trace_is_caught(tmp_path, wrong_key):
    """CRC-valid frames whose blob does not match its key: by reading it and by verify()."""
    path = str(tmp_path / "c.kfdtrace")
    with TraceWriter(path, {}) as w:
        w.blob(b"flipped", wrong_key)
        w.record("mem", key=wrong_key)
    with TraceReader(path) as r:
        with pytest.raises(TraceError, match=f"blob {wrong_key.hex()} does not match its content"):
            r.blob(wrong_key)
        with pytest.raises(FrameError, match="does not match its content"):
            r.verify()


def test_a_1_x_trace_reads_with_sha256_keys():
    with TraceReader(FORMAT1) as r:
        assert r.version == (1, 0) and r.blob_key is F.KEY_FUNCTIONS[1] and not r.recovered
        assert r.verify() > 0  # every blob checked against its SHA-256 key
        keys = {x.fields["key"] for x in r.records({"mem"})}
        assert keys and all(sha256_key(r.blob(k)) == k for k in keys)


def test_a_1_x_trace_replays_verified():
    res = subprocess.run([sys.executable, "-m", "kfdtrace.replay.cli", FORMAT1, "--emulate-recorded", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert '"verified": 0' not in res.stdout and '"verified"' in res.stdout


def test_an_unknown_major_is_refused_in_one_line(tmp_path):
    path = tmp_path / "v4.kfdtrace"
    with TraceWriter(str(path), {}) as w:
        w.record("note", i=1)
    data = bytearray(path.read_bytes())
    data[8:10] = (4).to_bytes(2, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(TraceError) as exc:
        TraceReader(str(path))
    assert str(exc.value) == (f"{path}: is trace format 4.{F.FORMAT_MINOR}; this kfdtrace reads formats 1.x, 2.x "
                              "and 3.x: upgrade kfdtrace")


# -- capture hashes chunks where they lie -------------------------------------------------------------------
@pytest.fixture
def memory(tmp_path):
    """A MemoryRecorder over a real trace, a 3.5-chunk buffer of host memory it tracks, and the trace's path."""
    path = str(tmp_path / "m.kfdtrace")
    trace = TraceFile(path, {"chunk_size": CHUNK})
    content = bytes(range(256)) * (CHUNK * 7 // 512)
    host = ctypes.create_string_buffer(content, len(content))
    buf = TrackedBuffer(handle=1, gpu_id=1, va=0x10000, size=len(host.raw), domain="gtt", flags=0, mmap_offset=0,
                        cpu=ctypes.addressof(host), name="b")
    yield MemoryRecorder(trace, CHUNK), buf, host, path
    trace.close({})


def mem_records(path: str) -> list[dict]:
    with TraceReader(path) as r:
        return [x.fields for x in r.records({"mem"})]


def test_a_write_inside_a_chunk_records_the_whole_chunk(memory):
    recorder, buf, host, path = memory
    recorder.record(buf, CHUNK + 10, 5)
    recorder.record(buf, 3 * CHUNK + 1, 100)  # the last chunk is half a chunk
    recorder.trace.flush()
    got = [(m["va"] - buf.va, m["size"], m["key"]) for m in mem_records(path)]
    assert got == [(CHUNK, CHUNK, F.blob_key(host.raw[CHUNK:2 * CHUNK])),
                   (3 * CHUNK, CHUNK // 2, F.blob_key(host.raw[3 * CHUNK:]))]


def test_a_checkpoint_stores_only_the_chunks_that_changed(memory):
    recorder, buf, host, path = memory
    first = recorder.checkpoint_entry(buf)
    assert first["keys"] == [F.blob_key(host.raw[lo:lo + CHUNK]) for lo in range(0, buf.size, CHUNK)]
    assert first["hash"] == F.blob_key(b"".join(first["keys"]))
    stored = recorder.trace.stats["blobs"]
    assert recorder.checkpoint_entry(buf) == first  # unchanged: the same entry (the GPU's write verified), ...
    assert recorder.trace.stats["blobs"] == stored  # ... and nothing stored again
    ctypes.memset(ctypes.addressof(host) + 2 * CHUNK + 7, 0xAB, 3)
    second = recorder.checkpoint_entry(buf)
    assert [i for i, (a, b) in enumerate(zip(first["keys"], second["keys"], strict=True)) if a != b] == [2]
    assert recorder.trace.stats["blobs"] == stored + 1
    recorder.trace.close({})
    with TraceReader(path) as r:
        assert r.blob(second["keys"][2]) == host.raw[2 * CHUNK:3 * CHUNK]


def test_a_checkpoint_given_fresh_chunks_reads_only_those(memory):
    recorder, buf, host, _ = memory
    first = recorder.checkpoint_entry(buf)
    ctypes.memset(ctypes.addressof(host) + CHUNK, 0x11, 4)  # both changed since; only chunk 2 is read again
    ctypes.memset(ctypes.addressof(host) + 2 * CHUNK, 0x22, 4)
    second = recorder.checkpoint_entry(buf, fresh={2})
    assert second["keys"][:2] == first["keys"][:2]
    assert second["keys"][2] == F.blob_key(host.raw[2 * CHUNK:3 * CHUNK]) != first["keys"][2]
    assert second["keys"][3] == first["keys"][3]


def test_recording_a_range_leaves_out_the_chunks_skipped_and_those_recorded_as_they_are(memory):
    recorder, buf, host, path = memory
    assert recorder.record(buf, 0, buf.size) == 4
    for i in (0, 1, 3):
        ctypes.memset(ctypes.addressof(host) + i * CHUNK + 9, 0x5A, 2)
    assert recorder.record(buf, 0, buf.size, skip={1}) == 2
    recorder.trace.flush()
    got = [(m["va"] - buf.va, m["key"]) for m in mem_records(path)][4:]
    assert got == [(0, F.blob_key(host.raw[:CHUNK])), (3 * CHUNK, F.blob_key(host.raw[3 * CHUNK:]))]
    assert recorder.changed(buf, CHUNK, 1) and not recorder.changed(buf, 0, CHUNK)
