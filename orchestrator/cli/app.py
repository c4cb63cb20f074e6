"""The ``nasfleet`` command line.

Every error a user can cause — a :class:`NasfleetError` or a usage mistake — is printed by
:func:`main` as one line starting with ``error:``, exit code 2. Commands import torch, Ray
and DeepSpeed inside their bodies, so ``nasfleet --help`` answers at once. Other packages add
commands through the entry-point group ``nasfleet.commands`` (a Typer app each); the strategy
study's ``nasfleet bench`` arrives that way.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points

import typer

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.cli.assemble import assemble
from nasfleet.orchestrator.cli.certify import certify
from nasfleet.orchestrator.cli.continual import continual
from nasfleet.orchestrator.cli.data import data_app
from nasfleet.orchestrator.cli.grow import grow
from nasfleet.orchestrator.cli.profile import profile
from nasfleet.orchestrator.cli.prune import prune
from nasfleet.orchestrator.cli.runs import ensemble, evaluate, export, status
from nasfleet.orchestrator.cli.search import search
from nasfleet.orchestrator.cli.train import demo, train

app = typer.Typer(
    help="Train weight-sharing supernets and find the subnets worth deploying.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command()(train)
app.command()(evaluate)
app.command()(export)
app.command()(status)
app.command()(ensemble)
app.command()(demo)
app.command()(search)
app.command()(profile)
app.command()(certify)
app.command()(continual)
app.command()(prune)
app.command()(assemble)
app.command()(grow)
app.add_typer(data_app, name="data")


def _mount_comm() -> None:
    from nasfleet.comm.cli import comm_app

    app.add_typer(comm_app, name="comm", help="Simulate collective communication on leaf-spine fabrics.")


def _mount_plugin_commands() -> None:
    for point in entry_points(group="nasfleet.commands"):
        try:
            command_app = point.load()
        except Exception as exc:  # a broken plug-in must not take the whole CLI down
            print(f"warning: cannot load command {point.name!r} ({point.value}): {exc}", file=sys.stderr)
            continue
        app.add_typer(command_app, name=point.name)


def _mount_subcommand(argv: list[str]) -> None:
    """Mount what the command line needs: ``comm`` only for ``nasfleet comm``, plug-ins for theirs and help."""
    first = next((arg for arg in argv if not arg.startswith("-")), None)
    if first == "comm" or first is None:
        _mount_comm()
    if first not in ("train", "evaluate", "export", "demo", "search", "profile", "certify", "continual", "prune", "assemble", "grow", "comm", "data"):
        _mount_plugin_commands()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning user errors and usage errors into one line and exit code 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    _mount_subcommand(args)
    try:
        code = app(args=args, prog_name="nasfleet", standalone_mode=False)
    except NasfleetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        print("error: aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        if not _is_click_error(exc):
            raise
        message = exc.format_message().strip().splitlines()  # type: ignore[attr-defined]
        print(f"error: {message[0] if message else type(exc).__name__}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


def _is_click_error(exc: BaseException) -> bool:
    """A usage error from the command-line parser (Typer vendors its own click, so match by class name)."""
    return any(cls.__name__ in ("ClickException", "Abort") for cls in type(exc).__mro__)
