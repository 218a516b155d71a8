"""Queue occupancy during a replay: how long each queue was busy, and how much of the run had two or more busy
at once (the overlap the trace's engines achieved).

Method: a background thread samples every watched queue's `idle` and read pointer each PERIOD s (a few memory
loads per queue: the engine's read pointer against the last write pointer rung; no lock the replay or the
engines take), and each sample's state is held until the next sample. Busy means the queue holds work it has
not consumed and does not stand at a packet that waits (its `waiting`: a poll at the read pointer, from the
packet tables' `wait` tag, or an AQL barrier): a queue waiting for another's signal is not doing work, and its
time so is `waiting_s`. Overlap is the share of the run with two or more queues busy so.

Resolution: a span shorter than the time between two samples may be missed, or counted as a whole period; each
busy time is good to about one period per interval. A span that starts and ends between two samples at which
the queue is idle is counted in `intervals` (its read pointer moved) with no busy time: an emulated SDMA queue
that runs a small copy within its doorbell call shows that way. The period is the thread's sleep plus its wait
for the GIL: with the emulator's engine threads running Python, a wake-up may wait up to
sys.getswitchinterval() (5 ms), so emulated replays were sampled every 0.5-2.7 ms rather than every 200 us
(`samples` in the result says how many were taken).

Cost (emulated gfx90a/gfx942 replays on 2 cores): a sample of one to three queues takes 4-9 us of GIL time on
average (at most about 20 us), 0.4-1% of the replay's time (`sampler_s` in the result is its own measure);
over 32-48 alternating runs of each of three traces, replays with the sampler were no slower than with one
that never woke (the medians' differences were within the run-to-run spread).

A queue is watched from its creation until just before it is destroyed: `unwatch` returns only once no sample
reads the queue, so the poll never touches freed queue memory.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from kfdtrace.driver import kfd_ioctl as K

PERIOD = 200e-6  # seconds between samples (at least: see the module docstring)
KINDS = {K.QueueType.COMPUTE: "pm4", K.QueueType.COMPUTE_AQL: "aql"}  # other queue types are SDMA engines'


class Busy(Protocol):
    @property
    def idle(self) -> bool: ...

    @property
    def rptr(self) -> int: ...  # monotonic: how far the engine has read


def queue_label(queue: dict, replayed_on: str | None = None) -> str:
    """How a recorded queue (a queue record's fields) is named: its id and its kind, and the kind it replays on
    when --queue-type changed it ('queue 0 (aql on pm4)')."""
    kind = KINDS.get(queue["type"], "sdma")
    return f"queue {queue['queue']} ({kind}{f' on {replayed_on}' if replayed_on not in (None, kind) else ''})"


@dataclass(eq=False)
class QueueBusy:
    """One label's figures: the queues recorded with that id and kind, over the run."""

    label: str
    busy_s: float = 0.0
    intervals: int = 0  # busy spans: seen busy, or idle at two samples with the read pointer moved between them
    waiting_s: float = 0.0  # holding work but standing at a packet that waits (on another queue, say)

    def to_dict(self) -> dict:
        return {"label": self.label, "busy_s": self.busy_s, "waiting_s": self.waiting_s,
                "intervals": self.intervals}


@dataclass
class Occupancy:
    seconds: float = 0.0  # from the first sample to the last
    overlap_s: float = 0.0  # with 2+ queues busy
    any_s: float = 0.0  # with 1+ queue busy
    samples: int = 0
    sampler_s: float = 0.0  # time spent sampling, from the sampler's own measure
    queues: list[QueueBusy] = field(default_factory=list)

    @property
    def overlap(self) -> float:
        """The fraction of the run with at least two queues busy at once."""
        return self.overlap_s / self.seconds if self.seconds else 0.0

    @property
    def busy_any(self) -> float:
        """The fraction of the run with at least one queue busy."""
        return self.any_s / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        return {"queues": [q.to_dict() for q in self.queues], "overlap": self.overlap, "busy_any": self.busy_any,
                "seconds": self.seconds, "samples": self.samples, "sampler_s": self.sampler_s}


@dataclass(eq=False)
class _Watch:
    track: QueueBusy
    queue: Busy
    rptr: int  # at the last sample


class Sampler:
    """Samples the queues it watches: from a thread (`start`, `stop`), or one `sample()` at a time (tests)."""

    def __init__(self, period: float = PERIOD, clock: Callable[[], float] = time.perf_counter):
        self.period, self._clock = period, clock
        self._lock = threading.Lock()  # the sampler's own: held by a sample and by (un)watching a queue
        self._watched: tuple[_Watch, ...] = ()
        self._tracks: dict[str, QueueBusy] = {}
        self._busy: set[QueueBusy] = set()  # those busy at the last sample
        self._waiting: set[QueueBusy] = set()  # those standing at a wait at the last sample
        self._then: float | None = None  # when the last sample was taken
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.occupancy = Occupancy()

    def watch(self, name: str, queue: Busy) -> None:
        track = self._tracks.get(name)
        if track is None:
            track = self._tracks[name] = QueueBusy(name)
            self.occupancy.queues.append(track)
        watch = _Watch(track, queue, queue.rptr)
        with self._lock:
            self._watched += (watch,)

    def unwatch(self, queue: Busy) -> None:
        """Stop sampling `queue`; no sample reads it once this returns."""
        with self._lock:
            self._watched = tuple(w for w in self._watched if w.queue is not queue)

    def sample(self) -> None:
        """Credit the time since the last sample to what was busy then, and read what is busy now."""
        cost = time.perf_counter()
        now = self._clock()
        busy, waiting = set(), set()
        with self._lock:
            for w in self._watched:
                rptr = w.queue.rptr
                if not w.queue.idle:
                    (waiting if getattr(w.queue, "waiting", False) else busy).add(w.track)
                elif rptr != w.rptr and w.track not in self._busy:
                    w.track.intervals += 1  # a span between two samples: no busy time is credited for it
                w.rptr = rptr
        occ = self.occupancy
        if self._then is not None:
            dt = now - self._then
            occ.seconds += dt
            for track in self._busy:
                track.busy_s += dt
            for track in self._waiting:
                track.waiting_s += dt
            if self._busy:
                occ.any_s += dt
                if len(self._busy) > 1:
                    occ.overlap_s += dt
        for track in busy - self._busy:
            track.intervals += 1
        self._busy, self._waiting, self._then = busy, waiting, now
        occ.samples += 1
        occ.sampler_s += time.perf_counter() - cost

    def start(self) -> None:
        self.sample()
        self._thread = threading.Thread(target=self._run, name="replay occupancy", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(self.period):
            self.sample()

    def stop(self) -> Occupancy:
        """Stop the thread, take a last sample and return the figures."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()
        return self.occupancy
