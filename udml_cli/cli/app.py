"""The ``udml`` command: one Typer app with a sub-app or module per command group."""

from __future__ import annotations

import os
import sys

import typer

from udml_cli import __version__
from udml_cli.cli import (
    cluster,
    config_cmd,
    dataset,
    embed,
    evaluate,
    export,
    launch,
    report,
    search,
    serve,
    train,
)
from udml_cli.cli.common import DataOut, SaidInterrupted, say
from udml_cli.cli.help import UdmlTyper
from udml_cli.cli.session import SESSION
from udml_cli.errors import UdmlError, describe_os_error

INTERNAL = 70  # EX_SOFTWARE: a bug in udml, not the user's mistake


class _App(UdmlTyper):
    """The one error boundary: every failure becomes one ``error:`` line on stderr with an exit
    code, never a traceback (``UDML_DEBUG=1`` shows the traceback of unexpected ones)."""

    def __call__(self, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except UdmlError as e:
            if not launch.record_error(_message(e)):  # under `--nproc`, the launcher says it
                say("error:", "bold red", _message(e))
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            say("interrupted", "yellow", "")
            launch.mark_interrupt_said()
            sys.exit(130)
        except SystemExit as e:  # Typer turns Ctrl-C into exit 130, silently: one line here
            if e.code == 130 and not isinstance(e, SaidInterrupted):
                say("interrupted:", "yellow", "stopped; nothing half-written was kept")
                launch.mark_interrupt_said()
            raise
        except OSError as e:  # disk full, permissions, a directory where a file goes …
            say("error:", "bold red", describe_os_error(e))
            sys.exit(1)
        except MemoryError:
            say("error:", "bold red", "out of memory: use a smaller eval.batch_size or image size")
            sys.exit(1)
        except Exception as e:
            if os.environ.get("UDML_DEBUG"):
                raise
            say(
                "error:",
                "bold red",
                f"internal error ({type(e).__name__}: {str(e)[:200]}); this is a bug in udml: "
                "please report it with the command (UDML_DEBUG=1 shows the traceback)",
            )
            sys.exit(INTERNAL)


app = _App(
    name="udml",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode="rich",
)
app.add_typer(dataset.app, name="dataset")
app.add_typer(config_cmd.app, name="config")
app.command("train")(train.train)
app.command("cluster")(cluster.cluster)
app.command("eval")(evaluate.evaluate)
app.command("embed")(embed.embed)
app.command("index")(search.index)
app.command("search")(search.search)
app.command("duplicates")(search.duplicates)
app.command("report")(report.report)
app.command("export")(export.export)
app.command("serve")(serve.serve)


@app.command("templates")
def templates() -> None:
    """List the shipped run configs; use one with --config NAME."""
    from rich.table import Table

    from udml_cli.cli.common import console
    from udml_cli.recipes import describe
    from udml_cli.recipes import templates as shipped

    table = Table(title="templates (udml train --config NAME)")
    table.add_column("name")
    table.add_column("what it is")
    for name, path in shipped().items():
        table.add_row(name, describe(path))
    console.print(table)


def _message(e: Exception) -> str:
    """The user's line: a DataLoader worker re-raises with its traceback inside the message;
    keep the worker's own last line, without the class name."""
    text = str(e)
    if "Original Traceback" in text:
        text = text.strip().splitlines()[-1]
        head, _, rest = text.partition(": ")
        text = rest if rest and "." in head and " " not in head else text
    return text


def _version(value: bool) -> None:
    if value:
        typer.echo(f"udml {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Unsupervised deep metric learning (UDML-SS): cluster, train, evaluate, embed.

    \b
    Start here:
      udml train --dataset ~/photos --config photos --out runs/photos
      udml index ~/photos --checkpoint runs/photos/last.pt --out idx
      udml report idx --out report.html     (udml templates: more --config)

    Human messages and progress go to stderr; stdout carries data only (--json, embed).
    """


def main(argv: list[str] | None = None) -> None:
    """Run udml with stdout reserved for data: everything else anyone prints goes to stderr."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or any(a in ("--help", "-h", "--version") for a in args):
        if sys.stdout is None:  # closed (>&-): the help has nowhere to go
            from udml_cli.cli.common import CLOSED

            say("error:", "bold red", CLOSED)
            sys.exit(2)
        app(args=args, prog_name="udml")  # help and version are the output: stdout
        return
    real_stdout = sys.stdout
    fd_saved = None
    if real_stdout is None or real_stdout is sys.__stdout__:
        # the real program: data goes to the saved file descriptor 1 (unbuffered, see DataOut);
        # fd 1 itself points at stderr, so neither Python nor C libraries can write data there
        try:
            os.fstat(1)
            fd_saved = os.dup(1)
        except OSError:  # stdout closed (>&-): no data can be written
            fd_saved = None
        if real_stdout is not None:
            real_stdout.flush()
        os.dup2(2, 1)
        data = DataOut(fd_saved)
    else:  # embedded (tests capture sys.stdout): swap the Python stream only
        data = real_stdout
    sys.stdout = sys.stderr
    try:
        with SESSION.started(args, data):
            app(args=args, prog_name="udml")
    finally:
        sys.stdout = real_stdout
        if fd_saved is not None:
            os.dup2(fd_saved, 1)
            os.close(fd_saved)
