"""A kernel dispatch as the emulated GPU starts it: the program, its resources, the grid, and every wave's initial
state, built the same way from a PM4 queue's registers (DISPATCH_DIRECT) and from an AQL dispatch packet.

Initial wave state (LLVM AMDGPUUsage "Initial Kernel Execution State"; amd-facts §10-11):
- user SGPRs s0.. from COMPUTE_USER_DATA_* (PM4), or filled by the CP from the descriptor's enables (AQL: the
  same layout driver/dispatch.py writes for PM4);
- system SGPRs from s[USER_SGPR_COUNT]: workgroup id X, Y, Z (RSRC2 TGID_*_EN; on GFX12 in TTMP9 and TTMP7
  instead, its architected SGPRs), workgroup info (TG_SIZE_EN:
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

__all__ = ["KernelLaunch", "ScratchSetup", "Start", "WaveStart", "from_aql", "from_registers"]

Dims = tuple[int, int, int]
TTMP = 108  # ttmp0's operand number


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

    @property
    def group_count(self) -> int:
        return self.groups[0] * self.groups[1] * self.groups[2]

    @property
    def waves_per_group(self) -> int:
        """Waves of a full workgroup (a partial one may have fewer)."""
        return -(-(self.block[0] * self.block[1] * self.block[2]) // self.wave_size)

    def start(self, first: int, count: int) -> Start:
        """The initial state of every wave of workgroups first .. first+count-1 (flat ids x + X*(y + Y*z)), as
        the waves of one chunk the emulator runs together: each wave's scratch slot is its place among the
        chunk's waves of its XCC."""
        ws, per = self.wave_size, self.waves_per_group
        gid = np.arange(first, first + count, dtype=np.int64)
        gx, gy, gz = self.groups
        pos = (gid % gx, gid // gx % gy, gid // (gx * gy))
        size = [np.where(p == n - 1, last, full) for p, n, full, last in zip(pos, self.groups, self.block, self.last,
                                                                              strict=True)]
        items = size[0] * size[1] * size[2]
        waves_in = -(-items // ws)
        group = np.repeat(np.arange(count), per)
        index = np.tile(np.arange(per), count)
        keep = index < waves_in[group]  # a partial group has fewer waves
        group, index = group[keep], index[keep]
        flat = (index[:, None] * ws + np.arange(ws)).astype(np.uint32)
        live = flat < items[group][:, None].astype(np.uint32)
        dims = min(self.fields["tidig_comp_cnt"], 2) + 1
        if self.block[1] == self.block[2] == 1:  # 1-D groups: the flat id is X
            ids = [flat]
        else:
            sx, sy = size[0][group][:, None].astype(np.uint32), size[1][group][:, None].astype(np.uint32)
            ids = [flat % sx, flat // sx % sy, flat // (sx * sy)][:dims]
        ids = [np.where(live, c, np.uint32(0)) for c in ids]  # lanes past the group's end: ids 0
        ids += [np.zeros_like(flat)] * (dims - len(ids))
        if self.family.packed_workitem_ids:
            packed = ids[0].copy()
            for axis in range(1, dims):
                packed |= ids[axis] << np.uint32(10 * axis)
            vgprs = {0: packed}
        else:
            vgprs = dict(enumerate(ids))
        nw = len(group)
        sgprs = np.zeros((len(self.user_sgprs) + 5, nw), np.uint32)
        sgprs[:len(self.user_sgprs)] = np.array(self.user_sgprs, np.uint32)[:, None]
        s = len(self.user_sgprs)
        architected = layout_for(self.family).architected_sgprs
        for axis, on in enumerate(("tgid_x_en", "tgid_y_en", "tgid_z_en")):
            if self.fields[on] and not architected:
                sgprs[s], s = pos[axis][group], s + 1
        if self.fields["tg_size_en"]:
            sgprs[s], s = (index == 0).astype(np.uint32) << 31 | waves_in[group] & 0x3F, s + 1
        xcc = (gid[group] % len(self.scratch.bases)) if self.scratch else np.zeros(nw, np.int64)
        offset = self._scratch_offsets(xcc)
        if self.fields["scratch_en"] and not self.architected_scratch:
            sgprs[s], s = offset, s + 1
        flat_scratch = np.zeros(nw, np.uint64)
        if self.fields["scratch_en"] and self.architected_scratch and self.scratch:
            flat_scratch = np.array(self.scratch.bases, np.uint64)[xcc] + offset.astype(np.uint64)
        ttmps = {}
        if architected:  # TTMP9 = X, TTMP7 = Y | Z << 16, TTMP8 b29:25 = the wave's id in its group
            ttmps = {TTMP + 9: pos[0][group].astype(np.uint32),
                     TTMP + 7: (pos[1][group] | pos[2][group] << 16).astype(np.uint32),
                     TTMP + 8: (index.astype(np.uint32) & 0x1F) << 25}
        return Start(sgprs[:s], vgprs, live, flat_scratch, group, index, xcc, ttmps)

    def waves(self, group: Dims) -> list[WaveStart]:
        """The initial state of each wave of workgroup `group`."""
        gid = group[0] + self.groups[0] * (group[1] + self.groups[1] * group[2])
        st = self.start(gid, 1)
        out = []
        for w in range(len(st.index)):
            mask = int(sum(1 << i for i, on in enumerate(st.live[w]) if on))
            out.append(WaveStart(group, int(st.index[w]), mask, {i: int(v) for i, v in enumerate(st.sgprs[:, w])},
                                 {r: a[w].copy() for r, a in st.vgprs.items()},
                                 int(st.flat_scratch[w]) if self.fields["scratch_en"] and self.architected_scratch
                                 and self.scratch else None, int(st.xcc[w])))
        return out

    def _scratch_offsets(self, xcc: np.ndarray) -> np.ndarray:
        """The byte offset of each wave's scratch slot: its place among the waves of its XCC."""
        if not self.fields["scratch_en"] or self.scratch is None:
            return np.zeros(len(xcc), np.uint32)
        slot = np.zeros(len(xcc), np.int64)
        for x in np.unique(xcc):
            mine = xcc == x
            slot[mine] = np.arange(int(mine.sum()))
        if len(slot) and slot.max() >= self.scratch.waves:
            raise QueueError(f"{int(slot.max()) + 1} waves with scratch on one XCC: COMPUTE_TMPRING_SIZE.WAVES "
                             f"({self.scratch.waves}) is too small")
        return (slot * self.scratch.wave_bytes).astype(np.uint32)

    def groups_per_chunk(self, lanes: int) -> int:
        """How many workgroups run together: about `lanes` lanes, and no more waves with scratch than an XCC
        has slots for."""
        per = self.waves_per_group
        n = max(1, lanes // (per * self.wave_size))
        if self.fields["scratch_en"] and self.scratch:
            n = min(n, max(1, self.scratch.waves // per) * len(self.scratch.bases))
        return n


@dataclass(frozen=True)
class Start:
    """The initial state of the waves of a chunk of workgroups, one column (or row) per wave."""

    sgprs: np.ndarray  # (SGPRs, waves) uint32: user SGPRs, then the system SGPRs
    vgprs: dict[int, np.ndarray]  # VGPR -> (waves, lanes) uint32 work-item ids
    live: np.ndarray  # (waves, lanes) bool: EXEC
    flat_scratch: np.ndarray  # (waves,) uint64
    group: np.ndarray  # (waves,) the wave's workgroup, counted from the chunk's first
    index: np.ndarray  # (waves,) the wave's place in its group
    xcc: np.ndarray  # (waves,)
    ttmps: dict[int, np.ndarray]  # trap temporaries the hardware sets (GFX12's workgroup ids): SGPR index -> values


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
