"""CUB-200-2011 official archive → first 100 classes train, last 100 test (the paper's split)."""

from __future__ import annotations

from pathlib import Path

from udml_cli.data.prepare.common import track
from udml_cli.errors import DatasetError

NUM_TRAIN_CLASSES = 100


def _read_table(path: Path) -> dict[int, str]:
    if not path.is_file():
        raise DatasetError(f"{path} missing: --source must be the extracted CUB_200_2011 folder")
    table = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        try:
            table[int(parts[0])] = parts[1].strip()
        except (ValueError, IndexError):
            raise DatasetError(f"{path}:{lineno}: malformed line {line!r}") from None
    return table


def convert(source: Path, writer, progress=None, **_) -> None:
    if not (source / "images.txt").exists() and (source / "CUB_200_2011").is_dir():
        source = source / "CUB_200_2011"
    images = _read_table(source / "images.txt")
    labels = _read_table(source / "image_class_labels.txt")
    classes = _read_table(source / "classes.txt")
    for image_id, rel in track(progress, sorted(images.items()), "CUB images"):
        if image_id not in labels:
            raise DatasetError(f"image {image_id} has no line in image_class_labels.txt")
        class_id = int(labels[image_id])
        if class_id not in classes:
            raise DatasetError(f"class {class_id} of image {image_id} is not in classes.txt")
        split = "train" if class_id <= NUM_TRAIN_CLASSES else "test"
        writer.add_file(split, rel, source / "images" / rel, class_id - 1)
    writer.finish("CUB-200-2011 (Wah et al. 2011); classes 1-100 train, 101-200 test.\n")
