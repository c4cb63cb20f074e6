"""Cost of running a subnet *through the supernet* versus as its extracted standalone module.

Forward + backward on the same batch, timed alternately (supernet, standalone, a second copy of
the standalone, supernet, ...) so all see the same machine load; the ratio of medians is reported
for the smallest, a median-FLOPs and the largest subnet of the demo space. Target: ratio ≤ 1.15.
The copy's ratio to the standalone (an A/A comparison of two identical modules) is the noise
floor of the same run: a supernet ratio within it is no measurable overhead.

    python benchmarks/supernet_overhead.py [--batch-size 256] [--repeats 60]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from _common import write_results
from nasfleet.orchestrator.cli.common import demo_config
from nasfleet.orchestrator.data import data_shape
from nasfleet.orchestrator.train import job_space
from nasfleet.supernet import extract


def time_once(step: Callable[[], None]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=60)
    args = parser.parse_args()

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
        super_s, plain_s, twin_s = [], [], []
        for _ in range(args.repeats):
            super_s.append(time_once(through_supernet))
            plain_s.append(time_once(standalone_step))
            twin_s.append(time_once(twin_step))
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
            }
        )

    lines = [
        f"# Supernet vs extracted subnet, forward+backward, batch {args.batch_size}, median of {args.repeats}, 1 thread",
        "",
        "| subnet | arch | MFLOPs/image | supernet ms | standalone ms | ratio | A/A ratio |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['subnet']} | `{r['arch']}` | {r['mflops']:.3f} | {r['supernet_ms']:.2f} | {r['standalone_ms']:.2f} "
        f"| {r['ratio']:.3f} | {r['a_a_ratio']:.3f} |"
        for r in rows
    ]
    lines += ["", "*A/A ratio*: a second copy of the standalone module against the first, timed in the same loop."]
    write_results(
        "supernet_overhead", {"batch_size": args.batch_size, "repeats": args.repeats, "rows": rows}, "\n".join(lines) + "\n"
    )


if __name__ == "__main__":
    main()
