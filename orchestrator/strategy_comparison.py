"""Every training strategy on one task with one budget, judged by the same subnets.

Each strategy trains the supernet single-process for the same optimizer steps on the same seeded
batches (so the same samples seen); what differs is how many subnets a step runs, which the
results report. Every trained supernet is then evaluated on one fixed, seeded set of subnets
spanning the space (smallest, largest, and picks spread over the MFLOPs range), whose stand-alone
results (trained from scratch, cached) are the ground truth for the rank correlations (Kendall τ,
Spearman ρ) on test accuracy and on test cross-entropy (NLL, a continuous score that still ranks
when accuracies tie), each τ with a bootstrap interval over test images; and on a family of
nested sub-models (SortedNet's), where the question is how many keep ≥ 96% of the largest
member's accuracy.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from scipy import stats

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.checkpoint import CHECKPOINT_FILE
from nasfleet.orchestrator.config import TrainConfig, config_from_dict
from nasfleet.orchestrator.data import load_data
from nasfleet.orchestrator.evaluate import TrainedSupernet, load_trained
from nasfleet.orchestrator.standalone import (
    ImageScores,
    StandaloneCache,
    StandaloneResult,
    score_images,
    standalone_results,
)
from nasfleet.orchestrator.storage import resolve_storage, write_parquet_atomically
from nasfleet.orchestrator.trainer import CONFIG_FILE, METRICS_FILE, space_for_data, train
from nasfleet.strategies import build_strategy
from nasfleet.strategies.registry import STRATEGIES
from nasfleet.strategies.sorted import SortedStrategy
from nasfleet.supernet import Arch, MBConvSpace, SearchSpace, arch_to_json, calibrated_batchnorm

MIN_SUBNETS = 8
DEFAULT_SUBNETS = 12
BOOTSTRAP_RESAMPLES = 1000
CONFIDENCE = 0.95
"""Coverage of the bootstrap intervals, and the share of resamples a resolved pair must keep its order in."""
NESTED_KEEP = 0.96
POOL_SIZE = 4096
"""Random subnets whose MFLOPs quantiles place the fixed set's inner members."""

RUN_LENGTH_PARAMS: dict[str, float] = {"total_steps": 1.0, "warmup_steps": 0.5}
"""Strategy parameters that are a share of the run's steps (few-shot's one-shot warm-up: half)."""

EVALUATIONS_FILE = "strategies_evaluations.parquet"
SUMMARY_FILE = "strategies_summary.parquet"
TABLE_FILE = "strategies_table.md"
PLOT_FILE = "strategies.png"
RUN_RECORD_FILE = "comparison_run.json"
"""Written into a run folder after the comparison trained it: the measured training wall time."""


@dataclass(frozen=True)
class SubnetEvaluation:
    """One subnet of one strategy's supernet; stand-alone results and per-image scores only for the fixed set."""

    strategy: str
    subset: str  # "fixed" or "nested"
    role: str
    arch: Arch
    mflops: float
    params: int
    val_accuracy: float
    test_accuracy: float
    val_nll: float
    test_nll: float
    standalone_val_accuracy: float | None
    standalone_test_accuracy: float | None
    standalone_test_nll: float | None
    eval_wall_s: float
    test_scores: ImageScores | None = field(default=None, repr=False, compare=False)
    """Per-image test correctness and NLL (fixed set only), for the bootstrap."""

    def row(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "test_scores"}
        scores = self.test_scores
        return {
            **values,
            "arch": arch_to_json(self.arch),
            "arch_desc": self.arch.describe(),
            "test_correct": scores.correct.tolist() if scores is not None else None,
            "test_nll_per_image": scores.nll.tolist() if scores is not None else None,
        }


@dataclass(frozen=True)
class Interval:
    """A bootstrap percentile interval; ``undefined`` resamples (a constant side: τ has no value) are left out."""

    low: float
    high: float
    undefined: int = 0

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class RankingStatistics:
    """How well a supernet ranks the fixed set, on test accuracy and on test NLL, with τ intervals."""

    kendall_tau: float
    spearman_rho: float
    kendall_tau_interval: Interval
    kendall_tau_nll: float
    spearman_rho_nll: float
    kendall_tau_nll_interval: Interval


@dataclass(frozen=True)
class StrategySummary:
    strategy: str
    params: dict[str, Any]
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
    bootstrap_resamples: int = BOOTSTRAP_RESAMPLES
    summaries: list[StrategySummary] = field(default_factory=list)
    evaluations: list[SubnetEvaluation] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)

    def summary(self, strategy: str) -> StrategySummary:
        return next(s for s in self.summaries if s.strategy == strategy)


def rank_correlations(estimated: Sequence[float], truth: Sequence[float]) -> tuple[float, float]:
    """Kendall τ (τ-b, ties allowed) and Spearman ρ; NaN when either side is constant."""
    if len(estimated) != len(truth) or len(estimated) < 2:
        raise NasfleetError(
            f"rank correlation needs two equal-length lists of ≥ 2 values, got {len(estimated)} and {len(truth)}"
        )
    if len(set(estimated)) < 2 or len(set(truth)) < 2:
        return math.nan, math.nan
    return float(stats.kendalltau(estimated, truth).statistic), float(stats.spearmanr(estimated, truth).statistic)


