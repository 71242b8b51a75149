"""Issue 26: attention runs through SDPA where no hook reads the pattern, exact to HF and to the explicit path."""

from __future__ import annotations

import pytest
import torch
from conftest import ARCHS, hf_reference_rewards, padded_tokens

from hooked_reward import HookedRewardModel
from hooked_reward.fused_attention import EXPLICIT, FUSED, attention_paths, fused_attention_blocker

TOL = 1e-4
# Gemma-2 soft-caps its attention logits, which SDPA cannot do: it keeps the explicit path (as HF uses eager).
FUSES = {arch: arch != "gemma2" for arch in ARCHS}


def batch(left: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    return padded_tokens((10, 7, 5, 3), left=left, seed=1)


def not_pattern(name: str) -> bool:
    return not name.endswith(("hook_pattern", "hook_attn_scores"))


def at_tokens(t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The rows of a `[batch, pos, ...]` activation at attended tokens (pad positions are not compared: HF gives
    fully masked queries whatever its kernel gives them)."""
    return t[mask.bool()] if t.shape[:2] == mask.shape else t


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("left", [False, True])
def test_both_paths_equal_hf(make_checkpoint, arch: str, left: bool) -> None:
    path = make_checkpoint(arch)
    model = HookedRewardModel.from_pretrained(path)
    tokens, mask = batch(left)
    reference = hf_reference_rewards(path, tokens, mask)
    with torch.no_grad():
        fused = model(tokens, attention_mask=mask)
        assert attention_paths(model) == [FUSED if FUSES[arch] else EXPLICIT] * model.cfg.n_layers
        model.set_fused_attention(False)
        explicit = model(tokens, attention_mask=mask)
        assert attention_paths(model) == [EXPLICIT] * model.cfg.n_layers
    assert (fused - reference).abs().max() <= TOL
    assert (explicit - reference).abs().max() <= TOL


def test_gemma2_reason_is_softcapping(make_checkpoint) -> None:
    model = HookedRewardModel.from_pretrained(make_checkpoint("gemma2"))
    assert fused_attention_blocker(model.blocks[0].attn, {}) == "the HF attention has attn_logit_softcapping"


@pytest.mark.parametrize("arch", [a for a in ARCHS if FUSES[a]])
def test_every_other_hook_has_the_same_value(make_checkpoint, arch: str) -> None:
    """hook_q/k/v, rotary, hook_z, hook_attn_out, residuals...: the same on both paths. Up to layer 0's attention
    the computation is the same code, so bit-identical; after it, SDPA and the explicit softmax round differently
    (float32: ~1e-6)."""
    model = HookedRewardModel.from_pretrained(make_checkpoint(arch))
    tokens, mask = batch()
    rewards_f, fused = model.run_with_cache(tokens, attention_mask=mask, names_filter=not_pattern)
    assert attention_paths(model) == [FUSED] * model.cfg.n_layers
    model.set_fused_attention(False)
    rewards_e, explicit = model.run_with_cache(tokens, attention_mask=mask, names_filter=not_pattern)
    assert set(fused.keys()) == set(explicit.keys())
    assert {"blocks.0.attn.hook_q", "blocks.0.attn.hook_z", "blocks.1.hook_attn_out"} <= set(fused.keys())
    pre = ("hook_in", "hook_q", "hook_k", "hook_v", "hook_rot_q", "hook_rot_k", "hook_q_normed", "hook_k_normed")
    before_attention = [f"blocks.0.attn.{h}" for h in pre if f"blocks.0.attn.{h}" in fused.keys()]
    assert len(before_attention) >= 4
    for name in before_attention:
        assert torch.equal(fused[name], explicit[name]), name
    for name in fused.keys():
        a, b = at_tokens(fused[name], mask), at_tokens(explicit[name], mask)
        assert (a - b).abs().max() <= 1e-5 * (1 + b.abs().max()), name
    assert (rewards_f - rewards_e).abs().max() <= 1e-5


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen3"])
def test_pattern_hook_switches_only_its_layer(make_checkpoint, arch: str) -> None:
    """A hook on layer 1's pattern runs layer 1 explicitly (and sees the explicit path's pattern), layer 0 stays
    fused; a write to it (zeroing head 0) changes the reward exactly as it does with every layer explicit."""
    path = make_checkpoint(arch)
    model = HookedRewardModel.from_pretrained(path)
    tokens, mask = batch()
    seen: dict[str, torch.Tensor] = {}

    def ablate_head0(pattern: torch.Tensor, hook) -> torch.Tensor:
        seen["pattern"] = pattern.detach().clone()
        pattern = pattern.clone()
        pattern[:, 0] = 0.0
        return pattern

    hooks = [("blocks.1.attn.hook_pattern", ablate_head0)]
    with torch.no_grad():
        patched = model.run_with_hooks(tokens, attention_mask=mask, fwd_hooks=hooks)
        assert attention_paths(model) == [FUSED, EXPLICIT]
        plain = model(tokens, attention_mask=mask)  # the hook is gone: both layers fused again
        assert attention_paths(model) == [FUSED, FUSED]
        pattern_fused = seen.pop("pattern")
        model.set_fused_attention(False)
        patched_explicit = model.run_with_hooks(tokens, attention_mask=mask, fwd_hooks=hooks)
    assert (plain - hf_reference_rewards(path, tokens, mask)).abs().max() <= TOL
    assert (patched - plain).abs().max() > 1e-3, "the ablation must change the reward"
    assert (patched - patched_explicit).abs().max() <= 1e-5
    assert (pattern_fused - seen["pattern"]).abs().max() <= 1e-5


def test_cache_filter_with_a_pattern_switches_its_layer(make_checkpoint) -> None:
    model = HookedRewardModel.from_pretrained(make_checkpoint("llama"))
    tokens, mask = batch()
    _, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=["blocks.0.attn.hook_attn_scores"])
    assert attention_paths(model) == [EXPLICIT, FUSED]
    model.set_fused_attention(False)
    _, explicit = model.run_with_cache(tokens, attention_mask=mask, names_filter=["blocks.0.attn.hook_attn_scores"])
    assert torch.equal(cache["blocks.0.attn.hook_attn_scores"], explicit["blocks.0.attn.hook_attn_scores"])
    model.set_fused_attention(True)
    model.run_with_cache(tokens, attention_mask=mask)  # every hook, patterns included
    assert attention_paths(model) == [EXPLICIT, EXPLICIT]


def test_hooks_on_fused_layers_are_honoured(make_checkpoint) -> None:
    """Writes at hook_z and hook_rot_k of a fused layer change its output as on the explicit path."""
    model = HookedRewardModel.from_pretrained(make_checkpoint("llama"))
    tokens, mask = batch()

    def halve(t: torch.Tensor, hook) -> torch.Tensor:
        return t * 0.5

    hooks = [("blocks.0.attn.hook_z", halve), ("blocks.1.attn.hook_rot_k", halve)]
    with torch.no_grad():
        plain = model(tokens, attention_mask=mask)
        fused = model.run_with_hooks(tokens, attention_mask=mask, fwd_hooks=hooks)
        assert attention_paths(model) == [FUSED, FUSED]
        model.set_fused_attention(False)
        explicit = model.run_with_hooks(tokens, attention_mask=mask, fwd_hooks=hooks)
    assert (fused - plain).abs().max() > 1e-3
    assert (fused - explicit).abs().max() <= 1e-5


def test_gradients_equal_on_both_paths(make_checkpoint) -> None:
    model = HookedRewardModel.from_pretrained(make_checkpoint("qwen2"))
    tokens, mask = batch()
    names = ["blocks.0.hook_resid_pre", "blocks.1.attn.hook_v"]
    _, fused = model.run_with_cache(tokens, attention_mask=mask, names_filter=names, incl_bwd=True)
    assert attention_paths(model) == [FUSED, FUSED]
    model.set_fused_attention(False)
    _, explicit = model.run_with_cache(tokens, attention_mask=mask, names_filter=names, incl_bwd=True)
    for name in names:
        grad_f, grad_e = at_tokens(fused[name + "_grad"], mask), at_tokens(explicit[name + "_grad"], mask)
        assert grad_e.abs().max() > 0
        assert (grad_f - grad_e).abs().max() <= 1e-5 * (1 + grad_e.abs().max())


def test_explicit_only_features_fall_back(make_checkpoint) -> None:
    """attn-result mode (hook_result per head) and TransformerLens's compatibility masks use the explicit path."""
    model = HookedRewardModel.from_pretrained(make_checkpoint("llama"))
    tokens, mask = batch()
    model.set_use_attn_result(True)
    _, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=["blocks.0.attn.hook_result"])
    assert attention_paths(model) == [EXPLICIT, EXPLICIT]
    assert cache["blocks.0.attn.hook_result"].shape[-2:] == (model.cfg.n_heads, model.cfg.d_model)
    model.set_use_attn_result(False)
    with torch.no_grad():
        model(tokens, attention_mask=mask)
    assert attention_paths(model) == [FUSED, FUSED]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_kv_cache_of_the_fast_sweep_runs_fused(make_checkpoint, arch: str) -> None:
    """The fast residual sweep hands the attention a cache of the earlier positions' keys/values: the fused path
    extends k/v and aligns the causal mask to the end as the explicit path does."""
    from hooked_reward.analysis.patching import patch_resid

    model = HookedRewardModel.from_pretrained(make_checkpoint(arch))
    clean, corrupt = torch.tensor([2, 10, 11, 12, 13, 14, 15, 16]), torch.tensor([2, 10, 20, 12, 21, 14, 22, 16])
    fused = patch_resid(model, clean, corrupt, progress=False, fast=True)
    assert fused.meta["fast"] and attention_paths(model) == [FUSED] * model.cfg.n_layers
    model.set_fused_attention(False)
    explicit = patch_resid(model, clean, corrupt, progress=False, fast=True)
    plain = patch_resid(model, clean, corrupt, progress=False, fast=False)
    assert (fused.rewards - explicit.rewards).abs().max() <= 1e-5
    assert (fused.rewards - plain.rewards).abs().max() <= 1e-4


