"""What every command shares: the stderr console, prompts, JSON output, shared options."""

from __future__ import annotations

import json
import os
import sys
import time
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
from rich.table import Column
from rich.text import Text

from udml_cli.errors import UsageError, quiet_rank

# markup off: user-supplied text (paths, keys, names with "[...]") is printed as it is; our own
# styling goes through ``styled`` below
console = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)

# stdout is for data only. ``main`` points sys.stdout (and, outside tests, file descriptor 1) at
# stderr for the whole run, so nothing a library prints can reach the data; data goes to
# ``data_stream()``, the session's (``cli/session.py``).


def data_stream():
    """The stream that carries data (JSON, .npy): the real stdout."""
    from udml_cli.cli.session import SESSION

    return SESSION.stdout


class DataOut:
    """The real stdout as udml writes data to it: unbuffered writes to a file descriptor (so a
    failed write is reported once, with nothing left to flush at exit), text or bytes
    (``.buffer``); a write that fails (a full disk, a closed pipe) is one ``UdmlError``; a
    closed stdout (``fd`` None) refuses every write."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd
        self.buffer = self

    def write(self, data) -> int:
        if self.fd is None:
            raise UsageError(CLOSED)
        raw = data.encode() if isinstance(data, str) else bytes(data)
        view = memoryview(raw)
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError as e:
            from udml_cli.errors import UdmlError, describe_os_error

            e.filename = "stdout"
            raise UdmlError(describe_os_error(e)) from None
        return len(data)

    def flush(self) -> None:
        return None

    def isatty(self) -> bool:
        return self.fd is not None and os.isatty(self.fd)

    @property
    def closed(self) -> bool:
        return self.fd is None


CLOSED = "stdout is closed: the data this command prints has nowhere to go; redirect it (> FILE)"


def require_data_stream(what: str = "") -> None:
    """Refuse before any work when the data a command will print has nowhere to go."""
    if getattr(data_stream(), "closed", False):
        raise UsageError(CLOSED + (f" or {what}" if what else ""))


def _json_flag(value: bool) -> bool:
    if value:
        require_data_stream()
    return value


def one_line(text: str) -> str:
    """A message as one line: control characters of user-supplied text shown escaped."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in str(text))


def styled(*parts: str | tuple[str, str]) -> Text:
    """``styled(("error:", "bold red"), " ", message)``: styles without markup parsing."""
    return Text.assemble(*parts)


class SaidInterrupted(SystemExit):
    """Exit 130 after the command has said how Ctrl-C left its work (``app``'s boundary adds
    no line of its own; it passes through Typer unchanged)."""

    def __init__(self) -> None:
        super().__init__(130)


def say(label: str, style: str, message: str) -> None:
    """``label: message`` on stderr, on one line, the label styled (rank 0's only, under
    torchrun: the other processes' lines would repeat it)."""
    if quiet_rank():
        return
    console.print(styled((label, style), " ", one_line(message)), soft_wrap=True)


ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML run config (see templates/).")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override one value: section.key=value (repeatable)."),
]
JsonOpt = Annotated[
    bool,
    typer.Option("--json", help="Print one JSON object on stdout.", callback=_json_flag),
]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before replacing things.")]
DataRootOpt = Annotated[
    str | None,
    typer.Option(
        "--data-root", help="Parent folder of the built-in datasets (or $UDML_DATA_ROOT)."
    ),
]

