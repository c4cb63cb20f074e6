"""Search quality on the demo supernet: hypervolume per searcher at equal evaluations.

Every searcher drives the same evaluation (the trained demo supernet, per-subnet batch-norm
recalibration, the whole validation split) through its ask/tell protocol, one subnet at a
time, for the same number of evaluations and several seeds. Objectives: validation accuracy
(max) and MFLOPs (min). The reference front is the best known: a large random sample of the
space (evaluated once and cached in Parquet) merged with every subnet any searcher found.

Reports, per searcher: the hypervolume after each evaluation (mean over seeds), relative to
the reference front's; and how many evaluations the predictor-assisted search needs to reach
random search's final hypervolume.

    python benchmarks/search_quality.py [--run runs/demo-digits] [--evaluations 60] [--seeds 5] [--reference 1000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from _common import RESULTS, write_results
from nasfleet.orchestrator.evaluate import TrainedSupernet, evaluate_arch, load_trained
from nasfleet.orchestrator.subnet_search.costs import CostSources, cost_function
from nasfleet.strategies.searchers import SEARCHERS, Evaluated, SearchProblem, build_searcher, hypervolume, pareto_mask
from nasfleet.supernet import Arch, arch_from_json, arch_to_json


class CachedEvaluation:
    """Validation accuracy per subnet, computed once (evaluation is deterministic) and kept in Parquet."""

    def __init__(self, trained: TrainedSupernet, path: Path) -> None:
        self.trained = trained
        self.path = path
        self.accuracy: dict[Arch, float] = {}
        if path.exists():
            table = pq.read_table(path).to_pylist()
            if table and table[0]["checkpoint"] == trained.checkpoint_id:
                self.accuracy = {arch_from_json(r["arch"]): r["accuracy"] for r in table}
        self.new = 0

    def __call__(self, arch: Arch) -> float:
        if arch not in self.accuracy:
            self.accuracy[arch] = evaluate_arch(self.trained, arch, ("val",)).accuracy["val"]
            self.new += 1
        return self.accuracy[arch]

    def save(self) -> None:
        rows = [{"arch": arch_to_json(a), "accuracy": v, "checkpoint": self.trained.checkpoint_id} for a, v in self.accuracy.items()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), self.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/demo-digits"))
    parser.add_argument("--evaluations", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--reference", type=int, default=1000, help="random subnets in the reference sample")
    args = parser.parse_args()

    trained = load_trained(args.run)
    space = trained.space
    evaluate = CachedEvaluation(trained, RESULTS / "search_quality_cache.parquet")
    problem = SearchProblem(space, ("mflops",), (), cost_function(space, ["mflops"], CostSources()))
    reference_point = problem.reference_point()

    def point(arch: Arch) -> list[float]:
        return [-evaluate(arch), problem.costs(arch)["mflops"]]

    started = time.perf_counter()
    rng = np.random.default_rng(12345)
    reference_sample = {space.sample_choices(rng) for _ in range(args.reference)}
    reference_points = [point(a) for a in reference_sample]
    reference_s = time.perf_counter() - started
    evaluate.save()

    curves: dict[str, list[list[float]]] = {}
    histories: dict[str, list[list[Arch]]] = {}
    for name in SEARCHERS:
        curves[name], histories[name] = [], []
        for seed in range(args.seeds):
            algorithm = build_searcher(name, {}, problem, seed)
            archs = []
            for _ in range(args.evaluations):
                arch = algorithm.ask()
                algorithm.tell(Evaluated(arch, evaluate(arch), problem.costs(arch)))
                archs.append(arch)
            points = np.array([point(a) for a in archs])
            curves[name].append([hypervolume(points[: n + 1], reference_point) for n in range(len(points))])
            histories[name].append(archs)
        evaluate.save()

    every_point = np.array(reference_points + [point(a) for runs in histories.values() for archs in runs for a in archs])
    best_known = hypervolume(every_point, reference_point)
    sample_only = hypervolume(np.array(reference_points), reference_point)
    mean_curve = {name: np.mean(np.array(c), axis=0) / best_known for name, c in curves.items()}
    final = {name: float(curve[-1]) for name, curve in mean_curve.items()}
    per_seed_final = {name: [float(c[-1] / best_known) for c in curves[name]] for name in curves}
    random_final = final["random"]
    reach = {
        name: next((n + 1 for n, v in enumerate(curve) if v >= random_final), None) for name, curve in mean_curve.items()
    }
    front_size = int(pareto_mask(every_point).sum())

    lines = [
        "# Search quality on the demo supernet",
        "",
        f"Objectives: validation accuracy vs MFLOPs; {args.evaluations} evaluations per search, {args.seeds} seeds; "
        f"hypervolume relative to the best known front ({len(reference_sample)} random subnets + every subnet "
        f"the searchers found; {front_size} subnets on it). The random reference sample alone reaches "
        f"{sample_only / best_known:.4f}.",
        "",
        "| searcher | HV @ 10 | HV @ 20 | HV @ 30 | HV @ end | worst seed | evaluations to reach random's final HV |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, curve in mean_curve.items():
        at = lambda n: f"{curve[min(n, len(curve)) - 1]:.4f}"  # noqa: E731
        to_reach = reach[name]
        if name == "random":
            ratio = "—"
        else:
            ratio = f"{to_reach} ({args.evaluations / to_reach:.1f}× fewer)" if to_reach else "not reached"
        lines.append(
            f"| {name} | {at(10)} | {at(20)} | {at(30)} | {final[name]:.4f} | {min(per_seed_final[name]):.4f} | {ratio} |"
        )
    lines += [
        "",
        f"Subnets evaluated by this run: {evaluate.new} ({reference_s:.0f} s for the reference sample); the rest came "
        "from the Parquet cache, keyed by the supernet checkpoint.",
    ]
    markdown = "\n".join(lines) + "\n"
    write_results(
        "search_quality",
        {
            "run": str(args.run), "checkpoint": trained.checkpoint_id, "evaluations": args.evaluations,
            "seeds": args.seeds, "reference_sample": len(reference_sample), "best_known_hv": best_known,
            "reference_sample_hv": sample_only, "final_relative_hv": final, "per_seed_final_relative_hv": per_seed_final,
            "evaluations_to_reach_random_final": reach,
            "mean_relative_hv_curve": {k: v.tolist() for k, v in mean_curve.items()},
        },
        markdown,
    )


if __name__ == "__main__":
    main()
