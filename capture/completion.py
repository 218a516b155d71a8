"""Which submitted GPU work is known complete, from what the CPU observed.

A queue executes its packets in order, so "complete up to byte `done` of the queue's stream" is all there is
to know about one queue. It advances only on evidence:

* a CPU wait that returned saw a semaphore at a value or more: some write of such a value landed. Memory
  holds what was written last, not the highest value ever written (two queues may signal one semaphore in
  either order), so this tells something only when the writes of that value or more that can have been seen
  are GPU signals of one queue alone: that queue is complete up to the earliest of them (it runs in order). A
  CPU store of such a value may be what the wait saw; so may each of two queues' signals, unless one of them
  can only land after the sighting (`later`: it sits behind a GPU wait for a value nobody gave yet, or behind
  one that only the waiting queue's own later work satisfies);
* a CPU wait on a KFD event returned: a GPU wrote that event's mailbox, its slot in the event page (the kernel
  sets an event from an interrupt only then, whatever interrupt came next: kfd_events.c, not necessarily
  the TRAP that follows the write); when only one queue has such writes pending, its earliest is complete --
  unless the event may have been set otherwise: after a write already known complete, or by the CPU, whose
  setting no wait has taken since (an auto-reset event's wait takes it; a manual-reset event stays set until
  the CPU resets it);
* a queue complete past one of its own GPU waits had that wait satisfied: the same rule as a CPU wait, in
  turn, where the queue's own signals after the wait cannot be what it saw (this is how completion flows
  along semaphore chains);
* a CPU wait saw an AQL signal at 0 or below: when the CPU set it to n above 0 and n packets that decrement
  it (their completion signal) were submitted since, none pending from before, they completed;
* a queue complete past a BARRIER_AND saw each of its dependency signals at 0: the same rule, in turn (a
  GPU wait of value None).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice
from operator import itemgetter

MAX_SIGNALS_PER_ADDRESS = 4096  # beyond this the oldest signals are forgotten (counted as maybe landed)
_most = itemgetter(3)  # of a held signal: the highest value of it and the signals before it


@dataclass(eq=False)
class QueueProgress:
    """One queue's stream: how far it is known complete, and its GPU waits and event mailbox writes beyond that."""

    name: str
    done: int = 0
    destroyed: bool = False  # nothing of it runs any more (complete or not)
    ended: int | None = None  # how many submissions the recorder had learnt when it was destroyed
    stopped: int | None = None  # destroyed: the position it had run to (its read pointer), when known
    stood: bool = False  # destroyed standing at a packet that waits on memory: nothing after `stopped` ran
    waits: deque[tuple[int, int, int]] = field(default_factory=deque)  # (end position, address, value)
    mailboxes: deque[tuple[int, int]] = field(default_factory=deque)  # (end position, event id) of mailbox writes

    def complete(self, position: int) -> bool:
        return self.done >= position

    def settled(self, position: int) -> bool:
        """Whether the packet ending at `position` is known to have run, or known never to run: its queue was
        destroyed before reaching it, standing at a wait (as a replay lets a destroyed queue stand)."""
        return self.done >= position or (self.stopped is not None and (self.stopped >= position or self.stood))

    def never(self, position: int) -> bool:
        """Whether the packet ending at `position` is known never to run: its queue was destroyed standing at a
        wait before it."""
        return self.stood and self.stopped is not None and position > self.stopped


Signal = tuple[int, int, int]  # (end position in its queue's stream, address, value)
Wait = tuple[int, int, int | None]  # (end position, address, value the memory reached: >= value; None: an AQL
# signal's value reached 0)


Seen = tuple[int, int | None, QueueProgress | None, int]  # (address, value; waiter and its position, if a GPU wait)


# whether the signal ending at `pos` of `queue` can only land after a sighting: a GPU wait of `waiter` ending at
# `at` passed (waiter None: a CPU wait returning now)
Later = Callable[[QueueProgress | None, int, QueueProgress, int], bool]


