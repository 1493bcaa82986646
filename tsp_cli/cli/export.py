"""``tsp export``: features in the layout a localisation or captioning code base loads unchanged."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tsp_cli.cli.common import EXIT_ITEMS_FAILED, count, err, handles_errors, out, whole_number
from tsp_cli.cli.progress import StepProgress
from tsp_cli.errors import UsageError

#: Videos left out are listed one per line up to this many; ``OUT/export.json`` lists them all.
LEFT_OUT_SHOWN = 20

#: The --to choices: ``tsp_cli.data.export.TARGETS`` (a test keeps them equal), written out here because
#: importing that module loads h5py, which ``tsp --help`` should not pay for.
TARGET_NAMES = ("actionformer", "opentad", "gtad", "bmn", "pdvc")
Target = Enum("Target", {name: name for name in TARGET_NAMES}, type=str)  # type: ignore[misc]


@handles_errors
def export(
    features: Annotated[
        Path, typer.Argument(metavar="FEATURES", help="A tsp extract output folder, or an HDF5 file from tsp merge.")
    ],
    out_dir: Annotated[Path, typer.Argument(metavar="OUT", help="The folder to write (empty, unless --overwrite).")],
    to: Annotated[Target, typer.Option("--to", help="The code base whose loader reads the export.")],
    resize: Annotated[
        int | None,
        typer.Option(
            "--resize",
            parser=whole_number(0),
            help="Rows per video, by linear interpolation along time; 0 keeps every clip. "
            "Default: 100 for gtad and bmn, 0 otherwise.",
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
    """Write features as ActionFormer/TriDet, OpenTAD, G-TAD, BMN or PDVC read them, with the config keys to set.

    Videos that cannot be exported (no clips, one clip when resizing, listed but not extracted) are reported and listed in OUT/export.json; the exit code is then 1.
    """
    from tsp_cli.data import export as exporting

    expected = _expected_videos(metadata, videos)
    target = str(to.value)
    with StepProgress("Exporting") as on_progress:
        result = exporting.export_features(
            features,
            out_dir,
            target=target,
            resize=resize,
            expected=expected,
            overwrite=overwrite,
            on_progress=on_progress,
        )
    for warning in result.warnings:
        err.print(f"[yellow]Warning:[/] {escape(warning)}")
    rows = f"{result.resize} rows each" if result.resize else count(result.rows, "row")
    out.print(
        f"Exported {count(len(result.exported), 'video')} ({rows}) for {target} into {escape(str(result.out_dir))}; "
        f"see {exporting.EXPORT_RECORD} for the config keys."
    )
    if result.left_out:
        err.print(f"[bold red]{count(len(result.left_out), 'video was', 'videos were')} left out:[/]")
        for item in result.left_out[:LEFT_OUT_SHOWN]:
            err.print(f"  {escape(item.video)}: {escape(item.reason)}")
        if len(result.left_out) > LEFT_OUT_SHOWN:
            err.print(f"  … and {len(result.left_out) - LEFT_OUT_SHOWN} more, listed in {exporting.EXPORT_RECORD}.")
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
