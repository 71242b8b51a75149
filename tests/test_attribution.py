"""Issue 5: direct reward attribution against hand computations on HF's own modules, on every architecture.

The reference runs the HF model on each row alone, captures the out-projection's input (z), the value
projection, the attention probabilities (eager attention), the down-projection's input (neuron activations),
Gemma 2's post-sublayer norms' inputs and the final norm's input with plain PyTorch hooks, and reads each
part through HF's weights by hand: (P y / σ_final) · (W_R ⊙ g_final), with σ computed from the captured input.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import transformers
from conftest import ARCHS, build_hf_model, hf_reference_rewards, padded_tokens, save_checkpoint

from hooked_reward import HookedRewardModel, InputError
from hooked_reward.analysis.attribution import direct_reward_attribution, pair_reward_attribution

TOL = 1e-4


@pytest.fixture(autouse=True)
def bias_checks_must_pass():
    """The layer bias rows must match the weights' biases: their warning is an error in these tests."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*differs from the bias")
        yield


def padded(left: bool = False, lengths: tuple[int, ...] = (9, 6, 4)) -> tuple[torch.Tensor, torch.Tensor]:
    return padded_tokens(lengths, left=left, seed=5)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, int], Path]:
    out = {}
    for arch, n_labels in [(a, 1) for a in ARCHS] + [("qwen2", 3)]:
        path = tmp_path_factory.mktemp(f"{arch}{n_labels}")
        out[(arch, n_labels)] = save_checkpoint(build_hf_model(arch, num_labels=n_labels), path)
    return out


