"""``nasfleet train`` and ``nasfleet demo``: a job config, a few shortcuts, dotted overrides."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.markup import escape

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.cli.common import console, demo_config, key_values, print_results

if TYPE_CHECKING:
    from nasfleet.orchestrator.config import JobConfig
    from nasfleet.orchestrator.launch.job import JobOutcome
    from nasfleet.orchestrator.evaluate.subnets import SubnetResult

WORKERS_HELP = (
    "Shortcut: 0 trains in this process (launch.kind=local); N ≥ 1 runs N Ray Train workers, each a DeepSpeed rank; "
    "MIN:MAX is elastic (any count in the range, global batch of MAX ranks kept by accumulation)."
)
DEEPSPEED_HELP = "DeepSpeed config file (JSON/YAML, see cluster_configs/deepspeed/), read into launch.deepspeed."
STORAGE_HELP = "Shortcut: keep the run under this shared folder or storage URI (s3://...): run_dir becomes STORAGE/<name>."
METRICS_HELP = "Serve Prometheus metrics on 127.0.0.1:PORT (in this process; with Ray, the local cluster's export port)."
LAUNCHER_HELP = (
    "Shortcut for launch.kind: local, ray, or mpi / torchrun (this process is one rank of a job started by "
    "`mpiexec -n N` or `torchrun --nproc-per-node N`)."
)
SET_HELP = "Override any config field with a dotted path, e.g. --set optim.steps=300 --set launch.threads=2; repeatable."
TUNE_HELP = "Tune the learning rate and distillation weight with a population (Ray Tune): pbt or pb2."


def parse_workers(text: str | int) -> tuple[int | None, int]:
    """``--workers``: ``N`` (fixed; 0 = this process) or ``MIN:MAX`` (elastic) as ``(min or None, max)``."""
    fewest, _, most = str(text).strip().partition(":")
    try:
        low, high = (int(fewest), int(most)) if most else (None, int(fewest))
    except ValueError:
        raise NasfleetError(f"--workers takes N or MIN:MAX, got {text!r}") from None
    if high < 0 or (low is not None and not 1 <= low <= high):
        raise NasfleetError(f"--workers takes N ≥ 0 or MIN:MAX with 1 ≤ MIN ≤ MAX, got {text!r}")
    return low, high


def shortcut_overrides(
    *, run_dir: Optional[str] = None, steps: Optional[int] = None, workers: Optional[int | str] = None,
    launcher: Optional[str] = None, ray_address: Optional[str] = None, max_failures: Optional[int] = None,
    gpu: Optional[bool] = None, metrics_port: Optional[int] = None, comm_calibration: Optional[Path] = None,
    comm_topology: Optional[str] = None, threads_per_worker: Optional[int] = None,
) -> list[str]:
    """The dotted overrides the command-line shortcuts stand for."""
    overrides: list[str] = []
    if run_dir is not None:
        overrides.append(f"run_dir={run_dir}")
    if steps is not None:
        overrides.append(f"optim.steps={steps}")
    if workers is not None:
        fewest, most = parse_workers(workers)
        if most == 0:
            overrides.append("launch.kind=local")
        else:
            overrides += ["launch.kind=ray", f"launch.workers={most}"]
            overrides.append(f"launch.min_workers={fewest}" if fewest is not None else "launch.min_workers=null")
    if launcher is not None:
        if launcher not in ("local", "ray", "mpi", "torchrun"):
            raise NasfleetError(f"unknown launcher {launcher!r} (expected local, ray, mpi or torchrun)")
        overrides.append(f"launch.kind={launcher}")
    for key, value in (
        ("launch.ray_address", ray_address), ("launch.max_failures", max_failures), ("launch.metrics_port", metrics_port),
        ("launch.comm.calibration", comm_calibration), ("launch.comm.topology", comm_topology),
        ("launch.threads", threads_per_worker),
    ):
        if value is not None:
            overrides.append(f"{key}={value}")
    if gpu:
        overrides.append("launch.gpu=true")
    return overrides


def job_from_command_line(
    base: JobConfig, overrides: list[str], strategy: Optional[str], strategy_params: dict[str, object],
    deepspeed: Optional[Path], storage_path: Optional[str],
) -> JobConfig:
    """``base`` with the shortcuts and ``--set`` overrides applied, validated once."""
    from nasfleet.orchestrator.config import config_from_dict, with_overrides
    from nasfleet.orchestrator.launch.validate import read_deepspeed_file
    from nasfleet.orchestrator.storage import join

    job = with_overrides(base, overrides)
    update: dict[str, object] = {}
    if strategy is not None or strategy_params:
        name = strategy or job.strategy.name
        # A new strategy starts from its own defaults; parameters given here override either.
        params = {} if name != job.strategy.name else dict(job.strategy.params)
        update["strategy"] = {"name": name, "params": {**params, **strategy_params}}
    data = job.model_dump(mode="json")
    if deepspeed is not None:
        data["launch"]["deepspeed"] = read_deepspeed_file(deepspeed)
    if storage_path is not None:
        data["run_dir"] = join(storage_path, job.run_name)
    if not update and deepspeed is None and storage_path is None:
        return job
    return config_from_dict({**data, **update}, "config with command-line overrides")


def is_text(job: JobConfig) -> bool:
    """Whether the job's examples are token sequences (a language model: perplexity is reported)."""
    from nasfleet.orchestrator.data import DATASETS

    return DATASETS.get(job.data.dataset).tokens


