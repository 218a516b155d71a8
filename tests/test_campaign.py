"""`replay campaign` on a local Ray cluster (one per module) whose emulated GPUs are custom resources."""

from __future__ import annotations

import _thread
import glob
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from click.testing import CliRunner

from kfdtrace.replay.campaign import (
    campaign,
    demand,
    document,
    html_report,
    local_gpus,
    plan,
    replay_unit,
    run_campaign,
)
from kfdtrace.traces.format import TraceReader
from tests.test_replay import SAMPLES, rewrite, sample

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[fleet]' (.ci/run does)")


NODE_GPUS = "gfx942,gfx942"  # what the node's own GPUs are, for --hardware: the emulated default stands for them


@pytest.fixture(scope="module", autouse=True)
def cluster():
    # the node's workers inherit the environment the cluster starts with: without a GPU here, a replay without
    # --emulate runs on the emulated default, KFDTRACE_EMULATE, which stands for the node's two GPUs
    saved = os.environ.get("KFDTRACE_EMULATE")
    os.environ["KFDTRACE_EMULATE"] = NODE_GPUS
    try:
        ray.init(num_cpus=2, num_gpus=2, resources={"gfx942": 2, "gfx1100": 2}, log_to_driver=False,
                 include_dashboard=False)
    finally:
        if saved is None:
            del os.environ["KFDTRACE_EMULATE"]
        else:
            os.environ["KFDTRACE_EMULATE"] = saved
    yield
    ray.shutdown()


def hanging(path: str) -> str:
    """ping_pong without its CPU signals: its first POLL_REGMEM waits for ever (as in test_replay)."""
    rewrite(sample("ping_pong-gfx1100"), path, lambda rec, r, w: None if rec.type == "cpu_signal" else rec.fields)
    return path


def diverging(path: str) -> str:
    """sdma_stress with a flipped byte in its last input (as in test_replay): a checkpoint differs."""
    with TraceReader(sample("sdma_stress-gfx942")) as r:
        source = next(b.fields["va"] for b in r.records({"buffer"}) if b.fields["name"] == "source")
        last_input = [m.n for m in r.records({"mem"}) if m.fields["va"] == source][-2]

    def flip(rec, reader, writer):
        f = dict(rec.fields)
        if rec.type == "mem" and rec.n == last_input:
            data = bytearray(reader.blob(f["key"]))
            data[100] ^= 0x01
            f["key"] = writer.blob(bytes(data))
        return f

    rewrite(sample("sdma_stress-gfx942"), path, flip)
    return path


