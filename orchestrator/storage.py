"""Where runs live: a local folder or any pyarrow filesystem URI (s3://, gs://, hdfs://, file://).

Multi-node runs need storage every node can reach; a head-local path only works on one
machine. Everything that reads or writes run files goes through these helpers, so every
command works on both. Writes are atomic where the filesystem allows it (local: a hidden
temporary name, then a rename); object stores make a whole object visible at once anyway.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from contextlib import suppress
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from nasfleet.errors import NasfleetError


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
    """``base/part/...`` for paths and URIs alike (a URI's query string stays at the end)."""
    base = str(base)
    head, sep, query = base.partition("?") if is_uri(base) else (base, "", "")
    joined = "/".join([head.rstrip("/"), *parts])
    return f"{joined}{sep}{query}"


def basename(location: str) -> str:
    return str(location).partition("?")[0].rstrip("/").rsplit("/", 1)[-1]


def parent(location: str) -> str:
    head, sep, query = str(location).partition("?") if is_uri(location) else (str(location), "", "")
    return f"{head.rstrip('/').rsplit('/', 1)[0]}{sep}{query}"


def describe_os_error(exc: OSError) -> str:
    """A short reason for a user: ``No space left on device``, ``Read-only file system``..."""
    if exc.errno is not None:
        return os.strerror(exc.errno)
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def storage_error(action: str, location: str, exc: OSError) -> NasfleetError:
    reason = describe_os_error(exc)
    if exc.errno in (errno.EEXIST, errno.ENOTDIR) and not is_uri(location):
        # A folder on the way is a file: say which (the OS says "File exists" or "Not a directory").
        blocking = next((folder for folder in reversed(Path(location).parents) if folder.is_file()), None)
        if blocking is not None:
            reason = f"{blocking} is a file, not a folder"
    hint = ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "; free space and run again (with --resume for training)"
    elif exc.errno == errno.EROFS:
        hint = "; the run folder must be writable"
    return NasfleetError(f"cannot {action} {location}: {reason}{hint}")


def is_dir(location: str) -> bool:
    fs, path = resolve_storage(location)
    return fs.get_file_info(path).type == pafs.FileType.Directory


def is_file(location: str) -> bool:
    fs, path = resolve_storage(location)
    return fs.get_file_info(path).type == pafs.FileType.File


def list_dir(location: str) -> list[pafs.FileInfo]:
    """The entries directly inside a folder (none when it does not exist)."""
    fs, path = resolve_storage(location)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return []
    return fs.get_file_info(pafs.FileSelector(path))


def read_bytes(location: str) -> bytes:
    fs, path = resolve_storage(location)
    try:
        with fs.open_input_file(path) as f:
            return f.read()
    except FileNotFoundError:
        raise NasfleetError(f"{location} does not exist") from None
    except OSError as exc:
        raise storage_error("read", location, exc) from None


def read_text(location: str) -> str:
    data = read_bytes(location)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NasfleetError(f"{location} is not UTF-8 text (byte {exc.start})") from None


def write_bytes(location: str, data: bytes) -> None:
    """Write a whole file so that readers see the old content or the new, never a part."""
    fs, path = resolve_storage(location)
    folder, name = path.rsplit("/", 1)
    tmp = f"{folder}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        fs.create_dir(folder, recursive=True)
        if isinstance(fs, pafs.LocalFileSystem):
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        else:
            with fs.open_output_stream(path) as out:  # an object appears whole when the upload completes
                out.write(data)
    except OSError as exc:
        if isinstance(fs, pafs.LocalFileSystem):
            with suppress(OSError):  # e.g. the folder is a file: there is no temporary file to remove
                Path(tmp).unlink(missing_ok=True)
        raise storage_error("write", location, exc) from None


def write_text(location: str, text: str) -> None:
    write_bytes(location, text.encode("utf-8"))


def make_dirs(location: str) -> None:
    fs, path = resolve_storage(location)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        raise NasfleetError(f"{location} is a file, not a folder")
    try:
        fs.create_dir(path, recursive=True)
    except OSError as exc:
        raise storage_error("create", location, exc) from None


def copy_folder(source: Path, destination: str) -> None:
    """Copy a local folder's files to ``destination`` (a path or URI)."""
    fs, path = resolve_storage(destination)
    try:
        if isinstance(fs, pafs.LocalFileSystem):
            shutil.copytree(source, path, dirs_exist_ok=True)
        else:
            pafs.copy_files(str(source), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    except OSError as exc:
        raise storage_error("write", destination, exc) from None


def download_folder(source: str, destination: Path) -> None:
    """Copy a folder at ``source`` (path or URI) to a local folder."""
    fs, path = resolve_storage(source)
    try:
        pafs.copy_files(path, str(destination), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    except OSError as exc:
        raise storage_error("read", source, exc) from None


def delete_folder(location: str) -> None:
    fs, path = resolve_storage(location)
    try:
        fs.delete_dir(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise storage_error("delete", location, exc) from None


def write_parquet_atomically(table: pa.Table, fs: pafs.FileSystem, path: str) -> None:
    """Write under a hidden temporary name, then rename: readers never see a partial file.

    Readers (pyarrow datasets, pandas, duckdb globs on ``*.parquet``) skip names that
    start with a dot, so a crash mid-write leaves only an ignored temporary file.
    """
    folder, name = path.rsplit("/", 1)
    tmp = f"{folder}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        fs.create_dir(folder, recursive=True)
        with fs.open_output_stream(tmp) as out:
            pq.write_table(table, out)
        fs.move(tmp, path)
    except BaseException as exc:
        with suppress(OSError):
            fs.delete_file(tmp)
        if isinstance(exc, OSError):
            raise storage_error("write", path, exc) from None
        raise
