"""``nasfleet profile``: build a search space's per-layer latency table on this machine, then check it.

The table is built once per machine, batch size and thread count; the search reads it to
price subnets (e.g. ``latency_ms <= 5``) without timing each candidate.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.markup import escape
from rich.table import Table

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.cli.common import console

if TYPE_CHECKING:
    from nasfleet.supernet import LatencyCheck, LatencyTable, SearchSpace

TABLE_FILE = "latency.json"
DEFAULT_REPEATS = 25  # the same as nasfleet.supernet.latency.DEFAULT_REPEATS, kept here so --help needs no torch


def _space_and_default_out(config: Optional[Path], run: Optional[str]) -> tuple[SearchSpace, Optional[str]]:
    """The space to profile (from a job config or a trained run) and where its table goes by default."""
    from nasfleet.orchestrator.config import load_config
    from nasfleet.orchestrator.evaluate.trained import load_trained
    from nasfleet.orchestrator.storage import join
    from nasfleet.orchestrator.train.setup import job_space

    if (config is None) == (run is None):
        raise NasfleetError("give exactly one of --config (a job config) or --run (a trained run directory)")
    if config is not None:
        return job_space(load_config(config)), None
    assert run is not None
    return load_trained(run).space, join(run, TABLE_FILE)


def _warn_if_busy(table: LatencyTable) -> None:
    cpus = os.cpu_count() or 1
    if table.load_average is not None and table.load_average > cpus - table.threads:
        console.print(
            f"[yellow]warning:[/] load average {table.load_average:.1f} on {cpus} CPUs while profiling: other "
            "processes competed for the cores, so these timings are slower and noisier than on an idle machine"
        )


def print_checks(checks: list[LatencyCheck], title: str) -> None:
    from nasfleet.supernet import mean_relative_error

    table = Table(title=title)
    for column in ("#", "arch", "predicted ms", "measured ms", "error"):
        table.add_column(column, justify="left" if column == "arch" else "right")
    for i, check in enumerate(checks):
        table.add_row(
            str(i), escape(check.arch.describe()), f"{check.predicted_ms:.3f}", f"{check.measured_ms:.3f}",
            f"{100 * check.relative_error:.1f}%",
        )
    console.print(table)
    worst = max(check.relative_error for check in checks)
    console.print(
        f"mean relative error {100 * mean_relative_error(checks):.1f}% (max {100 * worst:.1f}%) "
        f"over {len(checks)} random subnets"
    )


def profile(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML job config whose search space to profile."),
    run: Optional[str] = typer.Option(None, "--run", help="Run written by `nasfleet train`, a folder or URI (profiles its space)."),
    out: Optional[str] = typer.Option(
        None, "--out", help=f"Where to write the table (JSON); default: <run>/{TABLE_FILE} with --run, required with --config."
    ),
    batch_size: int = typer.Option(1, "--batch-size", help="Images per forward call the latency is for."),
    threads: int = typer.Option(1, "--threads", help="torch intra-op threads while timing."),
    repeats: int = typer.Option(DEFAULT_REPEATS, "--repeats", help="Timing rounds; each latency is their median."),
    check: int = typer.Option(
        20, "--check", help="Measure this many random subnets end to end and report the table's error (0: skip)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for the checked subnets."),
    table_file: Optional[Path] = typer.Option(
        None, "--table", help="Check this existing table instead of building one (it must match the space)."
    ),
) -> None:
    """Time every distinct layer of a search space on this machine, save the table, check it on random subnets."""
    import numpy as np

    from nasfleet.orchestrator.storage import write_text
    from nasfleet.supernet import LatencyTable, build_latency_table, table_error

    for option, value, least in (("--batch-size", batch_size, 1), ("--threads", threads, 1), ("--repeats", repeats, 1),
                                 ("--check", check, 0)):
        if value < least:
            raise NasfleetError(f"{option} must be at least {least}, got {value}")
    space, default_out = _space_and_default_out(config, run)
    if table_file is not None:
        table = LatencyTable.load(table_file)
        table.check_space(space)
        console.print(
            f"loaded {table_file}: {len(table.entries_ms)} layers, batch {table.batch_size}, "
            f"{table.threads} thread(s), built {table.created} on {escape(table.machine)}"
        )
    else:
        target = out or default_out
        if target is None:
            raise NasfleetError("--out is required with --config (where to write the latency table)")
        started = time.perf_counter()
        table = build_latency_table(space, batch_size, threads, repeats)
        write_text(target, json.dumps(table.to_dict(), indent=2, sort_keys=True) + "\n")
        console.print(
            f"profiled {len(table.entries_ms)} layers of the {space.name} space in "
            f"{time.perf_counter() - started:.1f} s (batch {batch_size}, {threads} thread(s), median of {repeats}); "
            f"per-layer correction {1e3 * table.per_layer_correction_ms:+.1f} µs; wrote {target}"
        )
        _warn_if_busy(table)
    console.print(
        f"predicted latency: smallest subnet {table.predict_ms(space.smallest()):.3f} ms, "
        f"largest {table.predict_ms(space.largest()):.3f} ms"
    )
    if check:
        rng = np.random.default_rng(seed)
        archs = [space.sample(rng) for _ in range(check)]
        checks = table_error(space, table, archs, repeats=repeats)
        print_checks(checks, f"latency table vs measurement (batch {table.batch_size}, {table.threads} thread(s))")