def kendall_tau_b(estimated: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Kendall τ-b along the last axis (one row per resample); NaN where either side is constant.

    τ-b = Σ sign(eᵢ−eⱼ)·sign(tᵢ−tⱼ) / √(untied pairs in e · untied pairs in t), as scipy's, vectorised
    so a thousand resamples cost one array operation.
    """
    i, j = np.triu_indices(np.shape(estimated)[-1], k=1)
    e = np.sign(estimated[..., i] - estimated[..., j])
    t = np.sign(truth[..., i] - truth[..., j])
    denominator = np.sqrt((e * e).sum(axis=-1) * (t * t).sum(axis=-1))
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, (e * t).sum(axis=-1) / safe, np.nan)


def bootstrap_indices(num_images: int, resamples: int, seed: int) -> np.ndarray:
    """``resamples`` rows of ``num_images`` image indices drawn with replacement (seeded)."""
    if num_images < 1 or resamples < 1:
        raise NasfleetError(f"a bootstrap needs ≥ 1 image and ≥ 1 resample, got {num_images} and {resamples}")
    return np.random.default_rng(seed).integers(0, num_images, size=(resamples, num_images))


METRICS = ("accuracy", "nll")


def resampled_means(scores: Sequence[ImageScores], metric: str, indices: np.ndarray) -> np.ndarray:
    """[resamples, subnets]: each subnet's accuracy (correct-image count) or mean NLL on each resample.

    Accuracy is kept as a count so that equal accuracies tie exactly (floats of equal counts do too,
    but counts make it obvious).
    """
    if metric not in METRICS:
        raise NasfleetError(f"unknown ranking metric {metric!r} (known: {', '.join(METRICS)})")
    sizes = {len(s.correct) for s in scores}
    if len(sizes) != 1 or indices.max(initial=0) >= min(sizes):
        raise NasfleetError(f"per-image scores must cover the same images, got sizes {sorted(sizes)}")
    columns = [s.correct[indices].sum(axis=1) if metric == "accuracy" else s.nll[indices].mean(axis=1) for s in scores]
    return np.stack(columns, axis=1).astype(np.float64)


def bootstrap_tau(
    estimated: Sequence[ImageScores],
    truth: Sequence[ImageScores],
    metric: str,
    indices: np.ndarray,
    confidence: float = CONFIDENCE,
) -> Interval:
    """Percentile interval of Kendall τ between the two sides, both recomputed on each resample of images.

    Both sides are resampled with the same image indices (the same test images judge both), so the
    interval reflects which test images were drawn, not training-seed noise on either side.
    """
    taus = kendall_tau_b(resampled_means(estimated, metric, indices), resampled_means(truth, metric, indices))
    defined = taus[~np.isnan(taus)]
    if defined.size == 0:
        return Interval(math.nan, math.nan, len(taus))
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(defined, [tail, 100 - tail])
    return Interval(float(low), float(high), int(len(taus) - defined.size))


def ranking_statistics(
    estimated: Sequence[ImageScores], truth: Sequence[ImageScores], indices: np.ndarray
) -> RankingStatistics:
    """τ and ρ on test accuracy and on mean test NLL (full test set), each τ with its bootstrap interval."""
    tau, rho = rank_correlations([s.accuracy for s in estimated], [s.accuracy for s in truth])
    tau_nll, rho_nll = rank_correlations([s.mean_nll for s in estimated], [s.mean_nll for s in truth])
    return RankingStatistics(
        tau, rho, bootstrap_tau(estimated, truth, "accuracy", indices),
        tau_nll, rho_nll, bootstrap_tau(estimated, truth, "nll", indices),
    )


def resolved_pairs(scores: Sequence[ImageScores], metric: str, indices: np.ndarray) -> tuple[int, int]:
    """How many subnet pairs keep their full-test-set order (not a tie) in ≥ ``CONFIDENCE`` of resamples.

    A measure of how determined a ranking is by the test set: pairs that flip under resampling
    cannot be ranked by any estimate. Returns (resolved, all pairs).
    """
    full = np.array([s.accuracy if metric == "accuracy" else s.mean_nll for s in scores])
    i, j = np.triu_indices(len(scores), k=1)
    order = np.sign(full[i] - full[j])
    means = resampled_means(scores, metric, indices)
    kept = (np.sign(means[:, i] - means[:, j]) == order).mean(axis=0)
    return int(((order != 0) & (kept >= CONFIDENCE)).sum()), len(i)


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


def strategy_params(name: str, base: TrainConfig, steps: int, overrides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The strategy's parameters: explicit overrides, else the base config's (same strategy), else defaults.

    A ``total_steps`` parameter (a schedule over the run) is always the comparison's steps; other
    required run-length parameters not given (:data:`RUN_LENGTH_PARAMS`) get their share of the steps.
    """
    if name in overrides:
        params = dict(overrides[name])
    else:
        params = dict(base.strategy.params) if name == base.strategy.name else {}
    for field_name, info in STRATEGIES[name].Params.model_fields.items():
        fill = field_name in RUN_LENGTH_PARAMS and info.is_required() and field_name not in params
        if field_name == "total_steps" or fill:
            params[field_name] = round(RUN_LENGTH_PARAMS[field_name] * steps)
    return params


def _subnets_per_step(run_dir: Path) -> float:
    """Mean subnets per step, recovered from the run's logged throughput windows."""
    steps = subnets = 0.0
    for line in (run_dir / METRICS_FILE).read_text().splitlines():
        timing = json.loads(line)["timing"]
        elapsed = timing["steps"] * (timing["compute_s_per_step"] + timing["update_s_per_step"])
        steps += timing["steps"]
        subnets += timing["subnets_per_s"] * elapsed
    return subnets / steps if steps else math.nan


def score_subnet(trained: TrainedSupernet, arch: Arch, splits: Sequence[str]) -> dict[str, ImageScores]:
    """Per-image scores of one subnet of ``trained`` by split, after recalibrating batch norm for it.

    The same recalibration and forward pass as :func:`nasfleet.orchestrator.evaluate.evaluate_arch`
    (so the accuracies agree), keeping each image's outcome and cross-entropy as well.
    """
    trained.space.validate(arch)
    with calibrated_batchnorm(trained.model, arch, trained.calibration_batches()):
        return {split: score_images(lambda x: trained.model(x, arch), trained.data.split(split)) for split in splits}


def _evaluate(
    trained: TrainedSupernet,
    strategy: str,
    subset: str,
    archs: Sequence[tuple[str, Arch]],
    standalone: Sequence[StandaloneResult] | None,
) -> list[SubnetEvaluation]:
    """Val and test accuracy and NLL of each subnet of ``trained``, beside its stand-alone result if given."""
    truth: Sequence[StandaloneResult | None] = standalone if standalone is not None else [None] * len(archs)
    rows = []
    for (role, arch), s in zip(archs, truth):
        started = time.perf_counter()
        scores = score_subnet(trained, arch, ("val", "test"))
        wall_s = time.perf_counter() - started
        val, test = scores["val"], scores["test"]
        rows.append(
            SubnetEvaluation(
                strategy, subset, role, arch, trained.space.flops(arch) / 1e6, trained.space.params(arch),
                val.accuracy, test.accuracy, val.mean_nll, test.mean_nll,
                s.accuracy["val"] if s else None, s.accuracy["test"] if s else None, s.nll["test"] if s else None,
                wall_s, test if s else None,
            )
        )
    return rows


def _summarise(
    name: str,
    params: dict[str, Any],
    run: SupernetRun,
    fixed: list[SubnetEvaluation],
    nested: list[SubnetEvaluation],
    standalone: Sequence[StandaloneResult],
    indices: np.ndarray,
) -> StrategySummary:
    by_role = {e.role: e.test_accuracy for e in fixed}
    truth = [r.accuracy["test"] for r in standalone]
    estimated = [e.test_scores for e in fixed]  # always present on the fixed set
    ranking = ranking_statistics(estimated, [r.test_scores for r in standalone], indices)  # type: ignore[arg-type]
    tau_val, rho_val = rank_correlations([e.val_accuracy for e in fixed], truth)
    keep = math.nan
    if nested:
        reference = nested[-1].test_accuracy  # the family's largest member comes last
        keep = sum(e.test_accuracy >= NESTED_KEEP * reference for e in nested) / len(nested)
    return StrategySummary(
        strategy=name,
        params=params,
        subnets_per_step=_subnets_per_step(run.run_dir),
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
        run_checkpoint=run.trained.checkpoint_id,
    )


@dataclass(frozen=True)
class SupernetRun:
    """A strategy's trained supernet, how long training took, and whether this call trained it."""

    run_dir: Path
    trained: TrainedSupernet
    train_wall_s: float
    reused: bool


def _same_job(stored: TrainConfig, job: TrainConfig) -> bool:
    """Whether a stored run was trained by ``job``: every setting equal except where the folder is."""
    def settings(config: TrainConfig) -> dict[str, Any]:
        return config.model_dump(mode="json", exclude={"run_dir"})

    return settings(stored) == settings(job)


def _recorded_train_wall_s(run_dir: Path) -> float:
    """The training wall time recorded when the run was made.

    Runs trained before the record existed fall back to the span from the config file (written as
    training starts) to the checkpoint's last write (as it ends), which matches the measured time
    to within milliseconds on the runs that have both.
    """
    record = run_dir / RUN_RECORD_FILE
    if record.is_file():
        return float(json.loads(record.read_text())["train_wall_s"])
    return (run_dir / CHECKPOINT_FILE).stat().st_mtime - (run_dir / CONFIG_FILE).stat().st_mtime


def finished_run(job: TrainConfig) -> SupernetRun | None:
    """The finished run of ``job`` in ``job.run_dir``, or None when there is none, it stopped early,
    it was trained with other settings, or it cannot be read."""
    run_dir = job.run_dir
    if not all((run_dir / name).is_file() for name in (CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE)):
        return None
    try:
        trained = load_trained(run_dir)
    except NasfleetError:
        return None
    if trained.step != job.optim.steps or not _same_job(trained.config, job):
        return None
    return SupernetRun(run_dir, trained, _recorded_train_wall_s(run_dir), reused=True)


def supernet_run(job: TrainConfig, reuse: bool) -> SupernetRun:
    """``job``'s supernet: its finished run when ``reuse`` and valid, else trained anew in a cleared folder."""
    if reuse:
        found = finished_run(job)
        if found is not None:
            return found
    shutil.rmtree(job.run_dir, ignore_errors=True)
    started = time.perf_counter()
    train(job, show_progress=False)
    train_wall_s = time.perf_counter() - started
    (job.run_dir / RUN_RECORD_FILE).write_text(json.dumps({"train_wall_s": train_wall_s}) + "\n")
    return SupernetRun(job.run_dir, load_trained(job.run_dir), train_wall_s, reused=False)


def _validate(
    strategies: Sequence[str], steps: int, num_subnets: int, nested_submodels: int, bootstrap_resamples: int
) -> None:
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


def compare_strategies(
    base_config: TrainConfig,
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
) -> StrategyComparison:
    """Train each strategy for ``steps`` on ``base_config``'s task, evaluate, and write the results.

    Writes ``out_dir``/{strategies_evaluations,strategies_summary}.parquet and strategies_table.md,
    and the plot to ``plot_path`` (default ``out_dir``/strategies.png). Supernet runs go to
    ``work_dir``/<strategy>: retrained each call, or with ``reuse_runs`` re-evaluated when the folder
    holds a finished run of the same job (same config, steps and seed; else retrained — each
    summary's ``reused_run`` says which). Stand-alone results are read from ``standalone_cache``
    when there. The τ intervals use ``bootstrap_resamples`` resamples of the test images, seeded by
    ``seed`` and shared by all strategies. Every input is checked before anything trains.
    """
    _validate(strategies, steps, num_subnets, nested_submodels, bootstrap_resamples)
    overrides = strategy_overrides or {}
    data = load_data(base_config.data)
    space = space_for_data(base_config, data)
    params = {name: strategy_params(name, base_config, steps, overrides) for name in strategies}
    for name in strategies:  # a bad parameter or an unsupported space fails here, not mid-way
        build_strategy(name, params[name], space)
    subnets = fixed_subnets(space, num_subnets, seed)
    sorted_params = strategy_params(SortedStrategy.name, base_config, steps, overrides)
    nested = [(f"nested-{i}", a) for i, a in enumerate(nested_family(space, sorted_params, nested_submodels))]

    def job(name: str | None, **update: Any) -> TrainConfig:
        strategy = {"name": name, "params": params[name]} if name else base_config.strategy.model_dump()
        return config_from_dict(
            {
                **base_config.model_dump(),
                "seed": seed,
                "strategy": strategy,
                "optim": {**base_config.optim.model_dump(), "steps": steps},
                **update,
            },
            "strategy comparison config",
        )

    standalone = standalone_results(job(None), [a for _, a in subnets], standalone_cache)
    comparison = StrategyComparison(
        steps, seed, base_config.data.batch_size, len(data.test), subnets, standalone, bootstrap_resamples
    )
    indices = bootstrap_indices(len(data.test), bootstrap_resamples, seed)
    for name in strategies:
        run = supernet_run(job(name, run_dir=work_dir / name), reuse_runs)
        fixed_rows = _evaluate(run.trained, name, "fixed", subnets, standalone)
        nested_rows = _evaluate(run.trained, name, "nested", nested, None)
        comparison.evaluations += fixed_rows + nested_rows
        comparison.summaries.append(_summarise(name, params[name], run, fixed_rows, nested_rows, standalone, indices))
    comparison.files = write_comparison(comparison, out_dir, plot_path or out_dir / PLOT_FILE)
    return comparison


# -- output --------------------------------------------------------------------------------------


def write_comparison(comparison: StrategyComparison, out_dir: Path, plot_path: Path) -> dict[str, Path]:
    """The two Parquet files, the Markdown tables and the plot; returns their paths by kind."""
    fs, folder = resolve_storage(out_dir)
    files = {"evaluations": out_dir / EVALUATIONS_FILE, "summary": out_dir / SUMMARY_FILE}
    write_parquet_atomically(
        pa.Table.from_pylist([e.row() for e in comparison.evaluations]), fs, f"{folder}/{EVALUATIONS_FILE}"
    )
    summary_rows = [{**s.row(), "steps": comparison.steps, "seed": comparison.seed,
                     "batch_size": comparison.batch_size} for s in comparison.summaries]
    write_parquet_atomically(pa.Table.from_pylist(summary_rows), fs, f"{folder}/{SUMMARY_FILE}")
    files["table"] = out_dir / TABLE_FILE
    files["table"].write_text(comparison_markdown(comparison))
    files["plot"] = plot_path
    plot_comparison(comparison, plot_path)
    return files


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.2f}%"


