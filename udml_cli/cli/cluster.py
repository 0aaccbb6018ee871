"""``udml cluster``: k-means on a model's embeddings and what the clusters look like."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from udml_cli.cli.common import (
    BackboneOpt,
    CheckpointOpt,
    ConfigOpt,
    DataRootOpt,
    DeviceOpt,
    ImageSizeOpt,
    JsonOpt,
    SetOpt,
    StrictOpt,
    WeightsOpt,
    console,
    emit_json,
    progress,
)


def cluster(
    dataset: Annotated[
        str | None, typer.Option(help="Dataset (default: the checkpoint's).")
    ] = None,
    checkpoint: CheckpointOpt = None,
    backbone: BackboneOpt = None,
    weights: WeightsOpt = None,
    k: Annotated[
        int | None, typer.Option("--k", min=2, help="Clusters (default: cluster.num_clusters).")
    ] = None,
    split: Annotated[str, typer.Option(help="train or test.")] = "train",
    write_labels: Annotated[
        Path | None,
        typer.Option(help="Write pseudo-labels as 'PATH CLUSTER' lines (the train.txt format)."),
    ] = None,
    assignments: Annotated[
        Path | None,
        typer.Option(help="Write a CSV: path,cluster,similarity_to_centre (one row per image)."),
    ] = None,
    index_dir: Annotated[
        Path | None,
        typer.Option("--index", help="Cluster the vectors of a udml index (no model needed)."),
    ] = None,
    image_size: ImageSizeOpt = None,
    device: DeviceOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    data_root: DataRootOpt = None,
    strict: StrictOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Cluster a split with the model's embedding: sizes, objective, NMI/ARI/purity vs true labels.

    \b
    udml cluster --dataset fashion-mnist --backbone efficientnet_lite0 --weights imagenet --k 5 --split test
    udml cluster --dataset ~/photos --checkpoint runs/photos/last.pt --assignments clusters.csv
    udml cluster --index idx/photos --k 50 --assignments clusters.csv
    """

    from udml_cli.cli.common import model_flags
    from udml_cli.clustering import diagnostics, kmeans
    from udml_cli.config import auto_clusters, load_config
    from udml_cli.data.layout import read_split
    from udml_cli.engine import resolve_engine
    from udml_cli.errors import UsageError, note
    from udml_cli.fileio import atomic_write_text, ensure_writable
    from udml_cli.inference import embed_split, model_and_dataset

    dotted = {"data.data_root": data_root, "cluster.num_clusters": k}
    dotted["data.strict"] = True if strict else None
    cfg = load_config(config, set_, model_flags(backbone, weights, device, image_size, **dotted))
    c = cfg.cluster
    for target, what in ((write_labels, "--write-labels"), (assignments, "--assignments")):
        if target is not None:
            ensure_writable(target, what)
    if index_dir is not None:
        if checkpoint or backbone or dataset:
            raise UsageError(
                "--index clusters stored vectors: leave out --checkpoint/--backbone/--dataset"
            )
        from udml_cli.index import Index

        idx = Index.load(index_dir)
        x, truth, paths, labelled = idx.vectors, None, idx.paths, False
        where = {"dataset": str(index_dir), "split": "index"}
    else:
        model, cfg, ref = model_and_dataset(cfg, checkpoint, backbone, dataset, data_root)
        c = cfg.cluster
        samples = read_split(ref, split)
        if c.num_clusters != "auto" and c.num_clusters > len(samples):
            raise UsageError(
                f"--k {c.num_clusters} exceeds the {len(samples)} images of {ref.name}/{split}"
            )
        engine = resolve_engine(cfg.engine)
        kept: list = []
        with progress() as bar:
            x, truth = embed_split(model, cfg, ref, split, engine, bar, kept=kept)
        paths, labelled = [s.rel for s in kept], ref.labelled
        where = {"dataset": ref.name, "split": split}
    if c.num_clusters == "auto":
        c.num_clusters = auto_clusters(len(x), 2)
        note(f"--k not given: {c.num_clusters} clusters (one per 50 images)")
    if c.num_clusters > len(x):
        raise UsageError(f"--k {c.num_clusters} exceeds the {len(x)} readable images")
    result = kmeans(x, c.num_clusters, c.niter, c.seed, c.init, n_init=c.n_init)
    truth = truth if labelled else None  # an unlabelled collection: sizes and objective only
    diag = diagnostics(result.labels, c.num_clusters, result.objective, truth)
    diag.update(**where, images=len(x))
    _render(diag)
    if write_labels is not None:
        lines = [f"{p} {lab}\n" for p, lab in zip(paths, result.labels.tolist(), strict=True)]
        atomic_write_text(write_labels, "".join(lines))
        console.print(f"wrote {len(lines)} pseudo-labels to {write_labels}")
    if assignments is not None:
        atomic_write_text(assignments, assignment_csv(paths, x, result))
        console.print(f"wrote {len(paths)} assignments to {assignments}")
    if as_json:
        emit_json(diag)


def assignment_csv(paths: list[str], x, result) -> str:
    """``path,cluster,similarity_to_centre`` rows: cosine of each vector with its centroid."""
    import csv
    import io

    import numpy as np

    centres = result.centroids / np.linalg.norm(result.centroids, axis=1, keepdims=True).clip(1e-12)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
    sims = (unit * centres[result.labels]).sum(1)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "cluster", "similarity_to_centre"])
    for p, lab, sim in zip(paths, result.labels.tolist(), sims.tolist(), strict=True):
        writer.writerow([p, lab, f"{sim:.6f}"])
    return buf.getvalue()


def _render(d: dict) -> None:
    table = Table(title=f"k-means k={d['k']} on {d['dataset']}/{d['split']} ({d['images']} images)")
    for col in (
        "objective",
        "min",
        "median",
        "max",
        "empty",
        "singletons",
        "NMI %",
        "ARI %",
        "purity %",
    ):
        table.add_column(col, justify="right")
    table.add_row(
        f"{d['objective']:.1f}", str(d["size_min"]), f"{d['size_median']:g}", str(d["size_max"]),
        str(d["empty"]), str(d["singletons"]),
        *[f"{100 * d[k]:.2f}" if k in d else "–" for k in ("nmi", "ari", "purity")],
    )  # fmt: skip
    console.print(table)
    sizes = sorted(d["sizes"], reverse=True)
    top = max(sizes) or 1
    bins = sizes if len(sizes) <= 20 else [sizes[int(i * len(sizes) / 20)] for i in range(20)]
    for s in bins:
        console.print(f"  {s:>7d} {'█' * max(1, round(30 * s / top))}")
    if len(sizes) > 20:
        console.print(f"  (cluster sizes at 20 quantiles of {len(sizes)} clusters)")
