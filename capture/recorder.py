"""The recorder: a Syscalls wrapper that writes everything crossing the boundary into a trace.

It records each ioctl twice (an "about to" record flushed to disk before the call, its result after), every
mmap/munmap of the device files, every doorbell with the ring bytes written since the previous one, the
CPU's writes to memory the GPU reads (content-addressed chunks), semaphore activity, and at each CPU wait
that returns, a checkpoint: hashes of the buffers the GPU wrote since the last one.

Which CPU writes it sees: writes made through the driver (Buffer.write/fill) are announced and recorded
exactly. A buffer handed out as a raw view (Buffer.numpy) is compared chunk by chunk against what was last
recorded before each submission that references it and before each CPU signal ("auto"); with
tracking="scan" every CPU-visible buffer a submission references is compared, for workloads that write
through raw pointers. See capture/README.md for the measured trade-off.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from kfdtrace.driver import kfd_ioctl as K
from kfdtrace.driver.families import target_by_version
from kfdtrace.driver.memory import DOMAINS
from kfdtrace.driver.packets import Dialect, PacketError
from kfdtrace.driver.ranges import RangeMap
from kfdtrace.driver.sdma import DIALECTS
from kfdtrace.driver.syscalls import KFD_DEVICE, Syscalls
from kfdtrace.driver.topology import Topology
from kfdtrace.traces.format import TraceError, TraceReader, TraceWriter, blob_key

DEFAULT_CHUNK = 16 << 10  # measured: see capture/README.md
TRACKING_MODES = ("auto", "scan")
FLUSH_INTERVAL_S = 0.1  # buffered records reach the disk at least this often (crash safety)
# Ioctls that only wait: their "about to" record is flushed by the flusher thread if the wait lasts, instead of
# costing a write before each call (they are the most frequent ioctl of a synchronising workload). Half a frame
# of buffered blobs is written before them instead: the workload waits anyway, while the CPU writes and
# checkpoints that follow a wait, which would fill the frame, are its critical path (measured: overhead -3%).
WAITING_IOCTLS = frozenset({"WAIT_EVENTS"})
ANALYSIS_CACHE = 1 << 14  # distinct packets whose analysis is kept
MAX_IB_DEPTH = 4  # indirect buffers are followed this deep


@functools.cache
def request_info(request: int) -> tuple[str | None, int, str | None]:
    """The table name of an ioctl request (None when unknown), the size of its argument and the name of the
    RecordingSyscalls method that learns from its result (None when there is none)."""
    try:
        name = K.lookup(request).name
    except KeyError:
        return None, K.ioc_size(request), None
    after = f"_after_{name.lower()}"
    return name, K.ioc_size(request), after if hasattr(RecordingSyscalls, after) else None


@dataclass(eq=False)
class TrackedBuffer:
    handle: int
    gpu_id: int
    va: int
    size: int
    domain: str
    flags: int
    mmap_offset: int
    cpu: int | None = None
    name: str | None = None
    role: str = "user"
    exposed: bool = False  # a raw CPU view exists: writes may bypass the driver
    gpu_written: bool = False  # a submitted packet writes it: checkpoints look at it
    keys: dict[int, bytes] = field(default_factory=dict)  # chunk index -> key of the content last recorded

    @property
    def tracked(self) -> bool:
        return self.role == "user" and self.cpu is not None


@dataclass(eq=False)
class TrackedQueue:
    queue_id: int
    gpu_id: int
    type: int
    ring_va: int
    ring_size: int
    doorbell_offset: int
    dialect: Dialect | None
    name: str | None = None
    wptr: int = 0
    ring_cpu: int | None = None  # CPU address of the ring, once found (forgotten when memory is unmapped)


class Recorder:
    """Records one workload. `wrap(syscalls)` gives the backend the workload should use."""

    def __init__(self, path: str, header: dict, *, chunk_size: int = DEFAULT_CHUNK, tracking: str = "auto"):
        if tracking not in TRACKING_MODES:
            raise ValueError(f"tracking must be one of {', '.join(TRACKING_MODES)}, not {tracking!r}")
        if chunk_size < 4096 or chunk_size & (chunk_size - 1):
            raise ValueError(f"chunk size {chunk_size} must be a power of two of at least 4096")
        self.path, self.chunk, self.tracking = path, chunk_size, tracking
        self.writer = TraceWriter(path, {**header, "chunk_size": chunk_size, "tracking": tracking})
        self.lock = threading.RLock()
        self.t0 = time.monotonic_ns()
        self.ioctls = 0

        self.buffers_seen = 0
        self.checkpoints = 0
        self.payload_bytes = 0
        self._seq = 0
        self._closed = False
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_periodically, name="capture-flush", daemon=True)
        self._flusher.start()

    def _flush_periodically(self) -> None:
        """Nothing stays in memory longer than FLUSH_INTERVAL_S, even while the workload blocks in a wait."""
        while not self._stop.wait(FLUSH_INTERVAL_S):
            with self.lock:
                if not self._closed:
                    self.writer.flush()

    def wrap(self, inner: Syscalls) -> RecordingSyscalls:
        return RecordingSyscalls(self, inner)

    def now(self) -> int:
        return time.monotonic_ns() - self.t0

    def record(self, type_: str, **fields) -> int:
        with self.lock:
            return self.writer.record(type_, t=self.now(), **fields)

    def flush(self) -> None:
        with self.lock:
            self.writer.flush()

    def flush_blobs(self) -> None:
        """Write the buffered blobs if they fill half a frame (before a wait: see WAITING_IOCTLS)."""
        with self.lock:
            self.writer.flush_blobs(at_least=self.writer.frame_bytes // 2)

    def record_ioctl(self, **fields) -> int:
        """An ioctl's "about to" record, numbered: returns its seq."""
        with self.lock:
            self._seq += 1
            self.ioctls += 1
            self.writer.record("ioctl", t=self.now(), seq=self._seq, **fields)
            return self._seq

    def summary(self, status: int | None = None) -> dict:
        s = self.writer.stats
        return {
            "duration_ns": self.now(), "ioctls": self.ioctls, "submissions": s["submissions"],
            "packets": self.packet_counts(), "buffers": self.buffers_seen, "checkpoints": self.checkpoints,
            "payload_bytes": self.payload_bytes, "exit_status": status,
        }

    def packet_counts(self) -> dict[str, int]:
        """'dialect:NAME' -> count of every submitted packet, read back from the frames written so far (kept
        off the submission path, where it would slow the workload down)."""
        self.writer.flush()
        counts: Counter[str] = Counter()
        dialects: dict[int, Dialect | None] = {}
        try:
            with TraceReader(self.path) as trace:
                for r in trace.records({"queue", "doorbell"}):
                    if r.type == "queue":
                        dialects[r.fields["queue"]] = DIALECTS.get(r.fields["dialect"] or "")
                    elif (d := dialects.get(r.fields["queue"])) is not None:
                        counts.update(f"{d.name}:{p.name}" for p in d.iter_packets(r.fields["ring"]))
        except (TraceError, PacketError) as exc:
            counts["undecodable"] = 1
            self.writer.record("note", t=self.now(), text=f"packet statistics incomplete: {exc}")
        return dict(counts)

    def close(self, status: int | None = None) -> dict:
        """Write the index with the summary (the writer's figures included); returns the summary."""
        self._stop.set()
        with self.lock:
            if self._closed:
                return self._final
            summary = self.summary(status)  # flushes: the writer's figures below are final but for the index
            summary.update({f"trace_{k}": v for k, v in self.writer.stats.items()})
            self.writer.close(summary)
            self._closed = True
            self._final = {**summary, "trace_file_bytes": self.writer.stats["file_bytes"]}
            return self._final


