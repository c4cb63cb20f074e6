"""The ``nasfleet`` command line.

Every error a user can cause is a NasfleetError, caught once in :func:`main` and
printed as one line with exit code 2.
"""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path
from typing import Optional

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from nasfleet.errors import NasfleetError
from nasfleet.research.cli import bench_app
from nasfleet.orchestrator.comm_prediction import CommSource
from nasfleet.orchestrator.config import TrainConfig, config_from_dict, load_config
from nasfleet.orchestrator.evaluate.subnets import SubnetResult, evaluate_arch, evaluate_standard_subnets, load_trained
from nasfleet.orchestrator.launch.ray_train import DistributedOptions
from nasfleet.orchestrator.launch.job import JobOutcome, ProcessGroupLaunch, run_training_job
from nasfleet.orchestrator.metrics import prometheus_metrics
from nasfleet.orchestrator.subnet_search.pareto_report import front_member
from nasfleet.orchestrator.cli.profile import profile
from nasfleet.orchestrator.subnet_search.experiment import SETTINGS_FILE, run_search, search_folder, search_settings
from nasfleet.orchestrator.cli.search import key_values, print_front, search
from nasfleet.strategies.registry import STRATEGIES
from nasfleet.orchestrator.storage import has_checkpoint
from nasfleet.supernet import Arch, SearchSpace, arch_from_json, arch_to_dict, extract, recalibrate_batchnorm, save_subnet

app = typer.Typer(help="Train weight-sharing supernets and find the subnets worth deploying.", no_args_is_help=True)
console = Console()


def _mount_comm() -> None:
    try:
        from nasfleet.comm.cli import comm_app
    except ImportError:  # comm's CLI is optional while that package grows
        return
    app.add_typer(comm_app, name="comm", help="Simulate collective communication on leaf-spine fabrics.")


_mount_comm()
app.add_typer(bench_app, name="bench", help="Benchmarks that write docs/ pages, e.g. `bench strategies`.")
app.command(name="profile")(profile)
app.command(name="search")(search)


def demo_config() -> TrainConfig:
    text = resources.files("nasfleet.orchestrator").joinpath("configs/demo.yaml").read_text()
    return config_from_dict(yaml.safe_load(text), "built-in demo config")


def _with_overrides(
    config: TrainConfig, run_dir: Optional[Path], steps: Optional[int], strategy: Optional[str] = None,
    strategy_params: Optional[dict[str, object]] = None,
) -> TrainConfig:
    update: dict[str, object] = {}
    if run_dir is not None:
        update["run_dir"] = run_dir
    if steps is not None:
        update["optim"] = config.optim.model_copy(update={"steps": steps})
    if strategy is not None or strategy_params:
        name = strategy or config.strategy.name
        # A new strategy starts from its own defaults; parameters given here override either.
        params = {} if name != config.strategy.name else dict(config.strategy.params)
        update["strategy"] = {"name": name, "params": {**params, **(strategy_params or {})}}
    return config_from_dict({**config.model_dump(), **update}, "config with command-line overrides")


def print_results(results: list[SubnetResult], title: str) -> None:
    table = Table(title=title)
    splits = list(results[0].accuracy) if results else []
    for column in ("subnet", "arch", "MFLOPs", "params", *(f"{s} acc" for s in splits)):
        table.add_column(column, justify="left" if column in ("subnet", "arch") else "right")
    for r in results:
        accuracies = (f"{100 * r.accuracy[s]:.2f}%" for s in splits)
        table.add_row(r.role, escape(r.arch.describe()), f"{r.mflops:.3f}", f"{r.params:,}", *accuracies)
    console.print(table)


def _results_json(results: list[SubnetResult]) -> str:
    return json.dumps(
        [
            {"role": r.role, "arch": arch_to_dict(r.arch), "mflops": r.mflops, "params": r.params, "accuracy": r.accuracy}
            for r in results
        ],
        indent=2,
    )


