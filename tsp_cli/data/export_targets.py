"""The export targets, one record each: the layout its loader reads, its config keys, its defaults.

Each layout was taken from that code base's own loader (cited in ``docs/downstream.md``):

- ``actionformer`` (also ``tridet``, which kept its loader): ``OUT/<name>.npy``, T x 512 float32,
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
- ``tsp-gvf``: TSP's own training input, the "global video features": one HDF5 file (OUT is the
  file), one 512-vector per video, its clip features max- or average-pooled over time, keyed as
  TSP's ``untrimmed_video_dataset.py`` looks them up: ``os.path.basename(filename).split('.')[0]``.

Adding a target is adding one :class:`ExportTarget` to :data:`TARGETS`. This module imports only
the standard library at load time, so that the CLI can offer the names without loading h5py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tsp_cli.wording import count

if TYPE_CHECKING:
    import numpy as np

    from tsp_cli.data.export import FeatureSource

FEATURE_SUFFIX = ".npy"  # tsp_cli.pipeline.store.FEATURE_SUFFIX; a test keeps them equal
MISSING_FILES = "missing_files.txt"
GTAD_FILE = "features.h5"
ACTIONFORMER_CONFIG = "actionformer.yaml"
OPENTAD_CONFIG = "opentad.py"
#: PDVC opens ``key[0:13] + '.npy'``: ``v_`` and an 11-character YouTube id.
PDVC_ID_LENGTH = 13
#: What a config says of a key that the features cannot tell.
UNKNOWN_SETTING = "the features carry no extraction settings (the reference's .pkl files); set it by hand."
#: Significant digits that write every float32 so that it reads back to the same value.
FLOAT32_DIGITS = 9
#: TSP's GVF: each video's clip features pooled over time, by one of these.
GVF_POOLS = ("max", "avg")
FEATURE_WIDTH = 512


@dataclass(frozen=True)
class LeftOut:
    """A video that is not in the export, and the one-sentence reason."""

    video: str
    reason: str


@dataclass(frozen=True)
class Names:
    """Each video's file or key (relative to OUT), and the videos that cannot have one."""

    files: dict[str, str]
    left_out: list[LeftOut] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ConfigFacts:
    """What the config keys are made of: where the export is, the rows' settings, its choices."""

    out: Path
    settings: dict[str, Any]
    resize: int
    prefix: str
    pool: str | None

    @property
    def folder(self) -> str:
        return str(self.out.resolve())

    def number(self, key: str) -> int | float | None:
        """A setting as a number, whole numbers as int (``15``, not ``15.0``) so that configs read naturally."""
        import math

        value = self.settings.get(key)
        if value is None:
            return None
        value = float(value)
        return int(value) if math.isfinite(value) and value.is_integer() else value


# --- writers, one per kind of layout ---------------------------------------------------------


class Writer:
    """Writes one video's rows; per-video ``.npy`` files by default, each one atomically."""

    #: The one file the layout writes (relative to OUT; ``""`` for OUT itself), or ``None`` for one file per video.
    single_file: str | None = None

    def __init__(self, out: Path, resize: int, pool: str | None):
        self.out = out
        self.resize = resize
        self.pool = pool

    def open(self, stack: ExitStack, source: FeatureSource) -> None:
        """Set up what lives for the whole export (an HDF5 file)."""

    def write(self, video: str, relative: str, features: np.ndarray) -> None:
        from tsp_cli.pipeline import store

        path = self.out / relative
        store.save_features(path.parent, path.name[: -len(FEATURE_SUFFIX)], features)


class CsvWriter(Writer):
    """BMN's ``csv_mean_<N>/<name>.csv``: a header ``f0,...,f511`` then one row per time step."""

    def write(self, video: str, relative: str, features: np.ndarray) -> None:
        import numpy as np

        from tsp_cli.atomic import atomic_path

        path = self.out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        header = ",".join(f"f{column}" for column in range(features.shape[1]))
        with atomic_path(path) as temp, temp.open("w") as handle:
            np.savetxt(handle, features, fmt=f"%.{FLOAT32_DIGITS}g", delimiter=",", header=header, comments="")


