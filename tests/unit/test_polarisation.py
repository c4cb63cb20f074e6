"""The polarisation strategy: its regulariser splits the gates, and the pruned net is the gated one.

The mechanism test trains the same tiny gated net on the bundled digits twice, seeded, with the
regulariser's polarising term and without it (L1 alone): only the first ends with binary gates.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from nasfleet.orchestrator.train import StepBatch, TorchBackend, run_step
from nasfleet.strategies import STRATEGIES, build_strategy
from nasfleet.strategies.polarisation import (
    GatedSupernet,
    apply_mask,
    consensus_subnet,
    gate_scores,
    magnitude_scores,
    polarisation_regulariser,
    polarised_fraction,
    sparsity_mask,
)
from nasfleet.supernet import MBConvSpace, MBConvSpaceConfig, extract
from nasfleet.supernet.channel_prune import multiply_adds

SPACE = MBConvSpace(MBConvSpaceConfig(stem_width=8, stages=[
    {"widths": [8], "depths": [1], "kernels": [3], "expands": [4]},
    {"widths": [12, 16], "depths": [1, 2], "kernels": [3, 5], "expands": [2, 4], "stride": 2},
]))


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_digits()
    return torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0 - 0.3, torch.tensor(data.target)


def train_gates(params: dict[str, float], steps: int = 150, seed: int = 0) -> GatedSupernet:
    torch.manual_seed(seed)
    strategy = build_strategy("polarisation", params, SPACE)
    model = strategy.build_model()
    assert isinstance(model, GatedSupernet)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    backend = TorchBackend(model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0))
    images, labels = digits()
    rng, batches = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    for step in range(steps):
        index = torch.randint(0, len(labels), (32,), generator=batches)
        batch = StepBatch(images[index], labels[index], index, (images[index], labels[index]))
        run_step(backend, strategy, SPACE, batch, step, rng)
        backend.step()
    return model


@pytest.fixture(scope="module")
def polarised() -> GatedSupernet:
    return train_gates({"strength": 2e-2, "t": 0.5})


def test_it_is_registered_and_trains_the_largest_subnet() -> None:
    assert "polarisation" in STRATEGIES
    tasks = build_strategy("polarisation", {}, SPACE).subnets_for_step(0, np.random.default_rng(0))
    assert [(t.arch, t.role) for t in tasks] == [(SPACE.largest(), "largest")]


def test_the_regulariser_rewards_spread_at_equal_l1() -> None:
    together, apart = torch.full((4,), 0.5), torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert polarisation_regulariser(apart, t=1.0) < polarisation_regulariser(together, t=1.0)
    assert polarisation_regulariser(apart, 1.0, polarise=0.0) == polarisation_regulariser(together, 1.0, polarise=0.0)


def test_gates_binarise_with_the_polarising_term(polarised: GatedSupernet) -> None:
    gates = polarised.gates_vector()
    assert polarised_fraction(gates) >= 0.95
    assert 0.2 <= float((gates == 0).float().mean()) <= 0.8  # both clusters hold a share


def test_without_the_polarising_term_the_gates_do_not_binarise() -> None:
    l1_only = train_gates({"strength": 2e-2, "t": 0.5, "polarise": 0.0}).gates_vector()
    task_only = train_gates({"strength": 0.0}).gates_vector()
    assert polarised_fraction(l1_only) < 0.8  # they shrink to a spread of values, not to two
    assert float((task_only == 0).float().mean()) == 0.0  # nothing is pruned by the task alone


def test_the_consensus_subnet_computes_the_gated_model_with_fewer_params_and_flops(polarised: GatedSupernet) -> None:
    gated = copy.deepcopy(polarised).eval()
    images = digits()[0][:64]
    largest = SPACE.largest()
    dense = consensus_subnet(gated)
    apply_mask(gated, sparsity_mask(gated, gate_scores(gated), 0.6))
    pruned = consensus_subnet(gated).eval()
    with torch.no_grad():
        torch.testing.assert_close(pruned(images), gated(images, largest), rtol=1e-5, atol=1e-5)
        # `nasfleet export` of such a run (extract through module_for) gives the gated function too.
        torch.testing.assert_close(extract(gated, SPACE, largest).eval()(images), gated(images, largest))
    params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert params(pruned) < params(dense) <= SPACE.params(largest)
    assert params(pruned) < 0.7 * SPACE.params(largest)
    assert multiply_adds(pruned, (1, 8, 8)) < 0.7 * SPACE.flops(largest)


def test_the_mask_removes_the_target_fraction_by_rank() -> None:
    torch.manual_seed(1)
    gated = build_strategy("polarisation", {}, SPACE).build_model()
    assert isinstance(gated, GatedSupernet)
    with torch.no_grad():
        for gate in gated.gates:
            gate.uniform_(0.1, 1.0)
    for scores in (gate_scores(gated), magnitude_scores(gated)):
        masks = sparsity_mask(gated, scores, 0.5)
        kept = torch.cat([m for stage in masks for m in stage])
        assert int((~kept).sum()) == round(0.5 * kept.numel())
    unpruned = consensus_subnet(gated)
    assert multiply_adds(unpruned, (1, 8, 8)) == SPACE.flops(SPACE.largest())
    assert sum(p.numel() for p in unpruned.parameters()) == SPACE.params(SPACE.largest())


def test_the_strategy_extracts_its_sparsity_target(polarised: GatedSupernet) -> None:
    strategy = build_strategy("polarisation", {"sparsity": 0.6}, SPACE)
    images, before = digits()[0], polarised.gates_vector()
    net = strategy.consensus(polarised, [images[:64], images[64:128]])
    hidden = sum(block.hidden for stage in net.stages for block in stage)
    total = sum(g.numel() for g in polarised.gates)
    assert abs(hidden - 0.4 * total) <= 1  # a stage's first block may keep one channel more
    assert torch.equal(polarised.gates_vector(), before)  # it worked on a copy
