"""Checkpoint layouts as the training tools save them (issue 35): OpenRLHF reward models (with `normalize_reward`),
PEFT adapters, and the registry that recognises every layout.

Each checkpoint is built on disk from a tiny model the way its tool saves it, and the rewards are compared with the
tool's own computation: OpenRLHF's formula (the base model's last hidden state at the last attended token through
the value head, `(r - mean) / std` when normalising) written out on the HF modules here, and PEFT's own forward.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import transformers
from conftest import ARCH_CONFIGS, VOCAB, build_hf_model, padded_tokens, save_checkpoint, word_tokenizer
from safetensors.torch import load_file, save_file

from hooked_reward import CheckpointError, HookedRewardModel, InputError
from hooked_reward.errors import UnsupportedArchitectureError
from hooked_reward.registry import find_layout, read_contents

MEAN, STD = 0.7, 2.5


# ---------------------------------------------------------------------------------------------- OpenRLHF, as saved
def base_config(arch: str, **extra) -> transformers.PretrainedConfig:
    cfg_name, _, kwargs = ARCH_CONFIGS[arch]
    return getattr(transformers, cfg_name)(vocab_size=VOCAB, pad_token_id=0, **kwargs, **extra)


def openrlhf_reward_class(config: transformers.PretrainedConfig, value_head_prefix: str) -> type:
    """A class built as OpenRLHF 0.11's `_get_reward_model` builds it: the `AutoModel` class of the config (at its
    `base_model_prefix`) under that class's `PreTrainedModel` base, a bias-free Linear hidden -> 1 at
    `value_head_prefix`, `normalize_reward` from the config and non-persistent mean/std buffers."""
    base_class = transformers.AutoModel._model_mapping[type(config)]
    base_pretrained_class = base_class.__base__

    class RewardModel(base_pretrained_class):
        def __init__(self, config: transformers.PretrainedConfig) -> None:
            super().__init__(config)
            setattr(self, self.base_model_prefix, base_class(config))
            self.value_head_prefix = value_head_prefix
            setattr(self, value_head_prefix, torch.nn.Linear(config.hidden_size, 1, bias=False))
            self.normalize_reward = config.normalize_reward
            self.register_buffer("mean", torch.zeros(1), persistent=False)
            self.register_buffer("std", torch.ones(1), persistent=False)
            if hasattr(config, "mean"):
                self.mean[0] = config.mean
                self.std[0] = config.std
            self.post_init()

    return RewardModel


def openrlhf_model(arch: str, prefix: str, normalize: bool, seed: int = 0) -> torch.nn.Module:
    """An OpenRLHF reward model after training: weights drawn so rewards are O(1), and the evaluation set's reward
    mean and std in its config (what `RewardModelTrainer.evaluate` writes)."""
    config = base_config(arch)
    config.normalize_reward = normalize
    torch.manual_seed(seed)
    model = openrlhf_reward_class(config, prefix)(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 1.5 / p.shape[-1] ** 0.5)
            elif "norm" in name or "ln" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p)) if "bias" not in name else p.normal_(0, 0.1)
            else:
                p.normal_(0.0, 0.1)
    model.config.mean, model.config.std = MEAN, STD
    return model


def save_openrlhf(model: torch.nn.Module, out: Path, prefix: str) -> Path:
    """What OpenRLHF's train_rm then `strategy.save_model` write: `value_head_prefix` into the config,
    `save_pretrained` of the model, the config again with `to_json_file`, and the tokenizer."""
    model.config.value_head_prefix = prefix
    model.save_pretrained(out)
    model.config.to_json_file(str(out / "config.json"))
    word_tokenizer().save_pretrained(out)
    return out


def openrlhf_rewards(
    model: torch.nn.Module, tokens: torch.Tensor, mask: torch.Tensor, normalize: bool, mean: float, std: float
) -> torch.Tensor:
    """OpenRLHF's reward, written out: positions counted from each row's first attended token, the base model's
    last hidden state, the value head, read at the last attended token; `(r - mean) / std` when normalising."""
    position_ids = mask.long().cumsum(-1) - 1
    position_ids.masked_fill_(mask == 0, 1)
    backbone = getattr(model, model.base_model_prefix)
    with torch.no_grad():
        hidden = backbone(tokens, attention_mask=mask, position_ids=position_ids)["last_hidden_state"]
        values = getattr(model, model.value_head_prefix)(hidden).squeeze(-1)
    eos = mask.size(1) - 1 - mask.long().fliplr().argmax(dim=1, keepdim=True)
    reward = values.gather(dim=1, index=eos).squeeze(1)
    return (reward - mean) / std if normalize else reward


CASES = [
    ("llama", "score", True),
    ("llama", "score", False),
    ("llama", "value_head", True),
    ("llama", "value_head", False),
    ("gpt2", "score", True),
    ("qwen2", "value_head", True),
]


@pytest.mark.parametrize(("arch", "prefix", "normalize"), CASES)
def test_openrlhf_rewards_equal_its_formula(tmp_path, arch, prefix, normalize):
    model = openrlhf_model(arch, prefix, normalize)
    path = save_openrlhf(model, tmp_path / "rm", prefix)
    assert json.loads((path / "config.json").read_text())["architectures"] == ["RewardModel"]
    hooked = HookedRewardModel.from_pretrained(path)
    assert find_layout(read_contents(path)).name == "openrlhf"
    for left in (True, False):
        tokens, mask = padded_tokens(left=left)
        ref = openrlhf_rewards(model, tokens, mask, normalize, MEAN, STD)
        assert ref.abs().max() > 0.3  # O(1) rewards: the comparison means something
        got = hooked(tokens, attention_mask=mask)
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    if normalize:  # the normalisation changes the numbers: the comparison above could fail without it
        raw = openrlhf_rewards(model, tokens, mask, False, MEAN, STD)
        assert (raw - got).abs().max() > 0.1


def test_normalisation_is_a_hooked_part_of_the_head(tmp_path):
    model = openrlhf_model("llama", "score", True)
    hooked = HookedRewardModel.from_pretrained(save_openrlhf(model, tmp_path / "rm", "score"))
    tokens, mask = padded_tokens(left=True)
    raw = openrlhf_rewards(model, tokens, mask, False, MEAN, STD)
    rewards, cache = hooked.run_with_cache(tokens, attention_mask=mask)
    torch.testing.assert_close(cache["hook_reward_raw"], raw, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cache["hook_reward"], (raw - MEAN) / STD, atol=1e-5, rtol=1e-5)
    # Patching the raw score goes through the normalisation: a raw score of 0 is a reward of -mean/std.
    patched = hooked.run_with_hooks(
        tokens, attention_mask=mask, fwd_hooks=[("hook_reward_raw", lambda t, hook: torch.zeros_like(t))]
    )
    torch.testing.assert_close(patched, torch.full_like(patched, -MEAN / STD))
    # W_R, b_R (and TransformerLens's W_U, b_U) are the normalised map: reward = h . W_R + b_R.
    w = model.score.weight.detach()[0]
    torch.testing.assert_close(hooked.W_R, w / STD)
    torch.testing.assert_close(hooked.b_R, torch.tensor(-MEAN / STD))
    torch.testing.assert_close(hooked.W_U[:, 0], hooked.W_R)
    torch.testing.assert_close(hooked.b_U[0], hooked.b_R)
    h = cache["hook_reward_resid"]
    torch.testing.assert_close(h @ hooked.W_R + hooked.b_R, rewards, atol=1e-5, rtol=1e-5)
    # Direct reward attribution of the full decomposition sums to the normalised reward.
    stack, _ = cache.decompose_resid(return_labels=True)
    attrs = cache.reward_attrs(stack)
    torch.testing.assert_close(attrs.sum(0) + hooked.b_R_eff, rewards, atol=1e-4, rtol=1e-4)


def test_normalize_reward_override(tmp_path):
    model = openrlhf_model("llama", "score", False)  # train_rm's default: off in the config, statistics saved
    path = save_openrlhf(model, tmp_path / "rm", "score")
    tokens, mask = padded_tokens()
    raw = openrlhf_rewards(model, tokens, mask, False, MEAN, STD)
    on = HookedRewardModel.from_pretrained(path, normalize_reward=True)(tokens, attention_mask=mask)
    torch.testing.assert_close(on, (raw - MEAN) / STD, atol=1e-5, rtol=1e-5)
    model.config.normalize_reward = True
    path = save_openrlhf(model, tmp_path / "rm-on", "score")
    off = HookedRewardModel.from_pretrained(path, normalize_reward=False)
    torch.testing.assert_close(off(tokens, attention_mask=mask), raw, atol=1e-5, rtol=1e-5)
    assert "hook_reward_raw" not in off.hook_dict
    booted = HookedRewardModel.boot_transformers(str(path), normalize_reward=False)  # TransformerLens's entry point
    torch.testing.assert_close(booted(tokens, attention_mask=mask), raw, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("std", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_std_is_a_clear_error(tmp_path, std):
    model = openrlhf_model("llama", "score", True)
    path = save_openrlhf(model, tmp_path / "rm", "score")
    config = json.loads((path / "config.json").read_text())
    config["std"] = std
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"std=.*finite positive"):
        HookedRewardModel.from_pretrained(path)
    # With the normalisation off the statistics are not used, so the raw score loads.
    HookedRewardModel.from_pretrained(path, normalize_reward=False)


def test_missing_statistics(tmp_path):
    model = openrlhf_model("llama", "score", True)
    path = save_openrlhf(model, tmp_path / "rm", "score")
    config = json.loads((path / "config.json").read_text())
    del config["std"]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="only mean"):
        HookedRewardModel.from_pretrained(path)
    del config["mean"]
    (path / "config.json").write_text(json.dumps(config))
    tokens, mask = padded_tokens()
    with pytest.warns(UserWarning, match="mean 0 and std 1"):
        hooked = HookedRewardModel.from_pretrained(path)
    ref = openrlhf_rewards(model, tokens, mask, False, MEAN, STD)  # OpenRLHF's buffers stay at 0 and 1
    torch.testing.assert_close(hooked(tokens, attention_mask=mask), ref, atol=1e-5, rtol=1e-5)


def test_openrlhf_head_faults(tmp_path):
    model = openrlhf_model("llama", "score", True)
    path = save_openrlhf(model, tmp_path / "rm", "score")
    config = json.loads((path / "config.json").read_text())
    config["value_head_prefix"] = "value_head"
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"value_head_prefix='value_head'.*score\.weight"):
        HookedRewardModel.from_pretrained(path)
    del config["value_head_prefix"]  # older OpenRLHF: found from the tensors
    (path / "config.json").write_text(json.dumps(config))
    assert HookedRewardModel.from_pretrained(path).head.normalization.std == STD
    config["architectures"] = ["CriticModel"]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="critic"):
        HookedRewardModel.from_pretrained(path)


def test_openrlhf_sharded_and_renamed(tmp_path):
    """Sharded weights; and an architecture renamed to a `*ForSequenceClassification` (what users tried) still loads
    as OpenRLHF, normalisation included, since its config says so."""
    model = openrlhf_model("llama", "value_head", True)
    model.config.value_head_prefix = "value_head"
    model.save_pretrained(tmp_path / "rm", max_shard_size="20KB")
    assert (tmp_path / "rm" / "model.safetensors.index.json").exists()
    config = json.loads((tmp_path / "rm" / "config.json").read_text())
    config["architectures"] = ["LlamaForSequenceClassification"]
    (tmp_path / "rm" / "config.json").write_text(json.dumps(config))
    tokens, mask = padded_tokens(left=True)
    ref = openrlhf_rewards(model, tokens, mask, True, MEAN, STD)
    hooked = HookedRewardModel.from_pretrained(tmp_path / "rm")
    torch.testing.assert_close(hooked(tokens, attention_mask=mask), ref, atol=1e-5, rtol=1e-5)


def test_openrlhf_tokenizer_beyond_the_embedding_is_refused(tmp_path):
    path = save_openrlhf(openrlhf_model("llama", "score", True), tmp_path / "rm", "score")
    word_tokenizer(extra_words=tuple(f"w{i}" for i in range(VOCAB))).save_pretrained(path)  # ids past the rows
    with pytest.raises(CheckpointError, match="embedding"):
        HookedRewardModel.from_pretrained(path)


def test_openrlhf_in_memory(tmp_path):
    """OpenRLHF's own model object, passed to from_hf_model, is read as OpenRLHF runs it."""
    model = openrlhf_model("llama", "value_head", True)
    tokens, mask = padded_tokens(left=True)
    ref = openrlhf_rewards(model, tokens, mask, True, MEAN, STD)
    hooked = HookedRewardModel.from_hf_model(model)
    torch.testing.assert_close(hooked(tokens, attention_mask=mask), ref, atol=1e-5, rtol=1e-5)


