"""A trained run, loaded for evaluation, search or export (a local folder or a storage URI)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
import yaml
from torch import nn

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.config import JobConfig, config_from_dict
from nasfleet.orchestrator.data import BatchStream, DataSplits, load_data
from nasfleet.orchestrator.storage import is_dir, is_file
from nasfleet.orchestrator.train.checkpoints import (
    latest_checkpoint,
    load_state_into,
    read_config_text,
    read_meta,
    read_supernet,
)
from nasfleet.orchestrator.train.setup import job_space, job_strategy
from nasfleet.supernet import SearchSpace


@dataclass
class TrainedSupernet:
    """A finished (or checkpointed) run's supernet with its job, data and space."""

    config: JobConfig
    data: DataSplits
    space: SearchSpace
    model: nn.Module
    step: int
    source: str = ""
    """The checkpoint file the weights came from."""

    @property
    def checkpoint_id(self) -> str:
        """What results record as their origin: the checkpoint file and the step."""
        return f"{self.source or self.config.run_dir}@step{self.step}"

    def with_val_subset(self, images: int | None, seed: int = 0) -> TrainedSupernet:
        """This supernet scoring subnets on a seeded subset of ``images`` validation images (all when None).

        A Fashion-MNIST subnet costs ~9 s to score on the whole validation split on one core; a
        search or a ranking estimate can trade that precision (a standard error of ~0.7 points at 2,000
        images) for time.
        """
        if images is None:
            return self
        return replace(self, data=replace(self.data, val=self.data.val.subset(images, seed)))

    def calibration_batches(self) -> list[torch.Tensor]:
        stream = BatchStream(self.data.train, self.config.data.batch_size, seed=self.config.seed + 1)
        return [stream.batch(i)[0] for i in range(self.config.eval.calibration_batches)]


def job_of_checkpoint(checkpoint: str) -> JobConfig:
    """The job a checkpoint was trained as (its own ``config.yaml``)."""
    text = read_config_text(checkpoint)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        raise NasfleetError(f"checkpoint {checkpoint} holds a malformed config.yaml") from None
    return config_from_dict(data, f"{checkpoint}/config.yaml")


def build_model(job: JobConfig, space: SearchSpace | None = None) -> nn.Module:
    """The module a run of ``job`` trains, freshly initialised (its strategy may wrap the supernet)."""
    return job_strategy(job, space).build_model()


def load_trained(run: str | Path) -> TrainedSupernet:
    """Load the newest supernet of a finished or checkpointed run (local folder or storage URI)."""
    run = str(run)
    if not is_dir(run):
        raise NasfleetError(f"run directory {run} {'is a file' if is_file(run) else 'does not exist'}")
    checkpoint = latest_checkpoint(run)
    if checkpoint is None:
        raise NasfleetError(f"{run} holds no trained supernet (no complete checkpoint_* folder)")
    step = read_meta(checkpoint).step
    job = job_of_checkpoint(checkpoint)
    state, source = read_supernet(checkpoint)
    data = load_data(job.data)
    space = job_space(job)
    model = build_model(job, space)
    load_state_into(model, state, source)
    model.eval()
    return TrainedSupernet(job, data, space, model, step, source)
