"""Replay's packet translation (kfdtrace.replay.translate): the translation generated from the two tables gives
exactly the bytes, and refuses exactly the packets, that the general way (decode, relocate, encode) does."""

from __future__ import annotations

import struct
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kfdtrace.driver.packets import Addr, Dialect, PacketDef
from kfdtrace.driver.sdma import DIALECTS
from kfdtrace.replay.translate import OutsideBuffers, Relocation, ReplayError, Translator

BUFFER, SIZE, MOVED = 0x7F00_0000_0000, 1 << 20, 0x5500_0012_3000
PAIRS = [(a, b) for a in DIALECTS.values() for b in DIALECTS.values()]
IDS = [f"{a.name}-{b.name}" for a, b in PAIRS]


def translators(src: Dialect, dst: Dialect, max_copy: int = 1 << 22) -> tuple[Translator, Translator]:
    """(a translator, one that always takes the general way) over the same relocation."""
    relocation = Relocation()
    relocation.add(BUFFER, SIZE, MOVED)
    fast, general = (Translator(src, dst, max_copy, relocation, event_id=lambda e: e + 1) for _ in range(2))
    general._compile = lambda d, plan: None  # type: ignore[method-assign]
    for d in src:
        if d.name in dst or d.droppable:
            fast._plan(d)  # else a translator's first packet of a kind takes the general way
    return fast, general


def outcome(t: Translator, ring: bytes) -> tuple:
    """What translating `ring` gives: the bytes, the dropped packets and the writes recorded, or the error's type
    and message."""
    writes: list = []
    try:
        return t.ring(ring, "w", writes), t.dropped, writes
    except (ValueError, ReplayError) as exc:
        return type(exc), str(exc)


def _value(draw, f) -> int:
    if isinstance(f, Addr):  # null, in the buffer, anywhere (outside every buffer, misaligned)
        inside = BUFFER + (draw(st.integers(0, SIZE - 1)) >> f.align << f.align)
        return draw(st.sampled_from([0, inside, inside, draw(st.integers(0, f.mask >> f.align)) << f.align]))
    return draw(st.sampled_from([0, 0, 1, f.mask, draw(st.integers(0, f.mask))]))


