"""Ray Train + DeepSpeed data parallelism on CPU (gloo): real workers, real checkpoints, a real kill."""

from __future__ import annotations

import json
import signal
import socket
import urllib.request
from dataclasses import replace
import threading
import time
from pathlib import Path

import psutil
from prometheus_client.parser import text_string_to_metric_families
import pytest
import ray
import torch

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.comm_prediction import CommSource
from nasfleet.orchestrator.launch.ray_train import DistributedOptions, DistributedResult, train_distributed
from nasfleet.orchestrator.evaluate.subnets import load_trained
from nasfleet.orchestrator.storage import latest_checkpoint

from conftest import tiny_config

pytestmark = pytest.mark.slow
TWO_WORKERS = DistributedOptions(workers=2, max_failures=2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return _free_port()


@pytest.fixture(scope="module")
def local_ray(metrics_port: int):
    ray.init(
        num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", configure_logging=False,
        _metrics_export_port=metrics_port,
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def straight(local_ray, tmp_path_factory: pytest.TempPathFactory) -> DistributedResult:
    run_dir = tmp_path_factory.mktemp("dist") / "straight"
    fabric = CommSource(topology="leafspine:leaves=1,spines=1,hosts=2,gbps=10")
    return train_distributed(tiny_config(run_dir), replace(TWO_WORKERS, comm=fabric))


@pytest.fixture(scope="module")
def straight_run(straight: DistributedResult) -> Path:
    return Path(straight.run_folder)


def test_step_time_is_split_and_the_comm_prediction_is_logged_beside_it(straight: DistributedResult) -> None:
    metrics = straight.metrics
    assert metrics["step"] == 12 and metrics["world_size"] == 2
    assert 0 < metrics["allreduce_s_per_step"] <= metrics["update_s_per_step"]
    assert metrics["compute_s_per_step"] > 0
    # 8,434 fp32 parameters all-reduced by 2 ranks over a 10 Gb/s link: 2·(1/2)·n/B ≈ 27 µs.
    assert metrics["predicted_allreduce_s"] == pytest.approx(8434 * 4 * 8 / 10e9, rel=0.05)


def _rank_states(checkpoint: str) -> list[dict]:
    return [torch.load(Path(checkpoint) / f"rank_{r}.pt", weights_only=False) for r in range(2)]


def test_ranks_train_different_subnets_but_keep_identical_weights(straight_run: Path) -> None:
    checkpoint = latest_checkpoint(str(straight_run))
    assert checkpoint is not None and checkpoint.endswith("checkpoint_00000012")
    ranks = _rank_states(checkpoint)
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    assert ranks[0]["rng"]["numpy"] != ranks[1]["rng"]["numpy"]  # each rank draws its own random subnets
    assert ranks[0]["subnets_trained"] == ranks[1]["subnets_trained"] == 12 * 3
    trained = load_trained(straight_run)
    assert trained.step == 12


def test_rank_zero_metrics_are_scraped_from_rays_agent_endpoint(straight: DistributedResult, metrics_port: int) -> None:
    deadline, steps = time.monotonic() + 90, None
    while steps is None and time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
            text = response.read().decode()
        values = {
            sample.name: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name.startswith("ray_nasfleet_")
        }
        steps = values.get("ray_nasfleet_train_steps_total", values.get("ray_nasfleet_train_steps"))
        if steps is None:
            time.sleep(2)
    assert steps == 12, sorted(values)
    assert any(name.startswith("ray_nasfleet_subnet_accuracy") for name in values)


def test_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(straight_run: Path, tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "resumed")
    train_distributed(config, TWO_WORKERS, until_step=4)
    with pytest.raises(NasfleetError, match="--resume"):
        train_distributed(config, TWO_WORKERS)
    train_distributed(config, TWO_WORKERS, resume=True)
    straight, resumed = load_trained(straight_run).model.state_dict(), load_trained(config.run_dir).model.state_dict()
    for name, tensor in straight.items():
        assert torch.equal(tensor, resumed[name]), name


def _registered_checkpoint(run_dir: Path) -> bool:
    """Whether Ray Train's controller has registered a checkpoint (a folder appears before that)."""
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    try:
        return json.loads(snapshot.read_text()).get("latest_checkpoint_result") is not None
    except (FileNotFoundError, json.JSONDecodeError):
        return False


def _train_workers() -> list[psutil.Process]:
    raylet_pid = ray._private.worker._global_node.all_processes["raylet"][0].process.pid
    return [p for p in psutil.Process(raylet_pid).children(recursive=True) if "RayTrainWorker" in p.name()]


def test_a_killed_worker_is_replaced_and_the_run_finishes_from_its_last_checkpoint(local_ray, tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "killed", optim={"steps": 150, "lr": 0.05, "warmup_steps": 2})
    config = config.model_copy(update={"checkpoint_every_steps": 10, "log_every_steps": 10})
    outcome: dict[str, object] = {}
    runner = threading.Thread(target=lambda: outcome.update(result=train_distributed(config, TWO_WORKERS)))
    runner.start()
    deadline = time.monotonic() + 240
    while not _registered_checkpoint(config.run_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _registered_checkpoint(config.run_dir), "no checkpoint was registered in time"
    victims = _train_workers()
    assert len(victims) == 2
    victims[1].send_signal(signal.SIGKILL)
    runner.join(timeout=400)
    assert not runner.is_alive()
    result = outcome["result"]
    assert result.step == 150
    ranks = _rank_states(result.checkpoint_folder)
    assert ranks[0]["resumed_from_step"] >= 10  # the replacement group restored a checkpoint
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]


def test_more_workers_than_cpus_is_a_user_error(local_ray, tmp_path: Path) -> None:
    with pytest.raises(NasfleetError, match="need 3 CPUs but the Ray cluster has 2"):
        train_distributed(tiny_config(tmp_path / "big"), DistributedOptions(workers=3))


def test_missing_deepspeed_config_is_a_user_error(tmp_path: Path) -> None:
    options = DistributedOptions(workers=2, deepspeed_config=tmp_path / "absent.json")
    with pytest.raises(NasfleetError, match="DeepSpeed config .* does not exist"):
        train_distributed(tiny_config(tmp_path / "x"), options)
