"""The emulated KFD answers as amdkfd does (issue 11). Each test names the kernel function it follows.

Sources read: FireBurn/linux @ 008529d6 drivers/gpu/drm/amd/amdkfd/kfd_chardev.c (kfd_ioctl and the ioctl
handlers, kfd_ioctl_create_process), torvalds/linux @ 1a2f09ae kfd_queue.c (kfd_queue_acquire_buffers),
kfd_process.c (kfd_bind_process_to_device), kfd_process_queue_manager.c (pqm_update_queue_properties,
pqm_update_mqd), kfd_device_queue_manager.c (allocate_sdma_queue), kfd_topology.c
(kfd_fill_iolink_non_crat_info, kfd_set_iolink_non_coherent, kfd_add_peer_prop).
"""

from __future__ import annotations

import ctypes
import errno

import pytest

from kfdtrace.driver import DeviceError, GpuFault
from kfdtrace.driver import kfd_ioctl as K
from kfdtrace.driver.emulator.boards import emulated_topology
from kfdtrace.driver.emulator.kfd import ENOTSUPP, EmulatedMachine, KfdError
from kfdtrace.driver.families import queue_sizes
from kfdtrace.driver.memory import PAGE
from kfdtrace.driver.syscalls import MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, MAP_SHARED, PROT_READ, PROT_WRITE
from kfdtrace.driver.topology import IOLINK_TYPE_PCIEXPRESS, DictSysfs, read_topology, write_sysfs_tree

from .test_emulator import _queue_args

F = K.AllocMemFlags
NON_COHERENT = 1 << 1  # CRAT_IOLINK_FLAGS_NON_COHERENT


def _errno_of(fn) -> int:
    with pytest.raises((DeviceError, KfdError, OSError)) as err:
        fn()
    return err.value.errno


def _raw(machine: EmulatedMachine, name: str, request: int | None = None, **fields):
    """Call the emulated kfd_ioctl with a fresh struct of `name` (and optionally another request code)."""
    entry = K.BY_NAME[name]
    args = entry.struct(**fields) if entry.struct else None
    machine.ioctl(entry.request if request is None else request, args and ctypes.addressof(args))
    return args


@pytest.fixture
def machine():
    """One emulated gfx942 whose VM nobody has acquired yet."""
    m = EmulatedMachine(emulated_topology(["gfx942"]))
    yield m
    m.shutdown()


# -- kfd_ioctl ------------------------------------------------------------------------------------------------

def test_an_nr_outside_the_table_is_enotty_and_the_type_byte_is_not_looked_at(machine):
    """kfd_ioctl: nr outside [AMDKFD_COMMAND_START, AMDKFD_COMMAND_END) -> ENOTTY; the entry is amdkfd_ioctls[nr]."""
    args = K.kfd_ioctl_get_version_args()
    for nr in (0x00, K.AMDKFD_COMMAND_END, 0x80):
        assert _errno_of(lambda nr=nr: machine.ioctl(K.ioc(K.IocDir.READ, nr, 8), ctypes.addressof(args))) \
            == errno.ENOTTY
    other_type = K.ioc(K.IocDir.READ, 0x01, 8, type_=ord("X"))
    assert _raw(machine, "GET_VERSION", other_type).major_version == K.KFD_IOCTL_MAJOR_VERSION


def test_the_copy_direction_is_the_tables_not_the_callers(machine):
    """kfd_ioctl: "Do not trust userspace, use our own definition": cmd = ioctl->cmd before copying."""
    gpu_id = next(iter(machine.gpus))
    as_read = K.ioc(K.IocDir.READ, 0x05, ctypes.sizeof(K.kfd_ioctl_get_clock_counters_args))
    out = _raw(machine, "GET_CLOCK_COUNTERS", as_read, gpu_id=gpu_id)  # _IOWR in the kernel: gpu_id is read
    assert out.gpu_clock_counter > 0 and out.system_clock_freq == 10**9
    as_write = K.ioc(K.IocDir.WRITE, 0x01, 8)  # GET_VERSION is _IOR: the answer is still copied out
    assert _raw(machine, "GET_VERSION", as_write).minor_version == K.KFD_IOCTL_MINOR_VERSION


# -- kfd_bind_process_to_device: no VM yet ---------------------------------------------------------------------

