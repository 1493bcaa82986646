"""``tsp status``: done, failed and missing videos of an output folder, per shard, and the recent speed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from tsp_cli.cli.common import JsonOption, err, handles_errors, out, whole_number

if TYPE_CHECKING:
    from tsp_cli.data.status import FolderStatus

#: Failed and missing videos, and incomplete shards, listed in the text output; ``--json`` has them all.
LISTED_AT_MOST = 20


@handles_errors
def status(
    out_dir: Annotated[
        Path, typer.Argument(metavar="OUT_DIR", help="The --output folder of tsp extract.", show_default=False)
    ],
    videos: Annotated[
        list[Path] | None,
        typer.Argument(
            metavar="VIDEOS",
            help="The videos given to tsp extract (not needed with --metadata; without either, status reports "
            "what the records hold).",
            show_default=False,
        ),
    ] = None,
    metadata: Annotated[
        Path | None,
        typer.Option(
            "--metadata", help="The metadata CSV given to tsp extract: its rows are the videos.", show_default=False
        ),
    ] = None,
    shards: Annotated[
        int | None,
        typer.Option(
            "--shards",
            parser=whole_number(1),
            help="The n of --shard i/n, to count every video under its shard (default: the n the records agree on).",
            show_default=False,
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Show which videos are done, failed (and why) or missing, per shard, and the recent speed.

    Exits 0 when every video is done, 1 when any is failed or missing. Without VIDEOS or
    --metadata it reports the done and failed videos the folder holds (missing ones are unknown).
    """
    from tsp_cli.data import status as folder

    names = folder.expected_videos(videos or [], metadata)
    result = folder.folder_status(out_dir, names, shards=shards)
    for note in result.notes:
        err.print(f"[yellow]Warning:[/] {escape(note)}")
    if json_output:
        out.out(json.dumps(result.to_json(), indent=2), highlight=False)
    else:
        _print_status(result)
    raise typer.Exit(result.exit_code)


def _print_status(result: FolderStatus) -> None:
    bad = f" · [red]{len(result.bad)} bad[/]" if result.bad else ""
    if result.listed:
        out.print(
            f"[bold]{escape(str(result.out_dir))}[/]: {result.videos} videos · [green]{len(result.done)} done[/] · "
            f"[red]{len(result.failed)} failed[/]{bad} · [yellow]{len(result.missing)} missing[/]"
        )
    else:
        out.print(
            f"[bold]{escape(str(result.out_dir))}[/]: [green]{len(result.done)} done[/] · "
            f"[red]{len(result.failed)} failed[/]{bad} (from its records; give the VIDEOS or --metadata CSV to see "
            "which videos are missing)"
        )
    if result.shards and result.shard_count != 1:
        _print_shards(result)
    if result.failed:
        out.print(_failures_table(result))
    if result.bad:
        shown = "; ".join(f"{escape(name)} ({escape(why)})" for name, why in list(result.bad.items())[:LISTED_AT_MOST])
        more = len(result.bad) - LISTED_AT_MOST
        out.print(
            f"Bad (a rerun extracts them again): {shown}"
            + (f" … and {more} more (--json lists them all)" if more > 0 else "")
        )
    if result.truncated:
        shown = "; ".join(
            f"{escape(name)} ({declared:.1f} s declared, {decoded:.1f} s decoded)"
            for name, (declared, decoded) in list(result.truncated.items())[:LISTED_AT_MOST]
        )
        more = len(result.truncated) - LISTED_AT_MOST
        out.print(
            f"[yellow]Possibly truncated[/] (done; the features cover what decoded): {shown}"
            + (f" … and {more} more (--json lists them all)" if more > 0 else "")
        )
    if result.missing:
        shown = ", ".join(escape(name) for name in result.missing[:LISTED_AT_MOST])
        more = len(result.missing) - LISTED_AT_MOST
        out.print(f"Missing: {shown}" + (f" … and {more} more (--json lists them all)" if more > 0 else ""))
    _print_speed(result)


def _print_shards(result: FolderStatus) -> None:
    from tsp_cli.data.status import slurm_array_spec

    left = [row for row in result.shards if not row.complete]
    if result.shard_count is None:
        table = Table(
            "shard (recorded)", "done", "failed", title="Per shard, as the records name them", title_justify="left"
        )
        for row in result.shards:
            table.add_row(row.shard, str(row.done), str(row.failed))
        out.print(table)
        return
    source = "--shards" if result.shard_count_source == "--shards" else "the records"
    if not left:
        out.print(f"All {result.shard_count} shards (from {source}) are complete.")
        return
    table = Table(
        "shard",
        "videos",
        "done",
        "failed",
        "missing",
        title_justify="left",
        title=f"Shards with work left: {len(left)} of {result.shard_count} (from {source})",
        caption=f"… and {len(left) - LISTED_AT_MOST} more (--json lists them all)"
        if len(left) > LISTED_AT_MOST
        else None,
    )
    for row in left[:LISTED_AT_MOST]:
        table.add_row(row.shard, str(row.videos), str(row.done), str(row.failed), str(row.missing))
    out.print(table)
    array = slurm_array_spec(result.shards_with_work_left)
    out.print(
        f"To run them again: sbatch --array={array} with --shard $SLURM_ARRAY_TASK_ID/{result.shard_count} in the script."
    )


def _failures_table(result: FolderStatus) -> Table:
    hidden = len(result.failed) - LISTED_AT_MOST
    table = Table(
        "failed video",
        "shard",
        "reason",
        title_justify="left",
        caption=f"… and {hidden} more (--json lists them all)" if hidden > 0 else None,
    )
    for name, record in list(result.failed.items())[:LISTED_AT_MOST]:
        table.add_row(escape(name), escape(str(record.get("shard", "-"))), escape(str(record.get("error", ""))))
    return table


def _print_speed(result: FolderStatus) -> None:
    recent = result.recent
    if recent is None:
        if result.done:
            out.print("Speed: not measured yet (the recorded videos finished together, in one batch).")
        return
    line = (
        f"Recent speed: {recent.clips_per_second:.1f} clips/s, {recent.videos_per_second:.2f} videos/s over "
        f"{_duration(recent.window_seconds)}; the last video finished {_duration(recent.last_finished_ago_seconds)} ago"
    )
    if result.eta_seconds is not None:
        line += f"; the {len(result.missing)} missing take about {_duration(result.eta_seconds)} at this speed"
    out.print(line + ".")


def _duration(seconds: float) -> str:
    """``42 s``, ``7 min 05 s`` or ``3 h 12 min``: readable at a glance."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
