"""A continual-learning run end to end: train a task sequence through the trainer, measure forgetting.

The job's strategy is ``continual`` (``nasfleet.strategies.continual``); it carries the task
schedule. :func:`run_continual` trains the job up to the end of each task in turn (the trainer
stops there with a checkpoint and resumes from it, exactly as an uninterrupted run), and after each
task evaluates every task learned so far with that task's mask, head and inputs. The accuracy
matrix gives the two numbers continual learning reports: average accuracy after the whole sequence,
and forgetting, the mean over all tasks but the last of (accuracy right after learning the task −
accuracy after the sequence).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.config import JobConfig
from nasfleet.orchestrator.data import ImageSet
from nasfleet.orchestrator.evaluate import TrainedSupernet, accuracy, load_trained
from nasfleet.orchestrator.launch import train_job
from nasfleet.orchestrator.launch.job import absolute_run_dir
from nasfleet.orchestrator.storage import join
from nasfleet.orchestrator.train import checkpoint_name, job_strategy, read_supernet
from nasfleet.orchestrator.train.checkpoints import load_state_into
from nasfleet.strategies.continual import ContinualStrategy, using_task
from nasfleet.supernet import calibrated_batchnorm

RESULT_FILE = "continual.json"
CALIBRATION_BATCHES = 8
"""Batches of a task's own training images its batch-norm statistics are re-estimated on before it is evaluated."""


@dataclass(frozen=True)
class ContinualResult:
    method: str
    density: float
    tasks: list[str]
    accuracy: list[list[float]]
    """``accuracy[i][j]``: task ``j``'s accuracy after learning tasks ``0..i`` (``j ≤ i``)."""
    split: str
    images_per_task: list[int]

    @property
    def average_accuracy(self) -> float:
        return float(np.mean(self.accuracy[-1]))

    @property
    def forgetting(self) -> float:
        """Mean over tasks but the last of (accuracy right after learning it − after the sequence); 0 for one task."""
        final = self.accuracy[-1]
        drops = [self.accuracy[j][j] - final[j] for j in range(len(final) - 1)]
        return float(np.mean(drops)) if drops else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "average_accuracy": self.average_accuracy, "forgetting": self.forgetting}


def continual_strategy(job: JobConfig) -> ContinualStrategy:
    """The job's strategy, which must be ``continual`` with a step budget covering its whole sequence."""
    if job.strategy.name != "continual":
        raise NasfleetError(f"a continual run needs strategy 'continual', the job has {job.strategy.name!r}")
    strategy = job_strategy(job)
    assert isinstance(strategy, ContinualStrategy)
    needed = strategy.task_end(len(strategy.tasks) - 1)
    if job.optim.steps != needed:
        raise NasfleetError(
            f"optim.steps is {job.optim.steps}, the sequence needs {len(strategy.tasks)} tasks × "
            f"{strategy.params.steps_per_task} steps = {needed}"
        )
    return strategy


def task_examples(data: ImageSet, classes: tuple[int, ...], limit: int | None = None, seed: int = 0) -> ImageSet:
    """The examples of ``classes`` (a seeded subset of ``limit`` of them, in their order, when given)."""
    index = np.flatnonzero(np.isin(data.labels.numpy(), classes))
    if limit is not None and limit < index.size:
        index = np.sort(np.random.default_rng(seed).choice(index, limit, replace=False))
    picked = torch.from_numpy(index)
    return ImageSet(data.images[picked], data.labels[picked])


def evaluate_task(
    trained: TrainedSupernet, strategy: ContinualStrategy, task: int, split: str = "test", limit: int | None = None
) -> tuple[float, int]:
    """Task ``task``'s accuracy (and image count) on ``split``, with its mask and head, and batch norm
    re-estimated on its own training images."""
    classes = strategy.tasks[task].classes
    data = task_examples(trained.data.split(split), classes, limit)
    batch = trained.config.data.batch_size
    train = task_examples(trained.data.train, classes, batch * CALIBRATION_BATCHES, seed=trained.config.seed + task)
    calibration = [train.images[i : i + batch] for i in range(0, len(train), batch)]
    arch = trained.space.largest()
    with using_task(trained.model, task):
        with calibrated_batchnorm(trained.model, arch, calibration):
            return accuracy(trained.model, arch, data), len(data)


def run_continual(
    job: JobConfig, split: str = "test", images_per_task: int | None = None, resume: bool = False,
    show_progress: bool = False,
) -> ContinualResult:
    """Train the job's task sequence task by task, evaluating every learned task after each one.

    Writes the result to ``RUN/continual.json`` (a local run folder) and returns it. ``resume``
    continues an interrupted run: tasks it trained already are measured again from the checkpoints
    at their ends (each task's training stops with one there).
    """
    job = absolute_run_dir(job)
    strategy = continual_strategy(job)
    rows: list[list[float]] = []
    counts: list[int] = []
    for t in range(len(strategy.tasks)):
        end = strategy.task_end(t)
        train_job(job, resume=resume or t > 0, until_step=end, show_progress=show_progress)
        trained = load_trained(job.run_dir)
        if trained.step != end:  # a resumed run already past this task: its checkpoint at the task's end
            state, source = read_supernet(join(job.run_dir, checkpoint_name(end)))
            load_state_into(trained.model, state, source)
        measured = [evaluate_task(trained, strategy, j, split, images_per_task) for j in range(t + 1)]
        rows.append([acc for acc, _ in measured])
        counts = [n for _, n in measured]
    result = ContinualResult(
        strategy.params.method, strategy.params.density, [task.describe() for task in strategy.tasks], rows, split,
        counts,
    )
    run = Path(job.run_dir)
    if run.is_dir():
        (run / RESULT_FILE).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return result
