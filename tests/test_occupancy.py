"""Replay occupancy: each queue's busy time and the overlap, from a sampler driven by hand on fake queues, and
from replays of the overlap workload (copy in, a kernel between semaphores, copy out)."""

from __future__ import annotations

import json
import threading
import time

import pytest

from kfdtrace.driver import System
from kfdtrace.driver import kfd_ioctl as K
from kfdtrace.replay.engine import EXIT_OK, Options
from kfdtrace.replay.occupancy import Sampler, queue_label
from kfdtrace.replay.session import replay_trace
from tests.test_compute_replay import overlap
from tests.test_replay import replay


class FakeQueue:
    """A queue busy at the clock's times in `busy` (half-open [start, end) spans), its read pointer the spans
    it has finished; reading it once destroyed is an error."""

    def __init__(self, clock: list[float], busy: list[tuple[float, float]]):
        self.clock, self.busy, self.destroyed = clock, busy, False

    @property
    def idle(self) -> bool:
        assert not self.destroyed, "a destroyed queue was sampled"
        return not any(a <= self.clock[0] < b for a, b in self.busy)

    @property
    def rptr(self) -> int:
        assert not self.destroyed, "a destroyed queue was sampled"
        return sum(b <= self.clock[0] for _, b in self.busy)


def run_schedule(sampler: Sampler, clock: list[float], until: int) -> None:
    for t in range(until + 1):
        clock[0] = t
        sampler.sample()


def test_busy_times_intervals_and_overlap_on_a_schedule():
    clock = [0.0]
    sampler = Sampler(clock=lambda: clock[0])
    sampler.watch("queue 0 (sdma)", FakeQueue(clock, [(1, 5), (6, 7)]))
    sampler.watch("queue 1 (pm4)", FakeQueue(clock, [(3, 8)]))
    sampler.watch("queue 2 (sdma)", FakeQueue(clock, []))
    run_schedule(sampler, clock, 10)
    occ = sampler.occupancy
    assert [(q.label, q.busy_s, q.intervals) for q in occ.queues] == [
        ("queue 0 (sdma)", 5, 2), ("queue 1 (pm4)", 5, 1), ("queue 2 (sdma)", 0, 0)]
    assert (occ.seconds, occ.samples) == (10, 11)
    assert occ.overlap == pytest.approx(0.3)  # [3, 5) and [6, 7)
    assert occ.busy_any == pytest.approx(0.7)  # [1, 8)


def test_a_span_between_two_samples_counts_as_an_interval_without_busy_time():
    clock = [0.0]
    sampler = Sampler(clock=lambda: clock[0])
    sampler.watch("queue 0 (sdma)", FakeQueue(clock, [(1.2, 1.5), (3, 4), (4.2, 4.4)]))
    run_schedule(sampler, clock, 6)
    (q,) = sampler.occupancy.queues
    assert (q.busy_s, q.intervals) == (1, 3)  # [3, 4) seen by the sample at 3; the others by none


def test_an_unwatched_queue_keeps_its_figures_and_is_never_read_again():
    clock = [0.0]
    sampler = Sampler(clock=lambda: clock[0])
    gone, stays = FakeQueue(clock, [(0, 10)]), FakeQueue(clock, [(0, 10)])
    sampler.watch("queue 0 (sdma)", gone)
    sampler.watch("queue 1 (aql)", stays)
    run_schedule(sampler, clock, 2)
    sampler.unwatch(gone)
    gone.destroyed = True
    for t in (3, 4):
        clock[0] = t
        sampler.sample()
    busy = {q.label: q.busy_s for q in sampler.occupancy.queues}
    assert busy == {"queue 0 (sdma)": 3, "queue 1 (aql)": 4}  # held until the sample after it went
    assert sampler.occupancy.overlap == pytest.approx(3 / 4)


def test_a_recorded_id_and_kind_name_one_track_across_recreations():
    clock = [0.0]
    sampler = Sampler(clock=lambda: clock[0])
    first = FakeQueue(clock, [(0, 1)])
    sampler.watch(queue_label({"queue": 3, "type": K.QueueType.SDMA}), first)
    run_schedule(sampler, clock, 1)
    sampler.unwatch(first)
    sampler.watch(queue_label({"queue": 3, "type": K.QueueType.SDMA}), FakeQueue(clock, [(2, 3)]))
    for t in (2, 3):
        clock[0] = t
        sampler.sample()
    (track,) = sampler.occupancy.queues
    assert (track.label, track.busy_s, track.intervals) == ("queue 3 (sdma)", 2, 2)
    assert queue_label({"queue": 1, "type": K.QueueType.COMPUTE}) == "queue 1 (pm4)"
    assert queue_label({"queue": 0, "type": K.QueueType.COMPUTE_AQL}) == "queue 0 (aql)"
    # replayed on the other kind of queue (--queue-type), as helper 33 asked: the label says so
    assert queue_label({"queue": 0, "type": K.QueueType.COMPUTE_AQL}, "pm4") == "queue 0 (aql on pm4)"
    assert queue_label({"queue": 0, "type": K.QueueType.COMPUTE_AQL}, "aql") == "queue 0 (aql)"


