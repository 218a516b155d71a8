"""Kernel arguments that change between a dispatch's doorbell and its run (campaigns 77 and 80): the replay gives a
dispatch its arguments in place where the ones rewritten for the target are the bytes at their recorded address,
holds back a CPU write or free into them until the queue ran the dispatch or stands at a wait before it (the
recording's CPU may have polled the read pointer, which the trace does not hold), and refuses (exit 3) what a copy
taken at the doorbell cannot follow."""

from __future__ import annotations

import functools
import os
import shutil
import sys
import time

import numpy as np
import pytest

from kfdtrace.driver import System
from kfdtrace.driver.kernargs import Launch, pack
from kfdtrace.replay.argument_spans import ArgumentSpans, Late, LateCursor
from kfdtrace.replay.engine import EXIT_OK, EXIT_UNSUPPORTED
from tests.test_dispatch_memo import captured, replayed

# kernels for the workloads below whose arguments change between a dispatch's doorbell and its run
CHANGING_ARGUMENTS = r"""
__kernel void acc(__global uint* out, uint v, uint m) {
  uint i = __builtin_amdgcn_workitem_id_x();
  out[i] = out[i] * m + v + i;
}
__kernel void own(__global uint* out, uint v, uint m) {  /* writes v + 100 over its own v */
  uint i = __builtin_amdgcn_workitem_id_x();
  out[i] = out[i] * m + v + i;
  __constant uint* args = (__constant uint*)__builtin_amdgcn_kernarg_segment_ptr();
  if (i == 0) ((__global uint*)(ulong)args)[2] = v + 100;
}
__kernel void none() { }"""


class ArgumentsAt:
    """Kernel-argument memory at the start of a buffer (a KernargSource's memory), written only if `write`."""

    def __init__(self, buffer, write: bool = True):
        self.buffer, self.va, self.writes = buffer, buffer.va, write

    def write(self, data: bytes, offset: int = 0) -> None:
        if self.writes:
            self.buffer.write(data, offset)

    def free(self) -> None:
        pass


def launched(q, kernel, launch, args, memory) -> None:
    """One dispatch on a PM4 or an AQL queue, its arguments in `memory`."""
    if hasattr(q, "barrier_value"):
        packet, _ = q.launch(kernel, launch, args, kernarg=lambda size, align: memory)
        q.submit(packet)
    else:
        q.emit(q.launch(kernel, launch, args, kernarg=lambda size, align: memory)).submit()


def set_up(system: System, code: str, *names: str) -> tuple:
    """The first GPU, the kernels `names` of the code object in `code`, a kernargs buffer, a zeroed `out` of 64 words
    and a launch of 64 threads."""
    gpu = system.devices[0]
    program = gpu.load(os.path.join(code, f"k.{gpu.target.name}.co"), "k")
    arguments = gpu.alloc(4096, "gtt", name="kernargs", role="kernargs")
    out = gpu.alloc(64 * 4, "gtt", name="out")
    out.write(bytes(256))
    return gpu, *(program.kernel(name) for name in names), arguments, out, Launch.of((64,), (64,))


def late_arguments(system: System, aql: bool = False, code: str = "") -> None:
    """The queue waits before a dispatch of `acc`; the CPU writes the arguments it runs with (v=7) after the doorbell
    (at which they held v=1), then lets the queue go: the GPU reads them as the CPU left them."""
    from kfdtrace.driver.aql import SignalCondition
    from kfdtrace.driver.aql_queue import HsaSignal

    gpu, kernel, arguments, out, launch = set_up(system, code, "acc")
    go = HsaSignal(system, 1, name="go") if aql else system.semaphore("go")
    q = gpu.aql_queue(name="q") if aql else gpu.compute_queue(name="q")
    if aql:
        q.barrier_value(go, 0, SignalCondition.EQ)
    else:
        q.wait(go, 1)
    launched(q, kernel, launch, pack(kernel.kernel.metadata, (out, np.uint32(1), np.uint32(3)), launch),
             ArgumentsAt(arguments))
    arguments.write(pack(kernel.kernel.metadata, (out, np.uint32(7), np.uint32(3)), launch).data)
    go.signal(0 if aql else 1)
    q.sync(timeout=120)
    assert np.frombuffer(out.read(), np.uint32)[:2].tolist() == [7, 8]
    q.destroy()


