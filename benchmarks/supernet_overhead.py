"""Cost of running a subnet *through the supernet* versus as its extracted standalone module.

Forward + backward on the same batch, timed alternately (supernet, standalone, a second copy of
the standalone, in an order that rotates each repeat) so all see the same machine load and none
always runs first; the ratio of medians is reported
for the smallest, a median-FLOPs and the largest subnet of the demo space. Goal: ratio ≤ 1.05.
The copy's ratio to the standalone (an A/A comparison of two identical modules) is the noise
floor of the same run: a supernet ratio within it is no measurable overhead.

    python benchmarks/supernet_overhead.py [--batch-size 256] [--repeats 60] [--allocator glibc]

The process sets its allocator as nasfleet's training processes do
(:func:`~nasfleet.orchestrator.train.reuse_freed_memory`); ``--allocator glibc`` keeps glibc's
defaults instead, under which the supernet's extra page faults were most of its overhead.
"""

from __future__ import annotations

import argparse
import copy
import resource
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from _common import write_results
from nasfleet.orchestrator.cli.common import demo_config
from nasfleet.orchestrator.data import data_shape
from nasfleet.orchestrator.train import job_space, reuse_freed_memory
from nasfleet.supernet import extract


def time_once(step: Callable[[], None]) -> tuple[float, int]:
    """Seconds and minor page faults of one call."""
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    step()
    return time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--allocator", choices=["nasfleet", "glibc"], default="nasfleet")
    args = parser.parse_args()
    if args.allocator == "nasfleet" and not reuse_freed_memory():
        print("note: malloc left as it is (not glibc, or MALLOC_* / LD_PRELOAD set)")

    torch.manual_seed(0)
    torch.set_num_threads(1)  # one core each, as every nasfleet process runs by default
    job = demo_config()
    space = job_space(job)
    shape = data_shape(job.data)
    supernet = space.build_supernet().train()
    rng = np.random.default_rng(0)
    candidates = sorted((space.sample(rng) for _ in range(301)), key=space.flops)
    subnets = {"smallest": space.smallest(), "median": candidates[150], "largest": space.largest()}
    images = torch.randn(args.batch_size, shape.in_channels, shape.image_size, shape.image_size)
    labels = torch.randint(0, shape.num_classes, (args.batch_size,))
    loss_fn = torch.nn.CrossEntropyLoss()

    rows = []
    for role, arch in subnets.items():
        standalone = extract(supernet, space, arch).train()
        twin = copy.deepcopy(standalone)

        def through_supernet() -> None:
            supernet.zero_grad(set_to_none=True)
            loss_fn(supernet(images, arch), labels).backward()

        def plain_step(module: torch.nn.Module) -> Callable[[], None]:
            def step() -> None:
                module.zero_grad(set_to_none=True)
                loss_fn(module(images), labels).backward()
            return step

        standalone_step, twin_step = plain_step(standalone), plain_step(twin)
        for _ in range(5):  # warm-up: allocator, kernels
            through_supernet()
            standalone_step()
            twin_step()
        steps = [through_supernet, standalone_step, twin_step]
        seconds: list[list[float]] = [[], [], []]
        faults = [0, 0, 0]
        for repeat in range(args.repeats):
            # Each repeat starts with the next step of the three, so no step always runs first
            # (after the other two have filled the caches with their own weights and activations).
            for k in range(3):
                which = (repeat + k) % 3
                took, faulted = time_once(steps[which])
                seconds[which].append(took)
                faults[which] += faulted
        super_s, plain_s, twin_s = seconds
        ratio = statistics.median(super_s) / statistics.median(plain_s)
        rows.append(
            {
                "subnet": role,
                "arch": arch.describe(),
                "mflops": space.flops(arch) / 1e6,
                "supernet_ms": 1e3 * statistics.median(super_s),
                "standalone_ms": 1e3 * statistics.median(plain_s),
                "ratio": ratio,
                "a_a_ratio": statistics.median(twin_s) / statistics.median(plain_s),
                "supernet_faults_per_step": faults[0] / args.repeats,
                "standalone_faults_per_step": faults[1] / args.repeats,
            }
        )

    lines = [
        f"# Supernet vs extracted subnet, forward+backward, batch {args.batch_size}, median of {args.repeats}, "
        f"1 thread, {args.allocator} allocator settings",
        "",
        "| subnet | arch | MFLOPs/image | supernet ms | standalone ms | ratio | A/A ratio | page faults/step (supernet, standalone) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['subnet']} | `{r['arch']}` | {r['mflops']:.3f} | {r['supernet_ms']:.2f} | {r['standalone_ms']:.2f} "
        f"| {r['ratio']:.3f} | {r['a_a_ratio']:.3f} "
        f"| {r['supernet_faults_per_step']:,.0f}, {r['standalone_faults_per_step']:,.0f} |"
        for r in rows
    ]
    lines += ["", "*A/A ratio*: a second copy of the standalone module against the first, timed in the same loop."]
    write_results(
        "supernet_overhead" if args.allocator == "nasfleet" else "supernet_overhead_glibc_malloc",
        {"batch_size": args.batch_size, "repeats": args.repeats, "allocator": args.allocator, "rows": rows},
        "\n".join(lines) + "\n",
    )


if __name__ == "__main__":
    main()
