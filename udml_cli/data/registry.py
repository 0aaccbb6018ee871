"""Where datasets live: a TOML registry of user datasets plus the built-in benchmark names.

A command that takes a dataset accepts a registered name, a built-in name (``cub``, ``car``,
``sop`` … under a data root) or a path to a layout folder; ``resolve_dataset`` decides which.
"""

from __future__ import annotations

import os
from pathlib import Path

import tomllib

from udml_cli.data.layout import LAYOUTS, DatasetRef, detect_layout
from udml_cli.errors import DatasetError, RegistryError, UsageError
from udml_cli.fileio import atomic_write_text, first_existing
from udml_cli.names import Registry

# Official names (design.md §1): name -> folder under the data root.
BUILTIN: Registry[str] = Registry("built-in dataset", {
    "cub": "CUB_200_2011",
    "car": "Cars196",
    "cars": "Cars196",
    "product": "Products",
    "sop": "Products",
})  # fmt: skip


def udml_home() -> Path:
    """``$UDML_HOME`` or the user's config dir (``~/.config/udml`` on Linux)."""
    env = os.environ.get("UDML_HOME")
    if env:
        home = Path(env).expanduser()
        base = first_existing(home)
        if not base.is_dir():
            raise RegistryError(
                f"UDML_HOME={env}: {base} is a file, not a folder; point UDML_HOME at a folder"
            )
        return home
    from platformdirs import user_config_dir

    return Path(user_config_dir("udml"))


def registry_path() -> Path:
    return udml_home() / "datasets.toml"


def load_registry() -> dict[str, dict]:
    path = registry_path()
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise RegistryError(
            f"dataset registry {path} is corrupt ({e}); fix or move it away, nothing was changed"
        ) from None
    entries = data.get("datasets", {})
    if not isinstance(entries, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("path"), str) for v in entries.values()
    ):
        raise RegistryError(
            f"dataset registry {path} is malformed: expected [datasets.NAME] tables with a path; "
            "fix or move it away, nothing was changed"
        )
    return entries


def save_registry(entries: dict[str, dict]) -> None:
    import tomli_w

    path = registry_path()
    try:
        atomic_write_text(path, tomli_w.dumps({"datasets": entries}))
    except OSError as e:
        raise RegistryError(f"cannot write dataset registry {path}: {e}") from None


def valid_name(name: str) -> bool:
    return bool(name) and all(c.isalnum() or c in "-_." for c in name) and not name.startswith(".")


def add_dataset(name: str, path: Path, layout: str | None, force: bool = False) -> DatasetRef:
    if not valid_name(name):
        raise UsageError(f"dataset name '{name}' must use letters, digits, '-', '_' or '.'")
    root = path.expanduser().resolve()
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {path}")
    found = detect_layout(root)
    if layout is None:
        if found is None:
            raise DatasetError(
                f"{root}: no images in this folder tree (and no train.txt/test.txt layout)"
            )
        layout = found
    elif layout not in LAYOUTS:
        raise UsageError(f"--layout must be one of {', '.join(LAYOUTS)}, got '{layout}'")
    entries = load_registry()
    if name in entries and not force:
        raise UsageError(
            f"dataset '{name}' is already registered ({entries[name]['path']}); "
            "use --force to replace it"
        )
    entries[name] = {"path": str(root), "layout": layout}
    save_registry(entries)
    return DatasetRef(name, root, layout, name)


def remove_dataset(name: str) -> dict:
    entries = load_registry()
    if name not in entries:
        raise DatasetError(f"no registered dataset named '{name}' (see `udml dataset list`)")
    entry = entries.pop(name)
    save_registry(entries)
    return entry


def data_root(explicit: str | None = None) -> Path | None:
    root = explicit or os.environ.get("UDML_DATA_ROOT")
    return Path(root).expanduser() if root else None


def resolve_dataset(spec: str, root: str | None = None) -> DatasetRef:
    """Registered name > built-in name > path. One clear error when none matches."""
    if not spec:
        raise UsageError("no dataset given: pass --dataset NAME (see `udml dataset list`)")
    entries = load_registry()
    if spec in entries:
        entry = entries[spec]
        path = Path(entry["path"])
        if not path.is_dir():
            raise DatasetError(
                f"dataset '{spec}' is registered at {path}, which no longer exists; "
                f"re-add it with `udml dataset add {spec} PATH --force`"
            )
        return DatasetRef(spec, path, entry.get("layout") or detect_layout(path) or "txt", spec)
    if spec in BUILTIN:
        base = data_root(root)
        if base is None:
            raise DatasetError(
                f"'{spec}' is a built-in dataset: give its parent folder with --data-root, "
                "data.data_root or $UDML_DATA_ROOT"
            )
        path = base / BUILTIN[spec]
        if not path.is_dir():
            raise DatasetError(
                f"built-in dataset '{spec}' expects {path}; prepare it with "
                f"`udml dataset prepare {spec if spec != 'car' else 'cars'} --source DOWNLOAD "
                f"--out {path}`"
            )
        return DatasetRef(spec, path, detect_layout(path) or "txt", spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        layout = detect_layout(path)
        if layout is None:
            raise DatasetError(
                f"{path}: no images in this folder tree (and no train.txt/test.txt layout)"
            )
        root = path.resolve()
        return DatasetRef(root.name, root, layout, str(root))
    names = sorted(entries) + sorted(BUILTIN)
    raise DatasetError(
        f"unknown dataset '{spec}': not registered, not built-in, not a folder "
        f"(known: {', '.join(names)})"
    )
