"""Kernel dispatches in a replay: what each recorded dispatch asked, read off its queue's packets, and the same
dispatch re-derived for the target.

A dispatch is known by the packet that launches it: AQL's KERNEL_DISPATCH names its kernel descriptor and
kernel arguments (the `kernel` tag); PM4's DISPATCH_* starts the kernel whose entry the queue's COMPUTE_PGM
registers hold (the `launches` tag), with the workgroup size from COMPUTE_NUM_THREAD_*, its LDS from
COMPUTE_PGM_RSRC2 and its kernel arguments at the address its user SGPRs carry in the kernarg_segment_ptr slot the
descriptor enables (AMDGPUUsage "Initial Kernel Execution State"). The recorded register writes are not replayed:
the target's dispatch is built from the target's kernel descriptor (driver/dispatch.py), so the program address,
resource registers, user SGPRs, scratch and wave size are the target's own, and its kernel arguments are the
recorded ones rewritten for the target's build of the kernel (kernargs.repack: pointers relocated, hidden
arguments re-derived).
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from kfdtrace.driver.aql import AQL, PACKET_SIZE, AmdSignal, FenceScope, SignalCondition, signed64
from kfdtrace.driver.code_object_errors import BadCodeObject, CodeObjectError
from kfdtrace.driver.code_object_metadata import ADDRESS_HIDDEN, KernelArg
from kfdtrace.driver.packets import Dialect, Packet, PacketError
from kfdtrace.driver.pm4 import Cache, DataSel, IntSel, Pm4Dialect, WaitFunc
from kfdtrace.driver.sdma import AtomicOp
from kfdtrace.replay.translate import BadInput, OutsideBuffers, Relocation, ReplayError, carries_dispatch

if TYPE_CHECKING:  # kernargs (and numpy) load with the first dispatch: SDMA replays start without them
    from kfdtrace.driver.aql_queue import AqlQueue
    from kfdtrace.driver.code_object import CodeObject, Kernel
    from kfdtrace.driver.compute_queue import ComputeQueue
    from kfdtrace.driver.kernarg_pool import KernargMemory, KernargSource
    from kfdtrace.driver.kernargs import Launch
    from kfdtrace.driver.program import LoadedKernel
    from kfdtrace.traces.walk import QueueInfo

ReadMemory = Callable[[int, int], bytes | None]  # (recorded address, bytes) -> their recorded contents, if known
FREED_KERNELS = 4096  # kernel addresses of freed objects remembered, for what a refusal says
HEADER_FIELDS = ("barrier", "acquire_fence_scope", "release_fence_scope")  # an AQL packet's own, kept as recorded


@dataclass(frozen=True)
class RecordedKernel:
    """A kernel of a recorded code object: its name, its entry in that object, and the object's recorded address."""

    name: str
    kernel: Kernel
    obj: int


@dataclass(frozen=True)
class Dispatch:
    """What a recorded dispatch asked for."""

    kernel: RecordedKernel
    launch: Launch
    kernargs: int  # recorded address of its kernel arguments (0: none)
    group_segment_size: int  # LDS bytes of each workgroup, static and dynamic
    packet: Packet  # the packet that launched it

    @property
    def arguments(self) -> tuple[int, int]:
        """Its recorded kernel arguments: (address, bytes)."""
        return self.kernargs, self.kernel.kernel.metadata.kernarg_segment_size


