"""Continual learning through the trainer: ExSSNeT forgets nothing, and what breaks that is seen.

Tiny 3-task sequences of the 8×8 digits (``split:3``: classes 0-3, 4-6, 7-9), trained with
momentum and weight decay on, which move weights whose gradient is zero.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nasfleet.orchestrator.config import JobConfig, config_from_dict
from nasfleet.orchestrator.continual import ContinualResult, run_continual
from nasfleet.strategies.continual import ContinualStrategy

from conftest import assert_one_line_error, nasfleet, nasfleet_forked

STEPS_PER_TASK = 12
SPACE = {
    "name": "mbconv", "stem_width": 8,
    "stages": [
        {"widths": [8], "depths": [1], "kernels": [3], "expands": [2], "stride": 1},
        {"widths": [16], "depths": [1], "kernels": [3], "expands": [2], "stride": 2},
    ],
}


def continual_job(run_dir: Path, **params: Any) -> JobConfig:
    return config_from_dict({
        "run_dir": str(run_dir), "seed": 1, "space": SPACE,
        "strategy": {"name": "continual", "params": {"tasks": "split:3", "steps_per_task": STEPS_PER_TASK,
                                                     "density": 0.3, **params}},
        "data": {"dataset": "digits", "batch_size": 32},
        "optim": {"steps": 3 * STEPS_PER_TASK, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-3, "warmup_steps": 1},
        "checkpoint_every_steps": STEPS_PER_TASK, "log_every_steps": STEPS_PER_TASK,
    })


def test_exssnet_forgets_nothing(tmp_path: Path) -> None:
    result = run_continual(continual_job(tmp_path / "run"), split="val")
    assert result.forgetting == 0.0
    for j in range(3):  # every later measurement of task j is the one right after learning it, bit for bit
        assert {row[j] for row in result.accuracy[j:]} == {result.accuracy[j][j]}
    assert min(result.accuracy[-1]) > 0.5  # it learned something (chance is at most 1/3)
    assert json.loads((tmp_path / "run" / "continual.json").read_text())["forgetting"] == 0.0


def test_without_exclusivity_later_tasks_overwrite_earlier_ones(tmp_path: Path) -> None:
    result = run_continual(continual_job(tmp_path / "run", exclusive=False), split="val")
    assert result.forgetting > 0.0


def test_without_restoring_frozen_entries_momentum_and_weight_decay_cause_forgetting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ContinualStrategy, "after_update", lambda self, step, model: None)
    result = run_continual(continual_job(tmp_path / "run"), split="val")
    changed = [result.accuracy[-1][j] != result.accuracy[j][j] for j in range(2)]
    assert any(changed)


def test_the_command_runs_a_sequence_and_refuses_bad_input(tmp_path: Path) -> None:
    config = tmp_path / "job.yaml"
    config.write_text(json.dumps(continual_job(tmp_path / "unused").model_dump(mode="json")))
    result = nasfleet("continual", "--config", str(config), "--tasks", "split:2", "--method", "supsup",
                      "--steps-per-task", "4", "--run-dir", str(tmp_path / "run"), "--test-images", "50")
    assert result.returncode == 0, result.stderr
    assert "forgetting 0.0000" in result.stdout
    saved = ContinualResult(**{k: v for k, v in json.loads((tmp_path / "run" / "continual.json").read_text()).items()
                               if k not in ("average_accuracy", "forgetting")})
    assert saved.method == "supsup" and len(saved.accuracy) == 2 and saved.images_per_task[0] == 50
    assert_one_line_error(nasfleet_forked("continual", "--config", str(config), "--tasks", "split:9"), "split:9")
    assert_one_line_error(nasfleet_forked("continual", "--config", str(config), "--tasks", "halves"), "halves")
    assert_one_line_error(nasfleet_forked("continual", "--config", str(config), "--method", "ewc"), "ewc")
    assert_one_line_error(
        nasfleet_forked("continual", "--config", str(config), "--density", "0", "--run-dir", str(tmp_path / "r2")),
        "density",
    )
