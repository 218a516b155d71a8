"""Compute registers by name: one table per PM4 dialect, written as the gfx9 table plus per-generation changes.

A `Register` is an absolute dword offset (as the kernel's `mmREG + GC_BASE` gives it), its bit fields (only
where they matter to building or executing a dispatch) and, for registers that hold part of a GPU address,
which bits of which address they hold (`Part`). SET_SH_REG and SET_UCONFIG_REG address registers by index
from the start of their range (soc15d.h / nvd.h `PACKET3_SET_SH_REG_START` 0x2C00, `..._UCONFIG_REG_START`
0xC000); `RegisterTable.sh` and `.uconfig` map those indexes back to names.

| table | parts             | offsets and fields from                                                          |
|-------|-------------------|----------------------------------------------------------------------------------|
| gfx9  | gfx90a, gfx942    | gc_9_4_3_offset.h / _sh_mask.h (GC seg0 0x2000, seg1 0xA000)                     |
| gfx10 | gfx103x           | gc_10_3_0_offset.h (seg0 0x1260); fields: PAL gfx9_plus_merged_registers.h gfx10 |
| gfx11 | gfx110x           | gc_11_0_0_offset.h / _sh_mask.h (seg0 0x1260)                                    |
| gfx12 | gfx120x           | gc_12_0_0_offset.h / _sh_mask.h (seg0 0x1260)                                    |

Sources read (facts only): tinygrad/tinygrad@a9069c17 tinygrad/runtime/autogen/am/regs.py (generated from
ROCm/ROCK-Kernel-Driver@33970e13 gc_9_4_3 / gc_11_0_0 / gc_12_0_0 offset and sh_mask headers),
extra/hip_gpu_driver/gc_10_3_0_offset.h and sienna_cichlid_ip_offset.h (copies of the kernel's);
GPUOpen-Drivers/pal@c5e80007 src/core/hw/gfxip/gfx9/chip/gfx9_plus_merged_registers.h (gfx10 bit fields);
torvalds/linux drivers/gpu/drm/amd/amdgpu/soc15d.h and nvd.h (register ranges). Address shifts: tinygrad
ops_amd.py and Mesa si_compute.c write COMPUTE_PGM_LO/HI and COMPUTE_DISPATCH_SCRATCH_BASE_LO/HI as va >> 8
and va >> 40.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

from kfdtrace.driver.packets import Field

__all__ = ["REGISTERS", "SH_END", "SH_START", "UCONFIG_END", "UCONFIG_START", "GFX9", "GFX10", "GFX11", "GFX12",
           "Part", "Register", "RegisterTable"]

SH_START, SH_END = 0x2C00, 0x3000  # PACKET3_SET_SH_REG_START/END (soc15d.h, nvd.h)
UCONFIG_START, UCONFIG_END = 0xC000, 0xC400  # PACKET3_SET_UCONFIG_REG_START/END


@dataclass(frozen=True)
class Part:
    """The register holds bits [shift, shift+width) of the GPU address named `address`."""

    address: str
    shift: int
    width: int


@dataclass(frozen=True)
class Register:
    """One register: its absolute dword offset, its bit fields, and the address part it holds, if any."""

    name: str
    offset: int
    fields: tuple[Field, ...] = ()
    part: Part | None = None

    def field(self, name: str) -> Field:
        """The bit field called `name`; KeyError naming the register's fields if there is none."""
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no field {name!r} (fields: {', '.join(f.name for f in self.fields)})")

    def encode(self, **values: int) -> int:
        """The register value with these fields set (others 0). A field value that does not fit is an error."""
        word = 0
        for name, v in values.items():
            f = self.field(name)
            if not isinstance(v, int) or v & ~f.mask:
                raise ValueError(f"{self.name}.{name}={v!r} does not fit the field's {f.width} bits")
            word |= v << f.shift
        return word

    def decode(self, value: int) -> dict[str, int]:
        """The register value's fields by name."""
        return {f.name: (value >> f.shift) & f.mask for f in self.fields}


def _fields(*spec: tuple[str, int, int]) -> tuple[Field, ...]:
    """(name, low bit, width) triples as one-dword Fields."""
    return tuple(Field(name, 0, shift, width) for name, shift, width in spec)


