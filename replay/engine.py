"""Replaying a trace: objects recreated on the target, packets relocated and retargeted, CPU writes, signals and
event activity applied at their place in the stream, checkpoints verified, every queue drained.

A trace is read twice. The first pass (`survey`) translates every submission with the recorded addresses, so
anything the target cannot run, and any packet address outside every recorded buffer, is reported before
anything is submitted; it also works out what every instance needs (buffer names, the peak memory per target
GPU, the events a program waits on). The second pass (`Instance.run`) replays. Each instance has its own
buffers, queues, events and address map, so several run at once on one System.

Recorded objects are known by their creation, not by kernel ids that get reused: a queue id, buffer handle,
buffer address or event id names the object created last with it, until the trace destroys that object.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kfdtrace.driver import kfd_ioctl as K
from kfdtrace.driver.aql import AQL, CONDITIONS, PACKET_SIZE, AmdSignal, SignalCondition, SignalKind, assigned
from kfdtrace.driver.errors import EMULATOR_LOG, NOT_EMULATED, AddressInUse, DeviceError, GpuFault, WaitTimeout
from kfdtrace.driver.memory import PAGE, Buffer
from kfdtrace.driver.packets import MAX_IB_DEPTH, Dialect, Packet, PacketError
from kfdtrace.driver.pm4 import DIALECTS as PM4_DIALECTS
from kfdtrace.driver.ranges import RangeMap
from kfdtrace.driver.ring_queue import RingQueue, ring_units, valid_ring_size
from kfdtrace.driver.sdma import DIALECTS
from kfdtrace.driver.sdma_queue import ENGINE_KINDS
from kfdtrace.driver.signals import POLL_SLICE_MS, Event, Semaphore
from kfdtrace.driver.syscalls import memory_view
from kfdtrace.driver.system import Device, System
from kfdtrace.replay.argument_spans import ArgumentSpans, Dispatched, Late, LateCursor
from kfdtrace.replay.code_objects import CodeObjectOptions, check_options, choose, missing_message, unfit, unfit_message
from kfdtrace.replay.compute import AqlOnPm4, AqlRing, Dispatch, DispatchReader, Pm4OnAql, RecordedKernels, relaunch
from kfdtrace.replay.dispatch_memo import DispatchMemo, InPlace, KernargStore, NotInPlace, Piece, RecordedMemory
from kfdtrace.replay.occupancy import Occupancy, Sampler, queue_label
from kfdtrace.replay.status import (  # noqa: F401 (the engine's API names them)
    EXIT_BAD_INPUT,
    EXIT_DIVERGED,
    EXIT_HANG,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_UNSUPPORTED,
)
from kfdtrace.replay.translate import (
    BadInput,
    OutsideBuffers,
    Relocation,
    ReplayError,
    TranslationCache,
    Translator,
    Write,
    carries_dispatch,
)
from kfdtrace.traces import records as R
from kfdtrace.traces.contents import EVENT_PAGE, SIGNAL
from kfdtrace.traces.format import Record, TraceError, TraceReader
from kfdtrace.traces.walk import indirect_dialect

if TYPE_CHECKING:  # kernargs (and numpy) load with the first dispatch
    from kfdtrace.driver.code_object import CodeObject
    from kfdtrace.driver.kernarg_pool import KernargSource
    from kfdtrace.driver.kernargs import Kernargs, Launch
    from kfdtrace.driver.program import LoadedKernel, Program

INTERNAL_ROLES = frozenset({"ring", "queue pointers", EVENT_PAGE})  # the replayer's own queues have theirs
# Where a domain's bytes live on the target (doorbell and MMIO pages are the device's, and not replayed).
POOLS = {"vram": "VRAM", "gtt": "host", "userptr": "host"}
FOLLOWED_BYTES = 64 << 20  # the largest buffer of another role than kernargs whose CPU writes the survey follows
Pool = tuple[str, int | None]  # ("VRAM", target device index) or HOST
HOST: Pool = ("host", None)
EVENTS: Pool = ("events", None)  # KFD signal events, a per-process limit
# recorded SDMA queue type -> the engine kind the driver asks for (an engine picked by id becomes any engine)
SDMA_KINDS = {qtype: kind for kind, qtype in ENGINE_KINDS.items()} | {K.QueueType.SDMA_BY_ENG_ID: "sdma"}
# recorded queue type -> (the dialects its packets may be in, the target family's dialect of that kind)
QUEUE_DIALECTS: dict[int, tuple[dict[str, Dialect], Callable[[Device], str]]] = {
    **dict.fromkeys(SDMA_KINDS, (DIALECTS, lambda dev: dev.target.family.sdma_dialect)),
    K.QueueType.COMPUTE: (PM4_DIALECTS, lambda dev: dev.target.family.pm4_dialect),
    K.QueueType.COMPUTE_AQL: ({AQL.name: AQL}, lambda dev: AQL.name),
}
CODE = "code"  # the role of a code object's buffer: a replay loads the object for its target instead
AQL_SIGNALS_SINCE = (2, 2)  # the format version from which an AQL signal's initial value is recorded
REPLAYED_EVENTS = frozenset({K.EventType.SIGNAL})  # the replay's System makes its own exception events
SHARED_CACHES = 16  # queues whose survey translations the run reuses (each cache is bounded on its own)
WAIT_SLACK = 4  # a wait the recording saw complete may take this many times as long in a replay before a hang
MAX_WAIT_LIMIT = 3600.0  # seconds a wait may take beyond --timeout for what the recording's took
MAX_IB_COPY_BYTES = 64 << 20  # translated indirect buffer copies one submission may make
# timed-out waits the survey follows (pending and retried, each): beyond, a timeout counts as the hang it was
# taken for (a trace is untrusted: millions of them must not cost the memory of millions)
MAX_RETRIES = 1 << 16
# what to do when buffers cannot move (a relocation hazard, a fault where a moved buffer was)
IN_PLACE = "replay one instance with --relocate auto on a target where the buffers keep their addresses"
RECENT_RING_BYTES = 4 << 20  # recorded ring bytes a queue keeps of its latest submissions (where a destroy stood)
# how long every queue must stand still at a wait that does not pass before a held-back write into kernel
# arguments goes ahead (Instance._hold): what could let it pass is the CPU's, or a queue that is not standing
HOLD_QUIET = 0.005


def handled(cls: type) -> frozenset[str]:
    """The record types a pass reads: those it has an `_on_<type>` for."""
    return frozenset(t for t in R.RECORD_TYPES if hasattr(cls, f"_on_{t}"))


@contextlib.contextmanager
def recorded_arguments(r: Record) -> Iterator[None]:
    """Arguments a driver call takes from record `r` and refuses (ValueError) are bad input."""
    try:
        yield
    except ValueError as exc:
        raise BadInput(f"record {r.n} ({r.type}): {exc} (corrupt trace)") from None


class Halted(BaseException):
    """The instance was told to stop (`Instance.halt`): another on the same replay was interrupted."""


class TargetRefused(ReplayError):
    """The target refused a request the survey could not foresee (the kernel's own limits)."""


@dataclass
class Options:
    relocate: str = "auto"  # auto: recorded address when free; always: move every buffer; never: refuse to move
    timeout: float = 10.0
    verify: bool = True
    gpu_map: dict[int, int] | None = None  # recorded GPU index -> target device index
    timed: bool = False  # note when each record was done (Result.times), for a timeline of the replay
    code_objects: CodeObjectOptions | None = None  # objects given for targets the recorded ones do not fit
    queue_type: str | None = None  # "aql" / "pm4": compute queues replay on queues of that kind (None: as recorded)


@dataclass
class Divergence:
    checkpoint: int
    buffer: str
    va: int
    offset: int
    length: int
    expected: bytes | None
    actual: bytes
    writer: str | None  # the submission and packet that last wrote the first byte that differs

    def describe(self) -> str:
        at = self._differing()
        text = (f"checkpoint {self.checkpoint}: buffer {self.buffer} differs in bytes [{at[0]:#x}, {at[1]:#x})" +
                (f" of its chunk [{self.offset:#x}, {self.offset + self.length:#x})" if at[1] - at[0] < self.length
                 else ""))
        if self.expected is not None:
            text += "; " + self._first_difference(self.expected)
        if self.writer:
            text += f"; it appeared after {self.writer}"
        return text

    def first_differing(self) -> int:
        """The offset in the buffer of the first byte that differs (the chunk's start when the recorded content is
        not known)."""
        return self._differing()[0]

    def _differing(self) -> tuple[int, int]:
        """The bytes from the first that differs to the last, as offsets in the buffer (the whole chunk when the
        recorded content is not known)."""
        expected, actual = self.expected, self.actual
        if expected is None or len(expected) != len(actual) or expected == actual:
            return self.offset, self.offset + self.length
        first = next(i for i, (a, b) in enumerate(zip(expected, actual, strict=True)) if a != b)
        last = next(i for i in range(len(actual) - 1, -1, -1) if expected[i] != actual[i])
        return self.offset + first, self.offset + last + 1

    def _first_difference(self, expected: bytes) -> str:
        """Where the recorded content and the replay's first differ (the content may not be the hashed one)."""
        first = next((i for i, (a, b) in enumerate(zip(expected, self.actual, strict=False)) if a != b), None)
        if first is None:
            return (f"the recorded content ({len(expected)} bytes) does not match its hash" if len(expected) ==
                    len(self.actual) else f"the recorded content has {len(expected)} bytes, not {len(self.actual)}")
        lo = first - first % 16
        return (f"first at +{self.offset + first:#x}: expected {expected[lo:lo + 16].hex(' ')}"
                f" got {self.actual[lo:lo + 16].hex(' ')}")

    def to_dict(self) -> dict:
        return {"checkpoint": self.checkpoint, "buffer": self.buffer, "va": self.va, "offset": self.offset,
                "length": self.length, "writer": self.writer, "message": self.describe()}


@dataclass
class Result:
    submissions: int = 0
    packets: int = 0
    checkpoints: int = 0
    verified: int = 0
    racy: int = 0  # buffers a checkpoint did not hash: a race between queues decided them when recorded
    unread: int = 0  # checkpoint entries of buffers the replay's CPU cannot read (not compared)
    divergence: Divergence | None = None
    difference: str | None = None  # a difference that is not a buffer's (a wait the recording timed out on)
    went_on: bool = False  # a wait the program went on from timed out when recorded but completed here (noted)
    hang: str | None = None
    seconds: float = 0.0
    relocated: int = 0
    cached: int = 0  # submissions launching kernels whose translation came from the dispatch memo
    # queues destroyed with work pending, as the recording destroyed them (not drained: neither were they then)
    left: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    times: dict[int, int] | None = None  # record number -> ns since the run began when it was done (Options.timed)
    occupancy: Occupancy | None = None  # how busy each queue was during the run

    @property
    def status(self) -> int:
        return EXIT_DIVERGED if self.divergence or self.difference else EXIT_HANG if self.hang else EXIT_OK


# -- the first pass --------------------------------------------------------------------------------------


@dataclass
class Survey:
    """What the first pass found; every instance reads it, none changes it."""

    chunk: int  # bytes per checkpointed chunk
    xccs: dict[int, int] = field(default_factory=dict)  # recorded gpu_id -> its XCC count, where the header says
    submissions: int = 0
    packets: int = 0
    checkpoints: int = 0
    notes: list[str] = field(default_factory=list)
    names: dict[int, tuple[str | None, str]] = field(default_factory=dict)  # alloc record -> (name, role)
    waited: set[int] = field(default_factory=set)  # event records some event_wait waits on
    reborn: set[int] = field(default_factory=set)  # event records whose id a later event takes once it is destroyed
    refilled: set[int] = field(default_factory=set)  # free records whose address a later buffer takes
    # waits the recording timed out on that its thread went on to wait again for, and saw complete (a poll loop
    # with a timeout): the timeout was the program's way of waiting, not a hang
    retried: set[int] = field(default_factory=set)
    # the other waits the recording timed out on after which the program went on to submit or to see a wait
    # complete, and ended with exit status 0 (a probe that a queue is still held, campaign 113): no hang either
    went_on: set[int] = field(default_factory=set)
    peaks: Counter[Pool] = field(default_factory=Counter)  # the most bytes one instance holds at once
    # queue record -> the survey's translations of its packets, for the first instance to find (up to
    # SHARED_CACHES queues: each holds up to CACHED_PACKETS translations)
    caches: dict[int, TranslationCache] = field(default_factory=dict)
    # (code object key, target) -> the bytes a replay loads there (every object some dispatch runs has one)
    objects: dict[tuple[bytes, str], bytes] = field(default_factory=dict)
    # relocation hazards: recorded buffer -> why it must not move (a GPU-written address of it that a later
    # dispatch may follow)
    hazards: dict[int, str] = field(default_factory=dict)
    # the CPU writes, frees and doorbells that land in the kernel arguments of dispatches submitted before them
    # (the replay holds them back till those ran: argument_spans.py)
    late: Late = field(default_factory=Late)
    # device index -> kernel-argument memory of the dispatches the caches keep whole (filled by the first instance
    # of each loop, freed by `release` when the replay is done)
    kernarg_stores: dict[int, KernargStore] = field(default_factory=dict)
    # (code object key, target, device index) -> the object loaded for them, which every instance runs when its
    # image is only read: each loop finds it where the last did, so the dispatches the caches keep whole are taken
    # again. An image kernels may write (program-scope globals) is each instance's own, loaded afresh.
    programs: dict[tuple[bytes, str, int], Program] = field(default_factory=dict)
    # code_object records whose object each instance loads for itself, and frees where the recording freed it: a
    # GPU fault was recorded after that free, which a dispatch still queued may have met running from it (campaign
    # 87: a shared object stayed loaded, the kernel ran, and the recorded fault replayed DIVERGED)
    unshared: set[int] = field(default_factory=set)

    def release(self) -> None:
        """Free the memory the instances' cached dispatches point at, and the objects they ran (no instance runs
        any more)."""
        for store in self.kernarg_stores.values():
            store.free()
        for program in self.programs.values():
            program.free()
        self.programs.clear()


def _in_code(f: dict) -> str:
    """What is said of an address in the memory of the code object its code_object record `f` loaded."""
    name = f" {f['name']!r}" if f.get("name") else ""
    return (f"in the memory of the code object{name} loaded at {f['va']:#x} (its global variables): a replay loads the "
            f"object for its target where it can, and follows no address into it")


def chunk_size(trace: TraceReader) -> int:
    """The checkpoint chunk size the trace's header gives (capture always writes it)."""
    chunk = trace.header.get("chunk_size")
    if not isinstance(chunk, int):
        raise BadInput(f"{trace.path}: the header gives no chunk_size, so its checkpoints cannot be read: "
                       f"re-record it with capture")
    if chunk <= 0:
        raise BadInput(f"{trace.path}: the header's chunk_size {chunk} is no size (corrupt trace)")
    return chunk


def recorded_gpus(trace: TraceReader) -> list[dict]:
    """The header's GPUs (each with a gpu_id and a target); BadInput when they are not that."""
    return R.check_map(f"{trace.path}: the header", trace.header, R.HEADER).get("gpus") or []


def recorded_xccs(trace: TraceReader) -> dict[int, int]:
    """Recorded gpu_id -> the XCC count its node in the header's topology gives (none when it cannot be read)."""
    topology = trace.header.get("topology")
    nodes = topology.get("nodes") if isinstance(topology, dict) else None
    out = {}
    for node in nodes if isinstance(nodes, list) else ():
        props = node.get("properties") if isinstance(node, dict) else None
        if isinstance(props, dict) and type(node.get("gpu_id")) is int and node["gpu_id"]:
            count = props.get("num_xcc")
            out[node["gpu_id"]] = count if type(count) is int and 1 <= count <= 64 else 1
    return out


def device_map(trace: TraceReader, system: System, gpu_map: dict[int, int] | None,
               by_id: bool = False) -> dict[int, Device]:
    """Recorded gpu_id -> target device: recorded GPU i onto target device gpu_map[i] (default: i; with `by_id`,
    the device of its gpu_id where the target has them all, as the recorded topology emulated does: the
    program's order, which ROCR_VISIBLE_DEVICES may have changed, is not the nodes' that the target lists)."""
    recorded = [g["gpu_id"] for g in recorded_gpus(trace)]
    index = {d.gpu_id: d.index for d in system.devices}
    asked = gpu_map is not None  # by the user (--gpu-map, --device)
    if gpu_map is None and by_id and set(recorded) <= index.keys():
        gpu_map = {i: index[gpu_id] for i, gpu_id in enumerate(recorded)}
    mapping = gpu_map if gpu_map is not None else {i: i for i in range(len(recorded))}
    if unknown := sorted(set(mapping) - set(range(len(recorded)))):  # a typo, not a GPU to leave out
        raise BadInput(f"--gpu-map names recorded GPU {unknown[0]}; the trace has {len(recorded)} "
                       f"(0..{len(recorded) - 1})")
    out = {}
    for i, gpu_id in enumerate(recorded):
        if i not in mapping:
            raise BadInput(f"--gpu-map does not say where recorded GPU {i} goes")
        j = mapping[i]
        if not 0 <= j < len(system.devices) and asked:
            raise BadInput(f"--gpu-map or --device sends recorded GPU {i} to target device {j}, which does not "
                           f"exist here (it has {len(system.devices)}: 0..{len(system.devices) - 1})")
        if not 0 <= j < len(system.devices):
            raise ReplayError(f"the trace uses {len(recorded)} GPU(s); target device {j} does not exist here "
                              f"(it has {len(system.devices)}): use --gpu-map or --device")
        out[gpu_id] = system.devices[j]
    return out


def survey(trace: TraceReader, devices: dict[int, Device], code_objects: CodeObjectOptions | None = None,
           queue_type: str | None = None) -> Survey:
    """Read the trace once: translate every submission with the recorded addresses (ReplayError for anything
    the target cannot run, before anything is submitted: a kernel no code object for the target holds, a kernel
    argument pointing outside every buffer) and work out what the replay will need. A summary other than the
    format says is a corrupt trace (MalformedRecord), as for `kfdtrace info`."""
    if trace.summary:
        R.check_map(f"{trace.path}: the summary", trace.summary, R.SUMMARY)  # campaign 74: `undrained` nested
    return _Surveyor(trace, devices, code_objects, queue_type).run()


class _Surveyor:
    """The first pass, one `_on_<type>` per record type."""

    def __init__(self, trace: TraceReader, devices: dict[int, Device], code_objects: CodeObjectOptions | None,
                 queue_type: str | None = None):
        self.trace, self.devices = trace, devices
        self.code_objects = (code_objects or CodeObjectOptions()).for_records(
            r.fields for r in R.checked(trace.records({R.CODE_OBJECT})))
        self.queue_type = queue_type
        self.s = Survey(chunk_size(trace), recorded_xccs(trace))
        self.kernels = RecordedKernels()
        self.code: dict[int, tuple[dict, Device]] = {}  # recorded code object va -> (its record's fields, device)
        self.code_records: list[dict] = []  # every code_object record's fields
        self.code_at: dict[int, int] = {}  # recorded code object va -> its code_object record
        self.freed_code: list[int] = []  # the code_object records of objects freed since the last recorded fault
        # target -> recorded code object va -> (its record's fields, the kernels run without an object for target)
        self.missing: dict[str, dict[int, tuple[dict, set[str]]]] = {}
        # (recorded object's key, target) -> the object chosen for it there, and where it came from
        self.chosen: dict[tuple[bytes, str], tuple[CodeObject, str]] = {}
        # (recorded object's key, target, kernel) dispatched -> why the object chosen cannot run it (None: it can)
        self.unfit: dict[tuple[bytes, str, str], str | None] = {}
        self.dispatched: dict[int, str] = {}  # buffer -> the last dispatch given a pointer into it
        # buffer -> (offset, value) of a GPU address a checkpoint found in it, and the dispatch that wrote it
        self.holders: dict[int, tuple[int, int, str]] = {}
        # recorded buffer -> the hazard a checkpoint holding its address is, when no more telling one is found
        self.checkpoint_hazards: dict[int, str] = {}
        self.cpu_made: set[int] = set()  # holders whose addresses the CPU wrote there, or a packet inline
        self.copy_hazards: dict[int, str] = {}  # the same for a table some copy may carry to a kernel
        self.gpu_read: set[int] = set()  # buffers a packet has read data from (a copy's source), not as commands
        # recorded kernel argument buffers, with what the CPU wrote into them (None: nothing yet)
        self.kernarg_buffers: RangeMap[bytearray | None] = RangeMap()
        self.kernarg_writers: dict[int, str] = {}  # kernel argument buffer -> the first dispatch taking a pointer to it
        self.spans = ArgumentSpans()  # where the dispatches so far read their kernel arguments
        # (va, size) of the kernel arguments of the submission's dispatches on its ring (va 0: none)
        self.submitted: list[tuple[int, int]] = []
        # buffer -> address -> (blob key, record) of the CPU writes there no dispatch was given a pointer to since
        self.cpu_writes: dict[int, dict[int, tuple[bytes, int]]] = {}
        self.dispatching = ""  # the packet whose dispatch is being checked
        self.now = 0  # the record being surveyed
        # (thread, wait record type, what it waits on) -> (record, value) of the waits that timed out since
        self.timed_out: dict[tuple[int | None, str, int], list[tuple[int, int]]] = {}
        self.pending_retries = 0  # the waits timed_out holds
        # waits that timed out since the last doorbell or completed wait, when the program ended with exit status 0
        self.timeouts_since: list[int] | None = [] if (trace.summary or {}).get("exit_status") == 0 else None
        self.relocation = Relocation()
        self.translators: dict[int, Translator] = {}
        self.unnamed: dict[int, Record] = {}  # va -> its alloc, until its buffer record (or another) comes
        self.allocs: dict[int, Record] = {}  # va -> the alloc of the buffer there now
        self.handles: dict[int, Record] = {}  # handle -> the alloc of the buffer not freed that has it
        self.placed: set[int] = set()  # recorded vas of the buffers packets may address
        self.live: dict[int, tuple[Pool, int]] = {}  # recorded va -> (pool, bytes) of the buffers replayed
        self.rings: dict[int, tuple[int, Pool]] = {}  # recorded queue id -> (ring and pointer bytes, its slots)
        self.units: dict[int, int] = {}  # recorded queue id -> the size of the ring its packets go on as units
        self.wptrs: dict[int, tuple[int, int]] = {}  # recorded queue id -> (its type, its write pointer as recorded)
        self.use: Counter[Pool] = Counter()
        self.events: dict[int, int] = {}  # recorded event id -> its event record
        self.freed: dict[int, int] = {}  # recorded event id -> the record of the event that had it, destroyed
        self.vacated: dict[int, int] = {}  # recorded address -> the free record of the buffer that had it
        self.ib_copies: dict[int, int] = {}  # recorded queue id -> bytes of its last submission's IB copies

    def run(self) -> Survey:
        wanted = handled(_Surveyor)
        # every frame read: checked against the index's counts, so that a lying index hides no record from a run
        for r in R.checked(r for r in self.trace.records() if r.type in wanted):
            if self.unnamed and r.type != R.BUFFER:
                self._settle()
            self.now = r.n
            getattr(self, f"_on_{r.type}")(r)
        self._settle()
        self.s.late.done()
        if self.dispatched:
            self._late_tables({*self.cpu_writes, *self.cpu_made})
        for va, why in [*self.copy_hazards.items(), *self.checkpoint_hazards.items()]:
            self.s.hazards.setdefault(va, why)
        for t in self.translators.values():
            self.s.notes += t.dropped
        try:
            check_options(self.code_objects, self.code_records)
        except ValueError as exc:
            raise BadInput(str(exc)) from None
        if self.missing:
            raise ReplayError("; ".join(
                missing_message(target, [(f, sorted(kernels)) for f, kernels in objects.values()], self.code_objects)
                for target, objects in self.missing.items()))
        unfit = [why for why in self.unfit.values() if why is not None]
        if unfit:
            raise ReplayError("; ".join(unfit))
        return self.s

    def _add(self, key: Pool, n: int) -> None:
        self.use[key] += n
        self.s.peaks[key] = max(self.s.peaks[key], self.use[key])

    def _settle(self) -> None:
        """Count the allocations no buffer record named: the program's own."""
        for r in self.unnamed.values():
            self._count(r, "user")
        self.unnamed.clear()

    def _count(self, r: Record, role: str) -> None:
        f = r.fields
        pool = POOLS.get(f["domain"])
        if pool is None:
            return
        if role not in INTERNAL_ROLES and role != CODE or role == EVENT_PAGE:  # as the replay's own relocation:
            self.relocation.add(f["va"], f["size"], f["va"])  # the translations it makes are shared (a code
            self.placed.add(f["va"])  # object's: _on_code_object; the event page's slots: Instance._on_event)
        if role == "kernargs":
            self.kernarg_buffers.add(f["va"], f["size"], None)
        if role not in INTERNAL_ROLES:
            key = (pool, self.devices[f["gpu"]].index) if pool == "VRAM" else HOST
            self.live[f["va"]] = (key, f["size"])
            self._add(key, f["size"])

    def _on_alloc(self, r: Record) -> None:
        if r.fields["gpu"] not in self.devices:
            raise ReplayError(f"buffer at {r.fields['va']:#x} is on GPU {r.fields['gpu']:#x}, which the trace's "
                              f"header does not list")
        if r.fields["va"] % PAGE:  # (the kernel gives none: refused here, before its free's check meets it)
            raise BadInput(f"record {r.n} (alloc): buffer address {r.fields['va']:#x} is not page aligned "
                           f"(corrupt trace)")
        if (other := self.handles.get(r.fields["handle"])) is not None:  # campaign 74
            raise BadInput(f"record {r.n} (alloc): handle {r.fields['handle']:#x} is that of the buffer record "
                           f"{other.n} allocated, which is not freed: the kernel never gives a handle twice "
                           f"(corrupt trace)")
        self.unnamed[r.fields["va"]] = self.allocs[r.fields["va"]] = self.handles[r.fields["handle"]] = r
        if (freed := self.vacated.pop(r.fields["va"], None)) is not None:
            self.s.refilled.add(freed)

    def _on_buffer(self, r: Record) -> None:
        """Name the allocation; another thread's records may have come between the two (then it was counted
        as the program's own: an internal buffer is taken back out, a kernel argument buffer is followed)."""
        va, role = r.fields["va"], r.fields["role"]
        alloc = self.allocs.get(va)
        if alloc is None:
            return
        self.s.names[alloc.n] = (r.fields.get("name"), role)
        if self.unnamed.pop(va, None) is not None:
            self._count(alloc, role)
            return
        if role in INTERNAL_ROLES and va in self.live:
            pool, n = self.live.pop(va)
            self.use[pool] -= n
        if role == "kernargs" and va in self.placed and self.kernarg_buffers.find(va) is None:
            self.kernarg_buffers.add(va, alloc.fields["size"], None)

    def _on_free(self, r: Record) -> None:
        if self.dispatched:  # kernels ran: one may still wait for a table written since, into this buffer or
            self._late_tables({*self.cpu_writes, *self.cpu_made})  # pointing at it (found while it is here)
        freed = self.allocs.get(r.fields["va"])
        if freed is None or freed.fields["handle"] != r.fields["handle"]:  # campaign 96
            raise BadInput(f"record {r.n} (free): no buffer of handle {r.fields['handle']:#x} is allocated at "
                           f"{r.fields['va']:#x} (corrupt trace)")
        del self.allocs[r.fields["va"]]
        self.vacated[r.fields["va"]] = r.n
        self.handles.pop(freed.fields["handle"], None)
        self.kernels.unloaded(r.fields["va"])
        self.code.pop(r.fields["va"], None)
        if (loaded := self.code_at.pop(r.fields["va"], None)) is not None:
            self.freed_code.append(loaded)
            self.relocation.remove(r.fields["va"])
        if (hit := self.kernarg_buffers.find(r.fields["va"])) is not None:
            self._late(r, hit[0], hit[1])
            self.spans.drop(hit[0], hit[1])
            self.kernarg_buffers.remove(r.fields["va"])
            self.kernarg_writers.pop(r.fields["va"], None)
        self.cpu_writes.pop(r.fields["va"], None)
        if r.fields["va"] in self.placed:
            self.placed.remove(r.fields["va"])
            self.relocation.remove(r.fields["va"])
        gone = self.live.pop(r.fields["va"], None)
        if gone is not None:
            self.use[gone[0]] -= gone[1]

    def _on_backend(self, r: Record) -> None:
        """Campaign 98: the records after it mix two machines' handles, queue ids and events (each emulated System
        its own; on a real one the kernel keeps one KFD process, and a second System's ACQUIRE_VM is EBUSY)."""
        gpus = ", ".join(str(g.get("target")) for g in r.fields.get("gpus") or [] if isinstance(g, dict))
        raise ReplayError(f"record {r.n} (backend): the program opened a second {r.fields.get('backend')} backend "
                          f"({gpus or 'no GPUs'}) beside the one the trace's header describes; a replay replays the "
                          f"work of one: open the GPUs once (one System) in the recorded program")

    def _on_map(self, r: Record) -> None:
        if unknown := [g for g in r.fields["gpus"] if g not in self.devices]:
            raise ReplayError(f"record {r.n} ({r.type} of buffer handle {r.fields['handle']:#x}) names GPU "
                              f"{unknown[0]:#x}, which the trace's header does not list")

    def _on_unmap(self, r: Record) -> None:
        """As a free (Buffer.free unmaps first): one that takes dispatches' kernel arguments from the GPU waits
        until their queues ran them."""
        self._on_map(r)
        alloc = self.handles.get(r.fields["handle"])
        if alloc is not None and (hit := self.kernarg_buffers.find(alloc.fields["va"])) is not None:
            self._late(r, hit[0], hit[1])

    def _on_queue(self, r: Record) -> None:
        f = r.fields
        if f["queue"] in self.rings:  # campaign 74: the first was left unwatched, stuck and faulted, and OK said
            raise BadInput(f"record {r.n} (queue): queue {f['queue']} is created again while the queue of that id "
                           f"is not destroyed: the kernel never gives a live queue's id twice (corrupt trace)")
        if f["type"] == K.QueueType.COMPUTE_AQL and self.trace.version < AQL_SIGNALS_SINCE:
            raise ReplayError(f"queue {f['queue']} is an AQL queue recorded by format {self.trace.version[0]}."
                              f"{self.trace.version[1]}, which does not record its signals' initial values: "
                              f"re-record it with this kfdtrace")
        on_pm4 = f["type"] == K.QueueType.COMPUTE_AQL and self.queue_type == "pm4"
        cache = TranslationCache() if len(self.s.caches) < SHARED_CACHES else None
        if cache is not None:
            self.s.caches[r.n] = cache
        reader = DispatchReader(_dialects(f)[0], self.kernels, self._kernargs) if f["type"] not in SDMA_KINDS \
            else None
        t = self.translators[f["queue"]] = _translator(
            f, self.devices, self.relocation, lambda e: e, cache=cache,
            dispatch=None if reader is None else lambda p, where: self._dispatch(reader, p, where, on_pm4),
            dispatch_all=on_pm4, xccs=self.s.xccs)
        t.calls = []  # the indirect buffers each submission calls, which the replay will copy
        dev = self.devices[f["gpu"]]
        slots = (_slot_pool(sdma_engine(f, dev)[0], dev), dev.index) if reader is None else None
        self.rings[f["queue"]] = (f["ring_size"] + PAGE, slots)
        if f["type"] in SDMA_KINDS or (f["type"] == K.QueueType.COMPUTE and self.queue_type != "aql"):
            self.units[f["queue"]] = f["ring_size"]  # the replay's queue has a ring of this size too
        self.wptrs[f["queue"]] = (f["type"], 0)  # the stream position its packets start at
        self._add(HOST, f["ring_size"] + PAGE)  # the replayer's own ring and pointers, in GTT
        if slots is not None:
            self._add(slots, 1)

    def _dispatch(self, reader: DispatchReader, p: Packet, where: str, on_pm4: bool = False) -> bytes:
        """A recorded dispatch, checked: its kernel has a code object for the target, its pointer arguments lie in
        recorded buffers; `on_pm4`: an AQL packet that must have a PM4 form (AqlOnPm4.refusal)."""
        why = AqlOnPm4.refusal(p) if on_pm4 else None
        if why is not None:
            raise ReplayError(f"{where}: {p.name} at byte {p.offset:#x}: --queue-type pm4 cannot replay {why}")
        self.dispatching = f"{where}: {p.name} at byte {p.offset:#x}"  # what _kernargs names when it refuses
        d = reader.dispatch(p, where)
        if d is not None:
            self.submitted.append((d.kernargs, d.kernel.kernel.metadata.kernarg_segment_size))
            f, dev = self.code[d.kernel.obj]
            target = dev.target.name
            if (f["key"], target) not in self.s.objects:
                objects = self.missing.setdefault(target, {})
                objects.setdefault(d.kernel.obj, (f, set()))[1].add(d.kernel.name)
            elif (f["key"], target, d.kernel.name) not in self.unfit:  # checked once a kernel and target
                chosen, source = self.chosen[(f["key"], target)]
                why = unfit(d.kernel.name, d.kernel.kernel.metadata, chosen)
                self.unfit[(f["key"], target, d.kernel.name)] = why and unfit_message(target, f, source, why)
            for ptr, read_only in reader.check_pointers(d, where, self.relocation):
                start = self.relocation.pointee(ptr)[0]  # (C's end pointer points into the buffer it ends)
                self._cpu_written_addresses(start)
                if not read_only and self.kernarg_buffers.find(ptr) is not None:  # a kernel may write other
                    self.kernarg_writers.setdefault(start, f"{where} ({d.kernel.name})")  # dispatches' arguments
                held = self.holders.pop(start, None)
                if held is not None:
                    offset, value, writer = held
                    pointee = self.relocation.pointee(value)
                    if pointee is not None:
                        self.s.hazards.setdefault(pointee[0], (
                            f"relocation hazard: buffer {self._name(start)}+{offset:#x} holds GPU address {value:#x} "
                            f"(in buffer {self._name(pointee[0])}), written by {writer}, and {where} gives "
                            f"{d.kernel.name} a pointer to it: the address cannot follow its buffer if it moves"))
                self.dispatched[start] = f"{where} ({d.kernel.name})"
            self._copied_tables(f"{where} ({d.kernel.name})")
            self._by_value_addresses(reader, d, where)
        return b""

    def _copied_tables(self, dispatch: str) -> None:
        """Note a relocation hazard for each address of a recorded buffer the CPU wrote (or a packet wrote inline)
        into a buffer the kernel is not given, which a packet has read as data since: a copy of it (by SDMA, say)
        may reach the kernel, which the survey does not follow. (Not one only the CPU reads, nor an indirect
        buffer, whose addresses the replay relocates.)"""
        for start in list(self.cpu_writes):
            self._cpu_written_addresses(start)
        for start in list(self.cpu_made & self.gpu_read):
            self.cpu_made.discard(start)  # once: whichever kernel runs after it
            self._table_hazard(start, f"before {dispatch} runs: a copy of it may reach the kernel")

    def _table_hazard(self, start: int, when: str) -> None:
        """Note the hazard of the table of addresses the buffer at `start` holds (`holders`), `when` said of it."""
        held = self.holders.get(start)
        if held is None:  # a kernel given it found it already
            return
        offset, value, writer = held
        pointee = self.relocation.pointee(value)
        if pointee is not None:
            self.copy_hazards.setdefault(pointee[0], (
                f"relocation hazard: buffer {self._name(start)}+{offset:#x} holds GPU address {value:#x} (in buffer "
                f"{self._name(pointee[0])}), written by {writer}, {when}, and the address cannot follow its buffer "
                f"if it moves"))

    def _late_tables(self, starts: Iterable[int]) -> None:
        """As a buffer goes (or the trace ends): a table of addresses the CPU (or a packet) wrote into one of those
        after the last dispatch record, which a kernel was given or a packet reads, may still reach a kernel
        submitted before it (one waiting on a barrier for it)."""
        for start in starts:
            self._cpu_written_addresses(start)
        for start in sorted(self.cpu_made & (self.gpu_read | self.dispatched.keys()) & set(starts)):
            self._table_hazard(start, "after the dispatches that may read it were submitted (one may wait for it)")

    def _by_value_addresses(self, reader: DispatchReader, d: Dispatch, where: str) -> None:
        """Note a relocation hazard for each address of a recorded buffer a dispatch passes by value (an integer
        argument, a pointer inside a struct): kernel arguments are relocated where the metadata says they hold a
        pointer, and these would keep the recorded address when the buffer moves."""
        data = reader.kernargs(d, where) or b""
        meta = d.kernel.kernel.metadata
        for i, arg in enumerate(meta.args):
            if arg.value_kind != "by_value" or arg.size < 8:
                continue
            # words as a packed struct may hold them too: 4-byte aligned (the segment is 16-byte aligned)
            found = self._held_in(data[arg.offset:arg.offset + arg.size], arg.offset)
            held = self.relocation.pointee(found[1]) if found is not None else None
            if held is not None:
                self._by_value_hazard(held[0], where, d, f"argument {i}{f' ({arg.name})' if arg.name else ''}",
                                      found[1])
                return
        for at in meta.by_value_words:  # an address in two 32-bit halves, as capture reads them (campaign 106)
            value = int.from_bytes(data[at:at + 8], "little")
            held = self.relocation.pointee(value) if value else None
            if held is not None:
                args = [i for i, a in enumerate(meta.args) if a.value_kind == "by_value" and a.offset < at + 8 and
                        at < a.offset + a.size]
                self._by_value_hazard(held[0], where, d, f"arguments {', '.join(map(str, args))}", value)
                return

    def _by_value_hazard(self, start: int, where: str, d: Dispatch, what: str, value: int) -> None:
        self.s.hazards.setdefault(start, (
            f"relocation hazard: {where} gives {d.kernel.name} {what} by value, holding address {value:#x} (in "
            f"buffer {self._name(start)}): an address passed by value cannot follow its buffer if it moves"))

    def _name(self, va: int) -> str:
        alloc = self.allocs.get(va)
        name = self.s.names.get(alloc.n, (None, ""))[0] if alloc is not None else None
        return name or f"@{va:#x}"

    def _on_checkpoint(self, r: Record) -> None:
        """Look for GPU addresses in what dispatches wrote (a checkpoint's contents): pointer chasing. Such a
        checkpoint is itself a hazard: a kernel computes addresses from the pointers it is given, so with the
        buffer they point into moved it writes other values than the recording's, and the checkpoint differs."""
        self.s.checkpoints += 1
        for entry in r.fields["buffers"]:
            writer = self.dispatched.get(entry["va"])
            if writer is None or entry["va"] in self.holders:
                continue
            for i, key in enumerate(entry["keys"]):
                found = self._held_word(key, entry["va"] + i * self.s.chunk)
                if found is not None:
                    offset, value = i * self.s.chunk + found[0], found[1]
                    self.holders[entry["va"]] = (offset, value, writer)
                    pointee = self.relocation.pointee(value)
                    self.checkpoint_hazards.setdefault(pointee[0], (
                        f"relocation hazard: the checkpoint at record {r.n} finds GPU address {value:#x} (in buffer "
                        f"{self._name(pointee[0])}) in buffer {self._name(entry['va'])}+{offset:#x}, which {writer} "
                        f"may have written: with that buffer moved, a kernel writes its new address there and the "
                        f"checkpoint cannot match"))
                    break

    def _cpu_written_addresses(self, start: int) -> None:
        """Look for addresses of recorded buffers in what the CPU wrote into the buffer at `start` since a dispatch
        was last given a pointer to it (a pointer table a kernel will chase), as _on_checkpoint does in what
        dispatches wrote."""
        for va, (key, n) in sorted(self.cpu_writes.pop(start, {}).items()):
            if start in self.holders:
                return
            found = self._held_word(key, va)
            if found is not None:
                self.holders[start] = (va - start + found[0], found[1], f"the CPU write at record {n}")
                self.cpu_made.add(start)

    def _data_packets(self, r: Record, dialect: Dialect, ring: bytes, where: str) -> None:
        """Note the buffers the packets read data from (`gpu_read`), what they copy of what kernels wrote (as
        kernels' writes: `dispatched`), the addresses of recorded buffers that they write inline (an SDMA
        WRITE_LINEAR's data, a PM4 WRITE_DATA's: the tables' `Tail.written`) as the CPU's writes are noted (a
        pointer table a kernel chases), and what they write of earlier dispatches' kernel arguments (`_late`)."""
        try:
            packets = list(dialect.iter_packets(ring))
        except PacketError:  # the translation says what is wrong with them
            return
        for p in packets:
            d = p.defn
            if self.spans.pages:
                for addr, n in p.written_ranges():
                    if self.kernarg_buffers.find(addr) is not None:
                        self._late(r, addr, n or 8)
            copied = None  # a buffer a kernel may have written, which the packet reads: what it writes may hold
            for name, addr in p.addresses().items():  # the addresses the kernel wrote, for a checkpoint to find
                a = d[name]
                if name not in d.written_fields and a.touches and a.indirect is None and a.kernel is None and \
                        (hit := self.relocation.find(addr)) is not None:
                    self.gpu_read.add(hit[0])
                    copied = copied or self.dispatched.get(hit[0])
            if copied is not None:
                for addr in p.written_addresses():
                    if (hit := self.relocation.find(addr)) is not None:
                        self.dispatched.setdefault(hit[0], f"{copied}, copied by the {p.name} packet of {where}")
            field = d.tail.written if d.tail is not None else None
            dst = p.addresses().get(field) if field is not None else None
            hit = self.relocation.find(dst) if dst is not None else None
            if hit is None or hit[0] in self.holders:
                continue
            found = self._held_in(p.inline(), dst)
            if found is not None:
                self.holders[hit[0]] = (dst - hit[0] + found[0], found[1], f"the {p.name} packet of {where}")
                self.cpu_made.add(hit[0])

    def _held_word(self, key: bytes, va: int = 0) -> tuple[int, int] | None:
        """_held_in of the blob `key` (None: the trace lacks it)."""
        try:
            data = self.trace.blob(key)
        except TraceError:
            return None
        return self._held_in(data, va)

    def _held_in(self, data: bytes, va: int) -> tuple[int, int] | None:
        """(byte offset, value) of the first 8-byte word of `data` (whose bytes lie at `va`) that is the address of
        a recorded buffer: words 8-byte aligned in memory, or 4 (a packed struct's); None: none is."""
        found = []
        for skew in (0, 4):
            first = (skew - va) % 8
            if first % 4 or len(data) < first + 8:
                continue
            words = memoryview(data)[first:first + (len(data) - first) // 8 * 8].cast("Q")
            at = self.relocation.first_held(words)
            if at is not None:
                found.append((first + 8 * at, words[at]))
        return min(found, default=None)

    def _kernargs(self, va: int, size: int) -> bytes | None:
        """The recorded kernel arguments at `va`, from the CPU writes into kernel argument buffers (ReplayError for
        arguments in another buffer: their writes are not followed)."""
        hit = self.kernarg_buffers.find(va)
        if hit is None and (held := self.relocation.find(va)) is not None:
            hit = self._follow(va, *held)
        if hit is not None and hit[0] in self.kernarg_writers:
            raise ReplayError(f"{self.dispatching}: its kernel arguments at {va:#x} lie in buffer "
                              f"{self._name(hit[0])}, which the kernel of {self.kernarg_writers[hit[0]]} takes a "
                              f"pointer to: replay derives kernel arguments from what the CPU wrote there, when it "
                              f"submits, and cannot follow what a kernel writes")
        if hit is None or hit[2] is None or va + size > hit[0] + hit[1]:
            return None
        return bytes(hit[2][va - hit[0]:va - hit[0] + size])

    def _follow(self, va: int, start: int, size: int) -> tuple[int, int, bytearray]:
        """A buffer of the program's own that holds the kernel arguments at `va` (a runtime's ring of them, as ROCr
        and tinygrad keep: campaign 91), followed from now on as a kernargs buffer is: what the CPU wrote there so
        far is read again from the trace."""
        if size > FOLLOWED_BYTES:
            raise ReplayError(f"{self.dispatching}: its kernel arguments at {va:#x} lie in buffer {self._name(start)} "
                              f"of {size:#x} bytes: replay follows the CPU's writes of kernel arguments in buffers of "
                              f"role kernargs, and in others of {FOLLOWED_BYTES >> 20} MiB at most")
        contents = bytearray(size)
        for r in self.trace.records({R.MEM}, self.allocs[start].n):  # (each checked as the survey passed it)
            if r.n >= self.now:
                break
            at = r.fields["va"] - start
            if 0 <= at < size:
                data = self.trace.blob(r.fields["key"])
                if at + len(data) > size:
                    raise BadInput(f"record {r.n} (mem): {len(data)} bytes at {r.fields['va']:#x} run past the end "
                                   f"of the buffer at {start:#x}+{size:#x} (corrupt trace)")
                contents[at:at + len(data)] = data
        self.kernarg_buffers.add(start, size, contents)
        # the addresses the CPU wrote there are kernel arguments, relocated as such: no table a kernel may chase
        self.cpu_writes.pop(start, None)
        self.holders.pop(start, None)
        self.cpu_made.discard(start)
        return start, size, contents

    def _on_mem(self, r: Record) -> None:
        """Follow what the CPU writes into kernel argument buffers (small: they are read back whole), and note
        where it writes into the others (_cpu_written_addresses)."""
        if (why := self.relocation.unplaced(r.fields["va"])) is not None:
            raise ReplayError(f"record {r.n} (mem): the CPU wrote {r.fields['size']} bytes at {r.fields['va']:#x}, "
                              f"which is {why}; refusing to replay it")
        hit = self.kernarg_buffers.find(r.fields["va"])
        if hit is None and (held := self.relocation.find(r.fields["va"])) is not None:
            self.cpu_writes.setdefault(held[0], {})[r.fields["va"]] = (r.fields["key"], r.n)
        if hit is not None:
            self._late(r, r.fields["va"], r.fields["size"])
            start, size, contents = hit
            if contents is None:
                contents = bytearray(size)
                self.kernarg_buffers.remove(start)
                self.kernarg_buffers.add(start, size, contents)
            data = self.trace.blob(r.fields["key"])
            at = r.fields["va"] - start
            if at + len(data) > size:
                raise BadInput(f"record {r.n} (mem): {len(data)} bytes at {r.fields['va']:#x} run past the end of "
                               f"the buffer at {start:#x}+{size:#x} (corrupt trace)")
            contents[at:at + len(data)] = data

    def _late(self, r: Record, va: int, size: int) -> None:
        """Note a CPU write or free of bytes [va, va + size) that lands in dispatches' kernel arguments."""
        found = self.spans.hits(va, size)
        if found:
            self.s.late.add(r.n, found)

    def _on_code_object(self, r: Record) -> None:
        f = r.fields
        alloc = self.allocs.get(f["va"])
        if alloc is None:
            raise BadInput(f"record {r.n} (code_object): no buffer was allocated at {f['va']:#x} (corrupt trace)")
        dev = self.devices[alloc.fields["gpu"]]
        data = self.trace.blob(f["key"])
        obj = self.kernels.loaded(f, data, f"record {r.n} (code_object)")
        for name, descriptor in f["kernels"].items():  # where the recording found them, in the object it names
            kernel = obj.kernels.get(name)
            if kernel is None or f["va"] + kernel.descriptor_offset != descriptor:
                raise BadInput(f"record {r.n} (code_object): its kernel {name!r} at {descriptor:#x} is not where its "
                               f"code object for {f['target']} loaded at {f['va']:#x} puts it (corrupt trace)")
        if not obj.image_size <= f["size"] <= alloc.fields["size"]:
            raise BadInput(f"record {r.n} (code_object): its {obj.image_size:#x}-byte image, in {f['size']:#x} bytes "
                           f"as it says, does not fit the {alloc.fields['size']:#x}-byte buffer allocated at "
                           f"{f['va']:#x} (corrupt trace)")
        self.code[f["va"]] = (f, dev)
        self.code_at[f["va"]] = r.n
        self.code_records.append(f)
        if f["va"] in self.placed:  # counted as the program's own buffer: its record came late
            self.placed.remove(f["va"])
            self.relocation.remove(f["va"])
        self.relocation.unplace(f["va"], alloc.fields["size"], _in_code(f))
        if (f["key"], dev.target.name) not in self.s.objects:
            choice = choose(data, f, dev.target.name, self.code_objects)
            if choice is not None:
                self.s.objects[(f["key"], dev.target.name)] = choice.data
                self.chosen[(f["key"], dev.target.name)] = (choice.code, choice.source)

    def _on_queue_destroy(self, r: Record) -> None:
        if r.fields["queue"] not in self.rings:  # campaign 96
            raise BadInput(f"record {r.n} (queue_destroy): queue {r.fields['queue']} is not there (never created, or "
                           f"destroyed) (corrupt trace)")
        self.use[HOST] -= self.ib_copies.pop(r.fields["queue"], 0)
        ring, slots = self.rings.pop(r.fields["queue"])
        self.use[HOST] -= ring
        if slots is not None:
            self.use[slots] -= 1

    def _on_doorbell(self, r: Record) -> None:
        f = r.fields
        self._going_on()
        if f["queue"] is None:
            return
        t = self.translators.get(f["queue"])
        if t is None or f["queue"] not in self.rings:
            raise BadInput(f"record {r.n} (doorbell): queue {f['queue']} is not there (never created, or destroyed) "
                           f"(corrupt trace)")
        packets, calls = t.packets, t.calls
        calls.clear()
        where = f"submission {self.s.submissions} (queue {f['queue']})"
        kind, base = self.wptrs[f["queue"]]
        end = t.src.submitted_end(base, K.doorbell_end(kind, f["value"]), f["ring"])
        self.wptrs[f["queue"]] = (kind, end)
        size = self.rings[f["queue"]][0] - PAGE
        if not f["ring"] and end != base:
            why = "the recording could not read the queue's ring" if 0 < end - base <= size else \
                f"its doorbell moved the write pointer from {base:#x} to {end:#x}, where a GPU stops the queue"
            raise ReplayError(f"{where}: its packets are not in the trace ({why}): a replay cannot make it")
        if len(f["ring"]) > size and valid_ring_size(size):  # more than the ring held unconsumed at once
            raise BadInput(f"{where}: {len(f['ring'])} bytes of packets in a {size}-byte ring (corrupt trace)")
        if kind == K.QueueType.COMPUTE_AQL:  # campaign 96: the queue's own check said so as the run submitted it
            at = assigned(f["ring"])
            if at < len(f["ring"]):
                raise ReplayError(f"{where}: the AQL packet at byte {at:#x} is INVALID (a slot no packet was "
                                  f"assigned to) as its doorbell rang: the recording's packet processor waited there "
                                  f"for a packet written later, which the trace does not hold")
        if self.code:  # kernels may run: a table of addresses a packet writes inline may reach one (of this one)
            self._data_packets(r, t.src, f["ring"], where)
        self.submitted.clear()
        out = t.ring(f["ring"], where)  # ReplayError for bad packets
        n = len(self.submitted)  # on the ring: the replay follows those in indirect buffers itself (Instance.ib_spans)
        for j, (va, size) in enumerate(self.submitted):
            if va:
                self.spans.add(f["queue"], va, size, r.n, n - 1 - j)
        ring = self.units.get(f["queue"])
        if ring is not None and len(out) > ring // 2 and valid_ring_size(ring):  # else the queue's creation refuses
            try:
                ring_units(t.dst, out, ring)
            except ValueError as exc:
                raise ReplayError(f"{where}: {exc}") from None
        self.s.packets += t.packets - packets
        self.s.submissions += 1
        # The replay copies each indirect buffer a submission calls (nested ones are not seen here), and frees
        # the copies once the queue is past them: at least the last submission's are held at once.
        held = self.ib_copies.pop(f["queue"], 0)
        copies = sum(_page_up(n * 4) for n in calls) if calls else 0
        if held or copies:  # most submissions call none, after one that called none: nothing changes
            self.use[HOST] -= held
            self.ib_copies[f["queue"]] = copies
            self._add(HOST, copies)

    def _on_event(self, r: Record) -> None:
        if r.fields["type"] in REPLAYED_EVENTS:
            self._on_event_destroy(r)  # an id reused without a destroy record: the older event is gone
            if (old := self.freed.pop(r.fields["event"], None)) is not None:
                self.s.reborn.add(old)
            self.events[r.fields["event"]] = r.n
            self._add(EVENTS, 1)

    def _on_event_destroy(self, r: Record) -> None:
        created = self.events.pop(r.fields["event"], None)
        if created is not None:
            self.freed[r.fields["event"]] = created
            self.use[EVENTS] -= 1

    def _on_event_wait(self, r: Record) -> None:
        created = self.events.get(r.fields["event"])
        if created is not None:
            self.s.waited.add(created)
        self._wait(r, r.fields["event"], 0)

    def _on_cpu_wait(self, r: Record) -> None:
        self._wait(r, r.fields["addr"], r.fields["value"])

    def _on_signal_wait(self, r: Record) -> None:
        self._wait(r, r.fields["addr"], 0)

    def _wait(self, r: Record, what: int, value: int) -> None:
        """Note a wait (on `what`, for `value` or more): one that timed out waits for a later one of its thread on
        the same thing to complete, which makes it retried (Survey.retried)."""
        key = (r.fields["tid"], r.type, what)
        if r.fields.get("fault") is not None:
            self.s.unshared.update(self.freed_code)
            self.freed_code.clear()
        if not r.fields["ok"] and r.fields.get("fault") is None:
            if self.pending_retries < MAX_RETRIES:
                self.timed_out.setdefault(key, []).append((r.n, value))
                self.pending_retries += 1
            if self.timeouts_since is not None and len(self.timeouts_since) < MAX_RETRIES:
                self.timeouts_since.append(r.n)
        elif r.fields["ok"]:
            self._going_on()
            if key in self.timed_out:
                waits = self.timed_out.pop(key)
                self.pending_retries -= len(waits)
                if len(self.s.retried) < MAX_RETRIES:
                    self.s.retried.update(n for n, v in waits if v <= value)

    def _going_on(self) -> None:
        """The program goes on (a doorbell, a completed wait): the waits that timed out before were its own."""
        if self.timeouts_since and len(self.s.went_on) < MAX_RETRIES:
            self.s.went_on.update(self.timeouts_since)
            self.timeouts_since.clear()


def _dialects(q: dict) -> tuple[Dialect, Callable[[Device], str], dict[str, Dialect]]:
    """The recorded queue's dialect, how a target device names its dialect of that kind, and those dialects."""
    kind = QUEUE_DIALECTS.get(q["type"])
    if kind is None or q["dialect"] not in kind[0]:
        raise ReplayError(f"queue {q['queue']}: queue type {q['type']} with packets in {q['dialect']!r} is not "
                          f"replayable")
    return kind[0][q["dialect"]], kind[1], kind[0]


def _translator(q: dict, devices: dict[int, Device], relocation: Relocation, event_id: Callable[[int], int],
                indirect=None, cache: TranslationCache | None = None, dispatch=None,
                dispatch_all: bool = False, memo: DispatchMemo | None = None,
                xccs: Mapping[int, int] | None = None) -> Translator:
    """`xccs`: recorded gpu_id -> XCC count (`recorded_xccs`; a GPU it lacks: as many as the target's)."""
    src, target_dialect, dialects = _dialects(q)
    dev = devices.get(q["gpu"])
    if dev is None:
        raise ReplayError(f"queue {q['queue']} is on GPU {q['gpu']:#x}, which the trace's header does not list")
    theirs = dev.node.num_xcc
    return Translator(src, dialects[target_dialect(dev)], dev.target.sdma_max_copy, relocation, event_id, indirect,
                      cache, dispatch, dispatch_all, memo, ((xccs or {}).get(q["gpu"], theirs), theirs))


def _ib_dispatch(p: Packet, where: str) -> bytes:
    """The dispatch state a packet of an AQL queue's PM4-IB carries: refused (replay re-derives dispatches from the
    AQL packets that launch them; a kernel launched from a PM4-IB has none)."""
    raise ReplayError(f"{where}: {p.name} at byte {p.offset:#x} sets up or launches a kernel from an AQL queue's "
                      f"PM4 indirect buffer, which replay cannot re-derive for the target")


def _page_up(n: int) -> int:
    return max(PAGE, -(-n // PAGE) * PAGE)


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n / 1024:.1f} KiB"


def sdma_engine(f: dict, dev: Device) -> tuple[str | int, str | None]:
    """The engine the recorded SDMA queue `f` replays on, on `dev` (as SdmaQueue takes it), and a note when it is
    not the kind recorded: the recorded engine id where `dev` has that engine (campaign 109), an xGMI engine where
    it has one, else a PCIe one."""
    if f["type"] == K.QueueType.SDMA_BY_ENG_ID:
        if 0 <= f["engine"] < dev.node.num_sdma_engines + dev.node.num_sdma_xgmi_engines:
            return f["engine"], None
        return "sdma", f"queue {f['queue']}: {dev} has no SDMA engine {f['engine']}; using a PCIe one"
    engine = SDMA_KINDS.get(f["type"], "sdma")
    if engine == "xgmi" and not dev.node.num_sdma_xgmi_engines:
        return "sdma", f"queue {f['queue']}: no xGMI SDMA engine on {dev}; using a PCIe one"
    return engine, None


def _slot_pool(engine: str | int, dev: Device) -> str:
    """The pool of queue slots a queue on `engine` takes (KFD's allocate_sdma_queue: a plain SDMA queue goes on the
    PCIe engines, an xGMI one on the xGMI engines, one by engine id on that engine)."""
    pcie = engine == "sdma" or isinstance(engine, int) and engine < dev.node.num_sdma_engines
    return "SDMA queues" if pcie else "xGMI SDMA queues"


def _slots_of(engines: Callable[[Device], int]) -> Callable[[Device], int]:
    return lambda dev: engines(dev) * dev.node.properties.get("num_sdma_queues_per_engine", 8)


# pool -> (what the trace needs, what the target has, how a figure reads)
POOL_TEXT: dict[str, tuple[str, str, Callable[[int], str]]] = {
    "VRAM": ("the trace needs {need} of VRAM", "the target has {have} free", _size),
    "SDMA queues": ("the trace needs {need} SDMA queues on PCIe engines", "the target has {have} queue slots",
                    str),
    "xGMI SDMA queues": ("the trace needs {need} SDMA queues on xGMI engines", "the target has {have} queue slots",
                         str),
    "host": ("the trace needs {need} of host memory (GTT and userptr buffers)", "--max-memory allows {have}", _size),
    "events": ("the trace needs {need} KFD signal events", "a process can have {have}", str),
}
# per-GPU pool -> what a target device has of it
DEVICE_LIMITS: dict[str, Callable[[Device], int]] = {
    "VRAM": Device.free_vram, "SDMA queues": _slots_of(lambda dev: dev.node.num_sdma_engines),
    "xGMI SDMA queues": _slots_of(lambda dev: dev.node.num_sdma_xgmi_engines)}


def check_resources(s: Survey, system: System, instances: int, max_memory: int) -> None:
    """ReplayError, with the figures, when the trace's peak use times `instances` (what the replayer makes per
    queue and instance included) exceeds a target GPU's free VRAM or SDMA queue slots, `max_memory` bytes of
    host memory (its GTT and userptr buffers, whole: a fill can touch all of one) or the KFD's signal events."""
    times = f" (x{instances} instances)" if instances > 1 else ""
    have = {HOST: max_memory, EVENTS: K.KFD_SIGNAL_EVENT_LIMIT - 1}  # slot 0 is the kernel's
    short = []
    for pool, peak in sorted(s.peaks.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        need = (peak + (pool == EVENTS)) * instances  # each instance has an event of its own
        dev = None if pool[1] is None else system.devices[pool[1]]
        limit = have[pool] if dev is None else DEVICE_LIMITS[pool[0]](dev)
        if need <= limit:
            continue
        needs, has, figure = POOL_TEXT[pool[0]]
        if figure(need) == figure(limit):  # rounded alike: the bytes say which is more
            figure = "{:,} bytes".format
        where = "" if dev is None else f"GPU {dev.index} ({dev.target.name}): "
        short.append(f"{where}{needs.format(need=figure(need))} at its peak{times}, "
                     f"{has.format(have=figure(limit))}")
    if short:
        raise ReplayError("; ".join(short))


# -- the second pass -------------------------------------------------------------------------------------
CLOCK_BYTES = 8  # what a packet writing a GPU clock writes (a 64-bit counter)
WRITERS = 8  # packets writing a buffer each replay buffer keeps, the latest: a divergence names the one that wrote it


def _unmask(rb: ReplayBuffer, lo: int, hi: int) -> None:
    """Bytes [lo, hi) of `rb` hold other data than a clock now (a write of any size: its marks are looked at)."""
    rb.volatile.difference_update([c for c in rb.volatile if lo <= c < hi])


def _masked(data: bytes, clocks: list[int]) -> bytes:
    """`data` with the byte at each offset of `clocks` zeroed (those outside it are left out)."""
    out = bytearray(data)
    for at in clocks:
        if 0 <= at < len(out):
            out[at] = 0
    return bytes(out)



@dataclass
class Writes:
    """The writes of the packets of a ring or an indirect buffer (`ring`, named `where`, in `src`) as translated so
    far, `noted` of them taken by Instance._wrote."""

    writes: list[Write]
    ring: bytes
    where: str
    src: Dialect
    noted: int = 0


@dataclass(eq=False)
class ReplayBuffer:
    """A recorded buffer's replay."""

    buffer: Buffer
    role: str = "user"
    view: memoryview | None = None  # its bytes, when the CPU sees them (valid while the buffer lives)
    # the bytes packets filled with a GPU clock (or copied one to) that no other write covered since (offsets):
    # masked when compared
    volatile: set[int] = field(default_factory=set)
    # the last WRITERS packets writing it, the latest last: (its submission, the submission's ring bytes, its offset
    # there, their dialect)
    wrote: deque[tuple[str, bytes, int, Dialect]] = field(default_factory=lambda: deque(maxlen=WRITERS))
    # the lowest recorded address the GPU wrote in it since the CPU last wrote it (None: none; what it holds
    # from there on may not be the trace's)
    gpu_from: int | None = None
    gpus: set[int] = field(default_factory=set)  # the recorded GPUs it is mapped to (its own from the start)
    va: int = 0  # its recorded address

    def writer(self, addr: int) -> str | None:
        """The submission and packet that last wrote the recorded address `addr` in it, as the table counts the bytes a
        packet writes (else the last that wrote it at all); found and formatted only when a report names it."""
        if not self.wrote:
            return None

        def covers(w: tuple[str, bytes, int, Dialect]) -> bool:
            p = w[3].decode(w[1], w[2])  # a dispatch's kernel may write anywhere in the buffers it is given
            return carries_dispatch(p.defn) or any(a <= addr and (n is None or addr < a + n)
                                                   for a, n in p.written_ranges())

        where, ring, at, dialect = next((w for w in reversed(self.wrote) if covers(w)), self.wrote[-1])
        p = dialect.decode(ring, at)
        i = sum(1 for start, _, _ in dialect.spans(ring) if start < at)
        return f"{where} packet {i}: {p}"


@dataclass(eq=False)
class ReplayQueue:
    """A recorded queue's replay."""

    queue: RingQueue | AqlRing
    label: str  # the recorded queue id and the record that created it
    translator: Translator | None = None
    ib_translator: Translator | None = None  # its indirect buffers' (an AQL queue's PM4-IB holds PM4 packets)
    # the stream position (bytes) up to which the recording's doorbells said packets are written: 0 before the
    # first (an AQL doorbell of 0 already says packet 0 is: campaign 86)
    written: int = 0
    kind: int = 0  # the recorded queue's type and ring size
    ring_size: int = 0
    # translated copies of the indirect buffers its submissions call: (write pointer after the submission, copy),
    # each freed once the queue has read past its submission; and those of the submission being translated
    ibs: deque[tuple[int, Buffer]] = field(default_factory=deque)
    new_ibs: list[Buffer] = field(default_factory=list)
    memo: DispatchMemo | None = None  # what its translated dispatches depend on, for its translator's cache
    writes: list[Write] = field(default_factory=list)  # the writes of the submission being translated, so far
    # its latest submissions, while they hold at most RECENT_RING_BYTES: (recorded stream positions before and
    # after, write pointer of the replay's before and after, the recorded ring bytes), to find where a destroy stood
    recent: deque[tuple[int, int, int, int, bytes]] = field(default_factory=deque)
    recent_bytes: int = 0
    # (write pointer after it, doorbell record) of its submissions in Instance.late, for it to forget once run
    late: deque[tuple[int, int]] = field(default_factory=deque)
    # the recorded indirect buffers its submissions call, translated at the doorbell, until it reads past them:
    # (write pointer before and after the submission, recorded address, bytes, the copy's address); and those
    # of the submission being translated: (recorded address, bytes, the copy's address)
    called: deque[tuple[int, int, int, int, int]] = field(default_factory=deque)
    new_called: list[tuple[int, int, int]] = field(default_factory=list)

    def keep(self, before: int, after: int, start: int, ring: bytes) -> None:
        """Note a submission's recorded and replayed extent (`recent`)."""
        self.recent.append((before, after, start, self.queue.wptr, ring))
        self.recent_bytes += len(ring)
        while self.recent_bytes > RECENT_RING_BYTES and len(self.recent) > 1:
            self.recent_bytes -= len(self.recent.popleft()[4])

    def reclaim(self) -> None:
        """Free the indirect buffer copies of the submissions the queue is done with."""
        while self.ibs and self.ibs[0][0] <= self.queue.rptr:
            self.ibs.popleft()[1].free()
        while self.called and self.called[0][1] <= self.queue.rptr:
            self.called.popleft()

    def called_in(self, lo: int, hi: int) -> list[tuple[int, int, int, int, int]]:
        """The indirect buffers its submissions call, not read past yet, whose recorded bytes meet [lo, hi)."""
        self.reclaim()
        return [c for c in self.called if c[2] < hi and lo < c[2] + c[3]]

    def ran(self, called: tuple[int, int, int, int, int]) -> bool:
        """Whether the queue read past the submission of `called` (one of `called`), or past the packet calling
        its copy there."""
        start, end, _, _, copy = called
        at = self.queue.rptr
        if at >= end:
            return True
        packets = getattr(self.queue, "packets", None)
        return at > start and packets is not None and any(
            p.defn.indirect is not None and p.fields[p.defn.indirect[0]] == copy for p in packets(start, at))

    def copies(self) -> list[Buffer]:
        return [b for _, b in self.ibs] + self.new_ibs


@contextlib.contextmanager
def emulator_limits() -> Iterator[list[str]]:
    """The messages of what the emulated GPU stopped a queue on for not doing it (driver/errors.py NOT_EMULATED),
    as it logs them meanwhile."""
    found: list[str] = []

    class Limits(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if getattr(record, NOT_EMULATED, False):
                found.append(record.getMessage())

    handler, log = Limits(), logging.getLogger(EMULATOR_LOG)
    log.addHandler(handler)
    try:
        yield found
    finally:
        log.removeHandler(handler)


class Instance:
    """One replay of the trace on an open System, with its own buffers, queues, events and address map."""

    def __init__(self, trace: TraceReader, system: System, devices: dict[int, Device], s: Survey,
                 options: Options, move_all: bool = False, side_by_side: int = 1):
        """`side_by_side`: the instances replaying at once (this one included), which share the machine: a wait
        the recording saw complete may take that many times longer."""
        self.trace, self.system, self.devices, self.s, self.options = trace, system, devices, s, options
        self.slack, self.side_by_side = WAIT_SLACK * side_by_side, side_by_side
        self.move_all = move_all or options.relocate == "always"
        self.relocation = Relocation()
        self.buffers: RangeMap[ReplayBuffer] = RangeMap()  # recorded ranges -> their replays
        self.recorded = RecordedMemory(self.buffers)
        self.handles: dict[int, ReplayBuffer] = {}  # recorded handle -> its buffer's replay
        # recorded address of a freed buffer -> (where its replay was, bytes, its name): a buffer made at that
        # recorded address goes there too where it can, as packets submitted before the free reach it (campaign 105)
        self.vacated: dict[int, tuple[int, int, str]] = {}
        # recorded address of a buffer freed while a queue still had work, that a later buffer takes (Survey.refilled)
        # -> its addresses (Buffer.free's reservation), kept from other instances until then: the work may reach
        # them, as the recording's reached the buffer that took the address (campaign 112: --concurrent instances
        # took each other's freed addresses)
        self.kept: dict[int, tuple[int, int]] = {}
        self.queues: dict[int, ReplayQueue] = {}  # recorded queue id -> its replay
        self.events: dict[int, tuple[int, Event]] = {}  # recorded event id -> (its event record, replay event)
        # recorded id -> the replay event of a destroyed event whose id a later one takes (Survey.reborn): kept for
        # it, as the kernel gives a freed id to the next event, and packets for the old one may still be pending
        self.retired: dict[int, Event] = {}
        self.kernels = RecordedKernels()
        self.code_gpus: dict[int, int] = {}  # recorded va of a code object's buffer -> its recorded GPU
        self.programs: dict[int, Program] = {}  # recorded va of a code object -> the object loaded for the target
        self.own_programs: list[Program] = []  # those loaded for this instance alone (Survey.programs)
        self._thread_t: dict[int | None, int] = {}  # recorded thread -> the time of its last submission or wait
        # recorded va of a code object -> its key and where the target's object is loaded: what a kept
        # translation of a dispatch of it depends on
        self.loaded: dict[int, tuple[bytes, int]] = {}
        self.ib_depth = 0  # indirect buffers being followed now, each inside the one before
        self.levels: list[Writes] = []  # the ring being translated, then each indirect buffer it calls, nested
        # doorbell record whose kernel arguments a later CPU write or free lands in (Survey.late) -> its submission's
        # (queue, the write pointers before and after it, whether each dispatch on its ring reads a copy of its
        # recorded arguments, whether one in an indirect buffer does, where), till its queue ran it
        self.late: dict[int, tuple[ReplayQueue, int, int, tuple[bool, ...], bool, str]] = {}
        self.lateness = LateCursor(s.late)  # where this replay stands in Survey.late
        # of the submission being translated: (recorded queue, doorbell record), and whether each dispatch on its
        # ring reads a copy of its recorded kernel arguments, and whether one in an indirect buffer does
        self.doorbell: tuple[int, int] = (0, 0)
        self.dispatched: list[bool] = []
        self.ib_copied = False
        self.ib_dispatches = 0  # dispatches with kernel arguments in indirect buffers so far
        self.ib_spans = ArgumentSpans()  # where dispatches in indirect buffers read their arguments (_dispatched)
        self.stood: tuple[int, tuple[int, ...]] | None = None  # (record, _progress) of the last hold that settled
        self.ib_bytes = 0  # bytes of indirect buffer copies the submission being translated made so far
        self.clocks = False  # some packet wrote a GPU clock: copies may carry it (_copied_clocks)
        self._wake: Event | None = None  # what interrupts naming events the trace never made signal (`wake`)
        self.wake_ids: list[int] = []  # the events a CPU wait on memory sleeps on
        self.event_page: int | None = None  # the recorded event page's address: its slots are events' mailboxes
        self.mailboxes: set[int] = set()  # recorded event ids whose mailbox the relocation moves to the replay's
        self.halt = threading.Event()  # set: stop at the next record or the next look of a wait (Halted)
        self.result = Result()
        self.sampler = Sampler()

    # -- the stream ---------------------------------------------------------------------------------
    def run(self) -> Result:
        if self.s.hazards and self.move_all:
            raise ReplayError(f"{next(iter(self.s.hazards.values()))}; {IN_PLACE}")
        if self.s.hazards:
            why = next(iter(self.s.hazards.values())).removeprefix("relocation hazard: ")
            self.result.notes.append(f"kernels may write through addresses they find in memory or take by value, "
                                     f"which the recording does not count as written: what they write there is not "
                                     f"verified (first: {why})")
        t0 = time.perf_counter()
        r = None
        times = self.result.times = {} if self.options.timed else None
        self.sampler.start()
        try:
            with emulator_limits() as limits:
                try:
                    for r in R.checked(self.trace.records(handled(Instance))):
                        if self.halt.is_set():
                            raise Halted
                        getattr(self, f"_on_{r.type}")(r)
                        if times is not None:
                            times[r.n] = int((time.perf_counter() - t0) * 1e9)
                        if self.result.status:
                            break
                    else:
                        self._drain_all("the trace ends" if not self.trace.recovered else
                                        "the trace ends where the recording was cut short, which does not say "
                                        "whether its queues drained")
                except (WaitTimeout, GpuFault) as exc:
                    if limits:  # not a hang of the program's: the emulated GPU stopped where it cannot go on
                        raise TargetRefused(f"the emulated GPU does not do what the trace asks: {limits[0]}") from None
                    hang, va = self._own_fault(exc) if isinstance(exc, GpuFault) else (str(exc), None)
                    if va is not None:
                        self._parted(va)
                        self._reused(va)
                        self._unrelocated(va)
                    self.result.hang = hang
                if self.result.status and (left := self.s.checkpoints - self.result.checkpoints):
                    # campaign 120: a fault the program went on from stopped the replay, which said nothing of
                    # the checkpoints after it
                    at = f"record {r.n} ({r.type})" if r is not None else "its start"
                    self.result.notes.append(f"the replay stopped at {at}: {left} of the trace's {self.s.checkpoints} "
                                             f"checkpoints come after it and were not compared")
        except DeviceError as exc:
            raise TargetRefused(f"record {r.n if r else 0} ({r.type if r else 'start'}): the target refused "
                                f"it: {exc}") from exc
        finally:
            self.result.seconds = time.perf_counter() - t0
            self.result.occupancy = self.sampler.stop()
            self._teardown()
        return self.result

    def _own_fault(self, exc: GpuFault) -> tuple[str, int | None]:
        """What a GPU fault says of this instance, and the address of its VM fault if it had one. The faults are
        the process's, which instances side by side share (campaign 120: each named the first's): those at an
        address in this instance's buffers, with only its own queues; when none is, the others', said to be in none
        of its buffers."""
        if not exc.faults:  # one this replay said again, already its own
            return str(exc), exc.va
        mine = {id(rq.queue) for rq in self.queues.values()}
        own = [f for f in exc.faults if f[1] is not None and any(
            0 <= f[1] - rb.buffer.va < rb.buffer.size for _, _, rb in self.buffers)]
        queues = dict.fromkeys(text for f in exc.faults for q, text in f[2] if id(q) in mine)
        if own or self.side_by_side == 1:
            found = [f[0] for f in own or exc.faults]
            va = next((f[1] for f in own or exc.faults if f[1] is not None), None)
        else:
            found = [f"{f[0]}, in none of this instance's buffers (another's side by side, maybe)" for f in exc.faults]
            va = None
        return "; ".join((*found, *queues)) if queues else f"{'; '.join(found)}; {self._queue_report()}", va

    def _unrelocated(self, va: int) -> None:
        """ReplayError when the GPU faulted at the recorded address of a buffer this replay moved: an address of it
        in a form the survey does not read (split in halves, tagged, kept by an offset) reached the GPU as
        recorded, and no hazard was found for it. A fault there in the recording could not be (it was mapped).
        Also when it faulted in no buffer at all, once buffers were moved (a fault the recording had at that wait
        comes here without its address)."""
        hit = self.relocation.pointee(va)
        if hit is None and self.result.relocated and not any(
                0 <= va - rb.buffer.va < rb.buffer.size for _, _, rb in self.buffers):
            raise ReplayError(f"the GPU faulted at {va:#x}, in no buffer, where the recording's did not: this replay "
                              f"moved {self.result.relocated} buffer(s), and a kernel may reach one buffer from "
                              f"another's address by an offset it was given, which no relocation follows; "
                              f"{IN_PLACE}")
        if hit is None or not hit[2]:
            return
        rb = self.buffers.get(hit[0])
        name = (rb.buffer.name if rb is not None else None) or f"@{hit[0]:#x}"
        raise ReplayError(f"the GPU faulted at {va:#x}, the recorded address of buffer {name}+{va - hit[0]:#x}, which "
                          f"lies at {va + hit[2]:#x} in this replay: an address of it reached the GPU as recorded, in "
                          f"a form the survey cannot tell for one (a relocation hazard); {IN_PLACE}")

    def _reused(self, va: int) -> None:
        """ReplayError when the GPU faulted in the memory of a buffer this replay freed whose recorded address another
        buffer took since: packets submitted before the free reached that one in the recording, and the replay could
        not put it where it had put the freed one. A fault there in the recording could not be (it was mapped)."""
        for recorded, (at, size, label) in self.vacated.items():
            hit = self.buffers.find(recorded) if at <= va < at + size else None
            if hit is not None and hit[2].buffer.va != at:
                raise ReplayError(f"the GPU faulted at {va:#x}, in the memory of {label}, which this replay freed: "
                                  f"packets submitted before the free ran after {hit[2].buffer.label} took its "
                                  f"recorded address {recorded:#x}, and reached that one in the recording; the replay "
                                  f"could not put it where it had put the freed one: {IN_PLACE}")

    def _parted(self, va: int) -> None:
        """ReplayError when the GPU faulted at the end of a buffer of this replay whose recorded buffer had another
        right after it: an access (a copy, say) ran on from one into the other, as the GPU's page tables let it, and
        the replay did not keep them back to back. A fault there in the recording could not be (it was mapped)."""
        for start, size, rb in self.buffers:
            if rb.buffer.va + rb.buffer.size == va and (after := self.buffers.find(start + size)) is not None and \
                    after[2].buffer.va != va:
                names = [(b.buffer.name or f"@{at:#x}") for at, b in ((start, rb), (after[0], after[2]))]
                raise ReplayError(f"the GPU faulted at {va:#x}, just past the end of buffer {names[0]} in this "
                                  f"replay: in the recording buffer {names[1]} lay right after it, and an access ran "
                                  f"on from one into the other; the replay keeps them so only at their recorded "
                                  f"addresses: {IN_PLACE}")

    def contents_at(self, submission: int, vas: list[int]) -> dict[int, bytes]:
        """Run the trace up to its submission `submission` (not made), wait for every queue to drain, and read
        the buffers recorded at `vas` as they are then (through a copy into host memory when the CPU cannot see
        one). WaitTimeout if a queue does not drain; ReplayError if one stands still before finishing the
        submissions made to it (it waits for what later records signal): memory read then would not be what
        those submissions leave, and a range starting there cannot hold the rest of them. The instance is torn
        down after."""
        ends: dict[int, list[tuple[int, int]]] = {}  # queue -> (submission, the replay's write pointer after it)
        try:
            done = 0
            for r in R.checked(self.trace.records(handled(Instance))):
                if r.type == R.DOORBELL and done == submission:
                    break
                getattr(self, f"_on_{r.type}")(r)
                if r.type == R.DOORBELL:
                    rq = self.queues.get(r.fields["queue"])
                    if rq is not None:
                        ends.setdefault(r.fields["queue"], []).append((done, rq.queue.wptr))
                    done += 1
            self._settle_all(f"reconstructing the memory at submission {submission}")
            for queue, rq in self.queues.items():
                if not rq.queue.idle:
                    rptr = rq.queue.rptr
                    unfinished = next((n for n, end in ends.get(queue, ()) if end > rptr), 0)
                    raise ReplayError(
                        f"reconstructing the memory at submission {submission}: {rq.label} stands still in "
                        f"submission {unfinished}, waiting for what later records signal ({rq.queue.describe()}); a "
                        f"range starting after it cannot hold the rest of it: start it at submission {unfinished} "
                        "or earlier")
            return {va: self._read_whole(va) for va in vas if self.buffers.find(va) is not None}
        finally:
            self._teardown()

    def _read_whole(self, va: int) -> bytes:
        start, size, rb = self.buffers.find(va)
        buf = rb.buffer
        if buf.cpu is not None:
            return buf.read(0, size)
        staging = buf.device.alloc(size, "gtt", name="reconstruction staging", role="replay staging")
        q = buf.device.sdma_queue(name="reconstruction")
        try:
            q.copy(staging, buf, size).sync(self.options.timeout)
            return staging.read(0, size)
        finally:
            q.destroy()
            staging.free()

    def _on_alloc(self, r: Record) -> None:
        f = r.fields
        name, role = self.s.names.get(r.n, (None, "user"))
        if role == CODE:
            self.code_gpus[f["va"]] = f["gpu"]
            return
        if role == EVENT_PAGE:  # with the replay's page where the recording's was (session.open_target), and no
            self.event_page = f["va"]  # event of the replay's own before the recorded ones, mailboxes stay
        if role in INTERNAL_ROLES or f["domain"] not in POOLS:
            return
        dev = self.devices[f["gpu"]]
        cpu = f["domain"] != "vram" or bool(f["flags"] & K.AllocMemFlags.PUBLIC)
        opts = dict(cpu_access=cpu, executable=bool(f["flags"] & K.AllocMemFlags.EXECUTABLE),
                    coherent=bool(f["flags"] & K.AllocMemFlags.COHERENT),
                    uncached=bool(f["flags"] & K.AllocMemFlags.UNCACHED), name=name, role=role)
        with recorded_arguments(r):
            buf = self._alloc(dev, f, opts)
        self.relocation.add(f["va"], f["size"], buf.va)
        view = None if buf.cpu is None else memory_view(buf.cpu, buf.size)
        self.buffers.add(f["va"], f["size"], rb := ReplayBuffer(buf, role, view, gpus={f["gpu"]}, va=f["va"]))
        self.handles[f["handle"]] = rb
        self.result.relocated += buf.va != f["va"]

    def _alloc(self, dev: Device, f: dict, opts: dict) -> Buffer:
        """The replay of a recorded allocation: at its recorded address when it may and can go there, else where
        the replay put the freed buffer that had that address, where it can."""
        vacated = self.vacated.pop(f["va"], None)
        kept = self.kept.pop(f["va"], None)
        if vacated is not None and (self.move_all or vacated[0] != f["va"] or kept is not None):
            with contextlib.suppress(AddressInUse):
                return dev.alloc(f["size"], f["domain"], va=vacated[0], reserved=kept, **opts)
        if not self.move_all:
            try:
                return dev.alloc(f["size"], f["domain"], va=f["va"], **opts)
            except AddressInUse:
                if f["va"] in self.s.hazards:
                    raise ReplayError(f"buffer {opts['name'] or hex(f['va'])} cannot go at its recorded address "
                                      f"{f['va']:#x} here; {self.s.hazards[f['va']]}") from None
                if self.options.relocate == "never":
                    raise ReplayError(f"buffer {opts['name'] or hex(f['va'])} cannot go at its recorded address "
                                      f"{f['va']:#x} here, and --relocate never forbids moving it") from None
        return dev.alloc(f["size"], f["domain"], **opts)

    def _on_map(self, r: Record) -> None:
        rb = self.handles.get(r.fields["handle"])
        if rb is not None:
            rb.gpus.update(r.fields["gpus"])
            rb.buffer.map_to(*(self.devices[g] for g in r.fields["gpus"] if g in self.devices))

    def _on_unmap(self, r: Record) -> None:
        """Unmapped from the target devices of those GPUs, but those another recorded GPU still mapped goes to
        (--device, --gpu-map may put several on one): a GPU's access after it faults, as the recording's did
        (campaign 95). Held as a free is, where it takes kernel arguments away (the survey says where, and
        `ib_spans` for dispatches in indirect buffers)."""
        hits = self.lateness.hits(r.n) if r.n >= self.lateness.next else []
        rb = self.handles.get(r.fields["handle"])
        if rb is not None and self.ib_spans.pages and (hit := self.buffers.find(rb.va)) is not None:
            hits += self.ib_spans.hits(hit[0], hit[1])
        if hits:
            self._hold(r, hits)
        if rb is not None:
            rb.gpus.difference_update(r.fields["gpus"])
            kept = {self.devices[g] for g in rb.gpus if g in self.devices}
            rb.buffer.unmap_from(*{self.devices[g] for g in r.fields["gpus"] if g in self.devices} - kept)

    def _on_free(self, r: Record) -> None:
        hits = self.lateness.hits(r.n) if r.n >= self.lateness.next else []
        hit = self.buffers.find(r.fields["va"])
        if self.ib_spans.pages and hit is not None:
            hits += self.ib_spans.hits(hit[0], hit[1])
            self.ib_spans.drop(hit[0], hit[1])
        if hits:
            self._hold(r, hits)
        if hit is not None:
            self._hold_called(r, hit[0], hit[1])
        program = self.programs.pop(r.fields["va"], None)
        self.loaded.pop(r.fields["va"], None)
        if program is not None:  # the survey's to free, or this instance's
            self.kernels.unloaded(r.fields["va"])
            if program in self.own_programs:
                self.own_programs.remove(program)
                program.free()
        rb = self.handles.pop(r.fields["handle"], None)
        if rb is not None:
            self.vacated[r.fields["va"]] = (rb.buffer.va, rb.buffer.size, rb.buffer.label)
            self.recorded.forget()
            self.buffers.remove(r.fields["va"])
            self.relocation.remove(r.fields["va"])
            keep = r.n in self.s.refilled and not all(rq.queue.idle for rq in self.queues.values())
            if (kept := rb.buffer.free(keep_addresses=keep)) is not None:
                self.kept[r.fields["va"]] = kept

    def _on_queue(self, r: Record) -> None:
        f = r.fields
        dev = self.devices[f["gpu"]]
        name = f"replay q{f['queue']}"
        with recorded_arguments(r):
            if f["type"] == K.QueueType.COMPUTE and self.options.queue_type == "aql":
                q = Pm4OnAql(dev.aql_queue(name=name), self.options.timeout)
            elif f["type"] == K.QueueType.COMPUTE:
                q = dev.compute_queue(ring_size=f["ring_size"], name=name)
            elif f["type"] == K.QueueType.COMPUTE_AQL and self.options.queue_type == "pm4":
                q = AqlOnPm4(dev.compute_queue(name=name), self.recorded.read)
            elif f["type"] == K.QueueType.COMPUTE_AQL:
                q = AqlRing(dev.aql_queue(packets=f["ring_size"] // len(AQL.build("INVALID")), name=name),
                            self.options.timeout)
            else:
                q = dev.sdma_queue(ring_size=f["ring_size"], engine=self._engine(f, dev), name=name)
        rq = ReplayQueue(q, f"queue {f['queue']} (created at record {r.n})", kind=f["type"], ring_size=f["ring_size"])
        dispatch = None
        cache = None if self.move_all else self.s.caches.get(r.n)
        if f["type"] not in SDMA_KINDS:
            reader = DispatchReader(_dialects(f)[0], self.kernels, self.recorded.read)
            dispatch = lambda p, where: self._dispatch(rq, reader, p, where)  # noqa: E731
            if cache is not None:  # what a translation reads of memory (kernel arguments, signals) is noted
                rq.memo = DispatchMemo(reader.registers, self.recorded, self.loaded)
                reader.read = rq.memo.read
                if isinstance(q, AqlOnPm4):
                    q.read = rq.memo.read
        indirect = lambda base, size, where: self._indirect(rq, base, size, where)  # noqa: E731
        rq.translator = _translator(f, self.devices, self.relocation, self._trap_event, indirect, cache, dispatch,
                                    isinstance(q, AqlOnPm4), rq.memo, self.s.xccs)
        rq.ib_translator = rq.translator
        ib = indirect_dialect(rq.translator.src, self._recorded_gpu(f["gpu"]))
        if ib is not rq.translator.src:  # translated as a PM4 queue's packets on the same GPU are
            if ib is None:
                raise ReplayError(f"{rq.label}: the trace's header does not say which packets its GPU's indirect "
                                  f"buffers hold")
            rq.ib_translator = _translator({**f, "type": K.QueueType.COMPUTE, "dialect": ib.name}, self.devices,
                                           self.relocation, self._trap_event, indirect, dispatch=_ib_dispatch,
                                           xccs=self.s.xccs)
        self.queues[f["queue"]] = rq
        self.sampler.watch(queue_label(f, self.options.queue_type if f["type"] not in SDMA_KINDS else None), q)

    def _recorded_gpu(self, gpu_id: int) -> dict:
        """The trace header's entry for the GPU `gpu_id` (its target and packet dialects)."""
        return next((g for g in self.trace.header.get("gpus") or () if g.get("gpu_id") == gpu_id), {})

    def _engine(self, f: dict, dev: Device) -> str | int:
        engine, note = sdma_engine(f, dev)
        if note is not None:
            self.result.notes.append(note)
        return engine

    def _on_code_object(self, r: Record) -> None:
        """Load the object the survey chose for the target, in place of the recorded image."""
        f = r.fields
        gpu = self.code_gpus.get(f["va"])
        if gpu is None:
            raise BadInput(f"record {r.n} (code_object): no buffer was allocated at {f['va']:#x} (corrupt trace)")
        dev = self.devices[gpu]
        self.kernels.loaded(f, self.trace.blob(f["key"]), f"record {r.n} (code_object)")
        data = self.s.objects.get((f["key"], dev.target.name))
        if data is not None:  # else no dispatch runs it (the survey said so otherwise)
            loaded = (f["key"], dev.target.name, dev.index)
            own = r.n in self.s.unshared
            program = None if own else self.s.programs.get(loaded)
            if program is None:
                program = dev.load(data, f.get("name"))
                if program.code.writable or own:  # its globals start as the recording's did, in every loop and
                    self.own_programs.append(program)  # instance; or it is freed under a dispatch (Survey.unshared)
                else:
                    self.s.programs[loaded] = program
            self.programs[f["va"]] = program
            self.loaded[f["va"]] = (f["key"], program.buffer.va)

    def _dispatch(self, rq: ReplayQueue, reader: DispatchReader, p: Packet, where: str) -> bytes:
        """A recorded dispatch re-derived for the target: its kernel from the object loaded for it, its kernel
        arguments rewritten for that build."""
        if isinstance(rq.queue, AqlOnPm4) and p.defn.kernel is None:
            return rq.queue.convert(p, lambda a: self._moved(a, where))
        d = reader.dispatch(p, where)
        if d is None:
            return b""
        program = self.programs.get(d.kernel.obj)
        if program is None or d.kernel.name not in program.code.kernels:
            raise ReplayError(f"{where}: no code object for {rq.queue.device.target.name} holds {d.kernel.name}")
        kernel = program.kernel(d.kernel.name)
        from kfdtrace.driver.kernargs import pointers

        data = reader.kernargs(d, where)
        launch, args = relaunch(d, data, kernel, self.relocation.move_pointer, where)
        if rq.translator is not None:  # what names the dispatch as the last writer of a buffer it diverges in
            rq.translator.kernel_writes = tuple(a.value for a in pointers(d.kernel.kernel.metadata, data)
                                                if a.value and not a.arg.read_only)
        in_place = self._in_place(rq, d, kernel, args)
        if in_place is not None:
            try:
                out = self._launch(rq, d, kernel, launch, args, in_place, where)
            except NotInPlace:
                pass
            else:
                if rq.memo is not None and self._keepable(rq, kernel, args):
                    rq.memo.note(d.kernel.obj, None, False, d.arguments)
                self._dispatched(False, d.arguments)
                return out
        if d.kernargs:
            self._copy(rq, d, where)
        self._dispatched(bool(d.kernargs), d.arguments)
        return self._launch(rq, d, kernel, launch, args, self._kept_kernargs(rq, d, kernel, args), where)

    def _dispatched(self, copied: bool, arguments: tuple[int, int]) -> None:
        """Note a dispatch of the submission being translated, `copied`: given a copy of its recorded kernel
        arguments (`dispatched`), and where one in an indirect buffer reads them (`ib_spans`: the survey does not
        follow indirect buffers), `arguments` (va, bytes; va 0: none)."""
        if not self.ib_depth:
            self.dispatched.append(copied)
            return
        self.ib_copied |= copied
        if arguments[0]:
            self.ib_dispatches += 1
            queue, doorbell = self.doorbell
            self.ib_spans.add(queue, *arguments, doorbell, None)

    def _copy(self, rq: ReplayQueue, d: Dispatch, where: str) -> None:
        """Refuse a dispatch given a copy of its kernel arguments taken now whose arguments a packet writes after
        the CPU last did (this submission's before it, or one still to run), which the copy cannot hold."""
        hit = self.buffers.find(d.kernargs)
        if hit is None:
            return
        lo, hi, rb = hit[0], hit[0] + hit[1], hit[2]
        if rb.gpu_from is not None or any(lo <= a < hi for level in self.levels for _, addresses, _ in level.writes
                              for a in addresses):
            raise ReplayError(f"{where}: {d.packet.name} at byte {d.packet.offset:#x} ({d.kernel.name}) reads its "
                              f"kernel arguments from {rb.buffer.label}, which the GPU writes after the CPU last did; "
                              f"the replay must copy them at the doorbell (its buffers moved, another kind of queue, "
                              f"or arguments that differ for the target), before the GPU wrote them. Replay with the "
                              f"buffers in place (no --relocate always, one instance) on the recorded kind of queue")

    def _launch(self, rq: ReplayQueue, d: Dispatch, kernel: LoadedKernel, launch: Launch, args: Kernargs,
                kernarg: KernargSource | None, where: str) -> bytes:
        if d.packet.defn.kernel is not None:  # an AQL dispatch packet, on an AQL queue or as PM4 packets
            out, held = rq.queue.launch(kernel, launch, args, d.packet, lambda a: self._moved(a, where), kernarg)
            rq.new_ibs += held
            return out
        return rq.queue.launch(kernel, launch, args, kernarg)

    def _in_place(self, rq: ReplayQueue, d: Dispatch, kernel: LoadedKernel, args: Kernargs) -> KernargSource | None:
        """Kernel-argument memory at the dispatch's recorded address, in the replay's buffer there, when it sits
        where it was recorded (InPlace: the arguments must be there, and for a kernel that reads its dispatch
        packet, the copy of it a PM4 launch puts after them); None where the queue converts packets."""
        va = d.kernargs
        if not va or isinstance(rq.queue, AqlOnPm4 | Pm4OnAql) or self.relocation.move(va) != va:
            return None
        hit = self.buffers.find(va)
        if hit is None or hit[2].view is None:
            return None
        start, size, rb = hit
        reads_packet = any(name == "dispatch_ptr" for name, _ in kernel.kernel.descriptor.user_sgprs)

        def kernarg(n: int, align: int) -> InPlace:
            if va % align or va + n > start + size:
                raise NotInPlace
            return InPlace(va, rb.view, va - start, n, n if reads_packet else len(args.data))
        return kernarg

    def _kept_kernargs(self, rq: ReplayQueue, d: Dispatch, kernel: LoadedKernel,
                       args: Kernargs) -> KernargSource | None:
        """Where a dispatch the queue's memo may keep puts its kernel arguments (memory that lives as long as the
        replay), the memo noting it and the code object; None (the queue's own memory) when there is no memo, or it
        cannot keep this dispatch: one given scratch or a dispatch id, or the store is full."""
        memo = rq.memo
        if memo is None or not self._keepable(rq, kernel, args):
            return None
        dev = rq.queue.device
        store = self.s.kernarg_stores.get(dev.index)
        if store is None:
            store = self.s.kernarg_stores[dev.index] = KernargStore(dev)
        if not store.fits(len(args.data), args.align):
            memo.refuse()
            return None

        def kernarg(size: int, align: int) -> Piece:
            piece = store.piece(size, align)
            memo.note(d.kernel.obj, piece, bool(d.kernargs), d.arguments)
            return piece
        return kernarg

    @staticmethod
    def _keepable(rq: ReplayQueue, kernel: LoadedKernel, args: Kernargs) -> bool:
        """Whether the queue's memo may keep the submission with a dispatch of `kernel` (refused if not: one given
        scratch, whose memory is the queue's of the moment, or a dispatch id, which differs every time)."""
        memo = rq.memo
        if memo is None or not memo.recording:
            return False
        sgprs = kernel.kernel.descriptor.user_sgprs
        if kernel.kernel.scratch is not None or any(name == "dispatch_id" for name, _ in sgprs):
            memo.refuse()
            return False
        return True

    def _moved(self, addr: int, where: str) -> int:
        if not addr:
            return 0
        new = self.relocation.move(addr)
        if new is None:
            raise OutsideBuffers(f"{where}: {addr:#x} is {self.relocation.unplaced(addr) or 'in no recorded buffer'}; "
                                 f"refusing to submit it")
        return new

    def _on_queue_destroy(self, r: Record) -> None:
        rq = self.queues.get(r.fields["queue"])
        if rq is None:
            return
        rptr = r.fields.get("rptr")  # the recorded queue's read pointer at its destroy (newer traces)
        end = rq.written if r.fields.get("wptr") is None else K.doorbell_end(rq.kind, r.fields["wptr"])
        if rptr is None:
            self._drain(rq, f"it is destroyed at record {r.n}; the trace does not say whether the recording had "
                            f"drained it, so it is expected to")
        elif K.read_end(rq.kind, rptr, end, rq.ring_size) >= end:
            self._drain(rq, f"it is destroyed at record {r.n}, and the recording had drained it")
        elif not rq.queue.idle:
            # left with work as recorded, if the replay's stands where the recording's did, not stopped by the GPU
            behind, launching = self._behind(rq, K.read_end(rq.kind, rptr, end, rq.ring_size))
            # a kernel the recording's still ran: destroyed as soon as the replay's is there too (it may never end)
            until = (lambda: not behind(rq)) if launching and behind is not None else None
            try:  # given as long as a wait the recording saw complete (a long kernel before the wait: campaign 86)
                self._settle_all(f"{rq.label} is destroyed at record {r.n}", queues=[rq], behind=behind, until=until,
                                 timeout=self._limit(r))
            except WaitTimeout:
                if not isinstance(rq.queue, Pm4OnAql):
                    raise
                # a wait inside its indirect buffers does not show (Pm4OnAql.waiting): unmoved that long, it
                # stands, as the recording's did (what it left undone, a checkpoint compares)
            self.result.left.append(rq.label)
        del self.queues[r.fields["queue"]]
        self.sampler.unwatch(rq.queue)
        rq.queue.destroy()
        for ib in rq.copies():
            ib.free()

    def _on_doorbell(self, r: Record) -> None:
        f = r.fields
        rq = self.queues.get(f["queue"])
        if rq is None:
            return
        where = f"submission {self.result.submissions} on {rq.label}"
        if f.get("t") is not None:
            self._thread_t[f.get("tid")] = f["t"]
        t, ring, writes = rq.translator, f["ring"], []
        rq.writes, self.ib_bytes = writes, 0
        rq.reclaim()
        counted, taken = t.packets, t.taken
        if r.n >= self.lateness.next:  # its packets may write the kernel arguments of dispatches submitted before
            self._hold(r, self.lateness.hits(r.n))
        late = r.n >= self.lateness.next_doorbell and self.lateness.flagged(r.n)
        self.doorbell, self.ib_copied, ib_dispatches = (f["queue"], r.n), False, self.ib_dispatches
        self.dispatched.clear()
        self.levels.append(level := Writes(writes, ring, where, t.src))
        try:
            packets = t.ring(ring, where, writes)
        finally:
            self.levels.pop()
        self.result.packets += t.packets - counted
        self.result.cached += t.taken - taken
        self._noted(level)
        if any(q.called for q in self.queues.values() if q is not rq):  # (what another queue's call ran first)
            for a in {a for _, addresses, _ in writes for a in addresses}:
                self._hold_called(r, a, 1, rq)
        start = rq.queue.wptr
        if packets:
            try:
                rq.queue.emit(packets)
            except ValueError as exc:  # packets that cannot lie on the ring as the engine must read them
                raise ReplayError(f"{where}: {exc}") from None
        rq.queue.submit()
        if rq.new_ibs:
            rq.ibs.extend((rq.queue.wptr, ib) for ib in rq.new_ibs)
            rq.new_ibs.clear()
        if rq.new_called:
            rq.called.extend((start, rq.queue.wptr, *c) for c in rq.new_called)
            rq.new_called.clear()
        written = t.src.submitted_end(rq.written, K.doorbell_end(rq.kind, f["value"]), ring)
        rq.keep(rq.written, written, start, ring)
        rq.written = written
        self.result.submissions += 1
        while rq.late and rq.late[0][0] <= rq.queue.rptr:  # run: what lands in their arguments now may go ahead
            self.late.pop(rq.late.popleft()[1], None)
        if late or self.ib_dispatches != ib_dispatches:
            copied = rq.memo.copied if t.taken != taken and rq.memo is not None else tuple(self.dispatched)
            self.late[r.n] = (rq, start, rq.queue.wptr, copied, self.ib_copied, where)
            rq.late.append((rq.queue.wptr, r.n))

    def _hold_called(self, r: Record, va: int, size: int, writer: ReplayQueue | None = None) -> None:
        """Before record `r` changes the recorded bytes [va, va+size) (a CPU write or a free, or a doorbell's
        packets writing there), wait until every queue whose submission calls an indirect buffer there has read
        past it, or until every queue stands at a wait or idles (as `_hold` does for kernel arguments). The replay
        translated that buffer at the doorbell: a queue that still stands before it would run what it held then,
        not what the recording's ran (campaign 112), so the replay refuses. (The `writer` queue's own calls come
        before its packets.)"""
        for rq in [q for q in self.queues.values() if q.called and q is not writer]:
            for called in rq.called_in(va, va + size):
                def ran(rq: ReplayQueue = rq, called: tuple[int, int, int, int, int] = called) -> bool:
                    return rq.ran(called)
                if not ran() and not self._still_standing(r.n):
                    with contextlib.suppress(WaitTimeout):  # (a kernel before it that runs till the CPU goes on)
                        self._settle_all(f"record {r.n} ({r.type}) changes an indirect buffer {rq.label} calls",
                                         HOLD_QUIET, until=ran)
                    if not ran():
                        self.stood = (r.n, self._progress())
                if not ran():
                    raise ReplayError(
                        f"record {r.n} ({r.type}) changes the indirect buffer at {called[2]:#x}+{called[3]:#x} that "
                        f"{rq.label} calls, after the doorbell that called it and while the queue stands before the "
                        f"call: the recording's GPU ran what the buffer held then; a replay translates an indirect "
                        f"buffer at its doorbell and cannot follow the change")

    def _hold(self, r: Record, hits: list[Dispatched]) -> None:
        """Before a CPU write or free `r` that lands in the recorded kernel arguments of dispatches submitted before
        (`hits`: Survey.late), wait until their queues ran them (as the recording's had: its CPU waited for them,
        though perhaps by polling what the trace does not hold), or until every queue stands at a wait or idles,
        or none moved on for --timeout (as the recording's stood: the write comes before the dispatches read their
        arguments). Arguments in place take the write then; a copy taken at the doorbell cannot, and the replay
        refuses it. A doorbell's packets that write them (`r` a doorbell) are ordered by the GPU's waits as
        recorded: only copies are looked at."""
        for queue, doorbell, after in hits:
            entry = self.late.get(doorbell)
            if entry is None:
                continue
            rq, start, end, flags, ib_copied, where = entry
            copied = ib_copied if after is None else flags[len(flags) - 1 - after] if after < len(flags) else \
                any(flags)
            if r.type == R.DOORBELL and not copied:
                continue
            if self.queues.get(queue) is not rq:  # destroyed since: it ran what it was going to
                del self.late[doorbell]
                continue
            hidden = isinstance(rq.queue, Pm4OnAql)  # its dispatches and waits are in indirect buffers
            ran = functools.partial(self._ran, rq, start, end, None if hidden else after)
            if hidden:  # whether it stands at a wait does not show: given --timeout to run them
                self._wait_until(ran, self.options.timeout)
            elif not ran() and not self._still_standing(r.n):
                try:
                    self._settle_all(f"record {r.n} ({r.type}) lands in the kernel arguments of {where}", HOLD_QUIET,
                                     until=ran)
                except WaitTimeout:  # a kernel before them that runs till the CPU goes on (one polling memory)
                    pass
                if not ran():
                    self.stood = (r.n, self._progress())
            if ran():
                del self.late[doorbell]
            elif copied:
                stands = f"and its queue had not run it after {self.options.timeout:g} s" if hidden else \
                    "while its queue stands at a wait before it"
                raise ReplayError(
                    f"record {r.n} ({r.type}) changes the kernel arguments of a dispatch of {where} after its "
                    f"doorbell, {stands}; the replay gave it a copy taken at the "
                    f"doorbell (its buffers moved, another kind of queue, or arguments that differ for the target), "
                    f"which cannot see the change. Replay with the buffers in place (no --relocate always, one "
                    f"instance) on the recorded kind of queue")

    def _still_standing(self, n: int) -> bool:
        """Whether the queues stand where a hold at the record before `n` (a CPU write held back as well) found them
        standing, none moved since: as many writes into one dispatch's arguments wait once."""
        stood = self.stood
        return stood is not None and stood[0] in (n - 1, n) and stood[1] == self._progress() and \
            all(rq.queue.idle or rq.queue.blocked(self._load) for rq in self.queues.values())

    def _load(self, va: int, size: int) -> int | None:
        """The `size`-byte little-endian word at the replay's address `va` (where a queue's wait polls), in a
        CPU-visible buffer of the replay or in the indirect buffers it made (None: in none)."""
        for _, _, rb in self.buffers:
            view, start = rb.view, rb.buffer.va
            if view is not None and start <= va and va + size <= start + len(view):
                return int.from_bytes(view[va - start:va - start + size], "little")
        for rq in self.queues.values():
            for ib in rq.copies():
                if ib.va <= va and va + size <= ib.va + ib.size:
                    return int.from_bytes(ib.read(va - ib.va, size), "little")
        return None

    @staticmethod
    def _ran(rq: ReplayQueue, start: int, end: int, after: int | None) -> bool:
        """Whether the queue read past the dispatch of its submission from `start` to `end` that `after` more
        dispatches follow in it (None: past the whole submission)."""
        at = rq.queue.rptr
        if at >= end:
            return True
        if after is None or at < start:
            return False
        left = rq.queue.packets(at, end)  # none: not read (past the ring's size, or not decoded)
        return bool(left) and sum(p.defn.launches for p in left) <= after

    def _noted(self, level: Writes) -> None:
        """`_wrote` the writes of a ring or indirect buffer's packets translated since it was last called for it."""
        self._wrote(level.writes[level.noted:], level.where, level.ring, level.src)
        level.noted = len(level.writes)

    def _wrote(self, writes: list[Write], where: str, ring: bytes, src: Dialect) -> None:
        """Note in each buffer the packets of `ring` (`where`, in `src`) that write it last, and which of its bytes
        they fill with a GPU clock."""
        start = end = 0
        clocked = src.clocked  # AQL: a completion signal's timestamps, when its queue profiles
        for at, addresses, volatile in writes:
            for addr in addresses:
                if not start <= addr < end:  # most writes land in the buffer the one before did
                    hit = self.buffers.find(addr)
                    if hit is None:
                        start = end = 0
                        continue
                    start, end, rb = hit[0], hit[0] + hit[1], hit[2]
                wrote = rb.wrote
                if not wrote or wrote[-1][2] != at or wrote[-1][1] is not ring:  # a packet writing twice: once
                    wrote.append((where, ring, at, src))
                if volatile is None:  # a kernel's: where in the buffer is not known
                    continue
                if rb.gpu_from is None or addr < rb.gpu_from:
                    rb.gpu_from = addr
                if volatile:  # GPU clocks differ on every run
                    rb.volatile.update(range(addr - start, addr - start + CLOCK_BYTES))
                    self.clocks = True
                elif self.clocks:  # other data over a clock is compared again; a copy carries the clocks it copies
                    self._clocks_over(ring, at, src, addr, rb, start)
                if clocked is not None:
                    rb.volatile.update(range(addr - start + clocked[0], addr - start + sum(clocked)))
                    self.clocks = True

    def _clocks_over(self, ring: bytes, at: int, src: Dialect, addr: int, rb: ReplayBuffer, start: int) -> None:
        """Once some packet wrote a GPU clock: the packet at `at` of `ring` writing other data at `addr` (in `rb`,
        at `start`) unmasks the bytes it covers (as far as its table counts them: a dword when it does not), and
        masks those it copies a clock to from where it lies (a profiler's timestamps copied out of VRAM: campaign 93
        left them compared, DIVERGED)."""
        if not rb.volatile:  # nothing to unmask: decoded only if it may copy (most writes are of no copy)
            d = src.definition(int.from_bytes(ring[at:at + 4], "little"))
            if d is None or d.split is None or len(d.split[1]) < 2:
                return
        try:
            p = src.decode(ring, at)
        except PacketError:
            return
        off = addr - start
        if rb.volatile:
            _unmask(rb, off, off + (next((n for a, n in p.written_ranges() if a == addr), None) or 4))
        copied = p.copied()
        if copied is None or copied[1] != addr or (hit := self.buffers.find(copied[0])) is None or not hit[2].volatile:
            return
        lo, n = copied[0] - hit[0], copied[2]
        rb.volatile.update(c - lo + off for c in hit[2].volatile if lo <= c < lo + n)

    def _indirect(self, rq: ReplayQueue, base: int, size: int, where: str) -> tuple[int, int]:
        """An indirect buffer, followed: its packets (the recorded ones, written by the replayed CPU writes)
        translated like the ring's, into a buffer of the replay's own; its (address, dwords)."""
        hit = self.buffers.find(base)
        if hit is None or hit[2].buffer.cpu is None:
            raise ReplayError(f"{where}: indirect buffer {base:#x}+{size * 4:#x} is not in a CPU-visible buffer")
        if base + size * 4 > hit[0] + hit[1]:
            past = base + size * 4 - hit[0] - hit[1]
            raise ReplayError(f"{where}: indirect buffer {base:#x}+{size * 4:#x} runs {past:#x} bytes past the end of "
                              f"{hit[2].buffer.label}")
        rb, lo, end = hit[2], hit[0], base + size * 4
        # a GPU write from at or past its end cannot reach it; one from before it may run on into it
        if rb.gpu_from is not None and rb.gpu_from < end or \
                any(lo <= a < end for _, addresses, _ in rq.writes for a in addresses):
            raise ReplayError(f"{where}: indirect buffer {base:#x}+{size * 4:#x} lies in {rb.buffer.label}, which the "
                              f"GPU writes before it runs (after the CPU last wrote it): the packets it then holds "
                              f"are not in the trace, and a replay cannot translate packets the GPU builds")
        recorded = rb.buffer.read(base - lo, size * 4)
        if self.ib_depth >= MAX_IB_DEPTH:
            raise BadInput(f"{where}: indirect buffers chain more than {MAX_IB_DEPTH} deep at {base:#x} (one "
                           f"points at itself or at one it is in?)")
        self.ib_depth += 1
        t, at, writes = rq.ib_translator, f"{where} indirect buffer at {base:#x}", []
        self._noted(self.levels[-1])  # what the packets before it wrote, first: a copy in it may take their clocks
        self.levels.append(level := Writes(writes, recorded, at, t.src))
        taken = t.taken
        try:
            translated = t.ring(recorded, at, writes)
            if t.taken != taken:  # from the memo: its dispatches noted as translating them would
                for copied, span in zip(rq.memo.copied, rq.memo.arguments, strict=True):
                    self._dispatched(copied, span)
        except ReplayError:
            if any(recorded):
                raise
            raise ReplayError(f"{at}: it holds no packets yet when the replay translates the submission (its "
                              f"{size * 4} bytes are zeros): the GPU writes them (a kernel or packet of this "
                              f"submission, or one still running), and a replay cannot translate packets the GPU "
                              f"builds") from None
        finally:
            self.ib_depth -= 1
            self.levels.pop()
        self._noted(level)  # what the IB's packets write, clocks included
        nop = t.dst.build("NOP")
        translated += nop * ((-len(translated) // 4) % 8)  # an IB ends on an 8-dword boundary
        self.ib_bytes += max(len(translated), 4096)
        if self.ib_bytes > MAX_IB_COPY_BYTES:  # each call is a copy: nested calls multiply them
            raise ReplayError(f"{at}: the submission's indirect buffers, as called (nested calls copy theirs each "
                              f"time), take more than {MAX_IB_COPY_BYTES >> 20} MiB of copies")
        ib = rq.queue.device.alloc(max(len(translated), 4096), "gtt", name=f"{where} IB",
                                   role="replay indirect buffer")
        ib.write(translated)
        rq.new_ibs.append(ib)
        rq.new_called.append((base, size * 4, ib.va))
        return ib.va, len(translated) // 4

    def _target(self, r: Record, va: int, size: int) -> tuple[ReplayBuffer, int]:
        """The replay buffer and offset of the `size` recorded bytes at `va` that record `r` writes or reads."""
        hit = self.buffers.find(va)
        if hit is None or hit[2].buffer.cpu is None:
            raise ReplayError(f"recorded address {va:#x} is in no CPU-visible buffer of this replay")
        if va + size > hit[0] + hit[1]:
            raise BadInput(f"record {r.n} ({r.type}): bytes [{va:#x}, {va + size:#x}) run past the end of the "
                           f"buffer at {hit[0]:#x}+{hit[1]:#x} (corrupt trace)")
        return hit[2], va - hit[0]

    def _on_mem(self, r: Record) -> None:
        data = self.trace.blob(r.fields["key"])
        if len(data) != r.fields["size"]:
            raise BadInput(f"record {r.n} (mem): it claims {r.fields['size']} bytes, its blob holds {len(data)} "
                           f"(corrupt trace)")
        rb, off = self._target(r, r.fields["va"], len(data))
        hits = self.lateness.hits(r.n) if r.n >= self.lateness.next else []
        if self.ib_spans.pages:
            hits += self.ib_spans.hits(r.fields["va"], len(data))
        if hits:
            self._hold(r, hits)
        self._hold_called(r, r.fields["va"], len(data))
        rb.buffer.write(data, off)
        rb.gpu_from = None
        if rb.volatile:  # no clock is where the CPU wrote
            _unmask(rb, off, off + len(data))

    def _semaphore(self, r: Record) -> Semaphore:
        addr = r.fields["addr"]
        if addr % 8:
            raise BadInput(f"record {r.n} ({r.type}): a semaphore at {addr:#x} is not 8-byte aligned (corrupt trace)")
        rb, off = self._target(r, addr, 8)
        return Semaphore.view(self.system, rb.buffer, off)

    def _on_cpu_signal(self, r: Record) -> None:
        sem = self._semaphore(r)
        if self.buffers.find(r.fields["addr"])[2].role == SIGNAL:
            self._own_signal(sem.buffer, sem.offset - AmdSignal.value.offset)
        sem.signal(r.fields["value"])

    @property
    def wake(self) -> Event:
        """The instance's own signal event, made when first needed: made up front it would take the id the
        recording's first event had, whose mailbox then could not stay where it was recorded."""
        if self._wake is None:
            self._wake = self.system.event()
            self.wake_ids.append(self._wake.id)
        return self._wake

    def _own_signal(self, buf: Buffer, offset: int) -> None:
        """An AQL signal's amd_signal_t, made the replay's: completing it interrupts the replay's event of the
        recorded one, through that event's mailbox (the instance's own event when the trace made none)."""
        if offset < 0:
            return
        signal = AmdSignal.from_address(buf.cpu_addr(offset))
        signal.kind = SignalKind.USER
        hit = self.events.get(signal.event_id)
        event = self.wake if hit is None else hit[1]
        signal.event_mailbox_ptr = self.system.event_mailbox(event.id)
        signal.event_id = event.id

    def _on_signal_wait(self, r: Record) -> None:
        f = r.fields
        rb, off = self._target(r, f["addr"], 8)
        try:
            condition = SignalCondition(f["condition"])
        except ValueError:
            raise BadInput(f"record {r.n} (signal_wait): condition {f['condition']} is no HSA signal condition "
                           f"(corrupt trace)") from None
        word, compare = ctypes.c_int64.from_address(rb.buffer.cpu_addr(off)), CONDITIONS[condition]
        what = f"the wait for the AQL signal at {f['addr']:#x} to be {condition.name} {f['value']}"

        def wait(timeout: float) -> bool:
            return self._wait_until(lambda: compare(word.value, f["value"]), timeout)
        if not f["ok"]:
            self._failed_when_recorded(r, what, wait)
        elif not self._patiently(wait, limit := self._limit(r)):
            raise WaitTimeout(f"the replay waited {limit:g} s in {what}, which is {word.value}; "
                              f"{self._queue_report()}")

    def _on_cpu_wait(self, r: Record) -> None:
        f = r.fields
        sem = self._semaphore(r)
        what = f"the wait for {f['value']} at {f['addr']:#x} ({sem.buffer.label}+{sem.offset:#x})"
        if not f["ok"]:
            self._failed_when_recorded(r, what, lambda t: self._wait_value(sem, f["value"], t))
        elif not self._patiently(lambda t: self._wait_value(sem, f["value"], t), limit := self._limit(r)):
            raise WaitTimeout(f"the replay waited {limit:g} s in {what}, which is {sem.value}; "
                              f"{self._queue_report()}")

    def _limit(self, r: Record) -> float:
        """How long the replay waits in a wait the recording saw complete: --timeout, or WAIT_SLACK times what the
        recording's took, times the instances side by side, if that is longer (a big copy, a long kernel, which
        runs no faster than its read pointer moves). What it took is told by the time since the thread's last
        submission or wait the replay follows (so maybe more: a longer limit, never a false hang)."""
        t, tid = r.fields.get("t"), r.fields.get("tid")
        if t is None:
            return self.options.timeout
        took, self._thread_t[tid] = t - self._thread_t.get(tid, t), t
        # the times are the trace's, which may lie: at most WAIT_SLACK times the recorded wait's own timeout
        # (it completed within it), and an hour (--timeout, when longer)
        cap = MAX_WAIT_LIMIT
        if isinstance(given := r.fields.get("timeout"), (int, float)) and 0 <= given < cap:
            cap = self.slack * given
        return max(self.options.timeout, min(self.slack * took / 1e9, cap))

    def _patiently(self, wait: Callable[[float], bool], limit: float) -> bool:
        """`wait(limit)` for a wait the recording saw complete, again for as long as some queue of the instance
        moved on meanwhile: a replay slower than the recording (a loaded machine, instances side by side) is no
        hang while its queues still run. Not for waits the recording timed out on: those take the time they took."""
        where = self._progress()
        while not wait(limit):
            moved = self._progress()
            if moved == where:
                return False
            where = moved
        return True

    def _halted(self) -> None:
        if self.halt.is_set():
            raise Halted

    def _progress(self) -> tuple[int, ...]:
        """How far each of the instance's queues has read."""
        return tuple(rq.queue.rptr for rq in self.queues.values())

    def _wait_value(self, sem: Semaphore, value: int, timeout: float) -> bool:
        """Whether the semaphore reached `value` within `timeout` s (sleeping on the events that wake CPU waits
        on memory, re-reading at least every POLL_SLICE_MS); GpuFault if a GPU stopped a queue."""
        return self._wait_until(lambda: sem.value >= value, timeout)

    def _wait_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Whether `done()` came true within `timeout` s, sleeping as _wait_value says."""
        deadline = time.monotonic() + timeout
        while not done():
            self._halted()
            self.system.raise_gpu_faults()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.system.wait_events(self.wake_ids, max(1, min(POLL_SLICE_MS, int(left * 1000))))
        return True

    def _failed_when_recorded(self, r: Record, what: str, wait: Callable[[float], bool]) -> None:
        """A wait the recording timed out on, or a GPU fault ended (`fault`): the same hang or fault is the
        expected outcome, completing is a difference. Either way the replay stops here: what follows is the
        program's error handling. But a timeout its thread went on to wait again after (Survey.retried: a poll
        loop) is waited out as recorded, whatever it comes to, and the replay goes on; so is one the program went on
        from (Survey.went_on), noting the first that completes (the checkpoints after it tell whether that
        mattered)."""
        f = r.fields
        recorded, fault = f["timeout"], f.get("fault")
        if r.n in self.s.retried:
            wait(min(recorded, self.options.timeout) if recorded >= 0 else 0)
            return
        if r.n in self.s.went_on and fault is None:
            if wait(min(recorded, self.options.timeout) if recorded >= 0 else 0) and not self.result.went_on:
                self.result.went_on = True
                self.result.notes.append(f"{what} completed in the replay, but timed out after {recorded:g} s in the "
                                         f"recording, which went on from it (record {r.n}; later ones like it are "
                                         f"not noted)")
            return
        if fault is not None:
            try:
                if wait(self.options.timeout):
                    self.result.difference = (f"{what} completed in the replay, but a GPU fault ended it in the "
                                              f"recording: {fault}")
                else:
                    self.result.hang = (f"{what} did not complete within {self.options.timeout:g} s; a GPU fault "
                                        f"ended it in the recording ({fault}); {self._queue_report()}")
            except GpuFault as exc:
                raise GpuFault(f"{self._own_fault(exc)[0]}; the recording's GPU stopped a queue at the same wait: "
                               f"{fault}") from None
            return
        limit = min(recorded, self.options.timeout) if recorded >= 0 else self.options.timeout  # NaN: not >= 0
        if wait(limit):
            self.result.difference = (f"{what} completed in the replay, but timed out after {recorded:g} s in "
                                      f"the recording")
        else:
            self.result.hang = (f"{what} did not complete within {limit:g} s; the recording hung at the same wait "
                                f"(it timed out after {recorded:g} s); {self._queue_report()}")

    # -- events -------------------------------------------------------------------------------------
    def _trap_event(self, recorded: int) -> int:
        """The replay event a recorded packet's event id names. An id that names no recorded event (0 among
        them: the kernel keeps it, kfd_event_init_process) names none in the replay either: 0. The kernel looks
        through every written mailbox then, as it did for the recorded id (kfd_signal_event_interrupt); an event
        of the instance's own named there could take an id a destroyed event freed, which the program's next
        event takes in the recording (campaign 110)."""
        hit = self.events.get(recorded) if recorded else None
        return 0 if hit is None else hit[1].id

    def _event(self, r: Record) -> Event:
        hit = self.events.get(r.fields["event"])
        if hit is None:
            raise BadInput(f"record {r.n} ({r.type}) names event {r.fields['event']}, which the trace never "
                           f"created")
        return hit[1]

    def _on_event(self, r: Record) -> None:
        f = r.fields
        if f["type"] not in REPLAYED_EVENTS:
            return
        self._forget_event(f["event"])
        ev = self._reborn(f["event"], bool(f["auto_reset"]))
        self.events[f["event"]] = (r.n, ev)
        if self.event_page is not None and 0 < f["event"] < K.KFD_SIGNAL_EVENT_LIMIT:  # the GPU writes the
            # recorded event's mailbox before interrupting with its id: that write goes to the replay event's
            self.relocation.add(self._mailbox(f["event"]), K.KFD_EVENT_SLOT_SIZE, self.system.event_mailbox(ev.id))
            self.mailboxes.add(f["event"])
        if r.n not in self.s.waited:
            self.wake_ids.append(ev.id)  # only TRAPs and CPU waits on memory use it: its signals wake them

    def _mailbox(self, recorded: int) -> int:
        """The recorded address of a recorded event's mailbox (its slot in the recorded event page)."""
        return self.event_page + K.KFD_EVENT_SLOT_SIZE * recorded

    def _reborn(self, recorded: int, auto_reset: bool) -> Event:
        """The replay event of a recorded event taking id `recorded`: the one a destroyed event with that id
        left (`retired`), made new again, where its kind agrees; else a new one. Instances replaying side by side
        share one process's ids, and one would take the id another freed: packets still pending for the old event
        would set another instance's (campaign 110)."""
        kept = self.retired.pop(recorded, None)
        if kept is not None and kept.auto_reset == auto_reset:
            kept.reset()
            self.system.clear_mailbox(kept.id)  # as CREATE_EVENT leaves a signal event's slot
            return kept
        if kept is not None:
            kept.destroy()
        return self.system.event(auto_reset=auto_reset)

    def _forget_event(self, recorded: int) -> None:
        hit = self.events.pop(recorded, None)
        if recorded in self.mailboxes:
            self.mailboxes.discard(recorded)
            self.relocation.remove(self._mailbox(recorded))
        if hit is not None:
            if hit[1].id in self.wake_ids:
                self.wake_ids.remove(hit[1].id)
            if hit[0] in self.s.reborn:
                self.retired[recorded] = hit[1]
            else:
                hit[1].destroy()

    def _on_event_destroy(self, r: Record) -> None:
        self._forget_event(r.fields["event"])

    def _on_event_set(self, r: Record) -> None:
        self._event(r).set()

    def _on_event_reset(self, r: Record) -> None:
        self._event(r).reset()

    def _on_event_wait(self, r: Record) -> None:
        f = r.fields
        ev = self._event(r)
        what = f"the wait for event {f['event']} (replayed as {ev.id})"
        if not f["ok"]:
            self._failed_when_recorded(r, what, lambda t: self._peek_event(ev, t))
        elif not self._patiently(lambda t: self._wait_event(ev, t), limit := self._limit(r)):
            raise WaitTimeout(f"the replay waited {limit:g} s in {what}, which the recording saw "
                              f"signaled; {self._queue_report()}")

    def _peek_event(self, ev: Event, timeout: float) -> bool:
        """`_wait_event` for a wait the recording timed out on: one that fires leaves the event set, as the
        recording's took nothing from it (campaign 110: a poll loop's retried wait took an auto-reset event's
        signal, and the wait after it, which the recording saw signaled, hung)."""
        fired = self._wait_event(ev, timeout)
        if fired:
            ev.set()
        return fired

    def _wait_event(self, ev: Event, timeout: float) -> bool:
        """Whether the event fired within `timeout` s; GpuFault if a GPU stopped a queue meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            self._halted()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            fired = self.system.wait_events([ev.id], max(1, min(POLL_SLICE_MS, int(left * 1000))))
            self.system.raise_gpu_faults()
            if fired:
                return True

    # -- checkpoints and queues ---------------------------------------------------------------------
    def _on_checkpoint(self, r: Record) -> None:
        self.result.checkpoints += 1
        racy = r.fields.get("racy") or ()
        if racy and not self.result.racy:
            first = racy[0]
            self.result.notes.append(f"checkpoints leave out buffers whose contents a race between queues decided "
                                     f"when recorded, first {first.get('name') or hex(first['va'])}: {first['why']}")
        self.result.racy += len(racy)
        if not self.options.verify:
            return
        in_flight = {b["va"] for b in r.fields.get("in_flight") or ()}  # GPU writes not known complete yet
        if why := R.checkpoint_problem(r, self.trace.blob_key):
            raise BadInput(why)
        for entry in r.fields["buffers"]:
            hit = self.buffers.find(entry["va"])
            if hit is None:  # a checkpoint hashes live buffers only
                raise BadInput(f"record {r.n} (checkpoint): no buffer is allocated at {entry['va']:#x}, where it has "
                               f"an entry (corrupt trace)")
            if entry["va"] in in_flight:  # a recorder hashes a buffer once its writes are known complete
                raise BadInput(f"record {r.n} (checkpoint): it has an entry for the buffer at {entry['va']:#x}, but "
                               f"lists it in flight as well (corrupt trace)")
            if hit[2].buffer.cpu is None:  # VRAM the recording's CPU could read (a large BAR), this one cannot
                if not self.result.unread:
                    self.result.notes.append(f"checkpoints compare no buffer this replay's CPU cannot read, first "
                                             f"{entry.get('name') or hex(entry['va'])} (VRAM without a CPU mapping)")
                self.result.unread += 1
                continue
            if (hit[0], len(entry["keys"])) != (entry["va"], -(-entry["size"] // self.s.chunk)) or \
                    entry["size"] > hit[1]:
                raise BadInput(f"record {r.n} (checkpoint): its entry for the buffer at {entry['va']:#x} does not "
                               f"match the buffer's start, size or chunks (corrupt trace)")
            self.result.divergence = self._compare(hit[2], entry)
            if self.result.divergence:
                return
            self.result.verified += 1
            hit[2].gpu_from = None  # what the GPU wrote there is what the trace holds

    def _compare(self, rb: ReplayBuffer, entry: dict) -> Divergence | None:
        """The first chunk whose content differs from the entry's key, hashed where it lies (copied only if it
        differs), with the trace's own key function (its format major's)."""
        chunk, size = self.s.chunk, entry["size"]
        rb.buffer.addr(0, size)  # DeviceError unless the entry lies inside the buffer
        memory = memoryview((ctypes.c_char * size).from_address(rb.buffer.cpu_addr(0))).cast("B")
        keys = entry["keys"]
        if not rb.volatile and list(map(self.trace.blob_key, [memory[lo:lo + chunk] for lo in
                                                               range(0, len(keys) * chunk, chunk)])) == keys:
            return None  # every chunk as recorded, hashed in one pass (about as fast as a copy of the buffer)
        for i, key in enumerate(keys):
            lo = i * chunk
            clocks = [at - lo for at in rb.volatile if lo <= at < lo + chunk] if rb.volatile else None
            if clocks:  # compared with the clocks' bytes masked, in what was recorded and what is there
                expected, actual = self._blob(key), bytes(memory[lo:lo + chunk])
                if expected is not None and _masked(expected, clocks) == _masked(actual, clocks):
                    continue
            elif self.trace.blob_key(memory[lo:lo + chunk]) == key:
                continue
            actual, expected = bytes(memory[lo:lo + chunk]), self._blob(key)
            if clocks and expected is not None:  # as compared: where they part is not at a clock
                actual, expected = _masked(actual, clocks), _masked(expected, clocks)
            found = Divergence(self.result.checkpoints, entry.get("name") or f"@{entry['va']:#x}", entry["va"], lo,
                               len(actual), expected, actual, None)
            found.writer = rb.writer(entry["va"] + found.first_differing())
            return found
        return None

    def _blob(self, key: bytes) -> bytes | None:
        try:
            return self.trace.blob(key)
        except TraceError:  # a checkpoint's content may be absent from an older or damaged trace
            return None

    def _queue_report(self) -> str:
        """Each queue by its recorded name, then as the replay's engine stands (its addresses the replay's own,
        which differ from the recording's for buffers it moved: those of the packet it stands at are named)."""
        queues = [f"{rq.label}: {rq.queue.describe()}{self._recorded_names(rq)}" for rq in self.queues.values()]
        moved = " (addresses as this replay placed its buffers)" if self.result.relocated else ""
        return f"queues{moved}: " + ("; ".join(queues) if queues else "none")

    def _recorded_names(self, rq: ReplayQueue) -> str:
        """The recorded buffers the addresses of the packet a queue stands at lie in, when the replay moved them."""
        packet_at = getattr(rq.queue, "packet_at", None)
        if not self.result.relocated or packet_at is None or rq.queue.idle:
            return ""
        p = packet_at(rq.queue.rptr)
        names = []
        for name, addr in (p.addresses().items() if p is not None else ()):
            hit = next(((va, rb) for va, size, rb in self.buffers if rb.buffer.va <= addr < rb.buffer.va + size),
                       None)
            if hit is not None:
                va, rb = hit
                names.append(f"{name} {addr:#x} is {rb.buffer.label}+{addr - rb.buffer.va:#x}, recorded at "
                             f"{va + addr - rb.buffer.va:#x}")
        return f" ({'; '.join(names)})" if names else ""

    def _drain(self, rq: ReplayQueue, why: str) -> None:
        """Wait until the queue has executed everything submitted to it; WaitTimeout (a hang) after --timeout
        in which none of the instance's queues moved on."""
        deadline, delay, where = time.monotonic() + self.options.timeout, 20e-6, self._progress()
        while not rq.queue.idle:
            self._halted()
            self.system.raise_gpu_faults()
            if time.monotonic() > deadline:
                if (moved := self._progress()) == where:
                    raise WaitTimeout(f"{rq.label} did not drain within {self.options.timeout:g} s ({why}); "
                                      f"{self._queue_report()}")
                deadline, where = time.monotonic() + self.options.timeout, moved
            time.sleep(delay)
            delay = min(delay * 2, 1e-3)

    def _behind(self, rq: ReplayQueue, stood: int) -> tuple[Callable[[ReplayQueue], bool] | None, bool]:
        """For a queue the recording destroyed standing at the wait or the kernel launch at byte `stood` of its
        stream: whether the replay's stands at an earlier one (campaign 72: a queue still at the first of two
        waits was destroyed there, before a copy the recording's had made); and whether the recording's stood at
        a launch (its kernel still ran). On an AQL queue the replay's packets are the recorded ones, one for one
        (campaign 84). On a ring, the replay's submission of the recorded one holding `stood` ends with as many
        waits and launches as follow `stood` in the recording, the one there included; its waits are the
        recorded ones translated (NOP pads between them where the ring wraps), or the waits of the recorded AQL
        packets' PM4 form (AqlOnPm4.waits; campaign 85), and its launches the recorded dispatches re-derived.
        None: not known (a PM4 queue on an AQL queue, or the submission is too far back)."""
        aql = type(rq.queue) is AqlRing
        if not (aql or isinstance(rq.queue, RingQueue | AqlOnPm4)) or rq.translator is None:
            return None, False
        hit = next(((lo, start, end, ring) for lo, after, start, end, ring in reversed(rq.recent)
                    if lo <= stood < after), None)
        if hit is None:
            return None, False
        lo, start, end, ring = hit
        try:
            packets = [p for p in rq.translator.src.iter_packets(ring) if p.offset >= stood - lo]
        except PacketError:
            return None, False
        if not packets or packets[0].offset != stood - lo:
            return None, False  # not where a packet starts
        launching = packets[0].defn.launches
        if aql:
            index = start + (stood - lo) // PACKET_SIZE
            return (lambda q: q.queue.rptr < index), launching
        waits: Callable[[Packet], int] = (lambda p: len(AqlOnPm4.waits(p))) if isinstance(rq.queue, AqlOnPm4) else \
            (lambda p: p.defn.wait is not None)  # how many waits the replay's form of a recorded packet has
        if not (waits(packets[0]) or launching):
            return None, False  # the recorder would not have said it stood there
        ahead = sum(waits(p) + p.defn.launches for p in packets)

        def behind(q: ReplayQueue) -> bool:
            at = q.queue.rptr
            if at < start:
                return True
            left = q.queue.packets(at, end) if at < end else []
            stops = sum((p.defn.wait is not None) + p.defn.launches for p in left)
            # at the launch the recording stood at, a kernel of it runs: not before it, setting its registers
            return stops > ahead or launching and stops == ahead and bool(left) and not left[0].defn.launches
        return behind, launching

    def _settle_all(self, why: str, quiet: float = 0.05, queues: list[ReplayQueue] | None = None,
                    behind: Callable[[ReplayQueue], bool] | None = None,
                    until: Callable[[], bool] | None = None, timeout: float | None = None) -> None:
        """Wait until every queue (of `queues`) has drained or stands at a packet that waits on memory which does
        not pass now (`blocked`), unmoved for `quiet` s (waiting for what later records signal: as the recording
        stood when it made the next record), and not `behind` where the recording's stood; or `until()` comes
        true. A queue whose read pointer
        stays put at any other packet is still working (a long kernel, a big copy) and is waited for, unless the
        GPU stopped it (GpuFault); WaitTimeout after `timeout` (else --timeout) in which none of the instance's
        queues moved on."""
        queues = list(self.queues.values()) if queues is None else queues
        timeout = self.options.timeout if timeout is None else timeout
        deadline, since, last = time.monotonic() + timeout, time.monotonic(), None
        progress = self._progress()
        while not all(rq.queue.idle for rq in queues):
            if until is not None and until():
                return
            self._halted()
            self.system.raise_gpu_faults()
            where = tuple(rq.queue.rptr for rq in queues)
            if where != last:
                since, last = time.monotonic(), where
            elif time.monotonic() - since >= quiet and all(rq.queue.idle or rq.queue.blocked(self._load) and not
                                                           (behind and behind(rq)) for rq in queues):
                return
            if time.monotonic() > deadline:
                if (moved := self._progress()) == progress:
                    raise WaitTimeout(f"the queues did not settle within {timeout:g} s ({why}); "
                                      f"{self._queue_report()}")
                deadline, progress = time.monotonic() + timeout, moved
            self.system.wait_events([], 2)  # a sleep that notes a GPU fault's event

    def _drain_all(self, why: str) -> None:
        """Drain every queue at the trace's end, but those the recording ended with work left in (its summary's
        `undrained`): those may stand still, as the recording's did, unless the GPU stopped them."""
        undrained = set((self.trace.summary or {}).get("undrained") or ())
        for queue, rq in self.queues.items():
            if queue in undrained and not rq.queue.idle:
                self._settle_all(f"{rq.label} at the trace's end", queues=[rq])
                self.result.left.append(f"{rq.label}, at the recording's end")
            else:
                self._drain(rq, why)

    def _teardown(self) -> None:
        """Best effort, like Device.close: what the kernel refuses here it reclaims with the process."""
        closers = [rq.queue.destroy for rq in self.queues.values()] + [rb.buffer.free for _, _, rb in self.buffers]
        closers += [ib.free for rq in self.queues.values() for ib in rq.copies()]
        closers += [ev.destroy for _, ev in self.events.values()] + [ev.destroy for ev in self.retired.values()]
        closers += [p.free for p in self.own_programs]
        closers += [functools.partial(self.system.sys.munmap, *kept) for kept in self.kept.values()]
        for close in [*closers, *([self._wake.destroy] if self._wake else [])]:  # queues first: they pin their
            # buffers
            with contextlib.suppress(DeviceError):
                close()
