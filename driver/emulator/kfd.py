"""The emulated GPU behind the syscall boundary: it answers the KFD ioctls like amdkfd does, and the render
nodes' DRM ioctls of kfdtrace.driver.drm_ioctl like drm_ioctl/amdgpu do (EmulatedMachine.drm_ioctl).

`EmulatedSyscalls` implements `kfdtrace.driver.syscalls.Syscalls`. Ioctls are dispatched the way the kernel's
kfd_ioctl() does it: by the ioctl nr through the one table (kfdtrace.driver.kfd_ioctl), copying
_IOC_SIZE(cmd) bytes in and out and zero-filling the rest, so callers built against an older, shorter struct
work. Each ioctl of the table is answered by the method named after it (`ioctl_<name>`); one the emulator
does not model fails with EOPNOTSUPP and a warning naming it.

Threads: the process lock (EmulatedMachine.lock) guards every table of the process: buffer objects, queues,
render-node fds, doorbell mappings and VMs. Every ioctl but the blocking ones, and every mmap, munmap and
doorbell store, hold it. Engine threads never take it (they use the event table's and the VMs' own locks), so
destroying a queue may join its engine thread under it.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import logging
import os
import threading
import time
from dataclasses import dataclass, field

from kfdtrace.driver import drm_ioctl as D
from kfdtrace.driver import kfd_ioctl as K
from kfdtrace.driver.emulator.aql import AqlProcessor
from kfdtrace.driver.emulator.cp import CommandProcessor
from kfdtrace.driver.emulator.events import EventDestroyed, EventTable
from kfdtrace.driver.emulator.memory import LDS_APERTURE, PAGE, SCRATCH_APERTURE, BufferObject, GpuVm, VmFault
from kfdtrace.driver.emulator.ring_engine import RingEngine
from kfdtrace.driver.emulator.sdma_engine import SdmaEngine
from kfdtrace.driver.errors import EMULATOR_LOG
from kfdtrace.driver.families import Target, queue_sizes, target_by_version
from kfdtrace.driver.memory import DOMAINS
from kfdtrace.driver.pm4 import DIALECTS as PM4_DIALECTS
from kfdtrace.driver.sdma import DIALECTS
from kfdtrace.driver.syscalls import (
    KFD_DEVICE,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    MAP_SHARED,
    QuietAnnotations,
    libc_mmap,
    libc_munmap,
)
from kfdtrace.driver.topology import HEAP_TYPE_SYSTEM, DictSysfs, Node, Topology, write_sysfs_tree

log = logging.getLogger(EMULATOR_LOG)

DOORBELL_SLICE = K.KFD_DOORBELL_PROCESS_SLICE
DRM_CLASS = "/sys/class/drm"
MAX_QUEUES_PER_PROCESS = 1024
BO_MMAP_BASE = 1 << 40  # DRM mmap offsets of emulated buffer objects
USER_LIMIT = (1 << 47) - 4096  # x86-64 TASK_SIZE_MAX: access_ok() refuses user pointers above it (EFAULT)
GPUVM_BASE, GPUVM_LIMIT = 0x1000000, (1 << 47) - 1  # SVM_USER_BASE .. the 47-bit user hole
ENOTSUPP = 524  # the kernel-internal errno amdkfd returns for an unknown queue type, seen as-is by userspace
GPU_CLOCK_HZ = 100_000_000  # SDMA GET_GLOBAL timestamp rate of the emulated boards
RESERVE_MEM_LIMIT = 3 << 29  # AMDGPU_RESERVE_MEM_LIMIT: system memory amdgpu keeps back from KFD allocations
MAX_CU_MASK_BITS = 1024  # kfd_ioctl_set_cu_mask's max_num_cus: bits past it are dropped


def system_ram(topology: Topology) -> int:
    """Bytes of system RAM: the CPU nodes' system memory banks, else this host's (what si_meminfo counts)."""
    banks = sum(b.get("size_in_bytes", 0) for n in topology.nodes if not n.is_gpu
                for b in n.mem_banks if b.get("heap_type") == HEAP_TYPE_SYSTEM)
    return banks or os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def memory_domain(flags: int) -> int:
    """The one domain flag of a buffer's flags that counts (0 if none): the first of DOMAINS it names."""
    return next((d for d in DOMAINS.values() if flags & d), 0)


# amdgpu_discovery.c lists every IP block of a die twice, by name and by hardware id (hw_id_names: GC 11,
# SDMA0 42, NBIF 108), as device/ip_discovery/die/0/<block>/<instance>/{major,minor,revision}.
IP_BLOCKS: dict[str, tuple[str, ...]] = {"gc_version": ("GC", "11"), "sdma_version": ("SDMA0", "42"),
                                         "nbif_version": ("NBIF", "108")}


def ip_discovery_files(topology: Topology) -> dict[str, str]:
    """The IP versions of each GPU under its render node's device directory, where clients (tinygrad) read them."""
    files = {}
    for node in topology.gpus:
        target = target_by_version(node.gfx_target_version)
        die = f"{DRM_CLASS}/renderD{node.drm_render_minor}/device/ip_discovery/die/0"
        for attr, names in IP_BLOCKS.items():
            version = getattr(target, attr)
            for name in names if version else ():  # a version no source gives is left out, not made up
                for part, value in zip(("major", "minor", "revision"), version, strict=True):
                    files[f"{die}/{name}/0/{part}"] = f"{value}\n"
    return files


def system_memory_limits(ram: int) -> tuple[int, int]:
    """(max_system_mem_limit, max_ttm_mem_limit) for `ram` bytes of RAM, as amdgpu_amdkfd_gpuvm_init_mem_limits
    (amdgpu_amdkfd_gpuvm.c, Linux 6.6+) sets them: RAM less 1/64, less AMDGPU_RESERVE_MEM_LIMIT (halved instead
    when under twice that; older kernels took 15/16 of RAM); and ttm_tt_pages_limit(), TTM's pages_limit,
    half of RAM by default. amdgpu_amdkfd_reserve_mem_limit charges GTT to both, userptr to the first only."""
    system = ram - (ram >> 6)
    system = system >> 1 if system < 2 * RESERVE_MEM_LIMIT else system - RESERVE_MEM_LIMIT
    return system, ram // 2 // PAGE * PAGE


REV_ID = 0  # the emulated boards' internal chip revision (A0): no dump gives a real board's
SMALL_BAR = 256 << 20  # CPU-visible VRAM of a small-BAR board: the PCI BAR amdgpu gets without resizing


