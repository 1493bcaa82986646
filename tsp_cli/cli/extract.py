"""``tsp extract``: options, checkpoint resolution and the closing summary.

One device runs in this process (:func:`_extract_on_one_device`); ``--devices`` runs one shard
per device as child processes (``tsp_cli.cli.fanout``, :func:`_extract_on_devices`) and
shows them as one run. ``--shard auto`` takes the shard from Slurm, torchrun or Google Batch.
Progress displays live in ``tsp_cli.cli.progress``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from tsp_cli.cli.common import (
    EXIT_CANNOT_START,
    EXIT_ITEMS_FAILED,
    EXIT_OK,
    WorkersOption,
    choices_metavar,
    count,
    err,
    handles_errors,
    one_of,
    positive_number,
    precision_option,
    print_notes,
    whole_number,
)
from tsp_cli.cli.summary import print_summary
from tsp_cli.errors import DeviceError, DownloadError, TspError, UsageError
from tsp_cli.models.recipe import TSP_RECIPE, Recipe
from tsp_cli.models.registry import BACKBONES, DEFAULT_CHECKPOINT

if TYPE_CHECKING:
    from tsp_cli.cli.fanout import FanoutResult
    from tsp_cli.pipeline.events import Event
    from tsp_cli.pipeline.extraction import ExtractionPlan
    from tsp_cli.pipeline.sharding import Shard


def _checkpoint_entry(
    local: Path | None, name: str | None, backbone: str | None
) -> tuple[str | None, str | None, Recipe]:
    """The checkpoint's registry name (``None`` for ``--local``), the backbone to expect and its recipe; nothing downloaded."""
    if local is not None and name is not None:
        raise UsageError("Give either --local PATH or --checkpoint NAME, not both.")
    if local is not None:
        return None, backbone, TSP_RECIPE
    from tsp_cli.models import registry

    name = name or DEFAULT_CHECKPOINT
    entry = registry.get(name)
    if backbone is not None and backbone != entry.backbone:
        raise UsageError(
            f"Checkpoint {name} is a {entry.backbone} model, not {backbone}; drop --backbone or change it."
        )
    return name, entry.backbone, entry.recipe


def _fetch_checkpoint(name: str, offline: bool) -> Path:
    """The cached file of a registry checkpoint, downloaded (with a progress bar) the first time."""
    from tsp_cli.cli.progress import DownloadBar, download_progress
    from tsp_cli.models import cache

    with download_progress(transient=True) as progress:
        return cache.fetch(name, offline=offline, progress=DownloadBar(progress, name))


@dataclass(frozen=True)
class _Request:
    """The options of one ``tsp extract`` invocation, as both ways of running it need them."""

    videos: list[Path]
    output: Path
    local: Path | None
    backbone: str | None
    checkpoint: str | None
    stride: int
    metadata: Path | None
    batch_size: int
    workers: int | None
    dry_run: bool
    clip_len: int | None
    frame_rate: float | None
    precision: str
    offline: bool
    report: Path | None

    def plan(self, shard: Shard, device: str | None) -> ExtractionPlan:
        """Validate the request and list ``shard``'s videos, before anything slow (the checkpoint is looked up, not fetched)."""
        from tsp_cli.pipeline.extraction import ExtractionOptions, plan_extraction

        name, backbone, recipe = None, self.backbone, TSP_RECIPE
        if not self.dry_run or self.checkpoint is not None:  # a dry run needs a checkpoint only for its recipe
            name, backbone, recipe = _checkpoint_entry(self.local, self.checkpoint, self.backbone)
        options = ExtractionOptions(
            checkpoint=self.local,
            checkpoint_name=name,
            backbone=backbone,
            stride=self.stride,
            clip_len=self.clip_len,
            frame_rate=self.frame_rate,
            metadata=self.metadata,
            shard=shard,
            device=device,
            batch_size=self.batch_size,
            workers=self.workers,
            precision=self.precision,
            dry_run=self.dry_run,
            recipe=recipe,
        )
        return plan_extraction(self.videos, self.output, options)


#: A checkpoint that cannot be downloaded stops ``extract`` before any video: nothing started (2).
_EXTRACT_EXIT_CODES: dict[type[TspError], int] = {DownloadError: EXIT_CANNOT_START}


