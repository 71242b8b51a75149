"""Value heads users bring: TRL's `v_head.summary` and two-layer MLP heads next to a CausalLM backbone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from hooked_reward import CheckpointError, HookedRewardModel, InputError
from hooked_reward.heads.value_head import MLPValueHead, ValueHead
from hooked_reward.positions import pad_rows

VOCAB = 96


def causal_lm(arch: str = "llama", seed: int = 0) -> transformers.PreTrainedModel:
    torch.manual_seed(seed)
    if arch == "gpt2":
        config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64)
        model = transformers.GPT2LMHeadModel(config)
    else:
        config = transformers.LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            pad_token_id=0,
        )
        model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 1.5 / p.shape[-1] ** 0.5)
    return model.eval()


def save_with_head(out: Path, lm: torch.nn.Module, head_state: dict, reward_head: dict | None = None) -> Path:
    lm.save_pretrained(out)
    state = load_file(str(out / "model.safetensors"))
    state.update(head_state)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "model.safetensors"), metadata={"format": "pt"})
    if reward_head is not None:
        cfg = json.loads((out / "config.json").read_text())
        cfg["reward_head"] = reward_head
        (out / "config.json").write_text(json.dumps(cfg))
    return out


def reference_values(lm, head_fn, tokens, mask) -> torch.Tensor:
    """TRL-style: the last hidden state (after the final norm) of each unpadded row's last token, through the head."""
    rows = []
    with torch.no_grad():
        for i in range(tokens.shape[0]):
            ids = tokens[i][mask[i].bool()][None]
            hidden = lm(ids, output_hidden_states=True).hidden_states[-1][0, -1]
            rows.append(head_fn(hidden))
    return torch.stack(rows).reshape(-1)


