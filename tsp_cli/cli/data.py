"""``tsp merge``, ``tsp inspect``, ``tsp metadata``, ``tsp standardize`` (being written for issue 4)."""

import typer


def register(app: typer.Typer) -> None:
    """Add the data-step commands to the root app."""
