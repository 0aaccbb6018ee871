"""The one registry style for named things: backbones (``models/backbones.py``), dataset kinds
(``data/prepare``) and built-in datasets (``data/registry.py``). A name → entry mapping whose
lookup of an unknown name is one line listing the valid ones; hidden names work but are not
listed. Plug-ins (``plugins.py``) add entries before the first lookup."""

from __future__ import annotations

from typing import Generic, TypeVar

from udml_cli.errors import UsageError
from udml_cli.plugins import load_plugins

T = TypeVar("T")


class Registry(dict[str, T], Generic[T]):
    def __init__(self, what: str, entries: dict[str, T] | None = None) -> None:
        super().__init__(entries or {})
        self.what = what  # "backbone", "dataset kind" …: the error line's noun
        self.hidden: set[str] = set()

    def add(self, name: str, entry: T, hidden: bool = False) -> T:
        self[name] = entry
        if hidden:
            self.hidden.add(name)
        return entry

    def names(self, include_hidden: bool = False) -> list[str]:
        load_plugins()
        return [n for n in self if include_hidden or n not in self.hidden]

    def lookup(self, name: str) -> T:
        if name not in self:
            load_plugins()  # a plug-in's name (``udml_cli/plugins.py``)
        if name not in self:
            raise UsageError(f"unknown {self.what} '{name}' (valid: {', '.join(self.names())})")
        return self[name]
