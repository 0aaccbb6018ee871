"""Training on a frozen backbone without running it every step (``train.feature_cache = C``,
``model.freeze_backbone = 1``): the pooled feature of every training image is computed once —
the plain view that targets are refreshed from, and ``C`` augmented views per image, each drawn
from a seed of (run seed, view, image) — and kept in ``RUN/feature_cache/`` (a memory-mapped
.npy). Each step then feeds the method rows of it in place of images, so only the heads run.

Exact, not an approximation, because nothing before the heads can change: every backbone
parameter (GeM's exponent too) is fixed, BatchNorm keeps its running statistics
(``model.freeze_bn``) and dropout is off (``model.dropout``); ``Config`` refuses the rest. What
changes is the augmentation: a step draws among the ``C`` cached views of an image instead of a
fresh one (distinct views for the views of one batch row).

A resumed run reuses the folder when it was made for the same model, data, seed, method and
images (``key.json``), and builds it again otherwise; an interrupted build leaves no key, so it is
never mistaken for a whole one.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from udml_cli.data.images import FAILED, ImageError
from udml_cli.engine import extract
from udml_cli.errors import DatasetError, note
from udml_cli.fileio import atomic_write_text
from udml_cli.npyfile import RowFile

FOLDER = "feature_cache"


def view_seed(seed: int, view: int, image: int) -> int:
    return int(np.random.SeedSequence([seed, 0xCAC4E, view, image]).generate_state(1)[0])


class _Views(torch.utils.data.Dataset):
    """Row ``v * n + i``: view ``v`` of image ``i`` (``(tensor, row)``, ``FAILED`` if unreadable)."""

    def __init__(self, augmented, views: int, seed: int) -> None:
        self.augmented, self.views, self.seed = augmented, views, seed
        self.n = len(augmented)

    def __len__(self) -> int:
        return self.views * self.n

    def __getitem__(self, row: int):
        v, i = divmod(row, self.n)
        torch.manual_seed(view_seed(self.seed, v, i))
        try:
            return self.augmented.transform(self.augmented.image(i)), row
        except ImageError:
            return torch.zeros(3, self.augmented.size, self.augmented.size), FAILED


class FeatureCache:
    """``plain``: (n, d) features of the plain view; ``rows(items)``: the cached views of
    ``[(image, view), …]`` as one (len(items), d) tensor."""

    def __init__(self, plain: np.ndarray, views: np.ndarray, count: int) -> None:
        self.plain, self.views, self.count = plain, views, count
        self.n = len(plain)

    def rows(self, items) -> torch.Tensor:
        at = np.fromiter((v * self.n + i for i, v in items), np.int64, len(items))
        return torch.from_numpy(np.ascontiguousarray(self.views[at]))

    @staticmethod
    def key(cfg, images) -> dict:
        """What the cached rows are a function of."""
        rels = hashlib.sha256("\n".join(s.rel for s in images.plain.samples).encode()).hexdigest()
        return {
            "version": 1, "model": cfg.model.model_dump(mode="json"),
            "data": cfg.data.model_dump(mode="json"), "method": cfg.train.method,
            "invariance": cfg.invariance.model_dump(mode="json"), "seed": cfg.train.seed,
            "views": cfg.train.feature_cache, "images": len(images), "rels": rels,
        }  # fmt: skip

    @classmethod
    def open(cls, trainer) -> FeatureCache:
        """The run's cache: the one on disk when its key matches, else built."""
        cfg, images = trainer.cfg, trainer.images
        folder, count = trainer.out / FOLDER, cfg.train.feature_cache
        if _matches(folder, cls.key(cfg, images)):
            return cls.load(folder, count)
        plain = trainer.plain_features()  # leaves out unreadable images first
        key = cls.key(cfg, images)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "key.json").unlink(missing_ok=True)  # not whole until written again
        model, engine = trainer.model, trainer.engine
        model.eval()
        part = folder / "views.npy.part"  # a new file: a reader of the old one keeps its rows
        rows = RowFile(part)
        data = _Views(images.augmented, count, cfg.train.seed)
        with torch.no_grad():
            _, index = extract(model.features, data, engine, cfg.eval.batch_size,
                               f"caching {count} views", trainer.progress, rows.allocate)  # fmt: skip
        rows.finish(len(data))
        bad = (index == FAILED).nonzero()[0]
        if len(bad):
            path = images.plain.paths[int(bad[0]) % len(images)]
            raise DatasetError(f"{path}: became unreadable while caching its features; restore it")
        os.replace(part, folder / "views.npy")
        with open(folder / "plain.npy.part", "wb") as fh:
            np.save(fh, plain)
        os.replace(folder / "plain.npy.part", folder / "plain.npy")
        atomic_write_text(folder / "key.json", json.dumps(key, indent=1))
        mb = len(data) * plain.shape[1] * 4 / 2**20
        note(f"feature cache: {count} views × {len(images)} images ({mb:.0f} MB) in {folder}; "
             "each step runs the heads only")  # fmt: skip
        return cls.load(folder, count)

    @classmethod
    def load(cls, folder: Path, count: int) -> FeatureCache:
        return cls(np.load(folder / "plain.npy"), np.load(folder / "views.npy", mmap_mode="r"),
                   count)  # fmt: skip


def _matches(folder: Path, key: dict) -> bool:
    try:
        return json.loads((folder / "key.json").read_text()) == key and \
            all((folder / f).is_file() for f in ("plain.npy", "views.npy"))  # fmt: skip
    except (OSError, ValueError):
        return False
