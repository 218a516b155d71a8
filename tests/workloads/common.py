"""Helpers the workloads share: byte-exact checks with readable messages, seeded data, and `main()`.

Every workload module has `run(system)` (its work on an open kfdtrace.driver.System, checked against
numpy/Python expectations; AssertionError when a byte is wrong), `GPUS` (how many GPUs it needs) and `main()`
(opens System.open() and runs it), so `KFDTRACE_EMULATE=gfx1100 python tests/workloads/<name>.py` works.
"""

from __future__ import annotations

import errno
import os
import sys
import time

import numpy as np

from kfdtrace.driver import System
from kfdtrace.driver.errors import DeviceError

# Seconds a workload waits for the GPU: the emulated copies here take milliseconds, so a wait this long is a
# hang, reported by the driver's WaitTimeout (queues' rptr/wptr) instead of stalling the matrix.
TIMEOUT = 3.0
KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def random_bytes(gen: np.random.Generator, n: int) -> np.ndarray:
    """n random bytes as a uint8 array (rng.bytes is much faster than integers() for MiBs)."""
    return np.frombuffer(gen.bytes(n), np.uint8).copy()


def as_u8(data) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8)
    return np.frombuffer(bytes(data), np.uint8)


def expect_bytes(what: str, got, want) -> None:
    """Byte-exact comparison; the message names the first differing offset, how many bytes differ, and
    16 bytes of each side around it."""
    g, w = as_u8(got), as_u8(want)
    if g.size != w.size:
        raise AssertionError(f"{what}: {g.size} bytes, expected {w.size}")
    diff = np.flatnonzero(g != w)
    if diff.size:
        first = int(diff[0])
        lo = first - first % 16
        raise AssertionError(f"{what}: {diff.size} of {g.size} bytes differ, first at +{first:#x}: "
                             f"expected {w[lo:lo + 16].tobytes().hex(' ')} got {g[lo:lo + 16].tobytes().hex(' ')}")


def expect_u32(what: str, got: bytes, want: int) -> None:
    value = int.from_bytes(got[:4], "little")
    if value != want:
        raise AssertionError(f"{what}: {value:#x}, expected {want:#x}")


def is_enomem(exc: BaseException) -> bool:
    return isinstance(exc, DeviceError) and exc.errno == errno.ENOMEM


def need_gpus(system: System, n: int, name: str) -> None:
    if len(system.devices) < n:
        raise SystemExit(f"{name} needs {n} GPUs, this system has {len(system.devices)} "
                         f"(try KFDTRACE_EMULATE={','.join(['gfx942'] * n)})")


def run_as_script(module_name: str) -> None:
    """Run the workload module `module_name` on System.open() and say how long it took."""
    module = sys.modules[module_name]
    with System.open() as system:
        need_gpus(system, getattr(module, "GPUS", 1), module.__name__)
        t0 = time.perf_counter()
        module.run(system)
        name = os.path.splitext(os.path.basename(module.__file__))[0]
        print(f"{name} on {', '.join(map(str, system.devices))}: ok "
              f"({time.perf_counter() - t0:.3f} s)")
