"""Search spaces by name, and the typed config union a YAML file is validated into."""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter, ValidationError

from nasfleet.errors import NasfleetError
from nasfleet.supernet.mbconv import MBConvSpace, MBConvSpaceConfig
from nasfleet.supernet.space import SearchSpace
from nasfleet.supernet.vit import ViTSpace, ViTSpaceConfig

SpaceConfig = Annotated[Union[MBConvSpaceConfig, ViTSpaceConfig], Field(discriminator="name")]
_SPACE_CONFIG = TypeAdapter(SpaceConfig)


def build_space(config: MBConvSpaceConfig | ViTSpaceConfig) -> SearchSpace:
    if isinstance(config, MBConvSpaceConfig):
        return MBConvSpace(config)
    return ViTSpace(config)


def space_from_dict(data: dict[str, Any]) -> SearchSpace:
    """Rebuild a space from ``SearchSpace.config_dict()`` output (e.g. an export's metadata)."""
    try:
        return build_space(_SPACE_CONFIG.validate_python(data))
    except ValidationError as exc:
        raise NasfleetError(f"invalid search-space config: {exc.errors()[0]['msg']}") from None
