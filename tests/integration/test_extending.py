"""docs/extending.md is executable: its strategy, test and entry point work as the page says.

The page's package is "installed" the way pip installs it — a ``*.dist-info`` folder with an
``entry_points.txt`` on ``sys.path`` — so ``importlib.metadata`` finds the entry point in a
fresh ``nasfleet`` process, which never imports the package by name.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import CLI, tiny_config

PAGE = Path(__file__).resolve().parents[2] / "docs" / "extending.md"


def page_blocks() -> dict[str, str]:
    """The page's fenced blocks by language; the python ones by the file named in their first line."""
    blocks: dict[str, str] = {}
    for language, body in re.findall(r"```(\w+)\n(.*?)```", PAGE.read_text(), flags=re.S):
        first = body.splitlines()[0]
        key = first.removeprefix("# ").strip() if language == "python" else language
        blocks.setdefault(key, body)
    return blocks


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The page's package on a folder that a child process puts on ``sys.path``, with its entry point."""
    root = tmp_path_factory.mktemp("site")
    blocks = page_blocks()
    package = root / "nasfleet_example"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "largest_and_one.py").write_text(blocks["nasfleet_example/largest_and_one.py"])
    entry = re.search(r"^(\S+) = (\S+)$", blocks["toml"].split("\n", 1)[1].strip(), flags=re.M)
    assert entry is not None, blocks["toml"]
    info = root / "nasfleet_example-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: nasfleet-example\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[nasfleet.strategies]\n{entry.group(1)} = {entry.group(2).strip(chr(34))}\n")
    (root / "test_largest_and_one.py").write_text(blocks["tests/test_largest_and_one.py"])
    return root


def _env(site: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def test_the_pages_test_passes_against_the_installed_entry_point(installed_example: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(installed_example),
         str(installed_example / "test_largest_and_one.py")],
        capture_output=True, text=True, timeout=120, env=_env(installed_example), cwd=installed_example,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout


def test_a_strategy_from_another_package_trains_with_nasfleet_train(installed_example: Path, tmp_path: Path) -> None:
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tmp_path / "run").model_dump(mode="json")))
    result = subprocess.run(
        [*CLI, "train", "--config", str(config), "--no-progress", "--strategy", "largest-and-one",
         "--strategy-param", "temperature=3"],
        capture_output=True, text=True, timeout=300, env=_env(installed_example),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    written = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["strategy"]
    assert written == {"name": "largest-and-one", "params": {"temperature": 3}}
    assert "largest" in result.stdout


def test_a_job_config_can_import_its_plugin_instead(installed_example: Path, tmp_path: Path) -> None:
    module = installed_example / "registered_by_import.py"
    module.write_text(
        "from nasfleet.strategies import STRATEGIES\n"
        "from nasfleet_example.largest_and_one import LargestAndOneStrategy\n\n"
        "@STRATEGIES.register('imported-largest-and-one')\n"
        "class Imported(LargestAndOneStrategy):\n"
        "    name = 'imported-largest-and-one'\n"
    )
    job = tiny_config(tmp_path / "run", strategy={"name": "imported-largest-and-one", "params": {}},
                      optim={"steps": 4, "lr": 0.05, "warmup_steps": 1})
    data = job.model_dump(mode="json")
    data["imports"] = ["registered_by_import"]
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(data))
    result = subprocess.run([*CLI, "train", "--config", str(config), "--no-progress"],
                            capture_output=True, text=True, timeout=300, env=_env(installed_example))
    assert result.returncode == 0, result.stderr[-2000:]
