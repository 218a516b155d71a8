"""`kfdtrace trim`: a standalone trace of a range of submissions, A to B.

The trimmed trace starts with what was live when submission A was made: the buffers (their alloc, buffer, map
and cpu_map records), queues and events, then the contents known at A of every CPU-visible buffer (`mem`
records, from the CPU writes and checkpoints before A), then every semaphore word the packets and the CPU had
signalled before A (`cpu_signal` records), as if the submissions before A had completed. Then it holds the
records from submission A to those before submission B+1, checkpoints included, unchanged.

A buffer the GPU wrote before A, after its last checkpoint (or that is never checkpointed, like VRAM the CPU
cannot see), has no known contents at A. If the range reads such a buffer before writing it, or checkpoints
it, the trim is refused with what wrote it: trim from an earlier submission, or from after a checkpoint; or
`reconstruct` the contents the trace lacks by replaying it up to A (those buffers get a CPU mapping in the
trimmed trace, VRAM the CPU could not see becoming PUBLIC, as their contents are restored by CPU writes).

A semaphore only grows, so a signal in the range below the value restored at the start is refused as a sign
that the submissions before it were still running there, unless every signal of it before the range is known
to have landed (a CPU wait saw it, or its queue is gone): then it is a reset, as when a freed semaphore's pool
slot is made again. A wait in the range must be satisfiable in it: by a value restored at the start, by the
CPU, or by a signal whose own queue's waits before it are (passed queue by queue), unless its queue is
destroyed in the range with work the recording left undone (it may stand at the wait, as the replay lets it).
Reconstructed contents are
those of every submission before A completed: a range waiting for a value that a submission before it, not
known complete at A, signals and then writes on after is refused (the recording's range read what it had
written by then).
"""

from __future__ import annotations

import bisect
import itertools
import os
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from kfdtrace.driver import kfd_ioctl as K
from kfdtrace.driver.aql import AQL, AmdSignal
from kfdtrace.driver.packets import Packet
from kfdtrace.traces import records as R
from kfdtrace.traces.contents import SIGNAL, KnownMemory, called, chunk_size, is_semaphores
from kfdtrace.traces.dump import OPEN_END
from kfdtrace.traces.format import Record, TraceError, TraceReader, TraceWriter
from kfdtrace.traces.rewrite import TraceCopy
from kfdtrace.traces.semaphores import semaphore_facts
from kfdtrace.traces.walk import Submission, TraceState

# records that set up an object, kept before A while it lives, and those that end it: type -> (kind of object,
# the field naming it)
SETUP = {R.ALLOC: ("buffer", "handle"), R.BUFFER: ("buffer", "handle"), R.MAP: ("buffer", "handle"),
         R.CPU_MAP: ("buffer", "handle"), R.QUEUE: ("queue", "queue"), R.QUEUE_NAME: ("queue", "queue"),
         R.EVENT: ("event", "event")}
TEARDOWN = {R.FREE: ("buffer", "handle"), R.QUEUE_DESTROY: ("queue", "queue"), R.EVENT_DESTROY: ("event", "event")}

# what a trimmed trace says of where it comes from (`redact` finds the path in it whatever it holds: spaces too)
NOTE = ("trimmed from {path}: submissions {first}..{last}, record {record} on; the records before restore what was "
        "live and known there")
NOTE_SOURCE = re.compile(r"(?<=^trimmed from ).*(?=: submissions \d+\.\.\d+, record \d+ on; )")


# alloc flags under which the CPU sees a buffer (VRAM without PUBLIC is the GPU's alone)
CPU_VISIBLE = K.AllocMemFlags.GTT | K.AllocMemFlags.USERPTR | K.AllocMemFlags.PUBLIC


class TrimRefused(TraceError):
    """A range whose start the trace does not say enough about."""


@dataclass
class TrimReport:
    records: int
    submissions: int
    packets: int
    restored_chunks: int
    restored_semaphores: int

    def lines(self) -> list[str]:
        return [f"{self.records} records, {self.submissions} submissions ({self.packets} packets); restored at the "
                f"start: {self.restored_chunks} memory chunks, {self.restored_semaphores} semaphores"]