def test_normalize_reward_refused_where_it_does_not_apply(make_checkpoint):
    with pytest.raises(InputError, match="normalize_reward= does not apply.*hf_sequence_classification"):
        HookedRewardModel.from_pretrained(make_checkpoint("llama"), normalize_reward=True)


# ---------------------------------------------------------------------------------------------- PEFT adapters
peft = pytest.importorskip("peft")


def alone_rewards(model: torch.nn.Module, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each row's `logits` from `model`'s own forward, the row run alone (no padding)."""
    with torch.no_grad():
        return torch.stack([model(tokens[i][mask[i].bool()][None]).logits[0, 0] for i in range(tokens.shape[0])])


def trained_lora(peft_model: torch.nn.Module) -> torch.nn.Module:
    """Give the LoRA factors (B starts at zero) and the saved head values, as training would."""
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.normal_(0.0, 0.3)
            elif "modules_to_save" in name:
                p.normal_(0.0, 0.5)
    return peft_model.eval()


def test_seq_cls_lora_over_a_causal_lm(tmp_path):
    """TRL's RewardTrainer with a peft_config: a LoRA adapter over a causal LM, the new score head saved whole."""
    torch.manual_seed(0)
    base = transformers.LlamaForCausalLM(base_config("llama")).eval()
    base.save_pretrained(tmp_path / "base")
    word_tokenizer().save_pretrained(tmp_path / "base")
    classifier = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "base", num_labels=1)
    config = peft.LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    peft_model = trained_lora(peft.get_peft_model(classifier, config))
    peft_model.save_pretrained(tmp_path / "adapter")
    assert find_layout(read_contents(tmp_path / "adapter")).name == "peft_adapter"
    hooked = HookedRewardModel.from_pretrained(tmp_path / "adapter")
    assert hooked.tokenizer is not None  # the base's, the adapter directory has none
    for left in (True, False):
        tokens, mask = padded_tokens(left=left)
        ref = alone_rewards(peft_model, tokens, mask)
        assert ref.abs().max() > 0.1
        torch.testing.assert_close(hooked(tokens, attention_mask=mask), ref, atol=1e-5, rtol=1e-5)
    # base_model= when the recorded base path does not exist here
    (tmp_path / "base").rename(tmp_path / "moved")
    with pytest.raises(CheckpointError, match="base_model="):
        HookedRewardModel.from_pretrained(tmp_path / "adapter")
    moved = HookedRewardModel.from_pretrained(tmp_path / "adapter", base_model=tmp_path / "moved")
    torch.testing.assert_close(moved(tokens, attention_mask=mask), ref, atol=1e-5, rtol=1e-5)
    # dtype="auto" for an adapter (no config.json of its own) is the base's dtype
    config = json.loads((tmp_path / "moved" / "config.json").read_text())
    config["dtype"] = "bfloat16"
    (tmp_path / "moved" / "config.json").write_text(json.dumps(config))
    auto = HookedRewardModel.from_pretrained(tmp_path / "adapter", base_model=tmp_path / "moved", dtype="auto")
    assert auto.W_R.dtype == torch.bfloat16
    torch.testing.assert_close(auto(tokens, attention_mask=mask).float(), ref, atol=0.1, rtol=0.05)


