"""Everything a job needs checked on the driver, before any worker or rank starts.

A mistake found inside a Ray worker costs a cluster start and ``max_failures`` restarts
before it surfaces; found here it is one ``error:`` line in a second. So the driver builds
what it cheaply can (the space, the strategy with its parameters), checks the data set's
files, the DeepSpeed settings and what the strategy supports, and only then launches.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.config import JobConfig, read_yaml
from nasfleet.orchestrator.data import check_data
from nasfleet.orchestrator.launch.ray_cluster import check_reachable
from nasfleet.orchestrator.storage import is_uri, resolve_storage
from nasfleet.orchestrator.train.loop import zero_stage
from nasfleet.orchestrator.train.setup import job_space, job_strategy, load_initial_weights


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


DEEPSPEED_KEYS = frozenset({
    "activation_checkpointing", "aio", "autotuning", "bf16", "bfloat16", "checkpoint", "comet", "comms_logger",
    "communication_data_type", "compile", "csv_monitor", "data_efficiency", "data_parallel_size", "data_types",
    "dataloader_drop_last", "datastates_ckpt", "disable_allgather", "disable_python_gc", "dump_state",
    "expert_parallel", "flops_profiler", "fp16", "gradient_accumulation_steps", "gradient_allreduce_op",
    "gradient_clipping", "gradient_predivide_factor", "hybrid_engine", "log_level", "managed_gradient_accumulation",
    "memory_breakdown", "optimizer", "pipeline", "prescale_gradients", "scheduler",
    "seq_parallel_communication_data_type", "sequence_parallel_size", "steps_per_print", "tensor_parallel",
    "tensorboard", "timers", "torch_autocast", "train_batch_size", "train_micro_batch_size_per_gpu",
    "use_data_before_expert_parallelism", "vocabulary_size", "wall_clock_breakdown", "wandb", "weight_quantization",
    "zero_allow_untested_optimizer", "zero_force_ds_cpu_optimizer", "zero_optimization",
})
"""The top-level keys DeepSpeed 0.19.8 reads: those ``DeepSpeedConfig`` looks up, less the ones it refuses as
removed features, plus the two mesh sizes ``deepspeed.initialize`` reads itself. DeepSpeed silently ignores any
other key, so a misspelt ``zero_optimisation`` would train with ZeRO off; the list is spelt out because importing
DeepSpeed on the driver costs seconds and logs to stderr (tests/integration/test_reliability.py re-derives it
from the installed DeepSpeed)."""


NASFLEET_SECTION = "nasfleet"
"""A DeepSpeed config's own section for nasfleet (never passed to DeepSpeed): what hardware the file is for.

