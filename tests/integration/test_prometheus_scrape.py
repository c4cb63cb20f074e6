"""A real Prometheus (Debian's, unpacked by the Makefile) scrapes a training run with the shipped scrape
config, and its HTTP API answers for the run's series; the Grafana dashboard asks only for series that exist."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import tiny_config, train
from nasfleet.orchestrator.metrics import METRICS, prometheus_metrics

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = Path(os.environ.get("NASFLEET_PROMETHEUS", Path(sys.executable).parents[1] / "opt/prometheus/usr/bin/prometheus"))
SCRAPE_CONFIG = REPO / "cluster_configs" / "prometheus" / "prometheus.yml"
DASHBOARD = REPO / "cluster_configs" / "grafana" / "nasfleet-dashboard.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def query(api: str, expr: str) -> list[dict]:
    url = f"{api}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.mark.skipif(not PROMETHEUS.is_file(), reason=f"no Prometheus at {PROMETHEUS} (make install fetches it)")
def test_prometheus_scrapes_a_run_and_answers_for_its_series(tmp_path: Path) -> None:
    endpoint = prometheus_metrics(port=0)
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())  # the shipped file, pointed at this test's endpoints
    config["global"]["scrape_interval"] = "1s"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    (tmp_path / "ray_sd.json").write_text("[]")  # no Ray nodes in this test
    jobs["ray"]["file_sd_configs"][0]["files"] = [str(tmp_path / "ray_sd.json")]
    jobs["nasfleet"]["static_configs"][0]["targets"] = [f"127.0.0.1:{endpoint.port}"]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    server = subprocess.Popen(
        [str(PROMETHEUS), f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "w"),
    )
    api = f"http://127.0.0.1:{port}"
    job = tiny_config(tmp_path / "run")
    try:
        train(job, metrics=endpoint.metrics)
        series, deadline = [], time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                series = query(api, f'nasfleet_train_steps_total{{run="{job.run_name}"}}')
            except OSError:  # not listening yet
                series = []
            if series and float(series[0]["value"][1]) == 12:
                break
            time.sleep(0.5)
        assert series and float(series[0]["value"][1]) == 12, (tmp_path / "prometheus.log").read_text()[-2000:]
        assert series[0]["metric"]["job"] == "nasfleet"
        roles = query(api, f'nasfleet_subnet_accuracy_ratio{{run="{job.run_name}"}}')
        assert {r["metric"]["role"] for r in roles} == {"largest", "smallest", "random"}
        samples = query(api, f'nasfleet_train_samples_total{{run="{job.run_name}"}}')
        assert float(samples[0]["value"][1]) == 12 * job.data.batch_size
    finally:
        server.terminate()
        server.wait(timeout=30)
        endpoint.close()


def exposed_names() -> set[str]:
    """Every series name the metrics expose (prometheus_client's suffixes included)."""
    names = set()
    for spec in METRICS:
        if spec.kind == "counter":
            names.add(f"{spec.name}_total")
        elif spec.kind == "histogram":
            names |= {f"{spec.name}_bucket", f"{spec.name}_count", f"{spec.name}_sum"}
        else:
            names.add(spec.name)
    return names


def test_the_dashboard_queries_only_series_that_exist() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    exprs.append(next(v for v in dashboard["templating"]["list"] if v["name"] == "run")["query"]["query"])
    asked = {name for expr in exprs for name in re.findall(r"\$\{prefix\}(nasfleet_\w+)", expr)}
    assert asked and asked <= exposed_names(), asked - exposed_names()
    assert all("${prefix}nasfleet_" in expr or "nasfleet_" not in expr for expr in exprs)  # Ray's prefix or none
    # Every metric has a panel, so a metric added without one shows up here.
    charted = {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in asked}
    assert charted == {spec.name for spec in METRICS}
    prefixes = next(v for v in dashboard["templating"]["list"] if v["name"] == "prefix")
    assert {o["value"] for o in prefixes["options"]} == {"ray_", ""}
