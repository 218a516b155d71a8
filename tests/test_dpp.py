"""DPP on the emulated GPU: kernels clang-19 builds with __builtin_amdgcn_update_dpp and mov_dpp8, run on every
family (RDNA in wave32 and wave64), each lane held to an independent model of the lane rules (tests/dpp_model.py),
and scans and reductions held to sums computed without DPP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kfdtrace.driver import GpuFault
from kfdtrace.driver.emulator.shader.compile import Unsupported, compile_instruction
from kfdtrace.driver.emulator.shader.memory_ops import MemoryOps
from kfdtrace.driver.emulator.shader.operands import Regs
from kfdtrace.driver.families import target_by_name
from kfdtrace.driver.isa import Instruction, decode
from kfdtrace.driver.isa.decoder import sreg_names
from kfdtrace.driver.kernel_descriptor import layout_for
from tests import dpp_model as M
from tests.emulated import FAMILIES
from tests.test_isa_decoder import objdump_compare
from tests.test_shader import _opcode, built, ran

BUILDS = [(t, False) for t in FAMILIES] + [(t, True) for t in FAMILIES if not t.startswith("gfx9")]
IDS = [f"{t}{'-wave64' if w else ''}" for t, w in BUILDS]
EVERY = 0xFFFFFFFF
SOME = 0b1011_0110_1101_1110_0111_1011_1010_1101  # the lanes (l & 31) a branch leaves active
OLD = 0xDEAD0000

# (dpp_ctrl, row_mask, bank_mask, bound_ctrl, active lanes) of each update_dpp the kernel makes
COMMON = [(0x1B, 0xF, 0xF, False, EVERY), (0xE4, 0xF, 0xF, False, SOME), (0x93, 0xF, 0xF, True, SOME),
          (0x101, 0xF, 0xF, False, EVERY), (0x10F, 0xF, 0xF, True, EVERY), (0x103, 0xF, 0xF, False, SOME),
          (0x111, 0xF, 0xF, True, EVERY), (0x11F, 0xF, 0xF, False, EVERY), (0x115, 0xF, 0xF, True, SOME),
          (0x121, 0xF, 0xF, False, EVERY), (0x12F, 0xF, 0xF, False, SOME), (0x140, 0xF, 0xF, False, EVERY),
          (0x141, 0xF, 0xF, True, SOME), (0x150, 0xF, 0xF, False, EVERY), (0x155, 0xF, 0xF, False, SOME),
          (0x101, 0x5, 0xF, True, EVERY), (0x101, 0xA, 0x6, False, EVERY), (0x111, 0xF, 0x9, True, SOME),
          (0x11F, 0x3, 0xE, False, SOME)]
GFX9_ONLY = [(0x130, 0xF, 0xF, False, EVERY), (0x134, 0xF, 0xF, False, EVERY), (0x138, 0xF, 0xF, True, EVERY),
             (0x13C, 0xF, 0xF, False, SOME), (0x142, 0xA, 0xF, False, EVERY), (0x143, 0xC, 0xF, False, EVERY)]
GFX10_ONLY = [(0x161, 0xF, 0xF, False, EVERY), (0x16F, 0xF, 0xF, False, SOME), (0x15F, 0xC, 0xF, True, EVERY)]
DPP8 = [([7, 6, 5, 4, 3, 2, 1, 0], EVERY), ([1, 1, 3, 0, 7, 2, 6, 5], SOME), ([0, 0, 0, 0, 0, 0, 0, 0], SOME)]


def _variants(target: str) -> tuple[list, list]:
    gfx9 = target.startswith("gfx9")
    return COMMON + (GFX9_ONLY if gfx9 else GFX10_ONLY), [] if gfx9 else DPP8


def _kernel(target: str) -> str:
    updates, moves = _variants(target)
    body = []
    for k, (ctrl, rows, banks, bound, active) in enumerate(updates):
        call = f"__builtin_amdgcn_update_dpp(old, v, {ctrl:#x}, {rows:#x}, {banks:#x}, {str(bound).lower()})"
        body.append(f"  if (({active:#x}u >> (l & 31)) & 1u) out[{k * 64} + l] = {call};")
    for k, (selects, active) in enumerate(moves, len(updates)):
        word = sum(s << 3 * i for i, s in enumerate(selects))
        body.append(f"  if (({active:#x}u >> (l & 31)) & 1u) out[{k * 64} + l] = __builtin_amdgcn_mov_dpp8(v, {word});")
    return ("__kernel void lanes(__global uint *out, __global const uint *in, uint old) {\n"
            "  uint l = __builtin_amdgcn_workitem_id_x();\n  uint v = in[l];\n" + "\n".join(body) + "\n}\n")


@pytest.mark.parametrize(("target", "wave64"), BUILDS, ids=IDS)
def test_update_dpp_and_mov_dpp8_give_what_the_model_gives_lane_by_lane(tmp_path, target, wave64):
    updates, moves = _variants(target)
    gfx9, wave = target.startswith("gfx9"), 64 if wave64 or target.startswith("gfx9") else 32
    values = (np.arange(64, dtype=np.uint32) * 1000 + 7).astype(np.uint32)
    code = built(tmp_path, _kernel(target), target, "-O2", *(["-mwavefrontsize64"] if wave64 else []))
    got = ran(target, code, "lanes", 64 * (len(updates) + len(moves)), values, np.uint32(OLD)).reshape(-1, 64)
    for k, variant in enumerate(updates + moves):
        want = []
        for first in range(0, 64, wave):
            active = sum((variant[-1] >> ((first + i) & 31) & 1) << i for i in range(wave))
            lanes = [int(x) for x in values[first:first + wave]]
            if k < len(updates):
                ctrl, rows, banks, bound, _ = variant
                want += M.dpp16(lanes, active, [OLD] * wave, ctrl, rows, banks, bound, False, gfx9)
            else:
                want += M.dpp8(lanes, active, [0] * wave, variant[0], False)
            want[first:] = [w if active >> i & 1 else 0 for i, w in enumerate(want[first:])]  # (not stored)
        assert got[k].tolist() == want, f"{target} variant {variant}: lanes {np.flatnonzero(got[k] != want)}"


SCANS = r"""
#define SHR(v, s) __builtin_amdgcn_update_dpp(0u, v, 0x110 | s, 0xf, 0xf, true)
#define FSHR(v, s) __builtin_bit_cast(float, __builtin_amdgcn_update_dpp(0, __builtin_bit_cast(int, v), 0x110 | s, \
                                                                          0xf, 0xf, true))
