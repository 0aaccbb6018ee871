"""``udml index | search | duplicates``: make a folder of images searchable and find near-copies."""

from __future__ import annotations

import io
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
    NprocOpt,
    StrictOpt,
    WeightsOpt,
    YesOpt,
    confirm,
    console,
    data_stream,
    emit_json,
    progress,
)
from udml_cli.fileio import atomic_write_text, ensure_writable
from udml_cli.review import KeepRule

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
    nproc: NprocOpt = None,
    calibrate: Annotated[
        bool,
        typer.Option(
            help="Calibrate the duplicate threshold on edited copies of a sample of these images "
            "against their look-alikes (those as close as copies told apart by local features, "
            "with OpenCV); stored in the index, udml duplicates uses it."
        ),
    ] = True,
    hashes: Annotated[
        bool,
        typer.Option(
            help="Store each image's perceptual hash too (udml duplicates joins the pairs it "
            "finds with the embedding's: they find opposite edits)."
        ),
    ] = True,
    precision: Annotated[
        float,
        typer.Option(
            min=0.5,
            max=0.9999,
            help="Precision the calibrated duplicate threshold aims at (copies among the pairs "
            "it joins, if each image had one copy).",
        ),
    ] = 0.99,
) -> None:
    """Embed every image under FOLDER into a searchable index (re-run: only new/changed files).

    --out is a new or empty folder, or an index udml made: one of the same folder and model is
    updated; one of another folder or model is replaced only with --yes (asked at a terminal).
    The index is written whole or not at all: an interrupted run leaves the previous one.
    It stores a duplicate threshold calibrated on edited copies of a sample of the images
    (--precision; --no-calibrate skips it), which udml duplicates uses.

    \b
    udml index ~/photos --checkpoint runs/photos/last.pt --out idx/photos
    udml index ~/photos --backbone efficientnet_lite0 --weights imagenet --out idx/start
    """
    from udml_cli.api import build_index
    from udml_cli.cli import launch
    from udml_cli.cli.session import SESSION
    from udml_cli.engine import launched_rank, session_for
    from udml_cli.fileio import ensure_writable_dir

    ensure_writable_dir(out, "--out")
    rank, world = launched_rank()[:2]
    if nproc and world == 1:  # this process starts the N that embed
        launch.launch(nproc, launch.without_nproc(SESSION.args))
        return

    def asked(question: str, refuse: str) -> bool:
        confirm(question, yes, refuse)
        return True

    with session_for(device or "auto"), progress() as bar:
        idx = build_index(folder, out, checkpoint, backbone, weights or "imagenet", image_size,
                          device or "auto", strict, bar, replace=yes, ask=asked,
                          calibrate=calibrate, precision=precision, hashes=hashes)  # fmt: skip
    if rank:
        return
    console.print(
        f"indexed {len(idx.files)} images of {idx.folder} in {out}: {idx.embedded} embedded, "
        f"{idx.kept} unchanged kept"
    )
    if idx.calibration is not None:
        from udml_cli.calibration import Calibration

        again = "" if idx.calibrated else " (kept from the last run: same model and precision)"
        console.print(Calibration.from_dict(idx.calibration).summary() + again)


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
    from udml_cli.api import embed_files, index_model
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
    model, cfg = index_model(idx, device or "auto")
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
            cells = [cell(Path(res["query"]), f"query: {Path(res['query']).name}", "q")]
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
            min=-1.0,
            max=1.0,
            help="Cosine similarity joining two images (default: the index's calibrated "
            "threshold, else 0.95).",
        ),
    ] = None,
    keep_rule: Annotated[
        KeepRule | None,
        typer.Option(
            "--keep",
            help="Mark one file of each group to keep (largest: most pixels; newest/oldest: "
            "modification time; first: path order) and the rest as candidates to remove, as CSV "
            "on stdout (or --csv). Nothing is deleted.",
        ),
    ] = None,
    csv_out: Annotated[
        Path | None, typer.Option("--csv", help="Write the --keep CSV to this file.")
    ] = None,
    hash_distance: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=32,
            help="Also join pairs whose perceptual hashes are at most this many bits apart "
            "(default 6 when the index holds hashes).",
        ),
    ] = None,
    no_hash: Annotated[
        bool, typer.Option("--no-hash", help="Join pairs by the embedding alone.")
    ] = False,
    verify: Annotated[
        bool | None,
        typer.Option(
            "--verify/--no-verify",
            help="Check pairs by matching local features in the files: join looser candidates "
            "(each image's nearest neighbours, hashes up to 12 bits apart) whose keypoints one "
            "crop/rotation/mirror maps onto each other, and undo a join when both pictures have "
            "keypoints and none agree, or when they are too smooth to judge and their embedding "
            "similarity is below 0.5: with --threshold under 0.5, such smooth pairs stand only "
            "when keypoints confirm them (default: on when OpenCV is installed).",
        ),
    ] = None,
    verify_limit: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Check at most this many looser candidate pairs, the most similar first (default "
            "10000: minutes on 2 cores, up to ~20 when each pair brings new pictures; the links "
            "are always checked).",
        ),
    ] = None,
    html_out: HtmlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Groups of near-duplicate images (connected components of pairs above --threshold).

    A pair joins when its embedding similarity reaches the threshold (the one calibrated when
    the index was built, unless given) or its perceptual hashes are at most --hash-distance bits
    apart: the two find opposite edits. Then pairs are checked in the files themselves
    (--verify): a crop, mirror or rotation of one picture shares keypoints with it that one
    transform maps onto each other, two look-alike pictures do not. Every group lists its
    links, with their similarity, in --json;
    --keep RULE says which file of each group to keep and which could go. udml never deletes.

    \b
    udml duplicates --index idx/photos
    udml duplicates --index idx/photos --threshold 0.9 --json > dupes.json
    udml duplicates --index idx/photos --keep largest > review.csv
    udml duplicates --index idx/photos --keep newest --csv review.csv --html review.html
    """
    from udml_cli.errors import UsageError
    from udml_cli.index import Index
    from udml_cli.review import csv_rows, find_duplicates, write_csv

    keep = None if keep_rule is None else keep_rule.value
    if csv_out is not None and keep is None:
        raise UsageError("--csv writes the --keep review; add --keep largest|newest|oldest|first")
    if keep is not None and csv_out is None and as_json:
        raise UsageError("--json and the --keep CSV would both go to stdout; add --csv FILE")
    idx = Index.load(index_dir)
    for path, what in ((html_out, "--html"), (csv_out, "--csv")):
        if path is not None:
            ensure_writable(path, what)
    with progress() as bar:
        found = find_duplicates(idx, threshold, hash_distance, no_hash, keep, verify, bar,
                                verify_limit)  # fmt: skip
    groups, t = found.groups, found.threshold
    console.print(f"using {found.threshold_from}; {found.hashes_from}; {found.verify_from}")
    paths = idx.paths
    out = []
    for g in groups:
        entry = {
            "size": len(g.members), "min_similarity": round(g.weakest, 6),
            "paths": [paths[i] for i in g.members],
            "pairs": [{"a": paths[a], "b": paths[b], "similarity": sim} for a, b, sim in g.pairs],
        }  # fmt: skip
        if keep is not None:
            entry |= {"keep": paths[g.keep], "rule": keep}
        out.append(entry)
    dupes = sum(len(g.members) for g in groups)
    if found.unsupported:
        console.print(
            f"{found.unsupported} links left out: each alone would have joined two groups (no "
            "third image links to both ends)"
        )
    console.print(
        f"{len(groups)} groups of near-duplicates ({found.joined_by}), {dupes} of "
        f"{len(idx.files)} images"
    )
    for n, g in enumerate(out[:20], 1):
        console.print(f"group {n}: {g['size']} images (≥ {g['min_similarity']:.4f})")
        for p in g["paths"][:10]:
            mark = " (keep)" if keep is not None and p == g["keep"] else ""
            console.print(f"    {p}{mark}")
        if g["size"] > 10:
            console.print(f"    … and {g['size'] - 10} more")
    if len(out) > 20:
        console.print(f"… {len(out) - 20} more groups (--json lists them all)")
    if html_out is not None:
        from udml_cli.report import duplicate_section, page

        body = duplicate_section(groups, [idx.folder / p for p in paths], most=len(groups),
                                 rule=keep)  # fmt: skip
        atomic_write_text(
            html_out, page(f"near-duplicates in {idx.folder} (≥ {t})", [("Groups", body)])
        )
        console.print(f"wrote {html_out}")
    if keep is not None:
        rows = csv_rows(groups, idx.vectors, idx.files, idx.folder)
        removable = sum(r["action"] != "keep" for r in rows)
        if csv_out is not None:
            buf = io.StringIO()
            write_csv(rows, buf)
            atomic_write_text(csv_out, buf.getvalue())
            console.print(f"wrote {csv_out}")
        else:
            write_csv(rows, data_stream())
        console.print(
            f"keep rule {keep}: {len(groups)} kept, {removable} candidates to remove "
            "(nothing was deleted)"
        )
    if as_json:
        emit_json({"index": str(index_dir), "threshold": t, "threshold_from": found.threshold_from,
                   "hash_distance": found.hash_distance, "checked_by_local_features":
                   found.checked, "confirmed_by_local_features": found.verified,
                   "overruled_by_local_features": found.overruled,
                   "candidates_left_unchecked": found.unchecked,
                   "links_left_out": found.unsupported, "groups": out})  # fmt: skip
