"""``tsp export``: features laid out exactly as a localisation or captioning code base reads them.

What differs between targets (layout, file names, config keys, defaults) is one record each in
:mod:`tsp_cli.data.export_targets`; this module reads the features, checks and resizes them, and
runs a target's record over them.

ActivityNet's annotation keys are YouTube ids without the ``v_`` that its video (and so feature)
names carry; ActionFormer's ``file_prefix`` and OpenTAD's ``LoadFeats(prefix=...)`` add it back.
So when every name starts with ``v_`` the prefix goes into the config, and the lines of
``missing_files.txt`` (compared with the annotation keys) do not carry it.

Resizing (``--resize N``) is linear interpolation along time only, with the call the TSP authors
gave for G-TAD and BMN (HumamAlwassel/TSP issues 8, 9, 10): see :func:`resize_features`. A video
with fewer than two clips cannot be interpolated and is left out, never zero-filled; videos with
no clips are left out for every target. What was left out, and why, is listed in
``OUT/export.json``. Every file is written under a temporary name and renamed, and
``export.json`` comes last, so a killed export never leaves a half-written file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tsp_cli import __version__
from tsp_cli.atomic import TEMP_MARKER, folder_problem, os_error_reason
from tsp_cli.data import readers
from tsp_cli.data.export_targets import (
    TARGET_NAMES,
    TARGETS,
    ConfigFacts,
    ExportTarget,
    LeftOut,
    Writer,
    target_named,
    write_text,
)
from tsp_cli.data.progress import Progress, ProgressCallback
from tsp_cli.errors import FeatureFileError, TspError, UsageError
from tsp_cli.parallel import one_torch_thread

EXPORT_RECORD = "export.json"
#: ActivityNet's video names carry it, its annotation keys do not.
ACTIVITYNET_PREFIX = "v_"
#: ``align_corners`` of the interpolation (see :func:`resize_features`).
ALIGN_CORNERS = False
#: The call, for ``export.json``; ``x`` is one video's T x 512 float32 tensor.
INTERPOLATION_CALL = (
    "torch.nn.functional.interpolate(x.T[None], size={size}, mode='linear', align_corners={align})[0].T"
)


@dataclass(frozen=True)
class ExportResult:
    """What was written: the videos exported, their rows, the files; videos left out; warnings."""

    out_dir: Path
    target: str
    resize: int
    exported: list[str]
    rows: int
    files: list[str]
    left_out: list[LeftOut] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: How ``tsp-gvf`` pooled each video's rows; ``None`` for the other targets.
    pool: str | None = None

    @property
    def record(self) -> Path:
        """``export.json``: what was written and left out, and the config keys."""
        return _record_path(self.out_dir, TARGETS[self.target])


# --- reading the features --------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureSource:
    """The videos of a ``tsp extract`` folder or a ``tsp merge`` file, read one at a time."""

    path: Path
    kind: str
    videos: list[str]
    #: The extraction's settings, tool versions and creation time (the merged file's attributes).
    attributes: dict[str, Any]
    read: Callable[[str], np.ndarray]
    #: Sentences about the source a user should see (damaged record lines, for example).
    notes: list[str] = field(default_factory=list)

    def settings(self) -> dict[str, Any]:
        """The settings that describe the rows (stride, clip length, frame rate, checkpoint, ...)."""
        return {key: value for key, value in self.attributes.items() if key != "created" and not _is_version(key)}

    def provenance(self) -> dict[str, Any]:
        """The extraction manifest's settings, tool versions and creation time, for ``export.json``."""
        return {
            "settings": self.settings(),
            "versions": {key[: -len("_version")]: v for key, v in self.attributes.items() if _is_version(key)},
            "created": self.attributes.get("created"),
        }


def _is_version(key: str) -> bool:
    return key.endswith("_version")


