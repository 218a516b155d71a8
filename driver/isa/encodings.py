"""Encoding families per target: identifying prefix, length and field layout, as data.

One `Encoding` per family holds where its fields live (bit ranges counted from bit 0 of the first dword, so a
field in the second dword starts at 32) and what each field holds (`Field.kind`). GFX9 is written out once; the
other generations are derived from it as deltas (`derive`), since families differ in data, not in code paths.
The opcode -> mnemonic tables and per-opcode operand layouts are generated from LLVM (generate.py) into
<target>.json beside this file. Sources: amd-facts §12 (prefixes, checked with llvm-mc-19 -show-encoding) and
the field layouts of the AMD ISA guides, checked by tests/test_isa_decoder.py against llvm-mc-19.

Field kinds: "op" (opcode), "src" (9-bit vector-ALU source: scalar, constant, literal at 255, VGPR at 256+),
"ssrc" (8-bit scalar source), "sreg" (7-bit SGPR or special register), "vgpr" (8-bit VGPR number), "sbase"
(SGPR pair index), "srsrc" (SGPR quad index), "imm" (a number printed by the opcode's formatter), "flag".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

__all__ = ["TARGETS", "Encoding", "Field", "encodings_for", "match"]

TARGETS = ("gfx90a", "gfx942", "gfx1030", "gfx1100", "gfx1201")


@dataclass(frozen=True)
class Field:
    """Bits [lo, lo+width) of the instruction (dword 0 holds bits 0..31), holding a `kind` of value."""

    name: str
    lo: int
    width: int
    kind: str = "flag"
    extra: tuple[int, int] | None = None  # (lo, width) of more bits, above `width` in the value (VOP3P op_sel_hi)

    @property
    def bits(self) -> int:
        """Width of the value, extra bits included."""
        return self.width + (self.extra[1] if self.extra else 0)

    def get(self, value: int) -> int:
        """This field's value in an instruction read as one little-endian integer."""
        v = (value >> self.lo) & ((1 << self.width) - 1)
        if self.extra:
            v |= ((value >> self.extra[0]) & ((1 << self.extra[1]) - 1)) << self.width
        return v

    def put(self, value: int, v: int) -> int:
        """`value` with this field set to `v`."""
        m = (1 << self.width) - 1
        value = (value & ~(m << self.lo)) | ((v & m) << self.lo)
        if self.extra:
            lo, w = self.extra
            value = (value & ~(((1 << w) - 1) << lo)) | (((v >> self.width) & ((1 << w) - 1)) << lo)
        return value


@dataclass(frozen=True)
class Encoding:
    """One encoding family of one target: dword 0 matches `match` under `mask`; `size` bytes without literal."""

    name: str
    mask: int
    match: int
    size: int
    fields: tuple[Field, ...]
    literal: bool = False  # a "src"/"ssrc" field equal to 255 means a 32-bit literal follows
    keys: tuple[str, ...] = ("op",)  # fields that choose the opcode table entry (FLAT adds "seg")
    when: tuple[str, int] | None = None  # a form of another encoding: this field of it holds this value (SDWA)
    text: str = ""  # what every instruction of this form prints last (DPP8 with 0xEA: fi:1)
    by_name: Mapping[str, Field] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {f.name: f for f in self.fields})

    def key(self, value: int) -> int:
        """The opcode table key of an instruction (its key fields packed, first field in the low bits)."""
        k, shift = 0, 0
        for name in self.keys:
            f = self.by_name[name]
            k |= f.get(value) << shift
            shift += f.width
        return k


def F(name: str, lo: int, width: int = 1, kind: str = "flag", extra: tuple[int, int] | None = None) -> Field:  # noqa: N802
    return Field(name, lo, width, kind, extra)


def derive(base: Encoding, *, drop: Iterable[str] = (), add: Iterable[Field] = (), **changes) -> Encoding:
    """`base` with fields dropped, added or replaced (by name) and attributes changed."""
    added = {f.name: f for f in add}
    fields = [added.pop(f.name, f) for f in base.fields if f.name not in set(drop)]
    return replace(base, fields=tuple(fields) + tuple(added.values()), **changes)


_SOP2 = Encoding("SOP2", 0xC0000000, 0x80000000, 4, (
    F("op", 23, 7, "op"), F("sdst", 16, 7, "sreg"), F("ssrc1", 8, 8, "ssrc"), F("ssrc0", 0, 8, "ssrc")), literal=True)
