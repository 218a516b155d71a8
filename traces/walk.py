"""Following a trace record by record: the buffers, queues and ioctls its records set up, so that the trace
tools (`kfdtrace dump`, `export`, `diff`) can say what an address, a queue or an ioctl's bytes are.

Records are untrusted: a tool checks each against the record table (`records.checked`) before `apply`, and
everything here copes with records that make no sense together (a free of an unknown buffer, a doorbell of
an unknown queue, ring bytes that are no packets) by knowing less, never by failing.
"""

from __future__ import annotations

import ctypes
import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kfdtrace.driver import drm_ioctl as D
from kfdtrace.driver import kfd_ioctl as K
from kfdtrace.driver.aql import AQL
from kfdtrace.driver.packets import Dialect, Packet, PacketDef, PacketError
from kfdtrace.driver.pm4 import DIALECTS as PM4_DIALECTS
from kfdtrace.driver.pm4 import Pm4Dialect
from kfdtrace.driver.ranges import RangeMap
from kfdtrace.driver.registers import Register
from kfdtrace.driver.sdma import DIALECTS as SDMA_DIALECTS
from kfdtrace.traces.format import Record

DIALECTS: dict[str, Dialect] = {**SDMA_DIALECTS, **PM4_DIALECTS, AQL.name: AQL}
MAX_PENDING_IOCTLS = 1024  # ioctls begun and not ended that are remembered (one per thread, in practice)
MAX_ARRAY = 64  # elements of a struct's array field that are shown
MAX_NAMED = 1 << 16  # addresses whose where() is remembered
MAX_KERNELS = 1 << 16  # kernels named by their descriptor address (a hostile trace could name millions)


@dataclass
class BufferInfo:
    handle: int | None
    gpu: int
    va: int
    size: int
    domain: str
    name: str | None = None
    role: str = "user"

    @property
    def label(self) -> str:
        return self.name or f"buffer@{self.va:#x}"


@dataclass
class QueueInfo:
    queue: int
    gpu: int
    type: int
    ring: int
    ring_size: int
    dialect: Dialect | None
    name: str | None = None
    wptr: int = 0  # where the next submission starts in the queue's stream (bytes)
    submissions: int = 0

    @property
    def label(self) -> str:
        return f"queue {self.queue}" + (f" ({self.name})" if self.name else "")

    @property
    def kind(self) -> str:
        try:
            return K.QueueType(self.type).name
        except ValueError:
            return f"type {self.type}"


class Submission:
    """A doorbell record read as what it submitted: `packets` decoded from its ring bytes, starting at `base`
    in the queue's stream (`error` says why they could not all be decoded; the ones before are kept). A queue's
    whose packets launch nothing are decoded when first asked for."""

    def __init__(self, number: int, queue: QueueInfo | None, base: int, packets: list[Packet] | None,
                 error: str | None = None, launches: dict[int, str] | None = None, ring: bytes = b""):
        """`packets` None: decoded from `ring` by the queue's dialect when first asked for."""
        self.number = number  # from 0, across the trace
        self.queue, self.base, self.ring = queue, base, ring
        self.launches = {} if launches is None else launches  # index of a packet that launches a kernel -> its name
        self._packets, self._error = packets, error

    @property
    def packets(self) -> list[Packet]:
        return self._packets if self._packets is not None else self._decode()

    @property
    def error(self) -> str | None:
        if self._packets is None:
            self._decode()
        return self._error

    def _decode(self) -> list[Packet]:
        assert self.queue is not None and self.queue.dialect is not None
        self._packets, self._error = decode_all(self.queue.dialect, self.ring)
        return self._packets

    def fixed(self) -> list[tuple[int, PacketDef, tuple[int, ...]]] | None:
        """(offset, definition, dwords) of each packet, read straight from the ring bytes (no Packet made), while
        none was decoded and every one is a whole fixed-size packet; None otherwise."""
        if self._packets is not None:
            return None
        ring = self.ring
        try:
            out = [(at, d, d.unpack_from(ring, at)) for at, _, d in self.queue.dialect.spans(ring)]
        except PacketError:
            return None
        return None if any(d.tail is not None for _, d, _ in out) else out


def queue_dialect(queue_type: int, gpu: dict) -> Dialect | None:
    """The packet dialect a queue of `queue_type` takes on a GPU whose header entry is `gpu` ("sdma" and
    "pm4" dialect names): SDMA queues its SDMA dialect, PM4 compute queues its PM4 one, AQL queues AQL."""
    if queue_type in K.SDMA_QUEUE_TYPES:
        name = gpu.get("sdma")
        return SDMA_DIALECTS.get(name) if isinstance(name, str) else None
    if queue_type == K.QueueType.COMPUTE:
        name = gpu.get("pm4")
        return PM4_DIALECTS.get(name) if isinstance(name, str) else None
    return AQL if queue_type == K.QueueType.COMPUTE_AQL else None


