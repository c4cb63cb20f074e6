"""ECMP vs ECMP-k vs packet spraying vs single-path flow splitting on 256 GPUs.

The fabric of the published evaluation: 16 leaves × 16 spines, 16 hosts per leaf (one
GPU each), 400 Gb/s host links and uplinks (1:1), 500 ns per link. Every algorithm
runs under every routing; hashed routings (ecmp, ecmp-K) are averaged over seeds and
their worst seed is kept too.

Fidelity: every workload runs at flow level (max-min fair rates, event driven) and,
for comparison, at analytical level (per-step congestion bound). Direct all-reduce
and pairwise all-to-all have hundreds of rate changes per step under hashing, so
they use 4 seeds instead of 8 (at both levels, so the two levels see the same
hashes). Each row of the output says which.

Writes benchmarks/results/comm_routing.{parquet,json,md} and docs/img/comm_routing_*.png,
and the subflow bill (``split`` and ``split-group`` against the per-ToR minimum
lcm(r, s), here and on a k = 8 fat-tree) to benchmarks/results/comm_routing_subflows.{json,md}.
Run: ``.venv/bin/python benchmarks/comm_routing.py`` (``--subflows``: only the subflow table,
seconds instead of the whole grid).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pandas as pd

from nasfleet.comm import build_collective, fat_tree_k, load_topology_file, simulate
from nasfleet.comm.plots import plot_cct, plot_cct_bars, plot_link_heatmap
from nasfleet.comm.sweep import Grid, run_grid, write_parquet

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
IMAGES = ROOT / "docs" / "img"
ROUTINGS = ("ecmp", "ecmp-2", "ecmp-4", "ecmp-8", "spray", "split")
MiB = 2**20


def grid(collective, algorithms, sizes, fidelity, seeds):
    return Grid(collective=collective, algorithms=algorithms, routings=ROUTINGS, sizes_bytes=sizes, ranks=256,
                fidelity=fidelity, seeds=seeds)


def main() -> None:
    topo = load_topology_file(ROOT / "cluster_configs" / "topologies" / "leafspine_16x16_400g.yaml")
    plan = [
        grid("allreduce", ("ring", "halving-doubling", "double-binary-tree"), (1 * MiB, 16 * MiB, 128 * MiB), "flow", 8),
        grid("allreduce", ("direct",), (1 * MiB, 16 * MiB, 128 * MiB), "flow", 4),
        grid("alltoall", ("pairwise",), (1 * MiB, 16 * MiB, 128 * MiB), "flow", 4),
        grid("allreduce", ("ring", "halving-doubling", "double-binary-tree"), (1 * MiB, 16 * MiB, 128 * MiB),
             "analytical", 8),
        grid("allreduce", ("direct",), (1 * MiB, 16 * MiB, 128 * MiB), "analytical", 4),
        grid("alltoall", ("pairwise",), (1 * MiB, 16 * MiB, 128 * MiB), "analytical", 4),
    ]
    frames, runs = [], []
    for g in plan:
        started = time.perf_counter()
        run = run_grid(topo, g)
        frame = run.frame.assign(collective=g.collective)
        frames.append(frame)
        runs.append(run)
        print(f"{g.collective} {g.algorithms} {g.fidelity}: {time.perf_counter() - started:.1f} s", flush=True)
    frame = pd.concat(frames, ignore_index=True)
    frame["label"] = frame["algorithm"].where(frame["collective"] == "allreduce", "all-to-all")
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_parquet(frame, RESULTS / "comm_routing.parquet")
    (RESULTS / "comm_routing.json").write_text(frame.to_json(orient="records", indent=1) + "\n")

    # Table: CCT in ms (mean over seeds; worst in brackets) per workload and routing.
    lines = ["| workload | size | fidelity | " + " | ".join(ROUTINGS) + " |", "|---|---:|---|" + "---:|" * len(ROUTINGS)]
    order = ["ring", "double-binary-tree", "halving-doubling", "direct", "all-to-all"]
    for fidelity in ("flow", "analytical"):
        for label in order:
            for size in sorted(set(frame["bytes"])):
                rows = frame[(frame["label"] == label) & (frame["bytes"] == size) & (frame["fidelity"] == fidelity)]
                if rows.empty:
                    continue
                cells = []
                for routing in ROUTINGS:
                    r = rows[rows["routing"] == routing].iloc[0]
                    mean, worst = r["completion_time_s"] * 1e3, r["completion_time_worst_s"] * 1e3
                    cells.append(f"{mean:.3f}" if worst <= mean * 1.0005 else f"{mean:.3f} ({worst:.3f})")
                lines.append(f"| {label} | {int(size) // MiB} MiB | {fidelity} | " + " | ".join(cells) + " |")
    (RESULTS / "comm_routing.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    flow = frame[frame["fidelity"] == "flow"]
    at16 = flow[flow["bytes"] == 16 * MiB].copy()
    at16["algorithm"] = at16["label"]
    plot_cct_bars(at16, IMAGES / "comm_routing_bars.png",
                  title="256 GPUs, 16x16 leaf-spine, 400 Gb/s, 16 MiB, flow level")
    plot_cct(flow[flow["algorithm"].isin(["ring", "halving-doubling", "double-binary-tree"])],
             IMAGES / "comm_routing_sizes.png", title="256 GPUs, 16x16 leaf-spine, 400 Gb/s (flow level)")
    hd = runs[0].summaries[("halving-doubling", 128 * MiB, "ecmp")]
    plot_link_heatmap(max(hd.results, key=lambda r: r.completion_time_s), topo, IMAGES / "comm_routing_links_ecmp.png")
    split = runs[0].summaries[("halving-doubling", 128 * MiB, "split")]
    plot_link_heatmap(split.results[0], topo, IMAGES / "comm_routing_links_split.png")


SUBFLOW_ROUTINGS = ("ecmp-4", "spray", "split", "split-group")


def subflow_table() -> None:
    """Subflows each routing makes, beside the per-ToR minimum, at 16 MiB (counts do not
    depend on the size or the fidelity; analytical level, so this takes seconds)."""
    leaf_spine_16 = load_topology_file(ROOT / "cluster_configs" / "topologies" / "leafspine_16x16_400g.yaml")
    cases = [(leaf_spine_16, "allreduce", algorithm, 256) for algorithm in ("ring", "double-binary-tree", "halving-doubling", "direct")]
    cases += [(leaf_spine_16, "alltoall", "pairwise", 256)]
    fat_tree = fat_tree_k(8, gbps=400, latency_ns=500)
    cases += [(fat_tree, "allreduce", algorithm, 128) for algorithm in ("ring", "halving-doubling")]
    cases += [(fat_tree, "alltoall", "pairwise", 128)]
    rows = []
    for topo, collective, algorithm, ranks in cases:
        coll = build_collective(collective, ranks, 16 * MiB, algorithm)
        results = {name: simulate(topo, coll, routing=name, fidelity="analytical") for name in SUBFLOW_ROUTINGS}
        spray = results["spray"].max_congestion_s
        for name in ("split", "split-group"):  # both keep spraying's busiest link
            assert abs(results[name].max_congestion_s - spray) <= 1e-9 * spray, (topo.name, algorithm, name)
        rows.append({"topology": topo.name, "collective": collective, "algorithm": coll.algorithm, "ranks": ranks,
                     "flows": results["spray"].flows, "min_subflows": results["split"].min_subflows,
                     **{f"subflows_{name}": r.subflows for name, r in results.items()}})
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "comm_routing_subflows.json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = ["| fabric | workload | flows | " + " | ".join(SUBFLOW_ROUTINGS) + " | per-ToR minimum |",
             "|---|---|---:|" + "---:|" * (len(SUBFLOW_ROUTINGS) + 1)]
    for r in rows:
        label = "all-to-all" if r["collective"] == "alltoall" else r["algorithm"]
        cells = [f"{r[f'subflows_{name}']:,}" for name in SUBFLOW_ROUTINGS]
        lines.append(f"| {r['topology']} | {label} | {r['flows']:,} | " + " | ".join(cells) + f" | {r['min_subflows']:,} |")
    (RESULTS / "comm_routing_subflows.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    if "--subflows" not in sys.argv[1:]:
        main()
    subflow_table()
