"""`kfdtrace minimize` (issue 12): delta debugging a trace down to what still fails the same way."""

from __future__ import annotations

import os
import sys

import pytest
from click.testing import CliRunner

from kfdtrace.capture import record
from kfdtrace.cli import main as kfdtrace_cli
from kfdtrace.driver import System
from kfdtrace.driver.sdma import DIALECTS
from kfdtrace.replay.engine import EXIT_OK, Options
from kfdtrace.replay.session import replay_trace
from kfdtrace.traces.format import TraceReader
from kfdtrace.traces.minimize import CommandTest, MinimizeError, ddmin, minimize

from .test_replay import rewrite

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
from sdma_stress import stress  # noqa: E402

REPLAY = f"{sys.executable} -m kfdtrace.replay.cli {{trace}} --emulate gfx942 --timeout 0.3"


def faulty(tmp_path, rounds: int, edit_packet, at: int) -> str:
    """The stress example recorded, then submission `at`'s packets passed through `edit_packet(packet, raw)`
    (which returns the bytes to keep)."""
    good, bad = str(tmp_path / "good.kfdtrace"), str(tmp_path / "bad.kfdtrace")
    with record(good), System.open(emulate="gfx942") as system:
        stress(system, rounds, 4096)
    d, seen = DIALECTS["sdma4.4"], [0]

    def edit(rec, r, w):
        if rec.type != "doorbell":
            return rec.fields
        seen[0] += 1
        if seen[0] - 1 != at:
            return rec.fields
        ring = rec.fields["ring"]
        return {**rec.fields, "ring": b"".join(edit_packet(p, ring[p.offset:p.offset + p.size])
                                               for p in d.iter_packets(ring))}

    rewrite(good, bad, edit)
    return bad


def test_a_packet_pointing_outside_its_buffer_shrinks_to_one_submission(tmp_path):
    """520 submissions, one COPY_LINEAR sent to an address in no buffer: what is left is that packet."""
    d = DIALECTS["sdma4.4"]

    def stray(p, raw):
        return d.packet(p.name, **{**p.fields, "dst": 0x10_0000_0000}).encode() if p.name == "COPY_LINEAR" else raw

    bad, out = faulty(tmp_path, 260, stray, 301), str(tmp_path / "min.kfdtrace")
    with TraceReader(bad) as r:
        report = minimize(r, out, CommandTest(REPLAY, "in no recorded buffer", 60), jobs=2)
    assert report.before["submissions"] == 520 and report.after["submissions"] <= 5
    assert report.after["packets"] == 1 and report.after["bytes"] < report.before["bytes"]
    with TraceReader(out) as r:
        (ring,) = [rec.fields["ring"] for rec in r.records(["doorbell"])]
    assert d.decode(ring).name == "COPY_LINEAR" and d.decode(ring).dst == 0x10_0000_0000


def test_a_missing_signal_that_hangs_shrinks_to_a_few_submissions(tmp_path):
    """The last round's consumer never signals `drained`: the CPU's final wait hangs (exit 2)."""
    bad, out = faulty(tmp_path, 30, lambda p, raw: b"" if p.name == "FENCE" else raw, 59), str(tmp_path / "m.kfdtrace")
    said: list[str] = []
    with TraceReader(bad) as r:
        report = minimize(r, out, CommandTest(REPLAY, "waited", 60), jobs=2, progress=said.append)
    assert report.before["submissions"] == 60 and report.after["submissions"] <= 5
    assert CommandTest(REPLAY, "waited", 60)(out) == 2
    # where it stands, before each round of candidates: what is left of each pass, and the tries so far
    left = [int(text.split()[0]) for text in said if " submissions left" in text]
    assert left[0] == 60 and left == sorted(left, reverse=True) and left[-1] >= report.after["submissions"]
    assert any(" packets left" in text for text in said) and any(" CPU writes left" in text for text in said)
    assert said[-1].endswith(" s") and int(said[-1].split(" tries")[0].split()[-1]) < report.tries


