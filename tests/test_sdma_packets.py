"""SDMA packet definitions and the generic packet machinery (kfdtrace.driver.packets / .sdma)."""

from __future__ import annotations

import copy
import itertools
import re
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kfdtrace.driver.packets import Addr, Dialect, Field, PacketDef, Tail, TruncatedPacket, UnknownPacket
from kfdtrace.driver.pm4 import DIALECTS as PM4_DIALECTS
from kfdtrace.driver.sdma import DIALECTS, OP, SDMA4_4, SDMA5, SDMA6, SDMA7, SUB_OP, AtomicOp, PollFunc
from tests.emulated import assert_engine_view_agrees

ALL = list(DIALECTS.values())
ALL_DEFS = [(d, p) for d in ALL for p in d]
PM4_DEFS = [(d, p) for d in PM4_DIALECTS.values() for p in d]


def dwords(b: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(b) // 4}I", b))


def u32s(*words: int) -> bytes:
    return struct.pack(f"<{len(words)}I", *words)


# --- round trips ------------------------------------------------------------------------------------------
def _values(draw, defn: PacketDef) -> tuple[dict[str, int], bytes]:
    fields = {}
    for f in defn.fields:
        if defn.tail and f.name == defn.tail.count:
            continue
        if isinstance(f, Addr):
            fields[f.name] = draw(st.integers(0, f.mask >> f.align)) << f.align
        else:
            fields[f.name] = draw(st.integers(0, f.mask))
    payload = b""
    if defn.tail:
        most = min(9, defn[defn.tail.count].mask + defn.tail.bias)  # a 1-bit count (sdma7 COPY_LINEAR) counts one
        n = draw(st.integers(max(0, -defn.tail.bias) + (1 if defn.tail.bias > 0 else 0), most))
        payload = u32s(*draw(st.lists(st.integers(0, 0xFFFF_FFFF), min_size=n, max_size=n)))
    return fields, payload


@pytest.mark.parametrize(("dialect", "defn"), ALL_DEFS, ids=[f"{d.name}-{p.name}" for d, p in ALL_DEFS])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_build_decode_round_trip(dialect: Dialect, defn: PacketDef, data) -> None:
    fields, payload = _values(data.draw, defn)
    raw = dialect.build(defn.name, payload, **fields)
    p = dialect.decode(raw)
    assert p.name == defn.name and p.defn is defn
    assert p.size == len(raw) == defn.size * 4 + len(p.payload)
    assert {k: p.fields[k] for k in fields} == fields
    if defn.tail:
        assert p.payload == payload
        assert p.fields[defn.tail.count] == len(payload) // 4 - defn.tail.bias
    assert p.encode() == raw
    assert dialect.packet(defn.name, payload, **fields) == p
    assert dialect.decode(raw).written_addresses() == p.written_addresses()  # from the dwords == from the fields
    assert_engine_view_agrees(dialect, raw)


def test_nontrivial_round_trip_every_packet_every_dialect() -> None:
    """Deterministic companion: all-ones in every field survive build -> decode -> encode."""
    for dialect, defn in ALL_DEFS:
        fields = {f.name: f.mask for f in defn.fields if not (defn.tail and f.name == defn.tail.count)}
        payload = u32s(0x11111111, 0x22222222)[:4 * (defn[defn.tail.count].mask + defn.tail.bias)] if defn.tail else b""
        raw = dialect.build(defn.name, payload, **fields)
        p = dialect.decode(raw)
        assert {k: p.fields[k] for k in fields} == fields, (dialect.name, defn.name)
        assert p.encode() == raw


# --- encodings derived by hand from the header facts ------------------------------------------------------
COPY = dict(count=0xFFF, src=0x7F00_0000_1000, dst=0x7F00_0020_0000)


@pytest.mark.parametrize("dialect", [SDMA4_4, SDMA5, SDMA6])
def test_copy_linear_encoding(dialect: Dialect) -> None:
    assert dwords(dialect.build("COPY_LINEAR", **COPY)) == [0x1, 0xFFF, 0, 0x1000, 0x7F00, 0x20_0000, 0x7F00]


def test_sdma7_copy_linear_has_a_dcc_dword_exactly_when_cpv_is_set() -> None:
    for d in (SDMA4_4, SDMA5, SDMA6):
        assert d["COPY_LINEAR"].size == 7 and len(d.build("COPY_LINEAR", **COPY)) == 28
    # ROCR's gfx12 copy: 7 dwords, CPV clear.
    assert dwords(SDMA7.build("COPY_LINEAR", **COPY)) == [0x1, 0xFFF, 0, 0x1000, 0x7F00, 0x20_0000, 0x7F00]
    # kernel sdma_v7_0_emit_copy_buffer: header | CPV(1), DW7 = 0 when no compression.
    assert dwords(SDMA7.build("COPY_LINEAR", cpv=1, **COPY)) == [0x0008_0001, 0xFFF, 0, 0x1000, 0x7F00,
                                                                 0x20_0000, 0x7F00, 0]
    # DW7 DCC word: data_format b5:0, num_type b11:9, read_cm b17:16, write_cm b19:18, max_com b25:24,
    # max_ucom b26 -- carried as the packet's tail
    dcc = 0x3F | 7 << 9 | 2 << 16 | 1 << 18 | 3 << 24 | 1 << 26
    p = SDMA7.decode(SDMA7.build("COPY_LINEAR", u32s(dcc), **COPY) + SDMA7.build("TRAP"))
    assert (p.size, p.fields["cpv"], p.payload) == (32, 1, u32s(dcc))
    # an sdma6 copy (CPV clear) reads the same on sdma7: the next packet's header is not swallowed
    two = SDMA6.build("COPY_LINEAR", **COPY) + SDMA6.build("TRAP")
    assert SDMA7.decode(two).size == 28 and SDMA7.decode(two, 28).name == "TRAP"


def test_copy_count_is_30_bits_everywhere_but_fill_count_follows_the_headers() -> None:
    for d in ALL:
        assert d["COPY_LINEAR"]["count"].width == 30
    assert SDMA4_4["CONST_FILL"]["count"].width == SDMA5["CONST_FILL"]["count"].width == 22
    assert SDMA6["CONST_FILL"]["count"].width == SDMA7["CONST_FILL"]["count"].width == 30


def test_fence_encoding() -> None:
    assert dwords(SDMA4_4.build("FENCE", addr=0x1234_5678_9ABC, data=7)) == [0x5, 0x5678_9ABC, 0x1234, 7]
    assert dwords(SDMA5.build("FENCE", mtype=3, addr=0x1000, data=1))[0] == 0x0003_0005  # kernel MTYPE(3)
    assert dwords(SDMA6.build("FENCE", cpv=1, llc_policy=1))[0] == 0x1400_0005
    assert "mtype" not in SDMA4_4["FENCE"].field_names


def test_poll_regmem_encoding() -> None:
    raw = SDMA6.build("POLL_REGMEM", func=PollFunc.EQ, mem_poll=1, addr=0x7F00_0000_0040, ref=1,
                      mask=0xFFFF_FFFF, interval=4, retry_count=0xFFF)
    assert dwords(raw) == [0x8000_0000 | 3 << 28 | 8, 0x40, 0x7F00, 1, 0xFFFF_FFFF, 0x0FFF_0004]
    assert dwords(SDMA4_4.build("POLL_REGMEM", func=PollFunc.GE, mem_poll=1))[0] == 0xD000_0008
    assert dwords(SDMA5.build("POLL_REGMEM", hdp_flush=1, func=3))[0] == 0x3400_0008


def test_other_headers() -> None:
    assert dwords(SDMA6.build("TRAP", int_context=0xABCDEF)) == [0x6, 0xABCDEF]
    assert dwords(SDMA6.build("NOP", count=3)) == [0x0003_0000, 0, 0, 0]
    assert dwords(SDMA6.build("CONST_FILL", fillsize=2, dst=0x2000, data=0xA5A5A5A5, count=0xFF)) == [
        0x8000_000B, 0x2000, 0, 0xA5A5A5A5, 0xFF]
    assert dwords(SDMA7.build("CONST_FILL", compress=1))[0] == 0x0001_000B  # kernel emit_fill_buffer
    assert dwords(SDMA6.build("TIMESTAMP_GET_GLOBAL", addr=0x7F00_0000_0008)) == [0x0000_020D, 0x8, 0x7F00]
    assert dwords(SDMA6.build("TIMESTAMP_GET", addr=0x10))[0] == 0x0000_010D
    assert dwords(SDMA6.build("INDIRECT", vmid=2, ib_base=0x7F00_0000_0020, ib_size=16, csa_addr=0)) == [
        0x0002_0004, 0x20, 0x7F00, 16, 0, 0]
    atomic = SDMA6.build("ATOMIC", atomic_op=AtomicOp.ADD64, addr=0x100, src_data=0x1_0000_0002,
                         cmp_data=0x3_0000_0004, loop_interval=0x1FFF)
    assert dwords(atomic) == [0x0A | 47 << 25, 0x100, 0, 2, 1, 4, 3, 0x1FFF]
    assert dwords(SDMA6.build("SEM", signal=1, addr=0x40)) == [0x4000_0007, 0x40, 0]
    assert dwords(SDMA6.build("COND_EXE", addr=0x40, reference=1, exec_count=5)) == [0x9, 0x40, 0, 1, 5]
    assert dwords(SDMA6.build("TIMESTAMP_SET", init_data=0x1_0000_0002)) == [0x000D, 2, 1]


def test_dummy_trap_opcode_moves_from_16_to_32() -> None:
    assert dwords(SDMA4_4.build("DUMMY_TRAP"))[0] == 16
    assert dwords(SDMA5.build("DUMMY_TRAP"))[0] == dwords(SDMA7.build("DUMMY_TRAP"))[0] == 32


def test_gcr_req() -> None:
    assert "GCR_REQ" not in SDMA4_4 and "USER_GCR" not in SDMA4_4
    with pytest.raises(KeyError, match="sdma4.4 has no packet 'GCR_REQ'"):
        SDMA4_4["GCR_REQ"]
    # kernel sdma_v5_2_ring_emit_mem_sync: GL2_INV|GL2_WB|GLM_INV|GL1_INV|GLV_INV|GLK_INV|GLI_INV(1) = 0xc3a1
    raw = SDMA5.build("GCR_REQ", gcr_control_lo=0xC3A1)
    assert dwords(raw) == [0x11, 0, 0xC3A1_0000, 0, 0]
    with pytest.raises(UnknownPacket, match="op=0x11"):
        SDMA4_4.decode(raw)
    # ROCR's user-queue form: sub_op SDMA_SUBOP_USER_GCR = 1; the VAs are 128-byte aligned, 48 bits wide
    user = SDMA6.build("USER_GCR", base_va=0x7F_0000_1080, limit_va=0x7F_0000_2F80, gcr_control_lo=0xC000,
                       gcr_control_hi=0x5, vmid=3)
    assert dwords(user) == [0x111, 0x1080, 0xC000_007F, 0x2F80 | 0x5, 0x0300_007F]
    assert SDMA6.decode(user).fields["limit_va"] == 0x7F_0000_2F80
    with pytest.raises(ValueError, match="128-byte aligned"):
        SDMA6.build("GCR_REQ", base_va=0x1040)
    with pytest.raises(ValueError, match="does not fit"):
        SDMA6.build("GCR_REQ", base_va=1 << 48)


# --- address tagging --------------------------------------------------------------------------------------
ADDRESSES = {
    "NOP": (), "TRAP": (), "DUMMY_TRAP": (), "PRE_EXE": (), "TIMESTAMP_SET": (),
    "COPY_LINEAR": ("src", "dst"), "WRITE_LINEAR": ("dst",), "CONST_FILL": ("dst",),
    "FENCE": ("addr",), "POLL_REGMEM": ("addr",), "ATOMIC": ("addr",), "SEM": ("addr",),
    "COND_EXE": ("addr",), "TIMESTAMP_GET": ("addr",), "TIMESTAMP_GET_GLOBAL": ("addr",),
    "INDIRECT": ("ib_base", "csa_addr"), "GCR_REQ": ("base_va", "limit_va"),
    "USER_GCR": ("base_va", "limit_va"),
}


@pytest.mark.parametrize("dialect", ALL, ids=lambda d: d.name)
def test_address_fields_tagged(dialect: Dialect) -> None:
    for defn in dialect:
        assert set(defn.address_fields) == set(ADDRESSES[defn.name]), defn.name
        for f in defn.fields:
            assert isinstance(f, Addr) == (f.name in defn.address_fields)
            if re.search(r"^(addr|src|dst)$|_(addr|va|base)$", f.name):
                assert isinstance(f, Addr), f"{defn.name}.{f.name} looks like an address but is not tagged"


def test_poll_on_a_register_has_no_address() -> None:
    # ROCR hdp_flush_cmd = {0x8, 0x0, 0x80000000, 0, 0, 0}: a register poll, its "address" is no memory
    p = SDMA4_4.decode(u32s(0x8, 0x0, 0x8000_0000, 0, 0, 0))
    assert p.name == "POLL_REGMEM" and p.fields["mem_poll"] == 0
    assert p.addresses() == {}
    assert p.relocate(lambda va: va + 0x1000).encode() == p.encode()
    mem = SDMA4_4.decode(SDMA4_4.build("POLL_REGMEM", mem_poll=1, addr=0x40))
    assert mem.addresses() == {"addr": 0x40}


def test_relocate() -> None:
    p = SDMA6.decode(SDMA6.build("COPY_LINEAR", **COPY))
    moved = p.relocate(lambda va: va + 0x1_0000_0000)
    assert moved.addresses() == {"src": 0x7F01_0000_1000, "dst": 0x7F01_0020_0000}
    assert moved.fields["count"] == 0xFFF and p.fields["src"] == COPY["src"]
    assert SDMA6.decode(moved.encode()) == moved
    with pytest.raises(ValueError, match="COPY_LINEAR.src=.*64 bits"):
        p.relocate(lambda va: va << 32)
    ts = SDMA6.decode(SDMA6.build("TIMESTAMP_GET_GLOBAL", addr=0x1000))
    with pytest.raises(ValueError, match="8-byte aligned"):
        ts.relocate(lambda va: va + 4)
    trap = SDMA6.decode(SDMA6.build("TRAP"))
    assert trap.relocate(lambda va: va + 1) is trap


# --- errors -----------------------------------------------------------------------------------------------
def test_value_too_wide() -> None:
    with pytest.raises(ValueError, match=r"COPY_LINEAR\.count=0x40000000 does not fit the field's 30 bits"):
        SDMA6.build("COPY_LINEAR", count=1 << 30)
    SDMA6.build("CONST_FILL", count=(1 << 30) - 1)
    with pytest.raises(ValueError, match=r"CONST_FILL\.count=0x400000 .* 22 bits"):
        SDMA4_4.build("CONST_FILL", count=1 << 22)
    with pytest.raises(ValueError, match=r"TRAP\.int_context"):
        SDMA6.build("TRAP", int_context=1 << 28)
    with pytest.raises(ValueError, match=r"POLL_REGMEM\.func=-0x1"):
        SDMA6.build("POLL_REGMEM", func=-1)
    with pytest.raises(ValueError, match=r"TIMESTAMP_GET_GLOBAL\.addr=0x1004 is not 8-byte aligned"):
        SDMA6.build("TIMESTAMP_GET_GLOBAL", addr=0x1004)
    with pytest.raises(ValueError, match=r"ATOMIC\.src_data"):
        SDMA6.build("ATOMIC", src_data=1 << 64)


def test_unknown_field_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="COPY_LINEAR has no field 'sauce'"):
        SDMA6.build("COPY_LINEAR", sauce=1)
    with pytest.raises(TypeError, match="'mtype'"):
        SDMA4_4.build("FENCE", mtype=3)  # gfx9 FENCE has no mtype
    with pytest.raises(TypeError, match="must be an int"):
        SDMA6.build("FENCE", data="1")
    p = SDMA6.decode(SDMA6.build("FENCE"))
    with pytest.raises(TypeError, match="'dst'"):
        p.replace(dst=1)
    with pytest.raises(KeyError):
        SDMA6.build("COPY_LINER")


