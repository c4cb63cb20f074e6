"""Subnet search algorithms behind one ask/tell protocol.

``ask()`` proposes a new feasible subnet, ``tell()`` reports an evaluated one. The
protocol is the one Ray Tune's ``Searcher`` uses (``suggest`` / ``on_trial_complete``),
so a thin adapter runs any of these inside a Tune experiment, while benchmarks can drive
them directly. Trials may finish in any order and several may be outstanding: every
algorithm here is asynchronous.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nasfleet.errors import NasfleetError
from nasfleet.registry import Registry
from nasfleet.strategies.searchers.pareto import crowding_distance, hypervolume, non_dominated_sort, pareto_mask
from nasfleet.strategies.searchers.problem import Evaluated, SearchProblem
from nasfleet.supernet import Arch, SearchSpace

PROPOSAL_TRIES = 2000


class SearcherParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchAlgorithm(ABC):
    """Propose feasible subnets never proposed before; learn from the evaluated ones."""

    name: ClassVar[str]
    Params: ClassVar[type[SearcherParams]] = SearcherParams

    def __init__(self, problem: SearchProblem, params: SearcherParams, seed: int) -> None:
        self.problem = problem
        self.space: SearchSpace = problem.space
        self.params = params
        self.rng = np.random.default_rng(seed)
        self.history: list[Evaluated] = []
        self._proposed: set[Arch] = set()

    @abstractmethod
    def _propose(self) -> Arch:
        """A candidate; :meth:`ask` discards it when it is infeasible or already proposed."""

    def _observe(self, result: Evaluated) -> None:
        """React to a new result (after it joined :attr:`history`)."""

    def ask(self) -> Arch:
        for _ in range(PROPOSAL_TRIES):
            arch = self._propose()
            if arch not in self._proposed and self.problem.feasible(arch):
                self._proposed.add(arch)
                return arch
        raise NasfleetError(
            f"{self.name}: no new subnet satisfying the constraints in {PROPOSAL_TRIES} proposals "
            f"({len(self._proposed)} proposed so far): the constraints leave too few subnets for this budget"
        )

    def tell(self, result: Evaluated) -> None:
        self._proposed.add(result.arch)
        self.history.append(result)
        self._observe(result)

    # -- shared variation operators ------------------------------------------------
    def random_arch(self) -> Arch:
        return self.space.sample_choices(self.rng)

    def mutate(self, arch: Arch, rate: float | None = None) -> Arch:
        """Resample each active gene with probability ``rate`` (default: one gene on average), at least one."""
        genes = np.array(self.space.to_genes(arch))
        sizes = np.array(self.space.gene_sizes())
        active = np.flatnonzero(self.space.active_genes(genes) & (sizes > 1))
        if active.size == 0:
            return arch
        rate = 1.0 / active.size if rate is None else rate
        chosen = active[self.rng.random(active.size) < rate]
        if chosen.size == 0:
            chosen = self.rng.choice(active, size=1)
        for g in chosen:  # a different value: a draw from the other sizes[g] - 1
            genes[g] = (genes[g] + 1 + self.rng.integers(sizes[g] - 1)) % sizes[g]
        return self.space.from_genes(genes.tolist())

    def crossover(self, a: Arch, b: Arch) -> Arch:
        """Uniform crossover of the two gene vectors."""
        ga, gb = np.array(self.space.to_genes(a)), np.array(self.space.to_genes(b))
        take_b = self.rng.random(ga.size) < 0.5
        return self.space.from_genes(np.where(take_b, gb, ga).tolist())


SEARCHERS: Registry[type[SearchAlgorithm]] = Registry("searcher", "nasfleet.searchers")
"""Subnet searchers by name; another package registers under the entry-point group ``nasfleet.searchers``."""


@SEARCHERS.register()
class RandomSearch(SearchAlgorithm):
    """Each dimension drawn independently (depth first), as one-shot training samples."""

    name = "random"

    def _propose(self) -> Arch:
        return self.random_arch()


class EvolutionParams(SearcherParams):
    # Small, for searches of tens of evaluations (benchmarks/search_quality.py: 8/3 beat 16/4 and 10/5 there).
    population: int = Field(8, ge=2)
    sample_size: int = Field(3, ge=1)

    def model_post_init(self, _: Any) -> None:
        if self.sample_size > self.population:
            raise ValueError(f"sample_size {self.sample_size} exceeds population {self.population}")


@SEARCHERS.register()
class RegularizedEvolution(SearchAlgorithm):
    """Regularised (aging) evolution, Real et al. 2019: tournament, mutate, the oldest dies.

    The population is the ``population`` most recent results. A tournament of
    ``sample_size`` picks the parent; with several objectives each tournament scores by a
    freshly drawn weighted Chebyshev scalarisation (as ParEGO does), so successive
    tournaments pull toward different parts of the accuracy–cost front instead of one point.
    """

    name = "evolution"
    Params = EvolutionParams
    params: EvolutionParams

    def _propose(self) -> Arch:
        if len(self.history) < self.params.population:
            return self.random_arch()
        population = self.history[-self.params.population :]
        picks = self.rng.choice(len(population), size=self.params.sample_size, replace=False)
        scores = chebyshev_scores(self.problem.objective_matrix(population), self.rng)
        parent = population[picks[np.argmin(scores[picks])]]
        return self.mutate(parent.arch)


def chebyshev_scores(objectives: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Weighted Chebyshev distance to the ideal point, objectives rescaled to [0, 1]; lower is better."""
    low, high = objectives.min(axis=0), objectives.max(axis=0)
    scaled = (objectives - low) / np.where(high > low, high - low, 1.0)
    weights = rng.dirichlet(np.ones(objectives.shape[1]))
    return (weights * scaled).max(axis=1)


