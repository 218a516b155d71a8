"""Packets for the replay target: decode with the capture's dialect, relocate every tagged address, encode with
the target's.

Relocation follows the packet tables' Addr tags and every other meaning their tags (`PacketDef.split`,
`.droppable`, `.event_field`, `.indirect`), so no packet is named here. What differs between dialects is data:
field sets (a field the target lacks must hold 0 or the dialect's default, `Dialect.defaults`, else the packet
cannot be translated; a field only the target has gets the target's default), count widths and per-family copy
limits (packets with a byte count are split; a `saturates` size at its largest stays "all"), cache maintenance
that older engines do not have (dropped, and said so), and the bits that ask the caches for work
(`Dialect.cache`): where the two dialects' tables for a packet differ, the actions the recorded bits ask are
written in the target's bits, and a bit no row covers, or an action the target cannot ask exactly, is refused.

Speed: a packet seen before, with the same bytes, is not translated again. Any other packet whose translation
is the common case (no split, every value fitting the target, no indirect buffer) goes straight from its dwords
to the target's through a function generated from the two tables (`PacketDef.transcoder`); the rest, and every
refusal, take the general way (fields decoded, relocated, encoded), so errors are the same either way.

A replay on the recorded dialect with every buffer at its recorded address (the usual stress replay) mostly
submits what was recorded, with the replay's event ids. A submission that translated to itself (but for its
event ids) is remembered by its *layout* (where its packets are) and the dwords of each packet that mean more
than a value (`PacketDef.meaning_words`: header, addresses, counts, event ids): another submission agreeing on
those translates the same way whatever its values (a semaphore's next value, a fill pattern), so it is taken
as it is, its event ids set, without being decoded.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kfdtrace.driver.packets import (
    Checker,
    Dialect,
    Field,
    Packet,
    PacketDef,
    PacketError,
    Transcode,
    dword_unpacker,
)
from kfdtrace.driver.ranges import RangeMap
from kfdtrace.replay.dispatch_memo import DispatchMemo, Events, Inputs, Kept

Rewrite = Callable[[dict[str, int], str], dict[str, int]]  # (recorded fields, where) -> fields to replace
CACHED_PACKETS = 1 << 16  # distinct translated packets a translation cache keeps
# A submission length whose remembered layouts this many times in a row were not seen again stops being
# remembered (a workload whose addresses move on every submission would only pay for the walk).
FRUITLESS_LAYOUTS = 8
WHOLE_BYTES = 8 << 20  # bytes of recorded submissions a translation cache remembers whole (see `whole`)
DISPATCHED_BYTES = 32 << 20  # bytes of submissions launching kernels, and their translations, it remembers
# translations it keeps of one such submission (the same bytes with other kernel arguments in memory: a recorded
# kernel-argument arena reused)
DISPATCHED_ALTERNATIVES = 4
IDENTITY = "identity"  # the relocation state of a replay whose buffers all sit at their recorded addresses
# a recorded packet that makes the GPU write memory: (byte offset in its submission, recorded addresses it
# writes, whether a packet of its kind writes a clock: None for a dispatch, the pointers its kernel may write
# through, which name the packet that last wrote a buffer alone)
Write = tuple[int, tuple[int, ...], bool | None]
# a recorded packet with an event id: (its byte offset in the submission, its definition, the recorded id)
EventMark = tuple[int, PacketDef, int]
# a kept translation of a submission launching kernels: (the translated bytes, packets, writes)
Dispatched = tuple[bytes, int, tuple[Write, ...]]


def carries_dispatch(d: PacketDef) -> bool:
    """Whether packets of `d` hold a dispatch's state (register writes, a launch, a kernel object), which a replay
    re-derives for its target rather than translating."""
    return d.kernel is not None or d.launch_field is not None or bool(d.tail is not None and d.tail.registers)


class ReplayError(Exception):
    """A trace that cannot be replayed on this target, found before anything is submitted."""


class BadInput(Exception):
    """A trace that is readable but cannot mean anything to replay (no submissions, no chunk size, a malformed
    record)."""


class OutsideBuffers(ReplayError):
    """A packet address in no recorded buffer: on real hardware the GPU would touch memory nobody allocated."""


_RELOCATIONS = itertools.count()


class Relocation:
    """Recorded address ranges -> replay addresses; interior pointers move with their range."""

    def __init__(self) -> None:
        self._ranges: RangeMap[int] = RangeMap()
        self._unplaced: RangeMap[str] = RangeMap()  # recorded ranges addresses cannot move into, and why
        # (start, end, delta) of the ranges the last two lookups hit: a copy's packets point into two buffers
        self._last = self._before = (0, 0, 0)
        self.version = 0  # changes whenever a range comes or goes: translations made before may be stale
        self.moved = 0  # ranges whose replay address is not their recorded one
        self._serial = next(_RELOCATIONS)  # versions of two relocations are not comparable: states carry this

    @property
    def state(self) -> str | tuple[int, int]:
        """What translations depend on: IDENTITY while every range sits at its recorded address (the same for
        any relocation at any such moment), else this relocation's version."""
        return (self._serial, self.version) if self.moved else IDENTITY

    def add(self, recorded: int, size: int, replay: int) -> None:
        if not self._ranges.add(recorded, size, replay - recorded):
            raise ReplayError(f"recorded buffers overlap at {recorded:#x}")
        self.moved += replay != recorded
        self.version += 1

    def unplace(self, recorded: int, size: int, why: str) -> None:
        """Addresses in [recorded, recorded+size) move nowhere: `why` says so where one is refused."""
        self._unplaced.add(recorded, size, why)

    def unplaced(self, addr: int) -> str | None:
        """What `unplace` said of the range holding `addr` (None: no such range)."""
        hit = self._unplaced.find(addr)
        return None if hit is None else hit[2]

    def remove(self, recorded: int) -> None:
        if self._unplaced.find(recorded) is not None:
            self._unplaced.remove(recorded)
            return
        hit = self._ranges.find(recorded)
        self._ranges.remove(recorded)
        self.moved -= hit is not None and hit[2] != 0
        self._last = self._before = (0, 0, 0)
        self.version += 1

    def find(self, addr: int) -> tuple[int, int] | None:
        """(recorded start, size) of the range holding `addr`."""
        hit = self._ranges.find(addr)
        return None if hit is None else hit[:2]

    def first_held(self, addrs: Sequence[int]) -> int | None:
        """The index of the first of `addrs` that is an address in a recorded range or just past its end (a C end
        pointer: RangeMap.held)."""
        return self._ranges.first_held(addrs, ends=True)

    def pointee(self, addr: int) -> tuple[int, int, int] | None:
        """find() of the range `addr` points into: the one holding it, else the one it is just past the end of."""
        return self._ranges.pointee(addr)

    def move_pointer(self, addr: int) -> int | None:
        """move() of a pointer, which may be C's end pointer, just past its range's end (a kernel indexing back)."""
        new = self.move(addr)
        if new is None and addr and (below := self.move(addr - 1)) is not None:
            return below + 1
        return new

    def move(self, addr: int) -> int | None:
        start, end, delta = last = self._last
        if start <= addr < end:
            return addr + delta
        start, end, delta = self._before
        if start <= addr < end:
            self._last, self._before = self._before, last
            return addr + delta
        hit = self._ranges.find(addr)
        if hit is None:
            return None
        start, size, delta = hit
        self._last, self._before = (start, start + size, delta), last
        return addr + delta


