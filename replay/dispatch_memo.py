"""Whole submissions that launch kernels, translated once and replayed again as they were: the next loop of a
`replay --loop N` (and a submission the trace makes again with the same bytes) takes them from the memo instead of
re-deriving every dispatch.

A dispatch's translation depends on more than its submission's bytes: the registers the queue set before it, the
kernel arguments in recorded memory, the code object loaded for the target and where, the relocation, the event
ids and the kernel-argument memory it was given. The memo keeps a translation only while the buffers sit at their
recorded addresses (the IDENTITY relocation), gives each cached dispatch whose arguments are not in place
(InPlace) kernel-argument memory of its own that lives as long as the memo (so the translated packets may point
at it again), and takes a translation again only when every other input reads as it did. Dispatches it cannot
vouch for are not kept: a kernel given a dispatch id (which differs every time) or scratch (whose memory belongs
to the queue of the moment).
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, NamedTuple, TypeVar

from kfdtrace.driver.memory import PAGE
from kfdtrace.driver.syscalls import memory_view

if TYPE_CHECKING:
    from kfdtrace.driver.memory import Buffer
    from kfdtrace.driver.ranges import RangeMap
    from kfdtrace.driver.system import Device

STORE_BYTES = 16 << 20  # kernel-argument bytes one device's store lends to cached dispatches, at most
STORE_BUFFER = 1 << 20  # the store grows by buffers of this size
# what a dispatch's PM4 form asks beyond its kernel arguments: a copy of its AQL dispatch packet, 64-byte aligned
# (driver/dispatch.py pm4_launch; not imported: that module loads numpy, which an SDMA replay does without)
DISPATCH_PACKET_ROOM = 2 * 64
SPAN_GAP = 512  # kernel arguments at most this far apart are read and compared as one span of memory
T = TypeVar("T")
Events = tuple[tuple[int, int], ...]  # (recorded event id, the replay's) a translation put in its packets


class Piece:
    """Kernel-argument memory of one cached dispatch (used as a KernargSlice is: `va`, `write`, `free`): `size`
    bytes at `at` in a store buffer's `view`."""

    __slots__ = ("va", "view", "at", "size")

    def __init__(self, va: int, view: memoryview, at: int, size: int):
        self.va, self.view, self.at, self.size = va, view, at, size

    def write(self, data: bytes, offset: int = 0) -> None:
        if offset < 0 or offset + len(data) > self.size:
            raise ValueError(f"kernel-argument piece at {self.va:#x}: bytes [{offset:#x}, {offset + len(data):#x}) "
                             f"are outside its {self.size:#x} bytes")
        self.view[self.at + offset:self.at + offset + len(data)] = data

    def free(self) -> None:
        """Nothing: the store owns the memory until the replay ends."""


class NotInPlace(Exception):
    """The kernel arguments rewritten for the target are not the bytes the recorded address holds."""


class InPlace:
    """Kernel-argument memory that is the recording's own (used as a KernargSlice is): `size` bytes of a replay
    buffer's `view` at `at`, which sits at the recorded address `va`. A dispatch whose arguments, rewritten for the
    target, are the bytes already there (the same build, nothing moved) is given them where they are, and reads them
    when it runs as the recorded dispatch did: after CPU writes that a GPU wait orders after its doorbell, and after
    a kernel wrote its own (campaign 77; a copy made at the doorbell missed both). Writing other bytes than those
    there in the first `used` raises NotInPlace (the caller copies them elsewhere instead); what a write puts after
    them (the copy of the AQL packet a PM4 launch puts there, for a kernel that reads its dispatch packet) the kernel
    does not read, and stays as recorded."""

    __slots__ = ("va", "view", "at", "size", "used")

    def __init__(self, va: int, view: memoryview, at: int, size: int, used: int):
        self.va, self.view, self.at, self.size, self.used = va, view, at, size, used

    def write(self, data: bytes, offset: int = 0) -> None:
        start, n = self.at + offset, min(len(data), self.used - offset)
        if offset < 0 or offset + len(data) > self.size or self.view[start:start + n] != data[:n]:
            raise NotInPlace

    def free(self) -> None:
        """Nothing: the memory is the replayed program's."""