@pytest.mark.parametrize("arch", ARCHS)
def test_reward_position_cache_computes_only_the_reward_rows(make_checkpoint, arch: str) -> None:
    """`positions="reward"` keeps one query row of every score/pattern: fused layers stay fused and compute
    that row alone; it equals the row of the explicit path's full pattern (Gemma-2: gathered from it)."""
    model = HookedRewardModel.from_pretrained(make_checkpoint(arch))
    for left in (False, True):
        tokens, mask = batch(left)
        with torch.no_grad():
            rewards, rows = model.run_with_cache(tokens, attention_mask=mask, positions="reward")
            assert attention_paths(model) == [FUSED if FUSES[arch] else EXPLICIT] * model.cfg.n_layers
            model.set_fused_attention(False)
            rewards_full, full = model.run_with_cache(tokens, attention_mask=mask)
            model.set_fused_attention(True)
        reward_pos = model.reward_positions(mask, tokens)
        for layer in range(model.cfg.n_layers):
            for hook in ("hook_attn_scores", "hook_pattern"):
                name = f"blocks.{layer}.attn.{hook}"
                expected = full[name][torch.arange(4), :, reward_pos].unsqueeze(2)
                assert rows[name].shape == expected.shape == (4, model.cfg.n_heads, 1, tokens.shape[1])
                assert torch.allclose(rows[name], expected, rtol=1e-5, atol=1e-5), name
        assert (rows["blocks.1.attn.hook_pattern"].sum(-1) - 1).abs().max() <= 1e-5
        assert (rewards - rewards_full).abs().max() <= 1e-4
