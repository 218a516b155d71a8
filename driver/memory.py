"""GPU memory: VA reservation, ALLOC/MAP/UNMAP/FREE, CPU mapping at the GPU VA, and buffer views."""

from __future__ import annotations

import ctypes
import errno
import os
import sys
import threading
from typing import TYPE_CHECKING

from kfdtrace.driver import kfd_ioctl as K
from kfdtrace.driver.errors import AddressInUse, BoundsError, DeviceError, OutOfMemory
from kfdtrace.driver.syscalls import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_FIXED_NOREPLACE,
    MAP_NORESERVE,
    MAP_PRIVATE,
    MAP_SHARED,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
    memory_view,
)

if TYPE_CHECKING:
    import numpy as np

    from kfdtrace.driver.system import Device

PAGE = 4096
HUGE = 2 << 20
# Test mode: buffers placed at a given address (replay) also get an inaccessible page after them, as the others
# always have (their reservation is larger than they are), so an access past any buffer faults at once.
ENV_GUARD_PAGES = "KFDTRACE_GUARD_PAGES"
RESERVE = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE  # addresses held, no memory behind them

# In the order amdgpu_amdkfd_gpuvm_alloc_memory_of_gpu tests them: a buffer whose flags name several is of the
# first (the emulated KFD and the recorder both read it so).
DOMAINS: dict[str, int] = {
    "vram": K.AllocMemFlags.VRAM,
    "gtt": K.AllocMemFlags.GTT,
    "userptr": K.AllocMemFlags.USERPTR,
    "doorbell": K.AllocMemFlags.DOORBELL,
    "mmio": K.AllocMemFlags.MMIO_REMAP,
}
# The kernel fixes these sizes (kfd_chardev.c kfd_ioctl_alloc_memory_of_gpu): the process doorbell slice, one
# page of remapped MMIO (HDP flush).
FIXED_SIZES = {"doorbell": 0x2000, "mmio": PAGE}
CPU_MAPPABLE = ("vram", "gtt")
# CPU writes up to this size copy through a memoryview, keeping the GIL: a foreign call (ctypes.memmove) hands
# it to whichever thread wants it, such as an emulated engine running a kernel, and waits up to the interpreter's
# switch interval (5 ms) to get it back. Larger copies release it, so that other threads run meanwhile.
GIL_COPY_BYTES = 64 << 10


def _align(x: int, a: int) -> int:
    return (x + a - 1) // a * a


