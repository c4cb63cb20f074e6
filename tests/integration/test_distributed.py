"""Ray Train + DeepSpeed data parallelism on CPU (gloo): real workers, real checkpoints, a real kill.

The same training loop as one process runs in every worker: the run folder has the same
checkpoint layout and ``metrics.jsonl`` columns, and resume is exact.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import ray
import torch
import yaml
from prometheus_client.parser import text_string_to_metric_families

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.config import DEFAULT_DEEPSPEED, JobConfig, load_config
from nasfleet.orchestrator.evaluate import load_trained
from nasfleet.orchestrator.launch import train_job
from nasfleet.orchestrator.launch.ray_cluster import init_loopback_ray
from nasfleet.orchestrator.train import latest_checkpoint, read_meta, read_rank_state, read_supernet

from conftest import assert_one_line_error, nasfleet, tiny_config

pytestmark = pytest.mark.slow
TWO_WORKERS = {"kind": "ray", "workers": 2, "max_failures": 2}


def ray_job(run_dir: Path, **overrides: object) -> JobConfig:
    launch = {**TWO_WORKERS, **overrides.pop("launch", {})}  # type: ignore[dict-item]
    return tiny_config(run_dir, launch=launch, **overrides)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return _free_port()


@pytest.fixture(scope="module")
def local_ray(metrics_port: int):
    # On loopback only: a bare _node_ip_address="127.0.0.1" is rewritten to the external address.
    init_loopback_ray(metrics_port, num_cpus=2, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def straight(local_ray, tmp_path_factory: pytest.TempPathFactory) -> JobConfig:
    job = ray_job(
        tmp_path_factory.mktemp("dist") / "straight",
        launch={"comm": {"topology": "leafspine:leaves=1,spines=1,hosts=2,gbps=10"}},
    )
    train_job(job)
    return job


def _records(run: str) -> list[dict]:
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def test_the_run_folder_has_the_one_layout_and_the_same_metrics_columns(straight: JobConfig, tmp_path: Path) -> None:
    checkpoint = latest_checkpoint(straight.run_dir)
    assert checkpoint is not None and checkpoint.endswith("checkpoint_00000012")
    meta = read_meta(checkpoint)
    assert (meta.step, meta.world_size, meta.backend, meta.threads) == (12, 2, "deepspeed", 1)
    folder = Path(checkpoint)
    assert {"supernet.pt", "metrics.jsonl", "config.yaml", "meta.json"} <= {p.name for p in folder.iterdir()}
    assert {p.name for p in (folder / "ranks").iterdir()} == {"rank_0.pt", "rank_1.pt"}
    assert (folder / "optimizer" / "engine").is_dir()
    records = _records(straight.run_dir)
    assert [r["step"] for r in records] == [4, 8, 12]
    single = tiny_config(tmp_path / "single")
    train_job(single)
    one = _records(single.run_dir)[-1]
    assert set(records[-1]) == set(one) and set(records[-1]["by_role"]) == set(one["by_role"])
    assert set(records[-1]["timing"]) == set(one["timing"]) | {"predicted_allreduce_s"}


def test_step_time_is_split_and_the_comm_prediction_is_logged_beside_it(straight: JobConfig) -> None:
    timing = _records(straight.run_dir)[-1]["timing"]
    assert 0 < timing["allreduce_s_per_step"] <= timing["update_s_per_step"]
    assert timing["compute_s_per_step"] > 0
    # 8,434 fp32 parameters all-reduced by 2 ranks over a 10 Gb/s link: 2·(1/2)·n/B ≈ 27 µs.
    assert timing["predicted_allreduce_s"] == pytest.approx(8434 * 4 * 8 / 10e9, rel=0.05)


def test_ranks_train_different_subnets_but_keep_identical_weights(straight: JobConfig) -> None:
    checkpoint = str(latest_checkpoint(straight.run_dir))
    ranks = [read_rank_state(checkpoint, r) for r in range(2)]
    assert ranks[0].weights_sha256 == ranks[1].weights_sha256
    assert ranks[0].rng_numpy != ranks[1].rng_numpy  # each rank draws its own random subnets
    assert ranks[0].subnets_trained == ranks[1].subnets_trained == 12 * 3
    assert load_trained(straight.run_dir).step == 12


def test_rank_zero_metrics_are_scraped_from_rays_agent_endpoint(straight: JobConfig, metrics_port: int) -> None:
    deadline, steps, values = time.monotonic() + 90, None, {}
    while steps is None and time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
            text = response.read().decode()
        values = {
            sample.name: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name.startswith("ray_nasfleet_") and sample.labels.get("run") == straight.run_name
        }
        steps = values.get("ray_nasfleet_train_steps_total")
        if steps is None:
            time.sleep(2)
    # The names of prometheus_client's endpoint behind Ray's own prefix, and the run label on each series.
    assert steps is not None and steps >= 12, sorted(values)
    assert values["ray_nasfleet_train_samples_total"] >= 12 * straight.data.batch_size * 2
    assert any(name.startswith("ray_nasfleet_subnet_accuracy_ratio") for name in values)


def test_the_written_config_reruns_the_job_and_a_resume_after_a_failed_attempt_is_exact(
    straight: JobConfig, tmp_path: Path
) -> None:
    """The run's config.yaml, interrupted, resumed once with a damaged file and once repaired.

    Ends with the uninterrupted run's weights: the written config is the whole job, a user
    error in a worker fails at once (no retries) and leaves the run resumable, and resume is
    exact. One run for all of it (each Ray Train run costs tens of seconds here).
    """
    written = Path(straight.run_dir) / "config.yaml"
    assert load_config(written).launch.deepspeed == DEFAULT_DEEPSPEED
    run_dir = tmp_path / "again"
    again = tmp_path / "again.yaml"
    again.write_text(written.read_text().replace(str(straight.run_dir), str(run_dir)))
    job = load_config(again)
    assert job.launch.kind == "ray" and job.launch.workers == 2
    train_job(job, until_step=4)
    with pytest.raises(NasfleetError, match="--resume"):
        train_job(job)
    state = run_dir / "checkpoint_00000004" / "ranks" / "rank_1.pt"
    intact = state.read_bytes()
    state.write_bytes(b"not a checkpoint")
    workers_before = _train_worker_actors_ever_started()
    with pytest.raises(NasfleetError, match="rank_1.pt is corrupted"):
        train_job(job, resume=True)
    assert _train_worker_actors_ever_started() - workers_before == 2  # one worker group: no restarts
    state.write_bytes(intact)
    result = nasfleet("train", "--config", str(run_dir / "config.yaml"), "--resume",
                      "--ray-address", ray.get_runtime_context().gcs_address)
    assert result.returncode == 0, result.stderr[-2000:]
    a, b = load_trained(straight.run_dir).model.state_dict(), load_trained(run_dir).model.state_dict()
    for name, tensor in a.items():
        assert torch.equal(tensor, b[name]), name
    assert [r["step"] for r in _records(str(run_dir))] == [4, 8, 12]


def _registered_checkpoint(run_dir: Path) -> bool:
    """Whether Ray Train's controller has registered a checkpoint (a folder appears before that)."""
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    try:
        return json.loads(snapshot.read_text()).get("latest_checkpoint_result") is not None
    except (FileNotFoundError, json.JSONDecodeError):
        return False


