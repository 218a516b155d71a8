"""Untrusted traces (issue 8): each test crafts one small hostile trace and checks it is refused with one line,
quickly and in bounded memory, never with a traceback."""

from __future__ import annotations

import copy
import os
import struct
import subprocess
import sys
import textwrap
import zlib

import msgpack
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from kfdtrace.capture import record
from kfdtrace.driver import System
from kfdtrace.driver import kfd_ioctl as K
from kfdtrace.driver.packets import MAX_IB_DEPTH
from kfdtrace.replay.engine import Divergence
from kfdtrace.traces import format as F
from kfdtrace.traces.format import TraceError, TraceReader, TraceWriter

from .test_replay import rewrite, sample

SAMPLE = os.path.join(os.path.dirname(__file__), "..", "traces", "samples", "sdma_stress-gfx942.kfdtrace")
EMPTY_ARRAYS = (64 << 20) - 64  # a field of 1-byte empty arrays filling a frame: 64M objects from a few KB


def file_header(header: dict) -> bytes:
    raw = msgpack.packb(header)
    return F.FILE_HEADER.pack(F.MAGIC, F.FORMAT_MAJOR, F.FORMAT_MINOR, len(raw), zlib.crc32(raw)) + raw


def frame(kind: int, raw: bytes, count: int) -> bytes:
    """A zstd frame of `raw` with a valid CRC, as the writer lays it out."""
    payload = zstandard.ZstdCompressor(level=3).compress(raw)
    head = F.FRAME.pack(F.FRAME_MAGIC, kind, F.ZSTD, 0, len(payload), len(raw), count, 0, 0)[:-4]
    return head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload


def bloated_records(arrays: int) -> bytes:
    """One record [t, {f: [`arrays` arrays of empty arrays]}] filling a frame: 64M objects from a few KB."""
    inner = EMPTY_ARRAYS // arrays - 5
    return (b"\x91\x92\xa1t\x81\xa1f\xdd" + struct.pack(">I", arrays)
            + (b"\xdd" + struct.pack(">I", inner) + b"\x90" * inner) * arrays)


def run_bounded(path: str, code: str) -> subprocess.CompletedProcess:
    """Run `code` (with `path` bound) in a fresh interpreter that prints its peak RSS growth in MB last."""
    script = textwrap.dedent(f"""
        import resource, sys
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        path = {path!r}
    """) + textwrap.dedent(code) + textwrap.dedent("""
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
    """)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("arrays, why", [(1, "exceeds max_array_len"), (64, "more objects than a frame")])
def test_a_few_kb_declaring_64m_empty_arrays_is_refused_in_bounded_memory(tmp_path, arrays, why):
    path = tmp_path / "bloat.kfdtrace"
    path.write_bytes(file_header({"name": "bloat"}) + frame(F.RECORDS, bloated_records(arrays), 1))
    assert path.stat().st_size < 64 << 10
    res = run_bounded(str(path), """
        from kfdtrace.traces.format import TraceReader
        from kfdtrace.traces.info import describe
        with TraceReader(path) as r:
            print(r.recovery_note)
            assert r.record_count == 0
        describe(path)
    """)
    assert res.returncode == 0, res.stderr
    note, growth = res.stdout.splitlines()
    assert why in note
    assert int(growth) < 200, f"decoding grew the process by {growth} MB"


def test_a_bloated_index_frame_is_refused_and_the_frames_scanned(tmp_path):
    path = tmp_path / "bloat-index.kfdtrace"
    data = file_header({"name": "bloat"})
    index = frame(F.INDEX, bloated_records(64), 0)
    body = F.FOOTER_MAGIC + struct.pack("<QQ", len(data), len(index))
    path.write_bytes(data + index + body + struct.pack("<I", zlib.crc32(body)))
    res = run_bounded(str(path), """
        from kfdtrace.traces.format import TraceReader
        with TraceReader(path) as r:
            print(r.recovery_note)
    """)
    assert res.returncode == 0, res.stderr
    note, growth = res.stdout.splitlines()
    assert note.startswith("trace index unusable (frame at byte") and "more objects" in note
    assert int(growth) < 200


