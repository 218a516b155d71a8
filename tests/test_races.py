"""A program's own race between queues (two queues writing one buffer with nothing ordering the writes) is told
apart from writes that the CPU or the GPU's waits order: a racy buffer is left out of checkpoints and named, so a
replay is not called diverged for a race the recording could have lost as well."""

from __future__ import annotations

import functools
import time

import numpy as np
import pytest

from kfdtrace.capture import record
from kfdtrace.capture.completion import QueueProgress
from kfdtrace.capture.ordering import Ordering
from kfdtrace.driver import System
from kfdtrace.driver.signals import Semaphore
from kfdtrace.replay.engine import EXIT_OK, Options
from kfdtrace.replay.session import replay_trace
from kfdtrace.traces.format import TraceReader


def checkpoints(path: str) -> list[dict]:
    with TraceReader(path) as r:
        return [rec.fields for rec in r.records({"checkpoint"})]


def racy(path: str) -> list[tuple[str, str]]:
    return [(b["name"], b["why"]) for c in checkpoints(path) for b in c["racy"] or ()]


def hashed(path: str) -> list[str]:
    return [b["name"] for c in checkpoints(path) for b in c["buffers"]]


def fences(path: str, order: str, target: str = "gfx1100") -> str:
    """Queues A and B each FENCE their letter into the first word of `shared`, then the CPU waits for both.
    `order`: "none" (a race), "semaphore" (B waits for A's signal first), "cpu" (the CPU waits for A before
    submitting B), "chain" (B waits for C, which waits for A)."""
    with record(path), System.open(emulate=target) as system:
        gpu = system.devices[0]
        shared = gpu.alloc(4096, "gtt", name="shared")
        qa, qb, qc = gpu.sdma_queue(name="A"), gpu.sdma_queue(name="B"), gpu.sdma_queue(name="C")
        a, b, c = system.semaphore("a"), system.semaphore("b"), system.semaphore("c")
        if order == "semaphore":
            qb.wait(a, 1)
        elif order == "chain":
            qc.wait(a, 1).signal(c, 1).submit()
            qb.wait(c, 1)
        qb.fence(shared, 0xB).signal(b, 1)
        qa.fence(shared, 0xA).signal(a, 1).submit()
        if order == "cpu":
            a.wait(1)
        qb.submit()
        b.wait(1)
        a.wait(1)
    return path


@pytest.mark.parametrize("order", ["semaphore", "cpu", "chain"])
def test_writes_the_cpu_or_the_gpu_orders_are_hashed(order, tmp_path):
    path = fences(str(tmp_path / "t.kfdtrace"), order)
    assert racy(path) == [] and set(hashed(path)) == {"shared"}
    with TraceReader(path) as r:
        assert "racy" not in r.summary


def test_unordered_writes_are_left_out_named_and_replay_says_so(tmp_path):
    path = fences(str(tmp_path / "t.kfdtrace"), "none")
    assert racy(path) == [("shared", "A and B wrote it with nothing ordering their writes")]
    assert "shared" not in hashed(path)
    with TraceReader(path) as r:
        assert r.summary["racy"] == ["shared: A and B wrote it with nothing ordering their writes"]
    from kfdtrace.traces.info import format_summary

    assert "left out of checkpoints, decided by a race between queues: shared: A and B wrote it with nothing " \
        "ordering their writes" in format_summary(r.summary)
    report = replay_trace(path, Options(), emulate="gfx942")
    assert report.status == EXIT_OK and report.results[0].racy == 1
    assert any("(1 left out: a race decided them)" in line for line in report.lines())
    assert any(line.startswith("note: checkpoints leave out buffers whose contents a race between queues decided")
               and "first shared: A and B wrote it" in line for line in report.lines())
    assert report.to_dict()["loops"][0][0]["racy"] == 1


def test_a_racy_buffer_stays_racy_and_taints_what_is_copied_from_it_until_the_cpu_rewrites_it(tmp_path):
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        shared, out, later = (gpu.alloc(4096, "gtt", name=n) for n in ("shared", "out", "later"))
        qa, qb = gpu.sdma_queue(name="A"), gpu.sdma_queue(name="B")
        a, b = system.semaphore("a"), system.semaphore("b")
        qa.fence(shared, 0xA).signal(a, 1).submit()
        qb.fence(shared, 0xB).signal(b, 1).submit()
        a.wait(1)  # checkpoint 1: B may still be writing shared
        b.wait(1)  # checkpoint 2: shared is racy
        qa.fence(shared, 0xC, offset=64).copy(out, shared, 4096).signal(a, 2).submit()
        a.wait(2)  # checkpoint 3: shared still racy (its first word is the race's), out computed from it
        shared.write(np.zeros(4096, np.uint8))  # the CPU rewrites all of it
        qa.fence(shared, 0xD).copy(later, shared, 4096).signal(a, 3).submit()
        a.wait(3)  # checkpoint 4: both hashed
    got = checkpoints(path)
    assert [[b["name"] for b in c["racy"] or ()] for c in got] == [[], ["shared"], ["out", "shared"], []]
    assert [b["name"] for b in got[0]["in_flight"]] == ["shared"]
    assert [b["why"] for b in got[2]["racy"]] == ["A wrote it from shared",
                                                 "A and B wrote it with nothing ordering their writes"]
    assert sorted(b["name"] for b in got[3]["buffers"]) == ["later", "shared"]
    assert replay_trace(path, Options(), emulate="gfx1100").status == EXIT_OK


