"""ExSSNeT against SupSup and plain fine-tuning on task sequences: average accuracy and forgetting.

Every run is one ``nasfleet continual`` job (``orchestrator/configs/continual.yaml``: a 2-stage
mbconv network at one fixed architecture), trained task by task through the trainer and
evaluated after each task on that task's test images (task id given: each task has its own mask
and head). Sequences: split Fashion-MNIST (5 two-class tasks), permuted Fashion-MNIST (5 ten-class
tasks, task 0 unpermuted), and Fashion-MNIST pairs followed by the 8×8 digits resized to 28×28 as
a second domain (6 tasks, data set ``fashion-digits``). Methods: ExSSNeT and SupSup at a sparse and
a dense mask density, fine-tuning without masks, and on the first sequence at the sparse density
three more: ExSSNeT without exclusivity (the ablation), ExSSNeT without KKT, and ExSSNeT with twice
the steps per task, so that its mask learns for as many steps as SupSup's before its weights train
(at equal steps ExSSNeT's mask gets half of them). Intervals are t-based 95 % over seeds (with 2 seeds, ± 12.7 × the standard
error: wide). Finished runs in --workdir are reused.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/continual.py --seeds 0,1 --densities 0.05,0.5 \\
        --steps-per-task 80 --test-images 1000 --workdir runs/continual-bench
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from scipy import stats

from _common import write_results
from nasfleet.orchestrator.config import config_from_dict
from nasfleet.orchestrator.continual import RESULT_FILE, ContinualResult, run_continual
from nasfleet.orchestrator.evaluate import load_trained
from nasfleet.strategies.continual import SupermaskSupernet, parse_tasks

CONFIG = Path(__file__).resolve().parents[1] / "orchestrator" / "configs" / "continual.yaml"
SEQUENCES = {
    "split Fashion-MNIST": ("fashion-mnist", "split:5"),
    "permuted Fashion-MNIST": ("fashion-mnist", "permuted:5"),
    "Fashion-MNIST then digits": ("fashion-digits", "classes:0-1,2-3,4-5,6-7,8-9,10-19"),
}


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its t-based 95 % interval (0 for one value)."""
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, 0.0
    return mean, float(stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / np.sqrt(len(values)))


def run_one(workdir: Path, sequence: str, method: str, density: float, seed: int, exclusive: bool,
            steps_per_task: int, test_images: int, base_steps: int, kkt: bool = True) -> dict[str, Any]:
    dataset, tasks = SEQUENCES[sequence]
    name = f"{dataset}-{tasks.split(':')[0]}-{method}{'' if exclusive else '-shared'}-d{density:g}-s{seed}"
    name += f"-t{steps_per_task}" if steps_per_task != base_steps else ""
    name += "" if kkt else "-nokkt"
    run_dir = workdir / name
    raw = yaml.safe_load(CONFIG.read_text())
    count = len(parse_tasks(tasks, 20 if dataset == "fashion-digits" else 10))
    raw.update(run_dir=str(run_dir), seed=seed, checkpoint_every_steps=steps_per_task)
    raw["data"]["dataset"] = dataset
    raw["optim"]["steps"] = count * steps_per_task
    raw["strategy"]["params"] = {"tasks": tasks, "method": method, "density": density, "exclusive": exclusive,
                                 "steps_per_task": steps_per_task, "kkt": kkt}
    job = config_from_dict(raw, name)
    started = time.perf_counter()
    saved = run_dir / RESULT_FILE
    if saved.is_file():
        data = json.loads(saved.read_text())
        result = ContinualResult(**{k: v for k, v in data.items() if k not in ("average_accuracy", "forgetting")})
    else:
        result = run_continual(job, images_per_task=test_images)
    wrapper = load_trained(run_dir).model
    assert isinstance(wrapper, SupermaskSupernet)
    with torch.no_grad():  # the last SupSup mask is never fixed: the masks as the tasks use them
        kept = float(torch.cat([wrapper.mask(t) for t in range(len(wrapper.tasks))]).mean()) if wrapper.masked else 1.0
    return {
        "sequence": sequence, "method": method, "exclusive": exclusive, "density": density, "seed": seed,
        "steps_per_task": steps_per_task, "doubled": steps_per_task != base_steps, "kkt": kkt,
        "kept_fraction": kept, "average_accuracy": result.average_accuracy, "forgetting": result.forgetting,
        "accuracy": result.accuracy, "wall_s": time.perf_counter() - started,
    }


