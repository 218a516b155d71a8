"""Replay: a hang in the recording replays as the same hang, every queue drains, and empty traces are bad input."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from kfdtrace.capture import record
from kfdtrace.driver import System
from kfdtrace.driver.aql_queue import HsaSignal
from kfdtrace.driver.errors import GpuFault, WaitTimeout
from kfdtrace.replay.engine import EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_HANG, EXIT_OK, BadInput, Options
from kfdtrace.replay.session import replay_trace
from kfdtrace.traces.format import TraceError, TraceReader
from tests.emulated import slow_sdma
from tests.test_replay import replay, rewrite, sample

RECORDED_TIMEOUT = 0.3


@pytest.fixture(scope="module")
def hung(tmp_path_factory) -> str:
    """300 good copies, then a submission waiting on a semaphore nobody signals: its CPU wait times out."""
    path = str(tmp_path_factory.mktemp("hung") / "hung.kfdtrace")
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        src, dst = gpu.alloc(4096, "gtt", name="src"), gpu.alloc(4096, "gtt", name="dst")
        src.write(bytes(range(256)) * 16)
        q, done, never = gpu.sdma_queue(), system.semaphore("done"), system.semaphore("never")
        for i in range(300):
            q.copy(dst, src, 64, dst_offset=i % 64 * 64, src_offset=i % 64 * 64)
        q.signal(done, 1).submit()
        done.wait(1)
        q.wait(never, 1).signal(done, 2).submit()
        with pytest.raises(WaitTimeout):
            done.wait(2, timeout=RECORDED_TIMEOUT)
    with TraceReader(path) as r:
        assert [w.fields["ok"] for w in r.records({"cpu_wait"})][-2:] == [True, False]
    return path


def test_recorded_hang_replays_as_the_same_hang(hung):
    t0 = time.monotonic()
    res = replay(hung, "--emulate", "gfx1100", "--timeout", "5")
    assert res.returncode == EXIT_HANG, res.stdout + res.stderr
    hang = res.stdout.splitlines()[-1]
    assert hang.startswith("HANG:") and "the recording hung at the same wait" in hang
    assert "POLL_REGMEM" in hang and "rptr=" in hang and "wptr=" in hang
    assert f"within {RECORDED_TIMEOUT:g} s" in hang  # min(recorded timeout, --timeout)
    assert time.monotonic() - t0 < 5


def test_replay_completing_where_the_recording_hung_is_a_difference(hung, tmp_path):
    """The semaphore the stuck submission waits on gets signalled before the timed-out wait: the replay
    completes what the recording could not."""
    fixed = str(tmp_path / "fixed.kfdtrace")
    with TraceReader(hung) as r:
        never = next(b.fields["va"] for b in r.records({"buffer"}) if b.fields["name"] == "semaphores")
    last_wait = []

    def signal_first(rec, reader, writer):
        if rec.type == "cpu_wait" and not rec.fields["ok"]:
            last_wait.append(rec.n)
            return [("cpu_signal", {"t": rec.fields["t"], "addr": never + semaphore_offset(hung, "never"),
                                    "value": 1, "name": "never"}), (rec.type, rec.fields)]
        return rec.fields

    rewrite(hung, fixed, signal_first)
    assert last_wait
    report = replay_trace(fixed, Options(timeout=5), emulate="gfx1100")
    assert report.status == EXIT_DIVERGED, report.lines()
    assert "completed in the replay, but timed out after 0.3 s in the recording" in report.lines()[-1]


def semaphore_offset(path: str, name: str) -> int:
    """Where in the semaphore pool the recorded program's semaphore `name` lives: the address its POLL_REGMEM
    polls (high dword, so 4 past the semaphore)."""
    from kfdtrace.driver.sdma import DIALECTS

    with TraceReader(path) as r:
        pool = next(b.fields["va"] for b in r.records({"buffer"}) if b.fields["name"] == "semaphores")
        dialect = DIALECTS[next(r.records({"queue"})).fields["dialect"]]
        for d in r.records({"doorbell"}):
            for p in dialect.iter_packets(d.fields["ring"]):
                if p.name == "POLL_REGMEM":
                    return p.fields["addr"] - 4 - pool
    raise AssertionError(f"no wait on {name}")


def test_recorded_hang_stops_the_replay(hung, tmp_path):
    """What follows a recorded hang is the program's error handling: not replayed (a later submission that
    would fault is never submitted)."""
    report = replay_trace(hung, Options(timeout=5), emulate="gfx1100")
    assert report.status == EXIT_HANG
    with TraceReader(hung) as r:
        assert report.results[0].submissions == sum(1 for _ in r.records({"doorbell"}))
        assert report.results[0].checkpoints == sum(1 for c in r.records({"checkpoint"}))


def _stuck_responder(path: str, edit_destroy=lambda fields: fields, killed: bool = False) -> str:
    """ping_pong without its last CPU signal and what follows it of CPU waits and checkpoints: the responder
    queue stays in POLL_REGMEM and no CPU wait notices. `killed`: the program dies there (nothing destroyed or
    freed)."""
    with TraceReader(sample("ping_pong-gfx1100")) as r:
        last_signal = max(s.n for s in r.records({"cpu_signal"}))

    def edit(rec, reader, writer):
        if rec.n >= last_signal and (killed or rec.type in ("cpu_signal", "cpu_wait", "checkpoint")):
            return None
        return edit_destroy(dict(rec.fields)) if rec.type == "queue_destroy" else rec.fields

    rewrite(sample("ping_pong-gfx1100"), path, edit)
    return path


def test_queue_stuck_with_no_wait_after_it_is_a_hang(tmp_path):
    path = _stuck_responder(str(tmp_path / "stuck.kfdtrace"))  # an older trace: queue_destroy has no rptr
    res = replay(path, "--emulate", "gfx1100", "--timeout", "0.3")
    assert res.returncode == EXIT_HANG, res.stdout + res.stderr
    hang = res.stdout.splitlines()[-1]
    assert "did not drain within 0.3 s" in hang and "destroyed at record" in hang and "POLL_REGMEM" in hang
    # each queue by its recorded name first (campaign 66: only the replay's own "replay q0" was there)
    assert re.search(r"queues: queue \d+ \(created at record \d+\): queue replay q\d+ \(id \d+\) rptr=", hang), hang


def unreachable(src: str, dst: str) -> None:
    """`src` copied to `dst` with its first CPU wait waiting for a value nothing gives."""
    edited = []

    def edit(rec, reader, writer):
        if rec.type == "cpu_wait" and not edited:
            edited.append(rec.n)
            return {**rec.fields, "value": 1 << 62}
        return rec.fields

    rewrite(src, dst, edit)


def test_a_hang_of_moved_buffers_names_the_stuck_packets_addresses_as_recorded(tmp_path):
    """Campaign 66: relocated, the packets a HANG report showed polled addresses in no recorded buffer."""
    path = str(tmp_path / "t.kfdtrace")

    unreachable(sample("ping_pong-gfx1100"), path)
    report = replay_trace(path, Options(relocate="always", timeout=0.3), emulate="gfx1100")
    hang = report.lines()[-1]
    assert report.status == EXIT_HANG and "queues (addresses as this replay placed its buffers): " in hang, hang
    named = r"at: POLL_REGMEM .* \(addr 0x[0-9a-f]+ is [\w ]+\+0x[0-9a-f]+, recorded at 0x[0-9a-f]+\)"
    assert re.search(named, hang), hang


def test_queue_never_destroyed_must_drain_by_the_end(tmp_path):
    path = _stuck_responder(str(tmp_path / "stuck.kfdtrace"), killed=True)
    report = replay_trace(path, Options(timeout=0.3), emulate="gfx1100")
    assert report.status == EXIT_HANG and "the trace ends" in report.results[0].hang


# A program ending with a queue waiting for a semaphore nobody signals, never destroying it: it sleeps argv[1]
# seconds first, and exits with status argv[2]
LEFT_WITH_WORK = (
    "import sys, time\n"
    "from kfdtrace.driver import System\n"
    "system = System.open()\n"
    "gpu = system.devices[0]\n"
    "a, b = gpu.alloc(4096, 'gtt', name='a'), gpu.alloc(4096, 'gtt', name='b')\n"
    "q, never, done = gpu.sdma_queue(), system.semaphore('never'), system.semaphore('done')\n"
    "q.copy(b, a, 4096).signal(done, 1).submit()\n"
    "done.wait(1)\n"
    "q.wait(never, 1).copy(b, a, 4096).signal(done, 2).submit()\n"
    "time.sleep(float(sys.argv[1]))\n"
    "sys.exit(int(sys.argv[2]) if len(sys.argv) > 2 else 0)\n")


def test_a_queue_the_recording_ended_with_work_left_in_may_stand_still_at_the_end(tmp_path):
    """The program ends with a queue waiting for a semaphore nobody signals, and never destroys it: the same
    verdict as when it destroys it (it was HANG: the end of the trace asked every queue to drain). Killed there,
    the recording cannot say whether its queues drained: HANG, saying so."""
    script = tmp_path / "left.py"
    script.write_text(LEFT_WITH_WORK)
    ended, killed = str(tmp_path / "ended.kfdtrace"), str(tmp_path / "killed.kfdtrace")
    env = {**os.environ, "KFDTRACE_EMULATE": "gfx942"}
    capture = [sys.executable, "-m", "kfdtrace.capture.cli", "run"]
    assert subprocess.run([*capture, "-o", ended, str(script), "0"], env=env, capture_output=True).returncode == 0
    with TraceReader(ended) as r:
        assert r.summary["undrained"] == [0]
    report = replay_trace(ended, Options(timeout=2), emulate="gfx942")
    assert report.status == EXIT_OK and "still had work when destroyed or at the end" in report.lines()[-1]
    assert "at the recording's end" in report.lines()[-1]
    proc = subprocess.Popen([*capture, "-o", killed, str(script), "60"], env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _flushed_doorbells(killed, 2):
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    report = replay_trace(killed, Options(timeout=0.5), emulate="gfx942")
    assert report.status == EXIT_HANG and "where the recording was cut short" in report.results[0].hang


def test_a_wait_that_took_long_in_the_recording_may_take_long_in_the_replay(tmp_path):
    """A big copy the recording waited 2 s for: --timeout alone made its replay a HANG wherever the copy took
    longer than that; the replay waits WAIT_SLACK times what the recording's wait took."""
    path, slow = str(tmp_path / "copy.kfdtrace"), str(tmp_path / "slow.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        a, b = gpu.alloc(32 << 20, "gtt", name="a"), gpu.alloc(32 << 20, "gtt", name="b")
        done = system.semaphore("done")
        gpu.sdma_queue().copy(b, a, 32 << 20).signal(done, 1).submit()
        done.wait(1)
    with TraceReader(path) as r:
        waited = next(w.fields for w in r.records({"cpu_wait"}))
        rung = max(d.fields["t"] for d in r.records({"doorbell"}) if d.fields["t"] <= waited["t"])
    quick = str(tmp_path / "quick.kfdtrace")
    for out, t in ((quick, rung), (slow, waited["t"] + 2_000_000_000)):  # the wait returned at once, or 2 s later
        rewrite(path, out, lambda rec, reader, writer, t=t: {**rec.fields, "t": t} if rec.type == "cpu_wait"
                else rec.fields)
    assert replay_trace(quick, Options(timeout=0.001), emulate="gfx942").status == EXIT_HANG  # the copy is longer
    report = replay_trace(slow, Options(timeout=0.001), emulate="gfx942")
    assert report.status == EXIT_OK, report.lines()


def _flushed_doorbells(path: str, n: int) -> bool:
    try:
        with TraceReader(path) as r:
            return sum(1 for _ in r.records({"doorbell"})) >= n
    except TraceError:  # not a trace yet
        return False


def _last_doorbell(path: str) -> int:
    with TraceReader(path) as r:
        return [d.fields["value"] for d in r.records({"doorbell"})][-1]


@pytest.mark.parametrize("end", ["wait", "destroy"])
def test_queues_still_moving_past_the_timeout_are_no_hang(end, tmp_path):
    """Campaign 66: long copies the CPU saw finish by polling memory (no recorded wait), then a wait that took no
    time in the recording, or the queue's destroy: replayed slower than --timeout, the replay said HANG while the
    copies still ran. A wait or drain ends in a hang only after --timeout in which no queue moved on."""
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        q1, q2 = gpu.sdma_queue(name="long"), gpu.sdma_queue(name="tiny")
        a, b = (gpu.alloc(8 << 20, "vram", cpu_access=False, name=n) for n in "ab")
        out, done = gpu.alloc(4096, "gtt", name="out"), system.semaphore("done")
        for i in range(800):  # 1 MiB each: one copy alone taking longer than --timeout (the first touch of
            at = (i % 8) << 20  # fresh pages costs) would be a hang, whatever the queues did
            q1.copy(b, a, 1 << 20, dst_offset=at, src_offset=at)
        q1.fence(out, 1).signal(done, 1).submit()
        while int.from_bytes(out.read(0, 4), "little") != 1:  # not a recorded wait
            time.sleep(0.001)
        if end == "wait":
            q2.fill(out, 2, 4, offset=64).submit()
            done.wait(1)
        else:
            q1.destroy()
    # the copies take about 0.3 s here, six timeouts; 20 ms was flaky on a loaded machine, whose scheduler may
    # leave the engine's thread that long without a core
    report = replay_trace(path, Options(timeout=0.05), emulate="gfx942")
    assert report.status == EXIT_OK, report.lines()


@pytest.mark.parametrize(("signum", "status", "how"), [(signal.SIGINT, 130, "interrupted"),
                                                       (signal.SIGTERM, 143, "terminated")])
def test_an_interrupted_replay_says_so_in_one_line_and_stops_every_instance(signum, status, how, tmp_path):
    """Campaign 66: Ctrl-C exited with 1, replay's DIVERGED status, and click's 'Aborted!' (SIGTERM with no word),
    and only once every other instance had waited out its own wait. Instances side by side stop at their next
    look."""
    path = str(tmp_path / "t.kfdtrace")

    unreachable(sample("sdma_stress-gfx942"), path)
    run = subprocess.Popen([sys.executable, "-m", "kfdtrace.replay.cli", path, "--concurrent", "3", "--timeout",
                            "600", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(3)  # well into the wait
    run.send_signal(signum)
    out, err = run.communicate(timeout=60)  # not the 600 s the wait would take
    line = f"replay: {how} before the replay ended: no verdict"
    assert run.returncode == status and err == line + "\n", err
    assert json.loads(out) == {"status": status, "error": line}


def test_queue_the_recording_had_drained_must_drain(tmp_path):
    rung = _last_doorbell(sample("ping_pong-gfx1100"))
    path = _stuck_responder(str(tmp_path / "drained.kfdtrace"), lambda f: {**f, "rptr": rung})
    report = replay_trace(path, Options(timeout=0.3), emulate="gfx1100")
    assert report.status == EXIT_HANG and "the recording had drained it" in report.results[0].hang


def test_queue_the_recording_left_stuck_is_destroyed_without_waiting(tmp_path):
    rung = _last_doorbell(sample("ping_pong-gfx1100"))
    path = _stuck_responder(str(tmp_path / "stuck.kfdtrace"), lambda f: {**f, "rptr": rung - 32})
    t0 = time.monotonic()
    report = replay_trace(path, Options(timeout=5), emulate="gfx1100")
    assert report.status == EXIT_OK, report.lines()
    assert time.monotonic() - t0 < 3


def _faulted(path: str, wait: str) -> None:
    """A copy reading 4 KiB past the end of its source: the GPU stops the queue, and the CPU's wait (`wait`:
    on a semaphore, an event or an AQL signal) ends in a GpuFault, recorded as such."""
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        src, dst = gpu.alloc(4096, "gtt", name="src"), gpu.alloc(8192, "gtt", name="dst")
        q = gpu.sdma_queue(name="q").copy(dst.va, src.va, 8192)
        if wait == "semaphore":
            done = system.semaphore("done")
            q.signal(done, 1).submit()
            ends = lambda: done.wait(1, timeout=5)  # noqa: E731
        elif wait == "event":
            event = system.event()
            q.trap(event.id).submit()
            ends = lambda: event.wait(timeout=5)  # noqa: E731
        else:
            signal = HsaSignal(system, 1, "never")  # nothing decrements it: the fault ends the wait
            q.submit()
            ends = lambda: signal.wait(0, timeout=5)  # noqa: E731
        with pytest.raises(GpuFault, match="VM fault"):
            ends()


@pytest.mark.parametrize("wait", ["semaphore", "event", "signal"])
def test_a_wait_a_gpu_fault_ended_replays_as_the_same_fault(tmp_path, wait):
    path = str(tmp_path / "fault.kfdtrace")
    _faulted(path, wait)
    with TraceReader(path) as r:
        (ended,) = [w.fields for w in r.records({"cpu_wait", "event_wait", "signal_wait"})]
    assert not ended["ok"] and "VM fault at address" in ended["fault"], ended
    for target in ("gfx942", "gfx1100"):
        res = replay(path, "--emulate", target, "--timeout", "5")
        assert res.returncode == EXIT_HANG, res.stdout + res.stderr
        hang = res.stdout.splitlines()[-1]
        assert hang.startswith("HANG:") and "VM fault" in hang and "COPY_LINEAR" in hang, hang
        assert "the recording's GPU stopped a queue at the same wait" in hang, hang


def test_instances_side_by_side_each_name_their_own_fault_and_queues(tmp_path):
    """Campaign 120: the GPU faults are the process's, and every instance of --concurrent named the first one's
    address and every instance's queues. GPU 1 reads GPU 0's VRAM, not mapped to it: each instance's fault is in
    its own (moved) buffer, and each names only its own queues."""
    import numpy as np

    path = str(tmp_path / "unmapped.kfdtrace")
    with record(path), System.open(emulate="gfx942,gfx942") as system:
        g0, g1 = system.devices
        q0, q1 = g0.sdma_queue(name="q0"), g1.sdma_queue(name="q1")
        src, vram, out = (g0.alloc(4096, "gtt", name="src"), g0.alloc(4096, "vram", cpu_access=False, name="v0"),
                          g1.alloc(4096, "gtt", name="out"))
        a, b = system.semaphore("a"), system.semaphore("b")
        src.write(np.arange(4096, dtype=np.uint8))
        q0.copy(vram, src, 4096).signal(a, 1).submit()
        q1.wait(a, 1).copy(out, vram.va, 4096).signal(b, 1).submit()
        with pytest.raises(GpuFault, match="VM fault"):
            b.wait(1, timeout=5)
    res = replay(path, "--emulate-recorded", "--concurrent", "3", "--timeout", "5", "--json")
    assert res.returncode == EXIT_HANG, res.stdout + res.stderr
    hangs = [i["hang"].split("; the recording's")[0] for i in json.loads(res.stdout)["loops"][0]]
    ids = [set(re.findall(r"\(id (\d+)\)", h)) for h in hangs]
    assert all(ids) and sum(map(len, ids)) == len(set().union(*ids)), hangs  # no queue named twice
    for h in hangs:
        va = re.search(r"VM fault at address (0x[0-9a-f]+)", h)[1]
        assert f"src={va}" in h or "in none of this instance's buffers" in h, h
    assert any("in none" not in h for h in hangs), hangs


def test_a_dispatch_running_after_its_code_object_was_freed_replays_as_the_same_fault(tmp_path):
    """Campaign 87: a dispatch waits on a semaphore the CPU signals after freeing the kernel's code object, so
    the GPU reads the freed object and faults. The replay kept the object loaded for every loop to share, ran
    the kernel, and said DIVERGED; an object freed before a recorded fault is now each loop's own and freed where
    the recording freed it."""
    import numpy as np

    from kfdtrace.driver.kernels.build import BUILT

    path = str(tmp_path / "freed.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        program = gpu.load(BUILT / "corpus.hipfb")  # every family's build: a replay on gfx1100 needs it
        bufs = [gpu.alloc(256, "gtt", name=name) for name in "abc"]
        go, done = system.semaphore("go"), system.semaphore("done")
        q = gpu.compute_queue(name="q")
        q.wait(go, 1).dispatch(program.kernel("vector_add"), (64,), (64,), *bufs, np.uint32(64)).signal(done, 1)
        q.submit()
        program.free()
        go.signal(1)
        with pytest.raises(GpuFault, match="VM fault"):
            done.wait(1, timeout=30)
    for args in (("--emulate", "gfx942"), ("--emulate", "gfx1100"), ("--emulate", "gfx942", "--loop", "2")):
        res = replay(path, *args, "--timeout", "5")
        assert res.returncode == EXIT_HANG, res.stdout + res.stderr
        assert "the recording's GPU stopped a queue at the same wait" in res.stdout, res.stdout


def test_a_dispatch_of_a_freed_code_object_is_refused_naming_the_free(tmp_path):
    """Campaign 89: a dispatch submitted after its kernel's code object was freed faults in the recording; the
    replay cannot re-derive it, and said that no code object the trace loaded holds the kernel: it now says
    which object held it, and that it was freed."""
    import numpy as np

    from kfdtrace.driver.kernels.device import corpus
    from kfdtrace.replay.translate import ReplayError

    path = str(tmp_path / "stale.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        program = corpus(gpu)
        kernel = program.kernel("vector_add")
        bufs = [gpu.alloc(256, "gtt", name=name) for name in "abc"]
        program.free()
        q = gpu.aql_queue(name="q")
        with pytest.raises(GpuFault, match="VM fault"):
            q.dispatch(kernel, (64,), (64,), *bufs, np.uint32(64))
            q.sync(timeout=30)
    with pytest.raises(ReplayError, match=r"runs kernel descriptor 0x[0-9a-f]+: vector_add of the code object loaded "
                                          r"at 0x[0-9a-f]+, which was freed before"):
        replay_trace(path, Options(timeout=5), emulate="gfx942")


def test_a_queue_a_fault_stopped_is_a_hang_though_the_recording_left_it_with_work(tmp_path):
    """A trace without the wait's record (as kfdtrace before 3.2 wrote it): the queue is destroyed with work left,
    as recorded, but the replay's GPU stopped it; that is no match."""
    path, bare = str(tmp_path / "fault.kfdtrace"), str(tmp_path / "bare.kfdtrace")
    _faulted(path, "semaphore")
    rewrite(path, bare, lambda rec, reader, writer: None if rec.type == "cpu_wait" else rec.fields)
    res = replay(bare, "--emulate", "gfx1100", "--timeout", "5")
    assert res.returncode == EXIT_HANG, res.stdout + res.stderr
    assert "VM fault" in res.stdout.splitlines()[-1] and "still had work" not in res.stdout


def test_replay_completing_a_wait_a_gpu_fault_ended_is_a_difference(tmp_path):
    """The copy is cut to the source's size: the replay's queue completes what the recording's faulted on."""
    path, fixed = str(tmp_path / "fault.kfdtrace"), str(tmp_path / "fixed.kfdtrace")
    _faulted(path, "semaphore")

    def shorten(rec, reader, writer):
        if rec.type == "doorbell" and rec.fields["ring"]:
            ring = bytearray(rec.fields["ring"])
            ring[4:8] = (4095).to_bytes(4, "little")  # the first packet: the copy's count, bytes - 1
            return {**rec.fields, "ring": bytes(ring)}
        return rec.fields
    rewrite(path, fixed, shorten)
    res = replay(fixed, "--emulate", "gfx942", "--timeout", "5")
    assert res.returncode == EXIT_DIVERGED, res.stdout + res.stderr
    assert "completed in the replay, but a GPU fault ended it in the recording" in res.stdout + res.stderr


def test_trace_with_no_submissions_is_bad_input(tmp_path):
    empty = str(tmp_path / "empty.kfdtrace")
    rewrite(sample("ping_pong-gfx1100"), empty, lambda rec, r, w: None if rec.type == "doorbell" else rec.fields)
    with pytest.raises(BadInput, match="no submissions"):
        replay_trace(empty, Options(), emulate="gfx1100")
    res = replay(empty, "--emulate", "gfx1100")
    assert res.returncode == EXIT_BAD_INPUT and len(res.stderr.strip().splitlines()) == 1
    assert "nothing to replay" in res.stderr and res.stdout == ""


def test_trace_without_a_chunk_size_is_bad_input(tmp_path):
    bare = str(tmp_path / "bare.kfdtrace")
    rewrite(sample("ping_pong-gfx1100"), bare, lambda rec, r, w: rec.fields,
            header=lambda h: {k: v for k, v in h.items() if k != "chunk_size"})
    res = replay(bare, "--emulate", "gfx1100")
    assert res.returncode == EXIT_BAD_INPUT and "chunk_size" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("family", ["gfx942", "gfx1100"])
def test_a_wait_the_program_retried_after_its_timeout_is_no_hang(family, tmp_path):
    """A poll loop: the CPU waits with a short timeout until a long fill completes. The recording's timed-out
    tries are followed by the try that completed, so they are the program's way of waiting: the replay goes on
    (it stopped at the first with HANG), and a wait that timed out with no try after it stays a hang."""
    path = str(tmp_path / "poll.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        big, out = gpu.alloc(64 << 20, "gtt", name="big"), gpu.alloc(4096, "gtt", name="out")
        q, s = gpu.sdma_queue(name="q"), system.semaphore("s")
        q.fill(big, 0x12345678, 64 << 20).signal(s, 1).submit()
        tries = 0
        while True:
            tries += 1
            try:
                s.wait(1, timeout=0.001)
                break
            except WaitTimeout:
                pass
        q.copy(out, big, 4096).sync()  # after the loop: the replay must get here and verify it
    assert tries > 1
    report = replay_trace(path, Options(), emulate=family)
    assert report.status == EXIT_OK and report.results[0].verified > 0, report.lines()


class _Gave(Exception):
    """The recorded program giving up after its wait timed out."""


@pytest.mark.parametrize("goes_on", [True, False])
def test_a_timeout_the_program_went_on_from_is_waited_out_and_the_replay_goes_on(tmp_path, goes_on):
    """Campaign 113: a program probed that a gated queue was still held (a wait it expected to time out), then
    opened the gate and went on. The replay took the timeout for the recording's hang and stopped there (HANG),
    replaying nothing after it. A timeout the program went on from (it submitted or saw a wait complete later, and
    ended with exit status 0) is waited out as recorded; one it gave up at is still the recording's hang."""
    path = str(tmp_path / "t.kfdtrace")
    n = 16 << 10
    with pytest.raises(_Gave) if not goes_on else contextlib.nullcontext(), record(path), \
            System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        out, out2 = gpu.alloc(n, "gtt", name="out"), gpu.alloc(n, "gtt", name="out2")
        q, q2 = gpu.sdma_queue(name="q"), gpu.sdma_queue(name="q2")
        gate, done, fin = system.semaphore("gate"), system.semaphore("done"), system.semaphore("fin")
        q.wait(gate, 1).fill(out, 0x01020304, n).signal(done, 1).signal(fin, 1).submit()
        with pytest.raises(WaitTimeout):
            done.wait(1, timeout=0.05)
        gate.signal(1)
        fin.wait(1)
        if not goes_on:
            raise _Gave
        q2.fill(out2, 0x0A0B0C0D, n).signal(fin, 2).submit()
        fin.wait(2)
    report = replay_trace(path, Options(timeout=3), emulate="gfx942")
    if goes_on:
        assert report.status == EXIT_OK and report.loops[0][0].verified >= 2, report.lines()
    else:
        assert report.status == EXIT_HANG and "the recording hung at the same wait" in report.lines()[-1], \
            report.lines()


def test_a_timeout_the_program_went_on_from_that_completes_in_the_replay_is_noted(tmp_path, monkeypatch):
    """The recording's wait timed out only because its GPU was slow (here a slowed fill), and the program went on:
    the replay's completes, which is noted, and what the checkpoints after it compare decides the verdict."""
    path = str(tmp_path / "t.kfdtrace")
    with monkeypatch.context() as patch:
        slow_sdma(patch, "_const_fill")
        with record(path), System.open(emulate="gfx942") as system:
            gpu = system.devices[0]
            out, q = gpu.alloc(4096, "gtt", name="out"), gpu.sdma_queue(name="q")
            done, fin, gate = system.semaphore("done"), system.semaphore("fin"), system.semaphore("gate")
            q.wait(gate, 1).fill(out, 0x01020304, 4096).signal(done, 1).signal(fin, 1).submit()
            gate.signal(1)  # (the engine's thread fills: the CPU goes on to wait)
            with pytest.raises(WaitTimeout):
                done.wait(1, timeout=0.2)
            fin.wait(1)
    report = replay_trace(path, Options(timeout=3), emulate="gfx942")
    assert report.status == EXIT_OK and report.loops[0][0].verified >= 1, report.lines()
    assert any("completed in the replay, but timed out after 0.2 s in the recording, which went on" in n
               for n in report.lines()), report.lines()


SPIN_UNTIL_RELEASED = r"""
kernel void spin(global volatile int *flag, global int *out) {
    flag[1] = 1;  /* started */
    int i = 0;
    while (flag[0] == 0) { i++; }
    out[__builtin_amdgcn_workitem_id_x()] = i;
}
"""


@pytest.mark.parametrize("aql", [False, True])
def test_a_queue_destroyed_while_its_kernel_runs_is_destroyed_there_in_the_replay(tmp_path, aql):
    """A kernel spins on a flag nobody sets; once it runs, the program destroys its queue (the kernel stops) and
    goes on. The replay waited for the queue to settle, which a running kernel never does: HANG (a known gap).
    The queue is now destroyed once the replay's stands at the launch the recording's stood at."""
    from tests.test_shader import built

    code = built(tmp_path, SPIN_UNTIL_RELEASED, "gfx942")
    path = str(tmp_path / "spin.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        flag, out, after = (gpu.alloc(4096, "gtt", name=n) for n in ("flag", "out", "after"))
        q = gpu.aql_queue(name="q") if aql else gpu.compute_queue(name="q")
        q.dispatch(gpu.load(code).kernel("spin"), (64,), (64,), flag, out)
        if not aql:
            q.submit()
        deadline = time.monotonic() + 30
        while flag.read(4, 4) != b"\1\0\0\0":
            assert time.monotonic() < deadline, "the kernel did not start"
        q.destroy()
        sd, done = gpu.sdma_queue(name="sd"), system.semaphore("done")
        sd.fill(after, 0x5A5A5A5A, 4096).signal(done, 1).submit()
        done.wait(1)
        assert after.read(0, 4) == b"\x5a" * 4
    report = replay_trace(path, Options(timeout=2), emulate="gfx942")
    assert report.status == EXIT_OK, report.lines()
    assert [label.split(" (")[0] for label in report.results[0].left] == ["queue 0"], report.lines()
    assert report.results[0].checkpoints, "the fill after the destroy was not checked"
