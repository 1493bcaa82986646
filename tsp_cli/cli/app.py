"""The ``tsp`` command: wires the sub-commands together; each lives in its own module."""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer

from tsp_cli import __version__
from tsp_cli.cli import data, doctor, export, extract, models, status


def _tidy_help_types() -> None:
    """Show value types in help only where a value is typed: not ``<bool>`` on every flag, nor
    ``<list[Path]>`` beside an argument whose name (VIDEOS, OUT_DIR) already says what it is.

    These hooks are Typer internals (0.29): with a Typer that lacks them, its own help is kept."""
    from typer.core import TyperArgument, TyperOption

    if not hasattr(TyperOption, "display_type_rich"):
        return
    option_type = TyperOption.display_type_rich

    def option_display_type(self: TyperOption, ctx):
        return None if self.is_flag else option_type(self, ctx)

    TyperOption.display_type_rich = option_display_type  # type: ignore[method-assign]
    TyperArgument.display_type_rich = lambda self, ctx: None  # type: ignore[method-assign]


def _plain_validation_errors() -> None:
    """Word Typer's refusals of a bad value in plain terms, not pydantic's ("Input should be greater
    than or equal to 1", "Value error, 'x' is not one of ..."): "must be at least 1", "'x' is not one of ..."."""
    try:  # Typer internals (0.29); with a Typer that lacks them, its own wording is kept
        import typer._coercion
        import typer._param_types
    except ImportError:
        return
    if not hasattr(typer._coercion, "get_error_msg"):
        return
    original = typer._coercion.get_error_msg
    plain = {
        "greater_than_equal": lambda ctx: f"must be at least {ctx.get('ge')}.",
        "greater_than": lambda ctx: f"must be more than {ctx.get('gt')}.",
        "less_than_equal": lambda ctx: f"must be at most {ctx.get('le')}.",
        "less_than": lambda ctx: f"must be less than {ctx.get('lt')}.",
        "int_parsing": lambda ctx: "must be a whole number.",
        "int_from_float": lambda ctx: "must be a whole number.",
        "float_parsing": lambda ctx: "must be a number.",
    }

    def message(error: Any) -> str:
        details = error.errors()
        if not details:
            return original(error)
        first = details[0]
        if first.get("type") in plain:
            return plain[first["type"]](first.get("ctx") or {})
        return original(error).removeprefix("Value error, ")

    typer._coercion.get_error_msg = message  # type: ignore[assignment]
    typer._param_types.get_error_msg = message  # type: ignore[assignment]


_tidy_help_types()
_plain_validation_errors()

app = typer.Typer(
    name="tsp",
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Extract TSP/TAC clip features from videos, exactly as the reference recipe, in one pass per video.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
app.add_typer(models.app, name="models")
app.command("extract")(extract.extract)
app.command("status")(status.status)
data.register(app)
app.command("export")(export.export)
app.command("doctor")(doctor.doctor)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"tsp {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Extract TSP/TAC clip features from videos, exactly as the reference recipe, in one pass per video."""


def main() -> None:
    """Console-script entry point."""
    # The network's OpenMP threads share the cores with our decoding processes: let idle threads
    # sleep instead of spinning (measured: stride-1 dry run 4.0 s -> 3.2 s on 2 cores).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    app()
