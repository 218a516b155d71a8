"""`kfdtrace export`: a trace's records as JSON Lines (what `dump --json` gives), or as a timeline in the Chrome
trace-event format (the JSON Object Format) that ui.perfetto.dev and chrome://tracing open.

The timeline has two processes. "GPU queues" has a track per queue that submitted (``queue 0 (producer) SDMA``;
``#1``, ``#2`` after the names of queues whose id the trace used again): each submission is a slice holding one
slice per packet, named by the packet tables, its fields in args as `dump --json` shows them (addresses named by
buffer). "CPU threads" has a track per recording thread: its waits on semaphores, AQL signals and KFD events are
slices, its semaphore signals short slices, its doorbells, event sets, checkpoints and notes instants. Flow arrows
join each semaphore wait, a GPU packet's or a CPU wait's, to the signal that satisfied it, a GPU packet's or the
CPU's.

Timing. A trace records when the CPU did things, never when the GPU did: the GPU side is laid out from the
CPU's evidence. A queue runs its packets in order, each from when the queue reaches it (its doorbell, or the
end of the packet before) for PACKET_NS, except that

* a packet waiting on a semaphore ends no earlier than the signal that satisfied it (a CPU signal's time, or
  the signalling packet's end on its queue), so a wait spans the time the queue stood still;
* a packet whose signal a CPU wait saw ends before that wait returned, and so do the packets before it on its
  queue (they shrink to fit, down to nothing).

A submission spans its packets (one of no packets takes PACKET_NS): it may start after its doorbell, while its
queue is busy (args say when the doorbell rang). A CPU wait is drawn from its thread's previous record (it
cannot have begun earlier; at most its timeout before it returned) to when it returned, a CPU signal as the
CPU_SIGNAL_NS before its record (after the thread's previous record): a slice, so arrows can start there. A
record without a time takes the time of the record before it, and no thread goes back in time. An arrow
meets a slice at its last nanosecond; one whose ends cannot be ordered (a wait matched to a signal in a
cycle, threads whose clocks disagree) is left out. Packets in indirect buffers are not shown.

Matching. Semaphore signals and waits are read from the packet tables' tags (`PacketDef.signal`, `.wait`),
as capture reads them, 64-bit values put together from their dword halves the way capture does. A wait for
a value V (`>=`) is satisfied by the signal of that address with the smallest value >= V (the first that
took it there), the earliest such; a CPU wait only by a signal recorded before it returned. A CPU signal
moving an address backwards starts a new life of it (a semaphore slot reused): waits match signals of their
own life. A wait for 0 waits for nothing and gets no arrow, nor does a CPU wait that timed out.

AQL signals count down: each packet with a completion signal decrements it as it completes. A BARRIER_AND
completes once its dependency signals are at 0, so it gets an arrow from each packet submitted before it that
decrements one of them (since the CPU last set the signal, the last MAX_DECREMENTS), and ends after them; so
does a CPU wait on a signal that saw it at 0 or below. A BARRIER_OR or BARRIER_VALUE, and a CPU wait for
another value, need some value, not every decrement, and get no arrows.

The timeline is held in memory before it is written: more than MAX_EVENTS events is refused (TraceError).
"""

from __future__ import annotations

import itertools
import math
import sys
from bisect import bisect_left, bisect_right
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TextIO

import msgspec

from kfdtrace.driver.aql import AQL, AmdSignal, SignalCondition
from kfdtrace.traces import records as R
from kfdtrace.traces.dump import Dumper, dump
from kfdtrace.traces.format import Record, TraceError, TraceReader
from kfdtrace.traces.semaphores import semaphore_facts
from kfdtrace.traces.walk import QueueInfo, Submission

