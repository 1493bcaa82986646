"""Small synthetic test videos, generated with PyAV so that no test depends on files or ffmpeg.

Usage::

    from tests.videos import make_video, frame_index

    make_video(tmp_path / "a.mp4", frames=45, fps=30)                       # H.264 MP4, CFR
    make_video(tmp_path / "b.webm", frames=50, fps=25, codec="libvpx-vp9")  # VP9 WebM
    make_video(tmp_path / "c.mkv", frames=50, fps=25, codec="libx265")      # HEVC MKV
    make_video(tmp_path / "d.avi", frames=30, fps=30, codec="mpeg4")        # MPEG-4 AVI
    make_video(tmp_path / "e.mp4", timestamps=[0, 0.02, 0.07, ...])         # variable frame rate
    make_video(tmp_path / "f.mp4", frames=30, audio_first=True)             # video is stream 1
    make_video(tmp_path / "g.mp4", frames=30, size=(63, 47), pix_fmt="yuv444p")  # odd size

The container comes from the file ending. Frame ``i`` carries its index (modulo 256) in binary
as eight vertical red stripes (0 or 255), over a horizontal gradient in green and a vertical one
in blue; :func:`frame_index` reads the index back from a decoded RGB image, robustly to
compression, so a test can tell exactly which source frames a decoder or filter picked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

#: Encoder options that keep the slow encoders fast on tiny test videos.
_FAST_OPTIONS = {
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8"},
    "libvpx": {"deadline": "realtime", "cpu-used": "8"},
    "libx265": {"preset": "ultrafast", "x265-params": "log-level=error"},
}
#: Millisecond timestamps for variable-frame-rate videos: every container can store them.
_VFR_TIME_BASE = Fraction(1, 1000)


STRIPES = 8


def frame_image(index: int, size: tuple[int, int]) -> np.ndarray:
    """The RGB24 image (height × width × 3) of frame ``index``; at least 16 pixels wide."""
    width, height = size
    image = np.empty((height, width, 3), dtype=np.uint8)
    stripe = width // STRIPES
    for bit in range(STRIPES):
        image[:, bit * stripe : (bit + 1) * stripe, 0] = 255 if (index >> bit) & 1 else 0
    image[:, STRIPES * stripe :, 0] = 0
    image[..., 1] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    image[..., 2] = np.linspace(0, 255, height, dtype=np.uint8)[:, None]
    return image


def frame_index(image: np.ndarray) -> int:
    """The index (modulo 256) that :func:`frame_image` drew into a decoded RGB24 image."""
    stripe = image.shape[1] // STRIPES
    bits = [
        image[:, bit * stripe + stripe // 4 : (bit + 1) * stripe - stripe // 4, 0].mean() > 127
        for bit in range(STRIPES)
    ]
    return sum(1 << bit for bit, on in enumerate(bits) if on)


def make_video(
    path: Path | str,
    *,
    frames: int | None = None,
    fps: int | float | Fraction = 30,
    size: tuple[int, int] = (64, 48),
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    gop: int | None = None,
    timestamps: Sequence[float] | None = None,
    audio_first: bool = False,
    codec_options: Mapping[str, str] | None = None,
    container_options: Mapping[str, str] | None = None,
) -> Path:
    """Write a small test video to ``path`` (creating its folder) and return the path.

    - ``frames`` at a constant ``fps`` (int, float or Fraction such as ``Fraction(30000, 1001)``),
      or ``timestamps``: one presentation time in seconds per frame (rounded to milliseconds)
      for a variable-frame-rate video; ``frames`` then defaults to ``len(timestamps)``.
    - ``size`` is (width, height); odd sizes need a pixel format that allows them (``yuv444p``).
    - ``gop``: the keyframe interval; ``codec_options``/``container_options``: passed to FFmpeg.
    - ``audio_first``: add a silent audio track as stream 0, so the video is stream 1.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if timestamps is None and frames is None:
        raise ValueError("give frames or timestamps")
    frames = len(timestamps) if frames is None else frames
    rate = Fraction(fps).limit_denominator(100_000)
    with av.open(str(path), "w", options=dict(container_options or {})) as container:
        audio = _add_audio_stream(container, path.suffix) if audio_first else None
        video = container.add_stream(
            codec, rate=rate, options={**_FAST_OPTIONS.get(codec, {}), **(codec_options or {})}
        )
        video.width, video.height = size
        video.pix_fmt = pix_fmt
        if gop is not None:
            video.codec_context.gop_size = gop
        time_base = _VFR_TIME_BASE if timestamps is not None else 1 / rate
        video.codec_context.time_base = time_base
        if audio is not None:
            duration = timestamps[-1] if timestamps is not None else frames / rate
            _write_silence(container, audio, float(duration))
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(frame_image(index, size), format="rgb24")
            frame.time_base = time_base
            frame.pts = round(timestamps[index] * 1000) if timestamps is not None else index
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
    return path


def make_two_clips_and_a_short_one(folder: Path) -> Path:
    """``a.mp4`` (30 fps) and ``b.mp4`` (25 fps) of one clip each at stride 16, and ``c.mp4``, too short for a clip."""
    make_video(folder / "a.mp4", frames=40, fps=30)
    make_video(folder / "b.mp4", frames=40, fps=25)
    make_video(folder / "c.mp4", frames=10, fps=30)
    return folder


def _add_audio_stream(container: av.container.OutputContainer, suffix: str) -> av.audio.stream.AudioStream:
    codec = "libopus" if suffix.lower() == ".webm" else "aac"
    return container.add_stream(codec, rate=48000, layout="mono")


def _write_silence(
    container: av.container.OutputContainer, stream: av.audio.stream.AudioStream, seconds: float
) -> None:
    """Silent audio covering the video, so the file looks like a real audio-first recording."""
    samples_per_frame = 960
    for start in range(0, int(seconds * 48000) + samples_per_frame, samples_per_frame):
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, samples_per_frame), dtype=np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate = 48000
        frame.pts = start
        frame.time_base = Fraction(1, 48000)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
