"""Deep Model Assembling against end-to-end training of the same network, on Fashion-MNIST.

For each seed, through ``nasfleet.orchestrator.assembling`` (every phase a job of the one trainer):

1. assembling with a shared meta model, K modules incubated on K Ray actors at once;
2. the ablation: the same with a meta model of its own per module (``shared_meta=False``);
3. end-to-end training of the target network for as many steps as assembling's training compute
   (forward-backward multiply-accumulates, the meta model and every incubation counted);
4. end-to-end training for as many steps as fit in assembling's wall-clock time (its steps per
   second measured in run 3);
5. the same K incubation jobs again on one actor, one after another: the speed-up of K actors.

The target is the reference config's largest subnet (``orchestrator/configs/fashion-mnist-mbconv.yaml``:
10 blocks, 8.4 MFLOPs), trained for a few hundred steps of 64 images: a fraction of an epoch.
Each seed's results are kept in ``--workdir/seed-S/result.json``, so a rerun only re-reports.

    OMP_NUM_THREADS=1 python benchmarks/assembling.py [--seeds 0,1] [--modules 2] [--meta-steps 150] \\
        [--incubation-steps 250] [--finetune-steps 100] [--workdir runs/assembling-bench]
    OMP_NUM_THREADS=1 python benchmarks/assembling.py --speedup-pairs 3 [--speedup-steps 150]   # after the above
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from _common import write_results
from nasfleet.orchestrator.assembling import (
    AssemblySettings,
    assemble,
    phase_job,
    run_incubations,
    train_end_to_end,
)
from nasfleet.orchestrator.config import load_config
from nasfleet.orchestrator.launch.ray_cluster import connect_ray

CONFIG = Path(__file__).resolve().parent.parent / "orchestrator" / "configs" / "fashion-mnist-mbconv.yaml"
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and 95 % t half-width over seeds (0 for one seed)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, T95.get(len(values) - 1, 1.96) * statistics.stdev(values) / len(values) ** 0.5


def run_seed(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    folder = seed_dir(args, {"seed": seed})
    cached = folder / "result.json"
    if cached.exists():
        return json.loads(cached.read_text())
    if folder.exists():
        shutil.rmtree(folder)  # an interrupted seed starts over: its timings must come from one go
    connect_ray(None)
    overrides = [f"seed={seed}", f"run_dir={folder / 'assembly'}", "launch.threads=1"]
    base = load_config(CONFIG, overrides)
    settings = AssemblySettings(args.modules, args.modules, args.meta_steps, args.incubation_steps, args.finetune_steps)
    record = assemble(base, settings)
    ablation = assemble(
        load_config(CONFIG, [f"seed={seed}", f"run_dir={folder / 'ablation'}", "launch.threads=1"]),
        AssemblySettings(**{**asdict(settings), "shared_meta": False}),
    )
    total_macs = sum(record.train_macs.values())
    compute_steps = round(total_macs / record.target_step_macs)
    same_compute = train_end_to_end(base, compute_steps, folder / "e2e-compute", args.modules)
    seconds_per_step = same_compute["wall_s"] / compute_steps
    wall_steps = max(1, round(record.wall_s["total"] / seconds_per_step))
    same_wall = train_end_to_end(base, wall_steps, folder / "e2e-wall", args.modules)

    # The same incubation jobs, on one actor: the time K actors at once saved.
    weights = Path(base.run_dir) / "weights"
    jobs = [
        phase_job(base, "incubate", args.incubation_steps, folder / f"serial-incubate-{k}", args.modules, k,
                  weights / f"incubate-{k}.pt")
        for k in range(args.modules)
    ]
    started = time.perf_counter()
    serial = run_incubations(jobs, actors=1)
    serial_s = time.perf_counter() - started
    result = {
        "seed": seed,
        "load_average_1min_at_end": os.getloadavg()[0],
        "assembly": asdict(record),
        "ablation": asdict(ablation),
        "e2e_same_compute": same_compute,
        "e2e_same_wall": same_wall,
        "serial_incubation_s": serial_s,
        "serial_intervals": [asdict(i) for i in serial],
    }
    cached.write_text(json.dumps(result, indent=1) + "\n")
    return result


def overlap_s(intervals: list[dict[str, float]]) -> float:
    """Seconds during which every interval was running."""
    return max(0.0, min(i["end_s"] for i in intervals) - max(i["start_s"] for i in intervals))


def ideal_speedup(intervals: list[dict[str, float]]) -> float:
    """What K actors at once would gain on idle cores: the jobs' serial durations, summed, over the longest."""
    durations = [i["end_s"] - i["start_s"] for i in intervals]
    return sum(durations) / max(durations)


