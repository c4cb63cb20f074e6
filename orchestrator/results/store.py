"""Evaluated subnets, appended to a Parquet data set that a crash can never corrupt.

Each append writes one new Parquet file under a hidden temporary name and renames it into
the data-set folder: a reader (pandas, duckdb, pyarrow) sees either the whole file or none
of it, and files already written are never opened for writing again.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds

from nasfleet.orchestrator.evaluate.subnets import SubnetResult
from nasfleet.orchestrator.storage import join, resolve_storage, write_parquet_atomically
from nasfleet.supernet import Arch, arch_to_json

SCHEMA = pa.schema(
    [
        pa.field("run", pa.string()),
        pa.field("dataset", pa.string()),  # the data set the accuracies were measured on
        pa.field("arch", pa.string()),  # canonical JSON of the architecture
        pa.field("arch_desc", pa.string()),
        pa.field("role", pa.string()),
        pa.field("mflops", pa.float64()),
        pa.field("params", pa.int64()),
        pa.field("metrics", pa.string()),  # JSON object: accuracy by split, losses, ...
        pa.field("checkpoint", pa.string()),
        pa.field("wall_time_s", pa.float64()),
        pa.field("recorded_at", pa.timestamp("ms", tz="UTC")),
    ]
)


@dataclass(frozen=True)
class SubnetRecord:
    run: str
    dataset: str
    arch: Arch
    role: str
    mflops: float
    params: int
    metrics: dict[str, Any]
    checkpoint: str
    wall_time_s: float
    recorded_at_ms: int = field(default_factory=lambda: int(time.time() * 1000))

    @classmethod
    def from_result(
        cls, result: SubnetResult, run: str, dataset: str, checkpoint: str, **metrics: Any
    ) -> SubnetRecord:
        """The record of one evaluated subnet; ``metrics`` adds to its accuracy by split."""
        return cls(
            run=run,
            dataset=dataset,
            arch=result.arch,
            role=result.role,
            mflops=result.mflops,
            params=result.params,
            metrics={"accuracy": result.accuracy, **metrics},
            checkpoint=checkpoint,
            wall_time_s=result.wall_time_s,
        )

    def row(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "dataset": self.dataset,
            "arch": arch_to_json(self.arch),
            "arch_desc": self.arch.describe(),
            "role": self.role,
            "mflops": float(self.mflops),
            "params": int(self.params),
            "metrics": json.dumps(self.metrics, sort_keys=True),
            "checkpoint": self.checkpoint,
            "wall_time_s": float(self.wall_time_s),
            "recorded_at": self.recorded_at_ms,
        }


class ParquetLog:
    """A folder (local or any pyarrow filesystem URI) of Parquet files with one schema; append-only."""

    def __init__(self, location: str | Path, schema: pa.Schema) -> None:
        self.fs, self.path = resolve_storage(location)
        self.schema = schema

    def append_rows(self, rows: Sequence[dict[str, Any]]) -> str | None:
        """Write the rows as one new file; returns its path (None when there is nothing to write)."""
        if not rows:
            return None
        table = pa.Table.from_pylist(list(rows), schema=self.schema)
        path = join(self.path, f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet")
        write_parquet_atomically(table, self.fs, path)
        return path

    def read(self) -> pa.Table:
        """All rows so far, oldest file first (an empty table with the schema when there are none)."""
        info = self.fs.get_file_info(self.path)
        if info.type != pa.fs.FileType.Directory:
            return self.schema.empty_table()
        return ds.dataset(self.path, filesystem=self.fs, schema=self.schema, format="parquet").to_table()


class ResultsStore(ParquetLog):
    """Evaluated subnets of training runs (see :class:`SubnetRecord`)."""

    def __init__(self, location: str | Path) -> None:
        super().__init__(location, SCHEMA)

    def append(self, records: Sequence[SubnetRecord]) -> str | None:
        return self.append_rows([r.row() for r in records])
