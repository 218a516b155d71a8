"""PM4 packet dialects and compute register tables (kfdtrace.driver.pm4 / .registers)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kfdtrace.driver.families import FAMILIES
from kfdtrace.driver.packets import Addr, Dialect, Field, PacketDef, PacketError, TruncatedPacket, UnknownPacket
from kfdtrace.driver.pm4 import (
    DIALECTS,
    GFX9,
    GFX10,
    GFX11,
    GFX12,
    CopySel,
    DataSel,
    EventIndex,
    EventType,
    IntSel,
    Opcode,
    WaitFunc,
    WriteDst,
    header,
)
from kfdtrace.driver.registers import REGISTERS, SH_START, UCONFIG_START
from kfdtrace.driver.sdma import SDMA6
from tests.emulated import assert_engine_view_agrees

ALL = list(DIALECTS.values())
ALL_DEFS = [(d, p) for d in ALL for p in d]


def dwords(b: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(b) // 4}I", b))


def u32s(*words: int) -> bytes:
    return struct.pack(f"<{len(words)}I", *words)


def packet3(op: int, n: int) -> int:
    """The kernel's PACKET3(op, n), written out by hand: 3 << 30 | (n & 0x3FFF) << 16 | op << 8."""
    return (3 << 30) | ((n & 0x3FFF) << 16) | ((op & 0xFF) << 8)


# --- round trips ------------------------------------------------------------------------------------------
def _values(draw, defn: PacketDef) -> tuple[dict[str, int], bytes]:
    """Random field values, and 0-6 dwords past the fixed part (a NOP has at least one)."""
    fields = {}
    for f in defn.fields:
        if f.name == defn.tail.count:
            continue
        if isinstance(f, Addr):
            fields[f.name] = draw(st.integers(0, f.mask >> f.align)) << f.align
        else:
            fields[f.name] = draw(st.integers(0, f.mask))
    n = draw(st.integers(1 if defn.tail.bias > 0 else 0, 6))
    return fields, u32s(*draw(st.lists(st.integers(0, 0xFFFF_FFFF), min_size=n, max_size=n)))


@pytest.mark.parametrize(("dialect", "defn"), ALL_DEFS, ids=[f"{d.name}-{p.name}" for d, p in ALL_DEFS])
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_build_decode_round_trip(dialect: Dialect, defn: PacketDef, data) -> None:
    fields, payload = _values(data.draw, defn)
    raw = dialect.build(defn.name, payload, **fields)
    p = dialect.decode(raw)
    assert p.name == defn.name and p.defn is defn
    assert p.size == len(raw) == defn.size * 4 + len(p.payload)
    assert {k: p.fields[k] for k in fields} == fields
    assert p.payload == payload
    assert p.fields["count"] == len(raw) // 4 - 2  # PACKET3's count: dwords after the header - 1
    assert p.encode() == raw
    assert dialect.packet(defn.name, payload, **fields) == p
    assert_engine_view_agrees(dialect, raw)


def test_all_ones_round_trip_every_packet_every_dialect() -> None:
    for dialect, defn in ALL_DEFS:
        fields = {f.name: f.mask for f in defn.fields if f.name != "count"}
        raw = dialect.build(defn.name, u32s(0x11111111, 0x22222222), **fields)
        p = dialect.decode(raw)
        assert {k: p.fields[k] for k in fields} == fields, (dialect.name, defn.name)
        assert p.encode() == raw and p.payload == u32s(0x11111111, 0x22222222)


def test_every_family_has_its_dialect() -> None:
    assert {f.pm4_dialect for f in FAMILIES} == set(DIALECTS)
    for d in ALL:
        assert d.registers is REGISTERS[d.name]


# --- headers against the kernel macros --------------------------------------------------------------------
SIZES = {  # total dwords of each fixed form (soc15d.h / nvd.h / PAL MEC packet sizes)
    "SET_SH_REG": 2, "SET_UCONFIG_REG": 2, "RELEASE_MEM": 8, "WAIT_REG_MEM": 7, "WRITE_DATA": 4, "COPY_DATA": 6,
    "INDIRECT_BUFFER": 4, "EVENT_WRITE": 2, "DISPATCH_DIRECT": 5, "DISPATCH_INDIRECT": 4, "PRED_EXEC": 2,
    "WAIT_REG_MEM64": 9, "ATOMIC_MEM": 9,  # libdrm's amdgpu tests: PACKET3(PACKET3_ATOMIC_MEM, 7)
}


@pytest.mark.parametrize("dialect", ALL, ids=lambda d: d.name)
def test_headers_match_packet3(dialect: Dialect) -> None:
    acquire = 7 if dialect is GFX9 else 8  # gfx9 PACKET3(ACQUIRE_MEM, 5); gfx10+ PACKET3(ACQUIRE_MEM, 6) + GCR_CNTL
    for name, size in {**SIZES, "ACQUIRE_MEM": acquire}.items():
        raw = dialect.build(name)
        assert len(raw) == size * 4, name
        assert dwords(raw)[0] == packet3(Opcode[name], size - 2), name
        # PACKET3_COMPUTE(op, n) = PACKET3(op, n) | 1 << 1
        assert dwords(dialect.build(name, shader_type=1))[0] == packet3(Opcode[name], size - 2) | 2, name
    assert dwords(dialect.build("NOP")) == [packet3(0x10, 0), 0]
    assert dwords(dialect.build("NOP", u32s(7, 8, 9))) == [packet3(0x10, 2), 7, 8, 9]
    assert dwords(dialect.build("DISPATCH_DIRECT", predicate=1))[0] == packet3(0x15, 3) | 1


