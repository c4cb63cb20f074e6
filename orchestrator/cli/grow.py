"""``nasfleet grow``: MixtureGrowth from a trained small run to a grown run (see docs/mixturegrowth.md)."""

from __future__ import annotations

from typing import Optional

import typer

from nasfleet.orchestrator.cli.runs import RUN_HELP
from nasfleet.orchestrator.cli.train import LAUNCHER_HELP, SET_HELP, WORKERS_HELP, is_text, report_job, shortcut_overrides


def grow(
    run: str = typer.Option(..., "--run", help=f"The small network: {RUN_HELP} (strategy mixturegrowth, phase small)."),
    run_dir: str = typer.Option(..., "--run-dir", help="A new local folder for the grown run."),
    steps: Optional[int] = typer.Option(None, help="Training steps of the grown network (default: the small run's)."),
    new_weights: str = typer.Option(
        "templates", "--new-weights",
        help="templates: new blocks are new combinations of the trained templates; random: fresh weights (the ablation).",
    ),
    target_arch: Optional[str] = typer.Option(
        None, "--target-arch", help="Arch JSON of the grown network (default: the small run's target_arch, else the largest).",
    ),
    workers: Optional[str] = typer.Option(None, help=WORKERS_HELP),
    launcher: Optional[str] = typer.Option(None, help=LAUNCHER_HELP),
    progress: bool = typer.Option(True, help="Show a progress bar (training in this process)."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
) -> None:
    """Grow a trained small mixturegrowth run into a wider network and train it; the grown run is an ordinary run."""
    from nasfleet.errors import NasfleetError
    from nasfleet.orchestrator.growth import grown_job, small_run, write_grown_weights
    from nasfleet.orchestrator.launch.job import run_job
    from nasfleet.orchestrator.launch.validate import validate_job

    if new_weights not in ("templates", "random"):
        raise NasfleetError(f"--new-weights takes templates or random, got {new_weights!r}")
    small = small_run(run)
    overrides = shortcut_overrides(steps=steps, workers=workers, launcher=launcher) + list(set_)
    job = grown_job(small.config, run_dir, new_weights, target_arch, overrides)
    validate_job(job.model_copy(update={"init_weights": None}))  # all but the weights, which do not exist yet
    weights = write_grown_weights(small, job)
    outcome = run_job(job, show_progress=progress)
    if outcome is not None:
        report_job(outcome, f"{job.run_name} grown from {run} ({new_weights}) after {outcome.step} steps", is_text(job))
        typer.echo(f"starting weights: {weights}")
