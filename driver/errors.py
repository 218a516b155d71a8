"""The driver's exceptions: each message says what happened and what to look at."""

# The emulated GPU logs what stops a queue to EMULATOR_LOG; a record with the attribute NOT_EMULATED set names
# something the emulator does not do (its limit, not a fault of the program's), which a GpuFault cannot say.
EMULATOR_LOG, NOT_EMULATED = "kfdtrace.emulator", "not_emulated"


class KfdTraceError(Exception):
    """Base of every error kfdtrace reports to a user."""


class DeviceError(KfdTraceError):
    """The kernel (or the emulated GPU) refused a request; carries the errno."""

    def __init__(self, message: str, errno: int = 0):
        super().__init__(message)
        self.errno = errno


class OutOfMemory(DeviceError):
    """An allocation larger than what the GPU has free."""


class AddressInUse(DeviceError):
    """A buffer asked for at an address that is already taken."""


class BoundsError(KfdTraceError, IndexError):
    """An access outside a buffer."""


class WaitTimeout(KfdTraceError, TimeoutError):
    """A wait that did not complete in time; the message names the queues' read and write pointers."""


class GpuFault(KfdTraceError):
    """The GPU stopped a queue: a VM fault (at `va`, the first one's) or a packet it could not execute. `faults`:
    each fault event seen, as (what the GPU said, its VM fault address or None, the queues that had not drained
    then, each with its description)."""

    def __init__(self, message: str, va: int | None = None,
                 faults: tuple[tuple[str, int | None, tuple[tuple[object, str], ...]], ...] = ()):
        super().__init__(message)
        self.va, self.faults = va, faults
