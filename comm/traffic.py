"""Per-iteration communication of data-parallel training, and its time on a fabric.

This is what the orchestrator calls to predict how long a subnet's gradient
synchronisation takes: the model size, the data-parallel degree, the DeepSpeed ZeRO
stage and the bucket size determine which collectives run each iteration; each is
simulated on the topology and the times are added up (no overlap with compute is
assumed, so the figure is the *exposed* communication time if nothing overlaps).

Per iteration and data-parallel rank, with Ψ = parameters × dtype bytes:

* stage 0 (DDP): all-reduce of the gradients, in buckets (2Ψ on the wire per rank);
* stages 1 and 2: reduce-scatter of the gradients and all-gather of the updated
  parameters, in buckets (the same 2Ψ, as in the ZeRO paper);
* stage 3: parameters all-gathered for the forward and again for the backward pass,
  gradients reduce-scattered (3Ψ).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nasfleet.errors import NasfleetError
from nasfleet.comm.collectives import build_collective
from nasfleet.comm.simulate import simulate
from nasfleet.comm.topology import Topology

DEFAULT_BUCKET_BYTES = 25 * 2**20  # torch DDP's default bucket_cap_mb


@dataclass(frozen=True)
class CollectiveCall:
    """``count`` identical collectives of ``size_bytes`` each, for ``purpose``."""

    kind: str
    size_bytes: int
    count: int
    purpose: str


@dataclass(frozen=True)
class TrainingTraffic:
    num_params: int
    dp_degree: int
    zero_stage: int
    bucket_bytes: int
    dtype_bytes: int
    calls: tuple[CollectiveCall, ...]

    @property
    def payload_bytes(self) -> int:
        """Ψ: bytes of one full copy of the gradients (or parameters)."""
        return self.num_params * self.dtype_bytes


@dataclass(frozen=True)
class TrainingCommTime:
    traffic: TrainingTraffic
    per_call_s: tuple[float, ...]  # time of one collective of each call
    total_s: float

    def breakdown(self) -> list[dict]:
        return [
            {"kind": c.kind, "purpose": c.purpose, "size_bytes": c.size_bytes, "count": c.count, "time_s": t * c.count}
            for c, t in zip(self.traffic.calls, self.per_call_s)
        ]


def count_parameters(model: Any) -> int:
    """Parameters of ``model``: an int, an object with ``num_params``, or anything with
    ``parameters()`` yielding tensors (a torch module, a nasfleet subnet)."""
    if isinstance(model, bool):
        raise NasfleetError("bad model: expected a parameter count or a model")
    if isinstance(model, int):
        count = model
    elif hasattr(model, "num_params"):
        attr = model.num_params
        count = int(attr() if callable(attr) else attr)
    elif hasattr(model, "parameters"):
        count = int(sum(p.numel() for p in model.parameters()))
    else:
        raise NasfleetError(f"cannot count parameters of {type(model).__name__}: give an int or a model")
    if count < 0:
        raise NasfleetError(f"bad parameter count {count}: must not be negative")
    return count


def _buckets(total_bytes: int, bucket_bytes: int, kind: str, purpose: str) -> list[CollectiveCall]:
    full, rest = divmod(total_bytes, bucket_bytes)
    calls = [CollectiveCall(kind, bucket_bytes, full, purpose)] if full else []
    return calls + ([CollectiveCall(kind, rest, 1, purpose)] if rest else [])


def training_traffic(
    model: Any,
    dp_degree: int,
    zero_stage: int = 0,
    bucket_bytes: int = DEFAULT_BUCKET_BYTES,
    dtype_bytes: int = 4,
) -> TrainingTraffic:
    """The collectives one training iteration runs on each data-parallel rank."""
    num_params = count_parameters(model)
    if dp_degree < 1:
        raise NasfleetError(f"bad data-parallel degree {dp_degree}: must be at least 1")
    if zero_stage not in (0, 1, 2, 3):
        raise NasfleetError(f"bad ZeRO stage {zero_stage}: must be 0, 1, 2 or 3")
    if bucket_bytes <= 0 or dtype_bytes <= 0:
        raise NasfleetError("bad bucket or dtype size: must be positive")
    total = num_params * dtype_bytes
    if dp_degree == 1 or total == 0:
        calls: list[CollectiveCall] = []
    elif zero_stage == 0:
        calls = _buckets(total, bucket_bytes, "allreduce", "gradients")
    elif zero_stage in (1, 2):
        calls = _buckets(total, bucket_bytes, "reducescatter", "gradients") + _buckets(
            total, bucket_bytes, "allgather", "updated parameters"
        )
    else:
        calls = (
            _buckets(total, bucket_bytes, "allgather", "parameters (forward)")
            + _buckets(total, bucket_bytes, "allgather", "parameters (backward)")
            + _buckets(total, bucket_bytes, "reducescatter", "gradients")
        )
    return TrainingTraffic(num_params, dp_degree, zero_stage, bucket_bytes, dtype_bytes, tuple(calls))


def training_comm_time(
    traffic: TrainingTraffic,
    topology: Topology,
    algorithm: str = "ring",
    routing: str = "split",
    fidelity: str = "flow",
    gpus_per_host: int = 1,
    alpha_s: float = 0.0,
    seed: int = 0,
) -> TrainingCommTime:
    """Simulate each distinct collective of ``traffic`` once and add up the iteration."""
    cache: dict[tuple[str, int], float] = {}
    per_call = []
    for call in traffic.calls:
        key = (call.kind, call.size_bytes)
        if key not in cache:
            coll = build_collective(call.kind, traffic.dp_degree, call.size_bytes, algorithm)
            cache[key] = simulate(
                topology, coll, routing, fidelity, seed=seed, gpus_per_host=gpus_per_host, alpha_s=alpha_s
            ).completion_time_s
        per_call.append(cache[key])
    total = sum(t * c.count for t, c in zip(per_call, traffic.calls))
    return TrainingCommTime(traffic, tuple(per_call), float(total))


def predict_dp_step_comm_time(
    num_params: Any,
    dp_degree: int,
    topology: Topology,
    zero_stage: int = 0,
    bucket_bytes: int = DEFAULT_BUCKET_BYTES,
    dtype_bytes: int = 4,
    algorithm: str = "ring",
    routing: str = "split",
    fidelity: str = "flow",
    gpus_per_host: int = 1,
    alpha_s: float = 0.0,
) -> float:
    """Seconds of data-parallel communication per training step (not overlapped).

    ``num_params`` is a count or a model (see :func:`count_parameters`).
    """
    traffic = training_traffic(num_params, dp_degree, zero_stage, bucket_bytes, dtype_bytes)
    return training_comm_time(traffic, topology, algorithm, routing, fidelity, gpus_per_host, alpha_s).total_s
