"""Issue 5: the reward lens against HF's own forward (hidden states, final norm, score), on every architecture."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import transformers
from conftest import ARCHS, build_hf_model, hf_reference_rewards, padded_tokens, save_checkpoint

from hooked_reward import HookedRewardModel, InputError
from hooked_reward.analysis.lens import lens_points, reward_lens, reward_lens_from_cache

TOL = 1e-4


def padded(left: bool = False, lengths: tuple[int, ...] = (9, 6, 4)) -> tuple[torch.Tensor, torch.Tensor]:
    return padded_tokens(lengths, left=left, seed=3)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, int], Path]:
    out = {}
    for arch, n_labels in [(a, 1) for a in ARCHS] + [("qwen2", 3), ("gpt2", 2)]:
        path = tmp_path_factory.mktemp(f"{arch}{n_labels}")
        out[(arch, n_labels)] = save_checkpoint(build_hf_model(arch, num_labels=n_labels), path)
    return out


def hf_final_norm(hf: torch.nn.Module) -> torch.nn.Module:
    backbone = getattr(hf, hf.base_model_prefix)
    return backbone.norm if hasattr(backbone, "norm") else backbone.ln_f


def hf_lens_reference(path: Path, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row run alone in HF: `(recomputed, frozen)`, each `[row, layer_pre(n_layers) + final, pos, out]`.

    recomputed: `score(final_norm(hidden_states[l]))`; frozen: `(P h / σ) · (W_R ⊙ g) + b_R + W_R · β` with σ
    computed by hand from the final norm's input in the same run. Rows are padded with NaN past their length.
    """
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(str(path), dtype=torch.float32).eval()
    norm = hf_final_norm(hf)
    captured: dict[str, torch.Tensor] = {}
    handle = norm.register_forward_pre_hook(lambda m, args: captured.__setitem__("final_in", args[0]))
    layer_norm = isinstance(norm, torch.nn.LayerNorm)
    eps = norm.eps if layer_norm else getattr(norm, "eps", getattr(norm, "variance_epsilon", None))
    gain = norm.weight + (1.0 if "Gemma" in type(norm).__name__ else 0.0)
    beta = norm.bias if layer_norm else torch.zeros_like(gain)
    w_r = hf.score.weight  # [out, d]
    b_r = hf.score.bias if hf.score.bias is not None else torch.zeros(w_r.shape[0])
    n_layers = hf.config.num_hidden_layers
    rec_rows, frz_rows = [], []
    with torch.no_grad():
        for i in range(tokens.shape[0]):
            alone = tokens[i][mask[i].bool()][None]
            hs = hf(alone, output_hidden_states=True).hidden_states  # n_layers + 1, the last after the norm
            final_in = captured["final_in"][0]  # [pos, d]
            points = torch.stack([hs[j][0] for j in range(n_layers)] + [final_in])  # [point, pos, d]
            rec_rows.append(norm(points) @ w_r.T + b_r)
            centred = points - points.mean(-1, keepdim=True) if layer_norm else points
            fin = final_in - final_in.mean(-1, keepdim=True) if layer_norm else final_in
            sigma = (fin.pow(2).mean(-1, keepdim=True) + eps).sqrt()  # [pos, 1]: each position's own scale
            frz_rows.append((centred / sigma) @ (w_r * gain).T + b_r + w_r @ beta)
    handle.remove()
    width = int(mask.sum(-1).max())

    def pad(rows: list[torch.Tensor]) -> torch.Tensor:
        nan = float("nan")
        return torch.stack([torch.nn.functional.pad(r, (0, 0, 0, width - r.shape[1]), value=nan) for r in rows])

    return pad(rec_rows), pad(frz_rows)


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    both = ~(a.isnan() | b.isnan())
    return bool(torch.equal(a.isnan(), b.isnan())) and float((a[both] - b[both]).abs().max()) <= TOL