@pytest.mark.parametrize("barrier", [False, True])
def test_aql_dispatches_on_two_queues_race_unless_a_barrier_orders_them(barrier, tmp_path):
    """Queue B's dispatch writes c as queue A's does: a race, unless B first waits in a BARRIER_AND for the
    signal A's dispatch decrements."""
    from kfdtrace.driver.aql_queue import HsaSignal
    from kfdtrace.driver.kernels.device import corpus

    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        kernel = corpus(gpu).kernel("vector_add")
        x, y, c = (gpu.alloc(4096, "gtt", name=n) for n in ("x", "y", "c"))
        x.write(np.ones(1024, np.float32))
        qa, qb = gpu.aql_queue(name="A"), gpu.aql_queue(name="B")
        a_done, b_done = HsaSignal(system, 1, "a_done"), HsaSignal(system, 1, "b_done")
        qa.dispatch(kernel, (1024,), (64,), x, y, c, np.uint32(1024), completion=a_done)
        if barrier:
            qb.barrier_and([a_done])
        qb.dispatch(kernel, (1024,), (64,), x, x, c, np.uint32(1024), completion=b_done)
        b_done.wait(0, timeout=120)
        a_done.wait(0, timeout=120)
    assert racy(path) == ([] if barrier else [("c", "A and B wrote it with nothing ordering their writes")])
    assert ("c" in hashed(path)) == barrier


def test_ordering_follows_chains_lives_and_partial_completions():
    a, b, c = QueueProgress("a"), QueueProgress("b"), QueueProgress("c")
    o = Ordering()
    o.submitted(a, [(100, 0x10, 5)], [])  # a signals 0x10 = 5 at 100
    o.submitted(c, [(50, 0x20, 1)], [(40, 0x10, 5)])  # c waits 0x10 >= 5, then signals 0x20 = 1
    o.submitted(b, [], [(30, 0x20, 1)])  # b waits 0x20 >= 1 before 30
    assert o.before(a, 100, b, 60) and o.before(a, 90, b, 31)  # through c
    assert not o.before(a, 101, b, 60)  # a's work after its signal
    assert not o.before(a, 100, b, 30)  # b's packet ending at 30 is the wait itself
    assert not o.before(b, 10, a, 200)  # nothing orders b before a
    assert o.before(a, 5, a, 6) and not o.before(a, 6, a, 5)  # one queue runs in order
    d = QueueProgress("d")
    o.submitted(d, [], [(300, 0x10, 6)])  # waits for more than anybody signals: what it saw is not known
    assert not o.before(a, 100, d, 400)
    o.submitted(d, [], [(450, 0x10, 4)])  # 4 or more: only a's 5 gives it
    assert o.before(a, 100, d, 460)
    o.cpu_store(0x30, 1, backwards=False)
    o.submitted(a, [(500, 0x30, None)], [], partial=frozenset({500}))  # a dispatch without the barrier bit
    o.submitted(c, [], [(600, 0x30, None)])  # a BARRIER_AND on its signal
    assert o.before(a, 500, c, 700) and not o.before(a, 400, c, 700)  # only the decrementing packet itself
    o.cpu_store(0x30, 1, backwards=False)  # the CPU sets the AQL signal anew: the next barrier waits on a new life
    o.submitted(b, [], [(900, 0x30, None)])
    assert not o.before(a, 500, b, 1000)


def test_a_signal_pending_when_the_cpu_resets_its_semaphore_may_release_a_wait_after():
    """Campaign 49's bug04: a's signal of 1 is still pending when the CPU resets the semaphore to 0; c's wait for 1
    may see a's or b's, so it is ordered after neither (the reset used to forget a's)."""
    a, b, c = QueueProgress("a"), QueueProgress("b"), QueueProgress("c")
    o = Ordering()
    o.cpu_store(0x10, 5, backwards=False)
    o.submitted(a, [(100, 0x10, 1)], [])
    o.cpu_store(0x10, 0, backwards=True)
    o.submitted(c, [], [(30, 0x10, 1)])
    o.submitted(b, [(200, 0x10, 1)], [])
    assert not o.before(b, 200, c, 40) and not o.before(a, 100, c, 40)


