"""An emulated SDMA engine: one thread per queue, executing the packets the doorbell hands it.

Packets are decoded with the same declarative definitions the driver builds them with
(kfdtrace.driver.sdma); each packet name maps to one handler here. A packet that touches memory no buffer is
mapped at raises a VM fault; a packet with no handler is a clear error. Either way the queue stops with its
read pointer on the offending packet, as hardware does.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from kfdtrace.driver.emulator.memory import GpuVm, VmFault
from kfdtrace.driver.packets import MAX_IB_DEPTH, Dialect, Packet, PacketError
from kfdtrace.driver.sdma import AtomicOp, PollFunc

if TYPE_CHECKING:
    from kfdtrace.driver.emulator.kfd import EmulatedMachine

log = logging.getLogger("kfdtrace.emulator")

INFINITE_RETRY = 0xFFF  # POLL_REGMEM retry_count that never gives up
POLL_MIN_S, POLL_MAX_S = 20e-6, 1e-3  # back-off bounds while a poll waits on memory only the CPU may write

_COMPARE: dict[int, Callable[[int, int], bool]] = {
    PollFunc.ALWAYS: lambda v, r: True,
    PollFunc.LT: lambda v, r: v < r,
    PollFunc.LE: lambda v, r: v <= r,
    PollFunc.EQ: lambda v, r: v == r,
    PollFunc.NE: lambda v, r: v != r,
    PollFunc.GE: lambda v, r: v >= r,
    PollFunc.GT: lambda v, r: v > r,
}


_U64 = (1 << 64) - 1


def _signed(x: int) -> int:
    return x - (1 << 64) if x >> 63 else x


# TC_OP semantics on the old value, the packet's src_data and cmp_data. The _NORET codes change memory the
# same way (they only skip returning the old value), so both share one entry.
_ATOMIC_BY_NAME: dict[str, Callable[[int, int, int], int]] = {
    "SWAP64": lambda old, src, cmp: src,
    "CMPSWAP64": lambda old, src, cmp: src if old == cmp else old,
    "ADD64": lambda old, src, cmp: old + src,
    "SUB64": lambda old, src, cmp: old - src,
    "SMIN64": lambda old, src, cmp: old if _signed(old) <= _signed(src) else src,
    "UMIN64": lambda old, src, cmp: min(old, src),
    "SMAX64": lambda old, src, cmp: old if _signed(old) >= _signed(src) else src,
    "UMAX64": lambda old, src, cmp: max(old, src),
    "AND64": lambda old, src, cmp: old & src,
    "OR64": lambda old, src, cmp: old | src,
    "XOR64": lambda old, src, cmp: old ^ src,
    "INC64": lambda old, src, cmp: 0 if old >= src else old + 1,
    "DEC64": lambda old, src, cmp: src if old == 0 or old > src else old - 1,
}
_ATOMICS = {op: _ATOMIC_BY_NAME[op.name.removesuffix("_NORET")] for op in AtomicOp}


class QueueError(Exception):
    """A packet the engine cannot execute; the queue stops on it."""


class SdmaEngine:
    """The engine of one user-mode SDMA ring: byte-addressed, 64-bit monotonic read/write pointers
    (ROCR BlitSdma, kernel sdma_v7_0 wptr in bytes)."""

    def __init__(self, machine: EmulatedMachine, vm: GpuVm, dialect: Dialect, queue_id: int,
                 ring_va: int, ring_size: int, rptr_va: int):
        """The engine follows the doorbell's write pointer; the one in memory is the driver's bookkeeping."""
        self.machine, self.vm, self.dialect, self.queue_id = machine, vm, dialect, queue_id
        self.ring_size = ring_size
        self.rptr_host = vm.translate(rptr_va, 8)
        self.ring_host = vm.translate(ring_va, ring_size)
        self.rptr = 0
        self.doorbell = 0
        self.error: str | None = None
        self._ib_depth = 0  # indirect buffers being executed, one inside the other
        self._stop = False
        self._kick = threading.Condition()
        ctypes.c_uint64.from_address(self.rptr_host).value = 0
        self._handlers: dict[str, Callable[[Packet], int | None]] = {
            "NOP": self._nop, "COPY_LINEAR": self._copy_linear, "WRITE_LINEAR": self._write_linear,
            "CONST_FILL": self._const_fill, "FENCE": self._fence, "TRAP": self._trap,
            "POLL_REGMEM": self._poll_regmem, "TIMESTAMP_GET_GLOBAL": self._timestamp,
            # The emulated GPU has no caches to write back or invalidate: a GCR request has nothing to do.
            "ATOMIC": self._atomic, "GCR_REQ": self._nop, "USER_GCR": self._nop, "INDIRECT": self._indirect,
            "COND_EXE": self._cond_exe,
        }
        self._thread = threading.Thread(target=self._run, name=f"sdma-q{queue_id}", daemon=True)
        self._thread.start()

    # -- doorbell side ------------------------------------------------------------------------------
    def ring(self, wptr: int) -> None:
        with self._kick:
            self.doorbell = wptr
            self._kick.notify()

    def stop(self) -> None:
        with self._kick:
            self._stop = True
            self._kick.notify()
        self.machine.memory_changed()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    # -- engine side --------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._kick:
                while not self._stop and (self.doorbell <= self.rptr or self.error):
                    self._kick.wait()
                if self._stop:
                    return
                wptr = self.doorbell
            stream, pos = b"", 0
            try:
                stream = self._ring_bytes(self.rptr, wptr)
                while pos < len(stream) and not self._stop:
                    packet = self.dialect.decode(stream, pos)
                    size = packet.size + self._execute(packet)
                    pos += size
                    self._set_rptr(self.rptr + size)
            except VmFault as fault:
                self._fail(f"{fault} by {self._describe(stream, pos)}")
                self.machine.report_vm_fault(fault)
            except Exception as exc:  # an unsupported or malformed packet stops the queue, as on hardware
                self._fail(f"{exc} ({self._describe(stream, pos)})")
                self.machine.report_queue_error(self.vm.gpu_id)

    def _describe(self, stream: bytes, pos: int) -> str:
        where = f"SDMA queue {self.queue_id} ring offset {(self.rptr % self.ring_size):#x}"
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
        ctypes.c_uint64.from_address(self.rptr_host).value = value

    def _execute(self, packet: Packet) -> int:
        """Run one packet; the bytes of following packets it makes the engine skip (COND_EXE)."""
        handler = self._handlers.get(packet.name)
        if handler is None:
            raise QueueError(f"the emulated SDMA engine does not execute {packet.name}")
        return handler(packet) or 0

    # -- packet handlers ----------------------------------------------------------------------------
    def _nop(self, p: Packet) -> None:
        pass

    def _copy_linear(self, p: Packet) -> None:
        f = p.fields
        n = f["count"] + 1  # count is bytes - 1
        # A copy under way finishes on the memory it started with, even if a buffer is freed meanwhile.
        with self.vm.access(f["src"], n) as src, self.vm.access(f["dst"], n, write=True) as dst:
            ctypes.memmove(dst, src, n)
        self.machine.memory_changed()

    def _write_linear(self, p: Packet) -> None:
        data = p.payload
        with self.vm.access(p.fields["dst"], len(data), write=True) as dst:
            ctypes.memmove(dst, data, len(data))
        self.machine.memory_changed()

    def _const_fill(self, p: Packet) -> None:
        f = p.fields
        n = f["count"] + 1
        pattern = f["data"].to_bytes(4, "little")
        with self.vm.access(f["dst"], n, write=True) as dst:
            if f.get("fillsize", 2) == 0 or pattern == pattern[:1] * 4:
                ctypes.memset(dst, pattern[0], n)
            else:
                _fill_pattern(dst, pattern, n)
        self.machine.memory_changed()

    def _fence(self, p: Packet) -> None:
        with self.vm.access(p.fields["addr"], 4, write=True) as dst:
            ctypes.c_uint32.from_address(dst).value = p.fields["data"]
        self.machine.memory_changed()

    def _trap(self, p: Packet) -> None:
        self.machine.trap(p.fields["int_context"])

    def _timestamp(self, p: Packet) -> None:
        with self.vm.access(p.fields["addr"], 8, write=True) as dst:
            ctypes.c_uint64.from_address(dst).value = self.machine.gpu_clock()
        self.machine.memory_changed()

    def _poll_regmem(self, p: Packet) -> None:
        f = p.fields
        if not f["mem_poll"]:
            raise QueueError("POLL_REGMEM on a register (mem_poll=0) is not emulated")
        if f["retry_count"] != INFINITE_RETRY:
            raise QueueError(f"POLL_REGMEM retry_count={f['retry_count']:#x} (only {INFINITE_RETRY:#x}) is emulated")
        compare = _COMPARE.get(f["func"])
        if compare is None:
            raise QueueError(f"POLL_REGMEM function {f['func']} is reserved")
        addr, mask, ref = f["addr"], f["mask"], f["ref"]
        delay = POLL_MIN_S
        while not compare(self._read32(addr) & mask, ref):  # looked up every time: the buffer may be freed
            if self._stop:
                return
            # GPU writers notify at once; CPU stores are seen at the next poll, like the hardware's poll interval.
            self.machine.wait_memory_change(delay)
            delay = min(delay * 2, POLL_MAX_S)

    def _atomic(self, p: Packet) -> None:
        f = p.fields
        op = _ATOMICS.get(f["atomic_op"])
        if op is None:
            raise QueueError(f"ATOMIC atomic_op={f['atomic_op']:#x} is not a 64-bit TC_OP the engine knows")
        with self.vm.access(f["addr"], 8, write=True) as host, self.machine.atomic_lock:
            target = ctypes.c_uint64.from_address(host)
            target.value = op(target.value, f["src_data"], f["cmp_data"]) & _U64
        self.machine.memory_changed()

    def _indirect(self, p: Packet) -> None:
        f = p.fields
        if self._ib_depth >= MAX_IB_DEPTH:
            raise QueueError(f"indirect buffers nest more than {MAX_IB_DEPTH} deep (at {f['ib_base']:#x})")
        n = f["ib_size"] * 4
        with self.vm.access(f["ib_base"], n) as host:
            ib = ctypes.string_at(host, n)
        self._ib_depth += 1
        try:
            pos = 0
            while pos < n:
                packet = self.dialect.decode(ib, pos)
                pos += packet.size + self._execute(packet)
        finally:
            self._ib_depth -= 1

    def _cond_exe(self, p: Packet) -> int:
        """Execute the next exec_count dwords only if the dword at addr equals reference (the kernel's
        sdma_v5_0_ring_init_cond_exec uses it so); otherwise skip them."""
        f = p.fields
        return 0 if self._read32(f["addr"]) == f["reference"] else 4 * f["exec_count"]

    def _read32(self, va: int) -> int:
        """The dword at GPU address va."""
        with self.vm.access(va, 4) as host:
            return ctypes.c_uint32.from_address(host).value


def _fill_pattern(dst: int, pattern: bytes, n: int) -> None:
    """Fill n bytes at dst with a repeating 4-byte pattern, doubling the filled prefix each step."""
    done = min(4, n)
    ctypes.memmove(dst, pattern, done)
    while done < n:
        step = min(done, n - done)
        ctypes.memmove(dst + done, dst, step)
        done += step

