"""``tsp export``: features in the layout a localisation or captioning code base loads unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tsp_cli.cli.common import (
    EXIT_ITEMS_FAILED,
    choices_metavar,
    count,
    err,
    handles_errors,
    one_of,
    out,
    whole_number,
)
from tsp_cli.cli.progress import StepProgress
from tsp_cli.data.export_targets import GVF_POOLS, TARGETS
from tsp_cli.errors import UsageError

#: Videos left out are listed one per line up to this many; ``OUT/export.json`` lists them all.
LEFT_OUT_SHOWN = 20

#: The --to choices, from the targets' records (that module loads nothing but the standard library).
TARGET_NAMES = tuple(TARGETS)
TARGET_ALIASES = {alias: target.name for target in TARGETS.values() for alias in target.aliases}


@handles_errors
def export(
    features: Annotated[
        Path, typer.Argument(metavar="FEATURES", help="A tsp extract output folder, or an HDF5 file from tsp merge.")
    ],
    out_dir: Annotated[
        Path,
        typer.Argument(
            metavar="OUT", help="The folder to write (empty, unless --overwrite); for tsp-gvf, the .h5 file."
        ),
    ],
    to: Annotated[
        str,
        typer.Option(
            "--to",
            parser=one_of(TARGET_NAMES, TARGET_ALIASES),
            metavar=choices_metavar(TARGET_NAMES),
            help="The code base whose loader reads the export, in any case (tridet: ActionFormer's layout).",
        ),
    ],
    resize: Annotated[
        int | None,
        typer.Option(
            "--resize",
            parser=whole_number(0),
            help="Rows per video, by linear interpolation along time; 0 keeps every clip. "
            "Default: 100 for gtad and bmn, 0 otherwise.",
        ),
    ] = None,
    pool: Annotated[
        str | None,
        typer.Option(
            "--pool",
            parser=one_of(GVF_POOLS),
            metavar=choices_metavar(GVF_POOLS),
            help="tsp-gvf only: each video's clip features pooled over time by their maximum (the default) or average.",
            show_default=False,
        ),
    ] = None,
    metadata: Annotated[
        Path | None,
        typer.Option("--metadata", help="Metadata CSV of the videos your annotations hold (to list those missing)."),
    ] = None,
    videos: Annotated[
        list[Path] | None,
        typer.Option(
            "--videos",
            metavar="<path>",
            help="Video folder or file your annotations hold (repeatable), instead of --metadata.",
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Write into a non-empty OUT, replacing an earlier export there.")
    ] = False,
) -> None:
    """Write features as ActionFormer/TriDet, OpenTAD, G-TAD, BMN, PDVC or TSP's GVF training read them.

    OUT/export.json (for tsp-gvf, OUT.export.json) holds the config keys to set. Videos that cannot be exported (no clips, one clip when resizing, listed but not extracted) are reported and listed there; the exit code is then 1.
    """
    from tsp_cli.data import export as exporting

    expected = _expected_videos(metadata, videos)
    with StepProgress("Exporting") as on_progress:
        result = exporting.export_features(
            features,
            out_dir,
            target=to,
            resize=resize,
            pool=pool,
            expected=expected,
            overwrite=overwrite,
            on_progress=on_progress,
        )
    for warning in result.warnings:
        err.print(f"[yellow]Warning:[/] {escape(warning)}")
    if result.pool:
        rows = f"one {result.pool}-pooled row each"
    elif result.resize:
        rows = f"{count(result.resize, 'row')} each"
    else:
        rows = count(result.rows, "row")
    out.print(
        f"Exported {count(len(result.exported), 'video')} ({rows}) for {result.target} into "
        f"{escape(str(result.out_dir))}; see {escape(result.record.name)} for the config keys."
    )
    if result.left_out:
        err.print(f"[bold red]{count(len(result.left_out), 'video was', 'videos were')} left out:[/]")
        for item in result.left_out[:LEFT_OUT_SHOWN]:
            err.print(f"  {escape(item.video)}: {escape(item.reason)}")
        if len(result.left_out) > LEFT_OUT_SHOWN:
            err.print(f"  … and {len(result.left_out) - LEFT_OUT_SHOWN} more, listed in {escape(result.record.name)}.")
        raise typer.Exit(EXIT_ITEMS_FAILED)


def _expected_videos(metadata: Path | None, videos: list[Path] | None) -> set[str] | None:
    """The video names the downstream annotations hold, from a metadata CSV or the videos themselves."""
    if metadata is not None and videos:
        raise UsageError("Give either --metadata or --videos, not both.")
    if metadata is not None:
        from tsp_cli.data.metadata import read_metadata_csv

        return set(read_metadata_csv(metadata))
    if videos:
        from tsp_cli.pipeline.inputs import find_videos

        return {video.video for video in find_videos(videos)}
    return None
