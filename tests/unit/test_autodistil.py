"""AutoDistil: size sub-spaces that partition the space, MiniLM relations that are the model's own
attention, a frozen teacher outside the run, and the mechanism: with attention distillation off,
the students' attention does not move towards the teacher's."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.evaluate import load_trained
from nasfleet.orchestrator.launch import train_job
from nasfleet.orchestrator.train import job_strategy
from nasfleet.strategies import build_strategy
from nasfleet.strategies.autodistil import last_layer_qkv, relation_logprobs, self_attention_kl
from nasfleet.supernet import GPTSpace, GPTSpaceConfig, ViTSpace, ViTSpaceConfig, extract, load_subnet, save_subnet
from nasfleet.supernet.registry import space_from_dict

from conftest import TINY_SPACE, tiny_config

VIT = {"name": "vit", "head_dim": 4, "embed_dims": [16, 24], "depths": [1, 2], "heads": [1, 2], "mlp_ratios": [1.0, 2.0]}
GPT = GPTSpace(GPTSpaceConfig(image_size=8, head_dim=8, embed_dims=[16, 24], depths=[1, 2], heads=[1, 2]))


@pytest.mark.parametrize("subspaces", [2, 3])
def test_sub_spaces_partition_the_space_by_size(subspaces: int) -> None:
    space = ViTSpace(ViTSpaceConfig(**{k: v for k, v in VIT.items() if k != "name"}))
    strategies = [build_strategy("autodistil", {"subspaces": subspaces, "subspace": i}, space) for i in range(subspaces)]
    for arch in space.enumerate():
        assert sum(s.contains(arch) for s in strategies) == 1
    assert strategies[0].contains(space.smallest()) and strategies[-1].contains(space.largest())
    for s in strategies:
        rng = np.random.default_rng(1)
        tasks = s.subnets_for_step(0, rng)
        assert [t.role for t in tasks] == ["teacher", "largest", "smallest", "random"]
        assert all(s.contains(t.arch) for t in tasks[1:])
    # Sub-space sizes increase: each sub-space's largest is smaller than the next one's smallest.
    for low, high in zip(strategies, strategies[1:]):
        assert low.size_of(low.sub_largest) < high.size_of(high.sub_smallest)


def test_attention_relation_is_the_models_causal_attention_distribution() -> None:
    torch.manual_seed(0)
    model = GPT.build_supernet().eval()
    arch = GPT.largest()
    x = torch.randint(0, 256, (3, 1, 8))
    f = last_layer_qkv(model, x, arch)
    heads = arch.layers[-1].heads
    relation = relation_logprobs(f["q"], f["k"], heads, causal=True).exp()
    d = f["q"].shape[-1] // heads
    q = f["q"].reshape(3, 8, heads, d).transpose(1, 2)
    k = f["k"].reshape(3, 8, heads, d).transpose(1, 2)
    scores = (q @ k.transpose(-2, -1) / math.sqrt(d)).masked_fill(torch.ones(8, 8, dtype=torch.bool).triu(1), -math.inf)
    torch.testing.assert_close(relation, torch.softmax(scores, dim=-1))
    assert float(relation[..., 0, 1:].abs().max()) == 0.0  # the first token sees only itself


def test_relation_kl_is_zero_against_itself_and_positive_across_widths() -> None:
    torch.manual_seed(0)
    model = GPT.build_supernet().eval()
    x = torch.randint(0, 256, (2, 1, 8))
    teacher, student = last_layer_qkv(model, x, GPT.largest()), last_layer_qkv(model, x, GPT.smallest())
    assert teacher["q"].shape[-1] != student["q"].shape[-1]  # different head counts: relations still compare
    same = self_attention_kl(teacher, teacher, heads=1, causal=True)
    assert all(abs(float(v)) < 1e-6 for v in same)
    assert all(float(v) > 1e-4 for v in self_attention_kl(teacher, student, heads=1, causal=True))


def test_bad_parameters_and_spaces_are_one_line_errors() -> None:
    with pytest.raises(NasfleetError, match="supports vit and gpt"):
        build_strategy("autodistil", {}, space_from_dict(TINY_SPACE))
    with pytest.raises(NasfleetError, match="relation_heads 3"):
        build_strategy("autodistil", {"relation_heads": 3}, GPT)
    with pytest.raises(NasfleetError, match="out of range"):
        build_strategy("autodistil", {"subspaces": 2, "subspace": 2}, GPT)
    with pytest.raises(NasfleetError, match="is not a file"):
        build_strategy("autodistil", {"teacher_weights": "/nonexistent/supernet.pt"}, GPT).check_training_inputs()


def test_a_corrupt_or_foreign_teacher_file_is_refused_on_the_driver(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a torch file")
    vit = space_from_dict(VIT)
    with pytest.raises(NasfleetError, match="autodistil teacher_weights"):
        build_strategy("autodistil", {"teacher_weights": str(corrupt)}, vit).check_training_inputs()
    foreign = tmp_path / "gpt.pt"
    torch.save(GPT.build_supernet().state_dict(), foreign)
    with pytest.raises(NasfleetError, match="is not a supernet of this space"):
        build_strategy("autodistil", {"teacher_weights": str(foreign)}, vit).check_training_inputs()
    build_strategy("autodistil", {"teacher_weights": str(teacher_file(tmp_path))}, vit).check_training_inputs()


def teacher_file(tmp_path: Path) -> Path:
    """A teacher supernet's weights: random but fixed, which is all the mechanism needs."""
    torch.manual_seed(7)
    space = space_from_dict(VIT)
    path = tmp_path / "teacher.pt"
    torch.save(space.build_supernet().state_dict(), path)
    return path


