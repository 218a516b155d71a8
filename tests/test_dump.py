"""`kfdtrace dump` and `kfdtrace info --json` (issue 12): every record decoded, filtered, as text or JSON Lines,
with buffer contents written out; hostile traces give one line."""

from __future__ import annotations

import glob
import json
import os
import struct

import pytest
from click.testing import CliRunner

from kfdtrace.capture import record
from kfdtrace.cli import main as kfdtrace_cli
from kfdtrace.driver import System
from kfdtrace.driver import kfd_ioctl as K
from kfdtrace.traces.dump import KINDS, Dumper, Selection, parse_range, text
from kfdtrace.traces.format import TraceReader, TraceWriter
from kfdtrace.traces.records import RECORD_TYPES
from kfdtrace.traces.walk import TraceState, ioctl_args, queue_dialect, struct_fields

SAMPLES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "traces", "samples", "*.kfdtrace")))
STRESS = next(p for p in SAMPLES if "sdma_stress" in p)


def run(*args: str):
    return CliRunner().invoke(kfdtrace_cli, list(args))


def json_lines(*args: str) -> list[dict]:
    res = run("dump", "--json", *args)
    assert res.exit_code == 0, res.output
    return [json.loads(line) for line in res.output.splitlines()]


@pytest.mark.parametrize("path", SAMPLES, ids=os.path.basename)
def test_every_record_is_dumped_once_in_order(path):
    res = run("dump", path)
    assert res.exit_code == 0, res.output
    numbers = [int(line.split()[0][1:]) for line in res.output.splitlines() if line.startswith("#")]
    with TraceReader(path) as r:
        assert numbers == list(range(r.record_count))
    entries = json_lines(path)
    assert [e["n"] for e in entries] == numbers


@pytest.mark.parametrize("path", SAMPLES, ids=os.path.basename)
def test_packets_are_named_by_the_tables_and_addresses_by_buffer(path):
    """The packets shown, built again by name and fields, are the ring bytes the doorbell recorded."""
    with TraceReader(path) as r:
        rings = {rec.n: rec.fields["ring"] for rec in r.records(["doorbell"])}
        gpus = {g["gpu_id"]: g for g in r.header["gpus"]}
        dialects = {q.fields["queue"]: queue_dialect(q.fields["type"], gpus[q.fields["gpu"]])
                    for q in r.records(["queue"])}
    shown = json_lines(path, "--kind", "packet")
    assert len(shown) == len(rings) > 0
    for e in shown:
        if not rings[e["n"]]:
            continue
        d = dialects[e["queue"]]
        rebuilt = b"".join(d.build(p["name"], bytes.fromhex(p.get("payload", "")), **p["fields"]) for p in e["packets"])
        assert rebuilt == rings[e["n"]], f"record {e['n']}: the packets shown do not rebuild the ring bytes"
        for p in e["packets"]:
            for addr in (p.get("addresses") or {}).values():  # a null pointer (no completion signal) is none
                assert addr["where"] is not None or not addr["addr"], f"{p['name']} at {addr['addr']:#x} lands " \
                                                                       "in no buffer"


@pytest.mark.parametrize("path", SAMPLES, ids=os.path.basename)
def test_text_words_each_record_as_its_entry_does(path):
    """Doorbells are worded straight from the record for speed: the same words as from their JSON entry."""
    with TraceReader(path) as a, TraceReader(path) as b:
        fast = Dumper(a).lines()
        for e, lines in zip(Dumper(b).entries(), fast, strict=True):
            assert lines[0] == text(e)[0]
            assert len(lines) - 1 == len(e.get("packets") or ()) + len(e.get("buffers") or ()) + \
                len(e.get("in_flight") or ()) + bool(e.get("error"))


def test_text_names_buffers_ioctls_and_flags():
    out = run("dump", STRESS).output
    assert "COPY_LINEAR" in out and "(source+0x0)" in out and "(semaphores+0x" in out
    assert "name=ALLOC_MEMORY_OF_GPU" in out and "flags=GTT|WRITABLE|UNCACHED" in out
    assert "queue_type=SDMA" in out and "event_type=SIGNAL" in out


def test_an_ioctl_end_shows_only_what_the_kernel_changed():
    entries = json_lines(STRESS, "--kind", "ioctl")
    ends = [e for e in entries if e["record"] == "ioctl_end" and e.get("name") == "ALLOC_MEMORY_OF_GPU"]
    assert ends and all(set(e["args"]) <= {"handle", "mmap_offset", "va_addr"} and "handle" in e["args"]
                        for e in ends)


