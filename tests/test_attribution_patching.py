"""Attribution patching: exact where the reward is linear in the site, same axes as exact patching."""

from __future__ import annotations

import pytest
import torch
from conftest import build_hf_model, load_tiny

from hooked_reward import HookedRewardModel, InputError
from hooked_reward.analysis.attribution_patching import attribution_patch, gradients_and_deltas, plot_comparison
from hooked_reward.analysis.patching import (
    Patch,
    align_pair,
    as_row,
    patch_block_outputs,
    patch_hooks,
    patch_resid,
    reward_alignment,
)

CLEAN, CORRUPT = "the cat is very good", "the dog is not bad"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> HookedRewardModel:
    return load_tiny(build_hf_model("gpt2"), tmp_path_factory.mktemp("gpt2"))


@pytest.mark.parametrize("mode", ["denoise", "noise"])
def test_exact_where_the_reward_is_linear_in_the_site(model, mode):
    # after the final norm's scale, the reward is affine in ln_final.hook_normalized at every position
    hook = "ln_final.hook_normalized"
    clean, corrupt = as_row(model, CLEAN), as_row(model, CORRUPT)
    target, source = (corrupt, clean) if mode == "denoise" else (clean, corrupt)
    _, _, grads, deltas = gradients_and_deltas(model, target, source, [hook], align_pair(6, 6))
    approx = (grads[hook] * deltas[hook]).sum(-1)
    sites = {str(p): Patch(hook, (p,)) for p in range(len(target))}
    exact = patch_hooks(model, CLEAN, CORRUPT, sites, mode=mode, progress=False)
    assert torch.allclose(approx, exact.values, atol=1e-4)
    assert exact.values[:-1].abs().max() < 1e-5  # only the reward position is read
    # the same holds for the reward-position residual the head reads
    hook = "hook_reward_resid"
    _, _, grads, deltas = gradients_and_deltas(model, target, source, [hook], align_pair(6, 6))
    exact = patch_hooks(model, CLEAN, CORRUPT, {"r": Patch(hook)}, mode=mode, progress=False)
    assert float((grads[hook] * deltas[hook]).sum()) == pytest.approx(float(exact.values[0]), abs=1e-4)


def test_same_axes_as_exact_patching_and_correlated(model):
    approx = attribution_patch(model, CLEAN, CORRUPT, sites=("resid_pre", "attn_out", "mlp_out", "z"))
    exact = patch_resid(model, CLEAN, CORRUPT, progress=False)
    assert approx.dims == ("site", "layer", "pos") and approx.labels["site"] == [
        "resid_pre",
        "attn_out",
        "mlp_out",
        "z",
    ]
    a = approx.sweep("resid_pre")
    assert a.values.shape == exact.values.shape and a.labels == exact.labels
    assert a.r_clean == pytest.approx(exact.r_clean, abs=1e-5)
    assert a.r_corrupt == pytest.approx(exact.r_corrupt, abs=1e-5)
    # layer 0 resid_pre is the embedding: exact patching of the reward position at the last layer is linear
    # in nothing, but the estimates must at least rank-correlate with the exact effects over the grid
    x, y = exact.values.flatten(), a.values.flatten()
    assert torch.corrcoef(torch.stack([x, y]))[0, 1] > 0.5
    blocks = patch_block_outputs(model, CLEAN, CORRUPT, progress=False)
    assert approx.sweep("block_outputs").labels == blocks.labels
    assert approx.sweep("z").values.shape == (model.cfg.n_layers, model.cfg.n_heads)
    # the site axis holds the same numbers as the exact-sweep views: z summed over heads, outputs over positions
    assert torch.allclose(approx.sel(site="z").values.nansum(-1), approx.sweep("z").values.sum(-1), atol=1e-6)
    assert torch.allclose(approx.sel(site="resid_pre").values, a.values, equal_nan=True)
    assert torch.allclose(approx.sweep("block_outputs").values[1::2], approx.sweep("mlp_out").values)
    import matplotlib

    matplotlib.use("Agg")
    plot_comparison(exact, a)


