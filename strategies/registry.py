"""Strategies by name: the config and CLI choose one with ``strategy: {name, params}``.

Built-in strategies register with ``@STRATEGIES.register()`` in their own modules; another
package registers under the entry-point group ``nasfleet.strategies`` (see docs/extending.md).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from nasfleet.errors import NasfleetError
from nasfleet.registry import Registry
from nasfleet.strategies.base import TrainingStrategy
from nasfleet.supernet import SearchSpace

STRATEGIES: Registry[type[TrainingStrategy]] = Registry("strategy", "nasfleet.strategies")


def strategy_class(name: str) -> type[TrainingStrategy]:
    return STRATEGIES.get(name)


def build_strategy(name: str, params: dict[str, Any], space: SearchSpace) -> TrainingStrategy:
    """The named strategy with validated parameters; unknown names and bad values are one NasfleetError."""
    cls = STRATEGIES.get(name)
    try:
        validated = cls.Params.model_validate(params)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "params"
        message = str(err["msg"]).removeprefix("Value error, ")
        raise NasfleetError(f"invalid parameter {where!r} for strategy {name!r}: {message}") from None
    return cls(space, validated)
