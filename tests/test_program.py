"""Loading code objects on a device (device.load) and laying out kernel arguments from their metadata."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest

from kfdtrace.driver import System
from kfdtrace.driver.code_object import load
from kfdtrace.driver.code_object_errors import UnknownKernel, WrongTarget
from kfdtrace.driver.kernargs import KernargError, Launch, Local, pack

BUILT = os.path.join(os.path.dirname(__file__), "..", "driver", "kernels", "built")
TARGETS = ["gfx90a", "gfx942", "gfx1030", "gfx1100", "gfx1201"]


def corpus(target: str) -> str:
    return os.path.join(BUILT, f"corpus-{target}.co")


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("source", ["object", "bundle"])
def test_a_program_is_its_relocated_image_in_executable_memory(target, source):
    path = corpus(target) if source == "object" else os.path.join(BUILT, "corpus.hipfb")
    with System.open(emulate=target) as system:
        program = system.devices[0].load(path)
        k = program.kernel("vector_add")
        buf = program.buffer
        assert buf.va <= k.descriptor_address < k.entry_address < buf.va + buf.size
        assert k.descriptor_address % 64 == 0 and k.entry_address % 256 == 0
        assert buf.read(0, program.code.image_size) == program.code.image(buf.va)
        assert program.code.target.name == target
        with pytest.raises(UnknownKernel, match="vector_add"):
            program.kernel("no_such_kernel")
        program.free()


def test_a_code_object_for_another_target_is_refused_naming_both():
    with System.open(emulate="gfx942") as system, pytest.raises(WrongTarget, match="gfx1100.*gfx942"):
        system.devices[0].load(corpus("gfx1100"))


def _u(data: bytes, offset: int, size: int) -> int:
    return int.from_bytes(data[offset:offset + size], "little")


def _hidden(kernel, data: bytes) -> dict[str, int]:
    return {a.value_kind: _u(data, a.offset, a.size) for a in kernel.args if a.hidden}


@pytest.mark.parametrize("target", TARGETS)
def test_explicit_and_hidden_arguments_land_where_the_metadata_says(target):
    k = load(corpus(target), target).kernel("vector_add").metadata
    launch = Launch.of(grid=(1000,), block=(256,))
    args = pack(k, [0x1000, 0x2000, 0x3000, np.uint32(1000)], launch)
    assert len(args.data) == k.kernarg_segment_size
    a, b, c, n = k.explicit_args
    assert [_u(args.data, x.offset, 8) for x in (a, b, c)] == [0x1000, 0x2000, 0x3000]
    assert _u(args.data, n.offset, 4) == 1000
    hidden = _hidden(k, args.data)
    # whole workgroups only in the block counts; the partial one is the remainder (AMDGPUUsage v5)
    def axis(d: str) -> tuple[int, int, int]:
        return hidden[f"hidden_block_count_{d}"], hidden[f"hidden_remainder_{d}"], hidden[f"hidden_group_size_{d}"]

    assert axis("x") == (3, 232, 256) and axis("y") == (1, 0, 1)
    assert hidden["hidden_grid_dims"] == 1
    assert all(v == 0 for kind, v in hidden.items() if kind.startswith("hidden_global_offset"))
    assert args.group_segment_size == k.group_segment_fixed_size and args.dynamic_lds == 0


def test_three_dimensional_launches_fill_every_dimension():
    k = load(corpus("gfx1100"), "gfx1100").kernel("grid_info").metadata
    launch = Launch.of(grid=(10, 7, 5), block=(4, 2, 2))
    assert launch.groups == (3, 4, 3)
    explicit = [0x1000 * (i + 1) if a.value_kind == "global_buffer" else np.uint32(7)
                for i, a in enumerate(k.explicit_args)]
    hidden = _hidden(k, pack(k, explicit, launch).data)
    assert [hidden[f"hidden_block_count_{d}"] for d in "xyz"] == [2, 3, 2]
    assert [hidden[f"hidden_remainder_{d}"] for d in "xyz"] == [2, 1, 1]
    assert [hidden[f"hidden_group_size_{d}"] for d in "xyz"] == [4, 2, 2]
    assert hidden["hidden_grid_dims"] == 3


def test_dynamic_local_arguments_get_lds_offsets_after_the_static_lds():
    k = load(corpus("gfx942"), "gfx942").kernel("dot_dynamic2").metadata
    args = pack(k, [0x1000, 0x2000, 0x3000, Local(1024), Local(6)], Launch.of(256, 256))
    dots, squares = k.explicit_args[3:]
    static = k.group_segment_fixed_size
    assert _u(args.data, dots.offset, 4) == static
    assert _u(args.data, squares.offset, 4) == static + 1024
    assert args.group_segment_size == static + 1030 and args.dynamic_lds == 1030


def test_python_numbers_take_the_arguments_type():
    k = load(corpus("gfx90a"), "gfx90a").kernel("saxpy").metadata
    a, x, y, n = k.explicit_args
    data = pack(k, [2, 0x1000, 0x2000, 100], Launch.of(100, 64)).data  # an int for the float `a`
    assert struct.unpack_from("<f", data, a.offset)[0] == 2.0 and _u(data, n.offset, 4) == 100
    data = pack(k, [np.float32(0.5), 0x1000, 0x2000, np.uint32(100)], Launch.of(100, 64)).data
    assert struct.unpack_from("<f", data, a.offset)[0] == 0.5


@pytest.mark.parametrize("args, why", [
    ([2.0, 0x1000, 0x2000], "takes 4 arguments (a, x, y, n), 3 given"),
    ([2.0, 0x1000, 0x2000, 1.5], "a Python float cannot fill a uint"),
    ([np.int32(2), 0x1000, 0x2000, 1], "a numpy int32 value for a float"),
    ([2.0, 0x1000, 0x2000, 1 << 32], "does not fit 4 bytes"),
    ([2.0, "x", 0x2000, 1], "give a GPU buffer or a GPU address, not str"),
    ([2.0, 0x1000, 0x2000, Local(4)], "give a number, a numpy value or bytes, not Local"),
    ([1e300, 0x1000, 0x2000, 1], "out of range for a float"),
])
def test_arguments_that_do_not_fit_the_signature_are_named(args, why):
    k = load(corpus("gfx942"), "gfx942").kernel("saxpy").metadata
    with pytest.raises(KernargError, match="saxpy") as e:
        pack(k, args, Launch.of(100, 64))
    assert why in str(e.value)


@pytest.mark.parametrize("grid, block, why", [
    ((0,), (1,), "grid"), ((4,), (0,), "block"), ((2048,), (2048,), "at most 1024"),
    ((1, 1, 1, 1), (1,), "1-3 dimensions"), ((8,), (2, 2), "no more than it"), ((1 << 32,), (1,), "grid"),
])
def test_launch_shapes_the_hardware_cannot_dispatch_are_refused(grid, block, why):
    with pytest.raises(KernargError, match=why):
        Launch.of(grid, block)


def test_a_workgroup_larger_than_the_kernel_was_compiled_for_is_refused():
    k = load(corpus("gfx1201"), "gfx1201").kernel("vector_add").metadata
    with pytest.raises(KernargError, match=f"at most {k.max_flat_workgroup_size}"):
        pack(k, [0, 0, 0, 1], Launch.of(1024, 1024))
