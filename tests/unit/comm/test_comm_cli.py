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
        (["--topology", "leafspine:leaves=4,spines=4,hosts=4,gbps=inf"], "gbps: Input should be a finite number"),
        (["--topology", "leafspine:leaves=4,spines=4,hosts=4,gbps=nan"], "gbps: Input should be a finite number"),
        (["--topology", "leafspine:leaves=4,spines=4,hosts=4,gbps=400,latency_ns=inf"], "latency_ns: Input should be a finite"),
        (["--topology", "leafspine:leaves=4,spines=4,hosts=4,gbps=-400"], "gbps: Input should be greater than 0"),
        (["--topology", SPEC, "--size", "1e400"], "must be finite"),
        (["--topology", SPEC, "--gpus-per-host", "0"], "--gpus-per-host must be at least 1, got 0"),
        (["--topology", SPEC, "--ranks", "0"], "--ranks must be at least 1, got 0"),
        (["--topology", SPEC, "--placement", "random", "--seed", "-1"], "--seed must be at least 0, got -1"),
        (["--topology", SPEC, "--ranks", "abc"], "Invalid value for '--ranks'"),
        (["--topology", SPEC, "--routing", "ecmp-99999999999"], "K is an integer from 1 to 1024"),
        # 1,024 ranks all-to-all at once: 1,047,552 flows, each cut into 1,024 hashed subflows
        (["--topology", "leafspine:leaves=32,spines=16,hosts=32,gbps=400", "--collective", "alltoall",
          "--algorithm", "direct", "--routing", "ecmp-1024", "--fidelity", "analytical"],
         "routing 1,047,552 flows with ecmp-1024 (1,072,693,248 subflows) would need about 440GiB of memory"),
        (["--topology", "leafspine:leaves=1000,spines=4,hosts=100,gbps=400", "--collective", "alltoall",
          "--algorithm", "direct"], "direct alltoall over 100,000 ranks (9,999,900,000 flows) would need about 745GiB"),
        (["--topology", SPEC, "--algorithm", "double-binary-tree", "--pipeline-chunk", "1", "--size", "1GiB"],
         "plans 536,870,919 steps (32,212,255,140 flows); at most 10,000,000 steps are simulated: give a larger"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(args, message):
    out = run("simulate", *args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]


@pytest.mark.parametrize(
    "body, message",
    [
        ("leaves: 4\nspines: 4\nhosts: 4\ngbps: 0\n", "gbps: Input should be greater than 0"),
        ("leaves: 4\nspines: 4\nhosts: 4\ngbps: 400\nlatency_ns: .inf\n", "latency_ns: Input should be a finite number"),
        ("leaves: 4\nspines: 4\nhosts: 4\ngbps: .nan\n", "gbps: Input should be a finite number"),
        ("leaves: 4\nspines: 4\nhosts: 4\ngbps: 400\nfailures:\n  - link: leaf0-spine0\n    gbps: .inf\n",
         "failures.0.gbps: Input should be a finite number"),
        # 10^8 leaves × 10^5 spines: 2·10^13 links
        ("leaves: 100000000\nspines: 100000\nhosts: 4\ngbps: 400\n",
         "topology bad with 20,000,800,000,000 links would need about 1.42PiB of memory, more than the limit of 8GiB"),
    ],
)
def test_bad_topology_file(tmp_path, body, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: leafspine\n" + body)
    out = run("simulate", "--topology", str(bad))
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


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
