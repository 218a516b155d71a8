"""Vector add on the GPU: the corpus's vector_add kernel (real machine code, built by clang-19) over N floats.

On a real GPU the hardware runs it; on the emulated GPU the ISA interpreter executes the same code.

    python examples/vector_add.py [--n 1048576] [--aql] [--bundle]   (KFDTRACE_EMULATE=gfx1100 ...)
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from kfdtrace.driver import System
from kfdtrace.driver.kernels.build import BUILT
from kfdtrace.driver.kernels.device import corpus


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1 << 20)
    ap.add_argument("--aql", action="store_true", help="dispatch through an AQL queue instead of PM4")
    ap.add_argument("--bundle", action="store_true",
                    help="load the corpus's offload bundle (every target's build: its trace replays on every family)")
    args = ap.parse_args()
    n = args.n
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(n, np.float32), rng.standard_normal(n, np.float32)
    with System.open() as system:
        gpu = system.devices[0]
        program = gpu.load(BUILT / "corpus.hipfb") if args.bundle else corpus(gpu)
        kernel = program.kernel("vector_add")
        bufs = [gpu.alloc(n * 4, "gtt", name=name) for name in ("a", "b", "c")]
        bufs[0].write(a)
        bufs[1].write(b)
        q = gpu.aql_queue(name="vector add") if args.aql else gpu.compute_queue(name="vector add")
        t0 = time.perf_counter()
        q.dispatch(kernel, (n,), (256,), *bufs, np.uint32(n))
        q.sync(timeout=600)
        seconds = time.perf_counter() - t0
        c = np.frombuffer(bufs[2].read(0, n * 4), np.float32)
        if not np.array_equal(c, a + b):
            raise SystemExit(f"vector_add on {gpu}: {int((c != a + b).sum())} of {n} sums are wrong")
        print(f"vector_add of {n} floats on {gpu} ({'AQL' if args.aql else 'PM4'}): ok in {seconds:.3f} s")


if __name__ == "__main__":
    main()
