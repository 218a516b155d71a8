"""User-mode AQL queues and HSA signals: a ring of 64-byte packets (kfdtrace.driver.aql) that the CP runs.

The queue: a ring of N slots in uncached GTT, filled with INVALID headers at creation; an amd_queue_t in its own
uncached GTT page, whose write_dispatch_id (@56) and read_dispatch_id (@128) are KFD's write and read pointers,
counting packets; EOP and CWSR areas sized as for a PM4 compute queue (families.queue_sizes); CREATE_QUEUE with
queue type COMPUTE_AQL and ring_size in bytes (amd-facts §9).

Submission follows ROCR's producer protocol (AqlQueue, ExecutePM4): reserve a packet index by an atomic add on
write_dispatch_id; wait while the ring is full (index - read_dispatch_id >= N); write the packet body, then its
first dword (header and setup) last, in one store (x86 stores are ordered: a release); then ring the doorbell
with the packet's index. Several threads may submit at once; each rings its own index.

Signals: an `HsaSignal` is an amd_signal_t of kind USER in uncached GTT, mapped on every GPU, whose event
mailbox and event id are those of a KFD signal event, so the packet processor's completion interrupt wakes CPU
waiters: `wait` sleeps on the event, and re-reads the value only when woken (or at long intervals, as a
guard for several waiters on one auto-reset event). A CPU `signal` stores the value, then sets the event
(ROCR's InterruptSignal). `dispatch(kernel, grid, block, *args)` runs a kernel of a loaded program as one
KERNEL_DISPATCH packet (kfdtrace.driver.aql.dispatch_packet), its kernel arguments in a slice of the queue's
kernel-argument arena (driver/kernarg_pool.py) returned once the packet is released, and scratch set up in
amd_queue_t when the kernel needs it.
"""

from __future__ import annotations

import ctypes
import struct
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from kfdtrace.driver import kfd_ioctl as K
from kfdtrace.driver.aql import (
    AQL,
    CONDITIONS,
    FULL_FENCES,
    PACKET_SIZE,
    AmdQueue,
    AmdSignal,
    QueueProperties,
    SignalCondition,
    SignalKind,
    dispatch_packet,
    pm4_ib_packet,
    unassigned,
)
from kfdtrace.driver.dispatch import Scratch
from kfdtrace.driver.errors import DeviceError, WaitTimeout
from kfdtrace.driver.families import queue_sizes
from kfdtrace.driver.kernarg_pool import KernargMemory, KernargPool, KernargSlice, KernargSource
from kfdtrace.driver.kernargs import Kernargs, Launch, pack
from kfdtrace.driver.memory import PAGE, Buffer
from kfdtrace.driver.packets import Packet
from kfdtrace.driver.pm4 import DIALECTS as PM4_DIALECTS
from kfdtrace.driver.signals import Semaphore
from kfdtrace.driver.syscalls import memory_view

if TYPE_CHECKING:
    from kfdtrace.driver.program import LoadedKernel
    from kfdtrace.driver.system import Device, System

__all__ = ["DEFAULT_PACKETS", "AqlQueue", "HsaSignal", "dispatch_packet"]

