"""Routing schedules: ECMP statistics, congestion ordering and byte conservation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nasfleet.comm import Step, fat_tree_k, get_routing, leaf_spine, route_step, routing_names
from nasfleet.comm.analytical import step_load
from nasfleet.errors import NasfleetError


@pytest.mark.parametrize("spines", [4, 8, 16, 32])
def test_ecmp_distinct_paths_match_balls_into_bins(spines):
    """k = s flows hashed onto s spines use s·(1 − (1 − 1/s)^k) spines on average."""
    topo = leaf_spine(leaves=2, spines=spines, hosts=spines, gbps=100)
    step = Step.of(np.arange(spines), spines + np.arange(spines), 1.0)
    uplinks = [topo.links_between("leaf0", f"spine{j}")[0] for j in range(spines)]
    routing = get_routing("ecmp")
    used = np.array(
        [
            np.count_nonzero(route_step(topo, step, np.arange(2 * spines), routing, seed).link_bytes()[uplinks])
            for seed in range(1500)
        ]
    )
    expected = spines * (1 - (1 - 1 / spines) ** spines)
    stderr = used.std(ddof=1) / np.sqrt(len(used))
    assert abs(used.mean() - expected) < 4 * stderr + 1e-9
    # and it is close to the large-s limit (1 − 1/e)·s
    assert used.mean() / spines == pytest.approx(1 - np.exp(-1), abs=0.06)


def test_ecmp_hash_is_seeded_and_stable_across_steps():
    topo = leaf_spine(leaves=4, spines=8, hosts=4, gbps=100)
    step = Step.of(np.arange(8), (np.arange(8) + 5) % 16, 1.0)
    route = lambda seed: route_step(topo, step, np.arange(16), get_routing("ecmp"), seed).incidence.toarray()
    assert np.array_equal(route(7), route(7))
    assert any(not np.array_equal(route(0), route(s)) for s in range(1, 5))


def test_routing_registry_names_and_errors():
    assert {"ecmp", "spray", "split"} <= set(routing_names())
    assert get_routing("ecmp-7").name == "ecmp-7"
    assert get_routing("ECMP").name == "ecmp"
    for bad in ("ecmp-0", "ecmp-x", "bogus", "spray-2"):
        with pytest.raises(NasfleetError, match="unknown routing"):
            get_routing(bad)


@st.composite
def fabrics_and_steps(draw):
    if draw(st.booleans()):
        topo = leaf_spine(
            leaves=draw(st.integers(2, 5)), spines=draw(st.integers(1, 6)), hosts=draw(st.integers(1, 4)), gbps=100
        )
    else:
        topo = fat_tree_k(draw(st.sampled_from([2, 4])), gbps=100)
    hosts = topo.num_hosts
    flows = draw(st.integers(1, 24))
    src = draw(st.lists(st.integers(0, hosts - 1), min_size=flows, max_size=flows))
    dst = draw(st.lists(st.integers(0, hosts - 1), min_size=flows, max_size=flows))
    sizes = draw(st.lists(st.sampled_from([1.0, 2.0, 3.0, 8.0]), min_size=flows, max_size=flows))
    return topo, Step.of(src, dst, sizes), draw(st.integers(0, 2**31))


@settings(max_examples=80, deadline=None, derandomize=True)
@given(fabrics_and_steps())
def test_split_equals_spray_and_ecmp_is_never_less_congested(case):
    topo, step, seed = case
    capacity = topo.link_bytes_per_s
    hosts = np.arange(topo.num_hosts)
    congestion = {
        name: step_load(route_step(topo, step, hosts, get_routing(name), seed), capacity).congestion_s
        for name in ("spray", "split", "ecmp", "ecmp-2", "ecmp-3")
    }
    assert congestion["split"] <= congestion["spray"] * (1 + 1e-12)
    for hashed in ("ecmp", "ecmp-2", "ecmp-3"):
        assert congestion[hashed] >= congestion["spray"] * (1 - 1e-12)


@settings(max_examples=80, deadline=None, derandomize=True)
@given(fabrics_and_steps(), st.sampled_from(["ecmp", "ecmp-4", "spray", "split"]))
def test_bytes_are_conserved_on_links(case, routing):
    topo, step, seed = case
    transfers = route_step(topo, step, np.arange(topo.num_hosts), get_routing(routing), seed)
    # a flow's transfers carry exactly its bytes
    per_flow = np.bincount(transfers.flow, weights=transfers.size_bytes, minlength=step.num_flows)
    assert np.allclose(per_flow, step.size_bytes)
    # every byte leaves its host once and arrives once, and crosses the fabric once per tier
    link_bytes = transfers.link_bytes()
    assert np.isclose(link_bytes[topo.host_up_link].sum(), step.total_bytes)
    assert np.isclose(link_bytes[topo.host_down_link].sum(), step.total_bytes)
    hops = np.asarray(transfers.incidence.sum(axis=1)).ravel()  # fraction-weighted links per transfer
    assert np.isclose(link_bytes.sum(), (hops * transfers.size_bytes).sum())
    tor = topo.host_tor
    crossing = step.size_bytes[tor[step.src] != tor[step.dst]].sum()
    leaf_up = [l for l in range(2 * topo.num_hosts, topo.num_links) if topo.link_label(l).startswith("leaf")]
    assert np.isclose(link_bytes[leaf_up].sum(), crossing)


def test_spray_and_split_avoid_a_failed_link():
    from nasfleet.comm import LinkFailure

    topo = leaf_spine(leaves=2, spines=4, hosts=4, gbps=100, failures=(LinkFailure("leaf0", "spine2"),))
    step = Step.of(np.arange(4), 4 + np.arange(4), 1.0)
    dead = topo.links_between("leaf0", "spine2")
    for name in ("spray", "split", "ecmp", "ecmp-4"):
        assert np.all(route_step(topo, step, np.arange(8), get_routing(name), 1).link_bytes()[dead] == 0)
    # splitting over the 3 remaining spines: 4 flows → lcm(4, 3) = 12 subflows
    assert route_step(topo, step, np.arange(8), get_routing("split")).num_transfers == 12


@pytest.fixture
def routings(monkeypatch):
    """The routing registry, with what a test registers removed again afterwards."""
    from nasfleet.comm import ROUTINGS

    ROUTINGS.names()  # load entry points first, so restoring the copy keeps them
    monkeypatch.setattr(ROUTINGS, "_items", dict(ROUTINGS._items))
    return ROUTINGS


def test_a_routing_registered_with_the_decorator_routes_by_name(routings):
    from dataclasses import dataclass

    from nasfleet.comm import RoutingContext, Transfers, build_collective, simulate

    @routings.register("pinned")
    @dataclass(frozen=True)
    class PinnedRouting:
        """Every flow on its ToR pair's path number ``path`` (mod the paths there); ``pinned-K`` is path K."""

        suffix_parameter = "path"  # not annotated: a class attribute, not a dataclass field
        path: int = 0

        @property
        def name(self) -> str:
            return "pinned" if self.path == 0 else f"pinned-{self.path}"

        def route(self, ctx: RoutingContext, seed: int) -> Transfers:
            flow = np.arange(ctx.num_flows)
            path_row = ctx.paths.pair_ptr[ctx.pair] + self.path % ctx.paths_per_flow
            return ctx.single_path_transfers(flow, path_row, ctx.size_bytes)

    assert {"pinned", "pinned-K"} <= set(routing_names())
    topo = leaf_spine(leaves=2, spines=4, hosts=4, gbps=100)
    step = Step.of(np.arange(4), 4 + np.arange(4), 1.0)
    uplinks = [topo.links_between("leaf0", f"spine{j}")[0] for j in range(4)]

    def spines_used(name: str) -> set[int]:
        transfers = route_step(topo, step, np.arange(8), get_routing(name))
        assert np.isclose(transfers.link_bytes()[uplinks].sum(), step.total_bytes)
        return {j for j, link in enumerate(uplinks) if transfers.link_bytes()[link] > 0}

    assert len(spines_used("pinned")) == 1
    assert len(spines_used("pinned-2")) == 1 and spines_used("pinned-2") != spines_used("pinned")
    assert get_routing("Pinned-3") == PinnedRouting(3)

    coll = build_collective("alltoall", 8, 2**20)
    pinned = simulate(topo, coll, routing="pinned", fidelity="analytical")
    assert pinned.routing == "pinned"
    assert pinned.completion_time_s > simulate(topo, coll, routing="split", fidelity="analytical").completion_time_s


