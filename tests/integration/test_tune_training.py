"""`train --tune`: PBT / PB2 over the supernet's learning rate and distillation weight, on a real Ray cluster."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import assert_one_line_error, nasfleet, tiny_config, train
from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.config import JobConfig
from nasfleet.orchestrator.evaluate import evaluate_standard_subnets, load_trained
from nasfleet.orchestrator.train import METRICS_FILE, latest_checkpoint, lr_factor
from nasfleet.orchestrator.tuning.population import (
    TuneTrainingOutcome,
    retarget_checkpoint,
    trial_config,
    tune_training,
    validate_settings,
)
from nasfleet.strategies import build_strategy
from nasfleet.supernet import build_space

STEPS, INTERVAL = 12, 4


def tuned_config(run_dir: Path, steps: int = STEPS) -> JobConfig:
    # Log every 2 steps so the trainer's own lr record shows each interval's learning rate.
    return tiny_config(run_dir, optim={"steps": steps, "lr": 0.05, "warmup_steps": 2}, log_every_steps=2)


def metrics_lines(run_dir: str | Path) -> dict[int, dict]:
    return {line["step"]: line for line in map(json.loads, (Path(run_dir) / METRICS_FILE).read_text().splitlines())}


# --------------------------------------------------------------------------- without Ray
def test_sandwich_weights_distilled_tasks_by_distill_weight(tiny: JobConfig) -> None:
    space = build_space(tiny.space)
    rng = np.random.default_rng(0)
    default = build_strategy("sandwich", {"num_random": 1}, space).subnets_for_step(0, rng)
    assert [t.weight for t in default] == [1.0, 1.0, 1.0]
    tasks = build_strategy("sandwich", {"num_random": 1, "distill_weight": 0.4}, space).subnets_for_step(0, rng)
    assert {(t.distill is None, t.weight) for t in tasks} == {(True, 1.0), (False, 0.4)}
    with pytest.raises(NasfleetError, match="distill_weight"):
        build_strategy("sandwich", {"distill_weight": 0}, space)


def test_a_retargeted_checkpoint_trains_on_with_the_new_learning_rate(tmp_path: Path) -> None:
    config = tuned_config(tmp_path / "run")
    train(config, until_step=6)
    faster = trial_config(config, Path(config.run_dir), {"lr": 0.11, "distill_weight": 0.5})
    retarget_checkpoint(Path(str(latest_checkpoint(config.run_dir))), faster)
    run = train(faster, resume=True)
    logged = metrics_lines(config.run_dir)
    assert logged[4]["lr"] == pytest.approx(0.05 * lr_factor(4, config.optim))
    assert logged[8]["lr"] == pytest.approx(0.11 * lr_factor(8, config.optim))
    assert run.config.strategy.params["distill_weight"] == 0.5


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"population": 1}, "population"),
        ({"interval_steps": STEPS}, "below the number of steps"),
        ({"interval_steps": 0}, "interval_steps"),
        ({"scheduler": "hyperband"}, "scheduler"),
        ({"quantile_fraction": 0.8}, "quantile_fraction"),
    ],
)
def test_bad_settings_are_user_errors(tmp_path: Path, settings: dict, fragment: str) -> None:
    arguments = {"scheduler": "pbt", "population": 2, "interval_steps": INTERVAL, **settings}
    with pytest.raises(NasfleetError, match=fragment):
        tune_training(tuned_config(tmp_path / "run"), **arguments)


def test_pb2_without_gpy_names_the_missing_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "GPy", None)  # makes `import GPy` fail
    with pytest.raises(NasfleetError, match="GPy"):
        validate_settings(tuned_config(tmp_path / "run"), scheduler="pb2", population=2, interval_steps=INTERVAL)


def test_refuses_a_run_dir_that_holds_a_run(tmp_path: Path) -> None:
    config = tuned_config(tmp_path / "run")
    train(config, until_step=2)
    with pytest.raises(NasfleetError, match="already holds a run"):
        tune_training(config, "pbt", population=2, interval_steps=INTERVAL)


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--tune", "pbt", "--workers", "2"], "cannot be combined with Ray/MPI launch"),
        (["--tune", "pbt", "--launcher", "mpi"], "cannot be combined"),
        (["--tune", "pbt", "--population", "1"], "population"),
        (["--tune", "asha"], "scheduler"),
    ],
)
def test_cli_rejects_bad_tune_requests(tmp_path: Path, extra: list[str], fragment: str) -> None:
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(tuned_config(tmp_path / "run").model_dump(mode="json")))
    assert_one_line_error(nasfleet("train", "--config", str(config), *extra), fragment)
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- on Ray
@pytest.fixture(scope="module")
def pbt(ray_cluster: str, tmp_path_factory: pytest.TempPathFactory) -> TuneTrainingOutcome:
    config = tuned_config(tmp_path_factory.mktemp("pbt") / "run")
    # Two trials and a quantile of one half: the worse trial exploits the better at every perturbation.
    return tune_training(config, "pbt", population=2, interval_steps=INTERVAL, quantile_fraction=0.5)


@pytest.mark.slow
def test_pbt_exploits_copy_a_better_checkpoint_and_perturb_its_hyperparameters(pbt: TuneTrainingOutcome) -> None:
    schedule = pd.read_parquet(pbt.schedule_path)
    assert sorted(schedule.groupby("trial")["step"].apply(list).tolist()) == [[4, 8, 12], [4, 8, 12]]
    exploits = schedule[schedule["cloned_from"] != ""]
    assert len(exploits) == 2  # one per perturbation (steps 4 and 8)
    for row in exploits.itertuples():
        source = schedule[(schedule["trial"] == row.cloned_from) & (schedule["step"] == row.step - INTERVAL)].iloc[0]
        # The copied checkpoint came from the trial that scored better at that step, with its hyper-parameters ...
        loser = schedule[(schedule["trial"] == row.trial) & (schedule["step"] == row.step - INTERVAL)].iloc[0]
        assert source["score"] >= loser["score"]
        assert (row.cloned_lr, row.cloned_distill_weight) == (source["lr"], source["distill_weight"])
        # ... which were perturbed (×0.8, ×1.2 or resampled, kept in bounds) before training went on.
        assert (row.lr, row.distill_weight) != (source["lr"], source["distill_weight"])
        assert 0.05 * 0.3 <= row.lr <= 0.05 * 3 and 0.25 <= row.distill_weight <= 2


@pytest.mark.slow
def test_the_optimizer_runs_each_interval_with_that_intervals_learning_rate(pbt: TuneTrainingOutcome) -> None:
    schedule = pd.read_parquet(pbt.schedule_path)
    optim = tuned_config(Path("unused")).optim
    expected = [row.lr * lr_factor(row.step, optim) for row in schedule.itertuples()]
    np.testing.assert_allclose(schedule["base_lr"], schedule["lr"])
    np.testing.assert_allclose(schedule["optimizer_lr"], expected, atol=1e-12)
    # The trainer's own log in the winner's folder: the last interval ran at the winner's final lr.
    winner = next(t for t in pbt.trials if t.trial == pbt.winner)
    assert metrics_lines(pbt.run_dir)[STEPS - 2]["lr"] == pytest.approx(winner.lr * lr_factor(STEPS - 2, optim))


@pytest.mark.slow
def test_the_winner_is_installed_as_an_ordinary_run(pbt: TuneTrainingOutcome) -> None:
    winner = next(t for t in pbt.trials if t.trial == pbt.winner)
    assert winner.score == max(t.score for t in pbt.trials)
    trained = load_trained(pbt.run_dir)
    assert trained.step == STEPS and Path(trained.config.run_dir) == pbt.run_dir
    assert trained.config.optim.lr == pytest.approx(winner.lr)
    assert trained.config.strategy.params["distill_weight"] == pytest.approx(winner.distill_weight)
    results = evaluate_standard_subnets(trained, ("val",), random_subnets=0)
    assert np.mean([r.accuracy["val"] for r in results]) == pytest.approx(winner.score)
    summary = json.loads(pbt.summary_path.read_text())
    assert summary["winner"] == pbt.winner and len(summary["trials"]) == 2


@pytest.mark.slow
def test_cli_pb2_on_a_running_cluster_then_evaluate(ray_cluster: str, tmp_path: Path) -> None:
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(tuned_config(tmp_path / "run").model_dump(mode="json")))
    result = nasfleet(
        "train", "--config", str(config), "--steps", "8", "--tune", "pb2", "--population", "2",
        "--tune-interval", str(INTERVAL), "--ray-address", ray_cluster,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "winner" in result.stdout and "distill weight" in result.stdout
    schedule = pd.read_parquet(tmp_path / "run" / "tune" / "schedule.parquet")
    exploit = schedule[schedule["cloned_from"] != ""]
    assert len(exploit) == 1 and exploit["step"].item() == 8  # PB2's one perturbation, at step 4
    assert schedule["lr"].between(0.05 * 0.3, 0.05 * 3).all() and schedule["distill_weight"].between(0.25, 2).all()
    evaluated = nasfleet("evaluate", "--run", str(tmp_path / "run"), "--random", "0", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert [r["role"] for r in json.loads(evaluated.stdout)] == ["smallest", "largest"]
