"""Cached translation of dispatches (issue 13): a loop after the first takes each submission that launches kernels
from the memo the first loop filled, and a submission is taken from it only while everything its translation read
reads the same: the queue's registers, the kernel arguments in recorded memory, the code object loaded for it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from kfdtrace.driver import System
from kfdtrace.driver.kernargs import Launch, pack
from kfdtrace.driver.kernels.build import BUILT, object_path
from kfdtrace.driver.kernels.device import corpus
from kfdtrace.driver.ranges import RangeMap
from kfdtrace.replay.dispatch_memo import DispatchMemo, Inputs, Kept, RecordedMemory
from kfdtrace.replay.engine import EXIT_DIVERGED, EXIT_OK

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(HERE, "..", "examples", "many_dispatches.py")
N = 256  # floats each dispatch adds


def captured(tmp_path, *argv: str) -> str:
    """A trace of a script recorded on an emulated gfx942 in a process of its own, as `capture run` records one:
    a replay in a fresh process finds the recorded addresses free (the memo keeps translations only then)."""
    path = str(tmp_path / "t.kfdtrace")
    done = subprocess.run([sys.executable, "-m", "kfdtrace.capture.cli", "run", "-o", path, *argv],
                          env={**os.environ, "KFDTRACE_EMULATE": "gfx942"}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return path


def replayed(path: str, *argv: str, prelude: str = "") -> tuple[int, dict]:
    """`replay PATH --json ARGV` in a process of its own (after the Python of `prelude`): its exit status and
    report."""
    code = f"{prelude}\nfrom kfdtrace.replay.cli import main\nmain()"
    done = subprocess.run([sys.executable, "-c", code, path, "--json", *argv], capture_output=True, text=True)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def cached(report: dict) -> list[int]:
    """Each loop's submissions taken from the memo."""
    return [loop[0]["cached_submissions"] for loop in report["loops"]]


# memos that do not compare the kernel arguments (as if the translation had read none), or the registers (as if
# they were whatever they are when it is taken again)
BLIND_TO_KERNARGS = """
from kfdtrace.replay.dispatch_memo import DispatchMemo
inputs = DispatchMemo.inputs
DispatchMemo.inputs = lambda memo: (lambda i: i and i._replace(spans=()))(inputs(memo))
"""
BLIND_TO_REGISTERS = """
from kfdtrace.replay.dispatch_memo import DispatchMemo
class Anything(dict):
    __hash__ = None
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
inputs = DispatchMemo.inputs
DispatchMemo.inputs = lambda memo: (lambda i: i and i._replace(before=Anything()))(inputs(memo))
"""


# (recorded queues, --queue-type, submissions the first loop and each later one take from the memo): every one with
# a dispatch, one a dispatch on AQL, 4 dispatches on PM4; AQL on PM4 queues, whose every packet becomes PM4
# packets, the barriers of the 4 syncs too, of which the last 3 are the bytes of the first again
QUEUES = [("pm4", "recorded", 0, 6), ("aql", "recorded", 0, 24), ("pm4", "aql", 0, 6), ("aql", "pm4", 3, 28)]


@pytest.mark.parametrize("queues, queue_type, first, later", QUEUES, ids=[f"{q}-on-{t}" for q, t, _, _ in QUEUES])
@pytest.mark.parametrize("emulate", [None, "gfx1100"], ids=["recorded", "gfx1100"])
def test_every_loop_after_the_first_takes_its_dispatches_from_the_memo(tmp_path, queues, queue_type, first, later,
                                                                       emulate):
    # every dispatch's arguments differ
    path = captured(tmp_path, EXAMPLE, "--dispatches", "24", "--batch", "4", "--sync", "8",
                    *(["--aql"] if queues == "aql" else []))
    target = ["--emulate-recorded"]
    if emulate:  # the corpus built for the target, as --code-objects DIR gives it
        shutil.copy(object_path(emulate, BUILT, False), tmp_path / f"corpus.{emulate}.co")
        target = ["--emulate", emulate, "--code-objects", str(tmp_path)]
    status, report = replayed(path, *target, "--queue-type", queue_type, "--loop", "3")
    assert status == EXIT_OK
    assert all(loop[0]["verified"] and not loop[0]["relocated_buffers"] for loop in report["loops"])
    assert cached(report) == [first, later, later]


