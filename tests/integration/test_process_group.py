"""Training without Ray: two ranks started by `mpiexec` (mpi4py discovery) or by `torchrun`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import yaml

from nasfleet.orchestrator.results import hold_run
from nasfleet.orchestrator.train import latest_checkpoint, read_rank_state, read_supernet

from conftest import nasfleet_forked, tiny_config

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
LAUNCHERS = {
    "mpi": [str(BIN / "mpiexec"), "-n", "2", sys.executable, "-m", "nasfleet.orchestrator.cli"],
    "torchrun": [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2", "-m", "nasfleet.orchestrator.cli"],
}


REPO = Path(__file__).resolve().parents[2]


ZERO2_YAML = yaml.safe_dump(json.loads((REPO / "cluster_configs" / "deepspeed" / "zero2_cpu.json").read_text()))
ZERO1 = REPO / "cluster_configs" / "deepspeed" / "zero1.json"
RUNS: dict[str, tuple[str, Path | str | None, str]] = {
    # mpiexec with the default ZeRO-0 config runs for every strategy in test_strategy_contract.py.
    "torchrun-zero0": ("torchrun", None, "sandwich"),
    "mpi-zero1": ("mpi", ZERO1, "sandwich"),
    # The shipped CPU ZeRO-2 file, given as YAML.
    "mpi-zero2-yaml": ("mpi", ZERO2_YAML, "sandwich"),
}
SANDWICH_RUNS = list(RUNS)
# One path per step (PA&DA): a rank skips some parameters for a whole step, the other rank others,
# and the next path is drawn from the gradient norms the last one left on the weights.
RUNS |= {
    "mpi-zero0-pada": ("mpi", None, "pada"),
    "mpi-zero1-pada": ("mpi", ZERO1, "pada"),
    "mpi-zero2-pada": ("mpi", ZERO2_YAML, "pada"),
}


@pytest.fixture(scope="module")
def two_rank_runs(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Path, subprocess.CompletedProcess]]:
    """Trains the tiny job with two ranks once per entry of RUNS (tests compare the runs)."""
    done: dict[str, tuple[Path, subprocess.CompletedProcess]] = {}

    def trained(name: str) -> tuple[Path, subprocess.CompletedProcess]:
        if name not in done:
            launcher, deepspeed, strategy = RUNS[name]
            folder = tmp_path_factory.mktemp(name)
            run_dir = folder / f"run-{launcher}"
            config = folder / "job.yaml"
            job = tiny_config(run_dir) if strategy == "sandwich" else tiny_config(run_dir, strategy={"name": strategy})
            config.write_text(yaml.safe_dump(job.model_dump(mode="json")))
            if isinstance(deepspeed, str):
                (folder / "deepspeed.yaml").write_text(deepspeed)
                deepspeed = folder / "deepspeed.yaml"
            extra = ["--deepspeed", str(deepspeed)] if deepspeed else []
            done[name] = run_dir, subprocess.run(
                [*LAUNCHERS[launcher], "train", "--config", str(config), "--launcher", launcher, *extra],
                capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
        return done[name]

    return trained


@pytest.mark.parametrize("name", SANDWICH_RUNS)
def test_two_ranks_train_publish_checkpoints_and_record_results(name: str, two_rank_runs) -> None:
    run_dir, result = two_rank_runs(name)
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = latest_checkpoint(str(run_dir))
    assert checkpoint is not None and checkpoint.endswith("checkpoint_00000012")
    assert not list(run_dir.glob(".checkpoint_*"))  # staged folders were all published
    ranks = [read_rank_state(checkpoint, r) for r in range(2)]
    assert ranks[0].weights_sha256 == ranks[1].weights_sha256
    assert ranks[0].rng_numpy != ranks[1].rng_numpy  # each rank drew its own subnets, ZeRO-2 included
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [4.0, 8.0, 12.0]
    progress = [line for line in result.stdout.splitlines() if re.match(r"step \d+/12 \(", line)]
    assert [line.split()[1] for line in progress] == ["4/12", "8/12", "12/12"]  # rank 0's, one per window
    assert all("samples/s  ETA " in line for line in progress) and progress[-1].endswith("ETA 0:00:00")
    results = pd.read_parquet(run_dir / "results")
    assert sorted(results["role"]) == ["largest", "random-0", "smallest"]  # rank 0 alone evaluated


@pytest.mark.parametrize(
    ("reference", "name"),
    [("torchrun-zero0", "mpi-zero1"), ("torchrun-zero0", "mpi-zero2-yaml"),
     ("mpi-zero0-pada", "mpi-zero1-pada"), ("mpi-zero0-pada", "mpi-zero2-pada")],
)
def test_zero1_and_zero2_end_where_zero0_ends_with_the_same_per_rank_subnets(
    reference: str, name: str, two_rank_runs
) -> None:
    """Each rank ran its own subnets, so the ranks' graphs differ (under pada a rank skips some
    parameters for a whole step); the same ones under every stage, so the weights must agree.
    PA&DA draws each path from the gradient norms the last one left: under ZeRO-1/2 too."""
    runs = [two_rank_runs(n) for n in (reference, name)]
    for _, result in runs:
        assert result.returncode == 0, result.stderr[-3000:]
    checkpoints = [str(latest_checkpoint(str(run))) for run, _ in runs]
    for rank in range(2):  # the same sampling stream on each rank: the same sequence of subnets
        assert read_rank_state(checkpoints[0], rank).rng_numpy == read_rank_state(checkpoints[1], rank).rng_numpy
    assert read_rank_state(checkpoints[1], 0).rng_numpy != read_rank_state(checkpoints[1], 1).rng_numpy
    zero0, other = (read_supernet(c)[0] for c in checkpoints)
    assert zero0.keys() == other.keys()
    # Measured: 0.0 in all four (bit-identical). Without DeepSpeedBackend's one backward per step,
    # ZeRO-2 (sandwich and one path a step) and ZeRO-1 (one path a step) fail in gloo ("Received data size doesn't
    # match expected size"): DeepSpeed reduces only the parameters that have a gradient on a rank.
    differences = {k: (zero0[k].double() - other[k].double()).abs().max().item() for k in zero0}
    assert max(differences.values()) <= 1e-6, max(differences.items(), key=lambda kv: kv[1])


def test_every_shipped_cpu_deepspeed_config_trains_in_a_test() -> None:
    """zero0_cpu.json holds the built-in default's settings (test_cluster_configs.py), which torchrun trains
    above, as does every other two-rank test; zero1.json and zero2_cpu.json train above too; the files
    marked for GPUs are refused on CPUs in one line (test_reliability.py)."""
    shipped = {p.name: json.loads(p.read_text()) for p in (REPO / "cluster_configs" / "deepspeed").glob("*.json")}
    cpu = {name for name, settings in shipped.items() if settings.get("nasfleet", {}).get("requires") != "gpu"}
    assert cpu == {"zero0_cpu.json", "zero1.json", "zero2_cpu.json"}


def test_a_second_job_on_a_held_run_folder_is_refused_on_every_rank(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(tiny_config(run_dir).model_dump(mode="json")))
    with hold_run(str(run_dir), "the first job"):
        result = subprocess.run(
            [*LAUNCHERS["mpi"], "train", "--config", str(config), "--launcher", "mpi"],
            capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    # Both ranks say it; mpiexec may interleave their two lines, so count the message, not lines.
    assert result.stderr.count("error: run ") == result.stderr.count("is in use by the first job") == 2, \
        result.stderr[-2000:]
    assert latest_checkpoint(str(run_dir)) is None and not (run_dir / "config.yaml").exists()


def test_a_failed_resume_puts_the_previous_config_back(tmp_path: Path) -> None:
    """The run is still the one its newest checkpoint holds, so `--resume` without the new flags goes on."""
    run_dir = tmp_path / "run"
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(tiny_config(run_dir).model_dump(mode="json")))
    trained = nasfleet_forked("train", "--config", str(config), "--no-progress", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-2000:]
    written = (run_dir / "config.yaml").read_bytes()
    # Refused once the ranks read the checkpoint: it was trained in one process.
    result = subprocess.run(
        [*LAUNCHERS["mpi"], "train", "--config", str(run_dir / "config.yaml"), "--launcher", "mpi", "--resume",
         "--steps", "16"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "trained in one process (launch.kind local): resume it the same way" in result.stderr
    assert (run_dir / "config.yaml").read_bytes() == written
    assert latest_checkpoint(str(run_dir)).endswith("checkpoint_00000012")


def test_deepspeed_clips_the_step_gradient_as_one_process_does(tmp_path: Path) -> None:
    """optim.grad_clip_norm is one setting for both backends: DeepSpeed's engine (one torchrun rank) ends a
    clipped step on the weights of the torch backend's clipped step, and away from its own unclipped one."""
    optim = {"steps": 1, "lr": 0.5, "momentum": 0.0, "weight_decay": 0.0, "warmup_steps": 0, "grad_clip_norm": 0.01}
    runs = {}
    for name, clip, launcher in (("one", 0.01, None), ("deepspeed", 0.01, "torchrun"), ("free", None, "torchrun")):
        run_dir, config = tmp_path / name, tmp_path / f"{name}.yaml"
        job = tiny_config(run_dir, optim={**optim, "grad_clip_norm": clip}, checkpoint_every_steps=1, log_every_steps=1)
        config.write_text(yaml.safe_dump(job.model_dump(mode="json")))
        if launcher is None:
            result = nasfleet_forked("train", "--config", str(config), "--no-progress", cwd=tmp_path)
        else:
            one_rank = [LAUNCHERS["torchrun"][0], "--standalone", "--nproc-per-node", "1", *LAUNCHERS["torchrun"][4:]]
            result = subprocess.run(
                [*one_rank, "train", "--config", str(config), "--launcher", launcher],
                capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
        assert result.returncode == 0, result.stderr[-3000:]
        runs[name] = read_supernet(str(latest_checkpoint(str(run_dir))))[0]

    def largest_difference(a: str, b: str) -> float:
        return max((runs[a][k].double() - runs[b][k].double()).abs().max().item() for k in runs[a])

    assert largest_difference("one", "deepspeed") <= 1e-6  # measured: 0.0
    assert largest_difference("deepspeed", "free") > 1e-3  # measured: 0.17
