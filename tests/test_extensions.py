"""The five extensions (issue 15): a known answer each, on hand-computed cases and on tiny models with planted
mechanisms (and on the bundled organisms when their weights are present)."""

from __future__ import annotations

import json
import random
import warnings

import numpy as np
import pytest
import torch
from conftest import SPECIALS, WORDS, build_hf_model, load_tiny

from hooked_reward import HookedRewardModel, InputError, PreferencePair
from hooked_reward.analysis.extensions import (
    cascade_analysis,
    cascade_from_items,
    conflict_analysis,
    distortion_from_margins,
    distortion_index,
    dose_response,
    fit_concept,
    fit_residual_density,
    misalignment_pairs,
    score_patched_runs,
    whitened_cosine,
)
from hooked_reward.analysis.extensions.divergence import GaussianDensity, ablation_hooks
from hooked_reward.analysis.stats import random_cosine_null
from hooked_reward.study.extensions import extensions_report

VOCAB_IDS = {t: i for i, t in enumerate(SPECIALS + WORDS)}
FILLER = "the a is was question answer great awful".split()


def _load(tmp_path_factory, hf, name: str) -> HookedRewardModel:
    return load_tiny(hf, tmp_path_factory.mktemp(name))


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> HookedRewardModel:
    return _load(tmp_path_factory, build_hf_model("llama"), "llama")


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> HookedRewardModel:
    """Llama whose "bad" embedding is a large vector along the reward direction: one planted mechanism."""
    hf = build_hf_model("llama", seed=1)
    with torch.no_grad():
        w = hf.score.weight[0] * hf.model.norm.weight
        hf.model.embed_tokens.weight[VOCAB_IDS["bad"]] = 30 * w / w.norm()
    return _load(tmp_path_factory, hf, "planted")


def random_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))) for _ in range(n)]


# ------------------------------------------------------------------------------------------------ shared null
def test_random_cosine_null_matches_simulation():
    rng = np.random.default_rng(0)
    u = rng.normal(size=(100_000, 32))
    cos = u[:, 0] / np.linalg.norm(u, axis=1)
    null = random_cosine_null(32, 0.3)
    assert null["band_high"] == pytest.approx(np.quantile(np.abs(cos), 0.95), abs=0.005)
    assert null["p_value"] == pytest.approx((np.abs(cos) >= 0.3).mean(), abs=0.005)
    assert null["null_sd"] == pytest.approx(1 / np.sqrt(32))


# ------------------------------------------------------------------------------------------------ 1. distortion
def test_distortion_known_margins():
    res = distortion_from_margins({"all": [1, 1, 1, 1], "coin": [1, -1, 1, -1], "inv": [-1, -1, -1, -1]})
    np.testing.assert_allclose(res.coverage, [1, 0, -1])
    np.testing.assert_allclose(res.distortion, [0, 1, 1])
    assert res.inverted.tolist() == [False, False, True]
    assert res.overall == pytest.approx(2 / 3)
    weighted = distortion_from_margins({"all": [1, 1], "coin": [1, -1]}, weights={"all": 3, "coin": 1})
    assert weighted.overall == pytest.approx(0.25)
    ties = distortion_from_margins({"t": [0, 0, 1, 1]})
    assert ties.auc[0] == pytest.approx(0.75)  # ties count ½
    df = res.to_frame()
    assert list(df["dimension"]) == ["all", "coin", "inv"] and "coverage_low" in df


def test_distortion_perfect_model_has_no_forced_worst(llama):
    rng = random.Random(0)
    texts = random_texts(40, 1)
    tokens, mask = llama.tokenize(texts)
    with torch.no_grad():
        rewards = llama(tokens, attention_mask=mask)
    order = [texts[i] for i in torch.argsort(rewards, descending=True).tolist()]
    # pairs ordered by the model's own rewards: a perfect model on every dimension
    dims = {
        f"dim{k}": [(order[i], order[j]) for i, j in (sorted(rng.sample(range(40), 2)) for _ in range(12))]
        for k in range(3)
    }
    res = distortion_index(llama, dims, n_boot=500)
    np.testing.assert_allclose(res.distortion, 0.0)
    assert res.overall == 0 and not res.inverted.any()
    # norm-exact mechanistic readout: mean Δ normed final residual · W_R_eff == mean margin
    np.testing.assert_allclose(res.mechanistic["readout"], res.mean_margin, atol=1e-4)
    assert (res.mechanistic["null_high"] > 0).all()
    fig = res.plot_panels()
    assert len(fig.axes) >= 2  # coverage, mechanistic cosines (and a colorbar-free layout)
    import matplotlib.pyplot as plt

    _, ax = plt.subplots()
    assert res.plot(ax=ax) is ax and res.dims == ("dimension",) and res.labels["dimension"] == list(dims)


