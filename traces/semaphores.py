"""How packets signal semaphores and wait on them, read from the packet tables' `signal` and `wait` tags.

The driver writes a 64-bit semaphore value as two dword signals, low then high (driver/signals.py), and waits
on one as two dword polls, high then low; `pair_signals` and `pair_waits` put such pairs back together. A poll
tells memory reached a value when it compares all bits (`mask` FULL_MASK) with a function in REACHED.
"""

from __future__ import annotations

from kfdtrace.driver.packets import Packet
from kfdtrace.driver.sdma import PollFunc

# POLL_REGMEM / WAIT_REG_MEM compare functions after which memory is known to have reached `ref` (for a
# timeline: >= ref); PM4's WAIT_REG_MEM functions share these numbers.
REACHED = frozenset({PollFunc.GE, PollFunc.EQ})
FULL_MASK = 0xFFFFFFFF

Signal = tuple[int, int, int]  # (position, address, value)
Wait = tuple[int, int, int]  # (position, address, value memory reached)


def pair_signals(raw: list[Signal]) -> list[Signal]:
    """Dword signals with a 64-bit value's high dword right after its low one, put together."""
    out: list[Signal] = []
    single = False  # the last one is one dword
    for pos, addr, value in raw:
        if single and out[-1][1] == addr - 4:
            out[-1] = (pos, addr - 4, out[-1][2] | value << 32)
            single = False
        else:
            out.append((pos, addr, value))
            single = True
    return out


def pair_waits(raw: list[tuple[int, int, int, bool]]) -> list[Wait]:
    """Dword waits (position, address, reference, whether it waits for `>= reference`) with a 64-bit value's
    low dword right after its high one put together; those that tell memory reached a value."""
    out: list[tuple[int, int, int, bool, bool]] = []
    for pos, addr, ref, ok in raw:
        if out and out[-1][4] and out[-1][1] == addr + 4:
            _, _, high, high_ok, _ = out[-1]
            out[-1] = (pos, addr, high << 32 | ref, high_ok and ok, False)
        else:
            out.append((pos, addr, ref, ok, True))
    return [(pos, addr, ref) for pos, addr, ref, ok, _ in out if ok]


def semaphore_facts(packets: list[Packet]) -> tuple[list[Signal], list[Wait]]:
    """The (packet index, address, value) of each semaphore signal and of each wait for memory to reach a value,
    64-bit halves put together: a pair's signal is at its second (high) packet, its wait at its second (low)
    poll."""
    signals, waits = [], []
    for i, p in enumerate(packets):
        d = p.defn
        if d.signal is None and d.wait is None:
            continue
        held, f = p.addresses(), p.fields
        if d.signal is not None and d.signal[0] in held:
            signals.append((i, held[d.signal[0]], f[d.signal[1]]))
        if d.wait is not None and d.wait[0] in held:
            addr, ref, mask, func = d.wait
            ok = f[mask] == (1 << d[mask].width) - 1 and f[func] in REACHED
            if d[mask].width > 32:  # a 64-bit wait (WAIT_REG_MEM64): as its high and low dword polls
                waits += [(i, held[addr] + 4, f[ref] >> 32, ok), (i, held[addr], f[ref] & FULL_MASK, ok)]
            else:
                waits.append((i, held[addr], f[ref], ok))
    return pair_signals(signals), pair_waits(waits)
