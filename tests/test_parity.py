"""Features equal the reference extractor's on every fixture of ../shared/parity (error < 1e-4).

The error is ``max|ours - ref| / max|ref - mean_over_clips(ref)|``: float32 batching noise
stays far below 1e-4, while one frame off or another resize scores above 1e-2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tsp_cli.pipeline.extraction import extract_features

pytestmark = pytest.mark.slow

#: (backbone, stride, videos): every reference file of ../shared/parity/reference
FIXTURES = [
    ("r3d_18", 16, ["cfr30_a", "cfr30_b"]),
    ("r3d_18", 4, ["cfr30_b"]),
    ("r2plus1d_34", 16, ["cfr25_c", "cfr30_a"]),
    ("r2plus1d_18", 2, ["cfr25_c"]),
]


def parity_error(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(ours - reference).max() / np.abs(reference - reference.mean(axis=0)).max())


@pytest.mark.parametrize("backbone,stride,videos", FIXTURES, ids=[f"{b}-s{s}" for b, s, _ in FIXTURES])
def test_features_match_the_reference(
    parity_dir: Path, parity_checkpoint, tmp_path: Path, backbone, stride, videos
) -> None:
    out = tmp_path / "out"
    summary = extract_features(
        [parity_dir / "videos" / f"{v}.mp4" for v in videos],
        out,
        checkpoint=parity_checkpoint(backbone),
        stride=stride,
        device="cpu",
        workers=2,
        batch_size=5,
    )
    assert summary.failed == 0 and summary.done == len(videos)
    for video in videos:
        reference = np.load(parity_dir / "reference" / f"{backbone}-s{stride}" / f"{video}.npy")
        ours = np.load(out / f"{video}.npy")
        assert ours.dtype == np.float32 and ours.shape == reference.shape
        assert parity_error(ours, reference) < 1e-4, f"{backbone} stride {stride} {video}"


def test_one_head_checkpoint_gives_the_same_features_with_metadata_csv(
    parity_dir: Path, parity_checkpoint, tmp_path: Path
) -> None:
    """TAC-style (one head) files load too, and --metadata's fps/frames give the same clips."""
    summary = extract_features(
        [parity_dir / "videos"],
        tmp_path / "out",
        checkpoint=parity_checkpoint("r3d_18", heads=1),
        metadata=parity_dir / "metadata.csv",
        stride=4,
        device="cpu",
        workers=0,
        batch_size=32,
    )
    assert summary.done == 3
    reference = np.load(parity_dir / "reference" / "r3d_18-s4" / "cfr30_b.npy")
    assert parity_error(np.load(tmp_path / "out" / "cfr30_b.npy"), reference) < 1e-4
