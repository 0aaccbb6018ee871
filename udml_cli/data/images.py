"""Image datasets for torch: split samples with labels, and plain folders for ``udml embed``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from udml_cli.data.layout import Sample, is_image


def load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def _shrink(im: Image.Image, shorter: int) -> Image.Image:
    """Resize so the shorter side is ``shorter`` (only downwards: the cache stores no upsampling)."""
    w, h = im.size
    if min(w, h) <= shorter:
        return im
    scale = shorter / min(w, h)
    return im.resize((round(w * scale), round(h * scale)), Image.BILINEAR)


class ImageDataset(torch.utils.data.Dataset):
    """``(image tensor, label)`` for each sample; labels can be swapped for pseudo-labels.

    With ``cache_size`` set, images are decoded once, shrunk to that shorter side and kept in
    memory as uint8 arrays (shared with DataLoader workers by fork).
    """

    def __init__(self, samples: list[Sample], transform, cache_size: int | None = None) -> None:
        self.samples = samples
        self.paths = [s.path for s in samples]
        self.labels = np.array([s.label for s in samples], dtype=np.int64)
        self.transform = transform
        self.cache: list[np.ndarray] | None = None
        if cache_size:
            self.cache = [np.asarray(_shrink(load_rgb(p), cache_size)) for p in self.paths]

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, i: int) -> Image.Image:
        if self.cache is not None:
            return Image.fromarray(self.cache[i])
        return load_rgb(self.paths[i])

    def __getitem__(self, i: int):
        return self.transform(self.image(i)), int(self.labels[i])


def list_images(folder: Path, recursive: bool) -> list[Path]:
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.is_file() and is_image(p))


class FolderDataset(torch.utils.data.Dataset):
    """Every file of a folder; an unreadable file yields label -1 so callers can drop and name it."""

    def __init__(self, files: list[Path], transform, size: int) -> None:
        self.files = files
        self.transform = transform
        self.size = size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        try:
            return self.transform(load_rgb(self.files[i])), i
        except Exception:  # Pillow raises many kinds for broken or non-image files
            return torch.zeros(3, self.size, self.size), -1