# ---------------------------------------------------------------------------------------------- HF reference
class HFReference:
    """Hand-computed direct rewards of heads, source positions and neurons for one row run alone in HF."""

    def __init__(self, path: Path, arch: str) -> None:
        self.hf = transformers.AutoModelForSequenceClassification.from_pretrained(
            str(path), dtype=torch.float32, attn_implementation="eager"
        ).eval()
        self.arch = arch
        backbone = getattr(self.hf, self.hf.base_model_prefix)
        self.gpt2 = arch == "gpt2"
        self.layers = backbone.h if self.gpt2 else backbone.layers
        self.final_norm = backbone.ln_f if self.gpt2 else backbone.norm
        cfg = self.hf.config
        self.n_heads = cfg.num_attention_heads
        self.d_head = (
            cfg.hidden_size // self.n_heads
            if self.gpt2
            else getattr(cfg, "head_dim", None) or (cfg.hidden_size // self.n_heads)
        )
        self.n_kv = self.n_heads if self.gpt2 else cfg.num_key_value_heads

    @staticmethod
    def _eps(norm: torch.nn.Module) -> float:
        return norm.eps if hasattr(norm, "eps") else norm.variance_epsilon

    def _gain(self, norm: torch.nn.Module) -> torch.Tensor:
        return norm.weight + (1.0 if "Gemma" in type(norm).__name__ else 0.0)

    def _sigma(self, norm: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        if isinstance(norm, torch.nn.LayerNorm):
            x = x - x.mean(-1, keepdim=True)
        return (x.pow(2).mean(-1, keepdim=True) + self._eps(norm)).sqrt()

    def run(self, row: torch.Tensor) -> dict:
        """Capture what the hand computation needs at the last token (and v over all tokens)."""
        cap: dict = {}
        handles = [self.final_norm.register_forward_pre_hook(lambda m, a: cap.__setitem__("final", a[0][0]))]
        for i, layer in enumerate(self.layers):
            o = layer.attn.c_proj if self.gpt2 else layer.self_attn.o_proj
            down = layer.mlp.c_proj if self.gpt2 else layer.mlp.down_proj
            handles.append(o.register_forward_pre_hook(lambda m, a, i=i: cap.__setitem__(("z", i), a[0][0])))
            handles.append(down.register_forward_pre_hook(lambda m, a, i=i: cap.__setitem__(("post", i), a[0][0])))
            v_mod = layer.attn.c_attn if self.gpt2 else layer.self_attn.v_proj
            handles.append(v_mod.register_forward_hook(lambda m, a, out, i=i: cap.__setitem__(("v", i), out[0])))
            if self.arch == "gemma2":
                for key, norm in (
                    ("attn_post", layer.post_attention_layernorm),
                    ("mlp_post", layer.post_feedforward_layernorm),
                ):
                    handles.append(
                        norm.register_forward_pre_hook(lambda m, a, i=i, key=key: cap.__setitem__((key, i), a[0][0]))
                    )
        with torch.no_grad():
            out = self.hf(row[None], output_attentions=True)
        for h in handles:
            h.remove()
        cap["attn"] = [a[0] for a in out.attentions]  # [head, q, k] per layer
        cap["reward"] = out.logits[0]
        return cap

    def readout(self, cap: dict, y: torch.Tensor) -> torch.Tensor:
        """Direct reward of residual parts `y [..., d]` at the last token: (P y / σ_final) · (W_R ⊙ g)."""
        norm = self.final_norm
        if isinstance(norm, torch.nn.LayerNorm):
            y = y - y.mean(-1, keepdim=True)
        sigma = self._sigma(norm, cap["final"][-1])
        return (y / sigma) @ (self.hf.score.weight * self._gain(norm)).T

    def post_norm(self, cap: dict, key: str, i: int, y: torch.Tensor) -> torch.Tensor:
        """Gemma 2's post-sublayer RMSNorm with its scale frozen from the run; identity elsewhere."""
        if self.arch != "gemma2":
            return y
        layer = self.layers[i]
        norm = layer.post_attention_layernorm if key == "attn_post" else layer.post_feedforward_layernorm
        return y * self._gain(norm) / self._sigma(norm, cap[(key, i)][-1])

    def head_out_weights(self, i: int) -> torch.Tensor:
        """W_O of layer i as `[head, d_head, d_model]` from HF's out projection."""
        layer = self.layers[i]
        # GPT-2's Conv1D is [in, out]; a Linear is [out, in], transposed to [in, out].
        w = layer.attn.c_proj.weight if self.gpt2 else layer.self_attn.o_proj.weight.T
        return w.reshape(self.n_heads, self.d_head, -1)

    def heads(self, cap: dict, i: int) -> torch.Tensor:
        """`[head, out]`: each head's direct reward, z_h W_O[h] read through the (post-)norms."""
        z = cap[("z", i)][-1].reshape(self.n_heads, self.d_head)
        parts = torch.einsum("hk,hkd->hd", z, self.head_out_weights(i))
        return self.readout(cap, self.post_norm(cap, "attn_post", i, parts))

    def attn_bias(self, cap: dict, i: int) -> torch.Tensor:
        layer = self.layers[i]
        bias = layer.attn.c_proj.bias if self.gpt2 else layer.self_attn.o_proj.bias
        if bias is None:
            return torch.zeros(self.hf.score.weight.shape[0])
        return self.readout(cap, self.post_norm(cap, "attn_post", i, bias))

    def positions(self, cap: dict, i: int) -> torch.Tensor:
        """`[head, src_pos, out]`: A[h, last, k] (v_h[k] W_O[h]) read through the (post-)norms."""
        v = cap[("v", i)]
        if self.gpt2:
            v = v[:, 2 * v.shape[-1] // 3 :]
        v = v.reshape(v.shape[0], self.n_kv, self.d_head).repeat_interleave(self.n_heads // self.n_kv, dim=1)
        parts = torch.einsum("khe,hed->hkd", v, self.head_out_weights(i))
        per_value = self.readout(cap, self.post_norm(cap, "attn_post", i, parts))
        return cap["attn"][i][:, -1, :, None] * per_value

    def neurons(self, cap: dict, i: int) -> torch.Tensor:
        """`[neuron, out]`: post_n W_out[n] read through the (post-)norms."""
        layer = self.layers[i]
        w = layer.mlp.c_proj.weight if self.gpt2 else layer.mlp.down_proj.weight.T  # [d_mlp, d_model]
        parts = cap[("post", i)][-1][:, None] * w
        return self.readout(cap, self.post_norm(cap, "mlp_post", i, parts))


def rows_alone(tokens: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    return [tokens[i][mask[i].bool()] for i in range(tokens.shape[0])]


def head_block(result, n_layers: int, n_heads: int) -> torch.Tensor:
    """`[text, layer, head(, out)]` from a by="head" result."""
    idx = [[result.index_of("component", f"L{l_}H{h}") for h in range(n_heads)] for l_ in range(n_layers)]
    return result.values[:, torch.tensor(idx)]


# ---------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("arch", ARCHS)
def test_heads_positions_neurons_match_hf_hand_computation(checkpoints, arch: str) -> None:
    path = checkpoints[(arch, 1)]
    model = HookedRewardModel.from_pretrained(path)
    ref = HFReference(path, arch)
    tokens, mask = padded(left=arch in ("mistral", "qwen3"))
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    heads = direct_reward_attribution(model, tokens, attention_mask=mask, by="head", batch_size=2, progress=False)
    pos = direct_reward_attribution(model, tokens, attention_mask=mask, by="position", progress=False)
    neurons = direct_reward_attribution(model, tokens, attention_mask=mask, by="neuron", layer=1, progress=False)
    assert pos.dims == ("text", "layer", "head", "pos")
    ours_heads = head_block(heads, n_layers, n_heads)
    for t, row in enumerate(rows_alone(tokens, mask)):
        cap = ref.run(row)
        for i in range(n_layers):
            assert (ours_heads[t, i] - ref.heads(cap, i)[:, 0]).abs().max() <= TOL
            bias_row = heads.values[t, heads.index_of("component", f"{i}_attn_bias")]
            assert (bias_row - ref.attn_bias(cap, i)[0]).abs().max() <= TOL  # b_O (gpt2) or 0
            n = len(row)
            assert (pos.values[t, i, :, :n] - ref.positions(cap, i)[..., 0]).abs().max() <= TOL
            assert bool(pos.values[t, i, :, n:].isnan().all())
        ours_neurons = neurons.values[t, : model.cfg.d_mlp]
        assert (ours_neurons - ref.neurons(cap, 1)[:, 0]).abs().max() <= TOL
    # source positions sum to their head; neurons plus bias row sum to the MLP's direct reward
    assert (pos.values.nansum(3) - ours_heads).abs().max() <= TOL
    comp = direct_reward_attribution(model, tokens, attention_mask=mask, progress=False)
    assert (neurons.values.sum(1) - comp.values[:, comp.index_of("component", "1_mlp_out")]).abs().max() <= TOL


@pytest.mark.parametrize("arch", ARCHS)
def test_totals_equal_hf_reward_and_core_decomposition(checkpoints, arch: str) -> None:
    path = checkpoints[(arch, 1)]
    model = HookedRewardModel.from_pretrained(path)
    tokens, mask = padded(left=True)
    hf_rewards = hf_reference_rewards(path, tokens, mask)
    comp = direct_reward_attribution(model, tokens, attention_mask=mask, progress=False)
    heads = direct_reward_attribution(model, tokens, attention_mask=mask, by="head", progress=False)
    for res in (comp, heads):
        assert (res.total() + model.b_R_eff - hf_rewards).abs().max() <= TOL
        assert (res.rewards - hf_rewards).abs().max() <= TOL
    # the component rows are the core cache's decompose_reward, same labels and order
    _, cache = model.run_with_cache(tokens, attention_mask=mask)
    core, labels = cache.decompose_reward()
    assert comp.axis_labels("component") == labels
    assert (comp.values - core.T).abs().max() <= TOL
    # head rows agree with TL's stack_head_results read by the core (no post-norm) / the layer output (Gemma 2)
    if arch != "gemma2":
        tl_heads = cache.reward_attrs(cache.stack_head_results()).T
        assert (head_block(heads, model.cfg.n_layers, model.cfg.n_heads).flatten(1) - tl_heads).abs().max() <= TOL
    n_heads = model.cfg.n_heads
    for i in range(model.cfg.n_layers):
        start = heads.index_of("component", f"L{i}H0")
        layer_sum = heads.values[:, start : start + n_heads + 1].sum(1)  # heads and the bias row
        assert (layer_sum - comp.values[:, comp.index_of("component", f"{i}_attn_out")]).abs().max() <= TOL


def test_pair_decomposes_reward_difference(checkpoints) -> None:
    path = checkpoints[("gpt2", 1)]
    model = HookedRewardModel.from_pretrained(path)
    chosen = ["the cat is very good thanks", "yes the answer is great"]
    rejected = ["the cat is bad", "no"]
    pair = pair_reward_attribution(model, chosen, rejected, by="head", progress=False)
    tc, mc = model.tokenize(chosen)
    tr, mr = model.tokenize(rejected)
    delta = hf_reference_rewards(path, tc, mc) - hf_reference_rewards(path, tr, mr)
    assert (pair.rewards - delta).abs().max() <= TOL
    assert (pair.total() - delta).abs().max() <= TOL  # b_R_eff cancels; each side has its own σ
    assert (pair.values - (pair.chosen.values - pair.rejected.values)).abs().max() == 0
    assert (pair.chosen.total() + model.b_R_eff - pair.chosen.rewards).abs().max() <= TOL
    neuron_pair = pair_reward_attribution(
        model, tc, tr, chosen_mask=mc, rejected_mask=mr, by="neuron", layer=0, progress=False
    )
    assert neuron_pair.values.shape == (2, model.cfg.d_mlp + 1)
    with pytest.raises(InputError, match="position"):
        pair_reward_attribution(model, chosen, rejected, by="position", progress=False)
    with pytest.raises(InputError, match="rejected"):
        pair_reward_attribution(model, chosen, rejected[:1], progress=False)


def test_multi_output(checkpoints) -> None:
    path = checkpoints[("qwen2", 3)]
    model = HookedRewardModel.from_pretrained(path)
    tokens, mask = padded()
    hf_rewards = hf_reference_rewards(path, tokens, mask)  # [row, 3]
    heads = direct_reward_attribution(model, tokens, attention_mask=mask, by="head", progress=False)
    assert heads.dims == ("text", "component", "output")
    assert (heads.total() + model.b_R_eff - hf_rewards).abs().max() <= TOL
    one = direct_reward_attribution(model, tokens, attention_mask=mask, by="head", output=2, progress=False)
    assert one.dims == ("text", "component") and (one.values - heads.values[..., 2]).abs().max() <= TOL
    assert (one.rewards - hf_rewards[:, 2]).abs().max() <= TOL
    ref = HFReference(path, "qwen2")
    cap = ref.run(tokens[0][mask[0].bool()])
    pos = direct_reward_attribution(model, tokens[:1], attention_mask=mask[:1], by="position", progress=False)
    n = int(mask[0].sum())
    assert (pos.values[0, 0, :, :n] - ref.positions(cap, 0)).abs().max() <= TOL


def test_frame_plot_top_and_errors(checkpoints) -> None:
    import matplotlib

    matplotlib.use("Agg")
    model = HookedRewardModel.from_pretrained(checkpoints[("llama", 1)])
    res = direct_reward_attribution(model, "the cat is good", by="head", progress=False)
    frame = res.to_frame()
    assert list(frame.columns) == ["text", "component", "direct reward"]
    assert abs(frame["direct reward"].sum() - float(res.total()[0])) <= TOL
    one_head = res.sel(component="L0H1")
    assert one_head.dims == ("text",)
    assert float(one_head.values[0]) == float(res.values[0, res.index_of("component", "L0H1")])
    assert res.sel(component=["L0H1", "L1H0"]).values.shape == (1, 2)
    top = res.top(3)
    assert len(top) == 3 and abs(top[0][1]) >= abs(top[1][1]) >= abs(top[2][1])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        assert res.plot() is not None
        assert direct_reward_attribution(model, ["a dog", "the cat"], progress=False).plot() is not None
        pos = direct_reward_attribution(model, "the cat is good", by="position", progress=False)
        assert pos.plot() is not None and pos.meta["tokens"][0][0] == "<s>"
        assert pos.top(1)[0][0].startswith("L")
    with pytest.raises(InputError, match="layer"):
        direct_reward_attribution(model, "the cat", by="neuron", progress=False)
    with pytest.raises(InputError, match="by="):
        direct_reward_attribution(model, "the cat", by="edge", progress=False)


# ---------------------------------------------------------------------------------------------- non-affine heads
def test_armorm_dra_per_objective_and_gate_fixed_score(armorm) -> None:
    """Objective columns sum to `objectives.hook_rewards` (and the published reference); the score column plus
    its per-text bias sums to `hook_score`; components equal the cache's gate-fixed `reward_attrs`."""
    from test_armorm import NAMES, ROWS, pad, reference

    model, state, config = armorm
    tokens, mask = pad(ROWS, "right")
    ref = reference(state, config, ROWS)
    score, cache = model.run_with_cache(tokens, attention_mask=mask)
    for by in ("component", "head"):
        res = direct_reward_attribution(model, tokens, attention_mask=mask, by=by, progress=False)
        assert res.labels["output"] == NAMES + ["score"] and res.bias.shape == (4, len(NAMES) + 1)
        totals = res.values.sum(1) + res.bias
        assert (totals[:, :-1] - cache["objectives.hook_rewards"]).abs().max() <= TOL
        assert (totals[:, :-1] - ref["rewards"]).abs().max() <= TOL
        assert (totals[:, -1] - cache["hook_score"]).abs().max() <= TOL
        assert (totals[:, -1] - ref["score"]).abs().max() <= TOL
        assert (res.rewards[:, -1] - score).abs().max() <= TOL
    comp = direct_reward_attribution(model, tokens, attention_mask=mask, output="score", progress=False)
    assert comp.dims == ("text", "component")
    for l_ in range(model.cfg.n_layers):
        for part in ("attn", "mlp"):
            expected = cache.reward_attrs(cache[f"blocks.{l_}.hook_{part}_out"][None], output="score")[0]
            assert (comp.sel(component=f"{l_}_{part}_out").values - expected).abs().max() <= TOL
    assert (comp.meta["head_state"]["gating.hook_weights"] - ref["weights"]).abs().max() <= TOL


def test_armorm_pair_attribution_has_a_gate_row(armorm) -> None:
    """Pairs with different prompts (so the gate changes): rows, including "gate", sum to Δscore exactly; the
    gate row is `score_difference`'s gate term and 0 for the raw objectives."""
    from test_armorm import ROWS, pad

    from hooked_reward.heads.armorm import score_difference

    model, _, _ = armorm
    chosen, c_mask = pad(ROWS, "left")
    rejected, r_mask = pad(ROWS[1:] + ROWS[:1], "right")
    names = ["gating.hook_weights", "objectives.hook_transformed", "objectives.hook_rewards"]
    s_c, cache_c = model.run_with_cache(chosen, attention_mask=c_mask, names_filter=names)
    s_r, cache_r = model.run_with_cache(rejected, attention_mask=r_mask, names_filter=names)
    split = score_difference(cache_c, cache_r)
    for by in ("component", "head"):
        res = pair_reward_attribution(
            model, chosen, rejected, chosen_mask=c_mask, rejected_mask=r_mask, by=by, progress=False
        )
        assert res.labels["component"][-1] == "gate"
        assert (res.values.sum(1)[:, -1] - (s_c - s_r)).abs().max() <= TOL
        assert (
            res.values.sum(1)[:, :-1] - (cache_c["objectives.hook_rewards"] - cache_r["objectives.hook_rewards"])
        ).abs().max() <= TOL
        gate = res.values[:, -1]
        assert (gate[:, -1] - split.gate.sum(-1)).abs().max() <= TOL and float(gate[:, -1].abs().max()) > 1e-3
        assert float(gate[:, :-1].abs().max()) == 0.0
        assert (res.values[:, :-1, -1].sum(1) - split.objectives.sum(-1)).abs().max() <= TOL
        assert float(res.bias.abs().max()) == 0.0
    score_only = pair_reward_attribution(
        model, chosen, rejected, chosen_mask=c_mask, rejected_mask=r_mask, output="score", progress=False
    )
    assert score_only.dims == ("text", "component") and (score_only.rewards - (s_c - s_r)).abs().max() <= TOL


def test_mlp_value_head_dra_is_the_linearisation() -> None:
    """MLP value head (GELU, LayerNorm final norm): DRA reads along `linearise_at(hook_reward_resid)`; rows plus
    the per-text bias (offset + direction · β) sum to the value, and components equal the cache's
    `reward_attrs(output="reward")`."""
    from test_lens import mlp_value_model

    model, _, _ = mlp_value_model()
    tokens, mask = padded(lengths=(7, 5, 3))
    values, cache = model.run_with_cache(tokens, attention_mask=mask)
    res = direct_reward_attribution(model, tokens, attention_mask=mask, by="head", progress=False)
    assert res.bias.shape == (3,)
    assert (res.values.sum(1) + res.bias - values).abs().max() <= TOL
    lin = model.head.linearise_at(cache["hook_reward_resid"])
    _, beta = model.final_norm_gain_bias()
    assert (res.bias - lin.offset - lin.direction @ beta).abs().max() <= TOL
    comp = direct_reward_attribution(model, tokens, attention_mask=mask, progress=False)
    expected = cache.reward_attrs(cache["blocks.1.hook_mlp_out"][None], output="reward")[0]
    assert (comp.sel(component="1_mlp_out").values - expected).abs().max() <= TOL
    pair = pair_reward_attribution(
        model, tokens, tokens.flip(0), chosen_mask=mask, rejected_mask=mask.flip(0), progress=False
    )
    assert (pair.values.sum(1) + pair.bias - (values - values.flip(0))).abs().max() <= TOL


def test_pair_split_is_one_call_for_affine_and_gated_heads(tiny_model, armorm) -> None:
    """`head.pair_split(cache_a, cache_b).apply(...)` is how every head's pair difference is read: an affine head's
    split is the plain per-column difference (Δ = a − b, nothing of its own); ArmoRM's reads the score column as
    `T ḡ` times the objectives' differences plus its gate's own term, so that applied to the two runs' readout
    values (one "component" per run: the whole readout) it gives Δscore exactly."""
    from test_armorm import ROWS, pad

    linear = tiny_model("llama", num_labels=2)
    tokens, mask = linear.tokenize(["the cat is good", "a dog"])
    _, cache = linear.run_with_cache(tokens, attention_mask=mask)
    split = linear.head.pair_split(cache, cache)
    assert split.weights is None and split.own is None and not split.detail
    delta, delta_bias = torch.randn(2, 3, 2), torch.randn(2)
    values, bias, extra = split.apply(delta, delta_bias)
    assert values is delta and bias is delta_bias and extra == []

    model, _, _ = armorm
    chosen, c_mask = pad(ROWS, "left")
    rejected, r_mask = pad(ROWS[1:] + ROWS[:1], "right")
    hooks = model.head.readout_hooks()
    s_c, cache_c = model.run_with_cache(chosen, attention_mask=c_mask, names_filter=hooks)
    s_r, cache_r = model.run_with_cache(rejected, attention_mask=r_mask, names_filter=hooks)
    split = model.head.pair_split(cache_c, cache_r)
    k = len(model.head.term_names())
    # each side's objectives r_k, and its score read with its own gate: what the per-side DRA rows sum to
    side = [torch.cat([c["objectives.hook_rewards"], s[:, None]], -1) for c, s in ((cache_c, s_c), (cache_r, s_r))]
    values, bias, extra = split.apply((side[0] - side[1])[:, None].float(), torch.zeros(len(s_c), k + 1))
    assert extra == ["gate"] and values.shape == (len(s_c), 2, k + 1)
    total = values.sum(1)
    assert (total[:, -1] - (s_c - s_r)).abs().max() <= TOL
    assert (total[:, :k] - (side[0] - side[1])[:, :k]).abs().max() <= TOL
    assert float(values[:, 1, :k].abs().max()) == 0.0 and float(values[:, 1, k].abs().max()) > 1e-3
