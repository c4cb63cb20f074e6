"""Named plug-ins: one small registry type for strategies, search spaces, searchers, routings and data sets.

A plug-in joins a registry in one of three ways, all equivalent once loaded:

- in nasfleet or any imported module, with the decorator: ``@STRATEGIES.register("name")``;
- from another installed package, through a Python entry point in the registry's group
  (``[project.entry-points."nasfleet.strategies"] name = "package.module:Class"``), loaded
  the first time a name is looked up;
- from a module named in a job config's ``imports:`` list (importing it runs its decorators).

Lookups of unknown names raise one :class:`NasfleetError` listing what is known, so a typo
reaches the user as one line before any work starts. This module imports nothing heavy:
``nasfleet.comm`` uses it without the ML stack.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from nasfleet.errors import NasfleetError

T = TypeVar("T")


class Registry(Generic[T]):
    """Plug-ins of one kind by name; ``group`` is the entry-point group other packages register under."""

    def __init__(self, kind: str, group: str) -> None:
        self.kind = kind
        self.group = group
        self._items: dict[str, T] = {}
        self._entry_points_loaded = False

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name")`` above a class or function adds it under ``name``
        (default: the class's ``name`` attribute)."""

        def add(item: T) -> T:
            self.add(name if name is not None else str(getattr(item, "name")), item)
            return item

        return add

    def add(self, name: str, item: T) -> None:
        existing = self._items.get(name)
        if existing is not None and existing is not item:
            raise NasfleetError(f"two {self.kind}s are registered as {name!r}: {_where(existing)} and {_where(item)}")
        self._items[name] = item

    def get(self, name: str) -> T:
        """The plug-in called ``name``; unknown names are one NasfleetError listing the known ones."""
        if name not in self._items:
            self._load_entry_points()
        try:
            return self._items[name]
        except KeyError:
            raise NasfleetError(f"unknown {self.kind} {name!r} (known: {', '.join(sorted(self.names()))})") from None

    def names(self) -> list[str]:
        self._load_entry_points()
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        self._load_entry_points()
        return list(self._items.items())

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for point in entry_points(group=self.group):
            if point.name in self._items:
                continue  # registered already (its module was imported, or nasfleet ships it)
            try:
                self.add(point.name, point.load())
            except NasfleetError:
                raise
            except Exception as exc:  # a broken third-party package must not take every command down
                raise NasfleetError(
                    f"cannot load {self.kind} {point.name!r} from entry point {point.value!r}: "
                    f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                ) from None


def import_plugins(modules: list[str]) -> None:
    """Import the modules a job config lists under ``imports:`` (their decorators register plug-ins)."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise NasfleetError(f"imports: cannot import {module!r}: {exc}") from None


def _where(item: object) -> str:
    return f"{getattr(item, '__module__', '?')}.{getattr(item, '__qualname__', repr(item))}"
