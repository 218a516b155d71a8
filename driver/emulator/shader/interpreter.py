"""Run a kernel dispatch on the emulated GPU: the waves of a chunk of workgroups execute the kernel's machine code
together, instruction by instruction, with numpy across all their lanes.

Workgroups run in chunks of about `CHUNK_LANES` lanes (fewer for kernels with many VGPRs, and bounded by the
scratch slots an XCC has). Once the running chunks' loops have gone round ADMIT_AFTER * SPIN_TURNS times in a row
with no chunk ending, the next chunk starts beside them (they take turns at each SPIN_TURNS backward jumps), of as
many workgroups as the GPU holds waves for beside the running ones' that have not ended (`Node.resident_waves`),
where no scratch slot is shared (a kernel with scratch runs one chunk at a time): a workgroup spinning on a flag
a later chunk's workgroup sets finishes, as on the hardware, where waves start as others end (campaign 119: one
waiting for the last of 4097 workgroups ran forever).

The waves of a chunk start as one lockstep set; a scalar branch that goes different ways for different waves
splits the set, and the interpreter runs the set with the lowest PC, so sets that took different paths
meet again at the join and merge (the usual SIMT reconvergence). Lane divergence inside a wave needs nothing
of this: EXEC masks it, as on the hardware. A set whose loop goes round SPIN_TURNS times while others wait
gives them a turn first (campaign 81: a wave spinning on a flag another wave sets, below that wave's PC, ran
forever; on the hardware both run).

Barriers count per wave: s_barrier (and gfx12's s_barrier_signal) adds one to the wave's count; a wave waiting
(s_barrier, s_barrier_wait) goes on when every wave of its workgroup that has not ended has signalled as often.
A set whose waves cannot go on is parked until the others have run as far as they can.

An instruction the interpreter does not execute stops the dispatch with an error naming the target, the PC,
the instruction's words and its mnemonic, and raises the memory-exception event; an access outside every
buffer is a VM fault. Neither ever computes a value it was not asked for.
"""

from __future__ import annotations

import ctypes
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from kfdtrace.driver.emulator.launch import KernelLaunch
from kfdtrace.driver.emulator.memory import GpuVm, VmFault
from kfdtrace.driver.emulator.ring_engine import NotEmulated, QueueError
from kfdtrace.driver.emulator.shader.compile import Step, Unsupported, compile_instruction
from kfdtrace.driver.emulator.shader.control import Flow
from kfdtrace.driver.emulator.shader.memory_ops import Chunk, MemoryOps, VirtualMemory
from kfdtrace.driver.emulator.shader.operands import OperandError, Regs
from kfdtrace.driver.emulator.shader.waves import SGPR_ROWS, Waves
from kfdtrace.driver.isa import DecodeError, NotDecoded, decode
from kfdtrace.driver.isa.decoder import sreg_names
from kfdtrace.driver.kernel_descriptor import accum_offset, layout_for
from kfdtrace.driver.kfd_ioctl import AllocMemFlags

if TYPE_CHECKING:
    from kfdtrace.driver.emulator.kfd import EmulatedMachine

__all__ = ["CHUNK_LANES", "CodeCache", "KernelFault", "KernelStopped", "run_dispatch"]

CHUNK_LANES = 1 << 18
CHUNK_VGPR_BYTES = 256 << 20  # a chunk's VGPRs stay within this: kernels with many VGPRs run fewer lanes at once
_MAX_INSTRUCTION = 16  # bytes: a 12-byte encoding and a literal
SPIN_TURNS = 64  # backward jumps a set makes before the other sets get a turn
ADMIT_AFTER = 16  # turns the running chunks take in a row, no chunk ending, before another chunk starts beside them
_ENDED = np.iinfo(np.int64).max  # the barrier count of a wave that has ended: it never holds a barrier up


class KernelFault(QueueError):
    """A kernel stopped: an instruction it cannot execute, or a barrier no wave can pass."""


class InstructionNotEmulated(KernelFault, NotEmulated):
    """A kernel stopped on an instruction (or a form of one) the emulated GPU does not execute."""


def run_dispatch(launch: KernelLaunch, vm: GpuVm, machine: EmulatedMachine,
                 stopped: Callable[[], bool] = lambda: False, code: CodeCache | None = None) -> None:
    """Execute every workgroup of `launch`; give up (KernelStopped) once `stopped()` says the queue is going.
    `code`: the steps compiled for earlier dispatches of the same queue (a fresh cache if None)."""
    Interpreter(launch, vm, machine, stopped, code, machine.gpu(vm.gpu_id).node.resident_waves).run()


