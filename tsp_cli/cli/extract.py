"""``tsp extract``: options, checkpoint resolution, the progress display and the closing summary."""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from tsp_cli.cli.common import WorkersOption, err, handles_errors, is_interactive, out
from tsp_cli.errors import UsageError

DEFAULT_CHECKPOINT = "r2plus1d_34-tsp_on_activitynet"
#: Plain progress lines in logs: at most one per this many seconds.
LOG_INTERVAL_SECONDS = 30.0


class Backbone(str, Enum):
    r2plus1d_34 = "r2plus1d_34"
    r2plus1d_18 = "r2plus1d_18"
    r3d_18 = "r3d_18"


class Precision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


class ProgressView:
    """Renders engine events: a Rich live display on a terminal, periodic plain lines elsewhere."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.live = is_interactive()
        self.progress: Progress | None = None
        self.task = None
        self.videos_total = self.videos_seen = self.clips = 0
        self.started = time.perf_counter()
        self.last_line = time.perf_counter()

    def __enter__(self) -> ProgressView:
        if self.live:
            self.progress = Progress(
                SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("videos · {task.fields[clips]} clips · {task.fields[rate]:.1f} clips/s"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=err, transient=False,
            )
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, event) -> None:
        from tsp_cli.extract import ClipsComputed, RunStarted, VideoEnded

        if isinstance(event, RunStarted):
            self.videos_total = event.to_do
            for note in event.notes:
                err.print(f"[yellow]Note:[/] {escape(note)}")
            err.print(
                f"{self.label}: {event.videos} videos, {event.skipped} already done, {event.to_do} to do "
                f"on {event.device} with {event.workers} decoding worker(s)."
            )
            if self.progress is not None:
                self.task = self.progress.add_task(self.label, total=max(event.to_do, 1), clips=0, rate=0.0)
        elif isinstance(event, ClipsComputed):
            self.clips += event.count
        elif isinstance(event, VideoEnded):
            self.videos_seen += 1
            if event.outcome == "failed":
                err.print(f"[red]✗[/] {escape(event.name)}: {escape(event.error or '')}")
        self._refresh()

    def _refresh(self) -> None:
        elapsed = time.perf_counter() - self.started
        rate = self.clips / elapsed if elapsed > 0 else 0.0
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=self.videos_seen, clips=self.clips, rate=rate)
        elif not self.live and time.perf_counter() - self.last_line >= LOG_INTERVAL_SECONDS:
            self.last_line = time.perf_counter()
            remaining = (self.videos_total - self.videos_seen) * elapsed / self.videos_seen if self.videos_seen else float("nan")
            eta = time.strftime("%H:%M:%S", time.gmtime(remaining)) if remaining == remaining else "?"
            err.print(
                f"{self.label}: {self.videos_seen}/{self.videos_total} videos, {self.clips} clips, {rate:.1f} clips/s, ETA {eta}",
                highlight=False,
            )


def _print_summary(summary, dry_run: bool) -> None:
    verb = "checked (dry run)" if dry_run else "done"
    out.print(
        f"{summary.done} {verb}, {summary.skipped} skipped, {summary.no_clips} with no clips, "
        f"{summary.failed} failed · {summary.clips} clips in {summary.wall_seconds:.1f} s "
        f"({summary.clips_per_second:.1f} clips/s) · network waited for data {summary.data_wait_share:.0%} of the time"
    )
    if summary.failed:
        err.print(f"[red]{summary.failed} video(s) failed; see failures.jsonl in the output folder. Rerun to retry them.[/]")


def _resolve_checkpoint(local: Path | None, name: str | None, backbone: str | None, offline: bool) -> tuple[Path, str | None, str | None]:
    """The checkpoint file to load, its released name if any, and the backbone to expect."""
    if local is not None and name is not None:
        raise UsageError("Give either --local PATH or --checkpoint NAME, not both.")
    if local is not None:
        return local, None, backbone
    from tsp_cli import registry, weights
    from tsp_cli.cli.models import RichDownloadBar, download_progress

    name = name or DEFAULT_CHECKPOINT
    entry = registry.get(name)
    if backbone is not None and backbone != entry.backbone:
        raise UsageError(f"Checkpoint {name} is a {entry.backbone} model, not {backbone}; drop --backbone or change it.")
    with download_progress(transient=True) as progress:
        path = weights.fetch(name, offline=offline, progress=RichDownloadBar(progress, name))
    return path, name, entry.backbone


@handles_errors
def extract(
    videos: Annotated[list[Path], typer.Argument(help="Video files and/or folders (searched recursively).", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for <name>.npy files (created if needed).", show_default=False)],
    local: Annotated[Path | None, typer.Option("--local", help="A checkpoint file of your own.", show_default=False)] = None,
    backbone: Annotated[Backbone | None, typer.Option("--backbone", help="Backbone of --local (detected from the file when left out).", show_default=False)] = None,
    checkpoint: Annotated[str | None, typer.Option("--checkpoint", "-c", help=f"A released checkpoint name (default {DEFAULT_CHECKPOINT}; see `tsp models list`).", show_default=False)] = None,
    stride: Annotated[int, typer.Option("--stride", min=1, help="Frames (at --frame-rate) between clip starts: 16 for ActivityNet features, 1 for THUMOS14.")] = 16,
    metadata: Annotated[Path | None, typer.Option("--metadata", help="CSV filename,video-duration,fps,video-frames: process only these videos, with these fps and frame counts.", show_default=False)] = None,
    shard: Annotated[str, typer.Option("--shard", help="Process shard i of n (0-based) of the ordered video list, e.g. 0/4.")] = "0/1",
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:N or mps (default: cuda when available, else cpu).", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Clips per forward pass.")] = 32,
    workers: WorkersOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Decode and batch everything, run no network, write no features: validates a dataset.")] = False,
    clip_len: Annotated[int, typer.Option("--clip-len", min=1, help="Frames per clip (the released models use 16).")] = 16,
    frame_rate: Annotated[float, typer.Option("--frame-rate", min=0.001, help="Frame rate clips are sampled at (the released models use 15).")] = 15.0,
    precision: Annotated[Precision, typer.Option("--precision", help="fp32 reproduces the reference; fp16/bf16 are faster on GPUs, with small deviations.")] = Precision.fp32,
    offline: Annotated[bool, typer.Option("--offline", help="Never download a checkpoint; fail if it is not cached (also TSP_OFFLINE=1).")] = False,
) -> None:
    """Extract one feature file per video: clips x 512 float32, exactly as the reference recipe."""
    from tsp_cli.extract import plan_extraction, run_extraction
    from tsp_cli.sharding import parse_shard

    shard_spec = parse_shard(shard)
    plan = plan_extraction(
        videos, output, stride=stride, clip_len=clip_len, frame_rate=frame_rate, metadata=metadata,
        shard=shard_spec, device=device,
    )
    backbone_name = backbone.value if backbone else None
    checkpoint_path, checkpoint_name = None, None
    if not dry_run:
        checkpoint_path, checkpoint_name, backbone_name = _resolve_checkpoint(local, checkpoint, backbone_name, offline)
    label = f"shard {shard_spec}" if shard_spec.count > 1 else "extract"
    with ProgressView(label) as view:
        summary = run_extraction(
            plan, checkpoint=checkpoint_path, backbone=backbone_name, checkpoint_name=checkpoint_name,
            batch_size=batch_size, workers=workers, precision=precision.value, dry_run=dry_run, on_event=view,
        )
    _print_summary(summary, dry_run)
    raise typer.Exit(summary.exit_code)
