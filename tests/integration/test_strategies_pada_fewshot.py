"""PA&DA and few-shot NAS with gradient matching: each one's defining mechanism, exact resume, routing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.data import BatchStream, ImageSet
from nasfleet.orchestrator.evaluate import evaluate_arch, load_trained
from nasfleet.orchestrator.train import latest_checkpoint, read_rank_state
from nasfleet.strategies import FewShotGMStrategy, FewShotSupernet, PadaStrategy, SubnetTask, build_strategy
from nasfleet.strategies.fewshot import plan_split
from nasfleet.supernet import MBConvSpace, MBConvSpaceConfig, extract
from nasfleet.supernet.arch import BlockChoice, ConvArch, StageChoice

from conftest import TINY_SPACE, assert_one_line_error, nasfleet, tiny_config, train

SPACE = MBConvSpace(MBConvSpaceConfig.model_validate(TINY_SPACE))
OPS = [BlockChoice(k, e) for k in (3, 5) for e in (2, 3)]  # each block slot's options, in the space's order
PARAMS: dict[str, dict[str, Any]] = {"pada": {}, "fewshot-gm": {"warmup_steps": 6}}


def _arch(first_op: BlockChoice) -> ConvArch:
    """A two-stage subnet whose stage-0 block-0 op is ``first_op`` (everything else fixed)."""
    return ConvArch((StageChoice(8, (first_op,)), StageChoice(12, (BlockChoice(3, 2),))))


def _set_block_grad_norms(supernet: torch.nn.Module, norms: dict[tuple[int, int], float]) -> None:
    """Every gradient zero except blocks ``(stage, block)``, whose gradient gets exactly the given norm."""
    for p in supernet.parameters():
        p.grad = torch.zeros_like(p)
    for (i, j), norm in norms.items():
        params = list(supernet.stages[i][j].parameters())
        count = sum(p.numel() for p in params)
        for p in params:
            p.grad = torch.full_like(p, norm / count**0.5)


# -- PA&DA -------------------------------------------------------------------------
def test_pada_path_probabilities_follow_the_ops_gradient_norms() -> None:
    strategy = build_strategy("pada", {"path_floor": 0.2, "smoothing": 0.5}, SPACE)
    assert isinstance(strategy, PadaStrategy)
    np.testing.assert_allclose(strategy.path_probabilities("stage0.block0"), 0.25)
    supernet = SPACE.build_supernet()
    logits, labels = torch.zeros(2, 10), torch.zeros(2, dtype=torch.long)
    # k5e3 on block (0, 0) gets gradients of norm 4, k3e2 of norm 1; the other stage's block norm 3.
    for op, norm in [(OPS[3], 4.0), (OPS[0], 1.0)]:
        _set_block_grad_norms(supernet, {(0, 0): norm, (1, 0): 3.0})
        strategy.after_backward(SubnetTask(_arch(op), role="pada"), supernet, logits, labels, None)
    # The unseen ops borrow the mean of the seen ones (2.5): importance [1, 2.5, 2.5, 4] of 10.
    expected = 0.8 * np.array([1.0, 2.5, 2.5, 4.0]) / 10.0 + 0.2 / 4
    np.testing.assert_allclose(strategy.path_probabilities("stage0.block0"), expected)
    # Width and depth follow the stage's whole gradient norm; a repeat observation is smoothed.
    np.testing.assert_allclose(strategy.path_importance[0], [np.hypot(4.0, 0.0) * 0.5 + 0.5 * 1.0, np.nan])
    # And the plan follows the probabilities.
    rng = np.random.default_rng(0)
    drawn = [strategy.subnets_for_step(s, rng)[0].arch.stages[0].blocks[0] for s in range(4000)]
    freq = np.array([drawn.count(op) for op in OPS]) / len(drawn)
    np.testing.assert_allclose(freq, expected, atol=0.025)


def test_pada_data_probabilities_follow_the_examples_gradient_norms() -> None:
    strategy = build_strategy("pada", {"data_floor": 0.2, "smoothing": 1.0}, SPACE)
    assert isinstance(strategy, PadaStrategy)
    np.testing.assert_allclose(strategy.example_probabilities(10), 0.1)
    labels = torch.zeros(10, dtype=torch.long)
    # Examples 0-4 confidently right (dLoss/dlogits ≈ 0), 5-9 confidently wrong (norm ≈ √2).
    logits = torch.zeros(10, 10)
    logits[:5, 0] = 50.0
    logits[5:, 1] = 50.0
    task = SubnetTask(_arch(OPS[0]), role="pada")
    strategy.after_backward(task, SPACE.build_supernet(), logits, labels, torch.arange(10))
    probs = strategy.example_probabilities(10)
    assert probs is not None
    norms = np.array([0.0] * 5 + [np.sqrt(2.0)] * 5)
    np.testing.assert_allclose(probs, 0.8 * norms / norms.sum() + 0.02, atol=1e-9)
    # BatchStream samples by them: the hard examples fill most batches; rank 1 of 2 keeps to its shard.
    data = ImageSet(torch.zeros(10, 1, 2, 2), labels)
    drawn = np.concatenate([BatchStream(data, 2, seed=0, sampler=strategy).indices(s).numpy() for s in range(500)])
    assert np.mean(drawn >= 5) > 0.8
    shard = np.concatenate([BatchStream(data, 2, 0, 1, 2, sampler=strategy).indices(s).numpy() for s in range(50)])
    assert set(shard) <= {1, 3, 5, 7, 9} and len(set(shard)) == 5


# -- few-shot NAS with gradient matching ---------------------------------------------
@pytest.mark.parametrize("disagreeing", [0, 1])
def test_fewshot_splits_on_the_edge_whose_gradients_disagree(disagreeing: int) -> None:
    strategy = build_strategy("fewshot-gm", {"warmup_steps": 3}, SPACE)
    assert isinstance(strategy, FewShotGMStrategy)
    assert [(e.stage, e.block) for e in strategy.edges] == [(0, 0), (1, 0)]
    gen = torch.Generator().manual_seed(0)
    v, w = torch.randn(50, generator=gen), torch.randn(50, generator=gen)
    agreeing = torch.stack([v + 0.1 * torch.randn(50, generator=gen) for _ in range(4)])
    # Ops 0 and 2 push the shared weights one way, ops 1 and 3 the opposite way.
    split = torch.stack([s * w + 0.1 * torch.randn(50, generator=gen) for s in (1, -1, 1, -1)])
    grads = [split, agreeing] if disagreeing == 0 else [agreeing, split]
    plan = plan_split(grads, num_copies=2)
    assert plan.edge == disagreeing and plan.assignment == (0, 1, 0, 1)
    assert plan.agreement[disagreeing] < 0 < plan.agreement[1 - disagreeing]

    # The strategy acts on that plan at its warm-up step: copies, routing, roles.
    model = strategy.wrap_model(SPACE.build_supernet())
    assert isinstance(model, FewShotSupernet)
    strategy.edge_gradients = lambda *args: grads  # type: ignore[method-assign]
    shared = (torch.randn(4, 1, 8, 8), torch.zeros(4, dtype=torch.long))
    strategy.before_step(2, model, shared)
    assert int(model.split_edge) == -1 and strategy.plan is None
    strategy.before_step(3, model, shared)
    assert int(model.split_edge) == disagreeing and model.copy_of_option.tolist() == [0, 1, 0, 1]
    edge = strategy.edges[disagreeing]
    for op, copy in zip(OPS, [0, 1, 0, 1]):
        arch = edge.with_choice(SPACE.largest(), op)
        assert model.copy_index(arch) == strategy.copy_of(arch) == copy
    rng = np.random.default_rng(0)
    assert {t.role for s in range(20) for t in strategy.subnets_for_step(s, rng)} == {"shot0", "shot1"}


def test_fewshot_split_gives_each_copy_the_trained_weights_and_routes_each_subnet() -> None:
    torch.manual_seed(0)
    strategy = build_strategy("fewshot-gm", {"warmup_steps": 0, "base_archs": 1}, SPACE)
    assert isinstance(strategy, FewShotGMStrategy)
    model = strategy.wrap_model(SPACE.build_supernet())
    assert isinstance(model, FewShotSupernet)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    images, labels = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    with torch.no_grad():  # copy 0 has "trained" weights, the idle copy does not
        for p in model.copies[0].parameters():
            p.add_(0.01)
    buffers = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    grads = strategy.edge_gradients(model.copies[0], images, labels)
    assert [g.shape[0] for g in grads] == [4, 4]
    assert all(p.grad is None for p in model.parameters())  # measuring leaves no gradients behind
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in buffers.items())  # nor BN statistics
    strategy.before_step(0, model, (images, labels))
    assert strategy.plan is not None and int(model.split_edge) == strategy.plan.edge
    for a, b in zip(model.copies[0].state_dict().values(), model.copies[1].state_dict().values()):
        assert torch.equal(a, b)
    assert {id(p) for p in optimizer.param_groups[0]["params"]} == {id(p) for p in model.parameters()}
    edge = strategy.edges[strategy.plan.edge]
    archs = [edge.with_choice(SPACE.smallest(), op) for op in edge.options]
    for copy in (0, 1):
        arch = next(a for a in archs if strategy.copy_of(a) == copy)
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images, arch), labels).backward()
        touched = {n.split(".")[1] for n, p in model.named_parameters() if p.grad is not None}
        assert touched == {str(copy)}


# -- through the trainer -------------------------------------------------------------
def _config(run_dir: Path, name: str) -> Any:
    return tiny_config(run_dir, strategy={"name": name, "params": PARAMS[name]})


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_resume_across_the_strategy_state_is_bit_identical(name: str, tmp_path: Path) -> None:
    straight = train(_config(tmp_path / "straight", name))
    config = _config(tmp_path / "resumed", name)
    train(config, until_step=4)  # few-shot: before its split at step 6
    train(config, resume=True, until_step=8)  # crosses the split
    resumed = train(config, resume=True)
    assert resumed.step == straight.step == 12
    straight_state, resumed_state = (
        read_rank_state(str(latest_checkpoint(run.config.run_dir)), 0).strategy for run in (straight, resumed)
    )
    np.testing.assert_equal(straight_state, resumed_state)  # NaN: unseen ops
    for (key, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), key
    roles = set(json.loads((Path(config.run_dir) / "metrics.jsonl").read_text().splitlines()[-1])["by_role"])
    if name == "pada":
        assert roles == {"pada"}
        seen = np.array(resumed_state["data_importance"]) != 1.0  # importance moved off its start
        assert 100 < seen.sum() <= 12 * 32
    else:
        assert roles <= {"shot0", "shot1"} and int(resumed.model.split_edge) >= 0


def test_a_split_run_evaluates_and_exports_each_subnet_from_its_sub_supernet(tmp_path: Path) -> None:
    config = _config(tmp_path / "run", "fewshot-gm")
    train(config)
    trained = load_trained(config.run_dir)
    model = trained.model
    assert isinstance(model, FewShotSupernet) and int(model.split_edge) >= 0
    edge = model.edges[int(model.split_edge)]
    images = trained.data.val.images[:64]
    for copy in (0, 1):
        op = edge.options[model.copy_of_option.tolist().index(copy)]
        arch = edge.with_choice(trained.space.largest(), op)
        assert model.copy_index(arch) == copy
        with torch.no_grad():
            routed = model(images, arch)
            other = model.copies[1 - copy](images, arch)
            standalone = extract(model, trained.space, arch).eval()(images)
        torch.testing.assert_close(standalone, routed, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(routed, other, atol=1e-4)  # the copies really trained apart
        before = {k: v.clone() for k, v in model.state_dict().items()}
        result = evaluate_arch(trained, arch, ("val",))
        assert 0.0 <= result.accuracy["val"] <= 1.0
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


# -- parameters ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "params", "field"),
    [
        ("pada", {"path_floor": 1.0}, "path_floor"),
        ("pada", {"data_floor": -0.1}, "data_floor"),
        ("pada", {"smoothing": 0.0}, "smoothing"),
        ("pada", {"smoothing": 1.5}, "smoothing"),
        ("pada", {"temperature": 1.0}, "temperature"),
        ("fewshot-gm", {"warmup_steps": -1}, "warmup_steps"),
        ("fewshot-gm", {}, "warmup_steps"),
        ("fewshot-gm", {"warmup_steps": 5, "num_copies": 1}, "num_copies"),
        ("fewshot-gm", {"warmup_steps": 5, "base_archs": 0}, "base_archs"),
    ],
)
def test_invalid_params_are_one_line_user_errors(name: str, params: dict[str, Any], field: str) -> None:
    with pytest.raises(NasfleetError, match=f"invalid parameter '{field}.*'{name}'") as info:
        build_strategy(name, params, SPACE)
    assert "\n" not in str(info.value)


def test_more_copies_than_an_edge_has_ops_is_a_user_error_and_exit_2_on_the_cli(tmp_path: Path) -> None:
    with pytest.raises(NasfleetError, match="num_copies 5 exceeds the 4 op choices"):
        build_strategy("fewshot-gm", {"warmup_steps": 2, "num_copies": 5}, SPACE)
    config = tmp_path / "job.yaml"
    bad = tiny_config(tmp_path / "run", strategy={"name": "pada", "params": {"smoothing": 0}})
    config.write_text(yaml.safe_dump(bad.model_dump(mode="json")))
    result = subprocess.run(
        [sys.executable, "-m", "nasfleet.orchestrator.cli", "train", "--config", str(config), "--no-progress"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "smoothing" in lines[0]


def test_fewshot_refuses_a_sharded_optimizer_before_any_rank_starts(tmp_path: Path) -> None:
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(_config(tmp_path / "run", "fewshot-gm").model_dump(mode="json")))
    assert_one_line_error(
        nasfleet("train", "--config", str(config), "--workers", "2",
                 "--deepspeed", str(Path(__file__).resolve().parents[2] / "cluster_configs/deepspeed/zero1.json")),
        "supports DeepSpeed ZeRO stage 0 at most",
    )
    assert not (tmp_path / "run").exists()
