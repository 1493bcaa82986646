"""``tsp models list|download|path`` (being written for issue 3)."""

import typer

app = typer.Typer(help="The 13 released TSP/TAC checkpoints: list, download, locate.", no_args_is_help=True)