_SCALARS = st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.text(max_size=4) | st.binary(max_size=4)
_MSGPACK = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=6)
                        | st.dictionaries(st.integers(0, 9), inner, max_size=4), max_leaves=40)


@settings(max_examples=300, deadline=None)
@given(obj=_MSGPACK)
def test_what_the_object_budget_counts_is_under_twice_the_payload(obj):
    """The reason a payload of at most budget / 2 bytes is decoded without counting: what it could make
    stays within the budget."""
    raw = msgpack.packb(obj)
    count = F._Budget(1 << 62)
    msgpack.unpackb(raw, strict_map_key=False, list_hook=count.list_hook, object_hook=count.object_hook)
    assert (1 << 62) - count.left <= 2 * len(raw)


def test_an_honest_frame_of_small_records_fits_the_object_budget(tmp_path):
    path = str(tmp_path / "small.kfdtrace")
    with TraceWriter(path, {}, frame_bytes=1 << 20) as w:
        for i in range(200_000):
            w.record("n", a=i % 2)
    with TraceReader(path) as r:
        assert sum(1 for _ in r.records()) == 200_000


def write_blob_trace(path: str, data: bytes, key: bytes) -> None:
    """A closed trace with one blob stored under `key` (which need not be its content's)."""
    with TraceWriter(path, {}) as w:
        w.blob(data, key)
        w.record("mem", key=key)


@pytest.mark.parametrize("key", [3_000_000_000, 2**64 - 1, 1.5, "k" * 16, b"short", None, [1] * 16])
def test_a_blob_key_that_is_not_16_bytes_is_refused(tmp_path, key):
    path = str(tmp_path / "t.kfdtrace")
    write_blob_trace(path, b"data", F.blob_key(b"data"))
    with TraceReader(path) as r, pytest.raises(TraceError, match="a blob key is 16 bytes, not"):
        r.blob(key)


def test_a_blob_whose_content_does_not_match_its_key_is_corrupt(tmp_path):
    path = str(tmp_path / "t.kfdtrace")
    write_blob_trace(path, b"flipped", F.blob_key(b"original"))
    with TraceReader(path) as r:
        with pytest.raises(TraceError, match="does not match its content"):
            r.blob(F.blob_key(b"original"))


# -- replay and info on malformed but CRC-valid traces ------------------------------------------------------
PING_PONG = os.path.join(os.path.dirname(SAMPLE), "ping_pong-gfx1100.kfdtrace")


def replay(path: str, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kfdtrace.replay.cli", path, *(options or ["--emulate-recorded"])],
                          capture_output=True, text=True, timeout=120)


def refused(res: subprocess.CompletedProcess, status: int, text: str) -> None:
    """Refused with exit `status` and one line on stderr holding `text`, no traceback."""
    assert res.returncode == status, res.stdout + res.stderr
    assert res.stderr.count("\n") == 1 and text in res.stderr and "Traceback" not in res.stderr, res.stderr


def edit_first(type_: str, change) -> callable:
    """A rewrite edit applying `change(fields, reader)` to the first record of `type_`."""
    done = []

    def edit(rec, reader, writer):
        f = dict(rec.fields)
        if rec.type == type_ and not done:
            done.append(change(f, reader, writer))
        return f
    return edit


def edited_record(path: str) -> int:
    """The number of the first mem record of `path` (the one edit_first("mem", ...) changed)."""
    with TraceReader(path) as r:
        return next(m.n for m in r.records({"mem"}))


def buffer_of(reader: TraceReader, addr: int) -> tuple[int, int]:
    """(va, size) of the recorded allocation holding `addr`."""
    return next((a.fields["va"], a.fields["size"]) for a in reader.records({"alloc"})
                if a.fields["va"] <= addr < a.fields["va"] + a.fields["size"])


@pytest.mark.parametrize("back", [1, 4])
def test_a_cpu_signal_at_a_buffers_last_bytes_is_refused(tmp_path, back):
    path = str(tmp_path / "t.kfdtrace")

    def at_end(f, reader, writer):
        va, size = buffer_of(reader, f["addr"])
        f["addr"] = va + size - back

    rewrite(PING_PONG, path, edit_first("cpu_signal", at_end))
    refused(replay(path), 4, "is not 8-byte aligned")


