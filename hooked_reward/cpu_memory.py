"""CPU memory reuse for full activation caches: the CPU analogue of PyTorch's CUDA caching allocator.

A `run_with_cache` with every hook keeps every activation alive (433 KB per token for a d_model-512, 8-layer
Llama), so none of the forward's buffers can be reused: each one is fresh memory from the operating system, and
the first write to each 4 KB page costs a page fault. On the benchmark model that is ~120,000 faults and ~0.2 s of
kernel time per call, the whole gap between a full-cache run and a plain forward. When the cache is freed,
glibc's malloc hands the pages back to the OS (munmap / heap trim), so the next cache pays again.

`retain_freed_cpu_memory()` tells glibc to keep freed blocks of up to `max_block_bytes` in the process for reuse,
as `torch.cuda`'s caching allocator does on the GPU; `release_freed_cpu_memory()` gives them back (the analogue
of `torch.cuda.empty_cache()`). Both are process-wide (they also speed up plain HF forwards, which fault on
their own freed buffers), opt-in, and glibc-only: elsewhere they warn and return False.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import warnings

# glibc <malloc.h> parameter numbers
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc refuses an mmap threshold above HEAP_MAX_SIZE / 2 (32 MiB on 64-bit)
MAX_RETAINED_BLOCK_BYTES = 32 * 2**20
_INT_MAX = 2**31 - 1
_GLIBC_DEFAULT_THRESHOLD = 128 * 2**10  # glibc's initial mmap and trim thresholds


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The process's C library if it is glibc (has mallopt and malloc_trim), else None."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        if not hasattr(libc, "gnu_get_libc_version"):  # only glibc has it
            return None
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def retain_freed_cpu_memory(enabled: bool = True, max_block_bytes: int = MAX_RETAINED_BLOCK_BYTES) -> bool:
    """Keep freed CPU blocks of up to `max_block_bytes` (default and maximum 32 MiB) in the process for reuse.

    After this, repeated `run_with_cache` calls (and HF forwards) reuse the pages of earlier, freed activations
    instead of faulting in fresh ones; the process's resident memory then stays at its peak until
    `release_freed_cpu_memory()`. Larger single tensors are still mapped fresh each time. `enabled=False` puts
    glibc's initial thresholds (128 KiB) back and releases what was kept (glibc's own dynamic raising of the
    threshold stays off). Returns True when the setting took effect, False (with a warning) where the C library
    is not glibc.
    """
    if not 0 < max_block_bytes <= MAX_RETAINED_BLOCK_BYTES:
        raise ValueError(
            f"max_block_bytes must be in (0, {MAX_RETAINED_BLOCK_BYTES}] (glibc's limit for an mmap threshold), "
            f"got {max_block_bytes}."
        )
    libc = _glibc()
    if libc is None:
        warnings.warn("retain_freed_cpu_memory needs glibc's malloc; nothing changed.", stacklevel=2)
        return False
    # enabled: blocks up to max_block_bytes come from the heap, and freed heap memory is trimmed only above 2 GiB
    mmap_threshold, trim_threshold = (max_block_bytes, _INT_MAX) if enabled else (_GLIBC_DEFAULT_THRESHOLD,) * 2
    ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    if not enabled:
        libc.malloc_trim(0)
    return ok


def release_freed_cpu_memory() -> bool:
    """Return freed heap memory to the operating system now (glibc `malloc_trim(0)`); True if any was released.

    Resident memory drops back to what live tensors use. The retain setting stays in force for later frees."""
    libc = _glibc()
    if libc is None:
        warnings.warn("release_freed_cpu_memory needs glibc's malloc; nothing changed.", stacklevel=2)
        return False
    return bool(libc.malloc_trim(0))