def test_unknown_opcode_message() -> None:
    stream = SDMA6.build("NOP") + SDMA6.build("TRAP") + u32s(0x0000_053F)
    with pytest.raises(UnknownPacket) as err:
        list(SDMA6.iter_packets(stream))
    msg = str(err.value)
    assert isinstance(err.value, ValueError)
    for part in ("sdma6", "op=0x3f", "sub_op=0x5", "byte offset 0xc", "header 0x0000053f"):
        assert part in msg
    with pytest.raises(UnknownPacket, match="sdma7: unknown packet op=0x1 sub_op=0x2"):
        SDMA7.decode(u32s(0x0201, 0, 0, 0, 0, 0, 0, 0))  # COPY sub_op 2 is not defined


def test_truncated() -> None:
    raw = SDMA6.build("COPY_LINEAR", **COPY)
    with pytest.raises(TruncatedPacket, match="COPY_LINEAR at byte offset 0x4 needs 28 bytes, only 24 left"):
        SDMA6.decode(b"\0\0\0\0" + raw[:-4], 4)
    with pytest.raises(TruncatedPacket, match="no packet header at byte offset 0x4"):
        SDMA6.decode(b"\0\0\0\0\0\0", 4)
    write = SDMA6.build("WRITE_LINEAR", u32s(1, 2, 3), dst=0x1000)
    with pytest.raises(TruncatedPacket, match="WRITE_LINEAR at byte offset 0x0 has a 3-dword tail, only 2"):
        SDMA6.decode(write[:-4])
    with pytest.raises(TruncatedPacket):
        list(SDMA6.iter_packets(raw + raw, end=len(raw) + 8))
    assert issubclass(TruncatedPacket, ValueError)


