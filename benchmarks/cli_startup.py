"""How long the CLI takes to answer: ``nasfleet --help``, ``nasfleet comm --help`` and a small ``comm simulate``.

Targets (issues #10 and #16, on a quiet machine): ``nasfleet --help`` under 0.5 s and
``nasfleet comm simulate ...`` under 1 s. Start-up time depends on the machine more than
on anything else, so the same run also times two floors every command pays: a bare
interpreter (``python -c pass``) and importing numpy and scipy.sparse, which the
simulator cannot do without. Each command runs ``--repeats`` times, interleaved, and the
median wall time is reported. Each command also reports which of torch, Ray and
DeepSpeed it imported (none should be).

Writes ``benchmarks/results/cli_startup.{json,md}``. Deliberately imports nothing heavy
itself (not ``_common``, which imports torch).

    python benchmarks/cli_startup.py [--repeats 9]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
BIN = Path(sys.executable).parent
HEAVY_PROBE = (  # the console script's own two lines, then what they left in sys.modules
    "import sys\n"
    "sys.argv = {argv!r}\n"
    "from nasfleet.orchestrator.cli import main\n"
    "try:\n"
    "    main()\n"
    "except SystemExit:\n"
    "    pass\n"
    "print(sorted({{'torch', 'ray', 'deepspeed'}} & {{m.split('.')[0] for m in sys.modules}}), file=sys.stderr)\n"
)

SIMULATE = ["comm", "simulate", "--topology", "leafspine_16x16_400g", "--collective", "allreduce", "--size", "1GiB",
            "--routing", "split", "--json"]
COMMANDS: dict[str, list[str]] = {
    "python -c pass (floor)": [sys.executable, "-c", "pass"],
    "import numpy, scipy.sparse (floor)": [sys.executable, "-c", "import numpy, scipy.sparse"],
    "nasfleet --help": [str(BIN / "nasfleet"), "--help"],
    "nasfleet comm --help": [str(BIN / "nasfleet"), "comm", "--help"],
    "nasfleet comm simulate (16x16, ring all-reduce, --json)": [str(BIN / "nasfleet"), *SIMULATE],
}
TARGETS_S = {"nasfleet --help": 0.5, "nasfleet comm simulate (16x16, ring all-reduce, --json)": 1.0}
def probed_argv(label: str) -> list[str] | None:
    """The argv a ``nasfleet`` command runs with, for the heavy-import check (None for the floors)."""
    command = COMMANDS[label]
    return ["nasfleet", *command[1:]] if Path(command[0]).name == "nasfleet" else None


def wall_s(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    return time.perf_counter() - started


def heavy_imports(argv: list[str]) -> list[str]:
    probe = HEAVY_PROBE.format(argv=argv)
    done = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    return json.loads(done.stderr.strip().splitlines()[-1].replace("'", '"'))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    for command in COMMANDS.values():  # warm the file cache once
        wall_s(command)
    times: dict[str, list[float]] = {label: [] for label in COMMANDS}
    for _ in range(args.repeats):
        for label, command in COMMANDS.items():
            times[label].append(wall_s(command))
    rows = []
    for label, samples in times.items():
        argv = probed_argv(label)
        rows.append({
            "command": label,
            "median_s": statistics.median(samples),
            "min_s": min(samples),
            "max_s": max(samples),
            "target_s": TARGETS_S.get(label),
            "heavy_imports": heavy_imports(argv) if argv else None,
        })
    lines = [
        f"# CLI start-up, median of {args.repeats} interleaved runs",
        "",
        "| command | median (s) | min (s) | max (s) | target (s) | imports torch / Ray / DeepSpeed |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        heavy = "–" if r["heavy_imports"] is None else (", ".join(r["heavy_imports"]) or "none")
        target = f"{r['target_s']:.1f}" if r["target_s"] else "–"
        lines.append(f"| {r['command']} | {r['median_s']:.3f} | {r['min_s']:.3f} | {r['max_s']:.3f} | {target} | {heavy} |")
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(),
               "processor": platform.processor() or platform.machine()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cli_startup.json").write_text(json.dumps({"machine": machine, "repeats": args.repeats, "rows": rows},
                                                         indent=2) + "\n")
    (RESULTS / "cli_startup.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
