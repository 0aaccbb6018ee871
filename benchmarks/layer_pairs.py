"""Two stages of the pretrained start together, no training: does a pair beat the best single stage?

``model.layers = [a, b]`` concatenates the two stages' descriptors, each L2-normalised (then the
identity head). For every pair of Lite0's stages (``last`` included), average-pooled over the
whole map and over a 4x4 grid (``model.grid``; one pooling for both, as the config gives), this
scores R@1 and MAP@R on each set's held-out classes, NMI for the best pairs and the best single
stage (k-means with one cluster per class), and the label-free score on the training images
(``udml_cli/selection.py``), to see whether a user without labels would pick the pair.
    python benchmarks/layer_pairs.py [--datasets emoji fashion-mnist icons] [--grids 1 4]
Writes results/layer_pairs-<dataset>.json and .md.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import ROOT, TEMPLATES, spearman, table_lines
from common import RESULTS, Results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=list(TEMPLATES))
    ap.add_argument("--nmi-top", type=int, default=5, help="pairs per pooling given an NMI")
    ap.add_argument("--grids", nargs="+", type=int, default=[1, 4],
                    help="1: pooled over the whole map; 4: over a 4x4 grid")  # fmt: skip
    args = ap.parse_args()
    for dataset in args.datasets:
        run_dataset(dataset, args.nmi_top, args.grids)


def _unit(v):
    import numpy as np

    return v / np.linalg.norm(v, axis=1, keepdims=True).clip(1e-12)


def _joined(a, part: dict, pair: tuple[str, ...]):
    """What ``model.layers = [*pair]`` gives: each stage's columns L2-normalised, concatenated,
    normalised again."""
    import numpy as np

    return _unit(np.concatenate([_unit(a[:, part[n]]) for n in pair], 1))


def run_dataset(dataset: str, nmi_top: int, grids: list[int]) -> None:
    import numpy as np

    from udml_cli.config import load_config
    from udml_cli.data.images import ImageDataset
    from udml_cli.data.layout import read_split
    from udml_cli.data.registry import resolve_dataset
    from udml_cli.engine import extract, resolve_engine
    from udml_cli.metrics import evaluate_embeddings
    from udml_cli.models.backbones import create_backbone
    from udml_cli.models.net import build_model
    from udml_cli.selection import copy_embeddings, copy_scores

    t0 = time.perf_counter()
    cfg = load_config(ROOT / "templates" / TEMPLATES[dataset], [f"data.dataset={dataset}"])
    ref = resolve_dataset(cfg.data.dataset)
    engine = resolve_engine(cfg.engine)
    test = read_split(ref, "test")
    labels = np.array([s.label for s in test])
    train = ImageDataset.evaluated(read_split(ref, "train"), cfg.data)
    names = [*create_backbone(cfg.model.backbone, "none", quiet=True).stages, "last"]
    rows: list[dict] = []
    for grid in grids:
        mcfg = cfg.model.model_copy(update={"layers": names, "pool": "avg", "grid": grid})
        model = build_model(mcfg, head=False, quiet=True).eval()
        x, _ = extract(model.features, ImageDataset.evaluated(test, cfg.data), engine, 128)
        ox, cx = copy_embeddings(model, cfg, train, engine, forward="features")
        cuts = np.cumsum([0, *model.backbone.part_sizes()])
        part = {n: slice(cuts[i], cuts[i + 1]) for i, n in enumerate(names)}
        # over a grid the final feature stays global, as in baselines.py: left out here
        names_g = [n for n in names if n != "last"] if grid > 1 else names
        pooled = f"avg{', 4x4 grid' if grid > 1 else ''}"
        found = []
        for pair in [(n,) for n in names_g] + list(itertools.combinations(names_g, 2)):
            v = _joined(x, part, pair)
            free = copy_scores(_joined(ox, part, pair), _joined(cx, part, pair))
            m = evaluate_embeddings(v, labels, [1], False, cfg.cluster.seed)
            found.append({"variant": " + ".join(pair) + f" ({pooled})", "stages": len(pair),
                          "R@1": 100 * m["recall_at"]["1"], "MAP@R": 100 * m["map_at_r"],
                          "NMI": None, "label_free": 100 * free["score"], "dim": v.shape[1],
                          "_v": v})  # fmt: skip
        singles = sorted((r for r in found if r["stages"] == 1), key=lambda r: -r["R@1"])
        pairs = sorted((r for r in found if r["stages"] == 2), key=lambda r: -r["R@1"])
        for r in [singles[0], *pairs[:nmi_top], max(pairs, key=lambda r: r["label_free"])]:
            if r["NMI"] is None:
                m = evaluate_embeddings(r["_v"], labels, [1], True, cfg.cluster.seed)
                r["NMI"] = 100 * m["nmi"]
        for r in found:
            r.pop("_v")
            print(f"{dataset} {r}", file=sys.stderr, flush=True)
        rows += found
    res = Results(f"layer_pairs-{dataset}")
    singles = [r for r in rows if r["stages"] == 1]
    pairs = [r for r in rows if r["stages"] == 2]
    best1, best2 = max(singles, key=lambda r: r["R@1"]), max(pairs, key=lambda r: r["R@1"])
    pick = max(rows, key=lambda r: r["label_free"])
    rho = spearman([r["label_free"] for r in rows], [r["R@1"] for r in rows])
    res.add("best single stage", best1["variant"], best1["R@1"], unit="%")
    res.add("best pair", best2["variant"], best2["R@1"], best1["R@1"], True, unit="%")
    res.add("label-free pick over singles and pairs", pick["variant"], pick["R@1"],
            max(best1["R@1"], best2["R@1"]), True, unit="%")  # fmt: skip
    res.add("label-free vs R@1 over singles and pairs", "spearman", rho)
    res.records.append({"benchmark": res.name, "rows": rows,
                        "seconds": round(time.perf_counter() - t0, 1)})  # fmt: skip
    res.write()
    shown = sorted(rows, key=lambda r: -r["R@1"])
    lines = table_lines(shown[:15] + [r for r in shown[15:] if r["NMI"] is not None])
    lines.append(f"\n{len(rows)} variants; Spearman ρ (label-free score vs R@1) {rho:.2f}; "
                 f"the label-free pick: {pick['variant']} (R@1 {pick['R@1']:.2f}); best single "
                 f"{best1['variant']} {best1['R@1']:.2f}; best pair {best2['variant']} "
                 f"{best2['R@1']:.2f}")  # fmt: skip
    (RESULTS / f"layer_pairs-{dataset}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