__kernel void scans(__global uint *out, __global const uint *in, __global const float *f) {
  uint l = __builtin_amdgcn_workitem_id_x();
  uint x = in[l], q = in[l];
  float y = f[l];
  x += SHR(x, 1); x += SHR(x, 2); x += SHR(x, 4); x += SHR(x, 8);  /* prefix sums within each row of 16 */
  y += FSHR(y, 1); y += FSHR(y, 2); y += FSHR(y, 4); y += FSHR(y, 8);
  q += __builtin_amdgcn_update_dpp(0u, q, 0xb1, 0xf, 0xf, false);  /* quad_perm:[1,0,3,2] */
  q += __builtin_amdgcn_update_dpp(0u, q, 0x4e, 0xf, 0xf, false);  /* quad_perm:[2,3,0,1]: every lane the quad's sum */
  out[l] = x;
  out[64 + l] = __builtin_bit_cast(uint, y);
  out[128 + l] = q;
}
"""


@pytest.mark.parametrize(("target", "wave64"), BUILDS, ids=IDS)
def test_scans_and_quad_sums_built_of_dpp_add_up(tmp_path, target, wave64):
    """What clang makes of these (v_add_*_dpp with bound_ctrl, VOP2 DPP) against sums numpy makes."""
    rng = np.random.default_rng(5)
    ints = rng.integers(0, 1 << 20, 64, dtype=np.uint32)
    floats = rng.integers(-1000, 1000, 64).astype(np.float32)  # small integers: every sum exact
    code = built(tmp_path, SCANS, target, "-O2", *(["-mwavefrontsize64"] if wave64 else []))
    got = ran(target, code, "scans", 192, ints, floats).reshape(3, 64)
    assert got[0].tolist() == np.cumsum(ints.reshape(4, 16), axis=1, dtype=np.uint32).reshape(-1).tolist()
    assert got[1].view(np.float32).tolist() == np.cumsum(floats.reshape(4, 16), axis=1).reshape(-1).tolist()
    assert got[2].tolist() == np.repeat(ints.reshape(16, 4).sum(axis=1, dtype=np.uint32), 4).tolist()


def test_the_model_gives_what_tinygrad_measured_on_rdna3():
    """RDNA3 wave64 with bound_ctrl, lane l holding 10*l+3 (tinygrad test/amd/hw/test_dpp.py)."""
    v, full, zero = [10 * i + 3 for i in range(64)], (1 << 64) - 1, [0] * 64

    def run(ctrl: int) -> list[int]:
        return M.dpp16(v, full, zero, ctrl, 0xF, 0xF, True, False, False)
    assert run(0x1B)[0:5] == [33, 23, 13, 3, 73]  # quad_perm:[3,2,1,0]
    assert [run(0x101)[i] for i in (0, 7, 14, 15, 16)] == [13, 83, 153, 0, 173]  # row_shl:1
    assert [run(0x111)[i] for i in (0, 1, 8, 15, 16, 17)] == [0, 3, 73, 143, 0, 163]  # row_shr:1
    assert [run(0x121)[i] for i in (0, 1, 15, 16)] == [153, 3, 143, 313]  # row_ror:1
    assert [run(0x140)[i] for i in (0, 5, 8, 16)] == [153, 103, 73, 313]  # row_mirror
    assert [run(0x141)[i] for i in (0, 7, 8, 15, 16)] == [73, 3, 153, 83, 233]  # row_half_mirror


@pytest.mark.parametrize("target", FAMILIES)
def test_a_dpp_control_the_generation_has_not_stops_the_dispatch_as_not_emulated(tmp_path, target, caplog):
    """row_xmask on gfx9, wave_shl on gfx10+: patched into a kernel clang built with a valid one."""
    valid, other = (0x101, 0x161) if target.startswith("gfx9") else (0x101, 0x130)
    code = bytearray(open(built(tmp_path, _one(valid), target), "rb").read())
    needle = (0xFF << 24 | 1 << 19 | valid << 8).to_bytes(4, "little")[1:]  # the DPP dword after its VGPR byte
    at = code.index(needle)
    code[at:at + 3] = (0xFF << 24 | 1 << 19 | other << 8).to_bytes(4, "little")[1:]
    path = tmp_path / "patched.co"
    path.write_bytes(bytes(code))
    with pytest.raises(GpuFault) as fault:
        ran(target, str(path), "one", 64, np.arange(64, dtype=np.uint32))
    assert "stopped a queue" in str(fault.value) and "VM fault" not in str(fault.value)
    assert f"dpp_ctrl {other:#x} is no lane pattern of" in caplog.text


def _one(ctrl: int) -> str:
    return ("__kernel void one(__global uint *out, __global const uint *in) {\n  uint l = "
            "__builtin_amdgcn_workitem_id_x();\n  out[l] = __builtin_amdgcn_update_dpp(0u, in[l], "
            f"{ctrl:#x}, 0xf, 0xf, true);\n}}\n")


def test_dpp_into_exec_that_may_leave_lanes_unwritten_is_not_emulated():
    """A v_cmpx DPP whose row mask (or missing bound_ctrl) may leave lanes unwritten: EXEC would have to change for
    some lanes only, which the emulator does not guess; a compare into VCC is emulated (unwritten lanes: 0)."""
    family = target_by_name("gfx1100").family
    regs = Regs.of(sreg_names("gfx1100"), 256, 32, layout_for(family).architected_sgprs)
    memory = MemoryOps(None, 32, family.gfx_major, layout_for(family).architected_flat_scratch)

    def vopc(mnemonic: str, rows: int, bound: int) -> Instruction:  # v_cmp(x)_eq_u32 v1, v2 row_shl:1
        op = _opcode("gfx1100", "VOPC_DPP", mnemonic)
        return decode((0x7C000000 | op << 17 | 2 << 9 | 0xFA).to_bytes(4, "little") +
                      (1 | 0x101 << 8 | bound << 19 | 0xF << 24 | rows << 28).to_bytes(4, "little"), 0, "gfx1100")
    assert vopc("v_cmp_eq_u32", 0x3, 0).text == "v_cmp_eq_u32 vcc_lo, v1, v2 row_shl:1 row_mask:0x3 bank_mask:0xf"
    for rows, bound in ((0x3, 0), (0x1, 1), (0xF, 0)):
        with pytest.raises(Unsupported, match="may leave lanes unwritten"):
            compile_instruction(vopc("v_cmpx_eq_u32", rows, bound), 0, regs, memory)
        compile_instruction(vopc("v_cmp_eq_u32", rows, bound), 0, regs, memory)
    compile_instruction(vopc("v_cmpx_eq_u32", 0xF, 1), 0, regs, memory)  # every active lane written: emulated


@pytest.mark.parametrize(("target", "wave64"), BUILDS, ids=IDS)
def test_the_dpp_kernels_decode_as_llvm_objdump_prints_them(tmp_path, target, wave64):
    flags = ["-mwavefrontsize64"] if wave64 else []
    for source in (_kernel(target), SCANS):
        count, bad = objdump_compare(Path(built(tmp_path, source, target, "-O2", *flags)), target)
        assert count > 20 and bad == []


VOP3 = r"""
#define FSHR(v, s) __builtin_bit_cast(float, __builtin_amdgcn_update_dpp(0, __builtin_bit_cast(int, v), 0x110 | s, \
                                                                          0xf, 0xf, true))
