"""``nasfleet evaluate``, ``export``, ``status`` and ``ensemble``: read a run (a folder or a storage URI)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.markup import escape

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.cli.common import console, print_results, results_json

if TYPE_CHECKING:
    from nasfleet.supernet import Arch, SearchSpace

RUN_HELP = "Run written by `nasfleet train`: a folder or a storage URI (s3://bucket/runs/x)."


def evaluate(
    run: str = typer.Option(..., "--run", help=RUN_HELP),
    split: list[str] = typer.Option(["val"], help="Data split(s): train, val or test; repeat for several."),
    random_subnets: int = typer.Option(3, "--random", help="How many random subnets besides the bounds."),
    seed: int = typer.Option(0, help="Seed for the random subnets."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    actors: int = typer.Option(0, help="Evaluate on this many Ray actors sharing one copy of the weights (0: here)."),
    ray_address: Optional[str] = typer.Option(None, help="With --actors: the Ray cluster to join (default: a local one)."),
) -> None:
    """Accuracy, MFLOPs and params of the smallest, largest and a few random subnets."""
    from nasfleet.orchestrator.cli.train import is_text
    from nasfleet.orchestrator.evaluate.evaluator import standard_subnets, subnet_evaluator
    from nasfleet.orchestrator.evaluate.trained import load_trained

    if random_subnets < 0 or actors < 0:
        raise NasfleetError("--random and --actors must be 0 or more")
    trained = load_trained(run)
    archs, roles = standard_subnets(trained.space, random_subnets, seed)
    with subnet_evaluator(trained, actors, tuple(split), ray_address) as evaluator:
        results = evaluator.evaluate(archs, roles)
    if as_json:
        typer.echo(results_json(results))
    else:
        print_results(results, f"{run} — step {trained.step}", perplexity=is_text(trained.config))


def status(
    run: str = typer.Argument(..., help=RUN_HELP + " It may be running, here or elsewhere."),
    best: int = typer.Option(5, min=0, help="How many of the best evaluated subnets to show."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of lines."),
) -> None:
    """How far a run is, whether it is running, its last checkpoint and its best subnets so far."""
    from nasfleet.orchestrator.run_status import read_status

    found = read_status(run, best)
    typer.echo(found.to_json() if as_json else "\n".join(found.lines()))


def ensemble(
    run: str = typer.Option(..., "--run", help=RUN_HELP),
    members: int = typer.Option(3, min=1, help="How many subnets the ensemble fuses."),
    search: Optional[str] = typer.Option(None, help="Candidates: this search's Pareto front (`nasfleet search --name`)."),
    candidates: int = typer.Option(16, min=0, help="Without --search: this many seeded random subnets, plus the smallest and largest."),
    seed: int = typer.Option(0, help="Seed for the random candidates."),
    val_images: Optional[int] = typer.Option(None, min=1, help="Choose members on a seeded subset of the validation split."),
    latency: bool = typer.Option(True, help="Measure the members' and the single best subnet's latency (batch 1, 1 thread)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Fuse K subnets chosen on validation for accuracy and diversity; compare with the best single subnet of the same FLOPs."""
    import json

    from nasfleet.orchestrator.evaluate.ensemble import build_ensemble
    from nasfleet.orchestrator.evaluate.evaluator import standard_subnets
    from nasfleet.orchestrator.evaluate.trained import load_trained
    from nasfleet.orchestrator.subnet_search.experiment import search_folder
    from nasfleet.orchestrator.subnet_search.pareto_report import load_front

    trained = load_trained(run).with_val_subset(val_images)
    if search is not None:
        front = load_front(search_folder(run, search))
        archs = [trained.space.arch_from_dict(m.arch) for m in front]
        roles = [f"front-{m.index}" for m in front]
    else:
        archs, roles = standard_subnets(trained.space, candidates, seed)
    unique = dict(zip(archs, roles))  # a random draw may repeat the bounds
    report = build_ensemble(trained, list(unique), list(unique.values()), members, measure_latency=latency)
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=1))
        return
    _print_ensemble(report, f"{run} — ensemble of {members} from {report.candidates} candidates")


