"""Training in this process: the training loop at world size 1 with the plain torch backend."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from nasfleet.orchestrator.config import JobConfig
from nasfleet.orchestrator.launch.run_folder import RunFolderContext
from nasfleet.orchestrator.metrics import TrainingMetrics
from nasfleet.orchestrator.train.loop import train_rank


class LocalContext(RunFolderContext):
    """One process; draws a progress bar when asked to (and prints no progress lines: a terminal's, or quiet)."""

    progress_lines = False

    def __init__(self, run: str, progress: Progress | None, total: int, metrics: TrainingMetrics | None) -> None:
        super().__init__(run, metrics=metrics)
        self._progress = progress
        self._bar = progress.add_task("train", total=total, status="") if progress is not None else None

    def step_done(self, step: int, last_step: int, status: str) -> None:
        if self._progress is not None and self._bar is not None:
            self._progress.update(self._bar, completed=step, **({"status": status} if status else {}))


def train_local(
    job: JobConfig, until_step: int | None = None, show_progress: bool = False, metrics: TrainingMetrics | None = None
) -> int:
    """Train (or continue) ``job`` here up to ``until_step`` (default: the end); returns the step reached."""
    columns = (
        TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(), TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not show_progress) as progress:
        context = LocalContext(job.run_dir, progress if show_progress else None, job.optim.steps, metrics)
        return train_rank(job, context, until_step)
