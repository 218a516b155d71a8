"""What every emulated queue engine shares: one thread per ring, executing the packets the doorbell hands it.

Packets are decoded with the same declarative definitions the driver builds them with; a subclass (the SDMA
engine, the PM4 command processor) maps each packet name to one handler. A handler's parameters name the
fields it reads (`payload`: the tail's bytes), which a function generated from the table passes straight from
the packet's dwords; a handler taking `p` gets the decoded Packet instead. What packets mean beyond their
layout comes from the table's tags: indirect buffers (`PacketDef.indirect`), memory polls (`.wait`) and
interrupts (`.event_field`) are executed here, once, for every dialect. A packet that touches memory no
buffer is mapped at raises a VM fault; a packet with no handler is a clear error. Either way the queue stops
with its read pointer on the offending packet, as hardware does.

Who executes: the thread that rings an idle engine's doorbell runs the new packets itself while each is
quick (a poll already satisfied, a copy of at most INLINE_BYTES, no indirect buffer, no packet of the
engine's `handed_off` set), so a small submission completes without waking a thread; at the first packet
that may wait or run long, the engine's own thread takes over from it. One of the two runs at a time, in
ring order, so what the GPU does is the same either way; only when it happens may be earlier.
"""

from __future__ import annotations

import ctypes
import functools
import inspect
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from kfdtrace.driver.emulator.memory import GpuVm, VmFault
from kfdtrace.driver.errors import EMULATOR_LOG, NOT_EMULATED
from kfdtrace.driver.packets import MAX_IB_DEPTH, Dialect, Packet, PacketDef, PacketError
from kfdtrace.driver.ring_queue import unwrapped
from kfdtrace.driver.sdma import POLL_COMPARE, AtomicOp
from kfdtrace.driver.syscalls import memory_view

if TYPE_CHECKING:
    from kfdtrace.driver.emulator.kfd import EmulatedMachine

log = logging.getLogger(EMULATOR_LOG)

POLL_MIN_S, POLL_MAX_S = 20e-6, 1e-3  # back-off bounds while a poll waits on memory only the CPU may write
INLINE_BYTES = 64 << 10  # the largest copy or fill the doorbell's caller executes itself

_WORDS = {32: ctypes.c_uint32, 64: ctypes.c_uint64}  # a polled word by its mask's width
_U64 = (1 << 64) - 1


def _signed(x: int) -> int:
    return x - (1 << 64) if x >> 63 else x


# TC_OP semantics on the old value, the packet's src_data and cmp_data (SDMA's ATOMIC and PM4's ATOMIC_MEM name
# the same codes). The _NORET codes change memory the same way (they only skip returning the old value), so both
# share one entry.
_ATOMIC_BY_NAME: dict[str, Callable[[int, int, int], int]] = {
    "SWAP64": lambda old, src, cmp: src,
    "CMPSWAP64": lambda old, src, cmp: src if old == cmp else old,
    "ADD64": lambda old, src, cmp: old + src,
    "SUB64": lambda old, src, cmp: old - src,
    "SMIN64": lambda old, src, cmp: old if _signed(old) <= _signed(src) else src,
    "UMIN64": lambda old, src, cmp: min(old, src),
    "SMAX64": lambda old, src, cmp: old if _signed(old) >= _signed(src) else src,
    "UMAX64": lambda old, src, cmp: max(old, src),
    "AND64": lambda old, src, cmp: old & src,
    "OR64": lambda old, src, cmp: old | src,
    "XOR64": lambda old, src, cmp: old ^ src,
    "INC64": lambda old, src, cmp: 0 if old >= src else old + 1,
    "DEC64": lambda old, src, cmp: src if old == 0 or old > src else old - 1,
}
_ATOMICS = {op: _ATOMIC_BY_NAME[op.name.removesuffix("_NORET")] for op in AtomicOp}


class QueueError(Exception):
    """A packet the engine cannot execute; the queue stops on it."""


class QueueStopped(QueueError):
    """A packet cut short by its queue's destroy: it did not complete."""


class NotEmulated(QueueError):
    """What stopped the queue is something the emulated GPU does not do (a packet, a field's value, an instruction):
    a limit of the emulator's, not a fault of the program's. It is logged with the record attribute NOT_EMULATED
    set, which a replay on the emulator reports as "cannot replay here" rather than a hang."""


Step = Callable[[tuple[int, ...], bytes], "int | bool | None"]  # (fixed-part dwords, tail bytes) -> result


def _never(raw: tuple[int, ...], payload: bytes) -> bool:
    return False


