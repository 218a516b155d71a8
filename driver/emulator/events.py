"""Emulated KFD events: signal events (woken by SDMA TRAP or SET_EVENT) and exception events (VM faults)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from kfdtrace.driver.kfd_ioctl import KFD_FIRST_NONSIGNAL_EVENT_ID, KFD_SIGNAL_EVENT_LIMIT


@dataclass(eq=False)
class EventState:
    """One event as the kernel keeps it."""

    id: int
    type: int
    auto_reset: bool
    signaled: bool = False
    fault: tuple[int, int] | None = None  # (gpu_id, va) of a memory exception


class EventTable:
    """All events of the emulated process, with one condition variable for every waiter."""

    def __init__(self) -> None:
        self._events: dict[int, EventState] = {}
        self._cond = threading.Condition()
        self._next_nonsignal = KFD_FIRST_NONSIGNAL_EVENT_ID

    def create(self, type_: int, auto_reset: bool, is_signal: bool) -> EventState | None:
        with self._cond:
            if is_signal:
                free = next((i for i in range(KFD_SIGNAL_EVENT_LIMIT) if i not in self._events), None)
                if free is None:
                    return None
                eid = free
            else:
                eid, self._next_nonsignal = self._next_nonsignal, self._next_nonsignal + 1
            ev = self._events[eid] = EventState(eid, type_, auto_reset)
            return ev

    def destroy(self, eid: int) -> bool:
        with self._cond:
            return self._events.pop(eid, None) is not None

    def set(self, eid: int) -> bool:
        with self._cond:
            ev = self._events.get(eid)
            if ev is None:
                return False
            ev.signaled = True
            self._cond.notify_all()
            return True

    def reset(self, eid: int) -> bool:
        with self._cond:
            ev = self._events.get(eid)
            if ev is None:
                return False
            ev.signaled = False
            return True

    def signal_type(self, type_: int, fault: tuple[int, int] | None = None) -> None:
        """Signal every event of one type (how the kernel delivers memory and hardware exceptions)."""
        with self._cond:
            for ev in self._events.values():
                if ev.type == type_:
                    ev.signaled, ev.fault = True, fault
            self._cond.notify_all()

    def wait(self, ids: list[int], wait_all: bool, timeout_ms: int) -> list[EventState] | None:
        """Block until any (or all) of `ids` is signaled; the signaled events, or None on timeout.

        Raises KeyError for an id that does not exist (the kernel's EINVAL).
        """
        deadline = time.monotonic() + timeout_ms / 1000.0
        with self._cond:
            events = [self._events[i] for i in ids]
            while True:
                fired = [ev for ev in events if ev.signaled]
                if fired and (not wait_all or len(fired) == len(events)):
                    for ev in fired:
                        if ev.auto_reset:
                            ev.signaled = False
                    return fired
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