def test_a_queue_released_by_a_cpu_write_of_its_flag_races_with_a_later_writer(tmp_path):
    """Campaign 49's bug02: b waits for a flag word, then copies src; the CPU releases it with `write` (not a
    signal), then a fills src. Nothing orders b's read before a's write: out2 is racy (it was hashed, the wait
    taken as still blocked on a value nobody gave)."""
    from kfdtrace.driver.signals import Semaphore

    path = str(tmp_path / "flag.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        flag, src, out2 = (gpu.alloc(n, "gtt", name=x) for n, x in ((4096, "flag"), (1 << 20, "src"),
                                                                     (1 << 20, "out2")))
        fs = Semaphore.view(system, flag, 0, name="flag")
        qa, qb, a, b = gpu.sdma_queue(), gpu.sdma_queue(), system.semaphore("a"), system.semaphore("b")
        qb.wait(fs, 1).copy(out2, src, 1 << 20).signal(b, 1).submit()
        flag.write((1).to_bytes(8, "little"))
        qa.fill(src, 0x5A5A1234, 1 << 20).signal(a, 1).submit()
        a.wait(1)
        b.wait(1)
    assert "out2" in [name for name, _ in racy(path)]


@pytest.mark.parametrize("relay", [False, True])
def test_signals_that_can_only_land_later_are_not_what_a_wait_saw(relay, tmp_path):
    """Campaign 49's bug06 and bug08, one timeline semaphore. Chain: q1 fills X and signals 1, q2 waits for 1,
    copies X to Y and signals 2, q3 waits for 2, copies Y to Z and signals 3: q3's 3 comes after q2's wait, so
    that wait saw q1's 1. Relay: the relay waits for 2 (only the CPU gives it, later) before signalling 3, so the
    CPU's wait for 1 saw the producer's 1. Both were taken for either of two queues' signals: X never verified,
    Y or Z called racy."""
    path, n = str(tmp_path / "timeline.kfdtrace"), 1 << 20
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        x, y, z = (gpu.alloc(n, "gtt", name=name) for name in "XYZ")
        q1, q2, q3 = (gpu.sdma_queue() for _ in range(3))
        s, done = system.semaphore("timeline"), system.semaphore("done")
        if relay:
            q3.wait(s, 3).copy(z, x, n).signal(done, 1).submit()
            q2.wait(s, 2).signal(s, 3).submit()
            q1.fill(x, 0x600DF00D, n).signal(s, 1).submit()
            s.wait(1)
            s.signal(2)
            done.wait(1)
        else:
            q1.fill(x, 0x600DF00D, n).signal(s, 1).submit()
            q2.wait(s, 1).copy(y, x, n).signal(s, 2).submit()
            q3.wait(s, 2).copy(z, y, n).signal(s, 3).submit()
            s.wait(3)
    assert racy(path) == []
    assert sorted(hashed(path)) == (["X", "Z"] if relay else ["X", "Y", "Z"])
    if relay:
        assert checkpoints(path)[0]["buffers"][0]["name"] == "X"  # known complete at the CPU's wait for 1


def test_a_wait_for_a_value_two_givers_gave_is_ordered_after_neither():
    """Two queues signal 1 (or the CPU stores it and a queue signals it): a wait for 1 may have seen either."""
    a, b, c = QueueProgress("a"), QueueProgress("b"), QueueProgress("c")
    o = Ordering()
    o.submitted(a, [(100, 0x10, 1)], [])
    o.submitted(b, [(200, 0x10, 1)], [])
    o.submitted(c, [], [(30, 0x10, 1)])
    assert not o.before(a, 100, c, 40) and not o.before(b, 200, c, 40)
    o.submitted(c, [], [(60, 0x10, 2)])  # 2 was never signalled: what the wait saw is not known
    assert not o.before(a, 100, c, 70) and not o.before(b, 200, c, 70)
    o.cpu_store(0x20, 3, backwards=False)
    o.submitted(a, [(300, 0x20, 3)], [])
    o.submitted(c, [], [(80, 0x20, 3)])
    assert not o.before(a, 300, c, 90)


def test_a_queue_signalling_a_value_again_orders_a_wait_after_its_first_signal_only():
    """helper 33's w06: the semaphore holds 1 already when its queue signals 1 again after more work."""
    a, b = QueueProgress("a"), QueueProgress("b")
    o = Ordering()
    o.submitted(a, [(10, 0x10, 1)], [])
    o.submitted(b, [], [(20, 0x10, 1)])
    o.submitted(a, [(90, 0x10, 1)], [])
    assert o.before(a, 10, b, 30) and not o.before(a, 90, b, 30) and not o.before(a, 11, b, 30)


def test_two_queues_writing_their_own_halves_of_a_buffer_do_not_race(tmp_path):
    """A copy split across two SDMA queues into one buffer: the bytes each writes (its COPY_LINEAR's count) do
    not overlap, so nothing needs ordering; a third copy over both halves, unordered, is a race."""
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        src, dst = gpu.alloc(1 << 16, "gtt", name="src"), gpu.alloc(1 << 16, "gtt", name="dst")
        src.write(np.arange(1 << 14, dtype=np.uint32))
        qa, qb, qc = gpu.sdma_queue(name="A"), gpu.sdma_queue(name="B"), gpu.sdma_queue(name="C")
        a, b, c = system.semaphore("a"), system.semaphore("b"), system.semaphore("c")
        qa.copy(dst, src, 1 << 15).signal(a, 1).submit()
        qb.copy(dst, src, 1 << 15, dst_offset=1 << 15, src_offset=1 << 15).signal(b, 1).submit()
        a.wait(1)
        b.wait(1)
        qa.copy(dst, src, 1 << 15, dst_offset=1 << 14).signal(a, 2).submit()
        qc.copy(dst, src, 1 << 15).signal(c, 1).submit()
        a.wait(2)
        c.wait(1)
    got = checkpoints(path)
    assert [b["name"] for b in got[1]["buffers"]] == ["dst"] and not got[1]["racy"]
    assert [b["name"] for b in got[-1]["racy"]] == ["dst"]


