"""The emulated GPU's ISA interpreter (driver/emulator/shader/): every corpus kernel on every target through PM4
and AQL against numpy, every instruction the corpus holds compiles, and what a kernel may not do (an
instruction the emulator does not execute, memory outside every buffer, a barrier never reached) stops the
dispatch with a named error."""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import subprocess
import sys
import threading
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest

from kfdtrace.driver import GpuFault, System
from kfdtrace.driver.code_object import CodeObject
from kfdtrace.driver.emulator.shader.alu import SALU, VALU, fma
from kfdtrace.driver.emulator.shader.compile import Unsupported, compile_instruction
from kfdtrace.driver.emulator.shader.memory_ops import ATOMICS, MemoryOps, atomic, atomic_op
from kfdtrace.driver.emulator.shader.operands import Regs
from kfdtrace.driver.errors import NOT_EMULATED, WaitTimeout
from kfdtrace.driver.families import target_by_name
from kfdtrace.driver.isa import decode
from kfdtrace.driver.isa.decoder import HERE as ISA_DIR
from kfdtrace.driver.isa.decoder import sreg_names
from kfdtrace.driver.isa.encodings import encodings_for
from kfdtrace.driver.kernel_descriptor import layout_for
from kfdtrace.driver.kernels.build import BUILT, WAVE64_TARGETS, object_path
from kfdtrace.driver.kernels.device import QUEUES, corpus, kernel_arguments, run_case
from kfdtrace.driver.kernels.reference import CASES, round_once, sized
from tests.emulated import FAMILIES, engine_of

BUILDS = [(t, False) for t in FAMILIES] + [(t, True) for t in WAVE64_TARGETS]  # RDNA: wave32 and wave64 builds


@pytest.mark.parametrize("case", CASES, ids=[c.kernel for c in CASES])
@pytest.mark.parametrize("queue", QUEUES)
@pytest.mark.parametrize(("target", "wave64"), BUILDS, ids=[f"{t}{'-wave64' if w else ''}" for t, w in BUILDS])
def test_every_corpus_kernel_computes_what_numpy_does(target, wave64, queue, case):
    """Every kernel on every target through PM4 and AQL; a wave64 build runs with 64 lanes a wave on RDNA."""
    with System.open(emulate=target) as system:
        dev = system.devices[0]
        program = corpus(dev, wave64)
        assert program.kernel(case.kernel).kernel.descriptor.wave_size == (64 if wave64 else dev.target.wave_size)
        values = case.inputs()
        case.verify(values, run_case(dev, program, case, values, queue))


@pytest.mark.parametrize(("target", "wave64"), BUILDS)
def test_every_instruction_of_the_corpus_is_executable(target, wave64):
    """Each instruction clang-19 emitted for the corpus compiles to a step (s_code_end pads after the end)."""
    family = target_by_name(target).family
    obj = CodeObject.parse(object_path(target, BUILT, wave64).read_bytes())
    image = obj.image(0)
    lanes = 64 if wave64 else family.wave_size
    regs = Regs.of(sreg_names(target), 512, lanes, layout_for(family).architected_sgprs)
    memory = MemoryOps(None, lanes, family.gfx_major, layout_for(family).architected_flat_scratch)
    seen, refused = Counter(), []
    for k in obj.kernels.values():
        at, end = k.entry_offset, k.entry_offset + k.code_size
        while at < end:
            ins = decode(image, at, target)
            if ins.mnemonic != "s_code_end":
                seen[ins.mnemonic] += 1
                try:
                    compile_instruction(ins, at, regs, memory)
                except Unsupported as exc:
                    refused.append(f"{ins.text}: {exc}")
            at += ins.size
    assert not refused
    assert len(seen) >= 200  # distinct mnemonics: the corpus exercises most of the interpreter


def _opcode(target: str, encoding: str, mnemonic: str) -> int:
    table = json.loads((ISA_DIR / f"{target}.json").read_text())["encodings"][encoding]
    return next(int(op) for op, entry in table.items() if entry["m"] == mnemonic)


def _vop1(target: str, mnemonic: str, vdst: int, src0: int) -> bytes:
    enc = next(e for e in encodings_for(target) if e.name == "VOP1")
    word = enc.match
    for name, value in (("op", _opcode(target, "VOP1", mnemonic)), ("vdst", vdst), ("src0", src0)):
        word = enc.by_name[name].put(word, value)
    return struct.pack("<I", word)


@pytest.mark.parametrize("queue", QUEUES)
@pytest.mark.parametrize("target", FAMILIES)
def test_an_instruction_the_emulator_does_not_execute_stops_the_dispatch_naming_it(target, queue, caplog):
    with System.open(emulate=target) as system:
        dev = system.devices[0]
        program = corpus(dev)
        k = program.kernel("vector_add")
        word = _vop1(target, "v_cvt_norm_i16_f16_e32", 1, 256 + 1)  # no entry in alu.py
        program.buffer.write(word, k.entry_address - program.buffer.va)
        case = next(c for c in CASES if c.kernel == "vector_add")
        with caplog.at_level(logging.ERROR, "kfdtrace.emulator"), pytest.raises(GpuFault) as fault:
            run_case(dev, program, case, case.inputs(), queue, timeout=30)
        error = caplog.text
        words = struct.unpack("<I", word)[0]
        assert f"{target}: v_cvt_norm_i16_f16_e32 at PC {k.entry_address:#x} (words {words:08x}" in error
        assert "is not emulated" in error
        # the emulator's limit, not a fault of the kernel's: the queue stops (a hardware exception), no VM fault, and
        # the log record says it is NOT_EMULATED (which a replay reports as "cannot replay here")
        assert "stopped a queue" in str(fault.value) and "VM fault" not in str(fault.value)
        limits = [getattr(r, NOT_EMULATED, False) for r in caplog.records if "is not emulated" in r.getMessage()]
        assert limits == [True]


@pytest.mark.parametrize("target", ["gfx1100", "gfx1201"])
def test_a_vop3p_instruction_in_its_dpp_form_stops_the_dispatch_as_not_emulated(target, caplog):
    """src0 0xFA in a VOP3P word says a DPP dword follows: a valid instruction the decoder does not take apart, not a
    bad one."""
    with System.open(emulate=target) as system:
        dev = system.devices[0]
        program = corpus(dev)
        k = program.kernel("vector_add")
        op = _opcode(target, "VOP3P", "v_fma_mix_f32")
        word = struct.pack("<III", 0xCC000000 | op << 16 | 1, 0xFA | (256 + 2) << 9 | (256 + 3) << 18,
                           0xFF0111 << 8 | 1)  # row_shr:1
        program.buffer.write(word, k.entry_address - program.buffer.va)
        case = next(c for c in CASES if c.kernel == "vector_add")
        with caplog.at_level(logging.ERROR, "kfdtrace.emulator"), pytest.raises(GpuFault) as fault:
            run_case(dev, program, case, case.inputs(), "aql", timeout=30)
        assert f"v_fma_mix_f32 at PC {k.entry_address:#x}" in caplog.text
        assert "its VOP3P DPP form is not emulated" in caplog.text
        assert "stopped a queue" in str(fault.value) and "VM fault" not in str(fault.value)


@pytest.mark.parametrize("target", FAMILIES)
def test_a_kernel_reading_past_its_buffer_is_a_vm_fault(target, caplog):
    with System.open(emulate=target) as system:
        dev = system.devices[0]
        program = corpus(dev)
        case = next(c for c in CASES if c.kernel == "vector_add")
        values = case.inputs()
        args, buffers = kernel_arguments(dev, case, values)
        args[-1] = np.uint32(1 << 24)  # n beyond the buffers' 4099 floats
        q = dev.compute_queue()
        q.dispatch(program.kernel("vector_add"), (1 << 24,), (256,), *args)
        with caplog.at_level(logging.ERROR, "kfdtrace.emulator"), pytest.raises(GpuFault, match="VM fault"):
            q.sync(timeout=60)
        assert "VM fault: read of 4 bytes at" in engine_of(q).error


@pytest.mark.parametrize("target", ["gfx942", "gfx1100"])
def test_waves_that_take_different_paths_meet_again(target):
    """scale_grid_stride loops a data-dependent number of times per wave; collatz per lane: the waves split and
    reconverge, and big grids run in several chunks."""
    with System.open(emulate=target) as system:
        dev = system.devices[0]
        program = corpus(dev)
        for name in ("scale_grid_stride", "collatz"):
            case = next(c for c in CASES if c.kernel == name)
            values = case.inputs()
            case.verify(values, run_case(dev, program, case, values))
        big = sized("vector_add", n=(1 << 19) + 77)  # more lanes than one chunk holds, a partial last group
        values = big.inputs()
        big.verify(values, run_case(dev, program, big, values, "aql"))


def test_atomics_apply_lane_by_lane_where_lanes_share_an_address():
    buf = np.zeros(16, np.uint8)
    offsets = np.array([0, 4, 0, 0, 8], np.uint64)
    key, size = atomic_op("add_u32")
    old = atomic(buf, offsets, size, ATOMICS[key], [np.array([1, 2, 3, 4, 5], np.uint32)])
    assert list(old) == [0, 0, 1, 4, 0] and list(buf.view(np.uint32)) == [8, 2, 5, 0]
    assert atomic_op("cmpswap_x2") == ("cmpswap", 8) and atomic_op("max_i32") == ("smax", 4)
    assert atomic_op("smin_x2") == ("smin", 8) and atomic_op("storexchg") == ("swap", 4)


EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


