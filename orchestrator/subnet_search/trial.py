"""The Ray Tune side of a search: a trial evaluates one subnet, a searcher proposes them.

:class:`SubnetTrial` is a class trainable so that, with ``reuse_actors=True``, each Tune
actor builds a :class:`~nasfleet.orchestrator.evaluate.pool.SupernetReplica` (the evaluation
pool's actor body) over the shared object-store weights once, in ``setup``, and then serves
trial after trial through ``reset_config``. A trial's fidelity is how much of
the validation set it has seen: each ``step`` evaluates one more fixed chunk and reports
the running accuracy, so ASHA, HyperBand or the median rule can stop a poor subnet after
its first chunks. Every trial uses the same chunks in the same order, so trials at the same
rung are compared on the same images.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np
from ray import tune
from ray.tune.search import Searcher

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.evaluate.pool import SharedSupernet, SupernetReplica
from nasfleet.orchestrator.metrics import TrainingMetrics
from nasfleet.orchestrator.results.store import ParquetLog
from nasfleet.orchestrator.subnet_search.log import evaluation_row
from nasfleet.strategies.searchers import Evaluated, SearchAlgorithm, SearchProblem
from nasfleet.supernet import Arch, arch_from_json, arch_to_json


def validation_chunks(num_examples: int, chunks: int, seed: int) -> list[np.ndarray]:
    """The validation set's indices, shuffled once (seeded) and cut into ``chunks`` near-equal parts."""
    if chunks > num_examples:
        raise NasfleetError(f"{chunks} fidelity chunks for {num_examples} validation examples: use fewer chunks")
    return np.array_split(np.random.default_rng(seed).permutation(num_examples), chunks)


class SubnetTrial(tune.Trainable):
    """Evaluate one subnet of the shared supernet, one validation chunk per step."""

    def setup(  # type: ignore[override]
        self, config: dict[str, Any], shared: SharedSupernet, chunks: int, seed: int
    ) -> None:
        # Tune logs each trial's end-of-trial checkpoint at INFO: noise in a search's output.
        for name in ("ray.tune", "ray.train"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.replica = SupernetReplica(shared, threads=1)
        self.space = self.replica.trained.space
        self.chunks = validation_chunks(len(self.replica.trained.data.val), chunks, seed)
        self.trials_served = 1
        self._start(config["arch"])

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        self.trials_served += 1
        self._start(new_config["arch"])
        return True

    def _start(self, arch_json: str) -> None:
        self.arch = self.space.validate(arch_from_json(arch_json))
        self.correct = self.seen = self.chunks_done = 0
        self.eval_s = 0.0
        self.started_at = time.time()

    def step(self) -> dict[str, Any]:
        started = time.perf_counter()
        chunk = self.chunks[self.chunks_done]
        self.correct += self.replica.correct_on(self.arch, "val", chunk)
        self.seen += len(chunk)
        self.chunks_done += 1
        self.eval_s += time.perf_counter() - started
        complete = self.chunks_done == len(self.chunks)
        return {
            "accuracy": self.correct / self.seen,
            "val_samples": self.seen,
            "complete": complete,
            "done": complete,
            "eval_s": self.eval_s,
            "actor_pid": os.getpid(),
            "trials_in_actor": self.trials_served,
            # Wall-clock bounds of the trial so far: what shows that --concurrency N trials ran at once.
            "trial_started_at": self.started_at,
            "reported_at": time.time(),
        }

    def save_checkpoint(self, checkpoint_dir: str) -> dict[str, Any]:
        """What HyperBand needs to pause and resume a trial (batch norm is re-estimated on resume)."""
        return {"arch": arch_to_json(self.arch), "correct": self.correct, "seen": self.seen, "chunks": self.chunks_done,
                "eval_s": self.eval_s}

    def load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._start(checkpoint["arch"])  # the same trial, resumed: batch norm is re-estimated
        self.correct, self.seen, self.chunks_done = checkpoint["correct"], checkpoint["seen"], checkpoint["chunks"]
        self.eval_s = checkpoint["eval_s"]


class ArchSearcher(Searcher):
    """Adapts a :class:`SearchAlgorithm` (ask/tell) to Tune's ``Searcher`` (suggest/on_trial_complete).

    An algorithm that runs out of feasible proposals ends the experiment; its error is
    kept in :attr:`error` for the caller to report, instead of surfacing as a Tune traceback.
    """

    def __init__(self, algorithm: SearchAlgorithm) -> None:
        super().__init__(metric="accuracy", mode="max")
        self.algorithm = algorithm
        self.error: NasfleetError | None = None
        self._pending: dict[str, Arch] = {}

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        try:
            arch = self.algorithm.ask()
        except NasfleetError as exc:
            self.error = exc
            return Searcher.FINISHED
        self._pending[trial_id] = arch
        return {"arch": arch_to_json(arch)}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        arch = self._pending.pop(trial_id, None)
        if arch is None or error or not result or "accuracy" not in result:
            return
        problem = self.algorithm.problem
        self.algorithm.tell(Evaluated(arch, float(result["accuracy"]), problem.costs(arch), bool(result["complete"])))


class RecordEvaluations(tune.Callback):
    """Appends each finished or stopped trial to the search's Parquet log as it ends, so a killed driver loses none."""

    def __init__(
        self, log: ParquetLog, problem: SearchProblem, labels: dict[str, str], checkpoint: str,
        metrics: TrainingMetrics | None = None,
    ) -> None:
        self.log = log
        self.problem = problem
        self.labels = labels
        self.checkpoint = checkpoint
        self.metrics = metrics
        self.recorded = 0
        self.val_samples = 0
        self.best_accuracy = 0.0

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result
        if not result or "accuracy" not in result:
            return
        arch = arch_from_json(trial.config["arch"])
        row = evaluation_row(
            self.labels["search"], self.labels["searcher"], self.labels["scheduler"], trial.trial_id, arch, result,
            self.problem.costs(arch), self.checkpoint,
        )
        self.log.append_rows([row])
        self.recorded += 1
        self.val_samples += row["val_samples"]
        self.best_accuracy = max(self.best_accuracy, float(result["accuracy"]))
        if self.metrics is not None:
            self.metrics.search_trial(self.labels["search"], self.labels["searcher"], self.best_accuracy)
            self.metrics.evaluated(1, float(result.get("time_total_s", 0.0)))
