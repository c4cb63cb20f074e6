"""Training in one process: the one loop at world size 1 — checkpoints, exact resume, metrics, run safety."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.config import JobConfig
from nasfleet.orchestrator.evaluate import evaluate_standard_subnets, load_trained
from nasfleet.orchestrator.launch import train_job
from nasfleet.orchestrator.train import completed_checkpoints, latest_checkpoint, read_meta, read_rank_state

from conftest import tiny_config


def test_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(tmp_path: Path) -> None:
    straight = tiny_config(tmp_path / "straight")
    train_job(straight)
    interrupted = tiny_config(tmp_path / "resumed")
    run = Path(interrupted.run_dir)
    train_job(interrupted, until_step=4)
    saved = tmp_path / "at-step-4"
    shutil.copytree(run / "checkpoint_00000004", saved)
    train_job(interrupted, resume=True, until_step=8)
    # A crash after step 8's checkpoint was lost: only the step-4 one survives.
    shutil.rmtree(run / "checkpoint_00000008")
    train_job(interrupted, resume=True)
    a, b = load_trained(straight.run_dir), load_trained(interrupted.run_dir)
    assert a.step == b.step == 12
    for name, tensor in a.model.state_dict().items():
        assert torch.equal(tensor, b.model.state_dict()[name]), name
    assert read_rank_state(str(latest_checkpoint(interrupted.run_dir)), 0).resumed_from_step == 4


def test_metrics_are_logged_per_subnet_role_without_duplicates_after_resume(tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "run")
    train_job(config, until_step=10)  # logs 4 and 8, checkpoints 4, 8 and 10, then "crashes"
    train_job(config, resume=True)
    lines = [json.loads(line) for line in (Path(config.run_dir) / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [4, 8, 10, 12]
    last = lines[-1]
    assert set(last) == {"step", "lr", "world_size", "resumed_from_step", "timing", "by_role"}
    assert last["world_size"] == 1 and last["resumed_from_step"] == 10
    assert set(last["by_role"]) == {"largest", "smallest", "random"}
    assert set(last["by_role"]["smallest"]) == {"loss", "cross_entropy", "accuracy", "mflops"}
    assert last["by_role"]["largest"]["mflops"] > last["by_role"]["smallest"]["mflops"]
    # The largest learns from labels, so its strategy loss is its (label-smoothed) cross-entropy.
    assert last["by_role"]["largest"]["cross_entropy"] > 0


def test_checkpoints_follow_the_one_layout_and_only_the_last_three_are_kept(tiny: JobConfig) -> None:
    train_job(tiny)
    run = Path(tiny.run_dir)
    assert [Path(c).name for c in completed_checkpoints(tiny.run_dir)] == [
        "checkpoint_00000004", "checkpoint_00000008", "checkpoint_00000012"
    ]
    newest = run / "checkpoint_00000012"
    files = {str(p.relative_to(newest)) for p in newest.rglob("*") if p.is_file()}
    assert files == {
        "supernet.pt", "ranks/rank_0.pt", "optimizer/optimizer.pt", "metrics.jsonl", "config.yaml", "meta.json"
    }
    meta = read_meta(str(newest))
    assert (meta.step, meta.world_size, meta.backend, meta.threads) == (12, 1, "torch", 1)
    assert (run / "config.yaml").is_file() and not list(run.glob(".checkpoint_*"))


def test_an_existing_run_is_never_overwritten_without_resume(tiny: JobConfig) -> None:
    train_job(tiny)
    supernet = Path(tiny.run_dir) / "checkpoint_00000012" / "supernet.pt"
    before = supernet.read_bytes()
    with pytest.raises(NasfleetError, match="--resume"):
        train_job(tiny)
    assert supernet.read_bytes() == before


def test_resume_under_another_thread_count_is_refused(tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "run")
    train_job(config, until_step=4)
    other = tiny_config(tmp_path / "run", launch={"threads": 2})
    with pytest.raises(NasfleetError, match="1 torch thread.*launch.threads"):
        train_job(other, resume=True)


def test_corrupted_checkpoint_files_are_user_errors(tiny: JobConfig) -> None:
    train_job(tiny)
    newest = Path(tiny.run_dir) / "checkpoint_00000012"
    supernet = newest / "supernet.pt"
    supernet.write_bytes(supernet.read_bytes()[:1000])
    with pytest.raises(NasfleetError, match="supernet.pt is corrupted"):
        load_trained(tiny.run_dir)
    (newest / "ranks" / "rank_0.pt").write_bytes(b"junk")
    longer = tiny.model_copy(update={"optim": tiny.optim.model_copy(update={"steps": 16})})
    with pytest.raises(NasfleetError, match="rank_0.pt is corrupted"):
        train_job(longer, resume=True)


def test_evaluation_reports_bounds_and_random_subnets_and_leaves_the_supernet_unchanged(tiny: JobConfig) -> None:
    train_job(tiny)
    trained = load_trained(tiny.run_dir)
    before = {k: v.clone() for k, v in trained.model.state_dict().items()}
    results = evaluate_standard_subnets(trained, ("val", "test"), random_subnets=2)
    assert [r.role for r in results] == ["smallest", "random-0", "random-1", "largest"]
    assert results[0].mflops < results[-1].mflops and results[0].params < results[-1].params
    assert all(set(r.accuracy) == {"val", "test"} for r in results)
    assert all(0.0 <= acc <= 1.0 for r in results for acc in r.accuracy.values())
    assert results[-1].accuracy["val"] > 0.3  # 12 steps already beat chance (0.1) by far
    for key, value in trained.model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_grad_clip_norm_scales_the_whole_step_gradient_down_to_that_norm(tmp_path: Path) -> None:
    """One SGD step without momentum or decay moves the weights by lr × the clipped gradient, so two
    runs clipped at c and 2c from the same start differ by lr·c along the unclipped gradient."""
    lr, clip = 0.5, 1e-2

    def one_step(name: str, grad_clip_norm: float | None) -> dict[str, torch.Tensor]:
        optim = {"steps": 1, "lr": lr, "momentum": 0.0, "weight_decay": 0.0, "warmup_steps": 0,
                 "grad_clip_norm": grad_clip_norm}
        config = tiny_config(tmp_path / name, optim=optim, checkpoint_every_steps=1, log_every_steps=1)
        train_job(config)
        state = load_trained(config.run_dir).model.state_dict()
        return {k: v for k, v in state.items() if v.is_floating_point() and "running" not in k}

    def flat(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([(a[k].double() - b[k].double()).flatten() for k in a])

    unclipped, at_c, at_2c = one_step("free", None), one_step("c", clip), one_step("2c", 2 * clip)
    c_step = flat(at_c, at_2c)
    assert c_step.norm().item() == pytest.approx(lr * clip, rel=1e-3)  # float32 weights round each element's change
    free_step = flat(at_c, unclipped)  # lr·(|g| − c) along the same direction: the raw norm was far above c
    assert free_step.norm().item() > 10 * lr * clip
    assert torch.nn.functional.cosine_similarity(c_step, free_step, dim=0).item() == pytest.approx(1.0, abs=1e-4)
