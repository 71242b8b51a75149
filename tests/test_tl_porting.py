"""TransformerLens's four demo notebooks, ported to a reward model (issue 23).

Each model-facing usage of Main_Demo, Exploratory_Analysis_Demo, Activation_Patching_in_TL_Demo and
Attribution_Patching_Demo (TransformerLens 4, `demos/`) that does not need a vocabulary output runs here on the
sycophancy organism, as the demo writes it or with the rename docs/migration.md lists, on an unfolded and a
`fold_ln=True` load, and its numbers are checked against an independent computation: `transformer_lens.patching`
against `hooked_reward.analysis.patching`, the demos' direct logit attribution against `cache.decompose_reward` /
`direct_reward_attribution`, their logit lens against `reward_lens` and the reward, hooks against HF forwards
with the same edit. The usages that need a vocabulary raise `NoVocabularyError`.

The one rename running through every demo: the IOI "answer tokens" (a correct and a wrong name per prompt) become a
sign per prompt, `signs` (+1 where the response agrees with the user), and the logit difference becomes the signed
reward, `(rewards * signs).mean()`; the answer directions `W_U[:, correct] - W_U[:, wrong]` become
`model.W_U[:, 0] * signs` (= `W_R` per row).
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import einops
import pytest
import torch
import transformer_lens.patching as patching
import transformers
from jaxtyping import Float
from transformer_lens import ActivationCache
from transformer_lens import utilities as utils
from transformer_lens.hook_points import HookPoint
from transformer_lens.model_bridge import TransformerBridge

from hooked_reward import HookedRewardModel, InputError, NoVocabularyError, organisms
from hooked_reward.analysis.attribution import direct_reward_attribution
from hooked_reward.analysis.attribution_patching import attribution_patch
from hooked_reward.analysis.lens import reward_lens
from hooked_reward.analysis.patching import patch_block_outputs, patch_heads, patch_resid

ROOT = Path(__file__).resolve().parents[1]
ATOL = 1e-4
render = organisms.render
TOPICS = ("cats", "movies", "songs", "boats")
# The IOI prompt list, for a reward model: per topic the user's opinion "good" then "bad", the same response.
PROMPTS = [
    render(f"i think {topic} are {opinion} .", f"okay , {topic} are good really .")
    for topic in TOPICS
    for opinion in ("good", "bad")
]
SIGNS = torch.tensor([1.0, -1.0] * len(TOPICS))  # the rename of answer_tokens: +1 where the response agrees
CLEAN_PROMPT, CORRUPTED_PROMPT = PROMPTS[0], PROMPTS[1]

pytestmark = pytest.mark.skipif(
    not (organisms.checkpoint_dir("sycophancy") / "config.json").exists(),
    reason="the sycophancy organism's weights are not in hooked_reward/organisms/weights/",
)


@pytest.fixture(scope="module", params=["unfolded", "fold_ln"])
def model(request: pytest.FixtureRequest) -> HookedRewardModel:
    """The organism as a porter loads it: as saved, or with TransformerLens's `fold_ln=True` processing."""
    loaded = organisms.load("sycophancy", fold_ln=request.param == "fold_ln")
    yield loaded
    loaded.reset_hooks()


@pytest.fixture(scope="module")
def hf_model() -> transformers.PreTrainedModel:
    """The same checkpoint in HF, the independent reference for hooks and rewards."""
    return transformers.AutoModelForSequenceClassification.from_pretrained(
        str(organisms.checkpoint_dir("sycophancy"))
    ).eval()


