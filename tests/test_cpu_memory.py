"""`retain_freed_cpu_memory` (issue 16): freed activation memory is reused instead of faulted in afresh.

Measured by the kernel's minor-fault counter (getrusage), independent of the code under test, in a child process
so that the allocator settings do not leak into the rest of the test session."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from hooked_reward import cpu_memory

pytestmark = pytest.mark.slow  # memory: page-level measurements in subprocesses

CHILD = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    from hooked_reward import cpu_memory

    def faults_to_fill(n_blocks, block_mib):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        blocks = [torch.empty(block_mib * 2**18).fill_(1.0) for _ in range(n_blocks)]
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        del blocks
        return faults

    out = {"default": [faults_to_fill(16, 2) for _ in range(3)]}
    out["retain_ok"] = cpu_memory.retain_freed_cpu_memory()
    out["retained"] = [faults_to_fill(16, 2) for _ in range(3)]
    out["retained_large"] = [faults_to_fill(1, 40) for _ in range(3)]  # one 40 MiB tensor
    out["released"] = cpu_memory.release_freed_cpu_memory()
    out["after_release"] = faults_to_fill(16, 2)
    out["disable_ok"] = cpu_memory.retain_freed_cpu_memory(enabled=False)
    out["disabled"] = [faults_to_fill(16, 2) for _ in range(3)]
    print(json.dumps(out))
    """
)
PAGES_2MIB_X16 = 16 * 2**21 // 4096
PAGES_40MIB = 40 * 2**20 // 4096


@pytest.fixture(scope="module")
def child_faults() -> dict:
    if cpu_memory._glibc() is None:
        pytest.skip("needs glibc's malloc as the allocator")
    run = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_retained_memory_is_reused_also_for_blocks_over_32_mib(child_faults: dict) -> None:
    """Glibc's default reuse is erratic (its thresholds adapt, and transparent huge pages change the fault
    count); with memory retained, every later fill of the same sizes reuses the freed memory: at most one of the
    16 blocks faults in afresh per round (a small allocation made between rounds can split the freed region,
    which depends on what else the process imported), against more than half of all pages by default."""
    assert child_faults["retain_ok"]
    assert sum(child_faults["default"][1:]) > PAGES_2MIB_X16 // 2
    assert max(child_faults["retained"][1:]) <= PAGES_2MIB_X16 // 16 + 8
    assert child_faults["retained_large"][1] < PAGES_40MIB // 20
    assert max(child_faults["retained_large"][1:]) < PAGES_40MIB // 2


def test_release_and_disable_give_memory_back(child_faults: dict) -> None:
    assert child_faults["released"]
    assert child_faults["after_release"] > PAGES_2MIB_X16 // 2  # the kept memory went back to the OS
    assert child_faults["disable_ok"]
    assert child_faults["disabled"][0] > PAGES_2MIB_X16 // 2


def test_without_glibc_it_warns_and_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_memory, "_glibc", lambda: None)
    with pytest.warns(UserWarning, match="needs glibc's malloc"):
        assert cpu_memory.retain_freed_cpu_memory() is False
    with pytest.warns(UserWarning, match="needs glibc's malloc"):
        assert cpu_memory.release_freed_cpu_memory() is False


def test_bad_block_size_is_refused() -> None:
    with pytest.raises(ValueError, match="max_block_bytes"):
        cpu_memory.retain_freed_cpu_memory(max_block_bytes=2**31)
