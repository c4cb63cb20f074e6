"""`ray job submit` against a real Ray head on 127.0.0.1 with token authentication on."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml

from nasfleet.orchestrator.train import latest_checkpoint

from conftest import tiny_config

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_cluster(temp_dir: str, gcs_address: str) -> None:
    """Stop only this head (`ray stop` would stop every Ray cluster on the machine).

    Its processes name its temp dir, but the Ray client server names only the GCS address.
    """
    marks = (temp_dir, f"--address={gcs_address}")
    roots = [
        p for p in psutil.process_iter(["cmdline"])
        if any(mark in " ".join(p.info["cmdline"] or []) for mark in marks)
    ]
    victims = {p for root in roots for p in [root, *root.children(recursive=True)]}
    for p in victims:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(list(victims), timeout=3)  # Ray processes may ignore SIGTERM for long
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:  # it exited after the wait gave up on it
            pass


@pytest.fixture
def head_env(tmp_path: Path) -> dict[str, str]:
    """The README's loopback settings, and a token file of this cluster's own (not ~/.ray/auth_token)."""
    token = tmp_path / "auth_token"
    token.write_text(uuid.uuid4().hex + uuid.uuid4().hex)
    return {
        **os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "GLOO_SOCKET_IFNAME": "lo",
        "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
    }


@pytest.fixture
def ray_head(head_env: dict[str, str]) -> Iterator[str]:
    temp_dir = tempfile.mkdtemp(prefix="nfray-", dir="/tmp")
    gcs_port, dashboard_port, client_port, agent_port = (_free_port() for _ in range(4))
    # The job agent's HTTP port is 52365 unless told: a Ray cluster that another test worker
    # runs at the same time may hold it, and the agent then runs without HTTP ("No available
    # agent to submit job" for ever).
    subprocess.run(
        [
            RAY, "start", "--head", f"--port={gcs_port}", "--node-ip-address=127.0.0.1",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}", "--num-cpus=2",
            f"--ray-client-server-port={client_port}", f"--dashboard-agent-listen-port={agent_port}",
            f"--temp-dir={temp_dir}", "--disable-usage-stats",
        ],
        check=True,
        capture_output=True,
        timeout=180,
        env=head_env,
    )
    try:
        yield f"http://127.0.0.1:{dashboard_port}"
    finally:
        _stop_cluster(temp_dir, f"127.0.0.1:{gcs_port}")


def test_submitted_training_job_succeeds_and_writes_checkpoints_and_parquet(
    ray_head: str, head_env: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tmp_path / "unused" / "tiny-job").model_dump(mode="json")))
    storage = tmp_path / "storage"
    submission_id = f"nasfleet-test-{uuid.uuid4().hex[:8]}"
    env = head_env
    deadline = time.monotonic() + 120
    while True:
        submit = subprocess.run(
            [
                RAY, "job", "submit", "--address", ray_head, "--working-dir", str(REPO),
                "--submission-id", submission_id,
                "--runtime-env-json", json.dumps({"env_vars": {"OMP_NUM_THREADS": "1"}}),
                "--", sys.executable, "-m", "nasfleet.orchestrator.cli", "train", "--config", str(config),
                "--workers", "2", "--storage-path", str(storage),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        # A head that has just started may not have its job agent yet; Ray says to try again.
        if "No available agent to submit job" not in submit.stdout + submit.stderr or time.monotonic() > deadline:
            break
        time.sleep(2)
    status = subprocess.run(
        [RAY, "job", "status", "--address", ray_head, submission_id], env=env, capture_output=True, text=True
    )
    assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
    assert status.returncode == 0 and "succeeded" in (status.stdout + status.stderr).lower(), status.stdout
    run_folder = storage / "tiny-job"
    checkpoint = latest_checkpoint(str(run_folder))
    assert checkpoint is not None and checkpoint.endswith("checkpoint_00000012")
    assert (Path(checkpoint) / "supernet.pt").is_file()
    results = pd.read_parquet(run_folder / "results")
    assert sorted(results["role"]) == ["largest", "random-0", "smallest"]
    assert results["checkpoint"].str.contains("checkpoint_00000012").all()
    logs = subprocess.run(
        [RAY, "job", "logs", "--address", ray_head, submission_id], env=env, capture_output=True, text=True
    ).stdout
    progress = re.findall(r"step (\d+)/12 \(\d+%\).*samples/s  ETA", logs)  # rank 0's lines, through Ray's log
    assert progress == ["4", "8", "12"], logs[-3000:]


def test_submitting_without_the_token_is_refused(ray_head: str, head_env: dict[str, str]) -> None:
    env = {**head_env, "RAY_AUTH_TOKEN": "not-the-token"}
    result = subprocess.run(
        [RAY, "job", "list", "--address", ray_head], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