@contextmanager
def open_features(path: Path) -> Iterator[FeatureSource]:
    """A folder of ``.npy``/``.pkl`` files or a merged HDF5 file, open for reading.

    Both give the same arrays and the same attributes (a folder's manifest flattened as
    ``tsp merge`` writes it), so that exporting either gives the same bytes.
    """
    path = Path(path)
    if path.is_dir():
        files = {feature_file.video: feature_file.path for feature_file in readers.find_feature_files(path)}
        extraction = readers.read_extraction(path)
        yield FeatureSource(
            path,
            "folder",
            sorted(files),
            extraction.file_attributes(),
            lambda video: readers.read_features(files[video]),
            notes=extraction.notes,
        )
    elif path.is_file() and h5py.is_hdf5(path):
        with readers.open_hdf5(path) as h5:
            videos = sorted(name for name, item in h5.items() if isinstance(item, h5py.Dataset) and item.ndim == 2)
            attributes = readers.plain_attributes(h5.attrs)
            yield FeatureSource(path, "hdf5", videos, attributes, lambda video: _read_dataset(h5, video))
    else:
        raise UsageError(f"{path} is neither a tsp extract folder nor an HDF5 file written by tsp merge.")


def _read_dataset(h5: h5py.File, video: str) -> np.ndarray:
    features = h5[video][()]
    if features.dtype.kind != "f":
        raise FeatureFileError(
            f"{video} in {h5.filename} holds {features.dtype} values, not float features.", path=h5.filename
        )
    return features.astype(np.float32, copy=False)


# --- resizing --------------------------------------------------------------------------------


def resize_features(features: np.ndarray, length: int) -> np.ndarray:
    """``features`` (T x D) linearly interpolated along time to ``length`` rows, as float32.

    The call is the one the TSP authors described for G-TAD and BMN: ``interpolate`` on the
    1 x D x T tensor, ``mode='linear'``, so every feature channel is resampled on its own and
    channels never mix. ``align_corners=False`` (PyTorch's default, and the value ActionFormer
    and OpenTAD use when they resize features themselves) treats each row as the centre of an
    equal share of the video.
    """
    import torch  # here, so that ``tsp --help`` does not pay for importing torch

    if len(features) < 2:
        raise ValueError(f"{len(features)} rows cannot be interpolated")
    rows = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    resized = torch.nn.functional.interpolate(rows.T[None], size=length, mode="linear", align_corners=ALIGN_CORNERS)
    return resized[0].T.contiguous().numpy()


# --- the export ------------------------------------------------------------------------------


def export_features(
    features: Path,
    out: Path,
    *,
    target: str,
    resize: int | None = None,
    pool: str | None = None,
    expected: Collection[str] | None = None,
    overwrite: bool = False,
    on_progress: ProgressCallback | None = None,
) -> ExportResult:
    """Write the videos of ``features`` into ``out`` in ``target``'s layout.

    ``out`` is a folder, or the file itself for a one-file target (``tsp-gvf``). ``resize`` is
    the number of rows per video (0: as extracted; ``None``: the target's default); ``pool``
    how ``tsp-gvf`` pools a video's rows (``max``, the default, or ``avg``). ``expected`` (video
    names, e.g. from a metadata CSV) lists the videos the downstream annotations hold: those
    without features are left out and, for OpenTAD, go into ``missing_files.txt``. A non-empty
    ``out`` is refused unless ``overwrite``; then the files of the previous export that this one
    does not write again are removed.
    """
    chosen = _checked_target(target)
    resize = _checked_resize(chosen, resize)
    pool = _checked_pool(chosen, pool)
    out = Path(out)
    _check_out(out, Path(features), overwrite=overwrite, one_file=chosen.writes_one_file)
    try:
        return _export(Path(features), out, chosen, resize, pool, expected, on_progress)
    except TspError:
        raise
    except OSError as error:  # a full disk, a destination that cannot be written
        raise UsageError(f"Cannot write {out} ({os_error_reason(error)}); choose another place to export to.") from None


