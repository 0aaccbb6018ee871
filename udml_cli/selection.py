"""Label-free model selection: scores computed on a collection's own images, no labels, so a
user can choose a layer, a checkpoint or a method without R@1.

For a fixed sample of the images (the same draw for every model scored: comparable numbers), one
edited copy of each (``data/edits.CopyEdits``: crop, flip, colour, greyscale, blur, rotation,
JPEG; the same copies for every model; several of each when the stage pick's sample,
``model.auto_images``, is larger than the collection) is embedded with the originals:
- ``copy_r1``: the fraction of copies whose nearest original is their own;
- ``copy_mrr``: the mean reciprocal rank of the own original among the sampled originals;
- ``knn_overlap``: the mean overlap of each original's 10 nearest originals with its copy's
  10 nearest originals (the neighbourhood a user browses survives the edit).
``score`` (the one to rank by) is their mean.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from udml_cli.data.edits import CopyEdits
from udml_cli.data.images import FAILED, ImageDataset

KNN = 10
COPIES_MAX = 8  # edited copies of each image at most, when the stage pick's sample is larger


class _Copies(ImageDataset):
    """Image ``i`` edited with the seed ``seeds[i]``."""

    def __init__(self, samples, seeds, size: int, cache=None) -> None:
        super().__init__(samples, CopyEdits(size), size=size)
        self.seeds, self.cache = seeds, cache

    def __getitem__(self, i: int):
        torch.manual_seed(int(self.seeds[i]))
        return super().__getitem__(i)


def sample_rows(n: int, count: int, seed: int) -> np.ndarray:
    """The rows scored: ``count`` of ``n`` (all when fewer), the same for every model."""
    if n <= count:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, 11]).choice(n, count, replace=False))


def label_free_scores(model, cfg, plain: ImageDataset, engine, progress=None,
                      where: str = "train") -> dict:  # fmt: skip
    """The label-free scores of ``model`` on the images of ``plain`` (the centre-crop view, as
    evaluation sees them), over ``cfg.eval.label_free`` of them."""
    start = time.perf_counter()
    x, y = copy_embeddings(model, cfg, plain, engine, progress, where)
    scores = copy_scores(x, y)
    scores.update(images=len(x), seconds=round(time.perf_counter() - start, 3))
    return scores


def copy_embeddings(model, cfg, plain: ImageDataset, engine, progress=None, where: str = "train",
                    forward: str = "embed", count: int | None = None, copies: int = 1):  # fmt: skip
    """``(originals, copies)``: the rows ``label_free_scores`` compares (the readable images of
    the sample; ``forward``: the model's method that maps images to rows; ``count``: the
    sample's size, default ``cfg.eval.label_free``; ``copies``: edited copies of each image,
    stacked copy by copy: row ``c * n + i`` of the second is copy ``c`` of original ``i``)."""
    from udml_cli.engine import extract

    count = cfg.eval.label_free if count is None else count
    rows = sample_rows(len(plain), count, cfg.cluster.seed)
    samples = [plain.samples[i] for i in rows]
    cache = [plain.cache[i] for i in rows] if plain.cache is not None else None
    originals = ImageDataset(samples, plain.transform, size=plain.size)
    originals.cache = cache
    # copy 0 is drawn as it always was: one-copy scores stay comparable across versions
    seeds = [np.random.default_rng([cfg.cluster.seed, 12, *([c] if c else [])])
             .integers(0, 2**31, len(rows)) for c in range(copies)]  # fmt: skip
    edited = _Copies(samples * copies, np.concatenate(seeds), cfg.data.image_size,
                     cache * copies if cache is not None else None)  # fmt: skip
    model = engine.prepare_model(model).eval()
    run = getattr(model, forward)
    with torch.no_grad():
        x, kx = extract(run, originals, engine, cfg.eval.batch_size,
                        f"label-free score: {where} originals", progress)  # fmt: skip
        y, ky = extract(run, edited, engine, cfg.eval.batch_size,
                        f"label-free score: {where} copies", progress)  # fmt: skip
    ok = (kx != FAILED) & (ky != FAILED).reshape(copies, len(rows)).all(0)
    return x[ok], y.reshape(copies, len(rows), -1)[:, ok].reshape(-1, y.shape[1])


def copy_scores(x: np.ndarray, y: np.ndarray, knn: int = KNN) -> dict:
    """The scores of originals ``x`` and their copies ``y`` (L2-normalised rows): row ``i`` of
    ``x`` is an image, row ``c * len(x) + i`` of ``y`` its copy ``c`` (one or more copies of
    each); every copy counts once."""
    n = len(x)
    if n < 2:
        return {"score": None, "copy_r1": None, "copy_mrr": None, "knn_overlap": None}
    if len(y) % n:
        raise ValueError(f"{len(y)} copies of {n} originals: not a whole number of each")
    owner = torch.arange(len(y)) % n  # copy j is of original owner[j]
    sim = torch.from_numpy(y @ x.T).double()  # each copy against every original
    own = sim[torch.arange(len(y)), owner]
    rank = 1 + (sim > own[:, None]).sum(1)  # ties in the copy's favour
    k = min(knn, n - 1)
    xx = torch.from_numpy(x @ x.T).double().fill_diagonal_(-np.inf)
    yx = sim.clone()
    yx[torch.arange(len(y)), owner] = -np.inf  # a copy's neighbours: the other originals
    a, b = xx.topk(k, dim=1).indices, yx.topk(k, dim=1).indices
    overlap = [len(set(a[owner[j]].tolist()) & set(b[j].tolist())) / k for j in range(len(y))]
    out = {
        "copy_r1": float((rank == 1).double().mean()),
        "copy_mrr": float((1.0 / rank.double()).mean()),
        "knn_overlap": float(np.mean(overlap)),
    }
    out["score"] = float(np.mean(list(out.values())))
    return out


def score_layers(
    cfg, plain: ImageDataset, engine, progress=None, where: str = "train"
) -> list[dict]:
    """The label-free scores of every stage of ``cfg.model``'s backbone (and ``last``), each
    alone with ``cfg.model.pool`` and ``grid``, from one pass over ``cfg.model.auto_images`` of
    the images and their copies; highest first."""
    from udml_cli.models.backbones import create_backbone
    from udml_cli.models.descriptor import describe
    from udml_cli.models.net import EmbeddingNet

    m = cfg.model
    backbone = create_backbone(m.backbone, m.weights)
    names = [*backbone.stages, "last"]
    model = EmbeddingNet(describe(backbone, m.pool, names, m.backbone, m.grid), None)
    start = time.perf_counter()
    # a set smaller than the sample: several copies of each image make up the count (stages
    # often score within 0.2 of each other; fewer pairs, more the edits' luck decides)
    images = min(len(plain), m.auto_images)
    copies = max(1, min(COPIES_MAX, m.auto_images // max(images, 1)))
    x, y = copy_embeddings(model, cfg, plain, engine, progress, where, "features",
                           m.auto_images, copies)  # fmt: skip
    rows, at = [], 0
    for name, size in zip(names, model.backbone.part_sizes(), strict=True):
        part = slice(at, at + size)
        at += size
        unit = [v[:, part] / np.linalg.norm(v[:, part], axis=1, keepdims=True).clip(1e-12)
                for v in (x, y)]  # fmt: skip
        rows.append({"layer": name, **copy_scores(*unit), "images": len(x), "copies": copies})
    seconds = round(time.perf_counter() - start, 3)
    for r in rows:
        r["seconds"] = seconds
    return sorted(rows, key=lambda r: -1 if r["score"] is None else r["score"], reverse=True)


def choose_layers(cfg, samples, engine, progress=None, where: str = "train") -> None:
    """Resolve ``model.layers = ["auto"]``: the stage of the backbone with the highest
    label-free score on these training ``samples``. Runs before the process group is joined:
    under torchrun every process computes the same, alone."""
    from udml_cli.errors import note

    plain = ImageDataset.evaluated(samples, cfg.data)
    torch.manual_seed(cfg.train.seed)  # a backbone without pretrained weights: the same draw
    rows = [r for r in score_layers(cfg, plain, engine, progress, where) if r["score"] is not None]
    if not rows:
        from udml_cli.errors import UsageError

        raise UsageError("model.layers = auto needs at least 2 readable training images")
    best = rows[0]
    cfg.model.layers = [best["layer"]]
    note(
        f"model.layers = auto → {best['layer']} (label-free score {100 * best['score']:.1f}, "
        f"the highest of {len(rows)} stages on {best['images']} training images"
        + (f", {best['copies']} edited copies of each" if best["copies"] > 1 else "")
        + "; next: "
        + ", ".join(f"{r['layer']} {100 * r['score']:.1f}" for r in rows[1:3])
        + "; `udml eval --label-free --each-layer` lists them all)"
    )