class Landed:
    """Which semaphore signals are known to have landed, record by record: a CPU wait that saw a semaphore
    reach a value shows the submission that signalled it that far completed, and those before it on its queue
    (a queue runs its submissions in order); a queue destroyed lands nothing more. A queue is (its id, which
    queue of that id), as ids are reused; a semaphore is the address of its 64-bit value."""

    def __init__(self) -> None:
        self.lives: dict[int, int] = {}  # queue id -> which queue of that id, counting all queues made
        self.made = 0
        self.ended: set[tuple[int, int]] = set()
        self.complete: dict[tuple[int, int], int] = {}  # queue -> its last submission known to have completed
        # semaphore -> (queue, submission, value, whether its submission writes memory after it) of each signal made
        # of it, in order; where in that list the
        # signals since the CPU last set it lower (a reset: a new semaphore in a reused slot, say) start; and
        # (the highest value the CPU stored since that reset, the highest a CPU wait saw)
        self.signallers: dict[int, list[tuple[tuple[int, int], int, int, bool]]] = {}
        self.since_reset: dict[int, int] = {}
        self.known: dict[int, tuple[int, int]] = {}

    def apply(self, r: Record, sub: Submission | None) -> None:
        f = r.fields
        if sub is not None and sub.queue is not None:
            queue = (sub.queue.queue, self.lives.get(sub.queue.queue, 0))
            for j, addr, value in semaphore_facts(sub.packets)[0]:
                then = any(p.defn.signal is None and p.written_addresses() for p in sub.packets[j + 1:])
                self.signallers.setdefault(addr, []).append((queue, sub.number, value, then))
        elif r.type == R.QUEUE:
            self.lives[f["queue"]], self.made = self.made, self.made + 1
        elif r.type == R.QUEUE_DESTROY:
            self.ended.add((f["queue"], self.lives.get(f["queue"], 0)))
        elif r.type == R.CPU_SIGNAL:
            cpu, seen = self.known.get(f["addr"], (0, 0))
            # a reset: below what the CPU knows the semaphore held, the signals before it no longer tell what a wait
            # sees. Not one below a GPU signal still to land (campaign 111: the CPU's store of 11 that a queue
            # waits for before it signals 12 is none, and the wait for 12 then showed nothing complete)
            if f["value"] < max(cpu, seen):
                self.since_reset[f["addr"]] = len(self.signallers.get(f["addr"], ()))
                cpu = seen = 0
            self.known[f["addr"]] = (max(cpu, f["value"]), seen)
        elif r.type == R.CPU_WAIT and f["ok"]:
            self._observed(f["addr"], f["value"])
            cpu, seen = self.known.get(f["addr"], (0, 0))
            self.known[f["addr"]] = (cpu, max(seen, f["value"]))

    def _observed(self, addr: int, value: int) -> None:
        """The CPU saw `addr` reach `value`: when one queue signalled it that far since its reset, and the CPU
        did not, the first of that queue's submissions to signal as much had completed."""
        if self.known.get(addr, (0, 0))[0] >= value:
            return
        first: dict[tuple[int, int], int] = {}
        for queue, number, signalled, _ in self.signallers.get(addr, [])[self.since_reset.get(addr, 0):]:
            if signalled >= value:
                first.setdefault(queue, number)
        if len(first) == 1:
            ((queue, number),) = first.items()
            self.complete[queue] = max(self.complete.get(queue, -1), number)

    def done(self, queue: int, number: int) -> bool:
        """Whether submission `number` of the live queue `queue` is known complete (or its queue destroyed)."""
        life = (queue, self.lives.get(queue, 0))
        return life in self.ended or number <= self.complete.get(life, -1)

    def rewriting(self, before: int) -> dict[int, int]:
        """Semaphore -> the highest value a submission before submission `before`, not known to have landed, signals
        it and then writes memory (a producer rewriting what a waiter then reads), as known now."""
        out: dict[int, int] = {}
        for addr, signals in self.signallers.items():
            for queue, number, value, then in signals[self.since_reset.get(addr, 0):]:
                if then and number < before and not (queue in self.ended or number <= self.complete.get(queue, -1)):
                    out[addr] = max(out.get(addr, 0), value)
        return out

    def settled(self, addr: int, before: int) -> bool:
        """Whether every signal of `addr` by a submission before submission `before` is known to have landed."""
        return all(queue in self.ended or number <= self.complete.get(queue, -1)
                   for queue, number, _, _ in self.signallers.get(addr, ()) if number < before)


