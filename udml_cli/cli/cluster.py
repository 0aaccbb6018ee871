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
    DatasetOpt,
    DeviceOpt,
    ImageSizeOpt,
    JsonOpt,
    SetOpt,
    SplitOpt,
    StrictOpt,
    WeightsOpt,
    console,
    emit_json,
    progress,
)


def cluster(
    dataset: DatasetOpt = None,
    checkpoint: CheckpointOpt = None,
    backbone: BackboneOpt = None,
    weights: WeightsOpt = None,
    k: Annotated[
        int | None, typer.Option("--k", min=2, help="Clusters (default: cluster.num_clusters).")
    ] = None,
    split: SplitOpt = "train",
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

    from udml_cli import api
    from udml_cli.config import load_config, model_flags
    from udml_cli.fileio import atomic_write_text, ensure_writable

    dotted = {"data.data_root": data_root, "cluster.num_clusters": k}
    dotted["data.strict"] = True if strict else None
    cfg = load_config(config, set_, model_flags(backbone, weights, device, image_size, **dotted))
    for target, what in ((write_labels, "--write-labels"), (assignments, "--assignments")):
        if target is not None:
            ensure_writable(target, what)
    with progress() as bar:
        found = api.cluster(cfg, checkpoint, backbone, dataset, data_root, split, index_dir, bar)
    _render(found.diagnostics)
    if write_labels is not None:
        atomic_write_text(write_labels, found.pseudo_label_lines())
        console.print(f"wrote {len(found.paths)} pseudo-labels to {write_labels}")
    if assignments is not None:
        atomic_write_text(assignments, found.assignment_csv())
        console.print(f"wrote {len(found.paths)} assignments to {assignments}")
    if as_json:
        emit_json(found.diagnostics)


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
