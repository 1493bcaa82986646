"""The checkpoints ``tsp`` knows by name: the 13 released ones, plus the user's models file.

The released checkpoints are declared as data, like torchvision's and timm's weight tables, so
adding one is adding a row. A user's own checkpoints come from the TOML file that
``TSP_MODELS_FILE`` names and become the same :class:`Checkpoint` entries, so they work wherever
a released name does. Nothing here touches the network or the cache; that is ``cache``.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

from tsp_cli import settings
from tsp_cli.errors import ModelNotFoundError, ModelsFileError
from tsp_cli.models.recipe import TSP_RECIPE, Recipe

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

#: Importable without torch, unlike ``backbones.py``, so that ``tsp models`` starts fast.
BACKBONES = ("r2plus1d_34", "r2plus1d_18", "r3d_18")
#: Bytes of each backbone's float32 weights (parameters and batch-norm statistics): the bulk of a
#: checkpoint file, and what ``tsp models list`` shows, marked as an estimate, for a file not yet
#: downloaded, since the release publishes no sizes (a file that also holds optimizer state is
#: larger). Counted from the built networks; a test keeps them in step.
BACKBONE_WEIGHT_BYTES = {"r2plus1d_34": 254_169_604, "r2plus1d_18": 125_302_196, "r3d_18": 132_703_648}
#: Width of the clip feature every backbone produces (its global average pool).
FEATURE_DIM = 512
PRETRAININGS = ("TSP", "TAC")
DEFAULT_CHECKPOINT = "r2plus1d_34-tsp_on_activitynet"
RELEASE_BASE_URL = "https://github.com/HumamAlwassel/TSP/releases/download/model_weights/"
#: Group of every entry declared in the user's models file (unless it names its own).
CUSTOM_GROUP = "custom"
#: Where the user's checkpoints go inside the cache, one folder per name, so that two entries
#: whose URLs end in the same file name never overwrite each other.
CUSTOM_CACHE_FOLDER = "custom"

MIN_HASH_PREFIX = 8
_HEX_DIGITS = re.compile(r"[0-9a-f]+")
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Checkpoint:
    """One downloadable checkpoint; ``sha256`` is the full hash or a prefix of it (8+ hex digits).

    ``recipe`` is the preprocessing its weights expect: the same for every TSP/TAC checkpoint
    released so far, declared per entry so that a differently trained one can say otherwise.
    """

    name: str
    backbone: str
    pretraining: str | None
    dataset: str | None
    group: str
    description: str
    filename: str
    url: str
    sha256: str
    released: bool = True
    recipe: Recipe = TSP_RECIPE

    @property
    def cache_relpath(self) -> PurePosixPath:
        """The file's place inside the cache folder."""
        if self.released:
            return PurePosixPath(self.filename)
        return PurePosixPath(CUSTOM_CACHE_FOLDER, self.name, self.filename)


def _released(name: str, pretraining: str, dataset: str, group: str, description: str, filename: str) -> Checkpoint:
    """A released entry; its backbone and 8-hex hash prefix are spelled out by its names."""
    return Checkpoint(
        name=name,
        backbone=name.split("-", 1)[0],
        pretraining=pretraining,
        dataset=dataset,
        group=group,
        description=description,
        filename=filename,
        url=RELEASE_BASE_URL + filename,
        sha256=Path(filename).stem.rsplit("-", 1)[1],
    )


_MAIN_TSP, _MAIN_TAC, _ABLATION = "main TSP", "main TAC", "GVF and backbone ablations"

