"""Issue 13: HookedRewardModel is exact to HF, on every architecture, with TransformerLens's hook graph."""

from __future__ import annotations

import pytest
import torch
import transformers
from conftest import ARCHS, build_hf_model, hf_reference_rewards, padded_tokens, word_tokenizer

from hooked_reward import CheckpointError, HookedRewardModel, HookNameError, InputError, UnsupportedArchitectureError

TOL = 1e-4


def padded_batch(left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Four rows of different lengths (10, 7, 5, 3 tokens), left or right padded."""
    return padded_tokens((10, 7, 5, 3), left=left, seed=1)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("left", [False, True])
def test_rewards_equal_hf_row_alone(make_checkpoint, arch: str, left: bool) -> None:
    path = make_checkpoint(arch)
    model = HookedRewardModel.from_pretrained(path)
    tokens, mask = padded_batch(left)
    reference = hf_reference_rewards(path, tokens, mask)
    assert reference.abs().mean() > 0.2, "weights must be re-drawn so rewards are O(1)"
    batched = model(tokens, attention_mask=mask)
    assert batched.shape == (4,)
    assert (batched - reference).abs().max() <= TOL
    for i in range(4):
        alone = model(tokens[i][mask[i].bool()][None])
        assert (alone - reference[i]).abs().max() <= TOL


@pytest.mark.parametrize("arch", ARCHS)
def test_decomposition_sums_to_reward(make_checkpoint, arch: str) -> None:
    model = HookedRewardModel.from_pretrained(make_checkpoint(arch))
    tokens, mask = padded_batch(left=True)
    rewards, cache = model.run_with_cache(tokens, attention_mask=mask)
    attrs, labels = cache.decompose_reward()
    assert attrs.shape == (len(labels), 4)
    assert (attrs.sum(0) + model.b_R_eff - rewards).abs().max() <= TOL
    if arch == "gemma2":  # post-attention norm: TL's head results are pre-norm, and we say so
        with pytest.warns(UserWarning, match="ln1_post"):
            cache.stack_head_results()
        return
    heads, head_labels = cache.stack_head_results(return_labels=True)
    heads = cache.reward_attrs(heads)
    assert heads.shape == (model.cfg.n_layers * model.cfg.n_heads, 4)
    # Heads of a layer plus its output bias b_O give that layer's attention attribution.
    attn_rows = [labels.index(f"{layer}_attn_out") for layer in range(model.cfg.n_layers)]
    per_layer = heads.reshape(model.cfg.n_layers, model.cfg.n_heads, 4).sum(1)
    d_model = model.cfg.d_model
    b_o = torch.stack(
        [
            torch.zeros(d_model) if model.blocks[layer].attn.b_O is None else model.blocks[layer].attn.b_O
            for layer in range(model.cfg.n_layers)
        ]
    ).detach()
    bias_attr = cache.reward_attrs(b_o[:, None, None, :].expand(-1, 4, tokens.shape[1], -1).contiguous())
    assert (per_layer + bias_attr - attrs[attn_rows]).abs().max() <= TOL
    # Reward-position-only cache gives the same numbers with one position per row.
    rewards_r, cache_r = model.run_with_cache(tokens, attention_mask=mask, positions="reward")
    assert cache_r["blocks.0.hook_resid_pre"].shape[1] == 1
    attrs_r, _ = cache_r.decompose_reward()
    assert (attrs_r - attrs).abs().max() <= TOL
    assert (cache_r.reward_attrs(cache_r.stack_head_results()) - heads).abs().max() <= TOL
    # The accumulated residual after the last layer, read through the frozen norm, is the reward.
    accumulated = cache_r.reward_attrs(cache_r.accumulated_resid())
    assert (accumulated[-1] + model.b_R_eff - rewards).abs().max() <= TOL


def test_hook_reward_resid_is_final_normed_residual(make_checkpoint) -> None:
    path = make_checkpoint("llama")
    model = HookedRewardModel.from_pretrained(path)
    tokens, mask = padded_batch(left=False)
    rewards, cache = model.run_with_cache(tokens, attention_mask=mask)
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
    with torch.no_grad():
        hidden = hf.model(tokens, attention_mask=mask).last_hidden_state
    lengths = mask.sum(-1) - 1
    expected = hidden[torch.arange(4), lengths]
    assert cache["hook_reward_resid"].shape == (4, model.cfg.d_model)
    assert (cache["hook_reward_resid"] - expected).abs().max() <= TOL
    assert torch.equal(cache.reward_pos, lengths)
    w, b = hf.score.weight[0], torch.zeros(())
    assert torch.allclose(model.W_R, w) and torch.allclose(model.b_R, b)
    assert (expected @ w - rewards).abs().max() <= TOL


def test_tl_hook_vocabulary_and_weights(make_checkpoint) -> None:
    model = HookedRewardModel.from_pretrained(make_checkpoint("llama"))
    names = set(model.hook_dict)
    for name in [
        "hook_embed",
        "blocks.0.hook_resid_pre",
        "blocks.1.hook_resid_mid",
        "blocks.1.hook_resid_post",
        "blocks.0.attn.hook_q",
        "blocks.0.attn.hook_k",
        "blocks.0.attn.hook_v",
        "blocks.0.attn.hook_z",
        "blocks.0.attn.hook_pattern",
        "blocks.0.attn.hook_attn_scores",
        "blocks.0.hook_attn_out",
        "blocks.0.hook_mlp_out",
        "blocks.0.ln1.hook_scale",
        "ln_final.hook_scale",
        "hook_reward_resid",
        "hook_reward",
    ]:
        assert name in names, name
    cfg = model.cfg
    assert model.W_Q.shape == (cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_head)
    assert model.W_U.shape == (cfg.d_model, 1)
    assert torch.allclose(model.W_U[:, 0], model.W_R)


def test_run_with_hooks_and_hooks_context(make_checkpoint) -> None:
    model = HookedRewardModel.from_pretrained(make_checkpoint("qwen2"))
    tokens, mask = padded_batch(left=False)
    clean = model(tokens, attention_mask=mask)

    def zero_resid(resid: torch.Tensor, hook) -> torch.Tensor:
        return torch.zeros_like(resid)

    # Zeroing the final-normed residual leaves only the bias.
    out = model.run_with_hooks(tokens, attention_mask=mask, fwd_hooks=[("hook_reward_resid", zero_resid)])
    assert torch.allclose(out, model.b_R.expand(4), atol=TOL)
    with model.hooks(fwd_hooks=[("hook_reward_resid", zero_resid)]):
        assert torch.allclose(model(tokens, attention_mask=mask), model.b_R.expand(4), atol=TOL)
    assert torch.allclose(model(tokens, attention_mask=mask), clean)  # hooks removed on exit


def test_multi_output_head(make_checkpoint) -> None:
    path = make_checkpoint("llama", num_labels=3)
    model = HookedRewardModel.from_pretrained(path)
    tokens, mask = padded_batch(left=True)
    reference = hf_reference_rewards(path, tokens, mask)
    rewards, cache = model.run_with_cache(tokens, attention_mask=mask)
    assert rewards.shape == (4, 3) and model.W_R.shape == (3, model.cfg.d_model) and model.b_R.shape == (3,)
    assert (rewards - reference).abs().max() <= TOL
    attrs, _ = cache.decompose_reward()
    assert attrs.shape[-1] == 3
    assert (attrs.sum(0) + model.b_R_eff - rewards).abs().max() <= TOL
    one, _ = cache.decompose_reward(output=2)
    assert torch.allclose(one, attrs[..., 2])


def test_score_head_with_bias() -> None:
    """A score Linear with a bias (HF's own heads have none; custom RMs do): b_R is that bias."""
    hf = build_hf_model("qwen2", num_labels=2)
    old = hf.score
    hf.score = torch.nn.Linear(old.in_features, 2, bias=True)
    with torch.no_grad():
        hf.score.weight.copy_(old.weight)
        hf.score.bias.copy_(torch.tensor([0.7, -1.3]))
    tokens, mask = padded_batch(left=False)
    with torch.no_grad():
        expected = torch.stack([hf(tokens[i][mask[i].bool()][None]).logits[0] for i in range(4)])
    model = HookedRewardModel.from_hf_model(hf)
    assert torch.allclose(model.b_R, torch.tensor([0.7, -1.3]))
    rewards, cache = model.run_with_cache(tokens, attention_mask=mask)
    assert (rewards - expected).abs().max() <= TOL
    attrs, _ = cache.decompose_reward()
    assert (attrs.sum(0) + model.b_R_eff - rewards).abs().max() <= TOL


def test_gpt2_left_padding_uses_mask_positions(make_checkpoint) -> None:
    """Learned absolute positions: a left-padded row equals that row alone (HF's own GPT-2 does not do this)."""
    path = make_checkpoint("gpt2")
    model = HookedRewardModel.from_pretrained(path)
    tokens, mask = padded_batch(left=True)
    batched = model(tokens, attention_mask=mask)
    alone = torch.stack([model(tokens[i][mask[i].bool()][None])[0] for i in range(4)])
    assert (batched - alone).abs().max() <= TOL


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_text_input_and_tokenize(make_checkpoint, arch: str) -> None:
    model = HookedRewardModel.from_pretrained(make_checkpoint(arch))
    expected = word_tokenizer()("the cat is very good")["input_ids"]
    assert model.tokenize(["the cat is very good"])[0].tolist() == [expected]
    texts = ["the cat is good", "the dog was very bad thanks"]
    tokens, mask = model.tokenize(texts)
    assert tokens[0, 0] == model.tokenizer.bos_token_id
    assert mask.sum(-1).tolist() == [5, 7]
    assert torch.allclose(model(texts), model(tokens, attention_mask=mask))
    # A text already carrying BOS (a rendered chat template) does not get a second one.
    tokens_bos, _ = model.tokenize(["<s> the cat is good"])
    assert tokens_bos[0].tolist() == tokens[0, :5].tolist()


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_process_weights_keeps_rewards(make_checkpoint, arch: str) -> None:
    path = make_checkpoint(arch)
    plain = HookedRewardModel.from_pretrained(path)
    tokens, mask = padded_batch(left=False)
    expected = plain(tokens, attention_mask=mask)
    folded = HookedRewardModel.from_pretrained(path, fold_ln=True, center_writing_weights=True)
    assert (folded(tokens, attention_mask=mask) - expected).abs().max() <= TOL
    rewards, cache = folded.run_with_cache(tokens, attention_mask=mask)
    attrs, _ = cache.decompose_reward()
    assert (attrs.sum(0) + folded.b_R_eff - rewards).abs().max() <= TOL


def test_transformer_lens_patching_runs_unchanged(make_checkpoint) -> None:
    from transformer_lens import patching

    model = HookedRewardModel.from_pretrained(make_checkpoint("llama"))
    torch.manual_seed(3)
    clean = torch.randint(4, 96, (1, 6))
    corrupt = clean.clone()
    corrupt[0, 2] = (corrupt[0, 2] + 7) % 90 + 4
    _, clean_cache = model.run_with_cache(clean)
    r_clean, r_corrupt = model(clean).item(), model(corrupt).item()

    def metric(rewards: torch.Tensor) -> torch.Tensor:
        return rewards.sum()

    result = patching.get_act_patch_resid_pre(model, corrupt, clean_cache, metric)
    assert result.shape == (model.cfg.n_layers, 6)
    # Patching the clean residual at layer 0, position 2 (the only changed token) restores the clean reward.
    assert abs(result[0, 2].item() - r_clean) <= TOL
    assert abs(result[0, 0].item() - r_corrupt) <= TOL


def test_bf16_loading_close(make_checkpoint) -> None:
    path = make_checkpoint("llama")
    tokens, mask = padded_batch(left=False)
    ref = HookedRewardModel.from_pretrained(path)(tokens, attention_mask=mask)
    bf16 = HookedRewardModel.from_pretrained(path, dtype=torch.bfloat16)
    out = bf16(tokens, attention_mask=mask).float()
    assert (out - ref).abs().max() <= 0.1  # documented bf16 bound: 0.1 absolute on O(1) rewards


def test_device_map_cpu(make_checkpoint) -> None:
    path = make_checkpoint("llama")
    tokens, mask = padded_batch(left=False)
    ref = HookedRewardModel.from_pretrained(path)(tokens, attention_mask=mask)
    mapped = HookedRewardModel.from_pretrained(path, device_map="cpu")
    assert (mapped(tokens, attention_mask=mask) - ref).abs().max() <= TOL


# ---------------------------------------------------------------- bad input
def test_missing_path_and_files(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        HookedRewardModel.from_pretrained(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="config.json"):
        HookedRewardModel.from_pretrained(tmp_path)
    build_hf_model("llama").config.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="No weights"):
        HookedRewardModel.from_pretrained(tmp_path)


def test_unknown_architecture(tmp_path) -> None:
    config = transformers.BioGptConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=1,
        pad_token_id=0,
    )
    transformers.BioGptForSequenceClassification(config).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedArchitectureError, match="not supported.*LlamaForSequenceClassification"):
        HookedRewardModel.from_pretrained(tmp_path)


