"""Does data-parallel training match single-process training, and does a killed worker cost accuracy?

Three runs of the demo job at the same number of subnet-samples seen:
  1. one process, S steps (batch 64, 4 subnets a step);
  2. 2 Ray Train + DeepSpeed workers, S/2 steps (each step: 2 ranks × 64 examples × 4 subnets);
  3. as 2, with one worker process SIGKILLed after the first registered checkpoint (the row
     reports the step the replacement workers resumed from).
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
from nasfleet.orchestrator.cli.common import demo_config
from nasfleet.orchestrator.config import JobConfig, config_from_dict
from nasfleet.orchestrator.evaluate import evaluate_standard_subnets, load_trained
from nasfleet.orchestrator.launch import connect_ray, train_job
from nasfleet.orchestrator.train import latest_checkpoint, read_rank_state

RAY_WORKERS = {"kind": "ray", "workers": 2, "max_failures": 3}


def accuracies(run_dir: str) -> dict[str, float]:
    results = evaluate_standard_subnets(load_trained(run_dir), ("val", "test"), random_subnets=3, seed=0)
    row = {}
    for r in results:
        for split, acc in r.accuracy.items():
            row[f"{r.role}/{split}"] = acc
    for split in ("val", "test"):
        row[f"mean/{split}"] = sum(r.accuracy[split] for r in results) / len(results)
    return row


def configured(base: JobConfig, run_dir: Path, steps: int, launch: dict[str, object] | None = None) -> JobConfig:
    return config_from_dict(
        {**base.model_dump(), "run_dir": str(run_dir), "optim": {**base.optim.model_dump(), "steps": steps},
         "launch": {**base.launch.model_dump(), **(launch or {})}, "checkpoint_every_steps": max(1, steps // 6)}
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
    # This process started the local cluster, so Ray's raylet and its workers descend from it.
    workers = [p for p in psutil.Process().children(recursive=True) if "RayTrainWorker" in p.name()]
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
    train_job(single)
    rows.append({"run": "1 process", "steps": steps, "wall_s": time.perf_counter() - started, **accuracies(single.run_dir)})

    connect_ray(None)  # one local cluster for both distributed runs
    for name, kill in (("2 workers", False), ("2 workers, one killed", True)):
        config = configured(base, args.workdir / name.replace(" ", "-").replace(",", ""), steps // 2, RAY_WORKERS)
        done = threading.Event()
        killer_result: dict[str, float | None] = {}
        killer = threading.Thread(
            target=lambda: killer_result.update(at=kill_one_worker_after_first_checkpoint(Path(config.run_dir), done))
        )
        if kill:
            killer.start()
        started = time.perf_counter()
        train_job(config)
        done.set()
        if kill:
            killer.join()
        row = {"run": name, "steps": steps // 2, "wall_s": time.perf_counter() - started, **accuracies(config.run_dir)}
        if kill:
            row["killed"] = killer_result.get("at") is not None
            last = latest_checkpoint(config.run_dir)
            row["resumed_from_step"] = read_rank_state(last, 0).resumed_from_step if last else None
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
        f"The killed run: a worker was {'killed' if rows[2].get('killed') else 'not killed (the run ended first)'}; "
        f"the last checkpoint's workers had resumed from step {rows[2].get('resumed_from_step')}.",
        "",
        "Each split has 270 images: one image is 0.37 points. Machine: 2 CPU cores, gloo, 1 torch thread per worker.",
    ]
    write_results("distributed_accuracy", {"rows": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
