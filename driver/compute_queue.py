"""User-mode PM4 compute queues: a ring (driver/ring_queue.py) of type-3 packets from the family's PM4 dialect.

Packets come from kfdtrace.driver.pm4, so the bytes written here are decoded by the same definitions in the
emulated command processor. The write pointer and doorbell count dwords (amd-facts §6). KFD asks a compute
queue for an end-of-pipe buffer and a context save/restore (CWSR) area of the sizes the node's properties give
(families.queue_sizes, as kfd_queue.c computes them); the queue allocates both in VRAM, for the GPU only.

On a node with several XCCs (gfx942) every XCC executes the queue's packets; the helpers that write memory run
theirs on XCC 0 only (PRED_EXEC), so a signal follows the writes before it on the same XCC. Waits run on every
XCC. `dispatch(kernel, grid, block, *args)` runs a kernel of a loaded program (device.load): the dispatch
registers and DISPATCH_DIRECT (driver/dispatch.py), with the kernel arguments and a copy of its AQL dispatch
packet in a slice of the queue's kernel-argument arena (driver/kernarg_pool.py), returned once the engine is past
the dispatch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from kfdtrace.driver import kfd_ioctl as K
from kfdtrace.driver.dispatch import Scratch, pm4_launch
from kfdtrace.driver.families import queue_sizes
from kfdtrace.driver.kernarg_pool import KernargMemory, KernargPool, KernargSource
from kfdtrace.driver.kernargs import Kernargs, Launch, pack
from kfdtrace.driver.memory import Buffer
from kfdtrace.driver.pm4 import DIALECTS, CopySel, DataSel, IntSel, WaitFunc, WriteDst
from kfdtrace.driver.ring_queue import DEFAULT_RING, WRITE_CHUNK, Destination, RingQueue
from kfdtrace.driver.signals import Semaphore

if TYPE_CHECKING:
    from kfdtrace.driver.program import LoadedKernel
    from kfdtrace.driver.system import Device

__all__ = ["DEFAULT_RING", "ComputeQueue"]

XCC0 = 1  # PRED_EXEC xcc_mask of the first XCC


class ComputeQueue(RingQueue):
    """One PM4 compute ring. Build packets with the helper methods, then `submit()` to ring the doorbell."""

    kind = "compute"
    pointer_unit = K.DOORBELL_UNITS[K.QueueType.COMPUTE][0]  # dwords

    @property
    def defaults(self) -> Mapping[str, Mapping[str, int]]:  # type: ignore[override]
        """The dialect's (pm4.DEFAULTS, with the cache actions of pm4.REQUESTS in its bits)."""
        return self.dialect.defaults

    def __init__(self, device: Device, ring_size: int = DEFAULT_RING, name: str | None = None):
        super().__init__(device, DIALECTS[device.target.family.pm4_dialect], ring_size, name)
        props = device.node.properties
        self.num_xcc = props.get("num_xcc") or 1
        self.sizes = sizes = queue_sizes(props)
        self.scratch = Scratch(device, self.label)  # grown by the first dispatch that needs it
        self.kernarg_pool = KernargPool(device, self.label, self._reclaim)  # allocated by the first dispatch
        self._dispatches = 0
        try:
            self.eop = self._context(sizes.eop_buffer_size, "eop")
            self.cwsr = self._context(sizes.cwsr_allocation(self.num_xcc), "cwsr")
        except BaseException:
            self._free_buffers()
            raise
        self._create(queue_type=K.QueueType.COMPUTE,
                     eop_buffer_address=self.eop.va, eop_buffer_size=sizes.eop_buffer_size,
                     ctx_save_restore_address=self.cwsr.va, ctx_save_restore_size=sizes.cwsr_size,
                     ctl_stack_size=sizes.ctl_stack_size)

    def _context(self, size: int, what: str) -> Buffer:
        """A buffer only the GPU uses for the queue (EOP, CWSR), freed with it."""
        buf = self.device.alloc(size, "vram", cpu_access=False, name=f"{self.label}.{what}", role="queue context")
        self._buffers.append(buf)
        return buf

    def _reclaim(self) -> None:
        """Free what the engine is past now, not at the next submission (the kernel-argument arena asks when full)."""
        with self._lock:
            self._release_held()

    def _free_buffers(self) -> None:
        super()._free_buffers()
        self.scratch.free()
        self.kernarg_pool.free()

    # -- packets ------------------------------------------------------------------------------------
    def set_sh_reg(self, **values: int) -> ComputeQueue:
        """Append one SET_SH_REG writing consecutive SH registers by name (see Pm4Dialect.set_sh_reg)."""
        self._pending.packets.append(self.dialect.set_sh_reg(**values))
        return self

    def _on_xcc0(self, *packets: bytes) -> ComputeQueue:
        """Append packets that write memory: on a multi-XCC node only XCC 0 runs them (one unit on the ring,
        so ring-end padding never falls between the PRED_EXEC and what it governs)."""
        body = b"".join(packets)
        if self.num_xcc > 1:
            body = self.dialect.build("PRED_EXEC", exec_count=len(body) // 4, xcc_mask=XCC0) + body
        return self.emit(body)

    def write_data(self, dst: Destination, data: bytes, *, offset: int = 0) -> ComputeQueue:
        """Write inline dwords (WRITE_DATA to memory, confirmed before the next packet)."""
        if not data or len(data) % 4:
            raise ValueError(f"WRITE_DATA writes whole dwords: {len(data)} bytes is not a positive multiple of 4")
        va = self._va(dst, offset, len(data))
        return self._on_xcc0(*(self._build("WRITE_DATA", data[i:i + WRITE_CHUNK], dst_sel=WriteDst.MEMORY,
                                           wr_confirm=1, dst=va + i) for i in range(0, len(data), WRITE_CHUNK)))

    def copy_data(self, dst: Destination, src: Destination, *, size: int = 4, dst_offset: int = 0,
                  src_offset: int = 0) -> ComputeQueue:
        """Copy one dword (size 4) or qword (size 8) from memory to memory (COPY_DATA)."""
        if size not in (4, 8):
            raise ValueError(f"COPY_DATA copies 4 or 8 bytes, not {size}")
        return self._on_xcc0(self._build("COPY_DATA", src_sel=CopySel.TC_L2, dst_sel=CopySel.TC_L2,
                                         count_sel=size // 8, wr_confirm=1, src=self._va(src, src_offset, size),
                                         dst=self._va(dst, dst_offset, size)))

    def timestamp(self, dst: Destination, *, offset: int = 0) -> ComputeQueue:
        """Write the 64-bit GPU clock (COPY_DATA from the clock) at an 8-byte aligned address."""
        va = self._va(dst, offset, 8)
        if va % 8:  # a 64-bit COPY_DATA's dst_64b_addr_lo holds bits 31:3 (soc15d.h)
            raise ValueError(f"a timestamp goes to an 8-byte aligned address: {va:#x} is not")
        return self._on_xcc0(self._build("COPY_DATA", src_sel=CopySel.GPU_CLOCK, dst_sel=CopySel.TC_L2,
                                         count_sel=1, wr_confirm=1, dst=va))

    def indirect(self, ib: Destination, size: int, *, offset: int = 0) -> ComputeQueue:
        """Execute `size` bytes of packets of this dialect held in memory (INDIRECT_BUFFER), then go on."""
        if size <= 0 or size % 4:
            raise ValueError(f"an indirect buffer holds whole dwords: {size} bytes is not a positive multiple of 4")
        return self.packet("INDIRECT_BUFFER", ib_base=self._va(ib, offset, size), ib_size=size // 4)

    def signal(self, sem: Semaphore, value: int) -> ComputeQueue:
        """GPU signal of a timeline semaphore: each of its words in one 64-bit end-of-pipe write (RELEASE_MEM),
        the last one raising the interrupt that wakes CPU waiters on the semaphore's KFD event (int_ctxid). The
        event's mailbox is written first, with the event id: the kernel sets an event from an interrupt only when
        its mailbox was written (kfd_events.c). (tinygrad's AMDComputeQueue.signal writes it after the value, with
        the interrupt; before it, the signal stays the stream's last write, which is where a capture sees work
        complete.)"""
        words, interrupt = sem.words(value), sem.event_id is not None
        packets = [self._build("RELEASE_MEM", data_sel=DataSel.DATA32, addr=self.device.system.event_mailbox(
            sem.event_id), data=sem.event_id, int_sel=IntSel.NONE, int_ctxid=0)] if interrupt else []
        for i, (addr, v) in enumerate(words):
            raises = interrupt and i == len(words) - 1
            packets.append(self._build("RELEASE_MEM", data_sel=DataSel.DATA64, addr=addr, data=v,
                                       int_sel=IntSel.INTERRUPT_AFTER_WRITE_CONFIRM if raises else IntSel.NONE,
                                       int_ctxid=sem.event_id if raises else 0))
        return self._on_xcc0(*packets)

    def dispatch(self, kernel: LoadedKernel, grid: Sequence[int] | int, block: Sequence[int] | int,
                 *args: object) -> ComputeQueue:
        """Run `kernel` over `grid` work-items (1-3 dimensions) in workgroups of `block`, with `args` in the
        kernel's order (buffers, numpy or Python scalars, kernargs.Local(nbytes)); the packets after it wait for
        it. KernargError names an argument or a shape that does not fit."""
        if kernel.program.device is not self.device:
            raise ValueError(f"{kernel.name} is loaded on {kernel.program.device}, not on this queue's {self.device}")
        launch = Launch.of(grid, block)
        return self.emit(self.launch(kernel, launch, pack(kernel.kernel.metadata, args, launch)))

    def launch(self, kernel: LoadedKernel, launch: Launch, args: Kernargs,
               kernarg: KernargSource | None = None) -> bytes:
        """The packets of one dispatch of `kernel` with packed kernel arguments, to emit next: the arguments
        and a copy of its AQL dispatch packet go into a slice of the kernel-argument arena held until the engine
        is past them (or into the memory `kernarg(size, align)` gives: a replay follows kernel arguments in buffers
        of role "kernargs"), and scratch grows to what the kernel needs."""
        size = kernel.kernel.scratch
        scratch = None if size is None else self.scratch.ensure(size, self.hold)

        def held(size: int, align: int) -> KernargMemory:
            mem = self.kernarg_pool.alloc(size, align, kernel.name)
            self.hold(mem)
            return mem
        self._dispatches += 1
        return pm4_launch(self.dialect, kernel, launch, args, scratch, kernarg or held, self._dispatches,
                          self.num_xcc)

    def wait(self, sem: Semaphore, value: int) -> ComputeQueue:
        """GPU wait until the semaphore reaches `value`, on the word Semaphore.wait_word names: its high dword
        `>=` the value's, then its low dword `>=` the value's.

        The SDMA queue runs the low poll only while the high dword still equals the value's (COND_EXE); the PM4
        dialects here have no memory-conditional packet (PRED_EXEC selects XCCs), and WAIT_REG_MEM compares 32
        bits. The two polls never wake early: the value only grows, and a reader never sees it larger than it
        is. They miss the value only if the high dword has passed the target's and the low dword is below the
        target's when the low poll starts; as the word wait_word picks has the target's low dword under 2**31,
        the semaphore is then more than 2**31 past the value (signals.py's bound for one signal's step)."""
        addr, value = sem.wait_word(value)
        poll = {"function": WaitFunc.GE, "mem_space": 1, "mask": 0xFFFFFFFF}
        return self.emit(self._build("WAIT_REG_MEM", addr=addr + 4, reference=value >> 32, **poll)
                         + self._build("WAIT_REG_MEM", addr=addr, reference=value & 0xFFFFFFFF, **poll))
