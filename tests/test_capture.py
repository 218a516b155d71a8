"""Capture: what a trace holds, crash safety, workload status, and one-line errors on bad traces."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import xxhash

from kfdtrace.capture import record
from kfdtrace.driver import System
from kfdtrace.driver import kfd_ioctl as K
from kfdtrace.driver.sdma import DIALECTS
from kfdtrace.driver.signals import BIAS
from kfdtrace.traces.format import TraceReader

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


def records(path, *types):
    with TraceReader(path) as r:
        return [rec for rec in r.records(set(types) if types else None)]


def capture(*args: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kfdtrace.capture.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=env)


def kfdtrace(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kfdtrace", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def copy_trace(tmp_path_factory):
    """One recorded workload: a named GTT source copied to VRAM and back, with a fence, on gfx1100."""
    path = str(tmp_path_factory.mktemp("cap") / "copy.kfdtrace")
    payload = bytes(range(256)) * 1024  # 256 KiB: four 64 KiB chunks
    with record(path, name="unit"), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        src, mid = gpu.alloc(len(payload), "gtt", name="src"), gpu.alloc(len(payload), "vram", name="mid")
        out = gpu.alloc(len(payload), "gtt", name="out")
        src.write(payload)
        q = gpu.sdma_queue(name="q")
        q.copy(mid, src, len(payload)).copy(out, mid, len(payload)).fence(out, 0xC0DE, offset=16).sync()
        result = out.read()
    return path, payload, result


def test_header_holds_machine_and_topology(copy_trace):
    path, _, _ = copy_trace
    with TraceReader(path) as r:
        h = r.header
        assert h["name"] == "unit" and h["backend"] == "emulated"
        assert h["kfd_version"] == [K.KFD_IOCTL_MAJOR_VERSION, K.KFD_IOCTL_MINOR_VERSION]
        assert [g["target"] for g in h["gpus"]] == ["gfx1100"] and h["gpus"][0]["family"] == "RDNA3"
        assert h["topology"]["nodes"][1]["properties"]["gfx_target_version"] == 110000
        assert h["host"]["kernel"] == os.uname().release
        assert not r.recovered and r.summary["submissions"] >= 1


def test_summary_counts_packets_by_dialect_and_name_and_undecodable_submissions(tmp_path):
    path = str(tmp_path / "counts.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        q = gpu.sdma_queue()
        buf = gpu.alloc(4096, "gtt")
        q.fence(buf, 1).fence(buf, 2, offset=4).submit()
        q.emit(bytes([0x7F, 0, 0, 0])).submit()  # no packet of sdma4.4: the queue stops on it
    with TraceReader(path) as r:
        packets = r.summary["packets"]
    assert packets["sdma4.4:FENCE"] >= 2 and packets["undecodable"] == 1


@pytest.mark.parametrize("fold", [2, 4096])
def test_summary_packet_counts_are_those_of_the_recorded_rings(tmp_path, monkeypatch, fold):
    """Counted by plan as submissions are recorded, folded into per-packet counts (often, with fold=2): the
    same as decoding every recorded ring."""
    from collections import Counter

    from kfdtrace.capture import recorder

    monkeypatch.setattr(recorder, "FOLD_PLANS", fold)
    path = str(tmp_path / "counts.kfdtrace")
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        q, sem = gpu.sdma_queue(), system.semaphore()
        src, dst = gpu.alloc(1 << 16, "gtt"), gpu.alloc(1 << 16, "gtt")
        for i in range(1, 40):  # a few shapes, each repeated, with new values
            q.copy(dst, src, 64 * (i % 3 + 1), dst_offset=64 * i)
            if i % 4 == 0:
                q.fill(dst, i, 256)
            q.signal(sem, i).submit()
        sem.wait(39)
    with TraceReader(path) as r:
        dialect = DIALECTS[r.header["gpus"][0]["sdma"]]
        decoded = Counter(f"{dialect.name}:{p.name}" for rec in r.records(["doorbell"])
                          for p in dialect.iter_packets(rec.fields["ring"]))
        assert r.summary["packets"] == dict(decoded) and decoded[f"{dialect.name}:CONST_FILL"] == 9


def test_every_ioctl_has_about_to_and_result(copy_trace):
    path, _, _ = copy_trace
    begins = {r.fields["seq"]: r for r in records(path, "ioctl")}
    ends = {r.fields["seq"]: r for r in records(path, "ioctl_end")}
    assert begins.keys() == ends.keys() and len(begins) > 10
    for seq, b in begins.items():
        assert b.n < ends[seq].n  # "about to" comes first
        assert K.lookup(b.fields["request"]).name == b.fields["name"]
        assert len(ends[seq].fields["data"]) == K.ioc_size(b.fields["request"])
    names = [b.fields["name"] for b in begins.values()]
    for expected in ("GET_VERSION", "ACQUIRE_VM", "ALLOC_MEMORY_OF_GPU", "MAP_MEMORY_TO_GPU", "CREATE_QUEUE",
                     "CREATE_EVENT", "WAIT_EVENTS", "DESTROY_QUEUE", "FREE_MEMORY_OF_GPU"):
        assert expected in names


def test_buffer_layout_names_and_cpu_mappings(copy_trace):
    path, payload, _ = copy_trace
    allocs = {r.fields["va"]: r.fields for r in records(path, "alloc")}
    named = {r.fields["name"]: r.fields for r in records(path, "buffer")}
    assert {"src", "mid", "out", "q.ring"} <= named.keys()
    assert named["q.ring"]["role"] == "ring" and named["src"]["role"] == "user"
    assert allocs[named["mid"]["va"]]["domain"] == "vram" and allocs[named["src"]["va"]]["size"] == len(payload)
    mapped = {r.fields["handle"]: r.fields["gpus"] for r in records(path, "map")}
    assert all(mapped[a["handle"]] for a in allocs.values())
    cpu_maps = {r.fields["va"] for r in records(path, "cpu_map")}
    assert named["src"]["va"] in cpu_maps and named["mid"]["va"] in cpu_maps
    mmaps = records(path, "mmap")
    assert any(m.fields["path"] == "/dev/kfd" and m.fields["offset"] >> 62 == K.MmapType.DOORBELL for m in mmaps)
    assert any(m.fields["path"].startswith("/dev/dri/renderD") for m in mmaps)


def test_doorbells_carry_the_packets_as_submitted(copy_trace):
    path, payload, _ = copy_trace
    queues = {r.fields["queue"]: r.fields for r in records(path, "queue")}
    names = {r.fields["name"]: r.fields["va"] for r in records(path, "buffer")}
    packets = []
    for d in records(path, "doorbell"):
        dialect = DIALECTS[queues[d.fields["queue"]]["dialect"]]
        packets += list(dialect.iter_packets(d.fields["ring"]))
    copies = [p for p in packets if p.name == "COPY_LINEAR"]
    assert [(p.src, p.dst, p.count + 1) for p in copies[:2]] == [(names["src"], names["mid"], len(payload)),
                                                                (names["mid"], names["out"], len(payload))]
    assert any(p.name == "FENCE" and p.data == 0xC0DE for p in packets)


def test_cpu_writes_rebuild_what_the_gpu_read(copy_trace):
    path, payload, result = copy_trace
    src = next(r.fields["va"] for r in records(path, "buffer") if r.fields["name"] == "src")
    memory = bytearray(len(payload))
    with TraceReader(path) as r:
        for m in r.records({"mem"}):
            if src <= m.fields["va"] < src + len(payload):
                data = r.blob(m.fields["key"])
                assert len(data) == m.fields["size"]
                memory[m.fields["va"] - src:m.fields["va"] - src + len(data)] = data
    assert bytes(memory) == payload
    assert result[:16] == payload[:16] and result[16:20] == (0xC0DE).to_bytes(4, "little")  # the FENCE


def test_checkpoint_hashes_what_the_gpu_wrote(copy_trace):
    path, _, result = copy_trace
    checkpoints = records(path, "checkpoint")
    assert checkpoints and all(c.fields["wait"]["ok"] for c in checkpoints)
    out = [b for c in checkpoints for b in c.fields["buffers"] if b["name"] == "out"]
    assert out, "the buffer the GPU wrote was not checkpointed"
    with TraceReader(path) as r:
        chunk = r.header["chunk_size"]
    keys = b"".join(xxhash.xxh3_128_digest(result[i:i + chunk]) for i in range(0, len(result), chunk))
    assert out[-1]["hash"] == xxhash.xxh3_128_digest(keys)  # format 2.x keys: XXH3-128
    assert all(b["name"] not in ("semaphores", "q.ring") for c in checkpoints for b in c.fields["buffers"])


def test_identical_chunks_are_stored_once(tmp_path):
    path = str(tmp_path / "dedup.kfdtrace")
    block = os.urandom(64 << 10)
    with record(path, chunk_size=64 << 10) as session, System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        a, b = gpu.alloc(256 << 10, "gtt"), gpu.alloc(256 << 10, "gtt")
        a.write(block * 4)
        b.write(block * 4)
    mems = records(path, "mem")
    assert len(mems) == 8 and len({m.fields["key"] for m in mems}) == 1
    assert session.summary["trace_dedup_hits"] >= 7


def test_semaphore_activity_is_recorded(tmp_path):
    path = str(tmp_path / "sem.kfdtrace")
    with record(path), System.open(emulate="gfx90a") as system:
        q, sem = system.devices[0].sdma_queue(), system.semaphore("gate")
        q.wait(sem, 2).submit()
        sem.signal(2)
        q.sync()
    signals = [s.fields for s in records(path, "cpu_signal") if s.fields["name"] == "gate"]
    # each word as stored: the reset of the fresh slot, then the signal; the biased copy first (signals.py)
    assert [(s["addr"] - sem.addr, s["value"]) for s in signals] == [(8, BIAS), (0, 0), (8, BIAS + 2), (0, 2)]
    waits = records(path, "cpu_wait")
    assert waits and all(w.fields["ok"] for w in waits)


def test_raw_pointer_writes_need_scan_tracking(tmp_path):
    script = tmp_path / "raw.py"
    script.write_text(textwrap.dedent("""
        import ctypes
        from kfdtrace.driver import System
        with System.open() as system:
            gpu = system.devices[0]
            src, dst = gpu.alloc(4096, "gtt", name="src"), gpu.alloc(4096, "gtt", name="dst")
            ctypes.memset(src.cpu, 0x5A, 4096)  # behind the driver's back
            gpu.sdma_queue().copy(dst, src, 4096).sync()
    """))
    for mode, expected in (("auto", 0), ("scan", 1)):
        out = str(tmp_path / f"{mode}.kfdtrace")
        res = capture("run", "--emulate", "gfx942", "--tracking", mode, "-o", out, str(script))
        assert res.returncode == 0, res.stderr
        with TraceReader(out) as r:
            src = next(b.fields["va"] for b in r.records({"buffer"}) if b.fields["name"] == "src")
            hits = [m for m in r.records({"mem"}) if m.fields["va"] == src]
            assert len(hits) == expected, mode
            if hits:
                assert r.blob(hits[0].fields["key"]) == b"\x5a" * 4096


def test_capture_run_summary_and_default_name(tmp_path):
    res = capture("run", "--emulate", "gfx1201", os.path.abspath(os.path.join(EXAMPLES, "ping_pong.py")),
                  "--rounds", "5", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    made = list(tmp_path.glob("ping_pong-*.kfdtrace"))
    assert len(made) == 1
    assert "5 ping-pong rounds" in res.stdout
    assert "submissions" in res.stderr and "POLL_REGMEM" in res.stderr and "compression" in res.stderr
    assert "\r" not in res.stderr  # no progress line when not on a terminal
    info = kfdtrace("info", str(made[0]))
    assert info.returncode == 0, info.stderr
    assert "gfx1201" in info.stdout and "RDNA4" in info.stdout and "RECOVERED" not in info.stdout


def test_capture_run_module(tmp_path):
    pkg = tmp_path / "wl"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "job.py").write_text("from kfdtrace.driver import System\nwith System.open() as s:\n"
                                "    s.devices[0].sdma_queue().sync()\nprint('job done')\n")
    out = tmp_path / "m.kfdtrace"
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    res = capture("run", "--emulate", "gfx1030", "-o", str(out), "-m", "wl.job", env=env)
    assert res.returncode == 0, res.stderr
    assert "job done" in res.stdout and records(str(out), "doorbell")


def test_capture_script_runs_a_module_of_the_current_folder(tmp_path):
    """Campaign 98: the `capture` console script refused `-m` of a package in the current folder (as `python -m`
    finds it), looking for it before the folder was on the path."""
    pkg = tmp_path / "here"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "job.py").write_text("from kfdtrace.driver import System\nfrom . import __name__ as parent\n"
                                "with System.open() as s:\n    s.devices[0].sdma_queue().sync()\n"
                                "print('job of', parent)\n")
    script = os.path.join(os.path.dirname(sys.executable), "capture")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([script, "run", "--emulate", "gfx1030", "-o", "m.kfdtrace", "-m", "here.job"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr
    assert "job of here" in res.stdout and records(str(tmp_path / "m.kfdtrace"), "doorbell")


def test_a_script_sees_its_file_as_python_gives_it_and_an_interrupt_is_printed(tmp_path):
    """Campaign 117: under capture a script's __file__ was the path as typed (python gives it absolute), so one that
    changed folder could not find its files; and a KeyboardInterrupt ended it with no word."""
    (tmp_path / "data.txt").write_text("hello")
    (tmp_path / "s.py").write_text("import os\nos.chdir('/')\n"
                                   "print(open(os.path.join(os.path.dirname(__file__), 'data.txt')).read())\n"
                                   "raise KeyboardInterrupt\n")
    res = capture("run", "--emulate", "gfx942", "-o", "t.kfdtrace", "s.py", cwd=tmp_path)
    assert res.returncode == 130 and "hello" in res.stdout, res.stdout + res.stderr
    assert "KeyboardInterrupt" in res.stderr and "Traceback" in res.stderr, res.stderr


@pytest.mark.parametrize("body, status", [("raise RuntimeError('boom')", 1), ("raise SystemExit(3)", 3)])
def test_failing_workload_leaves_a_complete_trace(tmp_path, body, status):
    script = tmp_path / "fail.py"
    script.write_text("from kfdtrace.driver import System\nwith System.open() as s:\n"
                      "    s.devices[0].sdma_queue().sync()\n" + body + "\n")
    out = tmp_path / "fail.kfdtrace"
    res = capture("run", "--emulate", "gfx942", "-o", str(out), str(script))
    assert res.returncode == status
    with TraceReader(str(out)) as r:
        assert not r.recovered and r.summary["exit_status"] == status and r.submissions >= 1


def test_sigkilled_workload_leaves_a_readable_trace(tmp_path):
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent("""
        import os, signal, time
        from kfdtrace.driver import System
        with System.open() as s:
            gpu = s.devices[0]
            q, buf = gpu.sdma_queue(), gpu.alloc(4096, "gtt", name="victim")
            for i in range(50):
                q.fence(buf, i).sync()
            time.sleep(0.5)  # well over the flush interval: nothing recorded may be lost
            os.kill(os.getpid(), signal.SIGKILL)
    """))
    out = tmp_path / "killed.kfdtrace"
    res = capture("run", "--emulate", "gfx942", "-o", str(out), str(script))
    assert res.returncode == -signal.SIGKILL
    info = kfdtrace("info", str(out))
    assert info.returncode == 0, info.stderr
    assert "RECOVERED" in info.stdout
    with TraceReader(str(out)) as r:
        assert r.recovered and r.submissions == 50  # one per fence-and-sync: all flushed
        assert any(b.fields["name"] == "victim" for b in r.records({"buffer"}))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "flip"])
def test_bad_trace_files_give_one_line(copy_trace, tmp_path, damage):
    path, _, _ = copy_trace
    data = open(path, "rb").read()
    bad = tmp_path / f"{damage}.kfdtrace"
    if damage == "truncate":
        bad.write_bytes(data[:40])
    elif damage == "garbage":
        bad.write_bytes(os.urandom(5000))
    elif damage == "empty":
        bad.write_bytes(b"")
    else:
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0xFF
        bad.write_bytes(bytes(flipped))
    res = kfdtrace("info", "--check", str(bad))
    assert "Traceback" not in res.stderr and res.returncode == 1, res.stdout
    assert len(res.stderr.strip().splitlines()) == 1 and str(bad) in res.stderr


def test_examples_record_on_the_emulator(tmp_path):
    runs = [("sdma_stress.py", "gfx942", ["--rounds", "6", "--batch", "3", "--size", "8192"]),
            ("peer_ring.py", "gfx942,gfx1100", ["--laps", "2", "--size", "65536"]),
            ("ping_pong.py", "gfx90a", ["--rounds", "4"]),
            ("small_copies.py", "gfx1100", ["--submissions", "8", "--copies", "4", "--batch", "3"])]
    for script, targets, args in runs:
        out = tmp_path / f"{script}.kfdtrace"
        res = capture("run", "--emulate", targets, "-o", str(out), os.path.join(EXAMPLES, script), *args)
        assert res.returncode == 0, res.stderr
        assert records(str(out), "checkpoint"), script


def test_raw_view_writes_are_seen_before_the_submission(tmp_path):
    path = str(tmp_path / "view.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        src, dst = gpu.alloc(4096, "gtt", name="src"), gpu.alloc(4096, "gtt")
        view = src.numpy()
        q = gpu.sdma_queue()
        for i in range(3):
            view[:] = i + 1
            q.copy(dst, src, 4096).sync()
            assert dst.read(0, 1)[0] == i + 1
    with TraceReader(path) as r:
        src_va = next(b.fields["va"] for b in r.records({"buffer"}) if b.fields["name"] == "src")
        seen = [r.blob(m.fields["key"])[0] for m in r.records({"mem"}) if m.fields["va"] == src_va]
    assert seen == [0, 1, 2, 3]  # 0: seen at the CPU signal that resets the queue's fresh semaphore


def test_a_buffer_whose_cpu_mapping_went_is_never_read_for_the_trace(tmp_path):
    """The program unmaps a buffer's CPU view while the GPU still writes it: the recorder learns what was
    pending while it could, and never reads (or hashes) that buffer through the stale address again."""
    path = str(tmp_path / "u.kfdtrace")
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        q = gpu.sdma_queue()
        gone, kept = gpu.alloc(8192, "gtt", name="gone"), gpu.alloc(8192, "gtt", name="kept")
        sem = system.semaphore("done")
        q.fill(gone, 7, 8192).fill(kept, 9, 8192).signal(sem, 1).submit()
        gpu.sys.munmap(gone.cpu, 8192)
        sem.wait(1)
    with TraceReader(path) as r:
        hashed = [b["name"] for c in r.records(["checkpoint"]) for b in c.fields["buffers"]]
    assert hashed == ["kept"]


def test_a_map_that_fails_part_way_records_the_gpus_it_mapped(tmp_path):
    """MAP_MEMORY_TO_GPU on [a GPU, an id of none] maps on the first, then fails with EINVAL; the kernel copies
    the struct back anyway (n_success 1). The trace says so, and its replay maps there too, so the copy the
    second GPU makes replays (it was a VM fault: HANG)."""
    import ctypes
    import errno

    from kfdtrace.driver.errors import DeviceError
    from kfdtrace.replay.engine import EXIT_OK, Options
    from kfdtrace.replay.session import replay_trace

    path = str(tmp_path / "partial.kfdtrace")
    with record(path), System.open(emulate="gfx942,gfx942") as system:
        gpu0, gpu1 = system.devices
        src, dst = gpu0.alloc(4096, "gtt", name="src"), gpu0.alloc(4096, "gtt", name="dst")
        src.write(b"Z" * 4096)
        ids = (ctypes.c_uint32 * 2)(gpu1.gpu_id, 0xBAD)
        for b in (src, dst):
            args = K.BY_NAME["MAP_MEMORY_TO_GPU"].struct(handle=b.handle, device_ids_array_ptr=ctypes.addressof(ids),
                                                         n_devices=2)
            with pytest.raises(DeviceError) as err:
                system.kfd.ioctl("MAP_MEMORY_TO_GPU", args)
            assert err.value.errno == errno.EINVAL and args.n_success == 1
        done = system.semaphore("done")
        gpu1.sdma_queue().copy(dst.va, src.va, 4096).signal(done, 1).submit()
        done.wait(1)
        assert dst.read(0, 4) == b"ZZZZ"
    with TraceReader(path) as r:
        assert [m.fields["gpus"] for m in r.records({"map"})][-2:] == [[gpu1.gpu_id]] * 2
        failed = [e.fields for e in r.records({"ioctl_end"}) if e.fields["errno"] == errno.EINVAL]
        assert len(failed) == 2 and all(len(f["data"]) == ctypes.sizeof(args) for f in failed)
        assert r.summary["failed_ioctls"]["MAP_MEMORY_TO_GPU EINVAL"] == 2
    info = subprocess.run([sys.executable, "-m", "kfdtrace", "info", path], capture_output=True, text=True)
    assert "MAP_MEMORY_TO_GPU EINVAL x2" in info.stdout.split("failed ioctls: ")[1], info.stdout + info.stderr
    report = replay_trace(path, Options(timeout=10), emulate="gfx942,gfx942")
    assert report.status == EXIT_OK, report.lines()


@pytest.mark.parametrize("stray", ["back", "past the ring"])
def test_a_stray_doorbell_is_noted_and_never_taken_for_packets(tmp_path, stray):
    """A doorbell moving the write pointer backwards, or more than a ring ahead, submits nothing a GPU runs: the
    trace says so, keeps the packets the next doorbell submits as they were written, and replay names it."""
    import subprocess
    import sys

    from kfdtrace.driver.errors import GpuFault

    path = str(tmp_path / "stray.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        q, out = gpu.sdma_queue(ring_size=4096), gpu.alloc(4096, "gtt", name="out")
        q.fence(out, 1).sync()
        wptr = q.wptr
        system.sys.doorbell_store(q.doorbell, 0 if stray == "back" else wptr + 8192)
        with pytest.raises(GpuFault):
            q.fence(out, 2).sync(timeout=5)
    with TraceReader(path) as r:
        notes = [n.fields["text"] for n in r.records({"note"})]
        rings = [d.fields["ring"] for d in r.records({"doorbell"})]
    moved = "backwards" if stray == "back" else "more than its 4096-byte ring ahead"
    assert any(f"the doorbell moves the write pointer from {wptr:#x}" in n and moved in n for n in notes), notes
    assert rings[-2] == b"" and DIALECTS["sdma4.4"].decode(rings[-1]).name == "FENCE"  # not the earlier packets again
    res = subprocess.run([sys.executable, "-m", "kfdtrace.replay.cli", path, "--emulate", "gfx942"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 3, res.stdout + res.stderr
    assert f"its doorbell moved the write pointer from {wptr:#x}" in res.stderr, res.stderr


@pytest.mark.parametrize("child_ends", ["os._exit(0)", "sys.exit(0)", "pass"])
def test_a_fork_s_child_writes_nothing_and_gets_ebadf_from_the_parent_s_kfd(tmp_path, child_ends):
    """The child inherited the writer and the file: its first ioctl's flush wrote over the parent's frames, and its
    exit wrote a second index, so everything recorded was lost. A KFD file serves only the process that opened
    it (kfd_ioctl: EBADF); the child records nothing."""
    script = tmp_path / "fork.py"
    script.write_text(textwrap.dedent(f"""
        import errno, os, sys
        from kfdtrace.driver import DeviceError, System
        with System.open() as s:
            g = s.devices[0]
            q, a, b = g.sdma_queue(), g.alloc(4096, "gtt", name="a"), g.alloc(4096, "gtt", name="b")
            done = s.semaphore("done")
            for i in range(1, 7):
                if i == 4 and os.fork() == 0:
                    try:
                        g.alloc(4096, "gtt", name="child")
                    except DeviceError as exc:
                        print("child:", errno.errorcode[exc.errno])
                    {child_ends}
                    break
                if i == 4:
                    os.wait()
                a.write(bytes([i]) * 4096)
                q.copy(b, a, 4096).signal(done, i).submit()
                done.wait(i)
    """))
    path = str(tmp_path / "fork.kfdtrace")
    done = capture("run", "--emulate", "gfx942", "-o", path, str(script))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("child: EBADF") == 1 and done.stderr.count("capture: wrote") == 1, done.stderr
    with TraceReader(path) as r:
        assert r.summary["submissions"] == 6 and not r.recovered
    res = subprocess.run([sys.executable, "-m", "kfdtrace.replay.cli", path], capture_output=True, text=True)
    assert res.returncode == 0 and "6 checkpoints" in res.stdout, res.stdout + res.stderr


def test_ctrl_c_waits_until_the_record_being_written_is_whole():
    """A KeyboardInterrupt inside the writer's bookkeeping left a trace whose records named a blob it lacked; the
    interrupt now comes once the thread is out of the trace's lock, and not at all once the recording closes."""
    import os
    import signal
    import threading
    import time
    from types import SimpleNamespace

    from kfdtrace.capture.session import signals_between_records

    recorder = SimpleNamespace(trace=SimpleNamespace(lock=threading.RLock()), closing=False)
    session = SimpleNamespace(recorder=recorder)
    with signals_between_records(session):
        held = [False]  # whether the interrupt came while the lock was held (then held[0] stays True)
        with pytest.raises(KeyboardInterrupt):
            with recorder.trace.lock:
                held[0] = True
                os.kill(os.getpid(), signal.SIGINT)
                t0 = time.monotonic()
                while time.monotonic() - t0 < 0.1:  # bytecodes run, and the handler with them: nothing raised
                    pass
                held[0] = False  # (CI: the interrupt may come as the lock is left, before the next statement)
            time.sleep(1)
        assert not held[0]
        recorder.closing = True
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # ignored
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_workload_imports_what_lies_beside_it(tmp_path):
    """Campaign 89: `capture run sub/w.py` did not put sub/ first on sys.path as `python sub/w.py` does, so the
    script's import of its sibling failed."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "helper.py").write_text("VALUE = 7\n")
    (tmp_path / "sub" / "w.py").write_text("import sys\nfrom helper import VALUE\nsys.exit(VALUE)\n")
    done = capture("run", "--emulate", "gfx942", "-o", str(tmp_path / "w.kfdtrace"), "sub/w.py", cwd=tmp_path)
    assert done.returncode == 7, done.stderr


def test_a_workload_s_own_signal_handler_runs_between_records():
    """Campaign 88: a SIGALRM handler of the workload's raised inside the writer's bookkeeping and left a trace
    nothing could read, which capture said it wrote. The workload's handlers now run as Ctrl-C does, out of the
    trace's lock, and not once the recording closes; `signal.getsignal` gives them back as the workload set them."""
    import threading
    import time
    from types import SimpleNamespace

    from kfdtrace.capture.session import signals_between_records

    recorder = SimpleNamespace(trace=SimpleNamespace(lock=threading.RLock()), closing=False)
    session = SimpleNamespace(recorder=recorder)
    held: list[bool] = []  # for each run of the handler: whether the trace's lock was held

    def alarm(signum, frame):
        held.append(recorder.trace.lock._is_owned())
        raise TimeoutError("time is up")

    installed = signal.signal
    with signals_between_records(session):
        assert signal.signal(signal.SIGUSR1, alarm) is signal.SIG_DFL
        assert signal.getsignal(signal.SIGUSR1) is alarm
        with pytest.raises(OSError):  # as Python's own refuses it
            signal.signal(signal.SIGKILL, alarm)
        assert signal.getsignal(signal.SIGKILL) is signal.SIG_DFL
        with pytest.raises(TimeoutError):
            with recorder.trace.lock:
                os.kill(os.getpid(), signal.SIGUSR1)
                t0 = time.monotonic()
                while time.monotonic() - t0 < 0.1:  # bytecodes run, and the handler with them: nothing raised
                    pass
            time.sleep(1)
        assert held == [False]
        # campaign 90: the signal was sent again, and killed the process once the workload had put the default
        # handler back; the handler it had when the signal came runs, once
        with pytest.raises(TimeoutError):
            with recorder.trace.lock:
                os.kill(os.getpid(), signal.SIGUSR1)
                t0 = time.monotonic()
                while time.monotonic() - t0 < 0.1:
                    pass
                assert signal.signal(signal.SIGUSR1, signal.SIG_DFL) is alarm
            time.sleep(1)
        assert held == [False, False]
        signal.signal(signal.SIGUSR1, alarm)
        recorder.closing = True
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.05)  # ignored
        assert held == [False, False]
        assert signal.signal(signal.SIGUSR1, signal.SIG_DFL) is alarm
        with pytest.raises(ValueError, match="capture run's own"):
            signal.signal(signal.SIGRTMAX, alarm)
    assert signal.signal is installed and signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL


def test_a_burst_of_signals_during_long_stores_runs_the_handler_between_records(tmp_path):
    """Campaign 92: a SIGALRM every 200 µs during 8 MiB stores (each holds the trace's lock) started a thread per
    signal from inside the handler; under the burst they nested without end (RecursionError), hung, or killed
    capture with its own signal. One helper, woken through a pipe, now runs what was deferred."""
    script = tmp_path / "burst.py"
    script.write_text(textwrap.dedent("""
        import signal, sys
        from kfdtrace.driver import System
        ran = [0]
        signal.signal(signal.SIGALRM, lambda s, f: ran.__setitem__(0, ran[0] + 1))
        signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0002)
        with System.open() as system:
            gpu = system.devices[0]
            big, out, q = gpu.alloc(8 << 20, "gtt", name="big"), gpu.alloc(4096, "gtt", name="out"), gpu.sdma_queue()
            for i in range(3):
                big.write(bytes([i + 1]) * (8 << 20))
                q.copy(out, big, 4096).sync()
            signal.setitimer(signal.ITIMER_REAL, 0)
        print("ran", ran[0] > 0)
    """))
    path = str(tmp_path / "burst.kfdtrace")
    done = capture("run", "--emulate", "gfx942", "-o", path, str(script))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert done.stdout.strip() == "ran True" and done.stderr.count("capture: wrote") == 1, done.stdout + done.stderr
    res = subprocess.run([sys.executable, "-m", "kfdtrace.replay.cli", path], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_threads_and_atexit_handlers_after_the_main_thread_are_recorded(tmp_path):
    """Campaign 88: capture closed the trace as soon as the workload's main thread returned, so a non-daemon
    thread still working (and an atexit handler) lost its GPU work with a traceback, and the trace replayed OK
    without it. Capture now ends as the interpreter does: threads joined, then atexit handlers, then the trace."""
    script = tmp_path / "late.py"
    script.write_text(textwrap.dedent("""
        import atexit, threading, time
        from kfdtrace.driver import System
        system = System.open()
        gpu = system.devices[0]
        src, dst, q = gpu.alloc(4096, "gtt", name="src"), gpu.alloc(4096, "gtt", name="dst"), gpu.sdma_queue()

        def late():
            time.sleep(0.2)  # the main thread has returned by now
            for i in range(3):
                src.write(bytes([i + 1]) * 4096)
                q.copy(dst, src, 4096).sync()

        def at_exit():
            src.write(bytes([9]) * 4096)
            q.copy(dst, src, 4096).sync()
            system.close()

        atexit.register(at_exit)
        threading.Thread(target=late).start()
    """))
    path = str(tmp_path / "late.kfdtrace")
    done = capture("run", "--emulate", "gfx942", "-o", path, str(script))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    with TraceReader(path) as r:
        assert r.summary["submissions"] == 4 and not r.recovered, r.summary
    res = subprocess.run([sys.executable, "-m", "kfdtrace.replay.cli", path], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("tracking", ["auto", "scan"])
def test_a_store_through_a_view_that_releases_a_gpu_wait_is_recorded(tmp_path, tracking):
    """No submission or CPU signal followed the store: the trace lacked it, and the replay's queue waited for ever
    (HANG). The words GPU waits poll are looked at before each CPU wait."""
    import time

    import numpy as np

    from kfdtrace.driver.signals import Semaphore
    from kfdtrace.replay.engine import EXIT_OK, Options
    from kfdtrace.replay.session import replay_trace

    path = str(tmp_path / "flag.kfdtrace")
    with record(path, tracking=tracking), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        q, flags = gpu.sdma_queue(), gpu.alloc(4096, "gtt", name="flags")
        src, dst = gpu.alloc(4096, "gtt", name="src"), gpu.alloc(4096, "gtt", name="dst")
        src.write(b"S" * 4096)
        done = system.semaphore("done")
        q.wait(Semaphore.view(system, flags, 8, name="flag"), 1).copy(dst, src, 4096).signal(done, 1).submit()
        time.sleep(0.02)
        flags.numpy(np.uint64)[1] = 1  # the view made after the submission, and stored through at once
        done.wait(1)
    with TraceReader(path) as r:
        flagged = [m.fields for m in r.records({"mem"}) if m.fields["va"] <= flags.va + 8 < m.fields["va"] + 4096]
        assert flagged and r.blob(flagged[-1]["key"])[8 + flags.va - flagged[-1]["va"]] == 1
    report = replay_trace(path, Options(timeout=5), emulate="gfx942")
    assert report.status == EXIT_OK, report.lines()


@pytest.mark.parametrize("release", ["view", "write", "queue", "cpu"])
def test_data_written_through_a_view_before_the_store_that_releases_a_gpu_wait_is_recorded_before_it(
        tmp_path, release):
    """Campaign 47's bug02 and bug02b: the CPU fills `src` through a view, then releases a queue whose copy reads
    it: by a store to the polled flag (through a view, or `write`), by another queue's signal, or by a CPU signal.
    Only the flag was recorded (or nothing), and the replay copied the old data."""
    import numpy as np

    from kfdtrace.driver.signals import Semaphore
    from kfdtrace.replay.engine import EXIT_OK, Options
    from kfdtrace.replay.session import replay_trace

    path = str(tmp_path / "release.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        flags = gpu.alloc(4096, "gtt", name="flags")
        src, dst = gpu.alloc(8192, "gtt", name="src"), gpu.alloc(8192, "gtt", name="dst")
        q, other, done = gpu.sdma_queue(), gpu.sdma_queue(), system.semaphore("done")
        go = Semaphore.view(system, flags, 64, name="go") if release in ("view", "write") else system.semaphore("go")
        q.wait(go, 1).copy(dst, src, 8192).signal(done, 1).submit()
        src.numpy(np.uint32)[:] = 7
        if release == "view":
            flags.numpy(np.uint64)[8] = 1
        elif release == "write":
            flags.write((1).to_bytes(8, "little"), offset=64)
        elif release == "queue":
            other.signal(go, 1).submit()
        else:
            go.signal(1)
        done.wait(1)
        assert (dst.numpy(np.uint32) == 7).all()
    with TraceReader(path) as r:
        mems = [(m.n, m.fields["va"]) for m in r.records({"mem"})]
    data = max(i for i, va in mems if va == src.va)
    if release in ("view", "write"):
        # the data is in place before the flag is set (a `write` is recorded as the bytes written)
        assert data < max(i for i, va in mems if flags.va <= va < flags.va + 4096)
    report = replay_trace(path, Options(timeout=5), emulate="gfx942")
    assert report.status == EXIT_OK, report.lines()


def test_a_record_block_that_opens_no_gpu_warns_that_it_recorded_nothing(tmp_path):
    """A System opened before `with record(...)` is not recorded: the block's work went unseen, and the empty
    trace came with no word of it."""
    import warnings

    from kfdtrace.capture import record
    from kfdtrace.driver import System

    with System.open(emulate="gfx942") as system:
        with pytest.warns(RuntimeWarning, match="no GPU was opened inside the block"):
            with record(str(tmp_path / "empty.kfdtrace")):
                system.devices[0].alloc(4096, "gtt").free()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with record(str(tmp_path / "full.kfdtrace")), System.open(emulate="gfx942") as system:
            system.devices[0].alloc(4096, "gtt").free()


def test_a_system_used_after_its_record_block_says_the_block_ended(tmp_path):
    """Campaign 98: the error spoke of `capture run`'s daemon threads to a program whose `record()` block was over."""
    from kfdtrace.capture.trace_file import CaptureFailed

    path = str(tmp_path / "block.kfdtrace")
    with record(path):
        system = System.open(emulate="gfx942")
        gpu = system.devices[0]
        q = gpu.sdma_queue()
        q.fill(gpu.alloc(4096, "gtt", name="out"), 1, 4096).sync()
        q.destroy()  # its engine's thread ends (what is left, close() cannot free once the recording ended)
    with pytest.raises(CaptureFailed, match=r"block\.kfdtrace: the recording has ended \(its `with record\(\.\.\.\)` "
                                            r"block is over;.*\): GPU work through a System it recorded is not "
                                            r"recorded after that; use a System opened anew"):
        gpu.sdma_queue()
    with TraceReader(path) as r:
        assert not r.recovered and r.summary["submissions"] == 1
    with contextlib.suppress(CaptureFailed):
        system.close()


@pytest.mark.parametrize("tracking", ["auto", "scan"])
def test_a_view_write_beside_a_buffer_write_in_one_chunk_is_recorded(tmp_path, tracking):
    """Campaign 108: bytes written through a numpy view, then a Buffer.write elsewhere in the same chunk: the write
    took the chunk as it was after it for recorded, and the view's bytes were in no record (DIVERGED)."""
    from kfdtrace.replay.engine import EXIT_OK, Options
    from kfdtrace.replay.session import replay_trace

    path = str(tmp_path / "view.kfdtrace")
    with record(path, tracking=tracking), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        x, y = gpu.alloc(4096, "gtt", name="x"), gpu.alloc(4096, "gtt", name="y")
        x.numpy()[0:10] = 0x11
        x.write(b"\x22" * 100, 100)
        gpu.sdma_queue().copy(y, x, 4096).sync()
        assert y.read(0, 4) == b"\x11" * 4
        with pytest.raises(ValueError, match="fill byte -1 is not in 0..255"):  # as without a recorder
            x.fill(-1)
    report = replay_trace(path, Options(), emulate="gfx942")
    assert report.status == EXIT_OK and report.results[0].verified >= 1, report.lines()


@pytest.mark.parametrize("tracking", ["auto", "scan"])
def test_a_store_through_a_view_releasing_a_queue_no_cpu_wait_follows_is_recorded(tmp_path, tracking):
    """Campaign 108: the CPU writes a copy's input and the word its queue polls through views, then destroys the
    queue without a CPU wait: polled words were compared only before CPU waits, so the trace held neither store,
    and its replay stood at the wait (a false HANG)."""
    import time

    from kfdtrace.driver.signals import Semaphore
    from kfdtrace.replay.engine import EXIT_OK, Options
    from kfdtrace.replay.session import replay_trace

    path = str(tmp_path / "gate.kfdtrace")
    with record(path, tracking=tracking), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        x, y, flag = (gpu.alloc(4096, "gtt", name=n) for n in ("x", "y", "flag"))
        gate = Semaphore.view(system, flag, 0, name="gate")
        words, xv = flag.numpy("uint64"), x.numpy()
        q = gpu.sdma_queue(name="q")
        q.wait(gate, 1).copy(y, x, 4096).submit()
        xv[:] = 0x5A
        words[0] = 1
        deadline = time.monotonic() + 30
        while y.read(0, 1) != b"\x5a" and time.monotonic() < deadline:
            time.sleep(0.01)
        q.destroy()
    with TraceReader(path) as r:
        assert any(rec.type == "mem" for rec in r.records(["mem"]) if rec.fields["size"] >= 4096)
    report = replay_trace(path, Options(timeout=5), emulate="gfx942")
    assert report.status == EXIT_OK, report.lines()


def test_a_copy_into_the_page_past_a_buffer_s_requested_size_is_recorded(tmp_path):
    """A copy of a page into a buffer of 100 bytes (its allocation is the page): the part past the 100 bytes, in the
    buffer's own page, was taken for a part running on into the next buffer, and found the same buffer again, for
    ever (the capture hung)."""
    from kfdtrace.replay.engine import EXIT_OK

    script, path = tmp_path / "narrow.py", str(tmp_path / "narrow.kfdtrace")
    script.write_text(textwrap.dedent("""
        from kfdtrace.driver import System
        with System.open() as system:
            gpu = system.devices[0]
            small, big = gpu.alloc(100, "gtt", name="small"), gpu.alloc(4096, "gtt", name="big")
            big.write(b"\\x33" * 4096)
            q, done = gpu.sdma_queue(), system.semaphore("done")
            q.copy(small.va, big, 4096).signal(done, 1).submit()
            done.wait(1, 30)
            assert small.read(0, 100) == b"\\x33" * 100
    """))
    env = {**os.environ, "KFDTRACE_EMULATE": "gfx942"}
    done = subprocess.run([sys.executable, "-m", "kfdtrace.capture.cli", "run", "-o", path, str(script)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([sys.executable, "-m", "kfdtrace.replay.cli", path], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == EXIT_OK, done.stdout + done.stderr


@pytest.mark.parametrize("how", ["racy", "partly complete"])
def test_a_cpu_write_putting_back_what_the_gpu_changed_unseen_is_recorded(how, tmp_path):
    """Campaign 117: a CPU write whose chunks match what was last recorded for them is left out; after GPU writes
    no checkpoint hashed (a race's, or a dispatch an AQL signal counting down showed complete alone), what was
    last recorded was still the old content, so zeroing a buffer back was not recorded and the replay, whose
    buffer held the GPU's bytes, said DIVERGED."""
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        x, y = gpu.alloc(32 << 10, "gtt", name="x"), gpu.alloc(32 << 10, "gtt", name="y")
        x.fill(0)
        if how == "racy":
            p, q = gpu.alloc(32 << 10, "gtt", name="p"), gpu.alloc(32 << 10, "gtt", name="q")
            p.fill(0xAA)
            q.fill(0xBB)
            qa, qb = gpu.sdma_queue(name="qa"), gpu.sdma_queue(name="qb")
            sa, sb = system.semaphore("sa"), system.semaphore("sb")
            qa.copy(x, p, 4096).signal(sa, 1).submit()
            qb.copy(x, q, 32 << 10).signal(sb, 1).submit()
            sa.wait(1)
            sb.wait(1)
            x.fill(0)  # back to zeros: the race's bytes are gone
        else:
            import numpy as np

            from kfdtrace.driver.aql_queue import HsaSignal, SignalCondition
            from kfdtrace.driver.kernels.device import corpus

            n = 8 << 10
            a = gpu.alloc(n * 4, "gtt", name="a")
            a.write(np.arange(n, dtype=np.float32))
            aq = gpu.aql_queue(name="aq")
            sig, gate = HsaSignal(system, 2, name="sig"), HsaSignal(system, 1, name="gate")
            aq.dispatch(corpus(gpu).kernel("vector_add"), (n,), (256,), a, a, x, np.uint32(n), completion=sig)
            aq.barrier_and([gate], completion=sig)
            sig.wait(1, SignalCondition.EQ)  # the dispatch is done; nothing shows the barrier's
            x.fill(0)
            gate.signal(0)
            sig.wait(0, SignalCondition.EQ)
        out, s = gpu.sdma_queue(name="out"), system.semaphore("s")
        out.copy(y, x, 32 << 10).signal(s, 1).submit()
        s.wait(1)
        assert y.read(0, 4) == bytes(4)
    from kfdtrace.replay.engine import EXIT_OK, Options
    from kfdtrace.replay.session import replay_trace

    report = replay_trace(path, Options(timeout=10), emulate="gfx942")
    assert report.status == EXIT_OK, report.lines()


def test_a_view_write_made_while_a_store_runs_into_its_chunk_is_recorded(tmp_path, monkeypatch):
    """Campaign 117: another thread writes bytes [0, 100) of a buffer through a view while Buffer.write stores from
    byte 100 on (a large store runs without the GIL). The chunk both wrote was taken afterwards as it was, as if
    recorded: the view's bytes never were, and a copy of them replayed DIVERGED. The moment is simulated: the
    view's write lands between the recorder's notes of the store."""
    from kfdtrace.capture.memory import MemoryRecorder

    record_given = MemoryRecorder.record_given
    views = []

    def meanwhile(self, buf, offset, size, piece):
        record_given(self, buf, offset, size, piece)
        if views and buf.name == "x":
            views[0][0:100] = 0x77  # what the other thread writes while the store runs

    monkeypatch.setattr(MemoryRecorder, "record_given", meanwhile)
    path = str(tmp_path / "t.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        x, d = gpu.alloc(64 << 10, "gtt", name="x"), gpu.alloc(4096, "gtt", name="d")
        views.append(x.numpy())
        x.write(b"\x11" * (48 << 10), 100)
        views.clear()
        q, s = gpu.sdma_queue(name="q"), system.semaphore("s")
        q.copy(d, x, 4096).signal(s, 1).submit()
        s.wait(1)
        assert d.read(0, 4) == b"\x77" * 4 and d.read(100, 4) == b"\x11" * 4
    from kfdtrace.replay.engine import EXIT_OK, Options
    from kfdtrace.replay.session import replay_trace

    report = replay_trace(path, Options(timeout=10), emulate="gfx942")
    assert report.status == EXIT_OK, report.lines()
