"""Deep Model Assembling end to end (Ni et al., 2022): meta model, K incubations at once, assembly, fine-tune.

Every phase is an ordinary training job of strategy ``assembling`` (:mod:`nasfleet.strategies.assembling`)
run by the one trainer (:func:`nasfleet.orchestrator.launch.train_job`); this module only decides
which jobs run, where, starting from which weights (the job config's ``init_weights``), and records
what happened. The K incubation jobs are independent (the meta model they share is frozen), so
with ``actors ≥ 1`` they run on Ray actors, ``actors`` at a time; with ``actors = 0`` they run here,
one after another. A run folder holds one sub-run per job, the weight files passed between them
(``weights/``) and ``assembly.json``: settings, each incubation's wall-clock interval, accuracies,
training compute and wall times.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.config import JobConfig, config_from_dict
from nasfleet.orchestrator.data import load_data
from nasfleet.orchestrator.evaluate.subnets import evaluate_arch
from nasfleet.orchestrator.evaluate.trained import TrainedSupernet, load_trained
from nasfleet.orchestrator.launch.job import train_job
from nasfleet.orchestrator.launch.validate import validate_job
from nasfleet.orchestrator.storage import is_uri
from nasfleet.orchestrator.train.setup import job_space
from nasfleet.strategies.assembling import Phase, build_network, forward_macs, part_prefix, split_sizes
from nasfleet.strategies.base import require_mbconv

RESULT_FILE = "assembly.json"
SPLITS = ("val", "test")
FORWARD_BACKWARD = 3
"""Training compute is counted as 3 × forward multiply-accumulates per example (backward ≈ 2 × forward).
Incubation's frozen parts need no weight gradients, so this overstates incubation's cost a little."""


@dataclass(frozen=True)
class AssemblySettings:
    modules: int = 2
    """K: the target network's blocks split into this many consecutive modules."""
    actors: int = 2
    """Ray actors running incubations at once (0: in this process, one after another)."""
    meta_steps: int = 200
    incubation_steps: int = 300
    finetune_steps: int = 150
    shared_meta: bool = True
    """False is the ablation: module k incubates in a meta model of its own (trained from seed + k),
    and the assembled stem and head come from module 0's."""

    def check(self) -> None:
        if self.modules < 1:
            raise NasfleetError(f"--modules must be at least 1, got {self.modules}")
        if self.actors < 0:
            raise NasfleetError(f"--actors must be 0 (in this process) or more, got {self.actors}")
        for name in ("meta_steps", "incubation_steps", "finetune_steps"):
            if getattr(self, name) < 1:
                raise NasfleetError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class Interval:
    """When one incubation job ran (Unix seconds) and in which process."""

    module: int
    start_s: float
    end_s: float
    pid: int


@dataclass
class AssemblyRecord:
    settings: dict[str, Any]
    intervals: list[Interval] = field(default_factory=list)
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)
    """By network: ``meta``, ``assembled`` (before fine-tune), ``finetuned``; by split."""
    wall_s: dict[str, float] = field(default_factory=dict)
    """By phase: ``meta``, ``incubation``, ``finetune``, and their ``total`` (training only: the
    evaluations between phases are not counted, as they are not for the end-to-end baseline)."""
    train_macs: dict[str, float] = field(default_factory=dict)
    """Training compute by phase (multiply-accumulates, see :data:`FORWARD_BACKWARD`)."""
    target_step_macs: float = 0.0
    """One training step of the whole target network: what ``train_macs`` is compared with."""


