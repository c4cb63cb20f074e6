"""Elastic data parallelism: the global batch stays fixed while the number of ranks changes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
import torch
import yaml
from ray._private import ray_constants
from ray.cluster_utils import Cluster

from nasfleet.orchestrator.launch import train_job
from nasfleet.orchestrator.launch.ray_cluster import loopback_cluster
from nasfleet.orchestrator.train import checkpoint_name, latest_checkpoint, read_meta, read_supernet

from conftest import tiny_config

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def _mpi_train(ranks: int, config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "mpiexec"), "-n", str(ranks), sys.executable, "-m", "nasfleet.orchestrator.cli",
         "train", "--config", str(config), "--launcher", "mpi", *extra],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _copy_run_to_step(run: Path, to: Path, step: int) -> Path:
    """A copy of ``run`` as it was at ``step``: later checkpoints and the results dropped."""
    shutil.copytree(run, to)
    for later in to.glob("checkpoint_[0-9]*"):
        if int(later.name.split("_")[1]) > step:
            shutil.rmtree(later)
    shutil.rmtree(to / "results", ignore_errors=True)
    config = to / "config.yaml"
    config.write_text(config.read_text().replace(str(run), str(to)))
    return config


def test_one_rank_resumes_a_two_rank_elastic_run_and_ends_where_two_ranks_end(tmp_path: Path) -> None:
    """Sandwich without random subnets trains the same two subnets on every rank, so the step's
    gradient is a function of the global batch alone: one rank accumulating both shards must
    reach the weights two ranks reach (up to the order of float additions)."""
    run = tmp_path / "two"
    config = tmp_path / "job.yaml"
    job = tiny_config(run, strategy={"name": "sandwich", "params": {"num_random": 0}}, optim={"steps": 8, "lr": 0.005,
                      "warmup_steps": 2}, launch={"kind": "mpi", "workers": 2, "min_workers": 1})
    config.write_text(yaml.safe_dump(job.model_dump(mode="json")))
    both = _mpi_train(2, config)
    assert both.returncode == 0, both.stderr[-3000:]
    assert read_meta(str(latest_checkpoint(str(run)))).shards == 2

    fixed = _copy_run_to_step(run, tmp_path / "fixed", 4)
    fixed.write_text(fixed.read_text().replace("min_workers: 1", "min_workers: null"))
    refused = _mpi_train(1, fixed, "--resume")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-3000:]
    assert "trained by 2 ranks, this job has 1 (an elastic job, --workers MIN:2, resumes" in refused.stderr

    alone = tmp_path / "one"
    resumed = _mpi_train(1, _copy_run_to_step(run, alone, 4), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    last = str(latest_checkpoint(str(alone)))
    assert last.endswith("checkpoint_00000008") and read_meta(last).world_size == 1 and read_meta(last).shards == 2
    two, one = read_supernet(str(latest_checkpoint(str(run))))[0], read_supernet(last)[0]
    at_4 = read_supernet(str(alone / "checkpoint_00000004"))[0]
    trained = [name for name, tensor in two.items() if tensor.is_floating_point() and "running" not in name]
    moved = max((one[name] - at_4[name]).abs().max().item() for name in trained)
    apart = max((one[name] - two[name]).abs().max().item() for name in trained)
    # Measured: moved 7e-3, apart 1e-6 (float rounding; at lr 0.05 the net amplifies it to 4e-5 in 8 steps).
    assert moved > 1e-3 and apart < 1e-5, (moved, apart)


@pytest.fixture
def two_node_cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Cluster, Any]]:
    """Ray on 127.0.0.1 (head, with the driver and Ray Train's controller) and 127.0.0.2, a CPU each.

    Fast node-health checks, so losing 127.0.0.2 is noticed in seconds; Ray Train may still
    try the old worker count once before it does, so that attempt's timeout is short too.
    """
    settings = loopback_cluster()
    for name, value in settings.ray_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "20")
    ray_constants.ENABLE_RAY_CLUSTER = False  # Ray read the loopback switch when it was imported
    health = {"health_check_period_ms": 500, "health_check_timeout_ms": 500, "health_check_failure_threshold": 3}
    # A temp dir of its own: in /tmp/ray the cluster's address file would make any other process's
    # bare ray.init() on this machine (another test's) join this cluster.
    temp_dir = tempfile.mkdtemp(prefix="nfel-", dir="/tmp")  # short: Ray's socket paths have a length limit
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False,
                        "_system_config": health, "temp_dir": temp_dir},
    )
    second = cluster.add_node(num_cpus=1, node_ip_address="127.0.0.2", temp_dir=temp_dir)
    ray.init(address=cluster.address, configure_logging=False)
    yield cluster, second
    ray.shutdown()
    cluster.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


def _registered(run: Path, step: int) -> bool:
    """Whether Ray Train's controller has registered the checkpoint of ``step`` (its folder appears before)."""
    try:
        return checkpoint_name(step) in (run / "checkpoint_manager_snapshot.json").read_text()
    except FileNotFoundError:
        return False


def test_losing_a_node_finishes_on_the_other_as_one_rank_resumed_from_the_checkpoint_would(
    two_node_cluster: tuple[Cluster, Any], tmp_path: Path
) -> None:
    """``--workers 1:2`` on two nodes; one node is killed for good after the first checkpoint.

    Ray Train restarts the worker group with the one worker it can place, from that
    checkpoint, and the run ends with the weights of a one-rank resume of the same checkpoint
    (bit for bit: here `mpiexec -n 1`, so the launcher does not matter either).
    """
    cluster, second = two_node_cluster
    run = tmp_path / "elastic"
    job = tiny_config(run, optim={"steps": 40, "lr": 0.05, "warmup_steps": 2}, checkpoint_every_steps=10,
                      log_every_steps=10, launch={"kind": "ray", "workers": 2, "min_workers": 1, "max_failures": 3})
    outcome: dict[str, object] = {}
    runner = threading.Thread(target=lambda: outcome.update(finished=train_job(job) is None))
    runner.start()
    deadline = time.monotonic() + 240
    while not _registered(run, 10) and runner.is_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _registered(run, 10), "no checkpoint was registered in time"
    reference = _copy_run_to_step(run, tmp_path / "reference", 10)  # Ray keeps 3 checkpoints: 10 goes later
    cluster.remove_node(second, allow_graceful=False)
    runner.join(timeout=400)
    assert outcome.get("finished") is True
    assert [n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]] == ["127.0.0.1"]  # it never came back

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["world_size"], r["resumed_from_step"]) for r in records] == \
        [(10, 2, 0), (20, 1, 10), (30, 1, 10), (40, 1, 10)]
    last = str(latest_checkpoint(str(run)))
    assert read_meta(last).world_size == 1 and read_meta(last).shards == 2

    alone = _mpi_train(1, reference, "--resume", "--launcher", "mpi")
    assert alone.returncode == 0, alone.stderr[-3000:]
    elastic, resumed = read_supernet(last)[0], read_supernet(str(latest_checkpoint(str(tmp_path / "reference"))))[0]
    for name, tensor in elastic.items():
        assert torch.equal(tensor, resumed[name]), name
