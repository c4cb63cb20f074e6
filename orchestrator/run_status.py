"""What a run folder says about its run: how far it is, whether it is running, what it found.

Read from the files a run writes anyway (``config.yaml``, ``metrics.jsonl``, the checkpoints,
the results Parquet and the run lock), so it works on a run in progress on another machine
(a storage URI) as well as on a finished local one, without touching it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import yaml

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.launch.job import RESULTS_FOLDER
from nasfleet.orchestrator.results import ResultsStore
from nasfleet.orchestrator.results.run_lock import run_holder
from nasfleet.orchestrator.storage import is_dir, is_file, join, read_text
from nasfleet.orchestrator.train.checkpoints import CONFIG_FILE, METRICS_FILE, checkpoint_step, latest_checkpoint
from nasfleet.orchestrator.train.metrics_log import read_records
from nasfleet.orchestrator.train.progress import format_duration


@dataclass(frozen=True)
class BestSubnet:
    role: str
    arch: str
    mflops: float
    val_accuracy: float | None
    test_accuracy: float | None
    checkpoint: str


@dataclass(frozen=True)
class RunStatus:
    run: str
    dataset: str
    strategy: str
    total_steps: int
    step: int
    """The last logged step (0 before the first log window)."""
    checkpoint: str | None
    checkpoint_step: int | None
    held_by: str | None
    """Who is running it now; None when nobody is."""
    losses: dict[str, float]
    """Training loss by subnet role over the last logged window."""
    samples_per_s: float | None
    eta_s: float | None
    """Time to the last step at the last window's pace; only while the run is held."""
    best: list[BestSubnet]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    def lines(self) -> list[str]:
        state = f"running: {self.held_by}" if self.held_by else "not running"
        percent = 100 * self.step / self.total_steps if self.total_steps else 0.0
        out = [
            f"run {self.run}  ({self.strategy} on {self.dataset}; {state})",
            f"step {self.step}/{self.total_steps} ({percent:.0f}%)"
            + (f"  {self.samples_per_s:.0f} samples/s" if self.samples_per_s else "")
            + (f"  ETA {format_duration(self.eta_s)}" if self.eta_s is not None else ""),
        ]
        if self.losses:
            out.append("loss  " + "  ".join(f"{role} {loss:.3f}" for role, loss in self.losses.items()))
        out.append(f"last checkpoint: {self.checkpoint} (step {self.checkpoint_step})" if self.checkpoint
                   else "last checkpoint: none yet")
        if self.best:
            out.append("best subnets so far (validation accuracy):")
            out += [f"  {_pct(b.val_accuracy)} val  {_pct(b.test_accuracy)} test  {b.mflops:7.2f} MFLOPs  "
                    f"{b.role:10s} {b.arch}" for b in self.best]
        else:
            out.append("best subnets so far: none evaluated yet")
        return out


def _pct(value: float | None) -> str:
    return "   –  " if value is None else f"{100 * value:6.2f}%"


def read_status(run: str, best: int = 5) -> RunStatus:
    """The status of the run in ``run`` (a folder or a storage URI); NasfleetError when it is not a run."""
    if not is_dir(run):
        raise NasfleetError(f"run {run} {'is a file, not a run folder' if is_file(run) else 'does not exist'}")
    if not is_file(join(run, CONFIG_FILE)):
        raise NasfleetError(f"{run} is not a nasfleet run (no {CONFIG_FILE})")
    try:
        config = yaml.safe_load(read_text(join(run, CONFIG_FILE)))
        total_steps = int(config["optim"]["steps"])
        dataset, strategy = str(config["data"]["dataset"]), str(config["strategy"]["name"])
    except (yaml.YAMLError, KeyError, TypeError, ValueError):
        raise NasfleetError(f"{join(run, CONFIG_FILE)} is not a readable job config") from None
    records = read_records(read_text(join(run, METRICS_FILE))) if is_file(join(run, METRICS_FILE)) else []
    last = records[-1] if records else None
    checkpoint = latest_checkpoint(run)
    held_by = run_holder(run)
    step = int(last["step"]) if last else 0
    eta_s = None
    if last and held_by:
        timing = last["timing"]
        per_step = timing["compute_s_per_step"] + timing["update_s_per_step"]
        eta_s = per_step * max(total_steps - step, 0)
    return RunStatus(
        run=run,
        dataset=dataset,
        strategy=strategy,
        total_steps=total_steps,
        step=step,
        checkpoint=checkpoint,
        checkpoint_step=checkpoint_step(checkpoint) if checkpoint else None,
        held_by=held_by,
        losses={role: float(m["loss"]) for role, m in last["by_role"].items()} if last else {},
        samples_per_s=float(last["timing"]["samples_per_s"]) if last else None,
        eta_s=eta_s,
        best=_best_subnets(run, best),
    )


def _best_subnets(run: str, count: int) -> list[BestSubnet]:
    rows = ResultsStore(join(run, RESULTS_FOLDER)).read().to_pylist()
    found = []
    for row in rows:
        accuracy = json.loads(row["metrics"]).get("accuracy", {})
        found.append(BestSubnet(row["role"], row["arch_desc"], row["mflops"], accuracy.get("val"),
                                accuracy.get("test"), row["checkpoint"]))

    def rank(b: BestSubnet) -> float:
        return -b.val_accuracy if b.val_accuracy is not None and math.isfinite(b.val_accuracy) else math.inf

    return sorted(found, key=rank)[:count]
