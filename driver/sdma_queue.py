"""User-mode SDMA queues: a ring (driver/ring_queue.py) of packets from the family's SDMA dialect.

Packets come from kfdtrace.driver.sdma, so the bytes written here are decoded by the same definitions in the
emulator, capture and replay. SDMA pointers and the doorbell count bytes (64-bit, monotonic).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kfdtrace.driver import kfd_ioctl as K
from kfdtrace.driver.ring_queue import DEFAULT_RING, WRITE_CHUNK, Destination, RingQueue
from kfdtrace.driver.sdma import DEFAULTS, DIALECTS, FILL_DWORDS, PollFunc
from kfdtrace.driver.signals import Semaphore

if TYPE_CHECKING:
    from kfdtrace.driver.system import Device

INFINITE_RETRY = 0xFFF
# A memory dword polled until it is >= ref, with no retry limit
POLL_GE = {"mask": 0xFFFFFFFF, "func": PollFunc.GE, "mem_poll": 1, "interval": 10, "retry_count": INFINITE_RETRY}
ENGINE_KINDS = {"sdma": K.QueueType.SDMA, "xgmi": K.QueueType.SDMA_XGMI}

__all__ = ["DEFAULT_RING", "ENGINE_KINDS", "Destination", "SdmaQueue"]


class SdmaQueue(RingQueue):
    """One SDMA ring. Build packets with the helper methods, then `submit()` to ring the doorbell."""

    kind = "sdma"
    defaults = DEFAULTS  # the kernel's (see sdma.DEFAULTS)

    def __init__(self, device: Device, ring_size: int = DEFAULT_RING, engine: str | int = "sdma",
                 name: str | None = None, max_copy: int | None = None):
        if isinstance(engine, int):
            qtype, engine_id = K.QueueType.SDMA_BY_ENG_ID, engine
        elif engine in ENGINE_KINDS:
            qtype, engine_id = ENGINE_KINDS[engine], 0
        else:
            raise ValueError(f"engine must be 'sdma', 'xgmi' or an engine number, not {engine!r}")
        limit = device.target.sdma_copy_limit
        if max_copy is not None and not 0 < max_copy <= limit:
            raise ValueError(f"max_copy {max_copy:#x} must be within 1..{limit:#x} on {device.target.name}")
        dialect = DIALECTS[device.target.family.sdma_dialect]
        super().__init__(device, dialect, ring_size, name)
        self.max_copy = max_copy or device.target.sdma_max_copy  # bytes per COPY_LINEAR (default: the kernel's)
        # CONST_FILL's count field is narrower than COPY_LINEAR's before SDMA 6 (22 bits vs 30).
        self.max_fill = min(self.max_copy, self.dialect["CONST_FILL"]["count"].mask + 1)
        self._create(queue_type=qtype, sdma_engine_id=engine_id)

    # -- packets ------------------------------------------------------------------------------------
    def copy(self, dst: Destination, src: Destination, size: int, *, dst_offset: int = 0,
             src_offset: int = 0) -> SdmaQueue:
        """Copy `size` bytes, split into COPY_LINEAR packets of at most the family's maximum: the last first when
        the destination starts inside the source, above it, so that overlapping ranges copy as memmove does."""
        dst_va, src_va = self._va(dst, dst_offset, size), self._va(src, src_offset, size)
        pieces = range(0, size, self.max_copy)
        for done in reversed(pieces) if src_va < dst_va < src_va + size else pieces:
            n = min(self.max_copy, size - done)
            self.packet("COPY_LINEAR", count=n - 1, src=src_va + done, dst=dst_va + done)
        return self

    def fill(self, dst: Destination, value: int, size: int, *, offset: int = 0) -> SdmaQueue:
        """Fill `size` bytes (a multiple of 4, at a dword-aligned address) with a repeated 32-bit value."""
        if size % 4:
            raise ValueError(f"CONST_FILL fills whole dwords: {size} is not a multiple of 4")
        va = self._va(dst, offset, size)
        if va % 4:
            raise ValueError(f"CONST_FILL fills whole dwords: address {va:#x} is not 4-byte aligned")
        for done in range(0, size, self.max_fill):
            n = min(self.max_fill, size - done)
            self.packet("CONST_FILL", dst=va + done, data=value & 0xFFFFFFFF, count=n - 1, fillsize=FILL_DWORDS)
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
        """Set KFD signal event `event_id` from the GPU: its mailbox written, then the TRAP interrupt carrying
        its id (the kernel sets an event from an interrupt only when its slot in the event page no longer reads
        unsignaled: kfd_events.c; ROCR's BlitSdma writes the mailbox with a FENCE before its TRAP too)."""
        return self.fence(self.device.system.event_mailbox(event_id), event_id).packet("TRAP", int_context=event_id)

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
