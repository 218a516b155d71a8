"""What a submission's packets do, read from the packet tables' tags: the addresses they write, the ones they
point at, and their completion facts (signals, GPU waits, TRAPs), positioned in the queue's stream.

A workload submits the same packets with new values over and over. A submission's *layout* is the dwords
that make its packets and their addresses (headers and address dwords); one with the same dwords at the same
places holds the same packets pointing at the same places, so everything but the values is worked out once
per layout (a `Plan`) and a repeated submission costs two struct unpacks.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from kfdtrace.capture.completion import Signal, Wait
from kfdtrace.driver.packets import Dialect, Field, Packet, PacketDef
from kfdtrace.driver.sdma import PollFunc

MAX_IB_DEPTH = 4  # indirect buffers are followed this deep (the hardware chains, it does not nest further)
MAX_PLANS = 1 << 14  # layouts whose plan is kept
# POLL_REGMEM compare functions after which memory is known to have reached `ref` (for a timeline: >= ref).
REACHED = frozenset({PollFunc.GE, PollFunc.EQ})
FULL_MASK = 0xFFFFFFFF

ReadMemory = Callable[[int, int], bytes | None]  # (address, bytes) -> the bytes, None when not CPU-readable


@dataclass
class Facts:
    """One submission's packets: positions are byte offsets from the submission's start to a packet's end."""

    written: list[tuple[int, int]] = field(default_factory=list)  # (position, address the GPU writes)
    referenced: list[int] = field(default_factory=list)  # every address a packet points at
    signals: list[Signal] = field(default_factory=list)
    waits: list[Wait] = field(default_factory=list)
    traps: list[tuple[int, int]] = field(default_factory=list)  # (position, event id)


def _word(defn: PacketDef, name: str) -> tuple[int, int, int] | None:
    """(dword, shift, mask) of a field inside one dword of the fixed part; None otherwise."""
    f = defn[name]
    if not isinstance(f, Field) or f.shift + f.width > 32:
        return None
    return f.dword, f.shift, f.mask


@dataclass(frozen=True)
class Plan:
    """A layout's facts with the value dwords left out: `values` unpacks them from the ring bytes."""

    values: struct.Struct
    written: tuple[tuple[int, int], ...]
    referenced: tuple[int, ...]
    signals: tuple[tuple[int, int, int, int, int], ...]  # (position, address, value index, shift, mask)
    waits: tuple[tuple[int, int, tuple[tuple[int, int, int], ...]], ...]  # (position, address, (ref, mask, func))
    traps: tuple[tuple[int, int, int, int], ...]  # (position, value index, shift, mask)

    def facts(self, ring: bytes) -> Facts:
        v = self.values.unpack_from(ring)
        out = Facts(list(self.written), list(self.referenced))
        out.signals = [(pos, addr, (v[i] >> s) & m) for pos, addr, i, s, m in self.signals]
        for pos, addr, parts in self.waits:
            ref, mask, func = ((v[i] >> s) & m for i, s, m in parts)
            if mask == FULL_MASK and func in REACHED:
                out.waits.append((pos, addr, ref))
        out.traps = [(pos, (v[i] >> s) & m) for pos, i, s, m in self.traps]
        return out


