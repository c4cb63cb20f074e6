"""One writer per run: real processes contend for a run folder (local lock) and a file:// lease."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.results.run_lock import LEASE_FILE, LOCK_FILE, hold_run

# Holds argv[1] as argv[2] with the JSON keyword arguments argv[3], says "held", sleeps;
# a refusal prints the one-line error and exits 2, as the CLI does.
HOLDER_SCRIPT = """
import json, sys, time
from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.results.run_lock import hold_run
try:
    with hold_run(sys.argv[1], sys.argv[2], **json.loads(sys.argv[3])):
        print("held", flush=True)
        time.sleep(60)
except NasfleetError as exc:
    print(exc, file=sys.stderr)
    sys.exit(2)
"""

# Fast lease settings: expiry and takeover within a couple of seconds.
FAST_LEASE = {"ttl_s": 1.0, "renew_s": 0.2, "settle_s": 0.05}


def _start_holder(location: str, purpose: str, **kwargs: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER_SCRIPT, location, purpose, json.dumps(kwargs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "held":
        proc.kill()
        raise AssertionError(f"holder did not acquire: {proc.communicate()[1]}")
    return proc


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


@pytest.fixture
def holders() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            _kill(proc)


def test_second_process_is_refused_then_acquires_once_the_holder_is_killed(
    tmp_path: Path, holders: list[subprocess.Popen[str]]
) -> None:
    run = str(tmp_path / "run")
    first = _start_holder(run, "nasfleet train")
    holders.append(first)
    info = json.loads((tmp_path / "run" / LOCK_FILE).read_text())
    assert info["pid"] == first.pid and info["purpose"] == "nasfleet train"

    second = subprocess.run(
        [sys.executable, "-c", HOLDER_SCRIPT, run, "nasfleet search demo", "{}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 2
    message = second.stderr.strip()
    assert "\n" not in message
    assert message.startswith(f"run {run} is in use by nasfleet train (pid {first.pid} on host ")
    assert message.endswith("; wait for it to finish or choose another run")

    # SIGKILL runs no cleanup; the kernel still drops the lock with the process.
    _kill(first)
    third = _start_holder(run, "nasfleet train")  # a held lock would refuse it (exit 2), not make it wait
    holders.append(third)
    assert json.loads((tmp_path / "run" / LOCK_FILE).read_text())["pid"] == third.pid


def test_a_released_run_can_be_held_again_and_its_lock_file_is_emptied(tmp_path: Path) -> None:
    run = str(tmp_path / "new" / "run")
    with hold_run(run, "nasfleet train") as holder:
        assert holder.pid == os.getpid()
    assert (tmp_path / "new" / "run" / LOCK_FILE).read_text() == ""
    with hold_run(run, "nasfleet train"):
        pass


@pytest.mark.parametrize("scheme", ["", "file://"])
def test_holding_one_run_twice_in_one_process_is_an_error_not_a_deadlock(
    tmp_path: Path, scheme: str
) -> None:
    run = f"{scheme}{tmp_path / 'run'}"
    with hold_run(run, "nasfleet train", **FAST_LEASE):
        with pytest.raises(NasfleetError, match="already held by this process"):
            with hold_run(run, "nasfleet search demo", **FAST_LEASE):
                pass
    with hold_run(run, "nasfleet train", **FAST_LEASE):
        pass


@pytest.mark.parametrize("scheme", ["", "file://"])
def test_a_file_in_the_way_of_the_run_folder_is_a_one_line_error(tmp_path: Path, scheme: str) -> None:
    (tmp_path / "run").write_text("not a folder")
    run = f"{scheme}{tmp_path / 'run'}"
    with pytest.raises(NasfleetError) as caught:
        with hold_run(run, "nasfleet train", **FAST_LEASE):
            pass
    message = str(caught.value)
    assert message.startswith(f"cannot lock run {run}: ") and "\n" not in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod 0o555")
def test_a_read_only_run_folder_is_a_one_line_error(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    run.chmod(0o555)
    try:
        with pytest.raises(NasfleetError, match=f"^cannot lock run {run}: Permission denied$"):
            with hold_run(str(run), "nasfleet train"):
                pass
    finally:
        run.chmod(0o755)


def test_a_live_lease_refuses_and_outlives_its_ttl_and_a_dead_one_is_taken_over(
    tmp_path: Path, holders: list[subprocess.Popen[str]]
) -> None:
    run = f"file://{tmp_path / 'run'}"
    lease_file = tmp_path / "run" / LEASE_FILE
    first = _start_holder(run, "nasfleet train", **FAST_LEASE)
    holders.append(first)

    # Well past ttl_s: only the heartbeat keeps the lease alive.
    time.sleep(2.5)
    with pytest.raises(NasfleetError) as caught:
        with hold_run(run, "nasfleet search demo", **FAST_LEASE):
            pass
    message = str(caught.value)
    assert message.startswith(f"run {run} is in use by nasfleet train (pid {first.pid} on host ")
    assert "\n" not in message

    _kill(first)
    assert json.loads(lease_file.read_text())["pid"] == first.pid  # left behind by SIGKILL
    time.sleep(FAST_LEASE["ttl_s"] + 0.3)
    with hold_run(run, "nasfleet search demo", **FAST_LEASE) as holder:
        assert json.loads(lease_file.read_text())["holder_id"] == holder.holder_id
    assert not lease_file.exists()


def test_a_holder_whose_lease_is_overwritten_notices_and_leaves_the_new_lease(tmp_path: Path) -> None:
    run = f"file://{tmp_path / 'run'}"
    lease_file = tmp_path / "run" / LEASE_FILE
    intruder = {"holder_id": "intruder", "pid": 1, "expires_at": "9999-01-01T00:00:00+00:00"}
    with hold_run(run, "nasfleet train", **FAST_LEASE) as holder:
        lease_file.write_text(json.dumps(intruder))
        deadline = time.monotonic() + 5
        while not holder.lost and time.monotonic() < deadline:
            time.sleep(0.05)
        assert holder.lost
    assert json.loads(lease_file.read_text()) == intruder


def test_renewing_must_be_faster_than_expiry(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="renew_s < ttl_s"):
        with hold_run(f"file://{tmp_path}", "nasfleet train", ttl_s=1.0, renew_s=1.0):
            pass
