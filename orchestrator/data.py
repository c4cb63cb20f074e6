"""Data sets by name (bundled digits, Fashion-MNIST and a text corpus from Debian, IDX or text files behind a path, plug-ins), and batching.

Batches are a pure function of ``(seed, step)``: the permutation for an epoch is drawn
from a generator seeded by the epoch number, so a resumed run sees exactly the batches
an uninterrupted one would, with no loader state to checkpoint. A strategy may replace the
shuffled epochs by importance sampling (:class:`ExampleSampler`); its probabilities are part
of its checkpointed state, so batches stay a pure function of ``(seed, step, rank, state)``.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.config import DataConfig
from nasfleet.orchestrator.data_fetch import FASHION_MNIST, FORTUNES, data_cache_root, fetch, file_sha256
from nasfleet.registry import Registry


@dataclass(frozen=True)
class ImageSet:
    images: torch.Tensor  # [N, C, H, W] float32, normalised
    labels: torch.Tensor  # [N] int64

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, count: int, seed: int = 0) -> ImageSet:
        """``count`` images drawn without replacement (seeded), in their order here; all when ``count`` ≥ len."""
        if count >= len(self):
            return self
        if count < 1:
            raise NasfleetError(f"a subset needs at least 1 image, got {count}")
        picked = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(len(self), count, replace=False)))
        return ImageSet(self.images[picked], self.labels[picked])


SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class DataSplits:
    train: ImageSet
    val: ImageSet
    test: ImageSet
    num_classes: int

    @property
    def in_channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[2])

    def split(self, name: str) -> ImageSet:
        if name not in ("train", "val", "test"):
            raise NasfleetError(f"unknown split {name!r} (expected train, val or test)")
        return getattr(self, name)

    def unigram_nats(self, name: str) -> float:
        """Mean cross-entropy of split ``name``'s labels under the training labels' frequencies.

        The baseline a model has to beat to have used its input at all: for a language model, the
        per-byte loss of predicting every byte from how common it is (add-one smoothed over the
        classes, so a class the training split lacks costs a finite amount).
        """
        counts = np.bincount(self.train.labels.numpy().reshape(-1), minlength=self.num_classes) + 1.0
        labels = self.split(name).labels.numpy().reshape(-1)
        return float(-np.log(counts[labels] / counts.sum()).mean())


@dataclass(frozen=True)
class DataShape:
    """What a search space must know about the images before any is loaded."""

    in_channels: int
    image_size: int
    num_classes: int


@dataclass(frozen=True)
class DatasetSpec:
    """A data set plug-in: its image shape (known without loading) and how to load its splits.

    ``check`` validates the config cheaply (e.g. that ``data.path`` holds the files) so a job
    can be refused on the driver before any worker starts; ``load`` returns the splits.
    """

    shape: DataShape
    load: Callable[[DataConfig], DataSplits]
    check: Callable[[DataConfig], None] = lambda config: None
    tokens: bool = False
    """Examples are token sequences (``[1, T]`` in, ``[T]`` next tokens out), scored per token."""


DATASETS: Registry[DatasetSpec] = Registry("data set", "nasfleet.datasets")


DEFAULT_TEST_FRACTION = 0.15


def _load_digits_splits(config: DataConfig) -> DataSplits:
    """The digits' splits, cached like Fashion-MNIST's: every process after the first skips importing scikit-learn.

    Importing it took 1.4 s of a 2-rank job's 9 s per process on 2 cores. The data file and the
    split both come from scikit-learn, so its version is the source's key.
    """

    def decode() -> DataSplits:
        images, labels = _load_digits()
        return _split_and_normalise(images, labels, None, None, config)

    source = ["digits", importlib.metadata.version("scikit-learn")]
    return cached_splits([source, config.val_fraction, config.test_fraction, config.split_seed], decode)


def _check_idx_settings(config: DataConfig) -> None:
    if config.test_fraction is not None:
        raise NasfleetError(
            f"{config.dataset} has its own test split; data.test_fraction does not apply to it (remove it)"
        )


def _check_digits(config: DataConfig) -> None:
    if config.path is not None:  # it would be ignored: the run would train on other data than asked
        raise NasfleetError("digits is bundled with scikit-learn and reads no files: data.path does not apply to it (remove it)")


def _check_idx_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise NasfleetError(f"data path {folder} does not exist or is not a folder")
    for stem in IDX_STEMS:
        _find(folder, stem)


def _check_mnist(config: DataConfig) -> None:
    _check_idx_settings(config)
    if config.path is None:
        raise NasfleetError(f"data.path is required for dataset {config.dataset!r} (a folder with the IDX files)")
    _check_idx_folder(config.path)


def _fashion_mnist_folder(config: DataConfig) -> Path:
    """``data.path`` if given, else the verified cache, fetched from Debian on first use."""
    _check_idx_settings(config)
    if config.path is not None:
        _check_idx_folder(config.path)
        return config.path
    return fetch(FASHION_MNIST)


def _load_mnist(config: DataConfig) -> DataSplits:
    _check_mnist(config)
    assert config.path is not None
    return cached_idx_splits(config.path, config)


def _check_fashion_mnist(config: DataConfig) -> None:
    _fashion_mnist_folder(config)  # on the driver: fetched before any worker needs it


def _load_fashion_mnist(config: DataConfig) -> DataSplits:
    folder = _fashion_mnist_folder(config)
    # The fetched copy was just checked against the pinned digests: no need to hash it again.
    known = FASHION_MNIST.sha256 if config.path is None else None
    return cached_idx_splits(folder, config, known)


def _load_fashion_digits(config: DataConfig) -> DataSplits:
    """Fashion-MNIST (classes 0-9), then the 8×8 digits resized to 28×28 (classes 10-19): two domains.

    Each domain is normalised with its own training statistics; the digits are split as the
    ``digits`` set is (70/15/15, seeded by ``data.split_seed``).
    """
    fashion = _load_fashion_mnist(config)
    digits = _load_digits_splits(config.model_copy(update={"path": None}))

    def joined(a: ImageSet, b: ImageSet) -> ImageSet:
        resized = torch.nn.functional.interpolate(b.images, size=a.images.shape[-1], mode="bilinear", align_corners=False)
        return ImageSet(torch.cat([torch.as_tensor(a.images), resized]), torch.cat([torch.as_tensor(a.labels), b.labels + 10]))

    return DataSplits(*(joined(fashion.split(n), digits.split(n)) for n in SPLIT_NAMES), num_classes=20)


TEXT_CONTEXT = 64
"""Tokens per training example of the text data sets (the language model's context length)."""
BYTE_VOCABULARY = 256


def _text_files(folder: Path) -> list[Path]:
    """A folder's text files in name order (``.dat`` indexes and hidden files left out), or the file itself."""
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        raise NasfleetError(f"data path {folder} does not exist")
    files = sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".") and f.suffix != ".dat")
    if not files:
        raise NasfleetError(f"data path {folder} holds no text files")
    return files


