"""Errors a user can cause.

Every such error is a :class:`NasfleetError`; the CLI catches it once and prints a
single line (exit code 2) instead of a traceback.
"""


class NasfleetError(Exception):
    """A problem with the user's input: a config, a path, an architecture, a checkpoint."""