def test_before_acquire_vm_the_bind_fails_esrch_for_queues_enodev_for_memory(machine):
    """kfd_bind_process_to_device returns ENODEV without pdd->drm_priv; kfd_ioctl_create_queue reports ESRCH,
    kfd_ioctl_alloc_memory_of_gpu and kfd_ioctl_map_memory_to_gpu pass ENODEV on."""
    gpu_id = next(iter(machine.gpus))
    ptrs = (ctypes.c_uint64 * 512)()
    queue = dict(ring_base_address=0x1000000, ring_size=4096, read_pointer_address=ctypes.addressof(ptrs),
                 write_pointer_address=ctypes.addressof(ptrs) + 8, gpu_id=gpu_id, queue_type=K.QueueType.SDMA)
    assert _errno_of(lambda: _raw(machine, "CREATE_QUEUE", **queue)) == errno.ESRCH
    alloc = dict(va_addr=0x10_0000_0000, size=PAGE, gpu_id=gpu_id, flags=int(F.GTT))
    assert _errno_of(lambda: _raw(machine, "ALLOC_MEMORY_OF_GPU", **alloc)) == errno.ENODEV
    ids = (ctypes.c_uint32 * 1)(gpu_id)
    mapping = dict(handle=gpu_id << 32 | 1, device_ids_array_ptr=ctypes.addressof(ids), n_devices=1)
    assert _errno_of(lambda: _raw(machine, "MAP_MEMORY_TO_GPU", **mapping)) == errno.ENODEV


# -- kfd_ioctl_create_queue -------------------------------------------------------------------------------------

@pytest.mark.parametrize("change, expected", [
    (dict(queue_type=9), ENOTSUPP),
    (dict(ring_base_address=1 << 50), errno.EFAULT),
    (dict(ring_size=3000), errno.EINVAL),
])
def test_create_queue_checks_its_arguments_before_the_gpu_id(emulated, change, expected):
    """kfd_ioctl_create_queue: set_queue_properties_from_user (EFAULT, power of 2, ENOTSUPP) runs before
    kfd_process_device_data_by_id looks the gpu_id up."""
    dev = emulated("gfx942").devices[0]
    args = _queue_args(dev, gpu_id=0x1, **change)
    assert _errno_of(lambda: dev.kfd.ioctl("CREATE_QUEUE", **args)) == expected


def test_cwsr_mapping_is_sized_from_the_queues_own_ctx_save_restore_size(emulated):
    """kfd_queue_acquire_buffers: the CWSR BO must map exactly ALIGN((ctx_save_restore_size + debug_memory_size)
    * NUM_XCC, PAGE) of the size the queue asks for, not of the node's cwsr_size."""
    dev = emulated("gfx1100").devices[0]
    sizes = queue_sizes(dev.node.properties)
    asked = sizes.cwsr_size + 2 * PAGE
    eop = dev.alloc(sizes.eop_buffer_size, "vram", cpu_access=False)

    def create(cwsr_bytes: int):
        cwsr = dev.alloc(cwsr_bytes, "vram", cpu_access=False)
        return dev.kfd.ioctl("CREATE_QUEUE", **_queue_args(
            dev, queue_type=K.QueueType.COMPUTE_AQL, eop_buffer_address=eop.va, eop_buffer_size=sizes.eop_buffer_size,
            ctx_save_restore_address=cwsr.va, ctx_save_restore_size=asked, ctl_stack_size=sizes.ctl_stack_size))

    assert _errno_of(lambda: create(sizes.cwsr_allocation())) == errno.EINVAL
    assert create(sizes.cwsr_allocation(1, asked)).doorbell_offset >> 62 == 3


def test_an_xgmi_sdma_queue_without_xgmi_engines_is_enomem(emulated):
    """allocate_sdma_queue: an empty xgmi_sdma_bitmap -> "No more XGMI SDMA queue to allocate", ENOMEM."""
    dev = emulated("gfx1100").devices[0]
    assert dev.node.num_sdma_xgmi_engines == 0
    args = _queue_args(dev, queue_type=K.QueueType.SDMA_XGMI)
    assert _errno_of(lambda: dev.kfd.ioctl("CREATE_QUEUE", **args)) == errno.ENOMEM


# -- kfd_ioctl_alloc_memory_of_gpu ------------------------------------------------------------------------------

