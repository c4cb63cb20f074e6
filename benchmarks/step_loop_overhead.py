"""What nasfleet's one training loop costs over a plain torch loop, on the same batches.

Both train the demo space's largest subnet in one process for the same steps on the same
batches with the same recipe (Nesterov SGD, warm-up + cosine):

- **nasfleet**: ``train_job`` with the uniform strategy over a space whose only subnet is the
  demo's largest — the product path end to end: job validation, the run folder, the strategy,
  ``run_step``, the torch backend, role means, ``metrics.jsonl`` and the final checkpoint;
- **plain torch**: the largest subnet extracted into a stand-alone module, a bare loop.

Runs alternate (nasfleet, plain, nasfleet, ...) so both see the same machine load; the ratio
of the median wall times is reported. Target: at most 1.10.

    python benchmarks/step_loop_overhead.py [--steps 150] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from _common import write_results
from nasfleet.orchestrator.cli.common import demo_config
from nasfleet.orchestrator.config import JobConfig, config_from_dict
from nasfleet.orchestrator.data import BatchStream, load_data
from nasfleet.orchestrator.launch import train_job
from nasfleet.orchestrator.train import job_space, reuse_freed_memory, sgd_with_schedule
from nasfleet.supernet import extract


def largest_only(job: JobConfig, run_dir: Path, steps: int) -> JobConfig:
    """The demo job with uniform sampling over a space that holds just the demo's largest subnet."""
    data = job.model_dump(mode="json")
    for stage in data["space"]["stages"]:
        for key in ("widths", "depths", "kernels", "expands"):
            stage[key] = [max(stage[key])]
    data.update(run_dir=str(run_dir), strategy={"name": "uniform", "params": {}})
    data["optim"]["steps"] = steps
    data["checkpoint_every_steps"] = steps  # one checkpoint, at the end, as any run writes
    data["launch"] = {"kind": "local", "threads": 1}
    return config_from_dict(data, "benchmark job")


def nasfleet_loop(job: JobConfig, root: Path, index: int) -> float:
    run = job.model_copy(update={"run_dir": str(root / f"nasfleet-{index}")})
    started = time.perf_counter()
    train_job(run)
    return time.perf_counter() - started


def plain_loop(job: JobConfig) -> float:
    started = time.perf_counter()
    data = load_data(job.data)
    space = job_space(job)
    torch.manual_seed(job.seed)
    model = extract(space.build_supernet(), space, space.largest()).train()
    optimizer, scheduler = sgd_with_schedule(model, job.optim)
    batches = BatchStream(data.train, job.data.batch_size, job.seed)
    for step in range(job.optim.steps):
        images, labels = batches.batch(step)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    reuse_freed_memory()  # what train_job sets in its process; set here first so both loops run under it
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        job = largest_only(demo_config(), root / "unused", args.steps)
        plain_loop(job)  # warm-up: imports, allocator, data loading caches
        nasfleet_s, plain_s = [], []
        for i in range(args.repeats):
            nasfleet_s.append(nasfleet_loop(job, root, i))
            plain_s.append(plain_loop(job))
    ratio = statistics.median(nasfleet_s) / statistics.median(plain_s)
    rows = {"nasfleet_s": nasfleet_s, "plain_torch_s": plain_s, "ratio_of_medians": ratio}
    markdown = "\n".join([
        "# nasfleet's training loop vs a plain torch loop (largest demo subnet, one process)",
        "",
        f"{args.steps} steps, batch {job.data.batch_size}, 1 torch thread, {args.repeats} alternating runs each.",
        "",
        "| loop | median wall (s) | min | max |",
        "|---|---:|---:|---:|",
        f"| nasfleet `train_job` | {statistics.median(nasfleet_s):.3f} | {min(nasfleet_s):.3f} | {max(nasfleet_s):.3f} |",
        f"| plain torch, extracted subnet | {statistics.median(plain_s):.3f} | {min(plain_s):.3f} | {max(plain_s):.3f} |",
        "",
        f"Ratio of medians: **{ratio:.3f}** (target ≤ 1.10).",
        "",
    ])
    write_results("step_loop_overhead", {"steps": args.steps, "repeats": args.repeats, **rows}, markdown)


if __name__ == "__main__":
    main()
