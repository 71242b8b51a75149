"""Loading by Hugging Face Hub id, offline, from a hub cache laid out as huggingface_hub writes it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import build_hf_model, save_checkpoint
from hub_cache import add_to_hub_cache

from hooked_reward import CheckpointError, HookedRewardModel
from hooked_reward.hub import looks_like_hub_id

TEXTS = ["the cat is good", "the dog was very bad answer"]
COMMIT = "1234567890abcdef1234567890abcdef12345678"


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> tuple[Path, Path]:
    """(hub cache dir, local checkpoint) with the checkpoint cached as `org/tiny-rm` at COMMIT (main, tag v1)."""
    root = tmp_path_factory.mktemp("hub")
    local = save_checkpoint(build_hf_model("llama"), root / "local")
    cache = root / "home" / "hub"
    add_to_hub_cache(cache, "org/tiny-rm", local, commit=COMMIT)
    add_to_hub_cache(
        cache, "org/tiny-rm", save_checkpoint(build_hf_model("llama", seed=5), root / "v0"), "f" * 40, "v0"
    )
    return cache, local


def test_hub_id_loads_the_cached_snapshot(hub):
    cache, local = hub
    expected = HookedRewardModel.from_pretrained(local)(TEXTS)
    for kwargs in ({}, {"revision": "main"}, {"revision": COMMIT}):
        model = HookedRewardModel.from_pretrained("org/tiny-rm", cache_dir=cache, local_files_only=True, **kwargs)
        torch.testing.assert_close(model(TEXTS), expected, rtol=0, atol=0)
    other = HookedRewardModel.from_pretrained("org/tiny-rm", cache_dir=cache, local_files_only=True, revision="v0")
    assert not torch.allclose(other(TEXTS), expected)  # the tag's snapshot, not main's


def test_uncached_id_offline_is_a_clear_error(hub):
    cache, _ = hub
    with pytest.raises(CheckpointError, match=r"'org/absent'.*not in the hub cache.*offline"):
        HookedRewardModel.from_pretrained("org/absent", cache_dir=cache, local_files_only=True)
    with pytest.raises(CheckpointError, match="revision"):
        HookedRewardModel.from_pretrained("org/tiny-rm", cache_dir=cache, local_files_only=True, revision="nope")


def test_local_paths_are_not_hub_ids(tmp_path):
    assert looks_like_hub_id("org/name") and looks_like_hub_id("gpt2")
    assert not any(looks_like_hub_id(p) for p in ("./org/name", "/abs/dir", "a/b/c", "~/x", "bad name/x"))
    with pytest.raises(CheckpointError, match="does not exist"):
        HookedRewardModel.from_pretrained(str(tmp_path / "missing" / "dir"))
    with pytest.raises(CheckpointError, match="revision"):
        HookedRewardModel.from_pretrained(tmp_path, revision="main")


def test_armorm_and_value_head_by_hub_id(tmp_path, armorm):
    from test_armorm import tiny_state, write_armorm
    from test_value_heads import causal_lm, save_with_head

    cache = tmp_path / "hub"
    state, config = tiny_state()
    armorm_dir = write_armorm(tmp_path / "armorm", state, config)
    add_to_hub_cache(cache, "org/armorm", armorm_dir)
    torch.manual_seed(0)
    head = {"v_head.summary.weight": torch.randn(1, 32), "v_head.summary.bias": torch.randn(1)}
    vh_dir = save_with_head(tmp_path / "vh", causal_lm(), head)
    add_to_hub_cache(cache, "org/value-head", vh_dir)
    tokens = torch.tensor([[5, 3, 60, 61, 9, 30], [7, 3, 60, 61, 2, 40]])  # with ArmoRM's gating pattern
    for repo, local in (("org/armorm", armorm_dir), ("org/value-head", vh_dir)):
        by_id = HookedRewardModel.from_pretrained(repo, cache_dir=cache, local_files_only=True)
        torch.testing.assert_close(by_id(tokens), HookedRewardModel.from_pretrained(local)(tokens), rtol=0, atol=0)


@pytest.mark.slow  # a fresh interpreter loading from the hub cache
def test_hf_home_and_hf_hub_offline_are_honoured(hub):
    """A fresh process with only the environment set (as a user would): HF_HOME points at the cache, offline."""
    cache, local = hub
    env = {**os.environ, "HF_HOME": str(cache.parent), "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.getcwd()}
    env.pop("HF_HUB_CACHE", None)
    code = (
        f"from hooked_reward import HookedRewardModel as M; print(M.from_pretrained('org/tiny-rm')({TEXTS!r}).tolist())"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    got = torch.tensor(eval(out.stdout.strip().splitlines()[-1]))
    torch.testing.assert_close(got, HookedRewardModel.from_pretrained(local)(TEXTS), rtol=0, atol=1e-6)
