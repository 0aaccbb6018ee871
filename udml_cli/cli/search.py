"""``udml index | search | duplicates``: make a folder of images searchable and find near-copies."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from udml_cli.cli.common import (
    BackboneOpt,
    CheckpointOpt,
    DeviceOpt,
    HtmlOpt,
    ImageSizeOpt,
    JsonOpt,
    StrictOpt,
    WeightsOpt,
    YesOpt,
    confirm,
    console,
    emit_json,
    progress,
)
from udml_cli.fileio import atomic_write_text, ensure_writable

IndexOpt = Annotated[Path, typer.Option("--index", "-i", help="Index folder made by udml index.")]


def index(
    folder: Annotated[Path, typer.Argument(help="Folder of images (searched recursively).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Index folder to write or update.")],
    checkpoint: CheckpointOpt = None,
    backbone: BackboneOpt = None,
    weights: WeightsOpt = None,
    image_size: ImageSizeOpt = None,
    device: DeviceOpt = None,
    strict: StrictOpt = False,
    yes: YesOpt = False,
) -> None:
    """Embed every image under FOLDER into a searchable index (re-run: only new/changed files).

    --out is a new or empty folder, or an index udml made: one of the same folder and model is
    updated; one of another folder or model is replaced only with --yes (asked at a terminal).
    The index is written whole or not at all: an interrupted run leaves the previous one.

    \b
    udml index ~/photos --checkpoint runs/photos/last.pt --out idx/photos
    udml index ~/photos --backbone efficientnet_lite0 --weights imagenet --out idx/start
    """
    from udml_cli.api import build_index
    from udml_cli.fileio import ensure_writable_dir

    ensure_writable_dir(out, "--out")

    def asked(question: str, refuse: str) -> bool:
        confirm(question, yes, refuse)
        return True

    with progress() as bar:
        idx = build_index(folder, out, checkpoint, backbone, weights or "imagenet", image_size,
                          device or "auto", strict, bar, replace=yes, ask=asked)  # fmt: skip
    console.print(
        f"indexed {len(idx.files)} images of {idx.folder} in {out}: {idx.embedded} embedded, "
        f"{idx.kept} unchanged kept"
    )


def _query_model(idx, device):
    """The model an index was built with: the same checkpoint file (checked) or backbone."""
    from udml_cli.api import load_model
    from udml_cli.errors import UsageError
    from udml_cli.index import DamagedIndex, file_sha256

    m = idx.model
    if "checkpoint" in m:
        ckpt = Path(str(m["checkpoint"]))
        if not ckpt.is_file() or file_sha256(ckpt) != m.get("sha256"):
            raise UsageError(
                f"the index was built with {ckpt}, which is gone or changed since; "
                "re-run udml index with the checkpoint you want"
            )
        model, cfg = load_model(ckpt, image_size=m["image_size"], device=device or "auto")
        idx.check_model(model.dim, str(ckpt))
        return model, cfg
    try:
        backbone, weights, size = str(m["backbone"]), str(m["weights"]), int(m["image_size"])
    except (KeyError, TypeError, ValueError):
        raise DamagedIndex(f"{idx.out}/index.json: its model entry is malformed") from None
    model, cfg = load_model(None, backbone, weights, size, device or "auto")
    idx.check_model(model.dim, f"{backbone} ({weights})")
    return model, cfg


def search(
    queries: Annotated[list[Path], typer.Argument(help="Image files or folders to look up.")],
    index_dir: IndexOpt,
    k: Annotated[int, typer.Option("--k", min=1, help="Neighbours per query.")] = 10,
    device: DeviceOpt = None,
    html_out: HtmlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The K most similar indexed images for each query image (cosine similarity).

    \b
    udml search holiday.jpg --index idx/photos --k 5
    udml search queries/ --index idx/photos --json > hits.json
    """
    from udml_cli.api import embed_files
    from udml_cli.data.layout import image_files, is_image
    from udml_cli.errors import DatasetError
    from udml_cli.index import Index

    idx = Index.load(index_dir)
    if html_out is not None:
        ensure_writable(html_out, "--html")
    paths: list[Path] = []
    for q in queries:
        if q.is_dir():
            paths += image_files(q)
        elif q.is_file() and is_image(q):
            paths.append(q)
        else:
            raise DatasetError(f"query {q}: not an image file or a folder")
    if not paths:
        raise DatasetError("no query images found")
    model, cfg = _query_model(idx, device)
    with progress() as bar:
        x, ok = embed_files(model, cfg, paths, False, bar, "queries")
    sims, rows = idx.search(x, k)
    found = [p for p, good in zip(paths, ok.tolist(), strict=True) if good]
    results = [
        {"query": str(q), "neighbours": [
            {"path": idx.paths[r], "similarity": round(float(s), 6)}
            for s, r in zip(sims[i], rows[i], strict=True) if r >= 0
        ]}
        for i, q in enumerate(found)
    ]  # fmt: skip
    for res in results:
        table = Table(title=f"{res['query']}", title_justify="left")
        table.add_column("#", justify="right")
        table.add_column("similarity", justify="right")
        table.add_column(f"path (under {idx.folder})")
        for n, hit in enumerate(res["neighbours"], 1):
            table.add_row(str(n), f"{hit['similarity']:.4f}", hit["path"])
        console.print(table)
    if html_out is not None:
        from udml_cli.report import cell, page

        rows = []
        for res in results:
            cells = [cell(Path(res["query"]), "query", "q")]
            cells += [
                cell(idx.folder / h["path"], f"{h['similarity']:.3f}") for h in res["neighbours"]
            ]
            rows.append(f'<div class="row">{"".join(cells)}</div>')
        atomic_write_text(
            html_out, page(f"udml search in {idx.folder}", [("Results", "".join(rows))])
        )
        console.print(f"wrote {html_out}")
    if as_json:
        emit_json({"index": str(index_dir), "folder": str(idx.folder), "results": results})