RELEASED: tuple[Checkpoint, ...] = (
    _released("r2plus1d_34-tsp_on_activitynet", "TSP", "ActivityNet", _MAIN_TSP,
              "R(2+1)D-34 pretrained with TSP on ActivityNet (the default)",
              "r2plus1d_34-tsp_on_activitynet-max_gvf-backbone_lr_0.0001-fc_lr_0.002-epoch_5-0d2cf854.pth"),
    _released("r2plus1d_34-tsp_on_thumos14", "TSP", "THUMOS14", _MAIN_TSP,
              "R(2+1)D-34 pretrained with TSP on THUMOS14",
              "r2plus1d_34-tsp_on_thumos14-max_gvf-backbone_lr_0.0001-fc_lr_0.004-epoch_4-e6a30b2f.pth"),
    _released("r2plus1d_34-tac_on_activitynet", "TAC", "ActivityNet", _MAIN_TAC,
              "R(2+1)D-34 pretrained with TAC on ActivityNet",
              "r2plus1d_34-tac_on_activitynet-backbone_lr_0.0001-fc_lr_0.002-epoch_5-98ccac94.pth"),
    _released("r2plus1d_34-tac_on_thumos14", "TAC", "THUMOS14", _MAIN_TAC,
              "R(2+1)D-34 pretrained with TAC on THUMOS14",
              "r2plus1d_34-tac_on_thumos14-backbone_lr_0.00001-fc_lr_0.002-epoch_3-54b5c8aa.pth"),
    _released("r2plus1d_34-tac_on_kinetics", "TAC", "Kinetics", _MAIN_TAC,
              "R(2+1)D-34 pretrained with TAC on Kinetics",
              "r2plus1d_34-tac_on_kinetics-0547130e.pth"),
    _released("r2plus1d_34-tsp_on_activitynet-avg_gvf", "TSP", "ActivityNet", _ABLATION,
              "R(2+1)D-34 pretrained with TSP on ActivityNet (average GVF)",
              "r2plus1d_34-tsp_on_activitynet-avg_gvf-backbone_lr_0.0001-fc_lr_0.004-epoch_5-8b74eaa2.pth"),
    _released("r2plus1d_34-tsp_on_activitynet-no_gvf", "TSP", "ActivityNet", _ABLATION,
              "R(2+1)D-34 pretrained with TSP on ActivityNet (without GVF)",
              "r2plus1d_34-tsp_on_activitynet-no_gvf-backbone_lr_0.0001-fc_lr_0.004-epoch_5-fb38fdd2.pth"),
    _released("r2plus1d_18-tsp_on_activitynet", "TSP", "ActivityNet", _ABLATION,
              "R(2+1)D-18 pretrained with TSP on ActivityNet",
              "r2plus1d_18-tsp_on_activitynet-max_gvf-backbone_lr_0.0001-fc_lr_0.002-epoch_6-22835b73.pth"),
    _released("r2plus1d_18-tac_on_activitynet", "TAC", "ActivityNet", _ABLATION,
              "R(2+1)D-18 pretrained with TAC on ActivityNet",
              "r2plus1d_18-tac_on_activitynet-backbone_lr_0.0001-fc_lr_0.004-epoch_5-9f56941a.pth"),
    _released("r2plus1d_18-tac_on_kinetics", "TAC", "Kinetics", _ABLATION,
              "R(2+1)D-18 pretrained with TAC on Kinetics",
              "r2plus1d_18-tac_on_kinetics-76ce975c.pth"),
    _released("r3d_18-tsp_on_activitynet", "TSP", "ActivityNet", _ABLATION,
              "R3D-18 pretrained with TSP on ActivityNet",
              "r3d_18-tsp_on_activitynet-max_gvf-backbone_lr_0.0001-fc_lr_0.002-epoch_6-85584422.pth"),
    _released("r3d_18-tac_on_activitynet", "TAC", "ActivityNet", _ABLATION,
              "R3D-18 pretrained with TAC on ActivityNet",
              "r3d_18-tac_on_activitynet-backbone_lr_0.001-fc_lr_0.01-epoch_5-31fd6e95.pth"),
    _released("r3d_18-tac_on_kinetics", "TAC", "Kinetics", _ABLATION,
              "R3D-18 pretrained with TAC on Kinetics",
              "r3d_18-tac_on_kinetics-dcd952c6.pth"),
)  # fmt: skip


def all_checkpoints() -> list[Checkpoint]:
    """Every known checkpoint, released first, with ``TSP_BASE_URL`` applied to released URLs."""
    return [_with_mirror(checkpoint) for checkpoint in RELEASED] + load_models_file()


def get(name: str) -> Checkpoint:
    """The checkpoint called ``name``; an unknown name suggests the closest known ones."""
    checkpoints = {checkpoint.name: checkpoint for checkpoint in all_checkpoints()}
    if name in checkpoints:
        return checkpoints[name]
    suggestions = _close_names(name, list(checkpoints))
    raise ModelNotFoundError(_unknown_name_message(name, suggestions), name=name, suggestions=suggestions)


def _close_names(name: str, known: list[str]) -> tuple[str, ...]:
    """Up to three known names that start like ``name`` or look like it."""
    starting = [candidate for candidate in known if candidate.startswith(name)]
    similar = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    return tuple(dict.fromkeys(starting + similar))[:3]


