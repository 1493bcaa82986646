"""Reading TSP/TAC checkpoints safely and putting their backbone weights into a network.

Released checkpoints are ``torch.save``d dicts whose ``args`` entry is an ``argparse.Namespace``.
We load them with ``weights_only=True`` and allow that one class: unpickling anything else
could run code from the file.
"""

from __future__ import annotations

import argparse
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tsp_cli.errors import CheckpointError
from tsp_cli.models.backbones import BACKBONES, build_backbone

#: The only non-tensor class a checkpoint may contain.
ALLOWED_GLOBALS: list[Any] = [argparse.Namespace]
_BACKBONE_PREFIX = "features."
_HEAD_PREFIXES = ("fc.", "fc1.", "fc2.")


def read_backbone_state(path: Path) -> dict[str, torch.Tensor]:
    """The backbone tensors of a checkpoint, keyed as in the network (``stem.0.weight``, ...).

    Accepts the released layout (``{"model": {"features.…": …, "fc1.…": …}, …}``) and plain
    state dicts with or without the ``features.`` prefix; classifier heads are dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist; check the path given to --local.")
    try:
        with torch.serialization.safe_globals(ALLOWED_GLOBALS):
            content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else "unsupported content"
        raise CheckpointError(
            f"Checkpoint {path} holds objects other than tensors and cannot be loaded safely ({first_line})."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        reason = " ".join(str(error).split())[:160] or (
            "the file is empty" if path.stat().st_size == 0 else type(error).__name__
        )
        raise CheckpointError(f"Checkpoint {path} cannot be read ({reason}); is it a truncated download?") from None
    state = content.get("model", content) if isinstance(content, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"Checkpoint {path} holds no state dict (expected a 'model' entry of tensors).")
    if any(key.startswith(_BACKBONE_PREFIX) for key in state):
        return {key[len(_BACKBONE_PREFIX) :]: value for key, value in state.items() if key.startswith(_BACKBONE_PREFIX)}
    return {key: value for key, value in state.items() if not key.startswith(_HEAD_PREFIXES)}


def detect_backbone(state: dict[str, torch.Tensor]) -> str | None:
    """Which of the three backbones these tensors belong to, from the stem and the depth of layer3."""
    stem = state.get("stem.0.weight")
    if stem is None or stem.dim() != 5:
        return None
    if tuple(stem.shape) == (64, 3, 3, 7, 7):
        return "r3d_18"
    if tuple(stem.shape) == (45, 3, 1, 7, 7):
        return "r2plus1d_34" if "layer3.5.conv1.0.0.weight" in state else "r2plus1d_18"
    return None


def load_backbone(path: Path, backbone: str | None = None) -> tuple[nn.Module, str]:
    """Build the checkpoint's backbone, load its weights, and return it in eval mode with its name.

    ``backbone`` may be left out: it is then detected from the tensors. When it is given and
    the tensors belong to another backbone, the error names the one they do belong to.
    """
    path = Path(path)
    state = read_backbone_state(path)
    detected = detect_backbone(state)
    if backbone is None:
        if detected is None:
            raise CheckpointError(f"Cannot tell which backbone {path} holds; pass --backbone ({', '.join(BACKBONES)}).")
        backbone = detected
    elif detected is not None and detected != backbone:
        raise CheckpointError(
            f"Checkpoint {path} holds a {detected} backbone, not {backbone}; pass --backbone {detected} or leave it out."
        )
    model = build_backbone(backbone)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        missing = sum(
            1
            for line in str(error).splitlines()
            if "Missing" in line or "Unexpected" in line or "size mismatch" in line
        )
        raise CheckpointError(
            f"Checkpoint {path} does not fit the {backbone} backbone ({missing or 'some'} kinds of mismatched tensors); "
            "check --backbone."
        ) from None
    return model.eval(), backbone
