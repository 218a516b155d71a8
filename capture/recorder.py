"""The recorder: a Syscalls wrapper that writes everything crossing the boundary into a trace.

It records each ioctl twice (an "about to" record flushed to disk before the call, its result after), every
mmap/munmap of the device files, every doorbell with the ring bytes written since the previous one, the
CPU's writes to memory the GPU reads (content-addressed chunks), semaphore and event activity, and at each CPU
wait that returns, a checkpoint: hashes of the buffers the GPU wrote that are known complete then
(capture/completion.py says how that is known); buffers with GPU writes still in flight are listed as such
and hashed at a later checkpoint, and buffers a race between queues decided are listed as racy and never hashed
(capture/ordering.py, capture/README.md).

Threads: a workload may use the driver from several threads. Each boundary call records under the trace's
lock (the ioctl itself runs outside it), so the records form one total order consistent with every
thread's program order, and every record names its thread.

Which CPU writes it sees: writes made through the driver (Buffer.write/fill) are announced and recorded
exactly. A buffer handed out as a raw view (Buffer.numpy) is compared chunk by chunk against what was last
recorded before each submission that references it and before each CPU signal ("auto"); with
tracking="scan" every CPU-visible buffer a submission references is compared, for workloads that write
through raw pointers. See capture/README.md for the measured trade-off.
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import errno
import functools
import itertools
import operator
import os
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from kfdtrace.capture.completion import Completion, QueueProgress, Wait
from kfdtrace.capture.dispatches import ANYTHING, Dispatches, Pointers
from kfdtrace.capture.memory import KERNARGS, MAX_RUNS, MAX_SPANS, MemoryRecorder, Run, TrackedBuffer
from kfdtrace.capture.ordering import Ordering
from kfdtrace.capture.submissions import Analyzer, Facts, Plan, Written
from kfdtrace.capture.trace_file import TraceFile
from kfdtrace.driver import kfd_ioctl as K
from kfdtrace.driver.aql import AQL, AmdSignal, assigned
from kfdtrace.driver.memory import DOMAINS
from kfdtrace.driver.packets import Dialect, Packet, PacketDef, PacketError
from kfdtrace.driver.ranges import RangeMap
from kfdtrace.driver.ring_queue import unwrapped
from kfdtrace.driver.syscalls import KFD_DEVICE, Syscalls, memory_view
from kfdtrace.traces import records as R
from kfdtrace.traces.format import MAX_BLOB_BYTES, TraceError, blob_key
from kfdtrace.traces.walk import indirect_dialect, queue_dialect

DEFAULT_CHUNK = 16 << 10  # measured: see capture/README.md
# Submissions are looked into in batches, at the next CPU wait (when the GPU is idle) or before anything that
# changes what they would tell, rather than one by one on the submission path (measured: capture overhead
# 1.33x -> 1.24x on benchmarks/capture_overhead.py).
SIGNAL_VALUE = AmdSignal.value.offset  # where an amd_signal_t holds its value
_ADDRESS = operator.itemgetter(1)  # of a (position, address, bytes) access
NO_POINTERS = Pointers()  # what a submission launching no kernel takes
LEARN_BATCH = 256
ANY_VALUE = 1 << 64  # what a word a copy or a kernel wrote may hold, for completion and ordering: anything
MAX_POLLED = 256  # polled words a CPU wait looks at (the latest)
MAX_DATA_WORDS = 4096  # words of the program's buffers used as semaphores, kept (the latest)
PENDING_WAITS = 64  # a queue's GPU waits not known passed a signal is matched against (with more: it may release)
RESOLVED_PER_PLAN = 16  # sets of written addresses whose buffers a plan keeps, for the buffer layout of the moment
MAX_RACES = 16  # racy buffers the summary names
SEARCH_BUDGET = 1 << 20  # signals one checkpoint's ordering searches may look at, in all (ordering.py)
MAX_HELD = 256  # buffers a checkpoint follows from what dispatches in flight take (_held)
POINTER_SCAN = 1 << 20  # bytes of a buffer looked at for the addresses of others it holds
SCAN_BUDGET = 16 << 20  # bytes one checkpoint looks at so (beyond, every buffer counts as held)
FOLD_PLANS = 4096  # plans counted by their submissions before those counts are folded into packet counts
TRACKING_MODES = ("auto", "scan")
Accesses = tuple[int, int, int, int, TrackedBuffer]  # a submission's writes (reads) of a buffer: first, last, lo, hi


def _pieces(ranges: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """Byte ranges [lo, hi) merged where they overlap or touch, each within `size`: a submission's accesses of a
    buffer as the parts they cover apart (one covering them all beyond MAX_SPANS), so that another queue's
    accesses between them are no race with them."""
    merged: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    if len(merged) > MAX_SPANS:
        return [(merged[0][0], min(max(hi for _, hi in merged), size))]
    return [(lo, min(hi, size)) for lo, hi in merged]


Info = tuple[str | None, int, str | None, bool, bool, str | None]


@functools.cache
def request_info(request: int) -> Info:
    """The table name of an ioctl request (None when unknown), the size of its argument, the name of the
    RecordingSyscalls method that learns from its result (None when there is none), whether it blocks
    (its "about to" record is then left to the flusher: blocking ioctls are the most frequent ones of a
    synchronising workload, and buffered blobs are written before them instead, while the workload waits),
    whether it takes or gives back ids the kernel hands out again (Ioctl.reuses), and the name of the method
    that learns from its argument before it is made (None when there is none)."""
    try:
        entry = K.lookup(request)
    except KeyError:
        return None, K.ioc_size(request), None, False, False, None
    after, before = f"_after_{entry.name.lower()}", f"_before_{entry.name.lower()}"
    return entry.name, K.ioc_size(request), after if hasattr(RecordingSyscalls, after) else None, entry.blocking, \
        entry.reuses, before if hasattr(RecordingSyscalls, before) else None


@dataclass(eq=False)
class TrackedQueue:
    queue_id: int
    gpu_id: int
    type: int
    ring_va: int
    ring_size: int
    rptr_va: int
    doorbell_offset: int
    dialect: Dialect | None
    progress: QueueProgress
    ib_dialect: Dialect | None = None  # what its indirect buffers hold (an AQL queue's PM4-IB: the GPU's PM4)
    name: str | None = None
    wptr: int = 0  # where its stream's next submission starts (bytes: kfd_ioctl.doorbell_end of the last value)
    rung: int = 0  # the value its doorbell was last rung with (AQL: of the last packet its doorbells let it take)
    announced: int = 0  # AQL: the end of the highest packet index rung so far
    ring_view: memoryview | None = None  # the ring's CPU mapping, once found (forgotten when memory is unmapped)


@dataclass(eq=False)
class _PlainRun:
    """Consecutive submissions of one queue that signal, wait, dispatch and call nothing, as `_learn_pending` puts
    them together: their written, read and referenced addresses, positioned from the first one's start (`base`)."""

    queue: TrackedQueue
    base: int
    end: int  # where the last one ends in the queue's stream
    plan: Plan  # the first one's, and its facts: what a run of one is learnt from
    facts: tuple
    written: list[tuple[int, int, int]] = field(init=False)  # as in Written
    read: list[tuple[int, int, int]] = field(init=False)
    referenced: list[int] = field(init=False)
    count: int = 1

    def __post_init__(self) -> None:
        self.written, self.read, self.referenced = list(self.facts[2]), list(self.facts[4]), list(self.facts[3])

    def add(self, end: int, facts: tuple) -> None:
        """The next submission (starting where the run ends, and ending at `end`), with its plan's facts
        positioned from the run's start (`Plan.facts`'s shift)."""
        self.written += facts[2]
        self.read += facts[4]
        self.referenced += facts[3]
        self.end, self.count = end, self.count + 1

    def add_written(self, end: int, written: Written) -> None:
        """`add` with only what the next submission writes: where its reads and the addresses it holds tell
        nothing (a lone queue, racing with none, and no CPU view to scan before it)."""
        self.written += written
        self.end, self.count = end, self.count + 1


MAX_CHUNK = 1 << MAX_BLOB_BYTES.bit_length() - 1  # the largest power of two a blob holds (32 MiB)


def check_chunk(chunk_size: object, name: str = "chunk size") -> None:
    """ValueError unless `chunk_size` is a chunk size a recorder takes: a power of two from 4096 to MAX_CHUNK."""
    if not isinstance(chunk_size, int) or not 4096 <= chunk_size <= MAX_CHUNK or chunk_size & (chunk_size - 1):
        raise ValueError(f"{name} {chunk_size}: give a power of two from 4096 to {MAX_CHUNK} (a chunk is one blob "
                         f"of the trace)")