@pytest.mark.parametrize(("example", "target", "args"), [
    ("vector_add.py", "gfx1201", ["--n", "70000", "--aql"]),
    ("matmul.py", "gfx942", ["--m", "40", "--n", "56", "--k", "72"]),
    ("overlap.py", "gfx1030", ["--rounds", "3", "--n", "1000"]),
])
def test_the_compute_examples_run_and_check_their_results(example, target, args):
    env = dict(os.environ, KFDTRACE_EMULATE=target)
    res = subprocess.run([sys.executable, os.path.join(EXAMPLES, example), *args], env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert ": ok in " in res.stdout and target in res.stdout


def _sopp(target: str, mnemonic: str, simm16: int) -> bytes:
    enc = next(e for e in encodings_for(target) if e.name == "SOPP")
    word = enc.by_name["op"].put(enc.match, _opcode(target, "SOPP", mnemonic))
    return struct.pack("<I", enc.by_name["simm16"].put(word, simm16))


@pytest.mark.parametrize("target", ["gfx942", "gfx1201"])
def test_a_kernel_that_never_ends_is_stopped_when_its_queue_goes(target, caplog):
    with System.open(emulate=target) as system:
        dev = system.devices[0]
        program = corpus(dev)
        k = program.kernel("vector_add")
        program.buffer.write(_sopp(target, "s_branch", 0xFFFF), k.entry_address - program.buffer.va)  # to itself
        case = next(c for c in CASES if c.kernel == "vector_add")
        args, _ = kernel_arguments(dev, case, case.inputs())
        q = dev.compute_queue()
        q.dispatch(k, (64,), (64,), *args).submit()
        with pytest.raises(TimeoutError):
            q.sync(timeout=0.3)  # it spins: the hang the CPU sees
        done = threading.Event()
        threading.Thread(target=lambda: (q.destroy(), done.set()), daemon=True).start()
        assert done.wait(10), "destroying the queue of a spinning kernel did not return"
    assert not [r for r in caplog.records if r.levelname == "ERROR"]  # stopping it is what was asked: no error


@pytest.mark.parametrize("target", ["gfx90a", "gfx1100"])
@pytest.mark.parametrize("a", [1e-39, 5e-39])
def test_denormals_are_flushed_as_the_descriptors_float_mode_says(target, a):
    """FLOAT_DENORM_MODE_32 (patched into the descriptor AQL reads): 3 keeps f32 denormals, 0 flushes sources and
    results, 1 results alone, 2 sources alone (helper 45 found 1 and 2 swapped). A denormal plus 0 is a denormal
    result; plus the least normal, a normal one."""
    case = next(c for c in CASES if c.kernel == "vector_add")
    values = case.inputs()
    tiny = np.float32(0 if a == 1e-39 else np.finfo(np.float32).tiny)
    values["a"][:] = np.float32(a)  # denormal
    values["b"][:] = tiny
    kept, flushed_in, flushed_out = np.float32(a) + tiny, tiny, tiny if tiny else np.float32(0)
    for mode, want in ((3, kept), (0, flushed_in), (1, flushed_out if not tiny else kept), (2, flushed_in)):
        with System.open(emulate=target) as system:
            dev = system.devices[0]
            program = corpus(dev)
            k = program.kernel("vector_add")
            at = k.descriptor_address - program.buffer.va + 48  # COMPUTE_PGM_RSRC1
            rsrc1 = struct.unpack("<I", program.buffer.read(at, 4))[0]
            program.buffer.write(struct.pack("<I", rsrc1 & ~(3 << 16) | mode << 16), at)
            out = run_case(dev, program, case, values, "aql")
            assert (out["c"] == want).all() and np.signbit(out["c"]).sum() == 0


def test_a_queue_reuses_compiled_code_only_while_the_bytes_are_the_same(caplog):
    """Steps compiled for one dispatch serve the next of the same kernel; code changed in between is compiled
    anew (here into an instruction the emulator refuses)."""
    target = "gfx1100"
    with System.open(emulate=target) as system:
        dev = system.devices[0]
        program = corpus(dev)
        k = program.kernel("vector_add")
        case = next(c for c in CASES if c.kernel == "vector_add")
        values = case.inputs()
        args, buffers = kernel_arguments(dev, case, values)
        q = dev.compute_queue()
        q.dispatch(k, case.grid, case.block, *args).sync(timeout=30)
        cached = len(engine_of(q).code.steps)
        q.dispatch(k, case.grid, case.block, *args).sync(timeout=30)
        assert cached > 10 and len(engine_of(q).code.steps) == cached  # nothing compiled the second time
        program.buffer.write(_vop1(target, "v_cvt_norm_i16_f16_e32", 1, 256 + 1), k.entry_address - program.buffer.va)
        q.dispatch(k, case.grid, case.block, *args)
        with caplog.at_level(logging.ERROR, "kfdtrace.emulator"), pytest.raises(GpuFault):
            q.sync(timeout=30)
        assert "v_cvt_norm_i16_f16_e32" in engine_of(q).error


def test_alu_entries_the_corpus_does_not_reach_compute_what_the_isa_says():
    """Operations kernels outside the corpus use (softmax's frexp, fp16 math, byte permutes, medians)."""
    f32, f16, u32 = np.float32, np.float16, np.uint32
    x = np.array([0.75, -12.0, np.inf, np.nan], f32)
    mant, exp = VALU["v_frexp_mant_f32"].fn(x), VALU["v_frexp_exp_i32_f32"].fn(x)
    assert list(mant[:3]) == [0.75, -0.75, np.inf] and list(exp) == [0, 4, 0, 0] and np.isnan(mant[3])
    assert VALU["v_sin_f32"].fn(np.array([0.25], f32))[0] == 1.0  # revolutions: sin(pi / 2)
    assert list(VALU["v_cvt_flr_i32_f32"].fn(np.array([-1.5, 2.7], f32))) == [-2, 2]
    assert list(VALU["v_cvt_rpi_i32_f32"].fn(np.array([-1.5, 2.5], f32))) == [-1, 3]
    assert VALU["v_cvt_floor_i32_f32"] is VALU["v_cvt_flr_i32_f32"]  # gfx11's names (campaign 61)
    assert VALU["v_cvt_nearest_i32_f32"] is VALU["v_cvt_rpi_i32_f32"]
    assert VALU["v_cvt_f32_ubyte2"].fn(np.array([0x00AB0000], u32))[0] == 171.0
    a, b = np.array([0x8899AABB], u32), np.array([0x11223344], u32)
    assert VALU["v_perm_b32"].fn(a, b, np.array([0x0C0D0704], u32))[0] == 0x00FF88BB
    assert VALU["v_perm_b32"].fn(a, b, np.array([0x0B0A0908], u32))[0] == 0xFFFF0000
    h = np.array([1.5, -2.0], f16)
    assert list(VALU["v_sub_f16"].fn(h, np.array([0.5, 1.0], f16))) == [1.0, -3.0]
    assert list(VALU["v_fmac_f16"].fn(h, h, np.array([1.0, 1.0], f16))) == [3.25, 5.0]
    assert VALU["v_fmac_f16"].acc and VALU["v_ldexp_f16"].fn(h, np.array([2, -1], np.int16)).tolist() == [6.0, -1.0]
    trio = [np.array([3, -7, 5], np.int32), np.array([-1, 2, 5], np.int32), np.array([0, 9, -5], np.int32)]
    assert list(VALU["v_med3_i32"].fn(*trio)) == [0, 2, 5] and list(VALU["v_min3_i32"].fn(*trio)) == [-1, -7, -5]
    assert list(VALU["v_max3_f32"].fn(*(t.astype(f32) for t in trio))) == [3.0, 9.0, 5.0]


def test_float_atomic_min_and_max_compare_floats_not_bit_patterns():
    """ds_min_f32, global_atomic_min_f64 and the like are float operations (the parse once took min_f32 for the
    unsigned min of the bits, wrong for negative values)."""
    for name, key, size in (("min_f32", "min_f", 4), ("max_f64", "max_f", 8), ("fmin", "min_f", 4),
                            ("min_num_f32", "min_f", 4), ("min_u32", "umin", 4), ("max_i64", "smax", 8)):
        assert atomic_op(name) == (key, size), name
    old, src = np.array([1.0, -1.0], np.float32).view(np.uint32), np.array([-2.0, 2.0], np.float32).view(np.uint32)
    assert ATOMICS["min_f"](old, src).view(np.float32).tolist() == [-2.0, -1.0]
    assert ATOMICS["max_f"](old, src).view(np.float32).tolist() == [1.0, 2.0]


def test_scalar_min_and_max_set_scc_only_when_the_first_source_wins_strictly():
    """S_MIN: SCC = S0 < S1; S_MAX: SCC = S0 > S1 (ISA pseudocode): equal sources give SCC 0."""
    for name, want in (("s_min_u32", [True, False, False]), ("s_max_u32", [False, False, True]),
                       ("s_min_i32", [True, False, False]), ("s_max_i32", [False, False, True])):
        kind = np.uint32 if name.endswith("u32") else np.int32
        value, scc = SALU[name].fn(np.array([1, 5, 9], kind), np.array([5, 5, 5], kind))
        assert scc.tolist() == want, name
        assert value.tolist() == ([1, 5, 5] if "min" in name else [5, 5, 9]), name


def test_scalar_entries_the_corpus_does_not_reach_compute_what_the_isa_says():
    """64-bit bit fields, leading sign bits and gfx12's scalar float compares (SCC out)."""
    u32, u64 = np.uint32, np.uint64
    wide = np.array([0xF123456789ABCDEF, 0x0123456789ABCDEF, 5], u64)
    field = np.array([40 | 24 << 16, 7 | 40 << 16, 0 | 0 << 16], u32)  # offset | width << 16
    value, scc = SALU["s_bfe_u64"].fn(wide, field)
    assert value.tolist() == [0xF12345, 0x8ACF13579B, 0] and scc.tolist() == [True, True, False]
    value, _ = SALU["s_bfe_i64"].fn(wide, field)
    assert value.tolist() == [0xF12345 - (1 << 24), 0x8ACF13579B - (1 << 40), 0]
    value, _ = SALU["s_bfe_i32"].fn(np.array([0x9ABCDEF1, 0x0ABCDEF1], u32), np.array([24 | 5 << 16] * 2, u32))
    assert value.tolist() == [-6, 10]
    # a signed field reaching past the top bit takes the sign there (campaign 61: V_BFE_I32 shifted logically)
    value, _ = SALU["s_bfe_i32"].fn(np.array([0x80000000, 0xF2DAB0AE], u32),
                                    np.array([6 | 28 << 16, 26 | 30 << 16], u32))
    assert value.tolist() == [-(1 << 25), -4]
    assert VALU["v_bfe_i32"].fn(np.array([0x80000000, 0x7FFFFFFF], u32), np.array([6, 6], u32),
                                np.array([28, 28], u32)).tolist() == [-(1 << 25), (1 << 25) - 1]
    value, _ = SALU["s_bfe_i64"].fn(np.array([1 << 63], u64), np.array([60 | 10 << 16], u32))
    assert value.tolist() == [-8]
    a, b = np.array([0x11112222], u32), np.array([0x33334444], u32)  # campaign 61: uniform ushort2 code
    assert [SALU[f"s_pack_{h}_b32_b16"].fn(a, b).tolist() for h in ("ll", "lh", "hh", "hl")] == \
        [[0x44442222], [0x33332222], [0x33331111], [0x44441111]]
    signs = np.array([0x40000000, 0x20000000, 0, -1, -2, 1], np.int32)
    assert SALU["s_cls_i32"].fn(signs).tolist() == [1, 2, 0xFFFFFFFF, 0xFFFFFFFF, 31, 31]
    f32 = np.float32
    a, b = np.array([1.0, np.nan, 2.0], f32), np.array([2.0, 1.0, 2.0], f32)
    assert SALU["s_cmp_lt_f32"].fn(a, b).tolist() == [True, False, False]
    assert SALU["s_cmp_nge_f32"].fn(a, b).tolist() == [True, True, False]  # unordered is "not >="
    assert SALU["s_cmp_u_f32"].fn(a, b).tolist() == [False, True, False]
    assert SALU["s_fmamk_f32"].fn(a, f32(3), b).tolist()[::2] == [5.0, 8.0]  # S0 * K + S1
    assert SALU["s_min_num_f32"].fn(a, b).tolist() == [1.0, 1.0, 2.0]  # a NaN loses to a number
    assert SALU["s_brev_b64"].fn(np.array([1, 0xFFFFFFFF], u64)).tolist() == [1 << 63, 0xFFFFFFFF << 32]
    assert SALU["s_clz_i32_u64"].fn(np.array([1, 0, 1 << 40], u64)).tolist() == [63, 0xFFFFFFFF, 23]
    assert SALU["s_cls_i32_i64"].fn(np.array([1, -1, -2], np.int64)).tolist() == [63, 0xFFFFFFFF, 63]
    assert SALU["s_bitset1_b32"].fn(np.array([3, 35], u32), np.array([0, 1], u32)).tolist() == [8, 9]  # S0[4:0]
    assert SALU["s_bitset0_b64"].fn(np.array([40], u32), np.array([2**64 - 1], u64)).tolist() == [2**64 - 1 - 2**40]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_fused_multiply_adds_round_once(dtype):
    """Against the exact sum rounded once: products cancelled by the addend, addends a tiny nudge past a product
    (the f64 sum then lies halfway between two values of the type: rounding twice went wrong), results below the
    normal range."""
    rng = np.random.default_rng(7)
    span = 60 if dtype is np.float32 else 8
    with np.errstate(all="ignore"):
        for trial in range(1500):
            a, b = (dtype(rng.standard_normal() * 2.0 ** rng.integers(-span, span)) for _ in range(2))
            c = [dtype(-(float(a) * float(b)) * (1 + 2.0 ** -rng.integers(5, 30))),
                 dtype(2.0 ** (np.floor(np.log2(abs(float(a) * float(b)) + 1e-300)) - 40)),
                 dtype(rng.standard_normal() * 2.0 ** rng.integers(-2 * span, span))][trial % 3]
            if not all(np.isfinite(x) for x in (a, b, c)):
                continue
            exact = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
            want = round_once(exact, dtype) if exact else dtype(float(a) * float(b) + float(c))
            got = fma(np.array([a]), np.array([b]), np.array([c]))[0]
            assert got == want and np.signbit(got) == np.signbit(want), (a, b, c, got, want)


def test_an_infinite_addend_to_a_finite_product_that_overflows_is_the_addend():
    """Campaign 119: fma(a, b, -inf) with a * b finite but past f64's range was NaN (the product rounded to inf
    first, then inf - inf); clang makes one of a double `a * b + c`. IEEE: the exact product plus -inf is -inf."""
    big = np.float64(1.7976931348623157e308)
    a, b = np.array([big, 1e300, -big, 2.0]), np.array([2.0**53, 1e10, 2.0**52 + 1, 3.0])
    c = np.array([-np.inf, -np.inf, np.inf, -np.inf])
    assert fma(a, b, c).tolist() == c.tolist()
    assert VALU["v_div_fmas_f64"].fn(a, b, c, np.array([True, False, True, False])).tolist() == c.tolist()
    assert np.isnan(fma(np.array([np.inf]), np.array([0.0]), np.array([1.0]))[0])  # inf * 0 stays NaN


def test_half_class_fract_and_frexp_as_their_wider_forms():
    """Campaign 121: isinf/isfinite on a half (v_cmp_class_f16), fract and frexp of halves were not emulated."""
    # the classes' bit patterns in V_CMP_CLASS's order: signaling NaN, quiet NaN, -inf, -normal, -denormal, -0, +0,
    # +denormal, +normal, +inf
    halves = np.array([0x7C01, 0x7E00, 0xFC00, 0xBC00, 0x8001, 0x8000, 0x0000, 0x0001, 0x3C00, 0x7C00], np.uint16)
    for k in range(10):
        got = VALU["v_cmp_class_f16"].fn(halves, np.full(10, 1 << k, np.uint32)).tolist()
        assert got == [i == k for i in range(10)], k
    assert VALU["v_cmpx_class_f16"].exec_out
    h = np.array([2.75, -0.25, -1e-5, 1000.5, 0.0], np.float16)
    assert VALU["v_fract_f16"].fn(h).tolist() == [0.75, 0.75, float(np.nextafter(np.float16(1), np.float16(0))), 0.5,
                                                  0.0]
    mant, exp = VALU["v_frexp_mant_f16"].fn(h), VALU["v_frexp_exp_i16_f16"].fn(h)
    assert mant.dtype == np.float16 and (mant.astype(np.float64) * 2.0 ** exp == h).all()
    assert VALU["v_frexp_exp_i16_f16"].fn(np.array([np.inf], np.float16)).tolist() == [0]


def test_every_float_compare_is_the_ieee_predicate_its_name_says():
    """Campaign 121: LG (less or greater, ordered) was np.not_equal, so islessgreater(NaN, 1) was true. Every
    VOPC and gfx12 scalar float compare, against its predicate, on NaN, infinities, zeros of both signs and
    ordinary values."""
    import itertools
    import operator

    predicates = {"f": lambda a, b: False, "lt": operator.lt, "eq": operator.eq, "le": operator.le,
                  "gt": operator.gt, "lg": lambda a, b: a < b or a > b, "ge": operator.ge,
                  "o": lambda a, b: a == a and b == b, "u": lambda a, b: a != a or b != b,
                  "nge": lambda a, b: not a >= b, "nlg": lambda a, b: not (a < b or a > b),
                  "ngt": lambda a, b: not a > b, "nle": lambda a, b: not a <= b, "neq": lambda a, b: not a == b,
                  "nlt": lambda a, b: not a < b, "tru": lambda a, b: True}
    values = [float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1.5, -2.0]
    pairs = list(itertools.product(values, repeat=2))
    entries = [(name, VALU[name].fn) for name in VALU if name.startswith(("v_cmp_", "v_cmpx_"))
               and name.endswith(("_f16", "_f32", "_f64")) and name.split("_")[-2] in predicates]
    entries += [(name, SALU[name].fn) for name in SALU if name.startswith("s_cmp_") and name.endswith(("_f16", "_f32"))]
    assert len(entries) >= 2 * 3 * 16 + 2 * 14
    for name, fn in entries:
        t = {"f16": np.float16, "f32": np.float32, "f64": np.float64}[name[-3:]]
        a, b = (np.array(column, t) for column in zip(*pairs, strict=True))
        got = np.broadcast_to(fn(a, b), (len(pairs),)).tolist()
        assert got == [predicates[name.split("_")[-2]](x, y) for x, y in pairs], name


def test_vector_entries_the_corpus_does_not_reach_compute_what_the_isa_says():
    """Median-like pairs, 24-bit and 16-bit multiply-adds, sign-bit counts and f64 rounding."""
    i32, f32, f64 = np.int32, np.float32, np.float64
    assert VALU["v_maxmin_f32"].fn(f32([1, 5]), f32([3, 2]), f32([2, 9])).tolist() == [2, 5]  # min(max(a, b), c)
    assert VALU["v_minmax_i32"].fn(i32([1, 5]), i32([3, 2]), i32([2, -9])).tolist() == [2, 2]  # max(min(a, b), c)
    assert VALU["v_mad_i32_i24"].fn(i32([0xFFFFFF, 3]), i32([2, -4]), i32([1, 1])).tolist() == [-1, -11]
    assert VALU["v_mad_u16"].fn(*(np.uint16([x]) for x in (300, 300, 7))).tolist() == [(90000 + 7) % 65536]
    assert VALU["v_cls_i32"].fn(i32([1, -1, 0x40000000])).tolist() == [31, 0xFFFFFFFF, 1]
    assert VALU["v_fract_f64"].fn(f64([-1e-300, 1.25])).tolist() == [1 - 2**-53, 0.25]
    assert VALU["v_rndne_f64"].fn(f64([2.5, -3.5])).tolist() == [2.0, -4.0]


@pytest.mark.parametrize("ty", ["f32", "f16"])
def test_a_median_with_a_nan_source_is_the_least_of_the_others(ty):
    """Campaign 54: fmed3(1, 5, NaN) gave 5. The ISA guide's V_MED3_F32: any NaN source gives V_MIN3 of the three
    (which skips NaNs); LLVM folds fmed3(x, y, NaN) to minnum(x, y) the same way. (Campaign 58: the f16 forms
    were not emulated.)"""
    t = {"f32": np.float32, "f16": np.float16}[ty]
    nan = t(np.nan)
    got = VALU[f"v_med3_{ty}"].fn(t([1, 5, nan, 1, 3]), t([5, 1, 2, nan, 1]), t([nan, nan, 7, 0, 2]))
    assert got.tolist() == [1, 1, 2, 0, 2]
    assert np.isnan(VALU[f"v_med3_{ty}"].fn(t([nan]), t([nan]), t([nan]))[0])
    assert VALU[f"v_min3_{ty}"].fn(t([3]), t([nan]), t([2])).tolist() == [2]
    assert VALU[f"v_max3_{ty}"].fn(t([3]), t([nan]), t([2])).tolist() == [3]


def test_packing_conversions_saturate_and_round_toward_zero():
    """Campaign 54 found these unsupported: two values as the halves of a dword, the first low."""
    f32, u32, i32 = np.float32, np.uint32, np.int32
    assert VALU["v_cvt_pk_u16_u32"].fn(u32([7, 0x10000]), u32([0xFFFFFFFF, 0xFFFF])).tolist() == \
        [0xFFFF0007, 0xFFFFFFFF]
    assert VALU["v_cvt_pk_i16_i32"].fn(i32([-1, 40000]), i32([-40000, 5])).tolist() == [0x8000FFFF, 0x00057FFF]
    # toward zero: 1 + 2**-11 + 2**-12 (nearest would be 1 + 2**-10) is 1; past the range, the largest half
    got = VALU["v_cvt_pkrtz_f16_f32"].fn(f32([1 + 2**-11 + 2**-12, 70000.0, -1e-8]), f32([-(1 + 2**-10), -np.inf, 0.5]))
    halves = [(int(w) & 0xFFFF, int(w) >> 16) for w in got]
    assert [tuple(float(np.uint16(h).view(np.float16)) for h in pair) for pair in halves] == \
        [(1.0, -(1 + 2**-10)), (65504.0, -np.inf), (-0.0, 0.5)]
    assert halves[2][0] == 0x8000  # -1e-8 toward zero: -0


def test_a_division_fixup_of_a_nan_quotient_of_ordinary_operands_overflows():
    """Campaign 54: 1e160 / 5e-324 came out NaN: the Newton step past the top of the range is inf - inf, which
    V_DIV_FIXUP turns into the signed overflow. NaN operands, 0/0 and inf/inf stay NaN."""
    f64, nan, inf = np.float64, np.nan, np.inf
    got = VALU["v_div_fixup_f64"].fn(f64([nan, nan, 2.0, nan, nan, nan]), f64([5e-324, -1e-320, 4.0, 0.0, inf, nan]),
                                     f64([1e160, 1e300, 8.0, 0.0, -inf, 1.0]))
    assert got[:3].tolist() == [inf, -inf, 2.0] and np.isnan(got[3:]).all()


# -- code clang-19 makes of small sources, run where it was built for ------------------------------------------
def built(tmp_path, source: str, target: str, optimisation: str = "-O2", *flags: str) -> str:
    """`source` (OpenCL C) compiled (with `flags` too) and linked for `target`: the code object's path."""
    src, obj, co = tmp_path / f"k-{target}.cl", tmp_path / f"k-{target}.o", tmp_path / f"k-{target}.co"
    src.write_text(source)
    subprocess.run(["clang-19", "-x", "cl", "-cl-std=CL2.0", "-target", "amdgcn-amd-amdhsa", f"-mcpu={target}",
                    "-nogpulib", optimisation, *flags, "-c", str(src), "-o", str(obj)], check=True,
                   capture_output=True)
    subprocess.run(["ld.lld-19", "-shared", str(obj), "-o", str(co)], check=True, capture_output=True)
    return str(co)


def ran(target: str, code: str, kernel: str, out_words: int, *args: np.ndarray | np.generic) -> np.ndarray:
    """One workgroup of 64 running `kernel` of the code object at `code`, its first argument `out_words`
    uint32 of output, then `args` (arrays as buffers): the output."""
    with System.open(emulate=target) as system:
        gpu = system.devices[0]
        out = gpu.alloc(4 * out_words, "gtt", name="out")
        given = []
        for a in args:
            if isinstance(a, np.ndarray):
                given.append(gpu.alloc(max(a.nbytes, 4), "gtt", name="in"))
                given[-1].write(a.tobytes())
            else:
                given.append(a)
        q = gpu.compute_queue()
        q.dispatch(gpu.load(code).kernel(kernel), (64,), (64,), out, *given)
        q.sync(timeout=60)
        return np.frombuffer(out.read(), np.uint32).copy()


UNIFORM_HALF = r"""
#pragma OPENCL EXTENSION cl_khr_fp16 : enable
__kernel void uniform_half(__global float *out, float x, half y, half z, half2 v) {
  half h = (half)x;
  float r[14] = {(float)h, (float)(h * y + z), (float)(h + y), (float)(h - z), (float)(h * z),
                 (float)__builtin_floorf16(h), (float)__builtin_ceilf16(y), (float)__builtin_truncf16(z),
                 (float)__builtin_rintf16(h), h < y ? 1.0f : 2.0f, (float)v.y, (float)v.x + (float)v.y,
                 __builtin_isnan(h * z) ? 5.0f : 6.0f, (float)(y * z)};
  uint i = __builtin_amdgcn_workitem_id_x();
  if (i < 14) out[i] = r[i];
}"""


def test_gfx12_scalar_half_operations_compute_what_numpy_does(tmp_path):
    """Campaign 119: half arithmetic on kernel arguments (uniform values) compiles for gfx1201 to its scalar f16
    operations (s_cvt_f16_f32, s_fmac_f16, s_add_f16, s_cmp_lt_f16, s_cvt_hi_f32_f16, ...), which stopped the
    dispatch as not emulated; on the other families it is VALU code."""
    code = built(tmp_path, UNIFORM_HALF, "gfx1201")
    listing = subprocess.run(["llvm-objdump-19", "-d", code], check=True, capture_output=True, text=True).stdout
    assert {"s_cvt_f16_f32", "s_fmac_f16", "s_add_f16", "s_cmp_lt_f16", "s_cvt_hi_f32_f16", "s_rndne_f16"} <= \
        set(listing.split())
    h16 = np.float16
    for x, y, z, v in ((2.7, 3.0, -1.25, (0.5, -6.5)), (70000.0, 0.5, 2.0, (1e-7, 65504.0)),
                       (-0.3, -0.3, 2.5, (-0.0, 3.0)), (1.5, 1e-7, -2.5, (2.0, 2.0))):
        with np.errstate(all="ignore"):
            h, y16, z16, (vx, vy) = h16(x), h16(y), h16(z), (h16(v[0]), h16(v[1]))
            want = [h, h * y16 + z16, h + y16, h - z16, h * z16, np.floor(h), np.ceil(y16), np.trunc(z16),
                    np.rint(h), 1.0 if h < y16 else 2.0, vy, np.float32(vx) + np.float32(vy),
                    5.0 if np.isnan(h * z16) else 6.0, y16 * z16]
        want[1] = h16(np.float64(h) * np.float64(y16) + np.float64(z16))  # fused: rounded once
        packed = np.array([vx, vy], h16).view(np.uint32)[0]
        got = ran("gfx1201", code, "uniform_half", 14, np.float32(x), h16(y), h16(z), packed).view(np.float32)
        assert got.tolist() == np.array(want, np.float32).tolist(), (x, y, z, v)


def llvm_trig_preop(tmp_path, cases: list[tuple[str, int]]) -> list[int]:
    """What LLVM 19 folds __builtin_amdgcn_trig_preop(x, segment) to for each case (x as OpenCL C): the bits."""
    src = tmp_path / "fold.cl"
    src.write_text("__kernel void fold(__global double *out) {\n" + "".join(
        f"  out[{i}] = __builtin_amdgcn_trig_preop({x}, {s});\n" for i, (x, s) in enumerate(cases)) + "}\n")
    ir = subprocess.run(["clang-19", "-x", "cl", "-target", "amdgcn-amd-amdhsa", "-mcpu=gfx942", "-nogpulib", "-O2",
                         "-S", "-emit-llvm", str(src), "-o", "-"], check=True, capture_output=True, text=True).stdout
    stores = re.findall(r"store double (\S+),", ir)
    assert len(stores) == len(cases) and "trig.preop" not in ir, ir  # every call folded
    return [int(v, 16) if v.startswith("0x") else struct.unpack("<Q", struct.pack("<d", float(v)))[0]
            for v in stores]


TRIG_X = ["1.0", "-0.5", "0x1.921fb54442d18p+1", "0x1p60", "-0x1p77", "0x1p100", "0x1.5p500", "0x1p944", "0x1p945",
          "0x1.8p1023", "0x1.fffffffffffffp1023", "1e-300", "0x1p-1074", "0.0", "-0.0", "__builtin_inf()",
          "-__builtin_inf()", '__builtin_nan("0x5")', '-__builtin_nans("0x9")']
TRIG_SEGMENTS = [0, 1, 2, 3, 5, 10, 20, 31, 32, 33, -1]


def test_trig_preop_gives_what_llvm_folds_it_to(tmp_path):
    """Campaign 121 found v_trig_preop_f64 refused (ROCm's sin and cos of large doubles take it). The emulator's
    53-bit segments of 2/pi, their scaling (+128 for the largest exponents) and its NaN are held to LLVM 19's
    constant folding, bit for bit; where LLVM's 0 and the ISA pseudocode's 1201-bit 2/pi differ it refuses."""
    cases = [(x, s) for x in TRIG_X for s in TRIG_SEGMENTS]
    fn, refused = VALU["v_trig_preop_f64"].fn, 0
    for (x, s), want in zip(cases, llvm_trig_preop(tmp_path, cases), strict=True):
        value = np.array([want], np.uint64).view(np.float64) if "nan" in x else \
            np.array([float.fromhex(x) if "0x" in x else float(x.replace("__builtin_inf()", "inf"))])
        exponent = int(value.view(np.uint64)[0]) >> 52 & 0x7FF
        beyond = exponent >= 1968 and (s & 31) * 53 + exponent - 1077 >= 1120 and "nan" not in x
        if beyond:
            with pytest.raises(Unsupported, match="bits 1120 and on of 2/pi"):
                fn(value, np.array([s], np.int64).astype(np.uint32))
            assert want == 0, (x, s)  # LLVM's; the pseudocode's 2/pi has 1201 bits
            refused += 1
            continue
        got = fn(value, np.array([s], np.int64).astype(np.uint32))
        assert int(got.view(np.uint64)[0]) == want, (x, s, hex(want), got)
    assert refused == 29, refused  # 0x1p945 from segment 5, the four largest from segment 3


TRIG_PREOP = r"""
__kernel void trig(__global double *out, __global const double *x, __global const int *segment) {
  uint i = __builtin_amdgcn_workitem_id_x();
  out[i] = __builtin_amdgcn_trig_preop(x[i], segment[i]);
}"""


@pytest.mark.parametrize("target", FAMILIES)
def test_trig_preop_in_a_kernel_gives_what_llvm_folds_it_to(tmp_path, target, caplog):
    """v_trig_preop_f64 as clang emits it for a kernel's values, on every family, against LLVM's folding; and a
    lane past the bits the emulator takes stops the dispatch as not emulated, naming why."""
    cases = [(x, s) for x in TRIG_X if "nan" not in x and "inf" not in x for s in TRIG_SEGMENTS if
             not (x.endswith("p1023") and s & 31 >= 3 or x == "0x1p945" and s & 31 >= 5)][:64]
    want = llvm_trig_preop(tmp_path, cases)
    x = np.array([float.fromhex(x) if "0x" in x else float(x) for x, _ in cases], np.float64)
    code = built(tmp_path, TRIG_PREOP, target)
    listing = subprocess.run(["llvm-objdump-19", "-d", code], check=True, capture_output=True, text=True).stdout
    assert "v_trig_preop_f64" in listing
    got = ran(target, code, "trig", 128, x, np.array([s for _, s in cases], np.int32)).view(np.uint64)
    assert [hex(v) for v in got] == [hex(v) for v in want]
    with caplog.at_level(logging.ERROR, "kfdtrace.emulator"), pytest.raises(GpuFault, match="stopped a queue"):
        ran(target, code, "trig", 128, np.full(64, 2.0**1023), np.full(64, 31, np.int32))
    assert "v_trig_preop_f64" in caplog.text and "bits 1120 and on of 2/pi" in caplog.text
    assert [getattr(r, NOT_EMULATED, False) for r in caplog.records if "2/pi" in r.getMessage()] == [True]


INTEGER_DOTS = r"""
typedef short short2 __attribute__((ext_vector_type(2)));
typedef unsigned short ushort2 __attribute__((ext_vector_type(2)));
__kernel void dots(__global uint *o, __global const uint *a, __global const uint *b, __global const uint *c) {
  uint i = __builtin_amdgcn_workitem_id_x(), x = a[i], y = b[i], z = c[i];
  uint *out = o + 8 * i;
  out[0] = __builtin_amdgcn_udot4(x, y, z, false);
  out[1] = __builtin_amdgcn_udot8(x, y, z, false);
#if defined(__gfx1100__) || defined(__gfx1201__)
  out[2] = __builtin_amdgcn_sudot4(true, x, true, y, z, false);
  out[3] = __builtin_amdgcn_sudot4(true, x, false, y, z, false);
  out[4] = __builtin_amdgcn_sudot4(false, x, true, y, z, false);
  out[5] = __builtin_amdgcn_sudot8(true, x, true, y, z, false);
  out[6] = __builtin_amdgcn_sudot8(false, x, true, y, z, false);
  out[7] = __builtin_amdgcn_sudot8(true, x, false, y, z, false);
#else
  out[2] = __builtin_amdgcn_sdot4(x, y, z, false);
  out[3] = __builtin_amdgcn_sdot8(x, y, z, false);
  out[4] = __builtin_amdgcn_sdot2(__builtin_astype(x, short2), __builtin_astype(y, short2), z, false);
  out[5] = __builtin_amdgcn_udot2(__builtin_astype(x, ushort2), __builtin_astype(y, ushort2), z, false);
  out[6] = __builtin_amdgcn_sdot4(y, x, z + 1u, false);
  out[7] = __builtin_amdgcn_sdot8(y, z, x, false);
#endif
}"""


DOTS_CDNA = {"v_dot4_u32_u8", "v_dot8_u32_u4", "v_dot2_u32_u16", "v_dot2c_i32_i16", "v_dot4c_i32_i8", "v_dot8c_i32_i4"}
DOTS_RDNA2 = {"v_dot4_u32_u8", "v_dot8_u32_u4", "v_dot2_u32_u16", "v_dot2_i32_i16", "v_dot4c_i32_i8", "v_dot8_i32_i4"}
DOTS_RDNA3 = {"v_dot4_u32_u8", "v_dot8_u32_u4", "v_dot4_i32_iu8", "v_dot8_i32_iu4"}


def _fields(v: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    """Each u32 of `v` as its 32 / bits fields, lowest first, as Python-sized ints."""
    out = np.stack([(v.astype(np.int64) >> k) & ((1 << bits) - 1) for k in range(0, 32, bits)], axis=1)
    return np.where(out >= 1 << (bits - 1), out - (1 << bits), out) if signed else out


def _dot_reference(x, y, z, bits: int, sx: bool, sy: bool) -> np.ndarray:
    total = z.astype(np.int64) + (_fields(x, bits, sx) * _fields(y, bits, sy)).sum(axis=1)
    return (total % (1 << 32)).astype(np.uint32)


@pytest.mark.parametrize("target", FAMILIES)
def test_integer_dot_products_sum_what_numpy_does(tmp_path, target):
    """Quantised (int8, int4) inference kernels take the integer dot products: v_dot4_u32_u8 and kin were refused
    but v_dot4c_i32_i8. Each is held to a numpy sum of products over every sign of its operands (gfx11+'s iu
    forms by their neg_lo bits), wrapping in 32 bits, on values with every field at its extremes."""
    rng = np.random.default_rng(7)
    a, b, c = (rng.integers(0, 1 << 32, 64, dtype=np.uint64).astype(np.uint32) for _ in range(3))
    a[:4], b[:4], c[:4] = [0x80808080, 0x7F7F7F7F, 0xFFFFFFFF, 0x88888888], [0x80808080, 0x80808080, 0xFFFFFFFF,
                                                                            0x77777777], [0, 0x7FFFFFFF, 1, 0x80000000]
    code = built(tmp_path, INTEGER_DOTS, target)
    listing = subprocess.run(["llvm-objdump-19", "-d", code], check=True, capture_output=True, text=True).stdout
    assert {m.removesuffix("_e32") for m in re.findall(r"\bv_dot\w+", listing)} == {
        "gfx1100": DOTS_RDNA3, "gfx1201": DOTS_RDNA3, "gfx1030": DOTS_RDNA2}.get(target, DOTS_CDNA)
    got = ran(target, code, "dots", 512, a, b, c).reshape(64, 8)
    want = [_dot_reference(a, b, c, 8, False, False), _dot_reference(a, b, c, 4, False, False)]
    if target in ("gfx1100", "gfx1201"):
        want += [_dot_reference(a, b, c, 8, *signs) for signs in ((True, True), (True, False), (False, True))]
        want += [_dot_reference(a, b, c, 4, *signs) for signs in ((True, True), (False, True), (True, False))]
    else:
        want += [_dot_reference(a, b, c, 8, True, True), _dot_reference(a, b, c, 4, True, True),
                 _dot_reference(a, b, c, 16, True, True), _dot_reference(a, b, c, 16, False, False),
                 _dot_reference(b, a, c + np.uint32(1), 8, True, True), _dot_reference(b, c, a, 4, True, True)]
    for k, column in enumerate(want):
        assert got[:, k].tolist() == column.tolist(), (target, k)


INDIRECT_CALLS = r"""
#pragma OPENCL EXTENSION __cl_clang_function_pointers : enable
typedef uint (*fn_t)(uint);
__attribute__((noinline)) uint f0(uint x) { volatile uint a[16]; for (int j = 0; j < 16; j++) a[j] = 0xBAD0u + j;
                                            return a[x & 15] * 0 + x * 3; }
__attribute__((noinline)) uint f1(uint x) { volatile uint a[16]; for (int j = 0; j < 16; j++) a[j] = 0xBAD1u + j;
                                            return a[x & 15] * 0 + (x ^ 5); }
__kernel void k(__global uint* out, __global const uint* in) {
  uint i = __builtin_amdgcn_workitem_id_x(), v = in[i];
  volatile uint mine[4];
  for (int j = 0; j < 4; j++) mine[j] = v + j;
  fn_t fs[2] = {f0, f1};
  out[2 * i] = fs[v & 1](v);
  out[2 * i + 1] = mine[0] + mine[1] + mine[2] + mine[3];
}
__kernel void bare(__global uint* out, __global const uint* in) {
  uint i = __builtin_amdgcn_workitem_id_x();
  fn_t fs[2] = {f0, f1};
  out[2 * i] = fs[in[i] & 1](in[i]);
  out[2 * i + 1] = 4 * in[i] + 6;
}
"""


@pytest.mark.parametrize("kernel", ["k", "bare"])
@pytest.mark.parametrize("target", ["gfx942", "gfx1100"])
def test_a_kernel_whose_stack_is_dynamic_gets_one_beyond_its_fixed_frame(target, kernel, tmp_path):
    """Campaign 58: a kernel calling through a function pointer (.uses_dynamic_stack) got only its own frame of
    scratch: the callee's frames ran into the next wave's (wrong results), or, with no frame of its own, the
    dispatch failed allocating 0 bytes."""
    src, obj, co = tmp_path / "k.cl", tmp_path / "k.o", tmp_path / "k.co"
    src.write_text(INDIRECT_CALLS)
    subprocess.run(["clang-19", "-x", "cl", "-cl-std=CL2.0", "-Xclang", "-cl-ext=+__cl_clang_function_pointers",
                    "-target", "amdgcn-amd-amdhsa", f"-mcpu={target}", "-nogpulib", "-O2", "-c", str(src), "-o",
                    str(obj)], check=True, capture_output=True)
    subprocess.run(["ld.lld-19", "-shared", str(obj), "-o", str(co)], check=True, capture_output=True)
    assert CodeObject.parse(co.read_bytes()).kernels[kernel].metadata.uses_dynamic_stack
    values = np.arange(64, dtype=np.uint32) * 7 + 1
    got = ran(target, str(co), kernel, 128, values)
    assert got[0::2].tolist() == np.where(values & 1, values ^ 5, values * 3).tolist()
    assert got[1::2].tolist() == (4 * values + 6).tolist()


PRIVATE_FROM_THE_END = r"""
__kernel void k(__global uint* out, __global const uint* in) {
  uint i = __builtin_amdgcn_workitem_id_x();
  volatile uint big[100];
  uint v = in[i];
  big[0] = v;
  big[99 - (v & 7)] = 0x12345678u ^ v;
  out[2 * i] = big[99 - (v & 7)];
  out[2 * i + 1] = big[0];
}"""


@pytest.mark.parametrize("target", FAMILIES)
def test_private_memory_addressed_by_a_negative_vgpr_and_a_positive_offset(target, tmp_path):
    """clang folds big[99 - i] into a VGPR of 0 - 4 * i and offset:396 (scratch_* or MUBUF offen): the sum is
    32 bits, as hardware adds it (it was a VM fault, or a dropped store and a 0 load)."""
    values = np.arange(64, dtype=np.uint32) * 7919
    out = ran(target, built(tmp_path, PRIVATE_FROM_THE_END, target), "k", 128, values)
    assert out.tolist() == [w for v in values.tolist() for w in (0x12345678 ^ v, v)]


HIGH_HALF = r"""
__kernel void k(__global uint* out, uint a, uint b) {
  uint i = __builtin_amdgcn_workitem_id_x();
  uint d = 0xAAAA5555u + i;
  __asm__ volatile("%s %%0, %%1, %%2" : "+v"(d) : "v"(a + i), "v"(b));
  out[i] = d;
}"""


@pytest.mark.parametrize("target", FAMILIES)
def test_a_16_bit_result_keeps_the_high_half_from_gfx10_and_zeroes_it_on_gfx9(target, tmp_path):
    """LLVM's zeroesHigh16BitsOfDest: gfx9's 16-bit VALU results zero the VGPR's high half (v_add_u16); from
    gfx10 every one keeps it."""
    gfx9 = target_by_name(target).family.gfx_major == 9
    add = ran(target, built(tmp_path, HIGH_HALF % ("v_add_u16" if gfx9 else "v_add_nc_u16"), target), "k", 64,
              np.uint32(1000), np.uint32(1))
    lanes = np.arange(64, dtype=np.uint32)
    assert add.tolist() == [int(x) for x in ((1001 + lanes) | (0 if gfx9 else 0xAAAA0000))]


ORDINARY = r"""
__kernel void k(__global uint* out, __global const uint* in, uint flag) {
  uint i = __builtin_amdgcn_workitem_id_x();
  uint a = in[i], b = in[(i + 1) & 63], c = in[(i + 7) & 63];
  out[8 * i + 0] = (a ^ b) + c;
  out[8 * i + 1] = (a > b ? a - b : b - a) + c;
  long p = (long)(char)a * (long)(short)b;
  out[8 * i + 2] = (uint)(p >> 32);
  out[8 * i + 3] = as_uint(as_short2(a) >> as_short2(b & 0x000F000Fu));
  uchar4 ua = as_uchar4(a), ub = as_uchar4(b);
  char4 sa = as_char4(a), sb = as_char4(b);
  out[8 * i + 4] = as_uint(ua > ub ? ua : ub);
  out[8 * i + 5] = as_uint(sa < sb ? sa : sb);
  out[8 * i + 6] = (flag & 4) ? a : c;
  __atomic_thread_fence(__ATOMIC_SEQ_CST);  /* gfx90a: buffer_wbl2, buffer_invl2 */
  out[8 * i + 7] = (uint)((((ulong)a << 32) | b) >> ((c & 3) * 8));
}"""


def ordinary_reference(values: np.ndarray, flag: int) -> list[int]:
    out = []
    for i in range(64):
        a, b, c = (int(values[j]) for j in (i, (i + 1) & 63, (i + 7) & 63))
        s8 = lambda x: (x & 0xFF) - ((x & 0x80) << 1)  # noqa: E731
        s16 = lambda x: (x & 0xFFFF) - ((x & 0x8000) << 1)  # noqa: E731
        halves = [s16(a >> 16 * h) >> (b >> 16 * h & 15) & 0xFFFF for h in (0, 1)]
        ubytes = [max(a >> 8 * k & 0xFF, b >> 8 * k & 0xFF) for k in range(4)]
        sbytes = [min(s8(a >> 8 * k), s8(b >> 8 * k)) & 0xFF for k in range(4)]
        out += [((a ^ b) + c) & 0xFFFFFFFF, (abs(a - b) + c) & 0xFFFFFFFF, (s8(a) * s16(b) >> 32) & 0xFFFFFFFF,
                halves[0] | halves[1] << 16, sum(x << 8 * k for k, x in enumerate(ubytes)),
                sum(x << 8 * k for k, x in enumerate(sbytes)), a if flag & 4 else c,
                ((a << 32 | b) >> 8 * (c & 3)) & 0xFFFFFFFF]
    return out


@pytest.mark.parametrize("target", FAMILIES)
def test_ordinary_integer_code_compiles_to_instructions_the_emulator_runs(target, tmp_path):
    """(a ^ b) + c is v_xad_u32, |a - b| + c v_sad_u32, a byte times a short's high half v_mul_hi_i32_i24 (SDWA on
    gfx9), short2 shifts v_ashrrev_i16, char4 min/max v_min_i16/v_max_u16 (SDWA on gfx9), a uniform flag test
    s_bitcmp0_b32: each computes what C says; a sequentially consistent fence's cache instructions pass."""
    values = np.random.default_rng(5).integers(0, 1 << 32, 64, dtype=np.uint64).astype(np.uint32)
    values[:4] = [0x80, 0x7F, 0xFFFF8000, 0]  # sign edges
    code = built(tmp_path, ORDINARY, target)
    for flag in (4, 3):
        out = ran(target, code, "k", 512, values, np.uint32(flag))
        assert out.tolist() == ordinary_reference(values, flag), flag


WRITELANE = r"""
__kernel void k(__global uint* out, uint x) {
  uint i = __builtin_amdgcn_workitem_id_x();
  uint d = i;
  __asm__ volatile("v_writelane_b32 %0, %1, 37" : "+v"(d) : "s"(x));  /* gfx9: one SGPR on the constant bus */
  out[i] = d;
}"""


@pytest.mark.parametrize("target", FAMILIES)
def test_writelane_sets_one_lane_of_each_wave(target, tmp_path):
    """v_writelane_b32 (how a call saves SGPRs in a VGPR): lane 37 of a wave of 64, lane 37 % 32 of each wave of
    32; the other lanes keep their values."""
    out = ran(target, built(tmp_path, WRITELANE, target), "k", 64, np.uint32(0xC0FFEE))
    lanes = target_by_name(target).family.wave_size
    want = [0xC0FFEE if i % lanes == 37 % lanes else i for i in range(64)]
    assert out.tolist() == want


PRIVATE_THROUGH_A_CALL = r"""
__attribute__((noinline)) void fill(uint* p, uint n, uint v) { for (uint k = 0; k < n; k++) p[k] = v + k; }
__kernel void k(__global uint* out, uint n) {
  uint i = __builtin_amdgcn_workitem_id_x();
  uint priv[16];
  fill(priv, n, i * 100);
  out[i] = priv[n - 1] + priv[0];
}"""


@pytest.mark.parametrize("target", FAMILIES)
def test_a_call_fills_private_memory_through_a_generic_pointer(target, tmp_path):
    """A function called with a pointer to the caller's private array stores through it as a flat address in the
    private aperture: gfx9 keeps FLAT_SCRATCH in SGPRs, gfx10's prologue sets it with s_setreg, later targets have
    it set up (the call saves SGPRs with v_writelane)."""
    out = ran(target, built(tmp_path, PRIVATE_THROUGH_A_CALL, target), "k", 64, np.uint32(9))
    assert out.tolist() == [200 * i + 8 for i in range(64)]


PACKED_CONSTANTS = r"""
__kernel void k(__global float* out, __global const float2* f, __global const half2* h) {
  uint i = __builtin_amdgcn_workitem_id_x();
  float2 y = f[i] * 0.5f, z = f[i] * 2.0f + 1.0f;
  half2 x = h[i] * (half)0.5f + (half)2.0f;
  out[6 * i] = y.x; out[6 * i + 1] = y.y; out[6 * i + 2] = z.x; out[6 * i + 3] = z.y;
  out[6 * i + 4] = (float)x.x; out[6 * i + 5] = (float)x.y;
}"""


@pytest.mark.parametrize("target", FAMILIES)
def test_a_float_inline_constant_of_a_packed_operation_is_one_element(target, tmp_path):
    """Campaign 50: v_pk_mul_f32 ..., 0.5 op_sel_hi:[1,0] (gfx9) and v_pk_mul_f16 ..., 0.5 multiplied by 0: the
    constant was read as a whole 64- or 32-bit value (the double's or the float's bits), whose low element,
    the one op_sel picks for both lanes, is 0. It is one element of the operation's type, in the low half."""
    f = (np.arange(128, dtype=np.float32) * 0.75 - 20).reshape(64, 2)
    h = (np.arange(128, dtype=np.float16) * np.float16(0.25) - np.float16(8)).reshape(64, 2)
    out = ran(target, built(tmp_path, "#pragma OPENCL EXTENSION cl_khr_fp16 : enable\n" + PACKED_CONSTANTS, target),
              "k", 6 * 64, f, h).view(np.float32).reshape(64, 6)
    assert np.array_equal(out[:, 0:2], f * 0.5) and np.array_equal(out[:, 2:4], f * 2 + 1)
    assert np.array_equal(out[:, 4:6], (h * np.float16(0.5) + np.float16(2)).astype(np.float32))


BYTE_COMPARE_EXIT = r"""
__kernel void k(__global uint* out, __global const uint* in) {
  uint i = __builtin_amdgcn_workitem_id_x();
  uint v = in[i], priv[24], acc = 0;
  for (uint k = 0; k < 24; k++) priv[k] = v * (k + 1) ^ k;
  for (uint k = 0; k < 24; k++) {
    acc += priv[(v + k * 7) % 24];
    if ((acc & 0xff) == 0x5a) break;
  }
  out[i] = acc;
}"""


@pytest.mark.parametrize("target", FAMILIES)
def test_an_sdwa_compare_into_a_high_sgpr_pair_runs(target, tmp_path):
    """Campaign 50: v_cmp_ne_u32_sdwa s[36:37], v1, s34 src0_sel:BYTE_0 (gfx9, gfx10) was refused as 'clamp not
    emulated': VOPC SDWA has no clamp bit there; bit 45 is SDST's bit 5."""
    values = np.array([i * 2654435761 & 0xFFFFFFFF for i in range(64)], np.uint32)

    def expect(v: int) -> int:
        priv = [(v * (k + 1) ^ k) & 0xFFFFFFFF for k in range(24)]
        acc = 0
        for k in range(24):
            acc = (acc + priv[(v + k * 7) % 24]) & 0xFFFFFFFF
            if acc & 0xFF == 0x5A:
                break
        return acc
    out = ran(target, built(tmp_path, BYTE_COMPARE_EXIT, target), "k", 64, values)
    assert out.tolist() == [expect(v) for v in values.tolist()]


D16_HALVES = r"""
typedef short short2 __attribute__((ext_vector_type(2)));
__kernel void ustore(__global uint* out, __global const uchar* a, __global const short* s, __global const uint* idx) {
  __global uchar* o = (__global uchar*)out; uint i = __builtin_amdgcn_workitem_id_x();
  o[i] = a[i] + a[i + 1] * 2;
  o[i + 256] = (uchar)((a[i] * 7 + 3) / 5);
}
__kernel void gather(__global uint* out, __global const uchar* a, __global const short* s, __global const uint* idx) {
  __global short2* o = (__global short2*)out; uint i = __builtin_amdgcn_workitem_id_x();
  o[i] = (short2)(s[idx[i]], s[idx[i + 1]]);
}
__kernel void lds(__global uint* out, __global const uchar* a, __global const short* s, __global const uint* idx) {
  __local short ls[128]; uint i = __builtin_amdgcn_workitem_id_x();
  ls[i] = s[i]; ls[i + 64] = s[i + 64];
  __builtin_amdgcn_fence(__ATOMIC_RELEASE, "workgroup");
  __builtin_amdgcn_s_barrier();
  __builtin_amdgcn_fence(__ATOMIC_ACQUIRE, "workgroup");
  uint j = (i * 37 + 11) & 63;
  out[i] = __builtin_bit_cast(uint, (short2)(ls[j], ls[j + 64]));
}"""


@pytest.mark.parametrize("target", FAMILIES)
def test_d16_loads_and_stores_move_one_half_of_a_vgpr(target, tmp_path):
    """Campaign 50: plain char and short code compiles to global_store_byte_d16_hi, global_load_short_d16_hi and
    ds_read_u16_d16_hi (d16_hi_b8, d16_hi_b16, ds_load_u16_d16_hi on gfx11+), which were not emulated. A D16
    load writes one half of its VGPR and keeps the other; a D16_HI store stores the high half."""
    code = built(tmp_path, D16_HALVES, target)
    listing = subprocess.run(["llvm-objdump-19", "-d", code], capture_output=True, text=True, check=True).stdout
    assert "d16_hi" in listing
    a = (np.arange(65) * 37 % 256).astype(np.uint8)
    s = (np.arange(128) * 977 - 30000).astype(np.int16)
    idx = (np.arange(65) * 13 % 64).astype(np.uint32)
    stored = np.zeros(512, np.uint8)
    stored[:64] = (a[:64].astype(int) + a[1:].astype(int) * 2) & 0xFF
    stored[256:320] = ((a[:64].astype(int) * 7 + 3) // 5) & 0xFF
    assert ran(target, code, "ustore", 128, a, s, idx).view(np.uint8).tolist() == stored.tolist()
    pairs = np.stack([s[idx[:64]], s[idx[1:]]], 1).reshape(-1)
    assert ran(target, code, "gather", 64, a, s, idx).view(np.int16).tolist() == pairs.tolist()
    j = (np.arange(64) * 37 + 11) & 63
    assert ran(target, code, "lds", 64, a, s, idx).view(np.int16).tolist() == \
        np.stack([s[j], s[j + 64]], 1).reshape(-1).tolist()


HALF_MATH = r"""
#pragma OPENCL EXTENSION cl_khr_fp16 : enable
typedef short short4 __attribute__((ext_vector_type(4)));
#define I __builtin_amdgcn_workitem_id_x()
#define ARGS __global const float* a, __global const short4* s, __global const half* h
__kernel void pack(__global half* o, ARGS) { uint i = I; o[2*i] = (half)a[2*i]; o[2*i+1] = (half)a[2*i+1]; }
__kernel void fmaak(__global half* o, ARGS) { uint i = I; o[i] = __builtin_fmaf16(h[i], h[i], (half)1.5f); }
__kernel void fmamk(__global half* o, ARGS) { uint i = I; o[i] = (half)2.5f * h[i] + h[i+64]; }
__kernel void mix(__global float* o, ARGS) { uint i = I; o[i] = __builtin_fmaf((float)h[i], a[i], (float)h[i+1]); }
__kernel void mixlo(__global half* o, ARGS) { uint i = I; o[i] = (half)(a[i] * (float)h[i] + a[i+1]); }
__kernel void hdiv(__global half* o, ARGS) { uint i = I; o[i] = h[i] / h[i+64]; }
__kernel void pkmad(__global short4* o, ARGS) { uint i = I; o[i] = s[i] * s[i+64] + (short4)(1, 2, 3, 4); }
__kernel void mixhi(__global half2* o, ARGS) {
  uint i = I; o[i] = (half2)((half)(a[i] * (float)h[i] + a[i+1]), (half)(a[i+2] * (float)h[i+1] - a[i]));
}
__kernel void mixabs(__global float* o, ARGS) {
  uint i = I; o[i] = __builtin_fmaf(-__builtin_fabsf((float)h[i]), a[i], (float)h[i+1]);
}
"""


@pytest.mark.parametrize("target", FAMILIES)
def test_half_and_short_vector_code_runs(target, tmp_path):
    """Campaign 50: one line of half or short4 C each compiles to an instruction that was not emulated:
    v_pack_b32_f16, v_fmaak_f16, v_fmamk_f16, v_fma_mix_f32 (with -|x|), v_fma_mixlo_f16 and v_fma_mixhi_f16
    (and v_div_fixup_f16 in a half division), v_pk_mad_u16. Each result is numpy's, bit for bit."""
    a = (np.arange(129) / 3 - 20).astype(np.float32)
    h = (np.arange(129) / 8 - 7.9).astype(np.float16)
    s = (np.arange(512) * 37 - 9000).astype(np.int16).reshape(128, 4)
    ea, eh = (np.arange(129) % 16 / 8).astype(np.float32), (np.arange(129) % 13 / 8 - 1).astype(np.float16)
    wide, f16, f32 = np.float64, np.float16, np.float32
    want = {
        "pack": a[:128].astype(f16),
        "fmaak": (h[:64].astype(wide) ** 2 + 1.5).astype(f16),
        "fmamk": (2.5 * h[:64].astype(wide) + h[64:128]).astype(f16),
        "mix": (h[:64].astype(wide) * a[:64] + h[1:65]).astype(f32),
        "mixlo": (a[:64].astype(wide) * h[:64] + a[1:65]).astype(f16),
        "hdiv": (h[:64].astype(wide) / h[64:128]).astype(f16),
        "pkmad": (s[:64].astype(np.int64) * s[64:128] + [1, 2, 3, 4]).astype(np.int16).ravel(),
        # gfx9 computes it as v_pk_fma_f32 and two conversions: inputs whose results are exact in f16 alike
        "mixhi": np.stack([ea[:64].astype(wide) * eh[:64] + ea[1:65],
                           ea[2:66].astype(wide) * eh[1:65] - ea[:64]], 1).astype(f16).ravel(),
        "mixabs": (-np.abs(h[:64].astype(wide)) * a[:64] + h[1:65]).astype(f32),
    }
    code = built(tmp_path, HALF_MATH, target)
    for kernel, expected in want.items():
        got = ran(target, code, kernel, expected.nbytes // 4, *((ea, s, eh) if kernel == "mixhi" else (a, s, h)))
        got = got.view(expected.dtype)
        assert np.array_equal(got, expected), (kernel, got[:4], expected[:4])


BYTE_SUMS = r"""
__kernel void k(__global uint* out, __global const uint* a, __global const uint* b) {
  uint i = __builtin_amdgcn_workitem_id_x();
  uint x = a[i], y = b[i];
  out[6*i] = __builtin_amdgcn_sad_u8(x, y, i);
  out[6*i+1] = __builtin_amdgcn_msad_u8(x, y, i);
  out[6*i+2] = __builtin_amdgcn_lerp(x, y, i * 0x01010101u);
  out[6*i+3] = __builtin_amdgcn_sad_hi_u8(x, y, i);
  out[6*i+4] = __builtin_amdgcn_sad_u16(x, y, i);
#ifdef DOT
  out[6*i+5] = __builtin_amdgcn_sdot4(x, y, (int)i, false);
#endif
}"""


@pytest.mark.parametrize("target", FAMILIES)
def test_byte_sums_of_differences_averages_and_dot_products(target, tmp_path):
    """Campaign 46: v_sad_u8, v_msad_u8, v_lerp_u8, v_sad_hi_u8, v_sad_u16 (every family) and v_dot4c_i32_i8
    (__builtin_amdgcn_sdot4 where the target has it) were not emulated."""
    dot = target in ("gfx90a", "gfx942", "gfx1030")
    a = np.array([(i * 2654435761) & 0xFFFFFFFF for i in range(64)], np.uint32)
    b = np.array([(i * 40503 * 40503 + 0x00FF0080) & 0xFFFFFFFF for i in range(64)], np.uint32)
    b[::7] &= 0xFF00FF00  # zero reference bytes, which MSAD skips
    out = ran(target, built(tmp_path, ("#define DOT\n" if dot else "") + BYTE_SUMS, target), "k", 6 * 64, a, b)

    def parts(v: int, bits: int) -> list[int]:
        return [(v >> k) & ((1 << bits) - 1) for k in range(0, 32, bits)]

    for i, (x, y) in enumerate(zip(a.tolist(), b.tolist(), strict=True)):
        sad8 = sum(abs(p - q) for p, q in zip(parts(x, 8), parts(y, 8), strict=True))
        msad = sum(abs(p - q) for p, q in zip(parts(x, 8), parts(y, 8), strict=True) if q)
        lerp = sum(((p + q + (i & 1)) >> 1) << (8 * k) for k, (p, q) in enumerate(zip(parts(x, 8), parts(y, 8),
                                                                                        strict=True)))
        sad16 = sum(abs(p - q) for p, q in zip(parts(x, 16), parts(y, 16), strict=True))
        want = [sad8 + i, msad + i, lerp, ((sad8 << 16) + i) & 0xFFFFFFFF, sad16 + i]
        if dot:
            s8 = [p - 256 if p > 127 else p for p in parts(x, 8)], [q - 256 if q > 127 else q for q in parts(y, 8)]
            want.append((sum(p * q for p, q in zip(*s8, strict=True)) + i) & 0xFFFFFFFF)
        assert out[6 * i:6 * i + len(want)].tolist() == want, i


UNOPTIMISED = r"""
kernel void k(global int *out, global const int *a, int n) {
    int i = __builtin_amdgcn_workitem_id_x();
    int s = 0;
    for (int j = 0; j < n; j++) { if ((a[i] + j) & 1) s += a[i] * j; else s -= j; }
    out[i] = s;
}
"""


@pytest.mark.parametrize("target", ["gfx90a", "gfx942"])
def test_unoptimised_code_spilling_vgprs_to_accvgprs_runs(target, tmp_path):
    """Campaign 61: at -O0, clang keeps VGPRs across a branch in AccVGPRs (v_accvgpr_write/read), which are the
    unified register file's VGPRs from the descriptor's ACCUM_OFFSET on."""
    code = built(tmp_path, UNOPTIMISED, target, "-O0")
    listing = subprocess.run(["llvm-objdump-19", "-d", code], capture_output=True, text=True, check=True).stdout
    assert "v_accvgpr_write_b32" in listing and "v_accvgpr_read_b32" in listing
    a = np.arange(64, dtype=np.int32) * 3 - 50
    out = ran(target, code, "k", 64, a, np.int32(7))
    assert out.view(np.int32).tolist() == [sum(x * j if (x + j) & 1 else -j for j in range(7)) for x in a.tolist()]


def test_a_memory_instruction_into_accvgprs_is_reported_not_emulated():
    """gfx90a's memory instructions may load into AccVGPRs (the acc bit); those are refused, not run as if into
    VGPRs. The words are llvm-mc-19's for `global_load_dword a1, v[2:3], off`."""
    ins = decode(bytes([0x00, 0x80, 0x50, 0xDC, 0x02, 0x00, 0xFF, 0x01]), 0, "gfx90a")
    assert ins.text.startswith("global_load_dword a1")
    family = target_by_name("gfx90a").family
    regs = Regs.of(sreg_names("gfx90a"), 512, 64, accum_offset=256)
    memory = MemoryOps(None, 64, family.gfx_major, layout_for(family).architected_flat_scratch)
    with pytest.raises(Unsupported, match="global_load_dword into or from AccVGPRs is not emulated"):
        compile_instruction(ins, 0, regs, memory)


def test_gfx12_uniform_float_operations_take_abs_and_neg_modifiers(tmp_path):
    """Campaign 61: gfx12's v_s_rsq_f32 of |x| stopped the dispatch (its VOP3 encoding's input modifiers)."""
    source = r"""
    kernel void k(global float *out, float x, float y) {
        out[__builtin_amdgcn_workitem_id_x()] = __builtin_amdgcn_rsqf(__builtin_fabsf(x)) + __builtin_sqrtf(-y);
    }
    """
    code = built(tmp_path, source, "gfx1201")
    listing = subprocess.run(["llvm-objdump-19", "-d", code], capture_output=True, text=True, check=True).stdout
    assert "v_s_rsq_f32" in listing and "|s" in listing
    assert ran("gfx1201", code, "k", 64, np.float32(-4.0), np.float32(-9.0)).view(np.float32).tolist() == [3.5] * 64


def test_moves_between_vgprs_indexed_by_m0_read_and_write_where_m0_points():
    """Campaign 70: a private array indexed at run time is kept in VGPRs on RDNA and written with v_movreld, which
    was not emulated. The words are llvm-mc-19's for gfx1100 (`v_movrels_b32 v1, v4`, `v_movreld_b32 v2, v5`,
    `v_movrelsd_b32 v3, v4`, `v_movrelsd_2_b32 v3, v4`); M0 differs between the two waves, and lane 1 is off."""
    from kfdtrace.driver.emulator.shader.operands import OperandError
    from kfdtrace.driver.emulator.shader.waves import SGPR_ROWS, Waves
    family = target_by_name("gfx1100").family
    regs = Regs.of(sreg_names("gfx1100"), 16, 32)
    memory = MemoryOps(None, 32, family.gfx_major, layout_for(family).architected_flat_scratch)

    def ran(words: bytes, m0: list[int]) -> np.ndarray:
        v = np.arange(16 * 2 * 32, dtype=np.uint32).reshape(16, 2, 32)
        s = np.zeros((SGPR_ROWS, 2), np.uint32)
        s[regs.m0] = m0
        lanes = np.ones((2, 32), bool)
        lanes[:, 1] = False
        w = Waves(0, np.arange(2), s, v, np.zeros(2, bool), lanes, np.zeros(2, np.uint64))
        compile_instruction(decode(words, 0, "gfx1100"), 0, regs, memory).run(w)
        return v

    before = np.arange(16 * 2 * 32, dtype=np.uint32).reshape(16, 2, 32)
    v = ran(bytes([0x04, 0x87, 0x02, 0x7E]), [0, 3])  # v1 = v[4 + M0]
    assert (v[1, 0, 2:] == before[4, 0, 2:]).all() and (v[1, 1, 2:] == before[7, 1, 2:]).all()
    assert v[1, 0, 1] == before[1, 0, 1]  # an inactive lane keeps its value
    v = ran(bytes([0x05, 0x85, 0x04, 0x7E]), [1, 6])  # v[2 + M0] = v5
    assert (v[3, 0, 2:] == before[5, 0, 2:]).all() and (v[8, 1, 2:] == before[5, 1, 2:]).all()
    assert (v[2] == before[2]).all() and v[3, 0, 1] == before[3, 0, 1]
    v = ran(bytes([0x04, 0x89, 0x06, 0x7E]), [2, 2])  # v[3 + M0] = v[4 + M0]
    assert (v[5, :, 2:] == before[6, :, 2:]).all()
    v = ran(bytes([0x04, 0x91, 0x06, 0x7E]), [(3 << 16) | 1, (3 << 16) | 1])  # v[3 + M0[25:16]] = v[4 + M0[9:0]]
    assert (v[6, :, 2:] == before[5, :, 2:]).all() and (v[3] == before[3]).all()
    with pytest.raises(OperandError, match=r"v2 \+ M0 = v16 is beyond the 16 VGPRs"):
        ran(bytes([0x05, 0x85, 0x04, 0x7E]), [1, 14])


SIGNED_ZEROS = r"""
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
__kernel void k(__global uint* out, __global const float* a, __global const float* b, __global const double* c,
                __global const double* d, __global const uint* w) {
  uint i = __builtin_amdgcn_workitem_id_x();
  out[6 * i] = as_uint(__builtin_fminf(a[i], b[i]));
  out[6 * i + 1] = as_uint(__builtin_fmaxf(a[i], b[i]));
  out[6 * i + 2] = (uint)(as_ulong(__builtin_fmin(c[i], d[i])) >> 32);
  out[6 * i + 3] = (uint)(as_ulong(__builtin_fmax(c[i], d[i])) >> 32);
  out[6 * i + 4] = as_uint(__builtin_fminf(__builtin_fminf(a[i], b[i]), 1.0f + a[i] * 0.0f));  /* v_min3 */
  uint mask;
  __asm__("v_bfm_b32 %0, %1, %2" : "=v"(mask) : "v"(w[i] >> 8), "v"(w[i]));  /* what unoptimised masks compile to */
  out[6 * i + 5] = mask;
}"""


@pytest.mark.parametrize("target", FAMILIES)
def test_min_and_max_order_minus_zero_below_plus_zero_and_bfm_makes_a_mask(target, tmp_path):
    """Campaign 78: V_MIN/V_MAX compare with -0.0 < +0.0 (the RDNA3 ISA guide's LT_NEG_ZERO, "differs from
    IEEE"), whichever source holds which zero; numpy's fmin gave the first. V_BFM_B32 was not emulated."""
    a = np.array([0.0, -0.0] * 32, np.float32)  # lanes alternate (+0, -0) and (-0, +0)
    widths = np.arange(64, dtype=np.uint32) % 33
    w = (widths << 8) | (np.arange(64, dtype=np.uint32) * 7 % 32)
    out = ran(target, built(tmp_path, SIGNED_ZEROS, target), "k", 6 * 64, a, -a, a.astype(np.float64),
              -a.astype(np.float64), w).reshape(64, 6)
    assert (out[:, :5] == [0x80000000, 0, 0x80000000, 0, 0x80000000]).all()
    masks = [((1 << (int(x) >> 8 & 31)) - 1) << (int(x) & 31) & 0xFFFFFFFF for x in w]
    assert out[:, 5].tolist() == masks


def test_every_float_minimum_and_maximum_orders_minus_zero_below_plus_zero():
    """Each float min/max entry (two and three sources, med3, maxmin/minmax, the _num names, the scalar _num forms,
    the packed halves) on every arrangement of +0.0 and -0.0, against a reference ordering -0.0 below +0.0."""
    import itertools

    from kfdtrace.driver.emulator.shader.compile import _PACKED

    def order(x: float) -> tuple[float, bool]:
        return x, not np.signbit(x)

    lo, hi = (lambda *v: min(v, key=order)), (lambda *v: max(v, key=order))
    reference = {"min": lo, "max": hi, "min3": lo, "max3": hi, "med3": lambda *v: sorted(v, key=order)[1],
                 "maxmin": lambda a, b, c: lo(hi(a, b), c), "minmax": lambda a, b, c: hi(lo(a, b), c)}
    entries = [(name, VALU[name].fn, name.split("_")[1], name[-3:]) for name in VALU
               if name.split("_")[1] in reference and name.endswith(("_f16", "_f32", "_f64"))]
    entries += [(name, SALU[name].fn, name.split("_")[1], "f32") for name in ("s_min_num_f32", "s_max_num_f32")]
    entries += [(name, _PACKED[name][1], name.split("_")[2], "f16") for name in _PACKED
                if name.split("_")[2] in ("min", "max") and name.endswith("f16")]
    assert len(entries) >= 36
    for name, fn, op, ty in entries:
        t = {"f16": np.float16, "f32": np.float32, "f64": np.float64}[ty]
        n = 3 if op in ("min3", "max3", "med3", "maxmin", "minmax") else 2
        lanes = list(itertools.product((0.0, -0.0), repeat=n))
        got = fn(*(np.array(column, t) for column in zip(*lanes, strict=True)))
        want = [np.signbit(reference[op](*lane)) for lane in lanes]
        assert np.signbit(got).tolist() == want, name


SPINNING = r"""
/* workgroup g waits for workgroup g-1's flag, then publishes its own (decoupled look-back); lane 0 only */
__kernel void chain(__global atomic_uint *flag, __global uint *out) {
  uint g = __builtin_amdgcn_workgroup_id_x(), prev = 0;
  if (__builtin_amdgcn_workitem_id_x() == 0) {
    if (g > 0)
      while ((prev = __opencl_atomic_load(&flag[g - 1], __ATOMIC_ACQUIRE, __OPENCL_MEMORY_SCOPE_DEVICE)) == 0) {}
    out[g] = prev;
    __opencl_atomic_store(&flag[g], prev + g + 1, __ATOMIC_RELEASE, __OPENCL_MEMORY_SCOPE_DEVICE);
  }
}
/* one workgroup of two waves: the second waits for an LDS flag the first sets after it */
__kernel void handoff(__global uint *out) {
  __local atomic_uint flag;
  uint lid = __builtin_amdgcn_workitem_id_x(), ws = __builtin_amdgcn_wavefrontsize();
  if (lid == 0) __opencl_atomic_store(&flag, 0u, __ATOMIC_RELAXED, __OPENCL_MEMORY_SCOPE_WORK_GROUP);
  __builtin_amdgcn_fence(__ATOMIC_RELEASE, "workgroup");
  __builtin_amdgcn_s_barrier();
  __builtin_amdgcn_fence(__ATOMIC_ACQUIRE, "workgroup");
  uint got = 0;
  if (lid == ws)
    while ((got = __opencl_atomic_load(&flag, __ATOMIC_ACQUIRE, __OPENCL_MEMORY_SCOPE_WORK_GROUP)) == 0) {}
  if (lid == 0) __opencl_atomic_store(&flag, 42u, __ATOMIC_RELEASE, __OPENCL_MEMORY_SCOPE_WORK_GROUP);
  out[lid] = got;
}"""


LOOK_AHEAD = r"""
/* the first `waiting` workgroups wait for what the last one publishes (message passing); lane 0 of each counts
   itself */
__kernel void wait_for_last(__global int *data, __global atomic_int *flag, __global int *out,
                            __global atomic_int *ran, uint last, uint waiting) {
  uint g = __builtin_amdgcn_workgroup_id_x(), l = __builtin_amdgcn_workitem_id_x();
  if (l == 0) __opencl_atomic_fetch_add(ran, 1, __ATOMIC_RELAXED, __OPENCL_MEMORY_SCOPE_DEVICE);
  if (g == last) {
    data[l] = (int)l * 3 + 1;
    if (l == 0) __opencl_atomic_store(flag, 1, __ATOMIC_RELEASE, __OPENCL_MEMORY_SCOPE_DEVICE);
  }
  if (g < waiting) {
    while (__opencl_atomic_load(flag, __ATOMIC_ACQUIRE, __OPENCL_MEMORY_SCOPE_DEVICE) == 0) {}
    out[l] = data[l];
  }
}"""


@pytest.mark.parametrize("target", FAMILIES)
def test_a_workgroup_waiting_for_one_of_a_later_chunk_lets_that_chunk_run(target, tmp_path, monkeypatch):
    """Campaign 119: the interpreter ran chunks of workgroups one after another, so the first workgroup, waiting
    for a flag the last one sets, ran forever once the grid passed one chunk (4097 workgroups of 64); the
    hardware starts waves as others end. Chunks of two workgroups here: the waiting chunk's spinning lets the
    next ones start beside it, while the GPU holds their waves."""
    from kfdtrace.driver.emulator.shader import interpreter

    code = built(tmp_path, LOOK_AHEAD, target)
    ws = 64 if target.startswith("gfx9") else 32
    monkeypatch.setattr(interpreter, "CHUNK_LANES", 2 * ws)
    with System.open(emulate=target) as system:
        gpu = system.devices[0]
        kernel, q = gpu.load(code).kernel("wait_for_last"), gpu.compute_queue()
        data, flag, out, ran = (gpu.alloc(4 * ws, "gtt", name=n) for n in ("data", "flag", "out", "ran"))
        for b in (data, flag, out, ran):
            b.write(bytes(4 * ws))
        q.dispatch(kernel, (7 * ws,), (ws,), data, flag, out, ran, np.uint32(6), np.uint32(1)).sync(timeout=60)
        assert np.frombuffer(out.read(), np.int32).tolist() == [3 * i + 1 for i in range(ws)]
        assert np.frombuffer(ran.read(0, 4), np.int32)[0] == 7
        q.destroy()


@pytest.mark.parametrize(("resident", "finishes"), [(7, True), (6, False)])
def test_workgroups_start_beside_waiting_ones_only_while_the_gpu_holds_their_waves(resident, finishes, tmp_path,
                                                                                    monkeypatch):
    """Six workgroups of one wave wait for the seventh: a GPU holding seven waves runs it beside them, one
    holding six never starts it (their waves never end), as the hardware would not."""
    from kfdtrace.driver.emulator.shader import interpreter
    from kfdtrace.driver.topology import Node

    code = built(tmp_path, LOOK_AHEAD, "gfx942")
    monkeypatch.setattr(interpreter, "CHUNK_LANES", 2 * 64)
    monkeypatch.setattr(Node, "resident_waves", property(lambda node: resident))
    with System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        kernel, q = gpu.load(code).kernel("wait_for_last"), gpu.compute_queue()
        data, flag, out, ran = (gpu.alloc(256, "gtt", name=n) for n in ("data", "flag", "out", "ran"))
        for b in (data, flag, out, ran):
            b.write(bytes(256))
        q.dispatch(kernel, (7 * 64,), (64,), data, flag, out, ran, np.uint32(6), np.uint32(6))
        if finishes:
            q.sync(timeout=60)
        else:
            with pytest.raises(WaitTimeout):
                q.sync(timeout=3)
        assert np.frombuffer(ran.read(0, 4), np.int32)[0] == (7 if finishes else 6)
        q.destroy()


@pytest.mark.parametrize("target", FAMILIES)
def test_a_wave_spinning_on_a_flag_lets_the_wave_that_sets_it_run(target, tmp_path):
    """Campaign 81: the interpreter ran the set of waves with the lowest PC until it passed another's, and a spin
    loop below the PC of the wave that would set its flag never did: the dispatch ran forever. A loop that goes
    round SPIN_TURNS times now gives the other sets a turn."""
    code = built(tmp_path, SPINNING, target)
    with System.open(emulate=target) as system:
        gpu = system.devices[0]
        program, ws = gpu.load(code), (64 if target.startswith("gfx9") else 32)
        q = gpu.compute_queue()
        flag, out = gpu.alloc(16, "gtt", name="flag"), gpu.alloc(8 * ws, "gtt", name="out")
        flag.write(bytes(16))
        out.write(bytes(8 * ws))
        q.dispatch(program.kernel("chain"), (4 * ws,), (ws,), flag, out).sync(timeout=60)  # 4 workgroups, 1 wave each
        assert np.frombuffer(flag.read(), np.uint32).tolist() == [1, 3, 6, 10]
        q.dispatch(program.kernel("handoff"), (2 * ws,), (2 * ws,), out).sync(timeout=60)
        assert np.frombuffer(out.read(), np.uint32)[ws] == 42
        q.destroy()