def test_kind_queue_and_submission_filters():
    kinds = {e["record"] for e in json_lines(STRESS, "--kind", "sync", "--kind", "memory")}
    assert kinds and kinds <= KINDS["sync"] | KINDS["memory"] and "checkpoint" in kinds
    queue1 = json_lines(STRESS, "--queue", "1", "--kind", "packet")
    assert queue1 and {e["queue"] for e in queue1} == {1}
    some = json_lines(STRESS, "--submits", "2..3")
    assert [e["submission"] for e in some if e["record"] == "doorbell"] == [2, 3]
    assert some[0]["n"] > json_lines(STRESS, "--submits", "1")[0]["n"]  # starts after submission 1


@pytest.mark.parametrize("text, expected", [("2..5", (2, 5)), ("7", (7, 7)), ("..3", (0, 3)), ("4..", (4, 1 << 63))])
def test_parse_range(text, expected):
    assert parse_range(text) == expected


def test_a_queue_the_trace_lacks_is_one_line():
    """Campaign 48: --queue 99 dumped every record but the queues', as if the trace had that queue."""
    res = run("dump", STRESS, "--queue", "99")
    assert res.exit_code == 1 and "--queue 99: the trace has queues 0, 1" in res.output, res.output
    assert len(res.output.splitlines()) == 1


@pytest.mark.parametrize("text", ["", "..", "5..2", "a..b", "-1..3"])
def test_a_bad_range_is_one_line(text):
    res = run("dump", STRESS, "--submits", text)
    assert res.exit_code == 1 and "submission range" in res.output and len(res.output.splitlines()) == 1


def test_a_range_past_the_end_is_one_line_not_nothing():
    with TraceReader(STRESS) as r:
        n = r.submissions
    res = run("dump", STRESS, "--submits", f"{n}..{n + 10}")
    assert res.exit_code == 1 and f"submission {n}: the trace has submissions 0..{n - 1}" in res.output
    assert run("dump", STRESS, "--submits", f"{n - 1}..{n + 10}").exit_code == 0  # an end past it is the end


def test_buffers_writes_each_checkpoint_cpu_write_and_known_input(tmp_path):
    out = tmp_path / "bufs"
    assert run("dump", STRESS, "--buffers", str(out)).exit_code == 0
    files = sorted(os.listdir(out))
    with TraceReader(STRESS) as r:
        expected, writes = {}, []  # writes: (record, contents) of each CPU write (all to `source` here)
        for rec in r.records(["checkpoint", "mem"]):
            if rec.type == "mem":
                data = r.blob(rec.fields["key"])[:rec.fields["size"]]
                expected[f"{rec.n:08d}.cpu-write"] = data
                writes.append((rec.n, data))
            for b in rec.fields.get("buffers") or ():
                expected[f"{rec.n:08d}.checkpoint.{b['name']}"] = b"".join(map(r.blob, b["keys"]))[:b["size"]]
    inputs = [f for f in files if ".in." in f]
    assert len(files) - len(inputs) == len(expected) > 0
    for name in files:
        n = int(name.split(".")[0])
        if ".in." in name:  # what a copy read from `source`: the CPU's last write there before it
            assert name.endswith(".source.bin")
            assert (out / name).read_bytes() == [data for at, data in writes if at < n][-1], name
            continue
        key = next(k for k in expected if name.startswith(k))
        assert (out / name).read_bytes() == expected[key], name
    # one file for each copy from `source` (two rounds in three; fills read nothing; stages are never known)
    assert len(inputs) == sum(1 for e in json_lines(STRESS, "--kind", "packet") for p in e["packets"]
                              if (p.get("addresses", {}).get("src", {}).get("where") or "").startswith("source"))


def test_json_output_of_info():
    res = run("info", "--json", "--check", STRESS)
    assert res.exit_code == 0
    facts = json.loads(res.output)
    with TraceReader(STRESS) as r:
        assert facts["records"] == r.record_count == facts["checked"]["records"]
        assert facts["submissions"] == r.submissions and facts["format"] == "{}.{}".format(*r.version)
        assert facts["header"]["gpus"][0]["target"] == "gfx942" and facts["summary"]["submissions"] == r.submissions


def test_every_meaning_names_a_field_of_its_struct():
    for struct_type, meanings in K.MEANINGS.items():
        assert set(meanings) <= {name for name, *_ in struct_type._fields_}, struct_type.__name__


