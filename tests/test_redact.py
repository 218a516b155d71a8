"""`kfdtrace redact` (issue 12): what a public report must not carry goes, what the replay needs stays."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from kfdtrace.capture import record
from kfdtrace.cli import main as kfdtrace_cli
from kfdtrace.driver import System
from kfdtrace.replay.engine import EXIT_OK, Options
from kfdtrace.replay.session import replay_trace
from kfdtrace.traces.format import TraceReader, TraceWriter
from kfdtrace.traces.redact import fill, redact
from kfdtrace.traces.trim import NOTE
from tests.test_replay import replay

SAMPLES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "traces", "samples", "*.kfdtrace")))
SECRET = b"the program's secret input " * 200


def contents(path: str) -> dict[str, bytes]:
    """Each CPU write's bytes by the name of its buffer (the last write of each)."""
    with TraceReader(path) as r:
        names = {b.fields["va"]: b.fields["name"] for b in r.records(["buffer"])}
        return {names.get(m.fields["va"]): r.blob(m.fields["key"]) for m in r.records(["mem"])}


@pytest.mark.parametrize("path", SAMPLES, ids=os.path.basename)
def test_a_redacted_sample_has_no_command_and_replays(path, tmp_path):
    out = str(tmp_path / "r.kfdtrace")
    res = CliRunner().invoke(kfdtrace_cli, ["redact", path, "-o", out])
    assert res.exit_code == 0 and "removed: the command line" in res.output, res.output
    with TraceReader(path) as a, TraceReader(out) as b:
        assert a.header["command"] and b.header["command"] is None and b.header["host"] == a.header["host"]
        assert b.record_count == a.record_count and b.submissions == a.submissions
    report = replay_trace(out, Options(), emulate_recorded=True)
    assert report.status == EXIT_OK and report.results[0].verified > 0, report.lines()


