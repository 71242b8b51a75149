"""CPU memory reuse for full activation caches: the CPU analogue of PyTorch's CUDA caching allocator.

A `run_with_cache` with every hook keeps every activation alive (433 KB per token for a d_model-512, 8-layer
Llama), so none of the forward's buffers can be reused: each one is fresh memory from the operating system, and
the first write to each 4 KB page costs a page fault. On the benchmark model that is ~120,000 faults and ~0.2 s of
kernel time per call, the whole gap between a full-cache run and a plain forward. When the cache is freed,
glibc's malloc hands the pages back to the OS (munmap / heap trim), so the next cache pays again.

`retain_freed_cpu_memory()` tells glibc to keep freed blocks of up to `max_block_bytes` in the process for reuse,
as `torch.cuda`'s caching allocator does on the GPU; `release_freed_cpu_memory()` gives them back (the analogue
of `torch.cuda.empty_cache()`). Both are process-wide (they also speed up plain HF forwards, which fault on
their own freed buffers) and opt-in. They act on glibc's malloc only: where the C library is not glibc, or
another allocator (jemalloc, tcmalloc via LD_PRELOAD) serves `malloc`, they warn and return False.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import warnings

# glibc <malloc.h> parameter numbers
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_INT_MAX = 2**31 - 1  # mallopt takes an int
DEFAULT_RETAINED_BLOCK_BYTES = 1 << 30
_GLIBC_INITIAL_THRESHOLD = 128 * 2**10  # glibc's mmap and trim thresholds at process start


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """glibc, if it is the C library and the `malloc` this process calls (not an LD_PRELOADed allocator)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        if not hasattr(libc, "gnu_get_libc_version"):  # only glibc has it
            return None
        process_malloc = ctypes.cast(ctypes.CDLL(None).malloc, ctypes.c_void_p).value
        if process_malloc != ctypes.cast(libc.malloc, ctypes.c_void_p).value:
            return None  # another allocator is interposed; glibc's settings would not reach torch
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def _libc_or_warn(caller: str) -> ctypes.CDLL | None:
    libc = _glibc()
    if libc is None:
        warnings.warn(
            f"{caller} needs glibc's malloc as the process's allocator (not found, or another allocator is "
            "preloaded); nothing changed.",
            stacklevel=3,
        )
    return libc


def retain_freed_cpu_memory(enabled: bool = True, max_block_bytes: int = DEFAULT_RETAINED_BLOCK_BYTES) -> bool:
    """Keep freed CPU blocks of up to `max_block_bytes` (default 1 GiB) in the process for reuse.

    After this, repeated `run_with_cache` calls (and HF forwards) reuse the pages of earlier, freed activations
    instead of faulting in fresh ones; the process's resident memory then stays at its peak until
    `release_freed_cpu_memory()` (glibc trims on its own only when more than 2 GiB lie free at the top of the
    heap). Larger single tensors are still mapped fresh each time.

    `enabled=False` sets glibc's start-up thresholds (128 KiB) as fixed values and releases what was kept. It is
    not a full undo: glibc's own raising of the threshold as large blocks are freed, on by default, cannot be
    switched back on in a running process. Returns True when glibc took the setting, False (with a warning)
    where it did not or where glibc's malloc is not the process's allocator.
    """
    if not 0 < max_block_bytes <= _INT_MAX:
        raise ValueError(f"max_block_bytes must be in (0, {_INT_MAX}] (mallopt takes an int), got {max_block_bytes}.")
    libc = _libc_or_warn("retain_freed_cpu_memory")
    if libc is None:
        return False
    mmap_threshold, trim_threshold = (max_block_bytes, _INT_MAX) if enabled else (_GLIBC_INITIAL_THRESHOLD,) * 2
    ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    if not ok:
        warnings.warn(
            f"glibc refused an mmap threshold of {mmap_threshold} bytes; try a smaller max_block_bytes.", stacklevel=2
        )
    if not enabled:
        libc.malloc_trim(0)
    return ok


def release_freed_cpu_memory() -> bool:
    """Return freed heap memory to the operating system now (glibc `malloc_trim(0)`); True if any was released.

    Resident memory drops back to what live tensors use. The retain setting stays in force for later frees."""
    libc = _libc_or_warn("release_freed_cpu_memory")
    return bool(libc.malloc_trim(0)) if libc is not None else False
