"""Topologies from YAML files and inline specs, validated at the edge.

One vocabulary serves both forms, so ``leafspine:leaves=16,spines=16,hosts=16,gbps=400``
and a YAML file with the same keys describe the same fabric::

    kind: leafspine          # or fattree
    leaves: 16               # leafspine: number of leaves; fattree: leaves per pod
    spines: 16               # leafspine: number of spines; fattree: spines per pod
    hosts: 16                # hosts per leaf
    gbps: 400                # host links (and uplinks unless uplink_gbps is given)
    uplink_gbps: 400         # optional
    oversubscription: 1.0    # optional, leafspine only, instead of uplink_gbps
    latency_ns: 500          # per link, default 0
    failures:                # optional
      - link: leaf3-spine5           # removed
      - link: leaf0-spine1
        gbps: 100                    # degraded

A fat-tree is either ``k: 8`` (classic k-ary) or ``pods, leaves, spines, cores, hosts``.

A leaf-spine may add an intra-host tier, ``gpus_per_host: 8, nvlink_gbps: 3600,
nvlink_latency_ns: 100`` (every GPU has a link of that rate to and from its host's
NVSwitch). A rail-optimised leaf-spine is ``kind: rail`` with ``servers``, ``rails``
(GPUs and NICs per server; GPU i of every server on rail leaf i), ``servers_per_leaf``
(default all), ``spines``, ``gbps``, ``nvlink_gbps`` and the optional keys above.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat, PositiveInt, ValidationError

from nasfleet.errors import NasfleetError
from nasfleet.comm.topology import FatTree, IntraHostTier, LinkFailure, Topology, fat_tree_k, leaf_spine, rail_leaf_spine


class FailureConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # gbps=inf would simulate NaN rates
    link: str
    gbps: NonNegativeFloat = 0.0

    def to_failure(self) -> LinkFailure:
        ends = [p.strip() for p in self.link.split("-")]
        if len(ends) != 2 or not all(ends):
            raise NasfleetError(f"bad failure link {self.link!r}: expected e.g. leaf3-spine5")
        return LinkFailure(ends[0], ends[1], self.gbps)


class LeafSpineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    kind: Literal["leafspine"]
    name: str | None = None
    leaves: PositiveInt
    spines: PositiveInt
    hosts: PositiveInt
    gbps: PositiveFloat
    uplink_gbps: PositiveFloat | None = None
    oversubscription: PositiveFloat | None = None
    latency_ns: NonNegativeFloat = 0.0
    failures: list[FailureConfig] = []
    gpus_per_host: Optional[PositiveInt] = None
    nvlink_gbps: Optional[PositiveFloat] = None
    nvlink_latency_ns: NonNegativeFloat = 0.0

    def build(self) -> Topology:
        if (self.gpus_per_host is None) != (self.nvlink_gbps is None):
            raise NasfleetError("bad leafspine: an intra-host tier needs both gpus_per_host and nvlink_gbps")
        tier = None if self.nvlink_gbps is None else IntraHostTier(self.gpus_per_host, self.nvlink_gbps, self.nvlink_latency_ns)
        return leaf_spine(
            leaves=self.leaves,
            spines=self.spines,
            hosts=self.hosts,
            gbps=self.gbps,
            uplink_gbps=self.uplink_gbps,
            oversubscription=self.oversubscription,
            latency_ns=self.latency_ns,
            failures=tuple(f.to_failure() for f in self.failures),
            name=self.name,
            intra_host=tier,
        )


class RailConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    kind: Literal["rail"]
    name: str | None = None
    servers: PositiveInt
    rails: PositiveInt
    servers_per_leaf: PositiveInt | None = None
    spines: PositiveInt
    gbps: PositiveFloat
    uplink_gbps: PositiveFloat | None = None
    latency_ns: NonNegativeFloat = 0.0
    nvlink_gbps: PositiveFloat
    nvlink_latency_ns: NonNegativeFloat = 0.0
    failures: list[FailureConfig] = []

    def build(self) -> Topology:
        return rail_leaf_spine(
            servers=self.servers,
            rails=self.rails,
            spines=self.spines,
            gbps=self.gbps,
            nvlink_gbps=self.nvlink_gbps,
            servers_per_leaf=self.servers_per_leaf,
            uplink_gbps=self.uplink_gbps,
            latency_ns=self.latency_ns,
            nvlink_latency_ns=self.nvlink_latency_ns,
            failures=tuple(f.to_failure() for f in self.failures),
            name=self.name,
        )


class FatTreeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    kind: Literal["fattree"]
    name: str | None = None
    k: PositiveInt | None = None
    pods: PositiveInt | None = None
    leaves: PositiveInt | None = None
    spines: PositiveInt | None = None
    cores: PositiveInt | None = None
    hosts: PositiveInt | None = None
    gbps: PositiveFloat
    uplink_gbps: PositiveFloat | None = None
    latency_ns: NonNegativeFloat = 0.0
    failures: list[FailureConfig] = []

    def build(self) -> Topology:
        failures = tuple(f.to_failure() for f in self.failures)
        explicit = [self.pods, self.leaves, self.spines, self.cores, self.hosts]
        if self.k is not None:
            if any(v is not None for v in explicit) or self.uplink_gbps is not None:
                raise NasfleetError("bad fattree: give k, or pods/leaves/spines/cores/hosts, not both")
            return fat_tree_k(self.k, self.gbps, self.latency_ns, failures, self.name)
        if any(v is None for v in explicit):
            raise NasfleetError("bad fattree: give k, or all of pods, leaves, spines, cores, hosts")
        return FatTree(
            pods=self.pods,
            leaves_per_pod=self.leaves,
            spines_per_pod=self.spines,
            cores_per_spine=self.cores,
            hosts_per_leaf=self.hosts,
            gbps=self.gbps,
            uplink_gbps=self.uplink_gbps,
            latency_ns=self.latency_ns,
            failures=failures,
            name=self.name or f"fattree-{self.pods}x{self.leaves}x{self.spines}x{self.cores}",
        )


class _TopologyFile(BaseModel):
    topology: Annotated[Union[LeafSpineConfig, FatTreeConfig, RailConfig], Field(discriminator="kind")]


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    # loc is ("topology", <kind tag>, field, ...): keep the field part.
    where = ".".join(str(p) for p in first["loc"][2:]) or "topology"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def topology_from_dict(data: object, source: str = "topology") -> Topology:
    """Validate a mapping with the keys above and build the topology."""
    if not isinstance(data, dict):
        raise NasfleetError(f"bad topology in {source}: expected a mapping with a 'kind' key")
    if data.get("kind") not in ("leafspine", "fattree", "rail"):
        raise NasfleetError(
            f"bad topology in {source}: kind must be 'leafspine', 'fattree' or 'rail', got {data.get('kind')!r}"
        )
    try:
        config = _TopologyFile(topology=data).topology
    except ValidationError as error:
        raise NasfleetError(f"bad topology in {source}: {_one_line(error)}") from None
    return config.build()


def load_topology_file(path: str | Path) -> Topology:
    """Topology from a YAML file (see the module docstring for its keys)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise NasfleetError(f"cannot read topology file {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise NasfleetError(f"topology file {path} is not UTF-8 text (byte {error.start})") from None
    except yaml.YAMLError as error:
        raise NasfleetError(f"bad topology file {path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if isinstance(data, dict) and "name" not in data:
        data = {**data, "name": path.stem}
    return topology_from_dict(data, source=str(path))


def parse_topology_spec(spec: str) -> Topology:
    """Topology from an inline spec such as ``leafspine:leaves=16,spines=16,hosts=16,gbps=400``."""
    kind, sep, rest = spec.partition(":")
    if not sep:
        raise NasfleetError(f"bad topology spec {spec!r}: expected KIND:key=value,... e.g. fattree:k=8,gbps=400")
    data: dict[str, object] = {"kind": kind.strip()}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise NasfleetError(f"bad topology spec {spec!r}: {item!r} is not key=value")
        data[key.strip()] = value.strip()
    return topology_from_dict(data, source=f"spec {spec!r}")


def resolve_topology(value: str) -> Topology:
    """A topology from a YAML path, an inline spec, or a file name in ``cluster_configs/topologies/``."""
    path = Path(value)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise NasfleetError(f"topology file {value} does not exist")
        return load_topology_file(path)
    if ":" in value:
        return parse_topology_spec(value)
    named = Path("cluster_configs/topologies") / f"{value}.yaml"
    if named.exists():
        return load_topology_file(named)
    raise NasfleetError(
        f"unknown topology {value!r}: give a YAML file, a spec like leafspine:leaves=16,spines=16,hosts=16,gbps=400, "
        "or a name in cluster_configs/topologies/"
    )
