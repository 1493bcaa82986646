"""Keep the memory a CPU forward pass frees, so that the next batch does not fault it in again.

glibc's ``malloc`` serves a block larger than its mmap threshold (adjusted at run time, at most
32 MiB) with a fresh ``mmap`` and returns it to the kernel on ``free``; it also gives the top of
its heap back once more than the trim threshold is free there. The activations of one batch of
8 clips are such blocks (R(2+1)D-34's first layers: 36-51 MB each), so on the CPU every layer of
every batch mapped new pages and the kernel zeroed them: 5.2 million page faults in 4 batches,
a sixth of the run's time spent in the kernel. Raising both thresholds to their maximum makes
the freed blocks stay in the heap and serve the next batch: fp32 network alone 1.06 -> 1.36
clips/s, bf16 2.52 -> 2.77 (2-core AVX-512 CPU, batch 8, channels_last_3d, same run; features
unchanged, only where the memory comes from changes). The price is a higher peak resident size
(fp32 batch 8: 1.8 -> 2.5 GB), since freed blocks are kept instead of returned.

Kept pages must not be shared with the decoding workers, which fork from this process: the
first write to a page shared copy-on-write copies it, and a second run in one process (the
Python API in a notebook, or the benchmarks) had its first batch 3 s slower for it. So the
kept memory is given back (:func:`release_kept_memory`) just before workers are forked.

Only the process running the network on a CPU asks for this; a user who set the thresholds
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``GLIBC_TUNABLES``) or runs another
allocator (jemalloc, tcmalloc through ``LD_PRELOAD``) is left alone, and on a C library without
``mallopt`` (macOS, musl) nothing happens.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

#: ``mallopt`` parameters, from glibc's ``malloc.h``.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: The largest value ``mallopt`` takes (its argument is a C ``int``): 2 GiB - 1.
LARGEST_THRESHOLD = 2**31 - 1
#: Settings through which a user has already chosen how the allocator behaves.
USER_ALLOCATOR_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES", "LD_PRELOAD")

_kept = False


def keep_freed_memory(environ: os._Environ[str] | dict[str, str] = os.environ) -> bool:
    """Ask glibc's ``malloc`` to keep freed blocks for reuse; whether it now does (idempotent)."""
    global _kept
    if _kept:
        return True
    if not sys.platform.startswith("linux") or any(environ.get(name) for name in USER_ALLOCATOR_SETTINGS):
        return False
    libc = _glibc()
    if libc is None:
        return False
    _kept = bool(libc.mallopt(M_MMAP_THRESHOLD, LARGEST_THRESHOLD)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, LARGEST_THRESHOLD)
    )
    return _kept


def release_kept_memory() -> bool:
    """Give the free memory glibc keeps back to the kernel (``malloc_trim``); whether any was given.

    Called before the decoding workers are forked: pages the heap keeps would otherwise be shared
    copy-on-write with the workers, and the next batches would copy each of them (4 KB at a time)
    the first time they write it, which is slower than the fresh pages the kernel gives instead.
    Only where :func:`keep_freed_memory` took effect, so that nothing changes elsewhere.
    """
    libc = _glibc() if _kept else None
    if libc is None:
        return False
    return bool(libc.malloc_trim(0))


def allocator_state(environ: os._Environ[str] | dict[str, str] = os.environ) -> str:
    """How a CPU run's freed memory is handled, in words for ``tsp doctor``."""
    chosen = [name for name in USER_ALLOCATOR_SETTINGS if environ.get(name)]
    if chosen:
        return f"as the user set it ({', '.join(chosen)})"
    if not sys.platform.startswith("linux") or _glibc() is None:
        return "the C library's default (not glibc)"
    return "kept for the next batch (glibc thresholds raised)"


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library this process runs on if it is glibc, with ``mallopt`` and ``malloc_trim`` typed; else None."""
    try:
        libc = ctypes.CDLL(None)  # the symbols already loaded: the C library python runs on
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it; musl has a mallopt that does nothing
    except (OSError, AttributeError):
        return None
    libc.mallopt.argtypes, libc.mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    libc.malloc_trim.argtypes, libc.malloc_trim.restype = (ctypes.c_size_t,), ctypes.c_int
    return libc