# ------------------------------------------------------------------------------------------------ 2. divergence
def test_mahalanobis_known_answer_and_calibration():
    rng = np.random.default_rng(0)
    scale = np.array([1.0, 2.0])  # covariance diag(1, 4)
    dens = GaussianDensity.fit(rng.normal(size=(20_000, 2)) * scale, k=2)
    assert dens.distance(np.array([[0.0, 6.0]]))[0] == pytest.approx(3.0, rel=0.01)
    threshold = np.quantile(dens.distance(rng.normal(size=(5000, 2)) * scale), 0.99)
    fresh = dens.distance(rng.normal(size=(50_000, 2)) * scale)
    assert (fresh > threshold).mean() == pytest.approx(0.01, abs=0.003)


def test_divergence_flags_zero_ablation_not_matched_patch(tmp_path_factory):
    """GPT-2 whose first MLP writes a large constant vector (a 'massive activation'): zeroing it leaves the data;
    patching the layer-0 residual at the reward position from another clean prompt does not."""
    hf = build_hf_model("gpt2")
    with torch.no_grad():
        bias = hf.transformer.h[0].mlp.c_proj.bias
        bias.copy_(40 * torch.nn.functional.normalize(torch.randn_like(bias), dim=0))
    model = _load(tmp_path_factory, hf, "gpt2big")
    density = fit_residual_density(model, random_texts(200, 2), random_texts(200, 3), k=16)
    tokens, mask = model.tokenize(random_texts(60, 4))
    zero = ablation_hooks(model, "blocks.0.hook_mlp_out", tokens, mask, "zero", positions="all")
    matched = ablation_hooks(model, "blocks.0.hook_resid_post", tokens, mask, "resample", reference=random_texts(60, 5))
    res = score_patched_runs(model, tokens, mask, [[], zero, matched], density, names=["clean", "zero", "matched"])
    assert res.flagged.tolist() == [False, True, False]
    assert res.frac_flagged[1] > 0.9 and res.frac_flagged[2] < 0.2 and res.frac_flagged[0] < 0.1
    assert res.to_frame().shape[0] == 3


# ------------------------------------------------------------------------------------------------ 3. cascade
def test_cascade_constructed_profiles():
    rng = np.random.default_rng(0)
    q = np.linalg.qr(rng.normal(size=(50, 4)))[0].T  # 4 orthonormal profiles over 50 components
    profiles = {"a": q[:1], "b": 2 * q[:1], "c": 0.5 * q[:1], "d": q[1:2], "e": q[2:3], "f": q[3:4]}
    res = cascade_from_items(profiles, n_perm=499)
    # S = [[J3, 0], [0, I3]]: eigenvalues 3, 1, 1, 1, 0, 0 -> top share 3 / 6
    assert res.strength == pytest.approx(0.5)
    assert res.clusters[0] == ["a", "b", "c"] and all(len(c) == 1 for c in res.clusters[1:])
    assert res.p_value < 0.01


def test_misalignment_pairs_seeded_and_sized():
    a, b = misalignment_pairs(seed=3), misalignment_pairs(seed=3)
    assert a == b and len(a) == 6 and all(len(v) >= 20 and len(set(v)) == len(v) for v in a.values())


def test_cascade_groups_exactly_the_planted_pair(planted):
    rng = random.Random(0)

    def items(swap, pos, n=24):
        out = []
        for _ in range(n):
            ws = [rng.choice(FILLER) for _ in range(5)]
            a, b = ws.copy(), ws.copy()
            if pos == "last":
                a.append(swap[0]), b.append(swap[1])
            else:
                a[pos], b[pos] = swap
                a.append("answer"), b.append("answer")
            out.append(PreferencePair("", " ".join(b), " ".join(a)))  # chosen: the aligned (planted-losing) side
        return out

    pairs = {
        "A": items(("bad", "good"), "last"),
        "B": items(("bad", "good"), "last"),
        "C": items(("cat", "dog"), 1),
        "D": items(("yes", "no"), 2),
        "E": items(("please", "thanks"), 0),
        "F": items(("very", "not"), 3),
    }
    res = cascade_analysis(planted, pairs, n_perm=299, n_boot=300)
    assert ["A", "B"] in res.clusters and all(len(c) == 1 for c in res.clusters if c != ["A", "B"])
    assert res.shared_components[0][0] == "embed"
    assert (res.failure_rate[:2] == 1).all()  # the planted token always wins
    # profiles are exact DRA (scale frozen per run): each profile sums to the mean reward difference
    np.testing.assert_allclose(res.profiles.sum(1), res.meta["mean_delta"], atol=1e-4)
    assert res.to_frame().shape[0] == 6