@pytest.mark.parametrize("needed", [{3}, {0, 63}, {5, 6, 40}])
def test_ddmin_finds_exactly_what_the_failure_needs(needed):
    items = [(i, -1) for i in range(64)]
    tries = []

    def reproduces(candidates):
        tries.append(len(candidates))
        return next((i for i, c in enumerate(candidates) if needed <= {n for n, _ in c}), None)

    assert {n for n, _ in ddmin(items, reproduces)} == needed
    assert sum(tries) < 64 * len(needed)  # far fewer than trying each item on its own per needed one


def test_the_cli_reports_and_refuses_in_one_line(tmp_path):
    bad = faulty(tmp_path, 30, lambda p, raw: b"" if p.name == "FENCE" else raw, 59)
    out = str(tmp_path / "m.kfdtrace")
    for args, text in (([bad, "--until", "true", "-o", out], "never names {trace}"),
                       ([bad, "--until", 'replay {trace} "x', "-o", out], "is no command line: No closing quotation"),
                       ([bad, "--until", "no-such-program-x {trace}", "-o", out], "cannot run"),
                       ([bad, "--until", REPLAY, "--match", "nothing like this", "-o", out], "'no match'"),
                       ([bad, "--until", REPLAY, "--match", "(", "-o", out], "is no regular expression")):
        res = CliRunner().invoke(kfdtrace_cli, ["minimize", *args])
        assert res.exit_code == 1 and text in res.output and len(res.output.splitlines()) == 1, res.output
    assert not os.path.exists(out)


@pytest.mark.parametrize("confirm", [2, 3])
def test_a_cut_that_makes_the_failure_depend_on_timing_is_kept_out(confirm, tmp_path):
    """Submission 20 stands for a barrier whose cut opens a race: without it the failure shows on every other
    run only (a candidate kept on one run shrank a gated AQL pipeline's hang to a trace that diverged half the
    time). `confirm` runs in a row keep the barrier, and each run is counted."""
    from .test_replay import sample

    def doorbells(path: str) -> frozenset[int]:
        with TraceReader(path) as r:
            return frozenset(rec.fields["t"] for rec in r.records(["doorbell"]))

    path, out = sample("sdma_stress-gfx942"), str(tmp_path / "m.kfdtrace")
    every = sorted(doorbells(path))
    failing, barrier = every[25], every[20]
    calls: dict[frozenset[int], int] = {}

    def outcome(candidate: str) -> int:
        kept = doorbells(candidate)
        calls[kept] = calls.get(kept, 0) + 1
        if failing not in kept:
            return 0
        return 2 if barrier in kept or calls[kept] % 2 else 0  # the race: fails on odd runs only

    with TraceReader(path) as r:
        report = minimize(r, out, outcome, confirm=confirm)
    assert {failing, barrier} <= doorbells(out)
    assert report.runs == sum(calls.values()) and report.runs >= report.tries
    assert f"({report.runs} runs of the command)" in report.lines()[0]


def test_a_command_that_fails_only_sometimes_on_the_original_is_refused(tmp_path):
    from .test_replay import sample

    results = iter([2, 0, 2])
    with TraceReader(sample("sdma_stress-gfx942")) as r, pytest.raises(MinimizeError, match="reproduces every time"):
        minimize(r, str(tmp_path / "m.kfdtrace"), lambda path: next(results))


def test_a_result_that_stops_failing_is_reported_and_kept(tmp_path):
    """Each kept cut failed `confirm` runs in a row, yet the result then passes: the user is told the failure
    depends on timing, and what to do, and gets the trace."""
    from .test_replay import sample

    path, out = sample("sdma_stress-gfx942"), str(tmp_path / "m.kfdtrace")
    calls: dict[bytes, int] = {}

    def outcome(candidate: str) -> int:
        with TraceReader(candidate) as r:
            kept = b"".join(rec.fields["ring"] for rec in r.records(["doorbell"]))
        calls[kept] = calls.get(kept, 0) + 1
        return 2 if calls[kept] <= 2 else 0  # a failure that wears off on the third run of the same trace

    with TraceReader(path) as r, pytest.raises(MinimizeError, match=r"in run 1 of 2: the failure depends on timing"):
        minimize(r, out, outcome, confirm=2)
    assert os.path.exists(out)