#define SHL(v, s) __builtin_amdgcn_update_dpp(0u, v, 0x100 | s, 0xf, 0xf, true)
__kernel void vop3(__global uint *out, __global const float *a, __global const float *b, __global const uint *u) {
  uint l = __builtin_amdgcn_workitem_id_x();
  float x = a[l], y = b[l];
  uint v = u[l], s = SHL(v, 3), m = s > v ? s : v;
  out[l] = __builtin_bit_cast(uint, __builtin_fmaf(FSHR(x, 1), y, 2.0f));  /* gfx11+: v_fma_f32_e64_dpp */
  out[64 + l] = __builtin_bit_cast(uint, __builtin_fabsf(FSHR(x, 2)) + y);  /* v_add_f32_dpp with |src0| */
  out[128 + l] = (SHL(v, 1) ^ v) + (v << 3);  /* v_xad_u32_e64_dpp */
  out[192 + l] = m > l ? m : l;  /* v_max3_u32_e64_dpp */
}
"""


def _rows(a: np.ndarray, n: int) -> np.ndarray:
    """`a` with each lane taking the lane n on in its row of 16 (n < 0: before), 0 where there is none."""
    lane = np.arange(64)
    src = lane + n
    return np.where((src >> 4 == lane >> 4) & (src >= 0), a[np.clip(src, 0, 63)], 0).astype(a.dtype)


@pytest.mark.parametrize(("target", "wave64"), BUILDS, ids=IDS)
def test_vop3_and_modified_dpp_compute_what_numpy_does(tmp_path, target, wave64):
    """On gfx11+ clang makes VOP3 DPP of these (v_fma_f32_e64_dpp, v_xad_u32_e64_dpp, v_max3_u32_e64_dpp)."""
    rng = np.random.default_rng(9)
    a, b = rng.integers(-64, 64, 64).astype(np.float32), rng.integers(-64, 64, 64).astype(np.float32)
    u = rng.integers(0, 1 << 31, 64, dtype=np.uint32)
    code = built(tmp_path, VOP3, target, "-O2", *(["-mwavefrontsize64"] if wave64 else []))
    got = ran(target, code, "vop3", 256, a, b, u).reshape(4, 64)
    assert got[0].view(np.float32).tolist() == (_rows(a, -1) * b + np.float32(2)).tolist()  # exact: small integers
    assert got[1].view(np.float32).tolist() == (np.abs(_rows(a, -2)) + b).tolist()
    assert got[2].tolist() == ((_rows(u, 1) ^ u) + (u << np.uint32(3))).tolist()
    assert got[3].tolist() == np.maximum(np.maximum(_rows(u, 3), u), np.arange(64, dtype=np.uint32)).tolist()


LONG_SCAN = r"""
#define STEP(c, bm) { int2 v = as_int2(x); \
    int lo = __builtin_amdgcn_update_dpp(0, v.x, c, 0xf, bm, false); \
    int hi = __builtin_amdgcn_update_dpp(0, v.y, c, 0xf, bm, false); \
    x += as_long((int2)(lo, hi)); }