``{"requires": "gpu", "hardware": "…"}`` makes a GPU file refuse a CPU job in one line naming that
hardware, instead of starting ranks that fail or quietly train in another precision.
"""
REQUIREMENTS = ("cpu", "gpu", "any")


def _check_requirements(section: Any, gpu: bool) -> None:
    if not isinstance(section, dict) or set(section) - {"requires", "hardware"}:
        raise NasfleetError(f"DeepSpeed config: {NASFLEET_SECTION!r} takes only 'requires' and 'hardware'")
    requires = section.get("requires", "any")
    if requires not in REQUIREMENTS:
        raise NasfleetError(f"DeepSpeed config: {NASFLEET_SECTION}.requires must be one of {', '.join(REQUIREMENTS)}")
    hardware = section.get("hardware", "GPUs" if requires == "gpu" else "CPUs")
    if requires == "gpu" and not gpu:
        raise NasfleetError(
            f"this DeepSpeed config is for {hardware}; on CPUs use cluster_configs/deepspeed/zero2_cpu.json "
            "(or zero0_cpu.json, zero1.json), or pass --gpu on a GPU cluster"
        )
    if requires == "cpu" and gpu:
        raise NasfleetError(f"this DeepSpeed config is for {hardware}, not GPUs: drop --gpu or choose a GPU config")


def check_deepspeed(settings: dict[str, Any], gpu: bool) -> None:
    """Refuse DeepSpeed settings that cannot work here, instead of hanging or failing in every rank."""
    if NASFLEET_SECTION in settings:
        _check_requirements(settings[NASFLEET_SECTION], gpu)
    for key in settings:
        if key == NASFLEET_SECTION:
            continue
        if key not in DEEPSPEED_KEYS:
            close = difflib.get_close_matches(str(key), DEEPSPEED_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise NasfleetError(f"DeepSpeed config: unknown key {key!r}{hint}: DeepSpeed 0.19.8 reads no such setting")
    if "optimizer" in settings:
        raise NasfleetError("DeepSpeed config: remove the 'optimizer' block; nasfleet passes its own optimizer")
    if "scheduler" in settings:
        raise NasfleetError("DeepSpeed config: remove the 'scheduler' block; nasfleet's schedule is optim.warmup_steps")
    for section in ("zero_optimization", "fp16", "bf16", "bfloat16"):
        if not isinstance(settings.get(section, {}), dict):
            raise NasfleetError(f"DeepSpeed config: {section} must be a mapping (a JSON object)")
    stage = settings.get("zero_optimization", {}).get("stage", 0)
    if isinstance(stage, bool) or stage not in (0, 1, 2, 3):
        raise NasfleetError(f"DeepSpeed config: zero_optimization.stage must be 0, 1, 2 or 3, got {stage!r}")
    # bf16 runs on CPUs (DeepSpeed's CPU accelerator supports it); fp16 needs CUDA's loss scaling.
    if settings.get("fp16", {}).get("enabled") and not gpu:
        raise NasfleetError("DeepSpeed config enables fp16, which needs GPUs: use launch.gpu or remove it")


def validate_job(job: JobConfig) -> None:
    """Raise one NasfleetError for the first thing that would make this job fail after it started."""
    check_data(job.data)
    space = job_space(job)
    strategy = job_strategy(job, space)
    strategy.check_training_inputs()
    resolve_storage(job.run_dir)  # a malformed URI fails here
    if job.init_weights is not None:
        load_initial_weights(strategy.build_model(), job.init_weights)
    launch = job.launch
    if launch.kind in ("mpi", "torchrun") and is_uri(job.run_dir):
        raise NasfleetError(f"launch.kind {launch.kind}: ranks publish into a shared folder; run_dir cannot be a URI")
    if launch.distributed:
        check_deepspeed(launch.deepspeed, launch.gpu)
        clipping = launch.deepspeed.get("gradient_clipping", 0)
        if clipping and clipping != job.optim.grad_clip_norm:
            raise NasfleetError(
                f"DeepSpeed config sets gradient_clipping {clipping}: set optim.grad_clip_norm instead "
                "(one setting clips every launcher, one process included)"
            )
        stage = zero_stage(launch.deepspeed)
        if stage > strategy.max_zero_stage:
            raise NasfleetError(
                f"strategy {job.strategy.name!r} supports DeepSpeed ZeRO stage {strategy.max_zero_stage} at most, "
                f"the DeepSpeed config asks for stage {stage}"
            )
        # DeepSpeed 0.19 loads partitioned optimizer state (ZeRO-1/2/3, and its bf16 optimizer,
        # which partitions the fp32 master weights) only onto the rank count that wrote it.
        if launch.elastic and stage > 0:
            raise NasfleetError(
                f"elastic training (launch.min_workers) needs DeepSpeed ZeRO stage 0, the config asks for stage {stage}: "
                "DeepSpeed cannot re-partition ZeRO optimizer state onto another number of ranks"
            )
        if launch.elastic and any(launch.deepspeed.get(key, {}).get("enabled") for key in ("bf16", "bfloat16")):
            raise NasfleetError(
                "elastic training (launch.min_workers) cannot use DeepSpeed's bf16 optimizer: it partitions its fp32 "
                "master weights across ranks, which DeepSpeed cannot re-partition onto another number of ranks"
            )
    if launch.comm.calibration is not None:
        if not launch.comm.calibration.is_file():
            raise NasfleetError(f"comm calibration {launch.comm.calibration} does not exist")
        from nasfleet.comm.calibrate import load_calibration

        load_calibration(launch.comm.calibration)
    if launch.comm.topology is not None:
        from nasfleet.comm import resolve_topology

        resolve_topology(launch.comm.topology)
    address = launch.ray_address or os.environ.get("RAY_ADDRESS")
    if launch.kind == "ray" and address:
        check_reachable(address)  # here, before the run folder is written; Ray would fail only after it
