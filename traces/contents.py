"""What a trace tells of each live buffer's bytes at the record reached: the chunks its CPU writes and
checkpoints recorded (as blob keys; a write into a kernel-argument buffer is recorded as the bytes written, which
may overlap an earlier one, so they are kept in the order they were recorded), or why they are unknown — the GPU
wrote the buffer since, and no checkpoint of it followed. The driver's semaphore buffers are the exception: their
words are what packets and the CPU signal, followed by whoever needs them, never "unknown".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kfdtrace.driver.packets import MAX_IB_DEPTH, Packet, PacketError
from kfdtrace.replay.compute import Access, DispatchAccess
from kfdtrace.replay.translate import ReplayError
from kfdtrace.traces import records as R
from kfdtrace.traces.format import Record, TraceError, TraceReader
from kfdtrace.traces.walk import BufferInfo, Submission, TraceState, indirect_dialect

POINTER_SCAN = 1 << 20  # bytes of a buffer a dispatch takes looked at for addresses (capture's POINTER_SCAN)
SEMAPHORES = "semaphores"  # the role of the driver's semaphore buffers (driver/system.py)
SIGNAL = "signal"  # the role of an AQL signal's buffer, an amd_signal_t (driver/aql_queue.py HsaSignal)
# the role of the KFD event page (driver/system.py): its slots are events' mailboxes, which GPUs write before an
# interrupt and the kernel writes back (kfd_events.c), never the program's data
EVENT_PAGE = "event page"


def is_semaphores(buf: BufferInfo | None) -> bool:
    return buf is not None and buf.role == SEMAPHORES


def is_data(buf: BufferInfo | None) -> bool:
    """Whether a GPU write leaves the contents of `buf` unknown: not for semaphores (their values are the
    signals') nor for the event page."""
    return buf is None or buf.role not in (SEMAPHORES, EVENT_PAGE)


@dataclass
class Contents:
    chunks: dict[int, tuple[int, bytes]] = field(default_factory=dict)  # va -> (size, blob key), in recorded order
    unknown: str | None = None  # "submission 12 on queue 1 (consumer) wrote it"
    held: Any = None  # (span, the words its chunks hold within it) once a dispatch took it (KnownMemory._reached)

    def whole(self, buf: BufferInfo) -> list[bytes] | None:
        """The blob keys that make the whole buffer, in order, when its contents are known end to end."""
        if self.unknown:
            return None
        keys, at = [], buf.va
        for va, (size, key) in sorted(self.chunks.items()):
            if va != at:
                return None
            keys.append(key)
            at += size
        return keys if at >= buf.va + buf.size else None

    def read(self, va: int, size: int, blob: Callable[[bytes], bytes]) -> bytes | None:
        """The `size` bytes at `va` when the writes recorded cover them all (the later write where two overlap);
        `blob` gives a key's bytes. The writes are looked at latest first, till they cover the bytes (a queue's
        kernel-argument arena takes thousands)."""
        if self.unknown:
            return None
        end, used, covered = va + size, [], []  # the writes that show, latest first; the ranges they cover
        for at, (n, key) in reversed(self.chunks.items()):
            lo, hi = max(at, va), min(at + n, end)
            if lo < hi:
                used.append((at, key, lo, hi))
                covered = _merged([*covered, (lo, hi)])
                if covered == [(va, end)]:
                    break
        if covered != [(va, end)]:
            return None
        out = bytearray(size)
        for at, key, lo, hi in reversed(used):  # the latest written last
            data = blob(key)
            if len(data) < hi - at:
                return None
            out[lo - va:hi - va] = data[lo - at:hi - at]
        return bytes(out)


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """[lo, hi) ranges as the fewest that cover the same bytes, in order."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


class KnownMemory:
    """Follows `state` (call `apply` after `state.apply` of each record) to know each live buffer's contents."""

    def __init__(self, state: TraceState, chunk: int | None, blob: Callable[[bytes], bytes] | None = None,
                 trace: TraceReader | None = None):
        """`blob` (a trace's blob lookup), when given, lets it follow dispatches too: what each kernel may write,
        from its code object and its recorded kernel arguments; `trace`, the trace, whose later checkpoints tell
        which buffers a kernel may have written through addresses the GPU wrote."""
        self.state, self.chunk, self.blob, self.trace = state, chunk, blob, trace
        self.contents: dict[int, Contents] = {}  # buffer va -> what it holds
        self.dispatches = DispatchAccess(self.read) if blob is not None else None
        self.n = 0  # the record reached
        self._last_hashed: dict[int, int] | None = None  # buffer va -> the last checkpoint record hashing it

    def at(self, addr: int) -> tuple[BufferInfo, Contents] | None:
        """The live buffer holding `addr` and what is known of it."""
        buf = self.state.buffer_at(addr)
        return None if buf is None or buf.va not in self.contents else (buf, self.contents[buf.va])

    def apply(self, r: Record, sub: Submission | None) -> None:
        f = r.fields
        self.n = r.n
        if r.type == R.ALLOC:
            self.contents[f["va"]] = Contents()
        elif r.type == R.FREE:
            self.contents.pop(f["va"], None)
        elif r.type == R.MEM:
            hit = self.at(f["va"])
            if hit is not None:
                hit[1].chunks.pop(f["va"], None)  # the latest write last
                hit[1].chunks[f["va"]] = (f["size"], f["key"])
                hit[1].held = None
        elif r.type == R.CHECKPOINT and self.chunk:
            self._checkpoint(f, self.chunk)
        elif r.type == R.CODE_OBJECT and self.dispatches is not None:
            try:
                self.dispatches.loaded(f, self.blob(f["key"]), f"record {r.n}")
            except TraceError:
                pass  # its kernels stay unknown: their dispatches may write anything
        elif sub is not None:
            self._submitted(sub)

    def read(self, va: int, size: int) -> bytes | None:
        """The `size` bytes at `va` as the trace knows them (None: unknown, or not in one live buffer)."""
        hit = self.at(va)
        if hit is None or va + size > hit[0].va + hit[0].size:
            return None
        try:
            return hit[1].read(va, size, self.blob)
        except TraceError:
            return None

    def access(self, sub: Submission, p: Packet) -> Access | str | None:
        """What the dispatch packet `p` of `sub` launches reads and may write (None: it launches none, or
        dispatches are not followed); a string saying why when that is not known (it may write anything)."""
        if self.dispatches is None or sub.queue is None or sub.queue.dialect is None:
            return None
        where = f"submission {sub.number}"
        try:
            return self.dispatches.of(sub.queue, p, where)
        except (ReplayError, PacketError, ValueError) as exc:  # KernargError is a ValueError
            return f"{where} ran a dispatch whose writes are unknown ({exc})"

    def _checkpoint(self, f: dict, chunk: int) -> None:
        in_flight = {b["va"] for b in f["in_flight"] or ()}
        for entry in f["buffers"]:
            hit = self.at(entry["va"])
            if hit is None or entry["va"] in in_flight or hit[0].va != entry["va"]:
                continue
            hit[1].chunks = {entry["va"] + i * chunk: (min(chunk, entry["size"] - i * chunk), key)
                             for i, key in enumerate(entry["keys"])}
            hit[1].unknown, hit[1].held = None, None

    def _submitted(self, sub: Submission) -> None:
        if not self.understood(sub):  # packets not read may write anything
            why = f"submission {sub.number} on {sub.queue.label if sub.queue else 'an unknown queue'} may have " \
                  "written it"
            for va, contents in self.contents.items():
                if is_data(self.state.buffer_at(va)):
                    contents.unknown = why
            return
        for p in sub.packets:
            self.wrote(sub, p, self.access(sub, p))

    def understood(self, sub: Submission) -> bool:
        """Whether every packet of `sub` was read (none undecodable, unrecorded or calling an indirect buffer),
        so that `wrote` can be told packet by packet."""
        return not sub.error and all(p.defn.indirect is None for p in sub.packets)

    def wrote(self, sub: Submission, p: Packet, access: Access | str | None = None) -> None:
        """Packet `p` of `sub` ran: what it writes is no longer known (with `access`, what `access` says the
        dispatch it launches may write: everything, when it is a string saying why)."""
        if isinstance(access, str):
            for va, contents in self.contents.items():
                if is_data(self.state.buffer_at(va)):
                    contents.unknown = access
            return
        on = f"submission {sub.number} on {sub.queue.label if sub.queue else 'an unknown queue'}"
        why = f"{on} wrote it"
        beyond = self._reached(access) if access else []
        if isinstance(beyond, str):  # (a later checkpoint hashing a buffer is the recording's word the GPU wrote it)
            later = self._hashed_later()
            why_later = (f"{on} ran a dispatch that takes {beyond}, whose contents the trace does not hold: it may "
                         f"have written this buffer through an address held there (a later checkpoint says the GPU "
                         f"wrote it)")
            for va, contents in self.contents.items():
                if (later is None or va in later) and is_data(self.state.buffer_at(va)):
                    contents.unknown = why_later
            beyond = []
        for addr, size in p.written_ranges() + [(a, None) for a in (access.writes if access else [])] + beyond:
            for buf in self.state.buffers_over(addr, size):  # (a copy may run on into the next buffer)
                if buf.va in self.contents and is_data(buf):
                    self.contents[buf.va].unknown = why

    def _reached(self, access: Access) -> list[tuple[int, None]] | str:
        """Where a dispatch may write beyond its pointer arguments, as capture counts it (capture/recorder.py
        _taken_done; campaign 122: a trim restored what a kernel had written through an address it read from
        memory): the buffers its by-value words point into, and those whose addresses the buffers it takes hold
        (8-byte aligned, in their first POINTER_SCAN bytes; bytes never written hold none the program put there).
        The name of a buffer it takes that the GPU wrote since its contents were last known, when there is one."""
        import numpy as np  # (dispatches ran: a trace of kernels)

        by_va = self.state.by_va
        landed = [hit[0] for v in access.values if (hit := by_va.pointee(v)) is not None]
        out: list[tuple[int, None]] = [(va, None) for va in landed]
        spans = [(start, start + size) for start, size, _ in by_va]
        lo, hi = (spans[0][0], spans[-1][1]) if spans else (0, 0)
        for addr in dict.fromkeys([*access.reads[1 if access.kernargs else 0:], *landed]):
            hit = by_va.pointee(addr)
            contents = self.contents.get(hit[0]) if hit is not None else None
            if contents is None:
                continue
            name = hit[2].name or f"the buffer at {hit[0]:#x}"
            if contents.unknown:
                return name
            if contents.held is None or contents.held[:2] != (lo, hi):  # (what the live buffers span may change)
                words = self._held(hit[0], contents)
                if words is None:
                    return name
                contents.held = (lo, hi, words[(words >= np.uint64(lo)) & (words < np.uint64(hi))].tolist())
            out += [(pointee[0], None) for w in contents.held[2] if (pointee := by_va.pointee(w)) is not None]
        return out

    def _held(self, va: int, contents: Contents):
        """The distinct 8-byte aligned words of the first POINTER_SCAN bytes of the buffer at `va` the trace knows
        (None: a blob it does not hold)."""
        import numpy as np

        parts = []
        for at, (size, key) in contents.chunks.items():
            n = min(size, va + POINTER_SCAN - at)
            if n >= 8:
                try:
                    data = self.blob(key)[-at % 8:max(-at % 8, n)]
                except TraceError:
                    return None
                parts.append(np.frombuffer(data[:len(data) // 8 * 8], np.uint64))
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.uint64)

    def _hashed_later(self) -> set[int] | None:
        """The buffer addresses a checkpoint after the record reached hashes, or leaves out as in flight or racy
        (None: every one, the trace unknown)."""
        if self.trace is None:
            return None
        if self._last_hashed is None:
            self._last_hashed = {}
            for r in R.checked(self.trace.records({R.CHECKPOINT})):  # (left out in flight or racy: the same)
                f = r.fields
                for entry in (*f["buffers"], *(f.get("in_flight") or ()), *(f.get("racy") or ())):
                    self._last_hashed[entry["va"]] = r.n
        return {va for va, n in self._last_hashed.items() if n > self.n}


def chunk_size(trace: TraceReader) -> int | None:
    """The trace's chunk size (its header's), None when it has none that makes sense."""
    chunk = trace.header.get("chunk_size")
    return chunk if type(chunk) is int and chunk > 0 else None


def called(memory: KnownMemory, state: TraceState, sub: Submission, p: Packet, depth: int = 1) -> list[Packet]:
    """The packets of the indirect buffer packet `p` of `sub` calls, and of those they call in turn, as `memory`
    knows them (the CPU wrote them), in the dialect the queue's indirect buffers hold; ValueError when it does
    not know them or they are no packets."""
    addr_field, size_field = p.defn.indirect
    base = p.addresses().get(addr_field)
    data = memory.read(base, p.fields[size_field] * 4) if base else None
    q = sub.queue
    dialect = indirect_dialect(q.dialect, state.gpus.get(q.gpu, {})) if q is not None and q.dialect else None
    if data is None or dialect is None or depth > MAX_IB_DEPTH:
        raise ValueError(f"it calls an indirect buffer at {base or 0:#x} whose packets the trace does not hold")
    try:
        packets = list(dialect.iter_packets(data))
    except PacketError as exc:
        raise ValueError(f"it calls an indirect buffer at {base:#x} that holds no packets ({exc})") from None
    return [*packets, *(x for c in packets if c.defn.indirect is not None
                        for x in called(memory, state, sub, c, depth + 1))]
