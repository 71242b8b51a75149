"""Issue 33 item 2: hook points nobody hooks cost nothing (`hooked_reward.unhooked`), with TransformerLens's exact
results: the shortcuts are compared with the same model built without them, and their op counts with HF's."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from conftest import ARCHS, build_hf_model, padded_tokens
from torch.utils._python_dispatch import TorchDispatchMode
from transformer_lens.model_bridge.generalized_components import base as tl_base
from transformer_lens.model_bridge.generalized_components.block import BlockBridge
from transformers import AutoModelForSequenceClassification

import hooked_reward.model as model_module
from hooked_reward import HookedRewardModel
from hooked_reward.unhooked import CachedSignatureBlock, DirectCall, UnhookedNorm


def plain_model(path, monkeypatch) -> HookedRewardModel:
    """The same checkpoint built with TransformerLens's own component classes (no shortcuts)."""
    with monkeypatch.context() as m:
        m.setattr(model_module, "install_unhooked_shortcuts", lambda model: 0)
        model = HookedRewardModel.from_pretrained(path)
    assert not any(isinstance(module, DirectCall) for module in model.modules())
    return model


class OpCounter(TorchDispatchMode):
    """Counts the aten ops a forward runs."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("arch", ARCHS)
def test_rewards_and_cache_bit_identical_to_transformer_lens_path(make_checkpoint, monkeypatch, arch: str) -> None:
    path = make_checkpoint(arch)
    fast, plain = HookedRewardModel.from_pretrained(path), plain_model(path, monkeypatch)
    assert any(isinstance(module, DirectCall) for module in fast.modules())
    tokens, mask = padded_tokens((9, 6, 4), left=True, seed=3)
    with torch.no_grad():
        assert torch.equal(fast(tokens, attention_mask=mask), plain(tokens, attention_mask=mask))
    rewards_f, cache_f = fast.run_with_cache(tokens, attention_mask=mask)
    rewards_p, cache_p = plain.run_with_cache(tokens, attention_mask=mask)
    assert torch.equal(rewards_f, rewards_p)
    assert set(cache_f.keys()) == set(cache_p.keys())
    assert any(isinstance(m, UnhookedNorm) for m in fast.modules())
    for name in cache_f.keys():
        assert torch.equal(cache_f[name], cache_p[name]), name


@pytest.mark.parametrize("hook_name", ["blocks.0.ln1.hook_scale", "blocks.1.ln2.hook_normalized"])
def test_norm_hook_edit_takes_transformer_lens_path(make_checkpoint, monkeypatch, hook_name: str) -> None:
    """A hook that edits a norm's scale or normalized value changes the reward exactly as without shortcuts."""
    path = make_checkpoint("llama")
    fast, plain = HookedRewardModel.from_pretrained(path), plain_model(path, monkeypatch)
    tokens, mask = padded_tokens((7, 5), seed=4)

    def double(value: torch.Tensor, hook) -> torch.Tensor:
        return value * 2.0

    with torch.no_grad(), pytest.warns(UserWarning):
        edited_f = fast.run_with_hooks(tokens, attention_mask=mask, fwd_hooks=[(hook_name, double)])
    with torch.no_grad(), pytest.warns(UserWarning):
        edited_p = plain.run_with_hooks(tokens, attention_mask=mask, fwd_hooks=[(hook_name, double)])
        clean = plain(tokens, attention_mask=mask)
    assert torch.equal(edited_f, edited_p)
    assert (edited_f - clean).abs().max() > 1e-3


def test_gradients_equal(make_checkpoint, monkeypatch) -> None:
    path = make_checkpoint("qwen3")
    fast, plain = HookedRewardModel.from_pretrained(path), plain_model(path, monkeypatch)
    tokens, mask = padded_tokens((8, 6), seed=5)
    fast(tokens, attention_mask=mask).sum().backward()
    plain(tokens, attention_mask=mask).sum().backward()
    for (name, a), (_, b) in zip(fast.named_parameters(), plain.named_parameters(), strict=True):
        assert (a.grad is None) == (b.grad is None), name
        if a.grad is not None:
            assert torch.equal(a.grad, b.grad), name


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma2"])
def test_norm_ops_as_many_as_hf(make_checkpoint, arch: str) -> None:
    """The unhooked forward runs each norm's statistics once, as HF does (TransformerLens computes them twice)."""
    path = make_checkpoint(arch)
    model = HookedRewardModel.from_pretrained(path)
    hf = AutoModelForSequenceClassification.from_pretrained(path).eval()
    tokens = torch.randint(3, 50, (2, 6))
    mask = torch.ones_like(tokens)
    counted = {}
    for name, run in (("hf", lambda: hf(input_ids=tokens, attention_mask=mask)), ("ours", lambda: model(tokens))):
        with torch.no_grad(), OpCounter() as counter:
            run()
        counted[name] = counter.counts
    assert counted["ours"]["rsqrt"] == counted["hf"]["rsqrt"] > 0
    assert counted["ours"]["pow"] == counted["hf"]["pow"]
    assert counted["ours"]["sqrt"] == counted["hf"]["sqrt"]


def test_offloaded_module_goes_through_accelerate_alignment(make_checkpoint, monkeypatch) -> None:
    """A wrapped module with an accelerate hook is called inside `align_module_device`, as TransformerLens does;
    the others skip it."""
    model = HookedRewardModel.from_pretrained(make_checkpoint("llama"))
    aligned: list[object] = []
    real = tl_base.align_module_device

    def counting(module):
        aligned.append(module)
        return real(module)

    monkeypatch.setattr(tl_base, "align_module_device", counting)
    tokens = torch.randint(3, 50, (1, 5))
    with torch.no_grad():
        model(tokens)
    assert aligned == []
    target = model.blocks[1].mlp.original_component
    target._hf_hook = object()  # has_offloaded_params is False for it: alignment is a no-op, but it is entered
    with torch.no_grad():
        model(tokens)
    assert aligned == [target]


class Layer(torch.nn.Module):
    def forward(self, hidden_states, attention_mask=None, position_ids=None):
        return hidden_states


class VariadicLayer(torch.nn.Module):
    def forward(self, hidden_states, /, mask=None, **kwargs):
        return hidden_states


def first_layer(arch: str) -> torch.nn.Module:
    base = build_hf_model(arch).base_model
    return (base.layers if hasattr(base, "layers") else base.h)[0]


class Holder:
    def __init__(self, original: torch.nn.Module) -> None:
        self.original_component = original


@pytest.mark.parametrize("layer", [Layer(), VariadicLayer(), *[first_layer(a) for a in ARCHS]])
def test_block_kwarg_filter_equals_transformer_lens(layer: torch.nn.Module) -> None:
    kwargs = {"attention_mask": None, "position_ids": 3, "hidden_states": 1, "encoder_attention_mask": 2, "mask": 4}
    holder = Holder(layer)
    for n_positional in (0, 1, 2):
        ours = CachedSignatureBlock._filter_kwargs_for_forward(holder, dict(kwargs), n_positional)
        assert ours == BlockBridge._filter_kwargs_for_forward(holder, dict(kwargs), n_positional)
