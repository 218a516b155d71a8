"""The emulated command processor of a PM4 compute queue: the ring engine (ring_engine.py) with a handler per
PM4 packet of the family's dialect (kfdtrace.driver.pm4), and the queue's compute registers by name.

Pointers and the doorbell count dwords (amd-facts §6: the PM4 write pointer is in dwords). The read pointer the
CP reports in memory is a dword offset within the ring, as the CP's ring-relative read pointer register is
(radeon's ring_free_size masks it with the ring's pointer mask); the driver reads it either way (ring_queue.py).

XCCs: a node with several XCCs (gfx942) runs every compute queue on each of them, and PRED_EXEC limits the
packets it governs to the XCCs of its mask. Each XCC has its own register state (tinygrad sets each XCC's
scratch base under PRED_EXEC). Memory packets have the same effect whichever XCCs execute them (the same
bytes to the same place, the same interrupt), so the emulator executes them once for the XCCs that would;
a packet predicated off every XCC of the node is skipped. DISPATCH_DIRECT and DISPATCH_INDIRECT start the
kernel the XCCs' registers describe (launch.py) and run it to the end in the ISA interpreter (shader/) before
the next packet, as a CP that waits for the dispatch's end would.
"""

from __future__ import annotations

import ctypes
import struct
import time
from typing import TYPE_CHECKING

from kfdtrace.driver.emulator.memory import GpuVm
from kfdtrace.driver.emulator.ring_engine import NotEmulated, RingEngine, aligned
from kfdtrace.driver.families import Family
from kfdtrace.driver.packets import Packet, PacketDef
from kfdtrace.driver.pm4 import CopySel, DataSel, IntSel, Pm4Dialect, WriteDst

if TYPE_CHECKING:
    from kfdtrace.driver.emulator.kfd import EmulatedMachine
    from kfdtrace.driver.emulator.launch import KernelLaunch

_MEMORY_DST = (WriteDst.TC_L2, WriteDst.MEMORY)  # WRITE_DATA / COPY_DATA destinations that are memory
_MEMORY_SRC = (CopySel.MEMORY, CopySel.TC_L2)
_INT_SELS = frozenset(IntSel)  # the table's event tag says which raise the interrupt
_REG_MASK = 0x3FFFF  # a register operand is a dword offset in bits 17:0 of the address dwords (soc15d.h)


