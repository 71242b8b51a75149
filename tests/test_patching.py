"""Activation patching: exact endpoints, agreement with transformer_lens.patching, alignment, ablation modes."""

from __future__ import annotations

import pytest
import torch
import transformer_lens.patching as tlp
from conftest import build_hf_model, load_tiny, word_tokenizer

from hooked_reward import HookedRewardModel, InputError
from hooked_reward.analysis.patching import (
    Patch,
    align_pair,
    as_row,
    patch_block_outputs,
    patch_heads,
    patch_hooks,
    patch_resid,
)

CLEAN, CORRUPT = "the cat is very good", "the dog is not bad"
ATOL = 1e-4


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> HookedRewardModel:
    return load_tiny(build_hf_model("llama"), tmp_path_factory.mktemp("llama"))


def reward(model: HookedRewardModel, text: str, hooks=()) -> float:
    with torch.no_grad():
        return float(model.run_with_hooks(as_row(model, text)[None], fwd_hooks=list(hooks))[0])


@pytest.mark.parametrize("site", ["last_resid_post", "first_resid_pre"])
def test_patching_every_position_gives_the_endpoint_rewards(model, site):
    last = model.cfg.n_layers - 1
    hook = f"blocks.{last}.hook_resid_post" if site == "last_resid_post" else "blocks.0.hook_resid_pre"
    sites = {"all": Patch(hook)}
    den = patch_hooks(model, CLEAN, CORRUPT, sites, mode="denoise", progress=False)
    noi = patch_hooks(model, CLEAN, CORRUPT, sites, mode="noise", progress=False)
    assert float(den.rewards[0]) == pytest.approx(den.r_clean, abs=ATOL)
    assert float(noi.rewards[0]) == pytest.approx(noi.r_corrupt, abs=ATOL)
    assert float(den.fraction[0]) == pytest.approx(1.0, abs=1e-3)
    assert float(noi.fraction[0]) == pytest.approx(0.0, abs=1e-3)
    assert den.r_clean == pytest.approx(reward(model, CLEAN), abs=ATOL)


def test_resid_sweep_causal_structure_and_reward_position(model):
    res = patch_resid(model, CLEAN, CORRUPT, hook="resid_post", progress=False)
    n_pos = len(as_row(model, CLEAN))
    assert res.values.shape == (model.cfg.n_layers, n_pos)
    # token 1 is the first that differs ("the" is shared): position 0 carries no difference at any layer
    assert torch.allclose(res.values[:, 0], torch.zeros(model.cfg.n_layers), atol=ATOL)
    # at the last layer only the reward position matters, and patching it gives the clean reward
    assert torch.allclose(res.values[-1, :-1], torch.zeros(n_pos - 1), atol=ATOL)
    assert float(res.fraction[-1, -1]) == pytest.approx(1.0, abs=1e-3)


def test_batching_does_not_change_results(model):
    a = patch_heads(model, CLEAN, CORRUPT, act="v", per_position=True, max_rows=64, progress=False)
    b = patch_heads(model, CLEAN, CORRUPT, act="v", per_position=True, max_rows=3, progress=False)
    assert torch.allclose(a.rewards, b.rewards, atol=ATOL)
    assert a.values.shape == (model.cfg.n_layers, model.cfg.n_key_value_heads, len(as_row(model, CORRUPT)))


def test_agrees_with_transformer_lens_patching(model):
    clean, corrupt = as_row(model, CLEAN)[None], as_row(model, CORRUPT)[None]
    _, cache = model.run_with_cache(clean)

    def metric(r):
        return r.squeeze()

    theirs = tlp.get_act_patch_resid_pre(model, corrupt, cache, metric)
    ours = patch_resid(model, CLEAN, CORRUPT, progress=False).rewards
    assert torch.allclose(theirs, ours, atol=ATOL)
    theirs = tlp.get_act_patch_attn_head_out_all_pos(model, corrupt, cache, metric)
    ours = patch_heads(model, CLEAN, CORRUPT, progress=False).rewards
    assert torch.allclose(theirs, ours, atol=ATOL)
    theirs = tlp.get_act_patch_attn_head_pattern_all_pos(model, corrupt, cache, metric)
    ours = patch_heads(model, CLEAN, CORRUPT, act="pattern", progress=False).rewards
    assert torch.allclose(theirs, ours, atol=ATOL)


def test_different_lengths_are_refused_without_alignment(model):
    short = "the cat is good"
    with pytest.raises(InputError, match="different lengths"):
        patch_resid(model, CLEAN, short, progress=False)
    with pytest.raises(InputError, match="prompt_len"):
        patch_resid(model, CLEAN, short, align="prompt", progress=False)
    with pytest.raises(InputError, match="exceeds"):
        align_pair(5, 6, "prompt", prompt_len=6)
    with pytest.raises(InputError, match="patterns"):
        patch_heads(model, CLEAN, short, act="pattern", align="reward", progress=False)
    with pytest.raises(InputError, match="align must be"):
        align_pair(5, 5, "left")


