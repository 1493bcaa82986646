"""``tsp export``: features laid out exactly as a localisation or captioning code base reads them.

Each target's layout was taken from that code base's own loader (cited in ``docs/downstream.md``):

- ``actionformer`` (and TriDet, which kept its loader): ``OUT/<name>.npy``, T x 512 float32,
  opened as ``feat_folder/file_prefix + id + file_ext``, where ``id`` is the annotation key;
  ``OUT/actionformer.yaml`` holds the dataset keys.
- ``opentad``: the same ``.npy`` files, opened by ``LoadFeats`` as
  ``data_path/prefix + video_name + suffix.npy``; ``OUT/missing_files.txt`` (its ``block_list``)
  holds the annotation keys of the videos that have no usable features, and ``OUT/opentad.py``
  the dataset keys.
- ``gtad``: one HDF5 file ``OUT/features.h5``, one root dataset per video (its ActivityNet
  loader reads ``h5[video_name][()]``), 100 rows by default.
- ``bmn``: ``OUT/csv_mean_<N>/<name>.csv`` with a header row, read by ``pandas.read_csv``.
- ``pdvc``: ``OUT/<id>.npy`` where ``id`` is the first 13 characters of the name, because PDVC
  opens ``key[0:13] + '.npy'``.

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
import math
from collections.abc import Callable, Collection, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tsp_cli import __version__
from tsp_cli.atomic import TEMP_MARKER, atomic_path
from tsp_cli.data import merge as merging
from tsp_cli.data.progress import Progress, ProgressCallback
from tsp_cli.errors import FeatureFileError, UsageError
from tsp_cli.parallel import one_torch_thread
from tsp_cli.pipeline import store

TARGETS = ("actionformer", "opentad", "gtad", "bmn", "pdvc")
#: G-TAD and BMN read a fixed number of rows per video: 100 in their ActivityNet settings.
DEFAULT_RESIZE = {"gtad": 100, "bmn": 100}
#: Targets whose loader cannot take videos of different lengths.
FIXED_LENGTH_TARGETS = ("bmn",)
EXPORT_RECORD = "export.json"
MISSING_FILES = "missing_files.txt"
GTAD_FILE = "features.h5"
ACTIONFORMER_CONFIG = "actionformer.yaml"
OPENTAD_CONFIG = "opentad.py"
#: PDVC opens ``key[0:13] + '.npy'``: ``v_`` and an 11-character YouTube id.
PDVC_ID_LENGTH = 13
#: ActivityNet's video names carry it, its annotation keys do not.
ACTIVITYNET_PREFIX = "v_"
#: ``align_corners`` of the interpolation (see :func:`resize_features`).
ALIGN_CORNERS = False
#: The call, for ``export.json``; ``x`` is one video's T x 512 float32 tensor.
INTERPOLATION_CALL = (
    "torch.nn.functional.interpolate(x.T[None], size={size}, mode='linear', align_corners={align})[0].T"
)
#: What a config says of a key that the features cannot tell.
UNKNOWN_SETTING = "the features carry no extraction settings (the reference's .pkl files); set it by hand."
#: Significant digits that write every float32 so that it reads back to the same value.
FLOAT32_DIGITS = 9


@dataclass(frozen=True)
class LeftOut:
    """A video that is not in the export, and the one-sentence reason."""

    video: str
    reason: str


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
        files = {feature_file.video: feature_file.path for feature_file in merging.find_feature_files(path)}
        attributes = merging.read_extraction(path).file_attributes()
        yield FeatureSource(
            path, "folder", sorted(files), attributes, lambda video: merging.read_features(files[video])
        )
    elif path.is_file() and h5py.is_hdf5(path):
        with h5py.File(path, "r") as h5:
            videos = sorted(name for name, item in h5.items() if isinstance(item, h5py.Dataset) and item.ndim == 2)
            attributes = merging.plain_attributes(h5.attrs)
            yield FeatureSource(path, "hdf5", videos, attributes, lambda video: _read_dataset(h5, video))
    else:
        raise UsageError(f"{path} is neither a tsp extract folder nor an HDF5 file written by tsp merge.")


def _read_dataset(h5: h5py.File, video: str) -> np.ndarray:
    features = h5[video][()]
    if features.dtype.kind != "f":
        raise FeatureFileError(f"{video} in {h5.filename} holds {features.dtype} values, not float features.")
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
    out_dir: Path,
    *,
    target: str,
    resize: int | None = None,
    expected: Collection[str] | None = None,
    overwrite: bool = False,
    on_progress: ProgressCallback | None = None,
) -> ExportResult:
    """Write the videos of ``features`` into ``out_dir`` in ``target``'s layout.

    ``resize`` is the number of rows per video (0: as extracted; ``None``: the target's
    default). ``expected`` (video names, e.g. from a metadata CSV) lists the videos the
    downstream annotations hold: those without features are left out and, for OpenTAD, go into
    ``missing_files.txt``. A non-empty ``out_dir`` is refused unless ``overwrite``; then the
    files of the previous export that this one does not write again are removed.
    """
    if target not in TARGETS:
        raise UsageError(f"Unknown target {target!r}; choose one of {', '.join(TARGETS)}.", parameter="target")
    resize = DEFAULT_RESIZE.get(target, 0) if resize is None else resize
    if resize < 0:
        raise UsageError(f"`resize` must be 0 (keep every clip) or a number of rows, not {resize}.", parameter="resize")
    if resize == 0 and target in FIXED_LENGTH_TARGETS:
        raise UsageError(
            f"{target} reads the same number of rows for every video; give `resize` N (100 for ActivityNet).",
            parameter="resize",
        )
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, Path(features), overwrite=overwrite)
    with open_features(features) as source:
        if not source.videos:
            raise UsageError(f"{features} holds no video features.")
        names = _file_names(target, source.videos, resize)
        missing = sorted(set(expected or ()) - set(source.videos))
        prefix = _common_prefix([*source.videos, *missing])
        previous = _previous_files(out_dir)
        # export.json marks a finished export: an interrupted re-export must not look finished.
        (out_dir / EXPORT_RECORD).unlink(missing_ok=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        writer = _WRITERS[target](out_dir, resize)
        with ExitStack() as stack:
            # A 512 x T resize is far too small to share: 500 videos to 100 rows took 1.2 s on one
            # thread against 7.1 s on two, measured on 2 shared cores.
            stack.enter_context(one_torch_thread())
            writer.open(stack, source)
            exported, rows, left_out = _write_videos(source, names.files, writer, resize, on_progress)
        left_out += names.left_out + [LeftOut(video, "no features (listed but not extracted)") for video in missing]
        left_out.sort(key=lambda item: item.video)
        written = [names.files[video] for video in exported] if writer.per_video else [writer.single_file]
        config = _config(target, out_dir, source.settings(), resize, prefix)
        written += _write_extras(target, out_dir, config, left_out, prefix)
        _remove_stale(out_dir, previous, set(written))
        result = ExportResult(out_dir, target, resize, exported, rows, written, left_out, names.warnings)
        _write_record(result, source, config)
    return result


def _check_out_dir(out_dir: Path, features: Path, *, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir} is a file; give the folder to export into.")
    if out_dir.exists() and features.exists() and out_dir.resolve() == features.resolve():
        raise UsageError(f"{out_dir} is the features folder itself; export into another folder.")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise UsageError(
            f"{out_dir} is not empty; pass `overwrite` to write into it, or choose an empty folder.",
            parameter="overwrite",
        )


@dataclass(frozen=True)
class _Names:
    """Each video's file (relative to OUT), and the videos that cannot have one."""

    files: dict[str, str]
    left_out: list[LeftOut]
    warnings: list[str]


