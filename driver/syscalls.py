"""The one syscall boundary: everything that touches the kernel goes through a `Syscalls` object.

Two backends implement it: `RealSyscalls` (libc on /dev/kfd and /dev/dri/renderD*) and the emulated GPU
(`kfdtrace.driver.emulator.EmulatedSyscalls`). Capture wraps one of them. Code above this interface never
knows which backend it runs on.
"""

from __future__ import annotations

import ctypes
import errno
import os
from typing import Protocol

PROT_NONE, PROT_READ, PROT_WRITE, PROT_EXEC = 0, 1, 2, 4
MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS, MAP_NORESERVE = 0x01, 0x02, 0x10, 0x20, 0x4000
MAP_FIXED_NOREPLACE = 0x100000  # Linux 4.17+: EEXIST instead of replacing what is mapped there
MAP_FAILED = ctypes.c_void_p(-1).value

KFD_DEVICE = "/dev/kfd"
KFD_TOPOLOGY = "/sys/devices/virtual/kfd/kfd/topology"


class Syscalls(Protocol):
    """What the driver may ask of the kernel. Errors are raised as OSError with the kernel's errno."""

    name: str

    def open(self, path: str, flags: int = os.O_RDWR | os.O_CLOEXEC) -> int: ...

    def close(self, fd: int) -> None: ...

    def ioctl(self, fd: int, request: int, arg: ctypes.Structure | ctypes.Array | None) -> int: ...

    def mmap(self, addr: int, length: int, prot: int, flags: int, fd: int, offset: int) -> int: ...

    def munmap(self, addr: int, length: int) -> None: ...

    def doorbell_store(self, addr: int, value: int) -> None:
        """One 64-bit store to a mapped doorbell (SOC15 doorbells are 8 bytes: kfd_device.c kfd_device_info_init)."""

    def read_sysfs(self, path: str) -> str: ...

    def list_sysfs(self, path: str) -> list[str]: ...

    def annotate(self, kind: str, **fields) -> None:
        """What the driver knows that no syscall says (a buffer's name, a CPU write, a semaphore signal).
        The backends ignore it; capture records it in order with the syscalls. A CPU store is told twice,
        "cpu_writing" before and "cpu_write" after, always both: capture holds its lock between them."""


class QuietAnnotations:
    """Mixin for backends: annotations are for recorders, the kernel never sees them."""

    def annotate(self, kind: str, **fields) -> None:
        pass


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.restype = ctypes.c_int
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.ioctl.restype = ctypes.c_int
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]


def _raise_errno(what: str) -> None:
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}")


def libc_mmap(addr: int, length: int, prot: int, flags: int, fd: int, offset: int) -> int:
    """mmap(2) through libc, so that a fixed address can be asked for (Python's mmap module cannot)."""
    ptr = _libc.mmap(addr or None, length, prot, flags, fd, offset)
    if ptr is None or ptr == MAP_FAILED:
        _raise_errno(f"mmap(addr={addr:#x}, length={length:#x}, fd={fd}, offset={offset:#x})")
    return ptr


def libc_munmap(addr: int, length: int) -> None:
    if _libc.munmap(addr, length) != 0:
        _raise_errno(f"munmap({addr:#x}, {length:#x})")


_view_of = ctypes.pythonapi.PyMemoryView_FromMemory
_view_of.restype, _view_of.argtypes = ctypes.py_object, (ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int)
_PyBUF_READ, _PyBUF_WRITE = 0x100, 0x200


def memory_view(addr: int, size: int, writable: bool = False) -> memoryview:
    """`size` bytes of this process's memory at `addr` as a memoryview, without a copy: valid while that memory
    stays mapped. Reading or writing through it keeps the GIL and costs a fraction of a ctypes.string_at or
    memmove, which are foreign calls."""
    return _view_of(addr, size, _PyBUF_WRITE if writable else _PyBUF_READ)


class RealSyscalls(QuietAnnotations):
    """The real kernel: libc open/ioctl/mmap/munmap on /dev/kfd and the DRM render nodes."""

    name = "kfd"

    def open(self, path: str, flags: int = os.O_RDWR | os.O_CLOEXEC) -> int:
        return os.open(path, flags)

    def close(self, fd: int) -> None:
        os.close(fd)

    def ioctl(self, fd: int, request: int, arg: ctypes.Structure | ctypes.Array | None) -> int:
        while True:
            ret = _libc.ioctl(fd, request, None if arg is None else ctypes.addressof(arg))
            if ret >= 0:
                return ret
            if ctypes.get_errno() not in (errno.EINTR, errno.EAGAIN):
                _raise_errno(f"ioctl({request:#x})")

    def mmap(self, addr: int, length: int, prot: int, flags: int, fd: int, offset: int) -> int:
        return libc_mmap(addr, length, prot, flags, fd, offset)

    def munmap(self, addr: int, length: int) -> None:
        libc_munmap(addr, length)

    def doorbell_store(self, addr: int, value: int) -> None:
        ctypes.c_uint64.from_address(addr).value = value

    def read_sysfs(self, path: str) -> str:
        with open(path) as f:
            return f.read()

    def list_sysfs(self, path: str) -> list[str]:
        return sorted(os.listdir(path))


def kfd_usable() -> bool:
    """True when /dev/kfd exists, opens, and the topology lists at least one GPU node."""
    try:
        fd = os.open(KFD_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    nodes = os.path.join(KFD_TOPOLOGY, "nodes")
    try:
        for n in os.listdir(nodes):
            with open(os.path.join(nodes, n, "gpu_id")) as f:
                if int(f.read().strip() or 0):
                    return True
    except OSError:
        return False
    return False