_SOPK = Encoding("SOPK", 0xF0000000, 0xB0000000, 4, (
    F("op", 23, 5, "op"), F("sdst", 16, 7, "sreg"), F("simm16", 0, 16, "imm")))
_SOP1 = Encoding("SOP1", 0xFF800000, 0xBE800000, 4, (
    F("op", 8, 8, "op"), F("sdst", 16, 7, "sreg"), F("ssrc0", 0, 8, "ssrc")), literal=True)
_SOPC = Encoding("SOPC", 0xFF800000, 0xBF000000, 4, (
    F("op", 16, 7, "op"), F("ssrc1", 8, 8, "ssrc"), F("ssrc0", 0, 8, "ssrc")), literal=True)
_SOPP = Encoding("SOPP", 0xFF800000, 0xBF800000, 4, (F("op", 16, 7, "op"), F("simm16", 0, 16, "imm")))
_VOP2 = Encoding("VOP2", 0x80000000, 0x00000000, 4, (
    F("op", 25, 6, "op"), F("vdst", 17, 8, "vgpr"), F("vsrc1", 9, 8, "vgpr"), F("src0", 0, 9, "src")), literal=True)
_VOP1 = Encoding("VOP1", 0xFE000000, 0x7E000000, 4, (
    F("op", 9, 8, "op"), F("vdst", 17, 8, "vgpr"), F("src0", 0, 9, "src")), literal=True)
_VOPC = Encoding("VOPC", 0xFE000000, 0x7C000000, 4, (
    F("op", 17, 8, "op"), F("vsrc1", 9, 8, "vgpr"), F("src0", 0, 9, "src")), literal=True)
# SDWA (GFX9/GFX10): VOP1/VOP2/VOPC with src0 = 0xF9 and a second dword of sub-dword selects. The source in that
# dword is a VGPR number, or an SGPR when its s bit is set ("sdwa" kind: value = number | s << 8).
_SDWA_SRCS = (F("sdwa_src0", 32, 8, "sdwa", extra=(55, 1)), F("src0_sext", 51), F("src0_neg", 52), F("src0_abs", 53))
_SDWA_SRC1 = (F("sdwa_src1", 9, 8, "sdwa", extra=(63, 1)), F("src1_sext", 59), F("src1_neg", 60), F("src1_abs", 61))
_SDWA_TAIL = (F("clamp", 45), F("omod", 46, 2, "imm"), F("dst_sel", 40, 3, "imm"), F("dst_unused", 43, 2, "imm"),
              F("src0_sel", 48, 3, "imm"), F("src1_sel", 56, 3, "imm"))
_VOP1_SDWA = Encoding("VOP1_SDWA", 0xFE000000, 0x7E000000, 8, (
    F("op", 9, 8, "op"), F("vdst", 17, 8, "vgpr"), *_SDWA_SRCS, *_SDWA_TAIL), when=("src0", 0xF9))
_VOP2_SDWA = Encoding("VOP2_SDWA", 0x80000000, 0x00000000, 8, (
    F("op", 25, 6, "op"), F("vdst", 17, 8, "vgpr"), *_SDWA_SRCS, *_SDWA_SRC1, *_SDWA_TAIL), when=("src0", 0xF9))
_VOPC_SDWA = Encoding("VOPC_SDWA", 0xFE000000, 0x7C000000, 8, (
    F("op", 17, 8, "op"), F("sdst", 40, 7, "sreg"), F("sd", 47), *_SDWA_SRCS, *_SDWA_SRC1,
    F("src0_sel", 48, 3, "imm"), F("src1_sel", 56, 3, "imm")), when=("src0", 0xF9))
_SDWA = (_VOP1_SDWA, _VOP2_SDWA, _VOPC_SDWA)
# DPP (LLVM SIDefines.h DPP 0xFA; AMD ISA guides, "DPP16"): VOP1/VOP2/VOPC with src0 = 0xFA and a second dword
# holding the VGPR source, the lane pattern (dpp_ctrl) and the masks; fields in LLVM's print order. GFX10+ adds fi.
_DPP_TAIL = (F("dpp_ctrl", 40, 9, "imm"), F("row_mask", 60, 4, "imm"), F("bank_mask", 56, 4, "imm"),
             F("bound_ctrl", 51), F("src0_neg", 52), F("src0_abs", 53), F("src1_neg", 54), F("src1_abs", 55),
             F("unused49", 49))


