"""``python -m nasfleet.comm``: the comm CLI with nasfleet's error handling.

A :class:`NasfleetError` or a usage error (an unknown option, a value typer cannot
parse) becomes one line ``error: <message>`` on stderr and exit code 2, as under
``nasfleet comm``.
"""

from __future__ import annotations

import sys

from nasfleet.comm.cli import comm_app
from nasfleet.errors import NasfleetError


def _is_click_error(error: BaseException) -> bool:
    """A usage error from the command-line parser (typer vendors click, so match by class name)."""
    return any(cls.__name__ in ("ClickException", "Abort") for cls in type(error).__mro__)


def main(argv: list[str] | None = None) -> int:
    try:
        code = comm_app(args=argv, prog_name="nasfleet comm", standalone_mode=False)
    except NasfleetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: aborted", file=sys.stderr)
        return 130
    except Exception as error:
        if not _is_click_error(error):
            raise
        lines = error.format_message().strip().splitlines()  # type: ignore[attr-defined]
        if lines:  # no message: typer has shown the help (a command given no arguments)
            print(f"error: {lines[0]}", file=sys.stderr)
        return 2
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
