"""MixtureGrowth against growing with random weights and against training the target from scratch.

The task is the Fashion-MNIST demo job (orchestrator/configs/demo-fashion-mnist.yaml: its space,
recipe and batch of 64). The target is the space's largest network; the small network is the
target at every stage's narrowest width and every block's smallest expansion (the strategy's
default). Per seed, through the normal trainer and ``nasfleet grow``'s own functions:

- ``small``: ``mixturegrowth`` phase small for ``--small-steps`` (templates ``--templates``);
- ``grow (templates)``: grown from it, new blocks new combinations of the trained templates,
  trained for ``--grown-steps``;
- ``grow (random)``: the same, new weights fresh (the ablation);
- ``scratch (same steps)``: the target, same parametrisation, from its seeded initialisation for
  small + grown steps;
- ``scratch (same compute)``: the same for grown steps plus the small steps scaled by the small
  network's share of the target's FLOPs (the growing arms' training compute).

``--small-depths 2,2,2,2`` makes the small network shallower too (each stage cut to that depth):
growth in width and depth.

Each network is scored on the test split with batch norm re-estimated on 8 training batches, right
after growth (no step of the grown phase) and after training. Training compute is
3 × forward FLOPs × batch × steps.

    OMP_NUM_THREADS=1 python benchmarks/mixturegrowth.py [--small-steps 300] [--grown-steps 150] \\
        [--seeds 0,1,2] [--templates 4] [--small-depths D,D,...] [--workdir runs/mixturegrowth-bench] [--name mixturegrowth]

Finished runs in ``--workdir`` are reused, so a rerun only re-scores.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
from pathlib import Path
from typing import Any

import torch

from _common import WALL_TIME_FILE, shortened_job, trained_run, write_results
from nasfleet.orchestrator.config import JobConfig, load_config
from nasfleet.orchestrator.evaluate import evaluate_arch, load_trained
from nasfleet.orchestrator.evaluate.trained import TrainedSupernet
from nasfleet.orchestrator.growth import grown_job, write_grown_weights
from nasfleet.orchestrator.train import job_strategy
from nasfleet.orchestrator.train.setup import job_space, load_initial_weights
from nasfleet.strategies.mixturegrowth import narrowest
from nasfleet.supernet import arch_to_json
from nasfleet.supernet.arch import ConvArch, StageChoice
from nasfleet.supernet.mbconv import MBConvSpace

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "orchestrator/configs/demo-fashion-mnist.yaml"
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}
FORWARD_BACKWARD = 3


def job(base: JobConfig, run_dir: Path, seed: int, steps: int, params: dict[str, Any]) -> JobConfig:
    smoothing = base.strategy.params.get("label_smoothing", 0.0)
    return shortened_job(base, run_dir, seed, steps, "mixturegrowth", {"label_smoothing": smoothing, **params}, search=None)


def grown(small: TrainedSupernet, run_dir: Path, steps: int, new_weights: str) -> JobConfig:
    """What ``nasfleet grow`` does before it trains: the grown job and its starting weights (an unfinished run starts over)."""
    config = grown_job(small.config, str(run_dir), new_weights, None, [f"optim.steps={steps}"])
    if not (Path(config.run_dir) / WALL_TIME_FILE).is_file():
        shutil.rmtree(config.run_dir, ignore_errors=True)
        write_grown_weights(small, config)
    return config


def test_accuracy(run: TrainedSupernet, arch: Any) -> float:
    return evaluate_arch(run, arch, ("test",)).accuracy["test"]


def at_growth(config: JobConfig, small: TrainedSupernet) -> float:
    """The grown network's test accuracy from its starting weights, before any grown-phase step."""
    strategy = job_strategy(config, small.space)
    model = strategy.build_model()
    assert config.init_weights is not None
    load_initial_weights(model, config.init_weights)
    start = TrainedSupernet(config, small.data, small.space, model.eval(), 0)
    return test_accuracy(start, strategy.plan.target)


def gflops(run: TrainedSupernet, arch: Any, steps: int) -> float:
    return FORWARD_BACKWARD * run.space.flops(arch) * run.config.data.batch_size * steps / 1e9


def shape_params(base: JobConfig, args: argparse.Namespace) -> dict[str, Any]:
    """The strategy parameters every arm shares: the templates, and the small network when it is shallower."""
    if args.small_depths is None:
        return {"templates": args.templates}
    space = job_space(base)
    assert isinstance(space, MBConvSpace)
    narrow = narrowest(space, space.largest())
    stages = tuple(StageChoice(stage.width, stage.blocks[:depth]) for stage, depth in zip(narrow.stages, args.small_depths))
    return {"templates": args.templates, "small_arch": arch_to_json(ConvArch(stages, space=space.name))}


