"""The strategy comparison harness and stand-alone training, on the tiny digits config."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from scipy import stats
from typer.testing import CliRunner

from conftest import tiny_config
from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.data import load_data
from nasfleet.orchestrator.evaluate import evaluate_arch, load_trained
from nasfleet.research.cli import bench_app
from nasfleet.research.standalone import (
    ImageScores,
    StandaloneCache,
    standalone_recipe,
    standalone_results,
    train_standalone,
)
from nasfleet.research.ranking_stats import bootstrap_indices, kendall_tau_b, rank_correlations, ranking_statistics
from nasfleet.research.comparison import (
    DEFAULT_SUBNETS,
    MIN_SUBNETS,
    NESTED_KEEP,
    GroundTruth,
    StrategyComparison,
    compare_strategies,
    fixed_subnets,
    strategy_params,
    strategy_steps,
)
from nasfleet.research.strategy_runs import RUN_RECORD_FILE, SCORES_PREFIX, run_folder, score_subnet
from nasfleet.research.report import findings, fixed_scores, render_doc
from nasfleet.research.strategy_bench import run_strategy_bench
from nasfleet.orchestrator.train import SUPERNET_FILE, completed_checkpoints, job_space
from nasfleet.strategies import STRATEGIES, build_strategy, strategy_class

NASFLEET = Path(sys.executable).parent / "nasfleet"
STEPS = 6
NESTED = 10


def run_comparison(root: Path, strategies: list[str], cache: StandaloneCache, workers: int = 1) -> StrategyComparison:
    return compare_strategies(
        tiny_config(root / "unused"), strategies, STEPS, 1, root / "out", cache,
        num_subnets=8, nested_submodels=NESTED, work_dir=root / "runs", workers=workers,
    )


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[StrategyComparison, StrategyComparison, Path]:
    """The same comparison twice against one stand-alone cache (the second narrowed to uniform, in this
    process; the first trains its two strategies in two worker processes at once)."""
    root = tmp_path_factory.mktemp("compare")
    cache = StandaloneCache(root / "cache")
    first = run_comparison(root / "a", ["uniform", "sandwich"], cache, workers=2)
    second = run_comparison(root / "b", ["uniform"], cache)
    return first, second, root / "cache"


def test_rank_correlations_on_a_constructed_case() -> None:
    # One swapped pair of four: 5 concordant, 1 discordant pair → τ = 4/6; Σd² = 2 → ρ = 1 − 12/60.
    tau, rho = rank_correlations([0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.8, 0.7])
    assert tau == pytest.approx(2 / 3)
    assert rho == pytest.approx(0.8)
    assert rank_correlations([1, 2, 3], [3, 2, 1]) == pytest.approx((-1.0, -1.0))
    assert all(math.isnan(v) for v in rank_correlations([0.5, 0.5, 0.5], [1, 2, 3]))
    with pytest.raises(NasfleetError):
        rank_correlations([1, 2], [1, 2, 3])


def constant_scores(nll: float, correct: list[bool]) -> ImageScores:
    """Scores whose every image has the same NLL: any resample has the same mean NLL."""
    return ImageScores(np.array(correct), np.full(len(correct), nll))


def test_tau_on_nll_on_a_constructed_case() -> None:
    # Same constructed ranks as above, now as mean NLLs; accuracy is the same for every subnet.
    correct = [True, False, True]
    estimated = [constant_scores(v, correct) for v in (0.1, 0.2, 0.3, 0.4)]
    truth = [constant_scores(v, correct) for v in (0.5, 0.6, 0.8, 0.7)]
    ranking = ranking_statistics(estimated, [[t] for t in truth], bootstrap_indices(3, 50, seed=0))
    assert ranking.kendall_tau_nll == pytest.approx(2 / 3)
    assert ranking.spearman_rho_nll == pytest.approx(0.8)
    # Every resample sees the same NLL means, so the interval collapses onto the point.
    interval = ranking.kendall_tau_nll_interval
    assert (interval.low, interval.high, interval.undefined) == pytest.approx((2 / 3, 2 / 3, 0))
    # Accuracy ties on every subnet: τ is undefined, on the full set and on every resample.
    assert math.isnan(ranking.kendall_tau) and ranking.kendall_tau_interval.undefined == 50


def test_tau_on_nll_ranks_by_the_mean_of_per_image_losses() -> None:
    # Subnet 0 has the lowest mean NLL though its per-image NLLs include the largest single value.
    def scores(*per_image: list[float]) -> list[ImageScores]:
        return [ImageScores(np.ones(3, bool), np.array(v)) for v in per_image]

    estimated = scores([0.0, 0.0, 0.9], [0.5, 0.5, 0.5], [1.0, 0.6, 0.5])
    truth = scores([0.1, 0.1, 0.1], [0.3, 0.2, 0.1], [0.2, 0.2, 0.3])
    ranking = ranking_statistics(estimated, [[t] for t in truth], bootstrap_indices(3, 20, seed=0))
    assert ranking.kendall_tau_nll == pytest.approx(1.0)  # means 0.3 < 0.5 < 0.7 and 0.1 < 0.2 < 0.233


def test_vectorised_tau_equals_scipy_with_ties() -> None:
    rng = np.random.default_rng(0)
    estimated = rng.integers(0, 4, size=(200, 7)).astype(float)  # few values: many ties
    truth = rng.integers(0, 4, size=(200, 7)).astype(float)
    ours = kendall_tau_b(estimated, truth)
    for row, tau in enumerate(ours):
        if len(set(estimated[row])) < 2 or len(set(truth[row])) < 2:
            assert math.isnan(tau)
        else:
            assert tau == pytest.approx(stats.kendalltau(estimated[row], truth[row]).statistic)


def simulated_scores(seed: int, subnets: int = 8, images: int = 270) -> tuple[list[ImageScores], list[ImageScores]]:
    """A supernet whose estimates follow the stand-alone quality with noise, per image."""
    rng = np.random.default_rng(seed)
    quality = np.linspace(0.6, 0.95, subnets)

    def side(noise: float) -> list[ImageScores]:
        levels = np.clip(quality + rng.normal(0, noise, subnets), 0.05, 0.99)
        return [ImageScores(rng.random(images) < q, rng.exponential(1 - q, images)) for q in levels]

    return side(0.05), side(0.0)


def test_bootstrap_interval_contains_the_point_estimate_and_is_seeded() -> None:
    estimated, truth = simulated_scores(seed=1)
    ranking = ranking_statistics(estimated, [[t] for t in truth], bootstrap_indices(270, 1000, seed=5))
    for tau, interval in (
        (ranking.kendall_tau, ranking.kendall_tau_interval),
        (ranking.kendall_tau_nll, ranking.kendall_tau_nll_interval),
    ):
        assert interval.contains(tau) and interval.low < interval.high
    assert ranking.kendall_tau == pytest.approx(
        stats.kendalltau([s.accuracy for s in estimated], [s.accuracy for s in truth]).statistic
    )
    again = ranking_statistics(estimated, [[t] for t in truth], bootstrap_indices(270, 1000, seed=5))
    assert again == ranking
    assert np.array_equal(bootstrap_indices(270, 1000, seed=5), bootstrap_indices(270, 1000, seed=5))
    assert not np.array_equal(bootstrap_indices(270, 1000, seed=5), bootstrap_indices(270, 1000, seed=6))
    other = ranking_statistics(estimated, [[t] for t in truth], bootstrap_indices(270, 1000, seed=6))
    assert (other.kendall_tau, other.kendall_tau_nll) == (ranking.kendall_tau, ranking.kendall_tau_nll)
    assert other.kendall_tau_interval.contains(other.kendall_tau)


def test_fixed_subnets_span_the_space_and_are_seeded(tmp_path: Path) -> None:
    config = tiny_config(tmp_path)
    space = job_space(config)
    chosen = fixed_subnets(space, 9, seed=4)
    roles = [role for role, _ in chosen]
    archs = [arch for _, arch in chosen]
    assert len(set(archs)) == 9
    assert archs[0] == space.smallest() and archs[-1] == space.largest()
    assert "median" in roles
    assert [space.flops(a) for a in archs] == sorted(space.flops(a) for a in archs)
    assert fixed_subnets(space, 9, seed=4) == chosen


def test_every_registered_strategy_can_be_configured_for_a_run_length(tmp_path: Path) -> None:
    config = tiny_config(tmp_path)
    space = job_space(config)
    for name in STRATEGIES:
        spaces = strategy_class(name).spaces
        if spaces is not None and space.name not in spaces:
            continue  # defined on other spaces (autodistil: transformers); its own tests build it there
        params = strategy_params(name, config, 40, {})
        build_strategy(name, params, space)  # required run-length parameters are filled in
        if "total_steps" in strategy_class(name).Params.model_fields:
            assert params["total_steps"] == 40
    assert strategy_params("sandwich", config, 40, {}) == config.strategy.params
    assert strategy_params("sandwich", config, 40, {"sandwich": {"num_random": 3}}) == {"num_random": 3}


def test_standalone_cache_serves_the_second_request(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, optim={"steps": 5, "lr": 0.05, "warmup_steps": 1})
    space = job_space(config)
    cache = StandaloneCache(tmp_path / "cache")
    archs = [space.smallest(), space.largest()]
    first = standalone_results(config, archs, cache)
    again = standalone_results(config, archs, cache)
    assert [r.from_cache for r in first] == [False, False]
    assert [r.from_cache for r in again] == [True, True]
    assert [r.accuracy for r in again] == [r.accuracy for r in first]
    assert [r.arch for r in again] == archs
    other_seed = standalone_results(config.model_copy(update={"seed": 9}), archs[:1], cache)
    assert not other_seed[0].from_cache  # the seed is part of the key
    assert cache.read().num_rows == 3


def test_standalone_cache_round_trip_keeps_per_image_results(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, optim={"steps": 5, "lr": 0.05, "warmup_steps": 1})
    data = load_data(config.data)
    arch = job_space(config).largest()
    cache = StandaloneCache(tmp_path / "cache")
    # A row of the previous cache format (no protocol, no per-image columns) is never read as a hit.
    old = {"key": "old", "arch": "{}", "arch_desc": "", "mflops": 0.0, "params": 0, "steps": 5, "seed": 0,
           "accuracy": "{}", "train_wall_s": 1.0, "recorded_at": 0}
    (tmp_path / "cache").mkdir()
    pq.write_table(pa.Table.from_pylist([old]), tmp_path / "cache" / "part-old.parquet")
    assert cache.lookup() == {}
    [trained] = standalone_results(config, [arch], cache)
    [cached] = standalone_results(config, [arch], cache)
    assert not trained.from_cache and cached.from_cache
    for result in (trained, cached):
        scores = result.test_scores
        assert len(scores.correct) == len(data.test)
        assert scores.accuracy == pytest.approx(result.accuracy["test"])
        assert scores.mean_nll == pytest.approx(result.nll["test"])
    assert np.array_equal(cached.test_scores.correct, trained.test_scores.correct)
    assert np.array_equal(cached.test_scores.nll, trained.test_scores.nll)  # float64, bit for bit
    assert cached.nll == trained.nll and set(cached.nll) == {"val", "test"}


def test_supernet_scores_agree_with_the_evaluation_code(tmp_path: Path) -> None:
    """Per-image scoring uses the same BN recalibration and forward pass as ``evaluate_arch``."""
    runs = tmp_path / "runs"
    compare_strategies(
        tiny_config(tmp_path / "unused"), ["uniform"], STEPS, 1, tmp_path / "out", None,
        num_subnets=8, nested_submodels=0, work_dir=runs,
    )
    trained = load_trained(run_folder(runs, "uniform", STEPS))
    arch = trained.space.largest()
    scores = score_subnet(trained, arch, ("val", "test"))
    reference = evaluate_arch(trained, arch, ("val", "test"))
    assert {k: v.accuracy for k, v in scores.items()} == reference.accuracy
    assert all(np.isfinite(v.nll).all() and (v.nll >= 0).all() for v in scores.values())


def test_comparison_writes_parquet_markdown_and_plot(
    two_runs: tuple[StrategyComparison, StrategyComparison, Path],
) -> None:
    first, _, _ = two_runs
    files = first.files
    evaluations = pq.read_table(files["evaluations"]).to_pylist()
    assert len(evaluations) == 2 * (8 + NESTED)
    for row in evaluations:  # per-image test data for the fixed set only
        has_images = row["test_correct"] is not None and row["test_nll_per_image"] is not None
        assert has_images == (row["subset"] == "fixed")
        if has_images:
            assert np.mean(row["test_correct"]) == pytest.approx(row["test_accuracy"])
            assert np.mean(row["test_nll_per_image"]) == pytest.approx(row["test_nll"])
    assert {(r["strategy"], r["subset"]) for r in evaluations} == {
        (s, subset) for s in ("uniform", "sandwich") for subset in ("fixed", "nested")
    }
    summary = pq.read_table(files["summary"]).to_pylist()
    assert [r["strategy"] for r in summary] == ["uniform", "sandwich"]
    assert all(r["steps"] == STEPS for r in summary)
    table = files["table"].read_text()
    assert "`uniform`" in table and "`sandwich`" in table and "τ accuracy" in table and "τ NLL" in table
    assert "stand-alone test NLL" in table
    assert files["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The sandwich rule runs the largest, the smallest and one random subnet each step here.
    assert first.summary("sandwich").subnets_per_step == pytest.approx(3.0)
    assert first.summary("uniform").subnets_per_step == pytest.approx(1.0)


def test_summary_statistics_follow_from_the_evaluations(
    two_runs: tuple[StrategyComparison, StrategyComparison, Path],
) -> None:
    first, _, _ = two_runs
    for s in first.summaries:
        fixed = [e for e in first.evaluations if e.strategy == s.strategy and e.subset == "fixed"]
        tau, rho = rank_correlations([e.test_accuracy for e in fixed], [e.standalone_test_accuracy for e in fixed])
        assert (s.kendall_tau, s.spearman_rho) == pytest.approx((tau, rho), nan_ok=True)
        tau_nll, rho_nll = rank_correlations([e.test_nll for e in fixed], [e.standalone_test_nll for e in fixed])
        assert (s.kendall_tau_nll, s.spearman_rho_nll) == pytest.approx((tau_nll, rho_nll), nan_ok=True)
        assert s.tau_nll_interval.contains(s.kendall_tau_nll)
        ranking = ranking_statistics(
            fixed_scores(first, s.strategy), [[r.test_scores] for r in first.standalone],
            bootstrap_indices(first.test_size, first.bootstrap_resamples, first.seed),
        )
        assert (s.kendall_tau_nll_low, s.kendall_tau_nll_high) == pytest.approx(
            (ranking.kendall_tau_nll_interval.low, ranking.kendall_tau_nll_interval.high)
        )
        assert not s.reused_run
        by_role = {e.role: e.test_accuracy for e in fixed}
        bounds = (by_role["smallest"], by_role["median"], by_role["largest"])
        assert (s.smallest_test, s.median_test, s.largest_test) == bounds
        nested = [e for e in first.evaluations if e.strategy == s.strategy and e.subset == "nested"]
        largest = max(nested, key=lambda e: e.mflops).test_accuracy
        kept = sum(e.test_accuracy >= NESTED_KEEP * largest for e in nested) / len(nested)
        assert s.nested_keep_fraction == pytest.approx(kept)


def test_worker_processes_train_and_score_what_one_process_does(
    two_runs: tuple[StrategyComparison, StrategyComparison, Path],
) -> None:
    first, second, _ = two_runs
    uniform = [e for e in first.evaluations if e.strategy == "uniform"]
    alone = [e for e in second.evaluations if e.strategy == "uniform"]
    def outcomes(rows: list) -> list[tuple[str, float, float]]:
        return [(e.role, e.test_accuracy, e.test_nll) for e in rows]

    assert outcomes(uniform) == outcomes(alone)
    nested = [e for e in uniform if e.subset == "nested"]
    assert nested and all(math.isnan(e.val_accuracy) and e.test_scores is None for e in nested)  # test split only


def test_standalone_results_are_trained_once_across_comparisons(
    two_runs: tuple[StrategyComparison, StrategyComparison, Path],
) -> None:
    first, second, cache_dir = two_runs
    assert [r.from_cache for r in first.standalone] == [False] * 8
    assert [r.from_cache for r in second.standalone] == [True] * 8
    assert [r.accuracy for r in second.standalone] == [r.accuracy for r in first.standalone]
    assert len(list(cache_dir.glob("*.parquet"))) == 8


def test_findings_say_plainly_where_a_strategy_does_not_beat_uniform(
    two_runs: tuple[StrategyComparison, StrategyComparison, Path],
) -> None:
    first, _, _ = two_runs
    uniform, sandwich = first.summary("uniform"), first.summary("sandwich")
    staged = replace(
        first,
        summaries=[
            replace(uniform, largest_test=240 / 270, kendall_tau=0.5, smallest_test=0.8, median_test=0.5),
            replace(sandwich, largest_test=254 / 270, kendall_tau=0.5, smallest_test=0.7, median_test=0.5),
        ],
    )
    sentence = findings(staged)[0]
    wins, _, losses = sentence.partition("does **not** beat `uniform`")
    assert "largest-subnet accuracy (94.07% vs 88.89%, +14 images)" in wins  # of 270 test images
    assert "Kendall τ (0.500 vs 0.500)" in losses  # a tie is not a win
    assert "smallest-subnet accuracy (70.00% vs 80.00%, -27 images)" in losses
    assert not any("within the noise" in line for line in findings(staged))
    one_better = replace(staged.summaries[1], largest_test=241 / 270)
    one_image = replace(staged, summaries=[staged.summaries[0], one_better])
    assert any("within the noise" in line and "`sandwich`" in line for line in findings(one_image))
    assert "was not part of this run" in findings(replace(first, summaries=[sandwich]))[0]
    page = render_doc(staged, "img/strategies.png", "nasfleet bench strategies")
    assert sentence in page and "Ground-truth spread" in page
    assert "**τ on NLL.** The 95% interval" in page and "**τ on accuracy.** The 95% interval" in page
    # A τ win is checked with the paired bootstrap of the difference, from the per-image scores.
    nll_win = replace(staged, summaries=[replace(staged.summaries[0], kendall_tau_nll=-1.0), staged.summaries[1]])
    assert any("`sandwich` on NLL (difference [" in line for line in findings(nll_win))


def test_reuse_runs_re_evaluates_a_finished_run_of_the_same_job(tmp_path: Path) -> None:
    cache = StandaloneCache(tmp_path / "cache")

    def compare(steps: int, out: str, reuse: bool = True) -> StrategyComparison:
        return compare_strategies(
            tiny_config(tmp_path / "unused"), ["uniform"], steps, 1, tmp_path / out, cache,
            num_subnets=8, nested_submodels=0, work_dir=tmp_path / "runs", reuse_runs=reuse,
        )

    first = compare(STEPS, "a")  # nothing to reuse yet: trained
    run = run_folder(tmp_path / "runs", "uniform", STEPS)
    checkpoints = completed_checkpoints(str(run))
    supernet = Path(checkpoints[-1]) / SUPERNET_FILE
    written = supernet.stat().st_mtime_ns
    again = compare(STEPS, "b")
    assert [s.reused_run for s in (first.summaries[0], again.summaries[0])] == [False, True]
    assert again.summaries[0].run_checkpoint == first.summaries[0].run_checkpoint
    assert first.summaries[0].run_checkpoint.startswith(str(supernet))  # evaluated from the newest checkpoint
    assert completed_checkpoints(str(run)) == checkpoints and supernet.stat().st_mtime_ns == written  # untouched
    assert again.summaries[0].train_wall_s == first.summaries[0].train_wall_s  # the time recorded at training
    assert again.summaries[0].kendall_tau_nll == first.summaries[0].kendall_tau_nll
    # The reused run's subnets are not scored again: their scores, timings included, are read back.
    assert [e.eval_wall_s for e in again.evaluations] == [e.eval_wall_s for e in first.evaluations]
    assert all(np.array_equal(a.test_scores.nll, b.test_scores.nll) for a, b in zip(again.evaluations, first.evaluations))
    assert len(list(run.glob(f"{SCORES_PREFIX}fixed_*.parquet"))) == 1
    assert "†" in again.files["table"].read_text()
    # Without the record, the time spans the run's config file to the last checkpoint's weights:
    # both written inside the measured call, so never longer (give or take the file clock's tick).
    (run / RUN_RECORD_FILE).unlink()
    unrecorded = compare(STEPS, "b2").summaries[0]
    assert unrecorded.reused_run and 0 < unrecorded.train_wall_s <= first.summaries[0].train_wall_s + 0.02
    longer = compare(STEPS + 1, "c")  # another job (steps differ): retrained, not reused
    assert not longer.summaries[0].reused_run and longer.summaries[0].run_checkpoint.endswith(f"@step{STEPS + 1}")
    assert not compare(STEPS + 1, "d", reuse=False).summaries[0].reused_run


def test_a_kept_share_is_read_back_without_its_run_folder(tmp_path: Path) -> None:
    """The result store holds what the comparison needs of a strategy, not its weights: a share found there
    is the whole answer, even after the run folder is gone (another machine, a fresh checkout)."""
    def compare(reuse: bool) -> StrategyComparison:
        return compare_strategies(
            tiny_config(tmp_path / "unused"), ["uniform"], STEPS, 1, tmp_path / "out", StandaloneCache(tmp_path / "cache"),
            num_subnets=8, nested_submodels=4, work_dir=tmp_path / "runs", reuse_runs=reuse, results=tmp_path / "kept",
        )

    first = compare(reuse=False)
    (kept,) = (tmp_path / "kept").glob("uniform-*steps-*.parquet")
    shutil.rmtree(tmp_path / "runs")
    again = compare(reuse=True)
    assert not (tmp_path / "runs").exists()  # nothing trained or scored
    assert again.summaries[0].reused_run and not first.summaries[0].reused_run
    assert [(e.role, e.subset, e.test_accuracy, e.val_accuracy, e.eval_wall_s) for e in again.evaluations] == [
        (e.role, e.subset, e.test_accuracy, e.val_accuracy, e.eval_wall_s) for e in first.evaluations
    ] or math.isnan(first.evaluations[-1].val_accuracy)
    fixed = [(a, b) for a, b in zip(again.evaluations, first.evaluations) if a.subset == "fixed"]
    assert all(np.array_equal(a.test_scores.nll, b.test_scores.nll) for a, b in fixed)  # float32 both ways
    for field_name in ("kendall_tau", "kendall_tau_nll", "kendall_tau_low", "steps", "train_wall_s", "nested_keep_fraction"):
        assert getattr(again.summaries[0], field_name) == getattr(first.summaries[0], field_name)
    assert kept.stat().st_size < 1_000_000


def test_validation_estimates_can_be_scored_on_a_seeded_subset(tmp_path: Path) -> None:
    comparison = compare_strategies(
        tiny_config(tmp_path / "unused"), ["uniform"], STEPS, 1, tmp_path / "out", StandaloneCache(tmp_path / "cache"),
        num_subnets=8, nested_submodels=0, work_dir=tmp_path / "runs", val_images=30,
    )
    trained = load_trained(run_folder(tmp_path / "runs", "uniform", STEPS)).with_val_subset(30)
    fixed = [e for e in comparison.evaluations if e.subset == "fixed"]
    assert [e.val_accuracy for e in fixed] == [evaluate_arch(trained, e.arch, ("val",)).accuracy["val"] for e in fixed]
    assert all(len(e.test_scores.correct) == comparison.test_size for e in fixed)  # the test split stays whole
    page = render_doc(comparison, "img/strategies.png", "cmd")
    assert f"seeded subset of 30 of the {comparison.val_split_size:,} validation images" in page


@pytest.mark.parametrize(
    ("strategies", "steps", "subnets", "message"),
    [
        (["uniform", "bignas"], 4, 8, "unknown strategy 'bignas'"),
        (["uniform"], 0, 8, "steps must be at least 1"),
        (["uniform"], 4, 7, "at least 8 subnets"),
        (["uniform", "uniform"], 4, 8, "listed twice"),
        ([], 4, 8, "no strategies"),
    ],
)
def test_bad_input_fails_before_any_training(
    tmp_path: Path, strategies: list[str], steps: int, subnets: int, message: str
) -> None:
    cache = StandaloneCache(tmp_path / "cache")
    with pytest.raises(NasfleetError, match=message):
        compare_strategies(
            tiny_config(tmp_path / "unused"), strategies, steps, 0, tmp_path / "out", cache,
            num_subnets=subnets, work_dir=tmp_path / "runs",
        )
    assert not (tmp_path / "runs").exists() and cache.read().num_rows == 0


def test_bad_strategy_parameter_fails_before_any_training(tmp_path: Path) -> None:
    with pytest.raises(NasfleetError, match="num_random"):
        compare_strategies(
            tiny_config(tmp_path / "unused"), ["uniform", "sandwich"], 4, 0, tmp_path / "out", None,
            work_dir=tmp_path / "runs", strategy_overrides={"sandwich": {"num_random": -1}},
        )
    assert not (tmp_path / "runs").exists()


def nasfleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(NASFLEET), "bench", "strategies", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_runs_a_tiny_comparison_and_writes_the_page(tmp_path: Path) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tmp_path / "unused").model_dump(mode="json")))
    result = nasfleet(
        "--config", str(config), "--strategies", "uniform,sandwich", "--steps", "4", "--nested", "5",
        "--out", str(tmp_path / "docs"), "--cache", str(tmp_path / "cache"), "--results", str(tmp_path / "results"),
        "--workdir", str(tmp_path / "runs"),
    )
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "docs" / "strategies.md").read_text()
    assert "![" in page and "img/strategies.png" in page and "`sandwich`" in page
    assert "Against `uniform`" in page and "τ on NLL" in page and "bootstrap" in page
    assert (tmp_path / "docs" / "img" / "strategies.png").is_file()
    assert (tmp_path / "results" / "strategies_summary.parquet").is_file()


def test_cli_needs_a_folder_for_the_page(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(NASFLEET), "bench", "strategies", "--strategies", "uniform"], capture_output=True, text=True,
        timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and "--out" in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written, docs/ least of all


def test_cli_module_imports_no_ml_stack_and_its_help_states_the_defaults() -> None:
    code = (
        "import sys, nasfleet.research.cli; "
        "print(sorted(m for m in ('torch', 'numpy', 'pyarrow', 'ray', 'nasfleet.orchestrator') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr
    shown = CliRunner().invoke(bench_app, ["strategies", "--help"]).output.replace("│", " ")  # no table borders
    assert f"at least {MIN_SUBNETS}; default: {DEFAULT_SUBNETS}." in " ".join(shown.split())


def test_cli_unknown_strategy_is_a_one_line_error(tmp_path: Path) -> None:
    result = nasfleet("--strategies", "uniform,bignas", "--out", str(tmp_path / "docs"), "--cache", str(tmp_path / "c"))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "unknown strategy 'bignas'" in lines[0]
    assert not (tmp_path / "docs").exists()


def test_a_ground_truth_over_seeds_is_read_from_its_cache_and_never_trained(tmp_path: Path) -> None:
    """The Fashion-MNIST path: stand-alone runs made apart (their own steps, two seeds), averaged per subnet."""
    config = tiny_config(tmp_path / "unused")
    subnets = fixed_subnets(job_space(config), 8, seed=1)
    cache = StandaloneCache(tmp_path / "truth")
    truth = GroundTruth(cache, steps=4, seeds=2)
    with pytest.raises(NasfleetError, match="lacks 16 of 16 runs.*ground_truth.py"):
        compare_strategies(config, ["uniform"], STEPS, 1, tmp_path / "out", None, num_subnets=8, nested_submodels=0,
                           work_dir=tmp_path / "runs", ground_truth=truth)
    for seed in range(2):
        for _, arch in subnets:
            cache.put(train_standalone(standalone_recipe(config, 4, seed), arch))
    comparison = compare_strategies(config, ["uniform"], STEPS, 1, tmp_path / "out", None, num_subnets=8,
                                    nested_submodels=0, work_dir=tmp_path / "runs", ground_truth=truth)
    assert [len(runs) for runs in comparison.standalone_runs] == [2] * 8
    assert all(r.steps == 4 and {r.seed for r in runs} == {0, 1}
               for runs in comparison.standalone_runs for r in runs)
    for mean, runs in zip(comparison.standalone, comparison.standalone_runs):
        assert mean.accuracy["test"] == pytest.approx((runs[0].accuracy["test"] + runs[1].accuracy["test"]) / 2)
    summary = comparison.summary("uniform")
    fixed = [e for e in comparison.evaluations if e.subset == "fixed"]
    tau, _ = rank_correlations([e.test_accuracy for e in fixed], [m.accuracy["test"] for m in comparison.standalone])
    assert summary.kendall_tau == pytest.approx(tau, nan_ok=True)
    page = render_doc(comparison, "img/strategies.png", "python benchmarks/strategies.py")
    assert "4 optimizer steps of the job's recipe" in page and "2 seeds each" in page
    assert "resample the seeds as well as the test images" in page


def test_a_passes_budget_counts_the_passes_of_the_whole_schedule(tmp_path: Path) -> None:
    """DεpS trains the largest alone for half its run, then 4 subnets a step: 2.5 passes a step overall.

    Its schedule scales with its own steps, so 1,000 passes are 400 steps (not 1,000, as the run's
    first steps alone suggest, nor 250, as its later ones do).
    """
    config = tiny_config(tmp_path / "unused")
    space = job_space(config)
    assert strategy_steps("deps", config, "passes", 1000, {}, space) == 400
    assert strategy_steps("progressive", config, "passes", 1000, {}, space) == 400
    assert strategy_steps("uniform", config, "passes", 1000, {}, space) == 1000
    assert strategy_steps("deps", config, "steps", 1000, {}, space) == 1000


def test_a_passes_budget_gives_each_strategy_its_share_of_steps(tmp_path: Path) -> None:
    """The same-compute view beside the same-steps one: sandwich with one random subnet runs 3 passes a step."""
    config = tiny_config(tmp_path / "unused")
    with pytest.raises(NasfleetError, match="unknown budget 'flops'"):
        compare_strategies(config, ["uniform"], 12, 1, tmp_path / "out", None, num_subnets=8, budget="flops")
    same_steps, same_compute = run_strategy_bench(
        config, ["uniform", "sandwich"], 12, 1, 8, 0, tmp_path / "page", tmp_path / "cache", tmp_path / "out",
        tmp_path / "runs", "python benchmarks/strategies.py --budget both", budget="both",
    )
    assert {s.strategy: s.steps for s in same_steps.summaries} == {"uniform": 12, "sandwich": 12}
    assert {s.strategy: s.steps for s in same_compute.summaries} == {"uniform": 12, "sandwich": 4}
    assert {s.strategy: round(s.subnets_per_step) for s in same_compute.summaries} == {"uniform": 1, "sandwich": 3}
    assert all(r.steps == 12 for r in same_compute.standalone)  # one pass a step: the same budget alone
    assert same_compute.summary("uniform").reused_run  # one pass a step: the same run serves both views
    assert same_compute.summary("uniform").kendall_tau == pytest.approx(same_steps.summary("uniform").kendall_tau)
    page = (tmp_path / "page" / "strategies.md").read_text()
    main_view, compute_view = page.split("## Same compute")
    assert "**Same budget.** Each strategy trains the supernet for 12 optimizer steps" in main_view
    assert "**Same compute.** Each strategy trains the supernet for 12 subnet passes" in compute_view
    assert "| `sandwich` | 4 |" in compute_view and "| `sandwich` | 12 |" in main_view
    assert (tmp_path / "page" / "img" / "strategies_same_compute.png").stat().st_size > 0
