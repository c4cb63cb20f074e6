"""Early stopping in search: ASHA, HyperBand and the median rule against FIFO, through Ray Tune.

All four run the same constrained search on the demo supernet — random searcher, same
seed, so the same subnets are proposed in the same order (random proposals do not depend
on results) — one trial at a time so each scheduler's decisions are reproducible. FIFO
evaluates every subnet on the whole validation split; the others may stop a subnet after
one of the 4 chunks. Reports the best subnet under the budget each finds and the
validation samples each evaluated.

    python benchmarks/search_schedulers.py [--run runs/demo-digits] [--evaluations 48] [--budget-fraction 0.4]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import pyarrow.parquet as pq

from _common import write_results
from nasfleet.orchestrator.evaluate import load_trained
from nasfleet.orchestrator.subnet_search.experiment import (
    EVALUATIONS_FOLDER,
    SCHEDULERS,
    run_search,
    search_folder,
    search_settings,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/demo-digits"))
    parser.add_argument("--evaluations", type=int, default=48)
    parser.add_argument("--budget-fraction", type=float, default=0.4, help="MFLOPs bound as a fraction of the largest's")
    args = parser.parse_args()

    run = str(args.run)
    trained = load_trained(run)
    limit = trained.space.flops(trained.space.largest()) / 1e6 * args.budget_fraction
    rows = []
    variants = [(scheduler, 2) for scheduler in SCHEDULERS] + [("asha", 3)]
    for scheduler, eta in variants:
        name = f"bench-{scheduler}-eta{eta}"
        folder = Path(search_folder(run, name))  # a local run: the search folder is a path
        shutil.rmtree(folder, ignore_errors=True)
        settings = search_settings(
            name=name, scheduler=scheduler, reduction_factor=eta, evaluations=args.evaluations,
            constraints=[f"mflops<={limit:.4f}"], chunks=4, concurrency=1, seed=0,
        )
        started = time.perf_counter()
        run_search(trained, run, settings)
        wall_s = time.perf_counter() - started
        table = pq.read_table(folder / EVALUATIONS_FOLDER).to_pylist()
        complete = [r for r in table if r["complete"]]
        best = max(complete, key=lambda r: (r["accuracy"], -r["mflops"]))
        rows.append(
            {
                "scheduler": scheduler if scheduler in ("fifo", "median") else f"{scheduler} (η={eta})", "trials": len(table), "complete": len(complete),
                "val_samples": sum(r["val_samples"] for r in table), "best_arch": best["arch_desc"],
                "best_val_accuracy": best["accuracy"], "best_mflops": best["mflops"], "wall_s": wall_s,
            }
        )
    fifo = rows[0]
    lines = [
        "# Early-stopping schedulers vs FIFO (Ray Tune), constrained search",
        "",
        f"Demo supernet, random searcher (seed 0, the same {args.evaluations} subnets for every scheduler), "
        f"constraint mflops<={limit:.4f} ({args.budget_fraction:.0%} of the largest subnet), validation split in 4 chunks, "
        "one trial at a time. Tune's HyperBand is synchronous (it compares a bracket's trials once all of them "
        "reach a milestone); run one trial at a time, as here, it may stop none.",
        "",
        "| scheduler | fully evaluated | validation samples | samples vs FIFO | best subnet under budget | val acc | MFLOPs | same as FIFO | wall (s) |",
        "|---|---:|---:|---:|---|---:|---:|---|---:|",
    ]
    for r in rows:
        same = "yes" if r["best_arch"] == fifo["best_arch"] else "no"
        lines.append(
            f"| {r['scheduler']} | {r['complete']}/{r['trials']} | {r['val_samples']:,} | "
            f"{'baseline' if r is fifo else format(fifo['val_samples'] / r['val_samples'], '.2f') + '× fewer'} | `{r['best_arch']}` | "
            f"{100 * r['best_val_accuracy']:.2f}% | {r['best_mflops']:.4f} | {same} | {r['wall_s']:.0f} |"
        )
    markdown = "\n".join(lines) + "\n"
    write_results("search_schedulers", {"run": str(args.run), "limit_mflops": limit, "rows": rows}, markdown)


if __name__ == "__main__":
    main()
