"""The files under cluster_configs/ parse and pass the validators of the tools that read them."""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "cluster_configs"
DEEPSPEED = sorted((CONFIGS / "deepspeed").glob("*.json"))
LAUNCHER = sorted((CONFIGS / "ray").glob("*.yaml"))
RAYJOB = CONFIGS / "kuberay" / "rayjob.yaml"


def load(path: Path) -> Any:
    return json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())


OURS = sorted(p for folder in ("ray", "kuberay", "deepspeed") for p in (CONFIGS / folder).iterdir() if p.is_file())


@pytest.mark.parametrize("path", OURS, ids=lambda p: p.relative_to(CONFIGS).as_posix())
def test_every_file_parses_to_a_mapping(path: Path) -> None:
    assert isinstance(load(path), dict)


def test_the_expected_files_exist() -> None:
    names = {p.relative_to(CONFIGS).as_posix() for p in [*OURS, *CONFIGS.glob("README.md")]}
    assert {
        "README.md", "ray/cluster-gpu-aws.yaml", "ray/local.yaml", "kuberay/rayjob.yaml",
        "deepspeed/zero0_cpu.json", "deepspeed/zero1.json", "deepspeed/zero2_cpu.json", "deepspeed/zero2_gpu_bf16.json",
        "deepspeed/zero2_gpu_fp16.json",
    } <= names
    readme = (CONFIGS / "README.md").read_text()
    for name in names - {"README.md"}:
        assert Path(name).name in readme, f"README.md does not say when to use {name}"


# ----------------------------------------------------------------------------- DeepSpeed
def deepspeed_config(data: dict[str, Any]) -> Any:
    from deepspeed.runtime.config import DeepSpeedConfig

    return DeepSpeedConfig(copy.deepcopy(data))  # world size 1 without a process group


@pytest.fixture(autouse=True)
def _cpu_accelerator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")


@pytest.mark.parametrize("path", DEEPSPEED, ids=lambda p: p.name)
def test_deepspeed_config_is_accepted_by_deepspeed_and_matches_its_name(path: Path) -> None:
    data = load(path)
    config = deepspeed_config(data)
    stage = int(path.stem.split("_")[0].removeprefix("zero"))
    assert config.zero_optimization_stage == stage
    assert config.float16_config.enabled == ("fp16" in path.stem)
    assert config.bfloat16_config.enabled == ("bf16" in path.stem)
    # nasfleet hands DeepSpeed a plain torch optimizer; a config optimizer would replace it.
    assert "optimizer" not in data and config.optimizer_name is None
    assert config.gradient_clipping == 0
    assert config.train_micro_batch_size_per_gpu >= 1 and config.gradient_accumulation_steps >= 1
    if "cpu" in path.stem:
        assert not (config.float16_config.enabled or config.bfloat16_config.enabled)
    # A GPU file says so, and which GPUs, in its own section (nasfleet refuses it on CPUs; DeepSpeed never sees it).
    requirement = data.get("nasfleet", {})
    assert (requirement.get("requires") == "gpu") == ("gpu" in path.stem)
    assert ("gpu" not in path.stem) or "NVIDIA" in requirement["hardware"]


def test_deepspeed_validation_catches_a_mistake() -> None:
    """The check above is DeepSpeed's own: a misspelt key in a shipped file is rejected."""
    data = load(CONFIGS / "deepspeed" / "zero1.json")
    data["zero_optimization"]["stgae"] = data["zero_optimization"].pop("stage")
    with pytest.raises(Exception, match="stgae"):
        deepspeed_config(data)


