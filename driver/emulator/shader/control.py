"""Program flow and the instructions that only wait: branches, s_endpgm, barriers, s_getpc/s_setpc, the
cross-lane moves between SGPRs and lanes (v_readlane, v_readfirstlane, v_writelane) and between lanes
(v_permlane16, v_permlanex16 and their _var forms, v_permlane64), and the waits and hints
that have nothing to do on an emulated GPU whose memory operations complete before the next instruction
(s_waitcnt, s_wait_*, s_nop, s_clause, s_delay_alu, cache invalidations).

A step returns None (fall through), an int (every wave jumps there), an array of per-wave next PCs (the waves
go different ways: the interpreter splits them), or one of the `Flow` markers (END, BARRIER, SIGNAL, WAIT).
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import numpy as np

from kfdtrace.driver.emulator.shader.alu import TYPES
from kfdtrace.driver.emulator.shader.operands import VCC, OperandError, Regs
from kfdtrace.driver.emulator.shader.waves import EXEC, Waves
from kfdtrace.driver.isa import Instruction

__all__ = ["CONTROL", "Flow"]


class Flow(enum.Enum):
    END = "s_endpgm"
    BARRIER = "s_barrier"  # signal, then wait
    SIGNAL = "s_barrier_signal"
    WAIT = "s_barrier_wait"
    YIELD = "yield"  # the interpreter's own: another set of waves is behind this one
    SPIN = "spin"  # the interpreter's own: a loop went round SPIN_TURNS times while other sets wait their turn


Factory = Callable[[Instruction, int, int, Regs], Callable[[Waves], object]]


def _nothing(ins: Instruction, pc: int, nxt: int, regs: Regs):
    return lambda w: None


def _flow(marker: Flow) -> Factory:
    return lambda ins, pc, nxt, regs: (lambda w: marker)


def _split_barrier(marker: Flow) -> Factory:
    def make(ins: Instruction, pc: int, nxt: int, regs: Regs):
        bar = ins.fields["ssrc0"] if "ssrc0" in ins.fields else ins.fields.get("simm16", 0)
        if bar not in (193, 0xFFFF, 0xFFFFFFFF):  # -1: the workgroup barrier; named barriers are not emulated
            raise OperandError(f"{ins.mnemonic} of barrier {bar} (only the workgroup barrier, -1) is not emulated")
        return lambda w: marker
    return make


def _target(ins: Instruction, nxt: int) -> int:
    imm = ins.fields["simm16"]
    return nxt + 4 * (imm - 0x10000 if imm & 0x8000 else imm)


def _mask_zero(first: int, regs: Regs) -> Callable[[Waves], np.ndarray]:
    n = max(1, regs.lanes // 32)
    return lambda w: (w.s[first:first + n] == 0).all(axis=0)


def _branch(condition: Callable[[Regs], Callable[[Waves], np.ndarray]] | None) -> Factory:
    def make(ins: Instruction, pc: int, nxt: int, regs: Regs):
        target = _target(ins, nxt)
        if condition is None:
            return lambda w: target
        cond = condition(regs)

        def run(w: Waves):
            c = cond(w)
            if c.all():
                return target
            if not c.any():
                return None
            return np.where(c, target, nxt)
        return run
    return make


def _getpc(ins: Instruction, pc: int, nxt: int, regs: Regs):
    write = regs.scalar_writer(ins.fields["sdst"], TYPES["u64"])
    value = np.uint64(nxt)
    return lambda w: write(w, value)


def _setpc(ins: Instruction, pc: int, nxt: int, regs: Regs):
    read = regs.source(ins.fields["ssrc0"], TYPES["u64"], False)
    save = regs.scalar_writer(ins.fields["sdst"], TYPES["u64"]) if ins.mnemonic == "s_swappc_b64" else None
    here = np.uint64(nxt)

    def run(w: Waves):
        targets = np.broadcast_to(read(w), (w.count,)).astype(np.int64)
        if save is not None:
            save(w, here)
        return int(targets[0]) if (targets == targets[0]).all() else targets
    return run


def _readlane(ins: Instruction, pc: int, nxt: int, regs: Regs):
    """v_readlane_b32 sdst, vsrc, lane: the lane's value (lane from an SGPR or constant, modulo the wave size)."""
    f = ins.fields
    src = regs.vgpr(f["src0"] - 256) if f["src0"] >= 256 else None
    if src is None:
        raise OperandError(f"{ins.mnemonic} of a non-VGPR source")
    lane = regs.source(f["src1"], TYPES["u32"], False, ins.literal)
    write = regs.scalar_writer(f["vdst"], TYPES["u32"])
    mask = regs.lanes - 1

    def run(w: Waves) -> None:
        sel = np.broadcast_to(lane(w), (w.count,)) & mask
        write(w, src(w)[np.arange(w.count), sel])
    return run