def test_a_candidate_does_not_verify_what_its_dropped_writes_wrote(tmp_path):
    """A candidate without the packets (or CPU writes) that wrote a buffer would fail its later checkpoints of
    that buffer, a failure of its own that minimize took for the original's: those entries go with them, and a
    dropped dispatch (which may write any buffer) takes every later entry."""
    from kfdtrace.traces.minimize import Minimizer

    from .test_replay import sample

    def entries(path: str, after: int = -1) -> set[int]:
        with TraceReader(path) as t:
            return {b["va"] for c in t.records({"checkpoint"}) if c.n > after for b in c.fields["buffers"]}

    src, out = sample("sdma_stress-gfx942"), str(tmp_path / "c.kfdtrace")
    with TraceReader(src) as r:
        m = Minimizer(r)
        checked = entries(src)
        n, wrote = next((n, w) for n, ws in m.writes.items() if n in m.subs for w in ws if w and w & checked)
        m.write(out, {n})
    assert not wrote & entries(out) and entries(out) == checked - wrote, (wrote, checked)
    with TraceReader(src) as r:
        m = Minimizer(r)
        m.writes[n] = [None]  # as if it were a dispatch
        m.write(out, {n})
    assert entries(src, after=n) and entries(out, after=n) == set()


def test_what_a_kept_packet_makes_of_a_dropped_packets_output_is_not_verified(tmp_path):
    """Campaign 65: copy src->mid, then mid->out. The candidate without the first copy stopped verifying mid but
    still verified out, which the second copy fills from mid, and failed on it (a failure of its own, which a
    real minimize shrank to)."""
    from kfdtrace.traces.minimize import Minimizer

    path, out = str(tmp_path / "t.kfdtrace"), str(tmp_path / "c.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        q, s = gpu.sdma_queue(name="q"), system.semaphore("s")
        src, mid, dst = (gpu.alloc(4096, "gtt", name=n) for n in ("src", "mid", "out"))
        src.write(bytes(range(256)) * 16)
        q.copy(mid, src, 4096).signal(s, 1).submit()
        q.copy(dst, mid, 4096).signal(s, 2).submit()
        s.wait(2)
    with TraceReader(path) as r:
        m = Minimizer(r)
        first = min(m.subs)
        m.write(out, set(), {n: set(range(len(sub.packets))) - ({0} if n == first else set())
                             for n, sub in m.subs.items()})
    with TraceReader(out) as r:
        assert [b["name"] for c in r.records({"checkpoint"}) for b in c.fields["buffers"]] == []
    assert replay_trace(out, Options(), emulate="gfx942").status == EXIT_OK


def test_an_interrupt_while_the_command_starts_loses_no_run(tmp_path, monkeypatch):
    """CI: a SIGTERM landing after the command had started but before `Popen` returned lost the only handle on
    it, so it ran on after minimize had stopped."""
    import signal
    import subprocess

    from kfdtrace.cli import terminated_as_interrupt

    started, real = [], subprocess.Popen

    def popen(*args, **kwargs):
        started.append(real(*args, **kwargs))
        signal.raise_signal(signal.SIGTERM)  # handled here, before Popen returns
        return started[-1]

    monkeypatch.setattr(subprocess, "Popen", popen)
    test = CommandTest("sh -c 'sleep 60' {trace}", None, 120)
    try:
        with terminated_as_interrupt(), pytest.raises(KeyboardInterrupt):
            test(str(tmp_path / "t.kfdtrace"))
        test.stop()
        assert started[0].poll() == -signal.SIGKILL
    finally:
        started[0].kill()
        started[0].communicate()


def test_a_terminated_minimize_stops_its_command_and_removes_its_files(tmp_path):
    """Campaign 48: SIGTERM (a timeout, a CI job's end) left the temporary folder of candidates and the command
    under way running."""
    import signal
    import subprocess
    import time

    trace, pids, tmp = str(tmp_path / "s.kfdtrace"), tmp_path / "pids", tmp_path / "tmp"
    tmp.mkdir()
    with record(trace), System.open(emulate="gfx942") as system:
        stress(system, 4, 4096)
    until = f"sh -c 'echo $$ >> {pids}; sleep 60' {{trace}}"
    run = subprocess.Popen([sys.executable, "-m", "kfdtrace", "minimize", trace, "--until", until, "-o",
                            str(tmp_path / "out.kfdtrace"), "--timeout", "120"], env={**os.environ, "TMPDIR": str(tmp)},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not pids.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    run.send_signal(signal.SIGTERM)
    run.communicate(timeout=30)
    assert run.returncode != 0 and os.listdir(tmp) == []
    for pid in map(int, pids.read_text().split()):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_an_interrupted_minimize_keeps_the_smallest_trace_that_reproduced(tmp_path):
    """Campaign 68: Ctrl-C or SIGTERM printed click's "Aborted!", exited 1 and threw away every cut already
    verified; and stopping a run another thread was reaping could fail with EBADF."""
    import signal
    import subprocess
    import time

    trace, runs, out = str(tmp_path / "s.kfdtrace"), tmp_path / "runs", tmp_path / "out.kfdtrace"
    with record(trace), System.open(emulate="gfx942") as system:
        stress(system, 8, 4096)
    until = f"sh -c 'echo x >> {runs}; sleep 0.2; exit 1' {{trace}}"
    run = subprocess.Popen([sys.executable, "-m", "kfdtrace", "minimize", trace, "--until", until, "-o", str(out),
                            "--confirm", "1", "-j", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while (not runs.exists() or len(runs.read_text().split()) < 5) and time.monotonic() < deadline:
        time.sleep(0.05)
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=30)
    assert run.returncode == 128 + signal.SIGTERM
    # campaign 120: it said "it gave 1 1 times in a row"
    assert len(err.splitlines()) == 1 and err.endswith(f"kfdtrace: terminated; the smallest trace found so far (it "
                                                       f"gave exit status 1, 1 time(s) in a row) is at {out}\n")
    with TraceReader(str(out)) as r, TraceReader(trace) as whole:
        assert sum(1 for _ in r.records({"doorbell"})) < sum(1 for _ in whole.records({"doorbell"}))


def test_a_candidate_cutting_a_packet_a_conditional_governs_cuts_its_count_too(tmp_path):
    """Campaign 104: the PRED_EXEC that keeps a multi-XCC signal's RELEASE_MEMs on one XCC kept its count of 16 dwords
    when one of them was cut: the candidate was no packet stream (exit 3), which could pass for the failure."""
    import numpy as np

    from kfdtrace.driver.kernels.device import corpus
    from kfdtrace.traces.minimize import Minimizer

    path, cut = str(tmp_path / "pm4.kfdtrace"), str(tmp_path / "cut.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        q, sem = gpu.compute_queue(name="pm4"), system.semaphore("sem")
        a, b, c = (gpu.alloc(256, "gtt", name=n) for n in "abc")
        a.write(np.ones(64, np.float32))
        b.write(np.ones(64, np.float32))
        q.dispatch(corpus(gpu).kernel("vector_add"), (64,), (64,), a, b, c, np.uint32(64)).signal(sem, 1).submit()
        sem.wait(1, 30)
    with TraceReader(path) as r:
        m = Minimizer(r)
        [(n, _)] = m.submissions()
        names = [p.name for p in m.subs[n].packets]
        governed = names.index("PRED_EXEC") + 1
        assert names[governed] == "RELEASE_MEM"
        m.write(cut, set(), {n: set(range(len(names))) - {governed}})
    report = replay_trace(cut, Options(timeout=5), emulate="gfx942")
    assert report.status == EXIT_OK, report.lines()
