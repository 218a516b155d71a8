"""What a submission's packets do, read from the packet tables' tags: the addresses they write, the ones they
point at, and their completion facts (signals, GPU waits, TRAPs), positioned in the queue's stream.

A workload submits the same packets with new values over and over. A submission's *layout* is the dwords
that make its packets and their addresses (headers and address dwords); one with the same dwords at the same
places holds the same packets pointing at the same places, so everything but the values is worked out once
per layout (a `Plan`) and a repeated submission costs two struct unpacks.

A 64-bit semaphore value is written as two dword signals, low then high (driver/signals.py), and waited on
as two dword polls, high then low; plans put such pairs back together.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from kfdtrace.capture.completion import Signal, Wait
from kfdtrace.driver.packets import MAX_IB_DEPTH, Dialect, Field, Packet, PacketDef
from kfdtrace.driver.sdma import PollFunc

MAX_PLANS = 1 << 14  # layouts whose plan is kept
# POLL_REGMEM compare functions after which memory is known to have reached `ref` (for a timeline: >= ref).
REACHED = frozenset({PollFunc.GE, PollFunc.EQ})
FULL_MASK = 0xFFFFFFFF

ReadMemory = Callable[[int, int], bytes | None]  # (address, bytes) -> the bytes, None when not CPU-readable
Part = tuple[int, int, int, int]  # (index among the plan's value dwords, shift, mask, bit in the value)


@dataclass
class Facts:
    """What packets do; positions are where a packet ends, from the start of its submission."""

    written: list[tuple[int, int]] = field(default_factory=list)  # (position, address the GPU writes)
    referenced: list[int] = field(default_factory=list)  # every address a packet points at
    signals: list[Signal] = field(default_factory=list)
    waits: list[Wait] = field(default_factory=list)
    traps: list[tuple[int, int]] = field(default_factory=list)  # (position, event id)


def _expr(parts: tuple[Part, ...]) -> str:
    """Python source computing a value from its parts of `v`, the plan's unpacked value dwords."""
    terms = []
    for i, sh, m, b in parts:
        t = f"v[{i}] >> {sh}" if sh else f"v[{i}]"
        t = f"({t}) & {m:#x}" if sh + m.bit_length() < 32 else t
        terms.append(f"(({t}) << {b})" if b else f"({t})")
    return " | ".join(terms)


class Plan:
    """A submission layout's facts with the values left out. `completion(ring, base)` unpacks the values and
    gives the signals, waits and TRAPs positioned in the queue's stream (by a function generated once per
    shape of plan); `written` and `referenced` hold no values. `resolved` is the recorder's to cache which of
    its buffers the writes land in."""

    __slots__ = ("values", "compute", "written", "referenced", "resolved")

    def __init__(self, values: struct.Struct, compute: Callable, written: tuple[tuple[int, int], ...],
                 referenced: tuple[int, ...]):
        self.values, self.compute, self.written, self.referenced = values, compute, written, referenced
        self.resolved: object = None

    def completion(self, ring: bytes, base: int) -> tuple[list[Signal], list[Wait], list[tuple[int, int]]]:
        return self.compute(self.values.unpack_from(ring), base)


_CODE: dict[str, object] = {}  # generated source -> its compiled code: plans of the same shape share it


def _word(defn: PacketDef, name: str) -> tuple[int, int, int] | None:
    """(dword, shift, mask) of a field inside one dword of the fixed part; None otherwise."""
    f = defn[name]
    if not isinstance(f, Field) or f.shift + f.width > 32:
        return None
    return f.dword, f.shift, f.mask


