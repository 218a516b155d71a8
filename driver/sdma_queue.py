"""User-mode SDMA queues: a ring in GTT, read/write pointers, a doorbell, and packet-building helpers.

Packets come from the family's SDMA dialect (kfdtrace.driver.sdma), so the bytes written here are decoded by
the same definitions in the emulator, capture and replay.

Each thread builds its own packets (a thread-local list); submit() puts the calling thread's packets on the
ring under the queue's lock, so submissions from several threads never interleave.
"""

from __future__ import annotations

import ctypes
import threading
import time
from typing import TYPE_CHECKING

from kfdtrace.driver import kfd_ioctl as K
from kfdtrace.driver.errors import DeviceError, WaitTimeout
from kfdtrace.driver.memory import PAGE, Buffer
from kfdtrace.driver.packets import Packet
from kfdtrace.driver.sdma import DIALECTS, PollFunc, defaults
from kfdtrace.driver.signals import Semaphore

if TYPE_CHECKING:
    from kfdtrace.driver.system import Device

DEFAULT_RING = 64 << 10
NOP_MAX_DW = 1 << 14  # NOP's count field is 14 bits of dwords to skip
INFINITE_RETRY = 0xFFF
# A memory dword polled until it is >= ref, with no retry limit
POLL_GE = {"mask": 0xFFFFFFFF, "func": PollFunc.GE, "mem_poll": 1, "interval": 10, "retry_count": INFINITE_RETRY}
WRITE_CHUNK = 4096  # data bytes per WRITE_LINEAR packet
ENGINE_KINDS = {"sdma": K.QueueType.SDMA, "xgmi": K.QueueType.SDMA_XGMI}

Destination = Buffer | int  # a buffer, or a raw GPU VA (unchecked: the GPU faults if nothing is mapped there)


class _Pending(threading.local):
    """The packets one thread has built for a queue and not yet submitted."""

    def __init__(self) -> None:
        self.packets: list[bytes] = []


