"""Flow-level fidelity: max-min fair rates by water-filling, recomputed as transfers finish.

Queues, packets and congestion control are not modelled: each transfer moves at its
max-min fair share of the links it crosses (a fluid model of well-behaved transport),
and its path latency is added once when its last byte leaves the source. Rates are
recomputed at every completion, so stragglers speed up when others finish (except where
no transfer's rate can change: :func:`keeps_its_first_rates`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from nasfleet.comm.routing import Transfers

# Relative slack used to decide that a link is saturated / that transfers finish together.
_REL_TOL = 1e-9


def _row_entries(matrix: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(position in ``rows``, column, value) of every stored entry in the given CSR rows."""
    starts = matrix.indptr[rows]
    counts = matrix.indptr[rows + 1] - starts
    owner = np.repeat(np.arange(len(rows)), counts)
    pos = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
    return owner, matrix.indices[pos], matrix.data[pos]


@dataclass(frozen=True)
class FairShare:
    """A transfers × links problem prepared once and solved for many active sets.

    ``incidence[t, e]`` is the fraction of transfer ``t``'s rate that loads link ``e``;
    ``weight[t]`` its fairness weight (rates are max-min fair in rate / weight).
    """

    incidence: sp.csr_matrix
    capacity_bytes_per_s: np.ndarray
    weight: np.ndarray
    by_link: sp.csr_matrix
    pattern_by_link: sp.csr_matrix

    @staticmethod
    def build(incidence: sp.csr_matrix, capacity_bytes_per_s: np.ndarray, weight: np.ndarray | None = None) -> "FairShare":
        incidence = sp.csr_matrix(incidence)
        weight = np.ones(incidence.shape[0]) if weight is None else np.asarray(weight, dtype=np.float64)
        by_link = incidence.T.tocsr()
        pattern = sp.csr_matrix((np.ones_like(by_link.data), by_link.indices, by_link.indptr), shape=by_link.shape)
        return FairShare(incidence, np.asarray(capacity_bytes_per_s, dtype=np.float64), weight, by_link, pattern)

    def rates(
        self, active: np.ndarray | None = None, keep: np.ndarray | None = None, kept_rates: np.ndarray | None = None,
        start_level: float = 0.0,
    ) -> np.ndarray:
        """Weighted max-min fair rates (bytes/s) of the active transfers, by progressive filling.

        A common fill level rises and every unfrozen transfer runs at ``weight × level``
        until some link fills; every transfer through a full link freezes at its
        current rate; repeat. Each round fills at least one link, and link demands are
        updated only for the transfers frozen in that round, so a solve touches each
        stored entry a constant number of times plus O(links) per round. Transfers
        that cross no link get ``inf``; inactive ones get 0.

        Warm start: ``keep`` marks transfers already known to freeze below
        ``start_level`` at ``kept_rates``; filling then resumes from ``start_level``.
        """
        incidence, weight = self.incidence, self.weight
        num_transfers, num_links = incidence.shape
        active = np.ones(num_transfers, dtype=bool) if active is None else np.asarray(active, dtype=bool)
        keep = np.zeros(num_transfers, dtype=bool) if keep is None else keep & active
        rates = np.zeros(num_transfers)
        has_links = np.diff(incidence.indptr) > 0
        rates[active & ~has_links] = np.inf
        rates[keep] = kept_rates[keep] if kept_rates is not None else 0.0
        frozen = ~(active & has_links) | keep
        demand = self.by_link @ np.where(frozen, 0.0, weight)
        unfrozen_on_link = np.rint(self.pattern_by_link @ (~frozen).astype(np.float64)).astype(np.int64)
        level = float(start_level)
        residual = self.capacity_bytes_per_s - self.by_link @ np.where(keep, rates, 0.0) - demand * level
        while not frozen.all():
            used = unfrozen_on_link > 0
            headroom = np.full(num_links, np.inf)
            headroom[used] = np.maximum(residual[used], 0.0) / demand[used]
            delta = headroom.min()
            level += delta
            residual -= demand * delta
            full = np.flatnonzero(used & (headroom <= delta * (1 + _REL_TOL) + 1e-300))
            residual[full] = 0.0
            _, on_full, _ = _row_entries(self.by_link, full)
            newly = np.unique(on_full)
            newly = newly[~frozen[newly]]
            frozen[newly] = True
            rates[newly] = weight[newly] * level
            owner, links, share = _row_entries(incidence, newly)
            demand -= np.bincount(links, weights=share * weight[newly][owner], minlength=num_links)
            unfrozen_on_link -= np.bincount(links, minlength=num_links)
        return rates


def max_min_rates(
    incidence: sp.csr_matrix,
    capacity_bytes_per_s: np.ndarray,
    active: np.ndarray | None = None,
    weight: np.ndarray | None = None,
) -> np.ndarray:
    """Weighted max-min fair rates for one active set (see :meth:`FairShare.rates`)."""
    return FairShare.build(incidence, capacity_bytes_per_s, weight).rates(active)