def test_lora_over_a_reward_model(tmp_path):
    """A LoRA adapter over a reward model (`*ForSequenceClassification`), the score head left as it is."""
    save_checkpoint(build_hf_model("qwen2"), tmp_path / "base")
    model = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "base").eval()
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "o_proj", "up_proj"])
    peft_model = trained_lora(peft.get_peft_model(model, config))
    peft_model.save_pretrained(tmp_path / "adapter")
    word_tokenizer().save_pretrained(tmp_path / "adapter")
    hooked = HookedRewardModel.from_pretrained(tmp_path / "adapter")
    tokens, mask = padded_tokens(left=True)
    ref = alone_rewards(peft_model, tokens, mask)
    torch.testing.assert_close(hooked(tokens, attention_mask=mask), ref, atol=1e-5, rtol=1e-5)
    base = HookedRewardModel.from_pretrained(tmp_path / "base")
    assert (base(tokens, attention_mask=mask) - ref).abs().max() > 1e-2  # the adapter changes the rewards


def test_adapter_without_a_head_over_a_causal_lm_is_refused(tmp_path):
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(base_config("llama")).save_pretrained(tmp_path / "base")
    base = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "base")
    peft_model = peft.get_peft_model(base, peft.LoraConfig(task_type="CAUSAL_LM", r=4, target_modules=["q_proj"]))
    peft_model.save_pretrained(tmp_path / "adapter")
    with pytest.raises(UnsupportedArchitectureError, match="not a reward model"):
        HookedRewardModel.from_pretrained(tmp_path / "adapter")


