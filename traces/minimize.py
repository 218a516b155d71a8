"""`kfdtrace minimize`: the smallest trace a command still fails on, by delta debugging (Zeller's ddmin).

Three passes, each over what the one before kept: the submissions, then the packets of each submission, then
the CPU writes (`mem` records). Every candidate is a valid trace: a dropped submission's doorbell record goes,
a dropped packet's bytes are cut from its submission's ring bytes (the doorbell values that follow move back
by them), a dropped CPU write's record goes; every other record stays, but for what checkpoints verify: a
buffer that a dropped packet or CPU write wrote is no longer verified (a dispatch dropped: no buffer is), nor is
one a kept packet writes after reading an unverified one (a kernel kept then: no buffer is), or the candidate
would fail on contents it cannot make, a failure of its own. A candidate reproduces when the command
exits with the status it gave on the original trace (and, with `match`, prints a match), the same test `--until`
names; candidates of one round run side by side (`jobs`). A failure that depends on timing (a race the cuts
opened, say) would shrink to a trace that reproduces only sometimes: a candidate is kept only when the command
reproduces on it `confirm` runs in a row, as it must on the original and on the result.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import re
import shlex
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from kfdtrace.driver import kfd_ioctl as K
from kfdtrace.driver.packets import Packet
from kfdtrace.replay.translate import carries_dispatch
from kfdtrace.traces import records as R
from kfdtrace.traces.format import Record, TraceError, TraceReader, TraceWriter
from kfdtrace.traces.rewrite import TraceCopy
from kfdtrace.traces.walk import Submission, TraceState, reads

MAX_RECORDS = 2_000_000  # records a trace to minimize may hold (they are kept in memory): trim bigger ones first
Item = tuple[int, int]  # (record number, packet index; -1 for the whole record)


class MinimizeError(TraceError):
    """A trace or command minimize cannot work with."""


@dataclass
class MinimizeReport:
    before: dict[str, int]
    after: dict[str, int]
    tries: int  # candidates tried
    runs: int  # runs of the command
    seconds: float

    def lines(self) -> list[str]:
        ratios = ", ".join(f"{k} {self.before[k]} -> {self.after[k]} ({self.after[k] / max(1, self.before[k]):.1%})"
                           for k in self.before)
        return [f"{ratios}; {self.tries} tries ({self.runs} runs of the command) in {self.seconds:.1f} s"]


class Minimizer:
    """The trace in memory, and candidates written from it."""

    def __init__(self, trace: TraceReader):
        if trace.record_count > MAX_RECORDS:
            raise MinimizeError(f"{trace.path}: {trace.record_count} records is more than minimize holds "
                                f"({MAX_RECORDS}): trim it to the part that fails first")
        self.trace = trace
        state = TraceState(trace.header)
        self.records: list[Record] = []
        self.subs: dict[int, Submission] = {}  # doorbell record number -> what it submitted
        # what each doorbell's packets (by index) and each CPU write (one) wrote: the buffers, by va; None for a
        # dispatch (its kernel may write any)
        self.writes: dict[int, list[set[int] | None]] = {}
        self.reads: dict[int, list[set[int]]] = {}  # the buffers, by va, each doorbell's packets read
        for r in R.checked(trace.records()):
            sub = state.apply(r)
            if sub is not None:
                if sub.error:
                    raise MinimizeError(f"{trace.path}: submission {sub.number} cannot be cut into packets: "
                                        f"{sub.error}")
                self.subs[r.n] = sub
                self.writes[r.n] = [None if carries_dispatch(p.defn) else
                                    {b.va for a in p.written_addresses() if (b := state.buffer_at(a)) is not None}
                                    for p in sub.packets]
                self.reads[r.n] = [{b.va for a in reads(p) if (b := state.buffer_at(a)) is not None}
                                   for p in sub.packets]
            elif r.type == R.MEM and (b := state.buffer_at(r.fields["va"])) is not None:
                self.writes[r.n] = [{b.va}]
            self.records.append(r)

    def submissions(self) -> list[Item]:
        return [(n, -1) for n in self.subs]

    def packets(self, kept: Sequence[Item]) -> list[Item]:
        return [(n, i) for n, _ in kept for i in range(len(self.subs[n].packets))]

    def memory(self) -> list[Item]:
        return [(r.n, -1) for r in self.records if r.type == R.MEM]

    def write(self, path: str, drop: set[int], packets: dict[int, set[int]] | None = None) -> dict[str, int]:
        """A candidate: the trace without the records `drop` names, each doorbell of `packets` holding only the
        packets it lists; its records, submissions and packets."""
        with TraceWriter(path, self.trace.header, clock=self.trace.clock, delta=self.trace.delta,
                         submission_type=self.trace.submission_type) as w:
            out, wptr = TraceCopy(self.trace, w), {}
            unverified: set[int] | None = set()  # buffers a dropped write wrote (None: any buffer)
            for r in self.records:
                if r.n in drop or (packets is not None and r.n in self.subs):
                    unverified = self._dropped(r.n, drop, packets, unverified)
                if r.n in drop:
                    continue
                sub = self.subs.get(r.n)
                if sub is None:
                    if r.type == R.CHECKPOINT and unverified != set():
                        verified = [b for b in r.fields["buffers"]
                                    if unverified is not None and b["va"] not in unverified]
                        out.record(r.type, {**r.fields, "buffers": verified})
                    else:
                        out.record(r.type, r.fields)
                    continue
                indices = range(len(sub.packets)) if packets is None else sorted(packets.get(r.n, ()))
                kept = [sub.packets[i] for i in indices]
                if packets is not None and not kept:
                    continue
                if unverified:  # what a kept packet makes of unverified bytes is unverified too
                    unverified = self._tainted(r.n, indices, unverified)
                ring = b"".join(self._packet(r.fields["ring"], p, kept if packets is not None else None)
                                for p in kept)
                q = r.fields["queue"]
                wptr[q] = wptr.get(q, sub.base) + len(ring)  # bytes; the doorbell value says it in its units
                value = r.fields["value"] if packets is None else _value_at(sub, wptr[q])
                out.record(r.type, {**r.fields, "ring": ring, "value": value},
                           Submission(sub.number, sub.queue, sub.base, kept))
            w.close(out.summary(keep=("undrained",)))  # a replay of it lets those queues stand still too
        return {"records": sum(out.counts.values()), "submissions": out.counts[R.DOORBELL],
                "packets": sum(out.packets.values()), "bytes": os.path.getsize(path)}


    @staticmethod
    def _packet(ring: bytes, p: Packet, kept: list[Packet] | None) -> bytes:
        """The bytes of packet `p` of `ring`; a conditional's count of the dwords it governs cut to those of the
        `kept` packets (campaign 104: a candidate cutting a packet a PRED_EXEC governs was no packet stream)."""
        raw = ring[p.offset:p.offset + p.size]
        if kept is None or p.defn.skip_field is None:
            return raw
        end = p.offset + p.size + 4 * p.fields[p.defn.skip_field]
        governed = sum(q.size for q in kept if p.offset + p.size <= q.offset < end)
        out = bytearray(raw)
        p.defn.put(out, 0, p.defn.skip_field, governed // 4)
        return bytes(out)

    def _dropped(self, n: int, drop: set[int], packets: dict[int, set[int]] | None,
                 unverified: set[int] | None) -> set[int] | None:
        """`unverified` with what record `n`'s dropped packets (all of them when it is dropped) or CPU write
        wrote."""
        keep = () if n in drop or packets is None else packets.get(n, ())
        for i, wrote in enumerate(self.writes.get(n, ())):
            if i not in keep:
                if wrote is None:
                    return None
                if unverified is not None:
                    unverified |= wrote
        return unverified


    def _tainted(self, n: int, kept: Sequence[int], unverified: set[int]) -> set[int] | None:
        """`unverified` with what the kept packets `kept` of doorbell `n` write after reading an unverified buffer
        (None: any buffer, when a kernel runs, which may read anything)."""
        for i in kept:
            wrote = self.writes[n][i]
            if wrote is None:
                return None
            if self.reads[n][i] & unverified:
                unverified |= wrote
        return unverified


def ddmin(items: list[Item], reproduces: Callable[[list[list[Item]]], int | None]) -> list[Item]:
    """A 1-minimal subset of `items` that reproduces. `reproduces(candidates)` tries them (side by side, as it
    likes) and says which one, the first in order, reproduces (None: none does)."""
    n = 2
    while len(items) >= 2:
        size = -(-len(items) // n)
        chunks = [items[i:i + size] for i in range(0, len(items), size)]
        hit = reproduces(chunks)
        if hit is not None:
            items, n = chunks[hit], 2
            continue
        complements = [[x for j, c in enumerate(chunks) if j != i for x in c] for i in range(len(chunks))]
        hit = reproduces(complements) if len(chunks) > 2 else None
        if hit is not None:
            items, n = complements[hit], max(n - 1, 2)
            continue
        if n >= len(items):
            break
        n = min(len(items), 2 * n)
    return items


class CommandTest:
    """The outcome of running `until` ({trace} replaced by a candidate's path): its exit status, or 'timeout',
    or 'no match' when `match` (a regular expression) is not in what it printed. `stop` kills the runs under
    way (each in a process group of its own, with whatever it started) and refuses new ones."""

    def __init__(self, until: str, match: str | None, timeout: float):
        try:
            self.argv = shlex.split(until)
        except ValueError as exc:  # an unclosed quote, say
            raise ValueError(f"--until {until!r} is no command line: {exc}") from None
        if not any("{trace}" in a for a in self.argv):
            raise ValueError(f"--until {until!r} never names {{trace}}: the candidate would not be what it runs")
        try:
            self.pattern = re.compile(match) if match is not None else None
        except re.error as exc:
            raise ValueError(f"--match {match!r} is no regular expression: {exc}") from None
        self.timeout = timeout
        self._running: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self._stopped = False

    def __call__(self, path: str) -> int | str:
        run = None
        try:
            with self._lock, _interrupts_deferred():
                if self._stopped:
                    raise MinimizeError("minimize was stopped")
                try:
                    run = subprocess.Popen([a.replace("{trace}", path) for a in self.argv], stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                                           start_new_session=True)
                except OSError as exc:
                    raise ValueError(f"--until: cannot run {self.argv[0]!r}: {exc.strerror}") from None
                self._running.add(run)
            out, err = run.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            _kill(run)
            return "timeout"
        except BaseException:  # interrupted as it starts or runs: this thread, which reads its pipes, reaps it
            if run is not None:
                _kill(run)
            raise
        finally:
            if run is not None:
                with self._lock:
                    self._running.discard(run)
        if self.pattern is not None and not self.pattern.search(out + err):
            return "no match"
        return run.returncode

    def stop(self) -> None:
        """Kill the runs under way (each thread waiting for its own reaps it: two reading one run's pipes at
        once fail) and start no more."""
        with self._lock:
            self._stopped = True
            for run in self._running:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(run.pid, signal.SIGKILL)


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Within, on the main thread: Ctrl-C or SIGTERM waits till the end. An interrupt raised between the child's
    start and `Popen` returning would lose the only handle that can kill it (and its process group)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals' handlers run on the main thread only
        return
    got: list[int] = []
    before = {s: signal.signal(s, lambda signum, frame: got.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
        for s in got:
            signal.raise_signal(s)


def _kill(run: subprocess.Popen) -> None:
    """Kill a run's process group and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(run.pid, signal.SIGKILL)
    run.communicate()


def _said(outcome: int | str) -> str:
    """An outcome as a message says it: 'exit status 1', 'timeout'."""
    return f"exit status {outcome}" if isinstance(outcome, int) else repr(outcome)


def minimize(trace: TraceReader, out: str, outcome: Callable[[str], int | str], jobs: int = 1,
             progress: Callable[[str], None] = lambda text: None, confirm: int = 3) -> MinimizeReport:
    """Write to `out` the smallest trace found whose `outcome` is the original's, `confirm` runs in a row. When
    it is interrupted, `outcome`'s runs under way are stopped (a CommandTest's) before its files are removed."""
    if confirm < 1:
        raise ValueError(f"confirm must be at least 1, not {confirm}")
    t0 = time.perf_counter()
    m = Minimizer(trace)
    runs = itertools.count(1)  # next() is atomic: the pool's threads share it

    def outcomes(path: str) -> list[int | str]:
        """The command's outcome on `path`, `confirm` times (fewer: up to the first that is not the first's)."""
        got = [outcome(path)]
        next(runs)
        while len(got) < confirm and got[-1] == got[0]:
            got.append(outcome(path))
            next(runs)
        return got

    pool = ThreadPoolExecutor(max_workers=max(1, jobs))
    smallest = _Smallest()
    with tempfile.TemporaryDirectory(prefix="kfdtrace-minimize-") as tmp:
        try:
            before = m.write(os.path.join(tmp, "original.kfdtrace"), set())
            first = outcomes(os.path.join(tmp, "original.kfdtrace"))
            expected = first[0]
            if expected in ("timeout", "no match"):
                raise MinimizeError(f"the command gives {_said(expected)} on the original trace: nothing to keep")
            if len(set(first)) > 1:
                raise MinimizeError(f"the command gives {_said(first[0])}, then {_said(first[-1])} on the original "
                                    f"trace: minimize needs a failure that reproduces every time (a longer replay "
                                    f"--timeout, say)")
            tries, seen = 1, {}

            def attempt(drop: frozenset[int], packets: dict[int, set[int]] | None, k: int) -> bool:
                key = (drop, None if packets is None else frozenset((n, frozenset(v)) for n, v in packets.items()))
                if key not in seen:
                    path = os.path.join(tmp, f"c{k}.kfdtrace")
                    m.write(path, set(drop), packets)
                    got = outcomes(path)
                    seen[key] = len(got) == confirm and set(got) == {expected}
                    os.unlink(path)
                    if seen[key]:
                        smallest.offer(drop, packets)
                return seen[key]

            Build = Callable[[list[Item]], tuple[frozenset[int], dict[int, set[int]] | None]]

            def tester(what: str, build: Build):
                def reproduces(candidates: list[list[Item]]) -> int | None:
                    nonlocal tries
                    left = len({x for c in candidates for x in c})
                    progress(f"{left} {what} left, trying {len(candidates)} cuts; {tries} tries in "
                             f"{time.perf_counter() - t0:.0f} s")
                    tries += len(candidates)
                    found = list(pool.map(lambda kc: attempt(*build(kc[1]), kc[0]), enumerate(candidates)))
                    return next((i for i, ok in enumerate(found) if ok), None)
                return reproduces

            everything = {n for n, _ in m.submissions()}
            subs = ddmin(m.submissions(), tester("submissions",
                                                 lambda c: (frozenset(everything - {n for n, _ in c}), None)))
            drop = frozenset(everything - {n for n, _ in subs})
            packets = ddmin(m.packets(subs), tester("packets", lambda c: (drop, _by_record(c))))
            kept_packets = _by_record(packets)
            mems = {n for n, _ in m.memory()}
            kept_mem = ddmin(m.memory(), tester("CPU writes",
                                                lambda c: (drop | (mems - {n for n, _ in c}), kept_packets)))
            final_drop = set(drop | (mems - {n for n, _ in kept_mem}))
            pool.shutdown()
            after = m.write(out, final_drop, kept_packets)
            last = outcomes(out)
            miss = next((i for i, got in enumerate(last) if got != expected), None)
            if miss is not None:
                raise MinimizeError(f"the minimized trace gave {_said(last[miss])}, not {_said(expected)}, in run "
                                    f"{miss + 1} of {confirm}: the failure depends on timing there; kept it at {out} "
                                    f"(minimize again with a larger --confirm: each cut kept must then fail that many "
                                    f"runs in a row)")
            return MinimizeReport(before, after, tries + 1, next(runs) - 1, time.perf_counter() - t0)
        except BaseException as exc:  # interrupted (or failed): nothing left running, no candidate written, then
            if isinstance(outcome, CommandTest):
                outcome.stop()
            pool.shutdown(wait=True, cancel_futures=True)
            if isinstance(exc, KeyboardInterrupt) and smallest.drop is not None:  # what it found is kept
                m.write(out, set(smallest.drop), smallest.packets)
                raise type(exc)(f"the smallest trace found so far (it gave {_said(expected)}, {confirm} time(s) in a "
                                f"row) is at {out}") from None
            raise


class _Smallest:
    """The smallest candidate that reproduced so far (most records dropped, then fewest packets kept), offered
    from the pool's threads."""

    def __init__(self) -> None:
        self.drop: frozenset[int] | None = None
        self.packets: dict[int, set[int]] | None = None
        self._lock = threading.Lock()

    @staticmethod
    def _size(drop: frozenset[int], packets: dict[int, set[int]] | None) -> tuple[int, float]:
        return -len(drop), math.inf if packets is None else sum(map(len, packets.values()))

    def offer(self, drop: frozenset[int], packets: dict[int, set[int]] | None) -> None:
        with self._lock:
            if self.drop is None or self._size(drop, packets) < self._size(self.drop, self.packets):
                self.drop, self.packets = drop, packets


def _value_at(sub: Submission, end: int) -> int:
    """The doorbell value that says packets are written up to byte `end` of `sub`'s queue's stream."""
    unit, past = K.DOORBELL_UNITS.get(sub.queue.type, (1, 0)) if sub.queue is not None else (1, 0)
    return end // unit - past


def _by_record(items: list[Item]) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    for n, i in items:
        out.setdefault(n, set()).add(i)
    return out