def _bits(*spec: tuple[str, int]) -> tuple[tuple[str, int, int], ...]:
    """(name, bit) pairs as one-bit (name, low bit, width) triples."""
    return tuple((name, bit, 1) for name, bit in spec)


class RegisterTable:
    """The registers of one dialect by name, with the SET_SH_REG / SET_UCONFIG_REG index of each."""

    def __init__(self, name: str, registers: Iterable[Register]):
        self.name = name
        self.registers: tuple[Register, ...] = tuple(sorted(registers, key=lambda r: r.offset))
        self._by_name: dict[str, Register] = {}
        by_offset: dict[int, str] = {}
        for r in self.registers:
            if r.name in self._by_name or r.offset in by_offset:
                raise ValueError(f"{name}: {r.name} ({r.offset:#x}) repeats a name or the offset of "
                                 f"{by_offset.get(r.offset, r.name)}")
            self._by_name[r.name] = r
            by_offset[r.offset] = r.name
            used = 0
            for f in r.fields:
                bits = f.mask << f.shift
                if f.dword or bits >> 32 or bits & used:
                    raise ValueError(f"{name}: {r.name}.{f.name} (bits {f.shift}..{f.shift + f.width - 1}) "
                                     f"leaves the dword or overlaps another field")
                used |= bits
        self.names: Mapping[int, str] = MappingProxyType(by_offset)  # absolute dword offset -> register name
        # SET_SH_REG / SET_UCONFIG_REG index -> register name (what the packet printer shows)
        self.sh: Mapping[int, str] = MappingProxyType(
            {o - SH_START: n for o, n in by_offset.items() if SH_START <= o < SH_END})
        self.uconfig: Mapping[int, str] = MappingProxyType(
            {o - UCONFIG_START: n for o, n in by_offset.items() if UCONFIG_START <= o < UCONFIG_END})
        # COMPUTE_USER_DATA_0..15: the user SGPRs a dispatch loads (RSRC2.USER_SGPR of them, from s0)
        self.user_data: tuple[Register, ...] = tuple(self._by_name[f"COMPUTE_USER_DATA_{i}"] for i in range(16)
                                                      if f"COMPUTE_USER_DATA_{i}" in self._by_name)
        parts: dict[str, list[Register]] = {}
        for r in self.registers:
            if r.part is not None:
                parts.setdefault(r.part.address, []).append(r)
        # address name -> the registers holding its parts, low bits first
        self.addresses: Mapping[str, tuple[Register, ...]] = MappingProxyType(
            {a: tuple(sorted(rs, key=lambda r: r.part.shift)) for a, rs in parts.items()})

    def __repr__(self) -> str:
        return f"<RegisterTable {self.name}: {len(self.registers)} registers>"

    def __getitem__(self, name: str) -> Register:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"register table {self.name} has no register {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self):
        return iter(self.registers)

    def sh_index(self, name: str) -> int:
        """The register's SET_SH_REG index (offset - 0x2C00); ValueError if it is not an SH register."""
        r = self[name]
        if not SH_START <= r.offset < SH_END:
            raise ValueError(f"{name} ({r.offset:#x}) is not an SH register (0x{SH_START:x}..0x{SH_END:x})")
        return r.offset - SH_START

    def uconfig_index(self, name: str) -> int:
        """The register's SET_UCONFIG_REG index (offset - 0xC000); ValueError if it is not a UCONFIG register."""
        r = self[name]
        if not UCONFIG_START <= r.offset < UCONFIG_END:
            raise ValueError(f"{name} ({r.offset:#x}) is not a UCONFIG register "
                             f"(0x{UCONFIG_START:x}..0x{UCONFIG_END:x})")
        return r.offset - UCONFIG_START

    def split(self, address: str, value: int) -> dict[str, int]:
        """The register values that hold GPU address `value` of the address called `address`."""
        regs = self._parts(address)
        top = max(r.part.shift + r.part.width for r in regs)
        low = min(r.part.shift for r in regs)
        if value < 0 or value >> top or value & ((1 << low) - 1):
            raise ValueError(f"{address}={value:#x} is not a {top}-bit address aligned to {1 << low} bytes")
        return {r.name: (value >> r.part.shift) & ((1 << r.part.width) - 1) for r in regs}

    def join(self, address: str, values: Mapping[str, int]) -> int:
        """The GPU address its registers' `values` hold (every part must be given)."""
        regs = self._parts(address)
        missing = [r.name for r in regs if r.name not in values]
        if missing:
            raise KeyError(f"{address} needs {', '.join(missing)} as well")
        return sum((values[r.name] & ((1 << r.part.width) - 1)) << r.part.shift for r in regs)

    def _parts(self, address: str) -> tuple[Register, ...]:
        try:
            return self.addresses[address]
        except KeyError:
            raise KeyError(f"register table {self.name} has no address {address!r} "
                           f"(addresses: {', '.join(self.addresses)})") from None

    def derive(self, name: str, *, fields: Mapping[str, Iterable[tuple[str, int, int]]] | None = None,
               drop: Mapping[str, Iterable[str]] | None = None, offsets: Mapping[str, int] | None = None,
               add: Iterable[Register] = (), remove: Iterable[str] = ()) -> RegisterTable:
        """A new table from this one: per-register fields added or replaced (name, low bit, width), fields
        dropped, offsets moved, whole registers added (replacing same-named ones) or removed."""
        fields, drop, offsets = fields or {}, drop or {}, offsets or {}
        for table in (fields, drop, offsets):
            for rname in table:
                self[rname]  # a typo in a generation's changes is an error, not a silent no-op
        gone, added = set(remove), {r.name: r for r in add}
        out = []
        for r in self.registers:
            if r.name in gone:
                continue
            if r.name in added:
                out.append(added.pop(r.name))
                continue
            new = {f.name: f for f in _fields(*fields.get(r.name, ()))}
            kept = [new.pop(f.name, f) for f in r.fields if f.name not in set(drop.get(r.name, ()))]
            out.append(replace(r, offset=offsets.get(r.name, r.offset), fields=(*kept, *new.values())))
        return RegisterTable(name, (*out, *added.values()))