@pytest.mark.parametrize("ordered", [False, True])
def test_a_copy_of_what_another_queue_writes_races_without_a_semaphore_between(ordered, tmp_path):
    """Producer A fills `mid`; consumer B copies `mid` to `out`. Without B waiting for A's signal, what `out`
    holds depends on which ran first: `out` is left out (`mid` itself has one writer and is hashed)."""
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        mid, out = gpu.alloc(1 << 16, "gtt", name="mid"), gpu.alloc(1 << 16, "gtt", name="out")
        qa, qb = gpu.sdma_queue(name="A"), gpu.sdma_queue(name="B")
        a, b = system.semaphore("a"), system.semaphore("b")
        qa.fill(mid, 0x5A5A5A5A, 1 << 16).signal(a, 1).submit()
        if ordered:
            qb.wait(a, 1)
        qb.copy(out, mid, 1 << 16).signal(b, 1).submit()
        b.wait(1)
        a.wait(1)
    if ordered:
        assert racy(path) == [] and set(hashed(path)) == {"mid", "out"}
    else:
        assert racy(path) == [("out", "B wrote it from mid, which A wrote with nothing ordering the two")]
        assert hashed(path) == ["mid"]


@pytest.mark.parametrize("ordered", [False, True])
def test_a_write_after_an_unordered_read_of_the_same_bytes_races(ordered, tmp_path):
    """B copies `mid` (the CPU's) to `out`, then A overwrites `mid`: unless the CPU saw B's copy complete before
    it submitted A's fill, B may have copied either."""
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        mid, out = gpu.alloc(1 << 16, "gtt", name="mid"), gpu.alloc(1 << 16, "gtt", name="out")
        mid.write(np.ones(1 << 14, np.uint32))
        qa, qb = gpu.sdma_queue(name="A"), gpu.sdma_queue(name="B")
        a, b = system.semaphore("a"), system.semaphore("b")
        qb.copy(out, mid, 1 << 16).signal(b, 1).submit()
        if ordered:
            b.wait(1)
        qa.fill(mid, 0, 1 << 16).signal(a, 1).submit()
        a.wait(1)
        b.wait(1)
    assert racy(path) == ([] if ordered else
                          [("out", "B wrote it from mid, which A wrote with nothing ordering the two")])


def test_accesses_one_submission_orders_by_its_waits_are_not_a_race(tmp_path):
    """Two queues pass a buffer back and forth, each lap waiting for the other's signal, every lap of a queue in
    one submission: the waits between its copies order each against the other queue's (no run of accesses
    spans a wait)."""
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        x, y = gpu.alloc(4096, "gtt", name="x"), gpu.alloc(4096, "gtt", name="y")
        x.write(np.arange(1024, dtype=np.uint32))
        queues = gpu.sdma_queue(name="A"), gpu.sdma_queue(name="B")
        hop = system.semaphore("hop")
        step = 0
        for _ in range(8):
            for i, (dst, src) in enumerate(((y, x), (x, y))):
                queues[i].wait(hop, step).copy(dst, src, 4096).signal(hop, step + 1)
                step += 1
        for q in queues:
            q.submit()
        hop.wait(step)
    assert racy(path) == [] and sorted(hashed(path)) == ["x", "y"]  # x came back as the CPU wrote it: verified too


@pytest.mark.parametrize("ordered", [False, True])
def test_a_kernel_reading_what_a_copy_engine_writes_races_unless_ordered(ordered, tmp_path):
    """An SDMA queue fills `x` while a kernel adds `x` and `y` into `c`: unless the CPU saw the fill complete
    before it dispatched, `c` depends on which ran first."""
    from kfdtrace.driver.kernels.device import corpus

    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        kernel = corpus(gpu).kernel("vector_add")
        x, y, c = (gpu.alloc(4096, "gtt", name=n) for n in ("x", "y", "c"))
        copier, compute = gpu.sdma_queue(name="copier"), gpu.compute_queue(name="compute")
        filled = system.semaphore("filled")
        copier.fill(x, 0x3F800000, 4096).signal(filled, 1).submit()  # 1.0f
        if ordered:
            filled.wait(1)
        compute.dispatch(kernel, (1024,), (64,), x, y, c, np.uint32(1024))
        compute.sync(timeout=120)
        filled.wait(1)
    assert racy(path) == ([] if ordered else
                          [("c", "compute wrote it from x, which copier wrote with nothing ordering the two")])


