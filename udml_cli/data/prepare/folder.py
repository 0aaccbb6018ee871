"""Any ``<class>/<images>`` tree → class-disjoint train/test halves (or ``split_ratio``)."""

from __future__ import annotations

from pathlib import Path

from udml_cli.data.layout import is_image
from udml_cli.data.prepare.common import track
from udml_cli.errors import DatasetError, UsageError


def convert(source: Path, writer, progress=None, split_ratio: float = 0.5, **_) -> None:
    if not 0 < split_ratio < 1:
        raise UsageError(f"--split-ratio must be between 0 and 1, got {split_ratio}")
    classes = sorted(p for p in source.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise DatasetError(f"{source}: need at least 2 class folders, found {len(classes)}")
    n_train = min(max(1, int(len(classes) * split_ratio + 0.5)), len(classes) - 1)
    for label, cls in enumerate(track(progress, classes, "classes")):
        split = "train" if label < n_train else "test"
        for img in sorted(cls.rglob("*")):
            if img.is_file() and is_image(img):
                rel = f"{cls.name}/{img.relative_to(cls).as_posix()}".replace(" ", "_")
                writer.add_file(split, rel, img, label)
    writer.finish(f"Converted from {source}: first {n_train} of {len(classes)} classes train.\n")
