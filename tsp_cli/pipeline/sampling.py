"""The clip plan of the reference recipe, as pure functions.

Everything here follows the recipe (``docs/recipe.md``, sections 1 and 2) to the letter, including its float32
arithmetic for non-whole steps: the same frames must be chosen as by the reference extractor,
or features drift far beyond tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction

import numpy as np

from tsp_cli.models.recipe import TSP_RECIPE, Recipe


@dataclass(frozen=True)
class ClipSettings:
    """What decides which frames make each clip, and their pixels: the recipe, and the stride between clips.

    The recipe's ``clip_len`` and ``frame_rate`` are the clip plan's; a run that overrides them
    carries a recipe with the overrides (``dataclasses.replace(recipe, clip_len=8)``), so that
    the clips, the pixels and the manifest all read one recipe.
    """

    stride: int = 16
    recipe: Recipe = TSP_RECIPE

    def __post_init__(self) -> None:
        if self.clip_len < 1 or self.stride < 1 or not self.frame_rate > 0:
            raise ValueError("clip_len and stride must be at least 1 and frame_rate positive")

    @property
    def clip_len(self) -> int:
        return self.recipe.clip_len

    @property
    def frame_rate(self) -> float:
        return self.recipe.frame_rate


@dataclass(frozen=True)
class ClipWindow:
    """Clip ``index``: its start time and the pts range ``[start_pts, end_pts]`` it reads."""

    index: int
    start_time: float
    start_pts: int
    end_pts: int


def _float32_floor_indices(count: int, step: float) -> np.ndarray:
    """``floor(arange(count, float32) * step)`` with the product rounded to float32, as torch does."""
    return np.floor(np.arange(count, dtype=np.float32) * np.float32(step)).astype(np.int64)


def _whole_step(fps: float, frame_rate: float) -> int | None:
    step = float(fps) / frame_rate
    return int(step) if step.is_integer() else None


def resampled_indices(fps: float, num_frames: int, frame_rate: float = TSP_RECIPE.frame_rate) -> np.ndarray:
    """Frame indices of the video resampled from ``fps`` to ``frame_rate`` (section 1)."""
    whole = _whole_step(fps, frame_rate)
    if whole is not None:
        return np.arange(0, max(num_frames, 0), whole, dtype=np.int64)
    count = int(num_frames * frame_rate / fps)
    return _float32_floor_indices(max(count, 0), float(fps) / frame_rate)


def clip_start_indices(fps: float, num_frames: int, settings: ClipSettings = ClipSettings()) -> np.ndarray:
    """The frame index at which each clip starts: ``indices[k*stride]`` for every whole clip."""
    indices = resampled_indices(fps, num_frames, settings.frame_rate)
    last_start = len(indices) - settings.clip_len
    if last_start < 0:
        return np.zeros(0, dtype=np.int64)
    return indices[0 : last_start + 1 : settings.stride]


def clip_start_times(
    fps: float,
    num_frames: int,
    *,
    clip_len: int = TSP_RECIPE.clip_len,
    frame_rate: float = TSP_RECIPE.frame_rate,
    stride: int = 16,
) -> np.ndarray:
    """Start time in seconds (float64) of each clip: row k of a feature file starts there (a manifest's settings)."""
    settings = ClipSettings(stride=stride, recipe=replace(TSP_RECIPE, clip_len=clip_len, frame_rate=frame_rate))
    return clip_start_indices(fps, num_frames, settings) / float(fps)


def clip_windows(
    fps: float, num_frames: int, time_base: Fraction, settings: ClipSettings = ClipSettings()
) -> list[ClipWindow]:
    """The pts window each clip reads (section 2): ``floor(t * 1/tb) <= pts <= ceil((t + L/R) * 1/tb)``."""
    ticks_per_second = float(1 / Fraction(time_base))
    duration = settings.clip_len / settings.frame_rate
    windows = []
    for k, start_index in enumerate(clip_start_indices(fps, num_frames, settings)):
        start_time = int(start_index) / float(fps)
        windows.append(
            ClipWindow(
                index=k,
                start_time=start_time,
                start_pts=math.floor(start_time * ticks_per_second),
                end_pts=math.ceil((start_time + duration) * ticks_per_second),
            )
        )
    return windows


def window_positions(fps: float, settings: ClipSettings = ClipSettings()) -> np.ndarray:
    """Positions, within a clip's window of decoded frames, of the ``clip_len`` frames it keeps."""
    whole = _whole_step(fps, settings.frame_rate)
    if whole is not None:
        return np.arange(settings.clip_len, dtype=np.int64) * whole
    return _float32_floor_indices(settings.clip_len, float(fps) / settings.frame_rate)
