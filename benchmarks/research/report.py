"""Turns a finished strategy comparison into files a reader sees: Parquet, Markdown tables, the plot, the page.

Kept apart from the comparison itself so that the wording and figures can change (and be tested
on a stored comparison) without touching how strategies are trained and evaluated.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from nasfleet.research.ranking_stats import (
    CONFIDENCE,
    METRICS,
    Interval,
    bootstrap_indices,
    kendall_tau_b,
    resampled_means,
    resolved_pairs,
    seed_resampled_means,
)
from nasfleet.research.standalone import ImageScores
from nasfleet.orchestrator.storage import resolve_storage, write_parquet_atomically
from nasfleet.research.comparison import NESTED_KEEP, POOL_SIZE, StrategyComparison, StrategySummary

EVALUATIONS_FILE = "strategies_evaluations.parquet"
SUMMARY_FILE = "strategies_summary.parquet"
TABLE_FILE = "strategies_table.md"


def write_comparison(comparison: StrategyComparison, out_dir: Path, plot_path: Path) -> dict[str, Path]:
    """The two Parquet files, the Markdown tables and the plot; returns their paths by kind."""
    fs, folder = resolve_storage(out_dir)
    files = {"evaluations": out_dir / EVALUATIONS_FILE, "summary": out_dir / SUMMARY_FILE}
    write_parquet_atomically(
        pa.Table.from_pylist([e.row() for e in comparison.evaluations]), fs, f"{folder}/{EVALUATIONS_FILE}"
    )
    summary_rows = [{**s.row(), "budget": comparison.budget, "seed": comparison.seed,
                     "batch_size": comparison.batch_size, "threads": comparison.threads} for s in comparison.summaries]
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


def summary_table(comparison: StrategyComparison) -> list[str]:
    """One row per strategy (steps, accuracies, τ and ρ with intervals, nested share, time) and its note."""
    level = f"{100 * CONFIDENCE:.0f}%"
    lines = [
        f"| strategy | steps | subnets/step | smallest | median | largest | τ accuracy [{level}] | ρ accuracy "
        f"| τ NLL [{level}] | ρ NLL | τ (val est.) | nested ≥ {100 * NESTED_KEEP:.0f}% | train s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in comparison.summaries:
        nested = "n/a" if s.nested_count == 0 else f"{_pct(s.nested_keep_fraction)} of {s.nested_count}"
        lines.append(
            f"| `{s.strategy}` | {s.steps} | {s.subnets_per_step:.2f} | {_pct(s.smallest_test)} | {_pct(s.median_test)} | "
            f"{_pct(s.largest_test)} | {_tau(s.kendall_tau, s.tau_interval)} | {_num(s.spearman_rho)} | "
            f"{_tau(s.kendall_tau_nll, s.tau_nll_interval)} | {_num(s.spearman_rho_nll)} | "
            f"{_num(s.kendall_tau_val)} | {nested} | {s.train_wall_s:.1f}{'†' if s.reused_run else ''} |"
        )
    seeds = min(len(runs) for runs in comparison.standalone_runs)
    also = f" and of the ground truth's {seeds} seeds" if seeds > 1 else ""
    note = (
        f"τ intervals: {level} bootstrap percentile intervals over {comparison.bootstrap_resamples:,} resamples of "
        f"the {comparison.test_size:,} test images{also}; **bold**: the interval excludes 0."
    )
    if any(s.reused_run for s in comparison.summaries):
        note += " †: supernet run reused (same job, finished); its training time was measured when it was trained."
    return lines + ["", note]


def comparison_markdown(comparison: StrategyComparison) -> str:
    """The summary table (one row per strategy), then the fixed set's per-subnet test accuracy and NLL."""
    lines = summary_table(comparison)
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
    budget = "optimizer steps" if comparison.budget == "steps" else "subnet passes"
    fig.suptitle(f"{comparison.steps} {budget}, batch {comparison.batch_size}, seed {comparison.seed}")
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
           title=f"τ with {100 * CONFIDENCE:.0f}% bootstrap intervals (test images, GT seeds)")


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
    """Paired bootstrap interval of τ(strategy) − τ(baseline): both on the same resampled test images
    and the same resampled ground-truth seeds."""
    indices = _indices(comparison)
    runs = [[r.test_scores for r in subnet_runs] for subnet_runs in comparison.standalone_runs]
    truth = seed_resampled_means(runs, metric, indices, np.random.default_rng(comparison.seed))
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
            f"({'; '.join(noisy_taus)}) are not evidence of a better ranking: another draw of the test images and of the ground truth's seeds could reverse them."
        )
    if clear_taus:
        sentences.append(
            f"\nτ wins whose paired {level} interval of the difference excludes 0: {'; '.join(clear_taus)}. "
            + ("This covers which test images were drawn, not a second training seed."
               if min(len(r) for r in comparison.standalone_runs) == 1 else
               "This covers which test images were drawn and the ground truth's seeds, not a second supernet seed.")
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


def _uncertainty_scope(comparison: StrategyComparison) -> str:
    """What the τ intervals cover, which depends on how many seeds the ground truth has."""
    if min(len(runs) for runs in comparison.standalone_runs) > 1:
        return (
            "On each resample every stand-alone subnet's seeds are resampled too, so the interval covers the "
            "ground truth's seed-to-seed noise as well; each supernet is trained once (one seed), and its own "
            "seed variance is not in the interval."
        )
    return (
        "It covers only the choice of test images: a second training seed of the supernet or of the "
        "stand-alone nets would add variance, so a real interval is wider."
    )


def _ground_truth_paragraph(comparison: StrategyComparison, trained_now: int) -> str:
    n = len(comparison.subnets)
    seeds = min(len(runs) for runs in comparison.standalone_runs)
    truth_steps = comparison.standalone_runs[0][0].steps
    if seeds == 1 and truth_steps == comparison.steps:
        made = (
            "The same subnets trained from scratch as plain networks with the same recipe (data, batches, optimizer, "
            "schedule, steps, seed; plain cross-entropy), cached in Parquet with their per-image test results so "
            f"each is trained once ({trained_now} trained in this run, {n - trained_now} read from the cache)."
        )
    else:
        made = (
            f"The same subnets trained from scratch as plain networks, apart from this comparison "
            f"(benchmarks/ground_truth.py): {truth_steps} optimizer steps of the job's recipe (plain "
            f"cross-entropy), {seeds} seeds each, read from its Parquet cache with their per-image test results. "
            "A subnet's ground truth is the mean over its seeds; the τ intervals resample the seeds as well as "
            "the test images, so they include the ground truth's own seed-to-seed noise."
        )
    return (
        f"**Ground truth.** {made} Kendall τ and Spearman ρ compare the supernet's estimate with the stand-alone "
        "result on the fixed set; *τ (val est.)* uses the supernet's validation accuracy as the estimate"
        f"{_val_scope(comparison)}."
    )


def _val_scope(comparison: StrategyComparison) -> str:
    if comparison.val_size and comparison.val_size < comparison.val_split_size:
        return (f", scored on a seeded subset of {comparison.val_size:,} of the {comparison.val_split_size:,} "
                "validation images (a search's cheaper estimate)")
    return ""


def _budget_paragraph(comparison: StrategyComparison) -> str:
    if comparison.budget == "steps":
        return (
            f"**Same budget.** Each strategy trains the supernet for {comparison.steps} optimizer steps on the same "
            f"seeded batches of {comparison.batch_size} images (the same samples seen), with the job's "
            "learning-rate schedule. A step may run several subnets (gradients accumulate): *subnets/step* is "
            "measured from the run's log, so the compute per step differs and the wall time shows it. Strategies "
            "with a schedule over the run (`total_steps`) get the same number of steps. "
        )
    return (
        f"**Same compute.** Each strategy trains the supernet for {comparison.steps} subnet passes (one "
        "subnet's forward and backward on a batch): its optimizer steps (*steps*) are that budget over the "
        "passes its schedule asks per step, so a strategy that runs four subnets a step gets a quarter of the "
        f"steps of one that runs one, on the same seeded batches of {comparison.batch_size} images, with the "
        "job's learning-rate schedule over its own steps. Passes differ in cost (the largest subnet's is the "
        "dearest), which the wall time shows. "
    )


def _same_compute_section(same_steps: StrategyComparison, same_compute: StrategyComparison, plot_relpath: str) -> list[str]:
    """The same-compute view beside the main one: its table, plot and verdicts, from its own run."""
    shared = [s.strategy for s in same_compute.summaries
              if s.steps == same_steps.summary(s.strategy).steps]
    return [
        "## Same compute",
        "",
        _budget_paragraph(same_compute)
        + "The fixed subnets, the ground truth and the test resamples are those above. "
        + (f"A strategy that runs one subnet a step gets the same run in both views ({', '.join(f'`{n}`' for n in shared)}); "
           "the others are trained again on their share of the passes." if shared else ""),
        "",
        *summary_table(same_compute),
        "",
        f"![the same-compute view: estimated vs stand-alone, τ intervals]({plot_relpath})",
        "",
        f"### Against `{BASELINE}` at the same compute",
        "",
        *findings(same_compute),
        "",
    ]


def render_doc(
    comparison: StrategyComparison,
    plot_relpath: str,
    command: str,
    same_compute: StrategyComparison | None = None,
    same_compute_plot: str = "",
) -> str:
    """docs/strategies.md: protocol, tables, plot and the verdicts, all from ``comparison``.

    ``same_compute``, the same strategies at the same subnet passes, adds its section after the
    main view's, so both budgets are read on one page against one ground truth.
    """
    n = len(comparison.subnets)
    trained_now = sum(not r.from_cache for r in comparison.standalone)
    reused = [f"`{s.strategy}`" for s in comparison.summaries if s.reused_run]
    params = "; ".join(f"`{s.strategy}` {json.dumps(s.params, sort_keys=True)}" for s in comparison.summaries)
    level = f"{100 * CONFIDENCE:.0f}%"
    budget = _budget_paragraph(comparison)
    at_once = f", {comparison.workers} strategies at a time" if comparison.workers > 1 else ""
    protocol = [
        budget + f"Wall times: each strategy in one process of its own{at_once}, "
        f"{comparison.threads} torch thread(s); compare them within this table only."
        + (f" Supernet runs reused from an earlier identical job (config, steps and seed checked): "
           f"{', '.join(reused)}; their training times are the ones measured then." if reused else ""),
        f"**Fixed subnet set.** {n} subnets chosen once (seeded): the smallest, the largest, and subnets at evenly "
        f"spaced MFLOPs quantiles of {POOL_SIZE:,} random subnets, one at the median. A supernet's accuracy and "
        "NLL for a subnet are measured after recalibrating batch norm for it.",
        _ground_truth_paragraph(comparison, trained_now),
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
        "each time, percentile interval. " + _uncertainty_scope(comparison),
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
            f"Produced by `{command}`; every number below comes from that one run "
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
            *(_same_compute_section(comparison, same_compute, same_compute_plot) if same_compute else []),
        ]
    )
