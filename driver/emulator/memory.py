"""Emulated GPU memory: buffer objects backed by host memory, and one GPU virtual address space per GPU.

A buffer object is a memfd. The emulator keeps its own mapping of it (the "host view") and the driver maps
the same memfd at the buffer's GPU VA for CPU access, so CPU and GPU see one set of bytes, as with
large-BAR VRAM or GTT on a real board. memfd pages are allocated on first touch, so a board's whole VRAM can
be handed out without the host having it.

Engines reach buffers through GpuVm.access(), which holds the buffer's host memory for one access: freeing a
buffer unmaps it from the GPU at once (the next access faults, as on hardware) but keeps its host view until
the accesses under way end, so an engine never touches host memory that is gone. A dword or qword load or
store is one struct call through the buffer's memoryview instead, which is released before the memory goes.
"""

from __future__ import annotations

import ctypes
import os
import struct
import threading
from dataclasses import dataclass, field

from kfdtrace.driver.ranges import RangeMap
from kfdtrace.driver.syscalls import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_NORESERVE,
    MAP_PRIVATE,
    MAP_SHARED,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
    libc_mmap,
    libc_munmap,
    memory_view,
)

PAGE = 4096
# Copies up to this size are one slice assignment between the buffers' views, which keeps the GIL and costs
# a third of a foreign memmove; larger ones call memmove, which lets other threads run meanwhile.
GIL_COPY_BYTES = 64 << 10
_WORDS = {ctypes.c_uint32: struct.Struct("<I"), ctypes.c_uint64: struct.Struct("<Q")}  # what load/store move
# The flat apertures of GFX9+ (kfd_flat_memory.c MAKE_LDS_APP_BASE_V9 / MAKE_SCRATCH_APP_BASE_V9): a flat address
# there reaches the workgroup's LDS or the work-item's private memory, not GPU virtual memory.
LDS_APERTURE, SCRATCH_APERTURE = 1 << 48, 2 << 48


class VmFault(Exception):
    """A GPU access to an address no buffer is mapped at, as the kernel would report it."""

    def __init__(self, gpu_id: int, va: int, length: int, write: bool, why: str = "no buffer mapped there"):
        self.gpu_id, self.va, self.length, self.write = gpu_id, va, length, write
        kind = "write" if write else "read"
        super().__init__(f"GPU {gpu_id:#x} VM fault: {kind} of {length} bytes at {va:#x} ({why})")


