"""PM4 translation between the gfx9, gfx10, gfx11 and gfx12 dialects (kfdtrace.replay.translate with the pm4 tables):
what the driver's ComputeQueue builds on one generation keeps its meaning on every other -- addresses moved, values
kept, the same cache actions asked (pm4.CACHE) -- and is what the driver builds there for the same request."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kfdtrace.driver.compute_queue import ComputeQueue
from kfdtrace.driver.dispatch import _invalidate_shader_caches
from kfdtrace.driver.packets import Packet
from kfdtrace.driver.pm4 import CACHE, DIALECTS, Cache, EventIndex, EventType, Pm4Dialect
from kfdtrace.driver.system import System
from kfdtrace.replay.translate import Relocation, ReplayError, Translator
from tests.emulated import u32
from tests.test_translate import outcome, packet, translators

BUFFER, SIZE, MOVED = 0x7F00_0000_0000, 1 << 20, 0x5500_0012_3000
EVENT = 3  # the recorded KFD event id; the replay's is EVENT + 1
MAILBOX = 0x200  # where in the buffer the systems below keep the event's mailbox (their event page, as moved)
# one emulated family per dialect; gfx942's eight XCCs put the writes under PRED_EXEC
FAMILY = {"gfx9": "gfx942", "gfx10": "gfx1030", "gfx11": "gfx1100", "gfx12": "gfx1201"}
PAIRS = [(a, b) for a in DIALECTS for b in DIALECTS]


class Sem:
    """What ComputeQueue.signal and .wait read of a semaphore: one 64-bit word at `addr`, and its event."""

    def __init__(self, addr: int, event_id: int):
        self.addr, self.event_id = addr, event_id

    def words(self, value: int) -> list[tuple[int, int]]:
        return [(self.addr, value)]

    def wait_word(self, value: int) -> tuple[int, int]:
        return self.addr, value


def _emit(build: Callable[[Pm4Dialect], bytes]) -> Callable[[ComputeQueue, int, int], object]:
    return lambda q, base, event: q.emit(build(q.dialect))


# The driver's requests, each at `base` (the buffer) with KFD event `event`.
REQUESTS: dict[str, Callable[[ComputeQueue, int, int], object]] = {
    "write_data": lambda q, base, event: q.write_data(base + 0x40, u32(1, 2, 3)),
    "copy_data": lambda q, base, event: q.copy_data(base + 0x80, base + 0x90, size=8),
    "timestamp": lambda q, base, event: q.timestamp(base + 0xA0),
    "indirect": lambda q, base, event: q.indirect(base + 0x1000, 64),
    "signal": lambda q, base, event: q.signal(Sem(base + 0x100, event), 7),
    "wait": lambda q, base, event: q.wait(Sem(base + 0x100, event), 5 << 32 | 9),
    "acquire": _emit(lambda d: d.build("ACQUIRE_MEM", **_invalidate_shader_caches(d))),
    "cs_partial_flush": _emit(lambda d: d.build("EVENT_WRITE", event_type=EventType.CS_PARTIAL_FLUSH,
                                                event_index=EventIndex.CS_PARTIAL_FLUSH)),
}


@pytest.fixture(scope="module")
def queues() -> Iterator[dict[str, ComputeQueue]]:
    """A compute queue of each dialect, only to build packets with (nothing is submitted)."""
    systems = {name: System.open(emulate=family) for name, family in FAMILY.items()}
    try:
        yield {name: s.devices[0].compute_queue() for name, s in systems.items()}
    finally:
        for s in systems.values():
            s.close()


def built(q: ComputeQueue, request: str, base: int, event: int) -> bytes:
    """The bytes the driver's helper puts on the ring for `request` (the event's mailbox at base + MAILBOX)."""
    q.device.system.event_mailbox = lambda event_id: base + MAILBOX
    REQUESTS[request](q, base, event)
    return b"".join(q.discard())


def translator(src: str, dst: str) -> Translator:
    relocation = Relocation()
    relocation.add(BUFFER, SIZE, MOVED)
    return Translator(DIALECTS[src], DIALECTS[dst], 1 << 22, relocation, event_id=lambda e: e and e + 1)  # 0: none


def meant(dialect: Pm4Dialect, data: bytes) -> list[Packet]:
    """The packets of `data` but PRED_EXEC heads, whose governed dwords are checked to be whole packets."""
    out, governed = [], []
    for p in dialect.iter_packets(data):
        if p.defn.skip_field:
            governed.append((p.offset + p.size, p.offset + p.size + 4 * p.fields[p.defn.skip_field]))
        else:
            out.append(p)
    starts = {p.offset for p in out} | {len(data)}
    assert all(start in starts and end in starts for start, end in governed)
    return out


def asked(dialect: Pm4Dialect, p: Packet) -> frozenset[str]:
    actions, stray = dialect.cache.read(p.name, p.fields)
    assert not stray, (dialect.name, p)
    return actions


@pytest.mark.parametrize("request_", REQUESTS)
@pytest.mark.parametrize(("src", "dst"), PAIRS, ids=[f"{a}-{b}" for a, b in PAIRS])
def test_what_the_driver_builds_keeps_its_meaning(queues, src: str, dst: str, request_: str) -> None:
    s, d = DIALECTS[src], DIALECTS[dst]
    recorded = built(queues[src], request_, BUFFER, EVENT)
    out = translator(src, dst).ring(recorded, "w")
    before, after = meant(s, recorded), meant(d, out)
    assert [p.name for p in after] == [p.name for p in before]
    cache = set(s.cache.fields(before[0].name)) | set(d.cache.fields(before[0].name))
    for a, b in zip(before, after, strict=True):
        assert b.addresses() == {k: v - BUFFER + MOVED for k, v in a.addresses().items()}
        assert b.payload == a.payload
        event = a.defn.event_field
        common = set(a.fields) & set(b.fields) - set(a.addresses()) - cache - {"count", event}
        whole = {n for n in common if getattr(a.defn[n], "saturates", False)}  # all ones: all of memory
        assert {n: b.fields[n] == b.defn[n].mask for n in whole} == {n: a.fields[n] == a.defn[n].mask for n in whole}
        assert {n: b.fields[n] for n in common - whole} == {n: a.fields[n] for n in common - whole}
        if event:
            assert b.fields[event] == (a.fields[event] and a.fields[event] + 1)
        assert asked(d, b) == asked(s, a)
    expected = built(queues[dst], request_, MOVED, EVENT + 1)
    theirs = meant(d, expected)
    if request_ == "signal":  # the mailbox keeps the recorded id: the kernel only asks whether it was written
        theirs = [d.decode(d.build(p.name, **{**p.fields, "data": EVENT})) if MOVED + MAILBOX in
                  p.addresses().values() else p for p in theirs]
    if [asked(d, p) for p in theirs] == [asked(s, p) for p in before]:  # the helpers ask the same of the caches
        assert [p.encode() for p in after] == [p.encode() for p in theirs]


def test_the_dispatch_acquire_asks_more_from_gfx10() -> None:
    """The one request whose helpers differ (tinygrad's acquire_mem): gfx10+ also writes back the scalar cache and
    the L2 metadata, which gfx9's asks not; translated, each keeps what it asked."""
    def acquire(d: Pm4Dialect) -> frozenset[str]:
        return asked(d, d.decode(d.build("ACQUIRE_MEM", **_invalidate_shader_caches(d))))
    assert acquire(DIALECTS["gfx9"]) == {Cache.SMEM_INV, Cache.VMEM_INV}
    assert {acquire(DIALECTS[n]) for n in ("gfx10", "gfx11", "gfx12")} == {
        frozenset({Cache.SMEM_INV, Cache.SMEM_WB, Cache.VMEM_INV, Cache.L2_METADATA})}


def test_pred_exec_counts_the_translated_packets() -> None:
    s, d = DIALECTS["gfx9"], DIALECTS["gfx11"]
    body = s.build("ACQUIRE_MEM", **_invalidate_shader_caches(s))  # 7 dwords on gfx9, 8 on gfx11
    out = translator("gfx9", "gfx11").ring(s.build("PRED_EXEC", exec_count=7, xcc_mask=2) + body, "w")
    head, acquire = d.iter_packets(out)
    assert (head.exec_count, head.xcc_mask, acquire.size) == (8, 2, 32)


# -- the table against what the kernel, Mesa and tinygrad emit -------------------------------------------------------
GFX9_MEM_SYNC = dict(sh_icache_action_ena=1, sh_kcache_action_ena=1, tc_action_ena=1, tcl1_action_ena=1,
                     tc_wb_action_ena=1)  # gfx_v9_0_emit_mem_sync
GFX10_MEM_SYNC = dict(gl2_inv=1, gl2_wb=1, glm_inv=1, glm_wb=1, gl1_inv=1, glv_inv=1, glk_inv=1, gli_inv=1)


@pytest.mark.parametrize("dst", ["gfx10", "gfx11", "gfx12"])
def test_the_kernels_gfx9_mem_sync_becomes_its_gfx10_mem_sync(dst: str) -> None:
    """The kernel's emit_mem_sync, one patch for both generations: gfx9's CP_COHER_CNTL translates to exactly
    gfx10's GCR_CNTL, and back it asks the same."""
    s, d = DIALECTS["gfx9"], DIALECTS[dst]
    out = d.decode(translator("gfx9", dst).ring(s.build("ACQUIRE_MEM", **GFX9_MEM_SYNC), "w"))
    assert {n for n in d.cache.fields("ACQUIRE_MEM") if out.fields[n]} == set(GFX10_MEM_SYNC)
    assert all(out.fields[n] == v for n, v in GFX10_MEM_SYNC.items())
    back = s.decode(translator(dst, "gfx9").ring(d.build("ACQUIRE_MEM", **GFX10_MEM_SYNC), "w"))
    assert asked(s, back) == asked(s, s.decode(s.build("ACQUIRE_MEM", **GFX9_MEM_SYNC))) == {
        Cache.L2_WB, Cache.L2_INV, Cache.L2_METADATA, Cache.VMEM_INV, Cache.SMEM_INV, Cache.ICACHE_INV}


def test_fences_of_the_kernel_and_tinygrad() -> None:
    gfx9, gfx10 = DIALECTS["gfx9"], DIALECTS["gfx10"]
    kernel = gfx9.decode(gfx9.build("RELEASE_MEM", tcl1_action_ena=1, tc_action_ena=1, tc_md_action_ena=1,
                                    tc_wb_action_ena=1))  # gfx_v9_0_ring_emit_fence
    assert asked(gfx9, kernel) == {Cache.L2_WB, Cache.L2_INV, Cache.L2_METADATA, Cache.VMEM_INV}
    tinygrad = gfx10.build("RELEASE_MEM", glv_inv=1, gl1_inv=1, gl2_inv=1, glm_wb=1, glm_inv=1, gl2_wb=1, seq=1,
                           addr=BUFFER, data_sel=1)  # AMDComputeQueue.signal on gfx10+
    out = gfx9.decode(translator("gfx10", "gfx9").ring(tinygrad, "w"))  # PAL's WbInvL1L2: TC_WB | TC_ACTION
    assert {n for n in gfx9.cache.fields("RELEASE_MEM") if out.fields[n]} == {"tc_action_ena", "tc_wb_action_ena"}


@pytest.mark.parametrize("name", DIALECTS)
def test_every_row_of_the_table_is_asked_back_as_written(name: str) -> None:
    """Writing any row's actions gives values that read back as exactly those actions (the table is consistent)."""
    cache = DIALECTS[name].cache
    for packet_name in CACHE[name]:
        for values, actions in cache.rows(packet_name):
            written = cache.write(packet_name, actions)
            assert written is not None and cache.read(packet_name, written) == (actions, ()), (packet_name, values)
            assert cache.read(packet_name, values)[1] == ()


# -- refusals -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("src", "dst", "fields", "message"), [
    ("gfx9", "gfx11", dict(tc_vol_action_ena=1),  # a cache bit the table gives no meaning
     r"^w: RELEASE_MEM.tc_vol_action_ena=0x1 has no gfx11 equivalent$"),
    ("gfx9", "gfx10", dict(tc_action_ena=1),  # TC without WB, NC or MD: none of the allowed combinations
     r"^w: RELEASE_MEM.tc_action_ena=0x1 at byte 0x0 asks no cache action the gfx9 table knows: it has no gfx10 "
     r"equivalent$"),
    ("gfx11", "gfx10", dict(glk_inv=1),
     r"RELEASE_MEM at byte 0x0: glk_inv ask invalidate scalar cache, which gfx10's RELEASE_MEM cannot ask$"),
    ("gfx10", "gfx9", dict(gl2_wb=1, glm_wb=1, glm_inv=1),  # the kernel's gfx10 fence: gfx9 would invalidate L2
     r"gl2_wb, glm_wb, glm_inv ask .*, which gfx9's RELEASE_MEM cannot ask without asking more"),
    ("gfx11", "gfx9", dict(cache_policy=3),
     r"RELEASE_MEM at byte 0x0: cache_policy ask L2 policy bypass, which gfx9's RELEASE_MEM cannot ask"),
    ("gfx12", "gfx11", dict(temporal=1), r"temporal ask L2 policy non-temporal, which gfx11's"),
    ("gfx11", "gfx12", dict(cache_policy=1), r"cache_policy ask L2 policy stream, which gfx12's"),
    ("gfx11", "gfx10", dict(wait_sync=1), r"RELEASE_MEM.wait_sync=0x1 has no gfx10 equivalent"),
])
def test_what_the_target_cannot_ask_is_refused(src: str, dst: str, fields: dict[str, int], message: str) -> None:
    ring = DIALECTS[src].build("RELEASE_MEM", addr=BUFFER, data_sel=1, **fields)
    with pytest.raises(ReplayError, match=message):
        translator(src, dst).ring(ring, "w")