class TranslationCache:
    """Translated packets by their recorded bytes, for one relocation state. A replay's survey and its run
    translate the same submissions in the same order: while both see the identity relocation, the run finds
    the survey's translations here. An entry: (translated bytes, (recorded event, replay event) or (), the
    packet's writes or None)."""

    def __init__(self) -> None:
        self.state: str | tuple[int, int] | None = None
        self.entries: dict[bytes, tuple[bytes, tuple[int, ...], tuple[tuple[int, ...], bool] | None]] = {}
        # (a conditional's recorded bytes, dwords its translated packets take) -> the conditional translated
        self.heads: dict[tuple[bytes, int], bytes] = {}
        # submission length -> {its packets' (offset, definition)s: a Struct unpacking their meaning words}
        self.layouts: dict[int, dict[tuple, struct.Struct]] = {}
        # (layout Struct, the words it unpacked) -> (packets, writes, event fields) of a submission that
        # translates to itself but for its event ids (kept for the IDENTITY state only)
        self.unchanged: dict[tuple, tuple[int, tuple[Write, ...], tuple[EventMark, ...]]] = {}
        self.fruitless: dict[int, int] = {}  # submission length -> layouts remembered in vain since the last hit
        # recorded submission -> the same, for one that translates to itself but for its event ids: what the
        # survey saw, the run finds with one lookup (up to WHOLE_BYTES of them; IDENTITY state only)
        self.whole: dict[bytes, tuple[int, tuple[Write, ...], tuple[EventMark, ...]]] = {}
        self.whole_bytes = 0
        # recorded submission launching kernels -> its translations (each with what it read), IDENTITY state only;
        # the next loop finds them (up to DISPATCHED_BYTES)
        self.dispatched: dict[bytes, Kept[Dispatched]] = {}
        self.dispatched_bytes = 0

    def entries_for(self, state: str | tuple[int, int]) -> dict:
        if state != self.state or len(self.entries) + len(self.heads) + len(self.unchanged) >= CACHED_PACKETS:
            self.entries, self.heads, self.unchanged, self.whole, self.state = {}, {}, {}, {}, state
            self.whole_bytes = 0
        if state != IDENTITY and self.dispatched:
            self.dispatched, self.dispatched_bytes = {}, 0
        return self.entries