def indirect_dialect(dialect: Dialect, gpu: dict) -> Dialect | None:
    """The dialect of what an indirect buffer of a queue speaking `dialect` holds, on a GPU whose header entry is
    `gpu`: the queue's own, or the GPU's of the kind the dialect names (`AqlDialect.indirect_dialect`: an AQL
    PM4-IB runs PM4)."""
    kind = getattr(dialect, "indirect_dialect", None)
    if kind is None:
        return dialect
    name = gpu.get(kind)
    return {"pm4": PM4_DIALECTS, "sdma": SDMA_DIALECTS}[kind].get(name) if isinstance(name, str) else None


def ioctl_entry(request: int) -> K.Ioctl | None:
    """The table entry of a KFD or DRM ioctl request, or None."""
    try:
        return K.lookup(request)
    except KeyError:
        found = D.BY_NR.get(K.ioc_nr(request))
        return found if found is not None and K.ioc_type(request) == found.base else None


def _named(value: int, meaning: type[enum.IntEnum] | type[enum.IntFlag]) -> str | int:
    """`value` by its name in `meaning` (flags joined by |, unknown bits in hex), or the number."""
    if issubclass(meaning, enum.IntFlag):
        names, rest = [], value
        for flag in meaning:
            if flag.value and value & flag.value == flag.value:
                names.append(flag.name)
                rest &= ~flag.value
        if rest:
            names.append(f"{rest:#x}")
        return "|".join(names) if names else 0
    try:
        return meaning(value).name
    except ValueError:
        return value


def struct_fields(obj: ctypes.Structure | ctypes.Union) -> dict[str, Any]:
    """A struct's fields by name: numbers, enums and flags by name (kfd_ioctl.MEANINGS), nested structs as
    dicts, arrays as lists (the first MAX_ARRAY elements), unions as their bytes in hex (which member is
    meant depends on another field)."""
    meanings = K.MEANINGS.get(type(obj), {})
    out: dict[str, Any] = {}
    for name, *_ in obj._fields_:
        value = getattr(obj, name)
        if isinstance(value, ctypes.Union):
            out[name] = bytes(value).hex()
        elif isinstance(value, ctypes.Structure):
            out[name] = struct_fields(value)
        elif isinstance(value, ctypes.Array):
            out[name] = [struct_fields(v) if isinstance(v, ctypes.Structure) else v for v in value[:MAX_ARRAY]]
        elif name in meanings and isinstance(value, int):
            out[name] = _named(value, meanings[name])
        else:
            out[name] = value
    return out


def ioctl_args(request: int, data: bytes) -> dict[str, Any] | None:
    """An ioctl's argument bytes as its struct's fields, or None when the request or its struct is unknown.
    Bytes shorter than the struct (an older interface's) read as if zero-padded; extra bytes are ignored."""
    entry = ioctl_entry(request)
    if entry is None or entry.struct is None:
        return None
    size = ctypes.sizeof(entry.struct)
    return struct_fields(entry.struct.from_buffer_copy(data[:size].ljust(size, b"\0")))


