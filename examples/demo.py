"""``make demo``: the whole job end to end on a small sample this script generates.

It makes three short videos, gets the default released checkpoint (or, where it cannot be
downloaded, says so and uses untrained weights, clearly labelled), then runs the same
commands a user would: ``tsp metadata``, ``tsp extract``, ``tsp merge`` and ``tsp inspect``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.videos import make_video  # noqa: E402
from tsp_cli.models.registry import DEFAULT_CHECKPOINT  # noqa: E402
from tsp_cli.models.synthetic import write_checkpoint  # noqa: E402  (seeded weights, no download)

DEMO = REPO / "demo-out"


def tsp(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "tsp_cli", *args]
    print("$ tsp " + " ".join(args), flush=True)
    return subprocess.run(command, check=check)


def main() -> None:
    shutil.rmtree(DEMO, ignore_errors=True)
    videos = DEMO / "videos"
    make_video(videos / "walk.mp4", frames=90, fps=30, size=(160, 120))
    make_video(videos / "jump.mkv", frames=75, fps=25, size=(160, 120))
    make_video(videos / "blink.mp4", frames=20, fps=30, size=(160, 120))  # shorter than one clip
    tsp("metadata", str(videos), "-o", str(DEMO / "metadata.csv"))

    download = tsp("models", "download", DEFAULT_CHECKPOINT, check=False)
    if download.returncode == 0:
        weights = ["--checkpoint", DEFAULT_CHECKPOINT]
    else:
        print(
            f"\nThe released checkpoint {DEFAULT_CHECKPOINT} could not be downloaded here, so this demo runs the same "
            "pipeline with UNTRAINED (random) R(2+1)D-34 weights: the features below are not meaningful.\n",
            flush=True,
        )
        untrained = write_checkpoint(DEMO / "untrained-r2plus1d_34.pth", "r2plus1d_34")
        weights = ["--local", str(untrained)]
    tsp("extract", str(videos), "-o", str(DEMO / "features"), *weights, "--device", "cpu", "--batch-size", "4")
    tsp("merge", str(DEMO / "features"), str(DEMO / "features.h5"), "--metadata", str(DEMO / "metadata.csv"))
    tsp("inspect", str(DEMO / "features.h5"))


if __name__ == "__main__":
    main()