MAX_EVENTS = 1 << 18  # trace events a timeline may hold (about 1.2 KB each until written: 300 MB at most)
PACKET_NS = 1000  # how long a packet is drawn when nothing says otherwise
CPU_SIGNAL_NS = 1000  # how long a CPU signal is drawn, at most
MAX_NAMES = 64  # buffers a checkpoint's instant names
MAX_DECREMENTS = 64  # packets remembered per AQL signal as decrementing it (the last ones submitted)
SIGNAL_VALUE = AmdSignal.value.offset  # where an amd_signal_t holds its value (a handle is its address)
MAX_THREADS = 1 << 16  # threads without a track whose last time is remembered
CPU_PID, GPU_PID = 1, 2
TIMING = (f"GPU times are not recorded: packets run in queue order from their doorbell, {PACKET_NS} ns each, a "
          "wait ending at the signal that satisfied it, a signal a CPU wait saw ending before that wait returned")


class TimelineTooLarge(TraceError):
    """A timeline that would hold more than MAX_EVENTS events."""


# -- JSON Lines -------------------------------------------------------------------------------------------------
def export_jsonl(reader: TraceReader, out: TextIO) -> int:
    """Every record as one JSON object per line, as `kfdtrace dump --json` writes them; how many records."""
    return dump(reader, lambda line: out.write(line + "\n"), as_json=True)


# -- the timeline's parts ------------------------------------------------------------------------------------
@dataclass(eq=False)
class Track:
    """One row of the timeline: a queue's (`queue` set) or a recording thread's."""

    pid: int
    tid: int
    queue: QueueInfo | None = None
    thread: int | None = None
    ops: list[Slice] = field(default_factory=list)  # a queue's packets, in stream order


@dataclass(eq=False, slots=True)
class Slice:
    """A span of time on a track. A GPU packet's `end` is None until the queue is laid out."""

    track: Track
    name: str | None  # None: an empty submission's stand-in, drawn only as its submission
    args: dict
    start: int = 0
    end: int | None = None
    doorbell: int = 0  # a GPU packet: when its submission's doorbell rang
    after: list[Slice] = field(default_factory=list)  # a GPU packet: the signals its waits needed (packets', CPU's)
    upper: int | None = None  # a GPU packet: a CPU wait saw its signal at this time

    def point(self) -> int:
        """Where an arrow meets the slice: its last nanosecond."""
        return max(self.start, self.end - 1)


class Life:
    """The signals of one address since the CPU last moved it backwards, by value (equal values in order)."""

    __slots__ = ("values", "sources", "top")

    def __init__(self) -> None:
        self.values: list[int] = []
        self.sources: list[Slice] = []
        self.top = -1

    def add(self, value: int, source: Slice) -> None:
        i = bisect_right(self.values, value)
        self.values.insert(i, value)
        self.sources.insert(i, source)
        self.top = max(self.top, value)

    def satisfier(self, value: int) -> Slice | None:
        """The signal that first took the address to `value` or more, or None."""
        i = bisect_left(self.values, value)
        return self.sources[i] if i < len(self.values) else None


def _args(entry: dict, drop: Iterable[str] = ("record", "t", "tid")) -> dict:
    """A `dump --json` entry as a slice's args."""
    return {k: v for k, v in entry.items() if k not in drop}


def _number(v: int) -> str:
    return f"{v:#x}" if v >= 4096 else str(v)


def _timeout_ns(timeout: float) -> int | None:
    ns = timeout * 1e9  # 1e300 s is finite, its nanoseconds are not
    return int(ns) if math.isfinite(ns) and ns > 0 else None


