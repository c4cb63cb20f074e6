"""``nasfleet bench``: comparisons that write their results and a page showing them into a folder given.

The product does not import this package: ``nasfleet`` mounts :data:`bench_app` through the
entry point ``bench`` of the group ``nasfleet.commands``. ``nasfleet --help`` loads this module,
so it imports only typer and the standard library; the command imports the study when it runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

bench_app = typer.Typer(
    help="Reproducible comparisons that write Parquet results and a Markdown page into a folder.",
    no_args_is_help=True,
    add_completion=False,
)


def _command(
    config: Optional[Path], strategies: Optional[str], steps: int, seed: int, subnets: int, nested: int,
    out: Path, reuse_runs: bool, budget: str = "steps", val_images: Optional[int] = None,
) -> str:
    """The invocation that reproduces a run, for the page it writes."""
    parts = ["nasfleet bench strategies"]
    parts += [f"--config {config}"] if config else []
    parts += [f"--strategies {strategies}"] if strategies else []
    parts += [f"--steps {steps} --seed {seed} --subnets {subnets} --nested {nested} --out {out}"]
    parts += ["--reuse-runs"] if reuse_runs else []
    parts += [f"--budget {budget}"] if budget != "steps" else []
    parts += [f"--val-images {val_images}"] if val_images else []
    return " ".join(parts)


@bench_app.command("strategies")
def strategies_command(
    out: Path = typer.Option(
        ..., help="Folder for the page: strategies.md and img/strategies.png (and the data unless --results)."
    ),
    strategies: Optional[str] = typer.Option(None, "--strategies", help="Comma-separated; default: all registered."),
    steps: Optional[int] = typer.Option(None, help="Optimizer steps (or subnet passes, --budget passes) for every strategy; default: the config's."),
    budget: str = typer.Option("steps", help="steps: the same optimizer steps each; passes: the same subnet passes (same compute); both: the two views on one page."),
    seed: int = typer.Option(0, help="Seed of the training runs, the stand-alone runs and the fixed subnet set."),
    subnets: Optional[int] = typer.Option(
        None, help="Size of the fixed (stand-alone) subnet set, at least 8; default: 12."
    ),
    nested: int = typer.Option(100, min=0, help="Nested (SortedNet) sub-models evaluated per supernet; all if fewer."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Job YAML; default: the built-in demo."),
    cache: Path = typer.Option(Path("benchmarks/results/standalone"), help="Parquet cache of stand-alone results."),
    results: Optional[Path] = typer.Option(None, help="Where the Parquet files and the table go; default: --out."),
    workdir: Path = typer.Option(Path("runs/strategies"), help="Supernet run folders (one per strategy; replaced unless reused)."),
    reuse_runs: bool = typer.Option(
        False, "--reuse-runs",
        help="Re-evaluate a strategy's finished run in --workdir when its stored config matches; else retrain.",
    ),
    workers: int = typer.Option(1, min=1, help="Strategies trained at once, one process (and core) each."),
    val_images: Optional[int] = typer.Option(
        None, min=1, help="Score the validation estimates on a seeded subset of this many images; default: all."
    ),
) -> None:
    """Train every strategy on one budget; rank correlation with stand-alone training, accuracy, time."""
    from nasfleet.orchestrator.cli.common import demo_config
    from nasfleet.orchestrator.config import load_config
    from nasfleet.research.comparison import DEFAULT_SUBNETS
    from nasfleet.research.report import comparison_markdown
    from nasfleet.research.strategy_bench import DOC_FILE, parse_strategies, run_strategy_bench

    base = load_config(config) if config is not None else demo_config()
    names = parse_strategies(strategies)
    chosen_steps = steps if steps is not None else base.optim.steps
    chosen_subnets = subnets if subnets is not None else DEFAULT_SUBNETS
    comparisons = run_strategy_bench(
        base, names, chosen_steps, seed, chosen_subnets, nested, out, cache, results or out, workdir,
        _command(config, strategies, chosen_steps, seed, chosen_subnets, nested, out, reuse_runs, budget, val_images),
        reuse_runs, budget=budget, workers=workers, val_images=val_images,
    )
    for comparison in comparisons:
        typer.echo(comparison_markdown(comparison))
    files = comparisons[0].files
    typer.echo(f"page: {out / DOC_FILE}   data: {files['summary']}, {files['evaluations']}")
