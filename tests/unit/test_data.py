"""Data: bundled digits splits, the MNIST IDX reader, and step-addressed batches."""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.config import DataConfig
from nasfleet.orchestrator.data import BatchStream, check_data, load_data, read_idx
from nasfleet.orchestrator.data_fetch import CACHE_ENV


def test_digits_splits_are_disjoint_stratified_and_normalised() -> None:
    data = load_data(DataConfig())
    sizes = [len(data.train), len(data.val), len(data.test)]
    assert sum(sizes) == 1797 and sizes[1] == pytest.approx(0.15 * 1797, abs=2)
    rows = [{tuple(x.flatten().tolist()) for x in s.images} for s in (data.train, data.val, data.test)]
    # Digits has a few duplicated images; splits must still not share most of them.
    assert len(rows[0] & rows[2]) < 5
    assert torch.bincount(data.val.labels).min() >= 25
    assert abs(float(data.train.images.mean())) < 1e-4
    assert (data.num_classes, data.in_channels, data.image_size) == (10, 1, 8)


LOAD_DIGITS = """
import json, sys
from nasfleet.orchestrator.config import DataConfig
from nasfleet.orchestrator.data import load_data
data = load_data(DataConfig(dataset="digits", split_seed=int(sys.argv[1])))
print(json.dumps({"sklearn_imported": "sklearn" in sys.modules, "val_sum": float(data.val.images.sum()),
                  "test_labels": data.test.labels.tolist()}))
"""


def _digits_in_a_fresh_process(cache: Path, seed: int) -> dict:
    done = subprocess.run([sys.executable, "-c", LOAD_DIGITS, str(seed)], capture_output=True, text=True,
                          env={**os.environ, CACHE_ENV: str(cache)}, check=True, timeout=120)
    return json.loads(done.stdout)


def test_digits_splits_are_cached_so_later_processes_skip_scikit_learn(tmp_path: Path) -> None:
    first = _digits_in_a_fresh_process(tmp_path, seed=0)
    again = _digits_in_a_fresh_process(tmp_path, seed=0)
    other_seed = _digits_in_a_fresh_process(tmp_path, seed=1)
    assert first["sklearn_imported"] and not again["sklearn_imported"]
    assert (again["val_sum"], again["test_labels"]) == (first["val_sum"], first["test_labels"])
    assert other_seed["sklearn_imported"] and other_seed["test_labels"] != first["test_labels"]


def test_digits_load_from_memory_where_the_cache_cannot_be_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv(CACHE_ENV, str(blocked))
    from_memory = load_data(DataConfig(dataset="digits"))
    assert len(from_memory.train) + len(from_memory.val) + len(from_memory.test) == 1797


def _write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)


def test_mnist_idx_folder_loads_gzipped_or_plain(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for stem, n, compress in (("train", 200, True), ("t10k", 50, False)):
        _write_idx(tmp_path / f"{stem}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), compress)
        _write_idx(tmp_path / f"{stem}-labels-idx1-ubyte", np.arange(n) % 10, compress)
    data = load_data(DataConfig(dataset="mnist", path=tmp_path, val_fraction=0.2))
    assert (len(data.train), len(data.val), len(data.test)) == (160, 40, 50)
    assert data.image_size == 28 and data.num_classes == 10
    assert read_idx(tmp_path / "t10k-labels-idx1-ubyte").tolist()[:3] == [0, 1, 2]


def test_missing_or_bad_mnist_path_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(NasfleetError, match="does not exist"):
        load_data(DataConfig(dataset="mnist", path=tmp_path / "absent"))
    with pytest.raises(NasfleetError, match="required"):
        load_data(DataConfig(dataset="mnist"))
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"junk")
    with pytest.raises(NasfleetError, match="not an unsigned-byte IDX"):
        read_idx(tmp_path / "train-images-idx3-ubyte")


def test_a_path_given_to_the_bundled_digits_is_refused_not_ignored(tmp_path: Path) -> None:
    check_data(DataConfig(dataset="digits"))
    with pytest.raises(NasfleetError, match="data.path does not apply"):
        check_data(DataConfig(dataset="digits", path=tmp_path))


def test_batches_are_a_pure_function_of_the_step() -> None:
    data = load_data(DataConfig()).train
    a, b = BatchStream(data, 32, seed=1), BatchStream(data, 32, seed=1)
    for step in (0, 5, a.steps_per_epoch, 3 * a.steps_per_epoch + 2):
        assert torch.equal(a.batch(step)[1], b.batch(step)[1])
    first_epoch = torch.cat([a.batch(s)[1] for s in range(a.steps_per_epoch)])
    assert len(first_epoch) == a.steps_per_epoch * 32
    assert not torch.equal(a.batch(0)[1], a.batch(a.steps_per_epoch)[1])


def test_distributed_shards_are_disjoint_and_cover_the_global_batch() -> None:
    data = load_data(DataConfig()).train
    single = BatchStream(data, 64, seed=2)
    shards = [BatchStream(data, 32, seed=2, rank=r, world_size=2) for r in range(2)]
    assert shards[0].steps_per_epoch == single.steps_per_epoch
    for step in (0, 7, single.steps_per_epoch + 1):
        halves = [s.batch(step)[0] for s in shards]
        assert torch.equal(torch.cat(halves), single.batch(step)[0])
