"""The shipped stand-alone reference the Fashion-MNIST demo compares its subnets with."""

from __future__ import annotations

import numpy as np

from nasfleet.orchestrator.cli.common import demo_config
from nasfleet.orchestrator.evaluate.subnets import SubnetResult
from nasfleet.orchestrator.reference import reference_accuracies, reference_gaps
from nasfleet.orchestrator.train import job_space


def result(role: str, arch, accuracy: float) -> SubnetResult:
    return SubnetResult(role, arch, 0.0, 0, {"val": accuracy, "test": accuracy})


def test_the_demo_space_is_the_reference_space_so_its_bounds_have_a_reference() -> None:
    space = job_space(demo_config("fashion-mnist"))
    references = {r.role: r for r in reference_accuracies("fashion-mnist")}
    assert "smallest" in references and all(0.5 < r.test_accuracy < 1 and r.steps > 0 for r in references.values())
    random = space.sample_choices(np.random.default_rng(0))
    pairs = reference_gaps([result("smallest", space.smallest(), 0.8), result("random-0", random, 0.8)], "fashion-mnist")
    assert [(r.role, ref.role) for r, ref in pairs] == [("smallest", "smallest")]
    assert reference_gaps([result("smallest", space.smallest(), 0.8)], "digits") == []
