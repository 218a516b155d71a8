"""The KFD ioctl ABI (/dev/kfd) as ctypes structures, constants and the ONE ioctl table.

Source read: the Linux uapi header ``include/uapi/linux/kfd_ioctl.h``, interface **1.18**, in
``ROCm/amdgpu`` @ 00a363e32dfd4d1dc3d969ee8481518e8c51caae (a ROCm DKMS kernel tree), cross-read against
``FireBurn/linux`` @ 243dcc32d5418137f142e155bd5187ce9cc01d2b (same version; it adds the SMI process
start/end events) and the 1.17 libhsakmt copy ``tinygrad/tinygrad:extra/hip_gpu_driver/kfd_ioctl.h``
@ a9069c177a9da9cca18593edf55acd2e6073cca6. Interface **1.19** adds ``AMDKFD_IOC_CREATE_PROCESS =
AMDKFD_IO(0x27)`` (no argument; AMDKFD_COMMAND_END 0x28): the upstream patch "amdkfd: introduce new ioctl
AMDKFD_IOC_CREATE_PROCESS" (amd-gfx, V7 2025-11-06) and ``kfd_ioctl_create_process`` in FireBurn/linux @
008529d6576ee9a61b9cf28b87407b98bbd2393a drivers/gpu/drm/amd/amdkfd/kfd_chardev.c. (ROCm's libhsakmt copy
numbers its minors differently: its 1.19 is create_queue_args ``pad`` -> ``metadata_ring_size``, and it
declares CREATE_PROCESS as ``AMDKFD_IOWR(0x27, struct kfd_ioctl_create_process_args)``.) Only the upstream
ioctls 0x01..0x27 are modelled; the ROCm-only range 0x80.. (IPC handles, SPM, PC sampling, profiler, ...) is
left out on purpose.

Layouts: every structure is the NEWEST layout. Where an older interface had a shorter struct, the older
layout is an exact prefix of ours; those changes are listed in :data:`ABI_CHANGES`. The structures are
written by hand from the header (no generated code) and checked against the header with gcc + DWARF by
``tests/test_kfd_abi.py``.

The table :data:`IOCTLS` is the single source of ioctl names, numbers, directions and argument structs;
:data:`BY_NR`, :data:`BY_NAME`, :data:`BY_REQUEST` and :func:`lookup` derive from it.
"""

from __future__ import annotations

import ctypes
import enum
from dataclasses import dataclass, field

KFD_IOCTL_MAJOR_VERSION = 1
KFD_IOCTL_MINOR_VERSION = 19

u32 = ctypes.c_uint32
s32 = ctypes.c_int32
u64 = ctypes.c_uint64

# ---------------------------------------------------------------------------------------------------------
# Linux _IOC encoding (include/uapi/asm-generic/ioctl.h): nr bits 7:0, type 15:8, size 29:16, dir 31:30.

_IOC_NRBITS, _IOC_TYPEBITS, _IOC_SIZEBITS, _IOC_DIRBITS = 8, 8, 14, 2
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS

AMDKFD_IOCTL_BASE = ord("K")


class IocDir(enum.IntEnum):
    """Linux ``_IOC_*`` direction, seen from user space: WRITE = user -> kernel (``_IOW``)."""

    NONE = 0
    WRITE = 1
    READ = 2
    READ_WRITE = 3


def ioc(direction: int, nr: int, size: int, type_: int = AMDKFD_IOCTL_BASE) -> int:
    """Encode an ioctl request number like the kernel's ``_IOC(dir, type, nr, size)``."""
    if not 0 <= size < 1 << _IOC_SIZEBITS:
        raise ValueError(f"ioctl argument size {size} does not fit in {_IOC_SIZEBITS} bits")
    if not 0 <= nr < 1 << _IOC_NRBITS:
        raise ValueError(f"ioctl nr {nr} does not fit in {_IOC_NRBITS} bits")
    return (int(direction) << _IOC_DIRSHIFT) | (size << _IOC_SIZESHIFT) | (type_ << _IOC_TYPESHIFT) | nr


def ioc_dir(request: int) -> IocDir:
    """Direction bits of a request."""
    return IocDir((request >> _IOC_DIRSHIFT) & ((1 << _IOC_DIRBITS) - 1))


def ioc_type(request: int) -> int:
    """Type ("magic") byte of a request; ``ord('K')`` for KFD."""
    return (request >> _IOC_TYPESHIFT) & ((1 << _IOC_TYPEBITS) - 1)


def ioc_nr(request: int) -> int:
    """Command number of a request."""
    return (request >> _IOC_NRSHIFT) & ((1 << _IOC_NRBITS) - 1)


def ioc_size(request: int) -> int:
    """Argument size encoded in a request."""
    return (request >> _IOC_SIZESHIFT) & ((1 << _IOC_SIZEBITS) - 1)


# ---------------------------------------------------------------------------------------------------------
# Queues


class QueueType(enum.IntEnum):
    """``KFD_IOC_QUEUE_TYPE_*`` for kfd_ioctl_create_queue_args.queue_type."""

    COMPUTE = 0x0
    SDMA = 0x1
    COMPUTE_AQL = 0x2
    SDMA_XGMI = 0x3
    SDMA_BY_ENG_ID = 0x4  # 1.17: engine chosen by create_queue_args.sdma_engine_id


SDMA_QUEUE_TYPES = frozenset({QueueType.SDMA, QueueType.SDMA_XGMI, QueueType.SDMA_BY_ENG_ID})
# What a doorbell value says, per queue type: (bytes per unit, units past the value that are written). SDMA
# engines take the byte write pointer, the CP's PM4 rings the dword one; an AQL queue's doorbell gets the index
# of the last packet written, 64 bytes each (put_value - 1: amd-facts §6, ROCR AqlQueue, gem5's packet
# processor). Other types: bytes.
DOORBELL_UNITS: dict[int, tuple[int, int]] = {QueueType.COMPUTE: (4, 0), QueueType.COMPUTE_AQL: (64, 1)}


def doorbell_end(queue_type: int, value: int) -> int:
    """The byte position in a queue's stream up to which a doorbell of `value` says packets are written."""
    unit, past = DOORBELL_UNITS.get(queue_type, (1, 0))
    return (value + past) * unit


def doorbell_value(queue_type: int, end: int) -> int:
    """The doorbell value that says packets are written up to byte `end` (doorbell_end's inverse)."""
    unit, past = DOORBELL_UNITS.get(queue_type, (1, 0))
    return end // unit - past


