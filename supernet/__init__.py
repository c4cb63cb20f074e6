"""Elastic supernets whose subnets share weights, their costs, and subnet extraction."""

from nasfleet.supernet.arch import (
    Arch,
    BlockChoice,
    ConvArch,
    LayerChoice,
    StageChoice,
    TransformerArch,
    arch_from_dict,
    arch_from_json,
    arch_to_dict,
    arch_to_json,
)
from nasfleet.supernet.conv1d import Conv1DSpace, Conv1DSpaceConfig
from nasfleet.supernet.gpt import GPTSpace, GPTSpaceConfig
from nasfleet.supernet.bn import calibrated_batchnorm, recalibrate_batchnorm
from nasfleet.supernet.extract import extract, load_subnet, save_subnet
from nasfleet.supernet.latency import (
    LatencyCheck,
    LatencyTable,
    build_latency_table,
    mean_relative_error,
    measure_latency_ms,
    table_error,
)
from nasfleet.supernet.mbconv import MBConvSpace, MBConvSpaceConfig, MBConvStageSpec
from nasfleet.supernet.registry import SPACES, SpaceConfig, SpaceEntry, build_space, space_config_from_dict, space_for_shape, space_from_dict
from nasfleet.supernet.space import SearchSpace
from nasfleet.supernet.vit import ViTSpace, ViTSpaceConfig

__all__ = [
    "Arch", "BlockChoice", "ConvArch", "LayerChoice", "StageChoice", "TransformerArch",
    "arch_from_dict", "arch_from_json", "arch_to_dict", "arch_to_json",
    "Conv1DSpace", "Conv1DSpaceConfig", "GPTSpace", "GPTSpaceConfig",
    "calibrated_batchnorm", "recalibrate_batchnorm", "extract", "load_subnet", "save_subnet",
    "MBConvSpace", "MBConvSpaceConfig", "MBConvStageSpec", "SPACES", "SpaceConfig", "SpaceEntry", "build_space", "space_config_from_dict", "space_for_shape",
    "space_from_dict",
    "SearchSpace", "ViTSpace", "ViTSpaceConfig",
    "LatencyCheck", "LatencyTable", "build_latency_table", "mean_relative_error", "measure_latency_ms", "table_error",
]
