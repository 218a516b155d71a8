"""Emulated KFD events: signal events (set by SET_EVENT, or by an interrupt whose event's mailbox the GPU wrote
first) and exception events (VM faults).

A signal event's mailbox is its 8-byte slot in the event page, which reads UNSIGNALED_EVENT_SLOT until a GPU
writes it. An interrupt (SDMA TRAP, a CP end-of-pipe interrupt) carries an event id, which the kernel trusts only if
that event's slot was written: it sets the event whose slot holds something else, and writes the slot back to
UNSIGNALED (acknowledges it); when the id finds none, it sets every event whose slot was written. An interrupt
whose event's mailbox nobody wrote sets nothing (kfd_events.c kfd_signal_event_interrupt,
lookup_signaled_event_by_partial_id, set_event_from_interrupt; those sources carry 28 and 32 bits of the id,
enough for every signal event's, so the kernel's search among partial ids does not arise).
"""

from __future__ import annotations

import ctypes
import itertools
import threading
import time
from dataclasses import dataclass, field

from kfdtrace.driver.kfd_ioctl import KFD_FIRST_NONSIGNAL_EVENT_ID, KFD_SIGNAL_EVENT_LIMIT, UNSIGNALED_EVENT_SLOT

Slots = ctypes.c_uint64 * KFD_SIGNAL_EVENT_LIMIT
# Slots of a process whose kernel allocated the event page (no page BO given): until user mode maps it, only
# the first 256 (kfd_events.c allocate_event_notification_slot: "Oldest user mode expects 256 event slots").
FIRST_MAPPED_SLOTS = 256


@dataclass(eq=False)
class EventState:
    """One event as the kernel keeps it, with the waiters sleeping on it."""

    id: int
    type: int
    auto_reset: bool
    signaled: bool = False
    fault: tuple[int, int] | None = None  # (gpu_id, va) of a memory exception
    waiters: list[Waiter] = field(default_factory=list)


@dataclass(eq=False)
class Waiter:
    """One waited event of one WAIT_EVENTS (kfd_events.c struct kfd_event_waiter): `event` None once destroyed."""

    event: EventState | None
    activated: bool


class EventDestroyed(Exception):
    """A waited event was destroyed during the wait (the kernel's KFD_IOC_WAIT_RESULT_FAIL, -EIO)."""


class EventTable:
    """All events of the emulated process, with one condition variable for every waiter."""

    def __init__(self) -> None:
        self._events: dict[int, EventState] = {}
        self._cond = threading.Condition()
        self._slots = Slots()  # the kernel's own event page, until a page BO is given (use_page)
        ctypes.memset(self._slots, 0xFF, ctypes.sizeof(Slots))
        self.mapped_slots = FIRST_MAPPED_SLOTS
        self.has_page = False  # the kernel makes its page with the first signal event, unless given one

    def use_page(self, host: int, size: int) -> None:
        """Keep the slots in the event page BO whose bytes are at `host` (the kernel sets them all unsignaled:
        kfd_event_page_set)."""
        with self._cond:
            ctypes.memset(host, 0xFF, ctypes.sizeof(Slots))
            self._slots, self.mapped_slots, self.has_page = Slots.from_address(host), size // 8, True

    def create(self, type_: int, auto_reset: bool, is_signal: bool) -> EventState | None:
        """A new event; None when every signal slot is taken. Signal event ids are slot indexes from 1 up: the
        kernel keeps id 0 to ignore interrupts without a context id (kfd_event_init_process)."""
        with self._cond:
            if is_signal:
                limit = min(self.mapped_slots, KFD_SIGNAL_EVENT_LIMIT)
                eid = next((i for i in range(1, limit) if i not in self._events), None)
                if eid is None:
                    return None
                self._slots[eid] = UNSIGNALED_EVENT_SLOT
                self.has_page = True
            else:  # the lowest free id from KFD_FIRST_NONSIGNAL_EVENT_ID (create_other_event's idr_alloc)
                eid = next(i for i in itertools.count(KFD_FIRST_NONSIGNAL_EVENT_ID) if i not in self._events)
            ev = self._events[eid] = EventState(eid, type_, auto_reset)
            return ev

    def interrupt(self, event_id: int) -> None:
        """An interrupt carrying an event id (see the module docstring). Every event with a slot (an id below
        KFD_SIGNAL_EVENT_LIMIT) is a signal or debug event, which the GPU may set (event_can_be_gpu_signaled)."""
        with self._cond:
            slots = self._slots
            hit = self._events.get(event_id) if event_id < KFD_SIGNAL_EVENT_LIMIT and \
                slots[event_id] != UNSIGNALED_EVENT_SLOT else None
            fired = [hit] if hit is not None else [ev for i, ev in self._events.items()
                                                   if i < KFD_SIGNAL_EVENT_LIMIT and slots[i] != UNSIGNALED_EVENT_SLOT]
            for ev in fired:
                slots[ev.id] = UNSIGNALED_EVENT_SLOT
                self._set(ev)

    def _set(self, ev: EventState) -> None:
        """Set an event (kfd_events.c set_event): every waiter sleeping on it wakes, and an auto-reset event
        that woke one stays unsignaled."""
        ev.signaled = not ev.auto_reset or not ev.waiters
        for waiter in ev.waiters:
            waiter.activated = True
        self._cond.notify_all()

    def destroy(self, eid: int) -> bool:
        """Destroy an event; its waiters wake, their waits failing (destroy_event)."""
        with self._cond:
            ev = self._events.pop(eid, None)
            if ev is None:
                return False
            for waiter in ev.waiters:
                waiter.event = None
            self._cond.notify_all()
            return True

    def set(self, eid: int) -> bool:
        with self._cond:
            ev = self._events.get(eid)
            if ev is None:
                return False
            self._set(ev)
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
                    ev.fault = fault
                    self._set(ev)

    def wait(self, ids: list[int], wait_all: bool, timeout_ms: int) -> list[EventState] | None:
        """Block until any (or all) of `ids` is signaled; the signaled events, or None on timeout
        (kfd_wait_on_events). Each event's signal is taken as the wait begins (an auto-reset event's, even
        by a wait that then times out); one set during the wait wakes it.

        Raises KeyError for an id that does not exist (the kernel's EINVAL: the events before it were taken),
        EventDestroyed when a waited event is destroyed meanwhile.
        """
        deadline = time.monotonic() + timeout_ms / 1000.0
        with self._cond:
            waiters: list[Waiter] = []
            try:
                for i in ids:  # init_event_waiter, in order
                    ev = self._events[i]
                    waiter = Waiter(ev, ev.signaled)
                    ev.signaled = ev.signaled and not ev.auto_reset
                    if not waiter.activated:
                        ev.waiters.append(waiter)
                    waiters.append(waiter)
                while True:  # test_event_condition
                    if any(w.event is None for w in waiters):
                        raise EventDestroyed("a waited event was destroyed")
                    fired = [w.event for w in waiters if w.activated]
                    if fired and (not wait_all or len(fired) == len(waiters)):
                        return fired
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    self._cond.wait(left)
            finally:
                for w in waiters:
                    if w.event is not None and w in w.event.waiters:
                        w.event.waiters.remove(w)
