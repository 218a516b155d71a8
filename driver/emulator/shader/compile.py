"""Turn a decoded instruction into a step: a function of the waves that executes it for all their lanes.

Each instruction is decoded once per program counter (kfdtrace.driver.isa) and compiled here into a closure
that reads its operands, computes with numpy and writes the results; the interpreter (interpreter.py) caches the
steps by PC. What an instruction computes comes from the tables in alu.py (ALU), control.py (program flow) and
memory_ops.py (SMEM, FLAT/GLOBAL/SCRATCH, MUBUF, DS): the code here only reads the operand layout the decoder
reports (which fields are destinations and sources, in print order) and the encoding's modifiers, the same way
for every target.

A step returns None to fall through to the next instruction, or a `Flow` (control.py) when the waves branch,
end or wait at a barrier.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kfdtrace.driver.emulator.shader.alu import (
    DOTS,
    SALU,
    TYPES,
    VALU,
    AluOp,
    Type,
    Unsupported,
    dot,
    fma,
    max_f,
    min_f,
    saturated,
    saturates,
)
from kfdtrace.driver.emulator.shader.control import CONTROL
from kfdtrace.driver.emulator.shader.operands import (
    FLOAT_CONSTANTS,
    VCC,
    OperandError,
    Reader,
    Regs,
    constant,
    flush_denormals,
)
from kfdtrace.driver.emulator.shader.waves import EXEC, Waves
from kfdtrace.driver.isa import Instruction, dpp

__all__ = ["Step", "Unsupported", "base_name", "compile_instruction"]

Run = Callable[[Waves], object]
_SUFFIX = re.compile(r"(?:_e32|_e64)?(?:_sdwa|_dpp)?$")  # (VOP3 DPP: _e64_dpp)
_DPP_FORMS = ("_DPP", "_DPP8", "_DPP8FI")
_VOP3 = frozenset(("VOP3", *(f"VOP3{form}" for form in _DPP_FORMS)))  # VOP3's abs, neg and op_sel, DPP or not
_VALU_ENCODINGS = frozenset(("VOP1", "VOP2", "VOPC", "VOP1_SDWA", "VOP2_SDWA", "VOPC_SDWA", *_VOP3,
                             *(f"{e}{form}" for e in ("VOP1", "VOP2", "VOPC") for form in _DPP_FORMS)))
_ACC_MOVES = frozenset(("v_accvgpr_read_b32", "v_accvgpr_write_b32"))  # VOP3P, without packed operands
_SALU_ENCODINGS = frozenset(("SOP1", "SOP2", "SOPC", "SOPK"))
_DESTS = frozenset(("vdst", "sdst", "vdstx", "vdsty", "sdata"))
_MASK_TEXT = frozenset(("vcc", "vcc_lo"))
_SRC_INDEX = {"src0": 0, "src1": 1, "src2": 2, "vsrc1": 1, "sdwa_src0": 0, "sdwa_src1": 1,
              "src0x": 0, "vsrc1x": 1, "src0y": 0, "vsrc1y": 1}
_OMOD = {0: None, 1: 2.0, 2: 4.0, 3: 0.5}


@dataclass(frozen=True)
class Step:
    run: Run
    next: int  # the following instruction's address
    ins: Instruction


def base_name(mnemonic: str) -> str:
    """The mnemonic without its encoding suffix: v_add_f32_e32 -> v_add_f32."""
    return _SUFFIX.sub("", mnemonic)


def compile_instruction(ins: Instruction, pc: int, regs: Regs, memory) -> Step:
    """The step executing `ins` at address `pc`; Unsupported if the emulator does not execute it."""
    name = base_name(ins.mnemonic)
    nxt = pc + ins.size
    try:
        if ins.encoding == "VOPD":
            run = _vopd(ins, regs)
        elif name in CONTROL:
            run = CONTROL[name](ins, pc, nxt, regs)
        elif (ins.encoding in _VALU_ENCODINGS or name in _ACC_MOVES) and name in VALU:
            run = _single(_valu(ins, VALU[name], regs, ins.operands, memory.gfx_major))
        elif ins.encoding == "VOP3P":
            run = _mix(ins, name, regs) if name in _MIX else _dot(ins, name, regs) if name in DOTS else \
                _packed(ins, name, regs)
        elif ins.encoding in _SALU_ENCODINGS and name in SALU:
            run = _salu(ins, SALU[name], regs)
        elif ins.encoding == "VOP3" and name in SALU:  # gfx12's v_s_*: a uniform value into an SGPR
            if any(ins.fields.get(m) for m in ("clamp", "omod")):
                raise Unsupported(f"{ins.mnemonic}: output modifiers are not emulated")
            run = _salu(ins, SALU[name], regs)
        else:
            run = memory.compile(ins, name, regs)
    except OperandError as exc:
        raise Unsupported(str(exc)) from None
    if run is None:
        raise Unsupported(f"{ins.mnemonic} is not emulated")
    return Step(run, nxt, ins)


# -- vector ALU -------------------------------------------------------------------------------------------
def _single(parts: tuple[Callable, Callable]) -> Run:
    compute, commit = parts

    def run(w: Waves) -> None:
        commit(w, compute(w))
    return run


def _vopd(ins: Instruction, regs: Regs) -> Run:
    """Dual issue (gfx11+): the X and Y operations read their sources before either writes."""
    split = next(i for i, item in enumerate(ins.operands) if item[0] == "t" and item[1].startswith(":: "))
    x_name = base_name(ins.mnemonic).replace("v_dual_", "v_", 1)
    y_name = ins.operands[split][1][3:].replace("v_dual_", "v_", 1)
    halves = []
    for name, ops in ((x_name, ins.operands[:split]), (y_name, ins.operands[split + 1:])):
        if name not in VALU:
            raise Unsupported(f"{ins.mnemonic} (VOPD half {name}) is not emulated")
        halves.append(_valu(ins, VALU[name], regs, ops))
    (cx, wx), (cy, wy) = halves

    def run(w: Waves) -> None:
        rx, ry = cx(w), cy(w)
        wx(w, rx)
        wy(w, ry)
    return run


def _valu(ins: Instruction, op: AluOp, regs: Regs, operands: tuple, gfx_major: int = 0) -> tuple[Callable, Callable]:
    """(compute, commit) for one VALU operation over `operands` (a VOPD half, or the whole instruction; `gfx_major`
    tells a DPP form's generation)."""
    f = ins.fields
    dests, sources, mask_src = [], [], None
    for item in operands:
        if item[0] == "r" and item[1] in _DESTS:
            dests.append(item)
        elif item[0] == "t" and item[1] in _MASK_TEXT and not sources:
            dests.append(("vcc",))
        elif item[0] == "t" and item[1] == "null" and not sources:
            dests.append(("null",))
        elif item[0] == "t" and item[1] in _MASK_TEXT:
            mask_src = regs.mask(VCC)
        elif item[0] in ("r", "l"):
            sources.append(item)
    if op.mask_in and mask_src is None:
        if len(sources) > len(op.ins):  # VOP3: the mask is the last source (an SGPR pair or constant)
            item = sources.pop()
            mask_src = regs.mask(_field_value(ins, item[1]))
        else:  # VOPD cndmask: VCC implied
            mask_src = regs.mask(VCC)
    if len(sources) != len(op.ins) - op.acc:
        raise Unsupported(f"{ins.mnemonic}: {len(sources)} sources where the operation takes "
                          f"{len(op.ins) - op.acc}")
    # VOP3b (a value and a carry or VCC out) keeps SDST where VOP3a has ABS: it has no abs modifier
    vop3b = op.mask_out and op.out is not None
    dpp = None
    if ins.encoding.endswith(_DPP_FORMS):
        wide = any(TYPES[ty].bits == 64 for ty in (*op.ins, *((op.out,) if op.out else ())))
        dpp = _Dpp(ins, regs.lanes, gfx_major, wide)
    if dpp is not None and op.exec_out and not dpp.writes_every_lane:
        raise Unsupported(f"{ins.mnemonic}: DPP that may leave lanes unwritten (row or bank mask, or no bound_ctrl) "
                          f"into EXEC is not emulated")
    readers = [_vsource(ins, item, TYPES[ty], regs, vop3b, dpp) for item, ty in zip(sources, op.ins, strict=False)]
    value_dest = next((d for d in dests if d[0] == "r" and d[3] in ("vgpr", "vdsty", "agpr")), None)
    mask_dest = next((d for d in dests if d is not value_dest), None)
    if op.acc:
        readers.append(regs.source(256 + _field_value(ins, value_dest[1]), TYPES[op.ins[-1]], True))
    out = TYPES[op.out] if op.out else None
    lanes = np.arange(regs.lanes, dtype=np.int64)
    fn = op.fn
    clamp, omod = f.get("clamp", 0), _OMOD.get(f.get("omod", 0))
    if (clamp or omod) and not (out and out.float):
        if omod or not saturates(op):
            raise Unsupported(f"{ins.mnemonic}: clamp/omod on an integer result is not emulated")
        fn = saturated(op.fn, out.dtype)
    sdwa = ins.encoding.endswith("_SDWA")

    def compute(w: Waves):
        args = [r(w) for r in readers]
        if mask_src is not None:
            args.append(mask_src(w))
        if op.lanes:
            args.append(lanes)
        return fn(*args)

    write_value = None
    if out is not None:
        if value_dest is None:
            raise Unsupported(f"{ins.mnemonic}: no destination VGPR")
        n = _field_value(ins, value_dest[1])
        if value_dest[3] == "agpr":
            n = regs.agpr(n)
        high = bool(out.bits == 16 and f.get("opsel", 0) >> 3 & 1)
        write_value = _sdwa_writer(ins, n, out, regs) if sdwa else regs.vector_writer(n, out, high)
        if (clamp or omod) and out.float:  # an integer's clamp saturated it already
            write_value = _float_post(write_value, out, clamp, omod, regs.dx10_clamp)
    write_mask = _mask_writer(ins, op, mask_dest, regs)

    def commit(w: Waves, result) -> None:
        if op.mask_out:
            value, lanes_out = (None, result) if out is None else result
            lanes_out = np.broadcast_to(lanes_out, w.exec.shape)
            if write_value is not None:
                write_value(w, value)
            write_mask(w, lanes_out)
        else:
            write_value(w, result)
    if dpp is not None and not dpp.writes_every_lane:  # the lanes DPP leaves unwritten are as EXEC's: their bit of
        every_lane = commit  # a lane-mask result (VCC, a carry) is 0, their VGPR as it was

        def commit(w: Waves, result) -> None:
            with w.writing_only(dpp.written(w)):
                every_lane(w, result)
    return compute, commit


def _mask_writer(ins: Instruction, op: AluOp, dest: tuple | None, regs: Regs) -> Callable:
    """Where a VALU operation's lane mask goes: VCC, an SGPR (pair), EXEC (v_cmpx), or nowhere (null)."""
    targets = []
    if dest is not None and dest[0] == "vcc":
        targets.append(VCC)
    elif dest is not None and dest[0] == "r":
        n = _field_value(ins, dest[1])
        if n != regs.null:
            targets.append(n)
    if op.exec_out:
        def write(w: Waves, lanes: np.ndarray) -> None:
            for t in targets:
                w.write_mask(t, lanes)
            w.set_exec(lanes & w.exec)
        return write
    if not op.mask_out:
        return lambda w, lanes: None
    if not targets:
        return lambda w, lanes: None

    def write_one(w: Waves, lanes: np.ndarray) -> None:
        w.write_mask(targets[0], lanes)
    return write_one


def _field_value(ins: Instruction, field: str) -> int:
    v = ins.fields[field]
    if field == "vdsty":  # VOPD: vdstY's low bit is the opposite of vdstX's
        v = (v << 1) | ((ins.fields["vdstx"] & 1) ^ 1)
    return v


def _vsource(ins: Instruction, item: tuple, ty: Type, regs: Regs, vop3b: bool = False,
             dpp: _Dpp | None = None) -> Reader:
    """A VALU source with the encoding's modifiers (VOP3 abs/neg/opsel, SDWA select/sext/abs/neg, DPP's lane
    pattern on src0 and abs/neg)."""
    f = ins.fields
    if item[0] == "l":
        return regs.source(255, ty, True, ins.literal)
    field, kind = item[1], item[3]
    index = _SRC_INDEX.get(field)
    value = f[field]
    if kind == "vgpr":
        value += 256
    if kind == "agpr":
        return regs.vgpr(regs.agpr(value - 256 if value >= 256 else value))
    if kind == "sdwa":
        return _sdwa_source(ins, field, value, ty, regs)
    high = bool(ty.bits == 16 and index is not None and f.get("opsel", 0) >> index & 1)
    reader = regs.source(value, ty, True, ins.literal, high)
    if dpp is not None and field == "src0":
        reader = dpp.source(reader, ty)
    if index is None:
        return reader
    return _modified(ins, reader, index, ty, vop3b)


def _modified(ins: Instruction, reader: Reader, index: int, ty: Type, vop3b: bool = False) -> Reader:
    """Source `index` of a VOP3 or DPP instruction with its abs and neg modifiers applied (floats, and the sign bit
    of b32 sources)."""
    if ins.encoding in _VOP3:
        absolute = ins.fields.get("abs", 0) >> index & 1 if not vop3b else 0
        negate = ins.fields.get("neg", 0) >> index & 1
    else:  # DPP's own bits (SDWA's are applied where its sources are read)
        absolute, negate = ins.fields.get(f"src{index}_abs", 0), ins.fields.get(f"src{index}_neg", 0)
    if (absolute or negate) and ty.sign_modifiers:
        sign = ty.dtype(1 << (ty.bits - 1))
        keep, flip = ty.dtype(~sign if absolute else ~ty.dtype(0)), sign if negate else ty.dtype(0)
        return lambda w: reader(w) & keep ^ flip
    if (absolute or negate) and not ty.float:
        raise Unsupported(f"{ins.mnemonic}: abs/neg on a source read as {ty.name} is not emulated")
    if absolute and negate:
        return lambda w: -np.abs(reader(w))
    if absolute:
        return lambda w: np.abs(reader(w))
    if negate:
        return lambda w: -reader(w)
    return reader


def _dpp16_sources(ctrl: int, lanes: int, gfx9: bool) -> np.ndarray:
    """The lane each of `lanes` lanes reads src0 from under DPP16 control `ctrl` (driver/isa/dpp.py), -1 where none
    (out of its row of 16, or of the wave); Unsupported for a control the generation has not. Held to an independent
    model in tests/dpp_model.py."""
    pattern = dpp.pattern_of(ctrl, gfx9)
    if pattern is None:
        raise Unsupported(f"dpp_ctrl {ctrl:#x} is no lane pattern of {'GFX9' if gfx9 else 'GFX10 and later'}")
    return np.array([-1 if (at := pattern.source(lane, ctrl, lanes)) is None else at for lane in range(lanes)])


class _Dpp:
    """A DPP instruction's lanes: each reads src0 from the lane its pattern names. A lane whose source is out of
    range, or inactive (EXEC clear, unless fi fetches it), reads 0 with bound_ctrl (DPP8: always) and is not written
    without; the row and bank masks keep lanes from being written (AMDGPUModifierSyntax.rst: row_mask, bank_mask,
    bound_ctrl, fi, dpp8; the masked lanes keep the destination, the `old` operand of llvm.amdgcn.update.dpp)."""

    def __init__(self, ins: Instruction, lanes: int, gfx_major: int, wide: bool):
        f = ins.fields
        lane = np.arange(lanes)
        # a 64-bit operation takes the patterns the table marks wide, and no DPP on gfx10 and gfx11
        pattern = None if "dpp8" in f else dpp.pattern_of(f["dpp_ctrl"], gfx_major == 9)
        if wide and (pattern is None or not pattern.wide or gfx_major in (10, 11)):
            raise Unsupported(f"{ins.mnemonic}: DPP of a 64-bit operation takes row_newbcast/row_share alone, on "
                              f"gfx90a, gfx942 and gfx12")
        if "dpp8" in f:
            self.src = (lane & ~7) | (f["dpp8"] >> 3 * (lane & 7) & 7)
            self.fetch_inactive, self.zero = ins.encoding.endswith("FI"), True
            self.allowed = np.ones(lanes, bool)
        else:
            self.src = _dpp16_sources(f["dpp_ctrl"], lanes, gfx_major == 9)
            self.fetch_inactive, self.zero = bool(f.get("fi")), bool(f["bound_ctrl"])
            self.allowed = (f["row_mask"] >> (lane >> 4) & 1 & f["bank_mask"] >> (lane >> 2 & 3)).astype(bool)
        self.index = np.maximum(self.src, 0)
        self.in_range = self.src >= 0
        self.writes_every_lane = bool(self.allowed.all()) and self.zero

    def _valid(self, w: Waves) -> np.ndarray:
        """(B, L): whether each lane's source is in range and may be read."""
        return self.in_range & (True if self.fetch_inactive else w.exec[:, self.index])

    def source(self, reader: Reader, ty: Type) -> Reader:
        """`reader` (src0) as each lane reads it from its source lane (0 where bound_ctrl fills a lane without)."""
        zero = ty.dtype(0)

        def read(w: Waves) -> np.ndarray:
            got = np.broadcast_to(reader(w), w.exec.shape)[:, self.index]
            return np.where(self._valid(w), got, zero) if self.zero else got
        return read

    def written(self, w: Waves) -> np.ndarray:
        """(B, L): the lanes the instruction writes (EXEC aside)."""
        return self.allowed & (self._valid(w) | self.zero)


_SEL = {0: (0, 8), 1: (8, 8), 2: (16, 8), 3: (24, 8), 4: (0, 16), 5: (16, 16), 6: (0, 32)}  # SDWA SEL: shift, bits


def _sdwa_source(ins: Instruction, field: str, value: int, ty: Type, regs: Regs) -> Reader:
    """An SDWA source: a VGPR, or an SGPR/constant when the s bit (bit 8) is set; its byte/word selected and
    zero- or sign-extended, then abs/neg for floats."""
    f = ins.fields
    prefix = "src0" if field == "sdwa_src0" else "src1"
    value = (value & 0xFF) if value & 0x100 else 256 + (value & 0xFF)
    raw = regs.source(value, TYPES["u32"], True, ins.literal)
    shift, bits = _SEL[f[f"{prefix}_sel"]]
    sext = f[f"{prefix}_sext"]
    mask = np.uint32((1 << bits) - 1)
    top = np.uint32(1 << (bits - 1))

    def selected(w: Waves) -> np.ndarray:
        v = (raw(w) >> np.uint32(shift)) & mask
        if sext and bits < 32:
            v = (v ^ top) - top
        return v
    if ty.bits == 16:
        typed = lambda w: selected(w).astype(np.uint16).view(ty.dtype)  # noqa: E731
    else:
        typed = lambda w: np.asarray(selected(w), np.uint32).view(ty.dtype)  # noqa: E731
    if ty.float and (f[f"{prefix}_abs"] or f[f"{prefix}_neg"]):
        a, n = f[f"{prefix}_abs"], f[f"{prefix}_neg"]
        return lambda w: (-1 if n else 1) * (np.abs(typed(w)) if a else typed(w))
    return typed


def _sdwa_writer(ins: Instruction, n: int, ty: Type, regs: Regs) -> Callable:
    """An SDWA destination: the result into the selected byte/word, the other bits zeroed, sign-extended or kept
    (dst_unused 0, 1, 2)."""
    f = ins.fields
    regs.check_vgprs(n, 1)
    shift, bits = _SEL[f["dst_sel"]]
    unused = f["dst_unused"]
    mask = np.uint32(((1 << bits) - 1) << shift)

    def write(w: Waves, value: np.ndarray) -> None:
        v = np.asarray(value, ty.dtype)
        v = (v.view(np.uint16).astype(np.uint32) if ty.bits == 16 else v.view(np.uint32))
        field = (v << np.uint32(shift)) & mask
        if unused == 2:
            field = field | (w.v[n] & ~mask)
        elif unused == 1 and shift + bits < 32:
            sign = (field >> np.uint32(shift + bits - 1)) & np.uint32(1)
            field = field | (np.uint32(0) - sign) << np.uint32(shift + bits)
        w.write_v(n, field)
    return write


def _float_post(write: Callable, ty: Type, clamp: int, omod: float | None, nan_to_zero: bool) -> Callable:
    """Output modifiers: omod's scale, then clamp to [0, 1] (NaN to 0 with DX10_CLAMP)."""
    def post(w: Waves, value: np.ndarray) -> None:
        v = np.asarray(value, ty.dtype)
        if omod is not None:
            v = (v * ty.dtype(omod)).astype(ty.dtype)
        write(w, _clamped(v, ty, nan_to_zero) if clamp else v)
    return post


def _clamped(v: np.ndarray, ty: Type, nan_to_zero: bool) -> np.ndarray:
    """The clamp output modifier on a float result: [0, 1], NaN to 0 with DX10_CLAMP."""
    v = np.clip(v, ty.dtype(0), ty.dtype(1))
    return np.where(np.isnan(v), ty.dtype(0), v) if nan_to_zero else v


# VOP3P: packed operations on the two halves of each source (16-bit halves, or the two dwords of a pair for the
# CDNA packed-f32 ops). OPSEL picks the half each source gives the low result, OPSEL_HI the half for the high.
_PACKED = {
    "v_pk_fma_f32": ("f32", fma),
    "v_pk_mul_f32": ("f32", np.multiply), "v_pk_add_f32": ("f32", np.add),
    "v_pk_add_f16": ("f16", np.add), "v_pk_mul_f16": ("f16", np.multiply),
    "v_pk_fma_f16": ("f16", fma),
    "v_pk_add_u16": ("u16", np.add), "v_pk_sub_u16": ("u16", np.subtract),
    "v_pk_add_i16": ("i16", np.add), "v_pk_sub_i16": ("i16", np.subtract),
    "v_pk_mul_lo_u16": ("u16", np.multiply),
    "v_pk_mad_u16": ("u16", lambda a, b, c: a * b + c), "v_pk_mad_i16": ("i16", lambda a, b, c: a * b + c),
    "v_pk_max_f16": ("f16", max_f), "v_pk_min_f16": ("f16", min_f),
    "v_pk_max_num_f16": ("f16", max_f), "v_pk_min_num_f16": ("f16", min_f),
    "v_pk_max_u16": ("u16", np.maximum), "v_pk_min_u16": ("u16", np.minimum),
    "v_pk_max_i16": ("i16", np.maximum), "v_pk_min_i16": ("i16", np.minimum),
    # the shift amount is the first source's low 4 bits (REV: the value shifted is the second)
    "v_pk_lshlrev_b16": ("u16", lambda a, b: b << (a & 15)), "v_pk_lshrrev_b16": ("u16", lambda a, b: b >> (a & 15)),
    "v_pk_ashrrev_i16": ("i16", lambda a, b: b >> (a & 15)),
}
# clamp saturates these integer halves
_PACKED_SATURATING = frozenset({"v_pk_add_u16", "v_pk_sub_u16", "v_pk_add_i16", "v_pk_sub_i16"})


def _packed(ins: Instruction, name: str, regs: Regs) -> Run | None:
    f = ins.fields
    srcs = [item for item in ins.operands if item[0] == "r" and item[1] != "vdst"]
    dst = f["vdst"]
    if name == "v_pk_mov_b32":  # D.lo = src0's opsel[0] dword, D.hi = src1's opsel[1] dword
        a, b = (regs.source(f[it[1]] + (256 if it[3] == "vgpr" else 0), TYPES["u64"], True, ins.literal)
                for it in srcs)
        lo_sh, hi_sh = np.uint64(32 * (f["opsel"] & 1)), np.uint64(32 * (f["opsel"] >> 1 & 1))
        write = regs.vector_writer(dst, TYPES["u64"])

        def pk_mov(w: Waves) -> None:
            lo = (a(w) >> lo_sh) & np.uint64(0xFFFFFFFF)
            hi = (b(w) >> hi_sh) & np.uint64(0xFFFFFFFF)
            write(w, lo | hi << np.uint64(32))
        return pk_mov
    if name not in _PACKED:
        return None
    tyname, fn = _PACKED[name]
    ty = TYPES[tyname]
    clamp = f.get("clamp", 0)
    if clamp and not ty.float:
        if name not in _PACKED_SATURATING:
            raise Unsupported(f"{ins.mnemonic}: clamp on an integer result is not emulated")
        fn = saturated(fn, ty.dtype)
    # the float mode's denormal flushing, and the output modifier, half by half as for an unpacked operation
    flush_in, flush_out = ty.float and ty.bits in regs.flush_in, ty.float and ty.bits in regs.flush_out
    float_clamp = bool(clamp) and ty.float
    half_bits = ty.bits
    whole = TYPES["u64"] if half_bits == 32 else TYPES["u32"]
    udt = np.uint64 if half_bits == 32 else np.uint32
    readers = [_packed_source(regs, f[it[1]] + (256 if it[3] == "vgpr" else 0), whole, ty, ins.literal)
               for it in srcs]
    sel_lo = [f["opsel"] >> i & 1 for i in range(len(readers))]
    sel_hi = [f["opsel_hi"] >> i & 1 for i in range(len(readers))]
    neg_lo = [f["neg"] >> i & 1 for i in range(len(readers))]
    neg_hi = [f["neg_hi"] >> i & 1 for i in range(len(readers))]
    hmask = udt((1 << half_bits) - 1)
    hdt = np.uint32 if half_bits == 32 else np.uint16
    write = regs.vector_writer(dst, whole)

    def half(v, hi: int, neg: int):
        h = ((v >> udt(half_bits * hi)) & hmask).astype(hdt).view(ty.dtype)
        if flush_in:
            h = flush_denormals(h)
        return -h if neg and ty.float else h

    def result(values):
        out = fn(*values)
        if float_clamp:
            out = _clamped(np.asarray(out, ty.dtype), ty, regs.dx10_clamp)
        return flush_denormals(np.asarray(out, ty.dtype)) if flush_out else out

    def run(w: Waves) -> None:
        vals = [r(w) for r in readers]
        lo = result([half(v, s, n) for v, s, n in zip(vals, sel_lo, neg_lo, strict=True)])
        hi = result([half(v, s, n) for v, s, n in zip(vals, sel_hi, neg_hi, strict=True)])
        lo_bits = np.asarray(lo, ty.dtype).view(hdt).astype(udt)
        hi_bits = np.asarray(hi, ty.dtype).view(hdt).astype(udt)
        write(w, lo_bits | hi_bits << udt(half_bits))
    return run


def _dot(ins: Instruction, name: str, regs: Regs) -> Run:
    """A VOP3P integer dot product (alu.DOTS): no modifier but an iu form's NEG bits, which say the signs."""
    f = ins.fields
    bits, signed = DOTS[name]
    neg = f["neg"]
    signs = (bool(neg & 1), bool(neg & 2)) if signed is None else (signed, signed)
    if signed is None:
        neg &= ~3
    if neg or f["neg_hi"] or f["opsel"] or f["opsel_hi"] != 7 or f.get("clamp"):
        raise Unsupported(f"{ins.mnemonic}: modifiers other than an iu form's neg_lo are not emulated")
    u32 = TYPES["u32"]
    a, b, c = (regs.source(f[it[1]] + (256 if it[3] == "vgpr" else 0), u32, True, ins.literal)
               for it in ins.operands if it[0] == "r" and it[1] != "vdst")
    write = regs.vector_writer(f["vdst"], u32)

    def run(w: Waves) -> None:
        write(w, dot(a(w), b(w), c(w), bits, *signs))
    return run


# V_FMA_MIX*: an f32 fma of sources each f32, or f16 (OPSEL_HI set; OPSEL picks its half) widened; NEG negates
# and NEG_HI takes the absolute value (LLVM's VOP3P mix operand modifiers). MIX_F32 writes f32; MIXLO and MIXHI
# round once to f16, into one half of the destination, keeping the other.
_MIX = {"v_fma_mix_f32": None, "v_fma_mixlo_f16": False, "v_fma_mixhi_f16": True,
        "v_mad_mix_f32": None, "v_mad_mixlo_f16": False, "v_mad_mixhi_f16": True}


def _mix(ins: Instruction, name: str, regs: Regs) -> Run:
    f = ins.fields
    srcs = [item for item in ins.operands if item[0] == "r" and item[1] != "vdst"]
    f16, f32, u32 = TYPES["f16"], TYPES["f32"], TYPES["u32"]
    halves = [f["opsel_hi"] >> i & 1 for i in range(3)]
    readers = [_packed_source(regs, f[it[1]] + (256 if it[3] == "vgpr" else 0), u32, f16 if half else f32,
                              ins.literal) for it, half in zip(srcs, halves, strict=True)]
    sel, neg, absolute = ([f[k] >> i & 1 for i in range(3)] for k in ("opsel", "neg", "neg_hi"))
    into = _MIX[name]
    out = f32 if into is None else f16
    dst, clamp = f["vdst"], f.get("clamp", 0)
    old = regs.source(256 + dst, u32, True)
    write = regs.vector_writer(dst, u32)

    def operand(raw: np.ndarray, i: int) -> np.ndarray:
        raw = np.asarray(raw, np.uint32)
        if halves[i]:
            v = (raw >> np.uint32(16 * sel[i])).astype(np.uint16).view(np.float16)
            v = flush_denormals(v) if 16 in regs.flush_in else v
        else:
            v = flush_denormals(raw.view(np.float32)) if 32 in regs.flush_in else raw.view(np.float32)
        v = np.abs(v) if absolute[i] else v
        return (-v if neg[i] else v).astype(np.float32)

    def run(w: Waves) -> None:
        value = fma(*(operand(r(w), i) for i, r in enumerate(readers)), dtype=out.dtype)
        if clamp:
            value = _clamped(value, out, regs.dx10_clamp)
        if out.bits in regs.flush_out:
            value = flush_denormals(value)
        if into is None:
            write(w, value.view(np.uint32))
            return
        bits = value.view(np.uint16).astype(np.uint32)
        kept = np.asarray(old(w), np.uint32)
        write(w, (kept & np.uint32(0xFFFF)) | bits << np.uint32(16) if into else
              (kept & np.uint32(0xFFFF0000)) | bits)
    return run


def _packed_source(regs: Regs, value: int, whole: Type, half: Type, literal: int | None) -> Reader:
    """A packed operation's source, both halves. A float inline constant is one element of the operation's
    type, in the low half, zero above it (LLVM's getInlineEncodingV216: 0.5 is 0x00003800 for a v2f16 operand;
    the compiler selects the low half for both lanes with op_sel_hi); an integer one is sign-extended across
    the whole, as for any operand."""
    if half.float and value in FLOAT_CONSTANTS:
        bits = whole.dtype(constant(value, half))
        return lambda w: bits
    return regs.source(value, whole, True, literal)


# -- scalar ALU -------------------------------------------------------------------------------------------
def _salu(ins: Instruction, op: AluOp, regs: Regs) -> Run:
    f = ins.fields
    items = [item for item in ins.operands if item[0] in ("r", "i", "l")]
    dest = items.pop(0) if op.out or op.saveexec else None
    if len(items) != len(op.ins) - op.acc:
        raise Unsupported(f"{ins.mnemonic}: {len(items)} sources where the operation takes {len(op.ins) - op.acc}")
    readers = []
    for item, tyname in zip(items, op.ins, strict=False):
        ty = TYPES[tyname]
        if item[0] == "i":  # SOPK's 16-bit immediate
            c = np.array(f[item[1]], np.uint16).view(np.int16 if tyname == "i16" else np.uint16)[()]
            readers.append(lambda w, c=c: c)
        else:
            reader = regs.source(255 if item[0] == "l" else f[item[1]], ty, False, ins.literal)
            readers.append(_modified(ins, reader, len(readers), ty))  # gfx12's v_s_* (VOP3) have abs and neg
    out_ty = TYPES[op.out] if op.out else None
    if op.acc:
        readers.append(regs.source(f[dest[1]], TYPES[op.ins[-1]], False))
    fn = op.fn
    if op.saveexec:
        n = f[dest[1]]
        ty = TYPES[op.ins[0]]
        old_exec = regs.source(EXEC, ty, False)
        write_dest = regs.scalar_writer(n, ty)
        write_exec = regs.scalar_writer(EXEC, ty)

        def saveexec(w: Waves) -> None:
            src, old = readers[0](w), old_exec(w)
            new = fn(src, old)
            write_dest(w, old)
            write_exec(w, new)
            w.scc = np.asarray(new != 0)
        return saveexec
    write = regs.scalar_writer(f[dest[1]], out_ty) if out_ty is not None else None

    def run(w: Waves) -> None:
        args = [r(w) for r in readers]
        if op.scc_in:
            args.append(w.scc)
        result = fn(*args)
        if op.scc_out:
            if out_ty is None:
                w.scc = np.broadcast_to(result, (w.count,)).copy()
                return
            result, scc = result
            w.scc = np.broadcast_to(scc, (w.count,)).copy()
        write(w, result)
    return run