def test_dump_diff_and_export_show_what_a_race_left_out(tmp_path):
    import json

    from click.testing import CliRunner

    from kfdtrace.cli import main as kfdtrace_cli

    path = fences(str(tmp_path / "t.kfdtrace"), "none")
    run = CliRunner().invoke
    text = run(kfdtrace_cli, ["dump", path]).output
    assert "    left out, a race decided it: shared (A and B wrote it with nothing ordering their writes)" in text
    entries = [json.loads(line) for line in run(kfdtrace_cli, ["dump", "--json", path]).output.splitlines()]
    assert [b["name"] for e in entries if e["record"] == "checkpoint" for b in e["racy"] or ()] == ["shared"]
    out = tmp_path / "t.json"
    assert run(kfdtrace_cli, ["export", path, "--perfetto", str(out)]).exit_code == 0
    marks = [e for e in json.loads(out.read_text())["traceEvents"] if e["name"] == "checkpoint"]
    assert [m["args"].get("racy") for m in marks][-1] == ["shared"]
    other = fences(str(tmp_path / "u.kfdtrace"), "semaphore")
    from kfdtrace.traces.diff import diff_traces

    with TraceReader(path) as a, TraceReader(other) as b:
        result = diff_traces(a, b)
    assert result.tallies["checkpoint"].differ >= 1


def test_a_long_gpu_only_hand_off_between_queues_is_ordered_in_few_steps(tmp_path, monkeypatch):
    """Two queues pass a buffer back and forth 300 times with the CPU waiting only at the end: every access is
    ordered by the semaphore, and the searches the one checkpoint makes find that among the latest waits and
    signals (they once read the whole history, each: minutes of CPU for 500 rounds)."""
    from kfdtrace.capture.memory import MAX_RUNS

    looked: list[int] = []
    search = Ordering._search

    def counted(self, a, pa, b, pb, steps, known):
        found, left = search(self, a, pa, b, pb, steps, known)
        looked.append(steps - left)
        return found, left

    monkeypatch.setattr(Ordering, "_search", counted)
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        x, y = gpu.alloc(4096, "gtt", name="x"), gpu.alloc(4096, "gtt", name="y")
        x.write(np.arange(1024, dtype=np.uint32))
        qa, qb = gpu.sdma_queue(name="A"), gpu.sdma_queue(name="B")
        hop = system.semaphore("hop")
        for step in range(0, 600, 2):
            qa.wait(hop, step).copy(y, x, 4096).signal(hop, step + 1).submit()
            qb.wait(hop, step + 1).copy(x, y, 4096).signal(hop, step + 2).submit()
        hop.wait(600, timeout=120)
    assert racy(path) == [] and "y" in hashed(path)
    assert 0 < len(looked) <= 2 * 2 * MAX_RUNS * MAX_RUNS  # two buffers, both directions, runs of reads x writes
    assert max(looked) <= 64, sorted(looked)[-5:]  # the hand-off is among the latest signals, not 600 back


def test_a_search_that_runs_out_is_no_evidence_of_a_race():
    a, b = QueueProgress("a"), QueueProgress("b")
    o = Ordering()
    o.submitted(a, [(100, 0x10, 1)], [])
    o.submitted(b, [], [(50, 0x10, 1)])
    assert o.before(a, 100, b, 60) is True
    o.budget = 0
    assert o.before(a, 100, b, 60) is None and o.before(a, 5, a, 6) is True


@pytest.mark.parametrize("laps", [3, 5])
def test_a_ring_of_queues_deeper_than_the_search_is_left_unverified_not_hashed_on_a_guess(laps, tmp_path):
    """Three queues handing a buffer round over one timeline: at 3 laps the hand-offs are shown ordered and every
    slot is hashed. From 4 laps on, telling which signal a wait saw goes past MAX_DEPTH queues: campaign 55 had
    that taken for ordered, and campaign 59 showed a real race hidden the same way (a false DIVERGED on every
    replay). An order not shown is no order: the slots are named racy, and the replay is OK without them."""
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        slots = [gpu.alloc(4096, "gtt", name=f"slot{i}") for i in range(3)]
        queues = [gpu.sdma_queue(name=f"hop{i}") for i in range(3)]
        hop = system.semaphore("hop")
        slots[0].write(bytes(range(256)) * 16)
        step = 0
        for _ in range(laps):
            for i, q in enumerate(queues):
                q.wait(hop, step).copy(slots[(i + 1) % 3], slots[i], 4096).signal(hop, step + 1)
                step += 1
        for q in queues:
            q.submit()
        hop.wait(step)
    if laps == 3:
        assert racy(path) == [] and sorted(hashed(path)) == ["slot0", "slot1", "slot2"]
    else:
        assert sorted(name for name, _ in racy(path)) == ["slot0", "slot1", "slot2"] and hashed(path) == []
    assert replay_trace(path, Options(), emulate="gfx942").status == EXIT_OK


