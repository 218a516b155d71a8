"""Replay checks the target can hold the trace (peak VRAM per GPU, host memory up to --max-memory, KFD events)
before submitting."""

from __future__ import annotations

import os
import re

import pytest

from kfdtrace.capture import record
from kfdtrace.driver import System
from kfdtrace.driver import kfd_ioctl as K
from kfdtrace.replay import session
from kfdtrace.replay.engine import EXIT_BAD_INPUT, EXIT_OK, EXIT_UNSUPPORTED, Options
from kfdtrace.replay.session import default_max_memory, replay_trace
from kfdtrace.replay.translate import ReplayError
from kfdtrace.traces.format import TraceReader
from tests.test_replay import replay, rewrite, sample

GIB = 1 << 30
SPACING = 0x1000_0000_0000  # 16 TiB between hand-made buffers, all below the samples' recorded ones
VRAM_FLAGS = K.AllocMemFlags.VRAM | K.AllocMemFlags.WRITABLE  # no PUBLIC: no CPU mapping


def with_buffers(src: str, dst: str, plan: list[tuple[str, int, int, int, str]]) -> str:
    """`src` with hand-made alloc/free records before its first submission: (alloc|free, handle, size, gpu
    index, domain) in order, each buffer at its own address far from the others."""
    with TraceReader(src) as r:
        gpus = [g["gpu_id"] for g in r.header["gpus"]]
    flags = {"vram": VRAM_FLAGS, "gtt": K.AllocMemFlags.GTT | K.AllocMemFlags.WRITABLE}
    done = []

    def edit(rec, reader, writer):
        if rec.type != "doorbell" or done:
            return rec.fields
        done.append(True)
        out = []
        for kind, handle, size, gpu, domain in plan:
            va = handle * SPACING
            if kind == "alloc":
                out += [("alloc", {"t": 0, "handle": handle, "gpu": gpus[gpu], "va": va, "size": size,
                                   "domain": domain, "flags": flags[domain], "cpu": None}),
                        ("buffer", {"t": 0, "handle": handle, "va": va, "name": f"big{handle}", "role": "user"})]
            else:
                out.append(("free", {"t": 0, "handle": handle, "va": va}))
        return [*out, (rec.type, rec.fields)]

    rewrite(src, dst, edit)
    return dst


def test_vram_peak_times_instances_over_free_vram_is_refused_before_submitting(tmp_path):
    path = with_buffers(sample("ping_pong-gfx1100"), str(tmp_path / "big.kfdtrace"),
                        [("alloc", 1, 20 * GIB, 0, "vram"), ("free", 1, 0, 0, "")])
    res = replay(path, "--emulate", "gfx1100", "--concurrent", "2")
    assert res.returncode == EXIT_UNSUPPORTED, res.stdout + res.stderr
    assert ("GPU 0 (gfx1100): the trace needs 40.0 GiB of VRAM at its peak (x2 instances), the target has "
            "24.0 GiB free") in res.stderr
    assert "loop 1" not in res.stdout and len(res.stderr.strip().splitlines()) == 1
    report = replay_trace(path, Options(), emulate="gfx1100")  # one instance fits
    assert report.status == EXIT_OK, report.lines()


def test_peak_is_what_is_live_at_once(tmp_path):
    one_after_another = with_buffers(sample("ping_pong-gfx1100"), str(tmp_path / "seq.kfdtrace"), [
        ("alloc", 1, 15 * GIB, 0, "vram"), ("free", 1, 0, 0, ""), ("alloc", 2, 15 * GIB, 0, "vram"),
        ("free", 2, 0, 0, "")])
    assert replay_trace(one_after_another, Options(), emulate="gfx1100").status == EXIT_OK
    together = with_buffers(sample("ping_pong-gfx1100"), str(tmp_path / "both.kfdtrace"), [
        ("alloc", 1, 15 * GIB, 0, "vram"), ("alloc", 2, 15 * GIB, 0, "vram"), ("free", 1, 0, 0, ""),
        ("free", 2, 0, 0, "")])
    with pytest.raises(ReplayError, match=r"needs 30\.0 GiB of VRAM at its peak, the target has 24\.0 GiB"):
        replay_trace(together, Options(), emulate="gfx1100")


def test_figures_that_round_alike_are_given_in_bytes(tmp_path):
    """All of the VRAM, where a little of it is not free: "needs 24.0 GiB ... has 24.0 GiB" said nothing."""
    whole = with_buffers(sample("ping_pong-gfx1100"), str(tmp_path / "whole.kfdtrace"),
                         [("alloc", 1, 24 * GIB, 0, "vram"), ("free", 1, 0, 0, "")])
    with pytest.raises(ReplayError, match=r"needs 25,769,803,776 bytes of VRAM at its peak, the target has "
                                          r"25,\d{3},\d{3},\d{3} bytes free"):
        replay_trace(whole, Options(), emulate="gfx1100")


