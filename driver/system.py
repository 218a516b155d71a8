"""The workload author's entry point: open the system, pick a GPU, allocate, make queues, copy, signal, wait.

    with System.open() as system:                # real GPUs, or the emulated default without them
        gpu = system.devices[0]
        src, dst = gpu.alloc(1 << 20, "gtt"), gpu.alloc(1 << 20, "vram")
        q, done = gpu.sdma_queue(), system.semaphore()
        q.copy(dst, src, 1 << 20).signal(done, 1).submit()
        done.wait(1)

Threads: devices, buffers, queues, semaphores and events may be used from several threads at once.
- Making and freeing buffers, queues, semaphores and events is safe from any thread.
- A queue collects packets per thread: `q.copy(...).signal(...).submit()` puts only this thread's packets on
  the ring, contiguously. Submissions to one queue are serialised and the engine runs them in that order.
- A buffer's bytes are not ordered between threads, nor between the CPU and the GPUs: semaphores order them.
- Several threads may wait on one semaphore; its auto-reset event wakes those sleeping on it when it is set
  (kfd_events.c set_event), a thread between two polls sees the value at its next (at most 10 ms later).
- close() must come after every other thread is done with the system.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import threading
from typing import TYPE_CHECKING

from kfdtrace.driver import kfd_ioctl as K
from kfdtrace.driver.backend import open_syscalls
from kfdtrace.driver.errors import AddressInUse, DeviceError, GpuFault
from kfdtrace.driver.families import Target, target_by_version
from kfdtrace.driver.kfd import Kfd
from kfdtrace.driver.memory import Buffer, allocate
from kfdtrace.driver.ring_queue import RingQueue
from kfdtrace.driver.sdma_queue import SdmaQueue
from kfdtrace.driver.signals import SLOT, Event, Semaphore
from kfdtrace.driver.syscalls import (
    KFD_DEVICE,
    MAP_SHARED,
    PROT_READ,
    PROT_WRITE,
    Syscalls,
)
from kfdtrace.driver.topology import Node, Topology, read_topology
from kfdtrace.driver.visible import visibility, visible_gpus

if TYPE_CHECKING:  # loaded when first used: SDMA work alone needs neither numpy nor the code-object loader
    from kfdtrace.driver.aql_queue import AqlQueue
    from kfdtrace.driver.compute_queue import ComputeQueue
    from kfdtrace.driver.program import Program

SEMAPHORE_POOL = 64 << 10


class Device:
    """One GPU node: its render node, VM, doorbells, buffers and queues."""

    def __init__(self, system: System, index: int, node: Node):
        self.system, self.index, self.node = system, index, node
        self.kfd, self.sys = system.kfd, system.sys
        self.target: Target = target_by_version(node.gfx_target_version)
        self.gpu_id = node.gpu_id
        self.buffers: dict[Buffer, None] = {}  # in the order made: close() frees them newest first, every run alike
        self.queues: list[RingQueue] = []
        self._lock = threading.Lock()  # guards buffers, queues and the doorbell mapping
        self._doorbells: int | None = None
        minor = node.properties.get("drm_render_minor", 128 + index)
        path = f"/dev/dri/renderD{minor}"
        try:
            self.drm_fd = self.sys.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise DeviceError(f"cannot open {path} for GPU {self.gpu_id:#x}: {exc.strerror}", exc.errno) from None
        try:
            self.kfd.ioctl("ACQUIRE_VM", drm_fd=self.drm_fd, gpu_id=self.gpu_id)
        except DeviceError as exc:
            self.sys.close(self.drm_fd)
            if exc.errno != errno.EBUSY:
                raise
            # kfd_ioctl_acquire_vm: the kernel keeps the render-node file of a process's first ACQUIRE_VM until the
            # process ends, closed or not, and refuses any other (campaign 98)
            raise DeviceError(f"GPU {self.gpu_id:#x}: this process already opened it (a System, closed or not): "
                              f"the kernel keeps a process's GPU state until it exits; open the GPUs once and "
                              f"use that System", errno.EBUSY) from None

    def __repr__(self) -> str:
        return f"gpu{self.index}({self.target.name}, id {self.gpu_id:#x})"

    @property
    def vram_size(self) -> int:
        return self.node.vram_size

    def free_vram(self) -> int:
        return self.kfd.ioctl("AVAILABLE_MEMORY", gpu_id=self.gpu_id).available

    def alloc(self, size: int, domain: str = "vram", **options) -> Buffer:
        """Allocate GPU memory: domain is vram, gtt, userptr, doorbell or mmio. See memory.allocate."""
        return allocate(self, size, domain, **options)

    def sdma_queue(self, ring_size: int = 64 << 10, engine: str | int = "sdma", name: str | None = None,
                   max_copy: int | None = None) -> SdmaQueue:
        """A new SDMA queue on this GPU; engine is "sdma", "xgmi" or an engine number."""
        return SdmaQueue(self, ring_size, engine, name, max_copy)

    def compute_queue(self, ring_size: int = 64 << 10, name: str | None = None) -> ComputeQueue:
        """A new PM4 compute queue on this GPU (its EOP and CWSR buffers sized as KFD asks)."""
        from kfdtrace.driver.compute_queue import ComputeQueue

        return ComputeQueue(self, ring_size, name)

    def aql_queue(self, packets: int | None = None, name: str | None = None) -> AqlQueue:
        """A new AQL queue on this GPU: a ring of `packets` 64-byte slots (aql_queue.DEFAULT_PACKETS when None;
        EOP and CWSR sized as KFD asks)."""
        from kfdtrace.driver.aql_queue import DEFAULT_PACKETS, AqlQueue

        return AqlQueue(self, DEFAULT_PACKETS if packets is None else packets, name)

    def load(self, source: bytes | bytearray | memoryview | str | os.PathLike, name: str | None = None) -> Program:
        """Load a code object (or the entry of an offload bundle for this GPU) into executable memory here."""
        from kfdtrace.driver.program import Program

        return Program(self, source, name)

    def doorbell_page(self) -> int:
        """CPU address of this process's doorbell slice on this GPU (mapped once)."""
        with self._lock:
            if self._doorbells is None:
                offset = K.mmap_offset(K.MmapType.DOORBELL, self.gpu_id)
                self._doorbells = self.sys.mmap(0, K.KFD_DOORBELL_PROCESS_SLICE, PROT_READ | PROT_WRITE,
                                                MAP_SHARED, self.kfd.fd, offset)
            return self._doorbells

    def track(self, item: Buffer | RingQueue) -> None:
        """Remember a buffer or queue this driver made, for close()."""
        with self._lock:
            if isinstance(item, Buffer):
                self.buffers[item] = None
            else:
                self.queues.append(item)

    def untrack(self, item: Buffer | RingQueue) -> None:
        with self._lock:
            if isinstance(item, Buffer):
                self.buffers.pop(item, None)
            elif item in self.queues:
                self.queues.remove(item)

    def live_queues(self) -> list[RingQueue]:
        """The queues alive now (a copy: other threads may make or destroy queues meanwhile)."""
        with self._lock:
            return list(self.queues)

    def destroy_queues(self) -> None:
        """Destroy the queues still live on this device (best effort, as `close`)."""
        for q in self.live_queues():
            with contextlib.suppress(DeviceError):
                q.destroy()

    def close(self) -> None:
        """Destroy the queues and free the buffers this driver made, then close the render node. Best effort:
        what the kernel refuses here (say, a buffer a hand-made queue still uses) it reclaims with the process."""
        self.destroy_queues()
        with self._lock:
            buffers = list(self.buffers)
        for b in reversed(buffers):
            with contextlib.suppress(DeviceError):
                b.free()
        if self._doorbells is not None:
            self.sys.munmap(self._doorbells, K.KFD_DOORBELL_PROCESS_SLICE)
            self._doorbells = None
        if self.drm_fd >= 0:
            self.sys.close(self.drm_fd)
            self.drm_fd = -1


