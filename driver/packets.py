"""Declarative packet formats: one table of fields per packet drives build, decode, print and relocation.

A packet is a little-endian stream of u32 dwords. A `PacketDef` lists, once, where each field lives:

* `Field` -- a bit range counted from one dword (it may run on into the next dwords, e.g. a 64-bit value);
* `Addr` -- a GPU virtual address over a dword pair, *tagged* so relocators find every address without
  a switch over opcodes. `align` covers addresses whose low bits hold other things or must be zero
  (TIMESTAMP's addr[31:3], GCR_REQ's base_va[47:7]); `when` marks an address that is one only under a
  field value, or one of several (POLL_REGMEM polls a register, not memory, when mem_poll=0; PM4's
  COPY_DATA reads memory for src_sel 1 or 2).

What a packet *means* beyond its layout is tagged in the table too, so tools derive behaviour from tags and
never switch on packet names. Each tag gives a `PacketDef` attribute, computed once:

* `Addr(indirect="size")` -- the address holds more packets, `size` dwords of them: `PacketDef.indirect`;
* `Addr(volatile=True)` -- the GPU writes a value that differs on every run (a clock): `.volatile`,
  `.volatile_fields`; `volatile=(field, (v1, ...))` when only some selects write a clock (PM4's RELEASE_MEM
  data_sel 3/4): `.volatile` then says the packet may, `Packet.volatile` whether this one does;
* `Field(byte_count=True)` holds bytes-1 moved, `Addr(advances=True)` moves with the bytes when the packet is
  split: `.split`;
* `Addr(value="data")` -- the GPU writes that field's dword there, a completion point: `.signal`;
* `Addr(polled=(ref, mask, func))` -- the packet waits on the dword there: `.wait`;
* `Field(event=True)` -- the field carries a KFD event id the packet's interrupt signals: `.event_field`;
  `event=(field, (v1, ...))` when only those values of another field raise the interrupt (RELEASE_MEM's
  int_sel): `.event_when`; `PacketDef.event_of(fields)` gives the id a packet raises, or None;
* `Field(skips=True)` -- the field counts dwords of the packets that follow, which the packet may make the
  engine skip (a conditional): `.skip_field`;
* `Field(saturates=True)` -- a size whose largest value means "all of it" (a cache range over all of memory): a
  translation gives such a value, and any value past the target field's range, the target's largest;
* `Field(xccs=True)` -- a mask of the XCCs that run what the packet governs: `.xcc_field`;
* `PacketDef(droppable=True)` -- cache maintenance a target without the packet may drop.

A `Dialect` also says what its packets mean where the layout alone does not: `defaults`, the values every packet
of a name starts from (the kernel's, which a driver's queues and a replay's translator both use), and `cache`, a
`CacheControl` table saying which field values ask which generation-independent cache actions (write back L2,
invalidate the scalar cache, ...), so a translator carries a request between generations that spell it in
different bits.

Header constants (SDMA op/sub_op, PM4 type/opcode) are Fields with a fixed value; a `Dialect` indexes its
definitions by those header bits, so decoding is one dict lookup. A `Tail` names the field whose value
gives the number of dwords after the fixed part (NOP's skip count, WRITE_LINEAR's data, PM4's count). A
`quiet` tail count only frames the packet and is left out of the printed form; a tail of `registers`
holds consecutive register values from the index in field `first`, printed by register name.

Versions differ in data: `Dialect.derive` takes a dialect and returns one with fields added or replaced,
packets added or removed, header values changed.

Speed: each definition compiles, on first use, a generated decode and encode function (straight-line shifts
and masks, no per-field objects) over its `struct.Struct`. Encoding overlays the fields on the dwords the
packet was decoded from, so reserved or unknown bits survive a decode -> replace -> encode round trip. A
fixed-size packet's fields are decoded when first read (an unread packet encodes to its own dwords);
`Dialect.build` packs a fixed-size packet through a function generated per sequence of field names given,
`PacketDef.transcoder` generates, from two tables, the relocation of a packet into another dialect
straight from its dwords, and `PacketDef.caller` a call of an emulated engine's handler with the fields it
names (`Dialect.read` finds a packet's dwords without making a Packet). All generated source comes from the
tables alone.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MAX_IB_DEPTH", "Addr", "CacheControl", "CacheRow", "Checker", "Dialect", "Field", "Packet", "PacketDef",
           "PacketError", "Tail", "Transcode", "TruncatedPacket", "UnknownPacket"]

_U32 = struct.Struct("<I")
_new = object.__new__
# Indirect buffers inside indirect buffers are followed (executed, recorded, translated) at most this deep:
# deeper chains, and an indirect buffer that reaches itself, are refused as malformed.
MAX_IB_DEPTH = 4
_BUILDERS = 64  # field-name sequences a definition keeps a generated builder for
_CODECS = frozenset({"_decode", "_encode", "_written", "_show"})  # PacketDef's generated codecs, compiled on first use
_CALLS: dict[str, Any] = {}  # PacketDef.caller's generated source -> its compiled code (the tables bound it)
_RESERVED = frozenset({"name", "defn", "offset", "size", "fields", "payload", "encode", "replace",
                       "addresses", "relocate", "volatile"})  # Packet attributes


def _refuse(*values: int) -> None:
    """The builder of names a packet lacks: `Dialect.packet` raises the error."""


class PacketError(ValueError):
    """A byte stream that does not hold a well-formed packet of the dialect."""


class UnknownPacket(PacketError):
    """The header names no packet of the dialect."""


class TruncatedPacket(PacketError):
    """The packet runs past the end of the data."""


@dataclass(frozen=True)
class Field:
    """Bits [shift, shift+width) counted from the low bit of dword `dword`; may span following dwords."""

    name: str
    dword: int
    shift: int = 0
    width: int = 32
    byte_count: bool = False  # holds bytes-1 moved by the packet (split at this count)
    # carries the KFD event id the packet's interrupt signals; (field, (v1, ...)): raised only while that field
    # has one of those values (RELEASE_MEM's int_sel)
    event: bool | tuple[str, tuple[int, ...]] = False
    skips: bool = False  # counts dwords of the following packets, which the packet may skip
    launches: bool = False  # starts the kernel the queue's SH registers set up (a PM4 dispatch's initiator)
    saturates: bool = False  # a size whose largest value means all: translated, it becomes the target's largest
    xccs: bool = False  # selects XCCs by bit (PRED_EXEC's xcc_mask): translated for the target's XCC count

    def _named(self) -> tuple[tuple[str, str], ...]:
        """(tag, field name) for every other field of the packet this field's tags name."""
        return (("event", self.event[0]),) if isinstance(self.event, tuple) else ()

    def _span(self) -> tuple[int, int, int]:  # (first bit, end bit, bit that is value bit 0), packet-absolute
        start = self.dword * 32 + self.shift
        return start, start + self.width, start

    @property
    def mask(self) -> int:
        """The values this field can hold, as a mask."""
        return (1 << self.width) - 1


@dataclass(frozen=True)
class Addr:
    """A GPU virtual address held in place over dwords `dword`, `dword`+1: address bits [align, width).

    Bits below `align` are not part of the address (the address must be aligned to 2**align); bits at and
    above `width` are not stored. `when=(field, value)`: an address only while that field has that value;
    `when=(field, (v1, v2, ...))`: only while it has one of those values.
    """

    name: str
    dword: int
    width: int = 64
    align: int = 0
    when: tuple[str, int] | tuple[str, tuple[int, ...]] | None = None
    written: bool = False  # the GPU writes through this address (capture checkpoints what it wrote)
    touches: bool = True  # False: names a range (cache maintenance) without reading or writing memory there
    indirect: str | None = None  # points at an indirect buffer of this field's value dwords
    # written (needs written=True) with a value that differs on every run; (field, values): while it has one
    volatile: bool | tuple[str, tuple[int, ...]] = False
    advances: bool = False  # moves on by the bytes done when the packet is split at its byte_count field
    value: str | None = None  # written (needs written=True) with this field's value (as selected): a signal
    polled: tuple[str, str, str] | None = None  # (ref, mask, func) fields: waits on (dword & mask) func ref
    kernel: str | None = None  # the descriptor of the kernel a dispatch runs; names its kernel arguments' address
    # an AQL signal the packet decrements once it completes (0: none); names the field that, when set, makes the
    # packet wait for every packet before it to complete first (HSA's barrier bit), so its completion is theirs
    completes: str | None = None

    def _named(self) -> tuple[tuple[str, str], ...]:
        """(tag, field name) for every other field of the packet this address's tags name."""
        named = [("when", self.when[0])] if self.when else []
        named += [("volatile", self.volatile[0])] if isinstance(self.volatile, tuple) else []
        named += [("indirect", self.indirect)] if self.indirect else []
        named += [("value", self.value)] if self.value else []
        named += [("polled", n) for n in self.polled or ()]
        return tuple(named)

    def _span(self) -> tuple[int, int, int]:
        base = self.dword * 32
        return base + self.align, base + self.width, base

    @property
    def mask(self) -> int:
        """The addresses this field can hold, as a mask (alignment bits clear)."""
        return ((1 << self.width) - 1) & ~((1 << self.align) - 1)


