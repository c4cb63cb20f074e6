"""The command line, run as a user runs it: real processes, exit codes, one-line errors.

Input the CLI refuses before starting anything runs in a process forked from this one
(:func:`conftest.nasfleet_forked`): the same exit code and output, without an interpreter start.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from nasfleet.orchestrator.results import ResultsStore

from conftest import assert_one_line_error, nasfleet, nasfleet_forked, write_config


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    config = write_config(root / "job.yaml", root / "run")
    result = nasfleet("train", "--config", str(config), "--no-progress")
    assert result.returncode == 0, result.stderr
    return root / "run"


@pytest.mark.parametrize("command", ["train", "evaluate", "export", "demo", "search", "profile", "prune", "bench", None])
def test_every_command_has_help(command: str | None) -> None:
    result = nasfleet(*([command] if command else []), "--help")
    assert result.returncode == 0 and "Usage" in result.stdout


def test_train_evaluate_export_end_to_end(trained_run: Path, tmp_path: Path) -> None:
    result = nasfleet("evaluate", "--run", str(trained_run), "--random", "1", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["role"] for r in rows] == ["smallest", "random-0", "largest"]
    assert rows[0]["mflops"] < rows[-1]["mflops"]
    recorded = ResultsStore(trained_run / "results").read()  # what `train` recorded names its data set
    assert recorded.num_rows > 0 and set(recorded.column("dataset").to_pylist()) == {"digits"}

    arch_file = tmp_path / "arch.json"
    arch_file.write_text(json.dumps(rows[1]["arch"]))
    result = nasfleet("export", "--run", str(trained_run), "--arch", f"@{arch_file}", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "model.pt").is_file() and (tmp_path / "out" / "arch.json").is_file()


def test_unknown_strategy(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", tmp_path / "run", strategy={"name": "bignas"})
    assert_one_line_error(nasfleet_forked("train", "--config", str(config)), "unknown strategy 'bignas'")


def test_the_strategy_is_chosen_on_the_command_line(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", tmp_path / "run", optim={"steps": 2, "lr": 0.05, "warmup_steps": 1})
    result = nasfleet("train", "--config", str(config), "--no-progress", "--strategy", "shift",
                      "--strategy-param", "num_bins=2", "--strategy-param", "prior=[0.25, 0.75]")
    assert result.returncode == 0, result.stderr
    written = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["strategy"]
    assert written == {"name": "shift", "params": {"num_bins": 2, "prior": [0.25, 0.75]}}


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--strategy", "bignas"], "unknown strategy 'bignas'"),
        (["--strategy", "shift", "--strategy-param", "prior=[0.5, 0.2, 0.2, 0.2]"], "sum to one"),
        (["--strategy", "deps", "--strategy-param", "total_steps=10", "--strategy-param", "delay_fraction=-0.5"],
         "delay"),
        (["--strategy-param", "num_random"], "is not KEY=VALUE"),
    ],
)
def test_bad_strategy_choices_on_the_command_line(tmp_path: Path, args: list[str], fragment: str) -> None:
    config = write_config(tmp_path / "c.yaml", tmp_path / "run")
    assert_one_line_error(nasfleet_forked("train", "--config", str(config), *args), fragment)


def test_arch_outside_the_search_space(trained_run: Path, tmp_path: Path) -> None:
    bad = '{"space": "mbconv", "stages": [{"width": 999, "blocks": [{"kernel": 3, "expand": 2}]}]}'
    result = nasfleet_forked("export", "--run", str(trained_run), "--arch", bad, "--out", str(tmp_path / "x"))
    assert_one_line_error(result, "outside the mbconv search space")
    assert not (tmp_path / "x").exists()


def test_malformed_yaml(tmp_path: Path) -> None:
    config = tmp_path / "broken.yaml"
    config.write_text("optim: {steps: 10\nseed: [")
    assert_one_line_error(nasfleet_forked("train", "--config", str(config)), "not valid YAML", "line")


def test_config_with_a_wrong_field(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"run_dir: {tmp_path / 'run'}\noptim: {{steps: -5}}\n")
    assert_one_line_error(nasfleet_forked("train", "--config", str(config)), "optim.steps")


def test_missing_data_path(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", tmp_path / "run", data={"dataset": "mnist", "path": str(tmp_path / "no")})
    assert_one_line_error(nasfleet_forked("train", "--config", str(config)), "does not exist")


def test_corrupted_checkpoint(trained_run: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken-run"
    shutil.copytree(trained_run, broken)
    supernet = broken / "checkpoint_00000012" / "supernet.pt"
    supernet.write_bytes(supernet.read_bytes()[:2048])
    assert_one_line_error(nasfleet_forked("evaluate", "--run", str(broken)), "corrupted")


def test_missing_deepspeed_config(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", tmp_path / "run")
    result = nasfleet_forked("train", "--config", str(config), "--workers", "2", "--deepspeed", str(tmp_path / "ds.json"))
    assert_one_line_error(result, "DeepSpeed config", "does not exist")


def test_unreachable_ray_address(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", tmp_path / "run")
    result = nasfleet("train", "--config", str(config), "--workers", "2", "--ray-address", "127.0.0.1:9")
    assert_one_line_error(result, "cannot reach the Ray cluster at 127.0.0.1:9")


def test_invalid_storage_uri(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", tmp_path / "run")
    result = nasfleet_forked("train", "--config", str(config), "--workers", "2", "--storage-path", "nosuch://bucket/runs")
    assert_one_line_error(result, "invalid storage URI 'nosuch://bucket/runs/run'")


@pytest.mark.slow
def test_more_workers_than_cpus(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", tmp_path / "run")
    result = nasfleet("train", "--config", str(config), "--workers", "64")
    assert_one_line_error(result, "64 workers need 64 CPUs")


@pytest.mark.parametrize(
    ("workers", "extra", "fragment"),
    [
        ("3:2", [], "--workers takes N ≥ 0 or MIN:MAX with 1 ≤ MIN ≤ MAX, got '3:2'"),
        ("two", [], "--workers takes N or MIN:MAX, got 'two'"),
        ("1:2", ["--deepspeed", "cluster_configs/deepspeed/zero2_cpu.json"], "elastic training (launch.min_workers) needs DeepSpeed ZeRO stage 0"),
    ],
)
def test_elastic_workers_are_checked_before_anything_starts(
    workers: str, extra: list[str], fragment: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "c.yaml", tmp_path / "run")
    repo = Path(__file__).resolve().parents[2]
    extra = [str(repo / a) if a.endswith(".json") else a for a in extra]
    result = nasfleet_forked("train", "--config", str(config), "--workers", workers, *extra)
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "run").exists()


def test_unknown_launcher(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", tmp_path / "run")
    assert_one_line_error(nasfleet_forked("train", "--config", str(config), "--launcher", "slurm"), "unknown launcher 'slurm'")


def test_bad_search_input_is_one_line_and_exit_2(trained_run: Path, tmp_path: Path) -> None:
    run = str(trained_run)
    assert_one_line_error(nasfleet_forked("search", "--run", run, "--constraint", "mflops<=0.0001"), "no subnet satisfies")
    assert_one_line_error(nasfleet_forked("search", "--run", run, "--scheduler", "pbt"), "unknown scheduler 'pbt'")
    assert_one_line_error(nasfleet_forked("search", "--run", run, "--searcher", "grid"), "unknown searcher 'grid'")
    assert_one_line_error(nasfleet_forked("search", "--run", str(tmp_path)), "holds no trained supernet")
    assert_one_line_error(nasfleet_forked("search", "--run", run, "--objective", "latency_ms"), "latency table")
    assert_one_line_error(nasfleet_forked("search", "--run", run, "--name", "none", "--resume"), "cannot resume")
    assert not (trained_run / "search").exists()  # nothing written for rejected input


def test_an_elastic_job_refuses_deepspeeds_partitioned_bf16_optimizer(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", tmp_path / "run")
    (tmp_path / "bf16.json").write_text(json.dumps({"bf16": {"enabled": True}, "zero_optimization": {"stage": 0}}))
    result = nasfleet_forked("train", "--config", str(config), "--workers", "1:2", "--deepspeed", str(tmp_path / "bf16.json"))
    assert_one_line_error(result, "elastic training (launch.min_workers) cannot use DeepSpeed's bf16 optimizer")
