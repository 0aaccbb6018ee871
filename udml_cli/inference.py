"""What eval, embed and cluster share: get a model (checkpoint or backbone), embed a split."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from udml_cli.config import Config
from udml_cli.data.registry import DatasetRef
from udml_cli.errors import UsageError


def load_model(cfg: Config, checkpoint: Path | None, backbone: str | None):
    """``(model, cfg, dataset name from the checkpoint or None)``; exactly one source allowed."""
    if checkpoint is not None and backbone is not None:
        raise UsageError("give either a checkpoint or --backbone, not both")
    if checkpoint is not None:
        from udml_cli.models.checkpoint import load_checkpoint, model_from_checkpoint

        payload = load_checkpoint(checkpoint)
        model, ckpt_cfg = model_from_checkpoint(payload, checkpoint)
        # the checkpoint decides the model and image pipeline; engine/eval come from this run
        cfg = ckpt_cfg.model_copy(update={"engine": cfg.engine, "eval": cfg.eval})
        return model, cfg, payload.get("dataset")
    if backbone is None:
        raise UsageError("give a checkpoint or --backbone NAME (see `udml eval --help`)")
    from udml_cli.models.net import build_model

    return build_model(cfg.model, head=False), cfg, None


def embed_split(model, cfg: Config, ref: DatasetRef, split: str, engine, progress=None):
    from udml_cli.data.images import ImageDataset
    from udml_cli.data.layout import read_split
    from udml_cli.data.transforms import eval_transform
    from udml_cli.engine import extract

    samples = read_split(ref, split)
    dataset = ImageDataset(samples, eval_transform(cfg.data))
    model = engine.prepare_model(model).eval()
    return extract(
        model.embed, dataset, engine, cfg.eval.batch_size, f"embedding {ref.name}/{split}", progress
    )


def evaluate(model, cfg: Config, ref: DatasetRef, split: str, engine, progress=None) -> dict:
    from udml_cli.metrics import evaluate_embeddings

    start = time.perf_counter()
    x, labels = embed_split(model, cfg, ref, split, engine, progress)
    result = evaluate_embeddings(x, labels, cfg.eval.recall_at, seed=cfg.cluster.seed)
    result.update(dataset=ref.name, split=split, dim=int(x.shape[1]))
    result["seconds"] = round(time.perf_counter() - start, 3)
    return result


def image_size_flags(size: int | None) -> dict:
    """``--image-size N``: crop N after resizing the shorter side to N·256/227 (paper ratio)."""
    if size is None:
        return {}
    return {"data.image_size": size, "data.resize": max(size, round(size * 256 / 227))}


def check_finite(x: np.ndarray, what: str) -> None:
    if not np.isfinite(x).all():
        raise UsageError(f"{what}: the network produced NaN/inf embeddings")
