"""``metrics.jsonl``: one JSON line per logging window, the same columns for every launcher.

Each line is ``{"step", "lr", "world_size", "resumed_from_step", "timing": {...},
"by_role": {role: {"loss", "cross_entropy", "accuracy", "mflops"}}}``. Rank 0 writes the
run's ``metrics.jsonl`` as it trains, and each checkpoint carries the log up to its step, so
a resumed run continues from exactly the lines its checkpoint had: a crash between two
checkpoints never leaves lines for steps that are trained again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nasfleet.orchestrator.storage import is_uri, join, make_dirs, storage_error, write_text
from nasfleet.orchestrator.train.checkpoints import METRICS_FILE


class MetricsLog:
    """The run's log lines; ``run`` is a path or a URI (object stores get the whole file rewritten)."""

    def __init__(self, run: str, lines: list[str] | None = None) -> None:
        self.location = join(run, METRICS_FILE)
        self.lines = list(lines or [])
        self._run = run

    def restart(self) -> None:
        """Make the run's file hold exactly the lines this log starts from."""
        make_dirs(self._run)
        write_text(self.location, "".join(line + "\n" for line in self.lines))

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record)
        self.lines.append(line)
        if is_uri(self.location):
            write_text(self.location, "".join(item + "\n" for item in self.lines))
        else:
            try:
                with open(self.location, "a") as f:
                    f.write(line + "\n")
            except OSError as exc:
                raise storage_error("append to", self.location, exc) from None

    def write_into(self, folder: Path) -> None:
        (folder / METRICS_FILE).write_text("".join(line + "\n" for line in self.lines))


def flatten(record: dict[str, Any]) -> dict[str, float]:
    """A record as the flat ``{name: number}`` dict Ray Train reports carry."""
    flat: dict[str, float] = {k: float(v) for k, v in record.items() if isinstance(v, (int, float))}
    flat.update({k: float(v) for k, v in record.get("timing", {}).items()})
    for role, values in record.get("by_role", {}).items():
        for key, value in values.items():
            flat[f"{role}/{key}"] = float(value)
    return flat


def read_records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]
