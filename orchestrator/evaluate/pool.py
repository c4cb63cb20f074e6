"""Evaluate many subnets at once: a pool of Ray actors over one shared copy of the supernet.

Subnets of one supernet share every weight, so the pool places the trained weights (and
the data set) in Ray's object store once, as NumPy arrays. Each actor maps them
zero-copy and read-only from shared memory and builds its supernet *on* those arrays
(``load_state_dict(assign=True)``), so N actors cost one copy of the weights, not N.
Only the batch-norm buffers are private per actor: per-subnet BN recalibration writes them.

Each actor is a :class:`SupernetReplica`, which runs the same
:func:`~nasfleet.orchestrator.evaluate.subnets.evaluate_arch` as the in-process path, so the
pool's accuracies equal it exactly (same threads, same inputs). ``nasfleet search`` puts the
supernet in the store once (:class:`SharedSupernet`) and evaluates on replicas of it too.
"""

from __future__ import annotations

import bisect
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray.util import ActorPool
from torch import nn

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.config import JobConfig
from nasfleet.orchestrator.data import DataSplits, ImageSet
from nasfleet.orchestrator.metrics import TrainingMetrics, ray_metrics
from nasfleet.orchestrator.evaluate.subnets import SubnetResult, correct_count, evaluate_arch
from nasfleet.orchestrator.evaluate.trained import TrainedSupernet, build_model, load_trained
from nasfleet.orchestrator.results.store import ResultsStore, SubnetRecord
from nasfleet.orchestrator.train.allocator import reuse_freed_memory
from nasfleet.orchestrator.train.setup import job_space
from nasfleet.supernet import Arch, recalibrate_batchnorm

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class MemoryBacking:
    """Where a tensor's bytes live in an actor's address space (from ``/proc/self/maps``).

    Two actors whose tensors report the same ``path``, ``inode`` and ``offset`` of a
    ``shared`` mapping read the very same physical memory.
    """

    path: str
    inode: int
    offset: int
    shared: bool


def _to_numpy_state(model: nn.Module) -> dict[str, np.ndarray]:
    return {name: t.detach().cpu().numpy() for name, t in model.state_dict().items()}


def _to_numpy_data(data: DataSplits) -> dict[str, Any]:
    arrays = {name: (s.images.numpy(), s.labels.numpy()) for name, s in zip(SPLITS, (data.train, data.val, data.test))}
    return {"splits": arrays, "num_classes": data.num_classes}


def _view(array: np.ndarray) -> torch.Tensor:
    """A tensor over the object store's read-only buffer, without copying it."""
    with warnings.catch_warnings():
        # torch warns that the array is not writable; it never is written here.
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


def _data_from_shared(shared: dict[str, Any]) -> DataSplits:
    sets = [ImageSet(_view(images), _view(labels)) for images, labels in (shared["splits"][s] for s in SPLITS)]
    return DataSplits(*sets, num_classes=int(shared["num_classes"]))


def _batchnorm_buffer_names(model: nn.Module) -> set[str]:
    names: set[str] = set()
    for prefix, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            names.update(f"{prefix}.{b}" if prefix else b for b, _ in module.named_buffers(recurse=False))
    return names


def supernet_on_shared_weights(build: Callable[[], nn.Module], weights: dict[str, np.ndarray]) -> nn.Module:
    """The module ``build`` makes, with its parameters backed by ``weights`` (no copy), in eval mode.

    The module is created on the meta device (no memory for initial weights), then the
    shared arrays are assigned in; batch-norm buffers get private, writable copies.
    """
    with torch.device("meta"):
        model = build()
    private = _batchnorm_buffer_names(model)
    state = {name: (torch.from_numpy(a.copy()) if name in private else _view(a)) for name, a in weights.items()}
    model.load_state_dict(state, assign=True)
    left_on_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left_on_meta:  # a non-persistent buffer is not in the state dict: this scheme cannot fill it
        raise RuntimeError(f"supernet tensors not in its state dict: {left_on_meta}")
    model.requires_grad_(False)
    return model.eval()


