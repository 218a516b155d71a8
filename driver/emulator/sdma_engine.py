"""An emulated SDMA engine: the ring engine (ring_engine.py) with a handler per SDMA packet.

Packets are decoded with the same declarative definitions the driver builds them with
(kfdtrace.driver.sdma); each packet name maps to one handler here, whose parameters name the fields it reads.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING

from kfdtrace.driver.emulator.memory import GpuVm
from kfdtrace.driver.emulator.ring_engine import NotEmulated, QueueError, RingEngine, aligned
from kfdtrace.driver.packets import Dialect, Packet
from kfdtrace.driver.sdma import FILL_DWORDS

if TYPE_CHECKING:
    from kfdtrace.driver.emulator.kfd import EmulatedMachine

INFINITE_RETRY = 0xFFF  # POLL_REGMEM retry_count that never gives up



class SdmaEngine(RingEngine):
    """The engine of one user-mode SDMA ring: byte-addressed, 64-bit monotonic read/write pointers
    (ROCR BlitSdma, kernel sdma_v7_0 wptr in bytes)."""

    kind = "SDMA"

    def __init__(self, machine: EmulatedMachine, vm: GpuVm, dialect: Dialect, queue_id: int,
                 ring_va: int, ring_size: int, rptr_va: int, count_bits: int):
        self.count_bits = count_bits  # the family's sdma_count_bits: the byte-count width the hardware honours
        handlers = {
            "NOP": self._nop, "COPY_LINEAR": self._copy_linear, "WRITE_LINEAR": self._write_linear,
            "CONST_FILL": self._const_fill, "FENCE": self._fence, "TRAP": self._interrupt,
            "POLL_REGMEM": self._poll_regmem, "TIMESTAMP_GET_GLOBAL": self._timestamp,
            # The emulated GPU has no caches to write back or invalidate: a GCR request has nothing to do.
            "ATOMIC": self._atomic, "GCR_REQ": self._nop, "USER_GCR": self._nop, "INDIRECT": self._indirect,
            "COND_EXE": self._cond_exe,
        }
        # POLL_REGMEM's retry count, read straight from its dwords: decoding its fields would leave the packet
        # to be encoded again for the poll
        self._retry_count = {d: d.caller(int, ("retry_count",)) for d in dialect if d.name == "POLL_REGMEM"}
        super().__init__(machine, vm, dialect, queue_id, ring_va, ring_size, rptr_va, handlers)

    # -- packet handlers ----------------------------------------------------------------------------
    def _byte_count(self, packet: str, count: int) -> int:
        """Bytes a COPY_LINEAR or CONST_FILL moves. Its count (bytes - 1) is decoded at the table's full width so
        any client's stream decodes, but the family's engine takes only sdma_count_bits of it (the vega10 header
        masks COPY_LINEAR_COUNT to 22 bits): hardware would silently move count modulo 2**bits + 1 bytes, so the
        emulated engine stops the queue instead of copying less than the packet says."""
        if count >> self.count_bits:
            raise QueueError(f"{packet} count={count:#x} ({count + 1} bytes) exceeds the {self.count_bits}-bit "
                             f"count this GPU's SDMA engine takes (at most {1 << self.count_bits:#x} bytes)")
        return count + 1

    def _copy_linear(self, count: int, src: int, dst: int, src_sw: int, dst_sw: int, broadcast: int,
                     payload: bytes) -> None:
        if src_sw or dst_sw:
            _refuse_swap("COPY_LINEAR", src_sw=src_sw, dst_sw=dst_sw)
        if broadcast:
            raise NotEmulated("COPY_LINEAR broadcast=1 (COPY_BROADCAST_LINEAR, two destinations) is not emulated")
        if any(payload):  # sdma7's DCC word (with CPV): 0 asks for no compression (sdma_v7_0_emit_copy_buffer)
            raise NotEmulated(f"COPY_LINEAR with DCC word {int.from_bytes(payload[:4], 'little'):#x} (compression) "
                              f"is not emulated")
        n = self._byte_count("COPY_LINEAR", count)
        # A copy under way finishes on the memory it started with, even if a buffer is freed meanwhile.
        self.vm.copy(dst, src, n)
        self.machine.memory_changed()

    def _write_linear(self, dst: int, payload: bytes, sw: int) -> None:
        if sw:
            _refuse_swap("WRITE_LINEAR", sw=sw)
        self._write(dst, payload)

    def _const_fill(self, dst: int, data: int, count: int, fillsize: int, sw: int = 0, compress: int = 0) -> None:
        if sw:  # (sdma7's has no swap field: 0)
            _refuse_swap("CONST_FILL", sw=sw)
        if compress:  # (sdma7's only)
            raise NotEmulated("CONST_FILL compress=1 is not emulated")
        n = self._byte_count("CONST_FILL", count)
        if fillsize == FILL_DWORDS:  # the kernel's and Mesa's fill: count in bytes, "even if the fill is done in
            aligned(dst, 4)  # dwords" (Mesa); one starting or ending mid-dword is no result the emulator vouches for
            if n % 4:
                raise QueueError(f"CONST_FILL of dwords: {n} bytes is not a whole number of dwords")
        pattern = data.to_bytes(4, "little")
        with self.vm.access(dst, n, write=True) as host:
            if fillsize == 0 or pattern == pattern[:1] * 4:
                ctypes.memset(host, pattern[0], n)
            else:
                _fill_pattern(host, pattern, n)
        self.machine.memory_changed()

    def _fence(self, addr: int, data: int) -> None:
        self.vm.store(aligned(addr, 4), ctypes.c_uint32, data)
        self.machine.memory_changed()

    def _timestamp(self, addr: int) -> None:
        self.vm.store(addr, ctypes.c_uint64, self.machine.gpu_clock())
        self.machine.memory_changed()

    def _poll_regmem(self, p: Packet) -> None:
        retry_count = self._retry_count[p.defn](p.dwords, p.payload)
        if retry_count != INFINITE_RETRY:
            raise NotEmulated(f"POLL_REGMEM retry_count={retry_count:#x} (only {INFINITE_RETRY:#x}) is emulated")
        self._poll(p)

    def _atomic(self, atomic_op: int, addr: int, src_data: int, cmp_data: int) -> None:
        self._atomic64("ATOMIC atomic_op", atomic_op, addr, src_data, cmp_data)

    def _cond_exe(self, addr: int, reference: int, exec_count: int) -> int:
        """Execute the next exec_count dwords only if the dword at addr equals reference (the kernel's
        sdma_v5_0_ring_init_cond_exec uses it so); otherwise skip them."""
        return 0 if self._read32(addr) == reference else 4 * exec_count


def _refuse_swap(packet: str, **swaps: int) -> None:
    """NotEmulated for a packet asking the engine to swap bytes (endian swap fields not all 0)."""
    asked = " ".join(f"{name}={value}" for name, value in swaps.items() if value)
    raise NotEmulated(f"{packet} {asked} (byte swapping) is not emulated")


def _fill_pattern(dst: int, pattern: bytes, n: int) -> None:
    """Fill n bytes at dst with a repeating 4-byte pattern, doubling the filled prefix each step."""
    done = min(4, n)
    ctypes.memmove(dst, pattern, done)
    while done < n:
        step = min(done, n - done)
        ctypes.memmove(dst + done, dst, step)
        done += step

