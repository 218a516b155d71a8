"""The NT_AMDGPU_METADATA note: a msgpack map (amdhsa.version, amdhsa.target, amdhsa.kernels) read into typed
dataclasses. The note comes from an untrusted file, so every key's type is checked and a bad one is named.

Source: LLVM AMDGPUUsage, "Code Object V3 Metadata" and its V4/V5 additions (llvm/llvm-project@001388cf:
llvm/docs/AMDGPUUsage.rst); amd-facts §7 and §11 list the keys and the v5 hidden arguments.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from kfdtrace.driver.code_object_errors import BadMetadata

__all__ = ["EXPLICIT_VALUE_KINDS", "KernelArg", "KernelMetadata", "Metadata", "parse_metadata"]

# value_kind of the arguments a caller passes; every other kind is "hidden_*", filled by the runtime.
EXPLICIT_VALUE_KINDS = frozenset({"by_value", "global_buffer", "dynamic_shared_pointer", "sampler", "image", "pipe",
                                  "queue"})
_MAX_INT = 1 << 64


def _need(d: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any = ...) -> Any:
    """d[key] checked to be of `kind` (ints non-negative and 64-bit); `default` when absent, if given."""
    if key not in d:
        if default is ...:
            raise BadMetadata(f"{where}: no {key}")
        return default
    v = d[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    ok = isinstance(v, kinds) and not (isinstance(v, bool) and bool not in kinds)
    if ok and isinstance(v, int) and not isinstance(v, bool):
        ok = 0 <= v < _MAX_INT
    if not ok:
        names = " or ".join("non-negative integer" if k is int else k.__name__ for k in kinds)
        raise BadMetadata(f"{where}: {key} is {v!r:.60}, not a {names}")
    return v


def _flag(d: Mapping[str, Any], key: str, where: str, default: bool | None) -> bool | None:
    """A boolean key; LLVM writes some (.workgroup_processor_mode) as the integers 0 and 1."""
    v = _need(d, key, (bool, int), where, default)
    if v not in (0, 1, None):
        raise BadMetadata(f"{where}: {key} is {v!r:.60}, not a boolean")
    return v if v is None else bool(v)


def _int_list(d: Mapping[str, Any], key: str, n: int, where: str) -> tuple[int, ...] | None:
    v = _need(d, key, list, where, None)
    if v is None:
        return None
    if len(v) != n or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < _MAX_INT for x in v):
        raise BadMetadata(f"{where}: {key} is {v!r:.60}, not {n} non-negative integers")
    return tuple(v)


# The hidden arguments that hold an address: a replay moves their recorded values (kernargs.HIDDEN gives them as
# null), and capture takes a dispatch to write through them (a printf buffer, say).
ADDRESS_HIDDEN = frozenset({
    "hidden_printf_buffer", "hidden_hostcall_buffer", "hidden_heap_v1", "hidden_default_queue",
    "hidden_completion_action", "hidden_multigrid_sync_arg", "hidden_queue_ptr", "hidden_private_base",
    "hidden_shared_base"})

@dataclass(frozen=True)
class KernelArg:
    """One kernel argument: where it goes in the kernarg segment and what it holds."""

    offset: int
    size: int
    value_kind: str
    name: str | None = None
    type_name: str | None = None
    address_space: str | None = None  # global, constant, local, private, generic, region (pointers only)
    pointee_align: int | None = None  # dynamic_shared_pointer: alignment of the LDS block
    access: str | None = None
    actual_access: str | None = None
    is_const: bool = False
    is_restrict: bool = False
    is_volatile: bool = False
    is_pipe: bool = False

    @property
    def read_only(self) -> bool:
        """A pointer the kernel never writes through: const, or read_only access in the metadata (the compiler's
        .actual_access where it gives one)."""
        return self.is_const or (self.actual_access or self.access) == "read_only"

    @property
    def hidden(self) -> bool:
        """A hidden argument, which the runtime fills (block counts, group sizes, ...)."""
        return self.value_kind not in EXPLICIT_VALUE_KINDS

    @classmethod
    def parse(cls, d: Any, where: str) -> KernelArg:
        if not isinstance(d, dict):
            raise BadMetadata(f"{where}: not a map")
        kind = _need(d, ".value_kind", str, where)
        if kind not in EXPLICIT_VALUE_KINDS and not kind.startswith("hidden_"):
            raise BadMetadata(f"{where}: unknown .value_kind {kind!r}")
        return cls(
            offset=_need(d, ".offset", int, where),
            size=_need(d, ".size", int, where),
            value_kind=kind,
            name=_need(d, ".name", str, where, None),
            type_name=_need(d, ".type_name", str, where, None),
            address_space=_need(d, ".address_space", str, where, None),
            pointee_align=_need(d, ".pointee_align", int, where, None),
            access=_need(d, ".access", str, where, None),
            actual_access=_need(d, ".actual_access", str, where, None),
            is_const=_flag(d, ".is_const", where, False),
            is_restrict=_flag(d, ".is_restrict", where, False),
            is_volatile=_flag(d, ".is_volatile", where, False),
            is_pipe=_flag(d, ".is_pipe", where, False),
        )


@dataclass(frozen=True)
class KernelMetadata:
    """One entry of amdhsa.kernels."""

    name: str
    symbol: str  # the kernel descriptor's symbol, "<name>.kd"
    args: tuple[KernelArg, ...]
    kernarg_segment_size: int
    kernarg_segment_align: int
    group_segment_fixed_size: int
    private_segment_fixed_size: int
    wavefront_size: int
    sgpr_count: int
    vgpr_count: int
    max_flat_workgroup_size: int
    agpr_count: int = 0
    sgpr_spill_count: int = 0
    vgpr_spill_count: int = 0
    uses_dynamic_stack: bool = False  # v5
    workgroup_processor_mode: bool | None = None  # v5, gfx10+
    uniform_work_group_size: bool = False  # v5: the grid is a whole number of work-groups
    reqd_workgroup_size: tuple[int, int, int] | None = None
    workgroup_size_hint: tuple[int, int, int] | None = None
    kind: str = "normal"
    language: str | None = None

    @functools.cached_property
    def explicit_args(self) -> tuple[KernelArg, ...]:
        """The arguments a caller passes, in order."""
        return tuple(a for a in self.args if not a.hidden)

    @functools.cached_property
    def by_value_words(self) -> tuple[int, ...]:
        """The offsets of the 8-byte aligned words of the kernarg segment that by-value arguments fill, each of one
        or of several (a 64-bit address may come as two 32-bit halves)."""
        filled = {at for a in self.args if a.value_kind == "by_value" for at in range(a.offset, a.offset + a.size)}
        return tuple(at for at in range(0, max(filled, default=-1) + 1, 8) if all(at + i in filled for i in range(8)))

    @functools.cached_property
    def hidden_args(self) -> Mapping[str, KernelArg]:
        """The hidden arguments by value_kind (hidden_block_count_x, hidden_group_size_x, ...); read it, do not
        change it (it is worked out once)."""
        return {a.value_kind: a for a in self.args if a.hidden}

    @classmethod
    def parse(cls, d: Any, index: int) -> KernelMetadata:
        where = f"metadata amdhsa.kernels[{index}]"
        if not isinstance(d, dict):
            raise BadMetadata(f"{where}: not a map")
        name = _need(d, ".name", str, where)
        where = f"metadata of kernel {name!r}"
        raw_args = _need(d, ".args", list, where, [])
        args = tuple(KernelArg.parse(a, f"{where}, argument {i}") for i, a in enumerate(raw_args))
        size = _need(d, ".kernarg_segment_size", int, where)
        align = _need(d, ".kernarg_segment_align", int, where)
        wave = _need(d, ".wavefront_size", int, where)
        if align & (align - 1) or not align:
            raise BadMetadata(f"{where}: .kernarg_segment_align {align} is not a power of two")
        if wave not in (32, 64):
            raise BadMetadata(f"{where}: .wavefront_size {wave} is neither 32 nor 64")
        _check_args(args, size, where)
        reqd = _int_list(d, ".reqd_workgroup_size", 3, where)
        hint = _int_list(d, ".workgroup_size_hint", 3, where)
        lang = _need(d, ".language", str, where, None)
        return cls(
            name=name,
            symbol=_need(d, ".symbol", str, where),
            args=args,
            kernarg_segment_size=size,
            kernarg_segment_align=align,
            group_segment_fixed_size=_need(d, ".group_segment_fixed_size", int, where),
            private_segment_fixed_size=_need(d, ".private_segment_fixed_size", int, where),
            wavefront_size=wave,
            sgpr_count=_need(d, ".sgpr_count", int, where),
            vgpr_count=_need(d, ".vgpr_count", int, where),
            max_flat_workgroup_size=_need(d, ".max_flat_workgroup_size", int, where),
            agpr_count=_need(d, ".agpr_count", int, where, 0),
            sgpr_spill_count=_need(d, ".sgpr_spill_count", int, where, 0),
            vgpr_spill_count=_need(d, ".vgpr_spill_count", int, where, 0),
            uses_dynamic_stack=_flag(d, ".uses_dynamic_stack", where, False),
            workgroup_processor_mode=_flag(d, ".workgroup_processor_mode", where, None),
            uniform_work_group_size=_flag(d, ".uniform_work_group_size", where, False),
            reqd_workgroup_size=reqd,  # type: ignore[arg-type]
            workgroup_size_hint=hint,  # type: ignore[arg-type]
            kind=_need(d, ".kind", str, where, "normal"),
            language=lang,
        )


def _check_args(args: tuple[KernelArg, ...], size: int, where: str) -> None:
    """Arguments lie inside the kernarg segment and do not overlap."""
    end = 0
    for i, a in sorted(enumerate(args), key=lambda ia: ia[1].offset):
        if a.offset < end:
            raise BadMetadata(f"{where}, argument {i}: offset {a.offset} overlaps the argument before it")
        end = a.offset + a.size
        if end > size:
            raise BadMetadata(f"{where}, argument {i}: bytes {a.offset}..{end - 1} run past "
                              f".kernarg_segment_size {size}")


@dataclass(frozen=True)
class Metadata:
    """The whole note: format version, target id ("amdgcn-amd-amdhsa--gfx942:sramecc+:xnack-"), kernels."""

    version: tuple[int, int]
    target: str
    kernels: tuple[KernelMetadata, ...]


def parse_metadata(raw: bytes) -> Metadata:
    """The note's msgpack payload as a Metadata; BadMetadata naming the key at fault."""
    try:
        doc = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        raise BadMetadata(f"metadata note is not valid msgpack ({type(e).__name__}: {str(e)[:80]})") from None
    if not isinstance(doc, dict):
        raise BadMetadata(f"metadata note holds a {type(doc).__name__}, not a map")
    version = _int_list(doc, "amdhsa.version", 2, "metadata")
    if version is None:
        raise BadMetadata("metadata: no amdhsa.version")
    if version[0] != 1:
        raise BadMetadata(f"metadata: amdhsa.version {version[0]}.{version[1]} is not 1.x (code object v3-v6)")
    target = _need(doc, "amdhsa.target", str, "metadata")
    kernels = tuple(KernelMetadata.parse(k, i) for i, k in enumerate(_need(doc, "amdhsa.kernels", list, "metadata")))
    names = [k.name for k in kernels]
    if len(set(names)) != len(names):
        raise BadMetadata(f"metadata: a kernel name appears twice in {names}")
    return Metadata(version, target, kernels)  # type: ignore[arg-type]
