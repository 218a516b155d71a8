"""Buffers as the recorder knows them, and their contents recorded chunk by chunk.

A chunk of `chunk` bytes (aligned to its buffer's start) is recorded, as a content-addressed blob and a `mem`
record, when its content differs from what was last recorded for it; a write into a kernel-argument buffer is
recorded as the bytes written (`record_exact`), as small as the dispatch's arguments. Checkpoints hash the same
chunks. Chunks are hashed where they lie in the buffer's memory, and copied only to be stored: a checkpoint of a
buffer whose content was already recorded is one hashing pass over it (XXH3, about as fast as copying it once).
"""

from __future__ import annotations

import ctypes
import itertools
from collections.abc import Callable, Container
from dataclasses import dataclass, field

from kfdtrace.capture.completion import QueueProgress
from kfdtrace.capture.trace_file import TraceFile
from kfdtrace.traces import records as R
from kfdtrace.traces.format import blob_key

KERNARGS = "kernargs"  # the role of the buffers kernel arguments are written into (a queue's arena)
TRACKED_ROLES = frozenset({"user", KERNARGS})
MAX_RUNS = 16  # runs of writes, of reads, kept per buffer between checkpoints (the oldest are forgotten)
MAX_SPANS = 16  # byte ranges a run keeps apart (a queue writing a few fields of a buffer, another the others)


@dataclass(eq=False)
class Run:
    """Accesses one queue made to a buffer (writes, or reads) with no other queue's in between, from the packet
    ending at `first` to the one ending at `last` of its stream, over the byte ranges [lo, hi) of the buffer in
    `spans` (at most MAX_SPANS: more are merged into one covering them all). `seq`: how
    many submissions the recorder had learnt before the first; `known`: how far the CPU knew each live queue
    complete when it submitted the first; `outputs`: the buffers the reading submissions wrote; `after`: how far
    other queues were shown complete before its first packet ran (it still waited for a value nobody had given)."""

    queue: QueueProgress
    first: int
    last: int
    spans: list[tuple[int, int]]
    seq: int
    known: dict[QueueProgress, int]
    outputs: set[TrackedBuffer] = field(default_factory=set)
    after: dict[QueueProgress, int] = field(default_factory=dict)

    def cover(self, lo: int, hi: int) -> None:
        """Add bytes [lo, hi) to those the run accessed."""
        spans = self.spans
        a, b = spans[-1]
        if lo <= b and a <= hi:  # overlaps or touches the last range: the common case of a run of one
            spans[-1] = (min(a, lo), max(b, hi))
        elif len(spans) < MAX_SPANS:
            spans.append((lo, hi))
        else:
            spans[:] = [(min(lo, *(a for a, _ in spans)), max(hi, *(b for _, b in spans)))]

    def overlaps(self, other: Run) -> bool:
        """Whether the two runs accessed some byte in common."""
        return any(a < d and c < b for a, b in self.spans for c, d in other.spans)


@dataclass(eq=False)
class TrackedBuffer:
    handle: int
    gpu_id: int
    va: int
    size: int  # what the program asked for, once the driver says (the allocation's size until then)
    domain: str
    flags: int
    mmap_offset: int
    cpu: int | None = None
    name: str | None = None
    role: str = "user"
    exposed: bool = False  # a raw CPU view exists: writes may bypass the driver
    writes: dict[QueueProgress, int] = field(default_factory=dict)  # GPU writes not yet hashed: queue -> position
    extents: dict[QueueProgress, tuple[int, int]] = field(default_factory=dict)  # and the bytes [lo, hi) they span
    words: set[int] = field(default_factory=set)  # the words in it that GPU waits poll or GPU signals write
    runs: list[Run] = field(default_factory=list)  # the same writes, queue by queue, in submission order
    reads: list[Run] = field(default_factory=list)  # GPU reads of it not known complete at its last checkpoint
    sources: list[tuple[TrackedBuffer, Run]] = field(default_factory=list)  # reads whose submissions wrote it
    racy: str | None = None  # why what the GPU wrote here depends on timing (a race), until the CPU rewrites it
    keys: dict[int, bytes] = field(default_factory=dict)  # chunk index -> key of the content last recorded
    keyed: dict[QueueProgress, int] = field(default_factory=dict)  # writes shown complete whose chunks `keys` hold

    @property
    def tracked(self) -> bool:
        """A buffer of the program's own, or a dispatch's kernel arguments, that the CPU can read: its contents
        are recorded."""
        return self.role in TRACKED_ROLES and self.cpu is not None

    def complete(self) -> bool:
        """Every GPU write to it that the recorder saw is known to have finished, or never to come."""
        return all(q.settled(pos) for q, pos in self.writes.items())

    def may_be_written(self) -> bool:
        """A queue still there may be writing it: no wait has shown its writes there complete."""
        return any(not q.complete(pos) and not q.destroyed for q, pos in self.writes.items())

    def busy(self) -> list[tuple[int, int]]:
        """The bytes [lo, hi) that queues still there may be writing (each queue's writes not shown complete, as one
        span)."""
        return [self.extents[q] for q, pos in self.writes.items() if not q.complete(pos) and not q.destroyed]

    def wrote(self, queue: QueueProgress, pos: int, lo: int, hi: int) -> None:
        """`queue` writes bytes [lo, hi) of it with the packet ending at `pos` of its stream."""
        self.writes[queue] = max(self.writes.get(queue, 0), pos)
        was = self.extents.get(queue)
        self.extents[queue] = (lo, hi) if was is None else (min(was[0], lo), max(was[1], hi))