@pytest.mark.parametrize("dialect", ALL, ids=lambda d: d.name)
def test_64_bit_atomic_and_wait_layouts(dialect: Dialect) -> None:
    """ATOMIC_MEM as nvd.h's PACKET3_ATOMIC_MEM__* macros place its fields (ATOMIC bits 6:0, COMMAND 11:8, then
    address, source and compare data lo/hi and the loop interval); WAIT_REG_MEM64 as WAIT_REG_MEM with 64-bit
    reference and mask (PAL PM4_ME_WAIT_REG_MEM64)."""
    atomic = dialect.build("ATOMIC_MEM", atomic=0x2F, command=1, addr=0x7F00_1234_5678, src_data=0x1_0000_0002,
                           cmp_data=0x3_0000_0004, loop_interval=5)
    assert dwords(atomic) == [packet3(0x1E, 7), 0x2F | 1 << 8, 0x1234_5678, 0x7F00, 2, 1, 4, 3, 5]
    with pytest.raises(ValueError, match="8-byte aligned"):
        dialect.build("ATOMIC_MEM", addr=0x1004)
    wait = dialect.build("WAIT_REG_MEM64", function=3, mem_space=1, addr=0x7F00_0000_0008, reference=0x5_0000_0006,
                         mask=(1 << 64) - 1, poll_interval=4)
    assert dwords(wait) == [packet3(0x93, 7), 3 | 1 << 4, 8, 0x7F00, 6, 5, 0xFFFFFFFF, 0xFFFFFFFF, 4]
    assert dialect.decode(wait).addresses() == {"addr": 0x7F00_0000_0008}
    assert dialect.decode(dialect.build("WAIT_REG_MEM64", mem_space=0, addr=0x2E40)).addresses() == {}


def test_one_dword_nop() -> None:
    pad = packet3(0x10, 0x3FFF)  # Mesa PKT3_NOP_PAD: "count == 0x3fff means -1", a header-only NOP
    assert pad == 0xFFFF1000
    for d in ALL:
        assert d.build("NOP", count=0x3FFF) == d.packet("NOP", count=0x3FFF).encode() == u32s(pad)
        stream = u32s(pad, pad) + d.build("EVENT_WRITE", event_type=7, event_index=4) + u32s(pad)
        got = list(d.iter_packets(stream))
        assert [(p.name, p.size, p.payload) for p in got] == [
            ("NOP", 4, b""), ("NOP", 4, b""), ("EVENT_WRITE", 8, b""), ("NOP", 4, b"")]
        assert got[0].fields["count"] == 0x3FFF and b"".join(p.encode() for p in got) == stream
        longest = d.decode(d.build("NOP", bytes(4 * 0x3FFF)))  # the longest NOP: count 0x3FFE
        assert longest.fields["count"] == 0x3FFE and longest.size == 4 * 0x4000
        with pytest.raises(ValueError, match="NOP: a payload of 16384 dwords is more than count can count"):
            d.build("NOP", bytes(4 * 0x4000))


def test_header_helper_and_known_words() -> None:
    assert header(0x49, 6) == 0xC0064900  # RELEASE_MEM
    assert header(0x15, 3, compute=True) == 0xC0031502  # Mesa: PKT3(DISPATCH_DIRECT, 3) | SHADER_TYPE_S(1)
    assert header(0x58, 5) == 0xC0055800 and header(0x58, 6) == 0xC0065800  # ACQUIRE_MEM gfx9 / gfx10+
    assert header(0x23, 0, predicate=True) == 0xC0002301


# --- a dispatch as tinygrad emits it (amd-facts §10), written word by word --------------------------------
KD = 0x7F00_1234_5600  # code address (256-byte aligned)
KERNARGS = 0x7F00_0000_2000
SIGNAL = 0x7F00_0000_3008
MAILBOX = 0x7F00_0000_4010
EVENT_ID = 0x2A


def _gfx11_dispatch() -> list[int]:
    # GCR_CNTL GLM_INV b5 | GLM_WB b4 | GLK_INV b7 | GLK_WB b6 | GLV_INV b8 | GL1_INV b9
    gcr = (1 << 5) | (1 << 4) | (1 << 7) | (1 << 6) | (1 << 8) | (1 << 9)
    # RELEASE_MEM GLV_INV b14 | GL1_INV b15 | GL2_INV b20 | GLM_WB b12 | GLM_INV b13 | GL2_WB b21 | SEQ b22
    rel = (1 << 14) | (1 << 15) | (1 << 20) | (1 << 12) | (1 << 13) | (1 << 21) | (1 << 22)
    return [
        packet3(0x58, 6), 0, 0xFFFF_FFFF, 0xFFFF_FFFF, 0, 0, 0, gcr,  # ACQUIRE_MEM (tinygrad: size = all ones)
        packet3(0x76, 2), 0x20C, (KD >> 8) & 0xFFFF_FFFF, KD >> 40,  # COMPUTE_PGM_LO/HI
        packet3(0x76, 2), 0x212, 0x60AF_0082, 0x0000_0090,  # RSRC1 (| PRIV on gfx11), RSRC2
        packet3(0x76, 1), 0x228, 0,  # RSRC3 (0x2E28 on gfx10+)
        packet3(0x76, 1), 0x218, 0x0040_0020,  # TMPRING_SIZE
        packet3(0x76, 3), 0x21B, 0, 0, 0,  # RESTART_X/Y/Z
        packet3(0x76, 2), 0x240, KERNARGS & 0xFFFF_FFFF, KERNARGS >> 32,  # USER_DATA_0/1
        packet3(0x76, 1), 0x215, 0,  # RESOURCE_LIMITS
        packet3(0x76, 8), 0x204, 0, 0, 0, 64, 1, 1, 0, 0,  # START_X..PERFCOUNT_ENABLE
        packet3(0x15, 3), 16, 2, 1, 1 | 4 | 1 << 15,  # DISPATCH_DIRECT: workgroups, COMPUTE_SHADER_EN|FORCE_START|W32
        packet3(0x46, 0), 7 | 4 << 8,  # EVENT_WRITE CS_PARTIAL_FLUSH, EVENT_INDEX 4
        packet3(0x49, 6), 0x14 | 5 << 8 | rel, 1 << 29, SIGNAL & 0xFFFF_FFFF, SIGNAL >> 32, 5, 0, 0,  # the signal
        packet3(0x49, 6), 0x14 | 5 << 8 | rel, 1 << 29 | 2 << 24, MAILBOX & 0xFFFF_FFFF, MAILBOX >> 32,
        EVENT_ID, 0, EVENT_ID,  # the interrupt: mailbox <- event id, ctxid = event id
    ]