def test_host_peak_counts_the_indirect_buffer_copies_held_at_once(tmp_path):
    """The survey counts the replay's copy of each called indirect buffer until the queue's next submission:
    six small calls hold one page at a time, and one large call among them its own pages, not a sum."""
    from kfdtrace.capture import record
    from kfdtrace.driver import System
    from kfdtrace.replay.engine import HOST, survey
    from kfdtrace.replay.session import device_map, open_target

    def peak(calls: str) -> int:
        path = str(tmp_path / f"ibs-{calls}.kfdtrace")
        with record(path), System.open(emulate="gfx1100") as system:
            gpu = system.devices[0]
            q = gpu.sdma_queue()
            out, ib = gpu.alloc(4096, "gtt", name="out"), gpu.alloc(64 << 10, "gtt", name="ib")
            for i in range(6):
                if calls != "none":
                    nops = 4000 if calls == "one large" and i == 3 else 1
                    body = q.dialect.build("FENCE", addr=out.va, data=i) + q.dialect.build("NOP") * nops
                    ib.write(body)
                    q.packet("INDIRECT", ib_base=ib.va, ib_size=len(body) // 4).sync()
                q.fence(out, i).sync()  # a plain submission between calls
        with TraceReader(path) as trace, open_target(trace, "gfx1100", None, False) as system:
            return survey(trace, device_map(trace, system, None)).peaks[HOST]

    none = peak("none")
    assert peak("small") - none == 4096  # one page held at a time
    assert peak("one large") - none == 4 * 4096  # its 4004 dwords: four pages, held once


def test_vram_is_counted_on_the_target_gpu_each_recorded_gpu_goes_to(tmp_path):
    path = with_buffers(sample("peer_ring-2xgfx942"), str(tmp_path / "two.kfdtrace"),
                        [("alloc", 1, 10 * GIB, 0, "vram"), ("alloc", 2, 10 * GIB, 1, "vram")])
    assert replay_trace(path, Options(), emulate="gfx1100,gfx1100").status == EXIT_OK  # 10 GiB on each
    with pytest.raises(ReplayError, match=r"^GPU 0 \(gfx1100\): the trace needs 40\.0 GiB of VRAM at its peak "
                                          r"\(x2 instances\), the target has 24\.0 GiB free$"):
        replay_trace(path, Options(), emulate="gfx1100", device=0, concurrent=2)  # both on GPU 0, twice
    assert replay_trace(path, Options(), emulate="gfx1100,gfx1100", concurrent=2).status == EXIT_OK


def test_a_terabyte_of_gtt_is_refused_before_submitting(tmp_path):
    path = with_buffers(sample("ping_pong-gfx1100"), str(tmp_path / "gtt.kfdtrace"),
                        [("alloc", 1, 1024 * GIB, 0, "gtt"), ("free", 1, 0, 0, "")])
    res = replay(path, "--emulate", "gfx1100")
    assert res.returncode == EXIT_UNSUPPORTED, res.stdout + res.stderr
    assert re.fullmatch(r"replay: cannot replay here: the trace needs 1024\.0 GiB of host memory \(GTT and userptr "
                        r"buffers\) at its peak, --max-memory allows [0-9.]+ [KMG]iB\n", res.stderr)
    assert "loop 1" not in res.stdout


def test_a_gtt_buffer_counts_whole_whatever_touches_it(tmp_path):
    """A fill can touch every byte of a 3 GiB buffer, so its size is what the host must be able to give."""
    path = with_buffers(sample("ping_pong-gfx1100"), str(tmp_path / "gtt.kfdtrace"),
                        [("alloc", 1, 3 * GIB, 0, "gtt"), ("free", 1, 0, 0, "")])
    with pytest.raises(ReplayError, match=r"^the trace needs 3\.0 GiB of host memory .* --max-memory allows 2\.0 GiB$"):
        replay_trace(path, Options(), emulate="gfx1100", max_memory=2 * GIB)


def test_max_memory_refuses_a_trace_that_needs_more_and_accepts_it_with_enough(tmp_path):
    path = with_buffers(sample("ping_pong-gfx1100"), str(tmp_path / "gtt.kfdtrace"),
                        [("alloc", 1, 2 << 20, 0, "gtt"), ("free", 1, 0, 0, "")])
    res = replay(path, "--emulate", "gfx1100", "--max-memory", "1M")
    assert res.returncode == EXIT_UNSUPPORTED, res.stdout + res.stderr
    assert re.search(r"needs 2\.\d MiB of host memory .* at its peak, --max-memory allows 1\.0 MiB$", res.stderr)
    assert "loop 1" not in res.stdout
    res = replay(path, "--emulate", "gfx1100", "--max-memory", "3m")
    assert res.returncode == EXIT_OK, res.stdout + res.stderr


@pytest.mark.parametrize("value", ["1.5G", "0", "12X", "M", "-4K", "²"])
def test_a_bad_max_memory_is_bad_input_in_one_line(value):
    res = replay(sample("ping_pong-gfx1100"), "--emulate", "gfx1100", "--max-memory", value)
    assert res.returncode == EXIT_BAD_INPUT, res.stdout + res.stderr
    assert res.stderr.startswith(f"replay: error: --max-memory {value!r}: give a size") and res.stdout == ""
    assert len(res.stderr.splitlines()) == 1


def test_the_default_max_memory_is_half_of_memavailable_else_of_the_ram(tmp_path, monkeypatch):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemAvailable:    8000000 kB\n")
    monkeypatch.setattr(session, "MEMINFO", str(meminfo))
    assert default_max_memory() == 4000000 * 1024
    monkeypatch.setattr(session, "MEMINFO", str(tmp_path / "none"))
    assert default_max_memory() == os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2


def test_more_live_events_than_a_process_can_have_is_refused(tmp_path):
    path = str(tmp_path / "events.kfdtrace")
    done = []

    def events(rec, reader, writer):
        if rec.type != "doorbell" or done:
            return rec.fields
        done.append(True)
        return [("event", {"t": 0, "event": 5000 + i, "type": K.EventType.SIGNAL, "auto_reset": True})
                for i in range(2500)] + [(rec.type, rec.fields)]

    rewrite(sample("ping_pong-gfx1100"), path, events)
    with pytest.raises(ReplayError, match=r"needs 50\d\d KFD signal events at its peak \(x2 instances\), a "
                                          r"process can have 4095"):
        replay_trace(path, Options(), emulate="gfx1100", concurrent=2)


@pytest.mark.parametrize("target, fits, slots", [("gfx1100", 6, 12), ("gfx942", 8, 16)])
def test_more_queues_than_the_target_has_sdma_slots_is_refused(target, fits, slots):
    """sdma_stress keeps two queues; an RX 7900 XTX has 2 SDMA engines of 6 queues each, an MI300X 2 PCIe engines of
    8 (campaign 109: its xGMI engines' slots were counted too, 128, where KFD gives plain SDMA queues the PCIe
    engines': a trace needing 18 was refused midway, after submitting)."""
    report = replay_trace(sample("sdma_stress-gfx942"), Options(), emulate=target, concurrent=fits)
    assert report.status == EXIT_OK, report.lines()
    with pytest.raises(ReplayError, match=rf"^GPU 0 \({target}\): the trace needs {2 * fits + 2} SDMA queues on PCIe "
                                          rf"engines at its peak \(x{fits + 1} instances\), the target has {slots} "
                                          rf"queue slots$"):
        replay_trace(sample("sdma_stress-gfx942"), Options(), emulate=target, concurrent=fits + 1)


def test_a_request_the_target_refuses_mid_replay_names_the_record(monkeypatch):
    """What the survey cannot foresee (another process took the memory meanwhile) is still 'cannot replay
    here', naming the record, never an internal error."""
    from kfdtrace.driver.errors import OutOfMemory
    from kfdtrace.driver.system import Device
    from kfdtrace.replay.engine import TargetRefused

    alloc = Device.alloc

    def scarce(self, size, domain="vram", **options):
        if options.get("name") == "reply":
            raise OutOfMemory("AMDKFD_IOC_ALLOC_MEMORY_OF_GPU(...) failed: no memory left")
        return alloc(self, size, domain, **options)

    monkeypatch.setattr(Device, "alloc", scarce)
    with pytest.raises(TargetRefused, match=r"^record \d+ \(alloc\): the target refused it: AMDKFD_IOC_ALLOC"):
        replay_trace(sample("ping_pong-gfx1100"), Options(), emulate="gfx1100")


def test_a_buffer_beyond_the_address_space_limit_is_out_of_memory_not_a_crash():
    """The fuzz campaign's one memory finding: a queue ring of 4 GiB under a 4 GiB address-space limit made the
    reservation mmap fail with ENOMEM, which replay reported as an internal error (exit 5)."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import resource
        from kfdtrace.driver import System
        from kfdtrace.driver.errors import OutOfMemory
        with System.open(emulate="gfx942") as system:
            resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
            try:
                system.devices[0].alloc(4 << 30, "gtt")
            except OutOfMemory as exc:
                print("refused:", exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "refused: no room for" in out.stdout and "ulimit -v" in out.stdout


def test_queues_made_by_engine_id_replay_on_their_engines(tmp_path):
    """Campaign 109: queues made by engine id replayed as plain SDMA queues, so 17 spread over an MI300X's xGMI
    engines could not replay on the GPU they were recorded on (the PCIe engines have 16 slots)."""
    path = str(tmp_path / "engines.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        a, b = gpu.alloc(4096, "gtt", name="a"), gpu.alloc(4096, "gtt", name="b")
        a.write(b"\x5a" * 4096)
        sem, queues = system.semaphore("sem"), []
        for i in range(17):
            queues.append(gpu.sdma_queue(engine=2 + i % 14, name=f"q{i}"))
            queues[-1].copy(b, a, 4096).signal(sem, i + 1).submit()
            sem.wait(i + 1)
    report = replay_trace(path, Options(), emulate="gfx942")
    assert report.status == EXIT_OK and report.results[0].verified >= 1, report.lines()
    with pytest.raises(ReplayError, match=r"the trace needs 17 SDMA queues on PCIe engines at its peak, the target "
                                          r"has 12 queue slots"):  # no engine 2 and up there: PCIe ones, up front
        replay_trace(path, Options(), emulate="gfx1100")
