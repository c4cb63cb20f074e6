"""Max-min fair rates: textbook cases, an LP cross-check, and the defining properties."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from nasfleet.comm import max_min_rates


def rates_of(rows: list[list[float]], capacity: list[float], weight=None) -> np.ndarray:
    return max_min_rates(sp.csr_matrix(np.array(rows, dtype=float)), np.array(capacity, dtype=float), weight=weight)


def test_equal_share_of_one_link():
    assert np.allclose(rates_of([[1], [1], [1], [1]], [8.0]), 2.0)


def test_two_links_classic():
    # f0 on L0, f1 on L0+L1, f2 on L1; L0 fills first at 0.5, f2 then takes the rest of L1.
    assert np.allclose(rates_of([[1, 0], [1, 1], [0, 1]], [1.0, 2.0]), [0.5, 0.5, 1.5])


def test_parking_lot():
    # One long flow over three unit links, one short flow per link: everyone gets 1/2.
    rows = [[1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert np.allclose(rates_of(rows, [1.0, 1.0, 1.0]), 0.5)


def test_bertsekas_gallager_example():
    # Links A(cap 1), B(cap 1), C(cap 1): f0 A, f1 A+B, f2 B+C, f3 C, f4 C.
    rows = [[1, 0, 0], [1, 1, 0], [0, 1, 1], [0, 0, 1], [0, 0, 1]]
    assert np.allclose(rates_of(rows, [1.0, 1.0, 1.0]), [0.5, 0.5, 1 / 3, 1 / 3, 1 / 3])


def test_weights_split_a_flows_share():
    assert np.allclose(rates_of([[1], [1], [1]], [4.0], weight=[1.0, 0.5, 0.5]), [2.0, 1.0, 1.0])


def test_sprayed_transfer_loads_paths_fractionally():
    # Transfer 0 spread over two links, transfer 1 only on the first: link 0 is shared.
    assert np.allclose(rates_of([[0.5, 0.5], [1.0, 0.0]], [1.0, 1.0]), [2 / 3, 2 / 3])


def test_inactive_get_zero_and_linkless_get_inf():
    rates = max_min_rates(sp.csr_matrix(np.array([[1.0], [1.0], [0.0]])), np.array([2.0]), active=np.array([True, False, True]))
    assert rates[0] == pytest.approx(2.0) and rates[1] == 0 and np.isinf(rates[2])


def lexicographic_max_min(a: np.ndarray, capacity: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Weighted max-min fair rates by a sequence of LPs (the definition, not water-filling)."""
    t_count = a.shape[0]
    fixed = np.full(t_count, np.nan)
    while np.isnan(fixed).any():
        free = np.isnan(fixed)
        # variables: rates (t_count) and the common level z; maximise z
        c = np.zeros(t_count + 1)
        c[-1] = -1
        a_ub = [np.concatenate([a[:, e], [0.0]]) for e in range(a.shape[1])]
        b_ub = list(capacity)
        for t in np.flatnonzero(free):
            row = np.zeros(t_count + 1)
            row[t], row[-1] = -1.0, weight[t]
            a_ub.append(row)
            b_ub.append(0.0)
        bounds = [(fixed[t], fixed[t]) if not free[t] else (0, None) for t in range(t_count)] + [(0, None)]
        z = -linprog(c, A_ub=np.array(a_ub), b_ub=b_ub, bounds=bounds, method="highs").fun
        # A free transfer that cannot exceed w·z while the others keep w·z is fixed there.
        bounds_at_z = [b if not free[t] else (weight[t] * z * (1 - 1e-9), None) for t, b in enumerate(bounds[:-1])]
        stuck = []
        for t in np.flatnonzero(free):
            c_t = np.zeros(t_count)
            c_t[t] = -1
            best = -linprog(c_t, A_ub=a.T, b_ub=capacity, bounds=bounds_at_z, method="highs").fun
            if best <= weight[t] * z * (1 + 1e-7):
                stuck.append(t)
        fixed[stuck] = weight[stuck] * z
    return fixed


@st.composite
def instances(draw):
    transfers = draw(st.integers(1, 7))
    links = draw(st.integers(1, 5))
    density = st.sampled_from([0.0, 0.0, 1.0, 1.0, 0.5, 0.25])
    a = np.array([[draw(density) for _ in range(links)] for _ in range(transfers)])
    for t in range(transfers):  # every transfer crosses at least one link
        if not a[t].any():
            a[t, draw(st.integers(0, links - 1))] = 1.0
    capacity = np.array([draw(st.sampled_from([1.0, 2.0, 3.0, 5.0])) for _ in range(links)])
    weight = np.array([draw(st.sampled_from([1.0, 1.0, 0.5, 0.25])) for _ in range(transfers)])
    return a, capacity, weight


@settings(max_examples=60, deadline=None, derandomize=True)
@given(instances())
def test_water_filling_matches_lexicographic_lp(instance):
    a, capacity, weight = instance
    ours = max_min_rates(sp.csr_matrix(a), capacity, weight=weight)
    assert np.allclose(ours, lexicographic_max_min(a, capacity, weight), rtol=1e-6, atol=1e-9)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(instances())