def padded(side: str) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [[2, 10, 11, 12, 13, 14], [2, 20, 21], [2, 30, 31, 32, 33]]
    return pad_rows(rows, 0, left=side == "left")


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_trl_value_head_checkpoint(tmp_path, arch, side):
    lm = causal_lm(arch)
    torch.manual_seed(1)
    weight, bias = torch.randn(1, 32) * 0.5, torch.tensor([0.7])
    path = save_with_head(tmp_path / "trl", lm, {"v_head.summary.weight": weight, "v_head.summary.bias": bias})
    model = HookedRewardModel.from_pretrained(path)
    assert isinstance(model.head, ValueHead)
    tokens, mask = padded(side)
    values = model(tokens, attention_mask=mask)
    ref = reference_values(lm, lambda h: h @ weight[0] + bias[0], tokens, mask)
    torch.testing.assert_close(values.detach(), ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(model.W_R, weight[0])
    torch.testing.assert_close(model.b_R, bias[0])
    _, cache = model.run_with_cache(tokens, attention_mask=mask)
    torch.testing.assert_close(cache["hook_head_pre"], cache["hook_reward_resid"])
    stack = cache.decompose_resid()
    torch.testing.assert_close(cache.reward_attrs(stack).sum(0) + model.b_R_eff, values, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cache.reward_attrs(stack, output="value"), cache.reward_attrs(stack))


def test_trl_value_head_folds_ln(tmp_path):
    lm = causal_lm("llama")
    weight, bias = torch.randn(1, 32), torch.tensor([0.1])
    path = save_with_head(tmp_path / "trl", lm, {"v_head.summary.weight": weight, "v_head.summary.bias": bias})
    tokens, mask = padded("right")
    plain = HookedRewardModel.from_pretrained(path)(tokens, attention_mask=mask)
    folded = HookedRewardModel.from_pretrained(path, fold_ln=True)(tokens, attention_mask=mask)
    torch.testing.assert_close(folded, plain, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_mlp_value_head_checkpoint(tmp_path, activation, side):
    lm = causal_lm("llama")
    torch.manual_seed(2)
    w1, b1, w2, b2 = torch.randn(16, 32) / 4, torch.randn(16) * 0.3, torch.randn(1, 16) / 2, torch.tensor([0.2])
    head_state = {"v_head.0.weight": w1, "v_head.0.bias": b1, "v_head.2.weight": w2, "v_head.2.bias": b2}
    spec = {"type": "mlp", "prefix": "v_head", "activation": activation}
    path = save_with_head(tmp_path / "mlp", lm, head_state, spec)
    model = HookedRewardModel.from_pretrained(path)
    assert isinstance(model.head, MLPValueHead)
    act = {"relu": torch.relu, "gelu": torch.nn.functional.gelu, "tanh": torch.tanh}[activation]
    tokens, mask = padded(side)
    values = model(tokens, attention_mask=mask)
    ref = reference_values(lm, lambda h: act(h @ w1.T + b1) @ w2[0] + b2[0], tokens, mask)
    torch.testing.assert_close(values.detach(), ref, atol=1e-4, rtol=1e-4)
    _, cache = model.run_with_cache(tokens, attention_mask=mask)
    torch.testing.assert_close(cache["hook_head_hidden"], act(cache["hook_head_hidden_pre"]))
    torch.testing.assert_close(cache["hook_head_pre"] @ w1.T + b1, cache["hook_head_hidden_pre"], atol=1e-5, rtol=0)
    with pytest.raises(AttributeError, match="no W_R"):
        _ = model.W_R
    lin = model.head.linearise_at(cache["hook_reward_resid"])
    torch.testing.assert_close((cache["hook_reward_resid"] * lin.direction).sum(-1) + lin.offset, values)
    attrs = cache.reward_attrs(cache.decompose_resid(), output="reward")
    torch.testing.assert_close(attrs.sum(0) + lin.offset, values, atol=1e-4, rtol=1e-4)
    if activation == "relu":  # piecewise affine: the linearisation is exact in a neighbourhood
        x = cache["hook_reward_resid"]
        nudged = x + 1e-3 * torch.randn_like(x)
        pre = nudged @ w1.T + b1
        if bool(((pre > 0) == (cache["hook_head_hidden_pre"] > 0)).all()):
            exact = torch.relu(pre) @ w2[0] + b2[0]
            torch.testing.assert_close((nudged * lin.direction).sum(-1) + lin.offset, exact, atol=1e-5, rtol=0)
    with pytest.raises(InputError, match="weight processing"):
        model.process_weights()


def test_mlp_without_activation_is_refused(tmp_path):
    lm = causal_lm("llama")
    head_state = {
        "v_head.0.weight": torch.randn(8, 32),
        "v_head.0.bias": torch.zeros(8),
        "v_head.2.weight": torch.randn(1, 8),
        "v_head.2.bias": torch.zeros(1),
    }
    path = save_with_head(tmp_path / "mlp", lm, head_state)
    with pytest.raises(CheckpointError, match="activation"):
        HookedRewardModel.from_pretrained(path)


def test_plain_causal_lm_is_still_refused(tmp_path):
    lm = causal_lm("llama")
    lm.save_pretrained(tmp_path / "lm")
    with pytest.raises(Exception, match="not a reward model"):
        HookedRewardModel.from_pretrained(tmp_path / "lm")


def test_in_memory_value_heads():
    lm = causal_lm("llama")
    tokens, mask = padded("left")
    summary = torch.nn.Linear(32, 1)
    model = HookedRewardModel.from_value_head(lm, summary)
    ref = reference_values(lm, lambda h: summary(h)[0], tokens, mask)
    torch.testing.assert_close(model(tokens, attention_mask=mask).detach(), ref, atol=1e-4, rtol=1e-4)
    lm2 = causal_lm("llama", seed=3)
    mlp = torch.nn.Sequential(torch.nn.Linear(32, 8), torch.nn.SiLU(), torch.nn.Linear(8, 1))
    model2 = HookedRewardModel.from_value_head(lm2, mlp, activation="silu")
    ref2 = reference_values(lm2, lambda h: mlp(h)[0], tokens, mask)
    torch.testing.assert_close(model2(tokens, attention_mask=mask).detach(), ref2, atol=1e-4, rtol=1e-4)
    with pytest.raises(InputError, match="activation"):
        HookedRewardModel.from_value_head(
            causal_lm("llama"), torch.nn.Sequential(torch.nn.Linear(32, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
        )
