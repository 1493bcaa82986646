"""Running the network within the memory there is: a batch that cannot be allocated is split.

A ``--batch-size`` that fits one GPU does not fit a smaller one, and a job's memory limit is
shared with the decoding workers. Rather than stop with the allocator's traceback, a forward
pass that runs out of memory is retried on halves of its clips, down to one clip at a time;
the size that fitted is kept for the rest of the run. Each clip's features do not depend on
which clips share its batch beyond float rounding (as with any ``--batch-size``), so a split
run writes the same features as one that fitted. Only when a single clip cannot be allocated
does the run stop, with one sentence, keeping every finished file.

Which errors count as "out of memory", and only these (a shape or a driver error must stay the
error it is):

- ``torch.OutOfMemoryError``: CUDA's caching allocator (and the CPU allocator in newer torch);
- ``MemoryError``: Python's and numpy's allocations;
- a ``RuntimeError`` carrying the CPU allocator's message (``DefaultCPUAllocator: can't
  allocate memory``, which torch 2.x raises when ``malloc`` fails, e.g. under ``ulimit -v``) or
  the MPS backend's (``MPS backend out of memory``).

A cgroup memory limit (Slurm's ``--mem``) is enforced by the kernel, which kills the process
instead of failing an allocation: no process can answer that, so ``tsp`` cannot split there;
the run resumes from its finished files when started again with a lower ``--batch-size`` or
``--workers``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Generic, TypeVar

import numpy as np
import torch

from tsp_cli.errors import MemoryExhaustedError

T = TypeVar("T")

#: Messages of allocators that raise a plain ``RuntimeError`` when they run out.
_ALLOCATOR_MESSAGES = ("DefaultCPUAllocator: can't allocate memory", "MPS backend out of memory")


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocator saying it ran out of memory (see the module's list)."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(error, RuntimeError) and any(message in str(error) for message in _ALLOCATOR_MESSAGES)


def release_cached_memory(device: torch.device) -> None:
    """Give the memory the failed attempt left in torch's cache back, so that the retry can use it."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def out_of_memory(device: torch.device, *, one_clip: bool = True) -> MemoryExhaustedError:
    """The one sentence for a run that cannot fit even one clip (or ran out outside the network)."""
    return MemoryExhaustedError(
        f"Out of memory on {device}{' even for one clip at a time' if one_clip else ''}; lower `batch_size` (its buffers are "
        "allocated ahead) or `workers` (each decoding worker holds frames), or free memory, then run the same "
        "command again to resume: finished videos are kept."
    )


@contextmanager
def out_of_memory_stops_the_run(device: torch.device) -> Iterator[None]:
    """Any other allocation that fails mid-run (blending frames, a feature array) ends in the same
    sentence rather than a traceback; finished videos are kept."""
    try:
        yield
    except MemoryExhaustedError:
        raise
    except Exception as error:
        if not is_out_of_memory(error):
            raise
    else:
        return
    release_cached_memory(device)
    raise out_of_memory(device, one_clip=False)


class FittingForward(Generic[T]):
    """Runs a batch through ``forward`` at most :attr:`limit` clips at a time, halving the limit
    (down to one clip) whenever an attempt runs out of memory, and keeping it for later batches.

    ``forward(clips)`` returns one feature row per clip; ``on_split(limit)`` is called with the
    new limit after a failed attempt, before the retry, to size buffers for it.
    """

    def __init__(
        self,
        forward: Callable[[Sequence[T]], np.ndarray],
        limit: int,
        device: torch.device,
        on_split: Callable[[int], None] = lambda limit: None,
    ):
        self.forward = forward
        self.limit = limit
        self.device = device
        self.on_split = on_split
        #: Whether some batch had to be split (the limit is then below the batch size asked for).
        self.split = False

    def __call__(self, clips: Sequence[T]) -> np.ndarray:
        parts = []
        start = 0
        while start < len(clips):
            size = min(self.limit, len(clips) - start)
            try:
                parts.append(self.forward(clips[start : start + size]))
                start += size
                continue
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
            # Out of the except block, the failed attempt's frames and their tensors are freed.
            release_cached_memory(self.device)
            if size == 1:
                raise out_of_memory(self.device)
            self.limit, self.split = size // 2, True
            self.on_split(self.limit)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)
