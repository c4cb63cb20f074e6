"""Workload files: several jobs and background traffic on one fabric, validated at the edge.

::

    topology: leafspine:leaves=4,spines=4,hosts=4,gbps=400   # a spec, file or name (as --topology), or a mapping
    routing: split                 # default routing of every job and background flow
    shared_hosts: false            # true lets two jobs use one host (its NIC is then shared)
    jobs:
      - name: a
        hosts: [0, 1, 2, 3]        # explicit hosts, or a rule: {first: 0, count: 8, stride: 2}
        gpus_per_host: 1           # ranks per host, placed contiguously on the hosts listed
        collective: allreduce
        algorithm: ring
        size: 64MiB
        start_s: 0.0
      - name: train                # one training iteration with bucketed gradient all-reduce
        hosts: {first: 8, count: 8}
        training:
          params: 350e6
          dtype_bytes: 2
          reduce_bucket_size: 5e8  # elements, as in DeepSpeed (or bucket_size: 25MiB in bytes)
          forward_s: 0.02
          backward_s: 0.04
          optimizer_s: 0.0
          collective: allreduce    # per bucket
          algorithm: ring
    background:
      - {src: 0, dst: 15, size: 1GiB, start_s: 0.0}      # fixed size: competes max-min fairly
      - {src: 3, dst: 12, gbps: 100, duration_s: 0.01}   # fixed rate: reserved on its path(s)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Union

import numpy as np
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    model_validator,
)

from nasfleet.comm.collectives import build_collective
from nasfleet.comm.defaults import DEFAULT_PIPELINE_CHUNK_BYTES
from nasfleet.comm.simulate import check_gpus_per_host
from nasfleet.comm.topology import Topology
from nasfleet.comm.topology_config import resolve_topology, topology_from_dict
from nasfleet.comm.units import parse_size_bytes
from nasfleet.comm.workload import FixedRateFlow, Job, collective_job, point_to_point_job, training_job
from nasfleet.errors import NasfleetError

MAX_JOBS = 10_000
"""The most jobs plus background flows one workload file may list."""

Size = Union[str, NonNegativeFloat]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class HostRange(_Strict):
    """Hosts ``first, first + stride, ...`` (``count`` of them): stride 2 interleaves two jobs."""

    first: NonNegativeInt = 0
    count: PositiveInt
    stride: PositiveInt = 1


class TrainingConfig(_Strict):
    params: PositiveFloat
    dtype_bytes: PositiveInt = 2
    reduce_bucket_size: Optional[PositiveFloat] = None
    bucket_size: Optional[Size] = None
    forward_s: NonNegativeFloat
    backward_s: NonNegativeFloat
    optimizer_s: NonNegativeFloat = 0.0
    collective: str = "allreduce"
    algorithm: Optional[str] = None

    @model_validator(mode="after")
    def _one_bucket_size(self) -> "TrainingConfig":
        if (self.reduce_bucket_size is None) == (self.bucket_size is None):
            raise ValueError("give reduce_bucket_size (elements) or bucket_size (bytes), one of them")
        return self

    def bucket_bytes(self) -> int:
        if self.reduce_bucket_size is not None:
            return int(self.reduce_bucket_size) * self.dtype_bytes
        return parse_size_bytes(self.bucket_size)


class JobConfig(_Strict):
    name: str
    hosts: Union[list[NonNegativeInt], HostRange]
    gpus_per_host: PositiveInt = 1
    ranks: Optional[PositiveInt] = None
    collective: Optional[str] = None
    algorithm: Optional[str] = None
    size: Optional[Size] = None
    training: Optional[TrainingConfig] = None
    start_s: NonNegativeFloat = 0.0
    routing: Optional[str] = None
    seed: NonNegativeInt = 0
    pipeline_chunk: Size = DEFAULT_PIPELINE_CHUNK_BYTES

    @model_validator(mode="after")
    def _collective_or_training(self) -> "JobConfig":
        if (self.training is None) == (self.collective is None):
            raise ValueError("give a collective (with size) or a training section, one of them")
        if self.collective is not None and self.size is None:
            raise ValueError("a collective needs a size")
        return self


class BackgroundConfig(_Strict):
    name: Optional[str] = None
    src: NonNegativeInt
    dst: NonNegativeInt
    size: Optional[Size] = None
    gbps: Optional[PositiveFloat] = None
    start_s: NonNegativeFloat = 0.0
    duration_s: Optional[PositiveFloat] = None
    routing: Optional[str] = None
    seed: NonNegativeInt = 0

    @model_validator(mode="after")
    def _size_or_rate(self) -> "BackgroundConfig":
        if (self.size is None) == (self.gbps is None):
            raise ValueError("give a size (a fixed-size flow) or gbps (a fixed-rate flow), one of them")
        if self.duration_s is not None and self.gbps is None:
            raise ValueError("duration_s is for a fixed-rate flow (gbps)")
        return self


class WorkloadConfig(_Strict):
    topology: Union[str, dict]
    routing: str = "split"
    shared_hosts: bool = False
    jobs: list[JobConfig]
    background: list[BackgroundConfig] = []


def _hosts(job: JobConfig, topology: Topology) -> np.ndarray:
    if isinstance(job.hosts, HostRange):
        rule = job.hosts
        last = rule.first + rule.stride * (rule.count - 1)
        if last >= topology.num_hosts:  # checked before building a list of `count` hosts
            raise NasfleetError(
                f"job {job.name!r}: hosts {rule.first}, {rule.first + rule.stride}, ... up to {last:,} do not exist "
                f"(topology {topology.name} has hosts 0..{topology.num_hosts - 1})"
            )
        return rule.first + rule.stride * np.arange(rule.count, dtype=np.int64)
    hosts = np.asarray(job.hosts, dtype=np.int64)
    if len(hosts) == 0:
        raise NasfleetError(f"job {job.name!r}: hosts is empty")
    if hosts.max() >= topology.num_hosts:
        raise NasfleetError(
            f"job {job.name!r}: host {int(hosts.max())} does not exist (topology {topology.name} has hosts "
            f"0..{topology.num_hosts - 1})"
        )
    if len(np.unique(hosts)) != len(hosts):
        raise NasfleetError(f"job {job.name!r}: a host is listed twice")
    return hosts


def _rank_host(job: JobConfig, hosts: np.ndarray) -> np.ndarray:
    slots = len(hosts) * job.gpus_per_host
    ranks = job.ranks if job.ranks is not None else slots
    if ranks > slots:
        raise NasfleetError(
            f"job {job.name!r}: {ranks} ranks do not fit on {len(hosts)} hosts with {job.gpus_per_host} GPU(s) each"
        )
    return hosts[np.arange(ranks) // job.gpus_per_host]


def _build_job(job: JobConfig, topology: Topology, default_routing: str) -> Job:
    check_gpus_per_host(topology, job.gpus_per_host)
    rank_host = _rank_host(job, _hosts(job, topology))
    routing = job.routing or default_routing
    chunk = parse_size_bytes(job.pipeline_chunk)
    per_host = job.gpus_per_host * topology.endpoints_per_server  # for the hierarchical all-reduce
    if job.training is not None:
        t = job.training
        return training_job(
            job.name, rank_host, int(t.params) * t.dtype_bytes, t.bucket_bytes(), t.forward_s, t.backward_s,
            t.optimizer_s, t.collective, t.algorithm, job.start_s, routing, job.seed, chunk, per_host,
        )
    collective = build_collective(
        job.collective, len(rank_host), parse_size_bytes(job.size), job.algorithm, chunk, ranks_per_host=per_host
    )
    return collective_job(job.name, rank_host, collective, job.start_s, routing, job.seed)


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"] if not str(p).startswith(("list[", "HostRange", "function-"))) or "file"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def workload_from_dict(data: object, source: str = "workload") -> tuple[Topology, list[Job], list[FixedRateFlow]]:
    """Validate a workload mapping (keys in the module docstring) and build its topology, jobs and fixed-rate flows."""
    if not isinstance(data, dict):
        raise NasfleetError(f"bad workload in {source}: expected a mapping with topology and jobs")
    try:
        config = WorkloadConfig.model_validate(data)
    except ValidationError as error:
        raise NasfleetError(f"bad workload in {source}: {_one_line(error)}") from None
    if not config.jobs:
        raise NasfleetError(f"bad workload in {source}: jobs is empty")
    if len(config.jobs) + len(config.background) > MAX_JOBS:
        raise NasfleetError(f"bad workload in {source}: more than {MAX_JOBS:,} jobs and background flows")
    topology = (
        topology_from_dict(config.topology, f"{source}: topology") if isinstance(config.topology, dict)
        else resolve_topology(config.topology)
    )
    jobs = [_build_job(job, topology, config.routing) for job in config.jobs]
    if not config.shared_hosts:
        owner: dict[int, str] = {}
        for job in jobs:
            for host in np.unique(job.rank_host).tolist():
                if host in owner:
                    raise NasfleetError(
                        f"bad workload in {source}: jobs {owner[host]!r} and {job.name!r} both use host {host} "
                        "(set shared_hosts: true to let them share it)"
                    )
                owner[host] = job.name
    rates: list[FixedRateFlow] = []
    for i, flow in enumerate(config.background):
        name = flow.name or f"background{i}"
        for host in (flow.src, flow.dst):
            if host >= topology.num_hosts:
                raise NasfleetError(f"background flow {name!r}: host {host} does not exist (hosts 0..{topology.num_hosts - 1})")
        routing = flow.routing or config.routing
        if flow.size is not None:
            jobs.append(point_to_point_job(name, flow.src, flow.dst, parse_size_bytes(flow.size), flow.start_s, routing, flow.seed))
        else:
            if flow.src == flow.dst:
                raise NasfleetError(f"background flow {name!r}: source and destination are the same host {flow.src}")
            end = math.inf if flow.duration_s is None else flow.start_s + flow.duration_s
            rates.append(FixedRateFlow(flow.src, flow.dst, flow.gbps, flow.start_s, end, routing, flow.seed, name))
    return topology, jobs, rates


def load_workload_file(path: str | Path) -> tuple[Topology, list[Job], list[FixedRateFlow]]:
    """Topology, jobs and fixed-rate flows of a workload YAML file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NasfleetError(f"workload file {path} does not exist") from None
    except OSError as error:
        raise NasfleetError(f"cannot read workload file {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise NasfleetError(f"workload file {path} is not UTF-8 text (byte {error.start})") from None
    except yaml.YAMLError as error:
        raise NasfleetError(f"bad workload file {path}: not valid YAML ({str(error).splitlines()[0]})") from None
    return workload_from_dict(data, source=str(path))