def device_info(node: Node, target: Target) -> D.drm_amdgpu_info_device:
    """AMDGPU_INFO_DEV_INFO as amdgpu_info_ioctl fills it, from the node's properties and the family registry;
    what neither holds (VA ranges, PCIe, cache sizes, RB/TCC masks) stays 0."""
    p = node.properties
    bank = node.mem_banks[0] if node.mem_banks else {}
    device_id = p.get("device_id", 0)
    info = D.drm_amdgpu_info_device(
        device_id=device_id, chip_rev=REV_ID, external_rev=target.external_rev(device_id, REV_ID),
        family=target.amdgpu_family, num_shader_arrays_per_engine=p.get("simd_arrays_per_engine", 0),
        gpu_counter_freq=GPU_CLOCK_HZ // 1000, max_engine_clock=p.get("max_engine_clk_fcompute", 0) * 1000,
        max_memory_clock=bank.get("mem_clk_max", 0) * 1000, vram_bit_width=bank.get("width", 0),
        wave_front_size=p.get("wave_front_size", 0), num_cu_per_sh=p.get("cu_per_simd_array", 0),
        ids_flags=D.AMDGPU_IDS_FLAGS_GANG_SUBMIT | (D.AMDGPU_IDS_FLAGS_FUSION if target.apu else 0),
    )
    if p.get("simd_arrays_per_engine"):
        info.num_shader_engines = p.get("array_count", 0) // p["simd_arrays_per_engine"]
    if p.get("simd_per_cu"):
        info.cu_active_number = p.get("simd_count", 0) // p["simd_per_cu"]
    return info


def _copy_field(args, name: str, value: bytes) -> None:
    """drm_copy_field: at most the caller's *_len bytes of `value` (no NUL) go to its buffer, if it gave one;
    *_len becomes the length of `value`, so a caller can ask again with room enough."""
    n = min(len(value), getattr(args, f"{name}_len"))
    setattr(args, f"{name}_len", len(value))
    buf = getattr(args, name)
    if n and buf:
        _check(buf < USER_LIMIT, errno.EFAULT, f"drm_version.{name} {buf:#x} is not a user address")
        ctypes.memmove(buf, value, n)


class KfdError(Exception):
    """An ioctl failure: becomes OSError(errno) at the boundary."""

    def __init__(self, err: int, why: str):
        super().__init__(why)
        self.errno = err


def _check(cond: bool, err: int, why: str) -> None:
    if not cond:
        raise KfdError(err, why)


@dataclass(eq=False)
class EmulatedGpu:
    node: Node
    target: Target
    vm: GpuVm
    vram_size: int
    vram_used: int = 0
    vm_acquired: bool = False
    vm_file: int | None = None  # the render-node file ACQUIRE_VM took (the kernel holds it till the process ends)
    doorbell_maps: list[int] = field(default_factory=list)
    doorbells: dict[int, EmulatedQueue] = field(default_factory=dict)  # offset in the slice -> queue
    xnack: bool = False

    @property
    def gpu_id(self) -> int:
        return self.node.gpu_id


@dataclass(eq=False)
class EmulatedQueue:
    queue_id: int
    gpu: EmulatedGpu
    type: int
    doorbell_offset: int
    engine: RingEngine | None  # None for queue types the emulator does not execute yet
    sdma_slot: int | None = None
    bos: tuple[BufferObject, ...] = ()  # ring, pointers, EOP, CWSR: pinned while the queue lives


