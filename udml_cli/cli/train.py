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
    StrictOpt,
    WeightsOpt,
    YesOpt,
    confirm,
    console,
    progress,
    say,
)
from udml_cli.cli.evaluate import render_metrics


def train(
    dataset: Annotated[
        str | None,
        typer.Option(
            help="Registered name, built-in name (cub, car, sop), layout or image folder."
        ),
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
    eval_dataset: Annotated[
        str | None,
        typer.Option(
            help="Labelled dataset to evaluate on (default: the training data's test split)."
        ),
    ] = None,
    strict: StrictOpt = False,
    yes: YesOpt = False,
) -> None:
    """Train an embedding without labels: k-means pseudo-labels + Weight loss + rotation loss.

    \b
    udml train --dataset cub --config templates/cub.toml --data-root ~/data
    udml train --dataset emoji --config templates/demo.toml --out runs/demo
    udml train --dataset ~/photos --out runs/photos   # any folder of images, no labels
    udml train --out runs/demo --resume          # after Ctrl-C or a crash
    """
    from udml_cli.cli.common import model_flags
    from udml_cli.config import load_config
    from udml_cli.data.registry import resolve_dataset
    from udml_cli.engine import resolve_engine
    from udml_cli.errors import UsageError
    from udml_cli.fileio import ensure_writable_dir
    from udml_cli.inference import evaluate
    from udml_cli.runs import ReplacedRun, RunLock, holds_run, resume_checkpoint

    if resume and out is None:
        raise UsageError("--resume needs --out RUN_FOLDER (the folder holding last.pt)")
    dotted = {"data.dataset": dataset, "data.data_root": data_root, "train.epochs": epochs}
    dotted["data.strict"] = True if strict else None
    dotted["data.eval_dataset"] = eval_dataset
    flags = model_flags(backbone, weights, device, image_size, **dotted)
    if resume:
        assert out is not None
        if not out.is_dir():
            raise UsageError(f"nothing to resume: {out} is not a run folder")
    else:
        cfg = load_config(config, set_, flags)
        if cfg.data.dataset is None:
            raise UsageError("no dataset: pass --dataset NAME (see `udml dataset list`)")
        out = out or Path("runs") / resolve_dataset(cfg.data.dataset, cfg.data.data_root).name
    ensure_writable_dir(out, "--out")
    with RunLock(out):
        checkpoint = payload = None
        if resume:
            checkpoint, payload = resume_checkpoint(out, yes, _confirmed)
            # the run's own config (inside the checkpoint) is the base; flags and --set on top
            cfg = load_config(config, set_, flags, base=payload["config"])
        ref = resolve_dataset(cfg.data.dataset, cfg.data.data_root)
        replaced = None
        replacing = not resume and holds_run(out)
        if replacing:
            confirm(
                f"{out} holds a run. Start over and replace it?",
                yes,
                f"{out} already holds a run; use --resume to continue it or --yes to start over",
            )
        engine = resolve_engine(cfg.engine)

        from udml_cli.training import Trainer

        trainer = Trainer(cfg, ref, out, engine)  # checks the settings against the data
        if replacing:
            replaced = ReplacedRun(out)  # the old run moves aside; the new one starts empty

        eval_ref = _eval_dataset(cfg, ref)

        def run_eval(model):
            return evaluate(model, cfg, eval_ref, cfg.eval.split, engine, None)

        try:
            with progress() as bar:
                trainer.progress = bar
                last = trainer.run(checkpoint, run_eval if eval_ref else None, payload)
        except KeyboardInterrupt:
            if (out / "last.pt").is_file():
                say("interrupted:", "yellow", f"saved {out / 'last.pt'}; continue with --resume")
            else:
                say("interrupted:", "yellow", "before the first checkpoint; nothing was kept")
            raise typer.Exit(130) from None
        finally:
            if replaced is not None:
                if (out / "last.pt").is_file():
                    replaced.commit()
                else:  # the new run left nothing worth keeping: the old one comes back
                    replaced.rollback()
    console.print(f"done: {last} (metrics in {out / 'metrics.jsonl'})")
    if cfg.train.eval_step and eval_ref is not None:
        result = evaluate(trainer.model, cfg, eval_ref, cfg.eval.split, engine, None)
        result["model"] = str(last)
        render_metrics(result)


def _eval_dataset(cfg, ref):
    """What training evaluates on: --eval-dataset, else the training data's own test split;
    an unlabelled collection alone has nothing to score against."""
    from udml_cli.data.registry import resolve_dataset
    from udml_cli.errors import UsageError, note

    if cfg.data.eval_dataset:
        eval_ref = resolve_dataset(cfg.data.eval_dataset, cfg.data.data_root)
        if not eval_ref.labelled:
            raise UsageError(
                f"--eval-dataset {cfg.data.eval_dataset} is an unlabelled collection: evaluation "
                "needs a labelled test split"
            )
        return eval_ref
    if ref.labelled:
        return ref
    if cfg.train.eval_step:
        note("no labelled data to evaluate on: train.eval_step is ignored (--eval-dataset NAME)")
    return None


def _confirmed(question: str, yes: bool, refuse: str) -> bool:
    confirm(question, yes, refuse)
    return True
