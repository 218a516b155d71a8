"""Capture under load: exact checkpoints (only complete work is hashed), completion along semaphore chains and
events, threads, large CPU writes, and queue lifecycles."""

from __future__ import annotations

import bisect
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kfdtrace.capture import record
from kfdtrace.capture.completion import Completion, QueueProgress
from kfdtrace.capture.memory import TrackedBuffer
from kfdtrace.capture.recorder import RecordingSyscalls
from kfdtrace.capture.submissions import Analyzer
from kfdtrace.driver import System
from kfdtrace.driver.pm4 import DIALECTS as PM4_DIALECTS
from kfdtrace.driver.ranges import RangeMap
from kfdtrace.driver.sdma import DIALECTS, PollFunc
from kfdtrace.replay.engine import EXIT_OK, Options
from kfdtrace.replay.session import replay_trace
from kfdtrace.traces.format import TraceReader
from kfdtrace.traces.semaphores import pair_signals, pair_waits, semaphore_facts
from tests.test_sdma_packets import _values


def records(path, *types):
    with TraceReader(path) as r:
        return [rec for rec in r.records(set(types) if types else None)]


def checkpoint_names(rec) -> tuple[list[str], list[str]]:
    return sorted(b["name"] for b in rec.fields["buffers"]), sorted(b["name"] for b in rec.fields["in_flight"])


def test_plans_pair_dword_signals_and_waits_into_64_bit_values():
    d = DIALECTS["sdma6"]
    sem, out = 0x10000, 0x20000
    value = (1 << 32) + 5
    ring = b"".join([
        d.build("POLL_REGMEM", addr=sem + 4, ref=1, mask=0xFFFFFFFF, func=PollFunc.GE, mem_poll=1),
        d.build("POLL_REGMEM", addr=sem, ref=5, mask=0xFFFFFFFF, func=PollFunc.GE, mem_poll=1),
        d.build("COPY_LINEAR", count=255, src=out, dst=out + 256),
        d.build("FENCE", addr=sem + 8, data=value & 0xFFFFFFFF), d.build("FENCE", addr=sem + 12, data=value >> 32),
        d.build("TRAP", int_context=42),
    ])
    analyzer = Analyzer()
    ends = [p.offset + p.size for p in d.iter_packets(ring)]
    for _ in range(2):  # the second time from the cached plan
        plan, inner = analyzer.analyse(d, ring, lambda a, n: None)
        signals, waits, written, referenced, _ = plan.facts(ring, 0x1000)
        assert inner is None
        assert waits == [(0x1000 + ends[1], sem, value)]
        assert signals == [(0x1000 + ends[4], sem + 8, value)]
        assert (ends[2], out + 256, 256) in written  # COPY_LINEAR's count: bytes - 1
        assert {sem, sem + 4, out, out + 256} <= set(referenced)


def test_a_64_bit_wait_tells_the_value_memory_reached_as_a_pair_of_polls_does():
    """Campaign 73: WAIT_REG_MEM64's 64-bit reference made the plan refuse the submission as undecodable, so
    nothing it wrote was ever checkpointed."""
    d = PM4_DIALECTS["gfx11"]
    sem, value = 0x10000, (3 << 32) + 5
    ring = b"".join([d.build("WAIT_REG_MEM64", function=5, mem_space=1, addr=sem, reference=value,
                             mask=(1 << 64) - 1),
                     d.build("WAIT_REG_MEM64", function=5, mem_space=1, addr=sem + 8, reference=value, mask=1)])
    end = next(iter(d.iter_packets(ring))).size
    plan, _ = Analyzer().analyse(d, ring, lambda a, n: None)
    assert plan.facts(ring, 0)[1] == [(end, sem, value)]  # the second compares one bit: it tells nothing
    assert semaphore_facts(list(d.iter_packets(ring)))[1] == [(0, sem, value)]


@settings(max_examples=60, deadline=None)
@given(kinds=st.lists(st.sampled_from(["fence", "poll"]), min_size=1, max_size=8), data=st.data())
def test_a_plan_pairs_as_the_general_pairing_does_for_any_addresses(kinds, data):
    """Plans pair dword signals and waits straight when they come as the driver writes them; for any other
    addresses the same plan gives what pairing the dwords one by one gives."""
    d = DIALECTS["sdma6"]
    base = 0x40000
    funcs = [data.draw(st.sampled_from([PollFunc.GE, PollFunc.EQ, PollFunc.LT])) for _ in kinds]  # in the shape
    analyzer, plan = Analyzer(), None
    for _ in range(4):  # one shape, new addresses each time: adjacent pairs, or not
        packets, raw_signals, raw_waits, pos = [], [], [], 0
        for kind, func in zip(kinds, funcs, strict=True):
            addr = base + 4 * data.draw(st.integers(0, 5))
            value = data.draw(st.integers(0, 0xFFFFFFFF))
            if kind == "fence":
                packets.append(d.build("FENCE", addr=addr, data=value))
                pos += len(packets[-1])
                raw_signals.append((pos, addr, value))
            else:
                packets.append(d.build("POLL_REGMEM", addr=addr, ref=value, mask=0xFFFFFFFF, func=func,
                                       mem_poll=1))
                pos += len(packets[-1])
                raw_waits.append((pos, addr, value, func in (PollFunc.GE, PollFunc.EQ)))
        ring = b"".join(packets)
        got, _ = analyzer.analyse(d, ring, lambda a, n: None)
        assert plan is None or got is plan
        plan = got
        signals, waits, *_ = plan.facts(ring, 0)
        assert signals == pair_signals(raw_signals) and waits == pair_waits(raw_waits)


def _wide_wait(d) -> bool:
    """A packet waiting for a reference of more than 32 bits (WAIT_REG_MEM64), which plans refuse."""
    return d.wait is not None and sum(m.bit_length() for _, _, m, _ in d.parts(d.wait[1])) > 32


PLANNED = [d for d in [*DIALECTS.values(), *PM4_DIALECTS.values()] if any(p.address_fields for p in d)]


@pytest.mark.parametrize("dialect", PLANNED, ids=[d.name for d in PLANNED])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_a_plan_finds_the_addresses_decoding_finds(dialect, data):
    """Whatever packets a submission holds (every definition with addresses, any field values), its plan gives
    the addresses decoding its packets gives, in order, written and read alike (plans read 64-bit addresses whole
    where they can, and dword by dword where not)."""
    defs = [d for d in dialect if d.address_fields and d.indirect is None and not _wide_wait(d)]
    ring = b""
    for defn in data.draw(st.lists(st.sampled_from(defs), min_size=1, max_size=4)):
        fields, payload = _values(data.draw, defn)
        ring += dialect.build(defn.name, payload, **fields)
    packets = list(dialect.iter_packets(ring))
    for _ in range(2):  # the second time from the cached plan
        plan, _ = Analyzer().analyse(dialect, ring, lambda a, n: None)
        _, _, written, referenced, read = plan.facts(ring, 0)
        assert list(referenced) == [a for p in packets for a in p.addresses().values()]
        assert sorted(a for _, a, _ in (*written, *read)) == sorted(referenced)
        assert {a for _, a, _ in written} == {a for p in packets for a in p.written_addresses()}
        assert plan.written(ring, 0x40) == plan.facts(ring, 0, 0x40)[2]  # what plain runs are learnt from