# -- following the records -------------------------------------------------------------------------------------
class Timeline:
    """Builds the timeline record by record (`add`), then matches the GPU's waits and lays out its queues
    (`finish`)."""

    def __init__(self, dumper: Dumper, times: Mapping[int, int] | None = None):
        self.dumper, self.state, self.times = dumper, dumper.state, times
        self.tracks: list[Track] = []
        self.queue_tracks: dict[int, Track] = {}  # id(QueueInfo) -> its track (the track keeps it alive)
        self.thread_tracks: dict[int | None, Track] = {}
        self.submissions: list[tuple[Track, int, int, dict]] = []  # (track, first op, last op, args)
        self.cpu: list[Slice] = []
        self.instants: list[tuple[Track, int, str, dict]] = []
        self.flows: list[tuple[Slice, Slice, str]] = []
        self.lives: dict[int, Life] = {}
        self.gpu_waits: list[tuple[Life, int, Slice, str]] = []  # matched once every signal is known
        self.names: dict[int, str] = {}  # semaphore names the CPU's signals gave, by address
        self.decrements: dict[int, list[Slice]] = {}  # AQL signal value address -> packets decrementing it
        self.clock = 0  # the last time a record had
        self.cursor: dict[int | None, int] = {}  # each thread's last time
        self.count = 0  # events so far

    def _grow(self, n: int, r: Record) -> None:
        self.count += n
        if self.count > MAX_EVENTS:
            raise TimelineTooLarge(f"the timeline would hold more than {MAX_EVENTS} events (at record {r.n}): "
                                   "too large a trace to draw")

    def _time(self, r: Record) -> tuple[int | None, int]:
        """(the time of the thread's previous record or None, this record's time): a record without one takes
        the time before it, and no thread goes back in time."""
        t, tid = r.fields["t"] if self.times is None else self.times.get(r.n), r.fields["tid"]
        if type(t) is int:
            self.clock = t
        prev = self.cursor.get(tid)
        now = self.clock if prev is None else max(self.clock, prev)
        if prev is None and len(self.cursor) >= max(MAX_THREADS, 2 * len(self.thread_tracks)):
            # forget the threads that have no track: nothing of theirs can overlap
            self.cursor = {k: v for k, v in self.cursor.items() if k in self.thread_tracks}
        self.cursor[tid] = now
        return prev, now

    def _thread(self, tid: int | None) -> Track:
        track = self.thread_tracks.get(tid)
        if track is None:
            track = self.thread_tracks[tid] = Track(CPU_PID, len(self.tracks) + 1, thread=tid)
            self.tracks.append(track)
        return track

    def _queue(self, q: QueueInfo) -> Track:
        track = self.queue_tracks.get(id(q))
        if track is None:
            track = self.queue_tracks[id(q)] = Track(GPU_PID, len(self.tracks) + 1, queue=q)
            self.tracks.append(track)
        return track

    def add(self, r: Record, sub: Submission | None) -> None:
        if r.type not in R.RECORD_TYPES:  # a newer writer's: readers pass over it (FORMAT.md), its fields unchecked
            return
        prev, now = self._time(r)
        on = _ON.get(r.type)
        if on is not None:
            on(self, r, sub, prev, now)

    # -- records ---------------------------------------------------------------------------------------------
    def _doorbell(self, r: Record, sub: Submission | None, prev: int | None, now: int) -> None:
        label = sub.queue.label if sub is not None and sub.queue is not None else "of an unknown queue"
        self._instant(r, now, f"doorbell {label}", {"n": r.n, "submission": sub.number if sub else None})
        if sub is None or sub.queue is None:
            return
        track = self._queue(sub.queue)
        entry = self.dumper.entry(r, sub)
        self._grow(len(sub.packets) + 1, r)
        first = len(track.ops)
        for p in entry["packets"]:  # a dispatch by its kernel's name (campaign 122: all looked alike)
            name = f"{p['kernel']} ({p['name']})" if "kernel" in p else p["name"]
            track.ops.append(Slice(track, name, _args(p, ("name",)), doorbell=now))
        if not sub.packets:
            track.ops.append(Slice(track, None, {}, doorbell=now))
        args = _args(entry, ("record", "t", "tid", "packets", "ring", "queue_name"))
        self.submissions.append((track, first, len(track.ops) - 1, {**args, "doorbell_us": now / 1e3}))
        signals, waits = semaphore_facts(sub.packets)
        for i, addr, value in signals:
            self._signal(addr, value, track.ops[first + i], reset=False)
        for i, addr, value in waits:
            if value:
                self._grow(2, r)
                self.gpu_waits.append((self._life(addr), value, track.ops[first + i], self._label(addr)))
        if sub.queue.dialect is AQL:
            self._aql_signals(r, sub, track.ops[first:])

    def _aql_signals(self, r: Record, sub: Submission, ops: list[Slice]) -> None:
        """A packet decrements its completion signal as it completes; a BARRIER_AND completes once its
        dependency signals are at 0: after the packets submitted before it that decrement them."""
        for p, op in zip(sub.packets, ops, strict=False):
            for handle in AQL.settled(p):
                sources = [s for s in self.decrements.get(handle + SIGNAL_VALUE, ()) if s is not op]
                self._grow(2 * len(sources), r)
                op.after += sources
                self.flows += [(s, op, self._label(handle + SIGNAL_VALUE)) for s in sources]
            handle = AQL.completion(p)
            if handle:
                pending = self.decrements.setdefault(handle + SIGNAL_VALUE, [])
                pending.append(op)
                del pending[:-MAX_DECREMENTS]

    def _cpu_signal(self, r: Record, sub: Submission | None, prev: int | None, now: int) -> None:
        f = r.fields
        if f["name"]:
            self.names[f["addr"]] = f["name"]
        start = now - CPU_SIGNAL_NS if prev is None else max(prev, now - CPU_SIGNAL_NS)
        s = self._slice(r, start, now, f"signal {self._label(f['addr'])} = {_number(f['value'])}")
        self._signal(f["addr"], f["value"], s, reset=True)
        self.decrements.pop(f["addr"], None)  # an AQL signal set anew: what decremented it before is done with

    def _cpu_wait(self, r: Record, sub: Submission | None, prev: int | None, now: int) -> None:
        f = r.fields
        name = f"wait {self._label(f['addr'])} >= {_number(f['value'])}" + ("" if f["ok"] else " (timed out)")
        s = self._slice(r, self._wait_start(prev, now, f["timeout"]), now, name)
        life = self.lives.get(f["addr"])
        source = life.satisfier(f["value"]) if life is not None and f["ok"] and f["value"] else None
        if source is None:
            return
        self._grow(2, r)
        self._returned(source, s, now, f["addr"])

    def _signal_wait(self, r: Record, sub: Submission | None, prev: int | None, now: int) -> None:
        """A CPU wait on an AQL signal; one that saw it at 0 or below came after every packet decrementing it."""
        f = r.fields
        try:
            condition = SignalCondition(f["condition"]).name
        except ValueError:
            condition = f"condition {f['condition']}"
        name = f"wait signal {self._label(f['addr'])} {condition} {f['value']}" + ("" if f["ok"] else " (timed out)")
        s = self._slice(r, self._wait_start(prev, now, f["timeout"]), now, name)
        if f["ok"] and f["seen"] <= 0:
            sources = self.decrements.get(f["addr"], ())
            self._grow(2 * len(sources), r)
            for source in sources:
                self._returned(source, s, now, f["addr"])

    def _returned(self, source: Slice, wait: Slice, now: int, addr: int) -> None:
        """CPU wait `wait`, returned at `now`, saw the signal at `addr` that `source` made."""
        self.flows.append((source, wait, self._label(addr)))
        if source.end is None:  # a GPU packet: its signal had landed when the wait returned
            source.upper = now - 1 if source.upper is None else min(source.upper, now - 1)

    def _event_wait(self, r: Record, sub: Submission | None, prev: int | None, now: int) -> None:
        f = r.fields
        name = f"wait event {f['event']}" + ("" if f["ok"] else " (timed out)")
        self._slice(r, self._wait_start(prev, now, f["timeout"]), now, name)

    def _mark(self, r: Record, sub: Submission | None, prev: int | None, now: int) -> None:
        what = {R.EVENT_SET: "set event", R.EVENT_RESET: "reset event"}.get(r.type)
        self._instant(r, now, f"{what} {r.fields['event']}" if what else r.type, _args(self.dumper.entry(r, None)))

    def _checkpoint(self, r: Record, sub: Submission | None, prev: int | None, now: int) -> None:
        e = self.dumper.entry(r, None)  # its buffers by name, not their chunks' keys (thousands for a large one)
        names = [b.get("name") or b.get("where") or f"{b['va']:#x}" for b in e["buffers"]]
        args = {"n": r.n, "wait": e["wait"], "buffers": names[:MAX_NAMES], "more_buffers": len(names[MAX_NAMES:])}
        if e.get("racy"):  # left out: a race between queues decided them
            args["racy"] = [b.get("name") or f"{b['va']:#x}" for b in e["racy"][:MAX_NAMES]]
        self._instant(r, now, "checkpoint", args)

    # -- helpers ---------------------------------------------------------------------------------------------
    @staticmethod
    def _wait_start(prev: int | None, now: int, timeout: float) -> int:
        start = now - CPU_SIGNAL_NS if prev is None else prev
        limit = _timeout_ns(timeout)
        return max(start, now - limit) if limit is not None else start

    def _slice(self, r: Record, start: int, end: int, name: str) -> Slice:
        self._grow(1, r)
        s = Slice(self._thread(r.fields["tid"]), name, _args(self.dumper.entry(r, None)), min(start, end), end)
        self.cpu.append(s)
        return s

    def _instant(self, r: Record, now: int, name: str, args: dict) -> None:
        self._grow(1, r)
        self.instants.append((self._thread(r.fields["tid"]), now, name, args))

    def _life(self, addr: int) -> Life:
        life = self.lives.get(addr)
        if life is None:
            life = self.lives[addr] = Life()
        return life

    def _signal(self, addr: int, value: int, source: Slice, reset: bool) -> None:
        life = self._life(addr)
        if reset and value < life.top:  # the CPU moved it back: a new life
            life = self.lives[addr] = Life()
        life.add(value, source)

    def _label(self, addr: int) -> str:
        """A semaphore's name (as the CPU's signals gave it) and where it is: 'ping (semaphores+0x10)'."""
        name, where = self.names.get(addr), self.state.where(addr) or f"{addr:#x}"
        return f"{name} ({where})" if name else where

    # -- the end -------------------------------------------------------------------------------------------------
    def finish(self) -> None:
        """Match the GPU waits to their signals and lay out every queue."""
        for life, value, op, label in self.gpu_waits:
            source = life.satisfier(value)
            if source is not None and source is not op:
                op.after.append(source)
                self.flows.append((source, op, label))
        queues = [t for t in self.tracks if t.queue is not None]
        for t in queues:
            upper = None
            for op in reversed(t.ops):  # a packet ends before any later one on its queue
                if op.upper is not None and (upper is None or op.upper < upper):
                    upper = op.upper
                op.upper = upper
        lay_out(queues)


