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
from nasfleet.strategies import STRATEGIES

DOC_FILE = "strategies.md"
PLOT_RELPATH = "img/strategies.png"
"""Where the page's plot goes, relative to the page."""


def parse_strategies(text: str | None) -> list[str]:
    """A comma-separated list of strategy names; ``None`` means every registered strategy."""
    if text is None:
        return STRATEGIES.names()
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise NasfleetError("--strategies is empty (give names separated by commas)")
    return names


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
) -> StrategyComparison:
    """Compare the strategies, keep the data in ``results_dir`` and write ``page_dir``/strategies.md.

    The plot goes to ``page_dir``/img/strategies.png, where the page links it. ``command`` is the
    invocation the page names as its source. ``reuse_runs`` re-evaluates finished supernet runs
    of the same job found in ``work_dir`` instead of retraining them. ``ground_truth`` replaces
    the stand-alone runs at the supernets' steps by runs made apart, over seeds; ``budget="passes"``
    makes ``steps`` a budget of subnet passes (the same-compute view); ``workers`` strategies train at once;
    ``val_images`` scores the validation estimates on a seeded subset; ``results`` keeps each
    strategy's finished share for reuse.
    """
    comparison = compare_strategies(
        config, strategies, steps, seed, results_dir, StandaloneCache(cache_dir),
        num_subnets=subnets, nested_submodels=nested, work_dir=work_dir, plot_path=page_dir / PLOT_RELPATH,
        reuse_runs=reuse_runs, ground_truth=ground_truth, budget=budget, workers=workers,
        val_images=val_images, results=results,
    )
    page_dir.mkdir(parents=True, exist_ok=True)
    (page_dir / DOC_FILE).write_text(render_doc(comparison, PLOT_RELPATH, command))
    return comparison
