"""Replay: objects known by their creation (reused queue ids, addresses and handles), KFD events mapped per
instance, concurrent instances isolated, and the target opened through open_syscalls."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kfdtrace.capture import record
from kfdtrace.driver import System
from kfdtrace.driver.backend import open_syscalls, wrapping
from kfdtrace.driver.emulator.boards import emulated_topology
from kfdtrace.driver.errors import AddressInUse, GpuFault, WaitTimeout
from kfdtrace.driver.topology import read_topology
from kfdtrace.replay.engine import EXIT_DIVERGED, EXIT_HANG, EXIT_OK, BadInput, Instance, Options, ReplayError
from kfdtrace.replay.session import replay_trace
from kfdtrace.traces.format import TraceReader, blob_key
from tests.test_replay import rewrite, sample, sample_names


def records(path: str, *types: str) -> list:
    with TraceReader(path) as r:
        return list(r.records(set(types)))


@pytest.mark.parametrize("name", sample_names())
def test_every_sample_replays_as_concurrent_relocated_instances(name):
    report = replay_trace(sample(name), Options(relocate="always"), emulate_recorded=True, loops=2, concurrent=3)
    assert report.status == EXIT_OK, report.lines()
    assert [len(loop) for loop in report.loops] == [3, 3]
    for r in report.results:
        assert r.submissions == report.submissions and r.verified > 0 and r.relocated > 0


# -- reused queue ids, addresses and handles ------------------------------------------------------------


@pytest.fixture(scope="module")
def reused_queue(tmp_path_factory) -> str:
    """Queue A fills dst with 11, waits, is destroyed; queue B (same id, same ring and pointer addresses, the
    same semaphore slot) fills it with 22 and waits."""
    path = str(tmp_path_factory.mktemp("reuse") / "reuse.kfdtrace")
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        dst = gpu.alloc(4096, "gtt", name="dst")
        for value in (11, 22):
            q = gpu.sdma_queue(name=f"q{value}")
            q.fill(dst, value, 4096).sync()
            assert dst.read(0, 1)[0] == value
            q.destroy()
    queues = records(path, "queue")
    assert len(queues) == 2 and queues[0].fields["queue"] == queues[1].fields["queue"]
    assert queues[0].fields["ring"] == queues[1].fields["ring"] and queues[0].fields["rptr"] == queues[1].fields["rptr"]
    return path


@pytest.mark.parametrize("concurrent", [1, 2])
def test_second_queue_with_a_reused_id_replays_its_own_work(reused_queue, concurrent):
    report = replay_trace(reused_queue, Options(), emulate="gfx1100", concurrent=concurrent)
    assert report.status == EXIT_OK, report.lines()
    assert all(r.verified == 2 for r in report.results)  # dst after A (11), then after B (22)


@pytest.fixture(scope="module")
def realloc(tmp_path_factory) -> str:
    """Buffer a (a GPU timestamp lands in it: never compared) is freed; b takes its address with another size."""
    path = str(tmp_path_factory.mktemp("realloc") / "realloc.kfdtrace")
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        q = gpu.sdma_queue()
        a = gpu.alloc(4096, "gtt", name="a")
        q.timestamp(a).sync()
        va = a.va
        a.free()
        b = gpu.alloc(8192, "gtt", va=va, name="b")
        q.fill(b, 22, 8192).sync()
    allocs = [r.fields for r in records(path, "alloc") if r.fields["va"] == va]
    assert [f["size"] for f in allocs] == [4096, 8192]
    return path


def _corrupt_expectation(src: str, dst: str, name: str, handle_from: str | None = None) -> None:
    """Flip a byte of what the last checkpoint of buffer `name` expects; with `handle_from`, that buffer's
    records also reuse the handle of buffer `handle_from` (as the kernel's handle table does)."""
    buffers = {r.fields["name"]: r.fields["handle"] for r in records(src, "buffer")}
    last = max(c.n for c in records(src, "checkpoint") if any(b["name"] == name for b in c.fields["buffers"]))
    handles = {buffers[name]: buffers[handle_from]} if handle_from else {}

    def edit(rec, reader, writer):
        f = dict(rec.fields)
        if "handle" in f and f["handle"] in handles:
            f["handle"] = handles[f["handle"]]
        if rec.n == last:
            entries = []
            for b in f["buffers"]:
                if b["name"] == name:
                    data = bytearray(reader.blob(b["keys"][0]))
                    data[7] ^= 0xFF
                    keys = [writer.blob(bytes(data)), *b["keys"][1:]]
                    b = {**b, "keys": keys, "hash": blob_key(b"".join(keys))}
                entries.append(b)
            f["buffers"] = entries
        return f

    rewrite(src, dst, edit)


@pytest.mark.parametrize("relocate", ["auto", "always"])
def test_buffer_reallocated_at_a_freed_address_is_its_own_buffer(realloc, tmp_path, relocate):
    report = replay_trace(realloc, Options(relocate=relocate), emulate="gfx1100")
    assert report.status == EXIT_OK, report.lines()
    bad = str(tmp_path / "bad.kfdtrace")
    _corrupt_expectation(realloc, bad, "b")
    report = replay_trace(bad, Options(relocate=relocate), emulate="gfx1100")
    assert report.status == EXIT_DIVERGED, report.lines()  # b is compared, though a (at its address) was not
    assert "buffer b differs" in report.lines()[-1] and "CONST_FILL" in report.lines()[-1]


def test_reused_handle_names_the_newer_buffer(realloc, tmp_path):
    reused = str(tmp_path / "reused.kfdtrace")
    _corrupt_expectation(realloc, reused, "b", handle_from="a")
    handles = [r.fields["handle"] for r in records(reused, "alloc", "free") if r.fields["va"] ==
               records(reused, "alloc")[-1].fields["va"]]
    assert len(set(handles)) == 1 and len(handles) == 4  # a and b: alloc, free, alloc, free with one handle
    report = replay_trace(reused, Options(), emulate="gfx1100")
    assert report.status == EXIT_DIVERGED and "buffer b differs" in report.lines()[-1], report.lines()


# -- events -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def evented(tmp_path_factory) -> str:
    """A TRAP signals one of two events, which the CPU waits on; the CPU sets and waits on a third."""
    path = str(tmp_path_factory.mktemp("events") / "events.kfdtrace")
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        out, q = gpu.alloc(4096, "gtt", name="out"), gpu.sdma_queue()
        decoy, done = system.event(), system.event()
        q.fill(out, 7, 4096).trap(done.id).submit()
        done.wait(5)
        mine = system.event()
        mine.set()
        mine.wait(1)
        for e in (decoy, done, mine):
            e.destroy()
    assert {"event", "event_set", "event_wait", "event_destroy"} <= {r.type for r in records(
        path, "event", "event_set", "event_wait", "event_destroy")}
    return path


@pytest.mark.parametrize("concurrent", [1, 3])
def test_traps_and_cpu_event_activity_use_the_instance_events(evented, concurrent):
    report = replay_trace(evented, Options(timeout=2), emulate="gfx1100", concurrent=concurrent)
    assert report.status == EXIT_OK, report.lines()
    assert all(r.verified >= 1 for r in report.results)


@pytest.fixture(scope="module")
def event_hang(tmp_path_factory) -> str:
    """The CPU waits on an event nobody sets: the wait times out."""
    path = str(tmp_path_factory.mktemp("event_hang") / "event_hang.kfdtrace")
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        out, q = gpu.alloc(4096, "gtt", name="out"), gpu.sdma_queue()
        lone = system.event()
        q.fill(out, 9, 4096).sync()
        with pytest.raises(WaitTimeout):
            lone.wait(0.2)
    assert [w.fields["ok"] for w in records(path, "event_wait")] == [False]
    return path


def test_recorded_event_wait_timeout_replays_as_the_same_hang(event_hang):
    report = replay_trace(event_hang, Options(timeout=5), emulate="gfx1100")
    assert report.status == EXIT_HANG, report.lines()
    assert "the recording hung at the same wait" in report.lines()[-1] and "event" in report.lines()[-1]


def test_recorded_event_wait_timeout_completing_in_the_replay_is_a_difference(event_hang, tmp_path):
    setting = str(tmp_path / "set.kfdtrace")
    rewrite(event_hang, setting, lambda rec, r, w: [("event_set", {"t": 0, "event": rec.fields["event"]}),
                                                    (rec.type, rec.fields)] if rec.type == "event_wait" else
            rec.fields)
    report = replay_trace(setting, Options(timeout=5), emulate="gfx1100")
    assert report.status == EXIT_DIVERGED, report.lines()
    assert "completed in the replay, but timed out after 0.2 s in the recording" in report.lines()[-1]


# -- the target -------------------------------------------------------------------------------------------


def test_emulate_recorded_opens_the_recorded_gpus_through_open_syscalls():
    opened = []
    with wrapping(lambda syscalls: opened.append(syscalls) or syscalls):
        report = replay_trace(sample("peer_ring-2xgfx942"), Options(), emulate_recorded=True)
    assert report.status == EXIT_OK and len(opened) == 1 and opened[0].name == "emulated"
    with TraceReader(sample("peer_ring-2xgfx942")) as r:
        recorded = [g["gpu_id"] for g in r.header["gpus"]]
    assert [f"id {g:#x}" in t for g, t in zip(recorded, report.target, strict=True)] == [True, True]


def test_open_syscalls_emulates_a_given_topology():
    topology = emulated_topology(["gfx90a", "gfx1201"])
    syscalls = open_syscalls(topology=topology)
    assert [n.gpu_id for n in read_topology(syscalls).gpus] == [n.gpu_id for n in topology.gpus]
    with pytest.raises(ValueError, match="give one of"):
        open_syscalls("gfx942", topology=topology)


def test_a_packet_writing_a_queues_own_pointers_is_refused_not_a_vm_fault(tmp_path):
    """Campaign 47's bug17: a copy into a freed buffer's address, which the driver had reused for a queue's
    pointers page: the recording wrote there, the replay (whose queues keep theirs elsewhere) took the survey's
    translation and faulted: a HANG verdict for a recording that did not fault. It is refused."""
    path = str(tmp_path / "ptrs.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        src = gpu.alloc(4096, "gtt", name="src")
        src.write(bytes(range(256)) * 16)
        for _ in range(20):  # the freed address, reused for the queue's pointers (unless another thread's
            gone = gpu.alloc(4096, "gtt", name="gone")  # mapping took it first)
            addr = gone.va
            gone.free()
            bad = gpu.sdma_queue(name="bad")
            if bad.ptrs.va == addr:
                break
            bad.destroy()
        else:
            pytest.fail("the driver never reused a freed address for a queue's pointers")
        s = system.semaphore("s")
        bad.copy(addr, src, 4096).signal(s, 1).submit()
        s.wait(1, 5)
    # in a process of its own, where the buffers keep their recorded addresses and the survey's translations are
    # taken (in this one they move, and the replay translates afresh)
    done = subprocess.run([sys.executable, "-m", "kfdtrace.replay.cli", path, "--emulate-recorded"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 3 and "COPY_LINEAR at byte 0x0: dst=" in done.stderr and \
        "is in no recorded buffer; refusing to submit it" in done.stderr, done.stdout + done.stderr


def _peer_read_after_unmap(path: str, then_remap: bool) -> str:
    """GPU 1's SDMA reads a buffer of GPU 0's that was mapped to GPU 1 and then unmapped from it (its raw address:
    the driver's own check passed by); with `then_remap` mapped again first. What the wait for the copy saw."""
    with record(path), System.open(emulate="gfx942,gfx942") as system:
        g0, g1 = system.devices
        shared = g0.alloc(65536, "vram", name="shared", map_to=(g1,))
        out = g1.alloc(65536, "gtt", name="out")
        shared.write(b"\x5a" * 65536)
        shared.unmap_from(g1)
        if then_remap:
            shared.map_to(g1)
        done = system.semaphore("done")
        g1.sdma_queue(name="peer").copy(out, shared.va, 65536).signal(done, 1).submit()
        try:
            done.wait(1, timeout=5)
        except GpuFault as exc:
            return str(exc)
        return "copied" if out.read(0, 4) == b"\x5a" * 4 else "differs"


@pytest.mark.parametrize("then_remap", [False, True])
def test_a_buffer_unmapped_from_a_gpu_faults_its_access_there_as_recorded(tmp_path, then_remap):
    """Campaign 95: replay had no handler for `unmap` records, so the peer read that faulted in the recording
    completed in the replay (DIVERGED on an honest trace)."""
    path = str(tmp_path / "unmapped.kfdtrace")
    seen = _peer_read_after_unmap(path, then_remap)
    assert seen == "copied" if then_remap else "VM fault" in seen
    report = replay_trace(path, Options(timeout=5), emulate_recorded=True)
    assert report.status == (EXIT_OK if then_remap else EXIT_HANG), report.lines()
    if not then_remap:
        assert "the recording's GPU stopped a queue at the same wait" in "\n".join(report.lines())


def test_an_unmap_keeps_a_target_device_another_recorded_gpu_still_maps(tmp_path):
    """With both recorded GPUs on one device (--device 0), GPU 1's unmap leaves the buffer mapped there for GPU 0's
    own copy after it (and GPU 1's copy before it reads it)."""
    path = str(tmp_path / "merged.kfdtrace")
    with record(path), System.open(emulate="gfx942,gfx942") as system:
        g0, g1 = system.devices
        shared = g0.alloc(4096, "vram", name="shared", map_to=(g1,))
        out0, out1 = g0.alloc(4096, "gtt", name="out0"), g1.alloc(4096, "gtt", name="out1")
        shared.write(bytes(range(256)) * 16)
        g1.sdma_queue(name="peer").copy(out1, shared, 4096).sync()
        shared.unmap_from(g1)
        g0.sdma_queue(name="own").copy(out0, shared, 4096).sync()
        assert out0.read() == out1.read() == bytes(range(256)) * 16
    report = replay_trace(path, Options(timeout=5), emulate="gfx1100", device=0)
    assert report.status == EXIT_OK, report.lines()
    assert report.results[0].verified >= 2


@pytest.mark.parametrize("kind", ["map", "unmap"])
def test_a_map_or_unmap_naming_a_gpu_the_header_lacks_is_refused(tmp_path, kind):
    """Campaign 95: a `map` record naming an unknown GPU was dropped silently (an `alloc` naming one is refused)."""
    src, path = str(tmp_path / "both.kfdtrace"), str(tmp_path / f"bad-{kind}.kfdtrace")
    _peer_read_after_unmap(src, then_remap=True)
    edited = []

    def edit(rec, r, w):
        if rec.type != kind or edited:
            return rec.fields
        edited.append(rec.n)
        return {**rec.fields, "gpus": [0x1234]}
    rewrite(src, path, edit)
    assert edited
    with pytest.raises(ReplayError, match=rf"record {edited[0]} \({kind} of buffer handle 0x[0-9a-f]+\) names GPU "
                                          r"0x1234, which the trace's header does not list"):
        replay_trace(path, Options(timeout=5), emulate="gfx942,gfx942")


_NO_BUFFER = r"record \d+ \(free\): no buffer of handle 0x[0-9a-f]+ is allocated at 0x[0-9a-f]+ \(corrupt trace\)"


@pytest.mark.parametrize("lie, message", [
    ("free twice", _NO_BUFFER),
    ("free first", _NO_BUFFER),
    ("destroy twice", r"record \d+ \(queue_destroy\): queue \d+ is not there \(never created, or destroyed\) "
                      r"\(corrupt trace\)")])
def test_a_free_or_queue_destroy_of_what_is_not_there_is_a_corrupt_trace(tmp_path, lie, message):
    """Campaign 96: a free recorded twice, or before its alloc, and a queue destroyed twice, replayed OK (capture
    records neither: the kernel refuses them), where a doorbell of a queue not there is a corrupt trace."""
    src, path = sample("sdma_stress-gfx942"), str(tmp_path / "lie.kfdtrace")
    with TraceReader(src) as r:
        first_free = next(rec for rec in r.records(["free"]))
    done = []

    def edit(rec, r, w):
        if done:
            return rec.fields
        if lie == "free first" and rec.type == "alloc" and rec.fields["va"] == first_free.fields["va"]:
            done.append(rec.n)
            return [("free", first_free.fields), ("alloc", rec.fields)]
        if lie == "free twice" and rec.n == first_free.n or lie == "destroy twice" and rec.type == "queue_destroy":
            done.append(rec.n)
            return [(rec.type, rec.fields)] * 2
        return rec.fields
    rewrite(src, path, edit)
    assert done
    with pytest.raises(BadInput, match=message):
        replay_trace(path, Options(timeout=5), emulate="gfx942")


def test_a_trace_of_a_second_backend_is_refused_naming_it(tmp_path):
    """Campaign 98: a program that opened the GPUs twice (each emulated System its own machine, whose handles start
    over) replayed as a corrupt trace ('a handle given twice'), and one opening other GPUs the second time as a
    trace this target cannot run. The records after the second backend mix two machines' handles."""
    path = str(tmp_path / "twice.kfdtrace")
    with record(path):
        for target in ("gfx942", "gfx1100"):
            with System.open(emulate=target) as system:
                gpu = system.devices[0]
                gpu.sdma_queue().fill(gpu.alloc(4096, "gtt", name="out"), 7, 4096).sync()
    with pytest.raises(ReplayError, match=r"record \d+ \(backend\): the program opened a second emulated backend "
                                          r"\(gfx1100\) beside the one the trace's header describes"):
        replay_trace(path, Options(timeout=5), emulate="gfx942")


def test_a_buffer_mapped_to_two_recorded_gpus_on_one_target_device_frees(tmp_path):
    """Campaign 97: with recorded GPUs 1 and 2 on target device 1 (--gpu-map), a buffer mapped to both was mapped
    there twice over (Buffer.map_to took the device twice), so its free unmapped it twice, which the kernel
    refuses."""
    path = str(tmp_path / "three.kfdtrace")
    with record(path), System.open(emulate="gfx942,gfx942,gfx942") as system:
        g0, g1, g2 = system.devices
        shared = g0.alloc(4096, "vram", name="shared", map_to=(g1, g2))
        out = g2.alloc(4096, "gtt", name="out")
        shared.write(bytes(range(256)) * 16)
        g2.sdma_queue().copy(out, shared, 4096).sync()
        shared.free()
    report = replay_trace(path, Options(timeout=5, gpu_map={0: 0, 1: 1, 2: 1}), emulate="gfx942,gfx942")
    assert report.status == EXIT_OK and report.results[0].verified >= 1, report.lines()


def reallocated(path: str) -> bool:
    """A copy queued behind a wait reads `a` and writes `out`; the program frees `a` and `out`, makes `b` and `got`
    at their addresses and writes `b`, then releases the wait: the GPU reads `b` and writes `got`. False when
    another thread's mapping took a freed address meanwhile (try again)."""
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        q, go, done = gpu.sdma_queue(name="q"), system.semaphore("go"), system.semaphore("done")
        a, out = gpu.alloc(65536, "gtt", name="a"), gpu.alloc(8192, "gtt", name="out")
        a.write(b"A" * 65536)
        q.wait(go, 1).copy(out, a, 4096).signal(done, 1).submit()
        va, to = a.va, out.va
        try:
            a.free()  # each made again at once: a thread's stack may take a hole left longer
            b = gpu.alloc(8192, "gtt", name="b", va=va)
            out.free()
            got = gpu.alloc(8192, "gtt", name="got", va=to)
        except AddressInUse:
            go.signal(1)
            return False
        b.write(b"B" * 8192)
        go.signal(1)
        done.wait(1)
        assert got.read(0, 4096) == b"B" * 4096
    return True


def test_packets_queued_before_a_free_reach_the_buffer_made_at_its_address(tmp_path, monkeypatch):
    """Campaign 105: capture took the copy to write the freed `out` (no checkpoint compared `got`, which it wrote),
    and a replay moving buffers translated the copy to the freed buffers' places: a VM fault, HANG. A buffer made at
    a freed one's recorded address goes where the replay put that one; where it cannot, the fault there says why
    (exit 3)."""
    path = str(tmp_path / "realloc.kfdtrace")
    assert any(reallocated(path) for _ in range(20))
    with TraceReader(path) as r:
        assert any(b["name"] == "got" for c in r.records(["checkpoint"]) for b in c.fields["buffers"])
    for relocate in ("auto", "always"):
        report = replay_trace(path, Options(relocate=relocate), emulate="gfx942")
        assert report.status == EXIT_OK and report.results[0].verified >= 1, report.lines()
    monkeypatch.setattr(Instance, "_alloc", lambda self, dev, f, opts: dev.alloc(f["size"], f["domain"], **opts))
    with pytest.raises(ReplayError, match=r"in the memory of .*, which this replay freed: packets submitted before "
                                          r"the free ran after .* took its recorded address"):
        replay_trace(path, Options(relocate="always"), emulate="gfx942")