def _place(op: Slice, prev_end: int | None) -> None:
    """Lay out one packet after the one before it on its queue (see the module's Timing)."""
    start = op.doorbell if prev_end is None else max(prev_end, op.doorbell)
    end = start + PACKET_NS
    if op.upper is not None:
        end = max(start, min(end, op.upper))
    for before in op.after:
        if before.end is not None:
            end = max(end, before.end)
    op.start, op.end = start, end


def lay_out(queues: list[Track]) -> None:
    """Place every queue's packets in time, each after the packet its wait needed on another queue; a packet
    waiting in a cycle (a wait matched to a signal that cannot have come first) goes without."""
    at = dict.fromkeys(queues, 0)  # the next packet of each queue
    todo = deque(queues)
    blocked: dict[Slice, list[Track]] = {}  # an unplaced packet -> the queues waiting for it
    while todo or blocked:
        if not todo:  # a cycle: let the earliest blocked packet go
            waiting = min((q.ops[at[q]] for qs in blocked.values() for q in qs), key=lambda op: op.doorbell)
            waiting.after = []
            for qs in blocked.values():
                if waiting.track in qs:
                    qs.remove(waiting.track)
            todo.append(waiting.track)
            blocked = {k: v for k, v in blocked.items() if v}
            continue
        q = todo.popleft()
        ops, i = q.ops, at[q]
        while i < len(ops):
            op = ops[i]
            unplaced = next((b for b in op.after if b.end is None and b.track is not q), None)
            if unplaced is not None:
                blocked.setdefault(unplaced, []).append(q)
                break
            _place(op, ops[i - 1].end if i else None)
            i += 1
            todo.extend(blocked.pop(op, ()))
        at[q] = i


