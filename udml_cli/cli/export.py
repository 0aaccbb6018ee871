"""``udml export``: the embedding as one ONNX or TorchScript file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from udml_cli.cli.common import BackboneOpt, ImageSizeOpt, WeightsOpt, console


def export(
    checkpoint: Annotated[
        Path | None, typer.Argument(help="Checkpoint to export (or --backbone for a start).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="File to write.")] = Path("model.onnx"),
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="onnx (onnxruntime …) or torchscript (libtorch).")
    ] = "onnx",
    backbone: BackboneOpt = None,
    weights: WeightsOpt = None,
    image_size: ImageSizeOpt = None,
) -> None:
    """Write the embedding (normalisation, backbone, pooling, head, L2 normalisation) as one file
    that takes RGB images in [0, 1] of any batch size; the image size and resize are in its
    metadata.

    \b
    udml export runs/photos/last.pt -o photos.onnx
    udml export runs/photos/last.pt -o photos.pt --format torchscript
    udml export --backbone efficientnet_lite0 --weights imagenet -o lite0.onnx
    """
    from udml_cli.api import load_model
    from udml_cli.errors import UsageError
    from udml_cli.export import FORMATS
    from udml_cli.export import export as write
    from udml_cli.fileio import ensure_writable

    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt}: one of {', '.join(FORMATS)}")
    ensure_writable(out, "--out")
    model, cfg = load_model(checkpoint, backbone, weights or "imagenet", image_size, "cpu")
    source = str(checkpoint) if checkpoint is not None else f"{backbone} ({weights or 'imagenet'})"
    meta = write(model, cfg, out, fmt, source)
    console.print(
        f"wrote {out} ({fmt}): {meta['dim']}-d embeddings of {meta['image_size']} px RGB in [0, 1] "
        f"(shorter side to {meta['resize']}, centre crop); the pipeline is in its metadata"
    )
