"""``nasfleet prune``: the one pruned network a polarisation run trained for, as a file to deploy.

Polarisation trains gates that end at 0 or 1; this removes the hidden channels whose gates
rank lowest (the run's ``sparsity``, or ``--sparsity``), re-estimates batch norm on training
batches, and saves the plain network with no gates left as a ``torch.export`` program, so that
loading it needs torch alone (``torch.export.load(path).module()``): the pruned shapes are not a
subnet of the space that ``load_subnet`` rebuilds. The batch dimension stays dynamic.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.cli.common import console
from nasfleet.orchestrator.cli.runs import RUN_HELP

MODEL_FILE = "pruned.pt2"
REPORT_FILE = "pruned.json"


def prune(
    run: str = typer.Option(..., "--run", help=RUN_HELP + " Trained with --strategy polarisation."),
    out: Path = typer.Option(..., "--out", help=f"Folder to write {MODEL_FILE} (a torch.export program) and {REPORT_FILE} into."),
    sparsity: Optional[float] = typer.Option(
        None, help="Fraction of hidden channels to remove, lowest gates first (default: the run's own target)."
    ),
) -> None:
    """Remove a polarisation run's lowest-gated channels and save the plain pruned network."""
    import torch
    from rich.markup import escape

    from nasfleet.orchestrator.evaluate.subnets import evaluate_arch
    from nasfleet.orchestrator.evaluate.trained import load_trained
    from nasfleet.orchestrator.storage import storage_error
    from nasfleet.orchestrator.train.setup import job_strategy
    from nasfleet.strategies.polarisation import PolarisationStrategy
    from nasfleet.supernet.channel_prune import multiply_adds

    if sparsity is not None and not 0 <= sparsity < 1:
        raise NasfleetError(f"--sparsity is a fraction of channels in [0, 1), got {sparsity}")
    if out.exists() and not out.is_dir():
        raise NasfleetError(f"--out {out} is a file; give a folder")
    if (out / MODEL_FILE).exists():
        raise NasfleetError(f"{out / MODEL_FILE} exists; give a new folder (nothing is overwritten)")
    trained = load_trained(run)
    strategy = job_strategy(trained.config, trained.space)
    if not isinstance(strategy, PolarisationStrategy):
        raise NasfleetError(f"{run} was trained with strategy {strategy.name!r}; prune needs a polarisation run")
    if sparsity is not None:
        strategy = PolarisationStrategy(trained.space, strategy.params.model_copy(update={"sparsity": sparsity}))
    net = strategy.consensus(trained.model, trained.calibration_batches()).eval()
    test = trained.data.test
    with torch.no_grad():
        correct = sum(int((net(test.images[i:i + 512]).argmax(dim=1) == test.labels[i:i + 512]).sum())
                      for i in range(0, len(test), 512))
    largest = trained.space.largest()
    dense = evaluate_arch(trained, largest, ("test",), "unpruned")
    input_shape = tuple(test.images.shape[1:])
    report = {
        "run": run,
        "step": trained.step,
        "sparsity": strategy.params.sparsity,
        "hidden_channels": [[block.hidden for block in blocks] for blocks in net.stages],
        "params": sum(p.numel() for p in net.parameters()),
        "mflops": multiply_adds(net, input_shape) / 1e6,
        "test_accuracy": correct / len(test),
        "unpruned": {"params": dense.params, "mflops": dense.mflops, "test_accuracy": dense.accuracy["test"]},
    }
    try:
        out.mkdir(parents=True, exist_ok=True)
        batch = torch.export.Dim("batch")
        program = torch.export.export(net, (test.images[:2],), dynamic_shapes=({0: batch},))
        torch.export.save(program, out / MODEL_FILE)
        (out / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    except OSError as exc:
        raise storage_error("write", str(out), exc) from None
    console.print(
        f"pruned {100 * report['sparsity']:.0f}% of hidden channels: {report['params']:,} params "
        f"(unpruned {dense.params:,}), {report['mflops']:.3f} MFLOPs (unpruned {dense.mflops:.3f}), test accuracy "
        f"{100 * report['test_accuracy']:.2f}% (unpruned {100 * dense.accuracy['test']:.2f}%) → {escape(str(out))}"
    )
