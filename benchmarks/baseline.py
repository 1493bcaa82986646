"""The reference's per-clip approach, re-created faithfully, as the baseline to beat.

The reference extractor (TSP's ``extract_features.py`` over ``UntrimmedVideoDataset``) reads
every clip on its own with ``torchvision.io.read_video(path, t_start, t_end, pts_unit="sec")``
in DataLoader workers. For each clip that means: open the file, seek back to the keyframe before
the window, decode forward to just past its end, convert every frame of the window to RGB, stack,
resample to the clip's frames, and transform the whole clip in float. :func:`read_video_frames`
is torchvision's ``_read_from_stream`` (0.8 to 0.2x) line by line for the video stream:

- ``seek_offset = max(start_offset - 1, 0)``, then, because ``should_buffer`` is true for every
  stream that is not a DivX packed-B-frame file, 5 ticks more (``max_buffer_size``);
  ``container.seek(seek_offset, any_frame=False, backward=True, stream=stream)``;
- decode into a dict keyed by pts; stop at the first frame with ``pts >= end_offset``, after
  buffering 5 more frames (the same ``should_buffer``);
- keep ``start_offset <= pts <= end_offset`` in pts order, and put the last earlier frame in
  front when no frame has ``pts == start_offset`` (``start_offset > 0``);
- ``gc.collect()`` on every 10th call, as torchvision does.

``read_video`` then converts each kept frame with ``frame.to_rgb().to_ndarray()`` (the same
swscale conversion as ``to_ndarray(format="rgb24")``) and stacks them (T x H x W x C uint8).
The dataset resamples (``vframes[::step][:L]`` for a whole step, else float32-floored indices)
and applies the reference's video transforms: ``permute(3, 0, 1, 2).float() / 255`` (C x T x H
x W), ``interpolate(size=(128, 171), mode="bilinear", align_corners=False)``, normalise, centre
crop rows 8:120 and columns 30:142. The DataLoader's default collate stacks clips into batches.

The clip plan (which windows, which positions) is ``tsp_cli.pipeline.sampling``'s, made before the
clock starts (the reference reads fps and frame counts from its metadata CSV).
"""

from __future__ import annotations

import gc
import math
import os
import re
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from tsp_cli.models.recipe import TSP_RECIPE
from tsp_cli.pipeline.sampling import ClipSettings, clip_windows, window_positions
from tsp_cli.pipeline.video import probe

_GC_COLLECTION_INTERVAL = 10
_called_times = 0


@dataclass(frozen=True)
class ClipRead:
    """One clip as the reference reads it: a file, its pts window, and how to resample the window."""

    path: str
    index: int
    start_pts: int
    end_pts: int
    whole_step: int | None
    positions: tuple[int, ...]
    clip_len: int


def plan_clips(paths: Sequence[Path], settings: ClipSettings) -> list[ClipRead]:
    """Every clip of every video, in order, as :class:`ClipRead` entries."""
    clips: list[ClipRead] = []
    for path in paths:
        info = probe(path)
        step = info.fps / settings.frame_rate
        whole = int(step) if float(step).is_integer() else None
        positions = tuple(int(p) for p in window_positions(info.fps, settings))
        for window in clip_windows(info.fps, info.num_frames, info.time_base, settings):
            clips.append(
                ClipRead(
                    os.fspath(path), window.index, window.start_pts, window.end_pts, whole, positions, settings.clip_len
                )
            )
    return clips


def _should_buffer(stream: av.video.stream.VideoStream) -> bool:
    should_buffer = True
    extradata = stream.codec_context.extradata
    if extradata and b"DivX" in extradata:
        data = extradata[extradata.find(b"DivX") :]
        found = re.search(rb"DivX(\d+)Build(\d+)(\w)", data) or re.search(rb"DivX(\d+)b(\d+)(\w)", data)
        if found is not None:
            should_buffer = found.group(3) == b"p"
    return should_buffer