def _unknown_name_message(name: str, suggestions: tuple[str, ...]) -> str:
    """One sentence: the suggested names, else where to find them all."""
    close = [repr(match) for match in suggestions]
    if not close:
        return f"Unknown model {name!r}; see `tsp models list` for the known names."
    choices = close[0] if len(close) == 1 else f"{', '.join(close[:-1])} or {close[-1]}"
    return f"Unknown model {name!r}; did you mean {choices}, or see `tsp models list`?"


def _with_mirror(checkpoint: Checkpoint) -> Checkpoint:
    """A released entry served from ``TSP_BASE_URL`` (same file names) when a mirror is set."""
    mirror = settings.base_url()
    if mirror is None:
        return checkpoint
    return dataclasses.replace(checkpoint, url=mirror + checkpoint.filename)


# --- The user's models file ------------------------------------------------------------------

_REQUIRED_FIELDS = ("backbone", "url", "sha256")
_OPTIONAL_FIELDS = ("description", "pretraining", "dataset", "group")
#: Fields of the entry's :class:`Recipe`, each defaulting to TSP's: numbers, not strings.
_RECIPE_FIELDS = ("clip_len", "frame_rate", "resize", "crop", "mean", "std")


def load_models_file() -> list[Checkpoint]:
    """The entries of the ``TSP_MODELS_FILE`` TOML file; none when the variable is unset.

    Every problem is a :class:`ModelsFileError` naming the file, the entry and the field, so a
    typo is found at once rather than as a confusing download failure later.
    """
    path = settings.models_file()
    if path is None:
        return []
    table = _read_toml(path)
    unexpected = sorted(set(table) - {"models"})
    if unexpected:
        raise ModelsFileError(
            f"Models file {path} has an unexpected top-level key {unexpected[0]!r}; declare entries under 'models.NAME'.",
            path=path,
        )
    models = table.get("models", {})
    if not isinstance(models, dict):
        raise ModelsFileError(
            f"Models file {path}: 'models' must be a table of entries named 'models.NAME'.", path=path
        )
    released_names = {checkpoint.name for checkpoint in RELEASED}
    return [_parse_entry(path, name, fields, released_names) for name, fields in models.items()]


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as stream:
            return tomllib.load(stream)
    except FileNotFoundError:
        raise ModelsFileError(f"The models file {path} named by TSP_MODELS_FILE does not exist.", path=path) from None
    except OSError as error:
        raise ModelsFileError(f"Cannot read the models file {path}: {error.strerror or error}.", path=path) from None
    except tomllib.TOMLDecodeError as error:
        raise ModelsFileError(f"Models file {path} is not valid TOML: {error}.", path=path) from None


def _parse_entry(path: Path, name: str, fields: Any, released_names: set[str]) -> Checkpoint:
    """One ``models.NAME`` table as a :class:`Checkpoint`, or the first problem found in it."""

    def problem(message: str) -> ModelsFileError:
        return ModelsFileError(f"Models file {path}, entry {name!r}: {message}", path=path)

    if not isinstance(fields, dict):
        raise problem("must be a table of fields (backbone, url, sha256, description).")
    if not _SAFE_NAME.fullmatch(name):
        raise problem("the name may use only letters, digits, '.', '_' and '-', and must start with a letter or digit.")
    if name in released_names:
        raise problem("the name is already used by a released checkpoint; choose another one.")
    for field in _REQUIRED_FIELDS:
        if field not in fields:
            raise problem(f"field {field!r} is missing.")
    known = _REQUIRED_FIELDS + _OPTIONAL_FIELDS + _RECIPE_FIELDS
    for field, value in fields.items():
        if field not in known:
            raise problem(f"unknown field {field!r}; expected {', '.join(known)}.")
        if field not in _RECIPE_FIELDS and not isinstance(value, str):
            raise problem(f"field {field!r} must be a string.")

    backbone = fields["backbone"]
    if backbone not in BACKBONES:
        raise problem(f"field 'backbone' is {backbone!r}; expected one of {', '.join(BACKBONES)}.")
    pretraining = fields.get("pretraining")
    if pretraining is not None and pretraining not in PRETRAININGS:
        raise problem(f"field 'pretraining' is {pretraining!r}; expected one of {', '.join(PRETRAININGS)}.")
    try:
        url = _resolve_source(fields["url"], relative_to=path.parent)
        filename = source_filename(url)
    except ValueError as error:
        raise problem(f"field 'url' {error}.") from None
    return Checkpoint(
        name=name,
        backbone=backbone,
        pretraining=pretraining,
        dataset=fields.get("dataset"),
        group=fields.get("group", CUSTOM_GROUP),
        description=fields.get("description", f"Declared in {path}"),
        filename=filename,
        url=url,
        sha256=_normalised_hash(fields["sha256"], problem),
        released=False,
        recipe=_recipe(fields, problem),
    )