# --- gfx9: gc_9_4_3 (CDNA3; gfx90a's gc_9_4_2 places these SH registers the same) ------------------------
_PGM = "COMPUTE_PGM"  # the kernel's code entry address (descriptor + kernel_code_entry_byte_offset)
_SCRATCH = "COMPUTE_DISPATCH_SCRATCH_BASE"  # architected flat scratch base (gfx942, gfx11, gfx12)
_NUM_THREAD = _fields(("num_thread_full", 0, 16), ("num_thread_partial", 16, 16))

_GFX9 = (
    Register("COMPUTE_DISPATCH_INITIATOR", 0x2E00, _fields(*_bits(
        ("compute_shader_en", 0), ("partial_tg_en", 1), ("force_start_at_000", 2), ("ordered_append_enbl", 3),
        ("ordered_append_mode", 4), ("use_thread_dimensions", 5), ("order_mode", 6), ("scalar_l1_inv_vol", 10),
        ("vector_l1_inv_vol", 11), ("restore", 14)))),
    Register("COMPUTE_DIM_X", 0x2E01), Register("COMPUTE_DIM_Y", 0x2E02), Register("COMPUTE_DIM_Z", 0x2E03),
    Register("COMPUTE_START_X", 0x2E04), Register("COMPUTE_START_Y", 0x2E05), Register("COMPUTE_START_Z", 0x2E06),
    Register("COMPUTE_NUM_THREAD_X", 0x2E07, _NUM_THREAD), Register("COMPUTE_NUM_THREAD_Y", 0x2E08, _NUM_THREAD),
    Register("COMPUTE_NUM_THREAD_Z", 0x2E09, _NUM_THREAD),
    Register("COMPUTE_PIPELINESTAT_ENABLE", 0x2E0A), Register("COMPUTE_PERFCOUNT_ENABLE", 0x2E0B),
    # The code address >> 8: PGM_LO holds bits 39:8, PGM_HI (DATA, 8 bits) bits 47:40.
    Register("COMPUTE_PGM_LO", 0x2E0C, part=Part(_PGM, 8, 32)),
    Register("COMPUTE_PGM_HI", 0x2E0D, _fields(("data", 0, 8)), Part(_PGM, 40, 8)),
    Register("COMPUTE_DISPATCH_PKT_ADDR_LO", 0x2E0E), Register("COMPUTE_DISPATCH_PKT_ADDR_HI", 0x2E0F),
    Register("COMPUTE_DISPATCH_SCRATCH_BASE_LO", 0x2E10, part=Part(_SCRATCH, 8, 32)),
    Register("COMPUTE_DISPATCH_SCRATCH_BASE_HI", 0x2E11, _fields(("data", 0, 8)), Part(_SCRATCH, 40, 8)),
    Register("COMPUTE_PGM_RSRC1", 0x2E12, _fields(
        ("vgprs", 0, 6), ("sgprs", 6, 4), ("priority", 10, 2), ("float_mode", 12, 8),
        *_bits(("priv", 20), ("dx10_clamp", 21), ("debug_mode", 22), ("ieee_mode", 23), ("bulky", 24),
               ("cdbg_user", 25), ("fp16_ovfl", 26))),
    ),
    Register("COMPUTE_PGM_RSRC2", 0x2E13, _fields(
        ("scratch_en", 0, 1), ("user_sgpr", 1, 5), ("trap_present", 6, 1), ("tgid_x_en", 7, 1), ("tgid_y_en", 8, 1),
        ("tgid_z_en", 9, 1), ("tg_size_en", 10, 1), ("tidig_comp_cnt", 11, 2), ("excp_en_msb", 13, 2),
        ("lds_size", 15, 9), ("excp_en", 24, 7), ("skip_usgpr0", 31, 1)),
    ),
    Register("COMPUTE_VMID", 0x2E14),
    Register("COMPUTE_RESOURCE_LIMITS", 0x2E15, _fields(
        ("waves_per_sh", 0, 10), ("tg_per_cu", 12, 4), ("lock_threshold", 16, 6), ("simd_dest_cntl", 22, 1),
        ("force_simd_dist", 23, 1), ("cu_group_count", 24, 3), ("simd_disable", 27, 4)),
    ),
    Register("COMPUTE_STATIC_THREAD_MGMT_SE0", 0x2E16), Register("COMPUTE_STATIC_THREAD_MGMT_SE1", 0x2E17),
    # WAVESIZE is in 1 KiB units on gfx9, 256 B on gfx11+ (tinygrad ops_amd.py); its width grows per generation.
    Register("COMPUTE_TMPRING_SIZE", 0x2E18, _fields(("waves", 0, 12), ("wavesize", 12, 13))),
    Register("COMPUTE_STATIC_THREAD_MGMT_SE2", 0x2E19), Register("COMPUTE_STATIC_THREAD_MGMT_SE3", 0x2E1A),
    Register("COMPUTE_RESTART_X", 0x2E1B), Register("COMPUTE_RESTART_Y", 0x2E1C),
    Register("COMPUTE_RESTART_Z", 0x2E1D), Register("COMPUTE_THREAD_TRACE_ENABLE", 0x2E1E),
    Register("COMPUTE_MISC_RESERVED", 0x2E1F), Register("COMPUTE_DISPATCH_ID", 0x2E20),
    Register("COMPUTE_THREADGROUP_ID", 0x2E21), Register("COMPUTE_SHADER_CHKSUM", 0x2E2C),
    # gfx9 puts RSRC3 at 0x2E2D; gfx10+ moved it to 0x2E28.
    Register("COMPUTE_PGM_RSRC3", 0x2E2D, _fields(
        ("accum_offset", 0, 6), ("trap_on_start", 10, 1), ("trap_on_end", 11, 1), ("tg_split", 16, 1))),
    *(Register(f"COMPUTE_USER_DATA_{i}", 0x2E40 + i) for i in range(16)),
    Register("COMPUTE_DISPATCH_END", 0x2E7E), Register("COMPUTE_NOWHERE", 0x2E7F),
    Register("GRBM_GFX_INDEX", 0xC200, _fields(
        ("instance_index", 0, 8), ("sh_index", 8, 8), ("se_index", 16, 8), ("sh_broadcast_writes", 29, 1),
        ("instance_broadcast_writes", 30, 1), ("se_broadcast_writes", 31, 1))),
)

