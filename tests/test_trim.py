"""`kfdtrace trim` (issue 12): a range of submissions as a standalone trace that replays and verifies, or a
refusal that says what the range needs that the trace does not hold."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from kfdtrace.capture import record
from kfdtrace.cli import main as kfdtrace_cli
from kfdtrace.driver import System
from kfdtrace.driver import kfd_ioctl as K
from kfdtrace.replay.engine import EXIT_OK, Options
from kfdtrace.replay.session import replay_trace
from kfdtrace.replay.translate import ReplayError
from kfdtrace.traces.format import TraceReader
from kfdtrace.traces.records import HEADER, SUMMARY, check_map, checked
from kfdtrace.traces.trim import TrimRefused, trim

from .test_replay import FAMILIES, gpu_count, replay, rewrite, sample
from .test_replay_hangs import LEFT_WITH_WORK

SAMPLES = ["sdma_stress-gfx942", "peer_ring-2xgfx942", "ping_pong-gfx1100"]


def ranges(n: int) -> list[tuple[int, int]]:
    """Every start, each with a range of one, two and three submissions and one to the end."""
    return sorted({(a, b) for a in range(n) for b in (a, a + 1, a + 2, n - 1) if b < n})


@pytest.mark.parametrize("name", SAMPLES)
def test_every_range_of_the_samples_replays_and_verifies_or_is_refused(name, tmp_path):
    path, out = sample(name), str(tmp_path / "t.kfdtrace")
    with TraceReader(path) as r:
        n = r.submissions
    made = 0
    for a, b in ranges(n):
        with TraceReader(path) as r:
            try:
                report = trim(r, out, a, b)
            except TrimRefused as exc:
                assert any(x in str(exc) for x in ("trim from", "would hang", "start it earlier")), str(exc)
                assert not os.path.exists(out)
                continue
        made += 1
        assert report.submissions == b - a + 1
        with TraceReader(out) as t:
            assert t.submissions == b - a + 1 and not t.recovered
            check_map("header", dict(t.header), HEADER), check_map("summary", t.summary, SUMMARY)
            assert sum(1 for _ in checked(t.records(), strict=True)) == t.record_count
        result = replay_trace(out, Options(timeout=5), emulate_recorded=True)
        assert result.status == EXIT_OK, (a, b, result.lines())
        os.unlink(out)
    assert made >= 1, f"no range of {name} could be trimmed"


@pytest.mark.parametrize("family", FAMILIES)
def test_a_trimmed_range_replays_on_every_family(family, tmp_path):
    out = str(tmp_path / "t.kfdtrace")
    with TraceReader(sample("sdma_stress-gfx942")) as r:
        trim(r, out, 20, r.submissions - 1)
    report = replay_trace(out, Options(), emulate=",".join([family] * gpu_count(out)))
    assert report.status == EXIT_OK, report.lines()
    assert report.results[0].verified > 0  # the range holds checkpoints, and they match


def test_a_range_reading_memory_the_gpu_wrote_before_it_is_refused(tmp_path):
    with TraceReader(sample("sdma_stress-gfx942")) as r, pytest.raises(TrimRefused) as e:
        trim(r, str(tmp_path / "t.kfdtrace"), 1, 1)  # the consumer copies the stage the producer just filled
    assert "reads stage1" in str(e.value) and "submission 0 on queue 0 (producer) wrote it" in str(e.value)
    assert "or give --reconstruct to replay up to the range's start" in str(e.value)


def test_a_range_whose_wait_is_signalled_only_after_it_is_refused(tmp_path):
    with TraceReader(sample("peer_ring-2xgfx942")) as r, pytest.raises(TrimRefused) as e:
        trim(r, str(tmp_path / "t.kfdtrace"), 0, 0)
    assert "would hang" in str(e.value) and "semaphores+0x" in str(e.value)


def test_a_range_whose_only_signal_of_a_value_waits_behind_a_value_from_after_it_is_refused(tmp_path):
    """Campaign 60: queue A waits for hop >= 2, which only queue B signals, after its own wait for hop >= 1,
    which only a submission after the range gives: trim took B's signal as coming, and the range hung."""
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        qa, qb, qc = gpu.sdma_queue(name="A"), gpu.sdma_queue(name="B"), gpu.sdma_queue(name="C")
        hop = system.semaphore("hop")
        qa.wait(hop, 2).submit()
        qb.wait(hop, 1).signal(hop, 2).submit()
        qc.signal(hop, 1).submit()
        hop.wait(2)
    with TraceReader(path) as r, pytest.raises(TrimRefused, match=r"submission 0 \(POLL_REGMEM at \+0x[0-9a-f]+ "
                                                                  r"on .*\) waits for 0x[0-9a-f]+ to reach 0x2, "
                                                                  r"which nothing signals in the range"):
        trim(r, str(tmp_path / "out.kfdtrace"), 0, 1)
    with TraceReader(path) as r:
        trim(r, str(tmp_path / "out.kfdtrace"), 0, 2)
    assert replay_trace(str(tmp_path / "out.kfdtrace"), Options(), emulate="gfx942").status == EXIT_OK


def test_a_reconstructed_range_waiting_on_a_producer_that_writes_on_after_its_signal_is_refused(tmp_path):
    """Campaign 60: a range waiting for a value a submission before it signalled lap by lap, rewriting what the
    range copies after each signal: reconstructed as if that submission had completed at the range's start, the
    range copied its last lap's bytes, not the first's, and the trimmed trace said DIVERGED."""
    from kfdtrace.replay.session import contents_at

    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        data, out = gpu.alloc(4096, "vram", cpu_access=False, name="data"), gpu.alloc(4096, "gtt", name="out")
        producer, consumer, s = gpu.sdma_queue(name="P"), gpu.sdma_queue(name="C"), system.semaphore("s")
        producer.fill(data, 1, 4096).signal(s, 1).fill(data, 2, 4096).signal(s, 2).submit()
        consumer.wait(s, 1).copy(out, data, 4096).submit()
        s.wait(2)
        consumer.sync()
    with TraceReader(path) as r, pytest.raises(TrimRefused, match="signals and then writes more"):
        trim(r, str(tmp_path / "out.kfdtrace"), 1, 1, lambda vas: contents_at(path, 1, vas))