class RecordedKernels:
    """The kernels of the code objects a trace has loaded so far, by descriptor and by entry address."""

    def __init__(self) -> None:
        self.by_descriptor: dict[int, RecordedKernel] = {}
        self.by_entry: dict[int, RecordedKernel] = {}
        self.objects: dict[int, CodeObject] = {}  # recorded va -> the object as recorded
        # descriptor and entry addresses of the kernels of objects freed since -> what they were (the latest
        # FREED_KERNELS), for what a refusal of a dispatch of one says
        self.freed: dict[int, str] = {}

    def loaded(self, f: dict, data: bytes, where: str) -> CodeObject:
        """A code_object record's fields and its bytes: its kernels are known from now on."""
        from kfdtrace.driver.code_object import load  # here: a replay without kernels starts without pyelftools

        try:
            obj = load(data, f["target"].split(":")[0])
        except BadCodeObject as exc:  # the recording loaded it: its blob is no code object now
            raise BadInput(f"{where}: the recorded code object is not one ({exc}) (corrupt trace)") from None
        except (CodeObjectError, ValueError) as exc:
            raise ReplayError(f"{where}: the recorded code object does not load for its own target {f['target']}: "
                              f"{exc}") from None
        self.unloaded(f["va"])
        self.objects[f["va"]] = obj
        for name, k in obj.kernels.items():
            rk = RecordedKernel(name, k, f["va"])
            self.by_descriptor[f["va"] + k.descriptor_offset] = rk
            self.by_entry[f["va"] + k.entry_offset] = rk
            self.freed.pop(f["va"] + k.descriptor_offset, None)
            self.freed.pop(f["va"] + k.entry_offset, None)
        return obj

    def unloaded(self, va: int) -> None:
        obj = self.objects.pop(va, None)
        if obj is not None:
            for name, k in obj.kernels.items():
                self.by_descriptor.pop(va + k.descriptor_offset, None)
                self.by_entry.pop(va + k.entry_offset, None)
                for at in (va + k.descriptor_offset, va + k.entry_offset):
                    self.freed[at] = f"{name} of the code object loaded at {va:#x}, which was freed before"
                    if len(self.freed) > FREED_KERNELS:
                        del self.freed[next(iter(self.freed))]

    def unknown(self, what: str, at: int | None) -> str:
        """What is said of a dispatch of the kernel `what` ("kernel descriptor", "kernel entry") at `at` (None: the
        registers give none) that no loaded object holds."""
        if at is None:
            return f"the {what} COMPUTE_PGM holds, which no code object the trace loaded holds"
        freed = self.freed.get(at)
        return f"{what} {at:#x}, which no code object the trace loaded holds" if freed is None else \
            f"{what} {at:#x}: {freed} (a GPU runs it from freed memory, and faults there; a replay cannot re-derive it)"


