"""Stanford Online Products (``Ebay_train.txt``, ``Ebay_test.txt``) → the official split."""

from __future__ import annotations

from pathlib import Path

from udml_cli.data.prepare.common import track
from udml_cli.errors import DatasetError


def _rows(path: Path) -> list[tuple[int, str]]:
    if not path.is_file():
        raise DatasetError(f"{path} missing: --source must be the Stanford_Online_Products folder")
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if lineno == 1 and parts and parts[0] == "image_id":
            continue
        if not parts:
            continue
        try:
            rows.append((int(parts[1]), parts[3]))
        except (ValueError, IndexError):
            raise DatasetError(f"{path}:{lineno}: malformed line {line!r}") from None
    return rows


def convert(source: Path, writer, progress=None, **_) -> None:
    for split, name in (("train", "Ebay_train.txt"), ("test", "Ebay_test.txt")):
        rows = _rows(source / name)
        for class_id, rel in track(progress, rows, f"SOP {split}"):
            writer.add_file(split, rel, source / rel, class_id - 1)
    writer.finish("Stanford Online Products (Oh Song et al. 2016); official split.\n")
