"""TangleNAS against evolutionary search on a sandwich supernet, at the same training steps and batch.

The task is the Fashion-MNIST demo job (orchestrator/configs/demo-fashion-mnist.yaml: its space,
recipe and batch of 64), cut to ``--steps`` optimizer steps. Per seed, two arms through the normal
trainer:

- ``tanglenas``: weights trained on the superposition, one α step (Adam, ``--arch-lr``) before
  every weight step on a batch of the held-out half of the training split; the found subnet is
  argmax α (no search);
- ``sandwich + evolution``: the job's sandwich supernet (largest, smallest and a random subnet a
  step, in-place distillation), then regularised evolution (the ``evolution`` searcher) for
  ``--evaluations`` subnets on inherited validation accuracy (BN re-estimated, a seeded subset of
  ``--val-images`` images); the found subnet is the best one it evaluated.

Per weight step, tanglenas runs two passes of the largest network's cost (its weight step and its
α step), sandwich three passes (largest, smallest, random): the same order of compute, and the
table states both arms' wall times. Both found subnets are scored the same two ways on the test
split: *inherited* (the arm's own supernet weights, BN re-estimated on 8 training batches: what a
one-shot method hands over without retraining), and *stand-alone* (trained from scratch with the
job's recipe for ``--standalone-steps`` steps, same seed for both arms: the quality of the
architecture itself, which removes the difference between the two supernets' weights).

    OMP_NUM_THREADS=1 python benchmarks/tanglenas.py [--steps 200] [--seeds 0,1] [--evaluations 24] \\
        [--standalone-steps 300] [--val-images 2000] [--arch-lr 0.03] [--workdir runs/tanglenas-bench] [--name tanglenas]

Finished runs in ``--workdir`` are reused (resume is exact), so a rerun only re-scores.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from _common import shortened_job, trained_run, write_results
from nasfleet.orchestrator.config import JobConfig, load_config
from nasfleet.orchestrator.evaluate import evaluate_arch
from nasfleet.orchestrator.subnet_search.costs import CostSources, cost_function
from nasfleet.research.standalone import standalone_recipe, train_standalone
from nasfleet.strategies.searchers import Evaluated, SearchProblem, build_searcher
from nasfleet.strategies.tanglenas import derived_arch
from nasfleet.supernet import Arch

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "orchestrator/configs/demo-fashion-mnist.yaml"
VAL_SEED = 7
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}


def evolve(run: Any, evaluations: int, seed: int, val_images: int) -> tuple[Arch, float, float]:
    """The best subnet regularised evolution finds on inherited validation accuracy; its accuracy and the search's wall time."""
    scored = run.with_val_subset(val_images, VAL_SEED)
    space = scored.space
    # The searchers need a cost objective: MFLOPs, as the demo's search; the most accurate subnet is kept.
    problem = SearchProblem(space, ("mflops",), (), cost_function(space, ["mflops"], CostSources()))
    algorithm = build_searcher("evolution", {}, problem, seed)
    started = time.perf_counter()
    batches = scored.calibration_batches()
    for _ in range(evaluations):
        arch = algorithm.ask()
        accuracy = evaluate_arch(scored, arch, ("val",), calibration=batches).accuracy["val"]
        algorithm.tell(Evaluated(arch, accuracy, problem.costs(arch)))
    best = max(algorithm.history, key=lambda e: e.accuracy)
    return best.arch, best.accuracy, time.perf_counter() - started


def score(run: Any, config: JobConfig, arch: Arch, standalone_steps: int) -> dict[str, Any]:
    inherited = evaluate_arch(run, arch, ("test",))
    recipe = standalone_recipe(config, standalone_steps, config.seed)
    alone = train_standalone(recipe, arch, run.data)
    return {
        "arch": arch.describe(), "mflops": inherited.mflops, "params": inherited.params,
        "inherited_test": inherited.accuracy["test"], "standalone_test": alone.accuracy["test"],
    }


def interval(values: list[float]) -> str:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{100 * mean:.2f}"
    half = T975.get(len(values) - 1, 2.0) * statistics.stdev(values) / len(values) ** 0.5
    return f"{100 * mean:.2f} ± {100 * half:.2f}"


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        "# TangleNAS vs evolutionary search on a sandwich supernet (Fashion-MNIST demo space)",
        "",
        f"{args.steps} training steps, batch 64, one process (1 thread); tanglenas arch_lr {args.arch_lr}, "
        f"arch_holdout 0.5; evolution: {args.evaluations} subnets on {args.val_images} validation images; "
        f"stand-alone scoring: {args.standalone_steps} steps from scratch with the job's recipe. Test accuracy in %.",
        "",
        "| seed | method | found subnet | MFLOPs | inherited test | stand-alone test | train s | search s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['seed']} | {r['method']} | `{r['arch']}` | {r['mflops']:.2f} | {100 * r['inherited_test']:.2f} | "
            f"{100 * r['standalone_test']:.2f} | {r['train_s']:.0f} | {r['search_s']:.0f} |"
        )
    lines += ["", "| method | MFLOPs | inherited test | stand-alone test |", "|---|---|---|---|"]
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        mflops = statistics.fmean(r["mflops"] for r in mine)
        lines.append(
            f"| {method} | {mflops:.2f} | {interval([r['inherited_test'] for r in mine])} | "
            f"{interval([r['standalone_test'] for r in mine])} |"
        )
    lines += ["", f"Means over {len(args.seeds)} seeds with 95 % t-intervals (seeds {args.seeds}); per-seed values above."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1])
    parser.add_argument("--evaluations", type=int, default=24)
    parser.add_argument("--standalone-steps", type=int, default=300)
    parser.add_argument("--val-images", type=int, default=2000)
    parser.add_argument("--arch-lr", type=float, default=0.03)
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs/tanglenas-bench")
    parser.add_argument("--name", default="tanglenas", help="results file name under benchmarks/results/")
    args = parser.parse_args()

    base = load_config(BASE)
    smoothing = base.strategy.params.get("label_smoothing", 0.0)
    rows = []
    for seed in args.seeds:
        tangle_cfg = shortened_job(base, args.workdir / f"tanglenas-s{seed}", seed, args.steps, "tanglenas",
                         {"arch_lr": args.arch_lr, "label_smoothing": smoothing})
        tangle, tangle_s = trained_run(tangle_cfg)
        found = derived_arch(tangle.model)
        rows.append({"seed": seed, "method": "tanglenas", "train_s": tangle_s, "search_s": 0.0,
                     **score(tangle, tangle_cfg, found, args.standalone_steps)})
        print(rows[-1], flush=True)
        sandwich_cfg = shortened_job(base, args.workdir / f"sandwich-s{seed}", seed, args.steps, "sandwich", dict(base.strategy.params))
        sandwich, sandwich_s = trained_run(sandwich_cfg)
        best, _, search_s = evolve(sandwich, args.evaluations, seed, args.val_images)
        rows.append({"seed": seed, "method": "sandwich + evolution", "train_s": sandwich_s, "search_s": search_s,
                     **score(sandwich, sandwich_cfg, best, args.standalone_steps)})
        print(rows[-1], flush=True)
    write_results(args.name, {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, markdown(rows, args))


if __name__ == "__main__":
    main()
