"""Files nasfleet reads load without running code; planted and damaged files fail in one line.

The DeepSpeed tests run a real engine (world size 1, gloo, CPU) in a child process per ZeRO
stage, so this pytest process never holds a process group. Run directly, this file is that
child: ``python test_safe_load.py STAGE FOLDER`` prints a JSON report.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from nasfleet.errors import NasfleetError
from nasfleet.safe_load import DEEPSPEED_SAFE_GLOBALS, safe_torch_load, use_safe_loading

REPO = Path(__file__).resolve().parents[2]
MARKER = "MARKER"
CONTROL_MARKER = "CONTROL"
STAGES = (0, 1, 2)


class Payload:
    """What an attacker plants: unpickling it with weights_only=False runs a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def plant(path: Path, marker: Path) -> None:
    torch.save({"module": Payload(marker)}, path)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


def assert_one_line(message: str, *fragments: str) -> None:
    assert "\n" not in message and "Traceback" not in message, message
    assert "weights_only=False" not in message  # torch's advice to retry unsafely never reaches the user
    for fragment in fragments:
        assert fragment in message, message


# -- safe_torch_load ---------------------------------------------------------------------------


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "good.pt"
    torch.save({"weights": torch.arange(4.0), "step": 3, "rng": {"state": 2**70, "inc": 5}}, path)
    return path


def test_loads_a_file_nasfleet_wrote_from_a_path_and_from_bytes(good: Path) -> None:
    for source in (good, str(good), good.read_bytes()):
        state = safe_torch_load(source, "checkpoint file")
        assert torch.equal(state["weights"], torch.arange(4.0)) and state["step"] == 3
        assert state["rng"]["state"] == 2**70


@pytest.mark.parametrize("as_bytes", [False, True])
def test_a_planted_payload_never_runs(tmp_path: Path, as_bytes: bool) -> None:
    marker, path = tmp_path / MARKER, tmp_path / "checkpoint.pt"
    plant(path, marker)
    source: Path | bytes = path.read_bytes() if as_bytes else path
    what = "checkpoint file s3://bucket/run/checkpoint.pt" if as_bytes else "checkpoint file"
    with pytest.raises(NasfleetError) as caught:
        safe_torch_load(source, what)
    assert_one_line(str(caught.value), "checkpoint.pt", "corrupted or not a file nasfleet wrote", "system")
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # an attacker picks any protocol
def test_a_plain_pickle_payload_never_runs(tmp_path: Path) -> None:
    import pickle

    marker, path = tmp_path / MARKER, tmp_path / "checkpoint.pt"
    path.write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(NasfleetError) as caught:
        safe_torch_load(path, "checkpoint file")
    assert_one_line(str(caught.value), str(path))
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "empty", "text", "legacy-truncated"])
def test_a_damaged_file_is_named_in_one_line(tmp_path: Path, good: Path, damage: str) -> None:
    path = tmp_path / f"{damage}.pt"
    if damage == "truncated":
        path.write_bytes(good.read_bytes()[:100])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "text":
        path.write_text("step: 3\n")
    else:
        torch.save({"weights": torch.arange(4.0)}, path, _use_new_zipfile_serialization=False)
        truncate(path)
    with pytest.raises(NasfleetError) as caught:
        safe_torch_load(path, "checkpoint file")
    assert_one_line(str(caught.value), f"checkpoint file {path} is corrupted")


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(NasfleetError, match="does not exist"):
        safe_torch_load(tmp_path / "nothing.pt", "checkpoint file")


def test_nasfleet_never_calls_torch_load_unsafely() -> None:
    """Every ``torch.load`` in nasfleet's sources passes ``weights_only=True`` literally."""
    unsafe = []
    for folder in ("nasfleet", "supernet", "strategies", "orchestrator", "comm", "benchmarks"):
        for file in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(file.read_text(), str(file))):
                if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                    flags = {k.arg: k.value for k in node.keywords}
                    only = flags.get("weights_only")
                    if not (isinstance(only, ast.Constant) and only.value is True):
                        unsafe.append(f"{file.relative_to(REPO)}:{node.lineno}")
    assert not unsafe, f"torch.load without weights_only=True: {unsafe}"


def test_allow_listed_deepspeed_types_unpickle_without_running_code() -> None:
    """Guard the allow-list against a DeepSpeed upgrade that gives one of them unpickling hooks.

    The restricted unpickler calls ``cls.__new__``, then ``__setstate__`` if there is one
    (else a ``__dict__`` update); attribute hooks would run on every later access.
    """
    pytest.importorskip("deepspeed")
    from enum import Enum

    for module, name in DEEPSPEED_SAFE_GLOBALS:
        cls = getattr(__import__(module, fromlist=[name]), name)
        assert cls.__module__ == module
        assert cls.__new__ in (object.__new__, Enum.__new__), name
        for hook in ("__setstate__", "__getattr__", "__getattribute__", "__setattr__", "__delattr__"):
            owner = next((k for k in cls.__mro__ if hook in k.__dict__), None)
            assert owner in (None, object, int), (name, hook, owner)


# -- DeepSpeed engine checkpoints (child process) -----------------------------------------------


def _engine(stage: int, seed: int) -> Any:
    import deepspeed

    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    # nasfleet's recipe: Nesterov SGD with weight decay, a LambdaLR warm-up
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 4))
    config = {
        "train_micro_batch_size_per_gpu": 4,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": stage},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
    }
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config)
    return engine


