"""The floor: every frame of every video decoded once with PyAV, nothing else.

No colour conversion, no transform, no clip logic: the least work any extractor that decodes
must do. Each process decodes with one FFmpeg thread, as ``tsp``'s workers do while they all
have work: PyAV's default (FFmpeg's slice threads, one per core) costs more CPU than it saves
when every core already decodes (measured on the four 60 s 320x240 videos with 2 processes:
0.84 s against 0.93 s, 3 rounds), so the floor is the cheaper setting. Videos are spread over
a pool of the same number of processes as the pipeline's decoding workers.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import time
from collections.abc import Sequence
from pathlib import Path

import av


def decode_all(path: Path | str) -> int:
    """Decode every frame of the first video stream of ``path``; returns how many."""
    count = 0
    with av.open(os.fspath(path), metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        for _ in container.decode(stream):
            count += 1
    return count


def decode_with_pixels(path: Path | str) -> int:
    """Decode every frame, and do the recipe's per-frame work on the frames the clips use.

    That work (swscale RGB24 without its own threads, the gather of the crop's taps, and their
    blend into float frames, in groups as ``tsp`` blends them on the CPU) is what exact features
    cost per used frame, whoever computes them; with it in the floor, what ``tsp`` spends beyond
    is its own cost (opening, probing, clip bookkeeping, messages, batching). The frames are
    counted first (a demux pass, then a rewind, as ``tsp`` probes) so that decoding can stream.
    """
    import torch

    from tsp_cli.pipeline.sampling import ClipSettings, clip_start_indices, resampled_indices
    from tsp_cli.pipeline.transform import CPU_BLEND_GROUP, blend_frames, taps_per_frame, transform_for

    settings = ClipSettings()
    with av.open(os.fspath(path), metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        count = sum(1 for packet in container.demux(stream) if packet.size > 0)
        container.seek(0)
        stream.codec_context.thread_count = 1
        fps = float(stream.average_rate)
        indices = resampled_indices(fps, count, settings.frame_rate)
        starts = set(clip_start_indices(fps, count, settings).tolist())
        first_positions = [k for k, index in enumerate(indices) if int(index) in starts]
        used = {int(indices[k + j]) for k in first_positions for j in range(settings.clip_len)}
        taps = torch.empty(CPU_BLEND_GROUP, taps_per_frame(settings.recipe), dtype=torch.uint8)
        sizes: list[tuple[int, int]] = []
        decoded = 0
        for index, frame in enumerate(container.decode(stream)):
            decoded += 1
            if index not in used:
                continue
            rgb = frame.to_ndarray(format="rgb24", threads=1)
            sizes.append((rgb.shape[0], rgb.shape[1]))
            transform_for(*sizes[-1], settings.recipe).gather(rgb, out=taps[len(sizes) - 1])
            if len(sizes) == CPU_BLEND_GROUP:
                blend_frames(taps, sizes, settings.recipe)
                sizes = []
        if sizes:
            blend_frames(taps[: len(sizes)], sizes, settings.recipe)
    return decoded


def _import_pixel_work() -> None:
    """Import torch and the transform before the pool forks, so no worker pays for it on the clock."""
    import tsp_cli.pipeline.sampling
    import tsp_cli.pipeline.transform  # noqa: F401


def _one_torch_thread() -> None:
    """Pool initializer: each decoding process does its pixel work on one thread, as tsp's workers do.

    Set in the children only: setting it in the benchmark's own process (as before) left every later
    part of ``make bench`` on one thread, which halved the network-alone rows measured after it.
    """
    import torch

    torch.set_num_threads(1)


def measure_floor(paths: Sequence[Path], processes: int, *, with_pixels: bool = False) -> tuple[float, int, float]:
    """Decode all ``paths`` with a pool of ``processes``: wall seconds (pool start excluded), frames, CPU seconds.

    CPU seconds are the pool processes' user + system time (they are reaped before it is read).
    ``with_pixels`` adds the recipe's per-frame work on the frames clips use (:func:`decode_with_pixels`).
    """
    processes = max(1, min(processes, len(paths)))
    if with_pixels:
        _import_pixel_work()
    context = multiprocessing.get_context("fork")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    pool = context.Pool(processes, initializer=_one_torch_thread if with_pixels else None)
    try:
        pool.map(int, range(processes))  # the workers are up before the clock starts
        started = time.perf_counter()
        work = decode_with_pixels if with_pixels else decode_all
        frames = sum(pool.imap_unordered(work, [os.fspath(p) for p in paths], chunksize=1))
        seconds = time.perf_counter() - started
        pool.close()
    finally:
        pool.terminate()
        pool.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, frames, cpu
