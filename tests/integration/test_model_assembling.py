"""Deep Model Assembling end to end on the 8×8 digits: the mechanism, K Ray actors at once, the command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nasfleet.orchestrator.assembling import RESULT_FILE, AssemblySettings, assemble
from nasfleet.orchestrator.config import JobConfig, load_config

from conftest import nasfleet

DEMO = Path(__file__).resolve().parents[2] / "orchestrator" / "configs" / "demo.yaml"
SHORT = {"meta_steps": 60, "incubation_steps": 60, "finetune_steps": 10}


def digits_job(run_dir: Path) -> JobConfig:
    return load_config(DEMO, [f"run_dir={run_dir}"])


def test_without_the_shared_meta_model_the_assembled_modules_do_not_fit_together(tmp_path: Path) -> None:
    shared = assemble(digits_job(tmp_path / "shared"), AssemblySettings(modules=2, actors=0, **SHORT))
    alone = assemble(digits_job(tmp_path / "alone"), AssemblySettings(modules=2, actors=0, shared_meta=False, **SHORT))
    # Each module learnt to fit its own meta model: stitched together they are near chance (10 classes).
    before = shared.accuracy["assembled"]["val"], alone.accuracy["assembled"]["val"]
    assert before[0] > before[1] + 0.3 and before[1] < 0.3, before
    assert shared.accuracy["finetuned"]["val"] > 0.85


def test_k_ray_actors_incubate_their_modules_at_the_same_time(tmp_path: Path, ray_cluster: str) -> None:
    record = assemble(digits_job(tmp_path / "ray"), AssemblySettings(modules=2, actors=2, **SHORT))
    first, second = sorted(record.intervals, key=lambda i: i.module)
    assert first.pid != second.pid
    assert max(first.start_s, second.start_s) < min(first.end_s, second.end_s), record.intervals
    assert record.accuracy["finetuned"]["val"] > 0.85


def test_the_command_runs_in_one_process_and_writes_its_record(tmp_path: Path) -> None:
    run = tmp_path / "cli"
    result = nasfleet(
        "assemble", "--config", str(DEMO), "--run-dir", str(run), "--modules", "2", "--actors", "0",
        "--meta-steps", "20", "--incubation-steps", "20", "--finetune-steps", "5",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((run / RESULT_FILE).read_text())
    assert set(record["accuracy"]) == {"meta", "assembled", "finetuned"}
    assert [i["module"] for i in record["intervals"]] == [0, 1]
    assert "finetuned" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--modules", "99"], "splits into 1 to 8 modules"),
        (["--actors", "-1"], "--actors must be 0"),
        (["--set", "optim.lr=-1"], "optim.lr"),
    ],
)
def test_bad_input_is_one_error_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = nasfleet("assemble", "--config", str(DEMO), "--run-dir", str(tmp_path / "bad"), *args)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and result.stderr.startswith("error: ")
    assert message in result.stderr
    assert not (tmp_path / "bad").exists()
