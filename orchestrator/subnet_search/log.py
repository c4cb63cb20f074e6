"""The Parquet log of a search: one row per evaluated subnet, appended as each trial ends."""

from __future__ import annotations

import time
from typing import Any

import pyarrow as pa

from nasfleet.supernet import Arch, arch_to_json

SEARCH_SCHEMA = pa.schema(
    [
        pa.field("search", pa.string()),
        pa.field("searcher", pa.string()),
        pa.field("scheduler", pa.string()),
        pa.field("trial_id", pa.string()),
        pa.field("arch", pa.string()),  # canonical JSON
        pa.field("arch_desc", pa.string()),
        pa.field("accuracy", pa.float64()),  # on the val_samples seen
        pa.field("val_samples", pa.int64()),
        pa.field("complete", pa.bool_()),  # False: stopped early by the scheduler
        pa.field("mflops", pa.float64()),
        pa.field("params", pa.int64()),
        pa.field("latency_ms", pa.float64()),  # null unless the search uses a latency table
        pa.field("comm_ms", pa.float64()),  # null unless the search uses a fabric
        pa.field("checkpoint", pa.string()),
        pa.field("eval_s", pa.float64()),
        pa.field("recorded_at", pa.timestamp("ms", tz="UTC")),
    ]
)
"""One row per evaluated subnet of a search."""


def evaluation_row(
    search: str, searcher: str, scheduler: str, trial_id: str, arch: Arch, result: dict[str, Any],
    costs: dict[str, float], checkpoint: str,
) -> dict[str, Any]:
    return {
        "search": search, "searcher": searcher, "scheduler": scheduler, "trial_id": trial_id,
        "arch": arch_to_json(arch), "arch_desc": arch.describe(), "accuracy": float(result["accuracy"]),
        "val_samples": int(result["val_samples"]), "complete": bool(result["complete"]),
        "mflops": costs["mflops"], "params": int(costs["params"]), "latency_ms": costs.get("latency_ms"),
        "comm_ms": costs.get("comm_ms"), "checkpoint": checkpoint, "eval_s": float(result.get("eval_s", 0.0)),
        "recorded_at": int(time.time() * 1000),
    }