def test_a_cpu_write_running_past_its_buffer_is_refused(tmp_path):
    path = str(tmp_path / "t.kfdtrace")

    def at_end(f, reader, writer):
        va, size = buffer_of(reader, f["va"])
        f["va"], f["key"], f["size"] = va + size - 4, writer.blob(b"\x01" * 16), 16

    rewrite(PING_PONG, path, edit_first("mem", at_end))
    refused(replay(path), 4, "run past the end of the buffer")
    # campaign 52: dump --buffers wrote each such record's blob (one 16 MiB blob named by many: 321 MB) unchecked
    out = tmp_path / "dumped"
    res = subprocess.run([sys.executable, "-m", "kfdtrace", "dump", path, "--buffers", str(out)], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 1 and "are not inside one buffer (corrupt trace)" in res.stderr, res.stderr
    assert not [f for f in os.listdir(out) if "cpu-write" in f and f.startswith(f"{edited_record(path):08d}")]


@pytest.mark.parametrize("size", [-4096, 1 << 62, 4 * 4096], ids=["negative", "huge", "4x"])
def test_a_cpu_write_claiming_another_size_than_its_blob_is_refused(size, tmp_path):
    """Found by helper 36: the record's size was passed over (the blob's taken), and the replay said OK."""
    path = str(tmp_path / "t.kfdtrace")
    rewrite(PING_PONG, path, edit_first("mem", lambda f, reader, writer: f.update(size=size)))
    refused(replay(path), 4, f"it claims {size} bytes, its blob holds")


@pytest.mark.parametrize("type_, change, text", [
    ("alloc", lambda f, r, w: f.pop("domain"), "(alloc) has no 'domain' field"),
    ("doorbell", lambda f, r, w: f.update(ring=7), "(doorbell) has a malformed (int) 'ring' field"),
    ("mem", lambda f, r, w: f.update(key=1.5), "(mem) has a malformed (float) 'key' field"),
    ("cpu_signal", lambda f, r, w: f.update(value=-1), "(cpu_signal) has a malformed (int) 'value' field"),
    ("checkpoint", lambda f, r, w: f.update(buffers=[{"va": 0, "size": 0, "keys": [3]}]),
     "(checkpoint) has a malformed (list) 'buffers' field"),
    # campaign 52: an OverflowError (internal error) in replay, a traceback in diff and trim --reconstruct
    ("alloc", lambda f, r, w: f.update(va=(1 << 64) - 4096), "(alloc) runs past the end of the 64-bit address space"),
])
def test_a_malformed_record_is_bad_input(tmp_path, type_, change, text):
    path = str(tmp_path / "t.kfdtrace")
    rewrite(PING_PONG, path, edit_first(type_, change))
    refused(replay(path), 4, text)


@pytest.mark.parametrize("header, text", [
    ({"gpus": 5}, "the header has a malformed (int) 'gpus' field"),
    ({"chunk_size": 4096.0}, "the header has a malformed (float) 'chunk_size' field"),
    ({"chunk_size": None}, "gives no chunk_size"),
    ({"chunk_size": -1}, "the header's chunk_size -1 is no size"),
])
def test_a_malformed_header_is_bad_input(tmp_path, header, text):
    path = str(tmp_path / "t.kfdtrace")
    rewrite(PING_PONG, path, lambda rec, r, w: rec.fields, lambda h: {**h, **header})
    refused(replay(path), 4, text)


@pytest.mark.parametrize("header, options, text", [
    ({"gpus": 5}, ["--emulate", "gfx942", "--device", "0"], "the header has a malformed (int) 'gpus' field"),
    ({"topology": 5}, ["--emulate-recorded"], "the header has a malformed (int) 'topology' field"),
    ({"topology": {"nodes": [{"properties": "x"}]}}, ["--emulate-recorded"], "the header's topology cannot be read"),
])
def test_a_malformed_header_is_bad_input_with_any_target_option(tmp_path, header, options, text):
    path = str(tmp_path / "t.kfdtrace")
    rewrite(PING_PONG, path, lambda rec, r, w: rec.fields, lambda h: {**h, **header})
    refused(replay(path, *options), 4, text)


@pytest.mark.parametrize("entries, key, value, text", [
    # a cache's sibling map that long had the emulated sysfs written out bit by bit (the process was killed)
    ("caches", "sibling_map_bits", 2**34 + 1, "sibling_map_bits is 17179869185: a properties file holds a bit list "
                                              "of at most 2048"),
    ("io_links", "max_bandwidth", -1, "max_bandwidth is -1: properties are unsigned"),  # was an internal error
])
def test_a_recorded_property_no_sysfs_file_holds_is_bad_input(tmp_path, entries, key, value, text):
    """Found by fuzzing the header's topology (replay --emulate-recorded)."""
    path = str(tmp_path / "t.kfdtrace")

    def changed(header: dict) -> dict:
        topology = copy.deepcopy(header["topology"])
        node = next(n for n in topology["nodes"] if n.get(entries))
        node[entries][0][key] = value
        return {**header, "topology": topology}
    rewrite(PING_PONG, path, lambda rec, r, w: rec.fields, changed)
    refused(replay(path, "--emulate-recorded"), 4, text)


def test_a_blob_that_does_not_match_its_key_is_bad_input_in_replay(tmp_path):
    path = str(tmp_path / "t.kfdtrace")

    def flip(f, reader, writer):
        data = bytearray(reader.blob(f["key"]))
        data[0] ^= 1
        writer.blob(bytes(data), f["key"])  # stored under the old key, as a CRC-fixed flipped byte leaves it

    rewrite(PING_PONG, path, edit_first("mem", flip))
    refused(replay(path), 4, "does not match its content (corrupt trace)")


def test_a_checkpoint_entry_whose_hash_does_not_match_its_keys_is_corrupt(tmp_path):
    """Campaign 47's bug16: the entry's `hash` went unread, so an edited one replayed OK and passed `info --check`."""
    path = str(tmp_path / "t.kfdtrace")

    done = []

    def flip(rec, reader, writer):
        f = dict(rec.fields)
        if rec.type == "checkpoint" and f["buffers"] and not done:
            f["buffers"] = [dict(b) for b in f["buffers"]]
            f["buffers"][0]["hash"] = bytes([f["buffers"][0]["hash"][0] ^ 1]) + f["buffers"][0]["hash"][1:]
            done.append(rec.n)
        return f

    rewrite(PING_PONG, path, flip)
    refused(replay(path), 4, "does not match the entry's keys (corrupt trace)")
    res = subprocess.run([sys.executable, "-m", "kfdtrace", "info", "--check", path], capture_output=True, text=True,
                         timeout=60)
    refused(res, 1, "does not match the entry's keys (corrupt trace)")


@pytest.mark.parametrize("how", ["of no bytes", "twice"])
def test_a_checkpoint_entry_of_no_bytes_or_twice_is_corrupt(how, tmp_path):
    """Campaign 57: entries cut to no bytes counted as buffers verified ("every checkpoint matched" with not a
    byte compared), and an entry repeated counted again."""
    path = str(tmp_path / "t.kfdtrace")

    def edit(rec, reader, writer):
        f = dict(rec.fields)
        if rec.type == "checkpoint" and f["buffers"]:
            f["buffers"] = [{**b, "size": 0, "keys": [], "hash": None} for b in f["buffers"]] if how == "of no bytes" \
                else f["buffers"] * 2
        return f

    rewrite(PING_PONG, path, edit)
    why = "an entry of no bytes" if how == "of no bytes" else "a second entry"
    refused(replay(path), 4, f"{why} for the buffer at 0x")
    res = subprocess.run([sys.executable, "-m", "kfdtrace", "info", "--check", path], capture_output=True, text=True,
                         timeout=60)
    refused(res, 1, f"{why} for the buffer at 0x")


def test_a_code_object_record_naming_another_target_than_its_kernels_are_in_is_corrupt(tmp_path):
    """Campaign 57: a code_object record of a bundle, its target edited to the other build's: replay took that
    build's kernel descriptors, ran another kernel than the recording and said DIVERGED. The record's own map of
    kernels to descriptor addresses is checked against the object it names."""
    path = str(tmp_path / "t.kfdtrace")

    def edit(rec, reader, writer):
        return {**rec.fields, "target": "gfx1100"} if rec.type == "code_object" else rec.fields

    rewrite(sample("vector_add_aql-gfx942"), path, edit)
    refused(replay(path), 4, "is not where its code object for gfx1100 loaded at 0x")


@pytest.mark.parametrize("size", [1 << 63, 0x10])
def test_a_code_object_that_cannot_lie_in_its_buffer_is_corrupt(size, tmp_path):
    """Campaign 64: the code object's buffer cut to a page and the record's size to 2^63 (or 16 bytes): its image
    and kernel descriptors lay outside every buffer, and replay said OK."""
    path = str(tmp_path / "t.kfdtrace")
    with TraceReader(sample("vector_add_aql-gfx942")) as r:
        va = next(rec.fields["va"] for rec in r.records(["code_object"]))

    def edit(rec, reader, writer):
        if rec.type == "code_object":
            return {**rec.fields, "size": size}
        if rec.type in ("alloc", "buffer") and rec.fields["va"] == va:
            return {**rec.fields, "size": 0x1000}
        return rec.fields

    rewrite(sample("vector_add_aql-gfx942"), path, edit)
    refused(replay(path), 4, "-byte image, in 0x")


def test_an_index_hiding_a_frames_checkpoint_is_corrupt_not_a_frame_skipped(tmp_path):
    """Campaign 52: an index whose counts for a frame leave its checkpoint out made replay skip the frame (it
    reads the types it handles) and verify nothing there: OK for a trace edited to diverge. Every frame read is
    checked against its counts, and the survey reads them all."""
    with TraceReader(PING_PONG) as r:
        victim = next(i for i, e in enumerate(r.frames) if e.counts.get("checkpoint"))
        e = r.frames[victim]
        r.frames[victim] = e._replace(counts={t: n for t, n in e.counts.items() if t != "checkpoint"})
        assert not any(rec.type == "checkpoint" and rec.n >= e.first and rec.n < e.first + e.count
                       for rec in r.records({"checkpoint"}))  # what the skip hides
        with pytest.raises(TraceError, match=r"record counts differ from the index \(corrupt trace\)"):
            list(r.records())


@pytest.mark.parametrize("how", ["in flight", "not CPU-visible"])
def test_a_checkpoint_entry_a_replay_passes_over_is_corrupt_or_said(tmp_path, how):
    """Campaign 52: an entry for a buffer the same checkpoint lists in flight, or one in VRAM the replay's CPU
    cannot read, was passed over: a trace edited to diverge there replayed OK, saying no checkpoint compared
    any memory. The first is corrupt; the second a recording with a large BAR makes, and the OK says so."""
    path = str(tmp_path / "t.kfdtrace")
    with TraceReader(PING_PONG) as r:  # the first checkpoint's first buffer
        first = next(c.fields["buffers"][0] for c in r.records({"checkpoint"}) if c.fields["buffers"])
    marked = []

    def edit(rec, reader, writer):
        f = dict(rec.fields)
        if how == "in flight" and rec.type == "checkpoint" and f["buffers"] and not marked:
            marked.append(rec.n)
            f["in_flight"] = [*f["in_flight"], {"va": first["va"], "name": first["name"]}]
        if how != "in flight" and rec.type == "alloc" and f["va"] == first["va"]:
            f.update(domain="vram", flags=K.AllocMemFlags.VRAM | K.AllocMemFlags.WRITABLE)
        return f

    rewrite(PING_PONG, path, edit)
    if how == "in flight":
        refused(replay(path), 4, "in flight as well (corrupt trace)")
    else:
        res = replay(path)
        assert res.returncode == 0 and "checkpoints compare no buffer this replay's CPU cannot read" in res.stdout, \
            res.stdout + res.stderr


def test_a_wait_made_long_by_the_traces_own_times_is_bounded(tmp_path):
    """Campaign 52: a wait's limit comes from how long the recording took, told by the records' times: moved 2**62
    ns on, an unreachable wait waited ~580 years. It is bounded by the recorded wait's own timeout (4x)."""
    path, shifted = str(tmp_path / "t.kfdtrace"), []

    def edit(rec, reader, writer):
        f = dict(rec.fields)
        if rec.type == "cpu_wait" and not shifted:
            shifted.append(rec.n)
            f.update(value=0xDEADBEEF, timeout=0.25)
        if shifted and f.get("t") is not None:
            f["t"] += 1 << 62
        return f

    rewrite(PING_PONG, path, edit)
    res = replay(path, "--emulate-recorded", "--timeout", "0.1")  # the limit used is in the verdict
    assert res.returncode == 2 and "HANG: the replay waited 1 s" in res.stdout + res.stderr, res.stdout + res.stderr


def info(path: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kfdtrace", "info", path], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("header, summary, text", [
    ({"gpus": 5}, {}, "the header has a malformed (int) 'gpus' field"),
    ({"gpus": [{"node": 1}]}, {}, "the header has a malformed (list) 'gpus' field"),
    ({}, {"duration_ns": None}, "the summary has no 'duration_ns' field"),
])
def test_info_on_a_malformed_header_or_summary_is_one_line(tmp_path, header, summary, text):
    path = str(tmp_path / "t.kfdtrace")
    with TraceReader(PING_PONG) as r:
        h, s = {**r.header, **header}, {**r.summary, **summary}
    with TraceWriter(path, {k: v for k, v in h.items() if v is not None}) as w:
        w.record("note")
        w.close({k: v for k, v in s.items() if v is not None})
    refused(info(path), 1, text)


