"""Every training strategy on one task with one budget, judged by the same subnets.

Each strategy trains the supernet in this process (whatever the base job's launcher, on its
``launch.threads``) for the same optimizer steps on the same seeded batches (so the same samples
seen); what differs is how many subnets a step runs, which the results report. Every trained
supernet is then evaluated on one fixed, seeded set of subnets spanning the space (smallest,
largest, and picks spread over the MFLOPs range), whose stand-alone results (trained from
scratch, cached) are the ground truth for the rank correlations (Kendall τ, Spearman ρ) on test
accuracy and on test cross-entropy (NLL, a continuous score that still ranks when accuracies
tie), each τ with a bootstrap interval over test images; and on a family of nested sub-models
(SortedNet's), where the question is how many keep ≥ 96% of the largest member's accuracy.

The statistics are in :mod:`nasfleet.research.ranking_stats`; the tables, plot and page in
:mod:`nasfleet.research.report`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.config import JobConfig, config_from_dict
from nasfleet.orchestrator.data import load_data
from nasfleet.orchestrator.train import job_space
from nasfleet.research.ranking_stats import Interval, bootstrap_indices, rank_correlations, ranking_statistics
from nasfleet.research.standalone import (
    StandaloneCache,
    StandaloneResult,
    standalone_key,
    standalone_recipe,
    standalone_results,
)
from nasfleet.research.strategy_runs import RunRecord, StrategyJob, SubnetEvaluation, run_folder, run_strategies
from nasfleet.strategies import STRATEGIES, SortedStrategy, build_strategy, strategy_class
from nasfleet.supernet import Arch, MBConvSpace, SearchSpace

MIN_SUBNETS = 8
DEFAULT_SUBNETS = 12
BOOTSTRAP_RESAMPLES = 1000
NESTED_KEEP = 0.96
POOL_SIZE = 4096
"""Random subnets whose MFLOPs quantiles place the fixed set's inner members."""

RUN_LENGTH_PARAMS: dict[str, float] = {"total_steps": 1.0, "warmup_steps": 0.5}
"""Strategy parameters that are a share of the run's steps (few-shot's one-shot warm-up: half)."""

BUDGETS = ("steps", "passes")
"""Equal optimizer steps for every strategy, or equal subnet passes (forward/backward of one subnet)."""
PASSES_PROBE_STEPS = 4096
"""Most steps of a strategy's subnet schedule drawn (not trained) to measure its passes per step:
every step of a shorter run, else this many spread evenly over it (schedules change over a run)."""

PLOT_FILE = "strategies.png"


@dataclass(frozen=True)
class StrategySummary:
    strategy: str
    params: dict[str, Any]
    steps: int
    """Optimizer steps it trained: the comparison's steps, or its share of the passes budget."""
    subnets_per_step: float
    """Mean forward/backward passes per optimizer step, measured from the run's metrics log."""
    train_wall_s: float
    eval_wall_s: float
    smallest_test: float
    median_test: float
    largest_test: float
    kendall_tau: float
    """Between supernet-estimated and stand-alone test accuracy on the fixed set."""
    spearman_rho: float
    kendall_tau_low: float
    kendall_tau_high: float
    """The bootstrap interval (over test images) of ``kendall_tau``."""
    kendall_tau_nll: float
    """Between supernet-estimated and stand-alone mean test cross-entropy on the fixed set."""
    spearman_rho_nll: float
    kendall_tau_nll_low: float
    kendall_tau_nll_high: float
    kendall_tau_val: float
    """As ``kendall_tau`` with the supernet's estimate taken on the validation split."""
    spearman_rho_val: float
    nested_count: int
    nested_keep_fraction: float
    """Fraction of evaluated nested sub-models with test accuracy ≥ 96% of the family's largest."""
    reused_run: bool = False
    """Whether the supernet came from an existing finished run (``reuse_runs``) instead of being trained now."""
    run_checkpoint: str = ""
    """The checkpoint the supernet was evaluated from, and its step."""

    @property
    def tau_interval(self) -> Interval:
        return Interval(self.kendall_tau_low, self.kendall_tau_high)

    @property
    def tau_nll_interval(self) -> Interval:
        return Interval(self.kendall_tau_nll_low, self.kendall_tau_nll_high)

    def row(self) -> dict[str, Any]:
        return {**asdict(self), "params": json.dumps(self.params, sort_keys=True)}


