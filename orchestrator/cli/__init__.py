"""The ``nasfleet`` command line (``main`` is the console-script entry point)."""

from nasfleet.orchestrator.cli.app import main

__all__ = ["main"]
