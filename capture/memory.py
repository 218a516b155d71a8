"""Buffers as the recorder knows them, and their contents recorded chunk by chunk.

A chunk of `chunk` bytes (aligned to its buffer's start) is recorded, as a content-addressed blob and a `mem`
record, when its content differs from what was last recorded for it. Checkpoints hash the same chunks.
"""

from __future__ import annotations

import ctypes
import hashlib
from dataclasses import dataclass, field

from kfdtrace.capture.completion import QueueProgress
from kfdtrace.capture.trace_file import TraceFile
from kfdtrace.traces import records as R
from kfdtrace.traces.format import blob_key


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
    keys: dict[int, bytes] = field(default_factory=dict)  # chunk index -> key of the content last recorded

    @property
    def tracked(self) -> bool:
        """A buffer of the program's own that the CPU can read: its contents are recorded."""
        return self.role == "user" and self.cpu is not None

    def complete(self) -> bool:
        """Every GPU write to it that the recorder saw is known to have finished."""
        return all(q.complete(pos) for q, pos in self.writes.items())


class MemoryRecorder:
    """Records buffer contents into the trace in chunks, deduplicated by content."""

    def __init__(self, trace: TraceFile, chunk: int):
        self.trace, self.chunk = trace, chunk
        self.payload_bytes = 0

    def _chunks(self, buf: TrackedBuffer, offset: int, size: int):
        """(index, bytes) of the chunks covering [offset, offset+size) of `buf`."""
        c = self.chunk
        for i in range(offset // c, (min(offset + size, buf.size) + c - 1) // c):
            lo = i * c
            yield i, ctypes.string_at(buf.cpu + lo, min(c, buf.size - lo))

    def record(self, buf: TrackedBuffer, offset: int, size: int, force: bool = False) -> None:
        """`mem` records for the chunks of [offset, offset+size) whose content differs from what was last
        recorded (all of them with `force`)."""
        for i, data in self._chunks(buf, offset, size):
            key = blob_key(data)
            if not force and buf.keys.get(i) == key:
                continue
            buf.keys[i] = self.trace.blob(data, key)
            self.payload_bytes += len(data)
            self.trace.record(R.MEM, va=buf.va + i * self.chunk, size=len(data), key=key)

    def checkpoint_entry(self, buf: TrackedBuffer) -> dict | None:
        """The checkpoint entry of a buffer whose content changed since it was last recorded (its new chunks
        stored as blobs, so a replay can show what it expected); None when unchanged."""
        keys, changed = [], False
        for i, data in self._chunks(buf, 0, buf.size):
            key = blob_key(data)
            if buf.keys.get(i) != key:
                self.trace.blob(data, key)
                buf.keys[i], changed = key, True
            keys.append(key)
        if not changed:
            return None
        return {"va": buf.va, "size": buf.size, "name": buf.name, "keys": keys,
                "hash": hashlib.sha256(b"".join(keys)).digest()[:16]}
