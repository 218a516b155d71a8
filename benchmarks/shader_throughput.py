"""The emulated GPU's ISA interpreter: lane-instructions per second on uniform kernels, and the memcpy kernel's
bandwidth against a host memmove of the same bytes, measured side by side in one run.

    python benchmarks/shader_throughput.py [--targets gfx90a,gfx1100] [--n 16777216] [--gemm 256]

For each target: vector_add over n floats and gemm_tiled (gemm x gemm x gemm fp32), each run once to count
the lane-instructions it executes (every instruction times the lanes EXEC enables) and once more, uninstrumented,
to time it (dispatch to completion, buffers already filled, the kernel compiled by a first run). Target: >= 50M
lane-instructions/s on these uniform kernels. Anchor: tinygrad's Python emulator does 7.7M/s on vector add and
21.5M/s on a 256x256 fp32 matmul for gfx1100 on this machine kind. Then memcpy_uint4 over 64 MiB against
ctypes.memmove.
"""

from __future__ import annotations

import argparse
import ctypes
import time

import numpy as np
from timing import best_of

from kfdtrace.driver import System
from kfdtrace.driver.emulator.shader import interpreter
from kfdtrace.driver.emulator.shader.compile import Step
from kfdtrace.driver.kernels.device import corpus, kernel_arguments
from kfdtrace.driver.kernels.reference import Case, sized

TARGETS = ("gfx90a", "gfx942", "gfx1030", "gfx1100", "gfx1201")


def counting(run: list[int]):
    """compile_instruction, its steps adding the lanes they execute to run[0]."""
    real = interpreter.compile_instruction

    def compile_counted(ins, pc, regs, memory) -> Step:
        step = real(ins, pc, regs, memory)

        def counted(w):
            run[0] += int(w.exec.sum())
            return step.run(w)
        return Step(counted, step.next, step.ins)
    return compile_counted


def dispatch_seconds(system: System, case: Case) -> tuple[float, int]:
    """(seconds of one uninstrumented dispatch, lane-instructions it executes). Counting and timing run on
    queues of their own (a queue keeps its compiled code); the timed dispatch follows a warm-up one, so it
    measures execution, not compilation."""
    dev = system.devices[0]
    program = corpus(dev)
    values = case.inputs()
    args, buffers = kernel_arguments(dev, case, values)
    kernel = program.kernel(case.kernel)
    lanes = [0]
    interpreter.compile_instruction, real = counting(lanes), interpreter.compile_instruction
    try:
        counted = dev.compute_queue(name="count")
        counted.dispatch(kernel, case.grid, case.block, *args).sync(timeout=3600)
    finally:
        interpreter.compile_instruction = real
    counted.destroy()
    q = dev.compute_queue(name="bench")
    q.dispatch(kernel, case.grid, case.block, *args).sync(timeout=3600)
    t0 = time.perf_counter()
    q.dispatch(kernel, case.grid, case.block, *args).sync(timeout=3600)
    seconds = time.perf_counter() - t0
    q.destroy()
    for b in buffers.values():
        b.free()
    return seconds, lanes[0]


def throughput(targets: list[str], n: int, gemm: int) -> None:
    print(f"{'target':>8}  {'kernel':>22}  {'lane-instr':>12}  {'seconds':>8}  {'M lane-instr/s':>14}")
    for target in targets:
        with System.open(emulate=target) as system:
            for label, case in ((f"vector_add {n >> 20}M", sized("vector_add", n=n)),
                                (f"gemm_tiled {gemm}^3", sized("gemm_tiled", m=gemm, n=gemm, k=gemm))):
                seconds, lanes = dispatch_seconds(system, case)
                print(f"{target:>8}  {label:>22}  {lanes:>12,}  {seconds:8.2f}  {lanes / seconds / 1e6:14.1f}")


def bandwidth(target: str, size: int) -> None:
    case = sized("memcpy_uint4", n=size // 16)
    with System.open(emulate=target) as system:
        dev = system.devices[0]
        values = case.inputs()
        args, buffers = kernel_arguments(dev, case, values)
        q = dev.compute_queue(name="memcpy")
        kernel = corpus(dev).kernel("memcpy_uint4")
        kernel_s = best_of(lambda: q.dispatch(kernel, case.grid, case.block, *args).sync(timeout=600), 3)
        a, b = np.ones(size, np.uint8), np.zeros(size, np.uint8)
        host_s = best_of(lambda: ctypes.memmove(b.ctypes.data, a.ctypes.data, size), 5)
        print(f"memcpy_uint4 {size >> 20} MiB on {target}: {size / kernel_s / 1e9:.2f} GB/s, memmove "
              f"{size / host_s / 1e9:.2f} GB/s, ratio {host_s / kernel_s:.3f}x")
        q.destroy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--n", type=int, default=1 << 24)
    ap.add_argument("--gemm", type=int, default=256)
    ap.add_argument("--copy-mib", type=int, default=64)
    args = ap.parse_args()
    targets = args.targets.split(",")
    throughput(targets, args.n, args.gemm)
    bandwidth(targets[0], args.copy_mib << 20)


if __name__ == "__main__":
    main()
