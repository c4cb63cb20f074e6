"""``nasfleet comm``: simulate, compare, sweep and calibrate from the command line.

Only typer, rich and pure-Python helpers load with this module, so ``--help`` answers
without numpy, scipy or pandas; each command imports the simulator modules it runs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from nasfleet.comm.defaults import ALL_ROUTINGS, DEFAULT_PIPELINE_CHUNK_BYTES
from nasfleet.errors import NasfleetError
from nasfleet.comm.units import format_bytes, format_seconds, parse_size_bytes, parse_size_list

if TYPE_CHECKING:
    from nasfleet.comm.sweep import Grid, GridRun
    from nasfleet.comm.topology import Topology

comm_app = typer.Typer(
    help="Simulate collective traffic (all-reduce, all-to-all, ...) on leaf-spine and fat-tree fabrics "
    "under ECMP, packet spraying, ECMP-k and single-path flow splitting.",
    no_args_is_help=True,
    add_completion=False,
)

TOPOLOGY_HELP = (
    "YAML file, a name in cluster_configs/topologies/, or an inline spec such as "
    "leafspine:leaves=16,spines=16,hosts=16,gbps=400,latency_ns=500 or fattree:k=16,gbps=400."
)


def _console() -> Console:
    return Console(highlight=False, width=140)


def _apply_calibration(topology: Topology, calibration: Optional[Path]) -> tuple[Topology, float]:
    if calibration is None:
        return topology, 0.0
    from nasfleet.comm.calibrate import load_calibration
    from nasfleet.comm.topology import with_host_gbps

    fit = load_calibration(calibration)
    if fit.gbps < topology.gbps:  # β = 0 (bandwidth not resolved by the fit) leaves the NICs alone
        topology = with_host_gbps(topology, fit.gbps)
    return topology, fit.alpha_s


def _ranks(ranks: Optional[int], topology: Topology, gpus_per_host: int) -> int:
    return ranks if ranks is not None else topology.num_hosts * gpus_per_host


def _check_at_least(least: int, **options: Optional[int]) -> None:
    """Refuse a count option below ``least`` by its option name, before it turns into
    something else (``--gpus-per-host 0`` would otherwise surface as zero ranks)."""
    for name, value in options.items():
        if value is not None and value < least:
            raise NasfleetError(f"--{name.replace('_', '-')} must be at least {least}, got {value}")


def _summary_table(rows: list[dict], title: str) -> Table:
    table = Table(title=title)
    for column in ("algorithm", "size", "routing", "CCT mean", "CCT worst", "congestion", "max util", "subflows",
                   "min subflows"):
        table.add_column(column, justify="left" if column in ("algorithm", "routing") else "right")
    for row in rows:
        table.add_row(
            row["algorithm"],
            format_bytes(row["bytes"]),
            row["routing"],
            format_seconds(row["completion_time_s"]),
            format_seconds(row.get("completion_time_worst_s", row["completion_time_s"])),
            format_seconds(row["max_congestion_s"]),
            f"{row['max_link_utilization']:.3f}",
            f"{row['subflows']:,}",
            f"{row['min_subflows']:,}",
        )
    return table


@comm_app.command()
def simulate(
    topology: str = typer.Option(..., "--topology", "-t", help=TOPOLOGY_HELP),
    collective: str = typer.Option("allreduce", help="allreduce, allgather, reducescatter, alltoall, broadcast, p2p, incast."),
    algorithm: Optional[str] = typer.Option(
        None, help="ring, halving-doubling, double-binary-tree, direct, hierarchical (alltoall: pairwise, direct)."
    ),
    ranks: Optional[int] = typer.Option(None, help="Number of ranks (default: every GPU slot)."),
    size: str = typer.Option("1GiB", help="Bytes per rank, e.g. 64MiB, 1GiB, 1e9."),
    routing: str = typer.Option(
        "split", help="ecmp, ecmp-K (e.g. ecmp-4), spray, split, or capacity-aware spray-weighted, split-weighted."
    ),
    fidelity: str = typer.Option("flow", help="analytical (congestion bound) or flow (max-min fair, event driven)."),
    seed: int = typer.Option(0, help="Hash seed for ecmp/ecmp-K (and a random placement)."),
    seeds: int = typer.Option(1, help="For ecmp/ecmp-K: run this many seeds from --seed, report mean and worst."),
    gpus_per_host: Optional[int] = typer.Option(
        None, help="Ranks per host (default: the topology's GPUs per host, else 1); traffic inside a host is not on "
        "the network (it crosses the NVLink tier if the topology has one).",
    ),
    placement: str = typer.Option("contiguous", help="contiguous, strided or random."),
    pipeline_chunk: str = typer.Option(format_bytes(DEFAULT_PIPELINE_CHUNK_BYTES), help="Chunk of pipelined tree/chain algorithms."),
    calibration: Optional[Path] = typer.Option(None, help="Fitted alpha/beta JSON from 'calibrate': adds alpha per step, caps NICs at 1/beta."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object."),
    top_links: int = typer.Option(5, help="With --json: the N most utilised links (bytes, utilisation); 0 for none."),
    flow_rates: bool = typer.Option(False, "--flow-rates", help="With --json at flow fidelity: every flow's rates."),
) -> None:
    """Simulate one collective and print its completion time."""
    from nasfleet.comm.collectives import build_collective
    from nasfleet.comm.simulate import simulate_over_seeds
    from nasfleet.comm.topology_config import resolve_topology

    started = time.perf_counter()
    _check_at_least(1, ranks=ranks, gpus_per_host=gpus_per_host, seeds=seeds)
    _check_at_least(0, seed=seed, top_links=top_links)
    if flow_rates and not (json_output and fidelity == "flow"):
        raise NasfleetError("--flow-rates needs --json and --fidelity flow (rates come from the flow-level solver)")
    topo, alpha_s = _apply_calibration(resolve_topology(topology), calibration)
    gpus_per_host = gpus_per_host if gpus_per_host is not None else max(1, topo.gpus_per_host)
    size_bytes = parse_size_bytes(size)
    coll = build_collective(
        collective, _ranks(ranks, topo, gpus_per_host), size_bytes, algorithm, parse_size_bytes(pipeline_chunk),
        ranks_per_host=gpus_per_host * topo.endpoints_per_server,
    )
    summary = simulate_over_seeds(
        topo, coll, routing, seeds=seeds, first_seed=seed, fidelity=fidelity,
        gpus_per_host=gpus_per_host, placement=placement, alpha_s=alpha_s, record_flows=flow_rates,
    )
    record = summary.to_dict()
    if json_output:
        # links and flows of one run: the slowest seed's, named when there are several
        detail = summary.slowest
        if len(summary.results) > 1:
            record["detail_seed"] = detail.seed
        record["top_links"] = detail.top_links(topo, top_links)
        if flow_rates:
            record["flow_rates"] = detail.flow_rates()
        record["wall_time_s"] = time.perf_counter() - started
        typer.echo(json.dumps(record))
        return
    record["wall_time_s"] = time.perf_counter() - started
    _console().print(_summary_table([record], f"{coll.kind} on {topo.name}, {coll.ranks} ranks, {fidelity} fidelity"))


@comm_app.command()
def compare(
    topology: str = typer.Option(..., "--topology", "-t", help=TOPOLOGY_HELP),
    collective: str = typer.Option("allreduce", help="Collective to run."),
    algorithms: str = typer.Option("ring,halving-doubling,double-binary-tree", help="Comma-separated algorithms."),
    ranks: Optional[int] = typer.Option(None, help="Number of ranks (default: every GPU slot)."),
    sizes: str = typer.Option("1MiB,16MiB,128MiB", help="Comma-separated sizes per rank."),
    routings: str = typer.Option(",".join(ALL_ROUTINGS), help="Comma-separated routings to compare."),
    fidelity: str = typer.Option("flow", help="analytical or flow."),
    seeds: int = typer.Option(4, help="Seeds for the hashed routings (mean and worst are reported)."),
    gpus_per_host: int = typer.Option(1, help="Ranks per host."),
    output: Path = typer.Option(Path("comm_compare"), help="Directory for compare.parquet and the PNG plots."),
    json_output: bool = typer.Option(False, "--json", help="Print the rows as a JSON list."),
) -> None:
    """Run every routing on the same workload; write a table, Parquet and PNG plots."""
    from nasfleet.comm.sweep import Grid
    from nasfleet.comm.topology_config import resolve_topology

    _check_output_folder(output, "--output")
    _check_at_least(1, ranks=ranks, gpus_per_host=gpus_per_host, seeds=seeds)
    topo = resolve_topology(topology)
    grid = Grid(
        collective=collective,
        algorithms=tuple(a.strip() for a in algorithms.split(",") if a.strip()),
        routings=tuple(r.strip() for r in routings.split(",") if r.strip()),
        sizes_bytes=tuple(parse_size_list(sizes)),
        ranks=_ranks(ranks, topo, gpus_per_host),
        fidelity=fidelity,
        seeds=seeds,
        gpus_per_host=gpus_per_host,
    )
    run = _run_with_progress(topo, grid, quiet=json_output)
    _write_outputs(run, topo, output, "compare")
    if json_output:
        typer.echo(run.frame.to_json(orient="records"))
        return
    _console().print(_summary_table(run.frame.to_dict("records"), f"{collective} on {topo.name}, {grid.ranks} ranks, {fidelity} fidelity"))
    _console().print(f"wrote {output}/compare.parquet, {output}/compare_cct.png, {output}/compare_links.png")


@comm_app.command()
def sweep(
    file: Path = typer.Argument(..., help="YAML sweep file: topology, collective, algorithms, routings, sizes, ranks, fidelity, seeds, output."),
    json_output: bool = typer.Option(False, "--json", help="Print the rows as a JSON list."),
) -> None:
    """Run a grid of simulations described in a YAML file; write Parquet and a PNG plot."""
    from nasfleet.comm.sweep import load_sweep_file, sweep_grid
    from nasfleet.comm.topology_config import resolve_topology

    spec = load_sweep_file(file)
    out = Path(spec.output)
    _check_output_folder(out, f"{file}: output")
    topo = resolve_topology(spec.topology)
    grid = sweep_grid(spec, topo)
    run = _run_with_progress(topo, grid, quiet=json_output)
    _write_outputs(run, topo, out, "sweep")
    if json_output:
        typer.echo(run.frame.to_json(orient="records"))
        return
    _console().print(_summary_table(run.frame.to_dict("records"), f"sweep {file} on {topo.name}"))
    _console().print(f"wrote {out}/sweep.parquet and plots")


def _run_with_progress(topo: Topology, grid: Grid, quiet: bool) -> GridRun:
    from nasfleet.comm.sweep import run_grid

    total = len(grid.points())
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
        console=Console(stderr=True), disable=quiet, transient=True,
    ) as progress:
        task = progress.add_task("simulating", total=total)
        return run_grid(topo, grid, on_point=lambda label: progress.update(task, advance=1, description=label))


def _check_output_folder(directory: Path, option: str) -> None:
    """Refuse an output folder that is a file before simulating, not after."""
    if directory.exists() and not directory.is_dir():
        raise NasfleetError(f"{option} {directory} is a file; give a folder")


def _write_outputs(run: GridRun, topo: Topology, directory: Path, stem: str) -> None:
    from nasfleet.comm.plots import plot_cct, plot_link_heatmap
    from nasfleet.comm.sweep import write_parquet

    # Heat map of the most congested run at the largest size.
    largest = run.frame["bytes"].max()
    rows = run.frame[run.frame["bytes"] == largest]
    worst = rows.loc[rows["completion_time_worst_s"].idxmax()]
    summary = run.summaries[(worst["algorithm"], int(largest), worst["routing"])]
    slowest = max(summary.results, key=lambda r: r.completion_time_s)
    try:
        write_parquet(run.frame, directory / f"{stem}.parquet")
        plot_cct(run.frame, directory / f"{stem}_cct.png", title=topo.name)
        plot_link_heatmap(slowest, topo, directory / f"{stem}_links.png")
    except OSError as error:  # a full disk, a parent that is a file, no permission
        raise NasfleetError(f"cannot write {directory}: {error.strerror or error}") from None


@comm_app.command()
def workload(
    file: Path = typer.Argument(..., help="YAML workload file: topology, jobs (hosts, collective or training, start), background flows."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object."),
    alone: bool = typer.Option(True, help="Also run every job alone on the empty fabric and report its slowdown."),
) -> None:
    """Run several jobs (collectives, training iterations) and background flows together on one fabric; per-job CCT."""
    from nasfleet.comm.workload import alone_completion_times, simulate_workload
    from nasfleet.comm.workload_config import load_workload_file

    started = time.perf_counter()
    topo, jobs, rates = load_workload_file(file)
    result = simulate_workload(topo, jobs, rates)
    baseline = alone_completion_times(topo, jobs) if alone else {}
    rows = []
    for job, outcome in zip(jobs, result.jobs):
        row = outcome.to_dict()
        row["ranks"] = len(job.rank_host)
        row["what"] = _job_label(job)
        if job.name in baseline:
            row["alone_s"] = baseline[job.name]
            row["slowdown"] = outcome.completion_time_s / baseline[job.name] if baseline[job.name] > 0 else 1.0
        rows.append(row)
    record = {
        "topology": topo.name,
        "makespan_s": result.makespan_s,
        "jobs": rows,
        "fixed_rate_flows": [
            {"name": f.name, "src": f.src_host, "dst": f.dst_host, "gbps": f.gbps, "start_s": f.start_s,
             "end_s": f.end_s if f.end_s != float("inf") else None} for f in rates
        ],
        "shared_links": result.shared_links,
        "rate_recomputations": result.rate_recomputations,
        "wall_time_s": time.perf_counter() - started,
    }
    if json_output:
        typer.echo(json.dumps(record))
        return
    table = Table(title=f"workload {file} on {topo.name}: makespan {format_seconds(result.makespan_s)}")
    for column in ("job", "ranks", "what", "start", "finish", "CCT", "alone", "slowdown", "exposed comm", "hidden comm"):
        table.add_column(column, justify="left" if column in ("job", "what") else "right")
    for row in rows:
        iteration = row.get("iteration")
        table.add_row(
            row["name"], str(row["ranks"]), row["what"], format_seconds(row["start_s"]), format_seconds(row["finish_s"]),
            format_seconds(row["completion_time_s"]),
            format_seconds(row["alone_s"]) if "alone_s" in row else "-",
            f"{row['slowdown']:.3f}" if "slowdown" in row else "-",
            format_seconds(iteration["exposed_comm_s"]) if iteration else "-",
            format_seconds(iteration["hidden_comm_s"]) if iteration else "-",
        )
    _console().print(table)


def _job_label(job) -> str:
    """What a job runs, in a few words (``ring allreduce 64MiB``, ``training: 14 buckets``)."""
    if job.compute is not None:
        return f"training: {len(job.phases)} buckets of {job.phases[0].collective.algorithm} {job.phases[0].collective.kind}"
    coll = job.phases[0].collective
    return f"{coll.algorithm} {coll.kind} {format_bytes(coll.size_bytes)}"


@comm_app.command()
def calibrate(
    ranks: int = typer.Option(2, help="MPI processes to launch."),
    sizes: str = typer.Option("4KiB,64KiB,1MiB,8MiB", help="Comma-separated message sizes."),
    budget_s: float = typer.Option(10.0, help="Rough wall-time budget for the measurements."),
    backend: str = typer.Option("mpi", help="mpi (mpi4py) or gloo (torch.distributed, launched by mpiexec)."),
    mpiexec: Optional[str] = typer.Option(None, help="mpiexec to use (default: the one next to this Python)."),
    hostfile: Optional[Path] = typer.Option(None, help="Hostfile passed to mpiexec for a multi-node run."),
    output: Path = typer.Option(Path("comm_calibration.json"), help="Where to store the fitted alpha and beta."),
    json_output: bool = typer.Option(False, "--json", help="Print the fit as JSON."),
) -> None:
    """Measure all-reduce/all-gather times with MPI, fit alpha (latency) and beta (per byte), store them."""
    from nasfleet.comm.calibrate import run_calibration

    fit = run_calibration(
        ranks=ranks, sizes_bytes=parse_size_list(sizes), budget_s=budget_s, backend=backend,
        mpiexec=mpiexec, hostfile=hostfile, output=output,
    )
    if json_output:
        typer.echo(json.dumps(fit.to_dict()))
        return
    _console().print(
        f"alpha = {format_seconds(fit.alpha_s)}, beta = {fit.beta_s_per_byte:.3e} s/B "
        f"(~{fit.gbps:.1f} Gb/s), from {len(fit.samples)} measurements on {fit.ranks} ranks ({fit.backend}); wrote {output}"
    )

