"""Per-layer latency look-up tables: measure every distinct layer of a space once, predict any subnet.

A space with 10^8 subnets has only a few hundred distinct layers (a block's cost depends on
its input and output widths, kernel, expansion, stride, input resolution and whether it adds
a residual), so timing each of them once as a standalone plain module — the same modules
extraction produces — prices every subnet by a sum.

What a per-layer sum misses: a layer timed alone runs in a tight loop with its input and
output hot in cache and the allocator handing back the same buffer, and the whole network
adds its own module calls. Those effects grow with the number of layers, so the table keeps
one correction per layer, measured once on the space's smallest, largest and a few subnets of
its own seeded draw (never on the subnets the table is checked against):
``predict = Σ entries + layers × correction``.

Timing protocol (tables, subnets and checks alike): ``eval()`` modules under
``torch.inference_mode``, ``torch.set_num_threads(threads)`` (restored afterwards), a few
warm-up calls, then ``repeats`` rounds that visit every module in turn (so a burst of load on
a shared machine hits all of them alike). Each visit makes one untimed call (the previous
module evicted this one's weights from cache; a deployed model runs warm), then times enough
back-to-back calls to last about a millisecond; the latency is the median sample per call.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nasfleet.errors import NasfleetError
from nasfleet.supernet.arch import Arch, BlockChoice, ConvArch, LayerChoice, TransformerArch, arch_to_dict
from nasfleet.supernet.elastic import ConvBN
from nasfleet.supernet.conv1d import rows_as_sequence
from nasfleet.supernet.mbconv import STEM_KERNEL, InvertedResidualSpace, MBConvBlock, spatial_after, stem_channels
from nasfleet.supernet.registry import space_from_dict
from nasfleet.supernet.space import SearchSpace
from nasfleet.supernet.vit import TransformerLayer, ViTSpace, patchify

TABLE_FORMAT = "nasfleet-latency-table"
TABLE_VERSION = 1
DEFAULT_REPEATS = 25
DEFAULT_WARMUP = 5
SAMPLE_S = 1e-3
"""Each timing sample repeats a call until it lasts about this long (timer resolution, loop cost)."""
MAX_CALLS_PER_SAMPLE = 1000
CALIBRATION_SUBNETS = 6
CALIBRATION_STREAM = 0x1A7


# -- layers ----------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerSpec:
    """One layer configuration whose cost the table records: a kind and the sizes that set its cost."""

    kind: str
    dims: tuple[tuple[str, int | float], ...]

    @property
    def key(self) -> str:
        """The table key, e.g. ``mbconv.block c_in=16 c_out=24 kernel=3 expand=2 stride=2 size=8 residual=0``."""
        return " ".join([self.kind, *(f"{name}={value:g}" for name, value in self.dims)])

    def __getitem__(self, name: str) -> Any:
        return dict(self.dims)[name]


def _spec(kind: str, **dims: int | float) -> LayerSpec:
    return LayerSpec(kind, tuple(dims.items()))


class _LayerModel(Protocol):
    """How a space's subnets decompose into timed layers."""

    def arch_layers(self, arch: Arch) -> list[LayerSpec]:
        """The layers one subnet runs, in order."""

    def all_layers(self) -> list[LayerSpec]:
        """Every distinct layer any subnet of the space runs."""

    def build(self, spec: LayerSpec) -> tuple[nn.Module, tuple[int, ...]]:
        """A plain module for the layer and the shape of one input sample."""


class _Stem(nn.Module):
    """The mbconv stem as ``MBConvNet.forward`` runs it: the input as the stem reads it, conv-BN, ReLU."""

    def __init__(self, inner: nn.Module, sequence_input: bool) -> None:
        super().__init__()
        self.inner = inner
        self.sequence_input = sequence_input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.inner(rows_as_sequence(x) if self.sequence_input else x))


class _PooledHead(nn.Module):
    """The mbconv classifier as ``MBConvNet.forward`` runs it: global average pool, then linear."""

    def __init__(self, head: nn.Linear) -> None:
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.mean(dim=tuple(range(2, x.dim()))))