def test_reward_and_prompt_alignment(model):
    short = "the cat is good"  # 5 tokens; CLEAN has 6
    res = patch_resid(model, CLEAN, short, hook="resid_post", align="reward", progress=False)
    # denoise: target is the short corrupted row; right-aligned, its reward position reads CLEAN's
    assert res.values.shape == (model.cfg.n_layers, 5)
    assert float(res.fraction[-1, -1]) == pytest.approx(1.0, abs=1e-3)
    al = align_pair(5, 6, "reward")
    assert (al.lo, al.hi, al.offset) == (0, 5, -1)
    tgt, src = al.indices(None)
    assert tgt.tolist() == [0, 1, 2, 3, 4] and src.tolist() == [1, 2, 3, 4, 5]
    res = patch_resid(model, CLEAN, short, align="prompt", prompt_len=3, progress=False)
    assert torch.isnan(res.values[:, 3:]).all() and not torch.isnan(res.values[:, :3]).any()
    # the shared prompt "<s> the cat" is identical in both: no effect anywhere in the span
    assert torch.allclose(res.values[:, :3], torch.zeros(model.cfg.n_layers, 3), atol=ATOL)


def test_ablation_modes_match_hand_computation(model):
    hook, head = "blocks.0.attn.hook_z", 1
    refs = ["a dog was bad", "the answer is yes no please"]

    def set_head(value):
        def fn(act, hook):
            act = act.clone()
            act[:, :, head] = value
            return act

        return [(hook, fn)]

    res = patch_hooks(model, CLEAN, CORRUPT, {"z": Patch(hook, None, head)}, mode="zero", progress=False)
    assert float(res.rewards[0]) == pytest.approx(reward(model, CLEAN, set_head(0.0)), abs=ATOL)
    assert float(res.values[0]) == pytest.approx(float(res.rewards[0]) - reward(model, CLEAN), abs=ATOL)

    acts = []
    for text in refs:
        _, cache = model.run_with_cache(as_row(model, text)[None], names_filter=hook)
        acts.append(cache[hook][0, :, head])
    mean = torch.cat(acts).mean(0)
    res = patch_hooks(model, CLEAN, None, {"z": Patch(hook, None, head)}, mode="mean", reference=refs, progress=False)
    assert float(res.rewards[0]) == pytest.approx(reward(model, CLEAN, set_head(mean)), abs=ATOL)
    assert torch.isnan(res.fraction).all()  # no corrupted input: no corrupt -> clean scale

    same_len = ["a dog was not bad", "the answer is yes no"]
    hand = []
    for text in same_len:
        _, cache = model.run_with_cache(as_row(model, text)[None], names_filter=hook)
        hand.append(reward(model, CLEAN, set_head(cache[hook][0, :, head])))
    res = patch_hooks(
        model, CLEAN, CORRUPT, {"z": Patch(hook, None, head)}, mode="resample", reference=same_len, progress=False
    )
    assert float(res.rewards[0]) == pytest.approx(sum(hand) / len(hand), abs=ATOL)
    with pytest.raises(InputError, match="reference"):
        patch_resid(model, CLEAN, mode="mean", progress=False)


def test_block_outputs_and_result_views(model):
    res = patch_block_outputs(model, CLEAN, CORRUPT, progress=False)
    assert res.labels[res.dims[0]] == ["0_attn_out", "0_mlp_out", "1_attn_out", "1_mlp_out"]
    frame = res.to_frame()
    assert list(frame.columns[:2]) == ["component", "reward"] and len(frame) == 4
    per_pos = patch_block_outputs(model, CLEAN, CORRUPT, per_position=True, progress=False)
    assert per_pos.values.shape == (4, 6)
    import matplotlib

    matplotlib.use("Agg")
    res.plot()
    per_pos.plot(what="fraction")


# ---------------------------------------------------------------------------------------------------- fast sweep
def naive_resid_sweep(model, target: str, source: str, hook: str = "resid_pre") -> torch.Tensor:
    """Denoise-style sweep by hand: one full `run_with_hooks` forward per (layer, position)."""
    tgt, src = as_row(model, target)[None], as_row(model, source)[None]
    names = [f"blocks.{l}.hook_{hook}" for l in range(model.cfg.n_layers)]  # noqa: E741
    _, cache = model.run_with_cache(src, names_filter=names)
    out = torch.empty(len(names), tgt.shape[1])
    for layer, name in enumerate(names):
        for p in range(tgt.shape[1]):

            def put(act, hook, p=p, name=name):
                act = act.clone()
                act[:, p] = cache[name][:, p]
                return act

            out[layer, p] = reward_of(model, tgt, [(name, put)])
    return out


