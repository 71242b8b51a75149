"""Reward-term conflict on the shipped ArmoRM organism (issue 15): the planted helpfulness-brevity conflict.

The organism's objective heads regress planted ratings (``helpfulness = facts / 3``, ``brevity = -words / 6``,
see ``organisms/armorm/card.json``). A fact is a word, so over the held-out responses the two ratings are
anti-correlated: that is the planted conflict, and it is a property of the objective scores over texts. The
known answer is the correlation of the planted (transformed) ratings on the same texts, computed here from the
training script's rating function, not from the model.

Numbers on the shipped weights (1465 distinct held-out texts, 999 bootstrap resamples): transformed scores
``t = r T`` correlate at -0.488 (95% CI [-0.529, -0.449]; planted ratings -0.489); raw objective rewards at
-0.613 (planted -0.614). The plain cosine of the two objective rows (Sigma = I) is +0.16: the conflict is in
what the texts make the objectives read, not in the directions alone, which is why it is tested on data.
On helpfulness and brevity pairs the two objectives' terms of Delta score have opposite signs on every pair
and the gate decides the winner (helpfulness on 'explain' prompts, brevity on 'briefly' prompts).
"""

from __future__ import annotations

import numpy as np
import pytest

from hooked_reward import organisms
from hooked_reward.analysis.extensions import conflict_analysis

_WEIGHTS = organisms.checkpoint_dir("armorm") / "model.safetensors" if "armorm" in organisms.REGISTRY else None
_SHIPPED = _WEIGHTS is not None and _WEIGHTS.is_file()
pytestmark = pytest.mark.skipif(
    not _SHIPPED,
    reason="the ArmoRM organism's weights are not shipped in this checkout",
)

HELP, BREV = 0, 1  # objective order: helpfulness, brevity, safety, politeness


@pytest.fixture(scope="module")
def armorm() -> tuple:
    """The organism, its held-out texts (each distinct rendered response once), planted ratings, and pairs."""
    from hooked_reward.organisms.armorm.train import ratings, transform_matrix

    model = organisms.load("armorm")
    pairs = organisms.load_pairs("armorm")
    seen: dict[str, tuple[str, list[str]]] = {}
    for p in pairs:
        for side in ("chosen", "rejected"):
            seen[organisms.render(p["prompt"], p[side])] = (p["intent"], p[side].split())
    texts = sorted(seen)
    planted = np.array([ratings(*seen[t]) for t in texts])
    return model, texts, planted, transform_matrix().double().numpy(), pairs


def _pairs(pairs: list[dict], mechanism: str) -> list[tuple[str, str]]:
    return [
        (organisms.render(p["prompt"], p["chosen"]), organisms.render(p["prompt"], p["rejected"]))
        for p in pairs
        if p["mechanism"] == mechanism
    ]


def test_planted_helpfulness_brevity_conflict_has_negative_correlation(armorm):
    model, texts, planted, transform, pairs = armorm
    help_pairs, brev_pairs = _pairs(pairs, "helpfulness"), _pairs(pairs, "brevity")
    res = conflict_analysis(model, texts, help_pairs + brev_pairs, n_boot=999, seed=0)
    assert res.names[:2] == ["helpfulness", "brevity"] and res.meta["gated"] and res.meta["n_texts"] == len(texts)

    # 1. the transformed objective scores (what the gate combines) anti-correlate; the CI excludes 0
    rho, lo, hi = res.correlation[HELP, BREV], res.corr_low[HELP, BREV], res.corr_high[HELP, BREV]
    assert hi < 0 and lo <= rho <= hi, (rho, lo, hi)
    assert rho < -0.3, rho
    # ...and equals the planted ratings' correlation on the same texts (the known answer)
    known = np.corrcoef((planted @ transform).T)[HELP, BREV]
    assert known < -0.3 and abs(rho - known) < 0.03, (rho, known)
    assert lo - 0.01 <= known <= hi + 0.01, (known, lo, hi)

    # 2. the pair split is exact, and on these pairs the two objectives always pull opposite ways
    assert res.split_error < 1e-4
    conflict = next(c for c in res.conflicts if (c["i"], c["j"]) == ("helpfulness", "brevity"))
    assert conflict["disagree_rate"] > 0.95, conflict
    # 3. the gate picks the winner: helpfulness on 'explain' pairs, brevity on 'briefly' pairs
    n = len(help_pairs)
    for rows, winner, loser in ((slice(0, n), HELP, BREV), (slice(n, None), BREV, HELP)):
        terms, delta = res.terms[rows], res.delta[rows]
        assert (delta > 0).all()  # the organism gets every such pair right (card: accuracy 1.0)
        assert (terms[:, winner] > 0).mean() > 0.95 and (terms[:, loser] < 0).mean() > 0.95
        assert terms[:, winner].mean() > 10 * abs(terms[:, loser].mean())


def test_raw_objective_rewards_reproduce_planted_conflict(armorm):
    """Without the transform (T adds 0.25 x brevity to helpfulness) the anti-correlation is stronger, as planted."""
    model, texts, planted, _, _ = armorm
    res = conflict_analysis(model, texts, use_transform=False, n_boot=299, seed=1)
    rho, hi = res.correlation[HELP, BREV], res.corr_high[HELP, BREV]
    known = np.corrcoef(planted.T)[HELP, BREV]
    assert hi < 0 and abs(rho - known) < 0.03, (rho, hi, known)
