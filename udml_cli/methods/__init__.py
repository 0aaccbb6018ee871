"""Training methods, one module each (the contract: ``base.Method``), chosen by
``train.method``. A new method is its module and one line here (``"name": "module:Class"``,
imported when first asked for), or ``METHODS.add(name, cls)`` from a plug-in (``plugins.py``)."""

from __future__ import annotations

import importlib

from udml_cli.names import Registry

METHODS: Registry = Registry(
    "method",
    {
        "udml-ss": "udml_cli.methods.udml_ss:UdmlSS",
        "stml": "udml_cli.methods.stml:Stml",
        "invariance": "udml_cli.methods.invariance:Invariance",
    },
)


def method_class(name: str):
    """The ``Method`` subclass registered as ``name`` (one line listing the valid ones else)."""
    entry = METHODS.lookup(name)
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        entry = getattr(importlib.import_module(module), attr)
        METHODS[name] = entry
    return entry


def all_methods() -> list:
    return [method_class(name) for name in METHODS.names(include_hidden=True)]
