"""Search spaces by name: a config model and the space it builds, registered like every plug-in.

A job config's ``space:`` section is validated into the config model its ``name`` selects,
so a space from another package (an entry point in ``nasfleet.spaces``, or a module in the
job's ``imports:``) is configured exactly like the built-in ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from nasfleet.errors import NasfleetError
from nasfleet.registry import Registry
from nasfleet.supernet.conv1d import Conv1DSpace, Conv1DSpaceConfig
from nasfleet.supernet.gpt import GPTSpace, GPTSpaceConfig
from nasfleet.supernet.mbconv import MBConvSpace, MBConvSpaceConfig
from nasfleet.supernet.space import SearchSpace
from nasfleet.supernet.vit import ViTSpace, ViTSpaceConfig

SHAPE_FIELDS = ("in_channels", "image_size", "num_classes")
"""Fields every space config has, taken from the data set when a job's space is built."""


@dataclass(frozen=True)
class SpaceEntry:
    config: type[BaseModel]
    """Its pydantic config model; a ``name`` field with the registered name, plus ``SHAPE_FIELDS``."""
    space: type[SearchSpace]
    """Built as ``space(config)``."""


SPACES: Registry[SpaceEntry] = Registry("search space", "nasfleet.spaces")
SPACES.add("mbconv", SpaceEntry(MBConvSpaceConfig, MBConvSpace))
SPACES.add("vit", SpaceEntry(ViTSpaceConfig, ViTSpace))
SPACES.add("conv1d", SpaceEntry(Conv1DSpaceConfig, Conv1DSpace))
SPACES.add("gpt", SpaceEntry(GPTSpaceConfig, GPTSpace))

SpaceConfig = BaseModel
"""The type of a validated ``space:`` section: the registered config model its name selects."""


def space_config_from_dict(data: Any) -> BaseModel:
    """Validate a ``space:`` mapping into its registered config model (``name`` defaults to mbconv)."""
    if isinstance(data, BaseModel):
        return data
    if not isinstance(data, dict):
        raise ValueError(f"expected a mapping with a 'name', got {type(data).__name__}")
    entry = SPACES.get(str(data.get("name", "mbconv")))
    return entry.config.model_validate(data)


def build_space(config: BaseModel) -> SearchSpace:
    return SPACES.get(getattr(config, "name")).space(config)


def space_from_dict(data: dict[str, Any]) -> SearchSpace:
    """Rebuild a space from ``SearchSpace.config_dict()`` output (e.g. an export's metadata)."""
    try:
        return build_space(space_config_from_dict(data))
    except ValidationError as exc:
        raise NasfleetError(f"invalid search-space config: {exc.errors()[0]['msg']}") from None


def space_for_shape(config: BaseModel, in_channels: int, image_size: int, num_classes: int) -> SearchSpace:
    """The configured space with its input and output shape taken from the data.

    A shape field the config sets explicitly must agree with the data: ``image_size: 28`` on
    8×8 images is a mistake to report, not a value to override.
    """
    shape = {"in_channels": in_channels, "image_size": image_size, "num_classes": num_classes}
    for field in SHAPE_FIELDS:
        given = getattr(config, field)
        if field in config.model_fields_set and given != shape[field]:
            raise NasfleetError(f"space.{field} is {given} but the data set has {shape[field]}; remove it or fix it")
    shaped = config.model_copy(update=shape)
    try:
        return build_space(type(config).model_validate(shaped.model_dump()))
    except ValidationError as exc:
        raise NasfleetError(f"space does not fit the data: {exc.errors()[0]['msg']}") from None
