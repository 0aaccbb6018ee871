"""``udml report``: a self-contained HTML page for a run folder or an index."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from udml_cli.cli.common import DeviceOpt, console, progress


def report(
    target: Annotated[
        Path,
        typer.Argument(
            help="A run folder (udml train) or an index (udml index).", metavar="RUN_DIR|INDEX_DIR"
        ),
    ],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="HTML file (default: TARGET/report.html).")
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(min=-1.0, max=1.0, help="Index: duplicate threshold.")
    ] = None,
    device: DeviceOpt = None,
) -> None:
    """Write one HTML file to look at: curves, cluster sizes, contact sheets, retrieval, duplicates.

    \b
    udml report runs/demo                 # → runs/demo/report.html
    udml report idx/photos -o photos.html
    """
    from udml_cli.config import EngineConfig
    from udml_cli.engine import resolve_engine
    from udml_cli.errors import UsageError
    from udml_cli.fileio import atomic_write_text, ensure_writable
    from udml_cli.report import index_report, run_report

    if not target.is_dir():
        raise UsageError(f"{target}: not a folder; give a run folder or an index folder")
    out = out or target / "report.html"
    ensure_writable(out, "--out")
    with progress() as bar:
        task = bar.add_task("building the report", total=None)
        if (target / "index.json").is_file():
            text = index_report(target, threshold)
        else:
            text = run_report(
                target, resolve_engine(EngineConfig(device=device or "auto"), inference=True)
            )
        bar.update(task, total=1, completed=1)
    atomic_write_text(out, text)
    console.print(f"wrote {out} ({len(text) // 1024} KB, self-contained: open it in a browser)")
