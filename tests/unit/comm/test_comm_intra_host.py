"""The intra-host (NVLink) tier, hierarchical all-reduce and rail-optimised leaf-spines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nasfleet.comm import build_collective, leaf_spine, load_topology_file, parse_topology_spec, simulate
from nasfleet.comm.topology import IntraHostTier, rail_leaf_spine
from nasfleet.errors import NasfleetError

REPO = Path(__file__).resolve().parents[3]
NIC = 400e9 / 8  # B: 400 Gb/s in bytes/s
NVLINK = 3200e9 / 8  # b: 3,200 Gb/s per GPU
ALPHA = 500e-9  # per network link
ALPHA_NV = 100e-9  # per NVLink link
N = 64 * 2**20


def hierarchical_closed_form(n: float, local: int, hosts: int, nic_share: float, hop_s: float) -> float:
    """In-host reduce-scatter and all-gather: (L − 1)·n/L through each GPU's NVLink plus two NVLink
    hops, twice; across hosts 2(H − 1) ring steps of n/(L·H) at ``nic_share`` bytes/s per flow."""
    inside = (local - 1) * n / (local * NVLINK) + 2 * ALPHA_NV
    return 2 * inside + 2 * (hosts - 1) * (n / (local * hosts) / nic_share + hop_s)


# 2 leaves x 2 spines, 2 hosts per leaf, 4 GPUs per host sharing the host's NIC
SHARED_NIC = leaf_spine(2, 2, 2, gbps=400, latency_ns=500, intra_host=IntraHostTier(4, 3200, 100))


@pytest.mark.parametrize("routing", ["ecmp", "spray", "split"])
@pytest.mark.parametrize("size", [2**16, N])
def test_hierarchical_allreduce_on_hosts_sharing_a_nic_matches_its_closed_form(routing, size):
    """16 ranks, 4 per host: the 4 cross-host rings share each NIC (B/4 per flow), and the
    slowest ring hop (host 1 -> host 2, or 3 -> 0) crosses the spines: four 500 ns links."""
    coll = build_collective("allreduce", 16, size, "hierarchical", ranks_per_host=4)
    result = simulate(SHARED_NIC, coll, routing, gpus_per_host=4)
    expected = hierarchical_closed_form(size, 4, 4, NIC / 4, 4 * ALPHA)
    assert result.completion_time_s == pytest.approx(expected, rel=1e-12)
    for fidelity in ("analytical", "flow"):
        assert simulate(SHARED_NIC, coll, routing, fidelity, gpus_per_host=4).completion_time_s == pytest.approx(
            expected, rel=1e-12)


def test_flat_and_hierarchical_on_shared_nics_as_the_closed_forms_say():
    """Flat ring over p = 16 ranks: 2(p − 1) = 30 steps of n/16, the cross-host hop at B with
    four links of latency, so 2(p − 1)/p·n through each NIC. Hierarchical: 2(H − 1) = 6
    network steps and 2(H − 1)/H·n per NIC, plus the NVLink stages. Small messages gain
    about 30/6 of the latency, large ones at most the byte ratio (30/16)/(6/4) = 1.25."""
    flat = lambda n: 2 * 15 * (n / 16 / NIC + 4 * ALPHA)
    hierarchical = lambda n: hierarchical_closed_form(n, 4, 4, NIC / 4, 4 * ALPHA)
    for size in (2**16, N):
        ring = simulate(SHARED_NIC, build_collective("allreduce", 16, size, "ring"), gpus_per_host=4)
        hier = simulate(SHARED_NIC, build_collective("allreduce", 16, size, "hierarchical", ranks_per_host=4),
                        gpus_per_host=4)
        assert ring.completion_time_s == pytest.approx(flat(size), rel=1e-12)
        assert hier.completion_time_s == pytest.approx(hierarchical(size), rel=1e-12)
    assert flat(2**16) / hierarchical(2**16) > 3
    assert 1 < flat(N) / hierarchical(N) < 1.25


def test_the_nvlink_links_carry_the_in_host_stages():
    coll = build_collective("allreduce", 16, N, "hierarchical", ranks_per_host=4)
    result = simulate(SHARED_NIC, coll, "split", gpus_per_host=4)
    loads = result.link_bytes_total()
    gpu0_up = int(SHARED_NIC.intra_up_link(0))
    assert SHARED_NIC.link_label(gpu0_up) == "gpu0->nvswitch0"
    assert loads[gpu0_up] == pytest.approx(2 * 3 * N / 4)  # reduce-scatter and all-gather, (L−1)·n/L each
    assert SHARED_NIC.link_bytes_per_s[gpu0_up] == NVLINK
    # without the tier, traffic inside a host is free: only the cross-host rings remain
    no_tier = leaf_spine(2, 2, 2, gbps=400, latency_ns=500)
    free = simulate(no_tier, coll, "split", gpus_per_host=4).completion_time_s
    assert free == pytest.approx(2 * 3 * (N / 16 / (NIC / 4) + 4 * ALPHA), rel=1e-12)


# 4 servers x 4 rails, one rail leaf per GPU index, 4 spines (1:1)
RAIL = rail_leaf_spine(servers=4, rails=4, spines=4, gbps=400, nvlink_gbps=3200, latency_ns=500, nvlink_latency_ns=100)


def test_rail_fabric_puts_gpu_i_of_every_server_on_leaf_i():
    assert RAIL.num_hosts == 16 and RAIL.leaves == 4
    assert RAIL.host_tor.tolist() == [0, 1, 2, 3] * 4
    assert RAIL.host_server.tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    two_groups = rail_leaf_spine(servers=4, rails=2, spines=2, gbps=400, nvlink_gbps=3200, servers_per_leaf=2)
    assert two_groups.host_tor.tolist() == [0, 1, 0, 1, 2, 3, 2, 3]


@pytest.mark.parametrize("rail", [0, 3])
@pytest.mark.parametrize("routing", ["ecmp", "split"])
def test_a_ring_over_same_index_gpus_stays_on_its_rail_leaf(rail, routing):
    """GPU ``rail`` of the 4 servers: every hop is leaf-local, so no spine link carries a
    byte, the only loaded links are that leaf's host links, and each step is n/(pB) + 2α."""
    endpoints = [s * 4 + rail for s in range(4)]
    result = simulate(RAIL, build_collective("allreduce", 4, N, "ring"), routing, placement=endpoints)
    loads = result.link_bytes_total()
    used = [RAIL.link_label(int(e)) for e in np.flatnonzero(loads)]
    assert len(used) == 8 and all(f"leaf{rail}" in label and "spine" not in label for label in used)
    assert result.completion_time_s == pytest.approx(2 * 3 * (N / 4 / NIC + 2 * ALPHA), rel=1e-12)


