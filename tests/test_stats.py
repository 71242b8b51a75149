"""Known-answer tests for hooked_reward.analysis.stats (hand-computed values, coverage, degenerate cases)."""

import math

import numpy as np
import pytest

from hooked_reward.analysis.stats import (
    benjamini_hochberg,
    bootstrap_ci,
    bootstrap_items_ci,
    cohens_d,
    effect_is_degenerate,
    paired_effect,
    sign_flip_test,
)


def test_cohens_d_hand_computed():
    # mean 1, sd (ddof=1) = sqrt(0.25 + 0.25) = 0.7071 -> d = sqrt(2)
    assert cohens_d(np.array([0.5, 1.5])) == pytest.approx(math.sqrt(2), rel=1e-12)
    assert cohens_d(np.array([-0.5, -1.5])) == pytest.approx(-math.sqrt(2), rel=1e-12)


def test_cohens_d_zero_sd():
    assert math.isnan(cohens_d(np.zeros(10)))  # no effect, no spread: undefined, not 0
    consistent = np.full(10, 0.25)
    assert cohens_d(consistent) == math.inf  # perfectly consistent: flagged as infinite, never 0
    assert cohens_d(-consistent) == -math.inf
    assert effect_is_degenerate(consistent)
    assert not effect_is_degenerate(np.array([0.5, 1.5]))
    # float noise around a constant shift is still "consistent", not "no effect"
    noisy = np.float32(0.3) + np.zeros(8, dtype=np.float32)
    assert cohens_d(noisy) == math.inf


def test_sign_flip_exact_hand_computed():
    # sign patterns of (0.5, 1.5) have means (1, 0.5, -0.5, -1): two-sided p = 2 * 1/4
    assert sign_flip_test(np.array([0.5, 1.5])) == pytest.approx(0.5)
    # ten positive values: only the all-plus pattern (and all-minus) is as extreme: p = 2 / 2**10
    assert sign_flip_test(np.arange(1.0, 11.0)) == pytest.approx(2 / 1024)
    assert sign_flip_test(np.zeros(5)) == 1.0
    # one-sided
    assert sign_flip_test(np.array([0.5, 1.5]), alternative="greater") == pytest.approx(0.25)


def test_sign_flip_random_has_plus_one_correction():
    x = np.full(40, 1.0)  # 2**40 > 1e5: random flips; nothing as extreme except by chance
    p = sign_flip_test(x, n_resamples=10_000, seed=1)
    assert p > 0  # never exactly zero
    assert p <= 2 * 2 / 10_001 + 1e-12


def test_bootstrap_ci_degenerate_and_small():
    assert bootstrap_ci(np.full(20, 0.3)) == pytest.approx((0.3, 0.3))
    lo, hi = bootstrap_ci(np.array([1.0]))
    assert math.isnan(lo) and math.isnan(hi)


def test_bootstrap_ci_coverage():
    """BCa 95% interval of the mean covers the true mean in roughly 95% of repeated samples."""
    rng = np.random.default_rng(0)
    reps, n, mu = 200, 30, 0.3
    hits = 0
    for r in range(reps):
        x = rng.normal(mu, 1.0, n)
        lo, hi = bootstrap_ci(x, n_resamples=1000, seed=r)
        hits += lo <= mu <= hi
    assert 0.88 <= hits / reps <= 0.99


def test_bootstrap_paired_statistic():
    rng = np.random.default_rng(0)
    a = rng.normal(size=50)
    b = a + 0.1 * rng.normal(size=50)

    def corr(x, y, axis=-1):
        xc = x - x.mean(axis=axis, keepdims=True)
        yc = y - y.mean(axis=axis, keepdims=True)
        return (xc * yc).sum(axis) / np.sqrt((xc**2).sum(axis) * (yc**2).sum(axis))

    lo, hi = bootstrap_ci((a, b), corr, vectorized=True, n_resamples=999)
    r = corr(a, b)
    assert lo <= r <= hi and lo > 0.9


def test_bootstrap_items():
    x = np.arange(10.0)
    lo, hi = bootstrap_items_ci(10, lambda idx: x[idx].mean(), n_resamples=500)
    assert lo < 4.5 < hi


def test_benjamini_hochberg():
    p = np.array([0.01, 0.04, 0.03, 0.5])
    # sorted: 0.01, 0.03, 0.04, 0.5 -> raw 0.04, 0.06, 0.0533, 0.5; cumulative min from the top makes
    # rank 2 take min(0.06, 0.0533)
    expected = np.array([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.5])
    np.testing.assert_allclose(benjamini_hochberg(p), expected)
    out = benjamini_hochberg([0.01, np.nan])
    assert out[0] == pytest.approx(0.01) and math.isnan(out[1])


def test_paired_effect_bundle():
    e = paired_effect(np.array([0.5, 1.5]))
    assert e.n == 2 and e.mean == 1.0 and e.d == pytest.approx(math.sqrt(2)) and e.p == pytest.approx(0.5)


def test_sign_flip_edge_cases() -> None:
    """One pair: p = 1 two-sided (both sign patterns are as extreme), 0.5 one-sided toward it; NaN Δ: NaN, not 0
    (when propagating; the default raises, see test_stats_degenerate.py);
    the random-flip floor (2e-5) stays below the exact floor at n = 16, so more pairs never raise the minimum p."""
    assert sign_flip_test(np.array([1.0])) == 1.0
    assert sign_flip_test(np.array([1.0]), alternative="greater") == 0.5
    assert sign_flip_test(np.array([1.0]), alternative="less") == 1.0
    assert math.isnan(sign_flip_test(np.array([1.0, 2.0, math.nan]), nan_policy="propagate"))
    assert math.isnan(bootstrap_ci(np.array([1.0, 2.0, math.nan]), nan_policy="propagate")[0])
    assert sign_flip_test(np.ones(17)) <= sign_flip_test(np.ones(16)) == pytest.approx(2 / 2**16)