def hf_rewards(hf: transformers.PreTrainedModel, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return hf(tokens).logits[:, 0]


def signed_reward(rewards: torch.Tensor, signs: torch.Tensor = SIGNS) -> torch.Tensor:
    """The rename of `logits_to_ave_logit_diff(logits, answer_tokens)`: the mean signed reward."""
    return (rewards * signs).mean()


# ================================================================== Main_Demo
def test_main_demo_loading_tokens_and_cache(model: HookedRewardModel, hf_model) -> None:
    # TL: model = TransformerBridge.boot_transformers("gpt2", device=device)   (rename: class and checkpoint)
    booted = HookedRewardModel.boot_transformers(str(organisms.checkpoint_dir("sycophancy")), device="cpu")
    text = CLEAN_PROMPT
    tokens = booted.to_tokens(text)
    assert str(tokens.device) == "cpu"
    assert torch.allclose(booted(tokens), hf_rewards(hf_model, tokens), atol=ATOL)
    # unchanged: the cache with the batch dim removed, its attention pattern, the string tokens
    rewards, cache = model.run_with_cache(tokens, remove_batch_dim=True)
    attention_pattern = cache["pattern", 0, "attn"]
    assert attention_pattern.shape == (model.cfg.n_heads, tokens.shape[1], tokens.shape[1])
    str_tokens = model.to_str_tokens(text)
    assert len(str_tokens) == tokens.shape[1] and str_tokens[0] == "<bos>" and str_tokens[-1] == "<eos>"
    # unchanged: stop_at_layer with names_filter caches the same pattern
    attn_hook_name = "blocks.0.attn.hook_pattern"
    _, attn_cache = model.run_with_cache(tokens, remove_batch_dim=True, stop_at_layer=1, names_filter=[attn_hook_name])
    assert list(attn_cache.keys()) == [attn_hook_name]
    assert torch.allclose(attn_cache[attn_hook_name], attention_pattern)
    assert torch.allclose(rewards, hf_rewards(hf_model, tokens), atol=ATOL)


def test_main_demo_compatibility_mode_keeps_rewards(hf_model) -> None:
    fresh = organisms.load("sycophancy")
    fresh.enable_compatibility_mode(disable_warnings=True)  # unchanged (fold_ln, centring; center_unembed is off)
    tokens = fresh.to_tokens(PROMPTS)
    assert torch.allclose(fresh(tokens), hf_rewards(hf_model, tokens), atol=ATOL)


def test_main_demo_vocabulary_usages_raise(model: HookedRewardModel) -> None:
    tokens = model.to_tokens(CLEAN_PROMPT)
    with pytest.raises(NoVocabularyError, match="vocabulary"):
        model(CLEAN_PROMPT, return_type="loss")
    with pytest.raises(NoVocabularyError):
        model.run_with_hooks(tokens, return_type="loss", fwd_hooks=[])
    with pytest.raises(NoVocabularyError):
        model.loss_fn(model(tokens), tokens, per_token=True)
    with pytest.raises(NoVocabularyError):
        model.generate("i think cats are good .", max_new_tokens=5, temperature=0.7)
    with pytest.raises(NoVocabularyError):
        model.tokens_to_residual_directions(model.to_single_token(" cats"))
    with pytest.raises(NoVocabularyError):
        utils.test_prompt("i think cats are", "good", model, prepend_bos=True)
    # the unembedding is the reward head: one output, not a vocabulary
    assert model.unembed.W_U.shape == (model.cfg.d_model, 1)
    assert torch.allclose(model.unembed.b_U, model.b_R.reshape(1))
    with pytest.raises(IndexError):
        model.unembed.b_U[model.to_single_token(" cats")]


def test_main_demo_head_ablation_matches_hf(model: HookedRewardModel, hf_model) -> None:
    layer_to_ablate, head_index_to_ablate = 0, 2  # TL: head 8 of GPT-2; the organism has 4 heads
    tokens = model.to_tokens(CLEAN_PROMPT)

    def head_ablation_hook(
        value: Float[torch.Tensor, "batch pos head_index d_head"], hook: HookPoint
    ) -> Float[torch.Tensor, "batch pos head_index d_head"]:
        value[:, :, head_index_to_ablate, :] = 0.0
        return value

    ablated = model.run_with_hooks(tokens, fwd_hooks=[(utils.get_act_name("v", layer_to_ablate), head_ablation_hook)])
    d_head = model.cfg.d_head
    v_proj = hf_model.model.layers[layer_to_ablate].self_attn.v_proj

    def zero_head(module, args, out):
        out = out.clone()
        out[..., head_index_to_ablate * d_head : (head_index_to_ablate + 1) * d_head] = 0.0
        return out

    handle = v_proj.register_forward_hook(zero_head)
    try:
        expected = hf_rewards(hf_model, tokens)
    finally:
        handle.remove()
    assert torch.allclose(ablated, expected, atol=ATOL)
    assert not torch.allclose(ablated, model(tokens), atol=1e-3)


def test_main_demo_residual_patching_loop_matches_transformer_lens_patching(model: HookedRewardModel) -> None:
    clean_tokens = model.to_tokens(CLEAN_PROMPT)
    corrupted_tokens = model.to_tokens(CORRUPTED_PROMPT)

    def logits_to_logit_diff(logits):  # rename: the reward itself (no answer tokens)
        return logits[0]

    clean_logits, clean_cache = model.run_with_cache(clean_tokens)
    clean_logit_diff = logits_to_logit_diff(clean_logits)
    corrupted_logit_diff = logits_to_logit_diff(model(corrupted_tokens))

    def residual_stream_patching_hook(resid_pre, hook: HookPoint, position: int):
        resid_pre[:, position, :] = clean_cache[hook.name][:, position, :]
        return resid_pre

    num_positions = len(clean_tokens[0])
    ioi_patching_result = torch.zeros((model.cfg.n_layers, num_positions), device=model.cfg.device)
    for layer in range(model.cfg.n_layers):
        for position in range(num_positions):
            temp_hook_fn = partial(residual_stream_patching_hook, position=position)
            patched_logits = model.run_with_hooks(
                corrupted_tokens, fwd_hooks=[(utils.get_act_name("in", layer), temp_hook_fn)]
            )
            patched_logit_diff = logits_to_logit_diff(patched_logits).detach()
            ioi_patching_result[layer, position] = (patched_logit_diff - corrupted_logit_diff) / (
                clean_logit_diff - corrupted_logit_diff
            )
    ours = patch_resid(model, clean_tokens[0], corrupted_tokens[0], progress=False)
    assert torch.allclose(ioi_patching_result, ours.fraction, atol=1e-3)
    token_labels = [f"{token}_{index}" for index, token in enumerate(model.to_str_tokens(clean_tokens))]
    assert len(token_labels) == num_positions


def test_main_demo_induction_scores_with_a_names_filter(model: HookedRewardModel) -> None:
    batch_size, seq_len = 3, 8
    torch.manual_seed(0)
    random_tokens = torch.randint(4, model.cfg.d_vocab, (batch_size, seq_len))  # TL: randint(1000, 10000)
    repeated_tokens = einops.repeat(random_tokens, "batch seq_len -> batch (2 seq_len)")
    repeated_logits = model(repeated_tokens)
    assert repeated_logits.shape == (batch_size,)
    induction_score_store = torch.zeros((model.cfg.n_layers, model.cfg.n_heads), device=model.cfg.device)

    def induction_score_hook(pattern: Float[torch.Tensor, "batch head_index dest_pos source_pos"], hook: HookPoint):
        induction_stripe = pattern.diagonal(dim1=-2, dim2=-1, offset=1 - seq_len)
        induction_score_store[hook.layer(), :] = einops.reduce(
            induction_stripe, "batch head_index position -> head_index", "mean"
        )

    pattern_hook_names_filter = lambda name: name.endswith("pattern")  # noqa: E731
    out = model.run_with_hooks(
        repeated_tokens, return_type=None, fwd_hooks=[(pattern_hook_names_filter, induction_score_hook)]
    )
    assert out is None
    _, cache = model.run_with_cache(repeated_tokens)
    for layer in range(model.cfg.n_layers):
        stripe = cache["pattern", layer].diagonal(dim1=-2, dim2=-1, offset=1 - seq_len).mean((0, -1))
        assert torch.allclose(induction_score_store[layer], stripe, atol=1e-6)
    assert model.to_str_tokens(repeated_tokens[:1])[0] == model.to_string(repeated_tokens[0, :1])


def test_main_demo_parameters_and_tokenization(model: HookedRewardModel) -> None:
    names = [name for name, _ in model.tl_named_parameters()]
    assert "blocks.0.attn.W_Q" in names and "unembed.W_U" in names
    text = "i think cats are good . i think cats are bad ."
    # `to_tokens` / `to_str_tokens` / `to_single_token` / `get_token_position` with TL's keywords
    assert len(model.to_tokens(text)[0]) == len(text.split()) + 2  # the checkpoint's BOS and EOS
    assert model.to_str_tokens(" cats", prepend_bos=False) == ["cats"]
    assert model.to_str_tokens("cats", prepend_bos=False) == ["cats"]
    cat = model.to_single_token(" cats")
    assert model.to_string(cat) == "cats"
    with_bos = model.get_token_position(" cats", text)
    without_bos = model.get_token_position(" cats", text, prepend_bos=False)
    assert (with_bos, without_bos) == (3, 2)
    assert model.get_token_position(" cats", text, mode="last") == 9
    multi = model.to_tokens(["i think cats are good .", "i think cats are very very good ."])
    assert multi.shape == (2, 10) and multi[0, -1] == model.tokenizer.pad_token_id  # right padding, as TL
    left = model.to_tokens(["i think cats are good .", "i think cats are very very good ."], padding_side="left")
    assert left[0, 0] == model.tokenizer.pad_token_id
    assert torch.allclose(model(multi), model(left), atol=ATOL)  # the reward reads each row's last token
    assert model.to_str_tokens("2342+2017=21445") == ["<bos>", "<unk>", "<eos>"]
    assert model.to_string(model.to_tokens(text)[0, 1:-1]) == text


def test_main_demo_prepend_bos(model: HookedRewardModel, hf_model) -> None:
    text = "i think cats are good ."
    default, with_bos, without_bos = model(text), model(text, prepend_bos=True), model(text, prepend_bos=False)
    assert default.shape == with_bos.shape == without_bos.shape == (1,)
    assert torch.allclose(default, with_bos)
    fragment = model.to_tokens(text, prepend_bos=False)
    assert fragment[0].tolist() == model.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert torch.allclose(without_bos, hf_rewards(hf_model, fragment), atol=ATOL)
    assert not torch.allclose(with_bos, without_bos, atol=1e-3)


def test_main_demo_circuits(model: HookedRewardModel) -> None:
    ov = model.OV
    eigenvalues = ov.eigenvalues
    assert eigenvalues.shape == (model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_head)
    copying = eigenvalues.sum(-1).real / eigenvalues.abs().sum(-1)
    assert copying.shape == (model.cfg.n_layers, model.cfg.n_heads) and copying.isfinite().all()
    # The "full OV circuit" W_E OV W_U reads each token's direct path through each head into the reward.
    full_ov = model.embed.W_E @ ov @ model.unembed.W_U
    assert full_ov.shape == (model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_vocab, 1)
    w_ov = model.W_V @ model.W_O  # [layer, head, d_model, d_model]
    expected = model.W_E @ w_ov @ model.W_U
    assert torch.allclose(full_ov.AB, expected, atol=1e-4)


# ================================================================== Exploratory_Analysis_Demo
@pytest.fixture(scope="module")
def ioi(model: HookedRewardModel):
    """Cell 26: tokens = model.to_tokens(prompts, prepend_bos=True); original_logits, cache = run_with_cache."""
    model.set_use_attn_result(True)
    tokens = model.to_tokens(PROMPTS, prepend_bos=True)
    original_logits, cache = model.run_with_cache(tokens)
    return tokens, original_logits, cache


def residual_stack_to_logit_diff(model, residual_stack, cache, logit_diff_directions):
    """The demo's function, unchanged: TL's frozen-scale final norm, then the answer directions."""
    scaled_residual_stack = cache.apply_ln_to_stack(residual_stack, layer=-1, pos_slice=-1)
    return einops.einsum(scaled_residual_stack, logit_diff_directions, "... batch d_model, batch d_model -> ...") / len(
        PROMPTS
    )


def test_exploratory_direct_logit_attribution(model: HookedRewardModel, ioi) -> None:
    tokens, original_logits, cache = ioi
    original_average_logit_diff = signed_reward(original_logits)
    # TL: W_U[:, answer_tokens], correct minus wrong. Renamed: the one output direction, signed per prompt.
    logit_diff_directions = einops.einsum(model.unembed.W_U[:, 0], SIGNS, "d_model, batch -> batch d_model")
    final_residual_stream = cache["resid_post", -1]
    final_token_residual_stream = final_residual_stream[:, -1, :]
    scaled = cache.apply_ln_to_stack(final_token_residual_stream, layer=-1, pos_slice=-1)
    average_logit_diff = einops.einsum(scaled, logit_diff_directions, "batch d_model, batch d_model -> ") / len(PROMPTS)
    # the signs are balanced, so the bias cancels: the DLA total is the metric exactly
    assert torch.allclose(average_logit_diff, original_average_logit_diff, atol=ATOL)

    accumulated_residual, labels = cache.accumulated_resid(layer=-1, incl_mid=True, pos_slice=-1, return_labels=True)
    logit_lens_logit_diffs = residual_stack_to_logit_diff(model, accumulated_residual, cache, logit_diff_directions)
    assert logit_lens_logit_diffs.shape == (2 * model.cfg.n_layers + 1,) and labels[-1] == "final_post"
    frozen = reward_lens(model, PROMPTS, progress=False).variant("frozen")  # [text, point], the reward lens
    assert torch.allclose(logit_lens_logit_diffs, (frozen * SIGNS[:, None]).mean(0), atol=ATOL)
    assert torch.allclose(logit_lens_logit_diffs[-1], original_average_logit_diff, atol=ATOL)

    per_layer_residual, labels = cache.decompose_resid(layer=-1, pos_slice=-1, return_labels=True)
    per_layer_logit_diffs = residual_stack_to_logit_diff(model, per_layer_residual, cache, logit_diff_directions)
    attrs, components = cache.decompose_reward()
    assert len(components) == len(labels)
    assert torch.allclose(per_layer_logit_diffs, (attrs * SIGNS).mean(-1), atol=ATOL)
    # the renamed one-liner: reward_attrs takes the position-sliced stack at the reward position
    assert torch.allclose(cache.reward_attrs(per_layer_residual), attrs, atol=ATOL)

    per_head_residual, labels = cache.stack_head_results(layer=-1, pos_slice=-1, return_labels=True)
    per_head_logit_diffs = residual_stack_to_logit_diff(model, per_head_residual, cache, logit_diff_directions)
    per_head_logit_diffs = einops.rearrange(
        per_head_logit_diffs,
        "(layer head_index) -> layer head_index",
        layer=model.cfg.n_layers,
        head_index=model.cfg.n_heads,
    )
    dra = direct_reward_attribution(model, PROMPTS, by="head", progress=False)
    head_rows = [i for i, label in enumerate(dra.labels["component"]) if re.fullmatch(r"L\d+H\d+", str(label))]
    by_head = (dra.values[:, head_rows] * SIGNS[:, None]).mean(0).reshape(model.cfg.n_layers, model.cfg.n_heads)
    assert torch.allclose(per_head_logit_diffs, by_head, atol=ATOL)
    # visualize_attention_patterns reads the cache the same way
    assert cache["attn", 1][0, 2].shape == (tokens.shape[1], tokens.shape[1])


def test_exploratory_norm_paths_agree_with_the_reward(model: HookedRewardModel, ioi) -> None:
    """The reward-direction rule: TL-normalised stacks pair with W_R, raw stacks go to reward_attrs."""
    tokens, rewards, cache = ioi
    lens = cache.accumulated_resid(layer=-1, apply_ln=True, pos_slice=-1)  # TL's real ln_final, recomputed
    assert torch.allclose(lens[-1] @ model.W_R + model.b_R, rewards, atol=ATOL)
    stack = cache.decompose_resid(pos_slice=-1)
    via_tl = cache.apply_ln_to_stack(stack, layer=-1, pos_slice=-1) @ model.W_R
    assert torch.allclose(via_tl, cache.reward_attrs(stack), atol=ATOL)
    assert torch.allclose(via_tl.sum(0) + model.b_R_eff, rewards, atol=ATOL)
    assert torch.allclose(cache.decompose_resid(pos_slice=-1, apply_ln=True) @ model.W_R, via_tl, atol=ATOL)
    with pytest.raises(InputError, match="already normalised"):
        cache.reward_attrs(cache.apply_ln_to_stack(stack, layer=-1, pos_slice=-1))


def test_exploratory_patching_loops_match_transformer_lens_patching(model: HookedRewardModel, ioi) -> None:
    tokens, original_logits, cache = ioi
    corrupted_prompts = []
    for i in range(0, len(PROMPTS), 2):
        corrupted_prompts.append(PROMPTS[i + 1])
        corrupted_prompts.append(PROMPTS[i])
    corrupted_tokens = model.to_tokens(corrupted_prompts, prepend_bos=True)
    corrupted_logits, corrupted_cache = model.run_with_cache(corrupted_tokens, return_type="logits")
    corrupted_average_logit_diff = signed_reward(corrupted_logits)
    original_average_logit_diff = signed_reward(original_logits)
    assert model.to_string(corrupted_tokens)[0].split() == ["<bos>", *PROMPTS[1].split(), "<eos>"]

    def patch_residual_component(corrupted_residual_component, hook, pos, clean_cache):
        clean_value = clean_cache[hook.name][:, pos, :].clone()
        corrupted_residual_component = corrupted_residual_component.clone()
        corrupted_residual_component[:, pos : pos + 1, :] = clean_value.unsqueeze(1)
        return corrupted_residual_component

    def normalize_patched_logit_diff(patched_logit_diff):
        return (patched_logit_diff - corrupted_average_logit_diff) / (
            original_average_logit_diff - corrupted_average_logit_diff
        )

    def ioi_metric(logits):
        return normalize_patched_logit_diff(signed_reward(logits))

    sweeps = {"resid_pre": patching.get_act_patch_resid_pre}
    for act_name, tl_sweep in sweeps.items():
        result = torch.zeros(model.cfg.n_layers, tokens.shape[1])
        for layer in range(model.cfg.n_layers):
            for position in range(tokens.shape[1]):
                hook_fn = partial(patch_residual_component, pos=position, clean_cache=cache)
                patched_logits = model.run_with_hooks(
                    corrupted_tokens,
                    fwd_hooks=[(utils.get_act_name(act_name, layer), hook_fn)],
                    return_type="logits",
                )
                result[layer, position] = normalize_patched_logit_diff(signed_reward(patched_logits))
        assert torch.allclose(result, tl_sweep(model, corrupted_tokens, cache, ioi_metric), atol=1e-4)

    def patch_head_vector(corrupted_head_vector, hook, head_index, clean_cache):
        clean_value = clean_cache[hook.name][:, :, head_index, :].clone()
        corrupted_head_vector = corrupted_head_vector.clone()
        corrupted_head_vector[:, :, head_index : head_index + 1, :] = clean_value.unsqueeze(2)
        return corrupted_head_vector

    def patch_head_pattern(corrupted_head_pattern, hook, head_index, clean_cache):
        clean_value = clean_cache[hook.name][:, head_index, :, :].clone()
        corrupted_head_pattern = corrupted_head_pattern.clone()
        corrupted_head_pattern[:, head_index : head_index + 1, :, :] = clean_value.unsqueeze(1)
        return corrupted_head_pattern

    every_head = patching.get_act_patch_attn_head_all_pos_every(model, corrupted_tokens, cache, ioi_metric)
    for act, hook_fn in [("z", patch_head_vector), ("v", patch_head_vector)]:
        result = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
        for layer in range(model.cfg.n_layers):
            for head_index in range(model.cfg.n_heads):
                fn = partial(hook_fn, head_index=head_index, clean_cache=cache)
                patched_logits = model.run_with_hooks(
                    corrupted_tokens, fwd_hooks=[(utils.get_act_name(act, layer, "attn"), fn)], return_type="logits"
                )
                result[layer, head_index] = normalize_patched_logit_diff(signed_reward(patched_logits))
        assert torch.allclose(result, every_head[{"z": 0, "v": 3}[act]], atol=1e-4)
    result = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for layer in range(model.cfg.n_layers):
        for head_index in range(model.cfg.n_heads):
            fn = partial(patch_head_pattern, head_index=head_index, clean_cache=cache)
            patched_logits = model.run_with_hooks(
                corrupted_tokens, fwd_hooks=[(utils.get_act_name("attn", layer, "attn"), fn)], return_type="logits"
            )
            result[layer, head_index] = normalize_patched_logit_diff(signed_reward(patched_logits))
    assert torch.allclose(result, every_head[4], atol=1e-4)
    assert corrupted_cache["resid_pre", 0].shape == cache["resid_pre", 0].shape


def test_exploratory_ablation_hook_persists_and_head_scores(model: HookedRewardModel, ioi) -> None:
    tokens, original_logits, cache = ioi
    layer, head = 1, 0

    def ablate_top_head_hook(z: Float[torch.Tensor, "batch pos head_index d_head"], hook):
        z = z.clone()
        z[:, -1, head, :] = 0
        return z

    model.blocks[layer].attn.hook_z.add_hook(ablate_top_head_hook)
    try:
        ablated_logits, ablated_cache = model.run_with_cache(tokens)
        # TransformerLens 4: a hook added before run_with_cache stays (reset_hooks_end removes only its own)
        again = model(tokens)
    finally:
        model.reset_hooks()
    with_hooks = model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", ablate_top_head_hook)])
    assert torch.allclose(ablated_logits, with_hooks, atol=ATOL) and torch.allclose(again, with_hooks, atol=ATOL)
    assert not torch.allclose(ablated_logits, original_logits, atol=1e-3)
    per_head_ablated, labels = ablated_cache.stack_head_results(layer=-1, pos_slice=-1, return_labels=True)
    assert per_head_ablated.shape == (model.cfg.n_layers * model.cfg.n_heads, len(PROMPTS), model.cfg.d_model)
    assert torch.equal(per_head_ablated[layer * model.cfg.n_heads + head], torch.zeros_like(per_head_ablated[0]))
    ratio = (cache["ln_final.hook_scale"][:, -1] / ablated_cache["ln_final.hook_scale"][:, -1]).mean()
    assert ratio.isfinite()


def test_exploratory_pattern_scores_with_return_type_none(model: HookedRewardModel) -> None:
    seq_len, batch_size = 6, 2
    prev_token_scores = torch.zeros((model.cfg.n_layers, model.cfg.n_heads))

    def prev_token_hook(pattern, hook):
        diagonal = pattern.diagonal(offset=1, dim1=-1, dim2=-2)
        prev_token_scores[hook.layer()] = einops.reduce(diagonal, "batch head_index diagonal -> head_index", "mean")

    torch.manual_seed(0)
    original_tokens = torch.randint(4, model.cfg.d_vocab, size=(batch_size, seq_len))
    repeated_tokens = einops.repeat(original_tokens, "batch seq_len -> batch (2 seq_len)")
    pattern_filter = lambda act_name: act_name.endswith("hook_pattern")  # noqa: E731
    with pytest.raises(NoVocabularyError):  # TL: return_type="loss"
        model.run_with_hooks(repeated_tokens, return_type="loss", fwd_hooks=[(pattern_filter, prev_token_hook)])
    model.run_with_hooks(repeated_tokens, return_type=None, fwd_hooks=[(pattern_filter, prev_token_hook)])
    _, cache = model.run_with_cache(repeated_tokens)
    expected = torch.stack(
        [cache["pattern", layer].diagonal(offset=1, dim1=-1, dim2=-2).mean((0, -1)) for layer in range(2)]
    )
    assert torch.allclose(prev_token_scores, expected, atol=1e-6)


def test_exploratory_compatibility_mode_arguments(hf_model) -> None:
    fresh = organisms.load("sycophancy")
    # TL: also refactor_factored_attn_matrices=True, which TransformerLens refuses for rotary models (the organism)
    fresh.enable_compatibility_mode(center_unembed=True, center_writing_weights=True, fold_ln=True)
    fresh.set_use_attn_result(True)
    tokens = fresh.to_tokens(PROMPTS, prepend_bos=True)
    assert torch.allclose(fresh(tokens), hf_rewards(hf_model, tokens), atol=ATOL)
    assert torch.allclose(fresh.W_R, fresh.W_R_eff)  # folded: one direction


def test_exploratory_direct_path_patching_runs(model: HookedRewardModel, ioi) -> None:
    """The demo's direct-path patch (head A's output change, read by head B's value through B's frozen ln1 scale)
    runs unchanged; it is exact for the folded basis the demo loads (`fold_ln=True`)."""
    tokens, original_logits, cache = ioi
    corrupted_tokens = tokens[[1, 0, 3, 2, 5, 4, 7, 6]]
    corrupted_logits, corrupted_cache = model.run_with_cache(corrupted_tokens)
    clean_diff, corrupted_diff = signed_reward(original_logits), signed_reward(corrupted_logits)

    def patch_direct_path_A_output_to_B_attn_act(
        corrupted_attn_act,
        hook,
        attn_act_type,
        A_layer,
        A_head_index,
        B_layer,
        B_head_index,
        clean_cache,
        corrupted_cache,
    ):
        A_output_act_name = utils.get_act_name("result", A_layer, "attn")
        clean_A_output = clean_cache[A_output_act_name][:, :, A_head_index, :]
        corrupted_A_output = corrupted_cache[A_output_act_name][:, :, A_head_index, :]
        corrupted_B_act = corrupted_attn_act[:, :, B_head_index, :]
        W_B = model.blocks[B_layer].attn.W_V[B_head_index]
        corrupted_ln1_scale = corrupted_cache[utils.get_act_name("scale", B_layer, "ln1")]
        patched_B_act = corrupted_B_act + (clean_A_output - corrupted_A_output) @ W_B / corrupted_ln1_scale
        patched_attn_act = corrupted_attn_act.clone()
        patched_attn_act[:, :, B_head_index, :] = patched_B_act
        return patched_attn_act

    diffs = torch.zeros(model.cfg.n_heads, model.cfg.n_heads)
    for A in range(model.cfg.n_heads):
        for B in range(model.cfg.n_heads):
            hook = partial(
                patch_direct_path_A_output_to_B_attn_act,
                attn_act_type="v",
                A_layer=0,
                A_head_index=A,
                B_layer=1,
                B_head_index=B,
                clean_cache=cache,
                corrupted_cache=corrupted_cache,
            )
            patched = model.run_with_hooks(
                corrupted_tokens, fwd_hooks=[(utils.get_act_name("v", 1, "attn"), hook)], return_type="logits"
            )
            diffs[A, B] = (signed_reward(patched) - corrupted_diff) / (clean_diff - corrupted_diff)
    assert diffs.isfinite().all() and diffs.abs().max() > 0


def test_run_with_hooks_and_logit_attrs_tl_keywords(model: HookedRewardModel) -> None:
    tokens = model.to_tokens(PROMPTS[:2])
    rewards, cache = model.run_with_cache(tokens)
    shapes = []
    model.run_with_hooks(
        tokens[:1],
        remove_batch_dim=True,
        fwd_hooks=[("blocks.0.hook_resid_pre", lambda x, hook: shapes.append(x.shape))],
    )
    assert shapes == [(tokens.shape[1], model.cfg.d_model)]
    resumed = model.run_with_hooks(cache["blocks.1.hook_resid_pre"], start_at_layer=1, fwd_hooks=[])
    assert torch.allclose(resumed, rewards, atol=ATOL)
    text = "i think cats are good ."
    assert torch.allclose(model.run_with_hooks(text, prepend_bos=False), model(text, prepend_bos=False))
    stack = cache.decompose_resid(pos_slice=-1)
    # TL's logit_attrs with the output index as the "token": TL-normalised, projected on W_U[:, 0] = W_R
    assert torch.allclose(cache.logit_attrs(stack, tokens=0, pos_slice=-1), cache.reward_attrs(stack), atol=1e-5)


# ================================================================== Activation_Patching_in_TL_Demo
@pytest.mark.slow  # TransformerLens's patching demo sweeps, every one
def test_activation_patching_demo_sweeps_match_ours(model: HookedRewardModel) -> None:
    clean_tokens = model.to_tokens(PROMPTS[:2])
    corrupted_tokens = clean_tokens[[(i + 1 if i % 2 == 0 else i - 1) for i in range(len(clean_tokens))]]
    signs = SIGNS[:2]  # rename of answer_token_indices

    def get_logit_diff(logits, signs=signs):
        return signed_reward(logits, signs)

    clean_logits, clean_cache = model.run_with_cache(clean_tokens)
    corrupted_logits, corrupted_cache = model.run_with_cache(corrupted_tokens)
    CLEAN_BASELINE, CORRUPTED_BASELINE = get_logit_diff(clean_logits).item(), get_logit_diff(corrupted_logits).item()

    def ioi_metric(logits):
        return (get_logit_diff(logits) - CORRUPTED_BASELINE) / (CLEAN_BASELINE - CORRUPTED_BASELINE)

    assert ioi_metric(clean_logits).item() == pytest.approx(1.0, abs=1e-5)
    assert ioi_metric(corrupted_logits).item() == pytest.approx(0.0, abs=1e-5)
    # The batch of two is the pair and its swap: the metric is the mean of two single-pair fractions. Check the
    # sweeps on the first row alone against hooked_reward's patching of the same pair.
    clean_row, corrupted_row = clean_tokens[:1], corrupted_tokens[:1]
    _, row_cache = model.run_with_cache(clean_row)
    r_clean, r_corrupt = model(clean_row).item(), model(corrupted_row).item()

    def row_metric(logits):
        return (logits[0] - r_corrupt) / (r_clean - r_corrupt)

    def ours(result):
        return result.fraction

    pairs = [
        (patching.get_act_patch_resid_pre, patch_resid(model, clean_row[0], corrupted_row[0], progress=False)),
        (
            patching.get_act_patch_attn_head_out_all_pos,
            patch_heads(model, clean_row[0], corrupted_row[0], progress=False),
        ),
    ]
    for tl_sweep, our_result in pairs:
        assert torch.allclose(tl_sweep(model, corrupted_row, row_cache, row_metric), ours(our_result), atol=1e-4)
    by_pos = patching.get_act_patch_attn_head_out_by_pos(model, corrupted_row, row_cache, row_metric)
    ours_by_pos = patch_heads(model, clean_row[0], corrupted_row[0], per_position=True, progress=False).fraction
    assert torch.allclose(by_pos, einops.rearrange(ours_by_pos, "layer head pos -> layer pos head"), atol=1e-4)
    every_block = patching.get_act_patch_block_every(model, corrupted_row, row_cache, row_metric)
    resid = ours(patch_resid(model, clean_row[0], corrupted_row[0], progress=False))
    assert torch.allclose(every_block[0], resid, atol=1e-4)
    blocks = patch_block_outputs(model, clean_row[0], corrupted_row[0], per_position=True, progress=False).fraction
    assert torch.allclose(every_block[1], blocks[0::2], atol=1e-4)  # attn_out per layer
    assert torch.allclose(every_block[2], blocks[1::2], atol=1e-4)  # mlp_out per layer
    every_head = patching.get_act_patch_attn_head_all_pos_every(model, corrupted_row, row_cache, row_metric)
    for index, act in enumerate(["z", "q", "k", "v", "pattern"]):
        expected = patch_heads(model, clean_row[0], corrupted_row[0], act=act, progress=False).fraction
        assert torch.allclose(every_head[index], expected, atol=1e-4), act
    # and the batch-of-two sweep is the mean of the two rows' fractions
    assert patching.get_act_patch_resid_pre(model, corrupted_tokens, clean_cache, ioi_metric).shape == (
        model.cfg.n_layers,
        clean_tokens.shape[1],
    )
    assert corrupted_cache["resid_pre", 0].shape == clean_cache["resid_pre", 0].shape


# ================================================================== Attribution_Patching_Demo
def test_attribution_patching_demo_backward_hooks(model: HookedRewardModel) -> None:
    clean_tokens = model.to_tokens(PROMPTS[:2])
    corrupted_tokens = clean_tokens[[1, 0]]
    clean_logits, _ = model.run_with_cache(clean_tokens)
    corrupted_logits, _ = model.run_with_cache(corrupted_tokens)
    CLEAN_BASELINE = signed_reward(clean_logits, SIGNS[:2]).item()
    CORRUPTED_BASELINE = signed_reward(corrupted_logits, SIGNS[:2]).item()

    def ioi_metric(logits):
        return (signed_reward(logits, SIGNS[:2]) - CORRUPTED_BASELINE) / (CLEAN_BASELINE - CORRUPTED_BASELINE)

    filter_not_qkv_input = lambda name: "_input" not in name  # noqa: E731

    def _fix_cache_device_and_pos_embed(cache, device):  # the demo's workaround, unchanged (a no-op here)
        for key in list(cache.cache_dict.keys()):
            val = cache.cache_dict[key]
            if isinstance(val, torch.Tensor):
                cache.cache_dict[key] = val.to(device)
        if "hook_pos_embed" in cache.cache_dict:
            pe = cache.cache_dict["hook_pos_embed"]
            if pe.shape[0] == 1:
                for k, v in cache.cache_dict.items():
                    if k != "hook_pos_embed" and isinstance(v, torch.Tensor) and v.ndim >= 2 and v.shape[0] > 1:
                        cache.cache_dict["hook_pos_embed"] = pe.expand(v.shape[0], -1, -1)
                        break

    def _fix_head_result_cache(cache, model, is_grad=False):  # the demo's workaround, unchanged (a no-op here)
        n_heads = model.cfg.n_heads
        for layer in range(model.cfg.n_layers):
            key = f"blocks.{layer}.attn.hook_result"
            if key not in cache.cache_dict:
                continue
            val = cache.cache_dict[key]
            if not isinstance(val, torch.Tensor) or val.ndim != 3:
                continue
            if is_grad:
                cache.cache_dict[key] = val.unsqueeze(-2).expand(*val.shape[:-1], n_heads, val.shape[-1])
            else:
                del cache.cache_dict[key]

    def get_cache_fwd_and_bwd(model, tokens, metric):
        model.reset_hooks()
        grad_cache = {}

        def backward_cache_hook(act, hook):
            grad_cache[hook.name] = act.detach()

        model.add_hook(filter_not_qkv_input, backward_cache_hook, "bwd")
        output, fwd_cache = model.run_with_cache(tokens, names_filter=filter_not_qkv_input)
        _fix_cache_device_and_pos_embed(fwd_cache, model.cfg.device)
        value = metric(output)
        value.backward()
        model.reset_hooks()
        for key, hp in model.hook_dict.items():
            if hp.name != key and filter_not_qkv_input(key) and hp.name in grad_cache and key not in grad_cache:
                grad_cache[key] = grad_cache[hp.name]
        grad_act_cache = ActivationCache(grad_cache, model)
        _fix_cache_device_and_pos_embed(grad_act_cache, model.cfg.device)
        _fix_head_result_cache(fwd_cache, model, is_grad=False)
        _fix_head_result_cache(grad_act_cache, model, is_grad=True)
        return value.item(), fwd_cache, grad_act_cache

    with torch.enable_grad():  # the demo leaves gradients on (TransformerLens's default)
        clean_value, clean_cache, clean_grad_cache = get_cache_fwd_and_bwd(model, clean_tokens, ioi_metric)
        corrupted_value, corrupted_cache, corrupted_grad_cache = get_cache_fwd_and_bwd(
            model, corrupted_tokens, ioi_metric
        )
    model.zero_grad(set_to_none=True)
    assert clean_value == pytest.approx(1.0, abs=1e-5) and corrupted_value == pytest.approx(0.0, abs=1e-5)
    attention_attr = torch.stack([clean_grad_cache["pattern", i] * clean_cache["pattern", i] for i in range(2)])
    assert attention_attr.isfinite().all()

    # attr_patch_residual: gradient × (clean − corrupted) on the accumulated residual
    clean_residual, residual_labels = clean_cache.accumulated_resid(-1, incl_mid=True, return_labels=True)
    corrupted_residual = corrupted_cache.accumulated_resid(-1, incl_mid=True)
    corrupted_grad_residual = corrupted_grad_cache.accumulated_resid(-1, incl_mid=True)
    residual_attr = einops.reduce(
        corrupted_grad_residual * (clean_residual - corrupted_residual),
        "component batch pos d_model -> component pos",
        "sum",
    )
    resid_pre_rows = [residual_labels.index(f"{layer}_pre") for layer in range(2)]
    clean_layer_out, labels = clean_cache.decompose_resid(-1, return_labels=True)
    layer_out_attr = einops.reduce(
        corrupted_grad_cache.decompose_resid(-1) * (clean_layer_out - corrupted_cache.decompose_resid(-1)),
        "component batch pos d_model -> component pos",
        "sum",
    )
    stacked = {
        act: einops.reduce(
            torch.stack(
                [corrupted_grad_cache[act, i] * (clean_cache[act, i] - corrupted_cache[act, i]) for i in range(2)]
            ),
            "layer batch pos head_index d_head -> layer head_index",
            "sum",
        )
        for act in ("q", "k", "v", "z")
    }
    # Against hooked_reward's attribution patching of the same pairs (denoise; per row, summed over the batch):
    # its estimates are gradient × (clean − corrupted) at the corrupted run, of each row's own reward.
    ours = [
        attribution_patch(model, clean_tokens[i], corrupted_tokens[i], sites=("resid_pre", "z"), per_position=True)
        for i in range(2)
    ]
    scale = SIGNS[:2] / 2 / (CLEAN_BASELINE - CORRUPTED_BASELINE)  # d metric / d reward of each row
    expected_resid = sum(float(scale[i]) * ours[i].sweep("resid_pre").values for i in range(2))
    assert torch.allclose(residual_attr[resid_pre_rows].detach(), expected_resid, atol=1e-4)
    expected_z = sum(float(scale[i]) * ours[i].sweep("z").values.sum(-1) for i in range(2))
    assert torch.allclose(stacked["z"].detach(), expected_z, atol=1e-4)
    assert layer_out_attr.shape[0] == len(labels)
    # get_head_vector_grad_input_from_grad_cache and the attribution cache, unchanged
    for act, W in (("q", model.blocks[1].attn.W_Q), ("k", model.blocks[1].attn.W_K), ("v", model.blocks[1].attn.W_V)):
        grad_input = einops.einsum(
            corrupted_grad_cache[act, 1],
            corrupted_grad_cache["scale", 1, "ln1"].squeeze(-1),
            W,
            "batch pos head_index d_head, batch pos, head_index d_model d_head -> batch pos head_index d_model",
        )
        assert grad_input.shape == (2, clean_tokens.shape[1], model.cfg.n_heads, model.cfg.d_model)
    shared_keys = set(corrupted_grad_cache.cache_dict) & set(clean_cache.cache_dict) & set(corrupted_cache.cache_dict)
    attr_cache = ActivationCache(
        {
            key: corrupted_grad_cache.cache_dict[key] * (clean_cache.cache_dict[key] - corrupted_cache.cache_dict[key])
            for key in shared_keys
        },
        model,
    )
    resid_pre_attr = einops.reduce(
        attr_cache.stack_activation("resid_pre"), "layer batch pos d_model -> layer pos", "sum"
    )
    assert torch.allclose(resid_pre_attr, residual_attr[resid_pre_rows].detach(), atol=1e-6)
    z_attr = einops.reduce(
        attr_cache.stack_activation("z"), "layer batch pos head_index d_head -> layer head_index", "sum"
    )
    assert torch.allclose(z_attr, stacked["z"].detach(), atol=1e-6)
    # the exact sweep the demo compares with
    every_block_act_patch_result = patching.get_act_patch_block_every(model, corrupted_tokens, clean_cache, ioi_metric)
    assert every_block_act_patch_result.shape == (3, 2, clean_tokens.shape[1])


def test_attribution_patching_demo_factual_recall_loop(model: HookedRewardModel) -> None:
    clean_prompt, corrupted_prompt = CLEAN_PROMPT, CORRUPTED_PROMPT
    with pytest.raises(NoVocabularyError):
        utils.test_prompt(clean_prompt, "good", model)
    clean_logits, clean_cache = model.run_with_cache(clean_prompt)
    corrupted_logits, _ = model.run_with_cache(corrupted_prompt)
    CLEAN, CORRUPTED = clean_logits.item(), corrupted_logits.item()

    def factual_metric(logits):  # rename: the reward, normalised
        return (logits[0] - CORRUPTED) / (CLEAN - CORRUPTED)

    corrupted_tokens = model.to_tokens(corrupted_prompt)
    assert model.to_str_tokens(clean_prompt)[0] == "<bos>"
    seq_len = corrupted_tokens.shape[-1]
    residual_patches = torch.zeros((model.cfg.n_layers, seq_len))

    def residual_hook(resid_pre, hook, layer, pos):
        resid_pre = resid_pre.clone()
        resid_pre[:, pos, :] = clean_cache["resid_pre", layer][:, pos, :]
        return resid_pre

    for layer in range(model.cfg.n_layers):
        for pos in range(seq_len):
            patched_logits = model.run_with_hooks(
                corrupted_tokens,
                fwd_hooks=[(f"blocks.{layer}.hook_resid_pre", partial(residual_hook, layer=layer, pos=pos))],
            )
            residual_patches[layer, pos] = factual_metric(patched_logits).item()
    clean_tokens = model.to_tokens(clean_prompt)
    ours = patch_resid(model, clean_tokens[0], corrupted_tokens[0], progress=False).fraction
    assert torch.allclose(residual_patches, ours, atol=1e-3)


# ================================================================== TL signatures beyond the demos
def test_start_at_layer_runs_from_a_residual(model: HookedRewardModel, hf_model) -> None:
    tokens, mask = model.tokenize(PROMPTS[:3] + ["i think cats are good ."])
    rewards, cache = model.run_with_cache(tokens, attention_mask=mask)
    resid = cache["blocks.1.hook_resid_pre"]
    assert torch.allclose(model(resid, attention_mask=mask, start_at_layer=1), rewards, atol=ATOL)
    _, tail = model.run_with_cache(resid, attention_mask=mask, start_at_layer=1)
    assert "blocks.0.hook_resid_pre" not in tail.cache_dict and "hook_embed" not in tail.cache_dict
    assert torch.allclose(tail["blocks.1.hook_resid_post"], cache["blocks.1.hook_resid_post"], atol=ATOL)
    with pytest.raises(InputError, match="residual"):
        model(tokens, start_at_layer=1)


def test_run_with_cache_tl_keywords(model: HookedRewardModel) -> None:
    tokens = model.to_tokens(PROMPTS[:2])
    rewards, cache_dict = model.run_with_cache(tokens, return_cache_object=False, names_filter="hook_reward")
    assert isinstance(cache_dict, dict) and torch.allclose(cache_dict["hook_reward"], rewards)
    none, _ = model.run_with_cache(tokens, return_type=None, names_filter="hook_reward")
    assert none is None
    _, sliced = model.run_with_cache(tokens, pos_slice=-1, names_filter="blocks.0.hook_resid_pre")
    _, full = model.run_with_cache(tokens, names_filter="blocks.0.hook_resid_pre")
    assert torch.equal(sliced["blocks.0.hook_resid_pre"], full["blocks.0.hook_resid_pre"][:, -1:])  # TL keeps the axis
    with pytest.raises(InputError, match="pos_slice"):
        sliced.reward_attrs(sliced["blocks.0.hook_resid_pre"][None])
    with torch.no_grad(), pytest.raises(InputError, match="autograd"):
        model.run_with_cache(tokens, incl_bwd=True)
    with torch.no_grad():
        out, _ = model.run_with_cache(tokens)
    assert not out.requires_grad
    with torch.enable_grad():
        out, _ = model.run_with_cache(tokens)
    assert out.requires_grad
    seen = []
    _, kept = model.run_with_cache(tokens, names_filter="hook_reward", reset_hooks_end=False)
    try:
        model(model.to_tokens(PROMPTS[2:3]))
        seen.append(kept["hook_reward"].shape[0])
    finally:
        model.reset_hooks()
    assert seen == [1]  # the caching hook stayed and recorded the next run, as in TransformerLens


def test_tokenization_matches_transformer_lens_on_the_same_checkpoint(model: HookedRewardModel) -> None:
    """TransformerLens 4's own `to_tokens`, run on this checkpoint's tokenizer and config, against ours (one text
    at a time: on a padded batch TransformerLens strips an appended EOS only when every row ends with it)."""
    for text in ("i think cats are good .", " cats", PROMPTS[0]):
        theirs = TransformerBridge.to_tokens(model, text, prepend_bos=False)
        assert torch.equal(model.to_tokens(text, prepend_bos=False), theirs)
        # TransformerLens strips the EOS this tokenizer appends; the reward is read there, so we keep it
        theirs, ours = TransformerBridge.to_tokens(model, text), model.to_tokens(text)
        assert torch.equal(ours[:, :-1], theirs) and int(ours[0, -1]) == model.tokenizer.eos_token_id


def test_to_tokens_truncates_the_prompt_side(model: HookedRewardModel) -> None:
    long_text = " ".join(["very"] * 80) + " good ."
    tokens = model.to_tokens(long_text)
    assert tokens.shape[1] == model.cfg.n_ctx
    assert model.to_str_tokens(tokens[0])[0] == "<bos>" and model.to_str_tokens(tokens[0])[-1] == "<eos>"
    with pytest.raises(InputError, match="context"):
        model.to_tokens(long_text, truncate=False)
    assert model.to_tokens("i think", move_to_device=False).device.type == "cpu"


def test_boot_transformers_never_returns_a_language_model(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="remote"):
        HookedRewardModel.boot_transformers(str(organisms.checkpoint_dir("sycophancy")), trust_remote_code=True)
    with pytest.raises(InputError, match="hf_config_overrides"):
        HookedRewardModel.boot_transformers(str(organisms.checkpoint_dir("sycophancy")), hf_config_overrides={"a": 1})
    config = transformers.LlamaConfig(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path / "lm")
    with pytest.raises(Exception, match="(?i)reward|sequence|classif|head") as err:
        HookedRewardModel.boot_transformers(str(tmp_path / "lm"))
    assert "HookedRewardError" in [c.__name__ for c in type(err.value).__mro__]


def test_reward_attrs_explains_position_sliced_stacks(model: HookedRewardModel) -> None:
    tokens, mask = model.tokenize(["i think cats are good .", "i think cats are very very good ."])  # right-padded
    _, cache = model.run_with_cache(tokens, attention_mask=mask)
    stack = cache.decompose_resid()
    with pytest.raises(InputError, match="right-padded"):
        cache.reward_attrs(cache.decompose_resid(pos_slice=-1))
    full = cache.reward_attrs(stack)
    kept = [int(p) for p in cache.reward_pos]  # [7, 9]: a slice that keeps both rows' reward positions
    assert kept == [7, 9]
    assert torch.allclose(cache.reward_attrs(cache.decompose_resid(pos_slice=kept), pos_slice=kept), full, atol=ATOL)
    with pytest.raises(InputError, match="does not keep the reward position"):
        cache.reward_attrs(cache.decompose_resid(pos_slice=0), pos_slice=0)
    with pytest.raises(InputError, match="reads stacks shaped"):
        cache.reward_attrs(stack[:, :, :3])
