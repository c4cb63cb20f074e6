"""Calibration: measure real collectives with MPI, fit α (latency) and β (per byte).

The fit uses the textbook cost models of the algorithms MPI libraries pick for large
messages on a few ranks, jointly over all measurements (non-negative least squares):

* all-reduce (ring): 2(p−1)·α + 2(p−1)/p · n · β
* all-gather (ring): (p−1)·α + (p−1)/p · n · β

so α is the per-step latency and 1/β the effective per-rank bandwidth. The simulator
uses them through ``simulate(..., alpha_s=α)`` and a host-link rate capped at 1/β
(``nasfleet comm simulate --calibration FILE``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, NonNegativeFloat, PositiveInt, ValidationError

from nasfleet.errors import NasfleetError

BACKENDS = ("mpi", "gloo")


@dataclass(frozen=True)
class Sample:
    op: str
    size_bytes: int
    time_s: float
    repetitions: int = 1


@dataclass(frozen=True)
class CalibrationFit:
    alpha_s: float
    beta_s_per_byte: float
    ranks: int
    backend: str
    samples: tuple[Sample, ...]
    relative_rms_error: float

    @property
    def gbps(self) -> float:
        """Effective per-rank bandwidth 1/β in Gb/s (inf when β is 0)."""
        return 8.0 / (self.beta_s_per_byte * 1e9) if self.beta_s_per_byte > 0 else float("inf")

    def predict_s(self, op: str, size_bytes: float) -> float:
        a, b = _coefficients(op, self.ranks, size_bytes)
        return a * self.alpha_s + b * self.beta_s_per_byte

    def to_dict(self) -> dict:
        record = asdict(self)
        record["samples"] = [asdict(s) for s in self.samples]
        record["gbps"] = self.gbps if np.isfinite(self.gbps) else None
        return record


def _coefficients(op: str, p: int, n: float) -> tuple[float, float]:
    if op == "allreduce":
        return 2 * (p - 1), 2 * (p - 1) / p * n
    if op == "allgather":
        return p - 1, (p - 1) / p * n
    raise NasfleetError(f"unknown calibration operation {op!r}: expected allreduce or allgather")


def fit_alpha_beta(samples: list[Sample], ranks: int, backend: str = "mpi") -> CalibrationFit:
    """Least-squares α, β ≥ 0 over all samples, each weighted by 1/time so that small
    and large messages count alike."""
    if ranks < 2:
        raise NasfleetError("calibration needs at least 2 ranks")
    if len(samples) < 2:
        raise NasfleetError("calibration needs at least two measurements to fit alpha and beta")
    from scipy.optimize import nnls  # here: every training job imports this module, few fit

    design = np.array([_coefficients(s.op, ranks, s.size_bytes) for s in samples])
    times = np.array([s.time_s for s in samples])
    scale = 1.0 / np.maximum(times, 1e-12)
    (alpha, beta), _ = nnls(design * scale[:, None], times * scale)
    predicted = design @ np.array([alpha, beta])
    rms = float(np.sqrt(np.mean(((predicted - times) * scale) ** 2)))
    return CalibrationFit(float(alpha), float(beta), ranks, backend, tuple(samples), rms)


def default_mpiexec() -> str:
    """The mpiexec installed next to this Python (the venv's MPICH), else the one on PATH."""
    local = Path(sys.executable).parent / "mpiexec"
    return str(local) if local.exists() else "mpiexec"


def run_calibration(
    ranks: int = 2,
    sizes_bytes: list[int] | tuple[int, ...] = (4096, 65536, 2**20),
    budget_s: float = 10.0,
    backend: str = "mpi",
    mpiexec: str | None = None,
    hostfile: Path | None = None,
    output: Path | None = None,
    timeout_s: float | None = None,
) -> CalibrationFit:
    """Launch ``mpiexec -n ranks`` on the calibration worker, fit α and β, store them."""
    if backend not in BACKENDS:
        raise NasfleetError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if ranks < 2:
        raise NasfleetError(f"calibration needs at least 2 ranks, got {ranks}")
    if budget_s <= 0:
        raise NasfleetError(f"bad budget {budget_s}: must be positive")
    if not sizes_bytes or min(sizes_bytes) <= 0:
        raise NasfleetError("calibration sizes must be positive")
    with tempfile.TemporaryDirectory(prefix="nasfleet-calib-") as tmp:
        out = Path(tmp) / "samples.json"
        command = [mpiexec or default_mpiexec(), "-n", str(ranks)]
        if hostfile is not None:
            command += ["-f", str(hostfile)]
        command += [
            sys.executable, "-m", "nasfleet.comm.mpi_bench",
            "--sizes", ",".join(str(int(s)) for s in sizes_bytes),
            "--budget-s", str(budget_s),
            "--backend", backend,
            "--rendezvous", str(Path(tmp) / "gloo-rendezvous"),
            "--out", str(out),
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s or 60 + 4 * budget_s,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})
        except FileNotFoundError:
            raise NasfleetError(f"cannot run {command[0]}: install MPI (pip install mpich mpi4py) or pass --mpiexec") from None
        except subprocess.TimeoutExpired:
            raise NasfleetError(f"calibration timed out after {timeout_s or 60 + 4 * budget_s:.0f} s") from None
        if done.returncode != 0 or not out.exists():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise NasfleetError(f"calibration run failed (exit {done.returncode}): {last}")
        raw = json.loads(out.read_text())
    samples = [Sample(**s) for s in raw["samples"]]
    fit = fit_alpha_beta(samples, raw["ranks"], raw["backend"])
    if output is not None:
        save_calibration(fit, output)
    return fit


def save_calibration(fit: CalibrationFit, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fit.to_dict(), indent=2) + "\n")
    return path


class _CalibrationFile(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)
    alpha_s: NonNegativeFloat
    beta_s_per_byte: NonNegativeFloat
    ranks: PositiveInt
    backend: str = "mpi"
    relative_rms_error: float = 0.0
    samples: list[dict] = []


def load_calibration(path: Path) -> CalibrationFit:
    """Read a fit written by :func:`save_calibration`."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        parsed = _CalibrationFile(**data)
        samples = tuple(Sample(**s) for s in parsed.samples)
    except OSError as error:
        raise NasfleetError(f"cannot read calibration file {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise NasfleetError(f"calibration file {path} is not UTF-8 text (byte {error.start})") from None
    except (json.JSONDecodeError, TypeError) as error:
        raise NasfleetError(f"bad calibration file {path}: {str(error).splitlines()[0]}") from None
    except ValidationError as error:
        first = error.errors()[0]
        raise NasfleetError(f"bad calibration file {path}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    return CalibrationFit(parsed.alpha_s, parsed.beta_s_per_byte, parsed.ranks, parsed.backend, samples,
                          parsed.relative_rms_error)
