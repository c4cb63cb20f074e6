"""``nasfleet prune``: a polarisation run's pruned network, saved as a file torch alone can load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nasfleet.orchestrator.data import load_data
from nasfleet.orchestrator.launch import train_job

from conftest import assert_one_line_error, nasfleet, nasfleet_forked, tiny_config

POLARISATION = {"name": "polarisation", "params": {"sparsity": 0.5, "t": 1.0}}


@pytest.fixture(scope="module")
def polarised_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("prune")
    train_job(tiny_config(root / "run", strategy=POLARISATION))
    return root / "run"


def test_the_pruned_network_is_smaller_and_scores_what_it_reports(polarised_run: Path, tmp_path: Path) -> None:
    result = nasfleet("prune", "--run", str(polarised_run), "--out", str(tmp_path / "out"), "--sparsity", "0.6")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "pruned.json").read_text())
    assert report["sparsity"] == 0.6
    assert report["params"] < report["unpruned"]["params"] and report["mflops"] < report["unpruned"]["mflops"]
    net = torch.export.load(tmp_path / "out" / "pruned.pt2").module()  # torch alone: no nasfleet class needed
    test = load_data(tiny_config(tmp_path).data).test
    with torch.no_grad():
        accuracy = (net(test.images).argmax(dim=1) == test.labels).float().mean().item()
    assert accuracy == pytest.approx(report["test_accuracy"], abs=1e-9)

    again = nasfleet_forked("prune", "--run", str(polarised_run), "--out", str(tmp_path / "out"))
    assert_one_line_error(again, "exists; give a new folder")


def test_prune_refuses_a_run_of_another_strategy_and_a_bad_sparsity(polarised_run: Path, tmp_path: Path) -> None:
    train_job(tiny_config(tmp_path / "run", optim={"steps": 2, "lr": 0.05, "warmup_steps": 1}))
    assert_one_line_error(nasfleet_forked("prune", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "o")),
                          "prune needs a polarisation run")
    bad = nasfleet_forked("prune", "--run", str(polarised_run), "--out", str(tmp_path / "o"), "--sparsity", "1")
    assert_one_line_error(bad, "--sparsity is a fraction of channels in [0, 1)")
