"""What a submission's packets do, read from the packet tables' tags: the addresses they write, the ones they
point at, and their completion facts (signals, GPU waits), positioned in the queue's stream.

A workload submits the same kinds of packets over and over, with new values and often new addresses. A
submission's *shape* is the dwords that make its packets: their headers and the fields that decide which of
their fields hold addresses (`Addr.when`). Submissions of one shape hold the same packets at the same places,
so the work of reading the tables is done once per shape (a `Plan`): it generates one function that unpacks
the submission's value and address dwords and returns its facts, and a repeated shape costs that call.

A 64-bit semaphore value is written as two dword signals, low then high (driver/signals.py), and waited on
as two dword polls, high then low; plans put such pairs back together (traces/semaphores.py).
"""

from __future__ import annotations

import re
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kfdtrace.capture.completion import Signal, Wait
from kfdtrace.driver.packets import MAX_IB_DEPTH, Dialect, Packet, PacketDef, PacketError, dword_unpacker
from kfdtrace.traces.semaphores import FULL_MASK, REACHED, pair_signals, pair_waits

MAX_PLANS = 1 << 14  # shapes whose plan is kept
# An indirect buffer's last signals take the positions after its call's end, where no packet ends (the next ends
# at least a dword on): seeing one shows the queue complete through the IB's packets before it, not after it
TAIL_SIGNALS = 4

ReadMemory = Callable[[int, int], bytes | None]  # (address, bytes) -> the bytes, None when not CPU-readable
Part = tuple[int, int, int, int]  # (dword of the submission, shift, mask, bit in the value)
Written = tuple[tuple[int, int, int], ...]  # (position, address the GPU writes, bytes from there: 0 when unknown)
Read = tuple[tuple[int, int, int], ...]  # (position, address the GPU reads, bytes from there: 0 when unknown)
# Plan.steps: (position, what, a, b): registers set (names, values), a KERNEL dispatch (descriptor address, kernel
# arguments' address), a LAUNCH of what the registers set up
REGISTERS, KERNEL, LAUNCH = 0, 1, 2
Step = tuple[int, int, Any, Any]


@dataclass
class Facts:
    """What packets do; positions are where a packet ends, from the start of its submission."""

    written: list[tuple[int, int, int]] = field(default_factory=list)  # as in Written
    read: list[tuple[int, int, int]] = field(default_factory=list)  # as in Read
    referenced: list[int] = field(default_factory=list)  # every address a packet points at
    signals: list[Signal] = field(default_factory=list)
    waits: list[Wait] = field(default_factory=list)
    # (where the packet calling an indirect buffer starts, an address the buffer's packets write): a write seen
    # done shows the queue complete up to the call, not through it
    called_writes: list[tuple[int, int]] = field(default_factory=list)
    dispatching: bool = False  # they launch kernels (or set up a launch), which may take any buffer they can name


_TOKEN = re.compile(r"\$([QD])(\d+)\$")
WHOLE = 0xFFFFFFFF


def _expr(parts: tuple[Part, ...]) -> str:
    """Python source computing a value from its parts of the submission's dwords, which it names by tokens: `$Di$`
    for dword i, `$Qi$` for dwords i and i+1 as one 64-bit value (an address, mostly); `_Builder.plan` puts
    the plan's unpacked values in their place."""
    if len(parts) == 2 and parts[0][1:] == (0, WHOLE, 0) and parts[1] == (parts[0][0] + 1, 0, WHOLE, 32):
        return f"$Q{parts[0][0]}$"
    terms = []
    for i, sh, m, b in parts:
        t = f"$D{i}$ >> {sh}" if sh else f"$D{i}$"
        t = f"({t}) & {m:#x}" if sh + m.bit_length() < 32 else t
        terms.append(f"(({t}) << {b})" if b else f"({t})")
    return " | ".join(terms)