class EmulatedMachine:
    """GPUs described by a topology, and the one KFD process that talks to them."""

    def __init__(self, topology: Topology):
        self.topology = topology
        self.pid = os.getpid()  # the process whose KFD this is
        self.sysfs = DictSysfs({**write_sysfs_tree(topology), **ip_discovery_files(topology)})
        self.gpus: dict[int, EmulatedGpu] = {}
        for node in topology.gpus:
            target = target_by_version(node.gfx_target_version)
            self.gpus[node.gpu_id] = EmulatedGpu(node, target, GpuVm(node.gpu_id), node.vram_size)
        self.bos: dict[int, BufferObject] = {}
        # the same buffers by mmap offset, and the userptr ones: mmap and munmap look there, not through them all
        self.by_mmap_offset: dict[int, BufferObject] = {}
        self.userptr_bos: dict[int, BufferObject] = {}
        self.events = EventTable()
        self.queues: dict[int, EmulatedQueue] = {}
        self.atomic_lock = threading.Lock()
        self.lock = threading.RLock()  # the process lock: see the module docstring
        self._memory = threading.Condition()
        self._memory_waiters = 0
        self._next_bo = 1
        self._event_page: int | None = None
        self._t0 = time.monotonic_ns()
        self.drm_fds: dict[int, EmulatedGpu] = {}
        self.drm_files: dict[int, int] = {}  # render-node fd -> its file (a number never given twice)
        self.files = itertools.count(1)
        self.caller_fd = -1  # the /dev/kfd descriptor of the ioctl being answered (under the process lock)
        self.secondary_fds: set[int] = set()  # /dev/kfd descriptors that CREATE_PROCESS gave a secondary process
        self.max_system_mem, self.max_ttm_mem = system_memory_limits(system_ram(topology))
        self.system_mem_used = self.ttm_mem_used = 0  # GTT + userptr bytes; GTT bytes (kfd_mem_limit)

    # -- services the engines use -------------------------------------------------------------------
    def memory_changed(self) -> None:
        if self._memory_waiters:  # read unlocked: a waiter counted late wakes at its timeout, as one that
            with self._memory:  # read memory just before this change would
                self._memory.notify_all()

    def wait_memory_change(self, timeout: float) -> None:
        with self._memory:
            self._memory_waiters += 1
            try:
                self._memory.wait(timeout)
            finally:
                self._memory_waiters -= 1

    def read_sysfs(self, path: str) -> str:
        """A topology or render-node file; a GPU bank's used_memory is the VRAM in use now (kfd_topology.c
        mem_show answers it from amdgpu_amdkfd_get_vram_usage at every read)."""
        text = self.sysfs.read_sysfs(path)
        if path.endswith("/used_memory"):
            index = int(path.split("/nodes/")[1].split("/")[0])
            return f"{next(g.vram_used for g in self.gpus.values() if g.node.index == index)}\n"
        return text

    def gpu_clock(self) -> int:
        return (time.monotonic_ns() - self._t0) * GPU_CLOCK_HZ // 1_000_000_000

    def interrupt(self, event_id: int) -> None:
        """An SDMA TRAP or a CP end-of-pipe interrupt whose context carries a KFD event id (EventTable.interrupt)."""
        self.events.interrupt(event_id)

    def report_vm_fault(self, fault: VmFault) -> None:
        self.events.signal_type(K.EventType.MEMORY, (fault.gpu_id, fault.va))

    def report_memory_exception(self, gpu_id: int, va: int) -> None:
        """A wave stopped by an exception (an instruction the emulated GPU does not execute): the memory
        exception event, as a VM fault raises it."""
        self.events.signal_type(K.EventType.MEMORY, (gpu_id, va))

    def report_queue_error(self, gpu_id: int) -> None:
        self.events.signal_type(K.EventType.HW_EXCEPTION, (gpu_id, 0))

    def shutdown(self) -> None:
        for q in list(self.queues.values()):
            if q.engine:
                q.engine.stop()
        self.queues.clear()
        for gpu in self.gpus.values():
            gpu.doorbells.clear()
        for bo in self.bos.values():  # the process is gone: so is its memory, its VM and its events
            bo.release()
        self.bos.clear()
        self.by_mmap_offset.clear()
        self.userptr_bos.clear()
        for gpu in self.gpus.values():
            gpu.vm, gpu.vm_acquired, gpu.vram_used, gpu.doorbell_maps = GpuVm(gpu.gpu_id), False, 0, []
            gpu.vm_file = None
        self.system_mem_used = self.ttm_mem_used = 0
        self.events = EventTable()
        self._event_page = None
        self.secondary_fds.clear()

    # -- helpers ------------------------------------------------------------------------------------
    def gpu(self, gpu_id: int) -> EmulatedGpu:
        g = self.gpus.get(gpu_id)
        _check(g is not None, errno.EINVAL, f"no GPU with gpu_id {gpu_id:#x}")
        return g

    def bound(self, gpu_id: int, err: int = errno.ENODEV) -> EmulatedGpu:
        """kfd_process_device_data_by_id, then kfd_bind_process_to_device (kfd_process.c): EINVAL for an unknown
        gpu_id; the bind fails with ENODEV until ACQUIRE_VM gave the GPU a VM (CREATE_QUEUE, SET_MEMORY_POLICY
        and SET_TRAP_HANDLER report that as ESRCH: pass `err`)."""
        gpu = self.gpu(gpu_id)
        _check(gpu.vm_acquired, err, f"GPU {gpu_id:#x} has no VM: ACQUIRE_VM first")
        return gpu

    def bo(self, handle: int, err: int = errno.EINVAL) -> BufferObject:
        """The buffer of a handle (its GPU, the handle's bits 63:32, must exist: EINVAL); `err` if there is none."""
        self.gpu(handle >> 32)
        b = self.bos.get(handle)
        _check(b is not None, err, f"no buffer with handle {handle:#x}")
        return b

    def _gpu_ids(self, a) -> list[int]:
        """The device id array of MAP/UNMAP (kfd_chardev.c): n_devices 0 or n_success past it is EINVAL, an
        array the kernel cannot read EFAULT."""
        _check(a.n_devices > 0, errno.EINVAL, "the device ids array is empty")
        _check(a.n_success <= a.n_devices, errno.EINVAL, "n_success > n_devices")
        ok = a.device_ids_array_ptr and a.device_ids_array_ptr < USER_LIMIT and a.n_devices <= len(self.gpus) * 4
        _check(ok, errno.EFAULT, f"device_ids_array_ptr {a.device_ids_array_ptr:#x} is not readable")
        return list((ctypes.c_uint32 * a.n_devices).from_address(a.device_ids_array_ptr))

    def _exact_mapping(self, gpu: EmulatedGpu, va: int, size: int, what: str) -> None:
        """kfd_queue_buffer_get: va must lie in the first page of a GPU mapping exactly `size` bytes long,
        compared in whole pages (so a buffer under a page long is not size-checked, as in the kernel)."""
        m = gpu.vm.mapping(va)
        pages = size // PAGE
        ok = m is not None and m[0] // PAGE == va // PAGE and (pages == 0 or m[1] // PAGE == pages)
        _check(ok, errno.EINVAL, f"{what} {va:#x} is not the start of a {size:#x}-byte GPU mapping")

    # -- ioctl entry --------------------------------------------------------------------------------
    def ioctl(self, request: int, arg_addr: int | None, fd: int = -1) -> int:
        """kfd_ioctl(): the entry is found by _IOC_NR alone (ENOTTY outside the table; the type byte is not
        looked at), and the copy direction is the table's, not the caller's ("Do not trust userspace")."""
        _check(os.getpid() == self.pid, errno.EBADF, "the KFD file was opened by another process (a fork's child "
               "inherits it, but kfd_ioctl serves only the process that opened it)")
        entry = K.BY_NR.get(K.ioc_nr(request))
        _check(entry is not None, errno.ENOTTY, f"ioctl nr {K.ioc_nr(request):#04x} is not a KFD ioctl")
        usize = K.ioc_size(request)
        ksize = ctypes.sizeof(entry.struct) if entry.struct else 0
        kbuf = (ctypes.c_char * max(usize, ksize, 1))()
        if usize and entry.direction & K.IocDir.WRITE:
            _check(arg_addr is not None, errno.EFAULT, "null ioctl argument")
            ctypes.memmove(kbuf, arg_addr, usize)
        args = entry.struct.from_buffer(kbuf) if entry.struct else None
        handler = getattr(self, f"ioctl_{entry.name.lower()}", None)
        if handler is None:
            log.warning("the emulated GPU does not model AMDKFD_IOC_%s", entry.name)
            raise KfdError(errno.EOPNOTSUPP, f"AMDKFD_IOC_{entry.name} is not emulated")
        try:
            if entry.blocking:
                ret = handler(args)  # must not hold the process lock while it sleeps
            else:
                with self.lock:
                    self.caller_fd = fd
                    ret = handler(args)
        finally:  # the struct goes back whatever the handler returned (kfd_chardev.c kfd_ioctl)
            if usize and entry.direction & K.IocDir.READ:
                _check(arg_addr is not None, errno.EFAULT, "null ioctl argument")
                ctypes.memmove(arg_addr, kbuf, usize)
        return ret or 0

    def drm_ioctl(self, gpu: EmulatedGpu, request: int, arg_addr: int | None) -> int:
        """drm_ioctl() on a render node: the entry by _IOC_NR (the type byte is not looked at); bytes come in only
        when both the caller's and the table's direction say so, and go out likewise, into a kernel copy as large
        as the larger of the two sizes and zero-filled past what came in; they go out even when the handler
        fails. An nr outside kfdtrace.driver.drm_ioctl is ENOTTY: amdgpu answers many more (EINVAL past its own
        tables), the emulated GPU only these."""
        entry = D.BY_NR.get(K.ioc_nr(request))
        if entry is None:
            log.warning("the emulated GPU does not model DRM ioctl nr %#04x", K.ioc_nr(request))
            raise KfdError(errno.ENOTTY, f"DRM ioctl nr {K.ioc_nr(request):#04x} is not emulated")
        usize, both = K.ioc_size(request), K.ioc_dir(request) & entry.direction
        kbuf = (ctypes.c_char * max(usize, entry.size))()
        if usize and both & K.IocDir.WRITE:
            _check(arg_addr is not None and 0 < arg_addr < USER_LIMIT, errno.EFAULT, "bad ioctl argument")
            ctypes.memmove(kbuf, arg_addr, usize)
        try:
            getattr(self, f"drm_{entry.name.lower()}")(gpu, entry.struct.from_buffer(kbuf))
        finally:
            if usize and both & K.IocDir.READ:
                _check(arg_addr is not None and 0 < arg_addr < USER_LIMIT, errno.EFAULT, "bad ioctl argument")
                ctypes.memmove(arg_addr, kbuf, usize)
        return 0

    def drm_version(self, gpu: EmulatedGpu, a: D.drm_version) -> None:
        a.version_major, a.version_minor, a.version_patchlevel = D.DRIVER_VERSION
        for name, value in (("name", D.DRIVER_NAME), ("date", D.DRIVER_DATE), ("desc", D.DRIVER_DESC)):
            _copy_field(a, name, value)

    def drm_amdgpu_info(self, gpu: EmulatedGpu, a: D.drm_amdgpu_info) -> None:
        """amdgpu_info_ioctl: no return buffer or size is EINVAL, then at most return_size bytes of the answer
        are copied out; a query it does not answer is EINVAL."""
        _check(a.return_size and a.return_pointer, errno.EINVAL, "AMDGPU_INFO without return_pointer/return_size")
        answer = self._INFO_ANSWERS.get(a.query)
        if answer is None:
            log.warning("the emulated GPU does not answer AMDGPU_INFO query %#x", a.query)
            raise KfdError(errno.EINVAL, f"AMDGPU_INFO query {a.query:#x} is not answered")
        data = bytes(getattr(self, answer)(gpu))
        _check(a.return_pointer < USER_LIMIT, errno.EFAULT, f"return_pointer {a.return_pointer:#x}")
        ctypes.memmove(a.return_pointer, data, min(a.return_size, len(data)))

    def _vram_gtt(self, gpu: EmulatedGpu) -> D.drm_amdgpu_info_vram_gtt:
        """AMDGPU_INFO_VRAM_GTT: VRAM (KFD's bank size, already less the reserved part), the CPU-visible part (all
        of it on a large-BAR board), and GTT: TTM's page limit (amdgpu_ttm_init with gttsize=-1)."""
        vram = gpu.vram_size
        return D.drm_amdgpu_info_vram_gtt(vram, vram if gpu.node.large_bar else min(vram, SMALL_BAR),
                                          self.max_ttm_mem)

    def _dev_info(self, gpu: EmulatedGpu) -> D.drm_amdgpu_info_device:
        return device_info(gpu.node, gpu.target)

    _INFO_ANSWERS = {D.AmdgpuInfoQuery.DEV_INFO: "_dev_info", D.AmdgpuInfoQuery.VRAM_GTT: "_vram_gtt"}

    # -- ioctls -------------------------------------------------------------------------------------
    def ioctl_get_version(self, a) -> None:
        a.major_version, a.minor_version = K.KFD_IOCTL_MAJOR_VERSION, K.KFD_IOCTL_MINOR_VERSION

    def ioctl_runtime_enable(self, a) -> None:
        pass

    def ioctl_acquire_vm(self, a) -> None:
        """kfd_ioctl_acquire_vm: the process's VM on a GPU comes from one render-node file, which the kernel holds
        until the process ends (closing the fd does not give it back): another file is EBUSY, the same one 0."""
        gpu = self.gpu(a.gpu_id)
        _check(self.drm_fds.get(a.drm_fd) is gpu, errno.EINVAL, f"fd {a.drm_fd} is not this GPU's render node")
        file = self.drm_files[a.drm_fd]
        _check(gpu.vm_file in (None, file), errno.EBUSY,
               f"GPU {a.gpu_id:#x} has a VM from another render-node file of this process")
        gpu.vm_acquired, gpu.vm_file = True, file

    def _apertures(self, out, n: int) -> int:
        for ap, gpu in zip(out, list(self.gpus.values())[:n], strict=False):
            ap.gpu_id = gpu.gpu_id
            ap.lds_base, ap.lds_limit = LDS_APERTURE, LDS_APERTURE + 0xFFFFFFFF
            ap.scratch_base, ap.scratch_limit = SCRATCH_APERTURE, SCRATCH_APERTURE + 0xFFFFFFFF
            ap.gpuvm_base, ap.gpuvm_limit = GPUVM_BASE, GPUVM_LIMIT
        return min(n, len(self.gpus))

    def ioctl_get_process_apertures(self, a) -> None:
        a.num_of_nodes = self._apertures(a.process_apertures, len(a.process_apertures))

    def ioctl_get_process_apertures_new(self, a) -> None:
        if a.num_of_nodes == 0:
            a.num_of_nodes = len(self.gpus)
            return
        _check(a.kfd_process_device_apertures_ptr != 0, errno.EFAULT, "null apertures array")
        out = (K.kfd_process_device_apertures * a.num_of_nodes).from_address(a.kfd_process_device_apertures_ptr)
        a.num_of_nodes = self._apertures(out, a.num_of_nodes)

    def _deprecated(self, a) -> None:
        raise KfdError(errno.EPERM, "the pre-1.13 debugger ioctls are gone; the kernel answers EPERM")

    ioctl_dbg_register_deprecated = ioctl_dbg_unregister_deprecated = _deprecated
    ioctl_dbg_address_watch_deprecated = ioctl_dbg_wave_control_deprecated = _deprecated

    def ioctl_get_clock_counters(self, a) -> None:
        # kfd_ioctl_get_clock_counters: an unknown gpu_id is "a node without GPU resource", counter 0.
        a.gpu_clock_counter = self.gpu_clock() if a.gpu_id in self.gpus else 0
        a.cpu_clock_counter = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW)
        a.system_clock_counter = time.monotonic_ns()
        a.system_clock_freq = 1_000_000_000

    def ioctl_available_memory(self, a) -> None:
        gpu = self.gpu(a.gpu_id)
        a.available = gpu.vram_size - gpu.vram_used

    def ioctl_set_xnack_mode(self, a) -> None:
        if a.xnack_enabled >= 0:
            _check(all(g.target.family.name.startswith("CDNA") for g in self.gpus.values()) or not a.xnack_enabled,
                   errno.EPERM, "XNACK is not supported on every GPU")
            for g in self.gpus.values():
                g.xnack = bool(a.xnack_enabled)
        else:
            a.xnack_enabled = int(next(iter(self.gpus.values())).xnack) if self.gpus else 0

    def ioctl_set_memory_policy(self, a) -> None:
        policies = {K.CachePolicy.COHERENT, K.CachePolicy.NONCOHERENT}
        _check(a.default_policy in policies and a.alternate_policy in policies, errno.EINVAL,
               f"cache policies {a.default_policy}/{a.alternate_policy}: 0 (coherent) or 1 (non-coherent)")
        self.bound(a.gpu_id, errno.ESRCH)

    def ioctl_set_scratch_backing_va(self, a) -> None:
        self.bound(a.gpu_id)

    def ioctl_set_trap_handler(self, a) -> None:
        self.bound(a.gpu_id, errno.ESRCH)

    def ioctl_create_process(self, a) -> None:
        """kfd_ioctl_create_process (1.19): the descriptor's process becomes a new secondary one; a descriptor
        owns one, so asking again is EINVAL."""
        _check(self.caller_fd not in self.secondary_fds, errno.EINVAL, "this /dev/kfd already has a secondary process")
        self.secondary_fds.add(self.caller_fd)

    def ioctl_get_tile_config(self, a) -> None:
        self.gpu(a.gpu_id)
        a.num_tile_configs = a.num_macro_tile_configs = 0  # gfx9+ has no tile mode tables

    def ioctl_alloc_memory_of_gpu(self, a) -> None:
        """kfd_ioctl_alloc_memory_of_gpu, in its order; the domain is the first of VRAM, GTT, USERPTR, DOORBELL,
        MMIO_REMAP the flags name (amdgpu_amdkfd_gpuvm_alloc_memory_of_gpu), the other domain bits are ignored."""
        flags = a.flags
        _check(a.size > 0, errno.EINVAL, "size 0")
        _check(not (flags & K.AllocMemFlags.USERPTR and self.caller_fd in self.secondary_fds), errno.EOPNOTSUPP,
               "USERPTR is not supported on a secondary KFD process")
        gpu = self.gpu(a.gpu_id)
        _check(not (flags & K.AllocMemFlags.PUBLIC and flags & K.AllocMemFlags.VRAM) or gpu.node.large_bar,
               errno.EINVAL, "PUBLIC (host-visible) VRAM on a small-BAR GPU; allocate it without PUBLIC")
        self.bound(a.gpu_id)
        if flags & K.AllocMemFlags.USERPTR:
            _check(a.mmap_offset % PAGE == 0 and a.mmap_offset, errno.EINVAL, "userptr not page aligned")
        elif flags & K.AllocMemFlags.DOORBELL:
            _check(a.size == DOORBELL_SLICE, errno.EINVAL, f"a doorbell buffer is {DOORBELL_SLICE:#x} bytes")
        elif flags & K.AllocMemFlags.MMIO_REMAP:
            _check(a.size == PAGE, errno.EINVAL, f"the MMIO remap buffer is one page ({PAGE:#x} bytes)")
        domain = memory_domain(flags)
        _check(domain != 0, errno.EINVAL, f"flags {flags:#x} name no memory domain")
        _check(a.size % PAGE == 0 and a.va_addr % PAGE == 0, errno.EINVAL,
               f"size {a.size:#x} / va {a.va_addr:#x} not page aligned")
        _check(GPUVM_BASE <= a.va_addr and a.va_addr + a.size <= GPUVM_LIMIT + 1, errno.EINVAL,
               f"va {a.va_addr:#x} outside the GPUVM aperture")
        is_vram = bool(domain & K.AllocMemFlags.VRAM)
        if is_vram:
            _check(gpu.vram_used + a.size <= gpu.vram_size, errno.ENOMEM,
                   f"{a.size:#x} bytes of VRAM asked, {gpu.vram_size - gpu.vram_used:#x} free")
        if flags & K.AllocMemFlags.USERPTR:  # init_user_pages: get_user_pages wants them all, writable
            _check(_user_pages_writable(a.mmap_offset, a.size), errno.EFAULT,
                   f"host memory [{a.mmap_offset:#x}, {a.mmap_offset + a.size:#x}) is not all mapped writable")
        self._reserve_system_memory(domain, a.size)
        handle = (a.gpu_id << 32) | self._next_bo
        if domain == K.AllocMemFlags.USERPTR:
            bo = BufferObject(handle, a.gpu_id, a.va_addr, a.size, flags, host=a.mmap_offset)
        else:
            try:
                bo = BufferObject.create(handle, a.gpu_id, a.va_addr, a.size, flags, is_vram)
            except OSError as exc:
                raise KfdError(errno.ENOMEM, f"host memory for the buffer: {exc}") from None
        self._next_bo += 1
        self.bos[handle] = bo
        if is_vram:
            gpu.vram_used += a.size
        self._charge_system_memory(domain, a.size)
        a.handle = handle
        if domain != K.AllocMemFlags.USERPTR:
            a.mmap_offset = bo.mmap_offset = BO_MMAP_BASE + (handle & 0xFFFFFFFF) * (1 << 24)
            self.by_mmap_offset[bo.mmap_offset] = bo
        if flags & K.AllocMemFlags.USERPTR:
            self.userptr_bos[handle] = bo

    def _reserve_system_memory(self, domains: int, size: int) -> None:
        """ENOMEM when a GTT or userptr buffer of `size` bytes would pass the system or TTM limit."""
        system, ttm = self._system_charge(domains, size)
        _check(self.system_mem_used + system <= self.max_system_mem, errno.ENOMEM,
               f"{size:#x} bytes of system memory asked, {self.max_system_mem - self.system_mem_used:#x} left "
               f"under the KFD system memory limit of {self.max_system_mem:#x}")
        _check(self.ttm_mem_used + ttm <= self.max_ttm_mem, errno.ENOMEM,
               f"{size:#x} bytes of GTT asked, {self.max_ttm_mem - self.ttm_mem_used:#x} left under the TTM "
               f"page limit of {self.max_ttm_mem:#x}")

    def _charge_system_memory(self, domains: int, size: int) -> None:
        """Count (or, with a negative size, uncount) a GTT or userptr buffer against the limits."""
        system, ttm = self._system_charge(domains, size)
        self.system_mem_used += system
        self.ttm_mem_used += ttm

    @staticmethod
    def _system_charge(domains: int, size: int) -> tuple[int, int]:
        """(system, TTM) bytes a buffer of this domain costs, as amdgpu_amdkfd_reserve_mem_limit charges them."""
        if domains & K.AllocMemFlags.GTT:
            return size, size
        return (size, 0) if domains & K.AllocMemFlags.USERPTR else (0, 0)

    def _not_in_use(self, bo: BufferObject) -> None:
        """The kernel keeps a queue's buffers while the queue lives (kfd_queue_acquire_buffers takes them)."""
        q = next((q for q in self.queues.values() if bo in q.bos), None)
        _check(q is None, errno.EBUSY, f"buffer {bo.va:#x} is in use by queue {q and q.queue_id}")

    def ioctl_free_memory_of_gpu(self, a) -> None:
        # kfd_ioctl_free_memory_of_gpu: "Safeguard to prevent user space from freeing signal BO".
        _check(a.handle != self._event_page, errno.EPERM, "the event page is freed with the process, not before")
        bo = self.bo(a.handle)
        self._not_in_use(bo)
        _check(not bo.mapped_on, errno.EBUSY, f"buffer {bo.va:#x} is still mapped")
        del self.bos[a.handle]
        self.by_mmap_offset.pop(bo.mmap_offset, None)
        self.userptr_bos.pop(a.handle, None)
        if bo.is_vram:
            self.gpus[bo.gpu_id].vram_used -= bo.size
        self._charge_system_memory(memory_domain(bo.flags), -bo.size)
        if bo.flags & K.AllocMemFlags.USERPTR:
            bo.revoke()  # the user may unmap its pages as soon as this returns
        else:
            bo.release()

    def ioctl_map_memory_to_gpu(self, a) -> None:
        ids = self._gpu_ids(a)
        self.bound(a.handle >> 32)
        bo = self.bo(a.handle, errno.ENOMEM)  # kfd_process_device_translate_handle failing is ENOMEM
        for i in range(a.n_success, a.n_devices):
            gpu = self.bound(ids[i])
            _check(gpu.vm.map(bo), errno.EINVAL, f"VA {bo.va:#x}+{bo.size:#x} overlaps a mapping on {ids[i]:#x}")
            bo.mapped_on.add(ids[i])
            a.n_success = i + 1

    def ioctl_unmap_memory_from_gpu(self, a) -> None:
        ids = self._gpu_ids(a)
        bo = self.bo(a.handle, errno.ENOMEM)
        self._not_in_use(bo)
        for i in range(a.n_success, a.n_devices):
            gpu = self.gpu(ids[i])
            _check(gpu.vm.unmap(bo), errno.EINVAL, f"buffer {bo.va:#x} is not mapped on {ids[i]:#x}")
            bo.mapped_on.discard(ids[i])
            a.n_success = i + 1

    def ioctl_create_queue(self, a) -> None:
        """kfd_ioctl_create_queue: set_queue_properties_from_user's argument checks, then the GPU (EINVAL) and
        the bind (ESRCH), the SDMA engine id, kfd_queue_acquire_buffers (EINVAL), the queue slot (ENOMEM)."""
        _check((a.queue_percentage & 0xFF) <= K.KFD_MAX_QUEUE_PERCENTAGE, errno.EINVAL, "queue_percentage > 100")
        _check(a.queue_priority <= K.KFD_MAX_QUEUE_PRIORITY, errno.EINVAL, "queue_priority > 15")
        _check(a.ring_base_address < USER_LIMIT, errno.EFAULT, f"ring_base_address {a.ring_base_address:#x} "
               "is not a user address")
        _check(a.ring_size == 0 or a.ring_size & (a.ring_size - 1) == 0, errno.EINVAL,
               f"ring_size {a.ring_size:#x} is not a power of 2")
        for what in ("read_pointer_address", "write_pointer_address", "eop_buffer_address",
                     "ctx_save_restore_address"):
            _check(getattr(a, what) < USER_LIMIT, errno.EFAULT, f"{what} {getattr(a, what):#x} is not a user address")
        _check(a.queue_type in set(K.QueueType), ENOTSUPP, f"queue type {a.queue_type}")
        gpu = self.bound(a.gpu_id, errno.ESRCH)
        props = gpu.node.properties
        if a.queue_type == K.QueueType.SDMA_BY_ENG_ID:
            engines = props.get("num_sdma_engines", 0) + props.get("num_sdma_xgmi_engines", 0)
            _check(a.sdma_engine_id < engines, errno.EINVAL, f"sdma_engine_id {a.sdma_engine_id} >= {engines} engines")
        ring_size = max(a.ring_size, K.KFD_MIN_QUEUE_RING_SIZE)  # kernel clamps small rings, it does not refuse
        self._exact_mapping(gpu, a.write_pointer_address, PAGE, "write pointer")
        self._exact_mapping(gpu, a.read_pointer_address, PAGE, "read pointer")
        self._exact_mapping(gpu, a.ring_base_address, ring_size, "ring")
        props = gpu.node.properties
        is_sdma = a.queue_type in K.SDMA_QUEUE_TYPES
        slot = None
        if is_sdma:
            slot = self._sdma_slot(gpu, a)
        else:
            sizes = queue_sizes(props)
            if a.eop_buffer_address:
                _check(a.eop_buffer_size == sizes.eop_buffer_size, errno.EINVAL,
                       f"eop_buffer_size {a.eop_buffer_size:#x} != {sizes.eop_buffer_size:#x}")
                self._exact_mapping(gpu, a.eop_buffer_address, sizes.eop_buffer_size, "EOP buffer")
            _check(a.ctl_stack_size == sizes.ctl_stack_size, errno.EINVAL,
                   f"ctl_stack_size {a.ctl_stack_size:#x} != {sizes.ctl_stack_size:#x}")
            _check(a.ctx_save_restore_size >= sizes.cwsr_size, errno.EINVAL,
                   f"ctx_save_restore_size {a.ctx_save_restore_size:#x} < {sizes.cwsr_size:#x}")
            self._exact_mapping(gpu, a.ctx_save_restore_address,
                                sizes.cwsr_allocation(props.get("num_xcc", 1), a.ctx_save_restore_size), "CWSR area")
        used = {q.queue_id for q in self.queues.values()}
        qid = next((i for i in range(MAX_QUEUES_PER_PROCESS) if i not in used), None)
        _check(qid is not None, errno.ENOMEM, "the process has 1024 queues")
        step = gpu.target.family.doorbell_size
        db = next(i * step for i in range(MAX_QUEUES_PER_PROCESS) if i * step not in gpu.doorbells)
        engine = None
        if is_sdma:
            family = gpu.target.family
            engine = SdmaEngine(self, gpu.vm, DIALECTS[family.sdma_dialect], qid, a.ring_base_address, ring_size,
                                a.read_pointer_address, family.sdma_count_bits)
        elif a.queue_type in (K.QueueType.COMPUTE, K.QueueType.COMPUTE_AQL):  # the CP runs PM4 or AQL rings
            processor = AqlProcessor if a.queue_type == K.QueueType.COMPUTE_AQL else CommandProcessor
            engine = processor(self, gpu.vm, PM4_DIALECTS[gpu.target.family.pm4_dialect], qid,
                               a.ring_base_address, ring_size, a.read_pointer_address,
                               num_xcc=props.get("num_xcc", 1), family=gpu.target.family)
        pinned = tuple(gpu.vm.lookup(va) for va in (a.ring_base_address, a.read_pointer_address,
                                                    a.write_pointer_address, a.eop_buffer_address,
                                                    a.ctx_save_restore_address) if va)
        self.queues[qid] = gpu.doorbells[db] = EmulatedQueue(qid, gpu, a.queue_type, db, engine, slot, pinned)
        a.queue_id = qid
        a.doorbell_offset = K.mmap_offset(K.MmapType.DOORBELL, gpu.gpu_id, db)

    def _sdma_slot(self, gpu: EmulatedGpu, a) -> tuple[str, int]:
        """Pick an SDMA engine queue slot like the kernel's allocate_sdma_queue (ENOMEM when all are taken)."""
        props = gpu.node.properties
        per_engine = props.get("num_sdma_queues_per_engine", 8)
        n_sdma, n_xgmi = props.get("num_sdma_engines", 0), props.get("num_sdma_xgmi_engines", 0)
        if a.queue_type == K.QueueType.SDMA_BY_ENG_ID:
            engines = [a.sdma_engine_id]
        elif a.queue_type == K.QueueType.SDMA_XGMI:
            # allocate_sdma_queue: an empty xGMI queue bitmap, whether used up or never there, is ENOMEM.
            _check(n_xgmi > 0, errno.ENOMEM, "this GPU has no xGMI SDMA engines")
            engines = list(range(n_sdma, n_sdma + n_xgmi))
        else:
            engines = list(range(n_sdma))
        taken = {q.sdma_slot for q in self.queues.values() if q.gpu is gpu and q.sdma_slot is not None}
        for qi in range(per_engine):
            for e in engines:
                if (e, qi) not in taken:
                    return (e, qi)
        raise KfdError(errno.ENOMEM, "every SDMA queue slot of the engine(s) is in use")

    def ioctl_destroy_queue(self, a) -> None:
        q = self.queues.pop(a.queue_id, None)
        _check(q is not None, errno.EINVAL, f"no queue {a.queue_id}")
        del q.gpu.doorbells[q.doorbell_offset]
        if q.engine:
            q.engine.stop()

    def ioctl_update_queue(self, a) -> None:
        """kfd_ioctl_update_queue's argument checks, then pqm_update_queue_properties: EFAULT for no such queue."""
        _check((a.queue_percentage & 0xFF) <= K.KFD_MAX_QUEUE_PERCENTAGE, errno.EINVAL, "queue_percentage > 100")
        _check(a.queue_priority <= K.KFD_MAX_QUEUE_PRIORITY, errno.EINVAL, "queue_priority > 15")
        _check(a.ring_base_address < USER_LIMIT, errno.EFAULT, f"ring_base_address {a.ring_base_address:#x} "
               "is not a user address")
        _check(a.ring_size == 0 or a.ring_size & (a.ring_size - 1) == 0, errno.EINVAL, "ring_size not a power of 2")
        _check(a.queue_id in self.queues, errno.EFAULT, f"no queue {a.queue_id}")

    def ioctl_set_cu_mask(self, a) -> None:
        """kfd_ioctl_set_cu_mask, then pqm_update_mqd: a mask of whole u32 words (at most 1024 bits are read),
        EFAULT for no such queue, and on GC 10.0 up to 12.1 (WGPs) CUs enabled in adjacent pairs only."""
        _check(a.num_cu_mask % 32 == 0, errno.EINVAL, f"num_cu_mask {a.num_cu_mask} is not a multiple of 32")
        _check(a.num_cu_mask != 0, errno.EINVAL, "num_cu_mask 0")
        bits = min(a.num_cu_mask, MAX_CU_MASK_BITS)
        _check(0 < a.cu_mask_ptr < USER_LIMIT, errno.EFAULT, f"cu_mask_ptr {a.cu_mask_ptr:#x} is not readable")
        words = list((ctypes.c_uint32 * (bits // 32)).from_address(a.cu_mask_ptr))
        q = self.queues.get(a.queue_id)
        _check(q is not None, errno.EFAULT, f"no queue {a.queue_id}")
        if q.gpu.target.family.cu_pairs:
            mask = sum(w << (32 * i) for i, w in enumerate(words))
            pairs = [(mask >> i) & 3 for i in range(0, bits, 2)]
            _check(all(p in (0, 3) for p in pairs), errno.EINVAL, "CUs must be enabled in adjacent pairs (WGPs)")

    def ioctl_create_event(self, a) -> None:
        is_signal = a.event_type in (K.EventType.SIGNAL, K.EventType.DEBUG_EVENT)
        if a.event_page_offset:  # whatever the event's type (kfd_ioctl_create_event)
            _check(self._event_page is None, errno.EINVAL, "the event page is already set")
            page = self.bo(a.event_page_offset)
            _check(page.size >= K.KFD_SIGNAL_EVENT_LIMIT * 8, errno.EINVAL, "event page is too small")
            self._event_page = page.handle
            self.events.use_page(page.host, page.size)
        ev = self.events.create(a.event_type, bool(a.auto_reset), is_signal)
        _check(ev is not None, errno.ENOSPC, f"all {self.events.mapped_slots - 1} signal event slots are taken")
        a.event_id = ev.id
        a.event_trigger_data = ev.id
        a.event_page_offset = 0
        if is_signal:  # the offset to mmap the page at, given page or not (kfd_event_create)
            a.event_slot_index = ev.id
            a.event_page_offset = K.mmap_offset(K.MmapType.EVENTS)

    def ioctl_destroy_event(self, a) -> None:
        _check(self.events.destroy(a.event_id), errno.EINVAL, f"no event {a.event_id}")

    def ioctl_set_event(self, a) -> None:
        _check(self.events.set(a.event_id), errno.EINVAL, f"no event {a.event_id}")

    def ioctl_reset_event(self, a) -> None:
        _check(self.events.reset(a.event_id), errno.EINVAL, f"no event {a.event_id}")

    def ioctl_wait_events(self, a) -> None:
        _check(a.events_ptr != 0 and 0 < a.num_events <= 4096, errno.EINVAL, "bad events array")
        data = (K.kfd_event_data * a.num_events).from_address(a.events_ptr)
        try:
            fired = self.events.wait([d.event_id for d in data], bool(a.wait_for_all), a.timeout)
        except KeyError as exc:
            raise KfdError(errno.EINVAL, f"no event {exc}") from None
        except EventDestroyed as exc:
            a.wait_result = K.WaitResult.FAIL
            raise KfdError(errno.EIO, str(exc)) from None
        if fired is None:
            a.wait_result = K.WaitResult.TIMEOUT
            return
        by_id = {ev.id: ev for ev in fired}
        for d in data:
            ev = by_id.get(d.event_id)
            if ev is None or ev.fault is None:
                continue
            if ev.type == K.EventType.MEMORY:
                m = d.memory_exception_data
                m.gpu_id, m.va = ev.fault
                m.failure.NotPresent = 1
            elif ev.type == K.EventType.HW_EXCEPTION:
                d.hw_exception_data.gpu_id = ev.fault[0]
        a.wait_result = K.WaitResult.COMPLETE


class EmulatedSyscalls(QuietAnnotations):
    """The emulated GPU's side of the syscall boundary."""

    name = "emulated"

    def __init__(self, machine: EmulatedMachine):
        self.machine = machine
        self._kfd_fds: set[int] = set()
        self._render = {g.node.properties.get("drm_render_minor", 128 + i): g
                        for i, g in enumerate(machine.gpus.values())}

    def open(self, path: str, flags: int = os.O_RDWR | os.O_CLOEXEC) -> int:
        prefix = "/dev/dri/renderD"
        minor = path[len(prefix):] if path.startswith(prefix) else ""
        gpu = self._render.get(int(minor)) if minor.isdigit() else None
        if path != KFD_DEVICE and gpu is None:
            raise FileNotFoundError(errno.ENOENT, f"{path}: no such device on the emulated machine", path)
        fd = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)  # a real, unique descriptor number
        with self.machine.lock:
            if gpu is None:
                self._kfd_fds.add(fd)
            else:
                self.machine.drm_fds[fd] = gpu
                self.machine.drm_files[fd] = next(self.machine.files)
        return fd

    def close(self, fd: int) -> None:
        m = self.machine
        with m.lock:
            self._kfd_fds.discard(fd)
            m.drm_fds.pop(fd, None)
            m.drm_files.pop(fd, None)
            if not self._kfd_fds and not m.drm_fds:
                m.shutdown()
        os.close(fd)

    def ioctl(self, fd: int, request: int, arg) -> int:
        addr = None if arg is None else ctypes.addressof(arg)
        m = self.machine
        try:
            if fd in self._kfd_fds:
                return m.ioctl(request, addr, fd)
            with m.lock:
                gpu = m.drm_fds.get(fd)
                if gpu is None:
                    raise OSError(errno.ENOTTY, f"ioctl {request:#x} on fd {fd}: not /dev/kfd nor a render node")
                return m.drm_ioctl(gpu, request, addr)
        except KfdError as exc:
            raise OSError(exc.errno, f"{exc} [{os.strerror(exc.errno)}]") from None

    def mmap(self, addr: int, length: int, prot: int, flags: int, fd: int, offset: int) -> int:
        if fd == -1:
            return libc_mmap(addr, length, prot, flags, fd, offset)
        with self.machine.lock:  # the buffer object cannot be freed, nor the tables change, meanwhile
            return self._device_mmap(addr, length, prot, flags, fd, offset)

    def _device_mmap(self, addr: int, length: int, prot: int, flags: int, fd: int, offset: int) -> int:
        m = self.machine
        if fd in m.drm_fds:
            bo = m.by_mmap_offset.get(offset)
            if bo is None or bo.memfd < 0 or length > bo.size:
                raise OSError(errno.EINVAL, f"mmap offset {offset:#x}: no buffer of {length:#x} bytes there")
            return libc_mmap(addr, length, prot, flags | MAP_SHARED, bo.memfd, 0)
        if fd not in self._kfd_fds:
            raise OSError(errno.EBADF, f"mmap on fd {fd}")
        kind, gpu_id, _ = K.mmap_offset_parts(offset)
        if kind == K.MmapType.DOORBELL:
            gpu = m.gpus.get(gpu_id)
            if gpu is None or length != DOORBELL_SLICE:
                raise OSError(errno.EINVAL, f"doorbell mmap of {length:#x} bytes for GPU {gpu_id:#x}")
            base = self._anon(addr, length, prot, flags)
            gpu.doorbell_maps.append(base)
            return base
        if kind == K.MmapType.EVENTS:  # kfd_event_mmap: the page must exist; its mapped size bounds the slots
            if length > K.KFD_EVENT_PAGE_SIZE or not m.events.has_page:
                raise OSError(errno.EINVAL, f"event page mmap of {length:#x} bytes"
                              + ("" if m.events.has_page else ": no signal event made the page yet"))
            m.events.mapped_slots = length // 8
        if kind in (K.MmapType.EVENTS, K.MmapType.MMIO):
            return self._anon(addr, length, prot, flags)
        raise OSError(errno.EINVAL, f"mmap offset {offset:#x} on /dev/kfd")

    @staticmethod
    def _anon(addr: int, length: int, prot: int, flags: int) -> int:
        """Host memory standing in for a page of device registers (doorbells, event page, MMIO)."""
        return libc_mmap(addr, length, prot, (flags & MAP_FIXED) | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)

    def munmap(self, addr: int, length: int) -> None:
        with self.machine.lock:
            for gpu in self.machine.gpus.values():
                if addr in gpu.doorbell_maps:
                    gpu.doorbell_maps.remove(addr)
            for bo in self.machine.userptr_bos.values():
                if bo.host < addr + length and addr < bo.host + bo.size:
                    bo.revoke()  # a userptr buffer's pages
            libc_munmap(addr, length)

    def doorbell_store(self, addr: int, value: int) -> None:
        ctypes.c_uint64.from_address(addr).value = value
        # The fast path reads the doorbell tables without the lock: racing a change it can only miss a queue
        # (never find a wrong one), and a miss is looked up again under the lock.
        q = self._doorbell_queue(addr)
        if q is None:
            with self.machine.lock:
                q = self._doorbell_queue(addr)
        if q is None:
            return
        if q.engine is None:
            log.error("queue %d: the emulated GPU does not execute queue type %d yet", q.queue_id, q.type)
            self.machine.report_queue_error(q.gpu.gpu_id)
        else:
            q.engine.ring(value)

    def _doorbell_queue(self, addr: int) -> EmulatedQueue | None:
        """The queue whose doorbell is at CPU address `addr`, if any."""
        for gpu in self.machine.gpus.values():
            for base in gpu.doorbell_maps:
                if 0 <= addr - base < DOORBELL_SLICE:
                    return gpu.doorbells.get(addr - base)
        return None

    def read_sysfs(self, path: str) -> str:
        return self.machine.read_sysfs(path)

    def list_sysfs(self, path: str) -> list[str]:
        return self.machine.sysfs.list_sysfs(path)


def _user_pages_writable(start: int, size: int) -> bool:
    """Whether this process maps all of [start, start + size) readable and writable (/proc/self/maps): what
    amdgpu_ttm_tt_get_user_pages needs of a userptr's pages, EFAULT otherwise."""
    end = start
    with open("/proc/self/maps") as maps:
        for line in maps:
            span, perms = line.split(None, 2)[:2]
            lo, hi = (int(x, 16) for x in span.split("-"))
            if lo <= end < hi:
                if not perms.startswith("rw"):
                    return False
                end = hi
                if end >= start + size:
                    return True
    return False
