"""Run the corpus's kernels on the host CPU, to check the numpy references against the kernels themselves.

Nothing here runs on a GPU or the emulator: clang-19 compiles the same OpenCL C sources for x86-64 (prelude.h
answers the work-item functions from a small C harness instead of amdgcn builtins), and every work-item of a
workgroup runs on a thread of its own, one workgroup at a time, so barriers, __local arrays (static storage on
the host), dynamic __local arguments and atomics behave as on the device. Waves are 32 lanes wide here.

A disagreement between this run and `Case.verify` is a fault in a kernel or in its reference, found before any
emulator or driver is involved. Slow (a thread per work-item) but small: the whole corpus runs in seconds.
"""

from __future__ import annotations

import ctypes
import itertools
import shutil
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from kfdtrace.driver.kernels.build import SOURCE_DIR, BuildError, sources
from kfdtrace.driver.kernels.reference import Buffer, Case, Local, Scalar, Values

__all__ = ["HostCorpus", "build_host"]

CLANG = "clang-19"
HOST_CFLAGS = ("-x", "cl", "-cl-std=CL2.0", "-cl-no-stdinc", "-target", "x86_64-unknown-linux-gnu", "-O1", "-fPIC")
_CTYPES = {"int32": ctypes.c_int32, "uint32": ctypes.c_uint32, "int64": ctypes.c_int64, "uint64": ctypes.c_uint64,
           "float32": ctypes.c_float, "float64": ctypes.c_double}

# The harness: the dispatch's geometry, the current workgroup, each thread's work-item, a barrier for the group.
HARNESS = r"""
#include <pthread.h>
#include <stdint.h>
static uint32_t dims, grid[3], block[3], group[3];
static __thread uint32_t item[3], linear;
static pthread_barrier_t bar;
static int lanes[1024];
void kh_dispatch(uint32_t d, uint32_t g0, uint32_t g1, uint32_t g2, uint32_t b0, uint32_t b1, uint32_t b2) {
    dims = d; grid[0] = g0; grid[1] = g1; grid[2] = g2; block[0] = b0; block[1] = b1; block[2] = b2;
}
void kh_group(uint32_t x, uint32_t y, uint32_t z, uint32_t threads) {
    group[0] = x; group[1] = y; group[2] = z;
    pthread_barrier_init(&bar, 0, threads);
}
void kh_end_group(void) { pthread_barrier_destroy(&bar); }
void kh_item(uint32_t x, uint32_t y, uint32_t z, uint32_t lin) { item[0] = x; item[1] = y; item[2] = z; linear = lin; }
uint32_t kh_local_id(uint32_t d) { return d < 3 ? item[d] : 0; }
uint32_t kh_group_id(uint32_t d) { return d < 3 ? group[d] : 0; }
uint32_t kh_work_dim(void) { return dims; }
uint32_t kh_enqueued_local_size(uint32_t d) { return d < 3 ? block[d] : 1; }
uint32_t kh_local_size(uint32_t d) {
    if (d >= 3) return 1;
    return group[d] < grid[d] / block[d] ? block[d] : grid[d] % block[d];
}
uint32_t kh_num_groups(uint32_t d) { return d < 3 ? (grid[d] + block[d] - 1) / block[d] : 1; }
uint32_t kh_global_size(uint32_t d) { return d < 3 ? grid[d] : 1; }
void kh_barrier(void) { pthread_barrier_wait(&bar); }
uint32_t kh_lane(void) { return linear & 31; }
int kh_bpermute(int byte_index, int v) {
    lanes[linear] = v;
    pthread_barrier_wait(&bar);
    int got = lanes[(linear & ~31u) + ((uint32_t)byte_index / 4 & 31)];
    pthread_barrier_wait(&bar);
    return got;
}
uint32_t kh_dpp_row(uint32_t v, uint32_t ctrl) {  /* DPP row_shr:n (0x11n, 0 past the row) and row_share:n (0x15n) */
    uint32_t at = linear & 15, n = ctrl & 15, src = ctrl >> 4 == 0x15 ? n : at - n;
    lanes[linear] = (int)v;
    pthread_barrier_wait(&bar);
    uint32_t got = ctrl >> 4 == 0x11 && at < n ? 0u : (uint32_t)lanes[(linear & ~15u) + src];
    pthread_barrier_wait(&bar);
    return got;
}
"""