__kernel void scan(__global long *out, __global const long *in) {  /* rocPRIM's row scan, 64 bits in two halves */
  uint l = __builtin_amdgcn_workitem_id_x();
  long x = in[l];
  STEP(0x111, 0xf) STEP(0x112, 0xf) STEP(0x114, 0xe) STEP(0x118, 0xc)
  out[l] = x;
}
"""


@pytest.mark.parametrize(("target", "wave64"), BUILDS, ids=IDS)
def test_a_64_bit_row_scan_with_masked_banks_adds_up(tmp_path, target, wave64):
    """On gfx11+ clang folds the low halves' add into v_add_co_u32_e64_dpp with bank_mask 0xe and no bound_ctrl:
    a carry-out from DPP that leaves lanes unwritten (campaign 125)."""
    values = np.random.default_rng(3).integers(-(1 << 62), 1 << 62, 64, dtype=np.int64)
    code = built(tmp_path, LONG_SCAN, target, "-O2", *(["-mwavefrontsize64"] if wave64 else []))
    got = ran(target, code, "scan", 128, values).view(np.int64)
    assert got.tolist() == np.cumsum(values.reshape(4, 16), axis=1, dtype=np.int64).reshape(-1).tolist()


ATOMIC = r"""
__kernel void total(__global uint *before, __global uint *counter, __global const uint *in) {
  uint l = __builtin_amdgcn_workitem_id_x();
  if (in[l] & 1) before[l] = __atomic_fetch_add(counter, in[l], __ATOMIC_RELAXED);  /* the odd values only */
}
"""


@pytest.mark.parametrize(("target", "wave64"), BUILDS, ids=IDS)
def test_the_dpp_atomic_optimizer_hands_each_lane_its_running_total(tmp_path, target, wave64):
    """LLVM's atomic optimizer with its DPP strategy: a scan of the wave's values (DPP, and v_permlanex16_b32 on
    gfx10+), one atomic per wave, each lane's old value from the scan (campaign 125)."""
    values = np.random.default_rng(4).integers(0, 1000, 64).astype(np.uint32)
    flags = ["-mllvm", "-amdgpu-atomic-optimizer-strategy=DPP", *(["-mwavefrontsize64"] if wave64 else [])]
    code = built(tmp_path, ATOMIC, target, "-O2", *flags)
    got = ran(target, code, "total", 64, np.zeros(1, np.uint32), values)
    wave = 64 if wave64 or target.startswith("gfx9") else 32
    odd = values & 1 == 1
    bases = []
    for first in range(0, 64, wave):  # each wave's lanes in lane order, from where the counter stood for it
        mine = odd[first:first + wave]
        taken = np.where(mine, values[first:first + wave], 0)
        exclusive = np.cumsum(taken) - taken
        base = got[first:first + wave][mine][0] - exclusive[mine][0]
        assert got[first:first + wave][mine].tolist() == (base + exclusive[mine]).tolist()
        assert got[first:first + wave][~mine].tolist() == [0] * int((~mine).sum())
        bases.append((int(base), int(values[first:first + wave][mine].sum())))
    running = 0
    for base, total in sorted(bases):  # the waves' atomics, one after another
        assert base == running
        running += total