def replay_processes(name: str) -> list[int]:
    """The pids of the replay subprocesses (`replay TRACE --emulate ...`) the tasks run on the trace called
    `name`."""
    pids = []
    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(cmdline, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"--emulate" in argv and any(a.endswith(name.encode()) for a in argv):
            pids.append(int(cmdline.split("/")[2]))
    return pids


def parent(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("PPid:"))


def wait_for(find, seconds: float = 30.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = find()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_samples_a_hang_and_a_divergence_get_their_verdicts_in_json_and_html(tmp_path):
    samples = sorted(glob.glob(os.path.join(SAMPLES, "*.kfdtrace")))
    bad = [hanging(str(tmp_path / "hang.kfdtrace")), diverging(str(tmp_path / "diverge<b>&.kfdtrace"))]
    out, page = tmp_path / "c.json", tmp_path / "c.html"
    # --timeout bounds each wait: the samples' waits take ~0.1 s alone but share 2 cores with the suite's
    res = CliRunner().invoke(campaign, [*samples, *bad, "--timeout", "3", "--json", str(out), "--html", str(page)])
    assert res.exit_code == 2, res.output  # the worst verdict: hang
    doc = json.loads(out.read_text())
    verdicts = {os.path.basename(r["trace"]): r["verdict"] for r in doc["results"]}
    assert verdicts == {**{os.path.basename(s): "ok" for s in samples},
                        "hang.kfdtrace": "hang", "diverge<b>&.kfdtrace": "diverged"}
    by_name = {os.path.basename(r["trace"]): r for r in doc["results"]}
    assert "POLL_REGMEM" in by_name["hang.kfdtrace"]["message"]
    assert "buffer result" in by_name["diverge<b>&.kfdtrace"]["message"]
    assert all(r["attempts"] == 1 and r["node"] and r["wall_s"] > 0 for r in doc["results"])
    assert all(r["packets_per_s"] > 0 for r in doc["results"] if r["verdict"] == "ok")
    assert by_name["peer_ring-2xgfx942.kfdtrace"]["target"] == "gfx942,gfx942"  # its two recorded GPUs
    assert doc["status"] == 2 and not doc["interrupted"]
    assert sum(n["tasks"] for n in doc["nodes"].values()) == len(samples) + 2  # one task per trace
    text = page.read_text()
    assert "diverge&lt;b&gt;&amp;.kfdtrace" in text and "diverge<b>" not in text
    assert "<h2>Traces</h2>" in text and "<h2>Nodes</h2>" in text
    assert not any(tag in text for tag in ("<link", "<script", "<img"))  # self-contained
    assert text.count('class="hang"') == 2 and text.count('class="diverged"') == 2  # its task and its trace


def test_targets_loop_batches_and_an_infeasible_target():
    units, blobs = plan([sample("ping_pong-gfx1100")], ["gfx942", "gfx90a"], loops=3, batch=2)
    assert [(u.target, u.loops) for u in units] == [("gfx942", 2), ("gfx942", 1), ("gfx90a", 2), ("gfx90a", 1)]
    rows, interrupted = run_campaign(units, blobs, timeout=2)
    assert not interrupted and [r.verdict for r in rows] == ["ok", "ok", "cannot run", "cannot run"]
    assert "gfx90a" in rows[2].message and rows[2].attempts == 0  # never submitted: no node offers gfx90a
    assert demand("gfx942,gfx942", 1) == {"gfx942": 2} and demand("gfx942,gfx942", 4) == {"gfx942": 0.5}
    assert demand("gfx942,gfx942,gfx942", 2) == {"gfx942": 2}  # Ray takes whole numbers above 1
    assert demand("gfx942,gfx942", 4, hardware=True) == {"GPU": 0.5, "gfx942": 0.5}
    traces = {t["target"]: t for t in document(rows, False)["traces"]}  # one line per trace and target
    assert traces["gfx942"]["tasks"] == 2 and traces["gfx942"]["loops"] == 3 and traces["gfx942"]["verdict"] == "ok"
    assert traces["gfx942"]["packets_per_s"] > 0 and traces["gfx942"]["nodes"] == 1
    assert traces["gfx90a"]["verdict"] == "cannot run" and "gfx90a" in traces["gfx90a"]["message"]
    assert traces["gfx90a"]["loops"] == 3 and traces["gfx90a"]["packets_per_s"] is None


def test_hardware_replays_on_the_gpus_ray_assigned_each_task():
    units, blobs = plan([sample("sdma_stress-gfx942")], None, loops=2, batch=1)
    rows, _ = run_campaign(units, blobs, timeout=5, hardware=True)
    assert [r.verdict for r in rows] == ["ok", "ok"], rows
    assert all(r.backend == "emulated" and r.gpus in ("0", "1") for r in rows)  # Ray's GPU ids, one each
    # the child saw only the GPU Ray gave it (HIP_VISIBLE_DEVICES): one device, not the node's two
    assert all(r.devices.startswith("gpu0(gfx942") and "gpu1" not in r.devices for r in rows), rows
    assert "Ray GPUs" in html_report(document(rows, False))


def test_a_local_hardware_cluster_offers_the_gpus_a_program_here_sees(monkeypatch):
    monkeypatch.setenv("KFDTRACE_EMULATE", "gfx942,gfx1100,gfx1100")  # without a GPU, the emulated default
    assert local_gpus() == ["gfx942", "gfx1100", "gfx1100"]
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "2,0")
    assert local_gpus() == ["gfx1100", "gfx942"]  # what Ray's GPU ids will index


def test_hardware_on_gpus_of_another_family_cannot_run():
    units, blobs = plan([sample("ping_pong-gfx1100")], None, 1, 1)
    rows, _ = run_campaign(units, blobs, timeout=5, hardware=True)  # the node says gfx1100 but its GPUs are gfx942
    assert rows[0].verdict == "cannot run" and "not gfx1100" in rows[0].message and "--num-gpus" in rows[0].message


def test_an_unknown_target_is_bad_input_before_anything_runs():
    res = CliRunner().invoke(campaign, [sample("ping_pong-gfx1100"), "--targets", "gfx942,gfx9999"])
    assert res.exit_code == 4 and "gfx9999" in res.output


def test_a_trace_that_arrives_different_is_refused():
    units, _ = plan([sample("ping_pong-gfx1100")], None, 1, 1)
    row = replay_unit(units[0], b"not the trace", 2.0, 60.0, 1)
    assert row.verdict == "bad input" and "sha256" in row.message


def test_a_replay_stuck_past_the_task_timeout_is_killed_as_a_hang(tmp_path):
    units, blobs = plan([hanging(str(tmp_path / "stuck.kfdtrace"))], None, 1, 1)
    start = time.monotonic()
    rows, _ = run_campaign(units, blobs, timeout=60, task_timeout=1.5)
    assert rows[0].verdict == "hang" and "--task-timeout 1.5" in rows[0].message
    assert time.monotonic() - start < 20


def test_a_killed_worker_is_retried_and_reported(tmp_path):
    units, blobs = plan([hanging(str(tmp_path / "killed.kfdtrace"))], None, 1, 1)
    result = {}
    thread = threading.Thread(target=lambda: result.update(out=run_campaign(units, blobs, timeout=3)))
    thread.start()
    replay_pid = wait_for(lambda: replay_processes("killed.kfdtrace"))[0]
    os.kill(parent(replay_pid), signal.SIGKILL)  # the Ray worker running the task
    thread.join(60)
    rows, interrupted = result["out"]
    assert not interrupted and rows[0].verdict == "hang" and rows[0].attempts == 2, rows


def test_ctrl_c_cancels_and_the_partial_report_says_so(tmp_path):
    units, blobs = plan([hanging(str(tmp_path / "cancelled.kfdtrace"))], None, 1, 1)

    def interrupt() -> None:
        wait_for(lambda: replay_processes("cancelled.kfdtrace"))
        _thread.interrupt_main()

    threading.Thread(target=interrupt).start()
    rows, interrupted = run_campaign(units, blobs, timeout=60)
    assert interrupted and rows[0].verdict == "cancelled"
    doc = document(rows, interrupted)
    assert doc["interrupted"] and doc["results"][0]["status"] is None
    assert "interrupted: partial" in html_report(doc)
    wait_for(lambda: not replay_processes("cancelled.kfdtrace"), 15)  # the cancelled task killed its replay


def test_shared_paths_are_read_in_place_and_checked():
    units, blobs = plan([sample("sdma_stress-gfx942")], None, 1, 1)
    rows, _ = run_campaign(units, {}, timeout=2, shared=True)
    assert rows[0].verdict == "ok" and blobs  # nothing went through the object store


def test_the_replay_command_runs_a_campaign_and_sigint_writes_the_partial_report(tmp_path):
    trace = hanging(str(tmp_path / "sigint.kfdtrace"))
    out, page = tmp_path / "c.json", tmp_path / "c.html"
    proc = subprocess.Popen([sys.executable, "-m", "kfdtrace.replay.cli", "campaign", trace, "--ray", "local",
                             "--timeout", "60", "--json", str(out), "--html", str(page)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: replay_processes("sigint.kfdtrace") or proc.poll() is not None, 60)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stdout + stderr
    doc = json.loads(out.read_text())
    assert doc["interrupted"] and [r["verdict"] for r in doc["results"]] == ["cancelled"]
    assert "interrupted: partial" in page.read_text()
    wait_for(lambda: not replay_processes("sigint.kfdtrace"), 15)


def test_code_objects_travel_to_the_workers_with_the_tasks(tmp_path):
    """A vector add recorded on gfx942 with its plain ELF cannot run on gfx1100 until a gfx1100 build is given
    (--code-objects, or --code-object); the files are read once and reach the replays through Ray, so the folder
    may be gone by the time a task runs."""
    import shutil

    from kfdtrace.replay.campaign import CodeObjects
    from tests.test_code_objects_replay import CORPUS_1100
    from tests.test_compute_capture import vector_add

    trace = str(tmp_path / "va.kfdtrace")
    vector_add(trace, "gfx942", aql=True)
    units, blobs = plan([trace], ["gfx1100"], 1, 1)
    rows, _ = run_campaign(units, blobs, timeout=30)
    assert rows[0].verdict == "cannot run" and "corpus.gfx1100.co" in rows[0].message, rows[0].message
    folder = tmp_path / "builds"
    folder.mkdir()
    shutil.copy(CORPUS_1100, folder / "corpus.gfx1100.co")
    (folder / "notes.txt").write_text("not sent")
    objects = CodeObjects.read([], str(folder))
    assert [name for name, _ in objects.folder] == ["corpus.gfx1100.co"]
    shutil.rmtree(folder)
    rows, _ = run_campaign(units, blobs, timeout=30, objects=objects)
    assert rows[0].verdict == "ok", rows[0].message
    given = CodeObjects.read([f"corpus={CORPUS_1100}"], None)
    rows, _ = run_campaign(units, blobs, timeout=30, objects=given)
    assert rows[0].verdict == "ok", rows[0].message
    res = CliRunner().invoke(campaign, [trace, "--targets", "gfx1100", "--code-object", f"corpus={trace}"])
    assert res.exit_code == 4 and "is not a code object" in res.output, res.output
