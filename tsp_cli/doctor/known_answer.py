"""The known-answer check: a small shipped video, and the features a seeded checkpoint gives for it.

The answer was made once on a CPU at fp32 with the parity-tested pipeline
(``python -m benchmarks.make_known_answer``); here the same video is extracted with the real
pipeline (decoding workers, shared-memory hand-off, the device's blend, the network) on the
user's device and precision, and the parity error is compared with that precision's bound. It
is how a user learns that their FFmpeg build, GPU or torch reproduces the features.

The checkpoint is not shipped (125 MB): it is regenerated from a seed. Its values come from
PCG64's raw 64-bit stream, which NumPy guarantees stable across versions, rather than from
torch's or torchvision's initialisers, which may change between releases: a new torch must
change the answer only through its arithmetic.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tsp_cli.pipeline.precision import DEVIATION_BOUNDS

#: The shipped files, beside this module.
ASSET_PACKAGE = "tsp_cli.doctor"
ASSET_FOLDER = "assets"
ANSWER_FILE = "known-answer.json"


@dataclass(frozen=True)
class KnownAnswer:
    """The shipped video, its expected features and how they were made."""

    video: Path
    features: np.ndarray
    backbone: str
    seed: int
    stride: int
    clip_len: int
    frame_rate: float
    made_with: dict[str, str]


def parity_error(ours: np.ndarray, expected: np.ndarray) -> float:
    """The parity suite's error: the largest difference over the largest spread of a feature around its mean."""
    return float(np.abs(ours - expected).max() / np.abs(expected - expected.mean(axis=0)).max())


def _uniform(seed: int, index: int, count: int) -> np.ndarray:
    """``count`` floats in [0, 1) from PCG64's raw stream, which is fixed for a seed whatever the NumPy version."""
    bits = np.random.PCG64([seed, index]).random_raw(count)
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53


def seeded_state(backbone: str, seed: int) -> dict[str, torch.Tensor]:
    """The backbone's weights and BatchNorm statistics drawn from ``seed``, with realistic scales.

    Convolutions: He-uniform over their fan-in, so activations keep their size through the
    layers; BatchNorm: scales in [0.6, 1), shifts and means in [-0.1, 0.1), variances in
    [0.8, 1.6), so that loading the statistics matters.
    """
    from tsp_cli.models.backbones import build_backbone

    with torch.device("meta"):
        shapes = {name: tensor for name, tensor in build_backbone(backbone).state_dict().items()}
    state = {}
    for index, (name, tensor) in enumerate(shapes.items()):
        if tensor.dtype == torch.int64:  # num_batches_tracked
            state[name] = torch.zeros((), dtype=torch.int64)
            continue
        u = _uniform(seed, index, tensor.numel()).reshape(tensor.shape)
        kind = name.rsplit(".", 1)[-1]
        if tensor.dim() > 1:
            limit = (6.0 / (tensor[0].numel())) ** 0.5
            values = (2 * u - 1) * limit
        elif kind == "weight":
            values = 0.6 + 0.4 * u
        elif kind == "running_var":
            values = 0.8 + 0.8 * u
        else:  # bias, running_mean
            values = 0.2 * u - 0.1
        state[name] = torch.from_numpy(values.astype(np.float32))
    return state


def write_seeded_checkpoint(path: Path, backbone: str, seed: int) -> Path:
    """A plain state-dict checkpoint of :func:`seeded_state`, which ``tsp extract --local`` reads."""
    torch.save(seeded_state(backbone, seed), path)
    return path


def asset_folder() -> Path:
    """Where the package keeps the known answer (installed as package data)."""
    return Path(str(resources.files(ASSET_PACKAGE).joinpath(ASSET_FOLDER)))


def load_known_answer(folder: Path | None = None) -> KnownAnswer:
    """The shipped known answer (or the one in ``folder``, laid out the same way)."""
    folder = asset_folder() if folder is None else folder
    meta = json.loads((folder / ANSWER_FILE).read_text(encoding="utf-8"))
    return KnownAnswer(
        video=folder / meta["video"],
        features=np.load(folder / meta["features"], allow_pickle=False),
        backbone=meta["backbone"],
        seed=meta["seed"],
        stride=meta["stride"],
        clip_len=meta["clip_len"],
        frame_rate=meta["frame_rate"],
        made_with=meta["made_with"],
    )


#: Two clips a batch: the answer's four clips make two full batches, so on CUDA the memory-format
#: trial runs one in each layout (tsp_cli.pipeline.network) and both are checked.
BATCH_SIZE = 2


def extract_known_video(
    answer: KnownAnswer, checkpoint: Path, out_dir: Path, *, device: str, precision: str, workers: int = 1
) -> np.ndarray:
    """The video's features from the real pipeline (``extract_features``) with ``checkpoint``;
    ``answer.features`` is not used (the maker of the answer calls this too)."""
    from tsp_cli.pipeline.extraction import extract_features

    summary = extract_features(
        [answer.video],
        out_dir,
        checkpoint=checkpoint,
        backbone=answer.backbone,
        stride=answer.stride,
        clip_len=answer.clip_len,
        frame_rate=answer.frame_rate,
        device=device,
        precision=precision,
        workers=workers,
        batch_size=BATCH_SIZE,
    )
    if summary.failures:
        raise RuntimeError(summary.failures[0][1])
    return np.load(out_dir / f"{answer.video.stem}.npy")


def check_known_answer(
    device: str, precisions: list[str], *, folder: Path | None = None, workers: int = 1
) -> list[dict[str, Any]]:
    """For each precision: the parity error of this machine's features against the shipped answer, and its verdict."""
    try:
        answer = load_known_answer(folder)
    except (OSError, ValueError, KeyError) as error:
        problem = f"The known answer shipped with tsp cannot be read ({error}); reinstall tsp."
        return [
            {
                "precision": p,
                "bound": DEVIATION_BOUNDS[p],
                "error": None,
                "ok": False,
                "problem": problem,
                "seconds": 0.0,
                "clips": 0,
                "backbone": "",
                "video": "",
            }
            for p in precisions
        ]
    results = []
    with tempfile.TemporaryDirectory(prefix="tsp-doctor-") as scratch:
        checkpoint = write_seeded_checkpoint(Path(scratch) / "seeded.pth", answer.backbone, answer.seed)
        for precision in precisions:
            started = time.perf_counter()
            result: dict[str, Any] = {"precision": precision, "bound": DEVIATION_BOUNDS[precision]}
            try:
                ours = extract_known_video(
                    answer, checkpoint, Path(scratch) / precision, device=device, precision=precision, workers=workers
                )
            except RuntimeError as failure:
                result.update(error=None, ok=False, problem=str(failure))
            else:
                if ours.shape != answer.features.shape:
                    result.update(
                        error=None,
                        ok=False,
                        problem=f"{len(ours)} clips instead of {len(answer.features)}: the video decoded differently.",
                    )
                else:
                    deviation = parity_error(ours, answer.features)
                    result.update(error=deviation, ok=bool(deviation <= DEVIATION_BOUNDS[precision]))
            result.update(
                seconds=round(time.perf_counter() - started, 2),
                clips=len(answer.features),
                backbone=answer.backbone,
                video=answer.video.name,
            )
            results.append(result)
    return results