DEFAULT_PACKETS = 1024  # slots of a queue's ring (64 KiB)
MIN_PACKETS = 16  # KFD clamps smaller rings to 1024 bytes: the CP would then index 16 slots of a smaller ring
SLEEP_SLICE_MS = 1000  # longest sleep on a signal's event before its value is read again
class HsaSignal:
    """An HSA signal: an amd_signal_t (kind USER) whose completion interrupts wake CPU waiters through a KFD
    signal event. Its `handle` is what packets carry."""

    def __init__(self, system: System, value: int = 0, name: str | None = None):
        self.system, self.name = system, name
        self.buffer = system.devices[0].alloc(PAGE, "gtt", uncached=True, map_to=tuple(system.devices[1:]),
                                              name=f"signal {name or ''}".strip(), role="signal")
        self.handle = self.buffer.va
        self._signal = AmdSignal.from_address(self.buffer.cpu_addr(0))
        self.event_id = system.create_signal_event()
        if self.event_id is None:
            self.buffer.free()
            raise DeviceError("no KFD signal event left for an HSA signal (the process has 4096); free some")
        self._signal.kind = SignalKind.USER
        self._signal.event_mailbox_ptr = system.event_mailbox(self.event_id)
        self._signal.event_id = self.event_id
        self._store(value)  # recorded like any CPU store: a replay starts its copy of the signal there

    def __repr__(self) -> str:
        return f"<HsaSignal {self.label} value={self.value}>"

    @property
    def label(self) -> str:
        return repr(self.name) if self.name else f"@{self.handle:#x}"

    @property
    def value(self) -> int:
        return self._signal.value

    def signal(self, value: int) -> None:
        """CPU store of the value, then the event set, so waiters wake (ROCR InterruptSignal::StoreRelaxed)."""
        self._store(value)
        self.system.kfd.ioctl("SET_EVENT", event_id=self.event_id)

    def _store(self, value: int) -> None:
        self.system.sys.annotate("cpu_signal", addr=self.handle + AmdSignal.value.offset, value=value,
                                 name=self.name)
        self._signal.value = value

    def wait(self, value: int = 0, condition: SignalCondition = SignalCondition.EQ, timeout: float = 10.0) -> int:
        """Block until the value compares with `value` by `condition`; returns the value seen. Sleeps on the
        signal's event; raises WaitTimeout naming every queue, or GpuFault if a GPU stopped a queue."""
        compare = CONDITIONS[SignalCondition(condition)]
        deadline = time.monotonic() + timeout
        wait = {"addr": self.handle + AmdSignal.value.offset, "value": value, "condition": int(condition),
                "timeout": timeout}
        while not compare(seen := self._signal.value, value):
            self.system.raise_gpu_faults(("signal_wait", {**wait, "seen": seen}))
            left = deadline - time.monotonic()
            if left <= 0:
                self.system.sys.annotate("signal_wait", **wait, seen=seen, ok=False)
                raise WaitTimeout(f"signal {self.label} is {seen}, waited {timeout:g} s for it to be "
                                  f"{condition.name} {value}; {self.system.queue_report()}")
            self.system.wait_events([self.event_id], max(1, min(SLEEP_SLICE_MS, int(left * 1000))))
        self.system.sys.annotate("signal_wait", **wait, seen=seen, ok=True)
        return seen

    def semaphore(self) -> Semaphore:
        """The signal's value as a timeline semaphore (SDMA and PM4 queues signal and wait on it; their signal
        traps the signal's event). It owns nothing and must not outlive the signal."""
        return Semaphore.view(self.system, self.buffer, AmdSignal.value.offset, event_id=self.event_id,
                              name=self.name)

    def free(self) -> None:
        if self.buffer.handle is None:
            return
        self.system.kfd.ioctl("DESTROY_EVENT", event_id=self.event_id)
        self._signal = AmdSignal.from_buffer_copy(self._signal)  # its last state, kept: the page goes now
        self.buffer.free()