GFX9 = RegisterTable("gfx9", _GFX9)

# --- gfx10.3: gc_10_3_0 (fields as PAL's gfx10 layouts) -----------------------------------------------------
GFX10 = GFX9.derive(
    "gfx10",
    fields={
        "COMPUTE_DISPATCH_INITIATOR": _bits(("tunnel_enable", 13), ("cs_w32_en", 15)),  # CS_W32_EN: wave32
        "COMPUTE_PGM_RSRC1": _bits(("wgp_mode", 29), ("mem_ordered", 30), ("fwd_progress", 31)),
        "COMPUTE_PGM_RSRC3": [("shared_vgpr_cnt", 0, 4)],
        "GRBM_GFX_INDEX": [("sa_index", 8, 8), ("sa_broadcast_writes", 29, 1)],
    },
    drop={
        "COMPUTE_PGM_RSRC2": ["skip_usgpr0"],
        "COMPUTE_RESOURCE_LIMITS": ["simd_disable"],
        "COMPUTE_PGM_RSRC3": ["accum_offset", "trap_on_start", "trap_on_end", "tg_split"],
        "GRBM_GFX_INDEX": ["sh_index", "sh_broadcast_writes"],
    },
    offsets={"COMPUTE_PGM_RSRC3": 0x2E28, "COMPUTE_SHADER_CHKSUM": 0x2E2A},
    add=[Register("COMPUTE_REQ_CTRL", 0x2E22),
         *(Register(f"COMPUTE_USER_ACCUM_{i}", 0x2E24 + i) for i in range(4)),
         Register("COMPUTE_DISPATCH_TUNNEL", 0x2E7D)],
)

