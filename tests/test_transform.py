"""The crop-only bilinear transform equals resize-normalise-crop done plainly with interpolate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tsp_cli.models.recipe import TSP_RECIPE, Recipe
from tsp_cli.pipeline.transform import FrameTransform, blend_frames, taps_per_frame, transform_for


def reference_transform(rgb: np.ndarray, recipe: Recipe = TSP_RECIPE) -> torch.Tensor:
    """The recipe written plainly with ``interpolate`` (:meth:`Recipe.transform`), for one frame."""
    return recipe.transform(rgb[None])[:, 0]


@pytest.mark.parametrize(
    "height,width", [(120, 160), (96, 128), (240, 320), (720, 1280), (1080, 1920), (47, 63), (128, 171), (2000, 90)]
)
def test_transform_matches_interpolate_to_float32_rounding(height: int, width: int) -> None:
    rgb = np.random.default_rng(height * width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    ours = FrameTransform.for_size(height, width)(rgb)
    plain = reference_transform(rgb)
    assert ours.shape == (3, 112, 112) and ours.dtype == torch.float32
    assert torch.allclose(ours, plain, atol=3e-5, rtol=0)


def test_centre_crop_starts_at_row_8_column_30() -> None:
    # The reference rounds (171 - 112) / 2 = 29.5 half-to-even: column 30, not 29.
    assert TSP_RECIPE.crop_top_left == (8, 30)
    rgb = np.zeros((128, 171, 3), dtype=np.uint8)
    rgb[:, 30] = 255  # at 128x171 the resize is the identity: column 30 is the crop's first
    out = FrameTransform.for_size(128, 171)(rgb)
    assert out[0, :, 0].min() > 2.4 and out[0, :, 1].max() < -1.8  # (1 - mean) / std vs -mean / std


def test_transform_is_not_antialiased() -> None:
    # A one-pixel checkerboard halved by bilinear without antialiasing keeps its extremes.
    rgb = np.zeros((256, 342, 3), dtype=np.uint8)
    rgb[::2, ::2] = 255
    assert torch.allclose(FrameTransform.for_size(256, 342)(rgb), reference_transform(rgb), atol=3e-5)


def test_taps_gathered_in_workers_blend_in_chunks_of_mixed_sizes_to_the_per_frame_transform() -> None:
    # A chunk as a worker sends it: 11 frames, the video changing size after the 5th (and back),
    # more than one CPU blend group; the blend must equal each frame transformed on its own.
    rng = np.random.default_rng(7)
    sizes = [(240, 320)] * 5 + [(360, 640)] * 4 + [(240, 320)] * 2
    frames = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for size in sizes]
    taps = torch.empty(len(frames), taps_per_frame(TSP_RECIPE), dtype=torch.uint8)
    for row, (frame, size) in zip(taps, zip(frames, sizes, strict=True), strict=True):
        transform_for(*size).gather(frame, out=row)
    blended = blend_frames(taps, sizes)
    assert blended.shape == (11, 3, 112, 112) and blended.dtype == torch.float32
    for frame, size, ours in zip(frames, sizes, blended, strict=True):
        assert torch.equal(ours, FrameTransform.for_size(*size)(frame))
        assert torch.allclose(ours, reference_transform(frame), atol=3e-5, rtol=0)
    # Laid out for a channels_last_3d batch: the same values, each pixel's 3 channels adjacent.
    pixels_together = blend_frames(taps, sizes, channels_last=True)
    assert pixels_together.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(pixels_together, blended)


def test_another_recipe_drives_the_sizes_mean_and_std_of_the_gathered_and_blended_frames() -> None:
    recipe = Recipe(resize=(100, 150), crop=64, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    rng = np.random.default_rng(3)
    sizes = [(240, 320), (90, 120)]
    frames = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for size in sizes]
    taps = torch.empty(len(frames), taps_per_frame(recipe), dtype=torch.uint8)
    assert taps.shape[1] == 4 * 64 * 64 * 3
    for row, frame, size in zip(taps, frames, sizes, strict=True):
        transform_for(*size, recipe).gather(frame, out=row)
    blended = blend_frames(taps, sizes, recipe)
    assert blended.shape == (2, 3, 64, 64)
    for ours, frame in zip(blended, frames, strict=True):
        assert torch.allclose(ours, reference_transform(frame, recipe), atol=3e-5, rtol=0)
        assert not torch.allclose(ours, reference_transform(frame)[:, :64, :64], atol=1e-2)
