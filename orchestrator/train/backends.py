"""How a step's gradients are reduced and applied: the one seam between the loop and parallelism.

The training loop is the same for one process and for many: it calls ``backward`` for each
task's loss and ``step`` once per optimizer step. :class:`TorchBackend` is plain torch in one
process (world size 1). :class:`DeepSpeedBackend` is DeepSpeed's engine for data parallelism:
with ``managed_gradient_accumulation: false`` every subnet's backward accumulates locally and
``engine.step()`` all-reduces the whole supernet gradient once, then updates, so all ranks keep
identical parameters while each trains its own subnets. Under ZeRO-1 and ZeRO-2 the backend
accumulates the step's gradients itself and hands them to the engine in one backward (see
:class:`DeepSpeedBackend`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.train.checkpoints import OPTIMIZER_FOLDER, BackendName, torch_bytes
from nasfleet.orchestrator.train.deepspeed_ops import prepare_deepspeed_cpu
from nasfleet.safe_load import safe_torch_load, use_safe_loading

ENGINE_TAG = "engine"
OPTIMIZER_FILE = f"{OPTIMIZER_FOLDER}/optimizer.pt"
"""The torch backend's optimizer and LR-schedule state inside a checkpoint folder."""


class TrainingBackend(Protocol):
    name: BackendName
    model: nn.Module
    """What a forward pass calls (the DeepSpeed engine, or the module itself)."""
    module: nn.Module
    """The trained module itself: what checkpoints save and evaluation loads."""
    device: torch.device

    def backward(self, loss: torch.Tensor) -> None: ...

    def step(self) -> float:
        """Reduce and apply this step's gradients, advance the schedule, clear the gradients.

        Returns the seconds spent in the gradient all-reduce (0 in one process).
        """
        ...

    def lr(self) -> float: ...

    def save(self, folder: Path, rank: int) -> None:
        """Write this rank's optimizer state under ``folder/optimizer/`` (every rank calls it)."""
        ...

    def load(self, folder: Path, rank: int) -> None: ...


class TorchBackend:
    """One process: ``loss.backward()``, then the optimizer and LR-schedule steps."""

    name: BackendName = "torch"

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        grad_clip_norm: float | None = None,
    ) -> None:
        self.model = self.module = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.grad_clip_norm = grad_clip_norm
        self.device = torch.device("cpu")

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self) -> float:
        if self.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return 0.0

    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def save(self, folder: Path, rank: int) -> None:
        (folder / OPTIMIZER_FOLDER).mkdir(parents=True, exist_ok=True)
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
        (folder / OPTIMIZER_FILE).write_bytes(torch_bytes(state))  # a full disk is an OSError, see checkpoints.py

    def load(self, folder: Path, rank: int) -> None:
        path = folder / OPTIMIZER_FILE
        if not path.is_file():
            raise NasfleetError(f"checkpoint {folder} has no {OPTIMIZER_FILE}: it was not written by one process")
        state = safe_torch_load(path.read_bytes(), f"checkpoint file {path}")
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        except (KeyError, ValueError, RuntimeError, TypeError) as exc:
            raise NasfleetError(f"checkpoint file {path} does not match this job's optimizer ({type(exc).__name__})") from None


class AllReduceTimer:
    """Times the engine's gradient all-reduce inside ``engine.step()``.

    With ZeRO stage 0/1 and trainer-managed accumulation, ``step()`` calls
    ``allreduce_gradients()`` once; wrapping that bound method measures the
    communication alone. (ZeRO-2 reduces during backward: under stages 1 and 2 the backend
    adds the time of the one backward that hands the engine the step's gradients.) The
    engine also calls it at the end of every backward; only the call at the accumulation
    boundary (inside ``step()``) is timed. The others reduce nothing at stage 0, where a
    descheduled millisecond among them read as communication, and at stage 2 they fall inside
    that one backward, already timed by the backend.
    """

    def __init__(self, engine: Any) -> None:
        self.seconds = 0.0
        inner = engine.allreduce_gradients

        def timed(*args: Any, **kwargs: Any) -> Any:
            if not engine.is_gradient_accumulation_boundary():
                return inner(*args, **kwargs)
            started = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        engine.allreduce_gradients = timed

    def take(self) -> float:
        seconds, self.seconds = self.seconds, 0.0
        return seconds


