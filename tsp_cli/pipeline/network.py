"""The network side of a run: the model prepared for its device, precision and memory format.

A :class:`Network` moves the model to its device, puts its weights in the memory format that
runs fastest there, hands out the batch buffer in that same layout (so the engine writes each
clip straight into it, and the first convolution does not copy the batch into another layout),
and turns a batch into float32 feature rows under the run's precision.

Memory format. ``channels_last_3d`` (N, T, H, W, C in memory) lets oneDNN on a CPU and cuDNN's
tensor-core kernels on a GPU run without reordering every activation; it changes only the order
of the sums, not the arithmetic (fp32 features move by ~1e-7 of their spread, the parity
tolerance is 1e-4). Measured on a 2-core AVX-512 CPU, batch 8, it is faster at every precision:
fp32 1.17-1.30x, bf16 2.0-2.4x (docs/performance.md). On CUDA the winner depends on the GPU,
cuDNN and precision, so ``auto`` measures: the first full batches run in each format (one
warm-up each, which ``cudnn.benchmark`` spends choosing algorithms, then one timed), and the
faster format is kept for the rest of the run, as ``cudnn.benchmark`` does for algorithms.
On Apple's MPS, where nothing has been measured, the model keeps PyTorch's default layout.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from tsp_cli.models.recipe import TSP_RECIPE
from tsp_cli.models.registry import FEATURE_DIM
from tsp_cli.pipeline.host_memory import keep_freed_memory
from tsp_cli.pipeline.precision import autocast_dtype, float32_math

#: The layouts a batch (and the model's weights) can have, by the name ``memory_format`` takes.
MEMORY_FORMATS: dict[str, torch.memory_format] = {
    "ncdhw": torch.contiguous_format,
    "channels_last_3d": torch.channels_last_3d,
}
#: The order the CUDA trial runs its batches in: a warm-up in each format, then a timed one in each.
TRIAL_ORDER = ("ncdhw", "channels_last_3d", "ncdhw", "channels_last_3d")


def default_memory_format(device: torch.device) -> str:
    """``channels_last_3d`` on the CPU (measured faster at every precision), ``ncdhw`` elsewhere;
    on CUDA, ``Network(memory_format="auto")`` measures instead of using this."""
    return "channels_last_3d" if device.type == "cpu" else "ncdhw"


def memory_format_of(batch: torch.Tensor) -> str:
    """The name of the layout ``batch`` (5-D) has: ``channels_last_3d`` or ``ncdhw``."""
    if batch.dim() == 5 and batch.is_contiguous(memory_format=torch.channels_last_3d) and not batch.is_contiguous():
        return "channels_last_3d"
    return "ncdhw"


def folded_batch_norms(model: nn.Module) -> nn.Module:
    """``model`` (in eval mode) with each BatchNorm3d folded into the Conv3d just before it.

    Only for the reduced precisions: autocast runs convolutions in bf16/fp16 but batch norm in
    float32, so every unfolded BatchNorm casts its activations up and the next convolution casts
    them down again. Folded, R(2+1)D-34 at bf16 on a 2-core AVX-512 CPU ran 2.38 instead of 2.15
    clips/s (batch 8, channels_last_3d, same run) and moved no further from fp32 (3.4e-3 of the
    largest feature against 6.2e-3). fp32 keeps the network as the checkpoint has it: folding
    changes the rounding, and fp32 reproduces the reference.

    The pairs are found in ``nn.Sequential`` containers, where torchvision's video ResNets keep
    them (a convolution, or a sequence ending in one, followed by its batch norm); the model is
    not traced, so any other module runs unchanged. The caller's model is left as it is.
    """
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model)
    for container in folded.modules():
        if not isinstance(container, nn.Sequential):
            continue
        for index in range(1, len(container)):
            norm, before = container[index], container[index - 1]
            conv = before[-1] if isinstance(before, nn.Sequential) and len(before) else before
            if type(norm) is nn.BatchNorm3d and isinstance(conv, nn.Conv3d) and norm.track_running_stats:
                fused = fuse_conv_bn_eval(conv, norm)
                if isinstance(before, nn.Sequential):
                    before[-1] = fused
                else:
                    container[index - 1] = fused
                container[index] = nn.Identity()
    return folded


class FormatTrial:
    """Times full batches in each memory format on a GPU and names the faster one.

    The first batch in each format is a warm-up (``cudnn.benchmark`` autotunes it); the second
    is timed. Only full batches count: a smaller one has other shapes, so other algorithms.
    """

    def __init__(self, order: tuple[str, ...] = TRIAL_ORDER) -> None:
        self.order = list(order)
        self.seen: dict[str, int] = {}
        self.seconds: dict[str, float] = {}

    @property
    def done(self) -> bool:
        return not self.order

    def next_format(self) -> str:
        return self.order[0]

    def record(self, memory_format: str, seconds: float) -> None:
        self.order.pop(0)
        self.seen[memory_format] = self.seen.get(memory_format, 0) + 1
        if self.seen[memory_format] > 1:  # the first one was the warm-up
            self.seconds[memory_format] = min(seconds, self.seconds.get(memory_format, float("inf")))

    def winner(self) -> str:
        return min(self.seconds, key=lambda name: self.seconds[name])


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Network:
    """The model on its device, in its memory format and precision; ``model=None`` stands in for a dry run.

    ``memory_format``: ``auto`` (``channels_last_3d`` on the CPU, measured on CUDA, ``ncdhw``
    on MPS), ``measure`` (the trial on any device), or ``ncdhw``/``channels_last_3d`` to force one. A dry run's stand-in keeps the
    batch layout the real run would have on a CPU, so a dry run costs what the input side costs.
    """

    def __init__(
        self,
        model: nn.Module | None,
        *,
        device: torch.device = torch.device("cpu"),
        precision: str = "fp32",
        memory_format: str = "auto",
        batch_size: int = 32,
        clip_len: int = TSP_RECIPE.clip_len,
        crop: int = TSP_RECIPE.crop,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if memory_format not in ("auto", "measure", *MEMORY_FORMATS):
            raise ValueError(
                f"memory_format {memory_format!r} is not one of auto, measure, {', '.join(MEMORY_FORMATS)}"
            )
        self.device = device
        self.precision = precision
        self.autocast_dtype = autocast_dtype(precision)
        self.batch_shape = (batch_size, 3, clip_len, crop, crop)
        self.clock = clock
        #: Whether glibc now keeps the blocks a forward pass frees (CPU only; see ``host_memory``).
        self.keeps_freed_memory = model is not None and device.type == "cpu" and keep_freed_memory()
        if model is not None:
            model = model.to(device).eval()
            if self.autocast_dtype is not None:
                model = folded_batch_norms(model)
        self.model = model
        measure = memory_format == "measure" or (memory_format == "auto" and device.type == "cuda")
        self.trial: FormatTrial | None = FormatTrial() if measure and model is not None else None
        chosen = memory_format if memory_format in MEMORY_FORMATS else default_memory_format(device)
        self.memory_format = chosen
        self._buffer: torch.Tensor | None = None
        self._use(self.memory_format)

    def _use(self, memory_format: str) -> None:
        """Put the weights and the batch buffer in ``memory_format`` (nothing happens if they are)."""
        if self.model is not None:
            self.model.to(memory_format=MEMORY_FORMATS[memory_format])
        if memory_format != self.memory_format:
            self._buffer = None  # allocated again, in this layout, by the next batch
        self.memory_format = memory_format

    def _allocated_buffer(self) -> torch.Tensor:
        """One batch tensor reused for every batch: allocating ~77 MB per batch costs more in page
        faults than filling it does. Allocated by the first batch, so that a size that does not fit
        fails where the engine splits batches (``tsp_cli.pipeline.memory``)."""
        if self._buffer is None:
            self._buffer = torch.empty(
                self.batch_shape,
                dtype=torch.float32,
                device=self.device,
                memory_format=MEMORY_FORMATS[self.memory_format],
            )
        return self._buffer

    def shrink_batches(self, count: int) -> None:
        """Run at most ``count`` clips at a time from now on (a batch ran out of memory): the buffer
        is freed, and the next batch allocates it at that size."""
        self.batch_shape = (count, *self.batch_shape[1:])
        self._buffer = None

    def batch_buffer(self, count: int) -> torch.Tensor:
        """The first ``count`` rows of the reused batch buffer, in the layout the next batch runs in.

        Fill it in place (``out=`` or numpy views), then pass it to :meth:`features`.
        """
        if self.trial is not None and count == self.batch_shape[0]:
            self._use(self.trial.next_format())
        return self._allocated_buffer()[:count]

    def features(self, batch: torch.Tensor) -> np.ndarray:
        """The float32 feature rows (clips x 512) of ``batch``; a dry run's stand-in gives zeros."""
        if self.model is None:
            return np.zeros((len(batch), FEATURE_DIM), np.float32)
        timed = self.trial is not None and len(batch) == self.batch_shape[0]
        if timed:
            _synchronize(self.device)
        started = self.clock()
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None),
            float32_math(self.precision),
        ):
            rows = self.model(batch).float().cpu().numpy()  # .cpu() waits for the device
        if timed:
            assert self.trial is not None
            self.trial.record(self.memory_format, self.clock() - started)
            if self.trial.done:
                self._use(self.trial.winner())
                self.trial = None
        return rows
