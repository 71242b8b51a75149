"""SAE loading formats, training, splicing and feature reward attribution (issue 7).

References are hand-written here from the format definitions (SAE-Lens: W_enc [d_in, d_sae]; sparsify:
encoder.weight [d_sae, d_in], encoder subtracts b_dec) and the reward-head maths, not from the library.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from hooked_reward.sae import (
    SAEConfig,
    SAEFormatError,
    SparseAutoencoder,
    attribute_features,
    attribute_pairs,
    check_attribution,
    load_sae,
    run_with_cache_with_sae,
    save_sae,
    splice_report,
    splice_sae,
    train_topk_sae,
    train_topk_sae_on_activations,
)

D_IN, D_SAE = 32, 48


def _weights(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "W_enc": torch.randn(D_IN, D_SAE, generator=g) / D_IN**0.5,
        "b_enc": 0.1 * torch.randn(D_SAE, generator=g),
        "W_dec": torch.randn(D_SAE, D_IN, generator=g) / D_IN**0.5,
        "b_dec": 0.1 * torch.randn(D_IN, generator=g),
        "threshold": 0.05 + 0.1 * torch.rand(D_SAE, generator=g),
    }


def _write_sae_lens(path: Path, cfg: dict, tensors: dict[str, torch.Tensor]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "cfg.json").write_text(json.dumps(cfg))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path / "sae_weights.safetensors"))
    return path


def _ref_encode(x, w, arch, k=None, apply_b_dec=True):
    pre = (x - w["b_dec"] * apply_b_dec) @ w["W_enc"] + w["b_enc"]
    if arch == "standard":
        return pre.clamp_min(0)
    if arch == "jumprelu":
        return torch.where(pre > w["threshold"], pre, torch.zeros_like(pre)).clamp_min(0)
    out = torch.zeros_like(pre)
    for i in range(pre.shape[0]):  # the k largest, then ReLU, row by row
        idx = sorted(range(pre.shape[1]), key=lambda j: -float(pre[i, j]))[:k]
        for j in idx:
            out[i, j] = max(float(pre[i, j]), 0.0)
    return out


# ---------------------------------------------------------------------------------------------- formats
@pytest.mark.parametrize(
    "arch,cfg_extra",
    [
        ("standard", {"architecture": "standard", "hook_name": "blocks.1.hook_resid_post"}),
        ("topk", {"architecture": "topk", "k": 5, "metadata": {"hook_name": "blocks.1.hook_resid_post"}}),
        # pre-6.0 SAE-Lens: topk as an activation function, hook_point, k in activation_fn_kwargs
        (
            "topk",
            {
                "architecture": "standard",
                "activation_fn_str": "topk",
                "activation_fn_kwargs": {"k": 5},
                "hook_point": "blocks.1.hook_resid_post",
            },
        ),
        (
            "jumprelu",
            {"architecture": "jumprelu", "apply_b_dec_to_input": False, "hook_name": "blocks.1.hook_resid_post"},
        ),
    ],
)
def test_sae_lens_load_matches_reference(tmp_path, arch, cfg_extra):
    w = _weights()
    tensors = {k: v for k, v in w.items() if k != "threshold" or arch == "jumprelu"}
    path = _write_sae_lens(tmp_path / "sae", {"d_in": D_IN, "d_sae": D_SAE, "dtype": "float32", **cfg_extra}, tensors)
    sae = load_sae(path)
    assert sae.cfg.architecture == arch and sae.cfg.hook_name == "blocks.1.hook_resid_post"
    x = torch.randn(7, D_IN, generator=torch.Generator().manual_seed(1))
    apply = cfg_extra.get("apply_b_dec_to_input", True)
    ref = _ref_encode(x, w, arch, k=5, apply_b_dec=apply)
    assert (ref > 0).any()
    torch.testing.assert_close(sae.encode(x), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sae.decode(ref), ref @ w["W_dec"] + w["b_dec"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sae(x), ref @ w["W_dec"] + w["b_dec"], atol=1e-5, rtol=1e-5)
    sae.use_error_term = True
    torch.testing.assert_close(sae(x), x, atol=1e-5, rtol=1e-5)


class _FakeSAELensConfig:
    """The fields of an SAE-Lens 6 config object: `architecture()` is a method, the hook in `metadata`."""

    def __init__(self, arch: str, **fields):
        self._arch, self.fields = arch, fields

    def architecture(self) -> str:
        return self._arch

    def to_dict(self) -> dict:
        return dict(self.fields)


@pytest.mark.parametrize("arch", ["standard", "topk", "jumprelu"])
def test_in_memory_sae_lens_object(arch):
    """An SAE-Lens SAE as a user holds it in memory (SAE-Lens cannot be installed beside transformer-lens 4):
    the same encoder/decoder as the hand reference."""
    from hooked_reward.sae import from_sae_lens

    w = _weights()
    params = {k: v for k, v in w.items() if k != "threshold" or arch == "jumprelu"}
    module = torch.nn.Module()
    for name, t in params.items():
        module.register_parameter(name, torch.nn.Parameter(t.clone()))
    fields = {"d_in": D_IN, "d_sae": D_SAE, "dtype": "float32", "metadata": {"hook_name": "blocks.1.hook_resid_post"}}
    module.cfg = _FakeSAELensConfig(arch, **fields, **({"k": 5} if arch == "topk" else {}))
    sae = from_sae_lens(module)
    assert sae.cfg.architecture == arch and sae.cfg.hook_name == "blocks.1.hook_resid_post"
    x = torch.randn(7, D_IN, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(sae.encode(x), _ref_encode(x, w, arch, k=5), atol=1e-5, rtol=1e-5)
    module.register_parameter("W_extra", torch.nn.Parameter(torch.zeros(2)))
    with pytest.raises(SAEFormatError, match="unexpected tensors"):
        from_sae_lens(module)
    with pytest.raises(SAEFormatError, match="Expected an SAE-Lens SAE"):
        from_sae_lens(object())


def test_sparsify_load_matches_reference(tmp_path):
    w = _weights()
    k = 4
    path = tmp_path / "layers.1"
    path.mkdir()
    (path / "cfg.json").write_text(
        json.dumps(
            {
                "k": k,
                "num_latents": D_SAE,
                "expansion_factor": 32,
                "activation": "topk",
                "d_in": D_IN,
                "normalize_decoder": True,
            }
        )
    )
    enc = w["W_enc"].T.contiguous()  # sparsify stores the encoder as nn.Linear: [d_sae, d_in]
    save_file(
        {"encoder.weight": enc, "encoder.bias": w["b_enc"], "W_dec": w["W_dec"], "b_dec": w["b_dec"]},
        str(path / "sae.safetensors"),
    )
    sae = load_sae(path)
    assert sae.cfg.architecture == "topk" and sae.cfg.hook_name == "blocks.1.hook_resid_post"
    x = torch.randn(6, D_IN, generator=torch.Generator().manual_seed(2))
    # sparsify: relu(linear(x - b_dec)), keep the top k, decode = sum_j acts_j W_dec[j] + b_dec
    pre = torch.relu((x - w["b_dec"]) @ enc.T + w["b_enc"])
    vals, idx = pre.topk(k, dim=-1)
    ref = torch.zeros_like(pre).scatter(-1, idx, vals)
    torch.testing.assert_close(sae.encode(x), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sae(x), ref @ w["W_dec"] + w["b_dec"], atol=1e-5, rtol=1e-5)
    assert load_sae(path, hook_name="blocks.0.hook_mlp_out").cfg.hook_name == "blocks.0.hook_mlp_out"


def test_save_roundtrip_and_sae_lens_fields(tmp_path):
    w = _weights()
    sae = SparseAutoencoder(SAEConfig("jumprelu", D_IN, D_SAE, hook_name="blocks.0.hook_resid_post"))
    with torch.no_grad():
        for name, t in w.items():
            getattr(sae, name).copy_(t)
    path = save_sae(sae, tmp_path / "out")
    cfg = json.loads((path / "cfg.json").read_text())
    assert cfg["architecture"] == "jumprelu" and cfg["d_in"] == D_IN and cfg["d_sae"] == D_SAE
    assert cfg["metadata"]["hook_name"] == "blocks.0.hook_resid_post"
    loaded = load_sae(path)
    x = torch.randn(5, D_IN)
    torch.testing.assert_close(loaded(x), sae(x))


def test_normalisation_and_scaling_factor(tmp_path):
    w = _weights()
    base = {"d_in": D_IN, "d_sae": D_SAE, "architecture": "standard", "hook_name": "blocks.0.hook_resid_post"}
    tensors = {k: v for k, v in w.items() if k != "threshold"}
    x = 3.0 * torch.randn(4, D_IN)
    # constant_norm_rescale: encode x * sqrt(d)/|x|, decode, divide back
    cnr = {**base, "normalize_activations": "constant_norm_rescale"}
    sae = load_sae(_write_sae_lens(tmp_path / "cnr", cnr, tensors))
    c = D_IN**0.5 / x.norm(dim=-1, keepdim=True)
    acts = _ref_encode(x * c, w, "standard")
    torch.testing.assert_close(sae(x), (acts @ w["W_dec"] + w["b_dec"]) / c, atol=1e-4, rtol=1e-4)
    # expected_average_only_in: needs the dataset scale, then equals the SAE run on s * x, unscaled
    path = _write_sae_lens(tmp_path / "eao", {**base, "normalize_activations": "expected_average_only_in"}, tensors)
    with pytest.raises(SAEFormatError, match="norm_scaling_factor"):
        load_sae(path)
    s = 0.37
    sae = load_sae(path, norm_scaling_factor=s)
    acts = _ref_encode(s * x, w, "standard")
    torch.testing.assert_close(sae.encode(x), acts, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(sae(x), (acts @ w["W_dec"] + w["b_dec"]) / s, atol=1e-4, rtol=1e-4)


def test_format_errors_name_the_problem(tmp_path):
    w = _weights()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_sae(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="sae_weights.safetensors"):
        load_sae(tmp_path / "empty")
    tensors = {k: v for k, v in w.items() if k != "threshold"}
    gated = _write_sae_lens(tmp_path / "gated", {"d_in": D_IN, "d_sae": D_SAE, "architecture": "gated"}, tensors)
    with pytest.raises(SAEFormatError, match="'gated' is not supported"):
        load_sae(gated)
    bad = _write_sae_lens(tmp_path / "bad", {"d_in": D_IN, "d_sae": D_SAE + 1, "architecture": "standard"}, tensors)
    with pytest.raises(SAEFormatError, match="tensor 'W_.*' has shape"):
        load_sae(bad)
    no_k = _write_sae_lens(tmp_path / "nok", {"d_in": D_IN, "d_sae": D_SAE, "architecture": "topk"}, tensors)
    with pytest.raises(SAEFormatError, match="needs 'k'"):
        load_sae(no_k)
    no_thr = _write_sae_lens(tmp_path / "nothr", {"d_in": D_IN, "d_sae": D_SAE, "architecture": "jumprelu"}, tensors)
    with pytest.raises(SAEFormatError, match="threshold"):
        load_sae(no_thr)


# ---------------------------------------------------------------------------------------------- trainer
@pytest.mark.slow  # trains an SAE to convergence
def test_trainer_recovers_planted_features():
    g = torch.Generator().manual_seed(1)
    d, m, n, per = 32, 48, 4096, 3
    atoms = torch.randn(m, d, generator=g)
    atoms /= atoms.norm(dim=-1, keepdim=True)
    idx = torch.stack([torch.randperm(m, generator=g)[:per] for _ in range(n)])
    coef = torch.rand(n, per, generator=g) + 0.5
    x = torch.zeros(n, m).scatter(1, idx, coef) @ atoms + 0.01 * torch.randn(n, d, generator=g) + 0.3
    sae = train_topk_sae_on_activations(x, d_sae=128, k=3, steps=500, lr=5e-3, progress=False, seed=0)
    log = sae.training_log
    assert log.final_fvu < 0.1 < 0.5 < log.initial_fvu
    assert sae.reconstruction_stats(x)["fvu"] < 0.1  # the folded SAE works on the raw activations
    dec = (sae.W_dec / sae.W_dec.norm(dim=-1, keepdim=True)).detach()
    best = (atoms @ dec.T).max(dim=1).values
    assert float(best.min()) > 0.9, best
    again = train_topk_sae_on_activations(x, d_sae=128, k=3, steps=20, progress=False, seed=0)
    again2 = train_topk_sae_on_activations(x, d_sae=128, k=3, steps=20, progress=False, seed=0)
    torch.testing.assert_close(again.W_dec, again2.W_dec)


# ---------------------------------------------------------------------------------------------- model fixtures
def _texts(n: int, seed: int = 0) -> list[str]:
    from conftest import WORDS

    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) for _ in range(n)]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from conftest import build_hf_model, load_tiny

    out = {}
    for arch in ("llama", "gpt2"):  # RMSNorm and LayerNorm final norms
        out[arch] = load_tiny(build_hf_model(arch), tmp_path_factory.mktemp(arch))
    return out


@pytest.fixture(scope="module")
def trained(models):
    torch.set_num_threads(1)
    texts = _texts(40)
    saes = {}
    for arch, model in models.items():
        for layer in (0, 1):
            name = f"blocks.{layer}.hook_resid_post"
            saes[arch, layer] = train_topk_sae(model, texts, name, d_sae=64, k=4, steps=100, progress=False)
    return saes


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_splice_with_error_term_keeps_reward(models, trained, arch):
    model, sae = models[arch], trained[arch, 0]
    texts = _texts(8, seed=5)
    rep = splice_report(model, sae, texts)
    assert rep.max_abs_diff_with_error <= 1e-4
    assert float(rep.reward_change.abs().max()) > 1e-3  # the reconstruction alone does move the reward
    assert 0 < rep.fvu < 1 and rep.l0 == pytest.approx(4.0)
    tokens, mask = model.tokenize(texts)
    rewards, cache = run_with_cache_with_sae(
        model, tokens, sae, attention_mask=mask, names_filter=lambda n: ".hook_sae_" in n
    )
    acts = cache["blocks.0.hook_resid_post.hook_sae_acts"]
    assert acts.shape == (*tokens.shape, 64)
    torch.testing.assert_close(rewards, model(tokens, attention_mask=mask).detach(), atol=1e-4, rtol=0)
    assert not any("hook_sae" in n for n in model.hook_dict)  # unspliced afterwards

    # an in-place edit of hook_sae_acts moves the output by exactly that feature's decoder contribution
    feat = int(acts[mask.bool()].sum(0).argmax())
    seen: dict[str, torch.Tensor] = {}

    def kill(a, hook):
        a[..., feat] = 0
        return a

    def grab(t, hook):
        seen[hook.name] = t.detach().clone()

    with splice_sae(model, sae):
        model.run_with_hooks(
            tokens,
            attention_mask=mask,
            fwd_hooks=[
                ("blocks.0.hook_resid_post.hook_sae_acts", kill),
                ("blocks.0.hook_resid_post.hook_sae_input", grab),
                ("blocks.0.hook_resid_post.hook_sae_output", grab),
            ],
        )
    moved = seen["blocks.0.hook_resid_post.hook_sae_input"] - seen["blocks.0.hook_resid_post.hook_sae_output"]
    expected = acts[..., feat, None] * sae.W_dec[feat].detach()
    torch.testing.assert_close(moved, expected, atol=1e-5, rtol=1e-4)
    with splice_sae(model, sae):
        assert "blocks.0.hook_resid_post.hook_sae_error" in model.hook_dict


def test_sae_width_must_match_model(models):
    sae = SparseAutoencoder(SAEConfig("standard", 16, 8, hook_name="blocks.0.hook_resid_post"))
    with pytest.raises(ValueError, match="d_in=16 does not match"), splice_sae(models["llama"], sae):
        pass
    sae.cfg.hook_name = "blocks.7.hook_resid_post"
    with pytest.raises(ValueError, match="does not exist"), splice_sae(models["llama"], sae):
        pass


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_linear_attribution_at_final_residual_is_exact(models, trained, arch):
    model, sae = models[arch], trained[arch, 1]
    texts = _texts(6, seed=3)
    tokens, mask = model.tokenize(texts)
    att = attribute_features(model, sae, tokens, attention_mask=mask)
    assert att.method == "linear"
    torch.testing.assert_close(att.values.sum(-1) + att.remainder, att.targets, atol=1e-4, rtol=0)

    # hand computation from the HF weights: a_f * centre(W_dec[f]) . (W_R * gain) / scale at the reward pos
    hf = model.original_model
    score = hf.score.weight[0].detach().float()
    norm = hf.transformer.ln_f if arch == "gpt2" else hf.model.norm
    gain = norm.weight.detach().float()
    _, cache = model.run_with_cache(
        tokens, attention_mask=mask, names_filter=["blocks.1.hook_resid_post", "ln_final.hook_scale"]
    )
    pos = model.reward_positions(mask, tokens)
    rows = torch.arange(tokens.shape[0])
    h = cache["blocks.1.hook_resid_post"][rows, pos]
    scale = cache["ln_final.hook_scale"].reshape(tokens.shape[0], tokens.shape[1])[rows, pos]
    a = sae.encode(h).detach()
    dec = sae.W_dec.detach()
    if arch == "gpt2":
        dec = dec - dec.mean(-1, keepdim=True)
    hand = a * (dec @ (score * gain)) / scale[:, None]
    torch.testing.assert_close(att.values, hand, atol=1e-4, rtol=1e-4)

    # ablating one feature with the norm scale frozen changes the reward by exactly its attribution
    feat = int(att.ranking(1)[0])
    check = check_attribution(model, sae, att, features=[feat], freeze_norm_scale=True)
    torch.testing.assert_close(check.per_item_effect[:, 0], hand[:, feat], atol=1e-4, rtol=1e-4)
    frozen = check_attribution(model, sae, att, top_k=10, freeze_norm_scale=True)
    assert frozen.max_abs_error < 1e-4 and frozen.spearman > 0.99


def test_gradient_attribution_and_pairs_track_causal_effects(models, trained):
    model, sae = models["llama"], trained["llama", 0]
    texts = _texts(10, seed=7)
    att = attribute_features(model, sae, texts)
    assert att.method == "gradient" and att.values.shape == (10, 64)
    check = check_attribution(model, sae, att, top_k=10)
    assert check.kind == "ablation" and check.spearman > 0.6, check.values
    pairs = attribute_pairs(model, sae, texts[:5], texts[5:])
    torch.testing.assert_close(pairs.targets, att.targets[:5] - att.targets[5:], atol=1e-4, rtol=0)
    pcheck = check_attribution(model, sae, pairs, top_k=10)
    assert pcheck.kind == "patching" and pcheck.spearman > 0.6, pcheck.values
    with pytest.raises(ValueError, match="misaligned"):
        attribute_pairs(model, sae, ["good cat"], ["the very bad dog is"], positions="all")


def test_result_frames_and_plots(models, trained):
    pytest.importorskip("pandas")
    import matplotlib

    matplotlib.use("Agg")
    model, sae = models["gpt2"], trained["gpt2", 1]
    att = attribute_features(model, sae, _texts(4, seed=9))
    frame = att.to_frame(5)
    assert list(frame["rank"]) == [1, 2, 3, 4, 5] and len(att.labels["item"]) == 4
    assert att.plot(k=5) is not None
    check = check_attribution(model, sae, att, top_k=5)
    assert len(check.to_frame()) == 5 and check.plot() is not None
    rep = splice_report(model, sae, _texts(3))
    assert len(rep.to_frame()) == 3 and rep.plot() is not None


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_training_inside_no_grad_trains_the_same_sae(context):
    """A caller's no_grad / inference_mode context (around their own forwards) does not break training: the SAE
    is the one trained outside it (before: a bare RuntimeError, "element 0 of tensors does not require grad")."""
    gen = torch.Generator().manual_seed(0)
    acts = torch.randn(64, 8, generator=gen)
    ref = train_topk_sae_on_activations(acts, d_sae=16, k=2, steps=20, batch_size=16, progress=False)
    with context():
        inner_acts = acts.clone()  # an inference tensor under inference_mode
        sae = train_topk_sae_on_activations(inner_acts, d_sae=16, k=2, steps=20, batch_size=16, progress=False)
        assert not torch.is_grad_enabled()  # the caller's context is restored after the call
    assert ref.training_log.final_fvu < ref.training_log.initial_fvu  # it did train
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(sae, name), getattr(ref, name)), name