def extents(pieces: tuple[Piece, ...]) -> tuple[tuple[memoryview, int, bytes], ...]:
    """The bytes the pieces hold now, as (view, start, end, bytes) of runs of pieces that follow each other in a
    store buffer (a submission's dispatches cut theirs in order): what to write again before each reuse."""
    runs: list[list] = []
    for p in pieces:
        if runs and runs[-1][0] is p.view and runs[-1][2] <= p.at <= runs[-1][2] + PAGE:
            runs[-1][2] = max(runs[-1][2], p.at + p.size)
        else:
            runs.append([p.view, p.at, p.at + p.size])
    return tuple((view, start, end, view[start:end].tobytes()) for view, start, end in runs)


class RecordedMemory:
    """Memory at recorded addresses as the replay holds it: `buffers` maps recorded ranges to objects whose `view`
    is their CPU-visible bytes (None: not CPU-visible). The range read last is kept (`last`: start, end, view):
    kernel arguments are read again and again from one buffer."""

    __slots__ = ("buffers", "last")

    def __init__(self, buffers: RangeMap):
        self.buffers = buffers
        self.last: tuple[int, int, memoryview | None] = (0, 0, None)

    def read(self, va: int, size: int) -> bytes | None:
        """The `size` bytes at recorded address `va` (None: not all in one CPU-visible buffer)."""
        start, end, view = self.last
        if not (start <= va and va + size <= end and size):
            hit = self.buffers.find(va)
            if hit is None or hit[2].view is None or va + size > hit[0] + hit[1]:
                return None
            start, end, view = self.last = hit[0], hit[0] + hit[1], hit[2].view
        va -= start
        return view[va:va + size].tobytes()

    def forget(self) -> None:
        """A buffer went: the range read last may be gone with it."""
        self.last = (0, 0, None)