def reward_of(model, tokens, hooks) -> float:
    with torch.no_grad():
        return float(model.run_with_hooks(tokens, fwd_hooks=hooks)[0])


# sequences of 8 tokens: longer than the tiny Mistral / Gemma-2 sliding window (4), so windows are exercised
LONG_CLEAN, LONG_CORRUPT = "the cat is very good please thanks", "the dog is not bad please no"


@pytest.mark.parametrize("arch", ["llama", "mistral", "gemma2", "qwen2", "gpt2", "qwen3"])
def test_fast_resid_sweep_equals_one_forward_per_patch(arch):
    m = HookedRewardModel.from_hf_model(build_hf_model(arch), tokenizer=word_tokenizer())
    fast = patch_resid(m, LONG_CLEAN, LONG_CORRUPT, progress=False, fast=True)
    assert fast.meta["fast"], fast.meta["fast_reason"]
    naive = naive_resid_sweep(m, LONG_CORRUPT, LONG_CLEAN)
    assert (fast.rewards - naive).abs().max() < ATOL
    assert naive.std() > 0.05  # the grid is not trivially constant
    # noising on resid_post (enters the next block; the last layer's enters ln_final), against the plain sweep
    a = patch_resid(m, LONG_CLEAN, LONG_CORRUPT, hook="resid_post", mode="noise", max_rows=3, progress=False, fast=True)
    b = patch_resid(m, LONG_CLEAN, LONG_CORRUPT, hook="resid_post", mode="noise", progress=False, fast=False)
    assert a.meta["fast"] and not b.meta["fast"]
    assert (a.rewards - b.rewards).abs().max() < ATOL


def test_fast_sweep_modes_alignment_and_fallbacks(model, monkeypatch):
    short = "the cat is good"
    refs = ["a dog was not bad", "the answer is yes no"]
    cases = [
        dict(corrupt=CORRUPT, mode="resample", reference=refs),
        dict(corrupt=CORRUPT, mode="mean", reference=refs + [short]),
        dict(corrupt=CORRUPT, mode="zero", layers=[1]),
        dict(corrupt=short, align="reward"),
        dict(corrupt=short, align="prompt", prompt_len=3, hook="resid_post"),
    ]
    for kw in cases:
        kw = dict(kw)
        corrupt = kw.pop("corrupt")
        a = patch_resid(model, CLEAN, corrupt, progress=False, fast=True, **kw)
        b = patch_resid(model, CLEAN, corrupt, progress=False, fast=False, **kw)
        assert a.meta["fast"], kw
        assert torch.equal(a.rewards.isnan(), b.rewards.isnan())
        assert (a.rewards - b.rewards).nan_to_num().abs().max() < ATOL, kw
    res = patch_resid(model, CLEAN, CORRUPT, hook="resid_mid", progress=False, fast=True)
    assert not res.meta["fast"] and "inside a block" in res.meta["fast_reason"]
    # a fast path that does not reproduce the unpatched run is caught by its self-check: plain sweep, warning
    from hooked_reward.analysis import patching_fast

    # (here: the cache forgets the prefix, so suffix positions attend to themselves only)
    record = patching_fast._PrefixKV.update

    def forgetful(self, k, v, *args, **kwargs):
        return record(self, k, v, *args, **kwargs) if self.prefix_len is None else (k, v)

    monkeypatch.setattr(patching_fast._PrefixKV, "update", forgetful)
    with pytest.warns(UserWarning, match="self-check failed"):
        res = patch_resid(model, CLEAN, CORRUPT, progress=False, fast=True)
    assert not res.meta["fast"]
    assert torch.allclose(res.rewards, patch_resid(model, CLEAN, CORRUPT, progress=False, fast=False).rewards)


def test_fast_sweep_multi_output_head():
    m = HookedRewardModel.from_hf_model(build_hf_model("qwen2", num_labels=3), tokenizer=word_tokenizer())
    a = patch_resid(m, CLEAN, CORRUPT, output=2, progress=False, fast=True)
    b = patch_resid(m, CLEAN, CORRUPT, output=2, progress=False, fast=False)
    assert a.meta["fast"] and (a.rewards - b.rewards).abs().max() < ATOL


