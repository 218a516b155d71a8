"""Replaying a trace: objects recreated on the target, packets relocated and retargeted, CPU writes and
semaphore signals applied at their place in the stream, checkpoints verified.

A trace is read twice. The first pass (`check`) translates every submission with the recorded addresses,
so anything the target cannot run, and any packet address outside every recorded buffer, is reported before
anything is submitted. The second pass (`Instance.run`) replays.
"""

from __future__ import annotations

import ctypes
import hashlib
import time
from dataclasses import dataclass, field

from kfdtrace.driver import kfd_ioctl as K
from kfdtrace.driver.errors import AddressInUse, GpuFault, WaitTimeout
from kfdtrace.driver.memory import Buffer
from kfdtrace.driver.ranges import RangeMap
from kfdtrace.driver.sdma import DIALECTS
from kfdtrace.driver.sdma_queue import ENGINE_KINDS, SdmaQueue
from kfdtrace.driver.system import Device, System
from kfdtrace.replay.translate import Relocation, ReplayError, Translator
from kfdtrace.traces.format import TraceReader

EXIT_OK, EXIT_DIVERGED, EXIT_HANG, EXIT_UNSUPPORTED = 0, 1, 2, 3
INTERNAL_ROLES = frozenset({"ring", "queue pointers", "event page"})  # the replayer's own queues have theirs
UNMAPPED_DOMAINS = frozenset({"doorbell", "mmio"})
# recorded SDMA queue type -> the engine kind the driver asks for (an engine picked by id becomes any engine)
SDMA_KINDS = {qtype: kind for kind, qtype in ENGINE_KINDS.items()} | {K.QueueType.SDMA_BY_ENG_ID: "sdma"}
OBJECT_TYPES = {"alloc", "buffer", "map", "free", "queue", "queue_destroy", "doorbell"}
STREAM_TYPES = {"alloc", "map", "free", "queue", "queue_destroy", "doorbell", "mem", "cpu_signal", "cpu_wait",
                "checkpoint"}


@dataclass
class Options:
    relocate: str = "auto"  # auto: recorded address when free; always: move every buffer; never: refuse to move
    timeout: float = 10.0
    verify: bool = True
    gpu_map: dict[int, int] | None = None  # recorded GPU index -> target device index


@dataclass
class Divergence:
    checkpoint: int
    buffer: str
    va: int
    offset: int
    length: int
    expected: bytes | None
    actual: bytes
    writer: str | None  # the submission and packet that last wrote the buffer

    def describe(self) -> str:
        text = (f"checkpoint {self.checkpoint}: buffer {self.buffer} differs in bytes "
                f"[{self.offset:#x}, {self.offset + self.length:#x})")
        if self.expected is not None:
            first = next(i for i, (a, b) in enumerate(zip(self.expected, self.actual, strict=False)) if a != b)
            lo = first - first % 16
            text += (f"; first at +{self.offset + first:#x}: expected {self.expected[lo:lo + 16].hex(' ')}"
                     f" got {self.actual[lo:lo + 16].hex(' ')}")
        if self.writer:
            text += f"; it appeared after {self.writer}"
        return text

    def to_dict(self) -> dict:
        return {"checkpoint": self.checkpoint, "buffer": self.buffer, "va": self.va, "offset": self.offset,
                "length": self.length, "writer": self.writer, "message": self.describe()}


@dataclass
class Result:
    submissions: int = 0
    packets: int = 0
    checkpoints: int = 0
    verified: int = 0
    divergence: Divergence | None = None
    hang: str | None = None
    seconds: float = 0.0
    relocated: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def status(self) -> int:
        return EXIT_DIVERGED if self.divergence else EXIT_HANG if self.hang else EXIT_OK


def buffer_names(trace: TraceReader) -> dict[int, tuple[str | None, str]]:
    """alloc record number -> (name, role): the driver names a buffer just after allocating it."""
    names, last_alloc = {}, {}
    for r in trace.records({"alloc", "buffer"}):
        if r.type == "alloc":
            last_alloc[r.fields["va"]] = r.n
        elif r.fields["va"] in last_alloc:
            names[last_alloc[r.fields["va"]]] = (r.fields["name"], r.fields["role"])
    return names


