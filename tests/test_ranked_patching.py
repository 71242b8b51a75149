"""ranked_patching: attribution-patching estimates at every site, exact patching of the top-k they rank; the exact
numbers equal the full exact sweep at those sites, the estimates equal attribution_patch's."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import build_hf_model, load_tiny

from hooked_reward.analysis.attribution_patching import attribution_patch
from hooked_reward.analysis.patching import patch_block_outputs, patch_heads
from hooked_reward.analysis.ranked_patching import forward_equivalents, ranked_patching
from hooked_reward.errors import InputError

CHOSEN = "the cat is very good answer yes"
REJECTED = "the dog was bad no"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_tiny(build_hf_model("llama"), tmp_path_factory.mktemp("rp") / "ckpt")


@pytest.mark.parametrize("by", ["component", "head"])
def test_exact_at_ranked_sites_equals_the_full_sweep(model, by):
    res = ranked_patching(model, CHOSEN, REJECTED, by=by, top_k=3)
    if by == "component":
        full = patch_block_outputs(model, CHOSEN, REJECTED, align="reward", progress=False).values.reshape(-1)
        est = attribution_patch(model, CHOSEN, REJECTED, sites=("attn_out", "mlp_out"), align="reward")
        est = est.sweep("block_outputs").values.reshape(-1)
    else:
        full = patch_heads(model, CHOSEN, REJECTED, align="reward", progress=False).values.reshape(-1)
        est = attribution_patch(model, CHOSEN, REJECTED, sites=("z",), align="reward").sweep("z").values.reshape(-1)
    torch.testing.assert_close(res.estimate, est.float(), rtol=1e-5, atol=1e-6)
    assert len(res.ranked) == 3
    order = sorted(range(len(est)), key=lambda i: -abs(float(est[i])))[:3]
    assert res.ranked == order
    for i in range(len(full)):
        if i in res.ranked:
            assert float(res.values[i]) == pytest.approx(float(full[i]), abs=1e-5)
        else:
            assert math.isnan(float(res.values[i]))
    rows = res.side_by_side()
    assert [r["site"] for r in rows] == [res.axis_labels("site")[i] for i in order]
    assert all(r["same_sign"] == ((r["estimate"] > 0) == (r["exact"] > 0)) for r in rows)
    assert res.to_json()["side_by_side"]


def test_top_k_larger_than_sites_patches_all(model):
    res = ranked_patching(model, CHOSEN, REJECTED, by="component", top_k=100)
    assert len(res.ranked) == 2 * model.cfg.n_layers and not torch.isnan(res.values).any()
    with pytest.raises(InputError, match="top_k"):
        ranked_patching(model, CHOSEN, REJECTED, top_k=0)


def test_forward_equivalents_at_real_shapes():
    qwen3 = forward_equivalents(28, 16, 12, ("component", "head"))
    assert qwen3 == {"ranked": 6 + 12 + 6 + 12, "exact_every_site": 2 + 56 + 2 + 448}


def test_causal_plan_by_budget(model):
    from types import SimpleNamespace

    from hooked_reward.study.analyze import causal_plan

    qwen3 = causal_plan(SimpleNamespace(cfg=SimpleNamespace(n_layers=28, n_heads=16)))
    assert qwen3["method"] == "ranked" and qwen3["forward_equivalents_per_pair"] <= 30 and qwen3["top_k"] >= 1
    assert qwen3["exact_would_cost"] == 12 + 58 + 450
    llama = causal_plan(SimpleNamespace(cfg=SimpleNamespace(n_layers=16, n_heads=32)))
    assert llama["method"] == "ranked" and llama["forward_equivalents_per_pair"] <= 30
    tiny = causal_plan(SimpleNamespace(cfg=SimpleNamespace(n_layers=1, n_heads=2)))
    assert tiny["method"] == "exact"
    assert causal_plan(model, "exact")["method"] == "exact"
    with pytest.raises(InputError, match="causal"):
        causal_plan(model, "fast")


def test_analyze_ranked_reports_estimate_and_exact_side_by_side(model, tmp_path):
    import json

    from hooked_reward.pairs import PreferencePair
    from hooked_reward.study.analyze import analyze

    pairs = [
        PreferencePair("", CHOSEN, REJECTED, "m"),
        PreferencePair("", "the cat is good yes", "the cat is bad no", "m"),
        PreferencePair("", "yes very good answer", "no very bad answer", "m"),
    ]
    analyze(model, pairs, tmp_path / "r", causal="ranked", budget=30, progress=False)
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    causal = data["results"]["causal"]
    assert causal["method"] == "ranked" and causal["top_k"] == 3
    rows = causal["side_by_side"]["m"]["head"][0]
    assert len(rows) == 3 and {"site", "estimate", "exact", "same_sign"} <= set(rows[0])
    exact = ranked_patching(model, CHOSEN, REJECTED, by="head", top_k=3)
    assert [r["exact"] for r in rows] == pytest.approx([float(exact.values[i]) for i in exact.ranked], abs=1e-5)
