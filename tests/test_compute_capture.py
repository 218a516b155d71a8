"""Compute in traces (issue 13, its capture part): PM4 and AQL submissions recorded with their packets, code
objects recorded once with their kernels' descriptor addresses, kernel arguments recorded as memory."""

from __future__ import annotations

import json
import struct
import subprocess
import time

import numpy as np
import pytest
from click.testing import CliRunner

from kfdtrace.capture import record
from kfdtrace.cli import main as kfdtrace_cli
from kfdtrace.driver import System
from kfdtrace.driver import kfd_ioctl as K
from kfdtrace.driver.kernargs import Launch, pack
from kfdtrace.driver.kernels.build import BUILT, object_path
from kfdtrace.driver.kernels.device import corpus
from kfdtrace.replay.engine import EXIT_OK, Options
from kfdtrace.replay.session import contents_at, replay_trace
from kfdtrace.replay.translate import ReplayError
from kfdtrace.traces import records as R
from kfdtrace.traces.format import TraceReader
from kfdtrace.traces.redact import redact
from kfdtrace.traces.trim import TrimRefused, trim
from kfdtrace.traces.walk import TraceState

N = 1024


def vector_add(path: str, target: str, aql: bool) -> dict[str, int]:
    """Record a vector add of N floats (twice: two doorbells at least); the buffers' addresses by name."""
    with record(path), System.open(emulate=target) as system:
        gpu = system.devices[0]
        kernel = corpus(gpu).kernel("vector_add")
        bufs = [gpu.alloc(N * 4, "gtt", name=name) for name in ("a", "b", "c")]
        bufs[0].write(np.arange(N, dtype=np.float32))
        bufs[1].write(np.ones(N, np.float32))
        q = gpu.aql_queue(name="q") if aql else gpu.compute_queue(name="q")
        for _ in range(2):
            q.dispatch(kernel, (N,), (64,), *bufs, np.uint32(N))
            q.sync(timeout=120)
        assert np.frombuffer(bufs[2].read(), np.float32)[5] == 6.0
        return {b.name: b.va for b in bufs} | {"vector_add": kernel.descriptor_address}


@pytest.mark.parametrize("target, aql", [("gfx942", False), ("gfx942", True), ("gfx1100", False), ("gfx1201", True)])
def test_dispatches_are_recorded_as_submitted(target, aql, tmp_path):
    path = str(tmp_path / "c.kfdtrace")
    vas = vector_add(path, target, aql)
    with TraceReader(path) as r:
        state, dispatches, kernargs = TraceState(r.header), [], []
        for rec in R.checked(r.records(), strict=True):
            sub = state.apply(rec)
            if sub is not None:
                assert sub.error is None and sub.packets, f"submission {sub.number}: {sub.error}"
                dispatches += [p for p in sub.packets if "DISPATCH" in p.name]
            elif rec.type == R.MEM and (b := state.buffer_at(rec.fields["va"])) is not None and b.role == "kernargs":
                kernargs.append(r.blob(rec.fields["key"]))
        (q,) = [x.fields for x in r.records([R.QUEUE])]
        assert q["dialect"] == ("aql" if aql else {"gfx942": "gfx9", "gfx1100": "gfx11"}[target])
        assert q["type"] == (K.QueueType.COMPUTE_AQL if aql else K.QueueType.COMPUTE)
        packets = r.summary["packets"]
    assert len(dispatches) == 2 and sum(n for k, n in packets.items() if "DISPATCH" in k) == 2
    if aql:
        assert all(p.kernel_object == vas["vector_add"] for p in dispatches)
    # the kernel arguments, as the CPU wrote them: the three buffers' addresses, then N
    args = struct.pack("<QQQI", vas["a"], vas["b"], vas["c"], N)
    assert kernargs and all(k.startswith(args) for k in kernargs)


def test_a_code_object_is_recorded_once_with_its_kernels(tmp_path):
    path = str(tmp_path / "c.kfdtrace")
    vas = vector_add(path, "gfx942", aql=True)
    with TraceReader(path) as r:
        (co,) = [x.fields for x in r.records([R.CODE_OBJECT])]
        assert r.blob(co["key"]) == open(object_path("gfx942", BUILT, False), "rb").read()
    assert co["target"].startswith("gfx942") and co["kernels"]["vector_add"] == vas["vector_add"]
    assert co["va"] <= vas["vector_add"] < co["va"] + co["size"]


def test_dump_names_the_kernel_each_aql_dispatch_runs(tmp_path):
    path = str(tmp_path / "c.kfdtrace")
    vector_add(path, "gfx1100", aql=True)
    res = CliRunner().invoke(kfdtrace_cli, ["dump", path, "--json", "-k", "packet"])
    dispatches = [p for line in res.output.splitlines() for p in json.loads(line)["packets"]
                  if p["name"] == "KERNEL_DISPATCH"]
    assert [p["addresses"]["kernel_object"]["where"] for p in dispatches] == ["kernel vector_add"] * 2
    assert [p["kernel"] for p in dispatches] == ["vector_add"] * 2  # as a PM4 dispatch says it
    text = CliRunner().invoke(kfdtrace_cli, ["dump", path]).output
    assert text.count("  [runs vector_add(a=") == 2  # after the packet's fields, apart from any address's name


def test_an_aql_doorbell_says_the_last_packet_written(tmp_path):
    """Each AQL doorbell's ring bytes are the packets written since the one before, up to and including the
    packet whose index it rang (amd-facts §6): none is one doorbell late."""
    path = str(tmp_path / "c.kfdtrace")
    vector_add(path, "gfx942", aql=True)
    with TraceReader(path) as r:
        rung = [(d.fields["value"], len(d.fields["ring"])) for d in r.records([R.DOORBELL])]
    assert rung[0][0] == 0 and all(n == 64 * (v - before) for (v, n), (before, _) in zip(rung[1:], rung, strict=False))
    assert rung[0][1] == 64