@dataclass(frozen=True)
class Tail:
    """A variable tail: `fields[count] + bias` dwords follow the fixed part of the packet.

    `quiet`: the count only frames the packet (PM4's header count); the printer leaves it out.
    `first` + `registers`: the tail's dwords are the values of consecutive registers, the first at the index
    in field `first`; `registers` names them by index (the printer shows NAME=value).
    `wrap`: count + bias is taken modulo the count field's range (PM4's NOP: count 0x3FFF means no body, the
    one-dword pad Mesa calls PKT3_NOP_PAD).
    `written`: the tail is data the GPU writes at this address field (a write packet's inline data).
    `one_addr`: while this field is set, every dword of the written tail goes to that one address, the last one
    staying there (`Packet.inline`).
    """

    count: str
    bias: int = 0
    quiet: bool = False
    wrap: bool = False
    first: str | None = None
    registers: Mapping[int, str] | None = field(default=None, compare=False, hash=False)
    written: str | None = None
    one_addr: str | None = None


def _parts(f: Field | Addr) -> list[tuple[int, int, int, int]]:
    """Split a field into per-dword parts (dword, shift in dword, mask, shift in value)."""
    return _bit_parts(*f._span())


def _bit_parts(start: int, end: int, vbase: int) -> list[tuple[int, int, int, int]]:
    """Split packet bits [start, end), value bit 0 at `vbase`, into per-dword parts as `_parts` does."""
    parts = []
    pos = start
    while pos < end:
        w, s = divmod(pos, 32)
        n = min(end, (w + 1) * 32) - pos
        parts.append((w, s, (1 << n) - 1, pos - vbase))
        pos += n
    return parts


def _dec_expr(w: int, s: int, m: int, v: int) -> str:
    e = f"d{w}"
    if s == v and s:  # an address part kept in place: one mask
        return f"({e} & {m << s:#x})"
    if s:
        e = f"({e} >> {s})"
    if s + m.bit_length() < 32:
        e = f"({e} & {m:#x})"
    return f"({e} << {v})" if v else e


def _unpack(var: str, n: int, tuple_: str = "") -> str:
    """A statement binding the `n` dwords of tuple `tuple_` (default: `var`) to locals var0, var1, ... (cheaper
    than subscripts)."""
    return f"    {', '.join(f'{var}{w}' for w in range(n))}, = {tuple_ or var}\n"


def dword_unpacker(words: Iterable[int]) -> struct.Struct:
    """A Struct unpacking the listed dwords (ascending, distinct; maybe none) from the start of a buffer: one
    C call for the words of a submission that matter to a cache key."""
    words = list(words)
    return struct.Struct("<" + "".join(f"{4 * (w - prev - 1)}xI" for prev, w in zip([-1, *words], words,
                                                                                    strict=False)))


def _among(values: Iterable[int]) -> str:
    """A set display of `values` as plain ints (a table may give enum members)."""
    return "{" + ", ".join(str(int(v)) for v in sorted(values)) + "}"


def _read(f: Field | Addr) -> str:
    """An expression for field `f`'s value in dwords d0, d1, ..."""
    return " | ".join(_dec_expr(*p) for p in _parts(f))


def _enc_expr(var: str, s: int, m: int, v: int, top: bool) -> str:
    e = f"({var} >> {v})" if v else var
    if not top:  # the top part of a validated value needs no mask
        e = f"({e} & {m:#x})"
    return f"({e} << {s})" if s else e


# (the fixed part's dwords, the tail's bytes, move, remap) -> (bytes, (old, new) of the mapped field or (),
# (written addresses, volatile) or None) or None: PacketDef.transcoder
Transcode = Callable[[tuple[int, ...], bytes, Callable[[int], int | None], Callable[[int], int]],
                     tuple[bytes, tuple[int, ...], tuple[tuple[int, ...], bool] | None] | None]
# (data, byte offset, move) -> the packet's (written addresses, volatile) or None, or False: PacketDef.checker
Checker = Callable[[bytes, int, Callable[[int], int | None]], tuple[tuple[int, ...], bool] | None | bool]


