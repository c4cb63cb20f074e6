"""Polarisation pruning against magnitude pruning at the same removed-channel fraction, on Fashion-MNIST.

For each seed: one dense run (the polarisation strategy at strength 0: gates train on the task loss
alone) and one polarised run per sparsity target (``t = 2 · sparsity``, the regulariser's balance
point, see docs/polarisation.md), both through the normal trainer on the real data. Each run's
largest subnet is then pruned to the target fraction of hidden channels: the polarised run by its
gates, the dense run by magnitude (batch-norm scale × outgoing weight L1); batch norm is
re-estimated, the pruned channels are physically removed (``consensus_subnet``), and the plain
network is scored on the 10,000 test images before and after the same short fine-tune. Magnitude
pruning is run twice: at the same removed-channel fraction, and at the fraction that gives the
same MFLOPs as the polarised net (the two criteria remove channels from different layers).

The space is a small single-architecture mbconv network (2.2 MFLOPs, 50 k parameters), so the
whole study fits in about a quarter of an hour of CPU; the reference config's largest subnet is
8.4 MFLOPs. Finished runs in --workdir are reused, so a rerun only re-scores.

    OMP_NUM_THREADS=1 python benchmarks/polarisation.py [--steps 800] [--seeds 0,1] [--sparsities 0.5,0.7] \\
        [--finetune-steps 100] [--workdir runs/polarisation-bench]
"""

from __future__ import annotations

import argparse
import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from _common import trained_run, write_results
from nasfleet.orchestrator.config import JobConfig, OptimConfig, config_from_dict
from nasfleet.orchestrator.data import ImageSet
from nasfleet.orchestrator.evaluate import TrainedSupernet
from nasfleet.orchestrator.train.setup import sgd_with_schedule
from nasfleet.strategies.polarisation import (
    GatedSupernet,
    apply_mask,
    consensus_subnet,
    gate_scores,
    magnitude_scores,
    polarised_fraction,
    sparsity_mask,
)
from nasfleet.supernet import recalibrate_batchnorm
from nasfleet.supernet.channel_prune import multiply_adds

SPACE: dict[str, Any] = {
    "name": "mbconv",
    "stem_width": 12,
    "stages": [
        {"widths": [16], "depths": [1], "kernels": [3], "expands": [4], "stride": 2},
        {"widths": [32], "depths": [2], "kernels": [3], "expands": [4], "stride": 2},
        {"widths": [48], "depths": [2], "kernels": [3], "expands": [4], "stride": 2},
    ],
}