def test_a_plan_serves_every_submission_of_its_shape_with_that_submission_s_addresses():
    d = DIALECTS["sdma4.4"]

    def ring(base: int) -> bytes:
        return b"".join([d.build("COPY_LINEAR", count=63, src=base, dst=base + 0x1000),
                         d.build("FENCE", addr=base + 0x2000, data=base & 0xFFFF),
                         d.build("FENCE", addr=base + 0x2004, data=7)])

    analyzer = Analyzer()
    first, _ = analyzer.analyse(d, ring(0x7F00_0000_0000), lambda a, n: None)
    plan, _ = analyzer.analyse(d, ring(0x5500_0004_0000), lambda a, n: None)
    assert plan is first  # same packets, new addresses: the shape's plan
    signals, _, written, referenced, _ = plan.facts(ring(0x5500_0004_0000), 0)
    assert [a for _, a, _ in written] == [0x5500_0004_1000, 0x5500_0004_2000, 0x5500_0004_2004]
    end = len(ring(0))
    assert signals == [(end, 0x5500_0004_2000, 7 << 32)]  # the two dwords paired into one 64-bit value
    assert referenced[:2] == (0x5500_0004_0000, 0x5500_0004_1000)
    fence = len(d.build("FENCE", addr=0, data=0))
    other, _ = analyzer.analyse(d, ring(0x7F00_0000_0000)[:-fence] + d.build("TRAP", int_context=3),
                                lambda a, n: None)
    assert other is not first  # another packet: another shape


