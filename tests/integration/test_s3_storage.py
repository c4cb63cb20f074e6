"""nasfleet's storage helpers against a real S3-compatible server (moto, on 127.0.0.1)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from s3_server import S3Server, s3_server  # noqa: F401

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.results.store import ParquetLog
from nasfleet.orchestrator.storage import (
    copy_folder,
    delete_folder,
    download_folder,
    is_dir,
    is_file,
    join,
    list_dir,
    make_dirs,
    read_bytes,
    read_text,
    resolve_storage,
    write_parquet_atomically,
    write_text,
)
from nasfleet.orchestrator.train.checkpoints import (
    META_FILE,
    SUPERNET_FILE,
    checkpoint_name,
    checkpoint_step,
    completed_checkpoints,
    has_checkpoint,
    latest_checkpoint,
)

SCHEMA = pa.schema([pa.field("step", pa.int64()), pa.field("name", pa.string())])


def keys(fs: pafs.FileSystem, path: str) -> list[tuple[str, str]]:
    """Every entry under a folder: (path relative to it, type)."""
    return sorted(
        (info.path[len(path) + 1 :], info.type.name)
        for info in fs.get_file_info(pafs.FileSelector(path, recursive=True))
    )


def weights(step: int) -> bytes:
    return f"weights@{step}".encode() * 1000


def local_run(tmp_path: Path, steps: list[int], incomplete: list[int] = ()) -> Path:
    """A run folder as training leaves it; ``incomplete`` checkpoints lack meta.json (a crash mid-upload)."""
    local = tmp_path / "run"
    local.mkdir()
    for step in [*steps, *incomplete]:
        folder = local / checkpoint_name(step)
        folder.mkdir()
        (folder / SUPERNET_FILE).write_bytes(weights(step))
        if step not in incomplete:
            (folder / META_FILE).write_text("{}")
    # Ray Train's own files beside the checkpoints; one starts with "checkpoint_" but is a file.
    (local / "checkpoint_manager_snapshot.json").write_text("{}")
    (local / ".validate_storage_marker").write_bytes(b"")
    return local


def upload_run(s3: S3Server, tmp_path: Path, steps: list[int], incomplete: list[int] = ()) -> str:
    """Uploaded the way Ray Train persists checkpoints (``pyarrow.fs.copy_files``)."""
    run = s3.unique_uri("run")
    pafs.copy_files(str(local_run(tmp_path, steps, incomplete)), run)
    return run


def test_resolve_storage_plain_uri(s3_server: S3Server) -> None:
    fs, path = resolve_storage(s3_server.uri("some/run"))
    assert isinstance(fs, pafs.S3FileSystem)
    assert path == f"{s3_server.bucket}/some/run"
    assert fs.get_file_info(s3_server.bucket).type == pafs.FileType.Directory


def test_parquet_log_round_trip(s3_server: S3Server) -> None:
    location = s3_server.unique_uri("results")
    log = ParquetLog(location, SCHEMA)
    assert log.read().num_rows == 0  # nothing there yet: an empty table, not an error
    first = log.append_rows([{"step": 1, "name": "a"}, {"step": 2, "name": "b"}])
    second = log.append_rows([{"step": 3, "name": "c"}])
    assert log.append_rows([]) is None

    fs, folder = resolve_storage(location)
    names = [name for name, kind in keys(fs, folder) if kind == "File"]
    # Exactly the two parts: the hidden temporary files were moved away, not left behind.
    assert names == sorted([first.rsplit("/", 1)[1], second.rsplit("/", 1)[1]])
    table = ParquetLog(location, SCHEMA).read()  # a fresh reader, as another process would be
    assert sorted(table.column("step").to_pylist()) == [1, 2, 3]
    assert table.schema == SCHEMA


def test_write_parquet_atomically_replaces_and_leaves_no_temporary(s3_server: S3Server) -> None:
    fs, folder = resolve_storage(s3_server.unique_uri("report"))
    path = join(folder, "summary.parquet")
    write_parquet_atomically(pa.table({"x": [1]}), fs, path)
    write_parquet_atomically(pa.table({"x": [2, 3]}), fs, path)  # overwrites, like a rename
    assert keys(fs, folder) == [("summary.parquet", "File")]
    with fs.open_input_file(path) as f:
        assert pq.read_table(f).column("x").to_pylist() == [2, 3]


def test_latest_checkpoint_of_s3_run(s3_server: S3Server, tmp_path: Path) -> None:
    run = upload_run(s3_server, tmp_path, [4, 12, 8], incomplete=[16])
    newest = latest_checkpoint(run)
    assert newest == join(run, checkpoint_name(12))  # 16 has no meta.json: skipped
    assert checkpoint_step(newest) == 12
    assert [checkpoint_step(c) for c in completed_checkpoints(run)] == [4, 8, 12]
    assert has_checkpoint(run)
    assert read_bytes(join(newest, SUPERNET_FILE)) == weights(12)
    assert latest_checkpoint(run + "/") == newest  # a trailing slash, as users paste URIs


def test_latest_checkpoint_missing_or_empty(s3_server: S3Server, tmp_path: Path) -> None:
    assert latest_checkpoint(s3_server.unique_uri("never-written")) is None
    assert not has_checkpoint(s3_server.unique_uri("never-written"))
    run = upload_run(s3_server, tmp_path, [])  # Ray's files only, no checkpoint folder
    assert latest_checkpoint(run) is None
    assert not has_checkpoint(run)


def test_query_string_uri_works_through_join(s3_server: S3Server, tmp_path: Path) -> None:
    """A URI that carries its endpoint (``?endpoint_override=...``) survives nasfleet's path joins."""
    plain = upload_run(s3_server, tmp_path, [3, 5])
    run = plain.replace(s3_server.uri(), "", 1)
    run = s3_server.query_uri(run)
    newest = latest_checkpoint(run)
    assert newest is not None and newest.endswith("?" + run.split("?", 1)[1])
    assert checkpoint_step(newest) == 5
    assert read_bytes(join(newest, SUPERNET_FILE)) == weights(5)
    log = ParquetLog(join(run, "results"), SCHEMA)
    log.append_rows([{"step": 5, "name": "q"}])
    assert ParquetLog(join(plain, "results"), SCHEMA).read().column("name").to_pylist() == ["q"]
    # In a process with no endpoint variable at all, the URI alone finds the server.
    env = {k: v for k, v in s3_server.env.items() if not k.startswith("AWS_ENDPOINT_URL")}
    done = subprocess.run(
        [sys.executable, "-c", SUBPROCESS_READER, join(run, "results"), run],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["[5]", f"{checkpoint_name(5)} {len(weights(5))}"]


def test_file_and_folder_helpers(s3_server: S3Server, tmp_path: Path) -> None:
    base = s3_server.unique_uri("helpers")
    assert not is_dir(base) and list_dir(base) == []
    make_dirs(join(base, "empty"))
    assert is_dir(join(base, "empty"))
    write_text(join(base, "config.yaml"), "seed: 3\n")
    write_text(join(base, "config.yaml"), "seed: 4\n")  # replaced whole
    assert is_file(join(base, "config.yaml")) and read_text(join(base, "config.yaml")) == "seed: 4\n"
    with pytest.raises(NasfleetError, match="is a file"):
        make_dirs(join(base, "config.yaml"))

    copy_folder(local_run(tmp_path, [7]), join(base, "run"))
    assert latest_checkpoint(join(base, "run")) == join(base, "run", checkpoint_name(7))
    assert sorted(i.base_name for i in list_dir(base)) == ["config.yaml", "empty", "run"]
    download_folder(join(base, "run"), tmp_path / "back")
    assert (tmp_path / "back" / checkpoint_name(7) / SUPERNET_FILE).read_bytes() == weights(7)

    delete_folder(join(base, "run"))
    assert not is_dir(join(base, "run"))
    delete_folder(join(base, "run"))  # already gone: not an error


def test_read_missing_object_is_one_line_error(s3_server: S3Server) -> None:
    missing = s3_server.unique_uri("nothing.pt")
    with pytest.raises(NasfleetError, match="does not exist"):
        read_bytes(missing)


def test_s3_semantics_nasfleet_relies_on(s3_server: S3Server) -> None:
    """What pyarrow's S3 filesystem does (and does not) do, pinned so a change shows up here."""
    fs, base = resolve_storage(s3_server.unique_uri("semantics"))
    with fs.open_output_stream(join(base, "a/b/file.txt")) as out:  # no create_dir needed
        out.write(b"x")
    assert fs.get_file_info(join(base, "a")).type == pafs.FileType.Directory  # implied by the key
    fs.move(join(base, "a/b/file.txt"), join(base, "a/c/file.txt"))  # a file: copy + delete
    assert fs.get_file_info(join(base, "a/c/file.txt")).type == pafs.FileType.File
    # Deleting the last object of a "folder" leaves a marker, so the folder still exists.
    assert fs.get_file_info(join(base, "a/b")).type == pafs.FileType.Directory
    with pytest.raises(OSError, match="NO_SUCH_KEY"):  # directories cannot be moved on S3
        fs.move(join(base, "a/c"), join(base, "a/d"))
    fs.delete_dir(join(base, "a"))
    assert fs.get_file_info(join(base, "a")).type == pafs.FileType.NotFound


SUBPROCESS_READER = """
import sys
import pyarrow as pa
from nasfleet.orchestrator.results.store import ParquetLog
from nasfleet.orchestrator.storage import basename, join, read_bytes
from nasfleet.orchestrator.train.checkpoints import latest_checkpoint
log = ParquetLog(sys.argv[1], pa.schema([pa.field("step", pa.int64()), pa.field("name", pa.string())]))
print(sorted(log.read().column("step").to_pylist()))
newest = latest_checkpoint(sys.argv[2])
print(basename(newest), len(read_bytes(join(newest, "supernet.pt"))))
"""


def test_subprocess_reads_same_uris(s3_server: S3Server, tmp_path: Path) -> None:
    results = s3_server.unique_uri("results")
    ParquetLog(results, SCHEMA).append_rows([{"step": 7, "name": "x"}])
    ParquetLog(results, SCHEMA).append_rows([{"step": 9, "name": "y"}])
    run = upload_run(s3_server, tmp_path, [2, 6])
    done = subprocess.run(
        [sys.executable, "-c", SUBPROCESS_READER, results, run],
        env=s3_server.env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["[7, 9]", f"{checkpoint_name(6)} {len(weights(6))}"]


def test_subprocess_inheriting_env_writes_visible_here(s3_server: S3Server) -> None:
    """The other direction, with no ``env=``: the fixture set the variables in this process."""
    results = s3_server.unique_uri("results")
    writer = (
        "import sys, pyarrow as pa\n"
        "from nasfleet.orchestrator.results.store import ParquetLog\n"
        "ParquetLog(sys.argv[1], pa.schema([pa.field('step', pa.int64()), pa.field('name', pa.string())]))"
        ".append_rows([{'step': 5, 'name': 'child'}])\n"
    )
    done = subprocess.run([sys.executable, "-c", writer, results], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert ParquetLog(results, SCHEMA).read().column("name").to_pylist() == ["child"]
