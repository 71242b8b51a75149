"""Necessity next to sufficiency (issue 36 item 4): restore (denoising) and remove (noising) shares per component and
head, against hand-written TransformerLens hook runs, and the redundancy flag on planted shares."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hooked_reward import HookedRewardModel
from hooked_reward.analysis.necessity import restore_remove_pair, summarise_restore_remove
from hooked_reward.names import block_components, head_components

CLEAN, CORRUPT = "the cat is very good", "the dog is very bad"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from conftest import build_hf_model, save_checkpoint

    return HookedRewardModel.from_pretrained(
        save_checkpoint(build_hf_model("llama", seed=2), tmp_path_factory.mktemp("n"))
    )


def _swap(model, into: str, source: str, hook: str, head: int | None = None) -> float:
    """r(`into` with `hook` (one head's slice, or all of it) replaced by `source`'s activation), by hand."""
    with torch.no_grad():
        _, cache = model.run_with_cache(source, names_filter=[hook])
        src = cache[hook]

        def put(act, hook):
            if head is None:
                return src.clone()
            out = act.clone()
            out[:, :, head] = src[:, :, head]
            return out

        return float(model.run_with_hooks(into, fwd_hooks=[(hook, put)])[0])


def test_restore_and_remove_match_hand_written_hooks(model) -> None:
    with torch.no_grad():
        r_clean, r_corrupt = (float(model(t)[0]) for t in (CLEAN, CORRUPT))
    gap = r_clean - r_corrupt
    comps = restore_remove_pair(model, CLEAN, CORRUPT, by="component")
    for i, comp in enumerate(block_components(model)):
        restores = (_swap(model, CORRUPT, CLEAN, comp.hook_name) - r_corrupt) / gap
        removes = (r_clean - _swap(model, CLEAN, CORRUPT, comp.hook_name)) / gap
        assert comps["restores"][i].item() == pytest.approx(restores, abs=1e-4)
        assert comps["removes"][i].item() == pytest.approx(removes, abs=1e-4)
    heads = restore_remove_pair(model, CLEAN, CORRUPT, by="head")
    for i, h in enumerate(head_components(model)[:3]):
        hook = f"blocks.{h.layer}.attn.hook_z"
        restores = (_swap(model, CORRUPT, CLEAN, hook, h.index) - r_corrupt) / gap
        removes = (r_clean - _swap(model, CLEAN, CORRUPT, hook, h.index)) / gap
        assert heads["restores"][i].item() == pytest.approx(restores, abs=1e-4)
        assert heads["removes"][i].item() == pytest.approx(removes, abs=1e-4)
    assert heads["gap"] == pytest.approx(gap, abs=1e-5)


def test_redundancy_is_flagged_where_restore_and_remove_disagree() -> None:
    """Planted shares: a head that restores 0.37 but removes 0.12 (a backup carries it) is redundant; one that
    does both alike is not; one that removes much more than it restores works jointly."""
    rng = np.random.default_rng(0)
    n = 40
    rows = [
        {
            "restores": np.array([0.37, 0.30, 0.05]) + rng.normal(0, 0.05, 3),
            "removes": np.array([0.12, 0.30, 0.40]) + rng.normal(0, 0.05, 3),
        }
        for _ in range(n)
    ]
    result = summarise_restore_remove(rows, ["L0H1", "L0H2", "L1H0"], n_boot=999)
    flags = [s["flag"] for s in result.summary]
    assert flags == ["redundant", "", "joint"]
    first = result.summary[0]
    assert first["restores_ci"][0] < first["restores"] < first["restores_ci"][1]
    assert first["removes"] == pytest.approx(np.mean([r["removes"][0] for r in rows]))
    assert result.ranked(1)[0]["component"] == "L1H0"  # the largest share, whichever measure
    assert result.values.shape == (n, 2, 3)


def test_removes_pair_is_restore_remove_without_the_denoising(model) -> None:
    from hooked_reward.analysis.necessity import removes_pair

    both = restore_remove_pair(model, CLEAN, CORRUPT, by="head")
    only = removes_pair(model, CLEAN, CORRUPT, by="head")
    assert "restores" not in only
    torch.testing.assert_close(only["removes"], both["removes"])