def test_a_thread_started_after_another_ended_is_a_thread_of_its_own(tmp_path):
    """A finished thread's ident is often given to the next thread started: records still name the thread that
    made them."""
    path = str(tmp_path / "seq.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]

        def work() -> None:
            gpu.alloc(4096, "gtt", name=threading.current_thread().name).free()

        for k in range(3):
            t = threading.Thread(target=work, name=f"seq{k}")
            t.start()
            t.join()
    with TraceReader(path) as r:
        names = {rec.fields["tid"]: rec.fields["name"] for rec in r.records({"thread"})}
        allocs = {rec.fields["tid"]: rec.fields["name"] for rec in r.records({"buffer"})
                  if rec.fields["name"].startswith("seq")}
    assert {names[tid]: name for tid, name in allocs.items()} == {f"seq{k}": f"seq{k}" for k in range(3)}


def test_a_tail_count_is_part_of_the_shape():
    """sdma7's COPY_LINEAR has a DCC word exactly when CPV is set: the same packets with CPV set or clear are
    two shapes, each with its own positions."""
    d = DIALECTS["sdma7"]
    copy = {"count": 63, "src": 0x10000, "dst": 0x20000}

    def ring(cpv: int) -> bytes:
        return d.build("COPY_LINEAR", bytes(4 * cpv), cpv=cpv, **copy) + d.build("FENCE", addr=0x30000, data=1)

    analyzer = Analyzer()
    plans = {cpv: analyzer.analyse(d, ring(cpv), lambda a, n: None)[0] for cpv in (0, 1, 0, 1)}
    assert plans[0] is not plans[1] and len(analyzer._plans) == 2  # both remembered
    for cpv, plan in plans.items():
        written = plan.facts(ring(cpv), 0)[2]
        assert written == ((28 + 4 * cpv, 0x20000, 64), (44 + 4 * cpv, 0x30000, 4))  # a FENCE writes its dword


def test_completion_flows_along_a_semaphore_chain():
    c, q1, q2 = Completion(), QueueProgress("q1"), QueueProgress("q2")
    c.submitted(q1, [(100, 0xA000, 3)], [], [])
    c.submitted(q2, [(300, 0xB000, 9)], [(200, 0xA000, 3)], [])
    c.observed(0xB000, 10)  # a value nobody signals: whatever wrote it is not known
    assert (q1.done, q2.done) == (0, 0)
    c.observed(0xB000, 8)  # 8 or more: only q2's 9 gives that
    assert (q1.done, q2.done) == (100, 300)


def test_a_queue_waiting_on_a_semaphore_it_signals_after_the_wait_learns_from_the_others():
    """q2 waits for 1, then signals 2 on the same semaphore: its own 2 came after its wait, which saw q1's 1."""
    c, q1, q2 = Completion(), QueueProgress("q1"), QueueProgress("q2")
    c.submitted(q1, [(100, 0xA000, 1)], [], [])
    c.submitted(q2, [(300, 0xA000, 2)], [(200, 0xA000, 1)], [])
    c.observed(0xA000, 2)
    assert (q1.done, q2.done) == (100, 300)


def test_a_queue_waiting_for_a_value_it_signalled_itself_shows_nothing_of_the_others():
    c, q1, q2 = Completion(), QueueProgress("q1"), QueueProgress("q2")
    c.submitted(q1, [(100, 0xA000, 1)], [], [])
    c.submitted(q2, [(150, 0xA000, 5), (300, 0xB000, 1)], [(200, 0xA000, 1)], [])
    c.observed(0xB000, 1)
    assert (q1.done, q2.done) == (0, 300)


def test_a_lower_value_signalled_by_another_queue_is_not_shown_landed_by_a_higher_one():
    """Campaign 47's bug03: A fills a big buffer and signals 1, B signals 2 unordered; seeing 2 says nothing of A
    (its 1 may land after, moving the semaphore back)."""
    c, a, b = Completion(), QueueProgress("a"), QueueProgress("b")
    c.submitted(a, [(100, 0xA000, 1)], [], [])
    c.submitted(b, [(40, 0xA000, 2)], [], [])
    c.observed(0xA000, 2)
    assert (a.done, b.done) == (0, 40)
    c.stored(0xA000, 5, backwards=False)  # the CPU signals ahead, then waits for less: it may see its own 5
    c.submitted(a, [(200, 0xA000, 3)], [], [])
    c.observed(0xA000, 4)
    assert a.done == 0


def test_a_reset_address_forgets_the_signals_of_its_earlier_life():
    c, old, new = Completion(), QueueProgress("old"), QueueProgress("new")
    c.submitted(old, [(100, 0xA000, 1)], [], [])
    c.observed(0xA000, 1)
    c.stored(0xA000, 0, backwards=True)  # the slot is handed to a new semaphore, reset to 0 by the CPU
    c.submitted(new, [(40, 0xA000, 1)], [], [])
    c.observed(0xA000, 1)
    assert (old.done, new.done) == (100, 40)


def test_a_signal_still_pending_when_its_address_is_reset_may_be_what_a_later_wait_sees():
    c, old, new = Completion(), QueueProgress("old"), QueueProgress("new")
    c.submitted(old, [(100, 0xA000, 1)], [], [])
    c.stored(0xA000, 0, backwards=True)  # old's signal may land after the reset
    c.submitted(new, [(40, 0xA000, 1)], [], [])
    c.observed(0xA000, 1)
    assert (old.done, new.done) == (0, 0)


def test_a_value_two_queues_signal_shows_neither_complete_when_seen():
    """Two producers signal ready=1: seeing 1 tells that one of them landed, not which (helper 33's w07)."""
    c, a, b = Completion(), QueueProgress("a"), QueueProgress("b")
    c.submitted(b, [(100, 0xA000, 1)], [], [])
    c.submitted(a, [(50, 0xA000, 1)], [], [])
    c.observed(0xA000, 1)
    assert (a.done, b.done) == (0, 0)
    c.observed(0xA000, 2)  # nobody signals 2: which wrote it is not known (nor that the 1s landed)
    assert (a.done, b.done) == (0, 0)


def test_a_value_signalled_again_after_it_was_reached_shows_nothing_when_seen():
    c, a = Completion(), QueueProgress("a")
    c.submitted(a, [(10, 0xA000, 1)], [], [])
    c.observed(0xA000, 1)
    assert a.done == 10
    c.submitted(a, [(90, 0xA000, 1)], [], [])  # 1 again: the semaphore already holds it (helper 33's w06)
    c.observed(0xA000, 1)
    assert a.done == 10
    c.stored(0xB000, 5, backwards=False)  # the CPU stores 5, then a queue signals 5 too
    c.submitted(a, [(120, 0xB000, 5)], [], [])
    c.observed(0xB000, 5)
    assert a.done == 10


def test_one_queue_signalling_a_value_twice_shows_its_first_signal_when_seen():
    c, a = Completion(), QueueProgress("a")
    c.submitted(a, [(10, 0xA000, 1), (30, 0xA000, 1)], [], [])
    c.observed(0xA000, 1)
    assert a.done == 10


def test_an_aql_signal_set_again_while_an_earlier_decrement_is_pending_counts_none():
    """Campaign 49's bug03: x's packet decrementing s is pending when the CPU sets s to 1 and y submits one more;
    s at 0 may be x's doing or y's, yet the count since the store (1 of 1) took every pending one complete."""
    c, x, y = Completion(), QueueProgress("x"), QueueProgress("y")
    c.decrements(x, 100, 0xA000)
    c.stored(0xA000, 1, backwards=False)
    c.decrements(y, 50, 0xA000)
    c.reached_zero(0xA000)
    assert (x.done, y.done) == (0, 0)
    c.stored(0xB000, 1, backwards=False)  # nothing pending there: the one decrement since is what took it to 0
    c.decrements(y, 80, 0xB000)
    c.decrements(x, 120, 0xB000, shows=False)
    c.reached_zero(0xB000)  # two pending, one of them without the barrier bit: which one did is not known
    assert (x.done, y.done) == (0, 0)


def test_event_wait_completes_the_only_queue_with_that_trap():
    c, q1, q2 = Completion(), QueueProgress("q1"), QueueProgress("q2")
    c.submitted(q1, [], [], [(50, 7), (90, 7)])
    c.submitted(q2, [], [], [(60, 8)])
    c.event_fired(7, [q1, q2])
    assert (q1.done, q2.done) == (50, 0)
    c.submitted(q2, [], [], [(70, 7)])
    c.event_fired(7, [q1, q2])  # two queues could have raised it: nothing is known
    assert (q1.done, q2.done) == (50, 0)


def test_a_manual_reset_event_waited_again_shows_nothing_new():
    """helper 34's w01: a manual-reset event stays set, so its second wait returned at once, yet counted as the
    second TRAP having run."""
    c, q = Completion(), QueueProgress("q")
    c.event_created(7, auto_reset=False)
    c.submitted(q, [], [], [(50, 7), (90, 7)])
    c.event_fired(7, [q])
    assert q.done == 50
    c.event_fired(7, [q])  # still set since the first TRAP: no evidence of the second
    assert q.done == 50
    c.event_reset(7)
    c.event_fired(7, [q])
    assert q.done == 90


def test_an_event_a_complete_trap_or_the_cpu_set_may_answer_the_next_wait():
    """helper 34's w02: the first TRAP was known complete by a semaphore, and the wait its setting answered was
    credited to the second."""
    c, q = Completion(), QueueProgress("q")
    c.event_created(7, auto_reset=True)
    c.submitted(q, [(20, 0xA000, 1)], [], [(10, 7), (90, 7)])
    c.observed(0xA000, 1)  # complete past the first TRAP, whose setting no wait has taken
    assert q.done == 20
    c.event_fired(7, [q])  # took the first TRAP's setting
    assert q.done == 20
    c.event_fired(7, [q])  # an auto-reset event: this one needed another TRAP
    assert q.done == 90
    c.event_created(8, auto_reset=True)
    c.event_set(8)  # set by the CPU
    c.submitted(q, [], [], [(120, 8)])
    c.event_fired(8, [q])
    assert q.done == 90


def test_a_buffer_another_queue_is_still_writing_is_in_flight_at_the_wait(tmp_path):
    path = str(tmp_path / "inflight.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        big, small, src = (gpu.alloc(n, "gtt", name=name) for n, name in
                           ((32 << 20, "big"), (4096, "small"), (4096, "src")))
        src.write(b"\x5a" * 4096)
        qa, qb = gpu.sdma_queue(name="a"), gpu.sdma_queue(name="b")
        a_done, b_done = system.semaphore("a"), system.semaphore("b")
        qa.fill(big, 0x01020304, 32 << 20).signal(a_done, 1).submit()
        qb.copy(small, src, 4096).signal(b_done, 1).submit()
        b_done.wait(1)
        a_done.wait(1)
    first, second = records(path, "checkpoint")
    assert checkpoint_names(first) == (["small"], ["big"])
    assert checkpoint_names(second) == (["big"], [])


@pytest.mark.parametrize("plain", [1, 40])
def test_writes_after_the_signal_a_wait_saw_are_in_flight_however_many_submissions_hold_them(plain, tmp_path):
    """The recorder learns a run of submissions that only copy as one (capture/recorder.py `_learn_pending`):
    their writes must stay placed in the queue's stream, after the signal the wait saw, and a buffer the run
    writes last is hashed only once a later signal shows the run complete."""
    path = str(tmp_path / "run.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        x, y, src = (gpu.alloc(4096, "gtt", name=name) for name in ("x", "y", "src"))
        src.write(b"\x5a" * 4096)
        q = gpu.sdma_queue()
        done = system.semaphore("done")
        q.copy(x, src, 64).submit()
        q.signal(done, 1).submit()
        for i in range(plain):
            q.copy(y, src, 64, dst_offset=64 * i).submit()
        q.copy(x, src, 64, dst_offset=64).submit()
        done.wait(1)
        q.signal(done, 2).submit()
        done.wait(2)
    first, second = records(path, "checkpoint")
    assert checkpoint_names(first) == ([], ["x", "y"])
    assert checkpoint_names(second) == (["x", "y"], [])


def test_a_finished_queue_s_writes_to_a_buffer_left_in_flight_are_not_taken_for_the_cpu_s(tmp_path):
    """Campaign 67: queue b fills the second half of a viewed buffer and is not waited for; queue a fills the
    first half, and after the wait for it, a's next submission had the buffer compared with what was last
    recorded: a's fill became `mem` records, which a replay puts back over whatever its GPU wrote (a trace with
    that fill's value changed replayed OK)."""
    path = str(tmp_path / "halves.kfdtrace")
    n = 1 << 20
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        qa, qb = gpu.sdma_queue(name="a"), gpu.sdma_queue(name="b")
        big, out = gpu.alloc(n, "gtt", name="big"), gpu.alloc(n // 2, "gtt", name="out")
        big.numpy()  # a raw view: compared before each submission that uses it
        sa, sb = system.semaphore("a"), system.semaphore("b")
        qb.fill(big, 0x55555555, n // 2, offset=n // 2).signal(sb, 1).submit()
        qa.fill(big, 0xDEADBEEF, n // 2).signal(sa, 1).submit()
        sa.wait(1)
        qa.copy(out, big, n // 2).signal(sa, 2).submit()
        sa.wait(2)
        sb.wait(1)
        view = big.numpy()
        view[:4] = 7  # a CPU write after both: found and recorded
        qa.copy(out, big, 4).signal(sa, 3).submit()
        sa.wait(3)
    big_va = next(r.fields["va"] for r in records(path, "buffer") if r.fields["name"] == "big")
    after = records(path, "mem", "checkpoint")
    after = after[next(i for i, r in enumerate(after) if r.type == "checkpoint"):]  # once the fills were submitted
    assert [(r.fields["va"] - big_va, r.fields["size"]) for r in after
            if r.type == "mem" and big_va <= r.fields["va"] < big_va + n] == [(0, 16384)]


def test_a_cpu_write_into_a_chunk_a_queue_is_writing_is_recorded_as_the_bytes_written(tmp_path):
    """Campaign 67: `Buffer.write` of 4 bytes next to an unwaited fill's tail recorded the whole chunk as the CPU
    saw it, the fill's bytes not yet landed as zeros, and a replay wrote those zeros back over its own fill."""
    path = str(tmp_path / "tail.kfdtrace")
    n = 128 << 10
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        q, x, s = gpu.sdma_queue(), gpu.alloc(n, "gtt", name="x"), system.semaphore("s")
        q.fill(x, 0x11111111, n - 8).signal(s, 1).submit()
        x.write(b"\xab" * 4, n - 4)
        s.wait(1)
    x_va = next(r.fields["va"] for r in records(path, "buffer") if r.fields["name"] == "x")
    assert [(m.fields["va"] - x_va, m.fields["size"]) for m in records(path, "mem")
            if x_va <= m.fields["va"] < x_va + n] == [(n - 4, 4)]


def cpu_writes_after_the_first_doorbell(path: str, name: str) -> list[tuple[int, int]]:
    """(offset, size) of the `mem` records in buffer `name` after the trace's first doorbell."""
    buf = next(r.fields for r in records(path, "buffer") if r.fields["name"] == name)
    rest = records(path, "mem", "doorbell")
    rest = rest[next(i for i, r in enumerate(rest) if r.type == "doorbell"):]
    return [(r.fields["va"] - buf["va"], r.fields["size"]) for r in rest
            if r.type == "mem" and buf["va"] <= r.fields["va"] < buf["va"] + buf["size"]]


C = 16 << 10  # the default chunk


def test_a_cpu_write_into_a_chunk_a_finished_queue_wrote_keeps_its_results_out_of_cpu_writes(tmp_path):
    """Campaign 71: after a finished queue's chunk was keyed (another queue still writing the buffer), a
    `Buffer.write` there dropped the key, so the next view comparison recorded the queue's copy as a CPU write."""
    path = str(tmp_path / "keyed.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        qa, qb, qc = (gpu.sdma_queue(name=n) for n in "abc")
        big, src, out = gpu.alloc(4 * C, "gtt", name="big"), gpu.alloc(C, "gtt"), gpu.alloc(C, "gtt")
        src.write(bytes(range(256)) * (C // 256))
        view = big.numpy()
        sa, sb, sc, gate = (system.semaphore(n) for n in ("a", "b", "c", "gate"))
        qb.wait(gate, 1).fill(big, 0x55555555, C, offset=2 * C).signal(sb, 1).submit()
        qa.copy(big, src, C).signal(sa, 1).submit()
        sa.wait(1)
        view[C + 9] = 9  # through the view, in a chunk the next write touches: recorded before that write
        big.write(b"\x01\x02\x03\x04", C - 2)
        qc.copy(out, big, 64, src_offset=C).signal(sc, 1).submit()
        sc.wait(1)
        gate.signal(1)
        sb.wait(1)
    assert cpu_writes_after_the_first_doorbell(path, "big") == [(C, C), (C - 2, 2), (C, 2)]


def test_a_destroyed_queue_s_writes_are_not_taken_for_the_cpu_s(tmp_path):
    """Campaign 71: a queue seen idle and destroyed, no wait shown its copy complete: the next submission's view
    comparison recorded the copy as a CPU write."""
    import time

    path = str(tmp_path / "destroyed.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        qa, qc = gpu.sdma_queue(name="a"), gpu.sdma_queue(name="c")
        big, src, out = gpu.alloc(2 * C, "gtt", name="big"), gpu.alloc(C, "gtt"), gpu.alloc(C, "gtt")
        src.write(bytes(range(256)) * (C // 256))
        big.numpy()
        sc = system.semaphore("c")
        qa.copy(big, src, C).submit()
        while not qa.idle:
            time.sleep(0.01)
        qa.destroy()
        qc.copy(out, big, 64, src_offset=C).signal(sc, 1).submit()
        sc.wait(1)
    assert cpu_writes_after_the_first_doorbell(path, "big") == []


@pytest.mark.parametrize("finished", ["waited", "destroyed"])
def test_a_view_write_into_a_finished_queue_s_keyed_chunk_is_recorded(finished, tmp_path):
    """Campaign 75: once a finished (or destroyed) queue's chunk was keyed, a view write into it, made before the
    wait that hashed the buffer, was left out as if the GPU's, and the honest trace replayed DIVERGED."""
    import time

    path = str(tmp_path / "keyed.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        qa, qb = gpu.sdma_queue(name="a"), gpu.sdma_queue(name="b")
        big = gpu.alloc(4 * C, "gtt", name="big")
        view = big.numpy()
        sa, sb = system.semaphore("a"), system.semaphore("b")
        qb.fill(big, 0x22222222, 64, offset=3 * C).signal(sb, 1).submit()  # no wait shows it done till the end
        qa.fill(big, 0x11111111, 64).signal(sa, 1).submit()
        if finished == "waited":
            sa.wait(1)
        else:
            while not qa.idle:
                time.sleep(0.01)
            qa.destroy()
        view[100:116] = 7  # then no submission nor CPU signal compares the buffer: the wait's checkpoint must
        sb.wait(1)
    assert (0, C) in cpu_writes_after_the_first_doorbell(path, "big")
    from kfdtrace.replay.engine import EXIT_OK, Options
    from kfdtrace.replay.session import replay_trace
    assert replay_trace(path, Options(), emulate="gfx942").status == EXIT_OK


@pytest.mark.parametrize("wait", ["semaphore", "event"])
def test_a_view_write_before_the_wait_that_hashes_its_buffer_is_recorded(wait, tmp_path):
    """Campaign 71: a CPU write through a view into a chunk no queue writes, made after the last submission and
    before the wait whose checkpoint hashed the buffer, was hashed as the GPU's and never recorded."""
    path = str(tmp_path / "before.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        q, big = gpu.sdma_queue(), gpu.alloc(4 * C, "gtt", name="big")
        view = big.numpy()
        done = system.semaphore("done") if wait == "semaphore" else system.event()
        q.fill(big, 0x11111111, C)
        (q.signal(done, 1) if wait == "semaphore" else q.trap(done.id)).submit()
        view[2 * C:2 * C + 16] = 7
        done.wait(1) if wait == "semaphore" else done.wait()
    assert cpu_writes_after_the_first_doorbell(path, "big") == [(2 * C, C)]


def test_a_view_write_between_a_checkpoint_s_comparison_and_its_hash_is_not_hashed(tmp_path, monkeypatch):
    """Campaign 87: a checkpoint compared the chunks of a buffer no queue writes, recorded what views changed there,
    then read them again to hash them: another thread's view write in between was hashed, no record gave it, and
    the honest trace replayed DIVERGED. (The write is made at that moment here, as the other thread's landed.)"""
    from kfdtrace.capture.memory import MemoryRecorder

    hashing = MemoryRecorder.checkpoint_entry

    def meanwhile(self, buf, *args):
        if buf.name == "big":
            view[:16] = 5
        return hashing(self, buf, *args)

    monkeypatch.setattr(MemoryRecorder, "checkpoint_entry", meanwhile)
    path = str(tmp_path / "meanwhile.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        q, big = gpu.sdma_queue(), gpu.alloc(4 * C, "gtt", name="big")
        view = big.numpy()
        done = system.semaphore("done")
        q.fill(big, 0x11111111, 64, offset=2 * C).signal(done, 1).submit()
        done.wait(1)
    assert replay_trace(path, Options(), emulate="gfx942").status == EXIT_OK


def test_a_checkpoint_waits_for_a_store_another_thread_has_recorded(tmp_path, monkeypatch):
    """Campaign 87: `Buffer.write` records its bytes, then stores them (a large store without the GIL); a wait's
    checkpoint in another thread between the two hashed the bytes from before the store, which the trace gives
    before the checkpoint, and the honest trace replayed DIVERGED. The recorder now holds its lock till the store
    is made. (Here the store lets a checkpoint in for half a second, as another thread's could come.)"""
    import ctypes

    from kfdtrace.capture.memory import MemoryRecorder
    from kfdtrace.driver import memory

    storing, hashed = threading.Event(), threading.Event()

    class SlowStores:
        def __getattr__(self, name):
            return getattr(ctypes, name)

        @staticmethod
        def memmove(dst, src, n):
            storing.set()
            hashed.wait(0.5)
            return ctypes.memmove(dst, src, n)

    hashing = MemoryRecorder.checkpoint_entry

    def noted(self, buf, *args):
        entry = hashing(self, buf, *args)
        hashed.set()
        return entry

    monkeypatch.setattr(memory, "ctypes", SlowStores())
    monkeypatch.setattr(MemoryRecorder, "checkpoint_entry", noted)
    path = str(tmp_path / "store.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        q, shared = gpu.sdma_queue(), gpu.alloc(16 * C, "gtt", name="shared")
        done = system.semaphore("done")
        q.fill(shared, 0x11111111, 64, offset=12 * C).signal(done, 1).submit()
        writer = threading.Thread(target=shared.write, args=(b"\x07" * (8 * C),))
        writer.start()
        storing.wait(10)
        done.wait(1)
        writer.join()
    assert replay_trace(path, Options(), emulate="gfx942").status == EXIT_OK


@pytest.mark.parametrize("queue", ["sdma", "pm4"])
def test_an_inline_write_spans_its_data_not_the_rest_of_its_buffer(queue, tmp_path):
    """Campaign 71: WRITE_LINEAR and WRITE_DATA were taken to write from their address to the buffer's end, so a
    view write far past their 16 bytes was left out of comparisons as the GPU's, and never recorded."""
    path = str(tmp_path / "inline.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        w, other = gpu.compute_queue() if queue == "pm4" else gpu.sdma_queue(), gpu.sdma_queue()
        buf, out = gpu.alloc(4 * C, "gtt", name="buf"), gpu.alloc(4096, "gtt")
        view = buf.numpy()
        gate, s, t = system.semaphore("gate"), system.semaphore("s"), system.semaphore("t")
        w.wait(gate, 1).write_data(buf, b"\xde\xc0" * 8).signal(s, 1).submit()
        view[3 * C + 5] = 9
        other.copy(out, buf, 64, src_offset=3 * C).signal(t, 1).submit()
        t.wait(1)
        gate.signal(1)
        s.wait(1)
    assert cpu_writes_after_the_first_doorbell(path, "buf")[:1] == [(3 * C, C)]


@pytest.mark.parametrize("ahead", ["queue", "cpu"])
def test_a_higher_value_on_a_shared_semaphore_does_not_show_a_lower_signal_landed(ahead, tmp_path):
    """Campaign 47's bug03 and bug03b: queue a fills and signals 1 (or 3); queue b signals 2 (or the CPU 5) with
    nothing ordering the two; the CPU waits for 2 (or 4). Seeing that says nothing of a's fill: its signal may
    land later and move the semaphore back. It used to be hashed half written."""
    path = str(tmp_path / "shared.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        big, small, src = (gpu.alloc(n, "gtt", name=name) for n, name in
                           ((8 << 20, "big"), (4096, "small"), (4096, "src")))
        src.write(b"\x5a" * 4096)
        qa, qb = gpu.sdma_queue(name="a"), gpu.sdma_queue(name="b")
        shared, done = system.semaphore("shared"), system.semaphore("done")
        qa.fill(big, 0x01020304, 8 << 20).signal(shared, 1 if ahead == "queue" else 3).submit()
        if ahead == "queue":
            qb.copy(small, src, 4096).signal(shared, 2).submit()
            shared.wait(2)
        else:
            shared.signal(5)
            shared.wait(4)
        qa.signal(done, 1).submit()
        done.wait(1)
    first, second = records(path, "checkpoint")
    assert checkpoint_names(first) == (["small"] if ahead == "queue" else [], ["big"])
    assert checkpoint_names(second)[0] == ["big"]


@pytest.mark.parametrize("store", ["write", "view"])
def test_a_cpu_store_to_a_semaphore_word_in_a_buffer_may_be_what_a_wait_saw(store, tmp_path):
    """Campaign 49's bug01: a queue fills and then signals a semaphore over a word of a user buffer; the CPU stores
    that word itself (`write`, or through a view), so its wait returns at once. The wait was taken for the
    queue's signal, and the fill hashed half done."""
    from kfdtrace.driver.signals import Semaphore

    path = str(tmp_path / "store.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        big, words = gpu.alloc(8 << 20, "gtt", name="big"), gpu.alloc(4096, "gtt", name="words")
        flag, done = Semaphore.view(system, words, 0, name="flag"), system.semaphore("done")
        q = gpu.sdma_queue()
        q.fill(big, 0x01020304, 8 << 20).signal(flag, 1).submit()
        if store == "write":
            words.write((1).to_bytes(8, "little"))
        else:
            words.numpy(np.uint64)[0] = 1
        flag.wait(1)
        q.signal(done, 1).submit()
        done.wait(1)
    first, *_ = records(path, "checkpoint")
    assert "big" in checkpoint_names(first)[1]


def test_view_writes_beside_a_queues_pending_writes_in_one_buffer_are_recorded(tmp_path):
    """Campaign 49's bug05 and bug07: a queue fills a buffer's upper half while the CPU writes its lower half
    through a view and another queue copies that out; and a mailbox whose go flag the CPU sets through a view
    while the queue waiting for it is to FENCE into the same chunk. Buffers a queue may still be writing were
    left out of view scans whole: the copy replayed zeros, the mailbox hung."""
    from kfdtrace.driver.signals import Semaphore
    from kfdtrace.replay.engine import EXIT_OK, Options
    from kfdtrace.replay.session import replay_trace

    path, half = str(tmp_path / "halves.kfdtrace"), 4 << 20
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        d, out, box = gpu.alloc(2 * half, "gtt", name="d"), gpu.alloc(half, "gtt", name="out"), \
            gpu.alloc(4096, "gtt", name="mailbox")
        filler, copier, done, copied = gpu.sdma_queue(), gpu.sdma_queue(), system.semaphore("done"), \
            system.semaphore("copied")
        filler.fill(d, 0x77777777, half, offset=half).signal(done, 1).submit()
        d.numpy(np.uint32)[: half // 4] = 5
        copier.copy(out, d, half).signal(copied, 1).submit()
        copied.wait(1)
        assert (out.numpy(np.uint32) == 5).all()
        go, v = Semaphore.view(system, box, 0, name="go"), box.numpy(np.uint32)
        copier.wait(go, 1).fence(box, 0xC0FFEE, offset=64).signal(copied, 2).submit()
        v[0] = 1
        copied.wait(2, timeout=10)
        done.wait(1)
    report = replay_trace(path, Options(timeout=5), emulate="gfx942")
    assert report.status == EXIT_OK and report.results[0].verified >= 3, report.lines()


def test_an_event_a_destroyed_queues_trap_may_have_set_shows_no_other_queue(tmp_path):
    """Campaign 53's bug01: q1 TRAPs the event, nobody takes it, q1 is destroyed; q2 copies and TRAPs it too. The
    CPU's wait may return on q1's: it shows nothing of q2 (destroyed queues' TRAPs were forgotten)."""
    path = str(tmp_path / "ev.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        ev, s1, d2 = system.event(), system.semaphore("s1"), system.semaphore("d2")
        x, dst, src = (gpu.alloc(n, "gtt", name=name) for n, name in ((4096, "x"), (1 << 20, "dst"), (1 << 20, "src")))
        q1 = gpu.sdma_queue()
        q1.fill(x, 1, 4096).signal(s1, 1).trap(ev.id).submit()
        s1.wait(1)
        q1.destroy()  # its TRAP may have run: nothing the recorder saw tells
        q2 = gpu.sdma_queue()
        q2.copy(dst, src, 1 << 20).trap(ev.id).signal(d2, 1).submit()
        ev.wait(timeout=10)
        d2.wait(1)
    event_checkpoint = next(c for c in records(path, "checkpoint") if "event" in c.fields["wait"])
    assert "dst" not in checkpoint_names(event_checkpoint)[0]


def test_an_event_a_queue_destroyed_standing_at_a_wait_never_reached_shows_the_queue_that_set_it(tmp_path):
    """Campaign 110: a queue destroyed standing at a GPU wait never ran the mailbox write and TRAP behind it; the
    recorder took them as maybe run, so a later wait on their event showed nothing of the queue that did set
    it, and what that queue wrote was never checkpointed."""
    path = str(tmp_path / "ev.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        ev, gate = system.event(), system.semaphore("gate")
        out = gpu.alloc(4096, "gtt", name="out")
        held = gpu.sdma_queue(name="held")
        held.wait(gate, 1).trap(ev.id).submit()
        held.destroy()  # standing at its wait
        other = gpu.sdma_queue(name="other")
        other.fill(out, 7, 4096).trap(ev.id).submit()
        ev.wait(timeout=10)
    with TraceReader(path) as r:
        destroy = next(rec.fields for rec in r.records({"queue_destroy"}))
    assert destroy["rptr"] < destroy["wptr"]  # (it stood at the wait)
    event_checkpoint = next(c for c in records(path, "checkpoint") if "event" in c.fields["wait"])
    assert checkpoint_names(event_checkpoint) == (["out"], [])


@pytest.mark.parametrize("before", ["gpu copy", "cpu write"])
def test_a_word_written_before_its_first_use_as_a_semaphore_may_be_what_a_wait_sees(before, tmp_path):
    """Campaign 53's bug02: a copy (or a CPU write) put 1 in a word before any wait or signal used it; a queue
    then copies dst and signals the word 1. The CPU's wait for 1 may have seen the earlier write: dst was
    hashed half copied."""
    from kfdtrace.driver.signals import Semaphore

    path = str(tmp_path / "word.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        flags, one = gpu.alloc(4096, "gtt", name="flags"), gpu.alloc(4096, "gtt", name="one")
        dst, src = gpu.alloc(1 << 20, "gtt", name="dst"), gpu.alloc(1 << 20, "gtt", name="src")
        one.write((1).to_bytes(8, "little"))
        flag, done = Semaphore.view(system, flags, 0, name="flag"), system.semaphore("done")
        q1, q2 = gpu.sdma_queue(), gpu.sdma_queue()
        if before == "gpu copy":
            q1.copy(flags, one, 8).submit()
        else:
            flags.write((1).to_bytes(8, "little"))
        q2.copy(dst, src, 1 << 20).signal(flag, 1).signal(done, 1).submit()
        flag.wait(1, timeout=10)
        done.wait(1)
    first = records(path, "checkpoint")[0]
    assert "dst" not in checkpoint_names(first)[0]


def test_completion_follows_semaphore_chains_and_values_past_2_32(tmp_path):
    path = str(tmp_path / "chain.kfdtrace")
    base = (1 << 32) - 2
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        src = gpu.alloc(4096, "gtt", name="src")
        outs = [gpu.alloc(4096, "gtt", name=f"out{i}") for i in range(3)]
        src.write(bytes(range(256)) * 16)
        qs = [gpu.sdma_queue(name=f"q{i}") for i in range(3)]
        sems = [system.semaphore(f"s{i}") for i in range(3)]
        for r in range(4):
            value = base + r
            for i, (q, out, sem) in enumerate(zip(qs, outs, sems, strict=True)):
                if i:
                    q.wait(sems[i - 1], value)
                q.copy(out, src, 4096, src_offset=0).signal(sem, value).submit()
            sems[-1].wait(value)  # only the end of the chain: the others are known complete through it
    cps = records(path, "checkpoint")
    assert checkpoint_names(cps[0]) == (["out0", "out1", "out2"], [])
    assert all(cp.fields["in_flight"] == [] for cp in cps)


def test_an_event_wait_is_a_checkpoint(tmp_path):
    path = str(tmp_path / "event.kfdtrace")
    with record(path), System.open(emulate="gfx90a") as system:
        gpu = system.devices[0]
        src, dst = gpu.alloc(8192, "gtt", name="src"), gpu.alloc(8192, "gtt", name="dst")
        src.write(b"\x33" * 8192)
        q, ev = gpu.sdma_queue(name="q"), system.event()
        q.copy(dst, src, 8192).trap(ev.id).submit()
        ev.wait()
        assert dst.read() == b"\x33" * 8192
    (wait,) = records(path, "event_wait")
    assert wait.fields["event"] == ev.id and wait.fields["ok"]
    (cp,) = records(path, "checkpoint")
    assert cp.fields["wait"]["event"] == ev.id and checkpoint_names(cp) == (["dst"], [])
    assert {r.fields["event"] for r in records(path, "event")} >= {ev.id}


def test_records_name_their_threads_in_program_order(tmp_path):
    path = str(tmp_path / "threads.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]

        def work(k: int) -> None:
            src, dst = gpu.alloc(4096, "gtt", name=f"src{k}"), gpu.alloc(4096, "gtt", name=f"dst{k}")
            q, sem = gpu.sdma_queue(name=f"q{k}"), system.semaphore(f"s{k}")
            for r in range(1, 21):
                src.write(bytes([k, r]) * 2048)
                q.copy(dst, src, 4096).signal(sem, r).submit()
                sem.wait(r)
                assert dst.read() == bytes([k, r]) * 2048

        threads = [threading.Thread(target=work, args=(k,), name=f"worker{k}") for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    with TraceReader(path) as r:
        assert r.verify() > 0
        names = {rec.fields["tid"]: rec.fields["name"] for rec in r.records({"thread"})}
        assert {f"worker{k}" for k in range(4)} <= set(names.values())
        by_thread: dict[int, list[str]] = {}
        for rec in r.records({"cpu_wait", "checkpoint"}):
            by_thread.setdefault(rec.fields["tid"], []).append(rec.type)
    workers = [tid for tid, name in names.items() if name.startswith("worker")]
    for tid in workers:  # each wait of a thread is followed by that thread's checkpoint
        assert by_thread[tid] == ["cpu_wait", "checkpoint"] * 20


def test_large_cpu_writes_make_a_clean_trace(tmp_path):
    path = str(tmp_path / "large.kfdtrace")
    data = np.random.default_rng(3).integers(0, 256, 16 << 20, dtype=np.uint8)
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        buf, out = gpu.alloc(16 << 20, "gtt", name="in"), gpu.alloc(16 << 20, "gtt", name="out")
        q, sem = gpu.sdma_queue(), system.semaphore()
        for r in range(1, 5):
            buf.write(np.roll(data, r))
            q.copy(out, buf, 16 << 20).signal(sem, r).submit()
            sem.wait(r)
    with TraceReader(path) as r:
        assert r.verify() > 0 and not r.recovered
        assert sum(rec.fields["size"] for rec in r.records({"mem"})) == 4 * (16 << 20)


def test_queue_destroy_says_whether_the_recording_drained_it(tmp_path):
    path = str(tmp_path / "destroy.kfdtrace")
    with record(path), System.open(emulate="gfx1201") as system:
        gpu = system.devices[0]
        dst = gpu.alloc(4096, "gtt", name="dst")
        q = gpu.sdma_queue(name="q")
        q.fill(dst, 11, 4096).sync()
        q.destroy()
    (d,) = [r for r in records(path, "queue_destroy")]
    assert d.fields["rptr"] == d.fields["wptr"] > 0


def test_buffers_record_the_size_asked_for(tmp_path):
    path = str(tmp_path / "size.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        system.devices[0].alloc(1000, "gtt", name="odd")
    (b,) = [r for r in records(path, "buffer") if r.fields["name"] == "odd"]
    (a,) = [r for r in records(path, "alloc") if r.fields["va"] == b.fields["va"]]
    assert (b.fields["size"], a.fields["size"]) == (1000, 4096)


def test_a_submission_of_padding_alone_has_no_facts():
    d = DIALECTS["sdma5"]
    ring = d.build("NOP", count=7)  # what a queue rings when only the wrap padding fits before back-pressure
    for _ in range(2):
        plan, inner = Analyzer().analyse(d, ring, lambda a, n: None)
        assert (plan.facts(ring, 64), inner) == (([], [], (), (), ()), None)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_accesses_gather_into_the_parts_they_cover_per_buffer_and_stretch(data):
    """What a submission's accesses cover of each buffer, between its GPU waits: the first and last position, and
    the bytes (to the buffer's end when the size is unknown) as the parts they cover apart, every byte accessed
    in one, none beyond the lowest and highest; exactly those parts when no two accesses overlap (overlaps may
    merge them, up to one span); accesses outside every tracked buffer count for nothing; one running past its
    buffer's end goes on into a buffer right after it (campaign 107: the GPU's page tables translate page by page).
    (The recorder takes accesses all in one buffer and stretch at once.)"""
    by_va: RangeMap = RangeMap()
    bufs = []
    for i, (size, tracked, after, narrow) in enumerate(data.draw(st.lists(st.tuples(
            st.integers(1, 4).map(lambda k: k * 256), st.booleans(), st.booleans(), st.booleans()),
            min_size=1, max_size=3))):
        va = bufs[-1].va + 1024 if bufs and after else 0x10000 * (i + 1)
        buf = TrackedBuffer(i, 1, va, size, "gtt", 0, 0, cpu=0x10000 if tracked else None)
        by_va.add(buf.va, 1024 if after or narrow else buf.size, buf)  # (a size the program asked below it, say)
        bufs.append(buf)
    addresses = st.one_of(*(st.integers(b.va - 16, b.va + b.size + 16) for b in bufs))
    accesses = data.draw(st.lists(st.tuples(addresses, st.sampled_from([0, 4, 64, 512])), max_size=8))
    accesses = [(8 * (i + 1), a, n) for i, (a, n) in enumerate(accesses)]
    cuts = tuple(sorted(data.draw(st.sets(st.integers(0, 80), max_size=2))))
    expected: dict = {}
    for pos, addr, n in accesses:
        while (buf := by_va.get(addr)) is not None and addr < buf.va + buf.size:
            lo = addr - buf.va
            hi = min(lo + n, buf.size) if n else buf.size
            if buf.tracked:
                span = expected.setdefault((buf.handle, bisect.bisect_left(cuts, pos)), [pos, pos, []])
                span[1] = max(span[1], pos)
                span[2].append((lo, hi))
            if not n or lo + n <= buf.size:
                break
            addr, n = buf.va + buf.size, lo + n - buf.size
    got: dict = {}
    for first, last, lo, hi, buf in RecordingSyscalls._accesses(SimpleNamespace(by_va=by_va), tuple(accesses), cuts):
        got.setdefault((buf.handle, first, last), []).append((lo, hi))
    assert sorted(got) == sorted((handle, first, last) for (handle, _), (first, last, _) in expected.items())

    def covered(ranges):
        return {b for lo, hi in ranges for b in range(lo, hi)}

    for (handle, _), (first, last, ranges) in expected.items():
        parts = sorted(got[(handle, first, last)])
        assert covered(ranges) <= covered(parts) and all(a < b for a, b in parts)
        assert min(lo for lo, _ in ranges) == parts[0][0] and max(hi for _, hi in ranges) == max(b for _, b in parts)
        assert all(b < c for (_, b), (c, _) in zip(parts, parts[1:], strict=False))  # apart, in order
        if sum(hi - lo for lo, hi in ranges) == len(covered(ranges)):  # no two overlap: exactly what they cover
            assert covered(parts) == covered(ranges)


def test_ids_one_thread_gives_back_and_another_takes_are_recorded_in_that_order(tmp_path):
    """Threads create, use and destroy queues and events over and over: the kernel hands a destroyed id to the
    next creator at once, and the trace must say so in that order (a thread's `queue` of an id once came before
    another's `queue_destroy` of it, its doorbells then fell to no queue, and the replay hung or refused)."""
    import sys

    from kfdtrace.replay.engine import EXIT_OK, Options
    from kfdtrace.replay.session import replay_trace

    path = str(tmp_path / "ids.kfdtrace")
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switches as a loaded machine's
    try:
        with record(path), System.open(emulate="gfx942") as system:
            gpu = system.devices[0]

            def work(k: int) -> None:
                a, b = gpu.alloc(4096, "gtt", name=f"a{k}"), gpu.alloc(4096, "gtt", name=f"b{k}")
                s = system.semaphore(f"s{k}")
                for r in range(1, 16):
                    q, event = gpu.sdma_queue(name=f"q{k}.{r}", ring_size=4096), system.event()
                    a.write(np.full(1024, k * 1000 + r, np.uint32))
                    q.copy(b, a, 4096).signal(s, r).submit()
                    s.wait(r, 10)
                    q.destroy()
                    event.destroy()

            threads = [threading.Thread(target=work, args=(k,)) for k in range(5)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    finally:
        sys.setswitchinterval(before)
    live: dict[str, set[int]] = {"queue": set(), "event": set()}
    for rec in records(path, "queue", "queue_destroy", "event", "event_destroy", "doorbell"):
        kind = rec.type.removesuffix("_destroy")
        if rec.type == "doorbell":
            assert rec.fields["queue"] in live["queue"], rec.n
        elif rec.type.endswith("_destroy"):
            live[kind].remove(rec.fields[kind])
        else:
            assert rec.fields[kind] not in live[kind], rec.n  # given back before it is taken again
            live[kind].add(rec.fields[kind])
    assert replay_trace(path, Options(timeout=10), emulate_recorded=True).status == EXIT_OK


def test_gpu_writes_that_leave_the_bytes_as_they_were_are_checkpointed(tmp_path):
    """A copy of what a buffer holds already, and zeros filled over fresh (zero) memory, change no byte: the
    checkpoint hashes them all the same, so a replay whose GPU writes otherwise diverges (they were left out,
    and the replay said OK whatever it wrote there)."""
    from kfdtrace.replay.engine import EXIT_DIVERGED, EXIT_OK, Options
    from kfdtrace.replay.session import replay_trace
    from kfdtrace.traces.format import TraceWriter
    from kfdtrace.traces.rewrite import TraceCopy

    path = str(tmp_path / "same.kfdtrace")
    data = np.arange(1024, dtype=np.uint32)
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        src, dst, fresh = (gpu.alloc(4096, "gtt", name=n) for n in ("src", "dst", "fresh"))
        src.write(data)
        dst.write(data)
        gpu.sdma_queue().copy(dst, src, 4096).fill(fresh, 0, 4096).sync()
    hashed = [b["name"] for c in records(path, "checkpoint") for b in c.fields["buffers"]]
    assert sorted(hashed) == ["dst", "fresh"]
    assert replay_trace(path, Options(), emulate_recorded=True).status == EXIT_OK
    edited = str(tmp_path / "edited.kfdtrace")  # src as the CPU wrote it, one word changed: dst differs
    with TraceReader(path) as r, TraceWriter(edited, r.header, clock=r.clock, delta=r.delta,
                                             submission_type=r.submission_type) as w:
        copy = TraceCopy(r, w)
        for rec in r.records():
            changed = rec.type == "mem" and rec.n == min(m.n for m in r.records(["mem"]))
            copy.record(rec.type, dict(rec.fields), data=(b"\xff" * 4 + r.blob(rec.fields["key"])[4:]) if changed
                        else None)
        w.close(copy.summary())
    assert replay_trace(edited, Options(), emulate_recorded=True).status == EXIT_DIVERGED


def test_a_cpu_store_and_an_event_set_are_recorded_before_they_are_made(tmp_path, monkeypatch):
    """Campaign 76: `Buffer.write`'s bytes were recorded after the store, and an event's set after SET_EVENT
    returned, so a wait either released in another thread (and the checkpoint after it) could come first in the
    trace: the replay waited for what came later, and said HANG."""
    import kfdtrace.driver.memory as memory

    path, seen = str(tmp_path / "before.kfdtrace"), []
    with record(path) as session, System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        buf, event = gpu.alloc(4096, "gtt", name="buf"), system.event()
        real = memory.memory_view

        def view(addr, n, writable=False):
            seen.append(session.recorder.trace.stats["records"])  # how many records the store finds written
            return real(addr, n, writable)

        monkeypatch.setattr(memory, "memory_view", view)
        buf.write(b"\x07" * 8, offset=16)
        monkeypatch.setattr(memory, "memory_view", real)
        event.set()
        event.wait()
    with TraceReader(path) as r:
        va = next(x.fields["va"] for x in r.records({"buffer"}) if x.fields["name"] == "buf")
        mem = next(x for x in r.records({"mem"}) if x.fields["va"] == va + 16)
        kinds = [(x.type, x.fields.get("name")) for x in r.records({"ioctl", "ioctl_end", "event_set"})]
    assert mem.fields["size"] == 8 and mem.n < seen[0]
    at = kinds.index(("ioctl", "SET_EVENT"))
    assert kinds[at + 1] == ("event_set", None) and kinds[at + 2][0] == "ioctl_end"