def _file_names(target: str, videos: list[str], resize: int) -> _Names:
    if target == "gtad":
        return _Names({video: video for video in videos}, [], [])
    if target == "bmn":
        return _Names({video: f"csv_mean_{resize}/{video}.csv" for video in videos}, [], [])
    if target != "pdvc":
        return _Names({video: f"{video}{store.FEATURE_SUFFIX}" for video in videos}, [], [])
    by_id: dict[str, list[str]] = {}
    for video in videos:
        by_id.setdefault(video[:PDVC_ID_LENGTH], []).append(video)
    files, left_out, shortened = {}, [], []
    for pdvc_id, group in by_id.items():
        if len(group) > 1:
            left_out += [
                LeftOut(
                    video,
                    f"PDVC would read it from {pdvc_id}.npy (its first {PDVC_ID_LENGTH} characters), "
                    f"as {', '.join(other for other in group if other != video)}",
                )
                for video in group
            ]
            continue
        files[group[0]] = f"{pdvc_id}{store.FEATURE_SUFFIX}"
        if pdvc_id != group[0]:
            shortened.append(f"{group[0]} -> {pdvc_id}.npy")
    warnings = []
    if shortened:
        warnings.append(
            f"PDVC opens the first {PDVC_ID_LENGTH} characters of each annotation key + .npy; "
            f"{len(shortened)} videos have longer names and were written under their first "
            f"{PDVC_ID_LENGTH} characters: {', '.join(shortened)}."
        )
    if left_out:
        warnings.append(
            f"{len(left_out)} videos share their first {PDVC_ID_LENGTH} characters with another video and were "
            f"left out, since PDVC cannot tell them apart: {', '.join(item.video for item in left_out)}."
        )
    return _Names(files, left_out, warnings)