def _check_text(config: DataConfig) -> None:
    if config.path is None:
        raise NasfleetError("dataset text needs data.path: a UTF-8 text file or a folder of them")
    _text_files(config.path)


def _corpus_bytes(files: list[Path]) -> np.ndarray:
    parts = []
    for path in files:
        raw = path.read_bytes()
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NasfleetError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        parts.append(raw)
    return np.frombuffer(b"".join(parts), dtype=np.uint8)


def text_splits(corpus: np.ndarray, config: DataConfig, context: int = TEXT_CONTEXT) -> DataSplits:
    """Byte-level next-token examples from one corpus, held-out splits fixed by position.

    The corpus is cut, in order, into training, validation and test spans (the last
    ``val_fraction`` and ``test_fraction`` of its bytes; no shuffling across the cut, so no
    window of one split overlaps another). Each span is tiled by non-overlapping windows of
    ``context + 1`` bytes: the first ``context`` are the input ``[1, context]``, the last
    ``context`` the labels. ``split_seed`` does not apply: the split is the position.
    """
    test_fraction = config.test_fraction or DEFAULT_TEST_FRACTION
    n = len(corpus)
    val_start, test_start = int(n * (1 - test_fraction - config.val_fraction)), int(n * (1 - test_fraction))

    def windows(span: np.ndarray) -> ImageSet:
        count = (len(span) - 1) // context
        if count < 1:
            raise NasfleetError(f"the text corpus ({n:,} bytes) is too short for {context}-byte examples in every split")
        tokens = torch.from_numpy(span.astype(np.int64))
        starts = torch.arange(count) * context
        index = starts[:, None] + torch.arange(context + 1)
        tiles = tokens[index]
        return ImageSet(tiles[:, None, :-1].contiguous(), tiles[:, 1:].contiguous())

    spans = corpus[:val_start], corpus[val_start:test_start], corpus[test_start:]
    return DataSplits(*(windows(span) for span in spans), num_classes=BYTE_VOCABULARY)


