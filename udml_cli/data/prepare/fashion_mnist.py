"""Fashion-MNIST IDX files → PNGs; train = classes 0–4 of the training file, test = 5–9 of t10k."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from udml_cli.data.prepare.common import track
from udml_cli.errors import DatasetError

CLASSES = ["tshirt", "trouser", "pullover", "dress", "coat",
           "sandal", "shirt", "sneaker", "bag", "boot"]  # fmt: skip


def read_idx(path: Path) -> np.ndarray:
    """IDX (big-endian): magic with the number of dimensions, then the sizes, then uint8 data."""
    if not path.is_file():
        raise DatasetError(f"{path} missing (Debian package dataset-fashion-mnist provides it)")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
        zero, dtype, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype != 0x08:
            raise ValueError("bad magic number")
        shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
        arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
        return arr.reshape(shape)
    except (OSError, ValueError, struct.error, EOFError) as e:
        raise DatasetError(f"{path}: not a valid IDX file ({e})") from None


def convert(source: Path, writer, progress=None, limit: int | None = None, **_) -> None:
    from PIL import Image

    for split, prefix, wanted in (("train", "train", range(0, 5)), ("test", "t10k", range(5, 10))):
        images = read_idx(source / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(source / f"{prefix}-labels-idx1-ubyte.gz")
        if len(images) != len(labels):
            raise DatasetError(f"{source}: {prefix} images and labels differ in count")
        idx = [i for i in range(len(labels)) if labels[i] in wanted]
        if limit:
            idx = idx[:limit]
        for i in track(progress, idx, f"Fashion-MNIST {split}"):
            label = int(labels[i])
            rel = f"{label}_{CLASSES[label]}/{i:05d}.png"
            writer.add_image(split, rel, Image.fromarray(images[i], mode="L"), label)
    writer.finish(
        "Fashion-MNIST (Xiao et al. 2017, MIT licence); classes 0-4 of train, 5-9 of t10k.\n"
    )