# --- variable-size packets --------------------------------------------------------------------------------
def test_nop_count_skips_dwords() -> None:
    # the skipped dwords would not decode as packets: the NOP must carry them
    nop = SDMA6.build("NOP", u32s(0xDEAD_BEEF, 0xFFFF_FFFF, 0x3F))
    assert dwords(nop)[0] == 3 << 16
    stream = nop + SDMA6.build("FENCE", addr=0x40, data=9)
    packets = list(SDMA6.iter_packets(stream))
    assert [(p.name, p.offset, p.size) for p in packets] == [("NOP", 0, 16), ("FENCE", 16, 16)]
    assert packets[0].fields["count"] == 3 and packets[0].payload == u32s(0xDEAD_BEEF, 0xFFFF_FFFF, 0x3F)
    assert dwords(SDMA6.build("NOP")) == [0]
    assert SDMA6.build("NOP", count=2) == SDMA6.build("NOP", bytes(8)) == u32s(2 << 16, 0, 0)  # whole packet


def test_write_linear_payload() -> None:
    data = u32s(*range(100, 105))
    raw = SDMA5.build("WRITE_LINEAR", data, dst=0x7F00_0000_0100)
    assert dwords(raw)[:4] == [0x2, 0x100, 0x7F00, 4]  # count = dwords - 1
    p = SDMA5.decode(raw)
    assert p.payload == data and p.fields["count"] == 4 and p.size == 36
    assert "payload=[0x64, 0x65, 0x66, 0x67, +1dw]" in str(p)
    q = p.replace(payload=u32s(7))
    assert q.fields["count"] == 0 and q.size == 20 and dwords(q.encode()) == [0x2, 0x100, 0x7F00, 0, 7]
    assert p.replace(dst=0x200).payload == data
    with pytest.raises(ValueError, match="disagrees"):
        SDMA5.build("WRITE_LINEAR", data, count=9)
    with pytest.raises(ValueError, match="disagrees"):
        p.replace(count=1)
    with pytest.raises(ValueError, match="whole dwords"):
        SDMA5.build("WRITE_LINEAR", b"abc")
    assert dwords(SDMA5.build("WRITE_LINEAR", count=2)) == [0x2, 0, 0, 2, 0, 0, 0]  # no payload: zeros
    assert SDMA5.build("WRITE_LINEAR", b"", count=2) == SDMA5.build("WRITE_LINEAR", bytes(12))
    with pytest.raises(ValueError, match="no variable tail"):
        SDMA5.build("FENCE", b"\0\0\0\0")


