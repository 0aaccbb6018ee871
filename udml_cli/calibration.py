"""The duplicate threshold, calibrated on the user's own images when ``udml index`` runs.

A sample of the indexed images is edited the ways people edit the pictures they duplicate
(``data/named_edits.py``: crop, mirror, brightness, greyscale, rotation, blur, shrink + JPEG,
a caption; each original every kind once, mild or strong in turn) and each copy's similarity
to its original is measured: the positives. The negatives are each image's look-alikes, found
by one exact search over the index (nothing to embed; 20,000 images drawn beyond that): its
most similar *other* image — unless that one is at least as close as a typical edited copy
(the median of the sample's copies), which the embedding alone cannot tell from a copy the
folder already holds. Local features can
(``negatives``, when OpenCV is installed): for a sample of the images that close to another (as
many as ``walk_pictures`` pictures' keypoints allow: ~4 % of the embedding's time), the close
neighbours are checked as ``udml duplicates`` checks a pair (``verify.py``), and every one
that is another picture (both textured, no transform maps one onto the other: two halves of one
photograph of grass) is a look-alike of that image, as is its first neighbour below the median.
Without that look, a folder whose images each have copies hid every look-alike behind them, and
the threshold could not rise above the median copy: on the copy benchmark it measured precision
0.94 for the asked 0.99 (BENCHMARKS.md). The threshold is the lowest at which

    precision = recall / (recall + false-match rate) ≥ the asked precision

with the false-match rate the look-alikes at least that similar per image (the sampled ones
weighted for those not walked): the precision a review would see if each image had one copy,
so it does not depend on how many copies the folder happens to hold; the recall each edit kind
would have at it is stored with it and printed. Without OpenCV the close neighbours are left out,
as before.
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
    false_match_rate: float  # look-alikes at least as similar as the threshold, per image
    hardest_negative: float
    negatives: int  # images whose look-alikes were counted
    judged: int = 0  # look-alikes as close as a copy, told apart from copies by local features

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d) -> Calibration | None:
        try:
            c = cls(float(d["threshold"]), float(d["precision"]), int(d["sample"]),
                    {str(k): float(v) for k, v in d["recall"].items()},
                    float(d["false_match_rate"]), float(d["hardest_negative"]),
                    int(d["negatives"]), int(d.get("judged", 0)))  # fmt: skip
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
        judged = (
            f"; {self.judged} look-alikes as close as copies, told apart by local features"
            if self.judged
            else ""
        )
        return (
            f"duplicate threshold {self.threshold:.4f} for precision {self.precision:g}, "
            f"calibrated on edited copies of {self.sample} of these images against the "
            f"look-alikes of {self.negatives} ({self.false_match_rate:.3f} look-alikes an image "
            f"above the threshold{judged}); expected recall per edit: {kinds} "
            "(by the embedding alone: udml duplicates also joins perceptual hashes and checks "
            "closer candidates by local features)"
        )


def sample_size(n: int) -> int:
    """Originals to edit: 8 copies are embedded per original (``sample_edits``), so 200 at most
    (1.6 % of the embedding time of 100,000 images), at least 30 (fewer cannot place a threshold)."""
    return min(n, max(30, min(200, n // 250)))


def sample_edits(i: int) -> list[tuple[str, str]]:
    """The edits the ``i``-th original of the sample gets: every kind once, mild and strong
    alternating (between kinds and between originals), so each kind is seen at both strengths
    in equal numbers. Against both strengths of every kind for each original, the copy
    benchmark's threshold over 30 draws was the same (0.9615 ± 0.0008 against 0.9612 ± 0.0007)
    at half the embedding (BENCHMARKS.md, "Calibration cost")."""
    return [(k, STRENGTHS[(i + j) % len(STRENGTHS)]) for j, k in enumerate(KINDS)]


def choose_threshold(pos: np.ndarray, neg: np.ndarray, precision: float,
                     weights: np.ndarray | None = None, images: float | None = None) -> float:  # fmt: skip
    """The lowest similarity at which recall / (recall + false-match rate) ≥ ``precision``
    with at least one copy found; above every negative when no such point exists. The
    false-match rate at ``t``: the ``weights`` of the negatives at least ``t`` similar over
    ``images`` (default: one each, over how many there are)."""
    pos, neg = np.asarray(pos, np.float32), np.asarray(neg, np.float32)
    w = np.ones(len(neg)) if weights is None else np.asarray(weights, np.float64)
    images = float(len(neg)) if images is None else float(images)
    cands = np.unique(np.concatenate([pos, neg]))
    p = np.sort(pos)
    order = np.argsort(neg, kind="stable")
    above = np.concatenate([[0.0], np.cumsum(w[order])])  # weight below each candidate: above[k]
    recall = 1 - np.searchsorted(p, cands, "left") / max(len(p), 1)
    false = (above[-1] - above[np.searchsorted(neg[order], cands, "left")]) / max(images, 1)
    ok = (recall > 0) & (recall >= precision * (recall + false))
    if ok.any():
        return float(cands[np.flatnonzero(ok)[0]])
    return float(np.nextafter(np.float32(neg.max() if len(neg) else 1.0), np.float32(2)))


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
        if im is None:  # decoded once for its eight edits (each edit returns a new image)
            try:
                im = load_rgb(path)
            except ImageError:
                return torch.zeros(3, self.size, self.size), FAILED
            self._decoded = (path, im)
        return self.transform(apply(im, kind, which)), i


def _flat(vectors: np.ndarray):
    """An exact inner-product faiss index of ``vectors``."""
    import faiss

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    return index


def nearest_other(vectors: np.ndarray, rng, most: int = 20_000, rows: bool = False,
                  index=None):  # fmt: skip
    """The similarity of each row (of ``most`` drawn at random, beyond that) to its most similar
    other row: nothing to embed, one exact search (on ``index`` when the caller has built
    ``_flat(vectors)``). ``rows``: ``(rows asked, similarities)``."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if len(x) < 2:
        return (np.zeros(0, np.int64), np.zeros(0, np.float32)) if rows else np.zeros(0, np.float32)
    ask = np.sort(rng.choice(len(x), most, replace=False)) if len(x) > most else np.arange(len(x))
    index = _flat(x) if index is None else index
    sim, found = index.search(x[ask], 2)
    other = np.where(found[:, 0] == ask, sim[:, 1], sim[:, 0])  # ties: the first need not be self
    return (ask, other.astype(np.float32)) if rows else other.astype(np.float32)


