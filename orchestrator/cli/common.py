"""What every command shares: the console, result tables, ``KEY=VALUE`` parsing, the demo job.

This module stays light (no torch, no Ray) so that ``nasfleet --help`` answers at once;
commands import the heavy parts inside their bodies.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import TYPE_CHECKING, Any

import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from nasfleet.errors import NasfleetError

if TYPE_CHECKING:
    from nasfleet.orchestrator.config import JobConfig
    from nasfleet.orchestrator.evaluate.subnets import SubnetResult

console = Console()


def key_values(pairs: list[str], option: str) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values parsed as JSON where they are (numbers, booleans, lists), else strings."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise NasfleetError(f"{option} {pair!r} is not KEY=VALUE")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def demo_config() -> JobConfig:
    """The built-in demo job (``orchestrator/configs/demo.yaml``)."""
    from nasfleet.orchestrator.config import config_from_dict

    text = resources.files("nasfleet.orchestrator").joinpath("configs/demo.yaml").read_text()
    return config_from_dict(yaml.safe_load(text), "built-in demo config")


def print_results(results: list[SubnetResult], title: str) -> None:
    table = Table(title=title)
    splits = list(results[0].accuracy) if results else []
    for column in ("subnet", "arch", "MFLOPs", "params", *(f"{s} acc" for s in splits)):
        table.add_column(column, justify="left" if column in ("subnet", "arch") else "right")
    for r in results:
        accuracies = (f"{100 * r.accuracy[s]:.2f}%" for s in splits)
        table.add_row(r.role, escape(r.arch.describe()), f"{r.mflops:.3f}", f"{r.params:,}", *accuracies)
    console.print(table)


def results_json(results: list[SubnetResult]) -> str:
    from nasfleet.supernet import arch_to_dict

    return json.dumps(
        [
            {"role": r.role, "arch": arch_to_dict(r.arch), "mflops": r.mflops, "params": r.params, "accuracy": r.accuracy}
            for r in results
        ],
        indent=2,
    )