def test_iter_packets_mixed_stream() -> None:
    for d in ALL:
        parts = [
            d.build("COPY_LINEAR", **COPY),
            d.build("WRITE_LINEAR", u32s(1, 2), dst=0x3000),
            d.build("NOP", count=1),
            d.build("FENCE", addr=0x40, data=1),
            d.build("POLL_REGMEM", func=PollFunc.GE, mem_poll=1, addr=0x40, ref=1, mask=0xFFFF_FFFF),
            d.build("ATOMIC", atomic_op=AtomicOp.ADD64, addr=0x48, src_data=1),
            d.build("TRAP", int_context=5),
        ]
        stream = b"".join(parts)
        offsets = [sum(len(x) for x in parts[:i]) for i in range(len(parts))]
        got = list(d.iter_packets(stream))
        assert [p.name for p in got] == ["COPY_LINEAR", "WRITE_LINEAR", "NOP", "FENCE", "POLL_REGMEM",
                                         "ATOMIC", "TRAP"]
        assert [p.offset for p in got] == offsets
        assert b"".join(p.encode() for p in got) == stream
        assert [p.offset for p in d.iter_packets(bytearray(stream), offsets[2], offsets[5])] == offsets[2:5]
        assert [p.name for p in d.iter_packets(memoryview(stream).cast("I"))] == [p.name for p in got]


