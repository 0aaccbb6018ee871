"""``udml embed FOLDER``: one float32 row per image, as .npy on stdout or in --out."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Annotated

import typer

from udml_cli.cli.common import (
    BackboneOpt,
    ConfigOpt,
    DeviceOpt,
    ImageSizeOpt,
    SetOpt,
    WeightsOpt,
    console,
    data_stream,
    progress,
)


def embed(
    folder: Annotated[Path, typer.Argument(help="Folder of images.")],
    checkpoint: Annotated[
        Path | None, typer.Option(help="Checkpoint written by udml train.")
    ] = None,
    backbone: BackboneOpt = None,
    weights: WeightsOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help=".npy file (default: stdout).")
    ] = None,
    paths: Annotated[
        Path | None, typer.Option(help="Write one relative path per row to this text file.")
    ] = None,
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Include subfolders.")
    ] = False,
    strict: Annotated[
        bool, typer.Option(help="Fail on an unreadable image instead of skipping it.")
    ] = False,
    image_size: ImageSizeOpt = None,
    device: DeviceOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Embed every image under FOLDER (sorted order) into an (N, dim) float32 .npy.

    \b
    udml embed photos/ --checkpoint runs/demo/last.pt > vectors.npy
    udml embed photos/ --backbone efficientnet_lite0 --weights imagenet -o v.npy --paths v.txt
    """
    import numpy as np

    from udml_cli.api import embed_files
    from udml_cli.cli.common import model_flags
    from udml_cli.config import load_config
    from udml_cli.data.images import list_images
    from udml_cli.errors import DatasetError, UsageError
    from udml_cli.fileio import atomic_write_bytes, atomic_write_text, ensure_writable
    from udml_cli.inference import load_model

    if out is None and data_stream().isatty():
        raise UsageError(
            "refusing to write binary .npy to a terminal: redirect (> v.npy) or use --out"
        )
    if not folder.is_dir():
        raise DatasetError(f"not a folder: {folder}")
    files = list_images(folder, recursive)
    if not files:
        hint = "" if recursive else " (add --recursive for subfolders)"
        raise DatasetError(f"no images in {folder}{hint}")
    for target, what in ((out, "--out"), (paths, "--paths")):
        if target is not None:
            ensure_writable(target, what)
    cfg = load_config(config, set_, model_flags(backbone, weights, device, image_size))
    model, cfg, _ = load_model(cfg, checkpoint, backbone)
    with progress() as bar:
        x, ok = embed_files(model, cfg, files, strict, bar, folder.name)
    index = ok.nonzero()[0]
    bad = len(files) - len(index)
    buf = io.BytesIO()
    np.save(buf, x)
    if paths is not None:
        atomic_write_text(
            paths, "".join(files[i].relative_to(folder).as_posix() + "\n" for i in index)
        )
    if out is not None:
        atomic_write_bytes(out, buf.getvalue())
    else:
        sink = data_stream()
        sink.flush()
        sink.buffer.write(buf.getvalue())
        sink.flush()
    console.print(
        f"embedded {len(x)} images → ({x.shape[0]}, {x.shape[1]}) float32"
        + (f"; skipped {bad} unreadable" if bad else "")
    )