# the one spelling of a model checkpoint (udml eval also takes it as its argument)
CheckpointOpt = Annotated[
    Path | None, typer.Option("--checkpoint", help="Checkpoint written by udml train.")
]
BackboneOpt = Annotated[
    str | None,
    typer.Option(
        help="One of: {backbones}. In eval/embed/cluster/index: use its pooled feature (no "
        "head) instead of a checkpoint."
    ),
]
WeightsOpt = Annotated[
    str | None, typer.Option(help="Backbone weights: imagenet, none or a local .pth file.")
]
ImageSizeOpt = Annotated[
    int | None, typer.Option(min=8, help="Crop size (resize keeps the paper's 256/227 ratio).")
]
DeviceOpt = Annotated[str | None, typer.Option(help="auto, cpu, cuda or mps.")]
DatasetOpt = Annotated[
    str | None,
    typer.Option(
        help="A registered name, a built-in name (cub, car, sop), a layout folder or a folder of "
        "images (eval/cluster: default the checkpoint's)."
    ),
]
SplitOpt = Annotated[str, typer.Option(help="Which split: train or test.")]
NprocOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Embed in N processes (gloo on the CPU, one GPU each with CUDA), each its "
        "contiguous share of the images; rank 0 writes. Same rows as one process.",
    ),
]
HtmlOpt = Annotated[
    Path | None, typer.Option("--html", help="Also write an HTML gallery of the result.")
]
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
    """One JSON document on stdout: strict JSON (a NaN or infinity is a bug, not output)."""
    out = data_stream()
    out.write(json.dumps(obj, indent=2, default=str, allow_nan=False) + "\n")
    out.flush()


def progress():
    """Progress on stderr: a live rich bar at a terminal; in a log file (stderr redirected),
    plain timestamped lines every ``LOG_EVERY`` seconds and when a task ends; none in a
    torchrun process other than rank 0."""
    import contextlib

    if quiet_rank():
        return contextlib.nullcontext()
    if not console.is_terminal:
        return LogProgress()
    # its own console without soft wrap, the description column cut with "…": one row per task
    # whatever the window's width (tests/test_newcomer.py pins that layout)
    live = Console(stderr=True, highlight=False, markup=False)
    return Progress(
        TextColumn(
            "{task.description}",
            style="bold",
            markup=False,
            table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1),
        ),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=live,
        expand=True,
    )


LOG_EVERY = 30.0  # seconds between progress lines in a log file


class LogProgress:
    """The ``rich.progress.Progress`` calls udml makes, written as lines a log file can use:
    ``[12:00:30] training 120/1200 (10%), 1m40s, ETA 15m00s: epoch 3/20 loss 0.412 …``."""

    def __init__(self, every: float | None = None) -> None:
        self.every = LOG_EVERY if every is None else every
        self.tasks: dict[int, dict] = {}

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def add_task(self, description: str, total: float | None = None, completed: float = 0, **_):
        now = time.monotonic()
        key = len(self.tasks)
        self.tasks[key] = {
            "name": description,
            "description": description, "total": total, "done": completed, "start": now,
            "start_done": completed, "printed": now,
        }  # fmt: skip
        self._line(key, now)
        return key

    def advance(self, task: int, advance: float = 1) -> None:
        self.update(task, advance=advance)

    def update(self, task: int, advance: float | None = None, completed: float | None = None,
               description: str | None = None, total: float | None = None, **_) -> None:  # fmt: skip
        t = self.tasks[task]
        if total is not None:
            t["total"] = total
        if description is not None:
            t["description"] = description
        if completed is not None:
            t["done"] = completed
        if advance:
            t["done"] += advance
        now = time.monotonic()
        finished = t["total"] is not None and t["done"] >= t["total"]
        if finished or now - t["printed"] >= self.every:
            self._line(task, now)

    def _line(self, task: int, now: float) -> None:
        t = self.tasks[task]
        t["printed"] = now
        done, total = t["done"], t["total"]
        elapsed = now - t["start"]
        count = f"{done:.0f}/{total:.0f} ({100 * done / total:.0f}%)" if total else f"{done:.0f}"
        rate = (done - t["start_done"]) / elapsed if elapsed > 0 else 0.0
        eta = (
            f", ETA {_clock(((total or 0) - done) / rate)}"
            if total and rate > 0 and done < total
            else ""
        )
        head = t["name"]
        detail = f": {t['description']}" if t["description"] != head else ""
        stamp = time.strftime("%H:%M:%S")
        console.print(f"[{stamp}] {head} {count}, {_clock(elapsed)}{eta}{detail}", soft_wrap=True)


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"