def _writelane(ins: Instruction, pc: int, nxt: int, regs: Regs):
    """v_writelane_b32 vdst, ssrc, lane: the scalar into that one lane of the VGPR (lane from an SGPR or constant,
    modulo the wave size), whatever EXEC holds (how a function saves SGPRs in a VGPR's lanes)."""
    f = ins.fields
    value = regs.source(f["src0"], TYPES["u32"], False, ins.literal)
    lane = regs.source(f["src1"], TYPES["u32"], False, ins.literal)
    n = f["vdst"]
    regs.check_vgprs(n, 1)
    mask = regs.lanes - 1

    def run(w: Waves) -> None:
        rows = np.arange(w.count)
        w.v[n][rows, np.broadcast_to(lane(w), (w.count,)) & mask] = np.broadcast_to(value(w), (w.count,))
    return run


def _readfirstlane(ins: Instruction, pc: int, nxt: int, regs: Regs):
    """v_readfirstlane_b32 sdst, src: the first active lane's value (lane 0 when EXEC is empty)."""
    f = ins.fields
    src = regs.source(f["src0"], TYPES["u32"], True, ins.literal)
    write = regs.scalar_writer(f["vdst"], TYPES["u32"])

    def run(w: Waves) -> None:
        values = np.broadcast_to(src(w), w.exec.shape)
        write(w, values[np.arange(w.count), w.exec.argmax(axis=1)])
    return run


def _permlane(across: bool, var: bool = False) -> Factory:
    """v_permlane16_b32 / v_permlanex16_b32 vdst, src0, sel_lo, sel_hi (gfx10+): each active lane takes src0 from
    the lane its 4-bit field of {sel_hi, sel_lo} names in its own row of 16 (x16: in the other row of its pair),
    by AMD's pseudocode (RDNA3/RDNA4 V_PERMLANE16_B32, V_PERMLANEX16_B32; gfx12's _var forms: the select is bits
    3:0 of the lane's own src1, V_PERMLANE16_VAR_B32). op_sel[0] and op_sel[1] are DPP's fi and bound_ctrl (RDNA ISA
    guides, same entries): without fi an inactive source lane is no source, which bound_ctrl reads as 0 and without
    it leaves the lane as it was."""
    def factory(ins: Instruction, pc: int, nxt: int, regs: Regs):
        f = ins.fields
        if any(f.get(k) for k in ("abs", "neg", "clamp", "omod")):
            raise OperandError(f"{ins.mnemonic} with input or output modifiers is not emulated")
        src = regs.source(f["src0"], TYPES["u32"], True, ins.literal)
        lo = regs.source(f["src1"], TYPES["u32"], var, ins.literal)
        hi = None if var else regs.source(f["src2"], TYPES["u32"], False, ins.literal)
        fetch_inactive, bound = bool(f["opsel"] & 1), bool(f["opsel"] >> 1 & 1)
        n = f["vdst"]
        regs.check_vgprs(n, 1)
        lane = np.arange(regs.lanes)
        row = (lane & ~15) ^ (16 if across else 0)
        shift = (4 * (lane & 15)).astype(np.uint64)

        def select(w: Waves) -> np.ndarray:
            """(B, L): the lane in its row each lane reads."""
            if hi is None:
                return (np.broadcast_to(lo(w), w.exec.shape) & np.uint32(15)).astype(np.int64)
            both = np.broadcast_to(hi(w), (w.count,)).astype(np.uint64) << np.uint64(32) | \
                np.broadcast_to(lo(w), (w.count,)).astype(np.uint64)
            return (both[:, None] >> shift & np.uint64(15)).astype(np.int64)

        def run(w: Waves) -> None:
            rows = np.arange(w.count)[:, None]
            at = row + select(w)
            got = np.broadcast_to(src(w), w.exec.shape)[rows, at]
            valid = w.exec[rows, at] | fetch_inactive
            written = w.exec & (valid | bound)
            w.v[n] = np.where(written, np.where(valid, got, np.uint32(0)), w.v[n])
        return run
    return factory


def _permlane64(ins: Instruction, pc: int, nxt: int, regs: Regs):
    """v_permlane64_b32 vdst, src0 (gfx11+): in wave64 each active lane takes the lane 32 away (lane ^ 32); in
    wave32 it does nothing (RDNA3/RDNA4 pseudocode V_PERMLANE64_B32: "treated as scalar NOP in wave32")."""
    src = regs.source(ins.fields["src0"], TYPES["u32"], True, ins.literal)
    n = ins.fields["vdst"]
    regs.check_vgprs(n, 1)
    if regs.lanes == 32:
        return lambda w: None
    other = np.arange(64) ^ 32

    def run(w: Waves) -> None:
        w.write_v(n, np.broadcast_to(src(w), w.exec.shape)[:, other])
    return run


