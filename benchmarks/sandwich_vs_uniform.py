"""Sandwich (BigNAS) vs uniform (SPOS) on the reference task, at the same steps and at the same compute.

Three trainings of the reference supernet (orchestrator/configs/fashion-mnist-mbconv.yaml), each
over several seeds, one process per core:

- ``sandwich``: the reference strategy, ``2 + num_random`` subnet passes a step;
- ``uniform, same steps``: one random subnet a step, as many optimizer steps;
- ``uniform, same passes``: one random subnet a step, as many subnet passes as sandwich
  (``2 + num_random`` times the steps).

Each run is trained in stages (resume is exact, so this is the same run as one straight through)
and, after every stage, the smallest, the median-MFLOPs and the largest subnet of the ground
truth's fixed set are evaluated on the whole test split (10,000 images, BN recalibrated): the
learning curve. The same three subnets trained alone (benchmarks/ground_truth.py) are shown
beside them where that cache has them. A finished (training, seed) is written to the cache
folder at once and never trained again.

    python benchmarks/sandwich_vs_uniform.py [--steps 1000] [--seeds 3] [--stages 3] [--workers 2]
        [--config orchestrator/configs/fashion-mnist-mbconv.yaml] [--cache benchmarks/results/sandwich_vs_uniform]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import RESULTS, write_results
from ground_truth import REFERENCE
from nasfleet.orchestrator.config import JobConfig, config_yaml, load_config
from nasfleet.orchestrator.data import check_data
from nasfleet.orchestrator.evaluate import evaluate_arch, load_trained
from nasfleet.orchestrator.launch import train_job
from nasfleet.orchestrator.train import job_space
from nasfleet.research.comparison import fixed_subnets, passes_per_step
from nasfleet.research.standalone import StandaloneCache, standalone_key, standalone_recipe
from nasfleet.supernet import Arch

ROLES = ("smallest", "median", "largest")
GROUND_TRUTH_STEPS, GROUND_TRUTH_SUBNETS = 2400, 24  # benchmarks/ground_truth.py's defaults


@dataclass(frozen=True)
class Training:
    label: str
    strategy: str
    params: dict[str, Any]
    steps: int
    passes_per_step: int


def trainings(config: JobConfig, steps: int) -> list[Training]:
    """Sandwich at ``steps``, and uniform at the same steps and at the same subnet passes.

    Sandwich keeps the job's parameters when the job is a sandwich one (the reference is), else its defaults.
    """
    params = dict(config.strategy.params) if config.strategy.name == "sandwich" else {}
    passes = round(passes_per_step("sandwich", params, job_space(config), steps))
    return [
        Training("sandwich", "sandwich", params, steps, passes),
        Training("uniform, same steps", "uniform", {}, steps, 1),
        Training("uniform, same passes", "uniform", {}, steps * passes, 1),
    ]


def stage_ends(steps: int, stages: int) -> list[int]:
    """``stages`` evaluation points, doubling up to ``steps`` (a learning curve on a log axis)."""
    return sorted({max(1, steps // 2**k) for k in range(stages)})


def run_key(config: JobConfig, training: Training, seed: int, stages: int) -> str:
    text = json.dumps([config_yaml(config), training.label, training.steps, seed, stages], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def train_and_evaluate(
    config: JobConfig, training: Training, seed: int, stages: int, subnets: list[tuple[str, Arch]]
) -> dict[str, Any]:
    """One training, in stages, with the three subnets' test accuracy after each (runs in a worker process)."""
    with tempfile.TemporaryDirectory(prefix="nasfleet-svu-") as tmp:
        job = config.model_copy(update={
            "run_dir": str(Path(tmp) / "run"),
            "seed": seed,
            "strategy": config.strategy.model_copy(update={"name": training.strategy, "params": training.params}),
            "optim": config.optim.model_copy(update={"steps": training.steps}),
            "checkpoint_every_steps": training.steps,
        })
        curve, train_s, done = [], 0.0, 0
        for end in stage_ends(training.steps, stages):
            start = time.perf_counter()
            train_job(job, resume=done > 0, until_step=end)
            train_s += time.perf_counter() - start
            done = end
            trained = load_trained(job.run_dir)
            accuracy = {role: evaluate_arch(trained, arch, ("test",)).accuracy["test"] for role, arch in subnets}
            curve.append({"step": end, "subnet_passes": end * training.passes_per_step, "test_accuracy": accuracy})
        test_images = len(trained.data.test)
    return {"training": training.label, "seed": seed, "steps": training.steps, "train_wall_s": train_s,
            "dataset": config.data.dataset, "test_images": test_images, "curve": curve}


def standalone_accuracy(config: JobConfig, subnets: list[tuple[str, Arch]], steps: int) -> dict[str, list[float]]:
    """The subnets' stand-alone test accuracies at a ``steps`` recipe, every seed the ground-truth cache holds."""
    space, known = job_space(config), StandaloneCache(RESULTS / "ground_truth").lookup()
    found: dict[str, list[float]] = {}
    for role, arch in subnets:
        for seed in range(10):
            result = known.get(standalone_key(standalone_recipe(config, steps, seed), space, arch))
            if result is not None:
                found.setdefault(role, []).append(result.accuracy["test"])
    return found