def deepspeed_config_for(
    settings: dict[str, Any], batch_size: int, grad_clip_norm: float | None = None
) -> dict[str, Any]:
    """The job's DeepSpeed settings plus what the trainer owns: batch sizes, accumulation and clipping."""
    # The "nasfleet" section says what hardware a file is for (checked at validation); DeepSpeed never sees it.
    merged = {k: v for k, v in settings.items() if k not in ("train_batch_size", "nasfleet")}
    # ZeRO partitions any torch optimizer's state, but refuses ones outside its own list
    # unless told; the plain SGD passed here is one of those.
    merged.setdefault("zero_allow_untested_optimizer", True)
    merged.update(
        train_micro_batch_size_per_gpu=batch_size,
        gradient_accumulation_steps=1,
        managed_gradient_accumulation=False,
        steps_per_print=10**9,
    )
    if grad_clip_norm is not None:  # optim.grad_clip_norm; validation refuses a second, different value
        merged["gradient_clipping"] = grad_clip_norm
    return merged


class DeepSpeedBackend:
    """A DeepSpeed engine around the module (the process group exists already).

    ZeRO-1 and ZeRO-2 reduce only the parameters that have a gradient on a rank, as flat
    buffers (ZeRO-2 inside backward, bucket by bucket in the order gradients become ready):
    ranks whose subnets skip different parameters, or reach them in another order, would
    reduce mismatched buffers. So under stages 1 and 2 a subnet pass never back-propagates
    into the engine: its gradients are taken with ``torch.autograd.grad`` (zero for the
    parameters it skipped) and summed here, and ``step()`` runs one engine backward of
    ``sum_i <p_i, G_i>``, whose gradient is the step's ``G``, for every parameter, in the same
    order on every rank whatever subnets it ran. Each rank then draws its own subnets, and
    every parameter gets a gradient each step (zero for one no subnet used), as DeepSpeed's
    stage-0 all-reduce gives it. ZeRO-3 partitions the parameters themselves and is not
    handled this way: there ranks share rank 0's samples (``loop.sampling_rank``).
    """

    name: BackendName = "deepspeed"

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        settings: dict[str, Any],
        batch_size: int,
        gradient_scale: float = 1.0,
        grad_clip_norm: float | None = None,
    ) -> None:
        """``gradient_scale`` multiplies every loss before backward (``loop.make_backend`` says why)."""
        import deepspeed

        prepare_deepspeed_cpu()
        config = deepspeed_config_for(settings, batch_size, grad_clip_norm)
        self.engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config)
        self.gradient_scale = gradient_scale
        use_safe_loading(self.engine)
        self.model = self.engine
        self.module = self.engine.module
        self.device = self.engine.device
        self.scheduler = scheduler
        self._allreduce = AllReduceTimer(self.engine)
        self._parameters = [p for p in self.module.parameters() if p.requires_grad]
        self._step_gradients: list[torch.Tensor] | None = None
        if self.engine.zero_optimization_stage() in (1, 2):
            self._step_gradients = [torch.zeros_like(p) for p in self._parameters]
            # The engine's forward hooks its outputs to start a ZeRO backward; the subnet passes
            # must not start one, so they call the module itself.
            self.model = self.module

    def backward(self, loss: torch.Tensor) -> None:
        if self.gradient_scale != 1.0:
            loss = loss * self.gradient_scale
        if self._step_gradients is None:
            self.engine.backward(loss, scale_wrt_gas=False)
            return
        # fp16 loss scaling as the engine applies it, so small gradients do not underflow here.
        scaled = loss * self.engine.optimizer.loss_scale
        grads = torch.autograd.grad(scaled, self._parameters, allow_unused=True)
        for parameter, total, grad in zip(self._parameters, self._step_gradients, grads):
            if grad is not None:
                total.add_(grad)
                parameter.grad = total  # readable by strategy hooks, as after a plain backward

    def step(self) -> float:
        reduce_s = 0.0
        if self._step_gradients is not None:
            started = time.perf_counter()
            for parameter in self._parameters:
                parameter.grad = None  # the engine's backward must start from no gradient
            surrogate = sum((p * g).sum() for p, g in zip(self._parameters, self._step_gradients))
            self.engine.optimizer.clear_backward_seen_flag()  # what the engine's forward does before a backward
            # The engine scales the loss again; dividing first leaves the gradients as accumulated.
            self.engine.backward(surrogate / self.engine.optimizer.loss_scale, scale_wrt_gas=False)
            reduce_s = time.perf_counter() - started
            for total in self._step_gradients:
                total.zero_()
        self.engine.step()  # the gradient all-reduce (stages 0/1), then the optimizer and LR-schedule step
        return self._allreduce.take() + reduce_s

    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def save(self, folder: Path, rank: int) -> None:
        self.engine.save_checkpoint(str(folder / OPTIMIZER_FOLDER), tag=ENGINE_TAG)

    def load(self, folder: Path, rank: int) -> None:
        if not (folder / OPTIMIZER_FOLDER / ENGINE_TAG).is_dir():
            raise NasfleetError(f"checkpoint {folder} has no DeepSpeed engine state: it was written by one process")
        self.engine.load_checkpoint(str(folder / OPTIMIZER_FOLDER), tag=ENGINE_TAG)