class AqlQueue:
    """One AQL ring. `submit(packet)` puts one packet on it; the helpers build and submit the usual ones."""

    kind = "aql"

    def __init__(self, device: Device, packets: int = DEFAULT_PACKETS, name: str | None = None):
        if packets < MIN_PACKETS or packets & (packets - 1):
            raise ValueError(f"an AQL ring of {packets} packets: use a power of two of at least {MIN_PACKETS}")
        self.device, self.name, self.size = device, name, packets
        self.queue_id: int | None = None
        self.pm4_dialect = PM4_DIALECTS[device.target.family.pm4_dialect]
        self.num_xcc = device.node.properties.get("num_xcc") or 1
        self.sizes = sizes = queue_sizes(device.node.properties)
        self._buffers: list[Buffer] = []
        self._lock = threading.Lock()  # the atomic add on write_dispatch_id
        # buffers packets use (kernargs, outgrown scratch): (index of the last packet using it, buffer), freed
        # once the processor has released that packet
        self._held: deque[tuple[int, Buffer | KernargSlice]] = deque()
        self.scratch = Scratch(device, self.label)
        self.kernarg_pool = KernargPool(device, self.label, self._release_held)  # allocated by the first dispatch
        try:
            self.ring = self._alloc(packets * PACKET_SIZE, "gtt", "ring", uncached=True, role="ring")
            self.ring.write(AQL.build("INVALID") * packets)
            # packets are copied in through a memoryview, keeping the GIL (see memory.GIL_COPY_BYTES)
            self._ring_bytes = memory_view(self.ring.cpu, packets * PACKET_SIZE, writable=True)
            self.amd_queue_buffer = self._alloc(PAGE, "gtt", "amd_queue", uncached=True, role="queue pointers")
            self.amd_queue = AmdQueue.from_address(self.amd_queue_buffer.cpu_addr(0))
            self.eop = self._alloc(sizes.eop_buffer_size, "vram", "eop", cpu_access=False)
            self.cwsr = self._alloc(sizes.cwsr_allocation(self.num_xcc), "vram", "cwsr", cpu_access=False)
            self._init_amd_queue()
            out = device.kfd.ioctl(
                "CREATE_QUEUE", queue_type=K.QueueType.COMPUTE_AQL, gpu_id=device.gpu_id,
                ring_base_address=self.ring.va, ring_size=packets * PACKET_SIZE,
                read_pointer_address=self.amd_queue_buffer.va + AmdQueue.read_dispatch_id.offset,
                write_pointer_address=self.amd_queue_buffer.va + AmdQueue.write_dispatch_id.offset,
                queue_percentage=100, queue_priority=7,
                eop_buffer_address=self.eop.va, eop_buffer_size=sizes.eop_buffer_size,
                ctx_save_restore_address=self.cwsr.va, ctx_save_restore_size=sizes.cwsr_size,
                ctl_stack_size=sizes.ctl_stack_size)
        except BaseException:
            self._free_buffers()
            raise
        self.queue_id = out.queue_id
        self.amd_queue.hsa_queue.id = out.queue_id
        device.sys.annotate("queue", queue_id=self.queue_id, name=self.label)
        self.doorbell = device.doorbell_page() + (out.doorbell_offset & 0x1FFF)
        device.track(self)

    def _alloc(self, size: int, domain: str, what: str, role: str = "queue context", **options) -> Buffer:
        buf = self.device.alloc(size, domain, name=f"{self.label}.{what}", role=role, **options)
        self._buffers.append(buf)
        return buf

    def _init_amd_queue(self) -> None:
        """The fields a KFD AQL queue needs (tinygrad fills the same): the hsa_queue_t part, 64-bit pointers,
        where read_dispatch_id lives. Scratch fields come with kernel dispatch."""
        q = self.amd_queue
        q.hsa_queue.features = 1  # HSA_QUEUE_FEATURE_KERNEL_DISPATCH
        q.hsa_queue.base_address = self.ring.va
        q.hsa_queue.size = self.size
        q.queue_properties = QueueProperties.IS_PTR64
        q.read_dispatch_id_field_base_byte_offset = AmdQueue.read_dispatch_id.offset
        props = self.device.node.properties  # tinygrad's values: every CU of every XCC, every wave slot of a CU
        q.max_cu_id = props["simd_count"] // props["simd_per_cu"] - 1
        q.max_wave_id = props.get("max_waves_per_simd", 8) * props["simd_per_cu"] - 1

    @property
    def label(self) -> str:
        return self.name or f"{self.kind}@{self.device.gpu_id:#x}"

    def __repr__(self) -> str:
        return f"<AqlQueue {self.label} id={self.queue_id} read={self.read_index} write={self.write_index}>"

    # -- pointers -----------------------------------------------------------------------------------
    @property
    def read_index(self) -> int:
        """read_dispatch_id: packets the processor has released."""
        return self.amd_queue.read_dispatch_id

    @property
    def write_index(self) -> int:
        """write_dispatch_id: packet indices handed out to producers."""
        return self.amd_queue.write_dispatch_id

    @property
    def idle(self) -> bool:
        return self.read_index >= self.write_index

    # -- submission ---------------------------------------------------------------------------------
    def submit(self, packet: Packet | bytes, timeout: float = 10.0) -> int:
        """Put one 64-byte packet on the ring by the producer protocol and ring the doorbell; its index."""
        data = packet.encode() if isinstance(packet, Packet) else bytes(packet)
        if len(data) != PACKET_SIZE:
            raise ValueError(f"an AQL packet is {PACKET_SIZE} bytes, not {len(data)}")
        if unassigned(data):
            raise ValueError("an INVALID packet would never be processed: the queue would wait on it for good")
        if self.queue_id is None:
            raise DeviceError(f"queue {self.label} was destroyed; make a new one with device.aql_queue()")
        with self._lock:  # the atomic add
            index = self.amd_queue.write_dispatch_id
            self.amd_queue.write_dispatch_id = index + 1
        self._wait_for_slot(index, timeout)
        at = index % self.size * PACKET_SIZE
        self._ring_bytes[at + 4:at + PACKET_SIZE] = data[4:]
        header = ctypes.c_uint32.from_address(self.ring.cpu + at)
        header.value = struct.unpack_from("<I", data)[0]  # header and setup last
        self.device.sys.doorbell_store(self.doorbell, index)
        return index

    def _wait_for_slot(self, index: int, timeout: float) -> None:
        """Wait while the ring is full: slot `index` is free once read_dispatch_id > index - size."""
        if index - self.read_index < self.size:
            return
        deadline, delay = time.monotonic() + timeout, 20e-6
        while index - self.read_index >= self.size:
            self.device.system.raise_gpu_faults()
            if time.monotonic() > deadline:
                raise WaitTimeout(f"ring of {self.label} stayed full for {timeout:g} s: {self.describe()}")
            time.sleep(delay)
            delay = min(delay * 2, 1e-3)

    # -- kernels ------------------------------------------------------------------------------------
    def dispatch(self, kernel: LoadedKernel, grid: Sequence[int] | int, block: Sequence[int] | int, *args: object,
                 completion: HsaSignal | int = 0) -> int:
        """Run `kernel` over `grid` work-items (1-3 dimensions) in workgroups of `block`, with `args` in the
        kernel's order (buffers, numpy or Python scalars, kernargs.Local(nbytes)), as one KERNEL_DISPATCH; the
        packet's index. The kernel arguments live in a slice of the kernel-argument arena returned once the packet
        is released."""
        if kernel.program.device is not self.device:
            raise ValueError(f"{kernel.name} is loaded on {kernel.program.device}, not on this queue's {self.device}")
        self._release_held()
        launch = Launch.of(grid, block)
        packet, mem = self.launch(kernel, launch, pack(kernel.kernel.metadata, args, launch), _h(completion))
        try:
            index = self.submit(packet)
        except BaseException:
            mem.free()
            raise
        with self._lock:
            self._held.append((index, mem))
        return index

    def launch(self, kernel: LoadedKernel, launch: Launch, args: Kernargs, completion: int = 0,
               kernarg: KernargSource | None = None) -> tuple[Packet, KernargMemory]:
        """The KERNEL_DISPATCH packet of `kernel` with packed kernel arguments, and the slice of the
        kernel-argument arena holding them (or the memory `kernarg(size, align)` gives, in a buffer of role
        "kernargs" for a replay to follow it; the caller frees it once the packet is released); scratch grows to
        what the kernel needs."""
        scratch = kernel.kernel.scratch
        if scratch is not None:
            self._ensure_scratch(scratch)
        size = len(args.data)
        mem = kernarg(size, args.align) if kernarg else self.kernarg_pool.alloc(size, args.align, kernel.name)
        try:
            mem.write(args.data)
        except BaseException:
            mem.free()
            raise
        return dispatch_packet(kernel.descriptor_address, launch.grid[:launch.dims], launch.block[:launch.dims],
                               mem.va, private_segment_size=scratch or 0,
                               group_segment_size=args.group_segment_size, completion_signal=completion), mem

    def _ensure_scratch(self, private_segment_size: int) -> None:
        """Scratch for the processor to hand out (amd_queue_t's scratch fields, as tinygrad fills them); an
        outgrown area is freed once the packets before are released."""
        area = self.scratch.ensure(private_segment_size, self.hold)
        q, family = self.amd_queue, self.device.target.family
        q.scratch_backing_memory_location = area.base()
        q.scratch_backing_memory_byte_size = area.buffer.size
        q.scratch_wave64_lane_byte_size = area.wave_bytes // 64
        q.compute_tmpring_size = area.tmpring(self.pm4_dialect.registers, family.gfx_major)
        q.scratch_resource_descriptor[:] = area.resource(family.gfx_major, 64)  # the CP sets the index stride

    def hold(self, buffer: Buffer | KernargSlice) -> None:
        """Free `buffer` once the processor has released the last packet submitted so far."""
        with self._lock:
            self._held.append((self.write_index - 1, buffer))

    def _release_held(self) -> None:
        with self._lock:
            while self._held and self._held[0][0] < self.read_index:
                self._held.popleft()[1].free()

    # -- packets ------------------------------------------------------------------------------------
    def barrier_and(self, signals: Sequence[HsaSignal | int] = (), completion: HsaSignal | int = 0) -> int:
        """Wait until every signal (at most 5) is 0, then signal `completion`; the packet's index."""
        return self.submit(AQL.packet("BARRIER_AND", **FULL_FENCES, **self._deps(signals),
                                      completion_signal=_h(completion)))

    def barrier_or(self, signals: Sequence[HsaSignal | int], completion: HsaSignal | int = 0) -> int:
        """Wait until some signal (at most 5) is 0, then signal `completion`; the packet's index."""
        return self.submit(AQL.packet("BARRIER_OR", **FULL_FENCES, **self._deps(signals),
                                      completion_signal=_h(completion)))

    def barrier_value(self, signal: HsaSignal | int, value: int, condition: SignalCondition = SignalCondition.GTE,
                      mask: int = (1 << 64) - 1, completion: HsaSignal | int = 0) -> int:
        """Wait until (signal value & mask) compares with `value` by `condition` (AMD BARRIER_VALUE)."""
        return self.submit(AQL.packet("BARRIER_VALUE", **FULL_FENCES, signal=_h(signal), value=value & (1 << 64) - 1,
                                      mask=mask, cond=SignalCondition(condition), completion_signal=_h(completion)))

    def pm4(self, ib: Buffer | int, size: int, completion: HsaSignal | int = 0, *, offset: int = 0) -> int:
        """Run `size` bytes of PM4 packets of this device's dialect (driver/pm4.py) held in memory (the PM4-IB
        vendor packet); the packet's index."""
        if size <= 0 or size % 4:
            raise ValueError(f"a PM4 indirect buffer holds whole dwords: {size} bytes is not a positive multiple of 4")
        va = ib + offset if isinstance(ib, int) else ib.addr(offset, size)
        return self.submit(pm4_ib_packet(self.pm4_dialect, va, size // 4, _h(completion), **FULL_FENCES))

    @staticmethod
    def _deps(signals: Sequence[HsaSignal | int]) -> dict[str, int]:
        if len(signals) > 5:
            raise ValueError(f"a barrier packet takes at most 5 signals, not {len(signals)}; chain barriers")
        return {f"dep_signal{i}": _h(s) for i, s in enumerate(signals)}

    # -- state --------------------------------------------------------------------------------------
    def packet_at(self, index: int) -> Packet | None:
        """The packet slot `index` holds now (None when it cannot be decoded)."""
        try:
            return AQL.decode(self.ring.read(index % self.size * PACKET_SIZE, PACKET_SIZE))
        except ValueError:
            return None

    def describe(self) -> str:
        """Read/write indices and the packet the processor is on, for hang and fault reports."""
        text = f"queue {self.label} (id {self.queue_id}) read={self.read_index} write={self.write_index}"
        if not self.idle:
            text += f", at: {self.packet_at(self.read_index) or 'undecodable packet'}"
        return text

    def sync(self, timeout: float = 10.0) -> None:
        """Wait until every packet submitted so far has been processed and released (a barrier-AND completing a
        signal, then its slot released)."""
        done = HsaSignal(self.device.system, 1, name=f"{self.label}.sync")
        index = self.barrier_and(completion=done)
        done.wait(0, SignalCondition.EQ, timeout)  # after a timeout the signal stays: the GPU may still write it
        done.free()
        self._wait_for_slot(index + self.size, timeout)  # the processor releases the slot right after signalling

    def destroy(self) -> None:
        with self._lock:
            if self.queue_id is None:
                return
            self.device.kfd.ioctl("DESTROY_QUEUE", queue_id=self.queue_id)
            self.queue_id = None
        self.device.untrack(self)
        self.amd_queue = AmdQueue.from_buffer_copy(self.amd_queue)  # its last state, kept: the page goes now
        self._free_buffers()

    def _free_buffers(self) -> None:
        for b in self._buffers:
            b.free()
        self._buffers = []
        while self._held:
            self._held.popleft()[1].free()
        self.scratch.free()
        self.kernarg_pool.free()


def _h(signal: HsaSignal | int) -> int:
    """A signal's handle (an int is taken as one: 0 for none)."""
    return signal.handle if isinstance(signal, HsaSignal) else signal
