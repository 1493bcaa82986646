"""Per-frame pixels of the recipe: float bilinear resize (128x171 for TSP), normalise, centre crop (112).

The sizes, mean and std are the checkpoint's :class:`~tsp_cli.models.recipe.Recipe`; nothing here
repeats them.

``torch.nn.functional.interpolate`` on the whole frame followed by the crop would compute
pixels that the crop throws away and convert every source pixel to float. Bilinear resizing is
separable and each output pixel reads only two source rows and two source columns, so we
gather just the rows and columns that the 112x112 crop needs (straight from uint8) and blend
them with the same weights ``interpolate`` uses (``align_corners=False``, no antialiasing).
Normalisation is affine per channel and bilinear weights sum to one, so it is folded into one
multiply-add at the end. The result equals the reference up to float32 rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
import torch

from tsp_cli.models.recipe import TSP_RECIPE, Recipe


def _bilinear_taps(
    in_size: int, out_size: int, first: int, count: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices (lower, upper) and upper weight for outputs ``first .. first+count-1``.

    Mirrors ATen's ``upsample_bilinear2d`` with ``align_corners=False``: the scale is
    ``in/out`` in float32, the source coordinate ``(dst + 0.5) * scale - 0.5`` is clamped at 0.
    """
    scale = np.float32(in_size) / np.float32(out_size)
    dst = np.arange(first, first + count, dtype=np.float32)
    src = np.maximum((dst + np.float32(0.5)) * scale - np.float32(0.5), np.float32(0.0))
    lower = np.floor(src).astype(np.int64)
    lower = np.minimum(lower, in_size - 1)
    upper = np.minimum(lower + 1, in_size - 1)
    weight = (src - lower).astype(np.float32)
    return torch.from_numpy(lower), torch.from_numpy(upper), torch.from_numpy(weight)


def taps_per_frame(recipe: Recipe) -> int:
    """What a frame is sent as: the 4 uint8 source values (2 rows x 2 columns) that each of the crop's
    outputs blends; for TSP's 112 x 112 x 3, 150,528 bytes, as many as the float32 crop they become."""
    return 4 * recipe.crop * recipe.crop * 3