def _num(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def _tau(value: float, interval: Interval) -> str:
    """τ with its interval; bold when the interval excludes 0."""
    if math.isnan(value):
        return "n/a"
    text = f"{value:.3f} [{interval.low:.2f}, {interval.high:.2f}]"
    return f"**{text}**" if interval.excludes_zero else text


def _per_subnet_table(
    comparison: StrategyComparison, title: str, attr: str, shown: Callable[[float], str], truth: list[float]
) -> list[str]:
    """One row per fixed subnet: the stand-alone value, then each strategy's supernet estimate of ``attr``."""
    names = [s.strategy for s in comparison.summaries]
    estimate = {(e.strategy, e.role): getattr(e, attr) for e in comparison.evaluations if e.subset == "fixed"}
    lines = [
        "",
        f"| subnet | arch | MFLOPs | stand-alone {title} | " + " | ".join(f"`{n}`" for n in names) + " |",
        "|---|---|---:|---:|" + "---:|" * len(names),
    ]
    for (role, arch), result, value in zip(comparison.subnets, comparison.standalone, truth):
        cells = " | ".join(shown(estimate[(n, role)]) for n in names)
        lines.append(f"| {role} | `{arch.describe()}` | {result.mflops:.3f} | {shown(value)} | {cells} |")
    return lines


def comparison_markdown(comparison: StrategyComparison) -> str:
    """The summary table (one row per strategy), then the fixed set's per-subnet test accuracy and NLL."""
    level = f"{100 * CONFIDENCE:.0f}%"
    lines = [
        f"| strategy | subnets/step | smallest | median | largest | τ accuracy [{level}] | ρ accuracy "
        f"| τ NLL [{level}] | ρ NLL | τ (val est.) | nested ≥ {100 * NESTED_KEEP:.0f}% | train s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in comparison.summaries:
        nested = "n/a" if s.nested_count == 0 else f"{_pct(s.nested_keep_fraction)} of {s.nested_count}"
        lines.append(
            f"| `{s.strategy}` | {s.subnets_per_step:.2f} | {_pct(s.smallest_test)} | {_pct(s.median_test)} | "
            f"{_pct(s.largest_test)} | {_tau(s.kendall_tau, s.tau_interval)} | {_num(s.spearman_rho)} | "
            f"{_tau(s.kendall_tau_nll, s.tau_nll_interval)} | {_num(s.spearman_rho_nll)} | "
            f"{_num(s.kendall_tau_val)} | {nested} | {s.train_wall_s:.1f}{'†' if s.reused_run else ''} |"
        )
    note = (
        f"τ intervals: {level} bootstrap percentile intervals over {comparison.bootstrap_resamples:,} resamples of "
        f"the {comparison.test_size} test images; **bold**: the interval excludes 0."
    )
    if any(s.reused_run for s in comparison.summaries):
        note += " †: supernet run reused (same job, finished); its training time was measured when it was trained."
    lines += ["", note]
    lines += _per_subnet_table(comparison, "test accuracy", "test_accuracy", _pct,
                               [r.accuracy["test"] for r in comparison.standalone])
    lines += _per_subnet_table(comparison, "test NLL", "test_nll", lambda v: f"{v:.4f}",
                               [r.nll["test"] for r in comparison.standalone])
    return "\n".join(lines) + "\n"


def plot_comparison(comparison: StrategyComparison, path: Path) -> None:
    """Supernet-estimated vs stand-alone test accuracy and NLL; τ with intervals; accuracy vs MFLOPs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ((acc, nll), (taus, flops)) = plt.subplots(2, 2, figsize=(13, 10))
    truth = [100 * r.accuracy["test"] for r in comparison.standalone]
    truth_nll = [r.nll["test"] for r in comparison.standalone]
    markers = "osD^v<>pPX*h"
    for i, s in enumerate(comparison.summaries):
        marker = markers[i % len(markers)]
        fixed = [e for e in comparison.evaluations if e.strategy == s.strategy and e.subset == "fixed"]
        acc.scatter(truth, [100 * e.test_accuracy for e in fixed], marker=marker,
                    label=f"{s.strategy} (τ {_num(s.kendall_tau)})")
        nll.scatter(truth_nll, [e.test_nll for e in fixed], marker=marker,
                    label=f"{s.strategy} (τ {_num(s.kendall_tau_nll)})")
        nested = [e for e in comparison.evaluations if e.strategy == s.strategy and e.subset == "nested"]
        shown = nested or fixed
        flops.plot([e.mflops for e in shown], [100 * e.test_accuracy for e in shown], marker=marker,
                   markersize=4, linestyle="none", alpha=0.7, label=s.strategy)
    low = min(truth + [100 * e.test_accuracy for e in comparison.evaluations if e.subset == "fixed"])
    acc.plot([low, 100.0], [low, 100.0], color="grey", linewidth=0.8, linestyle="--")
    acc.set(xlabel="stand-alone test accuracy (%)", ylabel="supernet-estimated test accuracy (%)",
            title=f"Accuracy, fixed set of {len(truth)} subnets")
    nll.set(xscale="log", yscale="log", xlabel="stand-alone test NLL", ylabel="supernet-estimated test NLL",
            title="Cross-entropy (NLL), same subnets")
    _plot_tau_intervals(taus, comparison)
    flops.scatter([r.mflops for r in comparison.standalone], truth, color="black", marker="s", zorder=5,
                  label="stand-alone (fixed set)")
    which = "nested sub-models" if any(e.subset == "nested" for e in comparison.evaluations) else "fixed set"
    flops.set(xlabel="MFLOPs", ylabel="test accuracy (%)", title=f"Accuracy vs MFLOPs ({which})")
    for ax in (acc, nll, taus, flops):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{comparison.steps} optimizer steps, batch {comparison.batch_size}, seed {comparison.seed}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_tau_intervals(ax: Any, comparison: StrategyComparison) -> None:
    """Each strategy's τ on accuracy and on NLL with its bootstrap interval, side by side."""
    names = [s.strategy for s in comparison.summaries]
    positions = np.arange(len(names))
    for offset, label, point, interval in (
        (-0.15, "τ on accuracy", "kendall_tau", "tau_interval"),
        (0.15, "τ on NLL", "kendall_tau_nll", "tau_nll_interval"),
    ):
        values = np.array([getattr(s, point) for s in comparison.summaries])
        bounds = [getattr(s, interval) for s in comparison.summaries]
        errors = np.array([[v - b.low for v, b in zip(values, bounds)], [b.high - v for v, b in zip(values, bounds)]])
        ax.errorbar(positions + offset, values, yerr=np.nan_to_num(errors), fmt="o", capsize=3, label=label)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xticks(positions, names, rotation=30, ha="right")
    ax.set(ylabel="Kendall τ vs stand-alone", ylim=(-1.05, 1.05),
           title=f"τ with {100 * CONFIDENCE:.0f}% bootstrap intervals (test images)")


# -- the document ---------------------------------------------------------------------------------

BASELINE = "uniform"
COMPARED: tuple[tuple[str, str, str], ...] = (
    # (summary field, name in prose, kind: a test accuracy, a correlation or a share)
    ("smallest_test", "smallest-subnet accuracy", "accuracy"),
    ("median_test", "median-subnet accuracy", "accuracy"),
    ("largest_test", "largest-subnet accuracy", "accuracy"),
    ("kendall_tau", "Kendall τ", "correlation"),
    ("kendall_tau_nll", "Kendall τ on NLL", "correlation"),
    ("nested_keep_fraction", f"nested sub-models keeping ≥ {100 * NESTED_KEEP:.0f}%", "share"),
)
TAU_METRICS = {"kendall_tau": "accuracy", "kendall_tau_nll": "nll"}
"""The summary's τ fields and the per-image metric each ranks by."""
METRIC_NAMES = {"accuracy": "accuracy", "nll": "NLL"}
NOISE_IMAGES = 2
"""Test accuracies this many images apart or closer are within the noise of one seed."""


def fixed_scores(comparison: StrategyComparison, strategy: str) -> list[ImageScores]:
    """A strategy's per-image test scores on the fixed set, in the order of ``comparison.subnets``."""
    rows = {e.role: e.test_scores for e in comparison.evaluations if e.strategy == strategy and e.subset == "fixed"}
    return [rows[role] for role, _ in comparison.subnets]  # type: ignore[misc]


def _indices(comparison: StrategyComparison) -> np.ndarray:
    """The comparison's bootstrap resamples (the same seeded draw as its τ intervals)."""
    return bootstrap_indices(comparison.test_size, comparison.bootstrap_resamples, comparison.seed)


def tau_difference(comparison: StrategyComparison, strategy: str, baseline: str, metric: str) -> Interval:
    """Paired bootstrap interval of τ(strategy) − τ(baseline): both on the same resampled test images."""
    indices = _indices(comparison)
    truth = resampled_means([r.test_scores for r in comparison.standalone], metric, indices)
    taus = [kendall_tau_b(resampled_means(fixed_scores(comparison, name), metric, indices), truth)
            for name in (strategy, baseline)]
    difference = taus[0] - taus[1]
    defined = difference[~np.isnan(difference)]
    if defined.size == 0:
        return Interval(math.nan, math.nan, len(difference))
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(defined, [tail, 100 - tail])
    return Interval(float(low), float(high), int(len(difference) - defined.size))


def _compare(label: str, kind: str, mine: float, theirs: float, test_size: int) -> str:
    shown = f"{label} ({_num(mine) if kind == 'correlation' else _pct(mine)} vs "
    shown += _num(theirs) if kind == "correlation" else _pct(theirs)
    if kind == "accuracy" and mine != theirs:
        images = round((mine - theirs) * test_size)
        shown += f", {images:+d} image{'' if abs(images) == 1 else 's'}"
    return shown + ")"


def _win_within_noise(s: StrategySummary, base: StrategySummary, test_size: int) -> bool:
    """Whether ``s`` beats ``base`` on some accuracy only by ``NOISE_IMAGES`` test images or fewer."""
    return any(
        0 < round((getattr(s, attr) - getattr(base, attr)) * test_size) <= NOISE_IMAGES
        for attr, _, kind in COMPARED
        if kind == "accuracy"
    )


def _tau_wins(comparison: StrategyComparison, baseline: str) -> tuple[list[str], list[str]]:
    """τ wins over ``baseline`` whose paired difference interval includes 0 (noise) and those that exclude it."""
    base = comparison.summary(baseline)
    noisy, clear = [], []
    for s in comparison.summaries:
        for attr, metric in TAU_METRICS.items():
            if s.strategy == baseline or not getattr(s, attr) > getattr(base, attr):
                continue
            gap = tau_difference(comparison, s.strategy, baseline, metric)
            text = f"`{s.strategy}` on {METRIC_NAMES[metric]} (difference [{gap.low:+.2f}, {gap.high:+.2f}])"
            (clear if gap.excludes_zero else noisy).append(text)
    return noisy, clear


def findings(comparison: StrategyComparison, baseline: str = BASELINE) -> list[str]:
    """Where each strategy beats ``baseline`` and, plainly, where it does not; then what cannot separate them.

    "Beats" means strictly higher; equal or not comparable (n/a) counts as not beating. τ wins are
    then checked with a paired bootstrap of the τ difference, which needs the per-image scores.
    """
    names = [s.strategy for s in comparison.summaries]
    if baseline not in names:
        return [f"`{baseline}` was not part of this run, so no strategy is compared with it."]
    base = comparison.summary(baseline)
    sentences = []
    for s in comparison.summaries:
        if s.strategy == baseline:
            continue
        wins, losses = [], []
        for attr, label, kind in COMPARED:
            mine, theirs = getattr(s, attr), getattr(base, attr)
            shown = _compare(label, kind, mine, theirs, comparison.test_size)
            (wins if mine > theirs else losses).append(shown)  # NaN compares False: not a win
        verdict = f"beats `{baseline}` on {', '.join(wins)}" if wins else f"beats `{baseline}` on none of these"
        if losses:
            verdict += f"; it does **not** beat `{baseline}` on {', '.join(losses)}"
        cost = (
            f"{s.subnets_per_step:.2f} subnets/step vs {base.subnets_per_step:.2f}, "
            f"{s.train_wall_s:.1f} s vs {base.train_wall_s:.1f} s"
        )
        sentences.append(f"- `{s.strategy}` {verdict} (cost: {cost}).")
    others = [s for s in comparison.summaries if s.strategy != baseline]
    noisy = [f"`{s.strategy}`" for s in others if _win_within_noise(s, base, comparison.test_size)]
    if noisy:
        sentences.append(
            f"\nAccuracy wins of ≤ {NOISE_IMAGES} test images (by {', '.join(noisy)}) are within the noise of one "
            "seed: they are not evidence that the method is better at this scale."
        )
    noisy_taus, clear_taus = _tau_wins(comparison, baseline)
    level = f"{100 * CONFIDENCE:.0f}%"
    if noisy_taus:
        sentences.append(
            f"\nτ wins whose paired bootstrap {level} interval of the difference from `{baseline}` includes 0 "
            f"({'; '.join(noisy_taus)}) are not evidence of a better ranking: the test images alone could reverse them."
        )
    if clear_taus:
        sentences.append(
            f"\nτ wins whose paired {level} interval of the difference excludes 0: {'; '.join(clear_taus)}. "
            "This covers which test images were drawn, not a second training seed."
        )
    saturated = [s for s in comparison.summaries if s.nested_count and s.nested_keep_fraction == 1.0]
    if len(saturated) > len(comparison.summaries) / 2:
        sentences.append(
            f"\n{len(saturated)} of {len(comparison.summaries)} strategies keep every evaluated nested sub-model "
            f"within {100 * NESTED_KEEP:.0f}% of their largest, so that criterion does not separate them here."
        )
    return sentences


WEAK_SPREAD_IMAGES = 3
"""A stand-alone accuracy range of at most this many test images makes a weak ranking ground truth."""


def _ground_truth_spread(comparison: StrategyComparison) -> str:
    """How far apart the stand-alone results are, and how many pairs the test set can order at all."""
    accuracies = [r.accuracy["test"] for r in comparison.standalone]
    nlls = [r.nll["test"] for r in comparison.standalone]
    images = round((max(accuracies) - min(accuracies)) * comparison.test_size)
    indices = _indices(comparison)
    truth = [r.test_scores for r in comparison.standalone]
    (acc_resolved, pairs), (nll_resolved, _) = (resolved_pairs(truth, m, indices) for m in METRICS)
    text = (
        f"**Ground-truth spread.** Stand-alone test accuracy ranges over {_pct(min(accuracies))}–"
        f"{_pct(max(accuracies))}: {images} test image(s) between the best and the worst of the {len(accuracies)} "
        f"subnets, with {len(set(accuracies))} distinct values; stand-alone test NLL ranges over "
        f"{min(nlls):.4f}–{max(nlls):.4f} with {len(set(nlls))} distinct values. Of the {pairs} subnet pairs, "
        f"{acc_resolved} keep their stand-alone accuracy order (not a tie) in ≥ {100 * CONFIDENCE:.0f}% of the "
        f"bootstrap resamples, and {nll_resolved} keep their NLL order: that is how much of each ground-truth "
        "ranking the test set determines."
    )
    if images <= WEAK_SPREAD_IMAGES:
        text += (
            " An accuracy range that small is within noise of one seed, so the accuracy τ / ρ columns say little "
            "about which strategy ranks subnets better."
        )
    if max(acc_resolved, nll_resolved) < pairs / 2:
        text += (
            " Most of the ground-truth order, on either target, is itself within test-set noise: no supernet "
            "could show a narrow τ interval against it. A larger test set, or several seeds of the stand-alone "
            "nets, would be needed for a sharper measurement."
        )
    return text


def _interval_reading(comparison: StrategyComparison) -> list[str]:
    """Per ranking target: which strategies' τ intervals exclude 0 (either sign) and which do not."""
    lines = []
    for attr, metric, label in (("kendall_tau_nll", "nll", "NLL"), ("kendall_tau", "accuracy", "accuracy")):
        interval = "tau_nll_interval" if metric == "nll" else "tau_interval"
        positive, negative, undetermined = [], [], []
        for s in comparison.summaries:
            bounds: Interval = getattr(s, interval)
            shown = f"`{s.strategy}` ({_num(getattr(s, attr))} [{bounds.low:.2f}, {bounds.high:.2f}])"
            (positive if bounds.low > 0 else negative if bounds.high < 0 else undetermined).append(shown)
        parts = []
        if positive:
            parts.append(f"excludes 0 on the positive side for {', '.join(positive)}: those supernets rank the "
                         "subnets better than chance on this test set")
        if negative:
            parts.append(f"lies below 0 for {', '.join(negative)}: those supernets rank them in reverse")
        if undetermined:
            parts.append(f"includes 0 for {', '.join(undetermined)}: no ranking ability is shown")
        lines.append(f"- **τ on {label}.** The {100 * CONFIDENCE:.0f}% interval " + "; it ".join(parts) + ".")
    clear = [s for s in comparison.summaries if s.tau_interval.excludes_zero or s.tau_nll_interval.excludes_zero]
    if not clear:
        lines.append(
            "- **Verdict.** No strategy's τ interval excludes 0 on either target, so this run cannot show that any "
            "of these supernets ranks the fixed subnets like stand-alone training does, nor that one strategy "
            "ranks better than another; the point values of τ above should not be read as a ranking of strategies."
        )
    return lines


def render_doc(comparison: StrategyComparison, plot_relpath: str, command: str) -> str:
    """docs/strategies.md: protocol, tables, plot and the verdicts, all from ``comparison``."""
    n = len(comparison.subnets)
    trained_now = sum(not r.from_cache for r in comparison.standalone)
    reused = [f"`{s.strategy}`" for s in comparison.summaries if s.reused_run]
    params = "; ".join(f"`{s.strategy}` {json.dumps(s.params, sort_keys=True)}" for s in comparison.summaries)
    level = f"{100 * CONFIDENCE:.0f}%"
    protocol = [
        f"**Same budget.** Each strategy trains the supernet for {comparison.steps} optimizer steps on the same "
        f"seeded batches of {comparison.batch_size} images (the same samples seen), with the job's learning-rate "
        "schedule. A step may run several subnets (gradients accumulate): *subnets/step* is measured from the "
        "run's log, so the compute per step differs and the wall time shows it. Strategies with a schedule over "
        f"the run (`total_steps`) get the same number of steps. Wall times: one process, "
        f"{torch.get_num_threads()} torch thread(s); compare them within this table only."
        + (f" Supernet runs reused from an earlier identical job (config, steps and seed checked): "
           f"{', '.join(reused)}; their training times are the ones measured then." if reused else ""),
        f"**Fixed subnet set.** {n} subnets chosen once (seeded): the smallest, the largest, and subnets at evenly "
        f"spaced MFLOPs quantiles of {POOL_SIZE:,} random subnets, one at the median. A supernet's accuracy and "
        "NLL for a subnet are measured after recalibrating batch norm for it.",
        "**Ground truth.** The same subnets trained from scratch as plain networks with the same recipe (data, "
        "batches, optimizer, schedule, steps, seed; plain cross-entropy), cached in Parquet with their per-image "
        f"test results so each is trained once ({trained_now} trained in this run, {n - trained_now} read from "
        "the cache). Kendall τ and Spearman ρ compare the supernet's estimate with the stand-alone result on the "
        "fixed set; *τ (val est.)* uses the supernet's validation accuracy as the estimate.",
        "**Two ranking targets.** *Accuracy* is what a search optimises, but when the stand-alone subnets are "
        "only a few test images apart (see the ground-truth spread below) their accuracies tie often and an "
        "accuracy ranking is mostly decided by which few images happen to be hard. *NLL* is the mean test "
        "cross-entropy (−log of the probability given to the true label): it moves with every image's "
        "confidence, not only when a prediction flips, so it still orders subnets whose accuracies tie. τ on NLL "
        "asks whether the supernet's shared weights, given to a subnet, fit the test data in the same order as "
        "that subnet's own weights trained alone. It is a proxy for the accuracy ranking, not the same thing; "
        "it is reported beside accuracy because it ties far less (how much of it the test set actually "
        "determines is in the ground-truth spread below).",
        f"**Uncertainty.** Each τ comes with a {level} bootstrap interval: the {comparison.test_size} test images "
        f"resampled with replacement {comparison.bootstrap_resamples:,} times (seed {comparison.seed}, the same "
        "resamples for every strategy), both sides' per-subnet accuracy and NLL recomputed on each resample, τ "
        "each time, percentile interval. It covers only the choice of test images: a second training seed of "
        "the supernet or of the stand-alone nets would add variance, so a real interval is wider.",
        "**Nested sub-models.** SortedNet's family of nested sub-models (as `sorted` trains them), evaluated on "
        f"every strategy's supernet: the share whose test accuracy is ≥ {100 * NESTED_KEEP:.0f}% of the family's "
        "largest. The share is relative to that supernet's own largest member, so read it beside *largest*: a weak "
        "largest subnet makes the criterion easy.",
        f"**Parameters** (each strategy's defaults otherwise): {params}.",
        f"**Resolution.** The test split has {comparison.test_size} images: one image is "
        f"{100 / comparison.test_size:.2f} points. With one seed, a difference of one or two images is noise, as "
        f"is a τ difference of one swapped pair (1 of {n * (n - 1) // 2} pairs, {4 / (n * (n - 1)):.3f} in τ).",
        _ground_truth_spread(comparison),
    ]
    return "\n".join(
        [
            "# Training strategies compared",
            "",
            f"Produced by `{command}` (single process); every number below comes from that one run "
            f"(seed {comparison.seed}). Rerun it to refresh this page, e.g. after a strategy is added: it takes "
            "every strategy registered at the time unless `--strategies` narrows it.",
            "",
            "## Protocol",
            "",
            *(f"- {item}" for item in protocol),
            "",
            "## Results",
            "",
            comparison_markdown(comparison),
            f"![supernet-estimated vs stand-alone accuracy and NLL, τ intervals, accuracy vs MFLOPs]({plot_relpath})",
            "",
            "## Reading the rank correlations",
            "",
            *_interval_reading(comparison),
            "",
            f"## Against `{BASELINE}`",
            "",
            "Strictly higher counts as beating; a tie does not.",
            "",
            *findings(comparison),
            "",
        ]
    )
