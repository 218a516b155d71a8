"""PM4 type-3 packets of the compute micro engine (MEC), one `Pm4Dialect` per GFX generation.

| dialect | GPUs                  | kernel packet header | compute register table    |
|---------|-----------------------|----------------------|---------------------------|
| gfx9    | CDNA2 gfx90a, gfx942  | soc15d.h             | registers.GFX9 (gc_9_4_3) |
| gfx10   | RDNA2 gfx103x         | nvd.h                | registers.GFX10           |
| gfx11   | RDNA3 gfx110x         | nvd.h                | registers.GFX11           |
| gfx12   | RDNA4 gfx120x         | nvd.h                | registers.GFX12           |

Header (`PACKET3(op, n)`, soc15d.h / nvd.h): type 3 in bits 31:30, `count` = dwords after the header - 1 in
bits 29:16, opcode in bits 15:8; `PACKET3_COMPUTE` sets bit 1 (`shader_type`), bit 0 is `predicate`. The count
is every packet's tail count: a fixed-size packet of S dwords has `Tail(count, 2 - S)`, so a build sets it and
a decode follows it (dwords past the fixed part are kept as payload), and the printer leaves it out.

Field names follow the kernel and PAL headers, shortened (addr_lo + addr_hi -> `addr`). Every field that can
hold a GPU memory address is an `Addr`; where a select decides whether it does (WAIT_REG_MEM polls a register
or memory, COPY_DATA reads and writes registers, memory or immediates), the address is conditional (`when`), so a
relocator moves exactly the memory addresses and leaves register offsets and immediates alone. Meanings are
tagged as in sdma.py: RELEASE_MEM's address is a completion point written with `data` (`value=`) whose interrupt
carries the KFD event id in `int_ctxid` (`event=`); WAIT_REG_MEM polls memory (`polled=`); INDIRECT_BUFFER
holds `ib_size` dwords of packets (`indirect=`); PRED_EXEC governs the next `exec_count` dwords (`skips=`).
ACQUIRE_MEM's `coher_size` saturates: all ones is "all of memory" whatever its width (the kernel's and tinygrad's
acquires), so a translation to a narrower or wider form gives the target's all ones.

Cache control (`CACHE`, one table for every dialect; each Pm4Dialect's `cache`). gfx9 (soc15d.h) asks for cache
work with TC action bits -- CP_COHER_CNTL in ACQUIRE_MEM, the same bits as EOP *_action_ena in RELEASE_MEM --
that act only in a few combinations (Mesa ac_cmdbuf.c: "These are the only allowed combinations": TC|TC_WB
write back and invalidate L2, TC_WB|TC_NC write back L2, TC|TC_MD metadata, TCL1 the vector L1, ...);
gfx10-12 (nvd.h) use orthogonal GCR bits (GL2_WB, GL2_INV, GLM_*, GLV_INV, GL1_INV, GLK_*, GLI_INV). The table
gives, per dialect and packet, which field values ask which generation-independent action (`Cache`), each row
citing its source: PAL gfx9CmdUtil (Gfx9TcCacheOpConversionTable, the TC bits of each TcCacheOp, and
Gfx10CalcAcquireMemGcrCntl, the GCR bits of the same TcCacheOp), Mesa's barrier code (gfx9 and gfx10+ paths
of ac_cmdbuf.c / si_barrier.c / radv_cs.c) and the kernel's emit_mem_sync, whose gfx9 and gfx10 forms
(gfx_v9_0.c, gfx_v10_0.c, one patch) ask the same six actions. The translator reads the actions a recorded
packet asks and writes them with the target's rows, refusing a set bit no row covers and an action the
target cannot ask exactly. Cache policies (`cache_policy` LRU/STREAM on gfx9, NOA/BYPASS added on gfx10;
gfx12's `temporal` RT/NT/HT/LU, PAL's MEC packet enums) are rows too: 0 is the default on every side, a
non-zero policy is carried only to a dialect with a row of the same name (no document equates a gfx12 temporal
hint with an older policy, so those are refused). gfx12 hardware ignores GL1 and GLM (Mesa sets them only
before gfx12; the kernel's gfx12 emit_fence dropped them, "hw ignores them"); the bits exist in its packets, so
gfx12 keeps gfx11's GCR rows (the driver's packets are the same bytes on gfx10-12) and adds GLV_INV alone, Mesa's
gfx12 vector invalidate.

`DEFAULTS` are the values the driver's packets (compute_queue.py) and a replay's translation start from, and
`REQUESTS` the cache actions a packet asks unless told otherwise, written in each dialect's bits: a RELEASE_MEM
is the end-of-pipe event writing L2 back (gfx9 TC_WB|TC_NC as tinygrad's signal and the kernel's TC_WB_ONLY
fence, gfx10+ GL2_WB|SEQ as the kernel's emit_fence asks L2), so a signal asks the same on every generation.

Sources read (facts only; nothing copied):
* torvalds/linux drivers/gpu/drm/amd/amdgpu/soc15d.h (PACKET3 macros, opcodes, WRITE_DATA, WAIT_REG_MEM,
  INDIRECT_BUFFER, COPY_DATA, EVENT_WRITE, RELEASE_MEM gfx9 cache bits, ACQUIRE_MEM gfx9 7-dword layout and
  CP_COHER_CNTL bits, PRED_EXEC, SET_SH_REG fields) and nvd.h (RELEASE_MEM GCR bits, ACQUIRE_MEM GCR_CNTL bits);
  drivers/gpu/drm/amd/amdkfd/kfd_pm4_headers_ai.h (pm4_mec_release_mem: int_sel, data_sel, dst_sel, int_ctxid).
* GPUOpen-Drivers/pal@c5e80007 src/core/hw/gfxip/gfx9/chip/gfx9_plus_merged_f32_mec_pm4_packets.h (gfx10/11 MEC
  forms: ACQUIRE_MEM 8 dwords, RELEASE_MEM gfx11 wait_sync/glk_inv, DISPATCH_INDIRECT = addr_lo, addr_hi,
  initiator) and gfx12/chip/gfx12_merged_f32_mec_pm4_packets.h (gfx12 `temporal` hints); gfx9CmdUtil.cpp
  (ACQUIRE_MEM base/size in 256-byte units; coher_size_hi 8 bits on gfx10, 24 on gfx11).
* tinygrad/tinygrad@a9069c17 tinygrad/runtime/ops_amd.py (the dispatch sequence; PRED_EXEC xcc_mask << 24;
  COPY_DATA dst_sel 2) and autogen/am/pm4_nv.py (COPY_DATA sel values, ACQUIRE_MEM GCR_CNTL 19 bits).
* Cache control: GPUOpen-Drivers/pal src/core/hw/gfxip/gfx9/gfx9CmdUtil.h (Gfx9TcCacheOpConversionTable) and
  gfx9CmdUtil.cpp (Gfx10CalcAcquireMemGcrCntl: each TcCacheOp and SQ K$/I$ flag as GCR bits),
  gfx9_plus_merged_f32_mec_pm4_packets.h and gfx12_merged_f32_mec_pm4_packets.h (cache_policy and temporal
  enums); Mesa src/amd/common/ac_cmdbuf.c and radeonsi si_barrier.c / radv radv_cs.c (gfx9: the allowed TC
  combinations; gfx10+: INV_ICACHE -> GLI_INV(ALL), INV_SCACHE -> GLK_INV|GL1_INV, INV_VCACHE -> GLV_INV|GL1_INV,
  INV_L2 -> GL2_INV|GL2_WB, WB_L2 -> GL2_WB, metadata -> GLM_INV|GLM_WB, "GLM doesn't support WB alone");
  torvalds/linux gfx_v9_0.c / gfx_v10_0.c emit_mem_sync (one patch, the same sync in both spellings),
  gfx_v9_0.c emit_fence (TC_WB_ONLY: EOP_TC_NC_ACTION_EN | EOP_TC_WB_ACTION_EN), gfx_v10_0.c / gfx_v11_0.c
  emit_fence ("GLM_INV must be set with GLM_WB"), gfx_v12_0.c emit_fence (GL2_WB only).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from enum import IntEnum, StrEnum

from kfdtrace.driver import registers as regs
from kfdtrace.driver.packets import Addr, CacheControl, CacheRow, Dialect, Field, Packet, PacketDef, PacketError, Tail
from kfdtrace.driver.registers import SH_START, UCONFIG_START, RegisterTable
from kfdtrace.driver.sdma import PollFunc as WaitFunc

__all__ = ["CACHE", "DEFAULTS", "DIALECTS", "GFX9", "GFX10", "GFX11", "GFX12", "OPCODE", "REQUESTS", "TYPE", "Cache",
           "CopySel", "DataSel", "EventIndex", "EventType", "IntSel", "Opcode", "Pm4Dialect", "WaitFunc", "WriteDst",
           "header"]

TYPE = Field("type", 0, 30, 2)
OPCODE = Field("opcode", 0, 8, 8)
_HEADER = (Field("predicate", 0, 0, 1), Field("shader_type", 0, 1, 1), Field("count", 0, 16, 14))


class Opcode(IntEnum):
    """Type-3 opcodes (soc15d.h / nvd.h `PACKET3_*`)."""

    NOP = 0x10
    DISPATCH_DIRECT = 0x15
    DISPATCH_INDIRECT = 0x16
    ATOMIC_MEM = 0x1E
    PRED_EXEC = 0x23
    WRITE_DATA = 0x37
    WAIT_REG_MEM = 0x3C
    INDIRECT_BUFFER = 0x3F
    COPY_DATA = 0x40
    EVENT_WRITE = 0x46
    RELEASE_MEM = 0x49
    ACQUIRE_MEM = 0x58
    SET_SH_REG = 0x76
    SET_UCONFIG_REG = 0x79
    WAIT_REG_MEM64 = 0x93


class EventType(IntEnum):
    """EVENT_WRITE / RELEASE_MEM `event_type` values drivers use on compute queues."""

    CS_PARTIAL_FLUSH = 0x07
    CACHE_FLUSH_AND_INV_TS_EVENT = 0x14


class EventIndex(IntEnum):
    """`event_index`: 4 for *S_PARTIAL_FLUSH (EVENT_WRITE), 5 end of pipe, 6 shader done (RELEASE_MEM)."""

    OTHER = 0
    CS_PARTIAL_FLUSH = 4
    END_OF_PIPE = 5
    SHADER_DONE = 6


class DataSel(IntEnum):
    """RELEASE_MEM `data_sel`: what is written at `addr` (kfd_pm4_headers_ai.h; 7 from gfx10.3, PAL)."""

    NONE = 0
    DATA32 = 1
    DATA64 = 2
    GPU_CLOCK = 3
    SYSTEM_CLOCK = 4
    GDS = 5
    ATOMIC_ADD32 = 7


class IntSel(IntEnum):
    """RELEASE_MEM `int_sel`: whether (and when) the interrupt carrying `int_ctxid` is raised."""

    NONE = 0
    INTERRUPT = 1
    INTERRUPT_AFTER_WRITE_CONFIRM = 2
    DATA_AFTER_WRITE_CONFIRM = 3


class WriteDst(IntEnum):
    """WRITE_DATA `dst_sel` (soc15d.h): 2 and 5 are memory, the others are not."""

    REGISTER = 0
    TC_L2 = 2
    GDS = 3
    MEMORY = 5


class CopySel(IntEnum):
    """COPY_DATA `src_sel` / `dst_sel` (soc15d.h, PAL): memory is src 1 or 2, dst 2 or 5."""

    REGISTER = 0
    MEMORY = 1  # src only ("tc_l2_obsolete" on gfx10+)
    TC_L2 = 2
    GDS = 3
    PERFCOUNTERS = 4
    IMMEDIATE = 5  # src: data in src; dst 5 is memory (soc15d DST_SEL__MEMORY)
    ATOMIC_RETURN = 6
    GPU_CLOCK = 9
    SYSTEM_CLOCK = 10


_MEM_WRITE_DST = (WriteDst.TC_L2, WriteDst.MEMORY)
_COPY_SRC_MEM = (CopySel.MEMORY, CopySel.TC_L2)
_COPY_DST_MEM = (CopySel.TC_L2, 5)
_RELEASE_WRITES = (DataSel.DATA32, DataSel.DATA64, DataSel.GPU_CLOCK, DataSel.SYSTEM_CLOCK, DataSel.GDS)
_CLOCKS = (DataSel.GPU_CLOCK, DataSel.SYSTEM_CLOCK)  # tinygrad's timestamp(): RELEASE_MEM of the GPU clock
_COPY_CLOCKS = (CopySel.GPU_CLOCK, CopySel.SYSTEM_CLOCK)


def header(op: int, count: int, *, compute: bool = False, predicate: bool = False) -> int:
    """`PACKET3(op, count)` (| `PACKET3_COMPUTE`'s shader-type bit): count = dwords after the header - 1."""
    return 3 << 30 | (count & 0x3FFF) << 16 | (op & 0xFF) << 8 | int(compute) << 1 | int(predicate)


def _pkt(name: str, size: int, *fields: Field | Addr, tail: Tail | None = None,
         droppable: bool = False) -> PacketDef:
    """A type-3 packet of `size` dwords, header included: its count is size - 2 unless a tail follows."""
    return PacketDef(name, {TYPE: 3, OPCODE: Opcode[name]}, (*_HEADER, *fields), size=size,
                     tail=tail or Tail("count", 2 - size, quiet=True), droppable=droppable)


def _bits(dword: int, *spec: tuple[str, int]) -> tuple[Field, ...]:
    return tuple(Field(name, dword, bit, 1) for name, bit in spec)


# Register tails: the registers' values follow the index dword. Their names come from the dialect's table.
_SH_TAIL = Tail("count", 0, quiet=True, first="reg_offset")
_BANKS = {"SET_SH_REG": ("sh", SH_START), "SET_UCONFIG_REG": ("uconfig", UCONFIG_START)}

# --- gfx9 (soc15d.h, kfd_pm4_headers_ai.h) -------------------------------------------------------------------
_BASE = (
    # count + 1 dwords follow the header (NOP(n) skips n + 1 dwords); count 0x3FFF is the one-dword NOP
    # ("count == 0x3fff means -1": Mesa sid.h PKT3_NOP_PAD; the kernel's compute-ring `.nop`, gfx_v9_4_3.c and
    # gfx_v10_0.c, is PACKET3(PACKET3_NOP, 0x3FFF)).
    _pkt("NOP", 1, tail=Tail("count", 1, quiet=True, wrap=True)),
    _pkt("SET_SH_REG", 2, Field("reg_offset", 1, 0, 16), Field("vmid_shift", 1, 23, 5), Field("index", 1, 28, 4),
         tail=_SH_TAIL),
    _pkt("SET_UCONFIG_REG", 2, Field("reg_offset", 1, 0, 16), tail=_SH_TAIL),
    # CP_COHER_CNTL action bits; base and size are in 256-byte units (not tagged: a cache range, which the
    # kernel and tinygrad give as all of memory). coher_size_hi is 24 bits here (COHER_SIZE_HI_VG10).
    _pkt("ACQUIRE_MEM", 7,
         *_bits(1, ("tc_nc_action_ena", 3), ("tc_wc_action_ena", 4), ("tc_inv_metadata_action_ena", 5),
                ("tcl1_vol_action_ena", 15), ("tc_wb_action_ena", 18), ("tcl1_action_ena", 22),
                ("tc_action_ena", 23), ("cb_action_ena", 25), ("db_action_ena", 26), ("sh_kcache_action_ena", 27),
                ("sh_kcache_vol_action_ena", 28), ("sh_icache_action_ena", 29), ("sh_kcache_wb_action_ena", 30),
                ("engine_sel", 31)),
         Field("coher_size", 2, 0, 56, saturates=True), Field("coher_base", 4, 0, 56),
         Field("poll_interval", 6, 0, 16), droppable=True),
    # The address is written only when data_sel says so; with data_sel 3/4 it gets a clock (volatile), not `data`.
    # int_ctxid is the interrupt's context id: the KFD event id (tinygrad AMDComputeQueue.signal writes the
    # event id to the event mailbox and raises the interrupt with ctxid = event id). Bit 28 is EOP_EXEC.
    _pkt("RELEASE_MEM", 8,
         Field("event_type", 1, 0, 6), Field("event_index", 1, 8, 4),
         *_bits(1, ("tcl1_vol_action_ena", 12), ("tc_vol_action_ena", 13), ("tc_wb_action_ena", 15),
                ("tcl1_action_ena", 16), ("tc_action_ena", 17), ("tc_nc_action_ena", 19), ("tc_wc_action_ena", 20),
                ("tc_md_action_ena", 21)),
         Field("cache_policy", 1, 25, 2), Field("execute", 1, 28, 1),
         Field("dst_sel", 2, 16, 2), Field("int_sel", 2, 24, 3), Field("data_sel", 2, 29, 3),
         Addr("addr", 3, align=2, written=True, value="data", when=("data_sel", _RELEASE_WRITES),
              volatile=("data_sel", _CLOCKS)),
         Field("data", 5, 0, 64),
         Field("int_ctxid", 7, event=("int_sel", (IntSel.INTERRUPT, IntSel.INTERRUPT_AFTER_WRITE_CONFIRM)))),
    # mem_space 0: `addr` is a register (bits 17:0; the high dword the second register of wr_wait_wr_reg).
    _pkt("WAIT_REG_MEM", 7,
         Field("function", 1, 0, 3), Field("mem_space", 1, 4, 2), Field("operation", 1, 6, 2),
         Field("engine_sel", 1, 8, 2), Field("cache_policy", 1, 25, 2),
         Addr("addr", 2, when=("mem_space", 1), polled=("reference", "mask", "function")),
         Field("reference", 4), Field("mask", 5), Field("poll_interval", 6, 0, 16),
         Field("optimize_ace_offload_mode", 6, 31, 1)),
    # The same wait on a 64-bit word, as PAL's PM4_ME_WAIT_REG_MEM64 lays it out: reference and mask are 64 bits
    # each; `addr` is memory with mem_space 1, as WAIT_REG_MEM's.
    _pkt("WAIT_REG_MEM64", 9,
         Field("function", 1, 0, 3), Field("mem_space", 1, 4, 2), Field("operation", 1, 6, 2),
         Field("engine_sel", 1, 8, 2), Field("cache_policy", 1, 25, 2),
         Addr("addr", 2, align=3, when=("mem_space", 1), polled=("reference", "mask", "function")),
         Field("reference", 4, 0, 64), Field("mask", 6, 0, 64), Field("poll_interval", 8, 0, 16),
         Field("optimize_ace_offload_mode", 8, 31, 1)),
    # A TC atomic on the word at addr (nvd.h PACKET3_ATOMIC_MEM__*; libdrm's amdgpu tests build it with
    # PACKET3(PACKET3_ATOMIC_MEM, 7)): `atomic` is a TC_OP code (sdma.AtomicOp's 64-bit ones), `command` 0 a
    # single pass, 1 looping until the compare is satisfied, every loop_interval clocks.
    _pkt("ATOMIC_MEM", 9,
         Field("atomic", 1, 0, 7), Field("command", 1, 8, 4), Field("cache_policy", 1, 25, 2),
         Field("engine_sel", 1, 30, 2), Addr("addr", 2, align=3, written=True),
         Field("src_data", 4, 0, 64), Field("cmp_data", 6, 0, 64), Field("loop_interval", 8, 0, 13)),
    # The data dwords are the tail; dst_sel 0 makes `dst` a register offset (bits 17:0).
    _pkt("WRITE_DATA", 4,
         Field("dst_sel", 1, 8, 4), Field("addr_incr", 1, 16, 1), Field("wr_confirm", 1, 20, 1),
         Field("cache_policy", 1, 25, 2),
         Addr("dst", 2, written=True, when=("dst_sel", _MEM_WRITE_DST)),
         tail=Tail("count", -2, quiet=True, written="dst", one_addr="addr_incr")),
    # src holds a register offset, an immediate (src_sel 5) or a memory address; dst a register or memory.
    _pkt("COPY_DATA", 6,
         Field("src_sel", 1, 0, 4), Field("dst_sel", 1, 8, 4), Field("src_cache_policy", 1, 13, 2),
         Field("count_sel", 1, 16, 1), Field("wr_confirm", 1, 20, 1), Field("dst_cache_policy", 1, 25, 2),
         Field("pq_exe_status", 1, 29, 1),
         Addr("src", 2, when=("src_sel", _COPY_SRC_MEM)),
         Addr("dst", 4, written=True, when=("dst_sel", _COPY_DST_MEM), volatile=("src_sel", _COPY_CLOCKS))),
    # ib_size in dwords; CHAIN makes the IB replace the rest of the current one instead of returning to it.
    _pkt("INDIRECT_BUFFER", 4,
         Addr("ib_base", 1, align=2, indirect="ib_size"),
         Field("ib_size", 3, 0, 20), Field("chain", 3, 20, 1), Field("offload_polling", 3, 21, 1),
         Field("valid", 3, 23, 1), Field("vmid", 3, 24, 4), Field("cache_policy", 3, 28, 2), Field("priv", 3, 31, 1)),
    # The 2-dword form the kernel and tinygrad emit (CS_PARTIAL_FLUSH); sampling events add an address as tail.
    _pkt("EVENT_WRITE", 2, Field("event_type", 1, 0, 6), Field("event_index", 1, 8, 4),
         Field("offload_enable", 1, 31, 1)),
    # dim_x/y/z are numbers of workgroups.
    _pkt("DISPATCH_DIRECT", 5, Field("dim_x", 1), Field("dim_y", 2), Field("dim_z", 3),
         Field("dispatch_initiator", 4, launches=True)),
    # The compute-ring form (PAL PM4_MEC_DISPATCH_INDIRECT): the workgroup counts x, y, z are 3 dwords at addr.
    # (The gfx ring's form takes an offset from a SET_BASE instead.)
    _pkt("DISPATCH_INDIRECT", 4, Addr("addr", 1, align=2), Field("dispatch_initiator", 3, launches=True)),
    # Runs the next exec_count dwords only on the XCCs in xcc_mask (VIRTUAL_XCC_ID_SELECT; gfx942).
    _pkt("PRED_EXEC", 2, Field("exec_count", 1, 0, 14, skips=True), Field("xcc_mask", 1, 24, 8, xccs=True)),
)


class Pm4Dialect(Dialect):
    """A PM4 dialect: its packet table and its compute register table (which names SET_*_REG payloads)."""

    def __init__(self, name: str, defs: Iterable[PacketDef], registers: RegisterTable):
        """`name` also picks the dialect's rows of CACHE; its defaults are DEFAULTS and REQUESTS written with them."""
        self.registers = registers
        named = []
        for d in defs:
            if d.name in _BANKS and d.tail is not None:
                d = d.with_fields(tail=replace(d.tail, registers=getattr(registers, _BANKS[d.name][0])))
            named.append(d)
        cache = CacheControl(CACHE[name])
        defaults = {packet: dict(values) for packet, values in DEFAULTS.items()}
        for packet, actions in REQUESTS.items():
            asked = cache.write(packet, actions)
            if asked is None:
                raise ValueError(f"{name}: {packet} cannot ask {', '.join(actions)}")
            defaults[packet] = {**defaults.get(packet, {}), **{f: v for f, v in asked.items() if v}}
        super().__init__(name, named, defaults=defaults, cache=cache)

    def derive(self, name: str, *, registers: RegisterTable | None = None, **changes) -> Pm4Dialect:
        """Like `Dialect.derive`; `registers` replaces the register table."""
        base = super().derive(name, cache=CacheControl(CACHE[name]), **changes)
        return Pm4Dialect(name, base.defs, registers or self.registers)

    def set_sh_reg(self, **values: int) -> bytes:
        """One SET_SH_REG writing consecutive SH registers by name: set_sh_reg(COMPUTE_PGM_LO=lo, COMPUTE_PGM_HI=hi)."""
        return self._set_regs("SET_SH_REG", self.registers.sh_index, values)

    def set_uconfig_reg(self, **values: int) -> bytes:
        """One SET_UCONFIG_REG writing consecutive UCONFIG registers by name."""
        return self._set_regs("SET_UCONFIG_REG", self.registers.uconfig_index, values)

    def _set_regs(self, packet: str, index: Callable[[str], int], values: Mapping[str, int]) -> bytes:
        if not values:
            raise ValueError(f"{packet} needs at least one register")
        at = sorted((index(n), n) for n in values)
        for (i, a), (j, b) in zip(at, at[1:], strict=False):
            if j != i + 1:
                raise ValueError(f"{packet} writes consecutive registers; {a} and {b} are {j - i} apart "
                                 f"(use one packet per run)")
        for n, v in values.items():
            if not isinstance(v, int) or not 0 <= v <= 0xFFFF_FFFF:
                raise ValueError(f"{packet}: {n}={v!r} is not a 32-bit register value")
        payload = struct.pack(f"<{len(at)}I", *(values[n] for _, n in at))
        return self.build(packet, payload, reg_offset=at[0][0])

    def writes(self, p: Packet) -> dict[int, int]:
        """The registers a SET_SH_REG / SET_UCONFIG_REG packet writes: absolute dword offset -> value."""
        bank = _BANKS.get(p.name)
        if bank is None:
            raise PacketError(f"{self.name}: {p.name} writes no registers")
        start = bank[1] + p.fields["reg_offset"]
        return {start + i: w for i, w in enumerate(struct.unpack(f"<{len(p.payload) // 4}I", p.payload))}

    def entry(self, regs: Mapping[str, int]) -> int | None:
        """The kernel entry address the COMPUTE_PGM registers in `regs` (SH registers by name, as a queue's
        packets set them) give a dispatch; None while they are unset."""
        try:
            return self.registers.join("COMPUTE_PGM", regs)
        except KeyError:
            return None

    def register_addresses(self, p: Packet) -> dict[str, int]:
        """The GPU addresses a register-writing packet holds whole, by address name ("COMPUTE_PGM": the code
        address); {} for other packets. Writing only some registers of an address is an error (a relocator
        could not move it)."""
        if p.name not in _BANKS:
            return {}
        writes, out = self.writes(p), {}
        for address, parts in self.registers.addresses.items():
            held = [r.name for r in parts if r.offset in writes]
            if held and len(held) < len(parts):
                raise PacketError(f"{self.name}: {p.name} at byte offset {p.offset:#x} writes {', '.join(held)} "
                                  f"but not all of {address} ({', '.join(r.name for r in parts)})")
            if held:
                out[address] = self.registers.join(address, {r.name: writes[r.offset] for r in parts})
        return out

    def relocate_registers(self, p: Packet, move: Callable[[int], int]) -> Packet:
        """A copy of a register-writing packet with each address `register_addresses` finds replaced by
        `move(address)`; the packet itself when it holds none."""
        found = self.register_addresses(p)
        if not found:
            return p
        writes = self.writes(p)
        for address, value in found.items():
            for name, v in self.registers.split(address, move(value)).items():
                writes[self.registers[name].offset] = v
        return p.replace(payload=struct.pack(f"<{len(writes)}I", *(writes[o] for o in sorted(writes))))


# --- gfx10.3 (nvd.h; PAL gfx10 MEC forms) -------------------------------------------------------------------
_GCR_ACQUIRE = (  # ACQUIRE_MEM GCR_CNTL (nvd.h PACKET3_ACQUIRE_MEM_GCR_CNTL_*), dword 7
    Field("gli_inv", 7, 0, 2), Field("gl1_range", 7, 2, 2),
    *_bits(7, ("glm_wb", 4), ("glm_inv", 5), ("glk_wb", 6), ("glk_inv", 7), ("glv_inv", 8), ("gl1_inv", 9),
           ("gl2_us", 10)),
    Field("gl2_range", 7, 11, 2), *_bits(7, ("gl2_discard", 13), ("gl2_inv", 14), ("gl2_wb", 15)),
    Field("seq", 7, 16, 2), Field("range_is_pa", 7, 18, 1),
)
_GCR_RELEASE = (  # RELEASE_MEM GCR bits in dword 1 (nvd.h PACKET3_RELEASE_MEM_GCR_*)
    *_bits(1, ("glm_wb", 12), ("glm_inv", 13), ("glv_inv", 14), ("gl1_inv", 15), ("gl2_us", 16)),
    Field("gl2_range", 1, 17, 2), *_bits(1, ("gl2_discard", 19), ("gl2_inv", 20), ("gl2_wb", 21)),
    Field("seq", 1, 22, 2),
)
_GFX9_RELEASE_CACHE = ("tcl1_vol_action_ena", "tc_vol_action_ena", "tc_wb_action_ena", "tcl1_action_ena",
                       "tc_action_ena", "tc_nc_action_ena", "tc_wc_action_ena", "tc_md_action_ena")
# Dword 1 (CP_COHER_CNTL on gfx9) is reserved in the MEC form; base/size still in 256-byte units.
_ACQUIRE_GFX10 = _pkt("ACQUIRE_MEM", 8, Field("coher_size", 2, 0, 40, saturates=True), Field("coher_base", 4, 0, 56),
                      Field("poll_interval", 6, 0, 16), *_GCR_ACQUIRE, droppable=True)


# --- cache control -----------------------------------------------------------------------------------------
class Cache(StrEnum):
    """Generation-independent cache actions a packet asks (PAL's TcCacheOp and SQ cache flags, Mesa's barrier
    flags); CACHE says which field values ask them in each dialect."""

    L2_WB = "write back L2"
    L2_INV = "invalidate L2"
    L2_METADATA = "write back and invalidate L2 metadata"
    VMEM_INV = "invalidate vector L0/L1"
    SMEM_INV = "invalidate scalar cache"
    SMEM_WB = "write back scalar cache"
    ICACHE_INV = "invalidate instruction cache"


def _tc(metadata: str) -> tuple[CacheRow, ...]:
    """gfx9's TC operations; `metadata` names the TC_MD bit (RELEASE_MEM tc_md_action_ena, ACQUIRE_MEM
    tc_inv_metadata_action_ena). Each row is a PAL TcCacheOp: its gfx9 bits (Gfx9TcCacheOpConversionTable) ask
    what its gfx10 bits (Gfx10CalcAcquireMemGcrCntl) ask."""
    return (
        # WbInvL1L2 = TC_WB|TC_ACTION -> GL2_WB|GL2_INV|GLM_INV|GL1_INV|GLV_INV (Mesa: "TC | TC_WB = writeback &
        # invalidate L2 & L1"; "All operations that invalidate L2 also seem to invalidate metadata")
        ({"tc_action_ena": 1, "tc_wb_action_ena": 1}, (Cache.L2_WB, Cache.L2_INV, Cache.L2_METADATA, Cache.VMEM_INV)),
        # WbInvL2Nc = TC_WB|TC_ACTION|TC_NC -> GL2_WB|GL2_INV
        ({"tc_action_ena": 1, "tc_wb_action_ena": 1, "tc_nc_action_ena": 1}, (Cache.L2_WB, Cache.L2_INV)),
        # WbL2Nc = TC_WB|TC_NC -> GL2_WB (Mesa WB_L2: "WB doesn't work without NC"; the kernel's TC_WB_ONLY fence)
        ({"tc_wb_action_ena": 1, "tc_nc_action_ena": 1}, (Cache.L2_WB,)),
        ({"tc_wb_action_ena": 1, "tc_wc_action_ena": 1}, (Cache.L2_WB,)),  # WbL2Wc -> GL2_WB
        # InvL2Md = TC_ACTION|TC_INV_METADATA -> GLM_INV (Mesa: "TC | TC_MD = writeback & invalidate L2 metadata")
        ({"tc_action_ena": 1, metadata: 1}, (Cache.L2_METADATA,)),
        # InvL2Nc = TC_ACTION|TC_NC -> GL2_INV, and GLM_INV: PAL's case runs on into InvL2Md's
        ({"tc_action_ena": 1, "tc_nc_action_ena": 1}, (Cache.L2_INV, Cache.L2_METADATA)),
        ({"tcl1_action_ena": 1}, (Cache.VMEM_INV,)),  # InvL1 = TCL1_ACTION -> GLV_INV|GL1_INV (Mesa INV_VCACHE)
    )


# The shader caches an ACQUIRE_MEM also names: PAL's invSqK$, flushSqK$, invSqI$ flags (CP_COHER_CNTL on gfx9,
# GCR_CNTL from gfx10).
_SQ_GFX9: tuple[CacheRow, ...] = (
    ({"sh_kcache_action_ena": 1}, (Cache.SMEM_INV,)),
    ({"sh_kcache_wb_action_ena": 1}, (Cache.SMEM_WB,)),
    ({"sh_icache_action_ena": 1}, (Cache.ICACHE_INV,)),
)
_GCR: tuple[CacheRow, ...] = (  # RELEASE_MEM and ACQUIRE_MEM from gfx10 (the same names in both, nvd.h)
    ({"gl2_wb": 1}, (Cache.L2_WB,)),  # Mesa WB_L2 -> GL2_WB; PAL WbL2Nc
    ({"gl2_inv": 1}, (Cache.L2_INV,)),  # Mesa INV_L2 -> GL2_INV|GL2_WB
    # Mesa: "GLM doesn't support WB alone. If WB is set, INV must be set too"; the kernel's gfx10/11 emit_fence
    # "GLM_INV | /* must be set with GLM_WB */"
    ({"glm_wb": 1, "glm_inv": 1}, (Cache.L2_METADATA,)),
    ({"glm_inv": 1}, (Cache.L2_METADATA,)),  # PAL InvL2Md: GLM_INV alone ("L2MD is write-through")
    ({"glv_inv": 1, "gl1_inv": 1}, (Cache.VMEM_INV,)),  # Mesa INV_VCACHE -> GL1_INV|GLV_INV; PAL InvL1
)
_SQ_GCR: tuple[CacheRow, ...] = (
    ({"glk_inv": 1, "gl1_inv": 1}, (Cache.SMEM_INV,)),  # Mesa INV_SCACHE -> GL1_INV|GLK_INV
    ({"glk_inv": 1}, (Cache.SMEM_INV,)),  # PAL invSqK$ -> GLK_INV
    ({"glk_wb": 1}, (Cache.SMEM_WB,)),  # PAL flushSqK$ -> GLK_WB
    ({"gli_inv": 1}, (Cache.ICACHE_INV,)),  # Mesa INV_ICACHE -> GLI_INV(V_586_GLI_ALL = 1); PAL invSqI$
)
_GLK_RELEASE: tuple[CacheRow, ...] = (({"glk_inv": 1}, (Cache.SMEM_INV,)),)  # gfx11's RELEASE_MEM glk_inv (PAL)
_GLV_GFX12: tuple[CacheRow, ...] = (({"glv_inv": 1}, (Cache.VMEM_INV,)),)  # Mesa: no GL1_INV from gfx12

# Cache policies by value (PAL MEC packet enums): LRU 0 and STREAM 1 on gfx9, NOA 2 and BYPASS 3 from gfx10;
# gfx12's `temporal` RT 0, NT 1, HT 2, LU 3. 0 is every side's default and asks nothing.
_POLICY_GFX9 = {1: "stream"}
_POLICY_GFX10 = {1: "stream", 2: "no-allocate", 3: "bypass"}
_TEMPORAL = {1: "non-temporal", 2: "high-temporal", 3: "last-use"}


def _policies(values: Mapping[int, str], field: str) -> dict[str, tuple[CacheRow, ...]]:
    """Per packet, the rows of its policy field(s) named `field` (COPY_DATA: src_ and dst_`field`)."""
    def rows(name: str, what: str = "") -> tuple[CacheRow, ...]:
        return tuple(({name: v}, (f"{what}L2 policy {policy}",)) for v, policy in values.items())
    one = rows(field)
    return {"RELEASE_MEM": one, "WAIT_REG_MEM": one, "WAIT_REG_MEM64": one, "ATOMIC_MEM": one, "WRITE_DATA": one,
            "INDIRECT_BUFFER": one,
            "COPY_DATA": rows(f"src_{field}", "source ") + rows(f"dst_{field}", "destination ")}


def _rows(policies: Mapping[str, tuple[CacheRow, ...]],
          **packets: tuple[CacheRow, ...]) -> dict[str, tuple[CacheRow, ...]]:
    """The policy rows, with each named packet's own rows first."""
    return {**policies, **{p: rows + policies.get(p, ()) for p, rows in packets.items()}}


# Per dialect and packet: which field values ask which cache actions (see the module docstring).
CACHE: dict[str, dict[str, tuple[CacheRow, ...]]] = {
    "gfx9": _rows(_policies(_POLICY_GFX9, "cache_policy"), RELEASE_MEM=_tc("tc_md_action_ena"),
                  ACQUIRE_MEM=_tc("tc_inv_metadata_action_ena") + _SQ_GFX9),
    "gfx10": _rows(_policies(_POLICY_GFX10, "cache_policy"), RELEASE_MEM=_GCR, ACQUIRE_MEM=_GCR + _SQ_GCR),
    "gfx11": _rows(_policies(_POLICY_GFX10, "cache_policy"), RELEASE_MEM=_GCR + _GLK_RELEASE,
                   ACQUIRE_MEM=_GCR + _SQ_GCR),
    "gfx12": _rows(_policies(_TEMPORAL, "temporal"), RELEASE_MEM=_GCR + _GLK_RELEASE + _GLV_GFX12,
                   ACQUIRE_MEM=_GCR + _SQ_GCR + _GLV_GFX12),
}

# Values every packet of that name starts from where the dialect has the field (ComputeQueue's helpers; a
# replay's translation for fields only its target has): RELEASE_MEM the end-of-pipe event, its GCR operations
# in sequence (the kernel's emit_fence sets GCR_SEQ); INDIRECT_BUFFER the kernel's INDIRECT_BUFFER_VALID;
# WAIT_REG_MEM the kernel's poll interval.
DEFAULTS: dict[str, dict[str, int]] = {
    "RELEASE_MEM": {"event_type": EventType.CACHE_FLUSH_AND_INV_TS_EVENT, "event_index": EventIndex.END_OF_PIPE,
                    "seq": 1},
    "INDIRECT_BUFFER": {"valid": 1},
    "WAIT_REG_MEM": {"poll_interval": 4},
}
# The cache actions a packet of that name asks unless told otherwise: a RELEASE_MEM writes L2 back, so what
# the GPU wrote before it is in memory when its write lands.
REQUESTS: dict[str, tuple[Cache, ...]] = {"RELEASE_MEM": (Cache.L2_WB,)}

GFX9 = Pm4Dialect("gfx9", _BASE, regs.GFX9)

GFX10 = GFX9.derive(
    "gfx10", registers=regs.GFX10,
    fields={"RELEASE_MEM": [*_GCR_RELEASE, Addr("addr", 3, align=2, written=True, value="data",
                                                when=("data_sel", (*_RELEASE_WRITES, DataSel.ATOMIC_ADD32)),
                                                volatile=("data_sel", _CLOCKS))]},
    drop={"RELEASE_MEM": _GFX9_RELEASE_CACHE},
    add=[_ACQUIRE_GFX10],
)

# --- gfx11 (PAL gfx11 variants) ------------------------------------------------------------------------------
GFX11 = GFX10.derive(
    "gfx11", registers=regs.GFX11,
    fields={
        "ACQUIRE_MEM": [Field("coher_size", 2, 0, 56, saturates=True)],  # coher_size_hi is 24 bits again
        "RELEASE_MEM": _bits(1, ("wait_sync", 7), ("glk_inv", 30)),
        "EVENT_WRITE": [Field("samp_plst_cntr_mode", 1, 29, 2)],
    },
)

# --- gfx12 (PAL gfx12 MEC: cache_policy fields become `temporal` hints) --------------------------------------
GFX12 = GFX11.derive(
    "gfx12", registers=regs.GFX12,
    fields={
        "RELEASE_MEM": [Field("temporal", 1, 25, 2)],
        "WAIT_REG_MEM": [Field("temporal", 1, 25, 2)],
        "WAIT_REG_MEM64": [Field("temporal", 1, 25, 2)],
        "ATOMIC_MEM": [Field("temporal", 1, 25, 2)],
        "WRITE_DATA": [Field("mode", 1, 21, 1), Field("aid_id", 1, 23, 2), Field("temporal", 1, 25, 2)],
        "COPY_DATA": [Field("src_temporal", 1, 13, 2), Field("mode", 1, 21, 1), Field("aid_id", 1, 23, 2),
                      Field("dst_temporal", 1, 25, 2)],
        "INDIRECT_BUFFER": [Field("temporal", 3, 28, 2)],
    },
    drop={"RELEASE_MEM": ["cache_policy"], "WAIT_REG_MEM": ["cache_policy"], "WAIT_REG_MEM64": ["cache_policy"],
          "ATOMIC_MEM": ["cache_policy"], "WRITE_DATA": ["cache_policy"],
          "COPY_DATA": ["src_cache_policy", "dst_cache_policy"], "INDIRECT_BUFFER": ["cache_policy"]},
)

DIALECTS: dict[str, Pm4Dialect] = {d.name: d for d in (GFX9, GFX10, GFX11, GFX12)}