def own_arguments(system: System, aql: bool = False, code: str = "") -> None:
    """Three dispatches of `own` from the same arguments, written once: each runs with those the one before left."""
    gpu, kernel, arguments, out, launch = set_up(system, code, "own")
    args = pack(kernel.kernel.metadata, (out, np.uint32(1), np.uint32(3)), launch)
    q = gpu.aql_queue(name="q") if aql else gpu.compute_queue(name="q")
    for i in range(3):
        launched(q, kernel, launch, args, ArgumentsAt(arguments, write=i == 0))
        q.sync(timeout=120)
    assert np.frombuffer(out.read(), np.uint32)[0] == ((0 * 3 + 1) * 3 + 101) * 3 + 201  # v: 1, then 101, 201
    q.destroy()


@pytest.mark.parametrize("workload", ["late_arguments", "own_arguments"])
@pytest.mark.parametrize("queue", ["pm4", "aql"])
def test_kernel_arguments_that_change_after_the_doorbell_are_read_when_the_dispatch_runs(tmp_path, workload, queue):
    """Campaign 77: the replay copied each dispatch's arguments at its doorbell, so CPU writes a GPU wait orders
    after it, and a kernel's writes over its own, never reached the dispatches that read them: false DIVERGED. Where
    the arguments rewritten for the target are the bytes at their recorded address, the dispatch is given that."""
    built_kernels(tmp_path)
    path = captured(tmp_path, __file__, workload, f"code={tmp_path}", *(["aql"] if queue == "aql" else []))
    for target in (["--emulate-recorded", "--loop", "2"], ["--emulate", "gfx1100", "--code-objects", str(tmp_path)]):
        status, report = replayed(path, *target)
        assert status == EXIT_OK, report
        assert all(loop[0]["verified"] for loop in report["loops"])
    if workload == "late_arguments":  # moved, they are copied at the doorbell: the CPU's write is refused, not missed
        status, report = replayed(path, "--emulate-recorded", "--relocate", "always")
        assert status == EXIT_UNSUPPORTED
        assert "changes the kernel arguments of a dispatch of submission" in report["error"]


def gpu_written(system: System, code: str = "", how: str = "data") -> None:
    """The GPU writes a dispatch's argument v (1 -> 7) after its doorbell, before it runs: a WRITE_DATA ahead of it
    in the same PM4 submission (how=data) or indirect buffer (how=indirect), or an SDMA copy that the compute queue
    waits for (how=sdma)."""
    gpu, kernel, arguments, out, launch = set_up(system, code, "acc")
    old = pack(kernel.kernel.metadata, (out, np.uint32(1), np.uint32(3)), launch)
    q = gpu.compute_queue(name="q")
    if how == "data":
        q.write_data(arguments, np.uint32(7).tobytes(), offset=8)
        launched(q, kernel, launch, old, ArgumentsAt(arguments))
    elif how == "indirect":  # the two packets in an indirect buffer
        builder = gpu.compute_queue(name="builder")
        builder.write_data(arguments, np.uint32(7).tobytes(), offset=8)
        builder.emit(q.launch(kernel, launch, old, kernarg=functools.partial(lambda at, size, align: at,
                                                                             ArgumentsAt(arguments))))
        body = b"".join(builder.discard())
        ib = gpu.alloc(4096, "gtt", name="ib")
        ib.write(body)
        q.indirect(ib, len(body)).submit()
        builder.destroy()
    else:
        source = gpu.alloc(4096, "gtt", name="source")
        source.write(np.uint32(7).tobytes())
        copied, sdma = system.semaphore("copied"), gpu.sdma_queue(name="s")
        q.wait(copied, 1)
        launched(q, kernel, launch, old, ArgumentsAt(arguments))
        sdma.copy(arguments, source, 4, dst_offset=8)
        sdma.signal(copied, 1)
        sdma.submit()
    q.sync(timeout=120)
    assert np.frombuffer(out.read(), np.uint32)[:2].tolist() == [7, 8]
    q.destroy()