# --- gfx11: gc_11_0_0 ----------------------------------------------------------------------------------------
GFX11 = GFX10.derive(
    "gfx11",
    fields={
        "COMPUTE_DISPATCH_INITIATOR": _bits(("amp_shader_en", 16), ("disable_disp_prempt_en", 17)),
        "COMPUTE_PGM_RSRC3": [("inst_pref_size", 4, 6), *_bits(("trap_on_start", 10), ("trap_on_end", 11),
                                                                ("image_op", 31))],
        "COMPUTE_TMPRING_SIZE": [("wavesize", 12, 15)],
    },
    drop={"COMPUTE_PGM_RSRC1": ["debug_mode", "cdbg_user"]},
    add=[Register("COMPUTE_DDID_INDEX", 0x2E29),
         Register("COMPUTE_DISPATCH_INTERLEAVE", 0x2E2F, _fields(("interleave", 0, 10)))],
)

# --- gfx12: gc_12_0_0 ----------------------------------------------------------------------------------------
GFX12 = GFX11.derive(
    "gfx12",
    fields={
        "COMPUTE_DISPATCH_INITIATOR": [*_bits(("ping_pong_en", 12), ("interleave_2d_en", 18)),
                                       ("ttrace_queue_id", 29, 3)],
        "COMPUTE_NUM_THREAD_X": [("num_thread_full", 0, 13), ("interleave_bits_x", 13, 3)],
        "COMPUTE_NUM_THREAD_Y": [("num_thread_full", 0, 13), ("interleave_bits_y", 13, 3)],
        "COMPUTE_PGM_RSRC1": _bits(("wg_rr_en", 21), ("debug_mode", 22), ("disable_perf", 23), ("cdbg_user", 25)),
        # bit 6 was TRAP_PRESENT: DYNAMIC_VGPR on gfx12
        "COMPUTE_PGM_RSRC2": _bits(("dynamic_vgpr", 6), ("wgp_takeover", 31)),
        "COMPUTE_PGM_RSRC3": [("inst_pref_size", 4, 8), ("glg_en", 13, 1)],
        "COMPUTE_TMPRING_SIZE": [("wavesize", 12, 18)],
        "COMPUTE_DISPATCH_INTERLEAVE": [("interleave_1d", 0, 10), ("interleave_2d_x_size", 16, 4),
                                        ("interleave_2d_y_size", 24, 4)],
        "GRBM_GFX_INDEX": [("instance_index", 0, 7), ("sa_index", 8, 2), ("se_index", 16, 4)],
    },
    drop={
        "COMPUTE_PGM_RSRC1": ["dx10_clamp", "ieee_mode"],
        "COMPUTE_PGM_RSRC2": ["trap_present"],
        "COMPUTE_PGM_RSRC3": ["trap_on_start", "trap_on_end"],
        "COMPUTE_DISPATCH_INTERLEAVE": ["interleave"],
    },
)

REGISTERS: dict[str, RegisterTable] = {t.name: t for t in (GFX9, GFX10, GFX11, GFX12)}
