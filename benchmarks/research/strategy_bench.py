"""The strategy bench in one call: compare the strategies, keep the data, write the page that shows them.

``nasfleet bench strategies`` and ``benchmarks/strategies.py`` both run :func:`run_strategy_bench`;
they differ in where the page goes: the command writes into the folder it is given, the script
refreshes ``docs/strategies.md``.
"""

from __future__ import annotations

from pathlib import Path

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.config import JobConfig
from nasfleet.research.comparison import GroundTruth, StrategyComparison, compare_strategies
from nasfleet.research.report import render_doc
from nasfleet.research.standalone import StandaloneCache
from nasfleet.strategies import STRATEGIES, strategy_class

DOC_FILE = "strategies.md"
PLOT_RELPATH = "img/strategies.png"
"""Where the page's plot goes, relative to the page."""


def parse_strategies(text: str | None) -> list[str]:
    """A comma-separated list of strategy names; ``None`` means every registered strategy that ranks
    subnets and is defined on every space."""
    if text is None:
        return [n for n in STRATEGIES.names() if strategy_class(n).ranks_subnets and strategy_class(n).spaces is None]
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise NasfleetError("--strategies is empty (give names separated by commas)")
    return names


VIEWS = ("steps", "passes", "both")
"""Budgets the bench runs: one view, or the same-steps view with the same-compute one beside it."""
SAME_COMPUTE_PLOT = "img/strategies_same_compute.png"
SAME_COMPUTE_RESULTS = "strategies_same_compute"
"""The same-compute view's data folder inside ``results_dir`` when both views run."""


def run_strategy_bench(
    config: JobConfig,
    strategies: list[str],
    steps: int,
    seed: int,
    subnets: int,
    nested: int,
    page_dir: Path,
    cache_dir: Path,
    results_dir: Path,
    work_dir: Path,
    command: str,
    reuse_runs: bool = False,
    ground_truth: GroundTruth | None = None,
    budget: str = "steps",
    workers: int = 1,
    val_images: int | None = None,
    results: Path | None = None,
) -> list[StrategyComparison]:
    """Compare the strategies, keep the data in ``results_dir`` and write ``page_dir``/strategies.md.

    The plot goes to ``page_dir``/img/strategies.png, where the page links it. ``command`` is the
    invocation the page names as its source. ``reuse_runs`` re-evaluates finished supernet runs
    of the same job found in ``work_dir`` instead of retraining them. ``ground_truth`` replaces
    the stand-alone runs at the supernets' steps by runs made apart, over seeds; ``budget="passes"``
    makes ``steps`` a budget of subnet passes (the same-compute view), ``"both"`` runs the
    same-steps view and then the same-compute one (sharing every run they have in common) and
    puts both on the page; ``workers`` strategies train at once; ``val_images`` scores the
    validation estimates on a seeded subset; ``results`` keeps each strategy's finished share for
    reuse. Returns one comparison per view, the page's main view first.
    """
    if budget not in VIEWS:
        raise NasfleetError(f"unknown budget {budget!r} (known: {', '.join(VIEWS)})")
    views = [("steps", results_dir, PLOT_RELPATH), ("passes", results_dir / SAME_COMPUTE_RESULTS, SAME_COMPUTE_PLOT)]
    if budget != "both":
        views = [(budget, results_dir, PLOT_RELPATH)]
    comparisons = [
        compare_strategies(
            config, strategies, steps, seed, view_results, StandaloneCache(cache_dir),
            num_subnets=subnets, nested_submodels=nested, work_dir=work_dir, plot_path=page_dir / plot,
            reuse_runs=reuse_runs or index > 0, ground_truth=ground_truth, budget=view, workers=workers,
            val_images=val_images, results=results,
        )
        for index, (view, view_results, plot) in enumerate(views)
    ]
    page_dir.mkdir(parents=True, exist_ok=True)
    same_compute = comparisons[1] if len(comparisons) > 1 else None
    (page_dir / DOC_FILE).write_text(render_doc(comparisons[0], PLOT_RELPATH, command, same_compute, SAME_COMPUTE_PLOT))
    return comparisons