def polled(system: System, aql: bool = False, code: str = "", free: bool = False) -> None:
    """Each dispatch's arguments in a kernargs buffer that the CPU rewrites for the next (or frees, `free`) as soon as
    the queue's read pointer is past it, as runtimes do: no signal or event wait is recorded."""
    gpu, kernel, arguments, out, launch = set_up(system, code, "acc")
    q = gpu.aql_queue(name="q") if aql else gpu.compute_queue(name="q")
    for i in range(12):
        arguments = arguments or gpu.alloc(4096, "gtt", name="kernargs", role="kernargs")
        args = pack(kernel.kernel.metadata, (out, np.uint32(i + 1), np.uint32(3)), launch)
        memory = functools.partial(lambda at, size, align: at, ArgumentsAt(arguments))
        if aql:
            end = q.submit(q.launch(kernel, launch, args, kernarg=memory)[0]) + 1
        else:
            end = q.emit(q.launch(kernel, launch, args, kernarg=memory)).submit()
        while (q.read_index if aql else q.rptr) < end:
            time.sleep(0.0005)
        if free:
            arguments.free()
            arguments = None
    q.sync(timeout=120)
    q.destroy()


def indirect(system: System, code: str = "", late: bool = False, unmap: bool = False) -> None:
    """Dispatches of `acc` in indirect buffers, their arguments at one address: (late) one behind a wait, its
    arguments written after the doorbell (v 1 -> 7); else six, the CPU rewriting the arguments for the next once the
    read pointer is past the one before (or, `unmap`, giving each its own buffer, unmapped from the GPU then)."""
    gpu, kernel, arguments, out, launch = set_up(system, code, "acc")
    q, builder = gpu.compute_queue(name="q"), gpu.compute_queue(name="builder")
    go = system.semaphore("go")
    for i in range(1 if late else 6):
        if unmap:
            arguments = gpu.alloc(4096, "gtt", name=f"kernargs{i}", role="kernargs")
        args = pack(kernel.kernel.metadata, (out, np.uint32(i + 1), np.uint32(3)), launch)
        kernarg = functools.partial(lambda at, size, align: at, ArgumentsAt(arguments))
        builder.emit(q.launch(kernel, launch, args, kernarg=kernarg))
        body = b"".join(builder.discard())
        ib = gpu.alloc(4096, "gtt", name=f"ib{i}")
        ib.write(body)
        if late:
            q.wait(go, 1)
        end = q.indirect(ib, len(body)).submit()
        if late:
            arguments.write(pack(kernel.kernel.metadata, (out, np.uint32(7), np.uint32(3)), launch).data)
            go.signal(1)
        while q.rptr < end:
            time.sleep(0.0005)
        if unmap:
            arguments.unmap_from(gpu)
    q.sync(timeout=120)
    if late:
        assert np.frombuffer(out.read(), np.uint32)[:2].tolist() == [7, 8]
    q.destroy()
    builder.destroy()


