"""Converters from what users download to the standard ``train.txt``/``test.txt`` layout.

Each converter module exposes ``convert(source, writer, **options)``; ``prepare`` runs one into a
temporary folder beside the output and renames it into place only when it finished.
"""

from __future__ import annotations

from udml_cli.data.prepare.common import KINDS, prepare

__all__ = ["KINDS", "prepare"]
