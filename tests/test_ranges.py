"""RangeMap: the one structure behind GPU page tables, the recorder's buffers and replay's relocation."""

from kfdtrace.driver.ranges import RangeMap


def test_add_find_remove_and_overlaps():
    m: RangeMap[str] = RangeMap()
    assert m.add(0x1000, 0x1000, "a") and m.add(0x3000, 0x2000, "b")
    assert not m.add(0x1800, 0x100, "inside a") and not m.add(0x2800, 0x1000, "over b's start")
    assert not m.add(0x0, 0x1001, "over a's start")
    assert m.add(0x2000, 0x1000, "between")  # touching both neighbours is fine
    assert m.find(0x1FFF) == (0x1000, 0x1000, "a") and m.get(0x2000) == "between" and m.get(0x5000) is None
    assert m.get(0x0FFF) is None and m.get(0x4FFF) == "b"
    assert [v for _, _, v in m] == ["a", "between", "b"] and len(m) == 3
    assert m.remove(0x2000) == "between" and m.remove(0x2000) is None and m.get(0x2000) is None


def test_within_holds_a_whole_span_in_one_range():
    m: RangeMap[str] = RangeMap()
    assert m.add(0x1000, 0x1000, "a") and m.add(0x2000, 0x1000, "b")
    assert m.within(0x1800, 0x800) == ("a", 0x800) and m.within(0x2000, 1) == ("b", 0)
    assert m.within(0x1800, 0x801) is None  # runs into the next range: not one range's
    assert m.within(0x3000, 1) is None and m.within(0xFFF, 2) is None and m.within(0x3000, 0) is None