@dataclass(frozen=True)
class StepTiming:
    """Outcome of one step at flow level."""

    time_s: float
    transfer_finish_s: np.ndarray  # arrival of each transfer's last byte
    flow_finish_s: np.ndarray
    rate_changes: int  # how many times rates were recomputed
    flow_sent_s: np.ndarray  # when each flow's last byte left its source (0 for a flow off the network)
    flow_initial_rate_bytes_per_s: np.ndarray  # each flow's max-min fair rate when the step starts


def simulate_step(transfers: Transfers, capacity_bytes_per_s: np.ndarray, warm_start: bool = True) -> StepTiming:
    """Completion time of a step whose transfers all start at time 0.

    ``warm_start=False`` re-solves the rates from scratch at every completion (the
    reference the warm start is tested against). Once half of the problem's transfers
    have finished, it is rebuilt over the active ones: a round then costs what is left,
    not what the step started with.

    With ``warm_start``, a step whose transfers all carry the same bytes per unit of
    fairness weight (every flow of an all-to-all, a direct exchange or a ring step is the
    same size) is solved once (:func:`keeps_its_first_rates`).
    """
    if warm_start and keeps_its_first_rates(transfers):
        return _single_solve(transfers, capacity_bytes_per_s)
    num_transfers = transfers.num_transfers
    done_at = np.zeros(num_transfers)
    # Everything below is indexed by position in ``held``, the transfers the current problem holds.
    held = np.arange(num_transfers)
    remaining = transfers.size_bytes.astype(np.float64).copy()
    share = transfers.share
    active = (np.diff(transfers.incidence.indptr) > 0) & (remaining > 0)
    now, rounds, restart = 0.0, 0, None
    problem = FairShare.build(transfers.incidence, capacity_bytes_per_s, share)
    rates = np.zeros(num_transfers)
    initial_rates = np.zeros(num_transfers)
    while active.any():
        if 2 * int(active.sum()) < len(held):
            held, remaining, share, rates, active = held[active], remaining[active], share[active], rates[active], active[active]
            problem = FairShare.build(transfers.incidence[held], capacity_bytes_per_s, share)
        if warm_start and restart is not None:
            # Filling below the lowest level of the transfers that just left is
            # unchanged by their leaving: keep those rates and resume from there.
            with np.errstate(divide="ignore", invalid="ignore"):
                keep = active & (rates / share < restart * (1 - 1e-9))
            rates = problem.rates(active, keep, rates, restart)
        else:
            rates = problem.rates(active)
        if rounds == 0:
            initial_rates[held] = rates
        left = np.full(len(held), np.inf)
        left[active] = remaining[active] / rates[active]
        dt = left.min()
        finishing = active & (left <= dt * (1 + _REL_TOL))
        restart = float((rates[finishing] / share[finishing]).min())
        now += dt
        remaining[active] -= rates[active] * dt
        done_at[held[finishing]] = now
        remaining[finishing] = 0.0
        active &= ~finishing
        rounds += 1
    return _timing(transfers, done_at, initial_rates, rounds)


def keeps_its_first_rates(transfers: Transfers) -> bool:
    """Whether every transfer keeps its first max-min rate until it finishes.

    It does when all transfers that cross a link have the same size / fairness weight.
    Their finish times then order as their fill levels (rate / weight), highest first,
    and the transfers that leave at the highest level cross no link that filled lower:
    such a link's transfers all froze at or below its level. So every link that filled
    below them keeps its load and stays full, the filling below their level is the same
    without them, and every other transfer keeps its rate. By induction over the
    completions, the first solve's rates hold to the end, and a direct all-to-all under
    ECMP (a million flows over a thousand distinct levels at 1,024 hosts) needs one
    solve instead of one per completion.
    """
    moving = (np.diff(transfers.incidence.indptr) > 0) & (transfers.size_bytes > 0)
    if not moving.any():
        return True
    per_weight = transfers.size_bytes[moving] / transfers.share[moving]
    return bool(np.ptp(per_weight) <= _REL_TOL * 1e-3 * per_weight.max())


def _single_solve(transfers: Transfers, capacity_bytes_per_s: np.ndarray) -> StepTiming:
    """:func:`simulate_step` for a step that :func:`keeps_its_first_rates`."""
    moving = (np.diff(transfers.incidence.indptr) > 0) & (transfers.size_bytes > 0)
    rates = FairShare.build(transfers.incidence, capacity_bytes_per_s, transfers.share).rates(moving)
    done_at = np.zeros(transfers.num_transfers)
    done_at[moving] = transfers.size_bytes[moving] / rates[moving]
    return _timing(transfers, done_at, rates, 1 if moving.any() else 0)


def _timing(transfers: Transfers, done_at: np.ndarray, initial_rates: np.ndarray, rounds: int) -> StepTiming:
    arrival = done_at + transfers.latency_s
    flow_finish = np.zeros(transfers.num_flows)
    np.maximum.at(flow_finish, transfers.flow, arrival)
    flow_sent = np.zeros(transfers.num_flows)
    np.maximum.at(flow_sent, transfers.flow, done_at)
    flow_initial = np.bincount(transfers.flow, weights=initial_rates, minlength=transfers.num_flows)
    return StepTiming(float(arrival.max(initial=0.0)), arrival, flow_finish, rounds, flow_sent, flow_initial)
