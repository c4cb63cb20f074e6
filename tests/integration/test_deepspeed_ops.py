"""DeepSpeed on CPU starts without compiling its shm comm op, whatever the op's build lock says.

Two real ranks on gloo (a file store and ``lo``, so nothing listens beyond loopback) start from an
empty ``TORCH_EXTENSIONS_DIR``, some with torch's own build lock (a ``FileBaton``) held by a live
process or left behind by a killed one, in the folder DeepSpeed's JIT build would lock.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

OP = "deepspeed_shm_comm"
RANK_SCRIPT = """
import os, sys, time
import torch
torch.set_num_threads(1)
entry, prepare = sys.argv[1], sys.argv[2] == "1"
if prepare:
    from nasfleet.orchestrator.train.deepspeed_ops import prepare_deepspeed_cpu
    prepare_deepspeed_cpu()
import deepspeed
rank, init_method = int(os.environ["RANK"]), "file://" + os.environ["STORE"]
print("starting", flush=True)
start = time.monotonic()
if entry == "torch":  # as Ray Train does: torch.distributed first, DeepSpeed's backend inside initialize
    torch.distributed.init_process_group("gloo", init_method=init_method, rank=rank, world_size=2)
else:
    deepspeed.init_distributed("gloo", auto_mpi_discovery=False, init_method=init_method, rank=rank, world_size=2)
torch.manual_seed(0)
model = torch.nn.Linear(8, 2)
engine, _, _, _ = deepspeed.initialize(
    model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
    config={"train_micro_batch_size_per_gpu": 4, "zero_optimization": {"stage": 0}},
)
for _ in range(3):
    engine.backward(engine(torch.randn(4, 8)).pow(2).mean())
    engine.step()
shm_op = deepspeed.comm.comm.cdb.shm_comm_op is not None
print(f"done shm_op={shm_op} start_s={time.monotonic() - start:.2f}", flush=True)
torch.distributed.destroy_process_group()
# Interpreter teardown after DeepSpeed on gloo sometimes aborts ("terminate called without an active
# exception", SIGABRT) after everything above succeeded; what is tested here is the start, so leave now.
os._exit(0)
"""
HOLDER = (
    "import sys, time\n"
    "from torch.utils.file_baton import FileBaton\n"
    "assert FileBaton(sys.argv[1]).try_acquire()\n"
    "print('held', flush=True)\n"
    "time.sleep(600)\n"
)


def start_ranks(tmp_path: Path, extensions: Path, entry: str, prepare: bool) -> list[subprocess.Popen[str]]:
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    ranks = []
    for rank in range(2):
        env = {
            **os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
            "STORE": str(tmp_path / "store"), "TORCH_EXTENSIONS_DIR": str(extensions),
            "DS_ACCELERATOR": "cpu", "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1",
        }
        with open(tmp_path / f"rank{rank}.log", "w") as log:
            ranks.append(subprocess.Popen(
                [sys.executable, str(script), entry, "1" if prepare else "0"],
                stdout=log, stderr=subprocess.STDOUT, text=True, env=env,
            ))
    return ranks


def rank_logs(tmp_path: Path) -> list[str]:
    return [(tmp_path / f"rank{rank}.log").read_text() for rank in range(2)]


@pytest.fixture
def lock_holder(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """A live process holding torch's build lock for the op, as a concurrent JIT build would."""
    lock = tmp_path / "extensions" / OP / "lock"
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    yield lock, holder
    holder.kill()
    holder.wait()


def test_prepare_points_extensions_at_the_venv_unless_the_user_chose() -> None:
    check = (
        "import os, sys\n"
        "os.environ.pop('TORCH_EXTENSIONS_DIR', None)\n"
        "from nasfleet.orchestrator.train.deepspeed_ops import prepare_deepspeed_cpu\n"
        "prepare_deepspeed_cpu()\n"
        "assert os.environ['TORCH_EXTENSIONS_DIR'] == os.path.join(sys.prefix, 'torch_extensions')\n"
        "os.environ['TORCH_EXTENSIONS_DIR'] = '/elsewhere'\n"
        "prepare_deepspeed_cpu()\n"
        "assert os.environ['TORCH_EXTENSIONS_DIR'] == '/elsewhere'\n"
        "from deepspeed.comm.torch import build_shm_op\n"
        "assert build_shm_op() is None\n"
    )
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "DS_ACCELERATOR": "cpu"})
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize(
    ("lock", "entry"),
    [("none", "deepspeed"), ("none", "torch"), ("held", "deepspeed"), ("stale", "torch")],
)
def test_two_cpu_ranks_start_without_compiling_or_waiting_on_the_build_lock(
    lock: str, entry: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    extensions = tmp_path / "extensions"
    if lock != "none":
        _, holder = request.getfixturevalue("lock_holder")
        if lock == "stale":  # a rank killed mid-build: the lock file stays, nobody will remove it
            holder.send_signal(signal.SIGKILL)
            holder.wait()
    started = time.monotonic()
    ranks = start_ranks(tmp_path, extensions, entry, prepare=True)
    codes = [rank.wait(timeout=180) for rank in ranks]
    wall_s = time.monotonic() - started
    assert codes == [0, 0], rank_logs(tmp_path)
    for log in rank_logs(tmp_path):
        assert "done shm_op=False" in log, log
    built = sorted(p.name for p in extensions.rglob("*")) if extensions.exists() else []
    assert built == ([] if lock == "none" else [OP, "lock"])  # no build.ninja, no .o, no .so
    print(f"{lock}/{entry}: two ranks started and trained in {wall_s:.1f} s")


def test_without_prepare_deepspeed_waits_silently_on_a_held_lock(
    tmp_path: Path, lock_holder: tuple[Path, subprocess.Popen[str]]
) -> None:
    """The control: the lock above is the one DeepSpeed's build waits on, so the tests above mean something."""
    ranks = start_ranks(tmp_path, tmp_path / "extensions", "deepspeed", prepare=False)
    try:
        deadline = time.monotonic() + 120
        while not all("starting" in log for log in rank_logs(tmp_path)):
            assert time.monotonic() < deadline and all(r.poll() is None for r in ranks), rank_logs(tmp_path)
            time.sleep(0.2)
        time.sleep(10)  # a prepared start finishes in a few seconds from here
        assert all(rank.poll() is None for rank in ranks), rank_logs(tmp_path)
        assert not any("done" in log for log in rank_logs(tmp_path))
    finally:
        for rank in ranks:
            rank.kill()
            rank.wait()