@functools.cache
def _operands(method: Callable, d: PacketDef) -> tuple[tuple[str, ...], frozenset[str]]:
    """The parameters of a handler method after `self`: the fields it reads, or ("p",) for the packet; and those
    of them to pass by name. A field with a default value is left out where `d` has no such field (a version
    without it); those after one left out are passed by name, as by position they would bind to it (campaign 73:
    sdma7's CONST_FILL `compress` reached the handler as v6's `sw`)."""
    params = list(inspect.signature(method).parameters.values())[1:]
    kept = [p.name for p in params if p.default is inspect.Parameter.empty or p.name in d.field_names]
    skipped = next((i for i, p in enumerate(params) if p.name not in kept), len(params))
    return tuple(kept), frozenset(p.name for p in params[skipped:] if p.name in kept)


def aligned(va: int, n: int) -> int:
    """`va`, if it is `n`-byte aligned; else QueueError. An engine's memory packets write, read and poll whole
    dwords (64-bit atomics whole qwords): what one does at an address the kernel never emits (sdma_v4_0.c
    emit_fence: BUG_ON(addr & 0x3)) is no result the emulator can vouch for."""
    if va % n:
        raise QueueError(f"address {va:#x} is not {n}-byte aligned, as the packet's {n}-byte accesses must be")
    return va


def _with_packet(d: PacketDef, fn: Callable[[Packet], int | bool | None]) -> Step:
    """A step calling `fn` with the packet made from its dwords (its offset counts from the packet itself)."""
    return lambda raw, payload: fn(Packet(d, 0, None, payload, raw))


