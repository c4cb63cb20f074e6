"""Does gradient clipping keep the language-model job from stalling or diverging?

Without clipping, lm.yaml's recipe (sandwich, Nesterov SGD at lr 0.3, momentum 0.9) sometimes sat at
the unigram plateau for over a thousand steps and, on one of three seeds, went to NaN; this
measurement is why lm.yaml now clips at 1.0. Each seed trains that recipe twice, with
``optim.grad_clip_norm`` off and at ``--clip``, and reports the test loss (nats per byte) of the
smallest and largest subnets beside the unigram baseline. Finished runs in ``--workdir`` are reused
(an interrupted one starts over); ``--only`` runs one (seed, clip) pair, so pairs can run as
parallel processes.

    python benchmarks/lm_grad_clip.py --seeds 0,1,2 --steps 1200 --clip 1.0
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from _common import lm_job_data, trained_run, warmup_share, write_results
from nasfleet.orchestrator.config import JobConfig, config_from_dict
from nasfleet.orchestrator.data import load_data
from nasfleet.orchestrator.evaluate import evaluate_standard_subnets


def job(run_dir: Path, seed: int, steps: int, clip: float | None) -> JobConfig:
    data = lm_job_data()
    optim = {**data["optim"], "steps": steps, "warmup_steps": warmup_share(data["optim"], steps), "grad_clip_norm": clip}
    data.update(run_dir=str(run_dir), seed=seed, optim=optim, checkpoint_every_steps=steps, log_every_steps=max(1, steps // 12))
    return config_from_dict(data)


def test_nats(config: JobConfig) -> dict[str, float]:
    """Test loss of the smallest and largest subnets (NaN where the run diverged)."""
    run, _ = trained_run(config)
    results = evaluate_standard_subnets(run, splits=("test",), random_subnets=0)
    return {r.role: float(r.loss_nats["test"]) for r in results}


def label(clip: float | None) -> str:
    return "none" if clip is None else f"{clip:g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--clip", type=float, default=1.0, help="optim.grad_clip_norm of the clipped runs")
    parser.add_argument("--workdir", default="runs/lm-grad-clip-bench")
    parser.add_argument("--only", default=None, help="SEED:CLIP (CLIP 'none' or a number): train that run and stop")
    parser.add_argument("--name", default="lm_grad_clip")
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = Path(args.workdir)

    def config(seed: int, clip: float | None) -> JobConfig:
        return job(root / f"seed{seed}-clip{label(clip)}-steps{args.steps}", seed, args.steps, clip)

    if args.only:
        seed, clip = args.only.split(":")
        test_nats(config(int(seed), None if clip == "none" else float(clip)))
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = [
        {"seed": seed, "clip": label(clip), **test_nats(config(seed, clip))}
        for seed in seeds for clip in (None, args.clip)
    ]
    unigram = load_data(config(seeds[0], None).data).unigram_nats("test")
    lines = [
        f"# lm.yaml's recipe with and without gradient clipping ({args.steps} steps, test nats per byte, lower is better)",
        "",
        f"Unigram baseline (a model that ignores its input): {unigram:.3f}. NaN: the run diverged.",
        "",
        "| seed | grad_clip_norm | smallest | largest |",
        "|---:|---|---:|---:|",
    ]
    lines += [f"| {r['seed']} | {r['clip']} | {r['smallest']:.3f} | {r['largest']:.3f} |" for r in rows]
    below = {c: sum(1 for r in rows if r["clip"] == c and r["largest"] < unigram - 0.1) for c in ("none", label(args.clip))}
    lines += ["", "Seeds whose largest subnet ends over 0.1 nats below unigram: "
              + ", ".join(f"clip {c}: {n} of {len(seeds)}" for c, n in below.items()) + "."]
    clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows]
    write_results(args.name, {"args": vars(args), "unigram_test_nats": unigram, "rows": clean}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
