"""Training one subnet from scratch, as a plain network, to measure what the supernet only estimates.

The ground truth for ranking metrics (Kendall τ between supernet-estimated and real accuracy) is
each subnet trained alone with the job's own recipe: same data split, batches, optimizer,
learning-rate schedule, number of steps and seed. That is the expensive part of any such
comparison, so results go to an append-only Parquet cache keyed by everything that determines
them; a later comparison reads them back instead of training again. Besides accuracy, each result
keeps per-image test correctness and cross-entropy (:class:`ImageScores`), so rank statistics can
be bootstrapped over test images without retraining.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from nasfleet.orchestrator.config import JobConfig
from nasfleet.orchestrator.data import BatchStream, DataSplits, ImageSet, iterate_batches, load_data
from nasfleet.orchestrator.evaluate import EVAL_BATCH_SIZE
from nasfleet.orchestrator.results import ParquetLog
from nasfleet.orchestrator.train import job_space, sgd_with_schedule
from nasfleet.supernet import Arch, SearchSpace, arch_from_json, arch_to_json

# Bump when the stand-alone recipe or what a row holds changes, so old cache rows stop matching.
# 2: rows keep mean NLL by split and per-image test correctness and NLL (version 1 rows are ignored).
PROTOCOL_VERSION = 2
EVAL_SPLITS = ("val", "test")

SCHEMA = pa.schema(
    [
        pa.field("key", pa.string()),
        pa.field("protocol", pa.int64()),  # null in version 1 files, which lacked the column
        pa.field("arch", pa.string()),  # canonical JSON of the architecture
        pa.field("arch_desc", pa.string()),
        pa.field("mflops", pa.float64()),
        pa.field("params", pa.int64()),
        pa.field("steps", pa.int64()),
        pa.field("seed", pa.int64()),
        pa.field("accuracy", pa.string()),  # JSON object: accuracy by split
        pa.field("nll", pa.string()),  # JSON object: mean test cross-entropy by split
        pa.field("test_correct", pa.list_(pa.bool_())),  # per test image, in the split's order
        pa.field("test_nll", pa.list_(pa.float64())),
        pa.field("train_wall_s", pa.float64()),
        pa.field("recorded_at", pa.timestamp("ms", tz="UTC")),
    ]
)


@dataclass(frozen=True, eq=False)
class ImageScores:
    """Per-image outcome of one model on one split, in the split's order.

    What a bootstrap over images needs: resampling indices and averaging gives the accuracy and
    the mean cross-entropy (NLL) of the resampled set.
    """

    correct: np.ndarray  # bool [N]; for a mean over runs (:func:`mean_scores`), the share of runs right
    nll: np.ndarray  # float64 [N], −log p(true label)

    def __post_init__(self) -> None:
        correct = np.asarray(self.correct)
        if correct.dtype != bool:
            correct = correct.astype(np.float64)
            if correct.size and (correct.min() < 0 or correct.max() > 1):
                raise ValueError("per-image correctness must be a bool or a share of runs in [0, 1]")
        object.__setattr__(self, "correct", correct)
        object.__setattr__(self, "nll", np.asarray(self.nll, dtype=np.float64))
        if self.correct.shape != self.nll.shape or self.correct.ndim != 1:
            raise ValueError(f"per-image arrays differ in shape: {self.correct.shape} and {self.nll.shape}")

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())

    @property
    def mean_nll(self) -> float:
        return float(self.nll.mean())


def mean_scores(runs: Sequence[ImageScores]) -> ImageScores:
    """Several runs of one model (training seeds) as one: per image, the share right and the mean NLL.

    Its accuracy is the mean of the runs' accuracies, the ground truth a seeded ranking compares with.
    """
    if not runs:
        raise ValueError("mean_scores needs at least one run")
    if len(runs) == 1:
        return runs[0]
    return ImageScores(np.mean([r.correct for r in runs], axis=0), np.mean([r.nll for r in runs], axis=0))


@torch.no_grad()
def score_images(forward: Callable[[torch.Tensor], torch.Tensor], data: ImageSet) -> ImageScores:
    """Correctness (argmax) and cross-entropy of every label of ``data`` under ``forward`` (logits).

    Classes are on dimension 1 for images ([B, C]) and for token sequences ([B, V, T], one label
    per position), so a text set is scored per token.
    """
    correct, nll = [], []
    for images, labels in iterate_batches(data, EVAL_BATCH_SIZE):
        logits = forward(images)
        correct.append((logits.argmax(dim=1) == labels).numpy().reshape(-1))
        nll.append(F.cross_entropy(logits.double(), labels, reduction="none").numpy().reshape(-1))
    return ImageScores(np.concatenate(correct), np.concatenate(nll))


@dataclass(frozen=True)
class StandaloneResult:
    """One subnet trained from scratch; ``from_cache`` says whether this call trained it."""

    key: str
    arch: Arch
    mflops: float
    params: int
    steps: int
    seed: int
    accuracy: dict[str, float]
    nll: dict[str, float]
    """Mean test cross-entropy by split."""
    test_scores: ImageScores = field(repr=False, compare=False)
    train_wall_s: float
    from_cache: bool = False

    @classmethod
    def mean_of(cls, runs: Sequence[StandaloneResult]) -> StandaloneResult:
        """Several seeds of one subnet as one result: mean accuracy and NLL, per-image :func:`mean_scores`."""
        first = runs[0]
        if len(runs) == 1:
            return first
        splits = first.accuracy.keys()
        return cls(
            key="+".join(r.key for r in runs), arch=first.arch, mflops=first.mflops, params=first.params,
            steps=first.steps, seed=-1,
            accuracy={k: float(np.mean([r.accuracy[k] for r in runs])) for k in splits},
            nll={k: float(np.mean([r.nll[k] for r in runs])) for k in first.nll},
            test_scores=mean_scores([r.test_scores for r in runs]),
            train_wall_s=float(sum(r.train_wall_s for r in runs)),
            from_cache=all(r.from_cache for r in runs),
        )
    recorded_at_ms: int = field(default_factory=lambda: int(time.time() * 1000))

    def row(self) -> dict[str, object]:
        return {
            "key": self.key,
            "protocol": PROTOCOL_VERSION,
            "arch": arch_to_json(self.arch),
            "arch_desc": self.arch.describe(),
            "mflops": float(self.mflops),
            "params": int(self.params),
            "steps": int(self.steps),
            "seed": int(self.seed),
            "accuracy": json.dumps(self.accuracy, sort_keys=True),
            "nll": json.dumps(self.nll, sort_keys=True),
            "test_correct": self.test_scores.correct.tolist(),
            "test_nll": self.test_scores.nll.tolist(),
            "train_wall_s": float(self.train_wall_s),
            "recorded_at": self.recorded_at_ms,
        }

    @classmethod
    def from_row(cls, row: dict[str, object]) -> StandaloneResult:
        recorded = row["recorded_at"]
        return cls(
            key=str(row["key"]),
            arch=arch_from_json(str(row["arch"])),
            mflops=float(row["mflops"]),  # type: ignore[arg-type]
            params=int(row["params"]),  # type: ignore[call-overload]
            steps=int(row["steps"]),  # type: ignore[call-overload]
            seed=int(row["seed"]),  # type: ignore[call-overload]
            accuracy=json.loads(str(row["accuracy"])),
            nll=json.loads(str(row["nll"])),
            test_scores=ImageScores(np.array(row["test_correct"]), np.array(row["test_nll"])),
            train_wall_s=float(row["train_wall_s"]),  # type: ignore[arg-type]
            from_cache=True,
            recorded_at_ms=int(recorded.timestamp() * 1000) if hasattr(recorded, "timestamp") else 0,
        )


def standalone_recipe(config: JobConfig, steps: int, seed: int) -> JobConfig:
    """The job's recipe at ``steps`` optimizer steps and ``seed`` (warm-up kept under a tenth of the steps).

    How a ground truth trained apart from any supernet (benchmarks/ground_truth.py) sets its runs,
    so that a comparison can find them in the cache by key.
    """
    warmup = min(config.optim.warmup_steps, steps // 10)
    optim = config.optim.model_copy(update={"steps": steps, "warmup_steps": warmup})
    return config.model_copy(update={"seed": seed, "optim": optim})


def standalone_key(config: JobConfig, space: SearchSpace, arch: Arch) -> str:
    """A hash of everything that determines a stand-alone result (``run_dir``, strategy and launch do not)."""
    identity = {
        "protocol": PROTOCOL_VERSION,
        "space": space.config_dict(),
        "arch": arch_to_json(arch),
        "data": config.data.model_dump(mode="json"),
        # An optimizer setting that is off (None, e.g. grad_clip_norm) stays out of the key, so runs
        # recorded before the setting existed keep their keys.
        "optim": config.optim.model_dump(mode="json", exclude_none=True),
        "seed": config.seed,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


class StandaloneCache(ParquetLog):
    """An append-only Parquet folder (local or pyarrow URI) of stand-alone results.

    Each :meth:`put` writes one new file atomically, so concurrent writers and crashes never
    damage what is there; a key written twice (two racing comparisons) reads back its first row.
    """

    def __init__(self, location: str | Path) -> None:
        super().__init__(location, SCHEMA)

    def lookup(self) -> dict[str, StandaloneResult]:
        """Every current-protocol result by key (the earliest row of a key wins); older rows are skipped."""
        current = [r for r in self.read().to_pylist() if r["protocol"] == PROTOCOL_VERSION]
        rows = sorted(current, key=lambda r: r["recorded_at"])
        found: dict[str, StandaloneResult] = {}
        for row in rows:
            found.setdefault(row["key"], StandaloneResult.from_row(row))
        return found

    def put(self, result: StandaloneResult) -> str:
        path = self.append_rows([result.row()])
        assert path is not None
        return path


def train_standalone(
    config: JobConfig, arch: Arch, data: DataSplits | None = None, init: torch.nn.Module | None = None
) -> StandaloneResult:
    """Train ``arch`` from scratch with the config's recipe; accuracy and NLL on val and test.

    The recipe is the supernet trainer's: SGD (Nesterov when momentum > 0), warm-up then cosine,
    the gradient clipped to ``optim.grad_clip_norm`` when set, the same seeded batches, plain
    cross-entropy on the labels; batch norm uses batch statistics while training and its running
    statistics when evaluated. It runs on ``launch.threads`` torch threads, as the supernet's
    training loop does, so the two wall times compare. No cache: see :func:`standalone_results`.
    ``init``: start from these weights (a subnet extracted from a supernet: fine-tuning) instead
    of a fresh initialisation.
    """
    data = data if data is not None else load_data(config.data)
    space = job_space(config)
    space.validate(arch)
    torch.set_num_threads(config.launch.threads)
    torch.manual_seed(config.seed)
    model = init if init is not None else space.build_standalone(arch)
    optimizer, scheduler = sgd_with_schedule(model, config.optim)
    batches = BatchStream(data.train, config.data.batch_size, config.seed)
    started = time.perf_counter()
    model.train()
    for step in range(config.optim.steps):
        images, labels = batches.batch(step)
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        if config.optim.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip_norm)
        optimizer.step()
        scheduler.step()
    wall_s = time.perf_counter() - started
    model.eval()
    scores = {split: score_images(model, data.split(split)) for split in EVAL_SPLITS}
    return StandaloneResult(
        key=standalone_key(config, space, arch),
        arch=arch,
        mflops=space.flops(arch) / 1e6,
        params=space.params(arch),
        steps=config.optim.steps,
        seed=config.seed,
        accuracy={split: s.accuracy for split, s in scores.items()},
        nll={split: s.mean_nll for split, s in scores.items()},
        test_scores=scores["test"],
        train_wall_s=wall_s,
    )


def standalone_results(
    config: JobConfig, archs: Sequence[Arch], cache: StandaloneCache | None = None
) -> list[StandaloneResult]:
    """Each architecture's stand-alone result, read from ``cache`` or trained once and added to it.

    Results come back in the order of ``archs``; ``from_cache`` tells which were trained now.
    """
    data = load_data(config.data)
    space = job_space(config)
    known = cache.lookup() if cache is not None else {}
    results = []
    for arch in archs:
        key = standalone_key(config, space, space.validate(arch))
        if key in known:
            results.append(known[key])
            continue
        result = train_standalone(config, arch, data)
        if cache is not None:
            cache.put(result)
        known[key] = result
        results.append(result)
    return results
