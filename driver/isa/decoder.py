"""Decode AMDGPU machine code: `decode(data, offset, target) -> Instruction`, with llvm-objdump-19's text.

The encoding is found with one lookup of dword 0's top 9 bits (encodings.py); the opcode entry with one dict
lookup in the generated table (<target>.json, written by generate.py from LLVM). An entry says, as data:
  m    mnemonic
  o    operands in print order: ["r", field, registers, class?] a register or source field (class: how its
       constants print, operands.CLASSES), ["t", text] fixed text (vcc, off), ["l", class] a literal dword
       the opcode always carries, ["i", field, format] an immediate printed by IMM_FORMATS[format]
  z    [field, values or null]: the word is invalid when the field holds one of the values (null: any non-zero)
  s    suffix modifiers in print order: ["e", field, {value: text}] or ["n", field, "prefix:", format, 1?]
       (the trailing 1: printed when 0 too)
  w    operand wrappers: [field, bit, operand index, "abs" | "neg"]
  alt  [field, value, mnemonic, operands]: another operand list while the field holds that value
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from . import dpp
from .encodings import TARGETS, Encoding, encodings_for
from .operands import constant_text, literal_text, reg_range

__all__ = ["DecodeError", "IMM_FORMATS", "Instruction", "NotDecoded", "decode", "render_imm", "sreg_names"]

HERE = Path(__file__).resolve().parent


class DecodeError(ValueError):
    """Bytes that are no valid instruction of the target."""


class NotDecoded(DecodeError):
    """A valid instruction in a form this decoder does not take apart (`form`: "VOP3P DPP")."""

    def __init__(self, message: str, mnemonic: str, form: str):
        super().__init__(message)
        self.mnemonic, self.form = mnemonic, form


class _BadOperand(Exception):
    pass


# VOP3P's src0 values that say a third dword of DPP controls follows on GFX11+ (LLVM SIDefines.h DPP_DPP8 0xE9,
# DPP_DPP8FI 0xEA, DPP 0xFA): not decoded yet (VOP1/VOP2/VOPC/VOP3's DPP are forms, encodings.py)
_VOP3_DPP_SRC0 = frozenset((0xE9, 0xEA, 0xFA))


@dataclass(frozen=True)
class Instruction:
    """One decoded instruction: `text` is what llvm-objdump-19 -d prints for it."""

    mnemonic: str
    encoding: str
    opcode: int
    fields: dict[str, int]
    size: int
    text: str
    literal: int | None = None
    # what an executor needs beyond the text: the operands in print order, each ("r", field, registers, kind)
    # for a register or source field (kind: the field's, or "sreg"/"agpr" where the opcode says so),
    # ("l",) for the opcode's own literal, ("i", field) for a printed immediate, ("t", text) for fixed text;
    # and the signed immediate fields' values, sign-extended (the table's formats say which are signed)
    operands: tuple[tuple, ...] = ()
    signed: Mapping[str, int] = field(default_factory=dict)


def _sext(v: int, width: int) -> int:
    return v - (1 << width) if v >> (width - 1) & 1 else v


def _u16(v: int, w: int, ctx: Any) -> str:
    return str(v) if v <= 64 else f"0x{v:x}"


def _s16(v: int, w: int, ctx: Any) -> str:
    s = _sext(v, w)
    return str(s) if -16 <= s <= 64 else f"0x{v:x}"


def _shex(v: int, w: int, ctx: Any) -> str:
    s = _sext(v, w)
    return f"-0x{-s:x}" if s < 0 else f"0x{s:x}"


def _waitcnt(v: int, w: int, ctx: Any) -> str:
    parts, every = [], []
    for name, pieces in ctx["waitcnt"]:
        val, maxv, shift = 0, 0, 0
        for lo, width in pieces:
            val |= ((v >> lo) & ((1 << width) - 1)) << shift
            maxv |= ((1 << width) - 1) << shift
            shift += width
        every.append(f"{name}({val})")
        if val != maxv:
            parts.append(f"{name}({val})")
    return " ".join(parts or every)


_INSTID = ("NO_DEP", "VALU_DEP_1", "VALU_DEP_2", "VALU_DEP_3", "VALU_DEP_4", "TRANS32_DEP_1", "TRANS32_DEP_2",
           "TRANS32_DEP_3", "FMA_ACCUM_CYCLE_1", "SALU_CYCLE_1", "SALU_CYCLE_2", "SALU_CYCLE_3")
_INSTSKIP = ("SAME", "NEXT", "SKIP_1", "SKIP_2", "SKIP_3", "SKIP_4")


def _delay_alu(v: int, w: int, ctx: Any) -> str:
    id0, skip, id1 = v & 0xF, (v >> 4) & 7, (v >> 7) & 0xF
    parts = []
    if id0:
        parts.append(f"instid0({_INSTID[id0] if id0 < len(_INSTID) else '/* invalid instid value */'})")
    if skip:
        parts.append(f"instskip({_INSTSKIP[skip] if skip < len(_INSTSKIP) else '/* invalid instskip value */'})")
    if id1:
        parts.append(f"instid1({_INSTID[id1] if id1 < len(_INSTID) else '/* invalid instid value */'})")
    return " | ".join(parts) or "0"


def _hwreg(v: int, w: int, ctx: Any) -> str:
    ident, off, size = v & 0x3F, (v >> 6) & 0x1F, ((v >> 11) & 0x1F) + 1
    name = ctx["hwreg"].get(str(ident), str(ident))
    return f"hwreg({name})" if off == 0 and size == 32 else f"hwreg({name}, {off}, {size})"


def _sendmsg(v: int, w: int, ctx: Any) -> str:
    ident = v & ctx["sendmsg_id_mask"]
    name = ctx["sendmsg"].get(str(ident))
    if name is not None:
        return f"sendmsg({name})"
    if v == ident and name is None:
        return f"sendmsg({ident}, 0, 0)"
    return str(v)


IMM_FORMATS = {
    "dec": lambda v, w, c: str(v),
    "hex": lambda v, w, c: f"0x{v:x}",
    "u16": _u16,
    "s16": _s16,
    "sdec": lambda v, w, c: str(_sext(v, w)),
    "shex": _shex,
    "hex_null": lambda v, w, c: f"0x{v:x}" if v else "null",  # gfx11 SMEM: the offset, or null when both are 0
    "dec_omit0": lambda v, w, c: str(v) if v else "",
    "waitcnt": _waitcnt,
    "delay_alu": _delay_alu,
    "hwreg": _hwreg,
    "sendmsg": _sendmsg,
    "dpp_ctrl": lambda v, w, c: dpp.shown(v, c["generation"] == "gfx9"),
    "dpp8": lambda v, w, c: f"[{','.join(str(v >> 3 * i & 7) for i in range(8))}]",  # the lane each lane of 8 reads
}


_SIGNED = frozenset(("s16", "sdec", "shex"))  # formats of signed immediates


def render_imm(fmt: str, value: int, width: int, ctx: Any = None) -> str:
    """An immediate in one of IMM_FORMATS (ctx: the target's tables, for waitcnt/hwreg/sendmsg)."""
    return IMM_FORMATS[fmt](value, width, ctx)


@dataclass(frozen=True)
class _Tables:
    target: str
    lut: tuple[Encoding | None, ...]  # dword 0's top 9 bits -> encoding
    forms: dict[str, tuple[Encoding, ...]]  # encoding name -> its forms chosen by a field value (SDWA)
    ops: dict[str, dict[int, dict]]
    ctx: dict


@cache
def _tables(target: str) -> _Tables:
    if target not in TARGETS:
        raise DecodeError(f"unknown target {target!r}: expected one of {', '.join(TARGETS)}")
    encs = encodings_for(target)
    lut = []
    for top in range(512):
        w = top << 23
        lut.append(next((e for e in encs if w & e.mask == e.match and e.when is None), None))
    forms: dict[str, tuple[Encoding, ...]] = {}
    for e in encs:
        if e.when:
            parent = next(p for p in encs if p.when is None and p.mask == e.mask and p.match == e.match)
            forms[parent.name] = forms.get(parent.name, ()) + (e,)
    path = HERE / f"{target}.json"
    data = json.loads(path.read_text())
    ops = {name: {int(k): v for k, v in table.items()} for name, table in data["encodings"].items()}
    return _Tables(target, tuple(lut), forms, ops, data["context"])


def sreg_names(target: str) -> list[str | None]:
    """The target's names of scalar operand values 0..254 (s0.., vcc_lo, m0, null, exec_lo, constants)."""
    return _tables(target).ctx["sregs"]["1"]


def _reg(kind: str, value: int, count: int, cls: str | None, ctx: dict) -> str | None:
    """Text of a register or source field value (None: a literal follows)."""
    if kind == "sdwa":  # SDWA source: a VGPR number, or an SGPR when bit 8 (the s bit) is set
        kind, value = "src", (value & 0xFF) if value & 0x100 else 256 + value
    if kind == "vgpr":
        return reg_range("v", value, count)
    if kind == "agpr":
        return reg_range("a", value - 256 if value >= 256 else value, count)
    if kind == "vdsty":
        return reg_range("v", value, count)
    if kind == "sbase":
        value <<= 1
    elif kind == "srsrc":
        value <<= 2
    if kind == "src" and value >= 256:
        return reg_range("v", value - 256, count)
    if value == 255 and kind in ("src", "ssrc"):
        return None
    if kind in ("src", "ssrc") and 128 <= value <= 248:
        text = constant_text(value, cls or "i32")
        if text is not None:
            return text
    names = ctx["sregs"]
    if count > 2:  # tuples of more than two registers are 4-aligned: LLVM drops the low bits
        value &= ~3
    value &= 0x7F if kind == "sreg" else 0xFF
    table = names["1"] if count == 1 else names["2"]
    text = table[value] if value < len(table) else None
    if text is None:
        raise _BadOperand(f"register value {value} is not a valid {count}-register operand")
    if count > 2 and ("[" in text):
        prefix = text[:text.index("[")]
        first = int(text[text.index("[") + 1:text.index(":")])
        return reg_range(prefix, first, count)
    return text


def decode(data: bytes, offset: int, target: str) -> Instruction:
    """Decode the instruction at `offset` in `data` for `target` (gfx90a, gfx942, gfx1030, gfx1100, gfx1201)."""
    t = _tables(target)
    if offset + 4 > len(data):
        raise DecodeError(f"{target}: truncated instruction at offset {offset:#x}")
    w0 = int.from_bytes(data[offset:offset + 4], "little")
    enc = t.lut[w0 >> 23]
    if enc is None:
        raise DecodeError(f"{target}: no known encoding at offset {offset:#x}: words {w0:08x}")
    head = int.from_bytes(data[offset:offset + enc.size], "little")  # (a VOP3 DPP's 0xFA is in dword 1)
    for form in t.forms.get(enc.name, ()):
        if enc.by_name[form.when[0]].get(head) == form.when[1]:
            enc = form
            break
    raw = data[offset:offset + enc.size]
    if len(raw) < enc.size:
        raise DecodeError(f"{target}: truncated {enc.name} instruction at offset {offset:#x}: {raw.hex()}")
    value = int.from_bytes(raw, "little")
    key = enc.key(value)
    entry = t.ops.get(enc.name, {}).get(key)
    if entry is None:
        raise DecodeError(f"{target}: invalid {enc.name} opcode {key} at offset {offset:#x}: words {_words(raw)}")
    by = enc.by_name
    for name, lo, hi in entry.get("z", ()):
        if lo <= by[name].get(value) <= hi:
            raise DecodeError(f"{target}: invalid {entry['m']} ({enc.name}) at offset {offset:#x}: "
                              f"{name}={by[name].get(value)}, words {_words(raw)}")
    mnemonic, items = entry["m"], entry["o"]
    if enc.name == "VOP3P" and not target.startswith(("gfx9", "gfx10")) and \
            by["src0"].get(value) in _VOP3_DPP_SRC0:
        raise NotDecoded(f"{target}: {mnemonic} in its VOP3P DPP form (src0 {by['src0'].get(value):#x}) at offset "
                         f"{offset:#x} is not decoded, words {_words(raw)}", mnemonic, "VOP3P DPP")
    for names, vals, m, alt_items in entry.get("alt", ()):
        if all(by[n].get(value) == v for n, v in zip(names, vals, strict=True)):
            mnemonic, items = m, alt_items
            break
    ctx = t.ctx
    size = enc.size
    literal = None
    texts = []
    operands = []
    for item in items:
        tag = item[0]
        if tag == "t":
            operands.append(("t", item[1]))
            texts.append(item[1])
        elif tag == "r":
            f = by[item[1]]
            cls = item[3]
            kind = {"s": "sreg", "a": "agpr"}[item[4]] if len(item) > 4 else f.kind
            fv = f.get(value)
            if f.kind == "vdsty":  # VOPD: vdstY's low bit is the opposite of vdstX's
                fv = (fv << 1) | ((by["vdstx"].get(value) & 1) ^ 1)
            operands.append(("r", item[1], item[2], kind))
            try:
                text = _reg(kind, fv, item[2], cls, ctx)
            except _BadOperand as e:
                raise DecodeError(f"{target}: invalid {mnemonic} ({enc.name}) at offset {offset:#x}: {item[1]}: {e}, "
                                  f"words {_words(raw)}") from None
            if text is None:
                literal = _literal(data, offset + enc.size, target, raw)
                size = enc.size + 4
                text = literal_text(literal, cls or "i32")
            texts.append(text)
        elif tag == "l":
            operands.append(("l",))
            literal = _literal(data, offset + enc.size, target, raw)
            size = enc.size + 4
            texts.append(literal_text(literal, item[1]))
        else:
            operands.append(("i", item[1]))
            f = by[item[1]]
            text = render_imm(item[2], f.get(value), f.bits, ctx)
            if text:
                texts.append(text)
    wraps: dict[int, set[str]] = {}
    for name, bit, index, kind in entry.get("w", ()):
        if by[name].get(value) >> bit & 1 and index < len(texts):
            wraps.setdefault(index, set()).add(kind)
    for index, kinds in wraps.items():
        t0 = texts[index]
        if "sext" in kinds:
            t0 = f"sext({t0})"
        if "abs" in kinds:
            t0 = f"|{t0}|"
        if "neg" in kinds:  # LLVM writes neg(...) around a bare integer constant, where "-" would read as its sign
            bare_int = t0[:1].isdigit() or (t0[:1] == "-" and t0[1:2].isdigit())
            t0 = f"neg({t0})" if bare_int and "abs" not in kinds else f"-{t0}"
        texts[index] = t0
    suffix = []
    shown = {item[1] for item in items if item[0] in ("r", "i")}
    for spec in entry.get("s", ()):
        if spec[1] in shown:  # printed as an operand in this form (gfx11 SMEM's offset when soffset is null)
            continue
        v = by[spec[1]].get(value)
        if spec[0] == "e":
            s = spec[2].get(str(v))
            if s:
                suffix.append(s)
        elif v or len(spec) > 4:
            suffix.append(spec[2] + render_imm(spec[3], v, by[spec[1]].bits, ctx))
    text = mnemonic
    sep = " "
    for t_ in texts:
        if t_.startswith(":: "):  # VOPD's second instruction
            text += f" {t_}"
            sep = " "
        else:
            text += sep + t_
            sep = ", "
    if enc.text:
        suffix.append(enc.text)
    if suffix:
        text += " " + " ".join(suffix)
    fields = {f.name: f.get(value) for f in enc.fields}
    signed = {name: _sext(by[name].get(value), by[name].bits) for name in
              {spec[1] for spec in entry.get("s", ()) if spec[0] == "n" and spec[3] in _SIGNED} |
              {item[1] for item in items if item[0] == "i" and item[2] in _SIGNED}}
    return Instruction(mnemonic, enc.name, key, fields, size, text, literal, tuple(operands), signed)


def _literal(data: bytes, at: int, target: str, raw: bytes) -> int:
    if at + 4 > len(data):
        raise DecodeError(f"{target}: literal missing after instruction {raw.hex()} at offset {at - len(raw):#x}")
    return int.from_bytes(data[at:at + 4], "little")


def _words(raw: bytes) -> str:
    return " ".join(f"{int.from_bytes(raw[i:i + 4], 'little'):08x}" for i in range(0, len(raw), 4))
