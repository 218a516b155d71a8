"""The register state of waves that run in lockstep: every wave's registers side by side, so one numpy operation
executes an instruction for all their lanes.

A `Waves` holds B waves of L lanes at one program counter: SGPRs (and the special registers that share their
encoding: VCC, M0, EXEC) as `s[128, B]`, VGPRs as `v[N, B, L]`, SCC per wave, EXEC as booleans per lane (its
SGPR copy in s[126:128] is kept equal), and the wave's FLAT_SCRATCH. A scalar branch that goes different ways
for different waves splits the set (`take`); sets that meet at one PC again merge (`merge`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

__all__ = ["EXEC", "Waves", "pack_lanes", "unpack_lanes"]

EXEC = 126  # exec_lo, exec_hi = 126, 127 on every target
SGPR_ROWS = 128


def pack_lanes(lanes: np.ndarray) -> np.ndarray:
    """(B, L) booleans -> (B, L/32) uint32 mask words, lane 0 in bit 0 of word 0."""
    return np.packbits(lanes, axis=1, bitorder="little").view("<u4")


def unpack_lanes(words: np.ndarray, lanes: int) -> np.ndarray:
    """(B, n) uint32 mask words -> (B, lanes) booleans."""
    return np.unpackbits(np.ascontiguousarray(words).view(np.uint8), axis=1, count=lanes,
                         bitorder="little").view(bool)


class Waves:
    """B waves at one PC; `ids` numbers each wave within its dispatch chunk (it finds the wave's workgroup)."""

    __slots__ = ("pc", "ids", "s", "v", "scc", "exec", "full", "flat_scratch")

    def __init__(self, pc: int, ids: np.ndarray, s: np.ndarray, v: np.ndarray, scc: np.ndarray,
                 exec_lanes: np.ndarray, flat_scratch: np.ndarray):
        self.pc, self.ids, self.s, self.v, self.scc = pc, ids, s, v, scc
        self.flat_scratch = flat_scratch
        self.exec = exec_lanes
        self.full = bool(exec_lanes.all())
        self._sync_exec_sgprs()

    @property
    def count(self) -> int:
        return len(self.ids)

    @property
    def lanes(self) -> int:
        return self.exec.shape[1]

    # -- EXEC ---------------------------------------------------------------------------------------
    def set_exec(self, lanes: np.ndarray) -> None:
        """EXEC from per-lane booleans (a VALU compare's v_cmpx)."""
        self.exec = np.ascontiguousarray(lanes, dtype=bool)
        self.full = bool(self.exec.all())
        self._sync_exec_sgprs()

    @contextlib.contextmanager
    def writing_only(self, lanes: np.ndarray) -> Iterator[None]:
        """Writes in the block reach only the lanes that both EXEC and `lanes` ((B, L) booleans) enable, as if EXEC
        were both (a lane mask written gives the others 0): DPP's row and bank masks, and its lanes without a
        source. EXEC itself stays as it is."""
        exec_lanes, full = self.exec, self.full
        self.exec, self.full = exec_lanes & lanes, False
        try:
            yield
        finally:
            self.exec, self.full = exec_lanes, full

    def _sync_exec_sgprs(self) -> None:
        words = pack_lanes(self.exec)
        self.s[EXEC:EXEC + words.shape[1]] = words.T

    def _sync_exec_lanes(self) -> None:
        words = self.s[EXEC:EXEC + max(1, self.lanes // 32)].T
        self.exec = unpack_lanes(words, self.lanes)
        self.full = bool(self.exec.all())

    # -- registers ----------------------------------------------------------------------------------
    def write_s(self, first: int, values: list[np.ndarray]) -> None:
        """SGPRs first, first+1, ... from (B,) uint32 arrays (EXEC's copy is reread when they cover it)."""
        for i, value in enumerate(values):
            self.s[first + i] = value
        if first + len(values) > EXEC and first < EXEC + 2:
            self._sync_exec_lanes()

    def write_v(self, n: int, value: np.ndarray) -> None:
        """VGPR n := value (uint32, broadcast to (B, L)) in the lanes EXEC enables."""
        if self.full:
            self.v[n] = value
        else:
            np.copyto(self.v[n], value, where=self.exec, casting="unsafe")

    def gather_lanes(self, first: int, count: int, idx: np.ndarray) -> np.ndarray:
        """VGPRs first..first+count-1 of the lanes at flat indices `idx` (wave * L + lane): (N, count) uint32."""
        return np.stack([self.v[first + i].reshape(-1)[idx] for i in range(count)], axis=1)

    def scatter_lanes(self, first: int, idx: np.ndarray, words: np.ndarray) -> None:
        """Write (N, count) uint32 `words` into VGPRs first.. of the lanes at flat indices `idx` (no EXEC: the
        caller chose the lanes)."""
        for i in range(words.shape[1]):
            self.v[first + i].reshape(-1)[idx] = words[:, i]

    def mask(self, first: int) -> np.ndarray:
        """The lane mask held in SGPRs first.. (VCC, an SGPR pair), as (B, L) booleans."""
        return unpack_lanes(self.s[first:first + max(1, self.lanes // 32)].T, self.lanes)

    def write_mask(self, first: int, lanes: np.ndarray) -> None:
        """A lane mask into SGPRs first..; lanes EXEC disables write 0."""
        words = pack_lanes(lanes & self.exec)
        self.write_s(first, list(words.T))

    # -- splitting and merging ----------------------------------------------------------------------
    def take(self, which: np.ndarray, pc: int) -> Waves:
        """Move the waves selected by `which` ((B,) booleans) into a new set at `pc`; this set keeps the rest."""
        # register files stay C-contiguous: memory instructions write lanes through flat views of them
        out = Waves(pc, self.ids[which], np.ascontiguousarray(self.s[:, which]),
                    np.ascontiguousarray(self.v[:, which]), self.scc[which], self.exec[which], self.flat_scratch[which])
        keep = ~which
        self.ids, self.scc = self.ids[keep], self.scc[keep]
        self.s, self.v = np.ascontiguousarray(self.s[:, keep]), np.ascontiguousarray(self.v[:, keep])
        self.exec, self.flat_scratch = self.exec[keep], self.flat_scratch[keep]
        self.full = bool(self.exec.all())
        return out

    def merge(self, other: Waves) -> None:
        """Take in `other`'s waves (at the same PC)."""
        self.ids = np.concatenate((self.ids, other.ids))
        self.s = np.concatenate((self.s, other.s), axis=1)
        self.v = np.concatenate((self.v, other.v), axis=1)
        self.scc = np.concatenate((self.scc, other.scc))
        self.exec = np.concatenate((self.exec, other.exec))
        self.flat_scratch = np.concatenate((self.flat_scratch, other.flat_scratch))
        self.full = self.full and other.full