class KernargStore:
    """Kernel-argument memory on one device for cached dispatches, cut in order and never given back before the
    replay ends (`free`); at most STORE_BYTES (and one buffer more: the dispatch `fits` let through last may need
    it)."""

    def __init__(self, device: Device):
        self.device = device
        self.buffers: list[Buffer] = []
        self._view: memoryview | None = None  # the last buffer's bytes
        self._at = STORE_BUFFER  # bytes cut from the last buffer

    def fits(self, size: int, align: int) -> bool:
        """Whether the store lends memory to a dispatch of `size` bytes of kernel arguments aligned to `align` (the
        PM4 form asks for a copy of the dispatch packet after them: pm4_launch)."""
        return size + DISPATCH_PACKET_ROOM <= STORE_BUFFER and align <= PAGE and \
            len(self.buffers) * STORE_BUFFER < STORE_BYTES

    def piece(self, size: int, align: int) -> Piece:
        """`size` bytes aligned to `align` (at most a buffer and a page: what `fits` lets through)."""
        if size > STORE_BUFFER or align > PAGE:
            raise ValueError(f"{size} bytes aligned to {align} do not fit the kernel-argument store")
        at = -(-self._at // align) * align
        if at + size > STORE_BUFFER:
            buffer = self.device.alloc(STORE_BUFFER, "gtt", name="replay cached kernargs", role="kernargs")
            self.buffers.append(buffer)
            self._view, at = memory_view(buffer.cpu, STORE_BUFFER, writable=True), 0
        self._at = at + size
        return Piece(self.buffers[-1].va + at, self._view, at, size)

    def free(self) -> None:
        for buffer in self.buffers:
            buffer.free()
        self.buffers.clear()


class Inputs(NamedTuple):
    """What the translation of a submission launching kernels depended on."""

    before: dict[str, int]  # the queue's registers before it
    after: dict[str, int] | None  # and after it (None: as they were)
    spans: tuple[tuple[int, bytes], ...]  # recorded memory it read: (va, the bytes)
    unread: tuple[tuple[int, int], ...]  # (va, size) it found in no CPU-visible buffer, which must stay so
    codes: tuple[tuple[int, object], ...]  # (recorded code object, the one loaded for it)
    written: tuple[tuple[memoryview, int, int, bytes], ...]  # its kernel arguments (`extents`)
    copied: tuple[bool, ...] = ()  # for each dispatch, whether it reads a copy of its recorded kernel arguments
    arguments: tuple[tuple[int, int], ...] = ()  # for each dispatch, its recorded kernel arguments (va, bytes)


class DispatchMemo:
    """What the dispatches of the submission being translated depended on (`start`, `read`, `note`, `refuse`,
    `inputs`), and whether those inputs still hold (`still`), for one queue of one replay instance.

    `registers` is the queue's register state as its dispatch reader follows it, `memory` the recorded memory as
    the replay holds it, and `loaded` maps a recorded code object's address to what identifies the object loaded
    for it (the replay's, updated as it loads)."""

    def __init__(self, registers: dict[str, int], memory: RecordedMemory, loaded: dict[int, object]):
        self.registers, self._memory, self._read, self._loaded = registers, memory, memory.read, loaded
        self._before: dict[str, int] | None = None
        # while a translation is recorded: every read of recorded memory it made, (va, size, bytes or None)
        self._reads: list[tuple[int, int, bytes | None]] | None = None
        self._codes: dict[int, object] = {}  # recorded code object -> the loaded one, of its dispatches
        self._pieces: list[Piece] = []  # the kernel-argument memory its packets point at
        self._copied: list[bool] = []  # Inputs.copied
        self._arguments: list[tuple[int, int]] = []  # Inputs.arguments
        self.copied: tuple[bool, ...] = ()  # Inputs.copied of the translation taken last
        self.arguments: tuple[tuple[int, int], ...] = ()  # and its Inputs.arguments

    @property
    def recording(self) -> bool:
        """Whether the dispatches being translated may be kept (none refused so far)."""
        return self._reads is not None

    def start(self) -> None:
        self._before, self._reads, self._codes, self._pieces = dict(self.registers), [], {}, []
        self._copied, self._arguments = [], []

    def read(self, va: int, size: int) -> bytes | None:
        """`size` bytes of recorded memory at `va` as the replay holds them (None: no CPU-visible buffer holds them
        all); what the translation being recorded reads through this is checked before its reuse."""
        data = self._read(va, size)
        if self._reads is not None:
            self._reads.append((va, size, data))
        return data

    def note(self, obj: int, piece: Piece | None, copied: bool, arguments: tuple[int, int]) -> None:
        """A dispatch of a kernel of the recorded code object at `obj`, its kernel arguments in `piece` (None: in
        place, InPlace), `copied` from the recorded ones at `arguments` (va, bytes)."""
        if self._reads is not None:
            self._codes[obj] = self._loaded.get(obj)
            self._copied.append(copied)
            self._arguments.append(arguments)
            if piece is not None:
                self._pieces.append(piece)

    def refuse(self) -> None:
        """The submission's translation must not be kept."""
        self._reads = None

    def inputs(self) -> Inputs | None:
        """The inputs of the submission translated since `start` (its reads of memory as spans, nearby ones
        together), for `still`; None when it must not be kept."""
        reads, self._reads = self._reads, None
        if reads is None:
            return None
        spans: list[tuple[int, bytes | None]] = []
        for va, data in sorted((va, data) for va, _, data in reads if data):
            last = spans[-1] if spans else None
            if last is not None and last[1] is not None and va <= last[0] + len(last[1]) + SPAN_GAP:
                merged = self._read(last[0], max(len(last[1]), va + len(data) - last[0]))
                if merged is not None:
                    spans[-1] = (last[0], merged)
                    continue
            spans.append((va, self._read(va, len(data))))
        # each read as the span holding it holds it now, else memory changed under the translation
        starts = [at for at, _ in spans]
        for va, _, data in reads:
            if data:
                at, span = spans[bisect.bisect_right(starts, va) - 1]
                if span is None or span[va - at:va - at + len(data)] != data:
                    return None
        unread = tuple((va, size) for va, size, data in reads if data is None)  # must stay unreadable
        before = self._before
        after = None if self.registers == before else dict(self.registers)
        return Inputs(before, after, tuple(spans), unread, tuple(self._codes.items()), extents(tuple(self._pieces)),
                      tuple(self._copied), tuple(self._arguments))

    def still(self, inputs: Inputs) -> bool:
        """Whether `inputs` hold now; if so the queue's state is moved on as translating the submission would, and
        each dispatch's kernel arguments are written again (a kernel may have written over its own)."""
        before, after, spans, unread, codes, written, copied, arguments = inputs
        registers = self.registers
        if registers != before:
            return False
        loaded = self._loaded
        for obj, code in codes:
            if loaded.get(obj) != code:
                return False
        read = self._read
        for va, data in spans:
            if read(va, len(data)) != data:
                return False
        if unread:
            for va, size in unread:
                if read(va, size) is not None:
                    return False
        if after is not None:
            registers.clear()
            registers.update(after)
        for view, start, end, data in written:  # the same bytes: harmless to a dispatch still reading them
            view[start:end] = data
        self.copied, self.arguments = copied, arguments
        return True


class Kept(Generic[T]):
    """The translations kept of one submission's bytes (`add`; at most `limit`, the one kept longest ago pushed
    out), each with the inputs it depended on and the event ids it mapped. `take(memo, same_events)` gives the one
    whose inputs hold now for a queue's memo and whose event ids still map (`same_events`), the queue moved on as
    translating it would (`DispatchMemo.still`), or None.

    Alternatives are the same bytes translated over other memory: a kernel-argument arena reused. While each read
    one span of memory, the same, with one code object and no register changed (an AQL dispatch's shape), `take`
    finds the one for what that span holds with one read; otherwise it tries each in turn, the one after the one
    taken last first."""

    __slots__ = ("limit", "order", "take")

    def __init__(self, limit: int):
        self.limit = limit
        self.order: deque[tuple[T, Events, Inputs]] = deque()
        self.take: Callable[[DispatchMemo, Callable[[Events], bool]], T | None] = self._tried

    def add(self, translation: T, events: Events, inputs: Inputs) -> T | None:
        """Keep `translation`; the one pushed out for it, if any."""
        out = self.order.popleft()[0] if len(self.order) == self.limit else None
        self.order.append((translation, events, inputs))
        self.take = self._keyed() or self._tried
        return out

    def _tried(self, memo: DispatchMemo, same_events: Callable[[Events], bool]) -> T | None:
        order = self.order
        for kept in order:
            translation, events, inputs = kept
            if (not events or same_events(events)) and memo.still(inputs):
                order.rotate(-1 - order.index(kept))
                return translation
        return None

    def _keyed(self) -> Callable[[DispatchMemo, Callable[[Events], bool]], T | None] | None:
        """`take` for alternatives of the AQL dispatch's shape that read the same span after the same registers,
        of the same code objects, by what the span holds (of two made over the same bytes, the one kept last)."""
        order = self.order
        first = order[0][2]
        if len(first.spans) != 1 or len(first.codes) != 1:
            return None
        ((va, data),), ((obj, code),), before = first.spans, first.codes, first.before
        size = len(data)
        if not all(len(i.spans) == 1 and i.spans[0][0] == va and len(i.spans[0][1]) == size and i.after is None
                   and not i.unread and i.before == before and i.codes == first.codes and len(i.written) <= 1
                   for _, _, i in order):
            return None
        stop = va + size
        found = {}
        for translation, events, inputs in order:
            arguments, again = None, b""
            if inputs.written:  # the kernel arguments to write again (none: they are in place)
                ((view, start, end, again),) = inputs.written
                arguments = view[start:end]
            found[inputs.spans[0][1]] = (translation, events, arguments, again, inputs.copied, inputs.arguments)

        def take(memo: DispatchMemo, same_events: Callable[[Events], bool]) -> T | None:
            if memo.registers != before or memo._loaded.get(obj) != code:
                return None
            low, high, view = memo._memory.last  # RecordedMemory.read, written out: the hot path of --loop
            hit = found.get(view[va - low:stop - low].tobytes() if low <= va and stop <= high else memo._read(va, size))
            if hit is None:
                return None
            translation, events, arguments, again, copied, dispatched = hit
            if events and not same_events(events):
                return None
            if arguments is not None:
                arguments[:] = again
            memo.copied, memo.arguments = copied, dispatched
            return translation
        return take
