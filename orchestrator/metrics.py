"""Prometheus metrics of training and evaluation, on the backend that fits where code runs.

- Inside Ray (Train workers, evaluation actors) metrics go through ``ray.util.metrics``:
  each node's Ray agent exports them (prefixed ``ray_``) on its metrics-export port, so
  many processes on many nodes need no ports of their own and Prometheus discovers the
  nodes from Ray's service-discovery file.
- Outside Ray (the single-process trainer, an MPI launch) ``prometheus_client`` serves
  them from this process, bound to 127.0.0.1 unless told otherwise.

Both backends expose the same metric names, declared once in :data:`METRICS`; Ray's exporter
prefixes each with ``ray_`` (it cannot be turned off), so ``nasfleet_train_steps_total`` served by
this process is ``ray_nasfleet_train_steps_total`` from a Ray node.
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


RUN_LABEL = "run"
"""On every series: a resumed run continues its own series, and two runs on one cluster never mix."""

METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("nasfleet_train_steps", "counter", "Optimizer steps taken."),
    MetricSpec("nasfleet_train_samples", "counter", "Training examples processed, all ranks together."),
    MetricSpec("nasfleet_train_subnets", "counter", "Subnet forward/backward passes, all ranks together."),
    MetricSpec("nasfleet_train_compute_seconds", "counter", "Forward+backward time on rank 0 (rate over steps: per step)."),
    MetricSpec(
        "nasfleet_train_update_seconds", "counter",
        "Backend step time on rank 0: the gradient all-reduce (distributed) plus the optimizer step.",
    ),
    MetricSpec("nasfleet_train_allreduce_seconds", "counter", "Gradient all-reduce time on rank 0."),
    MetricSpec("nasfleet_subnet_loss", "gauge", "Mean training loss by subnet role over the last window.", ("role",)),
    MetricSpec(
        "nasfleet_subnet_accuracy_ratio", "gauge", "Mean training-batch accuracy by subnet role, 0 to 1.", ("role",)
    ),
    MetricSpec("nasfleet_checkpoint_seconds", "histogram", "Time to write one checkpoint."),
    MetricSpec("nasfleet_eval_subnets", "counter", "Subnets evaluated (evaluation pool, search trials)."),
    MetricSpec("nasfleet_eval_seconds", "counter", "Wall time spent evaluating them."),
    MetricSpec("nasfleet_search_trials", "counter", "Search trials recorded.", ("search", "searcher")),
    MetricSpec(
        "nasfleet_search_best_accuracy_ratio", "gauge", "Best validation accuracy a search has recorded.", ("search",)
    ),
)
CHECKPOINT_BUCKETS_S = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)


class _Apply(Protocol):
    """Records one value on one backend instrument (counter: add, gauge: set, histogram: observe)."""

    def __call__(self, instrument: Any, kind: Kind, value: float, tags: dict[str, str]) -> None: ...


KINDS: dict[str, Kind] = {spec.name: spec.kind for spec in METRICS}


def tag_keys(spec: MetricSpec) -> tuple[str, ...]:
    return (RUN_LABEL, *spec.tags)


class TrainingMetrics:
    """The job's metrics; construct with :func:`ray_metrics` or :func:`prometheus_metrics`, then :meth:`for_run`.

    Names follow Prometheus' conventions: counters for everything that accumulates (take
    ``rate()`` for throughput: ``rate(nasfleet_train_samples_total[1m])`` is samples/s), base
    units in the name (``_seconds``, ``_ratio``).
    """

    def __init__(self, instruments: dict[str, Any], apply: _Apply, run: str = "") -> None:
        self._instruments = instruments
        self._apply = apply
        self.run = run

    def for_run(self, run: str) -> TrainingMetrics:
        """The same instruments, every series labelled ``run=<run>``."""
        return TrainingMetrics(self._instruments, self._apply, run)

    def _record(self, name: str, value: float, tags: dict[str, str] | None = None) -> None:
        if KINDS[name] == "counter" and value <= 0:
            return  # nothing to add (Ray's counters refuse 0): a series appears once it counts something
        self._apply(self._instruments[name], KINDS[name], value, {RUN_LABEL: self.run, **(tags or {})})

    def window(self, steps: int, timing: dict[str, float], means: dict[str, dict[str, float]]) -> None:
        """Record a logging window: ``steps`` new steps, their timings and per-role means."""
        self._record("nasfleet_train_steps", steps)
        per_step = {key: timing.get(key, 0.0) for key in ("compute_s_per_step", "update_s_per_step")}
        elapsed = steps * (per_step["compute_s_per_step"] + per_step["update_s_per_step"])
        # The window's rates are over its compute and update time: that time gives the counts back.
        self._record("nasfleet_train_samples", round(timing.get("samples_per_s", 0.0) * elapsed))
        self._record("nasfleet_train_subnets", round(timing.get("subnets_per_s", 0.0) * elapsed))
        for key, name in (
            ("compute_s_per_step", "nasfleet_train_compute_seconds"),
            ("update_s_per_step", "nasfleet_train_update_seconds"),
            ("allreduce_s_per_step", "nasfleet_train_allreduce_seconds"),
        ):
            self._record(name, steps * timing.get(key, 0.0))
        for role, values in means.items():
            self._record("nasfleet_subnet_loss", values["loss"], {"role": role})
            self._record("nasfleet_subnet_accuracy_ratio", values["accuracy"], {"role": role})

    def checkpoint(self, seconds: float) -> None:
        self._record("nasfleet_checkpoint_seconds", seconds)

    def evaluated(self, subnets: int, seconds: float) -> None:
        self._record("nasfleet_eval_subnets", subnets)
        self._record("nasfleet_eval_seconds", seconds)

    def search_trial(self, search: str, searcher: str, best_accuracy: float) -> None:
        self._record("nasfleet_search_trials", 1, {"search": search, "searcher": searcher})
        self._record("nasfleet_search_best_accuracy_ratio", best_accuracy, {"search": search})


def ray_metrics() -> TrainingMetrics:
    """Metrics through Ray's per-node agent (call inside a Ray worker or actor)."""
    from ray.util import metrics as ray_m

    instruments: dict[str, Any] = {}
    for spec in METRICS:
        if spec.kind == "counter":
            instruments[spec.name] = ray_m.Counter(spec.name, spec.description, tag_keys=tag_keys(spec))
        elif spec.kind == "gauge":
            instruments[spec.name] = ray_m.Gauge(spec.name, spec.description, tag_keys=tag_keys(spec))
        else:
            instruments[spec.name] = ray_m.Histogram(
                spec.name, spec.description, boundaries=list(CHECKPOINT_BUCKETS_S), tag_keys=tag_keys(spec)
            )

    def apply(instrument: Any, kind: Kind, value: float, tags: dict[str, str]) -> None:
        if kind == "counter":
            instrument.inc(value, tags=tags)
        elif kind == "gauge":
            instrument.set(value, tags=tags)
        else:
            instrument.observe(value, tags=tags)

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
            instruments[spec.name] = prom.Counter(spec.name, spec.description, tag_keys(spec), registry=registry)
        elif spec.kind == "gauge":
            instruments[spec.name] = prom.Gauge(spec.name, spec.description, tag_keys(spec), registry=registry)
        else:
            instruments[spec.name] = prom.Histogram(
                spec.name, spec.description, tag_keys(spec), registry=registry, buckets=CHECKPOINT_BUCKETS_S
            )
    try:
        server, _thread = prom.start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise NasfleetError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None

    def apply(instrument: Any, kind: Kind, value: float, tags: dict[str, str]) -> None:
        target = instrument.labels(**tags)
        if kind == "counter":
            target.inc(value)
        elif kind == "gauge":
            target.set(value)
        else:
            target.observe(value)

    metrics = TrainingMetrics(instruments, apply)
    return PrometheusEndpoint(metrics, host, server.server_address[1], server)
