"""``udml eval``: Recall@K, NMI, MAP@R and R-Precision on a split never seen in training."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from udml_cli.cli.common import (
    BackboneOpt,
    ConfigOpt,
    DataRootOpt,
    DeviceOpt,
    ImageSizeOpt,
    JsonOpt,
    SetOpt,
    WeightsOpt,
    console,
    emit_json,
    progress,
)


def evaluate(
    checkpoint: Annotated[
        Path | None, typer.Argument(help="A checkpoint written by udml train.")
    ] = None,
    dataset: Annotated[
        str | None, typer.Option(help="Dataset (default: the checkpoint's).")
    ] = None,
    split: Annotated[str, typer.Option(help="train or test.")] = "test",
    backbone: BackboneOpt = None,
    weights: WeightsOpt = None,
    image_size: ImageSizeOpt = None,
    device: DeviceOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    data_root: DataRootOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate a checkpoint, or a pretrained backbone (the starting point to beat).

    \b
    udml eval runs/cub/last.pt
    udml eval --backbone efficientnet_lite0 --weights imagenet --dataset fashion-mnist --json
    """
    from udml_cli.config import load_config
    from udml_cli.engine import resolve_engine
    from udml_cli.inference import evaluate as run_eval
    from udml_cli.inference import model_and_dataset, model_flags

    flags = model_flags(backbone, weights, device, image_size, **{"data.data_root": data_root})
    cfg = load_config(config, set_, flags)
    model, cfg, ref = model_and_dataset(cfg, checkpoint, backbone, dataset, data_root)
    engine = resolve_engine(cfg.engine)
    with progress() as bar:
        result = run_eval(model, cfg, ref, split, engine, bar)
    result["model"] = str(checkpoint) if checkpoint else f"{cfg.model.backbone}:{cfg.model.weights}"
    render_metrics(result)
    if as_json:
        emit_json(result)


def render_metrics(result: dict, title: str | None = None) -> None:
    table = Table(
        title=title or f"{result.get('model', '')} on {result['dataset']}/{result['split']}"
    )
    cols = [f"R@{k}" for k in result["recall_at"]] + ["NMI", "MAP@R", "RP"]
    for c in cols:
        table.add_column(c, justify="right")
    vals = [100 * v for v in result["recall_at"].values()]
    vals += [100 * (result["nmi"] or 0), 100 * result["map_at_r"], 100 * result["r_precision"]]
    table.add_row(*[f"{v:.2f}" for v in vals])
    console.print(table)
    console.print(
        f"{result['num_queries']} queries, {result['num_classes']} classes, "
        f"{result.get('seconds', 0):.1f} s"
    )
