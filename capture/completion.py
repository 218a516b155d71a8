"""Which submitted GPU work is known complete, from what the CPU observed.

A queue executes its packets in order, so "complete up to byte `done` of the queue's stream" is all there is
to know about one queue. It advances only on evidence:

* a CPU wait that returned saw a semaphore reach a value: every GPU signal of that semaphore with a lower
  value has landed (timeline semaphores only move forward), so each signalling queue is complete up to the
  signal; so has the signal of that very value when one queue alone gave it in the semaphore's life (its
  earliest signal of it) and it was not reached before: two queues signalling 1, or a queue signalling 1
  where the CPU had already seen or stored 1, leave which signal was seen unknown;
* a CPU wait on a KFD event returned: a TRAP carrying that event ran; when only one queue has such TRAPs
  pending, its earliest is complete -- unless the event may have been set otherwise: by a TRAP already known
  complete, or by the CPU, whose setting no wait has taken since (an auto-reset event's wait takes it; a
  manual-reset event stays set until the CPU resets it);
* a queue complete past one of its own GPU waits had that wait satisfied: the same rule as a CPU wait, in
  turn (this is how completion flows along semaphore chains);
* a CPU wait saw an AQL signal at 0 or below: when one packet alone is pending that decrements it (its
  completion signal), that packet completed;
* a queue complete past a BARRIER_AND saw each of its dependency signals at 0: the same rule, in turn (a
  GPU wait of value None).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

MAX_SIGNALS_PER_ADDRESS = 4096  # beyond this the oldest unconfirmed signals are forgotten (they stay unknown)
MANY = "many"  # a value several queues (or the CPU, or a queue after the value was reached) gave: whose was seen?


@dataclass(eq=False)
class QueueProgress:
    """One queue's stream: how far it is known complete, and its GPU waits and TRAPs beyond that."""

    name: str
    done: int = 0
    destroyed: bool = False  # nothing of it runs any more (complete or not)
    ended: int | None = None  # how many submissions the recorder had learnt when it was destroyed
    waits: deque[tuple[int, int, int]] = field(default_factory=deque)  # (end position, address, value)
    traps: deque[tuple[int, int]] = field(default_factory=deque)  # (end position, event id)

    def complete(self, position: int) -> bool:
        return self.done >= position


Signal = tuple[int, int, int]  # (end position in its queue's stream, address, value)
Wait = tuple[int, int, int | None]  # (end position, address, value the memory reached: >= value; None: an AQL
# signal's value reached 0)


