"""Checkpoint files: written atomically, read with a clear error when damaged.

A checkpoint is written to a temporary file in the same folder and renamed over the old
one, so a crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from nasfleet.errors import NasfleetError

CHECKPOINT_FILE = "checkpoint.pt"
REQUIRED_KEYS = ("model", "optimizer", "scheduler", "strategy", "rng", "step")


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise NasfleetError(f"no checkpoint at {path}")
    try:
        # Our own files: optimizer and RNG state are plain containers of tensors and numbers.
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises several types for a truncated or foreign file
        raise NasfleetError(f"checkpoint {path} is corrupted or unreadable ({type(exc).__name__})") from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise NasfleetError(f"checkpoint {path} is not a nasfleet checkpoint (missing {', '.join(missing)})")
    return state
