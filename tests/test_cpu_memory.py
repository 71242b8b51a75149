"""`retain_freed_cpu_memory` (issue 16): freed activation memory is reused instead of faulted in afresh.

Measured by the kernel's minor-fault counter (getrusage), independent of the code under test."""

from __future__ import annotations

import resource

import pytest
import torch

from hooked_reward import cpu_memory

pytestmark = pytest.mark.skipif(cpu_memory._glibc() is None, reason="needs glibc's malloc")


def faults_to_fill(n_blocks: int = 16, block_floats: int = 2**19) -> int:
    """Minor page faults taken while allocating and writing `n_blocks` 2 MiB tensors held together."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [torch.empty(block_floats).fill_(1.0) for _ in range(n_blocks)]
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    del blocks
    return faults


def test_retained_memory_is_reused_and_released() -> None:
    pages = 16 * 2**21 // 4096  # pages written per fill
    try:
        assert cpu_memory.retain_freed_cpu_memory()
        faults_to_fill()  # first fill: fresh memory, now kept after the free
        assert faults_to_fill() < pages // 10
        assert cpu_memory.release_freed_cpu_memory()  # the kept 32 MiB goes back to the OS...
        assert faults_to_fill() > pages // 2  # ...so the next fill faults it in again
    finally:
        cpu_memory.retain_freed_cpu_memory(enabled=False)
    faults_to_fill()
    assert faults_to_fill() > pages // 2  # glibc's thresholds again: freed blocks go back to the OS


def test_bad_block_size_is_refused() -> None:
    with pytest.raises(ValueError, match="max_block_bytes"):
        cpu_memory.retain_freed_cpu_memory(max_block_bytes=64 * 2**20)
