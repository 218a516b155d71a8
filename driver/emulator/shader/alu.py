"""What the scalar and vector ALU instructions compute: one table entry per operation, keyed by its mnemonic
without the encoding suffix (_e32, _e64, _sdwa), shared by every target. Renamed operations (gfx9's v_add_u32 is
gfx10's v_add_nc_u32, s_andn2_b32 is gfx11's s_and_not1_b32) are aliases of one entry.

An entry names the types of its sources (in the order the instruction prints them) and of its result, and a
numpy function of the typed sources. The compiler (compile.py) reads the operands, applies the encoding's
modifiers (abs, neg, SDWA selects, clamp, omod) and writes the result under EXEC, the same way for every entry.
Flags say what else an operation reads or writes: a lane mask in (VCC or an SGPR source: carry-in, cndmask) or
out (VCC or SDST: carry-out, compares), SCC in or out (scalar ops), EXEC (v_cmpx, s_*_saveexec).

Semantics: the AMD ISA guides' pseudocode (CDNA3, RDNA3, RDNA4 "Instructions" chapters; tinygrad's
autogen/amd/*/str_pcode.py holds the RDNA3/RDNA4 text machine-readably), where cited below.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["DOTS", "SALU", "TYPES", "VALU", "AluOp", "Type", "Unsupported", "dot"]

u8, u16, u32, u64 = np.uint8, np.uint16, np.uint32, np.uint64
i16, i32, i64 = np.int16, np.int32, np.int64
f16, f32, f64 = np.float16, np.float32, np.float64


class Unsupported(Exception):
    """An instruction the emulated GPU does not execute (its mnemonic, or an operand form), or values of its
    operands it does not (raised while running it)."""


@dataclass(frozen=True)
class Type:
    name: str
    dtype: type
    bits: int
    float: bool
    sign_modifiers: bool = False  # raw bits whose VOP3 abs/neg clear/flip the top bit, as a float's sign (b32)


TYPES = {t.name: t for t in (
    Type("u32", u32, 32, False), Type("i32", i32, 32, False), Type("f32", f32, 32, True),
    Type("u64", u64, 64, False), Type("i64", i64, 64, False), Type("f64", f64, 64, True),
    Type("u16", u16, 16, False), Type("i16", i16, 16, False), Type("f16", f16, 16, True),
)}
TYPES["b32"] = Type("b32", u32, 32, False, sign_modifiers=True)
TYPES["b64"], TYPES["b16"] = TYPES["u64"], TYPES["u16"]


@dataclass(frozen=True)
class AluOp:
    """One ALU operation: fn(*sources) -> result, or (result, lanes/scc) with a mask or SCC out."""

    ins: tuple[str, ...]
    out: str | None
    fn: Callable
    mask_in: bool = False  # the last source is a lane mask (VCC in VOP2, an SGPR source in VOP3)
    mask_out: bool = False  # fn also returns a lane mask: VCC (VOP2/VOPC), SDST (VOP3); compares return only it
    exec_out: bool = False  # the mask goes to EXEC (v_cmpx)
    acc: bool = False  # the destination is also the last source (v_fmac)
    lanes: bool = False  # fn takes the lane numbers as its last argument (v_mbcnt)
    scc_in: bool = False  # fn takes SCC as its last argument (scalar)
    scc_out: bool = False  # fn returns (result, scc) (scalar); a compare returns only scc
    saveexec: bool = False  # scalar: fn(source, exec) -> new exec; the destination gets the old EXEC


def _popcount(x):
    return np.bitwise_count(x).astype(u32)


def _ctz(x, bits: int):
    """Trailing zeros; -1 (all ones) when x is 0."""
    x = np.asarray(x)
    low = x & (~x + x.dtype.type(1))  # the lowest set bit
    n = np.where(x == 0, u32(0xFFFFFFFF), _popcount(low - x.dtype.type(1)))
    return n.astype(u32)


def _clz(x, bits: int):
    """Leading zeros; -1 (all ones) when x is 0 (v_ffbh_u32, s_flbit_i32)."""
    x = np.asarray(x)
    y = x.copy()
    for s in (1, 2, 4, 8, 16, 32)[:bits.bit_length() - 1]:
        y = y | (y >> x.dtype.type(s))
    n = bits - _popcount(y).astype(i64)
    return np.where(x == 0, u32(0xFFFFFFFF), n.astype(u32)).astype(u32)


def _cls(x, bits: int):
    """Leading bits equal to the sign bit, itself included; -1 (all ones) for 0 and -1 (RDNA3 ISA S_CLS_I32)."""
    x = np.asarray(x)
    return _clz((x ^ (x >> (bits - 1))).view(u64 if bits == 64 else u32), bits)


_REV8 = np.array([int(f"{i:08b}"[::-1], 2) for i in range(256)], u8)


def _brev32(x):
    x = np.ascontiguousarray(np.asarray(x, u32))
    return _REV8[x.view(u8)].view(u32)[..., ::-1].copy().reshape(x.shape) if x.ndim == 0 else \
        _REV8[x.view(u8).reshape(x.shape + (4,))][..., ::-1].copy().view(u32).reshape(x.shape)


def _brev64(x):
    x = np.asarray(x, u64)
    return _brev32((x & u64(0xFFFFFFFF)).astype(u32)).astype(u64) << u64(32) | _brev32((x >> u64(32)).astype(u32))


def _cvt_int(x, lo: float, hi: float, dtype):
    """Float to integer as the hardware converts: truncate, NaN -> 0, clamp to the type's range."""
    x = np.nan_to_num(np.asarray(x, f64), nan=0.0, posinf=hi, neginf=lo)
    return np.clip(np.trunc(x), lo, hi).astype(dtype)


def _mad_u64_u32(a, b, c):
    r = a.astype(u64) * b.astype(u64)
    s = r + c
    return s, s < r


def _mad_i64_i32(a, b, c):
    r = a.astype(i64) * b.astype(i64)
    s = (r.view(u64) + c.view(u64)).view(i64)
    return s, ((r ^ s) & (c ^ s)) < 0  # signed overflow of the add


def _add_co(a, b):
    s = a + b
    return s, s < a


def _addc(a, b, c):
    s = a.astype(u64) + b + c.astype(u64)
    return s.astype(u32), s > 0xFFFFFFFF


def _sub_co(a, b):
    return a - b, b > a


def _subb(a, b, c):
    t = b.astype(u64) + c.astype(u64)
    return (a.astype(u64) - t).astype(u32), t > a


def _bfm(width, offset):
    """S_BFM_B32, V_BFM_B32: a mask of `width` ones from bit `offset` (each its low 5 bits)."""
    return ((u64(1) << (width & 31).astype(u64)) - u64(1)).astype(u32) << (offset & 31)


def _bfe_u32(a, off, width):
    w = width & 31
    return ((a >> (off & 31)) & ((u64(1) << w.astype(u64)) - u64(1)).astype(u32)).astype(u32)


def _bfe_i32(a, off, width):
    """The field sign-extended from its top bit (0 for width 0); a field reaching past bit 31 takes S0's sign
    there (ISA pseudocode: tmp = (S0.i32 >> offset) & mask, an arithmetic shift)."""
    shift = ((32 - (width & 31)) % 32).astype(u32)
    field = (a.view(i32) >> (off & 31).astype(i32)).view(u32) << shift
    return np.where((width & 31) == 0, i32(0), field.view(i32) >> shift.astype(i32))


def _bfe_u64(a, off, width):
    w = (width & 63).astype(u64)
    return (a >> (off & 63).astype(u64)) & ((u64(1) << w) - u64(1))


def _bfe_i64(a, off, width):
    shift = ((64 - (width & 63)) % 64).astype(u64)
    field = (a.view(i64) >> (off & 63).astype(i64)).view(u64) << shift
    return np.where((width & 63) == 0, i64(0), field.view(i64) >> shift.astype(i64))


def _sbfe(field: Callable, bits: int) -> Callable:
    """S_BFE_*: the field at offset S1[4:0] (S1[5:0] for 64 bits) of S1[22:16] bits, with SCC = result != 0. The
    width is taken modulo the operand's bits, as for V_BFE (compilers emit no wider field)."""
    return _nz(lambda a, b: field(a, b & (bits - 1), b >> 16 & 0x7F))


def _alignbit(a, b, c):
    return ((a.astype(u64) << u64(32) | b) >> (c & 31).astype(u64)).astype(u32)


