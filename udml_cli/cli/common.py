"""What every command shares: the stderr console, prompts, JSON output, shared options."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from udml_cli.errors import UsageError

# markup off: user-supplied text (paths, keys, names with "[...]") is printed as it is; our own
# styling goes through ``styled`` below
console = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)

# stdout is for data only. ``main`` points sys.stdout (and, outside tests, file descriptor 1) at
# stderr for the whole run, so nothing a library prints can reach the data; data goes here.
_data_stream: Any = None


def data_stream():
    """The stream that carries data (JSON, .npy): the real stdout."""
    return _data_stream if _data_stream is not None else sys.stdout


def set_data_stream(stream) -> None:
    global _data_stream
    _data_stream = stream


def one_line(text: str) -> str:
    """A message as one line: control characters of user-supplied text shown escaped."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in str(text))


def styled(*parts: str | tuple[str, str]) -> Text:
    """``styled(("error:", "bold red"), " ", message)``: styles without markup parsing."""
    return Text.assemble(*parts)


def say(label: str, style: str, message: str) -> None:
    """``label: message`` on stderr, on one line, the label styled."""
    console.print(styled((label, style), " ", one_line(message)), soft_wrap=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML run config (see templates/).")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override one value: section.key=value (repeatable)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before replacing things.")]
DataRootOpt = Annotated[
    str | None,
    typer.Option(
        "--data-root", help="Parent folder of the built-in datasets (or $UDML_DATA_ROOT)."
    ),
]

BackboneOpt = Annotated[
    str | None,
    typer.Option(
        help="googlenet, resnet18, resnet50, efficientnet_b0, mobilenet_v3_large, convnext_tiny, "
        "efficientnet_lite0/lite2. In eval/embed/cluster: use its pooled feature (no head) "
        "instead of a checkpoint."
    ),
]
WeightsOpt = Annotated[
    str | None, typer.Option(help="Backbone weights: imagenet, none or a local .pth file.")
]
ImageSizeOpt = Annotated[
    int | None, typer.Option(min=8, help="Crop size (resize keeps the paper's 256/227 ratio).")
]
DeviceOpt = Annotated[str | None, typer.Option(help="auto, cpu, cuda or mps.")]
StrictOpt = Annotated[
    bool,
    typer.Option(
        "--strict", help="Stop on an unreadable image instead of skipping and listing it."
    ),
]


def interactive() -> bool:
    """True when a person can answer a prompt (both stdin and stderr are terminals)."""
    return sys.stdin.isatty() and sys.stderr.isatty()


def confirm(question: str, yes: bool, refuse: str) -> None:
    """Go on if ``--yes`` or the person says yes; otherwise stop with ``refuse`` as the message."""
    if yes:
        return
    if interactive():
        if typer.confirm(one_line(question), default=False, err=True):
            return
        console.print("nothing was changed")
        raise typer.Exit(1)
    raise UsageError(f"{refuse} (no terminal to ask: pass --yes)")


def ask(value: Any, prompt: str, option: str) -> Any:
    """Return ``value`` or prompt for it at a terminal; without one, fail naming ``option``."""
    if value is not None:
        return value
    if interactive():
        return typer.prompt(prompt, err=True)
    raise UsageError(f"missing {option} (no terminal to ask)")


def emit_json(obj: Any) -> None:
    out = data_stream()
    out.write(json.dumps(obj, indent=2, default=str) + "\n")
    out.flush()


def progress() -> Progress:
    """A rich progress bar on stderr (rich shows it live only when stderr is a terminal)."""
    return Progress(
        TextColumn("{task.description}", style="bold", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def model_flags(backbone=None, weights=None, device=None, image_size=None, **dotted) -> dict:
    """The common flags as dotted config keys. ``--image-size N`` crops N after resizing the
    shorter side to N·256/227 (the paper's ratio)."""
    from udml_cli.config import image_size_keys

    flags = {"model.backbone": backbone, "model.weights": weights, "engine.device": device}
    if image_size is not None:
        flags |= image_size_keys(image_size)
    return flags | dotted