def test_adapter_without_weights_is_a_clear_error(tmp_path):
    save_checkpoint(build_hf_model("llama"), tmp_path / "base")
    model = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "base")
    peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["q_proj"])).save_pretrained(tmp_path / "adapter")
    (tmp_path / "adapter" / "adapter_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no adapter weights"):
        HookedRewardModel.from_pretrained(tmp_path / "adapter")


def test_in_memory_peft_model_names_merge_and_unload():
    model = build_hf_model("llama")
    peft_model = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["q_proj"]))
    with pytest.raises(UnsupportedArchitectureError, match=r"merge_and_unload\(\)"):
        HookedRewardModel.from_hf_model(peft_model)
    lm = transformers.LlamaForCausalLM(base_config("llama"))
    peft_lm = peft.get_peft_model(lm, peft.LoraConfig(r=4, target_modules=["q_proj"]))
    with pytest.raises(UnsupportedArchitectureError, match=r"merge_and_unload\(\)"):
        HookedRewardModel.from_value_head(peft_lm, torch.nn.Linear(32, 1))


def test_adapter_without_peft_says_what_to_install(tmp_path, monkeypatch):
    save_checkpoint(build_hf_model("llama"), tmp_path / "base")
    model = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "base")
    peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["q_proj"])).save_pretrained(tmp_path / "adapter")
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(ImportError, match=r"pip install \"hooked_reward\[peft\]\""):
        HookedRewardModel.from_pretrained(tmp_path / "adapter")