def undeclared(d: PacketDef) -> list[int]:
    """Per dword of the fixed part, the bits no header constant or field declares."""
    masks = [0xFFFF_FFFF] * d.size
    for f in (*d.header, *d.fields):
        base = f.dword * 32
        start, end = (base + f.align, base + f.width) if isinstance(f, Addr) else (base + f.shift,
                                                                                     base + f.shift + f.width)
        for bit in range(start, end):
            masks[bit // 32] &= ~(1 << bit % 32)
    return masks


def packet(draw, dialect: Dialect, d: PacketDef) -> bytes:
    """A packet of `d` with values drawn (all of them, or a few with the others 0), bits no field declares set at
    random."""
    names = [f.name for f in d.fields if not (d.tail and f.name == d.tail.count)]
    drawn = set(names) if draw(st.booleans()) or not names else draw(st.sets(st.sampled_from(names), max_size=2))
    fields = {f.name: _value(draw, f) if f.name in drawn or isinstance(f, Addr) else 0
              for f in d.fields if f.name in names}
    payload = bytes(4 * draw(st.integers(0, 3))) if d.tail and d.tail.bias > 0 else b""
    raw = dialect.build(d.name, payload, **fields)
    words = struct.unpack_from(f"<{d.size}I", raw)
    noise = [w | draw(st.integers(0, 0xFFFF_FFFF)) & m for w, m in zip(words, undeclared(d), strict=True)]
    return struct.pack(f"<{d.size}I", *noise) + raw[d.size * 4:]


@pytest.mark.parametrize(("src", "dst"), PAIRS, ids=IDS)
@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_generated_translation_is_the_general_way(src: Dialect, dst: Dialect, data) -> None:
    """Every packet of every dialect, with values the target cannot hold and addresses outside every buffer
    among them: the same bytes, or the same error, as decode -> relocate -> encode."""
    fast, general = translators(src, dst, max_copy=data.draw(st.sampled_from([1 << 12, 1 << 30])))
    for d in src:
        if d.skip_field is None:
            ring = packet(data.draw, src, d)
            assert outcome(fast, ring) == outcome(general, ring), d.name


@pytest.mark.parametrize(("src", "dst"), PAIRS, ids=IDS)
def test_each_field_alone_translates_as_the_general_way(src: Dialect, dst: Dialect) -> None:
    """Deterministic companion: every field in turn at 1, 3 and all ones, the others 0, addresses in the buffer."""
    fast, general = translators(src, dst)
    for d in src:
        base = {n: BUFFER for n in d.address_fields}
        for f in d.fields if d.skip_field is None else ():
            for v in {1 << f.align if isinstance(f, Addr) else 1, 3 & f.mask, f.mask}:
                ring = src.build(d.name, **{**base, f.name: v})
                assert outcome(fast, ring) == outcome(general, ring), (d.name, f.name, v)


@pytest.mark.parametrize(("src", "dst"), PAIRS, ids=IDS)
def test_packets_that_fit_take_the_generated_translation(src: Dialect, dst: Dialect) -> None:
    """The generated translation is not a fallback that never runs: a clean packet never takes the general way."""
    fast, general = translators(src, dst)
    for d in src:
        if d.name in dst and d.indirect is None and d.skip_field is None:
            ring = src.build(d.name, **{n: BUFFER for n in d.address_fields})
            expected = general.ring(ring, "w")
            with mock.patch.object(fast, "packet", side_effect=AssertionError(f"{d.name}: general way")):
                fast._plan(d)
                assert fast.ring(ring, "w") == expected


def test_refusals_name_the_field_as_before() -> None:
    src, dst = DIALECTS["sdma6"], DIALECTS["sdma4.4"]
    for same in (src, dst):
        t, _ = translators(src, same)
        with pytest.raises(OutsideBuffers, match=r"w: FENCE at byte 0x0: addr=0x1000 is in no recorded buffer"):
            t.ring(src.build("FENCE", addr=0x1000), "w")
    t, _ = translators(src, dst)
    with pytest.raises(ReplayError, match=r"FENCE.gcc=0x1 has no sdma4.4 equivalent"):
        t.ring(src.build("FENCE", addr=BUFFER, gcc=1), "w")
    t, _ = translators(src, src)
    with pytest.raises(ValueError, match=r"TRAP.int_context=0x10000000 does not fit the field's 28 bits"):
        t.ring(src.build("TRAP", int_context=(1 << 28) - 1), "w")  # mapped to e + 1
    relocation = Relocation()
    relocation.add(BUFFER, SIZE, MOVED + 4)
    with pytest.raises(ValueError, match=r"TIMESTAMP_GET.addr=0x55000012300c is not 8-byte aligned"):
        Translator(src, src, 1 << 22, relocation).ring(src.build("TIMESTAMP_GET", addr=BUFFER + 8), "w")


def test_a_range_outside_every_buffer_stays_and_undeclared_bits_stay_within_a_dialect() -> None:
    d = DIALECTS["sdma6"]
    t, general = translators(d, d)
    gcr = d.build("GCR_REQ", base_va=0, limit_va=0xFFFF_FFFF_FF80, gcr_control_lo=5)
    assert t.ring(gcr, "w") == general.ring(gcr, "w") == gcr
    fence = bytearray(d.build("FENCE", addr=BUFFER + 8, data=1))
    fence[2] |= 0x20  # bit 21 of the header: declared by no field
    out = d.decode(t.ring(bytes(fence), "w"))
    assert out.fields["addr"] == MOVED + 8 and out.encode()[2] & 0x20
    other = d.decode(translators(d, DIALECTS["sdma7"])[0].ring(bytes(fence), "w"))
    assert other.fields["addr"] == MOVED + 8 and not other.encode()[2] & 0x20  # across dialects: re-encoded


# -- submissions that translate to themselves ------------------------------------------------------------------
def identity(dialect: Dialect, event_id=lambda e: e) -> Translator:
    """A translator onto the recorded dialect with the buffer at its recorded address."""
    relocation = Relocation()
    relocation.add(BUFFER, SIZE, BUFFER)
    return Translator(dialect, dialect, 1 << 22, relocation, event_id=event_id)


def stress_like(d: Dialect, value: int, event: int = 3) -> bytes:
    """What a semaphore-ordered stress submits: a poll, a conditional over a fill, a 64-bit signal, a TRAP."""
    fill = d.build("CONST_FILL", dst=BUFFER + 0x100, data=(value & 0xFF) * 0x01010101, count=63)
    return b"".join([
        d.build("POLL_REGMEM", addr=BUFFER, ref=value, mask=0xFFFF_FFFF, func=5, mem_poll=1),
        d.build("COND_EXE", addr=BUFFER + 8, reference=1, exec_count=len(fill) // 4), fill,
        d.build("FENCE", addr=BUFFER + 16, data=value), d.build("FENCE", addr=BUFFER + 20, data=0),
        d.build("TRAP", int_context=event)])


@pytest.mark.parametrize("d", DIALECTS.values(), ids=DIALECTS.keys())
def test_a_submission_agreeing_in_meaning_with_one_that_translated_to_itself_is_taken_undecoded(d: Dialect) -> None:
    t = identity(d)
    first, first_writes = [], []
    assert t.ring(stress_like(d, 1), "w", first) == stress_like(d, 1)
    first_writes += first
    for value in (2, 77, 1 << 20):
        writes: list = []
        with mock.patch.object(t, "_span", side_effect=AssertionError("decoded")):
            assert t.ring(stress_like(d, value), "w", writes) == stress_like(d, value)
        assert writes == first_writes and [w[0] for w in writes] == [w[0] for w in first]  # the same places
    assert t.packets == 4 * 6


@pytest.mark.parametrize("d", DIALECTS.values(), ids=DIALECTS.keys())
def test_what_is_taken_unchanged_is_what_translating_gives(d: Dialect) -> None:
    """Every dword but the meaning words redrawn, or one meaning word changed (an address outside every buffer,
    another count or event): the same bytes, writes and errors as a translator that never saw the first."""
    t = identity(d)
    ring = stress_like(d, 1)
    t.ring(ring, "w")
    starts = [at for at, _, _ in d.spans(ring)]
    meaning = {at // 4 + w for at, _, p in d.spans(ring) for w in p.meaning_words}
    words = list(struct.unpack(f"<{len(ring) // 4}I", ring))
    rnd = __import__("random").Random(7)
    for trial in range(200):
        changed = list(words)
        for i in range(len(words)):
            if i not in meaning:
                changed[i] = rnd.getrandbits(32)
        if trial % 2:  # and one meaning word other than a header
            i = rnd.choice(sorted(meaning - {at // 4 for at in starts}))
            changed[i] = rnd.choice([0, changed[i] ^ 1 << rnd.randrange(32), rnd.getrandbits(32)])
        data = struct.pack(f"<{len(words)}I", *changed)
        assert outcome(t, data) == outcome(identity(d), data)


def test_event_ids_are_mapped_in_submissions_taken_unchanged() -> None:
    d = DIALECTS["sdma6"]
    events = {3: 3}
    t = identity(d, event_id=lambda e: events[e])
    t.ring(stress_like(d, 1), "w")
    for new in (9, 3, (1 << 28) - 1):  # the event was created again under another id: the TRAP must say it
        events[3] = new
        with mock.patch.object(t, "_span", side_effect=AssertionError("decoded")):
            out = t.ring(stress_like(d, 2), "w")
        assert out == outcome(identity(d, event_id=lambda e, new=new: new), stress_like(d, 2))[0]
        assert list(d.iter_packets(out))[-1].fields["int_context"] == new
    events[3] = 1 << 28  # too wide for the field: the general way refuses it, naming it
    with pytest.raises(ValueError, match=r"TRAP.int_context=0x10000000 does not fit"):
        t.ring(stress_like(d, 3), "w")


def test_moved_buffers_and_indirect_buffers_take_the_general_way() -> None:
    d = DIALECTS["sdma6"]
    t = identity(d)
    t.ring(d.build("INDIRECT", ib_base=BUFFER + 0x400, ib_size=8), "w")
    assert not t.cache.unchanged  # the replay copies indirect buffers: such a submission is never taken as it is
    t.ring(stress_like(d, 1), "w")
    assert t.cache.unchanged
    relocation = Relocation()
    relocation.add(BUFFER, SIZE, MOVED)
    moved = Translator(d, d, 1 << 22, relocation, cache=t.cache)
    assert d.decode(moved.ring(stress_like(d, 1), "w")).fields["addr"] == MOVED and not t.cache.unchanged


def test_layouts_that_never_repeat_stop_being_remembered() -> None:
    d = DIALECTS["sdma4.4"]
    t = identity(d)
    for i in range(40):  # a gather: every submission copies from somewhere else
        t.ring(d.build("COPY_LINEAR", src=BUFFER + 64 * i, dst=BUFFER + 0x8000, count=63), "w")
    assert len(t.cache.unchanged) == 8


def test_the_run_takes_what_the_survey_saw_whole_within_a_budget() -> None:
    d = DIALECTS["sdma4.4"]
    survey = identity(d)
    rings = [d.build("COPY_LINEAR", src=BUFFER + 64 * i, dst=BUFFER + 0x8000, count=63) for i in range(40)]
    expected = [outcome(survey, ring) for ring in rings]  # no layout repeats: all remembered whole
    events = {3: 12}
    run = Translator(d, d, 1 << 22, survey.relocation, event_id=lambda e: events[e], cache=survey.cache)
    with mock.patch.object(run, "_span", side_effect=AssertionError("decoded")):
        assert [outcome(run, ring) for ring in rings] == expected
    trap = stress_like(d, 5)
    survey.ring(trap, "w")
    with mock.patch.object(run, "_span", side_effect=AssertionError("decoded")):
        assert list(d.iter_packets(run.ring(trap, "w")))[-1].fields["int_context"] == 12
    with mock.patch("kfdtrace.replay.translate.WHOLE_BYTES", 3 * len(rings[0])):
        small = identity(d)
        for ring in rings:
            small.ring(ring, "w")
        assert len(small.cache.whole) == 3 and small.cache.whole_bytes == 3 * len(rings[0])


@pytest.mark.parametrize("d", DIALECTS.values(), ids=DIALECTS.keys())
@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_a_submission_checked_in_place_is_what_translating_gives(d: Dialect, data) -> None:
    """On the recorded dialect with the buffer in place, a submission of random packets (addresses outside every
    buffer, counts past the copy limit and undeclared bits among them) gives the bytes, writes and errors of a
    translator that never takes it as it is."""
    t = identity(d)
    general = identity(d)
    general._checked = general._unchanged = lambda data, writes: None  # type: ignore[method-assign]
    general._compile = lambda d, plan: None  # type: ignore[method-assign]
    t.max_copy = general.max_copy = data.draw(st.sampled_from([1 << 12, 1 << 22]))
    kinds = [k for k in d if k.skip_field is None and k.indirect is None]
    count = data.draw(st.integers(1, 5))
    ring = b"".join(packet(data.draw, d, data.draw(st.sampled_from(kinds))) for _ in range(count))
    assert outcome(t, ring) == outcome(general, ring)


def test_clean_submissions_are_checked_in_place_not_translated() -> None:
    d = DIALECTS["sdma4.4"]
    t = identity(d)
    ring = b"".join(d.build("COPY_LINEAR", src=BUFFER + 64 * i, dst=BUFFER + 0x8000 + 64 * i, count=63)
                    for i in range(16)) + d.build("FENCE", addr=BUFFER + 0x100, data=7)
    writes: list = []
    with mock.patch.object(t, "_span", side_effect=AssertionError("translated")):
        assert t.ring(ring, "w", writes) == ring
    assert writes == [(p.offset, tuple(p.written_addresses()), False) for p in d.iter_packets(ring)]
    assert [w[1] for w in writes] == [(BUFFER + 0x8000 + 64 * i,) for i in range(16)] + [(BUFFER + 0x100,)]
    assert t.packets == 17
    outside = d.build("COPY_LINEAR", src=0x1000, dst=BUFFER, count=63)
    with pytest.raises(OutsideBuffers, match="src=0x1000"):
        t.ring(outside, "w")
    t, general = identity(d), identity(d)
    t.max_copy = general.max_copy = 1 << 12
    general._checked = lambda data, writes: None  # type: ignore[method-assign]
    for name in ("COPY_LINEAR", "CONST_FILL"):  # at the copy limit or past it: split, never taken as it is
        for count in ((1 << 12) - 1, 1 << 12, 3 << 12):
            ring = d.build(name, **{n: BUFFER for n in d[name].address_fields}, count=count)
            out = t.ring(ring, "w")
            assert out == general.ring(ring, "w") and (out == ring) == (count < 1 << 12), (name, count)


def test_sdma7s_dcc_word_comes_and_goes_with_cpv() -> None:
    """sdma7's COPY_LINEAR has a DCC word exactly when CPV is set, sdma6's never: translated both ways, the word
    is added as 0, dropped when 0, refused when it says something the target cannot; CPV clear is the fast way."""
    six, seven = DIALECTS["sdma6"], DIALECTS["sdma7"]
    copy = {"count": 255, "src": BUFFER, "dst": BUFFER + 0x100}
    up, down = translators(six, seven)[0], translators(seven, six)[0]
    grown = seven.decode(up.ring(six.build("COPY_LINEAR", cpv=1, **copy), "w"))
    assert (grown.size, grown.fields["cpv"], grown.payload, grown.fields["src"]) == (32, 1, bytes(4), MOVED)
    shrunk = six.decode(down.ring(seven.build("COPY_LINEAR", bytes(4), cpv=1, **copy), "w"))
    assert (shrunk.size, shrunk.fields["cpv"], shrunk.fields["src"]) == (28, 1, MOVED)
    with pytest.raises(ReplayError, match="sdma6 has no place for its tail dwords past the 0"):
        down.ring(seven.build("COPY_LINEAR", (0x3F).to_bytes(4, "little"), cpv=1, **copy), "w")
    for t, d in ((up, six), (down, seven)):
        ring = d.build("COPY_LINEAR", **copy)
        with mock.patch.object(t, "packet", side_effect=AssertionError("general way")):
            assert len(t.ring(ring, "w")) == 28
