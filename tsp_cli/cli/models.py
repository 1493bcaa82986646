"""``tsp models list|download|path``: the released checkpoints (and the user's) in the local cache."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from tsp_cli import settings
from tsp_cli.cli.common import EXIT_ITEMS_FAILED, JsonOption, err, handles_errors, is_interactive, out
from tsp_cli.errors import DownloadError, UsageError
from tsp_cli.models import cache, registry
from tsp_cli.models.registry import Checkpoint

app = typer.Typer(help="The 13 released TSP/TAC checkpoints (and yours): list, download, locate.", no_args_is_help=True)

OfflineOption = Annotated[
    bool,
    typer.Option("--offline", help="Never touch the network; fail if the file is not cached (also TSP_OFFLINE=1)."),
]


class RichDownloadBar:
    """pooch's progress-bar protocol (``total``, ``update``, ``reset``, ``close``) on a Rich task.

    The task is added only once a transfer starts, so a checkpoint that is already cached
    draws no empty bar.
    """

    def __init__(self, progress: Progress, description: str) -> None:
        self._progress = progress
        self._description = description
        self._task: TaskID | None = None
        self._total = 0

    @property
    def total(self) -> int:
        return self._total

    @total.setter
    def total(self, size: int) -> None:
        # 0 means the server sent no Content-Length: keep Rich's indeterminate bar.
        self._total = size
        self._progress.update(self._ensure_task(), total=size or None)

    def update(self, advance: int) -> None:
        self._progress.advance(self._ensure_task(), advance)

    def reset(self) -> None:
        # pooch calls reset() then update(total) to fill the bar exactly; with no known total
        # there is nothing to correct, and resetting would wipe the bytes counted so far.
        if self._total:
            self._progress.update(self._ensure_task(), completed=0)

    def close(self) -> None:
        self._progress.stop_task(self._ensure_task())

    def _ensure_task(self) -> TaskID:
        if self._task is None:
            self._task = self._progress.add_task(self._description, total=None)
        return self._task


def download_progress(*, transient: bool) -> Progress:
    """Bytes, speed and ETA on stderr; nothing at all when stderr is not a terminal (logs)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=transient,
        disable=not is_interactive(),
    )


@app.command("list")
@handles_errors
def list_models(json_output: JsonOption = False) -> None:
    """List the known checkpoints, and whether each is in the cache."""
    rows = [_describe(checkpoint) for checkpoint in registry.all_checkpoints()]
    if json_output:
        out.out(json.dumps(rows, indent=2), highlight=False)
        return
    out.print(_table(rows))
    err.print(f"Cache folder: {escape(str(settings.cache_dir()))}")


def _describe(checkpoint: Checkpoint) -> dict[str, Any]:
    """One checkpoint as plain data, for ``--json`` and for the table."""
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
    }


def _table(rows: list[dict[str, Any]]) -> Table:
    table = Table()
    table.add_column("Name", no_wrap=True)  # the one thing users copy: never cut it
    for heading in ("Backbone", "Pretraining", "Dataset", "Description", "Cached"):
        table.add_column(heading)
    table.add_column("Size", justify="right", no_wrap=True)
    for row in rows:
        if row["cached"]:
            cached = "[green]yes[/]"
        elif row["damaged"]:
            cached = "[red]damaged[/] (download --force)"
        else:
            cached = "no"
        table.add_row(
            escape(row["name"]),
            row["backbone"],
            row["pretraining"] or "-",
            escape(row["dataset"] or "-"),
            escape(row["description"]),
            cached,
            _human_size(row["size_bytes"]) if row["cached"] else "",
        )
    return table


def _human_size(size_bytes: int) -> str:
    size = float(size_bytes)
    if size < 1000:
        return f"{size_bytes} B"
    for unit in ("kB", "MB"):
        size /= 1000
        if size < 1000:
            return f"{size:.1f} {unit}"
    return f"{size / 1000:.1f} GB"


@app.command("download")
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
    checkpoints = _selected(names or [], all_models)
    failed = 0
    with download_progress(transient=False) as progress:
        for checkpoint in checkpoints:
            if not force and cache.cached_path(checkpoint.name) is not None:
                err.print(f"[green]✓[/] {escape(checkpoint.name)} is already cached")
                continue
            try:
                path = cache.fetch(
                    checkpoint.name, offline=offline, force=force, progress=RichDownloadBar(progress, checkpoint.name)
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
    if all_models and names:
        raise UsageError("Give checkpoint names or --all, not both.")
    if all_models:
        return registry.all_checkpoints()
    if not names:
        raise UsageError("Name the checkpoints to download (see `tsp models list`), or pass --all.")
    return [registry.get(name) for name in dict.fromkeys(names)]


@app.command("path")
@handles_errors
def path(
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="Checkpoint name, as `tsp models list` shows it.", show_default=False)
    ],
    offline: OfflineOption = False,
) -> None:
    """Print the cached file's path (downloading it first if needed), for scripts."""
    with download_progress(transient=True) as progress:
        file = cache.fetch(name, offline=offline, progress=RichDownloadBar(progress, name))
    out.out(str(file), highlight=False)
