"""What one kernel dispatch needs whatever the queue: the kernel argument segment in GPU memory, a copy of the
AQL dispatch packet (the kernel's dispatch pointer), the user SGPRs its descriptor enables, and scratch.

The PM4 form of the dispatch (`pm4_dispatch`) is the sequence amd-facts §10 documents (tinygrad's
AMDComputeQueue.exec; Mesa si_compute.c): the program and resource registers, scratch, the user SGPRs in
COMPUTE_USER_DATA_*, the workgroup size, then DISPATCH_DIRECT over the workgroup counts.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kfdtrace.driver.aql import dispatch_packet
from kfdtrace.driver.kernargs import KernargError, Kernargs, Launch
from kfdtrace.driver.kernel_descriptor import KernelDescriptor
from kfdtrace.driver.memory import Buffer
from kfdtrace.driver.pm4 import EventIndex, EventType, Pm4Dialect
from kfdtrace.driver.registers import RegisterTable

if TYPE_CHECKING:
    from kfdtrace.driver.kernarg_pool import KernargMemory
    from kfdtrace.driver.program import LoadedKernel
    from kfdtrace.driver.system import Device

__all__ = ["PACKET_BYTES", "Scratch", "ScratchArea", "dispatch_values", "pm4_dispatch", "pm4_launch",
           "scratch_resource", "user_sgprs"]

PACKET_BYTES = 64  # the hsa_kernel_dispatch_packet_t a kernel's dispatch pointer points at
SCRATCH_LANES = 64  # scratch is sized for wave64 lanes whatever the wave size (as tinygrad sizes it)
# COMPUTE_TMPRING_SIZE.WAVESIZE unit, bytes (tinygrad ops_amd.py _ensure_has_local_memory; amd-facts §4)
SCRATCH_UNIT = {9: 1024, 10: 256, 11: 256, 12: 256}
# The private segment buffer resource's third word (absolute-scratch targets: gfx90a, gfx103x): a raw 32-bit
# dword buffer with the lane id added to the index (ADD_TID_ENABLE b23) and INDEX_STRIDE b22:21 the wave size.
# gfx9: NUM_FORMAT UINT b14:12, DATA_FORMAT 32 b18:15, ELEMENT_SIZE 4 bytes b20:19 (ROCR AqlQueue FillBufRsrcWord3,
# amd-facts §9); gfx10.3: FORMAT 32_UINT (0x14) b18:12, OOB_SELECT 2 b29:28 (tinygrad ops_amd.py's word).
_SCRATCH_WORD3 = {9: 4 << 12 | 4 << 15 | 1 << 19 | 1 << 23, 10: 0x14 << 12 | 2 << 28 | 1 << 23}
_INDEX_STRIDE = {8: 0, 16: 1, 32: 2, 64: 3}
SWIZZLE = 1 << 31  # the resource's second word: SWIZZLE_ENABLE


@dataclass(frozen=True)
class ScratchArea:
    """Scratch for a dispatch: the buffer (one share per XCC), each wave's bytes, and COMPUTE_TMPRING_SIZE."""

    buffer: Buffer
    wave_bytes: int  # bytes of one wave's slot
    waves: int  # slots per XCC (TMPRING_SIZE.WAVES)
    per_xcc: int  # bytes of each XCC's share

    def base(self, xcc: int = 0) -> int:
        return self.buffer.va + xcc * self.per_xcc

    def tmpring(self, registers: RegisterTable, gfx_major: int) -> int:
        """COMPUTE_TMPRING_SIZE for this area (the register's WAVESIZE unit differs by generation)."""
        return registers["COMPUTE_TMPRING_SIZE"].encode(waves=self.waves,
                                                        wavesize=self.wave_bytes // SCRATCH_UNIT[gfx_major])

    def resource(self, gfx_major: int, wave_size: int) -> tuple[int, int, int, int]:
        """The private segment buffer resource (V#) over this area's base, as absolute-scratch targets take it."""
        return scratch_resource(self.base(), gfx_major, wave_size)


def scratch_resource(base: int, gfx_major: int, wave_size: int) -> tuple[int, int, int, int]:
    """A swizzled buffer resource for scratch at `base` (an all-ones size: the wave offset selects the slot)."""
    return (base & 0xFFFFFFFF, (base >> 32) | SWIZZLE, 0xFFFFFFFF,
            _SCRATCH_WORD3.get(gfx_major, 0) | _INDEX_STRIDE[wave_size] << 21)


class Scratch:
    """A queue's scratch memory, grown to the largest private segment asked so far. A buffer outgrown is handed to
    `retire` (the queue frees it once the dispatches using it are done)."""

    def __init__(self, device: Device, name: str):
        self.device, self.name = device, name
        self.area: ScratchArea | None = None
        self._per_lane = 0

    def ensure(self, private_segment_size: int, retire: Callable[[Buffer], None]) -> ScratchArea:
        """An area with at least `private_segment_size` bytes per work-item (sized as tinygrad sizes it: every
        scratch slot of every CU of every XCC)."""
        props, major = self.device.node.properties, self.device.target.family.gfx_major
        unit = SCRATCH_UNIT[major]
        per_lane = max(1, -(-private_segment_size // (unit // SCRATCH_LANES))) * (unit // SCRATCH_LANES)
        if self.area is not None and per_lane <= self._per_lane:
            return self.area
        xccs = props.get("num_xcc") or 1
        cus = props["simd_count"] // props["simd_per_cu"] // xccs
        slots = cus * props.get("max_slots_scratch_cu", 32)
        wave_bytes = per_lane * SCRATCH_LANES
        per_xcc = wave_bytes * slots
        # gfx10+ count TMPRING_SIZE.WAVES per shader engine
        engines = 1 if major == 9 else max(1, props["array_count"] // max(1, props["simd_arrays_per_engine"]) // xccs)
        buffer = self.device.alloc(per_xcc * xccs, "vram", cpu_access=False, name=f"{self.name}.scratch",
                                   role="queue context")
        if self.area is not None:
            retire(self.area.buffer)
        self.area, self._per_lane = ScratchArea(buffer, wave_bytes, min(slots // engines, 0xFFF), per_xcc), per_lane
        return self.area

    def free(self) -> None:
        if self.area is not None:
            self.area.buffer.free()
            self.area = None


def user_sgprs(kd: KernelDescriptor, values: Mapping[str, int | tuple[int, ...]]) -> list[int]:
    """The dwords of the user SGPRs `kd` enables, in load order, padded with zeros to USER_SGPR_COUNT: a 64-bit
    value fills two SGPRs (low first), a tuple fills as many as it has dwords."""
    out: list[int] = []
    for name, count in kd.user_sgprs:
        if name == "kernarg_preload":
            raise KernargError("kernels that preload kernel arguments into SGPRs are not supported yet")
        v = values[name]
        words = list(v) if isinstance(v, tuple) else [(v >> (32 * i)) & 0xFFFFFFFF for i in range(count)]
        if len(words) != count:
            raise ValueError(f"user SGPR {name} takes {count} dwords, not {len(words)}")
        out += words
    if len(out) > kd.user_sgpr_count:
        raise KernargError(f"the descriptor enables {len(out)} user SGPRs but USER_SGPR_COUNT is "
                           f"{kd.user_sgpr_count} (corrupt code object?)")
    return out + [0] * (kd.user_sgpr_count - len(out))


def dispatch_values(kernel: LoadedKernel, launch: Launch, args: Kernargs, kernarg_va: int, packet_va: int,
                    scratch: ScratchArea | None, dispatch_id: int) -> tuple[dict[str, int | tuple[int, ...]], bytes]:
    """The values of every user SGPR a kernel may enable (AMDGPUUsage "Initial Kernel Execution State"), and the
    dispatch packet its dispatch pointer points at. The queue pointer is null: a PM4 queue has no amd_queue_t,
    and only pre-gfx9 trap handlers read it."""
    kd, family = kernel.kernel.descriptor, kernel.program.device.target.family
    base = scratch.base() if scratch else 0
    resource = scratch_resource(base, family.gfx_major, kd.wave_size)
    packet = dispatch_packet(kernel.descriptor_address, launch.grid[:launch.dims], launch.block[:launch.dims],
                             kernarg_va, private_segment_size=kernel.kernel.scratch or 0,
                             group_segment_size=args.group_segment_size).encode()
    values: dict[str, int | tuple[int, ...]] = {
        "private_segment_buffer": resource, "dispatch_ptr": packet_va, "queue_ptr": 0,
        "kernarg_segment_ptr": kernarg_va, "dispatch_id": dispatch_id, "flat_scratch_init": base,
        "private_segment_size": kernel.kernel.scratch or 0,
    }
    return values, packet


def pm4_launch(dialect: Pm4Dialect, kernel: LoadedKernel, launch: Launch, args: Kernargs, scratch: ScratchArea | None,
               kernarg: Callable[[int, int], KernargMemory], dispatch_id: int, num_xcc: int) -> bytes:
    """The PM4 packets of one dispatch with packed kernel arguments: the arguments, then a copy of the AQL
    dispatch packet 64-byte aligned after them, go into the memory `kernarg(size, align)` gives (the caller keeps
    it until the engine is past the packets)."""
    at = -(-len(args.data) // PACKET_BYTES) * PACKET_BYTES
    mem = kernarg(at + PACKET_BYTES, max(args.align, PACKET_BYTES))
    values, packet = dispatch_values(kernel, launch, args, mem.va, mem.va + at, scratch, dispatch_id)
    mem.write(args.data + bytes(at - len(args.data)) + packet)
    return pm4_dispatch(dialect, kernel, launch, args, user_sgprs(kernel.kernel.descriptor, values), scratch, num_xcc)


def pm4_dispatch(dialect: Pm4Dialect, kernel: LoadedKernel, launch: Launch, args: Kernargs,
                 sgprs: list[int], scratch: ScratchArea | None, num_xcc: int) -> bytes:
    """The PM4 packets of one dispatch (amd-facts §10), ending with a CS_PARTIAL_FLUSH so the packets after it
    wait for the kernel. The packets around the user SGPRs are made once for what they depend on (a queue
    dispatching a kernel again differs only in its SGPRs: the kernel argument and dispatch pointers)."""
    kd = kernel.kernel.descriptor
    scratch_key = None if scratch is None else (scratch.buffer.va, scratch.per_xcc, scratch.wave_bytes, scratch.waves)
    key = (dialect, kernel.program.device.target.family.gfx_major, kernel.entry_address, kd.compute_pgm_rsrc1,
           kd.compute_pgm_rsrc2, kd.compute_pgm_rsrc3, kd.wave_size, kd.lds_size_field(args.group_segment_size),
           launch.grid, launch.block, scratch_key, num_xcc, len(sgprs))
    parts = _AROUND_SGPRS.get(key)
    if parts is None:
        if len(_AROUND_SGPRS) >= MAX_AROUND_SGPRS:
            _AROUND_SGPRS.clear()
        parts = _AROUND_SGPRS[key] = _around_sgprs(dialect, kernel, launch, args, len(sgprs), scratch, num_xcc)
    before, head, n, after = parts
    return before + head + struct.pack(f"<{n}I", *sgprs[:n]) + after if n else before + after


# (dialect, what of the kernel, launch and scratch the packets hold, SGPR count) -> the packets before the user
# SGPRs, the user-data SET_SH_REG's first two dwords, how many SGPRs it writes, and the packets after them
_AROUND_SGPRS: dict[tuple, tuple[bytes, bytes, int, bytes]] = {}
MAX_AROUND_SGPRS = 256


def _around_sgprs(dialect: Pm4Dialect, kernel: LoadedKernel, launch: Launch, args: Kernargs, n_sgprs: int,
                  scratch: ScratchArea | None, num_xcc: int) -> tuple[bytes, bytes, int, bytes]:
    """The PM4 packets of a dispatch before its user SGPRs, the head of the SET_SH_REG of `n_sgprs` of them (at
    most the COMPUTE_USER_DATA registers there are) and how many that is, and the packets after them."""
    regs, kd = dialect.registers, kernel.kernel.descriptor
    family = kernel.program.device.target.family
    build = dialect.build
    out = [build("ACQUIRE_MEM", **_invalidate_shader_caches(dialect))]
    rsrc1 = kd.compute_pgm_rsrc1 | (1 << 20 if family.gfx_major == 11 else 0)  # PRIV: tinygrad's CWSR workaround
    rsrc2 = kd.compute_pgm_rsrc2 | regs["COMPUTE_PGM_RSRC2"].encode(lds_size=kd.lds_size_field(args.group_segment_size))
    out.append(dialect.set_sh_reg(**regs.split("COMPUTE_PGM", kernel.entry_address)))
    out.append(dialect.set_sh_reg(COMPUTE_PGM_RSRC1=rsrc1, COMPUTE_PGM_RSRC2=rsrc2))
    out.append(dialect.set_sh_reg(COMPUTE_PGM_RSRC3=kd.compute_pgm_rsrc3))
    out.append(dialect.set_sh_reg(COMPUTE_TMPRING_SIZE=scratch.tmpring(regs, family.gfx_major) if scratch else 0))
    if scratch is not None:  # each XCC its own share (architected flat scratch reads this base)
        for xcc in range(num_xcc):
            body = dialect.set_sh_reg(**regs.split("COMPUTE_DISPATCH_SCRATCH_BASE", scratch.base(xcc)))
            if num_xcc > 1:
                body = build("PRED_EXEC", exec_count=len(body) // 4, xcc_mask=1 << xcc) + body
            out.append(body)
    out.append(dialect.set_sh_reg(COMPUTE_RESTART_X=0, COMPUTE_RESTART_Y=0, COMPUTE_RESTART_Z=0))
    user_data = regs.user_data[:n_sgprs]
    head = dialect.set_sh_reg(**dict.fromkeys((r.name for r in user_data), 0))[:8] if user_data else b""
    after = [dialect.set_sh_reg(COMPUTE_RESOURCE_LIMITS=0)]
    threads = {f"COMPUTE_NUM_THREAD_{d}": regs[f"COMPUTE_NUM_THREAD_{d}"].encode(
        num_thread_full=b, num_thread_partial=g % b) for d, g, b in zip("XYZ", launch.grid, launch.block, strict=True)}
    after.append(dialect.set_sh_reg(COMPUTE_START_X=0, COMPUTE_START_Y=0, COMPUTE_START_Z=0, **threads))
    partial = any(g % b for g, b in zip(launch.grid, launch.block, strict=True))
    initiator = {"compute_shader_en": 1, "force_start_at_000": 1, "partial_tg_en": int(partial)}
    if kd.wave_size == 32:
        initiator["cs_w32_en"] = 1  # gfx10+ only: the gfx9 register has no such field (and no wave32)
    groups = launch.groups
    after.append(build("DISPATCH_DIRECT", dim_x=groups[0], dim_y=groups[1], dim_z=groups[2],
                       dispatch_initiator=regs["COMPUTE_DISPATCH_INITIATOR"].encode(**initiator)))
    after.append(build("EVENT_WRITE", event_type=EventType.CS_PARTIAL_FLUSH, event_index=EventIndex.CS_PARTIAL_FLUSH))
    return b"".join(out), head, len(user_data), b"".join(after)


def _invalidate_shader_caches(dialect: Pm4Dialect) -> dict[str, int]:
    """ACQUIRE_MEM fields invalidating the shader caches before a dispatch reads what the CPU or another engine
    wrote (tinygrad's acquire_mem(gli=0, gl2=0)): gfx10+ GLM/GLK write-back and invalidate, GLV and GL1
    invalidate; gfx9 the scalar cache and the vector L1. The whole address range."""
    fields = dialect["ACQUIRE_MEM"].field_names
    wanted = ("glm_inv", "glm_wb", "glk_inv", "glk_wb", "glv_inv", "gl1_inv") if "glv_inv" in fields else \
        ("sh_kcache_action_ena", "tcl1_action_ena")
    size = dialect["ACQUIRE_MEM"]["coher_size"].mask
    return {**dict.fromkeys(wanted, 1), "coher_size": size}