def _train_worker_actors_ever_started() -> int:
    """Ray Train worker actors the GCS knows of, dead ones included (the state API needs the dashboard)."""
    return sum(actor["ActorClassName"] == "RayTrainWorker" for actor in ray._private.state.actors().values())


def _train_workers() -> list[psutil.Process]:
    raylet_pid = ray._private.worker._global_node.all_processes["raylet"][0].process.pid
    return [p for p in psutil.Process(raylet_pid).children(recursive=True) if "RayTrainWorker" in p.name()]


def test_a_killed_worker_is_replaced_and_the_run_finishes_from_its_last_checkpoint(local_ray, tmp_path: Path) -> None:
    """Under ZeRO-2, where each rank draws its own subnets too (the other Ray runs are ZeRO-0); the
    run ends where the same job ends uninterrupted at ZeRO-0."""
    zero2 = json.loads((Path(__file__).resolve().parents[2] / "cluster_configs/deepspeed/zero2_cpu.json").read_text())
    job = ray_job(
        tmp_path / "killed", optim={"steps": 60, "lr": 0.05, "warmup_steps": 2},
        checkpoint_every_steps=10, log_every_steps=10, launch={"deepspeed": zero2},
    )
    outcome: dict[str, object] = {}
    runner = threading.Thread(target=lambda: outcome.update(done=train_job(job) is None))
    runner.start()
    deadline = time.monotonic() + 240
    while not _registered_checkpoint(Path(job.run_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _registered_checkpoint(Path(job.run_dir)), "no checkpoint was registered in time"
    victims = _train_workers()
    assert len(victims) == 2
    victims[1].send_signal(signal.SIGKILL)
    runner.join(timeout=400)
    assert not runner.is_alive() and outcome.get("done")
    checkpoint = str(latest_checkpoint(job.run_dir))
    assert read_meta(checkpoint).step == 60
    ranks = [read_rank_state(checkpoint, r) for r in range(2)]
    assert ranks[0].resumed_from_step >= 10  # the replacement group restored a checkpoint
    assert ranks[0].weights_sha256 == ranks[1].weights_sha256
    assert ranks[0].rng_numpy != ranks[1].rng_numpy  # each rank drew its own subnets

    # The same job at ZeRO-0, uninterrupted, as two mpiexec ranks: the same subnets on each rank,
    # so the same weights (resume is exact, and ZeRO-2's per-rank subnets reduce as ZeRO-0's do).
    zero0 = job.model_dump(mode="json")
    zero0["run_dir"] = str(tmp_path / "zero0")
    zero0["launch"] = {**zero0["launch"], "kind": "mpi", "deepspeed": DEFAULT_DEEPSPEED}
    (tmp_path / "zero0.yaml").write_text(yaml.safe_dump(zero0))
    reference = subprocess.run(
        [str(Path(sys.executable).parent / "mpiexec"), "-n", "2", sys.executable, "-m", "nasfleet.orchestrator.cli",
         "train", "--config", str(tmp_path / "zero0.yaml")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert reference.returncode == 0, reference.stderr[-3000:]
    killed, straight = read_supernet(checkpoint)[0], read_supernet(str(latest_checkpoint(str(tmp_path / "zero0"))))[0]
    differences = {k: (killed[k].double() - straight[k].double()).abs().max().item() for k in killed
                   if killed[k].is_floating_point() and "running" not in k}
    assert max(differences.values()) <= 1e-6, max(differences.items(), key=lambda kv: kv[1])


def test_more_workers_than_cpus_is_a_user_error(local_ray, tmp_path: Path) -> None:
    with pytest.raises(NasfleetError, match="need 3 CPUs but the Ray cluster has 2"):
        train_job(ray_job(tmp_path / "big", launch={"workers": 3}))


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--strategy", "sandwhich"], "unknown strategy 'sandwhich'"),
        (["--strategy-param", "bogus=1"], "invalid parameter 'bogus' for strategy 'sandwich'"),
        (["--set", "data.dataset=cifar"], "unknown data set 'cifar'"),
        (["--deepspeed", "absent.json"], "DeepSpeed config absent.json does not exist"),
    ],
)
def test_user_errors_stop_a_distributed_run_before_any_worker_starts(
    tmp_path: Path, args: list[str], fragment: str
) -> None:
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tmp_path / "run").model_dump(mode="json")))
    # Port 9 (discard) has no Ray: reaching connect_ray would be a different error.
    result = nasfleet("train", "--config", str(config), "--workers", "2", "--ray-address", "127.0.0.1:9", *args,
                      cwd=tmp_path, timeout=60)
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "run").exists()
