"""Tests for the probe suite: generators, sign convention, statistics on stand-ins, chat templates (no
doubled BOS), localisation on a tiny model, the report, and known answers on the sycophancy organism."""

from __future__ import annotations

import json
import math
import zlib

import numpy as np
import pytest
import torch
from conftest import build_hf_model, load_tiny, word_tokenizer

from hooked_reward import CheckpointError, HookedRewardModel
from hooked_reward.analysis.probes import (
    FACTS,
    Factor,
    default_factors,
    load_pairs_jsonl,
    make_pairs,
    render_and_tokenize,
    run_probe_suite,
    verdict,
)
from hooked_reward.analysis.stats import sign_flip_min_p, sign_flip_test
from hooked_reward.report import write_probe_report


def _noise(text: str, sd: float = 1.0) -> float:
    """Deterministic per-text N(0, sd²) noise (a stand-in RM's idiosyncrasies)."""
    return float(np.random.default_rng(zlib.crc32(text.encode())).normal(0, sd))


def length_rm(texts):
    """Stand-in RM with a planted verbosity bias: +0.15 per word, plus per-text noise."""
    return np.array([0.15 * len(t.split()) + _noise(t) for t in texts])


# ----------------------------------------------------------------------------------------------- generators
def test_generators_defaults_and_seed():
    factors = default_factors()
    required = {"length", "sycophancy", "formatting", "confident_tone", "repetition", "flattery"}
    assert required <= set(factors) and len(factors) >= len(required) + 2
    pairs = make_pairs()
    assert all(len(v) >= 30 for v in pairs.values())
    assert make_pairs(["length"], seed=3) == make_pairs(["length"], seed=3)
    assert make_pairs(["length"], seed=3) != make_pairs(["length"], seed=4)
    answers = {f.answer for f in FACTS}
    for name, ps in pairs.items():
        for p in ps:
            # truth held fixed: both sides state the same answer sentence of the same fact
            fact = FACTS[p.meta["fact"]]
            assert fact.answer in p.biased and fact.answer in p.neutral, name
            assert fact.answer in answers
            if factors[name].match_length:
                assert abs(len(p.biased.split()) - len(p.neutral.split())) <= 1, (name, p)
            assert p.biased != p.neutral


def test_factor_names_describe_biased_side():
    ps = make_pairs(["length", "flattery", "emoji", "caution", "sycophancy"], n_pairs=5)
    assert all(len(p.biased.split()) > len(p.neutral.split()) + 2 for p in ps["length"])
    assert all("!" in p.biased and "!" not in p.neutral for p in ps["flattery"])
    assert all(any(ord(c) > 0x2000 for c in p.biased) and p.neutral.isascii() for p in ps["emoji"])
    assert all(("expert" in p.biased or "professional" in p.biased or "source" in p.biased) for p in ps["caution"])
    assert all(any(w in p.biased for w in ("right", "correct", "agree")) for p in ps["sycophancy"])
    assert verdict(0.3, True, "emoji") == "rewards emoji"
    assert verdict(-0.3, True, "emoji") == "penalises emoji"
    assert verdict(0.3, False, "emoji") == "no significant effect"


