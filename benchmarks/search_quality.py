"""Search quality on a trained supernet: hypervolume per searcher at equal evaluations.

Every searcher drives the same evaluation (the trained supernet, per-subnet batch-norm
recalibration, the validation split or a seeded subset of it) through its ask/tell protocol, one
subnet at a time, for the same number of evaluations and several seeds. Objectives: validation
accuracy (max) and MFLOPs (min). The reference front is the best known: a large random sample of
the space (evaluated once and cached in Parquet) merged with every subnet any searcher found.
Given the ground truth's stand-alone runs (``--standalone``), the report also measures every
front against the one those subnets reach trained alone (their own validation accuracy): how
much of what training alone delivers a search on the supernet's estimates finds.

Reports, per searcher: the hypervolume after each evaluation (mean over seeds), relative to
the reference front's; and how many evaluations each needs to reach random search's final
hypervolume.

    python benchmarks/search_quality.py [--run runs/demo-digits] [--evaluations 60] [--seeds 5] [--reference 1000]

On the reference task, on a supernet of the strategy comparison (benchmarks/strategies.py):

    python benchmarks/search_quality.py --run runs/strategies-fmnist/sandwich-1000steps --val-images 2000 \\
        --reference 500 --standalone benchmarks/results/ground_truth --name search_quality_fashion_mnist
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from _common import RESULTS, write_results
from nasfleet.orchestrator.evaluate import TrainedSupernet, evaluate_arch, load_trained
from nasfleet.orchestrator.subnet_search.costs import CostSources, cost_function
from nasfleet.research.standalone import StandaloneCache
from nasfleet.strategies.searchers import SEARCHERS, Evaluated, SearchProblem, build_searcher, hypervolume, pareto_mask
from nasfleet.supernet import Arch, SearchSpace, arch_from_json, arch_to_json

REFERENCE_SEED = 12345
SUBSET_SEED = 0
MARKS = (10, 20, 30)
"""Evaluations at which the table shows each searcher's hypervolume."""


class CachedEvaluation:
    """Validation accuracy per subnet, computed once (evaluation is deterministic) and kept in Parquet.

    The cache holds one supernet checkpoint on one validation set (``origin`` names both): another
    one starts it afresh.
    """

    def __init__(self, trained: TrainedSupernet, path: Path, origin: str) -> None:
        self.trained = trained
        self.path = path
        self.origin = origin
        self.accuracy: dict[Arch, float] = {}
        if path.exists():
            table = pq.read_table(path).to_pylist()
            if table and table[0]["checkpoint"] == self.origin:
                self.accuracy = {arch_from_json(r["arch"]): r["accuracy"] for r in table}
        self.new = 0

    def __call__(self, arch: Arch) -> float:
        if arch not in self.accuracy:
            self.accuracy[arch] = evaluate_arch(self.trained, arch, ("val",)).accuracy["val"]
            self.new += 1
        return self.accuracy[arch]

    def save(self) -> None:
        rows = [{"arch": arch_to_json(a), "accuracy": v, "checkpoint": self.origin} for a, v in self.accuracy.items()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), self.path)


def standalone_points(cache: Path, space: SearchSpace, steps: int, mflops: Any) -> np.ndarray:
    """(−val accuracy, MFLOPs) of every subnet of ``space`` trained alone for ``steps`` in the cache,
    its accuracy the mean over its seeds; empty when there are none."""
    by_arch: dict[Arch, list[float]] = defaultdict(list)
    for result in StandaloneCache(cache).lookup().values():
        if result.steps == steps and not space.check(result.arch):
            by_arch[result.arch].append(result.accuracy["val"])
    return np.array([[-float(np.mean(acc)), mflops(arch)] for arch, acc in by_arch.items()]).reshape(-1, 2)


@dataclass(frozen=True)
class SearchCurves:
    """Every searcher's hypervolume after each evaluation, per seed, and the subnets it evaluated."""

    curves: dict[str, np.ndarray]  # [seeds, evaluations]
    found: dict[str, list[Arch]]