_ON = {
    R.DOORBELL: Timeline._doorbell,
    R.CPU_SIGNAL: Timeline._cpu_signal,
    R.CPU_WAIT: Timeline._cpu_wait,
    R.SIGNAL_WAIT: Timeline._signal_wait,
    R.EVENT_WAIT: Timeline._event_wait,
    R.EVENT_SET: Timeline._mark,
    R.EVENT_RESET: Timeline._mark,
    R.CHECKPOINT: Timeline._checkpoint,
    R.NOTE: Timeline._mark,
}


# -- trace events ------------------------------------------------------------------------------------------------
# Each event is first a sort key, (pid, tid, ts, kind, -dur, depth, seq): a track's events by time, a slice before
# what happens at its start, a parent before its child; its dict is made only as it is written.
SLICE, INSTANT, START, FINISH = range(4)


def _us(ns: int) -> float:
    return ns / 1e3


def _track_name(tl: Timeline, t: Track) -> str:
    if t.queue is not None:
        q, gpus = t.queue, tl.state.gpus
        node = f" on GPU node {gpus[q.gpu]['node']}" if len(gpus) > 1 and q.gpu in gpus else ""
        return f"{q.label} {q.kind}{node}"
    name = tl.state.threads.get(t.thread) if t.thread is not None else None
    who = "unknown thread" if t.thread is None else f"thread {t.thread}"
    return f"{name} ({who})" if name else who


