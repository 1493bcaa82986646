"""The model API people expect from torchvision and timm: list the models, load one, use its recipe.

::

    import tsp_cli
    tsp_cli.list_models()                                   # like torchvision.models.list_models()
    model = tsp_cli.load_model("r2plus1d_34-tsp_on_activitynet", device="cuda")  # or a local path
    clips = model.recipe.transform(frames)                  # uint8 T×H×W×3 -> float 3×T×112×112
    with torch.no_grad():
        features = model(clips)                             # 1×512 (N×512 for a batch of clips)

A released name is downloaded into the cache and hash-checked (``tsp_cli.models.cache``); a
path is read the same safe way ``tsp extract --local`` reads it (``tsp_cli.models.loading``).
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import torch
from torch import nn

from tsp_cli.models import cache, registry
from tsp_cli.models.cache import ProgressBar
from tsp_cli.models.loading import load_backbone
from tsp_cli.models.recipe import TSP_RECIPE, Recipe

#: File endings that make a string a checkpoint path rather than a model name.
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")


class TspModel(nn.Module):
    """A TSP/TAC backbone that maps clips to 512-d features, with the recipe its weights expect.

    ``model(clips)`` takes one clip ``3×T×112×112`` or a batch ``N×3×T×112×112`` (as
    :meth:`Recipe.transform` makes them), moves it to the model's device, and returns ``N×512``.
    """

    def __init__(self, backbone: nn.Module, *, name: str, architecture: str, recipe: Recipe, path: Path) -> None:
        super().__init__()
        self.backbone = backbone
        self.name = name  #: the registry name, or the file name of a local checkpoint
        self.architecture = architecture  #: r2plus1d_34, r2plus1d_18 or r3d_18
        self.recipe = recipe
        self.path = path  #: the checkpoint file the weights came from

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        if clips.dim() == 4:
            clips = clips.unsqueeze(0)
        if clips.dim() != 5 or clips.shape[1] != 3:
            raise ValueError(f"clips must be 3×T×H×W or N×3×T×H×W, not {tuple(clips.shape)}")
        weight = next(self.backbone.parameters())
        return self.backbone(clips.to(device=weight.device, dtype=weight.dtype))

    def extra_repr(self) -> str:
        return f"name={self.name!r}, architecture={self.architecture!r}"


def list_models(include: str | None = None) -> list[str]:
    """The names ``load_model`` accepts: the released checkpoints, then the user's models file.

    ``include`` filters with a shell-style pattern, as in torchvision (``"r3d_18*"``).
    """
    names = [checkpoint.name for checkpoint in registry.all_checkpoints()]
    return names if include is None else fnmatch.filter(names, include)


def _is_a_path(name_or_path: str | Path) -> bool:
    """A ``Path``, or a string that names a file or looks like one (a folder part or a checkpoint suffix)."""
    if isinstance(name_or_path, Path):
        return True
    return "/" in name_or_path or Path(name_or_path).suffix in CHECKPOINT_SUFFIXES or Path(name_or_path).is_file()


def load_model(
    name_or_path: str | Path,
    *,
    device: str | torch.device = "cpu",
    backbone: str | None = None,
    offline: bool = False,
    progress: ProgressBar | None = None,
) -> TspModel:
    """A ready network in eval mode: a registry name (downloaded and checked) or a checkpoint file.

    ``backbone`` may be left out: it is read from the tensors. ``offline`` forbids downloads;
    ``progress`` is a pooch-compatible progress bar for the download.
    """
    if _is_a_path(name_or_path):
        path = Path(name_or_path)
        name, recipe = path.name, TSP_RECIPE
    else:
        checkpoint = registry.get(str(name_or_path))  # an unknown name raises, suggesting the closest ones
        path = cache.fetch(checkpoint.name, offline=offline, progress=progress)
        name, recipe, backbone = checkpoint.name, checkpoint.recipe, backbone or checkpoint.backbone
    network, architecture = load_backbone(path, backbone)
    model = TspModel(network, name=name, architecture=architecture, recipe=recipe, path=path)
    return model.to(torch.device(device)).eval()
