"""Degraded and failed links on 256 GPUs: equal vs capacity-aware spraying and splitting.

The fabric of comm_routing.py (16 leaves × 16 spines, 16 hosts per leaf with one GPU
each, 400 Gb/s host links and uplinks, 500 ns per link), healthy and with cables cut
or running at 100 Gb/s. Every workload runs at flow level (max-min fair rates, event
driven) under per-flow ECMP (mean over 4 seeds, worst in brackets), equal spraying and
splitting (``spray``, ``split``) and their capacity-aware variants (``spray-weighted``,
``split-weighted``: bytes in proportion to each path's bottleneck capacity, as WCMP/UCMP
weight next hops).

A second, one-flow case is the one the capacity-aware variants were asked for: one
1 GiB message between two leaves over 16 spines, one uplink at 100 Gb/s, host links
fast enough (6,400 Gb/s) that the spines are the bottleneck.

Writes benchmarks/results/comm_failures.{json,md}.
Run: ``.venv/bin/python benchmarks/comm_failures.py``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from nasfleet.comm import LinkFailure, build_collective, leaf_spine, simulate
from nasfleet.comm.sweep import Grid, run_grid

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ROUTINGS = ("ecmp", "spray", "spray-weighted", "split", "split-weighted")
MiB, GiB = 2**20, 2**30

SCENARIOS: dict[str, tuple[LinkFailure, ...]] = {
    "healthy": (),
    "leaf0-spine0 at 100G": (LinkFailure("leaf0", "spine0", 100),),
    "leaf0-spine0 cut": (LinkFailure("leaf0", "spine0", 0),),
    "4 cables at 100G": tuple(LinkFailure(f"leaf{i}", f"spine{5 * i}", 100) for i in range(4)),
}
WORKLOADS = (  # (collective, algorithm, label)
    ("allreduce", "ring", "ring all-reduce"),
    ("allreduce", "halving-doubling", "halving-doubling all-reduce"),
    ("allreduce", "direct", "direct all-reduce"),
    ("alltoall", "pairwise", "pairwise all-to-all"),
)
SIZE_BYTES = 128 * MiB
SEEDS = 4


def fabric(failures: tuple[LinkFailure, ...]):
    return leaf_spine(leaves=16, spines=16, hosts=16, gbps=400, latency_ns=500, failures=failures)


def run_scenarios() -> pd.DataFrame:
    frames = []
    for scenario, failures in SCENARIOS.items():
        topo = fabric(failures)
        for collective, algorithm, label in WORKLOADS:
            started = time.perf_counter()
            grid = Grid(collective=collective, algorithms=(algorithm,), routings=ROUTINGS, sizes_bytes=(SIZE_BYTES,),
                        ranks=256, fidelity="flow", seeds=SEEDS)
            frame = run_grid(topo, grid).frame.assign(scenario=scenario, workload=label)
            frames.append(frame)
            print(f"{scenario} / {label}: {time.perf_counter() - started:.1f} s", flush=True)
    return pd.concat(frames, ignore_index=True)


def one_flow_case() -> dict[str, float]:
    """One 1 GiB flow leaf0 -> leaf1 over 16 spines with leaf0-spine0 at 100 Gb/s, NICs not the bottleneck."""
    topo = leaf_spine(leaves=2, spines=16, hosts=1, gbps=6400, uplink_gbps=400,
                      failures=(LinkFailure("leaf0", "spine0", 100),))
    coll = build_collective("p2p", 2, GiB)
    return {name: simulate(topo, coll, name).completion_time_s for name in ROUTINGS[1:]}


def cell(row: pd.Series) -> str:
    mean, worst = row["completion_time_s"] * 1e3, row["completion_time_worst_s"] * 1e3
    return f"{mean:.3f}" if worst <= mean * 1.0005 else f"{mean:.3f} ({worst:.3f})"


def table(frame: pd.DataFrame) -> list[str]:
    lines = ["| links | workload | " + " | ".join(ROUTINGS) + " |", "|---|---|" + "---:|" * len(ROUTINGS)]
    for scenario in SCENARIOS:
        for _, _, label in WORKLOADS:
            rows = frame[(frame["scenario"] == scenario) & (frame["workload"] == label)].set_index("routing")
            lines.append(f"| {scenario} | {label} | " + " | ".join(cell(rows.loc[r]) for r in ROUTINGS) + " |")
    return lines


def main() -> None:
    frame = run_scenarios()
    single = one_flow_case()
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"grid": json.loads(frame.to_json(orient="records")), "one_flow_cct_s": single}
    (RESULTS / "comm_failures.json").write_text(json.dumps(payload, indent=1) + "\n")
    lines = [
        f"CCT in ms, {SIZE_BYTES // MiB} MiB per rank, 256 GPUs on 16x16 leaf-spine at 400 Gb/s, 500 ns per link, "
        f"flow level; ecmp: mean over {SEEDS} seeds (worst).",
        "",
        *table(frame),
        "",
        "One 1 GiB flow over 16 spines, leaf0-spine0 at 100 Gb/s, 6,400 Gb/s host links (flow level, ms):",
        "",
        "| " + " | ".join(single) + " |",
        "|" + "---:|" * len(single),
        "| " + " | ".join(f"{t * 1e3:.3f}" for t in single.values()) + " |",
    ]
    (RESULTS / "comm_failures.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
