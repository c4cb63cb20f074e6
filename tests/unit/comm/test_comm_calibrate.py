"""Calibration: the α-β fit, and a real ``mpiexec -n 2`` run on CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nasfleet.comm import build_collective, leaf_spine, simulate
from nasfleet.comm.calibrate import Sample, default_mpiexec, fit_alpha_beta, load_calibration, run_calibration
from nasfleet.errors import NasfleetError


def test_fit_recovers_alpha_and_beta_from_model_times():
    alpha, beta, p = 3e-6, 1 / 12e9, 4
    samples = [
        Sample("allreduce", n, 2 * (p - 1) * alpha + 2 * (p - 1) / p * n * beta) for n in (1e3, 1e5, 1e7)
    ] + [Sample("allgather", n, (p - 1) * alpha + (p - 1) / p * n * beta) for n in (1e3, 1e6)]
    fit = fit_alpha_beta(samples, p)
    assert fit.alpha_s == pytest.approx(alpha, rel=1e-6)
    assert fit.beta_s_per_byte == pytest.approx(beta, rel=1e-6)
    assert fit.gbps == pytest.approx(96.0, rel=1e-6)
    assert fit.relative_rms_error < 1e-6
    assert fit.predict_s("allreduce", 1e7) == pytest.approx(samples[2].time_s)


def test_fit_rejects_too_little_data():
    with pytest.raises(NasfleetError):
        fit_alpha_beta([Sample("allreduce", 10, 1e-6)], 2)
    with pytest.raises(NasfleetError):
        fit_alpha_beta([Sample("bcast", 10, 1e-6), Sample("bcast", 20, 1e-6)], 2)


def test_mpiexec_is_the_venv_one():
    assert Path(default_mpiexec()) == Path(sys.executable).parent / "mpiexec"


def test_real_mpi_run_with_two_ranks(tmp_path):
    out = tmp_path / "calibration.json"
    fit = run_calibration(ranks=2, sizes_bytes=[1024, 65536, 1 << 20], budget_s=1.5, backend="mpi", output=out)
    assert fit.ranks == 2 and fit.backend == "mpi"
    assert {(s.op, s.size_bytes) for s in fit.samples} == {
        (op, n) for op in ("allreduce", "allgather") for n in (1024, 65536, 1 << 20)
    }
    assert all(s.time_s > 0 and s.repetitions >= 3 for s in fit.samples)
    assert fit.alpha_s >= 0 and fit.beta_s_per_byte > 0
    # a 1 MiB all-reduce is slower than a 1 KiB one, and the fit orders them the same way
    times = {(s.op, s.size_bytes): s.time_s for s in fit.samples}
    assert times[("allreduce", 1 << 20)] > times[("allreduce", 1024)]
    assert fit.predict_s("allreduce", 1 << 20) > fit.predict_s("allreduce", 1024)
    loaded = load_calibration(out)
    assert loaded.alpha_s == fit.alpha_s and loaded.beta_s_per_byte == fit.beta_s_per_byte

    # the simulator uses the fit: α per step, NICs capped at 1/β
    topo = leaf_spine(2, 2, 2, gbps=400)
    coll = build_collective("allreduce", 4, 2**20, "ring")
    plain = simulate(topo, coll, "split")
    calibrated = subprocess.run(
        [sys.executable, "-m", "nasfleet.comm", "simulate", "-t", "leafspine:leaves=2,spines=2,hosts=2,gbps=400",
         "--size", "1MiB", "--calibration", str(out), "--json"],
        capture_output=True, text=True, timeout=60,
    )
    assert calibrated.returncode == 0, calibrated.stderr
    record = json.loads(calibrated.stdout)
    assert record["completion_time_s"] >= plain.completion_time_s + coll.num_steps * fit.alpha_s * (1 - 1e-9)


def test_bad_calibration_inputs(tmp_path):
    with pytest.raises(NasfleetError, match="at least 2 ranks"):
        run_calibration(ranks=1)
    with pytest.raises(NasfleetError, match="unknown backend"):
        run_calibration(backend="nccl")
    with pytest.raises(NasfleetError, match="cannot run"):
        run_calibration(mpiexec="/nonexistent/mpiexec", budget_s=0.1)
    bad = tmp_path / "bad.json"
    bad.write_text('{"alpha_s": -1, "beta_s_per_byte": 1e-9, "ranks": 2}')
    with pytest.raises(NasfleetError, match="alpha_s"):
        load_calibration(bad)
    with pytest.raises(NasfleetError, match="cannot read"):
        load_calibration(tmp_path / "missing.json")


def test_real_gloo_run_with_two_ranks(tmp_path):
    """torch.distributed's gloo, with the two processes started by mpiexec."""
    fit = run_calibration(ranks=2, sizes_bytes=[4096, 1 << 20], budget_s=1.0, backend="gloo",
                          output=tmp_path / "gloo.json")
    assert fit.backend == "gloo" and len(fit.samples) == 4
    assert all(s.time_s > 0 for s in fit.samples)
    assert load_calibration(tmp_path / "gloo.json").backend == "gloo"
