"""The preprocessing a TSP/TAC checkpoint expects, as data that travels with the checkpoint.

Like torchvision's ``Weights.transforms()`` and timm's ``pretrained_cfg``, each registry entry
holds the :class:`Recipe` its weights were trained with, so a user's own code can build clips
that give exactly the features ``tsp extract`` writes. The recipe (``docs/recipe.md``): clips
of 16 frames sampled at 15 fps; each frame as RGB24, scaled to [0, 1], bilinearly resized to
128×171 (``align_corners=False``, no antialiasing), normalised per channel, centre-cropped to
112×112.

:meth:`Recipe.transform` is the recipe written plainly with ``interpolate``, one frame at a
time (bounded memory at any resolution); the extraction pipeline uses a faster transform
(``tsp_cli.pipeline.transform``) that is tested against the same formula. Importing this
module does not import torch, so that ``tsp models list`` starts fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Recipe:
    """Clip sampling and per-frame pixels, as the TSP reference extractor does them."""

    clip_len: int = 16  #: frames per clip
    frame_rate: float = 15.0  #: frames per second a clip is sampled at
    resize: tuple[int, int] = (128, 171)  #: height, width after the bilinear resize
    crop: int = 112  #: side of the centre crop
    mean: tuple[float, float, float] = (0.43216, 0.394666, 0.37645)
    std: tuple[float, float, float] = (0.22803, 0.22145, 0.216989)

    @property
    def crop_top_left(self) -> tuple[int, int]:
        """Top-left corner of the centre crop: ``round((128-112)/2), round((171-112)/2)`` = (8, 30).

        Python's round-half-to-even, as torchvision's ``CenterCrop`` in the reference computes
        it: column 30, not 29.
        """
        height, width = self.resize
        return round((height - self.crop) / 2), round((width - self.crop) / 2)

    @property
    def clip_seconds(self) -> float:
        """The time one clip spans: 16 frames at 15 fps."""
        return self.clip_len / self.frame_rate

    def transform(self, frames: Any) -> torch.Tensor:
        """uint8 RGB frames ``T×H×W×3`` (or a batch ``N×T×H×W×3``) → float32 ``3×T×112×112`` (``N×3×T×112×112``).

        Accepts a NumPy array or a tensor, as PyAV's ``frame.to_ndarray(format="rgb24")``
        gives them; the result is on the CPU, ready for :class:`tsp_cli.TspModel`.
        """
        import torch
        import torch.nn.functional as functional

        pixels = torch.as_tensor(frames)
        if pixels.dtype != torch.uint8 or pixels.dim() not in (4, 5) or pixels.shape[-1] != 3:
            raise ValueError(
                f"frames must be uint8 RGB of shape T×H×W×3 or N×T×H×W×3, not {pixels.dtype} {tuple(pixels.shape)}"
            )
        leading = pixels.shape[:-3]
        flat = pixels.reshape(-1, *pixels.shape[-3:])
        top, left = self.crop_top_left
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        out = torch.empty(len(flat), 3, self.crop, self.crop)
        for index, frame in enumerate(flat):
            scaled = frame.permute(2, 0, 1).float().div(255.0)[None]
            resized = functional.interpolate(scaled, size=self.resize, mode="bilinear", align_corners=False)[0]
            cropped = resized[:, top : top + self.crop, left : left + self.crop]
            out[index] = (cropped - mean) / std
        clips = out.reshape(*leading, 3, self.crop, self.crop)  # (N,) T, C, H, W
        return clips.transpose(-4, -3).contiguous()  # (N,) C, T, H, W


#: The recipe of every released checkpoint (TSP and TAC alike).
TSP_RECIPE = Recipe()
