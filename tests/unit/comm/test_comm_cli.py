"""The comm CLI, run as ``python -m nasfleet.comm`` in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from nasfleet.comm import build_collective, parse_topology_spec, simulate

SPEC = "leafspine:leaves=4,spines=4,hosts=4,gbps=400,latency_ns=500"
REPO = Path(__file__).resolve().parents[3]


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nasfleet.comm", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def test_simulate_json_matches_the_library():
    out = run("simulate", "--topology", SPEC, "--collective", "allreduce", "--algorithm", "halving-doubling",
              "--ranks", "16", "--size", "64MiB", "--routing", "ecmp-4", "--seed", "3", "--json")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    for key in ("completion_time_s", "max_congestion_s", "max_link_utilization", "subflows", "flows", "routing",
                "algorithm", "ranks", "bytes", "wall_time_s"):
        assert key in record
    expected = simulate(parse_topology_spec(SPEC), build_collective("allreduce", 16, 2**26, "halving-doubling"),
                        "ecmp-4", "flow", seed=3)
    assert record["completion_time_s"] == pytest.approx(expected.completion_time_s, rel=1e-12)
    assert (record["routing"], record["algorithm"], record["ranks"], record["bytes"]) == ("ecmp-4", "halving-doubling", 16, 2**26)


def test_simulate_table_and_seeds_from_a_yaml_file():
    out = run("simulate", "-t", "cluster_configs/topologies/fattree_k8.yaml", "--size", "1MiB", "--routing", "ecmp",
              "--algorithm", "halving-doubling", "--seeds", "3", "--fidelity", "analytical", "--json")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert record["seeds"] == [0, 1, 2] and record["completion_time_worst_s"] >= record["completion_time_s"]
    table = run("simulate", "-t", SPEC, "--size", "1MiB")
    assert table.returncode == 0 and "split" in table.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--topology", "missing.yaml"], "does not exist"),
        (["--topology", "leafspine:leaves=4,spines=0,hosts=4,gbps=400"], "spines"),
        (["--topology", SPEC, "--ranks", "17"], "do not fit"),
        (["--topology", SPEC, "--routing", "wormhole"], "unknown routing"),
        (["--topology", SPEC, "--size", "-1GiB"], "negative"),
        (["--topology", SPEC, "--size", "lots"], "bad size"),
        (["--topology", SPEC, "--algorithm", "bogus"], "unknown algorithm"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(args, message):
    out = run("simulate", *args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]


def test_bad_topology_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: leafspine\nleaves: 4\nspines: 4\nhosts: 4\ngbps: 0\n")
    out = run("simulate", "--topology", str(bad))
    assert out.returncode == 2 and out.stderr.startswith("error: bad topology") and "gbps" in out.stderr


def test_usage_error_exits_2():
    assert run("simulate", "--no-such-option").returncode == 2


@pytest.mark.parametrize("command", [[], ["simulate"], ["compare"], ["sweep"], ["calibrate"]])
def test_help_works_everywhere(command):
    out = run(*command, "--help")
    assert out.returncode == 0 and "Usage" in out.stdout


def test_compare_writes_parquet_and_plots(tmp_path):
    out = run("compare", "-t", SPEC, "--ranks", "16", "--sizes", "1MiB,4MiB", "--algorithms", "ring,halving-doubling",
              "--routings", "ecmp,spray,split", "--seeds", "2", "--output", str(tmp_path), "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert len(rows) == 2 * 2 * 3
    frame = pd.read_parquet(tmp_path / "compare.parquet")
    assert set(frame["routing"]) == {"ecmp", "spray", "split"} and len(frame) == 12
    for png in ("compare_cct.png", "compare_links.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"


def test_sweep_from_yaml(tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        f"topology: {SPEC}\ncollective: alltoall\nalgorithms: [pairwise, direct]\nroutings: [ecmp-2, split]\n"
        f"sizes: [1MiB, 2MiB]\nranks: 8\nfidelity: analytical\nseeds: 2\noutput: {tmp_path / 'out'}\n"
    )
    out = run("sweep", str(sweep))
    assert out.returncode == 0, out.stderr
    frame = pd.read_parquet(tmp_path / "out" / "sweep.parquet")
    assert len(frame) == 8 and set(frame["algorithm"]) == {"pairwise", "direct"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("topology: x\nsizes: [1MiB]\nflavour: sour\n")
    out = run("sweep", str(bad))
    assert out.returncode == 2 and "flavour" in out.stderr
