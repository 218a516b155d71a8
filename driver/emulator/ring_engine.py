"""What every emulated queue engine shares: one thread per ring, executing the packets the doorbell hands it.

Packets are decoded with the same declarative definitions the driver builds them with; a subclass (the SDMA
engine, the PM4 command processor) maps each packet name to one handler. What packets mean beyond their
layout comes from the table's tags: indirect buffers (`PacketDef.indirect`), memory polls (`.wait`) and
interrupts (`.event_field`) are executed here, once, for every dialect. A packet that touches memory no
buffer is mapped at raises a VM fault; a packet with no handler is a clear error. Either way the queue stops
with its read pointer on the offending packet, as hardware does.

Who executes: the thread that rings an idle engine's doorbell runs the new packets itself while each is
quick (a poll already satisfied, a copy of at most INLINE_BYTES, no indirect buffer, no packet of the
engine's `handed_off` set), so a small submission completes without waking a thread; at the first packet
that may wait or run long, the engine's own thread takes over from it. One of the two runs at a time, in
ring order, so what the GPU does is the same either way; only when it happens may be earlier.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from kfdtrace.driver.emulator.memory import GpuVm, VmFault
from kfdtrace.driver.packets import MAX_IB_DEPTH, Dialect, Packet, PacketError
from kfdtrace.driver.sdma import PollFunc

if TYPE_CHECKING:
    from kfdtrace.driver.emulator.kfd import EmulatedMachine

log = logging.getLogger("kfdtrace.emulator")

POLL_MIN_S, POLL_MAX_S = 20e-6, 1e-3  # back-off bounds while a poll waits on memory only the CPU may write
INLINE_BYTES = 64 << 10  # the largest copy or fill the doorbell's caller executes itself

# SDMA POLL_REGMEM `func` and PM4 WAIT_REG_MEM `function` share these codes (pm4.WaitFunc is sdma.PollFunc).
COMPARE: dict[int, Callable[[int, int], bool]] = {
    PollFunc.ALWAYS: lambda v, r: True,
    PollFunc.LT: lambda v, r: v < r,
    PollFunc.LE: lambda v, r: v <= r,
    PollFunc.EQ: lambda v, r: v == r,
    PollFunc.NE: lambda v, r: v != r,
    PollFunc.GE: lambda v, r: v >= r,
    PollFunc.GT: lambda v, r: v > r,
}


class QueueError(Exception):
    """A packet the engine cannot execute; the queue stops on it."""


class RingEngine:
    """The engine of one user-mode ring: read/write pointers counting `pointer_unit` bytes (SDMA bytes, PM4
    dwords), the doorbell's value being the 64-bit monotonic write pointer. The read pointer reported in memory
    is monotonic too, or ring-relative with `rptr_wraps`. Subclasses set `kind` (named in errors),
    `pointer_unit`, `rptr_wraps` and `handlers`."""

    kind = "ring"
    pointer_unit = 1
    rptr_wraps = False  # the read pointer reported in memory is ring-relative, not monotonic
    handed_off: frozenset[str] = frozenset()  # packets only the engine's thread runs (they may run for long)

    def __init__(self, machine: EmulatedMachine, vm: GpuVm, dialect: Dialect, queue_id: int,
                 ring_va: int, ring_size: int, rptr_va: int,
                 handlers: dict[str, Callable[[Packet], int | None]]):
        """The engine follows the doorbell's write pointer; the one in memory is the driver's bookkeeping."""
        self.machine, self.vm, self.dialect, self.queue_id = machine, vm, dialect, queue_id
        self.ring_size = ring_size
        self._rptr_mask = ring_size // self.pointer_unit - 1 if self.rptr_wraps else (1 << 64) - 1
        self.rptr_host = vm.translate(rptr_va, 8)  # where the engine reports its read pointer
        self._rptr_word = ctypes.c_uint64.from_address(self.rptr_host)
        self.ring_host = vm.translate(ring_va, ring_size)
        self.rptr = 0  # bytes
        self.doorbell = 0  # bytes
        self.error: str | None = None
        self.handlers = handlers
        self._ib_depth = 0  # indirect buffers being executed, one inside the other
        self._stop = False
        self._busy = False  # a thread (the engine's or a doorbell's caller) is executing packets
        self._kick = threading.Condition()
        self._rptr_word.value = 0
        self._thread = threading.Thread(target=self._run, name=f"{self.kind.split()[0].lower()}-q{queue_id}",
                                        daemon=True)
        self._thread.start()

    # -- doorbell side ------------------------------------------------------------------------------
    def ring(self, wptr: int) -> None:
        """The doorbell: `wptr` in pointer units. Runs the new packets in the caller's thread while they are
        quick, if the engine is idle (see the module docstring)."""
        with self._kick:
            self.doorbell = wptr * self.pointer_unit
            if self._busy or self._stop or self.error:
                self._kick.notify()
                return
            self._busy = True
        self._drain(inline=True)

    def stop(self) -> None:
        with self._kick:
            self._stop = True
            self._kick.notify_all()
        self.machine.memory_changed()
        if threading.current_thread() is not self._thread:
            with self._kick:  # a doorbell's caller executing packets stops at the next one
                while self._busy:
                    self._kick.wait()
            self._thread.join()

    # -- engine side --------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._kick:
                while not self._stop and (self.doorbell <= self.rptr or self.error or self._busy):
                    self._kick.wait()
                if self._stop:
                    return
                self._busy = True
            self._drain(inline=False)

    def _drain(self, inline: bool) -> None:
        """Execute packets up to the doorbell (again while it moves on); `inline`: in a doorbell's caller,
        which leaves the rest to the engine's thread at the first packet that is not quick."""
        handing_off = True  # if interrupted, whatever is left goes to the engine's thread
        try:
            while True:
                handing_off = self._execute_to(self.doorbell, inline)
                with self._kick:
                    if handing_off or self.doorbell <= self.rptr or self.error or self._stop:
                        handing_off = handing_off or self._stop
                        break
        finally:
            with self._kick:
                self._busy = False
                if handing_off:  # wake the engine's thread for the rest, or stop() waiting for us
                    self._kick.notify_all()

    def _execute_to(self, wptr: int, inline: bool) -> bool:
        """Execute the ring's packets up to `wptr`; True when `inline` stopped before one that is not quick."""
        stream, pos = b"", 0
        try:
            stream = self._ring_bytes(self.rptr, wptr)
            while pos < len(stream) and not self._stop:
                packet = self.dialect.decode(stream, pos)
                if inline and not self._quick(packet):
                    return True
                size = packet.size + self._execute(packet)
                pos += size
                self._set_rptr(self.rptr + size)
        except Exception as exc:  # an unsupported or malformed packet stops the queue, as on hardware
            self._stop_on(exc, self._describe(stream, pos))
        return False

    def _stop_on(self, exc: Exception, what: str) -> None:
        """Stop the queue on the packet `what` names: a VM fault raises the memory exception event, anything
        else the hardware exception event."""
        if isinstance(exc, VmFault):
            self._fail(f"{exc} by {what}")
            self.machine.report_vm_fault(exc)
        else:
            self._fail(f"{exc} ({what})")
            self.machine.report_queue_error(self.vm.gpu_id)

    def _quick(self, p: Packet) -> bool:
        """Whether a doorbell's caller may execute `p`: it cannot wait, and moves at most INLINE_BYTES."""
        d = p.defn
        if d.indirect is not None or p.name in self.handed_off:
            return False
        if d.wait is not None:
            return self._polled(p)
        return d.split is None or p.fields[d.split[0]] < INLINE_BYTES

    def where(self) -> str:
        """The queue and the ring offset the engine is on, for error messages."""
        return f"{self.kind} queue {self.queue_id} ring offset {(self.rptr % self.ring_size):#x}"

    def _describe(self, stream: bytes, pos: int) -> str:
        where = self.where()
        try:
            return f"{self.dialect.decode(stream, pos)} at {where}"
        except PacketError:
            return where

    def _fail(self, message: str) -> None:
        self.error = message
        log.error("%s", message)

    def _ring_bytes(self, start: int, end: int) -> bytes:
        """The ring's bytes from pointer `start` to `end`, unwrapped."""
        size = self.ring_size
        if end - start > size:
            raise QueueError(f"write pointer {end:#x} is more than a ring ({size:#x}) ahead of {start:#x}")
        first = start % size
        n = end - start
        head = min(n, size - first)
        data = ctypes.string_at(self.ring_host + first, head)
        return data + ctypes.string_at(self.ring_host, n - head) if n > head else data

    def _set_rptr(self, value: int) -> None:
        self.rptr = value
        self._rptr_word.value = value // self.pointer_unit & self._rptr_mask

    def _execute(self, packet: Packet) -> int:
        """Run one packet; the bytes of following packets it makes the engine skip (a conditional)."""
        handler = self.handlers.get(packet.name)
        if handler is None:
            raise QueueError(f"the emulated {self.kind} engine does not execute {packet.name}")
        return handler(packet) or 0

    # -- what the tags say ------------------------------------------------------------------------------
    def _nop(self, p: Packet) -> None:
        pass

    def _indirect(self, p: Packet) -> None:
        """Run the packets of an indirect buffer (the packet's `indirect` tag names its address and size)."""
        addr_field, size_field = p.defn.indirect
        base = p.fields[addr_field]
        if self._ib_depth >= MAX_IB_DEPTH:
            raise QueueError(f"indirect buffers nest more than {MAX_IB_DEPTH} deep (at {base:#x})")
        n = p.fields[size_field] * 4
        with self.vm.access(base, n) as host:
            ib = ctypes.string_at(host, n)
        self._ib_depth += 1
        try:
            pos = 0
            while pos < n:
                packet = self.dialect.decode(ib, pos)
                pos += packet.size + self._execute(packet)
        finally:
            self._ib_depth -= 1

    def _poll(self, p: Packet) -> None:
        """Wait until the polled dword compares true (the packet's `wait` tag: address, ref, mask, function).
        GPU writers notify at once; CPU stores are seen at the next poll, like the hardware's poll interval."""
        delay = POLL_MIN_S
        while not self._polled(p):  # looked up every time: the buffer may be freed
            if self._stop:
                return
            self.machine.wait_memory_change(delay)
            delay = min(delay * 2, POLL_MAX_S)

    def _polled(self, p: Packet) -> bool:
        """Whether the memory a poll waits on compares true now."""
        addr_field, ref_field, mask_field, func_field = p.defn.wait
        f = p.fields
        if addr_field not in p.addresses():
            raise QueueError(f"{p.name} polling a register, not memory, is not emulated")
        compare = COMPARE.get(f[func_field])
        if compare is None:
            raise QueueError(f"{p.name} {func_field}={f[func_field]} is reserved")
        return compare(self._read32(f[addr_field]) & f[mask_field], f[ref_field])

    def _interrupt(self, p: Packet) -> None:
        """The interrupt whose context carries a KFD event id (the packet's `event` tag)."""
        self.machine.trap(p.fields[p.defn.event_field])

    def _read32(self, va: int) -> int:
        """The dword at GPU address va."""
        return self.vm.load(va, ctypes.c_uint32)

    def _write(self, va: int, data: bytes) -> None:
        """Write bytes at GPU address va, and wake the engines polling memory."""
        with self.vm.access(va, len(data), write=True) as dst:
            ctypes.memmove(dst, data, len(data))
        self.machine.memory_changed()
