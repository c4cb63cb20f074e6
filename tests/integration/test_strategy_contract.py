"""The contract every registered strategy meets, so registering one is enough to have it tested.

For each name in ``STRATEGIES``: it trains a few steps in one process and on two ranks
(``mpiexec``, gloo, DeepSpeed), an interrupted run resumes to the same weights as an
uninterrupted one, its state survives the checkpoint round trip, and the checkpoint it
writes loads for evaluation. A strategy whose required parameters have no default gets
them from ``PARAMS``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from nasfleet.orchestrator.config import JobConfig
from nasfleet.orchestrator.evaluate import evaluate_arch, load_trained
from nasfleet.orchestrator.launch import train_job
from nasfleet.orchestrator.train import RankState, latest_checkpoint, read_meta, read_rank_state, read_supernet
from nasfleet.strategies import STRATEGIES

from conftest import tiny_config

STEPS = 8
PARAMS: dict[str, dict[str, Any]] = {
    "deps": {"total_steps": STEPS},
    "progressive": {"total_steps": STEPS},
    "fewshot-gm": {"warmup_steps": 3},
    "assembling": {"phase": "incubate", "module": 1},  # the phase with frozen parameters
}
SPACES: dict[str, dict[str, Any]] = {
    "autodistil": {"name": "vit", "head_dim": 4, "embed_dims": [16, 24], "depths": [1, 2], "heads": [1, 2]},
}
"""Strategies defined on another space than the tiny mbconv one."""
NAMES = STRATEGIES.names()


def _pada_importance_is_per_shard(checkpoint: str, ranks: list[RankState]) -> None:
    for rank, state in enumerate(ranks):  # each rank's data importance covers its own shard only
        moved = np.flatnonzero(np.array(state.strategy["data_importance"]) != 1.0)
        assert moved.size > 0 and set(moved % 2) == {rank}


def _fewshot_ranks_split_the_same_edge(checkpoint: str, ranks: list[RankState]) -> None:
    assert ranks[0].strategy["plan"] == ranks[1].strategy["plan"] is not None
    supernet, _ = read_supernet(checkpoint)
    assert int(supernet["split_edge"]) == ranks[0].strategy["plan"]["edge"]


def _tanglenas_ranks_share_alpha(checkpoint: str, ranks: list[RankState]) -> None:
    assert ranks[0].strategy["arch_steps"] == STEPS  # α moved at every step, identically on both ranks
    assert ranks[0].strategy["alphas"] == ranks[1].strategy["alphas"]
    assert ranks[0].strategy["moments"] == ranks[1].strategy["moments"]
    supernet, _ = read_supernet(checkpoint)
    assert supernet["alpha_s0_width"].tolist() == ranks[0].strategy["alphas"]["s0_width"] != [0.0, 0.0]


# What a strategy with per-rank state must show after the two-rank run, besides agreeing weights.
TWO_RANK_CHECKS: dict[str, Callable[[str, list[RankState]], None]] = {
    "pada": _pada_importance_is_per_shard,
    "fewshot-gm": _fewshot_ranks_split_the_same_edge,
    "tanglenas": _tanglenas_ranks_share_alpha,
}


def job(run_dir: Path, name: str, **overrides: Any) -> JobConfig:
    if name in SPACES:
        overrides.setdefault("space", SPACES[name])
    return tiny_config(
        run_dir, strategy={"name": name, "params": PARAMS.get(name, {})},
        optim={"steps": STEPS, "lr": 0.05, "warmup_steps": 2}, checkpoint_every_steps=2, log_every_steps=2,
        **overrides,
    )


@pytest.mark.parametrize("name", NAMES)
def test_one_process_resumes_exactly_and_its_checkpoint_round_trips(name: str, tmp_path: Path) -> None:
    straight, interrupted = job(tmp_path / "straight", name), job(tmp_path / "resumed", name)
    train_job(straight)
    train_job(interrupted, until_step=3)
    train_job(interrupted, resume=True)
    a, b = load_trained(straight.run_dir), load_trained(interrupted.run_dir)
    assert a.step == b.step == STEPS
    for key, tensor in a.model.state_dict().items():
        assert torch.equal(tensor, b.model.state_dict()[key]), key
    states = [read_rank_state(str(latest_checkpoint(run.run_dir)), 0) for run in (straight, interrupted)]
    np.testing.assert_equal(states[0].strategy, states[1].strategy)
    assert states[0].rng_numpy == states[1].rng_numpy
    result = evaluate_arch(b, b.space.smallest(), ("val",))
    assert 0.0 <= result.accuracy["val"] <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_two_ranks_train_it_and_agree_on_the_weights(name: str, tmp_path: Path) -> None:
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(job(tmp_path / "run", name).model_dump(mode="json")))
    mpiexec = str(Path(sys.executable).parent / "mpiexec")
    result = subprocess.run(
        [mpiexec, "-n", "2", sys.executable, "-m", "nasfleet.orchestrator.cli", "train", "--config", str(config),
         "--launcher", "mpi"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = str(latest_checkpoint(str(tmp_path / "run")))
    meta = read_meta(checkpoint)
    assert (meta.step, meta.world_size, meta.backend) == (STEPS, 2, "deepspeed")
    ranks = [read_rank_state(checkpoint, r) for r in range(2)]
    assert ranks[0].weights_sha256 == ranks[1].weights_sha256
    if name in TWO_RANK_CHECKS:
        TWO_RANK_CHECKS[name](checkpoint, ranks)
    assert load_trained(tmp_path / "run").step == STEPS
