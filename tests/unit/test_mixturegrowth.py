"""MixtureGrowth: weights generated from template banks compute the supernet's function, growing (wider
or deeper) keeps the small network and makes every new block a combination of trained templates (and
with ``--new-weights random`` they are not), and ``nasfleet grow`` trains the grown network as an
ordinary run that exports exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.cli.app import main
from nasfleet.orchestrator.evaluate import load_trained
from nasfleet.orchestrator.launch import train_job
from nasfleet.orchestrator.train import job_strategy
from nasfleet.strategies import build_strategy
from nasfleet.strategies.mixturegrowth import TemplateMixedSupernet, narrowest
from nasfleet.supernet import arch_to_json, extract, load_subnet, save_subnet
from nasfleet.supernet.arch import ConvArch, StageChoice
from nasfleet.supernet.registry import space_from_dict

from conftest import TINY_SPACE, tiny_config

SMALL_STEPS = 30
DEEP_SPACE = {
    "name": "mbconv", "stem_width": 8,
    "stages": [{"widths": [8, 12], "depths": [2, 3], "kernels": [3], "expands": [2, 3], "stride": 1},
               {"widths": [12, 16], "depths": [1], "kernels": [3], "expands": [2], "stride": 2}],
}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("mixturegrowth") / "small"
    train_job(tiny_config(
        run_dir, strategy={"name": "mixturegrowth", "params": {"templates": 3}},
        optim={"steps": SMALL_STEPS, "lr": 0.1, "warmup_steps": 2}, checkpoint_every_steps=SMALL_STEPS,
        log_every_steps=10,
    ))
    return run_dir


def grow(small: Path, out: Path, *extra: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["grow", "--run", str(small), "--run-dir", str(out), "--steps", "6", "--no-progress", *extra])
    assert exit_.value.code == 0


def span_residual(templates: torch.Tensor, block: torch.Tensor) -> float:
    """How far ``block`` lies outside the span of ``templates`` (relative least-squares residual)."""
    basis = templates.reshape(templates.shape[0], -1).T.double()
    target = block.reshape(-1, 1).double()
    solution = torch.linalg.lstsq(basis, target).solution
    return float((basis @ solution - target).norm() / target.norm())


def new_blocks(weight: torch.Tensor, block: tuple[int, ...]) -> list[torch.Tensor]:
    """The grown weight's whole blocks other than the leading one (the part the small network reads)."""
    o, i = block[:2]
    return [weight[a:a + o, b:b + i] for a in range(0, weight.shape[0] - o + 1, o)
            for b in range(0, weight.shape[1] - i + 1, i) if (a, b) != (0, 0)]


def test_generated_weights_compute_the_supernets_function_and_extract_exactly() -> None:
    space = space_from_dict(TINY_SPACE)
    strategy = build_strategy("mixturegrowth", {}, space)
    torch.manual_seed(0)
    model = strategy.build_model().eval()
    x = torch.randn(4, 1, 8, 8)
    for arch in (strategy.plan.small, strategy.plan.target, space.smallest()):
        with torch.no_grad():
            torch.testing.assert_close(extract(model, space, arch).eval()(x), model(x, arch), rtol=0, atol=0)
    assert isinstance(model, TemplateMixedSupernet)
    head = model.bank("head.weight")
    assert head.block == (10, 12) and tuple(head.coefficients.shape) == (1, 2, 4)


def test_growing_keeps_the_small_network_and_recombines_its_templates(small_run: Path, tmp_path: Path) -> None:
    small = load_trained(small_run)
    plan = job_strategy(small.config, small.space).plan
    x = small.data.val.images[:16]
    with torch.no_grad():
        small_out = small.model.eval()(x, plan.small)
    residuals: dict[str, list[float]] = {}
    for mode in ("templates", "random"):
        grow(small_run, tmp_path / mode, "--new-weights", mode)
        start = tiny_config(tmp_path / "start", strategy={"name": "mixturegrowth", "params": {
            "templates": 3, "phase": "grown", "new_weights": mode}})
        model = job_strategy(start, small.space).build_model()
        model.load_state_dict(torch.load(tmp_path / mode / "grown-init.pt", weights_only=True))
        model.eval()
        with torch.no_grad():  # at the small architecture the grown network is the small one
            torch.testing.assert_close(model(x, plan.small), small_out, rtol=0, atol=1e-6)
        generated = model.generate()
        residuals[mode] = [
            span_residual(small.model.bank(name).templates.detach(), block)
            for name in model.names for block in new_blocks(generated[name].detach(), model.bank(name).block)
            if model.bank(name).templates.shape[0] < block.numel()
        ]
        assert load_trained(tmp_path / mode).step == 6
    assert residuals["templates"] and max(residuals["templates"]) < 1e-6
    assert min(residuals["random"]) > 0.5  # fresh weights are not combinations of the templates


