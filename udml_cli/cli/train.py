"""``udml train``: UDML-SS on a dataset's training split, resumable, with metrics.jsonl."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from udml_cli.cli.common import (
    BackboneOpt,
    ConfigOpt,
    DataRootOpt,
    DeviceOpt,
    ImageSizeOpt,
    SetOpt,
    WeightsOpt,
    YesOpt,
    confirm,
    console,
    progress,
)
from udml_cli.cli.evaluate import render_metrics


def train(
    dataset: Annotated[
        str | None, typer.Option(help="Registered name, built-in name (cub, car, sop) or folder.")
    ] = None,
    config: ConfigOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run folder (default: runs/<dataset>).")
    ] = None,
    set_: SetOpt = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from <out>/last.pt with the same result.")
    ] = False,
    epochs: Annotated[int | None, typer.Option(min=1, help="Shortcut for train.epochs.")] = None,
    backbone: BackboneOpt = None,
    weights: WeightsOpt = None,
    image_size: ImageSizeOpt = None,
    device: DeviceOpt = None,
    data_root: DataRootOpt = None,
    yes: YesOpt = False,
) -> None:
    """Train an embedding without labels: k-means pseudo-labels + Weight loss + rotation loss.

    \b
    udml train --dataset cub --config templates/cub.toml --data-root ~/data
    udml train --dataset emoji --config templates/demo.toml --out runs/demo
    udml train --out runs/demo --resume          # after Ctrl-C or a crash
    """
    from udml_cli.config import load_config
    from udml_cli.data.registry import resolve_dataset
    from udml_cli.engine import resolve_engine
    from udml_cli.errors import UsageError
    from udml_cli.inference import evaluate, model_flags

    checkpoint = out / "last.pt" if (resume and out is not None) else None
    if resume and out is None:
        raise UsageError("--resume needs --out RUN_FOLDER (the folder holding last.pt)")
    if checkpoint is not None:
        if not checkpoint.is_file():
            raise UsageError(f"nothing to resume: {checkpoint} does not exist")
        if config is None and (out / "config.toml").is_file():
            config = out / "config.toml"
    dotted = {"data.dataset": dataset, "data.data_root": data_root, "train.epochs": epochs}
    flags = model_flags(backbone, weights, device, image_size, **dotted)
    cfg = load_config(config, set_, flags)
    if cfg.data.dataset is None:
        raise UsageError("no dataset: pass --dataset NAME (see `udml dataset list`)")
    ref = resolve_dataset(cfg.data.dataset, cfg.data.data_root)
    out = out or Path("runs") / ref.name
    if not resume and (out / "last.pt").exists():
        confirm(
            f"{out} holds a run. Start over and replace it?",
            yes,
            f"{out} already holds a run; use --resume to continue it or --yes to start over",
        )
    engine = resolve_engine(cfg.engine)

    from udml_cli.training import Trainer

    trainer = Trainer(cfg, ref, out, engine)

    def run_eval(model):
        return evaluate(model, cfg, ref, cfg.eval.split, engine, None)

    with progress() as bar:
        trainer.progress = bar
        try:
            last = trainer.run(checkpoint, run_eval)
        except KeyboardInterrupt:
            console.print(
                f"[yellow]interrupted:[/] saved {out / 'last.pt'}; continue with --resume"
            )
            raise typer.Exit(130) from None
    console.print(f"done: {last} (metrics in {out / 'metrics.jsonl'})")
    if cfg.train.eval_step:
        result = evaluate(trainer.model, cfg, ref, cfg.eval.split, engine, None)
        result["model"] = str(last)
        render_metrics(result)