def test_str_shows_hex_addresses() -> None:
    p = SDMA6.decode(SDMA6.build("COPY_LINEAR", **COPY))
    assert str(p) == "COPY_LINEAR count=0xfff src=0x7f0000001000 dst=0x7f0000200000"
    assert str(SDMA6.decode(SDMA6.build("FENCE", data=3))) == "FENCE addr=0x0 data=3"
    assert str(SDMA4_4.decode(SDMA4_4.build("POLL_REGMEM", func=5, mem_poll=1, addr=0x1000, mask=0xFF))) == (
        "POLL_REGMEM func=5 mem_poll=1 addr=0x1000 mask=0xff")
    assert repr(p).endswith("@0x0>")


# --- packet objects ---------------------------------------------------------------------------------------
def test_undeclared_bits_survive_reencoding() -> None:
    raw = dwords(SDMA6.build("COPY_LINEAR", **COPY))
    raw[1] |= 1 << 31  # reserved bit above the 30-bit count
    raw[0] |= 1 << 27  # broadcast: not modelled, but kept
    p = SDMA6.decode(u32s(*raw))
    assert dwords(p.replace(dst=0x5000).encode()) == [raw[0], raw[1], 0, 0x1000, 0x7F00, 0x5000, 0]


def test_packet_accessors() -> None:
    p = SDMA6.decode(SDMA6.build("FENCE", addr=0x40, data=9), 0)
    assert p.addr == 0x40 and p.data == 9
    with pytest.raises(AttributeError):
        p.nope  # noqa: B018
    assert p.replace(data=10).fields["data"] == 10 and p.fields["data"] == 9
    assert p.replace(data=10).dwords == SDMA6["FENCE"].unpack_from(SDMA6.build("FENCE", addr=0x40, data=10))
    c = copy.copy(p)
    assert c == p and c.fields is p.fields