def label(row: dict[str, Any]) -> str:
    if row["method"] == "finetune":
        return "fine-tuning (no masks)"
    name = {"exssnet": "ExSSNeT", "supsup": "SupSup"}[row["method"]]
    name += "" if row["exclusive"] else " without exclusivity"
    name += " (2× steps: SupSup's mask steps, then as many weight steps)" if row.get("doubled") else ""
    name += " without KKT" if row["method"] == "exssnet" and not row.get("kkt", True) else ""
    return f"{name}, density {row['density']:g}"


def markdown(rows: list[dict[str, Any]], seeds: list[int], args: argparse.Namespace) -> str:
    lines = [
        f"# Continual learning: ExSSNeT, SupSup, fine-tuning ({len(seeds)} seeds: {', '.join(map(str, seeds))})",
        "",
        f"{args.steps_per_task} steps per task (batch 64), test accuracy on up to {args.test_images} test images per "
        "task, task id given. Mean ± t-based 95 % interval over seeds; `kept` is the fraction of masked weights a "
        "task's mask keeps (per-unit top-k, at least one input per unit).",
        "",
        "| sequence | method | kept | average accuracy | forgetting |",
        "|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["sequence"], label(row)), []).append(row)
    for (sequence, name), members in groups.items():
        acc, acc_hw = interval([100 * r["average_accuracy"] for r in members])
        forget, forget_hw = interval([100 * r["forgetting"] for r in members])
        kept = np.mean([r["kept_fraction"] for r in members])
        lines.append(f"| {sequence} | {name} | {kept:.3f} | {acc:.1f} ± {acc_hw:.1f} | {forget:.2f} ± {forget_hw:.2f} |")
    lines += ["", "Paired ExSSNeT − SupSup difference in average accuracy (points, same seed):", ""]
    for sequence in SEQUENCES:
        for density in args.densities:
            pairs: dict[int, dict[str, float]] = {}
            for row in rows:
                same = row["sequence"] == sequence and row["density"] == density
                if same and row["exclusive"] and not row["doubled"] and row["kkt"]:
                    pairs.setdefault(row["seed"], {})[row["method"]] = row["average_accuracy"]
            diffs = [100 * (p["exssnet"] - p["supsup"]) for p in pairs.values() if {"exssnet", "supsup"} <= set(p)]
            if diffs:
                mean, hw = interval(diffs)
                lines.append(f"- {sequence}, density {density:g}: {mean:+.1f} ± {hw:.1f} ({len(diffs)} seeds)")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--densities", default="0.05,0.5")
    parser.add_argument("--steps-per-task", type=int, default=80)
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--sequences", default=",".join(SEQUENCES), help="comma-separated names from SEQUENCES")
    parser.add_argument("--workdir", type=Path, default=Path("runs/continual-bench"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    args.densities = [float(d) for d in args.densities.split(",")]
    plan = [("finetune", 1.0, True)] + [(m, d, True) for d in args.densities for m in ("exssnet", "supsup")]
    rows = []
    for sequence in args.sequences.split(","):
        for seed in seeds:
            # The ablation on the first sequence only, to keep the study within half an hour of CPU.
            first = sequence == args.sequences.split(",")[0]
            ablations = [("exssnet", args.densities[0], False, 1, True), ("exssnet", args.densities[0], True, 1, False)]
            # ExSSNeT's mask gets half of a task's steps; this variant gives it SupSup's whole budget first.
            doubled = [("exssnet", args.densities[0], True, 2, True)]
            extra = ablations + doubled if first else []
            for method, density, exclusive, scale, kkt in [(*p, 1, True) for p in plan] + extra:
                row = run_one(args.workdir, sequence, method, density, seed, exclusive, scale * args.steps_per_task,
                              args.test_images, args.steps_per_task, kkt)
                print(f"{sequence:28s} {label(row):42s} seed {seed}: avg {row['average_accuracy']:.4f} "
                      f"forgetting {row['forgetting']:+.4f} ({row['wall_s']:.0f} s)", flush=True)
                rows.append(row)
    payload = {"settings": {"seeds": seeds, "densities": args.densities, "steps_per_task": args.steps_per_task,
                            "test_images": args.test_images, "sequences": args.sequences.split(",")}, "runs": rows}
    write_results("continual", payload, markdown(rows, seeds, args))


if __name__ == "__main__":
    main()
