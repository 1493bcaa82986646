"""What every command shares: the consoles, the error-to-exit-code edge, common options."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from tsp_cli.cli.errors import EXIT_CANNOT_START, EXIT_ITEMS_FAILED, EXIT_OK, exit_code_for, message_for
from tsp_cli.cli.interrupts import EXIT_TERMINATED, Terminated, sigterm_raises_terminated
from tsp_cli.errors import TspError
from tsp_cli.wording import count

#: Results and tables go to stdout so that scripts can capture them.
out = Console(highlight=False, soft_wrap=True)
#: Progress, warnings and errors go to stderr.
err = Console(stderr=True, highlight=False, soft_wrap=True)

__all__ = [
    "EXIT_CANNOT_START",
    "EXIT_ITEMS_FAILED",
    "EXIT_OK",
    "choices_metavar",
    "count",
    "err",
    "handles_errors",
    "is_interactive",
    "one_of",
    "out",
    "positive_number",
    "print_notes",
    "whole_number",
]

F = TypeVar("F", bound=Callable)


def print_notes(notes: Iterable[str]) -> None:
    """Each note of the core (a skipped link, a clamped option) on stderr, marked as a note."""
    for note in notes:
        err.print(f"[yellow]Note:[/] {escape(note)}")


def handles_errors(command: F | None = None, *, exit_codes: Mapping[type[TspError], int] | None = None) -> Any:
    """Turn a :class:`TspError` into its one-sentence message (in flags) and exit code, never a traceback;
    Ctrl-C and SIGTERM into "Interrupted" and 130 or 143.

    ``@handles_errors``, or ``@handles_errors(exit_codes={DownloadError: 2})`` where a command
    knows better than the default which errors mean that nothing could start.
    """

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            try:
                with sigterm_raises_terminated():  # Slurm's SIGTERM: cleaned up like Ctrl-C, exit 143
                    return function(*args, **kwargs)
            except TspError as error:
                err.print(f"[bold red]Error:[/] {escape(message_for(error))}")
                raise typer.Exit(exit_code_for(error, exit_codes)) from None
            except Terminated:
                err.print("[yellow]Interrupted (SIGTERM).[/] Run the same command again to resume.")
                raise typer.Exit(EXIT_TERMINATED) from None
            except KeyboardInterrupt:
                err.print("[yellow]Interrupted.[/] Run the same command again to resume.")
                raise typer.Exit(130) from None

        return wrapper  # type: ignore[return-value]

    return decorate if command is None else decorate(command)


def is_interactive() -> bool:
    """Rich live displays only on a terminal; cluster logs get plain periodic lines."""
    return err.is_terminal and sys.stderr.isatty()


def whole_number(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """A Typer ``parser`` for a whole number in ``[minimum, maximum]``, refusing others in plain words.

    Typer's own ``min``/``max`` answer in pydantic's terms ("Input should be greater than or
    equal to 1"); a parser is Typer's public way to say "must be at least 1." instead.
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise typer.BadParameter("must be a whole number.") from None
        if value < minimum:
            raise typer.BadParameter(f"must be at least {minimum}.")
        if maximum is not None and value > maximum:
            raise typer.BadParameter(f"must be at most {maximum}.")
        return value

    return parse


def positive_number(text: str) -> float:
    """A Typer ``parser`` for a number above 0, refusing others in plain words."""
    try:
        value = float(text)
    except ValueError:
        raise typer.BadParameter("must be a number.") from None
    if not value > 0:
        raise typer.BadParameter("must be more than 0.")
    return value


def one_of(names: Sequence[str], aliases: Mapping[str, str] | None = None) -> Callable[[str], str]:
    """A Typer ``parser`` for one of ``names`` (or an alias of one), in any case; returns the name.

    ``ActionFormer`` and ``tridet`` are what users type for ``actionformer``: both are taken.
    """
    lookup = {name.lower(): name for name in names} | {alias.lower(): name for alias, name in (aliases or {}).items()}

    def parse(text: str) -> str:
        name = lookup.get(text.strip().lower())
        if name is None:
            raise typer.BadParameter(f"{text!r} is not one of {', '.join(map(repr, names))}.")
        return name

    return parse


def choices_metavar(names: Sequence[str]) -> str:
    """How help shows the choices of a :func:`one_of` option: ``<a|b|c>``."""
    return f"<{'|'.join(names)}>"


def _workers(text: str) -> int:
    """``--workers``: a whole number, capped at the cores this process may use, with one plain note.

    More decoding processes than cores only compete for them (and torch's DataLoader would warn
    about it in its own words); workers beyond the number of videos are not capped, as a long
    video is decoded in segments by several.
    """
    from tsp_cli.parallel import available_cores

    requested = whole_number(0)(text)
    cores = available_cores()
    if requested > cores:
        err.print(
            f"[yellow]Note:[/] --workers {requested} is more than the {count(cores, 'core')} this process may use; "
            f"using {cores}."
        )
        return cores
    return requested


WorkersOption = Annotated[
    int | None,
    typer.Option(
        "--workers",
        "-j",
        parser=_workers,
        metavar="<int>",
        help="Decoding processes (default: CPU count, at most 8; 0 decodes in the main process).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]

#: The --precision choices: ``tsp_cli.pipeline.precision.PRECISIONS`` (a test keeps them equal), written out
#: here because that module imports torch, which a refused command must not wait for.
PRECISION_NAMES = ("fp32", "tf32", "fp16", "bf16")


def precision_option(help_text: str) -> Any:
    """``--precision``, one of :data:`PRECISION_NAMES`, for ``extract`` and ``doctor`` alike."""
    return typer.Option(
        "--precision", parser=one_of(PRECISION_NAMES), metavar=choices_metavar(PRECISION_NAMES), help=help_text
    )