def shareable(trained: TrainedSupernet) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The weights and the data as NumPy arrays: what one ``ray.put`` shares zero-copy with every actor."""
    return _to_numpy_state(trained.model), _to_numpy_data(trained.data)


def trained_from_shared(
    config: JobConfig, step: int, weights: dict[str, np.ndarray], data: dict[str, Any]
) -> TrainedSupernet:
    """A :class:`TrainedSupernet` over arrays mapped from the object store (see :func:`shareable`)."""
    data_splits = _data_from_shared(data)
    space = job_space(config)
    model = supernet_on_shared_weights(lambda: build_model(config, space), weights)
    return TrainedSupernet(config, data_splits, space, model, step)


@dataclass(frozen=True)
class SharedSupernet:
    """A trained supernet placed in Ray's object store once: what every evaluator of a command maps.

    It pickles small (the job config and two object references), so it can be handed to
    Ray actors and Tune trials alike; each of them maps the same weights and data.
    """

    config: JobConfig
    step: int
    refs: tuple[ray.ObjectRef, ray.ObjectRef]

    @classmethod
    def put(cls, trained: TrainedSupernet) -> SharedSupernet:
        weights, data = shareable(trained)
        return cls(trained.config, trained.step, (ray.put(weights), ray.put(data)))


class SupernetReplica:
    """One evaluator's supernet, built over the shared weights: the body of every evaluation actor.

    The pool runs it as a Ray actor; a search's Tune trial holds one in its own (reused)
    actor. Both evaluate through the same methods, so a subnet scores the same either way.
    Batch norm is re-estimated per subnet; :meth:`correct_on` keeps the last subnet's
    statistics so a subnet evaluated chunk by chunk is calibrated once.
    """

    def __init__(self, shared: SharedSupernet, threads: int = 1) -> None:
        torch.set_num_threads(threads)
        reuse_freed_memory()
        self._refs = shared.refs  # held so the object store keeps the buffers pinned for this replica
        weights, data = ray.get(list(shared.refs))
        self.trained = trained_from_shared(shared.config, shared.step, weights, data)
        self._calibration = self.trained.calibration_batches()
        self._calibrated_for: Arch | None = None

    def evaluate(self, arch: Arch, role: str, splits: tuple[str, ...]) -> SubnetResult:
        """Whole splits; leaves the batch-norm statistics as they were."""
        return evaluate_arch(self.trained, arch, splits, role, self._calibration)

    def correct_on(self, arch: Arch, split: str, indices: np.ndarray) -> int:
        """How many of ``split``'s examples at ``indices`` the subnet classifies correctly."""
        if self._calibrated_for != arch:
            recalibrate_batchnorm(self.trained.model, arch, self._calibration)
            self._calibrated_for = arch
        data = self.trained.data.split(split)
        chosen = torch.from_numpy(indices)
        return correct_count(self.trained.model, arch, ImageSet(data.images[chosen], data.labels[chosen]))

    def memory_backings(self) -> dict[str, MemoryBacking]:
        tensors = {f"model/{n}": t for n, t in self.trained.model.state_dict().items()}
        for split in SPLITS:
            tensors[f"data/{split}/images"] = self.trained.data.split(split).images
            tensors[f"data/{split}/labels"] = self.trained.data.split(split).labels
        return _backings(tensors)

    def pid(self) -> int:
        return os.getpid()


def _backings(tensors: dict[str, torch.Tensor]) -> dict[str, MemoryBacking]:
    maps = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            path = parts[5].strip() if len(parts) > 5 else ""
            maps.append((lo, hi, int(parts[2], 16), int(parts[4]), path, "s" in parts[1]))
    maps.sort()
    starts = [m[0] for m in maps]
    out = {}
    for name, tensor in tensors.items():
        address = tensor.data_ptr()
        i = bisect.bisect_right(starts, address) - 1
        lo, hi, file_offset, inode, path, shared = maps[i]
        if not lo <= address < hi:
            raise RuntimeError(f"tensor {name} at {address:#x} is in no mapping")
        out[name] = MemoryBacking(path, inode, file_offset + address - lo, shared)
    return out