class PacketDef:
    """One packet format: its header constants, its fields (addresses tagged), its size and optional tail."""

    def __init__(self, name: str, header: Mapping[Field, int], fields: Iterable[Field | Addr] = (), *,
                 size: int | None = None, tail: Tail | None = None, droppable: bool = False):
        self.name = name
        self.droppable = droppable  # cache maintenance: a target without this packet may drop it
        self.header: dict[Field, int] = dict(header)
        self.fields: tuple[Field | Addr, ...] = tuple(sorted(fields, key=lambda f: f._span()[0]))
        self.tail = tail
        self.field_names: tuple[str, ...] = tuple(f.name for f in self.fields)
        self.address_fields: tuple[str, ...] = tuple(f.name for f in self.fields if isinstance(f, Addr))
        self.written_fields: tuple[str, ...] = tuple(f.name for f in self.fields if isinstance(f, Addr) and f.written)
        self.range_fields: frozenset[str] = frozenset(f.name for f in self.fields
                                                      if isinstance(f, Addr) and not f.touches)
        self._by_name = {f.name: f for f in self.fields}
        self._size_arg = size
        used = (max((f._span()[1] for f in (*self.header, *self.fields)), default=32) + 31) // 32
        self.size = max(size or 0, used)  # dwords in the fixed part
        self._check()
        self._meanings()
        self._compile()
        # count + bias is taken under this mask (0: no wrap)
        self._tail_wrap = self._by_name[tail.count].mask if tail is not None and tail.wrap else 0

    # -- derivation (per-version data) --------------------------------------------------------------------
    def with_fields(self, *fields: Field | Addr, drop: Iterable[str] = (), size: int | None = None,
                    name: str | None = None, header: Mapping[Field, int] | None = None,
                    tail: Tail | None = None) -> PacketDef:
        """A copy: `fields` replace same-named ones or are added, `drop` removed, header values (and, given,
        the tail) changed."""
        new, dropped = {f.name: f for f in fields}, set(drop)
        kept = [new.pop(f.name, f) for f in self.fields if f.name not in dropped]
        hdr = {**self.header, **(header or {})}
        size = size if size is not None else self._size_arg
        return PacketDef(name or self.name, hdr, [*kept, *new.values()], size=size, tail=tail or self.tail,
                         droppable=self.droppable)

    def __getitem__(self, name: str) -> Field | Addr:
        return self._by_name[name]

    def parts(self, name: str) -> tuple[tuple[int, int, int, int], ...]:
        """Field `name` split per dword: (dword, shift in the dword, mask, shift in the value) of each piece (an
        address: the bits it holds in place, above its alignment)."""
        return self._parts_of[name]

    def event_of(self, fields: Mapping[str, int]) -> int | None:
        """The KFD event id a packet of these `fields` raises its interrupt with; None when it raises none."""
        if self.event_field is None or self.event_when is not None and fields[self.event_when[0]] not in \
                self.event_when[1]:
            return None
        return fields[self.event_field]

    def put(self, buf: bytearray, offset: int, name: str, value: int) -> None:
        """Set field `name` of the packet of this definition at byte `offset` of `buf` to `value`, every other bit
        as it is; validated like `build` (ValueError naming the field)."""
        if not isinstance(value, int) or value & self._reject[name]:
            self._invalid(name, value)
        for w, shift, mask, bit in self.parts(name):
            at = offset + 4 * w
            word = _U32.unpack_from(buf, at)[0] & ~(mask << shift)
            _U32.pack_into(buf, at, word | (value >> bit & mask) << shift)

    @property
    def address_conditions(self) -> tuple[tuple[str, tuple[str, int] | tuple[str, tuple[int, ...]] | None], ...]:
        """(address field, condition) pairs as declared: the field holds an address only while `condition`
        holds (its field has that value, or one of those values). `Packet.addresses()` applies them."""
        return self._addr_conds

    def __repr__(self) -> str:
        tail = " +tail" if self.tail else ""
        return f"<PacketDef {self.name} {self.size}dw{tail} fields={self.field_names}>"

    # -- compile-once codecs ----------------------------------------------------------------------------
    def _check(self) -> None:
        owner: dict[int, str] = {}
        for f in (*self.header, *self.fields):
            if f.name in _RESERVED:
                raise ValueError(f"{self.name}: field name {f.name!r} is reserved")
            start, end, _ = f._span()
            if end > self.size * 32 or start < 0 or end <= start:
                raise ValueError(f"{self.name}.{f.name}: bits {start}..{end - 1} outside {self.size} dwords")
            for bit in range(start, end):
                if bit in owner:
                    raise ValueError(f"{self.name}: {f.name} overlaps {owner[bit]} at bit {bit}")
                owner[bit] = f.name
        if len(self._by_name) != len(self.fields):
            raise ValueError(f"{self.name}: duplicate field names")
        self._check_tags()
        if self.tail and self.tail.count not in self._by_name:
            raise ValueError(f"{self.name}: tail count field {self.tail.count!r} is not a field")
        if self.tail and self.tail.first is not None and self.tail.first not in self._by_name:
            raise ValueError(f"{self.name}: tail first-register field {self.tail.first!r} is not a field")
        if self.tail and self.tail.written is not None and \
                not isinstance(self._by_name.get(self.tail.written), Addr):
            raise ValueError(f"{self.name}: the tail is written at {self.tail.written!r}, which is no address field")

    def _check_tags(self) -> None:
        """Every field a tag names exists (and, but for `when`, holds a plain value); written values need
        `written`; advancing addresses need a byte count."""
        for f in self.fields:
            for tag, n in f._named():
                if n not in self._by_name:
                    raise ValueError(f"{self.name}.{f.name}: {tag} names unknown field {n!r} "
                                     f"(fields: {', '.join(self.field_names)})")
                if tag != "when" and isinstance(self._by_name[n], Addr):
                    raise ValueError(f"{self.name}.{f.name}: {tag} names address {n!r}, not a value field")
            if not isinstance(f, Addr):
                continue
            if (f.volatile or f.value) and not f.written:
                raise ValueError(f"{self.name}.{f.name}: volatile or value tag on an address not tagged written")
            if f.advances and not any(isinstance(g, Field) and g.byte_count for g in self.fields):
                raise ValueError(f"{self.name}.{f.name}: advances, but no field is tagged byte_count")

    def _one(self, tag: str, found: list[Any]) -> Any:
        """The one field (or tuple) tagged `tag`, or None; a second one is a table error."""
        if len(found) > 1:
            raise ValueError(f"{self.name}: more than one field tagged {tag}: {found}")
        return found[0] if found else None

    def _meanings(self) -> None:
        """The packet's meanings derived, once, from its fields' tags."""
        addrs = [f for f in self.fields if isinstance(f, Addr)]
        values = [f for f in self.fields if not isinstance(f, Addr)]
        # (address field, size field in dwords) of an indirect buffer of more packets
        self.indirect: tuple[str, str] | None = self._one(
            "indirect", [(f.name, f.indirect) for f in addrs if f.indirect])
        # written addresses whose value differs on every run (clocks)
        self.volatile_fields: tuple[str, ...] = tuple(f.name for f in addrs if f.volatile)
        self.volatile: bool = bool(self.volatile_fields)  # some packet of this kind writes a clock
        # (field, condition or None) of each volatile address: Packet.volatile tests them
        self._volatile_tests = tuple(
            (f.name, None if f.volatile is True else (f.volatile[0], frozenset(f.volatile[1])))
            for f in addrs if f.volatile)
        count = self._one("byte_count", [f.name for f in values if f.byte_count])
        # (count field holding bytes-1, addresses that advance with the bytes) of a packet that may be split
        self.split: tuple[str, tuple[str, ...]] | None = (
            None if count is None else (count, tuple(f.name for f in addrs if f.advances)))
        # (address field, value field): the GPU writes the value's dword there (a fence)
        self.signal: tuple[str, str] | None = self._one("value", [(f.name, f.value) for f in addrs if f.value])
        # the bytes a signal writes there: as many as its value field holds (a FENCE's dword)
        self.signal_bytes: int = -(-self._by_name[self.signal[1]].width // 8) if self.signal else 0
        # (address field, ref, mask, func): the packet waits until (dword & mask) compares with ref by func
        self.wait: tuple[str, str, str, str] | None = self._one(
            "polled", [(f.name, *f.polled) for f in addrs if f.polled])
        # the field carrying the KFD event id the packet's interrupt signals
        self.event_field: str | None = self._one("event", [f.name for f in values if f.event])
        # (field, values): the interrupt is raised only while that field has one of them
        self.event_when: tuple[str, frozenset[int]] | None = next(
            ((f.event[0], frozenset(map(int, f.event[1]))) for f in values if isinstance(f.event, tuple)), None)
        # (descriptor address, kernel arguments address) of a packet that dispatches a kernel it names (AQL)
        self.kernel: tuple[str, str] | None = self._one("kernel", [(f.name, f.kernel) for f in addrs if f.kernel])
        # the field of a packet that starts the kernel the queue's registers set up (PM4)
        self.launch_field: str | None = self._one("launches", [f.name for f in values if f.launches])
        self.launches = self.kernel is not None or self.launch_field is not None  # a kernel runs while at it
        # (signal, barrier field): the signal the packet decrements once it completes (AQL)
        self.completion: tuple[str, str] | None = self._one("completes", [(f.name, f.completes) for f in addrs
                                                                          if f.completes])
        # the field counting the dwords of following packets the packet may make the engine skip
        self.skip_field: str | None = self._one("skips", [f.name for f in values if f.skips])
        # the field selecting the XCCs that run what the packet governs
        self.xcc_field: str | None = self._one("xccs", [f.name for f in values if f.xccs])
        # the dwords of the fixed part holding anything but plain values: the header, addresses and the fields
        # deciding what they are, byte, skip and tail counts, event ids and indirect buffer sizes. Two packets
        # of this definition that agree on these dwords mean the same to a relocation or a translation.
        meant = {self.split[0] if self.split else None, self.event_field, self.skip_field, self.xcc_field,
                 self.tail.count if self.tail else None}
        for f in self.fields:
            meant.update(n for tag, n in f._named() if tag in ("when", "volatile", "indirect", "event"))
        self.meaning_words: tuple[int, ...] = tuple(sorted(
            {w for f in (*self.header, *addrs, *(self._by_name[n] for n in meant if n)) for w, *_ in _parts(f)}))

    def _compile(self) -> None:
        n = self.size
        self._struct = struct.Struct(f"<{n}I")
        self.unpack_from = self._struct.unpack_from  # (buffer, offset) -> the fixed part's dwords there
        self._nbytes = n * 4
        self._zero = (0,) * n
        self._reject = {f.name: ~f.mask for f in self.fields}  # v & reject != 0: too wide, misaligned or < 0
        self._parts_of = {f.name: tuple(_parts(f)) for f in self.fields}  # parts(), worked out once
        self._addr_conds = tuple((f.name, f.when) for f in self.fields if isinstance(f, Addr))
        # (address field, (field, values) or None): the same conditions with every value set a frozenset
        self._addr_tests = tuple((n, None if c is None else (c[0], frozenset(c[1] if isinstance(c[1], tuple)
                                                                                  else (c[1],))))
                                 for n, c in self._addr_conds)
        self._written_tests = tuple((n, c) for n, c in self._addr_tests if n in self.written_fields)
        self._const = [0] * n  # header constants, placed
        self._keep = [0xFFFFFFFF] * n  # bits no header constant or field declares
        for hf, value in self.header.items():
            if value & ~hf.mask:
                raise ValueError(f"{self.name}: header {hf.name}={value:#x} does not fit {hf.width} bits")
            for w, s, m, v in _parts(hf):
                self._const[w] |= ((value >> v) & m) << s
                self._keep[w] &= ~(m << s)
        for f in self.fields:
            for w, s, m, _ in _parts(f):
                self._keep[w] &= ~(m << s)
        # field names given to Dialect.build, in order -> a function packing their values (`_builder`)
        self._builders: dict[tuple[str, ...], Callable[..., bytes | None]] = {}

    def __getattr__(self, name: str) -> Any:
        """The generated `_decode`, `_encode` and `_written`, compiled when one is first used: a process uses
        few of the many definitions its dialects' tables hold, and compiling them all cost every start-up
        about 30 ms."""
        if name not in _CODECS or "_struct" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        n = self.size
        dec = [f"{f.name!r}: {_read(f)}" for f in self.fields]
        binds = "".join(f"    v{i} = f[{f.name!r}]\n" for i, f in enumerate(self.fields))
        encode = self._words({f.name: f"v{i}" for i, f in enumerate(self.fields)}, "b", self._keep)
        src = (f"def decode(d):\n{_unpack('d', n)}    return {{{', '.join(dec)}}}\n"
               f"def encode(f, b):\n{_unpack('b', n)}{binds}    return ({', '.join(encode)},)\n"
               f"def written(d):\n{_unpack('d', n)}{self._written_list()}    return w\n"
               f"def show(d, where):\n{_unpack('d', n)}    out = [{self.name!r}]\n{self._show_lines()}"
               f"    return ' '.join(out)\n")
        ns: dict[str, Any] = {}
        exec(compile(src, f"<packet {self.name}>", "exec"), ns)  # source generated from the table alone
        self._decode, self._encode, self._written = ns["decode"], ns["encode"], ns["written"]
        self._show = ns["show"]
        return ns[name.removeprefix("_")]

    def show(self, dwords: tuple[int, ...], where: Callable[[int], str | None] | None = None) -> str:
        """What `Packet.show` says of a fixed-size packet of this definition whose dwords are `dwords`."""
        return self._show(dwords, where)

    def _show_lines(self) -> str:
        """Statements appending each field's text to `out`, as `Packet.show` words it for a fixed-size packet."""
        tests = dict(self._addr_tests)
        lines = []
        for f in self.fields:
            lines.append(f"    v = {_read(f)}\n")
            if f.name not in self.address_fields:
                lines.append(f"    if v:\n        out.append(f'{f.name}={{v}}' if v < 10 else f'{f.name}={{v:#x}}')\n")
                continue
            plain = f"out.append(f'{f.name}={{v:#x}}')"
            named = (f"n = where(v)\n{{0}}out.append(f'{f.name}={{{{v:#_x}}}} ({{{{n}}}})' if n else "
                     f"f'{f.name}={{{{v:#_x}}}}')")
            if f.name not in tests:
                lines.append(f"    {plain}\n")
                continue
            cond = tests[f.name]
            held = "where is not None" + ("" if cond is None else f" and {_read(self[cond[0]])} in {_among(cond[1])}")
            lines.append(f"    if {held}:\n        {named.format('        ')}\n    else:\n        {plain}\n")
        return "".join(lines)

    def _written_list(self) -> str:
        """Statements binding `w` to the list of addresses the packet in dwords d0, d1, ... writes, in table order
        (what `Packet.written_addresses` gives)."""
        first = [a for a, c in itertools.takewhile(lambda t: t[1] is None, self._written_tests)]
        return (f"    w = [{', '.join(_read(self[a]) for a in first)}]\n"
                + "".join(f"    w.append({_read(self[a])})\n" if c is None else
                          f"    if {_read(self[c[0]])} in {_among(c[1])}:\n        w.append({_read(self[a])})\n"
                          for a, c in self._written_tests[len(first):]))

    def _builder(self, names: tuple[str, ...]) -> Callable[..., bytes | None]:
        """A function packing this fixed-size packet from values of the fields `names`, in that order (the
        others 0), kept for the next build like it; it returns None for a value that is not an int fitting its
        field, which `Dialect.packet` explains."""
        if not all(n in self._reject for n in names):
            return _refuse
        args = [f"v{i}" for i in range(len(names))]
        words = self._words(dict(zip(names, args, strict=True)))
        check = " and ".join(f"isinstance({a}, int)" for a in args)
        fits = " or ".join(f"{a} & {self._reject[n]}" for a, n in zip(args, names, strict=True))
        test = f"    if not ({check}) or {fits}:\n        return None\n" if args else ""
        src = f"def build({', '.join(args)}):\n{test}    return _pack({', '.join(words)})\n"
        ns: dict[str, Any] = {"_pack": self._struct.pack}
        exec(compile(src, f"<build {self.name}>", "exec"), ns)  # source generated from the table alone
        if len(self._builders) < _BUILDERS:
            self._builders[names] = ns["build"]
        return ns["build"]

    def transcoder(self, target: PacketDef, *, keep: bool = False, allowed: Mapping[str, int] | None = None,
                   defaults: Mapping[str, int] | None = None, below: Mapping[str, int] | None = None,
                   mapped: str | None = None) -> Transcode | None:
        """A generated function turning a packet of this definition (its fixed part's dwords, as `Packet._raw`
        holds them, and its tail's bytes) straight into `target`'s bytes:
        every address `Packet.addresses()` lists moved by `move` (null stays null; a range field `move` finds
        nowhere stays), the `mapped` field replaced by `remap(value)`, the other fields the target has copied,
        those only the target has set to `defaults` (else 0); `keep`: bits no field declares keep their value.
        It returns (bytes, (mapped value, new value) or (), (`Packet.written_addresses()` as a tuple,
        `Packet.volatile`) or None when it writes nothing), or None for a packet the caller must take the general
        way: a field the target lacks holding neither 0 nor its `allowed` value, a `below` field at or past its
        bound, an address `move` finds nowhere, a value that does not fit the target's field.
        None instead of a function: an address's `when` names another address (moved in table order)."""
        if any(c is not None and isinstance(self[c[0]], Addr) for _, c in self._addr_tests):
            return None
        body = self._refusals(allowed or {}, below or {})
        values: dict[str, str] = {}  # target field -> the variable or expression holding its new value
        for i, (n, cond) in enumerate(self._addr_tests):
            v = values[n] = f"a{i}"
            test = v if cond is None else f"{v} and {_read(self[cond[0]])} in {_among(cond[1])}"
            outside = f"{v} = {_read(self[n])}" if n in self.range_fields else "return None"
            body.append(f"    {v} = {_read(self[n])}\n    if {test}:\n        {v} = move({v})\n"
                        f"        if {v} is None:\n            {outside}\n")
        if mapped is not None:
            body.append(f"    e = {_read(self[mapped])}\n    m = remap(e)\n")
            values[mapped] = "m"
        fits: dict[int, list[str]] = {}  # reject mask -> the values that must have none of its bits
        for n, v in values.items():
            if n in target._reject:
                fits.setdefault(target._reject[n], []).append(v)
        taken = [target._keep[w] if keep and w < self.size else 0 for w in range(target.size)]
        checks = [f"({' | '.join(vs)}) & {r}" for r, vs in fits.items()] + self._carry(target, values, taken)
        if checks:
            body.append(f"    if {' or '.join(checks)}:\n        return None\n")
        values.update((n, str(v)) for n, v in (defaults or {}).items() if v and n not in self._by_name)
        words = target._words(values, "d", taken)
        tail = " + payload" if self.tail is not None else ""
        reads = [_read(self[a]) for a, c in self._written_tests]
        clock = self._clock_expression()
        wrote = ("None" if not reads else f"(({', '.join(reads)},), {clock})"
                 if all(c is None for _, c in self._written_tests) else f"(tuple(w), {clock}) if w else None")
        src = (f"def transcode(raw, payload, move, remap):\n{_unpack('d', self.size, 'raw')}{''.join(body)}"
               f"{self._written_list() if wrote.startswith('(tuple') else ''}"
               f"    return _pack({', '.join(words)}){tail}, {'(e, m)' if mapped else '()'}, {wrote}\n")
        ns: dict[str, Any] = {"_pack": target._struct.pack}
        exec(compile(src, f"<transcode {self.name}>", "exec"), ns)  # source generated from the tables alone
        return ns["transcode"]

    def _clock_expression(self) -> str:
        """A Python expression of the dwords `d0..` telling whether this packet writes a clock (`Packet.volatile`):
        a RELEASE_MEM writes one only with the data_sel that selects it, its `data` otherwise."""
        tests = [("True" if c is None else f"{_read(self[c[0]])} in {_among(c[1])}") for _, c in self._volatile_tests]
        return " or ".join(tests) if tests else "False"

    def checker(self, below: Mapping[str, int] | None = None) -> Checker | None:
        """A generated function telling whether the packet at byte `at` of `data` stays as it is when relocated
        by `move` within its own dialect: every address `Packet.addresses()` lists moved to itself (null stays;
        a range field `move` finds nowhere stays), every `below` field under its bound. It returns the
        packet's writes as `transcoder` gives them (None when it writes nothing), or False when the packet
        would change or be refused (the caller takes the general way, which says why).
        None instead of a function: an address's `when` names another address, or the packet has an indirect
        buffer (whose contents a replay copies) or an event id (which a replay maps)."""
        if self.indirect or self.event_field or any(c is not None and isinstance(self[c[0]], Addr)
                                                    for _, c in self._addr_tests):
            return None
        body = [f"    if {_read(self[n])} >= {bound}:\n        return False\n" for n, bound in (below or {}).items()
                if bound <= self[n].mask]
        for i, (n, cond) in enumerate(self._addr_tests):
            test = f"a{i}" if cond is None else f"a{i} and {_read(self[cond[0]])} in {_among(cond[1])}"
            stays = f"m{i} is not None and m{i} != a{i}" if n in self.range_fields else f"m{i} != a{i}"
            body.append(f"    a{i} = {_read(self[n])}\n    if {test}:\n        m{i} = move(a{i})\n"
                        f"        if {stays}:\n            return False\n")
        reads = [_read(self[a]) for a, c in self._written_tests]
        unconditional = all(c is None for _, c in self._written_tests)
        clock = self._clock_expression()
        wrote = ("None" if not reads else f"(({', '.join(reads)},), {clock})" if unconditional
                 else f"(tuple(w), {clock}) if w else None")
        src = (f"def check(data, at, move):\n{_unpack('d', self.size, '_unpack_from(data, at)')}{''.join(body)}"
               f"{self._written_list() if not unconditional else ''}    return {wrote}\n")
        ns: dict[str, Any] = {"_unpack_from": self._struct.unpack_from}
        exec(compile(src, f"<check {self.name}>", "exec"), ns)  # source generated from the table alone
        return ns["check"]

    def caller(self, fn: Callable[..., Any], names: Sequence[str],
               keywords: Collection[str] = ()) -> Callable[[tuple[int, ...], bytes], Any]:
        """A generated function of a packet's fixed-part dwords and tail bytes (as `Dialect.read` gives them)
        calling `fn` with the values of the fields `names`, in that order (those in `keywords` by name): an
        address whose `when` condition does not hold passes None, as `Packet.addresses()` leaves it out; the name
        "payload" passes the tail's bytes. No Packet or field dict is made: an emulated engine's handler gets its
        operands straight."""
        missing = [n for n in names if n != "payload" and n not in self._by_name]
        if missing:
            raise ValueError(f"{self.name} has no field {missing[0]!r} (fields: {', '.join(self.field_names)})")
        conditions = dict(self._addr_tests)

        def arg(n: str) -> str:
            if n == "payload":
                return "payload"
            cond = conditions.get(n)
            if cond is None:
                return _read(self[n])
            return f"({_read(self[n])} if {_read(self[cond[0]])} in {_among(cond[1])} else None)"

        args = ", ".join(f"{n}={arg(n)}" if n in keywords else arg(n) for n in names)
        src = f"def call(raw, payload):\n{_unpack('d', self.size, 'raw')}    return _fn({args})\n"
        code = _CALLS.get(src)  # every queue's engine asks for the same few: compiled once, bound to each
        if code is None:
            code = _CALLS[src] = compile(src, f"<call {self.name}>", "exec")  # generated from the table alone
        ns: dict[str, Any] = {"_fn": fn}
        exec(code, ns)
        return ns["call"]

    def _refusals(self, allowed: Mapping[str, int], below: Mapping[str, int]) -> list[str]:
        """Statements returning None for a packet whose field the target lacks holds neither 0 nor its `allowed`
        value, or whose `below` field is at or past its bound."""
        body = [f"    if {_read(self[n])} >= {bound}:\n        return None\n" for n, bound in below.items()
                if bound <= self[n].mask]  # a bound past every value the field holds needs no test
        zero = [0] * self.size  # bits of the fields that must hold 0
        for n, ok in allowed.items():
            if ok:
                body.append(f"    x = {_read(self[n])}\n    if x and x != {ok}:\n        return None\n")
            else:
                for w, s, m, _ in _parts(self[n]):
                    zero[w] |= m << s
        if any(zero):
            body.append(f"    if {' or '.join(f'd{w} & {m:#x}' for w, m in enumerate(zero) if m)}:\n"
                        f"        return None\n")
        return body

    def _carry(self, target: PacketDef, values: dict[str, str], taken: list[int]) -> list[str]:
        """Carry the fields both definitions have (but those in `values`) into `target`: bits they hold in the
        same place are marked in `taken`, the others go into `values` as expressions. Returns the checks (true:
        does not fit) of the values the target holds in fewer bits."""
        checks = []
        for f in target.fields:
            g = self._by_name.get(f.name)
            if g is None or f.name in values:
                continue
            if g.mask & ~f.mask:
                checks.append(f"{_read(g)} & {target._reject[f.name]}")
            (gs, ge, gv), (fs, fe, fv) = g._span(), f._span()
            if gv != fv:  # the value moves within the packet: decoded and encoded again
                values[f.name] = f"({_read(g)})"
                continue
            for w, s, m, _ in _bit_parts(max(gs, fs), min(ge, fe), fv):
                taken[w] |= m << s
        return checks

    def _words(self, values: Mapping[str, str], raw: str = "", taken: Sequence[int] = ()) -> list[str]:
        """One expression per dword: the header constants, the fields named in `values` (name -> a variable
        holding a value that fits), and the bits `taken[w]` of dword w, local `raw`w, as they are."""
        terms: list[list[str]] = [[] for _ in range(self.size)]
        for f in self.fields:
            if f.name in values:
                parts = _parts(f)
                for p in parts:
                    terms[p[0]].append(_enc_expr(values[f.name], *p[1:], p is parts[-1]))
        out = []
        for w in range(self.size):
            mask = taken[w] if w < len(taken) else 0
            head = [f"{raw}{w}" if mask == 0xFFFFFFFF else f"({raw}{w} & {mask:#x})"] if mask else []
            head += [f"{self._const[w]:#x}"] if self._const[w] else []
            out.append(" | ".join(head + terms[w]) or "0")
        return out

    def _validate(self, kw: Mapping[str, Any]) -> None:
        reject = self._reject
        for k, v in kw.items():
            try:
                if not v & reject[k] and isinstance(v, int):
                    continue
            except (KeyError, TypeError):
                pass
            self._invalid(k, v)

    def _invalid(self, k: str, v: Any) -> None:
        """Raise the error that explains why `v` cannot go in field `k`."""
        f = self._by_name.get(k)
        if f is None:
            raise TypeError(f"{self.name} has no field {k!r} (fields: {', '.join(self.field_names)})")
        if not isinstance(v, int):
            raise TypeError(f"{self.name}.{k} must be an int, not {type(v).__name__}")
        if isinstance(f, Addr) and 0 <= v < (1 << f.width):
            raise ValueError(f"{self.name}.{k}={v:#x} is not {1 << f.align}-byte aligned")
        raise ValueError(f"{self.name}.{k}={v:#x} does not fit the field's {f.mask.bit_length()} bits")

    def _assemble(self, fields: dict[str, int], payload: bytes, given: Mapping[str, Any]) -> bytes:
        """Check the tail against its count field; fill the count from the payload when not given.
        An empty payload stands for count+bias zero dwords (a NOP's skipped dwords)."""
        tail = self.tail
        if tail is None:
            if payload:
                raise ValueError(f"{self.name} has no variable tail; payload of {len(payload)} bytes given")
            return b""
        if not payload:
            n = fields[tail.count] + tail.bias
            payload = bytes(4 * max(0, n & self._tail_wrap if self._tail_wrap else n))
        if len(payload) % 4:
            raise ValueError(f"{self.name} payload must be whole dwords, got {len(payload)} bytes")
        count = len(payload) // 4 - tail.bias
        if self._tail_wrap:
            count &= self._tail_wrap
            if (count + tail.bias) & self._tail_wrap != len(payload) // 4:
                raise ValueError(f"{self.name}: a payload of {len(payload) // 4} dwords is more than "
                                 f"{tail.count} can count")
        if tail.count in given and given[tail.count] != count:
            raise ValueError(f"{self.name}.{tail.count}={given[tail.count]} disagrees with a payload of "
                             f"{len(payload) // 4} dwords (expected {count})")
        self._validate({tail.count: count})
        fields[tail.count] = count
        return bytes(payload)


class Packet:
    """A decoded packet: `fields` (name -> int), `payload` (tail bytes), `offset`/`size` in bytes."""

    __slots__ = ("defn", "name", "offset", "size", "_fields", "payload", "_raw")

    def __init__(self, defn: PacketDef, offset: int, fields: dict[str, int] | None, payload: bytes = b"",
                 raw: tuple[int, ...] | None = None):
        """`fields` None: a packet as decoded from dwords `raw`, whose fields are decoded when first read."""
        self.defn = defn
        self.name = defn.name
        self.offset = offset
        self.size = defn._nbytes + len(payload) if payload else defn._nbytes
        self._fields = fields
        self.payload = payload
        self._raw = raw if raw is not None else defn._zero

    @property
    def fields(self) -> dict[str, int]:
        """Field name -> value."""
        f = self._fields
        if f is None:
            f = self._fields = self.defn._decode(self._raw)
        return f

    def encode(self) -> bytes:
        """The packet's bytes; bits no field declares keep the value they were decoded with."""
        d = self.defn
        if self._fields is None:  # as decoded
            return d._struct.pack(*self._raw) + self.payload
        return d._struct.pack(*d._encode(self._fields, self._raw)) + self.payload

    def replace(self, payload: bytes | None = None, **fields: int) -> Packet:
        """A copy with some fields (and, given, the tail payload) changed; validated like `build`."""
        d = self.defn
        d._validate(fields)
        new = {**self.fields, **fields}
        if d.tail is None and not payload:
            return Packet(d, self.offset, new, b"", self._raw)
        tail = d._assemble(new, self.payload if payload is None else payload, fields)
        return Packet(d, self.offset, new, tail, self._raw)

    def addresses(self) -> dict[str, int]:
        """The tagged address fields that hold a memory address in this packet (honours `Addr.when`)."""
        f = self.fields
        return {n: f[n] for n, cond in self.defn._addr_tests if cond is None or f[cond[0]] in cond[1]}

    def written_addresses(self) -> list[int]:
        """The addresses this packet makes the GPU write (Addr fields tagged written=True; honours `when`)."""
        if self._fields is None:  # as decoded: read from its dwords, its fields left undecoded
            return self.defn._written(self._raw)
        f = self.fields
        return [f[n] for n, cond in self.defn._written_tests if cond is None or f[cond[0]] in cond[1]]

    def written_ranges(self) -> list[tuple[int, int | None]]:
        """(address, bytes the GPU writes from it) of each address `written_addresses` lists, the bytes as the table
        counts them: a byte count for the addresses that advance with it, a signal's value field, a clock's 8, a
        written tail's payload; None where it does not."""
        d, f = self.defn, self.fields
        out: list[tuple[int, int | None]] = []
        for n, cond in d._written_tests:
            if cond is not None and f[cond[0]] not in cond[1]:
                continue
            size: int | None = None
            if d.split is not None and n in d.split[1]:
                size = f[d.split[0]] + 1
            elif d.signal is not None and n == d.signal[0]:
                size = d.signal_bytes
            elif n in d.volatile_fields:
                size = 8
            elif d.tail is not None and d.tail.written == n:
                size = len(self.inline())
            out.append((f[n], size))
        return out

    def read_ranges(self) -> list[tuple[int, int | None]]:
        """(address, bytes the GPU reads from it) of each address the packet holds and does not write: a byte count
        for those that advance with it (a copy's source), None where the table does not count them."""
        d = self.defn
        moved = self.fields[d.split[0]] + 1 if d.split is not None else None
        return [(a, moved if d.split is not None and n in d.split[1] else None) for n, a in self.addresses().items()
                if n not in d.written_fields]

    def inline(self) -> bytes:
        """The bytes a written tail leaves at its address: the payload, or its last dword when every dword goes to
        that one address (`Tail.one_addr`)."""
        one = self.defn.tail.one_addr if self.defn.tail is not None else None
        return self.payload[-4:] if one is not None and self.fields[one] else self.payload

    def copied(self) -> tuple[int, int, int] | None:
        """(source, destination, bytes) of a packet copying memory to memory, as its table tells it: one address it
        reads and one it writes advance with its byte count (`split`); None for any other packet."""
        d = self.defn
        if d.split is None:
            return None
        read = [n for n in d.split[1] if n not in d.written_fields]
        written = [n for n in d.split[1] if n in d.written_fields]
        if len(read) != 1 or len(written) != 1 or self.fields[written[0]] not in self.written_addresses():
            return None
        return self.fields[read[0]], self.fields[written[0]], self.fields[d.split[0]] + 1

    @property
    def dwords(self) -> tuple[int, ...]:
        """The fixed part's dwords, as the packet encodes (its changed fields included)."""
        return self._raw if self._fields is None else self.defn.unpack_from(self.encode())

    def registers(self) -> dict[str, int]:
        """The registers a register-setting packet writes (a tail of values from its `first` index, named by the
        dialect's register table), by name; {} for any other packet."""
        tail = self.defn.tail
        if tail is None or not tail.registers or tail.first is None:
            return {}
        first, names = self.fields[tail.first], tail.registers
        words = struct.unpack(f"<{len(self.payload) // 4}I", self.payload)
        return {names[first + i]: w for i, w in enumerate(words) if first + i in names}

    @property
    def volatile(self) -> bool:
        """Whether this packet writes a value that differs on every run (a clock) through an address it holds."""
        d, f = self.defn, self.fields
        if not d.volatile:
            return False
        held = self.addresses()
        return any(n in held and (c is None or f[c[0]] in c[1]) for n, c in d._volatile_tests)

    def relocate(self, move: Callable[[int], int]) -> Packet:
        """A copy with every address `addresses()` lists replaced by `move(address)`; self if it has none."""
        d = self.defn
        if not d._addr_conds:
            return self
        new = self.fields.copy()
        reject = d._reject
        for n, cond in d._addr_tests:
            if cond is None or new[cond[0]] in cond[1]:
                v = move(new[n])
                if v & reject[n]:
                    d._invalid(n, v)
                new[n] = v
        return Packet(d, self.offset, new, self.payload, self._raw)

    def __getattr__(self, name: str) -> int:
        """Fields read as attributes: packet.count."""
        if name == "fields" or name in Packet.__slots__:
            raise AttributeError(name)  # unset while a copy is made: no recursion
        try:
            return self.fields[name]
        except KeyError:
            raise AttributeError(f"{self.name} packet has no field {name!r}") from None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Packet):
            return NotImplemented
        return (self.defn is other.defn and self.fields == other.fields and self.payload == other.payload
                and self.encode() == other.encode())

    __hash__ = None  # type: ignore[assignment]

    def __str__(self) -> str:
        return self.show()

    def show(self, where: Callable[[int], str | None] | None = None) -> str:
        """The packet in one line, fields by name; with `where`, each address it holds (`addresses()`) also
        says what `where` names it (``dst=0x7f00_1000_2000 (result+0x2000)``)."""
        if self._fields is None and self.defn.tail is None:  # as decoded: the generated words, straight from dwords
            return self.defn._show(self._raw, where)
        addrs, tail = self.defn.address_fields, self.defn.tail
        hidden = () if tail is None else (tail.count if tail.quiet else None, tail.first)
        held = self.addresses() if where is not None else {}
        out = [self.name]
        for k, v in self.fields.items():
            if k in held:
                named = where(v)
                out.append(f"{k}={v:#_x}" + (f" ({named})" if named else ""))
            elif k in addrs:
                out.append(f"{k}={v:#x}")
            elif v and k not in hidden:
                out.append(f"{k}={v}" if v < 10 else f"{k}={v:#x}")
        if self.payload and tail is not None and tail.first is not None:
            names, first = tail.registers or {}, self.fields[tail.first]
            words = struct.unpack(f"<{len(self.payload) // 4}I", self.payload)
            out += [f"{names.get(first + i, f'reg[{first + i:#x}]')}={w:#x}" for i, w in enumerate(words)]
        elif self.payload:
            words = struct.unpack_from(f"<{min(4, len(self.payload) // 4)}I", self.payload)
            more = len(self.payload) // 4 - len(words)
            shown = ", ".join(f"{w:#x}" for w in words) + (f", +{more}dw" if more else "")
            out.append(f"payload=[{shown}]")
        return " ".join(out)

    def __repr__(self) -> str:
        return f"<{self} @{self.offset:#x}>"


