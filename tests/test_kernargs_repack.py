"""kernargs.repack: a recorded kernarg segment rewritten for another build of the same kernel (the corpus built for
gfx942 replayed with its gfx1100 build), and kernargs.pointers, which reads the recorded pointers."""

from __future__ import annotations

import dataclasses
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from kfdtrace.driver.code_object import load
from kfdtrace.driver.code_object_metadata import KernelArg, KernelMetadata
from kfdtrace.driver.kernargs import KernargError, Launch, Local, PointerOutsideBuffers, pack, pointers, repack

BUILT = Path(__file__).resolve().parent.parent / "driver" / "kernels" / "built"
DELTA = 0x10_0000_0000
A, B, C = 0x7F00_0000_1000, 0x7F00_0000_2000, 0x7F00_0000_3000


@cache
def metadata(target: str, kernel: str) -> KernelMetadata:
    return load((BUILT / f"corpus-{target}.co").read_bytes(), target).kernel(kernel).metadata


def move(va: int) -> int | None:
    """The replay's address of a recorded one: the recorded buffers lie between A and C + 0x1000."""
    return va + DELTA if A <= va < C + 0x1000 else None


def shifted(meta: KernelMetadata, by: int) -> KernelMetadata:
    """`meta` with every argument `by` bytes later (a build laying its segment out differently)."""
    args = tuple(dataclasses.replace(a, offset=a.offset + by) for a in meta.args)
    return dataclasses.replace(meta, args=args, kernarg_segment_size=meta.kernarg_segment_size + by)


def with_hidden(meta: KernelMetadata, kind: str, offset: int) -> KernelMetadata:
    """`meta` with one more 8-byte hidden argument (the corpus kernels use no printf or hostcall buffer)."""
    return dataclasses.replace(meta, args=(*meta.args, KernelArg(offset, 8, kind)))


LAUNCH = Launch.of(1000, 256)  # a partial last workgroup: remainders are not zero


def test_pointers_are_moved_and_scalars_and_hidden_arguments_are_those_of_the_loaded_build() -> None:
    src, dst = metadata("gfx942", "vector_add"), metadata("gfx1100", "vector_add")
    recorded = pack(src, [A, B, C, np.uint32(1000)], LAUNCH)
    got = repack(src, recorded.data, dst, LAUNCH, recorded.group_segment_size, move)
    assert got == pack(dst, [A + DELTA, B + DELTA, C + DELTA, np.uint32(1000)], LAUNCH)


def test_arguments_go_where_the_loaded_build_places_them() -> None:
    src = metadata("gfx942", "vector_add")
    dst = shifted(metadata("gfx1100", "vector_add"), 16)
    launch = Launch.of((64, 6), (16, 4))
    recorded = pack(src, [A, B, C, np.uint32(7)], launch)
    got = repack(src, recorded.data, dst, launch, recorded.group_segment_size, move)
    assert got == pack(dst, [A + DELTA, B + DELTA, C + DELTA, np.uint32(7)], launch)


@pytest.mark.parametrize("fixed", [0, 100])
def test_dynamic_lds_blocks_keep_their_sizes_after_the_loaded_builds_static_lds(fixed: int) -> None:
    src = metadata("gfx942", "dot_dynamic2")
    dst = dataclasses.replace(metadata("gfx1100", "dot_dynamic2"), group_segment_fixed_size=fixed)
    launch = Launch.of(512, 64)
    recorded = pack(src, [A, B, C, Local(10), Local(256)], launch)  # the second block is aligned past the first
    got = repack(src, recorded.data, dst, launch, recorded.group_segment_size, move)
    assert got == pack(dst, [A + DELTA, B + DELTA, C + DELTA, Local(10), Local(256)], launch)
    assert got.group_segment_size == fixed + 12 + 256 and got.dynamic_lds == 12 + 256


def test_the_last_dynamic_block_ends_at_the_dispatchs_lds() -> None:
    src, dst = metadata("gfx942", "reduce_max_dynamic"), metadata("gfx1100", "reduce_max_dynamic")
    launch = Launch.of(1024, 128)
    recorded = pack(src, [A, B, np.uint32(1000), Local(512)], launch)
    got = repack(src, recorded.data, dst, launch, recorded.group_segment_size, move)
    assert got == pack(dst, [A + DELTA, B + DELTA, np.uint32(1000), Local(512)], launch)


