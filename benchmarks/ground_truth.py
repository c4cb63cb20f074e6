"""The ranking ground truth: a fixed set of subnets, each trained alone from scratch over several seeds.

What a supernet's subnet ranking is measured against. It is expensive (hours of CPU for the
Fashion-MNIST reference space), so it is built to be spread over many runs: every finished
(subnet, seed) is one Parquet file in the cache folder (per-image test correctness and NLL
included, for bootstrapping), written the moment it finishes and committed as the cache grows;
a run trains only what the cache lacks, two at a time (one process per core, one torch thread
each), and stops starting new ones when its time budget is spent. Seed 0 of every subnet comes
before seed 1 of any, so a partial cache already ranks every subnet once.

The report gives each subnet's test accuracy per seed and the ground truth's own noise: the
spread between seeds, and Kendall τ between the seed-0 and seed-1 rankings, the ceiling any
supernet estimate can reach against it.

    python benchmarks/ground_truth.py [--config orchestrator/configs/fashion-mnist-mbconv.yaml]
        [--subnets 24] [--seeds 2] [--steps 2400] [--budget-minutes 60] [--workers 2]
        [--cache benchmarks/results/ground_truth] [--roles smallest,median,largest] [--name ground_truth]

``--steps 500 --seeds 1 --roles smallest,median,largest --name ground_truth_500`` trains the same
subnets with a shorter recipe into the same cache (keys differ by steps): the stand-alone side of
a learning curve.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import kendalltau

from _common import RESULTS, write_results
from nasfleet.orchestrator.config import JobConfig, load_config
from nasfleet.orchestrator.data import check_data
from nasfleet.orchestrator.train import job_space
from nasfleet.research.comparison import fixed_subnets
from nasfleet.research.standalone import (
    StandaloneCache,
    StandaloneResult,
    standalone_key,
    standalone_recipe,
    train_standalone,
)
from nasfleet.orchestrator.reference import REFERENCE_FOLDER, reference_file_name
from nasfleet.supernet import Arch, arch_to_dict

REFERENCE = Path(__file__).resolve().parents[1] / "orchestrator" / "configs" / "fashion-mnist-mbconv.yaml"
SHIPPED = Path(__file__).resolve().parents[1] / "orchestrator" / REFERENCE_FOLDER
REFERENCE_ROLES = ("smallest", "median", "largest")
"""The subnets whose stand-alone accuracy ships with nasfleet, for the demo to compare with."""


def _train(config: JobConfig, arch: Arch) -> dict[str, Any]:
    """One stand-alone run, in a worker process; its row goes back to the parent, which writes it."""
    return train_standalone(config, arch).row()


def build(
    config: JobConfig, subnets: list[tuple[str, Arch]], seeds: int, steps: int, cache: StandaloneCache,
    budget_s: float, workers: int,
) -> int:
    """Train what ``cache`` lacks, ``workers`` at a time, until done or ``budget_s`` has passed; returns how many."""
    space = job_space(config)
    known = cache.lookup()
    todo = [
        (standalone_recipe(config, steps, seed), arch)
        for seed in range(seeds)
        for _, arch in subnets
        if standalone_key(standalone_recipe(config, steps, seed), space, arch) not in known
    ]
    deadline = time.monotonic() + budget_s
    trained = 0
    context = multiprocessing.get_context("spawn")  # a clean interpreter per worker: no forked torch threads
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        running: set[Future[dict[str, Any]]] = set()
        while todo or running:
            while todo and len(running) < workers and time.monotonic() < deadline:
                job, arch = todo.pop(0)
                running.add(pool.submit(_train, job, arch))
            if not running:
                break  # the budget is spent: what is left waits for the next run
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                row = future.result()
                cache.append_rows([row])
                trained += 1
                print(f"trained {trained}: {row['arch_desc']} seed {row['seed']}, {row['train_wall_s']:.0f} s", flush=True)
    return trained


def report(
    config: JobConfig, subnets: list[tuple[str, Arch]], seeds: int, steps: int, cache: StandaloneCache
) -> tuple[dict[str, Any], str]:
    space = job_space(config)
    known = cache.lookup()
    rows, table = [], []
    for role, arch in subnets:
        found: dict[int, StandaloneResult] = {}
        for seed in range(seeds):
            result = known.get(standalone_key(standalone_recipe(config, steps, seed), space, arch))
            if result is not None:
                found[seed] = result
        accs = {seed: r.accuracy["test"] for seed, r in found.items()}
        rows.append({"role": role, "arch": arch.describe(), "mflops": space.flops(arch) / 1e6,
                     "params": space.params(arch), "test_accuracy": accs,
                     "train_wall_s": {seed: r.train_wall_s for seed, r in found.items()}})
        cells = [f"{100 * accs[s]:.2f}" if s in accs else "–" for s in range(seeds)]
        table.append(f"| {role} | `{arch.describe()}` | {space.flops(arch) / 1e6:.2f} | " + " | ".join(cells) + " |")
    done = sum(len(r["test_accuracy"]) for r in rows)
    both = [r for r in rows if len(r["test_accuracy"]) >= 2]
    gaps = [abs(r["test_accuracy"][0] - r["test_accuracy"][1]) for r in both]
    tau = None
    if len(both) >= 3:
        statistic = float(kendalltau([r["test_accuracy"][0] for r in both], [r["test_accuracy"][1] for r in both]).statistic)
        tau = None if np.isnan(statistic) else statistic  # NaN: a seed ranked every subnet the same
    summary = {"done": done, "total": len(subnets) * seeds, "subnets_with_two_seeds": len(both),
               "mean_seed_gap": float(np.mean(gaps)) if gaps else None, "seed_tau": tau}
    lines = [
        f"# Ground truth: {len(subnets)} subnets trained alone, {seeds} seeds, {steps} steps "
        f"(batch {config.data.batch_size}, {config.data.dataset})",
        "",
        f"{done} of {len(subnets) * seeds} runs done.",
    ]
    if gaps:
        lines.append(
            f"Seed-to-seed noise over {len(both)} subnets: mean |Δ test accuracy| {100 * np.mean(gaps):.2f} points"
            + (f", Kendall τ between the seeds' rankings {tau:.3f}." if tau is not None else ".")
        )
    lines += ["", "| subnet | arch | MFLOPs | " + " | ".join(f"seed {s} test %" for s in range(seeds)) + " |",
              "|---|---|---:|" + "---:|" * seeds, *table]
    return {"steps": steps, "seeds": seeds, "summary": summary, "rows": rows}, "\n".join(lines) + "\n"


def write_shipped_reference(config: JobConfig, subnets: list[tuple[str, Arch]], steps: int, payload: dict[str, Any]) -> None:
    """orchestrator/configs/reference/<data set>.json: the reference subnets' mean stand-alone accuracy."""
    archs = dict(subnets)
    rows = [
        {"role": row["role"], "arch": arch_to_dict(archs[row["role"]]),
         "test_accuracy": float(np.mean(list(row["test_accuracy"].values()))),
         "seeds": len(row["test_accuracy"]), "steps": steps}
        for row in payload["rows"] if row["role"] in REFERENCE_ROLES and row["test_accuracy"]
    ]
    SHIPPED.mkdir(parents=True, exist_ok=True)
    document = {"source": "benchmarks/ground_truth.py", "dataset": config.data.dataset, "subnets": rows}
    (SHIPPED / reference_file_name(config.data.dataset)).write_text(json.dumps(document, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REFERENCE)
    parser.add_argument("--subnets", type=int, default=24)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2400)
    parser.add_argument("--budget-minutes", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=RESULTS / "ground_truth")
    parser.add_argument("--name", default="ground_truth", help="Results file stem in benchmarks/results/.")
    parser.add_argument("--roles", default=None,
                        help="comma-separated roles of the fixed set to train (e.g. smallest,median,largest); default all")
    args = parser.parse_args()

    config = load_config(args.config)
    check_data(config.data)  # fetch once here, not in every worker
    subnets = fixed_subnets(job_space(config), args.subnets, seed=0)
    if args.roles:
        wanted = [r.strip() for r in args.roles.split(",") if r.strip()]
        unknown = sorted(set(wanted) - {role for role, _ in subnets})
        if unknown:
            raise SystemExit(f"error: unknown role {unknown[0]!r} (the fixed set has {', '.join(r for r, _ in subnets)})")
        subnets = [(role, arch) for role, arch in subnets if role in wanted]
    cache = StandaloneCache(args.cache)
    trained = build(config, subnets, args.seeds, args.steps, cache, 60 * args.budget_minutes, args.workers)
    payload, markdown = report(config, subnets, args.seeds, args.steps, cache)
    write_results(args.name, {"trained_this_run": trained, **payload}, markdown)
    if args.config.resolve() == REFERENCE and args.subnets == 24 and args.steps == 2400 and not args.roles:
        write_shipped_reference(config, subnets, args.steps, payload)


if __name__ == "__main__":
    main()
