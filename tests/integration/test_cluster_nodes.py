"""A search on a 3-node Ray cluster (one machine, logical GPUs: ``ray.cluster_utils.Cluster``) places
half-GPU trials on several nodes, and losing a worker node mid-search only delays it: the trials that
ran there restart from their checkpoints elsewhere and every trial finishes.

This test starts its own cluster (the session's single-node Ray cannot lose a node) and stops only
that cluster's processes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from repo_paths import ROOT
from trial_files import results, results_so_far, trial_dirs

NUM_SAMPLES = 6
MAX_EPOCHS = 10


@pytest.fixture
def three_nodes():
    from ray._private.utils import get_ray_address_file
    from ray.cluster_utils import Cluster

    # The cluster registers itself as this machine's current Ray; put back what was there before.
    address_file = Path(get_ray_address_file(None))
    registered = address_file.read_text() if address_file.exists() else None
    # Each node: 1 CPU and 1 logical GPU, so two half-GPU trials fit on each.
    node_args = {"num_cpus": 1, "num_gpus": 1, "object_store_memory": 100 * 1024**2}
    cluster = Cluster(initialize_head=True, connect=False, head_node_args=node_args)
    try:
        workers = [cluster.add_node(**node_args) for _ in range(2)]
        cluster.wait_for_nodes()
        yield cluster, workers
    finally:
        cluster.shutdown()
        if registered is None:
            address_file.unlink(missing_ok=True)
        else:
            address_file.write_text(registered)


@pytest.mark.ray
def test_half_gpu_trials_spread_over_nodes_and_survive_losing_one(three_nodes, tmp_path):
    cluster, workers = three_nodes
    experiment = tmp_path / "results" / "nodes"
    log = tmp_path / "driver.log"
    driver = subprocess.Popen(
        [sys.executable, "search/run.py", "--method", "softmax", "--dataset", "digits", "--splits", "0", "--seeds", "3",
         "--num-samples", str(NUM_SAMPLES), "--max-epochs", str(MAX_EPOCHS), "--scheduler", "fifo",
         "--gpus-per-trial", "0.5", "--cpus-per-trial", "0.5", "--checkpoint-every", "1",
         "--address", cluster.address, "--storage-path", str(tmp_path / "results"), "--name", "nodes"],
        cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT,  # a pipe nobody reads would block the driver
    )
    worker_ids = {w.node_id: w for w in workers}
    removed = None
    deadline = time.monotonic() + 180
    try:
        while removed is None:  # lose a worker node while a trial on it is mid-run
            assert driver.poll() is None, f"search ended before a node could be removed: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "no trial seen mid-run on a worker node"
            # The driver's staging copies: written at each report, where the experiment folder's lag
            # behind by a background copy that a busy machine can hold up past a trial's middle epochs.
            staged = Path(cluster.head_node.get_session_dir_path()).glob("artifacts/*/nodes/driver_artifacts/train_trial_*")
            for rows in (results_so_far(t) for t in staged):
                last = rows[-1] if rows else None
                if last and last["node_id"] in worker_ids and 2 <= last["training_iteration"] <= MAX_EPOCHS - 3:
                    removed = last["node_id"]
                    cluster.remove_node(worker_ids[removed])
                    break
            time.sleep(0.05)
        driver.wait(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
    out = log.read_text()
    assert driver.returncode == 0, out[-3000:]
    assert f"{NUM_SAMPLES} trials, {NUM_SAMPLES} finished, 0 pruned, 0 errored" in out, out[-3000:]

    trials = {t.name: results(t) for t in trial_dirs(experiment)}
    assert len(trials) == NUM_SAMPLES
    assert all(rows[-1]["training_iteration"] == MAX_EPOCHS for rows in trials.values())
    nodes = {r["node_id"] for rows in trials.values() for r in rows}
    assert len(nodes) >= 2 and removed in nodes  # trials were placed on several nodes
    moved = [rows for rows in trials.values() if rows[0]["node_id"] == removed != rows[-1]["node_id"]]
    assert moved, "no trial on the lost node went on elsewhere"
    for rows in moved:  # from its checkpoint: the epochs once each, not again from the first
        assert [r["training_iteration"] for r in rows] == list(range(1, MAX_EPOCHS + 1))
