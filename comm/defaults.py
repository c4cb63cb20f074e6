"""Defaults that the CLI's help shows and the simulator uses.

This module imports nothing, so ``nasfleet comm --help`` can show them without loading
numpy, scipy or pandas; the simulator modules import them from here.
"""

from __future__ import annotations

DEFAULT_PIPELINE_CHUNK_BYTES = 1 << 20
"""Chunk size of the pipelined (tree and chain) algorithms."""

ALL_ROUTINGS = ("ecmp", "ecmp-2", "ecmp-4", "ecmp-8", "spray", "split", "spray-weighted", "split-weighted")
"""What ``compare`` runs by default: every built-in routing, ECMP-k at a few k."""
