"""The emulated packet processor of a COMPUTE_AQL queue: the command processor (cp.py) in AQL mode.

It wakes on the doorbell, whose value is the index of the last packet written (amd-facts §6), and processes
slots from read_dispatch_id (amd_queue_t @128, KFD's read pointer, which it advances) up to that index. A slot
whose header is still INVALID is not processed: the processor waits for its producer to write the header
(producers write it last, then ring). Each packet is decoded with the table in kfdtrace.driver.aql and run by
the handler its name maps to; then it completes: its completion signal's value is decremented (a 64-bit
atomic), the signal's event id is stored in its event mailbox and the KFD event interrupt raised (as SDMA's
TRAP), INVALID is written back into the header and read_dispatch_id advances (amd-facts §9, "Who resets the
header to INVALID?").

Packets run one after the other, each completing before the next starts, so the BARRIER bit always holds; and
the emulated GPU is coherent (engines read and write host memory directly), so acquire and release fences have
nothing to do: only a scope that is no scope (3) is refused. The PM4-IB vendor packet's indirect buffer runs on
the command processor this class extends, with its PM4 handlers and registers. A KERNEL_DISPATCH runs the
kernel its descriptor names (launch.py) to the end in the ISA interpreter before the packet completes; an
AGENT_DISPATCH or an unknown packet type stops the queue with a named error.
Every memory access goes through GpuVm.access; an address no buffer covers is a VM fault, as for SDMA.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from kfdtrace.driver.aql import (
    AQL,
    PACKET_SIZE,
    AmdQueue,
    AmdSignal,
    FenceScope,
    QueueProperties,
    pm4_ib_body,
    signed64,
)
from kfdtrace.driver.emulator.cp import CommandProcessor
from kfdtrace.driver.emulator.memory import GpuVm
from kfdtrace.driver.emulator.ring_engine import POLL_MAX_S, POLL_MIN_S, NotEmulated, QueueError
from kfdtrace.driver.families import Family
from kfdtrace.driver.packets import Packet
from kfdtrace.driver.pm4 import Pm4Dialect

if TYPE_CHECKING:
    from kfdtrace.driver.emulator.kfd import EmulatedMachine

_INVALID = AQL.build("INVALID")[:2]  # the header word written back into a processed slot
_I64 = struct.Struct("<q")
_SCOPES = frozenset(FenceScope)


class AqlProcessor(CommandProcessor):
    """The packet processor of one user-mode AQL queue. Its read pointer counts packets (64 bytes)."""

    kind = "AQL"
    pointer_unit = PACKET_SIZE
    rptr_wraps = False  # read_dispatch_id never wraps

    def __init__(self, machine: EmulatedMachine, vm: GpuVm, pm4: Pm4Dialect, queue_id: int, ring_va: int,
                 ring_size: int, rptr_va: int, num_xcc: int = 1, family: Family | None = None):
        self.ring_va, self.slots = ring_va, ring_size // PACKET_SIZE
        self.queue_va = rptr_va - AmdQueue.read_dispatch_id.offset  # KFD's read pointer is in amd_queue_t
        self.announced = 0  # packets the doorbells have announced: the highest index rung + 1
        self.aql_handlers: dict[str, Callable[[Packet], None]] = {
            "BARRIER_AND": self._barrier, "BARRIER_OR": self._barrier, "BARRIER_VALUE": self._barrier,
            "PM4_IB": self._pm4_ib, "KERNEL_DISPATCH": self._kernel_dispatch, "AGENT_DISPATCH": self._agent_dispatch,
        }
        super().__init__(machine, vm, pm4, queue_id, ring_va, ring_size, rptr_va, num_xcc, family)

    @property
    def index(self) -> int:
        """read_dispatch_id: the packet the processor is on."""
        return self.rptr // PACKET_SIZE

    def where(self) -> str:
        return f"AQL queue {self.queue_id} packet {self.index} (slot {self.index % self.slots})"

    # -- doorbell side ------------------------------------------------------------------------------
    def ring(self, wptr: int) -> None:
        """The doorbell: the index of a packet just written. Producers on several threads may ring out of
        order; the highest index rung counts."""
        with self._kick_lock:
            self.announced = max(self.announced, wptr + 1)
            self.doorbell = self.announced * PACKET_SIZE
            self._kick.notify()

    # -- processor side -----------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._kick_lock:
                while not self._stop and (self.announced <= self.index or self.error):
                    self._kick.wait()
                if self._stop:
                    return
            packet: Packet | None = None
            try:
                while self.index < self.announced and not self._stop:
                    packet = self._slot()
                    if packet is None:  # announced, its header not written yet
                        with self._kick_lock:
                            self._kick.wait(POLL_MAX_S)
                        continue
                    self._process(packet)
                    packet = None
            except Exception as exc:  # an unsupported or malformed packet stops the queue, as on hardware
                self._stop_on(exc, f"{packet or 'undecodable packet'} at {self.where()}")

    def _slot_va(self) -> int:
        return self.ring_va + self.index % self.slots * PACKET_SIZE

    def _slot(self) -> Packet | None:
        """The packet in the current slot; None while its header is INVALID."""
        with self.vm.access(self._slot_va(), PACKET_SIZE) as host:
            data = ctypes.string_at(host, PACKET_SIZE)
        packet = AQL.decode(data)
        return None if packet.name == "INVALID" else packet

    def _process(self, p: Packet) -> None:
        f = p.fields
        for scope in ("acquire_fence_scope", "release_fence_scope"):
            if f[scope] not in _SCOPES:
                raise QueueError(f"{p.name} {scope}={f[scope]} is not a fence scope (0..2)")
        start = self.machine.gpu_clock() if AQL.completion(p) and self._profiling() else None
        self.aql_handlers[p.name](p)
        if not self._stop:
            self._complete(p, start)

    def _profiling(self) -> bool:
        """Whether amd_queue_t.queue_properties asks for ENABLE_PROFILING: then the CP writes the GPU clock as a
        packet begins and as it completes into its completion signal's start_ts and end_ts (amd_hsa_queue.h; ROCR
        Queue::SetProfiling, read by hsa_amd_profiling_get_dispatch_time; campaign 91 found them left 0)."""
        with self.vm.access(self.queue_va + AmdQueue.queue_properties.offset, 4) as host:
            return bool(ctypes.c_uint32.from_address(host).value & QueueProperties.ENABLE_PROFILING)

    def _complete(self, p: Packet, start: int | None = None) -> None:
        """Signal the packet's completion signal (its timestamps first, when `start` is when it began), release
        its slot, advance read_dispatch_id."""
        handle = AQL.completion(p)
        if handle:
            with self.vm.access(handle, ctypes.sizeof(AmdSignal), write=True) as host, self.machine.atomic_lock:
                signal = AmdSignal.from_address(host)
                if start is not None:
                    signal.start_ts, signal.end_ts = start, self.machine.gpu_clock()
                signal.value = signed64(signal.value - 1)
                mailbox, event_id = signal.event_mailbox_ptr, signal.event_id
            self.machine.memory_changed()
            if mailbox:
                self._write(mailbox, struct.pack("<I", event_id))
                self.machine.interrupt(event_id)
        self._write(self._slot_va(), _INVALID)
        self._set_rptr(self.rptr + PACKET_SIZE)

    # -- packet handlers ----------------------------------------------------------------------------
    def _signal_value(self, handle: int) -> int:
        """amd_signal_t.value of the signal at `handle`."""
        with self.vm.access(handle + AmdSignal.value.offset, 8) as host:
            return _I64.unpack(ctypes.string_at(host, 8))[0]

    def _wait_until(self, done: Callable[[], bool]) -> None:
        """Poll until `done()`, as SDMA's POLL_REGMEM does: GPU writers wake the processor at once, CPU stores
        are seen at the next poll."""
        delay = POLL_MIN_S
        while not done():
            if self._stop:
                return
            self.machine.wait_memory_change(delay)
            delay = min(delay * 2, POLL_MAX_S)

    def _barrier(self, p: Packet) -> None:
        """Poll until the packet's dependency signals let it complete (AqlDialect.passes: BARRIER_AND, BARRIER_OR,
        BARRIER_VALUE)."""
        def done() -> bool:
            try:
                return bool(AQL.passes(p, self._signal_value))
            except ValueError as exc:
                raise QueueError(str(exc)) from None
        self._wait_until(done)

    def _pm4_ib(self, p: Packet) -> None:
        """Run the PM4 INDIRECT_BUFFER the packet holds on this command processor."""
        jump = self.dialect.decode(pm4_ib_body(p))
        if jump.name != "INDIRECT_BUFFER":
            raise QueueError(f"the PM4-IB packet holds a PM4 {jump.name}, not an INDIRECT_BUFFER")
        self._execute(jump)

    def _kernel_dispatch(self, p: Packet) -> None:
        from kfdtrace.driver.emulator.launch import from_aql  # loaded with the first dispatch, as cp.py does

        with self.vm.access(self.queue_va, ctypes.sizeof(AmdQueue)) as host:
            queue = AmdQueue.from_buffer_copy(ctypes.string_at(host, ctypes.sizeof(AmdQueue)))
        self.launch(from_aql(self.family, self.dialect.registers, self.vm, p, self._slot_va(), self.index, queue,
                             self.queue_va, self.num_xcc))

    def _agent_dispatch(self, p: Packet) -> None:
        raise NotEmulated(f"agent dispatch packets are not emulated: {p} at {self.where()}")