def test_codecs_are_compiled_when_a_definition_is_first_used() -> None:
    """Importing the tables compiles no codec (about 30 ms of every start-up); the first decode compiles its
    definition's alone, and other attributes are still missing as usual."""
    code = textwrap.dedent("""
        from kfdtrace.driver.sdma import DIALECTS
        defs = [d for dialect in DIALECTS.values() for d in dialect]
        assert not any("_decode" in d.__dict__ for d in defs)
        fence = DIALECTS["sdma6"]["FENCE"]
        assert DIALECTS["sdma6"].decode(DIALECTS["sdma6"].build("FENCE", addr=0x40, data=9)).fields["data"] == 9
        assert {id(d) for d in defs if "_decode" in d.__dict__} == {id(fence)}  # one definition, maybe shared
        try:
            fence._nothing
        except AttributeError as exc:
            assert "_nothing" in str(exc)
        else:
            raise AssertionError("no AttributeError")
    """)
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(("dialect", "defn"), ALL_DEFS + PM4_DEFS,
                         ids=[f"{d.name}-{p.name}" for d, p in ALL_DEFS + PM4_DEFS])
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_show_from_dwords_words_a_packet_as_its_fields_do(dialect: Dialect, defn: PacketDef, data) -> None:
    """A decoded fixed-size packet is shown by generated code straight from its dwords; a packet whose fields
    are set is shown from them: the two say the same, with and without buffer names for its addresses."""
    fields, payload = _values(data.draw, defn)
    raw = dialect.build(defn.name, payload, **fields)
    named = data.draw(st.sampled_from([None, lambda a: f"buf+{a % 7:#x}" if a % 3 else None]))
    as_decoded, from_fields = dialect.decode(raw), dialect.packet(defn.name, payload, **fields)
    assert as_decoded.show(named) == from_fields.show(named)
    assert str(as_decoded) == str(from_fields) == as_decoded.show()


def test_fields_are_decoded_when_first_read() -> None:
    raw = dwords(SDMA6.build("COPY_LINEAR", **COPY))
    raw[0] |= 1 << 27  # declared by no field
    p = SDMA6.decode(u32s(*raw))
    unread = copy.copy(p)
    assert p.encode() == u32s(*raw)  # unread: its own dwords
    assert p.fields == SDMA6["COPY_LINEAR"]._decode(tuple(raw)) and p.fields is p.fields
    assert p.encode() == u32s(*raw) and unread.count == COPY["count"] and unread == p


def test_build_refuses_what_packet_refuses() -> None:
    """The generated builders accept and refuse exactly the values `packet` does, whatever the order."""
    assert SDMA6.build("POLL_REGMEM", func=PollFunc.GE, mem_poll=True) == \
        SDMA6.packet("POLL_REGMEM", mem_poll=1, func=5).encode()
    assert SDMA6.build("FENCE", data=2, addr=0x40) == SDMA6.build("FENCE", addr=0x40, data=2)
    assert SDMA6.build("TRAP") == u32s(6, 0)
    for bad in (1.0, "1", None):
        with pytest.raises(TypeError, match=r"FENCE\.data must be an int"):
            SDMA6.build("FENCE", addr=0x40, data=bad)
    with pytest.raises(ValueError, match=r"FENCE\.addr=-0x40 does not fit the field's 64 bits"):
        SDMA6.build("FENCE", addr=-0x40)

    def error(fn) -> tuple:
        with pytest.raises(Exception) as info:
            fn()
        return info.type, str(info.value)
    for big in (np.uint32(1), np.int64(1)):  # numpy's own error, as before
        assert error(lambda: SDMA6.build("FENCE", data=big)) == error(lambda: SDMA6.packet("FENCE", data=big))  # noqa: B023
    atomic = SDMA6["ATOMIC"]
    orders = itertools.permutations(atomic.field_names[:5])
    for n, names in enumerate(itertools.islice(orders, 100)):  # kept builders are bounded; the rest still build
        fields = {k: (n * 0x9E37_79B1 + i) & atomic[k].mask for i, k in enumerate(names)}
        assert SDMA6.build("ATOMIC", **fields) == SDMA6.packet("ATOMIC", **fields).encode()
    assert len(atomic._builders) == 64


def test_enums() -> None:
    assert [int(f) for f in PollFunc] == [0, 1, 2, 3, 4, 5, 6]
    assert PollFunc.EQ == 3 and PollFunc.GE == 5
    assert AtomicOp.ADD64 == 47  # ROCR SDMA_ATOMIC_ADD64
    assert AtomicOp.SWAP64 == 0x27 and AtomicOp.CMPSWAP64 == 0x28
    assert AtomicOp.ADD64_NORET == AtomicOp.ADD64 + 0x40


# --- versions are data ------------------------------------------------------------------------------------
def test_versions_share_unchanged_definitions() -> None:
    assert SDMA5["TRAP"] is SDMA4_4["TRAP"] and SDMA7["FENCE"] is SDMA6["FENCE"]
    assert SDMA7["CONST_FILL"] is not SDMA6["CONST_FILL"] and "sw" not in SDMA7["CONST_FILL"].field_names
    assert set(DIALECTS) == {"sdma4.4", "sdma5", "sdma6", "sdma7"}
    for d in ALL:
        for defn in d:
            assert OP in defn.header and SUB_OP in defn.header


