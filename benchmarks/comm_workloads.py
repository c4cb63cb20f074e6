"""Several jobs on one fabric, gradient buckets against backward, and flat vs hierarchical all-reduce.

All at flow level (max-min fair, event driven), 400 Gb/s NICs and links, 500 ns per link.

1. Two 128-rank all-reduces (halving-doubling, 128 MiB) on the 256-GPU leaf-spine
   (16 leaves × 16 spines × 16 hosts): on leaves 0-7 and 8-15 (they share no link), and
   interleaved on even and odd hosts (they share every uplink), under ECMP and split.
2. One training iteration of a 350M-parameter fp16 model on the same 256 GPUs: forward
   30 ms, backward 60 ms, ring all-reduce per gradient bucket, for several bucket sizes
   (25 MiB is torch DDP's default; 5e8 elements, DeepSpeed's reduce_bucket_size default,
   is one bucket here).
3. Flat ring against hierarchical all-reduce on 256 GPUs: 32 servers × 8 GPUs behind one
   shared NIC per server (4 leaves × 8 spines), and the rail-optimised fabric of
   cluster_configs/topologies/rail_32x8_400g.yaml (each GPU its own NIC); NVLink 3,600 Gb/s,
   100 ns.

Writes benchmarks/results/comm_workloads.{json,md}. Run: ``.venv/bin/python benchmarks/comm_workloads.py``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from nasfleet.comm import (
    IntraHostTier,
    alone_completion_times,
    build_collective,
    collective_job,
    leaf_spine,
    load_topology_file,
    simulate,
    simulate_workload,
    training_job,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MiB = 2**20


def two_jobs() -> list[dict]:
    topo = leaf_spine(leaves=16, spines=16, hosts=16, gbps=400, latency_ns=500)
    coll = build_collective("allreduce", 128, 128 * MiB, "halving-doubling")
    placements = {
        "leaves 0-7 / 8-15": (np.arange(128), np.arange(128, 256)),
        "even / odd hosts": (np.arange(0, 256, 2), np.arange(1, 256, 2)),
    }
    rows = []
    for label, (hosts_a, hosts_b) in placements.items():
        for routing in ("ecmp", "split"):
            jobs = [collective_job("a", hosts_a, coll, routing=routing), collective_job("b", hosts_b, coll, routing=routing)]
            started = time.perf_counter()
            result = simulate_workload(topo, jobs)
            wall = time.perf_counter() - started
            alone = alone_completion_times(topo, jobs)
            for job in result.jobs:
                rows.append({
                    "placement": label, "routing": routing, "job": job.name,
                    "cct_ms": job.completion_time_s * 1e3, "alone_ms": alone[job.name] * 1e3,
                    "slowdown": job.completion_time_s / alone[job.name], "shared_links": result.shared_links,
                    "wall_s": wall,
                })
    return rows


def buckets() -> list[dict]:
    topo = leaf_spine(leaves=16, spines=16, hosts=16, gbps=400, latency_ns=500)
    payload = 350_000_000 * 2
    rows = []
    for label, bucket in (("25 MiB", 25 * MiB), ("100 MiB", 100 * MiB), ("5e8 elements (1 GB)", 500_000_000 * 2)):
        job = training_job("train", np.arange(256), payload, bucket, forward_s=0.03, backward_s=0.06, routing="split")
        started = time.perf_counter()
        it = simulate_workload(topo, [job]).jobs[0].iteration
        rows.append({
            "bucket": label, "buckets": it.buckets, "iteration_ms": it.iteration_s * 1e3, "comm_ms": it.comm_s * 1e3,
            "exposed_ms": it.exposed_comm_s * 1e3, "hidden_ms": it.hidden_comm_s * 1e3,
            "wall_s": time.perf_counter() - started,
        })
    return rows


def flat_vs_hierarchical() -> list[dict]:
    fabrics = {
        "32 servers x 8 GPUs, one NIC per server": (
            leaf_spine(leaves=4, spines=8, hosts=8, gbps=400, latency_ns=500, intra_host=IntraHostTier(8, 3600, 100)), 8),
        "rail_32x8_400g (one NIC per GPU)": (load_topology_file(ROOT / "cluster_configs/topologies/rail_32x8_400g.yaml"), 1),
    }
    rows = []
    for label, (topo, per_endpoint) in fabrics.items():
        for size in (MiB, 16 * MiB, 128 * MiB):
            times = {}
            for algorithm in ("ring", "hierarchical"):
                coll = build_collective("allreduce", 256, size, algorithm, ranks_per_host=8)
                times[algorithm] = simulate(topo, coll, "split", gpus_per_host=per_endpoint).completion_time_s
            rows.append({"fabric": label, "size_mib": size // MiB, "ring_ms": times["ring"] * 1e3,
                         "hierarchical_ms": times["hierarchical"] * 1e3,
                         "speedup": times["ring"] / times["hierarchical"]})
    return rows


def markdown(two: list[dict], bucket_rows: list[dict], flat: list[dict]) -> str:
    lines = ["| placement | routing | job | CCT (ms) | alone (ms) | slowdown | shared links |", "|---|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['placement']} | {r['routing']} | {r['job']} | {r['cct_ms']:.3f} | {r['alone_ms']:.3f} | "
              f"{r['slowdown']:.3f} | {r['shared_links']} |" for r in two]
    lines += ["", "| bucket | buckets | iteration (ms) | comm (ms) | exposed (ms) | hidden (ms) |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['bucket']} | {r['buckets']} | {r['iteration_ms']:.2f} | {r['comm_ms']:.2f} | {r['exposed_ms']:.2f} | "
              f"{r['hidden_ms']:.2f} |" for r in bucket_rows]
    lines += ["", "| fabric | size | ring (ms) | hierarchical (ms) | ring / hierarchical |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['fabric']} | {r['size_mib']} MiB | {r['ring_ms']:.3f} | {r['hierarchical_ms']:.3f} | {r['speedup']:.2f} |"
              for r in flat]
    return "\n".join(lines) + "\n"


def main() -> None:
    started = time.perf_counter()
    two, bucket_rows, flat = two_jobs(), buckets(), flat_vs_hierarchical()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "comm_workloads.json").write_text(json.dumps(
        {"two_jobs": two, "buckets": bucket_rows, "flat_vs_hierarchical": flat,
         "wall_s": time.perf_counter() - started}, indent=1))
    (RESULTS / "comm_workloads.md").write_text(markdown(two, bucket_rows, flat))
    print(markdown(two, bucket_rows, flat))
    print(f"total wall {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
