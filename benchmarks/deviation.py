"""How far each ``--precision`` moves the features from the reference's, on the parity videos.

    python -m benchmarks.deviation --precisions fp32,bf16 [--device cpu] [--parity ../shared/parity]

For every fixture of tests/test_parity.py, ``tsp extract`` runs with each precision on the
seeded checkpoints behind the reference features, and the parity error (the largest difference
over the largest deviation of a feature from its mean over the clips) is printed against the
precision's bound (``tsp_cli.pipeline.precision.DEVIATION_BOUNDS``). Prints one JSON line per
fixture and precision, then the largest error per precision.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from tsp_cli.doctor.known_answer import parity_error
from tsp_cli.pipeline.extraction import extract_features
from tsp_cli.pipeline.precision import DEVIATION_BOUNDS, PRECISIONS

#: (backbone, stride, videos): the reference files of the parity folder (as tests/test_parity.py).
FIXTURES = [
    ("r3d_18", 16, ["cfr30_a", "cfr30_b"]),
    ("r3d_18", 4, ["cfr30_b"]),
    ("r2plus1d_34", 16, ["cfr25_c", "cfr30_a"]),
    ("r2plus1d_18", 2, ["cfr25_c"]),
]
PARITY_DIR = Path(__file__).resolve().parents[2] / "shared" / "parity"


def lowest_cosine(ours: np.ndarray, reference: np.ndarray) -> float:
    """The smallest cosine similarity between a clip's features and the reference's."""
    dot = (ours * reference).sum(axis=1)
    return float((dot / (np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1))).min())


def parity_checkpoint(parity: Path, backbone: str, folder: Path) -> Path:
    """The seeded checkpoint behind the reference features (``make_checkpoint.py --seed 7``)."""
    path = folder / f"{backbone}.pth"
    if not path.is_file():
        command = [sys.executable, str(parity / "make_checkpoint.py"), backbone, str(path), "--seed", "7"]
        subprocess.run(command, check=True, capture_output=True)
    return path


def measure(parity: Path, precisions: list[str], device: str, fixtures=FIXTURES) -> list[dict]:
    results = []
    with tempfile.TemporaryDirectory(prefix="tsp-deviation-") as scratch:
        folder = Path(scratch)
        for backbone, stride, videos in fixtures:
            checkpoint = parity_checkpoint(parity, backbone, folder)
            for precision in precisions:
                out = folder / f"{backbone}-s{stride}-{precision}"
                extract_features(
                    [parity / "videos" / f"{v}.mp4" for v in videos],
                    out,
                    checkpoint=checkpoint,
                    stride=stride,
                    device=device,
                    precision=precision,
                    workers=1,
                    batch_size=8,
                )
                for video in videos:
                    reference = np.load(parity / "reference" / f"{backbone}-s{stride}" / f"{video}.npy")
                    ours = np.load(out / f"{video}.npy")
                    row = {"backbone": backbone, "stride": stride, "video": video, "precision": precision}
                    row.update(
                        error=parity_error(ours, reference),
                        bound=DEVIATION_BOUNDS[precision],
                        of_largest=float(np.abs(ours - reference).max() / np.abs(reference).max()),
                        lowest_cosine=lowest_cosine(ours, reference),
                    )
                    results.append(row)
                    print(json.dumps(results[-1]), flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.deviation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--precisions", default="fp32,bf16", help=f"comma-separated, of {', '.join(PRECISIONS)}")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--parity", type=Path, default=PARITY_DIR)
    options = parser.parse_args(argv)
    precisions = [p for p in options.precisions.split(",") if p]
    results = measure(options.parity, precisions, options.device)
    for precision in precisions:
        worst = max(r["error"] for r in results if r["precision"] == precision)
        verdict = "within" if worst <= DEVIATION_BOUNDS[precision] else "OUTSIDE"
        print(f"{precision}: largest parity error {worst:.2e}, {verdict} its bound {DEVIATION_BOUNDS[precision]:g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
