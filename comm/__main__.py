"""``python -m nasfleet.comm``: the comm CLI with nasfleet's error handling.

A :class:`NasfleetError` becomes ``error: <message>`` on stderr and exit code 2;
usage errors are reported by typer and also exit with 2.
"""

from __future__ import annotations

import sys

from nasfleet.comm.cli import comm_app
from nasfleet.errors import NasfleetError


def main(argv: list[str] | None = None) -> int:
    try:
        comm_app(args=argv, prog_name="nasfleet comm")  # exits itself on success and usage errors
    except NasfleetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