class RecordingSyscalls:
    """The Syscalls a recorded workload runs on: the inner backend, with every call written down."""

    def __init__(self, recorder: Recorder, inner: Syscalls):
        self.rec, self.inner = recorder, inner
        self.name = inner.name
        self.files: dict[int, str] = {}  # device fds -> path
        self.buffers: dict[int, TrackedBuffer] = {}  # handle -> buffer
        self.by_va: RangeMap[TrackedBuffer] = RangeMap()
        self.queues: dict[int, TrackedQueue] = {}
        self.doorbells: dict[tuple[int, int], TrackedQueue] = {}  # (gpu_id, offset in the slice) -> queue
        self.doorbell_pages: dict[int, int] = {}  # CPU address of a doorbell slice -> gpu_id
        self.rung: dict[int, TrackedQueue] = {}  # doorbell address -> its queue, as found by _queue_at
        self.mappings: dict[int, tuple[int, int]] = {}  # CPU address -> (fd, length) of device mappings
        self.gpus: dict[int, str] = {}  # gpu_id -> SDMA dialect name
        self.exposed = False  # some buffer has a raw CPU view: submissions must be looked through
        self.analysed: dict[tuple, tuple[tuple[int, ...], tuple[int, ...]]] = {}  # shape -> (addresses, written)
        # Submissions already looked into, for the buffers they write: (layout, its dwords in the ring bytes).
        # A layout unpacks the header and address dwords of a sequence of packets, by (dialect, ring length).
        self.layouts: dict[tuple[Dialect, int], dict[str, struct.Struct]] = {}
        self.submitted: set[tuple[struct.Struct, tuple[int, ...]]] = set()

    # -- the boundary -------------------------------------------------------------------------------
    def open(self, path: str, flags: int = os.O_RDWR | os.O_CLOEXEC) -> int:
        fd = self.inner.open(path, flags)
        self.files[fd] = path
        self.rec.record("open", path=path, flags=flags, fd=fd)
        return fd

    def close(self, fd: int) -> None:
        self.rec.record("close", fd=fd, path=self.files.pop(fd, None))
        self.inner.close(fd)

    def ioctl(self, fd: int, request: int, arg) -> int:
        rec = self.rec
        name, size, after = request_info(request)
        raw_in = b"" if arg is None else ctypes.string_at(ctypes.addressof(arg), min(size, ctypes.sizeof(arg)))
        seq = rec.record_ioctl(fd=fd, request=request, name=name, data=raw_in, tid=threading.get_ident())
        if name not in WAITING_IOCTLS:
            rec.flush()  # the "about to" record reaches the disk before the call: a call that kills us is seen
        else:
            rec.flush_blobs()
        try:
            ret = self.inner.ioctl(fd, request, arg)
        except OSError as exc:
            rec.record("ioctl_end", seq=seq, ret=-1, errno=exc.errno, data=None)
            raise
        raw_out = b"" if arg is None else ctypes.string_at(ctypes.addressof(arg), len(raw_in))
        rec.record("ioctl_end", seq=seq, ret=ret, errno=0, data=raw_out)
        if after is not None and fd in self.files:
            entry = K.BY_NAME[name]
            getattr(self, after)(entry.struct.from_buffer_copy(raw_out.ljust(ctypes.sizeof(entry.struct), b"\0")))
        return ret

    def mmap(self, addr: int, length: int, prot: int, flags: int, fd: int, offset: int) -> int:
        out = self.inner.mmap(addr, length, prot, flags, fd, offset)
        if fd in self.files:
            self.mappings[out] = (fd, length)
            self.rec.record("mmap", path=self.files[fd], fd=fd, offset=offset, addr=out, length=length,
                            prot=prot, flags=flags)
            self._note_mapping(fd, offset, out)
        return out

    def munmap(self, addr: int, length: int) -> None:
        for start, (fd, n) in list(self.mappings.items()):
            if addr <= start < addr + length:
                del self.mappings[start]
                self.doorbell_pages.pop(start, None)
                self.rung.clear()
                self._forget_rings()
                self.rec.record("munmap", path=self.files.get(fd), addr=start, length=n)
        self.inner.munmap(addr, length)

    def doorbell_store(self, addr: int, value: int) -> None:
        q = self._queue_at(addr)
        if q is None:
            self.rec.record("doorbell", queue=None, addr=addr, value=value, ring=b"")
        else:
            self._submission(q, value)
        self.inner.doorbell_store(addr, value)

    def read_sysfs(self, path: str) -> str:
        return self.inner.read_sysfs(path)

    def list_sysfs(self, path: str) -> list[str]:
        return self.inner.list_sysfs(path)

    def annotate(self, kind: str, **fields) -> None:
        handler = getattr(self, f"_note_{kind}", None)
        if handler is not None:
            handler(**fields)
        self.inner.annotate(kind, **fields)

    # -- what ioctls tell us ------------------------------------------------------------------------
    def _after_alloc_memory_of_gpu(self, a) -> None:
        domain = next((d for d, f in DOMAINS.items() if a.flags & f), "unknown")
        buf = TrackedBuffer(a.handle, a.gpu_id, a.va_addr, a.size, domain, a.flags, a.mmap_offset)
        if domain == "userptr":
            buf.cpu = a.mmap_offset  # the user's own pages
        self.buffers[a.handle] = buf
        self.by_va.add(buf.va, buf.size, buf)
        self.submitted.clear()  # their addresses may now be this buffer's
        self.rec.buffers_seen += 1
        self.rec.record("alloc", handle=a.handle, gpu=a.gpu_id, va=a.va_addr, size=a.size, domain=domain,
                        flags=a.flags, cpu=buf.cpu)

    def _after_free_memory_of_gpu(self, a) -> None:
        buf = self.buffers.pop(a.handle, None)
        if buf is not None:
            self.by_va.remove(buf.va)
            self._forget_rings()
            self.rec.record("free", handle=a.handle, va=buf.va)

    def _gpu_list(self, a) -> list[int]:
        return list((ctypes.c_uint32 * a.n_devices).from_address(a.device_ids_array_ptr)) if a.n_devices else []

    def _after_map_memory_to_gpu(self, a) -> None:
        self.rec.record("map", handle=a.handle, gpus=self._gpu_list(a)[: a.n_success])

    def _after_unmap_memory_from_gpu(self, a) -> None:
        self.rec.record("unmap", handle=a.handle, gpus=self._gpu_list(a)[: a.n_success])

    def _after_acquire_vm(self, a) -> None:
        if a.gpu_id not in self.gpus:
            node = next((n for n in self._topology().gpus if n.gpu_id == a.gpu_id), None)
            self.gpus[a.gpu_id] = target_by_version(node.gfx_target_version).family.sdma_dialect if node else ""

    def _after_create_queue(self, a) -> None:
        dialect = DIALECTS.get(self.gpus.get(a.gpu_id, "")) if a.queue_type in K.SDMA_QUEUE_TYPES else None
        ring_size = max(a.ring_size, K.KFD_MIN_QUEUE_RING_SIZE)
        q = TrackedQueue(a.queue_id, a.gpu_id, a.queue_type, a.ring_base_address, ring_size,
                         a.doorbell_offset & (K.KFD_DOORBELL_PROCESS_SLICE - 1), dialect)
        self.queues[a.queue_id] = self.doorbells[(q.gpu_id, q.doorbell_offset)] = q
        self.rec.record("queue", queue=a.queue_id, gpu=a.gpu_id, type=a.queue_type, ring=a.ring_base_address,
                        ring_size=ring_size, rptr=a.read_pointer_address, wptr=a.write_pointer_address,
                        doorbell_offset=a.doorbell_offset, engine=a.sdma_engine_id,
                        dialect=dialect.name if dialect else None)

    def _after_destroy_queue(self, a) -> None:
        q = self.queues.pop(a.queue_id, None)
        if q is not None:
            del self.doorbells[(q.gpu_id, q.doorbell_offset)]
            self.rung.clear()
            self.rec.record("queue_destroy", queue=a.queue_id)

    def _topology(self) -> Topology:
        from kfdtrace.driver.topology import read_topology

        if not hasattr(self, "_topo"):
            self._topo = read_topology(self.inner)
        return self._topo

    def _note_mapping(self, fd: int, offset: int, addr: int) -> None:
        if self.files[fd] == KFD_DEVICE:
            kind, gpu_id, _ = K.mmap_offset_parts(offset)
            if kind == K.MmapType.DOORBELL:
                self.doorbell_pages[addr] = gpu_id
            return
        buf = next((b for b in self.buffers.values() if b.mmap_offset == offset and b.domain != "userptr"), None)
        if buf is not None:
            buf.cpu = addr
            self.rec.record("cpu_map", handle=buf.handle, va=buf.va, addr=addr)

    # -- submissions --------------------------------------------------------------------------------
    def _forget_rings(self) -> None:
        for q in self.queues.values():
            q.ring_cpu = None

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

    def _ring_bytes(self, q: TrackedQueue, start: int, end: int) -> bytes:
        base = q.ring_cpu
        if base is None:
            ring = self.by_va.get(q.ring_va)
            if ring is None or ring.cpu is None:
                return b""
            base = q.ring_cpu = ring.cpu + (q.ring_va - ring.va)
        if not 0 <= end - start <= q.ring_size:
            return b""
        first, n = start % q.ring_size, end - start
        head = min(n, q.ring_size - first)
        data = ctypes.string_at(base + first, head)
        return data + ctypes.string_at(base, n - head) if n > head else data

    def _submission(self, q: TrackedQueue, value: int) -> None:
        """A doorbell: note which buffers its packets write (checkpoints hash only those), record what the CPU
        wrote that they read when raw views exist (or tracking is "scan"), then the ring bytes."""
        ring = self._ring_bytes(q, q.wptr, value) if q.dialect else b""
        if q.dialect is not None:
            scan = self.exposed or self.rec.tracking == "scan"
            if scan or not self._submitted_before(q.dialect, ring):
                for buf in self._look_into(q.dialect, ring, q.queue_id, scan):
                    if buf.tracked and (buf.exposed or self.rec.tracking == "scan"):
                        self._record_memory(buf, 0, buf.size)
        q.wptr = value
        self.rec.record("doorbell", queue=q.queue_id, value=value, ring=ring)

    def _look_into(self, dialect: Dialect, ring: bytes, queue_id: int, scan: bool,
                   depth: int = 0) -> set[TrackedBuffer]:
        """Mark the buffers the packets of `ring` write; with `scan`, return the ones they point into. A
        workload submits the same packets with new values over and over, so what a packet points at is kept
        by its shape (header and address dwords), and a known shape costs one lookup."""
        referenced: set[TrackedBuffer] = set()
        by_va = self.by_va
        words: list[int] | None = [] if depth == 0 else None  # the dwords a layout of these packets unpacks
        try:
            for off, _size, shape in dialect.shapes(ring):
                if words is not None:
                    d = shape[0]
                    if d.tail is not None or d.name == "INDIRECT":  # their size or reach is in their values
                        words = None
                    else:
                        words += (off // 4, *(off // 4 + w for w in d.address_words))
                hit = self.analysed.get(shape)
                if hit is None:
                    if len(self.analysed) >= ANALYSIS_CACHE:
                        self.analysed.clear()
                    p = dialect.decode(ring, off)
                    hit = self.analysed[shape] = (tuple(p.addresses().values()), tuple(p.written_addresses()))
                addresses, written = hit
                for a in written:
                    buf = by_va.get(a)
                    if buf is not None:
                        buf.gpu_written = True
                if scan:
                    referenced.update(filter(None, map(by_va.get, addresses)))
                if shape[0].name == "INDIRECT" and depth < MAX_IB_DEPTH:  # follow it: it holds more packets
                    p = dialect.decode(ring, off)
                    ib = self.by_va.get(p.fields["ib_base"])
                    if ib is not None and ib.cpu is not None:
                        data = ctypes.string_at(ib.cpu + p.fields["ib_base"] - ib.va,
                                                min(p.fields["ib_size"] * 4, ib.va + ib.size - p.fields["ib_base"]))
                        referenced |= self._look_into(dialect, data, queue_id, scan, depth + 1)
            if words is not None:
                self._remember(dialect, ring, words)
        except PacketError as exc:
            self.rec.record("note", text=f"queue {queue_id}: undecodable ring bytes: {exc}")
        return referenced

    def _remember(self, dialect: Dialect, ring: bytes, words: list[int]) -> None:
        """Remember a submission looked into by the dwords that make its packets and their addresses: one
        with the same dwords at the same places holds the same packets, pointing at the same buffers."""
        if len(self.submitted) >= ANALYSIS_CACHE:
            self.submitted.clear()
            self.layouts.clear()
        words = sorted(set(words))
        fmt = "<" + "".join(f"{4 * (w - prev - 1)}xI" for prev, w in zip([-1, *words[:-1]], words, strict=True))
        layouts = self.layouts.setdefault((dialect, len(ring)), {})
        layout = layouts.get(fmt) or layouts.setdefault(fmt, struct.Struct(fmt))
        self.submitted.add((layout, layout.unpack_from(ring)))

    def _submitted_before(self, dialect: Dialect, ring: bytes) -> bool:
        """Whether the same packets pointing at the same addresses were looked into (since the last alloc):
        the buffers they write are marked already. Most submissions repeat earlier ones with new values."""
        for layout in self.layouts.get((dialect, len(ring)), {}).values():
            if (layout, layout.unpack_from(ring)) in self.submitted:
                return True
        return False

    # -- memory -------------------------------------------------------------------------------------
    def _record_memory(self, buf: TrackedBuffer, offset: int, size: int, force: bool = False) -> None:
        """Record the chunks of [offset, offset+size) whose content differs from what was last recorded."""
        rec, c = self.rec, self.rec.chunk
        for i in range(offset // c, (offset + size + c - 1) // c):
            lo = i * c
            data = ctypes.string_at(buf.cpu + lo, min(c, buf.size - lo))
            key = blob_key(data)
            if not force and buf.keys.get(i) == key:
                continue
            buf.keys[i] = rec.writer.blob(data, key)
            rec.payload_bytes += len(data)
            rec.record("mem", va=buf.va + lo, size=len(data), key=key)

    def _scan_exposed(self) -> None:
        for buf in self.buffers.values():
            if buf.tracked and (buf.exposed or self.rec.tracking == "scan"):
                self._record_memory(buf, 0, buf.size)

    def _checkpoint(self, wait: dict) -> None:
        """What the GPU wrote, as the CPU reads it now: every CPU-readable user buffer a submitted packet
        writes whose content is not what was last recorded for it, with the keys of its chunks (new content
        is stored as blobs, so a replay can show what it expected) and one hash of them. Buffers the GPU only
        reads (inputs, however large) are never hashed here."""
        entries = []
        chunk = self.rec.chunk
        for buf in self.buffers.values():
            if not (buf.tracked and buf.gpu_written):
                continue
            keys, changed = [], False
            for i, lo in enumerate(range(0, buf.size, chunk)):
                data = ctypes.string_at(buf.cpu + lo, min(chunk, buf.size - lo))
                key = blob_key(data)
                if buf.keys.get(i) != key:
                    self.rec.writer.blob(data, key)
                    buf.keys[i], changed = key, True
                keys.append(key)
            if changed:
                entries.append({"va": buf.va, "size": buf.size, "name": buf.name, "keys": keys,
                                "hash": hashlib.sha256(b"".join(keys)).digest()[:16]})
        if entries:
            self.rec.checkpoints += 1
            self.rec.record("checkpoint", wait=wait, buffers=entries)

    # -- what the driver tells us (annotations) -----------------------------------------------------
    def _note_buffer(self, va: int, name: str | None, role: str) -> None:
        buf = self.by_va.get(va)
        if buf is not None:
            buf.name, buf.role = name, role
            self.rec.record("buffer", handle=buf.handle, va=va, name=name, role=role)

    def _note_queue(self, queue_id: int, name: str) -> None:
        q = self.queues.get(queue_id)
        if q is not None:
            q.name = name
            self.rec.record("queue_name", queue=queue_id, name=name)

    def _note_cpu_write(self, va: int, size: int) -> None:
        buf = self.by_va.get(va)
        if buf is not None and buf.tracked:
            self._record_memory(buf, va - buf.va, size, force=buf.gpu_written)

    def _note_cpu_view(self, va: int) -> None:
        buf = self.by_va.get(va)
        if buf is not None:
            buf.exposed = self.exposed = True

    def _note_cpu_signal(self, addr: int, value: int, name: str | None) -> None:
        self._scan_exposed()  # what the CPU wrote before releasing a waiting queue
        self.rec.record("cpu_signal", addr=addr, value=value, name=name)

    def _note_cpu_wait(self, addr: int, value: int, timeout: float, ok: bool) -> None:
        wait = {"addr": addr, "value": value, "timeout": timeout, "ok": ok}
        self.rec.record("cpu_wait", **wait)
        if ok:
            self._checkpoint(wait)
