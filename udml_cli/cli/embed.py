"""placeholder"""

import typer


def embed() -> None:
    """Not implemented yet."""
    raise typer.Exit(2)
