"""How LLVM prints operand values: register ranges, inline constants and literals by operand class.

The classes are the ways llvm-objdump-19 prints a source's constant (generate.py picks, per opcode and operand,
the class that reproduces LLVM's text for a set of probe values):
  i32  -- integer or 32-bit float operand: inline ints, f32 inline floats; a literal equal to one prints as it
  f64  -- 64-bit float: the literal is the high dword; it prints as an inline float only when it is one's high dword
  f16  -- 16-bit float: the literal's low half is the value
  v2f16 -- packed halves: a literal equal to an f16 inline constant's bits prints as that constant
  i16  -- 16-bit integer: inline floats print as their f16 bits in hex; the literal's low half prints in hex
  hex  -- always hex (an opcode's own constant, v_fmamk_f32's K)
  i64  -- 64-bit integer: the literal (zero-extended) prints in decimal up to 64, else in hex
"""

from __future__ import annotations

import struct

__all__ = ["CLASSES", "constant_text", "literal_text", "reg_range"]

CLASSES = ("i32", "f64", "f16", "v2f16", "i16", "i64", "hex")

_FLOATS = (0.5, -0.5, 1.0, -1.0, 2.0, -2.0, 4.0, -4.0)
_F32_NAMES = ("0.5", "-0.5", "1.0", "-1.0", "2.0", "-2.0", "4.0", "-4.0", "0.15915494")
_F16_BITS = (0x3800, 0xB800, 0x3C00, 0xBC00, 0x4000, 0xC000, 0x4400, 0xC400, 0x3118)
_F32_BITS = tuple(struct.unpack("<I", struct.pack("<f", x))[0] for x in _FLOATS) + (0x3E22F983,)
_F64_HIGH = tuple(struct.unpack("<Q", struct.pack("<d", x))[0] >> 32 for x in _FLOATS)


def constant_text(value: int, cls: str) -> str | None:
    """Text of an inline constant source value 128..248 for an operand of class `cls` (None: not a constant)."""
    if 128 <= value <= 192:
        return str(value - 128)
    if 193 <= value <= 208:
        return str(192 - value)
    if 240 <= value <= 248:
        i = value - 240
        if cls == "i16":
            return f"0x{_F16_BITS[i]:x}"
        if cls == "f64" and i == 8:
            return "0.15915494309189532"
        return _F32_NAMES[i]
    return None


def _int_inline(v: int) -> str | None:
    s = v - (1 << 32) if v & 0x80000000 else v
    return str(s) if -16 <= s <= 64 else None


def literal_text(lit: int, cls: str) -> str:
    """Text of a 32-bit literal for an operand of class `cls`."""
    if cls == "f64":
        return _F32_NAMES[_F64_HIGH.index(lit)] if lit in _F64_HIGH else f"0x{lit:x}"
    if cls == "f16":
        low = lit & 0xFFFF
        s = low - 0x10000 if low & 0x8000 else low
        if -16 <= s <= 64:
            return str(s)
        return _F32_NAMES[_F16_BITS.index(low)] if low in _F16_BITS else f"0x{low:x}"
    if cls == "hex":
        return f"0x{lit:x}"
    if cls == "i64":
        return str(lit) if lit <= 64 else f"0x{lit:x}"
    text = _int_inline(lit)
    if text is not None:
        return text
    if cls == "v2f16":
        return _F32_NAMES[_F16_BITS.index(lit)] if lit in _F16_BITS else f"0x{lit:x}"
    if lit in _F32_BITS:
        return _F32_NAMES[_F32_BITS.index(lit)]
    return f"0x{lit & 0xFFFF:x}" if cls == "i16" else f"0x{lit:x}"


def reg_range(prefix: str, first: int, count: int) -> str:
    """v5, v[4:5], s[0:3], ttmp[4:7], a[0:1]."""
    return f"{prefix}{first}" if count == 1 else f"{prefix}[{first}:{first + count - 1}]"
