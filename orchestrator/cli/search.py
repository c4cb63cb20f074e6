"""``nasfleet search``: find the best subnets of a trained supernet for each budget."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.markup import escape
from rich.table import Table

from nasfleet.orchestrator.cli.common import console, key_values
from nasfleet.orchestrator.cli.runs import RUN_HELP

if TYPE_CHECKING:
    from nasfleet.orchestrator.subnet_search.experiment import SearchOutcome
    from nasfleet.orchestrator.subnet_search.pareto_report import FrontMember

LATENCY_FILE = "latency.json"


def search(
    run: str = typer.Option(..., "--run", help=RUN_HELP),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="A job config whose `search:` section gives the settings (flags override)."),
    name: Optional[str] = typer.Option(None, help="Name of this search: results go to RUN/search/NAME/ (default: search)."),
    searcher: Optional[str] = typer.Option(None, help="A registered searcher: random (default), evolution, nsga2, predictor, or a plug-in's."),
    searcher_param: list[str] = typer.Option([], help="Searcher parameter KEY=VALUE (e.g. population=16); repeatable."),
    scheduler: Optional[str] = typer.Option(None, help="Ray Tune scheduler: fifo (default), asha, hyperband or median."),
    evaluations: Optional[int] = typer.Option(None, help="Subnets to evaluate (Tune trials), early-stopped ones included (default 32)."),
    objective: list[str] = typer.Option([], help="Cost on the front besides accuracy: mflops (default), params, latency_ms, comm_ms; repeatable."),
    constraint: list[str] = typer.Option([], help="Upper bound COST<=LIMIT, e.g. 'latency_ms<=5'; repeatable."),
    chunks: Optional[int] = typer.Option(None, help="Validation chunks: trials report after each, so schedulers can stop them (default 4)."),
    concurrency: Optional[int] = typer.Option(None, help="Trials evaluated at once, one CPU each (default 2)."),
    reduction_factor: Optional[int] = typer.Option(None, help="η for asha and hyperband (default 2)."),
    seed: Optional[int] = typer.Option(None, help="Seed of the searcher and of the validation chunks (default 0)."),
    latency_table: Optional[Path] = typer.Option(None, help=f"From `nasfleet profile`; default RUN/{LATENCY_FILE} if present."),
    comm_topology: Optional[str] = typer.Option(None, help="Fabric for comm_ms (spec or topology YAML, see docs/comm.md)."),
    comm_workers: Optional[int] = typer.Option(None, help="Data-parallel workers assumed for comm_ms (default 8)."),
    ray_address: Optional[str] = typer.Option(None, help="Ray cluster to join; default: $RAY_ADDRESS or a local one."),
    resume: bool = typer.Option(False, help="Continue RUN/search/NAME with its stored settings (--evaluations may raise its budget); evaluates only what is not recorded."),
) -> None:
    """Search the trained supernet's subnets with Ray Tune; write every evaluation and the Pareto front."""
    from nasfleet.orchestrator.config import load_config
    from nasfleet.orchestrator.evaluate.trained import load_trained
    from nasfleet.orchestrator.storage import is_file, join
    from nasfleet.orchestrator.subnet_search.experiment import run_search, search_settings

    base = load_config(config).search if config is not None else None
    values = base.model_dump() if base is not None else {}
    given = {
        "name": name, "searcher": searcher, "scheduler": scheduler, "evaluations": evaluations, "chunks": chunks,
        "concurrency": concurrency, "reduction_factor": reduction_factor, "seed": seed,
        "comm_topology": comm_topology, "comm_workers": comm_workers,
        "searcher_params": key_values(searcher_param, "--searcher-param") or None,
        "objectives": objective or None, "constraints": constraint or None,
    }
    values.update({key: value for key, value in given.items() if value is not None})
    default_table = join(run, LATENCY_FILE)  # where `nasfleet profile --run` writes it, also on S3
    table = latency_table if latency_table is not None else (default_table if is_file(default_table) else None)
    if table is not None:
        values["latency_table"] = str(table)
    settings = search_settings(**values)
    trained = load_trained(run)
    outcome = run_search(trained, run, settings, resume=resume, ray_address=ray_address)
    print_front(outcome, tuple(settings.objectives), run)


def print_front(outcome: SearchOutcome, objectives: tuple[str, ...], run: str) -> None:
    print_front_table(outcome.front, objectives, f"Pareto front — {outcome.evaluated} subnets evaluated")
    console.print(
        f"evaluated now: {outcome.evaluated_now} ({outcome.val_samples_now:,} validation samples); "
        f"hypervolume {outcome.hypervolume:.4g}; results in {outcome.folder}\n"
        f"export one: nasfleet export --run {run} --search {outcome.name} --pareto K --out DIR"
    )


def print_front_table(front: list[FrontMember], objectives: tuple[str, ...], title: str) -> None:
    from nasfleet.orchestrator.subnet_search.pareto_report import COST_LABELS, format_cost

    costs = list(dict.fromkeys(("mflops", "params", *objectives)))
    table = Table(title=title)
    for column in ("K", "subnet", *(COST_LABELS[c] for c in costs), "val acc", "test acc"):
        table.add_column(column, justify="left" if column == "subnet" else "right")
    for m in front:
        values = [format_cost(c, m.costs[c]) for c in costs]
        test = f"{100 * m.test_accuracy:.2f}%" if m.test_accuracy is not None else "–"
        table.add_row(str(m.index), escape(m.arch_desc), *values, f"{100 * m.val_accuracy:.2f}%", test)
    console.print(table)