def test_cascade_pairs_name_their_sides(planted):
    """Sides are named, never read from tuple order (issue 29): `{"aligned", "misaligned"}` mappings give the
    result of the PreferencePairs they name; a bare tuple, which the docs once gave as (misaligned, aligned) and
    which read the other way inverts every failure rate, is refused with the fix."""
    rng = random.Random(1)
    rows = {dim: [] for dim in ("A", "B")}
    for dim, (win, lose) in {"A": ("bad", "good"), "B": ("cat", "dog")}.items():
        for _ in range(8):
            ws = " ".join(rng.choice(FILLER) for _ in range(5))
            rows[dim].append({"aligned": f"{ws} {lose}", "misaligned": f"{ws} {win}"})
    as_pp = {d: [PreferencePair("", r["aligned"], r["misaligned"]) for r in v] for d, v in rows.items()}
    named = cascade_analysis(planted, rows, n_perm=99, n_boot=99)
    ref = cascade_analysis(planted, as_pp, n_perm=99, n_boot=99)
    np.testing.assert_array_equal(named.failure_rate, ref.failure_rate)
    np.testing.assert_array_equal(named.profiles, ref.profiles)
    assert named.failure_rate[0] == 1.0  # "bad" is the planted winner: the misaligned side wins every A pair
    tuples = {d: [(r["misaligned"], r["aligned"]) for r in v] for d, v in rows.items()}
    with pytest.raises(InputError, match=r"pairs\['A'\]\[0\]: a bare tuple .*\"aligned\".*\"misaligned\""):
        cascade_analysis(planted, tuples, n_perm=99, n_boot=99)


# ------------------------------------------------------------------------------------------------ 4. conflict
def test_whitened_cosine_known_rows():
    wc = whitened_cosine(torch.tensor([[1.0, 0, 0], [-1, 1, 0], [0, 0, 2]]), torch.eye(3))
    np.testing.assert_allclose(wc, [[1, -0.70710678, 0], [-0.70710678, 1, 0], [0, 0, 1]], atol=1e-6)


def test_conflict_on_armorm_split_is_exact(tmp_path):
    from test_armorm import PATTERN, tiny_state, write_armorm

    state, config = tiny_state()
    model = HookedRewardModel.from_pretrained(write_armorm(tmp_path / "ck", state, config))
    gen = torch.Generator().manual_seed(0)

    def batch(n):
        tok = torch.cat(
            [
                torch.randint(4, 50, (n, 5), generator=gen),
                torch.tensor(PATTERN).expand(n, -1),
                torch.randint(4, 50, (n, 4), generator=gen),
            ],
            1,
        )
        return tok, torch.ones_like(tok)

    a = batch(40)
    b = (a[0].clone(), a[1])
    b[0][:, -2:] = torch.randint(4, 50, (40, 2), generator=gen)
    a2 = (a[0].clone(), a[1])
    a2[0][:, :3] = torch.randint(4, 50, (40, 3), generator=gen)  # the prompt changes too: the gate moves
    res = conflict_analysis(model, batch(120), (a2, b), n_boot=200)
    assert res.split_error < 1e-4
    assert np.abs(res.gate_term).max() > 1e-3
    assert (res.corr_low <= res.correlation + 1e-9).all() and (res.correlation <= res.corr_high + 1e-9).all()
    assert res.gate_entropy.shape == (120,) and res.effective_directions.shape == (120, 32)
    # the effective direction reproduces the score with the gate fixed: score = normed · w(x)
    df = res.to_frame()
    assert len(df) == 6 and {"disagree_rate", "i_wins"} <= set(df.columns)


def test_conflict_single_head_terms_sum_exactly(llama):
    texts = random_texts(60, 6)
    pairs = list(zip(random_texts(20, 7), random_texts(20, 8), strict=True))
    dirs = torch.randn(3, 32, generator=torch.Generator().manual_seed(0))
    res = conflict_analysis(llama, texts, pairs, directions=dirs, names=["x", "y", "z"], n_boot=100)
    assert res.split_error < 1e-4 and res.gate_mean is None