def beside_a_wait(system: System, code: str = "", first: bool = False) -> None:
    """One submission [`none` (no arguments), wait, `acc`] whose `acc` arguments the CPU writes after the doorbell;
    or (first) [`acc`, signal, wait, `none`], the CPU rewriting `acc`'s arguments once the signal says it ran, for
    one more `acc` after."""
    gpu, acc, none, arguments, out, launch = set_up(system, code, "acc", "none")
    q, go, done = gpu.compute_queue(name="q"), system.semaphore("go"), system.semaphore("done")
    nothing = pack(none.kernel.metadata, (), launch)
    kernarg = functools.partial(lambda at, size, align: at, ArgumentsAt(arguments))
    if not first:
        q.emit(q.launch(none, launch, nothing)).wait(go, 1)
    q.emit(q.launch(acc, launch, pack(acc.kernel.metadata, (out, np.uint32(1), np.uint32(3)), launch),
                    kernarg=kernarg))
    if first:
        q.signal(done, 1).wait(go, 1).emit(q.launch(none, launch, nothing))
    q.submit()
    if first:
        done.wait(1, 120)
    arguments.write(pack(acc.kernel.metadata, (out, np.uint32(7), np.uint32(3)), launch).data)
    go.signal(1)
    if first:
        launched(q, acc, launch, pack(acc.kernel.metadata, (out, np.uint32(7), np.uint32(3)), launch),
                 ArgumentsAt(arguments, write=False))
    q.sync(timeout=120)
    assert np.frombuffer(out.read(), np.uint32)[0] == (7 if not first else 10)
    q.destroy()


def built_kernels(tmp_path) -> None:
    from tests.test_shader import built

    for target in ("gfx942", "gfx1100"):
        shutil.copy(built(tmp_path, CHANGING_ARGUMENTS, target), tmp_path / f"k.{target}.co")


@pytest.mark.parametrize("how", ["data", "indirect", "sdma"])
def test_kernel_arguments_a_packet_writes_after_the_doorbell_are_read_in_place_and_refused_as_a_copy(tmp_path, how):
    """Campaign 80: a WRITE_DATA or an SDMA copy that writes a dispatch's arguments after its doorbell reaches the
    dispatch reading them in place; a copy taken at the doorbell could not hold it: refused, not DIVERGED."""
    built_kernels(tmp_path)
    path = captured(tmp_path, __file__, "gpu_written", f"code={tmp_path}", f"how={how}")
    status, report = replayed(path, "--emulate-recorded", "--loop", "2")
    assert status == EXIT_OK, report
    assert all(loop[0]["verified"] for loop in report["loops"])
    for moved in (["--relocate", "always"], ["--queue-type", "aql"]):
        status, report = replayed(path, "--emulate-recorded", *moved, "--timeout", "2")
        assert status == EXIT_UNSUPPORTED, report
        assert "kernel arguments" in report["error"] and "Replay with the buffers in place" in report["error"]


@pytest.mark.parametrize("free", [False, True])
@pytest.mark.parametrize("queue", ["pm4", "aql"])
def test_kernel_arguments_rewritten_or_freed_once_the_queue_ran_them_replay_everywhere(tmp_path, queue, free):
    """Campaign 80: a program reusing (or freeing) kernel-argument memory once it sees the read pointer past the
    dispatch records no wait; the replay's CPU, ahead of its queue, must not write there before the queue ran it,
    whether the dispatch reads the arguments in place or from a copy (moved, or two instances)."""
    built_kernels(tmp_path)
    path = captured(tmp_path, __file__, "polled", f"code={tmp_path}", *(["aql"] if queue == "aql" else []),
                    *(["free"] if free else []))
    for how in ([], ["--relocate", "always"], ["--concurrent", "2"]):
        status, report = replayed(path, "--emulate-recorded", *how)
        assert status == EXIT_OK, (how, report)
        assert all(instance["verified"] for loop in report["loops"] for instance in loop)


@pytest.mark.parametrize("late", [False, True])
def test_dispatches_in_indirect_buffers_are_held_for_and_refused_as_copies_like_those_on_the_ring(tmp_path, late):
    """Campaign 82: the survey does not follow indirect buffers, so their dispatches' arguments had no hold (the
    replay's CPU rewrote them before the queue ran them: DIVERGED) and no refusal as copies. The replay notes where
    they read them as it translates them."""
    built_kernels(tmp_path)
    path = captured(tmp_path, __file__, "indirect", f"code={tmp_path}", *(["late"] if late else []))
    status, report = replayed(path, "--emulate-recorded", "--loop", "2")
    assert status == EXIT_OK, report
    status, report = replayed(path, "--emulate-recorded", "--relocate", "always")
    if late:
        assert status == EXIT_UNSUPPORTED and "changes the kernel arguments" in report["error"], report
    else:
        assert status == EXIT_OK, report


