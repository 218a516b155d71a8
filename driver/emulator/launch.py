"""A kernel dispatch as the emulated GPU starts it: the program, its resources, the grid, and every wave's initial
state, built the same way from a PM4 queue's registers (DISPATCH_DIRECT) and from an AQL dispatch packet.

Initial wave state (LLVM AMDGPUUsage "Initial Kernel Execution State"; amd-facts §10-11):
- user SGPRs s0.. from COMPUTE_USER_DATA_* (PM4), or filled by the CP from the descriptor's enables (AQL: the
  same layout driver/dispatch.py writes for PM4);
- system SGPRs from s[USER_SGPR_COUNT]: workgroup id X, Y, Z (RSRC2 TGID_*_EN), workgroup info (TG_SIZE_EN:
  first wave b31, waves in the group b5:0), the scratch wave offset (SCRATCH_EN, absolute-scratch targets only);
- VGPRs: work-item ids, packed into v0 (X b9:0, Y b19:10, Z b29:20) on gfx90a, gfx942, gfx11 and gfx12, else X,
  Y, Z in v0, v1, v2; only the dimensions RSRC2 TIDIG_COMP_CNT enables;
- FLAT_SCRATCH = the scratch base plus the wave's offset on architected-flat-scratch targets (gfx942, gfx11+);
- EXEC: the wave's lanes that hold work-items (the last wave of a group may be partial).

Work-items fill a group's waves in order of their flat id x + y*X + z*X*Y. The last workgroup of a dimension has
that dimension's partial size (NUM_THREAD_*.PARTIAL with PARTIAL_TG_EN; an AQL grid's remainder). On a node with
several XCCs each runs a share of the workgroups (round robin by flat workgroup id here) with its own scratch.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from kfdtrace.driver.aql import AmdQueue
from kfdtrace.driver.dispatch import SCRATCH_UNIT, scratch_resource, user_sgprs
from kfdtrace.driver.emulator.memory import GpuVm
from kfdtrace.driver.emulator.ring_engine import QueueError
from kfdtrace.driver.families import Family
from kfdtrace.driver.kernel_descriptor import DESCRIPTOR_SIZE, MAX_USER_SGPRS, KernelDescriptor, layout_for
from kfdtrace.driver.packets import Packet
from kfdtrace.driver.registers import RegisterTable

__all__ = ["KernelLaunch", "ScratchSetup", "WaveStart", "from_aql", "from_registers"]

Dims = tuple[int, int, int]


@dataclass(frozen=True)
class ScratchSetup:
    """Scratch the dispatch gives waves: each XCC's base, the bytes of one wave's slot, the slots per XCC."""

    bases: tuple[int, ...]
    wave_bytes: int
    waves: int


@dataclass(frozen=True)
class WaveStart:
    """One wave's initial state."""

    group: Dims  # workgroup id
    index: int  # the wave's place in its group
    exec_mask: int
    sgprs: dict[int, int]  # SGPR number -> value (user and system SGPRs)
    vgprs: dict[int, np.ndarray]  # VGPR number -> one uint32 per lane (work-item ids)
    flat_scratch: int | None  # the FLAT_SCRATCH register on architected-flat-scratch targets
    xcc: int