def _common_prefix(videos: list[str]) -> str:
    """``v_`` when every name carries it (ActivityNet), else nothing."""
    return ACTIVITYNET_PREFIX if videos and all(v.startswith(ACTIVITYNET_PREFIX) for v in videos) else ""


def _write_videos(
    source: FeatureSource,
    files: dict[str, str],
    writer: _Writer,
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
    bad_rows = merging.non_finite_rows(features)
    if bad_rows:
        return f"{bad_rows} rows hold NaN or infinite values; extract this video again"
    return None


# --- writers, one per layout -----------------------------------------------------------------


class _Writer:
    """Writes one video's rows; per-video files by default, each one atomically."""

    per_video = True
    single_file = ""

    def __init__(self, out_dir: Path, resize: int):
        self.out_dir = out_dir
        self.resize = resize

    def open(self, stack: ExitStack, source: FeatureSource) -> None:
        """Set up what lives for the whole export (the HDF5 file of G-TAD)."""

    def write(self, video: str, relative: str, features: np.ndarray) -> None:
        path = self.out_dir / relative
        store.save_features(path.parent, path.name[: -len(store.FEATURE_SUFFIX)], features)


class _CsvWriter(_Writer):
    """BMN's ``csv_mean_<N>/<name>.csv``: a header ``f0,...,f511`` then one row per time step."""

    def write(self, video: str, relative: str, features: np.ndarray) -> None:
        path = self.out_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        header = ",".join(f"f{column}" for column in range(features.shape[1]))
        with atomic_path(path) as temp, temp.open("w") as handle:
            np.savetxt(handle, features, fmt=f"%.{FLOAT32_DIGITS}g", delimiter=",", header=header, comments="")


class _Hdf5Writer(_Writer):
    """G-TAD's single file: one dataset per video at the root, renamed into place at the end."""

    per_video = False
    single_file = GTAD_FILE

    def open(self, stack: ExitStack, source: FeatureSource) -> None:
        temp = stack.enter_context(atomic_path(self.out_dir / GTAD_FILE))
        self.h5 = stack.enter_context(h5py.File(temp, "w"))
        attributes = {**source.attributes, "resize": self.resize}
        self.h5.attrs.update(sorted(attributes.items()))

    def write(self, video: str, relative: str, features: np.ndarray) -> None:
        # No timestamps: the same features give the same bytes, whether read from a folder or a merged file.
        self.h5.create_dataset(relative, data=features, dtype=np.float32, track_times=False)


_WRITERS: dict[str, type[_Writer]] = {
    "actionformer": _Writer,
    "opentad": _Writer,
    "pdvc": _Writer,
    "bmn": _CsvWriter,
    "gtad": _Hdf5Writer,
}


# --- config keys, extra files, the record ----------------------------------------------------


def _config(target: str, out_dir: Path, settings: dict[str, Any], resize: int, prefix: str) -> dict[str, Any]:
    """The keys to set in the code base's config for these features (``None``: unknown)."""
    folder = str(out_dir.resolve())
    stride, clip_len, frame_rate = (_number(settings.get(key)) for key in ("stride", "clip_len", "frame_rate"))
    width = 512
    if target == "actionformer":
        keys: dict[str, Any] = {
            "feat_folder": folder,
            "file_prefix": prefix or None,
            "file_ext": store.FEATURE_SUFFIX,
            "input_dim": width,
            "feat_stride": stride,
            "num_frames": clip_len,
            "default_fps": frame_rate,
        }
        if resize:
            # Fixed-length features: anet.py takes duration * fps / rows as the stride and
            # num_frames strides as a row's span; interpolated rows (align_corners=False) each
            # stand for an equal share of the video, so one stride.
            keys.update(feat_stride=-1, num_frames=1, max_seq_len=resize, force_upsampling=False)
        return keys
    if target == "opentad":
        keys = {"data_path": folder + "/", "block_list": f"{folder}/{MISSING_FILES}"}
        if resize:
            # ResizeDataset takes no stride, offset or fps: rows span the video evenly.
            keys.update(resize_length=resize, sample_stride=1)
        else:
            # PaddingDataset / SlidingWindowDataset: row k is centred on frame offset + k * stride.
            offset = int(clip_len // 2) if clip_len is not None else None
            keys.update(feature_stride=stride, sample_stride=1, offset_frames=offset, fps=frame_rate)
        keys["LoadFeats"] = {"type": "LoadFeats", "feat_format": "npy", "prefix": prefix}
        return keys
    if target == "gtad":
        return {"feature_path": f"{folder}/{GTAD_FILE}", "feat_dim": width, "temporal_scale": resize or None}
    if target == "bmn":
        return {"feature_path": folder + "/", "feat_dim": width, "temporal_scale": resize}
    return {"visual_feature_folder": [folder], "visual_feature_type": ["tsp"], "feature_dim": width}


def _number(value: Any) -> int | float | None:
    """Whole numbers as int (``15``, not ``15.0``) so that configs read naturally."""
    if value is None:
        return None
    value = float(value)
    return int(value) if math.isfinite(value) and value.is_integer() else value


def _write_extras(
    target: str, out_dir: Path, config: dict[str, Any], left_out: list[LeftOut], prefix: str
) -> list[str]:
    """The config snippet, and OpenTAD's ``missing_files.txt``; returns their names."""
    if target == "actionformer":
        _write_text(out_dir / ACTIONFORMER_CONFIG, _actionformer_yaml(config))
        return [ACTIONFORMER_CONFIG]
    if target == "opentad":
        keys = [item.video[len(prefix) :] for item in left_out]
        _write_text(out_dir / MISSING_FILES, "".join(f"{key}\n" for key in keys))
        _write_text(out_dir / OPENTAD_CONFIG, _opentad_py(config))
        return [MISSING_FILES, OPENTAD_CONFIG]
    return []


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as temp:
        temp.write_text(text)


def _yaml_value(value: Any) -> str:
    """A YAML scalar: JSON's spelling is valid YAML for strings, numbers, booleans and null."""
    return json.dumps(value)


def _actionformer_yaml(config: dict[str, Any]) -> str:
    lines = [
        "# Dataset keys for ActionFormer / TriDet (libs/datasets/anet.py, thumos14.py), written by tsp export.",
        "# Merge them into the 'dataset' block of your config; json_file, num_classes, max_seq_len, ... stay yours.",
        "# Files are opened as feat_folder/file_prefix + <annotation key> + file_ext.",
    ]
    if any(value is None for key, value in config.items() if key != "file_prefix"):
        lines.append(f"# null: {UNKNOWN_SETTING}")
    lines.append("dataset:")
    lines += [f"  {key}: {_yaml_value(value)}" for key, value in config.items()]
    return "\n".join(lines) + "\n"


def _opentad_py(config: dict[str, Any]) -> str:
    keys = {key: value for key, value in config.items() if key not in ("data_path", "block_list", "LoadFeats")}
    load_feats = config["LoadFeats"]
    dataset_type = "ResizeDataset (e.g. AnetResizeDataset)" if "resize_length" in keys else "PaddingDataset"
    arguments = ", ".join(f"{key}={value!r}" for key, value in keys.items())
    split = f"dict(data_path=data_path, block_list=block_list, {arguments})"
    return "\n".join(
        [
            "# Dataset keys for OpenTAD (opentad/datasets/base/*_dataset.py, transforms/loading.py), by tsp export.",
            f"# Use them in each split of your {dataset_type} config, and put load_feats first in each pipeline.",
            "# missing_files.txt lists annotation keys (no prefix); LoadFeats opens",
            "# data_path/prefix + <annotation key> + .npy.",
            *([f"# None: {UNKNOWN_SETTING}"] if None in keys.values() else []),
            f"data_path = {config['data_path']!r}",
            f"block_list = {config['block_list']!r}",
            f"load_feats = dict(type='LoadFeats', feat_format='npy', prefix={load_feats['prefix']!r})",
            f"dataset = dict(train={split}, val={split}, test={split})",
            "",
        ]
    )


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


def _write_record(result: ExportResult, source: FeatureSource, config: dict[str, Any]) -> None:
    record = {
        "tool": f"tsp {__version__}",
        "target": result.target,
        "features": str(source.path.resolve()),
        "features_kind": source.kind,
        "extraction": source.provenance(),
        "resize": result.resize,
        "interpolation": INTERPOLATION_CALL.format(size=result.resize, align=ALIGN_CORNERS) if result.resize else None,
        "config": config,
        "videos": len(result.exported),
        "rows": result.rows,
        "left_out": [{"video": item.video, "reason": item.reason} for item in result.left_out],
        "warnings": result.warnings,
        "files": result.files,
    }
    _write_text(result.out_dir / EXPORT_RECORD, json.dumps(record, indent=2, default=str) + "\n")