def seconds_per_step(run: Path) -> float:
    """A run's mean compute time per training step, from its metrics log: how loaded the cores were."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return statistics.fmean(r["timing"]["compute_s_per_step"] for r in records)


def seed_dir(args: argparse.Namespace, result: dict[str, Any]) -> Path:
    return args.workdir / f"seed-{result['seed']}"


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    def row(name: str, values: list[float], scale: float = 100.0, unit: str = "%") -> str:
        mean, half = interval([v * scale for v in values])
        per_seed = ", ".join(f"{v * scale:.2f}" for v in values)
        return f"| {name} | {mean:.2f}{unit} ± {half:.2f} | {per_seed} |"

    def acc(key: str, network: str | None = None) -> list[float]:
        if network is None:
            return [r[key]["accuracy"]["test"] for r in results]
        return [r[key]["accuracy"][network]["test"] for r in results]

    seeds = [r["seed"] for r in results]
    first = results[0]
    compute_steps = [r["e2e_same_compute"]["steps"] for r in results]
    wall_steps = [r["e2e_same_wall"]["steps"] for r in results]
    lines = [
        f"# Deep Model Assembling vs end to end — Fashion-MNIST, K = {args.modules}, seeds {seeds}",
        "",
        f"Target: the reference space's largest subnet, {first['assembly']['target_step_macs'] / 3 / 64 / 1e6:.2f} "
        f"M multiply-accumulates per image forward. Assembling: meta model {args.meta_steps} steps, each module "
        f"{args.incubation_steps} incubation steps on its own Ray actor (all at once), fine-tune "
        f"{args.finetune_steps} steps; batch 64. End to end at the same compute: {compute_steps} steps; at the "
        f"same wall clock: {wall_steps} steps. Mean ± 95 % t half-width over {len(seeds)} seeds "
        f"(t = {T95.get(len(seeds) - 1, 0):.2f} for {len(seeds)} seeds); test accuracy on the 10,000 test images.",
        "",
        "| network | test accuracy | per seed |",
        "|---|---|---|",
        row("meta model (shallow, K stand-ins)", acc("assembly", "meta")),
        row("assembled, before fine-tune (shared meta model)", acc("assembly", "assembled")),
        row("assembled, before fine-tune (ablation: a meta model per module)", acc("ablation", "assembled")),
        row("assembled + fine-tune (shared meta model)", acc("assembly", "finetuned")),
        row("assembled + fine-tune (ablation)", acc("ablation", "finetuned")),
        row("end to end, same compute", acc("e2e_same_compute")),
        row("end to end, same wall clock", acc("e2e_same_wall")),
        "",
        "| difference (points) | mean ± 95 % | per seed |",
        "|---|---|---|",
        row("assembled + fine-tune − end to end (same compute)",
            [a - b for a, b in zip(acc("assembly", "finetuned"), acc("e2e_same_compute"))], unit=""),
        row("assembled + fine-tune − end to end (same wall clock)",
            [a - b for a, b in zip(acc("assembly", "finetuned"), acc("e2e_same_wall"))], unit=""),
        row("assembled before fine-tune: shared − ablation",
            [a - b for a, b in zip(acc("assembly", "assembled"), acc("ablation", "assembled"))], unit=""),
        "",
        "| time and compute | mean ± 95 % | per seed |",
        "|---|---|---|",
        row("assembling wall clock (s)", [r["assembly"]["wall_s"]["total"] for r in results], 1.0, " s"),
        row("end to end, same compute: wall clock (s)", [r["e2e_same_compute"]["wall_s"] for r in results], 1.0, " s"),
        row("incubation wall clock, K actors at once (s)",
            [r["assembly"]["wall_s"]["incubation"] for r in results], 1.0, " s"),
        row("incubation wall clock, one actor (s)", [r["serial_incubation_s"] for r in results], 1.0, " s"),
        row("speed-up of K actors at once",
            [r["serial_incubation_s"] / r["assembly"]["wall_s"]["incubation"] for r in results], 1.0, "×"),
        row("ideal speed-up on idle cores (serial durations: sum / longest)",
            [ideal_speedup(r["serial_intervals"]) for r in results], 1.0, "×"),
        row("incubation overlap (all K running)", [overlap_s(r["assembly"]["intervals"]) for r in results], 1.0, " s"),
        row("module 0 compute s/step, K actors at once",
            [seconds_per_step(seed_dir(args, r) / "assembly" / "incubate-0") for r in results], 1.0, " s"),
        row("module 0 compute s/step, one actor",
            [seconds_per_step(seed_dir(args, r) / "serial-incubate-0") for r in results], 1.0, " s"),
        row("1-min load average at the end of the seed", [r["load_average_1min_at_end"] for r in results], 1.0, ""),
        row("assembling compute / one end-to-end step",
            [sum(r["assembly"]["train_macs"].values()) / r["assembly"]["target_step_macs"] for r in results], 1.0, ""),
    ]
    return "\n".join(lines) + "\n"


def speedup_pairs(args: argparse.Namespace) -> None:
    """``--speedup-pairs N``: K actors at once and one actor, alternating N times on seed 0's incubation jobs.

    Alternating pairs see about the same load from the machine's other jobs, so their ratio says
    more about the parallelism itself than one parallel run and one serial run minutes apart.
    """
    connect_ray(None)
    assembly = seed_dir(args, {"seed": 0}) / "assembly"
    base = load_config(CONFIG, ["seed=0", f"run_dir={assembly}", "launch.threads=1"])
    pairs = []
    for pair in range(args.speedup_pairs):
        times = {}
        for actors in (args.modules, 1):
            folder = args.workdir / "speedup" / f"pair-{pair}-actors-{actors}"
            shutil.rmtree(folder, ignore_errors=True)
            jobs = [
                phase_job(base, "incubate", args.speedup_steps, folder / f"incubate-{k}", args.modules, k,
                          assembly / "weights" / f"incubate-{k}.pt")
                for k in range(args.modules)
            ]
            started = time.perf_counter()
            intervals = run_incubations(jobs, actors)
            times[actors] = {"wall_s": time.perf_counter() - started, "intervals": [asdict(i) for i in intervals],
                             "load_average_1min": os.getloadavg()[0]}
        pairs.append(times)
        parallel_s, serial_s = times[args.modules]["wall_s"], times[1]["wall_s"]
        print(f"pair {pair}: {args.modules} actors {parallel_s:.1f} s, one actor {serial_s:.1f} s", flush=True)
    ratios = [p[1]["wall_s"] / p[args.modules]["wall_s"] for p in pairs]
    ideal = [ideal_speedup(p[1]["intervals"]) for p in pairs]
    mean, half = interval(ratios)
    ideal_mean, ideal_half = interval(ideal)
    loads = ", ".join(f"{p[args.modules]['load_average_1min']:.1f}/{p[1]['load_average_1min']:.1f}" for p in pairs)
    markdown = "\n".join([
        f"# Speed-up of {args.modules} incubation actors at once — {args.speedup_pairs} alternating pairs",
        "",
        f"Seed 0's {args.modules} incubation jobs, {args.speedup_steps} steps each, on {args.modules} Ray actors at "
        "once, then on one actor one after another; repeated. Mean ± 95 % t half-width over the pairs.",
        "",
        "| quantity | mean ± 95 % | per pair |",
        "|---|---|---|",
        f"| speed-up (one actor's wall clock / {args.modules} actors') | {mean:.2f}× ± {half:.2f} | "
        + ", ".join(f"{r:.2f}" for r in ratios) + " |",
        f"| ceiling on idle cores (serial job times: sum / longest) | {ideal_mean:.2f}× ± {ideal_half:.2f} | "
        + ", ".join(f"{r:.2f}" for r in ideal) + " |",
        f"| 1-min load average after the parallel / serial run | | {loads} |",
        "",
    ])
    write_results(f"{args.name}_speedup", {"args": {k: str(v) for k, v in vars(args).items()}, "pairs": pairs},
                  markdown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--modules", type=int, default=2)
    parser.add_argument("--meta-steps", type=int, default=150)
    parser.add_argument("--incubation-steps", type=int, default=250)
    parser.add_argument("--finetune-steps", type=int, default=100)
    parser.add_argument("--workdir", type=Path, default=Path("runs/assembling-bench"))
    parser.add_argument("--name", default="assembling")
    parser.add_argument("--speedup-pairs", type=int, default=0,
                        help="Only measure the speed-up: this many alternating parallel/serial incubation runs.")
    parser.add_argument("--speedup-steps", type=int, default=150)
    args = parser.parse_args()
    args.workdir = args.workdir.absolute()
    if args.speedup_pairs:
        speedup_pairs(args)
        return
    results = [run_seed(int(s), args) for s in args.seeds.split(",")]
    write_results(args.name, {"args": {k: str(v) for k, v in vars(args).items()}, "seeds": results},
                  report(results, args))


if __name__ == "__main__":
    main()