@pytest.mark.parametrize(("mask", "xccs", "becomes"), [(0x1, (8, 1), 0x1), (0xFF, (8, 1), 0x1), (0x1, (1, 8), 0x1),
                                                    (0x3, (8, 2), 0x3), (0xFF, (8, 2), 0x3), (0x2, (8, 1), None),
                                                    (0x3, (8, 1), None)])
def test_an_xcc_mask_is_translated_for_the_target_s_xccs(mask: int, xccs: tuple[int, int], becomes: int | None) -> None:
    """Campaign 73: gfx942's PRED_EXEC of XCC 1 alone went unchanged to one-XCC targets, which skipped what it
    governs (a write the recording made), and a replay said DIVERGED."""
    d = DIALECTS["gfx9"]
    governed = d.build("WRITE_DATA", bytes(4), dst_sel=5, dst=BUFFER)
    ring = d.build("PRED_EXEC", exec_count=len(governed) // 4, xcc_mask=mask) + governed
    relocation = Relocation()
    relocation.add(BUFFER, SIZE, BUFFER)
    t = Translator(d, d, 1 << 22, relocation, xccs=xccs)
    if becomes is None:
        with pytest.raises(ReplayError, match=rf"w: PRED_EXEC.xcc_mask={mask:#x} runs what it governs on XCC\(s\) "
                                              rf".* of the recorded GPU's 8; this target has 1"):
            t.ring(ring, "w")
    else:
        out = t.ring(ring, "w")
        assert d.decode(out).fields["xcc_mask"] == becomes and out[-len(governed):] == governed


@pytest.mark.parametrize("src", ["gfx10", "gfx11", "gfx12"])
def test_a_value_only_the_source_writes_an_address_with_is_refused(src: str) -> None:
    """Campaign 73: RELEASE_MEM data_sel=7 (an atomic add, from gfx10.3) went to gfx9, which does not define it,
    its address left as it was."""
    ring = DIALECTS[src].build("RELEASE_MEM", addr=BUFFER, data_sel=7)
    with pytest.raises(ReplayError, match=r"w: RELEASE_MEM.data_sel=0x7 has no gfx9 equivalent \(there it does not "
                                          r"use addr\)"):
        translator(src, "gfx9").ring(ring, "w")
    assert translator(src, "gfx11").ring(ring, "w")  # a target that has it takes it


@pytest.mark.parametrize(("src", "dst"), [("gfx9", "gfx11"), ("gfx11", "gfx9"), ("gfx10", "gfx11")])
def test_a_policy_both_sides_name_is_carried(src: str, dst: str) -> None:
    s, d = DIALECTS[src], DIALECTS[dst]
    ring = s.build("COPY_DATA", src_sel=2, dst_sel=2, src=BUFFER, dst=BUFFER + 8, src_cache_policy=1)
    out = d.decode(translator(src, dst).ring(ring, "w"))
    assert (out.src_cache_policy, out.dst_cache_policy, out.src, out.dst) == (1, 0, MOVED, MOVED + 8)


@pytest.mark.parametrize("name", DIALECTS)
def test_the_same_dialect_passes_every_packet_through(name: str) -> None:
    """Dispatch packets (a replay's hook re-derives them across dialects) and cache bits no row covers alike."""
    d = DIALECTS[name]
    ring = b"".join([d.set_sh_reg(COMPUTE_PGM_LO=0x1234, COMPUTE_PGM_HI=0),
                     d.build("DISPATCH_DIRECT", dim_x=4, dim_y=1, dim_z=1, dispatch_initiator=1),
                     d.build("ACQUIRE_MEM", coher_size=5, gli_inv=2) if "gli_inv" in d["ACQUIRE_MEM"].field_names
                     else d.build("ACQUIRE_MEM", coher_size=5, tcl1_vol_action_ena=1)])
    relocation = Relocation()
    relocation.add(BUFFER, SIZE, BUFFER)
    assert Translator(d, d, 1 << 22, relocation).ring(ring, "w") == ring


# -- the generated translation ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("src", "dst"), PAIRS, ids=[f"{a}-{b}" for a, b in PAIRS])
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_generated_translation_is_the_general_way(src: str, dst: str, data) -> None:
    """Every PM4 packet with random values: the same bytes, or the same refusal, either way."""
    s = DIALECTS[src]
    fast, general = translators(s, DIALECTS[dst])
    for d in s:
        if d.skip_field is None:
            ring = packet(data.draw, s, d)
            assert outcome(fast, ring) == outcome(general, ring), d.name


# -- the emulator runs what was translated ------------------------------------------------------------------------
@pytest.mark.parametrize(("src", "target"), [("gfx9", "gfx1100"), ("gfx11", "gfx90a"), ("gfx10", "gfx1201")])
def test_an_emulated_queue_runs_a_translated_stream(queues, src: str, target: str) -> None:
    recorded = built(queues[src], "write_data", BUFFER, EVENT) + built(queues[src], "signal", BUFFER, EVENT)
    with System.open(emulate=target) as system:
        dev = system.devices[0]
        q, buf, done = dev.compute_queue(), dev.alloc(SIZE, "gtt"), system.semaphore("done")
        relocation = Relocation()
        relocation.add(BUFFER, 0x100, buf.va)
        relocation.add(BUFFER + 0x100, 8, done.addr)  # the recorded semaphore is the replay's `done`
        relocation.add(BUFFER + MAILBOX, 8, system.event_mailbox(done.event_id))  # and its mailbox, done's
        ring = Translator(DIALECTS[src], q.dialect, 1 << 22, relocation,
                          event_id=lambda e: done.event_id).ring(recorded, "w")
        q.emit(ring).submit()
        done.wait(7)
        assert buf.read(0x40, 12) == u32(1, 2, 3)
