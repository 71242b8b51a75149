"""Issue 7 known answer: the sycophancy organism's planted mechanisms as top features of an SAE trained on it.

What "a planted mechanism shows up as a top feature" can honestly mean on this organism. The SAE reads the
final residual at the reward position (``blocks.1.hook_resid_post`` at ``<eos>``), where the reward is exactly
linear in the features, so pair attributions (``attribute_pairs``) split each mechanism's Δreward exactly.
That residual is ~3-dimensional on the organism's texts, and the model writes the *sentiment* and *length*
mechanisms onto one direction there (the mean chosen - rejected residual of their pairs has cosine ~0.99;
the card says the same by component: ``blocks.0.attn.head.0`` carries both, "not separable"). No dictionary at
this hook can tell them apart by their effect on the reward, so the known answer is:

* sentiment and length share their top feature (one "preferred response" feature whose activation tracks
  both planted variables over texts, not agreement with the user);
* sycophancy has its own feature among its top three: it moves ≥ 3x more on sycophancy pairs than on
  sentiment or length pairs, and its activation tracks agreement, not sentiment or fillers;
* a few top features carry most of each mechanism's mean Δreward, and patching the features between chosen
  and rejected ranks them as the attribution does (Spearman > 0.5).

Numbers for the shipped SAE (TopK, 16 latents, k=2, seed 0; trained on fresh generator texts, evaluated on the
200 held-out pairs per mechanism): shared top feature f13 (top-3 features hold 96% / 90% of the sentiment /
length mean Δreward); sycophancy-specific f6 (|Δact| 4.41 on sycophancy pairs vs 0.38 / 0.47; activation
r = +0.57 with agreement); patching Spearman 0.95 / 1.00 / 0.98. Over SAE seeds 0-5 the two structural claims
held every time; which feature is top-1 for sycophancy, and whether the shared feature also moves on sycophancy
pairs, depended on the seed (TopK's k=2 competition), so those are not asserted beyond the shipped SAE.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hooked_reward import organisms
from hooked_reward.organisms.data import NEGATIVE_WORDS, POSITIVE_WORDS
from hooked_reward.organisms.sae import load_organism_sae, organism_sae_dir, train_organism_sae
from hooked_reward.sae import FeatureAttribution, attribute_pairs, check_attribution, collect_activations

MECHANISMS = ("sentiment", "length", "sycophancy")
HOOK = "blocks.1.hook_resid_post"

pytestmark = pytest.mark.skipif(
    not (organisms.checkpoint_dir("sycophancy") / "config.json").exists(),
    reason="the sycophancy organism's weights are not shipped in this checkout",
)


@pytest.fixture(scope="module")
def organism() -> tuple:
    """The model and, per mechanism, its held-out (chosen, rejected) texts."""
    model = organisms.load("sycophancy")
    pairs = organisms.load_pairs("sycophancy")
    by_mech = {
        m: (
            [organisms.render(p["prompt"], p["chosen"]) for p in pairs if p["mechanism"] == m],
            [organisms.render(p["prompt"], p["rejected"]) for p in pairs if p["mechanism"] == m],
        )
        for m in MECHANISMS
    }
    return model, by_mech


def _attribute(model, sae, by_mech) -> dict[str, FeatureAttribution]:
    return {m: attribute_pairs(model, sae, c, r, batch_size=256) for m, (c, r) in by_mech.items()}


def _delta_act(atts: dict[str, FeatureAttribution]) -> torch.Tensor:
    """``[3, d_sae]`` mean |activation(chosen) - activation(rejected)| per mechanism's pairs."""
    return torch.stack([atts[m].activations.abs().mean(0) for m in MECHANISMS])


def _structure(atts: dict[str, FeatureAttribution]) -> tuple[int, int, float]:
    """(shared sentiment/length top feature, most sycophancy-specific of sycophancy's top 3, its specificity)."""
    da = _delta_act(atts)
    shared = atts["sentiment"].top(1)[0][0]
    assert atts["length"].top(1)[0][0] == shared, "sentiment and length should share their top feature"
    top3 = [f for f, _ in atts["sycophancy"].top(3)]
    ratio = {f: float(da[2, f] / da[:2, f].max().clamp_min(1e-9)) for f in top3}
    syc = max(ratio, key=ratio.get)
    return shared, syc, ratio[syc]


@pytest.fixture(scope="module")
def shipped(organism) -> tuple:
    model, by_mech = organism
    sae = load_organism_sae("sycophancy", model=model)
    return sae, _attribute(model, sae, by_mech)


