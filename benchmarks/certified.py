"""IBP-trained against naturally trained supernets: clean and verified error at a stated ε.

Fashion-MNIST (the real images, fetched and cached like `nasfleet data fetch fashion-mnist`),
a small MobileNet-style space (two stages; the smallest subnet has 7 convs, the largest 13),
``--seeds`` seeds per arm, both arms through the normal trainer with the ``ibp`` strategy and
the same subnet sampling (largest, smallest, one random per step): ``eps`` = ε for the IBP
arm, ``eps`` = 0 (natural cross-entropy only, default init) for the baseline. Each trained
supernet is certified (``nasfleet certify``'s code) for its smallest, median and largest
subnet on a seeded subset of the test split; intervals are 95 % t-intervals over the seeds.

    python benchmarks/certified.py [--steps 300] [--seeds 2] [--eps 0.1] [--images 1000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from _common import write_results
from nasfleet.orchestrator.cli.certify import certify_subnets, median_subnet
from nasfleet.orchestrator.config import config_from_dict
from nasfleet.orchestrator.evaluate import load_trained
from nasfleet.orchestrator.launch import train_job

SPACE = {
    "name": "mbconv",
    "image_size": 28,
    "stem_width": 8,
    "stages": [
        {"widths": [8, 12], "depths": [1, 2], "kernels": [3], "expands": [1, 2], "stride": 2},
        {"widths": [12, 16], "depths": [1, 2], "kernels": [3], "expands": [1, 2], "stride": 2},
    ],
}
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776}  # two-sided 95 % t quantiles by degrees of freedom


def job(run_dir: Path, seed: int, steps: int, eps: float) -> Any:
    ramp = steps // 2
    natural = {"eps": 0.0, "ibp_init": False}
    params = {"eps": eps, "start_step": steps // 12, "warmup_steps": ramp} if eps > 0 else natural
    return config_from_dict({
        "run_dir": str(run_dir), "seed": seed, "space": SPACE,
        "strategy": {"name": "ibp", "params": params},
        "data": {"dataset": "fashion-mnist", "batch_size": 64},
        "optim": {"steps": steps, "lr": 0.05, "warmup_steps": 10},
        "eval": {"calibration_batches": 4, "random_subnets": 0},
        "checkpoint_every_steps": steps, "log_every_steps": max(steps // 4, 1),
    })


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and 95 % t half-width over seeds (0 for one seed)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, T95.get(len(values) - 1, 1.96) * statistics.stdev(values) / len(values) ** 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--eps", type=float, default=0.1, help="pixel units (0–1 intensity)")
    parser.add_argument("--images", type=int, default=1000, help="seeded test subset certified per subnet")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "runs" / "bench-certified")
    parser.add_argument("--name", default="certified")
    args = parser.parse_args()

    rows: list[dict[str, Any]] = []
    started = time.process_time()
    for arm, eps in (("ibp", args.eps), ("natural", 0.0)):
        for seed in range(args.seeds):
            config = job(args.out / f"{arm}-seed{seed}", seed, args.steps, eps)
            t0 = time.process_time()
            train_job(config)
            train_cpu_s = time.process_time() - t0
            trained = load_trained(config.run_dir)
            space = trained.space
            archs = [space.smallest(), median_subnet(space), space.largest()]
            for r in certify_subnets(trained, archs, ["smallest", "median", "largest"], args.eps, args.images):
                rows.append({"arm": arm, "seed": seed, "train_cpu_s": train_cpu_s, **r.__dict__})
                print(f"{arm} seed {seed} {r.role}: clean {100 * r.clean_error:.1f}%, "
                      f"verified {100 * r.verified_error:.1f}%")

    lines = [
        f"# Certified error on Fashion-MNIST at ε = {args.eps:g} (pixels, 0–1 intensity)",
        "",
        f"{args.steps} training steps of batch 64 per run, {args.seeds} seeds per arm, "
        f"{rows[0]['images']:,} seeded test images per subnet; mean ± 95 % t-interval over seeds. "
        "Verified: IBP proves no image in the clipped ε box "
        "changes the prediction (eval mode, the subnet's own calibrated BN statistics, extracted subnet).",
        "",
        "| arm | subnet | MFLOPs | clean error % | verified error % |",
        "|---|---|---:|---:|---:|",
    ]
    summary: list[dict[str, Any]] = []
    for arm in ("ibp", "natural"):
        for role in ("smallest", "median", "largest"):
            mine = [r for r in rows if r["arm"] == arm and r["role"] == role]
            clean, clean_ci = interval([100 * r["clean_error"] for r in mine])
            ver, ver_ci = interval([100 * r["verified_error"] for r in mine])
            summary.append({"arm": arm, "role": role, "clean_error_pct": [clean, clean_ci],
                            "verified_error_pct": [ver, ver_ci]})
            lines.append(f"| {arm} | {role} | {mine[0]['mflops']:.3f} | {clean:.1f} ± {clean_ci:.1f} "
                         f"| {ver:.1f} ± {ver_ci:.1f} |")
    total_cpu_s = time.process_time() - started
    lines += ["", f"CPU time, whole benchmark: {total_cpu_s / 60:.1f} min "
              f"(training: IBP {statistics.fmean(r['train_cpu_s'] for r in rows if r['arm'] == 'ibp'):.0f} s, "
              f"natural {statistics.fmean(r['train_cpu_s'] for r in rows if r['arm'] == 'natural'):.0f} s per run)."]
    write_results(args.name, {"steps": args.steps, "seeds": args.seeds, "eps_pixels": args.eps, "space": SPACE,
                              "rows": rows, "summary": summary, "cpu_s": total_cpu_s}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
