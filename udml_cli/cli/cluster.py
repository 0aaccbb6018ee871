"""placeholder"""

import typer


def cluster() -> None:
    """Not implemented yet."""
    raise typer.Exit(2)
