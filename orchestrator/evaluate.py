"""Evaluating subnets of a trained supernet: accuracy with per-subnet BN, plus costs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.checkpoint import CHECKPOINT_FILE, load_checkpoint
from nasfleet.orchestrator.config import TrainConfig, config_from_dict
from nasfleet.orchestrator.data import BatchStream, DataSplits, ImageSet, iterate_batches, load_data
from nasfleet.orchestrator.trainer import space_for_data
from nasfleet.supernet import Arch, SearchSpace, calibrated_batchnorm

EVAL_BATCH_SIZE = 512


@dataclass(frozen=True)
class SubnetResult:
    role: str
    arch: Arch
    mflops: float
    params: int
    accuracy: float


@dataclass
class TrainedSupernet:
    """A finished (or checkpointed) run, loaded for evaluation, search or export."""

    config: TrainConfig
    data: DataSplits
    space: SearchSpace
    model: nn.Module
    step: int

    def calibration_batches(self) -> list[torch.Tensor]:
        stream = BatchStream(self.data.train, self.config.data.batch_size, seed=self.config.seed + 1)
        return [stream.batch(i)[0] for i in range(self.config.eval.calibration_batches)]


def load_trained(run_dir: Path) -> TrainedSupernet:
    if not run_dir.is_dir():
        raise NasfleetError(f"run directory {run_dir} does not exist")
    state = load_checkpoint(run_dir / CHECKPOINT_FILE)
    config = config_from_dict(state["config"], f"{run_dir / CHECKPOINT_FILE} (config)")
    data = load_data(config.data)
    space = space_for_data(config, data)
    model = space.build_supernet()
    model.load_state_dict(state["model"])
    model.eval()
    return TrainedSupernet(config, data, space, model, int(state["step"]))


@torch.no_grad()
def accuracy(model: nn.Module, arch: Arch, data: ImageSet) -> float:
    correct = 0
    for images, labels in iterate_batches(data, EVAL_BATCH_SIZE):
        correct += int((model(images, arch).argmax(dim=-1) == labels).sum())
    return correct / len(data)


def evaluate_arch(trained: TrainedSupernet, arch: Arch, split: str, role: str = "") -> SubnetResult:
    trained.space.validate(arch)
    with calibrated_batchnorm(trained.model, arch, trained.calibration_batches()):
        acc = accuracy(trained.model, arch, trained.data.split(split))
    space = trained.space
    return SubnetResult(role, arch, space.flops(arch) / 1e6, space.params(arch), acc)


def evaluate_standard_subnets(
    trained: TrainedSupernet, split: str = "val", random_subnets: int = 3, seed: int = 0
) -> list[SubnetResult]:
    """The smallest, the largest and ``random_subnets`` random subnets (seeded), smallest first."""
    rng = np.random.default_rng(seed)
    archs = [("smallest", trained.space.smallest())]
    archs += [(f"random-{i}", trained.space.sample_choices(rng)) for i in range(random_subnets)]
    archs.append(("largest", trained.space.largest()))
    return [evaluate_arch(trained, arch, split, role) for role, arch in archs]
