"""Run the corpus's cases on a device (real or emulated) through a compute queue: PM4 or AQL.

`run_case` copies a case's inputs into GPU buffers, dispatches the kernel over the case's grid, waits, and
returns what the kernel left in its output buffers, for `Case.verify` to check against numpy. The selftest,
the tests and the benchmarks run kernels this way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from kfdtrace.driver.kernargs import Local as LocalArg
from kfdtrace.driver.kernels.build import BUILT, object_path
from kfdtrace.driver.kernels.reference import Buffer, Case, Local, Values

if TYPE_CHECKING:
    from kfdtrace.driver.memory import Buffer as GpuBuffer
    from kfdtrace.driver.program import Program
    from kfdtrace.driver.system import Device

__all__ = ["BUILT", "QUEUES", "corpus", "kernel_arguments", "run_case"]

QUEUES = ("pm4", "aql")


def corpus(device: Device, wave64: bool = False) -> Program:
    """The corpus built for the device's target (its wave64 build, on RDNA), loaded on it."""
    return device.load(object_path(device.target.name, BUILT, wave64))


def kernel_arguments(device: Device, case: Case, values: Values) -> tuple[list[Any], dict[str, GpuBuffer]]:
    """The dispatch's arguments for `values` (buffers holding the arrays, scalars, dynamic LDS sizes) and the
    buffers by argument name."""
    args: list[Any] = []
    buffers: dict[str, GpuBuffer] = {}
    for a in case.args:
        if isinstance(a, Buffer):
            array = values[a.name]
            buf = device.alloc(max(array.nbytes, 4), "gtt", name=f"{case.kernel}.{a.name}")
            buf.write(array.tobytes())
            buffers[a.name] = buf
            args.append(buf)
        elif isinstance(a, Local):
            args.append(LocalArg(a.nbytes))
        else:
            args.append(values[a.name])
    return args, buffers


def run_case(device: Device, program: Program, case: Case, values: Values, queue: str = "pm4",
             timeout: float = 300.0) -> dict[str, np.ndarray]:
    """Dispatch `case` with `values` on a new queue of kind `queue` ("pm4" or "aql"); its outputs."""
    args, buffers = kernel_arguments(device, case, values)
    q = device.compute_queue(name=f"run {case.kernel}") if queue == "pm4" else \
        device.aql_queue(name=f"run {case.kernel}")
    try:
        q.dispatch(program.kernel(case.kernel), case.grid, case.block, *args)
        q.sync(timeout=timeout)
        out = {}
        for a in case.outputs:
            want = values[a.name]
            out[a.name] = np.frombuffer(buffers[a.name].read(0, want.nbytes), want.dtype).reshape(want.shape).copy()
        return out
    finally:
        q.destroy()
        for buf in buffers.values():
            buf.free()
