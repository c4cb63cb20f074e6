"""MixtureGrowth's moment of growth: a trained small run becomes the start of a grown run.

The small network and the grown one are both ordinary runs of strategy ``mixturegrowth``
(:mod:`nasfleet.strategies.mixturegrowth`) trained by the one trainer; this module only builds
the grown job from the small run's config and writes the weights it starts from (the job
config's ``init_weights``, kept inside the grown run's folder so the run stays reproducible).
"""

from __future__ import annotations

from pathlib import Path

import torch

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.config import JobConfig, config_from_dict, with_overrides
from nasfleet.orchestrator.evaluate.trained import TrainedSupernet, load_trained
from nasfleet.orchestrator.storage import is_uri
from nasfleet.orchestrator.train import latest_checkpoint
from nasfleet.orchestrator.train.setup import job_space, job_strategy
from nasfleet.strategies.mixturegrowth import TemplateMixedSupernet, grown_state

INIT_FILE = "grown-init.pt"
"""The grown run's starting weights, written into its folder before it trains."""


def small_run(run: str) -> TrainedSupernet:
    trained = load_trained(run)
    strategy = trained.config.strategy
    if strategy.name != "mixturegrowth" or strategy.params.get("phase", "small") != "small":
        raise NasfleetError(f"{run} is not a small mixturegrowth run (strategy {strategy.name!r}): train one with "
                            "--strategy mixturegrowth first")
    return trained


def grown_job(
    small: JobConfig, run_dir: str, new_weights: str, target_arch: str | None, overrides: list[str]
) -> JobConfig:
    """The small run's job (data, space, recipe) training the grown network into ``run_dir``."""
    if is_uri(run_dir):
        raise NasfleetError("nasfleet grow writes the starting weights next to the run: --run-dir must be a local folder")
    root = Path(run_dir).expanduser().absolute()
    data = small.model_dump(mode="json")
    params = {**data["strategy"]["params"], "phase": "grown", "new_weights": new_weights}
    if target_arch is not None:
        params["target_arch"] = target_arch
    data.update(run_dir=str(root), strategy={"name": "mixturegrowth", "params": params},
                init_weights=str(root / INIT_FILE), search=None, tune=None)
    return with_overrides(config_from_dict(data, "grown job"), overrides)


def write_grown_weights(small: TrainedSupernet, job: JobConfig) -> Path:
    """Build the grown network, load everything the small run trained, grow it; save to ``job.init_weights``."""
    if latest_checkpoint(job.run_dir) is not None:
        raise NasfleetError(f"{job.run_dir} already holds a run; choose another --run-dir")
    strategy = job_strategy(job, job_space(job))
    model = strategy.build_model()
    assert isinstance(model, TemplateMixedSupernet)
    model.load_state_dict(small.model.state_dict())
    generator = torch.Generator().manual_seed(job.seed + 2)
    state = grown_state(model.state_dict(), model, strategy.params.new_weights, generator)  # type: ignore[attr-defined]
    assert job.init_weights is not None
    path = Path(job.init_weights)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    partial.replace(path)
    return path
