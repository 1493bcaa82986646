"""The public entry points of extraction: plan (validate everything cheap), then run.

Each video is decoded once, in order, by one worker process (``clipper``, ``workers``), or, when
workers would otherwise sit idle, in keyframe-aligned segments by several (``segments``); a worker
sends each used frame once, as the uint8 taps of the recipe's resize and crop, through reused
shared-memory slabs (``handoff``), and clips as lists of frame ids. The main process blends,
batches, runs the network and writes (``batcher``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from tsp_cli import __version__
from tsp_cli.atomic import folder_problem
from tsp_cli.errors import UsageError
from tsp_cli.models.recipe import TSP_RECIPE, Recipe
from tsp_cli.parallel import default_workers
from tsp_cli.pipeline import resume, store
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


@dataclass(frozen=True)
class ExtractionOptions:
    """How to extract: every option of a run besides the videos and the output folder, in one object.

    ``checkpoint`` is a local checkpoint file (for a released one, get its path with
    ``tsp_cli.models.cache.fetch(name)``); ``checkpoint_name`` is what the manifest records
    (the file's name when left out); ``backbone`` is detected from the file when left out.
    ``recipe`` is the checkpoint's preprocessing (a registry entry's ``recipe``; TSP's by
    default); ``clip_len`` and ``frame_rate``, when given, override its own. ``dry_run`` decodes
    and assembles every batch but loads no checkpoint, runs no network and writes nothing.
    ``precision`` is ``fp32`` (full float32, TF32 off: the reference's numbers), ``tf32``,
    ``fp16`` or ``bf16``; the TF32 switches it sets are restored when the run ends.
    ``workers``: decoding processes (``None``: one per core, up to a limit; 0: decode here).
    """

    checkpoint: Path | str | None = None
    checkpoint_name: str | None = None
    backbone: str | None = None
    recipe: Recipe = TSP_RECIPE
    stride: int = 16
    clip_len: int | None = None
    frame_rate: float | None = None
    metadata: Path | str | None = None
    shard: Shard = Shard()
    device: str | None = None
    batch_size: int = 32
    workers: int | None = None
    precision: str = "fp32"
    dry_run: bool = False


@dataclass(frozen=True)
class ExtractionPlan:
    """A validated request: the shard's ordered jobs, the device, the clip settings and the options they came from.

    Planning checks everything a user can get wrong cheaply (paths, metadata CSV, shard,
    device, output folder, numbers) before anything slow happens, such as downloading a checkpoint.
    """

    jobs: list[VideoJob]
    out_dir: Path
    device: torch.device
    settings: ClipSettings
    options: ExtractionOptions
    #: Sentences for the run's start: what the folder scan skipped (dangling links, loops).
    notes: tuple[str, ...] = ()

    @property
    def shard(self) -> Shard:
        return self.options.shard


def _check_options(options: ExtractionOptions) -> None:
    """The numbers and names of ``options``, each refused in one sentence naming its parameter."""
    if options.stride < 1:
        raise UsageError(f"`stride` must be at least 1, not {options.stride}.", parameter="stride")
    if options.clip_len is not None and options.clip_len < 1:
        raise UsageError(f"`clip_len` must be at least 1, not {options.clip_len}.", parameter="clip_len")
    if options.frame_rate is not None and not options.frame_rate > 0:
        raise UsageError(f"`frame_rate` must be positive, not {options.frame_rate}.", parameter="frame_rate")
    if options.batch_size < 1:
        raise UsageError(f"`batch_size` must be at least 1, not {options.batch_size}.", parameter="batch_size")
    if options.workers is not None and options.workers < 0:
        raise UsageError(f"`workers` must be 0 or more, not {options.workers}.", parameter="workers")
    if not options.dry_run and options.checkpoint is None and options.checkpoint_name is None:
        raise UsageError("Give a `checkpoint` file, or set `dry_run`.", parameter="checkpoint")
    if options.precision not in PRECISIONS:
        raise UsageError(
            f"`precision` {options.precision!r} is not one of {', '.join(PRECISIONS)}.", parameter="precision"
        )


def clip_settings(options: ExtractionOptions) -> ClipSettings:
    """The clips and pixels of ``options``: its recipe, with ``clip_len`` and ``frame_rate`` overriding the recipe's."""
    recipe = options.recipe
    if options.clip_len is not None:
        recipe = replace(recipe, clip_len=options.clip_len)
    if options.frame_rate is not None:
        recipe = replace(recipe, frame_rate=options.frame_rate)
    return ClipSettings(stride=options.stride, recipe=recipe)


def recipe_settings(recipe: Recipe) -> dict[str, object]:
    """The recipe as the manifest records it: clip length, frame rate, resize, crop, mean and std."""
    return {
        "clip_len": recipe.clip_len,
        "frame_rate": recipe.frame_rate,
        "resize": list(recipe.resize),
        "crop": recipe.crop,
        "mean": list(recipe.mean),
        "std": list(recipe.std),
    }


def plan_extraction(
    videos: Sequence[Path | str], out_dir: Path | str, options: ExtractionOptions = ExtractionOptions()
) -> ExtractionPlan:
    """Validate a request and list the shard's videos, in the reference's order."""
    _check_options(options)
    out_dir = Path(out_dir)
    _check_output_folder(out_dir)
    planned = plan_shard(videos, options.metadata, options.shard)  # only the shard's rows are read, checked and built
    return ExtractionPlan(
        jobs=planned.jobs,
        out_dir=out_dir,
        device=resolve_device(options.device),
        settings=clip_settings(options),
        options=options,
        notes=tuple(planned.notes),
    )


def run_extraction(
    plan: ExtractionPlan,
    *,
    checkpoint: Path | str | None = None,
    on_event: Callable[[Event], None] | None = None,
) -> RunSummary:
    """Load the checkpoint, create and claim the output folder, skip finished videos and run the rest.

    ``checkpoint``: the file, when it was fetched after planning (the CLI downloads a checkpoint
    only once the request is known to be valid); ``plan.options.checkpoint`` otherwise.
    A dry run writes nothing (no folder, no features, no records).
    """
    options = plan.options
    checkpoint = checkpoint if checkpoint is not None else options.checkpoint
    workers = default_workers() if options.workers is None else options.workers
    model, notes = None, list(plan.notes)
    finished: set[str] = set()  # a dry run writes nothing, so it skips nothing
    if plan.device.type == "cuda" and plan.device.index is not None:
        torch.cuda.set_device(plan.device)  # pinned memory and cuDNN state then live on this GPU, not cuda:0
    if not options.dry_run:
        from tsp_cli.models.cache import file_sha256
        from tsp_cli.models.loading import load_backbone  # torchvision: ~1 s a dry run need not pay

        if checkpoint is None:
            raise UsageError("Give a `checkpoint` file, or set `dry_run`.", parameter="checkpoint")
        model, backbone = load_backbone(Path(checkpoint), options.backbone)
        model = model.to(plan.device)
        if plan.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        settings = plan.settings
        _create_output_folder(plan.out_dir)
        # The shard's own outputs, checked once: the claim reads them before the manifest, and
        # the finished ones are skipped below.
        check = resume.check_outputs(plan.out_dir, [job.name for job in plan.jobs])
        finished = check.finished
        notes += store.claim_output_folder(
            plan.out_dir,
            {
                "checkpoint": options.checkpoint_name or Path(checkpoint).name,
                "checkpoint_sha256": file_sha256(Path(checkpoint)),
                "backbone": backbone,
                **recipe_settings(settings.recipe),
                "stride": settings.stride,
                "precision": options.precision,
            },
            tool_versions(),
            check=check,
        )
        removed = store.remove_stale_temp_files(plan.out_dir)
        if removed:
            notes.append(f"Removed {len(removed)} temporary file(s) left by an interrupted run.")
    to_do = [job for job in plan.jobs if job.name not in finished]
    skipped = len(plan.jobs) - len(to_do)
    if on_event:
        on_event(
            RunStarted(
                videos=len(plan.jobs),
                to_do=len(to_do),
                skipped=skipped,
                workers=workers if to_do else 0,
                device=str(plan.device),
                notes=tuple(notes),
            )
        )
    with out_of_memory_stops_the_run(plan.device):
        summary = run_jobs(
            to_do,
            plan.out_dir,
            model,
            plan.settings,
            device=plan.device,
            batch_size=options.batch_size,
            workers=workers,
            precision=options.precision,
            shard=options.shard,
            on_event=on_event,
        )
    summary.videos, summary.skipped = len(plan.jobs), skipped
    return summary


def extract_features(
    videos: Sequence[Path | str],
    out_dir: Path | str,
    options: ExtractionOptions | None = None,
    *,
    on_event: Callable[[Event], None] | None = None,
    **fields: Any,
) -> RunSummary:
    """Extract TSP features of ``videos`` (folders and/or files) into ``out_dir/<name>.npy``.

    ``options`` (:class:`ExtractionOptions`) says how; keyword ``fields`` are the same options
    given one by one (``checkpoint=path, stride=4``), set on top of ``options``. Finished videos
    are skipped, so a killed run resumes where it stopped.
    """
    options = replace(options or ExtractionOptions(), **fields)
    return run_extraction(plan_extraction(videos, out_dir, options), on_event=on_event)
