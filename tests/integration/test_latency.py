"""The per-layer latency table: coverage, prediction, file format, space checks and `nasfleet profile`."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import TINY_SPACE, tiny_config
from nasfleet.errors import NasfleetError
from nasfleet.supernet import (
    BlockChoice,
    ConvArch,
    LatencyTable,
    SearchSpace,
    StageChoice,
    build_latency_table,
    mean_relative_error,
    measure_latency_ms,
    space_from_dict,
    table_error,
)
from nasfleet.supernet.latency import arch_layers, distinct_layers, layer_module

FAST = {"repeats": 2, "warmup": 1}
TINY_VIT = {"name": "vit", "embed_dims": [8, 16], "depths": [1, 2], "heads": [1, 2], "mlp_ratios": [1.0, 2.0]}
NASFLEET = Path(sys.executable).with_name("nasfleet")


@pytest.fixture(scope="module")
def tiny_space() -> SearchSpace:
    return space_from_dict(TINY_SPACE)


@pytest.fixture(scope="module")
def tiny_table(tiny_space: SearchSpace) -> LatencyTable:
    return build_latency_table(tiny_space, **FAST)


def constructed_table(space: SearchSpace, correction_ms: float = 0.0) -> LatencyTable:
    """A table with known, distinct entries (no timing), for checking the arithmetic."""
    entries = {spec.key: 0.01 * (i + 1) for i, spec in enumerate(distinct_layers(space))}
    return LatencyTable(
        space_config=json.loads(json.dumps(space.config_dict())), entries_ms=entries,
        per_layer_correction_ms=correction_ms, batch_size=1, threads=1, repeats=1,
        torch_version=torch.__version__, machine="test", created="now",
    )


@pytest.mark.parametrize("config", [TINY_SPACE, TINY_VIT], ids=["mbconv", "vit"])
def test_distinct_layers_are_exactly_the_layers_subnets_run(config: dict[str, object]) -> None:
    space = space_from_dict(config)
    used = {spec for arch in space.enumerate() for spec in arch_layers(space, arch)}
    assert set(distinct_layers(space)) == used
    assert len(distinct_layers(space)) == len(used)  # no duplicates to time twice


@pytest.mark.parametrize("config", [TINY_SPACE, TINY_VIT], ids=["mbconv", "vit"])
def test_layer_modules_chain_into_the_subnet(config: dict[str, object]) -> None:
    """Each timed module accepts exactly what the previous one returns, ending in the class logits."""
    space = space_from_dict(config)
    rng = np.random.default_rng(0)
    for arch in [space.smallest(), space.largest(), *(space.sample(rng) for _ in range(5))]:
        x: torch.Tensor | None = None
        for spec in arch_layers(space, arch):
            module, shape = layer_module(space, spec)
            if x is not None:
                assert tuple(x.shape[1:]) == shape, spec.key
            x = module.eval()(torch.randn(2, *shape))
        logits = space.build_standalone(arch).eval()(torch.randn(2, *_image(space)))
        assert x is not None and x.shape == logits.shape


def _image(space: SearchSpace) -> tuple[int, int, int]:
    c = space.config_dict()
    return c["in_channels"], c["image_size"], c["image_size"]


def test_built_table_covers_every_layer_of_random_subnets(tiny_space: SearchSpace, tiny_table: LatencyTable) -> None:
    assert set(tiny_table.entries_ms) == {spec.key for spec in distinct_layers(tiny_space)}
    assert all(ms > 0 for ms in tiny_table.entries_ms.values())
    rng = np.random.default_rng(1)
    for arch in (tiny_space.sample(rng) for _ in range(20)):
        assert len(tiny_table.layer_ms(arch)) == len(arch_layers(tiny_space, arch))
        assert tiny_table.predict_ms(arch) > 0
    assert tiny_table.batch_size == 1 and tiny_table.threads == 1 and tiny_table.torch_version == torch.__version__
    assert len(tiny_table.calibration) >= 2 and all(c["measured_ms"] > 0 for c in tiny_table.calibration)


@pytest.mark.parametrize("correction_ms", [0.0, 0.004])
def test_prediction_is_the_sum_of_entries_plus_one_correction_per_layer(
    tiny_space: SearchSpace, correction_ms: float
) -> None:
    table = constructed_table(tiny_space, correction_ms)
    rng = np.random.default_rng(2)
    for arch in [tiny_space.smallest(), tiny_space.largest(), *(tiny_space.sample(rng) for _ in range(10))]:
        keys = [spec.key for spec in arch_layers(tiny_space, arch)]
        expected = sum(table.entries_ms[k] for k in keys) + len(keys) * correction_ms
        assert table.predict_ms(arch) == pytest.approx(expected)


def test_deeper_or_wider_subnets_use_different_entries(tiny_space: SearchSpace) -> None:
    table = constructed_table(tiny_space)
    shallow = ConvArch((StageChoice(8, (BlockChoice(3, 2),)), StageChoice(12, (BlockChoice(3, 2),))))
    deeper = ConvArch((StageChoice(8, (BlockChoice(3, 2),) * 2), StageChoice(12, (BlockChoice(3, 2),))))
    wider = ConvArch((StageChoice(12, (BlockChoice(3, 2),)), StageChoice(12, (BlockChoice(3, 2),))))
    assert table.predict_ms(deeper) > table.predict_ms(shallow)
    assert table.predict_ms(wider) != table.predict_ms(shallow)


def test_save_load_round_trip(tmp_path: Path, tiny_space: SearchSpace, tiny_table: LatencyTable) -> None:
    path = tmp_path / "sub" / "latency.json"
    tiny_table.save(path)
    loaded = LatencyTable.load(path)
    assert loaded == tiny_table
    loaded.check_space(tiny_space)
    arch = tiny_space.sample(np.random.default_rng(3))
    assert loaded.predict_ms(arch) == tiny_table.predict_ms(arch)


def test_a_table_for_another_space_is_rejected(tiny_table: LatencyTable) -> None:
    other = space_from_dict({**TINY_SPACE, "stem_width": 12})
    with pytest.raises(NasfleetError, match="another search space"):
        tiny_table.check_space(other)
    with pytest.raises(NasfleetError, match="another search space"):
        table_error(other, tiny_table, [other.smallest()], **FAST)
    with pytest.raises(NasfleetError, match="outside the mbconv search space"):
        tiny_table.predict_ms(ConvArch((StageChoice(99, (BlockChoice(3, 2),)),) * 2))


def test_a_layer_missing_from_the_table_is_a_clear_error(tiny_space: SearchSpace) -> None:
    table = constructed_table(tiny_space)
    largest = tiny_space.largest()
    gone = arch_layers(tiny_space, largest)[-1].key
    table = replace(table, entries_ms={k: v for k, v in table.entries_ms.items() if k != gone})
    with pytest.raises(NasfleetError, match="no entry for layer"):
        table.predict_ms(largest)


@pytest.mark.parametrize(
    "text",
    ["{not json", "[1, 2]", '{"format": "something-else", "version": 1}',
     '{"format": "nasfleet-latency-table", "version": 99}', '{"format": "nasfleet-latency-table", "version": 1}'],
    ids=["not-json", "not-an-object", "foreign", "future-version", "missing-fields"],
)
def test_corrupt_or_foreign_files_raise(tmp_path: Path, text: str) -> None:
    path = tmp_path / "latency.json"
    path.write_text(text)
    with pytest.raises(NasfleetError):
        LatencyTable.load(path)


def test_bad_values_and_missing_files_raise(tmp_path: Path, tiny_table: LatencyTable) -> None:
    with pytest.raises(NasfleetError, match="does not exist"):
        LatencyTable.load(tmp_path / "absent.json")
    data = tiny_table.to_dict()
    for broken in ({**data, "entries_ms": {"x": "fast"}}, {**data, "space_config": {"name": "resnet"}}):
        path = tmp_path / "broken.json"
        path.write_text(json.dumps(broken))
        with pytest.raises(NasfleetError, match="malformed"):
            LatencyTable.load(path)


def test_measurement_restores_threads_and_checks_report_errors(tiny_space: SearchSpace, tiny_table: LatencyTable) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert measure_latency_ms(tiny_space, tiny_space.largest(), batch_size=2, threads=1, **FAST) > 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    archs = [tiny_space.sample(np.random.default_rng(4)) for _ in range(3)]
    checks = table_error(tiny_space, tiny_table, archs, **FAST)
    assert [c.arch for c in checks] == archs
    assert all(c.predicted_ms > 0 and c.measured_ms > 0 for c in checks)
    assert mean_relative_error(checks) == pytest.approx(np.mean([c.relative_error for c in checks]))
    with pytest.raises(NasfleetError):
        measure_latency_ms(tiny_space, tiny_space.largest(), threads=0)


def test_vit_tables_are_supported() -> None:
    space = space_from_dict(TINY_VIT)
    table = build_latency_table(space, **FAST)
    assert set(table.entries_ms) == {spec.key for spec in distinct_layers(space)}
    assert table.predict_ms(space.largest()) > 0


# -- the command line ----------------------------------------------------------------
def profile(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(NASFLEET), "profile", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("profile")
    path = root / "job.yaml"
    path.write_text(yaml.safe_dump(tiny_config(root / "run").model_dump(mode="json")))
    return path


@pytest.mark.slow
def test_cli_builds_saves_and_checks_a_table(config_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "latency.json"
    result = profile("--config", str(config_file), "--out", str(out), "--check", "3", "--repeats", "2")
    assert result.returncode == 0, result.stderr
    table = LatencyTable.load(out)
    assert table.batch_size == 1 and table.threads == 1
    assert "mean relative error" in result.stdout

    again = profile("--config", str(config_file), "--table", str(out), "--check", "2", "--repeats", "2")
    assert again.returncode == 0, again.stderr
    assert "loaded" in again.stdout and "mean relative error" in again.stdout


@pytest.mark.slow
def test_cli_profiles_a_trained_run_into_its_folder(config_file: Path) -> None:
    trained = subprocess.run(
        [str(NASFLEET), "train", "--config", str(config_file), "--no-progress"], capture_output=True, text=True, timeout=300
    )
    assert trained.returncode == 0, trained.stderr
    run = config_file.parent / "run"
    result = profile("--run", str(run), "--check", "0", "--repeats", "2")
    assert result.returncode == 0, result.stderr
    assert "mean relative error" not in result.stdout
    LatencyTable.load(run / "latency.json").check_space(space_from_dict(TINY_SPACE))


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, fragment",
    [
        ([], "exactly one of --config"),
        (["--config", "{config}", "--run", "{tmp}"], "exactly one of --config"),
        (["--config", "{tmp}/missing.yaml", "--out", "{tmp}/t.json"], "does not exist"),
        (["--config", "{config}"], "--out is required"),
        (["--config", "{config}", "--table", "{tmp}/corrupt.json"], "not valid JSON"),
    ],
    ids=["neither", "both", "missing-config", "no-out", "corrupt-table"],
)
def test_cli_bad_input_is_one_line_error(config_file: Path, tmp_path: Path, args: list[str], fragment: str) -> None:
    (tmp_path / "corrupt.json").write_text("{oops")
    result = profile(*(a.format(config=config_file, tmp=tmp_path) for a in args))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
