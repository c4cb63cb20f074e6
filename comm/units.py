"""Parsing and formatting of sizes, bandwidths and times.

Sizes come from users as strings (``64MiB``, ``1GiB``, ``1e9``); everything inside
the simulator is plain numbers with the unit in the name (``_bytes``, ``_gbps``,
``_s``). Bandwidth is carried internally in bytes per second.
"""

from __future__ import annotations

import re

from nasfleet.errors import NasfleetError

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
    "k": 2**10,
    "m": 2**20,
    "g": 2**30,
}
_SIZE_RE = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z]*)\s*$")


def parse_size_bytes(value: str | int | float) -> int:
    """Bytes in ``value``: an int, a float like ``1e9`` or a string with a unit.

    Decimal units (``kB``, ``MB``, ``GB``) are powers of ten, binary ones (``KiB``,
    ``MiB``, ``GiB``, or the bare ``K``/``M``/``G``) powers of two. Zero is allowed
    (an empty message); negative or malformed sizes raise :class:`NasfleetError`.
    """
    if isinstance(value, bool):
        raise NasfleetError(f"bad size {value!r}: expected a number of bytes such as 64MiB")
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    else:
        match = _SIZE_RE.match(str(value))
        if match is None:
            raise NasfleetError(f"bad size {value!r}: expected a number with an optional unit, e.g. 64MiB, 1GiB, 1e9")
        number, unit = float(match.group(1)), match.group(2).lower()
        if unit not in _SIZE_UNITS:
            raise NasfleetError(f"bad size {value!r}: unknown unit {match.group(2)!r} (use B, kB, MB, GB, KiB, MiB, GiB)")
    if number != number or number in (float("inf"), float("-inf")):
        raise NasfleetError(f"bad size {value!r}: must be finite")
    if number < 0:
        raise NasfleetError(f"bad size {value!r}: must not be negative")
    return int(round(number * _SIZE_UNITS[unit]))


def parse_size_list(value: str) -> list[int]:
    """Sizes from a comma-separated list such as ``1MiB,16MiB,128MiB``."""
    parts = [p for p in str(value).split(",") if p.strip()]
    if not parts:
        raise NasfleetError(f"bad size list {value!r}: expected e.g. 1MiB,16MiB")
    return [parse_size_bytes(p) for p in parts]


def gbps_to_bytes_per_s(gbps: float) -> float:
    """Link rate in bytes per second from gigabits per second (10^9 bit/s)."""
    return float(gbps) * 1e9 / 8.0


def bytes_per_s_to_gbps(bytes_per_s: float) -> float:
    """Gigabits per second from bytes per second."""
    return float(bytes_per_s) * 8.0 / 1e9


def format_bytes(size_bytes: float) -> str:
    """Short human form, binary units: ``1GiB``, ``64MiB``, ``1.5KiB``."""
    for unit, scale in (("EiB", 2**60), ("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size_bytes >= scale:
            value = size_bytes / scale
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.3g}{unit}"
    return f"{size_bytes:.0f}B"


def format_seconds(time_s: float) -> str:
    """Short human form of a duration: ``12.3 ms``, ``4.56 us``."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if abs(time_s) >= scale:
            return f"{time_s / scale:.4g} {unit}"
    return f"{time_s / 1e-9:.4g} ns"
