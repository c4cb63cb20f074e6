"""Size guards: refuse a request whose arrays would not fit, before allocating them.

A topology of 10^8 leaves or a direct all-to-all over a million ranks is a typo more
often than a plan, and numpy would die of a MemoryError traceback (or the kernel kill
the process) minutes later. Each guard estimates from a request's shape the bytes its
arrays would take and raises one :class:`NasfleetError` giving that estimate when it is
above the limit: :data:`MAX_MEMORY_BYTES`, or ``NASFLEET_COMM_MAX_MEMORY`` in the
environment (``64GiB``) on a machine with more memory. The per-item costs below were
measured with tracemalloc on the simulator's own arrays (rounded up).
"""

from __future__ import annotations

import os

from nasfleet.comm.units import format_bytes, parse_size_bytes
from nasfleet.errors import NasfleetError

MAX_MEMORY_BYTES = 8 * 2**30
"""Default limit on the estimated memory of one request."""

MAX_STEPS = 10_000_000
"""The most bulk-synchronous steps a collective may plan (a 1 GiB pipeline in 1-byte chunks plans 5·10^8)."""

MAX_WORKLOAD_STEPS = 1_000_000
"""The most steps the jobs of one workload may run together: each is at least one event of the shared event loop."""

BYTES_PER_LINK = 80  # capacities, latencies, link loads and the water-filling state per link
BYTES_PER_FLOW = 80  # a stored step's src, dst and size, and the temporaries that build them
BYTES_PER_PATH_LINK = 40  # one entry of a path table, with its sort and filter copies
BYTES_PER_TRANSFER = 120  # a transfer's size, share, latency, rates and event-loop state
BYTES_PER_ENTRY = 80  # one (transfer, link) entry of the incidence matrix, its transpose and temporaries
BYTES_PER_HASHED_FLOW = 16  # direct all-to-all under ECMP on the fast path: a flow's spine, frozen flag and two index entries

_ENV = "NASFLEET_COMM_MAX_MEMORY"


def memory_limit_bytes() -> int:
    """The limit in force: ``NASFLEET_COMM_MAX_MEMORY`` if set (a size such as ``64GiB``), else 8 GiB."""
    value = os.environ.get(_ENV)
    if value is None or not value.strip():
        return MAX_MEMORY_BYTES
    try:
        limit = parse_size_bytes(value)
    except NasfleetError as error:
        raise NasfleetError(f"{_ENV}={value!r}: {error}") from None
    if limit <= 0:
        raise NasfleetError(f"{_ENV}={value!r}: must be a positive size such as 64GiB")
    return limit


def check_memory(what: str, estimate_bytes: float) -> None:
    """Raise one :class:`NasfleetError` when ``what`` would need more than the memory limit."""
    limit = memory_limit_bytes()
    if estimate_bytes > limit:
        raise NasfleetError(
            f"{what} would need about {format_bytes(estimate_bytes)} of memory, more than the limit of "
            f"{format_bytes(limit)} (set {_ENV}, e.g. {_ENV}=64GiB, on a machine with more)"
        )