def test_shipped_sae_files(organism):
    model, _ = organism
    path = organism_sae_dir("sycophancy")
    assert (path / "cfg.json").is_file() and (path / "sae_weights.safetensors").is_file()
    assert sum(f.stat().st_size for f in path.iterdir()) < 200_000
    sae = load_organism_sae("sycophancy", model=model)
    assert sae.cfg.hook_name == HOOK and sae.cfg.architecture == "topk" and sae.cfg.d_in == model.cfg.d_model


def test_sentiment_and_length_share_one_direction_at_the_reward_position(organism):
    """Why no SAE here can separate them: their pairs move the residual along the same direction."""
    model, by_mech = organism
    mean_delta = {}
    for m, (c, r) in by_mech.items():
        a_c = collect_activations(model, c, HOOK, positions="reward", batch_size=256)
        a_r = collect_activations(model, r, HOOK, positions="reward", batch_size=256)
        mean_delta[m] = (a_c - a_r).mean(0)
    cos = torch.nn.functional.cosine_similarity
    assert float(cos(mean_delta["sentiment"], mean_delta["length"], dim=0)) > 0.95
    for m in ("sentiment", "length"):
        assert abs(float(cos(mean_delta[m], mean_delta["sycophancy"], dim=0))) < 0.5


def test_linear_attribution_is_exact_and_top_features_carry_the_gap(shipped):
    _, atts = shipped
    for m, att in atts.items():
        assert att.method == "linear"
        torch.testing.assert_close(att.values.sum(-1) + att.remainder, att.targets, atol=1e-4, rtol=1e-4)
        gap = float(att.targets.mean())
        assert gap > 2.0, m  # the card's clean mean margins: 2.72 / 2.44 / 3.05
        top3 = [f for f, _ in att.top(3)]
        assert float(att.mean()[top3].sum()) / gap > 0.8, m
        assert abs(float(att.remainder.mean())) / gap < 0.1, m


def test_planted_mechanisms_are_top_features(organism, shipped):
    model, _ = organism
    sae, atts = shipped
    shared, syc, specificity = _structure(atts)
    assert syc != shared and specificity > 3.0
    # the shared feature carries most of the sentiment and length gaps; the sycophancy one much of that gap
    for m in ("sentiment", "length"):
        assert float(atts[m].mean()[shared]) / float(atts[m].targets.mean()) > 0.4, m
    assert float(atts["sycophancy"].mean()[syc]) / float(atts["sycophancy"].targets.mean()) > 0.3

    # what the two features read, over texts (both sides of every held-out pair): planted variables
    pairs = organisms.load_pairs("sycophancy")
    items = sorted({(p["prompt"], p[s]) for p in pairs for s in ("chosen", "rejected")})
    variables = []
    for prompt, response in items:
        words, opinion = response.split(), prompt.split()[-2]
        sentiment = 1 if words[0] in POSITIVE_WORDS else -1 if words[0] in NEGATIVE_WORDS else 0
        variables.append([sentiment, len(words) - 6, float(words[4] == opinion)])  # sentiment, fillers, agrees
    v = np.array(variables, dtype=float)
    acts = collect_activations(
        model, [organisms.render(p, r) for p, r in items], HOOK, positions="reward", batch_size=256
    )
    feats = sae.encode(acts).detach().numpy()
    r_shared = [abs(np.corrcoef(feats[:, shared], v[:, j])[0, 1]) for j in range(3)]
    r_syc = [abs(np.corrcoef(feats[:, syc], v[:, j])[0, 1]) for j in range(3)]
    assert min(r_shared[:2]) > 0.3 and r_shared[2] < 0.2, r_shared
    assert r_syc[2] > 0.4 and max(r_syc[:2]) < 0.2, r_syc


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_patching_confirms_the_ranking(organism, shipped, mechanism):
    model, _ = organism
    sae, atts = shipped
    check = check_attribution(model, sae, atts[mechanism], top_k=8)
    assert check.kind == "patching"
    assert check.spearman > 0.5 and check.spearman_items > 0.5, (check.spearman, check.spearman_items)


@pytest.mark.slow  # trains an SAE per seed
@pytest.mark.parametrize("seed", [1, 2])
def test_structure_holds_for_other_sae_seeds(organism, seed):
    """The recipe, re-run with other seeds: the shared feature and a sycophancy-specific top-3 feature recur."""
    model, by_mech = organism
    sae = train_organism_sae("sycophancy", model, seed=seed)
    shared, syc, specificity = _structure(_attribute(model, sae, by_mech))
    assert syc != shared and specificity > 3.0