class DispatchReader:
    """A queue's recorded dispatches, read off its packets (PM4 register writes followed as the queue ran them)."""

    def __init__(self, dialect: Dialect, kernels: RecordedKernels, read: ReadMemory):
        self.dialect, self.kernels, self.read = dialect, kernels, read
        self.registers: dict[str, int] = {}  # SH register name -> value, as the queue's packets set them

    def dispatch(self, p: Packet, where: str) -> Dispatch | None:
        """The dispatch `p` launches; None for a packet that only sets registers (noted)."""
        d = p.defn
        if d.kernel is not None:
            return self._aql(p, where)
        if d.launch_field is not None:
            return self._pm4(p, where)
        self.registers.update(p.registers())
        return None

    def _aql(self, p: Packet, where: str) -> Dispatch:
        f = p.fields
        descriptor, kernargs = (f[n] for n in p.defn.kernel)
        kernel = self._known(self.kernels.by_descriptor.get(descriptor), "kernel descriptor", descriptor, p, where)
        launch = _launch(tuple(f[f"grid_size_{a}"] for a in "xyz"), tuple(f[f"workgroup_size_{a}"] for a in "xyz"),
                         f["dimensions"], p, where)
        return Dispatch(kernel, launch, kernargs, f["group_segment_size"], p)

    def _pm4(self, p: Packet, where: str) -> Dispatch:
        if p.name != "DISPATCH_DIRECT":
            raise ReplayError(f"{where}: {p.name} at byte {p.offset:#x}: only DISPATCH_DIRECT is replayed (its "
                              f"workgroup counts are in memory the replay cannot follow yet)")
        dialect = self.dialect
        assert isinstance(dialect, Pm4Dialect)
        entry = dialect.entry(self.registers)
        kernel = self._known(self.kernels.by_entry.get(entry) if entry is not None else None, "kernel entry", entry,
                             p, where)
        table, regs = dialect.registers, self.registers
        try:
            threads = [table[f"COMPUTE_NUM_THREAD_{a}"].decode(regs[f"COMPUTE_NUM_THREAD_{a}"]) for a in "XYZ"]
            lds = table["COMPUTE_PGM_RSRC2"].decode(regs["COMPUTE_PGM_RSRC2"])["lds_size"]
        except KeyError as exc:
            raise ReplayError(f"{where}: {p.name} at byte {p.offset:#x} launches {kernel.name} before the queue set "
                              f"{exc.args[0]}") from None
        groups = [p.fields[f"dim_{a}"] for a in "xyz"]
        block = tuple(t["num_thread_full"] for t in threads)
        grid = tuple((g - 1) * b + t["num_thread_partial"] if t["num_thread_partial"] else g * b
                     for g, b, t in zip(groups, block, threads, strict=True))
        kernargs = self._user_pointer(kernel, "kernarg_segment_ptr", where, p)
        # what the dispatch asked for beyond what the registers say: its dimensions, its LDS bytes (RSRC2 holds
        # them rounded up to the granule), from the AQL packet its dispatch_ptr names, else its hidden arguments
        packet = self._dispatch_packet(kernel, where, p)
        asked = packet["dimensions"] if packet is not None else self._recorded(kernel, kernargs, "hidden_grid_dims")
        dims = asked if asked is not None and 1 <= asked <= 3 else \
            max([1] + [i + 1 for i in range(3) if grid[i] > 1 or block[i] > 1])
        granule = kernel.kernel.descriptor.layout.lds_granule
        total = lds * granule
        dynamic = self._recorded(kernel, kernargs, "hidden_dynamic_lds_size")
        asked = packet["group_segment_size"] if packet is not None else None if dynamic is None else \
            kernel.kernel.metadata.group_segment_fixed_size + dynamic
        if asked is not None and total - granule < asked <= total:
            total = asked
        return Dispatch(kernel, _launch(grid, block, dims, p, where), kernargs, total, p)

    def _user_pointer(self, kernel: RecordedKernel, name: str, where: str, p: Packet) -> int:
        """The pointer in the user SGPRs `name` of the registers set (0 when the kernel's descriptor does not enable
        them)."""
        at = 0
        for sgprs, count in kernel.kernel.descriptor.user_sgprs:
            if sgprs == name:
                words = [self.registers.get(r.name) for r in self.dialect.registers.user_data[at:at + 2]]
                if None in words or len(words) < 2:
                    raise ReplayError(f"{where}: {p.name} at byte {p.offset:#x} launches {kernel.name} without its "
                                      f"{name} in COMPUTE_USER_DATA_{at}..{at + 1}")
                return words[0] | words[1] << 32
            at += count
        return 0

    def _dispatch_packet(self, kernel: RecordedKernel, where: str, p: Packet) -> dict[str, int] | None:
        """The fields of the AQL dispatch packet the kernel's dispatch_ptr user SGPRs point at, when it takes one
        and the trace holds it."""
        va = self._user_pointer(kernel, "dispatch_ptr", where, p)
        data = self.read(va, PACKET_SIZE) if va else None
        try:
            packet = AQL.decode(data) if data is not None else None
        except PacketError:
            return None
        return packet.fields if packet is not None and packet.name == "KERNEL_DISPATCH" else None

    def _recorded(self, kernel: RecordedKernel, kernargs: int, kind: str) -> int | None:
        """The recorded kernel arguments' hidden argument `kind`, when the kernel takes it and the trace holds it."""
        arg = kernel.kernel.metadata.hidden_args.get(kind)
        data = self.read(kernargs + arg.offset, arg.size) if arg is not None and kernargs else None
        return int.from_bytes(data, "little") if data else None

    def _known(self, kernel: RecordedKernel | None, what: str, at: int | None, p: Packet, where: str) -> RecordedKernel:
        """`kernel`, the one the packet runs at address `at` (its `what`); ReplayError when no object holds one."""
        if kernel is None:
            raise ReplayError(f"{where}: {p.name} at byte {p.offset:#x} runs {self.kernels.unknown(what, at)}")
        return kernel

    def kernargs(self, d: Dispatch, where: str) -> bytes:
        """The recorded kernel arguments of `d` (ReplayError when the trace does not hold them)."""
        size = d.kernel.kernel.metadata.kernarg_segment_size
        if not size:
            return b""
        data = self.read(d.kernargs, size) if d.kernargs else None
        if data is None:
            raise ReplayError(f"{where}: the {size} bytes of kernel arguments of {d.kernel.name} at {d.kernargs:#x} "
                              f"are not in a buffer the trace recorded the contents of")
        return data

    def check_pointers(self, d: Dispatch, where: str, relocation: Relocation) -> list[tuple[int, bool]]:
        """The non-null pointer arguments of `d`, each with whether the kernel only reads through it; OutsideBuffers
        when one lies where no address moves (in no recorded buffer)."""
        from kfdtrace.driver.kernargs import PointerOutsideBuffers, pointers

        meta = d.kernel.kernel.metadata
        out = []
        for ptr in pointers(meta, self.kernargs(d, where)):
            if ptr.value and relocation.move_pointer(ptr.value) is None:
                why = relocation.unplaced(ptr.value) or "outside every recorded buffer"
                raise OutsideBuffers(f"{where}: {d.packet.name} at byte {d.packet.offset:#x}: "
                                     f"{PointerOutsideBuffers.of(meta, ptr, why)}; refusing to submit it")
            if ptr.value:
                out.append((ptr.value, ptr.arg.read_only))
        return out