def test_a_recorded_lds_offset_past_the_dispatchs_lds_is_refused() -> None:
    src = metadata("gfx942", "reduce_max_dynamic")
    launch = Launch.of(1024, 128)
    recorded = pack(src, [A, B, np.uint32(1000), Local(512)], launch)
    static = dataclasses.replace(src, group_segment_fixed_size=64)  # the block at 0 would overlap its static LDS
    with pytest.raises(KernargError, match=r"argument 3 \(work.*LDS offset 0 lies outside the dynamic LDS \(64..600"):
        repack(static, recorded.data, src, launch, 600, move)


def test_a_null_pointer_stays_null() -> None:
    src, dst = metadata("gfx942", "vector_add"), metadata("gfx1100", "vector_add")
    recorded = pack(src, [A, 0, C, np.uint32(1)], LAUNCH)
    got = repack(src, recorded.data, dst, LAUNCH, 0, move)
    assert got == pack(dst, [A + DELTA, 0, C + DELTA, np.uint32(1)], LAUNCH)


def test_a_pointer_outside_every_buffer_is_refused_naming_the_argument() -> None:
    src, dst = metadata("gfx942", "vector_add"), metadata("gfx1100", "vector_add")
    recorded = pack(src, [A, 0xDEAD_0000, C, np.uint32(1)], LAUNCH)
    with pytest.raises(PointerOutsideBuffers, match=r"vector_add argument 1 \(b, .*0xdead0000 points outside every"):
        repack(src, recorded.data, dst, LAUNCH, 0, move)


def test_kernels_with_other_arguments_are_refused() -> None:
    src = metadata("gfx942", "vector_add")
    recorded = pack(src, [A, B, C, np.uint32(1)], LAUNCH)
    with pytest.raises(KernargError, match=r"recorded with 4 arguments \(a, b, c, n\).* takes 3 \(start, steps, n\)"):
        repack(src, recorded.data, metadata("gfx1100", "collatz"), LAUNCH, 0, move)
    dst = metadata("gfx1100", "vector_add")
    wider = dataclasses.replace(dst, args=tuple(dataclasses.replace(a, size=8) if a.name == "n" else a
                                                for a in dst.args))
    with pytest.raises(KernargError, match=r"argument 3 differs.*recorded n: by_value uint of 4 bytes; .* n: "
                                           r"by_value uint of 8 bytes"):
        repack(src, recorded.data, wider, LAUNCH, 0, move)


def test_a_short_recorded_segment_is_refused() -> None:
    src = metadata("gfx942", "vector_add")
    with pytest.raises(KernargError, match="recorded kernarg segment has 16 bytes, the kernel's 288"):
        repack(src, bytes(16), metadata("gfx1100", "vector_add"), LAUNCH, 0, move)


def test_hidden_addresses_are_moved_when_recorded_and_known_else_null() -> None:
    src = with_hidden(with_hidden(metadata("gfx942", "vector_add"), "hidden_printf_buffer", 104),
                      "hidden_hostcall_buffer", 112)
    dst = with_hidden(with_hidden(with_hidden(metadata("gfx1100", "vector_add"), "hidden_printf_buffer", 112),
                                  "hidden_hostcall_buffer", 120), "hidden_heap_v1", 128)
    data = bytearray(pack(src, [A, B, C, np.uint32(1)], LAUNCH).data)
    data[104:112] = (B + 8).to_bytes(8, "little")  # a printf buffer in a recorded buffer
    data[112:120] = (0xDEAD_0000).to_bytes(8, "little")  # a hostcall buffer in none
    got = repack(src, bytes(data), dst, LAUNCH, 0, move).data
    assert int.from_bytes(got[112:120], "little") == B + 8 + DELTA
    assert got[120:136] == bytes(16)  # unknown, and not recorded: null


def test_pointers_reads_each_global_pointer_argument() -> None:
    src = metadata("gfx942", "vector_add")
    found = pointers(src, pack(src, [A, 0, C, np.uint32(1)], LAUNCH).data)
    assert [(p.index, p.arg.name, p.value) for p in found] == [(0, "a", A), (1, "b", 0), (2, "c", C)]