def same_submission_thrice(system: System, aql: bool = False, role: str = "kernargs") -> None:
    """Three dispatches of vector_add whose submissions are the same bytes (their kernel arguments in the same
    memory) but whose arguments differ: they write c0, c1 and c2. (The last two also start from the same PM4
    registers: those the one before set.)"""
    gpu = system.devices[0]
    kernel = corpus(gpu).kernel("vector_add")
    a, b = (gpu.alloc(N * 4, "gtt", name=x) for x in "ab")
    a.write(np.arange(N, dtype=np.float32))
    b.write(np.full(N, 2, np.float32))
    out = [gpu.alloc(N * 4, "gtt", name=f"c{i}") for i in range(3)]
    kernargs = gpu.alloc(4096, "gtt", name="kernargs", role=role)
    q = gpu.aql_queue(name="q") if aql else gpu.compute_queue(name="q")
    launch = Launch.of((N,), (64,))
    for c in out:
        args = pack(kernel.kernel.metadata, (a, b, c, np.uint32(N)), launch)
        if aql:
            packet, _ = q.launch(kernel, launch, args, kernarg=lambda size, align: kernargs)
            q.submit(packet)
        else:
            q.emit(q.launch(kernel, launch, args, kernarg=lambda size, align: kernargs)).submit()
        q.sync(timeout=120)
    for c in out:
        assert np.frombuffer(c.read(), np.float32)[N - 1] == N + 1
    q.destroy()


@pytest.mark.parametrize("aql", [False, True], ids=["pm4", "aql"])
def test_a_submission_made_again_over_other_kernel_arguments_is_translated_again(tmp_path, aql):
    path = captured(tmp_path, __file__, "same_submission_thrice", *(["aql"] if aql else []))
    status, report = replayed(path, "--emulate-recorded", "--loop", "3")
    assert status == EXIT_OK
    # loops 2 and 3 take all three from the memo, each over the arguments it was made with
    assert cached(report) == [0, 3, 3]
    # the arguments stay in place (the dispatches read them where the recording wrote them): the translation does not
    # depend on them, and a memo that did not compare them takes it rightly
    assert replayed(path, "--emulate-recorded", prelude=BLIND_TO_KERNARGS)[0] == EXIT_OK
    # a queue of the other kind copies them: there, a memo that did not compare them would replay an earlier
    # dispatch again where the next came
    other = ["--emulate-recorded", "--queue-type", "pm4" if aql else "aql"]
    status, report = replayed(path, *other, "--loop", "3")
    assert status == EXIT_OK
    assert cached(report) == ([2, 6, 6] if aql else [0, 3, 3])  # on PM4, the barriers' submissions as well
    status, report = replayed(path, *other, prelude=BLIND_TO_KERNARGS)
    assert status == EXIT_DIVERGED  # c1 never written (c2 from PM4, whose first dispatch set other registers)
    assert report["loops"][0][0]["divergence"]["buffer"] == ("c1" if aql else "c2")


def test_kernel_arguments_in_a_buffer_of_another_role_are_followed(tmp_path):
    """A program's own buffer given to `launch(kernarg=...)` is followed as one of role kernargs is (campaign 91:
    refused, on the recorded family too), in every loop."""
    path = captured(tmp_path, __file__, "same_submission_thrice", "role=user")
    status, report = replayed(path, "--emulate-recorded", "--loop", "2")
    assert status == EXIT_OK, report


def registers_then_launch(system: System) -> None:
    """vector_add's registers in one submission, its DISPATCH_DIRECT in the next; then add_int's registers and the
    same DISPATCH_DIRECT submission: only the registers set before tell the two launches apart."""
    gpu = system.devices[0]
    program = corpus(gpu)
    a, b = (gpu.alloc(N * 4, "gtt", name=x) for x in "ab")
    a.write(np.arange(N, dtype=np.float32))
    b.write(np.full(N, 2, np.float32))
    c = gpu.alloc(N * 4, "gtt", name="c")
    q = gpu.compute_queue(name="q")
    launch = Launch.of((N,), (64,))
    for name in ("vector_add", "add_int"):
        kernel = program.kernel(name)
        packets = q.launch(kernel, launch, pack(kernel.kernel.metadata, (a, b, c, np.uint32(N)), launch))
        at = next(at for at, _, d in q.dialect.spans(packets) if d.name == "DISPATCH_DIRECT")
        q.emit(packets[:at]).submit()
        q.emit(packets[at:]).submit()
        q.sync(timeout=120)
    q.destroy()


def test_the_registers_set_before_a_launch_decide_whether_it_is_taken_from_the_memo(tmp_path):
    path = captured(tmp_path, __file__, "registers_then_launch")
    status, report = replayed(path, "--emulate-recorded", "--loop", "2")
    assert status == EXIT_OK
    assert cached(report) == [0, 4]  # each of the four submissions launching or setting up a launch
    # a memo blind to the registers would launch vector_add again where add_int ran
    assert replayed(path, "--emulate-recorded", prelude=BLIND_TO_REGISTERS)[0] == EXIT_DIVERGED


def test_a_kernel_given_scratch_is_never_taken_from_the_memo(tmp_path):
    path = captured(tmp_path, __file__, "scratch_dispatches")
    status, report = replayed(path, "--emulate-recorded", "--loop", "2")
    assert status == EXIT_OK
    assert all(loop[0]["verified"] for loop in report["loops"])
    assert cached(report) == [0, 0]


