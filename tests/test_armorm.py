"""ArmoRM (`LlamaForRewardModelWithGating`): a tiny checkpoint with the real tensor names, checked against a
reference written here from the published description (plain torch: LlamaModel + regression + gate + transform)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import save_file

from hooked_reward import CheckpointError, HookedRewardModel, InputError
from hooked_reward.heads.armorm import ArmoRMHead, armorm_outputs, score_difference
from hooked_reward.positions import pad_rows

VOCAB = 96
K = 4
PATTERN = [3, 60, 61]  # stands in for Llama-3's <|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n
NAMES = ["helpfulness", "brevity", "safety", "politeness"]
TEMPERATURE = 2.0


def tiny_state(seed: int = 0, n_hidden: int = 2, hidden_dim: int = 24) -> tuple[dict, transformers.LlamaConfig]:
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
    torch.manual_seed(seed)
    backbone = transformers.LlamaModel(config)
    with torch.no_grad():
        for _name, p in backbone.named_parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 1.5 / p.shape[-1] ** 0.5)
            else:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
    state = {f"model.{k}": v.clone() for k, v in backbone.state_dict().items()}
    state["regression_layer.weight"] = torch.randn(K, 32) * 0.5
    dims = [32] + [hidden_dim] * n_hidden + [K]
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        state[f"gating.layers.{i}.weight"] = torch.randn(b, a) / a**0.5 * 2
        state[f"gating.layers.{i}.bias"] = torch.randn(b) * 0.3
    state["gating.logit_scale"] = torch.tensor([1.7])
    state["reward_transform_matrix"] = torch.eye(K) + 0.3 * torch.randn(K, K)
    return state, config


def write_armorm(out: Path, state: dict, config: transformers.LlamaConfig, **overrides) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    cfg = config.to_dict()
    cfg.update(
        architectures=["LlamaForRewardModelWithGating"],
        num_objectives=K,
        gating_temperature=TEMPERATURE,
        gating_hidden_dim=24,
        gating_n_hidden=2,
        objective_names=NAMES,
        gating_token_pattern=PATTERN,
    )
    for key, value in overrides.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    (out / "config.json").write_text(json.dumps(cfg))
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "model.safetensors"))
    return out


@pytest.fixture(scope="module")
def armorm_dir(tmp_path_factory) -> tuple[Path, dict, transformers.LlamaConfig]:
    state, config = tiny_state()
    return write_armorm(tmp_path_factory.mktemp("armorm") / "ckpt", state, config), state, config


def reference(state: dict, config, rows: list[list[int]]) -> dict[str, torch.Tensor]:
    """ArmoRM's forward as published, one unpadded row at a time."""
    backbone = transformers.LlamaModel(config).eval()
    backbone.load_state_dict({k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")})
    n_layers = len({k for k in state if k.startswith("gating.layers.") and k.endswith(".weight")})
    out: dict[str, list] = {"score": [], "rewards": [], "weights": [], "gate_pos": []}
    with torch.no_grad():
        for ids in rows:
            h = backbone(torch.tensor([ids])).last_hidden_state[0]
            rewards = h[-1] @ state["regression_layer.weight"].T
            gate_pos = max(j for j in range(len(ids) - len(PATTERN) + 1) if ids[j : j + len(PATTERN)] == PATTERN)
            x = h[gate_pos]
            for i in range(n_layers):
                x = x @ state[f"gating.layers.{i}.weight"].T + state[f"gating.layers.{i}.bias"]
                x = F.relu(x) if i < n_layers - 1 else x
            weights = F.softmax(x / TEMPERATURE, dim=-1) * state["gating.logit_scale"][0]
            score = (weights * (rewards @ state["reward_transform_matrix"])).sum()
            for key, value in zip(out, (score, rewards, weights, torch.tensor(gate_pos)), strict=True):
                out[key].append(value)
    return {k: torch.stack(v) for k, v in out.items()}


ROWS = [
    [2, 10, 11, 3, 60, 61, 20, 21, 22],
    [2, 12, 3, 60, 61, 30, 31],
    [2, 3, 60, 61, 14, 15, 3, 60, 61, 40],  # two occurrences: the gate reads the last
    [2, 16, 17, 18, 19, 3, 60, 61, 50, 51, 52, 53],
]


def pad(rows: list[list[int]], side: str) -> tuple[torch.Tensor, torch.Tensor]:
    return pad_rows(rows, 0, left=side == "left")


@pytest.mark.parametrize("side", ["left", "right"])
def test_matches_reference_on_padded_batches(armorm_dir, side):
    path, state, config = armorm_dir
    model = HookedRewardModel.from_pretrained(path)
    assert isinstance(model.head, ArmoRMHead)
    ref = reference(state, config, ROWS)
    tokens, mask = pad(ROWS, side)
    scores = model(tokens, attention_mask=mask)
    assert scores.shape == (len(ROWS),)
    torch.testing.assert_close(scores.detach(), ref["score"], atol=1e-4, rtol=1e-4)
    outs = armorm_outputs(model, tokens, attention_mask=mask)
    torch.testing.assert_close(outs.rewards, ref["rewards"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(outs.gate_weights, ref["weights"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(outs.score, ref["score"], atol=1e-4, rtol=1e-4)
    offset = (1 - mask).sum(-1) if side == "left" else torch.zeros(len(ROWS), dtype=torch.long)
    assert torch.equal(outs.gating_pos, ref["gate_pos"] + offset)
    assert outs.objective_names == NAMES == model.head.objective_names
    torch.testing.assert_close(outs.transformed, outs.rewards @ state["reward_transform_matrix"])


def test_hooks_weights_and_names(armorm_dir):
    path, state, _ = armorm_dir
    model = HookedRewardModel.from_pretrained(path)
    for name in (
        "gating.hook_prompt_resid",
        "gating.hook_logits",
        "gating.hook_weights",
        "objectives.hook_rewards",
        "objectives.hook_transformed",
        "hook_score",
        "hook_reward",
        "hook_reward_resid",
    ):
        assert name in model.hook_dict
    torch.testing.assert_close(model.W_R, state["regression_layer.weight"])
    assert model.W_R.shape == (K, 32) and torch.equal(model.b_R, torch.zeros(K))
    assert model.output_names == ["score"]
    tokens, mask = pad(ROWS, "right")
    score, cache = model.run_with_cache(tokens, attention_mask=mask)
    torch.testing.assert_close(cache["hook_score"], score)
    torch.testing.assert_close(cache["hook_reward"], score)
    # the gate's input is ln_final's output at the gating position
    pos = model.head.gating_positions(tokens, mask)
    torch.testing.assert_close(cache["gating.hook_prompt_resid"], cache["ln_final.hook_out"][torch.arange(4), pos])
    torch.testing.assert_close(cache["gating.hook_weights"].sum(-1), torch.full((4,), 1.7), atol=1e-5, rtol=0)


def test_zero_and_patched_gate_change_score_by_the_formula(armorm_dir):
    path, _, _ = armorm_dir
    model = HookedRewardModel.from_pretrained(path)
    tokens, mask = pad(ROWS, "left")
    base = armorm_outputs(model, tokens, attention_mask=mask)
    zeroed = model.run_with_hooks(
        tokens, attention_mask=mask, fwd_hooks=[("gating.hook_weights", lambda w, hook: torch.zeros_like(w))]
    )
    torch.testing.assert_close(zeroed, torch.zeros(4), atol=1e-6, rtol=0)
    one_hot = torch.zeros(4, K)
    one_hot[:, 1] = 1.0
    patched = model.run_with_hooks(
        tokens, attention_mask=mask, fwd_hooks=[("gating.hook_weights", lambda w, hook: one_hot)]
    )
    torch.testing.assert_close(patched, base.transformed[:, 1], atol=1e-5, rtol=1e-5)

    # ablating one objective's gate weight removes exactly g_k * (rT)_k
    def drop_2(w, hook):
        w = w.clone()
        w[:, 2] = 0
        return w

    dropped = model.run_with_hooks(tokens, attention_mask=mask, fwd_hooks=[("gating.hook_weights", drop_2)])
    expected = base.score - base.gate_weights[:, 2] * base.transformed[:, 2]
    torch.testing.assert_close(dropped, expected, atol=1e-5, rtol=1e-5)


def test_reward_attrs_per_objective_and_score(armorm_dir):
    path, _, _ = armorm_dir
    model = HookedRewardModel.from_pretrained(path)
    tokens, mask = pad(ROWS, "left")
    score, cache = model.run_with_cache(tokens, attention_mask=mask)
    stack = cache.decompose_resid()
    per_obj = cache.reward_attrs(stack)
    assert per_obj.shape == (stack.shape[0], 4, K)
    torch.testing.assert_close(per_obj.sum(0), cache["objectives.hook_rewards"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cache.reward_attrs(stack, output="brevity"), per_obj[..., 1])
    torch.testing.assert_close(cache.reward_attrs(stack, output=1), per_obj[..., 1])
    score_attrs = cache.reward_attrs(stack, output="score")
    assert score_attrs.shape == (stack.shape[0], 4)
    torch.testing.assert_close(score_attrs.sum(0), score, atol=1e-4, rtol=1e-4)
    with pytest.raises(InputError, match="gating.hook_weights"):
        _, small = model.run_with_cache(tokens, attention_mask=mask, names_filter=lambda n: "gating" not in n)
        small.reward_attrs(small.decompose_resid(), output="score")


def test_score_difference_splits_objectives_and_gate(armorm_dir):
    path, _, _ = armorm_dir
    model = HookedRewardModel.from_pretrained(path)
    a_rows = [[2, 10, 3, 60, 61, 20, 21], [2, 12, 3, 60, 61, 30]]
    same_prompt = [[2, 10, 3, 60, 61, 40, 41], [2, 12, 3, 60, 61, 31]]
    other_prompt = [[2, 14, 15, 3, 60, 61, 20], [2, 19, 3, 60, 61, 30]]
    ta, ma = pad(a_rows, "right")
    sa, ca = model.run_with_cache(ta, attention_mask=ma)
    for rows in (same_prompt, other_prompt):
        tb, mb = pad(rows, "right")
        sb, cb = model.run_with_cache(tb, attention_mask=mb)
        diff = score_difference(ca, cb)
        torch.testing.assert_close(diff.total, sa - sb, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(diff.objectives.sum(-1) + diff.gate.sum(-1), sa - sb, atol=1e-5, rtol=1e-5)
        if rows is same_prompt:
            torch.testing.assert_close(diff.gate, torch.zeros_like(diff.gate), atol=1e-5, rtol=0)
        else:
            assert diff.gate.abs().sum() > 1e-3


def test_missing_pattern_raises_or_falls_back_and_explicit_positions(armorm_dir):
    path, state, config = armorm_dir
    model = HookedRewardModel.from_pretrained(path)
    rows = [[2, 10, 11, 3, 60, 61, 20], [2, 10, 11, 12, 13]]
    tokens, mask = pad(rows, "right")
    with pytest.raises(InputError, match=r"Row\(s\) \[1\]"):
        model(tokens, attention_mask=mask)
    # the pattern inside padding does not count
    tokens2 = tokens.clone()
    tokens2[1, 5:7] = torch.tensor([3, 60])
    with pytest.raises(InputError):
        model(tokens2, attention_mask=mask)
    model.head.on_missing = "reward_pos"
    out = armorm_outputs(model, tokens, attention_mask=mask)
    assert out.gating_pos.tolist() == [3, 4]
    model.head.on_missing = "raise"
    with model.head.gating_at([3, 2]):
        explicit = armorm_outputs(model, tokens, attention_mask=mask)
        assert explicit.gating_pos.tolist() == [3, 2]
    torch.testing.assert_close(explicit.score[0], out.score[0])
    with pytest.raises(InputError, match="padding"), model.head.gating_at([3, 6]):
        model(tokens, attention_mask=mask)
    # another template: a different pattern and offset
    model.head.gating_pattern = (10, 11)
    model.head.gating_offset = -1
    assert model.head.gating_positions(tokens, mask).tolist() == [2, 2]


def test_weight_processing_refused(armorm_dir):
    path, _, _ = armorm_dir
    with pytest.raises(InputError, match="weight processing"):
        HookedRewardModel.from_pretrained(path, fold_ln=True)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(num_objectives=None), "num_objectives"),
        (dict(objective_names=["a", "b"]), "objective_names"),
        (dict(gating_n_hidden=3), "gating_n_hidden"),
        (dict(gating_hidden_dim=8), "gating_hidden_dim"),
    ],
)
def test_bad_config_errors(tmp_path, change, match):
    state, config = tiny_state()
    path = write_armorm(tmp_path / "bad", state, config, **change)
    with pytest.raises(CheckpointError, match=match):
        HookedRewardModel.from_pretrained(path)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda s: s.pop("reward_transform_matrix"), "reward_transform_matrix"),
        (lambda s: s.__setitem__("reward_transform_matrix", torch.eye(K + 1)), "reward_transform_matrix"),
        (lambda s: s.pop("regression_layer.weight"), "regression_layer.weight"),
        (lambda s: s.pop("gating.logit_scale"), "gating.logit_scale"),
        (lambda s: s.pop("gating.layers.1.bias"), "gating.layers.1.bias"),
        (lambda s: s.__setitem__("regression_layer.weight", torch.zeros(K + 1, 32)), "regression_layer.weight"),
    ],
)
def test_bad_tensor_errors(tmp_path, edit, match):
    state, config = tiny_state()
    edit(state)
    path = write_armorm(tmp_path / "bad", state, config)
    with pytest.raises(CheckpointError, match=match):
        HookedRewardModel.from_pretrained(path)


def test_defaults_follow_armorm(tmp_path):
    """Without names or pattern in config: objective_i names, Llama-3's pattern; temperature defaults to 10."""
    state, config = tiny_state()
    path = write_armorm(
        tmp_path / "plain",
        state,
        config,
        objective_names=None,
        gating_token_pattern=None,
        gating_temperature=None,
        gating_hidden_dim=None,
        gating_n_hidden=None,
    )
    model = HookedRewardModel.from_pretrained(path)
    assert model.head.objective_names == [f"objective_{i}" for i in range(K)]
    assert model.head.gating_pattern == (128009, 128006, 78191, 128007, 271)
    assert model.head.gating_network.temperature == 10.0