class NSGA2Params(SearcherParams):
    population: int = Field(12, ge=4)
    crossover_prob: float = Field(0.9, ge=0.0, le=1.0)


@SEARCHERS.register()
class NSGA2(SearchAlgorithm):
    """NSGA-II, Deb et al. 2002: non-dominated sorting and crowding distance select survivors.

    Asynchronous generations: offspring are bred from the current parents (binary
    tournaments on rank, then crowding), and once ``population`` offspring have been
    evaluated, parents and offspring compete for the next parent population.
    """

    name = "nsga2"
    Params = NSGA2Params
    params: NSGA2Params

    def __init__(self, problem: SearchProblem, params: SearcherParams, seed: int) -> None:
        super().__init__(problem, params, seed)
        self.parents: list[Evaluated] = []
        self.offspring: list[Evaluated] = []
        self._rank = np.zeros(0)
        self._crowding = np.zeros(0)

    def _propose(self) -> Arch:
        if len(self.parents) < self.params.population:
            return self.random_arch()
        first, second = self._tournament(), self._tournament()
        child = first.arch
        if self.rng.random() < self.params.crossover_prob:
            child = self.crossover(first.arch, second.arch)
        return self.mutate(child)

    def _tournament(self) -> Evaluated:
        i, j = self.rng.choice(len(self.parents), size=2, replace=False)
        key_i, key_j = (self._rank[i], -self._crowding[i]), (self._rank[j], -self._crowding[j])
        return self.parents[i if key_i <= key_j else j]

    def _observe(self, result: Evaluated) -> None:
        if len(self.parents) < self.params.population:
            self.parents.append(result)
            if len(self.parents) == self.params.population:
                self._select(self.parents)
            return
        self.offspring.append(result)
        if len(self.offspring) >= self.params.population:
            self._select(self.parents + self.offspring)
            self.offspring = []

    def _select(self, pool: list[Evaluated]) -> None:
        """Keep the best ``population`` of ``pool`` by rank, then crowding distance."""
        objectives = self.problem.objective_matrix(pool)
        survivors: list[int] = []
        rank, crowding = np.zeros(len(pool)), np.zeros(len(pool))
        for level, front in enumerate(non_dominated_sort(objectives)):
            distance = crowding_distance(objectives[front])
            rank[front], crowding[front] = level, distance
            room = self.params.population - len(survivors)
            if room <= 0:
                break
            survivors += [int(i) for i in front[np.argsort(-distance, kind="stable")][:room]]
        self.parents = [pool[i] for i in survivors]
        self._rank, self._crowding = rank[survivors], crowding[survivors]


