"""Late-fused ensembles of a supernet's subnets, members chosen for accuracy and for disagreeing.

Subnets of one supernet differ by design (depth, width, kernels) while sharing a base, which is
what makes their mistakes partly independent. An ensemble of K of them spends the sum of their
FLOPs, so the question it has to answer is whether that beats the best single subnet the same
FLOPs buy: the report puts the two side by side, both chosen on validation, judged on test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.data import iterate_batches
from nasfleet.orchestrator.evaluate.subnets import EVAL_BATCH_SIZE
from nasfleet.orchestrator.evaluate.trained import TrainedSupernet
from nasfleet.supernet import Arch, arch_to_dict, calibrated_batchnorm

SPLITS = ("val", "test")


@dataclass(frozen=True)
class Candidate:
    """One subnet's class probabilities on every image of each split (its own batch norm recalibrated)."""

    role: str
    arch: Arch
    mflops: float
    params: int
    probabilities: dict[str, np.ndarray]  # split → float32 [images, classes]

    def accuracy(self, split: str, labels: np.ndarray) -> float:
        return float((self.probabilities[split].argmax(axis=1) == labels).mean())


@torch.no_grad()
def candidate(trained: TrainedSupernet, role: str, arch: Arch) -> Candidate:
    trained.space.validate(arch)
    probabilities = {}
    with calibrated_batchnorm(trained.model, arch, trained.calibration_batches()):
        for split in SPLITS:
            batches = iterate_batches(trained.data.split(split), EVAL_BATCH_SIZE)
            probabilities[split] = np.concatenate(
                [torch.softmax(trained.model(images, arch), dim=1).numpy() for images, _ in batches]
            )
    return Candidate(role, arch, trained.space.flops(arch) / 1e6, trained.space.params(arch), probabilities)


def split_labels(trained: TrainedSupernet) -> dict[str, np.ndarray]:
    return {split: trained.data.split(split).labels.numpy() for split in SPLITS}


def fused_accuracy(members: Sequence[Candidate], split: str, labels: np.ndarray) -> float:
    """Accuracy of the mean of the members' probabilities (late fusion)."""
    mean = np.mean([m.probabilities[split] for m in members], axis=0)
    return float((mean.argmax(axis=1) == labels).mean())


def choose_members(candidates: Sequence[Candidate], k: int, labels: np.ndarray) -> list[int]:
    """Greedy forward selection on validation: the most accurate candidate first, then each time the one
    that raises the fused accuracy most, ties going to the one whose predictions differ most from the
    ensemble so far (diversity is what fusion can use). A candidate is used once."""
    if not 1 <= k <= len(candidates):
        raise NasfleetError(f"an ensemble of {k} members needs 1..{len(candidates)} candidates, got {len(candidates)}")
    chosen = [int(np.argmax([c.accuracy("val", labels) for c in candidates]))]
    while len(chosen) < k:
        current = np.mean([candidates[i].probabilities["val"] for i in chosen], axis=0).argmax(axis=1)

        def gain(i: int) -> tuple[float, float]:
            members = [candidates[j] for j in (*chosen, i)]
            disagreement = float((candidates[i].probabilities["val"].argmax(axis=1) != current).mean())
            return fused_accuracy(members, "val", labels), disagreement

        rest = [i for i in range(len(candidates)) if i not in chosen]
        chosen.append(max(rest, key=gain))
    return chosen


@dataclass(frozen=True)
class MemberRow:
    role: str
    arch: dict
    mflops: float
    params: int
    val_accuracy: float
    test_accuracy: float
    latency_ms: float | None


@dataclass(frozen=True)
class EnsembleReport:
    members: list[MemberRow]
    val_accuracy: float
    test_accuracy: float
    mflops: float
    params: int
    latency_ms: float | None
    """Members run one after another on one core: the sum of their measured latencies."""
    best_single: MemberRow
    """The candidate with the best validation accuracy among those within the ensemble's total MFLOPs."""
    candidates: int
    val_images: int
    test_images: int

    def as_dict(self) -> dict:
        return asdict(self)


def build_ensemble(
    trained: TrainedSupernet, archs: Sequence[Arch], roles: Sequence[str], k: int, measure_latency: bool = True,
) -> EnsembleReport:
    """Score every candidate, choose ``k`` members on validation, and report them beside the best single subnet."""
    if trained.data.train.labels.dim() > 1:
        # Each candidate would hold examples × vocabulary × tokens probabilities per split (gigabytes).
        raise NasfleetError("ensembles are built for classifiers; this run's data set is token sequences")
    candidates = [candidate(trained, role, arch) for role, arch in zip(roles, archs)]
    return report_ensemble(trained, candidates, k, measure_latency)


def report_ensemble(
    trained: TrainedSupernet, candidates: Sequence[Candidate], k: int, measure_latency: bool = True,
) -> EnsembleReport:
    """:func:`build_ensemble` from candidates already scored (several ensemble sizes from one scoring pass)."""
    labels = split_labels(trained)
    chosen = choose_members(candidates, k, labels["val"])
    members = [candidates[i] for i in chosen]
    total = sum(m.mflops for m in members)
    affordable = [c for c in candidates if c.mflops <= total + 1e-9]
    best = max(affordable, key=lambda c: c.accuracy("val", labels["val"]))
    latencies: dict[Arch, float] = {}
    if measure_latency:
        from nasfleet.supernet.latency import measure_latencies_ms

        unique = list(dict.fromkeys([m.arch for m in members] + [best.arch]))
        latencies = dict(zip(unique, measure_latencies_ms(trained.space, unique)))

    def row(c: Candidate) -> MemberRow:
        return MemberRow(c.role, arch_to_dict(c.arch), c.mflops, c.params, c.accuracy("val", labels["val"]),
                         c.accuracy("test", labels["test"]), latencies.get(c.arch))

    return EnsembleReport(
        members=[row(m) for m in members],
        val_accuracy=fused_accuracy(members, "val", labels["val"]),
        test_accuracy=fused_accuracy(members, "test", labels["test"]),
        mflops=total,
        params=sum(m.params for m in members),
        latency_ms=sum(latencies[m.arch] for m in members) if latencies else None,
        best_single=row(best),
        candidates=len(candidates),
        val_images=len(labels["val"]),
        test_images=len(labels["test"]),
    )
