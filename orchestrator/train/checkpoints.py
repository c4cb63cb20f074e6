"""The one checkpoint layout, written by every launcher and read by every command.

A run folder (local path or storage URI) holds ``config.yaml``, ``metrics.jsonl`` and up to
:data:`CHECKPOINTS_KEPT` checkpoint folders::

    checkpoint_00000200/
        supernet.pt          the trained module's state_dict (rank 0): what evaluate/export/search load
        ranks/rank_<r>.pt    each rank's progress, strategy state and RNG state
        optimizer/           the backend's optimizer state (plain torch: optimizer.pt; DeepSpeed: engine/)
        metrics.jsonl        the run's log up to this step (resume restores exactly this)
        config.yaml          the job
        meta.json            step, world size, global batch shards, backend, threads — written last

``meta.json`` marks a checkpoint complete: a folder without it (a crash mid-upload) is
ignored. Every ``.pt`` file is read with ``weights_only=True``: tensors and plain containers
only, so a planted pickle payload cannot run.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.storage import basename, is_dir, join, list_dir, read_bytes, read_text
from nasfleet.safe_load import safe_torch_load

CHECKPOINT_PREFIX = "checkpoint_"
CHECKPOINTS_KEPT = 3
FORMAT_VERSION = 2
SUPERNET_FILE = "supernet.pt"
META_FILE = "meta.json"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"
RANKS_FOLDER = "ranks"
OPTIMIZER_FOLDER = "optimizer"

BackendName = Literal["torch", "deepspeed"]


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step:08d}"


def checkpoint_step(checkpoint: str) -> int:
    return int(basename(checkpoint)[len(CHECKPOINT_PREFIX) :])


@dataclass(frozen=True)
class CheckpointMeta:
    step: int
    world_size: int
    backend: BackendName
    threads: int
    format: int = FORMAT_VERSION
    shards: int | None = None
    """``data.batch_size`` slices per step (elastic jobs: ``launch.workers``); None before elastic runs existed."""

    @property
    def global_shards(self) -> int:
        return self.shards if self.shards is not None else self.world_size


@dataclass
class RankState:
    """What one rank carries across restarts besides the model and optimizer."""

    step: int
    subnets_trained: int
    resumed_from_step: int
    strategy: dict[str, Any]
    rng_numpy: dict[str, Any]
    rng_torch: torch.Tensor
    weights_sha256: str


def weights_sha256(model: nn.Module) -> str:
    """A digest of every parameter: equal on all ranks when data parallelism works.

    Buffers are left out on purpose: batch-norm running statistics are per rank (each sees
    its own shard and subnets) and are re-estimated per subnet before any evaluation.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------- writing (into a local staging folder)
# Torch files are serialised in memory, then written: torch.save onto a path reports a full
# disk as a RuntimeError without errno, a plain write as the OSError it is.
def write_rank_state(folder: Path, rank: int, state: RankState) -> None:
    (folder / RANKS_FOLDER).mkdir(parents=True, exist_ok=True)
    (folder / RANKS_FOLDER / f"rank_{rank}.pt").write_bytes(torch_bytes(asdict(state)))


def write_supernet(folder: Path, model: nn.Module) -> None:
    (folder / SUPERNET_FILE).write_bytes(torch_bytes(model.state_dict()))


def write_meta(folder: Path, meta: CheckpointMeta) -> None:
    """Written last by rank 0, after every rank's files: its presence marks the checkpoint complete."""
    (folder / META_FILE).write_text(json.dumps(asdict(meta), indent=1) + "\n")


# --------------------------------------------------------------------------- reading (local or URI)
def latest_checkpoint(run: str) -> str | None:
    """The newest complete ``checkpoint_<step>`` folder of a run (local or URI), if any."""
    complete = completed_checkpoints(run)
    return complete[-1] if complete else None


def completed_checkpoints(run: str) -> list[str]:
    """Every complete checkpoint folder of a run, oldest first."""
    names = sorted(
        info.base_name
        for info in list_dir(run)
        if info.base_name.startswith(CHECKPOINT_PREFIX) and info.type.name == "Directory"
    )
    return [join(run, name) for name in names if is_file_in(join(run, name), META_FILE)]


def read_meta(checkpoint: str) -> CheckpointMeta:
    where = join(checkpoint, META_FILE)
    try:
        data = json.loads(read_text(where))
        return CheckpointMeta(**data)
    except (json.JSONDecodeError, TypeError) as exc:
        raise NasfleetError(f"checkpoint {where} is corrupted ({type(exc).__name__}); resume from an older one") from None


def read_rank_state(checkpoint: str, rank: int) -> RankState:
    where = join(checkpoint, RANKS_FOLDER, f"rank_{rank}.pt")
    data = safe_torch_load(read_bytes(where), f"checkpoint file {where}")
    try:
        return RankState(**data)
    except TypeError:
        raise NasfleetError(f"checkpoint file {where} is not a nasfleet rank state") from None


def read_supernet(checkpoint: str) -> tuple[dict[str, torch.Tensor], str]:
    """The trained module's state_dict and the file it came from."""
    where = join(checkpoint, SUPERNET_FILE)
    state = safe_torch_load(read_bytes(where), f"checkpoint file {where}")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise NasfleetError(f"checkpoint file {where} is not a supernet state_dict")
    return state, where


def read_config_text(checkpoint: str) -> str:
    return read_text(join(checkpoint, CONFIG_FILE))


def read_metrics_lines(checkpoint: str) -> list[str]:
    location = join(checkpoint, METRICS_FILE)
    if not is_file_in(checkpoint, METRICS_FILE):
        return []
    return [line for line in read_text(location).splitlines() if line.strip()]


def is_file_in(folder: str, name: str) -> bool:
    return any(i.base_name == name for i in list_dir(folder))


def load_state_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``model.load_state_dict(state)`` with a mismatch reported as one line naming the file."""
    mismatch = state_dict_mismatch(model.state_dict(), state)
    if mismatch:
        raise NasfleetError(f"checkpoint {source} does not match this job's supernet: {mismatch}")
    try:
        model.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise NasfleetError(f"checkpoint {source} does not match this job's supernet: {first}") from None


def state_dict_mismatch(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> str:
    """What differs between two state_dicts' names and shapes, in a few words ('' when nothing does).

    torch's own message lists every tensor over many lines; one line with counts and the
    first example tells a user they picked another model's file.
    """
    missing = [name for name in expected if name not in found]
    unexpected = [name for name in found if name not in expected]
    reshaped = [name for name in expected if name in found and found[name].shape != expected[name].shape]
    parts = []
    if missing:
        parts.append(f"{len(missing)} tensors missing (first {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (first {unexpected[0]})")
    if reshaped:
        name = reshaped[0]
        parts.append(
            f"{len(reshaped)} of another shape (first {name}: {list(found[name].shape)} in the file, "
            f"{list(expected[name].shape)} in the supernet)"
        )
    return ", ".join(parts)


def torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def has_checkpoint(run: str) -> bool:
    return is_dir(run) and latest_checkpoint(run) is not None