class System:
    """Every GPU the KFD topology lists that ROCR_VISIBLE_DEVICES and HIP_VISIBLE_DEVICES leave visible
    (driver/visible.py), in their order, opened through one syscall backend."""

    def __init__(self, syscalls: Syscalls, event_page_va: int | None = None):
        """`event_page_va`: where to put the event page if that address is free (a replay puts it where the
        recording had it, so that recorded mailbox addresses stay)."""
        self.sys = syscalls
        self.kfd = Kfd(syscalls)
        self.devices: list[Device] = []
        self._event_page: Buffer | None = None
        try:
            self._open(event_page_va)
        except BaseException:
            self.close()
            raise

    def _open(self, event_page_va: int | None) -> None:
        version = self.kfd.ioctl("GET_VERSION")
        if version.major_version != K.KFD_IOCTL_MAJOR_VERSION:
            raise DeviceError(f"{KFD_DEVICE} speaks KFD interface {version.major_version}."
                              f"{version.minor_version}; kfdtrace needs {K.KFD_IOCTL_MAJOR_VERSION}.x")
        self.kfd_version = (version.major_version, version.minor_version)
        self.topology: Topology = read_topology(self.sys)
        if not self.topology.gpus:
            raise DeviceError("the KFD topology lists no GPU node")
        gpus = visible_gpus(self.topology.gpus, os.environ)
        if not gpus:
            raise DeviceError(f"the KFD topology lists {len(self.topology.gpus)} GPU node(s) but "
                              f"{visibility(os.environ)} hides them all")
        for i, node in enumerate(gpus):
            self.devices.append(Device(self, i, node))
        self._faults: list[tuple[str, int | None, tuple[tuple[object, str], ...]]] = []  # GpuFault.faults
        self._sem_lock = threading.Lock()  # guards the semaphore pool and its free list
        self._sem_pool: Buffer | None = None
        self._sem_free: list[int] = []
        self._event_page = self._alloc_event_page(event_page_va)
        # The first CREATE_EVENT hands the kernel the event page, whatever the event's type
        # (kfd_ioctl_create_event): here, at open, in one thread; from then on the page is the process's signal BO,
        # which FREE refuses (EPERM, kfd_ioctl_free_memory_of_gpu) and the kernel releases with the process
        self._memory_event = self.kfd.ioctl("CREATE_EVENT", event_type=K.EventType.MEMORY, auto_reset=1,
                                            node_id=0, event_page_offset=self._event_page.handle).event_id
        self.devices[0].untrack(self._event_page)
        self._hw_event = self.kfd.ioctl("CREATE_EVENT", event_type=K.EventType.HW_EXCEPTION, auto_reset=1,
                                        node_id=0, event_page_offset=0).event_id

    @classmethod
    def open(cls, emulate: str | None = None, emulate_from: str | None = None) -> System:
        """Open the real GPUs, or emulated ones (`emulate="gfx942,gfx1100"`, or a topology tree copied from
        another machine); without either, the real KFD when it has a GPU, else the emulated default."""
        return cls(open_syscalls(emulate, emulate_from))

    def __enter__(self) -> System:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def backend(self) -> str:
        return self.sys.name

    # -- signals ------------------------------------------------------------------------------------
    def semaphore(self, name: str | None = None, event: bool = True) -> Semaphore:
        """A new 64-bit timeline semaphore at 0, visible to every GPU; with a KFD event to wake CPU waiters
        unless `event` is False (then `event_id` is None until one is given it)."""
        with self._sem_lock:
            if not self._sem_free:
                if self._sem_pool is not None:
                    raise DeviceError(f"all {SEMAPHORE_POOL // SLOT} semaphores are in use; free() some")
                self._sem_pool = self.devices[0].alloc(SEMAPHORE_POOL, "gtt", uncached=True, name="semaphores",
                                                       map_to=tuple(self.devices[1:]), role="semaphores")
                self._sem_free = list(range(SEMAPHORE_POOL - SLOT, -SLOT, -SLOT))
            pool, offset = self._sem_pool, self._sem_free.pop()
        return Semaphore(self, pool, offset, self.create_signal_event() if event else None, name, pooled=True)

    def release_semaphore(self, sem: Semaphore) -> None:
        """Give a pool semaphore's slot and event back, once."""
        with self._sem_lock:
            if sem.freed:
                return
            sem.freed = True
            self._sem_free.append(sem.offset)
        if sem.event_id is not None:
            self.kfd.ioctl("DESTROY_EVENT", event_id=sem.event_id)

    def event(self, auto_reset: bool = True) -> Event:
        return Event(self, auto_reset)

    def create_event_id(self, auto_reset: bool = True) -> int:
        """CREATE_EVENT of a signal event."""
        return self.kfd.ioctl("CREATE_EVENT", event_type=K.EventType.SIGNAL, auto_reset=int(auto_reset),
                              node_id=0, event_page_offset=0).event_id

    def _alloc_event_page(self, va: int | None) -> Buffer:
        options = dict(uncached=True, name="event page", map_to=tuple(self.devices[1:]), role="event page")
        if va is not None:
            with contextlib.suppress(AddressInUse, ValueError):  # taken here, or no page address: anywhere else
                return self.devices[0].alloc(K.KFD_EVENT_PAGE_SIZE, "gtt", va=va, **options)
        return self.devices[0].alloc(K.KFD_EVENT_PAGE_SIZE, "gtt", **options)

    def event_mailbox(self, event_id: int) -> int:
        """GPU address of a signal event's mailbox, its 8-byte slot in the event page (kfd_events.c: a signal
        event's slot index is its id), which every GPU maps."""
        return self._event_page.addr(8 * event_id, 8)

    def clear_mailbox(self, event_id: int) -> None:
        """Make a signal event's mailbox read unsignaled again, as creating the event left it."""
        self._event_page.write(K.UNSIGNALED_EVENT_SLOT.to_bytes(8, "little"), 8 * event_id)

    def create_signal_event(self) -> int | None:
        """A KFD signal event for a semaphore's wake-ups; None when the process has used all 4095 (slot 0 is the
        kernel's)."""
        try:
            return self.create_event_id()
        except DeviceError:
            return None

    def wait_events(self, ids: list[int], timeout_ms: int) -> bool:
        """WAIT_EVENTS on `ids` plus the fault events; False on timeout. A fault is recorded and raised by
        raise_gpu_faults()."""
        all_ids = [*ids, self._memory_event, self._hw_event]
        data = (K.kfd_event_data * len(all_ids))()
        for d, eid in zip(data, all_ids, strict=True):
            d.event_id = eid
        out = self.kfd.ioctl("WAIT_EVENTS", events_ptr=ctypes.addressof(data), num_events=len(all_ids),
                             wait_for_all=0, timeout=timeout_ms)
        if out.wait_result != K.WaitResult.COMPLETE:
            return False
        mem, hw = data[-2].memory_exception_data, data[-1].hw_exception_data
        found = []
        if mem.gpu_id:
            found.append(f"GPU {mem.gpu_id:#x} VM fault at address {mem.va:#x}")
        if hw.gpu_id:
            found.append(f"GPU {hw.gpu_id:#x} stopped a queue")
        if found:
            stopped = tuple((q, q.describe()) for d in self.devices for q in d.live_queues() if not q.idle)
            self._faults.append(("; ".join(found), mem.va if mem.gpu_id else None, stopped))
        return True

    def raise_gpu_faults(self, wait: tuple[str, dict] | None = None) -> None:
        """GpuFault if a GPU stopped a queue. `wait`: the annotation (kind, fields) of the CPU wait the fault ends,
        announced first as failed on it (`ok` false, `fault` the message), so a recording says why it ended."""
        if self._faults:
            fault = "; ".join("; ".join((found, *(text for _, text in stopped))) for found, _, stopped in self._faults)
            if wait is not None:
                self.sys.annotate(wait[0], **wait[1], ok=False, fault=fault)
            va = next((va for _, va, _ in self._faults if va is not None), None)
            raise GpuFault(fault, va, tuple(self._faults))

    def queue_report(self) -> str:
        queues = [q.describe() for d in self.devices for q in d.live_queues()]
        return "queues: " + ("; ".join(queues) if queues else "none")

    def close(self) -> None:
        """Every device's queues destroyed before any device frees its buffers: a queue of one GPU may still poll
        memory another's hold (the semaphores live on the first)."""
        for d in self.devices:
            d.destroy_queues()
        for d in self.devices:
            d.close()
        self.devices = []
        self.kfd.close()
        if self._event_page is not None:  # the kernel's now (FREE refuses it): its addresses are this process's
            self._event_page.release_addresses()
