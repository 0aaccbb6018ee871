"""The Python API: what the commands do, without a terminal. Importable from ``udml_cli``.

    import udml_cli as udml
    cfg = udml.settings("photos", train={"epochs": 5})            # template / file / Config + sections
    last = udml.train("runs/photos", cfg, dataset="~/photos")       # → runs/photos/last.pt
    model, cfg = udml.load_model(checkpoint=last)
    vectors, paths = udml.embed_folder("~/photos", checkpoint=last)
    index = udml.build_index("~/photos", "idx/photos", checkpoint=last)
    sims, rows = index.search(vectors[:3], k=5)

Nothing here asks questions or prints to stdout; mistakes raise ``UdmlError`` with the same one
line the CLI shows. The CLI maps its flags onto these and renders what they return.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from udml_cli.config import Config, image_size_keys, load_config


def settings(config: Config | str | Path | None = None, **sections: dict[str, Any]) -> Config:
    """A config: defaults < ``config`` (a Config, a TOML file or a shipped template name) <
    ``sections`` (``train={"lr": 1e-4}``; every key validated as on the command line)."""
    base = config.model_dump(mode="json") if isinstance(config, Config) else None
    path = None if isinstance(config, Config) else config
    overrides = {f"{sec}.{key}": value for sec, values in sections.items() for key, value in values.items()}
    return load_config(path, None, overrides, base=base)


def load_model(
    checkpoint: str | Path | None = None,
    backbone: str | None = None,
    weights: str = "imagenet",
    image_size: int | None = None,
    device: str = "auto",
):
    """``(model, config)`` of a checkpoint, or of a backbone's pooled feature (the start)."""
    from udml_cli.inference import load_model as _load

    flags = {"model.weights": weights if backbone else None, "engine.device": device}
    if backbone:
        flags["model.backbone"] = backbone
    if image_size is not None:
        flags |= image_size_keys(image_size)
    cfg = load_config(None, None, flags)
    model, cfg, _ = _load(cfg, Path(checkpoint) if checkpoint else None, backbone)
    return model, cfg


def embed_files(model, cfg: Config, files: list[Path], strict: bool = False, progress=None,
                where: str = "images", none_ok: bool = False):  # fmt: skip
    """``(vectors, ok)``: one float32 row per readable file (in order) and which files were."""
    from udml_cli.data.images import FolderDataset
    from udml_cli.data.transforms import eval_transform
    from udml_cli.engine import resolve_engine
    from udml_cli.inference import embed_dataset

    dataset = FolderDataset(files, eval_transform(cfg.data), cfg.data.image_size)
    engine = resolve_engine(cfg.engine)
    return embed_dataset(model, cfg, dataset, engine, where, progress, strict, none_ok)


def embed_folder(folder: str | Path, checkpoint=None, backbone=None, weights="imagenet",
                 image_size=None, device="auto", recursive=True, strict=False, progress=None):  # fmt: skip
    """``(vectors, paths)``: the images under ``folder`` (sorted), unreadable ones left out."""
    from udml_cli.data.images import list_images
    from udml_cli.data.layout import image_files
    from udml_cli.errors import DatasetError

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"not a folder: {folder}")
    files = image_files(folder) if recursive else list_images(folder, False)
    if not files:
        raise DatasetError(f"no images in {folder}" + ("" if recursive else " (add --recursive)"))
    model, cfg = load_model(checkpoint, backbone, weights, image_size, device)
    x, ok = embed_files(model, cfg, files, strict, progress, folder.name)
    return x, [f for f, good in zip(files, ok.tolist(), strict=True) if good]


def train(out: str | Path, config: Config | str | Path | None = None, dataset: str | None = None,
          resume: bool = False, progress=None, **sections) -> Path:  # fmt: skip
    """Train (or ``resume``) into the run folder ``out``; returns the last checkpoint. Refuses to
    replace an existing run (the CLI asks first, then moves it aside)."""
    from udml_cli.data.registry import resolve_dataset
    from udml_cli.engine import resolve_engine
    from udml_cli.errors import UsageError
    from udml_cli.models.checkpoint import load_checkpoint
    from udml_cli.runs import RunLock, holds_run
    from udml_cli.training import Trainer

    out = Path(out).expanduser()
    if dataset is not None:
        sections.setdefault("data", {})["dataset"] = dataset
    with RunLock(out):
        checkpoint = out / "last.pt" if resume else None
        payload = load_checkpoint(checkpoint, training=True) if resume else None
        if resume:
            saved = payload["config"]
            cfg = settings(Config.model_validate(saved) if config is None else config, **sections)
        else:
            cfg = settings(config, **sections)
            if holds_run(out):
                raise UsageError(f"{out} already holds a run; resume it or choose another folder")
        if cfg.data.dataset is None:
            raise UsageError("no dataset: pass dataset=NAME")
        ref = resolve_dataset(cfg.data.dataset, cfg.data.data_root)
        trainer = Trainer(cfg, ref, out, resolve_engine(cfg.engine), progress)
        return trainer.run(checkpoint, payload=payload)


def build_index(folder: str | Path, out: str | Path, checkpoint=None, backbone=None,
                weights="imagenet", image_size=None, device="auto", strict=False, progress=None):  # fmt: skip
    """Embed ``folder`` into the index ``out`` (only new or changed files when it exists)."""
    from udml_cli.errors import DatasetError, note
    from udml_cli.index import Index, model_identity, plan_update

    folder, out = Path(folder).expanduser().resolve(), Path(out)
    if not folder.is_dir():
        raise DatasetError(f"not a folder: {folder}")
    model, cfg = load_model(checkpoint, backbone, weights, image_size, device)
    ident = model_identity(Path(checkpoint) if checkpoint else None, cfg)
    old = Index.load(out) if (out / "index.json").is_file() else None
    if old is not None and old.model != ident:
        note(f"{out} was built with another model: every image is embedded again")
    files, reuse, todo = plan_update(old, folder, ident)
    dim = old.vectors.shape[1] if reuse else model.dim
    vectors = np.zeros((len(files), dim), np.float32)
    for pos, row in reuse.items():
        vectors[pos] = old.vectors[row]
    keep = np.ones(len(files), bool)
    if todo:
        paths = [files[p][3] for p in todo]
        x, ok = embed_files(model, cfg, paths, strict, progress, folder.name, none_ok=bool(reuse))
        todo_arr = np.array(todo)
        vectors[todo_arr[ok]] = x
        keep[todo_arr[~ok]] = False
    rows = [(r, s, m) for (r, s, m, _), k in zip(files, keep.tolist(), strict=True) if k]
    index = Index(folder, ident, vectors[keep], rows)
    index.save(out)
    index.embedded, index.kept = len(todo) - int((~keep).sum()), len(reuse)
    return index