def _load_text(config: DataConfig) -> DataSplits:
    _check_text(config)
    assert config.path is not None
    return text_splits(_corpus_bytes(_text_files(config.path)), config)


def _fortunes_files(config: DataConfig) -> list[Path]:
    folder = config.path if config.path is not None else fetch(FORTUNES)
    return [folder / name for name in FORTUNES.sha256] if config.path is None else _text_files(folder)


def _check_fortunes(config: DataConfig) -> None:
    _fortunes_files(config)  # on the driver: fetched before any worker needs it


def _load_fortunes(config: DataConfig) -> DataSplits:
    return text_splits(_corpus_bytes(_fortunes_files(config)), config)


DATASETS.add("digits", DatasetSpec(DataShape(1, 8, 10), _load_digits_splits, _check_digits))
DATASETS.add("mnist", DatasetSpec(DataShape(1, 28, 10), _load_mnist, _check_mnist))
DATASETS.add("fashion-mnist", DatasetSpec(DataShape(1, 28, 10), _load_fashion_mnist, _check_fashion_mnist))
TEXT_SHAPE = DataShape(1, TEXT_CONTEXT, BYTE_VOCABULARY)
DATASETS.add("text", DatasetSpec(TEXT_SHAPE, _load_text, _check_text, tokens=True))
DATASETS.add("fortunes", DatasetSpec(TEXT_SHAPE, _load_fortunes, _check_fortunes, tokens=True))
DATASETS.add("fashion-digits", DatasetSpec(DataShape(1, 28, 20), _load_fashion_digits, _check_fashion_mnist))


def data_shape(config: DataConfig) -> DataShape:
    return DATASETS.get(config.dataset).shape


def check_data(config: DataConfig) -> None:
    """Refuse a data config that cannot load (unknown set, missing files) without loading it."""
    DATASETS.get(config.dataset).check(config)


