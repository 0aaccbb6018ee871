"""What eval, embed and cluster share: get a model (checkpoint or backbone), embed a split."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from udml_cli.config import Config
from udml_cli.data.layout import DatasetRef
from udml_cli.errors import UsageError


def load_model(cfg: Config, checkpoint: Path | None, backbone: str | None):
    """``(model, cfg, dataset name from the checkpoint or None)``; exactly one source allowed."""
    if checkpoint is not None and backbone is not None:
        raise UsageError("give either a checkpoint or --backbone, not both")
    if checkpoint is not None:
        from udml_cli.models.checkpoint import load_checkpoint, model_from_checkpoint

        payload = load_checkpoint(checkpoint)
        model, ckpt_cfg = model_from_checkpoint(payload, checkpoint)
        # the checkpoint decides the model and image pipeline; the rest comes from this run
        # (how to treat unreadable images and where data lives are this run's too)
        update = {"strict": cfg.data.strict, "data_root": cfg.data.data_root}
        if "image_size" in cfg.data.model_fields_set and (
            cfg.data.image_size != ckpt_cfg.data.image_size
        ):  # asked for explicitly (--image-size or a config file): applied, and said so
            update |= {"image_size": cfg.data.image_size, "resize": cfg.data.resize}
            from udml_cli.errors import note

            note(
                f"images at {cfg.data.image_size} px as asked; {checkpoint} was trained at "
                f"{ckpt_cfg.data.image_size} px"
            )
        data = ckpt_cfg.data.model_copy(update=update)
        keep = {"engine": cfg.engine, "eval": cfg.eval, "cluster": cfg.cluster, "data": data}
        cfg = ckpt_cfg.model_copy(update=keep)
        return model, cfg, payload.get("dataset")
    if backbone is None:
        raise UsageError("give a checkpoint or --backbone NAME (see `udml eval --help`)")
    from udml_cli.models.net import build_model

    cfg = with_backbone(cfg, backbone)
    return build_model(cfg.model, head=False), cfg, None


def with_backbone(cfg: Config, backbone) -> Config:
    """``cfg`` with ``backbone`` (the Python API's argument; the CLI has set it in the config
    already) as its ``model.backbone``; a copy, the caller's config is left alone."""
    if isinstance(backbone, str) and backbone != cfg.model.backbone:
        cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"backbone": backbone})})
    return cfg


def dataset_ref(cfg: Config, dataset, data_root, ckpt_dataset=None) -> DatasetRef:
    """The dataset to score: ``--dataset``, else the checkpoint's, else the config's."""
    from udml_cli.data.registry import resolve_dataset

    name = dataset or ckpt_dataset or cfg.data.dataset
    if name is None:
        raise UsageError("no dataset: pass --dataset NAME (see `udml dataset list`)")
    return resolve_dataset(name, data_root or cfg.data.data_root)


def model_and_dataset(cfg: Config, checkpoint, backbone, dataset, data_root):
    """The model to evaluate and the dataset: ``--dataset``, else the checkpoint's, else config's."""
    model, cfg, ckpt_dataset = load_model(cfg, checkpoint, backbone)
    return model, cfg, dataset_ref(cfg, dataset, data_root, ckpt_dataset)


def embed_dataset(
    model, cfg: Config, dataset, engine, where: str, progress=None, strict: bool = False,
    none_ok: bool = False, allocate=None,
):  # fmt: skip
    """``(rows, ok)``: the embeddings of ``dataset``'s readable images (an ``ImageDataset``) and
    which ones they are; the unreadable ones reported once (``strict``: stop on them).
    ``allocate(n, dim)``: where the rows go (``npyfile.DiskRows``: a .npy on disk); the readable rows are then
    moved to its front in place and ``rows`` is the leading part."""
    from udml_cli.data.images import FAILED, report_unreadable
    from udml_cli.engine import extract

    model = engine.prepare_model(model).eval()
    x, index = extract(
        model.embed, dataset, engine, cfg.eval.batch_size, f"embedding {where}", progress,
        allocate,
    )  # fmt: skip
    ok = index != FAILED
    bad = [str(dataset.paths[i]) for i in (~ok).nonzero()[0]]
    report_unreadable(bad, len(dataset), strict, where, none_ok)
    rows = compact(x, ok)
    if isinstance(rows, np.ndarray):
        check_finite(rows, [p for p, good in zip(dataset.paths, ok.tolist(), strict=True) if good])
    return rows, ok


def check_finite(x: np.ndarray, paths: list) -> None:
    """Refuse vectors that are NaN or infinite (a diverged or damaged checkpoint): no score,
    cluster or index is made of them."""
    from udml_cli.errors import UdmlError

    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise UdmlError(
            f"the model gives NaN or infinite vectors for {int(bad.sum())} of {len(x)} images "
            f"(first: {paths[int(np.flatnonzero(bad)[0])]}): its checkpoint is damaged or "
            "diverged; nothing was written"
        )


def compact(x: np.ndarray, keep: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """``x[keep]`` made in place, ``chunk`` rows at a time (an ``x`` on disk is never read whole)."""
    if len(x) == 0 or keep.all():
        return x
    at = 0
    for start in range(0, len(x), chunk):
        block = x[start : start + chunk][keep[start : start + chunk]]  # a copy: safe to overlap
        x[at : at + len(block)] = block
        at += len(block)
    return x.prefix(at) if hasattr(x, "prefix") else x[:at]


def embed_split(
    model, cfg: Config, ref: DatasetRef, split: str, engine, progress=None, kept: list | None = None
):
    """``(embeddings, labels)`` of a split's readable images; unreadable ones are skipped with a
    warning (or stop the command under ``data.strict``). ``kept`` receives the samples embedded,
    in row order."""
    from udml_cli.data.images import ImageDataset
    from udml_cli.data.layout import read_split

    samples = read_split(ref, split)
    dataset = ImageDataset.evaluated(samples, cfg.data)
    where = f"{ref.name}/{split}"
    x, ok = embed_dataset(model, cfg, dataset, engine, where, progress, cfg.data.strict)
    if kept is not None:
        kept.extend(s for s, good in zip(samples, ok.tolist(), strict=True) if good)
    return x, dataset.labels[ok]


def evaluate(model, cfg: Config, ref: DatasetRef, split: str, engine, progress=None) -> dict:
    from udml_cli.metrics import evaluate_embeddings

    start = time.perf_counter()
    x, labels = embed_split(model, cfg, ref, split, engine, progress)
    result = evaluate_embeddings(x, labels, cfg.eval.recall_at, seed=cfg.cluster.seed)
    result.update(dataset=ref.name, split=split, dim=int(x.shape[1]))
    result["seconds"] = round(time.perf_counter() - start, 3)
    return result