def _export(
    features: Path,
    out: Path,
    chosen: ExportTarget,
    resize: int,
    pool: str | None,
    expected: Collection[str] | None,
    on_progress: ProgressCallback | None,
) -> ExportResult:
    with open_features(features) as source:
        if not source.videos:
            raise UsageError(f"{features} holds no video features.")
        names = chosen.file_names(source.videos, resize)
        missing = sorted(set(expected or ()) - set(source.videos))
        prefix = _common_prefix([*source.videos, *missing])
        previous = set() if chosen.writes_one_file else _previous_files(out)
        # export.json marks a finished export: an interrupted re-export must not look finished.
        _record_path(out, chosen).unlink(missing_ok=True)
        (out.parent if chosen.writes_one_file else out).mkdir(parents=True, exist_ok=True)
        writer = chosen.writer(out, resize, pool)
        with ExitStack() as stack:
            # A 512 x T resize is far too small to share: 500 videos to 100 rows took 1.2 s on one
            # thread against 7.1 s on two, measured on 2 shared cores.
            stack.enter_context(one_torch_thread())
            writer.open(stack, source)
            exported, rows, left_out = _write_videos(source, names.files, writer, resize, on_progress)
        left_out += names.left_out + [LeftOut(video, "no features (listed but not extracted)") for video in missing]
        left_out.sort(key=lambda item: item.video)
        if writer.single_file is None:
            written = [names.files[video] for video in exported]
        else:
            written = [writer.single_file or out.name]
        config = chosen.config(ConfigFacts(out, source.settings(), resize, prefix, pool))
        if not chosen.writes_one_file:
            written += chosen.extras(out, config, left_out, prefix)
            _remove_stale(out, previous, set(written))
        result = ExportResult(
            out, chosen.name, resize, exported, rows, written, left_out, [*source.notes, *names.warnings], pool
        )
        _write_record(result, source, config, _record_path(out, chosen))
    return result


def _checked_target(name: str) -> ExportTarget:
    chosen = target_named(name)
    if chosen is None:
        raise UsageError(f"Unknown target {name!r}; choose one of {', '.join(TARGET_NAMES)}.", parameter="target")
    return chosen


def _checked_resize(target: ExportTarget, resize: int | None) -> int:
    if not target.resizable:
        if resize:
            raise UsageError(
                f"{target.name} pools each video into one row, so it takes no `resize`; leave it out.",
                parameter="resize",
            )
        return 0
    resize = target.default_resize if resize is None else resize
    if resize < 0 or resize == 1:
        raise UsageError(
            f"`resize` must be 0 (keep every clip) or a number of rows of at least 2, not {resize}.",
            parameter="resize",
        )
    if resize == 0 and target.fixed_length:
        raise UsageError(
            f"{target.name} reads the same number of rows for every video; give `resize` N (100 for ActivityNet).",
            parameter="resize",
        )
    return resize


def _checked_pool(target: ExportTarget, pool: str | None) -> str | None:
    if not target.pools:
        if pool is not None:
            raise UsageError(f"`pool` applies to tsp-gvf only, not to {target.name}; leave it out.", parameter="pool")
        return None
    pool = target.pools[0] if pool is None else pool
    if pool not in target.pools:
        raise UsageError(f"`pool` {pool!r} is not one of {', '.join(target.pools)}.", parameter="pool")
    return pool


def _check_out(out: Path, features: Path, *, overwrite: bool, one_file: bool) -> None:
    problem = folder_problem(out.parent if one_file else out)
    if problem:
        raise UsageError(f"Cannot write {out}: {problem}; choose another place to export to.")
    if one_file:
        if out.is_dir():
            raise UsageError(f"{out} is a folder; give the file to write, such as gvf.h5.")
        if out.exists() and not overwrite:
            raise UsageError(
                f"{out} exists; pass `overwrite` to replace it, or give another file.", parameter="overwrite"
            )
        return
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file; give the folder to export into.")
    if out.exists() and features.exists() and out.resolve() == features.resolve():
        raise UsageError(f"{out} is the features folder itself; export into another folder.")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UsageError(
            f"{out} is not empty; pass `overwrite` to write into it, or choose an empty folder.",
            parameter="overwrite",
        )


