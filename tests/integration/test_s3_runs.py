"""A run on S3 (a real S3-compatible server on 127.0.0.1): train writes it, evaluate/export/profile/search read it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from nasfleet.orchestrator.evaluate import load_trained
from nasfleet.orchestrator.storage import is_file, join, list_dir, read_text
from nasfleet.orchestrator.train import completed_checkpoints, read_meta

from conftest import nasfleet, tiny_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3_run(s3_server, tmp_path_factory: pytest.TempPathFactory) -> str:
    run = s3_server.unique_uri("runs") + "/tiny"
    config = tmp_path_factory.mktemp("s3") / "job.yaml"
    config.write_text(yaml.safe_dump(tiny_config(Path("unused")).model_dump(mode="json") | {"run_dir": run}))
    result = nasfleet("train", "--config", str(config), "--no-progress")
    assert result.returncode == 0, result.stderr[-2000:]
    return run


def test_training_writes_the_one_layout_to_the_bucket(s3_run: str) -> None:
    checkpoints = completed_checkpoints(s3_run)
    assert [c.rsplit("/", 1)[-1] for c in checkpoints] == ["checkpoint_00000004", "checkpoint_00000008",
                                                           "checkpoint_00000012"]
    assert read_meta(checkpoints[-1]).step == 12
    assert is_file(join(s3_run, "config.yaml")) and is_file(join(s3_run, "metrics.jsonl"))
    assert any(i.base_name.startswith("part-") for i in list_dir(join(s3_run, "results")))
    assert load_trained(s3_run).step == 12


def test_evaluate_reads_the_run_from_the_bucket(s3_run: str) -> None:
    result = nasfleet("evaluate", "--run", s3_run, "--random", "1", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    assert [r["role"] for r in json.loads(result.stdout)] == ["smallest", "random-0", "largest"]


def test_profile_and_search_write_to_the_bucket_and_export_reads_the_front(s3_run: str, tmp_path: Path) -> None:
    result = nasfleet("profile", "--run", s3_run, "--repeats", "2", "--check", "0")
    assert result.returncode == 0, result.stderr[-2000:]
    assert is_file(join(s3_run, "latency.json"))  # the table the search below finds by default
    result = nasfleet("search", "--run", s3_run, "--name", "s3", "--evaluations", "4", "--chunks", "2",
                      "--concurrency", "1", "--objective", "latency_ms", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    front = join(s3_run, "search", "s3", "pareto.json")
    assert is_file(front)
    assert all(member["costs"]["latency_ms"] > 0 for member in json.loads(read_text(front))["front"])
    out = tmp_path / "exported"
    result = nasfleet("export", "--run", s3_run, "--search", "s3", "--pareto", "1", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "model.pt").is_file() and (out / "arch.json").is_file()