class _PatchEmbed(nn.Module):
    """The ViT input layer as ``ViTNet.forward`` runs it: patchify, project, add positions."""

    def __init__(self, patch_dim: int, embed: int, tokens: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.patch_embed = nn.Linear(patch_dim, embed)
        self.pos_embed = nn.Parameter(torch.zeros(tokens, embed))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.patch_embed(patchify(x, self.patch_size)) + self.pos_embed


class _TokenPoolHead(nn.Module):
    """The ViT output as ``ViTNet.forward`` runs it: final norm, mean over tokens, linear."""

    def __init__(self, embed: int, classes: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(embed)
        self.head = nn.Linear(embed, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(x).mean(dim=1))


class _MBConvLayers:
    """Stem, one entry per inverted-residual block, pooled classifier (images or sequences)."""

    def __init__(self, space: InvertedResidualSpace) -> None:
        self.config = space.config
        self.dims = space.spatial_dims
        self.kind = space.name

    def _stem(self) -> LayerSpec:
        c = self.config
        return _spec(f"{self.kind}.stem", c_in=c.in_channels, c_out=c.stem_width, size=c.image_size)

    def _block(self, c_in: int, c_out: int, block: BlockChoice, stride: int, size: int, residual: bool) -> LayerSpec:
        return _spec(
            f"{self.kind}.block", c_in=c_in, c_out=c_out, kernel=block.kernel, expand=block.expand,
            stride=stride, size=size, residual=int(residual),
        )

    def _head(self, c_in: int, size: int) -> LayerSpec:
        return _spec(f"{self.kind}.head", c_in=c_in, size=size, classes=self.config.num_classes)

    def arch_layers(self, arch: Arch) -> list[LayerSpec]:
        assert isinstance(arch, ConvArch)
        c = self.config
        layers = [self._stem()]
        channels, size = c.stem_width, c.image_size
        for stage, spec in zip(arch.stages, c.stages):
            for j, block in enumerate(stage.blocks):
                stride = spec.stride if j == 0 else 1
                layers.append(self._block(channels, stage.width, block, stride, size, residual=j > 0))
                channels, size = stage.width, spatial_after(size, stride)
        return [*layers, self._head(channels, size)]

    def all_layers(self) -> list[LayerSpec]:
        # A stage's first block sees any width of the stage before; later blocks keep the
        # stage's width and resolution. Every stage has at least one block.
        c = self.config
        layers = [self._stem()]
        inputs, size = [c.stem_width], c.image_size
        for spec in c.stages:
            after = spatial_after(size, spec.stride)
            for width in spec.widths:
                for block in (BlockChoice(k, e) for k in spec.kernels for e in spec.expands):
                    layers += [self._block(c_in, width, block, spec.stride, size, False) for c_in in inputs]
                    if max(spec.depths) > 1:
                        layers.append(self._block(width, width, block, 1, after, True))
            inputs, size = list(spec.widths), after
        return [*layers, *(self._head(width, size) for width in inputs)]

    def build(self, spec: LayerSpec) -> tuple[nn.Module, tuple[int, ...]]:
        c, dims = self.config, self.dims
        if spec.kind == f"{self.kind}.stem":
            stem = ConvBN(stem_channels(c, dims), spec["c_out"], STEM_KERNEL, spatial_dims=dims)
            return _Stem(stem, sequence_input=dims == 1), (spec["c_in"], spec["size"], spec["size"])  # images in
        shape = (spec["c_in"], *(spec["size"],) * dims)
        if spec.kind == f"{self.kind}.block":
            block = BlockChoice(spec["kernel"], spec["expand"])
            residual = bool(spec["residual"])
            return MBConvBlock(spec["c_in"], spec["c_out"], block, spec["stride"], residual, dims), shape
        return _PooledHead(nn.Linear(spec["c_in"], spec["classes"])), shape


class _ViTLayers:
    """Patch embedding, one entry per transformer layer, norm-pool-classifier; all keyed by width."""

    def __init__(self, space: ViTSpace) -> None:
        self.config = space.config

    def _embed(self, embed: int) -> LayerSpec:
        c = self.config
        return _spec("vit.embed", patch_dim=c.patch_dim, patch=c.patch_size, embed=embed, tokens=c.tokens)

    def _layer(self, embed: int, layer: LayerChoice) -> LayerSpec:
        c = self.config
        return _spec(
            "vit.layer", embed=embed, heads=layer.heads, mlp_ratio=layer.mlp_ratio, head_dim=c.head_dim, tokens=c.tokens
        )

    def _head(self, embed: int) -> LayerSpec:
        return _spec("vit.head", embed=embed, tokens=self.config.tokens, classes=self.config.num_classes)

    def arch_layers(self, arch: Arch) -> list[LayerSpec]:
        assert isinstance(arch, TransformerArch)
        e = arch.embed_dim
        return [self._embed(e), *(self._layer(e, layer) for layer in arch.layers), self._head(e)]

    def all_layers(self) -> list[LayerSpec]:
        c = self.config
        choices = [LayerChoice(h, r) for h in c.heads for r in c.mlp_ratios]
        return [
            spec
            for e in c.embed_dims
            for spec in (self._embed(e), *(self._layer(e, layer) for layer in choices), self._head(e))
        ]

    def build(self, spec: LayerSpec) -> tuple[nn.Module, tuple[int, ...]]:
        c = self.config
        e = spec["embed"]
        if spec.kind == "vit.embed":
            return _PatchEmbed(c.patch_dim, e, c.tokens, c.patch_size), (c.in_channels, c.image_size, c.image_size)
        if spec.kind == "vit.layer":
            return TransformerLayer(e, LayerChoice(spec["heads"], spec["mlp_ratio"]), c.head_dim), (c.tokens, e)
        return _TokenPoolHead(e, c.num_classes), (c.tokens, e)


def _layer_model(space: SearchSpace) -> _LayerModel:
    if isinstance(space, InvertedResidualSpace):
        return _MBConvLayers(space)
    if isinstance(space, ViTSpace):
        return _ViTLayers(space)
    raise NasfleetError(f"no latency model for search space {space.name!r}")


def distinct_layers(space: SearchSpace) -> list[LayerSpec]:
    """Every distinct layer configuration any subnet of ``space`` runs (what a table times)."""
    return list(dict.fromkeys(_layer_model(space).all_layers()))


def arch_layers(space: SearchSpace, arch: Arch) -> list[LayerSpec]:
    """The layers ``arch`` runs, in order (validated against ``space``)."""
    return _layer_model(space).arch_layers(space.validate(arch))


def layer_module(space: SearchSpace, spec: LayerSpec) -> tuple[nn.Module, tuple[int, ...]]:
    """The plain module a table times for ``spec`` and the shape of one of its input samples."""
    return _layer_model(space).build(spec)


# -- timing ----------------------------------------------------------------------------
@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run with ``threads`` intra-op threads, restoring the previous setting afterwards."""
    if threads < 1:
        raise NasfleetError(f"threads must be at least 1, got {threads}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _check_protocol(batch_size: int, repeats: int, warmup: int) -> None:
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise NasfleetError(
            f"need batch_size ≥ 1, repeats ≥ 1 and warmup ≥ 0 (got {batch_size}, {repeats}, {warmup})"
        )


def _median_call_ms(
    modules: Sequence[nn.Module], shapes: Sequence[tuple[int, ...]], batch_size: int, threads: int,
    repeats: int, warmup: int,
) -> list[float]:
    """Median milliseconds per forward call of each module, timed in interleaved rounds."""
    _check_protocol(batch_size, repeats, warmup)
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(batch_size, *shape, generator=generator) for shape in shapes]
    for module in modules:
        module.eval()
    with torch_threads(threads), torch.inference_mode():
        calls_per_sample = []
        for module, x in zip(modules, inputs):
            fastest_s = math.inf
            for _ in range(max(warmup, 1)):
                start = time.perf_counter()
                module(x)
                fastest_s = min(fastest_s, time.perf_counter() - start)
            calls_per_sample.append(max(1, min(MAX_CALLS_PER_SAMPLE, math.ceil(SAMPLE_S / max(fastest_s, 1e-9)))))
        samples: list[list[float]] = [[] for _ in modules]
        for _ in range(repeats):
            for module, x, calls, times in zip(modules, inputs, calls_per_sample, samples):
                module(x)  # untimed: bring this module's weights and code back into cache
                start = time.perf_counter()
                for _ in range(calls):
                    module(x)
                times.append((time.perf_counter() - start) / calls)
    return [1e3 * statistics.median(times) for times in samples]


def measure_latencies_ms(
    space: SearchSpace, archs: Sequence[Arch], batch_size: int = 1, threads: int = 1,
    repeats: int = DEFAULT_REPEATS, warmup: int = DEFAULT_WARMUP,
) -> list[float]:
    """End-to-end latency of each extracted standalone subnet (``space.build_standalone``), in ms."""
    nets = [space.build_standalone(arch) for arch in archs]
    shape = _input_shape(space)
    return _median_call_ms(nets, [shape] * len(nets), batch_size, threads, repeats, warmup)


def measure_latency_ms(
    space: SearchSpace, arch: Arch, batch_size: int = 1, threads: int = 1,
    repeats: int = DEFAULT_REPEATS, warmup: int = DEFAULT_WARMUP,
) -> float:
    """End-to-end latency of one extracted standalone subnet, in ms (the table's protocol)."""
    return measure_latencies_ms(space, [arch], batch_size, threads, repeats, warmup)[0]


def _input_shape(space: SearchSpace) -> tuple[int, int, int]:
    config = space.config_dict()
    return config["in_channels"], config["image_size"], config["image_size"]


def _machine() -> str:
    processor = platform.processor() or platform.machine()
    return f"{processor}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def _load_average() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def _normalised(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), so stored and live values compare equal."""
    return json.loads(json.dumps(value))


# -- the table -------------------------------------------------------------------------
@dataclass
class LatencyTable:
    """Measured milliseconds per distinct layer of one search space, for one batch size and thread count."""

    space_config: dict[str, Any]
    entries_ms: dict[str, float]
    """Median latency of each layer, keyed by :attr:`LayerSpec.key`."""
    per_layer_correction_ms: float
    """Added once per layer of a subnet: what the network costs beyond its layers timed alone."""
    batch_size: int
    threads: int
    repeats: int
    torch_version: str
    machine: str
    created: str
    load_average: float | None = None
    """The machine's 1-minute load average when the build started: timings from a busy machine run slow."""
    calibration: list[dict[str, Any]] = field(default_factory=list)
    """The subnets the correction was measured on: arch, layer count, Σ entries, measured ms."""

    @cached_property
    def _space(self) -> SearchSpace:
        return space_from_dict(self.space_config)

    def check_space(self, space: SearchSpace) -> None:
        """Raise NasfleetError unless this table was built for exactly ``space``."""
        live = _normalised(space.config_dict())
        if live != self.space_config:
            differing = sorted(k for k in {*live, *self.space_config} if live.get(k) != self.space_config.get(k))
            raise NasfleetError(
                f"the latency table was built for another search space (it differs in {', '.join(differing)}); "
                "rebuild it with `nasfleet profile`"
            )

    def layer_ms(self, arch: Arch) -> list[float]:
        """The table entry of each layer ``arch`` runs, in order."""
        layers = arch_layers(self._space, arch)
        missing = [spec.key for spec in layers if spec.key not in self.entries_ms]
        if missing:
            raise NasfleetError(
                f"the latency table has no entry for layer {missing[0]!r} of {arch.describe()}; "
                "rebuild it with `nasfleet profile`"
            )
        return [self.entries_ms[spec.key] for spec in layers]

    def predict_ms(self, arch: Arch) -> float:
        """Predicted latency of ``arch``: Σ its layers' entries + one correction per layer."""
        per_layer = self.layer_ms(arch)
        return sum(per_layer) + len(per_layer) * self.per_layer_correction_ms

    def to_dict(self) -> dict[str, Any]:
        return {"format": TABLE_FORMAT, "version": TABLE_VERSION, **asdict(self)}

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> LatencyTable:
        """Read a table written by :meth:`save`; anything else is a NasfleetError."""
        if not path.is_file():
            raise NasfleetError(f"latency table {path} does not exist (build one with `nasfleet profile`)")
        try:
            text = path.read_text()
        except UnicodeDecodeError as exc:
            raise NasfleetError(f"latency table {path} is not valid JSON: {exc}") from None
        return cls.from_json(text, str(path))

    @classmethod
    def from_json(cls, text: str, path: str) -> LatencyTable:
        """A table from the text :meth:`save` writes (``path`` names it in errors: a file or a URI)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise NasfleetError(f"latency table {path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT:
            raise NasfleetError(f"{path} is not a nasfleet latency table")
        if data.get("version") != TABLE_VERSION:
            raise NasfleetError(
                f"latency table {path} has format version {data.get('version')!r}, this nasfleet reads {TABLE_VERSION}"
            )
        try:
            table = cls(**{name: value for name, value in data.items() if name not in ("format", "version")})
            table._space  # a stored space config that no longer validates is a corrupt table
            entries_ok = all(isinstance(v, (int, float)) for v in table.entries_ms.values())
        except (TypeError, AttributeError, NasfleetError) as exc:
            raise NasfleetError(f"latency table {path} is malformed: {exc}") from None
        if not entries_ok or not isinstance(table.per_layer_correction_ms, (int, float)):
            raise NasfleetError(f"latency table {path} is malformed: latencies must be numbers")
        return table


def calibration_archs(space: SearchSpace, count: int = CALIBRATION_SUBNETS) -> list[Arch]:
    """The subnets the per-layer correction is measured on: smallest, largest and ``count`` drawn ones.

    They come from the table's own random stream (a spawned seed sequence no integer seed
    reproduces), so they are independent of whatever subnets the table is later checked on.
    """
    rng = np.random.default_rng(np.random.SeedSequence(0, spawn_key=(CALIBRATION_STREAM,)))
    drawn = [space.sample_choices(rng) for _ in range(count)]
    return list(dict.fromkeys([space.smallest(), space.largest(), *drawn]))


def build_latency_table(
    space: SearchSpace, batch_size: int = 1, threads: int = 1,
    repeats: int = DEFAULT_REPEATS, warmup: int = DEFAULT_WARMUP,
) -> LatencyTable:
    """Time every distinct layer of ``space``, then measure the per-layer correction.

    The correction is the median over :func:`calibration_archs` of (measured − Σ entries) per
    layer, never below zero.
    """
    load_average = _load_average()
    specs = distinct_layers(space)
    model = _layer_model(space)
    modules, shapes = zip(*(model.build(spec) for spec in specs))
    medians = _median_call_ms(modules, shapes, batch_size, threads, repeats, warmup)
    entries = {spec.key: ms for spec, ms in zip(specs, medians)}

    anchors = calibration_archs(space)
    measured = measure_latencies_ms(space, anchors, batch_size, threads, repeats, warmup)
    calibration = []
    for arch, measured_ms in zip(anchors, measured):
        layers = model.arch_layers(arch)
        calibration.append(
            {
                "arch": arch_to_dict(arch),
                "layers": len(layers),
                "sum_ms": sum(entries[spec.key] for spec in layers),
                "measured_ms": measured_ms,
            }
        )
    # Median, not a least-squares fit: one calibration subnet caught by a burst of load must not
    # set the correction. Timing a layer alone in a hot loop only ever leaves costs out, so a
    # negative value is noise, and it would make predictions of small subnets meaningless.
    correction = max(0.0, statistics.median((c["measured_ms"] - c["sum_ms"]) / c["layers"] for c in calibration))
    return LatencyTable(
        space_config=_normalised(space.config_dict()),
        entries_ms=entries,
        per_layer_correction_ms=correction,
        batch_size=batch_size,
        threads=threads,
        repeats=repeats,
        torch_version=torch.__version__,
        machine=_machine(),
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        load_average=load_average,
        calibration=_normalised(calibration),
    )


# -- checking a table ------------------------------------------------------------------
@dataclass(frozen=True)
class LatencyCheck:
    arch: Arch
    predicted_ms: float
    measured_ms: float

    @property
    def relative_error(self) -> float:
        return abs(self.predicted_ms - self.measured_ms) / self.measured_ms


def table_error(
    space: SearchSpace, table: LatencyTable, archs: Sequence[Arch],
    repeats: int = DEFAULT_REPEATS, warmup: int = DEFAULT_WARMUP,
) -> list[LatencyCheck]:
    """Predicted vs measured latency of each subnet, measured at the table's batch size and threads."""
    table.check_space(space)
    predicted = [table.predict_ms(arch) for arch in archs]
    measured = measure_latencies_ms(space, archs, table.batch_size, table.threads, repeats, warmup)
    return [LatencyCheck(arch, p, m) for arch, p, m in zip(archs, predicted, measured)]


def mean_relative_error(checks: Sequence[LatencyCheck]) -> float:
    if not checks:
        raise NasfleetError("no subnets were checked")
    return statistics.fmean(check.relative_error for check in checks)