class CommandProcessor(RingEngine):
    """The micro engine (MEC) of one user-mode PM4 compute queue."""

    kind = "PM4 compute"
    pointer_unit = 4
    rptr_wraps = True
    handed_off = frozenset({"DISPATCH_DIRECT", "DISPATCH_INDIRECT"})  # a kernel may run for long, or forever

    def __init__(self, machine: EmulatedMachine, vm: GpuVm, dialect: Pm4Dialect, queue_id: int,
                 ring_va: int, ring_size: int, rptr_va: int, num_xcc: int = 1, family: Family | None = None):
        self.num_xcc = max(num_xcc, 1)
        self.family = family
        self.last_launch: KernelLaunch | None = None  # the dispatch the CP ran last (for tools and tests)
        # The ISA interpreter (and numpy) load with the first compute queue: SDMA-only use starts without them.
        from kfdtrace.driver.emulator.shader.interpreter import CodeCache

        self.code = CodeCache(vm, machine)  # kernels compiled for this queue's dispatches
        self._all_xccs = frozenset(range(self.num_xcc))
        # per XCC: register name (or absolute offset, for registers the table does not name) -> value
        self.registers: list[dict[str | int, int]] = [{} for _ in range(self.num_xcc)]
        self._names = {r.offset: r.name for r in dialect.registers}
        self._pred: dict[int, list] = {}  # IB depth -> [XCCs a PRED_EXEC there selects, bytes it still governs]
        handlers = {
            "NOP": self._nop, "SET_SH_REG": self._set_reg, "SET_UCONFIG_REG": self._set_reg,
            "WRITE_DATA": self._write_data, "COPY_DATA": self._copy_data, "WAIT_REG_MEM": self._wait_reg_mem,
            "WAIT_REG_MEM64": self._wait_reg_mem, "ATOMIC_MEM": self._atomic_mem,
            "RELEASE_MEM": self._release_mem, "INDIRECT_BUFFER": self._indirect_buffer,
            "PRED_EXEC": self._pred_exec, "DISPATCH_DIRECT": self._dispatch, "DISPATCH_INDIRECT": self._dispatch,
            # Cache maintenance: the emulated GPU is coherent (engines read and write host memory directly), so
            # an acquire or a flush/partial-flush event has nothing to do.
            "ACQUIRE_MEM": self._nop, "EVENT_WRITE": self._nop,
        }
        super().__init__(machine, vm, dialect, queue_id, ring_va, ring_size, rptr_va, handlers)

    def register(self, name: str, xcc: int = 0) -> int:
        """A register's value on one XCC, by its name in the dialect's table (0 if never written)."""
        self.dialect.registers[name]  # a typo is a KeyError naming the table
        return self.registers[xcc].get(name, 0)

    # -- XCC predication ----------------------------------------------------------------------------
    def _xccs(self) -> frozenset[int]:
        """The XCCs that execute the packet at the current IB depth (every PRED_EXEC open at it or above)."""
        xccs = self._all_xccs
        for depth, (selected, _) in self._pred.items():
            if depth <= self._ib_depth:
                xccs &= selected
        return xccs

    def _execute_raw(self, d: PacketDef, raw: tuple[int, ...], payload: bytes, size: int) -> int:
        depth = self._ib_depth
        pred = self._pred.get(depth)
        skip = super()._execute_raw(d, raw, payload, size)
        if pred is not None and self._pred.get(depth) is pred:  # this packet is one a PRED_EXEC governs
            pred[1] -= size
            if pred[1] <= 0:
                del self._pred[depth]
        return skip

    def _pred_exec(self, p: Packet) -> int:
        """Execute the next exec_count dwords on the XCCs in xcc_mask that exist; skip them if there are none
        (gfx942 tinygrad: one PRED_EXEC per XCC around its scratch base)."""
        f = p.fields
        selected = frozenset(x for x in self._all_xccs if f["xcc_mask"] >> x & 1)
        governed = 4 * f["exec_count"]
        if not selected & self._xccs():
            return governed
        if governed:
            self._pred[self._ib_depth] = [selected, governed]
        return 0

    def _indirect_buffer(self, p: Packet) -> None:
        if p.fields["chain"]:
            raise NotEmulated("INDIRECT_BUFFER with chain=1 (replacing the rest of the current buffer) is not "
                              "emulated")
        try:
            self._indirect(p)
        finally:  # a PRED_EXEC inside the buffer governs nothing past its end
            self._pred = {d: v for d, v in self._pred.items() if d <= self._ib_depth}

    # -- registers ----------------------------------------------------------------------------------
    def _set_reg(self, p: Packet) -> None:
        for offset, value in self.dialect.writes(p).items():
            self._store_register(offset, value)

    def _store_register(self, offset: int, value: int) -> None:
        key = self._names.get(offset, offset)
        for xcc in self._xccs():
            self.registers[xcc][key] = value & 0xFFFFFFFF

    def _load_register(self, offset: int) -> int:
        """A register's value as the first executing XCC holds it."""
        return self.registers[min(self._xccs())].get(self._names.get(offset, offset), 0)

    # -- memory -------------------------------------------------------------------------------------
    def _write_data(self, p: Packet) -> None:
        f, data = p.fields, p.payload
        sel = f["dst_sel"]
        if sel == WriteDst.REGISTER:
            reg = f["dst"] & _REG_MASK
            for i, (value,) in enumerate(struct.iter_unpack("<I", data)):
                self._store_register(reg if f["addr_incr"] else reg + i, value)
        elif sel in _MEMORY_DST:
            self._write(f["dst"], p.inline())  # WR_ONE_ADDR: every dword to one address, the last one stays
        else:
            raise NotEmulated(f"WRITE_DATA dst_sel={sel} (only register and memory) is not emulated")

    def _copy_data(self, p: Packet) -> None:
        f = p.fields
        size = 8 if f["count_sel"] else 4
        src_sel, dst_sel = f["src_sel"], f["dst_sel"]
        # a 64-bit copy's addresses are 8-byte aligned, a 32-bit one's 4 (the low bits are not in the packet:
        # soc15d.h PACKET3_COPY_DATA src/dst 32b_addr_lo bits 31:2, 64b_addr_lo bits 31:3)
        if src_sel in _MEMORY_SRC:
            with self.vm.access(aligned(f["src"], size), size) as host:
                value = int.from_bytes(ctypes.string_at(host, size), "little")
        elif src_sel == CopySel.IMMEDIATE:
            value = f["src"]
        elif src_sel == CopySel.REGISTER:
            reg = f["src"] & _REG_MASK
            value = self._load_register(reg) | (self._load_register(reg + 1) << 32 if size == 8 else 0)
        elif src_sel == CopySel.GPU_CLOCK:
            value = self.machine.gpu_clock()
        elif src_sel == CopySel.SYSTEM_CLOCK:
            value = time.monotonic_ns()  # what GET_CLOCK_COUNTERS reports as the system clock
        else:
            raise NotEmulated(f"COPY_DATA src_sel={src_sel} is not emulated")
        value &= (1 << 8 * size) - 1
        if dst_sel == CopySel.REGISTER:
            reg = f["dst"] & _REG_MASK
            self._store_register(reg, value)
            if size == 8:
                self._store_register(reg + 1, value >> 32)
        elif dst_sel in _MEMORY_DST:
            self._write(aligned(f["dst"], size), value.to_bytes(size, "little"))
        else:
            raise NotEmulated(f"COPY_DATA dst_sel={dst_sel} is not emulated")

    def _wait_reg_mem(self, p: Packet) -> None:
        if p.fields["operation"]:
            raise NotEmulated(f"{p.name} operation={p.fields['operation']} (only 0, wait) is emulated")
        self._poll(p)

    def _atomic_mem(self, atomic: int, command: int, addr: int, src_data: int, cmp_data: int) -> None:
        if command:
            raise NotEmulated(f"ATOMIC_MEM command={command} (only 0, a single pass) is emulated")
        self._atomic64("ATOMIC_MEM atomic", atomic, addr, src_data, cmp_data)

    def _release_mem(self, p: Packet) -> None:
        """End-of-pipe write of data, a clock or nothing; then, if int_sel asks, the interrupt that signals the
        KFD event in int_ctxid (as SDMA's TRAP). Earlier work is done: the CP executes in order."""
        f = p.fields
        sel, int_sel = f["data_sel"], f["int_sel"]
        if int_sel not in _INT_SELS:
            raise NotEmulated(f"RELEASE_MEM int_sel={int_sel} (a conditional interrupt) is not emulated")
        if sel == DataSel.DATA32:
            self._write(f["addr"], (f["data"] & 0xFFFFFFFF).to_bytes(4, "little"))
        elif sel in (DataSel.DATA64, DataSel.GPU_CLOCK, DataSel.SYSTEM_CLOCK):
            value = {DataSel.DATA64: f["data"], DataSel.GPU_CLOCK: self.machine.gpu_clock(),
                     DataSel.SYSTEM_CLOCK: time.monotonic_ns()}[sel]
            # 64 bits go to an 8-byte aligned address (kfd_pm4_headers_ai.h RELEASE_MEM address_lo_64b: bits 31:3)
            with self.vm.access(aligned(f["addr"], 8), 8, write=True) as host:
                ctypes.c_uint64.from_address(host).value = value  # one 8-byte store: readers never see half
            self.machine.memory_changed()
        elif sel == DataSel.ATOMIC_ADD32 and "addr" in p.addresses():  # gfx10.3+ only: the table says where
            with self.vm.access(f["addr"], 4, write=True) as host, self.machine.atomic_lock:
                target = ctypes.c_uint32.from_address(host)
                target.value = (target.value + f["data"]) & 0xFFFFFFFF
            self.machine.memory_changed()
        elif sel != DataSel.NONE:
            raise NotEmulated(f"RELEASE_MEM data_sel={sel} is not emulated")
        self._interrupt(p)

    def _dispatch(self, p: Packet) -> None:
        f = p.fields
        if p.name == "DISPATCH_DIRECT":
            groups = (f["dim_x"], f["dim_y"], f["dim_z"])
        else:  # DISPATCH_INDIRECT: the workgroup counts are 3 dwords in memory
            with self.vm.access(f["addr"], 12) as host:
                groups = struct.unpack("<3I", ctypes.string_at(host, 12))
        from kfdtrace.driver.emulator.launch import from_registers

        xccs = sorted(self._xccs())
        launch = from_registers(self.family, self.dialect.registers, [self.registers[x] for x in xccs], groups,
                                f["dispatch_initiator"])
        self.launch(launch)

    def launch(self, launch: KernelLaunch) -> None:
        """Run a kernel to its end."""
        from kfdtrace.driver.emulator.shader.interpreter import run_dispatch

        self.last_launch = launch
        run_dispatch(launch, self.vm, self.machine, lambda: self._stop, self.code)
