"""``udml eval``: Recall@K, NMI, MAP@R and R-Precision on a split never seen in training."""

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


def evaluate(
    checkpoint: Annotated[
        Path | None,
        typer.Argument(
            help="A checkpoint written by udml train, or a run folder: every saved checkpoint.",
            metavar="CHECKPOINT|RUN_DIR",
        ),
    ] = None,
    checkpoint_opt: CheckpointOpt = None,
    dataset: DatasetOpt = None,
    split: SplitOpt = "test",
    backbone: BackboneOpt = None,
    weights: WeightsOpt = None,
    image_size: ImageSizeOpt = None,
    device: DeviceOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    data_root: DataRootOpt = None,
    strict: StrictOpt = False,
    label_free: Annotated[
        bool,
        typer.Option(
            "--label-free",
            help="Score without labels, on the training images of the model's dataset (an "
            "unlabelled folder works): how often an edited copy of an image finds it, and how "
            "much of its neighbourhood survives the edit (udml_cli/selection.py). With a run "
            "folder, ranks its checkpoints by it.",
        ),
    ] = False,
    each_layer: Annotated[
        bool,
        typer.Option(
            "--each-layer",
            help="With --label-free and --backbone: score every stage of the backbone alone "
            "(model.pool, model.grid as set) on model.auto_images of the images, highest first: "
            "which model.layers to use (what model.layers = auto picks in udml train).",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate a checkpoint, or a pretrained backbone (the starting point to beat).

    \b
    udml eval --checkpoint runs/cub/last.pt  (or: udml eval runs/cub/last.pt)
    udml eval runs/cub                       # every epoch_NNNN.pt of the run, one table
    udml eval --backbone efficientnet_lite0 --weights imagenet --dataset fashion-mnist --json
    udml eval runs/photos --label-free       # no labels: rank checkpoints on your own images
    udml eval --backbone efficientnet_lite0 --dataset ~/photos --label-free --each-layer
    """
    from udml_cli import api
    from udml_cli.config import load_config, model_flags
    from udml_cli.errors import UsageError

    if checkpoint_opt is not None:
        if checkpoint is not None and checkpoint != checkpoint_opt:
            raise UsageError(
                f"two checkpoints given ({checkpoint} and --checkpoint {checkpoint_opt}); pass one"
            )
        checkpoint = checkpoint_opt
    dotted = {"data.data_root": data_root, "data.strict": True if strict else None}
    flags = model_flags(backbone, weights, device, image_size, **dotted)
    cfg = load_config(config, set_, flags)
    if each_layer and not label_free:
        raise UsageError("--each-layer goes with --label-free")
    if checkpoint is not None and checkpoint.is_dir() and not each_layer:
        run = _label_free_run if label_free else _evaluate_run
        run(checkpoint, cfg, dataset, data_root, split, as_json)
        return
    if each_layer:
        if checkpoint is None:  # else api.label_free refuses: nothing is being loaded
            console.print(
                f"eval: every stage of {cfg.model.backbone} ({cfg.model.weights}), label-free …"
            )
        with progress() as bar:
            rows = api.label_free(cfg, checkpoint, backbone, dataset, data_root, "train", bar,
                                  each_layer=True)  # fmt: skip
        title = f"{cfg.model.backbone}: each stage on {rows[0]['dataset']}/train"
        _label_free_table(rows, 0, title, "stage", [r["layer"] for r in rows])
        console.print(
            f"* highest: --set 'model.layers=[\"{rows[0]['layer']}\"]' (pool {cfg.model.pool}, "
            f"grid {cfg.model.grid})"
        )
        if as_json:
            emit_json({"layers": rows})
        return
    if label_free:
        console.print(
            f"eval: loading {checkpoint or f'{cfg.model.backbone} ({cfg.model.weights})'} …"
        )
        with progress() as bar:
            result = api.label_free(cfg, checkpoint, backbone, dataset, data_root, "train", bar)
        _label_free_table([result], None, f"{result['model']} on {result['dataset']}/train")
        if as_json:
            emit_json(result)
        return
    # something on stderr before the seconds of loading that come before the first bar
    console.print(f"eval: loading {checkpoint or f'{cfg.model.backbone} ({cfg.model.weights})'} …")
    with progress() as bar:
        result = api.evaluate(cfg, checkpoint, backbone, dataset, data_root, split, bar)
    render_metrics(result)
    if as_json:
        emit_json(result)


def _evaluate_run(run: Path, cfg, dataset, data_root, split: str, as_json: bool) -> None:
    from udml_cli import api
    from udml_cli.runs import run_checkpoints

    paths = run_checkpoints(run)
    console.print(f"eval: {len(paths)} checkpoints of {run} …")
    with progress() as bar:
        rows, best = api.evaluate_run(run, cfg, dataset, data_root, split, bar, paths)
    table = Table(title=f"{run}: {len(rows)} checkpoints on {rows[0]['dataset']}/{split}")
    cols, _ = percent_columns(rows[0])
    table.add_column("checkpoint")
    for c in cols:
        table.add_column(c, justify="right")
    for i, r in enumerate(rows):
        name = Path(r["model"]).name + (" *" if i == best else "")
        table.add_row(name, *[f"{v:.2f}" for v in percent_columns(r)[1]])
    console.print(table)
    console.print(
        f"* best R@1: {Path(rows[best]['model']).name}. Choosing among checkpoints on the "
        f"{split} split is what the paper did (its 54.69 on CUB is the best of 12, epoch 550); "
        "it is selection on the evaluation data: quote the last checkpoint, or choose on a "
        "separate validation split, for an unbiased number."
    )
    if as_json:
        emit_json(
            {"run": str(run), "split": split, "best_r1": rows[best]["model"], "checkpoints": rows}
        )


LABEL_FREE = [("score", "score"), ("copy_r1", "copy R@1"), ("copy_mrr", "copy MRR"),
              ("knn_overlap", "10-NN kept")]  # fmt: skip


def _label_free_table(rows: list[dict], best: int | None, title: str, what: str = "checkpoint",
                      names: list[str] | None = None) -> None:  # fmt: skip
    """One row per scored model (``names``: the first column, default each checkpoint's file
    name; none for a single row), ``best`` starred."""
    table = Table(title=title)
    if len(rows) > 1:
        table.add_column(what)
        names = names or [Path(r["model"]).name for r in rows]
    for _, name in LABEL_FREE:
        table.add_column(name, justify="right")
    for i, r in enumerate(rows):
        cells = [("–" if r[k] is None else f"{100 * r[k]:.2f}") for k, _ in LABEL_FREE]
        first = [names[i] + (" *" if i == best else "")] if len(rows) > 1 else []
        table.add_row(*first, *cells)
    console.print(table)
    console.print(
        f"label-free, percent, on {rows[0]['images']} training images and one edited copy of "
        "each (no labels used)"
    )


def _label_free_run(run: Path, cfg, dataset, data_root, split: str, as_json: bool) -> None:
    from udml_cli import api
    from udml_cli.runs import run_checkpoints

    paths = run_checkpoints(run)
    console.print(f"eval: {len(paths)} checkpoints of {run}, label-free …")
    with progress() as bar:
        rows, best = api.evaluate_run(run, cfg, dataset, data_root, split, bar, paths,
                                      label_free_only=True)  # fmt: skip
    _label_free_table(rows, best, f"{run}: {len(rows)} checkpoints, label-free")
    console.print(f"* highest label-free score: {Path(rows[best]['model']).name}")
    if as_json:
        emit_json({"run": str(run), "best_label_free": rows[best]["model"], "checkpoints": rows})


def render_metrics(result: dict, title: str | None = None) -> None:
    table = Table(
        title=title or f"{result.get('model', '')} on {result['dataset']}/{result['split']}"
    )
    cols, vals = percent_columns(result)
    for c in cols:
        table.add_column(c, justify="right")
    table.add_row(*[f"{v:.2f}" for v in vals])
    console.print(table)
    console.print(
        f"{result['num_queries']} queries, {result['num_classes']} classes, "
        f"{result.get('seconds', 0):.1f} s"
    )


def percent_columns(result: dict, ks: list[str] | None = None, rp: bool = True):
    """``(names, values)`` of an evaluation result for a table, in percent (every table uses
    this scale; ``--json`` keeps the fractions): Recall@K (``ks``: which K, default all), NMI,
    MAP@R and (``rp``) R-Precision."""
    ks = list(result["recall_at"]) if ks is None else ks
    names = [f"R@{k}" for k in ks] + ["NMI", "MAP@R"] + (["RP"] if rp else [])
    values = [100 * result["recall_at"][k] for k in ks]
    values += [100 * (result["nmi"] or 0), 100 * result["map_at_r"]]
    values += [100 * result["r_precision"]] if rp else []
    return names, values