def device_map(trace: TraceReader, system: System, gpu_map: dict[int, int] | None) -> dict[int, Device]:
    """Recorded gpu_id -> target device: recorded GPU i onto target device gpu_map[i] (default: i)."""
    recorded = [g["gpu_id"] for g in trace.header.get("gpus") or []]
    mapping = gpu_map if gpu_map is not None else {i: i for i in range(len(recorded))}
    out = {}
    for i, gpu_id in enumerate(recorded):
        if i not in mapping:
            raise ReplayError(f"--gpu-map does not say where recorded GPU {i} goes")
        j = mapping[i]
        if not 0 <= j < len(system.devices):
            raise ReplayError(f"the trace uses {len(recorded)} GPU(s); target device {j} does not exist here "
                              f"(it has {len(system.devices)}): use --gpu-map or --device")
        out[gpu_id] = system.devices[j]
    return out


def check(trace: TraceReader, devices: dict[int, Device]) -> tuple[int, int, list[str]]:
    """Translate every submission with the recorded addresses: (submissions, packets, notes); raises
    ReplayError for anything the target cannot run, before anything is submitted."""
    relocation, live = Relocation(), RangeMap()
    translators: dict[int, Translator] = {}
    submissions = packets = 0
    notes: list[str] = []
    for r in trace.records(OBJECT_TYPES):
        f = r.fields
        if r.type == "alloc" and f["domain"] not in UNMAPPED_DOMAINS:
            relocation.add(f["va"], f["size"], f["va"])
            live.add(f["va"], f["size"], f["va"])
        elif r.type == "free" and live.remove(f["va"]) is not None:
            relocation.remove(f["va"])
        elif r.type == "queue":
            translators[f["queue"]] = _translator(f, devices, relocation, lambda e: e)
        elif r.type == "doorbell" and f["queue"] is not None:
            t = translators.get(f["queue"])
            if t is None:
                raise ReplayError(f"submission {submissions}: doorbell of unknown queue {f['queue']}")
            packets += sum(1 for _ in t.src.iter_packets(f["ring"]))
            t.ring(f["ring"], f"submission {submissions} (queue {f['queue']})")
            submissions += 1
    for t in translators.values():
        notes += t.dropped
    return submissions, packets, notes


def _translator(q: dict, devices: dict[int, Device], relocation: Relocation, event_id, indirect=None) -> Translator:
    if q["type"] not in SDMA_KINDS or q["dialect"] not in DIALECTS:
        raise ReplayError(f"queue {q['queue']}: queue type {q['type']} is not replayable yet (SDMA only)")
    dev = devices.get(q["gpu"])
    if dev is None:
        raise ReplayError(f"queue {q['queue']} is on GPU {q['gpu']:#x}, which the trace's header does not list")
    target = DIALECTS[dev.target.family.sdma_dialect]
    return Translator(DIALECTS[q["dialect"]], target, dev.target.sdma_max_copy, relocation, event_id, indirect)