def test_what_a_lone_queue_computes_from_a_race_is_racy(tmp_path):
    """A and B race on `shared`; B is destroyed; A, alone now, copies `shared` to `out`: `out` is as racy."""
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        shared, out = gpu.alloc(4096, "gtt", name="shared"), gpu.alloc(4096, "gtt", name="out")
        qa, qb = gpu.sdma_queue(name="A"), gpu.sdma_queue(name="B")
        a, b = system.semaphore("a"), system.semaphore("b")
        qa.fence(shared, 0xA).signal(a, 1).submit()
        qb.fence(shared, 0xB).signal(b, 1).submit()
        a.wait(1)
        b.wait(1)
        qb.destroy()
        qa.copy(out, shared, 4096).signal(a, 2).submit()
        a.wait(2)
    assert ("out", "A wrote it from shared") in racy(path)


@pytest.mark.parametrize("released", ["by the CPU", "by a view"])
def test_a_write_still_waiting_for_a_value_nobody_gave_comes_after_a_read_seen_complete(released, tmp_path):
    """A's write of `x` waits for `go`; B reads `x` into `out`; the CPU sees the read complete, then gives `go`.
    Judged at the read's checkpoint, before `go` existed, the two were taken for a race, and `out` stayed racy
    (campaign 40: 90% of a race-free pipeline's checkpoints). A flag the CPU may store through a raw view is no
    signal the recorder sees: there the race stays a race."""
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        x, inp, out = (gpu.alloc(4096, "gtt", name=n) for n in ("x", "in", "out"))
        x.write(b"A" * 4096)
        inp.write(b"B" * 4096)
        writer, reader = gpu.sdma_queue(name="writer"), gpu.sdma_queue(name="reader")
        wrote, read = system.semaphore("wrote"), system.semaphore("read")
        if released == "by the CPU":
            go = system.semaphore("go")
        else:
            flags = gpu.alloc(4096, "gtt", name="flags")
            go = Semaphore.view(system, flags, 0, name="go")
            flags.numpy(np.uint64)  # a raw view exists
        writer.wait(go, 1).copy(x, inp, 4096).signal(wrote, 1).submit()
        reader.copy(out, x, 4096).signal(read, 1).submit()
        read.wait(1)
        go.signal(1)
        wrote.wait(1)
        for r in range(2, 4):  # the CPU orders the later reads
            reader.copy(out, x, 4096).signal(read, r).submit()
            read.wait(r)
        assert out.read(0, 4) == b"BBBB"
    assert set(racy(path)) == (set() if released == "by the CPU" else
                               {("out", "reader wrote it from x, which writer wrote with nothing ordering the two")})
    assert replay_trace(path, Options(), emulate="gfx942").status == EXIT_OK


@pytest.mark.parametrize("alone", [False, True])
@pytest.mark.parametrize("between", [False, True])
def test_a_queue_writing_apart_around_another_queues_bytes_is_no_race(between, alone, tmp_path):
    """Campaign 55: a queue copying to the start and the end of a buffer, another to its middle, were taken as a
    race (one queue's accesses were one span from the first byte to the last), so the buffer was never verified.
    Unordered writes over the same bytes still are a race. `alone`: the copies without the signal, whose write
    lands in another buffer."""
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        src, out = gpu.alloc(4096, "gtt", name="src"), gpu.alloc(64 << 10, "gtt", name="out")
        src.write(b"\x05" * 4096)
        qa, qb = gpu.sdma_queue(name="A"), gpu.sdma_queue(name="B")
        a, b = system.semaphore("a"), system.semaphore("b")
        qa.copy(out, src, 256).copy(out, src, 256, dst_offset=32 << 10)
        if alone:
            qa.submit()
        qa.signal(a, 1).submit()
        qb.copy(out, src, 256, dst_offset=(16 << 10) if between else (32 << 10) + 128).signal(b, 1).submit()
        a.wait(1)
        b.wait(1)
    assert (racy(path), hashed(path)) == (([], ["out"]) if between else ([("out", "A and B wrote it with nothing "
                                                                                   "ordering their writes")], []))


def test_fences_of_two_queues_into_words_far_apart_are_no_race(tmp_path):
    """A FENCE writes its dword, not its buffer from its address on: two queues fencing words 4 KiB apart do
    not race (the buffer was taken as racy, and the checkpoints of every later write to it left it out)."""
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        res, src = gpu.alloc(8192, "gtt", name="res"), gpu.alloc(4096, "gtt", name="src")
        qa, qb = gpu.sdma_queue(name="A"), gpu.sdma_queue(name="B")
        sa, sb = system.semaphore("sa"), system.semaphore("sb")
        qa.fence(res, 0x1111, offset=0).submit()
        qb.fence(res, 0x2222, offset=4096).signal(sb, 1).submit()
        qa.signal(sa, 1).submit()
        sa.wait(1)
        sb.wait(1)
        src.write(np.full(1024, 7, np.uint32))
        qa.copy(res, src, 4096, dst_offset=4096).signal(sa, 2).submit()
        sa.wait(2)
    assert racy(path) == [] and hashed(path).count("res") == 2