PERMLANE = [(False, 0x76543210, 0xFEDCBA98, False, False, EVERY), (False, 0x01234567, 0x89ABCDEF, False, False, SOME),
            (True, 0x01234567, 0x89ABCDEF, True, False, SOME), (True, 0xFFFFFFFF, 0xFFFFFFFF, False, False, EVERY),
            (False, 0x13579BDF, 0x02468ACE, False, True, SOME), (True, 0x13579BDF, 0x02468ACE, True, True, SOME)]


def _permlanes() -> str:
    body = []
    for k, (across, lo, hi, fi, bound, active) in enumerate(PERMLANE):
        name = "permlanex16" if across else "permlane16"
        call = f"__builtin_amdgcn_{name}(old, v, {lo:#x}u, {hi:#x}u, {str(fi).lower()}, {str(bound).lower()})"
        body.append(f"  if (({active:#x}u >> (l & 31)) & 1u) out[{k * 64} + l] = {call};")
    return ("__kernel void lanes(__global uint *out, __global const uint *in, uint old) {\n"
            "  uint l = __builtin_amdgcn_workitem_id_x();\n  uint v = in[l];\n" + "\n".join(body) + "\n}\n")


@pytest.mark.parametrize(("target", "wave64"), [b for b in BUILDS if not b[0].startswith("gfx9")],
                         ids=[i for i, b in zip(IDS, BUILDS, strict=True) if not b[0].startswith("gfx9")])