def read_video_frames(path: str, start_offset: int, end_offset: int) -> torch.Tensor:
    """``torchvision.io.read_video``'s frames for a pts window: T x H x W x 3 uint8 (see the module text)."""
    global _called_times
    _called_times += 1
    if _called_times % _GC_COLLECTION_INTERVAL == _GC_COLLECTION_INTERVAL - 1:
        gc.collect()
    max_buffer_size = 5
    with av.open(path, metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        should_buffer = _should_buffer(stream)
        seek_offset = max(start_offset - 1, 0)
        if should_buffer:
            seek_offset = max(seek_offset - max_buffer_size, 0)
        container.seek(seek_offset, any_frame=False, backward=True, stream=stream)
        frames: dict[int, av.VideoFrame] = {}
        buffer_count = 0
        for frame in container.decode(video=0):
            frames[frame.pts] = frame
            if frame.pts >= end_offset:
                if should_buffer and buffer_count < max_buffer_size:
                    buffer_count += 1
                    continue
                break
        result = [frames[i] for i in sorted(frames) if start_offset <= frames[i].pts <= end_offset]
        if frames and start_offset > 0 and start_offset not in frames:
            preceding = [i for i in frames if i < start_offset]
            if preceding:
                result.insert(0, frames[max(preceding)])
    return torch.as_tensor(np.stack([frame.to_ndarray(format="rgb24") for frame in result]))


_MEAN = torch.tensor(TSP_RECIPE.mean, dtype=torch.float32)[:, None, None, None]
_STD = torch.tensor(TSP_RECIPE.std, dtype=torch.float32)[:, None, None, None]


def transform_clip(vframes: torch.Tensor) -> torch.Tensor:
    """The reference's clip transform: T x H x W x 3 uint8 -> 3 x T x 112 x 112 float32."""
    video = vframes.permute(3, 0, 1, 2).to(torch.float32) / 255
    video = torch.nn.functional.interpolate(video, size=TSP_RECIPE.resize, mode="bilinear", align_corners=False)
    video = (video - _MEAN) / _STD
    top, left = TSP_RECIPE.crop_top_left
    crop = TSP_RECIPE.crop
    return video[..., top : top + crop, left : left + crop]


def read_clip(clip: ClipRead) -> torch.Tensor:
    """One clip, read and transformed as the reference does: 3 x L x 112 x 112 float32."""
    vframes = read_video_frames(clip.path, clip.start_pts, clip.end_pts)
    if clip.whole_step is not None:
        vframes = vframes[:: clip.whole_step][: clip.clip_len]
    elif clip.positions[-1] < len(vframes):
        vframes = vframes[list(clip.positions)][: clip.clip_len]
    if vframes.shape[0] != clip.clip_len:
        raise RuntimeError(f"{clip.path}: clip {clip.index} has {vframes.shape[0]} frames, not {clip.clip_len}")
    return transform_clip(vframes)


class PerClipDataset(Dataset):
    def __init__(self, clips: Sequence[ClipRead]):
        self.clips = list(clips)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> torch.Tensor:
        return read_clip(self.clips[index])


def evenly_spaced(clips: Sequence[ClipRead], limit: int | None) -> tuple[list[ClipRead], int]:
    """At most ``limit`` clips taken every k-th across the whole list, and that k (the scale factor)."""
    if limit is None or len(clips) <= limit:
        return list(clips), 1
    every = math.ceil(len(clips) / limit)
    return list(clips[::every]), every


def measure_baseline(
    paths: Sequence[Path], settings: ClipSettings, *, workers: int, batch_size: int = 32, limit: int | None = None
) -> dict:
    """Time the per-clip approach over ``paths`` (every clip, or ``limit`` of them evenly spaced).

    Returns seconds for the clips run, the clip counts, ``scaled_seconds``: the time scaled
    linearly to all clips (equal to ``seconds`` when every clip ran), and the CPU seconds of this
    process and its (joined) DataLoader workers, scaled the same way.
    """
    clips = plan_clips(paths, settings)
    chosen, _ = evenly_spaced(clips, limit)
    loader = DataLoader(PerClipDataset(chosen), batch_size=batch_size, num_workers=workers, shuffle=False)
    before = _cpu_seconds()
    started = time.perf_counter()
    done = 0
    batches = iter(loader)
    for batch in batches:
        done += batch.shape[0]
    seconds = time.perf_counter() - started
    del batches  # its workers are shut down and reaped, so their CPU time is counted
    cpu = _cpu_seconds() - before
    scale = len(clips) / done if done else 0.0
    return {
        "seconds": seconds,
        "clips_run": done,
        "clips_total": len(clips),
        "scaled_seconds": seconds * scale,
        "cpu_seconds": cpu,
        "scaled_cpu_seconds": cpu * scale,
    }


def _cpu_seconds() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total
