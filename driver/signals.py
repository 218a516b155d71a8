"""64-bit timeline semaphores in GPU-visible memory, and the KFD events that wake CPU waiters.

A semaphore is 8 bytes in a GTT buffer mapped on every GPU. The GPU signals it with two SDMA FENCEs, low dword
first: a reader between the two sees a value that is too small, never one that is too large, so a `>=` wait
never wakes early. GPU waits use POLL_REGMEM, which compares 32 bits: they wait for the high dword to reach
the value's, then, under a COND_EXE that runs it only while the high dword still equals the value's, for the
low dword. That is exact unless the timeline passes a multiple of 2**32 while the low poll waits (the low
dword wraps below the target between two reads). So a pool semaphore keeps a second word holding
value + 2**31, written with every signal, and a GPU wait whose target's low dword lies in the upper half of
its range waits on that word instead, where the target's low dword lies in the lower half: a waiter can then
only miss its value if one signal moves the timeline by 2**31 or more. A CPU wait sleeps on the
semaphore's KFD event (the signalling queue follows its fences with a TRAP carrying the event id) and re-reads
the value at bounded intervals, so a CPU store is seen too.

`System.semaphore()` hands out a fresh one from the system's pool; `Semaphore.view()` makes one over 8 bytes
of any CPU-visible buffer, as they are (replay uses it for the recorded program's own semaphores).
"""

from __future__ import annotations

import ctypes
import time
from typing import TYPE_CHECKING

from kfdtrace.driver.errors import DeviceError, WaitTimeout

if TYPE_CHECKING:
    from kfdtrace.driver.memory import Buffer
    from kfdtrace.driver.system import System

POLL_SLICE_MS = 10  # longest sleep between two reads of a semaphore's value
BIAS = 1 << 31  # a pool semaphore's second word holds value + BIAS
SLOT = 16  # bytes of a pool semaphore: the value, then value + BIAS


class Semaphore:
    """A 64-bit monotonic counter that GPUs and the CPU signal and wait on."""

    def __init__(self, system: System, buffer: Buffer, offset: int, event_id: int | None, name: str | None,
                 *, pooled: bool):
        """Use System.semaphore() or Semaphore.view(). A `pooled` one owns its slot of the system's pool (the
        value and its biased copy) and its event: it starts at 0 and free() gives both back."""
        self.addr = buffer.addr(offset, SLOT if pooled else 8)
        if self.addr % 8:
            raise ValueError(f"a semaphore needs 8-byte alignment: {buffer.label}+{offset:#x} is not aligned")
        self._word = ctypes.c_uint64.from_address(buffer.cpu_addr(offset))
        self._biased = ctypes.c_uint64.from_address(buffer.cpu_addr(offset + 8)) if pooled else None
        self.system, self.buffer, self.offset, self.name = system, buffer, offset, name
        self.event_id, self._pooled = event_id, pooled
        self.freed = False  # a pooled one's slot and event were given back: it cannot be used again
        if pooled:
            self.signal(0)  # a reused slot holds its last user's value: reset through signal, so a replay does too

    @classmethod
    def view(cls, system: System, buffer: Buffer, offset: int, *, event_id: int | None = None,
             name: str | None = None) -> Semaphore:
        """A semaphore over the 8 aligned bytes at `offset` of a CPU-visible buffer, which keep their value.
        CPU waits sleep on KFD event `event_id` when the signaller traps it, else poll. It owns nothing:
        free() does nothing, and it must not outlive the buffer."""
        return cls(system, buffer, offset, event_id, name, pooled=False)

    def __repr__(self) -> str:
        state = f"value={self.value}" if self.buffer.cpu is not None else "freed"
        return f"<Semaphore {self.label} {state}>"

    @property
    def label(self) -> str:
        return repr(self.name) if self.name else f"@{self.addr:#x}"

    @property
    def value(self) -> int:
        self._check_mapped()
        return self._word.value

    def _check_mapped(self) -> None:
        """It was not freed, and its memory is still there (reading a freed pool would touch unmapped memory)."""
        if self.freed:
            raise DeviceError(f"semaphore {self.label} was freed: its slot may be another semaphore's now")
        if self.buffer.cpu is None:
            raise DeviceError(f"semaphore {self.label}: its buffer {self.buffer.label} was freed (system closed?)")

    def words(self, value: int) -> list[tuple[int, int]]:
        """(address, 64-bit value) of each word a signal of `value` stores: the biased copy, then the value."""
        if self.freed:
            self._check_mapped()
        words = [(self.addr, value)]
        if self._biased is not None:
            words.insert(0, (self.addr + 8, (value + BIAS) & (2**64 - 1)))
        return words

    def wait_word(self, value: int) -> tuple[int, int]:
        """(address, value) a GPU wait for `value` polls: the word where the target's low dword is in the lower
        half of its range (see the module docstring)."""
        if self.freed:
            self._check_mapped()
        # (a target within BIAS of 2**64 stays on the value's word: its biased copy would wrap below the biased
        # word, and the timeline cannot pass a multiple of 2**32 beyond it anyway; campaign 76)
        if self._biased is not None and value & BIAS and value + BIAS < 2**64:
            return self.addr + 8, value + BIAS
        return self.addr, value

    def signal(self, value: int) -> None:
        """CPU signal: one 8-byte store per word, each announced to recorders as it is."""
        self._check_mapped()
        for addr, v in self.words(value):
            self.system.sys.annotate("cpu_signal", addr=addr, value=v, name=self.name)
            (self._word if addr == self.addr else self._biased).value = v

    def wait(self, value: int, timeout: float = 10.0) -> None:
        """Block until the semaphore reaches `value`; raises WaitTimeout naming every queue's pointers, or
        GpuFault if a GPU stopped a queue meanwhile."""
        self._check_mapped()
        deadline = time.monotonic() + timeout
        wait = ("cpu_wait", {"addr": self.addr, "value": value, "timeout": timeout})
        while self._word.value < value:
            self.system.raise_gpu_faults(wait)
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
        """Give a pooled semaphore's slot and event back to the system (once: freeing it again does nothing)."""
        if self._pooled:
            self.system.release_semaphore(self)


class Event:
    """A KFD signal event: set by the CPU (SET_EVENT), or by a GPU that writes its mailbox and then raises an
    interrupt carrying its id (SdmaQueue.trap)."""

    def __init__(self, system: System, auto_reset: bool = True):
        self.system = system
        self.auto_reset = auto_reset
        self.id = system.create_event_id(auto_reset)

    def set(self) -> None:
        self.system.kfd.ioctl("SET_EVENT", event_id=self.id)

    def reset(self) -> None:
        self.system.kfd.ioctl("RESET_EVENT", event_id=self.id)

    def wait(self, timeout: float = 10.0) -> None:
        """Block until the event is signaled; raises WaitTimeout, or GpuFault if a GPU stopped a queue (whose
        fault event ends the wait too)."""
        ok = self.system.wait_events([self.id], int(timeout * 1000))
        self.system.raise_gpu_faults(("cpu_event_wait", {"event": self.id, "timeout": timeout}))
        self.system.sys.annotate("cpu_event_wait", event=self.id, timeout=timeout, ok=ok)
        if not ok:
            raise WaitTimeout(f"event {self.id} was not signaled within {timeout:g} s; "
                              f"{self.system.queue_report()}")

    def destroy(self) -> None:
        try:
            self.system.kfd.ioctl("DESTROY_EVENT", event_id=self.id)
        except DeviceError:
            pass