def test_data_only_an_indirect_buffers_packets_read_is_kept(tmp_path):
    """A copy inside an indirect buffer the CPU wrote reads `src`: its data stays (it was filled, and the replay
    diverged at the checkpoint of the copy's destination)."""
    path, out = str(tmp_path / "w.kfdtrace"), str(tmp_path / "r.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        src, dst, ib = (gpu.alloc(4096, "gtt", name=n) for n in ("src", "dst", "ib"))
        src.write(SECRET[:4096])
        q = gpu.sdma_queue()
        body = b"".join(q.copy(dst, src, 4096).discard())
        ib.write(body + q.dialect.build("NOP") * ((-len(body) // 4) % 8))
        q.packet("INDIRECT", ib_base=ib.va, ib_size=-(-len(body) // 32) * 8).sync()
        assert dst.read() == SECRET[:4096]
    with TraceReader(path) as r:
        redact(r, out)
    assert contents(out)["src"] == SECRET[:4096]
    assert replay_trace(out, Options(), emulate_recorded=True).status == EXIT_OK


def test_data_nothing_depends_on_is_filled_and_data_the_gpu_reads_is_kept(tmp_path):
    path, out = str(tmp_path / "w.kfdtrace"), str(tmp_path / "r.kfdtrace")
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        q = gpu.sdma_queue()
        notes, src, dst = (gpu.alloc(4096, "gtt", name=n) for n in ("notes", "src", "dst"))
        notes.write(SECRET[:4096])  # the CPU's own scratch: no packet reads it
        src.write(bytes(range(256)) * 16)
        q.copy(dst, src, 4096).sync()
        assert dst.read() == bytes(range(256)) * 16
    with TraceReader(path) as r:
        report = redact(r, out)
    assert contents(out)["notes"] == fill(4096) and contents(out)["src"] == bytes(range(256)) * 16
    assert any("1 CPU-written chunks nothing reads" in line for line in report.lines())
    with TraceReader(out) as r:
        assert all(SECRET[:64] not in r.blob(m.fields["key"]) for m in r.records(["mem"]))
    assert replay_trace(out, Options(), emulate="gfx942").status == EXIT_OK
    with TraceReader(path) as r:
        redact(r, out, keep_data=True)
    assert contents(out)["notes"] == SECRET[:4096]


def test_paths_in_notes_go_and_device_paths_stay(tmp_path):
    src, out = str(tmp_path / "n.kfdtrace"), str(tmp_path / "r.kfdtrace")
    header = {"command": ["run", "/home/alice/secret/work.py"], "host": {"kernel": "6.8", "node": "alice-pc"}}
    with TraceWriter(src, header) as w:
        w.record("note", text="loaded /home/alice/secret/k.co for /dev/kfd and /dev/dri/renderD128")
        # campaigns 94 and 97: trim's note names the trace it cut as it was given: relative, with spaces, any name
        w.record("note", text=NOTE.format(path="runs/acme/crash.kfdtrace", first=0, last=0, record=42))
        w.record("note", text=NOTE.format(path="/x/Project Falcon/acme crash dump", first=1, last=2, record=7))
        w.record("note", text=r"saw file:///home/alice/a.kfdtrace and C:\Users\alice\b.tar.zst and crash.tar.zst")
        w.close({})
    with TraceReader(src) as r:
        report = redact(r, out)
    with TraceReader(out) as r:
        notes = [n.fields["text"] for n in r.records(["note"])]
        assert r.header["host"] == {"kernel": "6.8"} and r.header["command"] is None
    assert notes == ["loaded <path> for /dev/kfd and /dev/dri/renderD128",
                     NOTE.format(path="<path>", first=0, last=0, record=42),
                     NOTE.format(path="<path>", first=1, last=2, record=7),
                     "saw file:<path> and <path> and <path>"]
    assert "removed: host facts: node" in report.lines()
    assert "removed: 6 file paths (in notes, and of files the workload opened)" in report.lines()


def test_what_kfdtrace_does_not_know_or_names_a_host_or_a_file_goes(tmp_path):
    """Header entries kfdtrace does not know (another writer's: it cannot tell what they hold), the trace's name
    (here a path), a backend record's host names and hardware ids, and the paths of files the workload opened (not
    the devices) all go: nothing of them is left in the file."""
    src, out = str(tmp_path / "n.kfdtrace"), str(tmp_path / "r.kfdtrace")
    header = {"name": "/home/alice/bugs/alice-laptop.corp", "env": {"AWS_SECRET": "hunter2"}, "cwd": "/home/alice",
              "argv": ["--password", "hunter2"], "hostname": "alice-laptop.corp", "host": {"kernel": "6.8"}}
    with TraceWriter(src, header) as w:
        w.record("backend", backend="emulated", host={"hostname": "alice-laptop.corp", "kernel": "6.8"}, gpus=[],
                 topology={"nodes": [{"properties": {"unique_id": 123456789}}]})
        w.record("open", path="/home/alice/private/db.sqlite", flags=0, fd=9)
        w.record("open", path="/dev/kfd", flags=0, fd=3)
        w.record("close", fd=9, path="/home/alice/private/db.sqlite")
        w.close({})
    with TraceReader(src) as r:
        report = redact(r, out)
    with TraceReader(out) as r:
        everything = repr((r.header, [(x.type, x.fields) for x in r.records()]))
        for secret in ("hunter2", "alice", "AWS_SECRET", "123456789", "db.sqlite"):
            assert secret not in everything
        assert sorted(r.header) == ["host", "name"] and r.header["name"] is None
        (backend,) = r.records(["backend"])
        assert backend.fields["host"] == {"kernel": "6.8"}
        assert backend.fields["topology"]["nodes"][0]["properties"]["unique_id"] == 0
        assert [o.fields["path"] for o in r.records(["open"])] == ["<path>", "/dev/kfd"]
    assert "removed: header entries kfdtrace does not know (it cannot tell what they hold): argv, cwd, env, " \
           "hostname" in report.lines()


def test_redact_refuses_to_overwrite_its_source_and_bad_input_is_one_line(tmp_path):
    res = CliRunner().invoke(kfdtrace_cli, ["redact", SAMPLES[0], "-o", SAMPLES[0]])
    assert res.exit_code == 1 and "another file" in res.output
    bad = tmp_path / "bad.kfdtrace"
    bad.write_bytes(b"KFDT" + b"\0" * 40)
    res = CliRunner().invoke(kfdtrace_cli, ["redact", str(bad), "-o", str(tmp_path / "o.kfdtrace")])
    assert res.exit_code == 1 and len(res.output.splitlines()) == 1 and "Traceback" not in res.output


def test_the_report_as_json(tmp_path):
    import json

    res = CliRunner().invoke(kfdtrace_cli, ["redact", SAMPLES[0], "-o", str(tmp_path / "r.kfdtrace"), "--json"])
    report = json.loads(res.output)
    assert res.exit_code == 0 and any("command line" in x for x in report["removed"]) and report["kept"]


@pytest.mark.parametrize("target, aql", [("gfx942", True), ("gfx1100", False)])
def test_a_redacted_compute_trace_keeps_what_its_kernels_read_and_replays(target, aql, tmp_path):
    """A dispatch reads its kernel arguments and the buffers its pointer arguments point into: redact keeps
    them all (filling them made the kernel read garbage pointers)."""
    from .test_compute_capture import vector_add

    path, out = str(tmp_path / "c.kfdtrace"), str(tmp_path / "r.kfdtrace")
    vector_add(path, target, aql)
    with TraceReader(path) as r:
        report = redact(r, out)
    assert any("0 CPU-written chunks nothing reads" in line for line in report.lines()), report.lines()
    assert replay_trace(out, Options(), emulate_recorded=True).status == EXIT_OK


def test_a_redacted_trace_keeps_what_its_summary_says_of_the_records(tmp_path):
    """Found by helper 41: redact wrote a fresh summary without the workload's exit status; without its list of
    queues left with work at the end either, a replay of the redacted trace would call it a HANG where the
    original's is OK."""
    from .test_replay_hangs import LEFT_WITH_WORK

    script = tmp_path / "left.py"
    script.write_text(LEFT_WITH_WORK)
    path, out = str(tmp_path / "t.kfdtrace"), str(tmp_path / "r.kfdtrace")
    env = {**os.environ, "KFDTRACE_EMULATE": "gfx942"}
    subprocess.run([sys.executable, "-m", "kfdtrace.capture.cli", "run", "-o", path, str(script), "0", "3"], env=env,
                   capture_output=True)
    with TraceReader(path) as r:
        redact(r, out)
    with TraceReader(path) as a, TraceReader(out) as b:
        assert a.summary["exit_status"] == 3 and a.summary["undrained"] == [0]
        assert {k: b.summary.get(k) for k in ("exit_status", "undrained")} == {"exit_status": 3, "undrained": [0]}
    assert replay_trace(out, Options(timeout=2), emulate="gfx942").status == EXIT_OK


DEBUG_KERNEL = "__kernel void add_one(__global uint *p) { p[__builtin_amdgcn_workitem_id_x()] += 1; }\n"


def debug_build(folder, target: str) -> str:
    """DEBUG_KERNEL built with -g from a folder whose name a reporter would not publish: DWARF holds its path."""
    src = folder / "alice-secret-project"
    src.mkdir(exist_ok=True)
    (src / "k.cl").write_text(DEBUG_KERNEL)
    subprocess.run(["clang-19", "-x", "cl", "-target", "amdgcn-amd-amdhsa", f"-mcpu={target}", "-nogpulib", "-g",
                    "-O2", "-c", "k.cl", "-o", "k.o"], cwd=src, check=True, capture_output=True)
    subprocess.run(["ld.lld-19", "-shared", "k.o", "-o", f"k.{target}.co"], cwd=src, check=True, capture_output=True)
    return str(src / f"k.{target}.co")


def test_the_debug_information_of_code_objects_goes_and_the_kernels_still_run(tmp_path):
    """Found by helper 41: a code object built with -g carries the build's folder (DWARF comp_dir) into the
    redacted trace, and the report said nothing of code objects."""
    import numpy as np

    path, out = str(tmp_path / "t.kfdtrace"), str(tmp_path / "r.kfdtrace")
    co = debug_build(tmp_path, "gfx942")
    assert b"alice-secret-project" in open(co, "rb").read()
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        kernel = gpu.load(co).kernel("add_one")
        buf = gpu.alloc(256, "gtt", name="b")
        buf.write(np.arange(64, dtype=np.uint32))
        q = gpu.compute_queue(name="q")
        q.dispatch(kernel, (64,), (64,), buf)
        q.sync(timeout=60)
        assert (np.frombuffer(buf.read(), np.uint32) == np.arange(64) + 1).all()
    with TraceReader(path) as r:
        report = redact(r, out)
    assert any("the debug information of 1 code objects" in line for line in report.removed), report.removed
    with TraceReader(out) as r:
        blobs = [r.blob(c.fields["key"]) for c in r.records(["code_object"])]
    assert blobs and all(b"alice-secret-project" not in b for b in blobs)
    result = replay_trace(out, Options(), emulate_recorded=True)
    assert result.status == EXIT_OK and result.results[0].verified > 0, result.lines()


@pytest.mark.parametrize("how", ["spanning copy", "buffer made where a queued copy reads"])
def test_data_a_copy_reads_is_kept_wherever_the_copy_finds_it(how, tmp_path):
    """Campaign 115: a copy whose source runs on from one buffer into the next, and a copy queued behind a
    semaphore that reads a buffer made where the one it named was freed: redact took each read for the first
    buffer's alone, filled the other's CPU write, and the replay said DIVERGED."""
    path, out = str(tmp_path / "t.kfdtrace"), str(tmp_path / "r.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        q, dst = gpu.sdma_queue(name="q"), gpu.alloc(8192, "gtt", name="out")
        if how == "spanning copy":
            hole = gpu.alloc(1 << 16, "gtt", name="hole")
            base = hole.va
            hole.free()
            a, b = gpu.alloc(8192, "gtt", va=base, name="a"), gpu.alloc(8192, "gtt", va=base + 8192, name="b")
            a.write(b"A" * 8192)
            b.write(bytes(range(256)) * 32)
            q.copy(dst, a.va + 4096, 8192).submit()
            q.sync(5)
        else:
            x, go, done = gpu.alloc(8192, "gtt", name="x"), system.semaphore("go"), system.semaphore("done")
            q.wait(go, 1).copy(dst, x.va, 8192).signal(done, 1).submit()
            va = x.va
            x.free()
            gpu.alloc(8192, "gtt", va=va, name="y").write(bytes(range(256)) * 32)
            go.signal(1)
            done.wait(1)
        assert dst.read(8192 - 4096 if how == "spanning copy" else 0, 16) == bytes(range(16))
    redact(TraceReader(path), out)
    done = replay(out, "--emulate", "gfx942")  # (its own process: the buffers stay side by side where recorded)
    assert done.returncode == EXIT_OK, done.stdout + done.stderr
