"""Packets for the replay target: decode with the capture's dialect, relocate every tagged address, encode with
the target's.

Relocation follows the packet tables' Addr tags, so no packet is special-cased here. What differs between
dialects is data: field sets (a field the target lacks must hold 0 or the kernel's default, else the packet
cannot be translated), count widths and per-family copy limits (copies and fills are split), and cache
maintenance that older engines do not have (dropped, and said so).
"""

from __future__ import annotations

from collections.abc import Callable

from kfdtrace.driver.packets import Dialect, Packet, PacketError
from kfdtrace.driver.ranges import RangeMap
from kfdtrace.driver.sdma import DEFAULTS, defaults

# Packets whose `count` is bytes-1 over the listed addresses, which advance together: split to fit the target.
SPLIT: dict[str, tuple[str, ...]] = {"COPY_LINEAR": ("src", "dst"), "CONST_FILL": ("dst",)}
# Cache maintenance an engine without the packet does not need: dropped when the target lacks it.
DROPPABLE = frozenset({"GCR_REQ", "USER_GCR"})


class ReplayError(Exception):
    """A trace that cannot be replayed on this target, found before anything is submitted."""


class OutsideBuffers(ReplayError):
    """A packet address in no recorded buffer: on real hardware the GPU would touch memory nobody allocated."""


class Relocation:
    """Recorded address ranges -> replay addresses; interior pointers move with their range."""

    def __init__(self) -> None:
        self._ranges: RangeMap[int] = RangeMap()

    def add(self, recorded: int, size: int, replay: int) -> None:
        if not self._ranges.add(recorded, size, replay - recorded):
            raise ReplayError(f"recorded buffers overlap at {recorded:#x}")

    def remove(self, recorded: int) -> None:
        self._ranges.remove(recorded)

    def move(self, addr: int) -> int | None:
        delta = self._ranges.get(addr)
        return None if delta is None else addr + delta


class Translator:
    """Translates one queue's ring bytes from the capture's dialect to the target's."""

    def __init__(self, src: Dialect, dst: Dialect, max_copy: int, relocation: Relocation,
                 event_id: Callable[[int], int] = lambda e: e):
        self.src, self.dst, self.relocation, self.event_id = src, dst, relocation, event_id
        self.limits = {name: min(max_copy, dst[name]["count"].mask + 1) for name in SPLIT if name in dst}
        self.same = src is dst
        self.dropped: list[str] = []

    def ring(self, data: bytes, where: str) -> bytes:
        """The translated packets of `data` (one submission's ring bytes); `where` names it in errors."""
        out = []
        try:
            for p in self.src.iter_packets(data):
                out += self.packet(p, where)
        except PacketError as exc:
            raise ReplayError(f"{where}: {exc}") from None
        return b"".join(out)

    def _move(self, p: Packet, where: str) -> dict[str, int]:
        moved = {}
        for field, addr in p.addresses().items():
            new = self.relocation.move(addr)
            if new is None and field in p.defn.range_fields:
                continue  # a cache range outside every buffer (often all of memory): it stays as it is
            if new is None:
                raise OutsideBuffers(f"{where}: {p.name} at byte {p.offset:#x}: {field}={addr:#x} is in no recorded "
                                     f"buffer; refusing to submit it")
            moved[field] = new
        return moved

    def packet(self, p: Packet, where: str) -> list[bytes]:
        """One recorded packet as target packets (none when dropped, several when split)."""
        moved = self._move(p, where)
        if p.name == "TRAP":
            moved["int_context"] = self.event_id(p.fields["int_context"])
        if self.same and p.name not in self.limits:
            return [p.replace(**moved).encode() if moved else p.encode()]
        if p.name not in self.dst:
            if p.name in DROPPABLE:
                self.dropped.append(f"{where}: {p.name} (no {self.dst.name} form; caches need no request there)")
                return []
            raise ReplayError(f"{where}: {p.name} has no {self.dst.name} form")
        fields = {**defaults(self.dst, p.name), **self._portable(p), **moved}
        return [self.dst.build(p.name, p.payload, **f) for f in self._split(p.name, fields)]

    def _portable(self, p: Packet) -> dict[str, int]:
        """The packet's fields the target has; a field it lacks must hold 0 or the kernel's default."""
        target = set(self.dst[p.name].field_names)
        kept = {}
        for name, value in p.fields.items():
            if name in target:
                kept[name] = value
            elif value and value != DEFAULTS.get(p.name, {}).get(name):
                raise ReplayError(f"{p.name}.{name}={value:#x} has no {self.dst.name} equivalent")
        return kept

    def _split(self, name: str, fields: dict[str, int]) -> list[dict[str, int]]:
        limit = self.limits.get(name)
        total = fields["count"] + 1 if limit else 0
        if not limit or total <= limit:
            return [fields]
        parts = []
        for done in range(0, total, limit):
            part = {**fields, "count": min(limit, total - done) - 1}
            for addr in SPLIT[name]:
                part[addr] = fields[addr] + done
            parts.append(part)
        return parts
