"""An independent model of AMDGPU DPP lane rules (v_mov_b32_dpp, dpp8), written apart from the emulator's.

Sources: LLVM AMDGPUModifierSyntax.rst (dpp_ctrl, row_mask, bank_mask, bound_ctrl, fi, dpp8) and SIDefines.h
(DppCtrl, DppFiMode); gem5 src/arch/amdgpu/vega/insts/inst_util.hh (dppInstImpl); tinygrad test/amd/hw/test_dpp.py
(RDNA3 expectations checked on hardware). [OPEN] marks a choice where they are silent: rows row_bcast gives no
source read nothing; on gfx9, which has no fi bit, an inactive source lane is no source.
"""

from __future__ import annotations

MASK32 = 0xFFFFFFFF


def dpp16_decode(ctrl: int, gfx9: bool) -> tuple[str, object]:
    """(name, argument) of a 9-bit DPP16 control; ValueError for one the generation has not."""
    if ctrl <= 0xFF:
        return "quad_perm", tuple((ctrl >> (2 * i)) & 3 for i in range(4))
    for first, name in ((0x101, "row_shl"), (0x111, "row_shr"), (0x121, "row_ror")):
        if first <= ctrl <= first + 14:
            return name, ctrl & 0xF
    if ctrl in (0x130, 0x134, 0x138, 0x13C) and gfx9:
        return {0x130: "wave_shl", 0x134: "wave_rol", 0x138: "wave_shr", 0x13C: "wave_ror"}[ctrl], 1
    if ctrl in (0x140, 0x141):
        return ("row_mirror", "row_half_mirror")[ctrl & 1], None
    if ctrl in (0x142, 0x143) and gfx9:
        return "row_bcast", 15 if ctrl == 0x142 else 31
    if 0x150 <= ctrl <= 0x15F:
        return ("row_newbcast" if gfx9 else "row_share"), ctrl & 0xF
    if 0x160 <= ctrl <= 0x16F and not gfx9:
        return "row_xmask", ctrl & 0xF
    raise ValueError(f"dpp_ctrl {ctrl:#x} is reserved on {'gfx9' if gfx9 else 'gfx10+'}")


def dpp16_source(lane: int, ctrl: int, wave: int, gfx9: bool) -> int | None:
    """The lane `lane` reads under `ctrl`; None when out of range."""
    name, arg = dpp16_decode(ctrl, gfx9)
    base, r = lane & ~15, lane & 15
    if name == "quad_perm":
        return (lane & ~3) | arg[lane & 3]
    if name == "row_shl":
        return lane + arg if r + arg <= 15 else None
    if name == "row_shr":
        return lane - arg if r >= arg else None
    if name == "row_ror":
        return base + ((r - arg) & 15)
    if name == "row_mirror":
        return base + 15 - r
    if name == "row_half_mirror":
        return (lane & ~7) + 7 - (lane & 7)
    if name in ("row_share", "row_newbcast"):
        return base + arg
    if name == "row_xmask":
        return base + (r ^ arg)
    if name == "wave_shl":
        return lane + 1 if lane + 1 < wave else None
    if name == "wave_shr":
        return lane - 1 if lane >= 1 else None
    if name == "wave_rol":
        return (lane + 1) % wave
    if name == "wave_ror":
        return (lane - 1) % wave
    row = lane >> 4  # row_bcast [OPEN]: the rows before the broadcast one read nothing
    if arg == 15:
        return 16 * row - 1 if row >= 1 else None
    return 31 if row >= 2 else None


def dpp16(values: list[int], exec_mask: int, old: list[int], ctrl: int, row_mask: int, bank_mask: int,
          bound_ctrl: bool, fi: bool, gfx9: bool) -> list[int]:
    """What `v_mov_b32_dpp vdst(=old), vsrc(=values) <ctrl> row_mask bank_mask [bound_ctrl] [fi]` leaves in vdst,
    lane by lane (32 or 64 lanes)."""
    wave = len(values)
    dpp16_decode(ctrl, gfx9)
    out = []
    for lane in range(wave):
        row, bank = lane >> 4, (lane >> 2) & 3
        if not exec_mask >> lane & 1 or not row_mask >> row & 1 or not bank_mask >> bank & 1:
            out.append(old[lane] & MASK32)  # inactive, or masked: not written
            continue
        src = dpp16_source(lane, ctrl, wave, gfx9)
        if src is None or not fi and not exec_mask >> src & 1:  # no source: bound_ctrl reads 0, else no write
            out.append(0 if bound_ctrl else old[lane] & MASK32)
        else:
            out.append(values[src] & MASK32)
    return out


def dpp8(values: list[int], exec_mask: int, old: list[int], selects: list[int], fi: bool) -> list[int]:
    """What `v_mov_b32_dpp vdst, vsrc dpp8:[selects] [fi:1]` leaves in vdst: lane l reads lane (l & ~7) |
    selects[l & 7]; an inactive source gives 0 unless fi fetches it."""
    out = []
    for lane in range(len(values)):
        if not exec_mask >> lane & 1:
            out.append(old[lane] & MASK32)
            continue
        src = (lane & ~7) | selects[lane & 7]
        out.append(values[src] & MASK32 if fi or exec_mask >> src & 1 else 0)
    return out

