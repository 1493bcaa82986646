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


#: How far each precision's features may lie from full float32's, as the parity error (the largest
#: difference over the largest spread of a feature around its mean over the clips; see
#: tests/test_parity.py). fp32 is the reference's own tolerance (measured 5e-6 to 2e-5 on the
#: parity videos, either memory format). bf16 keeps 8 bits of mantissa: measured 0.07 to 0.35 on
#: the parity videos (0.26% of the largest feature, cosine to fp32 above 0.99999), whose clips
#: vary little, so the error is large against their spread; bounded at 0.5. fp16 and TF32 keep 10
#: bits, 8 times finer: bounded at 0.1, not measured yet (no GPU so far); tests/test_gpu.py checks
#: them on the first GPU. ``tsp doctor`` checks the chosen precision against its bound.
DEVIATION_BOUNDS: dict[str, float] = {"fp32": 1e-4, "tf32": 0.1, "fp16": 0.1, "bf16": 0.5}


def autocast_dtype(precision: str) -> torch.dtype | None:
    return PRECISIONS[precision][0]


def uses_tf32(precision: str) -> bool:
    """Whether ``precision`` lets float32 convolutions and matmuls run on TF32 tensor cores."""
    return PRECISIONS[precision][1] == "tf32"


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
    tf32 = uses_tf32(precision)
    switches = _switches()
    before = [getattr(owner, attribute) for owner, attribute, _, _ in switches]
    for owner, attribute, full, fast in switches:
        setattr(owner, attribute, fast if tf32 else full)
    try:
        yield
    finally:
        for (owner, attribute, _, _), value in zip(switches, before, strict=True):
            setattr(owner, attribute, value)


def float32_math_state() -> dict[str, str]:
    """How float32 convolutions and matmuls run now: ``{"convolutions": "ieee" or "tf32", "matmuls": …}``."""
    names = ("convolutions", "matmuls")
    state = {}
    for name, (owner, attribute, full, _) in zip(names, _switches(), strict=True):
        state[name] = "ieee" if getattr(owner, attribute) == full else "tf32"
    return state