class _Prefix:
    """Follows the records before A: what lives, what its memory holds, what the semaphores read."""

    def __init__(self, trace: TraceReader):
        self.trace = trace
        chunk = chunk_size(trace)
        if chunk is None:
            raise TraceError(f"{trace.path}: the header has no chunk size: it cannot be trimmed")
        self.state = TraceState(trace.header)
        self.memory = KnownMemory(self.state, chunk, trace.blob, trace)  # dispatches' writes followed too
        self.kept: dict[tuple[str, int], list[Record]] = {}  # (kind, id) -> its setup records
        self.threads: list[Record] = []
        self.words: dict[int, int] = {}  # semaphore dword address -> value last written
        self.names: dict[int, str | None] = {}  # semaphore address -> the name a cpu_signal gave it
        # an AQL signal's value address -> its value: the CPU's last store, less the completions since
        self.aql_signals: dict[int, int] = {}
        self.landed = Landed()  # which semaphore signals are known to have landed
        self.last: dict[int, int] = {}  # queue id -> its last submission
        # queue -> its submissions' semaphore waits and signals in order, (number, [(packet, wait?, address, value)]),
        # till known complete; the (queue, number, packet) of the signal each semaphore got last (None: the CPU's):
        # `unlanded`
        self.facts: dict[int, deque[tuple[int, list[tuple[int, bool, int, int]]]]] = {}
        self.writer: dict[int, tuple[int, int, int] | None] = {}
        self.seen: dict[int, int] = {}  # semaphore -> the value a CPU wait saw it reach, or the CPU signalled, last
        self.clocks: dict[int, int] = {}  # address a packet wrote a GPU clock to -> its submission
        # AQL queue -> its packets from a barrier whose signals are not where it passes on, (submission, packet):
        # they wait behind it, and what they decrement is not decremented yet
        self.held: dict[int, deque[tuple[int, Packet]]] = {}

    def unlanded(self) -> list[int]:
        """The semaphores whose last signal before the range comes behind a wait of its queue that nothing before
        the range is known to pass (the queue stood there at the range's start, say, till the range signalled):
        that value had not landed at the start (campaign 104)."""
        stuck = {q: {(n, i) for n, i, *_ in events} for q, events in self._stuck().items()}
        return [a for a, w in self.writer.items() if w is not None and (w[1], w[2]) in stuck.get(w[0], ())]

    def standing(self) -> dict[int, int]:
        """Queue -> the submission before the range holding a wait it may stand at as the range starts: a
        semaphore wait nothing before the range is known to pass, or an AQL barrier whose signals are not where it
        passes even once every packet before the range completed (campaign 114: the range's packets behind it
        ran at once, trimmed)."""
        out = {q: events[0][0] for q, events in self._stuck().items() if events and events[0][2]}
        out |= {q: held[0][0] for q, held in self.held.items() if held}
        return out

    def _aql_value(self, handle: int) -> int | None:
        return self.aql_signals.get(handle + AmdSignal.value.offset)

    def _run(self, p: Packet) -> None:
        """An AQL packet that is not held: its completion decrements its signal."""
        d = p.defn
        if d.completion is not None and p.fields[d.completion[0]]:
            value = p.fields[d.completion[0]] + AmdSignal.value.offset
            if value in self.aql_signals:
                self.aql_signals[value] -= 1

    def _release(self) -> None:
        """Run the held packets whose barrier now passes (a decrement may let another queue's pass, in turn)."""
        moved = True
        while moved:
            moved = False
            for held in self.held.values():
                while held and (not AQL.waits(held[0][1].defn) or AQL.passes(held[0][1], self._aql_value)):
                    self._run(held.popleft()[1])
                    moved = True

    def _stuck(self) -> dict[int, list[tuple[int, int, bool, int, int]]]:
        """Queue -> its semaphore events (submission, packet, wait?, address, value) from the first wait nothing
        before the range is known to pass. Waits pass on what the CPU signalled or saw, what submissions known
        complete signalled, and what the others signal before their own first such wait."""
        self._fold()
        queues = {q: [(number, *e) for number, events in subs for e in events] for q, subs in self.facts.items()}
        seen = dict(self.seen)
        passed = dict.fromkeys(queues, 0)  # queue -> how many of its events are known to come
        moved = True
        while moved:
            moved = False
            for queue, events in queues.items():
                while passed[queue] < len(events):
                    _, _, wait, addr, value = events[passed[queue]]
                    if wait and seen.get(addr, 0) < value:
                        break
                    if not wait:
                        seen[addr] = max(seen.get(addr, 0), value)
                    passed[queue] += 1
                    moved = True
        return {q: events[passed[q]:] for q, events in queues.items()}

    def behind(self, queue: int) -> bool:
        """Whether submissions of `queue` before the range are not known complete."""
        last = self.last.get(queue)
        return last is not None and not self.landed.done(queue, last)

    def apply(self, r: Record) -> Submission | None:
        f = r.fields
        if r.type == R.THREAD:
            self.threads.append(r)
        elif r.type in SETUP:
            kind, name = SETUP[r.type]
            key = (kind, f[name])
            if r.type == R.BUFFER and f["handle"] is None:
                key = next((k for k, recs in self.kept.items() if recs[0].fields.get("va") == f["va"]), key)
            self.kept.setdefault(key, []).append(r)
        elif r.type == R.CODE_OBJECT:  # lives with the buffer its image is in
            key = next((k for k, recs in self.kept.items() if recs[0].fields.get("va") == f["va"]), None)
            if key is not None:
                self.kept[key].append(r)
        elif r.type in TEARDOWN:
            kind, name = TEARDOWN[r.type]
            self.kept.pop((kind, f[name]), None)
            if r.type == R.QUEUE_DESTROY:
                self.held.pop(f["queue"], None)  # what it held never runs
        if r.type == R.FREE and (buf := self.state.buffers.get(f["handle"])) is not None:
            # a buffer taking its place holds none of them
            for held in (self.words, self.names, self.aql_signals, self.clocks, self.writer, self.seen):
                for addr in [a for a in held if buf.va <= a < buf.va + buf.size]:
                    del held[addr]
        sub = self.state.apply(r)
        if sub is not None:
            _understood(sub, "before the range")
            if sub.queue is not None:
                self.last[sub.queue.queue] = sub.number
            if any(p.defn.indirect is not None for p in sub.packets):
                raise TrimRefused(f"submission {sub.number} calls an indirect buffer before the range: trim cannot "
                                  "follow what it writes; trim from an earlier submission")
            held = self.held.setdefault(sub.queue.queue, deque()) if sub.queue is not None else deque()
            for p in sub.packets:
                if held or AQL.waits(p.defn):
                    held.append((sub.number, p))
                else:
                    self._run(p)
            self._release()
            signalled, waited = semaphore_facts(sub.packets)
            if sub.queue is not None and (signalled or waited):
                self.facts.setdefault(sub.queue.queue, deque()).append((sub.number, sorted(
                    [(i, False, a, v) for i, a, v in signalled] + [(i, True, a, v) for i, a, v in waited])))
                self.writer.update((a, (sub.queue.queue, sub.number, i)) for i, a, _ in signalled)
            for p in sub.packets:
                d = p.defn
                if p.volatile:
                    self.clocks.update((a, sub.number) for a in p.written_addresses())
                if d.signal is not None and d.signal[0] in p.addresses():
                    self.words[p.fields[d.signal[0]]] = p.fields[d.signal[1]] & 0xFFFFFFFF
        elif r.type == R.CPU_SIGNAL:
            buf = self.state.buffer_at(f["addr"])
            if buf is not None and buf.role == SIGNAL:
                self.aql_signals[f["addr"]] = f["value"]
                self._release()
            self.words[f["addr"]], self.words[f["addr"] + 4] = f["value"] & 0xFFFFFFFF, f["value"] >> 32
            self.names[f["addr"]] = f["name"]
            self.writer[f["addr"]], self.seen[f["addr"]] = None, f["value"]
        elif r.type == R.CPU_WAIT and f["ok"]:
            self.seen[f["addr"]] = max(self.seen.get(f["addr"], 0), f["value"])
        self.landed.apply(r, sub)
        if r.type in (R.CPU_WAIT, R.EVENT_WAIT, R.QUEUE_DESTROY):  # submissions known complete since
            self._fold()
        self.memory.apply(r, sub)
        return sub

    def _fold(self) -> None:
        """Take what the submissions known complete signalled as seen, and forget them."""
        for queue, subs in self.facts.items():
            while subs and self.landed.done(queue, subs[0][0]):
                for _, wait, addr, value in subs.popleft()[1]:
                    if not wait:
                        self.seen[addr] = max(self.seen.get(addr, 0), value)