def test_machinery_rejects_bad_tables() -> None:
    with pytest.raises(ValueError, match="overlaps"):
        PacketDef("X", {OP: 1}, [Field("a", 0, 4, 8), Field("b", 0, 8, 4)])
    with pytest.raises(ValueError, match="overlaps op"):
        PacketDef("X", {OP: 1}, [Field("a", 0, 0, 1)])
    with pytest.raises(ValueError, match="reserved"):
        PacketDef("X", {OP: 1}, [Field("size", 1)])
    with pytest.raises(ValueError, match="tail count"):
        PacketDef("X", {OP: 1}, [Field("a", 1)], tail=Tail("n"))
    with pytest.raises(ValueError, match="share header"):
        Dialect("t", [PacketDef("A", {OP: 1}), PacketDef("B", {OP: 1})])
    with pytest.raises(KeyError):
        SDMA6.derive("bad", fields={"NOT_A_PACKET": [Field("a", 1)]})


def test_field_spanning_dwords_and_sized_packets() -> None:
    d = Dialect("t", [PacketDef("W", {OP: 3}, [Field("wide", 0, 24, 40)], size=3)])
    raw = d.build("W", wide=(1 << 40) - 2)
    assert d["W"].size == 3 and dwords(raw) == [0xFE00_0003, 0xFFFF_FFFF, 0]
    assert d.decode(raw).fields["wide"] == (1 << 40) - 2


def test_written_addresses_are_tagged_in_every_dialect():
    """Capture checkpoints what the GPU wrote: the destinations, never the sources or polled words."""
    from kfdtrace.driver.sdma import DIALECTS

    expected = {"COPY_LINEAR": ("dst",), "WRITE_LINEAR": ("dst",), "CONST_FILL": ("dst",), "FENCE": ("addr",),
                "ATOMIC": ("addr",), "TIMESTAMP_GET_GLOBAL": ("addr",), "POLL_REGMEM": (), "INDIRECT": ()}
    for dialect in DIALECTS.values():
        for name, written in expected.items():
            assert dialect[name].written_fields == written, (dialect.name, name)
        p = dialect.decode(dialect.build("COPY_LINEAR", count=7, src=0x1000, dst=0x2000))
        assert p.written_addresses() == [0x2000]


# --- meaning tags -----------------------------------------------------------------------------------------
def _tagged(dialect: Dialect, attr: str) -> dict[str, object]:
    return {p.name: getattr(p, attr) for p in dialect if getattr(p, attr)}


@pytest.mark.parametrize("dialect", ALL, ids=lambda d: d.name)
def test_meaning_tags_every_dialect(dialect: Dialect) -> None:
    assert _tagged(dialect, "indirect") == {"INDIRECT": ("ib_base", "ib_size")}
    assert _tagged(dialect, "volatile") == {"TIMESTAMP_GET": True, "TIMESTAMP_GET_GLOBAL": True}
    assert _tagged(dialect, "volatile_fields") == {"TIMESTAMP_GET": ("addr",), "TIMESTAMP_GET_GLOBAL": ("addr",)}
    # SDMA 6 replaces CONST_FILL's count (30 bits): the replacement keeps the byte_count tag
    assert _tagged(dialect, "split") == {"COPY_LINEAR": ("count", ("src", "dst")), "CONST_FILL": ("count", ("dst",))}
    assert set(_tagged(dialect, "droppable")) == ({"GCR_REQ", "USER_GCR"} if "GCR_REQ" in dialect else set())
    assert _tagged(dialect, "signal") == {"FENCE": ("addr", "data")}
    assert _tagged(dialect, "wait") == {"POLL_REGMEM": ("addr", "ref", "mask", "func")}
    assert _tagged(dialect, "event_field") == {"TRAP": "int_context"}  # DUMMY_TRAP signals no process event
    for defn in dialect:
        assert set(defn.volatile_fields) <= set(defn.written_fields)
        if defn.signal:
            assert defn.signal[0] in defn.written_fields and defn[defn.signal[1]].width == 32


def test_wait_describes_the_layout_addresses_say_whether_it_is_memory() -> None:
    register = SDMA6.decode(SDMA6.build("POLL_REGMEM", mem_poll=0, addr=0x40))
    memory = SDMA6.decode(SDMA6.build("POLL_REGMEM", mem_poll=1, addr=0x40))
    assert register.defn.wait == memory.defn.wait == ("addr", "ref", "mask", "func")
    assert register.addresses() == {} and memory.addresses() == {"addr": 0x40}


def test_tags_survive_derivation() -> None:
    fence = SDMA6["FENCE"].with_fields(Field("extra", 0, 29, 1))
    assert fence.signal == ("addr", "data")
    assert SDMA6["GCR_REQ"].with_fields(drop=["vmid"]).droppable
    derived = SDMA6.derive("t", fields={"COPY_LINEAR": [Field("extra", 0, 29, 1)]})
    assert derived["COPY_LINEAR"].split == ("count", ("src", "dst"))
    assert derived["TRAP"].event_field == "int_context" and derived["INDIRECT"].indirect == ("ib_base", "ib_size")
    with pytest.raises(ValueError, match=r"FENCE\.addr: value names unknown field 'data'"):
        SDMA6["FENCE"].with_fields(drop=["data"])


