"""Probe: fixed transforms of the pretrained feature, fitted on the training classes, scored on the
held-out ones. Why a PCA-initialised head starts below the raw feature (BENCHMARKS.md, "Quality").

    python benchmarks/start_transforms.py [--dataset fashion-mnist]
Writes benchmarks/results/explore/start_transforms-<dataset>.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Results
from quality import ROOT, TEMPLATES


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="fashion-mnist", choices=list(TEMPLATES))
    args = ap.parse_args()

    from udml_cli.config import load_config
    from udml_cli.data.registry import resolve_dataset
    from udml_cli.engine import resolve_engine
    from udml_cli.inference import embed_split
    from udml_cli.metrics import evaluate_embeddings
    from udml_cli.models.heads import EmbeddingHead
    from udml_cli.models.net import build_model

    cfg = load_config(ROOT / "templates" / TEMPLATES[args.dataset])
    ref = resolve_dataset(cfg.data.dataset)
    engine = resolve_engine(cfg.engine)
    model = build_model(cfg.model, head=False)
    model.embed = model.features  # the raw pooled feature, not normalised
    train, _ = embed_split(model, cfg, ref, "train", engine)
    test, labels = embed_split(model, cfg, ref, "test", engine)
    head = EmbeddingHead(model.feat_dim, 512)
    head.init_pca(train)  # the tool's own head_init = "pca"
    top = head.fc.weight.detach().numpy().T.astype(np.float64)
    train, test = train.astype(np.float64), test.astype(np.float64)
    mean = train.mean(0)
    variants = {
        "raw feature (the start)": test,
        "minus the training-class mean": test - mean,
        "minus the held-out mean (not available in training)": test - test.mean(0),
        "512-d PCA of training classes, centred (head_init=pca)": (test - mean) @ top,
        "512-d PCA of training classes, not centred": test @ top,
    }
    res = Results(f"explore/start_transforms-{args.dataset}")
    for name, x in variants.items():
        x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
        r = evaluate_embeddings(x, labels, [1, 8])
        row = {"R@1": r["recall_at"]["1"], "R@8": r["recall_at"]["8"], "NMI": r["nmi"]}
        row["MAP@R"] = r["map_at_r"]
        for metric, value in row.items():
            res.add(name, metric, 100 * value, higher_is_better=True, unit="%")
        print(f"{name:58s} " + " ".join(f"{k} {100 * v:.2f}" for k, v in row.items()))
    res.write()


if __name__ == "__main__":
    main()
