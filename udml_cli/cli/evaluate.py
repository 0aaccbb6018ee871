"""placeholder"""

import typer


def evaluate() -> None:
    """Not implemented yet."""
    raise typer.Exit(2)