@pytest.mark.parametrize("fast", [True, None])
def test_fast_sweep_output_by_name(fast, monkeypatch) -> None:
    """`output="label_1"` on a multi-output head: the fast sweep (forced, and chosen by the default `fast=None`
    when it pays) gives the same numbers as `output=1` on the plain sweep (it used to raise TypeError)."""
    m = HookedRewardModel.from_hf_model(build_hf_model("qwen2", num_labels=3), tokenizer=word_tokenizer())
    assert m.output_names[1] == "label_1"
    if fast is None:  # make the default pick the fast sweep at this tiny size
        import hooked_reward.analysis.patching_fast as pf

        monkeypatch.setattr(pf, "FAST_SWEEP_MIN_WORK", 0)
    a = patch_resid(m, CLEAN, CORRUPT, output="label_1", progress=False, fast=fast)
    b = patch_resid(m, CLEAN, CORRUPT, output=1, progress=False, fast=False)
    assert a.meta["fast"] and (a.rewards - b.rewards).abs().max() < ATOL


def test_out_of_range_layers_and_outputs_are_refused(make_checkpoint) -> None:
    model = HookedRewardModel.from_pretrained(make_checkpoint("gpt2"))
    clean = torch.tensor([[5, 6, 7, 8]])
    corrupt = torch.tensor([[5, 9, 7, 8]])
    with pytest.raises(InputError, match="out of range"):
        patch_resid(model, clean, corrupt, layers=[5], progress=False)
    multi = HookedRewardModel.from_pretrained(make_checkpoint("qwen2", num_labels=3))
    with pytest.raises(InputError, match="out of range"):
        patch_resid(multi, clean, corrupt, output=5, progress=False)


def test_sweep_picks_the_faster_path(model, monkeypatch):
    """`fast=None` (the default) uses the fast sweep only from the measured size on (n_layers x positions x
    d_model >= FAST_SWEEP_MIN_WORK); both paths give the same numbers."""
    from hooked_reward.analysis import patching_fast

    threshold = patching_fast.FAST_SWEEP_MIN_WORK
    assert not patching_fast.fast_sweep_pays(36, 4, 128)  # below the crossover measured on CPU
    assert patching_fast.fast_sweep_pays(128, 8, 512)  # the benchmark's sweep
    assert patching_fast.fast_sweep_pays(threshold, 1, 1) and not patching_fast.fast_sweep_pays(threshold - 1, 1, 1)
    n_pos, n_layers, d_model = len(as_row(model, CLEAN)), model.cfg.n_layers, model.cfg.d_model
    assert n_pos * n_layers * d_model < threshold  # the tiny test model: the plain sweep is faster
    auto = patch_resid(model, CLEAN, CORRUPT, progress=False)
    assert not auto.meta["fast"] and "plain sweep is faster" in auto.meta["fast_reason"]
    monkeypatch.setattr(patching_fast, "FAST_SWEEP_MIN_WORK", n_pos * n_layers * d_model)
    auto_fast = patch_resid(model, CLEAN, CORRUPT, progress=False)
    assert auto_fast.meta["fast"], auto_fast.meta["fast_reason"]
    assert (auto_fast.rewards - auto.rewards).abs().max() < ATOL


def test_patch_spec_is_the_keywords_as_one_object(model):
    """`spec=PatchSpec(...)` and the same options as keywords run the same experiment; keywords override the spec;
    an unknown option is a TypeError, a bad mode an InputError naming the choices."""
    from hooked_reward.analysis.patching import PatchSpec
    from hooked_reward.analysis.path_patching import path_patch

    short = "the dog is bad"
    spec = PatchSpec(mode="noise", align="reward", max_rows=3, progress=False)
    by_spec = patch_resid(model, CLEAN, short, hook="resid_post", spec=spec)
    by_kw = patch_resid(
        model, CLEAN, short, hook="resid_post", mode="noise", align="reward", max_rows=3, progress=False
    )
    torch.testing.assert_close(by_spec.values, by_kw.values, equal_nan=True)
    assert by_spec.mode == "noise"
    # a keyword beside a spec overrides it: denoising endpoints at the last layer's reward position
    den = patch_resid(model, CLEAN, short, hook="resid_post", spec=spec, mode="denoise")
    assert den.mode == "denoise" and float(den.fraction[-1, -1]) == pytest.approx(1.0, abs=1e-3)
    paths = path_patch(model, CLEAN, CORRUPT, spec=PatchSpec(progress=False, max_rows=2))
    assert torch.isfinite(paths.values).all()
    with pytest.raises(TypeError, match="max_row"):
        patch_heads(model, CLEAN, CORRUPT, max_row=4)
    with pytest.raises(InputError, match="mode must be one of"):
        PatchSpec(mode="denoize")
    with pytest.raises(InputError, match="path patching supports"):
        path_patch(model, CLEAN, CORRUPT, mode="zero")