Reconstruct = Callable[[list[int]], dict[int, bytes]]  # buffer vas -> their contents at the range's start


def trim(trace: TraceReader, out: str, first: int, last: int, reconstruct: Reconstruct | None = None) -> TrimReport:
    """Write submissions `first`..`last` (inclusive, from 0; last OPEN_END: to the end) of `trace` as a standalone
    trace at `out`. `reconstruct`, if given, finds the contents the trace does not hold (by replaying up to the
    range)."""
    if not trace.submissions:
        raise ValueError(f"{trace.path} holds no submissions: nothing to trim")
    if last == OPEN_END:
        last = trace.submissions - 1
    if not 0 <= first < trace.submissions:
        raise ValueError(f"submission {first}: the trace has submissions 0..{trace.submissions - 1}")
    if not first <= last < trace.submissions:
        raise ValueError(f"submissions {first}..{last}: the trace has submissions 0..{trace.submissions - 1}")
    prefix = _Prefix(trace)
    records = R.checked(trace.records())
    start = None
    for r in records:
        if r.type == R.DOORBELL and prefix.state.submissions == first:
            start = r
            break
        prefix.apply(r)
    if start is None:  # the index counted submissions of another type, or more than the frames hold
        raise ValueError(f"{trace.path}: submission {first} is not among its doorbells (the index counts "
                         f"{trace.submissions} submissions of type {trace.submission_type!r}: corrupt trace)")
    restored: dict[int, bytes] = {}
    if reconstruct is None:  # a semaphore whose last signal had not landed is not restored: the range may not need it
        for addr in prefix.unlanded():
            prefix.words.pop(addr, None)
            prefix.words.pop(addr + 4, None)
    else:
        semaphores = [b.va for b in prefix.state.buffers.values() if is_semaphores(b)]
        unknown = [va for va, c in prefix.memory.contents.items() if c.unknown]
        _no_clocks(prefix, unknown)
        restored = reconstruct(unknown + semaphores) if unknown or semaphores else {}
        for va, data in restored.items():  # the buffer's own bytes, not the pages the allocation rounded it to
            buf = prefix.state.buffer_at(va)
            if buf is not None:
                restored[va] = data[:buf.size]
        for va in semaphores:  # as the replay left them there, not as if every submission before had completed
            if va in restored:
                data = restored.pop(va)
                for addr in [a for a in prefix.words if 0 <= a - va <= len(data) - 4]:
                    prefix.words[addr] = int.from_bytes(data[addr - va:addr - va + 4], "little")
        for va, data in restored.items():
            prefix.memory.contents[va].unknown = None
            for addr in [a for a in prefix.aql_signals if 0 <= a - va <= len(data) - 8]:  # a signal's value too
                prefix.aql_signals[addr] = int.from_bytes(data[addr - va:addr - va + 8], "little", signed=True)
    header = {**trace.header, "name": f"{trace.header.get('name') or os.path.basename(trace.path)} "
                                      f"submissions {first}..{last}"}  # and a note record says where from
    w = TraceWriter(out, header, clock=trace.clock, delta=trace.delta, submission_type=trace.submission_type)
    try:
        report = _write(trace, prefix, start, records, w, first, last, restored)
    except BaseException:
        w.close()
        if os.path.isfile(out):  # a part would pass for the whole range
            os.unlink(out)
        raise
    return report


