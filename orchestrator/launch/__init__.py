"""Launching a training job: validated on the driver, then run here, on Ray Train, or as MPI/torchrun ranks."""

from nasfleet.orchestrator.launch.job import JobOutcome, evaluate_and_record, run_job, train_job
from nasfleet.orchestrator.launch.ray_cluster import check_reachable, connect_ray
from nasfleet.orchestrator.launch.validate import check_deepspeed, read_deepspeed_file, validate_job

__all__ = [
    "JobOutcome", "check_deepspeed", "check_reachable", "connect_ray", "evaluate_and_record", "read_deepspeed_file",
    "run_job", "train_job", "validate_job",
]