# each float type: (its bits as an unsigned type, where its exponent field starts, that field's all-ones, the
# quiet bit of a NaN)
_FLOAT_FIELDS = {np.dtype(f16): (u16, 10, 0x1F, 1 << 9), np.dtype(f32): (u32, 23, 0xFF, 1 << 22),
                 np.dtype(f64): (u64, 52, 0x7FF, 1 << 51)}


def _exponent(x) -> np.ndarray:
    """The biased exponent field of a float."""
    bits, at, ones, _ = _FLOAT_FIELDS[x.dtype]
    return (x.view(bits) >> bits(at) & bits(ones)).astype(i64)


def _is_denorm(x) -> np.ndarray:
    return (_exponent(x) == 0) & (x != 0)


def _div_scale(x, den, num):
    """V_DIV_SCALE_F32/F64 (RDNA3 ISA pseudocode): the operand scaled for the Newton-Raphson division, and VCC
    set when the quotient will need scaling back. The pseudocode's case of a denormal reciprocal and a denormal
    quotient (scale the denominator up, VCC) overflows a denominator near the top of the range: -0.5 / DBL_MAX
    came out NaN. That case takes the denormal reciprocal's scaling here (both operands down), as tinygrad's
    corrected pseudocode drops it; every quotient of the corpus's float_edges then comes out exact."""
    big, scale, tiny = (768, 128, 53) if x.dtype == f64 else (96, 64, 23)
    t = x.dtype.type
    with np.errstate(all="ignore"):
        ed, en = _exponent(den), _exponent(num)
        rcp_denorm = _is_denorm(np.asarray(1.0 / den.astype(f64)).astype(x.dtype))  # in the operands' type
        quot = (num / den).astype(x.dtype)
        # a quotient below the normal range: denormal, or so small it rounds to 0 (else a tiny numerator scales
        # both operands up, and a large denominator overflows)
        quot_denorm = _is_denorm(quot) | ((quot == 0) & (num != 0))
        out = np.array(np.broadcast_to(x, np.broadcast(x, den, num).shape), x.dtype)
        vcc = np.zeros(out.shape, bool)
        up, down = np.ldexp(out, scale).astype(x.dtype), np.ldexp(out, -scale).astype(x.dtype)
        zero = (num == 0) | (den == 0)
        c1 = ~zero & (en - ed >= big)
        c2 = ~zero & ~c1 & _is_denorm(den)
        c4 = ~zero & ~c1 & ~c2 & rcp_denorm
        c5 = ~zero & ~c1 & ~c2 & ~c4 & quot_denorm
        c6 = ~zero & ~c1 & ~c2 & ~c4 & ~c5 & (en <= tiny)
        out = np.where(zero, t(np.nan), out)
        out = np.where(c1 & (x == den), up, out)
        out = np.where(c2 | c6, up, out)
        out = np.where(c4, down, out)
        out = np.where(c5 & (x == num), up, out)
        vcc = c1 | c5
    return out, vcc


def min_f(a, b):
    """V_MIN_F32 (F16, F64): the lesser, a NaN source ignored, and -0.0 below +0.0 (the RDNA3 ISA guide's
    pseudocode, LT_NEG_ZERO: "differs from IEEE"; numpy's fmin gives either zero by position)."""
    return np.where(a == b, np.where(np.signbit(a), a, b), np.fmin(a, b))


def max_f(a, b):
    """V_MAX_F32 (F16, F64): the greater, a NaN source ignored, and +0.0 above -0.0 (GT_NEG_ZERO)."""
    return np.where(a == b, np.where(np.signbit(a), b, a), np.fmax(a, b))


def _med3_f(a, b, c):
    """V_MED3_F32 (and F16): the median; with a NaN source, V_MIN3 of the three, the least of the others (the ISA
    guide's pseudocode; LLVM folds fmed3(x, y, NaN) to minnum(x, y) as well)."""
    med = max_f(min_f(a, b), min_f(max_f(a, b), c))
    return np.where(np.isnan(a) | np.isnan(b) | np.isnan(c), min_f(min_f(a, b), c), med)


def _div_fmas(a, b, c, vcc):
    """V_DIV_FMAS: fma, scaled back in lanes whose VCC is set by what V_DIV_SCALE scaled the operands by: 2**64
    (f32) or 2**128 (f64), up when c's exponent is past the middle of its range, down otherwise. The RDNA3 ISA
    guide's pseudocode scales by 2**32 (2**64) always, which undoes no V_DIV_SCALE: divisions of large or tiny
    operands came out wrong by that factor. This is tinygrad's correction of the pseudocode (its
    _apply_pseudocode_fixes), checked by such divisions (the corpus's float_edges)."""
    dtype = np.result_type(a, b, c)
    scale, middle = (128, 1023) if dtype == f64 else (64, 127)
    up = _exponent(np.asarray(c, dtype)) > middle
    return fma(a, b, c, np.where(vcc, np.where(up, scale, -scale), 0))  # scaled before its one rounding


def _div_fixup(q, den, num):
    """V_DIV_FIXUP: the quotient's special cases (RDNA3 ISA pseudocode). A NaN quotient of operands that are no
    special case is an overflow: a denormal denominator under a quotient past the range makes the Newton step
    inf - inf (1e160 / 5e-324 came out NaN). The pseudocode passes the NaN on; tinygrad's correction of it
    (_apply_pseudocode_fixes) gives +-OVERFLOW, inf when rounding to nearest."""
    t = q.dtype.type
    with np.errstate(all="ignore"):
        sign = np.signbit(den) ^ np.signbit(num)
        inf = np.where(sign, t(-np.inf), t(np.inf))
        zero = np.where(sign, t(-0.0), t(0.0))
        nan = t(np.nan)
        out = np.where(np.isnan(q), inf, np.where(sign, -np.abs(q), np.abs(q)))
        out = np.where((np.abs(den) == np.inf) | (num == 0), zero, out)
        out = np.where((den == 0) | (np.abs(num) == np.inf), inf, out)
        out = np.where((np.abs(den) == np.inf) & (np.abs(num) == np.inf), nan, out)
        out = np.where((den == 0) & (num == 0), nan, out)
        out = np.where(np.isnan(den), den, out)
        out = np.where(np.isnan(num), num, out)
    return out.astype(q.dtype)


def _parts(v, bits: int) -> list:
    """The unsigned `bits`-wide fields of u32 `v`, lowest first."""
    mask = u32((1 << bits) - 1)
    return [(v >> u32(k)) & mask for k in range(0, 32, bits)]


def _sad(a, b, bits: int, masked: bool = False):
    total = u32(0)
    for x, y in zip(_parts(a, bits), _parts(b, bits), strict=True):
        diff = np.where(x > y, x - y, y - x)
        total = total + (np.where(y == 0, u32(0), diff) if masked else diff)
    return total.astype(u32)


def _lerp(a, b, c):
    out = u32(0)
    for k, (x, y, z) in enumerate(zip(_parts(a, 8), _parts(b, 8), _parts(c, 8), strict=True)):
        out = out | ((x + y + (z & u32(1))) >> u32(1)) << u32(8 * k)
    return out.astype(u32)


# Integer dot products (CDNA3/RDNA3 pseudocode V_DOT*): S2 (the *c forms: D) plus the products of the `bits`-wide
# fields of S0 and S1, each signed as the name says; an iu form takes each source's from its NEG bit (NEG[0]: S0,
# NEG[1]: S1). In 32 bits, wrapping (their clamp bit is not emulated).
DOTS: dict[str, tuple[int, bool | None]] = {
    "v_dot2_i32_i16": (16, True), "v_dot2_u32_u16": (16, False), "v_dot4_i32_i8": (8, True),
    "v_dot4_u32_u8": (8, False), "v_dot8_i32_i4": (4, True), "v_dot8_u32_u4": (4, False),
    "v_dot4_i32_iu8": (8, None), "v_dot8_i32_iu4": (4, None)}


