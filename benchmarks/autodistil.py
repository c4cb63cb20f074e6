"""AutoDistil's sub-space supernets against one sandwich supernet: ViT on digits, or the language model.

``--task vit`` (default) uses the bundled 8x8 digits with a small ViT space and scores test
accuracy; ``--task lm`` uses the language-model job of orchestrator/configs/lm.yaml (the gpt
space on 'fortunes', causal relations) and scores test loss in nats per byte.

Per seed:

1. ``sandwich``: one supernet over the whole space, ``--steps`` steps (largest on labels, smallest
   and a random subnet distilled from it). With ``--teacher sandwich`` (the default) its largest
   subnet is AutoDistil's teacher; with ``--teacher standalone`` the teacher is the largest
   architecture trained alone for ``--steps`` steps (a pretrained teacher, as the paper's BERT is:
   on the LM the sandwich supernet can stay at the unigram plateau that long, and a teacher there has
   no attention worth distilling).
2. ``autodistil``: K = ``--subspaces`` supernets, one per size sub-space, each ``--steps / K``
   steps of task-agnostic self-attention distillation from that teacher (no labels), so the
   students together get the sandwich run's number of steps.
3. A light search per sub-space: ``--candidates`` architectures of the sub-space (the same ones
   for both methods), of which AutoDistil keeps the one with the lowest held-out distillation
   loss (its task-agnostic proxy) and the sandwich supernet the one with the best inherited
   validation accuracy.
4. Each found architecture is fine-tuned ``--finetune`` steps on the labels from the weights it
   inherits. AutoDistil's pick is fine-tuned from the AutoDistil weights and from the sandwich
   weights (same architecture: the paired comparison), and, with a stand-alone teacher, from
   the teacher's own weights sliced to it (what distillation has to beat: the student's size cut
   straight out of the teacher); the sandwich pick is fine-tuned from its own. Test accuracy
   (ViT) or test loss (LM) is reported, with the teacher's.

Finished runs and each seed's finished rows in ``--workdir`` are reused, so seeds can run as separate
processes side by side and a last run over all of them only renders.

    OMP_NUM_THREADS=1 python benchmarks/autodistil.py [--task vit|lm] [--teacher sandwich|standalone] [--seeds 0,1,2] [--steps 600] [--subspaces 2] \\
        [--candidates 8] [--finetune 150] [--finetune-lr 0.1] [--label-weight 0] [--name autodistil] \\
        [--workdir runs/autodistil-bench]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import lm_job_data, trained_run, warmup_share, write_results
from nasfleet.orchestrator.config import JobConfig, config_from_dict
from nasfleet.orchestrator.evaluate import evaluate_arch
from nasfleet.orchestrator.train import job_strategy, latest_checkpoint
from nasfleet.research.standalone import train_standalone
from nasfleet.strategies.autodistil import AutoDistilStrategy, last_layer_qkv, load_teacher, self_attention_kl
from nasfleet.supernet import Arch, arch_to_json, extract

VIT_SPACE = {"name": "vit", "head_dim": 8, "embed_dims": [32, 48, 64], "depths": [1, 2, 3], "heads": [1, 2, 4],
             "mlp_ratios": [1.0, 2.0, 3.0]}
ROW_ARGS = ("teacher", "steps", "lr", "subspaces", "candidates", "finetune", "finetune_lr", "distill_lr", "label_weight")
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}


def base_job(task: str) -> dict[str, Any]:
    """The job everything of a task shares; the LM's is lm.yaml's (its data, space and momentum)."""
    if task == "lm":
        return lm_job_data()
    return {"space": VIT_SPACE, "data": {"dataset": "digits", "batch_size": 32},
            "eval": {"calibration_batches": 1, "random_subnets": 1}, "launch": {"threads": 1}}


def job(task: str, run_dir: Path, seed: int, steps: int, strategy: dict[str, Any], lr: float) -> JobConfig:
    data = base_job(task)
    recipe = data.get("optim", {"steps": 20, "warmup_steps": 1})
    optim = {**data.get("optim", {}), "steps": steps, "lr": lr, "warmup_steps": warmup_share(recipe, steps)}
    data.update(run_dir=str(run_dir), seed=seed, strategy=strategy, optim=optim,
                checkpoint_every_steps=steps, log_every_steps=max(1, steps // 4))
    return config_from_dict(data)


def is_lm(args: argparse.Namespace) -> bool:
    return bool(args.task == "lm")


def teacher_weights(sandwich: Any, root: Path, args: argparse.Namespace) -> str:
    """The largest architecture trained alone with the sandwich run's recipe, saved as a supernet's weights."""
    path = root / f"teacher-standalone-{args.steps}.pt"
    if not path.is_file():
        space = sandwich.space
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sandwich.config.seed)
            result_model = space.build_standalone(space.largest())
            supernet = space.build_supernet()
        result = train_standalone(sandwich.config, space.largest(), sandwich.data, init=result_model)
        path.with_suffix(".score").write_text(f"{standalone_test_score(result, args)}\n")
        missing, unexpected = supernet.load_state_dict(result_model.state_dict(), strict=False)
        assert not unexpected and not [k for k in missing if k in dict(supernet.named_parameters())], (missing, unexpected)
        torch.save(supernet.state_dict(), path)
    return str(path)


def standalone_test_score(result: Any, args: argparse.Namespace) -> float:
    """A stand-alone training's test accuracy (ViT) or test loss in nats per byte (LM)."""
    return float(result.nll["test"] if is_lm(args) else result.accuracy["test"])


