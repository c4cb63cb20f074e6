"""Mixture-of-Supernets against a plain weight-shared supernet (sandwich) at the same steps.

For each task (the language model of orchestrator/configs/lm.yaml on 'fortunes', and the digits
job of orchestrator/configs/demo.yaml) and each seed, three kinds of training through the normal
trainer, with the job's recipe at ``--steps`` optimizer steps:

- ``sandwich``: the job's plain weight-shared supernet (largest, smallest, random; in-place distillation);
- ``mixture-of-supernets``: the same sampling on routed expert mixtures (2 experts, layer-wise);
- ``mos-rescaled``: the same with ``rescale: true`` (experts at 1/sqrt(E), mixed with gain sqrt(E)),
  which gives evenly mixed experts the plain supernet's SGD step size (a plain mixture halves it);
- ``stand-alone``: each of three subnets (smallest, middle, largest) trained alone, as a
  one-architecture space under the ``uniform`` strategy (one pass a step), same steps and seed.

"middle" is the subnet with every gene at its middle index (the middle width, depth and layer
option). Each subnet is scored on the test split: loss in nats per token (LM) or accuracy
(digits), BN re-estimated where there is BN. The gap is inherited minus stand-alone quality.

Training-time overhead is measured side by side in one process: the forward and backward of the
same sandwich step (same subnets, same batch) on the plain supernet and on the mixture, alternated
``--timing-pairs`` times; also the wall time of each whole training.

    OMP_NUM_THREADS=1 python benchmarks/mixture_of_supernets.py [--steps lm=1200,digits=600] [--seeds lm=0:1:2,digits=0:1] \\
        [--tasks lm,digits] [--arms sandwich,mixture-of-supernets,mos-rescaled] [--workdir runs/mos-bench] [--timing-pairs 30] [--name mixture_of_supernets]

Finished runs in ``--workdir`` are reused (resume is exact), so a rerun only re-scores.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import shortened_job, trained_run, write_results
from nasfleet.orchestrator.config import JobConfig, load_config
from nasfleet.orchestrator.data import BatchStream, load_data
from nasfleet.orchestrator.evaluate import evaluate_arch
from nasfleet.orchestrator.train import job_space, job_strategy
from nasfleet.strategies import TaskOutputs
from nasfleet.supernet import Arch, SearchSpace

ROOT = Path(__file__).resolve().parent.parent
TASKS = {"lm": ROOT / "orchestrator/configs/lm.yaml", "digits": ROOT / "orchestrator/configs/demo.yaml"}
ROLES = ("smallest", "middle", "largest")
MOS = "mixture-of-supernets"
RESCALED = "mos-rescaled"
ARMS = {"sandwich": ("sandwich", {}), MOS: (MOS, {}), RESCALED: (MOS, {"rescale": True})}
"""Label: (strategy, parameters beyond the job's sandwich ones)."""
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and t-based 95 % half-width over seeds (NaN half-width for one value)."""
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, float("nan")
    return mean, T975.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))


def middle(space: SearchSpace) -> Arch:
    return space.from_genes([size // 2 for size in space.gene_sizes()])


def subnets(space: SearchSpace) -> dict[str, Arch]:
    return {"smallest": space.smallest(), "middle": middle(space), "largest": space.largest()}


def one_arch_space(space_cfg: dict[str, Any], arch: Arch) -> dict[str, Any]:
    """The job's space narrowed to ``arch`` alone (every layer of a group must make the same choice)."""
    cfg = dict(space_cfg)
    if cfg["name"] == "gpt":
        (layer,) = set(arch.layers)  # type: ignore[attr-defined]
        cfg.update(embed_dims=[arch.embed_dim], depths=[arch.depth], heads=[layer.heads],  # type: ignore[attr-defined]
                   mlp_ratios=[layer.mlp_ratio])
        return cfg
    stages = []
    for spec, stage in zip(cfg["stages"], arch.stages):  # type: ignore[attr-defined]
        (block,) = set(stage.blocks)
        stages.append({**spec, "widths": [stage.width], "depths": [stage.depth], "kernels": [block.kernel],
                       "expands": [block.expand]})
    cfg["stages"] = stages
    return cfg


def score(run: Any, arch: Arch, text: bool) -> float:
    result = evaluate_arch(run, arch, ("test",))
    return result.loss_nats["test"] if text else result.accuracy["test"]


def step_time_pairs(base: JobConfig, params: dict[str, Any], pairs: int) -> list[tuple[float, float]]:
    """(plain, mixture) seconds of one sandwich step's forwards and backwards, alternated on one batch."""
    plain_job = shortened_job(base, Path("unused"), 0, 100, "sandwich", params)
    mos_job = shortened_job(base, Path("unused"), 0, 100, MOS, params)
    data = load_data(base.data)
    images, labels = BatchStream(data.train, base.data.batch_size, 0).batch(0)
    runners = []
    for config in (plain_job, mos_job):
        strategy = job_strategy(config)
        torch.manual_seed(0)
        runners.append((strategy, strategy.build_model().train()))
    tasks = runners[0][0].subnets_for_step(0, np.random.default_rng(0))

    def one_step(strategy: Any, model: torch.nn.Module) -> float:
        started = time.perf_counter()
        earlier: dict[str, TaskOutputs] = {}
        for task in tasks:
            outputs = TaskOutputs(model(images, task.arch))
            (task.weight * strategy.loss(task, outputs, labels, earlier)).backward()
            earlier[task.role] = outputs.detached()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - started

    for strategy, model in runners:  # warm-up
        one_step(strategy, model)
    return [(one_step(*runners[0]), one_step(*runners[1])) for _ in range(pairs)]


def run_task(name: str, steps: int, seeds: list[int], workdir: Path, pairs: int, arms: list[str]) -> dict[str, Any]:
    base = load_config(TASKS[name])
    text = base.space.name == "gpt"
    space = job_space(base)
    archs = subnets(space)
    params = dict(base.strategy.params)
    rows: dict[str, dict[str, list[float]]] = {k: {r: [] for r in ROLES} for k in [*arms, "stand-alone"]}
    walls: dict[str, list[float]] = {arm: [] for arm in arms}
    for seed in seeds:
        for arm in arms:
            strategy, extra = ARMS[arm]
            config = shortened_job(base, workdir / f"{name}-{arm}-s{seed}", seed, steps, strategy, {**params, **extra})
            run, wall_s = trained_run(config)
            walls[arm].append(wall_s)
            for role, arch in archs.items():
                rows[arm][role].append(score(run, arch, text))
            print(f"{name} seed {seed} {arm}: {[round(rows[arm][r][-1], 4) for r in ROLES]} ({wall_s:.0f} s)")
        for role, arch in archs.items():
            narrow = one_arch_space(base.space.model_dump(mode="json"), arch)
            run, _ = trained_run(shortened_job(base, workdir / f"{name}-alone-{role}-s{seed}", seed, steps, "uniform", {}, space=narrow))
            rows["stand-alone"][role].append(score(run, run.space.largest(), text))
        print(f"{name} seed {seed} stand-alone: {[round(rows['stand-alone'][r][-1], 4) for r in ROLES]}")
    timing = step_time_pairs(base, params, pairs)
    ratios = [m / p for p, m in timing]
    return {
        "task": name, "metric": "test loss, nats per byte" if text else "test accuracy", "steps": steps,
        "seeds": seeds, "archs": {r: a.describe() for r, a in archs.items()},
        "mflops": {r: space.flops(a) / 1e6 for r, a in archs.items()},
        "arms": arms, "scores": rows, "train_wall_s": walls,
        "step_s": {"sandwich": statistics.median(p for p, _ in timing), MOS: statistics.median(m for _, m in timing)},
        "step_ratio": interval(ratios), "timing_pairs": pairs,
    }


def markdown(results: list[dict[str, Any]]) -> str:
    lines = ["# Mixture-of-Supernets vs plain weight sharing (sandwich), same steps", ""]
    for res in results:
        lower_better = "loss" in res["metric"]
        scale = 1.0 if lower_better else 100.0
        unit = "nats" if lower_better else "points"
        lines += [f"## {res['task']}: {res['metric']}, {res['steps']} steps, seeds {res['seeds']}", "",
                  "Mean ± t-based 95 % half-width over seeds (n − 1 degrees of freedom: 12.7 × the standard error "
                  "for 2 seeds, 4.3 × for 3; wide by construction). Gap = inherited − stand-alone.", "",
                  "| subnet | MFLOPs | arm | inherited | arm − sandwich (paired by seed) | stand-alone | gap |",
                  "|---|---|---|---|---|---|---|"]
        s = res["scores"]
        cell = lambda v: "{:.3f} ± {:.3f}".format(*interval(list(v)))  # noqa: E731
        for role in ROLES:
            plain, alone = (np.array(s[k][role]) * scale for k in ("sandwich", "stand-alone"))
            for arm in res["arms"]:
                v = np.array(s[arm][role]) * scale
                diff = "—" if arm == "sandwich" else cell(v - plain)
                lines.append(f"| {role} `{res['archs'][role]}` | {res['mflops'][role]:.2f} | {arm} | {cell(v)} | "
                             f"{diff} | {cell(alone)} | {cell(v - alone)} |")
        ratio, half = res["step_ratio"]
        walls = res["train_wall_s"]
        lines += ["", f"Values in {unit}. Step time (forward + backward of one sandwich step, same subnets and batch, "
                  f"{res['timing_pairs']} alternated pairs): sandwich {1e3 * res['step_s']['sandwich']:.1f} ms, "
                  f"MoS {1e3 * res['step_s'][MOS]:.1f} ms, ratio {ratio:.3f} ± {half:.3f}. Whole trainings: "
                  + ", ".join(f"{arm} {np.mean(w):.0f} s" for arm, w in walls.items()) + " (mean over seeds, "
                  "run one after the other on a shared machine).", ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", default="lm=1200,digits=600", help="TASK=STEPS,... or one number for all")
    parser.add_argument("--seeds", default="0,1", help="0,1 for all tasks, or TASK=0:1:2,... per task")
    parser.add_argument("--tasks", default="lm,digits")
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs/mos-bench")
    parser.add_argument("--timing-pairs", type=int, default=30)
    parser.add_argument("--arms", default=",".join(ARMS), help=f"of {', '.join(ARMS)}; sandwich is always run")
    parser.add_argument("--name", default="mixture_of_supernets", help="results file name under benchmarks/results/")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tasks = args.tasks.split(",")
    if "=" in args.steps:
        steps = {k: int(v) for k, v in (item.split("=") for item in args.steps.split(","))}
    else:
        steps = dict.fromkeys(tasks, int(args.steps))
    if "=" in args.seeds:
        seeds = {k: [int(x) for x in v.split(":")] for k, v in (item.split("=") for item in args.seeds.split(","))}
    else:
        seeds = dict.fromkeys(tasks, [int(x) for x in args.seeds.split(",")])
    arms = ["sandwich", *(a for a in args.arms.split(",") if a != "sandwich")]
    results = [run_task(t, steps[t], seeds[t], args.workdir, args.timing_pairs, arms) for t in tasks]
    write_results(args.name, {"results": results}, markdown(results))


if __name__ == "__main__":
    main()
