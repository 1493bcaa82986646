"""Choosing the device the network runs on, and refusing one that is not there before any work.

:func:`refuse_absent_device` answers the mistakes it can see without torch (two seconds to import),
so that ``tsp extract --device cuda`` on a machine without a GPU is refused at once;
:func:`resolve_device` then asks torch itself.
"""

from __future__ import annotations

import glob
import os
import re
import sys
from typing import TYPE_CHECKING

from tsp_cli.errors import DeviceError

if TYPE_CHECKING:
    import torch

#: The device files a CUDA GPU needs: NVIDIA's driver, WSL's GPU bridge, or ROCm (whose torch says "cuda" too).
_GPU_DEVICE_FILES = ("/dev/nvidia*", "/dev/dxg", "/dev/kfd")
_CUDA_SPEC = re.compile(r"^cuda(:\d+)?$")


def _no_cuda(spec: str) -> DeviceError:
    return DeviceError(
        f"`device` {spec} asks for CUDA, but no CUDA GPU is available here; use `device` cpu.", device=spec
    )


def _no_mps(spec: str) -> DeviceError:
    return DeviceError(
        f"`device` {spec} asks for Apple MPS, which is not available here; use `device` cpu.", device=spec
    )


def refuse_absent_device(spec: str | None) -> None:
    """Refuse, without importing torch, a device that cannot exist here: CUDA where no GPU driver
    is installed (Linux), MPS off macOS. Whatever this lets through, :func:`resolve_device` checks."""
    if spec is None:
        return
    spec = spec.strip()
    if _CUDA_SPEC.match(spec) and sys.platform.startswith("linux"):
        if not any(glob.glob(pattern) for pattern in _GPU_DEVICE_FILES) and not os.path.exists("/proc/driver/nvidia"):
            raise _no_cuda(spec)
    if spec == "mps" and sys.platform != "darwin":
        raise _no_mps(spec)


def default_device() -> torch.device:
    """CUDA when available, else Apple's MPS, else the CPU."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(spec: str | None) -> torch.device:
    """Parse ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` and check that it exists on this machine."""
    import torch

    if spec is None or spec == "auto":
        return default_device()
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise DeviceError(f"`device` {spec!r} is not a device; use cpu, cuda, cuda:N or mps.", device=spec) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise _no_cuda(spec)
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(
                f"`device` {spec} does not exist: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}.",
                device=spec,
            )
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise _no_mps(spec)
    elif device.type != "cpu":
        raise DeviceError(f"`device` {spec!r} is not supported; use cpu, cuda, cuda:N or mps.", device=spec)
    return device
