"""Many small buffers: 1000 GTT/VRAM buffers of 256..4096 bytes (odd sizes too) with random contents, copied
between one another at odd offsets in batches, then a second generation of copies from the results."""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and not __package__:  # run as a script: make `tests.workloads` importable
    sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from kfdtrace.driver import System  # noqa: E402
from tests.workloads.common import TIMEOUT, expect_bytes, random_bytes, rng, run_as_script  # noqa: E402

GPUS = 1


def run(system: System, count: int = 1000, seed: int = 2) -> None:
    gpu = system.devices[0]
    gen = rng(seed)
    sizes = [int(s) for s in gen.integers(256, 4097, count)]
    sizes[:4] = [256, 257, 4095, 4096]
    bufs = [gpu.alloc(s, "gtt" if i % 3 else "vram", name=f"msb{i}") for i, s in enumerate(sizes)]
    half = count // 2
    contents = [bytearray(b.size) for b in bufs]  # what each buffer should hold (allocations start zeroed)
    for i in range(half):
        data = random_bytes(gen, sizes[i]).tobytes()
        bufs[i].write(data)
        contents[i][:len(data)] = data
    q, done = gpu.sdma_queue(name="msb"), system.semaphore("msb.done")
    step = 0
    perm = [int(x) for x in gen.permutation(half)]
    for generation in range(2):  # 0: sources -> second half; 1: second half -> back into the first half
        for k in range(half):
            if generation == 0:
                s, d = perm[k], half + k
            else:
                s, d = half + k, perm[(k + 1) % half]
            n = min(sizes[s], sizes[d])
            src_off = (k * 7) % (sizes[s] - n + 1)  # odd offsets where the sizes allow
            dst_off = (k * 5) % (sizes[d] - n + 1)
            n -= k % 3  # odd lengths
            q.copy(bufs[d], bufs[s], n, dst_offset=dst_off, src_offset=src_off)
            contents[d][dst_off:dst_off + n] = contents[s][src_off:src_off + n]
            if k % 50 == 49 or k == half - 1:
                step += 1
                q.signal(done, step).submit()
        done.wait(step, TIMEOUT)
        for i, b in enumerate(bufs):
            expect_bytes(f"generation {generation}: buffer msb{i} ({sizes[i]} bytes)", b.read(), contents[i])
    q.destroy()
    for b in bufs:
        b.free()
    done.free()


def main() -> None:
    run_as_script(__name__)


if __name__ == "__main__":
    main()