class Recorder:
    """Records one workload. `wrap(syscalls)` gives the backend the workload should use."""

    def __init__(self, path: str, header: dict, *, chunk_size: int = DEFAULT_CHUNK, tracking: str = "auto"):
        if tracking not in TRACKING_MODES:
            raise ValueError(f"tracking must be one of {', '.join(TRACKING_MODES)}, not {tracking!r}")
        check_chunk(chunk_size)
        self.path, self.chunk, self.tracking = path, chunk_size, tracking
        self.trace = TraceFile(path, {**header, "chunk_size": chunk_size, "tracking": tracking})
        self.memory = MemoryRecorder(self.trace, chunk_size)
        self.record = self.trace.record  # record(type, **fields) -> its number
        self.forked = False  # this is a fork's child, which records nothing (the parent records on)
        self.closing = False  # close() began
        hook = weakref.WeakMethod(self._in_child)
        os.register_at_fork(after_in_child=lambda: (child := hook()) is not None and child())
        self.ioctls = self.buffers_seen = self.checkpoints = 0
        self.failed_ioctls: Counter[str] = Counter()  # "NAME ERRNO" -> ioctls that failed so
        # the summary's packet counts, kept as submissions are recorded: submissions by (dialect, plan), folded
        # into packets by dialect and definition when the summary asks or many plans were seen
        self._uses: dict[tuple[Dialect, Plan], int] = {}
        self._packets: dict[Dialect, Counter[PacketDef]] = {}
        self.undecodable = 0  # submissions whose bytes are no packets
        self.kernels: Counter[str] = Counter()  # kernel name -> dispatches of it
        self.races: dict[str, str] = {}  # buffers a race between queues decided (the first MAX_RACES) -> why
        self._wrapped: list[RecordingSyscalls] = []
        self._final: dict | None = None

    def wrap(self, inner: Syscalls, dialects: dict[int, dict]) -> RecordingSyscalls:
        """The backend to record `inner` through; `dialects`: its GPUs' SDMA and PM4 dialect names by gpu_id."""
        wrapped = RecordingSyscalls(self, inner, dialects)
        self._wrapped.append(wrapped)
        return wrapped

    def next_ioctl(self) -> int:
        """The number of the next ioctl (call under the trace's lock)."""
        self.ioctls += 1
        return self.ioctls

    def summary(self, status: int | None = None) -> dict:
        s = self.trace.stats
        return {
            "duration_ns": self.trace.now(), "ioctls": self.ioctls, "submissions": s["submissions"],
            "packets": self.packet_counts(), "buffers": self.buffers_seen, "checkpoints": self.checkpoints,
            "payload_bytes": self.memory.payload_bytes, "exit_status": status,
            **({"kernels": dict(self.kernels)} if self.kernels else {}),
            **({"racy": [f"{name}: {why}" for name, why in self.races.items()]} if self.races else {}),
            **({"failed_ioctls": dict(self.failed_ioctls)} if self.failed_ioctls else {}),
            **({"undrained": undrained} if (undrained := self._undrained()) else {}),
        }

    def _undrained(self) -> list[int]:
        """The queues still alive with work left, as the workload ends: a replay need not drain them either."""
        return sorted(q for wrapped in self._wrapped for q in wrapped.undrained())

    def packet_counts(self) -> dict[str, int]:
        """'dialect:NAME' -> packets submitted so far ("undecodable": submissions whose bytes are no packets)."""
        self._fold()
        out = {f"{dialect.name}:{d.name}": n for dialect, counts in self._packets.items() for d, n in counts.items()}
        return {**out, "undecodable": self.undecodable} if self.undecodable else out

    def count_packets(self, dialect: Dialect, plan: Plan) -> None:
        """Count one submission's packets as it is recorded: one more use of its plan, which says how many of
        each kind it holds."""
        uses, key = self._uses, (dialect, plan)
        uses[key] = uses.get(key, 0) + 1
        if len(uses) > FOLD_PLANS:
            self._fold()

    def _fold(self) -> None:
        for (dialect, plan), n in self._uses.items():
            counts = self._packets.setdefault(dialect, Counter())
            for d, k in plan.packets.items():
                counts[d] += k * n
        self._uses.clear()

    def _in_child(self) -> None:
        """A fork's child: what it asks of the GPU is not the recorded process's (a KFD file serves only the
        process that opened it: kfd_ioctl gives any other EBADF), so it records nothing."""
        self.forked = True
        self.trace.forked()
        self.record = self.trace.record
        for wrapped in self._wrapped:
            wrapped.lock = self.trace.lock

    def close(self, status: int | None = None) -> dict:
        """Write the index with the summary (the writer's figures included); returns the summary ({} in a fork's
        child, which writes nothing)."""
        if self.forked:
            return {}
        self.closing = True
        self.trace.stop_flushing()
        with self.trace.lock:
            if self._final is None:
                for wrapped in self._wrapped:  # submissions the workload left unlearnt: counted in the summary
                    if wrapped.queues:  # and a store through a view releasing one of the queues left (campaign 108)
                        wrapped._scan_polled()
                    wrapped._learn_pending()
                summary = self.summary(status)
                with contextlib.suppress(TraceError):  # a write that fails is trace.close's to report
                    self.trace.writer.write_frames()  # the writer's figures below are final but for the index
                summary.update({f"trace_{k}": v for k, v in self.trace.stats.items()})
                self.trace.close(summary)
                self._final = {**summary, "trace_file_bytes": self.trace.stats["file_bytes"]}
            return self._final