def _unpacking(source: str, dwords: int) -> tuple[str, struct.Struct]:
    """`source` with its dword tokens replaced by the values of `v`, and the Struct that unpacks `v` from a
    submission of `dwords` dwords: a pair of dwords read whole as one "Q" where no token takes either alone (a
    few bytecodes less for each address of each submission), the dwords no token takes skipped."""
    tokens = {(kind, int(i)) for kind, i in _TOKEN.findall(source)}
    alone = {i for kind, i in tokens if kind == "D"}
    pairs = {i for kind, i in tokens if kind == "Q"}
    whole = {i for i in pairs if alone.isdisjoint((i, i + 1)) and pairs.isdisjoint((i - 1, i + 1))}
    alone.update(j for i in pairs - whole for j in (i, i + 1))  # overlapping no pair read whole
    fmt, at, i = ["<"], {}, 0
    while i < dwords:
        if i in whole or i in alone:
            at[i] = len(at)
            fmt.append("Q" if i in whole else "I")
            i += 2 if i in whole else 1
        else:
            fmt.append("4x")
            i += 1

    def value(m: re.Match) -> str:
        i = int(m[2])
        if m[1] == "D":
            return f"v[{at[i]}]"
        return f"v[{at[i]}]" if i in whole else f"(v[{at[i]}] | (v[{at[i + 1]}] << 32))"

    return _TOKEN.sub(value, source), struct.Struct("".join(fmt))


class Plan:
    """A submission shape's facts as one generated function of the submission's values (its dwords, unpacked by
    `values`, 64-bit addresses whole). `facts(ring, base)`
    gives the signals, waits and TRAPs positioned in the queue's stream (`base` is where the submission
    starts), the written (position, address, bytes) triples, the referenced addresses, and the read triples.
    `resolved` is the recorder's to cache which of its buffers the writes land in."""

    __slots__ = ("values", "compute", "writes", "packets", "resolved", "dispatching", "completing", "quiet", "_steps")

    def __init__(self, values: struct.Struct, compute: Callable, writes: Callable, packets: Counter[PacketDef],
                 steps: tuple[struct.Struct, Callable] | None = None, quiet: bool = False):
        self.values, self.compute, self.writes, self.packets = values, compute, writes, packets  # (how many of each)
        self._steps = steps
        self.quiet = quiet  # it signals and waits for nothing
        self.resolved: object = None
        # it dispatches a kernel, or sets the registers a later dispatch reads (capture/dispatches.py)
        self.dispatching = any(d.kernel or d.launch_field or (d.tail is not None and d.tail.registers)
                               for d in packets)
        self.completing = any(d.completion for d in packets)  # it decrements an AQL signal on completion

    def facts(self, ring: bytes, base: int, shift: int = 0) -> tuple[list[Signal], list[Wait], Written,
                                                                    tuple[int, ...], Read]:
        """The facts, the written and read triples positioned `shift` bytes on from the submission's start."""
        return self.compute(self.values.unpack_from(ring), base, shift)

    def written(self, ring: bytes, shift: int = 0) -> Written:
        """The written triples of `facts` alone (what a lone queue's plain submissions are learnt from)."""
        return self.writes(self.values.unpack_from(ring), shift)

    def steps(self, ring: bytes) -> tuple[Step, ...]:
        """What the submission's packets do to a kernel dispatch, in order (capture/dispatches.py reads them):
        (end, REGISTERS, names, values) for registers set, (end, KERNEL, descriptor, kernel arguments) for a
        dispatch naming its kernel, (end, LAUNCH, 0, 0) for one launching what the registers set up."""
        if self._steps is None:
            return ()
        values, steps = self._steps
        return steps(values.unpack_from(ring))


_CODE: dict[str, object] = {}  # generated source -> its compiled code: plans of the same shape share it


