"""Numeric precision of the network: autocast dtypes and TF32 switches, set for one run only.

PyTorch lets cuDNN run float32 convolutions on TF32 tensor cores by default (a 10-bit mantissa
on Ampere and newer GPUs), so "float32" is not float32 unless TF32 is switched off. ``fp32``
switches it off for convolutions and matmuls, ``tf32`` switches it on as an explicit speed
option, and ``fp16``/``bf16`` autocast (their float32 leftovers run in full float32). The
switches are process-wide, so :func:`float32_math` restores the previous ones when the run ends:
a user of the Python API keeps the settings they had.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

#: Each ``--precision``: the autocast dtype (``None``: no autocast) and how float32 ops run.
PRECISIONS: dict[str, tuple[torch.dtype | None, str]] = {
    "fp32": (None, "ieee"),
    "tf32": (None, "tf32"),
    "fp16": (torch.float16, "ieee"),
    "bf16": (torch.bfloat16, "ieee"),
}


def autocast_dtype(precision: str) -> torch.dtype | None:
    return PRECISIONS[precision][0]


def _switches() -> list[tuple[object, str, object, object]]:
    """``(owner, attribute, full-float32 value, TF32 value)`` for cuDNN convolutions and CUDA matmuls.

    Through the ``fp32_precision`` API where this torch has it (2.9 and later; mixing it with the
    legacy ``allow_tf32`` flags makes torch raise), else through ``allow_tf32``.
    """
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    conv = getattr(cudnn, "conv", None)
    if hasattr(conv, "fp32_precision"):
        return [(conv, "fp32_precision", "ieee", "tf32"), (matmul, "fp32_precision", "ieee", "tf32")]
    return [(cudnn, "allow_tf32", False, True), (matmul, "allow_tf32", False, True)]  # pragma: no cover - torch < 2.9


@contextmanager
def float32_math(precision: str) -> Iterator[None]:
    """Run the block with float32 convolutions and matmuls as ``precision`` asks; restore them after."""
    tf32 = PRECISIONS[precision][1] == "tf32"
    switches = _switches()
    before = [getattr(owner, attribute) for owner, attribute, _, _ in switches]
    for owner, attribute, full, fast in switches:
        setattr(owner, attribute, fast if tf32 else full)
    try:
        yield
    finally:
        for (owner, attribute, _, _), value in zip(switches, before, strict=True):
            setattr(owner, attribute, value)
