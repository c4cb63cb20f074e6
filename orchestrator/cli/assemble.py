"""``nasfleet assemble``: Deep Model Assembling of a job's largest subnet (see docs/assembling.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from nasfleet.orchestrator.cli.common import console
from nasfleet.orchestrator.cli.train import SET_HELP


def assemble(
    config: Path = typer.Option(..., "--config", help="Job config: its space (mbconv), data and optimizer recipe."),
    run_dir: str = typer.Option(..., "--run-dir", help="A new local folder: sub-runs, weights, assembly.json."),
    modules: int = typer.Option(2, "--modules", help="K: consecutive modules the largest subnet's blocks split into."),
    actors: int = typer.Option(
        2, "--actors", help="Ray actors incubating modules at once (0: in this process, one after another)."
    ),
    meta_steps: int = typer.Option(200, "--meta-steps", help="Training steps of the shallow meta model."),
    incubation_steps: int = typer.Option(300, "--incubation-steps", help="Training steps of each incubation job."),
    finetune_steps: int = typer.Option(150, "--finetune-steps", help="Steps fine-tuning the assembled network."),
    shared_meta: bool = typer.Option(
        True, "--shared-meta/--no-shared-meta",
        help="--no-shared-meta is the ablation: each module incubates in a meta model of its own.",
    ),
    ray_address: Optional[str] = typer.Option(
        None, "--ray-address", help="Ray cluster to join (default: $RAY_ADDRESS, else a new loopback one)."
    ),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
) -> None:
    """Train the largest subnet as K modules, each incubated on its own Ray actor in a shared meta model,
    then assemble them and fine-tune; writes RUN_DIR/assembly.json."""
    from rich.table import Table

    from nasfleet.orchestrator.assembling import RESULT_FILE, AssemblySettings
    from nasfleet.orchestrator.assembling import assemble as run_assembly
    from nasfleet.orchestrator.config import load_config

    shortcuts = [f"run_dir={run_dir}"] + ([f"launch.ray_address={ray_address}"] if ray_address else [])
    base = load_config(config, shortcuts + list(overrides))
    settings = AssemblySettings(modules, actors, meta_steps, incubation_steps, finetune_steps, shared_meta)
    record = run_assembly(base, settings)
    table = Table(title=f"{run_dir}: {modules} modules, {actors or 'no'} actors — {RESULT_FILE}")
    for column in ("network", "val acc", "test acc"):
        table.add_column(column)
    for name, accuracy in record.accuracy.items():
        table.add_row(name, f"{100 * accuracy['val']:.2f}%", f"{100 * accuracy['test']:.2f}%")
    console.print(table)
    walls = ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in record.wall_s.items())
    console.print(f"wall clock: {walls}")