def test_permlane16_and_permlanex16_give_each_lane_the_one_its_select_names(tmp_path, target, wave64):
    """AMD's pseudocode (V_PERMLANE16_B32, V_PERMLANEX16_B32): lane i of a row reads lane sel[i] of its row (x16: of
    the other row of its pair); fi and bound_ctrl as DPP's for an inactive source lane."""
    wave = 64 if wave64 else 32
    values = (np.arange(64, dtype=np.uint32) * 1000 + 7).astype(np.uint32)
    code = built(tmp_path, _permlanes(), target, "-O2", *(["-mwavefrontsize64"] if wave64 else []))
    got = ran(target, code, "lanes", 64 * len(PERMLANE), values, np.uint32(OLD)).reshape(-1, 64)
    for k, (across, lo, hi, fi, bound, active) in enumerate(PERMLANE):
        want = []
        for lane in range(64):
            first = lane // wave * wave
            on = [active >> ((first + i) & 31) & 1 for i in range(wave)]
            i = lane - first
            src = ((i & ~15) ^ (16 if across else 0)) + ((hi << 32 | lo) >> 4 * (i & 15) & 15)
            if not on[i]:
                want.append(0)  # (not stored)
            elif on[src] or fi:
                want.append(int(values[first + src]))
            else:
                want.append(0 if bound else OLD)
        assert got[k].tolist() == want, f"{target} {PERMLANE[k]}: lanes {np.flatnonzero(got[k] != want)}"


VAR = r"""
__kernel void var(__global uint *out, __global const uint *in, __global const uint *sel, uint old) {
  uint l = __builtin_amdgcn_workitem_id_x();
  uint v = in[l], s = sel[l];
  out[l] = __builtin_amdgcn_permlane16_var(old, v, s, false, false);
  if (l % 3) out[64 + l] = __builtin_amdgcn_permlanex16_var(old, v, s, false, true);
  if (l % 5) out[128 + l] = __builtin_amdgcn_permlane16_var(old, v, s, true, false);
}
"""


@pytest.mark.parametrize("wave64", [False, True], ids=["wave32", "wave64"])
def test_gfx12_permlane_var_takes_each_lane_s_select_from_its_own_vgpr(tmp_path, wave64):
    wave = 64 if wave64 else 32
    rng = np.random.default_rng(6)
    values, selects = rng.integers(0, 1 << 32, 64, dtype=np.uint32), rng.integers(0, 1 << 32, 64, dtype=np.uint32)
    code = built(tmp_path, VAR, "gfx1201", "-O2", *(["-mwavefrontsize64"] if wave64 else []))
    got = ran("gfx1201", code, "var", 192, values, selects, np.uint32(OLD)).reshape(3, 64)
    for k, (across, fi, bound, active) in enumerate(((False, False, False, lambda i: True),
                                                     (True, False, True, lambda i: i % 3 != 0),
                                                     (False, True, False, lambda i: i % 5 != 0))):
        want = []
        for lane in range(64):
            first = lane // wave * wave
            src = first + (((lane - first) & ~15) ^ (16 if across else 0)) + int(selects[lane] & 15)
            if not active(lane):
                want.append(0)
            elif active(src) or fi:
                want.append(int(values[src]))
            else:
                want.append(0 if bound else OLD)
        assert got[k].tolist() == want, f"case {k}: lanes {np.flatnonzero(got[k] != want)}"


def test_dpp_of_a_64_bit_operation_takes_only_row_newbcast():
    """gfx90a/gfx942 run 64-bit operations' DPP with row_newbcast alone (LLVM prints any other control with "DP ALU
    dpp only supports row_newbcast"): another is refused, not guessed."""
    family = target_by_name("gfx942").family
    regs = Regs.of(sreg_names("gfx942"), 256, 64, layout_for(family).architected_sgprs)
    memory = MemoryOps(None, 64, family.gfx_major, layout_for(family).architected_flat_scratch)
    op = _opcode("gfx942", "VOP1_DPP", "v_cvt_f64_i32_dpp")

    def cvt(ctrl: int) -> Instruction:  # v_cvt_f64_i32_dpp v[2:3], v1 <ctrl> row_mask:0xf bank_mask:0xf
        return decode((0x7E000000 | 2 << 17 | op << 9 | 0xFA).to_bytes(4, "little") +
                      (1 | ctrl << 8 | 0xF << 24 | 0xF << 28).to_bytes(4, "little"), 0, "gfx942")
    with pytest.raises(Unsupported, match="64-bit operation takes row_newbcast/row_share alone"):
        compile_instruction(cvt(0x111), 0, regs, memory)
    assert cvt(0x151).fields["dpp_ctrl"] == 0x151  # (its text lacks the control: the decoder's known gap)
    compile_instruction(cvt(0x151), 0, regs, memory)