@pytest.mark.parametrize("arch", ARCHS)
def test_lens_matches_hf_every_position(checkpoints, arch: str) -> None:
    """Both variants at every layer and token equal hand computations on HF's hidden states; the last point
    equals HF's reward."""
    path = checkpoints[(arch, 1)]
    model = HookedRewardModel.from_pretrained(path)
    tokens, mask = padded(left=arch in ("llama", "gemma2"))
    rec_ref, frz_ref = hf_lens_reference(path, tokens, mask)  # [row, point, pos, 1]
    res = reward_lens(
        model, tokens, attention_mask=mask, sublayers=False, per_position=True, batch_size=2, progress=False
    )
    assert res.dims == ("variant", "text", "point", "pos")
    assert res.axis_labels("point") == [f"{l_}_pre" for l_ in range(model.cfg.n_layers)] + ["final_post"]
    assert close(res.variant("recomputed"), rec_ref[..., 0])
    assert close(res.variant("frozen"), frz_ref[..., 0])

    at_reward = reward_lens(
        model, tokens, attention_mask=mask, progress=False
    )  # with sub-layers, at the reward token only
    hf_rewards = hf_reference_rewards(path, tokens, mask)
    assert (at_reward.values[:, :, -1] - hf_rewards).abs().max() <= TOL  # both variants end at the reward
    assert (at_reward.rewards - hf_rewards).abs().max() <= TOL
    last = mask.sum(-1) - 1
    pre = [at_reward.index_of("point", f"{l_}_pre") for l_ in range(model.cfg.n_layers)] + [-1]
    for i in range(tokens.shape[0]):
        assert (at_reward.values[:, i, pre] - res.values[:, i, :, last[i]]).abs().max() <= TOL


@pytest.mark.parametrize("arch", ["gpt2", "gemma2"])
def test_frozen_lens_steps_are_sublayer_direct_rewards(checkpoints, arch: str) -> None:
    """The frozen lens is additive: each step equals that sub-layer's direct reward (core cache's
    `reward_attrs` of `hook_attn_out` / `hook_mlp_out`); the recomputed lens is not (it renormalises)."""
    model = HookedRewardModel.from_pretrained(checkpoints[(arch, 1)])
    tokens, mask = padded()
    res = reward_lens(model, tokens, attention_mask=mask, progress=False)
    _, cache = model.run_with_cache(tokens, attention_mask=mask)
    frozen = res.variant("frozen")
    steps = frozen[:, 1:] - frozen[:, :-1]  # [text, step]
    expected = torch.stack(
        [
            cache.reward_attrs(cache[f"blocks.{l_}.hook_{part}_out"][None])[0]
            for l_ in range(model.cfg.n_layers)
            for part in ("attn", "mlp")
        ],
        dim=1,
    )
    assert (steps - expected).abs().max() <= TOL
    first = cache.reward_attrs(cache["blocks.0.hook_resid_pre"][None])[0] + model.b_R_eff
    assert (frozen[:, 0] - first).abs().max() <= TOL
    rec = res.variant("recomputed")
    assert (rec[:, :-1] - frozen[:, :-1]).abs().max() > 1e-3  # the variants differ before the last point


def test_multi_output_and_output_selection(checkpoints) -> None:
    path = checkpoints[("qwen2", 3)]
    model = HookedRewardModel.from_pretrained(path)
    tokens, mask = padded()
    res = reward_lens(model, tokens, attention_mask=mask, progress=False)
    assert res.dims == ("variant", "text", "point", "output") and res.values.shape[-1] == 3
    hf_rewards = hf_reference_rewards(path, tokens, mask)  # [row, 3]
    assert (res.values[:, :, -1] - hf_rewards).abs().max() <= TOL
    one = reward_lens(model, tokens, attention_mask=mask, output=1, progress=False)
    assert one.dims == ("variant", "text", "point")
    assert (one.values - res.values[..., 1]).abs().max() <= TOL
    rec_ref, frz_ref = hf_lens_reference(path, tokens, mask)
    pp = reward_lens(model, tokens, attention_mask=mask, sublayers=False, per_position=True, progress=False)
    assert close(pp.variant("frozen"), frz_ref) and close(pp.variant("recomputed"), rec_ref)
    # gpt2 with two labels: LayerNorm (b_R_eff != 0) and multiple outputs
    path = checkpoints[("gpt2", 2)]
    model = HookedRewardModel.from_pretrained(path)
    res = reward_lens(model, tokens, attention_mask=mask, progress=False)
    assert (res.values[:, :, -1] - hf_reference_rewards(path, tokens, mask)).abs().max() <= TOL