def test_bad_inputs(make_checkpoint) -> None:
    model = HookedRewardModel.from_pretrained(make_checkpoint("llama"))
    with pytest.raises(InputError, match="empty"):
        model(["the cat", ""])
    with pytest.raises(InputError, match="all padding"):
        model(torch.ones(2, 4, dtype=torch.long), attention_mask=torch.tensor([[1, 1, 1, 1], [0, 0, 0, 0]]))
    with pytest.raises(InputError, match="longer than the model's context"):
        model(torch.ones(1, 65, dtype=torch.long))
    with pytest.raises(HookNameError, match="does not exist"):
        model.run_with_hooks(
            torch.ones(1, 4, dtype=torch.long), fwd_hooks=[("blocks.0.hook_resid_pots", lambda t, hook: t)]
        )
    with pytest.raises(HookNameError, match="hook_resid_post"):
        model.run_with_cache(torch.ones(1, 4, dtype=torch.long), names_filter=["blocks.0.hook_resid_pots"])
    with pytest.raises(InputError, match="outside the sequence"):
        model.run_with_cache(torch.ones(1, 4, dtype=torch.long), positions=7)
    with pytest.raises(InputError, match="does not match"):
        model(torch.ones(2, 4, dtype=torch.long), attention_mask=torch.ones(2, 5, dtype=torch.long))


