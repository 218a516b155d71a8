"""Where recorded dispatches read their kernel arguments, for the survey to find the CPU writes and frees that land
there after a dispatch's doorbell: the replay holds each back until the queue ran the dispatch, or stands at a wait
before it (Instance._hold), because the recording's did one or the other before the CPU went on (its CPU may have
polled the queue's read pointer, which no record shows).
"""

from __future__ import annotations

from array import array

from kfdtrace.driver.memory import PAGE

Dispatched = tuple[int, int, int | None]  # (queue, doorbell record, dispatches after it in its submission or None)
NEVER = 1 << 62  # past every record number


class ArgumentSpans:
    """The kernel-argument spans of the dispatches recorded so far, the latest of each queue at each address,
    indexed by the pages they lie on."""

    def __init__(self) -> None:
        # page -> (queue, start) -> (end, doorbell record, dispatches after it in its submission or None)
        self.pages: dict[int, dict[tuple[int, int], tuple[int, int, int | None]]] = {}

    def add(self, queue: int, va: int, size: int, doorbell: int, after: int | None) -> None:
        """A dispatch on `queue` at doorbell record `doorbell` reads `size` bytes at `va`."""
        for page in range(va // PAGE, (va + max(size, 1) - 1) // PAGE + 1):
            self.pages.setdefault(page, {})[(queue, va)] = (va + size, doorbell, after)

    def _pages(self, va: int, size: int) -> list[int]:
        first, last = va // PAGE, (va + max(size, 1) - 1) // PAGE
        if last - first < len(self.pages):
            return [p for p in range(first, last + 1) if p in self.pages]
        return [p for p in self.pages if first <= p <= last]  # a big range: fewer pages hold spans

    def hits(self, va: int, size: int) -> list[Dispatched]:
        """The dispatches whose arguments bytes [va, va + size) overlap."""
        found: set[Dispatched] = set()
        for page in self._pages(va, size):
            for (queue, start), (end, doorbell, after) in self.pages[page].items():
                if start < va + size and va < end:
                    found.add((queue, doorbell, after))
        return sorted(found)

    def drop(self, va: int, size: int) -> None:
        """Forget the spans in bytes [va, va + size) (their buffer is freed)."""
        for page in self._pages(va, size):
            spans = self.pages[page]
            for key in [k for k in spans if va <= k[1] < va + size]:
                del spans[key]
            if not spans:
                del self.pages[page]


class Late:
    """The records that land in the kernel arguments of dispatches submitted before them (CPU writes and frees, and
    doorbells whose packets write them), in record order, each with the last such dispatch of each queue (its queue
    having run that one, it ran the others): arrays, since a long trace reusing its argument memory has one for
    most dispatches. `doorbells` lists the doorbell records of those dispatches, once `done`."""

    def __init__(self) -> None:
        self.records, self.queues, self.dispatches, self.after = array("q"), array("q"), array("q"), array("q")
        self.doorbells = array("q")

    def add(self, n: int, hits: list[Dispatched]) -> None:
        """Record `n` (at least the last added) lands in the arguments of the dispatches `hits`."""
        last: dict[int, tuple[int, int]] = {}  # queue -> (doorbell, after; -1: not known)
        while self.records and self.records[-1] == n:  # more packets of one doorbell: merged
            self.records.pop()
            last[self.queues.pop()] = (self.dispatches.pop(), self.after.pop())
        for queue, doorbell, after in hits:
            mark = (doorbell, -1 if after is None else after)
            seen = last.get(queue)
            if seen is None or _later(mark, seen):
                last[queue] = mark
        for queue, (doorbell, after) in sorted(last.items()):
            self.records.append(n)
            self.queues.append(queue)
            self.dispatches.append(doorbell)
            self.after.append(after)
            self.doorbells.append(doorbell)

    def done(self) -> None:
        self.doorbells = array("q", sorted(set(self.doorbells)))


def _later(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether dispatch `a` (doorbell, dispatches after it or -1) comes after `b` on their queue."""
    return a[0] > b[0] or a[0] == b[0] and 0 <= a[1] < b[1]


class LateCursor:
    """One replay's walk through `Late`, record by record in order: `hits(n)` for the records at or past `next`,
    `flagged(n)` for doorbells at or past `next_doorbell`."""

    __slots__ = ("late", "i", "j", "next", "next_doorbell")

    def __init__(self, late: Late):
        self.late, self.i, self.j = late, 0, 0
        self.next = late.records[0] if late.records else NEVER
        self.next_doorbell = late.doorbells[0] if late.doorbells else NEVER

    def hits(self, n: int) -> list[Dispatched]:
        """The dispatches record `n` lands in the arguments of (none: it is not late)."""
        late, i, found = self.late, self.i, []
        records = late.records
        while i < len(records) and records[i] < n:
            i += 1
        while i < len(records) and records[i] == n:
            found.append((late.queues[i], late.dispatches[i], None if late.after[i] < 0 else late.after[i]))
            i += 1
        self.i, self.next = i, records[i] if i < len(records) else NEVER
        return found

    def flagged(self, n: int) -> bool:
        """Whether doorbell record `n` submits dispatches that a later record lands in the arguments of."""
        doorbells, j = self.late.doorbells, self.j
        while j < len(doorbells) and doorbells[j] < n:
            j += 1
        self.j, self.next_doorbell = j, doorbells[j] if j < len(doorbells) else NEVER
        return j < len(doorbells) and doorbells[j] == n
