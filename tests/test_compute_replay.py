"""Compute in traces (issue 13, its replay part): recorded kernel dispatches (PM4 and AQL) replay on their own
family and on others, with the code object for the target, kernel arguments rewritten for its build, and the
dispatch state derived from its kernel descriptor; what cannot replay is refused before anything is submitted."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from kfdtrace.capture import record
from kfdtrace.driver import System
from kfdtrace.driver.aql import AQL, SignalCondition
from kfdtrace.driver.aql_queue import HsaSignal
from kfdtrace.driver.kernargs import Launch, pack
from kfdtrace.driver.kernels.build import BUILT, object_path
from kfdtrace.driver.kernels.device import corpus, run_case
from kfdtrace.driver.kernels.reference import CASES
from kfdtrace.replay.code_objects import parse_code_object_options
from kfdtrace.replay.compute import AqlOnPm4
from kfdtrace.replay.engine import (
    EXIT_DIVERGED,
    EXIT_OK,
    EXIT_UNSUPPORTED,
    Options,
    TargetRefused,
    _Surveyor,
    device_map,
    handled,
    survey,
)
from kfdtrace.replay.session import open_target, replay_trace
from kfdtrace.replay.translate import OutsideBuffers, ReplayError
from kfdtrace.traces import records as R
from kfdtrace.traces.format import TraceReader
from tests.test_replay import rewrite

N = 1000  # not a multiple of the workgroup: the last group is partial
FAMILIES = ("gfx90a", "gfx942", "gfx1030", "gfx1100", "gfx1201")
BUNDLE = str(BUILT / "corpus.hipfb")


def vector_add(path: str, target: str, aql: bool, source: str | None = None, rounds: int = 2) -> None:
    """Record vector adds of N floats (`rounds` dispatches, each waited for), c checked by the CPU."""
    with record(path), System.open(emulate=target) as system:
        gpu = system.devices[0]
        program = gpu.load(source) if source else corpus(gpu)
        kernel = program.kernel("vector_add")
        a, b, c = (gpu.alloc(N * 4, "gtt", name=name) for name in ("a", "b", "c"))
        a.write(np.arange(N, dtype=np.float32))
        q = gpu.aql_queue(name="q") if aql else gpu.compute_queue(name="q")
        for r in range(rounds):
            b.write(np.full(N, r + 1, np.float32))
            q.dispatch(kernel, (N,), (64,), a, b, c, np.uint32(N))
            q.sync(timeout=120)
            assert np.frombuffer(c.read(), np.float32)[N - 1] == N - 1 + r + 1


def overlap(path: str, target: str) -> None:
    """Record the overlap example's shape: SDMA copies in, a kernel between two semaphores, SDMA copies out."""
    with record(path), System.open(emulate=target) as system:
        gpu = system.devices[0]
        kernel = corpus(gpu).kernel("collatz")
        n = 256
        copy_in, compute, copy_out = gpu.sdma_queue(name="in"), gpu.compute_queue(name="k"), gpu.sdma_queue(name="out")
        host_in, host_out = gpu.alloc(n * 4, "gtt", name="in"), gpu.alloc(n * 4, "gtt", name="out")
        stage, result = (gpu.alloc(n * 4, "vram", cpu_access=False, name=x) for x in ("stage", "result"))
        staged, computed, drained = (system.semaphore(x) for x in ("staged", "computed", "drained"))
        host_in.write(np.arange(1, n + 1, dtype=np.uint32))
        copy_in.copy(stage, host_in, n * 4).signal(staged, 1).submit()
        compute.wait(staged, 1).dispatch(kernel, (n,), (64,), stage, result, np.uint32(n)).signal(computed, 1).submit()
        copy_out.wait(computed, 1).copy(host_out, result, n * 4).signal(drained, 1).submit()
        drained.wait(1, timeout=120)
        assert np.frombuffer(host_out.read(), np.uint32)[0] == 0  # collatz(1) takes no steps


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    """Traces recorded once: PM4 on gfx1100 and gfx942, AQL on gfx942, and from the multi-target bundle."""
    d = tmp_path_factory.mktemp("compute")
    out = {}
    for name, target, aql, source in (("pm4-gfx1100", "gfx1100", False, None), ("pm4-gfx942", "gfx942", False, None),
                                      ("aql-gfx942", "gfx942", True, None),
                                      ("bundle-pm4-gfx1100", "gfx1100", False, BUNDLE),
                                      ("bundle-aql-gfx942", "gfx942", True, BUNDLE)):
        out[name] = str(d / f"{name}.kfdtrace")
        vector_add(out[name], target, aql, source)
    out["overlap-gfx90a"] = str(d / "overlap.kfdtrace")
    overlap(out["overlap-gfx90a"], "gfx90a")
    return out


def per_target(tmp_path) -> Options:
    """--code-objects DIR holding the corpus built for every target, named <name>.<gfx>.co."""
    for family in FAMILIES:
        shutil.copy(object_path(family, BUILT, False), tmp_path / f"corpus.{family}.co")
    # the corpus's longest kernels take seconds in the emulator on a loaded machine: no wait of theirs is a hang
    return Options(code_objects=parse_code_object_options([], str(tmp_path)), timeout=120)


@pytest.mark.parametrize("name", ["pm4-gfx1100", "pm4-gfx942", "aql-gfx942", "overlap-gfx90a"])
def test_a_compute_trace_replays_and_verifies_where_it_was_recorded(traces, name):
    report = replay_trace(traces[name], Options(), emulate_recorded=True)
    assert report.status == EXIT_OK, report.lines()
    (result,) = report.loops[0]
    checkpoints = 1 if name.startswith("overlap") else 2  # overlap checks its result once
    assert result.verified >= checkpoints and result.checkpoints >= checkpoints


@pytest.mark.parametrize("name", ["bundle-pm4-gfx1100", "bundle-aql-gfx942"])
@pytest.mark.parametrize("family", FAMILIES)
def test_a_recorded_bundle_gives_every_family_its_object(traces, name, family):
    report = replay_trace(traces[name], Options(), emulate=family)
    assert report.status == EXIT_OK, report.lines()
    assert report.loops[0][0].verified >= 2


@pytest.mark.parametrize("name", ["pm4-gfx1100", "aql-gfx942", "overlap-gfx90a"])
@pytest.mark.parametrize("family", FAMILIES)
def test_per_target_builds_replay_on_every_family(traces, name, family, tmp_path):
    report = replay_trace(traces[name], per_target(tmp_path), emulate=family)
    assert report.status == EXIT_OK, report.lines()
    assert report.loops[0][0].verified >= 1


def test_moved_buffers_get_moved_kernel_arguments(traces, tmp_path):
    options = per_target(tmp_path)
    options.relocate = "always"
    report = replay_trace(traces["aql-gfx942"], options, emulate="gfx1201", concurrent=2)
    assert report.status == EXIT_OK, report.lines()
    assert all(r.relocated and r.verified >= 2 for r in report.loops[0])


def test_a_missing_code_object_is_refused_naming_every_kernel_and_target(traces):
    with pytest.raises(ReplayError, match=r"gfx1030.*vector_add|vector_add.*gfx1030"):
        replay_trace(traces["pm4-gfx1100"], Options(), emulate="gfx1030")


@pytest.mark.parametrize(("source", "why"), [
    ("kernel void other(global int *x) { x[0] = 1; }", r"it holds no kernel vector_add \(it holds other\)"),
    ("kernel void vector_add(global float *a, global float *b, global float *c, ulong n) { c[0] = a[0] + b[0]; }",
     r"vector_add argument 3 differs between the builds: recorded .*uint.*; loaded for the replay .*ulong")])
def test_a_given_object_that_cannot_run_a_dispatched_kernel_is_refused_before_submission(traces, source, why,
                                                                                          tmp_path):
    """Campaign 63: a build for the target lacking a dispatched kernel, or taking other arguments, was refused only
    when its first dispatch came, after the submissions before it had run."""
    (tmp_path / "k.cl").write_text(source)
    subprocess.run(["clang-19", "-x", "cl", "-cl-std=CL2.0", "-target", "amdgcn-amd-amdhsa", "-mcpu=gfx1030",
                    "-nogpulib", "-O2", "-c", str(tmp_path / "k.cl"), "-o", str(tmp_path / "k.o")], check=True)
    subprocess.run(["ld.lld-19", "-shared", str(tmp_path / "k.o"), "-o", str(tmp_path / "corpus.gfx1030.co")],
                   check=True)
    options = Options(code_objects=parse_code_object_options([], str(tmp_path)))
    with TraceReader(traces["pm4-gfx1100"]) as trace, open_target(trace, "gfx1030", None, False) as system:
        with pytest.raises(ReplayError, match=r"^the code object for gfx1030 in place of object 'corpus' .*"
                                              r"corpus.gfx1030.co\) does not fit: " + why):
            survey(trace, device_map(trace, system, None), options.code_objects)


