"""Subnet ensembles: late fusion, members chosen on validation, compared with the best single subnet."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import assert_one_line_error, tiny_config, train
from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.evaluate import TrainedSupernet, evaluate_arch
from nasfleet.orchestrator.evaluate.ensemble import (
    Candidate,
    build_ensemble,
    candidate,
    choose_members,
    fused_accuracy,
    split_labels,
)
from nasfleet.orchestrator.evaluate.evaluator import standard_subnets

CLI = [sys.executable, "-m", "nasfleet.orchestrator.cli"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainedSupernet:
    return train(tiny_config(tmp_path_factory.mktemp("ensemble") / "run", optim={"steps": 8, "lr": 0.05, "warmup_steps": 1}))


def made(probabilities: list[list[float]], role: str = "m") -> Candidate:
    p = np.array(probabilities, dtype=np.float32)
    return Candidate(role, None, 1.0, 1, {"val": p, "test": p})  # type: ignore[arg-type]


def test_members_that_err_on_different_images_fuse_into_a_better_ensemble() -> None:
    labels = np.array([0, 1, 2])
    # Each member is wrong on a different image, mildly; right on the others, confidently.
    a = made([[0.4, 0.6, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    b = made([[1.0, 0.0, 0.0], [0.0, 0.4, 0.6], [0.0, 0.0, 1.0]])
    c = made([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.6, 0.0, 0.4]])
    assert [m.accuracy("val", labels) for m in (a, b, c)] == pytest.approx([2 / 3] * 3)
    assert fused_accuracy([a, b, c], "val", labels) == 1.0
    assert fused_accuracy([a, a, a], "val", labels) == pytest.approx(2 / 3)  # identical members: no gain
    assert choose_members([a, b, c], 2, labels)[0] == 0 and len(set(choose_members([a, b, c], 3, labels))) == 3
    with pytest.raises(NasfleetError, match="needs 1..3 candidates"):
        choose_members([a, b, c], 4, labels)


def test_a_candidate_scores_as_the_evaluation_code_does(trained: TrainedSupernet) -> None:
    labels = split_labels(trained)
    arch = trained.space.largest()
    scored = candidate(trained, "largest", arch)
    reference = evaluate_arch(trained, arch, ("val", "test")).accuracy
    assert {s: scored.accuracy(s, labels[s]) for s in ("val", "test")} == pytest.approx(reference)
    assert np.allclose(scored.probabilities["test"].sum(axis=1), 1.0, atol=1e-5)


def test_the_report_compares_the_ensemble_with_the_best_single_subnet_it_could_afford(trained: TrainedSupernet) -> None:
    archs, roles = standard_subnets(trained.space, 4, seed=0)
    report = build_ensemble(trained, archs, roles, 3, measure_latency=False)
    assert len(report.members) == 3 and len({json.dumps(m.arch, sort_keys=True) for m in report.members}) == 3
    assert report.mflops == pytest.approx(sum(m.mflops for m in report.members))
    assert report.best_single.mflops <= report.mflops + 1e-9
    assert report.members[0].val_accuracy == max(
        evaluate_arch(trained, a, ("val",)).accuracy["val"] for a in archs
    )
    same = build_ensemble(trained, [archs[-1]] * 3, ["x", "y", "z"], 3, measure_latency=False)
    assert same.test_accuracy == same.members[0].test_accuracy  # three copies of one subnet gain nothing


def test_the_command_prints_json_and_refuses_bad_input(trained: TrainedSupernet) -> None:
    run = str(trained.config.run_dir)
    shown = subprocess.run([*CLI, "ensemble", "--run", run, "--members", "2", "--candidates", "3", "--json"],
                           capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert len(report["members"]) == 2 and report["latency_ms"] > 0 and report["best_single"]["latency_ms"] > 0
    too_many = subprocess.run([*CLI, "ensemble", "--run", run, "--members", "9", "--candidates", "2", "--no-latency"],
                              capture_output=True, text=True)
    assert_one_line_error(too_many, "an ensemble of 9 members needs")
    no_search = subprocess.run([*CLI, "ensemble", "--run", run, "--search", "nope"], capture_output=True, text=True)
    assert_one_line_error(no_search, "holds no Pareto front")