def test_tokenizer_without_pad_token(make_checkpoint) -> None:
    model = HookedRewardModel.from_pretrained(make_checkpoint("llama"))
    model.tokenizer.pad_token = None
    with pytest.raises(InputError, match="no pad token"):
        model(["the cat is good", "the dog"])


def test_from_hf_model_in_memory() -> None:
    hf = build_hf_model("mistral")
    tokens, mask = padded_batch(left=False)
    with torch.no_grad():
        expected = torch.stack([hf(tokens[i][mask[i].bool()][None]).logits[0, 0] for i in range(4)])
    model = HookedRewardModel.from_hf_model(hf, tokenizer=word_tokenizer())
    assert (model(tokens, attention_mask=mask) - expected).abs().max() <= TOL


def cache_bytes(cache) -> int:
    """Bytes of distinct tensors in a cache (aliases of one tensor counted once)."""
    seen = {(v.data_ptr(), tuple(v.shape)): v.numel() * v.element_size() for v in cache.cache_dict.values()}
    return sum(seen.values())


def alias_groups(cache) -> set[tuple[str, ...]]:
    """Names grouped by the tensor they hold (same memory, shape and strides)."""
    groups: dict[tuple, list[str]] = {}
    for name, value in cache.cache_dict.items():
        groups.setdefault((value.data_ptr(), tuple(value.shape), value.stride()), []).append(name)
    return {tuple(names) for names in groups.values()}


