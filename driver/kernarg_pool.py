"""A queue's kernel-argument arena: one CPU-visible GTT buffer that its dispatches' kernel arguments are cut from.

Real runtimes do the same instead of an allocation per dispatch: ROCclr keeps a kernarg pool per virtual GPU
(rocvirtual.cpp, VirtualGPU::allocKernArg) and tinygrad a wrapping bump allocator over one kernargs buffer
(runtime/support/hcq.py, kernargs_offset_allocator). Here a slice goes back to the arena when the queue's engine is
past the dispatch that reads it: the queue frees it as it frees any buffer its packets use.

Slices are cut in order, each aligned as asked, never across the arena's end (the rest of it is skipped, and the
next slice starts again at its start). The space of the oldest slice still live bounds what may be cut: the queue
frees slices in queue order, which is allocation order for one thread, but not always in general (another
thread's dispatch may be submitted first; packets taken back before submission free theirs at once), so a slice
freed early is marked, and its space comes back with the older ones.

When the arena has no room, the queue first frees what its engine is past (it otherwise does so at its next
submission), and if there is still none the dispatch gets a buffer of its own, as every dispatch did before:
waiting for the engine instead could last for ever when the slices in the way are those of packets this thread
has not submitted yet, or those a replay frees only at its next doorbell.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from kfdtrace.driver.errors import BoundsError, DeviceError
from kfdtrace.driver.memory import Buffer

if TYPE_CHECKING:
    from kfdtrace.driver.system import Device

__all__ = ["DEFAULT_ARENA", "KernargMemory", "KernargPool", "KernargSlice"]

DEFAULT_ARENA = 256 << 10  # a kernel-argument segment is usually under 1 KiB


class KernargSlice:
    """`size` bytes of an arena lent to one dispatch; used as a Buffer is (`va`, `write`, `free`)."""

    __slots__ = ("freed", "pool", "size", "start", "va")

    def __init__(self, pool: KernargPool, start: int, size: int):
        self.pool, self.start, self.size = pool, start, size  # start: arena bytes cut before it, monotonic
        self.va = pool.buffer.va + start % pool.size
        self.freed = False

    def __repr__(self) -> str:
        return f"<KernargSlice {self.size:#x} bytes at {self.va:#x} of {self.pool.buffer.label}>"

    def write(self, data: bytes, offset: int = 0) -> None:
        if offset < 0 or offset + len(data) > self.size:
            raise BoundsError(f"kernel-argument slice at {self.va:#x}: bytes [{offset:#x}, {offset + len(data):#x}) "
                              f"are outside its {self.size:#x} bytes")
        self.pool.buffer.write(data, self.va - self.pool.buffer.va + offset)

    def free(self) -> None:
        """Give the bytes back to the arena (once its engine is past the dispatch that reads them)."""
        self.pool.release(self)


KernargMemory = KernargSlice | Buffer  # where one dispatch's kernel arguments are
KernargSource = Callable[[int, int], KernargMemory]  # (size, align) -> memory for one dispatch's kernel arguments


class KernargPool:
    """The kernel-argument arena of one queue, allocated with its first slice and freed with the queue."""

    def __init__(self, device: Device, label: str, reclaim: Callable[[], None], size: int = DEFAULT_ARENA):
        self.device, self.label, self.size = device, label, size
        self._reclaim = reclaim  # the queue frees the slices its engine is past
        self.buffer: Buffer | None = None
        self._lock = threading.Lock()
        self._live: deque[KernargSlice] = deque()  # in the order they were cut
        self._head = 0  # arena bytes cut so far, monotonic (slice starts count the same way)
        self._tail = 0  # start of the oldest live slice (when one is)
        self._closed = False

    def alloc(self, size: int, align: int, name: str) -> KernargMemory:
        """`size` bytes at an address aligned to `align` (a power of two, at most a page) for a dispatch of kernel
        `name`; a buffer of its own when the arena has no room, or the bytes would never fit it."""
        piece = self._cut(size, align)
        if piece is None and size <= self.size:
            self._reclaim()  # not under the arena's lock: the slices it frees take it
            piece = self._cut(size, align)
        if piece is not None:
            return piece
        return self.device.alloc(max(size, 1), "gtt", name=f"{self.label}.kernargs {name}", role="kernargs")

    def _cut(self, size: int, align: int) -> KernargSlice | None:
        """The next slice of the arena, if it has room for it."""
        with self._lock:
            if self._closed:
                raise DeviceError(f"{self.label} was destroyed; its kernel-argument arena is freed")
            if self.buffer is None:
                self.buffer = self.device.alloc(self.size, "gtt", name=f"{self.label}.kernargs", role="kernargs")
            start = -(-self._head // align) * align
            if start % self.size + size > self.size:  # never across the end: start again at the arena's start
                start = -(-start // self.size) * self.size
            if not self._live:  # none is live: the whole arena is free
                self._tail = start
            if start + size - self._tail > self.size:
                return None
            piece = KernargSlice(self, start, size)
            self._live.append(piece)
            self._head = start + size
            return piece

    def release(self, piece: KernargSlice) -> None:
        """Mark `piece` free; the arena's space comes back up to the oldest slice still live."""
        with self._lock:
            if piece.freed:
                return
            piece.freed = True
            live = self._live
            while live and live[0].freed:
                live.popleft()
            if live:
                self._tail = live[0].start

    def free(self) -> None:
        """Free the arena (with its queue, once the engine is done with it); slices freed after are only marked."""
        with self._lock:
            self._closed = True
            if self.buffer is not None:
                self.buffer.free()
