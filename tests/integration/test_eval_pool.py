"""The evaluation actor pool: exact results, one shared copy of the weights, Parquet output."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.evaluate.pool import EvaluationPool
from nasfleet.orchestrator.evaluate import TrainedSupernet, evaluate_arch, load_trained
from nasfleet.orchestrator.results.store import ResultsStore
from nasfleet.supernet import arch_to_json

from conftest import tiny_config, train

SPLITS = ("val", "test")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainedSupernet:
    config = tiny_config(tmp_path_factory.mktemp("evalpool") / "run")
    train(config)
    return load_trained(config.run_dir)


@pytest.fixture(scope="module")
def results_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("results") / "subnets"


@pytest.fixture(scope="module")
def pool(ray_cluster: str, trained: TrainedSupernet, results_folder: Path) -> Iterator[EvaluationPool]:
    store = ResultsStore(results_folder)
    with EvaluationPool(trained, num_actors=2, splits=SPLITS, store=store, flush_every=2) as p:
        yield p


def archs_to_evaluate(trained: TrainedSupernet) -> list:
    rng = np.random.default_rng(7)
    return [trained.space.smallest(), *(trained.space.sample_choices(rng) for _ in range(3)), trained.space.largest()]


def test_results_equal_in_process_evaluation_in_input_order(pool: EvaluationPool, trained: TrainedSupernet) -> None:
    archs = archs_to_evaluate(trained)
    results = pool.evaluate(archs, roles=[f"s{i}" for i in range(len(archs))])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the actors, so even the float reductions run in the same order
    try:
        expected = [evaluate_arch(trained, arch, SPLITS) for arch in archs]
    finally:
        torch.set_num_threads(threads)
    assert [r.arch for r in results] == archs
    assert [r.role for r in results] == [f"s{i}" for i in range(len(archs))]
    assert [r.accuracy for r in results] == [e.accuracy for e in expected]
    assert [(r.mflops, r.params) for r in results] == [(e.mflops, e.params) for e in expected]
    assert all(r.wall_time_s > 0 for r in results)
    assert len({r.accuracy["val"] for r in results}) > 1  # BN recalibration per subnet, not one shared answer


def test_actors_read_one_shared_copy_of_weights_and_data(pool: EvaluationPool) -> None:
    first, second = pool.memory_backings()
    bn_buffers = {n for n in first if n.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    shared_names = [n for n in first if n not in bn_buffers]
    assert any(n.startswith("model/") for n in shared_names) and any(n.startswith("data/") for n in shared_names)
    for name in shared_names:
        # Same file, same offset, a shared mapping: both processes read the same physical bytes.
        assert first[name].shared and first[name].inode != 0, name
        assert first[name] == second[name], name
    assert bn_buffers
    for name in bn_buffers:  # recalibration writes these, so each actor owns them
        assert not first[name].shared, name


def test_results_appended_to_parquet_readable_by_pandas(
    pool: EvaluationPool, trained: TrainedSupernet, results_folder: Path
) -> None:
    archs = archs_to_evaluate(trained)[:3]
    before = len(pool.store.read())
    results = pool.evaluate(archs)
    files = sorted(results_folder.glob("part-*.parquet"))
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True).iloc[before:]
    assert list(frame["arch"]) == [arch_to_json(a) for a in archs]
    assert [json.loads(m)["accuracy"] for m in frame["metrics"]] == [r.accuracy for r in results]
    assert list(frame["params"]) == [r.params for r in results]
    assert set(frame["checkpoint"]) == {pool.checkpoint_id} and str(trained.step) in pool.checkpoint_id
    assert not [p for p in results_folder.iterdir() if not p.name.startswith("part-")]  # no temporaries left


def test_invalid_input_is_a_one_line_error(pool: EvaluationPool, trained: TrainedSupernet) -> None:
    with pytest.raises(NasfleetError, match="CPUs"):
        EvaluationPool(trained, num_actors=3)
    with pytest.raises(NasfleetError, match="only 0 of 1 evaluation actors started"):
        EvaluationPool(trained, num_actors=1, ready_timeout_s=1)  # the module's pool holds both CPUs
    with pytest.raises(NasfleetError, match="roles"):
        pool.evaluate([trained.space.smallest()], roles=["a", "b"])
    with pytest.raises(NasfleetError, match="unknown split"):
        EvaluationPool(trained, num_actors=1, splits=("holdout",))
    largest = trained.space.largest()
    too_wide = replace(largest, stages=(replace(largest.stages[0], width=999), *largest.stages[1:]))
    with pytest.raises(NasfleetError, match="outside"):
        pool.evaluate([too_wide])


def test_pool_throughput_is_exported_as_prometheus_metrics(pool: EvaluationPool, trained: TrainedSupernet) -> None:
    from prometheus_client.parser import text_string_to_metric_families
    import urllib.request

    from nasfleet.orchestrator.metrics import prometheus_metrics

    endpoint = prometheus_metrics(port=0)
    try:
        pool.metrics = endpoint.metrics.for_run(pool.run_name)
        pool.evaluate(archs_to_evaluate(trained)[:3])
        with urllib.request.urlopen(endpoint.url, timeout=10) as response:
            text = response.read().decode()
    finally:
        pool.metrics = None
        endpoint.close()
    samples = {(s.name, s.labels.get("run")): s.value for family in text_string_to_metric_families(text)
               for s in family.samples}
    assert samples[("nasfleet_eval_subnets_total", pool.run_name)] == 3
    assert samples[("nasfleet_eval_seconds_total", pool.run_name)] > 0
