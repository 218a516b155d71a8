"""Tiled matrix multiply on the GPU: the corpus's gemm_tiled kernel (16x16 tiles staged in LDS, barriers
between the loads and the multiply-adds), checked against numpy.

    python examples/matmul.py [--m 256 --n 256 --k 256]   (KFDTRACE_EMULATE=gfx942 ...)
"""

from __future__ import annotations

import argparse
import time

from kfdtrace.driver import System
from kfdtrace.driver.kernels.device import corpus, run_case
from kfdtrace.driver.kernels.reference import sized


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--m", type=int, default=256)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--k", type=int, default=256)
    args = ap.parse_args()
    case = sized("gemm_tiled", m=args.m, n=args.n, k=args.k)
    values = case.inputs()
    with System.open() as system:
        gpu = system.devices[0]
        t0 = time.perf_counter()
        out = run_case(gpu, corpus(gpu), case, values)
        seconds = time.perf_counter() - t0
        case.verify(values, out)  # CaseMismatch names the first wrong element
        print(f"gemm_tiled {args.m}x{args.k} @ {args.k}x{args.n} on {gpu}: ok in {seconds:.3f} s")


if __name__ == "__main__":
    main()