@dataclass(frozen=True)
class KernelLaunch:
    """A dispatch as the hardware starts it."""

    family: Family
    entry: int  # the first instruction's address
    rsrc1: int
    rsrc2: int
    rsrc3: int
    wave_size: int
    user_sgprs: tuple[int, ...]
    groups: Dims  # workgroups per dimension, the partial last one included
    block: Dims  # work-items of a full workgroup
    last: Dims  # work-items of the last workgroup of each dimension
    lds_bytes: int
    scratch: ScratchSetup | None
    architected_scratch: bool
    fields: dict[str, int]  # COMPUTE_PGM_RSRC2 decoded (the enables the waves need)

    def group_size(self, group: Dims) -> Dims:
        return tuple(last if g == n - 1 else full
                     for g, n, full, last in zip(group, self.groups, self.block, self.last, strict=True))

    def workgroups(self) -> Iterator[Dims]:
        gx, gy, gz = self.groups
        for z in range(gz):
            for y in range(gy):
                for x in range(gx):
                    yield (x, y, z)

    def waves(self, group: Dims) -> list[WaveStart]:
        """The initial state of each wave of workgroup `group`."""
        sx, sy, sz = self.group_size(group)
        n = sx * sy * sz
        ws = self.wave_size
        count = -(-n // ws)
        flat = np.arange(count * ws, dtype=np.uint32)
        x, y, z = flat % sx, flat // sx % sy, flat // (sx * sy)
        x[n:] = y[n:] = z[n:] = 0  # lanes past the group's last work-item: EXEC off, ids 0
        dims = min(self.fields["tidig_comp_cnt"], 2) + 1
        ids = (x, y * (dims > 1), z * (dims > 2))
        if self.family.packed_workitem_ids:
            vgprs = {0: (ids[0] | ids[1] << 10 | ids[2] << 20).astype(np.uint32)}
        else:
            vgprs = {i: ids[i].astype(np.uint32) for i in range(dims)}
        gid = group[0] + self.groups[0] * (group[1] + self.groups[1] * group[2])
        xcc = gid % len(self.scratch.bases) if self.scratch else 0
        out = []
        for w in range(count):
            lanes = min(ws, n - w * ws)
            sgprs = dict(enumerate(self.user_sgprs))
            s = len(self.user_sgprs)
            for axis, on in enumerate(("tgid_x_en", "tgid_y_en", "tgid_z_en")):
                if self.fields[on]:
                    sgprs[s], s = group[axis], s + 1
            if self.fields["tg_size_en"]:
                sgprs[s], s = (w == 0) << 31 | count & 0x3F, s + 1
            offset = self._scratch_offset(w)
            if self.fields["scratch_en"] and not self.architected_scratch:
                sgprs[s] = offset
            flat_scratch = None
            if self.fields["scratch_en"] and self.architected_scratch and self.scratch:
                flat_scratch = self.scratch.bases[xcc] + offset
            out.append(WaveStart(group, w, (1 << lanes) - 1, sgprs,
                                 {v: a[w * ws:(w + 1) * ws].copy() for v, a in vgprs.items()}, flat_scratch, xcc))
        return out

    def _scratch_offset(self, wave: int) -> int:
        """The byte offset of the wave's scratch slot: the emulator runs one workgroup at a time, so the waves of
        a group take slots 0, 1, ..."""
        if not self.fields["scratch_en"] or self.scratch is None:
            return 0
        if wave >= self.scratch.waves:
            raise QueueError(f"a workgroup of more than {self.scratch.waves} waves with scratch: "
                             f"COMPUTE_TMPRING_SIZE.WAVES is too small")
        return wave * self.scratch.wave_bytes


def _dims(values) -> Dims:
    return tuple(int(v) for v in values)


def from_registers(family: Family, table: RegisterTable, registers: list[dict], groups: Dims,
                   initiator: int) -> KernelLaunch:
    """The launch a DISPATCH_DIRECT over `groups` workgroups with DISPATCH_INITIATOR `initiator` starts from a
    PM4 queue's registers (one dict per XCC, by register name)."""
    regs = registers[0]
    try:
        entry = table.join("COMPUTE_PGM", regs)
    except KeyError:
        raise QueueError("DISPATCH_DIRECT before COMPUTE_PGM_LO/HI were set: no program to run") from None
    rsrc2 = regs.get("COMPUTE_PGM_RSRC2", 0)
    fields = table["COMPUTE_PGM_RSRC2"].decode(rsrc2)
    initiator = table["COMPUTE_DISPATCH_INITIATOR"].decode(initiator)
    wave_size = 32 if initiator.get("cs_w32_en") else 64
    full, partial = [], []
    for axis in "XYZ":
        t = table[f"COMPUTE_NUM_THREAD_{axis}"].decode(regs.get(f"COMPUTE_NUM_THREAD_{axis}", 0))
        full.append(t["num_thread_full"])
        partial.append(t["num_thread_partial"] if initiator["partial_tg_en"] and t["num_thread_partial"] else
                       t["num_thread_full"])
    if 0 in full or 0 in groups:
        raise QueueError(f"DISPATCH_DIRECT of {groups} workgroups of {tuple(full)} work-items: nothing to run")
    tmpring = table["COMPUTE_TMPRING_SIZE"].decode(regs.get("COMPUTE_TMPRING_SIZE", 0))
    unit = SCRATCH_UNIT[family.gfx_major]
    scratch = None
    if tmpring["wavesize"]:
        bases = tuple(table.join("COMPUTE_DISPATCH_SCRATCH_BASE", r) if "COMPUTE_DISPATCH_SCRATCH_BASE_LO" in r
                      else 0 for r in registers)
        scratch = ScratchSetup(bases, tmpring["wavesize"] * unit, tmpring["waves"])
    return KernelLaunch(family, entry, regs.get("COMPUTE_PGM_RSRC1", 0), rsrc2, regs.get("COMPUTE_PGM_RSRC3", 0),
                        wave_size, tuple(regs.get(f"COMPUTE_USER_DATA_{i}", 0)
                                         for i in range(min(fields["user_sgpr"], MAX_USER_SGPRS))),
                        _dims(groups), _dims(full), _dims(partial),
                        fields["lds_size"] * layout_for(family).lds_granule, scratch,
                        layout_for(family).architected_flat_scratch, fields)


def from_aql(family: Family, table: RegisterTable, vm: GpuVm, packet: Packet, packet_va: int, index: int,
             queue: AmdQueue, queue_va: int, num_xcc: int = 1) -> KernelLaunch:
    """The launch a KERNEL_DISPATCH packet starts: the descriptor read from kernel_object, the user SGPRs the CP
    fills from its enables (dispatch pointer = the packet's slot, queue pointer = the amd_queue_t, dispatch id =
    the packet's index), the grid in work-items, scratch from amd_queue_t."""
    f = packet.fields
    with vm.access(f["kernel_object"], DESCRIPTOR_SIZE) as host:
        raw = ctypes.string_at(host, DESCRIPTOR_SIZE)
    kd = KernelDescriptor.decode(raw, layout_for(family), f"kernel descriptor at {f['kernel_object']:#x}")
    dims = f["dimensions"]
    grid = [f["grid_size_x"], f["grid_size_y"] if dims > 1 else 1, f["grid_size_z"] if dims > 2 else 1]
    block = [f["workgroup_size_x"], f["workgroup_size_y"] if dims > 1 else 1, f["workgroup_size_z"] if dims > 2 else 1]
    if 0 in grid or 0 in block:
        raise QueueError(f"KERNEL_DISPATCH of grid {tuple(grid)} in workgroups of {tuple(block)}: nothing to run")
    unit = SCRATCH_UNIT[family.gfx_major]
    tmpring = table["COMPUTE_TMPRING_SIZE"].decode(queue.compute_tmpring_size)
    base = queue.scratch_backing_memory_location
    scratch = None
    if base and tmpring["wavesize"]:
        per_xcc = queue.scratch_backing_memory_byte_size // max(num_xcc, 1)
        scratch = ScratchSetup(tuple(base + x * per_xcc for x in range(max(num_xcc, 1))),
                               tmpring["wavesize"] * unit, tmpring["waves"])
    values = {"private_segment_buffer": scratch_resource(base, family.gfx_major, kd.wave_size),
              "dispatch_ptr": packet_va, "queue_ptr": queue_va, "kernarg_segment_ptr": f["kernarg_address"],
              "dispatch_id": index, "flat_scratch_init": base, "private_segment_size": f["private_segment_size"]}
    try:
        sgprs = user_sgprs(kd, values)
    except ValueError as exc:
        raise QueueError(str(exc)) from None
    # the CP puts the dispatch's LDS (the packet's group segment size, dynamic LDS included) into RSRC2.LDS_SIZE
    lds = table["COMPUTE_PGM_RSRC2"].field("lds_size")
    granules = kd.lds_size_field(f["group_segment_size"])
    if granules > lds.mask:
        raise QueueError(f"KERNEL_DISPATCH asks for {f['group_segment_size']} bytes of LDS per workgroup")
    rsrc2 = kd.compute_pgm_rsrc2 & ~(lds.mask << lds.shift) | granules << lds.shift
    fields = table["COMPUTE_PGM_RSRC2"].decode(rsrc2)
    return KernelLaunch(family, f["kernel_object"] + kd.kernel_code_entry_byte_offset, kd.compute_pgm_rsrc1, rsrc2,
                        kd.compute_pgm_rsrc3, kd.wave_size, tuple(sgprs),
                        _dims(-(-g // b) for g, b in zip(grid, block, strict=True)), _dims(block),
                        _dims(g % b or b for g, b in zip(grid, block, strict=True)),
                        fields["lds_size"] * layout_for(family).lds_granule, scratch,
                        layout_for(family).architected_flat_scratch, fields)
