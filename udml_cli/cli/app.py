"""The ``udml`` command: one Typer app with a sub-app or module per command group."""

from __future__ import annotations

import sys

import typer

from udml_cli import __version__
from udml_cli.cli import cluster, config_cmd, dataset, embed, evaluate, train
from udml_cli.cli.common import console
from udml_cli.errors import UdmlError


class _App(typer.Typer):
    """Renders every ``UdmlError`` as one line on stderr with its exit code, never a traceback."""

    def __call__(self, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except UdmlError as e:
            console.print(f"[bold red]error:[/] {e}", soft_wrap=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]")
            sys.exit(130)


app = _App(
    name="udml",
    help="Unsupervised deep metric learning (UDML-SS): cluster, train, evaluate, embed.",
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

    Human messages and progress go to stderr; stdout carries data only (--json, embed).
    """


def main(argv: list[str] | None = None) -> None:
    app(args=argv, prog_name="udml")
