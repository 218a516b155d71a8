"""An open /dev/kfd: the one ioctl table made callable by name, over whichever backend is in use."""

from __future__ import annotations

import errno
import os

from kfdtrace.driver import kfd_ioctl as K
from kfdtrace.driver.errors import DeviceError, OutOfMemory
from kfdtrace.driver.syscalls import KFD_DEVICE, Syscalls


class Kfd:
    """/dev/kfd opened through a syscall backend."""

    def __init__(self, syscalls: Syscalls):
        self.sys = syscalls
        try:
            self.fd = syscalls.open(KFD_DEVICE, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise DeviceError(f"cannot open {KFD_DEVICE}: {exc.strerror} (is amdgpu loaded, and are you in the "
                              "render group?)", exc.errno) from None

    def ioctl(self, name: str, args=None, **fields):
        """Issue AMDKFD_IOC_<name> with a fresh args struct built from `fields` (or `args`); returns the struct."""
        entry = K.BY_NAME[name]
        if args is None and entry.struct is not None:
            args = entry.struct(**fields)
        try:
            self.sys.ioctl(self.fd, entry.request, args)
        except OSError as exc:
            shown = ", ".join(f"{k}={v:#x}" if isinstance(v, int) else f"{k}={v}" for k, v in fields.items())
            message = f"AMDKFD_IOC_{name}({shown}) failed: {exc.strerror or os.strerror(exc.errno)}"
            raise (OutOfMemory if exc.errno == errno.ENOMEM else DeviceError)(message, exc.errno) from None
        return args

    def close(self) -> None:
        if self.fd >= 0:
            self.sys.close(self.fd)
            self.fd = -1
