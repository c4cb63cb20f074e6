"""Speed of the flow-level simulator on a 1 GiB ring all-reduce.

Measures wall time and peak traced memory (tracemalloc, which sees numpy buffers) of
``simulate(..., fidelity="flow")`` on 1:1 leaf-spine fabrics (32 hosts per leaf, 32
spines) from 64 to 32,768 hosts, and compares with two slower ways to get the same
answer in the same run:

* ``step-by-step``: the same vectorised solver with ``dedup=False``, solving all
  2(p−1) steps one after another instead of the one distinct ring pattern;
* ``python baseline``: a straightforward per-flow Python water-filling (lists of
  links per transfer, progressive filling in pure Python, rates recomputed at every
  completion), also step by step. It is only run on the smaller fabrics (it would
  take hours on the large ones); the speed-up column says where it was measured.

A third table times all-to-all (pairwise and direct, 1 GiB per rank) at 1,024, 8,192 and
32,768 hosts under ``spray`` and ``split``, and under ``ecmp`` up to 8,192 hosts: on these
healthy symmetric fabrics ``simulate()`` takes its all-to-all fast path
(:mod:`nasfleet.comm.symmetric`; equal to the general engine, which the tests check). Direct
all-to-all under ``ecmp`` at 1,024 hosts is also timed on the general engine
(``fast_path=False``), side by side, and the two CCTs must agree.

A second table times harder flow-level cases (halving-doubling under ECMP, direct
all-reduce and pairwise all-to-all on the 256-GPU fabric), where hashing makes many
distinct rates and so many rate recomputations.

Writes ``benchmarks/results/comm_speed.json`` and ``comm_speed.md``.
Run: ``.venv/bin/python benchmarks/comm_speed.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import tracemalloc
from pathlib import Path

import numpy as np

from nasfleet.comm import build_collective, leaf_spine, route_step, get_routing, simulate, place_ranks

RESULTS = Path(__file__).resolve().parent / "results"
SIZE_BYTES = 2**30
HOSTS_PER_LEAF = 32
SPINES = 32


# (label, collective, algorithm, hosts, bytes, routing): harder cases for the event loop.
EXTRA = [
    ("halving-doubling all-reduce", "allreduce", "halving-doubling", 1024, SIZE_BYTES, "split"),
    ("halving-doubling all-reduce", "allreduce", "halving-doubling", 1024, SIZE_BYTES, "ecmp"),
    ("ring all-reduce", "allreduce", "ring", 1024, SIZE_BYTES, "ecmp"),
    ("halving-doubling all-reduce", "allreduce", "halving-doubling", 32768, SIZE_BYTES, "split"),
    ("halving-doubling all-reduce", "allreduce", "halving-doubling", 32768, SIZE_BYTES, "ecmp"),
    ("direct all-reduce, 16x16 fabric, 16 MiB", "allreduce", "direct", 256, 16 * 2**20, "ecmp"),
    ("pairwise all-to-all, 16x16 fabric, 16 MiB", "alltoall", "pairwise", 256, 16 * 2**20, "ecmp-4"),
]


# (hosts, algorithm, routing, engine) of the all-to-all table: ECMP to 8,192 hosts; direct ECMP at 1,024 on both engines
ALLTOALL = [(h, a, r, "fast path") for h in (1024, 8192, 32768) for a in ("pairwise", "direct")
            for r in ("spray", "split", "ecmp") if r != "ecmp" or h <= 8192]
ALLTOALL.insert(ALLTOALL.index((1024, "direct", "ecmp", "fast path")) + 1, (1024, "direct", "ecmp", "general engine"))


def fabric(hosts: int):
    leaves = max(1, hosts // HOSTS_PER_LEAF)
    return leaf_spine(leaves=leaves, spines=SPINES, hosts=min(hosts, HOSTS_PER_LEAF), gbps=400, latency_ns=500)


def python_water_filling(paths: list[list[int]], share: list[float], capacity: list[float]) -> list[float]:
    """Weighted max-min rates, one transfer and one link at a time, in plain Python."""
    rates = [0.0] * len(paths)
    frozen = [False] * len(paths)
    residual = list(capacity)
    level = 0.0
    while not all(frozen):
        demand: dict[int, float] = {}
        for t, links in enumerate(paths):
            if not frozen[t]:
                for link in links:
                    demand[link] = demand.get(link, 0.0) + share[t]
        best = min(residual[link] / d for link, d in demand.items())
        level += best
        for link, d in demand.items():
            residual[link] -= d * best
        full = {link for link, d in demand.items() if residual[link] <= 1e-9 * capacity[link]}
        for t, links in enumerate(paths):
            if not frozen[t] and any(link in full for link in links):
                frozen[t] = True
                rates[t] = share[t] * level
    return rates


def python_baseline_cct(topo, coll, routing: str) -> float:
    """CCT of ``coll`` with the per-flow Python water-filling, every step simulated."""
    rank_host = place_ranks(coll.ranks, topo.num_hosts)
    capacity = list(topo.link_bytes_per_s)
    total = 0.0
    for step in coll.steps():
        transfers = route_step(topo, step, rank_host, get_routing(routing))
        inc = transfers.incidence
        paths = [list(inc.indices[inc.indptr[t]: inc.indptr[t + 1]]) for t in range(transfers.num_transfers)]
        remaining = list(transfers.size_bytes)
        share = list(transfers.share)
        done_at = [0.0] * len(paths)
        active = list(range(len(paths)))
        now = 0.0
        while active:
            rates = python_water_filling([paths[t] for t in active], [share[t] for t in active], capacity)
            dt = min(remaining[t] / r for t, r in zip(active, rates))
            now += dt
            still = []
            for t, r in zip(active, rates):
                remaining[t] -= r * dt
                if remaining[t] <= 1e-9 * transfers.size_bytes[t]:
                    done_at[t] = now
                else:
                    still.append(t)
            active = still
        total += max(d + lat for d, lat in zip(done_at, transfers.latency_s))
    return total


def measure(fn):
    tracemalloc.start()
    started = time.perf_counter()
    value = fn()
    wall = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return value, wall, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the 32,768-host fabric")
    parser.add_argument("--routing", default="split")
    parser.add_argument("--note", default="", help="a remark stored with the results (e.g. how busy the machine was)")
    args = parser.parse_args()
    host_counts = [64, 256, 1024, 4096, 32768][: 4 if args.quick else 5]
    baseline_up_to = 1024
    stepwise_up_to = 1024
    rows = []
    for hosts in host_counts:
        topo = fabric(hosts)

        def ours():
            coll = build_collective("allreduce", hosts, SIZE_BYTES, "ring")
            return simulate(topo, coll, args.routing, "flow")

        result, wall, peak = measure(ours)
        row = {
            "hosts": hosts,
            "leaves": topo.leaves,
            "spines": topo.spines,
            "routing": args.routing,
            "steps": result.steps,
            "subflows": result.subflows,
            "cct_s": result.completion_time_s,
            "wall_s": wall,
            "peak_mem_mib": peak / 2**20,
        }
        coll = build_collective("allreduce", hosts, SIZE_BYTES, "ring")
        if hosts <= stepwise_up_to:
            stepwise, step_wall, step_peak = measure(lambda: simulate(topo, coll, args.routing, "flow", dedup=False))
            assert abs(stepwise.completion_time_s - result.completion_time_s) <= 1e-9 * result.completion_time_s
            row.update(stepwise_wall_s=step_wall, stepwise_peak_mem_mib=step_peak / 2**20, speedup_vs_stepwise=step_wall / wall)
        if hosts <= baseline_up_to:
            base_cct, base_wall, base_peak = measure(lambda: python_baseline_cct(topo, coll, args.routing))
            assert abs(base_cct - result.completion_time_s) <= 1e-6 * result.completion_time_s
            row.update(baseline_wall_s=base_wall, baseline_peak_mem_mib=base_peak / 2**20, speedup_vs_baseline=base_wall / wall)
        rows.append(row)
        print(json.dumps(row), flush=True)

    extra = []
    for workload, kind, algorithm, hosts, size, routing in EXTRA[: 3 if args.quick else len(EXTRA)]:
        topo = fabric(hosts) if hosts != 256 else leaf_spine(16, 16, 16, gbps=400, latency_ns=500)
        coll = build_collective(kind, hosts, size, algorithm)
        result, wall, peak = measure(lambda: simulate(topo, coll, routing, "flow"))
        extra.append({"workload": workload, "hosts": hosts, "routing": routing, "patterns": len(coll.patterns),
                      "rate_changes": sum(p.rate_changes for p in result.patterns), "cct_s": result.completion_time_s,
                      "wall_s": wall, "peak_mem_mib": peak / 2**20})
        print(json.dumps(extra[-1]), flush=True)

    alltoall = []
    for hosts, algorithm, routing, engine in ALLTOALL if not args.quick else ALLTOALL[:7]:
        topo = fabric(hosts)

        def run():
            coll = build_collective("alltoall", hosts, SIZE_BYTES, algorithm)
            return simulate(topo, coll, routing, "flow", fast_path=engine == "fast path")

        # timed without tracemalloc, which slows the allocation-heavy ECMP fills about 2x; peak from a second run
        started = time.perf_counter()
        run()
        wall = time.perf_counter() - started
        result, traced_wall, peak = measure(run)
        if engine != "fast path":
            fast = next(r for r in alltoall if (r["hosts"], r["algorithm"], r["routing"]) == (hosts, algorithm, routing))
            assert abs(fast["cct_s"] - result.completion_time_s) <= 1e-9 * result.completion_time_s
        alltoall.append({"hosts": hosts, "algorithm": algorithm, "routing": routing, "engine": engine, "steps": result.steps,
                         "flows": result.flows, "subflows": result.subflows, "distinct_solves": len(result.patterns),
                         "cct_s": result.completion_time_s, "wall_s": wall, "traced_wall_s": traced_wall,
                         "peak_mem_mib": peak / 2**20})
        print(json.dumps(alltoall[-1]), flush=True)

    record = {
        "benchmark": "flow-level 1 GiB ring all-reduce, leaf-spine 32 hosts/leaf x 32 spines, 400 Gb/s, 1:1",
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
                    "processor": platform.processor() or platform.machine()},
        "targets": {"1024_hosts_s": 1.0, "32768_hosts_s": 60.0},
        "notes": "baseline (per-flow pure-Python water-filling, step by step) measured only up to "
        f"{baseline_up_to} hosts; step-by-step vectorised solver up to {stepwise_up_to} hosts. "
        "Peak memory is tracemalloc's peak of Python+numpy allocations during the run.",
        "rows": rows,
        "other_workloads": extra,
        "alltoall": alltoall,
        "alltoall_note": args.note,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "comm_speed.json").write_text(json.dumps(record, indent=2) + "\n")

    def cell(row: dict, key: str, fmt: str) -> str:
        return format(row[key], fmt) if key in row else "not run"

    lines = [
        "| hosts | steps | subflows | wall (s) | peak mem (MiB) | step-by-step wall (s) | Python baseline wall (s) "
        "| speed-up vs baseline | of which step-by-step vs baseline |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        speedup = f"{r['speedup_vs_baseline']:,.0f}x" if "speedup_vs_baseline" in r else "–"
        vectorised = f"{r['baseline_wall_s'] / r['stepwise_wall_s']:,.0f}x" if "baseline_wall_s" in r else "–"
        lines.append(
            f"| {r['hosts']:,} | {r['steps']:,} | {r['subflows']:,} | {r['wall_s']:.3f} | {r['peak_mem_mib']:.1f} | "
            f"{cell(r, 'stepwise_wall_s', '.2f')} | {cell(r, 'baseline_wall_s', '.1f')} | {speedup} | {vectorised} |"
        )
    lines += [
        "",
        "Other flow-level workloads (1 GiB unless noted; hashed routings with seed 0):",
        "",
        "| workload | hosts | routing | distinct patterns | rate recomputations | wall (s) | peak mem (MiB) |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in extra:
        lines.append(
            f"| {r['workload']} | {r['hosts']:,} | {r['routing']} | {r['patterns']} | {r['rate_changes']:,} | "
            f"{r['wall_s']:.2f} | {r['peak_mem_mib']:.1f} |"
        )
    lines += [
        "",
        "All-to-all, 1 GiB per rank, flow level (ECMP seed 0; wall without tracemalloc, peak from a second, traced run)"
        + (f". {args.note}" if args.note else "") + ":",
        "",
        "| hosts | algorithm | routing | engine | steps | flows | subflows | distinct solves | CCT (ms) | wall (s) "
        "| peak mem (MiB) |",
        "|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in alltoall:
        lines.append(
            f"| {r['hosts']:,} | {r['algorithm']} | {r['routing']} | {r['engine']} | {r['steps']:,} | {r['flows']:,} | "
            f"{r['subflows']:,} | "
            f"{r['distinct_solves']:,} | {r['cct_s'] * 1e3:.3f} | {r['wall_s']:.2f} | {r['peak_mem_mib']:.1f} |"
        )
    (RESULTS / "comm_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
