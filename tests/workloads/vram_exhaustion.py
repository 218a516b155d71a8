"""VRAM exhaustion: allocate VRAM in chunks of a sixteenth of the board until the driver says ENOMEM
(OutOfMemory), check what AVAILABLE_MEMORY says, use a chunk with the GPU, free half and keep working, then
free everything. The chunks have no CPU mapping and only a MiB of each is touched (emulated VRAM is a memfd
filled lazily; a CPU-visible multi-GiB buffer the GPU writes would also be hashed whole by a recorder)."""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and not __package__:  # run as a script: make `tests.workloads` importable
    sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from kfdtrace.driver import System  # noqa: E402
from kfdtrace.driver.errors import DeviceError, OutOfMemory  # noqa: E402
from tests.workloads.common import MIB, TIMEOUT, expect_bytes, is_enomem, random_bytes, rng, run_as_script  # noqa: E402

GPUS = 1
PARTS = 16


def run(system: System, seed: int = 12) -> None:
    gpu = system.devices[0]
    chunk = gpu.vram_size // PARTS // (2 * MIB) * (2 * MIB)
    held = []
    error = None
    while error is None:
        try:
            held.append(gpu.alloc(chunk, "vram", cpu_access=False, name=f"vx.chunk{len(held)}"))
        except DeviceError as exc:
            if not is_enomem(exc):
                raise
            error = exc
        if len(held) > 4 * PARTS:
            raise AssertionError(f"{len(held)} chunks of {chunk:#x} bytes allocated on a {gpu.vram_size:#x}-byte "
                                 "board without running out")
    if not isinstance(error, OutOfMemory):
        raise AssertionError(f"ENOMEM came as {type(error).__name__}, not OutOfMemory: {error}")
    if len(held) < PARTS - 1:
        raise AssertionError(f"ran out after {len(held)} chunks of {chunk:#x} on a {gpu.vram_size:#x}-byte board")
    free = gpu.free_vram()
    if free >= chunk:
        raise AssertionError(f"AVAILABLE_MEMORY says {free:#x} bytes are free, yet a {chunk:#x}-byte alloc failed")
    q, done = gpu.sdma_queue(name="vx"), system.semaphore("vx.done")  # queues live in GTT: still possible
    src, out = gpu.alloc(MIB, "gtt", name="vx.src"), gpu.alloc(MIB, "gtt", name="vx.out")
    data = random_bytes(rng(seed), MIB)
    src.write(data)
    q.copy(held[-1], src, MIB, dst_offset=chunk - MIB).copy(out, held[-1], MIB, src_offset=chunk - MIB)
    q.signal(done, 1).submit()
    done.wait(1, TIMEOUT)
    expect_bytes("a copy through the last chunk while VRAM is full", out.read(), data)
    for b in held[::2]:
        b.free()
    del held[::2]
    fresh = gpu.alloc(chunk // 2, "vram", cpu_access=False, name="vx.after")  # room again
    q.fill(fresh, 0x11223344, MIB).copy(out, fresh, MIB).signal(done, 2).submit()
    done.wait(2, TIMEOUT)
    expect_bytes("a fill in VRAM allocated after freeing", out.read(), (0x11223344).to_bytes(4, "little") * (MIB // 4))
    q.destroy()
    for b in (*held, fresh, src, out):
        b.free()
    done.free()
    if gpu.free_vram() != gpu.vram_size:
        raise AssertionError(f"{gpu.vram_size - gpu.free_vram():#x} bytes of VRAM still in use after freeing all")


def main() -> None:
    run_as_script(__name__)


if __name__ == "__main__":
    main()
