"""The Parquet results data set: append-only, crash-safe, readable by pandas."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.results.store import ResultsStore, SubnetRecord
from nasfleet.orchestrator.storage import resolve_storage
from nasfleet.supernet import MBConvSpace

SPACE = MBConvSpace()


def record(role: str, accuracy: float) -> SubnetRecord:
    arch = SPACE.smallest() if role == "smallest" else SPACE.largest()
    return SubnetRecord(
        run="r1", dataset="digits", arch=arch, role=role, mflops=SPACE.flops(arch) / 1e6, params=SPACE.params(arch),
        metrics={"accuracy": {"val": accuracy}}, checkpoint="checkpoint_00000010", wall_time_s=0.5,
    )


def test_appends_accumulate_and_pandas_reads_the_folder(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "results")
    assert store.read().num_rows == 0
    store.append([record("smallest", 0.9)])
    store.append([record("largest", 0.95), record("smallest", 0.91)])
    frame = pd.read_parquet(tmp_path / "results")
    assert sorted(frame["role"]) == ["largest", "smallest", "smallest"]
    assert store.read().num_rows == 3
    assert frame["params"].max() == SPACE.params(SPACE.largest())


def test_a_crash_mid_write_leaves_earlier_results_readable(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "results")
    store.append([record("smallest", 0.9)])
    # What a writer killed mid-file leaves behind: a hidden, truncated temporary file.
    (tmp_path / "results" / ".part-x.parquet.tmp").write_bytes(b"PAR1 truncated")
    assert pd.read_parquet(tmp_path / "results").shape[0] == 1
    assert store.read().num_rows == 1


def test_invalid_storage_uri_is_a_user_error() -> None:
    with pytest.raises(NasfleetError, match="invalid storage URI"):
        resolve_storage("nosuchscheme://bucket/path")


def test_results_written_before_the_dataset_column_still_read(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "results")
    store.append([record("smallest", 0.9)])
    old = store.read().drop_columns(["dataset"])
    pq.write_table(old, tmp_path / "results" / "part-0-old.parquet")
    table = store.read()
    assert sorted(table.column("dataset").to_pylist(), key=lambda v: v or "") == [None, "digits"]