class CodeCache:
    """Compiled instructions kept across the dispatches of one queue, so a kernel dispatched again is not decoded
    again: keyed by the register file's shape, the PC and the code bytes found there (a program freed and another
    loaded at the same address is compiled anew). At most `limit` steps; the oldest go first."""

    def __init__(self, vm: GpuVm, machine: EmulatedMachine, limit: int = 1 << 16):
        self.memory = VirtualMemory(vm, machine)
        self.limit = limit
        self.ops: dict[tuple, MemoryOps] = {}
        self.steps: OrderedDict[tuple, Step] = OrderedDict()

    def memory_ops(self, lanes: int, gfx_major: int, architected_scratch: bool) -> MemoryOps:
        key = (lanes, gfx_major, architected_scratch)
        if key not in self.ops:
            self.ops[key] = MemoryOps(self.memory, lanes, gfx_major, architected_scratch)
        return self.ops[key]

    def get(self, key: tuple) -> Step | None:
        step = self.steps.get(key)
        if step is not None:
            self.steps.move_to_end(key)
        return step

    def put(self, key: tuple, step: Step) -> None:
        self.steps[key] = step
        if len(self.steps) > self.limit:
            self.steps.popitem(last=False)


class KernelStopped(QueueError):
    """The queue was destroyed while its kernel ran (a kernel that never ends is stopped this way)."""


