"""AutoDistil's sub-space supernets against one sandwich supernet, on the bundled digits with the ViT space.

Per seed:

1. ``sandwich``: one supernet over the whole space, ``--steps`` steps (largest on labels, smallest
   and a random subnet distilled from it). Its largest subnet is AutoDistil's teacher.
2. ``autodistil``: K = ``--subspaces`` supernets, one per size sub-space, each ``--steps / K``
   steps of task-agnostic self-attention distillation from that teacher (no labels), so the
   students together get the sandwich run's number of steps.
3. A light search per sub-space: ``--candidates`` architectures of the sub-space (the same ones
   for both methods), of which AutoDistil keeps the one with the lowest held-out distillation
   loss (its task-agnostic proxy) and the sandwich supernet the one with the best inherited
   validation accuracy.
4. Each found architecture is fine-tuned ``--finetune`` steps on the labels from the weights it
   inherits. AutoDistil's pick is fine-tuned from the AutoDistil weights and from the sandwich
   weights (same architecture: the paired comparison); the sandwich pick is fine-tuned from its
   own. Test accuracy is reported.

    OMP_NUM_THREADS=1 python benchmarks/autodistil.py [--seeds 0,1,2] [--steps 600] [--subspaces 2] \\
        [--candidates 8] [--finetune 150] [--finetune-lr 0.1] [--label-weight 0] [--name autodistil] \\
        [--workdir runs/autodistil-bench]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import write_results
from nasfleet.orchestrator.config import JobConfig, config_from_dict
from nasfleet.orchestrator.evaluate import evaluate_arch, load_trained
from nasfleet.orchestrator.launch import train_job
from nasfleet.orchestrator.train import job_strategy, latest_checkpoint
from nasfleet.research.standalone import train_standalone
from nasfleet.strategies.autodistil import AutoDistilStrategy, last_layer_qkv, self_attention_kl
from nasfleet.supernet import Arch, arch_to_json, extract

SPACE = {"name": "vit", "head_dim": 8, "embed_dims": [32, 48, 64], "depths": [1, 2, 3], "heads": [1, 2, 4],
         "mlp_ratios": [1.0, 2.0, 3.0]}
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}


def job(run_dir: Path, seed: int, steps: int, strategy: dict[str, Any], lr: float = 0.1) -> JobConfig:
    return config_from_dict({
        "run_dir": str(run_dir), "seed": seed, "space": SPACE, "strategy": strategy,
        "data": {"dataset": "digits", "batch_size": 32},
        "optim": {"steps": steps, "lr": lr, "warmup_steps": max(1, steps // 20)},
        "eval": {"calibration_batches": 1, "random_subnets": 1}, "launch": {"threads": 1},
        "checkpoint_every_steps": steps, "log_every_steps": max(1, steps // 4),
    })


def trained_run(config: JobConfig) -> Any:
    if not (Path(config.run_dir) / "config.yaml").exists() or load_trained(config.run_dir).step < config.optim.steps:
        shutil.rmtree(config.run_dir, ignore_errors=True)
        train_job(config)
    return load_trained(config.run_dir)


def distill_loss(student: torch.nn.Module, teacher: torch.nn.Module, teacher_arch: Arch, arch: Arch, x: torch.Tensor) -> float:
    attention, value = self_attention_kl(last_layer_qkv(teacher, x, teacher_arch), last_layer_qkv(student, x, arch), 1, False)
    return float(attention + value)


def finetuned_accuracy(trained: Any, source: torch.nn.Module, arch: Arch, args: argparse.Namespace, seed: int) -> float:
    optim = trained.config.optim.model_copy(update={"steps": args.finetune, "warmup_steps": max(1, args.finetune // 10), "lr": args.finetune_lr})
    recipe = trained.config.model_copy(update={"seed": seed, "optim": optim})
    return train_standalone(recipe, arch, trained.data, init=extract(source, trained.space, arch)).accuracy["test"]


def one_seed(seed: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    root = Path(args.workdir) / f"seed{seed}"
    sandwich = trained_run(job(root / "sandwich", seed, args.steps, {"name": "sandwich", "params": {"num_random": 1}}))
    teacher_file = str(Path(latest_checkpoint(str(root / "sandwich"))) / "supernet.pt")
    x_val = sandwich.data.val.images[:256]
    rows = []
    for i in range(args.subspaces):
        params = {"subspaces": args.subspaces, "subspace": i, "teacher_weights": teacher_file, "label_weight": args.label_weight}
        ad = trained_run(job(root / f"autodistil-{i}-labels{args.label_weight:g}-lr{args.distill_lr:g}", seed,
                             args.steps // args.subspaces, {"name": "autodistil", "params": params}, args.distill_lr))
        strategy = job_strategy(ad.config, ad.space)
        assert isinstance(strategy, AutoDistilStrategy)
        rng = np.random.default_rng([seed, i])
        candidates = [strategy.sample_subspace(rng) for _ in range(args.candidates)]
        student = ad.model.module_for(candidates[0])
        proxy = [distill_loss(student, sandwich.model, ad.space.largest(), a, x_val) for a in candidates]
        inherited = [evaluate_arch(sandwich, a, ("val",)).accuracy["val"] for a in candidates]
        ad_pick, sw_pick = candidates[int(np.argmin(proxy))], candidates[int(np.argmax(inherited))]
        rows.append({
            "seed": seed, "subspace": i,
            "autodistil_arch": arch_to_json(ad_pick), "autodistil_params": ad.space.params(ad_pick),
            "sandwich_arch": arch_to_json(sw_pick), "sandwich_params": ad.space.params(sw_pick),
            "autodistil": finetuned_accuracy(ad, student, ad_pick, args, seed),
            "sandwich_same_arch": finetuned_accuracy(sandwich, sandwich.model, ad_pick, args, seed),
            "sandwich_own_pick": finetuned_accuracy(sandwich, sandwich.model, sw_pick, args, seed),
        })
        print(rows[-1], flush=True)
    return rows


def mean_interval(values: list[float]) -> str:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{100 * mean:.2f}"
    half = T975[len(values) - 1] * statistics.stdev(values) / len(values) ** 0.5
    return f"{100 * mean:.2f} ± {100 * half:.2f}"


def render(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        "# AutoDistil vs one sandwich supernet (digits, ViT space)", "",
        f"Seeds {args.seeds}; sandwich {args.steps} steps; {args.subspaces} sub-spaces x {args.steps // args.subspaces} "
        f"steps of attention distillation at lr {args.distill_lr:g} (label weight {args.label_weight:g}; 0 is task-agnostic); "
        f"{args.candidates} candidates per sub-space; every pick fine-tuned {args.finetune} steps on labels at lr {args.finetune_lr:g}. Test accuracy (%) on the digits test split.", "",
        "| seed | sub-space | AutoDistil pick (params) | AutoDistil | sandwich, same arch | sandwich's own pick (params) | sandwich pick |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['seed']} | {r['subspace']} | {r['autodistil_params']:,} | {100 * r['autodistil']:.2f} | "
                     f"{100 * r['sandwich_same_arch']:.2f} | {r['sandwich_params']:,} | {100 * r['sandwich_own_pick']:.2f} |")
    lines += ["", "| sub-space | AutoDistil | sandwich, same arch | paired difference | sandwich's own pick |", "|---|---|---|---|---|"]
    for i in range(args.subspaces):
        sub = [r for r in rows if r["subspace"] == i]
        diff = [r["autodistil"] - r["sandwich_same_arch"] for r in sub]
        lines.append(f"| {i} | {mean_interval([r['autodistil'] for r in sub])} | {mean_interval([r['sandwich_same_arch'] for r in sub])} | "
                     f"{mean_interval(diff)} | {mean_interval([r['sandwich_own_pick'] for r in sub])} |")
    lines += ["", "Intervals: mean ± t-based 95 % half-width over seeds.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--subspaces", type=int, default=2)
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--finetune", type=int, default=150)
    parser.add_argument("--finetune-lr", type=float, default=0.1)
    parser.add_argument("--distill-lr", type=float, default=0.1, help="the AutoDistil runs' learning rate (sandwich: 0.1)")
    parser.add_argument("--label-weight", type=float, default=0.0, help="AutoDistil students' cross-entropy weight (0: task-agnostic)")
    parser.add_argument("--name", default="autodistil", help="results file name under benchmarks/results/")
    parser.add_argument("--workdir", default="runs/autodistil-bench")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [row for seed in (int(s) for s in args.seeds.split(",")) for row in one_seed(seed, args)]
    write_results(args.name, {"args": vars(args), "rows": rows}, render(rows, args))


if __name__ == "__main__":
    main()
