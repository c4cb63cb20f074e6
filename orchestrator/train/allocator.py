"""Keep freed tensor memory in the C heap, so a training step does not page-fault its way through.

Every step allocates and frees the same activation and gradient tensors. glibc's malloc serves a
block above its mmap threshold (128 KiB at start, raised as freed blocks come back, but never past
blocks it has not seen freed yet) with fresh pages from ``mmap`` and unmaps it on ``free``, and it
returns the heap's free top to the OS above 128 KiB; each first touch of a fresh page is a page
fault that zeroes 4 KiB. On the demo space that was 2,000-6,000 faults per step, more for a
supernet than for its extracted subnet (it allocates full-size gradients and more, smaller
tensors), which was most of the supernet's measured overhead (docs/supernet.md).
Raising both thresholds keeps the blocks in the heap for the next step, as jemalloc and tcmalloc
do by design; the cost is that a process keeps up to 1 GiB of freed heap instead of returning it.

A user who sets glibc's ``MALLOC_*`` variables, or preloads another allocator, keeps their choice.
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 << 20
"""glibc's largest accepted mmap threshold on 64-bit (``HEAP_MAX_SIZE / 2``); bigger blocks still map."""
TRIM_THRESHOLD_BYTES = 1 << 30
"""Free heap top kept before glibc returns it to the OS."""


def _user_chose_allocator() -> bool:
    preloaded = os.environ.get("LD_PRELOAD", "")
    return any(name.startswith("MALLOC_") for name in os.environ) or "malloc" in preloaded


def _glibc() -> ctypes.CDLL | None:
    """The C library if it is glibc (not on macOS or musl, where there is nothing to tune)."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
        return ctypes.CDLL("libc.so.6")
    except (ValueError, OSError):
        return None


def reuse_freed_memory() -> bool:
    """Set this process's glibc malloc to reuse freed blocks; True if it did (idempotent)."""
    if _user_chose_allocator():
        return False
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
