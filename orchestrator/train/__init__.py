"""Training: the one loop (:func:`train_rank`), one step, the backends, the checkpoint layout.

Launchers (:mod:`nasfleet.orchestrator.launch`) decide where ranks run; everything that
takes optimizer steps is here.
"""

from nasfleet.orchestrator.train.allocator import reuse_freed_memory
from nasfleet.orchestrator.train.backends import DeepSpeedBackend, TorchBackend, TrainingBackend, deepspeed_config_for
from nasfleet.orchestrator.train.checkpoints import (
    CHECKPOINTS_KEPT,
    CONFIG_FILE,
    METRICS_FILE,
    SUPERNET_FILE,
    CheckpointMeta,
    RankState,
    checkpoint_name,
    checkpoint_step,
    completed_checkpoints,
    has_checkpoint,
    latest_checkpoint,
    read_meta,
    read_rank_state,
    read_supernet,
    weights_sha256,
)
from nasfleet.orchestrator.train.loop import RankContext, ResumePoint, sampling_rank, train_rank
from nasfleet.orchestrator.train.metrics_log import read_records
from nasfleet.orchestrator.train.setup import RankSetup, build_rank, job_space, job_strategy, lr_factor, sgd_with_schedule
from nasfleet.orchestrator.train.step import StepBatch, TaskResult, run_step

__all__ = [
    "CHECKPOINTS_KEPT", "CONFIG_FILE", "METRICS_FILE", "SUPERNET_FILE", "CheckpointMeta", "DeepSpeedBackend",
    "RankContext", "RankSetup", "RankState", "ResumePoint", "StepBatch", "TaskResult", "TorchBackend",
    "TrainingBackend", "build_rank", "checkpoint_name", "checkpoint_step", "completed_checkpoints",
    "deepspeed_config_for", "has_checkpoint", "job_space", "job_strategy", "latest_checkpoint", "lr_factor",
    "read_meta", "read_rank_state", "read_records", "read_supernet", "reuse_freed_memory", "run_step", "sampling_rank",
    "sgd_with_schedule", "train_rank", "weights_sha256",
]