class RecordingSyscalls:
    """The Syscalls a recorded workload runs on: the inner backend, with every call written down."""

    def __init__(self, recorder: Recorder, inner: Syscalls, dialects: dict[int, dict]):
        self.rec, self.inner = recorder, inner
        self.name = inner.name
        self.lock = recorder.trace.lock
        self.reusing = threading.RLock()  # held around the ioctls that take or give back ids (Ioctl.reuses)
        self.memory = recorder.memory
        self.files: dict[int, str] = {}  # device fds -> path
        self.buffers: dict[int, TrackedBuffer] = {}  # handle -> buffer
        self.by_va: RangeMap[TrackedBuffer] = RangeMap()
        self.queues: dict[int, TrackedQueue] = {}
        self.doorbells: dict[tuple[int, int], TrackedQueue] = {}  # (gpu_id, offset in the slice) -> queue
        self.doorbell_pages: dict[int, int] = {}  # CPU address of a doorbell slice -> gpu_id
        self.rung: dict[int, TrackedQueue] = {}  # doorbell address -> its queue, as found by _queue_at
        self.mappings: dict[int, tuple[int, int]] = {}  # CPU address -> (fd, length) of device mappings
        self.event_page: tuple[int, int] | None = None  # [start, end) of the buffer the kernel took as event page
        self._page_handles: dict[int, int] = {}  # thread -> the event page handle its CREATE_EVENT hands over
        self.gpus: dict[int, dict] = {}  # gpu_id -> its header entry's dialect names, once its VM is acquired
        self.exposed = False  # some buffer has a raw CPU view: submissions must be looked through
        self._edges: list[tuple[int, bytes]] = []  # the chunks a store under way writes in part, as they were before
        # addresses GPU waits poll: a store there releases a queue, which may read anything the CPU wrote before
        # through raw views; one the CPU makes through a view has no submission or CPU signal after it to show it
        # (an ordered set, the last MAX_POLLED)
        # (and the value last seen of the ones whose chunk a queue is writing elsewhere: see _word_changed)
        self._polled: dict[int, bytes | None] = {}
        self._words: dict[int, None] = {}  # every word GPU waits poll or GPU signals write, noted in its buffer
        # those of them in the program's buffers, which other writes may reach (kept when buffers change: a word
        # of a buffer gone taken for one is no harm; the last MAX_DATA_WORDS)
        self._data_words: dict[int, None] = {}
        self.analyzer = Analyzer()
        self.dispatches = Dispatches(recorder.kernels)
        self.loaded: set[int] = set()  # the buffers code objects were loaded into (noted once their image is in)
        self.ordering = Ordering(self._unseen)
        self.completion = Completion(self.ordering.later)
        self.racy: set[TrackedBuffer] = set()  # buffers whose contents a race between queues decided
        # destroyed queues that stopped short of their last doorbell at no wait: what they wrote beyond is timing's,
        # as is what is made from it (a lone live queue may race with them)
        self.adrift: set[QueueProgress] = set()
        self.learnt = 0  # submissions learnt so far
        self.waited: dict[QueueProgress, int] = {}  # where each queue's last GPU wait learnt ends
        self.written: set[TrackedBuffer] = set()  # buffers with GPU writes not yet hashed
        # queue -> buffer -> the end of its latest dispatch that took the buffer (a pointer argument, a by-value
        # word), not known complete, and whether one took it by value: what it writes beyond what its arguments
        # say is not known (_held, _taken_done)
        self._taken: dict[QueueProgress, dict[TrackedBuffer, tuple[int, bool]]] = {}
        # freed buffers' ranges with the GPU writes still to come into them, (va, end, queue -> position): `_adopt`
        self.orphans: list[tuple[int, int, dict[QueueProgress, int]]] = []
        self.layout = 0  # changes whenever a buffer comes, goes or changes what is tracked of it
        # submissions not looked into: (queue, base, ring, plan, inner facts, the pointers its dispatches take, its
        # packets when decoded)
        self._unlearnt: list[tuple[TrackedQueue, int, bytes, Plan, Facts | None, Pointers | None,
                                   list[Packet] | None]] = []
        self._dialects = dialects  # gpu_id -> {"sdma": dialect name, "pm4": dialect name}, of every GPU

    # -- the boundary -------------------------------------------------------------------------------
    def open(self, path: str, flags: int = os.O_RDWR | os.O_CLOEXEC) -> int:
        fd = self.inner.open(path, flags)
        with self.lock:
            self.files[fd] = path
            self.rec.record(R.OPEN, path=path, flags=flags, fd=fd)
        return fd

    def close(self, fd: int) -> None:
        with self.lock:
            self.rec.record(R.CLOSE, fd=fd, path=self.files.pop(fd, None))
        self.inner.close(fd)

    def ioctl(self, fd: int, request: int, arg) -> int:
        info = request_info(request)
        if info[4]:  # ordered with the others that take or give back ids, records included: else a thread's
            with self.reusing:  # QUEUE of an id could come before another's QUEUE_DESTROY of it
                return self._ioctl(fd, request, arg, info)
        return self._ioctl(fd, request, arg, info)

    def _ioctl(self, fd: int, request: int, arg, info: Info) -> int:
        rec = self.rec
        name, size, after, blocking, _, before = info
        raw_in = b"" if arg is None else ctypes.string_at(ctypes.addressof(arg), min(size, ctypes.sizeof(arg)))
        with self.lock:
            seq = rec.next_ioctl()
            rec.record(R.IOCTL, seq=seq, fd=fd, request=request, name=name, data=raw_in)
            if before is not None and fd in self.files:
                self._hook(name, before, raw_in)
            if blocking:
                rec.trace.flush_blobs()
            else:
                rec.trace.flush()  # on disk before the call: a call that kills the process is seen
        try:
            ret = self.inner.ioctl(fd, request, arg)
        except OSError as exc:
            # the kernel copies the struct back on failure too: it may say what part was done
            raw_out = b"" if arg is None else ctypes.string_at(ctypes.addressof(arg), len(raw_in))
            with self.lock:
                rec.record(R.IOCTL_END, seq=seq, ret=-1, errno=exc.errno, data=raw_out)
                rec.failed_ioctls[f"{name or hex(request)} {errno.errorcode.get(exc.errno, exc.errno)}"] += 1
                if after is not None and fd in self.files and K.BY_NAME[name].partial:
                    self._hook(name, after, raw_out)
            raise
        raw_out = b"" if arg is None else ctypes.string_at(ctypes.addressof(arg), len(raw_in))
        with self.lock:
            rec.record(R.IOCTL_END, seq=seq, ret=ret, errno=0, data=raw_out)
            if after is not None and fd in self.files:
                self._hook(name, after, raw_out)
        return ret

    def _hook(self, name: str, method: str, raw: bytes) -> None:
        """Call `method` (ioctl `name`'s `after` or `before` hook) with the struct it returned or was given."""
        entry = K.BY_NAME[name]
        getattr(self, method)(entry.struct.from_buffer_copy(raw.ljust(ctypes.sizeof(entry.struct), b"\0")))

    def mmap(self, addr: int, length: int, prot: int, flags: int, fd: int, offset: int) -> int:
        with self.lock:
            out = self.inner.mmap(addr, length, prot, flags, fd, offset)
            if fd in self.files:
                self.mappings[out] = (fd, length)
                self.rec.record(R.MMAP, path=self.files[fd], fd=fd, offset=offset, addr=out, length=length,
                                prot=prot, flags=flags)
                self._note_mapping(fd, offset, out)
            return out

    def munmap(self, addr: int, length: int) -> None:
        with self.lock:  # nothing reads a buffer's memory for the trace while it goes away
            for start, (fd, n) in list(self.mappings.items()):
                if addr <= start < addr + length:
                    del self.mappings[start]
                    self.doorbell_pages.pop(start, None)
                    self.rung.clear()
                    self._forget_rings()
                    self._unmapped(start, n)
                    self.rec.record(R.MUNMAP, path=self.files.get(fd), addr=start, length=n)
            self.inner.munmap(addr, length)

    def _unmapped(self, start: int, n: int) -> None:
        """The CPU mapping [start, start + n) goes: what is pending is learnt while it can still be read, and
        the buffers it held are no longer CPU-readable (never read through a stale address)."""
        held = [b for b in self.buffers.values() if b.cpu is not None and b.domain != "userptr"
                and start <= b.cpu < start + n]
        if held:
            self._changed_layout()
            for b in held:
                b.cpu = None
                self.written.discard(b)  # what the GPU writes there the CPU can no longer read: never hashed

    def doorbell_store(self, addr: int, value: int) -> None:
        with self.lock:  # the doorbell is recorded in the order the queues see them
            q = self._queue_at(addr)
            if q is None:
                self.rec.record(R.DOORBELL, queue=None, addr=addr, value=value, ring=b"")
            else:
                self._submission(q, value)
            self.inner.doorbell_store(addr, value)

    def read_sysfs(self, path: str) -> str:
        return self.inner.read_sysfs(path)

    def list_sysfs(self, path: str) -> list[str]:
        return self.inner.list_sysfs(path)

    def annotate(self, kind: str, **fields) -> None:
        handler = getattr(self, f"_note_{kind}", None)
        if kind == "cpu_writing":  # the lock is held till the store is made, its "cpu_write" (campaign 87: another
            self.lock.acquire()  # thread's checkpoint hashed the bytes before a large store the trace gives before it)
            try:
                handler(**fields)
                self.inner.annotate(kind, **fields)
            except BaseException:
                self.lock.release()
                raise
        elif kind == "cpu_write":
            try:
                handler(**fields)
                self.inner.annotate(kind, **fields)
            finally:
                self.lock.release()
        else:
            if handler is not None:
                with self.lock:
                    handler(**fields)
            self.inner.annotate(kind, **fields)

    # -- what ioctls tell us ------------------------------------------------------------------------
    def _after_alloc_memory_of_gpu(self, a) -> None:
        domain = next((d for d, f in DOMAINS.items() if a.flags & f), "unknown")
        buf = TrackedBuffer(a.handle, a.gpu_id, a.va_addr, a.size, domain, a.flags, a.mmap_offset)
        if domain == "userptr":
            buf.cpu = a.mmap_offset  # the user's own pages
        self._changed_layout()
        self.buffers[a.handle] = buf
        self.by_va.add(buf.va, buf.size, buf)
        self._adopt(buf)
        self.rec.buffers_seen += 1
        self.rec.record(R.ALLOC, handle=a.handle, gpu=a.gpu_id, va=a.va_addr, size=a.size, domain=domain,
                        flags=a.flags, cpu=buf.cpu)

    def _adopt(self, buf: TrackedBuffer) -> None:
        """A buffer made where one freed with GPU writes still to come lay: they land in it (the GPU's page tables
        give the address to whichever buffer is mapped there when the packet runs; campaign 105)."""
        kept = []
        for va, end, pending in self.orphans:
            pending = {q: pos for q, pos in pending.items() if not q.destroyed and not q.complete(pos)}
            if pending and va < buf.va + buf.size and buf.va < end:
                lo, hi = max(va, buf.va) - buf.va, min(end, buf.va + buf.size) - buf.va
                for q, pos in pending.items():
                    buf.wrote(q, pos, lo, hi)
                self.written.add(buf)
            if pending:
                kept.append((va, end, pending))
        self.orphans = kept

    def _after_free_memory_of_gpu(self, a) -> None:
        buf = self.buffers.pop(a.handle, None)
        if buf is not None:
            self._changed_layout()
            pending = {q: pos for q, pos in buf.writes.items() if not q.destroyed and not q.complete(pos)}
            if pending:  # what they write lands in a buffer made there before they run (_adopt)
                self.orphans.append((buf.va, buf.va + buf.size, pending))
            self.by_va.remove(buf.va)
            self.written.discard(buf)
            self.racy.discard(buf)
            self.loaded.discard(buf.va)
            self._forget_rings()
            self.rec.record(R.FREE, handle=a.handle, va=buf.va)

    def _gpu_list(self, a) -> list[int]:
        return list((ctypes.c_uint32 * a.n_devices).from_address(a.device_ids_array_ptr)) if a.n_devices else []

    def _after_map_memory_to_gpu(self, a) -> None:
        if a.n_success:  # a failed call may have mapped some (MAP_MEMORY_TO_GPU is `partial`)
            self.rec.record(R.MAP, handle=a.handle, gpus=self._gpu_list(a)[: a.n_success])

    def _after_unmap_memory_from_gpu(self, a) -> None:
        if a.n_success:
            self.rec.record(R.UNMAP, handle=a.handle, gpus=self._gpu_list(a)[: a.n_success])

    def _after_acquire_vm(self, a) -> None:
        self.gpus[a.gpu_id] = self._dialects.get(a.gpu_id, {})

    def _after_create_queue(self, a) -> None:
        gpu = self.gpus.get(a.gpu_id, {})
        dialect = queue_dialect(a.queue_type, gpu)
        ring_size = max(a.ring_size, K.KFD_MIN_QUEUE_RING_SIZE)
        q = TrackedQueue(a.queue_id, a.gpu_id, a.queue_type, a.ring_base_address, ring_size, a.read_pointer_address,
                         a.doorbell_offset & (K.KFD_DOORBELL_PROCESS_SLICE - 1), dialect,
                         QueueProgress(f"queue {a.queue_id}"), dialect and indirect_dialect(dialect, gpu))
        self.queues[a.queue_id] = self.doorbells[(q.gpu_id, q.doorbell_offset)] = q
        self.rec.record(R.QUEUE, queue=a.queue_id, gpu=a.gpu_id, type=a.queue_type, ring=a.ring_base_address,
                        ring_size=ring_size, rptr=a.read_pointer_address, wptr=a.write_pointer_address,
                        doorbell_offset=a.doorbell_offset, engine=a.sdma_engine_id,
                        dialect=dialect.name if dialect else None)

    def _after_destroy_queue(self, a) -> None:
        q = self.queues.pop(a.queue_id, None)
        if q is not None:
            self._scan_polled()  # a store through a view that released it, which no CPU wait followed (campaign 108)
            self._learn_pending()
            progress = q.progress
            progress.destroyed, progress.ended = True, self.learnt
            del self.doorbells[(q.gpu_id, q.doorbell_offset)]
            self.rung.clear()
            rptr = self._read(q.rptr_va, 8)
            if rptr is not None:
                self._stopped(q, int.from_bytes(rptr, "little"))
            for pos, event in progress.mailboxes:  # those that may have run: a later wait may see what they set
                if not progress.stood or pos <= progress.stopped:  # (standing at a wait, it ran nothing after it)
                    self.completion.event_set(event)
            if not progress.settled(q.wptr):
                self.adrift.add(progress)
            for buf in [b for b in self.written if progress in b.writes]:  # nothing it wrote changes any more
                self._key_finished(buf)
            self.rec.record(R.QUEUE_DESTROY, queue=a.queue_id, wptr=q.rung,
                            rptr=None if rptr is None else int.from_bytes(rptr, "little"))

    def _stopped(self, q: TrackedQueue, rptr: int) -> None:
        """Where a destroyed queue stopped, by the read pointer its engine reported, and whether it stood at a
        packet that waits on memory there."""
        at = q.progress.stopped = K.read_end(q.type, rptr, q.wptr, q.ring_size)
        if at < q.wptr and q.dialect is not None:
            head = self._ring_bytes(q, at, at + 4)
            d = q.dialect.definition(int.from_bytes(head, "little")) if len(head) == 4 else None
            q.progress.stood = d is not None and q.dialect.waits(d)

    def undrained(self) -> list[int]:
        """The ids of the queues still alive whose read pointer is short of their last doorbell."""
        out = []
        for q in self.queues.values():
            rptr = self._read(q.rptr_va, 8)
            if rptr is not None and K.read_end(q.type, int.from_bytes(rptr, "little"), q.wptr, q.ring_size) < q.wptr:
                out.append(q.queue_id)
        return out

    def _mailboxes(self, base: int, written: Written, inner: Facts | None) -> list[tuple[int, int]]:
        """(position, event id) of the submission's writes into the event page: each sets that event's mailbox."""
        if self.event_page is None:
            return []
        lo, hi = self.event_page
        slot = K.KFD_EVENT_SLOT_SIZE
        addrs = sorted(map(_ADDRESS, written))  # (in C: a run of plain submissions has thousands)
        i = bisect.bisect_left(addrs, lo)
        out = [(base + p, (a - lo) // slot) for p, a, _ in written if lo <= a < hi] \
            if i < len(addrs) and addrs[i] < hi else []
        if inner is not None:
            out += [(base + p, (a - lo) // slot) for p, a in inner.called_writes if lo <= a < hi]
        return sorted(out)

    def _before_create_event(self, a) -> None:
        """A CREATE_EVENT with a buffer's handle in event_page_offset hands the kernel that buffer as the event
        page (kfd_ioctl_create_event; what the call gives back there is no handle)."""
        if a.event_page_offset:
            self._page_handles[threading.get_ident()] = a.event_page_offset

    def _after_create_event(self, a) -> None:
        page = self.buffers.get(self._page_handles.pop(threading.get_ident(), 0))
        if page is not None and self.event_page is None:
            self.event_page = (page.va, page.va + page.size)
        self.completion.event_created(a.event_id, bool(a.auto_reset))
        self.rec.record(R.EVENT, event=a.event_id, type=a.event_type, auto_reset=bool(a.auto_reset))

    def _after_destroy_event(self, a) -> None:
        self.rec.record(R.EVENT_DESTROY, event=a.event_id)

    def _before_set_event(self, a) -> None:
        """Before the call: a thread its setting wakes records its wait only after this (campaign 76: the wait, and
        a checkpoint taking the event for a queue's TRAP, came first)."""
        self.completion.event_set(a.event_id)
        self.rec.record(R.EVENT_SET, event=a.event_id)

    def _after_reset_event(self, a) -> None:
        self.completion.event_reset(a.event_id)
        self.rec.record(R.EVENT_RESET, event=a.event_id)

    def _note_mapping(self, fd: int, offset: int, addr: int) -> None:
        if self.files[fd] == KFD_DEVICE:
            kind, gpu_id, _ = K.mmap_offset_parts(offset)
            if kind == K.MmapType.DOORBELL:
                self.doorbell_pages[addr] = gpu_id
            return
        buf = next((b for b in self.buffers.values() if b.mmap_offset == offset and b.domain != "userptr"), None)
        if buf is not None:
            self._changed_layout()
            buf.cpu = addr
            self.rec.record(R.CPU_MAP, handle=buf.handle, va=buf.va, addr=addr)

    # -- submissions --------------------------------------------------------------------------------
    def _forget_rings(self) -> None:
        for q in self.queues.values():
            q.ring_view = None

    def _queue_at(self, addr: int) -> TrackedQueue | None:
        q = self.rung.get(addr)
        if q is None:
            for base, gpu_id in self.doorbell_pages.items():
                if 0 <= addr - base < K.KFD_DOORBELL_PROCESS_SLICE:
                    q = self.doorbells.get((gpu_id, addr - base))
                    if q is not None:
                        self.rung[addr] = q
                    break
        return q

    def _read(self, addr: int, n: int) -> bytes | None:
        """`n` bytes at `addr` when one CPU-readable buffer holds them all; else None."""
        buf = self.by_va.get(addr)
        if buf is None or buf.cpu is None or addr + n > buf.va + buf.size:
            return None
        return ctypes.string_at(buf.cpu + addr - buf.va, n)

    def _ring_bytes(self, q: TrackedQueue, start: int, end: int) -> bytes:
        view = q.ring_view
        if view is None:
            ring = self.by_va.get(q.ring_va)
            if ring is None or ring.cpu is None or q.ring_va + q.ring_size > ring.va + ring.size:
                return b""
            view = q.ring_view = memory_view(ring.cpu + (q.ring_va - ring.va), q.ring_size)
        return unwrapped(view, start, end - start) if 0 <= end - start <= q.ring_size else b""

    def _submission(self, q: TrackedQueue, value: int) -> None:
        """A doorbell: note which buffers its packets write and what they signal and wait for, record what
        the CPU wrote that they read when raw views exist (or tracking is "scan"), then the ring bytes."""
        end = K.doorbell_end(q.type, value)
        in_order = q.dialect is None or q.dialect.ordered_doorbells
        if not in_order:  # what the processor takes: up to the highest index rung, while packets are assigned
            end = q.announced = max(q.announced, end)
        if not 0 <= end - q.wptr <= q.ring_size:  # what the engine does then is no packet of the program's
            self.rec.record(R.NOTE, text=f"queue {q.queue_id}: the doorbell moves the write pointer from {q.wptr:#x} "
                                         f"to {end:#x}, {_stray(end - q.wptr, q.ring_size)}: a GPU stops the queue")
            self.rec.record(R.DOORBELL, queue=q.queue_id, value=value, ring=b"")
            return
        ring = self._ring_bytes(q, q.wptr, end) if q.dialect else b""
        if not in_order:
            if end > q.wptr and not ring:
                self.rec.record(R.NOTE, text=f"queue {q.queue_id}: its ring cannot be read: the packets its doorbell "
                                             f"lets the processor take are not in the trace")
            ring = ring[:assigned(ring)]
            end = q.wptr + len(ring)
        if q.dialect is not None:
            try:
                plan, inner = self.analyzer.analyse(q.dialect, ring, self._read, q.ib_dialect)
            except (PacketError, ValueError) as exc:  # what the packets do cannot be told: record them anyway
                self.rec.undecodable += 1
                self.rec.record(R.NOTE, text=f"queue {q.queue_id}: undecodable packets: {exc}")
            else:
                self.rec.count_packets(q.dialect, plan)
                # the dispatches' kernel arguments are read now, at the doorbell: their slice of the queue's arena is
                # written over once the engine is past them, perhaps before the submission is looked into
                packets = list(q.dialect.iter_packets(ring)) if plan.completing else None
                dispatched = self.dispatches.pointers(q.queue_id, q.dialect, plan.steps(ring), self._read) \
                    if plan.dispatching else NO_POINTERS
                self._unlearnt.append((q, q.wptr, ring, plan, inner, dispatched, packets))
                if len(self._unlearnt) >= LEARN_BATCH or self.exposed or self.rec.tracking == "scan":
                    self._learn_pending()  # with raw views, what the submission reads is recorded before it
        q.wptr, q.rung = end, value if in_order else K.doorbell_value(q.type, end)
        self.rec.record(R.DOORBELL, queue=q.queue_id, value=value, ring=ring)

    def _learn_pending(self) -> None:
        """Learn what the submissions waiting in the batch do, in order (before anything that reads or changes
        what they tell: a wait, a buffer coming or going, a CPU write that may overwrite an indirect buffer)."""
        if not self._unlearnt:
            return
        batch, self._unlearnt = self._unlearnt, []
        # with one queue and no race, consecutive submissions that signal, wait, dispatch and call nothing tell no
        # more learnt as one than one by one: what they write, positioned from the first's start, its stream going
        # on unbroken from one to the next (which of their reads gave which of their writes is asked only where
        # queues may race: then they are learnt one by one)
        alone = len(self.queues) == 1 and not self.racy and not self.adrift
        lean = alone and not self.exposed and self.rec.tracking != "scan"  # (`_learn` reads no more than writes)
        run: _PlainRun | None = None
        for q, base, ring, plan, inner, dispatched, packets in batch:
            plain = alone and inner is None and not plan.dispatching and not plan.completing
            if plain and plan.quiet and run is not None and run.queue is q and run.end == base:
                if lean:
                    run.add_written(base + len(ring), plan.written(ring, base - run.base))
                else:
                    run.add(base + len(ring), plan.facts(ring, base, base - run.base))
                continue
            facts = plan.facts(ring, base)
            if not plain or facts[0] or facts[1]:
                if run is not None:
                    self._learn_run(run)
                    run = None
                self._learn(q, base, len(ring), facts, plan, inner, dispatched, packets)
            elif run is not None and run.queue is q and run.end == base:  # (waits that tell nothing)
                run.add(base + len(ring), plan.facts(ring, base, base - run.base))
            else:
                if run is not None:
                    self._learn_run(run)
                run = _PlainRun(q, base, base + len(ring), plan, facts)
        if run is not None:
            self._learn_run(run)

    def _learn_run(self, run: _PlainRun) -> None:
        """Learn a run of plain submissions as one (a run of one keeps its plan's caches)."""
        if run.count == 1:
            self._learn(run.queue, run.base, run.end - run.base, run.facts, run.plan, None, NO_POINTERS, None)
        else:
            facts = ([], [], tuple(run.written), tuple(run.referenced), tuple(run.read))
            self._learn(run.queue, run.base, run.end - run.base, facts, None, None, NO_POINTERS, None, run.count)

    def _changed_layout(self) -> None:
        """Buffers come, go or change: resolve the submissions so far against the buffers as they were."""
        self._learn_pending()
        self.layout += 1
        self._words.clear()  # each found again in the buffer that now holds it

    def _accesses(self, accesses: Iterable[tuple[int, int, int]], cuts: tuple[int, ...] = ()) -> list[Accesses]:
        """(position of the first access, of the last, the bytes [lo, hi) of the buffer they cover, buffer) of
        each tracked buffer that `accesses` (position, address, bytes: 0 when unknown, taken as to the buffer's
        end), in stream order, land in: one for each stretch between the submission's GPU waits (`cuts`: the
        positions where they end, in order), which order what comes after them differently."""
        get = self.by_va.get
        if type(accesses) is not tuple and type(accesses) is not list:
            accesses = tuple(accesses)
        if len(accesses) > 1:  # all in one buffer and one stretch, as a submission's copies mostly are: in C
            positions, addrs, sizes = zip(*accesses, strict=True)
            low, high = min(addrs), max(addrs)
            found = get(low)
            if found is not None and high < found.va + found.size and \
                    (not cuts or bisect.bisect_left(cuts, positions[0]) == bisect.bisect_left(cuts, positions[-1])):
                end = max(map(operator.add, addrs, sizes)) - found.va
                if end <= found.size:  # (else one runs on into the next buffer: taken below)
                    if not found.tracked:
                        return []
                    lo = low - found.va
                    # as many bytes as they span: no gap between them, as a submission's copies mostly leave (or
                    # overlaps hide one: taken whole, which may see a race that is none, never miss one); a size of
                    # 0 is not known: to the buffer's end
                    if 0 not in sizes and sum(sizes) >= end - lo:
                        return [(positions[0], positions[-1], lo, end, found)]
                    ranges = [(a - found.va, a - found.va + n if n else found.size)
                              for a, n in zip(addrs, sizes, strict=True)]
                    return [(positions[0], positions[-1], a, b, found) for a, b in _pieces(ranges, found.size)]
        # (buffer, stretch) -> [first, last, lo, hi, bytes accessed, their ranges]
        spans: dict[tuple[TrackedBuffer, int], list] = {}
        buf, start, end, size = None, 0, 0, 0
        span, stretch = None, 0  # the span the access before went to, and its stretch
        over: list[tuple[int, int, int]] = []  # what runs on past the end of a buffer, into the next one (taken
        for pos, addr, n in itertools.chain(accesses, over):  # after the others, as the list grows)
            if not start <= addr < end:  # most accesses of a submission land in the buffer the one before did
                found = get(addr)
                span = None
                if found is None:
                    start = end = 0
                    continue
                start, end, size = found.va, found.va + found.size, found.size
                buf = found if found.tracked else None
            if n and addr < end < addr + n:  # the GPU's page tables translate page by page: it reaches the next
                over.append((pos, end, addr + n - end))  # buffer (or the rest of this one's last page, passed over)
            if buf is None or addr >= end:
                continue
            lo = addr - start
            hi = lo + n if n and lo + n < size else size
            at = bisect.bisect_left(cuts, pos) if cuts else 0
            if span is None or at != stretch:
                span, stretch = spans.get((buf, at)), at
                if span is None:
                    span = spans[(buf, at)] = [pos, pos, lo, hi, hi - lo, [(lo, hi)]]
                    continue
            if pos > span[1]:
                span[1] = pos
            elif pos < span[0]:  # (a part running on from a buffer, taken after the accesses that followed it)
                span[0] = pos
            if lo < span[2]:
                span[2] = lo
            if hi > span[3]:
                span[3] = hi
            span[4] += hi - lo
            span[5].append((lo, hi))
        return [(first, last, a, b, buf) for (buf, _), (first, last, lo, hi, total, ranges) in spans.items()
                for a, b in (((lo, hi),) if total >= hi - lo else _pieces(ranges, buf.size))]

    def _learn(self, q: TrackedQueue, base: int, size: int, facts: tuple, plan: Plan | None, inner: Facts | None,
               dispatched: Pointers | None, packets: list[Packet] | None, count: int = 1) -> None:
        """What one submission does, from its plan's `facts` (its `packets` decoded when its plan dispatches or
        completes AQL signals); or what `count` plain ones do, put together (no plan: nothing to dispatch or
        complete)."""
        progress = q.progress
        signals, waits, written, referenced, read = facts
        # a kernel reads what it can name: through its pointer arguments, and through addresses passed by value or
        # kept in memory; an indirect buffer's dispatches are not followed (their kernels take anything)
        if inner is not None and inner.dispatching:
            dispatched = ANYTHING
        launches = plan is not None and plan.dispatching or dispatched is ANYTHING
        if inner is not None:
            read = (*read, *inner.read)
            signals += [(base + p, a, v) for p, a, v in inner.signals]
            waits += [(base + p, a, v) for p, a, v in inner.waits]
            referenced = (*referenced, *inner.referenced)
        if self.exposed or self.rec.tracking == "scan":  # what the CPU wrote that the submission reads, before it;
            # everything, when it signals a word a GPU wait polls: the queue it releases may read anything
            releases = self._polled and self._releases_a_queue(q, {a for _, a, _ in signals if a in self._polled})
            self._scan_exposed(None if launches or releases else list(referenced))
        decrements, partial = [], set()  # AQL signals the packets decrement; those of packets without a barrier
        if plan is not None and plan.completing:
            for p in packets or ():
                # only a barrier packet's completion says the packets before it completed (HSA: it began after
                # them); the field holds the signal's handle, and a wait reads its value, SIGNAL_VALUE bytes in
                end = base + p.offset + p.size
                if p.defn.completion and (signal := p.fields[p.defn.completion[0]]):
                    decrements.append((end, signal + SIGNAL_VALUE, None))
                    shows = bool(p.fields[p.defn.completion[1]])
                    self.completion.decrements(progress, end, signal + SIGNAL_VALUE, shows)
                    if not shows:
                        partial.add(end)
                if q.dialect is AQL and (settled := AQL.settled(p)):  # a BARRIER_AND passed them at 0
                    waits = [*waits, *((end, h + SIGNAL_VALUE, None) for h in settled)]
                if q.dialect is AQL and (reached := AQL.reached(p)):  # a BARRIER_VALUE passed them at a value
                    waits = [*waits, *((end, h + SIGNAL_VALUE, v) for h, v in reached)]
        cuts = tuple(sorted(pos - base for pos, _, _ in waits))
        if waits:
            self._poll(waits)
        words = self._words
        for _, a, _ in (*signals, *waits):
            if a not in words:
                words[a] = None
                buf = self.by_va.get(a)
                if buf is not None and buf.tracked:
                    buf.words.add(a)
                    if a not in self._data_words:
                        self._first_use(buf, a)
                    self._data_words[a] = None
                    if len(self._data_words) > MAX_DATA_WORDS:
                        del self._data_words[next(iter(self._data_words))]
        if self._data_words:
            self._overwritten(base, written, signals, inner, dispatched)
        if plan is None:
            writes = self._accesses(written, cuts)
        else:
            resolved = plan.resolved  # which of the buffers the writes land in, as they are now
            if resolved is None or resolved[0] != self.layout:
                resolved = plan.resolved = (self.layout, {})
            known = resolved[1]  # by the addresses written: double buffering alternates between a few
            writes = known.get((written, cuts))
            if writes is None:
                if len(known) >= RESOLVED_PER_PLAN:
                    known.clear()
                writes = known[(written, cuts)] = self._accesses(written, cuts)
        if inner is not None:
            writes = writes + self._accesses(inner.written, cuts)
        if dispatched is ANYTHING:  # a kernel, or its arguments, that cannot be read
            writes = writes + [(0, size, 0, b.size, b) for b in self.buffers.values() if b.tracked]
        else:
            if dispatched.writes:  # which bytes of a buffer a kernel writes is not known
                writes = writes + self._accesses(((pos, self._start(a), 0) for pos, a in dispatched.writes), cuts)
            if dispatched.reads or dispatched.values:
                self._take(progress, base, dispatched)
        reads: list[Accesses] = []
        # the reads that gave what the submission wrote: a lone queue races with nothing, but what it computes
        # from a race's bytes is as racy as they are
        if writes and (len(self.queues) > 1 or self.racy or self.adrift):
            if waits:  # what a GPU wait reads of its semaphore (polls, a COND_EXE on its high dword) is no data:
                polled = {w for _, a, _ in waits for w in (a, a + 4)}  # it waits until it sees what it wants
                read = tuple(r for r in read if r[1] not in polled)
            if dispatched is not None and dispatched is not ANYTHING and dispatched.reads:
                read = (*read, *((pos, self._start(a), 0) for pos, a in dispatched.reads))
            reads = self._accesses(sorted(read), cuts)
            if dispatched is ANYTHING:
                reads += [(0, size, 0, b.size, b) for b in self.buffers.values() if b.tracked]
        self.learnt += count
        snapshot: list[dict[QueueProgress, int]] = []

        def known() -> dict[QueueProgress, int]:
            """How far the CPU knows each live queue complete as it submitted this (taken once, when needed)."""
            if not snapshot:
                snapshot.append({t.progress: t.progress.done for t in self.queues.values()})
            return snapshot[0]

        waited = [base + c for c in cuts]
        before = self.waited.get(progress, -1)

        def barrier(pos: int) -> int:
            """Where the queue's last GPU wait before `pos` ends."""
            i = bisect.bisect_left(waited, pos)
            return waited[i - 1] if i else before

        for first, last, lo, hi, buf in sorted(writes, key=lambda w: w[0]):
            buf.wrote(progress, base + last, lo, hi)  # the last one to wait for
            if buf.keys:
                self.memory.forget(buf, lo, hi)
            self._run(buf.runs, progress, base + first, base + last, lo, hi, barrier(base + first), known)
            self.written.add(buf)
        if waited:
            self.waited[progress] = waited[-1]
        outputs = {buf for *_, buf in writes}
        for first, last, lo, hi, buf in reads:  # which reads gave what the submission wrote
            run = self._run(buf.reads, progress, base + first, base + last, lo, hi, barrier(base + first), known)
            run.outputs |= outputs
            if buf.racy is not None:  # what is computed from a race's bytes differs as they do
                for out in outputs:
                    self._mark(out, f"{progress.name} wrote it from {self._label(buf)}")
            for out in outputs:
                if not out.sources or out.sources[-1][1] is not run:
                    out.sources.append((buf, run))
                    del out.sources[:-MAX_RUNS]
        self.completion.submitted(progress, signals, waits, self._mailboxes(base, written, inner))
        self.ordering.submitted(progress, signals + decrements, waits, frozenset(partial))

    def _pointee(self, addr: int) -> TrackedBuffer | None:
        """The buffer a pointer points into: the one holding it, else the one it is just past the end of (C's end
        pointer, which a kernel indexes back from)."""
        hit = self.by_va.pointee(addr)
        return None if hit is None else hit[2]

    def _start(self, addr: int) -> int:
        """Where the buffer `addr` points into starts (`addr` when none does): a kernel given a pointer into a buffer
        may index back from it as well as on (a stencil's halo)."""
        buf = self._pointee(addr)
        return addr if buf is None else buf.va

    def _take(self, queue: QueueProgress, base: int, dispatched: Pointers) -> None:
        """Note the buffers the submission's dispatches take (by a pointer argument, or a by-value word that lands
        in one) till they are known complete."""
        taken = self._taken.setdefault(queue, {})
        for by_value, pointers in ((False, dispatched.reads), (True, dispatched.values)):
            for pos, addr in pointers:
                buf = self._pointee(addr)
                if buf is not None and buf.tracked:
                    taken[buf] = (base + pos, by_value or taken.get(buf, (0, False))[1])

    def _taken_done(self) -> None:
        """Forget what dispatches known complete took, and count as written (to be hashed once nothing may write
        them) the buffers they may have written beyond their pointer arguments: those they took by value, and those
        whose addresses the buffers they took hold (8-byte aligned, as the CPU reads them now; SCAN_BUDGET bytes
        looked at). A destroyed queue's dispatches are forgotten alone: whether they ran is not known."""
        found: list[TrackedBuffer] = []
        scanned: list[TrackedBuffer] = []
        for queue, taken in list(self._taken.items()):
            for buf, (pos, by_value) in list(taken.items()):
                live = self.buffers.get(buf.handle) is buf
                if queue.destroyed or queue.complete(pos) or not live:
                    del taken[buf]
                    if live and not queue.destroyed:
                        scanned.append(buf)
                        if by_value:
                            found.append(buf)
            if not taken:
                del self._taken[queue]
        if scanned:
            span = self._tracked_span()
            budget = SCAN_BUDGET
            for buf in dict.fromkeys(scanned):
                budget -= min(buf.size, POINTER_SCAN)
                if budget < 0:
                    break
                found += self._pointed_at(buf, *span)
        self.written.update(found)

    def _held(self) -> set[TrackedBuffer] | None:
        """The buffers dispatches not known complete may write beyond what their arguments say: what they take
        (through a const pointer too: C may cast it away), and the buffers whose addresses those hold, in turn
        (MAX_HELD of them): a checkpoint leaves them in flight. None (any buffer) when telling would scan more than
        SCAN_BUDGET bytes."""
        todo = [buf for taken in self._taken.values() for buf in taken]  # (_taken_done left those not complete)
        held: set[TrackedBuffer] = set()
        span = self._tracked_span()
        budget = SCAN_BUDGET
        while todo and len(held) < MAX_HELD:
            buf = todo.pop()
            if buf not in held:
                held.add(buf)
                budget -= min(buf.size, POINTER_SCAN)
                if budget < 0:
                    return None
                todo += self._pointed_at(buf, *span)
        return held | set(todo)

    def _tracked_span(self) -> tuple[int, int]:
        """The addresses from the lowest tracked buffer's to the end of the highest."""
        tracked = [(b.va, b.va + b.size) for b in self.buffers.values() if b.tracked]
        return (min(a for a, _ in tracked), max(b for _, b in tracked)) if tracked else (0, 0)

    def _pointed_at(self, buf: TrackedBuffer, lo: int, hi: int) -> list[TrackedBuffer]:
        """The tracked buffers (all within [lo, hi)) whose addresses `buf` holds (8-byte aligned), as the CPU
        reads it now; those of its first POINTER_SCAN bytes."""
        import numpy as np  # loaded already: dispatches ran

        size = min(buf.size, POINTER_SCAN) // 8 * 8
        if buf.cpu is None or not size:
            return []
        words = np.frombuffer((ctypes.c_char * size).from_address(buf.cpu), np.uint64)
        found = np.unique(words[(words >= lo) & (words < hi)])[:MAX_HELD]
        return [b for b in map(self.by_va.get, found.tolist()) if b is not None and b.tracked]

    def _run(self, runs: list[Run], queue: QueueProgress, first: int, last: int, lo: int, hi: int, barrier: int,
             known: Callable[[], dict[QueueProgress, int]]) -> Run:
        """Add accesses of `queue` to a buffer's `runs`: to the last run when it is the same queue's with no GPU
        wait between (`barrier`: where the queue's last wait before them ends)."""
        if runs and runs[-1].queue is queue and barrier < runs[-1].last:
            run = runs[-1]
            run.last = max(run.last, last)
            run.cover(lo, hi)
            return run
        run = Run(queue, first, last, [(lo, hi)], self.learnt, known())
        runs.append(run)
        if len(runs) > MAX_RUNS:
            del runs[0]
        return run

    @staticmethod
    def _label(buf: TrackedBuffer) -> str:
        return buf.name or f"the buffer at {buf.va:#x}"

    def _mark(self, buf: TrackedBuffer, why: str) -> None:
        """What the GPU wrote to `buf` depends on timing, for the reason `why` (the first reason stays)."""
        if buf.racy is None:
            buf.racy = why
            self.racy.add(buf)

    def _ordered(self, x: Run, y: Run) -> bool:
        """Whether the accesses of runs x and y (of two queues) are ordered one way or the other: the later
        submitted after the CPU knew the earlier complete (or its queue destroyed), or the GPU's waits order
        them."""
        a, b = (x, y) if x.seq <= y.seq else (y, x)
        ended = a.queue.ended
        # a queue destroyed before the later were submitted ran no more; but one stopped short of the earlier's
        # accesses, at no wait, ran what timing let it (a replay's runs on): those come in any order (campaign 111)
        if (ended is not None and ended <= b.seq and a.queue.settled(a.last)) or b.known.get(a.queue, -1) >= a.last:
            return True
        # one complete while the other's queue still waits, before it, for a value nobody gave: the other comes
        # after, which stays so once the value is given
        for done, waiting in ((a, b), (b, a)):
            if waiting.after.get(done.queue, -1) >= done.last:
                return True
            if done.queue.complete(done.last) and self.ordering.blocked(waiting.queue, waiting.first):
                waiting.after[done.queue] = done.last
                return True
        # only an order shown is one: a search that cannot tell leaves the bytes to timing as far as it knows
        return self.ordering.before(a.queue, a.last, b.queue, b.first, a.known) is True or \
            self.ordering.before(b.queue, b.last, a.queue, a.first, b.known) is True

    def _releases_a_queue(self, q: TrackedQueue, signalled: set[int]) -> bool:
        """Whether a signal of `signalled` may release another queue's GPU wait not known passed (its latest
        PENDING_WAITS looked at: with more, it may)."""
        if not signalled:
            return False
        for other in self.queues.values():
            waits = other.progress.waits
            if other is q or not waits:
                continue
            if len(waits) > PENDING_WAITS or any(a in signalled for _, a, _ in waits):
                return True
        return False

    def _first_use(self, buf: TrackedBuffer, a: int) -> None:
        """A word of the program's buffer is first used as a semaphore: what it holds may be the CPU's (a write
        before), and a GPU write no signal made may still be on its way (a copy submitted before)."""
        lo = a - buf.va
        if any(b_lo < lo + _word(buf, a) and lo < b_hi for b_lo, b_hi in buf.busy()):
            self.completion.stored(a, ANY_VALUE, False)
            self.ordering.cpu_store(a, ANY_VALUE, False)
        else:
            self._cpu_stored(buf, a)

    def _overwritten(self, base: int, written: tuple, signals: list, inner: Facts | None,
                     dispatched: Pointers | None) -> None:
        """A submission's GPU writes other than its signals (a copy, a fill, a kernel's) that reach a word GPU
        waits poll or signals write: its value is not known from then on, and a wait may see anything there."""
        # a signal's 64-bit value is written by packets (a FENCE pair) into its 8 bytes
        given = {w for _, a, _ in (*signals, *(inner.signals if inner is not None else ())) for w in range(a, a + 8, 4)}
        data = [(a, n) for _, a, n in (*written, *(inner.written if inner is not None else ()))
                if not (a in given and 0 < n <= 8)]
        if dispatched is ANYTHING:
            data += [(b.va, b.size) for b in self.buffers.values() if b.tracked]
        elif dispatched is not None:
            data += [(self._start(a), 0) for _, a in dispatched.writes]  # all of its buffer: it may index back
        for a, n in data:
            if n == 0:
                buf = self.by_va.get(a)
                n = buf.va + buf.size - a if buf is not None else 1
            for w in [w for w in self._data_words if a <= w < a + n]:
                self.completion.stored(w, ANY_VALUE, False)
                self.ordering.cpu_store(w, ANY_VALUE, False)

    def _unseen(self, addr: int) -> bool:
        """Whether the CPU may store at `addr` unseen: through a raw view of a buffer there."""
        buf = self.by_va.get(addr)
        return buf is not None and (buf.exposed or self.rec.tracking == "scan")

    def _unordered(self, run: Run, others: list[Run]) -> Run | None:
        """The first of `others` (runs of one buffer) of another queue, overlapping `run`'s bytes, that nothing
        orders with it."""
        for other in others:
            if other.queue is not run.queue and run.overlaps(other) and not self._ordered(run, other):
                return other
        return None

    def _races(self, buf: TrackedBuffer) -> None:
        """Mark what a race decided among what the GPU wrote to `buf` (complete) since its last checkpoint and
        what the GPU wrote from it: two queues' writes that overlap with nothing ordering them; a read of it and
        another queue's write to the same bytes with nothing ordering them (what the reading submissions wrote
        then depends on which came first)."""
        for i, b in enumerate(buf.runs):
            a = self._unordered(b, buf.runs[:i])
            if a is not None:
                self._mark(buf, f"{a.queue.name} and {b.queue.name} wrote it with nothing ordering their writes")
                break
        for r in buf.reads:
            w = self._unordered(r, buf.runs)
            if w is not None:
                for out in r.outputs:
                    self._mark(out, f"{r.queue.name} wrote it from {self._label(buf)}, which {w.queue.name} wrote "
                                    f"with nothing ordering the two")
        for src, r in buf.sources:
            w = self._unordered(r, src.runs)
            if w is not None:
                self._mark(buf, f"{r.queue.name} wrote it from {self._label(src)}, which {w.queue.name} wrote "
                                f"with nothing ordering the two")

    def _spread(self, bufs: list[TrackedBuffer]) -> None:
        """What the GPU wrote from a buffer a race decided is as racy as it is, in turn: a race found at this
        checkpoint was not known when another queue's copy of that buffer was submitted (campaign 114: that
        copy was hashed, and replays said DIVERGED one time in four)."""
        todo = [buf for buf in bufs if buf.racy is not None]
        seen = set(todo)
        while todo:
            buf = todo.pop()
            for r in buf.reads:
                for out in r.outputs:
                    self._mark(out, f"{r.queue.name} wrote it from {self._label(buf)}, which a race decided")
                    if out not in seen:
                        seen.add(out)
                        todo.append(out)

    # -- checkpoints --------------------------------------------------------------------------------
    def _checkpoint(self, wait: dict) -> None:
        """What the GPU wrote, as the CPU reads it now: every CPU-readable user buffer with GPU writes known
        complete (whether or not they changed its bytes). Buffers with writes still in flight are named and left
        for a later checkpoint. Buffers the GPU only reads are never hashed here."""
        entries, in_flight, racy = [], [], []
        self._learn_pending()
        if self._taken:
            self._taken_done()
        done = []
        complete = {buf for buf in self.written if buf.complete()}
        held = self._held() if self._taken and complete else ()  # (only what could be hashed asks)
        for buf in sorted(self.written, key=lambda b: b.va):
            if buf in complete and held is not None and buf not in held:
                done.append(buf)
            else:
                in_flight.append({"va": buf.va, "name": buf.name})
                self._key_finished(buf)
        self.ordering.budget = SEARCH_BUDGET
        for buf in done:  # every race found before anything is hashed: one may decide another buffer
            self._races(buf)
        self._spread(done)
        for buf in done:
            fresh = self._cpu_changes(buf)
            buf.writes.clear()
            buf.extents.clear()
            buf.keyed.clear()
            buf.runs.clear()
            buf.sources.clear()
            buf.reads[:] = [r for r in buf.reads if r.queue.ended is None and not r.queue.complete(r.last)]
            self.written.discard(buf)
            race = buf.racy
            if race is not None:
                if len(self.rec.races) < MAX_RACES:
                    self.rec.races.setdefault(self._label(buf), race)
                racy.append({"va": buf.va, "name": buf.name, "why": race})
                continue
            entries.append(self.memory.checkpoint_entry(buf, fresh))
        if entries or in_flight or racy:
            self.rec.checkpoints += 1
            self.rec.record(R.CHECKPOINT, wait=wait, buffers=entries, in_flight=in_flight, racy=racy or None)

    def _key_finished(self, buf: TrackedBuffer) -> None:
        """The chunks of a buffer not hashed yet that queues shown complete, or destroyed, wrote (once a
        completion), as they left them, for what was last recorded: a later comparison with raw views then finds
        only what the CPU writes after them (campaigns 67 and 71: their results were recorded as CPU writes,
        which a replay puts back over whatever its GPU wrote). Chunks another queue may still be writing are left;
        what the CPU changed outside every queue's span is recorded first."""
        if not buf.tracked:
            return
        finished = [(q, pos) for q, pos in buf.writes.items() if (q.complete(pos) or q.destroyed)
                    and buf.keyed.get(q) != pos]
        if not finished:
            return
        self._cpu_changes(buf)
        skip = self._chunks_of(buf.busy())
        for q, pos in finished:
            lo, hi = buf.extents[q]
            self.memory.rekey(buf, lo, hi - lo, skip)
            buf.keyed[q] = pos

    def _chunks_of(self, spans: Iterable[tuple[int, int]]) -> set[int]:
        """The indexes of the chunks that byte spans [lo, hi) touch."""
        chunk = self.memory.chunk
        return {i for lo, hi in spans for i in range(lo // chunk, -(-hi // chunk))}

    def _cpu_changes(self, buf: TrackedBuffer) -> set[int] | None:
        """Record what the CPU changed through raw views in the chunks of a buffer that no GPU write spans whose
        chunks are neither hashed nor keyed yet, before those are hashed or keyed (campaign 71: a view write made before
        the wait was hashed with the GPU's results and never recorded, and a replay diverged; campaign 75: so was
        one into a chunk a finished queue's writes had been keyed in). The indexes of the chunks left out (None:
        none compared): the others hold what was just recorded."""
        if buf.tracked and (buf.exposed or self.rec.tracking == "scan"):
            unknown = (buf.extents[q] for q, pos in buf.writes.items() if buf.keyed.get(q) != pos)
            skip = self._chunks_of(unknown)
            self.memory.record(buf, 0, buf.size, skip=skip)
            return skip
        return None

    # -- what the driver tells us (annotations) -----------------------------------------------------
    def _note_buffer(self, va: int, name: str | None, role: str, size: int | None = None) -> None:
        buf = self.by_va.get(va)
        if buf is not None:
            if size is not None and 0 < size <= buf.size:
                buf.size = size
            self._changed_layout()
            buf.name, buf.role = name, role
            self.rec.record(R.BUFFER, handle=buf.handle, va=va, name=name, role=role, size=buf.size)

    def _note_code_object(self, va: int, size: int, data: bytes, target: str, kernels: dict[str, int],
                          entries: dict[str, int], name: str | None = None) -> None:
        self.dispatches.loaded(va, data, target)
        self.loaded.add(va)
        self.rec.record(R.CODE_OBJECT, va=va, size=size, key=self.rec.trace.blob(data, blob_key(data)), target=target,
                        kernels=kernels, entries=entries, name=name)

    def _note_queue(self, queue_id: int, name: str) -> None:
        q = self.queues.get(queue_id)
        if q is not None:
            q.name = q.progress.name = name
            self.rec.record(R.QUEUE_NAME, queue=queue_id, name=name)

    def _note_cpu_writing(self, va: int, size: int, data: object = None, fill: int | None = None) -> None:
        """`Buffer.write` (`data`, bytes-like) or `Buffer.fill` (the byte `fill`) is about to store to
        [va, va+size): recorded now, exactly, so that no wait the store releases in another thread is recorded
        before it (campaign 76), after what raw views changed that it may release or overwrite; its stores to words
        GPU waits poll or GPU signals write are noted too. `_note_cpu_write` follows the store."""
        buf = self.by_va.get(va)
        if buf is None or not (buf.tracked or buf.va in self.loaded):
            return
        given = memoryview(data).cast("B") if data is not None else None
        chunk = bytes([fill or 0]) * min(size, self.memory.chunk) if data is None else b""
        piece = (lambda lo, hi: bytes(given[lo:hi])) if given is not None else (lambda lo, hi: chunk[:hi - lo])
        if buf.role == KERNARGS or not buf.tracked:  # a dispatch's slice of its queue's arena, or a code object's
            # globals (campaign 89: a replay must see them to refuse them): the bytes written, nothing around them
            self.memory.record_given(buf, va - buf.va, size, piece)
            return
        self._learn_pending()  # submitted indirect buffers are read before the CPU writes over them
        viewed = buf.exposed or self.rec.tracking == "scan"
        if viewed:  # what views changed in the chunks it writes in part, copied as recorded: what settles them
            # after it (a view's write there was lost, campaigns 108 and 117)
            busy = self._chunks_of(buf.busy())
            self._edges = self.memory.edges(buf, va - buf.va, size, busy)
        if self._polled and self._releases(va, size):
            self._scan_exposed()  # what the CPU wrote through views before the store that releases a queue
        elif viewed:  # and in the others it touches
            self.memory.record(buf, va - buf.va, size, skip=busy | {i for i, _ in self._edges})
        self.memory.record_given(buf, va - buf.va, size, piece)
        for a in buf.words:
            if va <= a < va + size:
                self._cpu_stored(buf, a, (va, size, piece))

    def _note_cpu_write(self, va: int, size: int) -> None:
        """The store `_note_cpu_writing` recorded is made: in a buffer views may write, the chunks it partly
        wrote that no queue may still be writing hold what was recorded and these bytes (what later comparisons
        start from)."""
        buf = self.by_va.get(va)
        if buf is None or not buf.tracked or buf.role == KERNARGS:
            return
        if buf.exposed or self.rec.tracking == "scan":
            self.memory.settle(buf, va - buf.va, size, self._edges, skip=self._chunks_of(buf.busy()))
            self._edges = []
        if buf.racy is not None and va == buf.va and size >= buf.size and not buf.may_be_written():
            buf.racy = None  # the CPU rewrote all of it: no byte of the race is left
            self.racy.discard(buf)

    def _note_cpu_view(self, va: int) -> None:
        buf = self.by_va.get(va)
        if buf is not None:
            self._learn_pending()  # the submissions before it were made without raw views
            buf.exposed = self.exposed = True

    def _scan_exposed(self, addresses: list[int] | None = None) -> None:
        """Record what the CPU wrote through raw views (into any buffer, with tracking "scan") in the buffers
        holding `addresses` (None: in every buffer, the words GPU waits poll last: a store there may release a
        queue, which must find what the CPU wrote before it in place). Chunks a queue may still be writing are
        left out: what changed there is the GPU's, hashed by the checkpoint of the wait that completes it."""
        scan, chunk = self.rec.tracking == "scan", self.memory.chunk
        bufs = self.buffers.values() if addresses is None else {self.by_va.get(a) for a in addresses} - {None}
        polled: dict[TrackedBuffer, list[int]] = {}
        if addresses is None:
            for a in self._polled:
                buf = self.by_va.get(a)
                if buf is not None:
                    polled.setdefault(buf, []).append(a)
        last = []
        for buf in bufs:
            if not (buf.tracked and (buf.exposed or scan)):
                continue
            busy = {i for lo, hi in buf.busy() for i in range(lo // chunk, -(-hi // chunk))}
            words = polled.get(buf, ())
            self.memory.record(buf, 0, buf.size, skip=busy | {(a - buf.va) // chunk for a in words})
            last += [(buf, a, busy) for a in words]
        recorded: set[tuple[TrackedBuffer, int]] = set()  # the chunks of polled words that changed
        for buf, a, busy in last:
            i = (a - buf.va) // chunk
            if i not in busy:
                if self.memory.record(buf, a - buf.va, 1):
                    recorded.add((buf, i))
                elif (buf, i) not in recorded:
                    continue
            elif self._word_changed(buf, a):  # its chunk is being written elsewhere: the word alone
                self.memory.record_exact(buf, a - buf.va, _word(buf, a))
            else:
                continue
            self._cpu_stored(buf, a)

    def _word_changed(self, buf: TrackedBuffer, a: int) -> bool:
        """Whether the word at `a` that a GPU wait polls, in a chunk a queue may be writing elsewhere, holds
        another value than when last looked at, and no queue may be writing the word itself."""
        n = _word(buf, a)
        lo = a - buf.va
        if any(b_lo < lo + n and lo < b_hi for b_lo, b_hi in buf.busy()):
            return False
        now = ctypes.string_at(buf.cpu + lo, n)
        if self._polled.get(a) == now:
            return False
        self._polled[a] = now
        return True

    def _cpu_stored(self, buf: TrackedBuffer, a: int,
                    given: tuple[int, int, Callable[[int, int], bytes]] | None = None) -> None:
        """The CPU stored to the word at `a` of `buf`, which GPU waits poll or GPU signals write: a value it holds
        may be the CPU's, not a signal's (moving it below what was given there begins a new life). `given`: the
        store is about to be made, of `size` bytes from `start` that piece(lo, hi) gives, over what is there."""
        n = _word(buf, a)
        word = bytearray(ctypes.string_at(buf.cpu + a - buf.va, n))
        if given is not None:
            start, size, piece = given
            lo, hi = max(a, start), min(a + n, start + size)
            word[lo - a:hi - a] = piece(lo - start, hi - start)
        value = int.from_bytes(word, "little")
        backwards = value < self.completion.highest(a)
        self.completion.stored(a, value, backwards)
        self.ordering.cpu_store(a, value, backwards)

    def _releases(self, va: int, size: int) -> bool:
        """Whether a CPU store to [va, va+size) may release a queue (a GPU wait polls a word there) while raw
        views may hold CPU writes not recorded yet."""
        return (self.exposed or self.rec.tracking == "scan") and any(va <= a < va + size for a in self._polled)

    def _poll(self, waits: list[Wait]) -> None:
        """Note the words that GPU waits poll."""
        polled = self._polled
        for _, a, _ in waits:
            if a not in polled:
                polled[a] = None
        while len(polled) > MAX_POLLED:
            del polled[next(iter(polled))]

    def _scan_polled(self) -> None:
        """Before a CPU wait: when the CPU wrote through a raw view to a word a GPU wait polls, that store may be
        what released the queue the CPU waits for; record it, after what the CPU wrote through views before."""
        scan = self.rec.tracking == "scan"
        if not self._polled or not (self.exposed or scan):
            return
        chunk = self.memory.chunk
        for a in self._polled:
            buf = self.by_va.get(a)
            if buf is None or not (buf.tracked and (buf.exposed or scan)):
                continue
            busy = buf.busy()
            free = not any(lo // chunk <= (a - buf.va) // chunk < -(-hi // chunk) for lo, hi in busy)
            if free and self.memory.changed(buf, a - buf.va, 8) or not free and self._word_changed(buf, a):
                self._polled[a] = None  # recorded by the scan
                self._scan_exposed()
                return

    def _note_cpu_signal(self, addr: int, value: int, name: str | None) -> None:
        self._scan_exposed()  # what the CPU wrote before releasing a waiting queue
        old = self._read(addr, 8)
        backwards = old is not None and value < int.from_bytes(old, "little")
        self._learn_pending()  # the signals before belong to the earlier life when it begins a new one
        self.completion.stored(addr, value, backwards)
        self.ordering.cpu_store(addr, value, backwards)
        # the 64-bit word stored: an HSA signal's value is signed (hsa_signal_value_t), the record's field is not
        self.rec.record(R.CPU_SIGNAL, addr=addr, value=value & (1 << 64) - 1, name=name)

    def _note_cpu_wait(self, addr: int, value: int, timeout: float, ok: bool, fault: str | None = None) -> None:
        self._scan_polled()
        wait = {"addr": addr, "value": value, "timeout": timeout, "ok": ok}
        self.rec.record(R.CPU_WAIT, **wait, **_fault(fault))
        if ok:
            self._learn_pending()
            buf = self.by_va.get(addr)
            if buf is not None and buf.tracked and (buf.exposed or self.rec.tracking == "scan"):
                self._cpu_stored(buf, addr)  # what it holds may be a store through a raw view
            self.completion.observed(addr, value)
            self._checkpoint(wait)

    def _note_signal_wait(self, addr: int, value: int, condition: int, seen: int, timeout: float, ok: bool,
                          fault: str | None = None) -> None:
        self._scan_polled()
        wait = {"addr": addr, "value": value, "condition": condition, "seen": seen, "timeout": timeout, "ok": ok}
        self.rec.record(R.SIGNAL_WAIT, **wait, **_fault(fault))
        if ok and seen <= 0:
            self._learn_pending()
            self.completion.reached_zero(addr)
            self._checkpoint(wait)

    def _note_cpu_event_wait(self, event: int, timeout: float, ok: bool, fault: str | None = None) -> None:
        self._scan_polled()
        wait = {"event": event, "timeout": timeout, "ok": ok}
        self.rec.record(R.EVENT_WAIT, **wait, **_fault(fault))
        if ok:
            self._learn_pending()
            self.completion.event_fired(event, [q.progress for q in self.queues.values()])
            self._checkpoint(wait)


def _word(buf: TrackedBuffer, a: int) -> int:
    """How many bytes of the 64-bit word at `a` lie in `buf` (a 32-bit semaphore may end it)."""
    return min(8, buf.va + buf.size - a)


def _fault(fault: str | None) -> dict[str, str]:
    """A wait record's `fault` field: only in the records of waits a GPU fault ended."""
    return {} if fault is None else {"fault": fault}


def _stray(moved: int, ring_size: int) -> str:
    """Why a doorbell moving a queue's write pointer by `moved` bytes submits nothing an engine can run."""
    return "backwards" if moved < 0 else f"more than its {ring_size}-byte ring ahead"
