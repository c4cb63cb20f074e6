"""Evaluating subnets of a trained supernet: accuracy with per-subnet BN, plus costs."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from nasfleet.orchestrator.data import ImageSet, iterate_batches
from nasfleet.orchestrator.evaluate.trained import TrainedSupernet
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


@torch.no_grad()
def correct_count(model: nn.Module, arch: Arch, data: ImageSet) -> int:
    correct = 0
    for images, labels in iterate_batches(data, EVAL_BATCH_SIZE):
        correct += int((model(images, arch).argmax(dim=-1) == labels).sum())
    return correct


def accuracy(model: nn.Module, arch: Arch, data: ImageSet) -> float:
    return correct_count(model, arch, data) / len(data)


def evaluate_arch(
    trained: TrainedSupernet, arch: Arch, splits: tuple[str, ...] = ("val",), role: str = "",
    calibration: list[torch.Tensor] | None = None,
) -> SubnetResult:
    """``calibration``: the batches batch norm is re-estimated on (default: the run's own)."""
    trained.space.validate(arch)
    sets = {name: trained.data.split(name) for name in splits}
    started = time.perf_counter()
    batches = calibration if calibration is not None else trained.calibration_batches()
    with calibrated_batchnorm(trained.model, arch, batches):
        acc = {name: accuracy(trained.model, arch, data) for name, data in sets.items()}
    space = trained.space
    return SubnetResult(role, arch, space.flops(arch) / 1e6, space.params(arch), acc, time.perf_counter() - started)