def test_reward_position_cache_memory(make_checkpoint) -> None:
    """positions="reward" keeps one position per row: at most 1/seq of the full cache plus the tensors that have
    no position axis (the head's [batch, ...] inputs and outputs), and every tensor shared by several hook points
    in the full cache (residual aliases, rotary cos/sin of every layer) is shared in the reward cache too."""
    model = HookedRewardModel.from_pretrained(make_checkpoint("llama"))
    seq = 48
    tokens = torch.randint(4, 96, (4, seq))
    _, full = model.run_with_cache(tokens)
    _, reward_only = model.run_with_cache(tokens, positions="reward")
    assert alias_groups(reward_only) == alias_groups(full)
    no_position = {k: v for k, v in full.cache_dict.items() if seq not in v.shape}
    assert no_position and all(k in model._reward_hook_names or "unembed" in k for k in no_position)
    constant = sum(v.nbytes for v in {(v.data_ptr(), v.shape): v for v in no_position.values()}.values())
    assert cache_bytes(reward_only) <= cache_bytes(full) / seq + constant


def test_reward_position_cache_under_inference_mode(make_checkpoint) -> None:
    """Inference tensors have no version counter: the cache still gathers every hook exactly."""
    model = HookedRewardModel.from_pretrained(make_checkpoint("llama"))
    tokens, mask = padded_batch(left=True)
    names = ["blocks.0.hook_resid_pre", "blocks.1.mlp.hook_post", "ln_final.hook_normalized"]
    # no pattern in either cache: both run the fused attention of the plain forward
    _, full = model.run_with_cache(tokens, attention_mask=mask, names_filter=names)
    with torch.inference_mode():
        rewards, reward_only = model.run_with_cache(tokens, attention_mask=mask, positions="reward")
    rows = torch.arange(tokens.shape[0])
    positions = model.reward_positions(mask, tokens)
    for name in names:
        assert torch.allclose(reward_only[name][:, 0], full[name][rows, positions])
    assert torch.allclose(rewards, model(tokens, attention_mask=mask))