def test_alignment_rules_apply(model):
    with pytest.raises(InputError, match="different lengths"):
        attribution_patch(model, CLEAN, "the cat is good")
    res = attribution_patch(model, CLEAN, "the cat is good", sites=("resid_post",), align="prompt", prompt_len=3)
    grid = res.sweep("resid_post").values
    assert torch.isnan(grid[:, 3:]).all() and torch.allclose(grid[:, :3], torch.zeros_like(grid[:, :3]), atol=1e-6)


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gpt2"])
def test_checkpointed_gradients_equal_a_plain_backward(tmp_path, arch):
    """Issue 33: the blocks run checkpointed (one block's intermediates at a time during the backward); the
    gradients equal those of a plain forward/backward with hooks keeping the activations, at every site, and the
    model is left as it was (no block forward overridden, hooks removed)."""
    model = load_tiny(build_hf_model(arch), tmp_path / arch)
    target, source = as_row(model, CORRUPT), as_row(model, CLEAN)
    n = model.cfg.n_layers
    hooks = [f"blocks.{l}.{h}" for l in range(n) for h in ("hook_resid_pre", "hook_attn_out", "attn.hook_z")]  # noqa: E741
    hooks += ["ln_final.hook_normalized", "hook_reward_resid"]
    align = reward_alignment(model, target, source, None, None)
    r_t, _, grads, _ = gradients_and_deltas(model, target, source, hooks, align)
    store = {}
    fwd = [(h, lambda act, hook, h=h: store.setdefault(h, act)) for h in hooks]  # returned: in the graph
    with torch.enable_grad():
        reward = model.run_with_hooks(target[None], fwd_hooks=fwd)[0]
        reference = torch.autograd.grad(reward, [store[h] for h in hooks], allow_unused=True)
    assert r_t == pytest.approx(float(reward), abs=1e-6)
    for h, ref in zip(hooks, reference, strict=True):
        ref = torch.zeros_like(store[h]) if ref is None else ref  # a hook value the model does not use
        assert torch.allclose(grads[h], ref[0], atol=1e-6, rtol=1e-5), h
        assert not h.startswith("blocks.") or ref.abs().max() > 0, h
    assert all("forward" not in block.__dict__ for block in model.blocks)
    assert not any(hp.has_hooks() for hp in model.hook_dict.values())


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gpt2"])
def test_attribution_values_equal_gradient_times_delta(tmp_path, arch):
    """Issue 33: `attribution_values` (deltas formed as the target run fires, products taken in the backward,
    parameters not requiring grad) gives `gradients_and_deltas`'s gradient x delta at every site, including the
    fallback for a hook before block 0; the parameters require grad again afterwards."""
    from hooked_reward.analysis.attribution_patching import attribution_values

    model = load_tiny(build_hf_model(arch), tmp_path / arch)
    target, source = as_row(model, CORRUPT), as_row(model, CLEAN)
    align = reward_alignment(model, target, source, None, None)
    n = model.cfg.n_layers
    sites = ("hook_resid_pre", "hook_resid_mid", "hook_attn_out", "hook_mlp_out", "attn.hook_z")
    hooks = [f"blocks.{l}.{h}" for l in range(n) for h in sites] + ["hook_reward_resid"]  # noqa: E741
    for names in (hooks, ["hook_embed", *hooks[:3]]):
        r_t, r_s, grads, deltas = gradients_and_deltas(model, target, source, names, align)
        r_t2, r_s2, values = attribution_values(model, target, source, names, align)
        assert (r_t2, r_s2) == pytest.approx((r_t, r_s), abs=1e-6)
        for h in names:
            expected = (grads[h] * deltas[h]).sum(-1)
            assert values[h].shape == expected.shape, h
            assert torch.allclose(values[h], expected, atol=1e-6, rtol=1e-5), h
        assert values[names[-1]].abs().max() > 0
    assert all(p.requires_grad for p in model.parameters())
    assert all("forward" not in block.__dict__ for block in model.blocks)
