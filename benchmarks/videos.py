"""The benchmark's input videos, generated with PyAV once and cached (``bench-out/videos/``).

Each video is a camera panning over a seeded random texture (coarse blobs down to fine detail),
with an inverted square moving on its own path and a little film grain: motion that H.264
predicts well, plus detail and noise it has to spend bits on, so a 320x240 video comes out at
roughly 300-350 kbit/s and a 1280x720 one at roughly 2.5 Mbit/s (CRF 23, preset medium, B-frames),
which is how real web video decodes, unlike flat test patterns (too cheap) or pure noise (too
expensive). Keyframes every ``gop`` frames exactly (``scenecut=0``), so per-clip seeks cost
what the GOP says.

A file name carries every setting and ``VERSION``; a changed setting makes a new file. Files
are written under a temporary name and renamed when complete, so an interrupted generation is
never mistaken for a cached video.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch

#: Bump when the generator changes what it draws, so that caches are regenerated.
VERSION = 1


@dataclass(frozen=True)
class VideoSpec:
    """One generated video: H.264 in MP4, constant frame rate, yuv420p."""

    name: str
    width: int
    height: int
    seconds: float
    fps: int = 30
    gop: int = 250
    preset: str = "medium"
    crf: int = 23
    seed: int = 0
    #: Film grain costs time to draw and bits to encode; the 10-minute memory video skips it.
    grain: bool = True

    @property
    def frames(self) -> int:
        return round(self.seconds * self.fps)

    @property
    def filename(self) -> str:
        seconds = f"{self.seconds:g}".replace(".", "p")
        grain = "" if self.grain else "-nograin"
        return (
            f"{self.name}-{self.width}x{self.height}-{seconds}s-{self.fps}fps-gop{self.gop}-{self.preset}"
            f"-crf{self.crf}-seed{self.seed}{grain}-v{VERSION}.mp4"
        )


def _texture(height: int, width: int, seed: int) -> np.ndarray:
    """A seeded height x width x 3 uint8 texture: smooth noise at four scales, coarse to fine."""
    generator = np.random.default_rng(seed)
    total = torch.zeros(1, 3, height, width)
    for columns, amplitude in ((8, 80.0), (32, 45.0), (128, 30.0), (max(4, width // 3), 22.0)):
        rows = max(2, height * columns // width)
        low = torch.from_numpy(generator.standard_normal((1, 3, rows, columns)).astype(np.float32))
        total += amplitude * torch.nn.functional.interpolate(
            low, size=(height, width), mode="bicubic", align_corners=False
        )
    return (total[0].permute(1, 2, 0) + 128).clamp(0, 255).to(torch.uint8).numpy()


def frames_of(spec: VideoSpec):
    """Yield the spec's RGB24 frames (height x width x 3 uint8)."""
    width, height = spec.width, spec.height
    texture = _texture(2 * height, 2 * width, spec.seed)
    generator = np.random.default_rng(spec.seed + 1)
    grain = (
        [generator.integers(-5, 6, size=(height, width, 3), dtype=np.int16) for _ in range(7)] if spec.grain else None
    )
    box_h, box_w = height // 4, width // 4
    phase = spec.seed * 0.7
    for index in range(spec.frames):
        t = index / spec.fps
        x = int(width / 2 * (1 + np.sin(2 * np.pi * t / 11.0 + phase)))
        y = int(height / 2 * (1 + np.sin(2 * np.pi * t / 7.0 + 1 + phase)))
        view = texture[y : y + height, x : x + width]
        frame = view.astype(np.int16) + grain[index % len(grain)] if grain else view.copy()
        bx = int((width - box_w) * (0.5 + 0.5 * np.sin(2 * np.pi * t / 3.0 + phase)))
        by = int((height - box_h) * (0.5 + 0.5 * np.cos(2 * np.pi * t / 5.0 + phase)))
        frame[by : by + box_h, bx : bx + box_w] = 255 - frame[by : by + box_h, bx : bx + box_w]
        yield np.clip(frame, 0, 255).astype(np.uint8) if grain else frame


def generate(spec: VideoSpec, path: Path) -> Path:
    """Encode ``spec`` to ``path`` (atomically: a ``.part`` file renamed when complete)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    options = {
        "preset": spec.preset,
        "crf": str(spec.crf),
        "x264-params": f"keyint={spec.gop}:min-keyint={spec.gop}:scenecut=0:log-level=error",
    }
    try:
        with av.open(os.fspath(partial), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=spec.fps, options=options)
            stream.width, stream.height = spec.width, spec.height
            stream.pix_fmt = "yuv420p"
            stream.codec_context.gop_size = spec.gop
            for image in frames_of(spec):
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(stream.encode(None))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def ensure(spec: VideoSpec, folder: Path, log=print) -> Path:
    """The cached file of ``spec`` in ``folder``, generated first if absent."""
    path = Path(folder) / spec.filename
    if not path.is_file():
        log(f"generating {path.name} ({spec.frames} frames) ...")
        generate(spec, path)
    return path


# ---- the sets the benchmark uses ---------------------------------------------------------


def small_set(seconds: float = 60, count: int = 4) -> list[VideoSpec]:
    """The targeted set: ``count`` different 320x240 videos."""
    return [VideoSpec(f"small{i}", 320, 240, seconds, seed=i) for i in range(count)]


def hd_videos(seconds: float = 20, count: int = 2) -> list[VideoSpec]:
    """The 1280x720 set: ``count`` videos of ``seconds``."""
    return [VideoSpec("hd", 1280, 720, seconds, seed=10 + i) for i in range(count)]


def long_video(seconds: float = 120) -> VideoSpec:
    """One long 320x240 video, for one video spread over the workers."""
    return VideoSpec("long", 320, 240, seconds, seed=40)


def tiny_video() -> VideoSpec:
    """A one-clip video: 17 frames of 320x240 at 15 fps, of which 16 make its clip."""
    return VideoSpec("tiny", 320, 240, 17 / 15, fps=15, seed=1000, preset="ultrafast", grain=False)


def tiny_copies(count: int, folder: Path, log=print) -> list[Path]:
    """``count`` separate files, each a copy of :func:`tiny_video` (generating thousands would take minutes)."""
    source = ensure(tiny_video(), folder, log)
    copies = Path(folder) / f"{source.stem}-copies"
    copies.mkdir(parents=True, exist_ok=True)
    paths = [copies / f"{i:05d}.mp4" for i in range(count)]
    for path in paths:
        if not path.is_file():
            partial = path.with_name(path.name + ".part")
            shutil.copyfile(source, partial)
            os.replace(partial, path)
    return paths


def memory_pair(short_seconds: float = 60, long_seconds: float = 600) -> tuple[VideoSpec, VideoSpec]:
    """Two videos that differ only in length, cheap to make (no grain, preset ultrafast)."""
    make = lambda name, seconds: VideoSpec(name, 320, 240, seconds, preset="ultrafast", seed=20, grain=False)  # noqa: E731
    return make("mem-short", short_seconds), make("mem-long", long_seconds)


def startup_videos(count: int = 1) -> list[VideoSpec]:
    """Nine frames each, shorter than one clip: a run on them is start-up and shutdown only, no clip.

    Give as many as the measured run has videos, up to its worker count, so that the same
    number of decoding workers start.
    """
    return [VideoSpec(f"startup{i}", 320, 240, 0.3, seed=30 + i) for i in range(count)]