def teacher_score(sandwich: Any, teacher_file: str, args: argparse.Namespace) -> float:
    """The teacher's test score (accuracy, or loss in nats on the LM)."""
    if args.teacher == "standalone":
        return float(Path(teacher_file).with_suffix(".score").read_text())
    result = evaluate_arch(sandwich, sandwich.space.largest(), ("test",))
    return result.loss_nats["test"] if is_lm(args) else result.accuracy["test"]


def distill_loss(strategy: AutoDistilStrategy, student: torch.nn.Module, teacher: torch.nn.Module, teacher_arch: Arch,
                 arch: Arch, x: torch.Tensor) -> float:
    """The strategy's own attention + value-relation KL (its heads, causal on the LM) on held-out inputs."""
    with torch.no_grad():
        attention, value = self_attention_kl(last_layer_qkv(teacher, x, teacher_arch), last_layer_qkv(student, x, arch),
                                             strategy.params.relation_heads, strategy.causal)  # type: ignore[attr-defined]
    return float(attention + value)


def finetuned_score(trained: Any, source: torch.nn.Module, arch: Arch, args: argparse.Namespace, seed: int) -> float:
    """Test accuracy (ViT) or test loss in nats per byte (LM) after fine-tuning ``arch`` from ``source``'s weights."""
    optim = trained.config.optim.model_copy(update={"steps": args.finetune, "warmup_steps": max(1, args.finetune // 10), "lr": args.finetune_lr})
    recipe = trained.config.model_copy(update={"seed": seed, "optim": optim})
    return standalone_test_score(train_standalone(recipe, arch, trained.data, init=extract(source, trained.space, arch)), args)


def inherited_val_score(trained: Any, arch: Arch, lm: bool) -> float:
    """Higher is better: validation accuracy, or minus the validation loss on the LM."""
    result = evaluate_arch(trained, arch, ("val",))
    return -result.loss_nats["val"] if lm else result.accuracy["val"]


def rows_file(root: Path, args: argparse.Namespace) -> Path:
    """Where a seed's finished rows are kept, named by every argument they depend on."""
    key = "-".join(f"{name}{getattr(args, name)}" for name in ROW_ARGS)
    return root / f"rows-{key}.json"


def one_seed(seed: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    root = Path(args.workdir) / args.task / f"seed{seed}"
    cached = rows_file(root, args)
    if cached.is_file():
        return list(json.loads(cached.read_text()))
    sandwich, _ = trained_run(job(args.task, root / f"sandwich-lr{args.lr:g}", seed, args.steps, {"name": "sandwich", "params": {"num_random": 1}},
                               args.lr))
    teacher_file = teacher_weights(sandwich, root, args) if args.teacher == "standalone" else \
        str(Path(latest_checkpoint(str(sandwich.config.run_dir))) / "supernet.pt")
    teacher = load_teacher(sandwich.space, teacher_file).eval()
    teacher_test = teacher_score(sandwich, teacher_file, args)
    x_val = sandwich.data.val.images[:256]
    rows = []
    for i in range(args.subspaces):
        params = {"subspaces": args.subspaces, "subspace": i, "teacher_weights": teacher_file, "label_weight": args.label_weight}
        ad, _ = trained_run(job(args.task, root / f"autodistil-{i}-labels{args.label_weight:g}-lr{args.distill_lr:g}-{args.teacher}", seed,
                             args.steps // args.subspaces, {"name": "autodistil", "params": params}, args.distill_lr))
        strategy = job_strategy(ad.config, ad.space)
        assert isinstance(strategy, AutoDistilStrategy)
        rng = np.random.default_rng([seed, i])
        candidates = [strategy.sample_subspace(rng) for _ in range(args.candidates)]
        student = ad.model.module_for(candidates[0])
        proxy = [distill_loss(strategy, student, teacher, ad.space.largest(), a, x_val) for a in candidates]
        inherited = [inherited_val_score(sandwich, a, is_lm(args)) for a in candidates]
        ad_pick, sw_pick = candidates[int(np.argmin(proxy))], candidates[int(np.argmax(inherited))]
        rows.append({
            "seed": seed, "subspace": i, "teacher": teacher_test,
            "autodistil_arch": arch_to_json(ad_pick), "autodistil_params": ad.space.params(ad_pick),
            "sandwich_arch": arch_to_json(sw_pick), "sandwich_params": ad.space.params(sw_pick),
            "autodistil": finetuned_score(ad, student, ad_pick, args, seed),
            "sandwich_same_arch": finetuned_score(sandwich, sandwich.model, ad_pick, args, seed),
            "sandwich_own_pick": finetuned_score(sandwich, sandwich.model, sw_pick, args, seed),
            # the sandwich teacher is the sandwich supernet: that column is "sandwich, same arch"
            "teacher_slice": finetuned_score(sandwich, teacher, ad_pick, args, seed) if args.teacher == "standalone" else None,
        })
        print(rows[-1], flush=True)
    cached.write_text(json.dumps(rows, default=float))
    return rows


def mean_interval(values: list[float], scale: float, digits: int) -> str:
    """Mean ± t-based 95 % half-width over the finite values; a diverged (NaN) seed is left out and counted."""
    finite = [float(v) for v in values if np.isfinite(v)]
    dropped = f" ({len(finite)} of {len(values)} seeds finite)" if len(finite) < len(values) else ""
    if not finite:
        return "NaN"
    mean = statistics.fmean(finite)
    if len(finite) < 2:
        return f"{scale * mean:.{digits}f}{dropped}"
    half = T975[len(finite) - 1] * statistics.stdev(finite) / len(finite) ** 0.5
    return f"{scale * mean:.{digits}f} ± {scale * half:.{digits}f}{dropped}"


def render(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lm = is_lm(args)
    scale, digits = (1.0, 4) if lm else (100.0, 2)
    title = "language model on 'fortunes', gpt space" if lm else "digits, ViT space"
    metric = "Test loss in nats per byte (lower is better)" if lm else "Test accuracy (%) on the digits test split"
    lines = [
        f"# AutoDistil vs one sandwich supernet ({title})", "",
        f"Seeds {args.seeds}; sandwich {args.steps} steps at lr {args.lr:g}; teacher: {args.teacher}; {args.subspaces} sub-spaces x {args.steps // args.subspaces} "
        f"steps of attention distillation at lr {args.distill_lr:g} (label weight {args.label_weight:g}; 0 is task-agnostic); "
        f"{args.candidates} candidates per sub-space; every pick fine-tuned {args.finetune} steps on labels at lr {args.finetune_lr:g}. {metric}.", "",
        "| seed | sub-space | teacher | AutoDistil pick (params) | AutoDistil | sandwich, same arch | sandwich's own pick (params) | sandwich pick |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['seed']} | {r['subspace']} | {scale * r['teacher']:.{digits}f} | {r['autodistil_params']:,} | {scale * r['autodistil']:.{digits}f} | "
                     f"{scale * r['sandwich_same_arch']:.{digits}f} | {r['sandwich_params']:,} | {scale * r['sandwich_own_pick']:.{digits}f} |")
    sliced = all(r.get("teacher_slice") is not None for r in rows)
    head = "| sub-space | AutoDistil | sandwich, same arch | paired difference | sandwich's own pick |"
    if sliced:
        head += " teacher's slice, same arch | AutoDistil − teacher's slice |"
    lines += ["", head, "|" + "---|" * (head.count("|") - 1)]
    for i in range(args.subspaces):
        sub = [r for r in rows if r["subspace"] == i]
        cells = [[r["autodistil"] for r in sub], [r["sandwich_same_arch"] for r in sub],
                 [r["autodistil"] - r["sandwich_same_arch"] for r in sub], [r["sandwich_own_pick"] for r in sub]]
        if sliced:
            cells += [[r["teacher_slice"] for r in sub], [r["autodistil"] - r["teacher_slice"] for r in sub]]
        lines.append(f"| {i} | " + " | ".join(mean_interval(c, scale, digits) for c in cells) + " |")
    lines += ["", "Intervals: mean ± t-based 95 % half-width over seeds.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("vit", "lm"), default="vit")
    parser.add_argument("--teacher", choices=("sandwich", "standalone"), default="sandwich")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--lr", type=float, default=0.1, help="the sandwich run's learning rate (lm.yaml's is 0.3)")
    parser.add_argument("--subspaces", type=int, default=2)
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--finetune", type=int, default=150)
    parser.add_argument("--finetune-lr", type=float, default=0.1)
    parser.add_argument("--distill-lr", type=float, default=0.1, help="the AutoDistil runs' learning rate")
    parser.add_argument("--label-weight", type=float, default=0.0, help="AutoDistil students' cross-entropy weight (0: task-agnostic)")
    parser.add_argument("--name", default="autodistil", help="results file name under benchmarks/results/")
    parser.add_argument("--workdir", default="runs/autodistil-bench")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [row for seed in (int(s) for s in args.seeds.split(",")) for row in one_seed(seed, args)]
    write_results(args.name, {"args": vars(args), "rows": rows}, render(rows, args))


if __name__ == "__main__":
    main()
