"""``nasfleet data fetch``: put a data set in the local cache once, before any job needs it."""

from __future__ import annotations

import typer

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.cli.common import console

data_app = typer.Typer(help="Data sets: fetch one into the local cache.", no_args_is_help=True)


@data_app.command()
def fetch(
    name: str = typer.Argument(..., help="The data set: fashion-mnist or fortunes (text)."),
    force: bool = typer.Option(False, help="Fetch again even if the cache holds a verified copy."),
) -> None:
    """Fetch NAME's Debian package (no root needed), check every file's SHA-256, and cache it."""
    from nasfleet.orchestrator.data_fetch import FETCHABLE, data_cache_root, fetch as fetch_source

    source = FETCHABLE.get(name)
    if source is None:
        raise NasfleetError(f"no data set {name!r} to fetch (known: {', '.join(sorted(FETCHABLE))})")
    folder = fetch_source(source, force=force)
    console.print(f"{name}: {len(source.sha256)} files verified in {folder} (cache: {data_cache_root()})")