def test_a_queue_destroyed_standing_at_a_wait_as_recorded_does_not_make_its_range_hang(tmp_path):
    """Campaign 62: a queue waits on a semaphore nothing signals and is destroyed so, as the replay allows; trim
    refused every range holding it. Its id, given again to the next queue, names another queue: that queue's wait
    for what nothing in the range signals is still refused."""
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        never, s, late = system.semaphore("never"), system.semaphore("s"), system.semaphore("late")
        a, b = gpu.alloc(4096, "gtt", name="a"), gpu.alloc(4096, "gtt", name="b")
        doomed = gpu.sdma_queue(name="doomed")
        doomed.wait(never, 1).fill(a, 0x11111111, 4096).submit()
        doomed.destroy()
        q = gpu.sdma_queue(name="q")
        b.write(b"x" * 4096)
        q.wait(late, 1).copy(a, b, 4096).signal(s, 1).submit()
        gpu.sdma_queue(name="late").signal(late, 1).submit()
        s.wait(1)
    with TraceReader(path) as r:
        queues = [rec.fields["queue"] for rec in r.records(["queue"])]
    assert queues[0] == queues[1]  # the id is given again
    with TraceReader(path) as r:
        trim(r, str(tmp_path / "out.kfdtrace"), 0, 2)
    assert replay_trace(str(tmp_path / "out.kfdtrace"), Options(), emulate="gfx942").status == EXIT_OK
    with TraceReader(path) as r, pytest.raises(TrimRefused, match=r"submission 1 .* which nothing signals"):
        trim(r, str(tmp_path / "out.kfdtrace"), 0, 1)


