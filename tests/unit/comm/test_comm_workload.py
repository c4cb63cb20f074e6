"""Several jobs on one fabric, background traffic, and gradient buckets overlapping backward."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nasfleet.comm import build_collective, leaf_spine, simulate
from nasfleet.comm.workload import (
    FixedRateFlow,
    collective_job,
    gradient_bucket_bytes,
    point_to_point_job,
    simulate_workload,
    training_job,
)
from nasfleet.errors import NasfleetError

REPO = Path(__file__).resolve().parents[3]
B = 400e9 / 8  # bytes/s of a 400 Gb/s link
N = 64 * 2**20
# 2 leaves x 1 spine, 2 hosts per leaf: hosts 0, 1 on leaf0 and 2, 3 on leaf1
TWO_LEAVES = leaf_spine(leaves=2, spines=1, hosts=2, gbps=400, latency_ns=500)


def ring(ranks: int, size: float = N):
    return build_collective("allreduce", ranks, size, "ring")


def test_jobs_that_share_no_link_each_take_their_closed_form_time():
    """Job a on leaf0's two hosts, job b on leaf1's: a 2-rank ring all-reduce is 2 steps of
    n/2 over one NIC plus two 500 ns host links each: 2·(n/(2B) + 1 µs)."""
    result = simulate_workload(TWO_LEAVES, [collective_job("a", [0, 1], ring(2)), collective_job("b", [2, 3], ring(2))])
    closed_form = 2 * (N / (2 * B) + 2 * 500e-9)
    assert [j.completion_time_s for j in result.jobs] == pytest.approx([closed_form] * 2, rel=1e-12)
    assert result.shared_links == 0 and result.makespan_s == pytest.approx(closed_form, rel=1e-12)


def test_jobs_that_share_the_uplink_each_get_half_of_it():
    """Interleaved: a on hosts 0, 2 and b on hosts 1, 3, so both rings cross the one spine and
    leaf0->spine0 carries a's 0->2 and b's 1->3 at B/2 each: 2·(n/B + 2 µs) against
    2·(n/(2B) + 2 µs) alone (four 500 ns links per path)."""
    result = simulate_workload(TWO_LEAVES, [collective_job("a", [0, 2], ring(2)), collective_job("b", [1, 3], ring(2))])
    alone = simulate(TWO_LEAVES, ring(2), placement=[0, 2]).completion_time_s
    assert alone == pytest.approx(2 * (N / (2 * B) + 4 * 500e-9), rel=1e-12)
    shared = 2 * (N / B + 4 * 500e-9)
    assert [j.completion_time_s for j in result.jobs] == pytest.approx([shared] * 2, rel=1e-12)
    assert shared > alone and result.shared_links == 4  # leaf0->spine0, spine0->leaf1 and back


SMALL = leaf_spine(leaves=4, spines=4, hosts=4, gbps=400, latency_ns=300)


@pytest.mark.parametrize("algorithm", ["ring", "halving-doubling", "double-binary-tree", "direct"])
@pytest.mark.parametrize("routing", ["ecmp", "spray", "split"])
def test_one_job_alone_and_disjoint_jobs_equal_simulate(algorithm, routing):
    """The shared event loop gives a job its simulate() CCT when nothing else touches its links:
    alone, and beside a job on the other two leaves (leaf-local traffic, so no shared link)."""
    coll = build_collective("allreduce", 8, 3 * 2**20, algorithm, pipeline_chunk_bytes=2**19)
    expected = simulate(SMALL, coll, routing, seed=5).completion_time_s
    a = collective_job("a", np.arange(8), coll, routing=routing, seed=5)
    assert simulate_workload(SMALL, [a]).jobs[0].completion_time_s == pytest.approx(expected, rel=1e-9)
    local = collective_job("local", np.arange(8, 12), build_collective("allreduce", 4, 2**20, "ring"), 1e-4)
    both = simulate_workload(SMALL, [a, local])
    assert both.shared_links == 0
    assert both.job("a").completion_time_s == pytest.approx(expected, rel=1e-9)
    assert both.job("local").completion_time_s == pytest.approx(
        simulate(SMALL, local.phases[0].collective, placement=list(range(8, 12))).completion_time_s, rel=1e-9)


def test_a_later_start_is_counted_from_the_job_start():
    late = simulate_workload(TWO_LEAVES, [collective_job("a", [0, 1], ring(2), start_s=0.25)]).jobs[0]
    assert late.start_s == 0.25 and late.completion_time_s == pytest.approx(2 * (N / (2 * B) + 1e-6), rel=1e-9)


NO_LATENCY = leaf_spine(leaves=2, spines=1, hosts=2, gbps=400)


def test_a_fixed_size_background_flow_competes_for_the_uplink():
    """Ring of 2 on hosts 0, 2 with a 2n background flow 1 -> 3 on the same uplink, no latency:
    each ring step moves n/2 at B/2 (n/B), the background flow sends n meanwhile and its
    last n alone at B: the job takes 2n/B (n/B alone), the flow ends at 3n/B."""
    background = point_to_point_job("bg", 1, 3, 2 * N)
    result = simulate_workload(NO_LATENCY, [collective_job("a", [0, 2], ring(2)), background])
    assert result.job("a").completion_time_s == pytest.approx(2 * N / B, rel=1e-12)
    assert result.job("bg").finish_s == pytest.approx(3 * N / B, rel=1e-12)
    assert result.job("bg").background


def test_a_fixed_rate_flow_takes_its_rate_off_the_links_it_crosses():
    """200 Gb/s reserved on host1 -> host3 leaves B/2 on leaf0->spine0: the ring's 0 -> 2 flow
    (n/2 per step) runs at B/2, the reverse one at B; while the reservation lasts (until
    t_end) each step takes n/B; once it ends, n/(2B)."""
    jobs = [collective_job("a", [0, 2], ring(2))]
    forever = simulate_workload(NO_LATENCY, jobs, [FixedRateFlow(1, 3, 200.0)])
    assert forever.jobs[0].completion_time_s == pytest.approx(2 * N / B, rel=1e-12)
    t_end = N / B  # the first step's end
    brief = simulate_workload(NO_LATENCY, jobs, [FixedRateFlow(1, 3, 200.0, 0.0, t_end)])
    assert brief.jobs[0].completion_time_s == pytest.approx(N / B + N / (2 * B), rel=1e-12)
    with pytest.raises(NasfleetError, match="background flows reserve more than link host1->leaf0"):
        simulate_workload(NO_LATENCY, jobs, [FixedRateFlow(1, 3, 500.0)])
    with pytest.raises(NasfleetError, match="can never finish"):
        simulate_workload(NO_LATENCY, jobs, [FixedRateFlow(1, 3, 400.0)])


# --- gradient buckets overlapping backward ---------------------------------------------

ONE_LEAF = leaf_spine(leaves=1, spines=1, hosts=2, gbps=400)  # a 2-rank ring of b bytes takes b/B


def test_bucket_sizes_follow_the_payload():
    assert gradient_bucket_bytes(10, 4) == [4, 4, 2] and gradient_bucket_bytes(8, 4) == [4, 4]
    with pytest.raises(NasfleetError, match="at most 100,000 are simulated: give a larger bucket size"):
        gradient_bucket_bytes(10**9, 1)


def test_communication_shorter_than_compute_exposes_only_the_last_bucket():
    """4 buckets of b, each all-reduced in b/B = 1.34 ms, backward 20 ms (5 ms per bucket):
    every bucket's all-reduce ends before the next is ready, so only the last one's shows."""
    bucket = N
    t = bucket / B
    job = training_job("train", [0, 1], 4 * bucket, bucket, forward_s=0.01, backward_s=0.02)
    (result,) = simulate_workload(ONE_LEAF, [job]).jobs
    it = result.iteration
    assert it.buckets == 4 and it.comm_s == pytest.approx(4 * t, rel=1e-9)
    assert it.iteration_s == pytest.approx(0.03 + t, rel=1e-9)
    assert it.exposed_comm_s == pytest.approx(t, rel=1e-9) and it.hidden_comm_s == pytest.approx(3 * t, rel=1e-9)
    assert result.phase_start_s == pytest.approx([0.01 + 0.005 * (i + 1) for i in range(4)], rel=1e-12)


def test_communication_longer_than_compute_queues_the_buckets():
    """Buckets b, b, b, b/2 with backward 2 ms (b/B = 1.34 ms each): the first is ready at
    F + 2 ms · b / 3.5b and the rest follow back to back on one stream."""
    bucket = N
    t = bucket / B
    job = training_job("train", [0, 1], int(3.5 * bucket), bucket, forward_s=0.001, backward_s=0.002, optimizer_s=0.0005)
    it = simulate_workload(ONE_LEAF, [job]).jobs[0].iteration
    finish = 0.001 + 0.002 / 3.5 + 3.5 * t
    assert it.buckets == 4 and it.exposed_comm_s == pytest.approx(finish - 0.003, rel=1e-9)
    assert it.iteration_s == pytest.approx(finish + 0.0005, rel=1e-9)
    assert it.hidden_comm_s == pytest.approx(3.5 * t - (finish - 0.003), rel=1e-9)


# --- the CLI --------------------------------------------------------------------------


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nasfleet.comm", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=120)


WORKLOAD = """\
topology: leafspine:leaves=2,spines=1,hosts=2,gbps=400,latency_ns=500
jobs:
  - name: a
    hosts: {first: 0, count: 2, stride: 2}
    collective: allreduce
    algorithm: ring
    size: 64MiB
  - name: b
    hosts: [1, 3]
    collective: allreduce
    size: 64MiB