def _no_clocks(prefix: _Prefix, vas: list[int]) -> None:
    """TrimRefused if a packet before the range wrote a GPU clock into one of the buffers at `vas`: their contents
    replayed up to the range hold the replay's clocks, which the range's copies and checkpoints would compare as
    data with the recording's (campaign 103)."""
    for addr, number in prefix.clocks.items():
        buf = prefix.state.buffer_at(addr)
        if buf is not None and buf.va in vas:
            raise TrimRefused(f"submission {number} wrote a GPU clock into {buf.label} at {addr:#x} before the "
                              f"range: --reconstruct would restore the replay's clock there, where the recording's had "
                              f"another; trim from submission {number} or earlier")


def _write(trace: TraceReader, prefix: _Prefix, start: Record, records, w: TraceWriter, first: int,
           last: int, restored: dict[int, bytes]) -> TrimReport:
    out = TraceCopy(trace, w)
    setup = sorted(prefix.threads + [r for recs in prefix.kept.values() for r in recs], key=lambda r: r.n)
    for r in setup:
        f = r.fields
        if r.type == R.ALLOC and f["va"] in restored and not f["flags"] & CPU_VISIBLE:
            f = {**f, "flags": f["flags"] | K.AllocMemFlags.PUBLIC}  # its restored contents are CPU writes
        out.record(r.type, f)
    t0, tid = start.fields.get("t"), start.fields.get("tid")
    chunks = semaphores = 0
    chunk = prefix.memory.chunk
    for va, contents in sorted(prefix.memory.contents.items()):
        if va in restored:
            data = restored[va]
            for at in range(0, len(data), chunk):
                piece = data[at:at + chunk]
                out.record(R.MEM, {"t": t0, "tid": tid, "va": va + at, "size": len(piece), "key": b""}, data=piece)
                chunks += 1
            continue
        if contents.unknown:
            continue
        for at, (size, key) in contents.chunks.items():  # in recorded order: a later write may overlap one before
            out.record(R.MEM, {"t": t0, "tid": tid, "va": at, "size": size, "key": key})
            chunks += 1
    values = {a: prefix.words[a] | prefix.words.get(a + 4, 0) << 32 for a in prefix.words
              if a % 8 == 0 and is_semaphores(prefix.state.buffer_at(a))}
    values |= {a: v for a, v in prefix.aql_signals.items() if prefix.state.buffer_at(a) is not None and v >= 0}
    for addr, value in sorted(values.items()):
        out.record(R.CPU_SIGNAL, {"t": t0, "tid": tid, "addr": addr, "value": value,
                                  "name": prefix.names.get(addr)})
        semaphores += 1
    out.record(R.NOTE, {"t": t0, "text": NOTE.format(path=trace.path, first=first, last=last, record=start.n)})
    undrained = (trace.summary or {}).get("undrained") or []
    to_end = _range(prefix, start, records, out, last, bool(restored), undrained)
    w.close(out.summary(keep=("undrained",) if to_end else ()))  # the queues a replay lets stand at the end
    return TrimReport(sum(out.counts.values()), out.counts[R.DOORBELL], sum(out.packets.values()), chunks,
                      semaphores)


Signals = dict[int, list[tuple[int | None, int, int]]]  # address -> (queue or None for the CPU, order, value)
Wait = tuple[str, int | None, int, int, int]  # (what, queue or None for the CPU, order, address, value to reach)


