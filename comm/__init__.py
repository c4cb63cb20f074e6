"""Collective-traffic simulator for leaf-spine and fat-tree fabrics.

Build a topology, a collective and pick a routing; :func:`simulate` returns the
collective completion time at analytical or flow-level fidelity::

    from nasfleet.comm import leaf_spine, build_collective, simulate
    topo = leaf_spine(leaves=16, spines=16, hosts=16, gbps=400, latency_ns=500)
    coll = build_collective("allreduce", ranks=256, size_bytes=2**30, algorithm="halving-doubling")
    simulate(topo, coll, routing="split").completion_time_s

and :func:`predict_dp_step_comm_time` turns a model size, a data-parallel degree and a
ZeRO stage into seconds of gradient communication per training step.

The package imports nothing from the ML side of nasfleet and runs on a laptop. Its
public names load on first use, so ``import nasfleet.comm.cli`` (the CLI and its
``--help``) does not pay for numpy, scipy and pandas.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

# public name -> the module under nasfleet.comm that defines it
_EXPORTS: dict[str, str] = {
    "Collective": "collectives",
    "Step": "collectives",
    "algorithms_for": "collectives",
    "build_collective": "collectives",
    "collective_kinds": "collectives",
    "from_steps": "collectives",
    "place_ranks": "collectives",
    "FairShare": "flowsim",
    "max_min_rates": "flowsim",
    "simulate_step": "flowsim",
    "ROUTINGS": "routing",
    "Routing": "routing",
    "RoutingContext": "routing",
    "Transfers": "routing",
    "get_routing": "routing",
    "route_step": "routing",
    "routing_names": "routing",
    "SeedSummary": "simulate",
    "SimulationResult": "simulate",
    "simulate": "simulate",
    "simulate_over_seeds": "simulate",
    "FatTree": "topology",
    "IntraHostTier": "topology",
    "LeafSpine": "topology",
    "RailLeafSpine": "topology",
    "rail_leaf_spine": "topology",
    "LinkFailure": "topology",
    "Topology": "topology",
    "fat_tree_k": "topology",
    "leaf_spine": "topology",
    "TrainingTraffic": "traffic",
    "count_parameters": "traffic",
    "predict_dp_step_comm_time": "traffic",
    "training_comm_time": "traffic",
    "training_traffic": "traffic",
    "load_topology_file": "topology_config",
    "parse_topology_spec": "topology_config",
    "resolve_topology": "topology_config",
    "topology_from_dict": "topology_config",
    "parse_size_bytes": "units",
    "FixedRateFlow": "workload",
    "Job": "workload",
    "Phase": "workload",
    "WorkloadResult": "workload",
    "alone_completion_times": "workload",
    "collective_job": "workload",
    "point_to_point_job": "workload",
    "simulate_workload": "workload",
    "training_job": "workload",
    "load_workload_file": "workload_config",
    "workload_from_dict": "workload_config",
}

__all__ = sorted(_EXPORTS)


class _Package(ModuleType):
    """``nasfleet.comm`` itself: a public name imports its module the first time it is read."""

    def __getattr__(self, name: str) -> object:
        module = _EXPORTS.get(name)
        if module is None:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{self.__name__}.{module}"), name)
        super().__setattr__(name, value)
        return value

    def __setattr__(self, name: str, value: object) -> None:
        # Importing a submodule binds it onto its package; the submodule nasfleet.comm.simulate
        # must not hide the function simulate() (an eager __init__ rebound the name after it).
        if name in _EXPORTS and isinstance(value, ModuleType):
            return
        super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *_EXPORTS})


sys.modules[__name__].__class__ = _Package
