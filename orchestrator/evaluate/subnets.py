"""Evaluating subnets of a trained supernet: accuracy with per-subnet BN, plus costs."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from nasfleet.orchestrator.data import ImageSet, iterate_batches
from nasfleet.orchestrator.evaluate.trained import TrainedSupernet
from nasfleet.supernet import Arch, calibrated_batchnorm

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
    loss_nats: dict[str, float] = field(default_factory=dict)
    """Mean cross-entropy per label (per token for text) by split, in nats."""

    def perplexity(self, split: str) -> float:
        return math.exp(self.loss_nats[split])


@torch.no_grad()
def correct_count(model: nn.Module, arch: Arch, data: ImageSet) -> int:
    correct = 0
    for images, labels in iterate_batches(data, EVAL_BATCH_SIZE):
        correct += int((model(images, arch).argmax(dim=1) == labels).sum())  # class dim 1, as in F.cross_entropy
    return correct


@torch.no_grad()
def split_scores(model: nn.Module, arch: Arch, data: ImageSet) -> tuple[float, float]:
    """Accuracy and mean cross-entropy in nats, per label (per token for text), in one pass."""
    correct, nats = 0, 0.0
    for images, labels in iterate_batches(data, EVAL_BATCH_SIZE):
        logits = model(images, arch)
        correct += int((logits.argmax(dim=1) == labels).sum())
        nats += float(F.cross_entropy(logits, labels, reduction="sum"))
    return correct / data.labels.numel(), nats / data.labels.numel()


def accuracy(model: nn.Module, arch: Arch, data: ImageSet) -> float:
    return correct_count(model, arch, data) / data.labels.numel()  # per label: per token for text


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
        scores = {name: split_scores(trained.model, arch, data) for name, data in sets.items()}
    space = trained.space
    acc = {name: a for name, (a, _) in scores.items()}
    nats = {name: n for name, (_, n) in scores.items()}
    elapsed = time.perf_counter() - started
    return SubnetResult(role, arch, space.flops(arch) / 1e6, space.params(arch), acc, elapsed, nats)
