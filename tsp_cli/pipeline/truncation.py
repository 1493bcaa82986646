"""Telling a truncated video (the end of the file is missing) from a whole one.

A download or copy that stopped early leaves a file whose header still declares the whole
length (Matroska, MP4 with its index first, AVI, FLV write it up front) while its packets stop
early. It decodes without an error, as a shorter video: its features would pass for complete.
The count of the packets, which the probe makes anyway, says where the stream really ends, so
comparing that end with the declared length costs nothing.

What a whole file may show without being truncated, and why it is not flagged:

- the container's length is that of its longest stream, and audio often runs on past the
  video by a fraction of a second (a few seconds in badly cut files): the video track's own
  length is used where the file states it (Matroska's per-track ``DURATION``, MP4's and AVI's
  track headers), and a gap must exceed :data:`TOLERANCE_SECONDS` and :data:`TOLERANCE_SHARE`;
- B-frames and the last GOP: the end is taken from the packets' timestamps, not from the order
  they are decoded in, and every packet is counted;
- a variable frame rate: timestamps again, never frames divided by a rate;
- formats that do not declare a length (MPEG-TS, MPEG-PS, Ogg, raw streams): FFmpeg reads their
  length from the end of the file itself or guesses it from the bit rate, which says nothing
  about truncation, so they are not checked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av

#: A gap smaller than this many seconds is never a truncation (audio running on, rounding).
TOLERANCE_SECONDS = 2.0
#: Nor a gap smaller than this share of the declared length.
TOLERANCE_SHARE = 0.05
#: FFmpeg demuxers (``container.format.name`` parts) that read the length from the file's header.
_DECLARING_FORMATS = frozenset({"matroska", "webm", "mov", "mp4", "avi", "flv", "asf"})
_CLOCK = re.compile(r"^(\d+):(\d{1,2}):(\d{1,2}(?:\.\d+)?)$")


@dataclass(frozen=True)
class Truncation:
    """The file declares ``declared_seconds`` of video, but its packets cover only ``decoded_seconds``."""

    declared_seconds: float
    decoded_seconds: float

    def record(self) -> dict[str, Any]:
        """The fields of the video's record (``tsp-records/videos-*.jsonl``)."""
        return {
            "truncated": True,
            "declared_seconds": round(self.declared_seconds, 3),
            "decoded_seconds": round(self.decoded_seconds, 3),
        }


def _clock_seconds(text: str) -> float | None:
    """``00:00:20.000000000`` (Matroska's ``DURATION`` tag) in seconds, or ``None``."""
    match = _CLOCK.match(text.strip())
    if match is None:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def declared_seconds(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    """The video's length as the file's header states it, or ``None`` where the format states none."""
    tag = stream.metadata.get("DURATION")
    if tag and (seconds := _clock_seconds(tag)) is not None:
        return seconds
    if not _DECLARING_FORMATS.intersection(container.format.name.split(",")):
        return None
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def check_truncation(
    declared: float | None, first_pts: int | None, end_pts: int | None, time_base: Fraction
) -> Truncation | None:
    """A :class:`Truncation` when the packets (from ``first_pts`` to ``end_pts``, in ``time_base``)
    end well short of the declared length; ``None`` for a whole file or one that cannot tell."""
    if declared is None or first_pts is None or end_pts is None:
        return None
    decoded = float((end_pts - first_pts) * time_base)
    if declared - decoded > max(TOLERANCE_SECONDS, TOLERANCE_SHARE * declared):
        return Truncation(declared, decoded)
    return None