class Completion:
    """Every queue's known-complete position, advanced by observations. `later` tells signals that cannot be what
    a sighting saw, as far as the GPU's own waits show (capture/ordering.py)."""

    def __init__(self, later: Later = lambda waiter, at, queue, pos: False) -> None:
        self.later = later
        # address -> its GPU signals in its present life, landed or not: [(value, queue, position, the highest
        # value of it and the signals before it)]
        self._signals: dict[int, list[tuple[int, QueueProgress, int, int]]] = {}
        self._signallers: dict[int, set[QueueProgress]] = {}  # address -> the queues of its signals held (or more)
        # address -> the highest value of the writes no longer held one by one that may be what it holds: the
        # CPU's stores in its present life, signals known landed, signals forgotten (those in any life)
        self._top: dict[int, int] = {}
        self._forgotten: dict[int, int] = {}
        # AQL signal -> the packets that decrement it, not known complete: [(queue, pos, whether it shows its queue's)]
        self._decrements: dict[int, list[tuple[QueueProgress, int, bool]]] = {}
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
        pending = [d for d in self._decrements.get(addr, ()) if not d[0].complete(d[1])]
        self._decrements[addr] = pending[-MAX_SIGNALS_PER_ADDRESS:] + [(queue, pos, shows)]
        if len(pending) > MAX_SIGNALS_PER_ADDRESS:
            self._armed.pop(addr, None)  # which of the forgotten ones are still pending is not known

    def reached_zero(self, addr: int) -> None:
        """A CPU wait saw the AQL signal at `addr` at 0 or below."""
        self._run(self._zero(addr))

    def _zero(self, addr: int) -> list[Seen]:
        """The AQL signal at `addr` was seen at 0 or below: the packets decrementing it completed when as many
        were submitted since the CPU stored its value, above 0, as that value counts down (none pending from
        before the store; with more, which of them did is not known; with the value at 0 or below already, or
        not known, none needed to). The GPU waits passed on the way, by the packets whose completion shows
        their queue's."""
        pending = [d for d in self._decrements.pop(addr, ()) if not d[0].complete(d[1])]
        armed = self._armed.get(addr)
        passed: list[Seen] = []
        # only decrements from a value the CPU set above 0 can be what brought it there
        if pending and armed is not None and armed[1] == armed[0] > 0:
            for queue, pos, shows in pending:
                if shows:
                    passed += self._advance(queue, pos)
        elif pending:
            self._decrements[addr] = pending
        return passed

    def submitted(self, queue: QueueProgress, signals: list[Signal], waits: list[Wait],
                  mailboxes: list[tuple[int, int]]) -> None:
        """The completion facts of one submission, in stream order."""
        by_addr = self._signals
        for pos, addr, value in signals:
            held = by_addr.get(addr)
            if held is None:
                held = by_addr[addr] = []
                self._signallers[addr] = {queue}
            elif queue not in (signallers := self._signallers[addr]):
                signallers.add(queue)
            elif len(held) >= MAX_SIGNALS_PER_ADDRESS:
                self._settle(addr, held)
                if len(held) >= MAX_SIGNALS_PER_ADDRESS // 2:
                    forgotten = held[len(held) // 2 - 1][3]
                    del held[:len(held) // 2]
                    self._forgotten[addr] = max(self._forgotten.get(addr, -1), forgotten)
                    self._top[addr] = max(self._top.get(addr, -1), forgotten)
            held.append((value, queue, pos, max(value, held[-1][3]) if held else value))
            self._armed.pop(addr, None)  # a GPU store: how far the value counted down is not known
        if waits:
            queue.waits.extend(waits)
        if mailboxes:
            queue.mailboxes.extend(mailboxes)

    def stored(self, addr: int, value: int, backwards: bool) -> None:
        """The CPU stored `value` at `addr`. Moving it backwards (a semaphore slot reused) begins a new life: the
        writes known landed before are overwritten; the GPU signals still pending may land after it."""
        if backwards:
            held = self._signals.get(addr)
            if held:
                self._settle(addr, held)
            self._top[addr] = max(value, self._forgotten.get(addr, -1))
        else:
            self._top[addr] = max(value, self._top.get(addr, -1))
        if any(not q.complete(pos) for q, pos, _ in self._decrements.get(addr, ())):
            self._armed.pop(addr, None)  # a decrement submitted before may take it down as well: not counted
        else:
            self._armed[addr] = [value, 0]

    def highest(self, addr: int) -> int:
        """The highest value given at `addr` in its present life, that the recorder knows of (-1: none)."""
        held = self._signals.get(addr)
        return max(self._top.get(addr, -1), held[-1][3] if held else -1)

    def _settle(self, addr: int, held: list[tuple[int, QueueProgress, int, int]]) -> None:
        """Fold the signals known landed into `_top`: only between observations, when no GPU wait still to be
        looked at may tell its own queue's later signals apart from earlier ones."""
        top, most = self._top.get(addr, -1), -1
        keep = []
        for value, queue, pos, _ in held:
            if queue.complete(pos):
                top = max(top, value)
            else:
                most = max(most, value)
                keep.append((value, queue, pos, most))
        held[:] = keep
        self._signallers[addr] = {queue for _, queue, _, _ in keep}
        self._top[addr] = top

    def observed(self, addr: int, value: int) -> None:
        """A CPU wait saw memory at `addr` at `value` or more."""
        held = self._signals.get(addr)
        if held:
            self._settle(addr, held)
        self._run([(addr, value, None, 0)])

    def _run(self, work: list[Seen]) -> None:
        """Learn from each sighting in `work`, and from the GPU waits each one shows passed, in turn."""
        while work:
            addr, value, waiter, at = work.pop()
            if value is None:  # a barrier passed an AQL signal at 0
                work += self._zero(addr)
                continue
            if self._top.get(addr, -1) >= value:
                continue
            earliest: dict[QueueProgress, int] = {}  # each queue's earliest signal it may have seen
            held = self._signals.get(addr)
            if held:
                # from the first signal whose value, or one before it, gives the value (none before it does),
                # each queue's first signal of the value or more: its earliest, as a queue's signals are held in
                # its stream's order; the waiter's own after it cannot be what it saw, nor its later ones
                everyone, decided = self._signallers[addr], set()
                for v, queue, pos, _ in islice(held, bisect_left(held, value, key=_most), None):
                    if v >= value and queue not in decided:
                        decided.add(queue)
                        if not (queue is waiter and pos > at) and not queue.never(pos):  # (campaign 113)
                            earliest[queue] = pos
                        if len(decided) == len(everyone):
                            break
            if len(earliest) > 1:  # a signal that can only land after the sighting is not what it saw
                earliest = {q: pos for q, pos in earliest.items() if not self.later(waiter, at, q, pos)}
            if len(earliest) == 1:
                work += self._advance(*next(iter(earliest.items())))

    def event_created(self, event_id: int, auto_reset: bool) -> None:
        self._set.discard(event_id)
        (self._manual.discard if auto_reset else self._manual.add)(event_id)

    def event_set(self, event_id: int) -> None:
        """The event is set (by the CPU), or may be (its mailbox written): a wait that returns may have seen that."""
        self._set.add(event_id)

    def event_reset(self, event_id: int) -> None:
        self._set.discard(event_id)

    def event_fired(self, event_id: int, queues: list[QueueProgress]) -> None:
        """A wait on KFD event `event_id` returned: if nothing known set it, and one queue alone has writes of its
        mailbox pending, the earliest of them ran. An auto-reset event's wait takes what set it."""
        if event_id not in self._set:
            holders = [q for q in queues if any(e == event_id for _, e in q.mailboxes)]
            if len(holders) == 1:
                queue = holders[0]
                pos = next(p for p, e in queue.mailboxes if e == event_id)
                self._run(self._advance(queue, pos))
        if event_id not in self._manual:
            self._set.discard(event_id)

    def _advance(self, queue: QueueProgress, pos: int) -> list[Seen]:
        """The queue is complete up to `pos`: the GPU waits that passed on the way."""
        if pos <= queue.done:
            return []
        queue.done = pos
        passed = []
        while queue.waits and queue.waits[0][0] <= pos:
            at, addr, value = queue.waits.popleft()
            passed.append((addr, value, queue, at))
        while queue.mailboxes and queue.mailboxes[0][0] <= pos:
            self._set.add(queue.mailboxes.popleft()[1])  # written: its event may be set, for a wait to take
        return passed
