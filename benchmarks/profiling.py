"""cProfile of the engine on one video: where a decoding worker's (or the whole engine's) time goes.

``python -m benchmarks.profiling VIDEO [--stride 16] [--top 25] [--sort cumulative|tottime]``
runs ``tsp_cli.pipeline.clipper.video_messages`` over the whole video in this process (one torch thread,
as in a decoding worker), consuming its messages as the DataLoader would, and prints the
functions with the most cumulative (or own) time. ``--pickle-messages`` also pickles every
message, which is roughly what sending it to the main process costs on top.

``--engine`` profiles ``tsp_cli.pipeline.batcher.run_jobs`` as a dry run with ``workers=0`` instead: the
decoding side and the main process's side (frame bookkeeping, clip and batch assembly) in one
process, so the main process's share shows too. Each mode runs once unprofiled first (warm
caches), then once timed without the profiler, then once profiled.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pickle
import pstats
import tempfile
import time
from pathlib import Path

import torch

from tsp_cli.pipeline.clipper import video_messages
from tsp_cli.pipeline.inputs import VideoJob
from tsp_cli.pipeline.sampling import ClipSettings


def consume(path: Path, stride: int, clips_per_chunk: int = 8, pickle_messages: bool = False) -> int:
    messages = 0
    for message in video_messages(
        0, VideoJob(Path(path), Path(path).stem), ClipSettings(stride=stride), clips_per_chunk=clips_per_chunk
    ):
        if pickle_messages:
            pickle.dumps(message)
        messages += 1
    return messages


def engine_dry_run(path: Path, stride: int) -> int:
    from tsp_cli.pipeline.batcher import run_jobs

    with tempfile.TemporaryDirectory(prefix="tsp-profile-") as out_dir:
        return run_jobs(
            [VideoJob(Path(path), Path(path).stem)], Path(out_dir), None, ClipSettings(stride=stride), workers=0
        ).clips


def profile(
    path: Path,
    stride: int,
    *,
    top: int = 25,
    sort: str = "cumulative",
    pickle_messages: bool = False,
    engine: bool = False,
) -> str:
    """The profile report (a string) of one pass of ``video_messages`` (or ``run_jobs``) over ``path``."""
    torch.set_num_threads(1)
    work = (
        (lambda: engine_dry_run(path, stride))
        if engine
        else (lambda: consume(path, stride, pickle_messages=pickle_messages))
    )
    work()  # warm caches and lazy imports first
    started = time.perf_counter()
    work()
    plain = time.perf_counter() - started
    profiler = cProfile.Profile()
    profiler.enable()
    work()
    profiler.disable()
    text = io.StringIO()
    what = "run_jobs dry run, workers=0" if engine else "video_messages"
    print(f"{path.name}, stride {stride}, {what}: {plain:.2f} s without the profiler", file=text)
    pstats.Stats(profiler, stream=text).sort_stats(sort).print_stats(top)
    return text.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("video", type=Path)
    parser.add_argument("--stride", type=int, default=16)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--sort", default="cumulative", choices=["cumulative", "tottime"])
    parser.add_argument("--pickle-messages", action="store_true")
    parser.add_argument(
        "--engine", action="store_true", help="profile run_jobs (dry run, workers=0): both sides of the engine"
    )
    options = parser.parse_args()
    print(
        profile(
            options.video,
            options.stride,
            top=options.top,
            sort=options.sort,
            pickle_messages=options.pickle_messages,
            engine=options.engine,
        )
    )


if __name__ == "__main__":
    main()
