"""Whitening learned on the training images (``model.head_init = "whiten"``), no labels, no
training steps: does it lift a descriptor of every stage of the start above the baselines a user
computes in a minute? On each set's held-out classes, side by side in one process:
the start (the final pooled feature), raw pixels (16x16, centred), the best single stage of the
start over a 4x4 grid (picked on the held-out labels: the strongest baseline, not a fair one),
every stage of the start as a pyramid (``model.layers`` = all 16 stages, ``model.grid = [1, 4]``)
plain and PCA-whitened to 128/256/512 dimensions (``EmbeddingHead.init_whiten``, fitted on the
training images), the same for the final feature and the photos template's block11 pyramid;
R@1, MAP@R, NMI (k-means with one cluster per class), and the label-free score
(``udml_cli/selection.py``) of the plain and whitened descriptors: would a user without labels
choose to whiten?
    python benchmarks/whitening.py [--datasets emoji fashion-mnist icons]
Writes results/whitening-<dataset>.json and .md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import table_lines
from common import RESULTS, Results

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = {"emoji": "demo.toml", "fashion-mnist": "demo-fashion-mnist.toml", "icons": "demo.toml"}
DIMS = (128, 256, 512)


def unit(x):
    import numpy as np

    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)


def run_dataset(dataset: str) -> None:
    import numpy as np
    import torch

    from udml_cli.config import load_config
    from udml_cli.data.images import ImageDataset
    from udml_cli.data.layout import read_split
    from udml_cli.data.registry import resolve_dataset
    from udml_cli.data.transforms import Squash
    from udml_cli.engine import extract, resolve_engine
    from udml_cli.metrics import evaluate_embeddings
    from udml_cli.models.backbones import create_backbone
    from udml_cli.models.heads import EmbeddingHead
    from udml_cli.models.net import build_model
    from udml_cli.selection import copy_embeddings, copy_scores

    t_start = time.perf_counter()
    cfg = load_config(ROOT / "templates" / TEMPLATES[dataset], [f"data.dataset={dataset}"])
    ref, engine = resolve_dataset(cfg.data.dataset), resolve_engine(cfg.engine)
    test_s, train_s = read_split(ref, "test"), read_split(ref, "train")
    labels = np.array([s.label for s in test_s])
    stages = list(create_backbone(cfg.model.backbone, "none", quiet=True).stages)
    mcfg = cfg.model.model_copy(update={"layers": [*stages, "last"], "grid": [1, 4]})
    model = build_model(mcfg, head=False, quiet=True).eval()
    sizes = model.backbone.part_sizes()
    at = np.cumsum([0, *sizes])
    t0 = time.perf_counter()
    plain_train = ImageDataset.evaluated(train_s, cfg.data)
    test, _ = extract(model.features, ImageDataset.evaluated(test_s, cfg.data), engine, 128)
    train, _ = extract(model.features, plain_train, engine, 128)
    copies = copy_embeddings(model, cfg, plain_train, engine, forward="features")
    extract_s = time.perf_counter() - t0
    pixels, _ = extract(lambda im: im.flatten(1), ImageDataset(test_s, Squash(16), size=16),
                        engine, 256)  # fmt: skip

    def part(x, i, kind="pyramid"):  # stage i's columns (grid [1, 4]: C whole-map, 16·C grid)
        x = x[:, at[i] : at[i + 1]]
        c = sizes[i] // 17
        return x if kind == "pyramid" or i == len(stages) else x[:, c:]

    def columns(x, which):
        if which == "all":
            return np.concatenate([part(x, i) for i in range(len(stages))], 1)
        return part(x, [*stages, "last"].index(which))

    rows: list[dict] = []

    def score(name, x, nmi=True, free=None, seconds=None):
        m = evaluate_embeddings(unit(x).astype(np.float32), labels, [1, 2, 4, 8], nmi,
                                cfg.cluster.seed)  # fmt: skip
        row = {"variant": name, "dim": int(x.shape[1]), "R@1": 100 * m["recall_at"]["1"],
               "MAP@R": 100 * m["map_at_r"], "NMI": None if m["nmi"] is None else 100 * m["nmi"],
               "label_free": None if free is None else 100 * free["score"],
               "fit_seconds": seconds}  # fmt: skip
        rows.append(row)
        print(f"{dataset} {row}", file=sys.stderr, flush=True)
        return row

    score("raw pixels 16x16, centred", pixels - pixels.mean(0))
    best = max(
        (score(f"start {s} (4x4 grid)", part(test, i, "grid"), nmi=False)
         for i, s in enumerate(stages)),
        key=lambda r: r["R@1"],
    )  # fmt: skip
    best["variant"] += " (best single stage, on held-out labels)"
    rows.remove(best)
    best = score(best["variant"], part(test, stages.index(best["variant"].split()[1]), "grid"))
    for which, label in (("last", "start: final pooled feature"), ("block11", "block11 pyramid"),
                         ("all", "every stage, pyramid")):  # fmt: skip
        tr, te = columns(train, which), columns(test, which)
        ox, cx = (columns(v, which) for v in copies)
        free = copy_scores(unit(ox), unit(cx))
        score(f"{label}", te, free=free)
        for dim in DIMS if which == "all" else (256,):
            head = EmbeddingHead(tr.shape[1], dim)
            t0 = time.perf_counter()
            head.init_whiten(tr)
            fit = round(time.perf_counter() - t0, 1)
            with torch.no_grad():
                w = [head(torch.from_numpy(np.ascontiguousarray(v, np.float32))).numpy()
                     for v in (te, ox, cx)]  # fmt: skip
            score(f"{label}, whitened to {dim}", w[0], free=copy_scores(w[1], w[2]), seconds=fit)
    start = next(r for r in rows if r["variant"].startswith("start: final"))
    res = Results(f"whitening-{dataset}")
    for r in rows:
        res.add(r["variant"], "R@1", r["R@1"], start["R@1"], higher_is_better=True, unit="%")
        res.records[-1].update({k: r[k] for k in ("NMI", "MAP@R", "dim", "label_free",
                                                  "fit_seconds")})  # fmt: skip
    res.add("extraction (test, train, label-free copies), all stages", "seconds", extract_s)
    res.add("whole script", "seconds", time.perf_counter() - t_start)
    res.write()
    lines = table_lines(rows)
    err = 100 - start["R@1"]
    for r in rows:
        if r["NMI"] is not None and "whitened" in r["variant"]:
            lines.append(f"- {r['variant']}: R@1 error {100 * (100 - r['R@1'] - err) / err:+.1f} % "
                         f"and NMI {r['NMI'] - start['NMI']:+.2f} against the start; "
                         f"{r['R@1'] - best['R@1']:+.2f} R@1 against the best single stage")  # fmt: skip
    (RESULTS / f"whitening-{dataset}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=list(TEMPLATES))
    for dataset in ap.parse_args().datasets:
        run_dataset(dataset)


if __name__ == "__main__":
    main()
