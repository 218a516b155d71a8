"""The trace being written: the one owner of the TraceWriter, its lock, and the thread that flushes it.

Every record, blob and flush goes through `TraceFile`, under its lock, so no compressor or frame buffer is
ever touched by two threads, and the records form one total order consistent with each thread's program
order. Each record carries `t` (ns since the recording started) and `tid` (a small number per thread, named
by a `thread` record when the thread first records).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from kfdtrace.traces import records as R
from kfdtrace.traces.format import TraceError, TraceWriter

FLUSH_INTERVAL_S = 0.1  # buffered records reach the disk at least this often (crash safety)


class CaptureFailed(BaseException):
    """The trace cannot be written (disk full, file size limit, ...): the workload is stopped where it was, and
    the trace keeps everything written before. A BaseException, so that a workload's `except Exception` cannot
    carry on unrecorded."""


class TraceFile:
    """A TraceWriter shared by the workload's threads and a flusher thread."""

    def __init__(self, path: str, header: dict):
        self.path = path
        # a queue's ring bytes change little from one doorbell to the next: stored as differences (FORMAT.md)
        self.writer = TraceWriter(path, header, clock="t", delta=("ring", "queue"))
        self._record_fields = self.writer.record_fields
        # each record type as a plain str: the writer takes a str subclass only after a slower check
        self._plain = {t: str(t) for t in R.RECORD_TYPES.values()}
        self.lock = threading.RLock()  # also taken by the recorder around whatever must stay in order
        self.t0 = time.monotonic_ns()
        # this thread's tid: thread-local, as a finished thread's ident may be reused by the next one started
        self._local = threading.local()
        self._threads = 0  # tids handed out
        self._closed = False
        self.failure: str | None = None  # why the trace could not be written, once it could not
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_periodically, name="capture-flush", daemon=True)
        self._flusher.start()

    def _flush_periodically(self) -> None:
        """Nothing stays in memory longer than FLUSH_INTERVAL_S, even while the workload blocks in a wait."""
        while not self._stop.wait(FLUSH_INTERVAL_S):
            with self.lock:
                if self._closed or self.failure:
                    return
                try:
                    self.writer.flush()
                except TraceError as exc:
                    self._failed(exc)  # the workload's next record stops it
                    return

    def _failed(self, exc: TraceError) -> CaptureFailed:
        if self._closed and self.failure is None:  # a System used after its `record()` block, or a daemon thread
            return CaptureFailed(f"{self.path}: the recording has ended (its `with record(...)` block is over; under "
                                 f"`capture run`, the workload's main thread, other non-daemon threads and atexit "
                                 f"handlers are done): GPU work through a System it recorded is not recorded after "
                                 f"that; use a System opened anew")
        if self.failure is None:
            self.failure = (f"{exc}: the workload was stopped there; the trace keeps everything written before "
                            f"(it reads as a recovered trace)")
        return CaptureFailed(self.failure)

    def now(self) -> int:
        return time.monotonic_ns() - self.t0

    def forked(self) -> None:
        """In a fork's child: write nothing, ever (the file and its frames are the parent's). Its lock is new: a
        thread of the parent's may have held the old one at the fork, and no thread but the forking one runs on
        in the child."""
        self.lock = threading.RLock()
        self.record = lambda type_, /, **fields: -1  # type: ignore[method-assign]
        self.blob = lambda data, key: key  # type: ignore[method-assign]
        self.flush = self.flush_blobs = self.stop_flushing = lambda: None  # type: ignore[method-assign]
        self.close = lambda summary: None  # type: ignore[method-assign]

    def _new_tid(self) -> int:
        """A tid for the calling thread, named by a `thread` record (call under the lock)."""
        tid = self._local.tid = self._threads
        self._threads += 1
        self.writer.record(R.THREAD, t=self.now(), tid=tid, name=threading.current_thread().name)
        return tid

    def record(self, type_: str, /, **fields: Any) -> int:
        """Append a record; its number. (The hot path of every capture: its helpers are inlined.)"""
        with self.lock:
            if self.failure:
                raise CaptureFailed(self.failure)
            tid = getattr(self._local, "tid", None)
            try:
                if tid is None:
                    tid = self._new_tid()
                return self._record_fields(self._plain.get(type_, type_),
                                           {"t": time.monotonic_ns() - self.t0, "tid": tid, **fields})
            except TraceError as exc:
                raise self._failed(exc) from None

    def blob(self, data: bytes, key: bytes) -> bytes:
        with self.lock:
            try:
                return self.writer.blob(data, key)
            except TraceError as exc:
                raise self._failed(exc) from None

    def flush(self) -> None:
        """Everything so far to the disk: a SIGKILL from now on loses none of it."""
        with self.lock:
            if self.failure:
                raise CaptureFailed(self.failure)
            try:
                self.writer.flush()
            except TraceError as exc:
                raise self._failed(exc) from None

    def flush_blobs(self) -> None:
        """Write the buffered blobs if they fill half a frame: for a caller about to block, whose wait hides
        the compression and the write (the records that follow a wait would otherwise pay for it)."""
        with self.lock:
            try:
                self.writer.flush_blobs(at_least=self.writer.frame_bytes // 2)
            except TraceError as exc:
                raise self._failed(exc) from None

    @property
    def stats(self) -> dict[str, int]:
        with self.lock:
            return self.writer.stats

    def stop_flushing(self) -> None:
        """Stop the flusher thread (call without holding the lock: it may be waiting for it)."""
        self._stop.set()
        if threading.current_thread() is not self._flusher:
            self._flusher.join()

    def close(self, summary: dict) -> None:
        """Stop the flusher, then write the index with `summary`."""
        self.stop_flushing()
        with self.lock:
            if not self._closed:
                self._closed = True
                try:
                    self.writer.close(summary)  # the index too, if there is room for it again
                except TraceError as exc:
                    raise self._failed(exc) from None
            if self.failure:
                raise CaptureFailed(self.failure)