# ----------------------------------------------------------------------------- Ray cluster launcher
@pytest.mark.parametrize("path", LAUNCHER, ids=lambda p: p.name)
def test_cluster_launcher_yaml_passes_rays_validation(path: Path) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    data = load(path)
    assert {"cluster_name", "provider", "head_start_ray_commands"} <= set(data)
    prepared = prepare_config(copy.deepcopy(data))  # what `ray up` does before launching anything
    validate_config(prepared)
    assert prepared["head_node_type"] in prepared["available_node_types"]
    head_start = " ".join(data["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start  # dashboard and job API on loopback only


def test_gpu_cluster_has_a_gpu_worker_type_and_runs_the_nasfleet_image() -> None:
    data = load(CONFIGS / "ray" / "cluster-gpu-aws.yaml")
    assert data["provider"]["type"] == "aws" and data["provider"]["region"]
    types = data["available_node_types"]
    head = types[data["head_node_type"]]
    workers = [t for name, t in types.items() if name != data["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    assert any(t["resources"].get("GPU", 0) >= 1 and t["max_workers"] >= 1 for t in workers)
    assert data["docker"]["image"].split("/")[-1].startswith("nasfleet:") and data["docker"]["image"].endswith("-gpu")
    assert data["setup_commands"] == [] and "file_mounts" not in data  # nothing installed or copied at start


def test_local_launcher_file_is_the_documented_ray_start() -> None:
    data = load(CONFIGS / "ray" / "local.yaml")
    assert data["provider"] == {"type": "local", "head_ip": "127.0.0.1", "worker_ips": []}
    start = next(c for c in data["head_start_ray_commands"] if c.startswith("ray start"))
    assert {"--head", "--dashboard-host=127.0.0.1", "--num-cpus"} <= set(shlex.split(start))
    assert "ray start --head --dashboard-host=127.0.0.1 --num-cpus 2" in (CONFIGS / "ray" / "local.yaml").read_text()


# ----------------------------------------------------------------------------- KubeRay
IMAGE_HOME = "/home/ray/nasfleet"


def image_copies() -> list[str]:
    """The repository folders the cluster image copies into IMAGE_HOME (and .dockerignore lets through)."""
    dockerfile = (CONFIGS / "docker" / "Dockerfile").read_text()
    copied = re.findall(rf"^COPY (\S+) {IMAGE_HOME}/\1$", dockerfile, flags=re.MULTILINE)
    allowed = (ROOT / ".dockerignore").read_text().splitlines()
    return [c for c in copied if f"!{c}/" in allowed]
def test_rayjob_has_the_fields_kuberay_needs() -> None:
    from ray.runtime_env import RuntimeEnv

    job = load(RAYJOB)
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob" and job["metadata"]["name"]
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] >= 0
    assert spec["submissionMode"] in ("K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode")
    RuntimeEnv(**yaml.safe_load(spec["runtimeEnvYAML"]))  # Ray's own runtime-env validation

    argv = shlex.split(spec["entrypoint"])
    assert argv[:4] == ["python", "-m", "nasfleet.orchestrator.cli", "train"]
    options = dict(zip(argv[4::1], argv[5::1]))
    assert int(options["--workers"]) >= 1 and options["--storage-path"].startswith("s3://")
    for option in ("--config", "--deepspeed"):  # files the image holds (its Dockerfile copies them there)
        assert options[option].startswith(IMAGE_HOME + "/"), options[option]
        relative = options[option].removeprefix(IMAGE_HOME + "/")
        assert (ROOT / relative).is_file()
        assert any(relative.startswith(source + "/") for source in image_copies()), relative

    cluster = spec["rayClusterSpec"]
    head = cluster["headGroupSpec"]
    images = {c["image"] for group in [head, *cluster["workerGroupSpecs"]] for c in group["template"]["spec"]["containers"]}
    assert len(images) == 1 and images.pop().split("/")[-1].startswith("nasfleet:")
    gpu_groups = [
        g for g in cluster["workerGroupSpecs"]
        if any("nvidia.com/gpu" in c["resources"]["limits"] for c in g["template"]["spec"]["containers"])
    ]
    assert gpu_groups
    gpus = sum(
        g["replicas"] * int(c["resources"]["limits"]["nvidia.com/gpu"])
        for g in gpu_groups for c in g["template"]["spec"]["containers"]
    )
    assert int(options["--workers"]) == gpus  # one Ray Train worker per GPU


def test_the_built_in_deepspeed_default_is_the_zero0_cpu_file() -> None:
    """The README and cluster_configs/README.md call zero0_cpu.json the default: they must be the same settings."""
    from nasfleet.orchestrator.config import DEFAULT_DEEPSPEED, JobConfig
    from nasfleet.orchestrator.train import deepspeed_config_for

    shipped = json.loads((ROOT / "cluster_configs" / "deepspeed" / "zero0_cpu.json").read_text())
    batch = JobConfig().data.batch_size
    assert deepspeed_config_for(shipped, batch) == deepspeed_config_for(DEFAULT_DEEPSPEED, batch)
    assert JobConfig().launch.deepspeed == DEFAULT_DEEPSPEED