class Analyzer:
    """Works out submissions' facts, caching plans by layout."""

    def __init__(self) -> None:
        self._layouts: dict[tuple[Dialect, int], dict[str, struct.Struct]] = {}  # (dialect, length) -> layouts
        self._plans: dict[tuple[struct.Struct, tuple[int, ...]], Plan] = {}

    def clear(self) -> None:
        """Forget every plan: the buffers behind their addresses may have changed."""
        self._layouts.clear()
        self._plans.clear()

    def facts(self, dialect: Dialect, ring: bytes, read: ReadMemory) -> Facts:
        """The facts of `ring` (a submission's bytes); raises PacketError on bytes that are no packets."""
        for layout in self._layouts.get((dialect, len(ring)), {}).values():
            plan = self._plans.get((layout, layout.unpack_from(ring)))
            if plan is not None:
                return plan.facts(ring)
        packets = list(dialect.iter_packets(ring))
        out = Facts()
        cacheable = self._collect(dialect, packets, None, out, read, 0)
        if cacheable:
            self._remember(dialect, ring, packets)
        return out

    def _collect(self, dialect: Dialect, packets: list[Packet], position: int | None, out: Facts,
                 read: ReadMemory, depth: int) -> bool:
        """Add the facts of `packets` to `out` (all at `position` when they come from an indirect buffer,
        else each at its own end); whether a plan can stand for them (no tails, no indirect buffers, every
        value in one dword)."""
        cacheable = True
        for p in packets:
            d, f, pos = p.defn, p.fields, position if position is not None else p.offset + p.size
            cacheable &= d.tail is None and d.indirect is None
            addresses = p.addresses()
            out.referenced += addresses.values()
            out.written += ((pos, a) for a in p.written_addresses())
            if d.signal is not None and d.signal[0] in addresses:
                out.signals.append((pos, addresses[d.signal[0]], f[d.signal[1]]))
                cacheable &= _word(d, d.signal[1]) is not None
            if d.wait is not None and d.wait[0] in addresses:
                addr, ref, mask, func = d.wait
                if f[mask] == FULL_MASK and f[func] in REACHED:
                    out.waits.append((pos, addresses[addr], f[ref]))
                cacheable &= all(_word(d, n) is not None for n in (ref, mask, func))
            if d.event_field is not None:
                out.traps.append((pos, f[d.event_field]))
                cacheable &= _word(d, d.event_field) is not None
            if d.indirect is not None and depth < MAX_IB_DEPTH:
                base, size = addresses.get(d.indirect[0]), f[d.indirect[1]] * 4
                data = read(base, size) if base else None
                if data is not None:
                    self._collect(dialect, list(dialect.iter_packets(data)), pos, out, read, depth + 1)
        return cacheable

    def _remember(self, dialect: Dialect, ring: bytes, packets: list[Packet]) -> None:
        if len(self._plans) >= MAX_PLANS:
            self.clear()
        words: set[int] = set()
        values: list[int] = []
        signals, waits, traps = [], [], []
        written, referenced = [], []
        for p in packets:
            d, base, pos = p.defn, p.offset // 4, p.offset + p.size
            words.add(base)
            words.update(base + w for w in d.address_words)
            addresses = p.addresses()
            referenced += addresses.values()
            written += ((pos, a) for a in p.written_addresses())

            def value(name: str, d: PacketDef = d, base: int = base) -> tuple[int, int, int]:
                dword, shift, mask = _word(d, name)
                values.append(base + dword)
                return base + dword, shift, mask

            if d.signal is not None and d.signal[0] in addresses:
                signals.append((pos, addresses[d.signal[0]], *value(d.signal[1])))
            if d.wait is not None and d.wait[0] in addresses:
                waits.append((pos, addresses[d.wait[0]], tuple(value(n) for n in d.wait[1:])))
            if d.event_field is not None:
                traps.append((pos, *value(d.event_field)))
        layout = _unpacker(sorted(words))
        layouts = self._layouts.setdefault((dialect, len(ring)), {})
        layout = layouts.setdefault(layout.format, layout)
        order = sorted(set(values))
        at = {w: i for i, w in enumerate(order)}  # ring dword -> its place in what the plan unpacks
        plan = Plan(_unpacker(order), tuple(written), tuple(referenced),
                    tuple((pos, addr, at[w], s, m) for pos, addr, w, s, m in signals),
                    tuple((pos, addr, tuple((at[w], s, m) for w, s, m in parts)) for pos, addr, parts in waits),
                    tuple((pos, at[w], s, m) for pos, w, s, m in traps))
        self._plans[(layout, layout.unpack_from(ring))] = plan


def _unpacker(words: list[int]) -> struct.Struct:
    """A Struct unpacking the listed dwords (ascending, distinct) from the start of a buffer."""
    fmt = "<" + "".join(f"{4 * (w - prev - 1)}xI" for prev, w in zip([-1, *words[:-1]], words, strict=True))
    return struct.Struct(fmt)