def test_a_race_of_a_queue_with_a_long_history_of_waits_is_found(tmp_path):
    """Campaign 59: after 2100 hand-offs B waited for (all seen complete), the search for what ordered B's FENCE
    after A's walked every one of B's past waits, ran out of steps and took that for ordered: X was hashed and
    every replay said DIVERGED. Waits the CPU knew passed when the other access was submitted cannot order it."""
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        x = gpu.alloc(4096, "gtt", name="X")
        qa, qb = gpu.sdma_queue(name="A"), gpu.sdma_queue(name="B", ring_size=1 << 20)
        qc = gpu.sdma_queue(name="C", ring_size=1 << 20)
        s, a, b = (system.semaphore(n) for n in "sab")
        for i in range(1, 2101):
            qc.signal(s, i)
            qb.wait(s, i)
        qc.submit()
        qb.submit()
        qb.sync()
        qc.sync()
        qb.fence(x, 0xB).signal(b, 1).submit()
        qa.fence(x, 0xA).signal(a, 1).submit()
        b.wait(1)
        a.wait(1)
    assert racy(path) == [("X", "B and A wrote it with nothing ordering their writes")]


@pytest.mark.parametrize("depth", [3, 8])
def test_a_race_behind_a_wait_whose_giver_is_too_deep_to_tell_is_a_race(depth, tmp_path):
    """Campaign 59: B waits for s, which C gives at once and the last of a chain of gated queues gives as well;
    past MAX_DEPTH the search could not tell which B saw and took B's FENCE for ordered after A's."""
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        x = gpu.alloc(4096, "gtt", name="X")
        g, s, a, b = (system.semaphore(n) for n in ("g", "s", "a", "b"))
        chain, prev = [gpu.sdma_queue(name=f"Q{i}") for i in range(depth)], g
        for i, q in enumerate(chain):
            nxt = system.semaphore(f"t{i}") if i < depth - 1 else s
            q.wait(prev, 1).signal(nxt, 1).submit()
            prev = nxt
        gpu.sdma_queue(name="C").signal(s, 1).submit()
        qa, qb = gpu.sdma_queue(name="A"), gpu.sdma_queue(name="B")
        qb.wait(s, 1).fence(x, 0xB).signal(b, 1).submit()
        qa.fence(x, 0xA).signal(a, 1).submit()
        a.wait(1)
        b.wait(1)
        g.signal(1)
        for q in chain:
            q.sync()
    assert [name for name, _ in racy(path)] == ["X"]


def test_what_is_copied_from_a_buffer_a_queue_destroyed_mid_copy_was_writing_is_racy(tmp_path, monkeypatch):
    """Campaign 111: a queue destroyed while its copies into `b` ran (past its wait, at no wait) ran what timing
    let it: here the first copy, not the second; another queue then copied the second half of `b` into `out`.
    The recorder took the destroy as ordering the two, hashed `out`, and a replay, whose destroyed queue runs on,
    said DIVERGED. What is copied from such bytes is decided by timing: `out` is racy. (Each copy here takes
    50 ms, and the emulator finishes the one under way before it destroys a queue.)"""
    from kfdtrace.driver.emulator.sdma_engine import SdmaEngine

    copy = SdmaEngine._copy_linear

    @functools.wraps(copy)  # (the engine passes a handler the fields its signature names)
    def slow(self, *args, **kwargs):
        time.sleep(0.05)
        return copy(self, *args, **kwargs)

    monkeypatch.setattr(SdmaEngine, "_copy_linear", slow)
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        go, done = system.semaphore("go"), system.semaphore("done")
        a, b = gpu.alloc(1 << 20, "gtt", name="a"), gpu.alloc(1 << 20, "gtt", name="b")
        a.fill(0x5A)
        busy = gpu.sdma_queue(name="busy")
        half = 1 << 19
        busy.wait(go, 1).copy(b, a, half).copy(b, a, half, dst_offset=half, src_offset=half).signal(done, 1).submit()
        standing = busy.rptr
        go.signal(1)
        deadline = time.monotonic() + 10
        while busy.rptr == standing and time.monotonic() < deadline:  # past its wait: copying
            time.sleep(0.001)
        busy.destroy()
        after, out = gpu.sdma_queue(name="after"), gpu.alloc(4096, "gtt", name="out")
        after.copy(out, b, 4096, src_offset=half).signal(done, 2).submit()
        done.wait(2)
        assert not any(out.read())  # (the second copy never ran)
    assert ("out", "after wrote it from b, which busy wrote with nothing ordering the two") in racy(path)
    assert "out" not in hashed(path)
    report = replay_trace(path, Options(), emulate="gfx942")
    assert report.status == EXIT_OK, report.lines()