def _distributed_options(
    workers: int, deepspeed: Optional[Path], storage_path: Optional[str], ray_address: Optional[str],
    max_failures: int, gpu: bool, metrics_port: Optional[int], comm: CommSource = CommSource(),
) -> Optional[DistributedOptions]:
    if workers == 0:
        return None
    return DistributedOptions(
        workers=workers,
        deepspeed_config=deepspeed,
        storage_path=storage_path,
        ray_address=ray_address,
        max_failures=max_failures,
        use_gpu=gpu,
        metrics_export_port=metrics_port,
        comm=comm,
    )


WORKERS_HELP = "0: train in this process; N ≥ 1: N Ray Train workers, each a DeepSpeed data-parallel rank."
DEEPSPEED_HELP = "DeepSpeed JSON config (see cluster_configs/deepspeed/); default: ZeRO stage 0, fp32."
STORAGE_HELP = "Where Ray Train keeps the run: a shared folder or a pyarrow URI (s3://...); default: run_dir's parent."
METRICS_HELP = (
    "Serve Prometheus metrics on 127.0.0.1:PORT (in this process; with --workers, the local Ray cluster's "
    "metrics-export port)."
)
LAUNCHER_HELP = (
    "ray: --workers Ray Train workers (0: this process). mpi / torchrun: this process is one rank of a job "
    "started by `mpiexec -n N` or `torchrun --nproc-per-node N`."
)
RAY_ADDRESS_HELP = "Ray cluster to join (e.g. 127.0.0.1:6379); default: $RAY_ADDRESS, or start a local one."


def _report_job(outcome: JobOutcome, title: str) -> None:
    print_results(outcome.results, title)
    console.print(f"run folder: {outcome.run_folder}   results (Parquet): {outcome.results_folder}")


TUNE_HELP = "Tune the learning rate and distillation weight with a population (Ray Tune): pbt or pb2."


def _train_tuned(
    cfg: TrainConfig, scheduler: str, population: int, interval: Optional[int], ray_address: Optional[str]
) -> None:
    """``train --tune``: a population of single-process trainings; the winner becomes the run."""
    from nasfleet.orchestrator.tuning.population import tune_training

    outcome = tune_training(cfg, scheduler, population, interval, ray_address)  # type: ignore[arg-type]
    table = Table(title=f"{scheduler.upper()}: {len(outcome.trials)} trials, {cfg.optim.steps} steps each")
    for column in ("trial", "final lr", "distill weight", "score", "exploits", ""):
        table.add_column(column, justify="left" if column in ("trial", "") else "right")
    for t in outcome.trials:
        weight = "-" if t.distill_weight is None else f"{t.distill_weight:.3f}"
        mark = "winner" if t.trial == outcome.winner else ""
        table.add_row(t.trial, f"{t.lr:.4g}", weight, f"{100 * t.score:.2f}%", str(t.exploits), mark)
    console.print(table)
    console.print(
        f"winner {outcome.winner} installed as the run in {outcome.run_dir}; schedules: {outcome.schedule_path} "
        f"({outcome.wall_time_s:.0f} s)"
    )


