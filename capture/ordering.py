"""Which GPU work the GPU's own waits order before which: what tells a program's race between queues (two
queues writing one buffer with nothing ordering the writes) from writes a semaphore chain orders.

Work of queue A up to position `pa` of its stream comes before queue B runs the packet ending at `pb` when a
wait earlier in B's stream was satisfied by a signal A made at `pa` or later, or, in turn, by a signal of a
queue whose own earlier wait such a signal satisfied (a chain). The rules are capture/completion.py's:

* a wait for a semaphore to reach `v` saw some write of `v` or more: when the writes of such values that it
  can have seen (not its own queue's later signals) are signals of one queue alone, and the CPU stored no such
  value in the semaphore's life, it passed after the earliest of them. Memory holds the last write, not the
  highest: two queues may signal one semaphore in either order, so a lower value says nothing;
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
import itertools
from collections.abc import Callable
from operator import itemgetter

from kfdtrace.capture.completion import QueueProgress

MAX_HISTORY = 4096  # signals kept per semaphore life, waits per queue (the oldest are forgotten)
MAX_STEPS = 4096  # signals one search looks at before it gives up
MAX_WAITS_BACK = 2  # waits before a packet that may hold it back, looked at (the latest)
MAX_DEPTH = 6  # queues a packet held back behind another's wait is followed through

Held = tuple[int | None, QueueProgress, int, bool, int]
_most = itemgetter(4)  # a held signal's highest value of it and the signals before it
Signal = tuple[int, int, int | None]  # (end position, address, value; None: an AQL signal's decrement)
Wait = tuple[int, int, int | None]  # (end position, address, value reached; None: an AQL signal at 0)


class Ordering:
    """Every queue's GPU waits and every semaphore's signals so far, to ask what comes before what."""

    def __init__(self, unseen: Callable[[int], bool] = lambda addr: False) -> None:
        self.unseen = unseen  # whether the CPU may store at an address unseen (through a raw view)
        self._lives: dict[int, int] = {}  # address -> how many times the CPU set it anew
        # (address, life) -> [(value, queue, position, whether it shows everything before it in its queue ran,
        # the highest value of it and the signals before it)]
        self._signals: dict[tuple[int, int], list[Held]] = {}
        self._waits: dict[QueueProgress, list[tuple[int, int, int | None, int]]] = {}  # (pos, addr, value, life)
        # (address, life) -> the highest value the CPU stored in it, or of a signal forgotten past MAX_HISTORY
        self._unheld: dict[tuple[int, int], int] = {}
        self._most: dict[tuple[int, int], int] = {}  # (address, life) -> the highest value anybody gave
        self._signallers: dict[tuple[int, int], set[QueueProgress]] = {}  # (address, life) -> the queues signalling
        self._forgotten: dict[int, int] = {}  # address -> the highest value of a signal forgotten, in any life
        self._unknown: set[tuple[int, int]] = set()  # AQL signal lives that decrements of the one before may end
        self.budget = 1 << 62  # signals the searches may still look at, in all
        # (waiter, its wait's end, queue, packet end) -> whether the packet is held back until the wait passed, as
        # found since signals and waits last changed (what completion learns since does not change it)
        self._known: dict[tuple[QueueProgress, int, QueueProgress, int], bool] = {}
        # and (queue, its wait's end) -> what _giver found
        self._found: dict[tuple[QueueProgress, int], list | None] = {}

    def submitted(self, queue: QueueProgress, signals: list[Signal], waits: list[Wait],
                  partial: frozenset[int] = frozenset()) -> None:
        """One submission's signals and waits, in stream order; `partial`: positions of signals that show only
        their own packet complete (AQL decrements without the barrier bit)."""
        self._known.clear()
        self._found.clear()
        lives = self._lives
        for pos, addr, value in signals:
            key = (addr, lives.get(addr, 0))
            held = self._signals.setdefault(key, [])
            most = held[-1][4] if held else -1
            held.append((value, queue, pos, pos not in partial, most if value is None or value < most else value))
            self._signallers.setdefault(key, set()).add(queue)
            if len(held) > MAX_HISTORY:
                forgotten = [v for v, *_ in held[: len(held) - MAX_HISTORY // 2] if v is not None]
                if forgotten:
                    self._unheld[key] = max(self._unheld.get(key, -1), *forgotten)
                    self._forgotten[addr] = max(self._forgotten.get(addr, -1), *forgotten)
                del held[: len(held) - MAX_HISTORY // 2]
            if value is not None and value > self._most.get(key, -1):
                self._most[key] = value
        if waits:
            held_waits = self._waits.setdefault(queue, [])
            held_waits += [(pos, addr, value, lives.get(addr, 0)) for pos, addr, value in waits]
            if len(held_waits) > MAX_HISTORY:
                del held_waits[: len(held_waits) - MAX_HISTORY // 2]

    def cpu_store(self, addr: int, value: int, backwards: bool) -> None:
        """The CPU wrote `value` to the semaphore or AQL signal at `addr`: moving it backwards, or setting an AQL
        signal packets decrement, begins a new life that later waits match against. The signals of the life
        before that are not known complete may still land in the new one: a semaphore's stay among its signals;
        an AQL signal's leave its barriers unordered (which decrements took it to 0 is not known)."""
        self._known.clear()
        self._found.clear()
        life = self._lives.get(addr, 0)
        held = self._signals.get((addr, life), ())
        if backwards or any(v is None for v, *_ in held):
            self._lives[addr] = life = life + 1
            for kept in (self._signals, self._unheld, self._most, self._signallers):
                kept.pop((addr, life - 1), None)
            self._unknown.discard((addr, life - 1))
            pending = [s for s in held if not s[1].complete(s[2])]
            if any(v is None for v, *_ in pending):
                self._unknown.add((addr, life))
            most = -1
            for v, q, pos, whole, _ in pending:
                most = most if v is None or v < most else v
                self._signals.setdefault((addr, life), []).append((v, q, pos, whole, most))
                self._signallers.setdefault((addr, life), set()).add(q)
            if most >= 0:
                self._most[(addr, life)] = most
        key = (addr, life)
        self._unheld[key] = max(value, self._forgotten.get(addr, -1), self._unheld.get(key, -1))
        self._most[key] = max(value, self._most.get(key, -1))

    def blocked(self, q: QueueProgress, pos: int) -> bool:
        """Whether queue `q` still waits, before its packets from `pos` on, for a semaphore value nobody can have
        given yet (`_held_back`): as far as signals tell, `q` cannot have run them yet."""
        return self._bounded(None, 0, q, pos)

    def later(self, waiter: QueueProgress | None, at: int, q: QueueProgress, pos: int) -> bool:
        """Whether the signal ending at `pos` of `q` can only land after `waiter`'s GPU wait ending at `at` passed
        (`waiter` None: after now)."""
        return self._bounded(waiter, at, q, pos)

    def _bounded(self, waiter: QueueProgress | None, at: int, q: QueueProgress, pos: int) -> bool:
        """Whether _held_back, within MAX_STEPS of the budget (charged for what it looked at), found it held back
        (not when it could not tell)."""
        allowed = min(MAX_STEPS, self.budget)
        held, left = self._held_back(q, pos, waiter, at, allowed, set(), set())
        self.budget -= allowed - left
        return held is True

    def _held_back(self, q: QueueProgress, pos: int, waiter: QueueProgress | None, at: int, steps: int,
                   free: set[tuple[QueueProgress, int]], visiting: set[tuple[QueueProgress, int]]
                   ) -> tuple[bool | None, int]:
        """Whether `q` cannot have run its packet ending at `pos` before `waiter`'s wait ending at `at` passed
        (`waiter` None: before now), and the steps left of `steps`: a wait of `q` before it, not known passed,
        in memory the CPU cannot store to unseen, for a value of which there is no CPU store, and every signal
        either `q`'s own after that wait, the waiter's own after its wait, or held back in turn. Signals that
        only hold each other back (a cycle) cannot come first; `free` holds the packets found not held back in
        this context (their answer does not rest on a cycle's). None: not known, when the steps run out or the
        answer rests on a packet more than MAX_DEPTH queues away."""
        key = (q, pos)
        if key in visiting or q is waiter and pos > at:  # (a queue runs in order: nothing after its wait first)
            return True, steps
        if key in free:
            return False, steps
        if len(visiting) >= MAX_DEPTH:
            return None, steps
        if not visiting and waiter is not None and (known := self._known.get((waiter, at, q, pos))) is not None:
            return known, steps
        visiting.add(key)
        held: bool | None = False
        waits = self._waits.get(q, ())
        last = bisect.bisect_right(waits, (pos, 1 << 64))
        for i in range(last - 1, max(last - MAX_WAITS_BACK, 0) - 1, -1):  # the latest waits before it
            wpos, addr, value, life = waits[i]
            steps -= 1
            if waiter is None and q.complete(wpos):
                break  # it passed, and those before it (when is what a waiter's question asks: looked into)
            if value is None or life != self._lives.get(addr, 0) or self._unheld.get((addr, life), -1) >= value \
                    or self.unseen(addr):
                continue
            this: bool | None = True  # the wait holds it back, unless a signal that may have landed first gives it
            given = self._signals.get((addr, life), ())
            # from the first that gives the value or more (`most` only grows), the earliest first: the likeliest to
            # be what it saw, found not held back at once
            for svalue, sq, spos, _, _ in itertools.islice(given, bisect.bisect_left(given, value, key=_most), None):
                steps -= 1
                if svalue is None or svalue < value or sq is q and spos > wpos or \
                        sq is waiter and spos > at:
                    continue
                if steps <= 0:
                    this = None
                    break
                found, steps = self._held_back(sq, spos, waiter, at, steps, free, visiting)
                if found is False:
                    this = False
                    break
                if found is None:
                    this = None  # a later signal found free still answers
            if this:
                held = True
                break
            if this is None:
                held = None
        visiting.discard(key)
        if held is False:
            free.add(key)
        if not visiting and waiter is not None and held is not None:
            self._known[(waiter, at, q, pos)] = held
        return held, steps

    def before(self, a: QueueProgress, pa: int, b: QueueProgress, pb: int,
               known: dict[QueueProgress, int] | None = None) -> bool | None:
        """Whether the GPU's waits show queue `a` complete up to `pa` before queue `b` ran its packet ending at
        `pb` (None: not found within the signals the search may look at). `known`: how far the CPU knew each queue
        complete when it submitted `a`'s packet: a wait passed by then cannot have seen it, nor what follows it."""
        if a is b:
            return pa <= pb
        allowed = min(MAX_STEPS, self.budget)
        found, left = self._search(a, pa, b, pb, allowed, known or {})
        self.budget -= allowed - left
        return found

    def _search(self, a: QueueProgress, pa: int, b: QueueProgress, pb: int, steps: int,
                known: dict[QueueProgress, int]) -> tuple[bool | None, int]:
        """(the answer, the steps left of `steps`)."""
        reached = {b: pb}  # queue -> the furthest packet of it known to run before b's
        unknown = False  # a wait looked at whose giver could not be told
        looked_below: dict[QueueProgress, int] = {}  # queue -> the position below which its waits were looked at
        todo = [(b, pb)]
        while todo:
            q, p = todo.pop()
            waits = self._waits.get(q, ())
            below = looked_below.get(q, -1)
            if p <= below:
                continue
            looked_below[q] = p
            stop = bisect.bisect_left(waits, (max(below, known.get(q, -1) + 1),))
            for i in range(bisect.bisect_left(waits, (p,)) - 1, stop - 1, -1):  # the latest first
                wpos, addr, value, life = waits[i]
                held = self._signals.get((addr, life), ())
                if value is None and (addr, life) in self._unknown:
                    looked, givers = 1, []
                elif value is None:  # every decrement of an AQL signal came before a barrier saw it at 0
                    looked = len(held)
                    givers = [(sq, spos, whole) for svalue, sq, spos, whole, _ in held
                              if svalue is None and sq is not q]
                elif (q, wpos) in self._found:
                    looked, givers = 1, self._found[(q, wpos)]
                else:
                    looked, givers = self._giver(q, wpos, value, held, self._unheld.get((addr, life), -1),
                                                 self._signallers.get((addr, life), set()), steps)
                    if looked < steps:  # found within the steps: the same for any search until things change
                        self._found[(q, wpos)] = givers
                steps -= looked + 1
                if steps < 0:
                    return None, 0
                if givers is None:  # which signal it saw is not known: nor is what this wait orders
                    unknown = True
                    continue
                for sq, spos, whole in reversed(givers):
                    if sq is a and (spos == pa or whole and spos >= pa):
                        return True, steps
                    if spos > reached.get(sq, -1):
                        reached[sq] = spos
                        todo.append((sq, spos))
        return (None if unknown else False), steps

    def _giver(self, q: QueueProgress, at: int, value: int, held: list[Held], unheld: int,
               signallers: set[QueueProgress], steps: int
               ) -> tuple[int, list[tuple[QueueProgress, int, bool]] | None]:
        """The signal that queue `q`'s wait at `at` for a semaphore to reach `value` passed after: the earliest of
        the writes it can have seen, when they are one other queue's signals alone (`held`, the semaphore's signals
        in its life, by `signallers`; `unheld`, the highest value of the others), leaving out signals that can only
        land after the wait passed. [] when it may have seen more than one, None when whether a signal can only
        land later is not known; with how many steps it took of `steps`."""
        if unheld >= value:
            return 0, []  # it may have seen the CPU's store, or a signal no longer held
        earliest: dict[QueueProgress, tuple[int, bool]] = {}
        seen: set[QueueProgress] = set()  # the queues whose earliest signal of the value or more was found
        looked = 0
        # from the first signal giving the value or more (`most` only grows), in order: each queue's earliest
        for svalue, sq, spos, whole, _ in itertools.islice(held, bisect.bisect_left(held, value, key=_most), None):
            looked += 1
            if sq in seen or svalue is None or svalue < value:
                continue
            seen.add(sq)
            if sq.never(spos):  # its queue was destroyed standing at a wait before it (campaign 113)
                pass
            elif sq is not q:
                earliest[sq] = (spos, whole)
            elif spos <= at:
                return looked, []  # it may have seen its own earlier signal (its later ones it cannot have)
            if len(seen) == len(signallers):
                break  # every queue that signals it is found
        unknown = False
        if len(earliest) > 1:
            free: set[tuple[QueueProgress, int]] = set()
            for sq, (spos, _) in list(earliest.items()):
                later, left = self._held_back(sq, spos, q, at, steps - looked, free, set())
                looked = steps - left
                if later:
                    del earliest[sq]
                unknown |= later is None
        if len(earliest) != 1:
            return looked, None if unknown else []  # it may have seen either of two queues' (or nobody's known)
        sq, (spos, whole) = next(iter(earliest.items()))
        return looked, [(sq, spos, whole)]
