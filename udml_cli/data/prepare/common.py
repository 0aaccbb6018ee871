"""The layout writer shared by every converter, and the ``prepare`` driver."""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from udml_cli.errors import DatasetError, UsageError
from udml_cli.fileio import umask
from udml_cli.names import Registry


@dataclass(frozen=True)
class Kind:
    module: str  # udml_cli.data.prepare.<module>.convert
    default_source: str | None
    description: str


KINDS: Registry[Kind] = Registry("dataset kind", {
    "cub": Kind("cub", None, "CUB_200_2011 archive (images.txt, classes …): classes 1-100 / 101-200"),
    "cars": Kind("cars", None, "Cars196 (car_ims/ + cars_annos.mat): classes 1-98 / 99-196"),
    "sop": Kind("sop", None, "Stanford Online Products (Ebay_train.txt, Ebay_test.txt)"),
    "fashion-mnist": Kind("fashion_mnist", "/usr/share/datasets/fashion-mnist",
                          "Fashion-MNIST IDX .gz files: classes 0-4 of train / 5-9 of t10k"),
    "emoji": Kind("emoji", None, "one emoji drawn by Twemoji, OpenMoji and Noto = one class"),
    "icons": Kind("icons", "/usr/share/icons",
                  "one icon name drawn by 3+ desktop icon themes (Debian packages) = one class"),
    "folder": Kind("folder", None, "any <class>/<images> tree: class-disjoint halves"),
})  # fmt: skip


MARKER = ".udml-dataset"  # written into every prepared folder: what --yes may replace


def written_by_udml(folder: Path) -> bool:
    """A folder ``udml dataset prepare`` made (the marker; before it existed, the full layout
    with the SOURCE.txt that only prepare writes)."""
    if not folder.is_dir():
        return False
    if (folder / MARKER).is_file():
        return True
    return all((folder / n).is_file() for n in ("SOURCE.txt", "train.txt", "test.txt"))


class LayoutWriter:
    """Collects images into ``<root>/<split>/...`` and writes ``train.txt`` / ``test.txt``."""

    def __init__(self, root: Path, link: bool = True) -> None:
        self.root = root
        self.link = link
        self.lines: dict[str, list[str]] = {"train": [], "test": []}

    def _target(self, split: str, rel: str) -> Path:
        target = self.root / split / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def add_file(self, split: str, rel: str, src: Path, label: int, label2: int | None = None):
        target = self._target(split, rel)
        if not src.is_file():
            raise DatasetError(f"source image missing: {src}")
        if self.link:
            try:
                os.link(src, target)
            except OSError:
                shutil.copyfile(src, target)
        else:
            shutil.copyfile(src, target)
        self._record(split, rel, label, label2)

    def add_image(self, split: str, rel: str, image, label: int, label2: int | None = None):
        image.save(self._target(split, rel))
        self._record(split, rel, label, label2)

    def _record(self, split: str, rel: str, label: int, label2: int | None) -> None:
        if any(c.isspace() for c in rel):
            raise DatasetError(f"image path {rel!r} contains white space; rename it first")
        extra = f" {label2}" if label2 is not None else ""
        self.lines[split].append(f"{split}/{rel} {label}{extra}")

    def finish(self, notes: str | None = None) -> None:
        for split, lines in self.lines.items():
            (self.root / f"{split}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
        if notes:
            (self.root / "SOURCE.txt").write_text(notes)
        (self.root / MARKER).write_text("written by udml dataset prepare; --yes may replace it\n")


def prepare(
    kind: str,
    source: Path | None,
    out: Path,
    replace: bool = False,
    link: bool = True,
    progress=None,
    **options,
) -> Path:
    """Convert ``source`` into ``out``; ``out`` appears only when conversion succeeded."""
    spec = KINDS.lookup(kind)
    module_name, default_source = spec.module, spec.default_source
    if source is None:
        if default_source is None and kind != "emoji":
            raise UsageError(f"prepare {kind} needs --source (the downloaded, extracted archive)")
        source = Path(default_source) if default_source else None
    if source is not None and not source.exists():
        raise DatasetError(f"source not found: {source}")
    out = out.expanduser().resolve()
    if out.exists() and not replace:
        raise UsageError(f"output folder {out} already exists; use --yes to replace it")
    refuse_foreign(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    tmp.chmod(0o777 & ~umask())  # mkdtemp makes 0700
    try:
        module = importlib.import_module(f"udml_cli.data.prepare.{module_name}")
        writer = LayoutWriter(tmp, link=link)
        module.convert(source, writer, progress=progress, **options)
        if not writer.lines["train"] or not writer.lines["test"]:
            raise DatasetError(f"{kind} conversion of {source} produced an empty split")
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
    return out


def refuse_foreign(out: Path) -> None:
    """Only a folder udml prepared may be replaced; anything else is the user's."""
    if out.exists() and not written_by_udml(out):
        kind = "a file" if not out.is_dir() else "a folder udml did not prepare"
        raise UsageError(
            f"{out} is {kind}; refusing to replace it: choose another --out or remove it yourself"
        )


def track(progress, items, description: str, total: int | None = None):
    """Iterate ``items`` with a progress bar when a rich Progress is given."""
    if progress is None:
        yield from items
        return
    task = progress.add_task(description, total=total if total is not None else len(items))
    for item in items:
        yield item
        progress.advance(task)
