"""ShiftNAS-style sampling: more training for the complexity regions that still improve.

Subnets are binned by MFLOPs (quantiles of the space); each bin keeps a moving average of how
much its subnets' loss has recently dropped, and sampling shifts toward the bins that drop most.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field, PositiveFloat, PositiveInt, ValidationInfo, field_validator

from nasfleet.errors import NasfleetError
from nasfleet.strategies.base import FROM_LARGEST, StrategyParams, SubnetTask, TrainingStrategy
from nasfleet.strategies.registry import STRATEGIES
from nasfleet.supernet import Arch, SearchSpace


class ShiftParams(StrategyParams):
    num_bins: int = Field(default=4, ge=2)
    num_random: PositiveInt = 2
    temperature: PositiveFloat = 0.5
    min_prob: float = Field(default=0.2, ge=0.0, le=1.0)
    decay: float = Field(default=0.9, ge=0.0, lt=1.0)
    calibration_samples: PositiveInt = 512
    max_tries: PositiveInt = 64
    label_smoothing: float = 0.1
    # A prior over bins (e.g. favour small subnets); the improvement scores reweight it.
    prior: list[float] | None = None

    @field_validator("prior")
    @classmethod
    def _a_distribution(cls, prior: list[float] | None, info: ValidationInfo) -> list[float] | None:
        if prior is None:
            return None
        if len(prior) != info.data.get("num_bins", len(prior)):
            raise ValueError(f"needs one probability per bin ({info.data.get('num_bins')})")
        if any(p < 0 for p in prior) or not np.isclose(sum(prior), 1.0):
            raise ValueError("probabilities must be non-negative and sum to one")
        return prior


@STRATEGIES.register()
class ShiftStrategy(TrainingStrategy):
    """ShiftNAS: shifts subnet sampling toward the complexity bins whose loss is still falling.

    Each step trains the largest subnet (the teacher, as in sandwich) and ``num_random`` subnets,
    each drawn by first choosing a bin from :meth:`bin_probabilities`, then a subnet of that bin.
    Bin edges are MFLOPs quantiles of ``calibration_samples`` subnets drawn from the first rng seen.
    """

    name = "shift"
    Params = ShiftParams
    params: ShiftParams

    def __init__(self, space: SearchSpace, params: StrategyParams) -> None:
        super().__init__(space, params)
        bins = self.params.num_bins
        self.edges_mflops: np.ndarray | None = None  # inner edges, num_bins - 1 of them
        self.improvement = np.zeros(bins)  # moving average of the per-step loss decrease
        self.last_loss = np.full(bins, np.nan)
        self._planned_bins: list[int | None] = []

    # -- bins ----------------------------------------------------------------------
    def calibrate(self, rng: np.random.Generator) -> np.ndarray:
        """The bins' inner MFLOPs edges, drawn once from ``rng`` and kept (they are in the state)."""
        if self.edges_mflops is None:
            mflops = [self._mflops(self.space.sample_choices(rng)) for _ in range(self.params.calibration_samples)]
            quantiles = np.linspace(0, 1, self.params.num_bins + 1)[1:-1]
            self.edges_mflops = np.quantile(mflops, quantiles)
        return self.edges_mflops

    def _mflops(self, arch: Arch) -> float:
        return self.space.flops(arch) / 1e6

    def bin_of(self, arch: Arch, rng: np.random.Generator) -> int:
        """The complexity bin of ``arch`` (calibrating the bins from ``rng`` if not yet done)."""
        return int(np.searchsorted(self.calibrate(rng), self._mflops(arch), side="right"))

    def sample_with_complexity(self, rng: np.random.Generator, bin_index: int) -> Arch:
        """A subnet from bin ``bin_index`` by rejection sampling.

        After ``max_tries`` misses (a bin far narrower than the others) the draw closest to the
        bin in MFLOPs is returned, so a step never stalls.
        """
        if not 0 <= bin_index < self.params.num_bins:
            raise NasfleetError(f"complexity bin {bin_index} is outside 0..{self.params.num_bins - 1}")
        edges = self.calibrate(rng)
        low = -np.inf if bin_index == 0 else edges[bin_index - 1]
        high = np.inf if bin_index == len(edges) else edges[bin_index]
        best, best_gap = None, np.inf
        for _ in range(self.params.max_tries):
            arch = self.space.sample_choices(rng)
            mflops = self._mflops(arch)
            found = int(np.searchsorted(edges, mflops, side="right"))  # as bin_of, without re-costing
            if found == bin_index:
                return arch
            gap = low - mflops if found < bin_index else mflops - high
            if gap < best_gap:
                best, best_gap = arch, gap
        assert best is not None
        return best

    def bin_probabilities(self) -> np.ndarray:
        """Softmax of the scale-free improvements over ``temperature`` (times ``prior``), mixed with uniform.

        Improvements are divided by the largest magnitude, so the shift does not depend on the loss scale.
        """
        scale = np.abs(self.improvement).max()
        scores = self.improvement / scale if scale > 0 else np.zeros_like(self.improvement)
        weights = np.exp((scores - scores.max()) / self.params.temperature)
        if self.params.prior is not None:
            weights = weights * np.array(self.params.prior)
        uniform = np.full(self.params.num_bins, 1.0 / self.params.num_bins)
        return (1 - self.params.min_prob) * weights / weights.sum() + self.params.min_prob * uniform

    # -- the protocol --------------------------------------------------------------
    def subnets_for_step(self, step: int, rng: np.random.Generator) -> list[SubnetTask]:
        self.calibrate(rng)
        probs = self.bin_probabilities()
        tasks = [SubnetTask(self.space.largest(), role="largest")]
        self._planned_bins = [None]
        for _ in range(self.params.num_random):
            b = int(rng.choice(self.params.num_bins, p=probs))
            tasks.append(SubnetTask(self.sample_with_complexity(rng, b), role=f"bin{b}", distill=FROM_LARGEST))
            self._planned_bins.append(b)
        return tasks

    def after_step(self, step: int, losses: list[float]) -> None:
        self.observe(self._planned_bins, losses)

    def observe(self, bins: list[int | None], losses: list[float]) -> None:
        """Fold one step's losses into each bin's moving average of loss decrease."""
        d = self.params.decay
        for b, loss in zip(bins, losses):
            if b is None:
                continue
            if not np.isnan(self.last_loss[b]):
                self.improvement[b] = d * self.improvement[b] + (1 - d) * (self.last_loss[b] - loss)
            self.last_loss[b] = loss

    def state_dict(self) -> dict[str, Any]:
        return {
            "edges_mflops": None if self.edges_mflops is None else self.edges_mflops.tolist(),
            "improvement": self.improvement.tolist(),
            "last_loss": self.last_loss.tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        edges = state["edges_mflops"]
        self.edges_mflops = None if edges is None else np.array(edges, dtype=float)
        self.improvement = np.array(state["improvement"], dtype=float)
        self.last_loss = np.array(state["last_loss"], dtype=float)
