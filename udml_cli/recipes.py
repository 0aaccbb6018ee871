"""Run-config templates: the TOML files in templates/, shipped inside the package.

``--config NAME`` with a bare name (``demo``, ``cub``) finds a shipped template; anything with a
path separator or a suffix is a file path.
"""

from __future__ import annotations

from pathlib import Path

from udml_cli.errors import ConfigError


def _folder() -> Path | None:
    try:
        from importlib.resources import files

        folder = Path(str(files("udml_cli.templates")))
        if folder.is_dir():
            return folder
    except (ModuleNotFoundError, TypeError):
        pass
    checkout = Path(__file__).resolve().parents[1] / "templates"  # a source checkout
    return checkout if checkout.is_dir() else None


def templates() -> dict[str, Path]:
    """Shipped template name → file."""
    folder = _folder()
    return {p.stem: p for p in sorted(folder.glob("*.toml"))} if folder else {}


def describe(path: Path) -> str:
    """A template's first comment line."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def template_path(name: str) -> Path:
    found = templates()
    if name not in found:
        raise ConfigError(
            f"no template named '{name}' (shipped: {', '.join(found) or 'none'}); "
            "or give a path to a TOML file"
        )
    return found[name]


def resolve_config_path(value: str | Path) -> Path:
    """A ``--config`` value: an existing file, else a bare shipped template name."""
    path = Path(value)
    if path.exists() or "/" in str(value) or path.suffix:
        return path
    if str(value) in templates():
        return templates()[str(value)]
    return path  # load_config reports it missing