def _metadata(tl: Timeline) -> Iterator[dict]:
    yield {"name": "process_name", "ph": "M", "pid": CPU_PID, "tid": 0, "args": {"name": "CPU threads"}}
    yield {"name": "process_name", "ph": "M", "pid": GPU_PID, "tid": 0, "args": {"name": "GPU queues"}}
    names = [_track_name(tl, t) for t in tl.tracks]
    alike = Counter(names)
    seen: Counter[str] = Counter()
    for t, name in zip(tl.tracks, names, strict=True):
        if alike[name] > 1:  # a queue id used again after its queue's destroy: tracks in order of first submission
            seen[name] += 1
            name = f"{name} #{seen[name]}"
        yield {"name": "thread_name", "ph": "M", "pid": t.pid, "tid": t.tid, "args": {"name": name}}


def _slices(tl: Timeline) -> Iterator[tuple]:
    """(key, (track, name, start, end, args)) of every slice: submissions, their packets, the CPU's."""
    seq = 0
    for track, first, last, args in tl.submissions:
        start, end = track.ops[first].start, track.ops[last].end
        seq += 1
        yield (track.pid, track.tid, start, SLICE, start - end, 0, seq), (track, f"submission {args['submission']}",
                                                                        start, end, args)
        for op in track.ops[first:last + 1]:
            if op.name is not None:
                seq += 1
                yield (track.pid, track.tid, op.start, SLICE, op.start - op.end, 1, seq), (track, op.name, op.start,
                                                                                           op.end, op.args)
    for s in tl.cpu:
        seq += 1
        yield (s.track.pid, s.track.tid, s.start, SLICE, s.start - s.end, 0, seq), (s.track, s.name, s.start, s.end,
                                                                                     s.args)