@pytest.mark.parametrize("wait_first", [True, False])
def test_a_wait_inside_an_indirect_buffer_orders_what_comes_after_it_there(wait_first, tmp_path):
    """Campaign 112: an indirect buffer waits for `x`, which another queue signals once it has filled `src`, then
    copies `src` into `out`. Its waits and accesses were all placed where the call ends, so the wait ordered
    none of them: `out` was taken for racy and never checked. With the copy before the wait, it is a race."""
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        out, src, ib = (gpu.alloc(4096, "gtt", name=n) for n in ("out", "src", "ib"))
        x, done = system.semaphore("x"), system.semaphore("done")
        builder = gpu.compute_queue(name="builder")
        if wait_first:
            builder.wait(x, 1).copy_data(out, src, size=8)
        else:
            builder.copy_data(out, src, size=8).wait(x, 1)
        body = b"".join(builder.discard())
        ib.write(body)
        q, sd = gpu.compute_queue(name="q"), gpu.sdma_queue(name="sd")
        q.indirect(ib, len(body)).signal(done, 1).submit()
        sd.fill(src, 0x5A5A5A5A, 64).signal(x, 1).submit()
        done.wait(1)
    if wait_first:
        assert racy(path) == [] and "out" in hashed(path)
        assert replay_trace(path, Options(timeout=5), emulate="gfx942").status == EXIT_OK
    else:
        assert [name for name, _ in racy(path)] == ["out"]


def test_a_queue_destroyed_at_a_wait_gives_none_of_the_signals_after_it(tmp_path):
    """Campaign 113: a queue destroyed standing at a wait still counted as maybe giving the signal after it, so a
    later wait for that semaphore showed nothing complete (the buffers stayed in flight at every checkpoint), and a
    GPU wait for it ordered nothing (racy): a trace tampered there replayed OK. Its signals never run."""
    path = str(tmp_path / "t.kfdtrace")
    n = 64 << 10
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        d, out = gpu.alloc(n, "gtt", name="d"), gpu.alloc(n, "gtt", name="out")
        q0, q1, q2 = gpu.sdma_queue(name="q0"), gpu.sdma_queue(name="q1"), gpu.sdma_queue(name="q2")
        t, never = system.semaphore("t"), system.semaphore("never")
        q1.wait(never, 1).fill(d, 0xDEADBEEF, n).signal(t, 99).submit()
        q0.fill(d, 0x01010101, n).signal(t, 1).submit()
        t.wait(1)
        while not q1.waiting:  # (it stands at the wait)
            time.sleep(0.001)
        q1.destroy()
        never.signal(1)  # (nothing runs of it now)
        q0.fill(d, 0x02020202, n).signal(t, 2).submit()
        q2.wait(t, 2).copy(out, d, n).signal(t, 3).submit()
        t.wait(3)
    last = checkpoints(path)[-1]
    assert {b["name"] for b in last["buffers"]} == {"d", "out"} and not last["in_flight"] and not last["racy"], last


@pytest.mark.parametrize("signal_last", [True, False])
def test_the_last_signals_inside_an_indirect_buffer_order_its_writes_before_them(signal_last, tmp_path):
    """Campaign 112 (w15): an indirect buffer fills `src`, then signals `x` (a mailbox, then the semaphore's
    words), which another queue waits for before it copies `src` into `out`. Its signals were all placed where
    the call starts, so seeing them showed none of its writes done: `out` was taken for racy and never checked.
    With the fill after the signal, it is a race."""
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        out, src, ib = (gpu.alloc(4096, "gtt", name=n) for n in ("out", "src", "ib"))
        x, done = system.semaphore("x"), system.semaphore("done")
        builder = gpu.compute_queue(name="builder")
        if signal_last:
            builder.write_data(src, b"\x5a" * 8).signal(x, 1)
        else:
            builder.signal(x, 1).write_data(src, b"\x5a" * 8)
        body = b"".join(builder.discard())
        ib.write(body)
        q, sd = gpu.compute_queue(name="q"), gpu.sdma_queue(name="sd")
        sd.wait(x, 1).copy(out, src, 8).signal(done, 1).submit()
        q.indirect(ib, len(body)).submit()
        done.wait(1)
    if signal_last:
        assert racy(path) == [] and "out" in hashed(path)
        assert replay_trace(path, Options(timeout=5), emulate="gfx942").status == EXIT_OK
    else:
        assert [name for name, _ in racy(path)] == ["out"]


def test_what_another_queue_copies_from_a_buffer_a_race_decided_is_racy_too(tmp_path):
    """Campaign 114: B copies `x` into `y` while A fills `x` (a race), then C, ordered after B, copies `y` into
    `hout`. The race is found at the checkpoint, after C's copy was submitted, so `hout` was hashed as well as
    left out: its contents depend on the race as `y`'s do, and replays said DIVERGED one time in four."""
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        x, y, hout, out2 = (gpu.alloc(4096, "gtt", name=n) for n in ("x", "y", "hout", "out2"))
        qa, qb, qc = gpu.sdma_queue(name="A"), gpu.sdma_queue(name="B"), gpu.sdma_queue(name="C")
        s, done = system.semaphore("s"), system.semaphore("done")
        qb.copy(y, x, 4096).signal(s, 1).submit()
        qa.fill(x, 0x01010101, 4096).submit()
        qc.wait(s, 1).copy(hout, y, 4096).copy(out2, hout, 64).signal(done, 1).submit()
        done.wait(1)
        hout.read(0, 4)
    assert sorted(name for name, _ in racy(path)) == ["hout", "out2", "y"], racy(path)
    assert not {"hout", "out2", "y"} & set(hashed(path))