@handles_errors(exit_codes=_EXTRACT_EXIT_CODES)
def extract(
    videos: Annotated[
        list[Path],
        typer.Argument(
            metavar="VIDEOS", exists=True, help="Video files and/or folders (searched recursively).", show_default=False
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            metavar="<folder>",
            help="Folder for <name>.npy files (created if needed).",
            show_default=False,
        ),
    ],
    local: Annotated[
        Path | None,
        typer.Option(
            "--local",
            metavar="<file>",
            exists=True,
            dir_okay=False,
            help="A checkpoint file of your own.",
            show_default=False,
        ),
    ] = None,
    backbone: Annotated[
        str | None,
        typer.Option(
            "--backbone",
            parser=one_of(BACKBONES),
            metavar=choices_metavar(BACKBONES),
            help="Backbone of --local (detected from the file when left out).",
            show_default=False,
        ),
    ] = None,
    checkpoint: Annotated[
        str | None,
        typer.Option(
            "--checkpoint",
            "-c",
            metavar="<name>",
            help=f"A released checkpoint name (default {DEFAULT_CHECKPOINT}; see `tsp models list`).",
            show_default=False,
        ),
    ] = None,
    stride: Annotated[
        int,
        typer.Option(
            "--stride",
            parser=whole_number(1),
            help="Frames (at --frame-rate) between clip starts: 16 for ActivityNet features, 1 for THUMOS14.",
        ),
    ] = 16,
    metadata: Annotated[
        Path | None,
        typer.Option(
            "--metadata",
            exists=True,
            dir_okay=False,
            help="CSV filename,video-duration,fps,video-frames: process only these videos, with these fps and frame counts.",
            show_default=False,
        ),
    ] = None,
    shard: Annotated[
        str | None,
        typer.Option(
            "--shard",
            metavar="<i/n|auto>",
            help="Process shard i of n (0-based) of the ordered video list, e.g. 0/4; auto takes it from a Slurm job array, torchrun, a Google Batch job or Slurm tasks.",
            show_default=False,
        ),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(
            "--device",
            metavar="<device>",
            help="cpu, cuda, cuda:N or mps (default: cuda when available, else cpu).",
            show_default=False,
        ),
    ] = None,
    devices: Annotated[
        str | None,
        typer.Option(
            "--devices",
            metavar="<list|n>",
            help="Run one shard per device, all at once: cuda:0,cuda:1,... or a count N for cuda:0 to cuda:N-1 (cpu entries work too).",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", "-b", parser=whole_number(1), help="Clips per forward pass.")
    ] = 32,
    workers: WorkersOption = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Decode and batch everything, run no network, write no features: validates a dataset."
        ),
    ] = False,
    clip_len: Annotated[
        int | None,
        typer.Option(
            "--clip-len",
            parser=whole_number(1),
            help="Frames per clip (default: the checkpoint's recipe; 16 for the released models).",
            show_default=False,
        ),
    ] = None,
    frame_rate: Annotated[
        float | None,
        typer.Option(
            "--frame-rate",
            parser=positive_number,
            help="Frame rate clips are sampled at (default: the checkpoint's recipe; 15 for the released models).",
            show_default=False,
        ),
    ] = None,
    precision: Annotated[
        str,
        precision_option(
            "fp32 (TF32 off) reproduces the reference; tf32, fp16 and bf16 are faster on GPUs, with small deviations."
        ),
    ] = "fp32",
    offline: Annotated[
        bool,
        typer.Option("--offline", help="Never download a checkpoint; fail if it is not cached (also TSP_OFFLINE=1)."),
    ] = False,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report", hidden=True, help="Append the run's events and summary here as JSON lines (used by --devices)."
        ),
    ] = None,
) -> None:
    """Extract one feature file per video: clips x 512 float32, exactly as the reference recipe.

    Resumes: finished videos (their <name>.npy exists) are skipped, so the same command run again
    after a crash, Ctrl-C or SIGTERM finishes the rest. A video that cannot be decoded never stops the run:
    it is listed with the reason (here and by `tsp status OUTPUT`), the run exits 1, and a rerun tries it again.
    """
    request = _Request(
        videos=videos,
        output=output,
        local=local,
        backbone=backbone,
        checkpoint=checkpoint,
        stride=stride,
        metadata=metadata,
        batch_size=batch_size,
        workers=workers,
        dry_run=dry_run,
        clip_len=clip_len,
        frame_rate=frame_rate,
        precision=precision,
        offline=offline,
        report=report,
    )
    if devices is not None:
        _refuse_with_devices(shard, device)
        raise typer.Exit(_extract_on_devices(request, devices))
    raise typer.Exit(_extract_on_one_device(request, shard, device))