class _Builder:
    """Collects one plan from decoded packets; the value dwords it needs become one Struct."""

    def __init__(self) -> None:
        self.dwords: list[int] = []  # ring dword of each value, in order of first use
        self.written: list[tuple[int, int]] = []
        self.referenced: list[int] = []
        self.signals: list = []
        self.waits: list = []
        self.traps: list = []

    def part(self, p: Packet, name: str, bit: int = 0) -> Part:
        word = _word(p.defn, name)
        if word is None:
            raise ValueError(f"{p.name}.{name}: a completion value must lie within one dword of the packet table")
        dword, shift, mask = word
        at = p.offset // 4 + dword
        if at not in self.dwords:
            self.dwords.append(at)
        return self.dwords.index(at), shift, mask, bit

    def add(self, p: Packet) -> dict[str, int]:
        """Note the packet's facts; its addresses."""
        d, pos = p.defn, p.offset + p.size
        addresses = p.addresses()
        self.referenced += addresses.values()
        self.written += ((pos, a) for a in p.written_addresses())
        if d.signal is not None and d.signal[0] in addresses:
            addr, parts = addresses[d.signal[0]], (self.part(p, d.signal[1]),)
            last = self.signals[-1] if self.signals else None
            if last is not None and last[1] == addr - 4 and len(last[2]) == 1:  # the high dword of a 64-bit value
                self.signals[-1] = (pos, last[1], last[2] + ((*parts[0][:3], 32),))
            else:
                self.signals.append((pos, addr, parts))
        if d.wait is not None and d.wait[0] in addresses:
            addr, ref, mask, func = d.wait
            addr, checks = addresses[addr], (self.part(p, mask), self.part(p, func))
            last = self.waits[-1] if self.waits else None
            if last is not None and last[1] == addr + 4 and len(last[2]) == 1:  # after a wait on the high dword
                self.waits[-1] = (pos, addr, ((*last[2][0][:3], 32), self.part(p, ref)), last[3] + checks)
            else:
                self.waits.append((pos, addr, (self.part(p, ref),), checks))
        if d.event_field is not None:
            self.traps.append((pos, (self.part(p, d.event_field),)))
        return addresses

    def plan(self) -> Plan:
        order = sorted(self.dwords)
        at = [order.index(w) for w in self.dwords]  # value index -> place in what the Struct unpacks
        addresses: list[int] = []  # the plan's addresses, named A[i] in the source so that it can be shared

        def expr(parts: tuple[Part, ...]) -> str:
            return _expr(tuple((at[i], s, m, b) for i, s, m, b in parts))

        def addr(a: int) -> str:
            addresses.append(a)
            return f"A[{len(addresses) - 1}]"

        signals = ", ".join(f"(base + {p}, {addr(a)}, {expr(v)})" for p, a, v in self.signals)
        traps = ", ".join(f"(base + {p}, {expr(v)})" for p, v in self.traps)
        src = ["def compute(v, base):", "    waits = []"]
        for p, a, ref, checks in self.waits:
            ok = " and ".join(f"({expr((c,))}) {test}" for c, test in zip(checks, _CHECKS * 2, strict=False))
            src.append(f"    if {ok}: waits.append((base + {p}, {addr(a)}, {expr(ref)}))")
        src.append(f"    return [{signals}], waits, [{traps}]")
        source = "\n".join(src)
        code = _CODE.get(source)
        if code is None:
            code = _CODE[source] = compile(source, "<submission plan>", "exec")  # generated from the tables
        ns = {"A": tuple(addresses), "_REACHED": REACHED}
        exec(code, ns)
        return Plan(_unpacker(order), ns["compute"], tuple(self.written), tuple(self.referenced))


_CHECKS = (f"== {FULL_MASK:#x}", "in _REACHED")
_NONE: dict = {}  # what a poll's mask and function must be, in that order


class Analyzer:
    """Works out submissions' facts, caching plans by layout."""

    def __init__(self) -> None:
        self._layouts: dict[tuple[Dialect, int], dict[str, struct.Struct]] = {}  # (dialect, length) -> layouts
        self._plans: dict[tuple[struct.Struct, tuple[int, ...]], Plan] = {}

    def analyse(self, dialect: Dialect, ring: bytes, read: ReadMemory) -> tuple[Plan, Facts | None]:
        """The plan of `ring` (a submission's bytes), and the facts of the indirect buffers its packets point
        at (None when there are none), positioned from the submission's start; raises PacketError on bytes
        that are no packets."""
        plans = self._plans
        for layout in self._layouts.get((dialect, len(ring)), _NONE).values():
            plan = plans.get((layout, layout.unpack_from(ring)))
            if plan is not None:
                return plan, None
        packets = list(dialect.iter_packets(ring))
        builder, inner = _Builder(), None
        for p in packets:
            addresses = builder.add(p)
            if p.defn.indirect is not None:
                inner = inner or Facts()
                self._indirect(dialect, p, addresses, p.offset + p.size, inner, read, 1)
        plan = builder.plan()
        if all(p.defn.tail is None and p.defn.indirect is None for p in packets):  # offsets and reach are fixed
            self._remember(dialect, ring, packets, plan)
        return plan, inner

    def _indirect(self, dialect: Dialect, p: Packet, addresses: dict[str, int], pos: int, out: Facts,
                  read: ReadMemory, depth: int) -> None:
        """Add the facts of the indirect buffer `p` points at, all at `pos` (where `p` ends in the ring)."""
        addr_field, size_field = p.defn.indirect
        base = addresses.get(addr_field)
        data = read(base, p.fields[size_field] * 4) if base else None
        if data is None or depth > MAX_IB_DEPTH:
            return
        builder = _Builder()
        for q in dialect.iter_packets(data):
            inner_addresses = builder.add(q)
            if q.defn.indirect is not None:
                self._indirect(dialect, q, inner_addresses, pos, out, read, depth + 1)
        plan = builder.plan()
        signals, waits, traps = plan.completion(data, 0)
        out.written += ((pos, a) for _, a in plan.written)
        out.referenced += plan.referenced
        out.signals += ((pos, a, v) for _, a, v in signals)
        out.waits += ((pos, a, v) for _, a, v in waits)
        out.traps += ((pos, e) for _, e in traps)

    def _remember(self, dialect: Dialect, ring: bytes, packets: list[Packet], plan: Plan) -> None:
        if len(self._plans) >= MAX_PLANS:
            self._layouts.clear()
            self._plans.clear()
        words = sorted({p.offset // 4 + w for p in packets for w in (0, *p.defn.address_words)})
        layout = _unpacker(words)
        layouts = self._layouts.setdefault((dialect, len(ring)), {})
        layout = layouts.setdefault(layout.format, layout)
        self._plans[(layout, layout.unpack_from(ring))] = plan


def _unpacker(words: list[int]) -> struct.Struct:
    """A Struct unpacking the listed dwords (ascending, distinct; maybe none) from the start of a buffer."""
    fmt = "<" + "".join(f"{4 * (w - prev - 1)}xI" for prev, w in zip([-1, *words], words, strict=False))
    return struct.Struct(fmt)