@pytest.mark.parametrize("size", [2**16, N])
def test_flat_against_hierarchical_on_a_rail_fabric(size):
    """Flat ring over 16 GPUs: 30 steps of n/16, the slowest hop (GPU 3 of a server to GPU 0
    of the next) crosses from rail leaf 3 to rail leaf 0 through the spines at B.
    Hierarchical: every GPU has its own NIC, so the 4 rail rings run at B each on n/16 and
    cut the network bytes per NIC by 4."""
    flat = simulate(RAIL, build_collective("allreduce", 16, size, "ring"), "split").completion_time_s
    hier = simulate(RAIL, build_collective("allreduce", 16, size, "hierarchical", ranks_per_host=4), "split")
    assert flat == pytest.approx(2 * 15 * (size / 16 / NIC + 4 * ALPHA), rel=1e-12)
    assert hier.completion_time_s == pytest.approx(hierarchical_closed_form(size, 4, 4, NIC, 2 * ALPHA), rel=1e-12)
    spine_links = [e for e in range(RAIL.num_links) if "spine" in RAIL.link_label(e)]
    assert hier.link_bytes_total()[spine_links].sum() == 0  # the rail rings never cross a spine
    assert hier.completion_time_s < flat


def test_rail_topology_from_a_spec_and_a_file(tmp_path):
    spec = parse_topology_spec("rail:servers=4,rails=4,spines=4,gbps=400,nvlink_gbps=3200,latency_ns=500,"
                               "nvlink_latency_ns=100")
    assert spec.describe() == RAIL.describe() and spec.describe()["rails"] == 4

    loaded = load_topology_file(REPO / "cluster_configs/topologies/rail_32x8_400g.yaml")
    assert loaded.describe()["kind"] == "rail" and loaded.num_hosts == 256 and loaded.leaves == 8


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: build_collective("allreduce", 10, N, "hierarchical", ranks_per_host=4), "not a multiple of 4 per host"),
        (lambda: simulate(SHARED_NIC, build_collective("allreduce", 16, N), gpus_per_host=8), r"has 4 GPU\(s\) per host"),
        (lambda: simulate(RAIL, build_collective("allreduce", 32, N), gpus_per_host=2), r"1 GPU\(s\) per endpoint"),
        (lambda: rail_leaf_spine(servers=5, rails=4, spines=4, gbps=400, nvlink_gbps=3200, servers_per_leaf=2),
         "5 servers are not a whole number of groups of 2"),
        (lambda: leaf_spine(2, 2, 2, gbps=400, intra_host=IntraHostTier(4, float("inf"))), "nvlink_gbps must be a positive"),
        (lambda: parse_topology_spec("leafspine:leaves=2,spines=2,hosts=2,gbps=400,gpus_per_host=8"),
         "needs both gpus_per_host and nvlink_gbps"),
    ],
)
def test_bad_intra_host_input_is_refused(make, message):
    with pytest.raises(NasfleetError, match=message):
        make()


def test_cli_hierarchical_on_a_rail_fabric_uses_every_gpu():
    out = subprocess.run(
        [sys.executable, "-m", "nasfleet.comm", "simulate", "-t",
         "rail:servers=4,rails=4,spines=4,gbps=400,nvlink_gbps=3200,latency_ns=500,nvlink_latency_ns=100",
         "--algorithm", "hierarchical", "--size", "64MiB", "--json"],
        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert record["ranks"] == 16
    assert record["completion_time_s"] == pytest.approx(hierarchical_closed_form(N, 4, 4, NIC, 2 * ALPHA), rel=1e-12)
    bad = subprocess.run(
        [sys.executable, "-m", "nasfleet.comm", "simulate", "-t", "rail:servers=4,rails=3,spines=4,gbps=400",
         "--algorithm", "hierarchical"], capture_output=True, text=True, cwd=REPO, timeout=120)
    lines = bad.stderr.strip().splitlines()
    assert bad.returncode == 2 and len(lines) == 1 and "nvlink_gbps: Field required" in lines[0]