def test_stop_at_layer_returns_residual(make_checkpoint) -> None:
    model = HookedRewardModel.from_pretrained(make_checkpoint("llama"))
    tokens, mask = padded_batch(left=False)
    # a residual filter keeps the attention fused as in the forward (a full cache computes patterns explicitly,
    # which rounds differently in the last float32 bits)
    _, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=lambda name: "resid" in name)
    assert torch.allclose(model(tokens, attention_mask=mask, stop_at_layer=1), cache["blocks.1.hook_resid_pre"])
    assert torch.allclose(model(tokens, attention_mask=mask, stop_at_layer=-1), cache["blocks.1.hook_resid_pre"])
    after_last = model(tokens, attention_mask=mask, stop_at_layer=model.cfg.n_layers)
    assert torch.allclose(after_last, cache["blocks.1.hook_resid_post"])
    assert not model.blocks[1].hook_in._forward_hooks  # the stop hook is gone
    with pytest.raises(InputError, match="stop_at_layer"):
        model(tokens, attention_mask=mask, stop_at_layer=5)


def test_to_tokens_and_maskless_padded_ids(make_checkpoint) -> None:
    """TL-style `to_tokens` gives `tokenize`'s ids; padded ids without a mask are read through the pad id."""
    model = HookedRewardModel.from_pretrained(make_checkpoint("llama"))
    texts = ["the cat is good", "the dog was very bad thanks"]
    tokens, mask = model.tokenize(texts)
    assert torch.equal(model.to_tokens(texts), tokens)
    assert torch.allclose(model(tokens), model(tokens, attention_mask=mask))