class TraceState:
    """What the records applied so far have set up. `apply(record)` after the record is checked."""

    def __init__(self, header: dict):
        gpus = header.get("gpus")  # a header is checked by its readers, but a tool may be given any
        self.gpus = {g["gpu_id"]: g for g in gpus if isinstance(g, dict) and type(g.get("gpu_id")) is int} \
            if isinstance(gpus, list) else {}
        self.buffers: dict[int, BufferInfo] = {}  # handle -> buffer
        self.by_va: RangeMap[BufferInfo] = RangeMap()
        self.queues: dict[int, QueueInfo] = {}
        self.threads: dict[int, str] = {}
        self.ioctls: dict[int, tuple[int, bytes]] = {}  # seq -> (request, argument bytes) of ioctls begun
        self.ended: tuple[int, bytes] | None = None  # (request, argument bytes) of the ioctl the last end ended
        self.submissions = 0
        self._named: dict[int, str | None] = {}  # where() of addresses asked about since buffers last changed
        self.naming = 0  # counts the changes of what where() says (a buffer or kernel made, named or freed)
        self.kernels: dict[int, str] = {}  # kernel descriptor address -> kernel name, from code_object records
        self.entries: dict[int, str] = {}  # kernel entry address -> kernel name
        self.registers: dict[int, dict[str, int]] = {}  # PM4 queue -> its SH registers, as its packets set them
        self._launching: dict[Dialect, bool] = {}  # whether a dialect's packets may launch kernels

    def apply(self, r: Record) -> Submission | None:
        """Learn from a (checked) record; for a doorbell, what it submitted."""
        on = getattr(self, f"_on_{r.type}", None)
        return on(r.fields) if on is not None else None

    # -- naming -------------------------------------------------------------------------------------
    def buffer_at(self, addr: int) -> BufferInfo | None:
        return self.by_va.get(addr)

    def buffers_over(self, addr: int, size: int | None) -> list[BufferInfo]:
        """The live buffers the `size` bytes at `addr` meet (None: the one holding `addr`): a copy may run on from
        one buffer into the next, where they lie side by side."""
        if size is None:
            return [buf] if (buf := self.by_va.get(addr)) is not None else []
        return [buf for _, _, buf in self.by_va.overlapping(addr, size)]

    def where(self, addr: int) -> str | None:
        """'name+0x2000' for an address inside a live buffer ('kernel NAME' for a kernel descriptor's, "kernel
        NAME's code" for its entry point), else None."""
        try:
            return self._named[addr]
        except KeyError:
            pass
        hit = self.by_va.find(addr)
        named = None if hit is None else f"{hit[2].label}+{addr - hit[0]:#x}"
        if addr in self.kernels:
            named = f"kernel {self.kernels[addr]}"
        elif addr in self.entries:
            named = f"kernel {self.entries[addr]}'s code"
        if len(self._named) >= MAX_NAMED:
            self._named.clear()
        self._named[addr] = named
        return named

    def _renamed(self) -> None:
        self._named.clear()
        self.naming += 1

    def queue_label(self, queue: int | None) -> str:
        q = self.queues.get(queue) if queue is not None else None
        return q.label if q is not None else f"queue {queue}"

    # -- records ------------------------------------------------------------------------------------
    def _on_thread(self, f: dict) -> None:
        self.threads[f["tid"]] = f["name"]

    def _on_alloc(self, f: dict) -> None:
        self._renamed()
        old = self.buffers.pop(f["handle"], None)
        if old is not None:
            self.by_va.remove(old.va)
        buf = BufferInfo(f["handle"], f["gpu"], f["va"], f["size"], f["domain"])
        if self.by_va.add(buf.va, buf.size, buf):
            self.buffers[buf.handle] = buf

    def _on_buffer(self, f: dict) -> None:
        self._renamed()
        buf = self.buffers.get(f["handle"]) if f["handle"] is not None else self.by_va.get(f["va"])
        if buf is not None and buf.va == f["va"]:
            buf.name, buf.role = f["name"], f["role"]
            if f["size"] is not None and 0 < f["size"] <= buf.size:
                self.by_va.remove(buf.va)
                buf.size = f["size"]
                self.by_va.add(buf.va, buf.size, buf)

    def _on_free(self, f: dict) -> None:
        self._renamed()
        buf = self.buffers.pop(f["handle"], None)
        if buf is not None:
            self.by_va.remove(buf.va)

    def _on_code_object(self, f: dict) -> None:
        self._renamed()
        if len(self.kernels) + len(f["kernels"]) + len(f["entries"] or ()) <= MAX_KERNELS:
            self.kernels.update({va: str(name) for name, va in f["kernels"].items()})
            self.entries.update({va: str(name) for name, va in (f["entries"] or {}).items()})

    def _on_queue(self, f: dict) -> None:
        dialect = DIALECTS.get(f["dialect"]) if f["dialect"] is not None else None
        if dialect is None:  # an older trace names SDMA dialects only
            dialect = queue_dialect(f["type"], self.gpus.get(f["gpu"], {}))
        self.queues[f["queue"]] = QueueInfo(f["queue"], f["gpu"], f["type"], f["ring"], f["ring_size"], dialect)

    def _on_queue_name(self, f: dict) -> None:
        q = self.queues.get(f["queue"])
        if q is not None:
            q.name = f["name"]

    def _on_queue_destroy(self, f: dict) -> None:
        self.queues.pop(f["queue"], None)

    def _on_ioctl(self, f: dict) -> None:
        if len(self.ioctls) >= MAX_PENDING_IOCTLS:
            self.ioctls.pop(next(iter(self.ioctls)))
        self.ioctls[f["seq"]] = (f["request"], f["data"])

    def _on_ioctl_end(self, f: dict) -> None:
        self.ended = self.ioctls.pop(f["seq"], None)

    def _on_doorbell(self, f: dict) -> Submission:
        number = self.submissions
        self.submissions += 1
        q = self.queues.get(f["queue"]) if f["queue"] is not None else None
        if q is None:
            return Submission(number, None, 0, [], None if f["queue"] is None else "its queue is unknown")
        base = q.wptr
        end = K.doorbell_end(q.type, f["value"])
        if q.dialect is not None:
            end = q.dialect.submitted_end(base, end, f["ring"])
        q.wptr, q.submissions = end, q.submissions + 1
        ring = f["ring"]
        if not ring:
            return Submission(number, q, base, [], None if end == base else
                              f"its packets are not in the trace (a {q.kind} queue's were not recorded)")
        if q.dialect is None:
            return Submission(number, q, base, [], f"no packet dialect is known for a {q.kind} queue")
        if len(ring) > q.ring_size:  # decoding it would cost time and memory no real submission can ask for
            return Submission(number, q, base, [], f"{len(ring)} bytes of packets in a {q.ring_size}-byte ring "
                                                   f"(corrupt trace)")
        if q.dialect not in self._launching:
            self._launching[q.dialect] = isinstance(q.dialect, Pm4Dialect) or any(
                d.kernel is not None for d in q.dialect.defs)
        if not self._launching[q.dialect]:
            return Submission(number, q, base, None, ring=ring)
        packets, error = decode_all(q.dialect, ring)
        return Submission(number, q, base, packets, error, self._launched(q, packets), ring)

    def _launched(self, q: QueueInfo, packets: list[Packet]) -> dict[int, str]:
        """The kernel each packet that launches one runs (by packet index): the one whose descriptor an AQL
        dispatch names, or for PM4 the one at the address the queue's COMPUTE_PGM registers hold, as the packets
        before it set them."""
        dialect = q.dialect
        if not isinstance(dialect, Pm4Dialect):
            return {i: self.kernels.get(p.fields[p.defn.kernel[0]], "a kernel no code object holds")
                    for i, p in enumerate(packets) if p.defn.kernel is not None}
        regs, out = self.registers.setdefault(q.queue, {}), {}
        for i, p in enumerate(packets):
            d = p.defn
            if d.tail is not None and d.tail.registers:
                regs.update(p.registers())
            elif d.launch_field is not None:
                entry = dialect.entry(regs)
                out[i] = "a kernel no COMPUTE_PGM register names" if entry is None else \
                    self.entries.get(entry, "a kernel no code object holds")
        return out