def test_the_thread_never_reads_a_queue_after_unwatch():
    """Queues come and go while the thread samples; each is marked destroyed right after unwatch returns."""
    clock = [0.5]
    sampler = Sampler(period=0)
    errors: list[BaseException] = []
    threading.excepthook, hook = (lambda args: errors.append(args.exc_value)), threading.excepthook
    try:
        sampler.start()
        for i in range(2000):
            q = FakeQueue(clock, [(0, 1)])
            sampler.watch(f"queue {i % 4} (sdma)", q)
            sampler.unwatch(q)
            q.destroyed = True
        occ = sampler.stop()
    finally:
        threading.excepthook = hook
    assert not errors and occ.samples >= 2
    assert 0 <= occ.overlap <= occ.busy_any <= 1


@pytest.fixture(scope="module")
def overlap_trace(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("occupancy") / "overlap.kfdtrace")
    overlap(path, "gfx90a")
    return path


def check_occupancy(loops: list[list[dict]]) -> None:
    """Each loop's instance names the trace's 3 queues, each with work, and sane fractions: the kernel's queue
    busy; the copy out waits for it (its copy may take less than a sample); copy in may run within its doorbell
    call, busy and waiting for no sample."""
    assert len(loops) == 2
    for (run,) in loops:
        occ = run["occupancy"]
        assert sorted(q["label"] for q in occ["queues"]) == ["queue 0 (sdma)", "queue 1 (pm4)", "queue 2 (sdma)"]
        queues = {q["label"]: q for q in occ["queues"]}
        assert all(q["intervals"] >= 1 or q["waiting_s"] > 0 for q in queues.values()), queues
        assert queues["queue 1 (pm4)"]["busy_s"] > 0 and queues["queue 2 (sdma)"]["waiting_s"] > 0, queues
        assert 0 <= occ["overlap"] <= occ["busy_any"] <= 1
        assert occ["seconds"] > 0


def test_a_replay_reports_each_loops_queues_and_overlap(overlap_trace):
    report = replay_trace(overlap_trace, Options(), emulate_recorded=True, loops=2)
    assert report.status == EXIT_OK, report.lines()
    check_occupancy(report.to_dict()["loops"])
    lines = [line for line in report.lines() if " queues: overlap " in line]
    assert [line.split()[1] for line in lines] == ["1", "2"]
    assert all("queue 1 (pm4)" in line for line in lines)


def test_the_cli_prints_the_occupancy_in_its_json(overlap_trace):
    out = replay(overlap_trace, "--json", "--emulate-recorded", "--loop", "2")
    assert out.returncode == EXIT_OK, out.stderr
    check_occupancy(json.loads(out.stdout)["loops"])


class WaitingQueue(FakeQueue):
    """A fake queue that stands at a wait during the spans in `waits` (inside its busy spans)."""

    def __init__(self, clock: list[float], busy: list[tuple[float, float]], waits: list[tuple[float, float]]):
        super().__init__(clock, busy)
        self.waits = waits

    @property
    def waiting(self) -> bool:
        return any(a <= self.clock[0] < b for a, b in self.waits)


def test_a_queue_standing_at_a_wait_is_not_busy_and_makes_no_overlap():
    clock = [0.0]
    sampler = Sampler(clock=lambda: clock[0])
    sampler.watch("queue 0 (pm4)", FakeQueue(clock, [(2, 6)]))
    sampler.watch("queue 1 (sdma)", WaitingQueue(clock, [(1, 7)], [(1, 6)]))  # waits for queue 0, then copies
    run_schedule(sampler, clock, 8)
    occ = sampler.occupancy
    assert [(q.label, q.busy_s, q.waiting_s) for q in occ.queues] == [("queue 0 (pm4)", 4, 0),
                                                                      ("queue 1 (sdma)", 1, 5)]
    assert occ.overlap == 0 and occ.busy_any == pytest.approx(5 / 8)


def soon(condition, timeout: float = 10.0) -> bool:
    """Whether `condition()` comes true within `timeout` s (an emulated engine reaches its packet on its own)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def test_a_ring_queue_says_it_waits_at_a_poll():
    """RingQueue.waiting reads the packet at the read pointer through the tables: a poll is a wait."""

    with System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        sem = system.semaphore("gate")
        q = gpu.sdma_queue(name="waits")
        q.wait(sem, 1).submit()
        assert soon(lambda: q.waiting) and not q.idle
        sem.signal(1)
        q.sync(timeout=10)
        assert q.idle and not q.waiting


def test_an_aql_queue_waits_at_a_barrier():
    from kfdtrace.driver.aql_queue import HsaSignal
    from kfdtrace.replay.compute import AqlRing

    with System.open(emulate="gfx942") as system:
        q = system.devices[0].aql_queue(name="waits")
        ring, dep = AqlRing(q, 10.0), HsaSignal(system, 1, name="dep")
        q.barrier_and([dep])
        assert soon(lambda: ring.waiting) and not ring.idle
        dep.signal(0)
        q.sync(timeout=10)
        assert ring.idle and not ring.waiting
        dep.free()