class Buffer:
    """A GPU allocation. Its GPU VA is also its CPU address when it is CPU-visible.

    `size` is the size asked for: every access is checked against it. `alloc_size` is what the kernel
    allocated and maps, whole pages (or the domain's fixed size)."""

    def __init__(self, device: Device, va: int, size: int, alloc_size: int, domain: str, flags: int,
                 handle: int, name: str | None, reservation: tuple[int, int]):
        self.device, self.va, self.size, self.alloc_size = device, va, size, alloc_size
        self.domain, self.flags, self.handle, self.name = domain, flags, handle, name
        self._reservation = reservation
        self.cpu: int | None = None  # CPU address of the bytes, when mapped
        self.mapped_on: list[Device] = []
        self._lock = threading.Lock()  # serialises map_to / unmap_from / free

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        return f"<Buffer{label} {self.domain} {self.size:#x} bytes at {self.va:#x} on {self.device}>"

    @property
    def label(self) -> str:
        return self.name or f"{self.domain}@{self.va:#x}"

    def _span(self, offset: int, size: int | None) -> tuple[int, int]:
        size = self.size - offset if size is None else size
        if offset < 0 or size < 0 or offset + size > self.size:
            raise BoundsError(f"{self.label}: bytes [{offset:#x}, {offset + size:#x}) are outside its "
                              f"{self.size:#x} bytes")
        return offset, size

    def addr(self, offset: int = 0, size: int = 0) -> int:
        """GPU VA of byte `offset`, checking that `size` bytes from there lie inside the buffer."""
        self._span(offset, size)
        return self.va + offset

    def cpu_addr(self, offset: int) -> int:
        """CPU address of byte `offset` (unchecked: see addr() for the bounds)."""
        if self.cpu is None:
            raise DeviceError(f"{self.label} has no CPU mapping (allocate it with cpu_access=True)")
        return self.cpu + offset

    def read(self, offset: int = 0, size: int | None = None) -> bytes:
        offset, size = self._span(offset, size)
        return ctypes.string_at(self.cpu_addr(offset), size)

    def write(self, data: bytes | bytearray | memoryview | np.ndarray, offset: int = 0) -> None:
        # loaded by whoever made an array: the driver itself never needs it. Another thread may be importing it
        # now (campaign 84: a replay's --concurrent instances), the module there but its names not yet
        ndarray = getattr(sys.modules.get("numpy"), "ndarray", ())
        if isinstance(data, ndarray):
            numpy = sys.modules["numpy"]
            src = numpy.ascontiguousarray(data).reshape(-1).view(numpy.uint8)
        else:
            src = data if isinstance(data, bytes) else bytes(memoryview(data).cast("B"))
        offset, n = self._span(offset, len(src))
        self.device.sys.annotate("cpu_writing", va=self.va + offset, size=n, data=src)
        try:
            if n <= GIL_COPY_BYTES:
                memory_view(self.cpu_addr(offset), n, writable=True)[:] = src
            else:
                ctypes.memmove(self.cpu_addr(offset), src if isinstance(src, bytes) else src.ctypes.data, n)
        finally:
            self.device.sys.annotate("cpu_write", va=self.va + offset, size=n)

    def fill(self, byte: int, offset: int = 0, size: int | None = None) -> None:
        """Set `size` bytes from `offset` (to the end by default) to `byte` (0..255)."""
        if not 0 <= byte <= 0xFF:  # memset would take its low byte, and a recorder the whole (campaign 108)
            raise ValueError(f"{self.label}: fill byte {byte} is not in 0..255")
        offset, size = self._span(offset, size)
        self.device.sys.annotate("cpu_writing", va=self.va + offset, size=size, fill=byte)
        try:
            ctypes.memset(self.cpu_addr(offset), byte, size)
        finally:
            self.device.sys.annotate("cpu_write", va=self.va + offset, size=size)

    def numpy(self, dtype: np.dtype | type | str = "uint8") -> np.ndarray:
        """A zero-copy numpy view of the whole buffer. Writes through it bypass the driver, so a recorder
        compares this buffer's contents before each submission that uses it."""
        import numpy as np  # here only: a driver that views no buffer starts without numpy

        if self.size % np.dtype(dtype).itemsize:
            raise ValueError(f"{self.label} is {self.size} bytes, not a whole number of {np.dtype(dtype)}; "
                             f"view it as bytes, or allocate a multiple of {np.dtype(dtype).itemsize}")
        raw = (ctypes.c_char * self.size).from_address(self.cpu_addr(0))
        self.device.sys.annotate("cpu_view", va=self.va)
        return np.frombuffer(raw, dtype=dtype)

    def map_to(self, *devices: Device) -> None:
        """Map the buffer into the GPU VA space of more GPUs (peer access)."""
        _devices(devices)
        with self._lock:
            new = [d for d in dict.fromkeys(devices) if d not in self.mapped_on]  # each once (campaign 97)
            if not new:
                return
            ids = (ctypes.c_uint32 * len(new))(*[d.gpu_id for d in new])
            self.device.kfd.ioctl("MAP_MEMORY_TO_GPU", handle=self.handle,
                                  device_ids_array_ptr=ctypes.addressof(ids), n_devices=len(new), n_success=0)
            self.mapped_on.extend(new)

    def unmap_from(self, *devices: Device) -> None:
        _devices(devices)
        with self._lock:
            self._unmap_from(devices)

    def _unmap_from(self, devices: tuple[Device, ...] | list[Device]) -> None:
        gone = [d for d in devices if d in self.mapped_on]
        if not gone:
            return
        ids = (ctypes.c_uint32 * len(gone))(*[d.gpu_id for d in gone])
        self.device.kfd.ioctl("UNMAP_MEMORY_FROM_GPU", handle=self.handle,
                              device_ids_array_ptr=ctypes.addressof(ids), n_devices=len(gone), n_success=0)
        for d in gone:
            self.mapped_on.remove(d)

    def free(self, keep_addresses: bool = False) -> tuple[int, int] | None:
        """Unmap from every GPU and the CPU, free the memory, and release the VA range; or, `keep_addresses`, keep
        it reserved and return it as (start, bytes), for `allocate(reserved=)` to put a buffer there with no moment
        in which another thread's allocation could take it."""
        with self._lock:
            if self.handle is None:
                return None
            self._unmap_from(list(self.mapped_on))
            self.device.kfd.ioctl("FREE_MEMORY_OF_GPU", handle=self.handle)
            self.handle, self.cpu = None, None
            if keep_addresses:  # the CPU mapping, replaced by a bare reservation in one call
                self.device.sys.mmap(*self._reservation, PROT_NONE, RESERVE | MAP_FIXED, -1, 0)
            else:
                self.device.sys.munmap(*self._reservation)  # the CPU mapping lies inside the reservation
        self.device.untrack(self)
        return self._reservation if keep_addresses else None

    def release_addresses(self) -> None:
        """For a buffer the kernel frees itself (the event page, with the process): give back the addresses this
        process reserved for it, once nothing here uses it any more."""
        with self._lock:
            if self.handle is not None:
                self.handle, self.cpu = None, None
                self.device.sys.munmap(*self._reservation)


def _no_address_space(span: int, exc: OSError) -> OutOfMemory:
    """The process could not reserve the buffer's addresses (its address-space limit, or memory overcommit)."""
    return OutOfMemory(f"no room for {span:#x} bytes of addresses in this process ({exc.strerror}): the buffer is "
                       f"larger than this machine or its limits (ulimit -v) allow", exc.errno)