def _record_path(out: Path, target: ExportTarget) -> Path:
    """``OUT/export.json``; beside a one-file export, ``gvf.h5.export.json``."""
    return out.with_name(f"{out.name}.{EXPORT_RECORD}") if target.writes_one_file else out / EXPORT_RECORD


def _common_prefix(videos: list[str]) -> str:
    """``v_`` when every name carries it (ActivityNet), else nothing."""
    return ACTIVITYNET_PREFIX if videos and all(v.startswith(ACTIVITYNET_PREFIX) for v in videos) else ""


def _write_videos(
    source: FeatureSource,
    files: dict[str, str],
    writer: Writer,
    resize: int,
    on_progress: ProgressCallback | None,
) -> tuple[list[str], int, list[LeftOut]]:
    """Read, check, resize and write one video at a time; returns (exported, rows, left out)."""
    exported, left_out = [], []
    rows = 0
    width: int | None = None
    videos = [video for video in source.videos if video in files]
    for done, video in enumerate(videos, start=1):
        features = source.read(video)
        reason = _unusable(features, resize, width)
        if reason:
            left_out.append(LeftOut(video, reason))
        else:
            width = features.shape[1]
            if resize:
                features = resize_features(features, resize)
            writer.write(video, files[video], features)
            exported.append(video)
            rows += len(features)
        if on_progress is not None:
            on_progress(Progress(done, len(videos), video))
    return exported, rows, left_out


def _unusable(features: np.ndarray, resize: int, width: int | None) -> str | None:
    """Why a video cannot be exported as it is, or ``None``."""
    if len(features) == 0:
        return "no clips (the video is shorter than one clip)"
    if resize and len(features) < 2:
        return f"1 clip cannot be interpolated to {resize} rows"
    if width is not None and features.shape[1] != width:
        return f"{features.shape[1]} columns where the other videos have {width}"
    bad_rows = readers.non_finite_rows(features)
    if bad_rows:
        return f"{bad_rows} rows hold NaN or infinite values; extract this video again"
    return None


def _previous_files(out_dir: Path) -> set[str]:
    """The files an earlier export into ``out_dir`` wrote, from its ``export.json``."""
    try:
        record = json.loads((out_dir / EXPORT_RECORD).read_text())
        return {str(name) for name in record.get("files", [])}
    except (OSError, ValueError, AttributeError):
        return set()


def _remove_stale(out_dir: Path, previous: set[str], written: set[str]) -> None:
    """Remove what an earlier export wrote and this one did not: a re-export leaves no stale video."""
    root = out_dir.resolve()
    for relative in previous - written:
        path = (out_dir / relative).resolve()
        if path.parent.is_relative_to(root) and path.is_file() and TEMP_MARKER not in path.name:
            path.unlink()


def _write_record(result: ExportResult, source: FeatureSource, config: dict[str, Any], path: Path) -> None:
    record = {
        "tool": f"tsp {__version__}",
        "target": result.target,
        "features": str(source.path.resolve()),
        "features_kind": source.kind,
        "extraction": source.provenance(),
        "resize": result.resize,
        "interpolation": INTERPOLATION_CALL.format(size=result.resize, align=ALIGN_CORNERS) if result.resize else None,
        **({"pool": result.pool} if result.pool else {}),
        "config": config,
        "videos": len(result.exported),
        "rows": result.rows,
        "left_out": [{"video": item.video, "reason": item.reason} for item in result.left_out],
        "warnings": result.warnings,
        "files": result.files,
    }
    write_text(path, json.dumps(record, indent=2, default=str) + "\n")
