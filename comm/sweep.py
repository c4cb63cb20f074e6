"""Grids of simulations (sizes × algorithms × routings) for ``compare`` and ``sweep``.

Each grid point is one :func:`simulate_over_seeds` call; results come back as a
pandas DataFrame with one row per point and are written to Parquet.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

from nasfleet.errors import NasfleetError
from nasfleet.comm.collectives import build_collective
from nasfleet.comm.defaults import DEFAULT_PIPELINE_CHUNK_BYTES
from nasfleet.comm.routing import get_routing
from nasfleet.comm.simulate import SeedSummary, simulate_over_seeds
from nasfleet.comm.topology import Topology
from nasfleet.comm.units import parse_size_bytes


@dataclass(frozen=True)
class Grid:
    """The workloads to run on one topology."""

    collective: str
    algorithms: tuple[str | None, ...]
    routings: tuple[str, ...]
    sizes_bytes: tuple[int, ...]
    ranks: int
    fidelity: str = "flow"
    seeds: int = 4
    gpus_per_host: int = 1
    placement: str = "contiguous"
    pipeline_chunk_bytes: int = DEFAULT_PIPELINE_CHUNK_BYTES
    alpha_s: float = 0.0

    def points(self) -> list[tuple[str | None, int, str]]:
        for name in self.routings:
            get_routing(name)  # fail fast on a typo, before any work
        return list(itertools.product(self.algorithms, self.sizes_bytes, self.routings))


@dataclass
class GridRun:
    frame: pd.DataFrame
    summaries: dict[tuple[str, int, str], SeedSummary] = field(default_factory=dict)


def run_grid(topology: Topology, grid: Grid, on_point: Callable[[str], None] | None = None) -> GridRun:
    """Simulate every grid point; ``on_point`` is called after each (for progress bars)."""
    rows, summaries = [], {}
    for algorithm, size, routing in grid.points():
        coll = build_collective(grid.collective, grid.ranks, size, algorithm, grid.pipeline_chunk_bytes)
        summary = simulate_over_seeds(
            topology,
            coll,
            routing,
            seeds=grid.seeds,
            fidelity=grid.fidelity,
            gpus_per_host=grid.gpus_per_host,
            placement=grid.placement,
            alpha_s=grid.alpha_s,
        )
        record = summary.to_dict()
        record.setdefault("completion_time_worst_s", record["completion_time_s"])
        record.setdefault("max_congestion_worst_s", record["max_congestion_s"])
        record.pop("seeds", None)
        record["seed_count"] = len(summary.results)
        rows.append(record)
        summaries[(coll.algorithm, size, summary.results[0].routing)] = summary
        if on_point is not None:
            on_point(f"{coll.algorithm} {size} {routing}")
    return GridRun(pd.DataFrame(rows), summaries)


def write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return path


class SweepFile(BaseModel):
    """A sweep described in YAML; lists may also be given as single values."""

    model_config = ConfigDict(extra="forbid")
    topology: str
    collective: str = "allreduce"
    algorithms: list[str] = Field(default_factory=lambda: ["ring"])
    routings: list[str] = Field(default_factory=lambda: ["ecmp", "spray", "split"])
    sizes: list[str | int | float]
    ranks: PositiveInt | None = None
    fidelity: str = "flow"
    seeds: PositiveInt = 4
    gpus_per_host: PositiveInt = 1
    placement: str = "contiguous"
    pipeline_chunk: str | int = DEFAULT_PIPELINE_CHUNK_BYTES
    output: str = "comm_sweep"


def load_sweep_file(path: Path) -> SweepFile:
    """Read and validate a sweep file (see ``docs/comm.md`` for an example)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise NasfleetError(f"cannot read sweep file {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise NasfleetError(f"sweep file {path} is not UTF-8 text (byte {error.start})") from None
    except yaml.YAMLError as error:
        raise NasfleetError(f"bad sweep file {path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise NasfleetError(f"bad sweep file {path}: expected a mapping")
    for key in ("algorithms", "routings", "sizes"):
        if key in data and not isinstance(data[key], list):
            data[key] = [data[key]]
    try:
        return SweepFile(**data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "sweep"
        raise NasfleetError(f"bad sweep file {path}: {where}: {first['msg']}") from None


def sweep_grid(sweep: SweepFile, topology: Topology) -> Grid:
    return Grid(
        collective=sweep.collective,
        algorithms=tuple(sweep.algorithms),
        routings=tuple(sweep.routings),
        sizes_bytes=tuple(parse_size_bytes(s) for s in sweep.sizes),
        ranks=sweep.ranks or topology.num_hosts * sweep.gpus_per_host,
        fidelity=sweep.fidelity,
        seeds=sweep.seeds,
        gpus_per_host=sweep.gpus_per_host,
        placement=sweep.placement,
        pipeline_chunk_bytes=parse_size_bytes(sweep.pipeline_chunk),
    )
