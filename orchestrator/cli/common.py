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


DEMO_CONFIGS = {"digits": "configs/demo.yaml", "fashion-mnist": "configs/demo-fashion-mnist.yaml"}
"""The built-in demo jobs by data set: digits is the fastest path (tests, benchmarks), Fashion-MNIST what `make demo` shows."""


def demo_config(dataset: str = "digits") -> JobConfig:
    """A built-in demo job (``orchestrator/configs/demo.yaml`` for digits)."""
    from nasfleet.orchestrator.config import config_from_dict

    if dataset not in DEMO_CONFIGS:
        raise NasfleetError(f"no demo for data set {dataset!r} (known: {', '.join(DEMO_CONFIGS)})")
    text = resources.files("nasfleet.orchestrator").joinpath(DEMO_CONFIGS[dataset]).read_text()
    return config_from_dict(yaml.safe_load(text), f"built-in demo config ({dataset})")


def print_results(results: list[SubnetResult], title: str, perplexity: bool = False) -> None:
    """The subnets' costs and accuracy per split; ``perplexity`` adds it per split (a language model)."""
    table = Table(title=title)
    splits = list(results[0].accuracy) if results else []
    perplexities = [f"{s} ppl" for s in splits] if perplexity else []
    for column in ("subnet", "arch", "MFLOPs", "params", *(f"{s} acc" for s in splits), *perplexities):
        table.add_column(column, justify="left" if column in ("subnet", "arch") else "right")
    for r in results:
        accuracies = [f"{100 * r.accuracy[s]:.2f}%" for s in splits]
        accuracies += [f"{r.perplexity(s):.2f}" for s in splits] if perplexity else []
        table.add_row(r.role, escape(r.arch.describe()), f"{r.mflops:.3f}", f"{r.params:,}", *accuracies)
    console.print(table)


def results_json(results: list[SubnetResult]) -> str:
    from nasfleet.supernet import arch_to_dict

    return json.dumps(
        [
            {"role": r.role, "arch": arch_to_dict(r.arch), "mflops": r.mflops, "params": r.params, "accuracy": r.accuracy,
             "loss_nats": r.loss_nats}
            for r in results
        ],
        indent=2,
    )
