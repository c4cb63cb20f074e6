"""Start DeepSpeed on CPU without compiling C++ or waiting on another process's build lock.

DeepSpeed creates its communication backend (``TorchBackend``) in ``deepspeed.init_distributed``,
which ``deepspeed.initialize`` also calls when torch.distributed is already up (Ray Train). The
backend's constructor builds the ``deepspeed_shm_comm`` C++ op with torch's JIT extension loader
whenever DeepSpeed's compatibility table says the op can be built, and with ``DS_BUILD_OPS=0`` it
was not built at install. The JIT build takes a ``lock`` file in the op's build folder and every
other process waits for that file to disappear, silently and with no time limit; a process killed
mid-build leaves the file behind and every later start waits for ever, even once the op is built.

nasfleet does not need the op: it only serves ``inference_all_reduce`` (DeepSpeed's tensor-parallel
inference), only when the launcher sets ``LOCAL_SIZE`` (the ``deepspeed`` launcher does, torchrun and
Ray Train do not), while training's gradient all-reduce always goes through
``torch.distributed.all_reduce``. Marking the op as not compatible (the check DeepSpeed makes before
building it) therefore changes no result and removes the compile, the lock and the compiler from
every start. No install-time build is needed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SHM_COMM_BUILDER = "ShareMemCommBuilder"


def venv_extensions_dir() -> Path:
    """Where this environment's torch JIT extensions go, instead of the per-user ``~/.cache``.

    The default folder is shared by every virtual environment and process of the user, so one
    run's build lock (or a build for another torch version) reaches all the others.
    """
    return Path(sys.prefix) / "torch_extensions"


def prepare_deepspeed_cpu() -> None:
    """Make DeepSpeed's comm backend start without building its shared-memory op.

    Call it in every process that starts DeepSpeed, before ``deepspeed.init_distributed`` or
    ``deepspeed.initialize`` (whichever comes first in that process): torchrun and mpiexec ranks
    and each Ray Train worker. It is idempotent, costs about 0.1 s (DeepSpeed's op probe, which
    DeepSpeed would run at that point anyway) and is harmless on GPU, where the op is not used
    either. ``TORCH_EXTENSIONS_DIR`` is pointed at :func:`venv_extensions_dir` unless the user set
    it, so any op DeepSpeed still compiles (an opt-in one, such as NVMe offload's) stays in this
    environment.
    """
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(venv_extensions_dir()))
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    builder = get_accelerator().get_op_builder(SHM_COMM_BUILDER)
    if builder is not None:
        # deepspeed/comm/torch.py build_shm_op returns None, without building, when this is False;
        # the table is created on first access and kept, so the edit lasts for this process.
        deepspeed.ops.__compatible_ops__[builder.NAME] = False