def test_user_factors_templates_and_jsonl(tmp_path):
    f = Factor.from_templates(
        "exclamation", biased="{answer}!!! {explanation}", neutral="{answer} {explanation}", phrase="exclamation marks"
    )
    ps = f.pairs(30, seed=0)
    assert len(ps) == 30 and all("!!!" in p.biased for p in ps)
    with pytest.raises(ValueError, match="unknown slot"):
        Factor.from_templates("bad", biased="{nope}", neutral="{answer}")
    path = tmp_path / "pairs.jsonl"
    rows = [{"factor": "shouting", "prompt": "q", "biased": "ANSWER", "neutral": "answer", "id": i} for i in range(3)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    loaded = load_pairs_jsonl(path)
    assert list(loaded) == ["shouting"] and loaded["shouting"][0].biased == "ANSWER"
    assert loaded["shouting"][2].meta == {"id": 2}


# ----------------------------------------------------------------------------------------------- statistics
def test_sign_convention_and_correction_on_stand_in():
    res = run_probe_suite(length_rm, n_pairs=30, progress=False, n_boot=1999)
    assert res["length"].significant and res["length"].mean > 0
    assert res["length"].verdict == "rewards longer (padded) responses"
    # length-matched factors carry no planted effect: none significant after BH
    for s in res.stats:
        if s.factor not in ("length", "emoji"):
            assert not s.significant, (s.factor, s.p, s.q)
            assert s.verdict == "no significant effect"
    frame = res.to_frame()
    assert frame.loc["length", "ci_low"] > 0 and frame.loc["length", "q"] <= 0.05
    assert res.reward_sd > 0 and math.isclose(res["length"].std_mean, res["length"].mean / res.reward_sd)

    def anti_emoji_rm(texts):
        return np.array([-1.0 * sum(ord(c) > 0x2000 for c in t) + _noise(t, 0.3) for t in texts])

    res2 = run_probe_suite(anti_emoji_rm, factors=["emoji", "formatting"], progress=False, n_boot=999)
    assert res2["emoji"].verdict == "penalises emoji" and res2["emoji"].ci_high < 0
    assert not res2["formatting"].significant


def test_perfectly_consistent_bias_is_flagged_not_zero():
    def exclaim_rm(texts):  # exactly +0.5 per text containing "!", nothing else
        return np.array([0.5 * ("!" in t) for t in texts])

    res = run_probe_suite(exclaim_rm, factors=["flattery", "formatting"], progress=False, n_boot=999)
    fl, fm = res["flattery"], res["formatting"]
    assert fl.d == math.inf and fl.degenerate and fl.significant and fl.verdict == "rewards flattering the user"
    assert fl.ci_low == pytest.approx(0.5) and fl.ci_high == pytest.approx(0.5)
    assert fl.p < 1e-3  # 2**30 > 1e5: random flips, +1 correction
    assert math.isnan(fm.d) and fm.p == 1.0 and not fm.significant


# ----------------------------------------------------------------------------------------------- a real model
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_tiny(build_hf_model("llama", seed=0), tmp_path_factory.mktemp("probe_tiny"))


def test_chat_template_no_doubled_bos(tmp_path):
    path = tmp_path / "chat"
    build_hf_model("llama", seed=0).save_pretrained(path)
    tok = word_tokenizer()
    tok.chat_template = "{{ bos_token }}{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
    tok.save_pretrained(path)
    model = HookedRewardModel.from_pretrained(path)
    assert model.tokenizer.chat_template
    tokens, mask = render_and_tokenize(model, ["the cat", "a dog"], ["is good", "is bad"])
    bos = model.tokenizer.bos_token_id
    for row, m in zip(tokens, mask, strict=True):
        ids = row[m.bool()].tolist()
        assert ids.count(bos) == 1 and ids[0] == bos
    user_id = model.tokenizer.convert_tokens_to_ids("the")
    assert user_id in tokens[0].tolist()
    res = run_probe_suite(model, factors=["length"], n_pairs=4, progress=False, localise=False, n_boot=199)
    assert res.stats[0].n == 4


def test_localisation_sums_and_report(tiny, tmp_path):
    res = run_probe_suite(tiny, factors=["length", "emoji"], n_pairs=8, progress=False, alpha=1.0, n_boot=199)
    assert set(res.localisation) == {"length", "emoji"}  # alpha=1: everything is "significant"
    for name, loc in res.localisation.items():
        assert loc.dra.sum() == pytest.approx(res[name].mean, abs=1e-4)  # DRA of Δ sums to mean Δ
        assert loc.head_labels and len(loc.head_dra) == len(loc.head_patch)
        assert np.isfinite(loc.patch).sum() >= 2 * tiny.cfg.n_layers
        assert -1 <= loc.spearman <= 1 or math.isnan(loc.spearman)
        assert loc.to_frame().shape[0] == len(loc.components) + len(loc.head_labels)
    html = write_probe_report(res, tmp_path / "report")
    assert html.exists()
    for f in ("forest.png", "report.json", "localisation_length.png"):
        assert (tmp_path / "report" / f).exists()
    data = json.loads((tmp_path / "report" / "report.json").read_text())["results"]["probes"]
    assert {f["factor"] for f in data["factors"]} == {"length", "emoji"}


def test_patching_identity(tiny):
    """Patching a component from a run into the same run changes nothing (the patch is aligned)."""
    from hooked_reward.analysis.probes.localise import localise_pairs

    tok, mask = render_and_tokenize(tiny, ["the cat", "a"], ["is good very", "no"])
    loc = localise_pairs(tiny, (tok, mask), (tok, mask), "same")
    np.testing.assert_allclose(loc.patch, 0.0, atol=1e-5)
    np.testing.assert_allclose(loc.dra, 0.0, atol=1e-6)


# ----------------------------------------------------------------------------------------------- the organism
def _organism():
    organisms = pytest.importorskip("hooked_reward.organisms")
    if not hasattr(organisms, "load"):
        pytest.skip("organisms.load has not landed")
    try:
        return organisms, organisms.load("sycophancy")
    except (FileNotFoundError, OSError, CheckpointError) as err:
        pytest.skip(f"sycophancy organism weights not available: {err}")


@pytest.mark.slow  # the whole probe suite on the organism
def test_organism_known_answers():
    """Planted factors are significant, rewarded, and localised to the card's components; placebo factors
    (two draws from the same pool on each side) are not significant after BH."""
    organisms, model = _organism()
    from hooked_reward.organisms.factors import organism_factors

    res = run_probe_suite(
        model, factors=organism_factors(), n_pairs=30, render=organisms.render, progress=False, n_boot=1999
    )
    for planted in ("length", "sycophancy", "positive_words"):
        s = res[planted]
        assert s.significant and s.mean > 0 and s.verdict.startswith("rewards"), (planted, s)
        assert s.std_mean > 0.5
    for placebo in ("opener_choice", "filler_choice"):
        assert not res[placebo].significant, res[placebo]
    # "i believe" vs "i think" was never contrasted in training: any effect is incidental and negligible in size
    assert abs(res["prompt_phrasing"].std_mean) < 0.1
    card = organisms.card("sycophancy")
    checked = 0
    for planted, mech in (("length", "length"), ("sycophancy", "sycophancy"), ("positive_words", "sentiment")):
        carriers = _card_components(card, mech)
        if not carriers:  # the card found no single carrier (a distributed mechanism): nothing to match
            continue
        loc = res.localisation[planted]
        top = {c for heads in (False, True) for m in ("dra", "patch") for c in loc.top(2, heads=heads, measure=m)}
        assert top & carriers, (planted, top, carriers)
        checked += 1
    assert checked >= 1, "the card lists carriers for no mechanism"


def _card_components(card, mechanism: str) -> set[str]:
    """Component names the card lists for a mechanism, mapped to attribution labels ("0_attn_out", "L0H1")."""
    import re

    entry = card.get("mechanisms", {}).get(mechanism, {}) if isinstance(card, dict) else {}
    names = entry.get("components", []) if isinstance(entry, dict) else []
    out = set()
    for n in names:
        n = n if isinstance(n, str) else n.get("name", "")
        if m := re.match(r"blocks\.(\d+)\.attn\.head\.(\d+)", n):
            out.add(f"L{m.group(1)}H{m.group(2)}")
        elif m := re.match(r"blocks\.(\d+)\.(attn|mlp)$", n):
            out.add(f"{m.group(1)}_{m.group(2)}_out")
    return out


def test_patching_module_matches_batched_fallback(tiny):
    """Reward-position patching through analysis.patching.run_patched (row by row, unpadded) equals one batched
    run of the padded pairs with `patching.reward_position_hook` at each row's reward position."""
    from hooked_reward.analysis.patching import reward_position_hook
    from hooked_reward.analysis.probes.localise import _patch_at_reward

    b = render_and_tokenize(tiny, ["the cat", "a dog is"], ["is good very very", "no"])
    n = render_and_tokenize(tiny, ["the cat", "a dog is"], ["is bad", "yes please thanks"])
    with torch.no_grad():
        rn = tiny(n[0], attention_mask=n[1])
    items = [("blocks.0.hook_attn_out", None), ("blocks.1.hook_mlp_out", None), ("blocks.1.attn.hook_z", 2)]
    via_module = _patch_at_reward(tiny, b, n, rn, items, None)
    _, cb = tiny.run_with_cache(b[0], attention_mask=b[1], positions="reward")
    pos = tiny.reward_positions(n[1], n[0])
    batched = []
    for h, hd in items:
        source = cb[h][:, 0] if hd is None else cb[h][:, 0, hd]
        with torch.no_grad(), tiny.hooks(fwd_hooks=[(h, reward_position_hook(pos, source, index=hd))]):
            batched.append(float((tiny(n[0], attention_mask=n[1]) - rn).mean()))
    np.testing.assert_allclose(via_module, batched, atol=1e-5)
    assert np.abs(batched).max() > 1e-3  # the patches do something


def test_too_few_pairs_is_said_not_called_null():
    """At n = 5 the exact two-sided sign-flip test cannot go below 2 / 2**5 = 0.0625, so a factor with a CI
    excluding 0 and a large d must not be called "no significant effect" (issue 29)."""
    assert sign_flip_min_p(5) == pytest.approx(2 / 32)
    assert sign_flip_min_p(6) == pytest.approx(2 / 64)
    assert sign_flip_min_p(5, alternative="greater") == pytest.approx(1 / 32)
    assert sign_flip_min_p(30) == pytest.approx(2 / 100_000)  # random flips: +1 correction, two-sided
    assert sign_flip_min_p(1) == 1.0 and math.isnan(sign_flip_min_p(0))
    # the exact test reaches its floor: 5 positive Δ are the single most extreme pattern
    assert sign_flip_test(np.array([1.0, 2.0, 1.5, 3.0, 2.5])) == pytest.approx(sign_flip_min_p(5))

    def exclaim_rm(texts):  # -1 per "!" and some noise: a strong, consistent effect
        return np.array([-1.0 * ("!" in t) + _noise(t, 0.2) for t in texts])

    small = run_probe_suite(exclaim_rm, factors=["flattery"], n_pairs=5, progress=False, n_boot=999)["flattery"]
    assert small.n == 5 and small.ci_high < 0 and small.d < -2  # a clear effect...
    assert small.min_p == pytest.approx(0.0625) and not small.significant  # ...that the test cannot reject at 5
    assert small.verdict.startswith("too few pairs to test (n=5: the smallest attainable p is 0.0625 > 0.05")
    assert "--n-pairs 6" in small.verdict
    enough = run_probe_suite(exclaim_rm, factors=["flattery"], n_pairs=8, progress=False, n_boot=999)["flattery"]
    assert enough.min_p == pytest.approx(2 / 2**8) and enough.verdict == "penalises flattering the user"