def _print_ensemble(report: Any, title: str) -> None:
    from rich.table import Table

    def ms(value: float | None) -> str:
        return "–" if value is None else f"{value:.2f}"

    table = Table(title=title)
    for column in ("", "subnets", "MFLOPs", "params", "val acc", "test acc", "latency ms"):
        table.add_column(column)
    for m in report.members:
        table.add_row(f"member {escape(m.role)}", "1", f"{m.mflops:.2f}", f"{m.params:,}", f"{m.val_accuracy:.4f}",
                      f"{m.test_accuracy:.4f}", ms(m.latency_ms))
    table.add_row("[bold]ensemble[/bold]", str(len(report.members)), f"{report.mflops:.2f}", f"{report.params:,}",
                  f"{report.val_accuracy:.4f}", f"{report.test_accuracy:.4f}", ms(report.latency_ms))
    b = report.best_single
    table.add_row(f"best single ≤ {report.mflops:.2f} MFLOPs ({escape(b.role)})", "1", f"{b.mflops:.2f}",
                  f"{b.params:,}", f"{b.val_accuracy:.4f}", f"{b.test_accuracy:.4f}", ms(b.latency_ms))
    console.print(table)
    console.print(f"members chosen on {report.val_images:,} validation images; test on {report.test_images:,}")


def parse_arch(text: str, space: SearchSpace) -> Arch:
    """'smallest', 'largest', an arch JSON string, or @file.json; validated against ``space``."""
    from nasfleet.orchestrator.storage import storage_error
    from nasfleet.supernet import arch_from_json

    if text in ("smallest", "largest"):
        return space.smallest() if text == "smallest" else space.largest()
    if text.startswith("@"):
        path = Path(text[1:])
        if not path.is_file():
            raise NasfleetError(f"architecture file {path} does not exist")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise NasfleetError(f"architecture file {path} is not UTF-8 text (byte {exc.start})") from None
        except OSError as exc:
            raise storage_error("read architecture file", str(path), exc) from None
    return space.validate(arch_from_json(text))


def export(
    run: str = typer.Option(..., "--run", help=RUN_HELP),
    arch: Optional[str] = typer.Option(None, help="'smallest', 'largest', 'derived' (the architecture a tanglenas run found), an arch JSON string, or @file.json (default: largest)."),
    pareto: Optional[int] = typer.Option(None, help="Export the K-th subnet (1 = cheapest) of a search's Pareto front instead."),
    search_name: str = typer.Option("search", "--search", help="Which search's front --pareto reads (RUN/search/NAME)."),
    out: Path = typer.Option(..., "--out", help="Folder to write model.pt and arch.json into."),
) -> None:
    """Extract one subnet (with its own BN statistics) as a standalone torch module."""
    from nasfleet.orchestrator.evaluate.subnets import evaluate_arch
    from nasfleet.orchestrator.evaluate.trained import load_trained
    from nasfleet.orchestrator.storage import storage_error
    from nasfleet.orchestrator.subnet_search.experiment import search_folder
    from nasfleet.orchestrator.subnet_search.pareto_report import front_member
    from nasfleet.supernet import extract, recalibrate_batchnorm, save_subnet

    if arch is not None and pareto is not None:
        raise NasfleetError("give either --arch or --pareto, not both")
    if pareto is not None and pareto < 1:
        raise NasfleetError(f"--pareto counts from 1 (the cheapest subnet of the front), got {pareto}")
    if out.exists() and not out.is_dir():
        raise NasfleetError(f"--out {out} is a file; give a folder")
    trained = load_trained(run)
    if pareto is not None:
        _, chosen = front_member(search_folder(run, search_name), pareto)
        trained.space.validate(chosen)
    elif arch == "derived":
        derive = getattr(trained.model, "derived_arch", None)
        if derive is None:
            raise NasfleetError(f"run {run} (strategy {trained.config.strategy.name!r}) derives no architecture: 'derived' needs tanglenas")
        chosen = derive()
    else:
        chosen = parse_arch(arch or "largest", trained.space)
    recalibrate_batchnorm(trained.model, chosen, trained.calibration_batches())
    subnet = extract(trained.model, trained.space, chosen).eval()
    try:
        save_subnet(subnet, trained.space, chosen, out)
    except OSError as exc:
        raise storage_error("write", str(out), exc) from None
    result = evaluate_arch(trained, chosen, ("test",), "exported")
    console.print(
        f"exported {escape(chosen.describe())} to {out}: {result.mflops:.3f} MFLOPs, {result.params:,} params, "
        f"test accuracy {100 * result.accuracy['test']:.2f}%"
    )
