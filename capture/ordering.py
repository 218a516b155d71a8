"""Which GPU work the GPU's own waits order before which: what tells a program's race between queues (two
queues writing one buffer with nothing ordering the writes) from writes a semaphore chain orders.

Work of queue A up to position `pa` of its stream comes before queue B runs the packet ending at `pb` when a
wait earlier in B's stream was satisfied by a signal A made at `pa` or later, or, in turn, by a signal of a
queue whose own earlier wait such a signal satisfied (a chain). The rules are capture/completion.py's:

* a wait for a semaphore to reach `v` passed after every signal of it with a lower value (timeline
  semaphores only move forward), and after the signal of `v` itself when one queue alone gave `v` in the
  semaphore's life (its earliest signal of it) and the CPU did not store it: with two givers, the wait may
  have seen either;
* an AQL BARRIER_AND passed after every packet that decrements its dependency signals; a decrementing packet's
  completion shows the packets before it in its queue completed only when it has the barrier bit (HSA);
* a queue runs its packets in order, so a signal shows its queue complete up to it.

What the CPU knew complete when it submitted (the other way work is ordered) is Completion's to tell; this
keeps the history of signals and waits that a later checkpoint asks about, MAX_HISTORY of each per address
and per queue. A search looks at the latest waits and signals first (where a chain of one queue handing work
to the next is found at once) and gives up after MAX_STEPS signals looked at, or when `budget` (what the
caller lets all its searches look at) runs out: the answer is then None, not known.
"""

from __future__ import annotations

import bisect

from kfdtrace.capture.completion import MANY, QueueProgress

MAX_HISTORY = 4096  # signals kept per semaphore life, waits per queue (the oldest are forgotten)
MAX_STEPS = 4096  # signals one search looks at before it gives up

Signal = tuple[int, int, int | None]  # (end position, address, value; None: an AQL signal's decrement)
Wait = tuple[int, int, int | None]  # (end position, address, value reached; None: an AQL signal at 0)


class Ordering:
    """Every queue's GPU waits and every semaphore's signals so far, to ask what comes before what."""

    def __init__(self) -> None:
        self._lives: dict[int, int] = {}  # address -> how many times the CPU set it anew
        # (address, life) -> (value, queue, position, whether it shows everything before it in its queue ran)
        self._signals: dict[tuple[int, int], list[tuple[int | None, QueueProgress, int, bool]]] = {}
        self._waits: dict[QueueProgress, list[tuple[int, int, int | None, int]]] = {}  # (pos, addr, value, life)
        # (address, life) -> value -> who first gave it: (queue, position) when one queue alone did, else MANY
        # (the CPU, or several queues); below `_floor`'s value, everyone (values forgotten past MAX_HISTORY)
        self._givers: dict[tuple[int, int], dict[int, tuple[QueueProgress, int] | str]] = {}
        self._floor: dict[tuple[int, int], int] = {}
        self.budget = 1 << 62  # signals the searches may still look at, in all

    def submitted(self, queue: QueueProgress, signals: list[Signal], waits: list[Wait],
                  partial: frozenset[int] = frozenset()) -> None:
        """One submission's signals and waits, in stream order; `partial`: positions of signals that show only
        their own packet complete (AQL decrements without the barrier bit)."""
        lives = self._lives
        for pos, addr, value in signals:
            key = (addr, lives.get(addr, 0))
            held = self._signals.setdefault(key, [])
            held.append((value, queue, pos, pos not in partial))
            if len(held) > MAX_HISTORY:
                del held[: len(held) - MAX_HISTORY // 2]
            if value is not None:
                self._gave(key, value, (queue, pos))
        if waits:
            held_waits = self._waits.setdefault(queue, [])
            held_waits += [(pos, addr, value, lives.get(addr, 0)) for pos, addr, value in waits]
            if len(held_waits) > MAX_HISTORY:
                del held_waits[: len(held_waits) - MAX_HISTORY // 2]

    def cpu_store(self, addr: int, value: int, backwards: bool) -> None:
        """The CPU wrote `value` to the semaphore or AQL signal at `addr`: moving it backwards, or setting an AQL
        signal packets decrement, begins a new life that later waits match against."""
        life = self._lives.get(addr, 0)
        if backwards or any(v is None for v, *_ in self._signals.get((addr, life), ())):
            self._lives[addr] = life = life + 1
            self._signals.pop((addr, life - 1), None)
            self._givers.pop((addr, life - 1), None)
            self._floor.pop((addr, life - 1), None)
        self._gave((addr, life), value, MANY)  # a wait that saw it may have seen the CPU's

    def _gave(self, key: tuple[int, int], value: int, giver: tuple[QueueProgress, int] | str) -> None:
        givers = self._givers.setdefault(key, {})
        if len(givers) >= MAX_HISTORY:
            self._floor[key] = max(givers)
            givers.clear()
        before = givers.get(value)
        if before is None and value > self._floor.get(key, -1):
            givers[value] = giver
        elif before is not MANY and (before is None or giver is MANY or before[0] is not giver[0]):
            givers[value] = MANY  # (the same queue again: its earliest signal of it stays the one a wait shows)

    def blocked(self, q: QueueProgress, pos: int) -> int | None:
        """The address of a wait of queue `q` before its packets from `pos` on, not known passed, for a semaphore
        value nobody has given (no CPU store of it or more, no submitted signal) in the semaphore's present life:
        as far as signals tell, `q` cannot have run them yet. None when there is none."""
        waits = self._waits.get(q, ())
        for i in range(bisect.bisect_right(waits, (pos, 1 << 64)) - 1, -1, -1):
            wpos, addr, value, life = waits[i]
            if q.complete(wpos):
                return None
            if value is None or life != self._lives.get(addr, 0):
                continue
            given = max(self._givers.get((addr, life), {0: None}), default=0)
            if max(given, self._floor.get((addr, life), -1)) < value:
                return addr
        return None

    def before(self, a: QueueProgress, pa: int, b: QueueProgress, pb: int) -> bool | None:
        """Whether the GPU's waits show queue `a` complete up to `pa` before queue `b` ran its packet ending at
        `pb` (None: not found within the signals the search may look at)."""
        if a is b:
            return pa <= pb
        allowed = min(MAX_STEPS, self.budget)
        found, left = self._search(a, pa, b, pb, allowed)
        self.budget -= allowed - left
        return found

    def _search(self, a: QueueProgress, pa: int, b: QueueProgress, pb: int, steps: int) -> tuple[bool | None, int]:
        """(the answer, the steps left of `steps`)."""
        reached = {b: pb}  # queue -> the furthest packet of it known to run before b's
        todo = [(b, pb)]
        while todo:
            q, p = todo.pop()
            waits = self._waits.get(q, ())
            for i in range(bisect.bisect_left(waits, (p,)) - 1, -1, -1):  # the latest first
                _, addr, value, life = waits[i]
                seen = self._givers.get((addr, life), {}).get(value)  # who gave the value itself
                for svalue, sq, spos, whole in reversed(self._signals.get((addr, life), ())):
                    steps -= 1
                    if steps < 0:
                        return None, 0
                    if sq is q or not (svalue is None if value is None else svalue is not None and (
                            svalue < value or svalue == value and seen == (sq, spos))):
                        continue
                    if sq is a and (spos == pa or whole and spos >= pa):
                        return True, steps
                    if spos > reached.get(sq, -1):
                        reached[sq] = spos
                        todo.append((sq, spos))
        return False, steps