def run_searches(problem: SearchProblem, evaluate: CachedEvaluation, evaluations: int, seeds: int,
                 reference_point: np.ndarray) -> SearchCurves:
    curves, found = {}, {}
    for name in SEARCHERS:
        per_seed, archs_found = [], []
        for seed in range(seeds):
            algorithm = build_searcher(name, {}, problem, seed)
            archs = []
            for _ in range(evaluations):
                arch = algorithm.ask()
                algorithm.tell(Evaluated(arch, evaluate(arch), problem.costs(arch)))
                archs.append(arch)
            points = np.array([[-evaluate(a), problem.costs(a)["mflops"]] for a in archs])
            per_seed.append([hypervolume(points[: n + 1], reference_point) for n in range(len(points))])
            archs_found += archs
        curves[name], found[name] = np.array(per_seed), archs_found
        evaluate.save()
    return SearchCurves(curves, found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/demo-digits"))
    parser.add_argument("--evaluations", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--reference", type=int, default=1000, help="random subnets in the reference sample")
    parser.add_argument("--val-images", type=int, default=None, help="a seeded subset of the validation split")
    parser.add_argument("--standalone", type=Path, default=None, help="a benchmarks/ground_truth.py cache")
    parser.add_argument("--standalone-steps", type=int, default=2400)
    parser.add_argument("--name", default="search_quality", help="results file name (and its cache's)")
    args = parser.parse_args()

    whole = load_trained(args.run)
    trained = whole.with_val_subset(args.val_images, SUBSET_SEED)
    subset = len(trained.data.val) < len(whole.data.val)
    origin = f"{trained.checkpoint_id}#val{len(trained.data.val)}" if subset else trained.checkpoint_id
    space = trained.space
    evaluate = CachedEvaluation(trained, RESULTS / f"{args.name}_cache.parquet", origin)
    problem = SearchProblem(space, ("mflops",), (), cost_function(space, ["mflops"], CostSources()))
    reference_point = problem.reference_point()

    def point(arch: Arch) -> list[float]:
        return [-evaluate(arch), problem.costs(arch)["mflops"]]

    started = time.perf_counter()
    rng = np.random.default_rng(REFERENCE_SEED)
    reference_sample = {space.sample_choices(rng) for _ in range(args.reference)}
    reference_points = [point(a) for a in reference_sample]
    reference_s = time.perf_counter() - started
    evaluate.save()
    searches = run_searches(problem, evaluate, args.evaluations, args.seeds, reference_point)

    every_point = np.array(reference_points + [point(a) for archs in searches.found.values() for a in archs])
    best_known = hypervolume(every_point, reference_point)
    sample_only = hypervolume(np.array(reference_points), reference_point)
    relative = {name: c / best_known for name, c in searches.curves.items()}
    mean_curve = {name: r.mean(axis=0) for name, r in relative.items()}
    final = {name: float(curve[-1]) for name, curve in mean_curve.items()}
    per_seed_final = {name: r[:, -1].tolist() for name, r in relative.items()}
    reach = {
        name: next((n + 1 for n, v in enumerate(curve) if v >= final["random"]), None)
        for name, curve in mean_curve.items()
    }
    front_size = int(pareto_mask(every_point).sum())
    alone = (standalone_points(args.standalone, space, args.standalone_steps, lambda a: problem.costs(a)["mflops"])
             if args.standalone else np.zeros((0, 2)))
    combined = hypervolume(np.concatenate([every_point, alone]), reference_point) if len(alone) else None

    data = trained.config.data.dataset
    val_text = f"{len(trained.data.val):,} validation images" + (" (a seeded subset)" if subset else "")
    lines = [
        f"# Search quality on a trained supernet ({data})",
        "",
        f"Supernet: `{trained.checkpoint_id}` ({trained.config.strategy.name}). Objectives: validation accuracy "
        f"on {val_text} vs MFLOPs; {args.evaluations} evaluations per search, {args.seeds} seeds; hypervolume "
        f"relative to the best known front ({len(reference_sample)} random subnets + every subnet the searchers "
        f"found; {front_size} subnets on it). The random reference sample alone reaches "
        f"{sample_only / best_known:.4f}.",
        "",
        "| searcher | " + " | ".join(f"HV @ {n}" for n in MARKS)
        + " | HV @ end | worst seed | evaluations to reach random's final HV |",
        "|---|" + "---:|" * (len(MARKS) + 3),
    ]
    for name, curve in mean_curve.items():
        marks = " | ".join(f"{curve[min(n, len(curve)) - 1]:.4f}" for n in MARKS)
        to_reach = reach[name]
        if name == "random":
            ratio = "—"
        else:
            ratio = f"{to_reach} ({args.evaluations / to_reach:.1f}× fewer)" if to_reach else "not reached"
        lines.append(f"| {name} | {marks} | {final[name]:.4f} | {min(per_seed_final[name]):.4f} | {ratio} |")
    if combined is not None:
        lines += [
            "",
            f"**Against training alone.** {len(alone)} subnets trained alone ({args.standalone_steps} steps, their "
            f"validation accuracy on the whole split, mean over seeds) reach a hypervolume of "
            f"{hypervolume(alone, reference_point) / best_known:.4f} of the supernet's best known front on their "
            f"own; merged with it, the front grows to {combined / best_known:.4f}. Every searcher's final front, "
            "measured against that merged front: "
            + ", ".join(f"{name} {final[name] * best_known / combined:.4f}" for name in mean_curve) + ".",
        ]
    lines += [
        "",
        f"Subnets evaluated by this run: {evaluate.new} ({reference_s:.0f} s for the reference sample); the rest came "
        "from the Parquet cache, keyed by the supernet checkpoint and the validation set.",
    ]
    write_results(
        args.name,
        {
            "run": str(args.run), "checkpoint": trained.checkpoint_id, "dataset": data,
            "val_images": len(trained.data.val), "evaluations": args.evaluations, "seeds": args.seeds,
            "reference_sample": len(reference_sample), "best_known_hv": best_known,
            "reference_sample_hv": sample_only, "final_relative_hv": final, "per_seed_final_relative_hv": per_seed_final,
            "evaluations_to_reach_random_final": reach,
            "standalone_subnets": len(alone), "best_known_hv_with_standalone": combined,
            "mean_relative_hv_curve": {k: v.tolist() for k, v in mean_curve.items()},
        },
        "\n".join(lines) + "\n",
    )


if __name__ == "__main__":
    main()
