"""The ``tsp`` command: every sub-command is registered here, the same way, from its own module.

Typer is used through its public API only (``typer.Typer``, ``command``, ``add_typer``,
``Option``/``Argument`` with ``parser=`` for plain-worded refusals), so any Typer in the range
``pyproject.toml`` allows renders it. Help is Click's plain layout (``rich_markup_mode=None``):
it re-wraps each paragraph to the terminal and wraps long values instead of cutting them with ``…``.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from tsp_cli import __version__
from tsp_cli.cli import data, doctor, export, extract, models, status

_HELP = "Extract TSP/TAC clip features from videos, exactly as the reference recipe, in one pass per video."

app = typer.Typer(
    name="tsp",
    context_settings={"help_option_names": ["-h", "--help"]},
    help=_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
models_app = typer.Typer(
    help="The released TSP/TAC checkpoints (and yours): list, download, locate.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

app.command("extract")(extract.extract)
app.command("status")(status.status)
app.command("merge")(data.merge)
app.command("inspect")(data.inspect)
app.command("metadata")(data.metadata)
app.command("standardize")(data.standardize)
app.command("export")(export.export)
app.command("doctor")(doctor.doctor)
models_app.command("list")(models.list_models)
models_app.command("download")(models.download)
models_app.command("path")(models.path)
app.add_typer(models_app, name="models")


def version_text() -> str:
    """``tsp --version``: ours and the versions a bug report needs (torch, CUDA, torchvision, PyAV, FFmpeg)."""
    import torch

    from tsp_cli.pipeline.extraction import tool_versions

    versions = tool_versions()
    cuda = torch.version.cuda or "none (a CPU build of torch)"
    return "\n".join(
        [
            f"tsp {versions.pop('tsp')}",
            f"torch {versions.pop('torch')} (CUDA {cuda})",
            *(f"{name} {value}" for name, value in versions.items()),
        ]
    )


def _print_version(value: bool) -> None:
    if value:
        typer.echo(version_text())
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the versions of tsp, torch, CUDA, PyAV and FFmpeg, and exit.",
        ),
    ] = False,
) -> None:
    """Extract TSP/TAC clip features from videos, exactly as the reference recipe, in one pass per video."""


def main() -> None:
    """Console-script entry point."""
    # The network's OpenMP threads share the cores with our decoding processes: let idle threads
    # sleep instead of spinning (measured: stride-1 dry run 4.0 s -> 3.2 s on 2 cores).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    app()


__all__ = ["__version__", "app", "main", "version_text"]