def test_unknown_routing_is_one_line_listing_the_known_ones(routings):
    @routings.register("mine")
    class Mine:
        name = "mine"

        def route(self, ctx, seed):
            raise AssertionError("not called")

    for bad in ("wormhole", "mine-2", "ecmp-0"):
        with pytest.raises(NasfleetError) as caught:
            get_routing(bad)
        message = str(caught.value)
        assert "\n" not in message and message.startswith(f"unknown routing {bad!r}")
        for known in ("ecmp", "ecmp-K", "spray", "split", "mine"):
            assert known in message.split("known: ")[1].split("; ")[0].split(", ")


def test_the_compare_defaults_are_registered_routings():
    from nasfleet.comm.defaults import ALL_ROUTINGS

    assert [get_routing(name).name for name in ALL_ROUTINGS] == list(ALL_ROUTINGS)


def test_a_routing_from_another_package_registers_through_its_entry_point(tmp_path):
    """A fake installed distribution that declares ``[nasfleet.routings] pinned-split = ...``."""
    import os
    import subprocess
    import sys

    (tmp_path / "other_routing.py").write_text(
        "from nasfleet.comm.routing import SplitRouting\n\n"
        "class PinnedSplit(SplitRouting):\n"
        "    name = 'pinned-split'\n"
    )
    info = tmp_path / "other_routing-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: other-routing\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[nasfleet.routings]\npinned-split = other_routing:PinnedSplit\n")
    code = (
        "from nasfleet.comm import get_routing, routing_names\n"
        "assert 'pinned-split' in routing_names(), routing_names()\n"
        "print(type(get_routing('pinned-split')).__name__)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "PinnedSplit"


def test_importing_nasfleet_comm_loads_nothing_of_the_ml_side():
    import subprocess
    import sys

    code = (
        "import importlib, pkgutil, sys\n"
        "import nasfleet.comm, nasfleet.comm.cli\n"
        "assert 'numpy' not in sys.modules, 'import nasfleet.comm.cli must stay light'\n"
        "for name in nasfleet.comm.__all__:\n"
        "    getattr(nasfleet.comm, name)\n"
        "for module in pkgutil.iter_modules(nasfleet.comm.__path__):\n"
        "    if module.name != '__main__':\n"
        "        importlib.import_module(f'nasfleet.comm.{module.name}')\n"
        "heavy = sorted({'torch', 'ray', 'deepspeed'} & {m.split('.')[0] for m in sys.modules})\n"
        "assert not heavy, heavy\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
