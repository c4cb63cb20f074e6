"""`nasfleet search`: find the best subnets of a trained supernet for each budget."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.evaluate.subnets import load_trained
from nasfleet.orchestrator.subnet_search.pareto_report import COST_LABELS, FrontMember, format_cost
from nasfleet.orchestrator.subnet_search.experiment import SCHEDULERS, SearchOutcome, run_search, search_settings
from nasfleet.strategies.searchers import COST_NAMES, SEARCHERS

console = Console()

LATENCY_FILE = "latency.json"


def key_values(pairs: list[str], option: str) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values parsed as JSON where they are (numbers, booleans, lists), else strings."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise NasfleetError(f"{option} {pair!r} is not KEY=VALUE")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def search(
    run: Path = typer.Option(..., "--run", help="Run directory of a trained supernet (`nasfleet train`)."),
    name: str = typer.Option("search", help="Name of this search: results go to RUN/search/NAME/."),
    searcher: str = typer.Option("random", help=f"One of: {', '.join(SEARCHERS)}."),
    searcher_param: list[str] = typer.Option([], help="Searcher parameter KEY=VALUE (e.g. population=16); repeatable."),
    scheduler: str = typer.Option("fifo", help=f"Ray Tune scheduler: {', '.join(SCHEDULERS)}."),
    evaluations: int = typer.Option(32, min=1, help="Subnets to evaluate (Tune trials), early-stopped ones included."),
    objective: list[str] = typer.Option(["mflops"], help=f"Cost on the front besides accuracy: {', '.join(COST_NAMES)}; repeatable."),
    constraint: list[str] = typer.Option([], help="Upper bound COST<=LIMIT, e.g. 'latency_ms<=5'; repeatable."),
    chunks: int = typer.Option(4, min=1, help="Validation chunks: trials report after each, so schedulers can stop them."),
    concurrency: int = typer.Option(2, min=1, help="Trials evaluated at once (one CPU each)."),
    reduction_factor: int = typer.Option(2, min=2, help="η for asha and hyperband."),
    seed: int = typer.Option(0, help="Seed of the searcher and of the validation chunks."),
    latency_table: Optional[Path] = typer.Option(None, help=f"From `nasfleet profile`; default RUN/{LATENCY_FILE} if present."),
    comm_topology: Optional[str] = typer.Option(None, help="Fabric for comm_ms (spec or topology YAML, see docs/comm.md)."),
    comm_workers: int = typer.Option(8, min=2, help="Data-parallel workers assumed for comm_ms."),
    ray_address: Optional[str] = typer.Option(None, help="Ray cluster to join; default: $RAY_ADDRESS or a local one."),
    resume: bool = typer.Option(False, help="Continue RUN/search/NAME with its stored settings; evaluates only what is not recorded."),
) -> None:
    """Search the trained supernet's subnets with Ray Tune; write every evaluation and the Pareto front."""
    table = latency_table if latency_table is not None else (run / LATENCY_FILE if (run / LATENCY_FILE).is_file() else None)
    settings = search_settings(
        name=name, searcher=searcher, searcher_params=key_values(searcher_param, '--searcher-param'), scheduler=scheduler,
        reduction_factor=reduction_factor, evaluations=evaluations, objectives=objective, constraints=constraint,
        chunks=chunks, concurrency=concurrency, seed=seed, latency_table=str(table) if table else None,
        comm_topology=comm_topology, comm_workers=comm_workers,
    )
    trained = load_trained(run)
    outcome = run_search(trained, run, settings, resume=resume, ray_address=ray_address)
    print_front(outcome, tuple(settings.objectives), run)


def print_front(outcome: SearchOutcome, objectives: tuple[str, ...], run: Path) -> None:
    print_front_table(outcome.front, objectives, f"Pareto front — {outcome.evaluated} subnets evaluated")
    console.print(
        f"evaluated now: {outcome.evaluated_now} ({outcome.val_samples_now:,} validation samples); "
        f"hypervolume {outcome.hypervolume:.4g}; results in {outcome.folder}\n"
        f"export one: nasfleet export --run {run} --search {outcome.folder.name} --pareto K --out DIR"
    )


def print_front_table(front: list[FrontMember], objectives: tuple[str, ...], title: str) -> None:
    costs = list(dict.fromkeys(("mflops", "params", *objectives)))
    table = Table(title=title)
    for column in ("K", "subnet", *(COST_LABELS[c] for c in costs), "val acc", "test acc"):
        table.add_column(column, justify="left" if column == "subnet" else "right")
    for m in front:
        values = [format_cost(c, m.costs[c]) for c in costs]
        test = f"{100 * m.test_accuracy:.2f}%" if m.test_accuracy is not None else "–"
        table.add_row(str(m.index), escape(m.arch_desc), *values, f"{100 * m.val_accuracy:.2f}%", test)
    console.print(table)
