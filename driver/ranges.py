"""A map of non-overlapping address ranges to objects: a GPU's page table, a recorder's buffer list, a
replayer's relocation map."""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class RangeMap(Generic[T]):
    """Sorted, non-overlapping [start, start+size) ranges, each holding a value."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._values: list[T] = []

    def __len__(self) -> int:
        return len(self._starts)

    def __iter__(self) -> Iterator[tuple[int, int, T]]:
        """(start, size, value) in address order."""
        for s, e, v in zip(self._starts, self._ends, self._values, strict=True):
            yield s, e - s, v

    def add(self, start: int, size: int, value: T) -> bool:
        """Insert a range; False (and nothing changes) when it overlaps one already there."""
        i = bisect.bisect_right(self._starts, start)
        if (i and self._ends[i - 1] > start) or (i < len(self._starts) and self._starts[i] < start + size):
            return False
        self._starts.insert(i, start)
        self._ends.insert(i, start + size)
        self._values.insert(i, value)
        return True

    def remove(self, start: int) -> T | None:
        """Remove the range that starts at `start`; its value, or None when there is none."""
        i = bisect.bisect_left(self._starts, start)
        if i < len(self._starts) and self._starts[i] == start:
            del self._starts[i], self._ends[i]
            return self._values.pop(i)
        return None

    def find(self, addr: int) -> tuple[int, int, T] | None:
        """(start, size, value) of the range holding `addr`."""
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0 and addr < self._ends[i]:
            return self._starts[i], self._ends[i] - self._starts[i], self._values[i]
        return None

    def overlapping(self, addr: int, size: int) -> list[tuple[int, int, T]]:
        """(start, size, value) of every range meeting [addr, addr+size), in address order."""
        i = max(0, bisect.bisect_right(self._starts, addr) - 1)
        j = bisect.bisect_left(self._starts, addr + size)
        return [(s, e - s, v) for s, e, v in zip(self._starts[i:j], self._ends[i:j], self._values[i:j], strict=True)
                if e > addr]

    def pointee(self, addr: int) -> tuple[int, int, T] | None:
        """find() of the range a pointer `addr` points into: the one holding it, else the one it is just past the end
        of (C's one-past-the-end pointer, which `held` counts too)."""
        return self.find(addr) or (self.find(addr - 1) if addr else None)

    def first_held(self, addrs: Sequence[int], ends: bool = False) -> int | None:
        """The index of the first of `addrs` (an array of unsigned 64-bit values, say) some range holds (`ends`:
        or ends at)."""
        held = self.held(addrs, ends)
        return int(held[0]) if len(held) else None

    def held(self, addrs: Sequence[int], ends: bool = False) -> Sequence[int]:
        """The indexes of the `addrs` (an array of unsigned 64-bit values, say) some range holds, in order (`ends`:
        an address just past a range counts as held, as C's one-past-the-end pointer points into its array)."""
        import numpy as np

        if not self._starts:
            return np.empty(0, np.int64)
        starts, limits = np.array(self._starts, np.uint64), np.array(self._ends, np.uint64)
        words = np.asarray(addrs, np.uint64)
        i = np.searchsorted(starts, words, side="right").astype(np.int64) - 1
        limit = limits[np.maximum(i, 0)]
        return np.flatnonzero((i >= 0) & ((words <= limit) if ends else (words < limit)))

    def get(self, addr: int) -> T | None:
        """The value of the range holding `addr`."""
        hit = self.find(addr)
        return None if hit is None else hit[2]
