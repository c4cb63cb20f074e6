"""``nasfleet certify`` as a user runs it: an IBP-trained run, its verified errors, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import assert_one_line_error, nasfleet, nasfleet_forked, write_config


@pytest.fixture(scope="module")
def ibp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("certify")
    config = write_config(root / "job.yaml", root / "run", optim={"steps": 6, "lr": 0.05, "warmup_steps": 1})
    result = nasfleet("train", "--config", str(config), "--no-progress", "--strategy", "ibp",
                      "--strategy-param", "eps=0.05", "--strategy-param", "warmup_steps=4")
    assert result.returncode == 0, result.stderr
    return root / "run"


def test_certify_reports_clean_and_verified_error(ibp_run: Path) -> None:
    result = nasfleet("certify", "--run", str(ibp_run), "--eps", "0.05", "--images", "64", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["role"] for r in rows] == ["smallest", "median", "largest"]
    for r in rows:
        assert r["images"] == 64 and 0 <= r["clean_error"] <= r["verified_error"] <= 1
    zero = json.loads(nasfleet("certify", "--run", str(ibp_run), "--eps", "0", "--images", "64",
                               "--subnet", "largest", "--json").stdout)
    assert zero[0]["verified_error"] == zero[0]["clean_error"] == rows[-1]["clean_error"]


def test_certify_has_help_and_refuses_bad_input(ibp_run: Path) -> None:
    result = nasfleet("certify", "--help")
    assert result.returncode == 0 and "verified" in result.stdout
    assert_one_line_error(nasfleet_forked("certify", "--run", str(ibp_run), "--eps", "-0.1"), "--eps")
    assert_one_line_error(nasfleet_forked("certify", "--run", str(ibp_run), "--eps", "0.1", "--subnet", "{bad"))
