"""Reading TSP/TAC checkpoints safely and putting their backbone weights into a network.

Released checkpoints are ``torch.save``d dicts whose ``args`` entry is an ``argparse.Namespace``.
We load them with ``weights_only=True`` and allow that one class: unpickling anything else
could run code from the file.
"""

from __future__ import annotations

import argparse
import functools
import pickle
import pickletools
import warnings
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
#: What ``torch.save`` writes: a zip archive (since torch 1.6), or the legacy format, a pickle stream
#: that starts with this magic number.
_ZIP_HEADER = b"PK\x03\x04"
_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
#: Globals a checkpoint's pickle may name besides the allow-list: torch's own tensor rebuilders.
_SAFE_GLOBAL_PREFIXES = ("torch.", "collections.OrderedDict", "argparse.Namespace", "builtins.set")
_SHOWN_NAMES = 3


def _refuse_non_checkpoint(path: Path) -> None:
    """Say what ``path`` is when it is no checkpoint ``torch.load`` can read, before it tries.

    Recognised from the first bytes, never by running the file: a folder, an empty file, a zip
    archive cut short, a plain pickle (not written by ``torch.save``), or neither zip nor pickle.
    """
    if path.is_dir():
        raise CheckpointError(
            f"Checkpoint {path} is a folder; give the checkpoint file itself as `checkpoint`.", path=path
        )
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist; check the path given as `checkpoint`.", path=path)
    with open(path, "rb") as handle:
        head = handle.read(64)
    if not head:
        raise CheckpointError(f"Checkpoint {path} is empty; download or copy it again.", path=path)
    if head.startswith(_ZIP_HEADER):
        if not zipfile.is_zipfile(path):
            raise CheckpointError(
                f"Checkpoint {path} is cut short ({path.stat().st_size} bytes, its zip archive has no end); "
                "download or copy it again.",
                path=path,
            )
        return
    if head[:1] == b"\x80":  # a pickle stream's PROTO opcode
        if _first_pickled_value(path) != _LEGACY_MAGIC_NUMBER:
            raise CheckpointError(
                f"Checkpoint {path} is a plain Python pickle, not a checkpoint written by torch.save; "
                "save the network's weights with torch.save(model.state_dict(), path).",
                path=path,
            )
        return
    raise CheckpointError(
        f"Checkpoint {path} is not a PyTorch checkpoint (neither the zip archive nor the pickle torch.save writes); "
        "check the path given as `checkpoint`.",
        path=path,
    )


def _first_pickled_value(path: Path) -> object:
    """The integer the first pickle in ``path`` holds, read from its opcodes (nothing is unpickled); else ``None``."""
    with open(path, "rb") as handle:
        try:
            for opcode, argument, _ in pickletools.genops(handle):
                if opcode.name in ("LONG1", "LONG4", "BININT", "BININT1", "BININT2", "INT", "LONG"):
                    return argument
                if opcode.name not in ("PROTO", "FRAME"):
                    return None
        except (ValueError, EOFError):
            return None
    return None


def _pickled_globals(path: Path) -> list[str]:
    """The classes and functions a zip checkpoint's pickle names, read from its opcodes (nothing is unpickled)."""
    try:
        with zipfile.ZipFile(path) as archive:
            member = next((name for name in archive.namelist() if name.endswith("data.pkl")), None)
            data = archive.read(member) if member else b""
    except (OSError, zipfile.BadZipFile):
        return []
    names: list[str] = []
    strings: list[str] = []
    try:
        for opcode, argument, _ in pickletools.genops(data):
            if opcode.name == "GLOBAL":
                names.append(str(argument).replace(" ", "."))
            elif "UNICODE" in opcode.name:
                strings.append(str(argument))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
    except (ValueError, EOFError):
        pass
    return list(dict.fromkeys(names))


def _load(path: Path) -> Any:
    """``torch.load`` with ``weights_only=True`` and the one-class allow-list; each failure said in one sentence."""
    _refuse_non_checkpoint(path)
    try:
        with torch.serialization.safe_globals(ALLOWED_GLOBALS), warnings.catch_warnings():
            # torch warns about pickle protocols it did not write; the outcome is what matters here
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        foreign = [name for name in _pickled_globals(path) if not name.startswith(_SAFE_GLOBAL_PREFIXES)]
        named = f" ({', '.join(foreign[:_SHOWN_NAMES])})" if foreign else ""
        raise CheckpointError(
            f"Checkpoint {path} holds Python objects other than tensors{named}, which are never loaded because "
            "unpickling them could run code; if you trust its source, save just its tensors to a new file "
            "(torch.save(state_dict, path)) and give that one.",
            path=path,
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError):
        raise CheckpointError(
            f"Checkpoint {path} is damaged or cut short ({path.stat().st_size} bytes) and cannot be read; "
            "download or copy it again.",
            path=path,
        ) from None


