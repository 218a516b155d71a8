"""SDMA packet formats, one `Dialect` per SDMA version, written as a base table plus per-version changes.

| dialect  | SDMA IP        | GPUs                                   | kernel packet header          |
|----------|----------------|----------------------------------------|-------------------------------|
| sdma4.4  | 4.4.0 / 4.4.2  | CDNA2 gfx90a, CDNA3 gfx942             | vega10_sdma_pkt_open.h        |
| sdma5    | 5.2            | RDNA2 gfx103x                          | navi10_sdma_pkt_open.h        |
| sdma6    | 6.0            | RDNA3 gfx110x                          | sdma_v6_0_0_pkt_open.h        |
| sdma7    | 7.0            | RDNA4 gfx120x                          | sdma_v6_0_0_pkt_open.h (!)    |

Header dword: op = bits 7:0, sub_op = bits 15:8, on every version. Field names follow the kernel headers,
shortened (src_addr_31_0 + src_addr_63_32 -> `src`); every field that holds a GPU memory address is an
`Addr`, so relocators need nothing else. What packets mean beyond their layout (indirect buffers, fences,
waits, traps, clocks, splittable byte counts, droppable cache maintenance) is tagged here too (see packets.py).

Sources read (facts only; this file is written from them, not copied):
* tinygrad/tinygrad@a9069c17:extra/hip_gpu_driver/vega10_sdma_pkt_open.h, navi10_sdma_pkt_open.h,
  sdma_v6_0_0_pkt_open.h (copies of torvalds/linux drivers/gpu/drm/amd/amdgpu/ headers),
  extra/hip_gpu_driver/sdma_registers.h (ROCR copy), extra/hip_gpu_driver/soc21_enum.h (TC_OP_* codes),
  tinygrad/runtime/ops_amd.py (AMDCopyQueue: FENCE mtype only off gfx9, POLL_REGMEM GEQ, COPY count-1).
* ROCm/rocm-systems@20a0bb47:projects/rocr-runtime/runtime/hsa-runtime/core/inc/sdma_registers.h
  (SDMA_OP_GCR=17, SDMA_SUBOP_USER_GCR=1, SDMA_ATOMIC_ADD64=47, hdp_flush_cmd as a register POLL_REGMEM).
* torvalds/linux drivers/gpu/drm/amd/amdgpu/sdma_v5_2.c (emit_mem_sync: GCR_REQ with sub_op 0),
  sdma_v7_0.c + amd-gfx patches (emit_copy_buffer: CPV(1), then DW7 = SDMA_DCC_* word; emit_fill_buffer:
  CONSTANT_FILL_HEADER_COMPRESS at bit 16; sdma_v6_0_0_pkt_open.h SDMA_DCC_* macros).
* torvalds/linux drivers/gpu/drm/amd/amdgpu/sdma_v7_0.c (includes sdma_v6_0_0_pkt_open.h: there is no v7 packet
  header), sdma_v4_0.c/sdma_v5_0.c hdp_flush (POLL_REGMEM FUNC(3) /* == */), drivers/gpu/drm/amd/amdkfd/
  kfd_int_process_v9.c (the SDMA_TRAP interrupt signals the KFD event in context_id0 bits 27:0).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum

from kfdtrace.driver.packets import Addr, Dialect, Field, Packet, PacketDef, Tail

__all__ = [
    "DIALECTS", "SDMA4_4", "SDMA5", "SDMA6", "SDMA7", "AtomicOp", "PollFunc", "OP", "SUB_OP",
]

OP = Field("op", 0, 0, 8)
SUB_OP = Field("sub_op", 0, 8, 8)


class PollFunc(IntEnum):
    """POLL_REGMEM `func`: how (value & mask) is compared with `ref` (kernel hdp_flush: 3 is ==; tinygrad
    WAIT_REG_MEM_FUNCTION_GEQ: 5 is >=)."""

    ALWAYS = 0
    LT = 1
    LE = 2
    EQ = 3
    NE = 4
    GE = 5
    GT = 6


# CONST_FILL `fillsize` of a 32-bit pattern, the fill the kernel (amdgpu emit_fill_buffer) and Mesa emit
FILL_DWORDS = 2


# What each code means: compare(value & mask, ref). SDMA POLL_REGMEM `func` and PM4 WAIT_REG_MEM `function` share
# them (pm4.WaitFunc is PollFunc).
POLL_COMPARE: dict[int, Callable[[int, int], bool]] = {
    PollFunc.ALWAYS: lambda v, r: True,
    PollFunc.LT: lambda v, r: v < r,
    PollFunc.LE: lambda v, r: v <= r,
    PollFunc.EQ: lambda v, r: v == r,
    PollFunc.NE: lambda v, r: v != r,
    PollFunc.GE: lambda v, r: v >= r,
    PollFunc.GT: lambda v, r: v > r,
}


def poll_passes(p: Packet, load: Callable[[int, int], int | None]) -> bool | None:
    """Whether the memory a packet's `wait` tag polls compares true now, the word as wide as its mask read by
    `load(address, bytes)`; None where that cannot tell (a word it cannot read, a reserved function)."""
    addr, ref, mask, func = p.defn.wait
    compare = POLL_COMPARE.get(p.fields[func])
    at = p.addresses().get(addr)
    value = None if compare is None or at is None else load(at, p.defn[mask].width // 8)
    return None if value is None else compare(value & p.fields[mask], p.fields[ref])


class AtomicOp(IntEnum):
    """ATOMIC `atomic_op`: the TC_OP code of the operation on the 64-bit word at `addr`.

    ROCR's only named value is SDMA_ATOMIC_ADD64 = 47, which is soc21_enum.h TC_OP_ATOMIC_ADD_RTN_64 (0x2f);
    the others are that enum's 64-bit integer TC_OP codes. The *_NORET codes (TC_OP_ATOMIC_*_64, no
    pre-op value returned) are the same operations 0x40 higher.
    """

    SWAP64 = 0x27
    CMPSWAP64 = 0x28  # memory = src_data if memory == cmp_data
    ADD64 = 0x2F
    SUB64 = 0x30
    SMIN64 = 0x31
    UMIN64 = 0x32
    SMAX64 = 0x33
    UMAX64 = 0x34
    AND64 = 0x35
    OR64 = 0x36
    XOR64 = 0x37
    INC64 = 0x38
    DEC64 = 0x39
    SWAP64_NORET = 0x67
    CMPSWAP64_NORET = 0x68
    ADD64_NORET = 0x6F
    SUB64_NORET = 0x70
    SMIN64_NORET = 0x71
    UMIN64_NORET = 0x72
    SMAX64_NORET = 0x73
    UMAX64_NORET = 0x74
    AND64_NORET = 0x75
    OR64_NORET = 0x76
    XOR64_NORET = 0x77
    INC64_NORET = 0x78
    DEC64_NORET = 0x79


def _pkt(name: str, op: int, sub_op: int, *fields: Field | Addr, tail: Tail | None = None,
         droppable: bool = False) -> PacketDef:
    return PacketDef(name, {OP: op, SUB_OP: sub_op}, fields, tail=tail, droppable=droppable)


# --- SDMA 4.4 (vega10_sdma_pkt_open.h): the base every later version changes ------------------------------
_BASE = (
    # count = number of dwords after the header to skip (the kernel pads with COUNT(n-1) + n-1 zero dwords).
    _pkt("NOP", 0, 0, Field("count", 0, 16, 14), tail=Tail("count")),
    # count is BYTES - 1. The header masks it to 22 bits; ROCR (max 0x3fffffff on gfx90a and gfx10.3+)
    # gives 30 bits; the per-family maximum copy size is family data, not packet layout.
    # Header bit 27 (broadcast) makes it the 9-dword COPY_BROADCAST_LINEAR (a second destination after dst), whose
    # layout is not modelled here: declared so that it is shown, carried over and refused by the emulated engine.
    _pkt("COPY_LINEAR", 1, 0,
         Field("encrypt", 0, 16, 1), Field("tmz", 0, 18, 1), Field("broadcast", 0, 27, 1),
         Field("count", 1, 0, 30, byte_count=True),
         Field("dst_sw", 2, 16, 2), Field("src_sw", 2, 24, 2),
         Addr("src", 3, advances=True), Addr("dst", 5, written=True, advances=True)),
    # WRITE_UNTILED in the headers; count is DWORDS - 1 of the data that follows.
    _pkt("WRITE_LINEAR", 2, 0,
         Field("encrypt", 0, 16, 1), Field("tmz", 0, 18, 1),
         Addr("dst", 1, written=True), Field("count", 3, 0, 20), Field("sw", 3, 24, 2),
         tail=Tail("count", 1, written="dst")),
    # The kernel aligns ib_base to 32 bytes and pads IBs to 8 dwords; the field itself is a full address.
    _pkt("INDIRECT", 4, 0,
         Field("vmid", 0, 16, 4), Addr("ib_base", 1, indirect="ib_size"), Field("ib_size", 3, 0, 20),
         Addr("csa_addr", 4)),
    _pkt("FENCE", 5, 0, Addr("addr", 1, written=True, value="data"), Field("data", 3)),
    _pkt("TRAP", 6, 0, Field("int_context", 1, 0, 28, event=True)),
    _pkt("SEM", 7, 0,
         Field("write_one", 0, 29, 1), Field("signal", 0, 30, 1), Field("mailbox", 0, 31, 1),
         Addr("addr", 1)),
    # With mem_poll=0 the "address" pair is two register byte offsets (poll register, and the HDP flush
    # request register when hdp_flush=1), not memory: the tag is conditional.
    _pkt("POLL_REGMEM", 8, 0,
         Field("hdp_flush", 0, 26, 1), Field("func", 0, 28, 3), Field("mem_poll", 0, 31, 1),
         Addr("addr", 1, when=("mem_poll", 1), polled=("ref", "mask", "func")), Field("ref", 3), Field("mask", 4),
         Field("interval", 5, 0, 16), Field("retry_count", 5, 16, 12)),
    # Runs the next exec_count dwords only when the dword at addr equals reference, else skips them (the
    # kernel's sdma_v5_0_ring_init_cond_exec patches exec_count in after the governed packets).
    _pkt("COND_EXE", 9, 0, Addr("addr", 1), Field("reference", 3), Field("exec_count", 4, 0, 14, skips=True)),
    # No sub_op in the ATOMIC header; bits 15:8 are 0.
    _pkt("ATOMIC", 10, 0,
         Field("loop", 0, 16, 1), Field("tmz", 0, 18, 1), Field("atomic_op", 0, 25, 7),
         Addr("addr", 1, written=True), Field("src_data", 3, 0, 64), Field("cmp_data", 5, 0, 64),
         Field("loop_interval", 7, 0, 13)),
    # count is BYTES - 1 here too; fillsize FILL_DWORDS: a dword pattern.
    _pkt("CONST_FILL", 11, 0,
         Field("sw", 0, 16, 2), Field("fillsize", 0, 30, 2),
         Addr("dst", 1, written=True, advances=True), Field("data", 3), Field("count", 4, 0, 22, byte_count=True)),
    _pkt("TIMESTAMP_SET", 13, 0, Field("init_data", 1, 0, 64)),
    # The write address is 8-byte aligned: the header declares only bits 31:3 of the low dword.
    _pkt("TIMESTAMP_GET", 13, 1, Addr("addr", 1, align=3, written=True, volatile=True)),
    _pkt("TIMESTAMP_GET_GLOBAL", 13, 2, Addr("addr", 1, align=3, written=True, volatile=True)),
    _pkt("PRE_EXE", 15, 0, Field("dev_sel", 0, 16, 8), Field("exec_count", 1, 0, 14)),
    # int_context is not tagged `event` as TRAP's is: KFD turns only the SDMA_TRAP interrupt, which TRAP
    # raises, into a process's event (amdkfd/kfd_int_process_v9.c).
    _pkt("DUMMY_TRAP", 16, 0, Field("int_context", 1, 0, 28)),
)

# Values the kernel always gives a field where a dialect has it: SDMA 5+ fences are written uncached
# (sdma_v5_0/v6_0/v7_0 emit_fence: MTYPE(3)) so the CPU sees them at once. The driver's queues and replay's
# translator both start every packet from these (every dialect's `defaults`).
DEFAULTS: dict[str, dict[str, int]] = {"FENCE": {"mtype": 3}}

SDMA4_4 = Dialect("sdma4.4", _BASE, defaults=DEFAULTS)

# --- SDMA 5.2 (navi10_sdma_pkt_open.h) ---------------------------------------------------------------------
# GCR_REQ: base/limit VAs are 128-byte aligned 48-bit addresses sharing dwords with the 19-bit gcr_control,
# which is split 16 + 3 bits across DW2/DW3. The kernel emits sub_op 0; ROCR (user queues) sub_op 1.
_GCR_FIELDS = (
    Addr("base_va", 1, width=48, align=7, touches=False),
    Field("gcr_control_lo", 2, 16, 16), Field("gcr_control_hi", 3, 0, 3),
    Addr("limit_va", 3, width=48, align=7, touches=False),
    Field("vmid", 4, 24, 4),
)

SDMA5 = SDMA4_4.derive(
    "sdma5",
    fields={
        "COPY_LINEAR": [Field("backwards", 0, 25, 1)],
        "INDIRECT": [Field("priv", 0, 31, 1)],
        # kernel sdma_v5/v6/v7 emit_fence set mtype=3 (uncached); gfx9 has no mtype.
        "FENCE": [Field("mtype", 0, 16, 3), Field("gcc", 0, 19, 1), Field("sys", 0, 20, 1),
                  Field("snp", 0, 22, 1), Field("gpa", 0, 23, 1), Field("l2_policy", 0, 24, 2)],
    },
    header={"DUMMY_TRAP": {OP: 32}},  # op 16 is GPUVM_INV from SDMA 5 on
    add=[_pkt("GCR_REQ", 17, 0, *_GCR_FIELDS, droppable=True),
         _pkt("USER_GCR", 17, 1, *_GCR_FIELDS, droppable=True)],
)

# --- SDMA 6.0 (sdma_v6_0_0_pkt_open.h) ---------------------------------------------------------------------
_CPV_28 = (Field("cache_policy", 0, 24, 3), Field("cpv", 0, 28, 1))
_CPV_24 = (Field("cache_policy", 0, 20, 3), Field("cpv", 0, 24, 1))
_TS_POLICY = (Field("l2_policy", 0, 24, 2), Field("llc_policy", 0, 26, 1), Field("cpv", 0, 28, 1))
SDMA6 = SDMA5.derive(
    "sdma6",
    fields={
        "COPY_LINEAR": [Field("cpv", 0, 19, 1), Field("dst_cache_policy", 2, 18, 3),
                        Field("src_cache_policy", 2, 26, 3)],
        "WRITE_LINEAR": [Field("cpv", 0, 28, 1), Field("cache_policy", 3, 26, 3)],
        "FENCE": [Field("llc_policy", 0, 26, 1), Field("cpv", 0, 28, 1)],
        "POLL_REGMEM": _CPV_24,
        "ATOMIC": _CPV_24,
        "COND_EXE": _CPV_28,
        "CONST_FILL": [*_CPV_28, Field("count", 4, 0, 30, byte_count=True)],  # a replaced field restates its tags
        "TIMESTAMP_GET": _TS_POLICY,
        "TIMESTAMP_GET_GLOBAL": _TS_POLICY,
    },
)

# --- SDMA 7.0: no header of its own (sdma_v7_0.c includes the v6 one) --------------------------------------
# ROCR's SDMA_PKT_FENCE_GFX12 redraws FENCE bits 28:24 as scope/temporal_hint; the kernel still emits the v6
# layout (mtype=3 reads the same either way), so FENCE is left as v6 here.
# COPY_LINEAR is 7 dwords, plus an 8th, the DCC word, when the header's CPV bit is set: sdma_v7_0.c
# sdma_v7_0_emit_copy_buffer sets CPV(1) and always writes DW7 (SDMA_DCC_DATA_FORMAT b5:0 | NUM_TYPE b11:9 |
# READ_CM b17:16 | WRITE_CM b19:18 | MAX_COM b25:24 | MAX_UCOM b26, sdma_v6_0_0_pkt_open.h; 0 without
# compression), as sdma_v7_0_vm_copy_pte does; its first DCC version set CPV only with compression and then
# alone wrote DW7; ROCR's gfx12 copy is 7 dwords with CPV clear (issue 11). No hardware document was found: the
# rule is the one every emitter read keeps. The DCC word is the packet's tail (payload).
SDMA7 = SDMA6.derive(
    "sdma7",
    fields={"CONST_FILL": [Field("compress", 0, 16, 1)]},  # takes bit 16, the low bit of v6's sw
    drop={"CONST_FILL": ["sw"]},
    add=[SDMA6["COPY_LINEAR"].with_fields(tail=Tail("cpv"))],
)

DIALECTS: dict[str, Dialect] = {d.name: d for d in (SDMA4_4, SDMA5, SDMA6, SDMA7)}


def defaults(dialect: Dialect, name: str) -> dict[str, int]:
    """The DEFAULTS of packet `name` that exist in `dialect` (its `defaults`)."""
    return dialect.defaults[name]
