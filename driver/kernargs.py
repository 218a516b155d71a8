"""A dispatch's shape and its kernel argument segment, laid out from the code object's metadata.

    launch = Launch.of(grid=(1000,), block=(256,))               # grid in work-items, as AQL's grid_size
    args = pack(kernel.metadata, [out_buf, in_buf, np.uint32(1000), Local(1024)], launch)
    args.data                                                     # kernarg_segment_size bytes
    args.group_segment_size                                       # static + dynamic LDS per workgroup

Explicit arguments come in kernel order: a Buffer (or a GPU address) for a global pointer, a numpy scalar or a
Python int/float for a by-value scalar (numpy arrays and bytes for by-value vectors and structs), Local(nbytes)
for a dynamic __local pointer. Hidden arguments are filled from one table by value_kind (code object v5 layout:
LLVM AMDGPUUsage "Code Object V5 Metadata" and amd-facts §11): block counts count whole workgroups only, the
remainders give the partial one.

A replay rewrites a recorded segment for the build of the same kernel it loads (perhaps for another GPU):

    args = repack(recorded.metadata, data, loaded.metadata, launch, group_segment_size, move)
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from kfdtrace.driver.code_object_metadata import ADDRESS_HIDDEN, KernelArg, KernelMetadata

__all__ = ["ADDRESS_HIDDEN", "HIDDEN", "KernargError", "Kernargs", "Launch", "Local", "Pointer",
           "PointerOutsideBuffers", "pack", "pointers", "repack"]

MAX_GRID = (1 << 32) - 1  # AQL grid_size fields are u32 work-item counts
MAX_BLOCK = 1024  # work-items per workgroup the hardware dispatches (AQL workgroup_size fields are u16)
DEFAULT_LDS_ALIGN = 4


class KernargError(ValueError):
    """Arguments that do not fit the kernel's signature, or a launch shape the hardware cannot dispatch."""


class Pointer(NamedTuple):
    """A global pointer argument of a kernarg segment: its index among the explicit arguments, the argument, and
    the address it holds."""

    index: int
    arg: KernelArg
    value: int


class PointerOutsideBuffers(KernargError):
    """A recorded pointer argument that lies in no recorded buffer: a replay cannot tell where it should point."""

    @classmethod
    def of(cls, kernel: KernelMetadata, pointer: Pointer, why: str = "outside every recorded buffer") -> \
            PointerOutsideBuffers:
        """The error for `pointer`, which points `why` ("outside every recorded buffer", or where it does)."""
        return cls(f"{_where(kernel, pointer.index, pointer.arg)}: {pointer.value:#x} points {why}")


@dataclass(frozen=True)
class Local:
    """A dynamic __local argument: `nbytes` of LDS for each workgroup."""

    nbytes: int


