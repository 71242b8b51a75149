"""Faithfulness study: statistics on a hand-checked case, a planted mechanism and its random-direction null."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import build_hf_model, load_tiny
from scipy import stats as sps

from hooked_reward import HookedRewardModel, InputError
from hooked_reward.analysis.faithfulness import faithfulness_study, recovery_control

PAIRS = [
    ("the cat is very good", "the dog is not bad"),
    ("a good answer yes", "a bad answer no"),
    ("the dog was great", "the dog was awful"),
    ("thanks good cat", "thanks bad cat"),
]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> HookedRewardModel:
    return load_tiny(build_hf_model("gpt2"), tmp_path_factory.mktemp("gpt2"))


def test_study_statistics_match_scipy(model):
    res = faithfulness_study(model, PAIRS, by="component", n_resamples=999, progress=False)
    assert res.attribution.shape == res.patching.shape == (len(PAIRS), 2 * model.cfg.n_layers)
    for i in range(len(PAIRS)):
        expect = sps.spearmanr(res.attribution[i].numpy(), res.patching[i].numpy()).statistic
        assert float(res.rho[i]) == pytest.approx(float(expect), abs=1e-6)
    finite = res.rho[torch.isfinite(res.rho)].numpy()
    assert res.mean == pytest.approx(float(np.mean(finite)), abs=1e-6)
    assert res.ci[0] <= res.mean <= res.ci[1]
    # exact sign-flip over 2^4 patterns: two-sided p is at least 2/16 for 4 pairs
    assert res.p_sign_flip >= 2 / 16 - 1e-9
    assert res.p_wilcoxon == pytest.approx(float(sps.wilcoxon(finite).pvalue))
    # the last MLP's patching effect is its direct effect exactly up to the final norm: same sign as ΔDRA
    assert len(res.to_frame()) == len(PAIRS)
    import matplotlib

    matplotlib.use("Agg")
    res.plot()


def test_heads_granularity_and_input_errors(model):
    res = faithfulness_study(model, PAIRS[:2], by="head", n_resamples=199, progress=False)
    assert res.components[:2] == ["L0H0", "L0H1"] and res.patching.shape[1] == model.cfg.n_layers * model.cfg.n_heads
    with pytest.raises(InputError):
        faithfulness_study(model, PAIRS, by="neuron", progress=False)
    with pytest.raises(InputError, match="different lengths"):
        faithfulness_study(model, [("the cat is good", "the cat is very good")], progress=False)


def test_planted_head_is_recovered_and_random_directions_give_the_null(model):
    before = model.blocks[1].attn.o.original_component.weight.detach().clone()
    ctrl = recovery_control(model, PAIRS, layer=1, head=2, scale=1.0, n_null=3)
    assert ctrl.planted_rank == 1 and ctrl.planted_share > 0.3
    # along random directions (matched norm, orthogonal to the readout) the head is unremarkable:
    # below the uniform share 1/8 and not ranked first
    assert all(s < 1 / 8 for s in ctrl.null_shares) and all(r > 1 for r in ctrl.null_ranks)
    assert torch.equal(model.blocks[1].attn.o.original_component.weight, before)  # restored
    assert len(ctrl.to_frame()) == 4