def report_job(outcome: JobOutcome, title: str, per_token: bool = False) -> None:
    print_results(outcome.results, title, perplexity=per_token)
    console.print(f"run folder: {outcome.run_folder}   results (Parquet): {outcome.results_folder}")


def train(
    config: Path = typer.Option(..., "--config", "-c", help="YAML job config (see orchestrator/configs/demo.yaml)."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    resume: bool = typer.Option(False, help="Continue the run in the config's run_dir from its last checkpoint."),
    run_dir: Optional[str] = typer.Option(None, help="Shortcut for --set run_dir=... (a folder or a storage URI)."),
    steps: Optional[int] = typer.Option(None, help="Shortcut for --set optim.steps=N."),
    strategy: Optional[str] = typer.Option(None, help="The training strategy (it starts from its own default parameters)."),
    strategy_param: list[str] = typer.Option([], help="Strategy parameter KEY=VALUE (e.g. num_random=3); repeatable."),
    progress: bool = typer.Option(True, help="Show a progress bar (training in this process)."),
    workers: Optional[str] = typer.Option(None, help=WORKERS_HELP),
    launcher: Optional[str] = typer.Option(None, help=LAUNCHER_HELP),
    deepspeed: Optional[Path] = typer.Option(None, help=DEEPSPEED_HELP),
    storage_path: Optional[str] = typer.Option(None, help=STORAGE_HELP),
    ray_address: Optional[str] = typer.Option(None, help="Shortcut for launch.ray_address (default $RAY_ADDRESS, else a local cluster)."),
    max_failures: Optional[int] = typer.Option(None, help="Shortcut for launch.max_failures (worker-group restarts)."),
    gpu: bool = typer.Option(False, help="Shortcut for launch.gpu: one GPU per rank, NCCL all-reduce."),
    threads_per_worker: Optional[int] = typer.Option(
        None, help="Shortcut for launch.threads: torch threads per rank (default 1); a Ray worker reserves as many CPUs.",
    ),
    metrics_port: Optional[int] = typer.Option(None, help=METRICS_HELP),
    comm_calibration: Optional[Path] = typer.Option(None, help="Shortcut for launch.comm.calibration (`nasfleet comm calibrate`)."),
    comm_topology: Optional[str] = typer.Option(None, help="Shortcut for launch.comm.topology: predict the all-reduce on this fabric."),
    tune: Optional[str] = typer.Option(None, "--tune", help=TUNE_HELP),
    population: Optional[int] = typer.Option(None, help="Shortcut for tune.population (default 4)."),
    tune_interval: Optional[int] = typer.Option(None, help="Shortcut for tune.interval_steps (default: steps/6)."),
) -> None:
    """Train a supernet as its job config says (here, on Ray, or as MPI/torchrun ranks), then evaluate its subnets."""
    from nasfleet.orchestrator.config import load_config

    overrides = shortcut_overrides(
        run_dir=run_dir, steps=steps, workers=workers, launcher=launcher, ray_address=ray_address,
        max_failures=max_failures, gpu=gpu, metrics_port=metrics_port, comm_calibration=comm_calibration,
        comm_topology=comm_topology, threads_per_worker=threads_per_worker,
    )
    overrides += [f"tune.{key}={value}" for key, value in
                  (("scheduler", tune), ("population", population), ("interval_steps", tune_interval)) if value is not None]
    job = job_from_command_line(
        load_config(config), [*overrides, *set_], strategy, key_values(strategy_param, "--strategy-param"),
        deepspeed, storage_path,
    )
    if job.tune is not None:
        if job.launch.kind != "local" or resume:
            raise NasfleetError("--tune trains single-process trials: it cannot be combined with Ray/MPI launch or --resume")
        _train_tuned(job)
        return
    from nasfleet.orchestrator.launch.job import run_job
    from nasfleet.orchestrator.metrics import prometheus_metrics

    endpoint = None
    if job.launch.metrics_port is not None and job.launch.kind == "local":
        endpoint = prometheus_metrics(job.launch.metrics_port)
        console.print(f"metrics: {endpoint.url}")
    outcome = run_job(job, resume=resume, show_progress=progress, metrics=endpoint.metrics if endpoint else None)
    if outcome is not None:
        report_job(outcome, f"{job.run_name} on {job.data.dataset} after {outcome.step} steps", is_text(job))


def _train_tuned(job: JobConfig) -> None:
    """A ``tune:`` section: a population of single-process trainings; the winner becomes the run."""
    from rich.table import Table

    from nasfleet.orchestrator.tuning import tune_training

    assert job.tune is not None
    settings = job.tune
    outcome = tune_training(
        job, settings.scheduler, settings.population, settings.interval_steps, job.launch.ray_address,
        settings.quantile_fraction, settings.resample_probability, settings.synchronous, settings.lr_factors,
        settings.distill_weight_range,
    )
    table = Table(title=f"{settings.scheduler.upper()}: {len(outcome.trials)} trials, {job.optim.steps} steps each")
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


def demo(
    run_dir: Optional[str] = typer.Option(None, help="Where the demo run is written, resumed if present (default: runs/demo, runs/demo-digits)."),
    data: str = typer.Option("fashion-mnist", help="fashion-mnist (fetched from Debian on first use) or digits (bundled, fastest)."),
    steps: Optional[int] = typer.Option(None, help="Override the demo's number of optimizer steps."),
    workers: int = typer.Option(2, help=WORKERS_HELP),
    search_evaluations: Optional[int] = typer.Option(None, "--search", help="Subnets the closing search evaluates (0: no search; default: the demo config's)."),
) -> None:
    """Train the demo supernet, print its subnets' accuracy, then search its Pareto front."""
    from nasfleet.orchestrator.config import with_overrides
    from nasfleet.orchestrator.launch.job import run_job
    from nasfleet.orchestrator.train.checkpoints import has_checkpoint

    if workers < 0 or (search_evaluations or 0) < 0:
        raise NasfleetError("--workers and --search must be 0 or more")
    base = _demo_job(data)
    assert base.search is not None, "every demo config has a search: section"
    if search_evaluations is None:
        search_evaluations = base.search.evaluations
    run_dir = run_dir or ("runs/demo" if base.data.dataset == "fashion-mnist" else f"runs/demo-{base.data.dataset}")
    job = with_overrides(base, shortcut_overrides(run_dir=run_dir, steps=steps, workers=workers))
    where = f"{workers} Ray Train + DeepSpeed workers on a local Ray cluster" if workers else "this process"
    console.print(f"demo: {job.strategy.name} training of a {job.space.name} supernet on {job.data.dataset}, {where}")
    outcome = run_job(job, resume=has_checkpoint(job.run_dir))
    assert outcome is not None  # only MPI/torchrun ranks other than 0 get None
    report_job(outcome, f"demo supernet on {job.data.dataset} after {outcome.step} steps")
    _print_reference_gaps(outcome.results, job.data.dataset)
    if search_evaluations:
        _demo_search(job, outcome.run_folder, search_evaluations)


def _print_reference_gaps(results: list[SubnetResult], dataset: str) -> None:
    """How far the demo's subnets are from the same subnets trained alone (the shipped reference)."""
    from nasfleet.orchestrator.reference import reference_gaps

    for result, reference in reference_gaps(results, dataset):
        here, alone = 100 * result.accuracy["test"], 100 * reference.test_accuracy
        console.print(
            f"{result.role}: {here:.2f}% test accuracy here, {alone:.2f}% trained alone "
            f"({reference.steps} steps, mean of {reference.seeds} seed{'s' if reference.seeds > 1 else ''}): "
            f"{here - alone:+.2f} points"
        )


def _demo_job(data: str) -> JobConfig:
    """The demo job for ``data``; Fashion-MNIST falls back to the bundled digits where it cannot be fetched."""
    from nasfleet.orchestrator.data import check_data
    from nasfleet.orchestrator.data_fetch import FetchError

    job = demo_config(data)
    try:
        check_data(job.data)  # fetches Fashion-MNIST into the data cache on first use
    except FetchError as exc:
        console.print(f"demo: {escape(str(exc))}; running on the bundled digits instead")
        return demo_config("digits")
    return job


def _demo_search(job: JobConfig, run: str, evaluations: int) -> None:
    """A short NSGA-II search over the demo supernet's subnets (resumed, so a rerun evaluates nothing twice)."""
    from nasfleet.orchestrator.cli.search import print_front
    from nasfleet.orchestrator.evaluate.trained import load_trained
    from nasfleet.orchestrator.subnet_search.experiment import SETTINGS_FILE, run_search, search_folder, search_settings
    from nasfleet.orchestrator.storage import is_file, join

    assert job.search is not None, "the demo config has a search: section"
    settings = search_settings(**{**job.search.model_dump(), "evaluations": evaluations})
    console.print(f"demo search: {evaluations} subnets, NSGA-II proposing Ray Tune trials, accuracy vs MFLOPs")
    resume = is_file(join(search_folder(run, settings.name), SETTINGS_FILE))
    outcome = run_search(load_trained(run), run, settings, resume=resume)
    print_front(outcome, tuple(settings.objectives), run)
