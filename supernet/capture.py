"""Reading a model's intermediate outputs: what feature distillation compares.

The trainer captures the submodules a task names (``SubnetTask.capture``) during its forward
pass; strategies, tests and benchmarks use the same context to read a subnet's features outside
training.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def captured_outputs(model: nn.Module, names: tuple[str, ...]) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of the named submodules during one forward pass (for feature distillation)."""
    captured: dict[str, torch.Tensor] = {}
    if not names:
        yield captured
        return
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise RuntimeError(f"capture names modules the model does not have: {missing}")
    handles = [
        modules[name].register_forward_hook(lambda _m, _i, out, name=name: captured.__setitem__(name, out))
        for name in names
    ]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()