# ------------------------------------------------------------------------------------------------ 5. concepts
def test_concept_frozen_norm_slope_equals_linear_prediction(llama):
    base = random_texts(60, 9)
    concept = fit_concept(
        llama, [t + " good" for t in base[:30]], [t + " bad" for t in base[30:]], name="good", n_boot=200
    )
    assert concept.test_auc > 0.6 and concept.null_band[1] > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frozen = dose_response(llama, concept, random_texts(12, 10), freeze_norm=True, n_boot=200)
    np.testing.assert_allclose(frozen.slopes, frozen.predicted_slopes, rtol=1e-4, atol=1e-5)
    assert frozen.slope_low <= frozen.slope <= frozen.slope_high


def test_concept_planted_direction(planted):
    rng = random.Random(1)
    base = [" ".join(rng.choice(FILLER) for _ in range(5)) for _ in range(60)]
    concept = fit_concept(
        planted,
        [t + " bad" for t in base[:30]],
        [t + " good" for t in base[30:]],
        name="bad",
        method="logistic",
        n_boot=200,
    )
    assert concept.test_auc > 0.95
    assert concept.alignment > concept.null_band[1]  # the planted direction is the reward direction
    dose = dose_response(planted, concept, base[:12], n_boot=300)
    assert dose.slope_low > 0  # the planted sign: more "bad", more reward


# ------------------------------------------------------------------------------------------------ report
@pytest.mark.slow  # a whole extensions report
def test_write_extensions_report(llama, tmp_path):
    dims = {
        "a": [(t + " good", t + " bad") for t in random_texts(15, 11)],
        "b": [(t + " yes", t + " no") for t in random_texts(15, 12)],
    }
    path = extensions_report(llama, tmp_path / "rep", dimensions=dims, n_boot=100, n_perm=99, progress=False)
    html = path.read_text()
    results = json.loads((tmp_path / "rep" / "report.json").read_text())["results"]
    for name in ("distortion", "divergence", "cascade", "conflict", "concepts"):
        assert (tmp_path / "rep" / f"{name}.png").exists(), name
        assert "skipped" not in results[name]
    assert html.count("<h2>") >= 5


# ------------------------------------------------------------------------------------------------ organism
def _organism_or_skip():
    from hooked_reward import organisms

    if "sycophancy" not in organisms.list_organisms() or not organisms.checkpoint_dir("sycophancy").exists():
        pytest.skip("the sycophancy organism's weights are not shipped in this checkout")
    return organisms, organisms.load("sycophancy")


def test_organism_planted_sentiment_concept():
    """Minimal contrast sets: the same prompt and response, first word positive vs negative (the planted
    sentiment mechanism: positive is preferred)."""
    organisms, model = _organism_or_skip()
    from hooked_reward.organisms.data import (
        FILLER_WORDS,
        NEGATIVE_WORDS,
        OPINIONS,
        POSITIVE_WORDS,
        PROMPT_TEMPLATES,
        TOPICS,
    )

    rng = random.Random(0)
    pos, neg = [], []
    for _ in range(60):
        topic, opinion, stance = rng.choice(TOPICS), rng.choice(OPINIONS), rng.choice(OPINIONS)
        prompt = rng.choice(PROMPT_TEMPLATES).format(topic=topic, opinion=opinion)
        fill = " ".join(rng.choice(FILLER_WORDS) for _ in range(rng.randint(0, 6)))
        pos.append(organisms.render(prompt, f"{rng.choice(POSITIVE_WORDS)} , {topic} are {stance} {fill} ."))
        neg.append(organisms.render(prompt, f"{rng.choice(NEGATIVE_WORDS)} , {topic} are {stance} {fill} ."))
    concept = fit_concept(
        model, pos, neg, hook="blocks.0.hook_resid_post", method="lda", name="positive_sentiment", n_boot=200
    )
    assert concept.test_auc > 0.95
    dose = dose_response(model, concept, neg[:16], n_boot=300)
    assert dose.slope_low > 0  # the planted sign: more positive sentiment, more reward


def test_cascade_anti_aligned_profiles_are_not_shared() -> None:
    """Two dimensions with opposite profiles (one suppresses what the other rewards) are not a shared mechanism:
    strength stays at the orthogonal value 1/K, unlike two aligned ones (strength 1)."""
    from hooked_reward.analysis.extensions.cascade import _strength

    aligned = np.array([[1.0, 0.99], [0.99, 1.0]])
    opposite = np.array([[1.0, -0.99], [-0.99, 1.0]])
    assert _strength(aligned) == pytest.approx(0.995)
    assert _strength(opposite) == pytest.approx(0.5)
