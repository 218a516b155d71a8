"""Operand access: what a source field's value reads (an SGPR, a VGPR, an inline constant, the literal, a special
register) and how results are stored, for one target.

Source values are the ISA's operand encoding (amd-facts §12; the decoder's tables name them per target): 0-105
SGPRs, 106/107 VCC, 124/125 M0 and NULL (their order differs by generation: the target's register names say
which), 126/127 EXEC, 128-208 integer constants 0..64 and -1..-16, 235-238 the shared and private apertures,
240-248 float constants (their bits depend on the operand's type: f16, f32 or f64), 251 VCCZ, 252 EXECZ,
253 SCC, 255 a 32-bit literal, 256+ VGPRs. A 32-bit literal read as a 64-bit float is the high dword; as a
64-bit integer it is zero-extended (as LLVM prints them).

A reader is a function of the waves giving an array broadcastable to (B, L) (vector context) or (B,) (scalar
context) of the operand's type.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kfdtrace.driver.emulator.memory import LDS_APERTURE, SCRATCH_APERTURE
from kfdtrace.driver.emulator.shader.alu import TYPES, Type
from kfdtrace.driver.emulator.shader.waves import EXEC, Waves

__all__ = ["OperandError", "Regs", "Reader"]

Reader = Callable[[Waves], np.ndarray]

_FLOATS = (0.5, -0.5, 1.0, -1.0, 2.0, -2.0, 4.0, -4.0)
_INV_2PI = {16: 0x3118, 32: 0x3E22F983, 64: 0x3FC45F306DC9C882}
VCC = 106
APERTURE_LIMIT = 0xFFFFFFFF  # each aperture spans 4 GiB (kfd_flat_memory.c)


class OperandError(Exception):
    """An operand the emulated GPU cannot read or write (a trap register, a VGPR beyond the allocation)."""


def _float_bits(value: float, bits: int) -> int:
    fmt = {16: "<e", 32: "<f", 64: "<d"}[bits]
    return int.from_bytes(struct.pack(fmt, value), "little")


FLOAT_CONSTANTS = range(240, 249)  # source values of the float inline constants (0.5 .. -4.0, then 1/(2*pi))


def constant(value: int, ty: Type) -> int | None:
    """The bits an inline constant source value (128..208, 240..248) reads as for an operand of type `ty`."""
    mask = (1 << ty.bits) - 1
    if 128 <= value <= 192:
        return value - 128
    if 193 <= value <= 208:
        return (192 - value) & mask
    if 240 <= value <= 247:
        return _float_bits(_FLOATS[value - 240], ty.bits) if ty.float or ty.bits == 16 else \
            _float_bits(_FLOATS[value - 240], 32 if ty.bits == 32 else 64)
    if value == 248:
        return _INV_2PI[ty.bits]
    return None


def literal_bits(literal: int, ty: Type) -> int:
    if ty.bits == 64:
        return literal << 32 if ty.float else literal
    return literal & ((1 << ty.bits) - 1)


_UNSIGNED = {16: np.uint16, 32: np.uint32, 64: np.uint64}
DENORMALS_KEPT = 0xF << 16  # RSRC1 with FLOAT_DENORM_MODE_32 = FLOAT_DENORM_MODE_16_64 = 3


@dataclass(frozen=True)
class Regs:
    """A target's register numbering and a dispatch's register file size."""

    m0: int
    null: int
    vgprs: int  # VGPRs the kernel's descriptor allocates
    lanes: int
    ttmps: frozenset[int] = frozenset()  # trap temporaries the hardware sets for a kernel (GFX12: ttmp7-9)
    flush_in: frozenset[int] = frozenset()  # float widths whose denormal sources read as 0 (RSRC1 FLOAT_DENORM_MODE)
    flush_out: frozenset[int] = frozenset()  # float widths whose denormal results are written as 0
    dx10_clamp: bool = True  # the clamp output modifier makes NaN 0
    zero_high16: bool = True  # a 16-bit VALU result zeroes its VGPR's high half (Family.valu16_zeroes_high)
    accum_offset: int | None = None  # the unified VGPR file's first AccVGPR (gfx90a/gfx942), else None

    @classmethod
    def of(cls, sreg_names: list[str | None], vgprs: int, lanes: int, architected_sgprs: bool = False,
           rsrc1: int = DENORMALS_KEPT, dx10_clamp: bool = True, zero_high16: bool = True,
           accum_offset: int | None = None) -> Regs:
        """`rsrc1`: COMPUTE_PGM_RSRC1, whose FLOAT_DENORM_MODE_32 (b17:16) and _16_64 (b19:18) say which
        denormals are flushed: 0 sources and results, 1 results, 2 sources, 3 none (LLVM SIDefines.h
        FP_DENORM_FLUSH_IN_FLUSH_OUT, FLUSH_OUT, FLUSH_IN, FLUSH_NONE; AMDGPUUsage's FLOAT_DENORM_MODE_FLUSH_DST 1,
        FLUSH_SRC 2)."""
        ttmps = frozenset((115, 116, 117)) if architected_sgprs else frozenset()
        modes = {32: rsrc1 >> 16 & 3, 16: rsrc1 >> 18 & 3, 64: rsrc1 >> 18 & 3}
        return cls(sreg_names.index("m0"), sreg_names.index("null"), vgprs, lanes, ttmps,
                   frozenset(b for b, m in modes.items() if m in (0, 2)),
                   frozenset(b for b, m in modes.items() if m in (0, 1)), dx10_clamp, zero_high16, accum_offset)

    # -- reading ------------------------------------------------------------------------------------
    def source(self, value: int, ty: Type, vector: bool, literal: int | None = None, high: bool = False) -> Reader:
        """The reader of source value `value` as type `ty` (`high`: the upper half of a 32-bit register, for a
        16-bit operand with op_sel)."""
        raw = self._raw(value, ty, vector, literal)
        bits = ty.bits
        if bits == 16:
            shift = np.uint32(16 if high else 0)
            reader = lambda w: (raw(w) >> shift).astype(np.uint16).view(ty.dtype)  # noqa: E731
        elif ty.dtype is _UNSIGNED[bits]:
            return raw
        else:
            dtype = ty.dtype
            reader = lambda w: raw(w).view(dtype)  # noqa: E731
        if ty.float and bits in self.flush_in:
            return lambda w: flush_denormals(reader(w))
        return reader

    def _raw(self, value: int, ty: Type, vector: bool, literal: int | None) -> Reader:
        """Unsigned bits of the operand: uint32 (16- and 32-bit types) or uint64."""
        words = 2 if ty.bits == 64 else 1
        udt = np.uint64 if words == 2 else np.uint32
        bits = constant(value, ty)
        if bits is not None:
            c = udt(bits)
            return lambda w: c
        if value == 255:
            if literal is None:
                raise OperandError("source 255 (a literal) without a literal dword")
            c = udt(literal_bits(literal, ty))
            return lambda w: c
        if value >= 256:
            return self.vgpr(value - 256, words)
        if value in (235, 236, 237, 238):
            base = LDS_APERTURE if value < 237 else SCRATCH_APERTURE
            full = base + (APERTURE_LIMIT if value in (236, 238) else 0)
            c = udt(full if words == 2 else full >> 32)
            return lambda w: c
        if value == 253:
            return (lambda w: w.scc.astype(udt)[:, None]) if vector else (lambda w: w.scc.astype(udt))
        if value in (251, 252):
            first = VCC if value == 251 else EXEC
            n = max(1, self.lanes // 32)
            def zero(w: Waves) -> np.ndarray:
                return (w.s[first:first + n] == 0).all(axis=0).astype(udt)
            return (lambda w: zero(w)[:, None]) if vector else zero
        if value < 128:
            return self.sgpr(value, words, vector)
        raise OperandError(f"source operand {value} is not emulated")

    def sgpr(self, n: int, words: int, vector: bool) -> Reader:
        if 108 <= n <= 123 and not set(range(n, n + words)) <= self.ttmps:
            raise OperandError(f"trap temporary ttmp{n - 108} is not emulated")
        if n == self.null:
            zero = np.uint64(0) if words == 2 else np.uint32(0)
            return lambda w: zero
        if words == 2:
            def read(w: Waves) -> np.ndarray:
                return w.s[n].astype(np.uint64) | w.s[n + 1].astype(np.uint64) << np.uint64(32)
        else:
            def read(w: Waves) -> np.ndarray:
                return w.s[n]
        return (lambda w: read(w)[:, None]) if vector else read

    def vgpr(self, n: int, words: int = 1) -> Reader:
        self.check_vgprs(n, words)
        if words == 2:
            return lambda w: w.v[n].astype(np.uint64) | w.v[n + 1].astype(np.uint64) << np.uint64(32)
        return lambda w: w.v[n]

    def agpr(self, n: int) -> int:
        """The VGPR that AccVGPR a<n> is: gfx90a and gfx942 have one register file, whose AccVGPRs follow the
        architected VGPRs from ACCUM_OFFSET on (AMDGPUUsage .amdhsa_accum_offset; COMPUTE_PGM_RSRC3)."""
        if self.accum_offset is None:
            raise OperandError(f"a{n}: the target has no AccVGPRs")
        return self.accum_offset + n

    def check_vgprs(self, n: int, count: int) -> None:
        if n + count > self.vgprs:
            raise OperandError(f"v{n}" + (f"..v{n + count - 1}" if count > 1 else "") +
                               f" is beyond the {self.vgprs} VGPRs the kernel descriptor allocates")

    def mask(self, value: int) -> Callable[[Waves], np.ndarray]:
        """A lane-mask source (VCC, an SGPR pair, or a constant) as (B, L) booleans."""
        if value < 128 and value != self.null:
            return lambda w: w.mask(value)
        ty = TYPES["u64" if self.lanes == 64 else "u32"]
        raw = self._raw(value, ty, True, None)
        lane_bits = np.arange(self.lanes, dtype=np.uint64)
        return lambda w: (np.asarray(raw(w), np.uint64) >> lane_bits & np.uint64(1)).astype(bool)

    # -- writing ------------------------------------------------------------------------------------
    def scalar_writer(self, n: int, ty: Type) -> Callable[[Waves, np.ndarray], None]:
        """Store a (B,) result of type `ty` into SGPRs n (n, n+1 for 64-bit)."""
        if ty.float and ty.bits in self.flush_out:
            write = self._scalar_writer(n, ty)
            return lambda w, value: write(w, flush_denormals(np.asarray(value, ty.dtype)))
        return self._scalar_writer(n, ty)

    def _scalar_writer(self, n: int, ty: Type) -> Callable[[Waves, np.ndarray], None]:
        if n == self.null:
            return lambda w, value: None
        if 108 <= n <= 123:
            raise OperandError(f"trap temporary ttmp{n - 108} is not emulated")
        if ty.bits == 64:
            def write(w: Waves, value: np.ndarray) -> None:
                u = np.broadcast_to(np.asarray(value).view(np.uint64) if np.asarray(value).dtype != np.uint64
                                    else value, (w.count,))
                w.write_s(n, [(u & np.uint64(0xFFFFFFFF)).astype(np.uint32), (u >> np.uint64(32)).astype(np.uint32)])
            return write

        if ty.bits == 16:  # gfx12's scalar f16 operations set bits 31:16 to 0 (RDNA4 ISA 6.8)
            def write16(w: Waves, value: np.ndarray) -> None:
                half = np.asarray(value, ty.dtype).view(np.uint16).astype(np.uint32)
                w.write_s(n, [np.broadcast_to(half, (w.count,))])
            return write16

        def write32(w: Waves, value: np.ndarray) -> None:
            w.write_s(n, [np.broadcast_to(_bits32(value, ty), (w.count,))])
        return write32

    def vector_writer(self, n: int, ty: Type, high: bool = False) -> Callable[[Waves, np.ndarray], None]:
        """Store a result of type `ty` into VGPRs n.. under EXEC. A 16-bit result goes to the low half (with op_sel,
        `high`: the high half, the low one kept); the high half is zeroed where the family's VALU does so
        (`zero_high16`), else kept."""
        if ty.float and ty.bits in self.flush_out:
            write = self._vector_writer(n, ty, high)
            return lambda w, value: write(w, flush_denormals(np.asarray(value, ty.dtype)))
        return self._vector_writer(n, ty, high)

    def _vector_writer(self, n: int, ty: Type, high: bool = False) -> Callable[[Waves, np.ndarray], None]:
        if ty.bits == 64:
            self.check_vgprs(n, 2)

            def write64(w: Waves, value: np.ndarray) -> None:
                u = np.asarray(value)
                u = u.view(np.uint64) if u.dtype != np.uint64 else u
                w.write_v(n, (u & np.uint64(0xFFFFFFFF)).astype(np.uint32))
                w.write_v(n + 1, (u >> np.uint64(32)).astype(np.uint32))
            return write64
        self.check_vgprs(n, 1)
        if ty.bits == 16:
            if not high and self.zero_high16:
                return lambda w, value: w.write_v(n, np.asarray(value, ty.dtype).view(np.uint16).astype(np.uint32))
            if not high:
                def write_low(w: Waves, value: np.ndarray) -> None:
                    half = np.asarray(value, ty.dtype).view(np.uint16).astype(np.uint32)
                    w.write_v(n, (w.v[n] & np.uint32(0xFFFF0000)) | half)
                return write_low

            def write_high(w: Waves, value: np.ndarray) -> None:
                half = np.asarray(value, ty.dtype).view(np.uint16).astype(np.uint32) << np.uint32(16)
                w.write_v(n, (w.v[n] & np.uint32(0xFFFF)) | half)
            return write_high
        return lambda w, value: w.write_v(n, _bits32(value, ty))


def flush_denormals(x: np.ndarray) -> np.ndarray:
    """Denormal floats as zeros of their sign."""
    x = np.asarray(x)
    return np.where(np.abs(x) < np.finfo(x.dtype).smallest_normal, np.copysign(x.dtype.type(0), x), x)


def _bits32(value: np.ndarray, ty: Type) -> np.ndarray:
    v = np.asarray(value)
    if v.dtype != ty.dtype:
        v = v.astype(ty.dtype)
    return v.view(np.uint32)
