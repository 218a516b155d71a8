"""64-bit timeline semaphores in GPU-visible memory, and the KFD events that wake CPU waiters.

A semaphore is 8 bytes in a GTT buffer mapped on every GPU. The GPU signals it with two SDMA FENCEs, low dword
first: a reader between the two sees a value that is too small, never one that is too large, so a `>=` wait
never wakes early. GPU waits use POLL_REGMEM, which compares 32 bits: they compare the high dword, then the
low one, which is exact while a timeline does not overtake a waiter by more than 2**32 at a wrap of the low
dword. A CPU wait sleeps on the semaphore's KFD event (the signalling queue follows its fences with a TRAP
carrying the event id) and re-reads the value at bounded intervals, so a CPU store is seen too.
"""

from __future__ import annotations

import ctypes
import time
from typing import TYPE_CHECKING

from kfdtrace.driver import kfd_ioctl as K
from kfdtrace.driver.errors import DeviceError, WaitTimeout

if TYPE_CHECKING:
    from kfdtrace.driver.memory import Buffer
    from kfdtrace.driver.system import System

POLL_SLICE_MS = 10  # longest sleep between two reads of a semaphore's value


class Semaphore:
    """A 64-bit monotonic counter that GPUs and the CPU signal and wait on."""

    def __init__(self, system: System, pool: Buffer, offset: int, name: str | None = None):
        self.system, self.pool, self.offset, self.name = system, pool, offset, name
        self.addr = pool.va + offset
        self._word = ctypes.c_uint64.from_address(pool.cpu + offset)
        self._word.value = 0
        self.event_id = system.create_signal_event()

    def __repr__(self) -> str:
        return f"<Semaphore {self.label} value={self.value}>"

    @property
    def label(self) -> str:
        return repr(self.name) if self.name else f"@{self.addr:#x}"

    @property
    def value(self) -> int:
        return self._word.value

    def signal(self, value: int) -> None:
        """CPU signal: one 8-byte store."""
        self.system.sys.annotate("cpu_signal", addr=self.addr, value=value, name=self.name)
        self._word.value = value

    def wait(self, value: int, timeout: float = 10.0) -> None:
        """Block until the semaphore reaches `value`; raises WaitTimeout naming every queue's pointers, or
        GpuFault if a GPU stopped a queue meanwhile."""
        deadline = time.monotonic() + timeout
        while self._word.value < value:
            self.system.raise_gpu_faults()
            left = deadline - time.monotonic()
            if left <= 0:
                self.system.sys.annotate("cpu_wait", addr=self.addr, value=value, timeout=timeout, ok=False)
                raise WaitTimeout(f"semaphore {self.label} is {self._word.value}, waited {timeout:g} s for "
                                  f"{value}; {self.system.queue_report()}")
            slice_ms = max(1, min(POLL_SLICE_MS, int(left * 1000)))
            if self.event_id is None:
                time.sleep(slice_ms / 1000)
            else:
                self.system.wait_events([self.event_id], slice_ms)
        self.system.sys.annotate("cpu_wait", addr=self.addr, value=value, timeout=timeout, ok=True)


    def free(self) -> None:
        """Give the semaphore's slot and event back to the system."""
        self.system.release_semaphore(self)


class Event:
    """A KFD signal event: set by the CPU (SET_EVENT) or by a GPU TRAP carrying its id."""

    def __init__(self, system: System, auto_reset: bool = True):
        self.system = system
        out = system.kfd.ioctl("CREATE_EVENT", event_type=K.EventType.SIGNAL, auto_reset=int(auto_reset),
                               node_id=0, event_page_offset=system.event_page_handle)
        system.event_page_handle = 0  # the kernel takes the page once, with the first signal event
        self.id = out.event_id

    def set(self) -> None:
        self.system.kfd.ioctl("SET_EVENT", event_id=self.id)

    def reset(self) -> None:
        self.system.kfd.ioctl("RESET_EVENT", event_id=self.id)

    def wait(self, timeout: float = 10.0) -> None:
        if not self.system.wait_events([self.id], int(timeout * 1000)):
            raise WaitTimeout(f"event {self.id} was not signaled within {timeout:g} s; "
                              f"{self.system.queue_report()}")

    def destroy(self) -> None:
        try:
            self.system.kfd.ioctl("DESTROY_EVENT", event_id=self.id)
        except DeviceError:
            pass
