"""The crop-only bilinear transform equals resize-normalise-crop done plainly with interpolate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tsp_cli.pipeline.transform import CROP_TOP_LEFT, FrameTransform, reference_transform


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
    assert CROP_TOP_LEFT == (8, 30)
    rgb = np.zeros((128, 171, 3), dtype=np.uint8)
    rgb[:, 30] = 255  # at 128x171 the resize is the identity: column 30 is the crop's first
    out = FrameTransform.for_size(128, 171)(rgb)
    assert out[0, :, 0].min() > 2.4 and out[0, :, 1].max() < -1.8  # (1 - mean) / std vs -mean / std


def test_transform_is_not_antialiased() -> None:
    # A one-pixel checkerboard halved by bilinear without antialiasing keeps its extremes.
    rgb = np.zeros((256, 342, 3), dtype=np.uint8)
    rgb[::2, ::2] = 255
    assert torch.allclose(FrameTransform.for_size(256, 342)(rgb), reference_transform(rgb), atol=3e-5)
