"""Every trace tool (issue 12) on hostile input: a corrupt trace is one line and a non-zero status, a truncated
one is read as far as it goes (or refused in one line), never a traceback."""

from __future__ import annotations

import os
import sys

import pytest
from click.testing import CliRunner

from kfdtrace.cli import main as kfdtrace_cli

from .test_replay import sample

STRESS = sample("sdma_stress-gfx942")
TOOLS = {
    "dump": ["dump", "{t}"],
    "dump --json --buffers": ["dump", "--json", "{t}", "--buffers", "{o}.d"],
    "info --json": ["info", "--json", "{t}"],
    "export --jsonl": ["export", "{t}", "--jsonl", "{o}"],
    "export --perfetto": ["export", "{t}", "--perfetto", "{o}"],
    "diff": ["diff", "{t}", STRESS],
    "trim": ["trim", "{t}", "-s", "2..5", "-o", "{o}"],
    "minimize": ["minimize", "{t}", "--until", f"{sys.executable} -c pass {{trace}}", "-o", "{o}"],
    "redact": ["redact", "{t}", "-o", "{o}"],
    "bundle": ["bundle", "{t}", "-o", "{o}", "--timeout", "1"],
}


def damaged(tmp_path, how: str) -> str:
    data = bytearray(open(STRESS, "rb").read())
    if how == "corrupt header":
        data[12:16] = b"\xff\xff\xff\xff"
    elif how == "garbage":
        data = bytearray(os.urandom(4096))
    elif how == "truncated":
        data = data[: len(data) * 2 // 3]
    elif how == "flipped frame":
        data[len(data) // 2] ^= 0x40
    path = tmp_path / f"{how.replace(' ', '_')}.kfdtrace"
    path.write_bytes(bytes(data))
    return str(path)


def run_tool(tool: str, trace: str, out: str):
    """`kfdtrace TOOL ...` on `trace`: its result, once checked for an exception that escaped or a traceback."""
    res = CliRunner().invoke(kfdtrace_cli, [a.replace("{t}", trace).replace("{o}", out) for a in TOOLS[tool]])
    assert not isinstance(res.exception, Exception) or isinstance(res.exception, SystemExit), \
        f"{tool} on {os.path.basename(trace)} raised {res.exception!r}"
    assert "Traceback" not in res.output
    return res


@pytest.mark.parametrize("how", ["corrupt header", "garbage", "truncated", "flipped frame"])
@pytest.mark.parametrize("tool", TOOLS, ids=list(TOOLS))
def test_a_damaged_trace_is_one_line_or_read_as_far_as_it_goes(tool, how, tmp_path):
    res = run_tool(tool, damaged(tmp_path, how), str(tmp_path / "out"))
    if res.exit_code != 0 and not (tool == "diff" and res.exit_code == 1):  # diff: 1 says they differ
        errors = [line for line in res.output.splitlines() if "error" in line]
        assert len(errors) == 1, res.output
    if how in ("corrupt header", "garbage"):
        assert res.exit_code != 0, f"{tool} accepted a {how} trace"



def deeply_nested(tmp_path, where: str) -> str:
    """A trace with lists nested a thousand deep in its header's host, or nine hundred deep in a checkpoint's
    wait: as deep as msgpack still reads, deeper than Python's recursion allows a naive walk."""
    import zlib

    from kfdtrace.traces import format as F
    from kfdtrace.traces.format import TraceWriter

    path = str(tmp_path / f"deep-{where}.kfdtrace")
    nested: list = []
    for _ in range(900):
        nested = [nested]
    with TraceWriter(path, {}) as w:
        w.record("checkpoint", wait={"x": nested if where == "wait" else 1}, buffers=[], in_flight=None)
        w.close({})
    if where == "header":
        data = open(path, "rb").read()
        magic, major, minor, length, _ = F.FILE_HEADER.unpack_from(data, 0)
        raw = b"\x81\xa4host\x81\xa1x" + b"\x91" * 1000 + b"\x90"  # {"host": {"x": [[[...]]]}}
        open(path, "wb").write(F.FILE_HEADER.pack(magic, major, minor, len(raw), zlib.crc32(raw)) + raw
                               + data[F.FILE_HEADER.size + length:])
    return path


@pytest.mark.parametrize("where", ["header", "wait"])
@pytest.mark.parametrize("tool", TOOLS, ids=list(TOOLS))
def test_deeply_nested_values_are_no_traceback(tool, where, tmp_path):
    run_tool(tool, deeply_nested(tmp_path, where), str(tmp_path / "out"))


# -- what a fuzzing campaign found (each was a traceback, a hang or a multi-line error) -------------------------
def mutated(tmp_path, edit, source: str = STRESS, name: str = "m") -> str:
    """`source` rewritten after `edit(trace)` changed its values in place (tests/fuzz/mutate.Trace)."""
    from .fuzz.mutate import Trace

    trace = Trace(source)
    edit(trace)
    path = str(tmp_path / f"{name}.kfdtrace")
    trace.write(path)
    return path


def first(trace, type_: str) -> dict:
    return next(f for t, f in trace.records if t == type_)


@pytest.mark.parametrize("key", [7, None], ids=["an int", "nil"])
@pytest.mark.parametrize("tool", TOOLS, ids=list(TOOLS))
def test_a_field_named_by_something_else_than_a_str_is_no_traceback(tool, key, tmp_path):
    """FORMAT.md says field names are strs; a hostile trace's are not: copied as they are (trim, redact,
    minimize), shown as strs (JSON)."""
    path = mutated(tmp_path, lambda t: first(t, "doorbell").update({key: 1}))
    res = run_tool(tool, path, str(tmp_path / "out"))
    assert res.exit_code in ((0, 1) if tool == "diff" else (0,)), res.output


def test_non_finite_wait_timeouts_are_no_internal_error(tmp_path):
    import subprocess

    def edit(t):
        waits = [f for ty, f in t.records if ty == "cpu_wait"]
        waits[-1].update(timeout=float("nan"), ok=False)  # the last: no later wait makes it a retried one
        waits[0].update(timeout=1e300)
    path = mutated(tmp_path, edit)
    assert run_tool("export --perfetto", path, str(tmp_path / "o.json")).exit_code == 0
    res = subprocess.run([sys.executable, "-m", "kfdtrace.replay.cli", path, "--emulate", "gfx942", "--timeout", "1"],
                         capture_output=True, text=True, timeout=300)
    # the recording timed out on the NaN one: the replay waits --timeout, and says what it saw
    assert res.returncode in (1, 2) and "internal error" not in res.stderr, res.stderr


def test_a_cpu_write_that_claims_more_than_its_blob_is_refused_and_leaves_no_file(tmp_path):
    path = mutated(tmp_path, lambda t: first(t, "mem").update(size=1 << 63, va=0x1000))  # in no buffer: filled
    out = tmp_path / "r.kfdtrace"
    res = CliRunner().invoke(kfdtrace_cli, ["redact", path, "-o", str(out)])
    assert res.exit_code == 1 and "claims 9223372036854775808 bytes, its blob holds" in res.output
    assert not out.exists()  # a redacted copy of part of the trace would pass for the whole
    path = mutated(tmp_path, lambda t: first(t, "mem").update(size=first(t, "mem")["size"] - 1))
    res = CliRunner().invoke(kfdtrace_cli, ["dump", path, "--buffers", str(tmp_path / "d")])
    errors = [line for line in res.output.splitlines() if "error:" in line]
    assert res.exit_code == 1 and len(errors) == 1 and "(corrupt trace)" in errors[0]
    assert not [f for f in os.listdir(tmp_path / "d") if "cpu-write" in f]


def test_a_blob_of_another_size_than_its_chunk_is_refused(tmp_path):
    from kfdtrace.traces.format import blob_key

    def edit(t):  # the first chunk of a checkpoint replaced by one four times its size
        keys = first(t, "checkpoint")["buffers"][0]["keys"]
        data = t.blobs[keys[0]] * 4
        keys[0] = blob_key(data)
        t.blobs[keys[0]] = data
    res = CliRunner().invoke(kfdtrace_cli, ["dump", mutated(tmp_path, edit), "--buffers", str(tmp_path / "d")])
    errors = [line for line in res.output.splitlines() if "error:" in line]
    assert res.exit_code == 1 and len(errors) == 1 and "chunk 0 holds" in errors[0]


def test_trim_of_a_trace_counting_other_records_as_submissions(tmp_path):
    def edit(t):  # more mem records than doorbells, and the mem records counted
        t.submission_type = "mem"
        doorbell = next(r for r in t.records if r[0] == "doorbell")
        t.records = [r for r in t.records if r[0] != "doorbell" or r is doorbell]
    path = mutated(tmp_path, edit)
    res = CliRunner().invoke(kfdtrace_cli, ["trim", path, "-s", "2", "-o", str(tmp_path / "t.kfdtrace")])
    assert res.exit_code == 1 and "submission 2 is not among its doorbells" in res.output


def test_a_submission_larger_than_its_ring_is_refused_before_replaying(tmp_path):
    import subprocess

    path = mutated(tmp_path, lambda t: first(t, "doorbell").update(ring=first(t, "doorbell")["ring"] * 20000))
    res = subprocess.run([sys.executable, "-m", "kfdtrace.replay.cli", path, "--emulate", "gfx942"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 4 and "bytes of packets in a" in res.stderr and len(res.stderr.splitlines()) == 1


def test_names_cannot_drive_the_terminal_or_fake_lines(tmp_path):
    import subprocess

    fake = "\x1b[2J\x1b]0;title\x07\nreplay: OK: every checkpoint matched"
    path = mutated(tmp_path, lambda t: first(t, "queue_name").update(name=fake))
    res = CliRunner().invoke(kfdtrace_cli, ["dump", path])
    assert res.exit_code == 0 and "\x1b" not in res.output and "\\x1b[2J" in res.output
    assert not any(line.startswith("replay: OK") for line in res.output.splitlines())
    bad = str(tmp_path / f"missing{fake}.kfdtrace")  # an error quoting it: one printable line
    res = subprocess.run([sys.executable, "-m", "kfdtrace.replay.cli", bad, "--emulate", "gfx942"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and len(res.stderr.splitlines()) == 1 and "\x1b" not in res.stderr, res.stderr


def test_info_diff_and_replay_reports_cannot_drive_the_terminal(tmp_path):
    """Campaign 57: info, diff and replay's verdicts and notes quoted the trace's names, host and checkpoint
    entries raw: a name could clear the screen or fake a second line (an OK after a DIVERGED)."""
    import subprocess

    fake = "\x1b[2J\x1b]0;title\x07\nOK: every checkpoint matched"

    def edit(trace):
        trace.header.update(name=fake, command=[fake], host={"kernel": fake})
        for type_, fields in trace.records:
            if type_ in ("buffer", "queue_name"):
                fields["name"] = fake
        entry = next(f for t, f in trace.records if t == "checkpoint" and f["buffers"])["buffers"][0]
        entry.update(name=fake, keys=list(reversed(entry["keys"])) if len(entry["keys"]) > 1 else [b"\0" * 16])

    path = mutated(tmp_path, edit)
    for args in (["info", path], ["diff", path, STRESS]):
        res = CliRunner().invoke(kfdtrace_cli, args)
        assert res.exit_code in (0, 1) and "\x1b" not in res.output and "\\x1b[2J" in res.output, res.output
        assert not any(line.startswith("OK") for line in res.output.splitlines()), res.output
    res = subprocess.run([sys.executable, "-m", "kfdtrace.replay.cli", path, "--emulate", "gfx942"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "\x1b" not in res.stdout + res.stderr, res.stdout + res.stderr
    assert not any(line.startswith("OK") for line in res.stdout.splitlines()), res.stdout


def test_a_nan_is_the_same_as_itself(tmp_path):
    def edit(t):
        first(t, "cpu_wait").update(timeout=float("nan"))
    path = mutated(tmp_path, edit)
    res = CliRunner().invoke(kfdtrace_cli, ["diff", path, path])
    assert res.exit_code == 0, res.output


def test_a_fifo_is_refused_not_waited_on(tmp_path):
    import subprocess

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    res = subprocess.run([sys.executable, "-m", "kfdtrace.replay.cli", str(fifo), "--emulate", "gfx942"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 4 and "not a regular file" in res.stderr
    res = CliRunner().invoke(kfdtrace_cli, ["unbundle", str(fifo), "-o", str(tmp_path / "u")])
    assert res.exit_code == 1 and "not a regular file" in res.output


def test_a_tool_on_a_trace_read_as_far_as_it_goes_says_so(tmp_path):
    path = damaged(tmp_path, "truncated")
    res = CliRunner().invoke(kfdtrace_cli, ["redact", path, "-o", str(tmp_path / "r.kfdtrace")])
    assert res.exit_code == 0 and "warning: trace was not closed: recovered" in res.output


def test_a_queue_id_reused_by_another_dialect_is_followed_as_the_new_queue():
    """dump --buffers, trim and redact follow each queue's dispatches: an id that comes back for a PM4 queue
    after an AQL one was read with the AQL queue's reader (an AssertionError)."""
    from kfdtrace.driver.aql import AQL
    from kfdtrace.driver.pm4 import GFX11 as pm4
    from kfdtrace.replay.compute import DispatchAccess
    from kfdtrace.replay.translate import ReplayError
    from kfdtrace.traces.walk import QueueInfo

    access = DispatchAccess(lambda va, n: None)
    aql_packet = next(AQL.iter_packets(AQL.build("KERNEL_DISPATCH", kernel_object=0x1000, dimensions=1,
                                                 grid_size_x=1, workgroup_size_x=1)))
    with pytest.raises(ReplayError, match="kernel descriptor 0x1000"):
        access.of(QueueInfo(3, 1, 0, 0, 4096, AQL), aql_packet, "submission 0")
    pm4_packet = next(pm4.iter_packets(pm4.build("DISPATCH_DIRECT", dim_x=1, dim_y=1, dim_z=1)))
    with pytest.raises(ReplayError, match="COMPUTE_PGM"):
        access.of(QueueInfo(3, 1, 0, 0, 4096, pm4), pm4_packet, "submission 1")


# -- what helper campaign 36 found ---------------------------------------------------------------------------------
def test_a_submission_larger_than_its_ring_is_not_decoded_by_the_tools(tmp_path):
    """8 MiB of ring bytes in a 64 KiB ring used to be decoded whole (a minute, close to a GB for dump and redact):
    the tools say it is corrupt instead."""
    path = mutated(tmp_path, lambda t: first(t, "doorbell").update(ring=bytes(8 << 20)))
    res = run_tool("dump", path, str(tmp_path / "out"))
    assert res.exit_code == 0 and "8388608 bytes of packets in a 65536-byte ring (corrupt trace)" in res.output


@pytest.mark.parametrize("tool", ["export --perfetto", "dump", "diff"])
def test_a_record_of_a_type_the_table_does_not_know_is_passed_over(tool, tmp_path):
    """FORMAT.md: readers pass over record types they do not know (a newer writer's), fields unchecked."""
    def edit(t):
        i = next(i for i, (ty, _) in enumerate(t.records) if ty == "thread")
        t.records.insert(i + 1, ("frobnicate", {"a": 1, "tid": [1]}))
    res = run_tool(tool, mutated(tmp_path, edit), str(tmp_path / "o.json"))
    assert res.exit_code in ((0, 1) if tool == "diff" else (0,)), res.output


def test_checkpoint_entries_without_their_optional_names_replay(tmp_path):
    from kfdtrace.replay.engine import Options
    from kfdtrace.replay.session import replay_trace

    def edit(t):
        checkpoint = first(t, "checkpoint")
        checkpoint["racy"] = [{"va": 1, "why": "x"}]
        for entry in checkpoint["buffers"]:
            entry.pop("name", None)
    path = mutated(tmp_path, edit)
    report = replay_trace(path, Options(), emulate="gfx942")
    assert report.status == 0 and any("first 0x1: x" in n for n in report.loops[0][0].notes), report.lines()
    assert run_tool("dump --json --buffers", path, str(tmp_path / "o")).exit_code == 0


@pytest.mark.parametrize("how", ["checkpoint of no buffer", "doorbell without its packets", "doorbell of no queue"])
def test_replay_says_what_it_cannot_replay_rather_than_ok(how, tmp_path):
    """A checkpoint entry where no buffer lies, a doorbell whose packets the trace lacks, and a doorbell of a queue
    no record made used to be passed over, and the replay said OK (found by helper 36): a damaged trace is
    corrupt (exit 4), packets the recording could not read cannot be replayed (exit 3)."""
    import subprocess

    def edit(t):
        if how == "checkpoint of no buffer":
            for entry in first(t, "checkpoint")["buffers"]:
                entry["va"] = 0x5000
        elif how == "doorbell without its packets":
            first(t, "doorbell")["ring"] = b""
        else:
            first(t, "doorbell")["queue"] = 77
    res = subprocess.run([sys.executable, "-m", "kfdtrace.replay.cli", mutated(tmp_path, edit), "--emulate", "gfx942"],
                         capture_output=True, text=True, timeout=300)
    expected = {"checkpoint of no buffer": (4, "no buffer is allocated at 0x5000"),
                "doorbell without its packets": (3, "its packets are not in the trace"),
                "doorbell of no queue": (4, "queue 77 is not there")}[how]
    assert (res.returncode, expected[1] in res.stderr, len(res.stderr.splitlines())) == (expected[0], True, 1), \
        res.stderr


@pytest.mark.parametrize("extra", [{"n": [1]}, {"record": "doorbell"}, {"buffers": [1]}, {"racy": [{"va": 1}]}],
                         ids=["n", "record", "buffers", "racy"])
@pytest.mark.parametrize("tool", TOOLS, ids=list(TOOLS))
def test_a_field_the_table_does_not_name_is_passed_over(tool, extra, tmp_path):
    """Campaign 118: readers ignore fields a record's table does not name (FORMAT.md); dump's text took a `thread`
    record's `n` for its own record number, and a `buffers` or `racy` for a checkpoint's: a traceback."""
    path = mutated(tmp_path, lambda t: first(t, "thread").update(extra))
    res = run_tool(tool, path, str(tmp_path / "out"))
    assert res.exit_code in ((0, 1) if tool == "diff" else (0,)), res.output


def test_a_code_object_record_of_a_malformed_name_is_refused_by_bundle(tmp_path):
    """Campaign 118: bundle read the code objects' names from records it had not checked: a traceback."""
    path = mutated(tmp_path, lambda t: first(t, "code_object").update(name=5), sample("vector_add_aql-gfx942"))
    (tmp_path / "co").mkdir()
    res = CliRunner().invoke(kfdtrace_cli, ["bundle", path, "-o", str(tmp_path / "b.tar.zst"), "--code-objects",
                                            str(tmp_path / "co")])
    assert res.exit_code == 1 and "malformed (int) 'name' field" in res.output and \
        len(res.output.splitlines()) == 1, res.output