@dataclass(eq=False)
class BufferObject:
    """One allocation: GPU VA, size, placement and where its bytes live on the host."""

    handle: int
    gpu_id: int
    va: int
    size: int
    flags: int
    host: int  # address of the emulator's own view of the bytes
    memfd: int = -1  # -1 for userptr buffers, whose bytes are the user's own pages
    mapped_on: set[int] = field(default_factory=set)
    is_vram: bool = False
    mmap_offset: int = -1  # the DRM mmap offset the driver maps it with
    users: int = 0  # engine accesses under way: the host memory outlives a free until they end
    freed: bool = False  # freed, or (userptr) its pages unmapped by the user: the GPU can no longer reach it
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # a Condition's `with` costs more
    _ended: threading.Condition = field(init=False, repr=False)  # on _lock: the last access under way ended
    # the host bytes as a memoryview, released before they go: copies use it inside an access (take()),
    # loads and stores as one struct call (GpuVm.load says why that is safe)
    view: memoryview = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._ended = threading.Condition(self._lock)
        self.view = memory_view(self.host, self.size, writable=True)

    @classmethod
    def create(cls, handle: int, gpu_id: int, va: int, size: int, flags: int, is_vram: bool) -> BufferObject:
        fd = os.memfd_create(f"kfd-bo-{handle}", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            # the host view is followed by an inaccessible page: an access running past it faults at once
            host = libc_mmap(0, size + PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        except OSError:
            os.close(fd)
            raise
        try:
            libc_mmap(host, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0)
        except OSError:
            libc_munmap(host, size + PAGE)
            os.close(fd)
            raise
        return cls(handle, gpu_id, va, size, flags, host, fd, is_vram=is_vram)

    def take(self) -> bool:
        """Count one more engine access to the host memory; False once the buffer is freed."""
        with self._lock:
            if self.freed:
                return False
            self.users += 1
            return True

    def let_go(self) -> None:
        """End an access taken with take(); the last one after a free releases the host memory."""
        with self._lock:
            self.users -= 1
            last = self.freed and not self.users
            if last:
                self._ended.notify_all()  # a revoke() may be waiting for the accesses to end
        if last:
            self._release_host()

    def release(self) -> None:
        """Free the buffer: its host memory goes now, or when the last engine access to it ends."""
        with self._lock:
            if self.freed:
                return
            self.freed = True
            idle = not self.users
        if idle:
            self._release_host()

    def revoke(self) -> None:
        """A userptr buffer whose pages go (freed, or unmapped by the user): later accesses fault, and this
        returns once those under way have ended, as the kernel's MMU notifier waits for the GPU before the pages
        are unmapped (amdgpu_hmm_invalidate_gfx). The emulator holds no copy of a user's pages to outlive them."""
        with self._lock:
            self.freed = True
            self._ended.wait_for(lambda: not self.users)
            self.view.release()  # a load or store that passed its check before this faults (see GpuVm.load)

    def _release_host(self) -> None:
        if self.memfd >= 0:
            self.view.release()  # before the memory goes: see GpuVm.load
            libc_munmap(self.host, self.size + PAGE)
            os.close(self.memfd)
            self.memfd = -1


class Access:
    """A GPU access under way: its host address, and the buffer whose host memory it holds until the end of
    the with-block."""

    __slots__ = ("bo", "host")

    def __init__(self, bo: BufferObject, host: int):
        self.bo, self.host = bo, host

    def __enter__(self) -> int:
        return self.host

    def __exit__(self, *exc: object) -> None:
        self.bo.let_go()


RECENT = 4  # buffers a GpuVm remembers finding (see GpuVm._covering)


class GpuVm:
    """One GPU's page table: non-overlapping [va, va+size) ranges, each backed by a buffer object. Engine
    threads translate while the ioctl path maps and unmaps: map and unmap change the RangeMap under a lock,
    translate reads it without one and checks what it found."""

    def __init__(self, gpu_id: int):
        self.gpu_id = gpu_id
        self._ranges: RangeMap[BufferObject] = RangeMap()
        self._lock = threading.Lock()
        # the last RECENT buffers found (a copy reads one and writes another, a fence a third), forgotten at
        # every unmap
        self._recent: tuple[BufferObject, ...] = ()
        self._unmaps = 0  # so that a lookup racing an unmap does not remember what went away

    def map(self, bo: BufferObject) -> bool:
        """Map `bo` at its VA; False when the range overlaps another mapping (the kernel's VA conflict).
        Mapping a buffer where it is already mapped is no error."""
        with self._lock:
            return self._ranges.get(bo.va) is bo or self._ranges.add(bo.va, bo.size, bo)

    def unmap(self, bo: BufferObject) -> bool:
        with self._lock:
            self._recent = ()
            self._unmaps += 1
            if self._ranges.get(bo.va) is not bo:
                return False
            self._ranges.remove(bo.va)
            return True

    def lookup(self, va: int) -> BufferObject | None:
        with self._lock:
            return self._ranges.get(va)

    def translate(self, va: int, length: int, write: bool = False) -> int:
        """Host address of [va, va+length) in a buffer the caller keeps alive otherwise (a queue's ring);
        raises VmFault unless one mapped buffer covers it all."""
        bo = self._covering(va, length, write)
        return bo.host + (va - bo.va)

    def access(self, va: int, length: int, write: bool = False) -> Access:
        """[va, va+length) for one engine access, its host memory kept until the access ends even if the buffer
        is freed meanwhile; raises VmFault unless one mapped, unfreed buffer covers it all."""
        bo = self._covering(va, length, write)
        if not bo.take():  # unmapped and freed since it was looked up
            raise VmFault(self.gpu_id, va, length, write)
        return Access(bo, bo.host + (va - bo.va))

    def copy(self, dst: int, src: int, n: int) -> None:
        """Copy n bytes from GPU address src to dst (memmove: they may overlap); both buffers' host memory is
        kept until it ends, even if one is freed meanwhile. Either range may run from one buffer into the next
        mapped right after it (`_run`). VmFault as access() raises it."""
        try:
            a = self._covering(src, n, False)
            b = self._covering(dst, n, True)
        except VmFault:
            self._copy_run(dst, src, n)
            return
        if n <= GIL_COPY_BYTES:  # no take(), as for load() and store(): the copy holds the GIL throughout
            try:
                if not a.freed and not b.freed:
                    to, at = dst - b.va, src - a.va
                    b.view[to:to + n] = a.view[at:at + n]
                    return
            except ValueError:  # a view released by a free since the lookup
                pass
            raise VmFault(self.gpu_id, src, n, False) if a.freed else VmFault(self.gpu_id, dst, n, True)
        if not a.take():
            raise VmFault(self.gpu_id, src, n, False)
        try:
            if not b.take():
                raise VmFault(self.gpu_id, dst, n, True)
            try:
                ctypes.memmove(b.host + (dst - b.va), a.host + (src - a.va), n)
            finally:
                b.let_go()
        finally:
            a.let_go()

    def _copy_run(self, dst: int, src: int, n: int) -> None:
        """`copy` of ranges that one buffer does not hold: read whole, then written, buffer by buffer."""
        data = bytearray()
        for bo, at, size in self._run(src, n, False):
            data += self._piece(bo, at, size, False)
        done = 0
        for bo, at, size in self._run(dst, n, True):
            self._piece(bo, at, size, True, bytes(data[done:done + size]))
            done += size

    def _piece(self, bo: BufferObject, at: int, size: int, write: bool, data: bytes = b"") -> bytes:
        """Bytes [at, at + size) of `bo` read, or written with `data`; VmFault if it was freed meanwhile."""
        if bo.take():
            try:
                if write:
                    ctypes.memmove(bo.host + at, data, size)
                    return b""
                return ctypes.string_at(bo.host + at, size)
            finally:
                bo.let_go()
        raise VmFault(self.gpu_id, bo.va + at, size, write)

    def _run(self, va: int, length: int, write: bool) -> list[tuple[BufferObject, int, int]]:
        """(buffer, offset, bytes) of the mapped buffers holding [va, va+length) one after the other: the GPU's page
        tables translate page by page (amdgpu_vm), so an access runs on from one buffer into the one mapped right
        after it. VmFault at the first byte none holds."""
        out, at, end = [], va, va + length
        while at < end:
            bo = self.lookup(at)
            if bo is None:
                raise VmFault(self.gpu_id, at, end - at, write)
            size = min(end, bo.va + bo.size) - at
            out.append((bo, at - bo.va, size))
            at += size
        return out

    def load(self, va: int, word: type[ctypes._SimpleCData]) -> int:
        """The `word` (ctypes.c_uint32, c_uint64) at va; VmFault as access() raises it.

        No lock and no take(): the read is one struct call through the buffer's view, which holds the GIL
        throughout, and the view is released before its host memory goes. A buffer freed before the check
        faults; one freed between the check and the read either still has its memory (the read came first) or
        has a released view, which raises ValueError: a fault too."""
        fmt = _WORDS[word]
        bo = self._covering(va, fmt.size, False)
        try:
            if not bo.freed:
                return fmt.unpack_from(bo.view, va - bo.va)[0]
        except ValueError:
            pass
        raise VmFault(self.gpu_id, va, fmt.size, False)

    def store(self, va: int, word: type[ctypes._SimpleCData], value: int) -> None:
        """Store `value` as a `word` at va (one store: readers never see half); VmFault as access() raises it,
        and no lock, as for load()."""
        fmt = _WORDS[word]
        bo = self._covering(va, fmt.size, True)
        try:
            if not bo.freed:
                fmt.pack_into(bo.view, va - bo.va, value)
                return
        except (ValueError, TypeError):  # a released view, as pack_into reports it (a bad value is struct.error)
            pass
        raise VmFault(self.gpu_id, va, fmt.size, True)

    def _covering(self, va: int, length: int, write: bool) -> BufferObject:
        """The mapped buffer holding all of [va, va+length); VmFault when there is none."""
        # Unlocked first (a lock costs as much as the lookup): a RangeMap changes its three lists one after
        # the other, so a read racing a map or unmap may pair an address with a neighbour's entry or run past
        # a list's end. A hit is trusted when the buffer itself covers the access; anything else is asked
        # again under the lock.
        unmaps = self._unmaps  # read before the buffers: an unmap clears them first, then counts itself
        recent = self._recent
        for bo in recent:
            if bo.va <= va and va + length <= bo.va + bo.size:
                return bo
        try:
            bo = self._ranges.get(va)
        except IndexError:
            bo = None
        if bo is None or va < bo.va or va + length > bo.va + bo.size:
            bo = self.lookup(va)
            if bo is None or va + length > bo.va + bo.size:
                fault_va = va if bo is None else bo.va + bo.size
                raise VmFault(self.gpu_id, fault_va, length, write)
        self._recent = (bo, *recent[:RECENT - 1])
        if self._unmaps != unmaps:  # an unmap came since this lookup began: what was found may be gone
            self._recent = ()
        return bo

    def mapping(self, va: int) -> tuple[int, int] | None:
        """(start, size) of the mapping containing va, as the kernel's amdgpu_vm_bo_lookup_mapping sees it."""
        bo = self.lookup(va)
        return None if bo is None else (bo.va, bo.size)
