"""Choosing the device the network runs on, and refusing one that is not there before any work."""

from __future__ import annotations

import torch

from tsp_cli.errors import DeviceError


def default_device() -> torch.device:
    """CUDA when available, else Apple's MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(spec: str | None) -> torch.device:
    """Parse ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` and check that it exists on this machine."""
    if spec is None or spec == "auto":
        return default_device()
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise _refused(repr(spec), spec, "is not a device", "use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise _refused(spec, spec, "asks for CUDA, but no CUDA GPU is available here", "use `device` cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            reason = f"does not exist: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
            raise _refused(spec, spec, reason)
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise _refused(spec, spec, "asks for Apple MPS, which is not available here", "use `device` cpu")
    elif device.type != "cpu":
        raise _refused(repr(spec), spec, "is not supported", "use cpu, cuda, cuda:N or mps")
    return device


def _refused(shown: str, spec: str, reason: str, advice: str | None = None) -> DeviceError:
    """One sentence naming the device as ``shown`` (quoted when it is not a device at all), its ``reason`` and ``advice``."""
    message = f"`device` {shown} {reason}" + (f"; {advice}." if advice else ".")
    return DeviceError(message, device=spec, reason=reason)
