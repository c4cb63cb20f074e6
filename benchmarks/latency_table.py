"""How well the per-layer latency table predicts whole subnets: predicted vs measured, demo space.

For each batch size: build the table (every distinct layer timed alone, plus the per-layer
correction from the table's own calibration subnets), then draw random subnets with a seed the
table never saw, measure each extracted standalone subnet end to end, and report the mean and
max relative error (target: mean < 10%). Run with one thread, e.g.

    OMP_NUM_THREADS=1 python benchmarks/latency_table.py [--repeats 50] [--subnets 20] [--batch-sizes 1 16]

The load average is recorded because the machine may be shared: timing under contention is noisier.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from _common import write_results
from nasfleet.orchestrator.cli.common import demo_config
from nasfleet.orchestrator.train import job_space
from nasfleet.supernet import build_latency_table, mean_relative_error, table_error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--subnets", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    args = parser.parse_args()

    space = job_space(demo_config())
    rng = np.random.default_rng(args.seed)
    archs = [space.sample(rng) for _ in range(args.subnets)]
    runs = []
    for batch_size in args.batch_sizes:
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        table = build_latency_table(space, batch_size, args.threads, args.repeats)
        build_s = time.perf_counter() - started
        checks = table_error(space, table, archs, repeats=args.repeats)
        # What the correction buys: the same subnets priced by the bare sum of their layers.
        uncorrected = [abs(sum(table.layer_ms(c.arch)) - c.measured_ms) / c.measured_ms for c in checks]
        runs.append(
            {
                "batch_size": batch_size,
                "layers": len(table.entries_ms),
                "build_s": build_s,
                "per_layer_correction_ms": table.per_layer_correction_ms,
                "load_average_1min": [load_before, os.getloadavg()[0]],
                "mean_relative_error": mean_relative_error(checks),
                "max_relative_error": max(c.relative_error for c in checks),
                "mean_relative_error_uncorrected": float(np.mean(uncorrected)),
                "subnets": [
                    {"arch": c.arch.describe(), "predicted_ms": c.predicted_ms, "measured_ms": c.measured_ms,
                     "relative_error": c.relative_error}
                    for c in checks
                ],
            }
        )

    lines = [
        f"# Latency table: predicted vs measured, demo space ({space.size():,} subnets), "
        f"{args.threads} thread(s), median of {args.repeats}",
        "",
        f"{args.subnets} random subnets (`space.sample`, seed {args.seed}); the table's correction was measured on "
        "its own calibration subnets, never on these.",
        "",
        "| batch | layers timed | build s | correction µs/layer | mean rel. error | max rel. error "
        "| mean error, Σ layers only | load avg (1 min) |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    lines += [
        f"| {r['batch_size']} | {r['layers']} | {r['build_s']:.1f} | {1e3 * r['per_layer_correction_ms']:.1f} | "
        f"{100 * r['mean_relative_error']:.1f}% | {100 * r['max_relative_error']:.1f}% | "
        f"{100 * r['mean_relative_error_uncorrected']:.1f}% | "
        f"{r['load_average_1min'][0]:.1f} → {r['load_average_1min'][1]:.1f} |"
        for r in runs
    ]
    for r in runs:
        lines += [
            "",
            f"## Batch {r['batch_size']}",
            "",
            "| arch | predicted ms | measured ms | error |",
            "|---|---:|---:|---:|",
        ]
        lines += [
            f"| `{s['arch']}` | {s['predicted_ms']:.3f} | {s['measured_ms']:.3f} | {100 * s['relative_error']:.1f}% |"
            for s in r["subnets"]
        ]
    write_results(
        "latency_table",
        {"repeats": args.repeats, "seed": args.seed, "threads": args.threads, "runs": runs},
        "\n".join(lines) + "\n",
    )


if __name__ == "__main__":
    main()
