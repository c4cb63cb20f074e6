"""One plain progress line per logged window, for launchers whose output is a log, not a terminal.

Under Ray (``ray job logs``) and mpiexec a progress bar is noise and Ray Train's own report
lines say nothing about training; rank 0 prints these instead, one per ``log_every_steps``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any


def format_duration(seconds: float) -> str:
    """``H:MM:SS``; ``?`` for a duration not known yet (infinite or NaN)."""
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class ProgressLines:
    """Formats a metrics record as ``step 400/4000 (10%)  largest loss 1.234 acc 0.81  250 samples/s  ETA 0:12:30``.

    The ETA extrapolates this attempt's own pace (steps since it started or resumed), so a resumed
    run does not count the steps it skipped as fast ones.
    """

    def __init__(self, total_steps: int, start_step: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.total_steps = total_steps
        self.start_step = start_step
        self.clock = clock
        self.started = clock()

    def line(self, record: dict[str, Any]) -> str:
        step = int(record["step"])
        done = step - self.start_step
        elapsed = self.clock() - self.started
        eta = elapsed / done * (self.total_steps - step) if done > 0 else math.inf
        roles = "  ".join(f"{role} loss {m['loss']:.3f} acc {m['accuracy']:.2f}" for role, m in record["by_role"].items())
        percent = 100 * step / self.total_steps
        rate = record["timing"]["samples_per_s"]
        return f"step {step}/{self.total_steps} ({percent:.0f}%)  {roles}  {rate:.0f} samples/s  ETA {format_duration(eta)}"


def emit(line: str) -> None:
    """Write ``line`` to this process's own standard output, once.

    Not ``print``: Ray Train V2 patches ``print`` in its workers to pass every line to its logger
    as well as to a redirected stdout, and each line then showed twice in ``ray job logs``.
    """
    stream = sys.__stdout__ or sys.stdout
    stream.write(line + "\n")
    stream.flush()
