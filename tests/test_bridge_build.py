"""Our bridge construction (`bridge_build`, issue 16's loading time) gives exactly TransformerLens's bridge.

The reference is TransformerLens's own public builder, `build_bridge_from_module`, run with its own
`_scan_existing_hooks` on a second copy of the same checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import ARCHS
from test_armorm import tiny_state, write_armorm
from transformer_lens.model_bridge import TransformerBridge
from transformer_lens.model_bridge.sources import build_bridge_from_module

from hooked_reward import HookedRewardModel
from hooked_reward.bridge_build import scan_hook_points
from hooked_reward.loading import load_checkpoint
from hooked_reward.model import REWARD_HOOKS, unembed_at_head


def transformer_lens_bridge(path: Path) -> TransformerBridge:
    loaded = load_checkpoint(path)
    bridge = build_bridge_from_module(
        loaded.module,
        loaded.causal_lm_architecture,
        hf_config=loaded.hf_config,
        model_name=str(path),
        post_adapter_hook=unembed_at_head(loaded.head_path),
    )
    assert type(bridge) is TransformerBridge  # TransformerLens's own class, so its own scan
    return bridge


def alias_groups(registry: dict) -> set[tuple[str, ...]]:
    groups: dict[int, list[str]] = {}
    for name, hook in registry.items():
        groups.setdefault(id(hook), []).append(name)
    return {tuple(names) for names in groups.values()}


def assert_same_bridge(ours: HookedRewardModel, reference: TransformerBridge) -> None:
    registry = {k: v for k, v in ours._hook_registry.items() if k not in ours._reward_hook_names}
    assert list(registry) == list(reference._hook_registry)  # same names, same order
    assert [h.name for h in registry.values()] == [h.name for h in reference._hook_registry.values()]
    assert alias_groups(registry) == alias_groups(reference._hook_registry)
    head_modules = {f"head.{name}" if name else "head" for name, _ in ours.head.named_modules()}
    ours_modules = [n for n, _ in ours.named_modules() if n not in head_modules and not n.startswith("hook_reward")]
    assert ours_modules == [n for n, _ in reference.named_modules()]
    assert ours.cfg.to_dict() | {"tokenizer_prepends_bos": None, "tokenizer_appends_eos": None} == (
        reference.cfg.to_dict() | {"tokenizer_prepends_bos": None, "tokenizer_appends_eos": None}
    )


@pytest.mark.parametrize("arch", ARCHS)
def test_bridge_equals_transformer_lens_build(make_checkpoint, arch: str) -> None:
    path = make_checkpoint(arch)
    assert_same_bridge(HookedRewardModel.from_pretrained(path), transformer_lens_bridge(path))


def test_armorm_bridge_equals_transformer_lens_build(tmp_path: Path) -> None:
    state, config = tiny_state()
    path = write_armorm(tmp_path / "armorm", state, config)
    assert_same_bridge(HookedRewardModel.from_pretrained(path), transformer_lens_bridge(path))


def test_rescan_after_clearing_matches_transformer_lens(make_checkpoint) -> None:
    """`clear_hook_registry()` then `_initialize_hook_registry()`: one scan with the aliases already in place."""
    path = make_checkpoint("llama")
    ours, reference = HookedRewardModel.from_pretrained(path), transformer_lens_bridge(path)
    for bridge in (ours, reference):
        bridge.clear_hook_registry()
        bridge._initialize_hook_registry()
    assert_same_bridge(ours, reference)
    rebuilt: dict = {}
    scan_hook_points(rebuilt, reference, "")  # a fresh scan of TL's bridge: same keys, same names
    assert list(rebuilt) == list(reference._hook_registry)
    assert all(
        rebuilt[k] is reference._hook_registry[k] and rebuilt[k].name == ours._hook_registry[k].name for k in rebuilt
    )


def test_head_hooks_keep_their_names_after_a_rescan(tmp_path: Path) -> None:
    """ArmoRM's gate and objective hook points stay reachable by their public names after the registry is
    rebuilt (TransformerLens's scan would rename them `head.…`)."""
    state, config = tiny_state()
    model = HookedRewardModel.from_pretrained(write_armorm(tmp_path / "armorm", state, config))
    model.head.on_missing = "reward_pos"  # random tokens have no chat-template gating pattern
    tokens = torch.randint(4, config.vocab_size, (2, 6))
    _, before = model.run_with_cache(tokens, names_filter=sorted(model._reward_hook_names))
    model.clear_hook_registry()
    model._initialize_hook_registry()
    _, after = model.run_with_cache(tokens, names_filter=sorted(model._reward_hook_names))
    assert "gating.hook_weights" in before.cache_dict and set(before.cache_dict) <= set(after.cache_dict)
    assert {f"head.{name}" for name in before.cache_dict if name not in REWARD_HOOKS} == (
        set(after.cache_dict) - set(before.cache_dict)
    )  # the rescan adds the module paths as aliases
    for name, value in before.cache_dict.items():
        assert model.hook_dict[name].name == name
        assert torch.equal(after[name], value)