def _decoded(d: PacketDef, offset: int, raw: tuple[int, ...]) -> Packet:
    """Packet(d, offset, None, b"", raw) of a fixed-size packet, without the constructor's call: decoding is hot."""
    p = _new(Packet)
    p.defn = d
    p.name = d.name
    p.offset = offset
    p.size = d._nbytes
    p._fields = None
    p.payload = b""
    p._raw = raw
    return p


# (field values, the cache actions they ask together): one row of a CacheControl table
CacheRow = tuple[Mapping[str, int], Iterable[str]]


class CacheControl:
    """Which field values of a dialect's packets ask which generation-independent cache actions.

    Per packet, rows of (field values, actions): a packet whose fields hold a row's values asks that row's actions,
    a row inside a larger row that also matches saying no more than the larger one (gfx9's TC_WB | TC_NC writes L2
    back; with TC_ACTION as well it writes back and invalidates). Every non-zero field a row names must be covered by
    a matching row, else the packet asks something the table cannot say. Writing actions takes the fewest rows that
    ask exactly them (the first such in table order): the table's order is the preferred spelling.
    """

    def __init__(self, rows: Mapping[str, Iterable[CacheRow]] | None = None):
        self._rows = {name: tuple((dict(values), frozenset(actions)) for values, actions in table)
                      for name, table in (rows or {}).items()}
        self._fields = {name: tuple(dict.fromkeys(f for values, _ in table for f in values))
                        for name, table in self._rows.items()}
        self._written: dict[tuple[str, frozenset[str]], dict[str, int] | None] = {}

    def packets(self) -> tuple[str, ...]:
        """The packets the table gives cache fields."""
        return tuple(self._rows)

    def rows(self, packet: str) -> tuple[tuple[dict[str, int], frozenset[str]], ...]:
        """The rows of `packet`, in table order (two dialects whose rows agree spell every request alike)."""
        return self._rows.get(packet, ())

    def fields(self, packet: str) -> tuple[str, ...]:
        """The fields of `packet` the table gives a meaning (cache fields)."""
        return self._fields.get(packet, ())

    def read(self, packet: str, values: Mapping[str, int]) -> tuple[frozenset[str], tuple[str, ...]]:
        """(the actions `values` ask, the cache fields set that no matching row covers)."""
        hit = [(v, a) for v, a in self.rows(packet) if all(values.get(f) == x for f, x in v.items())]
        actions = frozenset().union(*(a for v, a in hit if not any(v.items() < w.items() for w, _ in hit)))
        covered = {f for v, _ in hit for f in v}
        return actions, tuple(f for f in self.fields(packet) if values.get(f) and f not in covered)

    def write(self, packet: str, actions: Iterable[str]) -> dict[str, int] | None:
        """Values of every cache field of `packet` asking exactly `actions`; None when no rows of the table do."""
        want = frozenset(actions)
        key = (packet, want)
        if key not in self._written:
            self._written[key] = self._search(packet, want)
        found = self._written[key]
        return None if found is None else dict(found)

    def _search(self, packet: str, want: frozenset[str]) -> dict[str, int] | None:
        rows = [(v, a) for v, a in self.rows(packet) if a <= want]
        for n in range(len(rows) + 1):
            for chosen in itertools.combinations(rows, n):
                values = dict.fromkeys(self.fields(packet), 0)
                for v, _ in chosen:
                    if any(values[f] not in (0, x) for f, x in v.items()):
                        break
                    values.update(v)
                else:
                    if self.read(packet, values) == (want, ()):
                        return values
        return None


