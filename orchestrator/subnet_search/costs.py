"""The costs a search can bound or minimise, computed without running the subnet.

MFLOPs and params are exact counts; ``latency_ms`` comes from a per-layer latency table
measured once on the target machine (`nasfleet profile`); ``comm_ms`` is the comm layer's
prediction of one data-parallel step's gradient all-reduce for the subnet's parameters on
a chosen fabric — what the subnet would cost to *train* at scale, not to run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.comm_prediction import predict_step_allreduce
from nasfleet.orchestrator.config import CommConfig
from nasfleet.orchestrator.storage import is_file, is_uri, read_text
from nasfleet.supernet import Arch, SearchSpace


@dataclass(frozen=True)
class CostSources:
    """Where the measured and simulated costs come from (only needed when a search uses them)."""

    latency_table: str | None = None
    """A local path or a storage URI (a run's ``latency.json`` on S3)."""
    comm_topology: str | None = None
    comm_workers: int = 8


def cost_function(space: SearchSpace, needed: Iterable[str], sources: CostSources) -> Callable[[Arch], dict[str, float]]:
    """``arch -> {cost: value}`` with MFLOPs, params and every other cost in ``needed``."""
    needed = set(needed)
    latency = _latency_predictor(space, sources.latency_table) if "latency_ms" in needed else None
    comm = _comm_predictor(sources.comm_topology, sources.comm_workers) if "comm_ms" in needed else None

    def costs(arch: Arch) -> dict[str, float]:
        params = space.params(arch)
        values = {"mflops": space.flops(arch) / 1e6, "params": float(params)}
        if latency is not None:
            values["latency_ms"] = latency(arch)
        if comm is not None:
            values["comm_ms"] = comm(params)
        return values

    return costs


def _latency_predictor(space: SearchSpace, table_path: str | None) -> Callable[[Arch], float]:
    from nasfleet.supernet.latency import LatencyTable

    if table_path is None:
        raise NasfleetError("latency_ms needs a latency table: build one with `nasfleet profile --run RUN`")
    if not is_file(table_path):
        raise NasfleetError(f"latency table {table_path} does not exist: build it with `nasfleet profile --run RUN`")
    if is_uri(table_path):
        table = LatencyTable.from_json(read_text(table_path), table_path)
    else:
        table = LatencyTable.load(Path(table_path))
    table.check_space(space)
    return table.predict_ms


def _comm_predictor(topology: str | None, workers: int) -> Callable[[int], float]:
    if topology is None:
        raise NasfleetError("comm_ms needs a fabric: pass --comm-topology (a spec or a topology YAML)")
    if workers < 2:
        raise NasfleetError(f"comm_ms needs at least 2 data-parallel workers, got {workers}")
    return AllReduceMilliseconds(CommConfig(topology=topology), workers)


@dataclass
class AllReduceMilliseconds:
    """Predicted all-reduce per step for a parameter count, remembered per count.

    A plain picklable object (not a closure): Tune pickles the searcher and callbacks that hold it.
    """

    source: CommConfig
    workers: int
    _known: dict[int, float] = field(default_factory=dict)

    def __call__(self, num_params: int) -> float:
        if num_params not in self._known:
            prediction = predict_step_allreduce(num_params, self.workers, {}, self.source)
            assert prediction is not None
            self._known[num_params] = prediction.allreduce_s * 1e3
        return self._known[num_params]