def test_tinygrad_dispatch_sequence_decodes() -> None:
    stream = u32s(*_gfx11_dispatch())
    got = list(GFX11.iter_packets(stream))
    assert [p.name for p in got] == ["ACQUIRE_MEM", *["SET_SH_REG"] * 8, "DISPATCH_DIRECT", "EVENT_WRITE",
                                     "RELEASE_MEM", "RELEASE_MEM"]
    acq = got[0]
    assert (acq.glm_inv, acq.glm_wb, acq.glk_inv, acq.glk_wb, acq.glv_inv, acq.gl1_inv) == (1,) * 6
    assert (acq.gli_inv, acq.gl2_inv, acq.gl2_wb) == (0, 0, 0) and acq.payload == b""
    regs = {}
    for p in got[1:9]:
        regs.update(GFX11.writes(p))
    table = GFX11.registers
    named = {r.name: regs[r.offset] for r in table if r.offset in regs}
    assert table.join("COMPUTE_PGM", named) == KD
    assert named["COMPUTE_USER_DATA_0"] | named["COMPUTE_USER_DATA_1"] << 32 == KERNARGS
    assert table["COMPUTE_PGM_RSRC2"].decode(named["COMPUTE_PGM_RSRC2"])["user_sgpr"] == 8
    assert table["COMPUTE_NUM_THREAD_X"].decode(named["COMPUTE_NUM_THREAD_X"])["num_thread_full"] == 64
    assert table["COMPUTE_TMPRING_SIZE"].decode(named["COMPUTE_TMPRING_SIZE"]) == {"waves": 0x20, "wavesize": 0x400}
    assert named["COMPUTE_PGM_RSRC3"] == 0 and "COMPUTE_RESTART_Z" in named
    dispatch = got[9]
    assert (dispatch.dim_x, dispatch.dim_y, dispatch.dim_z) == (16, 2, 1)
    init = table["COMPUTE_DISPATCH_INITIATOR"].decode(dispatch.dispatch_initiator)
    assert init["compute_shader_en"] == init["force_start_at_000"] == init["cs_w32_en"] == 1
    assert (got[10].event_type, got[10].event_index) == (EventType.CS_PARTIAL_FLUSH, EventIndex.CS_PARTIAL_FLUSH)
    sig, irq = got[11], got[12]
    assert (sig.event_type, sig.event_index) == (EventType.CACHE_FLUSH_AND_INV_TS_EVENT, EventIndex.END_OF_PIPE)
    assert (sig.glv_inv, sig.gl1_inv, sig.gl2_inv, sig.glm_wb, sig.glm_inv, sig.gl2_wb, sig.seq) == (1,) * 7
    assert sig.data_sel == DataSel.DATA32 and sig.int_sel == IntSel.NONE
    assert sig.written_addresses() == [SIGNAL] and sig.defn.signal == ("addr", "data") and sig.data == 5
    assert irq.int_sel == IntSel.INTERRUPT_AFTER_WRITE_CONFIRM and irq.defn.event_of(irq.fields) == EVENT_ID
    assert sig.defn.event_of(sig.fields) is None  # int_sel NONE: its int_ctxid raises nothing
    assert irq.addr == MAILBOX and irq.data == EVENT_ID
    assert b"".join(p.encode() for p in got) == stream


def test_gfx9_acquire_mem_as_tinygrad_writes_it() -> None:
    words = [packet3(0x58, 5), 1 << 27 | 1 << 22, 0xFFFF_FFFF, 0xFFFF_FFFF, 0, 0, 0xA]  # SH_KCACHE | TCL1
    p = GFX9.decode(u32s(*words))
    assert p.name == "ACQUIRE_MEM" and p.size == 28
    assert p.sh_kcache_action_ena == p.tcl1_action_ena == 1 and p.tc_action_ena == p.sh_icache_action_ena == 0
    assert p.coher_size == (1 << 56) - 1 and p.poll_interval == 0xA
    assert dwords(p.encode()) == words  # the high byte of COHER_SIZE_HI is not a field: it survives
    with pytest.raises(PacketError, match="ACQUIRE_MEM at byte offset 0x0 has count=5, 1 dwords short"):
        GFX10.decode(u32s(*words))  # the 7-dword gfx9 form is one dword short of gfx10's
    with pytest.raises(PacketError, match="1 dwords short"):
        GFX10.decode(u32s(*words) + GFX10.build("NOP"))


def test_dispatch_packets() -> None:
    for d in ALL:
        assert dwords(d.build("DISPATCH_DIRECT", shader_type=1, dim_x=8, dim_y=4, dim_z=2, dispatch_initiator=5)) == [
            0xC0031502, 8, 4, 2, 5]
        ind = d.decode(d.build("DISPATCH_INDIRECT", addr=0x7F00_0000_0040, dispatch_initiator=1))
        assert dwords(ind.encode()) == [packet3(0x16, 2), 0x40, 0x7F00, 1]  # PAL PM4_MEC_DISPATCH_INDIRECT
        assert ind.addresses() == {"addr": 0x7F00_0000_0040}
        with pytest.raises(ValueError, match="4-byte aligned"):
            d.build("DISPATCH_INDIRECT", addr=0x1002)


