"""Fashion-MNIST as a first-class data set: fetched from Debian without root, verified, cached once."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.config import DataConfig, load_config
from nasfleet.orchestrator.data import load_data
from nasfleet.orchestrator.evaluate import load_trained
from nasfleet.orchestrator.launch import train_job
from nasfleet.orchestrator.data_fetch import CACHE_ENV, FASHION_MNIST, fetch, mismatched_files

from conftest import assert_one_line_error, nasfleet, nasfleet_forked

pytestmark = pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt-get (a Debian-based system)")

REFERENCE = Path(__file__).parents[2] / "orchestrator" / "configs" / "fashion-mnist-mbconv.yaml"


@pytest.fixture(scope="module")
def fetched(data_cache: Path) -> Path:
    result = nasfleet("data", "fetch", "fashion-mnist")
    assert result.returncode == 0, result.stderr
    folder = data_cache / "fashion-mnist"
    assert str(folder) in " ".join(result.stdout.split())
    return folder


def mapped_file(tensor: torch.Tensor) -> str:
    """The file whose mapping holds ``tensor``'s bytes ("" for anonymous memory), from /proc/self/maps."""
    address = tensor.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        low, high = (int(x, 16) for x in parts[0].split("-"))
        if low <= address < high:
            return parts[5].strip() if len(parts) > 5 else ""
    return ""


def test_fetch_verifies_every_file_and_a_second_fetch_uses_the_cache(fetched: Path) -> None:
    assert sorted(p.name for p in fetched.iterdir()) == sorted(FASHION_MNIST.sha256)
    assert mismatched_files(fetched, FASHION_MNIST) == []
    before = {p.name: p.stat().st_mtime_ns for p in fetched.iterdir()}
    assert fetch(FASHION_MNIST) == fetched
    assert {p.name: p.stat().st_mtime_ns for p in fetched.iterdir()} == before


def test_a_damaged_cached_file_is_fetched_again(fetched: Path, tmp_path: Path) -> None:
    copy = tmp_path / "cache"
    shutil.copytree(fetched, copy / "fashion-mnist")
    damaged = copy / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
    damaged.write_bytes(damaged.read_bytes()[:-10])
    assert mismatched_files(copy / "fashion-mnist", FASHION_MNIST) == ["t10k-labels-idx1-ubyte.gz"]
    assert fetch(FASHION_MNIST, root=copy) == copy / "fashion-mnist"
    assert mismatched_files(copy / "fashion-mnist", FASHION_MNIST) == []


def test_without_apt_get_the_error_is_one_line_naming_the_manual_step(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(Path(sys.executable).parent), CACHE_ENV: str(tmp_path / "empty")}
    result = nasfleet("data", "fetch", "fashion-mnist", env=env)
    assert_one_line_error(result, "no apt-get", "dataset-fashion-mnist", "data.path")
    assert not (tmp_path / "empty" / "fashion-mnist").exists()


def test_unknown_data_set_to_fetch_is_one_line() -> None:
    assert_one_line_error(nasfleet_forked("data", "fetch", "imagenet"), "no data set 'imagenet'", "fashion-mnist")


def test_splits_are_the_official_test_set_and_a_seeded_validation_split(fetched: Path) -> None:
    data = load_data(DataConfig(dataset="fashion-mnist"))
    assert (len(data.train), len(data.val), len(data.test)) == (51_000, 9_000, 10_000)
    assert data.num_classes == 10 and tuple(data.train.images.shape[1:]) == (1, 28, 28)
    assert np.bincount(data.test.labels.numpy()).tolist() == [1000] * 10
    assert abs(float(data.train.images.mean())) < 1e-3  # normalised with training statistics


def test_decoded_splits_are_cached_once_and_memory_mapped(fetched: Path, data_cache: Path) -> None:
    def entries() -> set[str]:  # the session's cache also holds other tests' splits
        folder = data_cache / "splits"
        return {p.name for p in folder.iterdir()} if folder.is_dir() else set()

    before = entries()  # split seeds 7 and 8 are this test's own
    first = load_data(DataConfig(dataset="fashion-mnist", split_seed=7))
    again = load_data(DataConfig(dataset="fashion-mnist", split_seed=7))
    assert len(entries() - before) == 1
    assert mapped_file(again.train.images).startswith(str(data_cache / "splits"))
    assert np.array_equal(first.val.images.numpy(), again.val.images.numpy())
    other_seed = load_data(DataConfig(dataset="fashion-mnist", split_seed=8))
    assert len(entries() - before) == 2
    assert not np.array_equal(other_seed.val.labels.numpy(), again.val.labels.numpy())


def test_data_path_reads_another_copy_of_the_files(fetched: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(fetched, tmp_path / "copy")
    data = load_data(DataConfig(dataset="fashion-mnist", path=copy))
    assert len(data.test) == 10_000
    with pytest.raises(NasfleetError, match="does not exist"):
        load_data(DataConfig(dataset="fashion-mnist", path=tmp_path / "missing"))


def test_test_fraction_is_refused_for_a_data_set_with_its_own_test_split(fetched: Path, tmp_path: Path) -> None:
    result = nasfleet_forked("train", "--config", str(REFERENCE), "--set", "data.test_fraction=0.2",
                      "--set", f"run_dir={tmp_path / 'run'}")
    assert_one_line_error(result, "fashion-mnist has its own test split", "test_fraction")
    assert not (tmp_path / "run").exists()


def test_the_reference_config_trains_and_its_run_names_fashion_mnist(fetched: Path, tmp_path: Path) -> None:
    job = load_config(REFERENCE)
    job = job.model_copy(update={"run_dir": str(tmp_path / "run"), "optim": job.optim.model_copy(update={"steps": 2}),
                                 "checkpoint_every_steps": 2})
    train_job(job)  # the CLI's evaluation of 19,000 images per subnet is left out: it is what costs here
    written = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert written["data"] == {**written["data"], "dataset": "fashion-mnist", "path": None}
    trained = load_trained(tmp_path / "run")
    assert trained.step == 2 and trained.space.params(trained.space.largest()) == 239_466


def test_the_demo_runs_on_the_bundled_digits_where_fashion_mnist_cannot_be_fetched(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(Path(sys.executable).parent), CACHE_ENV: str(tmp_path / "empty")}
    result = nasfleet("demo", "--run-dir", str(tmp_path / "demo"), "--steps", "2", "--workers", "0", "--search", "0",
                      env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    said = " ".join(result.stdout.split())
    assert "cannot fetch fashion-mnist: no apt-get" in said and "running on the bundled digits instead" in said
    assert "demo supernet on digits after 2 steps" in said
    assert yaml.safe_load((tmp_path / "demo" / "config.yaml").read_text())["data"]["dataset"] == "digits"