def load_data(config: DataConfig) -> DataSplits:
    splits = DATASETS.get(config.dataset).load(config)
    expected = data_shape(config)
    got = DataShape(splits.in_channels, splits.image_size, splits.num_classes)
    if got != expected:
        raise NasfleetError(f"data set {config.dataset!r} loaded as {got}, but it declares {expected}")
    return splits


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 1,797 8×8 handwritten digits with 17 grey levels (0–16), bundled inside scikit-learn.
    return (digits.images / 16.0).astype(np.float32)[:, None], digits.target.astype(np.int64)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:  # gzip: a cut-off file is an EOFError, a damaged one an OSError
        raise NasfleetError(f"cannot read IDX file {path}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise NasfleetError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise NasfleetError(f"{path} is truncated: its header promises {ndim} dimensions")
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise NasfleetError(f"{path} is truncated: expected {int(np.prod(dims))} values, found {data.size}")
    return data.reshape(tuple(dims))


IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise NasfleetError(f"{folder} has no {stem} or {stem}.gz")


def load_mnist_idx(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if not folder.is_dir():
        raise NasfleetError(f"data path {folder} does not exist or is not a folder")
    arrays = [read_idx(_find(folder, stem)) for stem in IDX_STEMS]
    train_x, train_y, test_x, test_y = arrays
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise NasfleetError(f"{folder}: image and label counts differ")
    to_float = lambda x: (x.astype(np.float32) / 255.0)[:, None]  # noqa: E731
    return to_float(train_x), train_y.astype(np.int64), to_float(test_x), test_y.astype(np.int64)


def _split_and_normalise(
    images: np.ndarray,
    labels: np.ndarray,
    test_images: np.ndarray | None,
    test_labels: np.ndarray | None,
    config: DataConfig,
) -> DataSplits:
    """Stratified, seeded splits; normalisation uses training statistics only."""
    from sklearn.model_selection import train_test_split

    seed = config.split_seed
    test_carved_from_images = test_images is None
    test_fraction = config.test_fraction or DEFAULT_TEST_FRACTION
    if test_carved_from_images:
        images, test_images, labels, test_labels = train_test_split(
            images, labels, test_size=test_fraction, stratify=labels, random_state=seed
        )
    # val_fraction is a fraction of all labelled data, not of what is left after the test split.
    val_size = config.val_fraction / (1.0 - test_fraction) if test_carved_from_images else config.val_fraction
    train_x, val_x, train_y, val_y = train_test_split(
        images, labels, test_size=min(val_size, 0.5), stratify=labels, random_state=seed
    )
    mean, std = float(train_x.mean()), float(train_x.std())

    def make(x: np.ndarray, y: np.ndarray) -> ImageSet:
        return ImageSet(torch.from_numpy((x - mean) / std).float(), torch.from_numpy(y).long())

    num_classes = int(max(labels.max(), test_labels.max())) + 1  # type: ignore[union-attr]
    return DataSplits(make(train_x, train_y), make(val_x, val_y), make(test_images, test_labels), num_classes)


class ExampleSampler(Protocol):
    """What :class:`BatchStream` asks for importance sampling (a training strategy implements it)."""

    def example_probabilities(self, num_examples: int) -> np.ndarray | None: ...


class BatchStream:
    """Training batches as a pure function of the step (shuffled per epoch, seeded).

    With ``world_size`` > 1 this is a distributed sampler: at each step the ranks take
    disjoint ``batch_size`` slices of the same epoch permutation, so together they see a
    global batch of ``batch_size × world_size`` examples and no example twice per epoch.

    With a ``sampler`` that returns probabilities, each step instead draws ``batch_size``
    distinct examples with those probabilities, seeded by ``(seed, step, rank)``. Rank ``r``
    draws from its own shard (examples ``r, r + world_size, ...``): a rank's importance
    state only covers what it trains on, and shards keep the ranks' batches disjoint.
    """

    def __init__(
        self,
        data: ImageSet,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        sampler: ExampleSampler | None = None,
    ) -> None:
        global_batch = batch_size * world_size
        if global_batch > len(data):
            raise NasfleetError(
                f"batch size {batch_size} × {world_size} workers exceeds the {len(data)} training examples"
            )
        self.data = data
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.sampler = sampler
        self.global_batch = global_batch
        self.steps_per_epoch = len(data) // global_batch

    def indices(self, step: int) -> torch.Tensor:
        """Which training examples (indices into ``data``) make this rank's batch at ``step``."""
        probs = None if self.sampler is None else self.sampler.example_probabilities(len(self.data))
        if probs is not None:
            shard = np.arange(self.rank, len(self.data), self.world_size)
            # A tiny floor keeps numpy's draw without replacement valid if importances reach zero.
            weights = np.asarray(probs, dtype=float)[shard] + 1e-12
            rng = np.random.default_rng([self.seed, step, self.rank])
            return torch.from_numpy(rng.choice(shard, size=self.batch_size, replace=False, p=weights / weights.sum()))
        epoch, position = divmod(step, self.steps_per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.data))
        start = position * self.global_batch + self.rank * self.batch_size
        return torch.from_numpy(order[start : start + self.batch_size])

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.examples(self.indices(step))

    def examples(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels of the given training examples."""
        return self.data.images[index], self.data.labels[index]

    def shared_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One fixed batch that every rank agrees on (the first of a single-rank, unweighted stream)."""
        return BatchStream(self.data, self.batch_size, self.seed).batch(0)


def iterate_batches(data: ImageSet, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The whole set in order, for evaluation."""
    return [
        (data.images[i : i + batch_size], data.labels[i : i + batch_size]) for i in range(0, len(data), batch_size)
    ]


SPLITS_CACHE_VERSION = 1
"""Part of every cache key: bump it when the decoding or the split changes."""


def cached_idx_splits(folder: Path, config: DataConfig, digests: dict[str, str] | None = None) -> DataSplits:
    """The splits of the IDX files in ``folder``, decoded once into memory-mapped ``.npy`` files.

    Decoding 70,000 images takes seconds and half a gigabyte per process; every process of a
    job (ranks, evaluation actors, stand-alone runs) would repeat it. The normalised splits
    are written once under the data cache, keyed by the files' digests and the split
    settings, and each process maps them copy-on-write: the page cache holds one copy.
    ``digests``: the files' SHA-256 by name where they are already known (a verified fetch).
    """
    files = [_find(folder, stem) for stem in IDX_STEMS]
    hashes = [digests[f.name] if digests and f.name in digests else file_sha256(f) for f in files]
    return cached_splits([hashes, config.val_fraction, config.split_seed], lambda: _decode_idx_splits(folder, config))


def cached_splits(key: list[Any], decode: Callable[[], DataSplits]) -> DataSplits:
    """``decode()``'s splits, written once under the data cache by ``key`` (its sources and split settings).

    Where the cache cannot be written (a read-only disk), the decoded splits are used from memory.
    """
    digest = hashlib.sha256(json.dumps([SPLITS_CACHE_VERSION, *key]).encode()).hexdigest()[:20]
    cache = data_cache_root() / "splits" / digest
    if not (cache / "complete").is_file():
        splits = decode()
        try:
            _write_splits(cache, splits)
        except OSError:
            return splits
    return _map_splits(cache)


def _decode_idx_splits(folder: Path, config: DataConfig) -> DataSplits:
    train_x, train_y, test_x, test_y = load_mnist_idx(folder)
    return _split_and_normalise(train_x, train_y, test_x, test_y, config)


def _write_splits(cache: Path, splits: DataSplits) -> None:
    """Write into a private folder, then rename: a reader sees all of a cache entry or none of it."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=cache.parent, prefix=f".{cache.name}-"))
    try:
        for name in SPLIT_NAMES:
            part = splits.split(name)
            np.save(staging / f"{name}_images.npy", part.images.numpy())
            np.save(staging / f"{name}_labels.npy", part.labels.numpy())
        (staging / "complete").write_text(json.dumps({"num_classes": splits.num_classes}))
        try:
            os.rename(staging, cache)
        except OSError:  # another process cached the same splits first: theirs is as good
            if not (cache / "complete").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _map_splits(cache: Path) -> DataSplits:
    num_classes = int(json.loads((cache / "complete").read_text())["num_classes"])
    parts = []
    for name in SPLIT_NAMES:
        # Copy-on-write: reads share the file's pages; a write (none is expected) stays private.
        images = np.load(cache / f"{name}_images.npy", mmap_mode="c")
        labels = np.load(cache / f"{name}_labels.npy", mmap_mode="c")
        parts.append(ImageSet(torch.from_numpy(images), torch.from_numpy(labels)))
    return DataSplits(*parts, num_classes=num_classes)
