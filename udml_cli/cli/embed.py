"""``udml embed FOLDER``: one float32 row per image, as .npy on stdout or in --out."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from udml_cli.cli.common import (
    BackboneOpt,
    CheckpointOpt,
    ConfigOpt,
    DeviceOpt,
    ImageSizeOpt,
    NprocOpt,
    SetOpt,
    StrictOpt,
    WeightsOpt,
    console,
    data_stream,
    progress,
    require_data_stream,
)


def embed(
    folder: Annotated[Path, typer.Argument(help="Folder of images.")],
    checkpoint: CheckpointOpt = None,
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
    strict: StrictOpt = False,
    image_size: ImageSizeOpt = None,
    device: DeviceOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    nproc: NprocOpt = None,
) -> None:
    """Embed every image under FOLDER (sorted order) into an (N, dim) float32 .npy.

    \b
    udml embed photos/ --checkpoint runs/demo/last.pt > vectors.npy
    udml embed photos/ --backbone efficientnet_lite0 --weights imagenet -o v.npy --paths v.txt
    """

    from udml_cli.config import load_config, model_flags
    from udml_cli.data.layout import image_files
    from udml_cli.errors import DatasetError, UsageError
    from udml_cli.fileio import atomic_path, atomic_write_text, ensure_writable
    from udml_cli.inference import load_model
    from udml_cli.npyfile import RowFile

    if out is None:
        require_data_stream("use --out FILE")
    if out is None and data_stream().isatty():
        raise UsageError(
            "refusing to write binary .npy to a terminal: redirect (> v.npy) or use --out"
        )
    if not folder.is_dir():
        raise DatasetError(f"not a folder: {folder}")
    files = image_files(folder, recursive)
    if not files:
        hint = "" if recursive else " (add --recursive for subfolders)"
        raise DatasetError(f"no images in {folder}{hint}")
    for target, what in ((out, "--out"), (paths, "--paths")):
        if target is not None:
            ensure_writable(target, what)
    from udml_cli.cli import launch
    from udml_cli.cli.session import SESSION
    from udml_cli.engine import launched_rank, session_for

    rank, world = launched_rank()[:2]
    if nproc and world == 1:  # this process starts the N that embed
        launch.launch(nproc, launch.without_nproc(SESSION.args))
        return
    cfg = load_config(config, set_, model_flags(backbone, weights, device, image_size))
    model, cfg, _ = load_model(cfg, checkpoint, backbone)
    # the rows go straight to a .npy on disk (beside --out, renamed when complete; or a
    # temp file copied to stdout): memory stays flat however many images there are; under
    # --nproc each process embeds its share, rank 0 gathers the rows in memory and writes them
    with session_for(cfg.engine.device), progress() as bar:
        if world > 1:
            count, dim, ok = _embed_shared(out, model, cfg, files, strict, bar, folder, rank)
            if rank:
                return
        elif out is not None:
            with atomic_path(out) as tmp_out:
                count, dim, ok = _embed_to(tmp_out, model, cfg, files, strict, bar, folder)
        else:
            with tempfile.TemporaryDirectory(prefix="udml-embed-") as tmp:
                target = Path(tmp) / "vectors.npy"
                count, dim, ok = _embed_to(target, model, cfg, files, strict, bar, folder)
                sink = data_stream()
                sink.flush()
                RowFile(target).copy_to(sink.buffer)
                sink.flush()
    index = ok.nonzero()[0]
    bad = len(files) - len(index)
    if paths is not None:
        atomic_write_text(
            paths, "".join(files[i].relative_to(folder).as_posix() + "\n" for i in index)
        )
    console.print(
        f"embedded {count} images → ({count}, {dim}) float32"
        + (f"; skipped {bad} unreadable" if bad else "")
    )


def _embed_shared(out, model, cfg, files, strict, bar, folder: Path, rank: int):
    """Under ``--nproc``: every process embeds its share (``engine.extract`` gathers them);
    rank 0 writes the rows to ``out`` or stdout."""
    import numpy as np

    from udml_cli.api import embed_files
    from udml_cli.fileio import atomic_path

    x, ok = embed_files(model, cfg, files, strict, bar, folder.name)
    if rank == 0:
        if out is not None:
            with atomic_path(out) as tmp, open(tmp, "wb") as fh:
                np.save(fh, np.ascontiguousarray(x, dtype=np.float32))
        else:
            sink = data_stream()
            sink.flush()
            np.save(sink.buffer, np.ascontiguousarray(x, dtype=np.float32))
            sink.flush()
    return x.shape[0], x.shape[1], ok


def _embed_to(target: Path, model, cfg, files, strict, bar, folder: Path):
    """Embed ``files`` into the .npy ``target``; ``(rows, dim, ok)``."""
    from udml_cli.api import embed_files
    from udml_cli.npyfile import RowFile

    rows = RowFile(target)
    x, ok = embed_files(model, cfg, files, strict, bar, folder.name, allocate=rows.allocate)
    count, dim = x.shape
    rows.finish(count)
    return count, dim, ok