def _snapshot(engine: Any) -> dict[str, Any]:
    """Weights, the torch optimizer's state (momentum buffers) and ZeRO's fp32 partitions."""
    optimizer = engine.optimizer
    inner = getattr(optimizer, "optimizer", optimizer)  # ZeRO wraps the torch optimizer
    fp32 = getattr(optimizer, "single_partition_of_fp32_groups", [])
    return {
        "module": {k: v.detach().clone() for k, v in engine.module.state_dict().items()},
        "state": {k: {n: t.clone() for n, t in s.items()} for k, s in inner.state_dict()["state"].items()},
        "fp32": [t.detach().clone() for t in fp32],
        "lr": engine.lr_scheduler.get_last_lr(),
        "global_steps": engine.global_steps,
    }


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return isinstance(b, list | tuple) and len(a) == len(b) and all(map(_equal, a, b))
    return bool(a == b)


def _try_load(engine: Any, folder: Path) -> str:
    try:
        engine.load_checkpoint(str(folder), tag="engine")
    except NasfleetError as exc:
        return f"NasfleetError: {exc}"
    except Exception as exc:  # reported, so the test shows what escaped instead
        return f"{type(exc).__name__}: {exc}"
    return "loaded"


def _child(stage: int, root: Path) -> dict[str, Any]:
    """Train, save, reload safely; then load planted and truncated copies of each file."""
    import time

    import deepspeed

    from nasfleet.orchestrator.train.deepspeed_ops import prepare_deepspeed_cpu

    prepare_deepspeed_cpu()  # as every nasfleet process does: no JIT build of an op training never uses
    torch.set_num_threads(1)
    start = time.monotonic()
    deepspeed.init_distributed(dist_backend="gloo")
    engine = _engine(stage, seed=0)
    for step in range(2):
        batch = torch.randn(4, 6, generator=torch.Generator().manual_seed(step))
        engine.backward(engine(batch).pow(2).mean())
        engine.step()
    saved = root / "saved"
    engine.save_checkpoint(str(saved), tag="engine")
    expected = _snapshot(engine)

    fresh = _engine(stage, seed=1)
    differed_before = not _equal(_snapshot(fresh)["module"], expected["module"])
    use_safe_loading(fresh)
    outcome = _try_load(fresh, saved)
    report: dict[str, Any] = {
        "files": sorted(p.name for p in (saved / "engine").iterdir()),
        "round_trip": outcome,
        "differed_before": differed_before,
        "restored": outcome == "loaded" and _equal(_snapshot(fresh), expected),
        "cases": {},
    }
    for name in report["files"]:
        for damage in ("planted", "truncated"):
            case = root / f"{damage}-{name}"
            shutil.copytree(saved, case)
            target = case / "engine" / name
            if damage == "planted":
                plant(target, root / MARKER)
            else:
                truncate(target)
            report["cases"][f"{damage} {name}"] = {"path": str(target), "outcome": _try_load(fresh, case)}
        # control: DeepSpeed's own loader does read this file and runs the planted payload
        control = root / f"control-{name}"
        shutil.copytree(saved, control)
        plant(control / "engine" / name, root / f"{CONTROL_MARKER}-{name}")
        _try_load(_engine(stage, seed=2), control)
        report["control_ran"] = report.get("control_ran", []) + [(root / f"{CONTROL_MARKER}-{name}").exists()]
    report["seconds"] = round(time.monotonic() - start, 1)
    return report


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module", params=STAGES, ids=[f"zero{s}" for s in STAGES])
def deepspeed_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    pytest.importorskip("deepspeed")
    root = tmp_path_factory.mktemp(f"zero{request.param}")
    env = {
        **os.environ,
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "DS_ACCELERATOR": "cpu",
        "OMP_NUM_THREADS": "1",
    }
    # the first run on a machine JIT-compiles DeepSpeed's CPU shm op (about a minute, once)
    child = subprocess.run(
        [sys.executable, __file__, str(request.param), str(root)],
        capture_output=True, text=True, env=env, cwd=root, timeout=900,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr[-4000:]
    report: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])
    report["stage"], report["marker"] = request.param, root / MARKER
    return report


@pytest.mark.slow
def test_engine_resumes_weights_and_optimizer_state_through_the_safe_loader(deepspeed_run: dict[str, Any]) -> None:
    assert deepspeed_run["round_trip"] == "loaded"
    assert deepspeed_run["differed_before"]  # the fresh engine started from other weights
    assert deepspeed_run["restored"]
    if deepspeed_run["stage"] > 0:
        assert any("zero_pp_rank_0" in name for name in deepspeed_run["files"])


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["planted", "truncated"])
@pytest.mark.parametrize("kind", ["model_states", "optim_states"])
def test_engine_refuses_a_planted_or_truncated_file_in_one_line(
    deepspeed_run: dict[str, Any], damage: str, kind: str
) -> None:
    cases = {k: v for k, v in deepspeed_run["cases"].items() if k.startswith(damage) and kind in k}
    if not cases:
        pytest.skip(f"ZeRO stage {deepspeed_run['stage']} writes no {kind} file")
    for case in cases.values():
        outcome: str = case["outcome"]
        assert outcome.startswith("NasfleetError: "), outcome
        assert_one_line(outcome, f"DeepSpeed checkpoint file {case['path']} is corrupted")
        if damage == "planted":
            assert "system" in outcome
    assert not deepspeed_run["marker"].exists()
    assert all(deepspeed_run["control_ran"])  # the same file does run code without the safe loader


def test_universal_checkpoint_loading_is_refused() -> None:
    """DeepSpeed's universal-checkpoint loader calls torch.load itself, past the checkpoint engine."""
    engine = SimpleNamespace(load_universal_checkpoint=lambda: True, checkpoint_engine=SimpleNamespace())
    with pytest.raises(NasfleetError, match="load_universal"):
        use_safe_loading(engine)


if __name__ == "__main__":
    print(json.dumps(_child(int(sys.argv[1]), Path(sys.argv[2]))))
