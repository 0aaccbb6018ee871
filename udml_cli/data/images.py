"""Image datasets for torch: split samples with labels, and plain folders for ``udml embed``.

Every image udml reads is decoded by ``load_rgb``: the one place where a corrupt, truncated or
foreign file, or a decompression bomb, becomes an ``ImageError`` naming the file. Datasets used
for extraction return the sample's index, -1 for an image that failed, so every caller can skip
and list the failures (or stop under ``data.strict``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from udml_cli.data.layout import UNLABELLED, Sample
from udml_cli.errors import DatasetError

FAILED = -1  # the index an extraction dataset returns for an image that could not be decoded


class ImageError(DatasetError):
    """An image file that cannot be decoded."""


def load_rgb(path, name: str | None = None, at_least: int | None = None) -> Image.Image:
    """The image at ``path`` (a file name, or an open binary file: an upload) as RGB; one
    ``ImageError`` naming it (``name``, else ``path``) when it cannot be decoded. ``at_least``:
    a JPEG may be decoded at 1/2, 1/4 or 1/8 scale while both sides stay ≥ that many px (or
    the longer side, for a long picture; much faster for a large photograph)."""
    try:
        with warnings.catch_warnings():
            # Pillow warns above 89 M pixels and refuses above 179 M: both are skipped here
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if at_least is not None:
                    im.draft("RGB", (at_least, at_least))
                if im.mode == "P" and "transparency" in im.info:
                    im = im.convert("RGBA")  # the same colours, without Pillow's warning
                return im.convert("RGB")
    except Exception as e:  # Pillow raises many kinds for broken, truncated or foreign files
        reason = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        if name is not None:  # Pillow names an open file by its repr
            reason = reason.replace(f" {path!r}", "")
        if isinstance(e, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
            reason = "too many pixels (decompression bomb guard)"
        raise ImageError(f"{name or path}: cannot decode image ({reason})") from None


def _shrink(im: Image.Image, shorter: int) -> Image.Image:
    """Resize so the shorter side is ``shorter`` (only downwards: the cache stores no upsampling)."""
    w, h = im.size
    if min(w, h) <= shorter:
        return im
    scale = shorter / min(w, h)
    return im.resize((round(w * scale), round(h * scale)), Image.BILINEAR)


def _cached(path: Path, size: int) -> np.ndarray | None:
    try:
        return np.asarray(_shrink(load_rgb(path), size))
    except ImageError:
        return None


class ImageDataset(torch.utils.data.Dataset):
    """``(image tensor, index)`` for each sample, ``(zeros, FAILED)`` for one that cannot be
    decoded; ``labels`` (true or pseudo) are looked up by the caller.

    With ``cache_size`` set, images are decoded once, shrunk to that shorter side and kept in
    memory as uint8 arrays (shared with DataLoader workers by fork).
    """

    def __init__(
        self, samples: list[Sample], transform, cache_size: int | None = None, size: int = 8
    ) -> None:
        self.samples = samples
        self.paths = [s.path for s in samples]
        self.labels = np.array([s.label for s in samples], dtype=np.int64)
        self.transform = transform
        self.size = size
        self.cache: list[np.ndarray | None] | None = None
        if cache_size:
            self.cache = [_cached(p, cache_size) for p in self.paths]

    @classmethod
    def evaluated(cls, samples: list[Sample], data, cache_size: int | None = None):
        """``samples`` as evaluation sees them (``data``: a ``DataConfig``): shorter side to
        ``data.resize``, centre crop ``data.image_size``."""
        from udml_cli.data.transforms import eval_transform

        return cls(samples, eval_transform(data), cache_size=cache_size, size=data.image_size)

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, i: int) -> Image.Image:
        if self.cache is not None:
            if self.cache[i] is None:
                raise ImageError(f"{self.paths[i]}: cannot decode image")
            return Image.fromarray(self.cache[i])
        return load_rgb(self.paths[i])

    def __getitem__(self, i: int):
        try:
            return self.transform(self.image(i)), i
        except ImageError:
            return torch.zeros(3, self.size, self.size), FAILED


class FolderDataset(ImageDataset):
    """Every file of a folder, unlabelled (``udml embed``, ``udml index``, queries)."""

    def __init__(self, files: list[Path], transform, size: int) -> None:
        samples = [Sample(Path(f), UNLABELLED, Path(f).name) for f in files]
        super().__init__(samples, transform, size=size)


def report_unreadable(
    paths: list, total: int, strict: bool, where: str, none_ok: bool = False
) -> None:
    """Stop (``strict``) or warn once about images that could not be decoded; ``none_ok``: the
    caller has other rows (an index update), so all of these failing is not an error."""
    from udml_cli.errors import warn

    if not paths:
        return
    if len(paths) == total and not none_ok:
        raise DatasetError(
            f"none of the {total} images of {where} could be read (first: {paths[0]})"
        )
    if strict:
        raise DatasetError(
            f"{len(paths)} unreadable images in {where} (first: {paths[0]}); "
            "without --strict they are skipped"
        )
    warn(f"skipped {len(paths)} unreadable images of {where} (first: {paths[0]})")


class SeededImages(ImageDataset):
    """Indexed by ``(i, seed)``: the augmentation of each draw is a function of its seed (what
    makes a resumed run bit-identical). The trainer takes each batch's labels from its sampler;
    ``labels`` (the samples' own unless set) are what a bare loader over it yields."""

    def __getitem__(self, item):
        i, seed = item
        torch.manual_seed(seed)
        return self.transform(self.image(i)), int(self.labels[i])