def distilled_run(tmp_path: Path, name: str, teacher: Path, **params: object) -> tuple[float, float]:
    """Train sub-space 1 of 2 for 40 steps; the largest student's attention and value KL to the teacher."""
    job = tiny_config(
        tmp_path / name, space=VIT, seed=1,
        strategy={"name": "autodistil", "params": {"teacher_weights": str(teacher), **params}},
        optim={"steps": 40, "lr": 0.1, "warmup_steps": 2}, checkpoint_every_steps=40, log_every_steps=20,
    )
    train_job(job)
    trained = load_trained(job.run_dir)
    strategy = job_strategy(trained.config, trained.space)
    teacher_model = trained.space.build_supernet()
    teacher_model.load_state_dict(torch.load(teacher, weights_only=True))
    x = trained.data.val.images[:64]
    student = trained.model.module_for(strategy.sub_largest)
    kl = self_attention_kl(last_layer_qkv(teacher_model, x, trained.space.largest()), last_layer_qkv(student, x, strategy.sub_largest), 1, False)
    return float(kl[0]), float(kl[1])


def test_attention_distillation_moves_students_to_the_teacher_and_off_does_not(tmp_path: Path) -> None:
    teacher = teacher_file(tmp_path)
    on = distilled_run(tmp_path, "on", teacher, subspaces=2, subspace=1)
    off = distilled_run(tmp_path, "off", teacher, subspaces=2, subspace=1, attention_weight=0.0, value_weight=0.0, label_weight=1.0)
    assert on[0] < 0.5 * off[0] and on[1] < 0.5 * off[1], (on, off)


def test_the_frozen_teacher_is_not_part_of_the_run_and_export_matches(tmp_path: Path) -> None:
    teacher = teacher_file(tmp_path)
    job = tiny_config(
        tmp_path / "run", space=VIT,
        strategy={"name": "autodistil", "params": {"teacher_weights": str(teacher), "label_weight": 0.5}},
        optim={"steps": 4, "lr": 0.05, "warmup_steps": 1}, checkpoint_every_steps=4, log_every_steps=2,
    )
    train_job(job)
    teacher.unlink()  # evaluation and export never need it
    trained = load_trained(job.run_dir)
    assert all(k.startswith("student.") for k in trained.model.state_dict())
    arch = job_strategy(trained.config, trained.space).sample_subspace(np.random.default_rng(3))
    subnet = extract(trained.model, trained.space, arch)
    save_subnet(subnet, trained.space, arch, tmp_path / "subnet")
    loaded = load_subnet(tmp_path / "subnet")[0].eval()
    x = trained.data.val.images[:8]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), trained.model.eval()(x, arch))