def test_growing_deeper_combines_the_stages_last_trained_templates_in_the_new_block(tmp_path: Path) -> None:
    space = space_from_dict(DEEP_SPACE)
    small_arch = narrowest(space, space.smallest())  # stage 0 at depth 2; the target (largest) has 3
    small_run = tmp_path / "small"
    train_job(tiny_config(
        small_run, space=DEEP_SPACE, optim={"steps": SMALL_STEPS, "lr": 0.1, "warmup_steps": 2},
        strategy={"name": "mixturegrowth", "params": {"templates": 3, "small_arch": arch_to_json(small_arch)}},
        checkpoint_every_steps=SMALL_STEPS,
    ))
    small = load_trained(small_run)
    x = small.data.val.images[:16]
    with torch.no_grad():
        small_out = small.model.eval()(x, small_arch)
    trained = small.model.bank("stages.0.1.expand.conv.weight").templates.detach()
    residuals = {}
    for mode in ("templates", "random"):
        grow(small_run, tmp_path / mode, "--new-weights", mode)
        grown = load_trained(tmp_path / mode)
        model = job_strategy(grown.config, grown.space).build_model()
        model.load_state_dict(torch.load(tmp_path / mode / "grown-init.pt", weights_only=True))
        model.eval()
        assert model.donors["stages.0.2.expand.conv.weight"] == "stages.0.1.expand.conv.weight"
        with torch.no_grad():
            torch.testing.assert_close(model(x, small_arch), small_out, rtol=0, atol=1e-6)
        weight = model.generate()["stages.0.2.expand.conv.weight"].detach()
        o, i = model.bank("stages.0.2.expand.conv.weight").block[:2]
        residuals[mode] = [span_residual(trained, weight[a:a + o, b:b + i])
                           for a in range(0, weight.shape[0] - o + 1, o) for b in range(0, weight.shape[1] - i + 1, i)]
        assert grown.step == 6
    assert max(residuals["templates"]) < 1e-6  # the new block is made of the trained templates
    assert min(residuals["random"]) > 0.5


def test_the_grown_run_exports_the_target_network(small_run: Path, tmp_path: Path) -> None:
    grow(small_run, tmp_path / "grown")
    grown = load_trained(tmp_path / "grown")
    target = job_strategy(grown.config, grown.space).plan.target
    assert target == grown.space.largest()
    save_subnet(extract(grown.model, grown.space, target), grown.space, target, tmp_path / "subnet")
    x = grown.data.val.images[:8]
    with torch.no_grad():
        torch.testing.assert_close(load_subnet(tmp_path / "subnet")[0].eval()(x), grown.model.eval()(x, target))


def test_bad_growth_is_one_line_errors(small_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    space = space_from_dict(TINY_SPACE)
    with pytest.raises(NasfleetError, match="wider than target_arch"):
        build_strategy("mixturegrowth", {"small_arch": arch_to_json(space.largest()),
                                         "target_arch": arch_to_json(narrowest(space, space.largest()))}, space)
    with pytest.raises(NasfleetError, match="must have target_arch's kernels"):
        build_strategy("mixturegrowth", {"small_arch": arch_to_json(space.smallest())}, space)
    narrow = narrowest(space, space.largest())
    shallow = ConvArch(tuple(StageChoice(stage.width, stage.blocks[:1]) for stage in narrow.stages), space="mbconv")
    with pytest.raises(NasfleetError, match="needs depth 2 or more to grow to 2"):
        build_strategy("mixturegrowth", {"small_arch": arch_to_json(shallow)}, space)
    deep = space_from_dict(DEEP_SPACE)
    with pytest.raises(NasfleetError, match="deeper than target_arch"):
        build_strategy("mixturegrowth", {"small_arch": arch_to_json(deep.largest()),
                                         "target_arch": arch_to_json(deep.smallest())}, deep)
    with pytest.raises(NasfleetError, match="supports the mbconv space"):
        build_strategy("mixturegrowth", {}, space_from_dict({"name": "vit", "head_dim": 4, "embed_dims": [16],
                                                              "depths": [1], "heads": [1]}))
    other = tmp_path / "sandwich"
    train_job(tiny_config(other, optim={"steps": 2, "lr": 0.05, "warmup_steps": 1}, checkpoint_every_steps=2))
    for args, message in (
        (["--run", str(other)], "is not a small mixturegrowth run"),
        (["--run", str(small_run), "--new-weights", "copy"], "--new-weights takes templates or random"),
        (["--run", str(small_run)], "already holds a run"),
        (["--run", str(small_run), "--set", "launch.comm.calibration=/nonexistent.json"], "/nonexistent.json does not exist"),
    ):
        run_dir = small_run if message == "already holds a run" else tmp_path / "out"
        with pytest.raises(SystemExit) as exit_:
            main(["grow", *args, "--run-dir", str(run_dir), "--steps", "2", "--no-progress"])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1, err
        if run_dir != small_run:
            assert not run_dir.exists()  # refused before the starting weights are written
