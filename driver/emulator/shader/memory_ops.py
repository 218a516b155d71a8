"""Memory instructions: scalar loads (SMEM), vector loads, stores and atomics through GPU virtual memory
(GLOBAL, FLAT, SCRATCH, MUBUF) and the workgroup's LDS (DS).

Widths and signedness come from the mnemonic's last part (dword, dwordx4, ubyte, sshort on GFX9/10; b32, b128,
u8, i16 on GFX11+); atomics from the `ATOMICS` table. Every access goes through GpuVm for its whole length: an
address no buffer covers is a VM fault (the kernel's address, the lane's access size), as for SDMA. Accesses of
one instruction touch each buffer through one held mapping, gathered and scattered with numpy. Atomic
operations serialise the lanes that hit one address in lane order and hold the machine's atomic lock, so
they are atomic against every other engine and the CPU's atomics.

Private memory (SCRATCH, and FLAT addresses in the private aperture) is swizzled by dword across the wave's
lanes, as the hardware does for scratch (AMDGPUUsage "Memory Spaces"): private byte p of lane l of a wave is
at FLAT_SCRATCH + (p / 4) * 4 * wave_size + l * 4 + p % 4, the same place the private segment buffer resource's
swizzle gives (MUBUF below). LDS accesses past the workgroup's allocation read 0 and are dropped when written
(the ISA guides' LDS range check).
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kfdtrace.driver.emulator.memory import LDS_APERTURE, SCRATCH_APERTURE, GpuVm, VmFault
from kfdtrace.driver.emulator.shader.alu import TYPES
from kfdtrace.driver.emulator.shader.operands import APERTURE_LIMIT, OperandError, Regs
from kfdtrace.driver.emulator.shader.waves import Waves
from kfdtrace.driver.isa import Instruction

__all__ = ["ATOMICS", "MemoryOps"]

u8, u32, u64 = np.uint8, np.uint32, np.uint64

# access widths: name part -> (bytes, sign-extended)
WIDTHS = {
    "dword": (4, False), "dwordx2": (8, False), "dwordx3": (12, False), "dwordx4": (16, False),
    "dwordx8": (32, False), "dwordx16": (64, False),
    "ubyte": (1, False), "sbyte": (1, True), "ushort": (2, False), "sshort": (2, True),
    "byte": (1, False), "short": (2, False),
    "b32": (4, False), "b64": (8, False), "b96": (12, False), "b128": (16, False), "b256": (32, False),
    "b512": (64, False), "b8": (1, False), "b16": (2, False), "u8": (1, False), "i8": (1, True),
    "u16": (2, False), "i16": (2, True), "x2": (8, False), "x4": (16, False), "x8": (32, False),
    "x16": (64, False),
}


_D16 = re.compile(r"(?:(?P<a>[a-z0-9]+)_d16(?P<ahi>_hi)?|d16(?P<bhi>_hi)?_(?P<b>[a-z0-9]+))")


def d16_width(part: str) -> tuple[int, bool, bool] | None:
    """(bytes, sign-extended, into the high half) of a D16 access's name part: short_d16_hi, ubyte_d16 (GFX9/10),
    d16_hi_b16, d16_u8 (GFX11+), u16_d16_hi (DS); None when it is none. A D16 load writes the 16-bit half it
    names of its VGPR and keeps the other (LLVM's d16PreservesUnusedBits); a D16_HI store stores the high half
    (bits 23:16 for a byte)."""
    m = _D16.fullmatch(part)
    if m is None or (m["a"] or m["b"]) not in WIDTHS:
        return None
    size, signed = WIDTHS[m["a"] or m["b"]]
    return size, signed, bool(m["ahi"] or m["bhi"])


def _inc(old, src):
    return np.where(old >= src, old.dtype.type(0), old + old.dtype.type(1))


def _dec(old, src):
    return np.where((old == 0) | (old > src), src, old - old.dtype.type(1))


def _signed(fn):
    def op(old, src):
        s = {4: np.int32, 8: np.int64}[old.dtype.itemsize]
        return fn(old.view(s), src.view(s)).view(old.dtype)
    return op


def _float(fn):
    def op(old, src):
        f = {4: np.float32, 8: np.float64}[old.dtype.itemsize]
        return np.asarray(fn(old.view(f), src.view(f))).view(old.dtype)
    return op


# Atomic operations: old value and the lane's data -> new value (cmpswap: old, src, cmp -> new)
ATOMICS: dict[str, Callable] = {
    "add": np.add, "sub": np.subtract, "rsub": lambda o, s: s - o, "and": np.bitwise_and, "or": np.bitwise_or,
    "xor": np.bitwise_xor, "swap": lambda o, s: s, "inc": _inc, "dec": _dec,
    "umin": np.minimum, "umax": np.maximum, "smin": _signed(np.minimum), "smax": _signed(np.maximum),
    "add_f": _float(np.add), "min_f": _float(np.fmin), "max_f": _float(np.fmax),
    "cmpswap": lambda o, src, cmp: np.where(o == cmp, src, o),
}
_ATOMIC_ALIASES = {  # the names each generation spells the same operation with
    "wrxchg": "swap", "storexchg": "swap", "cmpst": "cmpswap", "cmpstore": "cmpswap",
    "min_i": "smin", "max_i": "smax", "min_u": "umin", "max_u": "umax", "inc_u": "inc", "dec_u": "dec",
    "add_u": "add", "sub_u": "sub", "rsub_u": "rsub", "and_b": "and", "or_b": "or", "xor_b": "xor", "swap_b": "swap",
    "cmpswap_b": "cmpswap", "min": "umin", "max": "umax", "fmin": "min_f", "fmax": "max_f", "add_f": "add_f",
    "min_num_f": "min_f", "max_num_f": "max_f", "min_f": "min_f", "max_f": "max_f",  # min_f32: not min (unsigned)
}
_ATOMIC_NAME = re.compile(r"^(?P<op>[a-z_]+?)(?:_(?P<ty>[uibf])(?P<bits>32|64)|_x2)?$")


def atomic_op(part: str) -> tuple[str, int] | None:
    """(ATOMICS key, bytes) of an atomic's name part (add_x2, max_i32, cmpswap_b64, smax); None if unknown."""
    m = _ATOMIC_NAME.match(part)
    if m is None:
        return None
    op, ty, bits = m["op"], m["ty"], m["bits"]
    size = 8 if part.endswith("_x2") or bits == "64" else 4
    key = op + (f"_{ty}" if ty in ("i", "u", "b", "f") and f"{op}_{ty}" in _ATOMIC_ALIASES else "")
    key = _ATOMIC_ALIASES.get(key, _ATOMIC_ALIASES.get(op, op) if key == op else key)
    return (key, size) if key in ATOMICS else None


# -- byte arrays ---------------------------------------------------------------------------------------------
def _consecutive(offsets: np.ndarray, size: int) -> bool:
    """The lanes' accesses tile one block in lane order (vector loads and stores of consecutive elements)."""
    n = len(offsets)
    return n > 1 and int(offsets[-1]) - int(offsets[0]) == (n - 1) * size and \
        bool(((offsets[1:] - offsets[:-1]) == size).all())


def gather(buf: np.ndarray, offsets: np.ndarray, size: int) -> np.ndarray:
    """(N, size) bytes of `buf` (uint8) at each offset."""
    if _consecutive(offsets, size):
        start = int(offsets[0])
        return buf[start:start + len(offsets) * size].reshape(-1, size)
    if size % 4 == 0 and not (offsets & 3).any():
        words = buf[:len(buf) & ~3].view(u32)
        idx = (offsets >> 2).astype(np.int64)
        if size == 4:
            return words[idx].view(u8).reshape(-1, 4)
        return words[idx[:, None] + np.arange(size // 4)].view(u8).reshape(-1, size)
    return buf[offsets.astype(np.int64)[:, None] + np.arange(size)]


def scatter(buf: np.ndarray, offsets: np.ndarray, data: np.ndarray) -> None:
    """Write (N, size) bytes into `buf` at each offset (lanes writing one place: the last lane's bytes stay)."""
    size = data.shape[1]
    if _consecutive(offsets, size):
        start = int(offsets[0])
        buf[start:start + len(offsets) * size] = data.reshape(-1)
        return
    if size % 4 == 0 and not (offsets & 3).any():
        words = buf[:len(buf) & ~3].view(u32)
        idx = (offsets >> 2).astype(np.int64)
        words[idx[:, None] + np.arange(size // 4)] = np.ascontiguousarray(data).view(u32).reshape(-1, size // 4)
        return
    buf[offsets.astype(np.int64)[:, None] + np.arange(size)] = data


def atomic(buf: np.ndarray, offsets: np.ndarray, size: int, fn: Callable, operands: list[np.ndarray]) -> np.ndarray:
    """Apply an atomic lane by lane in lane order (lanes on distinct addresses together): the old values."""
    if (offsets % size).any():
        raise OperandError(f"an atomic of {size} bytes at a misaligned address (offset {int(offsets[0]):#x})")
    dt = u32 if size == 4 else u64
    words = buf[:len(buf) - len(buf) % size].view(dt)
    idx = (offsets // size).astype(np.int64)
    old = np.empty(len(idx), dt)
    pending = np.arange(len(idx))
    while pending.size:
        _, first = np.unique(idx[pending], return_index=True)
        lanes = pending[first]
        cur = words[idx[lanes]]
        old[lanes] = cur
        words[idx[lanes]] = fn(cur, *(np.asarray(o, dt)[lanes] for o in operands))
        pending = np.delete(pending, first)
    return old


# -- GPU virtual memory ----------------------------------------------------------------------------------------
def _host_view(host: int, size: int) -> np.ndarray:
    return np.frombuffer((ctypes.c_uint8 * size).from_address(host), dtype=u8)


class VirtualMemory:
    """Lane accesses through one GPU's page table, each buffer held while it is touched."""

    def __init__(self, vm: GpuVm, machine):
        self.vm, self.machine = vm, machine

    def _each_buffer(self, addrs: np.ndarray, size: int, write: bool):
        """Yield (lane indices, the buffer's bytes, offsets in it) for the buffers the accesses fall in."""
        lo, hi = int(addrs.min()), int(addrs.max()) + size
        try:
            with self.vm.access(lo, hi - lo, write) as host:  # the common case: one buffer holds them all
                yield slice(None), _host_view(host, hi - lo), addrs - np.uint64(lo)
                return
        except VmFault:
            pass
        pending = np.arange(len(addrs))
        while pending.size:
            a0 = int(addrs[pending[0]])
            bo = self.vm.lookup(a0)
            if bo is None or a0 + size > bo.va + bo.size:
                raise VmFault(self.vm.gpu_id, a0, size, write)
            inside = (addrs[pending] >= bo.va) & (addrs[pending] + np.uint64(size) <= bo.va + bo.size)
            sel = pending[inside]
            with self.vm.access(bo.va, bo.size, write) as host:
                yield sel, _host_view(host, bo.size), addrs[sel] - np.uint64(bo.va)
            pending = pending[~inside]

    def load(self, addrs: np.ndarray, size: int) -> np.ndarray:
        out = np.empty((len(addrs), size), u8)
        for sel, buf, off in self._each_buffer(addrs, size, False):
            out[sel] = gather(buf, off, size)
        return out

    def store(self, addrs: np.ndarray, data: np.ndarray) -> None:
        for sel, buf, off in self._each_buffer(addrs, data.shape[1], True):
            scatter(buf, off, data[sel])
        self.machine.memory_changed()

    def atomic(self, addrs: np.ndarray, size: int, fn: Callable, operands: list[np.ndarray]) -> np.ndarray:
        old = np.empty(len(addrs), u32 if size == 4 else u64)
        with self.machine.atomic_lock:
            for sel, buf, off in self._each_buffer(addrs, size, True):
                old[sel] = atomic(buf, off, size, fn, [o[sel] for o in operands])
        self.machine.memory_changed()
        return old


# -- where the lanes' bytes are --------------------------------------------------------------------------------
@dataclass
class Chunk:
    """The workgroups running together: their LDS (one allocation each, side by side) and each wave's place."""

    lds: np.ndarray  # uint8, groups * lds_size
    lds_size: int
    lds_base: np.ndarray  # per wave id: its group's first LDS byte


def _dwords(data: np.ndarray) -> np.ndarray:
    """(N, bytes) -> (N, dwords) uint32, the last dword zero-padded."""
    n, size = data.shape
    if size % 4:
        data = np.concatenate((data, np.zeros((n, 4 - size % 4), u8)), axis=1)
    return np.ascontiguousarray(data).view(u32)


def _into_half(old: np.ndarray, words: np.ndarray, high: bool) -> np.ndarray:
    """(N, 1) VGPR dwords `old` with the low 16 bits of `words` in their high half (or their low half)."""
    value = words & u32(0xFFFF)
    return (old & u32(0xFFFF)) | value << u32(16) if high else (old & u32(0xFFFF0000)) | value


def _extend(data: np.ndarray, size: int, signed: bool) -> np.ndarray:
    """A sub-dword load zero- or sign-extended to one dword per lane."""
    words = _dwords(data)[:, 0]
    if signed and size < 4:
        top = u32(1 << (8 * size - 1))
        words = (words ^ top) - top
    return words[:, None]


# gfx10's hardware registers holding FLAT_SCRATCH: id -> which half (LLVM SIDefines.h ID_FLAT_SCR_LO 20, _HI 21)
FLAT_SCR_HWREGS = {20: 0, 21: 1}


class MemoryOps:
    """Compiles memory instructions against one dispatch's memory: its GPU VM and the current chunk's LDS."""

    def __init__(self, memory: VirtualMemory, lanes: int, gfx_major: int, architected_scratch: bool):
        self.memory, self.lanes, self.gfx_major = memory, lanes, gfx_major
        self.architected_scratch = architected_scratch
        self.chunk: Chunk | None = None
        self._lane_ids = np.arange(lanes, dtype=u64)

    def compile(self, ins: Instruction, name: str, regs: Regs):
        prefix = name.split("_", 1)[0]
        if any(item[0] == "r" and item[3] == "agpr" for item in ins.operands):
            raise OperandError(f"{ins.mnemonic} into or from AccVGPRs is not emulated")
        if ins.encoding == "SMEM":
            return self._smem(ins, name, regs)
        if prefix == "ds":
            return self._ds(ins, name, regs)
        if prefix in ("global", "flat", "scratch", "buffer"):
            return self._vmem(ins, name, prefix, regs)
        if name in ("s_setreg_b32", "s_setreg_imm32_b32"):
            return self._set_flat_scratch(ins, regs)
        return None

    def _set_flat_scratch(self, ins: Instruction, regs: Regs):
        """s_setreg of FLAT_SCRATCH's halves: a gfx10 kernel's prologue sets them, and flat accesses to the private
        aperture go through them (gfx9 keeps FLAT_SCRATCH in SGPRs, later targets have it set up). A setreg of any
        other hardware register (MODE, say) is refused."""
        simm = ins.fields["simm16"]
        hwreg, offset, size = simm & 0x3F, simm >> 6 & 0x1F, (simm >> 11 & 0x1F) + 1
        if self.architected_scratch or self.gfx_major < 10 or hwreg not in FLAT_SCR_HWREGS:
            raise OperandError(f"{ins.text}: s_setreg of hardware register {hwreg} is not emulated (only gfx10's "
                               "FLAT_SCRATCH halves are)")
        value = regs.source(255, TYPES["u32"], False, ins.literal) if ins.mnemonic.startswith("s_setreg_imm32") \
            else regs.sgpr(ins.fields["sdst"], 1, False)
        shift = u64(32 * FLAT_SCR_HWREGS[hwreg] + offset)
        mask = u64((1 << size) - 1) << shift

        def run(w: Waves) -> None:
            bits = (np.broadcast_to(value(w), (w.count,)).astype(u64) << shift) & mask
            w.flat_scratch = (w.flat_scratch & ~mask) | bits
        return run

    # -- scalar loads ----------------------------------------------------------------------------------
    def _smem(self, ins: Instruction, name: str, regs: Regs):
        m = re.fullmatch(r"s_load_(\w+)", name)
        if m is None or m[1] not in WIDTHS:
            return None
        size, signed = WIDTHS[m[1]]
        f = ins.fields
        base = regs.sgpr(f["sbase"] * 2, 2, False)
        offsets = []
        for item in ins.operands:
            if item[0] == "r" and item[1] in ("soffset", "offset") and item[3] == "sreg":
                offsets.append(regs.sgpr(f[item[1]], 1, False))
        imm = ins.signed.get("offset", f["offset"]) if f.get("imm", 1) else 0  # gfx9: imm=0 makes it an SGPR
        dst = f["sdata"]
        dwords = max(1, size // 4)
        align = u64(0xFFFFFFFFFFFFFFFC if size >= 4 else 0xFFFFFFFFFFFFFFFF)  # dword loads ignore address bits 1:0
        memory = self.memory

        def run(w: Waves) -> None:
            addr = np.broadcast_to(base(w), (w.count,)).astype(u64) + u64(imm & 0xFFFFFFFFFFFFFFFF)
            for o in offsets:
                addr = addr + o(w).astype(u64)
            data = memory.load(addr & align, size)
            words = _extend(data, size, signed) if size < 4 else _dwords(data)
            w.write_s(dst, [words[:, i] for i in range(dwords)])
        return run

    # -- vector memory -----------------------------------------------------------------------------------
    def _vmem(self, ins: Instruction, name: str, prefix: str, regs: Regs):
        parts = name.split("_", 2)
        if len(parts) < 3:
            return None
        kind, rest = parts[1], parts[2]
        address = self._buffer_address(ins, regs) if prefix == "buffer" else self._flat_address(ins, prefix, regs)
        if address is None:
            return None
        if kind == "load" and rest in WIDTHS:
            return self._load(ins, address, *WIDTHS[rest], regs)
        if kind == "store" and rest in WIDTHS:
            return self._store(ins, address, WIDTHS[rest][0], regs)
        if kind in ("load", "store") and (d16 := d16_width(rest)) is not None:
            size, signed, high = d16
            if kind == "load":
                return self._load(ins, address, size, signed, regs, high)
            return self._store(ins, address, size, regs, high)
        if kind == "atomic":
            op = atomic_op(rest)
            return None if op is None else self._atomic(ins, address, *op, regs)
        return None

    def _operand(self, ins: Instruction, *names: str) -> tuple | None:
        return next((item for item in ins.operands if item[0] == "r" and item[1] in names), None)

    def _flat_address(self, ins: Instruction, segment: str, regs: Regs):
        """A function of the waves giving (lanes' addresses (B, L) uint64, where): where is "global", or
        per-lane masks for the LDS and private apertures (FLAT)."""
        f = ins.fields
        offset = ins.signed.get("offset", f["offset"])
        vaddr = self._operand(ins, "addr", "vaddr")
        saddr = self._operand(ins, "saddr")
        v = regs.vgpr(f[vaddr[1]], vaddr[2]) if vaddr else None
        s = regs.sgpr(f["saddr"], saddr[2], True) if saddr else None
        off, off64 = np.int64(offset), u64(offset & 0xFFFFFFFFFFFFFFFF)
        if segment == "scratch":
            scratch = self._scratch_base(regs)

            def private(w: Waves):
                p = np.zeros((w.count, 1), np.int64) + off
                if v is not None:
                    p = p + v(w).astype(np.int64)
                if s is not None:
                    p = p + s(w).astype(np.int64)
                # a 32-bit sum: LLVM folds a constant into the offset and leaves the VGPR negative (0 - 4 * i with
                # offset:396 for big[99 - i]), as it does for DS addresses
                return self._private(w, scratch(w), np.broadcast_to(p & 0xFFFFFFFF, w.exec.shape))
            return private
        if v is None:
            raise OperandError(f"{ins.mnemonic} without an address VGPR")

        def flat(w: Waves):
            a = v(w).astype(u64)
            if s is not None:
                a = a + s(w)
            return a + off64, None, None
        if segment == "global":
            return flat
        scratch = self._scratch_base(regs)

        def generic(w: Waves):
            a = flat(w)[0]
            lds = (a >= u64(LDS_APERTURE)) & (a <= u64(LDS_APERTURE + APERTURE_LIMIT))
            priv = (a >= u64(SCRATCH_APERTURE)) & (a <= u64(SCRATCH_APERTURE + APERTURE_LIMIT))
            if not (lds.any() or priv.any()):
                return a, None, None
            stride = None
            if priv.any():
                p, _, step = self._private(w, scratch(w), (a - u64(SCRATCH_APERTURE)).astype(np.int64))
                a = np.where(priv, p, a)
                stride = np.where(priv, step, u64(4))
            return a, lds, stride
        return generic

    def _scratch_base(self, regs: Regs) -> Callable[[Waves], np.ndarray]:
        if self.architected_scratch or self.gfx_major >= 10:  # set up, or set by s_setreg (_set_flat_scratch)
            return lambda w: w.flat_scratch
        return lambda w: w.s[102].astype(u64) | w.s[103].astype(u64) << u64(32)  # gfx9's FLAT_SCRATCH SGPR pair

    def _private(self, w: Waves, base: np.ndarray, p: np.ndarray):
        """Addresses of private bytes p (dword-swizzled across the wave's lanes) for each lane, and the distance
        from one of a lane's dwords to its next."""
        p = p.astype(u64)
        lanes = u64(self.lanes)
        a = base.astype(u64)[:, None] + (p >> u64(2)) * u64(4) * lanes + self._lane_ids * u64(4) + (p & u64(3))
        return a, None, u64(4) * lanes

    def _buffer_address(self, ins: Instruction, regs: Regs):
        """MUBUF: the buffer resource's base, stride and swizzle, the index and offset VGPRs, SOFFSET and the
        instruction's offset (the ISA guides' buffer addressing). Out-of-range lanes are reported as such."""
        f = ins.fields
        rsrc_field = "srsrc" if "srsrc" in f else "rsrc"
        first = f[rsrc_field] * 4 if rsrc_field == "srsrc" else f[rsrc_field]
        rsrc = [regs.sgpr(first + i, 1, False) for i in range(4)]
        soffset = regs.source(f["soffset"], TYPES["u32"], False, ins.literal)
        vaddr = self._operand(ins, "vaddr")
        v = regs.vgpr(f["vaddr"], vaddr[2]) if vaddr else None
        idxen, offen, inst = f.get("idxen", 0), f.get("offen", 0), np.int64(f["offset"])
        gfx9 = self.gfx_major == 9
        lanes = self._lane_ids.astype(np.int64)

        def address(w: Waves):
            w0, w1, w2, w3 = (np.asarray(r(w), np.int64)[:, None] for r in rsrc)
            base = w0 | (w1 & 0xFFFF) << 32
            stride = w1 >> 16 & 0x3FFF
            swizzle = (w1 >> 31 & 1) if gfx9 else (w1 >> 30 & 3)
            index_stride = 8 << (w3 >> 21 & 3)
            element = (2 << (w3 >> 19 & 3)) if gfx9 else np.int64(4)
            add_tid = w3 >> 23 & 1
            num_records = w2
            vv = v(w).astype(np.int64) if v is not None else None
            index = np.zeros((w.count, self.lanes), np.int64)
            offset = np.zeros((w.count, self.lanes), np.int64) + inst
            if idxen:
                index = index + (vv if vaddr[2] == 1 else vv[0])
            if offen:  # in 32 bits, as for scratch_* (a negative VGPR with a positive offset: _flat_address)
                offset = (offset + (vv if vaddr[2] == 1 or not idxen else vv[1])) & 0xFFFFFFFF
            index = index + add_tid * lanes
            swizzled = base + ((index // index_stride) * stride + (offset // element) * element) * index_stride + \
                (index % index_stride) * element + offset % element
            linear = base + index * stride + offset
            a = np.where(swizzle != 0, swizzled, linear) + \
                np.broadcast_to(soffset(w), (w.count,)).astype(np.int64)[:, None]
            checked = np.where((stride == 0) | (swizzle != 0), offset, index)
            in_range = checked < num_records
            # a swizzled resource interleaves 4-byte elements of index_stride lanes: a lane's next dword is
            # index_stride elements further on
            if (swizzle != 0).any() and (element != 4).any():
                raise OperandError(f"{ins.mnemonic}: a swizzled buffer resource with elements of more than 4 bytes")
            stride = np.where(swizzle != 0, 4 * index_stride, 4).astype(u64) if (swizzle != 0).any() else None
            return a.astype(u64), ~in_range, stride
        return address

    def _vdata(self, ins: Instruction, *names: str) -> tuple:
        item = self._operand(ins, *names)
        if item is None:
            raise OperandError(f"{ins.mnemonic}: no data operand")
        return item

    def _data_vgprs(self, ins: Instruction, names: tuple[str, ...], count: int, regs: Regs) -> int:
        """The first of the `count` VGPRs the instruction's data operand names (checked against the allocation)."""
        n = ins.fields[self._vdata(ins, *names)[1]]
        regs.check_vgprs(n, count)
        return n

    def _lanes(self, w: Waves, address: Callable):
        """The active lanes' flat indices and addresses, and the masks of lanes that are not plain memory."""
        a, where, stride = address(w)
        idx = np.flatnonzero(w.exec)
        a = np.broadcast_to(a, w.exec.shape).ravel()[idx]
        special = None if where is None else np.broadcast_to(where, w.exec.shape).ravel()[idx]
        if stride is not None:
            stride = np.broadcast_to(stride, w.exec.shape).ravel()[idx]
        return idx, a, special, stride

    def _load(self, ins: Instruction, address: Callable, size: int, signed: bool, regs: Regs,
              half: bool | None = None):
        """A load into VGPRs (`half`: a D16 load into the high half if True, the low one if False)."""
        n = self._data_vgprs(ins, ("vdst", "vdata"), max(1, size // 4), regs)
        memory = self

        def run(w: Waves) -> None:
            idx, a, special, stride = memory._lanes(w, address)
            if not len(idx):
                return
            data = memory._read(w, idx, a, special, size, stride)
            words = _extend(data, size, signed) if size < 4 else _dwords(data)
            w.scatter_lanes(n, idx, words if half is None else _into_half(w.gather_lanes(n, 1, idx), words, half))
        return run

    def _store(self, ins: Instruction, address: Callable, size: int, regs: Regs, high: bool = False):
        """A store from VGPRs (`high`: a D16_HI store, of the high half)."""
        dwords = max(1, size // 4)
        n = self._data_vgprs(ins, ("data", "vsrc", "vdata"), dwords, regs)
        memory = self

        def run(w: Waves) -> None:
            idx, a, special, stride = memory._lanes(w, address)
            if not len(idx):
                return
            words = w.gather_lanes(n, dwords, idx) >> u32(16 if high else 0)
            memory._write(w, idx, a, special, words.view(u8).reshape(len(idx), -1)[:, :size], stride)
        return run

    def _atomic(self, ins: Instruction, address: Callable, op: str, size: int, regs: Regs):
        data = self._vdata(ins, "data", "vsrc", "vdata")
        n = ins.fields[data[1]]
        words = size // 4
        count = 2 if op == "cmpswap" else 1
        regs.check_vgprs(n, words * count)
        ret = next((item for item in ins.operands if item[0] == "r" and item[1] == "vdst"), None)
        if ret is None and ins.encoding in ("MUBUF", "VBUFFER") and ins.fields.get("glc", ins.fields.get("sc0", 0)):
            ret = data  # MUBUF returns into its data VGPRs
        fn = ATOMICS[op]
        dt = u32 if size == 4 else u64
        memory = self

        def run(w: Waves) -> None:
            idx, a, special, stride = memory._lanes(w, address)
            if not len(idx):
                return
            operands = [w.gather_lanes(n + k * words, words, idx).view(dt)[:, 0] for k in range(count)]
            if special is None or not special.any():
                old = memory.memory.atomic(a, size, fn, operands)
            else:  # FLAT lanes in the LDS aperture; buffer lanes out of range (no effect, 0 returned)
                old = np.zeros(len(idx), dt)
                plain, lds = ~special, special & memory._is_lds(a)
                if plain.any():
                    old[plain] = memory.memory.atomic(a[plain], size, fn, [o[plain] for o in operands])
                if lds.any():
                    old[lds] = memory._lds_atomic(w, idx[lds], (a[lds] - u64(LDS_APERTURE)).astype(np.int64), size,
                                                  fn, [o[lds] for o in operands])
            if ret is not None:
                w.scatter_lanes(ins.fields[ret[1]], idx, old.view(u32).reshape(len(idx), words))
        return run

    def _read(self, w: Waves, idx: np.ndarray, a: np.ndarray, special: np.ndarray | None, size: int,
              stride: np.ndarray | None = None) -> np.ndarray:
        if stride is not None and size > 4:  # dword by dword where a lane's dwords are not adjacent
            return np.concatenate([self._read(w, idx, a + u64(i) * stride, special, 4)
                                   for i in range(size // 4)], axis=1)
        if special is None or not special.any():
            return self.memory.load(a, size)
        out = np.zeros((len(idx), size), u8)
        plain = ~special
        if plain.any():
            out[plain] = self.memory.load(a[plain], size)
        if self.chunk is not None and special.any() and self._is_lds(a).any():
            lds = special & self._is_lds(a)
            out[lds] = self._lds_read(w, idx[lds], (a[lds] - u64(LDS_APERTURE)).astype(np.int64), size)
        return out  # buffer lanes out of range read 0

    def _write(self, w: Waves, idx: np.ndarray, a: np.ndarray, special: np.ndarray | None, data: np.ndarray,
               stride: np.ndarray | None = None) -> None:
        if stride is not None and data.shape[1] > 4:
            for i in range(data.shape[1] // 4):
                self._write(w, idx, a + u64(i) * stride, special, data[:, 4 * i:4 * i + 4])
            return
        if special is None or not special.any():
            self.memory.store(a, data)
            return
        plain = ~special
        if plain.any():
            self.memory.store(a[plain], data[plain])
        lds = special & self._is_lds(a)
        if lds.any():
            self._lds_write(w, idx[lds], (a[lds] - u64(LDS_APERTURE)).astype(np.int64), data[lds])

    @staticmethod
    def _is_lds(a: np.ndarray) -> np.ndarray:
        return (a >= u64(LDS_APERTURE)) & (a <= u64(LDS_APERTURE + APERTURE_LIMIT))

    # -- LDS ---------------------------------------------------------------------------------------------
    def _lds_place(self, w: Waves, idx: np.ndarray, addr: np.ndarray, size: int):
        """Each lane's byte in the chunk's LDS, and whether it is inside its group's allocation."""
        chunk = self.chunk
        wave = w.ids[idx // self.lanes]
        inside = (addr >= 0) & (addr + size <= chunk.lds_size)
        return chunk.lds_base[wave] + np.where(inside, addr, 0), inside

    def _lds_read(self, w: Waves, idx: np.ndarray, addr: np.ndarray, size: int) -> np.ndarray:
        place, inside = self._lds_place(w, idx, addr, size)
        data = gather(self.chunk.lds, place, size)
        data[~inside] = 0
        return data

    def _lds_write(self, w: Waves, idx: np.ndarray, addr: np.ndarray, data: np.ndarray) -> None:
        place, inside = self._lds_place(w, idx, addr, data.shape[1])
        scatter(self.chunk.lds, place[inside], data[inside])

    def _lds_atomic(self, w: Waves, idx: np.ndarray, addr: np.ndarray, size: int, fn: Callable,
                    operands: list[np.ndarray]) -> np.ndarray:
        """An atomic on LDS: lanes outside the group's allocation change nothing and return 0."""
        place, inside = self._lds_place(w, idx, addr, size)
        old = np.zeros(len(idx), u32 if size == 4 else u64)
        if inside.any():
            old[inside] = atomic(self.chunk.lds, place[inside], size, fn, [o[inside] for o in operands])
        return old

    def _ds(self, ins: Instruction, name: str, regs: Regs):
        f = ins.fields
        body = name[3:]
        if body in ("bpermute_b32", "permute_b32"):
            return self._permute(ins, body, regs)
        addr = regs.vgpr(f["addr"]) if self._operand(ins, "addr") else None
        m = re.fullmatch(r"(read|load|write|store)(2st64|2|_2addr_stride64|_2addr)?_(\w+)", body)
        d16 = None if m is None or m[3] in WIDTHS or m[2] else d16_width(m[3])
        if d16 is not None:
            size, signed, high = d16
            if m[1] in ("read", "load"):
                return self._ds_load(ins, addr, (f["offset"],), size, signed, regs, high)
            return self._ds_store(ins, addr, (f["offset"],), size, regs, high)
        if m is not None and m[3] in WIDTHS:
            kind, pair, (size, signed) = m[1], m[2], WIDTHS[m[3]]
            if pair:
                scale = size * (64 if "64" in pair else 1)
                offsets = (f["offset0"] * scale, f["offset1"] * scale)
            else:
                offsets = (f["offset"],)
            if kind in ("read", "load"):
                return self._ds_load(ins, addr, offsets, size, signed, regs)
            return self._ds_store(ins, addr, offsets, size, regs)
        rtn = body.replace("_rtn", "")
        op = atomic_op(rtn)
        if op is None:
            return None
        return self._ds_atomic(ins, addr, f["offset"], *op, regs)

    def _ds_lanes(self, w: Waves, addr: Callable):
        idx = np.flatnonzero(w.exec.ravel())
        return idx, addr(w).reshape(-1)[idx].astype(np.int64)

    @staticmethod
    def _ds_address(a: np.ndarray, offset: int) -> np.ndarray:
        """A DS instruction's LDS address: ADDR VGPR + OFFSET in 32 bits. LLVM folds tmp[63 - l] into a base of
        -4*l with offset:252 (AMDGPUISelDAGToDAG.cpp isDSOffsetLegal: only gfx6 keeps such a base unfolded): the
        sum wraps."""
        return (a + offset) & 0xFFFFFFFF

    def _ds_load(self, ins: Instruction, addr: Callable, offsets: tuple, size: int, signed: bool, regs: Regs,
                 half: bool | None = None):
        """An LDS load into VGPRs, one per offset (`half`: a D16 load into the high half if True, the low one if
        False)."""
        n = ins.fields["vdst"]
        per = max(1, size // 4)
        regs.check_vgprs(n, per * len(offsets))
        memory = self

        def run(w: Waves) -> None:
            idx, a = memory._ds_lanes(w, addr)
            if not len(idx):
                return
            for k, off in enumerate(offsets):
                data = memory._lds_read(w, idx, memory._ds_address(a, off), size)
                words = _extend(data, size, signed) if size < 4 else _dwords(data)
                if half is not None:
                    words = _into_half(w.gather_lanes(n + k * per, 1, idx), words, half)
                w.scatter_lanes(n + k * per, idx, words)
        return run

    def _ds_store(self, ins: Instruction, addr: Callable, offsets: tuple, size: int, regs: Regs, high: bool = False):
        """An LDS store from VGPRs, one per offset (`high`: a D16_HI store, of the high half)."""
        per = max(1, size // 4)
        sources = [ins.fields["data0"], ins.fields["data1"]][:len(offsets)]
        for s in sources:
            regs.check_vgprs(s, per)
        memory = self

        def run(w: Waves) -> None:
            idx, a = memory._ds_lanes(w, addr)
            if not len(idx):
                return
            for s, off in zip(sources, offsets, strict=True):
                words = w.gather_lanes(s, per, idx) >> u32(16 if high else 0)
                memory._lds_write(w, idx, memory._ds_address(a, off), words.view(u8).reshape(len(idx), -1)[:, :size])
        return run

    def _ds_atomic(self, ins: Instruction, addr: Callable, offset: int, op: str, size: int, regs: Regs):
        f = ins.fields
        words = size // 4
        dt = u32 if size == 4 else u64
        data0, data1 = f["data0"], f["data1"]
        # cmpswap operands: GFX9's ds_cmpst takes (cmp, src) in data0, data1; GFX11's ds_cmpstore (src, cmp)
        # (CDNA3 and RDNA3 ISA pseudocode)
        cmp_first = "cmpst_" in ins.mnemonic or ins.mnemonic.startswith("ds_cmpst_rtn")
        ret = f["vdst"] if self._operand(ins, "vdst") else None
        fn = ATOMICS[op]
        memory = self

        def value(w: Waves, n: int, idx: np.ndarray) -> np.ndarray:
            return w.gather_lanes(n, words, idx).view(dt)[:, 0]

        def run(w: Waves) -> None:
            idx, a = memory._ds_lanes(w, addr)
            if not len(idx):
                return
            operands = [value(w, data0, idx)]
            if op == "cmpswap":
                operands.append(value(w, data1, idx))
                if cmp_first:
                    operands.reverse()
            old = memory._lds_atomic(w, idx, memory._ds_address(a, offset), size, fn, operands)
            if ret is not None:
                w.scatter_lanes(ret, idx, old.view(u32).reshape(len(idx), words))
        return run

    def _permute(self, ins: Instruction, body: str, regs: Regs):
        """ds_bpermute_b32: each lane reads the data VGPR of lane (addr + offset) / 4 (0 where that lane is
        inactive); ds_permute_b32 writes it there. GFX10+ lanes index within 32 (RDNA3 ISA pseudocode)."""
        f = ins.fields
        addr, data, dst, offset = regs.vgpr(f["addr"]), regs.vgpr(f["data0"]), f["vdst"], f["offset"]
        regs.check_vgprs(dst, 1)
        span = 64 if self.gfx_major == 9 else 32
        lanes = np.arange(self.lanes)
        half = lanes & ~(span - 1) if self.lanes > span else 0
        backward = body == "bpermute_b32"

        def run(w: Waves) -> None:
            sel = ((addr(w).astype(np.int64) + offset) // 4) % span + half
            rows = np.arange(w.count)[:, None]
            src = np.where(w.exec, data(w), 0).astype(u32)
            if backward:
                out = np.where(w.exec[rows, sel], src[rows, sel], u32(0))
            else:
                out = np.zeros_like(src)
                order = np.where(w.exec, sel, -1)
                for lane in range(self.lanes):  # lane order: a later lane writing one place wins
                    ok = order[:, lane] >= 0
                    out[ok, order[ok, lane]] = src[ok, lane]
            w.write_v(dst, out)
        return run