def _dpp_forms(suffix: str, when: int, tail: tuple[Field, ...], text: str = "") -> tuple[Encoding, ...]:
    """The VOP1, VOP2 and VOPC forms of one DPP kind: src0 a VGPR in dword 1, then `tail`."""
    src0 = F("src0", 32, 8, "vgpr")
    return (Encoding(f"VOP1_{suffix}", 0xFE000000, 0x7E000000, 8, (
                F("op", 9, 8, "op"), F("vdst", 17, 8, "vgpr"), src0, *tail), when=("src0", when), text=text),
            Encoding(f"VOP2_{suffix}", 0x80000000, 0x00000000, 8, (
                F("op", 25, 6, "op"), F("vdst", 17, 8, "vgpr"), src0, F("vsrc1", 9, 8, "vgpr"), *tail),
                when=("src0", when), text=text),
            Encoding(f"VOPC_{suffix}", 0xFE000000, 0x7C000000, 8, (
                F("op", 17, 8, "op"), src0, F("vsrc1", 9, 8, "vgpr"), *tail), when=("src0", when), text=text))


_DPP_GFX9 = _dpp_forms("DPP", 0xFA, (*_DPP_TAIL, F("unused50", 50)))  # (GFX10's fi bit)
_DPP_GFX10 = _dpp_forms("DPP", 0xFA, (*_DPP_TAIL, F("fi", 50)))
# DPP8 (GFX10+, SIDefines.h DPP_DPP8 0xE9, DPP_DPP8FI 0xEA): eight 3-bit lane selects; the 0xEA kind prints fi:1
_DPP8 = (*_dpp_forms("DPP8", 0xE9, (F("dpp8", 40, 24, "imm"),)),
         *_dpp_forms("DPP8FI", 0xEA, (F("dpp8", 40, 24, "imm"),), text="fi:1"))

_VOP3 = Encoding("VOP3", 0xFC000000, 0xD0000000, 8, (
    F("op", 16, 10, "op"), F("vdst", 0, 8, "vgpr"), F("sdst", 8, 7, "sreg"), F("abs", 8, 3, "imm"),
    F("opsel", 11, 4, "imm"), F("clamp", 15), F("src0", 32, 9, "src"), F("src1", 41, 9, "src"),
    F("src2", 50, 9, "src"), F("omod", 59, 2, "imm"), F("neg", 61, 3, "imm")))
_VOP3P = Encoding("VOP3P", 0xFF800000, 0xD3800000, 8, (  # suffix fields in LLVM's print order
    F("op", 16, 7, "op"), F("vdst", 0, 8, "vgpr"), F("src0", 32, 9, "src"), F("src1", 41, 9, "src"),
    F("src2", 50, 9, "src"), F("opsel", 11, 3, "imm"), F("opsel_hi", 59, 2, "imm", extra=(14, 1)),
    F("neg", 61, 3, "imm"), F("neg_hi", 8, 3, "imm"), F("clamp", 15)))
_SMEM = Encoding("SMEM", 0xFC000000, 0xC0000000, 8, (
    F("op", 18, 8, "op"), F("sdata", 6, 7, "sreg"), F("sbase", 0, 6, "sbase"), F("offset", 32, 21, "imm"),
    F("soffset", 57, 7, "sreg"), F("soe", 14), F("nv", 15), F("glc", 16), F("imm", 17)))
_DS = Encoding("DS", 0xFC000000, 0xD8000000, 8, (
    F("op", 17, 8, "op"), F("vdst", 56, 8, "vgpr"), F("addr", 32, 8, "vgpr"), F("data0", 40, 8, "vgpr"),
    F("data1", 48, 8, "vgpr"), F("offset", 0, 16, "imm"), F("offset0", 0, 8, "imm"), F("offset1", 8, 8, "imm"),
    F("gds", 16), F("acc", 25)))  # one-address ops print offset0 | offset1 << 8 as one offset
_FLAT = Encoding("FLAT", 0xFC000000, 0xDC000000, 8, (
    F("op", 18, 7, "op"), F("seg", 14, 2, "op"), F("vdst", 56, 8, "vgpr"), F("addr", 32, 8, "vgpr"),
    F("data", 40, 8, "vgpr"), F("saddr", 48, 7, "sreg"), F("offset", 0, 13, "imm"), F("glc", 16),
    F("slc", 17), F("scc", 25), F("lds", 13), F("acc", 55)), keys=("op", "seg"))
