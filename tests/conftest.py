"""Shared fixtures: small, seeded configs that train in seconds."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from nasfleet.orchestrator.config import JobConfig, config_from_dict
from nasfleet.orchestrator.evaluate import TrainedSupernet, load_trained
from nasfleet.orchestrator.launch import train_job
from nasfleet.orchestrator.metrics import TrainingMetrics

pytest_plugins = ["s3_server"]

TINY_SPACE = {
    "name": "mbconv",
    "stem_width": 8,
    "stages": [
        {"widths": [8, 12], "depths": [1, 2], "kernels": [3, 5], "expands": [2, 3], "stride": 1},
        {"widths": [12, 16], "depths": [1, 2], "kernels": [3, 5], "expands": [2, 3], "stride": 2},
    ],
}


def tiny_config(run_dir: Path, **overrides: object) -> JobConfig:
    data: dict[str, object] = {
        "run_dir": str(run_dir),
        "seed": 3,
        "space": TINY_SPACE,
        "strategy": {"name": "sandwich", "params": {"num_random": 1}},
        "data": {"dataset": "digits", "batch_size": 32},
        "optim": {"steps": 12, "lr": 0.05, "warmup_steps": 2},
        "eval": {"calibration_batches": 2, "random_subnets": 1},
        "checkpoint_every_steps": 4,
        "log_every_steps": 4,
    }
    data.update(overrides)
    return config_from_dict(data)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """A local Ray on loopback for one test module; yields its GCS address (for --ray-address)."""
    import ray

    from nasfleet.orchestrator.launch.ray_cluster import init_loopback_ray

    # Also sets the loopback settings in os.environ: the CLI processes that tests start with
    # --ray-address 127.0.0.1:PORT need them to join (Ray would rewrite the address otherwise).
    init_loopback_ray(num_cpus=2, include_dashboard=False, configure_logging=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def write_config(path: Path, run_dir: Path, **overrides: object) -> Path:
    """A job YAML for :func:`tiny_config` with ``overrides``, as a user would pass to ``--config``."""
    path.write_text(yaml.safe_dump(tiny_config(run_dir, **overrides).model_dump(mode="json")))
    return path


def train(
    config: JobConfig, resume: bool = False, until_step: int | None = None, metrics: TrainingMetrics | None = None
) -> TrainedSupernet:
    """Train ``config`` with its launcher (as ``nasfleet train`` does, without evaluating), then load the run."""
    train_job(config, resume=resume, until_step=until_step, metrics=metrics)
    return load_trained(config.run_dir)


@pytest.fixture
def tiny(tmp_path: Path) -> JobConfig:
    return tiny_config(tmp_path / "run")


CLI = [sys.executable, "-m", "nasfleet.orchestrator.cli"]


def nasfleet(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user does: a real process."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