def spread(values: list[float]) -> str:
    """Mean ± sample standard deviation over seeds, in points."""
    mean = 100 * statistics.mean(values)
    if len(values) < 2:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {100 * statistics.stdev(values):.2f}"


def report(
    runs: list[dict[str, Any]], alone: dict[str, list[float]], alone_curve: dict[int, dict[str, list[float]]], steps: int
) -> str:
    labels = list(dict.fromkeys(r["training"] for r in runs))
    seeds = len({r["seed"] for r in runs})
    images = runs[0]["test_images"]
    lines = [
        f"# Sandwich vs uniform on {runs[0]['dataset']}: test accuracy (%), mean ± s.d. over {seeds} seeds",
        "",
        f"Sandwich trains {steps} steps. Each subnet is BN-recalibrated and evaluated on the whole test",
        f"split ({images:,} images; one image is {100 / images:.2g} points).",
        "",
        "| training | steps | subnet passes | smallest | median | largest | train s / run |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label in labels:
        group = [r for r in runs if r["training"] == label]
        last = [r["curve"][-1] for r in group]
        cells = [spread([c["test_accuracy"][role] for c in last]) for role in ROLES]
        wall = statistics.mean(r["train_wall_s"] for r in group)
        lines.append(f"| {label} | {last[0]['step']} | {last[0]['subnet_passes']} | " + " | ".join(cells) + f" | {wall:.0f} |")
    if alone:
        cells = [spread(alone[role]) if role in alone else "–" for role in ROLES]
        counts = sorted({len(v) for v in alone.values()})
        seeds = "/".join(map(str, counts))
        lines.append(f"| trained alone ({GROUND_TRUTH_STEPS} steps, {seeds} seed{'' if counts == [1] else 's'}) | | | "
                     + " | ".join(cells) + " | |")
    lines += ["", "## Learning curve", "", "| training | step | subnet passes | smallest | median | largest |",
              "|---|---:|---:|---:|---:|---:|"]
    for label in labels:
        group = [r for r in runs if r["training"] == label]
        for i, point in enumerate(group[0]["curve"]):
            cells = [spread([r["curve"][i]["test_accuracy"][role] for r in group]) for role in ROLES]
            lines.append(f"| {label} | {point['step']} | {point['subnet_passes']} | " + " | ".join(cells) + " |")
    for step, found in sorted(alone_curve.items()):
        cells = [spread(found[role]) if role in found else "–" for role in ROLES]
        lines.append(f"| trained alone | {step} | {step} | " + " | ".join(cells) + " |")
    if alone_curve:
        lines += ["", "*Trained alone* rows: each subnet trained from scratch with the same recipe at that many steps",
                  "(benchmarks/ground_truth.py --roles smallest,median,largest --steps N); one pass a step."]
    return "\n".join(lines) + "\n"


def build(
    config: JobConfig, subnets: list[tuple[str, Arch]], steps: int, seeds: int, stages: int, cache: Path, workers: int
) -> list[dict[str, Any]]:
    """Every (training, seed): read from ``cache``, or trained ``workers`` at a time and written there as it ends."""
    cache.mkdir(parents=True, exist_ok=True)
    todo, runs = [], []
    for seed in range(seeds):
        for training in trainings(config, steps):
            path = cache / f"{run_key(config, training, seed, stages)}.json"
            if path.is_file():
                runs.append(json.loads(path.read_text()))
            else:
                todo.append((path, training, seed))
    context = multiprocessing.get_context("spawn")  # a clean interpreter per worker: no forked torch threads
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(train_and_evaluate, config, t, seed, stages, subnets): (path, t, seed)
                   for path, t, seed in todo}
        for future in as_completed(futures):  # written as each finishes: a stopped benchmark keeps them
            path, training, seed = futures[future]
            run = future.result()
            path.write_text(json.dumps(run, indent=1) + "\n")
            runs.append(run)
            print(f"done: {training.label} seed {seed}, {run['train_wall_s']:.0f} s", flush=True)
    order = [t.label for t in trainings(config, steps)]
    return sorted(runs, key=lambda r: (order.index(r["training"]), r["seed"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REFERENCE)
    parser.add_argument("--steps", type=int, default=1000, help="sandwich's optimizer steps")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--stages", type=int, default=3, help="evaluation points, doubling up to the end")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=RESULTS / "sandwich_vs_uniform")
    parser.add_argument("--name", default="sandwich_vs_uniform", help="Results file stem in benchmarks/results/.")
    args = parser.parse_args()

    config = load_config(args.config)
    check_data(config.data)  # fetch once here, not in every worker
    chosen = dict(fixed_subnets(job_space(config), GROUND_TRUTH_SUBNETS, seed=0))
    subnets = [(role, chosen[role]) for role in ROLES]
    runs = build(config, subnets, args.steps, args.seeds, args.stages, args.cache, args.workers)
    curve_steps = stage_ends(args.steps, args.stages)
    alone_curve = {n: found for n in curve_steps if (found := standalone_accuracy(config, subnets, n))}
    markdown = report(runs, standalone_accuracy(config, subnets, GROUND_TRUTH_STEPS), alone_curve, args.steps)
    write_results(args.name, {"steps": args.steps, "seeds": args.seeds, "runs": runs}, markdown)


if __name__ == "__main__":
    main()