class SdmaQueue:
    """One SDMA ring. Build packets with the helper methods, then `submit()` to ring the doorbell."""

    def __init__(self, device: Device, ring_size: int = DEFAULT_RING, engine: str | int = "sdma",
                 name: str | None = None, max_copy: int | None = None):
        if ring_size < 1024 or ring_size & (ring_size - 1):
            raise ValueError(f"ring size {ring_size} must be a power of two of at least 1024 bytes")
        self.device, self.name, self.ring_size = device, name, ring_size
        self.dialect = DIALECTS[device.target.family.sdma_dialect]
        family_max = device.target.sdma_max_copy
        if max_copy is not None and not 0 < max_copy <= family_max:
            raise ValueError(f"max_copy {max_copy:#x} must be within 1..{family_max:#x} on {device.target.name}")
        self.max_copy = max_copy or family_max  # bytes per COPY_LINEAR; less than the family's splits more
        self._defaults = {d.name: defaults(self.dialect, d.name) for d in self.dialect}
        # CONST_FILL's count field is narrower than COPY_LINEAR's before SDMA 6 (22 bits vs 30).
        self.max_fill = min(self.max_copy, self.dialect["CONST_FILL"]["count"].mask + 1)
        self.ring = device.alloc(ring_size, "gtt", uncached=True, name=f"{self.label}.ring", role="ring")
        self.ptrs = device.alloc(PAGE, "gtt", uncached=True, name=f"{self.label}.ptrs", role="queue pointers")
        self._rptr = ctypes.c_uint64.from_address(self.ptrs.cpu)
        self._wptr_mem = ctypes.c_uint64.from_address(self.ptrs.cpu + 8)
        if isinstance(engine, int):
            qtype, engine_id = K.QueueType.SDMA_BY_ENG_ID, engine
        elif engine in ENGINE_KINDS:
            qtype, engine_id = ENGINE_KINDS[engine], 0
        else:
            raise ValueError(f"engine must be 'sdma', 'xgmi' or an engine number, not {engine!r}")
        out = device.kfd.ioctl("CREATE_QUEUE", ring_base_address=self.ring.va, ring_size=ring_size,
                               read_pointer_address=self.ptrs.va, write_pointer_address=self.ptrs.va + 8,
                               gpu_id=device.gpu_id, queue_type=qtype, queue_percentage=100,
                               queue_priority=7, sdma_engine_id=engine_id)
        self.queue_id = out.queue_id
        device.sys.annotate("queue", queue_id=self.queue_id, name=self.label)
        self.doorbell = device.doorbell_page() + (out.doorbell_offset & 0x1FFF)
        self.wptr = 0  # bytes written, monotonic
        self._rung = 0
        self._pending = _Pending()
        self._lock = threading.RLock()  # held while writing the ring and ringing the doorbell
        self._done = device.system.semaphore(name=f"{self.label}.done")
        self._serial = 0
        device.track(self)

    @property
    def label(self) -> str:
        return self.name or f"sdma@{self.device.gpu_id:#x}"

    def __repr__(self) -> str:
        return f"<SdmaQueue {self.label} id={self.queue_id} rptr={self.rptr:#x} wptr={self.wptr:#x}>"

    # -- packets ------------------------------------------------------------------------------------
    def packet(self, name: str, payload: bytes = b"", **fields: int) -> SdmaQueue:
        """Append any packet of the dialect by name (the kernel's defaults first, see sdma.DEFAULTS)."""
        defaults = self._defaults[name]
        self._pending.packets.append(
            self.dialect.build(name, payload, **({**defaults, **fields} if defaults else fields)))
        return self

    def emit(self, data: bytes) -> SdmaQueue:
        """Append packets already encoded in this queue's dialect; they go on the ring as one unit."""
        if not data or len(data) % 4:
            raise ValueError(f"SDMA packets are whole dwords: {len(data)} bytes is not a positive multiple of 4")
        self._pending.packets.append(bytes(data))
        return self

    def discard(self) -> list[bytes]:
        """Take back the packets this thread built and has not submitted; they never reach the GPU."""
        packets, self._pending.packets = self._pending.packets, []
        return packets

    def _va(self, target: Destination, offset: int, size: int) -> int:
        if isinstance(target, int):
            return target + offset
        if self.device not in target.mapped_on:
            raise DeviceError(f"{target.label} is not mapped on GPU {self.device.gpu_id:#x}; "
                              f"call buffer.map_to(device) first")
        return target.addr(offset, size)

    def copy(self, dst: Destination, src: Destination, size: int, *, dst_offset: int = 0,
             src_offset: int = 0) -> SdmaQueue:
        """Copy `size` bytes, split into COPY_LINEAR packets of at most the family's maximum."""
        dst_va, src_va = self._va(dst, dst_offset, size), self._va(src, src_offset, size)
        for done in range(0, size, self.max_copy):
            n = min(self.max_copy, size - done)
            self.packet("COPY_LINEAR", count=n - 1, src=src_va + done, dst=dst_va + done)
        return self

    def fill(self, dst: Destination, value: int, size: int, *, offset: int = 0) -> SdmaQueue:
        """Fill `size` bytes (a multiple of 4) with a repeated 32-bit value."""
        if size % 4:
            raise ValueError(f"CONST_FILL fills whole dwords: {size} is not a multiple of 4")
        va = self._va(dst, offset, size)
        for done in range(0, size, self.max_fill):
            n = min(self.max_fill, size - done)
            self.packet("CONST_FILL", dst=va + done, data=value & 0xFFFFFFFF, count=n - 1, fillsize=2)
        return self

    def write_data(self, dst: Destination, data: bytes, *, offset: int = 0) -> SdmaQueue:
        """Write inline dwords (WRITE_LINEAR) into memory."""
        if len(data) % 4:
            raise ValueError(f"WRITE_LINEAR writes whole dwords: {len(data)} bytes is not a multiple of 4")
        va = self._va(dst, offset, len(data))
        for done in range(0, len(data), WRITE_CHUNK):
            chunk = data[done:done + WRITE_CHUNK]
            self.packet("WRITE_LINEAR", chunk, dst=va + done, count=len(chunk) // 4 - 1)
        return self

    def fence(self, dst: Destination, value: int, *, offset: int = 0) -> SdmaQueue:
        return self.packet("FENCE", addr=self._va(dst, offset, 4), data=value & 0xFFFFFFFF)

    def timestamp(self, dst: Destination, *, offset: int = 0) -> SdmaQueue:
        return self.packet("TIMESTAMP_GET_GLOBAL", addr=self._va(dst, offset, 8))

    def trap(self, event_id: int) -> SdmaQueue:
        return self.packet("TRAP", int_context=event_id)

    def signal(self, sem: Semaphore, value: int) -> SdmaQueue:
        """GPU signal of a timeline semaphore: each of its words low dword, then high dword, then wake CPU
        waiters."""
        for addr, v in sem.words(value):
            self.fence(addr, v & 0xFFFFFFFF).fence(addr + 4, v >> 32)
        return self.trap(sem.event_id) if sem.event_id is not None else self

    def wait(self, sem: Semaphore, value: int) -> SdmaQueue:
        """GPU wait until the semaphore reaches `value`: on the word Semaphore.wait_word names, its high dword
        `>=`, then, only while the high dword still equals the value's (COND_EXE), its low dword `>=`."""
        addr, value = sem.wait_word(value)
        high, low = value >> 32, value & 0xFFFFFFFF
        build = self.dialect.build
        poll_low = build("POLL_REGMEM", addr=addr, ref=low, **POLL_GE)
        self.packet("POLL_REGMEM", addr=addr + 4, ref=high, **POLL_GE)
        # one unit: ring-end padding must never fall between a COND_EXE and the packet it governs
        return self.emit(build("COND_EXE", addr=addr + 4, reference=high, exec_count=len(poll_low) // 4) + poll_low)

    # -- ring ---------------------------------------------------------------------------------------
    @property
    def rptr(self) -> int:
        return self._rptr.value

    def submit(self) -> int:
        """Write this thread's packets to the ring and ring the doorbell; returns the new write pointer."""
        packets = self._pending.packets  # this thread's own list: reused, not replaced
        self._lock.acquire()  # not `with`: it costs twice as much, on the path every submission takes
        try:
            if self.queue_id is None:
                raise DeviceError(f"queue {self.label} was destroyed; make a new one with device.sdma_queue()")
            for packet in packets:
                self._put(packet)
            self._kick()
            return self.wptr
        finally:  # after a failure part of them may be on the ring: none is submitted twice
            packets.clear()
            self._lock.release()

    def _put(self, packet: bytes) -> None:
        size = self.ring_size
        if len(packet) > size:
            raise ValueError(f"a {len(packet)}-byte packet does not fit a {size}-byte ring")
        pos = self.wptr % size
        if pos + len(packet) > size:  # never split a packet over the wrap: pad to the ring's end with NOPs
            pad = size - pos
            self._reserve(pad)
            while pad:
                dw = min(pad // 4, NOP_MAX_DW)
                self._write(self.dialect.build("NOP", count=dw - 1))  # count: dwords after the header
                pad -= 4 * dw
        self._reserve(len(packet))
        self._write(packet)

    def _write(self, data: bytes) -> None:
        ctypes.memmove(self.ring.cpu + self.wptr % self.ring_size, data, len(data))
        self.wptr += len(data)

    def _reserve(self, n: int, timeout: float = 10.0) -> None:
        """Back-pressure: wait until the engine has consumed enough of the ring for `n` more bytes."""
        if self.wptr + n - self._rptr.value <= self.ring_size:
            return
        self._kick()
        deadline, delay = time.monotonic() + timeout, 20e-6
        while self.wptr + n - self._rptr.value > self.ring_size:
            self.device.system.raise_gpu_faults()
            if time.monotonic() > deadline:
                raise WaitTimeout(f"ring of {self.label} stayed full for {timeout:g} s: {self.describe()}")
            time.sleep(delay)
            delay = min(delay * 2, 1e-3)

    def _kick(self) -> None:
        if self.wptr != self._rung:
            self._wptr_mem.value = self.wptr
            self.device.sys.doorbell_store(self.doorbell, self.wptr)
            self._rung = self.wptr

    # -- state --------------------------------------------------------------------------------------
    @property
    def idle(self) -> bool:
        return self.rptr >= self._rung

    def packet_at(self, ptr: int) -> Packet | None:
        """Decode the packet the ring holds at pointer `ptr` (None when it cannot be decoded)."""
        size = self.ring_size
        raw = self.ring.read(0, size) * 2  # unwrapped: any packet starting in the ring is whole in here
        try:
            return self.dialect.decode(raw, ptr % size)
        except ValueError:
            return None

    def describe(self) -> str:
        """rptr/wptr and the packet the engine is on, for hang and fault reports."""
        text = f"queue {self.label} (id {self.queue_id}) rptr={self.rptr:#x} wptr={self._rung:#x}"
        if not self.idle:
            text += f", at: {self.packet_at(self.rptr) or 'undecodable packet'}"
        return text

    def sync(self, timeout: float = 10.0) -> None:
        """Submit this thread's packets and wait until the engine has executed everything submitted so far."""
        with self._lock:  # serials reach the ring in the order they are taken (submit re-enters the lock)
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
        self.ring.free()
        self.ptrs.free()
        self._done.free()
