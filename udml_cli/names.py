"""The one registry style for named things: backbones (``models/backbones.py``), dataset kinds
(``data/prepare``) and built-in datasets (``data/registry.py``). A name → entry mapping whose
lookup of an unknown name is one line listing the valid ones; hidden names (test fixtures) work
but are not listed."""

from __future__ import annotations

from typing import Generic, TypeVar

from udml_cli.errors import UsageError

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
        return [n for n in self if include_hidden or n not in self.hidden]

    def lookup(self, name: str) -> T:
        if name not in self:
            raise UsageError(f"unknown {self.what} '{name}' (valid: {', '.join(self.names())})")
        return self[name]