@pytest.mark.parametrize("name", ["pm4-gfx1100", "aql-gfx942"])
def test_a_kernel_argument_buffer_named_after_another_threads_record_is_followed(traces, name, tmp_path):
    """A thread's alloc and the buffer record naming it may have another thread's records between them: here the
    record the survey reads before each kernel argument buffer's alloc comes after the alloc instead."""
    read = handled(_Surveyor) - {R.BUFFER}
    with TraceReader(traces[name]) as r:
        recs = [rec for rec in r.records(read | {R.BUFFER})]
    kernargs = {rec.fields["va"] for rec in recs if rec.type == R.BUFFER and rec.fields["role"] == "kernargs"}
    allocs = [i for i, rec in enumerate(recs) if rec.type == R.ALLOC and rec.fields["va"] in kernargs]
    moved = {recs[i - 1].n: recs[i].n for i in allocs if recs[i - 1].type != R.BUFFER}
    assert len(moved) == len(allocs) >= 1
    held: dict[int, tuple] = {}
    later = str(tmp_path / "later.kfdtrace")

    def delay(rec, r, w):
        if rec.type == R.CODE_OBJECT:
            w.blob(r.blob(rec.fields["key"]))
        if rec.n in moved:
            held[moved[rec.n]] = (rec.type, rec.fields)
            return None
        return [(rec.type, rec.fields)] + ([held.pop(rec.n)] if rec.n in held else [])
    rewrite(traces[name], later, delay)
    report = replay_trace(later, per_target(tmp_path), emulate="gfx1201")
    assert report.status == EXIT_OK, report.lines()
    assert report.results[0].verified >= 2


def edit_kernargs(src: str, dst: str, edit) -> None:
    """Copy the trace, passing each CPU write into a kernel argument buffer (a queue's arena) through `edit`."""
    kernargs: list[range] = []

    def one(rec, r, w):
        f = dict(rec.fields)
        if rec.type == R.BUFFER and f["role"] == "kernargs":
            kernargs.append(range(f["va"], f["va"] + f["size"]))
        elif rec.type == R.CODE_OBJECT:
            w.blob(r.blob(f["key"]))
        elif rec.type == R.MEM and any(f["va"] in k for k in kernargs):
            f["key"] = w.blob(edit(r.blob(f["key"])))
        return f
    rewrite(src, dst, one)


def test_a_kernel_argument_outside_every_buffer_is_refused_before_submission(traces, tmp_path):
    bad = str(tmp_path / "bad.kfdtrace")
    edit_kernargs(traces["pm4-gfx1100"], bad, lambda d: struct.pack("<Q", 0xDEAD0000) + d[8:])
    with pytest.raises(OutsideBuffers, match=r"vector_add argument 0 .*0xdead0000 points outside every recorded "
                                             r"buffer"):
        replay_trace(bad, Options(), emulate_recorded=True)