@pytest.mark.parametrize("dialect", ALL, ids=lambda d: d.name)
def test_only_a_packet_that_selects_a_clock_writes_one_on_every_path(dialect: Dialect) -> None:
    """RELEASE_MEM writes a clock only with data_sel 3/4, COPY_DATA only from src_sel GPU/SYSTEM_CLOCK: a
    translation's writes say so per packet, on the general path (RELEASE_MEM, which maps an event id) and on
    the generated ones (COPY_DATA's checker and transcoder). They said so of every such packet, and a replay
    masked the data a RELEASE_MEM wrote, whatever it was."""
    from kfdtrace.replay.translate import Relocation, Translator

    for sel, clock in ((DataSel.DATA64, False), (DataSel.DATA32, False), (DataSel.GPU_CLOCK, True)):
        data = dialect.build("RELEASE_MEM", event_type=EventType.CACHE_FLUSH_AND_INV_TS_EVENT, event_index=5,
                             data_sel=sel, int_sel=0, addr=0x1000, data=0x3E8)
        assert dialect.decode(data).volatile is clock
        writes: list = []
        relocation = Relocation()
        relocation.add(0x1000, 4096, 0x1000)  # a buffer where it was recorded
        Translator(dialect, dialect, 1 << 22, relocation).ring(data, "test", writes)
        assert writes == [(0, (0x1000,), clock)], sel
    copy = dialect["COPY_DATA"]
    transcode = copy.transcoder(copy)
    for sel, clock in ((CopySel.IMMEDIATE, False), (CopySel.GPU_CLOCK, True)):
        data = dialect.build("COPY_DATA", src_sel=sel, dst_sel=WriteDst.MEMORY, count_sel=1, src=0x5, dst=0x2000)
        p = dialect.decode(data)
        assert p.volatile is clock
        assert copy.checker()(data, 0, lambda a: a) == ((0x2000,), clock)
        assert transcode(p._raw, p.payload, lambda a: a, None)[2] == ((0x2000,), clock)


# --- meanings: tags ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("dialect", ALL, ids=lambda d: d.name)
def test_tags(dialect: Dialect) -> None:
    rel = dialect["RELEASE_MEM"]
    assert rel.signal == ("addr", "data") and rel.event_field == "int_ctxid" and rel.written_fields == ("addr",)
    assert dialect["WAIT_REG_MEM"].wait == ("addr", "reference", "mask", "function")
    assert dialect["INDIRECT_BUFFER"].indirect == ("ib_base", "ib_size")
    assert dialect["PRED_EXEC"].skip_field == "exec_count"
    assert dialect["WRITE_DATA"].written_fields == ("dst",) and dialect["COPY_DATA"].written_fields == ("dst",)
    assert dialect["ACQUIRE_MEM"].droppable and not dialect["ACQUIRE_MEM"].address_fields
    assert dialect["WAIT_REG_MEM64"].wait == ("addr", "reference", "mask", "function")
    assert dialect["ATOMIC_MEM"].written_fields == ("addr",)
    tagged = {p.name for p in dialect if p.address_fields}
    assert tagged == {"RELEASE_MEM", "WAIT_REG_MEM", "WAIT_REG_MEM64", "ATOMIC_MEM", "WRITE_DATA", "COPY_DATA",
                      "INDIRECT_BUFFER", "DISPATCH_INDIRECT"}
    for p in dialect:  # nothing but the event id is an event, nothing but PRED_EXEC skips
        assert (p.event_field is not None) == (p.name == "RELEASE_MEM")
        assert (p.skip_field is not None) == (p.name == "PRED_EXEC")


