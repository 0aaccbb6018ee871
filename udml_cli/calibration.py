"""The duplicate threshold, calibrated on the user's own images when ``udml index`` runs.

A sample of the indexed images is edited the ways people edit the pictures they duplicate
(``data/named_edits.py``: crop, mirror, brightness, greyscale, rotation, blur, shrink + JPEG,
a caption; mild and strong) and each copy's similarity to its original is measured: the
positives. The negatives are every image's most similar *other* image in the folder (one exact
search over the index, nothing to embed; 20,000 images drawn beyond that) — except a neighbour at
least as close as a typical edited copy (the median of the sample's copies), which is taken for a
copy the folder already holds (counted as a non-copy, it would push the threshold above the
copies the user wants found). The threshold is the lowest at which

    precision = recall / (recall + false-match rate) ≥ the asked precision

(the precision a review would see with as many true copies as look-alike pairs), so it does
not depend on how many copies the folder happens to hold; the recall each edit kind would have
at it is stored with it and printed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from udml_cli.data.named_edits import KINDS, STRENGTHS, apply

DEFAULT_PRECISION = 0.99
# the threshold without calibration (and with too few look-alikes to calibrate on): resized +
# re-encoded copies score above it, distinct images below (BENCHMARKS.md, "Duplicates")
DEFAULT_THRESHOLD = 0.95
MIN_NEGATIVES = 10  # fewer look-alike images than this: the default threshold is kept


@dataclass
class Calibration:
    threshold: float
    precision: float  # asked
    sample: int  # originals edited
    recall: dict[str, float]  # per edit kind, at the threshold (mild and strong together)
    false_match_rate: float  # of the negatives, at the threshold
    hardest_negative: float
    negatives: int  # images whose nearest other image is not taken for a copy

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d) -> Calibration | None:
        try:
            c = cls(float(d["threshold"]), float(d["precision"]), int(d["sample"]),
                    {str(k): float(v) for k, v in d["recall"].items()},
                    float(d["false_match_rate"]), float(d["hardest_negative"]),
                    int(d["negatives"]))  # fmt: skip
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
        return c if -1 <= c.threshold <= 1.0001 else None

    def summary(self) -> str:
        if self.negatives < MIN_NEGATIVES:
            return (
                f"duplicate threshold: the default {self.threshold} (only {self.negatives} images "
                f"have a look-alike that is not taken for a copy to calibrate against; at least "
                f"{MIN_NEGATIVES} are needed)"
            )
        kinds = ", ".join(f"{k} {100 * v:.0f}%" for k, v in self.recall.items())
        return (
            f"duplicate threshold {self.threshold:.4f} for precision {self.precision:g}, "
            f"calibrated on edited copies of {self.sample} of these images against each image's "
            f"most similar other image ({self.negatives} not taken for copies, "
            f"{100 * self.false_match_rate:.1f}% above it); expected recall per edit: {kinds} "
            "(by the embedding alone: udml duplicates also joins perceptual hashes and checks "
            "closer candidates by local features)"
        )


def sample_size(n: int) -> int:
    """Originals to edit: 16 copies are embedded per original, so 200 at most (3 % of the
    embedding time of 100,000 images), at least 30 (fewer cannot place a threshold)."""
    return min(n, max(30, min(200, n // 250)))


def choose_threshold(pos: np.ndarray, neg: np.ndarray, precision: float) -> float:
    """The lowest similarity at which recall / (recall + false-match rate) ≥ ``precision``
    with at least one copy found; above every negative when no such point exists."""
    cands = np.unique(np.concatenate([pos, neg]))
    p, n = np.sort(pos), np.sort(neg)
    recall = 1 - np.searchsorted(p, cands, "left") / max(len(p), 1)
    false = 1 - np.searchsorted(n, cands, "left") / max(len(n), 1)
    ok = (recall > 0) & (recall >= precision * (recall + false))
    if ok.any():
        return float(cands[np.flatnonzero(ok)[0]])
    return float(np.nextafter(np.float32(n.max() if len(n) else 1.0), np.float32(2)))


class _Synthesised:
    """``(tensor, i)`` of item ``i``, ``(path, kind, strength)``; ``(zeros, FAILED)`` when the
    file cannot be read."""

    def __init__(self, items, transform, size: int) -> None:
        self.items, self.transform, self.size = items, transform, size
        self.paths = [it[0] for it in items]
        self._decoded = (None, None)  # (path, image): an original's edits come one after another

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):  # a map-style dataset for torch's DataLoader
        import torch

        from udml_cli.data.images import FAILED, ImageError, load_rgb

        path, kind, which = self.items[i]
        im = self._decoded[1] if self._decoded[0] == path else None
        if im is None:  # decoded once for its sixteen edits (each edit returns a new image)
            try:
                im = load_rgb(path)
            except ImageError:
                return torch.zeros(3, self.size, self.size), FAILED
            self._decoded = (path, im)
        return self.transform(apply(im, kind, which)), i


def nearest_other(vectors: np.ndarray, rng, most: int = 20_000) -> np.ndarray:
    """The similarity of each row (of ``most`` drawn at random, beyond that) to its most similar
    other row: nothing to embed, one exact search."""
    import faiss

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if len(x) < 2:
        return np.zeros(0, np.float32)
    ask = np.sort(rng.choice(len(x), most, replace=False)) if len(x) > most else np.arange(len(x))
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    sim, found = index.search(x[ask], 2)
    other = np.where(found[:, 0] == ask, sim[:, 1], sim[:, 0])  # ties: the first need not be self
    return other.astype(np.float32)


def calibrate(model, cfg, vectors: np.ndarray, paths: list[Path], precision: float,
              progress=None, seed: int = 0, sample: int | None = None) -> Calibration:  # fmt: skip
    """Calibrate on ``paths`` (the indexed files, rows of ``vectors``) with their ``model``."""
    from udml_cli.data.transforms import eval_transform
    from udml_cli.engine import resolve_engine
    from udml_cli.errors import DatasetError
    from udml_cli.inference import embed_dataset

    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(paths), sample or sample_size(len(paths)), replace=False))
    edits = [(k, s) for k in KINDS for s in STRENGTHS]
    items = [(paths[r], k, s) for r in rows.tolist() for k, s in edits]
    data = _Synthesised(items, eval_transform(cfg.data), cfg.data.image_size)
    x, ok = embed_dataset(model, cfg, data, resolve_engine(cfg.engine, inference=True), "calibration copies",
                          progress, none_ok=True)  # fmt: skip
    full = np.full((len(items), vectors.shape[1]), np.nan, np.float32)
    full[ok] = x
    full = full.reshape(len(rows), len(edits), -1)
    sims = np.einsum("red,rd->re", full, vectors[rows])  # each copy against its original
    readable = ~np.isnan(sims).any(1)
    if not readable.any():
        raise DatasetError("none of the calibration sample's images could be read")
    sims = sims[readable]
    nearest = nearest_other(vectors, rng)
    negs = nearest[nearest < np.median(sims)].astype(np.float32)  # closer: taken for a copy
    t = choose_threshold(sims.ravel().astype(np.float32), negs, precision)
    if len(negs) < MIN_NEGATIVES:
        t = DEFAULT_THRESHOLD
    return Calibration(
        threshold=t, precision=precision, sample=len(sims),
        recall={k: round(float(np.mean(sims[:, [j for j, (kk, _) in enumerate(edits) if kk == k]]
                                       >= t)), 4) for k in KINDS},
        false_match_rate=round(float(np.mean(negs >= t)), 4) if len(negs) else 0.0,
        hardest_negative=round(float(negs.max()), 6) if len(negs) else -1.0,
        negatives=len(negs),
    )  # fmt: skip
