"""``udml train``: UDML-SS on a dataset's training split, resumable, with metrics.jsonl."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from udml_cli.cli.common import (
    BackboneOpt,
    ConfigOpt,
    DataRootOpt,
    DatasetOpt,
    DeviceOpt,
    ImageSizeOpt,
    SaidInterrupted,
    SetOpt,
    StrictOpt,
    WeightsOpt,
    YesOpt,
    ask,
    confirm,
    console,
    progress,
    say,
)


def train(
    dataset: DatasetOpt = None,
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
    nproc: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Train in N processes with DistributedDataParallel (gloo on the CPU, NCCL "
            "with one GPU each); the batch is split, the recipe unchanged. Same as torchrun "
            "--standalone --nproc-per-node N -m udml_cli train ….",
        ),
    ] = None,
) -> None:
    """Train an embedding without labels (train.method: udml-ss, stml or invariance).

    udml-ss (the paper, the default): k-means pseudo-labels, Weight loss and rotation loss;
    stml: an EMA teacher's contextual similarity; invariance: edited views of each image pulled
    together (the photos template). `udml templates` lists recipes per kind of data.

    \b
    udml train --dataset cub --config templates/cub.toml --data-root ~/data
    udml train --dataset emoji --config templates/demo.toml --out runs/demo
    udml train --dataset ~/photos --config photos   # any folder of images, no labels
    udml train --out runs/demo --resume          # after Ctrl-C or a crash
    udml train --dataset cub --config cub --nproc 4   # 4 processes (DDP)
    """
    import time

    from udml_cli.api import run_summary
    from udml_cli.api import train as run_training
    from udml_cli.cli import launch
    from udml_cli.cli.session import SESSION
    from udml_cli.config import load_config, model_flags
    from udml_cli.data.registry import resolve_dataset
    from udml_cli.engine import launched_rank
    from udml_cli.errors import UsageError

    rank, world = launched_rank()[:2]
    if resume and out is None:
        raise UsageError("--resume needs --out RUN_FOLDER (the folder holding last.pt)")
    dotted = {"data.dataset": dataset, "data.data_root": data_root, "train.epochs": epochs}
    dotted["data.strict"] = True if strict else None
    dotted["data.eval_dataset"] = eval_dataset
    flags = model_flags(backbone, weights, device, image_size, **dotted)
    if not resume:
        cfg = load_config(config, set_, flags)
        if cfg.data.dataset is None:  # at a terminal: asked; otherwise one line naming the flag
            flags["data.dataset"] = ask(
                None,
                "Dataset to train on (a name from `udml dataset list`, or a folder of images)",
                "--dataset NAME (see `udml dataset list`)",
            ).strip()
            cfg = load_config(config, set_, flags)
        if config is None and not (nproc and world == 1):  # rank 0 will say it
            announce_defaults(cfg)
        out = out or Path("runs") / resolve_dataset(cfg.data.dataset, cfg.data.data_root).name
    assert out is not None
    if nproc and world == 1:  # this process starts the N that train
        args = launch.without_nproc(SESSION.args)
        given = {a.split("=")[0] for a in args}
        if not resume and flags["data.dataset"] and "--dataset" not in given:
            args += ["--dataset", flags["data.dataset"]]  # answered at the prompt above
        if not given & {"--out", "-o"}:
            args += ["--out", str(out)]  # the default, decided once
        launch.launch(nproc, args, out)
        return
    started = time.perf_counter()
    try:
        with progress() as bar:
            last = run_training(
                out, config, resume=resume, progress=bar, replace=yes, ask=lambda q, r: _ask(q, r, yes, world),
                set_values=set_, flags=flags,
            )  # fmt: skip
    except KeyboardInterrupt:
        if (out / "last.pt").is_file():
            say("interrupted:", "yellow", f"saved {out / 'last.pt'}; continue with --resume")
        else:
            say("interrupted:", "yellow", "before the first checkpoint; nothing was kept")
        launch.mark_interrupt_said()
        raise SaidInterrupted from None
    if rank == 0:
        print_summary(run_summary(out), last, time.perf_counter() - started)


def announce_defaults(cfg) -> None:
    """No --config: say which recipe runs (the defaults are the paper's CUB recipe)."""
    t, m = cfg.train, cfg.model
    say(
        "note:",
        "cyan",
        f"no --config: the built-in defaults (the paper's CUB recipe) with your flags: "
        f"{t.epochs} epochs, {m.backbone}, batch {t.batch_size}, image {cfg.data.image_size}; on a CPU start from "
        "a smaller one: `udml templates` lists them (e.g. --config demo or --config photos)",
    )


def print_summary(summary: dict, last: Path, seconds: float) -> None:
    """The closing lines of a run: where it is, how long, the losses, the scores vs the start."""
    from rich.table import Table

    from udml_cli.cli.evaluate import percent_columns
    from udml_cli.methods.base import short

    parts = summary["last_step"]
    losses = " ".join(f"{k} {short(v)}" for k, v in parts.items())
    console.print(
        f"done: {last} after {summary['epochs']} epochs, {summary['steps']} steps, "
        f"{seconds:.0f} s (training {summary['seconds']:.0f} s); metrics in "
        f"{last.parent / 'metrics.jsonl'}"
    )
    if summary["mean_loss"] is not None:
        console.print(f"last epoch mean loss {summary['mean_loss']:.4f}; last step {losses}")
    free = summary.get("label_free") or []
    if len(free) > 1:
        best = max(free, key=lambda e: e[1])
        console.print(
            f"label-free score, percent (edited copies found, neighbourhoods kept; no labels): "
            f"{100 * free[0][1]:.2f} at epoch {free[0][0]} → {100 * free[-1][1]:.2f} at epoch "
            f"{free[-1][0]}; highest {100 * best[1]:.2f} at epoch {best[0]} (`udml eval RUN "
            "--label-free` ranks the checkpoints, epoch_0000.pt the start)"
        )
    end, start = summary["end"], summary["start"]
    if end is None:
        return
    ks = [k for k in end["recall_at"] if int(k) <= 8]  # R@1..R@8: the table fits 80 columns
    table = Table(
        title=f"{end['dataset']}/{end['split']}: start vs end (step {end['step']}), percent"
    )
    table.add_column("")
    for col in percent_columns(end, ks, rp=False)[0]:
        table.add_column(col, justify="right")

    def row(r: dict) -> list[float]:
        return percent_columns(r, ks, rp=False)[1]

    rows = [("start", row(start))] if start else []
    rows.append(("end", row(end)))
    if start:
        rows.append(("change", [b - a for a, b in zip(rows[0][1], rows[1][1], strict=True)]))
    for name, vals in rows:
        sign = "+" if name == "change" else ""
        table.add_row(name, *[f"{v:{sign}.2f}" for v in vals])
    console.print(table)


def _ask(question: str, refuse: str, yes: bool, world: int = 1) -> bool:
    """At a terminal, ask (``--yes``: yes); several processes (torchrun) never ask: each
    would, so ``--yes`` decides for all."""
    if world > 1:
        return yes
    confirm(question, yes, refuse)
    return True