class Completion:
    """Every queue's known-complete position, advanced by observations."""

    def __init__(self) -> None:
        self._signals: dict[int, list[tuple[int, QueueProgress, int]]] = {}  # address -> [(value, queue, pos)]
        self._decrements: dict[int, list[tuple[QueueProgress, int]]] = {}  # AQL signal -> [(queue, pos)]
        # address -> value -> who first gave it in the address's life: (queue, position) when one queue alone
        # did and the value was not reached before, else MANY; values below the last seen are forgotten
        self._givers: dict[int, dict[int, tuple[QueueProgress, int] | str]] = {}
        self._reached: dict[int, int] = {}  # address -> the highest value known reached in its life
        # AQL signal -> [the value the CPU last stored, the decrements submitted since], while no GPU stored to it
        self._armed: dict[int, list[int]] = {}
        self._manual: set[int] = set()  # KFD events that stay set until the CPU resets them (not auto-reset)
        self._set: set[int] = set()  # events that may be set by what is known (a complete TRAP, the CPU) untaken

    def decrements(self, queue: QueueProgress, pos: int, addr: int, shows: bool = True) -> None:
        """The packet ending at `pos` of `queue` decrements the AQL signal at `addr` once it completes; `shows`:
        its completion shows its queue complete up to it (HSA: a packet with the barrier bit)."""
        armed = self._armed.get(addr)
        if armed is not None:
            armed[1] += 1
        if shows:
            pending = [d for d in self._decrements.get(addr, ()) if not d[0].complete(d[1])]
            self._decrements[addr] = pending[-MAX_SIGNALS_PER_ADDRESS:] + [(queue, pos)]

    def reached_zero(self, addr: int) -> None:
        """The AQL signal at `addr` was seen at 0 or below: if one packet alone was pending that decrements it,
        that packet completed; and so did all of them when as many were submitted since the CPU stored its value
        as that value counts down (with more, which of them did is not known)."""
        pending = [d for d in self._decrements.pop(addr, ()) if not d[0].complete(d[1])]
        armed = self._armed.get(addr)
        if len(pending) == 1 or pending and armed is not None and armed[1] == armed[0]:
            for d in pending:
                for waited in self._advance(*d):
                    self.observed(*waited)
        elif pending:
            self._decrements[addr] = pending

    def submitted(self, queue: QueueProgress, signals: list[Signal], waits: list[Wait],
                  traps: list[tuple[int, int]]) -> None:
        """The completion facts of one submission, in stream order."""
        by_addr = self._signals
        for pos, addr, value in signals:
            pending = by_addr.get(addr)
            if pending is None:
                pending = by_addr[addr] = []
            elif len(pending) >= MAX_SIGNALS_PER_ADDRESS:
                pending[:] = [s for s in pending if not s[1].complete(s[2])][-MAX_SIGNALS_PER_ADDRESS // 2:]
            pending.append((value, queue, pos))
            self._gave(addr, value, (queue, pos))
            self._armed.pop(addr, None)  # a GPU store: how far the value counted down is not known
        if waits:
            queue.waits.extend(waits)
        if traps:
            queue.traps.extend(traps)

    def stored(self, addr: int, value: int, backwards: bool) -> None:
        """The CPU stored `value` at `addr`. Moving it backwards (a semaphore slot reused) begins a new life: the
        GPU signals pending there belong to the earlier one and say nothing about it."""
        if backwards:
            for held in (self._signals, self._givers, self._reached):
                held.pop(addr, None)
        self._gave(addr, value, MANY)  # seeing it says nothing of a GPU signal of it
        self._reach(addr, value)
        self._armed[addr] = [value, 0]

    def _gave(self, addr: int, value: int, giver: tuple[QueueProgress, int] | str) -> None:
        givers = self._givers.get(addr)
        if givers is None:
            givers = self._givers[addr] = {}
        elif len(givers) >= MAX_SIGNALS_PER_ADDRESS:  # forgotten values count as reached: whoever gives them
            self._reach(addr, max(givers))
        before = givers.get(value)
        if value <= self._reached.get(addr, -1) or before is MANY or before is not None and (
                giver is MANY or before[0] is not giver[0]):
            giver = MANY
        elif before is not None:
            return  # the same queue again: its earliest signal of the value stays the one a sight of it shows
        givers[value] = giver

    def _reach(self, addr: int, value: int) -> None:
        """`addr` is known to have reached `value`: later signals of it or less show nothing when seen."""
        if value > self._reached.get(addr, -1):
            self._reached[addr] = value
            givers = self._givers.get(addr)
            if givers:
                for v in [v for v in givers if v < value]:
                    del givers[v]

    def observed(self, addr: int, value: int) -> None:
        """Memory at `addr` was seen at `value` or more."""
        work = [(addr, value)]
        while work:
            addr, value = work.pop()
            if value is None:  # a barrier passed an AQL signal at 0
                self.reached_zero(addr)
                continue
            pending = self._signals.get(addr)
            seen = self._givers.get(addr, {}).get(value)
            self._reach(addr, value)
            if not pending:
                continue
            keep = []
            for signal in pending:
                v, queue, pos = signal
                if v < value or v == value and seen == (queue, pos):
                    work += self._advance(queue, pos)
                elif not queue.complete(pos):
                    keep.append(signal)
            self._signals[addr] = keep

    def event_created(self, event_id: int, auto_reset: bool) -> None:
        self._set.discard(event_id)
        (self._manual.discard if auto_reset else self._manual.add)(event_id)

    def event_set(self, event_id: int) -> None:
        """The event is set (by the CPU, or by a TRAP known complete): a wait that returns may have seen that."""
        self._set.add(event_id)

    def event_reset(self, event_id: int) -> None:
        self._set.discard(event_id)

    def event_fired(self, event_id: int, queues: list[QueueProgress]) -> None:
        """A wait on KFD event `event_id` returned: if nothing known set it, and one queue alone has TRAPs of it
        pending, the earliest of them ran. An auto-reset event's wait takes what set it."""
        if event_id not in self._set:
            holders = [q for q in queues if any(e == event_id for _, e in q.traps)]
            if len(holders) == 1:
                queue = holders[0]
                pos = next(p for p, e in queue.traps if e == event_id)
                for addr, value in self._advance(queue, pos):
                    self.observed(addr, value)
        if event_id not in self._manual:
            self._set.discard(event_id)

    def _advance(self, queue: QueueProgress, pos: int) -> list[tuple[int, int]]:
        """The queue is complete up to `pos`: the (address, value) of the GPU waits that passed on the way."""
        if pos <= queue.done:
            return []
        queue.done = pos
        passed = []
        while queue.waits and queue.waits[0][0] <= pos:
            _, addr, value = queue.waits.popleft()
            passed.append((addr, value))
        while queue.traps and queue.traps[0][0] <= pos:
            self._set.add(queue.traps.popleft()[1])  # it ran: its event may be set still, for a wait to take
        return passed
