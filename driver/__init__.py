"""kfdtrace.driver: a pure-Python AMD GPU user-space driver over /dev/kfd, with an emulated GPU."""

from kfdtrace.driver.errors import BoundsError, DeviceError, GpuFault, KfdTraceError, OutOfMemory, WaitTimeout
from kfdtrace.driver.memory import Buffer
from kfdtrace.driver.sdma_queue import SdmaQueue
from kfdtrace.driver.signals import Event, Semaphore
from kfdtrace.driver.system import Device, System

__all__ = ["BoundsError", "Buffer", "Device", "DeviceError", "Event", "GpuFault", "KfdTraceError",
           "OutOfMemory", "SdmaQueue", "Semaphore", "System", "WaitTimeout"]