_MUBUF = Encoding("MUBUF", 0xFC000000, 0xE0000000, 8, (
    F("op", 18, 7, "op"), F("vdata", 40, 8, "vgpr"), F("vaddr", 32, 8, "vgpr"), F("srsrc", 48, 5, "srsrc"),
    F("soffset", 56, 8, "ssrc"), F("idxen", 13), F("offen", 12), F("offset", 0, 12, "imm"), F("glc", 14),
    F("slc", 17), F("scc", 15), F("lds", 16), F("acc", 55)))

# Match order: longer prefixes first (SOP1/SOPC/SOPP before SOPK before SOP2; VOP1/VOPC before VOP2; VOP3P before
# VOP3 on GFX9, whose VOP3P prefix sits inside the VOP3 range).
_GFX9 = (_SOP1, _SOPC, _SOPP, _SOPK, _SOP2, _VOP1, _VOPC, _VOP2, _VOP3P, _VOP3, _SMEM, _DS, _FLAT, _MUBUF)

_GFX942 = {  # CDNA3 renames the cache bits: glc -> sc0, slc -> nt, scc -> sc1
    "FLAT": derive(_FLAT, add=(F("sc0", 16), F("nt", 17), F("sc1", 25)), drop=("glc", "slc", "scc")),  # sc0 nt sc1
    "MUBUF": derive(_MUBUF, add=(F("sc0", 14), F("nt", 17), F("sc1", 15)), drop=("glc", "slc", "scc")),
}

_GFX10 = {
    "VOP3": derive(_VOP3, mask=0xFC000000, match=0xD4000000, literal=True),
    "VOP3P": derive(_VOP3P, mask=0xFF000000, match=0xCC000000, literal=True),
    "SMEM": derive(_SMEM, match=0xF4000000, drop=("soe", "nv", "imm"), add=(F("dlc", 14),)),
    "DS": derive(_DS, drop=("acc",), add=(F("op", 18, 8, "op"), F("gds", 17))),
    "FLAT": derive(_FLAT, drop=("scc", "acc", "lds"), add=(F("offset", 0, 12, "imm"), F("dlc", 12), F("lds", 13))),
    "MUBUF": derive(_MUBUF, drop=("scc", "acc", "lds"), add=(F("dlc", 15), F("lds", 16), F("tfe", 55))),
}

# VOP3 with src0 = 0xFA (DPP16), 0xE9 or 0xEA (DPP8) and a third dword of DPP controls, GFX11+ (LLVM VOP3_DPP16,
# VOP3_DPP8): the source modifiers are VOP3's own, the DPP dword's are unused
_VOP3_DPP16_TAIL = (F("dpp_ctrl", 72, 9, "imm"), F("row_mask", 92, 4, "imm"), F("bank_mask", 88, 4, "imm"),
                    F("bound_ctrl", 83), F("fi", 82), F("unused81", 81), F("unused84", 84, 4, "imm"))


def _vop3_dpp(vop3: Encoding, suffix: str, when: int, tail: tuple[Field, ...], text: str = "") -> Encoding:
    return derive(vop3, name=f"VOP3_{suffix}", size=12, literal=False, when=("src0", when), text=text,
                  drop=("src0",), add=(F("src0", 64, 8, "vgpr"), *tail))


_GFX11 = {
    **_GFX10,
    "SMEM": derive(_GFX10["SMEM"], drop=("dlc",), add=(F("glc", 14), F("dlc", 13))),
    "FLAT": derive(_FLAT, drop=("scc", "acc", "lds", "glc", "slc"), add=(
        F("seg", 16, 2, "op"), F("glc", 14), F("slc", 15), F("dlc", 13), F("sve", 55))),
    "MUBUF": derive(_MUBUF, drop=("scc", "acc", "idxen", "offen", "offset", "glc", "slc", "lds"), add=(
        F("op", 18, 8, "op"), F("idxen", 55), F("offen", 54), F("offset", 0, 12, "imm"), F("glc", 14), F("slc", 12),
        F("dlc", 13), F("lds", 16), F("tfe", 53))),
    "VOPD": Encoding("VOPD", 0xFC000000, 0xC8000000, 8, (
        F("opx", 22, 4, "op"), F("opy", 17, 5, "op"), F("src0x", 0, 9, "src"), F("vsrc1x", 9, 8, "vgpr"),
        F("src0y", 32, 9, "src"), F("vsrc1y", 41, 8, "vgpr"), F("vdsty", 49, 7, "vdsty"), F("vdstx", 56, 8, "vgpr")),
        literal=True, keys=("opx", "opy")),
}

