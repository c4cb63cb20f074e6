"""The ``nasfleet`` command line.

Every error a user can cause is a NasfleetError, caught once in :func:`main` and
printed as one line with exit code 2.
"""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path
from typing import Optional

import typer
import yaml
from rich.console import Console
from rich.table import Table

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.config import TrainConfig, config_from_dict, load_config
from nasfleet.orchestrator.evaluate import SubnetResult, evaluate_arch, evaluate_standard_subnets, load_trained
from nasfleet.orchestrator.trainer import train as run_training
from nasfleet.supernet import Arch, SearchSpace, arch_from_json, arch_to_dict, extract, recalibrate_batchnorm, save_subnet

app = typer.Typer(help="Train weight-sharing supernets and find the subnets worth deploying.", no_args_is_help=True)
console = Console()


def _mount_comm() -> None:
    try:
        from nasfleet.comm.cli import comm_app
    except ImportError:  # comm's CLI is optional while that package grows
        return
    app.add_typer(comm_app, name="comm", help="Simulate collective communication on leaf-spine fabrics.")


_mount_comm()


def demo_config() -> TrainConfig:
    text = resources.files("nasfleet.orchestrator").joinpath("configs/demo.yaml").read_text()
    return config_from_dict(yaml.safe_load(text), "built-in demo config")


def _with_overrides(config: TrainConfig, run_dir: Optional[Path], steps: Optional[int]) -> TrainConfig:
    update: dict[str, object] = {}
    if run_dir is not None:
        update["run_dir"] = run_dir
    if steps is not None:
        update["optim"] = config.optim.model_copy(update={"steps": steps})
    return config_from_dict({**config.model_dump(), **update}, "config with command-line overrides")


def print_results(results: list[SubnetResult], title: str) -> None:
    table = Table(title=title)
    for column in ("subnet", "arch", "MFLOPs", "params", "accuracy"):
        table.add_column(column, justify="left" if column in ("subnet", "arch") else "right")
    for r in results:
        table.add_row(r.role, r.arch.describe(), f"{r.mflops:.3f}", f"{r.params:,}", f"{100 * r.accuracy:.2f}%")
    console.print(table)


def _results_json(results: list[SubnetResult]) -> str:
    return json.dumps(
        [
            {"role": r.role, "arch": arch_to_dict(r.arch), "mflops": r.mflops, "params": r.params, "accuracy": r.accuracy}
            for r in results
        ],
        indent=2,
    )


@app.command()
def train(
    config: Path = typer.Option(..., "--config", "-c", help="YAML job config (see orchestrator/configs/demo.yaml)."),
    resume: bool = typer.Option(False, help="Continue the run in the config's run_dir from its checkpoint."),
    run_dir: Optional[Path] = typer.Option(None, help="Override the config's run_dir."),
    steps: Optional[int] = typer.Option(None, help="Override the number of optimizer steps."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Train a supernet in this process with the configured strategy."""
    cfg = _with_overrides(load_config(config), run_dir, steps)
    run = run_training(cfg, resume=resume, show_progress=progress)
    console.print(f"trained {run.step} steps; checkpoint in {run.checkpoint_path}")


@app.command()
def evaluate(
    run: Path = typer.Option(..., "--run", help="Run directory written by `nasfleet train`."),
    split: str = typer.Option("val", help="Data split: train, val or test."),
    random_subnets: int = typer.Option(3, "--random", min=0, help="How many random subnets besides the bounds."),
    seed: int = typer.Option(0, help="Seed for the random subnets."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Accuracy, MFLOPs and params of the smallest, largest and a few random subnets."""
    trained = load_trained(run)
    results = evaluate_standard_subnets(trained, split, random_subnets, seed)
    if as_json:
        typer.echo(_results_json(results))
    else:
        print_results(results, f"{run} — {split} split, step {trained.step}")


def _parse_arch(text: str, space: SearchSpace) -> Arch:
    """'smallest', 'largest', an arch JSON string, or @file.json; validated against ``space``."""
    if text in ("smallest", "largest"):
        return space.smallest() if text == "smallest" else space.largest()
    if text.startswith("@"):
        path = Path(text[1:])
        if not path.is_file():
            raise NasfleetError(f"architecture file {path} does not exist")
        text = path.read_text()
    return space.validate(arch_from_json(text))


@app.command()
def export(
    run: Path = typer.Option(..., "--run", help="Run directory written by `nasfleet train`."),
    arch: str = typer.Option("largest", help="'smallest', 'largest', an arch JSON string, or @file.json."),
    out: Path = typer.Option(..., "--out", help="Folder to write model.pt and arch.json into."),
) -> None:
    """Extract one subnet (with its own BN statistics) as a standalone torch module."""
    trained = load_trained(run)
    chosen = _parse_arch(arch, trained.space)
    recalibrate_batchnorm(trained.model, chosen, trained.calibration_batches())
    subnet = extract(trained.model, trained.space, chosen).eval()
    save_subnet(subnet, trained.space, chosen, out)
    result = evaluate_arch(trained, chosen, "test", "exported")
    console.print(
        f"exported {chosen.describe()} to {out}: {result.mflops:.3f} MFLOPs, {result.params:,} params, "
        f"test accuracy {100 * result.accuracy:.2f}%"
    )


@app.command()
def demo(
    run_dir: Path = typer.Option(Path("runs/demo"), help="Where the demo run is written (resumed if present)."),
    steps: Optional[int] = typer.Option(None, help="Override the demo's number of optimizer steps."),
) -> None:
    """Train the demo supernet on the bundled digits set, then print its subnets' test accuracy."""
    cfg = _with_overrides(demo_config(), run_dir, steps)
    console.print(f"demo: {cfg.strategy.name} training of a {cfg.space.name} supernet on {cfg.data.dataset}")
    has_checkpoint = (cfg.run_dir / "checkpoint.pt").exists()
    run_training(cfg, resume=has_checkpoint)
    trained = load_trained(cfg.run_dir)
    results = evaluate_standard_subnets(trained, "test", cfg.eval.random_subnets, cfg.seed)
    print_results(results, f"demo supernet after {trained.step} steps — test split")


def main() -> None:
    """Entry point: run the app, turning user errors into one line and exit code 2.

    Typer's standalone mode already reports usage errors (exit 2) and exits; only our
    own errors reach the handler.
    """
    try:
        app()
    except NasfleetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