def _run(argv: list[str], cwd: Path | None = None) -> None:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise BuildError(f"{Path(argv[0]).name} failed ({done.returncode}): {done.stderr.strip()}")


def build_host(out: Path, src_dir: Path = SOURCE_DIR) -> Path:
    """Compile every source and the harness for the host into `out`/corpus-host.so."""
    clang = shutil.which(CLANG)
    if clang is None:
        raise BuildError(f"{CLANG} not found on PATH: the host run of the corpus needs it")
    out.mkdir(parents=True, exist_ok=True)
    objs = []
    for src in sources(src_dir):
        obj = out / f"{src.stem}-host.o"
        _run([clang, *HOST_CFLAGS, "-c", src.name, "-o", str(obj)], cwd=src.parent)
        objs.append(str(obj))
    harness = out / "harness.c"
    harness.write_text(HARNESS)
    lib = out / "corpus-host.so"
    _run([clang, "-O1", "-fPIC", "-shared", "-pthread", str(harness), *objs, "-o", str(lib)])
    return lib


class HostCorpus:
    """The host build of the corpus: `run(case, values)` gives what the kernel leaves in its output buffers."""

    def __init__(self, library: Path):
        self.lib = ctypes.CDLL(str(library))
        self.lib.kh_dispatch.argtypes = [ctypes.c_uint32] * 7
        self.lib.kh_group.argtypes = [ctypes.c_uint32] * 4
        self.lib.kh_item.argtypes = [ctypes.c_uint32] * 4

    def run(self, case: Case, values: Values) -> dict[str, np.ndarray]:
        """Run `case.kernel` over its grid on copies of `values`; returns the output buffers."""
        arrays = {a.name: values[a.name].copy() for a in case.args if isinstance(a, Buffer)}
        kernel = getattr(self.lib, case.kernel)
        kernel.restype = None
        kernel.argtypes = [_CTYPES[a.dtype] if isinstance(a, Scalar) else ctypes.c_void_p for a in case.args]
        grid = [*case.grid, 1, 1][:3]
        block = [*case.block, 1, 1][:3]
        self.lib.kh_dispatch(len(case.grid), *grid, *block)
        groups = [range(-(-g // b)) for g, b in zip(grid, block, strict=True)]
        for gz, gy, gx in itertools.product(*groups[::-1]):
            sizes = [min(b, g - i * b) for g, b, i in zip(grid, block, (gx, gy, gz), strict=True)]
            locals_ = {a.name: np.zeros(a.nbytes, np.uint8) for a in case.args if isinstance(a, Local)}
            args = [self._arg(a, arrays, locals_, values) for a in case.args]
            self._group(kernel, args, (gx, gy, gz), sizes, block)
        return {b.name: arrays[b.name] for b in case.outputs}

    @staticmethod
    def _arg(a: Buffer | Scalar | Local, arrays: Mapping[str, np.ndarray], locals_: Mapping[str, np.ndarray],
             values: Values) -> object:
        if isinstance(a, Scalar):
            return values[a.name].item()
        return (arrays[a.name] if isinstance(a, Buffer) else locals_[a.name]).ctypes.data

    def _group(self, kernel: ctypes._CFuncPtr, args: list[object], group: tuple[int, int, int], sizes: list[int],
               block: list[int]) -> None:
        items = list(itertools.product(*(range(s) for s in sizes[::-1])))
        self.lib.kh_group(*group, len(items))

        def work_item(z: int, y: int, x: int) -> None:
            self.lib.kh_item(x, y, z, (z * block[1] + y) * block[0] + x)
            kernel(*args)

        threads = [threading.Thread(target=work_item, args=item) for item in items]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.lib.kh_end_group()
