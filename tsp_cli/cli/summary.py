"""The closing summary of ``tsp extract``: what was done, how fast, and which videos need a look.

One printer for one device and for ``--devices`` (whose shards' summaries are combined first).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape

from tsp_cli.cli.common import count, err, out

if TYPE_CHECKING:
    from tsp_cli.pipeline.events import RunSummary


def print_summary(summary: RunSummary, *, dry_run: bool) -> None:
    """The closing lines of ``tsp extract`` (one device or all of ``--devices``): counts, speed, and the videos to look at."""
    verb = "checked (dry run)" if dry_run else "done"
    line = (
        f"{summary.done} {verb}, {summary.skipped} skipped, {summary.no_clips} with no clips, "
        f"{summary.failed} failed · {count(summary.clips, 'clip')} in {summary.wall_seconds:.1f} s "
        f"({summary.clips_per_second:.1f} clips/s)"
    )
    if not dry_run and summary.clips:  # only where a model ran
        line += f" · the model waited for decoded frames {summary.data_wait_share:.0%} of the time"
    out.print(line)
    if summary.no_clips_names:
        saved = "would be saved as 0 clips" if dry_run else "saved as 0 clips"
        out.print(f"Shorter than one clip ({saved}): {escape(', '.join(sorted(summary.no_clips_names)))}")
    if summary.high_bit_depth:
        listed = ", ".join(f"{name} ({pixel_format})" for name, pixel_format in summary.high_bit_depth)
        err.print(
            f"[yellow]Note:[/] {count(len(summary.high_bit_depth), 'video has', 'videos have')} more than 8 bits per "
            f"sample: {escape(listed)}; their features depend on the FFmpeg build (see docs/recipe.md, high-bit-depth videos)."
        )
    if summary.truncated:
        _print_truncated(summary.truncated)
    if summary.batch_split_to:
        err.print(
            f"[yellow]Note:[/] a batch did not fit in memory, so forward passes ran {summary.batch_split_to} clips at "
            f"a time; --batch-size {summary.batch_split_to} avoids the failed attempts next time."
        )
    if summary.failed:
        where = "listed above" if dry_run else "listed above and by `tsp status` on the output folder"
        _print_failed(summary.failed, summary.retryable_failures, where=where)


def _print_truncated(truncated: list[tuple[str, float, float]]) -> None:
    """Videos whose file declares more than decodes: their features cover only what decodes."""
    one = len(truncated) == 1
    listed = ", ".join(
        f"{name} ({declared:.1f} s declared, {decoded:.1f} s decoded)" for name, declared, decoded in truncated
    )
    err.print(
        f"[yellow]Note:[/] possibly truncated (the file declares more than decodes, and the features cover what "
        f"decodes): {escape(listed)}. Fetch {'it' if one else 'them'} again, delete {'its' if one else 'their'} "
        f".npy and rerun to redo {'it' if one else 'them'}."
    )


def _print_failed(failed: int, retryable: int, *, where: str) -> None:
    if retryable == failed:
        advice = f" Rerun to retry {'it' if failed == 1 else 'them'}."
    elif retryable:
        advice = f" Rerun to retry the {retryable} that may succeed; the others cannot be decoded as they are."
    else:
        advice = f" {'It' if failed == 1 else 'They'} cannot be decoded as {'it is' if failed == 1 else 'they are'} (see {'the' if failed == 1 else 'each'} reason)."
    err.print(f"[red]{count(failed, 'video')} failed, {where}.{advice}[/]")
