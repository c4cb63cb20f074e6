"""Hypernetwork with and without MIP: steps to a target training loss, over seeds and learning rates.

The digits demo's space (orchestrator/configs/demo.yaml) trained with the ``hypernetwork``
strategy (one uniform random subnet a step; the last ``--last-weights`` weight tensors generated), at
``--steps`` (warm-up, then cosine decay to 0, SGD with momentum 0.9, as the demo), for each
learning rate, each seed and ``mip`` on/off. The training loss is the mean cross-entropy of
each ``--log-every``-step window (each step a different random subnet); a run's score is the
first step whose window mean is at or below ``--target``. A run that never gets there is
counted at ``--steps`` (censored) and said so. Intervals: mean ± t(0.975, n−1)·s/√n over seeds.

    OMP_NUM_THREADS=1 python benchmarks/hypernetwork.py [--steps 300] [--seeds 4] [--lrs 0.03 0.1 0.3]
        [--target 0.3] [--last-weights 4] [--name hypernetwork]
"""

from __future__ import annotations

import argparse
import json
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


def train_curve(
    steps: int, lr: float, seed: int, mip: bool, log_every: int, last_weights: int, folder: Path
) -> list[tuple[int, float]]:
    """(step, window-mean training cross-entropy) of one run."""
    base = load_config(DEMO)
    job = base.model_copy(update={
        "run_dir": str(folder), "seed": seed,
        "strategy": base.strategy.model_copy(update={"name": "hypernetwork", "params": {"mip": mip, "last_weights": last_weights}}),
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


def init_scales(last_weights: int, seeds: int = 5) -> dict[str, list[float]]:
    """At initialisation, per seed and arm: ‖generated head weight‖ of the largest subnet over the
    smallest's (all genes maximal vs all zero: the input magnitudes furthest apart)."""
    import torch

    from nasfleet.orchestrator.train import job_space
    from nasfleet.strategies import build_strategy

    space = job_space(load_config(DEMO))
    out: dict[str, list[float]] = {"mip": [], "no_mip": []}
    for mip in (True, False):
        for seed in range(seeds):
            torch.manual_seed(seed)
            model = build_strategy("hypernetwork", {"mip": mip, "last_weights": last_weights}, space).build_model()
            with torch.no_grad():
                large, small = (model.generate(a)["head.weight"].norm() for a in (space.largest(), space.smallest()))
            out["mip" if mip else "no_mip"].append(float(large / small))
    return out


def summarise(runs: list[dict[str, Any]], args: dict[str, Any], total_s: float) -> tuple[list[dict[str, Any]], str]:
    """Per learning rate and arm: steps to target and final loss (mean, half-width), the paired
    difference, and each arm's spread of mean steps over the learning rates; and the markdown table."""
    steps, lrs = args["steps"], args["lrs"]

    def score(run: dict[str, Any]) -> float:
        return float(run["steps_to_target"] if run["steps_to_target"] is not None else steps)

    summary, rows = [], []
    for lr in lrs:
        arm = {mip: sorted((r for r in runs if r["lr"] == lr and r["mip"] == mip), key=lambda r: r["seed"])
               for mip in (True, False)}
        cells = {
            mip: {"steps": interval([score(r) for r in group]), "final": interval([r["final_loss"] for r in group]),
                  "censored": sum(r["steps_to_target"] is None for r in group), "n": len(group)}
            for mip, group in arm.items()
        }
        # Paired by seed: the same seed draws the same batches and subnets in both arms.
        saved = interval([score(b) - score(a) for a, b in zip(arm[True], arm[False])])
        summary.append({"lr": lr, "mip": cells[True], "no_mip": cells[False], "saved_steps": saved})

        def steps_cell(cell: dict[str, Any]) -> str:
            (m, h) = cell["steps"]
            never = f" ({cell['censored']}/{cell['n']} never)" if cell["censored"] else ""
            return f"{m:.0f} ± {h:.0f}{never}"

        def final_cell(cell: dict[str, Any]) -> str:
            return f"{cell['final'][0]:.3f} ± {cell['final'][1]:.3f}"

        rows.append(
            f"| {lr} | {steps_cell(cells[True])} | {steps_cell(cells[False])} | {saved[0]:+.0f} ± {saved[1]:.0f} "
            f"| {final_cell(cells[True])} | {final_cell(cells[False])} |"
        )
    scales = init_scales(args["last_weights"])
    spread = {
        name: max(c[name]["steps"][0] for c in summary) - min(c[name]["steps"][0] for c in summary)
        for name in ("mip", "no_mip")
    }
    markdown = "\n".join([
        f"# Hypernetwork weight generation: MIP on vs off ({args['last_weights']} tensors generated)",
        "",
        f"Digits demo space, `hypernetwork` strategy (last {args['last_weights']} weight tensors generated, "
        f"hidden 32), {steps} steps, batch 64, SGD momentum 0.9, cosine schedule; {args['seeds']} seeds per cell; "
        f"target: window-mean training cross-entropy ≤ {args['target']} (windows of {args['log_every']} steps; a "
        f"run that never reaches it counts as {steps}). Mean ± t-based 95 % half-width over seeds; *saved* is "
        f"no-MIP minus MIP steps, paired by seed. Whole study: {total_s / 60:.1f} min on one core.",
        "",
        "| lr | MIP: steps to target | no MIP: steps to target | steps saved by MIP | MIP: final loss "
        "| no MIP: final loss |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"Spread of the mean steps to target over the learning rates (max − min): MIP {spread['mip']:.0f}, "
        f"no MIP {spread['no_mip']:.0f}.",
        "",
        "At initialisation (5 seeds), ‖generated head weight‖ of the largest subnet over the smallest's: "
        f"MIP {', '.join(f'{r:.2f}' for r in scales['mip'])}; "
        f"no MIP {', '.join(f'{r:.2f}' for r in scales['no_mip'])}.",
        "",
    ])
    return summary, markdown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.03, 0.1, 0.3])
    parser.add_argument("--target", type=float, default=0.3)
    parser.add_argument("--log-every", type=int, default=5)
    parser.add_argument("--last-weights", type=int, default=4, help="weight tensors generated (26: all of the demo's)")
    parser.add_argument("--name", default="hypernetwork", help="results file name under benchmarks/results/")
    parser.add_argument("--render", type=Path, help="only rewrite the markdown of an earlier results JSON")
    args = parser.parse_args()
    if args.render is not None:
        payload = json.loads(args.render.read_text())
        summary, markdown = summarise(payload["runs"], payload["args"], payload["total_s"])
        args.render.with_suffix(".md").write_text(markdown)
        print(markdown)
        return

    runs: list[dict[str, Any]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for lr in args.lrs:
            for seed in range(args.seeds):
                for mip in (True, False):
                    t0 = time.perf_counter()
                    folder = Path(tmp) / f"{lr}-{seed}-{mip}"
                    curve = train_curve(args.steps, lr, seed, mip, args.log_every, args.last_weights, folder)
                    reached = steps_to(curve, args.target)
                    final = float(np.mean([loss for _, loss in curve[-5:]]))
                    runs.append({"lr": lr, "seed": seed, "mip": mip, "steps_to_target": reached,
                                 "final_loss": final, "curve": curve, "wall_s": time.perf_counter() - t0})
                    print(f"lr {lr} seed {seed} mip {mip}: steps to {args.target} = {reached}, "
                          f"final loss {final:.3f} ({runs[-1]['wall_s']:.0f} s)", flush=True)
    total_s = time.perf_counter() - started

    summary, markdown = summarise(runs, vars(args), total_s)
    write_results(args.name, {"args": vars(args), "summary": summary, "runs": runs, "total_s": total_s}, markdown)


if __name__ == "__main__":
    main()
