"""Baselines a user computes in a minute, against the pretrained start, on each set's held-out
classes: raw pixels (the image squashed to S×S, flattened, L2-normalised; also mean-centred),
the start's final pooled feature, and every stage of the start alone (average- and GeM-pooled over
the whole map, average-pooled over a 4x4 grid of regions (``model.grid``), and both side by side
(``model.grid = [1, 4]``, the photos template's pyramid); NMI for the final
feature only: k-means with one cluster per class takes minutes).
For each variant also the label-free score (udml_cli/selection.py, on the training images) and,
across the variants, its rank correlation with R@1: can a user without labels pick the layer?
    python benchmarks/baselines.py [--datasets emoji fashion-mnist] [--image-size 128]
Writes results/baselines-<dataset>.json and .md (baselines-<dataset>-<size>px.* with --image-size:
the network's input then differs from the demo templates' 64 px; raw pixels are the same).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, Results

ROOT = Path(__file__).resolve().parents[1]
# each model.grid: how it reads in a variant's name, and its kind of pooling
GRIDS = {"1": ("", "global"), "4": (", 4x4 grid", "4x4 grid"),
         "[1, 4]": (", pyramid: whole map + 4x4 grid", "pyramid")}  # fmt: skip
TEMPLATES = {"fashion-mnist": "demo-fashion-mnist.toml", "emoji": "demo.toml", "icons": "demo.toml"}


def spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def table_lines(rows: list[dict]) -> list[str]:
    """The markdown table of descriptor variants (an empty cell where a score was not taken)."""
    lines = [
        "| variant | dim | R@1 | NMI | MAP@R | label-free score |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        free = "" if r["label_free"] is None else f"{r['label_free']:.2f}"
        nmi = "" if r["NMI"] is None else f"{r['NMI']:.2f}"
        lines.append(f"| {r['variant']} | {r['dim']} | {r['R@1']:.2f} | {nmi} | "
                     f"{r['MAP@R']:.2f} | {free} |")  # fmt: skip
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=list(TEMPLATES))
    ap.add_argument("--pixels", nargs="+", type=int, default=[16, 32])
    ap.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="the network's input side (default: the template's, 64 px)",
    )
    args = ap.parse_args()
    for dataset in args.datasets:
        run_dataset(dataset, args.pixels, args.image_size)


def run_dataset(dataset: str, pixels: list[int], image_size: int | None = None) -> None:
    import numpy as np

    from udml_cli.config import load_config
    from udml_cli.data.images import ImageDataset
    from udml_cli.data.layout import read_split
    from udml_cli.data.registry import resolve_dataset
    from udml_cli.data.transforms import Squash
    from udml_cli.engine import extract, resolve_engine
    from udml_cli.metrics import evaluate_embeddings
    from udml_cli.models.backbones import create_backbone
    from udml_cli.models.net import build_model
    from udml_cli.selection import copy_embeddings, copy_scores

    stem = f"baselines-{dataset}" + (f"-{image_size}px" if image_size else "")
    res = Results(stem)
    sets = [f"data.dataset={dataset}"]
    if image_size:  # the templates resize to 9/8 of the crop side
        sets += [f"data.image_size={image_size}", f"data.resize={image_size * 9 // 8}"]
    cfg = load_config(ROOT / "templates" / TEMPLATES.get(dataset, "demo.toml"), sets)
    ref = resolve_dataset(cfg.data.dataset)
    engine = resolve_engine(cfg.engine)
    test = read_split(ref, "test")
    labels = np.array([s.label for s in test])
    train = ImageDataset.evaluated(read_split(ref, "train"), cfg.data)
    rows: list[dict] = []

    def score(name: str, x, free=None, seconds=0.0, with_nmi=True, pooling=None):
        x = x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
        m = evaluate_embeddings(x, labels, [1, 2, 4, 8], with_nmi, cfg.cluster.seed)
        nmi = None if m["nmi"] is None else 100 * m["nmi"]
        row = {"variant": name, "R@1": 100 * m["recall_at"]["1"], "NMI": nmi,
               "MAP@R": 100 * m["map_at_r"], "dim": int(x.shape[1]),
               "label_free": None if free is None else 100 * free["score"],
               "seconds": round(seconds, 1), "pooling": pooling}  # fmt: skip
        rows.append(row)
        print(f"{dataset} {row}", file=sys.stderr, flush=True)

    for s in pixels:  # raw pixels
        t0 = time.perf_counter()
        x, _ = extract(lambda im: im.flatten(1), ImageDataset(test, Squash(s), size=s),
                       engine, 256)  # fmt: skip
        score(f"raw pixels {s}x{s}", x, seconds=time.perf_counter() - t0)
        score(f"raw pixels {s}x{s}, centred", x - x.mean(0))
    stages = list(create_backbone(cfg.model.backbone, "none", quiet=True).stages)
    for pool, grid in (("avg", 1), ("gem", 1), ("avg", 4), ("avg", [1, 4])):
        t0 = time.perf_counter()
        update = {"layers": [*stages, "last"], "pool": pool, "grid": grid}
        mcfg = cfg.model.model_copy(update=update)
        model = build_model(mcfg, head=False, quiet=True).eval()
        x, _ = extract(model.features, ImageDataset.evaluated(test, cfg.data), engine, 128)
        ox, cx = copy_embeddings(model, cfg, train, engine, forward="features")
        seconds = time.perf_counter() - t0
        at = 0
        for name, size in zip([*stages, "last"], model.backbone.part_sizes(), strict=True):
            part = slice(at, at + size)
            at += size
            free = copy_scores(*(v[:, part] / np.linalg.norm(v[:, part], axis=1,
                               keepdims=True).clip(1e-12) for v in (ox, cx)))  # fmt: skip
            # NMI (k-means with one cluster per class) for the final feature only: minutes each
            if grid != 1 and name == "last":
                continue  # stays global: the (avg) row
            tail, pooling = GRIDS[str(grid)]
            score(f"start {name} ({pool}{tail})", x[:, part], free, seconds, name == "last",
                  pooling)  # fmt: skip
    start = [r for r in rows if r["label_free"] is not None]
    rho = spearman([r["label_free"] for r in start], [r["R@1"] for r in start])
    families = {}  # each pooling alone, and global with pyramid (what the photos template ranks)
    for label, kinds in (
        ("global", {"global"}),
        ("4x4 grid", {"4x4 grid"}),
        ("pyramid", {"pyramid"}),
        ("global + pyramid", {"global", "pyramid"}),
    ):
        sub = [r for r in start if r["pooling"] in kinds]
        pick = max(sub, key=lambda r: r["label_free"])
        families[label] = (spearman([r["label_free"] for r in sub], [r["R@1"] for r in sub]),
                           pick, max(sub, key=lambda r: r["R@1"]), len(sub))  # fmt: skip
    best_free = max(start, key=lambda r: r["label_free"])
    best = max(start, key=lambda r: r["R@1"])
    for r in rows:
        base = next(x for x in rows if x["variant"] == "start last (avg)")["R@1"]
        res.add(r["variant"], "R@1", r["R@1"], base, higher_is_better=True, unit="%")
        res.records[-1].update({k: r[k] for k in ("NMI", "MAP@R", "dim", "label_free")})
    res.add("label-free vs R@1 over the start's layers", "spearman", rho)
    for label, (r, pick, top, _) in families.items():
        res.add(f"label-free vs R@1, {label}", "spearman", r)
        res.add(f"label-free pick, {label}", pick["variant"], pick["R@1"], top["R@1"],
                higher_is_better=True, unit="%")  # fmt: skip
    res.add("layer picked by the label-free score", best_free["variant"], best_free["R@1"],
            best["R@1"], higher_is_better=True, unit="%")  # fmt: skip
    res.write()
    lines = table_lines(rows)
    lines.append(f"\nSpearman ρ (label-free score vs R@1, {len(start)} start variants): "
                 f"{rho:.2f}; the label-free pick: {best_free['variant']} "
                 f"(R@1 {best_free['R@1']:.2f}; best {best['variant']} {best['R@1']:.2f})")  # fmt: skip
    for label, (r, pick, top, n) in families.items():
        lines.append(f"- {label} ({n} variants): ρ {r:.2f}; "
                     f"pick {pick['variant']} {pick['R@1']:.2f}; best {top['variant']} "
                     f"{top['R@1']:.2f}")  # fmt: skip
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
