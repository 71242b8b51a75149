"""Path patching: the batched algorithm against a hand-written single-sender run, and its exact limits."""

from __future__ import annotations

import pytest
import torch
from conftest import build_hf_model, load_tiny

from hooked_reward import HookedRewardModel, InputError
from hooked_reward.analysis.patching import Patch, as_row, patch_hooks
from hooked_reward.analysis.path_patching import all_senders, path_patch

CLEAN, CORRUPT = "the cat is very good", "the dog is not bad"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> HookedRewardModel:
    return load_tiny(build_hf_model("llama"), tmp_path_factory.mktemp("llama"))


def by_hand(model, sender, receiver):
    """One sender, step by step with plain hooks (no batching)."""
    target, source = as_row(model, CORRUPT)[None], as_row(model, CLEAN)[None]
    _, base = model.run_with_cache(target)
    _, src = model.run_with_cache(source)
    hooks = []
    for layer in range(model.cfg.n_layers):
        for name, kind in ((f"blocks.{layer}.attn.hook_z", "head"), (f"blocks.{layer}.hook_mlp_out", "mlp")):

            def freeze(act, hook, name=name, kind=kind, layer=layer):
                new = base[name].clone()
                if sender[0] == kind and sender[1] == layer:
                    if kind == "head":
                        new[:, :, sender[2]] = src[name][:, :, sender[2]]
                    else:
                        new = src[name].clone()
                return new

            hooks.append((name, freeze))
    store = {}
    rec = None if receiver == "reward" else f"blocks.{receiver[1]}.attn.hook_{receiver[0]}"
    if rec:
        hooks.append((rec, lambda act, hook: store.setdefault("r", act.clone())))
    with torch.no_grad():
        r = model.run_with_hooks(target, fwd_hooks=hooks)
        if rec is None:
            return float(r[0])

        def put(act, hook):
            act = act.clone()
            act[:, :, receiver[2]] = store["r"][:, :, receiver[2]]
            return act

        return float(model.run_with_hooks(target, fwd_hooks=[(rec, put)])[0])


@pytest.mark.parametrize("receiver", ["reward", ("q", 1, 2), ("v", 1, 0)])
def test_batched_matches_hand_written_algorithm(model, receiver):
    senders = all_senders(model, None if receiver == "reward" else receiver[1])
    res = path_patch(model, CLEAN, CORRUPT, receiver, senders, max_rows=3, progress=False)
    picks = [0, len(senders) - 1]
    for i in picks:
        assert float(res.rewards[i]) == pytest.approx(by_hand(model, senders[i], receiver), abs=1e-4)
    assert res.labels["sender"][0] == "L0H0"


def test_direct_path_of_last_mlp_equals_activation_patching(model):
    last = model.cfg.n_layers - 1
    res = path_patch(model, CLEAN, CORRUPT, "reward", [("mlp", last, None)], progress=False)
    exact = patch_hooks(model, CLEAN, CORRUPT, {"m": Patch(f"blocks.{last}.hook_mlp_out")}, progress=False)
    assert float(res.rewards[0]) == pytest.approx(float(exact.rewards[0]), abs=1e-4)


def test_sender_in_receiver_layer_has_no_path(model):
    res = path_patch(model, CLEAN, CORRUPT, ("k", 1, 1), [("head", 1, 0), ("mlp", 1, None)], progress=False)
    assert torch.allclose(res.values, torch.zeros(2), atol=1e-5)
    with pytest.raises(InputError, match="receiver"):
        path_patch(model, CLEAN, CORRUPT, ("o", 1, 1), progress=False)
    with pytest.raises(InputError, match="different lengths"):
        path_patch(model, CLEAN, "the cat is good", progress=False)
