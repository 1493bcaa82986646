"""``tsp extract``: options, checkpoint resolution, the progress display and the closing summary.

``--shard auto`` takes the shard from Slurm or torchrun; ``--devices`` runs one shard per device
as child processes (``tsp_cli.pipeline.fanout``) and shows their progress side by side.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from tsp_cli.cli.common import EXIT_ITEMS_FAILED, EXIT_OK, WorkersOption, err, handles_errors, is_interactive, out
from tsp_cli.errors import UsageError
from tsp_cli.models.registry import BACKBONES, DEFAULT_CHECKPOINT

if TYPE_CHECKING:
    from tsp_cli.pipeline.fanout import FanoutResult, ShardRun
    from tsp_cli.pipeline.sharding import Shard

#: Plain progress lines in logs: at most one per this many seconds.
LOG_INTERVAL_SECONDS = 30.0


#: The --backbone choices, from the one list of backbones.
Backbone = Enum("Backbone", {name: name for name in BACKBONES}, type=str)  # type: ignore[misc]


class Precision(str, Enum):
    fp32 = "fp32"
    tf32 = "tf32"
    fp16 = "fp16"
    bf16 = "bf16"


class _LiveView:
    """A Rich progress display on a terminal (with ``columns``); nothing live in logs, where subclasses print lines."""

    def columns(self) -> tuple:
        return ()

    def __init__(self) -> None:
        self.live = is_interactive()
        self.progress: Progress | None = None
        self.last_line = time.perf_counter()

    def __enter__(self):
        if self.live:
            self.progress = Progress(
                *self.columns(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=err
            )
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    def time_for_a_log_line(self) -> bool:
        """In logs, at most one progress line per ``LOG_INTERVAL_SECONDS``."""
        if time.perf_counter() - self.last_line < LOG_INTERVAL_SECONDS:
            return False
        self.last_line = time.perf_counter()
        return True


class ProgressView(_LiveView):
    """Renders engine events: a Rich live display on a terminal, periodic plain lines elsewhere."""

    def columns(self) -> tuple:
        return (
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("videos · {task.fields[clips]} clips · {task.fields[rate]:.1f} clips/s"),
        )

    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label
        self.task: TaskID | None = None
        self.videos_total = self.videos_seen = self.clips = 0
        self.started = time.perf_counter()

    def __call__(self, event) -> None:
        from tsp_cli.pipeline.engine import ClipsComputed, RunStarted, VideoEnded

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
        elif not self.live and self.time_for_a_log_line():
            remaining = (
                (self.videos_total - self.videos_seen) * elapsed / self.videos_seen
                if self.videos_seen
                else float("nan")
            )
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
        err.print(
            f"[red]{summary.failed} video(s) failed; see failures.jsonl in the output folder. Rerun to retry them.[/]"
        )


def _resolve_checkpoint(
    local: Path | None, name: str | None, backbone: str | None, offline: bool
) -> tuple[Path, str | None, str | None]:
    """The checkpoint file to load, its released name if any, and the backbone to expect."""
    if local is not None and name is not None:
        raise UsageError("Give either --local PATH or --checkpoint NAME, not both.")
    if local is not None:
        return local, None, backbone
    from tsp_cli.cli.models import RichDownloadBar, download_progress
    from tsp_cli.models import cache, registry

    name = name or DEFAULT_CHECKPOINT
    entry = registry.get(name)
    if backbone is not None and backbone != entry.backbone:
        raise UsageError(
            f"Checkpoint {name} is a {entry.backbone} model, not {backbone}; drop --backbone or change it."
        )
    with download_progress(transient=True) as progress:
        path = cache.fetch(name, offline=offline, progress=RichDownloadBar(progress, name))
    return path, name, entry.backbone


@handles_errors
def extract(
    videos: Annotated[
        list[Path], typer.Argument(help="Video files and/or folders (searched recursively).", show_default=False)
    ],
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="Folder for <name>.npy files (created if needed).", show_default=False),
    ],
    local: Annotated[
        Path | None, typer.Option("--local", help="A checkpoint file of your own.", show_default=False)
    ] = None,
    backbone: Annotated[
        Backbone | None,
        typer.Option(
            "--backbone", help="Backbone of --local (detected from the file when left out).", show_default=False
        ),
    ] = None,
    checkpoint: Annotated[
        str | None,
        typer.Option(
            "--checkpoint",
            "-c",
            help=f"A released checkpoint name (default {DEFAULT_CHECKPOINT}; see `tsp models list`).",
            show_default=False,
        ),
    ] = None,
    stride: Annotated[
        int,
        typer.Option(
            "--stride",
            min=1,
            help="Frames (at --frame-rate) between clip starts: 16 for ActivityNet features, 1 for THUMOS14.",
        ),
    ] = 16,
    metadata: Annotated[
        Path | None,
        typer.Option(
            "--metadata",
            help="CSV filename,video-duration,fps,video-frames: process only these videos, with these fps and frame counts.",
            show_default=False,
        ),
    ] = None,
    shard: Annotated[
        str | None,
        typer.Option(
            "--shard",
            help="Process shard i of n (0-based) of the ordered video list, e.g. 0/4; auto takes it from a Slurm job array, torchrun or Slurm tasks.",
            show_default=False,
        ),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(
            "--device", help="cpu, cuda, cuda:N or mps (default: cuda when available, else cpu).", show_default=False
        ),
    ] = None,
    devices: Annotated[
        str | None,
        typer.Option(
            "--devices",
            help="Run one shard per device, all at once: cuda:0,cuda:1,... or a count N for cuda:0 to cuda:N-1 (cpu entries work too).",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Clips per forward pass.")] = 32,
    workers: WorkersOption = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Decode and batch everything, run no network, write no features: validates a dataset."
        ),
    ] = False,
    clip_len: Annotated[
        int, typer.Option("--clip-len", min=1, help="Frames per clip (the released models use 16).")
    ] = 16,
    frame_rate: Annotated[
        float,
        typer.Option("--frame-rate", min=0.001, help="Frame rate clips are sampled at (the released models use 15)."),
    ] = 15.0,
    precision: Annotated[
        Precision,
        typer.Option(
            "--precision",
            help="fp32 (TF32 off) reproduces the reference; tf32, fp16 and bf16 are faster on GPUs, with small deviations.",
        ),
    ] = Precision.fp32,
    offline: Annotated[
        bool,
        typer.Option("--offline", help="Never download a checkpoint; fail if it is not cached (also TSP_OFFLINE=1)."),
    ] = False,
) -> None:
    """Extract one feature file per video: clips x 512 float32, exactly as the reference recipe."""
    from tsp_cli.pipeline.engine import plan_extraction, run_extraction

    backbone_name = backbone.value if backbone else None
    if devices is not None:
        _refuse_with_devices(shard, device)
        device_list = _checked_devices(devices)
        plan = plan_extraction(
            videos,
            output,
            stride=stride,
            clip_len=clip_len,
            frame_rate=frame_rate,
            metadata=metadata,
            device=device_list[0],
        )
        arguments = [] if dry_run else _checkpoint_arguments(local, checkpoint, backbone_name, offline)
        arguments += _shared_extract_arguments(
            output,
            stride,
            metadata,
            batch_size,
            workers,
            dry_run,
            clip_len,
            frame_rate,
            precision.value,
            len(device_list),
        )
        _fan_out(device_list, [job.name for job in plan.jobs], output, [*arguments, "--", *map(str, videos)])
    shard_spec, device, launcher = _choose_shard(shard, device)
    plan = plan_extraction(
        videos,
        output,
        stride=stride,
        clip_len=clip_len,
        frame_rate=frame_rate,
        metadata=metadata,
        shard=shard_spec,
        device=device,
    )
    checkpoint_path, checkpoint_name = None, None
    if not dry_run:
        checkpoint_path, checkpoint_name, backbone_name = _resolve_checkpoint(local, checkpoint, backbone_name, offline)
    label = f"shard {shard_spec}" if shard_spec.count > 1 else "extract"
    with ProgressView(label) as view:
        summary = run_extraction(
            plan,
            checkpoint=checkpoint_path,
            backbone=backbone_name,
            checkpoint_name=checkpoint_name,
            batch_size=batch_size,
            workers=workers,
            precision=precision.value,
            dry_run=dry_run,
            on_event=view,
        )
    _print_summary(summary, dry_run)
    raise typer.Exit(_exit_code_for(summary.exit_code, launcher))


# ---- --shard auto ------------------------------------------------------------------------


def _choose_shard(spec: str | None, device: str | None) -> tuple[Shard, str | None, str | None]:
    """The shard to run, the device (torchrun's local rank may pick it) and the launcher that gave the shard, if any.

    With ``auto`` the launcher's name is said on stderr, so that a job log shows where the shard came from.
    """
    from tsp_cli import settings
    from tsp_cli.pipeline.sharding import Shard, detect_shard, device_for_local_rank, parse_shard

    if spec is None:
        return Shard(), device, None
    if spec.strip().lower() != "auto":
        return parse_shard(spec), device, None
    found = detect_shard(settings.launcher_environment())
    message = f"Using {found.describe()}"
    if found.local_rank is not None:
        import torch

        ranked = device_for_local_rank(device, found.local_rank, torch.cuda.is_available())
        if ranked != device:
            message += f", on {ranked} (LOCAL_RANK {found.local_rank})"
        device = ranked
    err.print(escape(message) + ".")
    return found.shard, device, found.source


def _exit_code_for(code: int, launcher: str | None) -> int:
    """Exit 0 under torchrun when only some videos failed: torchrun stops every other rank at a non-zero exit.

    The failures stay in failures.jsonl; ``tsp status`` lists them and exits 1.
    """
    from tsp_cli.pipeline.sharding import TORCHRUN

    if launcher == TORCHRUN and code == EXIT_ITEMS_FAILED:
        err.print(
            "[yellow]Exiting with 0 all the same, as torchrun stops every other rank when one exits non-zero; "
            "`tsp status` lists the failed videos and exits 1.[/]"
        )
        return EXIT_OK
    return code


# ---- --devices: one child process per device ---------------------------------------------


def _refuse_with_devices(shard: str | None, device: str | None) -> None:
    if shard is not None:
        raise UsageError("Give --devices or --shard, not both: --devices runs every shard itself, one per device.")
    if device is not None:
        raise UsageError("Give --devices or --device, not both: --devices names every device to run on.")


def _checked_devices(spec: str) -> list[str]:
    """The devices of ``--devices``, each checked to exist here before any child starts."""
    from tsp_cli.pipeline import fanout
    from tsp_cli.pipeline.devices import resolve_device

    device_list = fanout.parse_devices(spec)
    for device in device_list:
        resolve_device(device)
    return device_list


def _checkpoint_arguments(local: Path | None, name: str | None, backbone: str | None, offline: bool) -> list[str]:
    """The children's checkpoint options; a released checkpoint is fetched here once, so children only read the cache."""
    if local is not None and name is None:
        return ["--local", str(local), *(["--backbone", backbone] if backbone else [])]
    _, released_name, _ = _resolve_checkpoint(local, name, backbone, offline)
    return ["--checkpoint", str(released_name), "--offline"]


def _shared_extract_arguments(
    output: Path,
    stride: int,
    metadata: Path | None,
    batch_size: int,
    workers: int | None,
    dry_run: bool,
    clip_len: int,
    frame_rate: float,
    precision: str,
    shards: int,
) -> list[str]:
    """Every child's options other than the checkpoint, --shard and --device; decoders are shared out unless given."""
    from tsp_cli.pipeline.fanout import default_workers_per_shard

    workers = default_workers_per_shard(shards) if workers is None else workers
    arguments = [
        "--output",
        str(output),
        "--stride",
        str(stride),
        "--batch-size",
        str(batch_size),
        "--workers",
        str(workers),
        "--clip-len",
        str(clip_len),
        "--frame-rate",
        repr(frame_rate),
        "--precision",
        precision,
    ]
    if metadata is not None:
        arguments += ["--metadata", str(metadata)]
    if dry_run:
        arguments.append("--dry-run")
    return arguments


def _fan_out(device_list: list[str], job_names: list[str], output: Path, arguments: list[str]) -> None:
    """Run one shard per device in child processes, show their progress, and exit with their worst code."""
    from tsp_cli.pipeline import fanout

    log_dir = fanout.make_log_dir()
    err.print(
        f"Running {len(device_list)} shards on {escape(', '.join(device_list))}; their logs are in {escape(str(log_dir))}."
    )
    with FanoutView() as view:
        result = fanout.run_shards(arguments, device_list, job_names, output, log_dir, on_progress=view)
    _print_fanout_summary(result)
    if result.exit_code == 0:
        shutil.rmtree(log_dir, ignore_errors=True)
    else:
        err.print(f"The shards' logs are kept in {escape(str(log_dir))}.")
    raise typer.Exit(result.exit_code)


class FanoutView(_LiveView):
    """One progress bar per shard plus a total on a terminal; a plain line now and then in logs."""

    def columns(self) -> tuple:
        return (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("videos · {task.fields[failed]} failed · {task.fields[clips]} clips"),
        )

    def __init__(self) -> None:
        super().__init__()
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, runs: Sequence[ShardRun]) -> None:
        rows = [
            (f"shard {run.shard} on {run.device}", run.videos, run.settled, len(run.failed), run.clips) for run in runs
        ]
        totals = [sum(counts) for counts in zip(*(row[1:] for row in rows), strict=True)] if rows else [0, 0, 0, 0]
        rows.append(("total", totals[0], totals[1], totals[2], totals[3]))
        if self.progress is not None:
            for label, videos, settled, failed, clips in rows:
                if label not in self.tasks:
                    self.tasks[label] = self.progress.add_task(escape(label), total=max(videos, 1), failed=0, clips=0)
                self.progress.update(self.tasks[label], completed=settled, failed=failed, clips=clips)
        elif self.time_for_a_log_line():
            err.print(
                " · ".join(
                    f"{label} {settled}/{videos} ({failed} failed)" for label, videos, settled, failed, _ in rows[::-1]
                )
            )


def _print_fanout_summary(result: FanoutResult) -> None:
    for run in result.crashed:
        err.print(
            f"[red]Shard {run.shard} on {escape(run.device)} stopped with exit code {run.exit_code}; the end of its log:[/]"
        )
        for line in run.log_tail():
            err.print(f"  {escape(line)}", highlight=False)
    done = sum(len(run.done) - run.skipped for run in result.runs)
    skipped = sum(run.skipped for run in result.runs)
    failed = sum(len(run.failed) for run in result.runs)
    clips = sum(run.clips for run in result.runs)
    rate = clips / result.wall_seconds if result.wall_seconds > 0 else 0.0
    out.print(
        f"{len(result.runs)} shards: {done} done, {skipped} skipped, {failed} failed · {clips} clips in "
        f"{result.wall_seconds:.1f} s ({rate:.1f} clips/s)"
    )
    if failed:
        err.print(f"[red]{failed} video(s) failed; see failures.jsonl in the output folder. Rerun to retry them.[/]")