def _launch(grid: tuple[int, ...], block: tuple[int, ...], dims: int, p: Packet, where: str) -> Launch:
    """The recorded launch; ReplayError when no GPU could run it (a size of 0, dimensions outside 1..3)."""
    from kfdtrace.driver.kernargs import KernargError, Launch

    try:
        Launch.of(grid, block)  # each size positive and within what a dispatch can ask
    except KernargError as exc:
        raise ReplayError(f"{where}: {p.name} at byte {p.offset:#x}: {exc}") from None
    if not 1 <= dims <= 3:
        raise ReplayError(f"{where}: {p.name} at byte {p.offset:#x}: a launch of {dims} dimensions (1 to 3)")
    return Launch(grid, block, dims)


def relaunch(d: Dispatch, data: bytes, kernel: LoadedKernel, move: Callable[[int], int | None],
             where: str) -> tuple[Launch, object]:
    """The launch and the kernel arguments of `d` rewritten for `kernel` (the target's build of it)."""
    from kfdtrace.driver.kernargs import KernargError, repack

    try:
        return d.launch, repack(d.kernel.kernel.metadata, data, kernel.kernel.metadata, d.launch,
                                d.group_segment_size, move)
    except KernargError as exc:
        raise ReplayError(f"{where}: {d.packet.name} at byte {d.packet.offset:#x}: {exc}") from None


class AqlRing:
    """An AQL queue driven as the replay drives a ring: `emit` packets, `submit` them, read and write indices as
    its pointers."""

    dialect = AQL

    def __init__(self, queue: AqlQueue, timeout: float):
        self.queue, self.timeout = queue, timeout
        self._pending: list[bytes] = []

    @property
    def device(self):
        return self.queue.device

    @property
    def wptr(self) -> int:
        return self.queue.write_index

    @property
    def rptr(self) -> int:
        return self.queue.read_index

    @property
    def idle(self) -> bool:
        return self.queue.idle

    @property
    def waiting(self) -> bool:
        """Whether the processor stands at a barrier packet (which waits on its dependency signals)."""
        p = None if self.queue.idle else self.queue.packet_at(self.queue.read_index)
        return p is not None and AQL.waits(p.defn)

    def blocked(self, load: Callable[[int, int], int | None]) -> bool:
        """Whether the processor stands at a barrier packet whose dependency signals, read by `load(address,
        bytes)`, do not let it complete now (AqlDialect.passes; unreadable ones count as blocking)."""
        p = self.queue.packet_at(self.queue.read_index) if self.waiting else None
        if p is None:
            return False
        offset = AmdSignal.value.offset

        def value(handle: int) -> int | None:
            v = load(handle + offset, 8)
            return None if v is None else signed64(v)
        try:
            return AQL.passes(p, value) is not True
        except ValueError:  # a condition hsa.h does not define: the processor stops the queue on it
            return False

    def packets(self, start: int, end: int) -> list[Packet]:
        """The packets the queue holds from index `start` up to `end` (none when one does not decode)."""
        found = [self.queue.packet_at(i) for i in range(start, end)]
        return [] if None in found else found

    def emit(self, data: bytes) -> None:
        self._pending.append(data)

    def submit(self) -> None:
        data, self._pending = b"".join(self._pending), []
        for at in range(0, len(data), PACKET_SIZE):
            self.queue.submit(data[at:at + PACKET_SIZE], self.timeout)

    def launch(self, kernel: LoadedKernel, launch: Launch, args, packet: Packet, move: Callable[[int], int],
               kernarg: KernargSource | None = None) -> tuple[bytes, list[KernargMemory]]:
        """A recorded KERNEL_DISPATCH `packet` for the target: its header and completion signal as recorded
        (relocated), the rest the target's; and what to free once the queue is past it (its kernel arguments,
        in the memory `kernarg(size, align)` gives, else the queue's)."""
        out, mem = self.queue.launch(kernel, launch, args, move(packet.fields["completion_signal"]), kernarg)
        return out.replace(**{n: packet.fields[n] for n in HEADER_FIELDS}).encode(), [mem]

    def describe(self) -> str:
        return self.queue.describe()

    def destroy(self) -> None:
        self.queue.destroy()