def read_end(queue_type: int, rptr: int, end: int, ring_size: int) -> int:
    """The byte position in a queue's stream up to which its engine has read, by the read pointer it reports in
    the doorbell's units (monotonic, or within the ring: a CP's; an AQL queue's counts the packets read), read
    back from `end`, where the packets written end, which the engine is never past (nor a ring behind)."""
    unit = DOORBELL_UNITS.get(queue_type, (1, 0))[0]
    return end - (end // unit - rptr) % max(1, ring_size // unit) * unit

KFD_MAX_QUEUE_PERCENTAGE = 100
KFD_MAX_QUEUE_PRIORITY = 15
KFD_MIN_QUEUE_RING_SIZE = 1024  # smaller ring sizes are clamped up to this, not rejected


class kfd_ioctl_get_version_args(ctypes.Structure):
    _fields_ = [
        ("major_version", u32),  # from KFD
        ("minor_version", u32),  # from KFD
    ]


class kfd_ioctl_create_queue_args(ctypes.Structure):
    _fields_ = [
        ("ring_base_address", u64),  # to KFD
        ("write_pointer_address", u64),  # to KFD
        ("read_pointer_address", u64),  # to KFD
        ("doorbell_offset", u64),  # from KFD: mmap offset of the doorbell
        ("ring_size", u32),  # to KFD
        ("gpu_id", u32),  # to KFD
        ("queue_type", u32),  # to KFD, QueueType
        ("queue_percentage", u32),  # to KFD; bits 15:8 = pm4_target_xcc
        ("queue_priority", u32),  # to KFD
        ("queue_id", u32),  # from KFD
        ("eop_buffer_address", u64),  # to KFD
        ("eop_buffer_size", u64),  # to KFD
        ("ctx_save_restore_address", u64),  # to KFD
        ("ctx_save_restore_size", u32),  # to KFD
        ("ctl_stack_size", u32),  # to KFD
        ("sdma_engine_id", u32),  # to KFD (1.17)
        ("pad", u32),  # (1.17)
    ]


class kfd_ioctl_destroy_queue_args(ctypes.Structure):
    _fields_ = [("queue_id", u32), ("pad", u32)]


class kfd_ioctl_update_queue_args(ctypes.Structure):
    _fields_ = [
        ("ring_base_address", u64),
        ("queue_id", u32),
        ("ring_size", u32),
        ("queue_percentage", u32),
        ("queue_priority", u32),
    ]


class kfd_ioctl_set_cu_mask_args(ctypes.Structure):
    _fields_ = [
        ("queue_id", u32),
        ("num_cu_mask", u32),  # number of mask BITS
        ("cu_mask_ptr", u64),  # user pointer to u32 words
    ]


class kfd_ioctl_get_queue_wave_state_args(ctypes.Structure):
    _fields_ = [
        ("ctl_stack_address", u64),  # to KFD
        ("ctl_stack_used_size", u32),  # from KFD
        ("save_area_used_size", u32),  # from KFD
        ("queue_id", u32),  # to KFD
        ("pad", u32),
    ]


class kfd_ioctl_get_available_memory_args(ctypes.Structure):
    _fields_ = [
        ("available", u64),  # from KFD
        ("gpu_id", u32),  # to KFD
        ("pad", u32),
    ]


class kfd_dbg_device_info_entry(ctypes.Structure):
    """One entry of the DBG_TRAP GET_DEVICE_SNAPSHOT buffer (1.13)."""

    _fields_ = [
        ("exception_status", u64),
        ("lds_base", u64),
        ("lds_limit", u64),
        ("scratch_base", u64),
        ("scratch_limit", u64),
        ("gpuvm_base", u64),
        ("gpuvm_limit", u64),
        ("gpu_id", u32),
        ("location_id", u32),
        ("vendor_id", u32),
        ("device_id", u32),
        ("revision_id", u32),
        ("subsystem_vendor_id", u32),
        ("subsystem_device_id", u32),
        ("fw_version", u32),
        ("gfx_target_version", u32),
        ("simd_count", u32),
        ("max_waves_per_simd", u32),
        ("array_count", u32),
        ("simd_arrays_per_engine", u32),
        ("num_xcc", u32),
        ("capability", u32),
        ("debug_prop", u32),
    ]


# ---------------------------------------------------------------------------------------------------------
# Memory policy, clocks, apertures


class CachePolicy(enum.IntEnum):
    """``KFD_IOC_CACHE_POLICY_*`` for set_memory_policy default_policy / alternate_policy."""

    COHERENT = 0
    NONCOHERENT = 1


class ProcFlag(enum.IntFlag):
    """``KFD_PROC_FLAG_*`` for set_memory_policy_args.misc_process_flag (1.18)."""

    MFMA_HIGH_PRECISION = 1 << 0


class kfd_ioctl_set_memory_policy_args(ctypes.Structure):
    _fields_ = [
        ("alternate_aperture_base", u64),
        ("alternate_aperture_size", u64),
        ("gpu_id", u32),
        ("default_policy", u32),  # CachePolicy
        ("alternate_policy", u32),  # CachePolicy
        ("misc_process_flag", u32),  # ProcFlag; named ``pad`` before 1.18
    ]


class kfd_ioctl_get_clock_counters_args(ctypes.Structure):
    _fields_ = [
        ("gpu_clock_counter", u64),  # from KFD
        ("cpu_clock_counter", u64),  # from KFD
        ("system_clock_counter", u64),  # from KFD
        ("system_clock_freq", u64),  # from KFD
        ("gpu_id", u32),  # to KFD
        ("pad", u32),
    ]


class kfd_process_device_apertures(ctypes.Structure):
    _fields_ = [
        ("lds_base", u64),
        ("lds_limit", u64),
        ("scratch_base", u64),
        ("scratch_limit", u64),
        ("gpuvm_base", u64),
        ("gpuvm_limit", u64),
        ("gpu_id", u32),
        ("pad", u32),
    ]


NUM_OF_SUPPORTED_GPUS = 7  # only for the deprecated GET_PROCESS_APERTURES


class kfd_ioctl_get_process_apertures_args(ctypes.Structure):
    """Deprecated: use GET_PROCESS_APERTURES_NEW, which has no GPU limit."""

    _fields_ = [
        ("process_apertures", kfd_process_device_apertures * NUM_OF_SUPPORTED_GPUS),  # from KFD
        ("num_of_nodes", u32),  # from KFD, 1..NUM_OF_SUPPORTED_GPUS
        ("pad", u32),
    ]


class kfd_ioctl_get_process_apertures_new_args(ctypes.Structure):
    _fields_ = [
        ("kfd_process_device_apertures_ptr", u64),  # user array of kfd_process_device_apertures
        ("num_of_nodes", u32),  # to KFD: array capacity; from KFD: entries filled
        ("pad", u32),
    ]


# ---------------------------------------------------------------------------------------------------------
# Deprecated debugger ioctls 0x0D..0x10 (the kernel answers them with an error today)

MAX_ALLOWED_NUM_POINTS = 100
MAX_ALLOWED_AW_BUFF_SIZE = 4096
MAX_ALLOWED_WAC_BUFF_SIZE = 128


class kfd_ioctl_dbg_register_args(ctypes.Structure):
    _fields_ = [("gpu_id", u32), ("pad", u32)]


class kfd_ioctl_dbg_unregister_args(ctypes.Structure):
    _fields_ = [("gpu_id", u32), ("pad", u32)]


class kfd_ioctl_dbg_address_watch_args(ctypes.Structure):
    _fields_ = [
        ("content_ptr", u64),
        ("gpu_id", u32),
        ("buf_size_in_bytes", u32),  # including gpu_id and buf_size
    ]


class kfd_ioctl_dbg_wave_control_args(ctypes.Structure):
    _fields_ = [
        ("content_ptr", u64),
        ("gpu_id", u32),
        ("buf_size_in_bytes", u32),
    ]


KFD_INVALID_FD = 0xFFFFFFFF

# ---------------------------------------------------------------------------------------------------------
# Events


class EventType(enum.IntEnum):
    """``KFD_IOC_EVENT_*`` (matches HSA_EVENTTYPE)."""

    SIGNAL = 0
    NODECHANGE = 1
    DEVICESTATECHANGE = 2
    HW_EXCEPTION = 3
    SYSTEM_EVENT = 4
    DEBUG_EVENT = 5
    PROFILE_EVENT = 6
    QUEUE_EVENT = 7
    MEMORY = 8


class WaitResult(enum.IntEnum):
    """``KFD_IOC_WAIT_RESULT_*`` in wait_events_args.wait_result."""

    COMPLETE = 0
    TIMEOUT = 1
    FAIL = 2


KFD_SIGNAL_EVENT_LIMIT = 4096
# Event page (kernel kfd_events.c/.h, not uapi): one u64 slot per signal event, indexed by
# create_event_args.event_slot_index; a slot reads UNSIGNALED_EVENT_SLOT until signalled.
KFD_EVENT_SLOT_SIZE = 8
KFD_EVENT_PAGE_SIZE = KFD_SIGNAL_EVENT_LIMIT * KFD_EVENT_SLOT_SIZE  # 32 KiB
UNSIGNALED_EVENT_SLOT = 0xFFFF_FFFF_FFFF_FFFF
KFD_FIRST_NONSIGNAL_EVENT_ID = ((2**31 - 1) >> 1) + 1  # non-signal event ids use the upper half
KFD_LAST_NONSIGNAL_EVENT_ID = 2**31 - 1
KFD_EVENT_TIMEOUT_IMMEDIATE = 0  # wait_events_args.timeout, milliseconds
KFD_EVENT_TIMEOUT_INFINITE = 0xFFFFFFFF
# mmap offset type of the event page (kfd_priv.h): event_page_offset from KFD carries it when the kernel
# allocated the page; dGPU user space instead passes the handle of its own buffer TO KFD.
KFD_MMAP_TYPE_SHIFT = 62
KFD_MMAP_TYPE_EVENTS = 0x2 << KFD_MMAP_TYPE_SHIFT


class MmapType(enum.IntEnum):
    """What an mmap offset of /dev/kfd maps (kfd_priv.h KFD_MMAP_TYPE_*, bits 63:62 of the offset)."""

    MMIO = 0x0
    RESERVED_MEM = 0x1
    EVENTS = 0x2
    DOORBELL = 0x3


KFD_MMAP_GPU_ID_SHIFT = 46  # kfd_priv.h: bits 61:46 carry the gpu_id, bits 45:0 the value
KFD_MMAP_GPU_ID_MASK = 0xFFFF
KFD_DOORBELL_PROCESS_SLICE = 0x2000  # roundup(8-byte SOC15 doorbell * 1024 queues, PAGE): kfd_doorbell.c


def mmap_offset(kind: MmapType, gpu_id: int = 0, value: int = 0) -> int:
    """The /dev/kfd mmap offset of `kind` for `gpu_id` (value: the low 46 bits, e.g. a doorbell's offset)."""
    return (kind << KFD_MMAP_TYPE_SHIFT) | (gpu_id << KFD_MMAP_GPU_ID_SHIFT) | value


def mmap_offset_parts(offset: int) -> tuple[MmapType, int, int]:
    """(kind, gpu_id, value) of a /dev/kfd mmap offset."""
    value = offset & ((1 << KFD_MMAP_GPU_ID_SHIFT) - 1)
    return MmapType(offset >> KFD_MMAP_TYPE_SHIFT), (offset >> KFD_MMAP_GPU_ID_SHIFT) & KFD_MMAP_GPU_ID_MASK, value


class HwExceptionResetType(enum.IntEnum):
    """``KFD_HW_EXCEPTION_*`` for kfd_event_data.hw_exception_data.reset_type."""

    WHOLE_GPU_RESET = 0
    PER_ENGINE_RESET = 1


class HwExceptionResetCause(enum.IntEnum):
    """``KFD_HW_EXCEPTION_*`` for kfd_event_data.hw_exception_data.reset_cause."""

    GPU_HANG = 0
    ECC = 1


class MemErr(enum.IntEnum):
    """``KFD_MEM_ERR_*`` for kfd_hsa_memory_exception_data.ErrorType."""

    NO_RAS = 0
    SRAM_ECC = 1
    POISON_CONSUMED = 2
    GPU_HANG = 3


class kfd_ioctl_create_event_args(ctypes.Structure):
    _fields_ = [
        ("event_page_offset", u64),  # from KFD (or to KFD: the event page buffer handle, dGPU)
        ("event_trigger_data", u32),  # from KFD, signal events only
        ("event_type", u32),  # to KFD, EventType
        ("auto_reset", u32),  # to KFD
        ("node_id", u32),  # to KFD, only some event types
        ("event_id", u32),  # from KFD
        ("event_slot_index", u32),  # from KFD
    ]


class kfd_ioctl_destroy_event_args(ctypes.Structure):
    _fields_ = [("event_id", u32), ("pad", u32)]


class kfd_ioctl_set_event_args(ctypes.Structure):
    _fields_ = [("event_id", u32), ("pad", u32)]


class kfd_ioctl_reset_event_args(ctypes.Structure):
    _fields_ = [("event_id", u32), ("pad", u32)]


class kfd_memory_exception_failure(ctypes.Structure):
    """Why a memory access faulted. Each field is a whole u32 used as a boolean (0/1), not a bit."""

    _fields_ = [
        ("NotPresent", u32),  # page not present or supervisor privilege
        ("ReadOnly", u32),  # write to a read-only page
        ("NoExecute", u32),  # execute from an NX page
        ("imprecise", u32),  # exact fault address unknown
    ]


class kfd_hsa_memory_exception_data(ctypes.Structure):
    _fields_ = [
        ("failure", kfd_memory_exception_failure),
        ("va", u64),
        ("gpu_id", u32),
        ("ErrorType", u32),  # MemErr
    ]


class kfd_hsa_hw_exception_data(ctypes.Structure):
    _fields_ = [
        ("reset_type", u32),  # HwExceptionResetType
        ("reset_cause", u32),  # HwExceptionResetCause
        ("memory_lost", u32),
        ("gpu_id", u32),
    ]


class kfd_hsa_signal_event_data(ctypes.Structure):
    """1.14: the event age, to and from KFD (lets WAIT_EVENTS skip already-seen signals)."""

    _fields_ = [("last_event_age", u64)]


class kfd_event_data_union(ctypes.Union):
    """The anonymous union at the start of ``struct kfd_event_data`` (name is ours)."""

    _fields_ = [
        ("memory_exception_data", kfd_hsa_memory_exception_data),  # from KFD
        ("hw_exception_data", kfd_hsa_hw_exception_data),  # from KFD
        ("signal_event_data", kfd_hsa_signal_event_data),  # to and from KFD (1.14)
    ]


class kfd_event_data(ctypes.Structure):
    """One element of the wait_events_args.events_ptr array."""

    _anonymous_ = ("u",)
    _fields_ = [
        ("u", kfd_event_data_union),
        ("kfd_event_data_ext", u64),  # pointer to an extension structure (future use)
        ("event_id", u32),  # to KFD
        ("pad", u32),
    ]


class kfd_ioctl_wait_events_args(ctypes.Structure):
    _fields_ = [
        ("events_ptr", u64),  # user array of kfd_event_data
        ("num_events", u32),
        ("wait_for_all", u32),
        ("timeout", u32),  # milliseconds; KFD_EVENT_TIMEOUT_*
        ("wait_result", u32),  # from KFD, WaitResult
    ]


class kfd_ioctl_set_scratch_backing_va_args(ctypes.Structure):
    _fields_ = [("va_addr", u64), ("gpu_id", u32), ("pad", u32)]


class kfd_ioctl_get_tile_config_args(ctypes.Structure):
    _fields_ = [
        ("tile_config_ptr", u64),  # to KFD: user u32 array
        ("macro_tile_config_ptr", u64),  # to KFD: user u32 array
        ("num_tile_configs", u32),  # to KFD: capacity; from KFD: filled
        ("num_macro_tile_configs", u32),  # to KFD: capacity; from KFD: filled
        ("gpu_id", u32),  # to KFD
        ("gb_addr_config", u32),  # from KFD
        ("num_banks", u32),  # from KFD
        ("num_ranks", u32),  # from KFD
    ]


class kfd_ioctl_set_trap_handler_args(ctypes.Structure):
    _fields_ = [("tba_addr", u64), ("tma_addr", u64), ("gpu_id", u32), ("pad", u32)]


class kfd_ioctl_acquire_vm_args(ctypes.Structure):
    _fields_ = [
        ("drm_fd", u32),  # render node fd
        ("gpu_id", u32),
    ]


# ---------------------------------------------------------------------------------------------------------
# Memory


class AllocMemFlags(enum.IntFlag):
    """``KFD_IOC_ALLOC_MEM_FLAGS_*``: one memory type (low bits) plus attribute bits (high bits)."""

    # memory types
    VRAM = 1 << 0
    GTT = 1 << 1
    USERPTR = 1 << 2  # mmap_offset carries the CPU address TO KFD
    DOORBELL = 1 << 3
    MMIO_REMAP = 1 << 4  # the HDP flush page, see MmioRemap
    # attributes / access
    WRITABLE = 1 << 31
    EXECUTABLE = 1 << 30
    PUBLIC = 1 << 29  # CPU-visible VRAM
    NO_SUBSTITUTE = 1 << 28
    AQL_QUEUE_MEM = 1 << 27
    COHERENT = 1 << 26
    UNCACHED = 1 << 25
    EXT_COHERENT = 1 << 24
    CONTIGUOUS = 1 << 23  # 1.16


class kfd_ioctl_alloc_memory_of_gpu_args(ctypes.Structure):
    _fields_ = [
        ("va_addr", u64),  # to KFD: GPU VA, the same on every GPU
        ("size", u64),  # to KFD, bytes
        ("handle", u64),  # from KFD
        ("mmap_offset", u64),  # to KFD (userptr CPU address), from KFD (render-node mmap offset)
        ("gpu_id", u32),  # to KFD
        ("flags", u32),  # AllocMemFlags
    ]


class kfd_ioctl_free_memory_of_gpu_args(ctypes.Structure):
    _fields_ = [("handle", u64)]


class kfd_ioctl_map_memory_to_gpu_args(ctypes.Structure):
    _fields_ = [
        ("handle", u64),
        ("device_ids_array_ptr", u64),  # user array of u32 gpu_id
        ("n_devices", u32),
        ("n_success", u32),  # to/from KFD: devices done so far (start with 0)
    ]


class kfd_ioctl_unmap_memory_from_gpu_args(ctypes.Structure):
    _fields_ = [
        ("handle", u64),
        ("device_ids_array_ptr", u64),
        ("n_devices", u32),
        ("n_success", u32),
    ]


class kfd_ioctl_alloc_queue_gws_args(ctypes.Structure):
    _fields_ = [
        ("queue_id", u32),  # to KFD
        ("num_gws", u32),  # to KFD
        ("first_gws", u32),  # from KFD
        ("pad", u32),
    ]


class kfd_ioctl_get_dmabuf_info_args(ctypes.Structure):
    _fields_ = [
        ("size", u64),  # from KFD
        ("metadata_ptr", u64),  # to KFD
        ("metadata_size", u32),  # to KFD: capacity; from KFD: actual size
        ("gpu_id", u32),  # from KFD
        ("flags", u32),  # from KFD, AllocMemFlags
        ("dmabuf_fd", u32),  # to KFD
    ]


class kfd_ioctl_import_dmabuf_args(ctypes.Structure):
    _fields_ = [
        ("va_addr", u64),  # to KFD
        ("handle", u64),  # from KFD
        ("gpu_id", u32),  # to KFD
        ("dmabuf_fd", u32),  # to KFD
    ]


class kfd_ioctl_export_dmabuf_args(ctypes.Structure):
    _fields_ = [
        ("handle", u64),  # to KFD
        ("flags", u32),  # to KFD
        ("dmabuf_fd", u32),  # from KFD
    ]


class MmioRemap(enum.IntEnum):
    """``KFD_MMIO_REMAP_*``: byte offsets of registers inside the MMIO_REMAP page."""

    HDP_MEM_FLUSH_CNTL = 0
    HDP_REG_FLUSH_CNTL = 4


# ---------------------------------------------------------------------------------------------------------
# SMI events


class SmiEvent(enum.IntEnum):
    """``KFD_SMI_EVENT_*``; the mask written to the SMI fd uses bit (event - 1)."""

    NONE = 0
    VMFAULT = 1
    THERMAL_THROTTLE = 2
    GPU_PRE_RESET = 3
    GPU_POST_RESET = 4
    MIGRATE_START = 5
    MIGRATE_END = 6
    PAGE_FAULT_START = 7
    PAGE_FAULT_END = 8
    QUEUE_EVICTION = 9
    QUEUE_RESTORE = 10
    UNMAP_FROM_GPU = 11
    PROCESS_START = 12  # in the FireBurn/linux 1.18 copy; absent from the ROCm copies read
    PROCESS_END = 13
    ALL_PROCESS = 64  # flag bit: events from all processes (needs privilege)


class MigrateTrigger(enum.IntEnum):
    """``KFD_MIGRATE_TRIGGER_*``."""

    PREFETCH = 0
    PAGEFAULT_GPU = 1
    PAGEFAULT_CPU = 2
    TTM_EVICTION = 3


class QueueEvictionTrigger(enum.IntEnum):
    """``KFD_QUEUE_EVICTION_*`` (the header mixes TRIGGER_ and CRIU_ names)."""

    TRIGGER_SVM = 0
    TRIGGER_USERPTR = 1
    TRIGGER_TTM = 2
    TRIGGER_SUSPEND = 3
    CRIU_CHECKPOINT = 4
    CRIU_RESTORE = 5


class SvmUnmapTrigger(enum.IntEnum):
    """``KFD_SVM_UNMAP_TRIGGER_*``."""

    MMU_NOTIFY = 0
    MMU_NOTIFY_MIGRATE = 1
    UNMAP_FROM_CPU = 2


KFD_SMI_EVENT_MSG_SIZE = 96


def smi_event_mask_from_index(event: int) -> int:
    """``KFD_SMI_EVENT_MASK_FROM_INDEX(i)``: the 64-bit mask bit for an SMI event."""
    return 1 << (event - 1)


class kfd_ioctl_smi_events_args(ctypes.Structure):
    _fields_ = [
        ("gpuid", u32),  # to KFD (sic: no underscore)
        ("anon_fd", u32),  # from KFD
    ]


# ---------------------------------------------------------------------------------------------------------
# CRIU


class CriuOp(enum.IntEnum):
    """``KFD_CRIU_OP_*`` for kfd_ioctl_criu_args.op."""

    PROCESS_INFO = 0
    CHECKPOINT = 1
    UNPAUSE = 2
    RESTORE = 3
    RESUME = 4


class kfd_ioctl_criu_args(ctypes.Structure):
    _fields_ = [
        ("devices", u64),  # user array of kfd_criu_device_bucket
        ("bos", u64),  # user array of kfd_criu_bo_bucket
        ("priv_data", u64),
        ("priv_data_size", u64),
        ("num_devices", u32),
        ("num_bos", u32),
        ("num_objects", u32),
        ("pid", u32),
        ("op", u32),  # CriuOp
    ]


class kfd_criu_device_bucket(ctypes.Structure):
    _fields_ = [("user_gpu_id", u32), ("actual_gpu_id", u32), ("drm_fd", u32), ("pad", u32)]


class kfd_criu_bo_bucket(ctypes.Structure):
    _fields_ = [
        ("addr", u64),
        ("size", u64),
        ("offset", u64),
        ("restored_offset", u64),
        ("gpu_id", u32),  # the user_gpu_id
        ("alloc_flags", u32),
        ("dmabuf_fd", u32),
        ("pad", u32),
    ]


# ---------------------------------------------------------------------------------------------------------
# SVM and XNACK


class SvmFlag(enum.IntFlag):
    """``KFD_IOCTL_SVM_FLAG_*`` for SVM_ATTR_SET_FLAGS / CLR_FLAGS."""

    HOST_ACCESS = 0x01
    COHERENT = 0x02
    HIVE_LOCAL = 0x04
    GPU_RO = 0x08
    GPU_EXEC = 0x10
    GPU_READ_MOSTLY = 0x20
    GPU_ALWAYS_MAPPED = 0x40
    EXT_COHERENT = 0x80


class SvmOp(enum.IntEnum):
    """``KFD_IOCTL_SVM_OP_*``."""

    SET_ATTR = 0
    GET_ATTR = 1


class SvmLocation(enum.IntEnum):
    """``KFD_IOCTL_SVM_LOCATION_*``; any other value is a gpu_id."""

    SYSMEM = 0
    UNDEFINED = 0xFFFFFFFF


class SvmAttrType(enum.IntEnum):
    """``KFD_IOCTL_SVM_ATTR_*`` for kfd_ioctl_svm_attribute.type."""

    PREFERRED_LOC = 0
    PREFETCH_LOC = 1
    ACCESS = 2
    ACCESS_IN_PLACE = 3
    NO_ACCESS = 4
    SET_FLAGS = 5
    CLR_FLAGS = 6
    GRANULARITY = 7  # log2 of pages


class kfd_ioctl_svm_attribute(ctypes.Structure):
    _fields_ = [("type", u32), ("value", u32)]


class kfd_ioctl_svm_args(ctypes.Structure):
    """Fixed part only: ``attrs[]`` is a flexible array of ``nattr`` kfd_ioctl_svm_attribute after it.

    It is modelled as a zero-length array, so sizeof() == 24 like the C struct; the request code carries
    that size and the kernel copies the ``nattr`` attributes separately.
    """

    _fields_ = [
        ("start_addr", u64),
        ("size", u64),
        ("op", u32),  # SvmOp
        ("nattr", u32),
        ("attrs", kfd_ioctl_svm_attribute * 0),
    ]


class XnackMode(enum.IntEnum):
    """Values for set_xnack_mode_args.xnack_enabled (our names: the header only describes them)."""

    QUERY = -1  # any negative value: leave unchanged, return the current mode
    DISABLED = 0
    ENABLED = 1  # any positive value


class kfd_ioctl_set_xnack_mode_args(ctypes.Structure):
    _fields_ = [("xnack_enabled", s32)]


# ---------------------------------------------------------------------------------------------------------
# Debugger API (1.13): RUNTIME_ENABLE and DBG_TRAP


class DbgTrapOverrideMode(enum.IntEnum):
    """``KFD_DBG_TRAP_OVERRIDE_*``."""

    OR = 0
    REPLACE = 1


class DbgTrapMask(enum.IntFlag):
    """``KFD_DBG_TRAP_MASK_*``: wave launch trap overrides."""

    FP_INVALID = 1
    FP_INPUT_DENORMAL = 2
    FP_DIVIDE_BY_ZERO = 4
    FP_OVERFLOW = 8
    FP_UNDERFLOW = 16
    FP_INEXACT = 32
    INT_DIVIDE_BY_ZERO = 64
    DBG_ADDRESS_WATCH = 128
    DBG_MEMORY_VIOLATION = 256
    TRAP_ON_WAVE_START = 1 << 30
    TRAP_ON_WAVE_END = 1 << 31


class DbgTrapWaveLaunchMode(enum.IntEnum):
    """``KFD_DBG_TRAP_WAVE_LAUNCH_MODE_*`` (2 is unused)."""

    NORMAL = 0
    HALT = 1
    DEBUG = 3


class DbgTrapAddressWatchMode(enum.IntEnum):
    """``KFD_DBG_TRAP_ADDRESS_WATCH_MODE_*``."""

    READ = 0
    NONREAD = 1
    ATOMIC = 2
    ALL = 3


class DbgTrapFlags(enum.IntFlag):
    """``KFD_DBG_TRAP_FLAG_*``."""

    SINGLE_MEM_OP = 1
    SINGLE_ALU_OP = 2


class ExceptionCode(enum.IntEnum):
    """``EC_*`` (enum kfd_dbg_trap_exception_code); masks use bit (code - 1), see :func:`ec_mask`."""

    NONE = 0
    # per queue
    QUEUE_WAVE_ABORT = 1
    QUEUE_WAVE_TRAP = 2
    QUEUE_WAVE_MATH_ERROR = 3
    QUEUE_WAVE_ILLEGAL_INSTRUCTION = 4
    QUEUE_WAVE_MEMORY_VIOLATION = 5
    QUEUE_WAVE_APERTURE_VIOLATION = 6
    QUEUE_PACKET_DISPATCH_DIM_INVALID = 16
    QUEUE_PACKET_DISPATCH_GROUP_SEGMENT_SIZE_INVALID = 17
    QUEUE_PACKET_DISPATCH_CODE_INVALID = 18
    QUEUE_PACKET_RESERVED = 19
    QUEUE_PACKET_UNSUPPORTED = 20
    QUEUE_PACKET_DISPATCH_WORK_GROUP_SIZE_INVALID = 21
    QUEUE_PACKET_DISPATCH_REGISTER_INVALID = 22
    QUEUE_PACKET_VENDOR_UNSUPPORTED = 23
    QUEUE_PREEMPTION_ERROR = 30
    QUEUE_NEW = 31
    # per device
    DEVICE_QUEUE_DELETE = 32
    DEVICE_MEMORY_VIOLATION = 33
    DEVICE_RAS_ERROR = 34
    DEVICE_FATAL_HALT = 35
    DEVICE_NEW = 36
    # per process
    PROCESS_RUNTIME = 48
    PROCESS_DEVICE_REMOVE = 49
    MAX = 50


def ec_mask(code: int) -> int:
    """``KFD_EC_MASK(ecode)``: the 64-bit exception mask bit of an exception code."""
    return 1 << (code - 1)


def _ec_masks(*codes: ExceptionCode) -> int:
    mask = 0
    for code in codes:
        mask |= ec_mask(code)
    return mask


_EC = ExceptionCode
KFD_EC_MASK_PACKET = _ec_masks(*(c for c in _EC if c.name.startswith("QUEUE_PACKET_")))
KFD_EC_MASK_QUEUE = _ec_masks(*(c for c in _EC if c.name.startswith("QUEUE_")))
KFD_EC_MASK_DEVICE = _ec_masks(*(c for c in _EC if c.name.startswith("DEVICE_")))
KFD_EC_MASK_PROCESS = _ec_masks(*(c for c in _EC if c.name.startswith("PROCESS_")))


class DbgRuntimeState(enum.IntEnum):
    """``DEBUG_RUNTIME_STATE_*`` for kfd_runtime_info.runtime_state."""

    DISABLED = 0
    ENABLED = 1
    ENABLED_BUSY = 2
    ENABLED_ERROR = 3


class kfd_runtime_info(ctypes.Structure):
    _fields_ = [("r_debug", u64), ("runtime_state", u32), ("ttmp_setup", u32)]


class RuntimeEnableMode(enum.IntFlag):
    """``KFD_RUNTIME_ENABLE_MODE_*`` for runtime_enable_args.mode_mask."""

    ENABLE_MASK = 1  # enable runtime for debugging; clear = disable
    TTMP_SAVE_MASK = 2  # enable trap temporary setup


class kfd_ioctl_runtime_enable_args(ctypes.Structure):
    _fields_ = [
        ("r_debug", u64),  # user pointer shared by ROCr and the debugger
        ("mode_mask", u32),  # RuntimeEnableMode
        ("capabilities_mask", u32),  # what KFD supports, from KFD
    ]


class kfd_queue_snapshot_entry(ctypes.Structure):
    _fields_ = [
        ("exception_status", u64),
        ("ring_base_address", u64),
        ("write_pointer_address", u64),
        ("read_pointer_address", u64),
        ("ctx_save_restore_address", u64),
        ("queue_id", u32),
        ("gpu_id", u32),
        ("ring_size", u32),
        ("queue_type", u32),
        ("ctx_save_restore_area_size", u32),
        ("reserved", u32),
    ]


KFD_DBG_QUEUE_ERROR_BIT = 30
KFD_DBG_QUEUE_INVALID_BIT = 31
KFD_DBG_QUEUE_ERROR_MASK = 1 << KFD_DBG_QUEUE_ERROR_BIT
KFD_DBG_QUEUE_INVALID_MASK = 1 << KFD_DBG_QUEUE_INVALID_BIT


class kfd_context_save_area_header_wave_state(ctypes.Structure):
    """The unnamed ``struct {...} wave_state`` inside kfd_context_save_area_header (name is ours)."""

    _fields_ = [
        ("control_stack_offset", u32),
        ("control_stack_size", u32),
        ("wave_state_offset", u32),
        ("wave_state_size", u32),
    ]


class kfd_context_save_area_header(ctypes.Structure):
    """Header at the start of each queue's CWSR (context save) area."""

    _fields_ = [
        ("wave_state", kfd_context_save_area_header_wave_state),
        ("debug_offset", u32),
        ("debug_size", u32),
        ("err_payload_addr", u64),
        ("err_event_id", u32),
        ("reserved1", u32),
    ]


class DbgTrapOp(enum.IntEnum):
    """``KFD_IOC_DBG_TRAP_*`` (enum kfd_dbg_trap_operations) for kfd_ioctl_dbg_trap_args.op."""

    ENABLE = 0
    DISABLE = 1
    SEND_RUNTIME_EVENT = 2
    SET_EXCEPTIONS_ENABLED = 3
    SET_WAVE_LAUNCH_OVERRIDE = 4
    SET_WAVE_LAUNCH_MODE = 5
    SUSPEND_QUEUES = 6
    RESUME_QUEUES = 7
    SET_NODE_ADDRESS_WATCH = 8
    CLEAR_NODE_ADDRESS_WATCH = 9
    SET_FLAGS = 10
    QUERY_DEBUG_EVENT = 11
    QUERY_EXCEPTION_INFO = 12
    GET_QUEUE_SNAPSHOT = 13
    GET_DEVICE_SNAPSHOT = 14


class kfd_ioctl_dbg_trap_enable_args(ctypes.Structure):
    _fields_ = [("exception_mask", u64), ("rinfo_ptr", u64), ("rinfo_size", u32), ("dbg_fd", u32)]


class kfd_ioctl_dbg_trap_send_runtime_event_args(ctypes.Structure):
    _fields_ = [("exception_mask", u64), ("gpu_id", u32), ("queue_id", u32)]


class kfd_ioctl_dbg_trap_set_exceptions_enabled_args(ctypes.Structure):
    _fields_ = [("exception_mask", u64)]


class kfd_ioctl_dbg_trap_set_wave_launch_override_args(ctypes.Structure):
    _fields_ = [
        ("override_mode", u32),  # DbgTrapOverrideMode
        ("enable_mask", u32),  # DbgTrapMask
        ("support_request_mask", u32),  # DbgTrapMask
        ("pad", u32),
    ]


class kfd_ioctl_dbg_trap_set_wave_launch_mode_args(ctypes.Structure):
    _fields_ = [("launch_mode", u32), ("pad", u32)]


class kfd_ioctl_dbg_trap_suspend_queues_args(ctypes.Structure):
    _fields_ = [
        ("exception_mask", u64),
        ("queue_array_ptr", u64),  # user array of u32 queue ids
        ("num_queues", u32),
        ("grace_period", u32),  # in units of 1K GPU clocks
    ]


class kfd_ioctl_dbg_trap_resume_queues_args(ctypes.Structure):
    _fields_ = [("queue_array_ptr", u64), ("num_queues", u32), ("pad", u32)]


class kfd_ioctl_dbg_trap_set_node_address_watch_args(ctypes.Structure):
    _fields_ = [
        ("address", u64),
        ("mode", u32),  # DbgTrapAddressWatchMode
        ("mask", u32),
        ("gpu_id", u32),
        ("id", u32),  # from KFD
    ]


class kfd_ioctl_dbg_trap_clear_node_address_watch_args(ctypes.Structure):
    _fields_ = [("gpu_id", u32), ("id", u32)]


class kfd_ioctl_dbg_trap_set_flags_args(ctypes.Structure):
    _fields_ = [("flags", u32), ("pad", u32)]  # DbgTrapFlags


class kfd_ioctl_dbg_trap_query_debug_event_args(ctypes.Structure):
    _fields_ = [("exception_mask", u64), ("gpu_id", u32), ("queue_id", u32)]


class kfd_ioctl_dbg_trap_query_exception_info_args(ctypes.Structure):
    _fields_ = [
        ("info_ptr", u64),
        ("info_size", u32),
        ("source_id", u32),
        ("exception_code", u32),
        ("clear_exception", u32),
    ]


class kfd_ioctl_dbg_trap_queue_snapshot_args(ctypes.Structure):
    _fields_ = [
        ("exception_mask", u64),
        ("snapshot_buf_ptr", u64),  # user array of kfd_queue_snapshot_entry
        ("num_queues", u32),
        ("entry_size", u32),
    ]


class kfd_ioctl_dbg_trap_device_snapshot_args(ctypes.Structure):
    _fields_ = [
        ("exception_mask", u64),
        ("snapshot_buf_ptr", u64),  # user array of kfd_dbg_device_info_entry
        ("num_devices", u32),
        ("entry_size", u32),
    ]


class kfd_ioctl_dbg_trap_args_union(ctypes.Union):
    """The anonymous per-op union inside ``struct kfd_ioctl_dbg_trap_args`` (name is ours)."""

    _fields_ = [
        ("enable", kfd_ioctl_dbg_trap_enable_args),
        ("send_runtime_event", kfd_ioctl_dbg_trap_send_runtime_event_args),
        ("set_exceptions_enabled", kfd_ioctl_dbg_trap_set_exceptions_enabled_args),
        ("launch_override", kfd_ioctl_dbg_trap_set_wave_launch_override_args),
        ("launch_mode", kfd_ioctl_dbg_trap_set_wave_launch_mode_args),
        ("suspend_queues", kfd_ioctl_dbg_trap_suspend_queues_args),
        ("resume_queues", kfd_ioctl_dbg_trap_resume_queues_args),
        ("set_node_address_watch", kfd_ioctl_dbg_trap_set_node_address_watch_args),
        ("clear_node_address_watch", kfd_ioctl_dbg_trap_clear_node_address_watch_args),
        ("set_flags", kfd_ioctl_dbg_trap_set_flags_args),
        ("query_debug_event", kfd_ioctl_dbg_trap_query_debug_event_args),
        ("query_exception_info", kfd_ioctl_dbg_trap_query_exception_info_args),
        ("queue_snapshot", kfd_ioctl_dbg_trap_queue_snapshot_args),
        ("device_snapshot", kfd_ioctl_dbg_trap_device_snapshot_args),
    ]


class kfd_ioctl_dbg_trap_args(ctypes.Structure):
    """``op`` (DbgTrapOp) selects which union member is meaningful."""

    _anonymous_ = ("u",)
    _fields_ = [("pid", u32), ("op", u32), ("u", kfd_ioctl_dbg_trap_args_union)]


# ---------------------------------------------------------------------------------------------------------
# What struct fields mean: the enum or flag set each field's value is named by (trace tools show them by name)

MEANINGS: dict[type[ctypes.Structure], dict[str, type[enum.IntEnum] | type[enum.IntFlag]]] = {
    kfd_ioctl_create_queue_args: {"queue_type": QueueType},
    kfd_ioctl_set_memory_policy_args: {"default_policy": CachePolicy, "alternate_policy": CachePolicy,
                                       "misc_process_flag": ProcFlag},
    kfd_ioctl_create_event_args: {"event_type": EventType},
    kfd_ioctl_wait_events_args: {"wait_result": WaitResult},
    kfd_ioctl_alloc_memory_of_gpu_args: {"flags": AllocMemFlags},
    kfd_ioctl_criu_args: {"op": CriuOp},
    kfd_ioctl_svm_args: {"op": SvmOp},
    kfd_ioctl_svm_attribute: {"type": SvmAttrType},
    kfd_ioctl_set_xnack_mode_args: {"xnack_enabled": XnackMode},
    kfd_ioctl_runtime_enable_args: {"mode_mask": RuntimeEnableMode},
    kfd_ioctl_dbg_trap_args: {"op": DbgTrapOp},
}


# ---------------------------------------------------------------------------------------------------------
# Layout changes across minors (for checks against older headers)


@dataclass(frozen=True, slots=True)
class AbiChange:
    """A struct whose layout or field names changed in a later minor; older layouts are our prefix."""

    since: tuple[int, int]
    struct: type[ctypes.Structure]
    note: str
    old_size: int | None = None  # sizeof() before ``since``; None if the size did not change
    renamed: dict[str, str] = field(default_factory=dict)  # old field name -> new field name


ABI_CHANGES: tuple[AbiChange, ...] = (
    AbiChange((1, 14), kfd_event_data, "union gained signal_event_data.last_event_age (same size)"),
    AbiChange((1, 17), kfd_ioctl_create_queue_args, "sdma_engine_id and pad appended", old_size=88),
    AbiChange((1, 18), kfd_ioctl_set_memory_policy_args, "pad renamed", renamed={"pad": "misc_process_flag"}),
)

# ---------------------------------------------------------------------------------------------------------
# The ioctl table


class UnknownIoctl(KeyError):
    """A request that is not a KFD ioctl of :data:`IOCTLS`."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown ioctl"


@dataclass(frozen=True, slots=True)
class Ioctl:
    """One ``AMDKFD_IOC_*`` ioctl (or, with another `base`, one of another driver's table)."""

    name: str  # header name without the AMDKFD_IOC_ prefix
    nr: int
    direction: IocDir
    struct: type[ctypes.Structure] | None
    since: tuple[int, int]  # interface version that introduced it; (1, 0) = predates the changelog
    blocking: bool = False  # may sleep in the kernel: callers must not hold locks others need meanwhile
    # a call that fails may have done part of its work, which its struct (copied back whatever the result:
    # kfd_chardev.c kfd_ioctl) tells: n_success devices mapped or unmapped
    partial: bool = False
    # takes or gives back something the kernel hands out again (a queue id, an event id, a buffer's handle and
    # address: kfd_chardev.c): another thread's call may get what this one gave back as soon as it returns
    reuses: bool = False
    base: int = AMDKFD_IOCTL_BASE  # the type byte: 'K' for KFD, 'd' for DRM (kfdtrace.driver.drm_ioctl)

    @property
    def size(self) -> int:
        """Argument size of our (newest) struct layout."""
        return ctypes.sizeof(self.struct) if self.struct is not None else 0

    @property
    def request(self) -> int:
        """The ioctl request number with our struct size."""
        return ioc(self.direction, self.nr, self.size, self.base)


_R, _W, _RW = IocDir.READ, IocDir.WRITE, IocDir.READ_WRITE
_V0 = (1, 0)  # all of 0x01..0x1E predate the header's changelog ("1.1 - initial version")

IOCTLS: tuple[Ioctl, ...] = (
    Ioctl("GET_VERSION", 0x01, _R, kfd_ioctl_get_version_args, _V0),
    Ioctl("CREATE_QUEUE", 0x02, _RW, kfd_ioctl_create_queue_args, _V0, reuses=True),
    Ioctl("DESTROY_QUEUE", 0x03, _RW, kfd_ioctl_destroy_queue_args, _V0, reuses=True),
    Ioctl("SET_MEMORY_POLICY", 0x04, _W, kfd_ioctl_set_memory_policy_args, _V0),
    Ioctl("GET_CLOCK_COUNTERS", 0x05, _RW, kfd_ioctl_get_clock_counters_args, _V0),
    Ioctl("GET_PROCESS_APERTURES", 0x06, _R, kfd_ioctl_get_process_apertures_args, _V0),
    Ioctl("UPDATE_QUEUE", 0x07, _W, kfd_ioctl_update_queue_args, _V0),
    Ioctl("CREATE_EVENT", 0x08, _RW, kfd_ioctl_create_event_args, _V0, reuses=True),
    Ioctl("DESTROY_EVENT", 0x09, _W, kfd_ioctl_destroy_event_args, _V0, reuses=True),
    Ioctl("SET_EVENT", 0x0A, _W, kfd_ioctl_set_event_args, _V0),
    Ioctl("RESET_EVENT", 0x0B, _W, kfd_ioctl_reset_event_args, _V0),
    Ioctl("WAIT_EVENTS", 0x0C, _RW, kfd_ioctl_wait_events_args, _V0, blocking=True),
    Ioctl("DBG_REGISTER_DEPRECATED", 0x0D, _W, kfd_ioctl_dbg_register_args, _V0),
    Ioctl("DBG_UNREGISTER_DEPRECATED", 0x0E, _W, kfd_ioctl_dbg_unregister_args, _V0),
    Ioctl("DBG_ADDRESS_WATCH_DEPRECATED", 0x0F, _W, kfd_ioctl_dbg_address_watch_args, _V0),
    Ioctl("DBG_WAVE_CONTROL_DEPRECATED", 0x10, _W, kfd_ioctl_dbg_wave_control_args, _V0),
    Ioctl("SET_SCRATCH_BACKING_VA", 0x11, _RW, kfd_ioctl_set_scratch_backing_va_args, _V0),
    Ioctl("GET_TILE_CONFIG", 0x12, _RW, kfd_ioctl_get_tile_config_args, _V0),
    Ioctl("SET_TRAP_HANDLER", 0x13, _W, kfd_ioctl_set_trap_handler_args, _V0),
    Ioctl("GET_PROCESS_APERTURES_NEW", 0x14, _RW, kfd_ioctl_get_process_apertures_new_args, _V0),
    Ioctl("ACQUIRE_VM", 0x15, _W, kfd_ioctl_acquire_vm_args, _V0),
    Ioctl("ALLOC_MEMORY_OF_GPU", 0x16, _RW, kfd_ioctl_alloc_memory_of_gpu_args, _V0, reuses=True),
    Ioctl("FREE_MEMORY_OF_GPU", 0x17, _W, kfd_ioctl_free_memory_of_gpu_args, _V0, reuses=True),
    Ioctl("MAP_MEMORY_TO_GPU", 0x18, _RW, kfd_ioctl_map_memory_to_gpu_args, _V0, partial=True),
    Ioctl("UNMAP_MEMORY_FROM_GPU", 0x19, _RW, kfd_ioctl_unmap_memory_from_gpu_args, _V0, partial=True),
    Ioctl("SET_CU_MASK", 0x1A, _W, kfd_ioctl_set_cu_mask_args, _V0),
    Ioctl("GET_QUEUE_WAVE_STATE", 0x1B, _RW, kfd_ioctl_get_queue_wave_state_args, _V0),
    Ioctl("GET_DMABUF_INFO", 0x1C, _RW, kfd_ioctl_get_dmabuf_info_args, _V0),
    Ioctl("IMPORT_DMABUF", 0x1D, _RW, kfd_ioctl_import_dmabuf_args, _V0, reuses=True),
    Ioctl("ALLOC_QUEUE_GWS", 0x1E, _RW, kfd_ioctl_alloc_queue_gws_args, _V0),
    Ioctl("SMI_EVENTS", 0x1F, _RW, kfd_ioctl_smi_events_args, (1, 3)),
    Ioctl("SVM", 0x20, _RW, kfd_ioctl_svm_args, (1, 5)),
    Ioctl("SET_XNACK_MODE", 0x21, _RW, kfd_ioctl_set_xnack_mode_args, (1, 5)),  # with the SVM API
    Ioctl("CRIU_OP", 0x22, _RW, kfd_ioctl_criu_args, (1, 7)),
    Ioctl("AVAILABLE_MEMORY", 0x23, _RW, kfd_ioctl_get_available_memory_args, (1, 9)),
    Ioctl("EXPORT_DMABUF", 0x24, _RW, kfd_ioctl_export_dmabuf_args, (1, 12)),
    Ioctl("RUNTIME_ENABLE", 0x25, _RW, kfd_ioctl_runtime_enable_args, (1, 13)),
    Ioctl("DBG_TRAP", 0x26, _RW, kfd_ioctl_dbg_trap_args, (1, 13)),
    # AMDKFD_IO: no argument. The descriptor's process is replaced by a new secondary one.
    Ioctl("CREATE_PROCESS", 0x27, IocDir.NONE, None, (1, 19)),
)

BY_NR: dict[int, Ioctl] = {i.nr: i for i in IOCTLS}
BY_NAME: dict[str, Ioctl] = {i.name: i for i in IOCTLS}
BY_REQUEST: dict[int, Ioctl] = {i.request: i for i in IOCTLS}

AMDKFD_COMMAND_START = IOCTLS[0].nr
AMDKFD_COMMAND_END = IOCTLS[-1].nr + 1  # exclusive


def lookup(request: int) -> Ioctl:
    """The ioctl of a request, by nr when its type is 'K' (any size: older, shorter structs match too)."""
    if ioc_type(request) == AMDKFD_IOCTL_BASE and (found := BY_NR.get(ioc_nr(request))) is not None:
        return found
    raise UnknownIoctl(
        f"unknown KFD ioctl request {request:#010x} "
        f"(dir={ioc_dir(request).name}, type={ioc_type(request):#04x}, nr={ioc_nr(request):#04x}, "
        f"size={ioc_size(request)})"
    )
