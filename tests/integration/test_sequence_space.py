"""The conv1d space end to end: a job trains it, and its subnets export and reload as plain modules."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from nasfleet.orchestrator.data import load_data
from nasfleet.supernet import load_subnet

from conftest import TINY_SPACE, assert_one_line_error, nasfleet, nasfleet_forked, tiny_config, write_config

SEQUENCE_SPACE = {**TINY_SPACE, "name": "conv1d"}


def test_a_sequence_supernet_trains_and_its_subnet_exports(tmp_path: Path) -> None:
    config = write_config(tmp_path / "job.yaml", tmp_path / "run", space=SEQUENCE_SPACE)
    assert nasfleet("train", "--config", str(config), "--no-progress").returncode == 0
    result = nasfleet("evaluate", "--run", str(tmp_path / "run"), "--random", "0", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["role"]: row for row in json.loads(result.stdout)}
    assert rows["largest"]["arch"]["space"] == "conv1d" and rows["smallest"]["mflops"] < rows["largest"]["mflops"]

    out = tmp_path / "export"
    assert nasfleet("export", "--run", str(tmp_path / "run"), "--out", str(out)).returncode == 0
    subnet, arch = load_subnet(out)
    assert arch.space == "conv1d" and isinstance(subnet.stem.conv, torch.nn.Conv1d)
    val = load_data(tiny_config(tmp_path).data).val
    with torch.no_grad():
        accuracy = (subnet(val.images).argmax(dim=1) == val.labels).float().mean().item()
    assert abs(accuracy - rows["largest"]["accuracy"]["val"]) < 1e-6  # the export is the evaluated subnet


def test_strategies_built_on_image_stages_refuse_the_sequence_space(tmp_path: Path) -> None:
    config = write_config(tmp_path / "job.yaml", tmp_path / "run", space=SEQUENCE_SPACE, strategy={"name": "sorted"})
    assert_one_line_error(nasfleet_forked("train", "--config", str(config)), "supports the mbconv space, not 'conv1d'")
