"""kfdtrace.driver: a pure-Python AMD GPU user-space driver over /dev/kfd, with an emulated GPU.

The names below load on first use, so a command that needs only the errors (or a trace tool that needs no
driver at all) does not pay for numpy and the rest of the driver at start-up.
"""

from importlib import import_module

from kfdtrace.driver.errors import BoundsError, DeviceError, GpuFault, KfdTraceError, OutOfMemory, WaitTimeout

_LAZY = {"Buffer": "memory", "SdmaQueue": "sdma_queue", "Event": "signals", "Semaphore": "signals",
         "Device": "system", "System": "system"}

__all__ = ["BoundsError", "Buffer", "Device", "DeviceError", "Event", "GpuFault", "KfdTraceError",
           "OutOfMemory", "SdmaQueue", "Semaphore", "System", "WaitTimeout"]


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module 'kfdtrace.driver' has no attribute {name!r}")
    value = getattr(import_module(f"kfdtrace.driver.{_LAZY[name]}"), name)
    globals()[name] = value
    return value