def _recipe(fields: dict[str, Any], problem: Callable[[str], ModelsFileError]) -> Recipe:
    """TSP's recipe with the entry's own ``clip_len``, ``frame_rate``, ``resize``, ``crop``, ``mean`` and ``std``."""

    def whole(field: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise problem(f"field {field!r} must be a whole number of at least 1, not {value!r}.")
        return value

    def positive(field: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise problem(f"field {field!r} must be a positive number, not {value!r}.")
        return float(value)

    def numbers(field: str, count: int, check: Callable[[str, Any], Any]) -> tuple[Any, ...]:
        value = fields[field]
        if not isinstance(value, list) or len(value) != count:
            raise problem(f"field {field!r} must be a list of {count} numbers, not {value!r}.")
        return tuple(check(field, item) for item in value)

    def any_number(field: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise problem(f"field {field!r} must hold numbers, not {value!r}.")
        return float(value)

    own: dict[str, Any] = {}
    if "clip_len" in fields:
        own["clip_len"] = whole("clip_len", fields["clip_len"])
    if "frame_rate" in fields:
        own["frame_rate"] = positive("frame_rate", fields["frame_rate"])
    if "resize" in fields:
        own["resize"] = numbers("resize", 2, whole)
    if "crop" in fields:
        own["crop"] = whole("crop", fields["crop"])
    if "mean" in fields:
        own["mean"] = numbers("mean", 3, any_number)
    if "std" in fields:
        own["std"] = numbers("std", 3, positive)
    recipe = dataclasses.replace(TSP_RECIPE, **own)
    if recipe.crop > min(recipe.resize):
        raise problem(f"field 'crop' ({recipe.crop}) must not exceed the resized height and width {recipe.resize}.")
    return recipe


def _normalised_hash(value: str, problem: Callable[[str], ModelsFileError]) -> str:
    """Lower-case hex digits, without an optional ``sha256:`` label."""
    digits = value.strip().lower().removeprefix("sha256:")
    if not _HEX_DIGITS.fullmatch(digits) or not MIN_HASH_PREFIX <= len(digits) <= 64:
        raise problem(
            f"field 'sha256' must be the full SHA-256 (64 hex digits) or its first {MIN_HASH_PREFIX} or more, not {value!r}."
        )
    return digits


def is_remote(url: str) -> bool:
    """Whether ``url`` is fetched over HTTP(S) (by pooch) rather than copied from disk (by us)."""
    return urlsplit(url).scheme in ("http", "https")


def _resolve_source(value: str, *, relative_to: Path) -> str:
    """An http(s) URL as written, or an absolute ``file://`` URL for a ``file://`` or plain path.

    Relative plain paths are read from the models file's folder, so a file and its models file
    can move together.
    """
    value = value.strip()
    scheme = urlsplit(value).scheme
    if scheme in ("http", "https"):
        if not urlsplit(value).netloc:
            raise ValueError(f"{value!r} has no host")
        return value
    if scheme == "file":
        if urlsplit(value).netloc not in ("", "localhost"):
            raise ValueError(f"{value!r} names a host; a file:// URL must be absolute, like file:///data/model.pth")
        return value
    if len(scheme) > 1:  # one letter is a Windows drive, i.e. a plain path
        raise ValueError(f"{value!r} must be an http(s) URL, a file:// URL or a plain path")
    if not value:
        raise ValueError("is empty")
    local = Path(value).expanduser()
    return (relative_to / local).resolve().as_uri()


def local_source_path(url: str) -> Path:
    """The file a ``file://`` URL points to."""
    return Path(url2pathname(urlsplit(url).path))


def source_filename(url: str) -> str:
    """The last path component of ``url``, the name the file keeps in the cache."""
    filename = PurePosixPath(unquote(urlsplit(url).path)).name
    if not filename:
        raise ValueError(f"{url!r} does not end in a file name")
    return filename