_GFX12_FLAT = Encoding("VFLAT", 0xFF000000, 0xEC000000, 12, (
    F("op", 14, 8, "op"), F("vdst", 32, 8, "vgpr"), F("vaddr", 64, 8, "vgpr"), F("vsrc", 55, 8, "vgpr"),
    F("saddr", 0, 7, "sreg"), F("offset", 72, 24, "imm"), F("sve", 49), F("th", 52, 3, "imm"),
    F("scope", 50, 2, "imm")))

_GFX12 = {
    **_GFX11,
    "SMEM": Encoding("SMEM", 0xFC000000, 0xF4000000, 8, (
        F("op", 13, 8, "op"), F("sdata", 6, 7, "sreg"), F("sbase", 0, 6, "sbase"), F("offset", 32, 24, "imm"),
        F("soffset", 57, 7, "sreg"), F("th", 23, 2, "imm"), F("scope", 21, 2, "imm"))),
    "DS": derive(_GFX11["DS"], drop=("gds",)),
    "FLAT": _GFX12_FLAT,
    "VSCRATCH": derive(_GFX12_FLAT, name="VSCRATCH", match=0xED000000),
    "VGLOBAL": derive(_GFX12_FLAT, name="VGLOBAL", match=0xEE000000),
    "MUBUF": Encoding("VBUFFER", 0xFC000000, 0xC4000000, 12, (
        F("op", 14, 8, "op"), F("vdata", 32, 8, "vgpr"), F("vaddr", 64, 8, "vgpr"), F("rsrc", 41, 9, "srsrc"),
        F("soffset", 0, 7, "sreg"), F("offen", 62), F("idxen", 63), F("offset", 72, 24, "imm"), F("tfe", 22),
        F("format", 55, 7, "imm"), F("th", 52, 3, "imm"), F("scope", 50, 2, "imm"))),
}

_DELTAS: dict[str, Mapping[str, Encoding]] = {
    "gfx90a": {}, "gfx942": _GFX942, "gfx1030": _GFX10, "gfx1100": _GFX11, "gfx1201": _GFX12,
}
_VOP3_DPP = (_vop3_dpp(_GFX10["VOP3"], "DPP", 0xFA, _VOP3_DPP16_TAIL),
             _vop3_dpp(_GFX10["VOP3"], "DPP8", 0xE9, (F("dpp8", 72, 24, "imm"),)),
             _vop3_dpp(_GFX10["VOP3"], "DPP8FI", 0xEA, (F("dpp8", 72, 24, "imm"),), text="fi:1"))
_FORMS = {  # encodings that are forms of others (`when`)
    "gfx90a": _SDWA + _DPP_GFX9, "gfx942": _SDWA + _DPP_GFX9, "gfx1030": _SDWA + _DPP_GFX10 + _DPP8,
    "gfx1100": _DPP_GFX10 + _DPP8 + _VOP3_DPP, "gfx1201": _DPP_GFX10 + _DPP8 + _VOP3_DPP,
}


def encodings_for(target: str) -> tuple[Encoding, ...]:
    """The encoding families of `target`, in match order (GFX9 with the target's delta applied)."""
    try:
        delta = _DELTAS[target]
    except KeyError:
        raise ValueError(f"unknown target {target!r}: expected one of {', '.join(TARGETS)}") from None
    names = {e.name for e in _GFX9}
    out = [delta.get(e.name, e) for e in _GFX9]
    out += [e for k, e in delta.items() if k not in names]
    if target in ("gfx1030", "gfx1100", "gfx1201"):  # VOP3P has its own prefix there: it no longer nests in VOP3
        out = [e for e in out if e.name != "VOP3P"] + [delta["VOP3P"]]
    return tuple(out) + _FORMS.get(target, ())


def match(encodings: Iterable[Encoding], head: int) -> Encoding | None:
    """The encoding of an instruction whose first bytes, read as one little-endian integer, are `head` (dword 0 is
    enough but for a form chosen by a later dword's field: VOP3 DPP): a form (`when`) before the encoding it is of."""
    found = None
    word0 = head & 0xFFFFFFFF
    for e in encodings:
        if word0 & e.mask == e.match and e.when is None:
            found = e
            break
    if found is None:
        return None
    for e in encodings:
        if e.when and e.mask == found.mask and e.match == found.match:
            f = found.by_name[e.when[0]]
            if f.get(head) == e.when[1]:
                return e
    return found