class Hdf5Writer(Writer):
    """One HDF5 file, one root dataset per video, renamed into place when the export ends."""

    single_file = GTAD_FILE

    def open(self, stack: ExitStack, source: FeatureSource) -> None:
        import h5py

        from tsp_cli.atomic import atomic_path

        temp = stack.enter_context(atomic_path(self.out / self.single_file if self.single_file else self.out))
        self.h5 = stack.enter_context(h5py.File(temp, "w"))
        self.h5.attrs.update(sorted(self.attributes(source).items()))

    def attributes(self, source: FeatureSource) -> dict[str, Any]:
        return {**source.attributes, "resize": self.resize}

    def write(self, video: str, relative: str, features: np.ndarray) -> None:
        import numpy as np

        # No timestamps: the same features give the same bytes, whether read from a folder or a merged file.
        self.h5.create_dataset(relative, data=features, dtype=np.float32, track_times=False)


class GvfWriter(Hdf5Writer):
    """TSP's GVF file: OUT itself, one 512-vector per key, the video's rows pooled over time."""

    single_file = ""

    def attributes(self, source: FeatureSource) -> dict[str, Any]:
        return {**source.attributes, "gvf_pool": str(self.pool)}

    def write(self, video: str, relative: str, features: np.ndarray) -> None:
        super().write(video, relative, pool_over_time(features, str(self.pool)))


def pool_over_time(features: np.ndarray, pool: str) -> np.ndarray:
    """One video's T x 512 rows as one 512-vector: the maximum of each column, or its mean
    (summed in float64, so that a long video's mean does not depend on float32 rounding)."""
    import numpy as np

    if pool == "max":
        return features.max(axis=0).astype(np.float32)
    return features.mean(axis=0, dtype=np.float64).astype(np.float32)


# --- file names --------------------------------------------------------------------------------


def npy_per_video(videos: list[str], resize: int) -> Names:
    return Names({video: f"{video}{FEATURE_SUFFIX}" for video in videos})


def keyed_names(
    videos: list[str], key_of: Callable[[str], str], file_of: Callable[[str], str], reader: str, rule: str
) -> Names:
    """Names for a loader that finds a video under a key cut from its name: videos whose keys
    collide are left out (never one overwritten by another), and those whose key is not their
    whole name are said, as the user's annotation keys must then match the shorter key."""
    by_key: dict[str, list[str]] = {}
    for video in videos:
        by_key.setdefault(key_of(video), []).append(video)
    files, left_out, shortened = {}, [], []
    for key, group in by_key.items():
        if len(group) > 1:
            left_out += [
                LeftOut(
                    video,
                    f"{reader} would read it as {file_of(key)} ({rule}), "
                    f"as {', '.join(other for other in group if other != video)}",
                )
                for video in group
            ]
            continue
        files[group[0]] = file_of(key)
        if key != group[0]:
            shortened.append(f"{group[0]} -> {file_of(key)}")
    warnings = []
    if shortened:
        warnings.append(
            f"{reader} reads {rule}; {count(len(shortened), 'video has', 'videos have')} a longer name and "
            f"{'was' if len(shortened) == 1 else 'were'} written under that: {', '.join(shortened)}."
        )
    if left_out:
        warnings.append(
            f"{count(len(left_out), 'video')} would be read under the same name as another video and "
            f"{'was' if len(left_out) == 1 else 'were'} left out, since {reader} cannot tell them apart: "
            f"{', '.join(item.video for item in left_out)}."
        )
    return Names(files, left_out, warnings)


def pdvc_names(videos: list[str], resize: int) -> Names:
    return keyed_names(
        videos,
        lambda video: video[:PDVC_ID_LENGTH],
        lambda key: f"{key}{FEATURE_SUFFIX}",
        "PDVC",
        f"the first {PDVC_ID_LENGTH} characters of each annotation key + .npy",
    )