class Pm4OnAql(AqlRing):
    """A recorded PM4 queue replayed on an AQL queue (--queue-type aql): each submission's packets, translated for
    the target's PM4 dialect, run from an indirect buffer one PM4-IB packet calls, its barrier bit set, so the
    submissions run in order as on a ring; dispatches are the target's PM4 dispatches (pm4_launch), their
    scratch and kernel arguments the AQL queue's."""

    def __init__(self, queue: AqlQueue, timeout: float):
        super().__init__(queue, timeout)
        self.dialect = queue.pm4_dialect  # what the translator writes, and indirect buffers are padded with
        self._dispatches = 0
        self._held: list[KernargMemory] = []  # what the next submission's packets use

    @property
    def waiting(self) -> bool:
        return False  # a wait inside an indirect buffer does not show at the AQL read index

    def submit(self) -> None:
        data, self._pending = b"".join(self._pending), []
        if not data:
            return
        q = self.queue
        ib = q.device.alloc(max(len(data), 4096), "gtt", name=f"{q.label} PM4 IB", role="replay indirect buffer")
        ib.write(data)
        q.pm4(ib, len(data))
        for buffer in [ib, *self._held]:  # until the processor has released the PM4-IB packet
            q.hold(buffer)
        self._held = []

    def launch(self, kernel: LoadedKernel, launch: Launch, args, kernarg: KernargSource | None = None) -> bytes:
        """The target's PM4 packets of one dispatch, to emit next (as ComputeQueue.launch gives them)."""
        from kfdtrace.driver.dispatch import pm4_launch

        q, size = self.queue, kernel.kernel.scratch
        scratch = None if size is None else q.scratch.ensure(size, q.hold)

        def held(size: int, align: int) -> KernargMemory:
            self._held.append(mem := q.kernarg_pool.alloc(size, align, kernel.name))
            return mem
        self._dispatches += 1
        return pm4_launch(self.dialect, kernel, launch, args, scratch, kernarg or held, self._dispatches, q.num_xcc)




class DispatchAccess:
    """What a trace's dispatches read and may write, for the tools that follow a trace (dump, trim): a
    dispatch reads its kernel arguments and the buffers its pointer arguments point into, and may write those not
    const or read-only (the code object's metadata). Kernels come from the code_object records given to `loaded`;
    each queue's PM4 register writes are followed packet by packet, so every packet of every submission is to be
    shown to `of`, in order."""

    def __init__(self, read: ReadMemory):
        self.kernels = RecordedKernels()
        self.read = read
        # each queue's reader (a queue id comes back for another queue, maybe of another dialect): by the
        # queue's QueueInfo, which the entry keeps alive
        self._readers: dict[int, tuple[QueueInfo, DispatchReader]] = {}

    def loaded(self, f: dict, data: bytes, where: str) -> None:
        """A code_object record's fields and bytes (an object that does not load leaves its kernels unknown)."""
        try:
            self.kernels.loaded(f, data, where)
        except (ReplayError, BadInput):
            self.kernels.unloaded(f["va"])

    def of(self, queue: QueueInfo, p: Packet, where: str) -> Access | None:
        """What the dispatch `p` launches on recorded queue `queue` reads and may write; None for a packet that
        launches none. ReplayError (or KernargError) when its kernel or arguments are unknown."""
        from kfdtrace.driver.kernargs import pointers

        if not carries_dispatch(p.defn):
            return None
        known = self._readers.get(id(queue))
        if known is not None and known[0] is queue:
            reader = known[1]
        else:
            assert queue.dialect is not None
            reader = DispatchReader(queue.dialect, self.kernels, self.read)
            self._readers[id(queue)] = queue, reader
        d = reader.dispatch(p, where)
        if d is None:
            return None
        data = reader.kernargs(d, where)
        meta = d.kernel.kernel.metadata
        args = [a for a in pointers(meta, data) if a.value]
        hidden = [word(data, a.offset) for a in meta.args if a.value_kind in ADDRESS_HIDDEN and a.size == 8]
        writes = [a.value for a in args if not a.arg.read_only] + [v for v in hidden if v]
        return Access((d.kernargs, data) if d.kernargs else None,
                      [d.kernargs] * bool(d.kernargs) + [a.value for a in args], writes,
                      tuple(v for v in (word(data, at) for at in meta.by_value_words) if v),
                      tuple((a, data[a.offset:a.offset + a.size]) for a in meta.explicit_args))