@dataclass
class StrategyComparison:
    steps: int
    seed: int
    batch_size: int
    test_size: int
    subnets: list[tuple[str, Arch]]
    standalone: list[StandaloneResult]
    """Each fixed subnet's ground truth: its stand-alone run, or the mean of its seeds' runs."""
    standalone_runs: list[list[StandaloneResult]]
    """Each fixed subnet's stand-alone runs, one per seed: what the τ intervals resample."""
    bootstrap_resamples: int = BOOTSTRAP_RESAMPLES
    budget: str = "steps"
    """``steps``: every strategy trains ``steps`` optimizer steps; ``passes``: ``steps`` subnet passes."""
    threads: int = 1
    """torch threads of every training run (the job's ``launch.threads``)."""
    workers: int = 1
    """Strategies trained at once, one process each."""
    val_size: int = 0
    """Validation images the *τ (val est.)* estimates were scored on ..."""
    val_split_size: int = 0
    """... of the validation split's."""
    summaries: list[StrategySummary] = field(default_factory=list)
    evaluations: list[SubnetEvaluation] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)

    def summary(self, strategy: str) -> StrategySummary:
        return next(s for s in self.summaries if s.strategy == strategy)


@dataclass(frozen=True)
class GroundTruth:
    """Stand-alone runs trained apart from the comparison (benchmarks/ground_truth.py).

    They follow their own recipe (``steps``, which need not be the supernets'), over ``seeds``
    seeds; the comparison reads them from ``cache`` and never trains them itself: hours of CPU.
    """

    cache: StandaloneCache
    steps: int
    seeds: int


def ground_truth_runs(config: JobConfig, archs: Sequence[Arch], truth: GroundTruth) -> list[list[StandaloneResult]]:
    """Every seed's run of every subnet, from the cache; refuses when any is missing."""
    space = job_space(config)
    known = truth.cache.lookup()
    runs, missing = [], 0
    for arch in archs:
        found = [known.get(standalone_key(standalone_recipe(config, truth.steps, seed), space, arch))
                 for seed in range(truth.seeds)]
        missing += sum(r is None for r in found)
        runs.append([r for r in found if r is not None])
    if missing:
        raise NasfleetError(
            f"the ground truth in {truth.cache.path} lacks {missing} of {len(archs) * truth.seeds} runs "
            f"({len(archs)} subnets × {truth.seeds} seeds, {truth.steps} steps): run benchmarks/ground_truth.py first"
        )
    return runs


def fixed_subnets(space: SearchSpace, count: int, seed: int) -> list[tuple[str, Arch]]:
    """``count`` distinct subnets by role, smallest first: the bounds and MFLOPs-quantile picks.

    The inner ``count - 2`` picks sit at evenly spaced MFLOPs quantiles of ``POOL_SIZE`` seeded
    random subnets, the one nearest the middle moved to exactly the median (role "median"), each
    the pool member nearest its quantile not already taken.
    """
    if count < 2:
        raise NasfleetError(f"a fixed subnet set needs at least 2 subnets, got {count}")
    rng = np.random.default_rng(seed)
    pool = list(dict.fromkeys(space.sample_choices(rng) for _ in range(POOL_SIZE)))
    bounds = (space.smallest(), space.largest())
    pool = [a for a in pool if a not in bounds]
    mflops = np.array([space.flops(a) / 1e6 for a in pool])
    levels = np.linspace(0.0, 1.0, count)[1:-1]
    middle = int(np.argmin(np.abs(levels - 0.5))) if len(levels) else -1
    if middle >= 0:
        levels[middle] = 0.5
    taken = np.zeros(len(pool), dtype=bool)
    picks: list[tuple[str, Arch]] = []
    for i, (level, target) in enumerate(zip(levels, np.quantile(mflops, levels))):
        gaps = np.where(taken, np.inf, np.abs(mflops - target))
        best = int(np.argmin(gaps))
        taken[best] = True
        picks.append(("median" if i == middle else f"q{round(100 * level)}", pool[best]))
    chosen = [("smallest", bounds[0]), *picks, ("largest", bounds[1])]
    return sorted(chosen, key=lambda p: space.flops(p[1]))


