"""``nasfleet status``: a run's progress, whether it runs, its last checkpoint and its best subnets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_config
from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.launch import train_job
from nasfleet.orchestrator.launch.job import evaluate_and_record
from nasfleet.orchestrator.results import hold_run
from nasfleet.orchestrator.run_status import read_status


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("status") / "run"
    job = tiny_config(run, optim={"steps": 8, "lr": 0.05, "warmup_steps": 1})
    train_job(job)
    evaluate_and_record(job)
    return run


def test_a_finished_run_reports_its_end_its_checkpoint_and_its_best_subnets(finished_run: Path) -> None:
    status = read_status(str(finished_run), best=2)
    assert (status.step, status.total_steps, status.checkpoint_step) == (8, 8, 8)
    assert status.held_by is None and status.eta_s is None  # nobody runs it: no ETA
    assert status.strategy == "sandwich" and status.dataset == "digits"
    assert set(status.losses) == {"largest", "smallest", "random"}
    every = read_status(str(finished_run), best=10).best
    assert len(status.best) == 2 and len(every) == 3  # smallest, largest, one random subnet
    assert [b.val_accuracy for b in every] == sorted((b.val_accuracy for b in every), reverse=True)
    lines = status.lines()
    assert lines[0].endswith("not running)") and lines[1].startswith("step 8/8 (100%)")
    assert any(line.startswith("last checkpoint:") and line.endswith("(step 8)") for line in lines)


def test_a_held_run_names_its_holder_and_an_eta(finished_run: Path) -> None:
    with hold_run(str(finished_run), "nasfleet train"):
        status = read_status(str(finished_run))
    assert status.held_by is not None and status.held_by.startswith("nasfleet train (pid ")
    assert status.eta_s == 0.0  # at its last step already
    assert read_status(str(finished_run)).held_by is None  # released


def test_a_uri_run_reads_its_lease(tmp_path: Path, finished_run: Path) -> None:
    uri = f"file://{finished_run}"
    assert read_status(uri).held_by is None
    with hold_run(uri, "nasfleet train", ttl_s=30, renew_s=5, settle_s=0.01):
        assert read_status(uri).held_by.startswith("nasfleet train")


def test_the_command_prints_lines_or_json_and_refuses_what_is_not_a_run(finished_run: Path, tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "nasfleet.orchestrator.cli", "status"]
    shown = subprocess.run([*cli, str(finished_run), "--json"], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["checkpoint_step"] == 8
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    for target, message in [(tmp_path / "missing", "does not exist"), (tmp_path / "file", "is a file"),
                            (tmp_path / "empty", "is not a nasfleet run")]:
        refused = subprocess.run([*cli, str(target)], capture_output=True, text=True)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and message in refused.stderr
        with pytest.raises(NasfleetError, match=message):
            read_status(str(target))