@dataclass(frozen=True)
class FrameTransform:
    """The recipe's transform for frames of one size, in two steps: :meth:`gather`, then :meth:`blend`.

    Each output value blends four source values (two rows, two columns). Their positions in the
    flattened ``H*W*3`` uint8 frame are precomputed, so one gather reads just the 4 x 112 x 336
    bytes TSP's crop needs (whatever the frame size), with no transposed or whole-row copy. The
    blend (two ``lerp``, rows then columns, as ``interpolate`` weights them, and one ``addcmul``
    for the folded normalisation) is plain arithmetic on those bytes: the decoding workers
    gather, and the blend runs where the frames go, on the GPU in a real run, for a whole chunk
    of frames at once. On one core of the development machine the gather is about 0.12 ms a
    frame from 320x240 to 1080p, and the blend about 0.1 ms a frame on the CPU.
    """

    taps: torch.Tensor  # flat source indices, (row lo/hi) x crop x (column lo/hi) x (crop * 3)
    row_weights: torch.Tensor  # crop x 1 x 1: weight of the upper row
    col_weights: torch.Tensor  # crop * 3: weight of the right column, per column and channel
    scale: torch.Tensor  # 3 x 1 x 1
    shift: torch.Tensor  # 3 x 1 x 1
    size: tuple[int, int]
    crop: int

    @classmethod
    def for_size(cls, height: int, width: int, recipe: Recipe = TSP_RECIPE) -> FrameTransform:
        out_h, out_w = recipe.resize
        top, left = recipe.crop_top_left
        std = torch.tensor(recipe.std, dtype=torch.float32).view(3, 1, 1)
        mean = torch.tensor(recipe.mean, dtype=torch.float32).view(3, 1, 1)
        row_lo, row_hi, row_w = _bilinear_taps(height, out_h, top, recipe.crop)
        col_lo, col_hi, col_w = _bilinear_taps(width, out_w, left, recipe.crop)
        channels = torch.arange(3)
        rows = torch.stack([row_lo, row_hi]) * (width * 3)  # 2 x 112: offsets of the source rows
        cols = torch.stack([col_lo, col_hi])[:, :, None] * 3 + channels  # 2 x 112 x 3: offsets within a row
        taps = rows[:, :, None, None] + cols.reshape(2, -1)[None, None]  # 2 x crop x 2 x (crop * 3)
        return cls(
            taps=taps.reshape(-1),
            row_weights=row_w.view(-1, 1, 1),
            col_weights=col_w.repeat_interleave(3),
            scale=1.0 / (255.0 * std),
            shift=-mean / std,
            size=(height, width),
            crop=recipe.crop,
        )

    def to(self, device: torch.device | str) -> FrameTransform:
        """The same transform with its weights on ``device``, to blend frames there."""
        return replace(
            self,
            row_weights=self.row_weights.to(device),
            col_weights=self.col_weights.to(device),
            scale=self.scale.to(device),
            shift=self.shift.to(device),
        )

    def gather(self, rgb: np.ndarray | torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 H x W x 3 RGB frame -> its :func:`taps_per_frame` uint8 taps (written to ``out`` if given)."""
        image = torch.as_tensor(rgb)
        if tuple(image.shape) != (*self.size, 3):
            raise ValueError(f"expected a {self.size[0]}x{self.size[1]}x3 frame, got {tuple(image.shape)}")
        if out is None:
            return image.reshape(-1).index_select(0, self.taps)
        return torch.index_select(image.reshape(-1), 0, self.taps, out=out)

    def blend(self, taps: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 taps of N frames (N x :func:`taps_per_frame`) -> float32 N x 3 x crop x crop, ready for the network.

        Runs where ``taps`` are, with this transform's weights there (:meth:`to`).
        """
        count, side = len(taps), self.crop
        values = taps.view(count, 2, side, 2, side * 3).float()
        rows = torch.lerp(values[:, 0], values[:, 1], self.row_weights)  # N x crop x (column lo/hi) x (crop * 3)
        crop = torch.lerp(rows[:, :, 0], rows[:, :, 1], self.col_weights)  # N x crop x (crop * 3)
        if out is None:
            out = torch.empty(count, 3, side, side, device=taps.device)
        return torch.addcmul(self.shift, crop.view(count, side, side, 3).permute(0, 3, 1, 2), self.scale, out=out)

    def __call__(self, rgb: np.ndarray | torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 H x W x 3 RGB frame -> float32 3 x crop x crop: :meth:`gather` then :meth:`blend`."""
        frame = self.blend(self.gather(rgb)[None], out=None if out is None else out[None])
        return frame[0]


@lru_cache(maxsize=8)
def transform_for(height: int, width: int, recipe: Recipe = TSP_RECIPE) -> FrameTransform:
    """The transform for frames of this size, made once per process."""
    return FrameTransform.for_size(height, width, recipe)


@lru_cache(maxsize=16)
def _transform_on(height: int, width: int, recipe: Recipe, device: str) -> FrameTransform:
    return transform_for(height, width, recipe).to(device)


#: Frames blended at once on the CPU: measured fastest (63 us a 320x240 frame, against 98 one by
#: one; a whole 64-frame chunk's intermediates outgrow the caches and take 440 us a frame).
CPU_BLEND_GROUP = 8


def blend_frames(
    taps: torch.Tensor, sizes: Sequence[tuple[int, int]], recipe: Recipe = TSP_RECIPE, *, channels_last: bool = False
) -> torch.Tensor:
    """Frames' uint8 taps (N x :func:`taps_per_frame`, on any device) -> float32 N x 3 x crop x crop there.

    ``sizes[i]``: the (height, width) frame ``i`` was gathered from (a video may change size).
    On a GPU a chunk is one blend; on the CPU, groups of :data:`CPU_BLEND_GROUP`.
    ``channels_last``: the frames laid out H x W x 3 in memory (same values), as a
    ``channels_last_3d`` batch holds each frame, so that filling the batch copies whole pixels
    instead of scattering every value with a stride of 3 (which made a stride-1 dry run 1.8x slower).
    """
    layout = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty(len(taps), 3, recipe.crop, recipe.crop, device=taps.device, memory_format=layout)
    group = CPU_BLEND_GROUP if taps.device.type == "cpu" else max(1, len(taps))
    start = 0
    while start < len(taps):
        stop = start + 1
        while stop < len(taps) and stop - start < group and sizes[stop] == sizes[start]:
            stop += 1
        _transform_on(*sizes[start], recipe, str(taps.device)).blend(taps[start:stop], out=out[start:stop])
        start = stop
    return out