@app.command()
def train(
    config: Path = typer.Option(..., "--config", "-c", help="YAML job config (see orchestrator/configs/demo.yaml)."),
    resume: bool = typer.Option(False, help="Continue the run in the config's run_dir from its checkpoint."),
    run_dir: Optional[Path] = typer.Option(None, help="Override the config's run_dir."),
    steps: Optional[int] = typer.Option(None, help="Override the number of optimizer steps."),
    strategy: Optional[str] = typer.Option(None, help=f"Override the training strategy: {', '.join(STRATEGIES)}."),
    strategy_param: list[str] = typer.Option([], help="Strategy parameter KEY=VALUE (e.g. num_random=3); repeatable."),
    progress: bool = typer.Option(True, help="Show a progress bar (single-process training)."),
    workers: int = typer.Option(0, min=0, help=WORKERS_HELP),
    deepspeed: Optional[Path] = typer.Option(None, help=DEEPSPEED_HELP),
    storage_path: Optional[str] = typer.Option(None, help=STORAGE_HELP),
    ray_address: Optional[str] = typer.Option(None, help=RAY_ADDRESS_HELP),
    max_failures: int = typer.Option(3, min=0, help="Worker-group restarts from the last checkpoint before giving up."),
    gpu: bool = typer.Option(False, help="One GPU per worker, NCCL all-reduce."),
    metrics_port: Optional[int] = typer.Option(None, help=METRICS_HELP),
    launcher: str = typer.Option("ray", help=LAUNCHER_HELP),
    comm_calibration: Optional[Path] = typer.Option(
        None, help="α–β fit from `nasfleet comm calibrate`: predict the gradient all-reduce and log it beside the measurement."
    ),
    comm_topology: Optional[str] = typer.Option(
        None, help="Fabric (spec or topology YAML) to simulate the gradient all-reduce on, logged beside the measurement."
    ),
    tune: Optional[str] = typer.Option(None, "--tune", help=TUNE_HELP),
    population: int = typer.Option(4, help="--tune: how many trainings run in the population."),
    tune_interval: Optional[int] = typer.Option(None, help="--tune: steps between perturbations (default: steps/6)."),
) -> None:
    """Train a supernet (here, or data-parallel under DeepSpeed), then evaluate and record its subnets."""
    cfg = _with_overrides(
        load_config(config), run_dir, steps, strategy, key_values(strategy_param, "--strategy-param")
    )
    if tune is not None:
        if workers > 0 or launcher != "ray" or resume:
            raise NasfleetError("--tune trains single-process trials: it cannot be combined with --workers, --launcher or --resume")
        _train_tuned(cfg, tune, population, tune_interval, ray_address)
        return
    if launcher not in ("ray", "mpi", "torchrun"):
        raise NasfleetError(f"unknown launcher {launcher!r} (expected ray, mpi or torchrun)")
    comm = CommSource(comm_calibration, comm_topology)
    options: DistributedOptions | ProcessGroupLaunch | None
    if launcher in ("mpi", "torchrun"):
        options = ProcessGroupLaunch(launcher, deepspeed, gpu, metrics_port, comm)  # type: ignore[arg-type]
    else:
        options = _distributed_options(
            workers, deepspeed, storage_path, ray_address, max_failures, gpu, metrics_port, comm
        )
    endpoint = prometheus_metrics(metrics_port) if metrics_port is not None and options is None else None
    if endpoint is not None:
        console.print(f"metrics: {endpoint.url}")
    outcome = run_training_job(
        cfg, options, resume=resume, show_progress=progress, metrics=endpoint.metrics if endpoint else None
    )
    if outcome is not None:
        _report_job(outcome, f"{cfg.run_dir.name} after {outcome.step} steps")


