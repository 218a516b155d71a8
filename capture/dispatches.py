"""Which buffers a kernel dispatch takes and may write: every global pointer among its kernel arguments (it may
write through all of them unless the code object's metadata says the argument is const or read-only), read from
the kernel arguments as the CPU wrote them; and the 8-byte words of its by-value arguments (a struct may hold
pointers), which the recorder takes as addresses where they land in a buffer.

The kernel is the one whose descriptor a packet names (the `kernel` tag: AQL's KERNEL_DISPATCH), or the one
whose entry point the queue's COMPUTE_PGM registers hold when a packet launches it (the `launches` tag: PM4's
DISPATCH_*); a PM4 kernel's arguments are at the address its user SGPRs carry in the kernarg_segment_ptr slot
the descriptor enables (COMPUTE_USER_DATA_*; AMDGPUUsage "Initial Kernel Execution State"). Kernels are known
from the code objects the driver loaded. A dispatch whose kernel or arguments cannot be read may write any
buffer, and says so.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from kfdtrace.capture.submissions import KERNEL, REGISTERS, Step
from kfdtrace.driver.code_object_errors import CodeObjectError
from kfdtrace.driver.code_object_metadata import ADDRESS_HIDDEN
from kfdtrace.driver.packets import Dialect
from kfdtrace.driver.pm4 import Pm4Dialect

if TYPE_CHECKING:
    from kfdtrace.driver.code_object import Kernel

ReadMemory = Callable[[int, int], bytes | None]
Taken = tuple[list[int], list[int], list[int]]  # a dispatch's pointers it may write through, all, by-value words
ANYTHING = None  # what a dispatch takes and writes when its kernel or its arguments cannot be read
UNKNOWN = "(a kernel no loaded code object holds)"
POINTER_KINDS = ADDRESS_HIDDEN | {"global_buffer"}  # the arguments a kernel may read and write through


@dataclass(frozen=True)
class Pointers:
    """The global pointers the dispatches of a submission take: `writes`, (position where the dispatch ends,
    address) of each they may write through, positions from the start of the ring bytes; `reads`, the same of
    every one (a kernel may read through any); `values`, the same of the words of its by-value arguments."""

    writes: tuple[tuple[int, int], ...] = ()
    reads: tuple[tuple[int, int], ...] = ()
    values: tuple[tuple[int, int], ...] = ()


class Loaded(NamedTuple):
    """A kernel of a loaded code object, with what its dispatches' arguments are read for, worked out once (a kernel
    has a score of hidden arguments to pass over): its kernarg segment's size, the (offset, read-only) of each
    global pointer argument, and the offsets of the 8-byte aligned words of its by-value arguments."""

    kernel: Kernel
    kernarg_size: int
    pointers: tuple[tuple[int, bool], ...]  # the hidden arguments holding an address too, as writable (campaign 106)
    words: tuple[int, ...]

    @property
    def name(self) -> str:
        return self.kernel.name

    @classmethod
    def of(cls, kernel: Kernel) -> Loaded:
        args = kernel.metadata.args
        return cls(kernel, kernel.metadata.kernarg_segment_size,
                   tuple((a.offset, a.read_only and a.value_kind == "global_buffer") for a in args
                         if a.value_kind in POINTER_KINDS and a.size == 8),
                   kernel.metadata.by_value_words)


class Dispatches:
    """The kernels loaded so far, and each queue's SH registers as its packets set them."""

    def __init__(self, counts: Counter[str] | None = None) -> None:
        self.by_descriptor: dict[int, Loaded] = {}
        self.by_entry: dict[int, Loaded] = {}
        self.registers: dict[int, dict[str, int]] = {}  # queue id -> SH register name -> value
        self.counts: Counter[str] = Counter() if counts is None else counts  # dispatches by kernel name

    def loaded(self, va: int, data: bytes, target: str) -> None:
        """A code object loaded with its image at `va`."""
        from kfdtrace.driver.code_object import load  # (ELF parsing: a tenth of a second to import, for kernels only)

        try:
            obj = load(data, target)
        except (CodeObjectError, ValueError):
            return  # its dispatches will say they may write anything
        for k in obj.kernels.values():
            self.by_descriptor[va + k.descriptor_offset] = self.by_entry[va + k.entry_offset] = Loaded.of(k)

    def pointers(self, queue: int, dialect: Dialect, steps: Iterable[Step], read: ReadMemory) -> Pointers | None:
        """The pointers the dispatches among a submission's `steps` (Plan.steps) take; ANYTHING when one of them may
        take any buffer."""
        regs = self.registers.setdefault(queue, {})
        writes: list[tuple[int, int]] = []
        reads: list[tuple[int, int]] = []
        values: list[tuple[int, int]] = []
        for end, what, a, b in steps:
            if what == REGISTERS:
                regs.update(zip(a, b, strict=True))
                continue
            if what == KERNEL:
                found = _pointers(self._count(self.by_descriptor.get(a)), b, read)
            else:
                found = self._launched(dialect, regs, read)
            if found is ANYTHING:
                return ANYTHING
            writes += [(end, a) for a in found[0]]
            reads += [(end, a) for a in found[1]]
            values += [(end, a) for a in found[2]]
        return Pointers(tuple(writes), tuple(reads), tuple(values))

    def _launched(self, dialect: Dialect, regs: dict[str, int], read: ReadMemory) -> Taken | None:
        """The pointers the kernel the registers set up may write through, and all it takes (a PM4 dispatch)."""
        entry = dialect.entry(regs) if isinstance(dialect, Pm4Dialect) else None
        kernel = self.by_entry.get(entry) if entry is not None else None
        if self._count(kernel) is None:
            return ANYTHING
        table = dialect.registers
        at = 0
        for name, count in kernel.kernel.descriptor.user_sgprs:
            if name == "kernarg_segment_ptr":
                words = [regs.get(r.name) for r in table.user_data[at:at + 2]]
                if len(words) < 2 or None in words:
                    return ANYTHING
                return _pointers(kernel, words[0] | words[1] << 32, read)
            at += count
        return [], [], []  # no kernel arguments: it takes no pointer

    def _count(self, kernel: Loaded | None) -> Loaded | None:
        self.counts[kernel.name if kernel is not None else UNKNOWN] += 1
        return kernel


def _pointers(kernel: Loaded | None, kernargs: int, read: ReadMemory) -> Taken | None:
    """The global pointers among `kernel`'s arguments at `kernargs` it may write through, all of them, and the
    words of its by-value arguments (but zeros)."""
    if kernel is None:
        return ANYTHING
    if not kernel.pointers and not kernel.words:
        return [], [], []
    data = read(kernargs, kernel.kernarg_size) if kernargs else None
    if data is None:
        return ANYTHING
    pointers = [(int.from_bytes(data[at:at + 8], "little"), read_only) for at, read_only in kernel.pointers
                if at + 8 <= len(data)]
    words = [int.from_bytes(data[at:at + 8], "little") for at in kernel.words if at + 8 <= len(data)]
    return [v for v, read_only in pointers if v and not read_only], [v for v, _ in pointers if v], \
        [v for v in words if v]