def nested_family(space: SearchSpace, params: dict[str, Any], count: int) -> list[Arch]:
    """``count`` members of SortedNet's nested family (all when fewer), evenly spread by MFLOPs.

    Empty for spaces the sorted strategy does not support; always includes the family's largest,
    the reference of the 96% criterion.
    """
    if not isinstance(space, MBConvSpace) or count == 0:
        return []
    family = build_strategy(SortedStrategy.name, params, space).submodels  # type: ignore[attr-defined]
    if count >= len(family):
        return list(family)
    indices = sorted({int(round(i)) for i in np.linspace(0, len(family) - 1, count)})
    return [family[i] for i in indices]


def strategy_params(name: str, base: JobConfig, steps: int, overrides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The strategy's parameters: explicit overrides, else the base config's (same strategy), else defaults.

    A ``total_steps`` parameter (a schedule over the run) is always the comparison's steps; other
    required run-length parameters not given (:data:`RUN_LENGTH_PARAMS`) get their share of the steps.
    """
    if name in overrides:
        params = dict(overrides[name])
    else:
        params = dict(base.strategy.params) if name == base.strategy.name else {}
    for field_name, info in strategy_class(name).Params.model_fields.items():
        fill = field_name in RUN_LENGTH_PARAMS and info.is_required() and field_name not in params
        if field_name == "total_steps" or fill:
            params[field_name] = round(RUN_LENGTH_PARAMS[field_name] * steps)
    return params


def passes_per_step(name: str, params: dict[str, Any], space: SearchSpace, steps: int, seed: int = 0) -> float:
    """Mean subnet passes a step asks for over a ``steps``-step run's schedule, drawn without training.

    Over the whole run, not its start: DεpS and progressive shrinking run the largest subnet
    alone at first and several subnets a step later.
    """
    strategy = build_strategy(name, params, space)
    rng = np.random.default_rng(seed)
    probes = np.unique(np.linspace(0, steps - 1, min(steps, PASSES_PROBE_STEPS)).round().astype(int))
    return float(np.mean([len(strategy.subnets_for_step(int(step), rng)) for step in probes]))


PASSES_FIT_ROUNDS = 8
"""Rounds of fitting a strategy's steps to a passes budget (its schedule scales with its own steps)."""


def strategy_steps(
    name: str, base: JobConfig, budget: str, steps: int, overrides: dict[str, dict[str, Any]], space: SearchSpace
) -> int:
    """Optimizer steps for ``name``: ``steps``, or ``steps`` subnet passes over its passes per step.

    A schedule laid over the run (``total_steps``) changes when the run's length does, so the
    steps are fitted: the run length whose own schedule spends the budget.
    """
    if budget == "steps":
        return steps
    own = steps
    for _ in range(PASSES_FIT_ROUNDS):
        params = strategy_params(name, base, own, overrides)
        fitted = max(1, round(steps / passes_per_step(name, params, space, own)))
        if fitted == own:
            break
        own = fitted
    return own


def _summarise(
    name: str,
    params: dict[str, Any],
    run: RunRecord,
    fixed: list[SubnetEvaluation],
    nested: list[SubnetEvaluation],
    standalone: Sequence[StandaloneResult],
    standalone_runs: Sequence[Sequence[StandaloneResult]],
    indices: np.ndarray,
    seed: int,
) -> StrategySummary:
    by_role = {e.role: e.test_accuracy for e in fixed}
    truth = [r.accuracy["test"] for r in standalone]
    estimated = [e.test_scores for e in fixed]  # always present on the fixed set
    runs = [[r.test_scores for r in subnet_runs] for subnet_runs in standalone_runs]
    ranking = ranking_statistics(estimated, runs, indices, seed)  # type: ignore[arg-type]
    tau_val, rho_val = rank_correlations([e.val_accuracy for e in fixed], truth)
    keep = math.nan
    if nested:
        reference = nested[-1].test_accuracy  # the family's largest member comes last
        keep = sum(e.test_accuracy >= NESTED_KEEP * reference for e in nested) / len(nested)
    return StrategySummary(
        strategy=name,
        params=params,
        steps=run.step,
        subnets_per_step=run.subnets_per_step,
        train_wall_s=run.train_wall_s,
        eval_wall_s=sum(e.eval_wall_s for e in fixed + nested),
        smallest_test=by_role["smallest"],
        median_test=by_role.get("median", math.nan),
        largest_test=by_role["largest"],
        kendall_tau=ranking.kendall_tau,
        spearman_rho=ranking.spearman_rho,
        kendall_tau_low=ranking.kendall_tau_interval.low,
        kendall_tau_high=ranking.kendall_tau_interval.high,
        kendall_tau_nll=ranking.kendall_tau_nll,
        spearman_rho_nll=ranking.spearman_rho_nll,
        kendall_tau_nll_low=ranking.kendall_tau_nll_interval.low,
        kendall_tau_nll_high=ranking.kendall_tau_nll_interval.high,
        kendall_tau_val=tau_val,
        spearman_rho_val=rho_val,
        nested_count=len(nested),
        nested_keep_fraction=keep,
        reused_run=run.reused,
        run_checkpoint=run.checkpoint_id,
    )


def _validate(
    strategies: Sequence[str], steps: int, num_subnets: int, nested_submodels: int, bootstrap_resamples: int,
    budget: str,
) -> None:
    if budget not in BUDGETS:
        raise NasfleetError(f"unknown budget {budget!r} (known: {', '.join(BUDGETS)})")
    if not strategies:
        raise NasfleetError("no strategies to compare")
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise NasfleetError(f"unknown strategy {unknown[0]!r} (known: {', '.join(sorted(STRATEGIES))})")
    if len(set(strategies)) != len(strategies):
        raise NasfleetError(f"a strategy is listed twice: {', '.join(strategies)}")
    if steps < 1:
        raise NasfleetError(f"steps must be at least 1, got {steps}")
    if num_subnets < MIN_SUBNETS:
        raise NasfleetError(f"the fixed subnet set needs at least {MIN_SUBNETS} subnets, got {num_subnets}")
    if nested_submodels < 0:
        raise NasfleetError(f"nested sub-models must be ≥ 0, got {nested_submodels}")
    if bootstrap_resamples < 1:
        raise NasfleetError(f"bootstrap resamples must be ≥ 1, got {bootstrap_resamples}")


@dataclass(frozen=True)
class ComparisonPlan:
    """What a comparison trains and scores, all fixed (and checked) before anything trains."""

    recipe: JobConfig
    """The base job at the comparison's steps and seed: the stand-alone recipe."""
    subnets: list[tuple[str, Arch]]
    nested: list[tuple[str, Arch]]
    params: dict[str, dict[str, Any]]
    jobs: dict[str, JobConfig]
    """Each strategy's training job, in the order given."""

    def tasks(self, reuse: bool, val_images: int | None = None, results: Path | None = None) -> list[StrategyJob]:
        return [StrategyJob(job, self.subnets, self.nested, reuse, val_images, results) for job in self.jobs.values()]


def plan_comparison(
    base_config: JobConfig,
    strategies: Sequence[str],
    steps: int,
    seed: int,
    *,
    num_subnets: int = DEFAULT_SUBNETS,
    nested_submodels: int = 100,
    work_dir: Path = Path("runs/strategies"),
    strategy_overrides: dict[str, dict[str, Any]] | None = None,
    bootstrap_resamples: int = BOOTSTRAP_RESAMPLES,
    budget: str = "steps",
) -> ComparisonPlan:
    """Every strategy's job and the subnets to score, or a NasfleetError for any bad input.

    Each strategy's run folder is :func:`run_folder` of ``work_dir``, so runs of equal steps are
    shared by the same-steps and same-compute views.
    """
    _validate(strategies, steps, num_subnets, nested_submodels, bootstrap_resamples, budget)
    overrides = strategy_overrides or {}
    space = job_space(base_config)
    own_steps = {name: strategy_steps(name, base_config, budget, steps, overrides, space) for name in strategies}
    params = {name: strategy_params(name, base_config, own_steps[name], overrides) for name in strategies}
    for name in strategies:  # a bad parameter or an unsupported space fails here, not mid-way
        build_strategy(name, params[name], space)
    sorted_params = strategy_params(SortedStrategy.name, base_config, steps, overrides)
    nested = [(f"nested-{i}", a) for i, a in enumerate(nested_family(space, sorted_params, nested_submodels))]

    def job(name: str | None, **update: Any) -> JobConfig:
        strategy = {"name": name, "params": params[name]} if name else base_config.strategy.model_dump()
        return config_from_dict(
            {
                **base_config.model_dump(),
                "seed": seed,
                "strategy": strategy,
                "optim": {**base_config.optim.model_dump(), "steps": own_steps[name] if name else steps},
                # One process each, whatever the base job's launcher: the wall times compare only so.
                "launch": {**base_config.launch.model_dump(), "kind": "local"},
                **update,
            },
            "strategy comparison config",
        )

    jobs = {name: job(name, run_dir=str(run_folder(work_dir, name, own_steps[name]))) for name in strategies}
    return ComparisonPlan(job(None), fixed_subnets(space, num_subnets, seed), nested, params, jobs)


def compare_strategies(
    base_config: JobConfig,
    strategies: Sequence[str],
    steps: int,
    seed: int,
    out_dir: Path,
    standalone_cache: StandaloneCache | None,
    *,
    num_subnets: int = DEFAULT_SUBNETS,
    nested_submodels: int = 100,
    work_dir: Path = Path("runs/strategies"),
    plot_path: Path | None = None,
    strategy_overrides: dict[str, dict[str, Any]] | None = None,
    reuse_runs: bool = False,
    bootstrap_resamples: int = BOOTSTRAP_RESAMPLES,
    ground_truth: GroundTruth | None = None,
    budget: str = "steps",
    workers: int = 1,
    val_images: int | None = None,
    results: Path | None = None,
) -> StrategyComparison:
    """Train each strategy for ``steps`` on ``base_config``'s task, evaluate, and write the results.

    Writes ``out_dir``/{strategies_evaluations,strategies_summary}.parquet and strategies_table.md,
    and the plot to ``plot_path`` (default ``out_dir``/strategies.png). Supernet runs go to
    ``work_dir`` (:func:`run_folder`): retrained each call, or with ``reuse_runs`` re-evaluated when
    the folder holds a finished run of the same job (same config, steps and seed; else retrained —
    each summary's ``reused_run`` says which), its subnets' scores read back when that checkpoint
    already scored them. Stand-alone results are read from ``standalone_cache`` when there, or,
    given ``ground_truth``, are its runs over several seeds (never trained here). The τ intervals
    use ``bootstrap_resamples`` resamples of the test images and of the ground truth's seeds,
    seeded by ``seed`` and shared by all strategies. With ``budget="passes"``, ``steps`` is a budget
    of subnet passes: each strategy trains it over its own passes per step (sandwich's four passes
    a step get a quarter of uniform's steps), the same-compute view. ``workers`` strategies train
    at once, one process each. ``val_images`` scores the validation estimates (*τ (val est.)*) on
    a seeded subset of the validation split. ``results`` keeps every strategy's finished share (its
    run record and scored subnets, not its weights) in a folder to commit: with ``reuse_runs``, a
    share found there is read back and nothing of it runs again. Every input is checked before
    anything trains.
    """
    # Imported here, not at the top: the report module imports this one for the data classes.
    from nasfleet.research.report import write_comparison

    plan = plan_comparison(
        base_config, strategies, steps, seed, num_subnets=num_subnets, nested_submodels=nested_submodels,
        work_dir=work_dir, strategy_overrides=strategy_overrides, bootstrap_resamples=bootstrap_resamples,
        budget=budget,
    )
    if workers < 1:
        raise NasfleetError(f"workers must be at least 1, got {workers}")
    if val_images is not None and val_images < 1:
        raise NasfleetError(f"val_images must be at least 1, got {val_images}")
    data = load_data(base_config.data)
    test_size = len(data.test)
    archs = [a for _, a in plan.subnets]
    if ground_truth is not None:
        standalone_runs = ground_truth_runs(plan.recipe, archs, ground_truth)
    else:
        standalone_runs = [[r] for r in standalone_results(plan.recipe, archs, standalone_cache)]
    standalone = [StandaloneResult.mean_of(runs) for runs in standalone_runs]
    comparison = StrategyComparison(
        steps, seed, base_config.data.batch_size, test_size, plan.subnets, standalone, standalone_runs,
        bootstrap_resamples, budget, threads=base_config.launch.threads, workers=workers,
    )
    indices = bootstrap_indices(test_size, bootstrap_resamples, seed)
    comparison.val_split_size = len(data.val)
    comparison.val_size = min(val_images or len(data.val), len(data.val))
    for done in run_strategies(plan.tasks(reuse_runs, val_images, results), workers):
        fixed_rows = [row.beside(truth) for row, truth in zip(done.fixed, standalone)]
        comparison.evaluations += fixed_rows + done.nested
        comparison.summaries.append(
            _summarise(done.strategy, plan.params[done.strategy], done.run, fixed_rows, done.nested, standalone,
                       standalone_runs, indices, seed)
        )
    comparison.files = write_comparison(comparison, out_dir, plot_path or out_dir / PLOT_FILE)
    return comparison
