"""Architecture values: which subnet of a supernet to run.

An architecture is a frozen, hashable dataclass that round-trips through JSON. It is
canonical: blocks dropped by a smaller depth are simply absent, so two values compare
equal exactly when they describe the same subnet.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Union

from nasfleet.errors import NasfleetError


@dataclass(frozen=True)
class BlockChoice:
    """One inverted-residual block: depthwise kernel size and expansion ratio."""

    kernel: int
    expand: int


@dataclass(frozen=True)
class StageChoice:
    """One stage: its output width and its active blocks (depth = ``len(blocks)``)."""

    width: int
    blocks: tuple[BlockChoice, ...]

    @property
    def depth(self) -> int:
        return len(self.blocks)


@dataclass(frozen=True)
class ConvArch:
    """A subnet of an inverted-residual space: ``space`` is "mbconv" (images) or "conv1d" (sequences)."""

    stages: tuple[StageChoice, ...]
    space: str = "mbconv"

    def describe(self) -> str:
        """A compact one-line form for tables, e.g. ``16[k3e2,k5e4] 24[k3e3]``."""
        return " ".join(
            f"{s.width}[" + ",".join(f"k{b.kernel}e{b.expand}" for b in s.blocks) + "]"
            for s in self.stages
        )


@dataclass(frozen=True)
class LayerChoice:
    """One transformer layer: attention heads and MLP expansion ratio."""

    heads: int
    mlp_ratio: float


@dataclass(frozen=True)
class TransformerArch:
    """A subnet of a transformer space (``space``: "vit" image patches, "gpt" text): embedding width and layers."""

    embed_dim: int
    layers: tuple[LayerChoice, ...]
    space: str = "vit"

    @property
    def depth(self) -> int:
        return len(self.layers)

    def describe(self) -> str:
        layers = ",".join(f"h{lay.heads}m{lay.mlp_ratio:g}" for lay in self.layers)
        return f"e{self.embed_dim}[{layers}]"


Arch = Union[ConvArch, TransformerArch]


CONV_ARCH_SPACES = ("mbconv", "conv1d")
"""Spaces whose subnets are :class:`ConvArch` stages of inverted-residual blocks (images, sequences)."""
TRANSFORMER_ARCH_SPACES = ("vit", "gpt")
"""Spaces whose subnets are :class:`TransformerArch` layer stacks (image patches, text tokens)."""


def arch_to_dict(arch: Arch) -> dict[str, Any]:
    return asdict(arch)


def arch_to_json(arch: Arch) -> str:
    return json.dumps(arch_to_dict(arch), sort_keys=True)


def arch_from_dict(data: dict[str, Any]) -> Arch:
    """Build an architecture from its dict form; raises NasfleetError on a malformed value.

    This checks structure only; whether the value lies in a given search space is
    ``SearchSpace.validate``'s job.
    """
    try:
        space = data["space"]
        if space in CONV_ARCH_SPACES:
            return ConvArch(
                stages=tuple(
                    StageChoice(
                        width=_as_int(stage["width"]),
                        blocks=tuple(
                            BlockChoice(kernel=_as_int(b["kernel"]), expand=_as_int(b["expand"]))
                            for b in stage["blocks"]
                        ),
                    )
                    for stage in data["stages"]
                ),
                space=space,
            )
        if space in TRANSFORMER_ARCH_SPACES:
            return TransformerArch(
                embed_dim=_as_int(data["embed_dim"]),
                layers=tuple(
                    LayerChoice(heads=_as_int(lay["heads"]), mlp_ratio=float(lay["mlp_ratio"]))
                    for lay in data["layers"]
                ),
                space=space,
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise NasfleetError(f"malformed architecture {data!r}: {exc!r}") from None
    raise NasfleetError(f"unknown architecture space {space!r} (expected one of {', '.join((*CONV_ARCH_SPACES, *TRANSFORMER_ARCH_SPACES))})")


def arch_from_json(text: str) -> Arch:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NasfleetError(f"architecture is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise NasfleetError("architecture JSON must be an object")
    return arch_from_dict(data)


def _as_int(value: Any) -> int:
    if isinstance(value, bool) or int(value) != value:
        raise ValueError(f"{value!r} is not an integer")
    return int(value)
