"""What every user-mode ring queue shares: a ring in GTT, read/write pointers, a doorbell, per-thread packets.

A queue kind (SDMA, PM4 compute) is a subclass that names its packet dialect, its CREATE_QUEUE arguments, the
unit its pointers count in, and how it signals a semaphore; the ring itself is handled here, once.

Each thread builds its own packets (a thread-local list); submit() puts the calling thread's packets on the
ring under the queue's lock, so submissions from several threads never interleave.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Self

from kfdtrace.driver.errors import DeviceError, WaitTimeout
from kfdtrace.driver.memory import PAGE, Buffer
from kfdtrace.driver.packets import Dialect, Packet, PacketDef
from kfdtrace.driver.sdma import poll_passes
from kfdtrace.driver.signals import Semaphore
from kfdtrace.driver.syscalls import memory_view

if TYPE_CHECKING:
    from kfdtrace.driver.system import Device

Destination = Buffer | int  # a buffer, or a raw GPU VA (unchecked: the GPU faults if nothing is mapped there)
DEFAULT_RING = 64 << 10
WRITE_CHUNK = 4096  # data bytes per packet of inline data
MAX_IB_LOOK = 1 << 14  # dwords of an indirect buffer `blocked` reads to find its waits


class _Pending(threading.local):
    """The packets one thread has built for a queue and not yet submitted, and the buffers they use."""

    def __init__(self) -> None:
        self.packets: list[bytes] = []
        self.held: list[Buffer] = []


def unwrapped(ring: memoryview, start: int, n: int) -> bytes:
    """`n` bytes (at most the ring's size) of a ring from byte pointer `start` on, continuing at its start past
    its end."""
    size = len(ring)
    first = start % size
    if first + n <= size:
        return ring[first:first + n].tobytes()
    return ring[first:].tobytes() + ring[:first + n - size].tobytes()


def valid_ring_size(size: int) -> bool:
    """Whether a ring of `size` bytes is one a queue takes: a power of two of at least 1024 bytes."""
    return size >= 1024 and not size & (size - 1)


def ring_units(dialect: Dialect, data: bytes, ring_size: int) -> list[bytes]:
    """`data` (whole packets) as the units `RingQueue.emit` puts on a ring of `ring_size` bytes, each contiguous on
    the ring: all of it when it takes at most half the ring, else pieces cut between packets, but never between a
    conditional packet and the dwords it may skip (the NOPs padding a unit to the ring's end would be skipped in
    their place). ValueError when a unit cannot fit the ring."""
    if not data or len(data) % 4:
        raise ValueError(f"packets are whole dwords: {len(data)} bytes is not a positive multiple of 4")
    limit, units, start, governed = ring_size // 2, [], 0, 0  # governed: where the dwords skipped so far end
    if len(data) > limit:
        for pos, size, d in dialect.spans(data):
            if start < pos and governed <= pos and pos + size - start > limit:
                units.append(bytes(data[start:pos]))
                start = pos
            if d.skip_field is not None:
                governed = max(governed, pos + size + 4 * dialect.decode(data, pos).fields[d.skip_field])
    units.append(bytes(data[start:]))
    for unit in units:
        if len(unit) >= ring_size:  # a dword of the ring stays free (_reserve)
            raise ValueError(f"{len(unit)} bytes of packets that must lie on the ring in one piece (a packet, or a "
                             f"conditional with the packets it may skip) do not fit a {ring_size}-byte ring")
    return units


class RingQueue:
    """One ring of packets in `dialect`. Subclasses set `kind` (labels), `pointer_unit` (bytes per unit of the
    read/write pointers and the doorbell value), `defaults` (field values every packet of a name starts from,
    where the dialect has the field) and implement `signal`; they call `_create` once their own buffers exist."""

    kind = "ring"
    pointer_unit = 1
    defaults: Mapping[str, Mapping[str, int]] = {}

    def __init__(self, device: Device, dialect: Dialect, ring_size: int, name: str | None):
        if not valid_ring_size(ring_size):
            raise ValueError(f"ring size {ring_size} must be a power of two of at least 1024 bytes")
        self.device, self.dialect, self.name, self.ring_size = device, dialect, name, ring_size
        self.queue_id: int | None = None
        self._defaults = {d.name: {k: v for k, v in self.defaults.get(d.name, {}).items() if k in d.field_names}
                          for d in dialect}
        nop = dialect["NOP"]
        self._nop_bias, self._nop_mask = nop.tail.bias, nop["count"].mask
        self.nop_max_dw = self._nop_mask + 1  # the longest NOP, in dwords
        self.ring = device.alloc(ring_size, "gtt", uncached=True, name=f"{self.label}.ring", role="ring")
        # ring writes copy through a memoryview, holding the GIL: a ctypes.memmove would hand the GIL to the
        # emulator's engine threads on every packet
        self._ring_bytes = memory_view(self.ring.cpu, ring_size, writable=True)
        self.ptrs = device.alloc(PAGE, "gtt", uncached=True, name=f"{self.label}.ptrs", role="queue pointers")
        self._buffers: list[Buffer] = [self.ring, self.ptrs]  # freed with the queue
        self._rptr = ctypes.c_uint64.from_address(self.ptrs.cpu)
        self._wptr_mem = ctypes.c_uint64.from_address(self.ptrs.cpu + 8)
        self.wptr = 0  # bytes written, monotonic
        self._seen = 0  # the read pointer as last read (it only grows): room is counted from it first
        self._rung = 0
        self._pending = _Pending()
        self._lock = threading.RLock()  # held while writing the ring and ringing the doorbell
        self._done: Semaphore | None = None  # what sync() waits on
        self._serial = 0
        # buffers submitted packets use (kernargs, ...): (write pointer after their submission, buffer), freed
        # once the engine has read past it
        self._held: deque[tuple[int, Buffer]] = deque()

    def _create(self, **queue_args: int) -> None:
        """CREATE_QUEUE on this ring with the kind's own arguments; on failure the buffers are freed."""
        dev = self.device
        try:
            out = dev.kfd.ioctl("CREATE_QUEUE", ring_base_address=self.ring.va, ring_size=self.ring_size,
                                read_pointer_address=self.ptrs.va, write_pointer_address=self.ptrs.va + 8,
                                gpu_id=dev.gpu_id, queue_percentage=100, queue_priority=7, **queue_args)
        except BaseException:
            self._free_buffers()
            raise
        self.queue_id = out.queue_id
        dev.sys.annotate("queue", queue_id=self.queue_id, name=self.label)
        self.doorbell = dev.doorbell_page() + (out.doorbell_offset & 0x1FFF)
        # its KFD event comes with the first sync(): a queue nobody syncs (a replay's) takes none of the process's
        # 4095, whose ids a replay gives out as the recording did
        self._done = dev.system.semaphore(name=f"{self.label}.done", event=False)
        dev.track(self)

    @property
    def label(self) -> str:
        return self.name or f"{self.kind}@{self.device.gpu_id:#x}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label} id={self.queue_id} rptr={self.rptr:#x} wptr={self.wptr:#x}>"

    # -- packets ------------------------------------------------------------------------------------
    def packet(self, name: str, payload: bytes = b"", **fields: int) -> Self:
        """Append any packet of the dialect by name (the kind's defaults first)."""
        self._pending.packets.append(self._build(name, payload, **fields))
        return self

    def _build(self, name: str, payload: bytes = b"", **fields: int) -> bytes:
        """One packet's bytes, the kind's defaults first."""
        defaults = self._defaults.get(name)  # an unknown name: the dialect says so
        return self.dialect.build(name, payload, **({**defaults, **fields} if defaults else fields))

    def emit(self, data: bytes) -> Self:
        """Append packets already encoded in this queue's dialect; they go on the ring as one unit, or, when they
        would take more than half the ring, as units cut between packets (the engine runs the first ones while
        the rest wait for room): a replay's translation may be longer than the recorded ring held at once."""
        if len(data) <= self.ring_size // 2 and data and not len(data) % 4:
            self._pending.packets.append(bytes(data))
        else:
            self._pending.packets += ring_units(self.dialect, data, self.ring_size)
        return self

    def discard(self) -> list[bytes]:
        """Take back the packets this thread built and has not submitted; they never reach the GPU."""
        packets, self._pending.packets = self._pending.packets, []
        held, self._pending.held = self._pending.held, []
        for b in held:
            b.free()
        return packets

    def hold(self, buffer: Buffer) -> None:
        """Free `buffer` once the engine is past the packets this thread builds now (it is theirs alone)."""
        self._pending.held.append(buffer)

    def _release_held(self) -> None:
        """Free the held buffers of submissions the engine has read past (call under the queue's lock)."""
        if self._held:
            done = self.rptr
            while self._held and self._held[0][0] <= done:
                self._held.popleft()[1].free()

    def _va(self, target: Destination, offset: int, size: int) -> int:
        if isinstance(target, int):
            return target + offset
        if self.device not in target.mapped_on:
            raise DeviceError(f"{target.label} is not mapped on GPU {self.device.gpu_id:#x}; "
                              f"call buffer.map_to(device) first")
        if 0 <= offset and 0 <= size and offset + size <= target.size:  # every packet asks: the check inline
            return target.va + offset
        return target.addr(offset, size)  # which says why not

    def signal(self, sem: Semaphore, value: int) -> Self:
        """GPU signal of a timeline semaphore, then wake CPU waiters (the kind's packets)."""
        raise NotImplementedError

    # -- ring ---------------------------------------------------------------------------------------
    @property
    def rptr(self) -> int:
        """Bytes the engine has consumed, monotonic. Engines report their read pointer in `pointer_unit`s,
        monotonic (SDMA) or within the ring (a CP's ring-relative read pointer): either is read as a distance
        back from the last write pointer rung, which is less than a ring (`_reserve` never fills the ring)."""
        unit, units = self.pointer_unit, self.ring_size // self.pointer_unit
        while True:  # the write pointer rung when the report was read (the doorbell is never ahead of _rung)
            rung = self._rung
            behind = (rung // unit - self._rptr.value) % units
            if rung == self._rung:
                return rung - behind * unit

    def submit(self) -> int:
        """Write this thread's packets to the ring and ring the doorbell; returns the new write pointer."""
        packets = self._pending.packets  # this thread's own list: reused, not replaced
        self._lock.acquire()  # not `with`: it costs twice as much, on the path every submission takes
        try:
            if self.queue_id is None:
                raise DeviceError(f"queue {self.label} was destroyed; make a new one with "
                                  f"device.{self.kind}_queue()")
            self._release_held()
            data = b"".join(packets)
            if self.wptr % self.ring_size + len(data) <= self.ring_size and self._fits(len(data)):
                self._write(data)  # the common case: no wrap, room for all (as _put would find for each)
            else:
                for packet in packets:
                    self._put(packet)
            self._kick()
            return self.wptr
        finally:  # after a failure part of them may be on the ring: none is submitted twice
            packets.clear()
            held = self._pending.held
            if held:  # kept until the engine is past everything written (never, if it was not rung)
                self._held.extend((self.wptr, b) for b in held)
                held.clear()
            self._lock.release()

    def _put(self, packet: bytes) -> None:
        size = self.ring_size
        if len(packet) >= size:  # a dword stays free (_reserve)
            raise ValueError(f"a {len(packet)}-byte packet does not fit a {size}-byte ring")
        pos = self.wptr % size
        if pos + len(packet) > size:  # never split a packet over the wrap: pad to the ring's end with NOPs
            pad = size - pos
            self._reserve(pad)
            while pad:
                dw = min(pad // 4, self.nop_max_dw)
                self._write(self._nop(dw))
                pad -= 4 * dw
        self._reserve(len(packet))
        self._write(packet)

    def _nop(self, dw: int) -> bytes:
        """A NOP `dw` dwords long: its count is dw - 1 less the tail's bias (PM4's one-dword NOP wraps)."""
        return self.dialect.build("NOP", bytes(4 * dw - 4), count=(dw - 1 - self._nop_bias) & self._nop_mask)

    def _write(self, data: bytes) -> None:
        at = self.wptr % self.ring_size
        self._ring_bytes[at:at + len(data)] = data
        self.wptr += len(data)

    def _reserve(self, n: int, timeout: float = 10.0) -> None:
        """Back-pressure: wait until the engine has consumed enough of the ring for `n` more bytes. A dword stays
        free: a full ring would read as an empty one where the engine reports its pointer within the ring."""
        if self._fits(n):
            return
        self._kick()
        deadline, delay = time.monotonic() + timeout, 20e-6
        while not self._fits(n):
            self.device.system.raise_gpu_faults()
            if time.monotonic() > deadline:
                raise WaitTimeout(f"ring of {self.label} stayed full for {timeout:g} s: {self.describe()}")
            time.sleep(delay)
            delay = min(delay * 2, 1e-3)

    def _fits(self, n: int) -> bool:
        """Whether `n` more bytes fit the ring now. The read pointer last seen says so often enough, and reading
        it again costs more than the rest of a small submission."""
        if self.wptr + n - self._seen < self.ring_size:
            return True
        self._seen = self.rptr
        return self.wptr + n - self._seen < self.ring_size

    def _kick(self) -> None:
        if self.wptr != self._rung:
            self._rung = self.wptr  # before the doorbell: `rptr` relies on the engine never being ahead of it
            value = self.wptr // self.pointer_unit
            self._wptr_mem.value = value
            self.device.sys.doorbell_store(self.doorbell, value)

    # -- state --------------------------------------------------------------------------------------
    @property
    def idle(self) -> bool:
        return self.rptr >= self._rung

    @property
    def waiting(self) -> bool:
        """Whether the engine stands at a packet that waits on memory (the `wait` tag: a poll), holding work it
        is not doing; one dword of the ring at the read pointer tells (for an engine whose read pointer runs
        ahead of the packet it executes, a guess)."""
        d = self._definition_at(self.rptr)
        return d is not None and self.dialect.waits(d)

    def _definition_at(self, ptr: int) -> PacketDef | None:
        """The definition of the packet at byte pointer `ptr`, from its header dword alone (None: past what was
        rung, or no packet)."""
        if ptr >= self._rung:
            return None
        at = ptr % self.ring_size
        return self.dialect.definition(int.from_bytes(self._ring_bytes[at:at + 4], "little"))

    def blocked(self, load: Callable[[int, int], int | None]) -> bool:
        """Whether the engine stands at a wait whose polled memory, read by `load(address, bytes)`, does not pass
        now (a wait that passes, the engine not yet polled again, holds it for a moment only); a wait whose memory
        cannot be read counts as blocked. At an indirect buffer, whether a wait it holds does not pass now: the
        read pointer stays on the packet calling it while the engine runs what it calls, so where in it the engine
        stands is not known (a guess, as `waiting` is; one it cannot read or decode is not blocked)."""
        if self.waiting:
            p = self.packet_at(self.rptr)
            return p is not None and poll_passes(p, load) is not True
        d = self._definition_at(self.rptr)
        if d is None or d.indirect is None:
            return False
        p = self.packet_at(self.rptr)
        return p is not None and any(self.dialect.waits(q.defn) and poll_passes(q, load) is not True
                                     for q in self._called(p, load))

    def _called(self, p: Packet, load: Callable[[int, int], int | None]) -> list[Packet]:
        """The packets the indirect buffer packet `p` calls, read by `load` (up to MAX_IB_LOOK dwords; [] when
        they cannot be read or decoded)."""
        addr, size = p.fields[p.defn.indirect[0]], p.fields[p.defn.indirect[1]]
        if size > MAX_IB_LOOK:
            return []
        words = [load(addr + 4 * i, 4) for i in range(size)]
        if None in words:
            return []
        try:
            return list(self.dialect.iter_packets(b"".join(w.to_bytes(4, "little") for w in words)))
        except ValueError:
            return []

    def packets(self, start: int, end: int) -> list[Packet]:
        """The packets the ring holds from byte pointer `start` up to `end` (within a ring of each other), as far
        as they decode."""
        size = self.ring_size
        raw, at = self.ring.read(0, size) * 2, start % size  # unwrapped
        try:
            return list(self.dialect.iter_packets(raw[at:at + min(end - start, size)]))
        except ValueError:
            return []

    def packet_at(self, ptr: int) -> Packet | None:
        """Decode the packet the ring holds at byte pointer `ptr` (None when it cannot be decoded)."""
        size = self.ring_size
        raw = self.ring.read(0, size) * 2  # unwrapped: any packet starting in the ring is whole in here
        try:
            return self.dialect.decode(raw, ptr % size)
        except ValueError:
            return None

    def describe(self) -> str:
        """rptr/wptr (bytes) and the packet the engine is on, for hang and fault reports."""
        text = f"queue {self.label} (id {self.queue_id}) rptr={self.rptr:#x} wptr={self._rung:#x}"
        if not self.idle:
            text += f", at: {self.packet_at(self.rptr) or 'undecodable packet'}"
        return text

    def sync(self, timeout: float = 10.0) -> None:
        """Submit this thread's packets and wait until the engine has executed everything submitted so far."""
        with self._lock:  # serials reach the ring in the order they are taken (submit re-enters the lock)
            if self._done.event_id is None:
                self._done.event_id = self.device.system.create_signal_event()
            self._serial += 1
            serial = self._serial
            self.signal(self._done, serial).submit()
        self._done.wait(serial, timeout)

    def destroy(self) -> None:
        with self._lock:
            if self.queue_id is None:
                return
            self.device.kfd.ioctl("DESTROY_QUEUE", queue_id=self.queue_id)
            self.queue_id = None
        self.device.untrack(self)
        self._ring_bytes.release()  # a write after this is an error, not a store into unmapped memory
        self._rptr = type(self._rptr)(self._rptr.value)  # its last report, kept: the pointers' page goes now
        self._free_buffers()
        self._done.free()
        while self._held:
            self._held.popleft()[1].free()

    def _free_buffers(self) -> None:
        for b in self._buffers:
            b.free()
        self._buffers = []