def one_seed(base: JobConfig, seed: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    root = args.workdir / f"s{seed}"
    shared = shape_params(base, args)
    small, small_s = trained_run(job(base, root / "small", seed, args.small_steps, shared))
    plan = job_strategy(small.config, small.space).plan
    small_gflops = gflops(small, plan.small, args.small_steps)
    rows = [{"seed": seed, "method": "small", "arch": "small", "steps": args.small_steps, "train_gflops": small_gflops,
             "wall_s": small_s, "at_growth": None, "test": test_accuracy(small, plan.small)}]
    for mode in ("templates", "random"):
        config = grown(small, root / f"grow-{mode}", args.grown_steps, mode)
        start = at_growth(config, small)
        run, wall_s = trained_run(config)
        rows.append({"seed": seed, "method": f"grow ({mode})", "arch": "target", "steps": args.grown_steps,
                     "train_gflops": small_gflops + gflops(run, plan.target, args.grown_steps),
                     "wall_s": small_s + wall_s, "at_growth": start, "test": test_accuracy(run, plan.target)})
        print(rows[-1], flush=True)
    share = small.space.flops(plan.small) / small.space.flops(plan.target)
    for label, steps in (("same steps", args.small_steps + args.grown_steps),
                         ("same compute", args.grown_steps + round(args.small_steps * share))):
        params = {**shared, "phase": "grown"}
        run, wall_s = trained_run(job(base, root / f"scratch-{label.replace(' ', '-')}", seed, steps, params))
        rows.append({"seed": seed, "method": f"scratch ({label})", "arch": "target", "steps": steps,
                     "train_gflops": gflops(run, plan.target, steps), "wall_s": wall_s, "at_growth": None,
                     "test": test_accuracy(run, plan.target)})
        print(rows[-1], flush=True)
    return rows


def interval(values: list[float]) -> str:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{100 * mean:+.2f}" if min(values) < 0 else f"{100 * mean:.2f}"
    half = T975.get(len(values) - 1, 2.0) * statistics.stdev(values) / len(values) ** 0.5
    return f"{100 * mean:.2f} ± {100 * half:.2f}"


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace, flops: dict[str, float]) -> str:
    lines = [
        "# MixtureGrowth vs random growth vs scratch (Fashion-MNIST demo space)",
        "",
        f"Small network {flops['small']:.2f} MFLOPs (stage depths {args.small_depths or 'as the target'}), "
        f"target (largest) {flops['target']:.2f} MFLOPs; "
        f"{args.templates} templates per layer; small phase {args.small_steps} steps, grown phase {args.grown_steps} steps; "
        "batch 64, the demo recipe (SGD 0.1, cosine, label smoothing 0.1), one process, 1 thread. "
        "Test accuracy in %, BN re-estimated on 8 training batches.",
        "",
        "| seed | method | steps | train GFLOPs | wall s | test at growth | test |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        start = "" if r["at_growth"] is None else f"{100 * r['at_growth']:.2f}"
        lines.append(f"| {r['seed']} | {r['method']} | {r['steps']} | {r['train_gflops']:.1f} | {r['wall_s']:.0f} | "
                     f"{start} | {100 * r['test']:.2f} |")
    lines += ["", "| method | train GFLOPs | test at growth | test |", "|---|---|---|---|"]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        start = "" if mine[0]["at_growth"] is None else interval([r["at_growth"] for r in mine])
        lines.append(f"| {method} | {statistics.fmean(r['train_gflops'] for r in mine):.1f} | {start} | "
                     f"{interval([r['test'] for r in mine])} |")
    lines += ["", "Paired differences of the final test accuracy (points, per seed, then mean ± 95 % t-interval):", ""]
    by = {(r["seed"], r["method"]): r["test"] for r in rows}
    for other in ("grow (random)", "scratch (same steps)", "scratch (same compute)"):
        diffs = [by[(s, "grow (templates)")] - by[(s, other)] for s in args.seeds]
        each = ", ".join(f"{100 * d:+.2f}" for d in diffs)
        lines.append(f"- grow (templates) − {other}: {each} → {interval(diffs)}")
    lines += ["", f"Seeds {args.seeds}; 95 % t-intervals over seeds."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small-steps", type=int, default=300)
    parser.add_argument("--grown-steps", type=int, default=150)
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    parser.add_argument("--templates", type=int, default=4)
    parser.add_argument("--small-depths", type=lambda s: [int(x) for x in s.split(",")], default=None,
                        help="each stage's depth in the small network (default: the target's)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs/mixturegrowth-bench")
    parser.add_argument("--name", default="mixturegrowth", help="results file name under benchmarks/results/")
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = load_config(BASE)
    rows = [row for seed in args.seeds for row in one_seed(base, seed, args)]
    probe = job(base, args.workdir / "probe", 0, 1, shape_params(base, args))
    space = load_trained(args.workdir / f"s{args.seeds[0]}" / "small").space
    plan = job_strategy(probe, space).plan
    flops = {"small": space.flops(plan.small) / 1e6, "target": space.flops(plan.target) / 1e6}
    payload = {"args": {k: str(v) for k, v in vars(args).items()}, "flops_m": flops, "rows": rows}
    write_results(args.name, payload, markdown(rows, args, flops))


if __name__ == "__main__":
    main()
