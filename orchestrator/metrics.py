"""Prometheus metrics of training and evaluation, on the backend that fits where code runs.

- Inside Ray (Train workers, evaluation actors) metrics go through ``ray.util.metrics``:
  each node's Ray agent exports them (prefixed ``ray_``) on its metrics-export port, so
  many processes on many nodes need no ports of their own and Prometheus discovers the
  nodes from Ray's service-discovery file.
- Outside Ray (the single-process trainer, an MPI launch) ``prometheus_client`` serves
  them from this process, bound to 127.0.0.1 unless told otherwise.

Both backends expose the same metric names, declared once in :data:`METRICS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from nasfleet.errors import NasfleetError

Kind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: Kind
    description: str
    tags: tuple[str, ...] = ()


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("nasfleet_train_steps", "counter", "Optimizer steps taken."),
    MetricSpec("nasfleet_train_samples_per_second", "gauge", "Training examples per second, all ranks together."),
    MetricSpec("nasfleet_train_subnets_per_second", "gauge", "Subnet forward/backward passes per second, all ranks."),
    MetricSpec("nasfleet_subnet_loss", "gauge", "Mean training loss by subnet role.", ("role",)),
    MetricSpec("nasfleet_subnet_accuracy", "gauge", "Mean training-batch accuracy by subnet role.", ("role",)),
    MetricSpec("nasfleet_step_compute_seconds", "gauge", "Forward+backward time per step (rank 0)."),
    MetricSpec(
        "nasfleet_step_update_seconds", "gauge", "Gradient all-reduce (distributed) + optimizer step time per step."
    ),
    MetricSpec("nasfleet_checkpoint_seconds", "histogram", "Time to write one checkpoint."),
    MetricSpec("nasfleet_eval_subnets", "counter", "Subnets evaluated by the evaluation pool."),
    MetricSpec("nasfleet_eval_subnets_per_second", "gauge", "Evaluation-pool throughput."),
)
CHECKPOINT_BUCKETS_S = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)


class _Apply(Protocol):
    """Records one value on one backend instrument (counter: add, gauge: set, histogram: observe)."""

    def __call__(self, instrument: Any, kind: Kind, value: float, tags: dict[str, str]) -> None: ...


KINDS: dict[str, Kind] = {spec.name: spec.kind for spec in METRICS}


class TrainingMetrics:
    """The job's metrics; construct with :func:`ray_metrics` or :func:`prometheus_metrics`."""

    def __init__(self, instruments: dict[str, Any], apply: _Apply) -> None:
        self._instruments = instruments
        self._apply = apply

    def _record(self, name: str, value: float, tags: dict[str, str] | None = None) -> None:
        self._apply(self._instruments[name], KINDS[name], value, tags or {})

    def window(self, steps: int, timing: dict[str, float], means: dict[str, dict[str, float]]) -> None:
        """Record a logging window: ``steps`` new steps, their timings and per-role means."""
        self._record("nasfleet_train_steps", steps)
        for key, name in (
            ("samples_per_s", "nasfleet_train_samples_per_second"),
            ("subnets_per_s", "nasfleet_train_subnets_per_second"),
            ("compute_s_per_step", "nasfleet_step_compute_seconds"),
            ("update_s_per_step", "nasfleet_step_update_seconds"),
        ):
            if key in timing:
                self._record(name, timing[key])
        for role, values in means.items():
            self._record("nasfleet_subnet_loss", values["loss"], {"role": role})
            self._record("nasfleet_subnet_accuracy", values["accuracy"], {"role": role})

    def checkpoint(self, seconds: float) -> None:
        self._record("nasfleet_checkpoint_seconds", seconds)

    def evaluated(self, subnets: int, per_second: float) -> None:
        self._record("nasfleet_eval_subnets", subnets)
        self._record("nasfleet_eval_subnets_per_second", per_second)


def ray_metrics() -> TrainingMetrics:
    """Metrics through Ray's per-node agent (call inside a Ray worker or actor)."""
    from ray.util import metrics as ray_m

    instruments: dict[str, Any] = {}
    for spec in METRICS:
        if spec.kind == "counter":
            instruments[spec.name] = ray_m.Counter(spec.name, spec.description, tag_keys=spec.tags)
        elif spec.kind == "gauge":
            instruments[spec.name] = ray_m.Gauge(spec.name, spec.description, tag_keys=spec.tags)
        else:
            instruments[spec.name] = ray_m.Histogram(
                spec.name, spec.description, boundaries=list(CHECKPOINT_BUCKETS_S), tag_keys=spec.tags
            )

    def apply(instrument: Any, kind: Kind, value: float, tags: dict[str, str]) -> None:
        if kind == "counter":
            instrument.inc(value, tags=tags or None)
        elif kind == "gauge":
            instrument.set(value, tags=tags or None)
        else:
            instrument.observe(value, tags=tags or None)

    return TrainingMetrics(instruments, apply)


@dataclass
class PrometheusEndpoint:
    metrics: TrainingMetrics
    host: str
    port: int
    """The port actually bound (useful when 0 was asked for)."""
    _server: Any

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def prometheus_metrics(port: int, host: str = "127.0.0.1") -> PrometheusEndpoint:
    """Metrics served by this process at ``http://host:port/metrics``; port 0 picks a free one.

    Uses its own registry, so several endpoints in one process (tests) do not collide.
    """
    import prometheus_client as prom

    registry = prom.CollectorRegistry()
    instruments: dict[str, Any] = {}
    for spec in METRICS:
        if spec.kind == "counter":
            instruments[spec.name] = prom.Counter(spec.name, spec.description, spec.tags, registry=registry)
        elif spec.kind == "gauge":
            instruments[spec.name] = prom.Gauge(spec.name, spec.description, spec.tags, registry=registry)
        else:
            instruments[spec.name] = prom.Histogram(
                spec.name, spec.description, spec.tags, registry=registry, buckets=CHECKPOINT_BUCKETS_S
            )
    try:
        server, _thread = prom.start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise NasfleetError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None

    def apply(instrument: Any, kind: Kind, value: float, tags: dict[str, str]) -> None:
        target = instrument.labels(**tags) if tags else instrument
        if kind == "counter":
            target.inc(value)
        elif kind == "gauge":
            target.set(value)
        else:
            target.observe(value)

    metrics = TrainingMetrics(instruments, apply)
    return PrometheusEndpoint(metrics, host, server.server_address[1], server)
