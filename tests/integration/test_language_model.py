"""The language-model job end to end: train the gpt space on real text, then evaluate, search and export it."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch

from nasfleet.orchestrator.data import load_data
from nasfleet.supernet import load_subnet

from conftest import nasfleet, tiny_config, write_config

REPO = Path(__file__).resolve().parents[2]
SPACE = {"name": "gpt", "head_dim": 8, "embed_dims": [16, 32], "depths": [1, 2], "heads": [1, 2], "mlp_ratios": [2.0]}


def test_a_language_model_trains_on_text_and_its_subnets_evaluate_search_and_export(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for page in ("README.md", "docs/supernet.md", "docs/distributed.md"):  # real English prose, offline
        shutil.copy(REPO / page, corpus / Path(page).name)
    data = {"dataset": "text", "path": str(corpus), "batch_size": 16, "val_fraction": 0.1, "test_fraction": 0.1}
    optim = {"steps": 40, "lr": 0.1, "warmup_steps": 10, "weight_decay": 0.0}
    config = write_config(tmp_path / "job.yaml", tmp_path / "run", space=SPACE, data=data, optim=optim)
    result = nasfleet("train", "--config", str(config), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "val ppl" in result.stdout

    result = nasfleet("evaluate", "--run", str(tmp_path / "run"), "--random", "0", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["role"]: row for row in json.loads(result.stdout)}
    largest = rows["largest"]
    assert largest["arch"]["space"] == "gpt"
    assert largest["loss_nats"]["val"] < math.log(256)  # it learned something: better than a uniform byte

    assert nasfleet("search", "--run", str(tmp_path / "run"), "--evaluations", "4").returncode == 0
    out = tmp_path / "export"
    assert nasfleet("export", "--run", str(tmp_path / "run"), "--out", str(out)).returncode == 0
    subnet, _ = load_subnet(out)
    val = load_data(tiny_config(tmp_path, data=data).data).val
    with torch.no_grad():
        nats = torch.nn.functional.cross_entropy(subnet(val.images), val.labels).item()
    assert abs(nats - largest["loss_nats"]["val"]) < 1e-4  # the export is the evaluated subnet
