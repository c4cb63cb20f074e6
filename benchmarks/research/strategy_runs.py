"""One strategy's share of the comparison: its supernet trained and its subnets scored, both kept.

On the reference task a strategy's training costs minutes to tens of minutes of CPU, and scoring
a few dozen subnets on 19,000 images as much again. Both are kept in the strategy's run folder, so
a rerun with ``reuse`` reads a finished identical run and its scores back instead of repeating
them; they can be made before the ground truth exists, and by one process per strategy at once.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.config import JobConfig
from nasfleet.orchestrator.evaluate import TrainedSupernet, load_trained
from nasfleet.orchestrator.launch import train_job
from nasfleet.orchestrator.storage import resolve_storage, write_parquet_atomically
from nasfleet.orchestrator.train import CONFIG_FILE, METRICS_FILE, has_checkpoint, read_records
from nasfleet.research.standalone import ImageScores, StandaloneResult, score_images
from nasfleet.supernet import Arch, arch_from_json, arch_to_json, calibrated_batchnorm

RUN_RECORD_FILE = "comparison_run.json"
"""Written into a run folder after the comparison trained it: the measured training wall time."""
SCORES_PREFIX = "comparison_scores_"
"""Scored subnets of a run: one Parquet file per (checkpoint, subnet list, splits), in the run folder."""
FIXED_SPLITS = ("val", "test")
NESTED_SPLITS = ("test",)
"""Nested sub-models are judged on test accuracy only; their val split would double the cost for nothing shown."""


@dataclass(frozen=True)
class SubnetEvaluation:
    """One subnet of one strategy's supernet; stand-alone results and per-image scores only for the fixed set."""

    strategy: str
    subset: str  # "fixed" or "nested"
    role: str
    arch: Arch
    mflops: float
    params: int
    val_accuracy: float
    test_accuracy: float
    val_nll: float
    test_nll: float
    standalone_val_accuracy: float | None
    standalone_test_accuracy: float | None
    standalone_test_nll: float | None
    eval_wall_s: float
    test_scores: ImageScores | None = field(default=None, repr=False, compare=False)
    """Per-image test correctness and NLL (fixed set only), for the bootstrap."""

    def row(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "test_scores"}
        scores = self.test_scores
        return {
            **values,
            "arch": arch_to_json(self.arch),
            "arch_desc": self.arch.describe(),
            "test_correct": scores.correct.tolist() if scores is not None else None,
            "test_nll_per_image": scores.nll.tolist() if scores is not None else None,
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> SubnetEvaluation:
        values = {f.name: row[f.name] for f in fields(cls) if f.name not in ("arch", "test_scores")}
        scores = None
        if row["test_correct"] is not None:
            scores = ImageScores(row["test_correct"], row["test_nll_per_image"])
        return cls(**values, arch=arch_from_json(row["arch"]), test_scores=scores)

    def beside(self, standalone: StandaloneResult) -> SubnetEvaluation:
        """This evaluation with the subnet's stand-alone result beside it."""
        return replace(
            self,
            standalone_val_accuracy=standalone.accuracy["val"],
            standalone_test_accuracy=standalone.accuracy["test"],
            standalone_test_nll=standalone.nll["test"],
        )


@dataclass(frozen=True)
class RunRecord:
    """What the comparison reports of a strategy's supernet run; small enough to pass between processes."""

    run_dir: Path
    step: int
    checkpoint_id: str
    train_wall_s: float
    reused: bool
    subnets_per_step: float


@dataclass(frozen=True)
class StrategyRun:
    """One strategy's trained supernet and its scored subnets (without stand-alone results)."""

    strategy: str
    run: RunRecord
    fixed: list[SubnetEvaluation]
    nested: list[SubnetEvaluation]


@dataclass(frozen=True)
class StrategyJob:
    """What one strategy's share needs: its training job and the subnets to score, by role."""

    job: JobConfig
    fixed: Sequence[tuple[str, Arch]]
    nested: Sequence[tuple[str, Arch]]
    reuse: bool
    val_images: int | None = None
    """Score the validation split on a seeded subset of this many images (all when None)."""
    results: Path | None = None
    """A :class:`StrategyResults` folder: with ``reuse``, a strategy already there is read back, not run."""


def run_folder(work_dir: Path, strategy: str, steps: int) -> Path:
    """A strategy's run folder, named by its steps so that the same-steps and same-compute views share
    the runs they have in common (sandwich's 1,000 steps are both views' at 4,000 passes)."""
    return work_dir / f"{strategy}-{steps}steps"


def _same_job(stored: JobConfig, job: JobConfig) -> bool:
    """Whether a stored run was trained by ``job``: every setting equal except where the folder is."""
    def settings(config: JobConfig) -> dict[str, Any]:
        return config.model_dump(mode="json", exclude={"run_dir"})

    return settings(stored) == settings(job)


def _recorded_train_wall_s(run_dir: Path, trained: TrainedSupernet) -> float:
    """The training wall time recorded when the run was made.

    Runs trained before the record existed fall back to the span from the run's config file
    (written as training starts) to the supernet file of ``trained``'s checkpoint, the last one
    (written as training ends).
    """
    record = run_dir / RUN_RECORD_FILE
    if record.is_file():
        return float(json.loads(record.read_text())["train_wall_s"])
    return Path(trained.source).stat().st_mtime - (run_dir / CONFIG_FILE).stat().st_mtime


@dataclass(frozen=True)
class SupernetRun:
    """A strategy's trained supernet, how long training took, and whether this call trained it."""

    run_dir: Path
    trained: TrainedSupernet
    train_wall_s: float
    reused: bool

    def record(self) -> RunRecord:
        return RunRecord(self.run_dir, self.trained.step, self.trained.checkpoint_id, self.train_wall_s,
                         self.reused, subnets_per_step(self.run_dir))


def finished_run(job: JobConfig) -> SupernetRun | None:
    """The finished run of ``job`` in ``job.run_dir`` (a local folder), or None when there is none, it
    stopped early, it was trained with other settings, or it cannot be read."""
    run_dir = Path(job.run_dir)
    if not has_checkpoint(job.run_dir) or not all((run_dir / name).is_file() for name in (CONFIG_FILE, METRICS_FILE)):
        return None
    try:
        trained = load_trained(run_dir)
    except NasfleetError:
        return None
    if trained.step != job.optim.steps or not _same_job(trained.config, job):
        return None
    return SupernetRun(run_dir, trained, _recorded_train_wall_s(run_dir, trained), reused=True)


def supernet_run(job: JobConfig, reuse: bool) -> SupernetRun:
    """``job``'s supernet: its finished run when ``reuse`` and valid, else trained anew in a cleared folder."""
    if reuse:
        found = finished_run(job)
        if found is not None:
            return found
    run_dir = Path(job.run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)
    started = time.perf_counter()
    train_job(job)
    train_wall_s = time.perf_counter() - started
    (run_dir / RUN_RECORD_FILE).write_text(json.dumps({"train_wall_s": train_wall_s}) + "\n")
    return SupernetRun(run_dir, load_trained(run_dir), train_wall_s, reused=False)


def subnets_per_step(run_dir: Path) -> float:
    """Mean subnets per optimizer step of one rank, recovered from the run's logged throughput windows.

    A window's ``subnets_per_s`` counts every rank's subnets over the compute and update time.
    """
    steps = subnets = 0.0
    for record in read_records((run_dir / METRICS_FILE).read_text()):
        timing = record["timing"]
        elapsed = timing["steps"] * (timing["compute_s_per_step"] + timing["update_s_per_step"])
        steps += timing["steps"]
        subnets += timing["subnets_per_s"] * elapsed / record["world_size"]
    return subnets / steps if steps else math.nan


def score_subnet(trained: TrainedSupernet, arch: Arch, splits: Sequence[str]) -> dict[str, ImageScores]:
    """Per-image scores of one subnet of ``trained`` by split, after recalibrating batch norm for it.

    The same recalibration and forward pass as :func:`nasfleet.orchestrator.evaluate.evaluate_arch`
    (so the accuracies agree), keeping each image's outcome and cross-entropy as well.
    """
    trained.space.validate(arch)
    with calibrated_batchnorm(trained.model, arch, trained.calibration_batches()):
        return {split: score_images(lambda x: trained.model(x, arch), trained.data.split(split)) for split in splits}


def evaluate_subnets(
    trained: TrainedSupernet, strategy: str, subset: str, archs: Sequence[tuple[str, Arch]], splits: Sequence[str],
) -> list[SubnetEvaluation]:
    """Accuracy and NLL of each subnet of ``trained`` on ``splits`` (NaN on a split not asked for).

    Per-image test scores are kept when both splits are scored (the fixed set, which the bootstrap resamples).
    """
    rows = []
    for role, arch in archs:
        started = time.perf_counter()
        scores = score_subnet(trained, arch, splits)
        wall_s = time.perf_counter() - started
        val, test = scores.get("val"), scores["test"]
        # Kept as float32, as the result store holds them: a result read back ranks exactly as it did fresh.
        test = ImageScores(test.correct, test.nll.astype(np.float32))
        rows.append(
            SubnetEvaluation(
                strategy, subset, role, arch, trained.space.flops(arch) / 1e6, trained.space.params(arch),
                val.accuracy if val else math.nan, test.accuracy, val.mean_nll if val else math.nan, test.mean_nll,
                None, None, None, wall_s, test if val else None,
            )
        )
    return rows


def _scores_file(run: SupernetRun, subset: str, archs: Sequence[tuple[str, Arch]], splits: Sequence[str]) -> Path:
    """Where the scores of these subnets of this checkpoint live: named by a digest of all they depend on."""
    key = {
        "checkpoint": run.trained.checkpoint_id,
        "subset": subset,
        "archs": [[role, arch_to_json(arch)] for role, arch in archs],
        "splits": list(splits),
        "eval": run.trained.config.eval.model_dump(mode="json"),
        "data": run.trained.config.data.model_dump(mode="json"),
        "val_images": len(run.trained.data.val),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return run.run_dir / f"{SCORES_PREFIX}{subset}_{digest}.parquet"


def scored_subnets(
    run: SupernetRun, strategy: str, subset: str, archs: Sequence[tuple[str, Arch]], splits: Sequence[str],
) -> list[SubnetEvaluation]:
    """:func:`evaluate_subnets` of ``run``, read back when this checkpoint already scored these subnets."""
    if not archs:
        return []
    path = _scores_file(run, subset, archs, splits)
    if path.is_file():
        return [SubnetEvaluation.from_row(row) for row in pq.read_table(path).to_pylist()]
    rows = evaluate_subnets(run.trained, strategy, subset, archs, splits)
    fs, folder = resolve_storage(path.parent)
    write_parquet_atomically(pa.Table.from_pylist([r.row() for r in rows]), fs, f"{folder}/{path.name}")
    return rows


def train_and_score(task: StrategyJob) -> StrategyRun:
    """One strategy's share: its supernet (trained, or reused) and its fixed and nested subnets scored."""
    store = StrategyResults(task.results) if task.results is not None else None
    if store is not None and task.reuse:
        kept = store.get(task)
        if kept is not None:
            return kept
    name = task.job.strategy.name
    run = supernet_run(task.job, task.reuse)
    run = replace(run, trained=run.trained.with_val_subset(task.val_images))
    fixed = scored_subnets(run, name, "fixed", task.fixed, FIXED_SPLITS)
    nested = scored_subnets(run, name, "nested", task.nested, NESTED_SPLITS)
    done = StrategyRun(name, run.record(), fixed, nested)
    if store is not None:
        store.put(task, done)
    return done


class StrategyResults:
    """A folder of finished strategy shares, one Parquet file each, meant to be committed as it grows.

    A share is what the comparison needs of a strategy (its run record and its scored subnets), not
    its checkpoints: a few MB where the run folder holds the weights and optimizer state too. It is
    keyed by everything the share depends on (the job but its folder, the subnets, the validation
    subset), so a share is never computed twice, on this machine or another.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @staticmethod
    def key(task: StrategyJob) -> str:
        settings = {
            "job": task.job.model_dump(mode="json", exclude={"run_dir"}),
            "fixed": [[role, arch_to_json(arch)] for role, arch in task.fixed],
            "nested": [[role, arch_to_json(arch)] for role, arch in task.nested],
            "val_images": task.val_images,
            "splits": [list(FIXED_SPLITS), list(NESTED_SPLITS)],
        }
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]

    def path(self, task: StrategyJob) -> Path:
        return self.folder / f"{task.job.strategy.name}-{task.job.optim.steps}steps-{self.key(task)}.parquet"

    def get(self, task: StrategyJob) -> StrategyRun | None:
        path = self.path(task)
        if not path.is_file():
            return None
        table = pq.read_table(path)
        record = json.loads(table.schema.metadata[b"nasfleet.run"])
        run = RunRecord(Path(record["run_dir"]), record["step"], record["checkpoint_id"], record["train_wall_s"],
                        True, record["subnets_per_step"])
        rows = [SubnetEvaluation.from_row(row) for row in table.to_pylist()]
        return StrategyRun(task.job.strategy.name, run, [r for r in rows if r.subset == "fixed"],
                           [r for r in rows if r.subset == "nested"])

    def put(self, task: StrategyJob, done: StrategyRun) -> None:
        record = {**asdict(done.run), "run_dir": str(done.run.run_dir)}
        table = pa.Table.from_pylist([r.row() for r in done.fixed + done.nested])
        nll = table.schema.get_field_index("test_nll_per_image")  # float32 halves the file (see evaluate_subnets)
        table = table.set_column(nll, "test_nll_per_image", table.column(nll).cast(pa.list_(pa.float32())))
        table = table.replace_schema_metadata({b"nasfleet.run": json.dumps(record).encode()})
        fs, folder = resolve_storage(self.folder)
        write_parquet_atomically(table, fs, f"{folder}/{self.path(task).name}")


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def run_strategies(tasks: Sequence[StrategyJob], workers: int = 1) -> list[StrategyRun]:
    """Every task's :func:`train_and_score`, in order; ``workers`` > 1 runs that many at once, one process
    (and one core, on the jobs' ``launch.threads``) each."""
    if workers < 1:
        raise NasfleetError(f"workers must be at least 1, got {workers}")
    if workers == 1 or len(tasks) == 1:
        return [train_and_score(task) for task in tasks]
    threads = max(task.job.launch.threads for task in tasks)
    context = multiprocessing.get_context("spawn")  # a forked torch with threads already started can hang
    with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=context, initializer=_init_worker,
                             initargs=(threads,)) as pool:
        return list(pool.map(train_and_score, tasks))
