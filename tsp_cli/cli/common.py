"""What every command shares: the consoles, the error-to-exit-code edge, common options."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from tsp_cli.cli.errors import EXIT_CANNOT_START, EXIT_ITEMS_FAILED, EXIT_OK, exit_code_for, message_for
from tsp_cli.errors import TspError

#: Results and tables go to stdout so that scripts can capture them.
out = Console(highlight=False, soft_wrap=True)
#: Progress, warnings and errors go to stderr.
err = Console(stderr=True, highlight=False, soft_wrap=True)

__all__ = [
    "EXIT_CANNOT_START",
    "EXIT_ITEMS_FAILED",
    "EXIT_OK",
    "count",
    "err",
    "handles_errors",
    "is_interactive",
    "out",
]

F = TypeVar("F", bound=Callable)


def handles_errors(command: F | None = None, *, exit_codes: Mapping[type[TspError], int] | None = None) -> Any:
    """Turn a :class:`TspError` into its one-sentence message (in flags) and exit code, never a traceback.

    ``@handles_errors``, or ``@handles_errors(exit_codes={DownloadError: 2})`` where a command
    knows better than the default which errors mean that nothing could start.
    """

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except TspError as error:
                err.print(f"[bold red]Error:[/] {escape(message_for(error))}")
                raise typer.Exit(exit_code_for(error, exit_codes)) from None
            except KeyboardInterrupt:
                err.print("[yellow]Interrupted.[/] Run the same command again to resume.")
                raise typer.Exit(130) from None

        return wrapper  # type: ignore[return-value]

    return decorate if command is None else decorate(command)


def count(number: int, noun: str, plural: str | None = None) -> str:
    """``1 video``, ``2 videos``: a number with its noun in the right number."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"


def is_interactive() -> bool:
    """Rich live displays only on a terminal; cluster logs get plain periodic lines."""
    return err.is_terminal and sys.stderr.isatty()


WorkersOption = Annotated[
    int | None,
    typer.Option(
        "--workers",
        "-j",
        min=0,
        help="Decoding processes (default: CPU count, at most 8; 0 decodes in the main process).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]