def job(workdir: Path, seed: int, steps: int, strength: float, t: float, sparsity: float) -> JobConfig:
    name = f"seed{seed}-dense" if strength == 0 else f"seed{seed}-s{sparsity:g}-t{t:g}-l{strength:g}"
    return config_from_dict({
        "run_dir": str(workdir / f"{name}-{steps}steps"),
        "seed": seed,
        "space": SPACE,
        "strategy": {"name": "polarisation", "params": {"strength": strength, "t": t, "sparsity": sparsity}},
        "data": {"dataset": "fashion-mnist", "batch_size": 64},
        "optim": {"steps": steps, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-5, "warmup_steps": steps // 10},
        "eval": {"calibration_batches": 8, "random_subnets": 0},
        "checkpoint_every_steps": steps,
        "log_every_steps": max(1, steps // 4),
    })


def accuracy(model: nn.Module, data: ImageSet, batch: int = 1000) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(data), batch):
            logits = model(data.images[start : start + batch])
            correct += int((logits.argmax(dim=-1) == data.labels[start : start + batch]).sum())
    return correct / len(data)


def fine_tune(model: nn.Module, data: ImageSet, steps: int, seed: int, lr: float = 0.01) -> nn.Module:
    """The same short fine-tune for every pruned net: Nesterov SGD, cosine, batch 64, seeded batches."""
    if steps == 0:
        return model
    tuned = copy.deepcopy(model).train()
    optimizer, scheduler = sgd_with_schedule(tuned, OptimConfig(steps=steps, lr=lr, warmup_steps=0))
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        index = torch.from_numpy(rng.choice(len(data), 64, replace=False))
        loss = F.cross_entropy(tuned(data.images[index]), data.labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return tuned.eval()


def pruned_mflops(trained: TrainedSupernet, sparsity: float) -> float:
    """MFLOPs of the dense run's net pruned by magnitude to ``sparsity`` (no re-estimation needed to count)."""
    gated = copy.deepcopy(trained.model)
    assert isinstance(gated, GatedSupernet)
    apply_mask(gated, sparsity_mask(gated, magnitude_scores(gated), sparsity))
    shape = (trained.data.in_channels, trained.data.image_size, trained.data.image_size)
    return multiply_adds(consensus_subnet(gated), shape) / 1e6


def flops_matched_sparsity(trained: TrainedSupernet, target_mflops: float) -> float:
    """The magnitude-pruning sparsity whose net has ``target_mflops`` (bisection: MFLOPs fall as it grows)."""
    low, high = 0.0, 0.95
    for _ in range(14):
        middle = (low + high) / 2
        low, high = (middle, high) if pruned_mflops(trained, middle) > target_mflops else (low, middle)
    return high


def prune_and_score(trained: TrainedSupernet, by: str, sparsity: float, finetune_steps: int, seed: int,
                    label: str | None = None) -> dict[str, Any]:
    gated = copy.deepcopy(trained.model)
    assert isinstance(gated, GatedSupernet)
    scores = gate_scores(gated) if by == "polarisation" else magnitude_scores(gated)
    apply_mask(gated, sparsity_mask(gated, scores, sparsity))
    recalibrate_batchnorm(gated, trained.space.largest(), trained.calibration_batches())
    gated.eval()
    pruned = consensus_subnet(gated).eval()
    total = sum(g.numel() for g in gated.gates)
    removed = int(sum(int((g == 0).sum()) for g in gated.gate_values()))
    shape = (trained.data.in_channels, trained.data.image_size, trained.data.image_size)
    return {
        "method": label or by, "target_sparsity": sparsity, "removed_channels": removed / total,
        "params": sum(p.numel() for p in pruned.parameters()), "mflops": multiply_adds(pruned, shape) / 1e6,
        "test_pruned": accuracy(pruned, trained.data.test),
        "test_finetuned": accuracy(fine_tune(pruned, trained.data.train, finetune_steps, seed), trained.data.test),
    }


def dense_score(trained: TrainedSupernet) -> dict[str, Any]:
    gated = copy.deepcopy(trained.model)
    assert isinstance(gated, GatedSupernet)
    dense = consensus_subnet(gated).eval()  # nothing pruned: the gates are folded in
    gates = gated.gates_vector()
    shape = (trained.data.in_channels, trained.data.image_size, trained.data.image_size)
    return {"params": sum(p.numel() for p in dense.parameters()), "mflops": multiply_adds(dense, shape) / 1e6,
            "test": accuracy(dense, trained.data.test), "gates_zero": float((gates == 0).float().mean()),
            "gates_polarised": polarised_fraction(gates)}


def summary(values: list[float], images: int = 10_000) -> str:
    """Mean over seeds, each seed's value, and the 95% binomial half-width of the mean's test error.

    With two or three seeds a t-interval over seeds is too wide to say anything; the seeds are
    listed instead, so their spread is visible beside the test set's own sampling error.
    """
    mean = float(np.mean(values))
    binomial = 1.96 * math.sqrt(mean * (1 - mean) / images / len(values))
    seeds = " / ".join(f"{100 * v:.2f}" for v in values)
    return f"{100 * mean:.2f} ± {100 * binomial:.2f} ({seeds})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--sparsities", default="0.5,0.7")
    parser.add_argument("--strength", type=float, default=1e-2)
    parser.add_argument("--finetune-steps", type=int, default=100)
    parser.add_argument("--workdir", type=Path, default=Path("runs/polarisation-bench"))
    parser.add_argument("--name", default="polarisation")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    sparsities = [float(s) for s in args.sparsities.split(",")]

    rows: list[dict[str, Any]] = []
    dense_rows: list[dict[str, Any]] = []
    gate_rows: list[dict[str, Any]] = []
    train_wall_s = 0.0
    for seed in seeds:
        dense, spent = trained_run(job(args.workdir, seed, args.steps, 0.0, 0.0, 0.5))
        train_wall_s += spent
        dense_rows.append({"seed": seed, **dense_score(dense)})
        for sparsity in sparsities:
            rows.append({"seed": seed, **prune_and_score(dense, "magnitude", sparsity, args.finetune_steps, seed)})
            t = 2 * sparsity
            polarised, spent = trained_run(job(args.workdir, seed, args.steps, args.strength, t, sparsity))
            train_wall_s += spent
            gate_rows.append({"seed": seed, "target_sparsity": sparsity, "t": t, **dense_score(polarised)})
            rows.append({"seed": seed, **prune_and_score(polarised, "polarisation", sparsity, args.finetune_steps, seed)})
            matched = flops_matched_sparsity(dense, rows[-1]["mflops"])
            rows.append({"seed": seed, **prune_and_score(dense, "magnitude", matched, args.finetune_steps, seed,
                                                         "magnitude, same MFLOPs"), "target_sparsity": sparsity})
            print(rows[-3:], gate_rows[-1], flush=True)

    d_mean = float(np.mean([r["test"] for r in dense_rows]))
    lines = [
        "# Polarisation pruning vs magnitude pruning (Fashion-MNIST)",
        "",
        f"Small mbconv net ({dense_rows[0]['params']:,} parameters, {dense_rows[0]['mflops']:.2f} MFLOPs), "
        f"{args.steps} training steps (batch 64), seeds {args.seeds}; polarisation strength λ = {args.strength:g}, "
        f"t = 2 · sparsity; fine-tune {args.finetune_steps} steps (lr 0.01) for both methods. Test accuracy on "
        f"10,000 images: mean over seeds ± the 95% binomial half-width of the test error (each seed in brackets).",
        "",
        f"Dense (unpruned, strength 0): **{summary([r['test'] for r in dense_rows])}** %",
        "",
        "| method | target removed (channels) | removed (actual) | params | MFLOPs | test % pruned | test % + fine-tune | Δ vs dense (fine-tuned) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for sparsity in sparsities:
        for method in ("magnitude", "magnitude, same MFLOPs", "polarisation"):
            group = [r for r in rows if r["method"] == method and r["target_sparsity"] == sparsity]
            f_mean = float(np.mean([r["test_finetuned"] for r in group]))
            lines.append(
                f"| {method} | {100 * sparsity:.0f} % | {100 * np.mean([r['removed_channels'] for r in group]):.1f} % | "
                f"{np.mean([r['params'] for r in group]):,.0f} | {np.mean([r['mflops'] for r in group]):.2f} | "
                f"{summary([r['test_pruned'] for r in group])} | {summary([r['test_finetuned'] for r in group])} | "
                f"{100 * (f_mean - d_mean):+.2f} |"
            )
    lines += ["", "Gates at the end of training (fraction exactly 0; fraction within 0.05 of 0 or 1):", "",
              "| run | t | gates = 0 | polarised | test % (gated, before pruning) |", "|---|---:|---:|---:|---:|"]
    for r in dense_rows:
        lines.append(f"| dense seed {r['seed']} | — | {100 * r['gates_zero']:.1f} % | "
                     f"{100 * r['gates_polarised']:.1f} % | {100 * r['test']:.2f} |")
    for r in gate_rows:
        lines.append(f"| polarised {100 * r['target_sparsity']:.0f} % seed {r['seed']} | {r['t']:g} | "
                     f"{100 * r['gates_zero']:.1f} % | {100 * r['gates_polarised']:.1f} % | {100 * r['test']:.2f} |")
    lines += ["", f"Training wall time of these runs: {train_wall_s:.0f} s (a reused run counts the time it took when it trained)."]
    write_results(args.name, {"args": {k: str(v) for k, v in vars(args).items()}, "space": SPACE,
                              "dense": dense_rows, "gates": gate_rows, "pruned": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
