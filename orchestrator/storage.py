"""Where runs write: a local folder or any pyarrow filesystem URI (s3://, gs://, hdfs://...).

Multi-node runs need storage every node can reach; a head-local path only works on one
machine. Everything that writes run output goes through these helpers so it works on both.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.train.checkpoints import CHECKPOINT_FILE

# A distributed run folder holds Ray Train checkpoints named by step; rank 0 puts a plain
# copy of the supernet weights and the job config in each, for evaluation and export.
CHECKPOINT_PREFIX = "checkpoint_"
SUPERNET_FILE = "supernet.pt"


def is_uri(location: str | Path) -> bool:
    return "://" in str(location)


def resolve_storage(location: str | Path) -> tuple[pafs.FileSystem, str]:
    """The filesystem and the path inside it; local paths are made absolute."""
    text = str(location)
    if not is_uri(text):
        return pafs.LocalFileSystem(), str(Path(text).expanduser().absolute())
    try:
        return pafs.FileSystem.from_uri(text)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError, OSError) as exc:
        raise NasfleetError(f"invalid storage URI {text!r}: {str(exc).splitlines()[0]}") from None


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def write_parquet_atomically(table: pa.Table, fs: pafs.FileSystem, path: str) -> None:
    """Write under a hidden temporary name, then rename: readers never see a partial file.

    Readers (pyarrow datasets, pandas, duckdb globs on ``*.parquet``) skip names that
    start with a dot, so a crash mid-write leaves only an ignored temporary file.
    """
    folder, name = path.rsplit("/", 1)
    fs.create_dir(folder, recursive=True)
    tmp = f"{folder}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with fs.open_output_stream(tmp) as out:
            pq.write_table(table, out)
        fs.move(tmp, path)
    except BaseException:
        try:
            fs.delete_file(tmp)
        except (FileNotFoundError, OSError):
            pass
        raise


def latest_checkpoint(folder: str) -> str | None:
    """The newest ``checkpoint_<step>`` folder in a run folder (local or URI), if any."""
    fs, path = resolve_storage(folder)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return None
    names = sorted(
        info.base_name
        for info in fs.get_file_info(pafs.FileSelector(path))
        if info.type == pafs.FileType.Directory and info.base_name.startswith(CHECKPOINT_PREFIX)
    )
    return join(folder, names[-1]) if names else None


def read_bytes(location: str) -> bytes:
    fs, path = resolve_storage(location)
    with fs.open_input_file(path) as f:
        return f.read()


def has_checkpoint(folder: str) -> bool:
    """Whether a run folder holds a single-process or a distributed checkpoint."""
    if not is_uri(folder) and (Path(folder) / CHECKPOINT_FILE).exists():
        return True
    return latest_checkpoint(folder) is not None