def dot(a, b, c, bits: int, signed_a: bool, signed_b: bool):
    """c plus the sum of the products of the `bits`-wide fields of u32 a and b (signed as told), as u32."""
    total = np.asarray(c).astype(i64)
    top = i64(1 << bits)
    for x, y in zip(_parts(a, bits), _parts(b, bits), strict=True):
        x, y = x.astype(i64), y.astype(i64)
        if signed_a:
            x = np.where(x >= top // 2, x - top, x)
        if signed_b:
            y = np.where(y >= top // 2, y - top, y)
        total = total + x * y
    return (total & i64(0xFFFFFFFF)).astype(u32)


def fma(a, b, c, scale=0, dtype=None):
    """Fused multiply-add, times 2**scale (an int, or one per lane: V_DIV_FMAS), rounded once to `dtype` (the
    operands' type unless given: V_FMA_MIXLO_F16 rounds f32 operands' to f16). f16 and f32: their
    product is exact in f64, and its sum with c is rounded to odd there (the error of the rounded sum is exact:
    TwoSum; a power of two scales both exactly), which the rounding to the narrower type then rounds as the exact
    value would be (Boldo and Melquiond, "Emulation of FMA and correctly rounded sums: proved algorithms using
    rounding to odd", 2008). f64: exactly, in integers, where the operands are finite."""
    dtype = np.result_type(a, b, c) if dtype is None else np.dtype(dtype)
    if dtype == f64:
        return _fma64(a, b, c, scale)
    with np.errstate(all="ignore"):
        p = np.asarray(a, f64) * np.asarray(b, f64)
        z = np.asarray(c, f64)
        s = p + z
        scaled = np.ldexp(s, scale) if np.any(scale) else s
        # the two roundings differ from one only where the f64 sum lies exactly halfway between two values of
        # the narrower type, or below its normal range (whose steps are not the mantissa's): round those to odd
        drop = 52 - np.finfo(dtype).nmant
        halfway = (scaled.view(u64) & u64((1 << drop) - 1)) == u64(1 << (drop - 1))
        if (halfway | (np.abs(scaled) < np.finfo(dtype).tiny)).any():
            t = s - p
            err = (p - (s - t)) + (z - t)
            even = (scaled.view(u64) & u64(1)) == 0
            odd = np.nextafter(scaled, np.where(err > 0, np.inf, -np.inf))
            scaled = np.where((err != 0) & np.isfinite(err) & even, odd, scaled)
        return scaled.astype(dtype)


# V_TRIG_PREOP_F64 (CDNA3/RDNA3/RDNA4 pseudocode): 53 bits of 2/pi, the first `shift` of its fraction skipped,
# where shift = 53 * S1[4:0] + max(exponent(S0) - 1077, 0), as a double scaled to their place: 2**(-53 - shift),
# 2**128 more when exponent(S0) >= 1968. Where the pseudocode is silent, LLVM 19's constant folding (the tests'
# oracle) decides: a NaN S0 gives itself, quieted. Bits from 1120 on: LLVM gives 0 for them, the pseudocode's
# 1201-bit 2/pi would not; no value but 0 is representable there unless exponent(S0) >= 1968, which is refused.
TRIG_PREOP_SHIFTS = 1120


@functools.cache
def _two_over_pi_windows() -> np.ndarray:
    """For each shift, the 53 bits of 2/pi's fraction after its first `shift` (as integers)."""
    bits = TRIG_PREOP_SHIFTS + 53 + 64  # and guard bits

    def atan_inv(x: int) -> int:  # atan(1/x) * 2**bits, by its series
        total, term, n, sign = 0, (1 << bits) // x, 1, 1
        while term:
            total += sign * (term // n)
            term, n, sign = term // (x * x), n + 2, -sign
        return total

    pi = 16 * atan_inv(5) - 4 * atan_inv(239)  # Machin's formula, pi * 2**bits within a few units
    two_over_pi = (2 << (2 * bits)) // pi  # 2/pi * 2**bits
    return np.array([(two_over_pi >> (bits - 53 - s)) & ((1 << 53) - 1) for s in range(TRIG_PREOP_SHIFTS)], u64)


def _trig_preop(x, segment):
    exponent = (np.asarray(x, f64).view(u64) >> u64(52) & u64(0x7FF)).astype(i64)
    shift = (np.asarray(segment, u32) & u32(31)).astype(i64) * 53 + np.maximum(exponent - 1077, 0)
    big = exponent >= 1968
    if (big & (shift >= TRIG_PREOP_SHIFTS) & ~np.isnan(x)).any():
        raise Unsupported(f"v_trig_preop_f64 of bits {TRIG_PREOP_SHIFTS} and on of 2/pi with an operand of exponent "
                          f"1968 or more is not emulated: the sources differ on them")
    windows = _two_over_pi_windows()
    bits = np.where(shift < TRIG_PREOP_SHIFTS, windows[np.minimum(shift, TRIG_PREOP_SHIFTS - 1)], u64(0))
    out = np.ldexp(bits.astype(f64), (-53 - shift + 128 * big).astype(i32))
    return np.where(np.isnan(x), (np.asarray(x, f64).view(u64) | u64(1 << 51)).view(f64), out)


def _fma64(a, b, c, scale=0):
    a, b, c, scale = np.broadcast_arrays(np.asarray(a, f64), np.asarray(b, f64), np.asarray(c, f64),
                                         np.asarray(scale, i64))
    with np.errstate(all="ignore"):
        out = np.array(np.ldexp(a * b + c, scale))  # where an operand is not finite, and for a sum of zeros
    # an infinite addend to a finite product is the addend, though the product rounded alone overflows (campaign
    # 119: inf - inf gave NaN)
    out = np.where(np.isfinite(a) & np.isfinite(b) & np.isinf(c), c, out)
    for i in map(tuple, np.argwhere(np.isfinite(a) & np.isfinite(b) & np.isfinite(c))):
        (n1, d1), (n2, d2), (n3, d3) = (float(x[i]).as_integer_ratio() for x in (a, b, c))
        num, den, e = n1 * n2 * d3 + n3 * d1 * d2, d1 * d2 * d3, int(scale[i])
        if num == 0:
            if n1 * n2 != 0 or n3 != 0:  # an exact cancellation is +0
                out[i] = 0.0
            continue
        num, den = (num << e, den) if e >= 0 else (num, den << -e)
        try:
            out[i] = num / den  # int division rounds once, to nearest even, subnormals included
        except OverflowError:
            out[i] = np.inf if num > 0 else -np.inf
    return out


def _class(x, mask):
    """V_CMP_CLASS: the bit of `mask` for x's class (0 signaling NaN, 1 quiet NaN, 2 -inf, 3 -normal, 4 -denormal,
    5 -0, 6 +0, 7 +denormal, 8 +normal, 9 +inf)."""
    bits, _, top, quiet = _FLOAT_FIELDS[x.dtype]
    raw = x.view(bits)
    neg = np.signbit(x)
    e = _exponent(x)
    cls = np.where(neg, 3, 8)
    cls = np.where(e == 0, np.where(x == 0, np.where(neg, 5, 6), np.where(neg, 4, 7)), cls)
    cls = np.where(e == top, np.where(neg, 2, 9), cls)
    cls = np.where(np.isnan(x), np.where(raw & bits(quiet), 1, 0), cls)
    return (mask.astype(u32) >> cls.astype(u32)) & 1 == 1


def _perm(a, b, sel):
    """V_PERM_B32: each result byte chosen by a selector byte of `sel` from the bytes of {a, b} (b low): 0-7
    a byte, 8-11 the sign of b[15], b[31], a[15], a[31] spread over the byte, 12 zero, 13-15 0xFF."""
    both = np.asarray(b).astype(u64) | np.asarray(a).astype(u64) << u64(32)
    signs = [(b >> 15) & 1, (b >> 31) & 1, (a >> 15) & 1, (a >> 31) & 1]
    out = np.zeros(np.broadcast(a, b, sel).shape, u32)
    for k in range(4):
        s = (np.asarray(sel) >> u32(8 * k)) & u32(0xFF)
        byte = ((both >> (np.minimum(s, 7).astype(u64) * u64(8))) & u64(0xFF)).astype(u32)
        for j, sign in enumerate(signs):
            byte = np.where(s == 8 + j, (sign * 0xFF).astype(u32), byte)
        byte = np.where(s == 12, u32(0), np.where(s >= 13, u32(0xFF), byte))
        out |= byte << u32(8 * k)
    return out


def _pack16(lo, hi):
    """Two 16-bit values (their low bits) as the halves of a dword, `lo` low."""
    return (np.asarray(lo).astype(u32) & u32(0xFFFF)) | np.asarray(hi).astype(u32) << u32(16)


def _f16_toward_zero(x):
    """f32 to f16 rounded toward zero: the nearest, one step back toward zero where it rounded away (a finite
    value past the range gives the largest half, not inf)."""
    with np.errstate(all="ignore"):
        near = x.astype(f16)
        away = np.abs(near.astype(f64)) > np.abs(x.astype(f64))  # false for NaN
        return np.where(away, np.nextafter(near, f16(0)), near)


def _sat(lo, hi, dtype):
    return lambda x: _cvt_int(x, lo, hi, dtype)


def V(ins: str, out: str | None, fn: Callable, **flags) -> AluOp:  # noqa: N802
    return AluOp(tuple(ins.split()), out, fn, **flags)


VALU: dict[str, AluOp] = {
    # moves and selects
    "v_mov_b32": V("u32", "u32", lambda a: a),
    # to, from and between AccVGPRs (gfx90a/gfx942; VOP3P but mov_b32's VOP1); compilers spill VGPRs to them
    "v_accvgpr_write_b32": V("u32", "u32", lambda a: a),
    "v_accvgpr_read_b32": V("u32", "u32", lambda a: a),
    "v_accvgpr_mov_b32": V("u32", "u32", lambda a: a),
    "v_mov_b64": V("u64", "u64", lambda a: a),
    # LLVM gives v_cndmask_b32_e64 float input modifiers (sqrt(fabs(x)) selects |x|): b32 sources
    "v_cndmask_b32": V("b32 b32", "u32", lambda a, b, m: np.where(m, b, a), mask_in=True),
    # 32-bit integer arithmetic
    "v_add_u32": V("u32 u32", "u32", lambda a, b: a + b),
    "v_sub_u32": V("u32 u32", "u32", lambda a, b: a - b),
    "v_subrev_u32": V("u32 u32", "u32", lambda a, b: b - a),
    "v_add_i32": V("i32 i32", "i32", lambda a, b: a + b), "v_sub_i32": V("i32 i32", "i32", lambda a, b: a - b),
    "v_add_co_u32": V("u32 u32", "u32", _add_co, mask_out=True),
    "v_sub_co_u32": V("u32 u32", "u32", _sub_co, mask_out=True),
    "v_subrev_co_u32": V("u32 u32", "u32", lambda a, b: _sub_co(b, a), mask_out=True),
    "v_addc_co_u32": V("u32 u32", "u32", _addc, mask_in=True, mask_out=True),
    "v_subb_co_u32": V("u32 u32", "u32", _subb, mask_in=True, mask_out=True),
    "v_subbrev_co_u32": V("u32 u32", "u32", lambda a, b, c: _subb(b, a, c), mask_in=True, mask_out=True),
    "v_add3_u32": V("u32 u32 u32", "u32", lambda a, b, c: a + b + c),
    "v_mul_lo_u32": V("u32 u32", "u32", lambda a, b: (a.astype(u64) * b).astype(u32)),
    "v_mul_hi_u32": V("u32 u32", "u32", lambda a, b: (a.astype(u64) * b >> u64(32)).astype(u32)),
    "v_mul_hi_i32": V("i32 i32", "i32", lambda a, b: (a.astype(i64) * b >> 32).astype(i32)),
    "v_mul_u32_u24": V("u32 u32", "u32", lambda a, b: (a & 0xFFFFFF) * (b & 0xFFFFFF)),
    "v_mul_hi_u32_u24": V("u32 u32", "u32", lambda a, b: ((a & 0xFFFFFF).astype(u64) * (b & 0xFFFFFF)
                                                             >> u64(32)).astype(u32)),
    "v_mul_i32_i24": V("i32 i32", "i32", lambda a, b: (a << 8 >> 8) * (b << 8 >> 8)),
    "v_mad_u32_u24": V("u32 u32 u32", "u32", lambda a, b, c: (a & 0xFFFFFF) * (b & 0xFFFFFF) + c),
    "v_mad_i32_i24": V("i32 i32 i32", "i32", lambda a, b, c: (a << 8 >> 8) * (b << 8 >> 8) + c),
    "v_mul_hi_i32_i24": V("i32 i32", "i32", lambda a, b: ((a << 8 >> 8).astype(i64) * (b << 8 >> 8) >> 32)
                          .astype(i32)),
    "v_xad_u32": V("u32 u32 u32", "u32", lambda a, b, c: (a ^ b) + c),
    "v_sad_u32": V("u32 u32 u32", "u32", lambda a, b, c: np.where(a > b, a - b, b - a) + c),
    # the byte and half sums of absolute differences, and the byte average (RDNA3 ISA pseudocode; MSAD skips
    # the bytes where S1, the reference, is 0)
    "v_sad_u8": V("u32 u32 u32", "u32", lambda a, b, c: _sad(a, b, 8) + c),
    "v_sad_hi_u8": V("u32 u32 u32", "u32", lambda a, b, c: (_sad(a, b, 8) << u32(16)) + c),
    "v_sad_u16": V("u32 u32 u32", "u32", lambda a, b, c: _sad(a, b, 16) + c),
    "v_msad_u8": V("u32 u32 u32", "u32", lambda a, b, c: _sad(a, b, 8, masked=True) + c),
    "v_lerp_u8": V("u32 u32 u32", "u32", lambda a, b, c: _lerp(a, b, c)),
    # the signed byte dot product added to D (gfx9/gfx10's VOP2 form of __builtin_amdgcn_sdot4)
    **{f"v_dot{32 // bits}c_i32_i{bits}": V("u32 u32 u32", "u32", lambda a, b, c, bits=bits: dot(a, b, c, bits, True,
                                                                                                True), acc=True)
       for bits in (16, 8, 4)},
    "v_mad_u16": V("u16 u16 u16", "u16", lambda a, b, c: a * b + c),
    "v_mad_legacy_u16": V("u16 u16 u16", "u16", lambda a, b, c: a * b + c),
    "v_mad_u64_u32": V("u32 u32 u64", "u64", _mad_u64_u32, mask_out=True),
    "v_mad_i64_i32": V("i32 i32 i64", "i64", _mad_i64_i32, mask_out=True),
    "v_max_u32": V("u32 u32", "u32", np.maximum), "v_min_u32": V("u32 u32", "u32", np.minimum),
    "v_max_i32": V("i32 i32", "i32", np.maximum), "v_min_i32": V("i32 i32", "i32", np.minimum),
    "v_mbcnt_lo_u32_b32": V("u32 u32", "u32", lambda m, a, lane: a + _popcount(
        m & ((np.left_shift(u64(1), np.minimum(lane, 32).astype(u64)) - u64(1)).astype(u32))), lanes=True),
    "v_mbcnt_hi_u32_b32": V("u32 u32", "u32", lambda m, a, lane: a + _popcount(
        m & ((np.left_shift(u64(1), np.clip(lane - 32, 0, 32).astype(u64)) - u64(1)).astype(u32))), lanes=True),
    # bits
    "v_and_b32": V("u32 u32", "u32", np.bitwise_and), "v_or_b32": V("u32 u32", "u32", np.bitwise_or),
    "v_xor_b32": V("u32 u32", "u32", np.bitwise_xor), "v_not_b32": V("u32", "u32", np.invert),
    "v_xnor_b32": V("u32 u32", "u32", lambda a, b: ~(a ^ b)),
    "v_xor3_b32": V("u32 u32 u32", "u32", lambda a, b, c: a ^ b ^ c),
    "v_and_or_b32": V("u32 u32 u32", "u32", lambda a, b, c: (a & b) | c),
    "v_or3_b32": V("u32 u32 u32", "u32", lambda a, b, c: a | b | c),
    "v_lshlrev_b32": V("u32 u32", "u32", lambda a, b: b << (a & 31)),
    "v_lshrrev_b32": V("u32 u32", "u32", lambda a, b: b >> (a & 31)),
    "v_ashrrev_i32": V("u32 i32", "i32", lambda a, b: b >> (a & 31).astype(i32)),
    "v_lshlrev_b64": V("u32 u64", "u64", lambda a, b: b << (a & 63).astype(u64)),
    "v_lshrrev_b64": V("u32 u64", "u64", lambda a, b: b >> (a & 63).astype(u64)),
    "v_ashrrev_i64": V("u32 i64", "i64", lambda a, b: b >> (a & 63).astype(i64)),
    "v_lshlrev_b16": V("u16 u16", "u16", lambda a, b: b << (a & 15)),
    "v_lshrrev_b16": V("u16 u16", "u16", lambda a, b: b >> (a & 15)),
    "v_lshl_add_u32": V("u32 u32 u32", "u32", lambda a, b, c: (a << (b & 31)) + c),
    "v_lshl_or_b32": V("u32 u32 u32", "u32", lambda a, b, c: (a << (b & 31)) | c),
    "v_add_lshl_u32": V("u32 u32 u32", "u32", lambda a, b, c: (a + b) << (c & 31)),
    "v_lshl_add_u64": V("u64 u32 u64", "u64", lambda a, b, c: (a << (b & 7).astype(u64)) + c),
    "v_alignbit_b32": V("u32 u32 u32", "u32", _alignbit),
    "v_alignbyte_b32": V("u32 u32 u32", "u32", lambda a, b, c: ((a.astype(u64) << u64(32) | b)
                                                                 >> (8 * (c & 3)).astype(u64)).astype(u32)),
    "v_bfe_u32": V("u32 u32 u32", "u32", _bfe_u32),
    "v_bfm_b32": V("u32 u32", "u32", _bfm),
    "v_bfe_i32": V("u32 u32 u32", "i32", _bfe_i32),
    "v_bfi_b32": V("u32 u32 u32", "u32", lambda m, a, b: (m & a) | (~m & b)),
    "v_bfrev_b32": V("u32", "u32", _brev32),
    "v_bcnt_u32_b32": V("u32 u32", "u32", lambda a, b: _popcount(a) + b),
    "v_ffbh_u32": V("u32", "u32", lambda a: _clz(a, 32)),
    "v_ffbh_i32": V("i32", "u32", lambda a: _cls(a, 32)),
    "v_ffbl_b32": V("u32", "u32", lambda a: _ctz(a, 32)),
    # 16-bit integer
    "v_add_u16": V("u16 u16", "u16", lambda a, b: a + b),
    "v_sub_u16": V("u16 u16", "u16", lambda a, b: a - b),
    "v_subrev_u16": V("u16 u16", "u16", lambda a, b: b - a),
    "v_add_i16": V("i16 i16", "i16", lambda a, b: a + b), "v_sub_i16": V("i16 i16", "i16", lambda a, b: a - b),
    "v_mul_lo_u16": V("u16 u16", "u16", lambda a, b: a * b),
    "v_ashrrev_i16": V("u16 i16", "i16", lambda a, b: b >> (a & 15).astype(i16)),
    "v_max_u16": V("u16 u16", "u16", np.maximum), "v_min_u16": V("u16 u16", "u16", np.minimum),
    "v_max_i16": V("i16 i16", "i16", np.maximum), "v_min_i16": V("i16 i16", "i16", np.minimum),
    # float
    "v_add_f32": V("f32 f32", "f32", np.add), "v_sub_f32": V("f32 f32", "f32", np.subtract),
    "v_subrev_f32": V("f32 f32", "f32", lambda a, b: b - a), "v_mul_f32": V("f32 f32", "f32", np.multiply),
    "v_max_f32": V("f32 f32", "f32", max_f), "v_min_f32": V("f32 f32", "f32", min_f),
    "v_fma_f32": V("f32 f32 f32", "f32", fma),
    "v_fmac_f32": V("f32 f32 f32", "f32", fma, acc=True),
    "v_fmamk_f32": V("f32 f32 f32", "f32", lambda a, k, b: fma(a, k, b)),
    "v_fmaak_f32": V("f32 f32 f32", "f32", fma),
    "v_mad_f32": V("f32 f32 f32", "f32", lambda a, b, c: a * b + c),  # not fused: the product rounds first
    "v_madmk_f32": V("f32 f32 f32", "f32", lambda a, k, b: a * k + b),
    "v_madak_f32": V("f32 f32 f32", "f32", lambda a, b, k: a * b + k),
    "v_mac_f32": V("f32 f32 f32", "f32", lambda a, b, c: a * b + c, acc=True),
    "v_ldexp_f32": V("f32 i32", "f32", lambda a, e: np.ldexp(a, np.clip(e, -1000, 1000)).astype(f32)),
    "v_exp_f32": V("f32", "f32", np.exp2), "v_log_f32": V("f32", "f32", np.log2),
    "v_sqrt_f32": V("f32", "f32", np.sqrt), "v_rsq_f32": V("f32", "f32", lambda a: f32(1) / np.sqrt(a)),
    "v_rcp_f32": V("f32", "f32", lambda a: f32(1) / a), "v_rcp_iflag_f32": V("f32", "f32", lambda a: f32(1) / a),
    "v_rndne_f32": V("f32", "f32", np.rint), "v_trunc_f32": V("f32", "f32", np.trunc),
    "v_floor_f32": V("f32", "f32", np.floor), "v_ceil_f32": V("f32", "f32", np.ceil),
    # V_FRACT: below 1 always: a tiny negative source gives the largest value under 1, not 1 (LLVM folds it so)
    "v_fract_f32": V("f32", "f32", lambda a: np.minimum(a - np.floor(a), np.nextafter(f32(1), f32(0)))),
    # frexp: inf and NaN give themselves and exponent 0 (ISA pseudocode); zero and denormals as C's frexp
    "v_frexp_mant_f32": V("f32", "f32", lambda a: np.where(np.isfinite(a), np.frexp(a)[0], a).astype(f32)),
    "v_frexp_exp_i32_f32": V("f32", "i32", lambda a: np.where(np.isfinite(a), np.frexp(a)[1], 0).astype(i32)),
    "v_frexp_mant_f64": V("f64", "f64", lambda a: np.where(np.isfinite(a), np.frexp(a)[0], a)),
    "v_frexp_exp_i32_f64": V("f64", "i32", lambda a: np.where(np.isfinite(a), np.frexp(a)[1], 0).astype(i32)),
    "v_frexp_mant_f16": V("f16", "f16", lambda a: np.where(np.isfinite(a), np.frexp(a)[0], a).astype(f16)),
    "v_frexp_exp_i16_f16": V("f16", "i16", lambda a: np.where(np.isfinite(a), np.frexp(a)[1], 0).astype(i16)),
    "v_fract_f16": V("f16", "f16", lambda a: np.minimum(a - np.floor(a), np.nextafter(f16(1), f16(0)))),
    # sin/cos take revolutions: D = sin(S0 * 2 pi) (ISA guides)
    "v_sin_f32": V("f32", "f32", lambda a: np.sin(a.astype(f64) * 2 * np.pi).astype(f32)),
    "v_cos_f32": V("f32", "f32", lambda a: np.cos(a.astype(f64) * 2 * np.pi).astype(f32)),
    "v_cvt_flr_i32_f32": V("f32", "i32", lambda a: _cvt_int(np.floor(a), -2.0**31, 2.0**31 - 1, i32)),
    "v_cvt_rpi_i32_f32": V("f32", "i32", lambda a: _cvt_int(np.floor(a.astype(f64) + 0.5), -2.0**31, 2.0**31 - 1,
                                                              i32)),
    **{f"v_cvt_f32_ubyte{k}": V("u32", "f32", lambda a, k=k: ((a >> u32(8 * k)) & u32(0xFF)).astype(f32))
       for k in range(4)},
    "v_perm_b32": V("u32 u32 u32", "u32", lambda a, b, sel: _perm(a, b, sel)),
    # 16-bit float
    "v_mul_f16": V("f16 f16", "f16", np.multiply), "v_add_f16": V("f16 f16", "f16", np.add),
    "v_sub_f16": V("f16 f16", "f16", np.subtract), "v_subrev_f16": V("f16 f16", "f16", lambda a, b: b - a),
    "v_max_f16": V("f16 f16", "f16", max_f), "v_min_f16": V("f16 f16", "f16", min_f),
    "v_fma_f16": V("f16 f16 f16", "f16", fma), "v_fmac_f16": V("f16 f16 f16", "f16", fma, acc=True),
    "v_fmamk_f16": V("f16 f16 f16", "f16", lambda a, k, b: fma(a, k, b)),
    "v_fmaak_f16": V("f16 f16 f16", "f16", fma),
    "v_div_fixup_f16": V("f16 f16 f16", "f16", _div_fixup),
    # D = {S1.f16, S0.f16}: the low half S0's
    "v_pack_b32_f16": V("f16 f16", "u32", lambda a, b: _pack16(a.view(u16), b.view(u16))),
    # two 32-bit values packed as 16-bit halves, the first low: saturated, or f16 rounded toward zero
    "v_cvt_pk_u16_u32": V("u32 u32", "u32", lambda a, b: _pack16(np.minimum(a, 0xFFFF), np.minimum(b, 0xFFFF))),
    "v_cvt_pk_i16_i32": V("i32 i32", "u32", lambda a, b: _pack16(*(np.clip(x, -2**15, 2**15 - 1).astype(i16).view(u16)
                                                                  for x in (a, b)))),
    "v_cvt_pkrtz_f16_f32": V("f32 f32", "u32", lambda a, b: _pack16(_f16_toward_zero(a).view(u16),
                                                                     _f16_toward_zero(b).view(u16))),
    "v_ldexp_f16": V("f16 i16", "f16", lambda a, e: np.ldexp(a.astype(f32), e.astype(i32)).astype(f16)),
    "v_sqrt_f16": V("f16", "f16", np.sqrt), "v_rcp_f16": V("f16", "f16", lambda a: f16(1) / a),
    "v_rsq_f16": V("f16", "f16", lambda a: (1 / np.sqrt(a.astype(f32))).astype(f16)),
    "v_exp_f16": V("f16", "f16", lambda a: np.exp2(a.astype(f32)).astype(f16)),
    "v_log_f16": V("f16", "f16", lambda a: np.log2(a.astype(f32)).astype(f16)),
    "v_floor_f16": V("f16", "f16", np.floor), "v_ceil_f16": V("f16", "f16", np.ceil),
    "v_trunc_f16": V("f16", "f16", np.trunc), "v_rndne_f16": V("f16", "f16", np.rint),
    "v_cvt_f16_u16": V("u16", "f16", lambda a: a.astype(f16)),
    "v_cvt_f16_i16": V("i16", "f16", lambda a: a.astype(f16)),
    "v_cvt_u16_f16": V("f16", "u16", _sat(0.0, 2.0**16 - 1, u16)),
    "v_cvt_i16_f16": V("f16", "i16", _sat(-2.0**15, 2.0**15 - 1, i16)),
    # three-operand minimum, maximum and median
    **{f"v_{op}3_{ty}": V(f"{ty} {ty} {ty}", ty, fn) for ty, (lo, hi) in
       (("f32", (min_f, max_f)), ("f16", (min_f, max_f)), ("i32", (np.minimum, np.maximum)),
        ("u32", (np.minimum, np.maximum)))
       for op, fn in (("min", lambda a, b, c, lo=lo: lo(lo(a, b), c)), ("max", lambda a, b, c, hi=hi: hi(hi(a, b), c)),
                      ("med", _med3_f if ty[0] == "f" else
                       lambda a, b, c, lo=lo, hi=hi: hi(lo(a, b), lo(hi(a, b), c))))},
    # V_MAXMIN: min(max(S0, S1), S2); V_MINMAX: max(min(S0, S1), S2)
    **{f"v_{name}_{ty}": V(f"{ty} {ty} {ty}", ty, lambda a, b, c, f=first, g=second: g(f(a, b), c)) for ty, (lo, hi) in
       (("f32", (min_f, max_f)), ("f16", (min_f, max_f)), ("i32", (np.minimum, np.maximum)),
        ("u32", (np.minimum, np.maximum)))
       for name, first, second in (("maxmin", hi, lo), ("minmax", lo, hi))},
    "v_div_scale_f32": V("f32 f32 f32", "f32", _div_scale, mask_out=True),
    "v_div_fmas_f32": V("f32 f32 f32", "f32", _div_fmas, mask_in=True),
    "v_div_fixup_f32": V("f32 f32 f32", "f32", _div_fixup),
    # double
    "v_add_f64": V("f64 f64", "f64", np.add), "v_mul_f64": V("f64 f64", "f64", np.multiply),
    "v_max_f64": V("f64 f64", "f64", max_f), "v_min_f64": V("f64 f64", "f64", min_f),
    "v_fma_f64": V("f64 f64 f64", "f64", fma),
    "v_fmac_f64": V("f64 f64 f64", "f64", fma, acc=True),
    "v_ldexp_f64": V("f64 i32", "f64", lambda a, e: np.ldexp(a, np.clip(e, -5000, 5000))),
    "v_trig_preop_f64": V("f64 u32", "f64", _trig_preop),
    "v_rcp_f64": V("f64", "f64", lambda a: 1.0 / a), "v_rsq_f64": V("f64", "f64", lambda a: 1.0 / np.sqrt(a)),
    "v_sqrt_f64": V("f64", "f64", np.sqrt),
    "v_rndne_f64": V("f64", "f64", np.rint), "v_trunc_f64": V("f64", "f64", np.trunc),
    "v_floor_f64": V("f64", "f64", np.floor), "v_ceil_f64": V("f64", "f64", np.ceil),
    "v_fract_f64": V("f64", "f64", lambda a: np.minimum(a - np.floor(a), np.nextafter(f64(1), f64(0)))),
    "v_div_scale_f64": V("f64 f64 f64", "f64", _div_scale, mask_out=True),
    "v_div_fmas_f64": V("f64 f64 f64", "f64", _div_fmas, mask_in=True),
    "v_div_fixup_f64": V("f64 f64 f64", "f64", _div_fixup),
    # class tests read their source as bits: a denormal is one of the classes, never flushed to zero
    "v_cmp_class_f32": V("u32 u32", None, lambda x, m: _class(np.asarray(x).view(f32), m), mask_out=True),
    "v_cmp_class_f64": V("u64 u32", None, lambda x, m: _class(np.asarray(x).view(f64), m), mask_out=True),
    "v_cmp_class_f16": V("u16 u32", None, lambda x, m: _class(np.asarray(x).view(f16), m), mask_out=True),
}

# Conversions v_cvt_<to>_<from>: to a float, numpy's rounding to nearest; to an integer, _cvt_int's rules.
_INT_RANGE = {"i32": (-2.0**31, 2.0**31 - 1), "u32": (0.0, 2.0**32 - 1)}
for _to, _from in (("f32", "i32"), ("f32", "u32"), ("i32", "f32"), ("u32", "f32"), ("f64", "f32"), ("f32", "f64"),
                   ("f64", "i32"), ("f64", "u32"), ("i32", "f64"), ("u32", "f64"), ("f16", "f32"), ("f32", "f16")):
    _dt = TYPES[_to].dtype
    VALU[f"v_cvt_{_to}_{_from}"] = V(_from, _to, _sat(*_INT_RANGE[_to], _dt) if _to in _INT_RANGE else
                                     (lambda a, dt=_dt: a.astype(dt)))

# Compares (VOPC): v_cmp_<cond>_<type> writes VCC/SDST; v_cmpx_ writes EXEC (gfx10+: only EXEC; gfx9: both,
# where the instruction prints a destination).
_INT_CONDS = {"f": lambda a, b: np.zeros(np.broadcast(a, b).shape, bool), "lt": np.less, "eq": np.equal,
              "le": np.less_equal, "gt": np.greater, "ne": np.not_equal, "lg": np.not_equal, "ge": np.greater_equal,
              "t": lambda a, b: np.ones(np.broadcast(a, b).shape, bool)}
# LG is the ordered "less or greater": false where either is NaN, unlike NEQ, the unordered !(a == b) (campaign
# 121: it was np.not_equal, true for NaN)
_FLOAT_CONDS = {**{k: v for k, v in _INT_CONDS.items() if k not in ("ne", "t", "lg")},
                "lg": lambda a, b: (a < b) | (a > b),
                "o": lambda a, b: ~np.isnan(a) & ~np.isnan(b), "u": lambda a, b: np.isnan(a) | np.isnan(b),
                "nge": lambda a, b: ~(a >= b), "nlg": lambda a, b: ~((a < b) | (a > b)), "ngt": lambda a, b: ~(a > b),
                "nle": lambda a, b: ~(a <= b), "neq": lambda a, b: ~(a == b), "nlt": lambda a, b: ~(a < b),
                "tru": _INT_CONDS["t"]}
for _ty in ("u16", "i16", "u32", "i32", "u64", "i64", "f16", "f32", "f64"):
    for _cond, _fn in (_FLOAT_CONDS if _ty[0] == "f" else _INT_CONDS).items():
        VALU[f"v_cmp_{_cond}_{_ty}"] = V(f"{_ty} {_ty}", None, _fn, mask_out=True)
        VALU[f"v_cmpx_{_cond}_{_ty}"] = V(f"{_ty} {_ty}", None, _fn, mask_out=True, exec_out=True)
for _ty in ("f16", "f32", "f64"):
    VALU[f"v_cmpx_class_{_ty}"] = AluOp(VALU[f"v_cmp_class_{_ty}"].ins, None, VALU[f"v_cmp_class_{_ty}"].fn,
                                        mask_out=True, exec_out=True)

_VALU_ALIASES = {  # gfx10+/gfx12 names of the operations above
    "v_add_nc_u32": "v_add_u32", "v_sub_nc_u32": "v_sub_u32", "v_subrev_nc_u32": "v_subrev_u32",
    "v_add_co_ci_u32": "v_addc_co_u32", "v_sub_co_ci_u32": "v_subb_co_u32", "v_subrev_co_ci_u32": "v_subbrev_co_u32",
    "v_add_nc_u16": "v_add_u16", "v_sub_nc_u16": "v_sub_u16", "v_add_nc_i16": "v_add_i16", "v_sub_nc_i16": "v_sub_i16",
    "v_add_nc_i32": "v_add_i32", "v_sub_nc_i32": "v_sub_i32",
    "v_clz_i32_u32": "v_ffbh_u32", "v_cls_i32": "v_ffbh_i32",
    "v_maxmin_num_f32": "v_maxmin_f32", "v_minmax_num_f32": "v_minmax_f32", "v_maxmin_num_f16": "v_maxmin_f16",
    "v_minmax_num_f16": "v_minmax_f16", "v_ctz_i32_b32": "v_ffbl_b32",
    "v_mad_co_u64_u32": "v_mad_u64_u32", "v_mad_co_i64_i32": "v_mad_i64_i32", "v_max_num_f32": "v_max_f32",
    "v_min_num_f32": "v_min_f32", "v_max_num_f64": "v_max_f64", "v_min_num_f64": "v_min_f64",
    "v_max_num_f16": "v_max_f16", "v_min_num_f16": "v_min_f16", "v_min3_num_f32": "v_min3_f32",
    "v_min3_num_f16": "v_min3_f16", "v_max3_num_f16": "v_max3_f16", "v_med3_num_f16": "v_med3_f16",
    "v_max3_num_f32": "v_max3_f32", "v_med3_num_f32": "v_med3_f32", "v_cvt_pk_rtz_f16_f32": "v_cvt_pkrtz_f16_f32",
    "v_mul_lo_u32_u24": "v_mul_u32_u24", "v_cvt_floor_i32_f32": "v_cvt_flr_i32_f32",
    "v_cvt_nearest_i32_f32": "v_cvt_rpi_i32_f32",
}
VALU.update({new: VALU[old] for new, old in _VALU_ALIASES.items()})


# The clamp bit on integer arithmetic saturates: the exact result, limited to the destination type's range (ISA
# guides, VOP3 CLAMP). The operations it is emulated for, by their wrapping entries above; others are refused.
_WRAPPING = tuple(VALU[f"v_{op}_{ty}"] for op in ("add", "sub", "subrev") for ty in ("u32", "i32", "u16", "i16")
                  if f"v_{op}_{ty}" in VALU)


def saturates(op: AluOp) -> bool:
    """Whether clamp on `op` (or an alias of it) is emulated."""
    return any(op is w for w in _WRAPPING)


def saturated(fn: Callable, dtype: type) -> Callable:
    """`fn` computed on 64-bit integers, its result clipped to `dtype`'s range."""
    info = np.iinfo(dtype)

    def op(*args):
        return np.clip(fn(*(np.asarray(a).astype(i64) for a in args)), info.min, info.max).astype(dtype)
    return op


def S(ins: str, out: str | None, fn: Callable, **flags) -> AluOp:  # noqa: N802
    return AluOp(tuple(ins.split()), out, fn, **flags)


def _nz(fn: Callable) -> Callable:
    """A result with SCC = (result != 0)."""
    def op(*a):
        r = fn(*a)
        return r, r != 0
    return op


def _sadd(a, b):
    r = a + b
    return r, ((a ^ r) & (b ^ r)) < 0  # SCC: signed overflow


def _ssub(a, b):
    r = a - b
    return r, ((a ^ b) & (a ^ r)) < 0


def _chosen(fn: Callable, first: Callable) -> Callable:
    """S_MIN/S_MAX: the result, and SCC = `first(S0, S1)`: S0 < S1 for min (the ISA's pseudocode), S0 > S1 for
    max, where the manuals write >= but hardware sets SCC 0 for equal sources (tinygrad's emulator's errata
    table, checked on hardware: "hardware sets SCC only on STRICT inequality for S_MAX")."""
    return lambda a, b: (fn(a, b), first(a, b))


SALU: dict[str, AluOp] = {
    "s_mov_b32": S("u32", "u32", lambda a: a), "s_mov_b64": S("u64", "u64", lambda a: a),
    "s_movk_i32": S("i16", "i32", lambda a: a.astype(i32)),
    "s_cmov_b32": S("u32 u32", "u32", lambda a, d, c: np.where(c, a, d), scc_in=True, acc=True),
    "s_cselect_b32": S("u32 u32", "u32", lambda a, b, c: np.where(c, a, b), scc_in=True),
    "s_cselect_b64": S("u64 u64", "u64", lambda a, b, c: np.where(c, a, b), scc_in=True),
    "s_add_u32": S("u32 u32", "u32", _add_co, scc_out=True),
    "s_sub_u32": S("u32 u32", "u32", _sub_co, scc_out=True),
    "s_addc_u32": S("u32 u32", "u32", _addc, scc_in=True, scc_out=True),
    "s_subb_u32": S("u32 u32", "u32", _subb, scc_in=True, scc_out=True),
    "s_add_i32": S("i32 i32", "i32", _sadd, scc_out=True), "s_sub_i32": S("i32 i32", "i32", _ssub, scc_out=True),
    "s_addk_i32": S("i16 i32", "i32", lambda k, d: _sadd(d, k.astype(i32)), scc_out=True, acc=True),
    "s_mulk_i32": S("i16 i32", "i32", lambda k, d: d * k.astype(i32), acc=True),
    "s_add_nc_u64": S("u64 u64", "u64", np.add), "s_sub_nc_u64": S("u64 u64", "u64", np.subtract),
    "s_mul_u64": S("u64 u64", "u64", np.multiply),
    "s_mul_i32": S("i32 i32", "i32", np.multiply),
    "s_mul_hi_u32": S("u32 u32", "u32", lambda a, b: (a.astype(u64) * b >> u64(32)).astype(u32)),
    "s_mul_hi_i32": S("i32 i32", "i32", lambda a, b: (a.astype(i64) * b >> 32).astype(i32)),
    # D = {S1 half, S0 half}: l the low 16 bits, h the high (ISA pseudocode; s_pack_hl is gfx11's)
    "s_pack_ll_b32_b16": S("u32 u32", "u32", lambda a, b: _pack16(a & 0xFFFF, b & 0xFFFF)),
    "s_pack_lh_b32_b16": S("u32 u32", "u32", lambda a, b: _pack16(a & 0xFFFF, b >> 16)),
    "s_pack_hh_b32_b16": S("u32 u32", "u32", lambda a, b: _pack16(a >> 16, b >> 16)),
    "s_pack_hl_b32_b16": S("u32 u32", "u32", lambda a, b: _pack16(a >> 16, b & 0xFFFF)),
    "s_min_i32": S("i32 i32", "i32", _chosen(np.minimum, np.less), scc_out=True),
    "s_min_u32": S("u32 u32", "u32", _chosen(np.minimum, np.less), scc_out=True),
    "s_max_i32": S("i32 i32", "i32", _chosen(np.maximum, np.greater), scc_out=True),
    "s_max_u32": S("u32 u32", "u32", _chosen(np.maximum, np.greater), scc_out=True),
    "s_abs_i32": S("i32", "i32", _nz(np.abs), scc_out=True),
    "s_sext_i32_i8": S("u32", "i32", lambda a: (a & 0xFF).astype(u8).view(np.int8).astype(i32)),
    "s_sext_i32_i16": S("u32", "i32", lambda a: (a & 0xFFFF).astype(u16).view(i16).astype(i32)),
    "s_lshl_b32": S("u32 u32", "u32", _nz(lambda a, b: a << (b & 31)), scc_out=True),
    "s_lshr_b32": S("u32 u32", "u32", _nz(lambda a, b: a >> (b & 31)), scc_out=True),
    "s_ashr_i32": S("i32 u32", "i32", _nz(lambda a, b: a >> (b & 31).astype(i32)), scc_out=True),
    "s_lshl_b64": S("u64 u32", "u64", _nz(lambda a, b: a << (b & 63).astype(u64)), scc_out=True),
    "s_lshr_b64": S("u64 u32", "u64", _nz(lambda a, b: a >> (b & 63).astype(u64)), scc_out=True),
    "s_ashr_i64": S("i64 u32", "i64", _nz(lambda a, b: a >> (b & 63).astype(i64)), scc_out=True),
    "s_bfm_b32": S("u32 u32", "u32", _bfm),
    "s_bfe_u32": S("u32 u32", "u32", _sbfe(_bfe_u32, 32), scc_out=True),
    "s_bfe_i32": S("u32 u32", "i32", _sbfe(_bfe_i32, 32), scc_out=True),
    "s_bfe_u64": S("u64 u32", "u64", _sbfe(_bfe_u64, 64), scc_out=True),
    "s_bfe_i64": S("u64 u32", "i64", _sbfe(_bfe_i64, 64), scc_out=True),
    "s_brev_b32": S("u32", "u32", _brev32),
    "s_bcnt1_i32_b32": S("u32", "u32", _nz(_popcount), scc_out=True),
    "s_bcnt1_i32_b64": S("u64", "u32", _nz(_popcount), scc_out=True),
    "s_ff1_i32_b32": S("u32", "u32", lambda a: _ctz(a, 32)),
    "s_ff1_i32_b64": S("u64", "u32", lambda a: _ctz(a, 64)),
    "s_flbit_i32_b32": S("u32", "u32", lambda a: _clz(a, 32)),
    # leading bits equal to the sign bit, itself included; -1 for 0 and -1 (RDNA3 ISA S_CLS_I32 pseudocode)
    "s_flbit_i32": S("i32", "u32", lambda a: _cls(a, 32)),
    "s_flbit_i32_b64": S("u64", "u32", lambda a: _clz(a, 64)),
    "s_flbit_i32_i64": S("i64", "u32", lambda a: _cls(a, 64)),
    "s_brev_b64": S("u64", "u64", _brev64),
    # S_BITSET0/1: the bit S0[4:0] (S0[5:0]) of the destination cleared or set, the rest kept
    "s_bitset0_b32": S("u32 u32", "u32", lambda b, d: d & ~(u32(1) << (b & 31)), acc=True),
    "s_bitcmp0_b32": S("u32 u32", None, lambda a, b: (a >> (b & 31) & 1) == 0, scc_out=True),
    "s_bitcmp1_b32": S("u32 u32", None, lambda a, b: (a >> (b & 31) & 1) == 1, scc_out=True),
    "s_bitcmp0_b64": S("u64 u32", None, lambda a, b: (a >> (b & 63).astype(u64) & u64(1)) == 0, scc_out=True),
    "s_bitcmp1_b64": S("u64 u32", None, lambda a, b: (a >> (b & 63).astype(u64) & u64(1)) == 1, scc_out=True),
    "s_bitset1_b32": S("u32 u32", "u32", lambda b, d: d | u32(1) << (b & 31), acc=True),
    "s_bitset0_b64": S("u32 u64", "u64", lambda b, d: d & ~(u64(1) << (b & 63).astype(u64)), acc=True),
    "s_bitset1_b64": S("u32 u64", "u64", lambda b, d: d | u64(1) << (b & 63).astype(u64), acc=True),
    "s_cvt_f32_u32": S("u32", "f32", lambda a: a.astype(f32)),
    "s_cvt_f32_i32": S("i32", "f32", lambda a: a.astype(f32)),
    "s_cvt_u32_f32": S("f32", "u32", _sat(0.0, 2.0**32 - 1, u32)),
    "s_cvt_i32_f32": S("f32", "i32", _sat(-2.0**31, 2.0**31 - 1, i32)),
    "s_mul_f32": S("f32 f32", "f32", np.multiply), "s_add_f32": S("f32 f32", "f32", np.add),
    "s_sub_f32": S("f32 f32", "f32", np.subtract), "s_fmac_f32": S("f32 f32 f32", "f32", fma, acc=True),
    "s_fmaak_f32": S("f32 f32 f32", "f32", fma), "s_fmamk_f32": S("f32 f32 f32", "f32", lambda a, k, b: fma(a, k, b)),
    "s_min_num_f32": S("f32 f32", "f32", min_f), "s_max_num_f32": S("f32 f32", "f32", max_f),
    "s_trunc_f32": S("f32", "f32", np.trunc), "s_floor_f32": S("f32", "f32", np.floor),
    "s_ceil_f32": S("f32", "f32", np.ceil), "s_rndne_f32": S("f32", "f32", np.rint),
    "s_cvt_f32_f16": S("f16", "f32", lambda a: a.astype(f32)),
    # gfx12's scalar f16 operations: on bits 15:0 of their sources, bits 31:16 of the destination set to 0 (RDNA4
    # ISA 6.8); S_CVT_HI_F32_F16 converts bits 31:16 of its source
    "s_cvt_f16_f32": S("f32", "f16", lambda a: a.astype(f16)),
    "s_cvt_hi_f32_f16": S("u32", "f32", lambda a: (a >> u32(16)).astype(u16).view(f16).astype(f32)),
    "s_cvt_pk_rtz_f16_f32": S("f32 f32", "u32", VALU["v_cvt_pkrtz_f16_f32"].fn),
    "s_add_f16": S("f16 f16", "f16", np.add), "s_sub_f16": S("f16 f16", "f16", np.subtract),
    "s_mul_f16": S("f16 f16", "f16", np.multiply), "s_fmac_f16": S("f16 f16 f16", "f16", fma, acc=True),
    "s_min_num_f16": S("f16 f16", "f16", min_f), "s_max_num_f16": S("f16 f16", "f16", max_f),
    "s_trunc_f16": S("f16", "f16", np.trunc), "s_floor_f16": S("f16", "f16", np.floor),
    "s_ceil_f16": S("f16", "f16", np.ceil), "s_rndne_f16": S("f16", "f16", np.rint),
    # gfx12's transcendental operations on a uniform value, VOP3-encoded with an SGPR destination: as their VALU
    # forms (the f16 ones leave a register's upper half unknown to us, and stay refused)
    **{f"v_s_{op}_f32": S("f32", "f32", VALU[f"v_{op}_f32"].fn) for op in ("exp", "log", "rcp", "rsq", "sqrt")},
    # gfx12's scalar float compares: SCC as the VOPC compare of the same condition gives a lane
    **{f"s_cmp_{cond}_{ty}": S(f"{ty} {ty}", None, _FLOAT_CONDS[cond], scc_out=True) for ty in ("f32", "f16")
       for cond in ("eq", "ge", "gt", "le", "lg", "lt", "neq", "nge", "ngt", "nle", "nlg", "nlt", "o", "u")},
}
for _w in ("32", "64"):
    _t = f"u{_w}"
    for _name, _fn in (("and", np.bitwise_and), ("or", np.bitwise_or), ("xor", np.bitwise_xor),
                       ("andn2", lambda a, b: a & ~b), ("orn2", lambda a, b: a | ~b),
                       ("nand", lambda a, b: ~(a & b)), ("nor", lambda a, b: ~(a | b)),
                       ("xnor", lambda a, b: ~(a ^ b))):
        SALU[f"s_{_name}_b{_w}"] = S(f"{_t} {_t}", _t, _nz(_fn), scc_out=True)
    SALU[f"s_not_b{_w}"] = S(_t, _t, _nz(np.invert), scc_out=True)
    for _name, _fn in (("and", lambda s, e: s & e), ("or", lambda s, e: s | e), ("xor", lambda s, e: s ^ e),
                       ("andn2", lambda s, e: s & ~e), ("orn2", lambda s, e: s | ~e),
                       ("andn1", lambda s, e: ~s & e), ("nand", lambda s, e: ~(s & e))):
        SALU[f"s_{_name}_saveexec_b{_w}"] = S(_t, _t, _fn, saveexec=True)
    for _cond, _fn in (("eq", np.equal), ("lg", np.not_equal), ("gt", np.greater), ("ge", np.greater_equal),
                       ("lt", np.less), ("le", np.less_equal)):
        for _sign in ("i", "u"):
            SALU[f"s_cmp_{_cond}_{_sign}{_w}"] = S(f"{_sign}{_w} {_sign}{_w}", None, _fn, scc_out=True)
            SALU[f"s_cmpk_{_cond}_{_sign}{_w}"] = S(f"{_sign}{_w} {_sign}16", None,
                                                    lambda a, k, f=_fn: f(a, k.astype(a.dtype)), scc_out=True)

_SALU_ALIASES = {
    "s_add_co_u32": "s_add_u32", "s_sub_co_u32": "s_sub_u32", "s_add_co_ci_u32": "s_addc_u32",
    "s_sub_co_ci_u32": "s_subb_u32", "s_add_co_i32": "s_add_i32", "s_sub_co_i32": "s_sub_i32",
    "s_ctz_i32_b32": "s_ff1_i32_b32", "s_ctz_i32_b64": "s_ff1_i32_b64", "s_clz_i32_u32": "s_flbit_i32_b32",
    "s_cls_i32": "s_flbit_i32", "s_cls_i32_i64": "s_flbit_i32_i64", "s_clz_i32_u64": "s_flbit_i32_b64",
    "s_addk_co_i32": "s_addk_i32",
    **{f"s_{new}_b{w}": f"s_{old}_b{w}" for w in ("32", "64") for new, old in (("and_not1", "andn2"),
                                                                             ("or_not1", "orn2"))},
    **{f"s_{new}_saveexec_b{w}": f"s_{old}_saveexec_b{w}" for w in ("32", "64")
       for new, old in (("and_not1", "andn2"), ("or_not1", "orn2"), ("and_not0", "andn1"))},
}
SALU.update({new: SALU[old] for new, old in _SALU_ALIASES.items()})
