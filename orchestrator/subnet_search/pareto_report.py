"""A search's Pareto front on disk: ``pareto.json`` (what `nasfleet export --pareto K` reads),
``pareto.md`` (the table) and one ``pareto_<cost>.png`` per cost objective."""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.storage import is_file, join, read_text, write_bytes, write_text
from nasfleet.strategies.searchers import pareto_mask
from nasfleet.supernet import Arch, arch_from_json, arch_to_dict, arch_from_dict

PARETO_JSON = "pareto.json"
PARETO_MARKDOWN = "pareto.md"

COST_LABELS = {"mflops": "MFLOPs", "params": "params", "latency_ms": "latency (ms)", "comm_ms": "all-reduce (ms)"}


@dataclass(frozen=True)
class FrontMember:
    """One subnet on the front; ``index`` is its 1-based position, cheapest first (what ``--pareto K`` names)."""

    index: int
    arch: dict[str, Any]
    arch_desc: str
    val_accuracy: float
    test_accuracy: float | None
    costs: dict[str, float]


def front_rows(table: pa.Table, objectives: tuple[str, ...]) -> list[dict[str, Any]]:
    """The fully evaluated rows no other fully evaluated row dominates, cheapest first (first objective)."""
    rows = [r for r in table.to_pylist() if r["complete"]]
    if not rows:
        return []
    points = np.array([[-r["accuracy"], *(r[name] for name in objectives)] for r in rows], dtype=float)
    mask = pareto_mask(points)
    front = [r for r, keep in zip(rows, mask) if keep]
    unique = {r["arch"]: r for r in front}  # a resumed search may hold a subnet twice
    return sorted(unique.values(), key=lambda r: tuple(r[name] for name in objectives) + (-r["accuracy"],))


def members(rows: list[dict[str, Any]], objectives: tuple[str, ...], test_accuracy: list[float | None]) -> list[FrontMember]:
    return [
        FrontMember(
            index=i + 1,
            arch=arch_to_dict(arch_from_json(r["arch"])),
            arch_desc=r["arch_desc"],
            val_accuracy=r["accuracy"],
            test_accuracy=test,
            costs={name: float(r[name]) for name in ("mflops", "params", *objectives) if r.get(name) is not None},
        )
        for i, (r, test) in enumerate(zip(rows, test_accuracy))
    ]


def write_front(
    folder: str, front: list[FrontMember], summary: dict[str, Any], table: pa.Table, objectives: tuple[str, ...]
) -> list[str]:
    """Write the JSON, the Markdown table and the plots (a folder or a URI); returns the files written."""
    payload = {**summary, "objectives": list(objectives), "front": [asdict(m) for m in front]}
    written = [join(folder, PARETO_JSON), join(folder, PARETO_MARKDOWN)]
    write_text(written[0], json.dumps(payload, indent=2) + "\n")
    write_text(written[1], front_markdown(front, objectives, summary))
    for name in objectives:
        location = join(folder, f"pareto_{name}.png")
        write_bytes(location, _plot(table, front, name))
        written.append(location)
    return written


def format_cost(name: str, value: float) -> str:
    return f"{value:,.0f}" if name == "params" else f"{value:.5g}"


def front_markdown(front: list[FrontMember], objectives: tuple[str, ...], summary: dict[str, Any]) -> str:
    costs = list(dict.fromkeys(("mflops", "params", *objectives)))
    header = ["K", "subnet", *(COST_LABELS[c] for c in costs), "val acc", "test acc"]
    lines = [
        f"# Pareto front of search `{summary.get('search', '')}`",
        "",
        f"{summary.get('evaluated', 0)} subnets evaluated ({summary.get('complete', 0)} on the whole validation split), "
        f"searcher `{summary.get('searcher')}`, scheduler `{summary.get('scheduler')}`, "
        f"constraints: {', '.join(summary.get('constraints', [])) or 'none'}.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if h not in ("subnet",) else "---" for h in header) + "|",
    ]
    for m in front:
        test = f"{100 * m.test_accuracy:.2f}%" if m.test_accuracy is not None else "–"
        values = [format_cost(c, m.costs[c]) for c in costs]
        lines.append(f"| {m.index} | `{m.arch_desc}` | " + " | ".join(values) + f" | {100 * m.val_accuracy:.2f}% | {test} |")
    return "\n".join(lines) + "\n"


def _plot(table: pa.Table, front: list[FrontMember], cost: str) -> bytes:
    """The front over all evaluated subnets for one cost, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in table.to_pylist() if r["complete"] and r.get(cost) is not None]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([r[cost] for r in rows], [100 * r["accuracy"] for r in rows], s=12, c="0.6", label="evaluated")
    xs = [m.costs[cost] for m in front]
    order = np.argsort(xs)
    ax.step(np.array(xs)[order], [100 * front[i].val_accuracy for i in order], where="post", c="C3", lw=1)
    ax.scatter(xs, [100 * m.val_accuracy for m in front], s=24, c="C3", label="Pareto front (all objectives)")
    ax.set_xlabel(COST_LABELS[cost])
    ax.set_ylabel("validation accuracy (%)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, dpi=120, format="png")
    plt.close(fig)
    return image.getvalue()


def load_front(folder: str) -> list[FrontMember]:
    path = join(folder, PARETO_JSON)
    if not is_file(path):
        raise NasfleetError(f"{folder} holds no Pareto front ({PARETO_JSON}): run `nasfleet search` first")
    try:
        payload = json.loads(read_text(path))
        return [FrontMember(**m) for m in payload["front"]]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise NasfleetError(f"{path} is not a Pareto front written by nasfleet ({type(exc).__name__})") from None


def front_member(folder: str, k: int) -> tuple[FrontMember, Arch]:
    """The K-th (1-based) subnet of the front in ``folder``."""
    front = load_front(folder)
    if not front:
        raise NasfleetError(f"the Pareto front in {folder} is empty")
    if not 1 <= k <= len(front):
        raise NasfleetError(f"--pareto {k} is out of range: the front in {folder} has {len(front)} subnets (1..{len(front)})")
    member = front[k - 1]
    return member, arch_from_dict(member.arch)