def test_the_replay_cli_replays_compute_and_refuses_a_target_without_its_code_object(tmp_path):
    import subprocess
    import sys

    path = str(tmp_path / "c.kfdtrace")
    vector_add(path, "gfx942", aql=False)
    res = subprocess.run([sys.executable, "-m", "kfdtrace.replay.cli", path, "--emulate", "gfx942"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    res = subprocess.run([sys.executable, "-m", "kfdtrace.replay.cli", path, "--emulate", "gfx1100"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 3 and "no code object for gfx1100" in res.stderr and "vector_add" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def checkpointed(path: str) -> dict[str, bytes]:
    """The last checkpointed contents of each buffer, by name."""
    out = {}
    with TraceReader(path) as r:
        for rec in r.records([R.CHECKPOINT]):
            for b in rec.fields["buffers"]:
                out[b["name"]] = b"".join(map(r.blob, b["keys"]))[:b["size"]]
    return out


@pytest.mark.parametrize("target", ["gfx90a", "gfx942", "gfx1100", "gfx1201"])
def test_a_pm4_kernel_s_output_is_checkpointed_once_complete_and_its_const_inputs_are_not(target, tmp_path):
    """The buffers a dispatch writes are its non-const global pointer arguments, read from its kernel arguments;
    the RELEASE_MEM after it tells when they are complete."""
    path = str(tmp_path / "c.kfdtrace")
    vector_add(path, target, aql=False)
    got = checkpointed(path)
    assert set(got) == {"c"}
    assert np.array_equal(np.frombuffer(got["c"][:N * 4], np.float32), np.arange(N, dtype=np.float32) + 1)



def steps(dialect, ring: bytes) -> tuple:
    """What a submission's packets do to kernel dispatches, as capture reads them: its plan's steps."""
    from kfdtrace.capture.submissions import Analyzer

    return Analyzer().analyse(dialect, ring, lambda a, n: None)[0].steps(ring)



def test_a_plan_names_the_registers_each_shape_sets():
    """Two submissions alike but for which registers they set are two shapes: a plan's steps name the registers."""
    from kfdtrace.capture.submissions import REGISTERS, Analyzer
    from kfdtrace.driver.pm4 import DIALECTS as PM4

    dialect, analyzer = PM4["gfx11"], Analyzer()
    pgm = dialect.set_sh_reg(COMPUTE_PGM_LO=0x1234, COMPUTE_PGM_HI=0x56)
    user = dialect.set_sh_reg(COMPUTE_USER_DATA_0=0x789A, COMPUTE_USER_DATA_1=0xBC)
    for ring, names, values in ((pgm, ("COMPUTE_PGM_LO", "COMPUTE_PGM_HI"), (0x1234, 0x56)),
                                (user, ("COMPUTE_USER_DATA_0", "COMPUTE_USER_DATA_1"), (0x789A, 0xBC))):
        assert analyzer.analyse(dialect, ring, lambda a, n: None)[0].steps(ring) == ((len(ring), REGISTERS, names,
                                                                                    values),)


def test_a_dispatch_of_a_kernel_capture_cannot_read_may_write_anything(tmp_path, monkeypatch):
    """A code object capture could not parse: its dispatch may write every tracked buffer, which are hashed
    (those that changed) once the queue is known past it, never earlier; the output is still right."""
    from kfdtrace.capture.dispatches import ANYTHING, Dispatches
    from kfdtrace.driver.aql import AQL

    data = open(object_path("gfx942", BUILT, False), "rb").read()
    d = Dispatches()
    d.loaded(0x10000, data, "gfx942")
    (kd,) = [va for va, k in d.by_descriptor.items() if k.name == "vector_add"]
    args = struct.pack("<QQQI", 0xA000, 0xB000, 0xC000, N)
    ring = AQL.build("KERNEL_DISPATCH", kernel_object=kd, kernarg_address=0x5000)
    found = d.pointers(0, AQL, steps(AQL, ring), lambda a, n: args if a == 0x5000 else None)
    assert found.writes == ((64, 0xC000),)  # a, b are const
    assert found.reads == ((64, 0xA000), (64, 0xB000), (64, 0xC000))  # a kernel may read through any
    assert d.pointers(0, AQL, steps(AQL, ring), lambda a, n: None) is ANYTHING  # its arguments unreadable
    other = AQL.build("KERNEL_DISPATCH", kernel_object=kd + 0x40000, kernarg_address=0x5000)
    assert d.pointers(0, AQL, steps(AQL, other), lambda a, n: args) is ANYTHING  # no code object holds it

    monkeypatch.setattr(Dispatches, "loaded", lambda self, va, data, target: None)
    path = str(tmp_path / "c.kfdtrace")
    vector_add(path, "gfx942", aql=False)
    got = checkpointed(path)
    assert np.array_equal(np.frombuffer(got["c"][:N * 4], np.float32), np.arange(N, dtype=np.float32) + 1)


@pytest.mark.parametrize("target", ["gfx942", "gfx1201"])
def test_an_aql_kernel_s_output_is_checkpointed_once_a_barrier_after_it_completed(target, tmp_path):
    """sync() puts a barrier-AND whose completion signal the CPU waits on at 0: that barrier began after the
    dispatch completed, so the dispatch's output is hashed there, and holds a + b."""
    path = str(tmp_path / "c.kfdtrace")
    vector_add(path, target, aql=True)
    got = checkpointed(path)
    assert set(got) == {"c"}
    assert np.array_equal(np.frombuffer(got["c"][:N * 4], np.float32), np.arange(N, dtype=np.float32) + 1)
    with TraceReader(path) as r:
        waits = [w.fields for w in r.records([R.SIGNAL_WAIT])]
    assert len(waits) == 2 and all(w["ok"] and w["seen"] == 0 for w in waits)


def test_an_aql_signal_at_zero_completes_only_what_it_proves():
    """One pending barrier packet decrementing the signal the CPU set to 1: its queue is complete up to it. Two
    pending: which one completed is not known, and nothing advances; nor when the signal was at 0 already, or
    its value unknown."""
    from kfdtrace.capture.completion import Completion, QueueProgress
    from kfdtrace.capture.recorder import SIGNAL_VALUE
    from kfdtrace.driver.aql import AQL

    c, q = Completion(), QueueProgress("q")
    c.stored(0x1008, 1, backwards=False)  # the CPU sets the signal to 1
    c.decrements(q, 128, 0x1008)
    c.reached_zero(0x1008)
    assert q.done == 128
    c.stored(0x2008, 1, backwards=False)
    c.decrements(q, 256, 0x2008)
    c.decrements(q, 320, 0x2008)
    c.reached_zero(0x2008)
    assert q.done == 128
    c.stored(0x3008, 0, backwards=False)  # campaign 53: set to 0, it was at 0 before the packet ran
    c.decrements(q, 400, 0x3008)
    c.reached_zero(0x3008)
    assert q.done == 128
    c.decrements(q, 500, 0x4008)  # never set by the CPU: from what value it counted down is not known
    c.reached_zero(0x4008)
    assert q.done == 128
    d = AQL["BARRIER_AND"]
    assert d.completion == ("completion_signal", "barrier") and SIGNAL_VALUE == 8


def test_a_barrier_and_that_completed_saw_its_dependencies_at_zero():
    """Queue B's BARRIER_AND waits on queue A's completion signal; once B is known complete past it (its own
    completion signal seen at 0), A's packet completed too."""
    from kfdtrace.capture.completion import Completion, QueueProgress

    c, a, b = Completion(), QueueProgress("A"), QueueProgress("B")
    c.stored(0x1008, 1, backwards=False)  # each signal set to 1 by the CPU
    c.stored(0x2008, 1, backwards=False)
    c.decrements(a, 64, 0x1008)  # A's dispatch decrements its signal
    c.submitted(b, [], [(64, 0x1008, None)], [])  # B's barrier passes once that signal is at 0
    c.decrements(b, 64, 0x2008)  # and decrements its own
    c.reached_zero(0x2008)
    assert (b.done, a.done) == (64, 64)


def test_a_barrier_or_shows_its_one_dependency_at_zero_and_of_several_none():
    from kfdtrace.driver.aql import AQL

    assert AQL.settled(AQL.decode(AQL.build("BARRIER_OR", dep_signal2=0x3000))) == [0x3000]
    assert AQL.settled(AQL.decode(AQL.build("BARRIER_OR", dep_signal0=0x3000, dep_signal1=0x4000))) == []
    assert AQL.settled(AQL.decode(AQL.build("BARRIER_AND", dep_signal0=0x3000, dep_signal1=0x4000))) == \
        [0x3000, 0x4000]
    assert AQL.settled(AQL.decode(AQL.build("BARRIER_VALUE", signal=0x3000, value=0, cond=0))) == []


@pytest.mark.parametrize("target", ["gfx942", "gfx1100"])
def test_a_cpu_write_after_a_barrier_chain_across_queues_is_recorded(target, tmp_path):
    """A's dispatch writes c (completion a_done); B's BARRIER_AND waits on a_done (completion b_done); the CPU
    waits on b_done, then rewrites c through a view. c was still taken for in flight, so the rewrite went
    unrecorded and the replay diverged on a correct program."""
    from kfdtrace.driver.aql_queue import HsaSignal
    from kfdtrace.replay.engine import EXIT_OK, Options
    from kfdtrace.replay.session import replay_trace

    path = str(tmp_path / "chain.kfdtrace")
    with record(path), System.open(emulate=target) as system:
        gpu = system.devices[0]
        kernel = corpus(gpu).kernel("vector_add")
        a, b, c, out = (gpu.alloc(N * 4, "gtt", name=name) for name in ("a", "b", "c", "out"))
        a.write(np.arange(N, dtype=np.float32))
        b.write(np.ones(N, np.float32))
        qa, qb, copy = gpu.aql_queue(name="A"), gpu.aql_queue(name="B"), gpu.sdma_queue(name="copy")
        a_done, b_done, copied = HsaSignal(system, 1, "a_done"), HsaSignal(system, 1, "b_done"), \
            system.semaphore("copied")
        qa.dispatch(kernel, (N,), (64,), a, b, c, np.uint32(N), completion=a_done)
        qb.barrier_and([a_done], completion=b_done)
        b_done.wait(0, timeout=120)
        c.numpy(np.float32)[:] *= 3  # the CPU's own rewrite, which nothing but the recorder's tracking sees
        copy.copy(out, c, N * 4).signal(copied, 1).submit()
        copied.wait(1, timeout=120)
        assert np.frombuffer(out.read(), np.float32)[5] == 18.0
    report = replay_trace(path, Options(), emulate=target)
    assert report.status == EXIT_OK and report.results[0].verified >= 1, report.lines()


@pytest.mark.parametrize("target", ["gfx942", "gfx1201"])
def test_a_pm4_dispatch_s_kernel_and_arguments_come_from_its_registers(target, tmp_path):
    """Read back from a recorded PM4 submission: COMPUTE_PGM names the kernel, the user SGPR the descriptor
    gives the kernel arguments' address; the one writable pointer is `c`."""
    from kfdtrace.capture.dispatches import Dispatches
    from kfdtrace.driver.pm4 import DIALECTS as PM4

    path = str(tmp_path / "c.kfdtrace")
    vas = vector_add(path, target, aql=False)
    d, memory = Dispatches(), {}
    with TraceReader(path) as r:
        for rec in r.records([R.CODE_OBJECT, R.MEM, R.DOORBELL, R.QUEUE]):
            f = rec.fields
            if rec.type == R.CODE_OBJECT:
                d.loaded(f["va"], r.blob(f["key"]), f["target"])
            elif rec.type == R.MEM:
                memory[f["va"]] = r.blob(f["key"])
            elif rec.type == R.QUEUE:
                dialect = PM4[f["dialect"]]
            elif rec.fields["ring"]:
                ring = f["ring"]
                break
    found = d.pointers(0, dialect, steps(dialect, ring), lambda a, n: memory.get(a, b"")[:n] or None)
    end = next(p.offset + p.size for p in dialect.iter_packets(ring) if p.defn.launch_field)
    assert found.writes == ((end, vas["c"]),) and found.reads == tuple((end, vas[x]) for x in "abc")


@pytest.mark.parametrize("aql", [False, True])
def test_the_summary_and_info_count_dispatches_by_kernel(aql, tmp_path):
    path = str(tmp_path / "c.kfdtrace")
    vector_add(path, "gfx1100", aql)
    with TraceReader(path) as r:
        assert r.summary["kernels"] == {"vector_add": 2}
    assert "kernels dispatched: vector_add 2" in CliRunner().invoke(kfdtrace_cli, ["info", path]).output


@pytest.mark.parametrize("target", ["gfx90a", "gfx1030", "gfx1201"])
def test_dump_names_the_kernel_a_pm4_dispatch_launches(target, tmp_path):
    path = str(tmp_path / "c.kfdtrace")
    vector_add(path, target, aql=False)
    res = CliRunner().invoke(kfdtrace_cli, ["dump", path, "--json", "-k", "packet"])
    launched = [p.get("kernel") for line in res.output.splitlines() for p in json.loads(line)["packets"]
                if p["name"].startswith("DISPATCH")]
    assert launched == ["vector_add"] * 2
    text = CliRunner().invoke(kfdtrace_cli, ["dump", path, "-k", "packet"]).output
    assert text.count("  [runs vector_add(a=") == 2


def test_a_register_packet_says_which_registers_it_sets():
    from kfdtrace.driver.pm4 import DIALECTS as PM4

    d = PM4["gfx11"]
    first = d.registers.sh_index("COMPUTE_PGM_LO")
    p = d.decode(d.build("SET_SH_REG", struct.pack("<II", 0x1234, 0x56), reg_offset=first))
    assert p.registers() == {"COMPUTE_PGM_LO": 0x1234, "COMPUTE_PGM_HI": 0x56}
    assert d.registers.join("COMPUTE_PGM", p.registers()) == (0x56 << 32 | 0x1234) << 8
    assert d.decode(d.build("NOP")).registers() == {}


@pytest.mark.parametrize("aql", [False, True])
def test_inputs_written_through_numpy_views_by_another_thread_are_recorded_before_the_dispatch(aql, tmp_path):
    """A producer thread fills inputs through raw views (no driver call sees the writes) and hands them to the
    thread that dispatches on them; the CPU reads each output through a view too. Each input is recorded before
    the doorbell of the dispatch that reads it (its pointer arguments are looked through, not only the packet's
    own addresses); each output is the GPU's, checkpointed after its wait and never recorded as a CPU write."""
    import queue
    import threading

    from kfdtrace.replay.engine import EXIT_OK, Options
    from kfdtrace.replay.session import replay_trace

    path, n, rounds = str(tmp_path / "v.kfdtrace"), 256, 6
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        kernel = corpus(gpu).kernel("vector_add")
        xs = [gpu.alloc(n * 4, "gtt", name=f"x{i}") for i in range(2)]
        outs = [gpu.alloc(n * 4, "gtt", name=f"out{i}") for i in range(2)]
        ones = gpu.alloc(n * 4, "gtt", name="ones")
        ones.numpy("float32")[:] = 1.0
        handoff, free = queue.Queue(), queue.Queue()
        for i in range(2):
            free.put(i)

        def producer():
            for r in range(rounds):
                i = free.get()
                xs[i].numpy("float32")[:] = np.arange(n, dtype=np.float32) * r
                handoff.put((r, i))

        thread = threading.Thread(target=producer)
        thread.start()
        q = gpu.aql_queue(name="q") if aql else gpu.compute_queue(name="q")
        for _ in range(rounds):
            r, i = handoff.get()
            q.dispatch(kernel, (n,), (64,), xs[i], ones, outs[i], np.uint32(n))
            if not aql:
                q.submit()
            q.sync(timeout=120)
            assert (outs[i].numpy("float32") == np.arange(n, dtype=np.float32) * r + 1).all()
            free.put(i)
        thread.join()
        names = {b.va: b.name for b in (*xs, *outs, ones)}
    with TraceReader(path) as tr:
        recs = list(tr.records([R.MEM, R.DOORBELL, R.CHECKPOINT]))
    first_dispatch = next(k for k, rec in enumerate(recs) if rec.type == R.DOORBELL and rec.fields["ring"])
    written = [names.get(rec.fields["va"]) for rec in recs if rec.type == R.MEM]
    assert {"x0", "ones"} <= {names.get(rec.fields["va"]) for rec in recs[:first_dispatch] if rec.type == R.MEM}
    assert not {"out0", "out1"} & set(written)
    checkpoints = [b["name"] for rec in recs if rec.type == R.CHECKPOINT for b in rec.fields["buffers"]]
    assert len(checkpoints) == rounds and set(checkpoints) == {"out0", "out1"}
    report = replay_trace(path, Options(), emulate_recorded=True)
    assert report.status == EXIT_OK and report.results[0].verified == rounds, report.lines()


def test_a_buffer_is_left_out_of_view_scans_while_a_queue_still_there_may_be_writing_it():
    """Not known complete: left out (what changed is the GPU's). Known complete, or its queue destroyed (nothing
    of it runs any more): looked through again, so a later write through a view is recorded."""
    from kfdtrace.capture.completion import QueueProgress
    from kfdtrace.capture.memory import TrackedBuffer

    buf = TrackedBuffer(handle=1, gpu_id=1, va=0x10000, size=4096, domain="gtt", flags=0, mmap_offset=0)
    q = QueueProgress("q")
    buf.writes[q] = 256
    assert buf.may_be_written()
    q.done = 256
    assert not buf.may_be_written()
    q.done, q.destroyed = 0, True
    assert not buf.may_be_written() and not buf.complete()  # still not hashed as complete: nothing proved it


@pytest.mark.parametrize("aql", [False, True])
def test_with_tracking_scan_inputs_written_through_raw_pointers_are_recorded_before_the_dispatch(aql, tmp_path):
    """--tracking scan: the buffers a dispatch's pointer arguments point into are compared before its doorbell,
    so inputs the program wrote through `buf.cpu` (no driver call, no view) are in the trace before it."""
    import ctypes

    from kfdtrace.replay.engine import EXIT_OK, Options
    from kfdtrace.replay.session import replay_trace

    path, n = str(tmp_path / "raw.kfdtrace"), 256
    with record(path, tracking="scan"), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        kernel = corpus(gpu).kernel("add_int")
        a, b, c = (gpu.alloc(n * 4, "gtt", name=x) for x in "abc")
        q = gpu.aql_queue(name="q") if aql else gpu.compute_queue(name="q")
        for r in range(3):
            av, bv = np.arange(n, dtype=np.int32) * (r + 2), np.full(n, r, np.int32)
            ctypes.memmove(a.cpu, av.tobytes(), n * 4)
            ctypes.memmove(b.cpu, bv.tobytes(), n * 4)
            q.dispatch(kernel, (n,), (64,), a, b, c, np.uint32(n))
            if not aql:
                q.submit()
            q.sync(timeout=120)
            assert (np.frombuffer(c.read(), np.int32) == av + bv).all()
    report = replay_trace(path, Options(), emulate_recorded=True)
    assert report.status == EXIT_OK and report.results[0].verified == 3, report.lines()


# a kernel reading through an address it is given by value, not as a pointer argument
BY_VALUE = """
__kernel void add_one_at(__global uint *out, ulong src, uint n) {
    uint i = __builtin_amdgcn_workgroup_id_x() * 64 + __builtin_amdgcn_workitem_id_x();
    if (i < n) out[i] = ((__global const uint *)src)[i] + 1;
}
"""


@pytest.fixture(scope="module")
def by_value_object(tmp_path_factory) -> str:
    """BY_VALUE built for gfx942 by clang."""
    out = tmp_path_factory.mktemp("by_value")
    (out / "k.cl").write_text(BY_VALUE)
    subprocess.run(["clang-19", "-x", "cl", "-target", "amdgcn-amd-amdhsa", "-mcpu=gfx942", "-nogpulib", "-O2", "-c",
                    str(out / "k.cl"), "-o", str(out / "k.o")], check=True, capture_output=True)
    subprocess.run(["ld.lld-19", "-shared", str(out / "k.o"), "-o", str(out / "k.co")], check=True,
                   capture_output=True)
    return str(out / "k.co")


@pytest.mark.parametrize("tracking", ["auto", "scan"])
def test_what_the_cpu_wrote_through_a_view_is_recorded_for_a_kernel_reading_it_by_a_by_value_address(
        by_value_object, tracking, tmp_path):
    """A kernel may read any buffer whose address it can name (passed by value here, or kept in memory): what the CPU
    wrote there through a raw view before a dispatch is recorded, so that a replay computes what the workload did."""
    path = str(tmp_path / "t.kfdtrace")
    n = 256
    with record(path, tracking=tracking), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        kernel = gpu.load(by_value_object).kernel("add_one_at")
        src, out = gpu.alloc(n * 4, "gtt", name="src"), gpu.alloc(n * 4, "gtt", name="out")
        view = src.numpy(np.uint32)
        q = gpu.compute_queue(name="q")
        for r in range(3):
            view[:] = np.arange(n, dtype=np.uint32) * (r + 2)
            q.dispatch(kernel, (n,), (64,), out, np.uint64(src.va), np.uint32(n))
            q.sync(timeout=120)
            assert (np.frombuffer(out.read(), np.uint32) == np.arange(n, dtype=np.uint32) * (r + 2) + 1).all()
    report = replay_trace(path, Options(), emulate_recorded=True)
    assert report.status == EXIT_OK and report.loops[0][0].verified >= 3, report.lines()


def test_a_dispatch_inside_an_indirect_buffer_is_taken_to_write_every_buffer(tmp_path):
    """The recorder does not follow the dispatches an indirect buffer holds: their kernels may write any buffer, so
    the checkpoint after them hashes every buffer, and a replay verifies what the kernel wrote."""
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        add = corpus(gpu).kernel("add_int")
        a, b, c = (gpu.alloc(N * 4, "gtt", name=x) for x in "abc")
        a.write(np.arange(N, dtype=np.int32))
        b.write(np.full(N, 5, np.int32))
        q = gpu.compute_queue(name="q")
        launch = Launch.of((N,), (64,))
        body = q.launch(add, launch, pack(add.kernel.metadata, (a, b, c, np.uint32(N)), launch))
        ib = gpu.alloc(4096, "gtt", name="ib")
        ib.write(body)
        q.indirect(ib, len(body)).submit()
        q.sync(timeout=120)
        assert (np.frombuffer(c.read(), np.int32) == np.arange(N) + 5).all()
    with TraceReader(path) as trace:
        checkpoints = [r for r in trace.records({R.CHECKPOINT}) if r.fields["buffers"]]
    assert "c" in {b["name"] for r in checkpoints for b in r.fields["buffers"]}
    report = replay_trace(path, Options(), emulate_recorded=True)
    assert report.status == EXIT_OK and report.loops[0][0].verified >= 1, report.lines()


def by_value_reads(path: str, kernel_object: str, gpu_written: bool) -> None:
    """Record `add_one_at` reading `src` through the address it is given by value: src written by the CPU, or
    (`gpu_written`) by an SDMA copy the kernel's queue waits for, with no checkpoint of src between."""
    n = 256
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        kernel = gpu.load(kernel_object).kernel("add_one_at")
        src, out, staging = (gpu.alloc(n * 4, "gtt", name=x) for x in ("src", "out", "staging"))
        (staging if gpu_written else src).write(np.arange(n, dtype=np.uint32) * 3)
        q, copier = gpu.compute_queue(name="q"), gpu.sdma_queue(name="copier")
        if gpu_written:  # ordered by a semaphore the GPU waits for: no CPU wait, no checkpoint
            copied = system.semaphore("copied")
            copier.copy(src, staging, n * 4).signal(copied, 1).submit()
            q.wait(copied, 1)
        q.dispatch(kernel, (n,), (64,), out, np.uint64(src.va), np.uint32(n))
        q.sync(timeout=120)
        assert (np.frombuffer(out.read(), np.uint32) == np.arange(n, dtype=np.uint32) * 3 + 1).all()


def test_redact_keeps_what_a_kernel_reads_by_a_by_value_address(by_value_object, tmp_path):
    path, out = str(tmp_path / "t.kfdtrace"), str(tmp_path / "r.kfdtrace")
    by_value_reads(path, by_value_object, gpu_written=False)
    with TraceReader(path) as r:
        redact(r, out)
    report = replay_trace(out, Options(), emulate_recorded=True)
    assert report.status == EXIT_OK and report.loops[0][0].verified >= 1, report.lines()


def test_trim_refuses_a_range_whose_kernel_may_read_a_buffer_of_unknown_contents(by_value_object, tmp_path):
    """src was written by the GPU and never checkpointed before the range: the range's kernel reads it by an address
    passed by value, so trim refuses (pointing to --reconstruct), and with --reconstruct the trimmed trace verifies."""
    path, out = str(tmp_path / "t.kfdtrace"), str(tmp_path / "r.kfdtrace")
    by_value_reads(path, by_value_object, gpu_written=True)
    with TraceReader(path) as r:
        last = r.submissions - 1
        with pytest.raises(TrimRefused, match=r"may read any buffer it can name, reads src .*--reconstruct"):
            trim(r, out, last, last)
        trim(r, out, last, last, lambda vas: contents_at(path, last, vas))
    report = replay_trace(out, Options(), emulate_recorded=True)
    assert report.status == EXIT_OK and report.loops[0][0].verified >= 1, report.lines()


def test_an_address_passed_by_value_is_a_relocation_hazard_only_when_buffers_move(by_value_object, tmp_path):
    """Found by helper 35: moved buffers (--relocate always, --concurrent) left the by-value address pointing at the
    recorded place, and the kernel faulted (a HANG verdict). It is a relocation hazard, refused before submission
    when buffers must move; in place the trace replays exactly."""
    path = str(tmp_path / "t.kfdtrace")
    by_value_reads(path, by_value_object, gpu_written=False)
    assert replay_trace(path, Options(), emulate_recorded=True).status == EXIT_OK
    with pytest.raises(ReplayError, match=r"relocation hazard: .* gives add_one_at argument 1 by value, "
                                          r"holding address 0x[0-9a-f]+ \(in buffer src\)"):
        replay_trace(path, Options(relocate="always"), emulate_recorded=True)


def test_an_address_passed_by_value_in_two_halves_is_a_relocation_hazard_too(tmp_path):
    """Campaign 106: capture takes two 32-bit by-value arguments filling one 8-byte word for an address, the survey
    did not: moved (--concurrent 2), the kernel wrote through the recorded address into the other instance's buffer
    (DIVERGED). Refused before submission now, as the address in one argument is."""
    from tests.test_shader import built

    source = """
    __kernel void bump(__global uint *out, uint lo, uint hi, uint n) {
        __global uint *p = (__global uint *)(((ulong)hi << 32) | lo);
        uint i = __builtin_amdgcn_workgroup_id_x() * 64 + __builtin_amdgcn_workitem_id_x();
        if (i < n) { out[i] = p[i] + 1; p[i] += 1000; }
    }"""
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        bump = gpu.load(built(tmp_path, source, "gfx942")).kernel("bump")
        src, out = gpu.alloc(256, "gtt", name="src"), gpu.alloc(256, "gtt", name="out")
        src.write(np.arange(64, dtype=np.uint32))
        q = gpu.aql_queue()
        q.dispatch(bump, (64,), (64,), out, np.uint32(src.va & 0xFFFFFFFF), np.uint32(src.va >> 32), np.uint32(64))
        q.sync(timeout=60)
        assert (np.frombuffer(src.read(), np.uint32) == np.arange(64) + 1000).all()
    for how in ({"options": Options(relocate="always")}, {"options": Options(), "concurrent": 2}):
        with pytest.raises(ReplayError, match=r"relocation hazard: .* gives bump arguments 1, 2 by value, holding "
                                              r"address 0x[0-9a-f]+ \(in buffer src\)"):
            replay_trace(path, **how, emulate="gfx942")


def test_a_hidden_argument_holding_an_address_is_taken_as_a_pointer_the_kernel_writes_through(tmp_path):
    """Campaign 106: a kernel writing through its hidden printf buffer (filled as a runtime fills it) wrote a buffer
    no checkpoint compared; capture takes the hidden arguments that hold addresses as it takes pointer arguments."""
    from kfdtrace.capture.dispatches import Loaded
    from kfdtrace.driver.code_object import load
    from tests.test_shader import built

    source = """
    int printf(__constant const char *fmt, ...);
    __attribute__((noinline)) global char *__printf_alloc(uint bytes) {
        constant char *ia = (constant char *)__builtin_amdgcn_implicitarg_ptr();
        global uint *pb = *(global uint * constant *)(ia + 72);
        return pb ? (global char *)pb + 8 : 0;
    }
    kernel void pf(global const int *in, int v) { if (v) printf("v=%d\\n", in[0] + v); }"""
    with open(built(tmp_path, source, "gfx942"), "rb") as f:
        kernel = load(f.read(), "gfx942").kernels["pf"]
    loaded = Loaded.of(kernel)
    printf = kernel.metadata.hidden_args["hidden_printf_buffer"].offset
    assert (printf, False) in loaded.pointers and (0, True) in loaded.pointers  # `in` stays read-only


def test_a_barrier_value_orders_what_it_waits_for_before_what_follows(tmp_path):
    """SDMA stages a kernel's input and signals an HSA signal as a timeline semaphore; the AQL queue waits for it
    with BARRIER_VALUE (GTE 1) before the dispatch. Capture took the kernel's read for a race with the copy, so
    `c` was left out of every checkpoint and a corrupt input replayed OK."""
    from kfdtrace.driver.aql import SignalCondition
    from kfdtrace.driver.aql_queue import HsaSignal

    n, path = 64, str(tmp_path / "bv.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        kernel = corpus(gpu).kernel("vector_add")
        q, sdma = gpu.aql_queue(), gpu.sdma_queue()
        staged, done = HsaSignal(system, 0, "staged"), HsaSignal(system, 1, "done")
        host, a = gpu.alloc(n * 4, "gtt", name="host"), gpu.alloc(n * 4, "vram", name="a")
        b, c = gpu.alloc(n * 4, "gtt", name="b"), gpu.alloc(n * 4, "gtt", name="c")
        host.write(np.arange(n, dtype=np.float32))
        b.write(np.ones(n, dtype=np.float32))
        sdma.copy(a, host, n * 4).signal(staged.semaphore(), 1).submit()
        q.barrier_value(staged, 1, SignalCondition.GTE)
        q.dispatch(kernel, n, 64, a, b, c, np.uint32(n), completion=done)
        done.wait(0, timeout=60)
        assert list(c.numpy(np.float32)[:3]) == [1, 2, 3]
    with TraceReader(path) as r:
        assert not r.summary.get("racy"), r.summary.get("racy")
        assert any(e["name"] == "c" for cp in r.records({"checkpoint"}) for e in cp.fields["buffers"])
    assert replay_trace(path, Options(), emulate="gfx942").status == EXIT_OK


def test_a_signal_counted_down_by_as_many_dispatches_as_it_started_at_shows_them_all_complete(tmp_path):
    """Two dispatches on two queues share a completion signal the CPU set to 2; at 0 both have run, so the CPU's
    edit of one's output through a view afterwards is the CPU's: it was taken for the GPU's, left out of the
    trace, and the replay of the next kernel reading it DIVERGED."""
    from kfdtrace.driver.aql_queue import HsaSignal

    n, path = 64, str(tmp_path / "countdown.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        kernel = corpus(gpu).kernel("vector_add")
        q1, q2 = gpu.aql_queue(), gpu.aql_queue()
        a, b = gpu.alloc(n * 4, "gtt", name="a"), gpu.alloc(n * 4, "gtt", name="b")
        c1, c2, out = (gpu.alloc(n * 4, "gtt", name=x) for x in ("c1", "c2", "out"))
        a.write(np.arange(n, dtype=np.float32))
        b.write(np.ones(n, dtype=np.float32))
        both, done = HsaSignal(system, 2, "both"), HsaSignal(system, 1, "done")
        q1.dispatch(kernel, n, 64, a, b, c1, np.uint32(n), completion=both)
        q2.dispatch(kernel, n, 64, a, b, c2, np.uint32(n), completion=both)
        both.wait(0, timeout=60)
        c1.numpy(np.float32)[:] *= 3  # the CPU's edit, after both completed
        q1.dispatch(kernel, n, 64, c1, b, out, np.uint32(n), completion=done)
        done.wait(0, timeout=60)
        assert list(out.numpy(np.float32)[:3]) == [4, 7, 10]
    report = replay_trace(path, Options(), emulate="gfx942")
    assert report.status == EXIT_OK, report.lines()


def test_a_negative_signal_value_is_recorded_as_the_word_stored_and_replays(tmp_path):
    """Campaign 84: an HSA signal's value is signed; the CPU setting one to -1 was recorded as -1, which the record's
    u64 field refused: an honest trace read as corrupt (exit 4)."""
    from kfdtrace.driver.aql import SignalCondition
    from kfdtrace.driver.aql_queue import HsaSignal

    n, path = 64, str(tmp_path / "negative.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        kernel = corpus(gpu).kernel("vector_add")
        q = gpu.aql_queue()
        a, b, c = (gpu.alloc(n * 4, "gtt", name=x) for x in "abc")
        a.write(np.arange(n, dtype=np.float32))
        b.write(np.ones(n, dtype=np.float32))
        gate, done = HsaSignal(system, -1, "gate"), HsaSignal(system, 1, "done")
        q.barrier_value(gate, 0, SignalCondition.GTE)
        q.dispatch(kernel, n, 64, a, b, c, np.uint32(n), completion=done)
        gate.signal(0)
        done.wait(0, timeout=60)
    with TraceReader(path) as r:
        stored = [s.fields["value"] for s in R.checked(r.records({R.CPU_SIGNAL}))]
    assert (1 << 64) - 1 in stored  # -1, as the 64-bit word the CPU stored
    assert replay_trace(path, Options(), emulate="gfx942").status == EXIT_OK


def built(tmp_path, source: str) -> str:
    """`source` (OpenCL C) built for gfx942 by clang: the code object's path."""
    (tmp_path / "k.cl").write_text(source)
    subprocess.run(["clang-19", "-x", "cl", "-cl-std=CL2.0", "-target", "amdgcn-amd-amdhsa", "-mcpu=gfx942",
                    "-nogpulib", "-O2", "-c", str(tmp_path / "k.cl"), "-o", str(tmp_path / "k.o")], check=True)
    subprocess.run(["ld.lld-19", "-shared", str(tmp_path / "k.o"), "-o", str(tmp_path / "k.co")], check=True)
    return str(tmp_path / "k.co")


BEYOND_ARGUMENTS = r"""
kernel void through_table(global int * global *table) { table[0][__builtin_amdgcn_workitem_id_x()] = 5; }
kernel void by_address(ulong addr) { ((global int *)addr)[__builtin_amdgcn_workitem_id_x()] = 5; }
kernel void through_const(const global int *c) { ((global int *)c)[__builtin_amdgcn_workitem_id_x()] = 5; }
kernel void through_const_table(global int * const global *table) { table[0][__builtin_amdgcn_workitem_id_x()] = 5; }
"""


@pytest.mark.parametrize("how", ["through_table", "by_address", "through_const"])
def test_a_buffer_a_kernel_in_flight_may_write_beyond_its_arguments_is_not_hashed(how, tmp_path):
    """Campaign 56: a kernel writes y through an address kept in a table, passed by value, or a const pointer
    cast; another queue's copy into y's other half completes and the CPU waits for it alone: y was hashed with
    the kernel's writes in it, which the replay, its kernel still running, did not have (a false DIVERGED). Until
    the kernel is known complete, y is in flight; after, its bytes are checked."""
    code = built(tmp_path, BEYOND_ARGUMENTS)
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        y, src, table = (gpu.alloc(4096, "gtt", name=n) for n in ("y", "src", "table"))
        src.write(b"\x77" * 4096)
        table.write(struct.pack("<Q", y.va))
        arg = {"through_table": table, "by_address": np.uint64(y.va), "through_const": y}[how]
        qa, qb, done = gpu.compute_queue(name="A"), gpu.sdma_queue(name="B"), system.semaphore("done")
        qa.dispatch(gpu.load(code).kernel(how), (64,), (64,), arg).submit()
        qb.copy(y, src, 2048, dst_offset=2048).signal(done, 1).submit()
        done.wait(1)
        qa.sync()
    with TraceReader(path) as r:
        marks = [({b["name"] for b in c.fields["buffers"]}, {b["name"] for b in c.fields["in_flight"]})
                 for c in r.records([R.CHECKPOINT])]
    assert ("y" in marks[0][1] and "y" not in marks[0][0]) and "y" in marks[-1][0], marks
    assert checkpointed(path)["y"] == struct.pack("<64i", *[5] * 64) + bytes(1792) + b"\x77" * 2048
    assert replay_trace(path, Options(), emulate="gfx942").status == EXIT_OK


@pytest.mark.parametrize("how", ["through_table", "by_address", "through_const_table"])
def test_a_buffer_a_finished_kernel_may_have_written_beyond_its_arguments_is_hashed(how, tmp_path):
    """Campaign 62: y, written only by a kernel through an address kept in a table or passed by value, was held
    while the kernel ran but never hashed after: a trace whose kernel argument was changed replayed OK. Once the
    kernel is known complete, what it took by value and what the buffers it took point at are checked."""
    code = built(tmp_path, BEYOND_ARGUMENTS)
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        y, table = (gpu.alloc(4096, "gtt", name=n) for n in ("y", "table"))
        table.write(struct.pack("<Q", y.va))
        arg = table if how != "by_address" else np.uint64(y.va)
        gpu.compute_queue(name="A").dispatch(gpu.load(code).kernel(how), (64,), (64,), arg).sync()
    assert checkpointed(path)["y"] == struct.pack("<64i", *[5] * 64) + bytes(3840)
    assert replay_trace(path, Options(), emulate="gfx942").status == EXIT_OK


def test_a_pointer_table_written_after_the_dispatch_its_queue_waits_to_run_is_a_relocation_hazard(tmp_path):
    """Campaign 56: the CPU wrote the table a gated dispatch chases after submitting it, then freed the buffers it
    points at before the table: the table was looked into as it went, when its pointees were gone, so a replay
    with buffers moved ran instead of refusing."""
    code = built(tmp_path, BEYOND_ARGUMENTS)
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        table, y = gpu.alloc(4096, "gtt", name="table"), gpu.alloc(4096, "gtt", name="y")
        go, q = system.semaphore("go"), gpu.compute_queue(name="q")
        q.wait(go, 1).dispatch(gpu.load(code).kernel("through_const_table"), (64,), (64,), table)
        q.submit()
        table.write(struct.pack("<Q", y.va))  # after the submission, before the kernel can run
        go.signal(1)
        q.sync()
        y.free()  # before the table
    assert replay_trace(path, Options(), emulate="gfx942").status == EXIT_OK
    with pytest.raises(ReplayError, match=r"relocation hazard: buffer table\+0x0 holds GPU address 0x[0-9a-f]+ "
                                          r"\(in buffer y\), written by the CPU write at record \d+, after the "
                                          r"dispatches that may read it were submitted"):
        replay_trace(path, Options(relocate="always"), emulate="gfx942")


def test_a_kernel_writing_below_its_pointer_argument_races_with_a_copy_there(tmp_path):
    """Campaign 59: a kernel given X + 2048 writing p[-1 - i] (a stencil's halo) was taken to write X from 2048
    on, so another queue's unordered copy into X[1024, 2048) was no race, and X was hashed."""
    code = built(tmp_path, "kernel void back(global int *p) { p[-1 - (int)__builtin_amdgcn_workitem_id_x()] = 12; }")
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        x, src = gpu.alloc(4096, "gtt", name="X"), gpu.alloc(4096, "gtt", name="src")
        qk, qb = gpu.compute_queue(name="K"), gpu.sdma_queue(name="B")
        a, b = system.semaphore("a"), system.semaphore("b")
        qk.dispatch(gpu.load(code).kernel("back"), (64,), (64,), x.va + 2048).signal(a, 1).submit()
        qb.copy(x, src, 1024, dst_offset=1024).signal(b, 1).submit()
        a.wait(1)
        b.wait(1)
    with TraceReader(path) as r:
        racy = [e["name"] for c in r.records([R.CHECKPOINT]) for e in c.fields["racy"] or ()]
    assert racy == ["X"]


def test_an_address_passed_as_two_32_bit_halves_is_held_while_its_kernel_runs(tmp_path):
    """Campaign 59: the words of a kernel's by-value arguments were looked at one argument at a time, so an
    address passed as (uint lo, uint hi) was not among what its dispatch takes, and y was hashed mid-kernel."""
    code = built(tmp_path, "kernel void halves(uint lo, uint hi) { ((global int *)(((ulong)hi << 32) | lo))"
                           "[__builtin_amdgcn_workitem_id_x()] = 5; }")
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        y, src = gpu.alloc(4096, "gtt", name="y"), gpu.alloc(4096, "gtt", name="src")
        qa, qb, done = gpu.compute_queue(name="A"), gpu.sdma_queue(name="B"), system.semaphore("done")
        qa.dispatch(gpu.load(code).kernel("halves"), (64,), (64,), np.uint32(y.va & 0xFFFFFFFF),
                    np.uint32(y.va >> 32)).submit()
        qb.copy(y, src, 2048, dst_offset=2048).signal(done, 1).submit()
        done.wait(1)
        qa.sync()
    with TraceReader(path) as r:
        first = next(r.records([R.CHECKPOINT])).fields
    assert "y" in {b["name"] for b in first["in_flight"]} and "y" not in {b["name"] for b in first["buffers"]}


def test_an_indirect_buffer_that_cuts_a_packet_short_is_named_in_the_note(tmp_path):
    """Campaign 112: the note blamed the ring ("undecodable ring bytes"), which held two whole packets."""
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        out, ib = gpu.alloc(4096, "gtt", name="out"), gpu.alloc(4096, "gtt", name="ib")
        builder = gpu.compute_queue(name="builder")
        body = b"".join(builder.write_data(out, b"\x11" * 16).write_data(out, b"\x22" * 16, offset=32).discard())
        ib.write(body)
        q = gpu.compute_queue(name="q")
        q.indirect(ib, len(body) - 8).submit()
        time.sleep(0.2)  # (the GPU stops the queue at the cut packet)
    with TraceReader(path) as trace:
        notes = [r.fields["text"] for r in trace.records({R.NOTE})]
    assert any(f"undecodable packets: the indirect buffer at {ib.va:#x} that INDIRECT_BUFFER at byte 0x0 calls: "
               in n and "WRITE_DATA" in n for n in notes), notes


def test_an_aql_queue_destroyed_at_a_barrier_writes_nothing_after_it(tmp_path):
    """Campaign 113: an AQL queue destroyed standing at a BARRIER_AND was not taken to stand at a wait (the AQL
    table's barriers have dependency signals, not the `wait` tag), so the dispatch after it counted as maybe
    running, and what another queue wrote into the same buffer was never checked."""
    from kfdtrace.driver.aql_queue import HsaSignal

    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        add = corpus(gpu).kernel("add_int")
        a, d, out = (gpu.alloc(N * 4, "gtt", name=x) for x in ("a", "d", "out"))
        a.write(np.arange(N, dtype=np.int32))
        qa, qb = gpu.aql_queue(name="qa"), gpu.aql_queue(name="qb")
        dep, c1, c2, c3 = (HsaSignal(system, 1, name=x) for x in ("dep", "c1", "c2", "c3"))
        qa.barrier_and([dep])
        qa.dispatch(add, N, 64, a, a, d, np.uint32(N), completion=c3)
        qb.dispatch(add, N, 64, a, a, out, np.uint32(N), completion=c1)
        c1.wait(0)
        qa.destroy()
        qb.dispatch(add, N, 64, out, a, d, np.uint32(N), completion=c2)
        c2.wait(0)
        assert (np.frombuffer(d.read(), np.int32) == 3 * np.arange(N)).all()
    assert checkpointed(path)["d"] == (3 * np.arange(N, dtype=np.int32)).tobytes()
    assert replay_trace(path, Options(timeout=5), emulate="gfx942").status == EXIT_OK
