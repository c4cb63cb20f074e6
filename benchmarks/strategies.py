"""Every registered training strategy on one task at one budget (same steps, same batches).

The same comparison as ``nasfleet bench strategies``, plus the summary in
benchmarks/results/strategies.{json,md}; unlike the command, this script writes the page into
docs/: docs/strategies.md and docs/img/strategies.png. Stand-alone trainings of the fixed subnet
set are cached in benchmarks/results/standalone/, so a rerun (e.g. after a new strategy is
registered) only trains the supernets; ``--reuse-runs`` also keeps finished supernet runs of the
same job in --workdir, so only evaluation is repeated.

On the reference task, the ground truth is benchmarks/ground_truth.py's (24 subnets, 2 seeds,
its own 2,400-step recipe; build it first), read from its cache and never trained here:

    python benchmarks/strategies.py --config orchestrator/configs/fashion-mnist-mbconv.yaml \
        --subnets 24 --nested 24 --val-images 2000 --ground-truth benchmarks/results/ground_truth \
        --steps 1000 --workers 2 --reuse-runs

``--prepare`` trains and scores every strategy's supernet into --workdir and stops, without the
ground truth: the hours of supernet work can be done while the ground truth is still being built,
and the run above with --reuse-runs then only reads them back. Runs are named by their steps, so
the same-compute view (``--budget passes``; ``--budget both`` puts it beside the same-steps one on
the page) reuses the same-steps runs it shares.
Each finished strategy's share (run record and scored subnets, a few MB, not its weights) is kept
in --results (benchmarks/results/strategy_runs/), committed as it grows like the ground truth: a
later --reuse-runs, here or on another machine, reads it back instead of training again.

    OMP_NUM_THREADS=1 python benchmarks/strategies.py [--steps 1200] [--strategies uniform,sandwich] [--reuse-runs]
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from _common import RESULTS, write_results
from nasfleet.orchestrator.cli.common import demo_config
from nasfleet.orchestrator.config import JobConfig, load_config
from nasfleet.research.comparison import DEFAULT_SUBNETS, GroundTruth, plan_comparison
from nasfleet.research.report import comparison_markdown
from nasfleet.research.standalone import StandaloneCache
from nasfleet.research.strategy_bench import VIEWS, parse_strategies, run_strategy_bench
from nasfleet.research.strategy_runs import run_strategies

DOCS = Path(__file__).resolve().parent.parent / "docs"


def prepare(base: JobConfig, args: argparse.Namespace, steps: int) -> None:
    plan = plan_comparison(
        base, parse_strategies(args.strategies), steps, args.seed, num_subnets=args.subnets,
        nested_submodels=args.nested, work_dir=args.workdir, budget=args.budget,
    )
    for done in run_strategies(plan.tasks(reuse=True, val_images=args.val_images, results=args.results), args.workers):
        state = "reused" if done.run.reused else f"trained in {done.run.train_wall_s:.0f} s"
        print(f"{done.strategy}: {done.run.step} steps, {state}; {len(done.fixed)} + {len(done.nested)} "
              f"subnets scored, {done.run.run_dir}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", default=None, help="comma-separated; default: all registered")
    parser.add_argument("--steps", type=int, default=None, help="default: the demo config's steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--subnets", type=int, default=DEFAULT_SUBNETS)
    parser.add_argument("--nested", type=int, default=100)
    parser.add_argument("--workdir", type=Path, default=Path("runs/strategies"))
    parser.add_argument("--reuse-runs", action="store_true", help="re-evaluate finished runs of the same job")
    parser.add_argument("--config", type=Path, default=None, help="job YAML; default: the built-in digits demo")
    parser.add_argument("--ground-truth", type=Path, default=None, help="a benchmarks/ground_truth.py cache")
    parser.add_argument("--ground-truth-steps", type=int, default=2400)
    parser.add_argument("--ground-truth-seeds", type=int, default=2)
    parser.add_argument("--budget", choices=VIEWS, default="steps",
                        help="the same optimizer steps each, --steps subnet passes each (same compute), or both views")
    parser.add_argument("--workers", type=int, default=1, help="strategies trained at once, one process each")
    parser.add_argument("--results", type=Path, default=RESULTS / "strategy_runs",
                        help="finished strategy shares (run record and scores), committed as they grow")
    parser.add_argument("--val-images", type=int, default=None,
                        help="score the validation estimates on a seeded subset of this many images")
    parser.add_argument("--prepare", action="store_true",
                        help="only train and score the supernets (kept in --workdir); no ground truth, no page")
    args = parser.parse_args()

    base = load_config(args.config) if args.config else demo_config()
    steps = args.steps or base.optim.steps
    command = (
        f"python benchmarks/strategies.py --steps {steps} --seed {args.seed} "
        f"--subnets {args.subnets} --nested {args.nested}"
    )
    if args.config:
        command += f" --config {args.config}"
    if args.budget != "steps":
        command += f" --budget {args.budget}"
    truth = None
    if args.ground_truth:
        truth = GroundTruth(StandaloneCache(args.ground_truth), args.ground_truth_steps, args.ground_truth_seeds)
        command += (f" --ground-truth {args.ground_truth} --ground-truth-steps {args.ground_truth_steps}"
                    f" --ground-truth-seeds {args.ground_truth_seeds}")
    if args.strategies:
        command += f" --strategies {args.strategies}"
    if args.reuse_runs:
        command += " --reuse-runs"
    if args.val_images:
        command += f" --val-images {args.val_images}"
    if args.prepare:
        prepare(base, args, steps)
        return
    comparisons = run_strategy_bench(
        base, parse_strategies(args.strategies), steps, args.seed, args.subnets, args.nested,
        DOCS, RESULTS / "standalone", RESULTS, args.workdir, command, args.reuse_runs, truth, args.budget,
        args.workers, args.val_images, args.results,
    )
    for comparison in comparisons:
        payload = {
            "budget": comparison.budget,
            "steps": steps,
            "seed": args.seed,
            "batch_size": comparison.batch_size,
            "threads": comparison.threads,
            "summaries": [s.row() for s in comparison.summaries],
            "bootstrap_resamples": comparison.bootstrap_resamples,
            "standalone": [
                {**{k: v for k, v in asdict(r).items() if k != "test_scores"}, "arch": r.arch.describe()}
                for r in comparison.standalone
            ],
        }
        same_steps = comparison.budget == "steps"
        unit = "optimizer steps" if same_steps else "subnet passes"
        header = f"# Training strategies, {base.data.dataset}, {steps} {unit} each, seed {args.seed}\n\n"
        name = "strategies" if same_steps or len(comparisons) == 1 else "strategies_same_compute"
        write_results(name, payload, header + comparison_markdown(comparison))


if __name__ == "__main__":
    main()
