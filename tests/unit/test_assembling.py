"""Deep Model Assembling's networks: the split, the frozen meta model, weights moving between phases."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.assembling import assembled_weights, without_part
from nasfleet.orchestrator.train.setup import load_initial_weights
from nasfleet.strategies import build_strategy
from nasfleet.strategies.assembling import build_network, forward_macs, split_sizes
from nasfleet.supernet import MBConvSpace


def test_blocks_split_into_consecutive_modules_earlier_ones_larger() -> None:
    assert split_sizes(8, 3) == [3, 3, 2]
    assert split_sizes(8, 1) == [8]
    with pytest.raises(NasfleetError, match="1 to 8 modules"):
        split_sizes(8, 9)


def test_the_target_network_is_the_largest_subnet_with_the_same_initial_weights() -> None:
    space = MBConvSpace()
    torch.manual_seed(0)
    plain = space.build_standalone(space.largest()).eval()
    torch.manual_seed(0)
    target = build_network(space, 3, "target").eval()
    x = torch.randn(5, 1, 8, 8)
    assert torch.allclose(plain(x), target(x, space.largest()), atol=1e-6)
    assert forward_macs(target, x) == space.flops(space.largest())


def test_incubation_trains_module_k_only_starting_where_the_end_to_end_run_starts() -> None:
    space = MBConvSpace()
    torch.manual_seed(4)
    target = build_network(space, 2, "target").state_dict()
    torch.manual_seed(4)
    incubation = build_network(space, 2, "incubate", module=1)
    trainable = {name for name, p in incubation.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith("parts.1.blocks.") for name in trainable)
    assert all(name.startswith("parts.0.standin.") for name in incubation.state_dict() if name.startswith("parts.0."))
    for name, tensor in incubation.state_dict().items():
        if name.startswith("parts.1."):
            assert torch.equal(tensor, target[name]), name
    meta = build_network(space, 2, "meta")
    assert forward_macs(meta, torch.zeros(1, 1, 8, 8)) < forward_macs(incubation, torch.zeros(1, 1, 8, 8))


def test_assembly_takes_stem_and_head_from_the_meta_model_and_module_k_from_job_k() -> None:
    space = MBConvSpace()
    meta = build_network(space, 2, "meta").state_dict()
    incubated = [build_network(space, 2, "incubate", module=k).state_dict() for k in range(2)]
    state = assembled_weights(meta, incubated)
    target = build_network(space, 2, "target")
    assert set(state) == set(target.state_dict())
    assert torch.equal(state["stem.conv.weight"], meta["stem.conv.weight"])
    assert torch.equal(state["parts.1.blocks.0.expand.conv.weight"], incubated[1]["parts.1.blocks.0.expand.conv.weight"])
    assert not any(name.startswith("parts.0.") for name in without_part(meta, 0))


def test_init_weights_refuses_a_file_for_another_model(tmp_path: Path) -> None:
    space = MBConvSpace()
    target = build_network(space, 2, "target")
    meta_file = tmp_path / "meta.pt"
    torch.save(build_network(space, 2, "meta").state_dict(), meta_file)
    with pytest.raises(NasfleetError, match="tensors the model lacks"):
        load_initial_weights(target, meta_file)
    reshaped = tmp_path / "reshaped.pt"
    torch.save({"head.weight": torch.zeros(3, 3)}, reshaped)
    with pytest.raises(NasfleetError, match="another shape"):
        load_initial_weights(target, reshaped)
    partial = tmp_path / "head.pt"
    torch.save({"head.bias": torch.full((10,), 7.0)}, partial)
    before = target.state_dict()["head.weight"].clone()
    load_initial_weights(target, partial)
    assert torch.equal(target.head.bias, torch.full((10,), 7.0)) and torch.equal(target.head.weight, before)


def test_strategy_checks_its_module_index_on_the_driver() -> None:
    with pytest.raises(NasfleetError, match="module 2 does not exist"):
        build_strategy("assembling", {"modules": 2, "phase": "incubate", "module": 2}, MBConvSpace())


def test_a_job_whose_init_weights_do_not_fit_fails_on_the_driver(tmp_path: Path) -> None:
    from nasfleet.orchestrator.config import config_from_dict
    from nasfleet.orchestrator.launch import validate_job

    wrong = tmp_path / "wrong.pt"
    torch.save({"stem.conv.weight": torch.zeros(1)}, wrong)
    job = config_from_dict({
        "run_dir": str(tmp_path / "run"), "init_weights": str(wrong),
        "strategy": {"name": "assembling", "params": {"phase": "target"}},
    })
    with pytest.raises(NasfleetError, match="init_weights file .* another shape"):
        validate_job(job)
