"""The distribution maps top-level folders into the nasfleet namespace."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_nasfleet_comm_does_not_shadow_ipykernels_comm(tmp_path: Path) -> None:
    code = (
        "import comm, nasfleet.comm, nasfleet.supernet, nasfleet.strategies, nasfleet.orchestrator\n"
        "assert hasattr(comm, 'create_comm'), comm.__file__\n"
        "assert 'site-packages' in comm.__file__, comm.__file__\n"
        "assert nasfleet.comm is not comm\n"
        "print(nasfleet.comm.__file__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert Path(out.stdout.strip()).resolve() == (REPO / "comm" / "__init__.py").resolve()


@pytest.mark.slow
def test_wheel_contains_every_subpackage_under_nasfleet(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("nasfleet-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in ("nasfleet", "nasfleet/supernet", "nasfleet/strategies", "nasfleet/orchestrator", "nasfleet/comm"):
        assert f"{package}/__init__.py" in names
    assert "nasfleet/orchestrator/configs/demo.yaml" in names
    assert not any(name.startswith("comm/") for name in names)
