"""placeholder"""

import typer


def train() -> None:
    """Not implemented yet."""
    raise typer.Exit(2)