def test_alloc_flag_combinations(emulated):
    """kfd_ioctl_alloc_memory_of_gpu: DOORBELL must be kfd_doorbell_process_slice, MMIO_REMAP one page (EINVAL);
    amdgpu_amdkfd_gpuvm_alloc_memory_of_gpu takes VRAM before GTT before USERPTR."""
    dev = emulated("gfx942").devices[0]
    kfd = dev.kfd
    base = dict(va_addr=0x10_0000_0000, size=PAGE, gpu_id=dev.gpu_id)
    assert _errno_of(lambda: kfd.ioctl("ALLOC_MEMORY_OF_GPU", **base, flags=int(F.DOORBELL))) == errno.EINVAL
    mmio = {**base, "size": 2 * PAGE, "flags": int(F.MMIO_REMAP)}
    assert _errno_of(lambda: kfd.ioctl("ALLOC_MEMORY_OF_GPU", **mmio)) == errno.EINVAL
    free = dev.free_vram()
    kfd.ioctl("ALLOC_MEMORY_OF_GPU", **base, flags=int(F.VRAM | F.GTT))
    assert dev.free_vram() == free - PAGE  # VRAM won


def test_public_vram_on_a_small_bar_gpu_is_einval_and_the_driver_does_not_ask_for_it(emulated):
    """kfd_ioctl_alloc_memory_of_gpu: PUBLIC | VRAM when !kfd_dev_is_large_bar -> EINVAL ("Alloc host visible
    vram on small bar is not allowed"). The R9700 board's VRAM bank is FB_PRIVATE (small BAR)."""
    small, large = emulated("gfx1201,gfx1100").devices
    assert not small.node.large_bar and large.node.large_bar
    args = dict(va_addr=0x10_0000_0000, size=PAGE, gpu_id=small.gpu_id, flags=int(F.VRAM | F.PUBLIC))
    assert _errno_of(lambda: small.kfd.ioctl("ALLOC_MEMORY_OF_GPU", **args)) == errno.EINVAL
    buf = small.alloc(PAGE, "vram")  # CPU-visible all the same: mapped without PUBLIC
    assert not buf.flags & F.PUBLIC
    buf.write(b"seen")
    assert buf.read(0, 4) == b"seen"
    assert large.alloc(PAGE, "vram").flags & F.PUBLIC