@dataclass(frozen=True)
class _Plan:
    """How one source packet definition becomes the target's, worked out once from the two tables."""

    dst: PacketDef
    lacking: tuple[tuple[str, int], ...]  # fields the target lacks, with the one non-zero value allowed
    add: dict[str, int]  # fields only the target has: the kernel's defaults (else 0)
    narrower: tuple[str, ...]  # fields the target holds in fewer bits: validated
    split: tuple[str, tuple[str, ...]] | None  # the target's (byte count field, advancing addresses)
    limit: int | None  # bytes one packet may move on the target (packets with a byte count are split to it)
    rewrites: tuple[Rewrite, ...]  # values that mean more than their layout: an event id, an indirect buffer
    cacheable: bool  # its translation depends on its bytes, the relocation and its event id alone (no IB)
    cache: bool  # the two dialects' cache tables differ: the target's cache fields are written from the actions
    saturating: tuple[str, ...]  # sizes of other widths whose largest value means all (made the target's largest)
    # (address, field, values): where the field holds one of the values, the source's packet writes or reads the
    # address and the target's does not (its table's `when` leaves them out): refused
    unaddressed: tuple[tuple[str, str, frozenset[int]], ...] = ()


_DROP = object()  # the plan of a packet the target does without
_UNSET = object()


class _Outside(Exception):
    pass


def _unaddressed(d: PacketDef, t: PacketDef) -> tuple[tuple[str, str, frozenset[int]], ...]:
    """(address, field, values) of `d`'s addresses that the same values of `t`'s fields leave no address: a value
    only the source's table tags (campaign 73: gfx10.3's RELEASE_MEM data_sel=7, an atomic add, has no gfx9
    form, and went to gfx9 as a packet it does not define)."""
    ours, theirs = dict(d._addr_tests), dict(t._addr_tests)
    out = []
    for n, cond in ours.items():
        if n in theirs and (their := theirs[n]) is not None and cond is not None and cond[0] == their[0]:
            if extra := cond[1] - their[1]:
                out.append((n, cond[0], frozenset(extra)))
    return tuple(out)