class RingEngine:
    """The engine of one user-mode ring: read/write pointers counting `pointer_unit` bytes (SDMA bytes, PM4
    dwords), the doorbell's value being the 64-bit monotonic write pointer. The read pointer reported in memory
    is monotonic too, or ring-relative with `rptr_wraps`. Subclasses set `kind` (named in errors),
    `pointer_unit`, `rptr_wraps` and `handlers`."""

    kind = "ring"
    pointer_unit = 1
    rptr_wraps = False  # the read pointer reported in memory is ring-relative, not monotonic
    handed_off: frozenset[str] = frozenset()  # packets only the engine's thread runs (they may run for long)

    def __init__(self, machine: EmulatedMachine, vm: GpuVm, dialect: Dialect, queue_id: int,
                 ring_va: int, ring_size: int, rptr_va: int,
                 handlers: dict[str, Callable[[Packet], int | None]]):
        """The engine follows the doorbell's write pointer; the one in memory is the driver's bookkeeping."""
        self.machine, self.vm, self.dialect, self.queue_id = machine, vm, dialect, queue_id
        self.ring_size = ring_size
        self._rptr_mask = ring_size // self.pointer_unit - 1 if self.rptr_wraps else (1 << 64) - 1
        self.rptr_host = vm.translate(rptr_va, 8)  # where the engine reports its read pointer
        self._rptr_word = ctypes.c_uint64.from_address(self.rptr_host)
        self.ring_host = vm.translate(ring_va, ring_size)
        self._ring = memory_view(self.ring_host, ring_size)  # pinned while the queue lives
        self.rptr = 0  # bytes
        self.doorbell = 0  # bytes
        self.error: str | None = None
        # definition -> its handler called with the fields it names (an unlisted packet is not executed)
        self._steps: dict[PacketDef, Step] = {}
        for name, handler in handlers.items():
            if name in dialect:
                d = dialect[name]
                params, keywords = _operands(handler.__func__, d)  # handlers are the engine's own methods
                self._steps[d] = _with_packet(d, handler) if params == ("p",) else d.caller(handler, params, keywords)
        # definition -> whether the memory its `wait` tag names compares true now (a word as wide as its mask)
        self._waits: dict[PacketDef, Step] = {
            d: d.caller(functools.partial(self._compare, d.name, d.wait[3], _WORDS[d[d.wait[2]].width]), d.wait)
            for d in dialect if d.wait}
        # definition -> whether a doorbell's caller may execute it (None: always; see _quickness)
        self._quick: dict[PacketDef, Step | None] = {d: self._quickness(d) for d in dialect}
        self._ib_depth = 0  # indirect buffers being executed, one inside the other
        self._stop = False
        self._busy = False  # a thread (the engine's or a doorbell's caller) is executing packets
        # `with` on the lock itself: a Condition's own __enter__/__exit__ are Python calls, on every doorbell
        self._kick_lock = threading.Lock()
        self._kick = threading.Condition(self._kick_lock)
        self._rptr_word.value = 0
        self._thread = threading.Thread(target=self._run, name=f"{self.kind.split()[0].lower()}-q{queue_id}",
                                        daemon=True)
        self._thread.start()

    # -- doorbell side ------------------------------------------------------------------------------
    def ring(self, wptr: int) -> None:
        """The doorbell: `wptr` in pointer units. Runs the new packets in the caller's thread while they are
        quick, if the engine is idle (see the module docstring)."""
        with self._kick_lock:
            behind = wptr * self.pointer_unit < self.rptr and not (self.error or self._stop)
            if not behind:
                self.doorbell = wptr * self.pointer_unit
                if self._busy or self._stop or self.error:
                    self._kick.notify()
                    return
                self._busy = True
        if behind:  # the engine would run the stale bytes around the ring back to it
            self._stop_on(QueueError(f"the doorbell moved the write pointer to {wptr * self.pointer_unit:#x}, behind "
                                     f"the read pointer"), self.where())
            return
        self._drain(inline=True)

    def stop(self) -> None:
        with self._kick_lock:
            self._stop = True
            self._kick.notify_all()
        self.machine.memory_changed()
        if threading.current_thread() is not self._thread:
            with self._kick_lock:  # a doorbell's caller executing packets stops at the next one
                while self._busy:
                    self._kick.wait()
            self._thread.join()

    # -- engine side --------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._kick_lock:
                while not self._stop and (self.doorbell <= self.rptr or self.error or self._busy):
                    self._kick.wait()
                if self._stop:
                    return
                self._busy = True
            self._drain(inline=False)

    def _drain(self, inline: bool) -> None:
        """Execute packets up to the doorbell (again while it moves on); `inline`: in a doorbell's caller,
        which leaves the rest to the engine's thread at the first packet that is not quick."""
        handing_off = True  # if interrupted, whatever is left goes to the engine's thread
        try:
            while True:
                handing_off = self._execute_to(self.doorbell, inline)
                with self._kick_lock:
                    if handing_off or self.doorbell <= self.rptr or self.error or self._stop:
                        handing_off = handing_off or self._stop
                        break
        finally:
            with self._kick_lock:
                self._busy = False
                # wake the engine's thread for the rest, or stop() waiting for us: it may have come after the loop
                # saw no stop, and be waiting now
                if handing_off or self._stop:
                    self._kick.notify_all()

    def _execute_to(self, wptr: int, inline: bool) -> bool:
        """Execute the ring's packets up to `wptr`; True when `inline` stopped before one that is not quick."""
        stream, pos = b"", 0
        read, quick = self.dialect.read, self._quick
        try:
            stream = self._ring_bytes(self.rptr, wptr)
            while pos < len(stream) and not self._stop:
                d, raw, payload, size = read(stream, pos)
                if inline:
                    test = quick[d]
                    if test is not None and not test(raw, payload):
                        return True
                skip = self._execute_raw(d, raw, payload, size)
                if pos + size + skip > len(stream):
                    after = len(stream) - pos - size
                    raise QueueError(f"it skips {skip:#x} bytes after it, past the write pointer ({after:#x} bytes "
                                     f"were submitted after it): what the engine would skip is not there yet")
                pos += size + skip
                self._set_rptr(self.rptr + size + skip)
        except Exception as exc:  # an unsupported or malformed packet stops the queue, as on hardware
            if not self._stop:  # else the queue's destroy stopped it (a kernel it ran gives up): no error
                self._stop_on(exc, self._describe(stream, pos))
        return False

    def _stop_on(self, exc: Exception, what: str) -> None:
        """Stop the queue on the packet `what` names: a VM fault raises the memory exception event, anything
        else the hardware exception event. A queue being destroyed (a kernel it ran, cut short) says nothing."""
        if self._stop:
            return
        if isinstance(exc, VmFault):
            self._fail(f"{exc} by {what}")
            self.machine.report_vm_fault(exc)
        else:
            self._fail(f"{exc} ({what})", isinstance(exc, NotEmulated))
            self.machine.report_queue_error(self.vm.gpu_id)

    def _quickness(self, d: PacketDef) -> Step | None:
        """The test of whether a doorbell's caller may execute a packet of `d` (None: it always may): it cannot
        wait, and moves at most INLINE_BYTES."""
        if d.indirect is not None or d.name in self.handed_off:
            return _never
        if d.wait is not None:
            return self._waits[d]
        if d.split is not None:
            return d.caller(lambda count: count < INLINE_BYTES, (d.split[0],))
        return None

    def where(self) -> str:
        """The queue and the ring offset the engine is on, for error messages."""
        return f"{self.kind} queue {self.queue_id} ring offset {(self.rptr % self.ring_size):#x}"

    def _describe(self, stream: bytes, pos: int) -> str:
        where = self.where()
        try:
            return f"{self.dialect.decode(stream, pos)} at {where}"
        except PacketError:
            return where

    def _fail(self, message: str, not_emulated: bool = False) -> None:
        self.error = message
        log.error("%s", message, extra={NOT_EMULATED: not_emulated})

    def _ring_bytes(self, start: int, end: int) -> bytes:
        """The ring's bytes from pointer `start` to `end`, unwrapped."""
        size = self.ring_size
        if end - start > size:
            raise QueueError(f"write pointer {end:#x} is more than a ring ({size:#x}) ahead of {start:#x}")
        return unwrapped(self._ring, start, end - start)

    def _set_rptr(self, value: int) -> None:
        self.rptr = value
        self._rptr_word.value = value // self.pointer_unit & self._rptr_mask

    def _execute(self, packet: Packet) -> int:
        """Run one decoded packet; the bytes of following packets it makes the engine skip (a conditional)."""
        return self._execute_raw(packet.defn, packet.dwords, packet.payload, packet.size)

    def _execute_raw(self, d: PacketDef, raw: tuple[int, ...], payload: bytes, size: int) -> int:
        """Run the packet of `d` with fixed-part dwords `raw`, tail `payload`, `size` bytes in all; the bytes of
        following packets it makes the engine skip (a conditional)."""
        step = self._steps.get(d)
        if step is None:
            raise NotEmulated(f"the emulated {self.kind} engine does not execute {d.name}")
        return step(raw, payload) or 0

    # -- what the tags say ------------------------------------------------------------------------------
    def _nop(self) -> None:
        pass

    def _indirect(self, p: Packet) -> None:
        """Run the packets of an indirect buffer (the packet's `indirect` tag names its address and size)."""
        addr_field, size_field = p.defn.indirect
        base = p.fields[addr_field]
        if self._ib_depth >= MAX_IB_DEPTH:
            raise QueueError(f"indirect buffers nest more than {MAX_IB_DEPTH} deep (at {base:#x})")
        n = p.fields[size_field] * 4
        with self.vm.access(base, n) as host:
            ib = ctypes.string_at(host, n)
        self._ib_depth += 1
        try:
            pos, read = 0, self.dialect.read
            while pos < n:
                d, raw, payload, size = read(ib, pos)
                pos += size + self._execute_raw(d, raw, payload, size)
        finally:
            self._ib_depth -= 1

    def _poll(self, p: Packet) -> None:
        """Wait until the polled dword compares true (the packet's `wait` tag: address, ref, mask, function).
        GPU writers notify at once; CPU stores are seen at the next poll, like the hardware's poll interval."""
        polled, raw, payload = self._waits[p.defn], p.dwords, p.payload
        delay = POLL_MIN_S
        while not polled(raw, payload):  # looked up every time: the buffer may be freed
            if self._stop:  # the queue's destroy: the wait did not pass, its read pointer stays on it
                raise QueueStopped(f"{p.name} at {self.where()} still waited when its queue was destroyed")
            self.machine.wait_memory_change(delay)
            delay = min(delay * 2, POLL_MAX_S)

    def _compare(self, name: str, func_field: str, word: type[ctypes.c_uint32 | ctypes.c_uint64], addr: int | None,
                 ref: int, mask: int, func: int) -> bool:
        """Whether the `word` at `addr` a `name` packet polls compares true now (the operands its `wait` tag
        names; `addr` None: the packet polls a register)."""
        if addr is None:
            raise NotEmulated(f"{name} polling a register, not memory, is not emulated")
        compare = POLL_COMPARE.get(func)
        if compare is None:
            raise QueueError(f"{name} {func_field}={func} is reserved")
        return compare(self.vm.load(aligned(addr, ctypes.sizeof(word)), word) & mask, ref)

    def _atomic64(self, what: str, code: int, addr: int, src: int, cmp: int) -> None:
        """The 64-bit TC atomic `code` (an sdma.AtomicOp) on the word at addr; `what` names the packet's field."""
        op = _ATOMICS.get(code)
        if op is None:
            raise NotEmulated(f"{what}={code:#x} is not one of the 64-bit TC_OPs the emulated engine executes")
        with self.vm.access(aligned(addr, 8), 8, write=True) as host, self.machine.atomic_lock:
            target = ctypes.c_uint64.from_address(host)
            target.value = op(target.value, src, cmp) & _U64
        self.machine.memory_changed()

    def _interrupt(self, p: Packet) -> None:
        """The interrupt whose context carries a KFD event id (the packet's `event` tag), if the packet raises one."""
        event = p.defn.event_of(p.fields)
        if event is not None:
            self.machine.interrupt(event)

    def _read32(self, va: int) -> int:
        """The dword at GPU address va."""
        return self.vm.load(aligned(va, 4), ctypes.c_uint32)

    def _write(self, va: int, data: bytes) -> None:
        """Write bytes at GPU address va (dword-aligned), and wake the engines polling memory."""
        with self.vm.access(aligned(va, 4), len(data), write=True) as dst:
            ctypes.memmove(dst, data, len(data))
        self.machine.memory_changed()
