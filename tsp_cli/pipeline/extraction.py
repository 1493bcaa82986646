"""The public entry points of extraction: plan (validate everything cheap), then run.

Each video is decoded once, in order, by one worker process (``clipper``, ``workers``), or, when
workers would otherwise sit idle, in keyframe-aligned segments by several (``segments``); a worker
sends each used frame once, as the uint8 taps of the recipe's resize and crop, through reused
shared-memory slabs (``handoff``), and clips as lists of frame ids. The main process blends,
batches, runs the network and writes (``batcher``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from tsp_cli import __version__
from tsp_cli.atomic import folder_problem
from tsp_cli.errors import UsageError
from tsp_cli.parallel import default_workers
from tsp_cli.pipeline import store
from tsp_cli.pipeline.batcher import run_jobs
from tsp_cli.pipeline.devices import resolve_device
from tsp_cli.pipeline.events import Event, RunStarted, RunSummary
from tsp_cli.pipeline.inputs import VideoJob, plan_shard
from tsp_cli.pipeline.memory import out_of_memory_stops_the_run
from tsp_cli.pipeline.precision import PRECISIONS
from tsp_cli.pipeline.sampling import ClipSettings
from tsp_cli.pipeline.sharding import Shard


def tool_versions() -> dict[str, str]:
    """Versions recorded in the manifest, for the record (they do not block a rerun)."""
    import av
    import torchvision

    return {
        "tsp": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "av": av.__version__,
        "ffmpeg": str(getattr(av, "ffmpeg_version_info", "unknown")),
    }


@dataclass(frozen=True)
class ExtractionPlan:
    """A validated request: the shard's ordered jobs, the device and the clip settings.

    Planning checks everything a user can get wrong cheaply (paths, metadata CSV, shard,
    device, output folder) before anything slow happens, such as downloading a checkpoint.
    """

    jobs: list[VideoJob]
    out_dir: Path
    device: torch.device
    settings: ClipSettings
    shard: Shard
    #: Sentences for the run's start: what the folder scan skipped (dangling links, loops).
    notes: tuple[str, ...] = ()


def _check_output_folder(out_dir: Path) -> None:
    """Refuse an output folder that cannot be written, without creating it: a refused command leaves nothing behind."""
    problem = folder_problem(out_dir)
    if problem is not None:
        raise UsageError(
            f"Cannot use the output folder {out_dir} ({problem}); give another `out_dir`.", parameter="out_dir"
        )


def _create_output_folder(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(
            f"Cannot create the output folder {out_dir} ({error.strerror}); give another `out_dir`.",
            parameter="out_dir",
        ) from None


def plan_extraction(
    videos: Sequence[Path | str],
    out_dir: Path | str,
    *,
    stride: int = 16,
    clip_len: int = 16,
    frame_rate: float = 15.0,
    metadata: Path | str | None = None,
    shard: Shard = Shard(),
    device: str | None = None,
) -> ExtractionPlan:
    """Validate a request and list the shard's videos, in the reference's order."""
    if stride < 1 or clip_len < 1 or not frame_rate > 0:
        raise UsageError("--stride and --clip-len must be at least 1, and --frame-rate positive.")
    out_dir = Path(out_dir)
    _check_output_folder(out_dir)
    planned = plan_shard(videos, metadata, shard)  # only the shard's rows are read, checked and built
    settings = ClipSettings(clip_len=clip_len, frame_rate=frame_rate, stride=stride)
    return ExtractionPlan(planned.jobs, out_dir, resolve_device(device), settings, shard, tuple(planned.notes))


def run_extraction(
    plan: ExtractionPlan,
    *,
    checkpoint: Path | str | None = None,
    backbone: str | None = None,
    checkpoint_name: str | None = None,
    batch_size: int = 32,
    workers: int | None = None,
    precision: str = "fp32",
    dry_run: bool = False,
    on_event: Callable[[Event], None] | None = None,
) -> RunSummary:
    """Load the checkpoint, create and claim the output folder, skip finished videos and run the rest.

    A dry run writes nothing (no folder, no features, no records).
    """
    if batch_size < 1:
        raise UsageError("--batch-size must be at least 1.")
    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision!r} is not one of {', '.join(PRECISIONS)}.")
    workers = default_workers() if workers is None else workers
    model, notes = None, list(plan.notes)
    if plan.device.type == "cuda" and plan.device.index is not None:
        torch.cuda.set_device(plan.device)  # pinned memory and cuDNN state then live on this GPU, not cuda:0
    if not dry_run:
        from tsp_cli.models.cache import file_sha256
        from tsp_cli.models.loading import load_backbone  # torchvision: ~1 s a dry run need not pay

        if checkpoint is None:
            raise UsageError("Give a checkpoint: --checkpoint NAME or --local PATH.")
        model, backbone = load_backbone(Path(checkpoint), backbone)
        model = model.to(plan.device)
        if plan.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        settings = plan.settings
        _create_output_folder(plan.out_dir)
        notes += store.claim_output_folder(
            plan.out_dir,
            {
                "checkpoint": checkpoint_name or Path(checkpoint).name,
                "checkpoint_sha256": file_sha256(Path(checkpoint)),
                "backbone": backbone,
                "clip_len": settings.clip_len,
                "frame_rate": settings.frame_rate,
                "stride": settings.stride,
                "precision": precision,
            },
            tool_versions(),
        )
        removed = store.remove_stale_temp_files(plan.out_dir)
        if removed:
            notes.append(f"Removed {len(removed)} temporary file(s) left by an interrupted run.")
    finished = set() if dry_run else store.finished_names(plan.out_dir)
    to_do = [job for job in plan.jobs if job.name not in finished]
    skipped = len(plan.jobs) - len(to_do)
    if on_event:
        on_event(
            RunStarted(len(plan.jobs), len(to_do), skipped, workers if to_do else 0, str(plan.device), tuple(notes))
        )
    with out_of_memory_stops_the_run(plan.device):
        summary = run_jobs(
            to_do,
            plan.out_dir,
            model,
            plan.settings,
            device=plan.device,
            batch_size=batch_size,
            workers=workers,
            precision=precision,
            shard=plan.shard,
            on_event=on_event,
        )
    summary.videos, summary.skipped = len(plan.jobs), skipped
    return summary


def extract_features(
    videos: Sequence[Path | str],
    out_dir: Path | str,
    *,
    checkpoint: Path | str | None = None,
    backbone: str | None = None,
    checkpoint_name: str | None = None,
    stride: int = 16,
    clip_len: int = 16,
    frame_rate: float = 15.0,
    metadata: Path | str | None = None,
    shard: Shard = Shard(),
    device: str | None = None,
    batch_size: int = 32,
    workers: int | None = None,
    precision: str = "fp32",
    dry_run: bool = False,
    on_event: Callable[[Event], None] | None = None,
) -> RunSummary:
    """Extract TSP features of ``videos`` (folders and/or files) into ``out_dir/<name>.npy``.

    ``checkpoint`` is a local checkpoint file (for a released one, get its path with
    ``tsp_cli.models.cache.fetch(name)``); ``backbone`` is detected from it when left out. Finished
    videos are skipped, so a killed run resumes where it stopped. ``dry_run`` decodes and
    assembles every batch but loads no checkpoint, runs no network and writes nothing.
    ``precision`` is ``fp32`` (full float32, TF32 off: the reference's numbers), ``tf32``, ``fp16``
    or ``bf16``; the TF32 switches it sets are restored when the run ends.
    """
    plan = plan_extraction(
        videos,
        out_dir,
        stride=stride,
        clip_len=clip_len,
        frame_rate=frame_rate,
        metadata=metadata,
        shard=shard,
        device=device,
    )
    return run_extraction(
        plan,
        checkpoint=checkpoint,
        backbone=backbone,
        checkpoint_name=checkpoint_name,
        batch_size=batch_size,
        workers=workers,
        precision=precision,
        dry_run=dry_run,
        on_event=on_event,
    )