def test_model_is_in_eval_mode(make_checkpoint) -> None:
    """Every module, including the reward head and its hooks, is in eval mode after loading (TL's analysis
    tools require it), also for an HF model handed over in training mode."""
    model = HookedRewardModel.from_pretrained(make_checkpoint("llama"))
    assert not any(m.training for m in model.modules())
    in_training = HookedRewardModel.from_hf_model(build_hf_model("gpt2").train())
    assert not any(m.training for m in in_training.modules())


@pytest.mark.parametrize("arch", ARCHS)
def test_masks_with_gaps_match_hf(arch: str) -> None:
    """A mask with interior zeros: HF's forward with that mask (on the row without leading padding), to 1e-4,
    also when the row is left-padded."""
    hf = build_hf_model(arch)
    torch.manual_seed(0)
    tokens = torch.randint(4, 96, (3, 8))
    mask = torch.tensor([[1, 1, 0, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 1, 1, 1], [1, 0, 1, 0, 1, 0, 1, 1]])
    with torch.no_grad():
        reference = hf(tokens, attention_mask=mask).logits[:, 0]
    model = HookedRewardModel.from_hf_model(hf, tokenizer=word_tokenizer())
    assert (model(tokens, attention_mask=mask) - reference).abs().max() <= TOL
    pad = torch.zeros(3, 3, dtype=torch.long)
    left = model(torch.cat([pad, tokens], 1), attention_mask=torch.cat([pad, mask], 1))
    assert (left - reference).abs().max() <= TOL
    # the gap is real: attending the masked tokens changes the reward
    assert (model(tokens) - reference).abs().max() > 1e-3


def test_prepare_input_forms(make_checkpoint) -> None:
    """Text, ids (+ mask, bool or int), a `(tokens, mask)` pair and an HF BatchEncoding all give the same batch."""
    model = HookedRewardModel.from_pretrained(make_checkpoint("llama"))
    texts = ["the cat is good", "the dog was very bad thanks"]
    tokens, mask = model.prepare(texts)
    assert tokens.dtype == mask.dtype == torch.long and tokens.shape == mask.shape == (2, 7)
    for form in (
        {"attention_mask": mask},
        {"attention_mask": mask.bool()},
        {"attention_mask": mask.float()},
    ):
        t, m = model.prepare(tokens, **form)
        assert torch.equal(t, tokens) and torch.equal(m, mask)
    for pair in ((tokens, mask), model.tokenizer(texts, padding=True, return_tensors="pt")):
        t, m = model.prepare(pair)
        assert torch.equal(t, tokens) and torch.equal(m, mask)
    t, m = model.prepare({"input_ids": tokens, "attention_mask": None}, attention_mask=mask)
    assert torch.equal(m, mask)
    one, one_mask = model.prepare(tokens[0])
    assert one.shape == (1, 7) and torch.equal(one_mask, mask[:1])


def test_truncation_keeps_the_reward_token(make_checkpoint) -> None:
    """`max_length` cuts the prompt side: BOS and the last (reward) token stay; the reward is that of the kept
    tokens."""
    model = HookedRewardModel.from_pretrained(make_checkpoint("llama"))
    full, _ = model.tokenize(["the cat is very good thanks"])
    cut, mask = model.tokenize(["the cat is very good thanks", "a dog"], max_length=4)
    assert cut.shape == (2, 4) and cut[0].tolist() == [full[0, 0].item(), *full[0, -3:].tolist()]
    assert cut[0, -1] == full[0, -1] and mask[1].tolist() == [1, 1, 1, 0]
    assert torch.allclose(model(cut, attention_mask=mask)[0], model(cut[:1])[0])
    last_only, _ = model.tokenize(["the cat is very good thanks"], max_length=1)
    assert last_only.tolist() == [[full[0, -1].item()]]
