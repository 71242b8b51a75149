"""Probes on the user's data and the out-of-domain check of the built-in probes (issue 36 item 3)."""

from __future__ import annotations

import math

import pytest
import torch

from hooked_reward import organisms
from hooked_reward.analysis.probes import make_pairs, run_probe_suite
from hooked_reward.analysis.probes.domain import domain_check, pairs_by_label
from hooked_reward.errors import InputError
from hooked_reward.pairs import PreferencePair, as_pairs


@pytest.fixture(scope="module")
def organism():
    return organisms.load("sycophancy"), organisms.load_pairs("sycophancy")


def _rendered(model, bundled) -> list[PreferencePair]:
    return [p.rendered(model, render=organisms.render) for p in as_pairs(bundled, where="bundled")]


def test_builtin_probes_are_out_of_a_small_vocabularys_domain(organism) -> None:
    model, bundled = organism
    probes = [p for ps in make_pairs(n_pairs=4).values() for p in ps]
    texts = [model.render_chat(p.prompt, p.biased) for p in probes]
    tok = model.tokenizer
    ids = [
        i
        for t in texts
        for i in model.tokenize([t])[0][0].tolist()
        if i not in set(tok.all_special_ids) - {tok.unk_token_id}
    ]
    expect = sum(i == tok.unk_token_id for i in ids) / len(ids)  # by hand: the share of unknown tokens
    domain = [(p.chosen, p.rejected) for p in _rendered(model, bundled)[:40]]
    check = domain_check(model, texts, domain_pairs=domain)
    assert check.unknown_share == pytest.approx(expect)
    assert check.unknown_share > 0.05 and check.out_of_domain
    assert "unknown to the tokenizer" in check.caveat()
    with torch.no_grad():
        margins = [float(model([c])[0] - model([r])[0]) for c, r in domain]
    assert check.baseline_margin == pytest.approx(sum(margins) / len(margins), abs=1e-5)


def test_the_models_own_texts_are_in_its_domain(organism) -> None:
    model, bundled = organism
    rendered = _rendered(model, bundled)
    check = domain_check(
        model, [p.chosen for p in rendered[40:80]], domain_pairs=[(p.chosen, p.rejected) for p in rendered[:40]]
    )
    assert check.unknown_share == 0 and not check.out_of_domain and check.caveat() == ""
    assert math.isfinite(check.z) and abs(check.z) < 3


def test_labelled_pairs_are_probe_factors(organism) -> None:
    """One factor per label; Δ = r(chosen) − r(rejected), checked by hand."""
    model, bundled = organism
    rendered = _rendered(model, bundled)[:24]
    factors, phrases = pairs_by_label(rendered)
    assert set(factors) == {p.label for p in rendered}
    result = run_probe_suite(
        model, factors=[], pairs=factors, phrases=phrases, localise=False, n_boot=199, progress=False
    )
    for label, ps in factors.items():
        with torch.no_grad():
            by_hand = [float(model([p.biased])[0] - model([p.neutral])[0]) for p in ps]
        assert result.deltas[label] == pytest.approx(by_hand, abs=1e-5)
    with pytest.raises(InputError, match="no label"):
        pairs_by_label([PreferencePair("", "a b", "a c")])


def test_out_of_domain_verdicts_are_marked_in_the_report(organism, tmp_path) -> None:
    from hooked_reward.analysis.probes.domain import mark_out_of_domain
    from hooked_reward.report.probes import write_probe_report

    model, bundled = organism
    factors = ["flattery", "formatting"]
    result = run_probe_suite(model, factors=factors, n_pairs=6, localise=False, n_boot=199, progress=False)
    texts = [model.render_chat(p.prompt, p.biased) for ps in result.pairs.values() for p in ps]
    check = domain_check(model, texts)
    assert check.out_of_domain
    mark_out_of_domain(result, check, factors)
    assert all(s.verdict.endswith("(out of domain)") for s in result.stats)
    html = write_probe_report(result, tmp_path / "rep").read_text()
    assert "Out of the model" in html and "unknown to the tokenizer" in html and "(out of domain)" in html