def walk_size(n: int) -> int:
    """Images whose close neighbours local features judge, at most: 300 at least (a look-alike
    pair among a few per cent of the images is then seldom missed), 500 at most."""
    return min(n, max(300, min(500, n // 200)))


def walk_pictures(n: int) -> int:
    """Pictures whose keypoints the walk may find (the walked images and their close
    neighbours): finding and matching one 512 px picture's keypoints costs about what embedding
    an image does, up to 1.3× (75–100 ms against 76–80 ms on 2 cores), so 4 % of the images
    (≤ ~5 % of the index's time; a 2,500 cap: ~3 % of 100,000), and 400 at least: on the copy
    benchmark (every image with 16 close copies) that walks ~100 images, and the threshold over
    30 draws was 0.9610 ± 0.0012 against 0.9616 walking every one (BENCHMARKS.md, "Calibration
    cost")."""
    return max(400, min(2500, n // 25))


def walk_prefix(candidates: np.ndarray, sim: np.ndarray, found: np.ndarray, floor: float,
                budget: int) -> int:  # fmt: skip
    """How many of ``candidates`` (in walking order; ``sim``, ``found``: each one's nearest
    rows, itself among them) fit in ``budget`` pictures: each brings itself and its
    neighbours at least ``floor`` similar; the first is always walked."""
    seen: set[int] = set()
    for k, (row, s, f) in enumerate(zip(candidates.tolist(), sim, found, strict=True)):
        new = {row} | set(f[(s >= floor) & (f >= 0) & (f != row)].tolist())
        if k and len(seen | new) > budget:
            return k
        seen |= new
    return len(candidates)


@dataclass
class Negatives:
    """Look-alike similarities: ``sims`` with their ``weights``, from ``images`` images; the
    false-match rate at ``t`` is the weight at least ``t`` over ``images``."""

    sims: np.ndarray
    weights: np.ndarray
    images: int
    judged: int = 0  # look-alikes at least as close as the floor, told apart by local features

    def rate(self, t: float) -> float:
        return float(self.weights[self.sims >= t].sum() / max(self.images, 1))


def negatives(vectors: np.ndarray, paths: list[Path], floor: float, rng, progress=None,
              judge: bool = True) -> Negatives:  # fmt: skip
    """Each image's look-alikes (of 20,000 drawn at random, beyond that): its most similar
    other image when that is below ``floor``; when it is not (a copy the folder holds, or a
    look-alike as close as one), with ``judge``, local features walk a sample of such images
    (at most ``walk_size`` images, ``walk_pictures`` pictures' keypoints): every neighbour at
    least ``floor`` similar that they say is another picture, and the first below ``floor``,
    each weighted for the images not walked."""
    from udml_cli import verify

    index = _flat(vectors)  # one for every search
    asked, nearest = nearest_other(vectors, rng, rows=True, index=index)
    cheap = nearest[nearest < floor].astype(np.float32)
    close = asked[nearest >= floor]
    if not (judge and len(close)):  # the close ones cannot be told from copies: left out
        return Negatives(cheap, np.ones(len(cheap)), len(cheap))
    order = rng.permutation(close)[: walk_size(len(paths))]
    sim, found = index.search(np.ascontiguousarray(vectors[order], np.float32),
                              min(verify.NEIGHBOURS + 1, len(vectors)))  # fmt: skip
    k = walk_prefix(order, sim, found, floor, walk_pictures(len(paths)))
    walk = order[:k]
    judged, first = judged_negatives(paths, walk, sim[:k], found[:k], floor, progress)
    sims = np.concatenate([cheap, judged, first]).astype(np.float32)
    w = np.concatenate(
        [np.ones(len(cheap)), np.full(len(judged) + len(first), len(close) / len(walk))]
    )
    return Negatives(sims, w, len(asked), len(judged))


def judged_negatives(paths: list[Path], rows: np.ndarray, sim: np.ndarray, found: np.ndarray,
                     floor: float, progress=None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``(judged, first)`` for ``rows``, whose nearest other is at least ``floor`` similar
    (``sim``, ``found``: each row's nearest, itself among them, at most ``verify.NEIGHBOURS``
    others): the similarities of every neighbour at least ``floor`` similar that local features
    say is another picture (both textured, no transform maps one onto the other), and of the
    first below ``floor``."""
    from udml_cli import verify

    mine = (found != rows[:, None]) & (found >= 0)
    look = mine & (sim >= floor)
    r, c = np.repeat(rows, look.sum(1)), found[look]
    inliers, coverage, texture = verify.verify_pairs(paths, r, c, progress,
                                                     what="calibration: look-alikes or copies")  # fmt: skip
    other = verify.is_other(inliers, coverage, texture)
    below = mine & (sim < floor)
    has = below.any(1)
    first = sim[np.flatnonzero(has), below.argmax(1)[has]]
    return sim[look][other].astype(np.float32), first.astype(np.float32)


def calibrate(model, cfg, vectors: np.ndarray, paths: list[Path], precision: float,
              progress=None, seed: int = 0, sample: int | None = None) -> Calibration:  # fmt: skip
    """Calibrate on ``paths`` (the indexed files, rows of ``vectors``) with their ``model``."""
    from udml_cli import verify
    from udml_cli.data.transforms import eval_transform
    from udml_cli.engine import resolve_engine
    from udml_cli.errors import DatasetError
    from udml_cli.inference import embed_dataset

    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(paths), sample or sample_size(len(paths)), replace=False))
    items = [(paths[r], k, s) for i, r in enumerate(rows.tolist()) for k, s in sample_edits(i)]
    data = _Synthesised(items, eval_transform(cfg.data), cfg.data.image_size)
    x, ok = embed_dataset(model, cfg, data, resolve_engine(cfg.engine, inference=True), "calibration copies",
                          progress, none_ok=True)  # fmt: skip
    full = np.full((len(items), vectors.shape[1]), np.nan, np.float32)
    full[ok] = x
    full = full.reshape(len(rows), len(KINDS), -1)  # kinds in KINDS order
    sims = np.einsum("red,rd->re", full, vectors[rows])  # each copy against its original
    readable = ~np.isnan(sims).any(1)
    if not readable.any():
        raise DatasetError("none of the calibration sample's images could be read")
    sims = sims[readable]
    median = float(np.median(sims))
    negs = negatives(vectors, paths, median, rng, progress, judge=verify.available())
    t = choose_threshold(sims.ravel().astype(np.float32), negs.sims, precision, negs.weights,
                         negs.images)  # fmt: skip
    if negs.images < MIN_NEGATIVES:
        t = DEFAULT_THRESHOLD
    return Calibration(
        threshold=t, precision=precision, sample=len(sims),
        recall={k: round(float(np.mean(sims[:, j] >= t)), 4) for j, k in enumerate(KINDS)},
        false_match_rate=round(negs.rate(t), 4),
        hardest_negative=round(float(negs.sims.max()), 6) if len(negs.sims) else -1.0,
        negatives=negs.images, judged=negs.judged,
    )  # fmt: skip
