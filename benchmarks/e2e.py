"""End-to-end CPU extraction against the network alone on the same number and shape of batches.

End to end: ``tsp extract VIDEO -o DIR --local CKPT --backbone B --stride S --batch-size N
--workers W --device cpu``, timed from outside, less its start-up (the same command on a video
shorter than one clip: imports, checkpoint hashing and loading, worker start, no clip).

The network alone: a fresh process (so the same default torch thread settings as the CLI's main
process) loads the same checkpoint the same way (``tsp_cli.models.loading.load_backbone``), makes
random batches of exactly the sizes the run fed (full batches and the remainder) before the
clock starts, and times the forward passes under ``torch.inference_mode()`` as the engine runs
them, with no warm-up pass (the extraction has none either).

Run ``python -m benchmarks.e2e --checkpoint CKPT --backbone r3d_18 --clips 64 --batch-size 32``
to get the network-alone figure as JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from tsp_cli.models import synthetic


def write_checkpoint(path: Path, backbone: str, *, seed: int = 0) -> Path:
    """A seeded checkpoint laid out like a released TSP one, made once and kept for later runs."""
    path = Path(path)
    return path if path.is_file() else synthetic.write_checkpoint(path, backbone, seed=seed)


def stride_for_clips(resampled_frames: int, clip_len: int, target: int) -> int:
    """The stride that gives at least (and as close as possible to) ``target`` clips."""
    if target <= 1:
        return max(1, resampled_frames)
    return max(1, (resampled_frames - clip_len) // (target - 1))


def batch_sizes(clips: int, batch_size: int) -> list[int]:
    return [batch_size] * (clips // batch_size) + ([clips % batch_size] if clips % batch_size else [])


def model_alone(checkpoint: Path, backbone: str, clips: int, batch_size: int, clip_len: int = 16) -> dict:
    """Time the forward passes of ``clips`` random clips in batches of ``batch_size`` (this process)."""
    from tsp_cli.models.loading import load_backbone

    model, _ = load_backbone(Path(checkpoint), backbone)
    model = model.to("cpu")
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randn(n, 3, clip_len, 112, 112, generator=generator) for n in batch_sizes(clips, batch_size)]
    cpu_before = time.process_time()
    started = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            model(batch).float().cpu().numpy()
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "clips": clips,
        "batches": len(batches),
        "threads": torch.get_num_threads(),
    }


def model_alone_subprocess(checkpoint: Path, backbone: str, clips: int, batch_size: int, repeats: int = 1) -> dict:
    """:func:`model_alone` in a fresh interpreter, as the CLI runs; with ``repeats``, the fastest of that
    many runs in it (all but the first warm, like the later rounds of an in-process benchmark)."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.e2e",
        "--checkpoint",
        str(checkpoint),
        "--backbone",
        backbone,
        "--clips",
        str(clips),
        "--batch-size",
        str(batch_size),
        "--repeat",
        str(repeats),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=Path(__file__).resolve().parents[1])
    if done.returncode != 0:
        raise RuntimeError(f"network-alone run failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--backbone", default="r3d_18")
    parser.add_argument("--clips", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=1, help="runs in this interpreter; the fastest is printed")
    options = parser.parse_args()
    runs = [
        model_alone(options.checkpoint, options.backbone, options.clips, options.batch_size)
        for _ in range(options.repeat)
    ]
    print(json.dumps(min(runs, key=lambda run: run["seconds"])))


if __name__ == "__main__":
    main()