@app.command()
def evaluate(
    run: Path = typer.Option(..., "--run", help="Run directory written by `nasfleet train`."),
    split: list[str] = typer.Option(["val"], help="Data split(s): train, val or test; repeat for several."),
    random_subnets: int = typer.Option(3, "--random", min=0, help="How many random subnets besides the bounds."),
    seed: int = typer.Option(0, help="Seed for the random subnets."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Accuracy, MFLOPs and params of the smallest, largest and a few random subnets."""
    trained = load_trained(run)
    results = evaluate_standard_subnets(trained, tuple(split), random_subnets, seed)
    if as_json:
        typer.echo(_results_json(results))
    else:
        print_results(results, f"{run} — step {trained.step}")


def _parse_arch(text: str, space: SearchSpace) -> Arch:
    """'smallest', 'largest', an arch JSON string, or @file.json; validated against ``space``."""
    if text in ("smallest", "largest"):
        return space.smallest() if text == "smallest" else space.largest()
    if text.startswith("@"):
        path = Path(text[1:])
        if not path.is_file():
            raise NasfleetError(f"architecture file {path} does not exist")
        text = path.read_text()
    return space.validate(arch_from_json(text))


@app.command()
def export(
    run: Path = typer.Option(..., "--run", help="Run directory written by `nasfleet train`."),
    arch: Optional[str] = typer.Option(None, help="'smallest', 'largest', an arch JSON string, or @file.json (default: largest)."),
    pareto: Optional[int] = typer.Option(None, help="Export the K-th subnet (1 = cheapest) of a search's Pareto front instead."),
    search_name: str = typer.Option("search", "--search", help="Which search's front --pareto reads (RUN/search/NAME)."),
    out: Path = typer.Option(..., "--out", help="Folder to write model.pt and arch.json into."),
) -> None:
    """Extract one subnet (with its own BN statistics) as a standalone torch module."""
    if arch is not None and pareto is not None:
        raise NasfleetError("give either --arch or --pareto, not both")
    trained = load_trained(run)
    if pareto is not None:
        _, chosen = front_member(search_folder(run, search_name), pareto)
        trained.space.validate(chosen)
    else:
        chosen = _parse_arch(arch or "largest", trained.space)
    recalibrate_batchnorm(trained.model, chosen, trained.calibration_batches())
    subnet = extract(trained.model, trained.space, chosen).eval()
    save_subnet(subnet, trained.space, chosen, out)
    result = evaluate_arch(trained, chosen, ("test",), "exported")
    console.print(
        f"exported {escape(chosen.describe())} to {out}: {result.mflops:.3f} MFLOPs, {result.params:,} params, "
        f"test accuracy {100 * result.accuracy['test']:.2f}%"
    )


@app.command()
def demo(
    run_dir: Path = typer.Option(Path("runs/demo"), help="Where the demo run is written (resumed if present)."),
    steps: Optional[int] = typer.Option(None, help="Override the demo's number of optimizer steps."),
    workers: int = typer.Option(2, min=0, help=WORKERS_HELP),
    search_evaluations: int = typer.Option(24, "--search", min=0, help="Subnets the closing search evaluates (0: no search)."),
) -> None:
    """Train the demo supernet on the bundled digits set, print its subnets' accuracy, then search its Pareto front."""
    cfg = _with_overrides(demo_config(), run_dir, steps)
    where = f"{workers} Ray Train + DeepSpeed workers on a local Ray cluster" if workers else "this process"
    console.print(f"demo: {cfg.strategy.name} training of a {cfg.space.name} supernet on {cfg.data.dataset}, {where}")
    options = _distributed_options(workers, None, None, None, 3, False, None)
    resume = has_checkpoint(str(cfg.run_dir))
    outcome = run_training_job(cfg, options, resume=resume)
    assert outcome is not None  # only MPI/torchrun ranks other than 0 get None
    _report_job(outcome, f"demo supernet after {outcome.step} steps")
    if search_evaluations:
        _demo_search(Path(outcome.run_folder), search_evaluations)


def _demo_search(run: Path, evaluations: int) -> None:
    """A short NSGA-II search over the demo supernet's subnets (resumed, so a rerun evaluates nothing twice)."""
    settings = search_settings(name="demo", searcher="nsga2", evaluations=evaluations, objectives=["mflops"])
    console.print(f"demo search: {evaluations} subnets, NSGA-II proposing Ray Tune trials, accuracy vs MFLOPs")
    resume = (search_folder(run, settings.name) / SETTINGS_FILE).exists()
    outcome = run_search(load_trained(run), run, settings, resume=resume)
    print_front(outcome, tuple(settings.objectives), run)


def main() -> None:
    """Entry point: run the app, turning user errors into one line and exit code 2.

    Typer's standalone mode already reports usage errors (exit 2) and exits; only our
    own errors reach the handler.
    """
    try:
        app()
    except NasfleetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