def _range(prefix: _Prefix, start: Record, records, out: TraceCopy, last: int, reconstructed: bool,
           undrained: list[int]) -> bool:
    """Copy the records from `start` to those before submission last+1, refusing a read of unknown memory and
    a wait that nothing can satisfy; with memory `reconstructed` (as if every submission before the range had
    completed at its start), a wait the range's start satisfies that submissions still running then did. Whether
    the range runs to the trace's end, where the queues `undrained` (the summary's) may stand at a wait."""
    state, written = prefix.state, Written()  # what the range has made and written so far
    first = state.submissions
    signals: Signals = {addr: [(None, -1, v)] for addr, v in _values(prefix.words).items()}
    rewriting = prefix.landed.rewriting(first) if reconstructed else {}

    waits: list[Wait] = []
    # queue -> the orders of its destroys in the range, each with whether the recording left it work undone
    ends: dict[int, list[tuple[int, bool]]] = {}
    events: set[int] = set()  # KFD events the range sets (a packet's interrupt, or the CPU)
    standing = prefix.standing()
    to_end = True
    for rec in itertools.chain((start,), records):
        if rec.type == R.DOORBELL and state.submissions > last:
            to_end = False
            break
        destroyed = state.queues.get(rec.fields["queue"]) if rec.type == R.QUEUE_DESTROY else None
        sub = state.apply(rec)
        f = rec.fields
        if rec.type in (R.ALLOC, R.FREE, R.MEM, R.CODE_OBJECT):
            # for the kernel arguments and kernels of the range's dispatches, in buffers made before it or in it
            prefix.memory.apply(rec, None)
        if sub is not None:
            if sub.queue is not None and (held := standing.get(sub.queue.queue)) is not None:
                raise TrimRefused(f"submission {sub.number} comes behind a wait of its queue in submission {held}, "
                                  f"which nothing before the range is known to pass: trimmed, it would run without "
                                  f"waiting; start the range at submission {held} or earlier")
            _check_reads(prefix, sub, written)
            _signals_and_waits(prefix, sub, rec.n, signals, waits, first)
            events.update(e for p in sub.packets if (e := p.defn.event_of(p.fields)) is not None)
        elif rec.type == R.EVENT_SET:
            events.add(f["event"])
        elif rec.type == R.EVENT_WAIT and f["ok"] and f["event"] not in events:
            raise TrimRefused(f"the CPU wait at record {rec.n} on event {f['event']} saw it set, and nothing in the "
                              f"range sets it before: the range would hang without the submission that does; start "
                              f"it earlier")
        elif rec.type == R.ALLOC:
            written.made.add(f["va"])
        elif rec.type == R.QUEUE_DESTROY:
            undone = destroyed is not None and f["rptr"] is not None and f["wptr"] is not None and \
                K.read_end(destroyed.type, f["rptr"], end := K.doorbell_end(destroyed.type, f["wptr"]),
                           destroyed.ring_size) < end
            ends.setdefault(f["queue"], []).append((rec.n << 20, undone))
        elif rec.type == R.CHECKPOINT:
            for entry in f["buffers"]:
                _check_known(prefix, entry["va"], written, f"the checkpoint at record {rec.n}")
        elif rec.type == R.CPU_SIGNAL:
            _check_monotonic(prefix, f"the CPU signal at record {rec.n}", f["addr"], f["value"], signals, first)
            signals.setdefault(f["addr"], []).append((None, rec.n << 20, f["value"]))
        elif rec.type == R.CPU_WAIT and f["ok"]:
            written.acquire(None, f["addr"], f["value"])
            waits.append((f"the CPU wait at record {rec.n} (on {state.where(f['addr']) or 'no buffer'})", None,
                          rec.n << 20, f["addr"], f["value"]))
        elif rec.type == R.CPU_WAIT and (why := _held_up(prefix, signals.get(f["addr"], ()), f["value"],
                                                           rec.n << 20)):
            raise TrimRefused(f"the CPU wait at record {rec.n} (on {state.where(f['addr']) or hex(f['addr'])}) timed "
                              f"out in the recording, but {why}: the trimmed trace could not time out there; start "
                              f"the range before what held it up")
        prefix.landed.apply(rec, sub)
        out.record(rec.type, rec.fields, sub)
    if to_end:  # left with work at the recording's end: a replay lets them stand (queues destroyed with work do)
        for queue in undrained:
            ends.setdefault(queue, []).append((1 << 62, True))
    for what, _, _, addr, ref in waits:
        if 0 < ref <= rewriting.get(addr, 0):
            raise TrimRefused(f"{what} waits for {addr:#x} to reach {ref:#x}, which a submission before the range, "
                              f"not complete at its start, signals and then writes more: the recording's range read "
                              f"what it wrote by then, the reconstructed one what it wrote in the end; start the range "
                              f"earlier")
    stuck = _unreached(signals, waits, ends)
    if stuck is not None:
        what, _, _, addr, ref = stuck
        raise TrimRefused(f"{what} waits for {addr:#x} to reach {ref:#x}, which nothing signals in the range (or "
                          f"restores at its start) where that wait could see it: the range would hang without "
                          f"the submission that signals it; extend the range, or start it earlier")
    return to_end


def _unreached(signals: Signals, waits: list[Wait], ends: dict[int, list[tuple[int, bool]]]) -> Wait | None:
    """The first wait of the range that no signal it can see satisfies, None when each is. A queue's poll sees
    what its own queue signalled before it, and what other queues or the CPU signal (queues run side by side),
    but a queue's signal counts only once every wait before it in its queue is satisfied (one behind a wait
    for a value only a signal outside the range gives never comes); the CPU's wait sees what was signalled before
    it (the CPU's own signals, of threads side by side, are taken as given). A queue destroyed in the range (at
    the orders `ends` gives) with work the recording left undone may stand at a wait: the replay lets it."""
    def life(q: int, o: int) -> tuple[int, int]:
        """The queue id `q` as it was at order `o`: the ids of destroyed queues are given again."""
        return q, bisect.bisect(ends.get(q, ()), (o, True))

    by_queue: dict[tuple[int, int], list[Wait]] = {}
    for w in sorted(waits, key=lambda w: w[2]):
        if w[1] is not None:
            by_queue.setdefault(life(w[1], w[2]), []).append(w)
    passed = {q: 0 for q in by_queue}  # queue -> how many of its waits are known satisfied, in its order

    def counts(q: int | None, o: int) -> bool:
        """Whether a signal of queue `q` at order `o` can come: the CPU's, or one before the queue's first wait
        not known satisfied."""
        key = life(q, o) if q is not None else None
        queued = by_queue.get(key) if key is not None else None
        return not queued or passed[key] == len(queued) or o < queued[passed[key]][2]

    def satisfied(w: Wait) -> bool:
        _, queue, order, addr, ref = w
        return any(v >= ref and (o < order or (queue is not None and q != queue)) and counts(q, o)
                   for q, o, v in signals.get(addr, ()))

    moved = True
    while moved:  # each round, every queue passes the waits it can: the signals behind them come
        moved = False
        for q, queued in by_queue.items():
            while passed[q] < len(queued) and satisfied(queued[passed[q]]):
                passed[q] += 1
                moved = True
    left = {(q, i) for q, orders in ends.items() for i, (_, undone) in enumerate(orders) if undone}
    stuck = [queued[passed[q]] for q, queued in by_queue.items() if passed[q] < len(queued) and q not in left]
    stuck += [w for w in waits if w[1] is None and not satisfied(w)]
    return min(stuck, key=lambda w: w[2], default=None)


