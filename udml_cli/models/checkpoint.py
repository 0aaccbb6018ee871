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
from udml_cli.errors import CheckpointError, ConfigError
from udml_cli.fileio import atomic_write_bytes
from udml_cli.models.safe_load import runs_code

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


# what every checkpoint holds, and what a training (resumable) one holds besides
_REQUIRED = {"config": dict, "model": dict}
_TRAINING = {"epoch": int, "iteration": int, "step": int, "optimizer": dict}


def _check_fields(payload: dict, fields: dict, path: Path, what: str) -> None:
    for key, kind in fields.items():
        if not isinstance(payload.get(key), kind) or isinstance(payload.get(key), bool):
            raise CheckpointError(
                f"{path}: damaged or incomplete udml checkpoint (no valid '{key}'){what}"
            )


def load_checkpoint(path: str | os.PathLike, training: bool = False) -> dict:
    """Read and check a udml checkpoint; ``training`` also requires the state to resume from."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about foreign pickle protocols
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises many kinds for foreign or damaged files
        if runs_code(e):
            raise CheckpointError(
                f"{path}: refused: the file holds Python objects other than tensors "
                "(it could run code); only udml checkpoints are loaded"
            ) from None
        if isinstance(e, (RuntimeError, EOFError, zipfile.BadZipFile, OSError)):
            raise CheckpointError(
                f"{path}: unreadable or truncated checkpoint (the file is damaged or incomplete)"
            ) from None
        # never torch's own text: it suggests weights_only=False, i.e. turning the safety off
        raise CheckpointError(f"{path}: not a checkpoint (not a file torch.save wrote)") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a udml checkpoint (no '{FORMAT}' header)")
    version = payload.get("format_version", 0)
    if not isinstance(version, int):
        raise CheckpointError(f"{path}: damaged udml checkpoint (format_version)")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: written by a newer udml (format {payload['format_version']}); upgrade udml"
        )
    _check_fields(payload, _REQUIRED, path, "")
    if training:
        from udml_cli.errors import UsageError
        from udml_cli.methods import method_class

        name = (payload["config"].get("train") or {}).get("method", "udml-ss")
        try:
            kind = method_class(str(name))
        except UsageError as e:
            raise CheckpointError(
                f"{path}: trained with a method this udml does not have ({e})"
            ) from None
        _check_fields(payload, _TRAINING | kind.checkpoint_fields, path,
                      "; it cannot be resumed from")  # fmt: skip
        version = (payload.get("method") or {}).get("version", 1)
        if not isinstance(version, int) or version > kind.version:
            raise CheckpointError(f"{path}: its {name} state is of a newer udml; upgrade udml")
        damaged = kind.check_checkpoint(payload)
        if damaged:
            raise CheckpointError(f"{path}: damaged udml checkpoint ({damaged})")
    return payload


def model_from_checkpoint(payload: dict, path: str | os.PathLike = "checkpoint"):
    """Rebuild the network of a checkpoint (no weights download: they are in the file)."""
    from udml_cli.models.net import build_network

    try:
        cfg = config_from_dict(payload["config"])
    except ConfigError as e:
        raise CheckpointError(f"{path}: its config is not valid ({e})") from None
    model = build_network(cfg, weights="none", quiet=True)
    try:
        model.load_state_dict(payload["model"])
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        first = str(e).strip().splitlines()[0][:160]
        raise CheckpointError(
            f"{path}: weights do not fit {cfg.model.backbone} ({first})"
        ) from None
    return model, cfg