def test_batching_padding_text_and_cache_agree(checkpoints) -> None:
    model = HookedRewardModel.from_pretrained(checkpoints[("llama", 1)])
    texts = ["the cat is good", "a dog was very bad please", "yes", "no thanks the answer is great"]
    one = reward_lens(model, texts, batch_size=1, progress=False)
    four = reward_lens(model, texts, batch_size=4, progress=False)
    assert (one.values - four.values).abs().max() <= TOL
    model.tokenizer.padding_side = "left"
    left = reward_lens(model, texts, batch_size=4, per_position=True, progress=False)
    model.tokenizer.padding_side = "right"
    right = reward_lens(model, texts, batch_size=3, per_position=True, progress=False)
    assert close(left.values, right.values)  # per-position axes are each text's own token indices
    assert left.meta["tokens"][2] == ["<s>", "yes"]
    _, cache = model.run_with_cache(texts)
    assert (reward_lens_from_cache(cache).values - four.values).abs().max() <= TOL
    frozen_only = reward_lens(model, texts, variants="frozen", sublayers=False, progress=False)
    assert frozen_only.values.shape == (1, 4, model.cfg.n_layers + 1)
    assert [h for h in frozen_only.hook_names] == [h for _, h in lens_points(model, sublayers=False)]


def test_frame_plot_and_errors(checkpoints) -> None:
    import matplotlib

    matplotlib.use("Agg")
    model = HookedRewardModel.from_pretrained(checkpoints[("gpt2", 1)])
    res = reward_lens(model, ["the cat is good", "a dog"], progress=False)
    frame = res.to_frame()
    assert list(frame.columns) == ["variant", "text", "point", "reward"]
    assert len(frame) == res.values.numel()
    row = frame[(frame.variant == "recomputed") & (frame.text == 1) & (frame.point == "final_post")]
    assert abs(float(row.reward.iloc[0]) - float(res.rewards[1])) <= TOL
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert res.plot() is not None
        assert reward_lens(model, ["the cat"], per_position=True, progress=False).plot() is not None
    with pytest.raises(InputError, match="variant"):
        reward_lens(model, ["the cat"], variants="tuned", progress=False)
    with pytest.raises(InputError, match="batch_size"):
        reward_lens(model, ["the cat"], batch_size=0, progress=False)
    with pytest.raises(InputError, match="out of range"):
        reward_lens(model, ["the cat"], output=3, progress=False)


