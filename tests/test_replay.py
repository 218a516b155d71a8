"""Replay: every sample on every family, relocation, GPU maps, divergence, hangs and refused packets."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import struct
import subprocess
import sys
import time
from unittest import mock

import pytest

from kfdtrace.capture import record
from kfdtrace.capture.completion import QueueProgress
from kfdtrace.driver import System
from kfdtrace.driver.errors import AddressInUse
from kfdtrace.driver.pm4 import GFX9 as PM4_GFX9
from kfdtrace.driver.pm4 import DataSel
from kfdtrace.driver.sdma import DIALECTS
from kfdtrace.replay.engine import (
    EXIT_BAD_INPUT,
    EXIT_DIVERGED,
    EXIT_HANG,
    EXIT_OK,
    EXIT_UNSUPPORTED,
    Instance,
    Options,
    Result,
)
from kfdtrace.replay.session import Report, replay_trace
from kfdtrace.replay.translate import ReplayError
from kfdtrace.traces.format import TraceReader, TraceWriter, blob_key

from .test_compute_capture import checkpointed
from .test_dispatch_memo import replayed

SAMPLES = os.path.join(os.path.dirname(__file__), "..", "traces", "samples")
FAMILIES = ["gfx90a", "gfx942", "gfx1030", "gfx1100", "gfx1201"]


def sample(name: str) -> str:
    path = os.path.join(SAMPLES, f"{name}.kfdtrace")
    assert os.path.exists(path), f"{path} is missing: run python traces/samples/regenerate.py"
    return path


def sample_names() -> list[str]:
    return sorted(os.path.basename(p)[: -len(".kfdtrace")] for p in glob.glob(os.path.join(SAMPLES, "*.kfdtrace")))


def gpu_count(path: str) -> int:
    with TraceReader(path) as r:
        return len(r.header["gpus"])


def replay(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kfdtrace.replay.cli", *args], capture_output=True, text=True,
                          timeout=300)


def rewrite(src: str, dst: str, edit, header=lambda h: h, frame_bytes: int = 256 << 10) -> None:
    """Copy a trace record by record through `edit(record, reader, writer)`, which returns the record's fields,
    None (drop it) or a list of (type, fields) records to write in its place; with the blobs the written records
    use, under `header(the source's header)`, in frames of `frame_bytes`."""
    copied: set[bytes] = set()
    with TraceReader(src) as r, TraceWriter(dst, header(dict(r.header)), frame_bytes=frame_bytes) as w:
        for rec in r.records():
            out = edit(rec, r, w)
            for type_, fields in [(rec.type, out)] if isinstance(out, dict) else out or []:
                keys = [fields["key"]] if type_ in ("mem", "code_object") else \
                    [k for b in fields["buffers"] for k in b["keys"]] if type_ == "checkpoint" else []
                for key in set(keys) - copied:
                    try:
                        w.blob(r.blob(key))
                    except Exception:  # a blob the edit stored itself
                        pass
                    copied.add(key)
                w.record(type_, **fields)
        w.close(r.summary)


def test_samples_exist():
    assert {"sdma_stress-gfx942", "peer_ring-2xgfx942", "ping_pong-gfx1100"} <= set(sample_names())


@pytest.mark.parametrize("name", ["sdma_stress-gfx942", "peer_ring-2xgfx942", "ping_pong-gfx1100"])
def test_sample_replays_on_the_recorded_machine(name):
    report = replay_trace(sample(name), Options(), emulate_recorded=True)
    assert report.status == EXIT_OK, report.lines()
    r = report.results[0]
    assert r.submissions == report.submissions > 0 and r.verified > 0


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", ["sdma_stress-gfx942", "peer_ring-2xgfx942", "ping_pong-gfx1100"])
def test_sample_replays_on_every_family(name, family):
    targets = ",".join([family] * gpu_count(sample(name)))
    report = replay_trace(sample(name), Options(), emulate=targets)
    assert report.status == EXIT_OK, report.lines()
    assert report.results[0].verified > 0


def test_relocate_always_moves_every_buffer_and_verifies():
    report = replay_trace(sample("sdma_stress-gfx942"), Options(relocate="always"), emulate="gfx1100")
    assert report.status == EXIT_OK, report.lines()
    assert report.results[0].relocated >= 4


def test_two_gpu_trace_with_swapped_gpu_map():
    report = replay_trace(sample("peer_ring-2xgfx942"), Options(gpu_map={0: 1, 1: 0}), emulate="gfx1201,gfx90a")
    assert report.status == EXIT_OK, report.lines()


def test_a_trace_damaged_in_the_middle_is_refused_and_one_cut_short_replays_what_it_holds(tmp_path):
    """Campaign 113: a trace whose index and one frame in the middle were damaged replayed the records before the
    damaged frame and said OK. Damage is refused as a corrupt trace (exit 4); a trace cut short (a capture killed)
    still replays the records it holds, with a note."""
    whole = str(tmp_path / "whole.kfdtrace")
    rewrite(sample("sdma_stress-gfx942"), whole, lambda rec, reader, writer: rec.fields, frame_bytes=2048)
    with TraceReader(whole) as r:
        frames = [f.offset for f in r.frames if f.kind == 1]
    assert len(frames) >= 3
    data = bytearray(open(whole, "rb").read())
    damaged, cut = str(tmp_path / "damaged.kfdtrace"), str(tmp_path / "cut.kfdtrace")
    data[-100] ^= 0x10  # the index
    data[frames[1] + 100] ^= 0x04  # a frame with more after it
    open(damaged, "wb").write(data)
    open(cut, "wb").write(open(whole, "rb").read()[:frames[-1]])
    res = replay(damaged, "--emulate", "gfx942")
    assert res.returncode == EXIT_BAD_INPUT and f"frame at byte {frames[1]}: " in res.stderr, res.stdout + res.stderr
    assert "(corrupt trace)" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = replay(cut, "--emulate", "gfx942")
    assert res.returncode == EXIT_OK and "trace was not closed: recovered" in res.stdout, res.stdout + res.stderr


def test_too_few_gpus_is_refused():
    res = replay(sample("peer_ring-2xgfx942"), "--emulate", "gfx942")
    assert res.returncode == EXIT_UNSUPPORTED and "--gpu-map" in res.stderr
    ok = replay(sample("peer_ring-2xgfx942"), "--emulate", "gfx942", "--device", "0")
    assert ok.returncode == EXIT_OK, ok.stdout + ok.stderr


@pytest.mark.parametrize("mapping, message", [
    ("0:1", "--gpu-map does not say where recorded GPU 1 goes"),
    ("0:1,1:0,2:0", "--gpu-map names recorded GPU 2; the trace has 2 (0..1)"),
    ("0:0,0:1,1:1", "--gpu-map '0:0,0:1,1:1' says twice where recorded GPU 0 goes"),
    ("0:-1,1:0", "--gpu-map '0:-1,1:0': GPU indices count from 0"),
    ("", "--gpu-map '': expected recorded:target pairs such as 0:1,1:0"),
    ("0:0,1:9", "--gpu-map or --device sends recorded GPU 1 to target device 9, which does not exist here (it has "
                "2: 0..1)")])
def test_a_gpu_map_must_name_exactly_the_recorded_gpus(mapping, message):
    """Campaign 72: an entry for a GPU the trace does not have was ignored, and a missing one was exit 3 (the
    target) where a bad option is exit 4. Campaign 95: of an entry given twice, the last won. An empty map was
    taken for none; a device the target does not have, which the user named, was exit 3."""
    res = replay(sample("peer_ring-2xgfx942"), "--emulate", "gfx942,gfx942", "--gpu-map", mapping)
    assert res.returncode == 4 and res.stderr.strip() == f"replay: error: {message}", res.stderr


def test_a_replay_that_stops_early_says_how_many_checkpoints_it_did_not_compare(tmp_path):
    """Campaign 120: a replay stopped by a fault the program went on from said nothing of the 20 checkpoints after
    it. Here the first checkpoint diverges: the others are said not compared."""
    bad = str(tmp_path / "bad.kfdtrace")
    with TraceReader(sample("sdma_stress-gfx942")) as r:
        source = next(b.fields["va"] for b in r.records({"buffer"}) if b.fields["name"] == "source")
        first_input = next(m.n for m in r.records({"mem"}) if m.fields["va"] == source)
        checkpoints = sum(1 for _ in r.records({"checkpoint"}))

    def flip(rec, reader, writer):
        f = dict(rec.fields)
        if rec.n == first_input:
            data = bytearray(reader.blob(f["key"]))
            data[100] ^= 0x01
            f["key"] = writer.blob(bytes(data))
        return f

    rewrite(sample("sdma_stress-gfx942"), bad, flip)
    report = replay_trace(bad, Options(), emulate="gfx942")
    assert report.status == EXIT_DIVERGED and checkpoints > 2
    assert report.results[0].checkpoints == 1, report.lines()
    assert "note: the replay stopped at record " in "\n".join(report.lines())
    assert f": {checkpoints - 1} of the trace's {checkpoints} checkpoints come after it and were not compared" in \
        "\n".join(report.lines())


def test_corrupted_blob_is_a_divergence_naming_the_buffer(tmp_path):
    bad = str(tmp_path / "bad.kfdtrace")
    with TraceReader(sample("sdma_stress-gfx942")) as r:
        source = next(b.fields["va"] for b in r.records({"buffer"}) if b.fields["name"] == "source")
        last_input = [m.n for m in r.records({"mem"}) if m.fields["va"] == source][-2]  # the last batch's input
    done = []

    def flip(rec, reader, writer):
        f = dict(rec.fields)
        if rec.type == "mem" and rec.n == last_input and not done:
            data = bytearray(reader.blob(f["key"]))
            data[100] ^= 0x01
            f["key"] = writer.blob(bytes(data))
            done.append(True)
        return f

    rewrite(sample("sdma_stress-gfx942"), bad, flip)
    # in loops side by side, the verdict says which failed first and that the loops after it were not run
    res = replay(bad, "--emulate", "gfx942", "--loop", "3", "--concurrent", "2")
    assert res.returncode == EXIT_DIVERGED, res.stdout + res.stderr
    assert "1 loop(s) x 2 instance(s) (of 3 loops asked: the replay stops after a loop that fails)" in res.stdout
    assert res.stdout.splitlines()[-1].startswith("DIVERGED in loop 1, instance 1: checkpoint "), res.stdout
    # campaign 99: the same in --json, for a fleet's script: the loops asked, and each instance's status
    res = replay(bad, "--emulate", "gfx942", "--loop", "3", "--concurrent", "2", "--json")
    report = json.loads(res.stdout)
    assert report["status"] == EXIT_DIVERGED and report["loops_asked"] == 3 and len(report["loops"]) == 1
    assert [r["status"] for r in report["loops"][0]] == [EXIT_DIVERGED] * 2
    assert all(r["unread"] == 0 for r in report["loops"][0])
    res = replay(bad, "--emulate", "gfx942")
    assert res.returncode == EXIT_DIVERGED, res.stdout + res.stderr
    # result is the CPU-readable buffer the corrupted input reaches (the stages and sink have no CPU mapping)
    assert "DIVERGED" in res.stdout and "buffer result" in res.stdout and "COPY_LINEAR" in res.stdout
    assert "+0x64" in res.stdout  # byte 100: where the flipped input landed
    writer = re.search(r"appeared after submission (\d+) on .+ packet (\d+): (COPY_LINEAR count=\S+ src=\S+ "
                       r"dst=(\S+))", res.stdout)
    assert writer, res.stdout
    with TraceReader(bad) as r:  # the named packet is that submission's packet of that index, as recorded
        ring = next(d for i, d in enumerate(r.records({"doorbell"})) if i == int(writer[1])).fields["ring"]
    assert str(list(DIALECTS["sdma4.4"].iter_packets(ring))[int(writer[2])]) == writer[3]


def test_a_divergence_names_the_packet_that_wrote_the_byte_not_the_last_to_write_the_buffer(tmp_path):
    """Campaign 55: a copy over a buffer, then a FENCE into its third dword; an input corrupted at byte 0x64: the
    report blamed the FENCE, the buffer's last writer."""
    path, bad = str(tmp_path / "t.kfdtrace"), str(tmp_path / "bad.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        q, s = gpu.sdma_queue(name="q"), system.semaphore("s")
        src, dst = gpu.alloc(4096, "gtt", name="src"), gpu.alloc(4096, "gtt", name="dst")
        src.write(bytes(range(256)) * 16)
        q.copy(dst, src, 4096).fence(dst, 0xFEEDFACE, offset=8).signal(s, 1).submit()
        s.wait(1)

    def flip(rec, reader, writer):
        f = dict(rec.fields)
        if rec.type == "mem":
            data = bytearray(reader.blob(f["key"]))
            data[0x64] ^= 0xFF
            f["key"] = writer.blob(bytes(data))
        return f

    rewrite(path, bad, flip)
    result = replay_trace(bad, Options(), emulate="gfx942").results[0]
    assert result.divergence.writer.startswith("submission 0 on queue 0") and \
        " packet 0: COPY_LINEAR" in result.divergence.writer, result.divergence.describe()


def test_missing_signal_is_a_hang_with_the_decoded_packet(tmp_path):
    bad = str(tmp_path / "hang.kfdtrace")
    rewrite(sample("ping_pong-gfx1100"), bad, lambda rec, r, w: None if rec.type == "cpu_signal" else rec.fields)
    res = replay(bad, "--emulate", "gfx1100", "--timeout", "0.5")
    assert res.returncode == EXIT_HANG, res.stdout + res.stderr
    assert "HANG" in res.stdout and "POLL_REGMEM" in res.stdout and "rptr=" in res.stdout and "wptr=" in res.stdout


def test_packet_outside_every_buffer_is_refused_before_submission(tmp_path):
    bad = str(tmp_path / "wild.kfdtrace")
    wild = 0x7E00_0000_0000

    def poison(rec, reader, writer):
        f = dict(rec.fields)
        if rec.type == "queue":
            poison.dialect = DIALECTS[f["dialect"]]
        if rec.type == "doorbell" and f["ring"] and not getattr(poison, "done", False):
            f["ring"] = poison.dialect.build("FENCE", addr=wild, data=1) + f["ring"]
            poison.done = True
        return f

    rewrite(sample("ping_pong-gfx1100"), bad, poison)
    res = replay(bad, "--emulate", "gfx1100")
    assert res.returncode == EXIT_UNSUPPORTED, res.stdout + res.stderr
    assert f"addr={wild:#x}" in res.stderr and "FENCE" in res.stderr and "refusing" in res.stderr
    assert "loop 1" not in res.stdout  # nothing ran


def test_json_report_loops_and_concurrency():
    res = replay(sample("ping_pong-gfx1100"), "--emulate", "gfx942", "--loop", "2", "--concurrent", "2", "--json")
    assert res.returncode == EXIT_OK, res.stderr
    report = json.loads(res.stdout)
    assert report["status"] == 0 and len(report["loops"]) == 2 and len(report["loops"][0]) == 2
    assert all(inst["divergence"] is None and inst["verified"] > 0 for loop in report["loops"] for inst in loop)
    assert report["loops"][0][1]["relocated_buffers"] > 0  # the second instance lives elsewhere


def test_bad_trace_and_options_give_one_line(tmp_path):
    garbage = tmp_path / "g.kfdtrace"
    garbage.write_bytes(os.urandom(100))
    res = replay(str(garbage), "--emulate", "gfx942")
    assert res.returncode == 4 and len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    res = replay(sample("ping_pong-gfx1100"), "--gpu-map", "zero")
    assert res.returncode == 4 and "0:1,1:0" in res.stderr
    res = replay(sample("ping_pong-gfx1100"), "--device", "-1")
    assert res.returncode == 4 and res.stderr.strip() == "replay: error: --device -1: target devices count from 0"
    res = replay(sample("ping_pong-gfx1100"), "--relocate", "never", "--concurrent", "2")
    assert res.returncode == 4 and "only one instance" in res.stderr
    # click's own usage errors are bad input too (its 2 would read as a hang to a script)
    trace = sample("ping_pong-gfx1100")
    for args in ((trace, "--bogus"), (trace, "--loop", "many"), (str(tmp_path),), ()):
        res = replay(*args)
        assert res.returncode == 4 and "Traceback" not in res.stderr, (args, res.stderr)


def test_replay_of_a_fresh_recording_across_dialects(tmp_path):
    """Record on RDNA4 (8-dword copies, 30-bit fills) and replay on CDNA3 (4 MiB copy limit, 22-bit fill)."""
    path = str(tmp_path / "big.kfdtrace")
    size = 9 << 20
    with record(path), System.open(emulate="gfx1201") as system:
        gpu = system.devices[0]
        a, b = gpu.alloc(size, "gtt", name="a"), gpu.alloc(size, "vram", name="b")
        out = gpu.alloc(size, "gtt", name="out")
        a.write(bytes(range(256)) * (size // 256))
        gpu.sdma_queue().copy(b, a, size).fill(out, 0x7F7F7F7F, size).copy(out, b, size // 2).sync()
    report = replay_trace(path, Options(), emulate="gfx942")
    assert report.status == EXIT_OK, report.lines()
    assert report.results[0].packets == report.packets and report.results[0].verified >= 1


def test_indirect_buffers_are_followed_and_retargeted(tmp_path):
    """An INDIRECT packet's buffer holds packets with addresses: replay translates it like the ring."""
    path = str(tmp_path / "ib.kfdtrace")
    with record(path), System.open(emulate="gfx1201") as system:
        gpu = system.devices[0]
        q = gpu.sdma_queue()
        out, ib = gpu.alloc(4096, "gtt", name="out"), gpu.alloc(4096, "gtt", name="ib")
        body = q.dialect.build("FENCE", addr=out.va + 8, data=0xABC) + q.dialect.build("NOP") * 4
        ib.write(body)
        q.packet("INDIRECT", ib_base=ib.va, ib_size=len(body) // 4).sync()
        assert out.read(8, 4) == (0xABC).to_bytes(4, "little")
    for target, relocate in (("gfx1201", "always"), ("gfx90a", "always"), ("gfx1030", "auto")):
        report = replay_trace(path, Options(relocate=relocate), emulate=target)
        assert report.status == EXIT_OK, report.lines()
        assert report.results[0].verified >= 1


@pytest.mark.parametrize("when", ["same submission", "earlier submission", "rewritten by the cpu"])
def test_an_indirect_buffer_the_gpu_wrote_since_the_cpu_did_is_refused(tmp_path, when):
    """Campaign 47's bug07: a copy puts packets B over packets A in the IB buffer, then INDIRECT runs it. The GPU ran
    B; the replay translated A, the CPU's, and said DIVERGED. It is refused, unless a checkpoint verified what the
    GPU wrote there (the trace's, then) or the CPU rewrote it since."""
    path = str(tmp_path / "ib.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        q, d = gpu.sdma_queue(), gpu.sdma_queue().dialect
        out, ib, staged = (gpu.alloc(4096, "gtt", name=n) for n in ("out", "ib", "staged"))
        a, b = (d.build("FENCE", addr=out.va, data=v) + d.build("NOP") * 4 for v in (0xA, 0xB))
        ib.write(a)
        staged.write(b)
        q.copy(ib, staged, len(b))
        if when != "same submission":
            q.sync()
        if when == "rewritten by the cpu":
            ib.write(b)
        q.packet("INDIRECT", ib_base=ib.va, ib_size=len(b) // 4).sync()
        assert out.read(0, 4) == (0xB).to_bytes(4, "little")
    if when != "same submission":
        assert replay_trace(path, Options(), emulate="gfx942").status == EXIT_OK
    else:
        with pytest.raises(ReplayError, match=r"indirect buffer 0x[0-9a-f]+\+0x20 lies in ib, which the GPU "
                                              r"writes before it runs .*packets the GPU builds"):
            replay_trace(path, Options(), emulate="gfx942")


def test_indirect_buffer_copies_of_a_submission_are_bounded(tmp_path, monkeypatch):
    """Campaign 52: IBs calling IBs 256 x 256 times (3 deep) made as many copies, 3 GB before an mmap failed,
    --max-memory notwithstanding. A submission's copies are bounded (MAX_IB_COPY_BYTES, lowered here)."""
    from kfdtrace.replay import engine

    path = str(tmp_path / "ibs.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        q = gpu.sdma_queue()
        out, ib = gpu.alloc(4096, "gtt", name="out"), gpu.alloc(4096, "gtt", name="ib")
        body = q.dialect.build("FENCE", addr=out.va, data=7) + q.dialect.build("NOP") * 4
        ib.write(body)
        for _ in range(3):
            q.packet("INDIRECT", ib_base=ib.va, ib_size=len(body) // 4)
        q.sync()
    assert replay_trace(path, Options(), emulate="gfx942").status == EXIT_OK
    monkeypatch.setattr(engine, "MAX_IB_COPY_BYTES", 2 * 4096)
    with pytest.raises(ReplayError, match=r"the submission's indirect buffers, as called .* take more than \d+ MiB"):
        replay_trace(path, Options(), emulate="gfx942")


def test_an_indirect_buffer_running_past_its_buffer_is_named_so(tmp_path):
    from kfdtrace.driver.errors import GpuFault

    path = str(tmp_path / "ib.kfdtrace")
    with record(path), System.open(emulate="gfx1201") as system:
        gpu = system.devices[0]
        q, ib = gpu.sdma_queue(), gpu.alloc(4096, "gtt", name="ib")
        ib.write(q.dialect.build("NOP") * 8, 4096 - 32)
        with pytest.raises(GpuFault):
            q.packet("INDIRECT", ib_base=ib.va + 4096 - 32, ib_size=64).sync(timeout=5)
    res = replay(path, "--emulate", "gfx1201")
    assert res.returncode == EXIT_UNSUPPORTED, res.stdout + res.stderr
    assert f"indirect buffer {ib.va + 4096 - 32:#x}+0x100 runs 0xe0 bytes past the end of ib" in res.stderr, res.stderr


@pytest.mark.parametrize("queue", ["sdma", "pm4"])
def test_a_signal_inside_an_indirect_buffer_shows_its_queue_complete_up_to_the_call_only(tmp_path, queue):
    """helper 34's w05: a semaphore signal at the start of an IB was taken to show the whole IB complete, so the
    CPU's wait for it checkpointed a buffer the rest of the IB was still filling (DIVERGED on every family)."""
    from kfdtrace.capture.submissions import Analyzer

    size = 32 << 20
    path = str(tmp_path / "ibsignal.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        x, ib = gpu.alloc(size, "gtt", name="x"), gpu.alloc(4096, "gtt", name="ib")
        sem, done = system.semaphore("sem"), system.semaphore("done")
        if queue == "sdma":
            q = gpu.sdma_queue(name="q")
            body = b"".join(q.signal(sem, 1).fill(x, 0x5A5A5A5A, size).discard())
            body += q.dialect.build("NOP") * ((-len(body) // 4) % 8)
            ib.write(body)
            q.packet("INDIRECT", ib_base=ib.va, ib_size=len(body) // 4).signal(done, 1).submit()
        else:
            gate, q, filler = system.semaphore("gate"), gpu.compute_queue(name="q"), gpu.sdma_queue(name="f")
            body = b"".join(q.signal(sem, 1).wait(gate, 1).discard())
            ib.write(body)
            q.indirect(ib, len(body)).signal(done, 1).submit()
            filler.fill(x, 0x5A5A5A5A, size).signal(gate, 1).submit()
        sem.wait(1)
        done.wait(1)
        ring = q.dialect.build("NOP")  # the facts of a ring calling the IB: its signals at the call's start
        called = q.dialect.build("INDIRECT", ib_base=ib.va, ib_size=len(body) // 4) if queue == "sdma" else \
            q.dialect.build("INDIRECT_BUFFER", ib_base=ib.va, ib_size=len(body) // 4, valid=1)
        _, facts = Analyzer().analyse(q.dialect, ring + called, lambda va, n: ib.read(va - ib.va, n))
        assert {pos for pos, _, _ in facts.signals} == {len(ring)} and facts.written
    with TraceReader(path) as r:
        first = next(r.records(["checkpoint"]))
        assert "x" not in [b["name"] for b in first.fields["buffers"]]  # still being filled at sem.wait(1)
    for target in ("gfx942", "gfx1100"):
        report = replay_trace(path, Options(), emulate=target)
        assert report.status == EXIT_OK, report.lines()


def test_a_clock_inside_an_indirect_buffer_is_masked_as_on_the_ring(tmp_path):
    """helper 33's w12: a PM4 timestamp in an indirect buffer made every replay DIVERGE at the clock's bytes."""
    path = str(tmp_path / "ibclock.kfdtrace")
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        builder, q = gpu.compute_queue(name="builder"), gpu.compute_queue(name="q")
        out, ib = gpu.alloc(4096, "gtt", name="out"), gpu.alloc(4096, "gtt", name="ib")
        body = b"".join(builder.write_data(out, b"\x5a" * 8).timestamp(out, offset=8).discard())
        ib.write(body)
        q.indirect(ib, len(body)).sync()
    for target in ("gfx1100", "gfx942", "gfx1201"):
        report = replay_trace(path, Options(), emulate=target)
        assert report.status == EXIT_OK and report.results[0].verified >= 1, report.lines()


@pytest.mark.parametrize("shared", [False, True], ids=["aql-only", "also-on-pm4"])
def test_an_aql_queues_pm4_indirect_buffer_is_followed_as_pm4(tmp_path, shared):
    """helper 33's w13: capture and replay decoded an AQL queue's PM4-IB as AQL packets (undecodable, then
    'cannot replay here'); what it holds is the GPU's PM4 dialect (AqlDialect.indirect_dialect)."""
    from kfdtrace.driver.aql import SignalCondition
    from kfdtrace.driver.aql_queue import HsaSignal

    path = str(tmp_path / "aqlib.kfdtrace")
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        builder = gpu.compute_queue(name="builder")
        src, out, ib = (gpu.alloc(4096, "gtt", name=n) for n in ("src", "out", "ib"))
        src.write(bytes(range(256)) * 16)
        body = b"".join(builder.copy_data(out, src, size=8, src_offset=16).timestamp(out, offset=64).discard())
        ib.write(body)
        if shared:
            gpu.compute_queue(name="pm4").indirect(ib, len(body)).sync()
        aq, done = gpu.aql_queue(name="aq"), HsaSignal(system, 1, "done")
        aq.pm4(ib, len(body), completion=done)
        done.wait(0, SignalCondition.EQ)
    with TraceReader(path) as r:
        assert not list(r.records(["note"]))  # no 'undecodable packets'
    for target in ("gfx1100", "gfx90a", "gfx1201"):
        report = replay_trace(path, Options(), emulate=target)
        assert report.status == EXIT_OK and report.results[0].verified >= 1, report.lines()


def test_a_kernel_launched_from_an_aql_queues_pm4_indirect_buffer_is_refused(tmp_path):
    from kfdtrace.driver.aql import SignalCondition
    from kfdtrace.driver.aql_queue import HsaSignal
    from kfdtrace.driver.pm4 import DIALECTS as PM4

    path = str(tmp_path / "aqlibreg.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        ib = gpu.alloc(4096, "gtt", name="ib")
        body = PM4["gfx9"].build("SET_SH_REG", b"\0" * 4, reg_offset=0x20C) + PM4["gfx9"].build("NOP")
        ib.write(body)
        aq, done = gpu.aql_queue(name="aq"), HsaSignal(system, 1, "done")
        aq.pm4(ib, len(body), completion=done)
        done.wait(0, SignalCondition.EQ)
    with pytest.raises(ReplayError, match="SET_SH_REG at byte 0x0 sets up or launches a kernel from an AQL queue's "
                                          "PM4 indirect buffer"):
        replay_trace(path, Options(), emulate="gfx942")


def test_queues_destroyed_with_work_as_recorded_are_named_not_said_drained(tmp_path):
    """A program that destroys a queue still waiting on a semaphore nobody signals (helper 33's w09): the replay
    is OK, as the recording too left it, but says so rather than 'every queue drained'."""
    path = str(tmp_path / "left.kfdtrace")
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        stuck, q = gpu.sdma_queue(name="stuck"), gpu.sdma_queue(name="q")
        out = gpu.alloc(4096, "gtt", name="out")
        stuck.wait(system.semaphore("never"), 1).fill(out, 1, 4096).submit()
        q.fill(out, 2, 4096).sync()
        stuck.destroy()
    report = replay_trace(path, Options(), emulate="gfx942")
    left = report.results[0].left
    assert report.status == EXIT_OK and len(left) == 1 and left[0].startswith("queue 0 "), report.lines()
    assert "1 queue(s) still had work when destroyed or at the end, as in the recording" in report.lines()[-1]
    assert "every queue drained" not in report.lines()[-1]
    assert report.to_dict()["loops"][0][0]["left_with_work"] == left


def test_a_buffer_a_queue_destroyed_at_a_wait_never_wrote_is_verified_again(tmp_path):
    """Campaign 62: a queue destroyed standing at a wait, its fill into `a` never run, left `a` in flight for good,
    so nothing later written there was checked (a changed input replayed OK). The fill never comes: `a` is hashed
    once the copy into it is known complete."""
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        never, s = system.semaphore("never"), system.semaphore("s")
        a, b = gpu.alloc(4096, "gtt", name="a"), gpu.alloc(4096, "gtt", name="b")
        doomed = gpu.sdma_queue(name="doomed")
        doomed.wait(never, 1).fill(a, 0x11111111, 4096).submit()
        doomed.destroy()
        b.write(b"\x07" * 4096)
        gpu.sdma_queue(name="q").copy(a, b, 4096).signal(s, 1).submit()
        s.wait(1)
    with TraceReader(path) as r:
        stop = next(r.records(["queue_destroy"])).fields
    assert stop["wptr"] - stop["rptr"] == 20 + 24  # the poll did not pass: the read pointer stays on it
    assert checkpointed(path)["a"] == b"\x07" * 4096
    assert replay_trace(path, Options(), emulate="gfx942").status == EXIT_OK


@pytest.mark.parametrize("target", ["gfx1100", "gfx942"])
def test_a_queue_destroyed_at_a_wait_inside_an_indirect_buffer_is_destroyed_there_in_the_replay(tmp_path, target):
    """A PM4 queue stood at a wait no one signals, inside an indirect buffer, when the program destroyed it. Its
    read pointer stays on the INDIRECT_BUFFER packet, which is no wait: the replay took the queue for one still
    working, waited for it to settle before the destroy, and said HANG."""
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate=target) as system:
        gpu = system.devices[0]
        never, s = system.semaphore("never"), system.semaphore("s")
        a, b, ib = (gpu.alloc(4096, "gtt", name=n) for n in ("a", "b", "ib"))
        builder = gpu.compute_queue(name="builder")
        builder.wait(never, 1).write_data(a, b"\x11" * 64)
        body = b"".join(builder.discard())
        ib.write(body)
        doomed = gpu.compute_queue(name="doomed")
        doomed.write_data(b, b"\x22" * 64).indirect(ib, len(body)).submit()
        while b.read(0, 1) != b"\x22":  # (then it goes on into the indirect buffer, and waits there)
            time.sleep(0.001)
        doomed.destroy()
        gpu.sdma_queue(name="other").copy(a, b, 64).signal(s, 1).submit()
        s.wait(1)
        assert a.read(0, 64) == b"\x22" * 64
    for emulate in (target, "gfx1201"):
        report = replay_trace(path, Options(timeout=3), emulate=emulate)
        assert report.status == EXIT_OK and report.loops[0][0].verified >= 1, report.lines()


@pytest.mark.parametrize("how", ["cpu", "free", "gpu"])
def test_an_indirect_buffer_changed_before_its_queue_called_it_is_refused(tmp_path, how):
    """Campaign 112: a queue gated by a semaphore calls an indirect buffer that, after the doorbell, the CPU writes
    new packets into (or frees and makes again with them, or another queue's copy fills, ordered before the call by
    a semaphore). The recording's GPU ran the new packets; the replay, which translates an indirect buffer at its
    doorbell, ran the old ones: DIVERGED, or OK when the old packets wrote what was there already and the buffer
    the new ones wrote was never checked. It refuses now, saying why, before the change."""
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        x, y, ib = (gpu.alloc(4096, "gtt", name=n) for n in ("x", "y", "ib"))
        builder = gpu.compute_queue(name="builder")
        new = b"".join(builder.write_data(y, b"\xcd" * 32).discard())
        old = b"".join(builder.write_data(x, b"\x00" * 32).discard())  # what x holds already
        ib.write(old)
        q, gate, done = gpu.compute_queue(name="q"), system.semaphore("gate"), system.semaphore("done")
        q.wait(gate, 1).indirect(ib, len(old)).signal(done, 1).submit()
        if how == "cpu":
            ib.write(new)
        elif how == "free":
            va = ib.va
            ib.free()
            ib = gpu.alloc(4096, "gtt", name="ib again", va=va)
            ib.write(new)
        else:
            staged = gpu.alloc(4096, "gtt", name="staged")
            staged.write(new)
            gpu.sdma_queue(name="copier").copy(ib, staged, len(new)).signal(gate, 1).submit()
        if how != "gpu":
            gate.signal(1)
        done.wait(1)
        assert y.read(0, 4) == b"\xcd" * 4
    res = replay(path, "--emulate", "gfx1100", "--timeout", "5")
    assert res.returncode == EXIT_UNSUPPORTED, res.stdout + res.stderr
    assert "changes the indirect buffer at" in res.stderr and "cannot follow the change" in res.stderr, res.stderr


def test_an_indirect_buffer_beside_what_its_own_packets_write_replays(tmp_path):
    """Campaign 112: one buffer holds an indirect buffer's packets and, past them, what they write; called twice in
    a submission, the second call was refused as packets the GPU builds (its buffer, not its bytes, was looked at)."""
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        cmd, src = gpu.alloc(4096, "gtt", name="cmd"), gpu.alloc(4096, "gtt", name="src")
        src.write(b"\x99" * 64)
        builder = gpu.compute_queue(name="builder")
        body = b"".join(builder.write_data(cmd, b"\x5a" * 8, offset=2048)
                        .copy_data(cmd, src, size=8, dst_offset=2056).discard())
        cmd.write(body)
        q, done = gpu.compute_queue(name="q"), system.semaphore("done")
        q.indirect(cmd, len(body)).indirect(cmd, len(body)).signal(done, 1).submit()
        done.wait(1)
        q.indirect(cmd, len(body)).signal(done, 2).submit()
        done.wait(2)
        assert cmd.read(2048, 16) == b"\x5a" * 8 + b"\x99" * 8
    res = replay(path, "--emulate", "gfx942", "--timeout", "5")
    assert res.returncode == EXIT_OK, res.stdout + res.stderr


@pytest.mark.parametrize("relocate", ["auto", "always"])
def test_a_buffer_freed_under_pending_work_keeps_its_addresses_for_the_one_made_there(tmp_path, monkeypatch,
                                                                                     relocate):
    """Campaign 112: packets queued behind a gate write `t`; the CPU frees it and makes `t2` at its address, which the
    packets then write. The replay freed its `t` and put `t2` where `t` had been; with --concurrent, another
    instance's allocation could take those addresses in between: the packets wrote into it (DIVERGED) or faulted
    (HANG), about 1 run in 10. Here the other instance is an allocation at those addresses right after the free."""
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        t, ib = gpu.alloc(4096, "gtt", name="t"), gpu.alloc(4096, "gtt", name="ib")
        builder = gpu.compute_queue(name="builder")
        body = b"".join(builder.write_data(t, b"\xee" * 32).discard())
        ib.write(body)
        q, gate, done = gpu.compute_queue(name="q"), system.semaphore("gate"), system.semaphore("done")
        q.wait(gate, 1).indirect(ib, len(body)).signal(done, 1).submit()
        va = t.va
        t.free()
        t2 = gpu.alloc(4096, "gtt", name="t2", va=va)
        t2.write(b"\x11" * 4096)
        gate.signal(1)
        done.wait(1)
        assert t2.read(0, 32) == b"\xee" * 32
    free, intruders = Instance._on_free, []

    def taken_beside(self, r):
        rb = self.handles.get(r.fields["handle"])
        free(self, r)
        if rb is not None:
            with contextlib.suppress(AddressInUse):
                intruders.append(self.system.devices[0].alloc(4096, "gtt", va=rb.buffer.va, name="another"))

    monkeypatch.setattr(Instance, "_on_free", taken_beside)
    report = replay_trace(path, Options(timeout=5, relocate=relocate), emulate="gfx942")
    assert report.status == EXIT_OK and report.loops[0][0].verified >= 1, report.lines()


def test_an_indirect_buffer_rewritten_once_its_queue_ran_it_replays(tmp_path):
    """The same buffer rewritten and called again once the queue ran it: no refusal."""
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        out, ib = gpu.alloc(4096, "gtt", name="out"), gpu.alloc(4096, "gtt", name="ib")
        builder, q = gpu.compute_queue(name="builder"), gpu.compute_queue(name="q")
        for i in range(3):
            body = b"".join(builder.write_data(out, bytes([i + 1]) * 16, offset=16 * i).discard())
            ib.write(body)
            q.indirect(ib, len(body)).submit()
            while not q.idle:  # (no wait record: the queue ran it, and the replay's must have too)
                time.sleep(0.001)
        q.sync()
    res = replay(path, "--emulate", "gfx1100", "--timeout", "5")
    assert res.returncode == EXIT_OK, res.stdout + res.stderr


@pytest.mark.parametrize("queue_type", [None, "pm4"])
def test_an_aql_queue_destroyed_at_its_second_barrier_is_destroyed_there_in_the_replay_too(tmp_path, queue_type):
    """Campaigns 84 and 85: campaign 72's case on an AQL queue, which `_behind` did not look at, replayed as such
    or as PM4 packets: A [barrier on B's kernel, a kernel writing `out`, a barrier never met] was destroyed at the
    second barrier; the replay destroyed it at the first, its kernel never run, and the checkpoint of `out` said
    DIVERGED."""
    import time

    import numpy as np

    from kfdtrace.driver.aql_queue import HsaSignal
    from kfdtrace.driver.kernels.device import corpus

    path, n = str(tmp_path / "t.kfdtrace"), 4096
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        kernels = corpus(gpu)
        a, b = gpu.aql_queue(name="a"), gpu.aql_queue(name="b")
        inp, res = gpu.alloc(n * 4, "gtt", name="in"), gpu.alloc(n * 4, "gtt", name="res")
        x, y, out = (gpu.alloc(64 * 4, "gtt", name=name) for name in ("x", "y", "out"))
        inp.write(np.random.default_rng(1).integers(1, 1 << 20, n, dtype=np.uint32))
        x.write(np.arange(64, dtype=np.float32))
        y.write(np.ones(64, dtype=np.float32))
        ran, never = HsaSignal(system, 1, "ran"), HsaSignal(system, 1, "never")
        a.barrier_and([ran])
        a.dispatch(kernels.kernel("vector_add"), 64, 64, x, y, out, np.uint32(64))
        a.barrier_and([never])
        b.dispatch(kernels.kernel("collatz"), (n,), (64,), inp, res, np.uint32(n), completion=ran)
        while a.read_index < 2:  # the CPU looks: no record says it
            time.sleep(0.01)
        a.destroy()
        b.sync(timeout=120)
    assert "out" in checkpointed(path)
    assert replay_trace(path, Options(timeout=60, queue_type=queue_type), emulate="gfx942").status == EXIT_OK


@pytest.mark.parametrize("queue_type", [None, "pm4"])
def test_an_aql_queue_destroyed_at_a_barrier_of_its_first_doorbell_is_destroyed_there(tmp_path, queue_type):
    """Campaign 86: a first doorbell's packets were placed one packet late (an AQL doorbell of 0 already says packet
    0 is written), so a queue destroyed at the second barrier of its first doorbell was destroyed at the first, and
    that barrier's completion signal, which the CPU waited for, never came: HANG."""
    import ctypes
    import struct
    import time

    import numpy as np

    from kfdtrace.driver.aql import AQL
    from kfdtrace.driver.aql_queue import FULL_FENCES, HsaSignal
    from kfdtrace.driver.kernels.device import corpus

    path, n = str(tmp_path / "t.kfdtrace"), 4096
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        a, b = gpu.aql_queue(name="a"), gpu.aql_queue(name="b")
        inp, res = gpu.alloc(n * 4, "gtt", name="in"), gpu.alloc(n * 4, "gtt", name="res")
        inp.write(np.random.default_rng(1).integers(1, 1 << 20, n, dtype=np.uint32))
        ran, passed, never = HsaSignal(system, 1, "ran"), HsaSignal(system, 1, "passed"), HsaSignal(system, 1, "never")
        first = AQL.packet("BARRIER_AND", **FULL_FENCES, dep_signal0=ran.handle, completion_signal=passed.handle)
        data = first.encode()  # put on the ring as the producer protocol does, the doorbell left to the next packet
        a.amd_queue.write_dispatch_id = 1
        a.ring.write(data[4:], 4)
        ctypes.c_uint32.from_address(a.ring.cpu).value = struct.unpack_from("<I", data)[0]
        a.submit(AQL.packet("BARRIER_AND", **FULL_FENCES, dep_signal0=never.handle))
        b.dispatch(corpus(gpu).kernel("collatz"), (n,), (64,), inp, res, np.uint32(n), completion=ran)
        while a.read_index < 1:  # the CPU looks: no record says it
            time.sleep(0.01)
        a.destroy()
        passed.wait(0, timeout=120)
        b.sync(timeout=120)
    assert replay_trace(path, Options(timeout=60, queue_type=queue_type), emulate="gfx942").status == EXIT_OK


@pytest.mark.parametrize("queue_type", [None, "aql"])
def test_a_queue_destroyed_at_a_wait_after_a_long_kernel_is_given_the_time_the_recording_took(tmp_path, queue_type):
    """Campaign 86: the destroy of a queue that stood at a wait after a kernel was given --timeout to get there: a
    longer kernel said HANG, and on an AQL queue (where the wait does not show) was cut off mid-kernel: DIVERGED."""
    import time

    import numpy as np

    from kfdtrace.driver.kernels.device import corpus

    path, n = str(tmp_path / "t.kfdtrace"), 1 << 22  # a kernel of a second or so, against a --timeout of 20 ms
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        x, y, out = (gpu.alloc(n * 4, "gtt", name=name) for name in ("x", "y", "out"))
        x.write(np.arange(n, dtype=np.float32))
        y.write(np.ones(n, dtype=np.float32))
        q, never = gpu.compute_queue(name="q"), system.semaphore("never")
        q.dispatch(corpus(gpu).kernel("vector_add"), (n,), (64,), x, y, out, np.uint32(n)).wait(never, 1).submit()
        while not q.waiting:
            time.sleep(0.01)
        q.destroy()
        s, done = gpu.sdma_queue(name="s"), system.semaphore("done")
        s.signal(done, 1).submit()
        done.wait(1)  # a checkpoint: `out` as the kernel left it
    assert "out" in checkpointed(path)
    report = replay_trace(path, Options(timeout=0.02, queue_type=queue_type), emulate="gfx942")
    assert report.status == EXIT_OK, report.lines()


def test_a_pm4_queue_destroyed_at_a_wait_replays_on_an_aql_queue(tmp_path):
    """Campaign 84: on an AQL queue (--queue-type aql) a PM4 wait runs inside an indirect buffer, where the queue
    does not show it stands; its destroy waited for it to stand, and said HANG. Unmoved for --timeout, it stands."""
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        q, never = gpu.compute_queue(name="q"), system.semaphore("never")
        out = gpu.alloc(4096, "gtt", name="out")
        q.write_data(out, b"\x05" * 8).wait(never, 1).write_data(out, b"\x06" * 8).submit()
        while not q.waiting:
            pass
        q.destroy()
    report = replay_trace(path, Options(timeout=1, queue_type="aql"), emulate="gfx942")
    assert report.status == EXIT_OK and len(report.results[0].left) == 1, report.lines()


def test_a_queue_destroyed_at_its_second_wait_is_destroyed_there_in_the_replay_too(tmp_path):
    """Campaign 72: a queue that waits for a kernel, copies, then waits for what never comes was destroyed at that
    second wait; the replay, its kernel slower, destroyed it while it still stood at the first, before the copy
    that a later checkpoint hashed, and said DIVERGED."""
    import time

    import numpy as np

    from kfdtrace.driver.kernels.device import corpus

    path, n = str(tmp_path / "t.kfdtrace"), 4096
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        p, x = gpu.compute_queue(name="p"), gpu.sdma_queue(name="x")
        inp, res = gpu.alloc(n * 4, "gtt", name="in"), gpu.alloc(n * 4, "gtt", name="res")
        src, dst = gpu.alloc(4096, "gtt", name="src"), gpu.alloc(4096, "gtt", name="dst")
        inp.write(np.random.default_rng(1).integers(1, 1 << 20, n, dtype=np.uint32))
        src.write(bytes(range(256)) * 16)
        s, never, done = system.semaphore("s"), system.semaphore("never"), system.semaphore("done")
        x.wait(s, 1).copy(dst, src, 4096).wait(never, 1).submit()
        p.dispatch(corpus(gpu).kernel("collatz"), (n,), (64,), inp, res, np.uint32(n)).signal(s, 1) \
            .signal(done, 1).submit()
        while not x.waiting or dst.read(0, 16) != src.read(0, 16):  # the CPU looks: no record says it
            time.sleep(0.01)
        x.destroy()
        done.wait(1, timeout=120)
    assert "dst" in checkpointed(path)
    assert replay_trace(path, Options(timeout=60), emulate="gfx942").status == EXIT_OK


def test_a_destroyed_queue_s_writes_are_settled_only_where_it_had_run_or_stood_waiting():
    """What a queue destroyed with work left wrote is final where it had run (its read pointer), and beyond only
    when it stood at a wait; stopped in the middle of other work, what it wrote beyond is not known."""
    mid = QueueProgress("mid", destroyed=True, stopped=100)
    waiting = QueueProgress("waiting", destroyed=True, stopped=100, stood=True)
    assert mid.settled(100) and not mid.settled(120) and waiting.settled(120)
    assert not QueueProgress("alive", done=50).settled(60)


def test_an_aql_queue_destroyed_at_a_barrier_nothing_releases_stands_still_in_the_replay_too(tmp_path):
    """An AQL queue's read pointer counts the packets read and its doorbell names the last one written: compared
    as they were, a queue destroyed at its only packet, a BARRIER_AND on a signal nothing decrements, counted as
    drained, and the replay waited for it to drain and said HANG."""
    from kfdtrace.driver.aql_queue import HsaSignal

    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        q = system.devices[0].aql_queue(name="a")
        q.barrier_and([HsaSignal(system, 1, name="never")])
        q.destroy()
    report = replay_trace(path, Options(), emulate="gfx942")
    assert report.status == EXIT_OK and len(report.results[0].left) == 1, report.lines()


def test_a_queue_left_waiting_on_a_second_gpu_at_the_end_stands_still_in_the_replay(tmp_path):
    """Campaign 55: closing the first GPU freed the semaphores, which live on it, before the second GPU's queue
    still polling one was destroyed: the recording's queue faulted unseen, the replay's said HANG."""
    path = str(tmp_path / "left.kfdtrace")
    with record(path), System.open(emulate="gfx942,gfx942") as system:
        gpu = system.devices[1]
        stuck, q = gpu.sdma_queue(name="stuck"), gpu.sdma_queue(name="q")
        out = gpu.alloc(4096, "gtt", name="out")
        stuck.wait(system.semaphore("never"), 1).fill(out, 1, 4).submit()
        q.fill(out, 2, 4096).sync()
    with TraceReader(path) as r:
        records = list(r.records({"buffer", "queue_destroy", "free"}))
    pool = next(rec.fields["va"] for rec in records if rec.type == "buffer" and rec.fields["name"] == "semaphores")
    freed = next(rec.n for rec in records if rec.type == "free" and rec.fields["va"] == pool)
    assert [rec.n < freed for rec in records if rec.type == "queue_destroy"] == [True, True]
    report = replay_trace(path, Options(), emulate="gfx942,gfx942")
    assert report.status == EXIT_OK and len(report.results[0].left) == 1, report.lines()


def test_indirect_buffer_copies_are_freed_once_the_queue_is_past_them(tmp_path, monkeypatch):
    """The replay's translated copy of each called indirect buffer goes once its submission is done: a long
    trace of IB submissions holds a couple at a time, not one per submission."""
    from kfdtrace.driver.memory import Buffer
    from kfdtrace.driver.system import Device

    path = str(tmp_path / "ibs.kfdtrace")
    with record(path), System.open(emulate="gfx1201") as system:
        gpu = system.devices[0]
        q = gpu.sdma_queue()
        out, ib = gpu.alloc(4096, "gtt", name="out"), gpu.alloc(4096, "gtt", name="ib")
        for i in range(40):
            body = q.dialect.build("FENCE", addr=out.va + 8, data=i) + q.dialect.build("NOP") * 4
            ib.write(body)
            q.packet("INDIRECT", ib_base=ib.va, ib_size=len(body) // 4).sync()
    live: set[int] = set()
    peak = 0
    alloc, free = Device.alloc, Buffer.free

    def counting_alloc(self, *args, **kwargs):
        nonlocal peak
        b = alloc(self, *args, **kwargs)
        if kwargs.get("role") == "replay indirect buffer":
            live.add(id(b))
            peak = max(peak, len(live))
        return b

    def counting_free(self, keep_addresses=False):
        live.discard(id(self))
        return free(self, keep_addresses)

    monkeypatch.setattr(Device, "alloc", counting_alloc)
    monkeypatch.setattr(Buffer, "free", counting_free)
    report = replay_trace(path, Options(), emulate="gfx942")
    assert report.status == EXIT_OK, report.lines()
    assert report.results[0].submissions >= 40
    assert 1 <= peak <= 2 and not live


def test_a_conditional_governs_the_same_packets_after_translation():
    from kfdtrace.replay.translate import Relocation, Translator

    src, dst = DIALECTS["sdma6"], DIALECTS["sdma7"]  # a copy with CPV set grows by sdma7's DCC word
    relocation = Relocation()
    relocation.add(0x10000, 0x10000, 0x50000)
    copy = src.build("COPY_LINEAR", count=255, src=0x10000, dst=0x10100, cpv=1)
    ring = src.build("COND_EXE", addr=0x18000, reference=1, exec_count=len(copy) // 4) + copy
    out = Translator(src, dst, 1 << 22, relocation).ring(ring, "test")
    cond, moved = list(dst.iter_packets(out))
    assert cond.name == "COND_EXE" and cond.exec_count == moved.size // 4 == 8 and moved.payload == bytes(4)
    assert (cond.addr, moved.src, moved.dst) == (0x58000, 0x50000, 0x50100)


def test_a_conditional_whose_translation_outgrows_its_count_is_refused():
    from kfdtrace.replay.translate import Relocation, Translator

    src, dst = DIALECTS["sdma6"], DIALECTS["sdma4.4"]
    relocation = Relocation()
    relocation.add(0x10000, 1 << 24, 0x10000)
    copies = src.build("COPY_LINEAR", count=(4 << 20) + 3, src=0x10000, dst=0x810000) * 1200  # 2 each on sdma4.4
    ring = src.build("COND_EXE", addr=0x18000, reference=1, exec_count=len(copies) // 4) + copies
    with pytest.raises(ReplayError, match=r"COND_EXE at byte 0x0 governs 8400 dwords, which translate to 16800 "
                                          r"for this target: more than its exec_count holds \(16383\)"):
        Translator(src, dst, 1 << 22, relocation).ring(ring, "submission 0")


def test_a_conditional_and_what_it_governs_too_long_for_the_ring_are_refused_before_submission(tmp_path):
    """Once translated, a COND_EXE and the copies it governs (split at the target's limit) take more than the
    ring: they cannot go on it in one piece, so nothing is submitted."""
    path, size = str(tmp_path / "cond.kfdtrace"), (4 << 20) + 4
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        src, dst, flag = (gpu.alloc(n, "gtt", name=name) for n, name in ((size, "src"), (size, "dst"), (4, "flag")))
        q = gpu.sdma_queue(ring_size=4096, max_copy=8 << 20, name="small")
        q.packet("COND_EXE", addr=flag.va, reference=1, exec_count=7 * 100)  # the flag holds 0: skipped
        for _ in range(100):
            q.copy(dst, src, size)
        q.sync()
    res = replay(path, "--emulate", "gfx942")
    assert res.returncode == EXIT_UNSUPPORTED, res.stdout + res.stderr
    assert "submission 0 (queue 0): 5620 bytes of packets that must lie on the ring in one piece (a packet, or a " \
           "conditional with the packets it may skip) do not fit a 4096-byte ring" in res.stderr, res.stderr
    assert "loop 1" not in res.stdout  # nothing ran


def test_a_repeated_packet_is_translated_once_while_its_relocation_and_event_stay():
    from kfdtrace.replay.translate import Relocation, Translator

    src, dst = DIALECTS["sdma4.4"], DIALECTS["sdma6"]
    relocation = Relocation()
    relocation.add(0x10000, 0x10000, 0x50000)
    events = {4: 40}
    ring = (src.build("COPY_LINEAR", count=255, src=0x10000, dst=0x10100) + src.build("TRAP", int_context=4)) * 3
    t = Translator(src, dst, 1 << 22, relocation, event_id=lambda e: events[e])
    decoded = []  # the packets read (decoded, or their dwords unpacked to be translated straight)

    def counting(real):
        def read(data: bytes, offset: int = 0):
            decoded.append(offset)
            return real(data, offset)
        return read

    def moved(out: bytes) -> list[tuple]:
        return [(p.name, p.fields.get("src"), p.fields.get("int_context")) for p in dst.iter_packets(out)]

    with mock.patch.object(src, "decode", counting(src.decode)), \
            mock.patch.object(src["COPY_LINEAR"], "unpack_from", counting(src["COPY_LINEAR"].unpack_from)), \
            mock.patch.object(src["TRAP"], "unpack_from", counting(src["TRAP"].unpack_from)):
        first = t.ring(ring, "test")
        assert len(decoded) == 2  # the copy and the trap, once each
        assert moved(first) == [("COPY_LINEAR", 0x50000, None), ("TRAP", None, 40)] * 3
        events[4] = 41  # the recorded event now maps elsewhere: the trap is translated again
        assert moved(t.ring(ring, "test"))[1] == ("TRAP", None, 41) and len(decoded) == 3
        relocation.remove(0x10000)
        relocation.add(0x10000, 0x10000, 0x70000)  # the buffer moved: the copy is translated again
        assert moved(t.ring(ring, "test"))[0] == ("COPY_LINEAR", 0x70000, None) and len(decoded) == 5


@pytest.mark.parametrize("name", ["ping_pong-gfx1100-before-events", "sdma_stress-gfx942-before-events"])
@pytest.mark.parametrize("family", ["gfx942", "gfx1201"])
def test_traces_from_before_event_records_still_replay(name, family):
    """Recorded by the previous capture (format 1.0 too): no event or thread records, 8-byte semaphores,
    queue_destroy without rptr."""
    path = os.path.join(os.path.dirname(__file__), "fixtures", "traces", f"{name}.kfdtrace")
    with TraceReader(path) as r:
        assert "event" not in r.counts and "thread" not in r.counts
    report = replay_trace(path, Options(), emulate=family)
    assert report.status == EXIT_OK, report.lines()
    assert report.results[0].verified > 0


def test_the_run_reuses_the_survey_s_translations_while_nothing_moved(monkeypatch):
    from kfdtrace.replay.translate import IDENTITY, Relocation, TranslationCache, Translator

    d = DIALECTS["sdma4.4"]
    base = 0x7F00_0000_0000
    ring = d.build("COPY_LINEAR", count=63, src=base, dst=base + 0x1000) + d.build("FENCE", addr=base + 64, data=1)
    survey, run, moved = Relocation(), Relocation(), Relocation()
    for r in (survey, run):
        r.add(base, 1 << 20, base)
    moved.add(base, 1 << 20, base + (1 << 30))
    assert survey.state == run.state == IDENTITY and moved.state != IDENTITY
    cache = TranslationCache()
    first = Translator(d, DIALECTS["sdma6"], 1 << 22, survey, cache=cache).ring(ring, "survey")
    writes: list = []
    with monkeypatch.context() as m:  # the run decodes nothing: every packet is the survey's
        m.setattr(d, "decode", lambda *a: pytest.fail("decoded again"))
        assert Translator(d, DIALECTS["sdma6"], 1 << 22, run, cache=cache).ring(ring, "run", writes) == first
    assert writes == [(0, (base + 0x1000,), False), (28, (base + 64,), False)]  # what each packet writes
    relocated = Translator(d, DIALECTS["sdma6"], 1 << 22, moved, cache=cache).ring(ring, "moved")
    assert relocated != first  # another relocation state: translated anew
    run.remove(base)
    run.add(base, 1 << 20, base + (1 << 30))
    assert run.state != IDENTITY
    run.remove(base)
    assert run.state == IDENTITY


def test_two_relocations_at_the_same_version_never_share_translations():
    from kfdtrace.replay.translate import Relocation, TranslationCache, Translator

    d = DIALECTS["sdma4.4"]
    base = 0x7F00_0000_0000
    ring = d.build("FENCE", addr=base + 64, data=1)
    cache, outputs = TranslationCache(), []
    for delta in (1 << 30, 2 << 30):  # a loop's instance, then the next loop's: same version, other places
        r = Relocation()
        r.add(base, 1 << 20, base + delta)
        outputs.append(Translator(d, d, 1 << 22, r, cache=cache).ring(ring, "run"))
    assert outputs[0] != outputs[1]
    assert [p.addr for p in d.iter_packets(outputs[1])] == [base + (2 << 30) + 64]


@pytest.mark.parametrize("target", ["gfx942", "gfx1100"])
def test_a_clock_in_a_buffer_masks_its_bytes_not_the_buffer(tmp_path, target):
    """A timestamp written into a buffer the copies also fill: the clock's 8 bytes differ on every run and are
    not compared, the rest is (it used to skip the whole buffer, so a wrong result replayed OK)."""
    path, bad = str(tmp_path / "ts.kfdtrace"), str(tmp_path / "bad.kfdtrace")
    with record(path), System.open(emulate=target) as system:
        gpu = system.devices[0]
        src, out = gpu.alloc(64 << 10, "gtt", name="src"), gpu.alloc((64 << 10) + 8, "gtt", name="out")
        src.write(bytes(range(256)) * 256)
        gpu.sdma_queue().copy(out, src, 64 << 10).timestamp(out, offset=64 << 10).sync()
        gpu.compute_queue().timestamp(out, offset=104).sync()  # a PM4 clock too, inside the first chunk
        with pytest.raises(ValueError, match="8-byte aligned address"):
            gpu.compute_queue().timestamp(out, offset=100)
    report = replay_trace(path, Options(), emulate=target)
    assert report.status == EXIT_OK and report.results[0].verified >= 1, report.lines()

    with TraceReader(path) as r:  # the last checkpoint of out: after the PM4 clock at +0x64
        last = max(c.n for c in r.records(["checkpoint"]) if any(b["name"] == "out" for b in c.fields["buffers"]))

    def change(rec, reader, writer):  # what the checkpoint expects of out, one byte away from the clocks
        f = dict(rec.fields)
        if rec.type == "checkpoint" and rec.n == last:
            f["buffers"] = [dict(b) for b in f["buffers"]]
            for b in f["buffers"]:
                if b["name"] == "out":
                    data = bytearray(reader.blob(b["keys"][0]))
                    data[200] ^= 1
                    b["keys"] = [writer.blob(bytes(data)), *b["keys"][1:]]
                    b["hash"] = blob_key(b"".join(b["keys"]))
        return f

    rewrite(path, bad, change)
    report = replay_trace(bad, Options(), emulate=target)
    assert report.status == EXIT_DIVERGED and "buffer out" in " ".join(report.lines()), report.lines()
    # where they part is the changed byte, not the clock at +0x68 before it, which differs on every run
    assert "first at +0xc8:" in report.lines()[-1], report.lines()


def test_a_clock_slot_written_over_with_a_value_is_compared_again(tmp_path):
    """Campaign 47's bug14: a timestamp into a results slot, then a FENCE of 0x5555 into the slot's low dword: its
    mask hid the FENCE, so a replay fencing another value there said OK. The clock's high dword stays masked."""
    path, bad = str(tmp_path / "slot.kfdtrace"), str(tmp_path / "bad.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        res = gpu.alloc(4096, "gtt", name="results")
        gpu.sdma_queue().timestamp(res, offset=8).fence(res, 0x5555, offset=8).sync()
    assert replay_trace(path, Options(), emulate="gfx942").status == EXIT_OK

    def change(rec, reader, writer):  # the FENCE writes 0x5556
        f = dict(rec.fields)
        if rec.type == "doorbell":
            f["ring"] = f["ring"].replace((0x5555).to_bytes(4, "little"), (0x5556).to_bytes(4, "little"))
        return f

    rewrite(path, bad, change)
    report = replay_trace(bad, Options(), emulate="gfx942")
    assert report.status == EXIT_DIVERGED and "first at +0x8:" in report.lines()[-1], report.lines()


def test_a_write_to_one_address_unmasks_only_the_dword_it_leaves(tmp_path):
    """Campaign 107: a WRITE_DATA with WR_ONE_ADDR (addr_incr) puts every dword at its one address, but the replay
    took it to write its whole payload: it unmasked the GPU clock after that address (a false DIVERGED)."""
    path = str(tmp_path / "one.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        q, out = gpu.compute_queue(), gpu.alloc(4096, "gtt", name="out")
        out.write(bytes(64))
        q.packet("RELEASE_MEM", data_sel=DataSel.GPU_CLOCK, addr=out.va + 8)
        q.packet("WRITE_DATA", struct.pack("<3I", 0xA, 0xB, 0xC), dst_sel=5, addr_incr=1, dst=out.va + 4)
        q.sync()
        assert out.read(0, 8) == bytes(4) + struct.pack("<I", 0xC)
    for target in ("gfx942", "gfx1100"):
        report = replay_trace(path, Options(relocate="always"), emulate=target)
        assert report.status == EXIT_OK and report.results[0].verified >= 1, report.lines()
    with TraceReader(path) as r:
        ring = next(d.fields["ring"] for d in r.records(["doorbell"]) if d.fields["ring"])
    packet = [p for p in PM4_GFX9.iter_packets(ring) if p.name == "WRITE_DATA"][0]
    assert packet.written_ranges() == [(packet.fields["dst"], 4)] and packet.inline() == struct.pack("<I", 0xC)


FAR = 0x3A00_0000_0000  # user and GPU addresses far below where mmap puts a process's mappings


def test_a_copy_across_two_buffers_back_to_back_is_recorded_and_replays_in_place_only(tmp_path, monkeypatch):
    """Campaigns 105 and 107: a copy running from the end of one buffer into the one mapped right after it writes
    both (the capture took it to write the first alone, which no checkpoint then compared); moved apart, the
    replay's copy faults past the first, which is no hang of the program's: exit 3, naming both."""
    path = str(tmp_path / "span.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        for base in range(FAR, FAR + (64 << 30), 1 << 30):  # A, then B right after it: far from the mappings
            try:  # other threads make meanwhile (a hole made by a free may be taken before A or B gets it)
                a = gpu.alloc(4096, "gtt", va=base, name="A")
            except AddressInUse:
                continue
            try:
                b = gpu.alloc(4096, "gtt", va=base + 4096, name="B")
                break
            except AddressInUse:
                a.free()
        else:
            pytest.fail("no two free pages far from the process's mappings")
        c = gpu.alloc(4096, "gtt", name="C")
        c.write(b"\x33" * 4096)
        gpu.sdma_queue().copy(a.va + 4096 - 8, c.va, 16).sync()
        assert a.read(4088, 8) + b.read(0, 8) == b"\x33" * 16
    with TraceReader(path) as r:
        last = [c.fields for c in r.records(["checkpoint"])][-1]
    assert {"A", "B"} <= {b["name"] for b in last["buffers"]}
    status, report = replayed(path, "--emulate-recorded")  # a process of its own: the addresses are free there
    assert status == EXIT_OK and report["loops"][0][0]["verified"] >= 2, report
    alloc = Instance._alloc

    def apart(self, dev, f, opts):  # nothing goes right after a buffer: a spacer the GPU does not map is there
        buf = alloc(self, dev, f, opts)
        with contextlib.suppress(AddressInUse):
            dev.alloc(4096, "gtt", va=buf.va + buf.size, name="spacer").unmap_from(dev)
        return buf

    monkeypatch.setattr(Instance, "_alloc", apart)
    with pytest.raises(ReplayError, match="just past the end of buffer A in this replay: in the recording buffer B "
                                          "lay right after it"):
        replay_trace(path, Options(relocate="always"), emulate="gfx942")


def test_a_submission_whose_translation_outgrows_the_ring_goes_in_pieces(tmp_path):
    """60 copies of 8 MiB + 4 KiB in one submission on a 4 KiB ring: one packet each on RDNA3 (1.7 KiB of ring),
    three each where a packet copies at most 4 MiB (CDNA3): 5 KiB of packets that the replay's ring takes in
    units cut between packets (it used to be an internal error)."""
    path, size = str(tmp_path / "big.kfdtrace"), (8 << 20) + 4096
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        src, dst = gpu.alloc(size, "gtt", name="src"), gpu.alloc(size, "gtt", name="dst")
        src.write(bytes(range(256)) * (size // 256))
        q = gpu.sdma_queue(ring_size=4096, max_copy=gpu.target.sdma_copy_limit, name="small")  # RDNA3's: 1 GiB
        for _ in range(60):
            q.copy(dst, src, size)
        q.sync(timeout=120)
    report = replay_trace(path, Options(timeout=60), emulate="gfx942")
    assert report.status == EXIT_OK and report.results[0].verified >= 1, report.lines()


def test_the_verdict_line_is_the_exit_status_s_and_the_other_failures_are_said_before_it():
    """Campaign 109: with --concurrent, instance 1 diverged and instance 2 hung: the exit status said HANG (the
    worst), the verdict line DIVERGED of instance 1, and the hang was nowhere in the text."""
    report = Report("t.kfdtrace", ["gfx942"], ["gfx942"], "emulated", 1, 1,
                    loops=[[Result(difference="a wait completed"), Result(hang="queue 0 did not drain")]])
    assert report.status == EXIT_HANG
    assert report.lines()[-1] == "HANG in loop 1, instance 2: queue 0 did not drain"
    assert report.lines()[-2] == "also DIVERGED in loop 1, instance 1: a wait completed"


def test_an_ok_verdict_says_when_no_checkpoint_compared_any_memory():
    """Found by helper 42: a trace whose kernels wrote only where capture could not tell (through pointers read
    from memory) has no checkpoint of it, and its replay said "every checkpoint matched" of none at all."""
    def verdict(verified: int, left: list[str]) -> str:
        report = Report("t.kfdtrace", ["gfx942"], ["gfx942"], "emulated", 1, 1,
                        loops=[[Result(checkpoints=verified, verified=verified, left=left)]])
        return report.lines()[-1]
    assert verdict(3, []) == "OK: every submission completed, every queue drained and every checkpoint matched"
    assert verdict(0, []) == ("OK: every submission completed, every queue drained and no checkpoint compared any "
                              "memory (the recording checked none of what the GPU wrote)")
    assert verdict(0, ["q0"]).startswith("OK: no checkpoint compared any memory (the recording checked none of what "
                                         "the GPU wrote); 1 queue(s) still had work")


def test_a_divergence_names_the_bytes_that_differ_within_the_chunk():
    """Found by helper 41: one differing dword was reported as the whole compared chunk."""
    from kfdtrace.replay.engine import Divergence

    one = Divergence(1, "C", 0x1000, 0x100, 0x100, bytes(256), bytes(8) + b"\x01\x02" + bytes(246), None)
    assert one.describe().startswith("checkpoint 1: buffer C differs in bytes [0x108, 0x10a) of its chunk "
                                     "[0x100, 0x200); first at +0x108")
    unknown = Divergence(1, "C", 0x1000, 0x100, 0x100, None, bytes(256), "submission 3")
    assert unknown.describe() == ("checkpoint 1: buffer C differs in bytes [0x100, 0x200); it appeared after "
                                  "submission 3")


@pytest.mark.parametrize("one_packet", [False, True])
def test_an_overlapping_copy_larger_than_a_packet_moves_as_memmove_does(one_packet, tmp_path):
    """A 6 MiB copy within one buffer to 4 KiB above its source: split into packets (by the driver, or by the
    replay where the recording's queue took it in one), the last goes first, else the first overwrites what a
    later one reads (the replay diverged even on the recorded family)."""
    import numpy as np

    path, size = str(tmp_path / "overlap.kfdtrace"), 6 << 20
    data = np.random.default_rng(3).integers(0, 256, size + (1 << 20), dtype=np.uint8)
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        buf = gpu.alloc(size + (1 << 20), "gtt", name="buf")
        buf.write(data)
        q = gpu.sdma_queue(max_copy=(1 << 30) if one_packet else None)
        q.copy(buf, buf, size, dst_offset=4096).sync()
        want = data.copy()
        want[4096:4096 + size] = data[:size]
        assert np.array_equal(buf.numpy(), want)
    for how in ({"emulate_recorded": True}, {"emulate": "gfx1201"}):
        report = replay_trace(path, Options(), **how)
        assert report.status == EXIT_OK and report.results[0].verified > 0, report.lines()


def test_a_wait_may_take_longer_the_more_instances_replay_side_by_side():
    """Campaign 72: four instances of a trace whose kernel took 2 s each ran it four times slower (the emulated
    GPU shares the CPU), past four times the recorded wait, and an honest trace said HANG. The slack a recorded
    wait gets grows with the instances side by side."""
    from types import SimpleNamespace

    from kfdtrace.replay.engine import Instance, device_map, survey
    from kfdtrace.replay.session import open_target

    with TraceReader(sample("sdma_stress-gfx942")) as trace, open_target(trace, "gfx942", None, False) as system:
        devices = device_map(trace, system, None)
        s = survey(trace, devices, None)
        try:
            one, three = (Instance(trace, system, devices, s, Options(timeout=1), side_by_side=k) for k in (1, 3))
            wait = SimpleNamespace(fields={"t": 2_000_000_000, "tid": 7, "timeout": 60})
            for instance in (one, three):
                instance._thread_t[7] = 0
            assert one._limit(wait) == 8 and three._limit(wait) == 24
        finally:
            s.release()


def test_clocks_a_copy_carries_out_of_vram_are_masked_where_they_land(tmp_path):
    """Campaign 93 (left then): a profiler's timestamps written into VRAM, copied out beside data to a buffer the
    CPU reads, were compared as data there (DIVERGED on every replay). A copy carries the masks of the clocks
    it copies (by the packet tables: one address read and one written advance with its byte count); the data
    beside them is compared still."""
    path, bad = str(tmp_path / "copied.kfdtrace"), str(tmp_path / "bad.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        stamps = gpu.alloc(4096, "vram", cpu_access=False, name="stamps")
        data, out = gpu.alloc(4096, "gtt", name="data"), gpu.alloc(4096, "gtt", name="out")
        data.write(bytes(range(256)) * 16)
        q = gpu.sdma_queue()
        q.copy(stamps, data, 4096)
        for i in range(4):
            q.timestamp(stamps, offset=64 + 16 * i)
        q.copy(out, stamps, 256, dst_offset=4).sync()  # the clocks land 4 bytes on from where they were
    for target, relocate in (("gfx942", "auto"), ("gfx1100", "always")):
        report = replay_trace(path, Options(relocate=relocate), emulate=target)
        assert report.status == EXIT_OK and report.results[0].verified >= 1, report.lines()

    def change(rec, reader, writer):  # what the checkpoint expects of out: a data byte between two clocks
        f = dict(rec.fields)
        if rec.type == "checkpoint" and any(b["name"] == "out" for b in f["buffers"]):
            f["buffers"] = [dict(b) for b in f["buffers"]]
            for b in f["buffers"]:
                if b["name"] == "out":
                    changed = bytearray(reader.blob(b["keys"][0]))
                    changed[4 + 64 + 8 + 3] ^= 1  # after the first clock (at +0x44), before the second (+0x54)
                    b["keys"] = [writer.blob(bytes(changed)), *b["keys"][1:]]
                    b["hash"] = blob_key(b"".join(b["keys"]))
        return f

    rewrite(path, bad, change)
    report = replay_trace(bad, Options(), emulate="gfx942")
    assert report.status == EXIT_DIVERGED and "first at +0x4f:" in report.lines()[-1], report.lines()


def _flip_checkpoint(path: str, bad: str, name: str, at: int) -> None:
    """`path` rewritten into `bad` with byte `at` of what its last checkpoint of buffer `name` expects flipped."""
    with TraceReader(path) as r:
        last = max(c.n for c in r.records(["checkpoint"]) if any(b["name"] == name for b in c.fields["buffers"]))

    def change(rec, reader, writer):
        f = dict(rec.fields)
        if rec.n == last:
            f["buffers"] = [dict(b) for b in f["buffers"]]
            for b in f["buffers"]:
                if b["name"] == name:
                    changed = bytearray(reader.blob(b["keys"][0]))
                    changed[at] ^= 0xFF
                    b["keys"] = [writer.blob(bytes(changed)), *b["keys"][1:]]
                    b["hash"] = blob_key(b"".join(b["keys"]))
        return f
    rewrite(path, bad, change)


@pytest.mark.parametrize("case", ["unaligned", "cpu over the clock", "fill over the copy", "copy in an IB"])
def test_copied_clocks_mask_their_own_bytes_and_no_others(tmp_path, case):
    """Campaign 101, on e86e17a: a clock copied to an unaligned offset masked whole dwords, CPU data beside it too; a
    clock the CPU (or a fill) wrote over stayed masked, and a copy carried that mask onto data; a copy in an
    indirect buffer did not see a clock the ring wrote before it (DIVERGED on an honest trace). Masks are bytes,
    a write unmasks all it covers, and a ring's writes before an indirect buffer are taken before the buffer's."""
    path, bad = str(tmp_path / "t.kfdtrace"), str(tmp_path / "bad.kfdtrace")
    data = bytes(range(1, 65))
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        stamps = gpu.alloc(4096, "gtt", name="stamps") if case == "cpu over the clock" else \
            gpu.alloc(4096, "vram", cpu_access=False, name="stamps")
        out = gpu.alloc(4096, "gtt", name="out")
        out.write(bytes(64))
        q = gpu.sdma_queue()
        if case == "unaligned":  # the clock lands at out+2..9; bytes 0, 1, 10, 11 are the CPU's
            out.write(data)
            q.timestamp(stamps, offset=16).copy(out, stamps, 8, dst_offset=2, src_offset=16).sync()
        elif case == "cpu over the clock":
            q.timestamp(stamps, offset=16).sync()
            stamps.write(data)  # the data, not the clock, reaches out
            q.copy(out, stamps, 64).sync()
        elif case == "fill over the copy":
            q.timestamp(stamps, offset=16).copy(out, stamps, 64).fill(out, 0x22222222, 64).sync()
        else:
            ib = gpu.alloc(4096, "gtt", name="ib")
            body = q.dialect.build("COPY_LINEAR", count=63, src=stamps.va, dst=out.va)
            ib.write(body + q.dialect.build("NOP") * ((-len(body) // 4) % 8))
            q.timestamp(stamps, offset=16).packet("INDIRECT", ib_base=ib.va, ib_size=8).sync()
    for target, relocate in (("gfx942", "auto"), ("gfx1100", "always")):
        report = replay_trace(path, Options(relocate=relocate), emulate=target)
        assert report.status == EXIT_OK and report.results[0].verified >= 1, (target, report.lines())
    if case != "copy in an IB":  # a byte of data where a clock is not (any more): changed, it must be found
        flip = 10 if case == "unaligned" else 16
        _flip_checkpoint(path, bad, "out", flip)
        report = replay_trace(bad, Options(), emulate="gfx942")
        assert report.status == EXIT_DIVERGED and f"first at +{flip:#x}:" in report.lines()[-1], report.lines()
