"""One writer per run folder: a kernel lock for local paths, a renewed lease for URIs.

Two ``nasfleet train`` processes on one run would interleave metrics, duplicate results and
overwrite each other's checkpoints, so every command that writes a run holds it first::

    with hold_run(config.run_dir, "nasfleet train"):
        ...

A second holder is refused with a one-line :class:`NasfleetError` naming the first.

* Local paths take ``flock`` on ``<run>/.nasfleet.lock``. The kernel drops the lock when the
  holder's process dies, however it dies, so a killed run never leaves a stale lock. The
  file is never deleted: unlinking a lock file races with a process that just opened it.
  Forked children (not exec'd ones) share the lock and keep it until they exit too.
* URIs (``s3://``, ``gs://``, ``file://``...) write a lease object ``<run>/.nasfleet.lease``
  that a heartbeat thread renews; a lease nobody renewed for ``ttl_s`` belongs to a dead
  holder and is taken over silently. See :func:`hold_run` for what a lease does not promise.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shlex
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.storage import storage_error

LOCK_FILE = ".nasfleet.lock"
LEASE_FILE = ".nasfleet.lease"
DEFAULT_TTL_S = 60.0
DEFAULT_RENEW_S = 10.0
DEFAULT_SETTLE_S = 1.0

_log = logging.getLogger(__name__)

# Runs this process holds: flock on a second descriptor of the same file would refuse us as
# if another process held it, and a lease would name our own pid; a clear error beats both.
_held_here: set[str] = set()
_held_here_guard = threading.Lock()


@dataclass
class RunHolder:
    """Who holds a run; written as JSON into the lock file or lease object."""

    location: str
    purpose: str
    holder_id: str
    pid: int
    host: str
    started_at: str
    command: str
    _lost: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)

    @property
    def lost(self) -> bool:
        """True once another writer replaced our lease (URIs only); output may then be mixed."""
        return self._lost.is_set()

    def to_json(self, **extra: str) -> bytes:
        info = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
        return json.dumps({**info, **extra}).encode()


@contextmanager
def hold_run(
    location: str,
    purpose: str,
    *,
    ttl_s: float = DEFAULT_TTL_S,
    renew_s: float = DEFAULT_RENEW_S,
    settle_s: float = DEFAULT_SETTLE_S,
) -> Iterator[RunHolder]:
    """Hold ``location`` for the duration of the block, or raise NasfleetError if another holds it.

    ``purpose`` names the holder in the refusal a second process sees ("nasfleet train").
    Creates the run folder if needed. Raises NasfleetError, too, when this process already
    holds the run and when the folder cannot be created or written.

    For URIs, ``ttl_s``, ``renew_s`` and ``settle_s`` tune the lease: it expires ``ttl_s``
    after its last renewal, is renewed every ``renew_s``, and after writing it we wait
    ``settle_s`` and read it back to catch a concurrent acquirer (the later write wins, the
    earlier writer is refused). Object stores without conditional writes cannot make this
    exact, so a lease does NOT guarantee mutual exclusion when:

    * two acquirers' read-then-write gaps overlap by more than ``settle_s`` (a stalled process);
    * the holder cannot renew for ``ttl_s`` (a long GC or network outage, a suspended VM): its
      lease is taken over while it still runs; its heartbeat notices, logs a warning and sets
      :attr:`RunHolder.lost`, but the holder is not stopped;
    * host clocks differ by a sizeable fraction of ``ttl_s`` (expiry compares wall clocks).

    A ``file://`` URI and the plain path of the same folder use different mechanisms and do
    not exclude each other.
    """
    if not 0 < renew_s < ttl_s:
        raise ValueError(f"need 0 < renew_s < ttl_s, got renew_s={renew_s}, ttl_s={ttl_s}")
    holder = RunHolder(
        location=location,
        purpose=purpose,
        holder_id=uuid.uuid4().hex,
        pid=os.getpid(),
        host=socket.gethostname(),
        started_at=_utc_now().isoformat(timespec="seconds"),
        command=shlex.join(sys.argv),
    )
    if "://" not in location:
        with _local_lock(location, holder):
            yield holder
    else:
        with _lease(location, holder, ttl_s=ttl_s, renew_s=renew_s, settle_s=settle_s):
            yield holder


def run_holder(location: str) -> str | None:
    """Who holds ``location`` now ("nasfleet train (pid … on host … since …)"), or None when nobody does.

    Local runs are tested with a non-blocking ``flock`` (a killed holder's stale file content is
    not mistaken for a holder); a URI's lease counts while it has not expired.
    """
    if "://" in location:
        from nasfleet.orchestrator.storage import join, resolve_storage

        fs, folder = resolve_storage(location)
        lease = _read_lease(fs, join(folder, LEASE_FILE))
        return None if lease is None or _expired(lease) else _describe(lease)
    lock_path = Path(location).expanduser() / LOCK_FILE
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return _describe(_read_local_holder(lock_path))
        return None
    finally:
        os.close(fd)  # closing drops the shared lock taken to test
    return None


@contextmanager
def _held_once(key: str, location: str) -> Iterator[None]:
    with _held_here_guard:
        if key in _held_here:
            raise NasfleetError(
                f"run {location} is already held by this process (pid {os.getpid()}); "
                "hold_run does not nest on one run"
            )
        _held_here.add(key)
    try:
        yield
    finally:
        with _held_here_guard:
            _held_here.discard(key)


@contextmanager
def _local_lock(location: str, holder: RunHolder) -> Iterator[None]:
    folder = Path(location).expanduser().absolute()
    lock_path = folder / LOCK_FILE
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise NasfleetError(f"cannot lock run {location}: {folder} is a file, not a folder") from None
    except OSError as exc:
        raise _cannot_lock(location, exc) from None
    with _held_once(f"local:{os.path.realpath(folder)}", location):
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _cannot_lock(location, exc) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise _in_use(location, _read_local_holder(lock_path)) from None
                raise _cannot_lock(location, exc) from None
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, holder.to_json(), 0)
            except OSError as exc:
                raise _cannot_lock(location, exc) from None
            try:
                yield
            finally:
                # An empty file tells a later reader nobody holds the run; close unlocks.
                try:
                    os.ftruncate(fd, 0)
                except OSError:
                    pass
        finally:
            os.close(fd)


def _read_local_holder(lock_path: Path) -> dict[str, Any] | None:
    # The holder writes its info right after locking; give that write a moment to land.
    for _ in range(10):
        try:
            return json.loads(lock_path.read_bytes())
        except (OSError, ValueError):
            time.sleep(0.05)
    return None


@contextmanager
def _lease(
    location: str, holder: RunHolder, *, ttl_s: float, renew_s: float, settle_s: float
) -> Iterator[None]:
    # Imported here: storage imports torch, and a local lock should not pay for it.
    from nasfleet.orchestrator.storage import join, resolve_storage

    fs, folder = resolve_storage(location)
    lease_path = join(folder, LEASE_FILE)
    with _held_once(f"{fs.type_name}:{folder}", location):
        try:
            fs.create_dir(folder, recursive=True)
            current = _read_lease(fs, lease_path)
            if current is not None and not _expired(current):
                raise _in_use(location, current)
            _write_lease(fs, lease_path, holder, ttl_s)
            time.sleep(settle_s)
            current = _read_lease(fs, lease_path)
        except OSError as exc:
            raise _cannot_lock(location, exc) from None
        if current is None or current.get("holder_id") != holder.holder_id:
            raise _in_use(location, current)
        stop = threading.Event()
        heartbeat = threading.Thread(
            target=_renew_lease,
            args=(fs, lease_path, holder, ttl_s, renew_s, stop),
            name=f"nasfleet-lease-{location}",
            daemon=True,
        )
        heartbeat.start()
        try:
            yield
        finally:
            stop.set()
            heartbeat.join()
            _release_lease(fs, lease_path, holder)


def _renew_lease(
    fs: pafs.FileSystem,
    lease_path: str,
    holder: RunHolder,
    ttl_s: float,
    renew_s: float,
    stop: threading.Event,
) -> None:
    while not stop.wait(renew_s):
        try:
            current = _read_lease(fs, lease_path)
            if current is None or current.get("holder_id") != holder.holder_id:
                holder._lost.set()
                _log.warning(
                    "lease on run %s was taken over by %s; this run's output may be mixed with it",
                    holder.location,
                    _describe(current),
                )
                return
            _write_lease(fs, lease_path, holder, ttl_s)
        except OSError as exc:
            # A transient storage error: keep trying; the lease lapses only after ttl_s.
            _log.warning("cannot renew lease on run %s: %s", holder.location, _first_line(exc))


def _release_lease(fs: pafs.FileSystem, lease_path: str, holder: RunHolder) -> None:
    # Never raise here: it would hide the block's own error, and the lease expires anyway.
    try:
        current = _read_lease(fs, lease_path)
        if current is not None and current.get("holder_id") == holder.holder_id:
            fs.delete_file(lease_path)
    except OSError as exc:
        _log.warning("cannot release lease on run %s: %s", holder.location, _first_line(exc))


def _read_lease(fs: pafs.FileSystem, lease_path: str) -> dict[str, Any] | None:
    """The lease's contents; None if there is none, or it is unreadable (treated as expired)."""
    try:
        with fs.open_input_stream(lease_path) as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None
    except ValueError:
        return None
    except OSError:
        # Not every pyarrow filesystem reports a missing object as FileNotFoundError.
        if fs.get_file_info(lease_path).type == pafs.FileType.NotFound:
            return None
        raise


