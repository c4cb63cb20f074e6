"""The comm layer's prediction of a training step's gradient all-reduce, to log beside the measurement.

Two sources, whichever the user gives: an α–β fit measured on this machine or cluster
(`nasfleet comm calibrate`), or a fabric topology simulated at flow level.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nasfleet.comm import predict_dp_step_comm_time, resolve_topology
from nasfleet.comm.calibrate import load_calibration
from nasfleet.orchestrator.config import CommConfig, JobConfig
from nasfleet.orchestrator.train.setup import job_strategy

DEEPSPEED_BUCKET_ELEMENTS = 500_000_000  # DeepSpeed's default reduce_bucket_size (elements, not bytes)


@dataclass(frozen=True)
class CommPrediction:
    allreduce_s: float
    source: str


def gradient_dtype_bytes(deepspeed_config: dict[str, Any]) -> int:
    half = any(deepspeed_config.get(k, {}).get("enabled") for k in ("bf16", "fp16"))
    return 2 if half else 4


def predict_step_allreduce(
    num_params: int, world_size: int, deepspeed_config: dict[str, Any], source: CommConfig
) -> CommPrediction | None:
    """Seconds of gradient all-reduce per optimizer step, or None without a source."""
    dtype_bytes = gradient_dtype_bytes(deepspeed_config)
    calibration, topology = source.calibration, source.topology
    if calibration is not None:
        fit = load_calibration(calibration)
        return CommPrediction(fit.predict_s("allreduce", num_params * dtype_bytes), f"calibration {calibration}")
    if topology is not None:
        zero = deepspeed_config.get("zero_optimization", {})
        seconds = predict_dp_step_comm_time(
            num_params,
            world_size,
            resolve_topology(topology),
            zero_stage=int(zero.get("stage", 0)),
            bucket_bytes=int(zero.get("reduce_bucket_size", DEEPSPEED_BUCKET_ELEMENTS)) * dtype_bytes,
            dtype_bytes=dtype_bytes,
        )
        return CommPrediction(seconds, f"topology {topology}")
    return None


def predict_for_job(job: JobConfig, world_size: int) -> CommPrediction | None:
    """The prediction for this job's model (its full gradient is all-reduced every step), or None without a source."""
    source = job.launch.comm
    if source.calibration is None and source.topology is None:
        return None
    num_params = sum(p.numel() for p in job_strategy(job).build_model().parameters())  # few-shot: every copy
    return predict_step_allreduce(num_params, world_size, job.launch.deepspeed, source)
