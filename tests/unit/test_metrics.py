"""Prometheus metrics, scraped over real HTTP from the endpoint a training run serves."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.config import JobConfig
from nasfleet.orchestrator.metrics import prometheus_metrics

from conftest import train


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_single_process_training_serves_its_metrics_on_loopback(tiny: JobConfig) -> None:
    endpoint = prometheus_metrics(port=0)
    try:
        assert endpoint.host == "127.0.0.1"
        train(tiny, metrics=endpoint.metrics)
        samples = scrape(endpoint.url)
    finally:
        endpoint.close()
    run = (("run", tiny.run_name),)
    assert samples[("nasfleet_train_steps_total", run)] == 12
    # Counters to rate(): every example and subnet pass of the 12 steps (batch 32; sandwich: 3 subnets a step).
    assert samples[("nasfleet_train_samples_total", run)] == 12 * tiny.data.batch_size
    assert samples[("nasfleet_train_subnets_total", run)] == 12 * 3
    assert samples[("nasfleet_train_compute_seconds_total", run)] > 0
    assert ("nasfleet_train_allreduce_seconds_total", run) not in samples  # one process: nothing to count
    assert samples[("nasfleet_checkpoint_seconds_count", run)] == 3  # steps 4, 8, 12
    for role in ("largest", "smallest", "random"):
        assert 0 <= samples[("nasfleet_subnet_accuracy_ratio", (("role", role), *run))] <= 1
        assert samples[("nasfleet_subnet_loss", (("role", role), *run))] > 0
    assert all(labels and dict(labels)["run"] == tiny.run_name for (name, labels) in samples if name.startswith("nasfleet"))


def test_a_port_in_use_is_a_user_error() -> None:
    first = prometheus_metrics(port=0)
    try:
        with pytest.raises(NasfleetError, match="cannot serve metrics"):
            prometheus_metrics(port=first.port)
    finally:
        first.close()
