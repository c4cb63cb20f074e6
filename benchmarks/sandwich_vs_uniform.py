"""Sandwich (BigNAS) vs uniform (SPOS) training at the same number of optimizer steps.

Both train the demo supernet on the digits set with the demo config (same seed, steps,
learning-rate schedule, batch size); the sandwich rule runs 4 subnets a step, uniform 1,
so the comparison is per optimizer step, as the issue asks (not per subnet-sample).
Reports the test accuracy of the smallest, a few random and the largest subnet, per seed
and averaged over seeds (the digits test split has 270 images: one image is 0.37 points).

    python benchmarks/sandwich_vs_uniform.py [--steps 1200] [--seeds 3] [--workdir runs/bench-strategies]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import shutil
import time
from pathlib import Path

from _common import write_results
from nasfleet.orchestrator.cli.common import demo_config
from nasfleet.orchestrator.config import config_from_dict
from nasfleet.orchestrator.evaluate import evaluate_standard_subnets, load_trained
from nasfleet.orchestrator.launch import train_job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="default: the demo config's steps")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-strategies"))
    args = parser.parse_args()

    base = demo_config()
    steps = args.steps or base.optim.steps
    rows = []
    for seed, (name, params) in itertools.product(range(args.seeds), (("sandwich", base.strategy.params), ("uniform", {}))):
        run_dir = args.workdir / f"{name}-seed{seed}"
        shutil.rmtree(run_dir, ignore_errors=True)
        config = config_from_dict(
            {
                **base.model_dump(),
                "run_dir": str(run_dir),
                "seed": seed,
                "strategy": {"name": name, "params": params},
                "optim": {**base.optim.model_dump(), "steps": steps},
            }
        )
        start = time.perf_counter()
        train_job(config)
        wall_s = time.perf_counter() - start
        results = evaluate_standard_subnets(load_trained(run_dir), ("test",), random_subnets=3, seed=0)
        acc = {r.role: r.accuracy["test"] for r in results}
        rows.append(
            {
                "strategy": name,
                "seed": seed,
                "steps": steps,
                "train_wall_s": wall_s,
                "smallest": acc["smallest"],
                "random_mean": sum(acc[f"random-{i}"] for i in range(3)) / 3,
                "largest": acc["largest"],
            }
        )

    lines = [
        f"# Sandwich vs uniform, demo supernet on digits, {steps} optimizer steps, test accuracy",
        "",
        "| strategy | seed | smallest | 3 random (mean) | largest | train wall s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    means = [
        {
            "strategy": name,
            "seed": "mean",
            **{k: statistics.mean(r[k] for r in rows if r["strategy"] == name) for k in ("smallest", "random_mean", "largest", "train_wall_s")},
        }
        for name in ("sandwich", "uniform")
    ]
    lines += [
        f"| {r['strategy']} | {r['seed']} | {100 * r['smallest']:.2f}% | {100 * r['random_mean']:.2f}% | "
        f"{100 * r['largest']:.2f}% | {r['train_wall_s']:.0f} |"
        for r in sorted(rows, key=lambda r: r["strategy"]) + means
    ]
    write_results("sandwich_vs_uniform", {"rows": rows, "means": means}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
