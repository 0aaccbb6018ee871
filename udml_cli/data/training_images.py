"""The images a run trains on: its training split as plain views (centre crop: what methods
refresh their targets from) and augmented ones (what batches are made of), less the images found
unreadable at the first pass (left out for the whole run, listed in ``RUN/skipped.txt`` and the
checkpoint, so a resume agrees)."""

from __future__ import annotations

from pathlib import Path

import torch

from udml_cli.data.images import FAILED, ImageDataset, SeededImages, report_unreadable
from udml_cli.data.transforms import Squash, train_transform
from udml_cli.engine import extract
from udml_cli.errors import DatasetError, note
from udml_cli.fileio import atomic_write_text


class TrainingImages:
    def __init__(self, cfg, samples, check, augment=None) -> None:
        self.cfg, self.check = cfg, check  # ``check(cfg, n)``: the method's check of the data
        self.augment = augment or train_transform(cfg.data)  # PIL → the view of a batch
        self.skipped: list[str] = []  # relative paths, left out
        self.scanned = False  # every image decoded once (by ``features`` or ``scan``)
        self._use(samples)

    def _use(self, samples) -> None:
        cfg = self.cfg
        cache = cfg.data.resize if cfg.data.cache else None
        self.plain = ImageDataset.evaluated(samples, cfg.data, cache)
        self.augmented = SeededImages(samples, self.augment)
        self.augmented.cache = self.plain.cache

    def __len__(self) -> int:
        return len(self.plain)

    def leave_out(self, rels: set[str]) -> None:
        """Train without these images (unreadable at the first pass)."""
        kept = [s for s in self.plain.samples if s.rel not in rels]
        self.skipped = sorted(set(self.skipped) | rels)
        if len(kept) != len(self.plain.samples):
            self._use(kept)
            self.check(self.cfg, len(kept))

    def view(self, kind: str) -> ImageDataset:
        """The images as a method's refresh sees them: ``eval`` (shorter side to data.resize,
        centre crop data.image_size) or ``squash`` (the whole image at data.resize²)."""
        if kind == "eval":
            return self.plain
        if kind != "squash":
            raise ValueError(f"unknown view {kind!r}")
        size = self.cfg.data.resize
        return ImageDataset(self.plain.samples, Squash(size), size=size)

    @torch.no_grad()
    def features(self, model, engine, progress, started: bool, out: Path | None, where: str,
                 view: str = "eval"):  # fmt: skip
        """The pooled backbone feature of every image (in ``view``). Before the run has
        ``started``, unreadable images are left out (``out``: where skipped.txt goes; None on
        ranks that do not write); after, one is an error."""
        model.eval()
        feat, index = extract(model.features, self.view(view), engine, self.cfg.eval.batch_size,
                              "embedding train", progress)  # fmt: skip
        keep = self._leave_out_failed(index, started, out, where)
        return feat if keep.all() else feat[keep]

    def scan(self, engine, progress, out: Path | None, where: str) -> bool:
        """Decode every image once, no network, and leave out the unreadable ones (as
        ``features`` does before the run starts): for a method whose first refresh computes no
        features, so that a broken file is skipped and listed, not an error mid-run. True when
        it left some out; nothing to do (False) once every image has been read."""
        if self.scanned:
            return False

        def nothing(x):
            return x.new_zeros((len(x), 1))

        _, index = extract(nothing, self.plain, engine, self.cfg.eval.batch_size,
                           "reading train", progress, on_host=True)  # fmt: skip
        return not self._leave_out_failed(index, False, out, where).all()

    def _leave_out_failed(self, index, started: bool, out: Path | None, where: str):
        """The rows of ``index`` (an extraction's keys) that are readable; the unreadable images
        left out and listed in ``out/skipped.txt`` (an error once the run has ``started``)."""
        keep = index != FAILED
        bad = (~keep).nonzero()[0]
        self.scanned = True
        if not len(bad):
            return keep
        paths = [str(self.plain.paths[i]) for i in bad]
        if started:  # readable before: changed during the run
            raise DatasetError(f"{paths[0]}: became unreadable during training; restore it")
        report_unreadable(paths, len(index), self.cfg.data.strict, where)
        self.leave_out({self.plain.samples[i].rel for i in bad})
        if out is not None:
            atomic_write_text(out / "skipped.txt", "".join(f"{r}\n" for r in self.skipped))
            note(f"{len(bad)} unreadable training images are left out: {out / 'skipped.txt'}")
        return keep
