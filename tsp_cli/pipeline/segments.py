"""Splitting one video's clips into segments that separate workers decode, each in one pass.

A segment is a run of consecutive clips. Its worker seeks to a keyframe early enough that every
frame its clips read decodes exactly as in a whole-video pass, including the frame before a
window's start that the recipe takes when no frame sits exactly there:

- that frame is the last one with ``pts <= start_pts`` of the segment's first window, so the
  last keyframe with ``pts <= start_pts`` is at or before it, and a closed GOP decodes exactly
  from its keyframe on;
- in an open GOP, pictures after the keyframe in decode order may be shown before it and
  reference the previous GOP; they are never used (their pts is below the keyframe's), but to
  be safe from later frames referencing them, a keyframe with leading pictures is passed over
  for the one before it, whose GOP then decodes completely.

Decoding from the keyframe to the first window is work a whole pass does not do, so boundaries
are placed, near the even split, at the clip whose window starts soonest after its keyframe.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from tsp_cli.pipeline.sampling import ClipWindow
from tsp_cli.pipeline.video import Keyframe, VideoInfo, with_keyframes


@dataclass(frozen=True)
class Segment:
    """Clips ``first_clip`` up to (not including) ``stop_clip``, decoded from the keyframe at ``seek_pts``.

    ``seek_pts`` is ``None`` for a segment decoded from the start of the video.
    """

    index: int
    first_clip: int
    stop_clip: int
    seek_pts: int | None


def whole_video(clips: int) -> Segment:
    """The one segment of a video that is not split: every clip, decoded from the start."""
    return Segment(index=0, first_clip=0, stop_clip=clips, seek_pts=None)


def split_video(info: VideoInfo, windows: Sequence[ClipWindow], count: int) -> list[Segment]:
    """Up to ``count`` segments of a probed video; its keyframes are read (one demux) if the probe did not collect them."""
    if count <= 1 or not windows:
        return [whole_video(len(windows))]
    keyframes = with_keyframes(info).keyframes
    return plan_segments(windows, keyframes, count) if keyframes else [whole_video(len(windows))]


def seek_point(keyframes: Sequence[Keyframe], start_pts: int) -> int | None:
    """The keyframe to decode from so that every frame from the last one at or before ``start_pts`` is exact."""
    at = bisect.bisect_right([k.pts for k in keyframes], start_pts) - 1
    if at >= 0 and keyframes[at].leading:
        at -= 1  # an open GOP: start a whole GOP earlier
    return keyframes[at].pts if at > 0 else None  # the first keyframe is the start of the video


def plan_segments(windows: Sequence[ClipWindow], keyframes: Sequence[Keyframe], count: int) -> list[Segment]:
    """Up to ``count`` segments covering ``windows`` in order; fewer when boundaries cannot be placed."""
    total = len(windows)
    if count <= 1 or total < 2 or not keyframes:
        return [whole_video(total)]
    spread = max(1, total // (4 * count))  # how far from the even split a boundary may move
    boundaries: list[tuple[int, int | None]] = []
    for part in range(1, count):
        target = round(part * total / count)
        low = max(target - spread, (boundaries[-1][0] + 1) if boundaries else 1)
        high = min(target + spread, total - 1)
        best: tuple[int, int, int | None] | None = None
        for clip in range(low, high + 1):
            seek = seek_point(keyframes, windows[clip].start_pts)
            if seek is None:
                continue
            lead_in = windows[clip].start_pts - seek
            if best is None or lead_in < best[0]:
                best = (lead_in, clip, seek)
        if best is not None:
            boundaries.append((best[1], best[2]))
    starts = [(0, None), *boundaries]
    return [
        Segment(
            index=index,
            first_clip=first,
            stop_clip=starts[index + 1][0] if index + 1 < len(starts) else total,
            seek_pts=seek,
        )
        for index, (first, seek) in enumerate(starts)
    ]
