"""The clip plan as pure functions, against the recipe written out independently with torch."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from tsp_cli.pipeline.sampling import (
    ClipSettings,
    clip_start_indices,
    clip_start_times,
    clip_windows,
    resampled_indices,
    window_positions,
)


def reference_indices(fps: float, num_frames: int, frame_rate: float = 15.0) -> np.ndarray:
    """Section 1 of docs/recipe.md, in the reference's own torch arithmetic."""
    step = float(fps) / frame_rate
    if step.is_integer():
        return torch.arange(num_frames)[:: int(step)].numpy()
    count = int(num_frames * frame_rate / fps)
    return (torch.arange(count, dtype=torch.float32) * step).floor().to(torch.int64).numpy()


@pytest.mark.parametrize("fps", [30.0, 25.0, 30000 / 1001, 29.97, 24.0, 60.0, 50.0, 15.0, 12.0])
@pytest.mark.parametrize("num_frames", [0, 1, 15, 31, 32, 33, 97, 1000, 54321])
def test_resampled_indices_match_the_reference_arithmetic(fps: float, num_frames: int) -> None:
    assert np.array_equal(resampled_indices(fps, num_frames), reference_indices(fps, num_frames))


def test_whole_step_takes_every_other_frame_at_30_fps() -> None:
    assert resampled_indices(30.0, 7).tolist() == [0, 2, 4, 6]


def test_non_whole_step_floors_float32_products_at_25_fps() -> None:
    # step 25/15 = 1.6667: floor(j * step) for j < int(10 * 15 / 25) = 6
    assert resampled_indices(25.0, 10).tolist() == [0, 1, 3, 5, 6, 8]


@pytest.mark.parametrize("stride", [1, 4, 16])
@pytest.mark.parametrize("fps", [30.0, 25.0, 29.97])
def test_clip_starts_are_every_stride_th_resampled_frame_with_a_whole_clip(stride: int, fps: float) -> None:
    num_frames = 300
    indices = reference_indices(fps, num_frames)
    expected = [indices[k * stride] for k in range(len(indices)) if k * stride <= len(indices) - 16]
    assert clip_start_indices(fps, num_frames, ClipSettings(stride=stride)).tolist() == expected


def test_clip_counts_for_the_parity_videos() -> None:
    assert len(clip_start_indices(30.0, 150)) == 4  # 75 resampled frames, stride 16
    assert len(clip_start_indices(30.0, 97, ClipSettings(stride=4))) == 9
    assert len(clip_start_indices(25.0, 110, ClipSettings(stride=2))) == 26


@pytest.mark.parametrize("num_frames", [0, 1, 29, 30])
def test_videos_shorter_than_one_clip_have_no_clips(num_frames: int) -> None:
    # 16 frames at 15 fps need 31 frames at 30 fps (indices 0, 2, ..., 30)
    assert len(clip_windows(30.0, num_frames, Fraction(1, 15360))) == 0


def test_the_shortest_video_with_a_clip_has_exactly_one() -> None:
    assert len(clip_windows(30.0, 31, Fraction(1, 15360))) == 1
    assert len(clip_windows(30.0, 32, Fraction(1, 15360))) == 1


def test_windows_use_floor_and_ceil_of_seconds_in_time_base_ticks() -> None:
    windows = clip_windows(25.0, 110, Fraction(1, 12800), ClipSettings(stride=2))
    second = windows[1]
    start_index = reference_indices(25.0, 110)[2]
    assert second.start_time == start_index / 25.0
    assert second.start_pts == math.floor(start_index / 25.0 * 12800)
    assert second.end_pts == math.ceil((start_index / 25.0 + 16 / 15) * 12800)


def test_clip_start_times_are_k_stride_over_15_for_whole_steps() -> None:
    times = clip_start_times(30.0, 3000, stride=16)
    assert np.allclose(times, np.arange(len(times)) * 16 / 15)
    assert times.dtype == np.float64


def test_window_positions() -> None:
    assert window_positions(30.0).tolist() == list(range(0, 32, 2))
    assert (
        window_positions(25.0).tolist() == (torch.arange(16, dtype=torch.float32) * (25 / 15)).floor().long().tolist()
    )
    assert window_positions(15.0).tolist() == list(range(16))


def test_settings_refuse_nonsense() -> None:
    with pytest.raises(ValueError):
        ClipSettings(stride=0)
