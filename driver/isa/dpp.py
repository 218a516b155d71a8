"""DPP16's lane patterns (the dpp_ctrl field) as one table: the values each takes, the generations that have it, the
text LLVM prints for it (AMDGPUInstPrinter::printDppCtrl; SIDefines.h DppCtrl) and the lane each lane reads
(AMDGPUModifierSyntax.rst, dpp_ctrl; gem5 src/arch/amdgpu/vega/insts/inst_util.hh dppInstImpl for row_bcast's rows
without a source). The decoder prints from it and the emulator reads lanes from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["PATTERNS", "Pattern", "pattern_of", "shown"]


@dataclass(frozen=True)
class Pattern:
    """dpp_ctrl values first..last on the generations `gfx9` and/or `gfx10` (GFX10 and later) say."""

    name: str
    first: int
    last: int
    gfx9: bool
    gfx10: bool
    text: Callable[[int], str]  # dpp_ctrl value -> what LLVM prints
    source: Callable[[int, int, int], int | None]  # (lane, dpp_ctrl value, lanes in the wave) -> lane read, or none
    wide: bool = False  # a 64-bit operation takes it (LLVM isLegalDPALU_DPPControl: "DP ALU dpp only supports
    # row_newbcast"), where the generation runs 64-bit operations' DPP at all (gfx90a, gfx942, gfx12)


def _row(lane: int) -> int:
    return lane & ~15


PATTERNS = (
    Pattern("quad_perm", 0x00, 0xFF, True, True,  # lane i of each 4 reads the one its 2-bit field names
            lambda v: f"quad_perm:[{v & 3},{v >> 2 & 3},{v >> 4 & 3},{v >> 6 & 3}]",
            lambda lane, v, n: (lane & ~3) | (v >> 2 * (lane & 3) & 3)),
    Pattern("row_shl", 0x101, 0x10F, True, True, lambda v: f"row_shl:{v & 15}",
            lambda lane, v, n: lane + (v & 15) if (lane & 15) + (v & 15) <= 15 else None),
    Pattern("row_shr", 0x111, 0x11F, True, True, lambda v: f"row_shr:{v & 15}",
            lambda lane, v, n: lane - (v & 15) if lane & 15 >= v & 15 else None),
    Pattern("row_ror", 0x121, 0x12F, True, True, lambda v: f"row_ror:{v & 15}",
            lambda lane, v, n: _row(lane) + ((lane & 15) - (v & 15) & 15)),
    Pattern("wave_shl", 0x130, 0x130, True, False, lambda v: "wave_shl:1",
            lambda lane, v, n: lane + 1 if lane + 1 < n else None),
    Pattern("wave_rol", 0x134, 0x134, True, False, lambda v: "wave_rol:1", lambda lane, v, n: (lane + 1) % n),
    Pattern("wave_shr", 0x138, 0x138, True, False, lambda v: "wave_shr:1",
            lambda lane, v, n: lane - 1 if lane else None),
    Pattern("wave_ror", 0x13C, 0x13C, True, False, lambda v: "wave_ror:1", lambda lane, v, n: (lane - 1) % n),
    Pattern("row_mirror", 0x140, 0x140, True, True, lambda v: "row_mirror",
            lambda lane, v, n: _row(lane) + 15 - (lane & 15)),
    Pattern("row_half_mirror", 0x141, 0x141, True, True, lambda v: "row_half_mirror",
            lambda lane, v, n: (lane & ~7) + 7 - (lane & 7)),
    Pattern("row_bcast", 0x142, 0x142, True, False, lambda v: "row_bcast:15",  # the rows after the first
            lambda lane, v, n: _row(lane) - 1 if lane >= 16 else None),
    Pattern("row_bcast", 0x143, 0x143, True, False, lambda v: "row_bcast:31",  # rows 2 and 3
            lambda lane, v, n: 31 if lane >= 32 else None),
    Pattern("row_newbcast", 0x150, 0x15F, True, False, lambda v: f"row_newbcast:{v & 15}",
            lambda lane, v, n: _row(lane) + (v & 15), wide=True),
    Pattern("row_share", 0x150, 0x15F, False, True, lambda v: f"row_share:{v & 15}",
            lambda lane, v, n: _row(lane) + (v & 15), wide=True),
    Pattern("row_xmask", 0x160, 0x16F, False, True, lambda v: f"row_xmask:{v & 15}",
            lambda lane, v, n: _row(lane) + ((lane & 15) ^ (v & 15))),
)


def pattern_of(value: int, gfx9: bool) -> Pattern | None:
    """The pattern dpp_ctrl `value` names on the generation (GFX9, or GFX10 and later); None: none there."""
    return next((p for p in PATTERNS if p.first <= value <= p.last and (p.gfx9 if gfx9 else p.gfx10)), None)


def shown(value: int, gfx9: bool) -> str:
    """What LLVM prints for dpp_ctrl `value` on the generation: the pattern, or its comment on one that lacks it."""
    p = pattern_of(value, gfx9)
    if p is not None:
        return p.text(value)
    other = pattern_of(value, not gfx9)
    if other is None:
        return "/* Invalid dpp_ctrl value */"
    if gfx9:
        return f"/* {other.name} is not supported on ASICs earlier than GFX10 */"
    return f"/* {other.name} is not supported starting from GFX10 */"
