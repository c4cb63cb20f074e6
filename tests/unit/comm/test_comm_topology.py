"""Topologies: builders, YAML files and inline specs, failures and validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nasfleet.comm import fat_tree_k, leaf_spine, load_topology_file, parse_topology_spec, resolve_topology
from nasfleet.comm.topology import FatTree, LeafSpine
from nasfleet.errors import NasfleetError

CONFIGS = Path(__file__).resolve().parents[3] / "cluster_configs" / "topologies"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_example_files_load(path):
    topo = load_topology_file(path)
    assert topo.num_hosts > 0 and topo.name == path.stem
    assert np.all(topo.link_bytes_per_s >= 0)


def test_example_files_exist():
    names = {p.name for p in CONFIGS.glob("*.yaml")}
    assert {"leafspine_16x16_400g.yaml", "fattree_k8.yaml", "leafspine_8x4_degraded.yaml"} <= names


def test_the_256_host_fabric():
    topo = load_topology_file(CONFIGS / "leafspine_16x16_400g.yaml")
    assert isinstance(topo, LeafSpine)
    assert (topo.num_hosts, topo.leaves, topo.spines, topo.oversubscription) == (256, 16, 16, 1.0)
    assert topo.host_bytes_per_s == pytest.approx(50e9)
    assert topo.link_latency_s[0] == pytest.approx(500e-9)


def test_degraded_file_applies_its_failures():
    topo = load_topology_file(CONFIGS / "leafspine_8x4_degraded.yaml")
    assert topo.oversubscription == pytest.approx(2.0)
    assert np.all(topo.link_bytes_per_s[topo.links_between("leaf2", "spine1")] == 0)
    assert np.allclose(topo.link_bytes_per_s[topo.links_between("spine3", "leaf5")], 50e9 / 8)
    paths = topo.fabric_paths(np.array([2, 0]), np.array([0, 2]))
    assert list(paths.paths_per_pair) == [3, 3]


def test_spec_matches_builder():
    spec = parse_topology_spec("leafspine:leaves=16,spines=16,hosts=16,gbps=400,latency_ns=500")
    assert spec.describe() == leaf_spine(16, 16, 16, 400, latency_ns=500).describe()
    fat = parse_topology_spec("fattree:k=16,gbps=400")
    assert isinstance(fat, FatTree) and fat.num_hosts == 16**3 // 4
    assert parse_topology_spec("leafspine:leaves=2,spines=2,hosts=2,gbps=100,uplink_gbps=50").describe()["uplink_gbps"] == 50


def test_fat_tree_paths():
    topo = fat_tree_k(4, gbps=100)
    paths = topo.fabric_paths(np.array([0, 0, 0]), np.array([0, 1, 7]))
    assert list(paths.paths_per_pair) == [1, 2, 4]  # same edge, same pod, other pod: (k/2)^2
    labels = [topo.link_label(int(link)) for link in paths.links[-1]]
    assert labels[0].startswith("leaf0->spine") and labels[-1].endswith("->leaf7")
    assert len({topo.link_label(i) for i in range(topo.num_links)}) == topo.num_links


def test_leaf_spine_link_labels_are_unique_and_round_trip():
    topo = leaf_spine(3, 2, 2, 100)
    labels = [topo.link_label(i) for i in range(topo.num_links)]
    assert len(set(labels)) == topo.num_links
    for i, label in enumerate(labels):
        a, b = label.split("->")
        assert i in topo.links_between(a, b)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("leafspine:leaves=0,spines=2,hosts=2,gbps=1", "leaves"),
        ("leafspine:leaves=2,spines=2,hosts=2,gbps=-5", "gbps"),
        ("leafspine:leaves=2,spines=2,hosts=2", "gbps"),
        ("leafspine:leaves=2,spines=2,hosts=2,gbps=1,colour=red", "colour"),
        ("leafspine:leaves=2,spines=2,hosts=2,gbps=1,latency_ns=-1", "latency_ns"),
        ("torus:x=4", "kind"),
        ("leafspine", "spec"),
        ("fattree:k=5,gbps=100", "even"),
        ("fattree:gbps=100", "give k"),
        ("leafspine:leaves=2,spines=2,hosts=2,gbps=1,uplink_gbps=1,oversubscription=2", "not both"),
    ],
)
def test_bad_specs_raise_one_line_errors(spec, message):
    with pytest.raises(NasfleetError, match=message) as info:
        parse_topology_spec(spec)
    assert "\n" not in str(info.value)


def test_bad_files(tmp_path):
    cases = {
        "notyaml.yaml": "kind: leafspine\n  leaves: [",
        "list.yaml": "- 1\n- 2\n",
        "badlink.yaml": "kind: leafspine\nleaves: 2\nspines: 2\nhosts: 1\ngbps: 1\nfailures:\n  - link: leaf0-spine9\n",
        "badnode.yaml": "kind: leafspine\nleaves: 2\nspines: 2\nhosts: 1\ngbps: 1\nfailures:\n  - link: router1-spine0\n",
        "cut.yaml": "kind: leafspine\nleaves: 2\nspines: 1\nhosts: 1\ngbps: 1\nfailures:\n  - link: leaf0-spine0\n",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
    for name in ("notyaml.yaml", "list.yaml", "badlink.yaml", "badnode.yaml"):
        with pytest.raises(NasfleetError):
            load_topology_file(tmp_path / name)
    cut = load_topology_file(tmp_path / "cut.yaml")  # valid, but leaf0 is now cut off
    with pytest.raises(NasfleetError, match="no path"):
        cut.fabric_paths(np.array([0]), np.array([1]))
    with pytest.raises(NasfleetError, match="does not exist"):
        resolve_topology(str(tmp_path / "missing.yaml"))
    with pytest.raises(NasfleetError, match="unknown topology"):
        resolve_topology("no-such-thing")
