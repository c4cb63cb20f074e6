"""Checkpoints published straight into a run folder: this process alone, or ranks sharing a filesystem.

On a local filesystem the ranks write one hidden staging folder together and rank 0
publishes it with one rename, so a crash never leaves a half-written checkpoint under a
``checkpoint_<step>`` name. For a storage URI (one process only) the checkpoint is staged
locally and uploaded, ``meta.json`` last: a folder without it is not a checkpoint yet.
Only :data:`CHECKPOINTS_KEPT` checkpoints are kept.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.config import JobConfig, config_yaml
from nasfleet.orchestrator.metrics import TrainingMetrics
from nasfleet.orchestrator.storage import (
    copy_folder,
    delete_folder,
    download_folder,
    is_file,
    is_uri,
    join,
    make_dirs,
    read_bytes,
    write_bytes,
    write_text,
)
from nasfleet.orchestrator.train.checkpoints import (
    CHECKPOINT_PREFIX,
    CHECKPOINTS_KEPT,
    CONFIG_FILE,
    META_FILE,
    checkpoint_name,
    checkpoint_step,
    completed_checkpoints,
    latest_checkpoint,
    read_meta,
    read_metrics_lines,
    read_rank_state,
)
from nasfleet.orchestrator.train.loop import RankContext, ResumePoint


@contextmanager
def local_copy(checkpoint: str) -> Iterator[Path]:
    """The checkpoint as a local folder: itself when local, a temporary download for a URI."""
    if not is_uri(checkpoint):
        yield Path(checkpoint)
        return
    with tempfile.TemporaryDirectory(prefix="nasfleet-resume-") as tmp:
        download_folder(checkpoint, Path(tmp))
        yield Path(tmp)


@contextmanager
def resume_point_of(checkpoint: str | None, rank: int) -> Iterator[ResumePoint | None]:
    if checkpoint is None:
        yield None
        return
    meta = read_meta(checkpoint)
    state_of_rank = rank % meta.world_size  # a rank an elastic job added takes over an existing rank's state
    state = read_rank_state(checkpoint, state_of_rank)
    lines = read_metrics_lines(checkpoint)
    with local_copy(checkpoint) as folder:
        yield ResumePoint(folder, meta, state, lines, state_of_rank)


class RunFolderContext(RankContext):
    """Ranks that publish checkpoints into ``run`` themselves (no Ray Train in between)."""

    def __init__(self, run: str, rank: int = 0, world_size: int = 1, metrics: TrainingMetrics | None = None) -> None:
        self.run = run
        self.rank = rank
        self.world_size = world_size
        self._metrics = metrics

    def metrics(self) -> TrainingMetrics | None:
        return self._metrics

    def resume_point(self) -> Any:
        return resume_point_of(latest_checkpoint(self.run), self.rank)

    @contextmanager
    def staging_folder(self, step: int) -> Iterator[Path]:
        if is_uri(self.run):
            with tempfile.TemporaryDirectory(prefix="nasfleet-checkpoint-") as tmp:
                yield Path(tmp)
            return
        folder = Path(self.run) / f".{checkpoint_name(step)}.partial"
        if self.rank == 0:
            shutil.rmtree(folder, ignore_errors=True)  # left by a crash mid-checkpoint
            folder.mkdir(parents=True)
        self.barrier()
        yield folder

    def publish(self, step: int, record: dict[str, Any], staged: Path | None) -> None:
        if staged is not None and self.rank == 0:
            if is_uri(self.run):
                self._upload(step, staged)
            else:
                final = Path(self.run) / checkpoint_name(step)
                shutil.rmtree(final, ignore_errors=True)
                os.replace(staged, final)
            for old in completed_checkpoints(self.run)[:-CHECKPOINTS_KEPT]:
                delete_folder(old)
        if staged is not None:
            self.barrier()

    def _upload(self, step: int, staged: Path) -> None:
        destination = join(self.run, checkpoint_name(step))
        meta = (staged / META_FILE).read_bytes()
        (staged / META_FILE).unlink()
        copy_folder(staged, destination)
        write_bytes(join(destination, META_FILE), meta)


def check_run_folder(job: JobConfig, resume: bool) -> bool:
    """Refuse to overwrite a run or to resume none; returns whether training is left to do."""
    existing = latest_checkpoint(job.run_dir)
    if existing and not resume:
        raise NasfleetError(f"{job.run_dir} already holds a run; pass --resume to continue it or choose another run_dir")
    if resume and not existing:
        raise NasfleetError(f"cannot resume: no checkpoint in {job.run_dir}")
    return existing is None or checkpoint_step(existing) < job.optim.steps


def write_run_config(job: JobConfig) -> None:
    """Create the run folder with the job's ``config.yaml`` (what re-runs it), clearing crash leftovers."""
    make_dirs(job.run_dir)
    clear_partial_checkpoints(job.run_dir)
    write_text(join(job.run_dir, CONFIG_FILE), config_yaml(job))


@contextmanager
def run_config_for_attempt(job: JobConfig) -> Iterator[None]:
    """Write the job's ``config.yaml`` for one training attempt (:func:`write_run_config`).

    A resume that fails before it publishes a checkpoint (a checkpoint that does not match,
    a full disk, an unreachable cluster) puts the previous ``config.yaml`` back: the run is
    still the one its newest checkpoint holds, so ``--resume`` without the new flags goes on.
    """
    location = join(job.run_dir, CONFIG_FILE)
    previous = read_bytes(location) if is_file(location) else None
    newest = latest_checkpoint(job.run_dir)
    write_run_config(job)
    try:
        yield
    except BaseException:
        if previous is not None and latest_checkpoint(job.run_dir) == newest:
            with suppress(NasfleetError):  # the error that stopped training is the one to report
                write_bytes(location, previous)
        raise


def clear_partial_checkpoints(run: str) -> None:
    """Remove staging folders a crashed run left behind (local runs only)."""
    if is_uri(run) or not Path(run).is_dir():
        return
    for leftover in Path(run).glob(f".{CHECKPOINT_PREFIX}*.partial"):
        shutil.rmtree(leftover, ignore_errors=True)

