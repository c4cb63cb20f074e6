"""Faults a shared cluster sees: a planted pickle, a second writer, a killed process — through the real CLI."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from nasfleet.orchestrator.evaluate import load_trained
from nasfleet.orchestrator.train import completed_checkpoints

from conftest import CLI, assert_one_line_error, nasfleet, nasfleet_forked, write_config

pytestmark = pytest.mark.slow


class Payload:
    """Unpickling this runs ``touch MARKER``: what a hostile file in a run folder would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)



@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faults")
    result = nasfleet("train", "--config", str(write_config(root / "job.yaml", root / "run")), "--no-progress")
    assert result.returncode == 0, result.stderr[-2000:]
    return root / "run"


@pytest.mark.parametrize(
    ("planted", "command"),
    [
        ("supernet.pt", "evaluate"),
        ("supernet.pt", "export"),
        ("ranks/rank_0.pt", "resume"),
        ("optimizer/optimizer.pt", "resume"),
    ],
)
def test_a_planted_pickle_never_runs(trained: Path, tmp_path: Path, planted: str, command: str) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    marker = tmp_path / "PWNED"
    torch.save(Payload(marker), run / "checkpoint_00000012" / planted)
    if command == "evaluate":
        result = nasfleet("evaluate", "--run", str(run))
    elif command == "export":
        result = nasfleet("export", "--run", str(run), "--out", str(tmp_path / "out"))
    else:
        job = write_config(tmp_path / "longer.yaml", run, optim={"steps": 16, "lr": 0.05, "warmup_steps": 2})
        result = nasfleet("train", "--config", str(job), "--resume", "--no-progress")
    assert_one_line_error(result, planted.rsplit("/", 1)[-1])
    assert not marker.exists()


def test_a_plain_pickle_export_never_runs(trained: Path, tmp_path: Path) -> None:
    """``load_subnet`` reads an exported model with ``weights_only`` too."""
    out = tmp_path / "exported"
    assert nasfleet("export", "--run", str(trained), "--out", str(out)).returncode == 0
    marker = tmp_path / "PWNED"
    (out / "model.pt").write_bytes(pickle.dumps(Payload(marker)))
    from nasfleet.errors import NasfleetError
    from nasfleet.supernet import load_subnet

    with pytest.raises((NasfleetError, pickle.UnpicklingError, RuntimeError)):
        load_subnet(out)
    assert not marker.exists()


def test_a_second_writer_is_refused_and_the_first_run_finishes_intact(tmp_path: Path) -> None:
    job = write_config(tmp_path / "job.yaml", tmp_path / "run", optim={"steps": 200, "lr": 0.05, "warmup_steps": 2},
                    checkpoint_every_steps=50, log_every_steps=25)
    first = subprocess.Popen([*CLI, "train", "--config", str(job), "--no-progress"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / "run" / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    # Forked: a fresh interpreter's imports take long enough for the first run to finish under load.
    second = nasfleet_forked("train", "--config", str(job), "--no-progress")
    assert_one_line_error(second, "is in use by nasfleet train", f"pid {first.pid}")
    second_resume = nasfleet_forked("train", "--config", str(job), "--resume", "--no-progress")
    assert_one_line_error(second_resume, "is in use by nasfleet train")
    _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr[-2000:]
    steps = [yaml.safe_load(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(25, 201, 25))  # no interleaved lines from the refused writers
    assert load_trained(tmp_path / "run").step == 200


def test_a_killed_training_process_resumes_to_the_same_weights(tmp_path: Path) -> None:
    overrides = dict(optim={"steps": 120, "lr": 0.05, "warmup_steps": 2}, checkpoint_every_steps=20, log_every_steps=20)
    straight = write_config(tmp_path / "straight.yaml", tmp_path / "straight", **overrides)
    assert nasfleet("train", "--config", str(straight), "--no-progress").returncode == 0
    job = write_config(tmp_path / "killed.yaml", tmp_path / "killed", **overrides)
    victim = subprocess.Popen([*CLI, "train", "--config", str(job), "--no-progress"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(completed_checkpoints(str(tmp_path / "killed"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    resumed = nasfleet("train", "--config", str(job), "--resume", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = load_trained(tmp_path / "straight").model.state_dict(), load_trained(tmp_path / "killed").model.state_dict()
    for name, tensor in a.items():
        assert torch.equal(tensor, b[name]), name
