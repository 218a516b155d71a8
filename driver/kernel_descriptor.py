"""The 64-byte AMDHSA kernel descriptor (symbol `<kernel>.kd`): its words, their bit fields per family, and the
facts a dispatcher derives from them.

Source: LLVM AMDGPUUsage, "Code Object V3 Kernel Descriptor" and the compute_pgm_rsrc1/2/3 tables
(llvm/llvm-project@001388cf:llvm/docs/AMDGPUUsage.rst), cross-checked field by field against llvm-objdump-19's
disassembly of the fixtures' descriptors (tests/test_code_object.py).

Bit fields are named as the assembler's `.amdhsa_` directives name them (`dx10_clamp` is `.amdhsa_dx10_clamp`),
so the disassembler's output reads against them directly; fields without a directive keep AMDGPUUsage's name in
lower case. One `Layout` per family generation lists the fields of each word; the later generations are derived
from earlier ones by their deltas.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from kfdtrace.driver.code_object_errors import BadCodeObject
from kfdtrace.driver.families import Family

__all__ = ["DESCRIPTOR_SIZE", "LAYOUTS", "USER_SGPRS", "Bits", "KernelDescriptor", "Layout", "layout_for"]

DESCRIPTOR_SIZE = 64
# group_segment_fixed_size, private_segment_fixed_size, kernarg_size, reserved, kernel_code_entry_byte_offset
# (signed), 20 reserved bytes, rsrc3, rsrc1, rsrc2, kernel_code_properties (u16), kernarg_preload (u16), reserved.
_STRUCT = struct.Struct("<IIIIq20sIIIHH4s")
WORDS = ("compute_pgm_rsrc1", "compute_pgm_rsrc2", "compute_pgm_rsrc3", "kernel_code_properties", "kernarg_preload")
_WORD_BITS = {"kernel_code_properties": 16, "kernarg_preload": 16}


@dataclass(frozen=True)
class Bits:
    """Bits [lo, lo+width) of one descriptor word."""

    name: str
    lo: int
    width: int = 1

    def get(self, word: int) -> int:
        return (word >> self.lo) & ((1 << self.width) - 1)


@dataclass(frozen=True, eq=False)
class Layout:
    """The descriptor's bit fields on one family generation, and the granularities its counts are encoded in."""

    name: str
    words: Mapping[str, tuple[Bits, ...]]
    # "Architected flat scratch" (AMDGPUUsage processor table): the CP sets FLAT_SCRATCH itself; there is no
    # private segment buffer, flat scratch init or wave scratch offset SGPR.
    architected_flat_scratch: bool
    vgpr_granule: Mapping[int, int]  # wave size -> VGPRs per GRANULATED_WORKITEM_VGPR_COUNT step
    sgpr_granule: int = 8  # LLVM's SGPR encoding granule; the field is ignored by the hardware on gfx10+
    lds_granule: int = 512  # bytes per COMPUTE_PGM_RSRC2.LDS_SIZE step (GFX7-GFX12 but gfx950)
    # GFX12's architected SGPRs: the workgroup ids are in TTMP9 (X) and TTMP7 (Y b15:0, Z b31:16), not in system
    # SGPRs (LLVM AMDGPULegalizerInfo loadInputValue; llvm/llvm-project#76140 "Architected SGPRs for GFX12")
    architected_sgprs: bool = False
    field_word: Mapping[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        owner: dict[str, str] = {}
        for word, fields in self.words.items():
            if word not in WORDS:
                raise ValueError(f"{self.name}: unknown descriptor word {word!r}")
            used = 0
            for f in fields:
                bits = ((1 << f.width) - 1) << f.lo
                if f.lo + f.width > _WORD_BITS.get(word, 32) or used & bits:
                    raise ValueError(f"{self.name}.{word}.{f.name}: bits {f.lo}..{f.lo + f.width - 1} overlap "
                                     f"or leave the word")
                if f.name in owner:
                    raise ValueError(f"{self.name}: field {f.name!r} in both {owner[f.name]} and {word}")
                used |= bits
                owner[f.name] = word
        object.__setattr__(self, "words", MappingProxyType({w: tuple(self.words.get(w, ())) for w in WORDS}))
        object.__setattr__(self, "field_word", MappingProxyType(owner))

    def derive(self, name: str, *, add: Mapping[str, Iterable[Bits]] = MappingProxyType({}),
               drop: Iterable[str] = (), **changes: object) -> Layout:
        """A later generation: `add` fields per word (replacing same-named ones), `drop` names removed."""
        dropped = set(drop)
        words = {}
        for word in WORDS:
            new = {f.name: f for f in add.get(word, ())}
            kept = [new.pop(f.name, f) for f in self.words[word] if f.name not in dropped]
            words[word] = (*kept, *new.values())
        return replace(self, name=name, words=words, **changes)

    def value(self, name: str, word: str, raw: int) -> int | None:
        """Field `name` of descriptor word `word` whose bits are `raw`; None when the layout has no such field."""
        return next((f.get(raw) for f in self.words[word] if f.name == name), None)

    def decode(self, values: Mapping[str, int]) -> dict[str, int]:
        """Every named field of the words in `values` (word name -> raw value)."""
        return {f.name: f.get(values[word]) for word in WORDS for f in self.words[word]}


# --- the generations ---------------------------------------------------------------------------------------
_RSRC1_GFX9 = (
    Bits("granulated_workitem_vgpr_count", 0, 6),
    Bits("granulated_wavefront_sgpr_count", 6, 4),  # gfx10+: "reserved, must be 0", yet clang-19 fills it
    Bits("priority", 10, 2),
    Bits("float_round_mode_32", 12, 2),
    Bits("float_round_mode_16_64", 14, 2),
    Bits("float_denorm_mode_32", 16, 2),
    Bits("float_denorm_mode_16_64", 18, 2),
    Bits("priv", 20),
    Bits("dx10_clamp", 21),
    Bits("debug_mode", 22),
    Bits("ieee_mode", 23),
    Bits("bulky", 24),
    Bits("cdbg_user", 25),
    Bits("fp16_overflow", 26),
)
_RSRC2 = (
    # The same bit enables the wave's scratch offset SGPR (absolute flat scratch) or FLAT_SCRATCH (architected);
    # the assembler names it by which.
    Bits("system_sgpr_private_segment_wavefront_offset", 0),
    Bits("user_sgpr_count", 1, 5),
    Bits("enable_trap_handler", 6),
    Bits("system_sgpr_workgroup_id_x", 7),
    Bits("system_sgpr_workgroup_id_y", 8),
    Bits("system_sgpr_workgroup_id_z", 9),
    Bits("system_sgpr_workgroup_info", 10),
    Bits("system_vgpr_workitem_id", 11, 2),
    Bits("enable_exception_address_watch", 13),
    Bits("enable_exception_memory", 14),
    Bits("granulated_lds_size", 15, 9),  # must be 0: the CP takes the size from the dispatch
    Bits("exception_fp_ieee_invalid_op", 24),
    Bits("exception_fp_denorm_src", 25),
    Bits("exception_fp_ieee_div_zero", 26),
    Bits("exception_fp_ieee_overflow", 27),
    Bits("exception_fp_ieee_underflow", 28),
    Bits("exception_fp_ieee_inexact", 29),
    Bits("exception_int_div_zero", 30),
)
_KERNEL_CODE_PROPERTIES = (
    Bits("user_sgpr_private_segment_buffer", 0),
    Bits("user_sgpr_dispatch_ptr", 1),
    Bits("user_sgpr_queue_ptr", 2),
    Bits("user_sgpr_kernarg_segment_ptr", 3),
    Bits("user_sgpr_dispatch_id", 4),
    Bits("user_sgpr_flat_scratch_init", 5),
    Bits("user_sgpr_private_segment_size", 6),
    Bits("uses_dynamic_stack", 11),
)
# The delta of architected flat scratch: no buffer V#, no flat scratch init, and RSRC2 bit 0 renamed.
_ABSOLUTE_SCRATCH_ONLY = ("system_sgpr_private_segment_wavefront_offset", "user_sgpr_private_segment_buffer",
                          "user_sgpr_flat_scratch_init")
_ENABLE_PRIVATE_SEGMENT = Bits("enable_private_segment", 0)

GFX90A = Layout(
    "gfx90a",
    {
        "compute_pgm_rsrc1": _RSRC1_GFX9,
        "compute_pgm_rsrc2": _RSRC2,
        # .amdhsa_accum_offset is (granulated_accum_offset + 1) * 4
        "compute_pgm_rsrc3": (Bits("granulated_accum_offset", 0, 6), Bits("tg_split", 16)),
        "kernel_code_properties": _KERNEL_CODE_PROPERTIES,
        "kernarg_preload": (Bits("kernarg_preload_spec_length", 0, 7), Bits("kernarg_preload_spec_offset", 7, 9)),
    },
    architected_flat_scratch=False,
    vgpr_granule=MappingProxyType({64: 8}),  # unified arch+acc VGPRs, up to 512
)
GFX942 = GFX90A.derive("gfx942", drop=_ABSOLUTE_SCRATCH_ONLY, add={"compute_pgm_rsrc2": (_ENABLE_PRIVATE_SEGMENT,)},
                       architected_flat_scratch=True)
GFX10 = GFX90A.derive(
    "gfx10",
    add={
        "compute_pgm_rsrc1": (Bits("workgroup_processor_mode", 29), Bits("memory_ordered", 30),
                              Bits("forward_progress", 31)),
        "compute_pgm_rsrc3": (Bits("shared_vgpr_count", 0, 4),),
        "kernel_code_properties": (Bits("wavefront_size32", 10),),
    },
    drop=("granulated_accum_offset", "tg_split", "kernarg_preload_spec_length", "kernarg_preload_spec_offset"),
    vgpr_granule=MappingProxyType({64: 4, 32: 8}),
)
GFX11 = GFX10.derive(
    "gfx11",
    add={"compute_pgm_rsrc2": (_ENABLE_PRIVATE_SEGMENT,),
         "compute_pgm_rsrc3": (Bits("inst_pref_size", 4, 6), Bits("trap_on_start", 10), Bits("trap_on_end", 11),
                               Bits("image_op", 31))},
    drop=_ABSOLUTE_SCRATCH_ONLY,
    architected_flat_scratch=True,
)
GFX12 = GFX11.derive(
    "gfx12",
    add={
        "compute_pgm_rsrc1": (Bits("round_robin_scheduling", 21), Bits("disable_perf", 23)),  # WG_RR_EN
        "compute_pgm_rsrc2": (Bits("enable_dynamic_vgpr", 6), Bits("wgp_takeover", 31)),
        "compute_pgm_rsrc3": (Bits("inst_pref_size", 4, 8), Bits("glg_en", 13)),
    },
    drop=("dx10_clamp", "ieee_mode", "enable_trap_handler", "shared_vgpr_count", "trap_on_start", "trap_on_end"),
    architected_sgprs=True,
)
LAYOUTS: Mapping[str, Layout] = MappingProxyType(
    {"CDNA2": GFX90A, "CDNA3": GFX942, "RDNA2": GFX10, "RDNA3": GFX11, "RDNA4": GFX12})


def accum_offset(granulated: int) -> int:
    """The first AccVGPR's number in the unified register file, from GRANULATED_ACCUM_OFFSET (.amdhsa_accum_offset
    is (granulated + 1) * 4)."""
    return (granulated + 1) * 4


def layout_for(family: Family) -> Layout:
    """The descriptor layout of a family."""
    return LAYOUTS[family.name]


# User SGPRs in the order the CP loads them, dense from s0 (AMDGPUUsage "Initial Kernel Execution State"):
# (name, enable field, SGPRs). Preloaded kernargs come after flat scratch init, their count from the descriptor.
USER_SGPRS = (
    ("private_segment_buffer", "user_sgpr_private_segment_buffer", 4),
    ("dispatch_ptr", "user_sgpr_dispatch_ptr", 2),
    ("queue_ptr", "user_sgpr_queue_ptr", 2),
    ("kernarg_segment_ptr", "user_sgpr_kernarg_segment_ptr", 2),
    ("dispatch_id", "user_sgpr_dispatch_id", 2),
    ("flat_scratch_init", "user_sgpr_flat_scratch_init", 2),
    ("kernarg_preload", "kernarg_preload_spec_length", None),
    ("private_segment_size", "user_sgpr_private_segment_size", 1),
)
MAX_USER_SGPRS = 16  # "only the first 16 are actually initialized"
# System SGPRs after the user SGPRs: (name, enable field).
_SYSTEM_SGPRS = (
    ("workgroup_id_x", "system_sgpr_workgroup_id_x"),
    ("workgroup_id_y", "system_sgpr_workgroup_id_y"),
    ("workgroup_id_z", "system_sgpr_workgroup_id_z"),
    ("workgroup_info", "system_sgpr_workgroup_info"),
    ("private_segment_wavefront_offset", "system_sgpr_private_segment_wavefront_offset"),
)


@dataclass(frozen=True)
class KernelDescriptor:
    """A decoded kernel descriptor: the raw words, every named field, and what a dispatcher derives from them."""

    layout: Layout
    group_segment_fixed_size: int  # static LDS bytes per work-group
    private_segment_fixed_size: int  # scratch bytes per work-item
    kernarg_size: int
    kernel_code_entry_byte_offset: int  # from the descriptor's own address to the entry point (may be < 0)
    compute_pgm_rsrc1: int
    compute_pgm_rsrc2: int
    compute_pgm_rsrc3: int
    kernel_code_properties: int
    kernarg_preload: int
    fields: Mapping[str, int]  # every bit field of the layout, by name

    @classmethod
    def decode(cls, raw: bytes, layout: Layout, where: str = "kernel descriptor") -> KernelDescriptor:
        """Decode 64 bytes; BadCodeObject naming `where` if the size or a reserved byte is wrong."""
        if len(raw) != DESCRIPTOR_SIZE:
            raise BadCodeObject(f"{where}: {len(raw)} bytes, a kernel descriptor has {DESCRIPTOR_SIZE}")
        (group, private, kernarg, res0, entry, res1, rsrc3, rsrc1, rsrc2, props, preload,
         res2) = _STRUCT.unpack(raw)
        if res0 or any(res1) or any(res2):
            raise BadCodeObject(f"{where}: reserved bytes are not zero (not a kernel descriptor?)")
        words = {"compute_pgm_rsrc1": rsrc1, "compute_pgm_rsrc2": rsrc2, "compute_pgm_rsrc3": rsrc3,
                 "kernel_code_properties": props, "kernarg_preload": preload}
        return cls(layout, group, private, kernarg, entry, rsrc1, rsrc2, rsrc3, props, preload,
                   MappingProxyType(layout.decode(words)))

    def __getattr__(self, name: str) -> int:
        """Bit fields read as attributes: `kd.dx10_clamp`."""
        try:
            return object.__getattribute__(self, "fields")[name]
        except KeyError:
            raise AttributeError(f"the {self.layout.name} kernel descriptor has no field {name!r}") from None

    # --- derived facts ------------------------------------------------------------------------------------
    @property
    def wave_size(self) -> int:
        """32 when ENABLE_WAVEFRONT_SIZE32 is set (gfx10+), else 64."""
        return 32 if self.fields.get("wavefront_size32") else 64

    @property
    def next_free_vgpr(self) -> int:
        """VGPRs per work-item the descriptor allocates (.amdhsa_next_free_vgpr as the disassembler derives it)."""
        return (self.fields["granulated_workitem_vgpr_count"] + 1) * self.layout.vgpr_granule[self.wave_size]

    @property
    def next_free_sgpr(self) -> int:
        """SGPRs per wave the RSRC1 field encodes; only gfx9 allocates by it (gfx10+ always gives 128)."""
        return (self.fields["granulated_wavefront_sgpr_count"] + 1) * self.layout.sgpr_granule

    @property
    def accum_offset(self) -> int | None:
        """First AccVGPR in the unified register file (gfx90a/gfx942), else None."""
        g = self.fields.get("granulated_accum_offset")
        return None if g is None else accum_offset(g)

    @property
    def enable_private_segment(self) -> bool:
        """The kernel uses scratch: the CP must set up the private segment (RSRC2 bit 0)."""
        return bool(self.compute_pgm_rsrc2 & 1)

    @property
    def user_sgpr_count(self) -> int:
        """USER_SGPR_COUNT: how many user SGPRs the CP loads (at least those enabled)."""
        return self.fields["user_sgpr_count"]

    @property
    def system_sgpr_start(self) -> int:
        """The first system SGPR: s[USER_SGPR_COUNT], which may lie past the enabled user SGPRs. clang-19 pads
        USER_SGPR_COUNT on gfx11 wave32 kernels so that user + system SGPRs reach 16 (a kernel with two user SGPRs
        and a work-group id X reads that id from s15), so count from this, never from `user_sgprs`."""
        return self.fields["user_sgpr_count"]

    @property
    def user_sgprs(self) -> tuple[tuple[str, int], ...]:
        """The enabled user SGPRs in load order as (name, count), dense from s0."""
        out = []
        for name, enable, count in USER_SGPRS:
            n = self.fields.get(enable, 0)
            if count is None:
                count = n  # preloaded kernarg dwords
            if n:
                out.append((name, count))
        return tuple(out)

    @property
    def system_sgprs(self) -> tuple[str, ...]:
        """The system SGPRs the SPI sets after the user SGPRs, in order."""
        return tuple(name for name, enable in _SYSTEM_SGPRS if self.fields.get(enable)
                     and not (self.layout.architected_sgprs and name.startswith("workgroup_id")))

    @property
    def workgroup_id_enables(self) -> tuple[bool, bool, bool]:
        """Which of the work-group id X, Y, Z SGPRs the kernel receives."""
        f = self.fields
        return (bool(f["system_sgpr_workgroup_id_x"]), bool(f["system_sgpr_workgroup_id_y"]),
                bool(f["system_sgpr_workgroup_id_z"]))

    @property
    def workitem_id_dims(self) -> int:
        """How many work-item id dimensions the VGPRs receive: 1 (X), 2 (X, Y) or 3 (X, Y, Z)."""
        return min(self.fields["system_vgpr_workitem_id"], 2) + 1

    def lds_size_field(self, group_segment_bytes: int) -> int:
        """RSRC2.LDS_SIZE for a dispatch using `group_segment_bytes` of LDS (static + dynamic), in granules."""
        return -(-group_segment_bytes // self.layout.lds_granule)