def _values(words: dict[int, int]) -> dict[int, int]:
    """Semaphore dwords as the values they make: an 8-byte-aligned pair as one 64-bit value at its low dword."""
    out = {}
    for addr, v in words.items():
        if addr % 8 == 0 and addr + 4 in words:
            out[addr] = v | words[addr + 4] << 32
        elif not (addr % 8 == 4 and addr - 4 in words):
            out[addr] = v
    return out


def _check_monotonic(prefix: _Prefix, what: str, addr: int, value: int, signals: Signals, first: int) -> None:
    """A semaphore only grows: a signal in the range below what the range's start restores means the restored
    value came from submissions still running at the start (their later signals): the range needs them. Unless
    every signal of it made before the range (submission `first`) is known to have landed by now (a wait saw
    it): then it is a reset (a semaphore made again in a reused slot, say)."""
    before = next((v for q, o, v in signals.get(addr, ()) if o < 0), None)
    if before is not None and value < before and is_semaphores(prefix.state.buffer_at(addr)) and \
            not prefix.landed.settled(addr, first):
        raise TrimRefused(f"{what} signals {prefix.state.where(addr) or hex(addr)} = {value:#x}, below the {before:#x} "
                          f"the submissions before the range signal: some of those were still running when the range "
                          f"starts, and the range needs them; start it earlier")


def _held_up(prefix: _Prefix, signals: list[tuple[int | None, int, int]], ref: int, order: int) -> str | None:
    """Why a CPU wait for `ref` before `order` that timed out in the recording would not in the trimmed trace: a
    value that satisfies it comes from before the range (restored at the range's start), or from a queue whose
    work before the range may not have completed (what held the signal up is not in the range)."""
    for queue, at, value in signals:
        if value < ref or at >= order:
            continue
        if at < 0:
            return f"the range's start restores it to {value:#x} from a signal before the range that had not landed"
        if queue is not None and prefix.behind(queue):
            return f"queue {queue} signals {value:#x} in the range behind its own work before the range, which " \
                   f"had not completed"
    return None


def _signals_and_waits(prefix: _Prefix, sub: Submission, n: int, signals: Signals, waits: list[Wait],
                       first: int) -> None:
    """Note what `sub` (record `n`) signals and the polls it makes that wait for memory to reach a value, each
    with its queue and its order."""
    queue = sub.queue.queue if sub.queue is not None else None
    calls = {i: _called(prefix, sub, p) for i, p in enumerate(sub.packets) if p.defn.indirect is not None}
    for i, packets in [(None, sub.packets), *calls.items()]:  # the ring's, then each indirect buffer's by its call
        signalled, waited = semaphore_facts(packets)
        for j, addr, value in signalled:
            at = j if i is None else i
            _check_monotonic(prefix, f"submission {sub.number} ({sub.packets[at].name} at "
                                     f"+{sub.packets[at].offset:#x})", addr, value, signals, first)
            signals.setdefault(addr, []).append((queue, n << 20 | at, value))
        for j, addr, ref in waited:
            p = sub.packets[j if i is None else i]
            waits.append((f"submission {sub.number} ({p.name} at +{p.offset:#x} on {prefix.state.where(addr)})",
                          queue, n << 20 | (j if i is None else i), addr, ref))


def _called(prefix: _Prefix, sub: Submission, p: Packet) -> list[Packet]:
    """The packets of the indirect buffer `p` calls (and of those they call), as the CPU wrote them; TrimRefused
    when the trace does not hold them."""
    try:
        return called(prefix.memory, prefix.state, sub, p)
    except ValueError as exc:
        raise TrimRefused(f"submission {sub.number}: {exc}: start the range elsewhere") from None


def _understood(sub: Submission, where: str) -> None:
    """TrimRefused unless every packet of `sub` was read: what the others read and write is unknown."""
    if sub.error:
        raise TrimRefused(f"submission {sub.number} {where}: {sub.error}; trim cannot tell what it reads and writes")


MAX_RELEASES = 64  # signals of an address whose writes a trim remembers (Written.release)


