"""Reading torch files without running code from them.

A run folder can come from anyone (a shared bucket, a colleague's tarball), and
``torch.load(weights_only=False)`` unpickles arbitrary objects: a planted file would run
its payload the moment nasfleet resumes or evaluates. Every torch file nasfleet reads goes
through :func:`safe_torch_load`, and every file DeepSpeed's engine reads for nasfleet goes
through the loader :func:`use_safe_loading` installs. Both use ``weights_only=True``: the
unpickler only builds tensors, plain containers and numbers, plus the few DeepSpeed types
listed in :data:`DEEPSPEED_SAFE_GLOBALS`. Anything else is refused before it is called and
reported as one :class:`NasfleetError` line.
"""

from __future__ import annotations

import importlib
import io
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nasfleet.errors import NasfleetError

MapLocation = str | torch.device | Callable[..., Any] | dict[str, str] | None

# Each is (module, class name). Found with torch.serialization.get_unsafe_globals_in_checkpoint
# on files DeepSpeed 0.19.8 wrote on CPU (SGD + LambdaLR; fp32 ZeRO 0-3, bf16 ZeRO 0 and 2):
# ZeRO 0 writes none, ZeRO 1/2 write all but DynamicLossScaler, ZeRO 3 only the first two.
# Imported only when a DeepSpeed engine is made safe, so plain loading never pays for DeepSpeed.
DEEPSPEED_SAFE_GLOBALS: tuple[tuple[str, str], ...] = (
    ("deepspeed.runtime.zero.config", "ZeroStageEnum"),
    ("deepspeed.runtime.fp16.loss_scaler", "LossScaler"),
    ("deepspeed.runtime.fp16.loss_scaler", "DynamicLossScaler"),
    ("deepspeed.utils.tensor_fragment", "fragment_address"),
)
"""DeepSpeed types its ZeRO optimizer files hold, each checked to be safe to unpickle.

* ``ZeroStageEnum`` (``int, Enum``): pickled as ``ZeroStageEnum(value)``, an enum lookup
  that returns a member or raises (an enum with members cannot be extended).
* ``LossScaler`` and ``DynamicLossScaler`` (plain classes over ``LossScalerBase`` and
  ``DeepSpeedConfigObject``): no ``__setstate__``, ``__getattr__``, ``__getattribute__`` or
  ``__setattr__`` of their own; unpickling is ``object.__new__`` plus a ``__dict__`` update,
  and their ``__init__`` (reachable through REDUCE) only stores its arguments. Those
  attributes can only be values the restricted unpickler itself allows. ``LossScaler`` is
  in every ZeRO 1-3 file; ``DynamicLossScaler`` replaces it under fp16 with dynamic loss
  scaling (``cluster_configs/deepspeed/zero2_gpu_fp16.json``), which needs a GPU, so it was
  checked against DeepSpeed's source rather than found in a file.
* ``fragment_address``: a two-int dataclass (ZeRO 1/2 parameter-slice mappings).

Allow-listing these was preferred to stripping them at save time: stripping would mean
patching DeepSpeed's ``state_dict``/``load_state_dict`` pairs, which read them back.
``argparse.Namespace`` is not in these files (nasfleet passes no ``args`` to DeepSpeed).
"""

_GLOBAL_IN_MESSAGE = re.compile(r"GLOBAL ([\w.]+)")


def safe_torch_load(source: str | Path | bytes, what: str) -> Any:
    """Load a torch file nasfleet wrote, onto the CPU, without running code from it.

    ``source`` is a local path or the file's bytes (as read from a storage URI). ``what``
    names the file for the user: with bytes it should include the file's location, with a
    path the path is appended. A missing, truncated or foreign file, or one that needs a
    global beyond tensors, containers and numbers, raises :class:`NasfleetError`.
    """
    return _load(source, what, "cpu")


def use_safe_loading(engine: Any) -> None:
    """Make ``engine.load_checkpoint`` read its files with ``weights_only=True``.

    Call once after ``deepspeed.initialize`` and before ``engine.load_checkpoint``. This
    replaces ``engine.checkpoint_engine.load``, which DeepSpeed uses for the model-states
    file (``mp_rank_*_model_states.pt``), the ZeRO optimizer files (``*zero_pp_rank_*``)
    and MoE expert files; saving is untouched. The files may hold only tensors, containers,
    numbers and :data:`DEEPSPEED_SAFE_GLOBALS`. Universal-checkpoint loading reads its files
    with ``torch.load`` directly, bypassing the checkpoint engine, so it is refused here.
    """
    if engine.load_universal_checkpoint():
        raise NasfleetError(
            "the DeepSpeed config sets checkpoint.load_universal, whose loader runs code from checkpoint files; "
            "remove it to resume a nasfleet run"
        )
    allowed = [_import_global(module, name) for module, name in DEEPSPEED_SAFE_GLOBALS]

    def load(path: str, map_location: MapLocation = None) -> Any:
        with torch.serialization.safe_globals(allowed):
            return _load(path, "DeepSpeed checkpoint file", map_location)

    engine.checkpoint_engine.load = load


def _load(source: str | Path | bytes, what: str, map_location: MapLocation) -> Any:
    if isinstance(source, bytes):
        label, file = what, io.BytesIO(source)
    else:
        label, file = f"{what} {source}", Path(source)
        if not file.is_file():
            raise NasfleetError(f"{label} does not exist")
    try:
        return torch.load(file, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a truncated, foreign or unsafe file
        raise NasfleetError(
            f"{label} is corrupted or not a file nasfleet wrote ({_reason(exc)}); resume from an older checkpoint"
        ) from None


def _reason(exc: Exception) -> str:
    """One short line saying why torch refused a file (its own messages span many lines).

    Torch's weights-only message also advises retrying with ``weights_only=False``: only
    the unpickler's own finding is kept, never that advice.
    """
    message = str(exc)
    if isinstance(exc, pickle.UnpicklingError):
        if found := _GLOBAL_IN_MESSAGE.search(message):
            return f"it refers to {found.group(1)}, which nasfleet never loads"
        message = message.partition("WeightsUnpickler error:")[2] or message
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    detail = lines[0].split(". ")[0][:120] if lines else ""
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _import_global(module: str, name: str) -> type:
    return getattr(importlib.import_module(module), name)
