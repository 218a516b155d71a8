"""`replay campaign --hardware --ray local` on this machine's own GPUs: a local Ray cluster offering them (Ray
GPUs, and one resource of their family each), every task on the GPU Ray assigned it. Runs where /dev/kfd has a
GPU; elsewhere test_campaign.py covers the same path with the emulated default standing for a node's GPUs."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from kfdtrace.driver.syscalls import kfd_usable
from kfdtrace.replay.campaign import campaign, local_gpus
from tests.test_replay import sample

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[fleet]' (.ci/run does)")
pytestmark = pytest.mark.hardware


def test_a_hardware_campaign_runs_each_task_on_the_gpu_ray_assigned(tmp_path):
    if not kfd_usable():
        pytest.skip("no GPU behind /dev/kfd on this machine")
    family, out = local_gpus()[0], tmp_path / "c.json"
    try:
        res = CliRunner().invoke(campaign, [sample("sdma_stress-gfx942"), "--ray", "local", "--hardware", "--targets",
                                            family, "--loops", "2", "--batch", "1", "--json", str(out)])
    finally:
        ray.shutdown()
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())["results"]
    assert len(rows) == 2 and all(r["verdict"] == "ok" and r["backend"] == "kfd" for r in rows), rows
    assert all(r["gpus"] and "gpu1" not in r["devices"] and family in r["devices"] for r in rows)  # one GPU each
