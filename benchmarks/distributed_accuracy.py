"""Does data-parallel training match single-process training, and does a killed worker cost accuracy?

Three runs of the demo job at the same number of subnet-samples seen:
  1. one process, S steps (batch 64, 4 subnets a step);
  2. 2 Ray Train + DeepSpeed workers, S/2 steps (each step: 2 ranks × 64 examples × 4 subnets);
  3. as 2, with one worker process SIGKILLed after the first registered checkpoint.
Reports validation and test accuracy of the smallest, largest and 3 random subnets of each.
Targets: |2 − 1| ≤ 1 point and |3 − 2| ≤ 1 point.

    python benchmarks/distributed_accuracy.py [--steps 1200] [--workdir runs/bench-distributed]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import threading
import time
from pathlib import Path

import psutil
import ray

from _common import write_results
from nasfleet.orchestrator.cli.app import demo_config
from nasfleet.orchestrator.config import TrainConfig, config_from_dict
from nasfleet.orchestrator.launch.ray_train import DistributedOptions, train_distributed
from nasfleet.orchestrator.evaluate.subnets import evaluate_standard_subnets, load_trained
from nasfleet.orchestrator.train.trainer import train


def accuracies(run_dir: Path) -> dict[str, float]:
    results = evaluate_standard_subnets(load_trained(run_dir), ("val", "test"), random_subnets=3, seed=0)
    row = {}
    for r in results:
        for split, acc in r.accuracy.items():
            row[f"{r.role}/{split}"] = acc
    for split in ("val", "test"):
        row[f"mean/{split}"] = sum(r.accuracy[split] for r in results) / len(results)
    return row


def configured(base: TrainConfig, run_dir: Path, steps: int) -> TrainConfig:
    return config_from_dict(
        {**base.model_dump(), "run_dir": run_dir, "optim": {**base.optim.model_dump(), "steps": steps},
         "checkpoint_every_steps": max(1, steps // 6)}
    )


def kill_one_worker_after_first_checkpoint(run_dir: Path, done: threading.Event) -> float | None:
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    while not done.is_set():
        try:
            if json.loads(snapshot.read_text()).get("latest_checkpoint_result"):
                break
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        time.sleep(0.2)
    raylet = ray._private.worker._global_node.all_processes["raylet"][0].process.pid
    workers = [p for p in psutil.Process(raylet).children(recursive=True) if "RayTrainWorker" in p.name()]
    if done.is_set() or not workers:
        return None
    workers[-1].send_signal(signal.SIGKILL)
    return time.monotonic()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="single-process steps (default: the demo's)")
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-distributed"))
    args = parser.parse_args()
    base = demo_config()
    steps = args.steps or base.optim.steps
    shutil.rmtree(args.workdir, ignore_errors=True)
    rows = []

    started = time.perf_counter()
    single = configured(base, args.workdir / "single", steps)
    train(single, show_progress=False)
    rows.append({"run": "1 process", "steps": steps, "wall_s": time.perf_counter() - started, **accuracies(single.run_dir)})

    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", configure_logging=False)
    options = DistributedOptions(workers=2, max_failures=3)
    for name, kill in (("2 workers", False), ("2 workers, one killed", True)):
        config = configured(base, args.workdir / name.replace(" ", "-").replace(",", ""), steps // 2)
        done = threading.Event()
        killer_result: dict[str, float | None] = {}
        killer = threading.Thread(
            target=lambda: killer_result.update(at=kill_one_worker_after_first_checkpoint(config.run_dir, done))
        )
        if kill:
            killer.start()
        started = time.perf_counter()
        train_distributed(config, options)
        done.set()
        if kill:
            killer.join()
        row = {"run": name, "steps": steps // 2, "wall_s": time.perf_counter() - started, **accuracies(config.run_dir)}
        if kill:
            row["killed"] = killer_result.get("at") is not None
        rows.append(row)
    ray.shutdown()

    def pts(a: dict, b: dict, key: str) -> float:
        return 100 * (a[key] - b[key])

    keys = ("smallest/test", "largest/test", "mean/val", "mean/test")
    lines = [
        f"# Data-parallel vs single-process accuracy, demo job, {steps * 4 * 64:,} subnet-samples each",
        "",
        "| run | optimizer steps | smallest test | largest test | mean val | mean test | wall s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['run']} | {r['steps']} | " + " | ".join(f"{100 * r[k]:.2f}%" for k in keys) + f" | {r['wall_s']:.0f} |"
        for r in rows
    ]
    lines += [
        "",
        "Differences in points (target: within 1):",
        "",
        "| comparison | " + " | ".join(keys) + " |",
        "|---|" + "---:|" * len(keys),
        "| 2 workers − 1 process | " + " | ".join(f"{pts(rows[1], rows[0], k):+.2f}" for k in keys) + " |",
        "| killed − uninterrupted (2 workers) | " + " | ".join(f"{pts(rows[2], rows[1], k):+.2f}" for k in keys) + " |",
        "",
        "Each split has 270 images: one image is 0.37 points. Machine: 2 CPU cores, gloo, 1 torch thread per worker.",
    ]
    write_results("distributed_accuracy", {"rows": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