def phase_job(
    base: JobConfig, phase: Phase, steps: int, run_dir: Path, modules: int, module: int = 0,
    init_weights: Path | None = None, seed: int | None = None,
) -> JobConfig:
    """``base`` (data, space, optimizer recipe) as a one-process job training ``phase`` for ``steps``."""
    data = base.model_dump(mode="json")
    data.update(
        run_dir=str(run_dir), seed=base.seed if seed is None else seed,
        strategy={"name": "assembling", "params": {"modules": modules, "phase": phase, "module": module}},
        init_weights=None if init_weights is None else str(init_weights),
        checkpoint_every_steps=steps, log_every_steps=min(base.log_every_steps, steps), search=None, tune=None,
    )
    data["optim"] = {**data["optim"], "steps": steps, "warmup_steps": min(base.optim.warmup_steps, steps // 10)}
    data["launch"] = {**data["launch"], "kind": "local"}
    return config_from_dict(data, f"{phase} job")


def trained_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in load_trained(run_dir).model.state_dict().items()}


def save_weights(state: dict[str, torch.Tensor], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def without_part(state: dict[str, torch.Tensor], index: int) -> dict[str, torch.Tensor]:
    """The meta model's tensors less stand-in ``index``'s: what incubation job ``index`` starts from."""
    return {name: t for name, t in state.items() if not name.startswith(part_prefix(index))}


def assembled_weights(
    meta: dict[str, torch.Tensor], incubated: list[dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """The target network's tensors: the meta model's stem and head, module k from incubation job k."""
    state = {name: t for name, t in meta.items() if not name.startswith("parts.")}
    for index, weights in enumerate(incubated):
        state.update({name: t for name, t in weights.items() if name.startswith(part_prefix(index))})
    return state


def accuracy_of(trained: TrainedSupernet) -> dict[str, float]:
    """The network's accuracy on the validation and test splits, batch norm re-estimated on training batches."""
    return evaluate_arch(trained, trained.space.largest(), SPLITS).accuracy


def unsaved(job: JobConfig, model: torch.nn.Module) -> TrainedSupernet:
    """A network no run has saved (the assembled modules before fine-tuning), ready for :func:`accuracy_of`."""
    return TrainedSupernet(job, load_data(job.data), job_space(job), model.eval(), 0)


def check_base_job(base: JobConfig, settings: AssemblySettings) -> None:
    """Everything checkable before the first job starts: settings, space, data, the split into modules."""
    settings.check()
    if is_uri(base.run_dir):
        raise NasfleetError("nasfleet assemble writes weight files between jobs: --run-dir must be a local folder")
    space = require_mbconv(job_space(base), "assembling")
    split_sizes(sum(stage.depth for stage in space.largest().stages), settings.modules)
    validate_job(phase_job(base, "target", 1, Path(base.run_dir) / "check", settings.modules))
    if settings.actors:
        from nasfleet.orchestrator.launch.ray_cluster import check_resources, connect_ray

        connect_ray(base.launch.ray_address)
        check_resources(settings.actors, False, threads=base.launch.threads)


class IncubationWorker:
    """The body of one Ray actor: runs incubation jobs through the trainer, one at a time."""

    def ready(self) -> int:
        return os.getpid()

    def incubate(self, job_data: dict[str, Any], module: int) -> Interval:
        started = time.time()
        train_job(config_from_dict(job_data, f"incubation job {module}"))
        return Interval(module, started, time.time(), os.getpid())


def run_incubations(jobs: list[JobConfig], actors: int) -> list[Interval]:
    """Train every incubation job; on ``actors`` Ray actors at once (module k on actor k mod actors), or here."""
    if actors == 0:
        worker = IncubationWorker()
        return [worker.incubate(job.model_dump(mode="json"), k) for k, job in enumerate(jobs)]
    import ray

    remote = ray.remote(IncubationWorker).options(num_cpus=jobs[0].launch.threads)
    workers = [remote.remote() for _ in range(min(actors, len(jobs)))]
    ray.get([w.ready.remote() for w in workers])  # started and imported before any clock runs
    try:
        pending = [
            workers[k % len(workers)].incubate.remote(job.model_dump(mode="json"), k) for k, job in enumerate(jobs)
        ]
        return list(ray.get(pending))
    finally:
        for w in workers:
            ray.kill(w)


def train_macs(job: JobConfig, phase: Phase, modules: int, module: int, steps: int) -> float:
    space = require_mbconv(job_space(job), "assembling")
    example = torch.zeros(1, space.config.in_channels, space.config.image_size, space.config.image_size)
    per_example = forward_macs(build_network(space, modules, phase, module), example)
    return float(FORWARD_BACKWARD * per_example * job.data.batch_size * steps)


def assemble(base: JobConfig, settings: AssemblySettings) -> AssemblyRecord:
    """Run Deep Model Assembling for ``base``'s space and data in ``base.run_dir``; returns (and writes) the record."""
    check_base_job(base, settings)
    root = Path(base.run_dir).expanduser().absolute()
    if (root / RESULT_FILE).exists():
        raise NasfleetError(f"{root} already holds an assembly ({RESULT_FILE}): choose another --run-dir")
    k_modules = settings.modules
    record = AssemblyRecord(asdict(settings))
    started = time.perf_counter()

    metas = [0] if settings.shared_meta else list(range(k_modules))
    meta_weights = []
    for m in metas:
        meta = phase_job(base, "meta", settings.meta_steps, root / f"meta-{m}", k_modules, seed=base.seed + m)
        train_job(meta)
        meta_weights.append(trained_weights(Path(meta.run_dir)))
        record.train_macs["meta"] = record.train_macs.get("meta", 0.0) + train_macs(
            meta, "meta", k_modules, 0, settings.meta_steps
        )
    record.wall_s["meta"] = time.perf_counter() - started
    record.accuracy["meta"] = accuracy_of(load_trained(root / "meta-0"))

    jobs = []
    for k in range(k_modules):
        own = meta_weights[0 if settings.shared_meta else k]
        init = save_weights(without_part(own, k), root / "weights" / f"incubate-{k}.pt")
        jobs.append(phase_job(base, "incubate", settings.incubation_steps, root / f"incubate-{k}", k_modules, k, init))
        record.train_macs[f"incubate-{k}"] = train_macs(base, "incubate", k_modules, k, settings.incubation_steps)
    incubation_started = time.perf_counter()
    record.intervals = run_incubations(jobs, settings.actors)
    record.wall_s["incubation"] = time.perf_counter() - incubation_started

    incubated = [trained_weights(Path(job.run_dir)) for job in jobs]
    assembled = save_weights(assembled_weights(meta_weights[0], incubated), root / "weights" / "assembled.pt")
    target = phase_job(base, "target", settings.finetune_steps, root / "finetune", k_modules, init_weights=assembled)
    model = build_network(require_mbconv(job_space(base), "assembling"), k_modules, "target")
    model.load_state_dict(torch.load(assembled, weights_only=True))
    record.accuracy["assembled"] = accuracy_of(unsaved(target, model))

    finetune_started = time.perf_counter()
    train_job(target)
    record.wall_s["finetune"] = time.perf_counter() - finetune_started
    record.accuracy["finetuned"] = accuracy_of(load_trained(root / "finetune"))
    record.train_macs["finetune"] = train_macs(base, "target", k_modules, 0, settings.finetune_steps)
    record.target_step_macs = train_macs(base, "target", k_modules, 0, 1)
    record.wall_s["total"] = record.wall_s["meta"] + record.wall_s["incubation"] + record.wall_s["finetune"]
    write_record(record, root / RESULT_FILE)
    return record


def train_end_to_end(base: JobConfig, steps: int, run_dir: Path, modules: int) -> dict[str, Any]:
    """The baseline: the same target network trained end to end from its seeded initialisation for ``steps``.

    ``modules`` only groups the blocks (the network and its initial weights are the same for any K).
    """
    job = phase_job(base, "target", steps, run_dir, modules)
    started = time.perf_counter()
    train_job(job)
    wall_s = time.perf_counter() - started
    return {"steps": steps, "wall_s": wall_s, "train_macs": train_macs(base, "target", modules, 0, steps),
            "accuracy": accuracy_of(load_trained(run_dir))}


def write_record(record: AssemblyRecord, path: Path) -> None:
    path.write_text(json.dumps(asdict(record), indent=1, sort_keys=True) + "\n")


def read_record(path: Path) -> AssemblyRecord:
    data = json.loads(path.read_text())
    data["intervals"] = [Interval(**i) for i in data["intervals"]]
    return AssemblyRecord(**data)