def read_backbone_state(path: Path) -> dict[str, torch.Tensor]:
    """The backbone tensors of a checkpoint, keyed as in the network (``stem.0.weight``, ...).

    Accepts the released layout (``{"model": {"features.…": …, "fc1.…": …}, …}``) and plain
    state dicts with or without the ``features.`` prefix; classifier heads are dropped.
    """
    path = Path(path)
    content = _load(path)
    state = content.get("model", content) if isinstance(content, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        what = f"a {type(content).__name__}" if not isinstance(content, dict) else _describe_keys(content)
        raise CheckpointError(
            f"Checkpoint {path} holds no state dict of tensors ({what}); give a file saved from a TSP/TAC network, "
            "such as torch.save(model.state_dict(), path).",
            path=path,
        )
    if any(key.startswith(_BACKBONE_PREFIX) for key in state):
        return {key[len(_BACKBONE_PREFIX) :]: value for key, value in state.items() if key.startswith(_BACKBONE_PREFIX)}
    return {key: value for key, value in state.items() if not key.startswith(_HEAD_PREFIXES)}


def _describe_keys(content: dict) -> str:
    keys = [repr(key) for key in list(content)[:_SHOWN_NAMES]]
    more = ", …" if len(content) > _SHOWN_NAMES else ""
    return f"a dict of {', '.join(keys)}{more}" if keys else "an empty dict"


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


def _tensors(number: int) -> str:
    return "tensor" if number == 1 else "tensors"


def _shape(tensor: torch.Tensor) -> str:
    return "×".join(map(str, tensor.shape)) or "scalar"


def state_mismatch(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> str | None:
    """How ``state`` differs from the network's ``expected`` state dict, by names and shapes; ``None`` if it fits."""
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    reshaped = [key for key in expected if key in state and state[key].shape != expected[key].shape]
    parts = []
    if missing:
        parts.append(f"{len(missing)} of its tensors missing (such as {missing[0]!r})")
    if unexpected:
        parts.append(f"{len(unexpected)} extra {_tensors(len(unexpected))} (such as {unexpected[0]!r})")
    if reshaped:
        key = reshaped[0]
        parts.append(
            f"{len(reshaped)} {_tensors(len(reshaped))} of another shape "
            f"(such as {key!r}: {_shape(state[key])}, not {_shape(expected[key])})"
        )
    return "; ".join(parts) or None


def load_backbone(path: Path, backbone: str | None = None) -> tuple[nn.Module, str]:
    """Build the checkpoint's backbone, load its weights, and return it in eval mode with its name.

    ``backbone`` may be left out: it is then detected from the tensors. When it is given and
    the tensors belong to another backbone, the error names the one they do belong to. Names and
    shapes are compared with the network's before loading, so the error says what differs.
    """
    path = Path(path)
    state = read_backbone_state(path)
    detected = detect_backbone(state)
    if backbone is None:
        if detected is None:
            raise CheckpointError(_undetected(path, state), path=path)
        backbone = detected
    elif detected is not None and detected != backbone:
        raise CheckpointError(
            f"Checkpoint {path} holds a {detected} backbone, not {backbone}; "
            f"pass `backbone` {detected} or leave it out.",
            path=path,
        )
    model = build_backbone(backbone)
    mismatch = state_mismatch(state, model.state_dict())
    if mismatch is not None:
        raise CheckpointError(
            f"Checkpoint {path} does not fit the {backbone} backbone: {mismatch}; check `backbone`, or the file.",
            path=path,
        )
    model.load_state_dict(state, strict=True)
    return model.eval(), backbone


def _undetected(path: Path, state: dict[str, torch.Tensor]) -> str:
    """Why no backbone was recognised: another network's weights, or a stem of an unknown shape."""
    shared = max(len(_backbone_keys(name) & state.keys()) for name in BACKBONES)
    if shared < len(state) / 2:  # a ResNet shares a few names (downsample layers), not most of them
        example = next(iter(state))
        return (
            f"Checkpoint {path} holds the weights of another network: most of its {len(state)} tensors "
            f"(such as {example!r}) are not those of {', '.join(BACKBONES)}; give a TSP/TAC checkpoint."
        )
    return f"Cannot tell which backbone {path} holds; pass `backbone` ({', '.join(BACKBONES)})."


@functools.cache
def _backbone_keys(name: str) -> frozenset[str]:
    with torch.device("meta"):  # names only: no memory for the weights
        return frozenset(build_backbone(name).state_dict())
