"""``nasfleet certify``: clean error and IBP-verified error of a run's subnets at a stated ε.

Each subnet gets its own batch-norm statistics (calibrated on training batches, as for
evaluation), is extracted as the plain network one would deploy, and is bounded in eval
mode (running statistics) over the L∞ ball of radius ε around each test image. ε is in
pixel units (0–1 intensity); the pixel range in model units is read off the training split
(its smallest and largest normalised values are pixels 0 and 1).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import typer

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.cli.common import console
from nasfleet.orchestrator.cli.runs import RUN_HELP, parse_arch

if TYPE_CHECKING:
    from nasfleet.orchestrator.evaluate.trained import TrainedSupernet
    from nasfleet.supernet import Arch, SearchSpace

MEDIAN_POOL = 64
BATCH = 256


@dataclass(frozen=True)
class Certified:
    role: str
    arch: str
    mflops: float
    images: int
    eps: float
    clean_error: float
    verified_error: float


def median_subnet(space: SearchSpace, seed: int = 0) -> Arch:
    """The subnet of median MFLOPs among ``MEDIAN_POOL`` seeded random ones."""
    import numpy as np

    rng = np.random.default_rng(seed)
    pool = sorted((space.sample_choices(rng) for _ in range(MEDIAN_POOL)), key=space.flops)
    return pool[len(pool) // 2]


def pick_subnet(text: str, space: SearchSpace) -> Arch:
    """'smallest', 'median', 'largest', an arch JSON string or @file.json."""
    return median_subnet(space) if text == "median" else parse_arch(text, space)


def certify_subnets(
    trained: TrainedSupernet, archs: list[Arch], roles: list[str], eps: float, images: int | None = None,
    split: str = "test",
) -> list[Certified]:
    """Clean and verified error of each subnet, extracted with its own BN statistics, on ``split``."""
    import torch

    from nasfleet.supernet import calibrated_batchnorm, extract
    from nasfleet.supernet.interval import input_box, margin_bounds, verified

    if eps < 0:
        raise NasfleetError(f"--eps must be 0 or more (pixel units), got {eps}")
    data = trained.data.split(split)
    if images is not None:
        data = data.subset(images)
    pixels = trained.data.train.images
    low, high = float(pixels.min()), float(pixels.max())
    eps_model = eps * (high - low)
    calibration = trained.calibration_batches()
    out: list[Certified] = []
    for arch, role in zip(archs, roles):
        with calibrated_batchnorm(trained.model, arch, calibration):
            subnet = extract(trained.model, trained.space, arch).eval()
        wrong = unverified = 0
        with torch.no_grad():
            for start in range(0, len(data), BATCH):
                x, y = data.images[start:start + BATCH], data.labels[start:start + BATCH]
                logits, margins = margin_bounds(subnet, input_box(x, eps_model, low, high), y)
                wrong += int((logits.argmax(dim=1) != y).sum())
                unverified += int((~verified(margins, y)).sum())
        n = len(data)
        out.append(Certified(role, arch.describe(), trained.space.flops(arch) / 1e6, n, eps, wrong / n, unverified / n))
    return out


def certify(
    run: str = typer.Option(..., "--run", help=RUN_HELP),
    eps: float = typer.Option(..., "--eps", help="L∞ radius in pixel units (0–1 intensity), e.g. 0.1."),
    subnets: list[str] = typer.Option(
        ["smallest", "median", "largest"], "--subnet",
        help="'smallest', 'median', 'largest', an arch JSON string or @file.json; repeatable.",
    ),
    split: str = typer.Option("test", help="Data split: train, val or test."),
    images: int = typer.Option(0, min=0, help="Certify a seeded subset of this many images (0: the whole split)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Clean error and IBP-verified error (no input in the ε box changes the prediction) of a few subnets."""
    from rich.markup import escape
    from rich.table import Table

    from nasfleet.orchestrator.evaluate.trained import load_trained

    if eps < 0:
        raise NasfleetError(f"--eps must be 0 or more (pixel units), got {eps}")
    trained = load_trained(run)
    if trained.space.name != "mbconv":  # interval rules exist for its layers; attention and sequences have none
        raise NasfleetError(f"certify supports runs of the mbconv space, not {trained.space.name!r}")
    archs = [pick_subnet(text, trained.space) for text in subnets]
    roles = [text if text in ("smallest", "median", "largest") else f"subnet-{i}" for i, text in enumerate(subnets)]
    results = certify_subnets(trained, archs, roles, eps, images or None, split)
    if as_json:
        typer.echo(json.dumps([asdict(r) for r in results], indent=1))
        return
    table = Table(title=f"{run} — step {trained.step}, ε = {eps:g} (pixels), {results[0].images:,} {split} images")
    for column in ("subnet", "arch", "MFLOPs", "clean error", "verified error"):
        table.add_column(column)
    for r in results:
        clean, certified = f"{100 * r.clean_error:.2f}%", f"{100 * r.verified_error:.2f}%"
        table.add_row(r.role, escape(r.arch), f"{r.mflops:.3f}", clean, certified)
    console.print(table)
