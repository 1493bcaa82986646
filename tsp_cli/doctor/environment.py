"""What this machine runs tsp with: library versions, the device, TF32 as ``--precision`` sets it, CPU flags.

These are the facts a bug report about features or speed needs first: the FFmpeg build decides
the decoded pixels, torch/cuDNN and TF32 decide the arithmetic, and the CPU flags say whether
bf16 has hardware behind it (AVX512-BF16 instructions, AMX-BF16 tiles) or is emulated.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch

from tsp_cli import __version__
from tsp_cli.parallel import available_cores
from tsp_cli.pipeline.host_memory import allocator_state
from tsp_cli.pipeline.precision import float32_math, float32_math_state

#: The /proc/cpuinfo flags that decide how fast the network runs on a CPU, with what they mean.
CPU_FLAGS = {
    "avx2": "AVX2",
    "avx512f": "AVX-512",
    "avx512_bf16": "AVX512-BF16 (bf16 dot products)",
    "amx_bf16": "AMX-BF16 (bf16 matrix tiles)",
    "avx512_fp16": "AVX512-FP16",
}


def versions() -> dict[str, str]:
    """tsp, Python, torch (with its CUDA and cuDNN), torchvision, PyAV and its FFmpeg libraries, h5py, numpy."""
    import av
    import h5py
    import numpy
    import torchvision

    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    libraries = getattr(av, "library_versions", {})
    ffmpeg = ", ".join(f"{name} {'.'.join(map(str, version))}" for name, version in sorted(libraries.items()))
    return {
        "tsp": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none (CPU build)",
        "cudnn": str(cudnn) if cudnn else "none",
        "torchvision": torchvision.__version__,
        "av": av.__version__,
        "ffmpeg": str(getattr(av, "ffmpeg_version_info", "unknown")),
        "ffmpeg_libraries": ffmpeg or "unknown",
        "h5py": h5py.__version__,
        "numpy": numpy.__version__,
    }


def _cpuinfo_field(name: str) -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_flags() -> dict[str, bool | None]:
    """Each flag of :data:`CPU_FLAGS`: present or not; ``None`` for all where /proc/cpuinfo is absent (macOS)."""
    flags = set(_cpuinfo_field("flags").split())
    if not flags:
        return dict.fromkeys(CPU_FLAGS)
    return {flag: flag in flags for flag in CPU_FLAGS}


def _memory_gib() -> float | None:
    try:
        return round(int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024, 1)
    except (OSError, IndexError, ValueError):
        return None


def device_facts(device: torch.device) -> dict[str, Any]:
    """The device's name, memory and, on CUDA, compute capability; the CPU's model and cores always."""
    facts: dict[str, Any] = {
        "device": str(device),
        "cpu": _cpuinfo_field("model name") or platform.processor() or "unknown",
        "cores_available": available_cores(),
        "torch_threads": torch.get_num_threads(),
        "cpu_kernels": torch.backends.cpu.get_cpu_capability(),
        "memory_gib": _memory_gib(),
        "freed_memory": allocator_state(),
    }
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        properties = torch.cuda.get_device_properties(index)
        facts.update(
            name=properties.name,
            memory_gib=round(properties.total_memory / 2**30, 1),
            compute_capability=f"{properties.major}.{properties.minor}",
            gpus=torch.cuda.device_count(),
        )
    elif device.type == "mps":
        facts["name"] = "Apple MPS"
    else:
        facts["name"] = facts["cpu"]
    return facts


def tf32_state(precision: str) -> dict[str, str]:
    """How float32 convolutions and matmuls will run under ``precision``: set, read back and restored."""
    with float32_math(precision):
        return float32_math_state()
