"""Known-answer tests for hooked_reward.analysis.compare (self-comparison, negated head, CKA, cosines)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import transformers
from conftest import WORDS, build_hf_model, load_tiny

from hooked_reward.analysis.compare import (
    cka_matrix,
    collect_run,
    compare_models,
    formation_depth,
    linear_cka,
    reward_direction_cosines,
    shared_basis,
    whitened_cosine,
)
from hooked_reward.report import write_compare_report


def _save(model, path):
    return load_tiny(model, path)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    a = _save(build_hf_model("llama", seed=0), root / "a")
    neg = build_hf_model("llama", seed=0)
    with torch.no_grad():
        neg.score.weight.neg_()
    negated = _save(neg, root / "neg")
    cfg = transformers.LlamaConfig(
        vocab_size=96,
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=4,
        num_labels=1,
        pad_token_id=0,
        max_position_embeddings=64,
    )
    torch.manual_seed(1)
    wide = _save(transformers.LlamaForSequenceClassification(cfg).eval(), root / "wide")
    return {"a": a, "neg": negated, "wide": wide}


@pytest.fixture(scope="module")
def pairs():
    rng = np.random.default_rng(0)
    out = []
    for _ in range(20):
        prompt = " ".join(rng.choice(WORDS, 4))
        out.append(
            {
                "prompt": prompt,
                "chosen": " ".join(rng.choice(WORDS, rng.integers(2, 7))),
                "rejected": " ".join(rng.choice(WORDS, rng.integers(2, 7))),
            }
        )
    return out


def test_whitened_cosine_hand_computed():
    cov = np.diag([4.0, 1.0])
    wa, wb = np.array([1.0, 0.0]), np.array([1.0, 1.0])
    raw = wa @ wb / (np.linalg.norm(wa) * np.linalg.norm(wb))
    assert raw == pytest.approx(0.70710678, abs=1e-6)
    # definition: cos(Σ^{1/2} w_a, Σ^{1/2} w_b); Σ^{1/2} = diag(2, 1): (2, 0)·(2, 1) / (2 · √5) = 2/√5
    assert whitened_cosine(wa, wb, cov) == pytest.approx(0.89442719, abs=1e-6)
    half = np.diag([2.0, 1.0])
    a, b = half @ wa, half @ wb
    assert whitened_cosine(wa, wb, cov) == pytest.approx(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_cka_rotation_invariant_across_widths():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8))
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert linear_cka(x, x @ q) == pytest.approx(1.0, abs=1e-10)
    assert linear_cka(x, 3.0 * x) == pytest.approx(1.0, abs=1e-10)
    y = rng.normal(size=(40, 13))  # a different width is fine
    assert 0 < linear_cka(x, y) < 0.6
    q13, _ = np.linalg.qr(rng.normal(size=(13, 13)))
    embed = q13[:8]  # orthonormal rows: x @ embed has x's Gram matrix in 13 dimensions
    m = cka_matrix(np.stack([x, x @ q]), np.stack([y, x @ embed, 2 * x @ embed]))
    assert m.shape == (2, 3)
    np.testing.assert_allclose(m[:, 1:], 1.0, atol=1e-10)


def test_formation_depth_hand_computed():
    assert formation_depth(np.array([0.0, 0.2, 0.6, 1.0])) == pytest.approx(2 / 3)
    assert formation_depth(np.array([0.0, -0.6, -1.0])) == pytest.approx(1 / 2)  # sign handled
    assert formation_depth(np.array([0.0, 2.0, -1.0, 1.0])) == pytest.approx(1 / 3)
    assert math.isnan(formation_depth(np.array([0.3, 0.0])))


def test_lens_ends_at_margin(models, pairs):
    p, c, r = zip(*[(x["prompt"], x["chosen"], x["rejected"]) for x in pairs], strict=True)
    run = collect_run(models["a"], p, c, r, progress=False)
    np.testing.assert_allclose(run.lens_margin[:, -1], run.margins, atol=1e-4)
    np.testing.assert_allclose(run.attr_margin.sum(1), run.margins, atol=1e-4)  # attributions sum to margin
    assert run.lens_margin.shape == (len(pairs), models["a"].cfg.n_layers + 1)


def test_self_comparison_is_one_everywhere(models, pairs, tmp_path):
    res = compare_models(models["a"], models["a"], pairs, n_boot=499, n_boot_geometry=50, progress=False)
    for key in ("pearson", "spearman", "kendall", "agreement"):
        v, lo, hi = res.behaviour[key]
        assert v == pytest.approx(1.0) and lo == pytest.approx(1.0) and hi == pytest.approx(1.0), key
    assert res.behaviour["accuracy_a"][0] == res.behaviour["accuracy_b"][0]
    assert res.shared_basis
    assert res.geometry_scalars["cosine_raw"][0] == pytest.approx(1.0, abs=1e-6)
    assert res.geometry_scalars["cosine_whitened"][0] == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(np.diag(res.cka), 1.0, atol=1e-6)
    assert res.mechanism_scalars["profile_similarity"][0] == pytest.approx(1.0)
    assert res.formation["depth_difference"][0] == 0.0
    np.testing.assert_allclose(res.lens_a[0], res.lens_b[0])
    frame = res.to_frame()
    assert {"value", "ci_low", "ci_high"} <= set(frame.columns)
    path = write_compare_report(res, tmp_path / "rep")
    assert path.exists()
    assert (tmp_path / "rep" / "compare.png").exists() and (tmp_path / "rep" / "report.json").exists()


def test_negated_head(models, pairs):
    res = compare_models(models["a"], models["neg"], pairs, n_boot=499, n_boot_geometry=50, progress=False)
    assert res.behaviour["pearson"][0] == pytest.approx(-1.0, abs=1e-6)
    assert res.behaviour["spearman"][0] == pytest.approx(-1.0, abs=1e-6)
    assert res.behaviour["kendall"][0] == pytest.approx(-1.0, abs=1e-6)
    assert res.behaviour["agreement"][0] == 0.0
    assert res.behaviour["accuracy_a"][0] + res.behaviour["accuracy_b"][0] == pytest.approx(1.0)
    assert res.shared_basis  # identical embeddings: same basis, detected
    assert res.geometry_scalars["cosine_raw"][0] == pytest.approx(-1.0, abs=1e-6)
    assert res.geometry_scalars["cosine_whitened"][0] == pytest.approx(-1.0, abs=1e-6)
    np.testing.assert_allclose(np.diag(res.cka), 1.0, atol=1e-6)  # same residuals: CKA ignores the head


def test_different_widths_refuse_cosine(models, pairs):
    ok, reason = shared_basis(models["a"], models["wide"])
    assert not ok and "d_model" in reason
    res = compare_models(models["a"], models["wide"], pairs, n_boot=199, n_boot_geometry=30, progress=False)
    assert res.cka.shape == (3, 4)
    assert np.isnan(res.geometry_scalars["cosine_raw"][0])
    assert any("not shared" in n for n in res.notes)
    assert res.depth_a[-1] == 1.0 and res.depth_b[-1] == 1.0 and len(res.depth_b) == 4
    p, c, r = zip(*[(x["prompt"], x["chosen"], x["rejected"]) for x in pairs], strict=True)
    ra = collect_run(models["a"], p, c, r, progress=False)
    rb = collect_run(models["wide"], p, c, r, progress=False)
    with pytest.raises(ValueError, match="different residual bases"):
        reward_direction_cosines(ra, rb)
