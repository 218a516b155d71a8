"""`replay campaign` on a Ray cluster of several nodes (Ray's own multi-node test cluster, on this machine): a
node that dies mid-task has its task retried on another node, and the report says where each attempt ran."""

from __future__ import annotations

import os
import threading

import pytest

from kfdtrace.replay.campaign import document, plan, run_campaign
from tests.test_campaign import hanging, parent, replay_processes, wait_for

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[fleet]' (.ci/run does)")


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    # a dead node is noticed within about a second, not Ray's default of tens of seconds
    config = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 200, "health_check_failure_threshold": 3}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "_system_config": config,
                                                           "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=1, resources={"gfx1100": 1}) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster, workers
    ray.shutdown()
    cluster.shutdown()


def raylet_pid(node) -> int:
    return node.all_processes["raylet"][0].process.pid


def test_a_node_that_dies_mid_task_is_retried_on_another(cluster, tmp_path):
    ray_cluster, workers = cluster
    units, blobs = plan([hanging(str(tmp_path / "orphan.kfdtrace"))], None, 1, 1)
    result = {}
    thread = threading.Thread(target=lambda: result.update(out=run_campaign(units, blobs, timeout=3)))
    thread.start()
    replay_pid = wait_for(lambda: replay_processes("orphan.kfdtrace"), 60)[0]
    doomed = next(n for n in workers if raylet_pid(n) == parent(parent(replay_pid)))  # the node running it
    ray_cluster.remove_node(doomed, allow_graceful=False)
    thread.join(120)
    rows, interrupted = result["out"]
    survivor = next(n for n in workers if n is not doomed)
    assert not interrupted and rows[0].verdict == "hang" and rows[0].attempts == 2, rows
    assert rows[0].node == survivor.node_id != doomed.node_id  # the retry ran on the other node
    assert document(rows, False)["nodes"].keys() == {survivor.node_id}
    assert not os.path.exists(f"/proc/{replay_pid}")  # the first attempt's replay died with its node