@dataclass(frozen=True)
class Launch:
    """Grid (work-items, as AQL's grid_size) and workgroup size, both in three dimensions; `dims` is how many
    the caller gave (AQL's setup dimensions, the kernel's hidden_grid_dims)."""

    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    dims: int

    @classmethod
    def of(cls, grid: Sequence[int] | int, block: Sequence[int] | int) -> Launch:
        """A launch of `grid` work-items in workgroups of `block` (1-3 dimensions each, missing ones 1)."""
        g = (grid,) if isinstance(grid, int) else tuple(grid)
        b = (block,) if isinstance(block, int) else tuple(block)
        if not 1 <= len(g) <= 3 or len(b) > len(g):
            raise KernargError(f"grid {g} must have 1-3 dimensions and block {b} no more than it")
        dims = len(g)
        g3, b3 = (*g, 1, 1)[:3], (*b, 1, 1)[:3]
        if not all(isinstance(x, int | np.integer) and 0 < x <= MAX_GRID for x in g3):
            raise KernargError(f"grid {g}: each dimension must be a whole number of work-items in 1..{MAX_GRID}")
        if not all(isinstance(x, int | np.integer) and 0 < x for x in b3) or math.prod(map(int, b3)) > MAX_BLOCK:
            raise KernargError(f"block {b}: each dimension must be positive and the workgroup at most "
                               f"{MAX_BLOCK} work-items")
        return cls(tuple(map(int, g3)), tuple(map(int, b3)), dims)

    @property
    def work_items(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]

    @property
    def workgroup_size(self) -> int:
        return self.block[0] * self.block[1] * self.block[2]

    @property
    def groups(self) -> tuple[int, int, int]:
        """Workgroups per dimension, the partial last one included."""
        return tuple(-(-g // b) for g, b in zip(self.grid, self.block, strict=True))


@dataclass(frozen=True)
class Kernargs:
    """A kernarg segment ready to copy to GPU memory, and the LDS each workgroup needs."""

    data: bytes
    align: int
    group_segment_size: int
    dynamic_lds: int


def _full(axis: int) -> Callable[[Launch, int], int]:
    return lambda launch, lds: launch.grid[axis] // launch.block[axis]


def _size(axis: int) -> Callable[[Launch, int], int]:
    return lambda launch, lds: launch.block[axis]


def _remainder(axis: int) -> Callable[[Launch, int], int]:
    return lambda launch, lds: launch.grid[axis] % launch.block[axis]


def _zero(launch: Launch, lds: int) -> int:
    return 0


# value_kind -> its value for a launch (and the dynamic LDS bytes). The services kfdtrace does not provide are
# null pointers, so a kernel that uses them faults on the address instead of reading garbage: printf and hostcall
# buffers, the device-side malloc heap, the device enqueue queue, multigrid sync; private/shared_base and
# queue_ptr are only read on gfx8 (AMDGPUUsage), global offsets are 0 (no offset dispatches).
HIDDEN: dict[str, Callable[[Launch, int], int]] = {
    "hidden_block_count_x": _full(0), "hidden_block_count_y": _full(1), "hidden_block_count_z": _full(2),
    "hidden_group_size_x": _size(0), "hidden_group_size_y": _size(1), "hidden_group_size_z": _size(2),
    "hidden_remainder_x": _remainder(0), "hidden_remainder_y": _remainder(1), "hidden_remainder_z": _remainder(2),
    "hidden_grid_dims": lambda launch, lds: launch.dims,
    "hidden_dynamic_lds_size": lambda launch, lds: lds,
    **dict.fromkeys((
        "hidden_global_offset_x", "hidden_global_offset_y", "hidden_global_offset_z", "hidden_none",
        "hidden_printf_buffer", "hidden_hostcall_buffer", "hidden_multigrid_sync_arg", "hidden_heap_v1",
        "hidden_default_queue", "hidden_completion_action", "hidden_private_base", "hidden_shared_base",
        "hidden_queue_ptr"), _zero),
}
_FLOATS = {2: "<e", 4: "<f", 8: "<d"}
FLOAT_TYPES = frozenset({"half", "float", "double"})  # metadata .type_name of the floating-point scalars
INT_TYPES = frozenset({"char", "uchar", "short", "ushort", "int", "uint", "long", "ulong", "bool", "size_t"})


def _where(kernel: KernelMetadata, i: int, arg: KernelArg) -> str:
    return f"{kernel.name} argument {i} ({arg.name or arg.value_kind}, {arg.type_name or f'{arg.size} bytes'})"


def _scalar(value: object, arg: KernelArg, where: str) -> bytes:
    """A by-value argument's bytes: numpy values keep their own representation, Python numbers take the
    argument's size (and, for floats, its IEEE format)."""
    is_float, is_int = arg.type_name in FLOAT_TYPES, arg.type_name in INT_TYPES
    if isinstance(value, np.generic | np.ndarray):
        kind = np.asarray(value).dtype.kind
        if is_float and kind != "f" or is_int and kind not in "iub":
            raise KernargError(f"{where}: a numpy {np.asarray(value).dtype} value for a {arg.type_name}")
        raw = np.ascontiguousarray(value).tobytes()
    elif isinstance(value, bytes | bytearray):
        raw = bytes(value)
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise KernargError(f"{where}: give a number, a numpy value or bytes, not {type(value).__name__}")
    elif isinstance(value, float) or is_float:
        if is_int or arg.size not in _FLOATS:
            raise KernargError(f"{where}: a Python float cannot fill a {arg.type_name or f'{arg.size}-byte value'}")
        try:
            raw = struct.pack(_FLOATS[arg.size], value)
        except OverflowError:
            raise KernargError(f"{where}: {value} is out of range for a {arg.type_name or 'float'}") from None
    else:
        if not -(1 << (8 * arg.size - 1)) <= value < 1 << 8 * arg.size:
            raise KernargError(f"{where}: {value} does not fit {arg.size} bytes")
        raw = (value & ((1 << 8 * arg.size) - 1)).to_bytes(arg.size, "little")
    if len(raw) != arg.size:
        raise KernargError(f"{where}: the value has {len(raw)} bytes, the argument {arg.size}")
    return raw


def _pointer(value: object, where: str) -> bytes:
    va = getattr(value, "va", value)  # a driver Buffer, or a raw GPU address
    if isinstance(va, bool) or not isinstance(va, int | np.integer) or not 0 <= va < 1 << 64:
        raise KernargError(f"{where}: give a GPU buffer or a GPU address, not {type(value).__name__}")
    return int(va).to_bytes(8, "little")


def pack(kernel: KernelMetadata, args: Sequence[object], launch: Launch) -> Kernargs:
    """The kernarg segment of `kernel` for `args` (explicit arguments, in order) and `launch`."""
    explicit = kernel.explicit_args
    if len(args) != len(explicit):
        names = ", ".join(a.name or a.value_kind for a in explicit)
        raise KernargError(f"{kernel.name} takes {len(explicit)} arguments ({names}), {len(args)} given")
    _check_launch(kernel, launch)
    out = bytearray(kernel.kernarg_segment_size)
    lds = kernel.group_segment_fixed_size
    for i, (arg, value) in enumerate(zip(explicit, args, strict=True)):
        where = _where(kernel, i, arg)
        if arg.value_kind == "global_buffer":
            raw = _pointer(value, where)
        elif arg.value_kind == "by_value":
            raw = _scalar(value, arg, where)
        elif arg.value_kind == "dynamic_shared_pointer":
            if not isinstance(value, Local) or not isinstance(value.nbytes, int) or value.nbytes < 0:
                raise KernargError(f"{where}: give Local(nbytes) for a dynamic __local argument")
            raw, lds = _lds_block(arg, lds, value.nbytes)
        else:
            raise KernargError(f"{where}: {arg.value_kind} arguments are not supported")
        _place(out, arg, raw, where)
    return _finish(kernel, out, launch, lds)


def pointers(kernel: KernelMetadata, data: bytes) -> list[Pointer]:
    """The global pointer arguments of `kernel` and the addresses its kernarg segment `data` gives them, null ones
    included."""
    data = _recorded(kernel, data)
    return [Pointer(i, a, int.from_bytes(data[a.offset:a.offset + a.size], "little"))
            for i, a in enumerate(kernel.explicit_args) if a.value_kind == "global_buffer"]


def repack(src: KernelMetadata, data: bytes, dst: KernelMetadata, launch: Launch, group_segment_size: int,
           move: Callable[[int], int | None]) -> Kernargs:
    """The kernarg segment `data`, recorded for the build `src` of a kernel, rewritten for its build `dst` (the same
    kernel, perhaps for another GPU): pointers moved by `move` (a recorded address to the replay's; None when no
    recorded buffer holds it), scalars copied, dynamic __local blocks (their sizes recovered from the recorded
    offsets and `group_segment_size`, the dispatch's LDS bytes) and hidden arguments laid out for `dst` and `launch`.
    """
    pairs = matched(src, dst)
    _check_launch(dst, launch)
    data = _recorded(src, data)
    blocks = _lds_sizes(src, data, group_segment_size)
    out = bytearray(dst.kernarg_segment_size)
    lds = dst.group_segment_fixed_size
    for i, (was, arg) in enumerate(pairs):
        raw = data[was.offset:was.offset + was.size]
        if arg.value_kind == "global_buffer":
            recorded = Pointer(i, was, int.from_bytes(raw, "little"))
            raw = _moved(src, recorded, move).to_bytes(arg.size, "little")
        elif arg.value_kind == "dynamic_shared_pointer":
            raw, lds = _lds_block(arg, lds, blocks[i])
        elif arg.value_kind != "by_value":
            raise KernargError(f"{_where(dst, i, arg)}: {arg.value_kind} arguments are not supported")
        out[arg.offset:arg.offset + arg.size] = raw  # arg.size bytes, inside the segment (the metadata was checked)
    return _finish(dst, out, launch, lds, _moved_addresses(src, data, dst, move))


def _check_launch(kernel: KernelMetadata, launch: Launch) -> None:
    """KernargError unless `kernel` was compiled for workgroups of `launch`'s size."""
    if launch.workgroup_size > kernel.max_flat_workgroup_size:
        raise KernargError(f"{kernel.name}: workgroup of {launch.workgroup_size} work-items; the kernel was "
                           f"compiled for at most {kernel.max_flat_workgroup_size}")
    if kernel.reqd_workgroup_size and launch.block != kernel.reqd_workgroup_size:
        raise KernargError(f"{kernel.name} requires workgroups of {kernel.reqd_workgroup_size}, not {launch.block}")


def _lds_block(arg: KernelArg, lds: int, nbytes: int) -> tuple[bytes, int]:
    """A dynamic __local argument's value, the LDS offset of its block placed after `lds` bytes (aligned), and the
    LDS bytes used once its `nbytes` follow."""
    align = arg.pointee_align or DEFAULT_LDS_ALIGN
    offset = -(-lds // align) * align
    return offset.to_bytes(arg.size, "little"), offset + nbytes


def _finish(kernel: KernelMetadata, out: bytearray, launch: Launch, lds: int,
            addresses: Mapping[str, int] | None = None) -> Kernargs:
    """Fill `kernel`'s hidden arguments into `out` (those in `addresses` with its value, the rest from HIDDEN) for
    a launch using `lds` bytes of LDS per workgroup; `out` is the segment, which every argument lies inside
    (code_object_metadata checked the metadata so)."""
    dynamic = lds - kernel.group_segment_fixed_size
    addresses = addresses or {}
    for arg in kernel.args:
        if not arg.hidden:
            continue
        fill = HIDDEN.get(arg.value_kind)
        if fill is None:
            raise KernargError(f"{kernel.name} needs hidden argument {arg.value_kind}, which kfdtrace does not "
                               f"provide")
        value = addresses[arg.value_kind] if arg.value_kind in addresses else fill(launch, dynamic)
        out[arg.offset:arg.offset + arg.size] = value.to_bytes(arg.size, "little")
    return Kernargs(bytes(out), max(kernel.kernarg_segment_align, 16), lds, dynamic)


def _describe(arg: KernelArg) -> str:
    kind = f"{arg.value_kind} {arg.type_name}" if arg.type_name else arg.value_kind
    return f"{arg.name or 'unnamed'}: {kind} of {arg.size} bytes"


def matched(src: KernelMetadata, dst: KernelMetadata) -> list[tuple[KernelArg, KernelArg]]:
    """The explicit arguments of two builds of a kernel paired by position; KernargError unless each pair has the
    same kind and size."""
    a, b = src.explicit_args, dst.explicit_args
    if len(a) != len(b):
        names = [", ".join(x.name or x.value_kind for x in args) for args in (a, b)]
        raise KernargError(f"{dst.name} was recorded with {len(a)} arguments ({names[0]}); the build loaded for the "
                           f"replay takes {len(b)} ({names[1]})")
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if (x.value_kind, x.size) != (y.value_kind, y.size):
            raise KernargError(f"{dst.name} argument {i} differs between the builds: recorded {_describe(x)}; "
                               f"loaded for the replay {_describe(y)}")
    return list(zip(a, b, strict=True))


def _recorded(kernel: KernelMetadata, data: bytes) -> bytes:
    """`data` as bytes, checked to hold `kernel`'s whole kernarg segment."""
    if len(data) < kernel.kernarg_segment_size:
        raise KernargError(f"{kernel.name}: the recorded kernarg segment has {len(data)} bytes, the kernel's "
                           f"{kernel.kernarg_segment_size}")
    return bytes(data)


def _moved(kernel: KernelMetadata, pointer: Pointer, move: Callable[[int], int | None]) -> int:
    """A recorded pointer's address for the replay: null stays null, an address no buffer holds is refused."""
    if not pointer.value:
        return 0
    to = move(pointer.value)
    if to is None:
        raise PointerOutsideBuffers.of(kernel, pointer)
    return to


def _lds_sizes(kernel: KernelMetadata, data: bytes, total: int) -> dict[int, int]:
    """Each dynamic __local argument's block size by explicit index: the distance from its recorded offset to the
    next block's or to `total`, the dispatch's LDS bytes (so padding counts to the block before it)."""
    offsets = sorted((int.from_bytes(data[a.offset:a.offset + a.size], "little"), i)
                     for i, a in enumerate(kernel.explicit_args) if a.value_kind == "dynamic_shared_pointer")
    blocks = {}
    for j, (offset, i) in enumerate(offsets):
        end = offsets[j + 1][0] if j + 1 < len(offsets) else total
        if not kernel.group_segment_fixed_size <= offset <= end:
            raise KernargError(f"{_where(kernel, i, kernel.explicit_args[i])}: recorded LDS offset {offset} lies "
                               f"outside the dynamic LDS ({kernel.group_segment_fixed_size}..{total} bytes)")
        blocks[i] = end - offset
    return blocks


def _moved_addresses(src: KernelMetadata, data: bytes, dst: KernelMetadata,
                     move: Callable[[int], int | None]) -> dict[str, int]:
    """dst's hidden arguments that hold an address src recorded and `move` knows, by value_kind: the address
    moved. The others HIDDEN gives as null (kfdtrace provides none of those services)."""
    recorded = src.hidden_args
    out = {}
    for kind, arg in dst.hidden_args.items():
        was = recorded.get(kind)
        if kind not in ADDRESS_HIDDEN or was is None:
            continue
        value = int.from_bytes(data[was.offset:was.offset + was.size], "little")
        to = move(value) if value else None
        if to is not None and to < 1 << 8 * arg.size:
            out[kind] = to
    return out


def _place(out: bytearray, arg: KernelArg, raw: bytes, where: str) -> None:
    if arg.offset + len(raw) > len(out):
        raise KernargError(f"{where}: at offset {arg.offset} it runs past the {len(out)}-byte kernarg segment")
    out[arg.offset:arg.offset + len(raw)] = raw