def test_an_indirect_buffer_pointing_at_itself_is_bad_input(tmp_path):
    """Recorded honestly, then its IB's CPU write replaced by an INDIRECT to the IB itself."""
    path, cyclic = str(tmp_path / "ib.kfdtrace"), str(tmp_path / "cycle.kfdtrace")
    with record(path), System.open(emulate="gfx1201") as system:
        gpu = system.devices[0]
        q = gpu.sdma_queue()
        out, ib = gpu.alloc(4096, "gtt", name="out"), gpu.alloc(4096, "gtt", name="ib")
        body = q.dialect.build("FENCE", addr=out.va, data=1) + q.dialect.build("NOP") * 4
        ib.write(body)
        q.packet("INDIRECT", ib_base=ib.va, ib_size=len(body) // 4).sync()
        loop = q.dialect.build("INDIRECT", ib_base=ib.va, ib_size=len(body) // 4)
        loop += q.dialect.build("NOP") * ((len(body) - len(loop)) // 4)

    def cycle(f, reader, writer):
        assert f["va"] == ib.va
        f["key"] = writer.blob(loop + reader.blob(f["key"])[len(loop):])

    rewrite(path, cyclic, edit_first("mem", cycle))
    res = subprocess.run([sys.executable, "-m", "kfdtrace.replay.cli", cyclic, "--emulate", "gfx1100"],
                         capture_output=True, text=True, timeout=120)
    refused(res, 4, f"indirect buffers chain more than {MAX_IB_DEPTH} deep")


def divergence(expected: bytes, actual: bytes) -> Divergence:
    return Divergence(1, "out", 0x1000, 0x40, len(actual), expected, actual, None)


def test_a_divergence_whose_recorded_content_matches_says_so():
    assert "the recorded content (4 bytes) does not match its hash" in divergence(b"abcd", b"abcd").describe()
    assert "the recorded content has 2 bytes, not 4" in divergence(b"ab", b"abcd").describe()
    assert "first at +0x41: expected 61 62" in divergence(b"ab", b"aX").describe()


@pytest.mark.parametrize("type_, fields, status, text", [
    ("alloc", {"va": 1}, 4, "(alloc): buffer address 0x1 is not page aligned"),
    ("queue", {"ring_size": 3}, 4, "(queue): ring size 3 must be a power of two"),
    ("doorbell", {"ring": b"\xff" * 7}, 3, "unknown packet op=0xff"),
])
def test_a_record_the_target_refuses_is_one_line(tmp_path, type_, fields, status, text):
    path = str(tmp_path / "t.kfdtrace")
    rewrite(PING_PONG, path, edit_first(type_, lambda f, r, w: f.update(fields)))
    refused(replay(path), status, text)


GUARD_PROBE = """
import ctypes, os
os.environ["KFDTRACE_GUARD_PAGES"] = "1"
from kfdtrace.driver import System
with System.open(emulate="gfx942") as system:
    gpu = system.devices[0]
    buf = gpu.alloc(4096, "gtt")
    placed = gpu.alloc(4096, "gtt", va=buf.va + (64 << 20))
    print("mapped", flush=True)
    ctypes.string_at(placed.cpu + 4096, 1)  # the page after a buffer placed at its address: must fault
"""


def test_guard_pages_make_an_access_past_a_placed_buffer_fault():
    res = subprocess.run([sys.executable, "-c", GUARD_PROBE], capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == "mapped" and res.returncode == -11, (res.returncode, res.stderr[-400:])


@pytest.mark.parametrize("name", ["sdma_stress-gfx942", "peer_ring-2xgfx942", "ping_pong-gfx1100"])
def test_replay_with_guard_pages_touches_nothing_past_its_buffers(name):
    path = os.path.join(os.path.dirname(SAMPLE), f"{name}.kfdtrace")
    res = subprocess.run([sys.executable, "-m", "kfdtrace.replay.cli", path, "--emulate-recorded"],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "KFDTRACE_GUARD_PAGES": "1"})
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("kind, text", [
    ("queue", "(queue): queue 0 is created again while the queue of that id is not destroyed"),
    ("alloc", "(alloc): handle 0x"),
])
def test_a_live_queue_id_or_buffer_handle_given_twice_is_a_corrupt_trace(tmp_path, kind, text):
    """Campaign 74: a second queue record for a live queue's id left the first unwatched (stuck, faulted) and the
    replay said OK; a second alloc of a live handle went unremarked. The kernel never gives either twice."""
    path = str(tmp_path / "twice.kfdtrace")
    done = []

    def edit(rec, reader, writer):
        if rec.type == kind and not done:
            done.append(rec)
            twin = dict(rec.fields)
            if kind == "alloc":
                twin["va"] += 1 << 30  # elsewhere, the same handle
            return [(rec.type, rec.fields), (rec.type, twin)]
        return rec.fields

    rewrite(SAMPLE, path, edit)
    refused(replay(path), 4, text)


@pytest.mark.parametrize("summary, text", [
    ({"undrained": [[0]]}, "the summary has a malformed (list) 'undrained' field"),
    ({"submissions": "x"}, "the summary has a malformed (str) 'submissions' field"),
])
def test_replay_refuses_a_malformed_summary_as_info_does(tmp_path, summary, text):
    """Campaign 74: replay read `undrained: [[0]]` as a set of queue ids and ended in an internal error."""
    path = str(tmp_path / "t.kfdtrace")
    rewrite(SAMPLE, path, lambda rec, reader, writer: rec.fields)
    with TraceReader(path) as r:
        header, records, summary_was = dict(r.header), [(x.type, x.fields) for x in r.records()], dict(r.summary)
    bad = str(tmp_path / "bad.kfdtrace")
    with TraceReader(path) as r, TraceWriter(bad, header) as w:
        for x in r.records():
            keys = [x.fields["key"]] if x.type in ("mem", "code_object") else \
                [k for b in x.fields["buffers"] for k in b["keys"]] if x.type == "checkpoint" else []
            for key in keys:
                w.blob(r.blob(key))
            w.record(x.type, **x.fields)
        w.close({**summary_was, **summary})
    assert records
    refused(replay(bad), 4, text)
    refused(info(bad), 1, text)


def test_the_trace_tools_refuse_a_header_field_nested_too_deep(tmp_path):
    """Campaign 74: a header `name` nested 1000 lists deep made `export --perfetto` and `trim` end in a
    RecursionError traceback; the tools that copy or lay out the header check it as `info` does (here 50 deep,
    as deep as the writer still stores; `dump` shows the records whatever the header holds)."""
    path = str(tmp_path / "deep.kfdtrace")
    deep: list = []
    for _ in range(50):
        deep = [deep]
    rewrite(SAMPLE, path, lambda rec, reader, writer: rec.fields, header=lambda h: {**h, "name": deep})
    for args in (["export", path, "--perfetto", str(tmp_path / "t.json")], ["trim", path, "-s", "0..3", "-o",
                 str(tmp_path / "t.kfdtrace")], ["redact", path, "-o", str(tmp_path / "r.kfdtrace")]):
        res = subprocess.run([sys.executable, "-m", "kfdtrace", *args], capture_output=True, text=True, timeout=120)
        refused(res, 1, "the header has a malformed (list) 'name' field")