def word(data: bytes, at: int) -> int:
    """The 8-byte word at `at` of kernel arguments `data` (0 past their end)."""
    return int.from_bytes(data[at:at + 8], "little") if at + 8 <= len(data) else 0


class Access(NamedTuple):
    """What a dispatch reads and may write: its kernel arguments (address and bytes), the addresses it reads (the
    kernel arguments' and those its pointer arguments hold), those it may write (the pointers not const or
    read-only, and the hidden arguments holding an address), and the 8-byte words of its by-value arguments (a
    struct may hold pointers: where they land in a buffer, the kernel may write it), and its explicit arguments."""

    kernargs: tuple[int, bytes] | None
    reads: list[int]
    writes: list[int]
    values: tuple[int, ...] = ()
    arguments: tuple[tuple[KernelArg, bytes], ...] = ()  # each explicit argument with its bytes


class AqlOnPm4:
    """A recorded AQL queue replayed on a PM4 compute queue (--queue-type pm4): each recorded AQL packet becomes
    the PM4 packets doing what the packet processor does with it (every packet goes to `convert`, the translator's
    dispatcher), in order on one ring, each waiting for the one before (CS_PARTIAL_FLUSH ends a dispatch), so the
    barrier bit always holds:

    - KERNEL_DISPATCH: the target's PM4 dispatch (pm4_launch), its scratch and kernel arguments this queue's;
    - BARRIER_AND, and BARRIER_OR with one dependency: a 64-bit wait (WAIT_REG_MEM64) for each dependency
      signal's value to be 0;
    - BARRIER_VALUE: the same wait on (value & mask) by its condition; LT and GTE compare signed, PM4 unsigned, so
      they are taken only where the two agree (mask bit 63 clear, operand not negative).

    An acquire fence needs nothing more: each dispatch starts by invalidating the shader caches (pm4_launch).
    Then the packet's completion: with a system-scope release, an L2 write-back the CP waits for (ACQUIRE_MEM); the
    completion signal's value decremented (ATOMIC_MEM, TC_OP SUB64); and, when the signal has an event mailbox,
    its event id written there with the interrupt that wakes its waiters (RELEASE_MEM), as the processor does
    (emulator/aql.py). The mailbox and event id are read from the signal when the packet is translated (the
    replay points each signal at its own event before it is used). `refusal` says which packets cannot be so
    replayed; the survey asks it before anything is submitted."""

    def __init__(self, queue: ComputeQueue, read: ReadMemory):
        self.queue, self.read = queue, read
        self.dialect = queue.dialect  # indirect buffers are padded with its NOPs

    @property
    def device(self):
        return self.queue.device

    @property
    def wptr(self) -> int:
        return self.queue.wptr

    @property
    def rptr(self) -> int:
        return self.queue.rptr

    @property
    def idle(self) -> bool:
        return self.queue.idle

    @property
    def waiting(self) -> bool:
        return self.queue.waiting

    def blocked(self, load: Callable[[int, int], int | None]) -> bool:
        return self.queue.blocked(load)

    def packets(self, start: int, end: int) -> list[Packet]:
        return self.queue.packets(start, end)

    def emit(self, data: bytes) -> None:
        self.queue.emit(data)

    def submit(self) -> None:
        self.queue.submit()

    def describe(self) -> str:
        return self.queue.describe()

    def destroy(self) -> None:
        self.queue.destroy()

    @staticmethod
    def refusal(p: Packet) -> str | None:
        """Why the AQL packet `p` cannot be replayed on a PM4 queue (None: it can)."""
        f = p.fields
        for scope in ("acquire_fence_scope", "release_fence_scope"):
            if f[scope] > FenceScope.SYSTEM:
                return f"{p.name} {scope}={f[scope]} (not a fence scope)"
        if p.name in ("BARRIER_AND", "KERNEL_DISPATCH"):
            return None
        if p.name == "BARRIER_OR":
            waited = [h for h in AQL.dependencies(p) if h]
            return None if len(waited) == 1 else \
                f"BARRIER_OR with {len(waited)} dependency signals (a PM4 queue waits on one word at a time)"
        if p.name == "BARRIER_VALUE":
            if not f["signal"]:
                return "BARRIER_VALUE without a signal"
            if f["cond"] not in _WAIT_FUNCS:
                return f"BARRIER_VALUE cond={f['cond']} is not a signal condition"
            if f["cond"] in _SIGNED and (f["mask"] >> 63 or f["value"] >> 63):
                return (f"BARRIER_VALUE {SignalCondition(f['cond']).name} on a value or mask with bit 63 set (a "
                        f"signed comparison, where PM4's is unsigned)")
            return None
        return f"{p.name} (no PM4 form; replay it on an AQL queue)"

    def convert(self, p: Packet, move: Callable[[int], int]) -> bytes:
        """The PM4 packets of AQL packet `p` (not a dispatch: `launch` makes those), addresses moved by `move`."""
        why = self.refusal(p)
        if why is not None:
            raise ReplayError(why)
        build = self.dialect.build
        out = [build("WAIT_REG_MEM64", function=func, mem_space=1, addr=move(h) + _VALUE, reference=ref, mask=mask)
               for h, ref, mask, func in self.waits(p)]
        return b"".join(out) + self._completion(p, move)

    @staticmethod
    def waits(p: Packet) -> list[tuple[int, int, int, int]]:
        """The waits of AQL packet `p`'s PM4 form, each a WAIT_REG_MEM64 on (signal handle, reference, mask,
        function): one for each dependency of a barrier, one for BARRIER_VALUE's condition, none for a dispatch."""
        f = p.fields
        if p.name == "BARRIER_VALUE":
            return [(f["signal"], f["value"], f["mask"], _WAIT_FUNCS[f["cond"]])]
        return [(h, 0, _ALL, WaitFunc.EQ) for h in AQL.dependencies(p) if h]

    def launch(self, kernel: LoadedKernel, launch: Launch, args, packet: Packet, move: Callable[[int], int],
               kernarg: KernargSource | None = None) -> tuple[bytes, list[KernargMemory]]:
        """The target's PM4 packets of a recorded KERNEL_DISPATCH `packet` and its completion; nothing for the
        caller to free (the compute queue holds the kernel arguments until its engine is past them)."""
        return self.queue.launch(kernel, launch, args, kernarg) + self._completion(packet, move), []

    def _completion(self, p: Packet, move: Callable[[int], int]) -> bytes:
        build, out = self.dialect.build, []
        if p.fields["release_fence_scope"] == FenceScope.SYSTEM:
            out.append(build("ACQUIRE_MEM", **self._write_back))
        handle = AQL.completion(p)
        if handle:
            data = self.read(handle, ctypes.sizeof(AmdSignal))
            if data is None:
                raise ReplayError(f"{p.name}: its completion signal at {handle:#x} is not in a CPU-visible buffer")
            signal = AmdSignal.from_buffer_copy(data)
            out.append(build("ATOMIC_MEM", atomic=AtomicOp.SUB64, addr=move(handle) + _VALUE, src_data=1))
            if signal.event_mailbox_ptr:
                out.append(build("RELEASE_MEM", data_sel=DataSel.DATA32, addr=signal.event_mailbox_ptr,
                                 data=signal.event_id, int_sel=IntSel.INTERRUPT_AFTER_WRITE_CONFIRM,
                                 int_ctxid=signal.event_id))
        return b"".join(out)

    @functools.cached_property
    def _write_back(self) -> dict[str, int]:
        """ACQUIRE_MEM fields writing L2 back, over the whole address range."""
        d = self.dialect
        return {**d.cache.write("ACQUIRE_MEM", {Cache.L2_WB}), "coher_size": d["ACQUIRE_MEM"]["coher_size"].mask}


_VALUE = AmdSignal.value.offset  # amd_signal_t's 64-bit value, which the processor decrements
_ALL = (1 << 64) - 1
# hsa_signal_condition_t -> the WAIT_REG_MEM64 function comparing so; LT and GTE are signed in HSA
_WAIT_FUNCS = {SignalCondition.EQ: WaitFunc.EQ, SignalCondition.NE: WaitFunc.NE, SignalCondition.LT: WaitFunc.LT,
               SignalCondition.GTE: WaitFunc.GE}
_SIGNED = (SignalCondition.LT, SignalCondition.GTE)
