"""Nothing a local Ray cluster started by nasfleet (or by the README's `ray start`) listens beyond loopback.

Each test starts real processes and lists the listening sockets of the whole process tree
while everything is up: the driver, GCS, raylet, agents, dashboard, Ray Train's controller
and workers, the gloo process group between the workers, and a search's Tune trials.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import psutil
import pytest

from nasfleet.orchestrator.launch.ray_cluster import ListeningSocket, listening_sockets, loopback_cluster

pytestmark = pytest.mark.slow

PYTHON = sys.executable
RAY = str(Path(sys.executable).with_name("ray"))
STARTUP_S = 90.0
T = TypeVar("T")

JOIN_DRIVER = textwrap.dedent(
    """
    import sys
    import ray

    ray.init(address=sys.argv[1], configure_logging=False)
    print("JOINED", ray.get(ray.remote(lambda: ray.util.get_node_ip_address()).remote()), flush=True)
    """
)


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without what would join another cluster or pre-set the loopback settings."""
    dropped = {"RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", *loopback_cluster().ray_env}
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    return env | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"} | extra


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def external_addresses() -> list[str]:
    """This machine's non-loopback IPv4 addresses (a GCS reachable there is what the audit found)."""
    return [
        a.address
        for addresses in psutil.net_if_addrs().values()
        for a in addresses
        if a.family == socket.AF_INET and not a.address.startswith("127.")
    ]


class Output:
    """A process's output, read on a thread so that it never blocks on a full pipe."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert process.stdout is not None
        self._stdout = process.stdout
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self._stdout:
            self.lines.append(line)

    def first(self, prefix: str) -> str | None:
        return next((line for line in self.lines if line.startswith(prefix)), None)

    def tail(self) -> str:
        return "".join(self.lines[-40:])


def wait_for(
    condition: Callable[[], T], process: subprocess.Popen[str], output: Output, what: str, timeout_s: float = STARTUP_S
) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := condition():
            return value
        if process.poll() is not None:
            pytest.fail(f"exited ({process.returncode}) before {what}:\n{output.tail()}")
        time.sleep(0.2)
    pytest.fail(f"no {what} within {timeout_s:.0f} s:\n{output.tail()}")


def processes(pids: list[int]) -> list[psutil.Process]:
    """The live ones of these processes and their descendants, as psutil handles (safe from pid reuse)."""
    found: list[psutil.Process] = []
    for pid in pids:
        try:
            root = psutil.Process(pid)
            found += [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    return found


def end_tree(started: list[psutil.Process]) -> None:
    """Kill what this test started, by process (never `ray stop`: it kills every Ray on the machine)."""
    tree = started + [child for p in started if p.is_running() for child in processes([p.pid])]
    for process in tree:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(tree, timeout=10)


def assert_loopback_only(sockets: list[ListeningSocket], must_include: list[str]) -> None:
    exposed = [s for s in sockets if not s.on_loopback]
    assert not exposed, "listening beyond loopback:\n" + "\n".join(map(str, exposed))
    names = {s.process for s in sockets}
    for name in must_include:  # the scan saw the processes it is meant to check ("a|b": either title)
        assert any(alias in n for alias in name.split("|") for n in names), (
            f"no listening socket of {name} among {sorted(names)}"
        )


def assert_unreachable_outside(port: int) -> None:
    for address in external_addresses():
        with pytest.raises(OSError):
            socket.create_connection((address, port), timeout=2).close()


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """Ray's socket paths live under its temp dir and must stay under ~107 characters."""
    folder = Path(tempfile.mkdtemp(prefix="nfloop", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_ray_start_head_with_the_readme_flags_listens_on_loopback_only(short_tmp: Path) -> None:
    port = free_port()
    token = short_tmp / "auth_token"
    token.write_text(secrets.token_hex(32))
    # The head turns token auth on when it finds a token; a driver given an address must be told.
    env = clean_env(**loopback_cluster().ray_env, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    head = subprocess.Popen(
        [
            RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
            f"--port={port}", f"--ray-client-server-port={free_port()}", f"--dashboard-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}", "--num-cpus=1", f"--temp-dir={short_tmp}",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output, started = Output(head), processes([head.pid])
    try:
        wait_for(lambda: any("Ray runtime started" in line for line in output.lines), head, output, "the head")
        started = processes([head.pid])
        joined = subprocess.run(
            [PYTHON, "-c", JOIN_DRIVER, f"127.0.0.1:{port}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=STARTUP_S,
        )
        assert "JOINED 127.0.0.1" in joined.stdout, joined.stdout + joined.stderr
        sockets = listening_sockets([head.pid])
        assert_loopback_only(sockets, ["gcs_server", "raylet", "DashboardAgent", "RuntimeEnvAgent"])
        assert port in {s.port for s in sockets if s.process == "gcs_server"}
        assert_unreachable_outside(port)
    finally:
        end_tree(started)
        head.wait(timeout=10)


def _sockets_while_running(
    args: list[str], cwd: Path, once_gcs_listens: Callable[[int], None], timeout_s: float = 400
) -> tuple[int, list[ListeningSocket], str]:
    """Run a ``nasfleet`` command; list the listening sockets of its whole process tree until it exits.

    ``once_gcs_listens`` is called with the GCS port while the cluster is up.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "nasfleet.orchestrator.cli", *args], cwd=cwd, env=clean_env(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output = Output(process)
    seen: dict[tuple[str, str, int, int], ListeningSocket] = {}
    checked_gcs = False
    deadline = time.monotonic() + timeout_s
    try:
        while process.poll() is None and time.monotonic() < deadline:
            for found in listening_sockets([process.pid]):
                seen[(found.protocol, found.address, found.port, found.pid)] = found
                if found.process == "gcs_server" and not checked_gcs:
                    once_gcs_listens(found.port)
                    checked_gcs = True
            time.sleep(0.3)
    finally:
        if process.poll() is None:
            end_tree(processes([process.pid]))
    process.wait(timeout=30)
    return process.returncode, list(seen.values()), output.tail()


def test_the_demo_on_two_workers_and_its_search_listen_on_loopback_only(short_tmp: Path) -> None:
    """`nasfleet demo --workers 2`: a local cluster, Ray Train workers with gloo between them, then Tune trials."""
    args = ["demo", "--data", "digits", "--run-dir", str(short_tmp / "demo"), "--steps", "20", "--workers", "2",
            "--search", "4"]
    code, sockets, tail = _sockets_while_running(args, short_tmp, assert_unreachable_outside)
    assert code == 0, tail
    assert "Pareto front — 4 subnets evaluated" in tail
    assert (short_tmp / "demo" / "search" / "demo" / "pareto.json").is_file()
    again = subprocess.run([PYTHON, "-m", "nasfleet.orchestrator.cli", *args], capture_output=True, text=True,
                           timeout=STARTUP_S, env=clean_env())
    assert again.returncode == 0, again.stderr[-2000:]
    assert "evaluated now: 0 " in " ".join(again.stdout.split())  # rerun: resumed, nothing evaluated twice
    # Tune's trial actors are titled `ResourceTrainable`, or after the method they run
    # (`SubnetTrial...`, cut to 15 characters) when the scan catches one at work; the front's test
    # evaluation runs as `SupernetReplica`.
    processes_seen = ["gcs_server", "raylet", "DashboardAgent", "RayTrainWorker", "Trainable|SubnetTria",
                      "SupernetReplica"]
    assert_loopback_only(sockets, processes_seen)