def _instants(tl: Timeline) -> Iterator[tuple]:
    for seq, (track, ts, name, args) in enumerate(tl.instants):
        yield (track.pid, track.tid, ts, INSTANT, 0, 0, seq), (track, name, ts, args)


def _flows(tl: Timeline) -> Iterator[tuple]:
    """Each wait's arrow from its signal, numbered from 1; one whose ends the layout could not order (a wait
    matched in a cycle, clocks that disagree) is left out."""
    n = 0
    for source, sink, label in tl.flows:
        s, f = source.point(), sink.point()
        if s > f:
            continue
        n += 1
        yield (source.track.pid, source.track.tid, s, START, 0, 0, n), (source.track, label, s, n)
        yield (sink.track.pid, sink.track.tid, f, FINISH, 0, 0, n), (sink.track, label, f, n)


def _event(key: tuple, what: tuple) -> dict:
    kind, track = key[3], what[0]
    if kind == SLICE:
        _, name, start, end, args = what
        return {"name": name, "cat": "cpu" if track.queue is None else "gpu", "ph": "X", "ts": _us(start),
                "dur": _us(end - start), "pid": track.pid, "tid": track.tid, "args": args}
    if kind == INSTANT:
        _, name, ts, args = what
        return {"name": name, "cat": "cpu", "ph": "i", "s": "t", "ts": _us(ts), "pid": track.pid, "tid": track.tid,
                "args": args}
    _, label, ts, n = what
    e = {"name": label, "cat": "semaphore", "ph": "s" if kind == START else "f", "id": n, "ts": _us(ts),
         "pid": track.pid, "tid": track.tid}
    if kind == FINISH:
        e["bp"] = "e"  # bound to the wait's slice, which holds it
    return e


def timeline_events(reader: TraceReader, times: Mapping[int, int] | None = None) -> tuple[Iterator[dict],
                                                                                        dict[str, int]]:
    """The timeline's trace events (metadata first, then each track's by time), made as they are iterated, and
    how many tracks, slices, flows and instants they hold. `times`: each record's time by its number, instead
    of the recorded one (a replay's; a record without one takes the time before it)."""
    dumper = Dumper(reader)
    tl = Timeline(dumper, times)
    for r, sub in dumper.selected():
        tl.add(r, sub)
    tl.finish()
    timed = sorted((*_slices(tl), *_instants(tl), *_flows(tl)), key=lambda e: e[0])
    kinds = [e[0][3] for e in timed]
    counts = {"tracks": len(tl.tracks), "slices": kinds.count(SLICE), "flows": kinds.count(START),
              "instants": kinds.count(INSTANT)}
    return itertools.chain(_metadata(tl), (_event(key, what) for key, what in timed)), counts


def export_perfetto(reader: TraceReader, path: str, times: Mapping[int, int] | None = None,
                    source: str = "kfdtrace export") -> dict[str, int]:
    """Write the trace's timeline to `path` ('-': stdout) as a Chrome trace-event JSON object; how many tracks,
    slices, flow arrows and instants it holds. `times`: as for timeline_events; `source` says whose times."""
    events, counts = timeline_events(reader, times)
    header = reader.header
    # campaign 120: a replay's timeline said only that GPU times are not recorded
    timing = TIMING if times is None else f"record times are the replay's, taken as it handled each; {TIMING}"
    meta = {"source": source, "trace": header.get("name"), "recorded": header.get("created"), "timing": timing,
            **counts}
    encode = msgspec.json.Encoder().encode
    out = sys.stdout if path == "-" else open(path, "w")
    try:
        out.write('{"traceEvents":[')
        for i, e in enumerate(events):
            out.write((",\n" if i else "\n") + encode(e).decode())
        out.write(f'\n],"displayTimeUnit":"ns","metadata":{encode(meta).decode()}}}\n')
    finally:
        if out is not sys.stdout:
            out.close()
    return counts