"""


def test_cli_reports_each_job_and_its_slowdown(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text(WORKLOAD)
    out = run("workload", str(path), "--json")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    jobs = {j["name"]: j for j in record["jobs"]}
    assert jobs["a"]["completion_time_s"] == pytest.approx(2 * (N / B + 2e-6), rel=1e-12)
    assert jobs["a"]["alone_s"] == pytest.approx(2 * (N / (2 * B) + 2e-6), rel=1e-12)
    assert jobs["b"]["slowdown"] == pytest.approx((N / B + 2e-6) / (N / (2 * B) + 2e-6), rel=1e-12)
    assert record["makespan_s"] == pytest.approx(jobs["a"]["finish_s"]) and record["shared_links"] == 4
    table = run("workload", str(path))
    assert table.returncode == 0 and "slowdown" in table.stdout


def test_cli_training_job_with_deepspeed_bucket_elements(tmp_path):
    """reduce_bucket_size counts elements: 2^25 fp16 elements are 64 MiB buckets, 4 of them."""
    path = tmp_path / "t.yaml"
    path.write_text(
        "topology: leafspine:leaves=1,spines=1,hosts=2,gbps=400\n"
        "jobs:\n  - name: t\n    hosts: [0, 1]\n    training: {params: 134217728, dtype_bytes: 2, "
        "reduce_bucket_size: 33554432, forward_s: 0.01, backward_s: 0.02}\n"
    )
    out = run("workload", str(path), "--json", "--no-alone")
    assert out.returncode == 0, out.stderr
    it = json.loads(out.stdout)["jobs"][0]["iteration"]
    assert it["buckets"] == 4 and it["exposed_comm_s"] == pytest.approx(N / B, rel=1e-9)


@pytest.mark.parametrize(
    "body, message",
    [
        ("jobs: [\n", "not valid YAML"),
        ("- 1\n", "expected a mapping with topology and jobs"),
        (WORKLOAD.replace("[1, 3]", "[1, 2]"), "jobs 'a' and 'b' both use host 2 (set shared_hosts: true"),
        (WORKLOAD.replace("[1, 3]", "[1, 4]"), "job 'b': host 4 does not exist"),
        (WORKLOAD.replace("count: 2, stride: 2", "count: 1000000000000, stride: 2"), "up to 1,999,999,999,998 do not exist"),
        (WORKLOAD.replace("algorithm: ring", "algorithm: bogus"), "unknown algorithm 'bogus' for allreduce"),
        (WORKLOAD.replace("size: 64MiB\n  - name: b", "size: 64MiB\n    start_s: .inf\n  - name: b"),
         "jobs.0.start_s: Input should be a finite number"),
        (WORKLOAD.replace("64MiB\n  - name", "lots\n  - name"), "bad size 'lots'"),
        (WORKLOAD.replace("name: b", "name: a"), "two jobs are named 'a'"),
        (WORKLOAD + "    flavour: sour\n", "jobs.1.flavour: Extra inputs are not permitted"),
        (WORKLOAD.replace("    size: 64MiB\n  - name: b", "  - name: b"), "a collective needs a size"),
        (WORKLOAD + "background:\n  - {src: 0, dst: 3, gbps: 800}\n", "background flows reserve more than link"),
        (WORKLOAD + "background:\n  - {src: 0, dst: 3, gbps: .nan}\n", "background.0.gbps: Input should be a finite"),
        (WORKLOAD + "background:\n  - {src: 0, dst: 3, size: 1GiB, gbps: 100}\n", "give a size (a fixed-size flow) or gbps"),
        ("topology: leafspine:leaves=1,spines=1,hosts=2,gbps=400\njobs:\n  - name: t\n    hosts: [0, 1]\n"
         "    training: {params: 1e9, bucket_size: 1, forward_s: 0.01, backward_s: 0.02}\n",
         "2,000,000,000 buckets; at most 100,000 are simulated"),
    ],
)
def test_cli_bad_workload_is_one_error_line_and_exit_2(tmp_path, body, message):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    out = run("workload", str(path))
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], out.stderr


def test_cli_missing_workload_file():
    out = run("workload", "no/such/workload.yaml")
    assert out.returncode == 2 and "workload file no/such/workload.yaml does not exist" in out.stderr