def test_rates_are_feasible_and_every_transfer_has_a_bottleneck(instance):
    a, capacity, weight = instance
    rates = max_min_rates(sp.csr_matrix(a), capacity, weight=weight)
    load = a.T @ rates
    assert np.all(load <= capacity * (1 + 1e-9))
    saturated = load >= capacity * (1 - 1e-9)
    level = rates / weight
    for t in range(len(rates)):
        links = np.flatnonzero(a[t] > 0)
        # fair: on some full link of t, no other transfer has a higher normalised rate
        assert any(saturated[e] and level[t] >= level[a[:, e] > 0].max() * (1 - 1e-9) for e in links)


def test_lp_oracle_agrees_with_the_textbook():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    assert np.allclose(lexicographic_max_min(a, np.array([1.0, 2.0]), np.ones(3)), [0.5, 0.5, 1.5])


@st.composite
def steps_with_sizes(draw):
    a, capacity, weight = draw(instances())
    sizes = np.array([draw(st.sampled_from([1.0, 2.0, 3.0, 7.0])) for _ in range(a.shape[0])])
    return a, capacity, weight, sizes


def finish_times_by_full_resolves(a, capacity, weight, sizes):
    """The event loop written out plainly: every round re-solves the whole problem, nothing is dropped."""
    remaining, active = sizes.astype(float).copy(), (a > 0).any(axis=1)
    finish, now = np.zeros(len(sizes)), 0.0
    while active.any():
        rates = max_min_rates(sp.csr_matrix(a), capacity, active=active, weight=weight)
        left = np.where(active, remaining / np.where(active, rates, 1.0), np.inf)
        dt = left.min()
        now += dt
        leaving = active & (left <= dt * (1 + 1e-9))
        remaining = np.where(active, remaining - rates * dt, remaining)
        finish[leaving], active = now, active & ~leaving
    return finish


@settings(max_examples=120, deadline=None, derandomize=True)
@given(steps_with_sizes())
def test_warm_started_event_loop_equals_solving_from_scratch(case):
    from nasfleet.comm import Transfers, simulate_step

    a, capacity, weight, sizes = case
    transfers = Transfers(
        flow=np.arange(len(sizes)), size_bytes=sizes, latency_s=np.zeros(len(sizes)), incidence=sp.csr_matrix(a),
        num_flows=len(sizes), share=weight,
    )
    warm = simulate_step(transfers, capacity, warm_start=True)
    cold = simulate_step(transfers, capacity, warm_start=False)
    assert np.allclose(warm.transfer_finish_s, cold.transfer_finish_s, rtol=1e-9)
    # both drop finished transfers from the problem as they go; re-solving it whole gives the same times
    assert np.allclose(warm.transfer_finish_s, finish_times_by_full_resolves(a, capacity, weight, sizes), rtol=1e-9)
    # and the finish times are consistent with the rates: bytes = integral of rate
    single = sp.csr_matrix(a).getnnz(axis=1) > 0
    assert np.all(cold.transfer_finish_s[single] > 0)


@settings(max_examples=120, deadline=None, derandomize=True)
@given(instances(), st.sampled_from([1.0, 3.0, 7.0]))
def test_transfers_of_one_size_per_weight_finish_as_their_first_rates_say(instance, bytes_per_weight):
    from nasfleet.comm import Transfers, simulate_step

    a, capacity, weight = instance
    sizes = bytes_per_weight * weight
    transfers = Transfers(
        flow=np.arange(len(sizes)), size_bytes=sizes, latency_s=np.zeros(len(sizes)), incidence=sp.csr_matrix(a),
        num_flows=len(sizes), share=weight,
    )
    once = simulate_step(transfers, capacity)
    assert once.rate_changes == 1
    assert np.allclose(once.transfer_finish_s, finish_times_by_full_resolves(a, capacity, weight, sizes), rtol=1e-9)
    assert np.allclose(once.transfer_finish_s, simulate_step(transfers, capacity, warm_start=False).transfer_finish_s,
                       rtol=1e-9)


def test_event_loop_on_a_textbook_case():
    """Two flows share a link, one is shorter: after it leaves the other speeds up."""
    from nasfleet.comm import Transfers, simulate_step

    transfers = Transfers(
        flow=np.arange(2), size_bytes=np.array([1.0, 3.0]), latency_s=np.array([0.5, 0.5]),
        incidence=sp.csr_matrix(np.array([[1.0], [1.0]])), num_flows=2, share=np.ones(2),
    )
    timing = simulate_step(transfers, np.array([2.0]))
    # both at 1 B/s until t=1; then the second alone at 2 B/s for its last 2 B: t=2
    assert np.allclose(timing.transfer_finish_s, [1.5, 2.5])
    assert timing.time_s == pytest.approx(2.5) and timing.rate_changes == 2
