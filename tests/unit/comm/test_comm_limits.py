"""Input guards of the library: non-finite numbers, and size guards whose memory estimates hold."""

from __future__ import annotations

import math
import tracemalloc

import pytest

from nasfleet.comm import LinkFailure, Step, build_collective, fat_tree_k, leaf_spine, simulate
from nasfleet.errors import NasfleetError

ENV = "NASFLEET_COMM_MAX_MEMORY"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: leaf_spine(2, 2, 2, gbps=math.inf), "gbps must be a positive finite number"),
        (lambda: leaf_spine(2, 2, 2, gbps=math.nan), "gbps must be a positive finite number"),
        (lambda: leaf_spine(2, 2, 2, gbps=400, uplink_gbps=math.inf), "uplink_gbps must be a positive finite"),
        (lambda: leaf_spine(2, 2, 2, gbps=400, oversubscription=math.inf), "oversubscription must be a positive finite"),
        (lambda: leaf_spine(2, 2, 2, gbps=400, latency_ns=math.inf), "latency_ns must be a finite number"),
        (lambda: leaf_spine(2, 2, 2, gbps=400, latency_ns=math.nan), "latency_ns must be a finite number"),
        (lambda: fat_tree_k(4, gbps=math.inf), "gbps must be a positive finite number"),
        (lambda: leaf_spine(2, 2, 2, gbps=400, failures=(LinkFailure("leaf0", "spine0", math.inf),)),
         "bad failure leaf0-spine0: gbps must be a finite number"),
        (lambda: build_collective("allreduce", 4, math.inf), "bad size inf"),
        (lambda: build_collective("allreduce", 4, math.nan), "bad size nan"),
        (lambda: Step.of([0], [1], math.nan), "flow sizes must be finite"),
        (lambda: simulate(leaf_spine(2, 2, 2, gbps=400), build_collective("allreduce", 4, 1.0), alpha_s=math.inf),
         "bad alpha_s inf"),
    ],
)
def test_non_finite_numbers_are_refused(make, message):
    with pytest.raises(NasfleetError, match=message):
        make()


def test_the_memory_limit_comes_from_the_environment(monkeypatch):
    # 64 × 64 × 64: 16,384 links, about 1.25 MiB of per-link arrays
    make = lambda: leaf_spine(leaves=64, spines=64, hosts=64, gbps=400)
    make()
    monkeypatch.setenv(ENV, "1MiB")
    with pytest.raises(NasfleetError, match=r"16,384 links would need about 1.25MiB of memory, more than the limit of 1MiB"):
        make()
    monkeypatch.setenv(ENV, "lots")
    with pytest.raises(NasfleetError, match=f"{ENV}='lots': bad size"):
        make()
    monkeypatch.setenv(ENV, "0")
    with pytest.raises(NasfleetError, match="must be a positive size"):
        make()


def _peak_bytes(make) -> int:
    tracemalloc.start()
    try:
        make()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


FABRIC = leaf_spine(leaves=8, spines=8, hosts=16, gbps=400)
DIRECT_128 = build_collective("alltoall", 128, 2**20, "direct")


@pytest.mark.parametrize(
    "make, guard",
    [
        (lambda: build_collective("alltoall", 512, 2**20, "direct").patterns[0], "direct alltoall over 512 ranks"),
        (lambda: simulate(FABRIC, DIRECT_128, "ecmp-8"), "routing 16,256 flows with ecmp-8"),
        (lambda: simulate(FABRIC, DIRECT_128, "spray", fast_path=False), "routing 16,256 flows with spray"),
        (lambda: simulate(FABRIC, DIRECT_128, "split-weighted"), "routing 16,256 flows with split-weighted"),
        (lambda: simulate(leaf_spine(leaves=16, spines=32, hosts=32, gbps=400),
                          build_collective("alltoall", 512, 2**20, "direct"), "ecmp"),
         r"direct alltoall over 512 ranks under ecmp \(261,632 flows"),
        (lambda: simulate(leaf_spine(leaves=1000, spines=500, hosts=1, gbps=400), build_collective("p2p", 2, 1e6)),
         "topology leafspine-1000x500x1 with 1,002,000 links"),
    ],
)
def test_a_size_guards_estimate_is_at_least_the_measured_peak_and_at_most_4x(monkeypatch, make, guard):
    """Set the limit just below the measured peak: that guard refuses (its estimate is not
    low); at four times the peak nothing refuses (the estimate is not wildly high)."""
    peak = _peak_bytes(make)
    monkeypatch.setenv(ENV, str(peak - 1))
    with pytest.raises(NasfleetError, match=guard):
        make()
    monkeypatch.setenv(ENV, str(4 * peak))
    make()