class Instance:
    """One replay of the trace on an open System, with its own buffers, queues and semaphores."""

    def __init__(self, trace: TraceReader, system: System, devices: dict[int, Device], options: Options,
                 move_all: bool = False):
        self.trace, self.system, self.devices, self.options = trace, system, devices, options
        self.move_all = move_all or options.relocate == "always"
        self.names = buffer_names(trace)
        self.chunk = trace.header.get("chunk_size", 64 << 10)
        self.relocation = Relocation()
        self.buffers: RangeMap[Buffer] = RangeMap()  # recorded ranges -> replay buffers
        self.queues: dict[int, SdmaQueue] = {}
        self.translators: dict[int, Translator] = {}
        self.last_writer: dict[int, str] = {}  # recorded buffer va -> submission and packet
        self.handles: dict[int, int] = {}  # recorded handle -> recorded va
        self.volatile: set[int] = set()  # recorded buffers holding GPU timestamps: not compared
        self.indirect_buffers: list[Buffer] = []  # translated copies of the trace's indirect buffers
        self.event = system.event()
        self.result = Result()

    # -- the stream ---------------------------------------------------------------------------------
    def run(self) -> Result:
        t0 = time.perf_counter()
        try:
            for r in self.trace.records(STREAM_TYPES):
                getattr(self, f"_on_{r.type}")(r)
                if self.result.divergence:
                    break
        except (WaitTimeout, GpuFault) as exc:
            self.result.hang = str(exc)
        finally:
            self.result.seconds = time.perf_counter() - t0
            self._teardown()
        return self.result

    def _on_alloc(self, r) -> None:
        f = r.fields
        name, role = self.names.get(r.n, (None, "user"))
        if role in INTERNAL_ROLES or f["domain"] in UNMAPPED_DOMAINS:
            return
        dev = self.devices[f["gpu"]]
        cpu = f["domain"] != "vram" or bool(f["flags"] & K.AllocMemFlags.PUBLIC)
        opts = dict(cpu_access=cpu, executable=bool(f["flags"] & K.AllocMemFlags.EXECUTABLE),
                    coherent=bool(f["flags"] & K.AllocMemFlags.COHERENT),
                    uncached=bool(f["flags"] & K.AllocMemFlags.UNCACHED), name=name, role=role)
        buf = None
        if not self.move_all:
            try:
                buf = dev.alloc(f["size"], f["domain"], va=f["va"], **opts)
            except AddressInUse:
                if self.options.relocate == "never":
                    raise ReplayError(f"buffer {name or hex(f['va'])} cannot go at its recorded address "
                                      f"{f['va']:#x} here, and --relocate never forbids moving it") from None
        if buf is None:
            buf = dev.alloc(f["size"], f["domain"], **opts)
        self.relocation.add(f["va"], f["size"], buf.va)
        self.buffers.add(f["va"], f["size"], buf)
        self.result.relocated += buf.va != f["va"]
        self.handles[f["handle"]] = f["va"]

    def _on_map(self, r) -> None:
        va = self.handles.get(r.fields["handle"])
        buf = None if va is None else self.buffers.get(va)
        if buf is not None:
            buf.map_to(*(self.devices[g] for g in r.fields["gpus"] if g in self.devices))

    def _on_free(self, r) -> None:
        buf = self.buffers.remove(r.fields["va"])
        if buf is not None:
            self.relocation.remove(r.fields["va"])
            buf.free()

    def _on_queue(self, r) -> None:
        f = r.fields
        dev = self.devices[f["gpu"]]
        engine = SDMA_KINDS.get(f["type"], "sdma")
        if engine == "xgmi" and not dev.node.num_sdma_xgmi_engines:
            engine = "sdma"
            self.result.notes.append(f"queue {f['queue']}: no xGMI SDMA engine on {dev}; using a PCIe one")
        q = dev.sdma_queue(ring_size=f["ring_size"], engine=engine, name=f"replay q{f['queue']}")
        self.queues[f["queue"]] = q
        self.translators[f["queue"]] = _translator(f, self.devices, self.relocation, lambda e: self.event.id,
                                                   lambda base, size, where: self._indirect(f["queue"], base, size,
                                                                                            where))

    def _on_queue_destroy(self, r) -> None:
        q = self.queues.pop(r.fields["queue"], None)
        if q is not None:
            q.destroy()

    def _on_doorbell(self, r) -> None:
        f = r.fields
        q, t = self.queues.get(f["queue"]), self.translators.get(f["queue"])
        if q is None:
            return
        where = f"submission {self.result.submissions} (queue {f['queue']})"
        for i, p in enumerate(t.src.iter_packets(f["ring"])):
            self.result.packets += 1
            for addr in p.written_addresses():
                hit = self.buffers.find(addr)
                if hit is not None:
                    self.last_writer[hit[0]] = f"{where} packet {i}: {p}"
                    if p.name.startswith("TIMESTAMP"):  # GPU clocks differ on every run
                        self.volatile.add(hit[0])
        q.pending.append(t.ring(f["ring"], where))
        q.submit()
        self.result.submissions += 1

    def _indirect(self, queue: int, base: int, size: int, where: str) -> tuple[int, int]:
        """An indirect buffer, followed: its packets (the recorded ones, written by the replayed CPU writes)
        translated like the ring's, into a buffer of the replay's own; its (address, dwords)."""
        hit = self.buffers.find(base)
        if hit is None or hit[2].cpu is None or base + size * 4 > hit[0] + hit[1]:
            raise ReplayError(f"{where}: indirect buffer {base:#x}+{size * 4:#x} is not in a CPU-visible buffer")
        recorded = hit[2].read(base - hit[0], size * 4)
        translated = self.translators[queue].ring(recorded, f"{where} indirect buffer at {base:#x}")
        q = self.queues[queue]
        nop = q.dialect.build("NOP")
        translated += nop * ((-len(translated) // 4) % 8)  # an IB ends on an 8-dword boundary
        ib = q.device.alloc(max(len(translated), 4096), "gtt", name=f"{where} IB", role="replay indirect buffer")
        ib.write(translated)
        self.indirect_buffers.append(ib)
        return ib.va, len(translated) // 4

    def _target(self, va: int) -> tuple[Buffer, int]:
        hit = self.buffers.find(va)
        if hit is None or hit[2].cpu is None:
            raise ReplayError(f"recorded address {va:#x} is in no CPU-visible buffer of this replay")
        return hit[2], va - hit[0]

    def _on_mem(self, r) -> None:
        buf, off = self._target(r.fields["va"])
        buf.write(self.trace.blob(r.fields["key"]), off)

    def _on_cpu_signal(self, r) -> None:
        buf, off = self._target(r.fields["addr"])
        ctypes.c_uint64.from_address(buf.cpu + off).value = r.fields["value"]

    def _on_cpu_wait(self, r) -> None:
        f = r.fields
        if not f["ok"]:
            self.result.notes.append(f"the recorded program's wait for {f['value']} at {f['addr']:#x} timed out")
            return
        buf, off = self._target(f["addr"])
        word = ctypes.c_uint64.from_address(buf.cpu + off)
        deadline = time.monotonic() + self.options.timeout
        while word.value < f["value"]:
            self.system.raise_gpu_faults()
            if time.monotonic() > deadline:
                raise WaitTimeout(f"the replay waited {self.options.timeout:g} s for {f['value']} at "
                                  f"{f['addr']:#x} ({buf.label}+{off:#x}), which is {word.value}; "
                                  f"{self.system.queue_report()}")
            self.system.wait_events([self.event.id], 10)

    def _on_checkpoint(self, r) -> None:
        self.result.checkpoints += 1
        if not self.options.verify:
            return
        for entry in r.fields["buffers"]:
            if entry["va"] in self.volatile:
                continue
            hit = self.buffers.find(entry["va"])
            if hit is None or hit[2].cpu is None:
                continue
            buf = hit[2]
            for i, key in enumerate(entry["keys"]):
                lo = i * self.chunk
                actual = buf.read(lo, min(self.chunk, entry["size"] - lo))
                if hashlib.sha256(actual).digest()[:16] != key:
                    self.result.divergence = Divergence(
                        self.result.checkpoints, entry["name"] or f"@{entry['va']:#x}", entry["va"], lo, len(actual),
                        self._blob(key), actual, self.last_writer.get(entry["va"]))
                    return
            self.result.verified += 1

    def _blob(self, key: bytes) -> bytes | None:
        try:
            return self.trace.blob(key)
        except Exception:  # a checkpoint's content may be absent from an older or damaged trace
            return None

    def _teardown(self) -> None:
        for q in self.queues.values():
            q.destroy()
        for buf in [b for _, _, b in self.buffers] + self.indirect_buffers:
            buf.free()
        self.event.destroy()
