"""A corpus of user mistakes and faults: each is one ``error:`` line, exit code 2, and no file changed.

Every case runs the real command line in a process of its own. Most are forked from this
test process (:func:`nasfleet_forked`: torch and the CLI are imported once, so a case costs
a fork instead of an interpreter start); the disk-full fault, the search the search cases
damage, and one case per runner go through a fresh interpreter (``conftest.nasfleet``).
Where a run folder existed before a command, its files must be byte-identical after it.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from conftest import assert_one_line_error, nasfleet, nasfleet_forked, tiny_config, train, write_config

LOCK_FILE = ".nasfleet.lock"  # the run lock: an empty file the holder flocks, not run data
RAY_DOWN = ("--workers", "2", "--ray-address", "127.0.0.1:9")
"""Nothing listens on port 9: a case that slips through validation fails fast, and differently."""
TOPOLOGY = "leafspine:leaves=2,spines=2,hosts=2,gbps=100"
OTHER_SPACE = {
    "name": "mbconv", "stem_width": 4,
    "stages": [{"widths": [4, 6], "depths": [1], "kernels": [3], "expands": [2], "stride": 1}],
}


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (but the run lock) and its bytes."""
    if not folder.exists():
        return {}
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != LOCK_FILE
    }



# --------------------------------------------------------------------------- the runs the cases damage
@dataclass(frozen=True)
class Runs:
    root: Path
    trained: Path
    """A tiny run: 12 steps, checkpoints at 4, 8 and 12."""
    other_space: Path
    """A run of a different search space (another model's state_dict)."""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    root = tmp_path_factory.mktemp("reliability")
    train(tiny_config(root / "trained"))
    other = tiny_config(root / "other", space=OTHER_SPACE, optim={"steps": 4, "lr": 0.05, "warmup_steps": 1})
    train(other)
    return Runs(root, root / "trained", root / "other")


@pytest.fixture(scope="module")
def searched(runs: Runs) -> Path:
    """A copy of the trained run with a real two-subnet search (a local Ray, in a process of its own)."""
    run = runs.root / "searched"
    shutil.copytree(runs.trained, run)
    result = nasfleet("search", "--run", str(run), "--evaluations", "2", "--chunks", "1", "--concurrency", "1")
    assert result.returncode == 0, result.stderr
    return run


def checkpoint(run: Path, step: int = 12) -> Path:
    return run / f"checkpoint_{step:08d}"