def test_an_unmap_of_the_arguments_of_dispatches_in_indirect_buffers_is_held_until_they_ran(tmp_path):
    """An unmap that takes the kernel arguments of dispatches in indirect buffers from the GPU waits, as a free does,
    until the queue ran them (the replay's CPU is ahead of its queue: unmapped before, they faulted: a false HANG or
    DIVERGED)."""
    built_kernels(tmp_path)
    path = captured(tmp_path, __file__, "indirect", f"code={tmp_path}", "unmap")
    for how in (["--loop", "2"], ["--relocate", "always"]):
        status, report = replayed(path, "--emulate-recorded", *how)
        assert status == EXIT_OK, (how, report)
        assert all(instance["verified"] for loop in report["loops"] for instance in loop)


@pytest.mark.parametrize("first", [False, True])
def test_a_kernel_without_arguments_beside_a_late_write_counts_neither_as_copied_nor_unrun(tmp_path, first):
    """Campaign 82: a dispatch without arguments took memo memory, and made its submission count as copied on the
    next loop (false exit 3); and counted apart from those with arguments, it made one that ran look unrun."""
    built_kernels(tmp_path)
    path = captured(tmp_path, __file__, "beside_a_wait", f"code={tmp_path}", *(["first"] if first else []))
    for how in (["--loop", "2"], *([["--relocate", "always"], ["--concurrent", "2"]] if first else [])):
        status, report = replayed(path, "--emulate-recorded", *how)
        assert status == EXIT_OK, (how, report)


def test_argument_spans_find_the_dispatches_a_range_lands_in():
    spans = ArgumentSpans()
    spans.add(1, 0x10f80, 0x100, doorbell=5, after=0)  # across a page boundary
    spans.add(1, 0x10f80, 0x100, doorbell=9, after=2)  # the same address on the same queue: the later stands
    spans.add(2, 0x12000, 0x40, doorbell=7, after=None)
    assert spans.hits(0x11070, 4) == [(1, 9, 2)]
    assert spans.hits(0x11080, 0xf80) == []  # just past the end of the first, short of the second
    assert spans.hits(0, 1 << 40) == [(1, 9, 2), (2, 7, None)]  # a big range looks at the pages that hold spans
    spans.drop(0x10000, 0x2000)
    assert spans.hits(0, 1 << 40) == [(2, 7, None)] and 0x10 not in spans.pages and 0x11 not in spans.pages


def test_late_records_keep_the_last_dispatch_of_each_queue_and_are_walked_in_order():
    late = Late()
    late.add(10, [(1, 5, 0), (1, 9, 2), (2, 7, None)])
    late.add(10, [(1, 9, 1)])  # another packet of the same doorbell: merged, the later dispatch of doorbell 9 kept
    late.add(12, [(1, 3, None)])
    late.done()
    assert list(late.doorbells) == [3, 7, 9]  # 5: its queue having run doorbell 9's, it ran doorbell 5's
    walk = LateCursor(late)
    assert walk.next == 10 and walk.hits(10) == [(1, 9, 1), (2, 7, None)]
    assert walk.next == 12 and walk.hits(11) == [] and walk.hits(12) == [(1, 3, None)] and walk.hits(13) == []
    assert [walk.flagged(n) for n in (3, 4, 9, 10)] == [True, False, True, False]


if __name__ == "__main__":  # a workload above, as `capture run` runs a script: its name, then "aql", "k=v"
    with System.open() as open_system:
        options = dict(a.partition("=")[::2] for a in sys.argv[2:])
        globals()[sys.argv[1]](open_system, **{k: v or True for k, v in options.items()})
