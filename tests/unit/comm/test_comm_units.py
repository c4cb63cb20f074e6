"""Sizes and rates as users type them."""

from __future__ import annotations

import pytest

from nasfleet.comm.units import format_bytes, gbps_to_bytes_per_s, parse_size_bytes, parse_size_list
from nasfleet.errors import NasfleetError


@pytest.mark.parametrize(
    "text, expected",
    [
        ("64MiB", 64 * 2**20), ("1GiB", 2**30), ("1e9", 10**9), ("1.5KiB", 1536), ("100", 100), ("0", 0),
        ("2GB", 2 * 10**9), ("512kB", 512_000), ("4K", 4096), (" 8 MiB ", 8 * 2**20), (123, 123), (2.5e3, 2500),
    ],
)
def test_sizes(text, expected):
    assert parse_size_bytes(text) == expected


@pytest.mark.parametrize("text", ["-1", "-5MiB", "lots", "12parsecs", "", "nan", "1e999", True])
def test_bad_sizes(text):
    with pytest.raises(NasfleetError, match="size"):
        parse_size_bytes(text)


def test_lists_rates_and_formatting():
    assert parse_size_list("1MiB, 16MiB,128MiB") == [2**20, 16 * 2**20, 128 * 2**20]
    with pytest.raises(NasfleetError):
        parse_size_list(" , ")
    assert gbps_to_bytes_per_s(400) == 50e9
    assert format_bytes(2**30) == "1GiB" and format_bytes(1536) == "1.5KiB" and format_bytes(12) == "12B"
