"""What the emulator and packet tests share: the five families, the emulated engine behind a queue, dword packing,
the check that the emulated engines' way of reading packets agrees with decoding them, and a slowed SDMA engine."""

from __future__ import annotations

import functools
import struct
import time

FAMILIES = ["gfx90a", "gfx942", "gfx1030", "gfx1100", "gfx1201"]


def engine_of(q):
    """The emulated engine (command processor, packet processor) behind a queue."""
    return q.device.sys.machine.queues[q.queue_id].engine


def u32(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}I", *values)


def assert_engine_view_agrees(dialect, data: bytes) -> None:
    """What an emulated engine reads of the packet in `data` (`Dialect.read`, then a handler's operands through
    `PacketDef.caller`) is what `Dialect.decode` gives: every field, addresses as `addresses()` holds them
    (None where the table's `when` says the field holds none), and the tail."""
    p = dialect.decode(data)
    d, raw, payload, size = dialect.read(data)
    assert (d, payload, size) == (p.defn, p.payload, p.size) and raw == p.dwords
    held = p.addresses()
    expected = [held.get(n) if n in d.address_fields else p.fields[n] for n in d.field_names]
    assert d.caller(lambda *values: values, (*d.field_names, "payload"))(raw, payload) == (*expected, p.payload)


def slow_sdma(patch, handler: str, seconds: float = 0.6) -> None:
    """Make the emulated SDMA engines' `handler` (`_copy_linear`, `_const_fill`) sleep `seconds` first, through the
    monkeypatch context `patch`: a recording whose GPU was slow there."""
    from kfdtrace.driver.emulator.sdma_engine import SdmaEngine

    run = getattr(SdmaEngine, handler)

    @functools.wraps(run)  # (the engine passes a handler the fields its signature names)
    def slow(self, *args, **kwargs):
        time.sleep(seconds)
        return run(self, *args, **kwargs)
    patch.setattr(SdmaEngine, handler, slow)