# ---------------------------------------------------------------------------------------------- the registry
def test_every_layout_is_recognised(tmp_path, make_checkpoint):
    from test_armorm import tiny_state, write_armorm

    found = {"hf_sequence_classification": make_checkpoint("llama")}
    found["armorm"] = write_armorm(tmp_path / "armorm", *tiny_state())
    lm = transformers.LlamaForCausalLM(base_config("llama"))
    lm.save_pretrained(tmp_path / "trl")
    state = load_file(str(tmp_path / "trl" / "model.safetensors"))
    state.update({"v_head.summary.weight": torch.randn(1, 32), "v_head.summary.bias": torch.zeros(1)})
    save_file(state, str(tmp_path / "trl" / "model.safetensors"), metadata={"format": "pt"})
    found["trl_value_head"] = tmp_path / "trl"
    found["openrlhf"] = save_openrlhf(openrlhf_model("llama", "score", True), tmp_path / "openrlhf", "score")
    for name, path in found.items():
        assert find_layout(read_contents(path)).name == name, name


def test_unrecognised_directory_lists_what_it_found(tmp_path):
    lm = transformers.LlamaForCausalLM(base_config("llama"))
    lm.save_pretrained(tmp_path / "lm")
    state = load_file(str(tmp_path / "lm" / "model.safetensors"))
    state["reward_proj.weight"] = torch.randn(1, 32)
    save_file(state, str(tmp_path / "lm" / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(UnsupportedArchitectureError) as err:
        HookedRewardModel.from_pretrained(tmp_path / "lm")
    message = str(err.value)
    for expected in ("LlamaForCausalLM", "reward_proj.weight", "lm_head.weight", "openrlhf", "peft_adapter", "armorm"):
        assert expected in message, expected


def test_normalised_head_with_weight_processing(tmp_path):
    """TransformerLens's weight processing folds ln_final into the raw Linear; the normalisation stays on top."""
    model = openrlhf_model("llama", "value_head", True)
    path = save_openrlhf(model, tmp_path / "rm", "value_head")
    tokens, mask = padded_tokens(left=True)
    ref = openrlhf_rewards(model, tokens, mask, True, MEAN, STD)
    folded = HookedRewardModel.from_pretrained(path, fold_ln=True, center_writing_weights=True)
    torch.testing.assert_close(folded(tokens, attention_mask=mask), ref, atol=1e-4, rtol=1e-4)
    gain = model.model.norm.weight.detach()
    torch.testing.assert_close(folded.W_R, gain * model.value_head.weight.detach()[0] / STD, atol=1e-5, rtol=1e-5)


def test_lora_over_an_openrlhf_reward_model(tmp_path):
    """An adapter over an OpenRLHF reward model: the base is loaded in its own layout, normalisation included."""
    save_openrlhf(openrlhf_model("llama", "score", True), tmp_path / "base", "score")
    config = transformers.AutoConfig.from_pretrained(tmp_path / "base")
    model = openrlhf_reward_class(config, "score").from_pretrained(tmp_path / "base").eval()  # as OpenRLHF loads it
    peft_model = trained_lora(peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["q_proj", "o_proj"])))
    peft_model.save_pretrained(tmp_path / "adapter")
    tokens, mask = padded_tokens(left=True)
    merged = peft_model.merge_and_unload()  # OpenRLHF's formula on the merged weights = PEFT's model
    ref = openrlhf_rewards(merged, tokens, mask, True, MEAN, STD)
    hooked = HookedRewardModel.from_pretrained(tmp_path / "adapter")
    torch.testing.assert_close(hooked(tokens, attention_mask=mask), ref, atol=1e-5, rtol=1e-5)
    assert "hook_reward_raw" in hooked.hook_dict
    raw = HookedRewardModel.from_pretrained(tmp_path / "adapter", normalize_reward=False)
    torch.testing.assert_close(raw(tokens, attention_mask=mask), ref * STD + MEAN, atol=1e-5, rtol=1e-5)


def test_adapter_and_base_by_hub_id(tmp_path):
    """An adapter on the hub whose base_model_name_or_path is a hub id: both come from the hub cache."""
    from hub_cache import add_to_hub_cache

    save_checkpoint(build_hf_model("llama"), tmp_path / "base")
    model = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "base").eval()
    model.name_or_path = "org/base-rm"  # as from_pretrained("org/base-rm") sets it; PEFT records it
    peft_model = trained_lora(peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["v_proj"])))
    peft_model.save_pretrained(tmp_path / "adapter", save_embedding_layers=False)  # (else PEFT looks the base up)
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == (
        "org/base-rm"
    )
    cache = tmp_path / "hub"
    add_to_hub_cache(cache, "org/base-rm", tmp_path / "base")
    add_to_hub_cache(cache, "org/rm-lora", tmp_path / "adapter")
    tokens, mask = padded_tokens()
    ref = alone_rewards(peft_model, tokens, mask)
    hooked = HookedRewardModel.from_pretrained("org/rm-lora", cache_dir=cache, local_files_only=True)
    torch.testing.assert_close(hooked(tokens, attention_mask=mask), ref, atol=1e-5, rtol=1e-5)