# ---------------------------------------------------------------------------------------------- non-affine heads
def armorm_lens_reference(state: dict, config, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """ArmoRM's published forward by hand, per unpadded row: `(recomputed, frozen)` `[row, point, K + 1]` at the
    last token for points `l_pre` + final, columns the K raw objectives then the score with the gate held at the
    row's own weights (recomputed: `norm(h_l)`; frozen: `h_l / σ ⊙ g`, σ from the final norm's input)."""
    from test_armorm import reference

    backbone = transformers.LlamaModel(config).eval()
    backbone.load_state_dict({k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")})
    gates = reference(state, config, rows)["weights"]  # [row, K]
    w, t = state["regression_layer.weight"], state["reward_transform_matrix"]
    captured: dict[str, torch.Tensor] = {}
    handle = backbone.norm.register_forward_pre_hook(lambda m, a: captured.__setitem__("in", a[0]))
    rec, frz = [], []
    with torch.no_grad():
        for ids, g in zip(rows, gates, strict=True):
            hs = backbone(torch.tensor([ids]), output_hidden_states=True).hidden_states
            final_in = captured["in"][0, -1]
            points = torch.stack([hs[j][0, -1] for j in range(config.num_hidden_layers)] + [final_in])
            sigma = (final_in.pow(2).mean() + backbone.norm.variance_epsilon).sqrt()
            for normed, out in ((backbone.norm(points), rec), (points / sigma * backbone.norm.weight, frz)):
                objectives = normed @ w.T
                out.append(torch.cat([objectives, ((objectives @ t) * g).sum(-1, keepdim=True)], dim=-1))
    handle.remove()
    return torch.stack(rec), torch.stack(frz)


def test_armorm_lens_per_objective_and_gate_fixed_score(armorm) -> None:
    """ArmoRM: columns are the objectives then "score"; both variants equal the hand computation on HF's
    LlamaModel (gate held at the row's weights), the final point equals `objectives.hook_rewards` and
    `hook_score`, and the frozen lens's steps are the cache's gate-fixed score attributions."""
    from test_armorm import NAMES, ROWS, pad

    model, state, config = armorm
    tokens, mask = pad(ROWS, "left")
    res = reward_lens(model, tokens, attention_mask=mask, sublayers=False, progress=False)
    assert res.dims == ("variant", "text", "point", "output") and res.labels["output"] == NAMES + ["score"]
    rec_ref, frz_ref = armorm_lens_reference(state, config, ROWS)
    assert (res.variant("recomputed") - rec_ref).abs().max() <= TOL
    assert (res.variant("frozen") - frz_ref).abs().max() <= TOL
    score, cache = model.run_with_cache(tokens, attention_mask=mask)
    assert (res.values[:, :, -1, -1] - cache["hook_score"]).abs().max() <= TOL
    assert (res.values[:, :, -1, :-1] - cache["objectives.hook_rewards"]).abs().max() <= TOL
    assert (res.rewards[:, -1] - score).abs().max() <= TOL
    full = reward_lens(
        model, tokens, attention_mask=mask, progress=False
    )  # with sub-layers: additive steps along the score
    steps = full.variant("frozen")[..., -1].diff(dim=1)
    expected = torch.stack(
        [
            cache.reward_attrs(cache[f"blocks.{l_}.hook_{part}_out"][None], output="score")[0]
            for l_ in range(model.cfg.n_layers)
            for part in ("attn", "mlp")
        ],
        dim=1,
    )
    assert (steps - expected).abs().max() <= TOL
    assert (reward_lens_from_cache(cache).values - full.values).abs().max() <= TOL
    one = reward_lens(model, tokens, attention_mask=mask, output="score", progress=False)
    assert one.dims == ("variant", "text", "point") and (one.values - full.values[..., -1]).abs().max() <= TOL
    assert (
        reward_lens(model, tokens, attention_mask=mask, output=NAMES[1], progress=False).values - full.values[..., 1]
    ).abs().max() <= TOL
    pp = reward_lens(model, tokens, attention_mask=mask, per_position=True, output="score", progress=False)
    last = mask.sum(-1) - 1
    assert (pp.values[:, torch.arange(4), -1, last] - score).abs().max() <= TOL
    with pytest.raises(InputError, match="Unknown output"):
        reward_lens(model, tokens, attention_mask=mask, output="verbosity", progress=False)


def mlp_value_model():
    """A tiny GPT-2 (LayerNorm: a final-norm bias) with a GELU MLP value head, and the HF pieces."""
    torch.manual_seed(4)
    cfg = transformers.GPT2Config(vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=64)
    lm = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        lm.transformer.ln_f.bias.normal_(0, 0.3)
    mlp = torch.nn.Sequential(torch.nn.Linear(32, 16), torch.nn.GELU(), torch.nn.Linear(16, 1))
    return HookedRewardModel.from_value_head(lm, mlp, activation="gelu"), lm, mlp


def test_mlp_value_head_lens_against_hf() -> None:
    """MLP value head: recomputed = the real head on ln_f(hidden_states[l]); frozen = the head's linearisation
    at the run's point read through σ-frozen residuals; both end at the value."""
    model, lm, mlp = mlp_value_model()
    tokens, mask = padded(lengths=(7, 5, 3))
    res = reward_lens(model, tokens, attention_mask=mask, sublayers=False, progress=False)
    ln_f = lm.transformer.ln_f
    captured: dict[str, torch.Tensor] = {}
    handle = ln_f.register_forward_pre_hook(lambda m, a: captured.__setitem__("in", a[0]))
    for i in range(tokens.shape[0]):
        ids = tokens[i][mask[i].bool()][None]
        with torch.no_grad():
            hs = lm(ids, output_hidden_states=True).hidden_states
        final_in = captured["in"][0, -1]
        points = torch.stack([hs[j][0, -1] for j in range(2)] + [final_in])
        with torch.no_grad():
            rec = mlp(ln_f(points))[:, 0]
        h = ln_f(final_in).detach().requires_grad_(True)
        value = mlp(h)[0]
        (direction,) = torch.autograd.grad(value, h)
        centred = points - points.mean(-1, keepdim=True)
        sigma = ((final_in - final_in.mean()).pow(2).mean() + ln_f.eps).sqrt()
        frz = ((centred / sigma) * ln_f.weight + ln_f.bias) @ direction + (value - h @ direction)
        assert (res.variant("recomputed")[i] - rec).abs().max() <= TOL
        assert (res.variant("frozen")[i] - frz.detach()).abs().max() <= TOL
        assert abs(float(res.rewards[i] - value.detach())) <= TOL
    handle.remove()
    assert res.meta["readout"] == "linearised"
