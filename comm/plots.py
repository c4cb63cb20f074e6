"""PNG figures of simulation results (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from nasfleet.comm.simulate import SimulationResult  # noqa: E402
from nasfleet.comm.topology import Topology  # noqa: E402
from nasfleet.comm.units import format_bytes  # noqa: E402


def plot_cct(frame: pd.DataFrame, path: Path, title: str = "") -> Path:
    """CCT per routing against message size, one panel per algorithm (worst seed as error bar)."""
    algorithms = list(dict.fromkeys(frame["algorithm"]))
    fig, axes = plt.subplots(1, len(algorithms), figsize=(4.2 * len(algorithms), 3.6), squeeze=False)
    for ax, algorithm in zip(axes[0], algorithms):
        part = frame[frame["algorithm"] == algorithm]
        for routing in dict.fromkeys(part["routing"]):
            rows = part[part["routing"] == routing].sort_values("bytes")
            mean_ms = rows["completion_time_s"].to_numpy() * 1e3
            worst_ms = rows["completion_time_worst_s"].to_numpy() * 1e3
            ax.errorbar(rows["bytes"], mean_ms, yerr=[np.zeros_like(mean_ms), worst_ms - mean_ms], marker="o",
                        capsize=3, label=routing)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(f"{v:g}")[0] in "25" else ""))
        ticks = sorted(set(part["bytes"]))
        ax.set_xticks(ticks, [format_bytes(t) for t in ticks], rotation=45)
        ax.set_xlabel("size per rank")
        ax.set_ylabel("CCT (ms)")
        ax.set_title(algorithm)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_cct_bars(frame: pd.DataFrame, path: Path, title: str = "") -> Path:
    """CCT per routing for each algorithm at one size, normalised to ``spray``."""
    algorithms = list(dict.fromkeys(frame["algorithm"]))
    routings = list(dict.fromkeys(frame["routing"]))
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(algorithms), 3.6))
    width = 0.8 / len(routings)
    for k, routing in enumerate(routings):
        values, worst = [], []
        for algorithm in algorithms:
            rows = frame[(frame["algorithm"] == algorithm)]
            base = rows[rows["routing"] == "spray"]["completion_time_s"].iloc[0] if "spray" in routings else 1.0
            row = rows[rows["routing"] == routing].iloc[0]
            values.append(row["completion_time_s"] / base)
            worst.append(row["completion_time_worst_s"] / base)
        x = np.arange(len(algorithms)) + k * width
        ax.bar(x, values, width, label=routing)
        ax.errorbar(x, values, yerr=[np.zeros(len(values)), np.array(worst) - np.array(values)], fmt="none",
                    ecolor="black", capsize=2, lw=0.8)
    ax.set_xticks(np.arange(len(algorithms)) + 0.4 - width / 2, algorithms)
    ax.set_ylabel("CCT / CCT(spray)")
    ax.axhline(1.0, color="grey", lw=0.6)
    ax.legend(fontsize=8, ncol=2)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_link_heatmap(result: SimulationResult, topology: Topology, path: Path, max_links: int = 512) -> Path:
    """Utilisation of the switch-to-switch links over the collective's steps."""
    fabric = np.arange(2 * topology.num_hosts, topology.num_links)[: max_links]
    starts, util = result.utilization_timeline(fabric)
    fig, ax = plt.subplots(figsize=(7, 4))
    end = result.completion_time_s
    edges = np.append(starts, end) * 1e3
    mesh = ax.pcolormesh(edges, np.arange(len(fabric) + 1), util.T, vmin=0, vmax=1, cmap="viridis", shading="flat")
    fig.colorbar(mesh, ax=ax, label="utilisation")
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("switch link (leaf up, then spine down)")
    ax.set_title(f"{result.collective} {result.algorithm}, {result.routing}, {format_bytes(result.bytes)}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
