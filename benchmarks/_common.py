"""Helpers shared by the benchmark scripts: the jobs they train, and where results go and how they are written."""

from __future__ import annotations

import json
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from nasfleet.orchestrator.config import JobConfig, config_from_dict
from nasfleet.orchestrator.evaluate import TrainedSupernet, load_trained
from nasfleet.orchestrator.launch import train_job
from nasfleet.orchestrator.train import latest_checkpoint

RESULTS = Path(__file__).resolve().parent / "results"
LM_CONFIG = Path(__file__).resolve().parents[1] / "orchestrator/configs/lm.yaml"
WALL_TIME_FILE = "train_wall_s.txt"


def lm_job_data() -> dict[str, Any]:
    """lm.yaml as a dict, without its search section: the language-model job benchmarks start from."""
    data: dict[str, Any] = yaml.safe_load(LM_CONFIG.read_text())
    data.pop("search", None)
    return data


def warmup_share(recipe: dict[str, Any], steps: int) -> int:
    """The recipe's share of warm-up steps at ``steps`` steps, so a shorter run warms up for as long, relatively."""
    return max(1, round(recipe["warmup_steps"] * steps / recipe["steps"]))


def shortened_job(base: JobConfig, run_dir: Path, seed: int, steps: int, strategy: str, params: dict[str, Any],
                  **fields: Any) -> JobConfig:
    """One arm of a comparison: ``base`` run for ``steps`` steps with ``strategy``, on one thread.

    Warm-up is capped at a tenth of the steps, so a short arm spends most of its steps at the full rate; the one
    checkpoint is the last step. ``fields`` replace top-level sections of the job (a narrower ``space``, say).
    """
    data = base.model_dump(mode="json")
    data.update(run_dir=str(run_dir), seed=seed, strategy={"name": strategy, "params": params},
                checkpoint_every_steps=steps, log_every_steps=max(1, steps // 4), **fields)
    data["optim"] = {**data["optim"], "steps": steps, "warmup_steps": min(data["optim"]["warmup_steps"], steps // 10)}
    data["launch"] = {**data.get("launch", {}), "threads": 1}
    return config_from_dict(data)


def trained_run(config: JobConfig) -> tuple[TrainedSupernet, float]:
    """The finished run of ``config`` (trained now unless its folder holds it) and its training wall time.

    A finished run is reused with the wall time recorded when it trained. An interrupted run is deleted and trained
    again from the start, so every wall time comes from one go; a folder without a checkpoint is kept (it may hold
    the job's starting weights).
    """
    marker = Path(config.run_dir) / WALL_TIME_FILE
    if marker.is_file():
        run = load_trained(config.run_dir)
        if run.step == config.optim.steps:
            return run, float(marker.read_text())
    if latest_checkpoint(config.run_dir) is not None:
        shutil.rmtree(config.run_dir)
    started = time.perf_counter()
    train_job(config)
    wall_s = time.perf_counter() - started
    marker.write_text(f"{wall_s}\n")
    return load_trained(config.run_dir), wall_s


def machine() -> dict[str, Any]:
    import os

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def write_results(name: str, payload: dict[str, Any], markdown: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown)
    print(markdown)
