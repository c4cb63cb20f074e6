"""``nasfleet continual``: learn a task sequence one task after another, report accuracy and forgetting.

One process trains the job (``orchestrator/configs/continual.yaml`` unless ``--config``) with the
``continual`` strategy, task by task through the trainer, and evaluates every learned task after
each one (see docs/continual.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.cli.common import console

DEFAULT_CONFIG = "configs/continual.yaml"
METHODS = ("exssnet", "supsup", "finetune")


def continual(
    tasks: str = typer.Option(
        "split:5", "--tasks", help="split:N, permuted:N or classes:A-B,C-D,... (e.g. classes:0-1,2-3,4-5,6-7,8-9,10-19 "
        "on --data fashion-digits: five Fashion-MNIST pairs, then the digits)."
    ),
    method: str = typer.Option("exssnet", "--method", help="exssnet, supsup or finetune."),
    density: float = typer.Option(0.1, "--density", help="The fraction of each unit's weights a task's mask keeps."),
    steps_per_task: int = typer.Option(100, "--steps-per-task", help="Training steps per task."),
    data: Optional[str] = typer.Option(None, "--data", help="Data set: fashion-mnist (default), fashion-digits, digits."),
    config: Optional[Path] = typer.Option(None, "--config", help="Job config (default: the built-in continual.yaml)."),
    run_dir: Optional[str] = typer.Option(None, "--run-dir", help="The run's folder (default: the config's)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="The job's seed (weights, batches)."),
    exclusive: bool = typer.Option(True, "--exclusive/--no-exclusive", help="ExSSNeT: train only weights no earlier task uses."),
    kkt: bool = typer.Option(True, "--kkt/--no-kkt", help="ExSSNeT: start a task's mask from the best earlier one (k-NN)."),
    test_images: Optional[int] = typer.Option(None, "--test-images", help="Evaluate each task on at most this many test images."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in RUN_DIR."),
    set_: list[str] = typer.Option([], "--set", help="Override any config field, e.g. --set optim.lr=0.05; repeatable."),
) -> None:
    """Learn a task sequence with one supermask per task (ExSSNeT, SupSup) or by fine-tuning; print the accuracy matrix."""
    from importlib import resources

    from nasfleet.orchestrator.config import apply_overrides, config_from_dict, read_yaml
    from nasfleet.orchestrator.continual import RESULT_FILE, run_continual
    from nasfleet.orchestrator.data import data_shape
    from nasfleet.strategies.continual import parse_tasks

    if method not in METHODS:
        raise NasfleetError(f"unknown method {method!r} (expected {', '.join(METHODS)})")
    if steps_per_task < 1:
        raise NasfleetError(f"--steps-per-task must be 1 or more, got {steps_per_task}")
    if test_images is not None and test_images < 1:
        raise NasfleetError(f"--test-images must be 1 or more, got {test_images}")
    if config is None:
        import yaml

        raw = yaml.safe_load(resources.files("nasfleet.orchestrator").joinpath(DEFAULT_CONFIG).read_text())
    else:
        raw = read_yaml(config, "config file")
    if not isinstance(raw, dict):
        raise NasfleetError(f"config file {config}: expected a mapping at the top level")
    overrides = [f"data.dataset={data}"] if data is not None else []
    job = config_from_dict(apply_overrides(raw, overrides + list(set_)), str(config or DEFAULT_CONFIG))
    count = len(parse_tasks(tasks, data_shape(job.data).num_classes))
    params = {
        **job.strategy.params, "tasks": tasks, "method": method, "density": density, "steps_per_task": steps_per_task,
        "exclusive": exclusive, "kkt": kkt,
    }
    values = {**job.model_dump(mode="json"), "strategy": {"name": "continual", "params": params}}
    values["optim"] = {**values["optim"], "steps": count * steps_per_task}
    values["checkpoint_every_steps"] = steps_per_task
    if run_dir is not None:
        values["run_dir"] = run_dir
    if seed is not None:
        values["seed"] = seed
    job = config_from_dict(values, "continual job")
    result = run_continual(job, images_per_task=test_images, resume=resume, show_progress=True)

    table = Table(title=f"{method} (density {density:g}): test accuracy after each task")
    table.add_column("after task", justify="right")
    for j, name in enumerate(result.tasks):
        table.add_column(f"task {j}\n{name}", justify="right")
    for i, row in enumerate(result.accuracy):
        table.add_row(str(i), *(f"{a:.3f}" for a in row), *([""] * (len(result.tasks) - len(row))))
    console.print(table)
    console.print(
        f"average accuracy {result.average_accuracy:.4f}  forgetting {result.forgetting:.4f}  "
        f"→ {escape(str(Path(job.run_dir) / RESULT_FILE))}"
    )
