"""Cars196 (``car_ims/`` + ``cars_annos.mat``) → classes 1–98 train, 99–196 test (all images)."""

from __future__ import annotations

from pathlib import Path

from udml_cli.data.prepare.common import track
from udml_cli.errors import DatasetError

NUM_TRAIN_CLASSES = 98


def convert(source: Path, writer, progress=None, **_) -> None:
    from scipy.io import loadmat

    mat_path = source / "cars_annos.mat"
    if not mat_path.is_file():
        raise DatasetError(f"{mat_path} missing: --source must hold car_ims/ and cars_annos.mat")
    try:
        annos = loadmat(mat_path, squeeze_me=True)["annotations"]
        rows = [(str(a["relative_im_path"]), int(a["class"])) for a in annos]
    except Exception as e:  # scipy raises several kinds for damaged files
        raise DatasetError(f"{mat_path}: not a Cars196 annotation file ({e})") from None
    for rel, class_id in track(progress, rows, "Cars196 images"):
        split = "train" if class_id <= NUM_TRAIN_CLASSES else "test"
        name = Path(rel).name
        writer.add_file(split, f"{class_id:03d}/{name}", source / rel, class_id - 1)
    writer.finish("Cars196 (Krause et al. 2013); classes 1-98 train, 99-196 test.\n")