class Translator:
    """Translates one queue's ring bytes from the capture's dialect to the target's."""

    def __init__(self, src: Dialect, dst: Dialect, max_copy: int, relocation: Relocation,
                 event_id: Callable[[int], int] = lambda e: e,
                 indirect: Callable[[int, int, str], tuple[int, int]] | None = None,
                 cache: TranslationCache | None = None, dispatch: Callable[[Packet, str], bytes] | None = None,
                 dispatch_all: bool = False, memo: DispatchMemo | None = None, xccs: tuple[int, int] = (1, 1)):
        """`event_id` maps a recorded event id (a packet's `event_field`) to the replay's; `indirect(address,
        dwords, where)` takes a recorded indirect buffer (a packet's `indirect` fields) and returns (address,
        dwords) of its translated copy (None: only relocated). `cache`: shared with another translator of the
        same queue (the survey's). `dispatch(packet, where)` gives the target's bytes for each packet that
        carries dispatch state (`carries_dispatch`: register writes, launches, kernel objects), which are then
        never cached nor taken as they are; with `dispatch_all`, for every packet (an AQL queue replayed on a PM4
        one, whose packets all become others). `memo`: what the dispatcher's translations depended on, so that
        whole submissions launching kernels are kept in the cache and taken again while it holds. `xccs`: the
        recorded GPU's XCC count and the target's, for the masks that select XCCs (PRED_EXEC)."""
        self.src, self.dst, self.relocation = src, dst, relocation
        self.max_copy, self.event_id, self.indirect = max_copy, event_id, indirect
        # whether each (recorded, replay) event id pair maps as it did (a function made once: a kept translation's
        # check is the hot path of `replay --loop`)
        self.same_events: Callable[[Events], bool] = lambda events: all(
            event_id(recorded) == replay for recorded, replay in events)
        # the same dialect on the same number of XCCs: packets stay as they are, but for their addresses
        self.same = src is dst and (xccs[0] == xccs[1] or all(d.xcc_field is None for d in src))
        self.dropped: list[str] = []
        self._plans: dict[PacketDef, _Plan | object] = {}
        # definition -> the generated translation of its packets as decoded (None back: take the general way)
        self._fast: dict[PacketDef, Transcode] = {}
        self.cache = cache or TranslationCache()
        self.packets = 0  # recorded packets translated
        self.taken = 0  # submissions launching kernels taken from the cache (`ring`)
        self.calls: list[int] | None = None  # a list: the dwords of every indirect buffer called are added to it
        self.dispatch, self.memo = dispatch, memo
        self.kernel_writes: tuple[int, ...] = ()  # set by `dispatch`: the pointers its kernel may write through
        self.xccs = xccs
        self._dispatching = frozenset(d for d in src if dispatch_all or carries_dispatch(d)) if dispatch \
            else frozenset()
        # what _span points out
        self._notable = frozenset(d for d in src if d.event_field or d.indirect) | self._dispatching
        self._checks: dict[PacketDef, Checker | None] = {}  # definition -> PacketDef.checker (None: none)

    def ring(self, data: bytes, where: str, writes: list[Write] | None = None) -> bytes:
        """The translated packets of `data` (one submission's ring bytes); `where` names it in errors. With
        `writes`, the recorded packets that write memory are added to it (read where the translation was)."""
        if data.__class__ is not bytes:
            data = bytes(data)
        memo = self.memo
        if memo is not None:  # kept for the IDENTITY state alone, whatever the packets' cache holds
            if self.relocation.moved:
                memo = None
            else:
                kept = self.cache.dispatched.get(data)
                if kept is not None:
                    # the translation of a submission launching kernels that `_keep` kept, if its event ids map
                    # as they did and the memo finds its dispatches' inputs as they were (the hot path of
                    # `replay --loop` over dispatches)
                    hit = kept.take(memo, self.same_events)
                    if hit is not None:
                        out, packets, wrote = hit
                        self.taken += 1
                        self.packets += packets
                        if writes is not None:
                            writes += wrote
                        return out
                memo.start()
        state = self.relocation.state
        cache = self.cache.entries_for(state)
        unchanged = self.same and state == IDENTITY
        if unchanged:
            out = self._unchanged(data, writes)
            if out is None:
                out = self._checked(data, writes)
            if out is not None:
                return out
        # the writes are gathered to be remembered with the submission, or when the caller wants them
        done, wrote = self.packets, [] if writes is None and (unchanged or memo is not None) else writes
        notable: list[tuple[int, PacketDef]] | None = [] if unchanged or memo is not None else None
        first = 0 if wrote is None else len(wrote)
        try:
            out = b"".join(self._span(data, 0, len(data), where, cache, wrote, notable))
        except PacketError as exc:
            raise ReplayError(f"{where}: {exc}") from None
        if notable is None or any(d.indirect for _, d in notable):
            return out
        if not any(d in self._dispatching for _, d in notable):
            if unchanged and len(out) == len(data):
                self._remember(data, out, self.packets - done, tuple(wrote[first:]), notable)
        elif memo is not None:
            inputs = memo.inputs()
            if inputs is not None:
                self._keep(data, out, self.packets - done, tuple(wrote[first:]), notable, inputs)
        return out

    def _keep(self, data: bytes, out: bytes, packets: int, wrote: tuple[Write, ...],
              notable: list[tuple[int, PacketDef]], inputs: Inputs) -> None:
        """Remember a submission launching kernels with its translation, while there is room (in place of the
        translation of it kept longest ago when it has DISPATCHED_ALTERNATIVES)."""
        cache = self.cache
        kept = cache.dispatched.get(data)
        if kept is None:
            if cache.dispatched_bytes + len(data) + len(out) > DISPATCHED_BYTES:
                return
            kept = cache.dispatched[data] = Kept(DISPATCHED_ALTERNATIVES)
            cache.dispatched_bytes += len(data)
        decode, event_id = self.src.decode, self.event_id
        recorded = (decode(data, at).fields[d.event_field] for at, d in notable if d.event_field)
        pushed = kept.add((out, packets, wrote), tuple((e, event_id(e)) for e in recorded), inputs)
        cache.dispatched_bytes += len(out) - (0 if pushed is None else len(pushed[0]))

    def _unchanged(self, data: bytes, writes: list[Write] | None) -> bytes | None:
        """`data` translated, if it agrees in every dword that means more than a value with a submission
        remembered as translating to itself but for its event ids (its writes then added to `writes`)."""
        cache = self.cache
        hit = cache.whole.get(data)
        if hit is None:
            known = cache.unchanged
            for shape in cache.layouts.get(len(data), {}).values():
                hit = known.get((shape, shape.unpack_from(data)))
                if hit is not None:
                    cache.fruitless[len(data)] = 0
                    break
            else:
                return None
        packets, wrote, marks = hit
        out = self._mapped(data, marks)
        if out is not None:
            self.packets += packets
            if writes is not None:
                writes += wrote
        return out

    def _checked(self, data: bytes, writes: list[Write] | None) -> bytes | None:
        """`data` itself if each of its packets stays as it is (`PacketDef.checker`: no packet made, nothing
        encoded), its writes then added to `writes`; None: take the general way (a packet that changes, has an
        event id or an indirect buffer, a conditional reaching past a packet's end, or bytes that are no
        packets), which translates it or says what is wrong."""
        checks, move, wrote, starts, reach = self._checks, self.relocation.move, [], set(), []
        try:
            for at, size, d in self.src.spans(data):
                check = checks.get(d, _UNSET)
                if check is _UNSET:
                    check = self._checker(d)
                if check is None:
                    return None
                w = check(data, at, move)
                if w is False:
                    return None
                if w:
                    wrote.append((at, *w))
                if d.skip_field:
                    reach.append(at + size + 4 * self.src.decode(data, at).fields[d.skip_field])
                starts.add(at)
        except PacketError:
            return None
        starts.add(len(data))
        if any(r not in starts for r in reach):
            return None
        self.packets += len(starts) - 1
        if writes is not None:
            writes += wrote
        self._remember(data, data, len(starts) - 1, tuple(wrote), [])
        return data

    def _checker(self, d: PacketDef) -> Checker | None:
        plan = self._plans.get(d) or self._plan(d)
        below = {} if plan is _DROP or plan.limit is None else {plan.split[0]: plan.limit}
        check = self._checks[d] = None if plan is _DROP or d in self._dispatching else d.checker(below)
        return check

    def _mapped(self, data: bytes, marks: tuple[EventMark, ...]) -> bytes | None:
        """`data` with each marked event field holding the replay's id for the recorded one (None when one does
        not fit its field: the general way says so)."""
        out = None
        for at, d, recorded in marks:
            new = self.event_id(recorded)
            if new == recorded:
                continue
            out = out or bytearray(data)
            try:
                d.put(out, at, d.event_field, new)
            except ValueError:
                return None
        return data if out is None else bytes(out)

    def _remember(self, data: bytes, out: bytes, packets: int, wrote: tuple[Write, ...],
                  notable: list[tuple[int, PacketDef]]) -> None:
        """If `data` (no indirect buffer in it: the run copies those) translated to itself but for its event ids
        (`notable` lists its packets with one), remember it whole while there is room, and its layout and
        meaning words unless its length's layouts have not been seen again for long."""
        n, cache = len(data), self.cache
        decode = self.src.decode
        marks = tuple((at, d, decode(data, at).fields[d.event_field]) for at, d in notable)
        if self._mapped(data, marks) != out:
            return
        entry = (packets, wrote, marks)
        if cache.whole_bytes + n <= WHOLE_BYTES:
            cache.whole[data] = entry
            cache.whole_bytes += n
        if cache.fruitless.get(n, 0) >= FRUITLESS_LAYOUTS:
            return
        spans = list(self.src.spans(data))
        layouts = cache.layouts.setdefault(n, {})
        key = tuple((at, d) for at, _, d in spans)
        shape = layouts.get(key)
        if shape is None:
            if len(layouts) >= FRUITLESS_LAYOUTS:
                return
            shape = layouts[key] = dword_unpacker(at // 4 + w for at, _, d in spans for w in d.meaning_words)
        cache.unchanged[(shape, shape.unpack_from(data))] = entry
        cache.fruitless[n] = cache.fruitless.get(n, 0) + 1

    def _span(self, data: bytes, start: int, end: int, where: str, cache: dict, writes: list[Write] | None,
              notable: list[tuple[int, PacketDef]] | None) -> list[bytes]:
        """The packets from `start` to `end` translated; (offset, definition) of those with an event id or an
        indirect buffer added to `notable` (if a list). A packet seen before with the same bytes, while the
        relocation is in the same state (and its event maps to the same id), is not decoded again."""
        out: list[bytes] = []
        fast, event_id, move = self._fast, self.event_id, self.relocation.move
        marked = self._notable if notable is not None else frozenset()
        decode = self.src.decode
        pos = start
        while pos < end:
            governing = None
            for at, size, d in self.src.spans(data, pos, end):
                self.packets += 1
                if d in marked:
                    notable.append((at, d))
                if d.skip_field is not None:
                    governing = at
                    break
                key = data[at:at + size]
                hit = cache.get(key)
                if hit is not None and (not hit[1] or event_id(hit[1][0]) == hit[1][1]):
                    out.append(hit[0])
                    if writes is not None and hit[2]:
                        writes.append((at, *hit[2]))
                    continue
                translate = fast.get(d)
                p = None
                if translate is not None:
                    if d.tail is None:  # its dwords straight from the ring: no Packet made
                        hit = translate(d.unpack_from(data, at), b"", move, event_id)
                    else:
                        p = decode(data, at)
                        hit = translate(p._raw, p.payload, move, event_id)  # a cache entry, writes included
                    if hit is not None:
                        out.append(hit[0])
                        if writes is not None and hit[2]:
                            writes.append((at, *hit[2]))
                        if len(cache) < CACHED_PACKETS:  # a full cache is cleared at the next submission
                            cache[key] = hit
                        continue
                if p is None:
                    p = decode(data, at)
                written = tuple(p.written_addresses()) if d.written_fields else ()
                wrote = (written, p.volatile) if written else None
                if writes is not None and wrote:
                    writes.append((at, *wrote))
                parts = self.packet(p, where)
                out += parts
                if self.kernel_writes:
                    if writes is not None:
                        writes.append((at, self.kernel_writes, None))
                    self.kernel_writes = ()
                if d.indirect and self.calls is not None:
                    self.calls.append(p.fields[d.indirect[1]])
                plan = self._plans.get(d, _DROP)  # a dispatcher's packet has none
                if plan is not _DROP and plan.cacheable and len(cache) < CACHED_PACKETS:
                    event = d.event_field
                    cache[key] = (b"".join(parts), (p.fields[event], event_id(p.fields[event])) if event else (),
                                  wrote)
            if governing is None:
                break
            pos = self._governing(data, governing, size, end, where, out, cache, writes, notable)
        return out

    def _governing(self, data: bytes, pos: int, size: int, end: int, where: str, out: list[bytes], cache: dict,
                   writes: list[Write] | None, notable: list[tuple[int, PacketDef]] | None) -> int:
        """A packet that may make the engine skip the next dwords (a conditional): those packets translated, its
        count changed to their new length; returns where the packets after them start."""
        p = self.src.decode(data, pos)
        skip = p.defn.skip_field
        inner_end = pos + p.size + 4 * p.fields[skip]
        governed = b""
        if p.fields[skip]:
            try:
                governed = b"".join(self._span(data, pos + p.size, min(inner_end, end), where, cache, writes,
                                               notable))
            except PacketError:
                governed = None
            if governed is None or inner_end > end:
                raise ReplayError(f"{where}: {p.name} at byte {p.offset:#x} governs {p.fields[skip]} dwords, which "
                                  f"do not end with a packet of the submission")
            if not governed:
                return inner_end  # what it governed is the dispatcher's now: it governs nothing
        key = (data[pos:pos + size], len(governed))
        head = self.cache.heads.get(key)
        if head is None:
            (head,) = self.packet(p, where)
            head = self.dst.decode(head)
            most = head.defn[skip].mask
            if len(governed) // 4 > most:
                raise ReplayError(f"{where}: {p.name} at byte {p.offset:#x} governs {p.fields[skip]} dwords, which "
                                  f"translate to {len(governed) // 4} for this target: more than its {skip} holds "
                                  f"({most})")
            head = self.cache.heads[key] = head.replace(**{skip: len(governed) // 4}).encode()
        out += [head, governed]
        return inner_end

    def _move_or_raise(self, addr: int) -> int:
        if not addr:
            return 0  # a null pointer (an unused context save area, say) stays null
        new = self.relocation.move(addr)
        if new is None:
            raise _Outside
        return new

    def _moved(self, p: Packet, where: str, moved: dict[str, int] | None = None) -> dict[str, int]:
        """The packet's addresses, relocated (into `moved`, when given); an address in no recorded buffer is
        refused, naming it."""
        moved = {} if moved is None else moved
        move = self.relocation.move
        for field, addr in p.addresses().items():  # the fields that hold an address in this packet
            if not addr:
                continue  # a null pointer, which stays null
            new = move(addr)
            if new is None:
                if field in p.defn.range_fields:
                    continue  # a cache range outside every buffer (often all of memory): it stays as it is
                raise OutsideBuffers(f"{where}: {p.name} at byte {p.offset:#x}: {field}={addr:#x} is "
                                     f"{self.relocation.unplaced(addr) or 'in no recorded buffer'}; refusing to submit "
                                     f"it")
            moved[field] = new
        return moved

    def packet(self, p: Packet, where: str) -> list[bytes]:
        """One recorded packet as target packets (none when dropped, several when split)."""
        if p.defn in self._dispatching:
            return [self.dispatch(p, where)]
        plan = self._plans.get(p.defn) or self._plan(p.defn)
        if plan is _DROP:
            self.dropped.append(f"{where}: {p.name} (no {self.dst.name} form; caches need no request there)")
            return []
        f = p.fields
        split = plan.limit is not None and f[plan.split[0]] >= plan.limit
        if self.same and not split:
            try:
                moved = p if p.defn.range_fields else p.relocate(self._move_or_raise)
            except _Outside:
                moved = p.replace(**self._moved(p, where))  # names the field outside every buffer
            else:
                if p.defn.range_fields:
                    moved = p.replace(**self._moved(p, where))
            for rewrite in plan.rewrites:
                moved = moved.replace(**rewrite(f, where))
            return [moved.encode()]
        for name, allowed in plan.lacking:
            if f[name] and f[name] != allowed:
                raise ReplayError(f"{where}: {p.name}.{name}={f[name]:#x} has no {self.dst.name} equivalent")
        for address, name, values in plan.unaddressed:
            if f[name] in values:
                raise ReplayError(f"{where}: {p.name}.{name}={f[name]:#x} has no {self.dst.name} equivalent (there "
                                  f"it does not use {address})")
        fields = self._moved(p, where, f | plan.add if plan.add else dict(f))  # page-granular moves keep widths
        for rewrite in plan.rewrites:
            rewritten = rewrite(f, where)
            plan.dst._validate(rewritten)  # an event id the target's field cannot hold, say
            fields.update(rewritten)
        if plan.cache:
            fields.update(self._cache(p, where))
        for n in plan.saturating:
            if f[n] == p.defn[n].mask or f[n] > plan.dst[n].mask:
                fields[n] = plan.dst[n].mask
        if plan.narrower and not split:
            plan.dst._validate({n: fields[n] for n in plan.narrower})
        payload = self._tail(p, plan.dst, fields, where)
        if not split:
            return [Packet(plan.dst, 0, fields, payload).encode()]
        parts = self._split(fields, plan.split, plan.limit, plan.dst.written_fields)
        return [Packet(plan.dst, 0, part, payload).encode() for part in parts]

    def _cache(self, p: Packet, where: str) -> dict[str, int]:
        """The target's cache fields asking the actions the recorded packet's ask (both dialects' `cache` tables)."""
        src, dst = self.src.cache, self.dst.cache
        actions, stray = src.read(p.name, p.fields)
        if stray:
            raise ReplayError(f"{where}: {p.name}.{stray[0]}={p.fields[stray[0]]:#x} at byte {p.offset:#x} asks "
                              f"no cache action the {self.src.name} table knows: it has no {self.dst.name} "
                              f"equivalent")
        values = dst.write(p.name, actions)
        if values is None:
            alone = sorted(a for a in actions if dst.write(p.name, (a,)) is None)
            failed = alone or sorted(actions)
            asking = [n for v, a in src.rows(p.name) if a & set(failed) and all(p.fields[k] == x for k, x in v.items())
                      for n in v]
            raise ReplayError(f"{where}: {p.name} at byte {p.offset:#x}: {', '.join(dict.fromkeys(asking))} ask "
                              f"{', '.join(failed)}, which {self.dst.name}'s {p.name} cannot ask"
                              f"{'' if alone else ' without asking more'}")
        return values

    def _tail(self, p: Packet, dst: PacketDef, fields: dict[str, int], where: str) -> bytes:
        """The packet's tail as the target's form holds it: as recorded where both forms have the same tail or
        both counts only frame the packet (PM4's header count, set here to the target form's: gfx9's ACQUIRE_MEM
        is 7 dwords, gfx10's 8); else the dwords the target's count asks for (sdma7's COPY_LINEAR has a DCC word
        exactly when CPV is set, sdma6's never), zero where the recording has none, and any recorded dword beyond
        them refused unless it is 0 (the target has no place for it)."""
        if p.defn.tail == dst.tail:
            return p.payload
        if p.defn.tail is not None and p.defn.tail.quiet and dst.tail is not None and dst.tail.quiet:
            fields[dst.tail.count] = len(p.payload) // 4 - dst.tail.bias
            return p.payload
        want = 0 if dst.tail is None else 4 * (fields.get(dst.tail.count, 0) + dst.tail.bias)
        if any(p.payload[want:]):
            raise ReplayError(f"{where}: {p.name} at byte {p.offset:#x}: {self.dst.name} has no place for its tail "
                              f"dwords past the {want // 4} its form takes")
        return p.payload[:want].ljust(want, b"\0")

    def _plan(self, d: PacketDef) -> _Plan:
        if d.name not in self.dst:
            if not d.droppable:
                raise ReplayError(f"{d.name} has no {self.dst.name} form")
            self._plans[d] = _DROP
        else:
            t = self.dst[d.name]
            cache = self.src.cache.rows(d.name) != self.dst.cache.rows(d.name)
            # the cache fields, when mapped, are neither refused nor defaulted: _cache writes them
            mapped = set(self.src.cache.fields(d.name) + self.dst.cache.fields(d.name)) if cache else set()
            ours, theirs = self.src.defaults.get(d.name, {}), self.dst.defaults.get(d.name, {})
            keep = tuple(n for n in d.field_names if n in t.field_names)
            saturating = tuple(n for n in keep if isinstance(d[n], Field) and d[n].saturates and t[n].mask != d[n].mask)
            limit = None if t.split is None else min(self.max_copy, t[t.split[0]].mask + 1)
            self._plans[d] = plan = _Plan(
                t, tuple((n, ours.get(n, 0)) for n in d.field_names if n not in t.field_names and n not in mapped),
                {n: theirs.get(n, 0) for n in t.field_names if n not in d.field_names and n not in mapped},
                tuple(n for n in keep if t[n].mask < d[n].mask and n not in saturating), t.split, limit,
                self._rewrites(d), d.indirect is None and d not in self._dispatching, cache, saturating,
                _unaddressed(d, t))
            self._compile(d, plan)
        return self._plans[d]

    def _compile(self, d: PacketDef, plan: _Plan) -> None:
        """The plan's common case -- no split, every value fitting, no indirect buffer, the same tail in both
        forms, no cache fields to map nor sizes to saturate -- generated from the two tables, straight from the
        packet's dwords to the target's (the general way is taken for the rest)."""
        below = {} if plan.limit is None else {plan.split[0]: plan.limit}
        if not plan.cacheable or plan.cache or plan.saturating or plan.unaddressed or self._remaps_xccs(d) or \
                any(n not in d.field_names for n in below):
            return
        fast = d.transcoder(plan.dst, keep=self.same, allowed=dict(plan.lacking), defaults=plan.add, below=below,
                            mapped=d.event_field)
        if fast is not None and d.tail != plan.dst.tail:
            fast = self._without_tail(d, plan, fast)
        if fast is not None:
            self._fast[d] = fast

    @staticmethod
    def _without_tail(d: PacketDef, plan: _Plan, fast: Transcode) -> Transcode | None:
        """`fast` for the packets of a form whose tail differs from the target's that have none and ask the
        target for none (sdma6 <-> sdma7 COPY_LINEAR with CPV clear); the general way for the others."""
        tail, parts = plan.dst.tail, ()
        if tail is not None and tail.bias:
            return None
        if tail is not None and tail.count in d.field_names:
            parts = d.parts(tail.count)
        elif tail is not None and plan.add.get(tail.count, 0) + tail.bias:  # the target's default asks for a tail
            return None

        def without_tail(raw: tuple[int, ...], payload: bytes, move: Callable, remap: Callable) -> tuple | None:
            if payload:
                return None
            for w, s, m, _ in parts:
                if raw[w] >> s & m:
                    return None
            return fast(raw, payload, move, remap)
        return without_tail

    def _rewrites(self, d: PacketDef) -> tuple[Rewrite, ...]:
        """The rewrites packets of `d` need: a trap's event id mapped, an indirect buffer translated."""
        out: list[Rewrite] = []
        if d.event_field is not None:
            event, event_id = d.event_field, self.event_id
            out.append(lambda f, where: {event: event_id(f[event])})
        if d.indirect is not None and self.indirect is not None:
            (base, size), indirect = d.indirect, self.indirect
            out.append(lambda f, where: dict(zip((base, size), indirect(f[base], f[size], where), strict=True)))
        if self._remaps_xccs(d):
            mask = d.xcc_field
            out.append(lambda f, where: {mask: self._xcc_mask(d.name, mask, f[mask], where)})
        return tuple(out)

    def _remaps_xccs(self, d: PacketDef) -> bool:
        """Whether packets of `d` select XCCs, which the target has another number of."""
        return d.xcc_field is not None and self.xccs[0] != self.xccs[1]

    def _xcc_mask(self, name: str, field: str, mask: int, where: str) -> int:
        """An XCC mask for the target's XCC count: one selecting only XCCs the target has stays (the driver runs
        memory writes on XCC 0 alone); all of the recorded GPU's become all of the target's; one selecting an
        XCC the target lacks, and not all, is refused, as a stream run per XCC has no equivalent there
        (campaign 73: gfx942's PRED_EXEC of XCC 1 was skipped on one-XCC targets)."""
        ours, theirs = self.xccs
        selected = mask & ((1 << ours) - 1)
        if selected < 1 << theirs:
            return selected
        if selected == (1 << ours) - 1:
            return (1 << theirs) - 1
        raise ReplayError(f"{where}: {name}.{field}={mask:#x} runs what it governs on XCC(s) "
                          f"{', '.join(str(x) for x in range(ours) if selected >> x & 1)} of the recorded GPU's "
                          f"{ours}; this target has {theirs}, where a stream run per XCC has no equivalent")

    @staticmethod
    def _split(fields: dict[str, int], split: tuple[str, tuple[str, ...]], limit: int,
               written: tuple[str, ...]) -> list[dict[str, int]]:
        """`fields` as parts moving at most `limit` bytes each, their addresses advanced past the parts before;
        the last part first when a `written` address lies inside the range it copies from, above its start (a
        copy one packet made as memmove does: forward, the first part would overwrite what a later one reads)."""
        (count, advancing), total, parts = split, fields[split[0]] + 1, []
        for done in range(0, total, limit):
            part = {**fields, count: min(limit, total - done) - 1}
            for addr in advancing:
                part[addr] = fields[addr] + done
            parts.append(part)
        reads = [fields[a] for a in advancing if a not in written]
        if any(r < fields[w] < r + total for w in advancing if w in written for r in reads):
            parts.reverse()
        return parts
