"""Everything a job needs checked on the driver, before any worker or rank starts.

A mistake found inside a Ray worker costs a cluster start and ``max_failures`` restarts
before it surfaces; found here it is one ``error:`` line in a second. So the driver builds
what it cheaply can (the space, the strategy with its parameters), checks the data set's
files, the DeepSpeed settings and what the strategy supports, and only then launches.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.config import JobConfig, read_yaml
from nasfleet.orchestrator.data import check_data
from nasfleet.orchestrator.storage import is_uri, resolve_storage
from nasfleet.orchestrator.train.loop import zero_stage
from nasfleet.orchestrator.train.setup import job_space, job_strategy


def read_deepspeed_file(path: Path) -> dict[str, Any]:
    """A DeepSpeed config file, JSON or YAML, as the dict a job config holds under ``launch.deepspeed``."""
    if path.suffix in (".yaml", ".yml"):
        settings = read_yaml(path, "DeepSpeed config")
    else:
        if not path.is_file():
            raise NasfleetError(f"DeepSpeed config {path} does not exist")
        try:
            settings = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise NasfleetError(f"DeepSpeed config {path} is not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            raise NasfleetError(f"DeepSpeed config {path} is not valid JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(settings, dict):
        raise NasfleetError(f"DeepSpeed config {path} must be a JSON object")
    return settings


def check_deepspeed(settings: dict[str, Any], gpu: bool) -> None:
    """Refuse DeepSpeed settings that cannot work here, instead of hanging or failing in every rank."""
    if "optimizer" in settings:
        raise NasfleetError("DeepSpeed config: remove the 'optimizer' block; nasfleet passes its own optimizer")
    if "scheduler" in settings:
        raise NasfleetError("DeepSpeed config: remove the 'scheduler' block; nasfleet's schedule is optim.warmup_steps")
    zero = settings.get("zero_optimization", {})
    if not isinstance(zero, dict) or not isinstance(zero.get("stage", 0), int) or not 0 <= zero.get("stage", 0) <= 3:
        raise NasfleetError("DeepSpeed config: zero_optimization.stage must be 0, 1, 2 or 3")
    for half in ("fp16", "bf16"):
        section = settings.get(half, {})
        if isinstance(section, dict) and section.get("enabled") and not gpu and half == "fp16":
            raise NasfleetError("DeepSpeed config enables fp16, which needs GPUs: use launch.gpu or remove it")


def validate_job(job: JobConfig) -> None:
    """Raise one NasfleetError for the first thing that would make this job fail after it started."""
    check_data(job.data)
    space = job_space(job)
    strategy = job_strategy(job, space)
    resolve_storage(job.run_dir)  # a malformed URI fails here
    launch = job.launch
    if launch.kind in ("mpi", "torchrun") and is_uri(job.run_dir):
        raise NasfleetError(f"launch.kind {launch.kind}: ranks publish into a shared folder; run_dir cannot be a URI")
    if launch.distributed:
        check_deepspeed(launch.deepspeed, launch.gpu)
        stage = zero_stage(launch.deepspeed)
        if stage > strategy.max_zero_stage:
            raise NasfleetError(
                f"strategy {job.strategy.name!r} supports DeepSpeed ZeRO stage {strategy.max_zero_stage} at most, "
                f"the DeepSpeed config asks for stage {stage}"
            )
    if launch.comm.calibration is not None and not launch.comm.calibration.is_file():
        raise NasfleetError(f"comm calibration {launch.comm.calibration} does not exist")
    if launch.comm.topology is not None:
        from nasfleet.comm import resolve_topology

        resolve_topology(launch.comm.topology)