class _Builder:
    """Collects one plan from decoded packets: the source of its function."""

    def __init__(self) -> None:
        self.packets: list[PacketDef] = []
        self.binds: list[str] = []  # statements binding each address to a local, computed once
        self.written: list[str] = []
        self.read: list[str] = []
        self.referenced: list[str] = []
        self.signals: list[tuple[int, str, str]] = []  # (position, address local, value expression)
        self.waits: list[tuple[int, str, str, str]] = []  # (position, address local, reference, whether >=)
        self.steps: list[str] = []  # Plan.steps

    def value(self, p: Packet, name: str, limit: int = 64) -> str:
        """An expression for field `name` of packet `p` over `v`, the submission's dwords."""
        parts = p.defn.parts(name)
        if sum(m.bit_length() for _, _, m, _ in parts) > limit:
            raise ValueError(f"{p.name}.{name}: a completion value must fit {limit} bits")
        return _expr(tuple((p.offset // 4 + dword, shift, mask, bit) for dword, shift, mask, bit in parts))

    def add(self, p: Packet) -> None:
        """Note the packet's facts (its fields' values read from the dwords when the plan runs)."""
        d, pos = p.defn, p.offset + p.size
        self.packets.append(d)
        addresses = {}
        for n in p.addresses():
            addresses[n] = f"a{len(self.binds)}"
            self.binds.append(f"    a{len(self.binds)} = {self.value(p, n)}\n")
        self.referenced += addresses.values()
        # how many bytes a write covers is known where the table counts the bytes a packet moves through it
        moved = "0"
        if d.split:
            moved = f"n{len(self.binds)}"
            self.binds.append(f"    {moved} = ({self.value(p, d.split[0])}) + 1\n")
        # where it writes a signal's value, or its inline data (the tail's length is the shape's)
        signal = d.signal_bytes
        inline = d.tail.written if d.tail is not None else None
        if inline is not None and d.tail.one_addr is not None:  # every dword to one address while it is set
            inline_size = f"({min(4, len(p.payload))} if ({self.value(p, d.tail.one_addr)}) else {len(p.payload)})"
        else:
            inline_size = str(len(p.payload))
        for n, a in addresses.items():
            size = (moved if d.split and n in d.split[1] else signal if signal and n == d.signal[0]
                    else inline_size if n == inline else 0)
            access = f"(shift + {pos}, {a}, {size})"
            (self.written if n in d.written_fields else self.read).append(access)
        if d.signal is not None and d.signal[0] in addresses:
            self.signals.append((pos, addresses[d.signal[0]], self.value(p, d.signal[1])))  # a dword, or 64 bits
        if d.wait is not None and d.wait[0] in addresses:
            addr, ref, mask, func = d.wait
            a, wide = addresses[addr], d[mask].width > 32
            ok = f"({self.value(p, mask)}) == {(1 << d[mask].width) - 1:#x} and ({self.value(p, func)}) in _REACHED"
            if wide:  # WAIT_REG_MEM64: as the high and low dword polls that pairing puts together again
                self.waits += [(pos, f"{a} + 4", f"({self.value(p, ref)}) >> 32", ok),
                               (pos, a, f"({self.value(p, ref)}) & {FULL_MASK:#x}", ok)]
            else:
                self.waits.append((pos, a, self.value(p, ref, 32), ok))
        self._step(p, pos)

    def _step(self, p: Packet, pos: int) -> None:
        """The packet's Plan.step, if it sets registers or dispatches a kernel (what its shape fixes: the registers'
        names, where their values lie)."""
        d = p.defn
        if d.tail is not None and d.tail.registers:
            first, names = p.fields[d.tail.first], d.tail.registers
            at = (p.offset + p.size - len(p.payload)) // 4
            named = [(names[first + i], at + i) for i in range(len(p.payload) // 4) if first + i in names]
            if named:
                self.steps.append(f"({pos}, {REGISTERS}, {tuple(n for n, _ in named)!r}, "
                                  f"({''.join(f'$D{w}$, ' for _, w in named)}))")
        elif d.kernel is not None:
            self.steps.append(f"({pos}, {KERNEL}, {self.value(p, d.kernel[0])}, {self.value(p, d.kernel[1])})")
        elif d.launch_field is not None:
            self.steps.append(f"({pos}, {LAUNCH}, 0, 0)")

    def _signals(self) -> str:
        """An expression for the submission's signals, 64-bit pairs put together: straight when the dword
        signals come in pairs (low, then high 4 bytes on) as the driver writes them, else by _pair_signals."""
        listed = f"[{', '.join(f'(base + {p}, {a}, {v})' for p, a, v in self.signals)}]"
        if len(self.signals) < 2:
            return listed
        # how pair_signals puts them when they come as drivers write them: in pairs, an odd one (an event's
        # mailbox) alone after them (SdmaQueue.signal) or before them, not pairing with the next (ComputeQueue.signal)
        out = f"_pair_signals({listed})"
        firsts = (0, 1) if len(self.signals) % 2 else (0,)
        for first in reversed(firsts):
            alone, rest = self.signals[:first], self.signals[first:]
            pairs = list(zip(rest[::2], rest[1::2], strict=False))
            test = " and ".join([f"{rest[0][1]} != {a} + 4" for _, a, _ in alone]
                                + [f"{hi[1]} == {lo[1]} + 4" for lo, hi in pairs])
            paired = ", ".join([f"(base + {p}, {a}, {v})" for p, a, v in alone]
                               + [f"(base + {hi[0]}, {lo[1]}, {lo[2]} | ({hi[2]}) << 32)" for lo, hi in pairs]
                               + [f"(base + {p}, {a}, {v})" for p, a, v in rest[len(pairs) * 2:]])
            out = f"([{paired}] if {test} else {out})"
        return out

    def _waits(self) -> str:
        """An expression for the submission's waits that tell memory reached a value, 64-bit pairs put together:
        straight when the dword polls come in pairs (high, then low 4 bytes before) as the driver makes them,
        else by _pair_waits."""
        if not self.waits:
            return "[]"
        listed = f"[{', '.join(f'(base + {p}, {a}, {r}, {ok})' for p, a, r, ok in self.waits)}]"
        if len(self.waits) % 2:
            return f"_pair_waits({listed})"
        pairs = list(zip(self.waits[::2], self.waits[1::2], strict=True))
        test = " and ".join(f"{hi[1]} == {lo[1]} + 4" for hi, lo in pairs)
        paired = ", ".join(f"((base + {lo[0]}, {lo[1]}, ({hi[2]}) << 32 | {lo[2]}), ({hi[3]}) and ({lo[3]}))"
                           for hi, lo in pairs)
        return f"([w for w, ok in ({paired},) if ok] if {test} else _pair_waits({listed}))"

    def plan(self, dwords: int) -> Plan:
        """The plan of a submission of `dwords` dwords holding the packets added."""
        source, values = _unpacking(
            f"def compute(v, base, shift):\n{''.join(self.binds)}"
            f"    return ({self._signals()}, {self._waits()}, "
            f"({''.join(w + ', ' for w in self.written)}), ({''.join(a + ', ' for a in self.referenced)}), "
            f"({''.join(r + ', ' for r in self.read)}))\n"
            f"def written(v, shift):\n{''.join(self.binds)}    return ({''.join(w + ', ' for w in self.written)})\n",
            dwords)
        code = _CODE.get(source)
        if code is None:
            code = _CODE[source] = compile(source, "<submission plan>", "exec")  # generated from the tables
        ns = {"_REACHED": REACHED, "_pair_signals": pair_signals, "_pair_waits": pair_waits}
        exec(code, ns)
        return Plan(values, ns["compute"], ns["written"], Counter(self.packets), self._steps(dwords),
                    quiet=not self.signals and not self.waits)

    def _steps(self, dwords: int) -> tuple[struct.Struct, Callable] | None:
        """Plan.steps's unpacking and function, for a plan with steps."""
        if not self.steps:
            return None
        source, values = _unpacking(f"def steps(v):\n    return ({''.join(s + ', ' for s in self.steps)})\n", dwords)
        code = _CODE.get(source)
        if code is None:
            code = _CODE[source] = compile(source, "<submission steps>", "exec")
        ns: dict = {}
        exec(code, ns)
        return values, ns["steps"]


_NONE: dict = {}


class Analyzer:
    """Works out submissions' facts, caching plans by shape."""

    def __init__(self) -> None:
        self._shapes: dict[tuple[Dialect, int], dict[str, struct.Struct]] = {}  # (dialect, length) -> shapes
        self._plans: dict[tuple[struct.Struct, tuple[int, ...]], Plan] = {}

    def analyse(self, dialect: Dialect, ring: bytes, read: ReadMemory,
                ib_dialect: Dialect | None = None) -> tuple[Plan, Facts | None]:
        """The plan of `ring` (a submission's bytes), and the facts of the indirect buffers its packets point
        at (None when there are none), positioned from the submission's start; raises PacketError on bytes
        that are no packets. `ib_dialect`: what the indirect buffers hold (None: `dialect`; an unknown one when
        the queue's differs: they are not followed)."""
        plans = self._plans
        for shape in self._shapes.get((dialect, len(ring)), _NONE).values():
            plan = plans.get((shape, shape.unpack_from(ring)))
            if plan is not None:
                return plan, None
        packets = list(dialect.iter_packets(ring))
        builder, inner = _Builder(), None
        for p in packets:
            builder.add(p)
            if p.defn.indirect is not None:
                inner = inner or Facts()
                self._indirect(ib_dialect or dialect, p, p.offset, p.offset + p.size, inner, read, 1)
        plan = builder.plan(len(ring) // 4)
        if all(p.defn.indirect is None for p in packets):  # the shape fixes every offset (tail counts included)
            self._remember(dialect, ring, packets, plan)
        return plan, inner

    def _indirect(self, dialect: Dialect, p: Packet, start: int, pos: int, out: Facts, read: ReadMemory,
                  depth: int) -> None:
        """Add the facts of the indirect buffer `p` points at: its accesses and waits at `pos` (where the packet
        that called it from the ring ends), its signals and writes also at `start` (where that packet starts):
        seeing one shows the queue complete up to the call, not through it (the IB's later packets may still
        run). In an IB that calls none and dispatches nothing, waits that all come before every access are
        placed just before `pos`, where they order those accesses (a wait orders what comes after it: at `pos`
        it ordered none of them, and what they copied was taken for racy); and its last signals, those no other
        access and no wait follows, are placed in their order from `pos` on, with what their packets write:
        seeing one shows the IB's work before it done (at `start` it showed none of it, and what another queue
        then took from its writes was taken for racy)."""
        addr_field, size_field = p.defn.indirect
        base = p.addresses().get(addr_field)
        data = read(base, p.fields[size_field] * 4) if base else None
        if data is None or depth > MAX_IB_DEPTH:
            return
        builder, nested, polls = _Builder(), False, set()
        try:
            packets = list(dialect.iter_packets(data))
        except PacketError as exc:
            raise PacketError(f"the indirect buffer at {base:#x} that {p.name} at byte {p.offset:#x} calls: "
                              f"{exc}") from None
        for q in packets:
            builder.add(q)
            if q.defn.wait is not None:
                polls.add(q.offset + q.size)  # (where its read of what it polls is)
            if q.defn.indirect is not None:
                nested = True
                self._indirect(dialect, q, start, pos, out, read, depth + 1)
        plan = builder.plan(len(data) // 4)
        out.dispatching |= plan.dispatching
        signals, waits, written, referenced, read = plan.facts(data, 0)
        accesses = [at for at, _, _ in (*written, *read) if at not in polls]
        alone = not nested and not plan.dispatching
        placed = {}  # the last signals, after all the IB's other accesses and its waits: at pos, pos + 1, ...
        if alone:
            ats = {at for at, _, _ in signals}
            after = max((*(at for at in accesses if at not in ats), *(at for at, _, _ in waits)), default=-1)
            tail = sorted(at for at in ats if at > after)[-TAIL_SIGNALS:]
            placed = {at: pos + k for k, at in enumerate(tail)}
        out.written += ((placed.get(at, pos), a, n) for at, a, n in written)
        out.called_writes += ((start, a) for _, a, _ in written)
        out.read += ((pos, a, n) for _, a, n in read)
        out.referenced += referenced
        first = pos - 1 if waits and alone and (not accesses or max(at for at, _, _ in waits) < min(accesses)) \
            else pos
        out.waits += ((first, a, v) for _, a, v in waits)
        out.signals += ((placed.get(at, start), a, v) for at, a, v in signals)

    def _remember(self, dialect: Dialect, ring: bytes, packets: list[Packet], plan: Plan) -> None:
        if len(self._plans) >= MAX_PLANS:
            self._shapes.clear()
            self._plans.clear()
        words = sorted({p.offset // 4 + w for p in packets for w in _shape_words(p.defn)})
        shape = dword_unpacker(words)
        shapes = self._shapes.setdefault((dialect, len(ring)), {})
        shape = shapes.setdefault(shape.format, shape)
        self._plans[(shape, shape.unpack_from(ring))] = plan


def _shape_words(d: PacketDef) -> set[int]:
    """The dwords of a packet that decide what its fields mean and where the next packet starts: its header,
    the fields that decide which hold an address, and its tail's count."""
    words = {0} if d.tail is None else {0, *(w for w, _, _, _ in d.parts(d.tail.count))}
    if d.tail is not None and d.tail.registers:  # which registers it sets (Plan.steps names them)
        words.update(w for w, _, _, _ in d.parts(d.tail.first))
    for _, condition in d.address_conditions:
        if condition is not None:
            words.update(w for w, _, _, _ in d.parts(condition[0]))
    return words