def test_pred_exec_governs_following_dwords() -> None:
    body = GFX9.set_sh_reg(COMPUTE_DISPATCH_SCRATCH_BASE_LO=0x100, COMPUTE_DISPATCH_SCRATCH_BASE_HI=0)
    raw = GFX9.build("PRED_EXEC", exec_count=len(body) // 4, xcc_mask=0b10) + body
    assert dwords(raw)[:2] == [packet3(0x23, 0), 2 << 24 | 4]  # tinygrad: xcc_mask << 24, then the count
    pred, inner = GFX9.iter_packets(raw)
    assert pred.fields[pred.defn.skip_field] * 4 == inner.size


# --- relocation moves exactly the memory addresses ---------------------------------------------------------
MOVE = 0x1_0000_0000


def _relocation_cases(d: Dialect) -> list[tuple[bytes, dict[str, int]]]:
    """(packet, its fields that must move) pairs."""
    a, b = 0x7F00_0000_1000, 0x7F00_0000_2000
    return [
        (d.build("RELEASE_MEM", data_sel=DataSel.DATA32, addr=a, data=1, int_ctxid=3), {"addr": a}),
        (d.build("RELEASE_MEM", data_sel=DataSel.NONE, int_sel=IntSel.INTERRUPT, addr=a, int_ctxid=3), {}),
        (d.build("WAIT_REG_MEM", mem_space=1, function=WaitFunc.GE, addr=a, reference=1, mask=0xFFFF_FFFF),
         {"addr": a}),
        # a register poll: "addr" holds register offsets (poll, and the write of wr_wait_wr_reg)
        (d.build("WAIT_REG_MEM", mem_space=0, operation=1, function=WaitFunc.EQ, addr=0x2E18 | 0x2E19 << 32), {}),
        (d.build("WRITE_DATA", u32s(1, 2), dst_sel=WriteDst.MEMORY, dst=a), {"dst": a}),
        (d.build("WRITE_DATA", u32s(1), dst_sel=WriteDst.TC_L2, dst=a), {"dst": a}),
        (d.build("WRITE_DATA", u32s(1), dst_sel=WriteDst.REGISTER, dst=0x2E40), {}),
        (d.build("COPY_DATA", src_sel=CopySel.TC_L2, dst_sel=CopySel.TC_L2, src=a, dst=b), {"src": a, "dst": b}),
        (d.build("COPY_DATA", src_sel=CopySel.MEMORY, dst_sel=5, src=a, dst=b), {"src": a, "dst": b}),
        (d.build("COPY_DATA", src_sel=CopySel.IMMEDIATE, dst_sel=CopySel.TC_L2, src=0x1234, dst=b), {"dst": b}),
        (d.build("COPY_DATA", src_sel=CopySel.PERFCOUNTERS, dst_sel=CopySel.TC_L2, src=0x34, dst=b), {"dst": b}),
        (d.build("COPY_DATA", src_sel=CopySel.TC_L2, dst_sel=CopySel.REGISTER, src=a, dst=0x2E40), {"src": a}),
        (d.build("INDIRECT_BUFFER", ib_base=a, ib_size=16, valid=1), {"ib_base": a}),
        (d.build("DISPATCH_INDIRECT", addr=a), {"addr": a}),
        (d.build("ACQUIRE_MEM", coher_base=0x7F00_0000, coher_size=0x10), {}),
        (d.set_sh_reg(COMPUTE_PGM_LO=0x1234, COMPUTE_PGM_HI=0x7F), {}),
        (d.build("EVENT_WRITE", event_type=EventType.CS_PARTIAL_FLUSH, event_index=4), {}),
    ]


@pytest.mark.parametrize("dialect", ALL, ids=lambda d: d.name)
def test_relocation_moves_exactly_the_tagged_addresses(dialect: Dialect) -> None:
    for raw, moving in _relocation_cases(dialect):
        p = dialect.decode(raw)
        assert p.addresses() == moving, p
        q = p.relocate(lambda x: x + MOVE)
        assert {k: q.fields[k] for k in moving} == {k: v + MOVE for k, v in moving.items()}, p
        assert {k: v for k, v in q.fields.items() if k not in moving} == {
            k: v for k, v in p.fields.items() if k not in moving}, p
        assert q.payload == p.payload
        if not moving:
            assert q.encode() == raw


def test_written_addresses_follow_the_selects() -> None:
    d = GFX10
    assert d.decode(d.build("WRITE_DATA", u32s(9), dst_sel=WriteDst.MEMORY, dst=0x40)).written_addresses() == [0x40]
    assert d.decode(d.build("WRITE_DATA", u32s(9), dst_sel=WriteDst.REGISTER, dst=0x2E40)).written_addresses() == []
    assert d.decode(d.build("RELEASE_MEM", data_sel=DataSel.NONE, addr=0x40)).written_addresses() == []
    assert d.decode(d.build("RELEASE_MEM", data_sel=DataSel.ATOMIC_ADD32, addr=0x40)).written_addresses() == [0x40]
    assert GFX9.decode(GFX9.build("RELEASE_MEM", data_sel=7, addr=0x40)).written_addresses() == []  # gfx10.3+ only


# --- dialect deltas ----------------------------------------------------------------------------------------
def test_release_mem_cache_bits_per_generation() -> None:
    assert GFX9["RELEASE_MEM"]["tc_wb_action_ena"].shift == 15 and "glm_wb" not in GFX9["RELEASE_MEM"].field_names
    assert GFX10["RELEASE_MEM"]["gl1_inv"].shift == 15 and "tc_wb_action_ena" not in GFX10["RELEASE_MEM"].field_names
    assert "wait_sync" not in GFX10["RELEASE_MEM"].field_names and GFX11["RELEASE_MEM"]["wait_sync"].shift == 7
    assert GFX11["RELEASE_MEM"]["cache_policy"].shift == 25 and "cache_policy" not in GFX12["RELEASE_MEM"].field_names
    assert GFX12["RELEASE_MEM"]["temporal"].shift == 25 and GFX12["INDIRECT_BUFFER"]["temporal"].shift == 28
    assert [d["ACQUIRE_MEM"].size for d in ALL] == [7, 8, 8, 8]
    assert [d["ACQUIRE_MEM"]["coher_size"].width for d in ALL] == [56, 40, 56, 56]  # COHER_SIZE_HI 24/8/24/24 bits
    assert GFX10["ACQUIRE_MEM"]["gl2_wb"].dword == 7 and GFX10["ACQUIRE_MEM"]["range_is_pa"].shift == 18
    # the same bits read differently: gfx9's TC_WB_ACTION_ENA is gfx10's GL1_INV
    raw = GFX9.build("RELEASE_MEM", tc_wb_action_ena=1)
    assert GFX10.decode(raw).gl1_inv == 1 and GFX10.decode(raw).encode() == raw


# --- the register tables ------------------------------------------------------------------------------------
# (register, gc_9_4_3 offset + seg0 0x2000, gc_10_3_0 / gc_11_0_0 / gc_12_0_0 offset + seg0 0x1260)
OFFSETS = [
    ("COMPUTE_DISPATCH_INITIATOR", 0x0E00 + 0x2000, 0x1BA0 + 0x1260),
    ("COMPUTE_NUM_THREAD_X", 0x0E07 + 0x2000, 0x1BA7 + 0x1260),
    ("COMPUTE_PGM_LO", 0x0E0C + 0x2000, 0x1BAC + 0x1260),
    ("COMPUTE_DISPATCH_SCRATCH_BASE_LO", 0x0E10 + 0x2000, 0x1BB0 + 0x1260),
    ("COMPUTE_PGM_RSRC1", 0x0E12 + 0x2000, 0x1BB2 + 0x1260),
    ("COMPUTE_RESOURCE_LIMITS", 0x0E15 + 0x2000, 0x1BB5 + 0x1260),
    ("COMPUTE_TMPRING_SIZE", 0x0E18 + 0x2000, 0x1BB8 + 0x1260),
    ("COMPUTE_RESTART_X", 0x0E1B + 0x2000, 0x1BBB + 0x1260),
    ("COMPUTE_PGM_RSRC3", 0x0E2D + 0x2000, 0x1BC8 + 0x1260),
    ("COMPUTE_USER_DATA_0", 0x0E40 + 0x2000, 0x1BE0 + 0x1260),
    ("COMPUTE_USER_DATA_15", 0x0E4F + 0x2000, 0x1BEF + 0x1260),
    ("GRBM_GFX_INDEX", 0x2200 + 0xA000, 0x2200 + 0xA000),  # BASE_IDX 1: seg1 0xA000
]


@pytest.mark.parametrize(("name", "gfx9", "gfx10_12"), OFFSETS, ids=[o[0] for o in OFFSETS])
def test_register_offsets_against_the_headers(name: str, gfx9: int, gfx10_12: int) -> None:
    assert REGISTERS["gfx9"][name].offset == gfx9
    for t in ("gfx10", "gfx11", "gfx12"):
        assert REGISTERS[t][name].offset == gfx10_12, t


def test_sh_index_is_offset_minus_0x2c00() -> None:
    assert SH_START == 0x2C00 and UCONFIG_START == 0xC000
    for table in REGISTERS.values():
        for r in table:
            if r.offset < 0x3000:
                assert table.sh_index(r.name) == r.offset - 0x2C00 and table.sh[r.offset - 0x2C00] == r.name
            else:
                assert table.uconfig_index(r.name) == r.offset - 0xC000
                with pytest.raises(ValueError, match="not an SH register"):
                    table.sh_index(r.name)
    assert REGISTERS["gfx9"].sh_index("COMPUTE_PGM_RSRC3") == 0x22D and REGISTERS["gfx11"].sh[0x228] == (
        "COMPUTE_PGM_RSRC3")
    assert [REGISTERS[t].sh_index("COMPUTE_USER_DATA_0") for t in REGISTERS] == [0x240] * 4
    for table in REGISTERS.values():
        assert [r.offset for r in table.user_data] == list(range(0x2E40, 0x2E50))


def test_register_fields_per_generation() -> None:
    widths = [REGISTERS[t]["COMPUTE_TMPRING_SIZE"].field("wavesize").width for t in REGISTERS]
    assert widths == [13, 13, 15, 18]  # b24:12 gfx9/10.3, b26:12 gfx11, b29:12 gfx12
    init = [REGISTERS[t]["COMPUTE_DISPATCH_INITIATOR"] for t in REGISTERS]
    with pytest.raises(KeyError, match="no field 'cs_w32_en'"):
        init[0].field("cs_w32_en")  # wave32 does not exist on gfx9
    assert [i.field("cs_w32_en").shift for i in init[1:]] == [15, 15, 15]
    assert REGISTERS["gfx12"]["COMPUTE_PGM_RSRC2"].field("dynamic_vgpr").shift == 6
    assert REGISTERS["gfx11"]["COMPUTE_PGM_RSRC2"].field("trap_present").shift == 6
    assert REGISTERS["gfx9"]["COMPUTE_PGM_RSRC3"].field("accum_offset").width == 6
    assert REGISTERS["gfx12"]["COMPUTE_PGM_RSRC3"].field("inst_pref_size").width == 8
    assert REGISTERS["gfx12"]["COMPUTE_NUM_THREAD_X"].field("num_thread_full").width == 13
    assert REGISTERS["gfx11"]["COMPUTE_NUM_THREAD_X"].field("num_thread_full").width == 16
    rsrc2 = REGISTERS["gfx9"]["COMPUTE_PGM_RSRC2"]
    value = rsrc2.encode(user_sgpr=8, tgid_x_en=1, lds_size=3, scratch_en=1)
    assert value == 8 << 1 | 1 << 7 | 3 << 15 | 1
    assert {k: v for k, v in rsrc2.decode(value).items() if v} == {"scratch_en": 1, "user_sgpr": 8, "tgid_x_en": 1,
                                                                    "lds_size": 3}
    with pytest.raises(ValueError, match="COMPUTE_PGM_RSRC2.user_sgpr=32 does not fit the field's 5 bits"):
        rsrc2.encode(user_sgpr=32)


def test_address_registers_split_and_join() -> None:
    for table in REGISTERS.values():
        assert [r.name for r in table.addresses["COMPUTE_PGM"]] == ["COMPUTE_PGM_LO", "COMPUTE_PGM_HI"]
        regs = table.split("COMPUTE_PGM", 0x7F12_3456_7800)
        assert regs == {"COMPUTE_PGM_LO": 0x1234_5678, "COMPUTE_PGM_HI": 0x7F}  # address >> 8, >> 40
        assert table.join("COMPUTE_PGM", regs) == 0x7F12_3456_7800
        assert table.split("COMPUTE_DISPATCH_SCRATCH_BASE", 1 << 40) == {
            "COMPUTE_DISPATCH_SCRATCH_BASE_LO": 0, "COMPUTE_DISPATCH_SCRATCH_BASE_HI": 1}
        with pytest.raises(ValueError, match="aligned to 256 bytes"):
            table.split("COMPUTE_PGM", 0x1080)
        with pytest.raises(ValueError, match="48-bit"):
            table.split("COMPUTE_PGM", 1 << 48)
        with pytest.raises(KeyError, match="COMPUTE_PGM_HI as well"):
            table.join("COMPUTE_PGM", {"COMPUTE_PGM_LO": 1})
        with pytest.raises(KeyError, match="no address 'CODE'"):
            table.split("CODE", 0)


# --- building and printing register writes ------------------------------------------------------------------
def test_set_sh_reg_by_name() -> None:
    for d in ALL:
        raw = d.set_sh_reg(COMPUTE_PGM_HI=0x7F, COMPUTE_PGM_LO=0x1234_5678)  # any order: sorted by index
        assert dwords(raw) == [packet3(0x76, 2), 0x20C, 0x1234_5678, 0x7F]
        p = d.decode(raw)
        assert str(p) == "SET_SH_REG COMPUTE_PGM_LO=0x12345678 COMPUTE_PGM_HI=0x7f"
        assert d.writes(p) == {0x2E0C: 0x1234_5678, 0x2E0D: 0x7F}
        assert dwords(d.set_uconfig_reg(GRBM_GFX_INDEX=0xE000_0000)) == [packet3(0x79, 1), 0x200, 0xE000_0000]
        assert str(d.decode(d.set_uconfig_reg(GRBM_GFX_INDEX=1))) == "SET_UCONFIG_REG GRBM_GFX_INDEX=0x1"
    rsrc3 = {"gfx9": 0x22D, "gfx10": 0x228, "gfx11": 0x228, "gfx12": 0x228}
    for d in ALL:
        assert dwords(d.set_sh_reg(COMPUTE_PGM_RSRC3=5))[1] == rsrc3[d.name]


def test_set_sh_reg_errors() -> None:
    with pytest.raises(ValueError, match="COMPUTE_PGM_LO and COMPUTE_PGM_RSRC1 are 6 apart"):
        GFX11.set_sh_reg(COMPUTE_PGM_LO=0, COMPUTE_PGM_RSRC1=0)
    with pytest.raises(KeyError, match="no register 'COMPUTE_PGM'"):
        GFX11.set_sh_reg(COMPUTE_PGM=0)
    with pytest.raises(ValueError, match="GRBM_GFX_INDEX .* is not an SH register"):
        GFX11.set_sh_reg(GRBM_GFX_INDEX=0)
    with pytest.raises(ValueError, match="COMPUTE_PGM_LO=4294967296 is not a 32-bit register value"):
        GFX11.set_sh_reg(COMPUTE_PGM_LO=1 << 32)
    with pytest.raises(ValueError, match="at least one register"):
        GFX11.set_sh_reg()
    with pytest.raises(PacketError, match="RELEASE_MEM writes no registers"):
        GFX11.writes(GFX11.decode(GFX11.build("RELEASE_MEM")))


def test_printer() -> None:
    raw = u32s(packet3(0x76, 2), 0x299, 1, 2)  # no register of the table at 0x2E99
    assert str(GFX9.decode(raw)) == "SET_SH_REG reg[0x299]=0x1 reg[0x29a]=0x2"
    rel = GFX11.decode(GFX11.build("RELEASE_MEM", event_type=0x14, event_index=5, data_sel=1, addr=0x1000, data=3))
    assert str(rel) == "RELEASE_MEM event_type=0x14 event_index=5 data_sel=1 addr=0x1000 data=3"  # count left out
    assert str(GFX11.decode(GFX11.build("WRITE_DATA", u32s(5, 6), dst_sel=5, dst=0x40))) == (
        "WRITE_DATA dst_sel=5 dst=0x40 payload=[0x5, 0x6]")


# --- stream decoding and errors ------------------------------------------------------------------------------
def test_iter_packets_mixed_stream() -> None:
    for d in ALL:
        parts = [
            d.build("NOP", u32s(0, 0, 0)),
            d.set_sh_reg(COMPUTE_USER_DATA_0=1, COMPUTE_USER_DATA_1=2, COMPUTE_USER_DATA_2=3),
            d.build("WRITE_DATA", u32s(1, 2, 3), dst_sel=5, dst=0x3000),
            d.build("WAIT_REG_MEM", mem_space=1, function=3, addr=0x40, reference=1, mask=0xFFFF_FFFF),
            d.build("INDIRECT_BUFFER", ib_base=0x8000, ib_size=4, valid=1),
            d.build("EVENT_WRITE", u32s(0x1000, 0), event_type=0x15, event_index=2),  # a sampling event + address
            d.build("RELEASE_MEM", data_sel=1, addr=0x40, data=1),
        ]
        stream = b"".join(parts)
        got = list(d.iter_packets(stream))
        assert [p.name for p in got] == ["NOP", "SET_SH_REG", "WRITE_DATA", "WAIT_REG_MEM", "INDIRECT_BUFFER",
                                         "EVENT_WRITE", "RELEASE_MEM"]
        assert [p.offset for p in got] == [sum(len(x) for x in parts[:i]) for i in range(len(parts))]
        assert b"".join(p.encode() for p in got) == stream
        assert got[5].payload == u32s(0x1000, 0) and got[5].fields["count"] == 2
        assert [s[:2] for s in d.spans(stream)] == [(p.offset, p.size) for p in got]


def test_unknown_and_truncated_packets() -> None:
    for d in ALL:
        with pytest.raises(UnknownPacket, match=r"unknown packet type=0x3 opcode=0x99 \(header 0xc0009900\) at "
                                                r"byte offset 0x8"):
            d.decode(d.build("NOP") + u32s(packet3(0x99, 0), 0), 8)
        with pytest.raises(UnknownPacket, match="type=0x2"):
            d.decode(u32s(0x8000_0000))  # a type-2 NOP is not a type-3 packet
        raw = d.build("RELEASE_MEM")
        with pytest.raises(TruncatedPacket, match="RELEASE_MEM at byte offset 0x0 needs 32 bytes, only 28 left"):
            d.decode(raw[:-4])
        with pytest.raises(TruncatedPacket, match="4-dword tail, only 2 dwords left"):
            d.decode(d.build("NOP", u32s(1, 2, 3, 4))[:-8])
        with pytest.raises(TruncatedPacket, match="no packet header"):
            d.decode(b"\0\0")
        short = u32s(packet3(0x49, 4), *[0] * 5)  # a RELEASE_MEM whose count says 6 dwords follow, not 8
        with pytest.raises(PacketError, match="RELEASE_MEM at byte offset 0x0 has count=4, 2 dwords short"):
            list(d.iter_packets(short))


def test_build_errors_name_the_field() -> None:
    with pytest.raises(TypeError, match="RELEASE_MEM has no field 'tc_wb_action_ena'"):
        GFX10.build("RELEASE_MEM", tc_wb_action_ena=1)
    with pytest.raises(ValueError, match="PRED_EXEC.exec_count=0x4000 does not fit the field's 14 bits"):
        GFX9.build("PRED_EXEC", exec_count=0x4000)
    with pytest.raises(ValueError, match="INDIRECT_BUFFER.ib_base=0x1001 is not 4-byte aligned"):
        GFX9.build("INDIRECT_BUFFER", ib_base=0x1001)
    with pytest.raises(KeyError, match="dialect gfx12 has no packet 'DMA_DATA'"):
        GFX12.build("DMA_DATA")


def test_register_addresses_relocate_whole() -> None:
    for d in ALL:
        code, scratch = 0x7F12_3456_7800, 0x7F00_0010_0000
        pgm = d.decode(d.set_sh_reg(**d.registers.split("COMPUTE_PGM", code), COMPUTE_DISPATCH_PKT_ADDR_LO=9))
        assert d.register_addresses(pgm) == {"COMPUTE_PGM": code}
        moved = d.relocate_registers(pgm, lambda a: a + (1 << 40))
        assert d.register_addresses(moved) == {"COMPUTE_PGM": code + (1 << 40)}
        assert d.writes(moved)[0x2E0E] == 9 and moved.size == pgm.size  # the register after them is kept
        base = d.decode(d.set_sh_reg(**d.registers.split("COMPUTE_DISPATCH_SCRATCH_BASE", scratch)))
        assert d.register_addresses(base) == {"COMPUTE_DISPATCH_SCRATCH_BASE": scratch}
        plain = d.decode(d.set_sh_reg(COMPUTE_USER_DATA_0=1))
        assert d.register_addresses(plain) == {} and d.relocate_registers(plain, lambda a: a + 1) is plain
        rel = d.decode(d.build("RELEASE_MEM"))
        assert d.register_addresses(rel) == {} and d.relocate_registers(rel, lambda a: a + 1) is rel
        half = d.decode(d.set_sh_reg(COMPUTE_PGM_HI=0x7F))
        with pytest.raises(PacketError, match="writes COMPUTE_PGM_HI but not all of COMPUTE_PGM"):
            d.relocate_registers(half, lambda a: a)


def test_clock_writes_are_volatile() -> None:
    for d in ALL:
        assert d["RELEASE_MEM"].volatile and d["COPY_DATA"].volatile  # some of them write a clock
        stamp = d.decode(d.build("RELEASE_MEM", data_sel=DataSel.GPU_CLOCK, addr=0x40))  # tinygrad's timestamp()
        assert stamp.volatile and stamp.written_addresses() == [0x40]
        assert not d.decode(d.build("RELEASE_MEM", data_sel=DataSel.DATA32, addr=0x40)).volatile
        assert not d.decode(d.build("RELEASE_MEM", data_sel=DataSel.NONE)).volatile
        assert d.decode(d.build("COPY_DATA", src_sel=CopySel.GPU_CLOCK, dst_sel=CopySel.TC_L2, dst=0x40)).volatile
        assert not d.decode(d.build("COPY_DATA", src_sel=CopySel.GPU_CLOCK, dst_sel=CopySel.REGISTER)).volatile
        assert not d.decode(d.build("COPY_DATA", src_sel=CopySel.TC_L2, dst_sel=CopySel.TC_L2, dst=0x40)).volatile
        assert not d["WRITE_DATA"].volatile and not d.decode(d.build("WRITE_DATA", u32s(1), dst_sel=5)).volatile


def test_packet_volatile_for_unconditional_tags() -> None:
    assert SDMA6.decode(SDMA6.build("TIMESTAMP_GET_GLOBAL", addr=0x40)).volatile
    assert not SDMA6.decode(SDMA6.build("FENCE", addr=0x40, data=1)).volatile
    with pytest.raises(ValueError, match="reserved"):
        PacketDef("X", {}, [Field("volatile", 0, 0, 1)])


def test_gfx942_per_xcc_scratch_bases() -> None:
    """tinygrad on a multi-XCC gfx942: each XCC's scratch base in a SET_SH_REG behind PRED_EXEC(1 << xcc)."""
    scratch, per_xcc = 0x7F00_0100_0000, 0x10_0000
    words = []
    for xcc in range(2):
        base = scratch + xcc * per_xcc
        words += [packet3(0x23, 0), (1 << xcc) << 24 | 4,  # PRED_EXEC: xcc_mask << 24 | 4 dwords governed
                  packet3(0x76, 2), 0x210, (base >> 8) & 0xFFFF_FFFF, base >> 40]
    got = list(GFX9.iter_packets(u32s(*words)))
    assert [p.name for p in got] == ["PRED_EXEC", "SET_SH_REG"] * 2
    for xcc, (pred, regs) in enumerate(zip(got[::2], got[1::2], strict=True)):
        assert pred.xcc_mask == 1 << xcc and pred.exec_count * 4 == regs.size
        assert GFX9.register_addresses(regs) == {"COMPUTE_DISPATCH_SCRATCH_BASE": scratch + xcc * per_xcc}
        assert str(regs).startswith("SET_SH_REG COMPUTE_DISPATCH_SCRATCH_BASE_LO=")