def test_a_changed_scalar_argument_diverges(traces, tmp_path):
    changed = str(tmp_path / "changed.kfdtrace")
    edit_kernargs(traces["aql-gfx942"], changed, lambda d: d[:24] + struct.pack("<I", N // 2) + d[28:])
    report = replay_trace(changed, Options(), emulate_recorded=True)
    assert report.status == EXIT_DIVERGED
    assert "buffer c" in report.loops[0][0].divergence.describe()


def pointer_table(path: str, target: str) -> None:
    """Record a kernel computing a table of GPU addresses (into `data`) from words that are none (the address with
    its high half one more, and -1 to add there), then a kernel reading that table."""
    with record(path), System.open(emulate=target) as system:
        gpu = system.devices[0]
        add, memcpy = corpus(gpu).kernel("add_int"), corpus(gpu).kernel("memcpy_uint4")
        data, a, b, table, out = (gpu.alloc(4096, "gtt", name=n) for n in ("data", "a", "b", "table", "out"))
        a.write(np.array([data.va & 0xFFFFFFFF, (data.va >> 32) + 1] * 2, np.uint32))
        b.write(np.array([0, -1] * 2, np.int32))
        q = gpu.compute_queue(name="q")
        q.dispatch(add, (4,), (4,), a, b, table, np.uint32(4))
        q.sync(timeout=120)
        q.dispatch(memcpy, (1,), (1,), table, out, np.uint32(1))
        q.sync(timeout=120)
        assert struct.unpack_from("<Q", out.read(0, 8))[0] == data.va


def refused_only_when_moved(path: str, why: str, verified: int) -> None:
    """The trace replays and verifies `verified` buffers where its buffers keep their addresses, and is refused
    with a relocation hazard matching `why` when they must move."""
    report = replay_trace(path, Options(), emulate_recorded=True)
    assert report.status == EXIT_OK and report.loops[0][0].verified >= verified, report.lines()
    with pytest.raises(ReplayError, match=f"relocation hazard: {why}"):
        replay_trace(path, Options(relocate="always"), emulate_recorded=True)


def test_a_gpu_written_address_is_a_relocation_hazard_only_when_buffers_move(tmp_path):
    path = str(tmp_path / "table.kfdtrace")
    pointer_table(path, "gfx1100")
    refused_only_when_moved(path, r"buffer table\+0x0 holds GPU address 0x[0-9a-f]+ \(in buffer data\), written by "
                                  r"submission \d+ .*\(add_int\).*gives memcpy_uint4", 2)


def test_a_kernel_writing_addresses_the_cpu_reads_back_is_a_relocation_hazard_only_when_buffers_move(tmp_path):
    """Found by helper 42: a kernel computing addresses from a relocated pointer writes other values than the
    recording's when buffers move, and the checkpoint of them gave DIVERGED on a faithful replay."""
    path = str(tmp_path / "stored.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        add = corpus(gpu).kernel("add_int")
        data, a, b, table = (gpu.alloc(4096, "gtt", name=n) for n in ("data", "a", "b", "table"))
        a.write(np.array([data.va & 0xFFFFFFFF, (data.va >> 32) + 1], np.uint32))
        b.write(np.array([0, -1], np.int32))
        q = gpu.compute_queue(name="q")
        q.dispatch(add, (2,), (2,), a, b, table, np.uint32(2))
        q.sync(timeout=120)
        assert struct.unpack_from("<Q", table.read(0, 8))[0] == data.va
    refused_only_when_moved(path, r"the checkpoint at record \d+ finds GPU address 0x[0-9a-f]+ \(in buffer data\) "
                                  r"in buffer table\+0x0, which submission 0 .*\(add_int\) may have written", 1)


def test_an_end_pointer_a_kernel_is_given_is_a_relocation_hazard(tmp_path):
    """Found by helper 42: the address just past a buffer (C's end pointer, `p < end`) was taken for no address
    when no buffer followed, so it kept its recorded value when buffers moved (DIVERGED)."""
    path = str(tmp_path / "end.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        memcpy = corpus(gpu).kernel("memcpy_uint4")
        gap = gpu.alloc(4096, "gtt", name="gap")
        data, table, out = (gpu.alloc(4096, "gtt", name=n) for n in ("data", "table", "out"))
        end = data.va + data.size
        gap.free()  # whatever lay past data (or nothing) is no buffer of the trace's at the end address
        assert all(not b.va <= end < b.va + b.size for b in (table, out))
        table.write(struct.pack("<QQ", end, end))
        q = gpu.compute_queue(name="q")
        q.dispatch(memcpy, (1,), (1,), table, out, np.uint32(1))
        q.sync(timeout=120)
    report = replay_trace(path, Options(), emulate_recorded=True)
    # campaign 50: what a kernel writes through such an address goes unverified; an OK says so
    assert report.status == EXIT_OK and any(
        "what they write there is not verified (first: buffer table+0x0 holds GPU address" in n
        for n in report.results[0].notes), report.lines()
    with pytest.raises(ReplayError, match=r"relocation hazard: buffer table\+0x0 holds GPU address 0x[0-9a-f]+ "
                                          r"\(in buffer data\)"):
        replay_trace(path, Options(relocate="always"), emulate_recorded=True)


@pytest.mark.parametrize("how", ["copied", "packed", "sdma write", "pm4 write"])
def test_a_pointer_table_copied_to_a_kernel_or_packed_is_a_relocation_hazard(how, tmp_path):
    """Found by helper 42: a table the CPU wrote that reached the kernel through an SDMA copy, held a pointer at
    a 4-byte offset (a packed struct), or that a packet wrote inline (SDMA WRITE_LINEAR, PM4 WRITE_DATA in the
    submission of the dispatch), was not seen, and a replay with buffers moved faulted (HANG)."""
    path = str(tmp_path / f"{how}.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        memcpy = corpus(gpu).kernel("memcpy_uint4")
        data, staging, table, out = (gpu.alloc(4096, "gtt", name=n) for n in ("data", "staging", "table", "out"))
        q = gpu.compute_queue(name="q")
        if how in ("copied", "sdma write"):
            sdma = gpu.sdma_queue(name="s")
            if how == "copied":
                staging.write(struct.pack("<QQ", data.va, data.va + 64))
                sdma.copy(table, staging, 16).submit()
            else:
                sdma.write_data(table, struct.pack("<QQ", data.va, data.va + 64)).submit()
            sdma.sync(timeout=120)
        elif how == "packed":
            table.write(struct.pack("<IQI", 7, data.va, 0))  # an address 4 bytes in
        else:
            q.write_data(table, struct.pack("<QQ", data.va, data.va + 64))
        q.dispatch(memcpy, (1,), (1,), table, out, np.uint32(1))
        q.sync(timeout=120)
    assert replay_trace(path, Options(), emulate_recorded=True).status == EXIT_OK
    why = {"copied": r"buffer staging\+0x0 holds GPU address 0x[0-9a-f]+ \(in buffer data\), written by the CPU "
                     r"write at record \d+, before submission \d+ .*\(memcpy_uint4\) runs: a copy of it may reach "
                     r"the kernel",
           "packed": r"buffer table\+0x4 holds GPU address 0x[0-9a-f]+ \(in buffer data\)",
           "sdma write": r"buffer table\+0x0 holds GPU address 0x[0-9a-f]+ \(in buffer data\), written by the "
                         r"WRITE_LINEAR packet of submission 0",
           "pm4 write": r"buffer table\+0x0 holds GPU address 0x[0-9a-f]+ \(in buffer data\), written by the "
                        r"WRITE_DATA packet of submission 0 .*, and submission 0 .* gives memcpy_uint4"}[how]
    with pytest.raises(ReplayError, match=f"relocation hazard: {why}"):
        replay_trace(path, Options(relocate="always"), emulate_recorded=True)


def record_corpus(path: str, target: str, queue: str) -> None:
    """Record every corpus kernel run through `queue` ("pm4" or "aql"), each checked against numpy."""
    with record(path), System.open(emulate=target) as system:
        gpu = system.devices[0]
        program = corpus(gpu)
        for c in CASES:
            values = c.inputs()
            c.verify(values, run_case(gpu, program, c, values, queue))


@pytest.fixture(scope="module")
def corpus_traces(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    out = {}
    for target, queue in (("gfx942", "aql"), ("gfx1100", "pm4")):
        out[target] = str(d / f"corpus-{queue}-{target}.kfdtrace")
        record_corpus(out[target], target, queue)
    return out


@pytest.mark.parametrize("source", ["gfx942", "gfx1100"])
@pytest.mark.parametrize("family", FAMILIES)
def test_every_corpus_kernel_replays_and_verifies_on_every_family(corpus_traces, source, family, tmp_path):
    """The cross-family matrix: the corpus recorded on gfx942 (AQL, multi-XCC) and on gfx1100 (PM4), each
    kernel's outputs checkpointed, replayed on every family with that family's build."""
    report = replay_trace(corpus_traces[source], per_target(tmp_path), emulate=family)
    assert report.status == EXIT_OK, report.lines()
    (result,) = report.loops[0]
    assert result.submissions >= len(CASES) and result.verified >= len(CASES)


def test_the_overlap_trace_is_a_stress_loop_verified_every_loop(traces):
    """Compute and copies ordered by semaphores, replayed 3 times by 2 instances at once (the second on moved
    buffers), every loop verified; --json gives each loop's per-queue busy time and overlap."""
    report = replay_trace(traces["overlap-gfx90a"], Options(), emulate="gfx90a", loops=3, concurrent=2)
    assert report.status == EXIT_OK, report.lines()
    assert len(report.loops) == 3 and all(len(loop) == 2 for loop in report.loops)
    assert all(r.verified >= 1 for loop in report.loops for r in loop)
    assert all(loop[1].relocated for loop in report.loops)
    for loop in report.to_dict()["loops"]:
        for instance in loop:
            occupancy = instance["occupancy"]
            assert len(occupancy["queues"]) == 3 and 0 <= occupancy["overlap"] <= occupancy["busy_any"] <= 1


def threaded(path: str, target: str, rounds: int = 12) -> None:
    """Record three threads at once: add_int on a PM4 queue (inputs rewritten each round), saxpy on an AQL queue
    (a new scalar each dispatch, waited for every third), and SDMA copies between buffers each made and freed
    in its round; each thread checks what it got. Their records interleave as the threads ran."""
    n, failures = 256, []

    def pm4(gpu, kernel):
        q = gpu.compute_queue(name="pm4 thread")
        a, b, c = (gpu.alloc(n * 4, "gtt", name=f"pm4 {x}") for x in "abc")
        for r in range(rounds):
            av, bv = np.arange(n, dtype=np.int32) * (r + 1), np.full(n, r, np.int32)
            a.write(av)
            b.write(bv)
            q.dispatch(kernel, (n,), (64,), a, b, c, np.uint32(n)).submit()
            q.sync(timeout=120)
            if not (np.frombuffer(c.read(), np.int32) == av + bv).all():
                failures.append(f"add_int round {r}")
        q.destroy()

    def aql(gpu, kernel):
        q = gpu.aql_queue(name="aql thread")
        x, y = gpu.alloc(n * 4, "gtt", name="aql x"), gpu.alloc(n * 4, "gtt", name="aql y")
        xv, expect = np.linspace(0, 1, n, dtype=np.float32), np.zeros(n, np.float32)
        x.write(xv)
        y.write(expect)
        for r in range(rounds):
            q.dispatch(kernel, (n,), (64,), np.float32(r / 2), x, y, np.uint32(n))
            expect = np.float32(r / 2) * xv + expect
            if r % 3 == 2:
                q.sync(timeout=120)
        q.sync(timeout=120)
        if not np.allclose(np.frombuffer(y.read(), np.float32), expect):
            failures.append("saxpy")
        q.destroy()

    def guarded(fn, *args):
        try:
            fn(*args)
        except BaseException as exc:  # reported by the test's thread
            failures.append(repr(exc))

    with record(path), System.open(emulate=target) as system:
        gpu = system.devices[0]
        program = corpus(gpu)
        threads = [threading.Thread(target=guarded, args=(pm4, gpu, program.kernel("add_int"))),
                   threading.Thread(target=guarded, args=(aql, gpu, program.kernel("saxpy")))]
        for t in threads:
            t.start()
        copies = gpu.sdma_queue(name="copies")
        for r in range(rounds):
            src, dst = (gpu.alloc(4096 * (r % 3 + 1), "gtt", name=f"{x} {r}") for x in ("src", "dst"))
            data = bytes((r * 7 + i) & 0xFF for i in range(src.size))
            src.write(data)
            copies.copy(dst, src, src.size).sync(timeout=120)
            if dst.read() != data:
                failures.append(f"copy {r}")
            src.free()
            dst.free()
        for t in threads:
            t.join()
    assert not failures, failures


@pytest.fixture(scope="module")
def threaded_trace(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("threaded") / "threaded.kfdtrace")
    threaded(path, "gfx1100")
    return path


@pytest.mark.parametrize("family", FAMILIES)
def test_threads_dispatching_and_copying_at_once_replay_on_every_family(threaded_trace, family, tmp_path):
    """A workload not shaped for the replayer: its threads' allocations, namings, writes and submissions
    interleave as they ran; it replays and verifies in loops of two instances at once on every family."""
    report = replay_trace(threaded_trace, per_target(tmp_path), emulate=family, loops=2, concurrent=2)
    assert report.status == EXIT_OK, report.lines()
    assert all(r.verified >= 24 and r.submissions == report.submissions for loop in report.loops for r in loop)


@pytest.fixture(scope="module")
def overlap_example(tmp_path_factory):
    """examples/overlap.py recorded on two gfx942s: two compute queues, SDMA on two engines, peer copies."""
    path = str(tmp_path_factory.mktemp("overlap") / "overlap.kfdtrace")
    example = os.path.join(os.path.dirname(__file__), "..", "examples", "overlap.py")
    res = subprocess.run([sys.executable, "-m", "kfdtrace.capture.cli", "run", "--emulate", "gfx942,gfx942", "-o",
                          path, example, "--rounds", "4", "--n", "1024"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and "ok in" in res.stdout, res.stderr
    return path


def test_the_overlap_example_stresses_two_gpus_in_loops_and_moves_across_families(overlap_example, tmp_path):
    # each loop's one CPU wait covers every kernel of two instances on two emulated GPUs: about 7 s on an idle
    # 2-core machine, close to the 10 s default wait, so a loaded machine would read it as a hang
    report = replay_trace(overlap_example, Options(timeout=120), emulate_recorded=True, loops=2, concurrent=2)
    assert report.status == EXIT_OK, report.lines()
    for loop in report.to_dict()["loops"]:
        for instance in loop:
            assert instance["verified"] >= 4
            assert sorted(q["label"].split()[-1] for q in instance["occupancy"]["queues"]) == \
                ["(pm4)", "(pm4)", "(sdma)", "(sdma)", "(sdma)", "(sdma)"]
    options = per_target(tmp_path)
    options.timeout = 120
    report = replay_trace(overlap_example, options, emulate="gfx1100,gfx1201")
    assert report.status == EXIT_OK, report.lines()


@pytest.mark.parametrize("family", ["gfx942", "gfx1201"])
def test_a_pm4_trace_replays_on_aql_queues(corpus_traces, family, tmp_path):
    """--queue-type aql: every corpus kernel recorded on a PM4 queue runs from PM4-IB packets on an AQL queue,
    in order, and verifies."""
    options = per_target(tmp_path)
    options.queue_type = "aql"
    report = replay_trace(corpus_traces["gfx1100"], options, emulate=family)
    assert report.status == EXIT_OK, report.lines()
    assert report.loops[0][0].verified >= len(CASES)
    assert [q["label"] for q in report.to_dict()["loops"][0][0]["occupancy"]["queues"]] == ["queue 0 (pm4 on aql)"]


@pytest.mark.parametrize("family", ["gfx90a", "gfx1100"])
def test_an_aql_trace_replays_on_pm4_queues(corpus_traces, family, tmp_path):
    """--queue-type pm4: every corpus kernel recorded on gfx942's AQL queue (multi-XCC) runs as PM4 packets on a PM4
    queue, and verifies."""
    options = per_target(tmp_path)
    options.queue_type = "pm4"
    report = replay_trace(corpus_traces["gfx942"], options, emulate=family)
    assert report.status == EXIT_OK, report.lines()
    assert report.loops[0][0].verified >= len(CASES)


def test_the_overlap_example_replays_its_compute_on_aql_queues(overlap_example):
    report = replay_trace(overlap_example, Options(queue_type="aql", timeout=120), emulate_recorded=True, concurrent=2)
    assert report.status == EXIT_OK, report.lines()


@pytest.mark.parametrize("fields, why", [(dict(grid_size_x=0), "grid (0, 1, 1): each dimension must be a whole "
                                                                   "number of work-items"),
                                         (dict(dimensions=0), "a launch of 0 dimensions (1 to 3)")])
@pytest.mark.parametrize("queue_type", [None, "pm4"])
def test_a_launch_no_gpu_runs_is_refused_before_submission(traces, tmp_path, fields, why, queue_type):
    """Found by fuzzing --queue-type pm4: a KERNEL_DISPATCH of 0 work-items was an internal error (exit 5)."""
    out = str(tmp_path / "zero.kfdtrace")

    def edit(rec, r, w):
        if rec.type == R.CODE_OBJECT:
            w.blob(r.blob(rec.fields["key"]))
        if rec.type == R.DOORBELL and AQL.decode(rec.fields["ring"]).name == "KERNEL_DISPATCH":
            return {**rec.fields, "ring": AQL.decode(rec.fields["ring"]).replace(**fields).encode()}
        return rec.fields
    rewrite(traces["aql-gfx942"], out, edit)
    with pytest.raises(ReplayError, match=re.escape(f"submission 0 (queue 0): KERNEL_DISPATCH at byte 0x0: {why}")):
        replay_trace(out, Options(queue_type=queue_type), emulate_recorded=True)


def barriers(path: str, target: str, two_deps: bool = False) -> None:
    """Record two AQL queues ordered by barriers: `second` waits for the CPU's `go` (BARRIER_AND) and for `level`
    to reach 3 (BARRIER_VALUE), then c = a + b signals `added`; `first` waits for it (BARRIER_OR; with `two_deps`,
    for it or `done`), then d = c + b signals `done`, which the CPU waits for."""
    with record(path), System.open(emulate=target) as system:
        gpu = system.devices[0]
        kernel = corpus(gpu).kernel("vector_add")
        a, b, c, d = (gpu.alloc(N * 4, "gtt", name=name) for name in "abcd")
        a.write(np.arange(N, dtype=np.float32))
        b.write(np.full(N, 2, np.float32))
        go, level, added, done = (HsaSignal(system, v, name=n) for n, v in (("go", 1), ("level", 0), ("added", 1),
                                                                           ("done", 1)))
        first, second = gpu.aql_queue(name="first"), gpu.aql_queue(name="second")
        second.barrier_and([go])
        second.barrier_value(level, 3, SignalCondition.GTE, mask=(1 << 63) - 1)  # signed and unsigned agree
        second.dispatch(kernel, (N,), (64,), a, b, c, np.uint32(N), completion=added)
        first.barrier_or([added, done] if two_deps else [added])  # done is 1 until this queue is done
        first.dispatch(kernel, (N,), (64,), c, b, d, np.uint32(N), completion=done)
        level.signal(3)
        go.signal(0)
        done.wait(0, timeout=120)
        assert np.frombuffer(d.read(), np.float32)[N - 1] == N - 1 + 4


@pytest.mark.parametrize("family", FAMILIES)
def test_aql_queues_replay_on_pm4_queues(family, tmp_path, monkeypatch):
    """--queue-type pm4: dispatches and barriers of two AQL queues become PM4 packets on PM4 queues (waits on the
    64-bit signal values, completions decremented by ATOMIC_MEM with their events' interrupts), in order, and
    verify on every family."""
    path = str(tmp_path / "barriers.kfdtrace")
    barriers(path, "gfx942")
    converted = []
    monkeypatch.setattr(AqlOnPm4, "convert", lambda self, p, move, real=AqlOnPm4.convert: converted.append(
        p.name) or real(self, p, move))
    options = per_target(tmp_path)
    options.queue_type = "pm4"
    report = replay_trace(path, options, emulate=family)
    assert report.status == EXIT_OK, report.lines()
    assert sorted(converted) == ["BARRIER_AND", "BARRIER_OR", "BARRIER_VALUE"]
    assert report.loops[0][0].verified >= 1


def test_aql_queues_on_pm4_queues_in_loops_and_on_moved_buffers(tmp_path):
    """Each instance's completions reach its own signals and events: the mailbox and event id are read from the
    replay's copy of the signal (moved, for the second instance)."""
    path = str(tmp_path / "barriers.kfdtrace")
    barriers(path, "gfx942")
    report = replay_trace(path, Options(queue_type="pm4", timeout=120), emulate_recorded=True, loops=2, concurrent=2)
    assert report.status == EXIT_OK, report.lines()
    assert all(r.verified >= 1 for loop in report.loops for r in loop) and len(report.loops) == 2


def test_what_has_no_pm4_form_is_refused_before_submission(tmp_path):
    path = str(tmp_path / "or.kfdtrace")
    barriers(path, "gfx942", two_deps=True)
    res = subprocess.run([sys.executable, "-m", "kfdtrace.replay.cli", path, "--emulate-recorded", "--queue-type",
                          "pm4"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 3, res.stderr
    assert "--queue-type pm4 cannot replay BARRIER_OR with 2 dependency signals" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("fields, why", [
    (dict(cond=SignalCondition.LT, value=1 << 63), "BARRIER_VALUE LT on a value or mask with bit 63 set"),
    (dict(cond=SignalCondition.GTE, mask=1 << 63), "BARRIER_VALUE GTE on a value or mask with bit 63 set"),
    (dict(cond=7), "BARRIER_VALUE cond=7 is not a signal condition"),
    (dict(signal=0), "BARRIER_VALUE without a signal"),
])
def test_barrier_values_pm4_cannot_compare_are_refused(fields, why):
    p = AQL.packet("BARRIER_VALUE", **{"signal": 0x1000, "value": 3, "mask": (1 << 63) - 1,
                                       "cond": SignalCondition.EQ, **fields})
    assert AqlOnPm4.refusal(p).startswith(why)
    assert AqlOnPm4.refusal(AQL.packet("BARRIER_VALUE", signal=0x1000, value=3, mask=(1 << 63) - 1,
                                       cond=SignalCondition.GTE)) is None
    assert AqlOnPm4.refusal(AQL.packet("AGENT_DISPATCH")) == "AGENT_DISPATCH (no PM4 form; replay it on an AQL queue)"
    assert AqlOnPm4.refusal(AQL.packet("BARRIER_AND", release_fence_scope=3)) == \
        "BARRIER_AND release_fence_scope=3 (not a fence scope)"


def test_an_instruction_the_emulator_does_not_execute_is_cannot_replay_here_not_a_hang(traces, monkeypatch):
    """A kernel stopping on an instruction the emulated GPU does not execute is the emulator's limit, not a hang of
    the program's: the replay says what and where (exit 3), and no VM fault is reported for it."""
    from kfdtrace.driver.emulator.shader import alu

    monkeypatch.delitem(alu.VALU, "v_add_f32")
    with pytest.raises(TargetRefused, match=r"the emulated GPU does not do what the trace asks: gfx942: "
                                            r"v_add_f32\S* at PC 0x[0-9a-f]+ .*is not emulated"):
        replay_trace(traces["aql-gfx942"], Options(timeout=20), emulate_recorded=True)


class _At:
    """Kernel argument memory at `offset` of a buffer of role kernargs (a program's own kernarg buffer)."""

    def __init__(self, buffer, offset: int):
        self.buffer, self.va, self.offset = buffer, buffer.va + offset, offset

    def write(self, data: bytes) -> None:
        self.buffer.write(data, self.offset)

    def free(self) -> None:
        pass


def test_kernel_arguments_a_kernel_may_write_are_refused_not_replayed_stale(tmp_path):
    """A kernel given a pointer into a kernel argument buffer may write the arguments of a dispatch after it (found
    by helper 35): the replay, which derives them from the CPU's writes when it submits, refuses (exit 3) rather
    than run that dispatch with the arguments the CPU wrote, and diverge."""
    path = str(tmp_path / "k.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        program = corpus(gpu)
        add, copy = program.kernel("vector_add"), program.kernel("memcpy_uint4")
        kbuf = gpu.alloc(4096, "gtt", name="kbuf", role="kernargs")
        a, b, c, staging = (gpu.alloc(N * 4, "gtt", name=x) for x in ("a", "b", "c", "staging"))
        a.write(np.arange(N, dtype=np.float32))
        b.write(np.ones(N, np.float32))
        q = gpu.aql_queue(name="q")
        launch = Launch.of((N,), (64,))
        second, _ = q.launch(add, launch, pack(add.kernel.metadata, (a, b, b, np.uint32(N)), launch),
                             kernarg=lambda size, align: _At(kbuf, 1024))
        staging.write(struct.pack("<QQ", b.va, c.va))  # the second dispatch's b and c: it writes c, not b
        one = Launch.of((1,), (1,))
        first, _ = q.launch(copy, one, pack(copy.kernel.metadata, (staging, kbuf.va + 1024 + 8, np.uint32(1)), one),
                            kernarg=lambda size, align: _At(kbuf, 0))
        q.submit(first)
        q.submit(second)
        q.sync(timeout=120)
        assert (np.frombuffer(c.read(), np.float32) == np.arange(N, dtype=np.float32) + 1).all()
    with pytest.raises(ReplayError, match=r"its kernel arguments at 0x[0-9a-f]+ lie in buffer kbuf, which the kernel "
                                          r"of submission 0 .*\(memcpy_uint4\) takes a pointer to"):
        replay_trace(path, Options(), emulate_recorded=True)


def test_a_cpu_written_address_a_kernel_is_given_is_a_relocation_hazard_only_when_buffers_move(tmp_path):
    """Found by helper 35: a pointer table the CPU wrote, which a kernel chases, kept the recorded addresses when
    buffers moved (a VM fault and a HANG verdict, or an instance reading another's buffers)."""
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        memcpy = corpus(gpu).kernel("memcpy_uint4")
        data, table, out = (gpu.alloc(4096, "gtt", name=n) for n in ("data", "table", "out"))
        table.write(struct.pack("<QQ", data.va, data.va + 64))
        q = gpu.compute_queue(name="q")
        q.dispatch(memcpy, (1,), (1,), table, out, np.uint32(1))
        q.sync(timeout=120)
    report = replay_trace(path, Options(), emulate_recorded=True)
    # campaign 50: what a kernel writes through such an address goes unverified; an OK says so
    assert report.status == EXIT_OK and any(
        "what they write there is not verified (first: buffer table+0x0 holds GPU address" in n
        for n in report.results[0].notes), report.lines()
    with pytest.raises(ReplayError, match=r"relocation hazard: buffer table\+0x0 holds GPU address 0x[0-9a-f]+ "
                                          r"\(in buffer data\), written by the CPU write at record \d+, and "
                                          r"submission 0 .* gives memcpy_uint4 a pointer to it"):
        replay_trace(path, Options(relocate="always"), emulate_recorded=True)


GLOBALS = """
__global int table[64];
__kernel void bump(__global int *out) {
    int i = __builtin_amdgcn_workitem_id_x();
    table[i] += i + 1;
    out[i] = table[i];
}
"""


def test_a_kernel_changing_program_globals_replays_the_same_in_every_loop_and_instance(tmp_path):
    """Found by helper 44: the loops and instances of a replay shared one loaded code object, whose .bss a
    kernel changes: the second loop started from the first one's globals (DIVERGED on a faithful trace), and two
    instances raced on them."""
    src, obj, path = tmp_path / "g.cl", tmp_path / "g.co", str(tmp_path / "g.kfdtrace")
    src.write_text(GLOBALS)
    subprocess.run(["clang-19", "-x", "cl", "-cl-std=CL2.0", "-target", "amdgcn-amd-amdhsa", "-mcpu=gfx942",
                    "-nogpulib", "-O2", "-c", str(src), "-o", str(tmp_path / "g.o")], check=True, capture_output=True)
    subprocess.run(["ld.lld-19", "-shared", str(tmp_path / "g.o"), "-o", str(obj)], check=True, capture_output=True)
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        program = gpu.load(str(obj))
        assert program.code.writable
        out = gpu.alloc(256, "gtt", name="out")
        q = gpu.compute_queue(name="q")
        q.dispatch(program.kernel("bump"), (64,), (64,), out)
        q.sync(timeout=60)
        assert (np.frombuffer(out.read(), np.int32) == np.arange(64) + 1).all()
    for how in (Options(), Options(relocate="always")):
        report = replay_trace(path, how, emulate_recorded=True, loops=3, concurrent=2)
        assert report.status == EXIT_OK, report.lines()
        assert all(r.verified == 1 for r in report.results) and len(report.results) == 6


GLOBAL_POINTER = GLOBALS + """
__kernel void pointer(__global int *out, __global int *from) {
    int i = __builtin_amdgcn_workitem_id_x();
    out[i] = from[i];
}
"""


@pytest.mark.parametrize("how", ["copy from", "copy to", "cpu write", "kernel pointer"])
def test_an_address_in_a_code_objects_globals_is_refused_before_submitting(how, tmp_path):
    """Campaign 89: a copy from or into a program-scope global (hipMemcpyFromSymbol, ToSymbol) passed the survey
    and hung at a VM fault, a CPU write into one was not recorded (DIVERGED), and a kernel given a global's
    address was refused as pointing outside every buffer. A replay loads each object for its target elsewhere and
    follows no address into it: it says so, before submitting anything, and capture records such CPU writes."""
    src, obj, path = tmp_path / "g.cl", tmp_path / "g.co", str(tmp_path / "g.kfdtrace")
    src.write_text(GLOBAL_POINTER)
    subprocess.run(["clang-19", "-x", "cl", "-cl-std=CL2.0", "-target", "amdgcn-amd-amdhsa", "-mcpu=gfx942",
                    "-nogpulib", "-O2", "-c", str(src), "-o", str(tmp_path / "g.o")], check=True, capture_output=True)
    subprocess.run(["ld.lld-19", "-shared", str(tmp_path / "g.o"), "-o", str(obj)], check=True, capture_output=True)
    nm = subprocess.run(["llvm-nm-19", str(obj)], capture_output=True, text=True, check=True).stdout
    offset = next(int(line.split()[0], 16) for line in nm.splitlines() if line.endswith(" table"))
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        program = gpu.load(str(obj), name="globals")
        table = program.buffer.va + offset
        out, data = gpu.alloc(256, "gtt", name="out"), gpu.alloc(256, "gtt", name="data")
        q, s = gpu.compute_queue(name="q"), gpu.sdma_queue(name="s")
        if how == "copy from":
            s.copy(data, table, 256).sync(30)
        elif how == "copy to":
            s.copy(table, data, 256).sync(30)
        elif how == "cpu write":
            program.buffer.write(np.arange(64, dtype=np.int32).tobytes(), offset)
        else:
            q.dispatch(program.kernel("pointer"), (64,), (64,), out, table)
        q.dispatch(program.kernel("bump"), (64,), (64,), out)
        q.sync(timeout=60)
    with pytest.raises(ReplayError, match=r"0x[0-9a-f]+,? (which is|is|points) in the memory of the code object "
                                          r"'globals' loaded at 0x[0-9a-f]+ \(its global variables\)"):
        replay_trace(path, Options(), emulate_recorded=True)


def test_kernel_arguments_a_runtime_writes_into_a_buffer_of_its_own_are_followed(tmp_path):
    """Campaign 91: a runtime keeping kernel arguments in an ordinary buffer of its own (as ROCr and tinygrad do)
    was refused on every family, the recorded one too: only buffers of role kernargs were followed. Such a buffer
    is followed from the first dispatch whose arguments lie in it, its CPU writes so far read again; what the CPU
    wrote there is kernel arguments, relocated as such, not a table of addresses a kernel may chase."""
    from kfdtrace.driver.aql import dispatch_packet
    from kfdtrace.driver.kernargs import Launch, pack

    path, edited = str(tmp_path / "ring.kfdtrace"), str(tmp_path / "edited.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        kernel = gpu.load(BUILT / "corpus.hipfb").kernel("vector_add")
        a, b, c, d = (gpu.alloc(256, "gtt", name=name) for name in "abcd")
        a.write(np.arange(64, dtype=np.float32))
        b.write(np.ones(64, np.float32))
        ring = gpu.alloc(4096, "gtt", name="ring")  # a buffer of role user, as a runtime allocates one
        q = gpu.aql_queue(name="q")
        for slot, (x, y) in enumerate(((a, c), (c, d))):  # c = a + b, then d = c + b
            args = pack(kernel.kernel.metadata, [x, b, y, np.uint32(64)], Launch.of((64,), (64,)))
            ring.write(args.data, 512 * slot)
            q.submit(dispatch_packet(kernel.descriptor_address, (64,), (64,), ring.va + 512 * slot))
            q.sync(timeout=60)
        assert (np.frombuffer(d.read(), np.float32) == np.arange(64) + 2).all()
    for how in (Options(), Options(relocate="always")):
        for target in ("gfx942", "gfx1100"):
            report = replay_trace(path, how, emulate=target)
            assert report.status == EXIT_OK, (target, report.lines())
    with TraceReader(path) as r:
        ring_va = next(rec.fields["va"] for rec in r.records({"buffer"}) if rec.fields["name"] == "ring")

    def half(rec, reader, writer):  # the second dispatch's by-value n: 32 of d's 64 floats
        if rec.type == "mem" and rec.fields["va"] == ring_va + 512:
            data = bytearray(reader.blob(rec.fields["key"]))
            data[24:28] = (32).to_bytes(4, "little")
            return {**rec.fields, "key": writer.blob(bytes(data))}
        return rec.fields

    rewrite(path, edited, half)
    assert replay_trace(edited, Options(), emulate="gfx942").status == EXIT_DIVERGED


def test_a_kernel_reading_data_in_a_kernel_argument_buffer_is_no_writer_of_arguments(tmp_path):
    """Campaign 92: a kernel given a const pointer into the buffer a runtime keeps kernel arguments in was taken
    for one that may write them, and the dispatches after it were refused, on the recorded family too."""
    from kfdtrace.driver.aql import dispatch_packet
    from kfdtrace.driver.kernargs import Launch, pack

    path = str(tmp_path / "reads.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        kernel = gpu.load(BUILT / "corpus.hipfb").kernel("vector_add")
        b, c = gpu.alloc(256, "gtt", name="b"), gpu.alloc(256, "gtt", name="c")
        b.write(np.ones(64, np.float32))
        ring = gpu.alloc(4096, "gtt", name="ring")
        ring.write(np.arange(64, dtype=np.float32).tobytes(), 2048)  # data beside the arguments
        q = gpu.aql_queue(name="q")
        for slot in range(3):  # c = ring's data + b: vector_add's a is const float *
            args = pack(kernel.kernel.metadata, [ring.va + 2048, b, c, np.uint32(64)], Launch.of((64,), (64,)))
            ring.write(args.data, 512 * slot)
            q.submit(dispatch_packet(kernel.descriptor_address, (64,), (64,), ring.va + 512 * slot))
            q.sync(timeout=60)
        assert (np.frombuffer(c.read(), np.float32) == np.arange(64) + 1).all()
    report = replay_trace(path, Options(), emulate_recorded=True)
    assert report.status == EXIT_OK, report.lines()


def test_the_timestamps_a_profiling_queue_writes_into_a_completion_signal_are_clocks(tmp_path):
    """Campaign 92: a profiling AQL queue's completion signal, kept in a buffer of the program's own, got the GPU
    clock in start_ts/end_ts (53f5a8a), and its checkpoint compared them: every replay said DIVERGED. A completion
    signal's timestamps are masked as a clock packet's are."""
    from kfdtrace.driver.aql import QueueProperties, dispatch_packet
    from kfdtrace.driver.kernargs import Launch, pack

    path = str(tmp_path / "profiled.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        kernel = gpu.load(BUILT / "corpus.hipfb").kernel("vector_add")
        a, b, c = (gpu.alloc(256, "gtt", name=name) for name in "abc")
        q = gpu.aql_queue(name="q")
        q.amd_queue.queue_properties |= QueueProperties.ENABLE_PROFILING
        args = gpu.alloc(4096, "gtt", name="args", role="kernargs")
        args.write(pack(kernel.kernel.metadata, [a, b, c, np.uint32(64)], Launch.of((64,), (64,))).data)
        signals = gpu.alloc(4096, "gtt", name="signals")
        words = signals.numpy().view(np.int64)
        words[0:8] = [1, 1, 0, 0, 0, 0, 0, 0]  # amd_signal_t: kind USER, value 1
        q.submit(dispatch_packet(kernel.descriptor_address, (64,), (64,), args.va, completion_signal=signals.va))
        q.sync(timeout=60)
        assert words[1] == 0 and 0 < words[4] <= words[5]
    for how in (Options(), Options(relocate="always"), Options(queue_type="pm4")):
        report = replay_trace(path, how, emulate_recorded=True)
        assert report.status == EXIT_OK, report.lines()


@pytest.mark.parametrize("how", ["indirect buffer", "bookkeeping"])
def test_addresses_the_cpu_keeps_for_itself_or_in_an_indirect_buffer_are_no_hazard(how, tmp_path):
    """Found by helper 44: every CPU-written address was taken for a table a copy may carry to a kernel, so a
    command buffer built in memory (whose addresses the replay relocates) or the CPU's own bookkeeping in GPU
    memory refused any replay with buffers moved. A table counts only once a packet reads it as data."""
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        add = corpus(gpu).kernel("add_int")
        a, b, c, flag, ib = (gpu.alloc(4096, "gtt", name=n) for n in ("a", "b", "c", "flag", "ib"))
        a.write(np.arange(64, dtype=np.int32))
        q = gpu.compute_queue(name="q")
        if how == "indirect buffer":
            builder = gpu.compute_queue(name="builder")
            builder.write_data(b, np.full(64, 2, np.int32).tobytes())
            builder.copy_data(flag, b, size=4)
            body = b"".join(builder.discard())
            ib.write(body)
            q.indirect(ib, len(body))
        else:
            b.write(np.full(64, 2, np.int32))
            flag.write(struct.pack("<QQ", a.va, c.va))  # where the CPU keeps its buffers: no packet reads it
        q.dispatch(add, (64,), (64,), a, b, c, np.uint32(64))
        q.sync(timeout=60)
        assert (np.frombuffer(c.read(0, 256), np.int32) == np.arange(64) + 2).all()
    report = replay_trace(path, Options(relocate="always"), emulate_recorded=True)
    assert report.status == EXIT_OK and report.results[0].relocated > 0, report.lines()


TAGGED = """
__kernel void untag(ulong tagged, __global uint *out) {
    __global const uint *p = (__global const uint *)(tagged & 0x00FFFFFFFFFFFFFFul);
    uint i = __builtin_amdgcn_workitem_id_x();
    out[i] = p[i] + 1;
}
"""


def test_a_fault_at_a_moved_buffers_recorded_address_is_a_relocation_hazard(tmp_path):
    """Found by helper 44: an address the survey cannot tell for one (tagged in its top bits here; split in
    halves, kept by an offset) reached the GPU as recorded when buffers moved, and the VM fault was a HANG."""
    src, obj, path = tmp_path / "t.cl", tmp_path / "t.co", str(tmp_path / "t.kfdtrace")
    src.write_text(TAGGED)
    subprocess.run(["clang-19", "-x", "cl", "-target", "amdgcn-amd-amdhsa", "-mcpu=gfx942", "-nogpulib", "-O2", "-c",
                    str(src), "-o", str(tmp_path / "t.o")], check=True, capture_output=True)
    subprocess.run(["ld.lld-19", "-shared", str(tmp_path / "t.o"), "-o", str(obj)], check=True, capture_output=True)
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        data, out = gpu.alloc(256, "gtt", name="data"), gpu.alloc(256, "gtt", name="out")
        data.write(np.arange(64, dtype=np.uint32))
        q = gpu.compute_queue(name="q")
        q.dispatch(gpu.load(str(obj)).kernel("untag"), (64,), (64,), np.uint64(data.va | 0xA5 << 56), out)
        q.sync(timeout=60)
        assert (np.frombuffer(out.read(), np.uint32) == np.arange(64) + 1).all()
    assert replay_trace(path, Options(), emulate_recorded=True).status == EXIT_OK
    # in a process of its own: this one may have mapped something at the recorded address again
    done = subprocess.run([sys.executable, "-m", "kfdtrace.replay.cli", path, "--emulate-recorded", "--relocate",
                           "always"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stdout + done.stderr
    assert re.search(r"the GPU faulted at 0x[0-9a-f]+, the recorded address of buffer data\+0x0, which lies at "
                     r"0x[0-9a-f]+ in this replay: .* \(a relocation hazard\)", done.stderr), done.stderr


def test_addresses_a_kernel_wrote_that_a_copy_carries_to_a_checkpoint_are_a_relocation_hazard(tmp_path):
    """Found by helper 44: only the buffers a kernel was given were looked into, so its addresses, copied by SDMA
    into a buffer the CPU then read, gave DIVERGED on a faithful replay with buffers moved."""
    path = str(tmp_path / "copied.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        add = corpus(gpu).kernel("add_int")
        data, a, b, zero, table, seen = (gpu.alloc(4096, "gtt", name=n)
                                         for n in ("data", "a", "b", "zero", "table", "seen"))
        a.write(np.array([data.va & 0xFFFFFFFF, (data.va >> 32) + 1], np.uint32))
        b.write(np.array([0, -1], np.int32))
        q, sdma = gpu.compute_queue(name="q"), gpu.sdma_queue(name="s")
        made, copied = system.semaphore("made"), system.semaphore("copied")
        q.dispatch(add, (2,), (2,), a, b, table, np.uint32(2)).signal(made, 1).submit()
        sdma.wait(made, 1).copy(seen, table, 16).signal(copied, 1).submit()
        # the table is written over before the CPU looks: only the copy holds the addresses then
        q.wait(copied, 1).dispatch(add, (2,), (2,), zero, zero, table, np.uint32(2)).submit()
        q.sync(timeout=60)
        assert struct.unpack_from("<Q", seen.read(0, 8))[0] == data.va
    assert replay_trace(path, Options(), emulate_recorded=True).status == EXIT_OK
    with pytest.raises(ReplayError, match=r"relocation hazard: the checkpoint at record \d+ finds GPU address "
                                          r"0x[0-9a-f]+ \(in buffer data\) in buffer seen\+0x0, which .*\(add_int\), "
                                          r"copied by the COPY_LINEAR packet of submission"):
        replay_trace(path, Options(relocate="always"), emulate_recorded=True)


def test_an_indirect_buffer_a_kernel_writes_before_it_runs_is_refused_saying_so(tmp_path):
    """Found by helper 44: a kernel copying a command buffer into place in the submission that calls it was
    refused as 'unknown packet type=0x0': the replay translates the IB before the kernel has written it. The
    kernel's pointer to it counts as a write before the call (campaign 122), as a copy's destination does: so
    stale packets the CPU had left there are refused too, not translated."""
    path = str(tmp_path / "built.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        memcpy = corpus(gpu).kernel("memcpy_uint4")
        b, staging, ib = (gpu.alloc(4096, "gtt", name=n) for n in ("b", "staging", "ib"))
        builder = gpu.compute_queue(name="builder")
        builder.write_data(b, np.full(4, 7, np.uint32).tobytes())
        packets = b"".join(builder.discard())
        body = packets + bytes(-len(packets) % 16)  # whole uint4s to copy
        staging.write(body)
        q, copied = gpu.compute_queue(name="q"), system.semaphore("copied")
        q.dispatch(memcpy, (len(body) // 16,), (len(body) // 16,), staging, ib, np.uint32(len(body) // 16))
        q.signal(copied, 1).wait(copied, 1)  # the kernel done, in the queue: no CPU wait between
        q.indirect(ib, len(packets))
        q.sync(timeout=60)
        assert (np.frombuffer(b.read(0, 16), np.uint32) == 7).all()
    with pytest.raises(ReplayError, match=r"indirect buffer 0x[0-9a-f]+\+0x28 lies in ib, which the GPU writes "
                                          r"before it runs .* a replay cannot translate packets the GPU builds"):
        replay_trace(path, Options(), emulate_recorded=True)


def test_a_pointer_table_written_after_the_dispatch_that_waits_for_it_is_a_relocation_hazard(tmp_path):
    """Found by helper 44: a kernel submitted behind a barrier, its table written by the CPU after the dispatch's
    record, was seen by no later dispatch: HANG with buffers moved, and an OK by luck with two instances (the
    second read the first's buffers)."""
    path = str(tmp_path / "late.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        memcpy = corpus(gpu).kernel("memcpy_uint4")
        data, table, out = (gpu.alloc(4096, "gtt", name=n) for n in ("data", "table", "out"))
        go = HsaSignal(system, 1, name="go")
        q = gpu.aql_queue(name="q")
        q.barrier_and([go])
        q.dispatch(memcpy, (1,), (1,), table, out, np.uint32(1))
        table.write(struct.pack("<QQ", data.va, data.va + 64))
        go.signal(0)
        q.sync(timeout=60)
    assert replay_trace(path, Options(), emulate_recorded=True).status == EXIT_OK
    with pytest.raises(ReplayError, match=r"relocation hazard: buffer table\+0x0 holds GPU address 0x[0-9a-f]+ "
                                          r"\(in buffer data\), written by the CPU write at record \d+, after the "
                                          r"dispatches that may read it were submitted"):
        replay_trace(path, Options(), emulate_recorded=True, concurrent=2)


DISPATCH_ASKED = r"""
kernel void k(global uint *out, local uint *dyn) {
    constant uint *p = (constant uint *)__builtin_amdgcn_dispatch_ptr();
    uint i = __builtin_amdgcn_workitem_id_x();
    dyn[i] = i;
    if (i == 0) { out[0] = p[0] >> 16; out[1] = p[7]; }  /* setup's dimensions, group_segment_size */
#ifdef V5
    if (i == 0) out[2] = ((constant uint *)__builtin_amdgcn_implicitarg_ptr())[30];  /* hidden_dynamic_lds_size */
#endif
    out[3 + i] = dyn[63 - i];
}
"""


@pytest.mark.parametrize("version", [4, 5])
def test_a_pm4_dispatch_s_dimensions_and_lds_bytes_replay_as_asked_not_as_the_registers_round_them(version,
                                                                                                   tmp_path):
    """Campaign 63: a PM4 dispatch of (64, 1) with 260 bytes of dynamic LDS replayed as 1-D (a v4 kernel has no
    hidden_grid_dims) with 512 bytes (RSRC2's LDS_SIZE is in granules): a kernel reading its dispatch packet or
    hidden_dynamic_lds_size saw other values, a false DIVERGED. The replay takes them from the dispatch packet the
    kernel's dispatch_ptr names, else from the hidden arguments, on every family."""
    from kfdtrace.driver.kernargs import Local

    codes = {}
    for target in ("gfx942", "gfx1100"):
        (tmp_path / "k.cl").write_text(DISPATCH_ASKED)
        subprocess.run(["clang-19", "-x", "cl", "-cl-std=CL2.0", "-target", "amdgcn-amd-amdhsa", f"-mcpu={target}",
                        f"-mcode-object-version={version}", *(["-DV5"] if version == 5 else []), "-nogpulib", "-O2",
                        "-c", str(tmp_path / "k.cl"), "-o", str(tmp_path / "k.o")], check=True)
        codes[target] = str(tmp_path / f"k.{target}.co")
        subprocess.run(["ld.lld-19", "-shared", str(tmp_path / "k.o"), "-o", codes[target]], check=True)
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        out = gpu.alloc(4096, "gtt", name="out")
        q = gpu.compute_queue(name="pm4")
        q.dispatch(gpu.load(codes["gfx942"]).kernel("k"), (64, 1), (64, 1), out, Local(260)).sync(timeout=60)
        got = np.frombuffer(out.read(0, 4 * 67), np.uint32)
    assert got[:2].tolist() == [2, 260] and got[2] == (260 if version == 5 else 0)
    assert got[3:].tolist() == list(range(63, -1, -1))
    for family in ("gfx942", "gfx1100"):
        options = Options(code_objects=parse_code_object_options([], str(tmp_path)))
        assert replay_trace(path, options, emulate=family).status == EXIT_OK, family


def test_an_aql_slot_still_invalid_at_its_doorbell_is_refused_before_submitting(tmp_path):
    """Campaign 96: a recorded AQL packet whose header is INVALID (the program wrote it after ringing) reached the
    driver's queue, whose check made an internal error (exit 5) after the packets before it had run."""
    src, path = str(tmp_path / "aql.kfdtrace"), str(tmp_path / "invalid.kfdtrace")
    vector_add(src, "gfx942", aql=True)
    edited = []

    def edit(rec, r, w):
        if rec.type != "doorbell" or not rec.fields["ring"] or edited:
            return rec.fields
        edited.append(rec.n)
        return {**rec.fields, "ring": bytes([1]) + rec.fields["ring"][1:]}  # header type 1: INVALID
    rewrite(src, path, edit)
    assert edited
    for queue_type in (None, "pm4"):
        with pytest.raises(ReplayError, match=r"submission 0 \(queue \d+\): the AQL packet at byte 0x0 is INVALID "
                                              r"\(a slot no packet was assigned to\) as its doorbell rang"):
            replay_trace(path, Options(timeout=5, queue_type=queue_type), emulate="gfx942")


END_POINTER = r"""
kernel void rev(global int *end, global const int *in, int n) {   /* end[-1 - i] = in[i] + 100 */
  int i = __builtin_amdgcn_workgroup_id_x() * 64 + __builtin_amdgcn_workitem_id_x();
  if (i < n) end[-1 - i] = in[i] + 100;
}"""


def test_a_pointer_argument_just_past_its_buffer_points_into_that_buffer(tmp_path):
    """Campaign 106: C's end pointer (a buffer of whole pages + its size) as a kernel's pointer argument lay in no
    buffer: capture took the kernel to write nothing (its results, read through a view, became a CPU write) and a
    replay refused it even where it was recorded; moved, it points just past the buffer's new place."""
    from tests.test_shader import built

    path, n = str(tmp_path / "end.kfdtrace"), 1024
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        rev = gpu.load(built(tmp_path, END_POINTER, "gfx942")).kernel("rev")
        inp, out = gpu.alloc(n * 4, "gtt", name="in"), gpu.alloc(n * 4, "gtt", name="out")
        view = out.numpy()
        inp.write(np.arange(n, dtype=np.int32))
        q = gpu.aql_queue()
        q.dispatch(rev, (n,), (64,), out.va + n * 4, inp, np.int32(n))
        q.sync(timeout=60)
        assert (np.frombuffer(view, np.int32) == np.arange(n)[::-1] + 100).all()
    result = (np.arange(n, dtype=np.int32)[::-1] + 100).tobytes()
    with TraceReader(path) as r:
        assert any(b["name"] == "out" for c in r.records(["checkpoint"]) for b in c.fields["buffers"])
        assert not any(r.blob(m.fields["key"]) == result for m in r.records(["mem"]))  # the GPU's, not the CPU's
    for relocate in ("auto", "always"):
        report = replay_trace(path, Options(relocate=relocate), emulate="gfx942")
        assert report.status == EXIT_OK and report.results[0].verified >= 1, report.lines()


def test_producers_ringing_an_aql_doorbell_out_of_order_are_recorded_as_the_processor_takes_packets(tmp_path,
                                                                                                   monkeypatch):
    """Campaign 114: two threads put packets on one AQL queue; the one with the later index rings first, while
    the earlier slot is still INVALID. Capture took each doorbell's value for a write pointer: it recorded the
    INVALID slot with the first, noted the second as moving backwards, and the replay refused the trace. A
    doorbell now records the packets the processor takes (up to the highest index rung, while assigned)."""
    from kfdtrace.driver.aql_queue import AqlQueue

    path, gate = str(tmp_path / "t.kfdtrace"), threading.Event()
    wait_for_slot = AqlQueue._wait_for_slot

    def held(self, index, timeout):  # the first producer, between taking its index and writing its packet
        if threading.current_thread().name == "first":
            assert gate.wait(10)
        wait_for_slot(self, index, timeout)

    monkeypatch.setattr(AqlQueue, "_wait_for_slot", held)
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        q = gpu.aql_queue(name="aq")
        first, second = HsaSignal(system, 1, "first"), HsaSignal(system, 1, "second")
        index = q.amd_queue.write_dispatch_id
        producer = threading.Thread(target=lambda: q.barrier_and(completion=first), name="first")
        producer.start()
        while q.amd_queue.write_dispatch_id == index:
            time.sleep(0.001)
        q.barrier_and(completion=second)  # index + 1, rung while slot `index` is INVALID
        gate.set()
        producer.join()
        assert first.wait(0, timeout=10) == 0 and second.wait(0, timeout=10) == 0
    with TraceReader(path) as r:
        rung = [(d.fields["value"] - index, len(d.fields["ring"]) // 64) for d in r.records({R.DOORBELL})]
    assert rung == [(1, 0), (0, 2)], rung
    for target in ("gfx942", "gfx1100"):
        report = replay_trace(path, Options(timeout=5), emulate=target)
        assert report.status == EXIT_OK, report.lines()


def test_a_fault_in_no_buffer_after_buffers_moved_is_refused_not_called_a_hang(tmp_path):
    """Campaign 114: a kernel given `a` writes into `b` by an offset it is given by value (b - a). Moved apart,
    the replay's kernel faulted in no buffer and the replay said HANG, which the recording never did; a fault in
    no buffer once buffers moved is refused now, saying to replay in place."""
    from tests.test_shader import built

    code = built(tmp_path, "kernel void at_offset(global uint *p, long off) { p[off + "
                           "__builtin_amdgcn_workitem_id_x()] = 7; }", "gfx942")
    path = str(tmp_path / "o.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        a, b = gpu.alloc(4096, "gtt", name="a"), gpu.alloc(4096, "gtt", name="b")
        q = gpu.compute_queue(name="q")
        q.dispatch(gpu.load(code).kernel("at_offset"), (64,), (64,), a, np.int64((b.va - a.va) // 4)).sync(timeout=30)
        assert b.read(0, 4) == b"\7\0\0\0"
    from tests.test_replay import replay

    done = replay(path, "--emulate-recorded", "--relocate", "always", "--timeout", "5")  # (a process of its own,
    # where nothing else is mapped by the offset from the moved `a`)
    assert done.returncode == EXIT_UNSUPPORTED and re.search(
        r"the GPU faulted at 0x[0-9a-f]+, in no buffer, where the recording's did not: this replay moved \d+ "
        r"buffer\(s\)", done.stderr), done.stdout + done.stderr


@pytest.mark.parametrize("target, aql", [("gfx1100", False), ("gfx942", True)])
def test_a_divergence_in_what_a_kernel_wrote_names_the_dispatch(target, aql, tmp_path):
    """Campaign 122: a buffer a kernel wrote diverged with no writer named, though the README promises the packet
    that wrote it: the dispatch that launched the kernel is that packet. (a's CPU write altered: c = a + b
    differs; the second run of the kernel is the last that may have written c.)"""
    from tests.test_compute_capture import N, vector_add
    from tests.test_replay import rewrite

    path, changed = str(tmp_path / "c.kfdtrace"), str(tmp_path / "changed.kfdtrace")
    vas = vector_add(path, target, aql)

    def edit(rec, reader, writer):
        if rec.type == "mem" and rec.fields["va"] == vas["a"]:
            return {**rec.fields, "key": writer.blob(np.full(N, 7, np.float32).tobytes())}
        return rec.fields
    rewrite(path, changed, edit)
    report = replay_trace(changed, Options(timeout=30), emulate_recorded=True)
    (result,) = report.results
    assert result.divergence is not None and result.divergence.buffer == "c", report.lines()
    packet = "KERNEL_DISPATCH" if aql else "DISPATCH_DIRECT"
    assert re.search(rf"it appeared after submission \d+ .*packet \d+: {packet} ", result.divergence.describe()), \
        result.divergence.describe()
