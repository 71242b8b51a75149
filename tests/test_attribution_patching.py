"""Attribution patching: exact where the reward is linear in the site, same axes as exact patching."""

from __future__ import annotations

import pytest
import torch
from conftest import build_hf_model, load_tiny

from hooked_reward import HookedRewardModel, InputError
from hooked_reward.analysis.attribution_patching import attribution_patch, gradients_and_deltas, plot_comparison
from hooked_reward.analysis.patching import Patch, align_pair, as_row, patch_block_outputs, patch_hooks, patch_resid

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