# --------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    """A command, the files it reads, and what its one error line must say.

    ``{root}`` (the test's folder) and ``{run}`` (its copy of a run) are filled in, in the
    arguments and in text files.
    """

    id: str
    args: tuple[str, ...]
    fragments: tuple[str, ...]
    files: dict[str, bytes | str] = field(default_factory=dict)
    damage: Callable[[Path, Runs], None] | None = None
    """Changes the copy of the run before the command runs."""

    def prepare(self, root: Path, run: Path | None = None, runs: Runs | None = None) -> list[str]:
        def fill(text: str) -> str:
            return text.replace("{root}", str(root)).replace("{run}", str(run))

        for name, content in self.files.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content if isinstance(content, bytes) else fill(content).encode())
        if self.damage is not None:
            assert run is not None and runs is not None
            self.damage(run, runs)
        return [fill(arg) for arg in self.args]


def params(*cases: Case) -> list[object]:
    return [pytest.param(case, id=case.id) for case in cases]


def job_yaml(**changes: object) -> str:
    """The tiny job as YAML, its run in ``{root}/run``."""
    return yaml.safe_dump({**tiny_config(Path("{root}/run")).model_dump(mode="json"), **changes})


def idx_header(ndim: int, dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, 8, ndim]) + b"".join(d.to_bytes(4, "big") for d in dims)


MNIST_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
MNIST_JOB = job_yaml(data={"dataset": "mnist", "path": "{root}/mnist", "batch_size": 32})


def mnist_files(name: str, content: bytes) -> dict[str, bytes | str]:
    """An MNIST folder whose training images (read first) are ``content``; the other files are never read."""
    files: dict[str, bytes | str] = {f"mnist/{stem}": idx_header(1, (1,)) + b"\0" for stem in MNIST_STEMS[1:]}
    return {"c.yaml": MNIST_JOB, **files, f"mnist/{name}": content}


TRAIN = ("train", "-c", "{root}/c.yaml")
JOB_FILE = {"c.yaml": job_yaml()}

CONFIG_CASES = params(
    Case("non-utf8-yaml", TRAIN, ("not UTF-8",), {"c.yaml": b"optim: {steps: 10}\n\xff\xfe"}),
    Case("yaml-is-a-list", TRAIN, ("expected a mapping", "list"), {"c.yaml": "- a\n- b\n"}),
    Case("unknown-top-level-key", TRAIN, ("bogus", "Extra inputs"), {"c.yaml": job_yaml(bogus=1)}),
    Case("lr-inf", TRAIN, ("optim.lr", "finite"), {"c.yaml": "optim: {lr: .inf}\n"}),
    Case("steps-negative", TRAIN, ("optim.steps",), {"c.yaml": "optim: {steps: -3}\n"}),
    Case("steps-zero", TRAIN, ("optim.steps",), {"c.yaml": "optim: {steps: 0}\n"}),
    Case("config-missing", ("train", "-c", "{root}/nope.yaml"), ("does not exist",)),
    Case("flag-steps-negative", (*TRAIN, "--steps", "-3"), ("optim.steps",), JOB_FILE),
    Case("set-steps-abc", (*TRAIN, "--set", "optim.steps=abc"), ("optim.steps", "integer"), JOB_FILE),
    Case("set-without-value", (*TRAIN, "--set", "bogus"), ("--set 'bogus'",), JOB_FILE),
    Case("set-below-a-value", (*TRAIN, "--set", "seed.x=1"), ("'seed' is not a section",), JOB_FILE),
    Case("image-size-28-on-digits", TRAIN, ("space.image_size is 28", "has 8"),
         {"c.yaml": job_yaml(space={"name": "mbconv", "image_size": 28})}),
    Case("metrics-port-in-yaml", TRAIN, ("launch.metrics_port",), {"c.yaml": job_yaml(launch={"metrics_port": 99999})}),
    Case("metrics-port-flag", (*TRAIN, "--metrics-port", "99999"), ("launch.metrics_port",), JOB_FILE),
    Case("workers-negative", (*TRAIN, "--workers", "-1"), ("--workers",), JOB_FILE),
    Case("unknown-launcher", (*TRAIN, "--launcher", "slurm"), ("unknown launcher 'slurm'",), JOB_FILE),
    Case("steps-not-a-number", (*TRAIN, "--steps", "many"), ("Invalid value for '--steps'",), JOB_FILE),
    Case("comm-calibration-not-json", (*TRAIN, "--comm-calibration", "{root}/cal.json"), ("bad calibration file",),
         {**JOB_FILE, "cal.json": "nope"}),
    Case("comm-topology-inf", (*TRAIN, "--comm-topology", TOPOLOGY.replace("100", "inf")), ("gbps", "finite"), JOB_FILE),
    Case("mnist-idx-header-cut", (*TRAIN, "--no-progress"), ("truncated", "header"),
         mnist_files(MNIST_STEMS[0], idx_header(3, (5,)))),
    Case("mnist-gz-cut", (*TRAIN, "--no-progress"), ("cannot read IDX file",),
         mnist_files(f"{MNIST_STEMS[0]}.gz", gzip.compress(idx_header(3, (2, 28, 28)) + bytes(2 * 784))[:40])),
    Case("demo-steps-zero", ("demo", "--run-dir", "{root}/run", "--steps", "0"), ("optim.steps",)),
    Case("demo-workers-negative", ("demo", "--run-dir", "{root}/run", "--workers", "-1"), ("--workers",)),
    Case("profile-repeats-zero", ("profile", "-c", "{root}/c.yaml", "--out", "{root}/t.json", "--repeats", "0"),
         ("--repeats must be at least 1",), JOB_FILE),
    Case("profile-config-and-run", ("profile", "-c", "{root}/c.yaml", "--run", "{root}"), ("exactly one of",), JOB_FILE),
    Case("profile-out-under-a-file",
         ("profile", "-c", "{root}/c.yaml", "--out", "{root}/file/t.json", "--repeats", "1", "--check", "0"),
         ("cannot write", "file is a file, not a folder"), {**JOB_FILE, "file": "x"}),
    Case("profile-table-not-json", ("profile", "-c", "{root}/c.yaml", "--table", "{root}/t.json", "--check", "0"),
         ("latency table", "not valid JSON"), {**JOB_FILE, "t.json": '{"entries": 3'}),
)


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_bad_job_config_or_option(case: Case, tmp_path: Path) -> None:
    command = case.prepare(tmp_path)
    before = snapshot(tmp_path)
    assert_one_line_error(nasfleet_forked(*command, cwd=tmp_path), *case.fragments)
    after = snapshot(tmp_path)
    assert {name: after.get(name) for name in before} == before  # a data-set case may start a run folder, no more
    assert not (tmp_path / "run" / "checkpoint_00000004").exists()


# --------------------------------------------------------------------------- DeepSpeed settings
def deepspeed_case(id: str, content: bytes | str, *fragments: str, name: str = "ds.json") -> Case:
    return Case(id, (*TRAIN, *RAY_DOWN, "--deepspeed", f"{{root}}/{name}"), fragments, {**JOB_FILE, name: content})


DEEPSPEED_CASES = params(
    deepspeed_case("misspelt-key", '{"zero_optimisation": {"stage": 1}}',
                   "unknown key 'zero_optimisation'", "did you mean 'zero_optimization'"),
    deepspeed_case("removed-key", '{"elasticity": {"enabled": true}}', "unknown key 'elasticity'"),
    deepspeed_case("fp16-on-cpu", '{"fp16": {"enabled": true}}', "fp16, which needs GPUs"),
    deepspeed_case("zero-stage-7", '{"zero_optimization": {"stage": 7}}', "zero_optimization.stage must be 0, 1, 2 or 3"),
    deepspeed_case("zero-stage-bool", '{"zero_optimization": {"stage": true}}', "zero_optimization.stage"),
    deepspeed_case("zero-not-a-mapping", '{"zero_optimization": 3}', "zero_optimization must be a mapping"),
    deepspeed_case("fp16-not-a-mapping", '{"fp16": true}', "fp16 must be a mapping"),
    deepspeed_case("json-list", "[1, 2]", "must be a JSON object"),
    deepspeed_case("yaml-list", "- 1\n", "must be a JSON object", name="ds.yaml"),
    deepspeed_case("optimizer-block", '{"optimizer": {"type": "Adam", "params": {"lr": 0.001}}}', "'optimizer' block"),
    deepspeed_case("scheduler-block", '{"scheduler": {"type": "WarmupLR"}}', "'scheduler' block"),
    deepspeed_case("clipping-in-deepspeed", '{"gradient_clipping": 1.0}', "set optim.grad_clip_norm instead"),
    deepspeed_case("not-json", '{"fp16": ', "not valid JSON"),
    deepspeed_case("not-utf8", b'{"fp16": "\xff"}', "not UTF-8"),
    deepspeed_case("requires-tpu", '{"nasfleet": {"requires": "tpu"}}', "nasfleet.requires must be one of cpu, gpu, any"),
    deepspeed_case("nasfleet-extra-key", '{"nasfleet": {"gpus": 8}}', "'nasfleet' takes only 'requires' and 'hardware'"),
    *(deepspeed_case(f"shipped-{path.stem}-on-cpu", path.read_text(), "this DeepSpeed config is for NVIDIA GPUs",
                     "zero2_cpu.json")
      for path in sorted((Path(__file__).parents[2] / "cluster_configs" / "deepspeed").glob("*gpu*.json"))),
    Case("file-missing", (*TRAIN, *RAY_DOWN, "--deepspeed", "{root}/nope.json"), ("does not exist",), JOB_FILE),
    Case("misspelt-key-by-set", (*TRAIN, *RAY_DOWN, "--set", "launch.deepspeed={zero_optimisation: {stage: 1}}"),
         ("unknown key 'zero_optimisation'",), JOB_FILE),
)


@pytest.mark.parametrize("case", DEEPSPEED_CASES)
def test_deepspeed_settings_refused_on_the_driver(case: Case, tmp_path: Path) -> None:
    command = case.prepare(tmp_path)
    before = snapshot(tmp_path)
    assert_one_line_error(nasfleet_forked(*command, cwd=tmp_path), *case.fragments)
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "run").exists()  # refused before the run folder is made


SHIPPED_DEEPSPEED = sorted((Path(__file__).parents[2] / "cluster_configs" / "deepspeed").glob("*.json"))


@pytest.mark.parametrize(
    "settings",
    [pytest.param('{"bf16": {"enabled": true}}', id="bf16-on-cpu"),
     *(pytest.param(path.read_text(), id=path.stem) for path in SHIPPED_DEEPSPEED)],
)
def test_deepspeed_settings_that_pass_validation(settings: str, tmp_path: Path) -> None:
    """bf16 works on CPUs, and every shipped file is valid (with --gpu where the file says it is for GPUs):
    these get as far as joining the (absent) cluster."""
    (tmp_path / "ds.json").write_text(settings)
    write_config(tmp_path / "c.yaml", tmp_path / "run")
    gpu = ["--gpu"] if json.loads(settings).get("nasfleet", {}).get("requires") == "gpu" else []
    result = nasfleet_forked("train", "-c", str(tmp_path / "c.yaml"), *RAY_DOWN, *gpu, "--deepspeed", str(tmp_path / "ds.json"))
    assert_one_line_error(result, "cannot reach the Ray cluster at 127.0.0.1:9")
    assert not (tmp_path / "run").exists()


def test_the_deepspeed_key_list_is_what_deepspeed_reads() -> None:
    """DEEPSPEED_KEYS equals the keys the installed DeepSpeed's config parser looks up (less those it refuses)."""
    script = """
import json
from deepspeed.runtime import config as ds_config
seen = set()
class Recording(dict):
    def get(self, key, *default):
        seen.add(key)
        return super().get(key, *default)
    def __getitem__(self, key):
        seen.add(key)
        return super().__getitem__(key)
    def __contains__(self, key):
        seen.add(key)
        return super().__contains__(key)
    def keys(self):
        return Recording(self)
    def __copy__(self):
        return Recording(self)
ds_config.DeepSpeedConfig(Recording(train_micro_batch_size_per_gpu=1))
print(json.dumps(sorted((seen - set(ds_config._REMOVED_TOP_LEVEL_CONFIG_KEYS)) | {"data_parallel_size", "sequence_parallel_size"})))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    from nasfleet.orchestrator.launch.validate import DEEPSPEED_KEYS

    assert sorted(DEEPSPEED_KEYS) == json.loads(result.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- run folders and checkpoints
def truncate(relative: str, keep: int = 10) -> Callable[[Path, Runs], None]:
    def damage(run: Path, runs: Runs) -> None:
        path = checkpoint(run) / relative
        path.write_bytes(path.read_bytes()[:keep])

    return damage


def replace(relative: str, content: bytes | str) -> Callable[[Path, Runs], None]:
    def damage(run: Path, runs: Runs) -> None:
        path = checkpoint(run) / relative
        path.write_bytes(content if isinstance(content, bytes) else content.encode())

    return damage


def foreign_supernet(run: Path, runs: Runs) -> None:
    shutil.copyfile(checkpoint(runs.other_space, 4) / "supernet.pt", checkpoint(run) / "supernet.pt")


def not_a_state_dict(run: Path, runs: Runs) -> None:
    import torch

    torch.save([1, 2, 3], checkpoint(run) / "supernet.pt")


def empty_folder(run: Path, runs: Runs) -> None:
    (run.parent / "empty").mkdir()


RESUME = ("train", "-c", "{run}/config.yaml", "--run-dir", "{run}", "--resume", "--no-progress")
EVALUATE = ("evaluate", "--run", "{run}", "--random", "0")
A_FILE = {"file": "not a folder"}

RUN_CASES = params(
    Case("train-run-dir-is-a-file", ("train", "-c", "{run}/config.yaml", "--run-dir", "{root}/file"), ("is a file",), A_FILE),
    Case("train-run-dir-under-a-file", ("train", "-c", "{run}/config.yaml", "--run-dir", "{root}/file/run"),
         ("file is a file, not a folder",), A_FILE),
    Case("demo-run-dir-is-a-file", ("demo", "--run-dir", "{root}/file", "--workers", "0", "--search", "0"), ("is a file",),
         A_FILE),
    Case("demo-run-dir-under-a-file", ("demo", "--run-dir", "{root}/file/run", "--workers", "0", "--search", "0"),
         ("file is a file, not a folder",), A_FILE),
    Case("train-over-a-run", ("train", "-c", "{run}/config.yaml", "--run-dir", "{run}"), ("already holds a run",)),
    Case("resume-nothing", ("train", "-c", "{run}/config.yaml", "--run-dir", "{root}/empty", "--resume"),
         ("cannot resume: no checkpoint",), damage=empty_folder),
    Case("resume-other-threads", (*RESUME, "--steps", "16", "--set", "launch.threads=2"), ("launch.threads",)),
    Case("resume-other-space", (*RESUME, "--steps", "16", "--set", f"space={json.dumps(OTHER_SPACE)}"),
         ("supernet.pt does not match this job's supernet",)),
    Case("resume-on-unreachable-ray", (*RESUME, "--steps", "16", *RAY_DOWN), ("cannot reach the Ray cluster",)),
    Case("resume-rank-state-cut", (*RESUME, "--steps", "16"), ("rank_0.pt is corrupted",),
         damage=truncate("ranks/rank_0.pt", 100)),
    Case("resume-optimizer-cut", (*RESUME, "--steps", "16"), ("optimizer.pt is corrupted",),
         damage=truncate("optimizer/optimizer.pt", 100)),
    Case("evaluate-no-checkpoint", ("evaluate", "--run", "{root}/empty"), ("holds no trained supernet",),
         damage=empty_folder),
    Case("evaluate-run-is-a-file", ("evaluate", "--run", "{root}/file"), ("is a file",), A_FILE),
    Case("evaluate-random-negative", ("evaluate", "--run", "{run}", "--random", "-2"), ("--random",)),
    Case("evaluate-unknown-split", (*EVALUATE, "--split", "bogus"), ("unknown split 'bogus'",)),
    Case("evaluate-foreign-supernet", EVALUATE, ("supernet.pt does not match", "of another shape"), damage=foreign_supernet),
    Case("evaluate-supernet-not-a-state-dict", EVALUATE, ("not a supernet state_dict",), damage=not_a_state_dict),
    Case("evaluate-supernet-cut", EVALUATE, ("supernet.pt is corrupted",), damage=truncate("supernet.pt", 2048)),
    Case("evaluate-meta-cut", EVALUATE, ("meta.json is corrupted",), damage=truncate("meta.json")),
    Case("evaluate-meta-fields-missing", EVALUATE, ("meta.json is corrupted",), damage=replace("meta.json", '{"step": 12}')),
    Case("evaluate-meta-not-utf8", EVALUATE, ("meta.json is not UTF-8",), damage=replace("meta.json", b"\xff\xfe")),
    Case("evaluate-checkpoint-config-malformed", EVALUATE, ("malformed config.yaml",),
         damage=replace("config.yaml", "optim: {steps: 10\nseed: [")),
    Case("evaluate-checkpoint-config-a-list", EVALUATE, ("config.yaml", "expected a mapping"),
         damage=replace("config.yaml", "- 1\n")),
    Case("evaluate-checkpoint-config-invalid", EVALUATE, ("config.yaml", "optim.steps"),
         damage=replace("config.yaml", "optim: {steps: -1}\n")),
    Case("profile-run-without-checkpoint", ("profile", "--run", "{root}/empty"), ("holds no trained supernet",),
         damage=empty_folder),
    Case("search-run-without-checkpoint", ("search", "--run", "{root}/empty"), ("holds no trained supernet",),
         damage=empty_folder),
)


@pytest.mark.parametrize("case", RUN_CASES)
def test_bad_run_folder_or_checkpoint(case: Case, runs: Runs, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs.trained, run)
    command = case.prepare(tmp_path, run, runs)
    before = snapshot(tmp_path)
    assert_one_line_error(nasfleet_forked(*command, cwd=tmp_path), *case.fragments)
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------- export
EXPORT = ("export", "--run", "{run}")

EXPORT_CASES = params(
    Case("out-is-a-file", (*EXPORT, "--out", "{root}/file"), ("--out", "is a file"), A_FILE),
    Case("out-under-a-file", (*EXPORT, "--out", "{root}/file/model"), ("cannot write", "file is a file, not a folder"),
         A_FILE),
    Case("arch-malformed-json", (*EXPORT, "--arch", '{"space": ', "--out", "{root}/out"), ("not valid JSON",)),
    Case("arch-not-an-object", (*EXPORT, "--arch", "[1, 2]", "--out", "{root}/out"), ("must be an object",)),
    Case("arch-file-missing", (*EXPORT, "--arch", "@{root}/missing.json", "--out", "{root}/out"), ("does not exist",)),
    Case("arch-file-not-utf8", (*EXPORT, "--arch", "@{root}/a.json", "--out", "{root}/out"),
         ("architecture file", "not UTF-8"), {"a.json": b"\xff"}),
    Case("pareto-zero", (*EXPORT, "--pareto", "0", "--out", "{root}/out"), ("--pareto counts from 1",)),
    Case("pareto-without-search", (*EXPORT, "--pareto", "1", "--out", "{root}/out"), ("holds no Pareto front",)),
    Case("arch-and-pareto", (*EXPORT, "--arch", "largest", "--pareto", "1", "--out", "{root}/out"),
         ("either --arch or --pareto",)),
)


@pytest.mark.parametrize("case", EXPORT_CASES)
def test_bad_export(case: Case, runs: Runs, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs.trained, run)
    command = case.prepare(tmp_path, run, runs)
    before = snapshot(tmp_path)
    assert_one_line_error(nasfleet_forked(*command, cwd=tmp_path), *case.fragments)
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- search
SEARCH = ("search", "--run", "{run}", "--evaluations", "2", "--chunks", "1", "--concurrency", "1")

SEARCH_SETTINGS_CASES = params(
    Case("unknown-scheduler", (*SEARCH, "--scheduler", "nope"), ("unknown scheduler 'nope'",)),
    Case("unknown-searcher", (*SEARCH, "--searcher", "nope"), ("unknown searcher 'nope'",)),
    Case("unknown-objective", (*SEARCH, "--objective", "nope"), ("unknown objective 'nope'",)),
    Case("unknown-searcher-param", (*SEARCH, "--searcher-param", "bogus=1"), ("bogus",)),
    Case("constraint-malformed", (*SEARCH, "--constraint", "mflops<<3"), ("'mflops<<3' is not of the form",)),
    Case("constraint-infeasible", (*SEARCH, "--constraint", "mflops<=0.00001"), ("no subnet satisfies",)),
    Case("evaluations-zero", ("search", "--run", "{run}", "--evaluations", "0"), ("evaluations",)),
    Case("name-with-a-slash", (*SEARCH, "--name", "a/b"), ("search name 'a/b'",)),
    Case("latency-without-table", (*SEARCH, "--objective", "latency_ms"), ("needs a latency table",)),
    Case("latency-table-not-json", (*SEARCH, "--objective", "latency_ms", "--latency-table", "{root}/t.json"),
         ("not valid JSON",), {"t.json": "{"}),
    Case("resume-no-search", (*SEARCH, "--resume"), ("cannot resume", "holds no search")),
)


@pytest.mark.parametrize("case", SEARCH_SETTINGS_CASES)
def test_bad_search_settings(case: Case, runs: Runs, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs.trained, run)
    command = case.prepare(tmp_path, run, runs)
    before = snapshot(tmp_path)
    assert_one_line_error(nasfleet_forked(*command, cwd=tmp_path), *case.fragments)
    assert snapshot(tmp_path) == before
    assert not (run / "search").exists()  # refused before the search folder is made


def search_damage(relative: str, content: bytes | str | None = None, keep: int = 100) -> Callable[[Path, Runs], None]:
    """Replace (or cut to ``keep`` bytes) a file of the search, ``*`` matching the first Parquet part."""

    def damage(run: Path, runs: Runs) -> None:
        path = sorted((run / "search" / "search").glob(relative))[0]
        data = content if content is not None else path.read_bytes()[:keep]
        path.write_bytes(data if isinstance(data, bytes) else data.encode())

    return damage


SEARCHED_CASES = params(
    Case("resume-settings-cut", (*SEARCH, "--resume"), ("settings.json is corrupted",),
         damage=search_damage("settings.json", '{"name": "sea')),
    Case("resume-settings-not-utf8", (*SEARCH, "--resume"), ("settings.json is not UTF-8",),
         damage=search_damage("settings.json", b"\xff")),
    Case("resume-settings-unknown-scheduler", (*SEARCH, "--resume"), ("unknown scheduler 'nope'",),
         damage=search_damage("settings.json", '{"name": "search", "scheduler": "nope"}')),
    Case("resume-evaluations-cut", (*SEARCH, "--evaluations", "3", "--resume"),
         ("evaluations", "unreadable", "move the damaged"), damage=search_damage("evaluations/part-*.parquet")),
    Case("search-again-without-resume", SEARCH, ("already holds a search",)),
    Case("export-pareto-out-of-range", (*EXPORT, "--pareto", "99", "--out", "{root}/out"), ("--pareto 99 is out of range",)),
    Case("export-pareto-json-cut", (*EXPORT, "--pareto", "1", "--out", "{root}/out"), ("pareto.json is not a Pareto front",),
         damage=search_damage("pareto.json", '{"front": [')),
)


@pytest.mark.parametrize("case", SEARCHED_CASES)
def test_damaged_search(case: Case, runs: Runs, searched: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(searched, run)
    command = case.prepare(tmp_path, run, runs)
    before = snapshot(tmp_path)
    assert_one_line_error(nasfleet_forked(*command, cwd=tmp_path), *case.fragments)
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------- comm
SIMULATE = ("comm", "simulate", "-t", TOPOLOGY)
COMPARE = ("comm", "compare", "-t", TOPOLOGY, "--sizes", "1MiB", "--seeds", "1", "--algorithms", "ring")
SWEEP_FILE = f"topology: '{TOPOLOGY}'\nsizes: [1MiB]\nseeds: 1\nroutings: [ecmp]\noutput: '{{root}}/out'\n"

COMM_CASES = params(
    Case("compare-output-is-a-file", (*COMPARE, "--output", "{root}/file"), ("--output", "is a file"), A_FILE),
    Case("compare-output-under-a-file", (*COMPARE, "--output", "{root}/file/out"), ("cannot write", "Not a directory"),
         A_FILE),
    Case("gbps-inf", ("comm", "simulate", "-t", TOPOLOGY.replace("100", "inf")), ("gbps", "finite")),
    Case("latency-nan", ("comm", "simulate", "-t", f"{TOPOLOGY},latency_ns=nan"), ("latency_ns", "finite")),
    Case("topology-yaml-inf", ("comm", "simulate", "-t", "{root}/t.yaml"), ("gbps", "finite"),
         {"t.yaml": "kind: leafspine\nleaves: 2\nspines: 2\nhosts: 2\ngbps: .inf\n"}),
    Case("topology-yaml-not-utf8", ("comm", "simulate", "-t", "{root}/t.yaml"), ("not UTF-8",), {"t.yaml": b"\xff"}),
    Case("routing-ecmp-huge", (*SIMULATE, "--routing", "ecmp-99999999999"), ("unknown routing", "from 1 to 1024")),
    Case("size-inf", (*SIMULATE, "--size", "inf"), ("bad size 'inf'",)),
    Case("calibration-not-utf8", (*SIMULATE, "--calibration", "{root}/cal.json"), ("not UTF-8",), {"cal.json": b"\xff"}),
    Case("calibration-infinite", (*SIMULATE, "--calibration", "{root}/cal.json"), ("alpha_s", "finite"),
         {"cal.json": '{"alpha_s": Infinity, "beta_s_per_byte": 1e-9, "ranks": 2}'}),
    Case("sweep-not-utf8", ("comm", "sweep", "{root}/s.yaml"), ("not UTF-8",), {"s.yaml": b"\xff"}),
    Case("sweep-a-list", ("comm", "sweep", "{root}/s.yaml"), ("expected a mapping",), {"s.yaml": "- 1\n"}),
    Case("sweep-output-is-a-file", ("comm", "sweep", "{root}/s.yaml"), ("output", "is a file"),
         {"s.yaml": SWEEP_FILE.replace("/out", "/file"), **A_FILE}),
)


@pytest.mark.parametrize("case", COMM_CASES)
def test_bad_comm_input(case: Case, tmp_path: Path) -> None:
    command = case.prepare(tmp_path)
    before = snapshot(tmp_path)
    assert_one_line_error(nasfleet_forked(*command, cwd=tmp_path), *case.fragments)
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------- the runner, against a fresh interpreter
@pytest.mark.parametrize("args", [("comm", "simulate", "-t", TOPOLOGY, "--routing", "ecmp-0"), ("demo", "--steps", "0")])
def test_a_forked_cli_answers_as_a_fresh_one(args: tuple[str, ...], tmp_path: Path) -> None:
    forked, fresh = nasfleet_forked(*args, cwd=tmp_path), nasfleet(*args, cwd=tmp_path)
    assert (forked.returncode, forked.stderr) == (fresh.returncode, fresh.stderr)
    assert_one_line_error(fresh)


# --------------------------------------------------------------------------- a full disk during a checkpoint
@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (needs root with CAP_SYS_ADMIN, as in CI's container)."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip() or mounted.returncode}): needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_during_a_checkpoint_is_one_line_and_resume_continues(small_filesystem: Path, tmp_path: Path) -> None:
    run = small_filesystem / "run"
    config = tiny_config(run)
    job = write_config(tmp_path / "job.yaml", run)
    train(config, until_step=8)  # checkpoints 4 and 8 fit
    before = snapshot(run)
    stats = os.statvfs(small_filesystem)
    filler = small_filesystem / "filler"
    filler.write_bytes(bytes(stats.f_bavail * stats.f_frsize - 32 * 1024))  # room for the log, not a checkpoint

    result = nasfleet("train", "--config", str(job), "--resume", "--no-progress")
    assert_one_line_error(result, "checkpoint_00000012", "No space left on device", "--resume")
    after = snapshot(run)
    log = "metrics.jsonl"
    assert {name: after.get(name) for name in before if name != log} == {n: d for n, d in before.items() if n != log}
    assert after[log].startswith(before[log])  # at most the line of the step whose checkpoint failed is added
    assert not checkpoint(run).exists()

    filler.unlink()
    result = nasfleet("train", "--config", str(job), "--resume", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert (checkpoint(run) / "meta.json").is_file()
    steps = [json.loads(line)["step"] for line in (run / log).read_text().splitlines()]
    assert steps == [4, 8, 12]
