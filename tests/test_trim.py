"""`kfdtrace trim` (issue 12): a range of submissions as a standalone trace that replays and verifies, or a
refusal that says what the range needs that the trace does not hold."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from kfdtrace.capture import record
from kfdtrace.cli import main as kfdtrace_cli
from kfdtrace.driver import System
from kfdtrace.driver import kfd_ioctl as K
from kfdtrace.replay.engine import EXIT_OK, Options
from kfdtrace.replay.session import replay_trace
from kfdtrace.traces.format import TraceReader
from kfdtrace.traces.records import HEADER, SUMMARY, check_map, checked
from kfdtrace.traces.trim import TrimRefused, trim

from .test_replay import FAMILIES, gpu_count, sample

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


def test_a_range_whose_wait_is_signalled_only_after_it_is_refused(tmp_path):
    with TraceReader(sample("peer_ring-2xgfx942")) as r, pytest.raises(TrimRefused) as e:
        trim(r, str(tmp_path / "t.kfdtrace"), 0, 0)
    assert "would hang" in str(e.value) and "semaphores+0x" in str(e.value)


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
    for args, text in ((["-s", "1..1"], "contents at the range's start are unknown"),
                       (["-s", "40..41"], "the trace has submissions 0..31"),
                       (["-s", "x"], "submission range")):
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
            except TrimRefused as exc:
                # unknown contents are reconstructed, not refused: what is left is a range that needs work outside it
                assert "would hang" in str(exc) or "still running" in str(exc), str(exc)
                continue
        made += 1
        restored += report.restored_chunks
        result = replay_trace(out, Options(timeout=5), emulate=",".join(["gfx1100"] * gpu_count(out)))
        assert result.status == EXIT_OK, (a, b, result.lines())
    assert made >= n // 2 and (restored > 0 or n == 1)  # a one-submission trace has nothing before to restore


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
