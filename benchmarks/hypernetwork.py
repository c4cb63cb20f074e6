"""Hypernetwork with and without MIP: steps to a target training loss, over seeds and learning rates.

The digits demo's space (orchestrator/configs/demo.yaml) trained with the ``hypernetwork``
strategy (one uniform random subnet a step; the last four weight tensors generated), at
``--steps`` (warm-up, then cosine decay to 0, SGD with momentum 0.9, as the demo), for each
learning rate, each seed and ``mip`` on/off. The training loss is the mean cross-entropy of
each ``--log-every``-step window (each step a different random subnet); a run's score is the
first step whose window mean is at or below ``--target``. A run that never gets there is
counted at ``--steps`` (censored) and said so. Intervals: mean ± t(0.975, n−1)·s/√n over seeds.

    OMP_NUM_THREADS=1 python benchmarks/hypernetwork.py [--steps 400] [--seeds 3] [--lrs 0.03 0.1 0.3]
        [--target 0.5]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from _common import write_results
from nasfleet.orchestrator.config import load_config
from nasfleet.orchestrator.launch import train_job
from nasfleet.orchestrator.train.metrics_log import read_records

DEMO = Path(__file__).resolve().parent.parent / "orchestrator" / "configs" / "demo.yaml"


def train_curve(steps: int, lr: float, seed: int, mip: bool, log_every: int, folder: Path) -> list[tuple[int, float]]:
    """(step, window-mean training cross-entropy) of one run."""
    base = load_config(DEMO)
    job = base.model_copy(update={
        "run_dir": str(folder), "seed": seed,
        "strategy": base.strategy.model_copy(update={"name": "hypernetwork", "params": {"mip": mip}}),
        "optim": base.optim.model_copy(update={"steps": steps, "lr": lr, "warmup_steps": min(50, steps // 10)}),
        "checkpoint_every_steps": steps, "log_every_steps": log_every,
    })
    train_job(job)
    records = read_records((folder / "metrics.jsonl").read_text())
    return [(int(r["step"]), float(r["by_role"]["random"]["cross_entropy"])) for r in records]


def steps_to(curve: list[tuple[int, float]], target: float) -> int | None:
    return next((step for step, loss in curve if loss <= target), None)


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its t-based 95 % interval (NaN for one value)."""
    n = len(values)
    mean = float(np.mean(values))
    if n < 2:
        return mean, float("nan")
    return mean, float(stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) / math.sqrt(n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.03, 0.1, 0.3])
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--log-every", type=int, default=10)
    args = parser.parse_args()

    runs: list[dict[str, Any]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for lr in args.lrs:
            for seed in range(args.seeds):
                for mip in (True, False):
                    t0 = time.perf_counter()
                    curve = train_curve(args.steps, lr, seed, mip, args.log_every, Path(tmp) / f"{lr}-{seed}-{mip}")
                    reached = steps_to(curve, args.target)
                    final = float(np.mean([loss for _, loss in curve[-5:]]))
                    runs.append({"lr": lr, "seed": seed, "mip": mip, "steps_to_target": reached,
                                 "final_loss": final, "curve": curve, "wall_s": time.perf_counter() - t0})
                    print(f"lr {lr} seed {seed} mip {mip}: steps to {args.target} = {reached}, "
                          f"final loss {final:.3f} ({runs[-1]['wall_s']:.0f} s)", flush=True)
    total_s = time.perf_counter() - started

    rows, summary = [], []
    for lr in args.lrs:
        cells: dict[bool, dict[str, Any]] = {}
        for mip in (True, False):
            group = [r for r in runs if r["lr"] == lr and r["mip"] == mip]
            scores = [float(r["steps_to_target"] or args.steps) for r in group]
            censored = sum(r["steps_to_target"] is None for r in group)
            cells[mip] = {"steps": interval(scores), "final": interval([r["final_loss"] for r in group]),
                          "censored": censored, "n": len(group)}
        # Paired by seed: the same seed draws the same batches and subnets in both arms.
        diffs = [
            float(a["steps_to_target"] or args.steps) - float(b["steps_to_target"] or args.steps)
            for a, b in zip(
                [r for r in runs if r["lr"] == lr and not r["mip"]], [r for r in runs if r["lr"] == lr and r["mip"]]
            )
        ]
        cells_diff = interval(diffs)
        summary.append({"lr": lr, "mip": cells[True], "no_mip": cells[False], "saved_steps": cells_diff})

        def fmt(cell: dict[str, Any]) -> str:
            (m, h), (fm, fh) = cell["steps"], cell["final"]
            cens = f" ({cell['censored']}/{cell['n']} never)" if cell["censored"] else ""
            return f"{m:.0f} ± {h:.0f}{cens} | {fm:.3f} ± {fh:.3f}"

        rows.append(f"| {lr} | {fmt(cells[True])} | {fmt(cells[False])} | {cells_diff[0]:.0f} ± {cells_diff[1]:.0f} |")

    markdown = "\n".join([
        "# Hypernetwork weight generation: MIP on vs off",
        "",
        f"Digits demo space, `hypernetwork` strategy (last 4 weight tensors generated, hidden 32), {args.steps} steps, "
        f"batch 64, SGD momentum 0.9, cosine schedule; {args.seeds} seeds per cell; target: window-mean training "
        f"cross-entropy ≤ {args.target} (windows of {args.log_every} steps; a run that never reaches it counts as "
        f"{args.steps}). Mean ± t-based 95 % half-width over seeds. Whole study: {total_s / 60:.1f} min on one core.",
        "",
        "| lr | MIP: steps to target \\| final loss | no MIP: steps to target \\| final loss | steps saved by MIP (paired) |",
        "|---|---|---|---|",
        *rows,
        "",
    ])
    write_results("hypernetwork", {"args": vars(args), "summary": summary, "runs": runs, "total_s": total_s}, markdown)


if __name__ == "__main__":
    main()