class EvaluationPool:
    """Evaluates subnets of one trained supernet on ``num_actors`` Ray actors.

    Needs a running Ray (``ray.init(...)`` or a cluster address) with at least
    ``num_actors * num_cpus_per_actor`` CPUs free; the constructor waits (up to
    ``ready_timeout_s``) until every actor has mapped the weights, so a pool that cannot be
    placed fails here rather than hanging. With ``store``, results are appended to that
    Parquet data set every ``flush_every`` subnets and at the end, so a crash loses at most
    the subnets since the last flush. Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        trained: TrainedSupernet | Path | str,
        num_actors: int = 2,
        splits: Sequence[str] = ("val",),
        num_cpus_per_actor: float = 1.0,
        store: ResultsStore | None = None,
        flush_every: int = 32,
        run_name: str | None = None,
        ready_timeout_s: float = 300.0,
        metrics: TrainingMetrics | None = None,
        shared: SharedSupernet | None = None,
    ) -> None:
        if num_actors < 1:
            raise NasfleetError(f"an evaluation pool needs at least one actor, got {num_actors}")
        if flush_every < 1:
            raise NasfleetError(f"flush_every must be at least 1, got {flush_every}")
        unknown = [s for s in splits if s not in SPLITS]
        if unknown or not splits:
            raise NasfleetError(f"unknown split {unknown[0] if unknown else '(none)'!r} (expected train, val or test)")
        if not ray.is_initialized():
            raise NasfleetError("Ray is not running: call ray.init() or connect to a cluster before creating the pool")
        cpus = ray.cluster_resources().get("CPU", 0.0)
        if num_actors * num_cpus_per_actor > cpus:
            raise NasfleetError(
                f"{num_actors} actors × {num_cpus_per_actor:g} CPUs need more than the cluster's {cpus:g} CPUs"
            )
        if not isinstance(trained, TrainedSupernet):
            trained = load_trained(str(trained))
        self.trained = trained
        self.splits = tuple(splits)
        self.store = store
        self.flush_every = flush_every
        self.run_name = run_name or trained.config.run_name
        # Ray's agent exports the driver's metrics too: without an endpoint of its own the pool reports there.
        self.metrics = (metrics or ray_metrics()).for_run(self.run_name)
        self.checkpoint_id = trained.checkpoint_id
        self.dataset = trained.config.data.dataset
        # One put (or the caller's): every actor maps these same objects from shared memory.
        self._shared: SharedSupernet | None = shared or SharedSupernet.put(trained)
        actor_class = ray.remote(SupernetReplica).options(num_cpus=num_cpus_per_actor)
        threads = max(1, int(num_cpus_per_actor))
        self.actors = [actor_class.remote(self._shared, threads) for _ in range(num_actors)]
        self._wait_until_ready(ready_timeout_s)
        self._pool = ActorPool(self.actors)

    def _wait_until_ready(self, timeout_s: float) -> None:
        """Fail now, not on the first evaluation, when actors cannot be placed (CPUs already taken)."""
        ready, _ = ray.wait([a.pid.remote() for a in self.actors], num_returns=len(self.actors), timeout=timeout_s)
        wanted = len(self.actors)
        if len(ready) < wanted:
            free = ray.available_resources().get("CPU", 0.0)
            self.close()
            raise NasfleetError(
                f"only {len(ready)} of {wanted} evaluation actors started within {timeout_s:g} s "
                f"({free:g} CPUs free: other actors or jobs hold the rest)"
            )
        try:
            ray.get(ready)  # an actor that failed to start raises here
        except Exception:
            self.close()
            raise

    def evaluate(self, archs: Sequence[Arch], roles: Sequence[str] | None = None) -> list[SubnetResult]:
        """Evaluate every architecture (in parallel across the actors); results in input order."""
        return list(self.iter_evaluate(archs, roles))

    def iter_evaluate(self, archs: Sequence[Arch], roles: Sequence[str] | None = None) -> Iterator[SubnetResult]:
        """Like :meth:`evaluate`, yielding each result (in input order) as soon as it and those before it are done."""
        if not self.actors:
            raise NasfleetError("the evaluation pool is closed")
        if roles is not None and len(roles) != len(archs):
            raise NasfleetError(f"{len(roles)} roles given for {len(archs)} architectures")
        for arch in archs:
            self.trained.space.validate(arch)  # here, so a bad arch is one line, not a remote traceback
        items = list(zip(archs, roles if roles is not None else [""] * len(archs)))
        return self._results(items)

    def _results(self, items: list[tuple[Arch, str]]) -> Iterator[SubnetResult]:
        pending: list[SubnetResult] = []
        splits = self.splits
        started, done = time.perf_counter(), 0
        try:
            for result in self._pool.map(lambda actor, item: actor.evaluate.remote(item[0], item[1], splits), items):
                pending.append(result)
                done += 1
                if len(pending) >= self.flush_every:
                    self._flush(pending)
                yield result
        finally:
            self._flush(pending)  # also when an evaluation fails: keep what finished
            if self.metrics is not None and done:
                self.metrics.evaluated(done, time.perf_counter() - started)

    def _flush(self, pending: list[SubnetResult]) -> None:
        if self.store is not None and pending:
            self.store.append([SubnetRecord.from_result(r, self.run_name, self.dataset, self.checkpoint_id) for r in pending])
        pending.clear()

    def memory_backings(self) -> list[dict[str, MemoryBacking]]:
        """Per actor, where each weight, BN buffer and data tensor lives: shows what is shared.

        Reads ``/proc/self/maps`` in the actors, so Linux only.
        """
        return ray.get([a.memory_backings.remote() for a in self.actors])

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        self._shared = None

    def __enter__(self) -> EvaluationPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