class PredictorParams(SearcherParams):
    initial: int = Field(10, ge=2)
    """Random subnets evaluated before the predictor takes over."""
    candidates: int = Field(400, ge=1)
    """Candidates the predictor screens for each proposal."""
    model: str = "ridge"

    def model_post_init(self, _: Any) -> None:
        if self.model not in PREDICTOR_MODELS:
            raise ValueError(f"unknown predictor model {self.model!r} (expected {', '.join(PREDICTOR_MODELS)})")


PREDICTOR_MODELS = ("ridge", "gbm", "mlp")


def make_regressor(model: str, seed: int) -> Any:
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import RidgeCV
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if model == "ridge":
        return RidgeCV(alphas=np.logspace(-3, 3, 13))
    if model == "gbm":
        return GradientBoostingRegressor(n_estimators=150, max_depth=3, learning_rate=0.05, random_state=seed)
    return make_pipeline(StandardScaler(), MLPRegressor((64, 64), alpha=1e-3, max_iter=2000, random_state=seed))


def encode(space: SearchSpace, arch: Arch) -> np.ndarray:
    """One-hot of every active gene (inactive layer slots all zero), plus log-MFLOPs."""
    genes = space.to_genes(arch)
    active = space.active_genes(genes)
    parts = []
    for gene, size, on in zip(genes, space.gene_sizes(), active):
        one_hot = np.zeros(size)
        if on:
            one_hot[gene] = 1.0
        parts.append(one_hot)
    parts.append(np.array([np.log(space.flops(arch))]))
    return np.concatenate(parts)


@SEARCHERS.register()
class PredictorAssisted(SearchAlgorithm):
    """An accuracy predictor pre-screens candidates, as hardware-aware subnet searches do.

    After ``initial`` random evaluations, each proposal fits a regressor (ridge, gradient
    boosting or an MLP on the gene encoding) to every subnet evaluated so far, scores
    ``candidates`` new feasible subnets (half random, half mutations of the current front)
    by the hypervolume their *predicted* point would add to the front, and proposes the
    best one. Only the chosen candidate is evaluated.
    """

    name = "predictor"
    Params = PredictorParams
    params: PredictorParams

    def __init__(self, problem: SearchProblem, params: SearcherParams, seed: int) -> None:
        super().__init__(problem, params, seed)
        self._seed = seed
        self._fitted_on = -1
        self._regressor: Any = None

    def _propose(self) -> Arch:
        complete = [r for r in self.history if r.complete]
        if len(complete) < self.params.initial:
            return self.random_arch()
        if self._fitted_on != len(complete):
            self._regressor = make_regressor(self.params.model, self._seed)
            self._regressor.fit(np.stack([encode(self.space, r.arch) for r in complete]), [r.accuracy for r in complete])
            self._fitted_on = len(complete)
        objectives = self.problem.objective_matrix(complete)
        on_front = pareto_mask(objectives)
        candidates = self._candidates([r for r, keep in zip(complete, on_front) if keep])
        if not candidates:
            return self.random_arch()
        predicted = self._regressor.predict(np.stack([encode(self.space, a) for a in candidates]))
        front = objectives[on_front]
        reference = self.problem.reference_point()
        base = hypervolume(front, reference)
        gains = []
        for arch, accuracy in zip(candidates, predicted):
            point = np.array([-accuracy, *(self.problem.costs(arch)[n] for n in self.problem.objectives)])
            gains.append(hypervolume(np.vstack([front, point]), reference) - base)
        best = int(np.argmax(gains)) if max(gains) > 0 else int(np.argmax(predicted))
        return candidates[best]

    def _candidates(self, front: list[Evaluated]) -> list[Arch]:
        found: dict[Arch, None] = {}
        for i in range(self.params.candidates):
            arch = self.random_arch() if i % 2 == 0 else self.mutate(front[self.rng.integers(len(front))].arch)
            if arch not in self._proposed and self.problem.feasible(arch):
                found[arch] = None
        return list(found)


def searcher_params(name: str, params: dict[str, Any]) -> SearcherParams:
    """The searcher's validated parameters; an unknown searcher or a bad value is one NasfleetError."""
    cls = SEARCHERS.get(name)
    try:
        return cls.Params.model_validate(params)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "params"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise NasfleetError(f"searcher {name!r}: {where}: {message}") from None


def build_searcher(name: str, params: dict[str, Any], problem: SearchProblem, seed: int) -> SearchAlgorithm:
    validated = searcher_params(name, params)
    return SEARCHERS.get(name)(problem, validated, seed)
