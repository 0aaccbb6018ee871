"""Self-describing checkpoints: weights + resolved config + everything needed to resume.

Written atomically; read with ``torch.load(weights_only=True)``, so a checkpoint from a stranger
cannot run code. Every failure to read is one ``CheckpointError`` line.
"""

from __future__ import annotations

import io
import os
import warnings
import zipfile
from pathlib import Path

import torch

from udml_cli import __version__
from udml_cli.config import Config, config_from_dict
from udml_cli.errors import CheckpointError
from udml_cli.fileio import atomic_write_bytes

FORMAT = "udml-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(path: str | os.PathLike, model, cfg: Config, dataset: str, **state) -> None:
    import torchvision

    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": cfg.model_dump(mode="json"),
        "dataset": dataset,
        "model": model.state_dict(),
        "backbone": {
            "name": cfg.model.backbone,
            "feat_dim": model.feat_dim,
            "mean": list(model.mean.flatten().tolist()),
            "std": list(model.std.flatten().tolist()),
        },
        "image_size": cfg.data.image_size,
        "versions": {
            "udml": __version__,
            "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__),
        },
        **state,
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about foreign pickle protocols
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises many kinds for foreign or damaged files
        text = str(e).strip()
        reason = text.split("WeightsUnpickler error:", 1)[-1].strip()
        first = reason.splitlines()[0][:160] if reason else type(e).__name__
        if "Unsupported global" in text or "GLOBAL" in text:
            raise CheckpointError(
                f"{path}: refused: the file holds Python objects other than tensors "
                "(it could run code); only udml checkpoints are loaded"
            ) from None
        if isinstance(e, (RuntimeError, EOFError, zipfile.BadZipFile)):
            raise CheckpointError(f"{path}: unreadable or truncated checkpoint ({first})") from None
        raise CheckpointError(f"{path}: not a checkpoint ({first})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a udml checkpoint (no '{FORMAT}' header)")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: written by a newer udml (format {payload['format_version']}); upgrade udml"
        )
    return payload


def model_from_checkpoint(payload: dict, path: str | os.PathLike = "checkpoint"):
    """Rebuild the network of a checkpoint (no weights download: they are in the file)."""
    from udml_cli.models.net import build_model

    cfg = config_from_dict(payload["config"])
    model = build_model(cfg.model, head=True, weights="none", quiet=True)
    try:
        model.load_state_dict(payload["model"])
    except (RuntimeError, KeyError) as e:
        first = str(e).strip().splitlines()[0][:160]
        raise CheckpointError(
            f"{path}: weights do not fit {cfg.model.backbone} ({first})"
        ) from None
    return model, cfg
