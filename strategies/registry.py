"""Strategies by name: the config and CLI choose one with ``strategy: {name, params}``."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from nasfleet.errors import NasfleetError
from nasfleet.strategies.base import TrainingStrategy
from nasfleet.strategies.deps import DepsStrategy
from nasfleet.strategies.fewshot import FewShotGMStrategy
from nasfleet.strategies.pada import PadaStrategy
from nasfleet.strategies.progressive import ProgressiveStrategy
from nasfleet.strategies.sandwich import SandwichStrategy
from nasfleet.strategies.shift import ShiftStrategy
from nasfleet.strategies.sorted import SortedStrategy
from nasfleet.strategies.uniform import UniformStrategy
from nasfleet.supernet import SearchSpace

STRATEGIES: dict[str, type[TrainingStrategy]] = {
    cls.name: cls
    for cls in (
        UniformStrategy, SandwichStrategy, SortedStrategy, ShiftStrategy, DepsStrategy, ProgressiveStrategy,
        PadaStrategy, FewShotGMStrategy,
    )
}


def build_strategy(name: str, params: dict[str, Any], space: SearchSpace) -> TrainingStrategy:
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise NasfleetError(f"unknown strategy {name!r} (known: {', '.join(sorted(STRATEGIES))})") from None
    try:
        validated = cls.Params.model_validate(params)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise NasfleetError(f"invalid parameter {where!r} for strategy {name!r}: {err['msg']}") from None
    return cls(space, validated)