def duplicates(
    index_dir: IndexOpt,
    threshold: Annotated[
        float | None,
        typer.Option(
            min=-1.0, max=1.0, help="Cosine similarity joining two images (default 0.95)."
        ),
    ] = None,
    html_out: HtmlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Groups of near-duplicate images (connected components of pairs above --threshold).

    \b
    udml duplicates --index idx/photos
    udml duplicates --index idx/photos --threshold 0.9 --json > dupes.json
    """
    from udml_cli.index import DEFAULT_THRESHOLD, Index, duplicate_groups

    idx = Index.load(index_dir)
    if html_out is not None:
        ensure_writable(html_out, "--html")
    t = DEFAULT_THRESHOLD if threshold is None else threshold
    groups = duplicate_groups(idx.vectors, t, idx.stored_faiss())
    out = [
        {"size": len(g), "min_similarity": round(w, 6), "paths": [idx.paths[i] for i in g]}
        for g, w in groups
    ]
    dupes = sum(len(g) for g, _ in groups)
    console.print(
        f"{len(groups)} groups of near-duplicates (similarity ≥ {t}), {dupes} of "
        f"{len(idx.files)} images"
    )
    for n, g in enumerate(out[:20], 1):
        console.print(f"group {n}: {g['size']} images (≥ {g['min_similarity']:.4f})")
        for p in g["paths"][:10]:
            console.print(f"    {p}")
        if g["size"] > 10:
            console.print(f"    … and {g['size'] - 10} more")
    if len(out) > 20:
        console.print(f"… {len(out) - 20} more groups (--json lists them all)")
    if html_out is not None:
        from udml_cli.report import duplicate_section, page

        paths = [idx.folder / p for p in idx.paths]
        body = duplicate_section(groups, paths, most=len(groups))
        atomic_write_text(
            html_out, page(f"near-duplicates in {idx.folder} (≥ {t})", [("Groups", body)])
        )
        console.print(f"wrote {html_out}")
    if as_json:
        emit_json({"index": str(index_dir), "threshold": t, "groups": out})