def _movrel(source: int | None, dest: int | None) -> Factory:
    """A move between VGPRs indexed by M0: the source VGPR's number plus M0's bits [`source`:+10] (None: no index;
    32: all of M0), the destination's likewise, in the lanes EXEC enables (RDNA3/RDNA4 ISA pseudocode:
    V_MOVRELS_B32 reads VGPR[SRC0 + M0], V_MOVRELD_B32 writes VGPR[VDST + M0], V_MOVRELSD_B32 both,
    V_MOVRELSD_2_B32 reads at M0[9:0] and writes at M0[25:16]). An index past the VGPRs the kernel's descriptor
    allocates is the kernel's fault here (the ISA guides leave it undefined)."""
    def factory(ins: Instruction, pc: int, nxt: int, regs: Regs):
        f = ins.fields
        if any(f.get(k) for k in ("abs", "neg", "clamp", "omod", "opsel")):
            raise OperandError(f"{ins.mnemonic} with output or input modifiers is not emulated")
        if source is not None and f["src0"] < 256:
            raise OperandError(f"{ins.mnemonic} of a non-VGPR source")
        value = regs.source(f["src0"], TYPES["u32"], True, ins.literal) if source is None else None
        src, dst = f["src0"] - 256, f["vdst"]
        regs.check_vgprs(dst, 1)
        if source is not None:
            regs.check_vgprs(src, 1)

        def index(w: Waves, first: int, bits: int | None) -> np.ndarray:
            m0 = w.s[regs.m0].astype(np.int64)
            n = first + (m0 if bits == 32 else m0 >> bits & 0x3FF)
            if (n >= regs.vgprs).any():
                raise OperandError(f"{ins.mnemonic}: v{first} + M0 = v{int(n.max())} is beyond the {regs.vgprs} "
                                   "VGPRs the kernel descriptor allocates")
            return n

        def run(w: Waves) -> None:
            rows = np.arange(w.count)
            got = w.v[index(w, src, source), rows] if source is not None else np.broadcast_to(value(w), w.exec.shape)
            at = index(w, dst, dest) if dest is not None else np.full(w.count, dst)
            w.v[at, rows] = np.where(w.exec, got, w.v[at, rows])
        return run
    return factory


def _sendmsg(ins: Instruction, pc: int, nxt: int, regs: Regs):
    # gfx11+ kernels end with s_sendmsg sendmsg(MSG_DEALLOC_VGPRS) (id 3): a hint. Other messages go to the SPI
    # or the host (interrupts, GS) and are not emulated.
    if ins.fields["simm16"] != 3:
        raise OperandError(f"{ins.text}: only sendmsg(MSG_DEALLOC_VGPRS) is emulated")
    return lambda w: None


CONTROL: dict[str, Factory] = {
    "s_endpgm": _flow(Flow.END),
    "s_barrier": _flow(Flow.BARRIER),
    "s_barrier_signal": _split_barrier(Flow.SIGNAL),
    "s_barrier_wait": _split_barrier(Flow.WAIT),
    "s_branch": _branch(None),
    "s_cbranch_scc0": _branch(lambda regs: lambda w: ~w.scc),
    "s_cbranch_scc1": _branch(lambda regs: lambda w: w.scc),
    "s_cbranch_vccz": _branch(lambda regs: _mask_zero(VCC, regs)),
    "s_cbranch_vccnz": _branch(lambda regs: (lambda z: lambda w: ~z(w))(_mask_zero(VCC, regs))),
    "s_cbranch_execz": _branch(lambda regs: _mask_zero(EXEC, regs)),
    "s_cbranch_execnz": _branch(lambda regs: (lambda z: lambda w: ~z(w))(_mask_zero(EXEC, regs))),
    "s_getpc_b64": _getpc,
    "s_setpc_b64": _setpc,
    "s_swappc_b64": _setpc,
    "v_readlane_b32": _readlane,
    "v_readfirstlane_b32": _readfirstlane,
    "v_writelane_b32": _writelane,
    "v_permlane16_b32": _permlane(False),
    "v_permlanex16_b32": _permlane(True),
    "v_permlane16_var_b32": _permlane(False, var=True),
    "v_permlanex16_var_b32": _permlane(True, var=True),
    "v_permlane64_b32": _permlane64,
    "v_movrels_b32": _movrel(32, None),
    "v_movreld_b32": _movrel(None, 32),
    "v_movrelsd_b32": _movrel(32, 32),
    "v_movrelsd_2_b32": _movrel(0, 16),
    "s_sendmsg": _sendmsg,
    **{name: _nothing for name in (
        "s_nop", "s_waitcnt", "s_waitcnt_vscnt", "s_waitcnt_vmcnt", "s_waitcnt_expcnt", "s_waitcnt_lgkmcnt",
        "s_waitcnt_depctr", "s_delay_alu", "s_clause", "s_inst_prefetch", "s_set_inst_prefetch_distance",
        "s_setprio", "s_sleep", "s_wait_loadcnt", "s_wait_storecnt", "s_wait_dscnt", "s_wait_kmcnt",
        "s_wait_samplecnt", "s_wait_bvhcnt", "s_wait_expcnt", "s_wait_alu", "s_wait_loadcnt_dscnt",
        "s_wait_storecnt_dscnt", "s_wait_idle",
        # caches: the emulated GPU reads and writes memory directly, so there is nothing to invalidate or write back
        "buffer_gl0_inv", "buffer_gl1_inv", "buffer_wbinvl1", "buffer_wbinvl1_vol", "buffer_wbl2", "buffer_inv",
        "buffer_invl2",
        "global_inv", "global_wb", "global_wbinv", "s_dcache_inv", "s_dcache_wb", "s_icache_inv")},
}
