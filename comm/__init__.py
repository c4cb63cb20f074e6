"""Collective-traffic simulator for leaf-spine and fat-tree fabrics.

Build a topology, a collective and pick a routing; :func:`simulate` returns the
collective completion time at analytical or flow-level fidelity::

    from nasfleet.comm import leaf_spine, build_collective, simulate
    topo = leaf_spine(leaves=16, spines=16, hosts=16, gbps=400, latency_ns=500)
    coll = build_collective("allreduce", ranks=256, size_bytes=2**30, algorithm="halving-doubling")
    simulate(topo, coll, routing="split").completion_time_s

and :func:`predict_dp_step_comm_time` turns a model size, a data-parallel degree and a
ZeRO stage into seconds of gradient communication per training step.

The package imports nothing from the ML side of nasfleet and runs on a laptop.
"""

from nasfleet.comm.collectives import (
    Collective,
    Step,
    algorithms_for,
    build_collective,
    collective_kinds,
    from_steps,
    place_ranks,
)
from nasfleet.comm.flowsim import FairShare, max_min_rates, simulate_step
from nasfleet.comm.routing import Transfers, get_routing, route_step, routing_names
from nasfleet.comm.simulate import SeedSummary, SimulationResult, simulate, simulate_over_seeds
from nasfleet.comm.topology import FatTree, LeafSpine, LinkFailure, Topology, fat_tree_k, leaf_spine
from nasfleet.comm.traffic import (
    TrainingTraffic,
    count_parameters,
    predict_dp_step_comm_time,
    training_comm_time,
    training_traffic,
)
from nasfleet.comm.topology_config import load_topology_file, parse_topology_spec, resolve_topology, topology_from_dict
from nasfleet.comm.units import parse_size_bytes

__all__ = [
    "Collective",
    "FairShare",
    "FatTree",
    "LeafSpine",
    "LinkFailure",
    "SeedSummary",
    "SimulationResult",
    "Step",
    "Topology",
    "TrainingTraffic",
    "Transfers",
    "algorithms_for",
    "build_collective",
    "collective_kinds",
    "count_parameters",
    "fat_tree_k",
    "from_steps",
    "get_routing",
    "leaf_spine",
    "load_topology_file",
    "max_min_rates",
    "parse_size_bytes",
    "parse_topology_spec",
    "place_ranks",
    "predict_dp_step_comm_time",
    "resolve_topology",
    "route_step",
    "routing_names",
    "simulate",
    "simulate_over_seeds",
    "simulate_step",
    "topology_from_dict",
    "training_comm_time",
    "training_traffic",
]
