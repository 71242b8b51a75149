"""One vocabulary for hook points and components, one rule for picking an output."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from conftest import build_hf_model, load_tiny
from transformer_lens.utilities import get_act_name

from hooked_reward import HookedRewardModel, InputError
from hooked_reward.analysis.attribution import direct_reward_attribution
from hooked_reward.analysis.faithfulness import _dra_labels
from hooked_reward.analysis.patching import patch_block_outputs
from hooked_reward.analysis.path_patching import all_senders, path_patch
from hooked_reward.analysis.probes.localise import component_hook
from hooked_reward.names import Component, act_name, block_components, final_resid_hook, head_components
from hooked_reward.outputs import output_index, select_output

CLEAN, CORRUPT = "the cat is very good", "the dog is not bad"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> HookedRewardModel:
    return load_tiny(build_hf_model("gpt2"), tmp_path_factory.mktemp("gpt2"))


def test_hook_names_are_transformer_lens_names(model):
    for name, layer, sub in [("resid_pre", 0, None), ("z", 1, None), ("post", 1, None), ("scale", 1, "ln2")]:
        assert act_name(name, layer, sub) == get_act_name(name, layer, sub)
        assert act_name(name, layer, sub) in model.hook_dict
    assert final_resid_hook(model) == f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"


def test_component_labels_carry_structure_and_round_trip():
    head = Component("head", 1, 3)
    assert head == "L1H3" and (head.kind, head.layer, head.index, head.head) == ("head", 1, 3, 3)
    assert head.hook_name == "blocks.1.attn.hook_z"
    assert Component("neuron", 0, 7) == "L0N7" and Component("neuron", 0, 7).hook_name == "blocks.0.mlp.hook_post"
    assert Component("mlp_bias", 2).hook_name == "blocks.2.hook_mlp_out"
    restored = pickle.loads(pickle.dumps(head))
    assert isinstance(restored, Component) and restored.layer == 1 and restored.index == 3
    assert json.loads(json.dumps([head])) == ["L1H3"]
    with pytest.raises(InputError, match="kind"):
        Component("attn", 0)
    with pytest.raises(InputError, match="index"):
        Component("head", 0)


def test_one_vocabulary_across_analyses(model):
    """DRA, decompose_reward, block-output patching, faithfulness and path patching name the same components
    with the same labels, and those labels equal TransformerLens's decompose_resid labels."""
    _, cache = model.run_with_cache(CLEAN)
    stack, tl_labels = cache.decompose_resid(return_labels=True)
    _, ours = cache.decompose_reward()
    assert [str(c) for c in ours] == list(tl_labels) and all(isinstance(c, Component) for c in ours)
    dra = direct_reward_attribution(model, [CLEAN], progress=False)
    assert dra.axis_labels("component") == list(tl_labels)
    blocks = block_components(model)
    patched = patch_block_outputs(model, CLEAN, CORRUPT, progress=False)
    assert patched.axis_labels("component") == blocks == [c for c in ours if c.layer is not None]
    assert _dra_labels(model, "component") == blocks and _dra_labels(model, "head") == head_components(model)
    heads = direct_reward_attribution(model, [CLEAN], by="head", progress=False)
    assert [c for c in heads.axis_labels("component") if c.kind == "head"] == head_components(model)
    senders = all_senders(model)
    path = path_patch(model, CLEAN, CORRUPT, "reward", senders[:1] + senders[-1:], progress=False)
    assert path.labels[path.dims[0]] == [Component("head", 0, 0), Component("mlp_out", model.cfg.n_layers - 1)]
    for component in heads.axis_labels("component"):
        if component.kind in ("attn_bias", "mlp_bias"):
            with pytest.raises(InputError, match="no activation"):
                component_hook(component)
        else:
            hook, head = component_hook(component)
            assert hook in model.hook_dict and head == component.head


def test_select_output_one_rule():
    rewards = torch.arange(6.0).reshape(3, 2)
    names = ["helpful", "harmless"]
    assert torch.equal(select_output(rewards, "harmless", names=names), rewards[:, 1])
    assert torch.equal(select_output(rewards, -2, names=names), rewards[:, 0])
    assert torch.equal(select_output(rewards, None, names=names, required=False), rewards)
    with pytest.raises(InputError, match="pass output="):
        select_output(rewards, None, names=names)
    with pytest.raises(InputError, match="out of range"):
        select_output(rewards, 2, names=names)
    with pytest.raises(InputError, match="Unknown output 'honest'"):
        select_output(rewards, "honest", names=names)
    single = torch.tensor([1.0, 2.0])
    assert select_output(single, None) is single and select_output(single, 0) is single
    with pytest.raises(InputError, match="out of range"):
        select_output(single, 1)
    assert output_index(None, names) is None
    with pytest.raises(InputError, match="int, a name or None"):
        output_index(1.0, names)
