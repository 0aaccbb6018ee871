"""Plug-ins: modules that add backbones, methods, dataset kinds … to the registries (``names``)
by importing udml and calling ``REGISTRY.add`` / ``register``. Loaded once, before the first
registry lookup, from

- the ``udml.plugins`` entry-point group of installed packages (``[project.entry-points.
  "udml.plugins"] mine = "my_pkg.udml_plugin"`` in the plug-in's pyproject.toml), and
- ``UDML_PLUGINS``: importable module names, comma-separated (a quick local plug-in; inherited by
  the processes ``--nproc`` starts).
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points

_loaded = False


def load_plugins() -> None:
    """Import every plug-in once; one line naming the one that fails."""
    global _loaded
    if _loaded:
        return
    _loaded = True  # a plug-in's own registry lookups must not load it again
    from udml_cli.errors import UsageError

    found = [(ep.value, "the udml.plugins entry point " + ep.name, ep.load)
             for ep in entry_points(group="udml.plugins")]  # fmt: skip
    for name in filter(None, (n.strip() for n in os.environ.get("UDML_PLUGINS", "").split(","))):
        found.append((name, "UDML_PLUGINS", lambda n=name: importlib.import_module(n)))
    for name, where, load in found:
        try:
            load()
        except Exception as e:  # an ImportError or whatever the plug-in raised
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise UsageError(
                f"cannot load plug-in {name} (named by {where}): {first}; fix or remove it"
            ) from None