class Dialect:
    """A set of packet definitions sharing one header layout (e.g. "sdma6", later a PM4 dialect).

    Decoding masks the header with the union of all definitions' constant fields and looks the result up:
    a definition matches when those bits equal its constants (bits only other definitions fix must be 0).
    `defaults`: per packet, the values every packet of that name starts from, where it has the field (`.defaults`
    keeps those it has); `cache`: what its field values ask of the caches.
    """

    # (offset, bytes) from each address a packet writes that the engine may also fill with GPU clocks (None: none;
    # AQL's completion signals: AqlDialect)
    clocked: tuple[int, int] | None = None
    # a doorbell says where the packets written end, and the engine reads up to there (False: AqlDialect's)
    ordered_doorbells = True

    def submitted_end(self, base: int, rung: int, ring: bytes) -> int:
        """Where a queue's stream stands after a `doorbell` record of `ring` from `base` whose value says `rung`
        (kfd_ioctl.doorbell_end): there, or, where producers ring out of order, where the packets the record holds
        end (AQL: what the processor took; FORMAT.md 3.3)."""
        return rung if self.ordered_doorbells else base + len(ring)

    def __init__(self, name: str, defs: Iterable[PacketDef], *,
                 defaults: Mapping[str, Mapping[str, int]] | None = None, cache: CacheControl | None = None):
        self.name = name
        self.defs: tuple[PacketDef, ...] = tuple(defs)
        self._by_name: dict[str, PacketDef] = {}
        for d in self.defs:
            if d.name in self._by_name:
                raise ValueError(f"{name}: two packets named {d.name}")
            self._by_name[d.name] = d
        self._given_defaults = defaults or {}
        self.defaults: dict[str, dict[str, int]] = {
            d.name: {k: v for k, v in self._given_defaults.get(d.name, {}).items() if k in d.field_names}
            for d in self.defs}
        self.cache = cache or CacheControl()
        for pname in self.cache.packets():
            missing = [f for f in self.cache.fields(pname) if f not in self[pname].field_names]
            if missing:
                raise ValueError(f"{name}: the cache table names {pname}.{missing[0]}, which is no field")
        self._fixed = {d.name: d for d in self.defs if d.tail is None}  # packets `build` packs straight
        keys = tuple({hf: None for d in self.defs for hf in d.header})
        if any(k.dword for k in keys):
            raise ValueError(f"{name}: header constants must live in dword 0")
        self._key_fields = keys
        self._key_mask = 0
        for k in keys:
            self._key_mask |= k.mask << k.shift
        self._index: dict[int, PacketDef] = {}  # header bits under _key_mask -> definition
        for d in self.defs:
            key = sum(v << hf.shift for hf, v in d.header.items())
            if key in self._index:
                raise ValueError(f"{name}: {d.name} and {self._index[key].name} share header {key:#x}")
            self._index[key] = d

    def __repr__(self) -> str:
        return f"<Dialect {self.name}: {' '.join(self._by_name)}>"

    def __getitem__(self, name: str) -> PacketDef:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"dialect {self.name} has no packet {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[PacketDef]:
        return iter(self.defs)

    def packet(self, name: str, payload: bytes = b"", **fields: int) -> Packet:
        """A new packet; unset fields are 0. With a tail, its count field defaults to the payload's length,
        and an empty payload means count+bias zero dwords: build("NOP", count=3) is 4 dwords long."""
        d = self[name]
        d._validate(fields)
        values = dict.fromkeys(d.field_names, 0)
        values.update(fields)
        tail = d._assemble(values, payload, fields)
        return Packet(d, 0, values, tail)

    def build(self, name: str, payload: bytes = b"", **fields: int) -> bytes:
        """Encode one packet. Unknown field -> TypeError; value too wide or misaligned -> ValueError."""
        d = self._fixed.get(name)
        if d is not None and not payload:
            out = (d._builders.get(tuple(fields)) or d._builder(tuple(fields)))(*fields.values())
            if out is not None:
                return out
        return self.packet(name, payload, **fields).encode()  # which raises the error

    def decode(self, data: bytes | bytearray | memoryview, offset: int = 0) -> Packet:
        """Decode the packet starting at byte `offset` of `data`."""
        if isinstance(data, memoryview) and data.format != "B":
            data = data.cast("B")
        n = len(data)
        if offset + 4 > n:
            raise TruncatedPacket(f"{self.name}: no packet header at byte offset {offset:#x} "
                                  f"({n} bytes of data)")
        hdr = _U32.unpack_from(data, offset)[0]
        d = self._index.get(hdr & self._key_mask)
        if d is None:
            keys = " ".join(f"{k.name}={(hdr >> k.shift) & k.mask:#x}" for k in self._key_fields)
            raise UnknownPacket(f"{self.name}: unknown packet {keys} (header {hdr:#010x}) "
                                f"at byte offset {offset:#x}")
        end = offset + d._nbytes
        if end > n:
            if d.tail is not None:  # a count that makes the packet shorter than its form is the better error
                self._check_count(d, d._decode(d._struct.unpack(bytes(data[offset:n]).ljust(d._nbytes, b"\0"))),
                                  offset)
            raise TruncatedPacket(f"{self.name}: {d.name} at byte offset {offset:#x} needs "
                                  f"{d.size * 4} bytes, only {n - offset} left")
        raw = d._struct.unpack_from(data, offset)
        if d.tail is None:
            return _decoded(d, offset, raw)  # its fields are decoded when first read
        fields = d._decode(raw)
        payload = b""
        extra = (fields[d.tail.count] + d.tail.bias) * 4
        if d._tail_wrap:
            extra &= d._tail_wrap << 2
        if extra:  # PM4's fixed-size packets have an empty tail: nothing to check or copy
            if extra < 0:
                self._check_count(d, fields, offset)
            if end + extra > n:
                raise TruncatedPacket(f"{self.name}: {d.name} at byte offset {offset:#x} has a "
                                      f"{extra // 4}-dword tail, only {(n - end) // 4} dwords left")
            payload = bytes(data[end:end + extra])
        return Packet(d, offset, fields, payload, raw)

    def waits(self, d: PacketDef) -> bool:
        """Whether a packet of definition `d` waits on memory before the engine goes past it (its `wait` tag)."""
        return d.wait is not None

    def definition(self, header: int) -> PacketDef | None:
        """The definition a packet whose first dword is `header` has (None: no packet of this dialect)."""
        return self._index.get(header & self._key_mask)

    def read(self, data: bytes, offset: int = 0) -> tuple[PacketDef, tuple[int, ...], bytes, int]:
        """(definition, fixed part's dwords, tail bytes, size in bytes) of the packet at byte `offset`: what
        `decode` finds, without making a Packet (a fixed-size packet is one lookup and one unpack). Raises as
        `decode` does."""
        if offset + 4 <= len(data):
            d = self._index.get(_U32.unpack_from(data, offset)[0] & self._key_mask)
            if d is not None and d.tail is None and offset + d._nbytes <= len(data):
                return d, d._struct.unpack_from(data, offset), b"", d._nbytes
        p = self.decode(data, offset)
        return p.defn, p._raw, p.payload, p.size

    def _check_count(self, d: PacketDef, fields: dict[str, int], offset: int) -> int:
        """The bytes of `d`'s tail its count field gives; PacketError if the count is below the fixed part."""
        extra = (fields[d.tail.count] + d.tail.bias) * 4
        if extra < 0:
            raise PacketError(f"{self.name}: {d.name} at byte offset {offset:#x} has {d.tail.count}="
                              f"{fields[d.tail.count]}, {-extra // 4} dwords short of its {d.size}-dword form")
        return extra

    def iter_packets(self, data: bytes | bytearray | memoryview, start: int = 0,
                     end: int | None = None) -> Iterator[Packet]:
        """Decode packets back to back from byte `start` up to `end` (default: the end of `data`)."""
        if isinstance(data, memoryview) and data.format != "B":
            data = data.cast("B")
        if end is not None and end < len(data):
            data = memoryview(data)[:end]
        decode, index, mask, header = self.decode, self._index, self._key_mask, _U32.unpack_from
        pos, stop = start, len(data)
        while pos < stop:
            # a whole fixed-size packet is one lookup and one unpack; `decode` words what is wrong with the rest
            d = index.get(header(data, pos)[0] & mask) if pos + 4 <= stop else None
            if d is not None and d.tail is None and pos + d._nbytes <= stop:
                p = _decoded(d, pos, d._struct.unpack_from(data, pos))
            else:
                p = decode(data, pos)
            yield p
            pos += p.size

    def spans(self, data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int, PacketDef]]:
        """(offset, size in bytes, definition) of each packet back to back from `start` to `end`: the cheapest
        walk (a fixed-size packet's fields are not decoded)."""
        if end is not None and end < len(data):
            data = memoryview(data)[:end]
        pos, stop, index, mask, header = start, len(data), self._index, self._key_mask, _U32.unpack_from
        while pos < stop:
            d = index.get(header(data, pos)[0] & mask) if pos + 4 <= stop else None
            if d is None or d.tail is not None or pos + d._nbytes > stop:
                p = self.decode(data, pos)  # raises the usual errors for unknown or truncated packets
                d, size = p.defn, p.size
            else:
                size = d._nbytes
            yield pos, size, d
            pos += size


    def derive(self, name: str, *, fields: Mapping[str, Iterable[Field | Addr]] | None = None,
               drop: Mapping[str, Iterable[str]] | None = None,
               header: Mapping[str, Mapping[Field, int]] | None = None,
               add: Iterable[PacketDef] = (), remove: Iterable[str] = (),
               cache: CacheControl | None = None) -> Dialect:
        """A new dialect from this one: per-packet fields added/replaced or dropped, header values changed,
        whole packets added (replacing same-named ones) or removed; the same defaults, and this cache table unless
        one is given."""
        fields, drop, header = fields or {}, drop or {}, header or {}
        for table in (fields, drop, header):
            for pname in table:
                self[pname]  # a typo in a version table is an error, not a silent no-op
        gone = set(remove)
        added = {d.name: d for d in add}
        out = []
        for d in self.defs:
            if d.name in gone:
                continue
            if d.name in added:
                out.append(added.pop(d.name))
                continue
            if d.name in fields or d.name in drop or d.name in header:
                d = d.with_fields(*fields.get(d.name, ()), drop=drop.get(d.name, ()),
                                  header=header.get(d.name))
            out.append(d)
        return Dialect(name, (*out, *added.values()), defaults=self._given_defaults, cache=cache or self.cache)