def register_pointers(dialect: Dialect | None, p: Packet,
                      holds: Callable[[int], object]) -> list[tuple[str, int, tuple[Register, ...]]]:
    """The addresses a register-writing packet holds, as (what, address, its registers, low part first): the
    dialect's address registers it writes whole (COMPUTE_PGM), and each pair of consecutive COMPUTE_USER_DATA
    registers it writes whose 64-bit value `holds` (lands in a live buffer: the user SGPRs carry pointers such as
    the kernel arguments', but which pairs do depends on the kernel's descriptor)."""
    if not isinstance(dialect, Pm4Dialect) or not p.payload or p.defn.tail is None or not p.defn.tail.registers:
        return []
    try:
        writes = dialect.writes(p)
        found = dialect.register_addresses(p)
    except PacketError:  # it writes no registers, or only part of an address
        return []
    table = dialect.registers
    out = [(address, va, table.addresses[address]) for address, va in found.items()]
    pairs, i = table.user_data, 0
    while i + 1 < len(pairs):
        lo, hi = pairs[i], pairs[i + 1]
        va = writes[lo.offset] | writes[hi.offset] << 32 if lo.offset in writes and hi.offset in writes else 0
        if va and holds(va):
            out.append((f"{lo.name}..{i + 1}", va, (lo, hi)))
            i += 1
        i += 1
    return out


def reads(p: Packet) -> list[int]:
    """The addresses a packet reads through (those it holds that it does not write)."""
    return [a for n, a in p.addresses().items() if n not in p.defn.written_fields]


def decode_all(dialect: Dialect, data: bytes) -> tuple[list[Packet], str | None]:
    """The packets of `data`, and why the rest could not be decoded (None when all were)."""
    packets: list[Packet] = []
    it: Iterator[Packet] = dialect.iter_packets(data)
    try:
        packets.extend(it)
    except PacketError as exc:
        return packets, str(exc)
    return packets, None