class Written:
    """What the range has made (buffers allocated in it, by va) and written: the byte spans of the packets that
    say how many bytes they move (a table's byte_count field), per buffer and writing queue. A write of unknown
    extent (a kernel's, a packet's without a count) makes nothing known: it may have written part of the buffer
    only. A write a packet may skip (under COND_EXE or PRED_EXEC) is none.

    A write precedes what its own queue reads after it. Whether it precedes another queue's read is not told by
    the order of the records: the writing queue may wait for that read (a semaphore the reader signals after it).
    So a queue's writes count for every queue's reads only until it waits on the GPU in the range; after, they
    count for another queue's reads once that queue waited for a value the writer signalled after them (`release`,
    `acquire`: what the writer had, its own writes and those it acquired, as it signalled)."""

    def __init__(self) -> None:
        self.made: set[int] = set()
        self.free: dict[int, list[tuple[int, int]]] = {}  # buffer va -> [(start, end)] written before any wait
        self.seen: dict[int, dict[int, list[tuple[int, int]]]] = {}  # queue -> buffer va -> spans it knows written
        self.held: set[int] = set()  # queues that waited on the GPU in the range
        self.released: dict[int, list[tuple[int, dict[int, list[tuple[int, int]]]]]] = {}  # address -> (value, spans)

    def add(self, va: int, lo: int, hi: int, queue: int) -> None:
        spans = self.free if queue not in self.held else self.seen.setdefault(queue, {})
        spans[va] = _merged([*spans.get(va, ()), (lo, hi)])

    def release(self, queue: int, addr: int, value: int) -> None:
        """`queue` signalled `value` at `addr`: what it knows written is written for whoever waits for it."""
        self.released.setdefault(addr, []).append((value, dict(self.seen.get(queue, {}))))
        del self.released[addr][:-MAX_RELEASES]  # forgetting the oldest only makes less known

    def acquire(self, queue: int | None, addr: int, value: int) -> None:
        """`queue` waited until `addr` reached `value`: it knows what the signals of values up to it released. None:
        the CPU did, and every queue submitted to after knows it."""
        if queue is not None:
            self.held.add(queue)
        seen = self.free if queue is None else self.seen.setdefault(queue, {})
        for signalled, spans in self.released.get(addr, ()):
            if signalled <= value:
                for va, ss in spans.items():
                    seen[va] = _merged([*seen.get(va, ()), *ss])

    def covers(self, va: int, lo: int, hi: int, queue: int | None = None) -> bool:
        """Whether the range wrote [lo, hi) of the buffer at `va` before `queue` reads it (None: before the CPU
        reads it at a checkpoint, when the writes it hashes are complete)."""
        known = [*self.free.get(va, ())]
        for q, spans in self.seen.items():
            if queue is None or q == queue:
                known += spans.get(va, ())
        return any(a <= lo and hi <= b for a, b in _merged(known))


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """`spans` sorted, those that touch as one."""
    merged: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


def _check_reads(prefix: _Prefix, sub: Submission, written: Written) -> None:
    _understood(sub, "in the range")
    if sub.queue is None:  # a store to a doorbell of no queue the recorder knew: no packets of it to follow
        return
    queue = sub.queue.queue
    skipped, skipper = 0, None  # where the packets a COND_EXE or PRED_EXEC may skip end, and that packet's address
    signalled, waited = semaphore_facts(sub.packets)
    signals = {i: (addr, value) for i, addr, value in signalled}
    waits = {i: (addr, ref) for i, addr, ref in waited}
    for i, p in enumerate(sub.packets):
        skips = p.offset < skipped  # nothing it does is sure to happen: its writes, signals and waits count for none
        if i in signals and not skips:
            written.release(queue, *signals[i])
        access = prefix.memory.access(sub, p)
        if isinstance(access, str):
            raise TrimRefused(f"{access}: trim cannot tell what it reads and writes")
        for addr, size in p.read_ranges():
            _check_known(prefix, addr, written, f"submission {sub.number} ({p.name})", size, queue)
        if access is not None:  # a kernel reads what it can name, through addresses passed by value or kept in memory
            for buf in list(prefix.state.buffers.values()):
                _check_known(prefix, buf.va, written, f"the kernel submission {sub.number} launches ({p.name}), which "
                                                      f"may read any buffer it can name,", None, queue)
        if p.defn.wait is not None:
            written.held.add(queue)
        # a 64-bit wait polls the low dword under a COND_EXE on the high one, which skips it once memory went past
        # the value (driver/signals.py): either way memory reached it
        if i in waits and (not skips or skipper == waits[i][0] + 4):
            written.acquire(queue, *waits[i])
        if skips:
            continue
        if p.defn.skip_field is not None:
            skipped = max(skipped, p.offset + p.size + 4 * p.fields[p.defn.skip_field])
            skipper = next(iter(p.addresses().values()), None)
        for addr, size in p.written_ranges():
            for buf in prefix.state.buffers_over(addr, size) if size is not None else ():
                written.add(buf.va, max(addr, buf.va), min(addr + size, buf.va + buf.size), queue)


def _check_known(prefix: _Prefix, addr: int, written: Written, what: str, size: int | None = None,
                 queue: int | None = None) -> None:
    """TrimRefused if the `size` bytes at `addr` (None: its whole buffer) are unknown at the range's start and the
    range has not written them itself."""
    for buf in prefix.state.buffers_over(addr, size):  # (a copy may run on into the next buffer)
        if buf.va in written.made or is_semaphores(buf):
            continue
        lo, hi = (max(addr, buf.va), min(addr + size, buf.va + buf.size)) if size is not None else \
            (buf.va, buf.va + buf.size)
        contents = prefix.memory.contents.get(buf.va)
        if contents is not None and contents.unknown and not written.covers(buf.va, lo, hi, queue):
            raise TrimRefused(f"{what} reads {buf.label} at {lo:#x}, whose contents at the range's start are "
                              f"unknown ({contents.unknown}, and no checkpoint of it followed): trim from an earlier "
                              f"submission, or from one after a checkpoint of {buf.label}, or give --reconstruct to "
                              f"replay up to the range's start and take what it holds there")