def test_struct_fields_name_enums_flags_and_unknown_bits():
    a = K.kfd_ioctl_alloc_memory_of_gpu_args(flags=K.AllocMemFlags.VRAM | K.AllocMemFlags.PUBLIC | 1 << 12)
    assert struct_fields(a)["flags"] == "VRAM|PUBLIC|0x1000"
    q = K.kfd_ioctl_create_queue_args(queue_type=9)
    assert struct_fields(q)["queue_type"] == 9  # no name: the number
    assert ioctl_args(K.BY_NAME["CREATE_QUEUE"].request, bytes(8))["queue_type"] == "COMPUTE"  # short: zero-padded
    assert ioctl_args(0x12345678, b"") is None


# -- hostile and odd traces ----------------------------------------------------------------------------------
def many_frames(src: str, tmp_path) -> str:
    """`src` rewritten in frames of 1 KiB: a cut keeps some of them (the samples are a frame or two)."""
    from tests.test_replay import rewrite

    out = str(tmp_path / "framed.kfdtrace")
    rewrite(src, out, lambda rec, r, w: rec.fields, frame_bytes=1024)
    return out


def test_a_truncated_trace_dumps_what_it_holds(tmp_path):
    data = open(many_frames(STRESS, tmp_path), "rb").read()
    cut = tmp_path / "cut.kfdtrace"
    cut.write_bytes(data[: len(data) // 2])
    res = run("dump", str(cut))
    assert res.exit_code == 0 and res.stdout.startswith("#0 ")
    assert res.stderr.startswith("main: warning: trace was not closed: recovered ") and res.stderr.count("\n") == 1


def test_a_corrupt_trace_is_one_line(tmp_path):
    data = bytearray(open(STRESS, "rb").read())
    bad = tmp_path / "bad.kfdtrace"
    bad.write_bytes(bytes(data[:8]) + b"\xff" * 12 + bytes(data[20:]))
    for args in (["dump", str(bad)], ["dump", "--json", str(bad)], ["info", "--json", str(bad)]):
        res = run(*args)
        assert res.exit_code == 1 and "error:" in res.output and "Traceback" not in res.output, args
        assert len(res.output.strip().splitlines()) == 1


def test_records_that_make_no_sense_together_are_shown_not_fatal(tmp_path):
    """A doorbell of an unknown queue, ring bytes that are no packets, a free of nothing, an ioctl that is no
    KFD ioctl, a checkpoint whose chunks are missing: each is shown as far as it can be."""
    path = str(tmp_path / "odd.kfdtrace")
    with TraceWriter(path, {}) as w:
        w.record("doorbell", queue=7, value=16, ring=b"\x01" * 16)
        w.record("queue", queue=1, gpu=1, type=1, ring=0x1000, ring_size=4096, rptr=0, wptr=0, doorbell_offset=0,
                 engine=0, dialect="sdma6")
        w.record("doorbell", queue=1, value=8, ring=struct.pack("<II", 0xFFFFFFFF, 0))
        w.record("free", handle=5, va=0x9000)
        w.record("ioctl", seq=1, fd=3, request=0xDEAD, name=None, data=b"\x00" * 4)
        w.record("ioctl_end", seq=2, ret=0, errno=0, data=None)
        w.close({})
    res = run("dump", path)
    assert res.exit_code == 0, res.output
    assert "its queue is unknown" in res.output and "unknown packet" in res.output
    assert len(json_lines(path)) == 6
    res = run("dump", path, "--buffers", str(tmp_path / "b"))
    assert res.exit_code == 0


def test_a_checkpoint_naming_chunks_it_lacks_is_refused_with_buffers(tmp_path):
    path = str(tmp_path / "missing.kfdtrace")
    with TraceWriter(path, {"chunk_size": 4096}) as w:
        w.record("checkpoint", wait={}, buffers=[{"va": 0x1000, "size": 8192, "name": "x", "keys": [b"k" * 16]}],
                 in_flight=None)
        w.close({})
    assert run("dump", path).exit_code == 0  # without --buffers the contents are not needed
    res = run("dump", path, "--buffers", str(tmp_path / "b"))
    assert res.exit_code == 1 and "no blob" in res.output and len(res.output.splitlines()) == 1


def test_a_recorded_workload_dumps_with_every_buffer_named(tmp_path):
    """A workload this dump was not written around: buffers made and freed mid-way, their addresses reused."""
    path = str(tmp_path / "w.kfdtrace")
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        q = gpu.sdma_queue(name="q")
        for i in range(3):
            a, b = gpu.alloc(4096, "gtt", name=f"a{i}"), gpu.alloc(4096, "vram", name=f"b{i}")
            a.write(bytes([i]) * 4096)
            q.copy(b, a, 4096).copy(a, b, 2048).sync()
            a.free(), b.free()
    seen = set()
    for e in json_lines(path, "--kind", "packet"):
        for p in e["packets"]:
            seen |= {a["where"].split("+")[0] for a in (p.get("addresses") or {}).values()}
    assert {"a0", "b0", "a1", "b1", "a2", "b2"} <= seen


def test_state_follows_buffers_freed_and_reused():
    st = TraceState({})
    st.apply(_rec("alloc", handle=1, gpu=1, va=0x1000, size=0x1000, domain="gtt", flags=0, cpu=None))
    st.apply(_rec("buffer", handle=1, va=0x1000, name="x", role="user", size=0x800))
    assert st.where(0x17FF) == "x+0x7ff" and st.where(0x1800) is None
    st.apply(_rec("free", handle=1, va=0x1000))
    assert st.where(0x1000) is None


def _rec(type_: str, **fields):
    from kfdtrace.traces.format import Record
    return Record(0, type_, fields)


def test_kinds_cover_every_record_type_once():
    groups = [t for kind in KINDS.values() for t in kind]
    assert sorted(groups) == sorted(RECORD_TYPES) and Selection(kinds=frozenset({"packet"})).types() == {"doorbell"}


@pytest.mark.parametrize("gpus", [5, [{"node": 1}], [{"gpu_id": 1, "pm4": ["x"]}], None])
def test_a_malformed_header_gpu_list_is_no_traceback(gpus, tmp_path):
    path = str(tmp_path / "h.kfdtrace")
    with TraceWriter(path, {"gpus": gpus} if gpus is not None else {}) as w:
        w.record("queue", queue=1, gpu=1, type=0, ring=0x1000, ring_size=4096, rptr=0, wptr=0, doorbell_offset=0,
                 engine=0, dialect=None)
        w.record("doorbell", queue=1, value=16, ring=b"\0" * 16)
        w.close({})
    res = run("dump", path)
    assert "Traceback" not in res.output and res.exception is None or isinstance(res.exception, SystemExit)
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("target, aql", [("gfx1100", False), ("gfx942", True)])
def test_buffers_writes_each_dispatch_s_kernel_arguments_and_known_inputs(target, aql, tmp_path):
    """A dispatch's inputs are its kernel arguments and the buffers its pointer arguments point into (where the
    trace knows them whole): vector_add reads a and b; c is never known (the GPU writes it)."""
    from tests.test_compute_capture import N, vector_add

    path = str(tmp_path / "c.kfdtrace")
    vas = vector_add(path, target, aql)
    out = tmp_path / "bufs"
    assert run("dump", path, "--buffers", str(out)).exit_code == 0
    inputs = sorted(f for f in os.listdir(out) if ".in." in f)
    dispatches = sorted({f.split(".in.")[0] for f in inputs})
    assert len(dispatches) == 2
    kernargs_name = "q.kernargs.bin"  # the dispatch's slice of the queue's kernel-argument arena
    for k, d in enumerate(dispatches):
        named = {f.split(".", 3)[3] for f in inputs if f.startswith(d)}
        # c is an input of the second: the checkpoint after the first made its contents known
        assert named == {"a.bin", "b.bin", kernargs_name} | ({"c.bin"} if k else set()), named
        kernargs = (out / next(f for f in inputs if f.startswith(d) and f.endswith(kernargs_name))).read_bytes()
        assert kernargs.startswith(struct.pack("<QQQI", vas["a"], vas["b"], vas["c"], N))


@pytest.mark.parametrize("target, aql", [("gfx1100", False), ("gfx942", True)])
def test_a_dispatch_shows_its_kernel_s_arguments_by_name(target, aql, tmp_path):
    """Campaign 122: dump named the kernel a dispatch runs but not its arguments. Each shows by its name in the
    code object's metadata, a pointer with the buffer it points into, in text and in JSON."""
    from tests.test_compute_capture import N, vector_add

    path = str(tmp_path / "c.kfdtrace")
    vas = vector_add(path, target, aql)
    res = run("dump", path, "--kind", "packet")
    assert res.exit_code == 0, res.output
    runs = [line.split("[runs ", 1)[1] for line in res.output.splitlines() if "[runs " in line]
    want = f"vector_add(a={vas['a']:#x} (a+0x0), b={vas['b']:#x} (b+0x0), c={vas['c']:#x} (c+0x0), n={N})]"
    assert runs == [want] * 2, runs
    dispatched = [p for e in json_lines(path, "--kind", "packet") for p in e["packets"] if "kernel" in p]
    assert [p["arguments"] for p in dispatched] == [[
        {"name": "a", "value": vas["a"], "where": "a+0x0"}, {"name": "b", "value": vas["b"], "where": "b+0x0"},
        {"name": "c", "value": vas["c"], "where": "c+0x0"}, {"name": "n", "value": N}]] * 2


def test_a_pm4_dispatch_s_code_and_argument_registers_are_annotated(tmp_path):
    """COMPUTE_PGM holds the kernel's entry point (as va >> 8, across two registers) and a pair of
    COMPUTE_USER_DATA registers the kernel arguments' address: each is named like any packet address."""
    from tests.test_compute_capture import vector_add

    path = str(tmp_path / "c.kfdtrace")
    vector_add(path, "gfx1100", False)
    res = run("dump", path, "--kind", "packet")
    assert res.exit_code == 0, res.output
    pgm = [line for line in res.output.splitlines() if "COMPUTE_PGM_LO=" in line]
    args = [line for line in res.output.splitlines() if "COMPUTE_USER_DATA_0=" in line]
    assert len(pgm) == len(args) == 2
    assert all(line.endswith("'s code)") and " (COMPUTE_PGM=0x" in line and "kernel vector_add's code" in line
               for line in pgm), pgm
    assert all(" (COMPUTE_USER_DATA_0..1=0x" in line and " q.kernargs+0x" in line for line in args), args
    packets = [p for e in json_lines(path, "--kind", "packet") for p in e["packets"]]
    held = [a for p in packets for a in (p.get("addresses") or {}).items() if a[0].startswith("COMPUTE_")]
    assert [(k, v["where"].split("+")[0]) for k, v in held] == \
        [("COMPUTE_PGM", "kernel vector_add's code"), ("COMPUTE_USER_DATA_0..1", "q.kernargs")] * 2


def test_a_packet_repeated_after_its_buffer_changed_is_named_anew(tmp_path):
    """Text words each distinct packet once and reuses the words for the next like it: a buffer freed and
    another made at its address in between must still show the new name."""
    from kfdtrace.driver.sdma import DIALECTS
    fence = DIALECTS["sdma6"].build("FENCE", addr=0x10_0008, data=7)
    path = str(tmp_path / "renamed.kfdtrace")
    with TraceWriter(path, {}) as w:
        w.record("queue", queue=1, gpu=1, type=1, ring=0x9000_0000, ring_size=4096, rptr=0, wptr=0,
                 doorbell_offset=0, engine=0, dialect="sdma6")
        for i, name in enumerate(("first", "second")):
            w.record("alloc", handle=i + 1, gpu=1, va=0x10_0000, size=4096, domain="gtt", flags=0, cpu=None)
            w.record("buffer", handle=i + 1, va=0x10_0000, name=name, role="user", size=4096)
            for k in range(2):
                w.record("doorbell", queue=1, value=len(fence) * (2 * i + k + 1), ring=fence)
            w.record("free", handle=i + 1, va=0x10_0000)
        w.close({})
    res = run("dump", path, "--kind", "packet")
    assert res.exit_code == 0, res.output
    named = [line.split("(")[1].split(")")[0] for line in res.output.splitlines() if "FENCE" in line]
    assert named == ["first+0x8"] * 2 + ["second+0x8"] * 2, res.output


def test_a_submission_cut_short_shows_the_packets_before_what_went_wrong(tmp_path):
    from kfdtrace.driver.sdma import DIALECTS
    fence = DIALECTS["sdma6"].build("FENCE", addr=0x10_0008, data=7)
    path = str(tmp_path / "cut.kfdtrace")
    with TraceWriter(path, {}, clock="t") as w:
        w.record("queue", t=1, queue=1, gpu=1, type=1, ring=0x9000_0000, ring_size=4096, rptr=0, wptr=0,
                 doorbell_offset=0, engine=0, dialect="sdma6")
        w.record("doorbell", t=2, tid=1, queue=1, value=len(fence) + 8, ring=fence + b"\xff" * 8)
        w.close({})
    lines = run("dump", path, "--kind", "packet").output.splitlines()
    assert "doorbell submission 0" in lines[0] and "FENCE addr=0x10_0008" in lines[1] \
        and "unknown packet" in lines[2] and len(lines) == 3, lines
