"""Evaluating subnets of a trained supernet: accuracy with per-subnet BN, plus costs."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.train.checkpoints import CHECKPOINT_FILE, load_checkpoint
from nasfleet.orchestrator.config import TrainConfig, config_from_dict
from nasfleet.orchestrator.storage import SUPERNET_FILE, is_uri, join, latest_checkpoint, read_bytes
from nasfleet.orchestrator.data import BatchStream, DataSplits, ImageSet, iterate_batches, load_data
from nasfleet.orchestrator.train.trainer import space_for_data, supernet_for
from nasfleet.supernet import Arch, SearchSpace, calibrated_batchnorm

EVAL_BATCH_SIZE = 512


@dataclass(frozen=True)
class SubnetResult:
    role: str
    arch: Arch
    mflops: float
    params: int
    accuracy: dict[str, float]
    """Accuracy by data split (``val``, ``test``, ...)."""
    wall_time_s: float = 0.0
    """Time to recalibrate batch norm and evaluate every split."""


@dataclass
class TrainedSupernet:
    """A finished (or checkpointed) run, loaded for evaluation, search or export."""

    config: TrainConfig
    data: DataSplits
    space: SearchSpace
    model: nn.Module
    step: int
    source: str = ""
    """The checkpoint file the weights came from."""

    @property
    def checkpoint_id(self) -> str:
        """What results record as their origin: the checkpoint file and the step."""
        return f"{self.source or self.config.run_dir}@step{self.step}"

    def calibration_batches(self) -> list[torch.Tensor]:
        stream = BatchStream(self.data.train, self.config.data.batch_size, seed=self.config.seed + 1)
        return [stream.batch(i)[0] for i in range(self.config.eval.calibration_batches)]


def _load_supernet_state(run: str) -> tuple[dict[str, Any], str]:
    """The newest supernet weights of a single-process or a distributed run, and their source."""
    if not is_uri(run):
        if not Path(run).is_dir():
            raise NasfleetError(f"run directory {run} does not exist")
        if (Path(run) / CHECKPOINT_FILE).exists():
            return load_checkpoint(Path(run) / CHECKPOINT_FILE), str(Path(run) / CHECKPOINT_FILE)
    checkpoint = latest_checkpoint(run)
    if checkpoint is None:
        raise NasfleetError(f"{run} holds no trained supernet (no checkpoint.pt and no checkpoint_* folder)")
    source = join(checkpoint, SUPERNET_FILE)
    try:
        state = torch.load(io.BytesIO(read_bytes(source)), map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises several types for a truncated or foreign file
        raise NasfleetError(f"checkpoint {source} is corrupted or unreadable ({type(exc).__name__})") from None
    return state, source


def load_trained(run_dir: str | Path) -> TrainedSupernet:
    """Load the supernet of a finished or checkpointed run (local folder or storage URI)."""
    state, source = _load_supernet_state(str(run_dir))
    config = config_from_dict(state["config"], f"{source} (config)")
    data = load_data(config.data)
    space = space_for_data(config, data)
    model = supernet_for(config, space)
    model.load_state_dict(state["model"])
    model.eval()
    return TrainedSupernet(config, data, space, model, int(state["step"]), source)


@torch.no_grad()
def accuracy(model: nn.Module, arch: Arch, data: ImageSet) -> float:
    correct = 0
    for images, labels in iterate_batches(data, EVAL_BATCH_SIZE):
        correct += int((model(images, arch).argmax(dim=-1) == labels).sum())
    return correct / len(data)


def evaluate_arch(
    trained: TrainedSupernet, arch: Arch, splits: tuple[str, ...] = ("val",), role: str = ""
) -> SubnetResult:
    trained.space.validate(arch)
    sets = {name: trained.data.split(name) for name in splits}
    started = time.perf_counter()
    with calibrated_batchnorm(trained.model, arch, trained.calibration_batches()):
        acc = {name: accuracy(trained.model, arch, data) for name, data in sets.items()}
    space = trained.space
    return SubnetResult(role, arch, space.flops(arch) / 1e6, space.params(arch), acc, time.perf_counter() - started)


def evaluate_standard_subnets(
    trained: TrainedSupernet, splits: tuple[str, ...] = ("val",), random_subnets: int = 3, seed: int = 0
) -> list[SubnetResult]:
    """The smallest, the largest and ``random_subnets`` random subnets (seeded), smallest first."""
    rng = np.random.default_rng(seed)
    archs = [("smallest", trained.space.smallest())]
    archs += [(f"random-{i}", trained.space.sample_choices(rng)) for i in range(random_subnets)]
    archs.append(("largest", trained.space.largest()))
    return [evaluate_arch(trained, arch, splits, role) for role, arch in archs]