@pytest.mark.parametrize(("fields", "match"), [
    ([Addr("a", 1, indirect="n")], r"X\.a: indirect names unknown field 'n'"),
    ([Addr("a", 1, written=True, value="v")], r"X\.a: value names unknown field 'v'"),
    ([Addr("a", 1, polled=("ref", "mask", "fn")), Field("ref", 3), Field("mask", 4)],
     r"X\.a: polled names unknown field 'fn'"),
    ([Addr("a", 1, when=("m", 1))], r"X\.a: when names unknown field 'm'"),
    ([Addr("a", 1, written=True, value="b"), Addr("b", 3)], r"X\.a: value names address 'b'"),
    ([Addr("a", 1, value="d"), Field("d", 3)], r"X\.a: .* not tagged written"),
    ([Addr("a", 1, volatile=True)], r"X\.a: .* not tagged written"),
    ([Addr("a", 1, advances=True)], r"X\.a: advances, but no field is tagged byte_count"),
    ([Field("e", 1, event=True), Field("f", 2, event=True)], r"X: more than one field tagged event"),
])
def test_bad_tags_raise(fields: list[Field | Addr], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PacketDef("X", {OP: 1}, fields)


def test_translator_follows_tags_not_names() -> None:
    """Replay splits, drops and maps events by the tags alone: packets of any name behave alike."""
    from kfdtrace.replay.translate import Relocation, Translator

    move = PacketDef("MOVE", {OP: 1}, [Field("n", 1, 0, 8, byte_count=True), Addr("a", 2, advances=True),
                                       Addr("b", 4, written=True, advances=True)])
    ring = PacketDef("RING", {OP: 2}, [Field("ev", 1, event=True)])
    src = Dialect("s", [move, ring, PacketDef("FLUSH", {OP: 3}, droppable=True)])
    relocation = Relocation()
    relocation.add(0x1000, 0x1000, 0x9000)
    t = Translator(src, Dialect("t", [move, ring]), 100, relocation, event_id=lambda e: e + 1)
    out = t.ring(src.build("MOVE", n=249, a=0x1000, b=0x1800) + src.build("FLUSH") + src.build("RING", ev=4), "w")
    assert [(p.name, p.fields) for p in t.dst.iter_packets(out)] == [
        ("MOVE", {"n": 99, "a": 0x9000, "b": 0x9800}), ("MOVE", {"n": 99, "a": 0x9064, "b": 0x9864}),
        ("MOVE", {"n": 49, "a": 0x90C8, "b": 0x98C8}), ("RING", {"ev": 5})]
    assert t.dropped == ["w: FLUSH (no t form; caches need no request there)"]


def test_put_sets_one_field_in_place() -> None:
    for dialect in (SDMA4_4, SDMA7):
        d = dialect["TRAP"]
        buf = bytearray(dialect.build("NOP") + dialect.build("TRAP", int_context=5))
        buf[7] |= 0xF0  # bits of the header no field declares (SDMA's sub_op/op live in the low bytes)
        before = bytes(buf)
        d.put(buf, 4, "int_context", 0xABCDE)
        p = dialect.decode(buf, 4)
        assert p.fields["int_context"] == 0xABCDE and buf[:8] == before[:8]
        with pytest.raises(ValueError, match="int_context=0x10000000 does not fit"):
            d.put(buf, 4, "int_context", 1 << 28)


def test_written_ranges_count_the_bytes_the_table_says_a_packet_writes():
    d = DIALECTS["sdma6"]
    copy = d.decode(d.build("COPY_LINEAR", count=255, src=0x1000, dst=0x2000))
    fence = d.decode(d.build("FENCE", addr=0x3000, data=7))
    stamp = d.decode(d.build("TIMESTAMP_GET", addr=0x4000))
    assert (copy.written_ranges(), fence.written_ranges(), stamp.written_ranges()) == \
        ([(0x2000, 256)], [(0x3000, 4)], [(0x4000, 8)])


@pytest.mark.parametrize("dialect", ALL, ids=lambda d: d.name)
def test_a_copy_says_what_it_copies_and_nothing_else_does(dialect: Dialect) -> None:
    """Packet.copied, from the tables alone: COPY_LINEAR reads one address and writes one, both advancing with its
    byte count; a fill advances a written address alone."""
    copy_ = dialect.decode(dialect.build("COPY_LINEAR", count=4095, src=0x7F00_0000_1000, dst=0x7F00_0002_0004))
    assert copy_.copied() == (0x7F00_0000_1000, 0x7F00_0002_0004, 4096)
    assert dialect.decode(dialect.build("CONST_FILL", dst=0x1000, data=7, count=63)).copied() is None
    assert dialect.decode(dialect.build("FENCE", addr=0x1000, data=1)).copied() is None
