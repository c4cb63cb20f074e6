"""Subnet ensembles against the best single subnet of the same FLOPs, on a trained supernet.

Scores a seeded candidate pool once (the smallest, the largest and random subnets, each with its
batch norm recalibrated), then for each ensemble size K chooses K members on validation (greedy:
accuracy, ties to diversity), fuses them late (mean of probabilities) and reports them beside the
candidate with the best validation accuracy among those no larger than the ensemble's total
MFLOPs, both judged on the whole test split, with the latencies measured (batch 1, one thread).
Each difference gets a paired bootstrap 95% interval over the test images (the same resampled
images score both). With several ``--run`` (supernets trained with different seeds) each run is
a row of its own: the interval covers the test images, the spread across runs the training seed.

    python benchmarks/subnet_ensembles.py --run runs/fashion-mnist-conv1d --run runs/fashion-mnist-conv1d-seed1 \\
        [--candidates 22] [--sizes 2,3,4] [--val-images 2000] [--name subnet_ensembles_conv1d]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from _common import write_results
from nasfleet.orchestrator.evaluate import load_trained, standard_subnets
from nasfleet.orchestrator.evaluate.ensemble import Candidate, EnsembleReport, candidate, report_ensemble
from nasfleet.research.ranking_stats import bootstrap_indices

RESAMPLES = 2000


def paired_interval(
    report: EnsembleReport, pool: list[Candidate], labels: np.ndarray, seed: int = 0
) -> tuple[float, float]:
    """95% bootstrap interval (over test images) of ensemble − best single test accuracy, in points."""
    by_role = {c.role: c for c in pool}
    fused = np.mean([by_role[m.role].probabilities["test"] for m in report.members], axis=0)
    gain = (fused.argmax(axis=1) == labels).astype(float)
    gain -= by_role[report.best_single.role].probabilities["test"].argmax(axis=1) == labels
    means = gain[bootstrap_indices(len(labels), RESAMPLES, seed)].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return 100 * float(low), 100 * float(high)


def score_run(run: Path, args: argparse.Namespace) -> tuple[Any, list[EnsembleReport], list[tuple[float, float]]]:
    trained = load_trained(run).with_val_subset(args.val_images)
    archs, roles = standard_subnets(trained.space, args.candidates, args.seed)
    unique = dict(zip(archs, roles))
    pool = [candidate(trained, role, arch) for arch, role in unique.items()]
    reports = [report_ensemble(trained, pool, int(k)) for k in args.sizes.split(",")]
    labels = trained.data.test.labels.numpy()
    return trained, reports, [paired_interval(r, pool, labels) for r in reports]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, action="append", required=True, help="a trained run; repeatable")
    parser.add_argument("--candidates", type=int, default=22, help="random subnets besides the smallest and largest")
    parser.add_argument("--sizes", default="2,3,4")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-images", type=int, default=2000)
    parser.add_argument("--name", default="subnet_ensembles")
    args = parser.parse_args()

    scored = [(run, *score_run(run, args)) for run in args.run]
    trained, reports = scored[0][1], scored[0][2]
    data = trained.config.data.dataset
    lines = [
        f"# Subnet ensembles on {data} ({trained.config.strategy.name} supernets of {trained.config.space.name}, "
        f"step {trained.step})",
        "",
        f"Candidates per run: {reports[0].candidates} subnets (smallest, largest, {args.candidates} seeded random); "
        f"members chosen on {reports[0].val_images:,} validation images (a seeded subset), accuracy on the whole test "
        f"split ({reports[0].test_images:,} images: one image is {100 / reports[0].test_images:.2f} points). Latency: "
        "the extracted subnets, batch 1, one thread, members one after another. Δ: ensemble − best single, with a "
        f"paired bootstrap 95% interval over the test images ({RESAMPLES:,} resamples).",
        "",
        "| run (seed) | K | ensemble MFLOPs | ensemble test % | latency ms | best single ≤ those MFLOPs | its MFLOPs | "
        "its test % | its latency ms | Δ test (points) [95%] |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for run, run_trained, run_reports, intervals in scored:
        for r, (low, high) in zip(run_reports, intervals):
            b = r.best_single
            lines.append(
                f"| {run.name} ({run_trained.config.seed}) | {len(r.members)} | {r.mflops:.2f} | "
                f"{100 * r.test_accuracy:.2f} | {r.latency_ms:.2f} | {b.role} | {b.mflops:.2f} | "
                f"{100 * b.test_accuracy:.2f} | {b.latency_ms:.2f} | "
                f"{100 * (r.test_accuracy - b.test_accuracy):+.2f} [{low:+.2f}, {high:+.2f}] |"
            )
    for run, _, run_reports, _ in scored:
        lines += ["", f"Members of {run.name} (K = {len(run_reports[-1].members)}):", ""]
        lines += [f"- {m.role}: {m.mflops:.2f} MFLOPs, test {100 * m.test_accuracy:.2f}%" for m in run_reports[-1].members]
    results = [
        {"run": str(run), "checkpoint": t.checkpoint_id, "seed": t.config.seed, "dataset": data,
         "reports": [r.as_dict() for r in rs], "delta_interval_points": iv}
        for run, t, rs, iv in scored
    ]
    write_results(args.name, {"runs": results}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