def test_any_vram_buffer_may_be_mmapped(emulated):
    """amdgpu_gem_object_mmap / "drm/amdkfd: Allow CPU access for all VRAM BOs" (2021): no PUBLIC needed."""
    system = emulated("gfx942")
    dev = system.devices[0]
    private = dev.alloc(PAGE, "vram", cpu_access=False)
    q = dev.sdma_queue()
    q.fill(private, 0x5A5A5A5A, PAGE).sync()
    reserve = system.sys.mmap(0, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    offset = next(b.mmap_offset for b in system.sys.machine.bos.values() if b.va == private.va)
    addr = system.sys.mmap(reserve, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, dev.drm_fd, offset)
    assert ctypes.string_at(addr, 4) == b"ZZZZ"
    system.sys.munmap(addr, PAGE)


# -- map / free ------------------------------------------------------------------------------------------------

def test_map_errnos(emulated):
    """kfd_ioctl_map_memory_to_gpu: n_devices 0 -> EINVAL; copy_from_user of the id array fails -> EFAULT; an
    unknown handle on a GPU the process has -> kfd_process_device_translate_handle fails -> ENOMEM."""
    dev = emulated("gfx942").devices[0]
    ids = (ctypes.c_uint32 * 1)(dev.gpu_id)
    args = dict(handle=dev.gpu_id << 32 | 0xFFFF, device_ids_array_ptr=ctypes.addressof(ids), n_devices=1)
    assert _errno_of(lambda: dev.kfd.ioctl("MAP_MEMORY_TO_GPU", **args)) == errno.ENOMEM
    assert _errno_of(lambda: dev.kfd.ioctl("MAP_MEMORY_TO_GPU", **{**args, "n_devices": 0})) == errno.EINVAL
    buf = dev.alloc(PAGE, "gtt")
    null = {**args, "handle": buf.handle, "device_ids_array_ptr": 0}
    assert _errno_of(lambda: dev.kfd.ioctl("MAP_MEMORY_TO_GPU", **null)) == errno.EFAULT


def test_the_event_page_cannot_be_freed(emulated):
    """kfd_ioctl_free_memory_of_gpu: "Safeguard to prevent user space from freeing signal BO" -> EPERM."""
    system = emulated("gfx942")
    system.event()  # the first signal event hands the kernel the event page
    handle = system.sys.machine._event_page
    assert handle
    assert _errno_of(lambda: system.kfd.ioctl("FREE_MEMORY_OF_GPU", handle=handle)) == errno.EPERM


# -- queues after creation --------------------------------------------------------------------------------------

def test_update_queue_and_cu_mask_of_an_unknown_queue_are_efault(emulated):
    """pqm_update_queue_properties / pqm_update_mqd: "No queue %d exists for update operation" -> EFAULT;
    kfd_ioctl_set_cu_mask: num_cu_mask not a multiple of 32, or 0 -> EINVAL before that."""
    dev = emulated("gfx942").devices[0]
    kfd = dev.kfd
    assert _errno_of(lambda: kfd.ioctl("UPDATE_QUEUE", queue_id=77, ring_size=4096)) == errno.EFAULT
    mask = (ctypes.c_uint32 * 2)(0xFFFFFFFF, 0xFFFFFFFF)
    cu = dict(queue_id=77, num_cu_mask=64, cu_mask_ptr=ctypes.addressof(mask))
    assert _errno_of(lambda: kfd.ioctl("SET_CU_MASK", **cu)) == errno.EFAULT
    assert _errno_of(lambda: kfd.ioctl("SET_CU_MASK", **{**cu, "num_cu_mask": 0})) == errno.EINVAL
    assert _errno_of(lambda: kfd.ioctl("SET_CU_MASK", **{**cu, "num_cu_mask": 33})) == errno.EINVAL


@pytest.mark.parametrize("target, ok", [("gfx942", True), ("gfx1100", False)])
def test_cu_masks_enable_whole_wgps_from_gc_10(emulated, target, ok):
    """pqm_update_mqd: "ASICs that have WGPs must enforce pairwise enabled mask checks" (GC 10.0 .. 12.1)."""
    dev = emulated(target).devices[0]
    q = dev.sdma_queue()
    mask = (ctypes.c_uint32 * 1)(0b01)  # one CU of a pair
    args = dict(queue_id=q.queue_id, num_cu_mask=32, cu_mask_ptr=ctypes.addressof(mask))
    if ok:
        dev.kfd.ioctl("SET_CU_MASK", **args)
    else:
        assert _errno_of(lambda: dev.kfd.ioctl("SET_CU_MASK", **args)) == errno.EINVAL


def test_clock_counters_of_an_unknown_gpu_are_zero_not_an_error(emulated):
    """kfd_ioctl_get_clock_counters: no pdd ("Node without GPU resource") -> gpu_clock_counter 0, returns 0."""
    system = emulated("gfx942")
    out = system.kfd.ioctl("GET_CLOCK_COUNTERS", gpu_id=0x1)
    assert out.gpu_clock_counter == 0 and out.cpu_clock_counter > 0 and out.system_clock_freq == 10**9


# -- interface 1.19 ---------------------------------------------------------------------------------------------

def test_create_process_is_amdkfd_io_0x27_and_once_per_descriptor(emulated):
    """kfd_ioctl_create_process (1.19, AMDKFD_IO(0x27)): "Each FD owns only one kfd_process" -> EINVAL the second
    time; kfd_ioctl_alloc_memory_of_gpu: USERPTR on a non-primary process -> EOPNOTSUPP."""
    assert K.BY_NAME["CREATE_PROCESS"].request == 0x4B27 and K.AMDKFD_COMMAND_END == 0x28
    assert (K.KFD_IOCTL_MAJOR_VERSION, K.KFD_IOCTL_MINOR_VERSION) == (1, 19)
    system = emulated("gfx942")
    dev = system.devices[0]
    assert system.kfd.ioctl("CREATE_PROCESS") is None
    assert _errno_of(lambda: system.kfd.ioctl("CREATE_PROCESS")) == errno.EINVAL
    args = dict(va_addr=0x10_0000_0000, size=PAGE, gpu_id=dev.gpu_id, flags=int(F.USERPTR), mmap_offset=PAGE)
    assert _errno_of(lambda: dev.kfd.ioctl("ALLOC_MEMORY_OF_GPU", **args)) == errno.EOPNOTSUPP


# -- topology ---------------------------------------------------------------------------------------------------

class _Denied(DictSysfs):
    """A sysfs where one node's files answer EPERM, as kfd_topology.c does for a GPU outside the device cgroup."""

    def __init__(self, files, denied: str):
        super().__init__(files)
        self.denied = denied

    def read_sysfs(self, path: str) -> str:
        if path.startswith(self.denied):
            raise PermissionError(errno.EPERM, "Operation not permitted", path)
        return super().read_sysfs(path)


def test_a_node_unreadable_for_permission_is_skipped():
    """kfd_topology.c node_show -> kfd_devcgroup_check_permission -> EPERM; libhsakmt skips such a node."""
    topo = emulated_topology(["gfx942", "gfx1100"])
    root = "/sys/devices/virtual/kfd/kfd/topology"
    read = read_topology(_Denied(write_sysfs_tree(topo), f"{root}/nodes/1/"))
    assert [n.index for n in read.nodes] == [0, 2]
    assert read.link(2, 0) is not None and read.link(1, 0) is None


def test_gpu_banks_report_used_memory(emulated):
    """kfd_topology.c kfd_build_sysfs_node_entry: GPU mem_banks get "used_memory" (mem_show: VRAM in use)."""
    system = emulated("gfx942")
    dev = system.devices[0]
    path = f"/sys/devices/virtual/kfd/kfd/topology/nodes/{dev.node.index}/mem_banks/0/used_memory"
    before = int(system.sys.read_sysfs(path))
    dev.alloc(1 << 20, "vram")
    assert int(system.sys.read_sysfs(path)) == before + (1 << 20)
    with pytest.raises(FileNotFoundError):
        system.sys.read_sysfs("/sys/devices/virtual/kfd/kfd/topology/nodes/0/mem_banks/0/used_memory")


def test_link_flags_and_peer_bandwidth_follow_the_kernel():
    """kfd_set_iolink_non_coherent: CPU -> GPU PCIe and GPU <-> GPU PCIe links are NON_COHERENT, a GPU's link to
    the CPU is not. kfd_add_peer_prop: max_bandwidth = min(iolink2, iolink2), the listing node's own."""
    topo = emulated_topology(["gfx1100", "gfx942"])  # 16x PCIe 4 and 16x PCIe 5
    cpu, navi, mi300 = topo.nodes
    assert all(link["flags"] & NON_COHERENT for link in cpu.io_links)
    assert not any(link["flags"] & NON_COHERENT for g in (navi, mi300) for link in g.io_links)
    assert all(link["flags"] & NON_COHERENT and link["type"] == IOLINK_TYPE_PCIEXPRESS
               for g in (navi, mi300) for link in g.p2p_links)
    own = {g.index: g.io_links[0]["max_bandwidth"] for g in (navi, mi300)}
    assert own[navi.index] != own[mi300.index]
    assert topo.link(navi.index, mi300.index)["max_bandwidth"] == own[navi.index]
    assert topo.link(mi300.index, navi.index)["max_bandwidth"] == own[mi300.index]


@pytest.mark.parametrize("target, gc, sdma, nbif", [
    ("gfx90a", (9, 4, 2), (4, 4, 0), (7, 4, 4)),  # amdgpu_discovery.c CHIP_ALDEBARAN: NBIO_HWIP 7.4.4
    ("gfx942", (9, 4, 3), (4, 4, 2), (7, 9, 0)),
    ("gfx1100", (11, 0, 0), (6, 0, 0), (4, 3, 0)),
    ("gfx1201", (12, 0, 1), (7, 0, 1), (6, 3, 1)),
])
def test_render_nodes_expose_ip_discovery_versions(emulated, target, gc, sdma, nbif):
    """amdgpu_discovery.c: device/ip_discovery/die/0/<block>/0/{major,minor,revision}, by name and hw id
    (GC 11, SDMA0 42, NBIF 108)."""
    system = emulated(target)
    die = f"/sys/class/drm/renderD{system.devices[0].node.drm_render_minor}/device/ip_discovery/die/0"
    for names, version in ((("GC", "11"), gc), (("SDMA0", "42"), sdma), (("NBIF", "108"), nbif)):
        for name in names:
            got = tuple(int(system.sys.read_sysfs(f"{die}/{name}/0/{p}")) for p in ("major", "minor", "revision"))
            assert got == version, name


def test_an_nbif_version_no_source_gives_is_left_out():
    """No source read gives Navi21's NBIF version (the kernel reads it from the board's discovery table): the
    emulated render node shows no NBIF rather than a made-up one."""
    machine = EmulatedMachine(emulated_topology(["gfx1030"]))
    die = f"/sys/class/drm/renderD{machine.topology.gpus[0].drm_render_minor}/device/ip_discovery/die/0"
    assert machine.read_sysfs(f"{die}/GC/0/major") == "10\n"
    with pytest.raises(FileNotFoundError):
        machine.read_sysfs(f"{die}/NBIF/0/major")


# -- SDMA limits ------------------------------------------------------------------------------------------------

def test_copies_default_to_the_kernels_limit_and_may_go_to_the_count_width(emulated):
    """sdma_v*_0.c copy_max_bytes 0x400000 is the default split; a queue may be asked for up to what the
    family's count field takes (30 bits where ROCR uses them, 22 on gfx942)."""
    mi300, navi = emulated("gfx942,gfx1100").devices
    assert mi300.sdma_queue().max_copy == navi.sdma_queue().max_copy == 0x400000
    assert navi.sdma_queue(max_copy=1 << 30).max_copy == 1 << 30
    with pytest.raises(ValueError, match="max_copy"):
        mi300.sdma_queue(max_copy=(1 << 22) + 1)


@pytest.mark.parametrize("target, fits", [("gfx942", False), ("gfx1100", True)])
def test_the_engine_takes_only_the_familys_count_width(emulated, caplog, target, fits):
    """vega10_sdma_pkt_open.h masks COPY_LINEAR_COUNT to 22 bits and ROCR uses the 30-bit count only on gfx90a
    and gfx10.3+ (families.py sdma_count_bits): the packet table decodes 30 bits, and a gfx942 engine given a
    count past 22 bits stops the queue naming the packet and the limit instead of moving fewer bytes."""
    dev = emulated(target).devices[0]
    n = (1 << 22) + 4096
    src, dst = dev.alloc(n, "gtt"), dev.alloc(n, "gtt")
    src.write(b"\x5a" * n)
    q = dev.sdma_queue(name="wide")
    q.packet("COPY_LINEAR", count=n - 1, src=src.va, dst=dst.va)
    if fits:
        q.sync(timeout=10)
        assert dst.read(n - 4, 4) == b"\x5a" * 4
    else:
        with pytest.raises(GpuFault, match=r"stopped a queue.*at: COPY_LINEAR count=0x400fff"):
            q.sync(timeout=10)
        assert "exceeds the 22-bit count this GPU's SDMA engine takes (at most 0x400000 bytes)" in caplog.text
        assert dst.read(0, 4) == b"\0" * 4


def test_a_vm_comes_from_one_render_node_file_till_the_process_ends():
    """kfd_ioctl_acquire_vm: again through the same file is 0, through another EBUSY, even once the first is closed
    (the kernel holds it: kfd_process_destroy_pdds puts it). So a second System of one process cannot open the
    GPUs, which the driver says plainly (campaign 98)."""
    from kfdtrace.driver.backend import open_syscalls
    from kfdtrace.driver.system import System

    syscalls = open_syscalls(emulate="gfx942")
    first = System(syscalls)
    try:
        gpu = first.devices[0]
        minor = gpu.node.properties.get("drm_render_minor", 128)
        other = syscalls.open(f"/dev/dri/renderD{minor}")
        assert _errno_of(lambda: first.kfd.ioctl("ACQUIRE_VM", drm_fd=other, gpu_id=gpu.gpu_id)) == errno.EBUSY
        first.kfd.ioctl("ACQUIRE_VM", drm_fd=gpu.drm_fd, gpu_id=gpu.gpu_id)  # the same file: nothing happens
        syscalls.close(gpu.drm_fd)
        gpu.drm_fd = -1
        assert _errno_of(lambda: first.kfd.ioctl("ACQUIRE_VM", drm_fd=other, gpu_id=gpu.gpu_id)) == errno.EBUSY
        syscalls.close(other)
        with pytest.raises(DeviceError, match=r"GPU 0x[0-9a-f]+: this process already opened it \(a System, closed "
                                              r"or not\): the kernel keeps a process's GPU state until it exits"):
            System(syscalls)
    finally:
        first.close()