def allocate(device: Device, size: int, domain: str = "vram", *, cpu_access: bool = True,
             executable: bool = False, coherent: bool = False, uncached: bool = False,
             name: str | None = None, map_to: tuple[Device, ...] = (), role: str = "user",
             va: int | None = None, reserved: tuple[int, int] | None = None) -> Buffer:
    """Reserve a VA range, allocate `size` bytes (whole pages underneath) in `domain`, map them to this GPU
    (and `map_to`), and map them for the CPU at the same address when the domain allows it. `role` tells a
    recorder what the driver uses the buffer for ("user" for the workload's own buffers). `va` asks for that
    exact address (replay); AddressInUse when something is already there. `reserved`: a range Buffer.free kept,
    which becomes the buffer's when the buffer fits in it at `va`, else is given back first."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown memory domain {domain!r}; use one of {', '.join(DOMAINS)}")
    if size <= 0:
        raise ValueError(f"buffer size must be positive, not {size}")
    alloc_size = FIXED_SIZES.get(domain, _align(size, PAGE))
    size = alloc_size if domain in FIXED_SIZES else size
    flags = DOMAINS[domain] | K.AllocMemFlags.WRITABLE
    if executable:
        flags |= K.AllocMemFlags.EXECUTABLE
    if coherent:
        flags |= K.AllocMemFlags.COHERENT
    if uncached:
        flags |= K.AllocMemFlags.UNCACHED
    if domain == "vram" and cpu_access and device.node.large_bar:  # small BAR: EINVAL; mmap works without it
        flags |= K.AllocMemFlags.PUBLIC
    sys = device.sys
    if reserved is not None and (va is None or not reserved[0] <= va <= reserved[0] + reserved[1] - alloc_size):
        sys.munmap(*reserved)
        reserved = None
    if reserved is not None:
        base, span = reserved
    elif va is None:
        align = HUGE if alloc_size >= HUGE else PAGE
        span = alloc_size + align
        try:
            base = sys.mmap(0, span, PROT_NONE, RESERVE, -1, 0)
        except OSError as exc:
            raise _no_address_space(span, exc) from None
        va = _align(base, align)
    else:
        if va % PAGE:
            raise ValueError(f"buffer address {va:#x} is not page aligned")
        span = alloc_size + (PAGE if os.environ.get(ENV_GUARD_PAGES) else 0)
        try:
            base = sys.mmap(va, span, PROT_NONE, RESERVE | MAP_FIXED_NOREPLACE, -1, 0)
        except OSError as exc:
            if exc.errno == errno.ENOMEM:
                raise _no_address_space(span, exc) from None
            raise AddressInUse(f"{va:#x}+{alloc_size:#x} is not free here: {exc.strerror}", exc.errno) from None
        if base != va:  # a kernel older than 4.17 takes the address as a hint
            sys.munmap(base, span)
            raise AddressInUse(f"{va:#x}+{alloc_size:#x} is not free here")
    mmap_offset = 0
    if domain == "userptr":
        # The user's own pages: anonymous memory at the VA, handed to the GPU by address.
        sys.mmap(va, alloc_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0)
        mmap_offset = va
    try:
        out = device.kfd.ioctl("ALLOC_MEMORY_OF_GPU", va_addr=va, size=alloc_size, handle=0,
                               mmap_offset=mmap_offset, gpu_id=device.gpu_id, flags=flags)
    except Exception:
        sys.munmap(base, span)
        raise
    buf = Buffer(device, va, size, alloc_size, domain, flags, out.handle, name, (base, span))
    device.track(buf)
    sys.annotate("buffer", va=va, name=name, role=role, size=size)
    try:
        buf.map_to(device, *map_to)
        if domain == "userptr":
            buf.cpu = va
        elif domain in CPU_MAPPABLE and cpu_access:
            try:
                buf.cpu = sys.mmap(va, alloc_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
                                   device.drm_fd, out.mmap_offset)
            except OSError as exc:  # ENOMEM: the process's mappings at their limit (vm.max_map_count), say
                raise OutOfMemory(f"{buf.label}: cannot map it for the CPU ({exc.strerror}): this process holds "
                                  f"more mappings than the machine allows (vm.max_map_count)"
                                  if exc.errno == errno.ENOMEM else
                                  f"{buf.label}: cannot map it for the CPU ({exc.strerror})", exc.errno) from None
    except Exception:
        buf.free()
        raise
    return buf


def _devices(devices: tuple) -> None:
    """TypeError unless each of `devices` is a Device (what map_to and unmap_from take)."""
    for d in devices:
        if not hasattr(d, "gpu_id") or not hasattr(d, "kfd"):
            raise TypeError(f"buffers map to Devices (system.devices[i]), not {d!r}")