def scratch_dispatches(system: System) -> None:
    """Three dispatches of a kernel given scratch."""
    gpu = system.devices[0]
    kernel = corpus(gpu).kernel("mode_scratch")
    assert kernel.kernel.descriptor.private_segment_fixed_size  # the kernel uses scratch
    n = 64
    values, out = gpu.alloc(n * 64, "gtt", name="values"), gpu.alloc(n * 4, "gtt", name="out")
    values.write(np.arange(n * 64, dtype=np.uint8) % 7)
    q = gpu.compute_queue(name="q")
    for _ in range(3):
        q.dispatch(kernel, (n,), (64,), values, out, np.uint32(n)).sync(timeout=120)
    q.destroy()


class Held:
    """A recorded buffer as the replay holds it (what RecordedMemory reads: `view`)."""

    def __init__(self, size: int):
        self.view = memoryview(bytearray(size))


ARGS = 0x10100  # recorded kernel arguments the kept translations read
CODE = 0x90000  # their recorded code object


def kept_three(memo_registers: dict[str, int]) -> tuple[Kept[str], DispatchMemo, Held, memoryview]:
    """Three translations of one submission over three different kernel arguments (16 bytes of 1s, 2s or 3s at
    ARGS), each with its own kernel-argument piece in `pieces` (16 bytes of "a", "b" or "c"), and the memo of a
    queue whose registers are `memo_registers`."""
    held, pieces = Held(0x1000), memoryview(bytearray(48))
    buffers: RangeMap[Held] = RangeMap()
    buffers.add(0x10000, 0x1000, held)
    memo = DispatchMemo(memo_registers, RecordedMemory(buffers), {CODE: ("key", 0x5000)})
    kept: Kept[str] = Kept(4)
    for i, name in enumerate("abc"):
        inputs = Inputs({}, None, ((ARGS, bytes([i + 1]) * 16),), (), ((CODE, ("key", 0x5000)),),
                        ((pieces, 16 * i, 16 * i + 16, name.encode() * 16),))
        assert kept.add(name, (), inputs) is None
    return kept, memo, held, pieces


def always(events) -> bool:
    return True


def test_the_kept_translation_taken_is_the_one_made_over_the_memory_as_it_is_now():
    kept, memo, held, pieces = kept_three({})
    pieces[:] = bytes(48)  # a kernel wrote over its arguments: taking a translation writes them again
    for i, name in reversed(list(enumerate("abc"))):
        held.view[0x100:0x110] = bytes([i + 1]) * 16
        assert kept.take(memo, always) == name
        assert pieces[16 * i:16 * i + 16] == name.encode() * 16
    held.view[0x100:0x110] = bytes([4]) * 16  # arguments no translation was made over
    assert kept.take(memo, always) is None
    held.view[0x100:0x110] = bytes([2]) * 16
    assert kept.take(memo, lambda events: False) == "b"  # no event ids in it: none to map
    memo._loaded[CODE] = ("key", 0x6000)  # the code object loaded elsewhere
    assert kept.take(memo, always) is None
    memo._loaded[CODE] = ("key", 0x5000)
    memo.registers["COMPUTE_PGM_LO"] = 1  # the queue's registers are not those it was made after
    assert kept.take(memo, always) is None


@pytest.mark.parametrize("shape", ["registers changed", "two spans", "another span"])
def test_alternatives_of_other_shapes_are_each_tried_as_well(shape):
    kept, memo, held, pieces = kept_three({})
    before = Inputs({}, None, ((ARGS, bytes([5]) * 16),), (), ((CODE, ("key", 0x5000)),),
                    ((pieces, 0, 16, b"d" * 16),))
    inputs = {"registers changed": before._replace(after={"COMPUTE_PGM_LO": 7}),
              "two spans": before._replace(spans=((ARGS, bytes([5]) * 16), (ARGS + 0x800, bytes(8)))),
              "another span": before._replace(spans=((ARGS + 0x10, bytes([5]) * 16),))}[shape]
    assert kept.add("d", (), inputs) is None
    for at, value, name in ((ARGS, 2, "b"), (ARGS, 3, "c"), (inputs.spans[0][0], 5, "d")):
        held.view[:] = bytes(0x1000)
        held.view[at - 0x10000:at - 0x10000 + 16] = bytes([value]) * 16
        assert kept.take(memo, always) == name
    assert memo.registers == {"COMPUTE_PGM_LO": 7} if shape == "registers changed" else not memo.registers
    assert kept.add("e", (), inputs) == "a"  # the fifth pushes out the one kept longest ago


def test_a_kept_translation_whose_event_ids_map_otherwise_is_not_taken():
    kept, memo, held, _ = kept_three({})
    held.view[0x100:0x110] = bytes([1]) * 16
    # made again over the same inputs, where "a"'s event ids had not mapped: it stands for both
    kept.add("with event", ((3, 3),), kept.order[0][2])
    assert kept.take(memo, lambda events: False) is None
    assert kept.take(memo, always) == "with event"


if __name__ == "__main__":  # a workload above, as `capture run` runs a script: its name, then "aql", "role=R"
    with System.open() as open_system:
        options = dict(a.partition("=")[::2] for a in sys.argv[2:])
        globals()[sys.argv[1]](open_system, **{k: v or True for k, v in options.items()})