def test_a_range_to_the_end_keeps_the_queues_the_recording_left_with_work(tmp_path):
    """Campaign 104: a queue alive at the recording's end standing at a wait nothing signals (the summary's
    `undrained`): trim refused every range holding that wait, and one it took lost `undrained` (its replay: HANG)."""
    script = tmp_path / "left.py"
    script.write_text(LEFT_WITH_WORK)
    path, out = str(tmp_path / "left.kfdtrace"), str(tmp_path / "out.kfdtrace")
    done = subprocess.run([sys.executable, "-m", "kfdtrace.capture.cli", "run", "-o", path, str(script), "0"],
                          env={**os.environ, "KFDTRACE_EMULATE": "gfx942"}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for first in (0, 1):
        with TraceReader(path) as r:
            assert r.summary["undrained"] == [0] and r.summary["submissions"] == 2
            trim(r, out, first, 1)
        with TraceReader(out) as r:
            assert r.summary["undrained"] == [0]
        report = replay_trace(out, Options(timeout=2), emulate="gfx942")
        assert report.status == EXIT_OK and "at the recording's end" in report.lines()[-1], report.lines()


def test_a_semaphore_signalled_behind_a_wait_the_range_releases_is_not_restored(tmp_path):
    """Campaign 104: queue A waits for sem2 then signals sem1 (submission 0), C waits for sem1 then fills `out`
    (1), B fills `out` then signals sem2 (2): B's fill comes first. Trimmed from 1, sem1 was restored as 1 though
    A still stood at its wait then: C no longer waited, its fill came first (DIVERGED). The range needs submission
    0: refused; from 0 it replays."""
    path, out = str(tmp_path / "chain.kfdtrace"), str(tmp_path / "out.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        qa, qb, qc = gpu.sdma_queue(name="A"), gpu.sdma_queue(name="B"), gpu.sdma_queue(name="C")
        buf = gpu.alloc(4096, "gtt", name="out")
        sem1, sem2, sem3 = system.semaphore("sem1"), system.semaphore("sem2"), system.semaphore("sem3")
        qa.wait(sem2, 1).signal(sem1, 1).submit()
        qc.wait(sem1, 1).fill(buf, 0xCCCCCCCC, 256).signal(sem3, 1).submit()
        qb.fill(buf, 0xBBBBBBBB, 256).signal(sem2, 1).submit()
        sem3.wait(1, 10)
        assert buf.read(0, 4) == bytes([0xCC]) * 4
    with TraceReader(path) as r, pytest.raises(TrimRefused, match=r"submission 1 .* which nothing signals"):
        trim(r, out, 1, 2)
    with TraceReader(path) as r:
        trim(r, out, 0, 2)
    assert replay_trace(out, Options(), emulate="gfx942").status == EXIT_OK


def test_contents_restored_from_a_checkpoint_let_a_later_range_read_gpu_written_memory(tmp_path):
    """The GPU fills `a`; a checkpoint records it; the range copies `a` on: `a`'s contents come from the
    checkpoint, and the range's own checkpoint verifies them."""
    path, out = str(tmp_path / "w.kfdtrace"), str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        q = gpu.sdma_queue(name="q")
        a, b = gpu.alloc(8192, "gtt", name="a"), gpu.alloc(8192, "gtt", name="b")
        q.fill(a, 0x5A5A5A5A, 8192).sync()
        assert a.read()[:4] == b"\x5a" * 4  # a CPU read of what the GPU wrote: a checkpoint of `a`
        q.copy(b, a, 8192).sync()
        b.read()
    with TraceReader(path) as r:
        report = trim(r, out, 1, r.submissions - 1)
    assert report.restored_chunks > 0
    result = replay_trace(out, Options(), emulate="gfx90a")
    assert result.status == EXIT_OK and result.results[0].verified > 0, result.lines()


def test_the_cli_trims_and_refuses_in_one_line(tmp_path):
    out = str(tmp_path / "t.kfdtrace")
    res = CliRunner().invoke(kfdtrace_cli, ["trim", sample("sdma_stress-gfx942"), "-s", "4..9", "-o", out])
    assert res.exit_code == 0 and "6 submissions" in res.output, res.output
    res = CliRunner().invoke(kfdtrace_cli, ["trim", sample("sdma_stress-gfx942"), "-s", "4..", "-o", out])
    assert res.exit_code == 0 and "28 submissions" in res.output, res.output  # to the end
    for args, text in ((["-s", "1..1"], "contents at the range's start are unknown"),
                       (["-s", "40..41"], "the trace has submissions 0..31"),
                       (["-s", "4..99999"], "submissions 4..99999: the trace has submissions 0..31"),  # campaign 69
                       (["-s", "x"], "submission range"),
                       (["-s", "4..9", "--emulate", "gfx1100"], "say how --reconstruct replays")):
        res = CliRunner().invoke(kfdtrace_cli, ["trim", sample("sdma_stress-gfx942"), *args, "-o", out])
        assert res.exit_code == 1 and text in res.output and len(res.output.splitlines()) == 1, res.output


def test_trim_refuses_to_overwrite_its_source(tmp_path):
    src = tmp_path / "s.kfdtrace"
    src.write_bytes(open(sample("sdma_stress-gfx942"), "rb").read())
    res = CliRunner().invoke(kfdtrace_cli, ["trim", str(src), "-s", "4..9", "-o", str(src)])
    assert res.exit_code == 1 and "another file" in res.output
    with TraceReader(str(src)) as r:
        assert r.submissions == 32


def test_the_report_as_json(tmp_path):
    import json

    res = CliRunner().invoke(kfdtrace_cli, ["trim", sample("sdma_stress-gfx942"), "-s", "4..9", "-o",
                                            str(tmp_path / "t.kfdtrace"), "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["submissions"] == 6


@pytest.mark.parametrize("name", SAMPLES)
def test_with_reconstruct_every_range_that_would_not_hang_replays_and_verifies(name, tmp_path):
    """--reconstruct: what the trace does not hold at A comes from replaying it up to A."""
    from kfdtrace.replay.session import contents_at

    path, out = sample(name), str(tmp_path / "t.kfdtrace")
    with TraceReader(path) as r:
        n = r.submissions
    made = restored = 0
    for a in range(n):
        b = min(a + 1, n - 1)
        with TraceReader(path) as r:
            try:
                report = trim(r, out, a, b, lambda vas, a=a: contents_at(path, a, vas))
            except (TrimRefused, ReplayError) as exc:
                # unknown contents are reconstructed, not refused: what is left is a range that needs work outside it,
                # or a range starting while a queue stands still in a submission before it
                assert any(x in str(exc) for x in ("would hang", "still running", "stands still")), str(exc)
                continue
        made += 1
        restored += report.restored_chunks
        result = replay_trace(out, Options(timeout=5), emulate=",".join(["gfx1100"] * gpu_count(out)))
        assert result.status == EXIT_OK, (a, b, result.lines())
    assert made >= n // 2 and (restored > 0 or n == 1)  # a one-submission trace has nothing before to restore


def test_an_aql_signal_a_queue_stored_to_starts_a_reconstructed_range_at_that_value(tmp_path):
    """SDMA signals an HSA signal as a timeline semaphore (1), and the range starts at the BARRIER_VALUE waiting
    for it: the trimmed trace restored the signal as the replay left it, then set it to the CPU's 0 again, and
    its replay hung there (campaign 39)."""
    from kfdtrace.driver.aql import SignalCondition
    from kfdtrace.driver.aql_queue import HsaSignal
    from kfdtrace.driver.kernels.device import corpus
    from kfdtrace.replay.session import contents_at

    n, path, out = 64, str(tmp_path / "bv.kfdtrace"), str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        q, sdma = gpu.aql_queue(), gpu.sdma_queue()
        staged, done = HsaSignal(system, 0, "staged"), HsaSignal(system, 1, "done")
        a, b, c = (gpu.alloc(n * 4, "gtt", name=x) for x in "abc")
        a.write(np.arange(n, dtype=np.float32))
        b.write(np.ones(n, dtype=np.float32))
        sdma.signal(staged.semaphore(), 1).submit()
        q.barrier_value(staged, 1, SignalCondition.GTE)
        q.dispatch(corpus(gpu).kernel("vector_add"), n, 64, a, b, c, np.uint32(n), completion=done)
        done.wait(0, timeout=60)
    with TraceReader(path) as r:
        trim(r, out, 1, 2, lambda vas: contents_at(path, 1, vas))
    with TraceReader(out) as r:
        assert [s.fields["value"] for s in r.records({"cpu_signal"}) if s.fields["name"] == "staged"] == [1]
    assert replay_trace(out, Options(timeout=5), emulate="gfx942").status == EXIT_OK


def test_reconstructed_vram_the_cpu_could_not_see_becomes_public(tmp_path):
    out = str(tmp_path / "t.kfdtrace")
    res = CliRunner().invoke(kfdtrace_cli, ["trim", sample("sdma_stress-gfx942"), "-s", "1..1", "-o", out,
                                            "--reconstruct"])
    assert res.exit_code == 0, res.output
    with TraceReader(out) as r:
        names = {b.fields["va"]: b.fields["name"] for b in r.records(["buffer"])}
        allocs = {names[a.fields["va"]]: a.fields["flags"] for a in r.records(["alloc"])}
        written = {names.get(m.fields["va"] & ~0xFFF) for m in r.records(["mem"])}
    assert allocs["stage1"] & K.AllocMemFlags.PUBLIC and "stage1" in written  # what the consumer copies
    assert not allocs["stage0"] & K.AllocMemFlags.PUBLIC  # never written before the range: left as it was


@pytest.mark.parametrize("target, aql, elsewhere", [("gfx942", True, "gfx1100"), ("gfx1100", False, "gfx90a")])
def test_every_range_of_a_compute_trace_replays_here_and_on_another_family_or_is_refused(target, aql, elsewhere,
                                                                                         tmp_path):
    """Kernels in trimmed traces: the code objects live at the start come along, an AQL signal starts at the
    value its CPU store and the completions before left, and a buffer a dispatch wrote before the range (its
    non-const pointer arguments) is unknown there until a checkpoint."""
    from kfdtrace.driver.kernels.build import BUILT
    from kfdtrace.replay.code_objects import parse_code_object_options

    from .test_compute_capture import vector_add

    path, out = str(tmp_path / "c.kfdtrace"), str(tmp_path / "t.kfdtrace")
    vector_add(path, target, aql)
    with TraceReader(path) as r:
        n = r.submissions
    made, refused = 0, 0
    for a, b in ranges(n):
        with TraceReader(path) as r:
            try:
                trim(r, out, a, b)
            except TrimRefused as exc:
                assert "trim from" in str(exc) and "wrote it" in str(exc), str(exc)
                refused += 1
                continue
        made += 1
        assert replay_trace(out, Options(timeout=10), emulate_recorded=True).status == EXIT_OK, (a, b)
        options = Options(timeout=10, code_objects=parse_code_object_options([], str(BUILT)))
        assert replay_trace(out, options, emulate=elsewhere).status == EXIT_OK, (a, b)
        os.unlink(out)
    # AQL: the barrier of a sync alone checkpoints what the dispatch before it wrote, which is unknown there
    assert made >= 3 and refused >= aql


def test_a_range_whose_dispatch_has_its_kernel_arguments_in_a_buffer_made_in_the_range_replays(tmp_path):
    """The overlap shape: a copy is submitted before the compute queue's first dispatch makes its kernel argument
    buffer, so a range from the copy on follows the CPU's writes into a buffer the range itself makes."""
    from .test_compute_replay import overlap

    path, out = str(tmp_path / "o.kfdtrace"), str(tmp_path / "t.kfdtrace")
    overlap(path, "gfx1100")
    with TraceReader(path) as r:
        last = r.submissions - 1
        trim(r, out, 0, last)
    report = replay_trace(out, Options(timeout=30), emulate_recorded=True)
    assert report.status == EXIT_OK and report.results[0].submissions == last + 1, report.lines()


POINTER_STORES = r"""
__kernel void through_table(__global const ulong *table, uint base) {
  uint i = __builtin_amdgcn_workitem_id_x();
  ((__global uint *)table[0])[i] = base + i;
}
__kernel void through_value(ulong addr, uint base) {
  uint i = __builtin_amdgcn_workitem_id_x();
  ((__global uint *)addr)[i] = base + i;
}
__kernel void table_of(__global ulong *table, __global const uint *to) {
  table[0] = (ulong)to;
}
__kernel void affine(__global uint *dst, __global const uint *src) {
  uint i = __builtin_amdgcn_workitem_id_x();
  dst[i] = src[i] * 2 + 1;
}"""


@pytest.mark.parametrize("how", ["table", "value", "gpu table"])
def test_a_range_reading_what_a_kernel_wrote_through_an_address_it_was_not_given_as_a_pointer_is_refused(tmp_path,
                                                                                                        how):
    """Campaign 122: a kernel wrote Z through the address it read from a table (or got as a plain ulong), and the
    next reads Z: trim took Z as the CPU last wrote it, and the trimmed range replayed DIVERGED. Such a write
    counts as capture counts it now, so the range is refused, and reconstructed it replays. A table a kernel
    wrote (its contents unknown to the trace) may point anywhere: the buffers a later checkpoint hashes count."""
    from .test_shader import built

    code, path, out = built(tmp_path, POINTER_STORES, "gfx942"), str(tmp_path / "p.kfdtrace"), str(tmp_path / "t.kt")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        program = gpu.load(code)
        z, y, table = (gpu.alloc(256, "gtt", name=name) for name in ("Z", "Y", "T"))
        z.write(np.full(64, 0xAAAA, np.uint32).tobytes())
        table.write(np.array([z.va if how == "table" else 0], np.uint64).tobytes())
        q = gpu.compute_queue(name="q")
        if how == "gpu table":  # Z given as a const pointer: not a buffer that dispatch writes
            q.dispatch(program.kernel("table_of"), (1,), (1,), table, z).submit()
        store = (program.kernel("through_value"), np.uint64(z.va)) if how == "value" else \
            (program.kernel("through_table"), table)
        q.dispatch(store[0], (64,), (64,), store[1], np.uint32(500)).submit()
        q.dispatch(program.kernel("affine"), (64,), (64,), y, z).submit()
        q.sync(timeout=60)
        assert np.frombuffer(y.read(), np.uint32).tolist() == [(500 + i) * 2 + 1 for i in range(64)]
    first = 2 if how == "gpu table" else 1
    unknown = rf"reads Z at 0x[0-9a-f]+, whose contents at the range's start are unknown \(submission {first - 1}"
    with TraceReader(path) as r, pytest.raises(TrimRefused, match=unknown):
        trim(r, out, first, r.submissions - 1)
    res = CliRunner().invoke(kfdtrace_cli, ["trim", path, "-s", f"{first}..", "-o", out, "--reconstruct"])
    assert res.exit_code == 0, res.output
    report = replay_trace(out, Options(timeout=30), emulate_recorded=True)
    assert report.status == EXIT_OK and report.results[0].checkpoints, report.lines()


def gated_pipeline(path: str, rounds: int = 2) -> None:
    """Two AQL queues: the producer waits at a BARRIER_VALUE for a gate the CPU opens only after both queues'
    submissions of the round are made, then adds a and b into c (decrementing `done_a`); the consumer's
    BARRIER_AND waits for `done_a`, then adds c and d into e."""
    from kfdtrace.driver.aql import SignalCondition
    from kfdtrace.driver.aql_queue import HsaSignal
    from kfdtrace.driver.kernels.device import corpus

    n = 256
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        kernel = corpus(gpu).kernel("vector_add")
        producer, consumer = gpu.aql_queue(name="producer"), gpu.aql_queue(name="consumer")
        a, b, c, d, e = (gpu.alloc(n * 4, "gtt", name=x) for x in "abcde")
        gate, done_a, done_b = (HsaSignal(system, v, name) for v, name in ((0, "gate"), (1, "done_a"), (1, "done_b")))
        d.write(np.full(n, 0.25, np.float32))
        for r in range(1, rounds + 1):
            a.write(np.arange(n, dtype=np.float32) * r)
            b.write(np.full(n, float(r), np.float32))
            done_a.signal(1)
            done_b.signal(1)
            producer.barrier_value(gate, r, SignalCondition.GTE)
            producer.dispatch(kernel, (n,), (64,), a, b, c, np.uint32(n), completion=done_a)
            consumer.barrier_and([done_a])
            consumer.dispatch(kernel, (n,), (64,), c, d, e, np.uint32(n), completion=done_b)
            gate.signal(r)
            done_b.wait(0, timeout=60)
            assert np.frombuffer(e.read(), np.float32)[3] == 3 * r + r + 0.25
        for q in (producer, consumer):
            q.sync(timeout=60)
            q.destroy()


def test_reconstruct_refuses_a_range_starting_while_a_queue_stands_still_in_a_submission_before_it(tmp_path):
    """Trimmed from the consumer's BARRIER_AND on, the range would lack the producer's dispatch held behind the
    gate, and its AQL signal would read as completed: the consumer would add what c held before that dispatch and
    the replay of a correct program would diverge. Reconstruction says which submission to start at instead."""
    path, out = str(tmp_path / "g.kfdtrace"), str(tmp_path / "t.kfdtrace")
    gated_pipeline(path)
    with TraceReader(path) as r:
        last = r.submissions - 1

    def trimmed(first: int) -> subprocess.CompletedProcess:
        """`kfdtrace trim --reconstruct` in a process of its own, as a user runs it: the replay finds the recorded
        addresses free there (in this process another allocation may hold one, and moving its buffer is refused)."""
        return subprocess.run([sys.executable, "-m", "kfdtrace", "trim", path, "-s", f"{first}..{last}", "-o", out,
                               "--reconstruct"], capture_output=True, text=True, timeout=300)

    for first in (2, 6):  # each round's BARRIER_AND: the producer stands still at the round's BARRIER_VALUE
        res = trimmed(first)
        assert res.returncode == 1 and res.stderr.count("\n") == 1, res.stderr
        assert f"stands still in submission {first - 2}, " in res.stderr, res.stderr
        assert f"start it at submission {first - 2} or earlier" in res.stderr, res.stderr
        assert not os.path.exists(out)
    for first in (0, 4):  # where it says to start: the range holds the gate's wait, and replays
        res = trimmed(first)
        assert res.returncode == 0, res.stderr
        res = subprocess.run([sys.executable, "-m", "kfdtrace.replay.cli", out, "--emulate-recorded", "--timeout",
                              "30"], capture_output=True, text=True, timeout=300)
        assert res.returncode == EXIT_OK, res.stdout + res.stderr
        os.unlink(out)


def test_reconstruct_on_another_family_takes_its_code_objects_and_says_which_it_lacks(tmp_path):
    from kfdtrace.driver.kernels.build import BUILT

    path, out = str(tmp_path / "g.kfdtrace"), str(tmp_path / "t.kfdtrace")
    gated_pipeline(path, rounds=1)
    args = ["trim", path, "-s", "4..5", "-o", out, "--reconstruct", "--emulate", "gfx1100"]
    res = CliRunner().invoke(kfdtrace_cli, args)
    assert res.exit_code == 1 and res.output.count("\n") == 1, res.output
    assert "no code object for gfx1100: kernel vector_add" in res.output and not os.path.exists(out)
    res = CliRunner().invoke(kfdtrace_cli, [*args, "--code-objects", str(BUILT)])
    assert res.exit_code == 0, res.output
    assert replay_trace(out, Options(timeout=30), emulate_recorded=True).status == EXIT_OK


def test_reconstruct_waits_for_a_kernel_still_running_where_the_range_starts(tmp_path):
    """An emulated kernel runs for tenths of a second with its queue's read pointer unmoved: reconstruction must
    not take that for a queue waiting on what later records signal. It read the kernel's output before it was
    written and the semaphore signalled after it as not yet signalled, so this range was refused as one that
    would hang (and one the range's own waits did not catch would have copied what VRAM held before)."""
    from kfdtrace.driver.kernels.device import corpus
    from kfdtrace.replay.session import contents_at

    path, out, n = str(tmp_path / "k.kfdtrace"), str(tmp_path / "t.kfdtrace"), 256
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        kernel = corpus(gpu).kernel("mode_scratch")  # a private array in scratch: slow to emulate
        values, modes = gpu.alloc(n * 64, "gtt", name="values"), gpu.alloc(n * 4, "vram", name="modes")
        result = gpu.alloc(n * 4, "gtt", name="result")
        values.write(np.tile(np.arange(64, dtype=np.uint8) // 3 + 1, n))  # each row's mode: 1
        ready, copied = system.semaphore("ready"), system.semaphore("copied")
        compute, sdma = gpu.compute_queue(name="compute"), gpu.sdma_queue(name="sdma")
        compute.dispatch(kernel, (n,), (64,), values, modes, np.uint32(n))
        compute.signal(ready, 1).submit()
        sdma.wait(ready, 1).copy(result, modes, n * 4).signal(copied, 1).submit()
        copied.wait(1, timeout=60)
        assert (np.frombuffer(result.read(), np.uint32) == 1).all()
    with TraceReader(path) as r:
        trim(r, out, 1, 1, lambda vas: contents_at(path, 1, vas))
    report = replay_trace(out, Options(timeout=30), emulate_recorded=True)
    assert report.status == EXIT_OK, report.lines()


def slot_reuse(path: str, wait: bool) -> None:
    """Four rounds, each with a semaphore made anew in the slot the last one freed (the pool resets it to 0): a
    copy signals it, and the CPU waits for it (`wait`) before freeing it, or frees it at once."""
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        src, dst, out = (gpu.alloc(4096, "gtt", name=name) for name in ("src", "dst", "out"))
        q, other = gpu.sdma_queue(name="q"), gpu.sdma_queue(name="other")
        for r in range(4):
            done = system.semaphore("done")
            src.write(bytes([r + 1]) * 4096)
            q.copy(dst, src, 4096).signal(done, 1).submit()
            other.copy(out, src, 4096).submit()  # the range's start: the reset of the next round falls in it
            if wait:
                done.wait(1)
                assert dst.read(0, 1) == bytes([r + 1])
            done.free()
        q.sync()
        other.sync()


def test_a_range_where_the_cpu_resets_a_reused_semaphore_slot_replays(tmp_path):
    """The CPU sets the new semaphore to 0 below what the last round signalled: that is a reset, not a sign
    that the last round's copy was still running, when a CPU wait showed its signal landed."""
    path, out = str(tmp_path / "s.kfdtrace"), str(tmp_path / "t.kfdtrace")
    slot_reuse(path, wait=True)
    from kfdtrace.replay.session import contents_at

    with TraceReader(path) as r:
        n = r.submissions
    for first in range(1, n):  # from the odd ones on, the CPU's wait in the range shows the signal landed
        with TraceReader(path) as r:  # reconstructed: a range from `other`'s copy on checkpoints what `q` wrote
            trim(r, out, first, n - 1, lambda vas, first=first: contents_at(path, first, vas))
        report = replay_trace(out, Options(timeout=10), emulate_recorded=True)
        assert report.status == EXIT_OK and report.results[0].submissions == n - first, report.lines()
        os.unlink(out)


def test_a_reset_of_a_semaphore_whose_last_signaller_may_still_run_is_refused(tmp_path):
    """The same, but nothing waited for the copy before its semaphore was freed and made again: whether its
    signal lands before or after that reset the trace cannot tell, nor the range without it."""
    path, out = str(tmp_path / "s.kfdtrace"), str(tmp_path / "t.kfdtrace")
    slot_reuse(path, wait=False)
    for first in (1, 3, 5):  # each round's copy on `other`: the semaphore of `q`'s copy before is made again
        with TraceReader(path) as r, pytest.raises(TrimRefused, match="were still running when the range starts"):
            trim(r, out, first, r.submissions - 1)


def test_a_cpu_store_below_a_gpu_signal_still_to_land_is_no_reset(tmp_path):
    """Campaign 111: each round the CPU sets a semaphore, a queue waits for the CPU's next store and then signals
    one more; every other round starts below the last (a reset). The CPU's store of 11, below the 12 the queue
    signals after it, was taken for a reset: the signals before it were forgotten, the wait for 12 showed nothing
    complete, and trim refused every later range as if submissions were still running at its start."""
    path, out = str(tmp_path / "s.kfdtrace"), str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        q = gpu.sdma_queue()
        src, dst = gpu.alloc(4096, "gtt", name="src"), gpu.alloc(4096, "gtt", name="dst")
        s = system.semaphore("s")
        for r in range(6):
            src.write(bytes([r + 1]) * 64)
            base = 10 if r % 2 == 0 else 1
            s.signal(base)
            q.wait(s, base + 1).copy(dst, src, 64, dst_offset=64 * r).signal(s, base + 2).submit()
            s.signal(base + 1)
            s.wait(base + 2)
    for first, last in ((2, 2), (2, 5), (4, 5), (5, 5)):
        with TraceReader(path) as r:
            trim(r, out, first, last)
        report = replay_trace(out, Options(timeout=10), emulate_recorded=True)
        assert report.status == EXIT_OK and report.results[0].submissions == last - first + 1, report.lines()
        os.unlink(out)


def vram_round_trip(path: str, fill: int, size: int = 64 << 10) -> None:
    """Submission 0 copies src into vram (never checkpointed: the CPU cannot see it); submission 1 fills `fill`
    bytes of vram from its start, then copies all of vram back."""
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        src, back = gpu.alloc(size, "gtt", name="src"), gpu.alloc(size, "gtt", name="back")
        vram = gpu.alloc(size, "vram", cpu_access=False, name="vram")
        src.write(bytes(range(256)) * (size // 256))
        qa, qb, a, b = gpu.sdma_queue(name="in"), gpu.sdma_queue(name="out"), system.semaphore("a"), \
            system.semaphore("b")
        qa.copy(vram, src, size).signal(a, 1).submit()
        qb.wait(a, 1).fill(vram, 0xA5A5A5A5, fill).copy(back, vram, size).signal(b, 1).submit()
        b.wait(1, timeout=60)


@pytest.mark.parametrize("fill", [4096, 64 << 10], ids=["part", "all"])
def test_a_range_that_writes_part_of_unknown_memory_still_cannot_read_the_rest(fill, tmp_path):
    """A write in the range makes known only the bytes its byte count covers: a 4 KiB fill of vram left the rest
    of it unknown (trim used to take the whole buffer as written, and the trimmed trace diverged); a fill of
    all of it makes the copy after it trimmable."""
    path, out = str(tmp_path / "v.kfdtrace"), str(tmp_path / "t.kfdtrace")
    vram_round_trip(path, fill)
    with TraceReader(path) as r:
        if fill < 64 << 10:
            with pytest.raises(TrimRefused, match=r"submission 1 \(COPY_LINEAR\) reads vram .* unknown"):
                trim(r, out, 1, 1)
            return
        trim(r, out, 1, 1)
    report = replay_trace(out, Options(timeout=10), emulate_recorded=True)
    assert report.status == EXIT_OK and report.results[0].verified >= 1, report.lines()


def test_a_range_waiting_on_an_event_nothing_in_it_sets_is_refused(tmp_path):
    path, out = str(tmp_path / "e.kfdtrace"), str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        b = gpu.alloc(4096, "gtt", name="b")
        q1, q2 = gpu.sdma_queue(name="q1"), gpu.sdma_queue(name="q2")
        ev, s = system.event(auto_reset=False), system.semaphore("s")
        q1.trap(ev.id).submit()  # submission 0 sets the event
        q2.fill(b, 0x22222222, 4096).signal(s, 1).submit()
        ev.wait(timeout=5)
        s.wait(1)
    with TraceReader(path) as r:
        with pytest.raises(TrimRefused, match=r"on event \d+ saw it set, and nothing in the range sets it"):
            trim(r, out, 1, 1)
        trim(r, out, 0, 1)
    report = replay_trace(out, Options(timeout=10), emulate_recorded=True)
    assert report.status == EXIT_OK, report.lines()


def test_a_trimmed_trace_s_summary_counts_its_frames(tmp_path):
    """The writer's figures in the summary are taken once every frame but the index is written: a small trim
    said '0 frames, compression 0.0x', and 'workload exit status None'."""
    from kfdtrace.traces.info import describe

    out = str(tmp_path / "t.kfdtrace")
    with TraceReader(sample("sdma_stress-gfx942")) as r:
        trim(r, out, 0, 1)
    with TraceReader(out) as t:
        s = t.summary
        assert s["trace_frames"] == sum(1 for f in t.frames) and s["trace_raw_bytes"] > s["trace_compressed_bytes"] > 0
    text = "\n".join(describe(out))
    assert " 0 frames" not in text and "exit status None" not in text


def realloc(path: str, rounds: int = 5) -> None:
    """An AQL queue adds a new buffer into `acc` each round, then the CPU syncs; the round's buffers and the sync's
    signal are freed, so later buffers take their addresses."""
    from kfdtrace.driver.kernels.device import corpus

    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        kernel = corpus(gpu).kernel("add_int")
        q = gpu.aql_queue(name="re")
        acc = gpu.alloc(4096 * 4, "gtt", name="acc")
        acc.write(np.zeros(4096, np.int32))
        for r in range(rounds):
            n = 1024 * (1 + r % 3)
            x = gpu.alloc(n * 4, "gtt", name=f"x{r}")
            y = gpu.alloc(n * 4, "vram" if r % 2 else "gtt", name=f"y{r}")
            x.write(np.arange(n, dtype=np.int32) * (r + 1))
            y.fill(0)
            q.dispatch(kernel, (n,), (64,), x, acc, acc, np.uint32(n))
            q.sync()
            x.free()
            y.free()


def test_a_freed_signal_s_value_is_not_restored_into_the_buffer_that_took_its_address(tmp_path):
    """The sync signal of a round is freed and the next round's input takes its address: the range's start must
    restore the input's contents, not the dead signal's value over them."""
    path = str(tmp_path / "re.kfdtrace")
    realloc(path)
    with TraceReader(path) as r:
        n = r.submissions
    replayed = 0
    for first in range(1, n):
        out = str(tmp_path / f"t{first}.kfdtrace")
        try:
            trim(TraceReader(path), out, first, min(first + 1, n - 1))
        except TrimRefused:
            continue
        report = replay_trace(out, Options(timeout=120), emulate="gfx942")
        assert report.status == EXIT_OK, (first, report.lines())
        replayed += 1
    assert replayed >= 3


def test_reconstructed_contents_are_the_buffer_s_own_bytes_not_its_pages(tmp_path):
    """A 1 KiB buffer the GPU writes between syncs: --reconstruct restores 1 KiB of it (the allocation is a page),
    which dump --buffers then takes as the buffer's contents."""
    from kfdtrace.driver.kernels.device import corpus

    path = str(tmp_path / "k.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        kernel = corpus(gpu).kernel("add_int")
        one = gpu.alloc(1024, "gtt", name="one")
        one.write(np.ones(256, np.int32))
        q = gpu.compute_queue(name="q")
        for _ in range(4):
            q.dispatch(kernel, (256,), (64,), one, one, one, np.uint32(256)).submit()
        q.sync()
    out = str(tmp_path / "t.kfdtrace")
    res = CliRunner().invoke(kfdtrace_cli, ["trim", path, "-s", "2..3", "-o", out, "--reconstruct"])
    assert res.exit_code == 0, res.output
    with TraceReader(out) as r:
        va = next(rec.fields["va"] for rec in r.records({"buffer"}) if rec.fields["name"] == "one")
        sizes = [rec.fields["size"] for rec in r.records({"mem"}) if rec.fields["va"] == va]
    assert sizes == [1024]
    assert CliRunner().invoke(kfdtrace_cli, ["dump", out, "--buffers", str(tmp_path / "b")]).exit_code == 0
    assert replay_trace(out, Options(timeout=120), emulate="gfx942").status == EXIT_OK


def test_a_timed_out_wait_whose_signal_a_queue_held_up_before_the_range_is_refused(tmp_path):
    """The queue stands still in submission 2 on a semaphore only the CPU signals later; the CPU's sync times out,
    then it signals. A range after the stall holds the sync's signal but not what held it up: refused, as the
    range's submission of that queue would run without waiting (campaign 114: trimmed, it did)."""
    from kfdtrace.driver.errors import WaitTimeout

    path = str(tmp_path / "h.kfdtrace")
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        buf = gpu.alloc(4096, "gtt", name="buf")
        q, never, done = gpu.sdma_queue(name="h"), system.semaphore("never"), system.semaphore("done")
        for i in range(5):
            if i == 2:
                q.wait(never, 1)
            q.fill(buf, i, 4096).submit()
        q.signal(done, 1).submit()
        with pytest.raises(WaitTimeout):
            done.wait(1, timeout=0.5)
        never.signal(1)
        done.wait(1)
    with pytest.raises(TrimRefused, match=r"^submission 5 comes behind a wait of its queue in submission 2, which "
                                          r"nothing before the range is known to pass: trimmed, it would run without "
                                          r"waiting; start the range at submission 2 or earlier$"):
        trim(TraceReader(path), str(tmp_path / "t.kfdtrace"), 5, 5)


def test_signals_inside_indirect_buffers_count_for_the_ranges_waits(tmp_path):
    """helper 34's w04/w05: a semaphore signalled from an indirect buffer (SDMA INDIRECT, and a PM4 IB calling
    another) made trim refuse even the whole trace: 'nothing signals it in the range'."""
    path = str(tmp_path / "ib.kfdtrace")
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        out, ib, inner, outer = (gpu.alloc(4096, "gtt", name=n) for n in ("out", "ib", "inner", "outer"))
        sem, pm4sem = system.semaphore("sem"), system.semaphore("pm4sem")
        q, cq = gpu.sdma_queue(name="q"), gpu.compute_queue(name="cq")
        for r in range(1, 4):
            body = b"".join(q.fill(out, r, 4096).signal(sem, r).discard())
            body += q.dialect.build("NOP") * ((-len(body) // 4) % 8)
            ib.write(body)
            q.packet("INDIRECT", ib_base=ib.va, ib_size=len(body) // 4).submit()
            sem.wait(r)
        nested = b"".join(cq.write_data(out, b"\x77" * 8, offset=64).signal(pm4sem, 1).discard())
        inner.write(nested)
        calling = b"".join(cq.indirect(inner, len(nested)).discard())
        outer.write(calling)
        cq.indirect(outer, len(calling)).submit()
        pm4sem.wait(1)
    with TraceReader(path) as r:
        n = r.submissions
    for last in (0, 1, n - 1):
        out_path = str(tmp_path / f"t{last}.kfdtrace")
        with TraceReader(path) as r:
            trim(r, out_path, 0, last)
        report = replay_trace(out_path, Options(), emulate="gfx942")
        assert report.status == EXIT_OK, (last, report.lines())
    with TraceReader(path) as r, pytest.raises(TrimRefused, match="calls an indirect buffer before the range"):
        trim(r, str(tmp_path / "late.kfdtrace"), 1, 2)  # what an IB before wrote is not followed (yet)


def test_a_write_a_cond_exe_may_skip_makes_nothing_known(tmp_path):
    """A CONST_FILL under a COND_EXE that skips it (found by helper 36): the copy after it reads what X held at the
    range's start, which the trace does not know (VRAM the CPU cannot see): refused, where it used to be taken
    as written by the fill, and the trimmed trace diverged."""
    path, out = str(tmp_path / "w.kfdtrace"), str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        x = gpu.alloc(4096, "vram", name="X", cpu_access=False)
        z, flag = gpu.alloc(4096, "gtt", name="Z"), gpu.alloc(4096, "gtt", name="flag")
        flag.write(bytes(4))
        q, done = gpu.sdma_queue(), system.semaphore("done")
        q.fill(x, 0xAAAAAAAA, 4096).signal(done, 1).submit()
        done.wait(1)
        fill = q.dialect.build("CONST_FILL", dst=x.va, data=0xCCCCCCCC, count=4095, fillsize=2)
        q.emit(q.dialect.build("COND_EXE", addr=flag.va, reference=1, exec_count=len(fill) // 4) + fill)
        q.copy(z, x, 4096).signal(done, 2).submit()
        done.wait(2)
        assert z.read()[:4] == b"\xaa" * 4
    with TraceReader(path) as r, pytest.raises(TrimRefused, match=r"reads X at .* unknown"):
        trim(r, out, 1, 1)


@pytest.mark.parametrize("order", ["none", "gpu", "cpu"])
def test_another_queue_s_write_counts_for_a_read_only_once_a_wait_orders_them(order, tmp_path):
    """Queue b fills X after waiting for a semaphore queue a signals after reading X: recorded before a's read,
    b's fill runs after it, so the range does not know what a read (found by helper 36). Where a waits for what
    b signalled after its fill (a GPU wait), or the CPU did before submitting a's read, the fill counts, and the
    trimmed range replays."""
    path, out = str(tmp_path / "w.kfdtrace"), str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        x = gpu.alloc(4096, "vram", name="X", cpu_access=False)
        y = gpu.alloc(4096, "gtt", name="Y")
        qa, qb = gpu.sdma_queue(name="qa"), gpu.sdma_queue(name="qb")
        d0, s, d1 = system.semaphore("d0"), system.semaphore("s"), system.semaphore("d1")
        qa.fill(x, 0xAAAAAAAA, 4096).signal(d0, 1).submit()
        d0.wait(1)
        if order == "none":  # b waits for s, which a signals after its copy
            qb.wait(s, 1).fill(x, 0xBBBBBBBB, 4096).signal(d1, 1).submit()
            qa.copy(y, x, 4096).signal(s, 1).submit()
        else:  # b fills, then signals s; a waits for s on the GPU, or the CPU waits before submitting a's copy
            qb.wait(d0, 1).fill(x, 0xBBBBBBBB, 4096).signal(s, 1).submit()
            if order == "cpu":
                s.wait(1)
            (qa.wait(s, 1) if order == "gpu" else qa).copy(y, x, 4096).signal(d1, 1).submit()
        d1.wait(1)
        assert y.read()[:4] == (b"\xaa" if order == "none" else b"\xbb") * 4
    with TraceReader(path) as r:
        if order == "none":
            with pytest.raises(TrimRefused, match=r"reads X at .* unknown"):
                trim(r, out, 1, 2)
            return
        trim(r, out, 1, 2)
    report = replay_trace(out, Options(timeout=20), emulate_recorded=True)
    assert report.status == EXIT_OK and report.results[0].verified > 0, report.lines()


def test_a_range_holding_a_store_to_a_doorbell_of_no_known_queue_is_trimmed(tmp_path):
    """Found by helper 41: such a record (queue None) in the range made trim fail with a traceback."""
    stray, out = str(tmp_path / "stray.kfdtrace"), str(tmp_path / "t.kfdtrace")
    seen = []

    def add_stray(rec, r, w):
        if rec.type != "doorbell":
            return dict(rec.fields)
        seen.append(rec.n)
        extra = {**rec.fields, "queue": None, "addr": 0x7F00_DEAD_0000, "value": 8, "ring": b""}
        return [(rec.type, dict(rec.fields))] + ([(rec.type, extra)] if len(seen) == 22 else [])
    rewrite(sample("sdma_stress-gfx942"), stray, add_stray)
    with TraceReader(stray) as r:
        trim(r, out, 20, r.submissions - 1)
    report = replay_trace(out, Options(), emulate_recorded=True)
    assert report.status == EXIT_OK and report.results[0].verified > 0, report.lines()


def test_a_reconstructed_buffer_holding_a_clock_written_before_the_range_is_refused(tmp_path):
    """Campaign 103: a timestamp into VRAM, copied out in the range (a profiler's): --reconstruct restored the
    replay's clock, which the range copied and its checkpoint compared as data with the recording's (DIVERGED on an
    honest trimmed trace). The range from the timestamp on trims and replays."""
    from kfdtrace.replay.session import contents_at

    path, out = str(tmp_path / "t.kfdtrace"), str(tmp_path / "out.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        stamps, host = gpu.alloc(4096, "vram", cpu_access=False, name="stamps"), gpu.alloc(4096, "gtt", name="host")
        q = gpu.sdma_queue()
        q.timestamp(stamps).sync()
        q.copy(host, stamps, 64).sync()
    with TraceReader(path) as r, pytest.raises(TrimRefused, match=r"submission 0 wrote a GPU clock into stamps at "
                                                                  r"0x[0-9a-f]+ before the range: --reconstruct would "
                                                                  r"restore the replay's clock there"):
        trim(r, out, 1, 1, lambda vas: contents_at(path, 1, vas))
    with TraceReader(path) as r:
        trim(r, out, 0, 1, lambda vas: contents_at(path, 0, vas))
    assert replay_trace(out, Options(timeout=5), emulate="gfx1100").status == EXIT_OK


@pytest.mark.parametrize("aql", [False, True])
def test_a_range_whose_queue_stands_at_a_wait_before_it_is_refused(tmp_path, aql):
    """Campaign 114: submission 0 is q2's wait (a semaphore wait, or an AQL BARRIER_AND); submission 1, q2's work
    behind it; submission 2, q1's signal it waits for. Trimmed from 1, q2's work ran at once, before q1's: the
    trimmed trace said DIVERGED or OK by chance. The range from 0 keeps the wait, and replays."""
    from kfdtrace.driver.aql_queue import HsaSignal

    path, out = str(tmp_path / "w.kfdtrace"), str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        a, b = gpu.alloc(4096, "gtt", name="a"), gpu.alloc(4096, "gtt", name="b")
        q1 = gpu.sdma_queue(name="q1")
        if aql:
            q2, s1, s2 = gpu.aql_queue(name="q2"), HsaSignal(system, 1, "s1"), HsaSignal(system, 1, "s2")
            q2.barrier_and([s1])
            q2.barrier_and([], completion=s2)
            q1.fill(a, 7, 4096).submit()
            s1.signal(0)
            s2.wait(0, timeout=10)
        else:
            q2, s, d = gpu.sdma_queue(name="q2"), system.semaphore("s"), system.semaphore("d")
            q2.wait(s, 1).submit()
            q2.copy(b, a, 4096).signal(d, 1).submit()
            q1.fill(a, 7, 4096).signal(s, 1).submit()
            d.wait(1)
    with pytest.raises(TrimRefused, match=r"^submission 1 comes behind a wait of its queue in submission 0, "):
        trim(TraceReader(path), out, 1, 2)
    assert not os.path.exists(out)
    trim(TraceReader(path), out, 0, 2)
    assert replay_trace(out, Options(timeout=10), emulate="gfx942").status == EXIT_OK


@pytest.mark.parametrize("way", ["read", "write"])
def test_a_copy_running_on_into_the_next_buffer_counts_for_both(way, tmp_path):
    """Campaign 115: `a` and `b` lie side by side. Read: submission 0 fills `b` on the GPU, submission 1 copies from
    `a`'s second half on into `b`'s first. Write: submission 0 copies into `a`'s second half on into `b`, whose
    CPU write the trace holds, and submission 1 reads `b`. Trim took each copy for `a`'s alone: from 1 it kept
    `b` known (DIVERGED) where the GPU had written it. Now refused; with --reconstruct, it replays."""
    path, out = str(tmp_path / "t.kfdtrace"), str(tmp_path / "x.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        q = gpu.sdma_queue(name="q")
        hole = gpu.alloc(1 << 16, "gtt", name="hole")
        base = hole.va
        hole.free()
        a, b = gpu.alloc(8192, "vram", va=base, name="a"), gpu.alloc(8192, "vram", va=base + 8192, name="b")
        src, dst = gpu.alloc(8192, "gtt", name="src"), gpu.alloc(8192, "gtt", name="dst")
        src.write(b"S" * 8192)
        b.write(b"B" * 8192)
        if way == "read":
            q.fill(b, 0x5A5A5A5A, 8192).submit()
            q.copy(dst, a.va + 4096, 8192).submit()
        else:
            q.copy(a.va + 4096, src, 8192).submit()
            q.copy(dst, b, 8192).submit()
        q.fill(a, 0, 8192).fill(b, 0, 8192).submit()
        q.sync(5)
    with pytest.raises(TrimRefused, match=r"^submission 1 \(COPY_LINEAR\) reads b at 0x[0-9a-f]+, whose contents at "
                                          r"the range's start are unknown \(submission 0 on queue 0 \(q\) wrote it"):
        trim(TraceReader(path), out, 1, 2)
    res = subprocess.run([sys.executable, "-m", "kfdtrace", "trim", path, "-s", "1..2", "-o", out, "--reconstruct"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    done = replay(out, "--emulate", "gfx942")  # (its own process: the buffers stay side by side where recorded)
    assert done.returncode == EXIT_OK, done.stdout + done.stderr
