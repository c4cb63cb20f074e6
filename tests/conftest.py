"""Shared fixtures: small, seeded configs that train in seconds."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from nasfleet.orchestrator.config import JobConfig, config_from_dict
from nasfleet.orchestrator.data_fetch import CACHE_ENV
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


def nasfleet(
    *args: str, cwd: Path | None = None, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user does: a real process (``env`` replaces the environment)."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env)


@pytest.fixture(scope="session", autouse=True)
def data_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test, and every process it starts, caches data sets here, never in the user's cache."""
    folder = tmp_path_factory.mktemp("data-cache")
    previous = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = previous


def nasfleet_forked(*args: str, cwd: Path | None = None, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """``nasfleet ARGS`` in a forked child: its own process, exit code and stdout/stderr file descriptors.

    The child runs the CLI's ``main`` as the interpreter would (an uncaught exception prints
    its traceback to fd 2 and exits 1) and ends with ``os._exit``, so nothing of this test
    process's shutdown runs twice.
    """
    import torch

    from nasfleet.orchestrator.cli.app import main

    with tempfile.TemporaryDirectory(prefix="nasfleet-cli-") as tmp:
        out_path, err_path = Path(tmp, "stdout"), Path(tmp, "stderr")
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 1
            try:
                for fd, path in ((1, out_path), (2, err_path)):
                    os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
                sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 (closed by os._exit)
                sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
                if cwd is not None:
                    os.chdir(cwd)
                torch.set_num_threads(1)  # two cores are shared: training sets launch.threads, evaluation does not
                main(list(args))
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        deadline = time.monotonic() + timeout_s
        while (status := os.waitpid(pid, os.WNOHANG))[0] == 0:
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                pytest.fail(f"nasfleet {' '.join(args)} ran longer than {timeout_s} s")
            time.sleep(0.02)
        return subprocess.CompletedProcess(
            list(args), os.waitstatus_to_exitcode(status[1]), out_path.read_text(), err_path.read_text()
        )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@contextmanager
def benchmark_module(name: str) -> Iterator[ModuleType]:
    """``benchmarks/NAME.py`` imported as a script sees itself: its helpers on the path, and under its
    own name, which its spawned worker processes import it by."""
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[name]
        sys.path.remove(str(BENCHMARKS))
