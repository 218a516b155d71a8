"""What the compute-queue tests share: the five families, the emulated engine behind a queue, dword packing."""

from __future__ import annotations

import struct

FAMILIES = ["gfx90a", "gfx942", "gfx1030", "gfx1100", "gfx1201"]


def engine_of(q):
    """The emulated engine (command processor, packet processor) behind a queue."""
    return q.device.sys.machine.queues[q.queue_id].engine


def u32(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}I", *values)
