"""What the reference task's subnets reach when trained alone, so a short run can say how far it is.

The figures come from benchmarks/ground_truth.py (each subnet trained from scratch, several seeds)
and are shipped beside the configs, one file per data set. A run's subnet is compared only when it
is exactly a subnet of the file (same architecture) and the data set is the file's: the demo's
smallest and largest subnets on Fashion-MNIST are, since its space is the reference one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from nasfleet.orchestrator.evaluate.subnets import SubnetResult
from nasfleet.supernet import arch_to_json

REFERENCE_FOLDER = "configs/reference"


@dataclass(frozen=True)
class ReferenceAccuracy:
    """One subnet's stand-alone test accuracy: the mean over ``seeds`` runs of ``steps`` steps."""

    role: str
    arch: dict[str, Any]
    test_accuracy: float
    seeds: int
    steps: int


def reference_file_name(dataset: str) -> str:
    return f"{dataset}.json"


def reference_accuracies(dataset: str) -> list[ReferenceAccuracy]:
    """The shipped stand-alone figures for ``dataset``; none where there is no file."""
    path = resources.files("nasfleet.orchestrator").joinpath(REFERENCE_FOLDER, reference_file_name(dataset))
    if not path.is_file():
        return []
    return [ReferenceAccuracy(**row) for row in json.loads(path.read_text())["subnets"]]


def reference_gaps(results: Sequence[SubnetResult], dataset: str) -> list[tuple[SubnetResult, ReferenceAccuracy]]:
    """Each result whose architecture has a stand-alone reference, paired with it."""
    known = {json.dumps(r.arch, sort_keys=True): r for r in reference_accuracies(dataset)}
    pairs = []
    for result in results:
        reference = known.get(arch_to_json(result.arch))
        if reference is not None and "test" in result.accuracy:
            pairs.append((result, reference))
    return pairs
