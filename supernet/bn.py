"""Per-subnet batch-norm statistics.

Subnets share BN running statistics in the supernet, but each subnet's activations have
their own distribution; evaluating a subnet with the shared statistics under-reports its
accuracy. The standard remedy (OFA, BigNAS) is to re-estimate the statistics for the
subnet on a few training batches before evaluating or extracting it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from nasfleet.supernet.arch import Arch


def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def recalibrate_batchnorm(supernet: nn.Module, arch: Arch, batches: Iterable[torch.Tensor]) -> None:
    """Replace the supernet's BN statistics by this subnet's, averaged over ``batches``."""
    norms = _batchnorms(supernet)
    if not norms:
        return
    saved = [(m.momentum, m.training) for m in norms]
    was_training = supernet.training
    supernet.train()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the calibration batches
    with torch.no_grad():
        for images in batches:
            supernet(images, arch)
    for m, (momentum, _) in zip(norms, saved):
        m.momentum = momentum
    supernet.train(was_training)


@contextmanager
def calibrated_batchnorm(supernet: nn.Module, arch: Arch, batches: Iterable[torch.Tensor]) -> Iterator[None]:
    """Run the block with the subnet's own BN statistics, then restore the shared ones.

    Restoring keeps evaluation side-effect free, so evaluating during training cannot
    change a resumed run.
    """
    norms = _batchnorms(supernet)
    saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in norms]
    recalibrate_batchnorm(supernet, arch, batches)
    try:
        yield
    finally:
        for m, state in zip(norms, saved):
            m.load_state_dict(state)