def _write_lease(fs: pafs.FileSystem, lease_path: str, holder: RunHolder, ttl_s: float) -> None:
    # Written under a temporary name and moved, so a reader never sees half a lease
    # (a rename on local disks; object stores make the destination appear whole).
    expires_at = (_utc_now() + timedelta(seconds=ttl_s)).isoformat()
    folder, name = lease_path.rsplit("/", 1)
    tmp = f"{folder}/.{name}.{holder.holder_id[:8]}.tmp"
    with fs.open_output_stream(tmp) as out:
        out.write(holder.to_json(expires_at=expires_at))
    fs.move(tmp, lease_path)


def _expired(lease: dict[str, Any]) -> bool:
    try:
        return datetime.fromisoformat(lease["expires_at"]) <= _utc_now()
    except (KeyError, TypeError, ValueError):
        return True


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _describe(info: dict[str, Any] | None) -> str:
    if not info:
        return "another process"
    return (
        f"{info.get('purpose', 'another process')} (pid {info.get('pid', '?')} "
        f"on host {info.get('host', '?')} since {info.get('started_at', '?')})"
    )


def _in_use(location: str, info: dict[str, Any] | None) -> NasfleetError:
    return NasfleetError(
        f"run {location} is in use by {_describe(info)}; "
        "wait for it to finish or choose another run"
    )


def _cannot_lock(location: str, exc: OSError) -> NasfleetError:
    return storage_error("lock run", location, exc)


def _first_line(exc: OSError) -> str:
    # OSError.strerror is the bare reason ("Read-only file system"); pyarrow's errors carry
    # their reason only in the message, sometimes over several lines.
    text = exc.strerror or str(exc)
    return text.splitlines()[0] if text else type(exc).__name__