def tsp_gvf_key(video: str) -> str:
    """The key TSP's training looks a video's GVF up by: ``os.path.basename(filename).split('.')[0]``."""
    return video.split(".")[0]


def gvf_names(videos: list[str], resize: int) -> Names:
    return keyed_names(videos, tsp_gvf_key, lambda key: key, "TSP", "each file name up to its first dot")


# --- config keys and extra files ------------------------------------------------------------


def actionformer_config(facts: ConfigFacts) -> dict[str, Any]:
    keys: dict[str, Any] = {
        "feat_folder": facts.folder,
        "file_prefix": facts.prefix or None,
        "file_ext": FEATURE_SUFFIX,
        "input_dim": FEATURE_WIDTH,
        "feat_stride": facts.number("stride"),
        "num_frames": facts.number("clip_len"),
        "default_fps": facts.number("frame_rate"),
    }
    if facts.resize:
        # Fixed-length features: anet.py takes duration * fps / rows as the stride and
        # num_frames strides as a row's span; interpolated rows (align_corners=False) each
        # stand for an equal share of the video, so one stride.
        keys.update(feat_stride=-1, num_frames=1, max_seq_len=facts.resize, force_upsampling=False)
    return keys


def opentad_config(facts: ConfigFacts) -> dict[str, Any]:
    keys: dict[str, Any] = {"data_path": facts.folder + "/", "block_list": f"{facts.folder}/{MISSING_FILES}"}
    if facts.resize:
        # ResizeDataset takes no stride, offset or fps: rows span the video evenly.
        keys.update(resize_length=facts.resize, sample_stride=1)
    else:
        # PaddingDataset / SlidingWindowDataset: row k is centred on frame offset + k * stride.
        clip_len = facts.number("clip_len")
        offset = int(clip_len // 2) if clip_len is not None else None
        keys.update(
            feature_stride=facts.number("stride"),
            sample_stride=1,
            offset_frames=offset,
            fps=facts.number("frame_rate"),
        )
    keys["LoadFeats"] = {"type": "LoadFeats", "feat_format": "npy", "prefix": facts.prefix}
    return keys


def no_extras(out: Path, config: dict[str, Any], left_out: list[LeftOut], prefix: str) -> list[str]:
    return []


def write_text(path: Path, text: str) -> None:
    from tsp_cli.atomic import atomic_path

    with atomic_path(path) as temp:
        temp.write_text(text)


def actionformer_extras(out: Path, config: dict[str, Any], left_out: list[LeftOut], prefix: str) -> list[str]:
    lines = [
        "# Dataset keys for ActionFormer / TriDet (libs/datasets/anet.py, thumos14.py), written by tsp export.",
        "# Merge them into the 'dataset' block of your config; json_file, num_classes, max_seq_len, ... stay yours.",
        "# Files are opened as feat_folder/file_prefix + <annotation key> + file_ext.",
    ]
    if any(value is None for key, value in config.items() if key != "file_prefix"):
        lines.append(f"# null: {UNKNOWN_SETTING}")
    lines.append("dataset:")
    # JSON's spelling is valid YAML for strings, numbers, booleans and null.
    lines += [f"  {key}: {json.dumps(value)}" for key, value in config.items()]
    write_text(out / ACTIONFORMER_CONFIG, "\n".join(lines) + "\n")
    return [ACTIONFORMER_CONFIG]


def opentad_extras(out: Path, config: dict[str, Any], left_out: list[LeftOut], prefix: str) -> list[str]:
    missing_keys = [item.video[len(prefix) :] for item in left_out]
    write_text(out / MISSING_FILES, "".join(f"{key}\n" for key in missing_keys))
    keys = {key: value for key, value in config.items() if key not in ("data_path", "block_list", "LoadFeats")}
    dataset_type = "ResizeDataset (e.g. AnetResizeDataset)" if "resize_length" in keys else "PaddingDataset"
    arguments = ", ".join(f"{key}={value!r}" for key, value in keys.items())
    split = f"dict(data_path=data_path, block_list=block_list, {arguments})"
    text = "\n".join(
        [
            "# Dataset keys for OpenTAD (opentad/datasets/base/*_dataset.py, transforms/loading.py), by tsp export.",
            f"# Use them in each split of your {dataset_type} config, and put load_feats first in each pipeline.",
            "# missing_files.txt lists annotation keys (no prefix); LoadFeats opens",
            "# data_path/prefix + <annotation key> + .npy.",
            *([f"# None: {UNKNOWN_SETTING}"] if None in keys.values() else []),
            f"data_path = {config['data_path']!r}",
            f"block_list = {config['block_list']!r}",
            f"load_feats = dict(type='LoadFeats', feat_format='npy', prefix={config['LoadFeats']['prefix']!r})",
            f"dataset = dict(train={split}, val={split}, test={split})",
            "",
        ]
    )
    write_text(out / OPENTAD_CONFIG, text)
    return [MISSING_FILES, OPENTAD_CONFIG]


# --- the records ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportTarget:
    """One downstream code base: everything ``tsp export --to NAME`` does differently for it."""

    name: str
    writer: type[Writer]
    config: Callable[[ConfigFacts], dict[str, Any]]
    file_names: Callable[[list[str], int], Names] = npy_per_video
    extras: Callable[[Path, dict[str, Any], list[LeftOut], str], list[str]] = no_extras
    #: Rows per video when ``resize`` is not given (0: as extracted).
    default_resize: int = 0
    #: Its loader cannot take videos of different lengths: ``resize`` 0 is refused.
    fixed_length: bool = False
    #: It takes no ``resize`` at all (its rows are pooled into one).
    resizable: bool = True
    #: Other names users know it by (``tridet`` reads ActionFormer's layout).
    aliases: tuple[str, ...] = ()
    #: ``pool`` choices, the first the default; empty where pooling does not apply.
    pools: tuple[str, ...] = ()

    @property
    def writes_one_file(self) -> bool:
        """OUT is the file itself (``gvf.h5``), not a folder."""
        return self.writer.single_file == ""


TARGETS: dict[str, ExportTarget] = {
    target.name: target
    for target in (
        ExportTarget("actionformer", Writer, actionformer_config, extras=actionformer_extras, aliases=("tridet",)),
        ExportTarget("opentad", Writer, opentad_config, extras=opentad_extras),
        ExportTarget(
            "gtad",
            Hdf5Writer,
            lambda facts: {
                "feature_path": f"{facts.folder}/{GTAD_FILE}",
                "feat_dim": FEATURE_WIDTH,
                "temporal_scale": facts.resize or None,
            },
            file_names=lambda videos, resize: Names({video: video for video in videos}),
            default_resize=100,
        ),
        ExportTarget(
            "bmn",
            CsvWriter,
            lambda facts: {
                "feature_path": facts.folder + "/",
                "feat_dim": FEATURE_WIDTH,
                "temporal_scale": facts.resize,
            },
            file_names=lambda videos, resize: Names({video: f"csv_mean_{resize}/{video}.csv" for video in videos}),
            default_resize=100,
            fixed_length=True,
        ),
        ExportTarget(
            "pdvc",
            Writer,
            lambda facts: {
                "visual_feature_folder": [facts.folder],
                "visual_feature_type": ["tsp"],
                "feature_dim": FEATURE_WIDTH,
            },
            file_names=pdvc_names,
        ),
        ExportTarget(
            "tsp-gvf",
            GvfWriter,
            lambda facts: {"global_video_features": str(facts.out.resolve()), "gvf_pool": facts.pool},
            file_names=gvf_names,
            resizable=False,
            pools=GVF_POOLS,
        ),
    )
}

#: Every name ``--to`` takes (lower case), aliases included, to its target's name.
TARGET_NAMES: dict[str, str] = {
    alias: target.name for target in TARGETS.values() for alias in (target.name, *target.aliases)
}


def target_named(name: str) -> ExportTarget | None:
    """The target ``name`` (or an alias of one) stands for, in any case; ``None`` if none."""
    found = TARGET_NAMES.get(name.strip().lower())
    return TARGETS[found] if found is not None else None
