"""``udml dataset add | list | remove | check | prepare``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from udml_cli.cli.common import (
    DataRootOpt,
    JsonOpt,
    YesOpt,
    ask,
    confirm,
    console,
    emit_json,
    progress,
    say,
    styled,
)
from udml_cli.cli.help import UdmlTyper
from udml_cli.data import registry
from udml_cli.data.prepare import KINDS

app = UdmlTyper(
    help="Register, list, check and convert datasets.",
    no_args_is_help=True,
)


@app.command("add")
def add(
    name: Annotated[
        str | None, typer.Argument(help="Name to register the dataset under (asked if missing).")
    ] = None,
    path: Annotated[
        Path | None, typer.Argument(help="Folder with train.txt/test.txt or train/ test/.")
    ] = None,
    layout: Annotated[str | None, typer.Option(help="txt or folder (default: detected).")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing registration.")
    ] = False,
    yes: YesOpt = False,
) -> None:
    """Register a dataset folder under NAME (at a terminal, asks for what is missing)."""
    name = str(ask(name, "Name to register the dataset under", "NAME argument")).strip()
    path = Path(str(ask(path, "Dataset folder", "PATH argument")).strip()).expanduser()
    entries = registry.load_registry()
    if name in entries and not force:
        confirm(
            f"'{name}' is registered at {entries[name]['path']}. Replace it?",
            yes,
            f"dataset '{name}' is already registered ({entries[name]['path']}); use --force",
        )
    ref = registry.add_dataset(name, path, layout, force=True)  # replacement confirmed above
    console.print(f"registered {ref.name} → {ref.root} ({ref.layout} layout)", soft_wrap=True)


@app.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """List registered datasets (and the built-in names)."""
    entries = registry.load_registry()
    if as_json:
        emit_json(
            {
                "registry": str(registry.registry_path()),
                "datasets": {k: v for k, v in sorted(entries.items())},
                "builtin": registry.BUILTIN,
            }
        )
        return
    table = Table(title=f"datasets ({registry.registry_path()})")
    table.add_column("name")
    table.add_column("layout")
    table.add_column("path")
    for name, entry in sorted(entries.items()):
        layout = entry.get("layout", "?")
        table.add_row(name, "images (unlabelled)" if layout == "images" else layout, entry["path"])
    for name, folder in registry.BUILTIN.items():
        table.add_row(name, "built-in", f"<data root>/{folder}", style="dim")
    console.print(table)


@app.command("remove")
def remove(name: Annotated[str, typer.Argument(help="Registered name.")]) -> None:
    """Forget a registration (the images stay where they are)."""
    entry = registry.remove_dataset(name)
    console.print(f"removed {name} (files left in {entry['path']})", soft_wrap=True)


@app.command("check")
def check(
    dataset: Annotated[str, typer.Argument(help="Registered name, built-in name or folder.")],
    deep: Annotated[bool, typer.Option("--deep", help="Decode every image.")] = False,
    as_json: JsonOpt = False,
    data_root: DataRootOpt = None,
) -> None:
    """Validate a dataset layout; exit 0 when clean, 1 when there are problems."""
    from udml_cli.data.layout import check_dataset

    ref = registry.resolve_dataset(dataset, data_root)
    if deep:
        with progress() as bar:
            report = check_dataset(ref, deep=True, progress=bar)
    else:
        report = check_dataset(ref)
    _render_check(report)
    if as_json:
        emit_json(report)
    if not report["ok"]:
        raise typer.Exit(1)


def _render_check(report: dict) -> None:
    kind = "layout" if report["labelled"] else "collection, unlabelled"
    table = Table(title=f"{report['dataset']} ({report['layout']} {kind}, {report['root']})")
    for col in ("split", "images", "classes", "min/class", "median/class", "max/class"):
        table.add_column(col, justify="right" if col != "split" else "left")
    for split, s in report["splits"].items():
        keys = ("images", "classes", "min_per_class", "median_per_class", "max_per_class")
        table.add_row(split, *["–" if s[k] is None else str(s[k]) for k in keys])
    console.print(table)
    for p in report["problems"]:
        colour = "red" if p["severity"] == "error" else "yellow"
        say(f"{p['severity']}:", colour, p["text"])
    verdict = ("ok", "green") if report["ok"] else ("problems found", "red")
    console.print(styled(verdict, f": {report['errors']} errors, {report['warnings']} warnings"))


@app.command("prepare")
def prepare(
    kind: Annotated[str, typer.Argument(help=f"One of: {', '.join(KINDS)}.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder.")] = None,
    source: Annotated[
        Path | None,
        typer.Option(help="The extracted download (fashion-mnist and emoji have defaults)."),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Register under this name (default: the kind).")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="fashion-mnist: images per split; emoji: classes.")
    ] = None,
    split_ratio: Annotated[
        float, typer.Option(help="folder: fraction of classes for training.")
    ] = 0.5,
    copy: Annotated[
        bool, typer.Option("--copy", help="Copy images instead of hard-linking.")
    ] = False,
    yes: YesOpt = False,
) -> None:
    """Convert a download into the standard layout and register it.

    \b
    cub            CUB_200_2011 archive folder: classes 1-100 train, 101-200 test
    cars           Cars196 (car_ims/, cars_annos.mat): classes 1-98 / 99-196
    sop            Stanford_Online_Products (Ebay_train.txt, Ebay_test.txt)
    fashion-mnist  IDX files (default: Debian's dataset-fashion-mnist): 0-4 / 5-9
    emoji          Twemoji + OpenMoji + Noto, same emoji = same class (offline)
    icons          desktop icon themes (Debian packages), same icon name = same class
    folder         any <class>/<images> tree: class-disjoint halves
    """
    from udml_cli.data.prepare import prepare as run_prepare
    from udml_cli.errors import UsageError

    KINDS.lookup(kind)
    out = Path(ask(out, "Output folder", "--out"))
    reg_name = name or kind
    if not registry.valid_name(reg_name):
        raise UsageError(f"cannot register as '{reg_name}': pass --name with another name")
    if out.exists():
        from udml_cli.data.prepare.common import refuse_foreign

        refuse_foreign(out.expanduser().resolve())  # before asking: the answer could not matter
        confirm(f"{out} exists. Replace it?", yes, f"output folder {out} already exists")
    entries = registry.load_registry()
    if reg_name in entries and Path(entries[reg_name]["path"]) != out.expanduser().resolve():
        confirm(
            f"'{reg_name}' is registered at {entries[reg_name]['path']}. Replace the registration?",
            yes,
            f"dataset '{reg_name}' is already registered elsewhere; pass --name or --yes",
        )
    options = {"limit": limit, "split_ratio": split_ratio}
    with progress() as bar:
        root = run_prepare(kind, source, out, replace=True, link=not copy, progress=bar, **options)
    ref = registry.add_dataset(reg_name, root, "txt", force=True)
    console.print(f"prepared {kind} in {root}; registered as {ref.name}", soft_wrap=True)
