"""``nasfleet bench``: comparisons that write their results and the page in docs/ that shows them."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.config import TrainConfig, load_config
from nasfleet.research.standalone import StandaloneCache
from nasfleet.research.comparison import (
    DEFAULT_SUBNETS,
    MIN_SUBNETS,
    StrategyComparison,
    compare_strategies,
)
from nasfleet.research.report import comparison_markdown, render_doc
from nasfleet.strategies.registry import STRATEGIES

bench_app = typer.Typer(
    help="Reproducible comparisons that write Parquet results and a page under docs/.",
    no_args_is_help=True,
    add_completion=False,
)

DOC_FILE = "strategies.md"
PLOT_RELPATH = "img/strategies.png"


def parse_strategies(text: Optional[str]) -> list[str]:
    """A comma-separated list of strategy names; ``None`` means every registered strategy."""
    if text is None:
        return list(STRATEGIES)
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise NasfleetError("--strategies is empty (give names separated by commas)")
    return names


def run_strategy_bench(
    config: TrainConfig,
    strategies: list[str],
    steps: int,
    seed: int,
    subnets: int,
    nested: int,
    docs_dir: Path,
    cache_dir: Path,
    results_dir: Path,
    work_dir: Path,
    command: str,
    reuse_runs: bool = False,
) -> StrategyComparison:
    """Compare the strategies, keep the data in ``results_dir`` and write ``docs_dir``/strategies.md.

    ``reuse_runs`` re-evaluates finished supernet runs of the same job found in ``work_dir``
    instead of retraining them.
    """
    comparison = compare_strategies(
        config, strategies, steps, seed, results_dir, StandaloneCache(cache_dir),
        num_subnets=subnets, nested_submodels=nested, work_dir=work_dir, plot_path=docs_dir / PLOT_RELPATH,
        reuse_runs=reuse_runs,
    )
    docs_dir.mkdir(parents=True, exist_ok=True)
    (docs_dir / DOC_FILE).write_text(render_doc(comparison, PLOT_RELPATH, command))
    return comparison


def _command(
    config: Optional[Path], strategies: Optional[str], steps: int, seed: int, subnets: int, nested: int,
    reuse_runs: bool = False,
) -> str:
    """The invocation that reproduces a run, for the page it writes."""
    parts = ["nasfleet bench strategies"]
    parts += [f"--config {config}"] if config else []
    parts += [f"--strategies {strategies}"] if strategies else []
    parts += [f"--steps {steps} --seed {seed} --subnets {subnets} --nested {nested}"]
    parts += ["--reuse-runs"] if reuse_runs else []
    return " ".join(parts)


@bench_app.command("strategies")
def strategies_command(
    strategies: Optional[str] = typer.Option(None, "--strategies", help="Comma-separated; default: all registered."),
    steps: Optional[int] = typer.Option(None, help="Optimizer steps for every strategy; default: the config's."),
    seed: int = typer.Option(0, help="Seed of the training runs, the stand-alone runs and the fixed subnet set."),
    subnets: int = typer.Option(DEFAULT_SUBNETS, min=MIN_SUBNETS, help="Size of the fixed (stand-alone) subnet set."),
    nested: int = typer.Option(100, min=0, help="Nested (SortedNet) sub-models evaluated per supernet; all if fewer."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Job YAML; default: the built-in demo."),
    out: Path = typer.Option(Path("docs"), help="Docs folder: strategies.md and img/strategies.png go here."),
    cache: Path = typer.Option(Path("benchmarks/results/standalone"), help="Parquet cache of stand-alone results."),
    results: Path = typer.Option(Path("benchmarks/results"), help="Where the Parquet files and the table go."),
    workdir: Path = typer.Option(Path("runs/strategies"), help="Supernet run folders (one per strategy; replaced unless reused)."),
    reuse_runs: bool = typer.Option(
        False, "--reuse-runs",
        help="Re-evaluate a strategy's finished run in --workdir when its stored config matches; else retrain.",
    ),
) -> None:
    """Train every strategy on one budget; rank correlation with stand-alone training, accuracy, time."""
    from nasfleet.orchestrator.cli.app import demo_config  # the CLI module mounts this one

    base = load_config(config) if config is not None else demo_config()
    names = parse_strategies(strategies)
    chosen_steps = steps if steps is not None else base.optim.steps
    comparison = run_strategy_bench(
        base, names, chosen_steps, seed, subnets, nested, out, cache, results, workdir,
        _command(config, strategies, chosen_steps, seed, subnets, nested, reuse_runs), reuse_runs,
    )
    typer.echo(comparison_markdown(comparison))
    typer.echo(f"page: {out / DOC_FILE}   data: {comparison.files['summary']}, {comparison.files['evaluations']}")
