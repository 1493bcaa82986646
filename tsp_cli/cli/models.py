"""``tsp models list|download|path``: the released checkpoints (and the user's) in the local cache."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from tsp_cli.cli.common import EXIT_ITEMS_FAILED, JsonOption, err, handles_errors, out
from tsp_cli.errors import DownloadError, UsageError

if TYPE_CHECKING:
    from rich.table import Table

    from tsp_cli.models.registry import Checkpoint

OfflineOption = Annotated[
    bool,
    typer.Option("--offline", help="Never touch the network; fail if the file is not cached (also TSP_OFFLINE=1)."),
]


@handles_errors
def list_models(json_output: JsonOption = False) -> None:
    """List the known checkpoints, and whether each is in the cache."""
    from tsp_cli import settings
    from tsp_cli.models import registry

    rows = [_describe(checkpoint) for checkpoint in registry.all_checkpoints()]
    if json_output:
        out.out(json.dumps(rows, indent=2), highlight=False)
        return
    out.print(_table(rows, out.width))
    if any(not row["cached"] and row["estimated_size_bytes"] for row in rows):
        err.print("~ Size estimated from the backbone's weights until the file is downloaded.")
    if out.width < _WIDTH_FOR_DESCRIPTIONS:
        err.print("A wider terminal shows more columns; --json shows everything.")
    err.print(f"Cache folder: {escape(str(settings.cache_dir()))}")


def _describe(checkpoint: Checkpoint) -> dict[str, Any]:
    """One checkpoint as plain data, for ``--json`` and for the table."""
    from tsp_cli.models import cache
    from tsp_cli.models.registry import BACKBONE_WEIGHT_BYTES

    path = cache.local_path(checkpoint.name)
    cached = cache.cached_path(checkpoint.name) is not None
    return {
        "name": checkpoint.name,
        "backbone": checkpoint.backbone,
        "pretraining": checkpoint.pretraining,
        "dataset": checkpoint.dataset,
        "group": checkpoint.group,
        "description": checkpoint.description,
        "filename": checkpoint.filename,
        "url": checkpoint.url,
        "sha256": checkpoint.sha256,
        "released": checkpoint.released,
        "cached": cached,
        "damaged": path.exists() and not cached,
        "path": str(path) if cached else None,
        "size_bytes": path.stat().st_size if cached else None,
        "estimated_size_bytes": BACKBONE_WEIGHT_BYTES.get(checkpoint.backbone),
    }


#: Terminal widths from which the table adds the pretraining and dataset, then the description.
_WIDTH_FOR_DATASETS, _WIDTH_FOR_DESCRIPTIONS = 104, 160


def _table(rows: list[dict[str, Any]], width: int) -> Table:
    """As many columns as the terminal's ``width`` holds whole: the name is what users copy, never cut."""
    from rich import box
    from rich.table import Table

    with_datasets, with_descriptions = width >= _WIDTH_FOR_DATASETS, width >= _WIDTH_FOR_DESCRIPTIONS
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("Name", no_wrap=True)
    table.add_column("Backbone", no_wrap=True)
    if with_datasets:
        table.add_column("Pretraining", no_wrap=True)
        table.add_column("Dataset", no_wrap=True)
    if with_descriptions:
        table.add_column("Description")
    table.add_column("Cached", no_wrap=True)
    table.add_column("Size", justify="right", no_wrap=True)
    for row in rows:
        if row["cached"]:
            cached = "[green]yes[/]"
        elif row["damaged"]:
            cached = "[red]damaged[/] (download --force)"
        else:
            cached = "no"
        cells = [escape(row["name"]), row["backbone"]]
        if with_datasets:
            cells += [row["pretraining"] or "-", escape(row["dataset"] or "-")]
        if with_descriptions:
            cells.append(escape(row["description"]))
        cells += [cached, _size_cell(row)]
        table.add_row(*cells)
    return table


def _size_cell(row: dict[str, Any]) -> str:
    """The cached file's size, or (dimmed, with ``~``) the estimate from its backbone's weights."""
    if row["cached"]:
        return _human_size(row["size_bytes"])
    if row["estimated_size_bytes"]:
        return f"[dim]~{row['estimated_size_bytes'] / 1e6:.0f} MB[/]"
    return ""


def _human_size(size_bytes: int) -> str:
    size = float(size_bytes)
    if size < 1000:
        return f"{size_bytes} B"
    for unit in ("kB", "MB"):
        size /= 1000
        if size < 1000:
            return f"{size:.1f} {unit}"
    return f"{size / 1000:.1f} GB"


@handles_errors
def download(
    names: Annotated[
        list[str] | None,
        typer.Argument(metavar="NAME", help="Checkpoint names, as `tsp models list` shows them.", show_default=False),
    ] = None,
    all_models: Annotated[bool, typer.Option("--all", help="Download every known checkpoint.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Download again even when a verified copy is cached.")] = False,
    offline: OfflineOption = False,
) -> None:
    """Download checkpoints into the cache and check their SHA-256 (exit 1 if any failed)."""
    from tsp_cli.cli.progress import DownloadBar, download_progress
    from tsp_cli.models import cache

    checkpoints = _selected(names or [], all_models)
    failed = 0
    with download_progress(transient=False) as progress:
        for checkpoint in checkpoints:
            if not force and cache.cached_path(checkpoint.name) is not None:
                err.print(f"[green]✓[/] {escape(checkpoint.name)} is already cached")
                continue
            try:
                path = cache.fetch(
                    checkpoint.name, offline=offline, force=force, progress=DownloadBar(progress, checkpoint.name)
                )
            except DownloadError as error:  # this item failed; the others are still tried
                failed += 1
                err.print(f"[red]✗[/] {escape(str(error))}")
                continue
            err.print(f"[green]✓[/] {escape(checkpoint.name)} → {escape(str(path))}")
    if failed:
        err.print(f"[red]{failed} of {len(checkpoints)} checkpoints failed.[/]")
        raise typer.Exit(EXIT_ITEMS_FAILED)


def _selected(names: list[str], all_models: bool) -> list[Checkpoint]:
    """The checkpoints asked for, all resolved before any download so a typo stops everything."""
    from tsp_cli.models import registry

    if all_models and names:
        raise UsageError("Give checkpoint names or --all, not both.")
    if all_models:
        return registry.all_checkpoints()
    if not names:
        raise UsageError("Name the checkpoints to download (see `tsp models list`), or pass --all.")
    return [registry.get(name) for name in dict.fromkeys(names)]


@handles_errors
def path(
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="Checkpoint name, as `tsp models list` shows it.", show_default=False)
    ],
    offline: OfflineOption = False,
) -> None:
    """Print the cached file's path (downloading it first if needed), for scripts."""
    from tsp_cli.cli.progress import DownloadBar, download_progress
    from tsp_cli.models import cache

    with download_progress(transient=True) as progress:
        file = cache.fetch(name, offline=offline, progress=DownloadBar(progress, name))
    out.out(str(file), highlight=False)