class MemoryRecorder:
    """Records buffer contents into the trace in chunks, deduplicated by content."""

    def __init__(self, trace: TraceFile, chunk: int):
        self.trace, self.chunk = trace, chunk
        self.payload_bytes = 0

    def _chunks(self, buf: TrackedBuffer, offset: int, size: int) -> tuple[int, list[memoryview]]:
        """(index of the first, views of their bytes in the buffer's memory) of the chunks covering
        [offset, offset+size) of `buf`. A view reads the buffer as it is now: `_stored` copies it."""
        c = self.chunk
        first, end = offset // c * c, min(-(-min(offset + size, buf.size) // c) * c, buf.size)
        if first >= end:
            return 0, []
        memory = memoryview((ctypes.c_char * (end - first)).from_address(buf.cpu + first)).cast("B")
        return first // c, [memory[lo:lo + c] for lo in range(0, end - first, c)]

    def _differing(self, buf: TrackedBuffer, offset: int, size: int, skip: Container[int] = ()) \
            -> list[tuple[int, memoryview]]:
        """(index, view) of the chunks of [offset, offset+size) whose content differs from what was last recorded,
        but those whose index is in `skip`: hashed in one pass, as fast as a copy of them."""
        first, views = self._chunks(buf, offset, size)
        get = buf.keys.get
        return [(i, view) for i, view, key in zip(itertools.count(first), views, map(blob_key, views), strict=False)
                if get(i) != key and i not in skip]

    def _stored(self, chunk: memoryview) -> bytes:
        """Copy a chunk into the trace as a blob; its key. The key is the copy's, in case another thread wrote the
        chunk since it was hashed."""
        data = bytes(chunk)
        return self.trace.blob(data, blob_key(data))

    def record(self, buf: TrackedBuffer, offset: int, size: int, skip: Container[int] = ()) -> int:
        """`mem` records for the chunks of [offset, offset+size) whose content differs from what was last
        recorded, but those whose index is in `skip`; how many."""
        differing = self._differing(buf, offset, size, skip)
        for i, data in differing:
            key = buf.keys[i] = self._stored(data)
            self.payload_bytes += len(data)
            self.trace.record(R.MEM, va=buf.va + i * self.chunk, size=len(data), key=key)
        return len(differing)

    def rekey(self, buf: TrackedBuffer, offset: int, size: int, skip: Container[int] = ()) -> None:
        """Take the chunks of [offset, offset+size) as they are now for what was last recorded (their blobs stored,
        no `mem` record), but those whose index is in `skip`: a queue's finished writes, so that a later
        comparison finds only what the CPU writes after them."""
        for i, data in self._differing(buf, offset, size, skip):
            buf.keys[i] = self._stored(data)

    def forget(self, buf: TrackedBuffer, lo: int, hi: int) -> None:
        """The GPU may write bytes [lo, hi) of `buf`: what was last recorded of the chunks there is no longer what
        they hold (campaign 117: a CPU write putting their old content back was taken for one made already)."""
        c = self.chunk
        for i in range(lo // c, -(-hi // c)):
            buf.keys.pop(i, None)

    def edges(self, buf: TrackedBuffer, offset: int, size: int, skip: Container[int] = ()) -> list[tuple[int, bytes]]:
        """(index, a copy of its bytes) of the chunks [offset, offset+size) covers in part, but those whose index is
        in `skip`, each recorded as copied when it differs from what was last recorded: what `settle` compares
        them with once a store into that span is made."""
        c, end = self.chunk, min(offset + size, buf.size)
        if offset >= end:
            return []
        parts = {offset // c} if offset % c else set()
        if end % c and end != buf.size:
            parts.add(end // c)
        out = []
        for i in sorted(parts):
            if i not in skip:
                copy = bytes(self._chunks(buf, i * c, 1)[1][0])
                if buf.keys.get(i) != blob_key(copy):
                    key = buf.keys[i] = self.trace.blob(copy, blob_key(copy))
                    self.payload_bytes += len(copy)
                    self.trace.record(R.MEM, va=buf.va + i * c, size=len(copy), key=key)
                out.append((i, copy))
        return out

    def settle(self, buf: TrackedBuffer, offset: int, size: int, edges: list[tuple[int, bytes]],
               skip: Container[int] = ()) -> None:
        """After a store into [offset, offset+size), of the chunks it covered in part (`edges`, as they were
        before it): take each as it is now for what was last recorded when its bytes outside the span are as
        before, else record it (another thread wrote there through a view meanwhile: campaign 117)."""
        c = self.chunk
        for i, before in edges:
            if i in skip:
                continue
            now = self._chunks(buf, i * c, 1)[1][0]
            lo, hi = max(offset - i * c, 0), min(offset + size - i * c, len(now))
            if now[:lo] == before[:lo] and now[hi:] == before[hi:]:
                buf.keys[i] = self._stored(now)
            else:
                buf.keys.pop(i, None)
                self.record(buf, i * c, 1)

    def changed(self, buf: TrackedBuffer, offset: int, size: int) -> bool:
        """Whether a chunk of [offset, offset+size) differs from what was last recorded."""
        first, views = self._chunks(buf, offset, size)
        return any(buf.keys.get(i) != blob_key(view) for i, view in enumerate(views, first))

    def record_given(self, buf: TrackedBuffer, offset: int, size: int, piece: Callable[[int, int], bytes]) -> None:
        """`mem` records of [offset, offset+size) of `buf` as the CPU is about to write it, `piece(lo, hi)` giving
        bytes [lo, hi) of what it writes (from `offset`), one per chunk it spans; a whole chunk already recorded
        as it will be is left out. Recorded before the store, no wait the store releases comes before them."""
        c, end, start = self.chunk, min(offset + size, buf.size), offset
        while offset < end:
            stop = min(end, (offset // c + 1) * c)
            data = piece(offset - start, stop - start)
            key = blob_key(data)
            whole = offset % c == 0 and (stop % c == 0 or stop == buf.size)
            if not (whole and buf.keys.get(offset // c) == key):
                self.payload_bytes += len(data)
                self.trace.record(R.MEM, va=buf.va + offset, size=len(data), key=self.trace.blob(data, key))
                if whole:
                    buf.keys[offset // c] = key
                else:  # the chunk as last recorded whole is not what it will hold
                    buf.keys.pop(offset // c, None)
            offset = stop

    def record_exact(self, buf: TrackedBuffer, offset: int, size: int) -> None:
        """`mem` records of exactly [offset, offset+size) of `buf`, one per chunk it spans (no record is larger than a
        chunk): for a small write into a large buffer, such as a dispatch's kernel arguments into a queue's arena,
        whose chunks would otherwise be recorded whole on each write."""
        c, end = self.chunk, min(offset + size, buf.size)
        while offset < end:
            stop = min(end, (offset // c + 1) * c)
            data = ctypes.string_at(buf.cpu + offset, stop - offset)
            buf.keys.pop(offset // c, None)  # the chunk as last recorded whole is not what it holds now
            self.payload_bytes += len(data)
            self.trace.record(R.MEM, va=buf.va + offset, size=len(data), key=self.trace.blob(data, blob_key(data)))
            offset = stop

    def checkpoint_entry(self, buf: TrackedBuffer, fresh: Container[int] | None = None) -> dict:
        """The checkpoint entry of a buffer the GPU wrote (its chunks not stored yet stored as blobs, so a replay
        can show what it expected). A buffer whose bytes the GPU left as they were has one too: a copy of what
        is there already, or zeros over fresh memory, are writes the replay must verify as well. With `fresh`, only
        the chunks of those indexes are read now: `record` has just compared the others, which are taken as it
        recorded them (campaign 87: another thread's view write since, which no record gives yet, was hashed)."""
        _, views = self._chunks(buf, 0, buf.size)
        known = buf.keys
        if fresh is None:  # in one pass (a checkpoint of a large buffer is about as fast as a copy of it)
            keys = list(map(blob_key, views))
        else:
            keys = [known[i] if i not in fresh and i in known else blob_key(view) for i, view in enumerate(views)]
        if list(map(known.get, range(len(keys)))) != keys:  # (compared in C: the common case is no change)
            for i in [i for i, key in enumerate(keys) if known.get(i) != key]:
                keys[i] = known[i] = self._stored(views[i])
        return {"va": buf.va, "size": buf.size, "name": buf.name, "keys": keys,
                "hash": blob_key(b"".join(keys))}
