"""Run LLVM's AMDGPU disassembler (llvm-mc-19 --disassemble, llvm-objdump-19 -d) on many words in one batch.

Used by generate.py to derive the opcode tables and by the tests to check the decoder. llvm-mc reads its input as
one byte stream, so each item goes on its own line followed by four `s_nop 0` (bytes an item's leftovers may run
into, after which decoding is back in step) and a marker word (`s_movk_i32 s105, 0x7e57`, which generated tests
avoid): the output is cut back into one answer per item at the markers, and warnings name the item's line.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence

__all__ = ["CRASHED", "MARKER_WORD", "LLVM_MC", "LLVM_OBJDUMP", "disassemble", "have_llvm"]

LLVM_MC = "llvm-mc-19"
LLVM_OBJDUMP = "llvm-objdump-19"
CRASHED = "<llvm-mc crashed>"
MARKER_WORD = 0xB0697E57  # s_movk_i32 s105 (xnack_mask_hi on gfx9), 0x7e57 on every target
_MARKER_BYTES = MARKER_WORD.to_bytes(4, "little")
_PAD = b"\x00\x00\x80\xbf" * 4  # s_nop 0
_WARNING = re.compile(r"^[^:]*:(\d+):(\d+): (?:warning|error): (.*)$")


def have_llvm() -> bool:
    """True when llvm-mc-19 and llvm-objdump-19 are on PATH."""
    return shutil.which(LLVM_MC) is not None and shutil.which(LLVM_OBJDUMP) is not None


def disassemble(target: str, items: Sequence[bytes]) -> list[list[str] | None]:
    """Disassemble each byte string with llvm-mc-19 for `target` (e.g. "gfx1100").

    Returns, per item, None when LLVM calls its first instruction invalid, else the list of instruction texts
    LLVM printed for the item's bytes (the first is the instruction; more follow when LLVM used fewer bytes).
    llvm-mc-19 crashes on a few words (some gfx90a SDWA forms): the batch is split to find them, and each such
    item answers [CRASHED].
    """
    proc = _run(target, items)
    if proc.returncode < 0 or "Stack dump" in proc.stderr:
        if len(items) == 1:
            return [[CRASHED]]
        half = len(items) // 2
        return disassemble(target, items[:half]) + disassemble(target, items[half:])
    return _parse(target, items, proc)


def _run(target: str, items: Sequence[bytes]) -> subprocess.CompletedProcess:
    lines = []
    for item in items:
        lines.append(",".join(f"0x{b:02x}" for b in item))
        lines.append(",".join(f"0x{b:02x}" for b in _PAD))
        lines.append(",".join(f"0x{b:02x}" for b in _MARKER_BYTES))
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as f:
        f.write("\n".join(lines) + "\n")
        f.flush()
        return subprocess.run([LLVM_MC, "--disassemble", "-arch=amdgcn", f"-mcpu={target}", f.name],
                              capture_output=True, text=True, check=False)


def _parse(target: str, items: Sequence[bytes], proc: subprocess.CompletedProcess) -> list[list[str] | None]:
    invalid = set()
    for line in proc.stderr.splitlines():
        m = _WARNING.match(line)
        if m and int(m.group(2)) == 1:
            invalid.add(int(m.group(1)))
    out: list[list[str]] = [[] for _ in items]
    texts = [t.strip() for t in proc.stdout.splitlines()]
    texts = [t for t in texts if t and t != ".text"]
    i = 0
    for t in texts:
        if t.startswith("s_movk_i32") and t.endswith(", 0x7e57") and i < len(items):
            i += 1
            continue
        if i < len(items):
            out[i].append(t)
    out = [o[:1] + [t for t in o[1:] if t != "s_nop 0"] for o in out]
    if i != len(items):
        raise RuntimeError(f"{LLVM_MC} output for {target} did not split into {len(items)} items (got {i})")
    return [None if (3 * k + 1) in invalid else texts_k for k, texts_k in enumerate(out)]