def _extract_on_one_device(request: _Request, shard: str | None, device: str | None) -> int:
    """Run one shard (all videos without ``--shard``) in this process; returns the exit code."""
    from tsp_cli.pipeline.devices import refuse_absent_device

    # Mistakes answered at once: the paths were checked while parsing, the shard and the
    # device are checked here, all before torch (two seconds) is imported with the engine.
    shard_spec, device, launcher = _choose_shard(shard, device)
    refuse_absent_device(device)
    from tsp_cli.cli.progress import ExtractProgress
    from tsp_cli.pipeline.extraction import run_extraction

    plan = request.plan(shard_spec, device)
    checkpoint_path = None
    if not request.dry_run and request.local is None:
        assert plan.options.checkpoint_name is not None
        checkpoint_path = _fetch_checkpoint(plan.options.checkpoint_name, request.offline)
    label = f"shard {shard_spec}" if shard_spec.count > 1 else "extract"
    report = None
    if request.report is not None:  # a child of --devices: its parent follows these events
        from tsp_cli.cli.fanout import ChildReport

        report = ChildReport(request.report)
    with ExtractProgress(label, dry_run=request.dry_run) as progress:
        on_event = progress if report is None else _both(progress, report)
        summary = run_extraction(plan, checkpoint=checkpoint_path, on_event=on_event)
    print_summary(summary, dry_run=request.dry_run)
    if report is not None:
        report.finish(summary)
    return _exit_code_for(EXIT_ITEMS_FAILED if summary.failed else EXIT_OK, launcher)


def _both(first: Callable[[Event], None], second: Callable[[Event], None]) -> Callable[[Event], None]:
    def both(event: Event) -> None:
        first(event)
        second(event)

    return both


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

    The failures stay in the folder's records; ``tsp status`` lists them and exits 1.
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
    """The devices of ``--devices``, each checked to exist here before any child starts; errors name ``--devices``."""
    from tsp_cli.cli import fanout
    from tsp_cli.pipeline.devices import refuse_absent_device, resolve_device

    device_list = fanout.parse_devices(spec)
    for device in device_list:
        try:
            refuse_absent_device(device)
            resolve_device(device)
        except DeviceError as error:
            meaning = f" (that is {', '.join(device_list)})" if spec.strip().isdigit() else ""
            raise DeviceError(
                f"`devices` {spec}{meaning} cannot run here: {device} {error.reason}; "
                "give devices that exist, such as cpu,cpu.",
                device=device,
                reason=error.reason,
                parameter="devices",
            ) from None
    return device_list


def _extract_on_devices(request: _Request, devices: str) -> int:
    """Run one shard per device in child processes, shown and summed up as one device's run; the worst exit code."""
    from tsp_cli.cli import fanout
    from tsp_cli.cli.progress import ExtractProgress
    from tsp_cli.pipeline.sharding import Shard

    device_list = _checked_devices(devices)
    plan = request.plan(Shard(), device_list[0])  # every video: the children split them
    print_notes(plan.notes)  # each child says them in its log; the user reads them here
    arguments = (
        []
        if request.dry_run
        else _checkpoint_arguments(request.local, request.checkpoint, request.backbone, request.offline)
    )
    arguments += fanout.shared_arguments(request, len(device_list))
    log_dir = fanout.make_log_dir()
    err.print(
        f"Running {count(len(device_list), 'shard')} on {escape(', '.join(device_list))}; "
        f"their logs are in {escape(str(log_dir))}."
    )
    with ExtractProgress("all devices", dry_run=request.dry_run) as progress:
        result = fanout.run_shards(arguments, device_list, log_dir, on_event=progress)
    _report_crashes(result)
    if result.summaries:
        print_summary(fanout.combine_summaries(result.summaries, result.wall_seconds), dry_run=request.dry_run)
    if result.exit_code == 0:
        shutil.rmtree(log_dir, ignore_errors=True)
    else:
        err.print(f"The shards' logs are kept in {escape(str(log_dir))}.")
    return result.exit_code


def _checkpoint_arguments(local: Path | None, name: str | None, backbone: str | None, offline: bool) -> list[str]:
    """The children's checkpoint options; a released checkpoint is fetched here once, so children only read the cache."""
    if local is not None and name is None:
        return ["--local", str(local), *(["--backbone", backbone] if backbone else [])]
    released_name, _, _ = _checkpoint_entry(local, name, backbone)
    assert released_name is not None
    _fetch_checkpoint(released_name, offline)
    return ["--checkpoint", released_name, "--offline"]


def _report_crashes(result: FanoutResult) -> None:
    for run in result.crashed:
        how = "could not start" if run.exit_code == EXIT_CANNOT_START else "stopped before its end"
        err.print(
            f"[red]Shard {run.shard} on {escape(run.device)} {how} (exit code {run.exit_code}); the end of its log:[/]"
        )
        for line in run.log_tail():
            err.print(f"  {escape(line)}", highlight=False)
    unfinished = len(result.runs) - len(result.summaries)
    if unfinished:
        err.print(f"[red]{count(unfinished, 'shard')} did not finish, so the totals below leave out its videos.[/]")
