"""Subnet ensembles against the best single subnet of the same FLOPs, on a trained supernet.

Scores a seeded candidate pool once (the smallest, the largest and random subnets, each with its
batch norm recalibrated), then for each ensemble size K chooses K members on validation (greedy:
accuracy, ties to diversity), fuses them late (mean of probabilities) and reports them beside the
candidate with the best validation accuracy among those no larger than the ensemble's total
MFLOPs, both judged on the whole test split, with the latencies measured (batch 1, one thread).

    python benchmarks/subnet_ensembles.py --run runs/strategies-fmnist/sandwich-1000steps \\
        [--candidates 22] [--sizes 2,3,4] [--val-images 2000] [--name subnet_ensembles]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import write_results
from nasfleet.orchestrator.evaluate import load_trained, standard_subnets
from nasfleet.orchestrator.evaluate.ensemble import candidate, report_ensemble


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--candidates", type=int, default=22, help="random subnets besides the smallest and largest")
    parser.add_argument("--sizes", default="2,3,4")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-images", type=int, default=2000)
    parser.add_argument("--name", default="subnet_ensembles")
    args = parser.parse_args()

    trained = load_trained(args.run).with_val_subset(args.val_images)
    archs, roles = standard_subnets(trained.space, args.candidates, args.seed)
    unique = dict(zip(archs, roles))
    pool = [candidate(trained, role, arch) for arch, role in unique.items()]
    reports = [report_ensemble(trained, pool, int(k)) for k in args.sizes.split(",")]
    data = trained.config.data.dataset
    lines = [
        f"# Subnet ensembles on {data} ({trained.config.strategy.name} supernet, step {trained.step})",
        "",
        f"Candidates: {len(pool)} subnets (smallest, largest, {args.candidates} seeded random); members chosen on "
        f"{reports[0].val_images:,} validation images (a seeded subset), accuracy on the whole test split "
        f"({reports[0].test_images:,} images: one image is {100 / reports[0].test_images:.2f} points). "
        "Latency: the extracted subnets, batch 1, one thread, members one after another.",
        "",
        "| K | ensemble MFLOPs | ensemble test % | latency ms | best single ≤ those MFLOPs | its MFLOPs | its test % | its latency ms | Δ test (points) |",
        "|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in reports:
        b = r.best_single
        lines.append(
            f"| {len(r.members)} | {r.mflops:.2f} | {100 * r.test_accuracy:.2f} | {r.latency_ms:.2f} | {b.role} | "
            f"{b.mflops:.2f} | {100 * b.test_accuracy:.2f} | {b.latency_ms:.2f} | "
            f"{100 * (r.test_accuracy - b.test_accuracy):+.2f} |"
        )
    lines += ["", "Members (K = largest size):", ""]
    lines += [f"- {m.role}: {m.mflops:.2f} MFLOPs, test {100 * m.test_accuracy:.2f}%" for m in reports[-1].members]
    write_results(args.name, {"run": str(args.run), "checkpoint": trained.checkpoint_id, "dataset": data,
                              "reports": [r.as_dict() for r in reports]}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
