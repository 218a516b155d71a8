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



def test_held_words_and_end_pointers():
    m: RangeMap[str] = RangeMap()
    m.add(0x1000, 0x1000, "a")
    m.add(0x3000, 0x1000, "b")
    words = [0x0FFF, 0x1000, 0x2000, 0x2FFF, 0x3FFF, 0x4000, 0]
    assert list(m.held(words)) == [1, 4]
    assert list(m.held(words, ends=True)) == [1, 2, 4, 5]  # just past a range: a C end pointer into it
    assert m.first_held([0x2000], ends=True) == 0 and m.first_held([0x2000]) is None


def test_overlapping_lists_every_range_a_span_meets_in_order():
    m = RangeMap()
    for start in (0x1000, 0x2000, 0x4000):
        m.add(start, 0x1000, start)
    assert [v for _, _, v in m.overlapping(0x1800, 0x1000)] == [0x1000, 0x2000]  # runs on into the next
    assert [v for _, _, v in m.overlapping(0x2fff, 0x1001)] == [0x2000]  # the gap between holds none
    assert [v for _, _, v in m.overlapping(0x3000, 0x1000)] == []  # ends where the next starts
    assert [v for _, _, v in m.overlapping(0, 0x10000)] == [0x1000, 0x2000, 0x4000]
    assert m.overlapping(0x5000, 0x10) == []
