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
          "--algorithm", "direct", "--routing", "spray-weighted"],
         "direct alltoall over 100,000 ranks (9,999,900,000 flows) would need about 745GiB"),
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


@pytest.mark.parametrize("command", [[], ["simulate"], ["compare"], ["sweep"], ["workload"], ["calibrate"]])
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


def test_json_names_the_busiest_links_and_flow_rates_on_request(tmp_path):
    """One 1 GiB flow host0 (leaf0) -> host7 (leaf1) over 4 spines, leaf0-spine0 at 50 Gb/s, 400 elsewhere.

    ``split`` cuts it into 4 subflows of S/4 sharing the flow's fair share: the one through
    spine0 is held at 50 Gb/s = 6.25 GB/s, the other three share the rest of the 50 GB/s NIC
    (43.75 GB/s) and finish first. CCT = (S/4) / 6.25 GB/s = S / 25 GB/s (no latency), so
    leaf0->spine0 is busy the whole time (utilisation 1), while the host links carry S in
    S / 50 GB/s (utilisation 0.5). The flow starts at 6.25 + 43.75 GB/s = 400 Gb/s and
    averages S / CCT = 200 Gb/s.
    """
    fabric = tmp_path / "degraded.yaml"
    fabric.write_text("kind: leafspine\nleaves: 2\nspines: 4\nhosts: 4\ngbps: 400\n"
                      "failures:\n  - link: leaf0-spine0\n    gbps: 50\n")
    size = 2**30
    out = run("simulate", "-t", str(fabric), "--collective", "p2p", "--size", "1GiB", "--routing", "split",
              "--top-links", "3", "--flow-rates", "--json")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert record["completion_time_s"] == pytest.approx(size / 25e9, rel=1e-12)
    top = record["top_links"]
    assert [(t["link"], t["from"], t["to"], t["gbps"]) for t in top] == [
        ("leaf0->spine0", "leaf0", "spine0", 50.0), ("host0->leaf0", "host0", "leaf0", 400.0),
        ("leaf1->host7", "leaf1", "host7", 400.0)]
    assert [t["bytes"] for t in top] == pytest.approx([size / 4, size, size])
    assert [t["utilization"] for t in top] == pytest.approx([1.0, 0.5, 0.5], rel=1e-12)
    assert record["max_link_utilization"] == pytest.approx(top[0]["utilization"])
    (flow,) = record["flow_rates"]
    assert (flow["src"], flow["dst"], flow["bytes"], flow["steps"]) == (0, 7, size, 1)
    assert flow["finish_s"] == pytest.approx(record["completion_time_s"], rel=1e-12)
    assert flow["initial_gbps"] == pytest.approx(400.0, rel=1e-12)
    assert flow["mean_gbps"] == pytest.approx(200.0, rel=1e-12)


def test_flow_rates_of_a_ring_cover_every_flow_and_skip_the_network_inside_a_host():
    """16 ranks, two per host, ring all-reduce: 8 of the 16 flows stay inside a host (no rates);
    the other 8 each have a NIC to themselves, 400 Gb/s from start to end."""
    out = run("simulate", "-t", SPEC, "--ranks", "16", "--gpus-per-host", "2", "--size", "16MiB", "--top-links", "0",
              "--flow-rates", "--json")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert record["top_links"] == []
    flows = record["flow_rates"]
    assert len(flows) == 16 and {f["steps"] for f in flows} == {2 * 15}
    inside = [f for f in flows if f["src"] // 2 == f["dst"] // 2]
    across = [f for f in flows if f["src"] // 2 != f["dst"] // 2]
    assert len(inside) == 8 and all(f["initial_gbps"] is None and f["finish_s"] == 0 for f in inside)
    assert [f["initial_gbps"] for f in across] == pytest.approx([400.0] * 8)
    assert [f["mean_gbps"] for f in across] == pytest.approx([400.0] * 8)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--flow-rates"], "--flow-rates needs --json and --fidelity flow"),
        (["--flow-rates", "--json", "--fidelity", "analytical"], "--flow-rates needs --json and --fidelity flow"),
        (["--top-links", "-1", "--json"], "--top-links must be at least 0, got -1"),
    ],
)
def test_link_and_flow_options_refuse_what_they_cannot_report(args, message):
    out = run("simulate", "-t", SPEC, *args)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and message in lines[0], out.stderr