class Interpreter:
    def __init__(self, launch: KernelLaunch, vm: GpuVm, machine: EmulatedMachine,
                 stopped: Callable[[], bool] = lambda: False, code: CodeCache | None = None, resident_waves: int = 0):
        self.launch, self.vm, self.machine, self.stopped = launch, vm, machine, stopped
        # waves the GPU holds at once; chunks run one at a time where their waves would share scratch slots
        self.resident = 0 if launch.fields["scratch_en"] and launch.scratch else resident_waves
        self.code = code if code is not None else CodeCache(vm, machine)
        family = launch.family
        self.target = family.isa
        layout = layout_for(family)
        vgprs = ((launch.rsrc1 & 0x3F) + 1) * layout.vgpr_granule[launch.wave_size]
        if launch.rsrc1 >> 12 & 0xF:  # FLOAT_ROUND_MODE_32 / _16_64 other than round to nearest even
            raise KernelFault(f"{self.target}: a kernel whose float round mode is not round-to-nearest-even "
                              f"(COMPUTE_PGM_RSRC1 {launch.rsrc1:#x}) is not emulated")
        # RSRC1.DX10_CLAMP (b21) up to gfx11; gfx12 has no such bit, and LLVM compiles for it as if it were set (its
        # mode defaults: DX10Clamp on; a NaN clamped is 0, which its fold of fmin(fmax(x, 0), 1) into clamp needs)
        dx10_clamp = bool(launch.rsrc1 >> 21 & 1) if "dx10_clamp" in layout.field_word else True
        accum = layout.value("granulated_accum_offset", "compute_pgm_rsrc3", launch.rsrc3)
        self.regs = Regs.of(sreg_names(self.target), vgprs, launch.wave_size, layout.architected_sgprs,
                            launch.rsrc1, dx10_clamp, family.valu16_zeroes_high,
                            None if accum is None else accum_offset(accum))
        self.memory = self.code.memory_ops(launch.wave_size, family.gfx_major, launch.architected_scratch)
        self.steps: dict[int, Step] = {}  # this dispatch's: by PC alone

    def run(self) -> None:
        launch = self.launch
        per_chunk = launch.groups_per_chunk(min(CHUNK_LANES, CHUNK_VGPR_BYTES // (4 * self.regs.vgprs)))
        running: deque[Iterator[int]] = deque()
        live: dict[Iterator[int], int] = {}  # each running chunk's waves not ended, at its last turn
        first, turns = 0, 0  # the next chunk's first workgroup; turns taken since a chunk started or ended
        with np.errstate(all="ignore"):
            while running or first < launch.group_count:
                count = min(per_chunk, launch.group_count - first)
                if running and count:  # beside the running chunks: as many workgroups as the GPU has room for
                    room = (self.resident - sum(live.values())) // launch.waves_per_group
                    count = min(count, room) if turns >= ADMIT_AFTER * len(running) else 0
                if count > 0:
                    running.append(self._chunk(first, count))
                    first, turns = first + count, 0
                chunk = running[0]
                try:
                    live[chunk] = next(chunk)
                except StopIteration:
                    running.popleft()
                    live.pop(chunk, None)
                    turns = 0
                    continue
                turns += 1
                running.rotate(-1)

    # -- one chunk -----------------------------------------------------------------------------------
    def _chunk(self, first: int, count: int) -> Iterator[int]:
        """Run workgroups first .. first+count-1, giving a turn to other chunks (yielding how many of its waves
        have not ended) each time one of its sets' loops goes round SPIN_TURNS times."""
        launch, regs = self.launch, self.regs
        st = launch.start(first, count)
        nw, lanes = len(st.group), launch.wave_size
        s = np.zeros((SGPR_ROWS, nw), np.uint32)
        s[:len(st.sgprs)] = st.sgprs
        for r, values in st.ttmps.items():
            s[r] = values
        v = np.zeros((regs.vgprs, nw, lanes), np.uint32)
        for r, ids in st.vgprs.items():
            v[r] = ids
        lds_size = max(launch.lds_bytes, 4)
        state = (Chunk(np.zeros(count * lds_size, np.uint8), lds_size, st.group * lds_size), st.group,
                 np.zeros(nw, np.int64), np.flatnonzero(np.r_[True, st.group[1:] != st.group[:-1]]))
        self.memory.chunk, self.group_of, self.signals, self.group_starts = state  # what its instructions see
        ids = np.arange(nw)
        sets = [Waves(launch.entry, ids, s, v, np.zeros(nw, bool), st.live.copy(), st.flat_scratch)]
        parked: list[Waves] = []
        spun: Waves | None = None  # the set whose loop last went round SPIN_TURNS times: the others go first
        while sets or parked:
            self._check_stopped(min((x.pc for x in sets), default=launch.entry))
            if not sets:
                sets = self._release(parked)
            w = min((x for x in sets if x is not spun), key=lambda x: x.pc, default=spun)
            sets.remove(w)
            others = {x.pc: x for x in sets}
            outcome = self._advance(w, others, min((pc for pc, x in others.items() if x is not spun), default=None))
            spun = None
            if outcome is None:  # met another set at its PC
                others[w.pc].merge(w)
                continue
            flow, step = outcome
            if flow is Flow.END:
                self.signals[w.ids] = _ENDED
            elif isinstance(flow, np.ndarray):  # the waves go different ways
                for pc in np.unique(flow)[1:]:
                    self._add(sets, w.take(flow == pc, int(pc)))
                    flow = flow[flow != pc]
                w.pc = int(flow[0])
                self._add(sets, w)
            elif flow is Flow.YIELD:
                self._add(sets, w)
            elif flow is Flow.SPIN:
                spun = w
                self._add(sets, w)
                yield int(np.count_nonzero(state[2] != _ENDED))
                self.memory.chunk, self.group_of, self.signals, self.group_starts = state
            else:  # a barrier: signal (s_barrier, s_barrier_signal), then wait (s_barrier, s_barrier_wait)
                if flow in (Flow.BARRIER, Flow.SIGNAL):
                    self.signals[w.ids] += 1
                w.pc = step.next
                if flow is Flow.SIGNAL:
                    self._add(sets, w)
                    continue
                ready = self._may_pass(w.ids)
                if ready.all():
                    self._add(sets, w)
                elif ready.any():
                    self._add(sets, w.take(ready, w.pc))
                    parked.append(w)
                else:
                    parked.append(w)

    def _check_stopped(self, pc: int) -> None:
        if self.stopped():
            raise KernelStopped(f"{self.target}: the queue was stopped while its kernel ran (at PC {pc:#x})")

    @staticmethod
    def _add(sets: list[Waves], w: Waves) -> None:
        same = next((x for x in sets if x.pc == w.pc), None)
        if same is None:
            sets.append(w)
        else:
            same.merge(w)

    def _may_pass(self, ids: np.ndarray) -> np.ndarray:
        """For each wave, whether every live wave of its workgroup has signalled the barrier as often."""
        least = np.minimum.reduceat(self.signals, self.group_starts)
        group_index = np.searchsorted(self.group_starts, ids, side="right") - 1
        return least[group_index] >= self.signals[ids]

    def _release(self, parked: list[Waves]) -> list[Waves]:
        sets: list[Waves] = []
        for w in list(parked):
            ready = self._may_pass(w.ids)
            if ready.all():
                parked.remove(w)
                self._add(sets, w)
            elif ready.any():
                self._add(sets, w.take(ready, w.pc))
        if not sets:
            w = parked[0]
            raise KernelFault(f"{self.target}: waves of workgroup {int(self.group_of[w.ids[0]])} wait at a barrier "
                              f"(before PC {w.pc:#x}) that the rest of the group never reaches")
        return sets

    def _advance(self, w: Waves, others: dict[int, Waves], lowest: int | None):
        """Run `w` until it ends, branches apart, reaches a barrier, jumps back SPIN_TURNS times (SPIN), or (when
        other sets exist) meets one of them (None) or passes `lowest` (YIELD)."""
        steps = self.steps
        turns = SPIN_TURNS
        while True:
            step = steps.get(w.pc)
            if step is None:
                step = steps[w.pc] = self._compile(w.pc)
            try:
                r = step.run(w)
            except OperandError as exc:
                raise self._fault(step.ins, w.pc, str(exc)) from None
            except Unsupported as exc:  # operand values the emulator does not take
                raise InstructionNotEmulated(self._where(step.ins, w.pc, str(exc))) from None
            if r is None:
                w.pc = step.next
            elif type(r) is int:  # a jump: where loops turn, so where a queue being destroyed is noticed
                if r <= w.pc:
                    turns -= 1
                    if not turns:
                        w.pc = r
                        return Flow.SPIN, step
                w.pc = r
                self._check_stopped(w.pc)
            else:
                return r, step
            if others:
                if w.pc in others:
                    return None
                if lowest is not None and w.pc > lowest:
                    return Flow.YIELD, step

    # -- code ------------------------------------------------------------------------------------------
    def _compile(self, pc: int) -> Step:
        bo = self.vm.lookup(pc)
        if bo is not None and not bo.flags & AllocMemFlags.EXECUTABLE:
            # KFD maps a buffer executable only when allocated so (amdgpu_amdkfd_gpuvm.c: AMDGPU_VM_PAGE_EXECUTABLE),
            # and gfxhub enables execute-protection faults for its VMIDs (campaign 89: code copied into plain VRAM ran)
            raise VmFault(self.vm.gpu_id, pc, 4, False, "an instruction fetch from memory not allocated executable")
        n = min(_MAX_INSTRUCTION, bo.va + bo.size - pc) if bo is not None else 4
        with self.vm.access(pc, n) as host:  # a PC outside every buffer is a VM fault
            code = ctypes.string_at(host, n)
        key = (self.regs, self.memory.lanes, pc, code)
        step = self.code.get(key)
        if step is not None:
            return step
        try:
            ins = decode(code, 0, self.target)
        except NotDecoded as exc:  # a valid instruction: the emulator's limit, not the kernel's fault
            words = f"{int.from_bytes(code[:4], 'little'):08x}"
            raise InstructionNotEmulated(f"{self.target}: {exc.mnemonic} at PC {pc:#x} (words {words} ...): its "
                                         f"{exc.form} form is not emulated") from None
        except DecodeError as exc:
            self.machine.report_memory_exception(self.vm.gpu_id, pc)
            raise KernelFault(f"{self.target}: undecodable instruction at PC {pc:#x}: {exc}") from None
        try:
            step = compile_instruction(ins, pc, self.regs, self.memory)
        except Unsupported as exc:  # the emulator's limit, not a fault of the kernel's: no memory exception
            raise InstructionNotEmulated(self._where(ins, pc, str(exc), code[:ins.size])) from None
        self.code.put(key, step)
        return step

    def _fault(self, ins, pc: int, why: str) -> KernelFault:
        self.machine.report_memory_exception(self.vm.gpu_id, pc)
        return KernelFault(self._where(ins, pc, why))

    def _where(self, ins, pc: int, why: str, raw: bytes | None = None) -> str:
        """`why` the instruction `ins` at `pc` stopped the kernel, with its words."""
        if raw is None:
            with self.vm.access(pc, ins.size) as host:
                raw = ctypes.string_at(host, ins.size)
        words = " ".join(f"{int.from_bytes(raw[i:i + 4], 'little'):08x}" for i in range(0, len(raw), 4))
        return f"{self.target}: {ins.mnemonic} at PC {pc:#x} (words {words}): {why}"
