"""``hydra.launcher.executor=ray`` on a two-node Ray cluster on this machine: a head and a
worker node (``ray start``), one CPU each. The sweep plans for both nodes' CPUs, its stacks
train on both, and when the worker node dies mid-sweep its stack is trained again on the head:
every run FINISHED, every epoch written once."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from test_ray import Cluster, epochs, ray_cluster, recorded, sweep, wait_for

pytestmark = [pytest.mark.ray_multinode, pytest.mark.slow]

# The head notices a node gone after 3 missed health checks of 0.5 s, not Ray's 5 of 3 s.
FAST_HEALTH_CHECKS = {
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "500",
    "RAY_health_check_failure_threshold": "3",
}


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Cluster]]:
    """A head node and a worker node, each with one CPU (they start in ~15 s)."""
    with (
        ray_cluster(tmp_path_factory.mktemp("ray-head"), 1, env=FAST_HEALTH_CHECKS) as head,
        ray_cluster(tmp_path_factory.mktemp("ray-worker"), 1, join=head.address) as worker,
    ):
        yield head, worker


def test_stacks_spread_over_two_nodes_and_a_lost_node_s_stack_is_retried_on_the_other(
    two_nodes: tuple[Cluster, Cluster], tmp_path: Path, store_uri: str
) -> None:
    """4 runs as 2 stacked tasks, planned for the cluster's 2 CPUs (one per node): one stack
    trains on each node, with live curves. The worker node is killed (all its processes) once
    every run's curve is live: its stack is submitted again and trains on the head; every run
    ends FINISHED with every epoch once, and the killed stack's runs carry attempts=2."""
    head, worker = two_nodes
    n_epochs = 1200  # ~8 s a stack here: the worker node is killed well before its stack ends
    log = tmp_path / "sweep.log"
    cmd = sweep(tmp_path / "nodes", "ray-two-nodes", "seed=0,1,2,3", f"hydra.launcher.ray.address={head.address}",
                f"trainer.max_epochs={n_epochs}", "tracking.flush_every_s=1")  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": store_uri}
    env.pop("RAY_ADDRESS", None)
    client = MlflowClient(store_uri)

    def all_live() -> bool:  # every run has epochs in the store while it trains
        runs, _ = recorded(store_uri, "ray-two-nodes")
        return len(runs) == 4 and all(
            r.info.status == "RUNNING" and client.get_metric_history(r.info.run_id, "val/loss")
            for r in runs
        )

    with (
        open(log, "w") as out,
        subprocess.Popen(
            cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        ) as process,
    ):
        try:
            wait_for(all_live)
            # one stack on each node: a train_stack worker under each node's processes
            assert len(head.tasks()) == 1 and len(worker.tasks()) == 1
            worker.kill()  # the node, all its processes at once
            process.wait(timeout=180)
        finally:
            process.kill()
    output = log.read_text()
    assert process.returncode == 0, output[-4000:]
    assert "A stack of 2 runs was lost (" in output and "submitting it again" in output
    summary = json.loads((tmp_path / "nodes" / "sweep" / "lossbench-summary.json").read_text())
    assert summary["executor"] == "ray" and summary["workers"] == 2  # one CPU on each node
    assert (summary["runs"], summary["stacks"]) == (4, 2)
    runs, [parent] = recorded(store_uri, "ray-two-nodes")
    assert len(runs) == 4 and {r.info.status for r in [*runs, parent]} == {"FINISHED"}
    attempts = sorted(r.data.tags.get("lossbench.attempts", "1") for r in runs)
    assert attempts == ["1", "1", "2", "2"]  # the lost node's stack, trained on the head
    for run in runs:  # live epochs of the lost attempt are not written twice
        assert epochs(client, run.info.run_id) == list(range(n_epochs))
