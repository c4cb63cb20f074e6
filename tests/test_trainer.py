"""The single-process trainer: checkpoints, exact resume, metrics, run-directory safety."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.train.checkpoints import load_checkpoint
from nasfleet.orchestrator.config import TrainConfig
from nasfleet.orchestrator.evaluate.subnets import evaluate_standard_subnets, load_trained
from nasfleet.orchestrator.train.trainer import train

from conftest import tiny_config


def test_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(tmp_path: Path) -> None:
    straight = train(tiny_config(tmp_path / "straight"), show_progress=False)
    interrupted = tiny_config(tmp_path / "resumed")
    checkpoint = interrupted.run_dir / "checkpoint.pt"
    train(interrupted, show_progress=False, until_step=4)
    at_step_4 = checkpoint.read_bytes()
    train(interrupted, resume=True, show_progress=False, until_step=7)
    # A crash after step 7 but before the step-8 checkpoint: only the step-4 one survives.
    checkpoint.write_bytes(at_step_4)
    resumed = train(interrupted, resume=True, show_progress=False)
    assert resumed.step == straight.step == 12
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert straight.optimizer.state_dict()["state"].keys() == resumed.optimizer.state_dict()["state"].keys()


def test_metrics_are_logged_per_subnet_role_without_duplicates_after_resume(tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "run")
    train(config, show_progress=False, until_step=10)  # logs 4 and 8, checkpoint at 10, then "crashes"
    train(config, resume=True, show_progress=False)
    lines = [json.loads(line) for line in (config.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [4, 8, 12]
    assert set(lines[-1]["by_role"]) == {"largest", "smallest", "random"}
    assert lines[-1]["by_role"]["largest"]["mflops"] > lines[-1]["by_role"]["smallest"]["mflops"]


def test_checkpoint_holds_everything_needed_to_resume(tiny: TrainConfig) -> None:
    train(tiny, show_progress=False)
    state = load_checkpoint(tiny.run_dir / "checkpoint.pt")
    assert state["step"] == 12
    assert {"model", "optimizer", "scheduler", "strategy", "rng", "config"} <= set(state)


def test_an_existing_run_is_never_overwritten_without_resume(tiny: TrainConfig) -> None:
    train(tiny, show_progress=False)
    before = (tiny.run_dir / "checkpoint.pt").read_bytes()
    with pytest.raises(NasfleetError, match="--resume"):
        train(tiny, show_progress=False)
    assert (tiny.run_dir / "checkpoint.pt").read_bytes() == before


def test_corrupted_checkpoint_is_a_user_error(tiny: TrainConfig) -> None:
    train(tiny, show_progress=False)
    path = tiny.run_dir / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(NasfleetError, match="corrupted"):
        train(tiny, resume=True, show_progress=False)
    with pytest.raises(NasfleetError, match="corrupted"):
        load_trained(tiny.run_dir)


def test_evaluation_reports_bounds_and_random_subnets_and_leaves_the_supernet_unchanged(tiny: TrainConfig) -> None:
    train(tiny, show_progress=False)
    trained = load_trained(tiny.run_dir)
    before = {k: v.clone() for k, v in trained.model.state_dict().items()}
    results = evaluate_standard_subnets(trained, ("val", "test"), random_subnets=2)
    assert [r.role for r in results] == ["smallest", "random-0", "random-1", "largest"]
    assert results[0].mflops < results[-1].mflops and results[0].params < results[-1].params
    assert all(set(r.accuracy) == {"val", "test"} for r in results)
    assert all(0.0 <= acc <= 1.0 for r in results for acc in r.accuracy.values())
    assert results[-1].accuracy["val"] > 0.3  # 12 steps already beat chance (0.1) by far
    for key, value in trained.model.state_dict().items():
        assert torch.equal(value, before[key]), key
