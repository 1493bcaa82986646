"""Make the known answer ``tsp doctor`` checks: a small video and its features, shipped in the package.

    python -m benchmarks.make_known_answer [--out tsp_cli/doctor/assets]

Run once, on a CPU, at fp32 (the parity-tested pipeline, whose features match the reference
extractor's within 1e-4): writes ``known-answer.mp4`` (64x48 H.264 at 25 fps, 70 frames: a
panning texture with a moving square, a frame-rate step of 25/15 that is not a whole number),
``known-answer.npy`` (4 clips x 512 at stride 8, R(2+1)D-18 with seeded weights) and
``known-answer.json`` (the settings, and the versions that made it). Re-run only when the
recipe changes on purpose; ``tsp doctor`` then compares every machine against the new answer.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.videos import VideoSpec, generate
from tsp_cli.doctor import environment
from tsp_cli.doctor.known_answer import ANSWER_FILE, KnownAnswer, extract_known_video, write_seeded_checkpoint

SPEC = VideoSpec("known-answer", 64, 48, 2.8, fps=25, gop=25, crf=30, grain=False, seed=18)
BACKBONE, SEED, STRIDE, CLIP_LEN, FRAME_RATE = "r2plus1d_18", 18, 8, 16, 15.0
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "tsp_cli" / "doctor" / "assets"


def make(out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tsp-known-answer-") as scratch:
        video = generate(SPEC, Path(scratch) / "known-answer.mp4")
        shutil.copyfile(video, out / "known-answer.mp4")
        answer = KnownAnswer(out / "known-answer.mp4", np.zeros(0), BACKBONE, SEED, STRIDE, CLIP_LEN, FRAME_RATE, {})
        checkpoint = write_seeded_checkpoint(Path(scratch) / "seeded.pth", BACKBONE, SEED)
        features = extract_known_video(answer, checkpoint, Path(scratch) / "out", device="cpu", precision="fp32")
    np.save(out / "known-answer.npy", features)
    versions = environment.versions()
    meta = {
        "video": "known-answer.mp4",
        "features": "known-answer.npy",
        "backbone": BACKBONE,
        "seed": SEED,
        "stride": STRIDE,
        "clip_len": CLIP_LEN,
        "frame_rate": FRAME_RATE,
        "made_with": {
            "device": "cpu",
            "precision": "fp32",
            **{k: versions[k] for k in ("tsp", "torch", "av", "ffmpeg")},
        },
    }
    (out / ANSWER_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.make_known_answer", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    options = parser.parse_args(argv)
    meta = make(options.out)
    sizes = {name: (options.out / name).stat().st_size for name in (meta["video"], meta["features"], ANSWER_FILE)}
    print(json.dumps({"written": str(options.out), "bytes": sizes}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
