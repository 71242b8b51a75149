"""Degenerate and non-finite cases of every statistic in hooked_reward.analysis.stats, with hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hooked_reward import InputError, NonFiniteError
from hooked_reward.analysis.stats import (
    accuracy,
    agreement,
    benjamini_hochberg,
    bootstrap_ci,
    bootstrap_items_ci,
    bootstrap_mean_ci,
    bootstrap_percentile,
    cka_matrix,
    cohens_d,
    finite_rows,
    kendall,
    linear_cka,
    paired_effect,
    percentile_interval,
    random_cosine_null,
    sign_flip_test,
    spearman,
    spearman_along,
    spearman_test,
)


def test_spearman_ties_hand_computed():
    # average ranks: x -> (1, 2.5, 2.5, 4), y -> (1, 2, 3, 4); centred (-1.5, 0, 0, 1.5), (-1.5, -.5, .5, 1.5):
    # ρ = 4.5 / sqrt(4.5 · 5) = 3 / sqrt(10)
    x, y = np.array([1.0, 2.0, 2.0, 3.0]), np.array([10.0, 20.0, 30.0, 40.0])
    assert spearman(x, y) == pytest.approx(3 / math.sqrt(10), abs=1e-12)
    assert spearman_along(x, y) == pytest.approx(3 / math.sqrt(10), abs=1e-12)
    assert spearman(x, -y) == pytest.approx(-3 / math.sqrt(10), abs=1e-12)
    rho, p = spearman_test(np.arange(5.0), np.arange(5.0))
    assert rho == pytest.approx(1.0) and p == pytest.approx(0.0, abs=1e-12)


def test_spearman_degenerate_is_nan():
    assert math.isnan(spearman([1.0, 2.0], [2.0, 1.0]))  # two points: every ρ would be ±1
    assert math.isnan(spearman([1.0], [1.0]))
    assert math.isnan(spearman([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0]))  # one side all tied
    assert all(math.isnan(v) for v in spearman_test([3.0, 3.0, 3.0], [1.0, 2.0, 3.0]))
    rows = np.stack([np.arange(4.0), np.ones(4)])
    out = spearman_along(rows, np.arange(4.0)[None].repeat(2, 0))
    assert out[0] == pytest.approx(1.0) and math.isnan(out[1])
    assert np.isnan(spearman_along(np.array([[1.0, 2.0]]), np.array([[2.0, 1.0]]))).all()


def test_spearman_non_finite():
    x, y = np.array([1.0, 2.0, math.inf, 4.0, 5.0]), np.arange(5.0)
    with pytest.raises(NonFiniteError, match=r"row\(s\) 2 of 5.*inf.*nan_policy='omit'"):
        spearman(x, y)
    assert spearman(x, y, nan_policy="omit") == pytest.approx(1.0)  # the 4 finite pairs are monotone
    assert math.isnan(spearman(x, y, nan_policy="propagate"))
    with pytest.raises(InputError, match="nan_policy"):
        spearman(x, y, nan_policy="ignore")


def test_cka_of_constant_representations():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 4))
    const = np.tile(rng.normal(size=(1, 4)), (6, 1))  # every input at one point (a fixed reward token)
    assert linear_cka(const, const) == 1.0  # both constant: same (empty) structure, CKA(X, X) = 1
    assert linear_cka(const, 2.0 * const + 1.0) == 1.0
    assert linear_cka(x, const) == 0.0 and linear_cka(const, x) == 0.0  # only one constant: nothing shared
    m = cka_matrix(np.stack([const, x]), np.stack([const, x]))
    np.testing.assert_allclose(m, [[1.0, 0.0], [0.0, 1.0]], atol=1e-12)
    assert not np.isnan(cka_matrix(np.stack([const, x]), np.stack([const, x]), idx=np.array([0, 0, 1]))).any()
    # float32 copies of one row are still constant (the mean's rounding stays below the tolerance)
    noisy = np.tile(np.float32([0.1, 0.7, -0.3]), (5, 1)).astype(np.float64)
    assert linear_cka(noisy, noisy) == 1.0


def test_sign_flip_on_infinite_input_is_never_p0():
    delta = np.array([0.5, 1.5, math.inf])
    with pytest.raises(NonFiniteError, match="row\\(s\\) 2 of 3"):
        sign_flip_test(delta)
    assert math.isnan(sign_flip_test(delta, nan_policy="propagate"))
    assert sign_flip_test(delta, nan_policy="omit") == pytest.approx(0.5)  # (0.5, 1.5): hand-computed 0.5
    with pytest.raises(NonFiniteError):
        sign_flip_test(np.array([-math.inf, -math.inf]))


def test_bootstrap_and_effect_size_refuse_non_finite():
    with pytest.raises(NonFiniteError):
        bootstrap_ci(np.array([1.0, -math.inf, 2.0]))
    assert bootstrap_ci(np.array([0.3, math.nan, 0.3, 0.3]), nan_policy="omit") == pytest.approx((0.3, 0.3))
    with pytest.raises(NonFiniteError, match="row\\(s\\) 1"):
        bootstrap_mean_ci(np.array([[1.0, 2.0], [math.nan, 1.0], [3.0, 4.0]]))
    lo, hi = bootstrap_mean_ci(np.array([[1.0, 2.0], [math.nan, 1.0], [1.0, 2.0]]), nan_policy="omit")
    np.testing.assert_allclose(lo, [1.0, 2.0]) and np.testing.assert_allclose(hi, [1.0, 2.0])
    with pytest.raises(NonFiniteError):
        cohens_d(np.array([1.0, math.inf]))
    assert math.isnan(cohens_d(np.array([1.0, math.inf, 3.0]), nan_policy="propagate"))


def test_accuracy_and_agreement():
    m = np.array([1.0, -1.0, 0.0, 2.0])
    assert accuracy(m) == 0.5  # the tie is not a win
    with pytest.raises(NonFiniteError, match="row\\(s\\) 1 of 3"):
        accuracy(np.array([1.0, math.nan, -1.0]))
    assert accuracy(np.array([1.0, math.nan, -1.0]), nan_policy="omit") == 0.5
    assert math.isnan(accuracy(np.array([1.0, math.nan]), nan_policy="propagate"))
    np.testing.assert_array_equal(agreement([1.0, -2.0, 0.0, 3.0], [2.0, 1.0, 0.0, -1.0]), [1.0, 0.0, 1.0, 0.0])
    with pytest.raises(NonFiniteError, match="margins of the two models"):
        agreement([1.0, math.nan, 1.0], [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(agreement([1.0, math.nan, 1.0], [1.0, 1.0, -1.0], nan_policy="omit"), [1.0, 0.0])


def test_finite_rows_names_rows_and_labels():
    with pytest.raises(NonFiniteError, match=r"rewards: row\(s\) b of 3 are not finite \(-inf\)"):
        finite_rows(np.array([[0.0, 1.0], [-math.inf, 0.0], [1.0, 1.0]]), what="rewards", row_labels="abc")
    ok = finite_rows(np.array([0.0, math.nan]), np.array([math.inf, 1.0]), nan_policy="omit")
    np.testing.assert_array_equal(ok, [False, False])


def test_one_pair_and_min_effect():
    one = paired_effect(np.array([0.7]))
    assert one.n == 1 and one.p == 1.0 and math.isnan(one.d) and math.isnan(one.ci_low)
    assert one.beyond_min_effect is None  # no interval from one pair: nothing to say about a minimum effect
    # a tiny but perfectly consistent shift: significant, yet its CI lies inside (−0.1, 0.1)
    tiny = np.full(20, 0.044)
    e = paired_effect(tiny, min_effect=0.1, n_flips=9999)
    assert e.p < 0.001 and (e.ci_low, e.ci_high) == pytest.approx((0.044, 0.044))
    assert e.negligible is True and e.beyond_min_effect is False and e.min_effect == 0.1
    e = paired_effect(tiny, min_effect=0.01, n_flips=9999)
    assert e.beyond_min_effect is True and e.negligible is False
    e = paired_effect(np.array([-0.5, 0.1, 0.6, 0.2, -0.1, 0.4]), min_effect=0.05, n_boot=999)
    assert e.ci_low < -0.05 < 0.05 < e.ci_high and e.beyond_min_effect is False and e.negligible is False
    with pytest.raises(InputError, match="min_effect"):
        paired_effect(tiny, min_effect=-1.0)
    with pytest.raises(NonFiniteError):
        paired_effect(np.array([1.0, math.inf, 2.0]))
    dropped = paired_effect(np.array([1.0, math.inf, 2.0]), nan_policy="omit", n_boot=999)
    assert dropped.n == 2 and dropped.n_omitted == 1 and dropped.mean == 1.5


def test_bootstrap_percentile_draws_groups_in_order():
    from hooked_reward.analysis.stats import bootstrap_percentile, percentile_interval

    x, y = np.arange(10.0), np.arange(5.0) * 3
    lo, hi = bootstrap_percentile(
        lambda i, j: x[i].mean() - y[j].mean(), (10, 5), n_resamples=300, rng=np.random.default_rng(3)
    )
    rng = np.random.default_rng(3)
    boots = []
    for _ in range(300):
        i = rng.integers(0, 10, 10)
        boots.append(x[i].mean() - y[rng.integers(0, 5, 5)].mean())
    assert (lo, hi) == (np.quantile(boots, 0.025000000000000022), np.quantile(boots, 1 - 0.025000000000000022))
    assert lo < x.mean() - y.mean() < hi
    # a matrix-valued statistic: an interval per entry; a constant entry's interval is the point
    lo, hi = bootstrap_percentile(
        lambda i: np.array([x[i].mean(), 7.0]), 10, n_resamples=50, rng=np.random.default_rng(0)
    )
    assert lo.shape == (2,) and lo[1] == hi[1] == 7.0
    lo, hi = percentile_interval(np.array([[1.0, np.nan], [3.0, np.nan]]), 0.5, ignore_nan=True)
    assert lo[0] == 1.5 and hi[0] == 2.5 and np.isnan(lo[1])


def test_resampling_p_value_hand_computed():
    from hooked_reward.analysis.stats import resampling_p_value

    null = np.array([0.1, 0.5, 0.5, 0.9])
    assert resampling_p_value(null, 0.5) == pytest.approx(4 / 5)  # (1 + three draws ≥ 0.5) / (1 + 4)
    assert resampling_p_value(null, 0.95) == pytest.approx(1 / 5)  # never 0
    assert resampling_p_value(null, 0.5, alternative="less") == pytest.approx(4 / 5)
    with pytest.raises(NonFiniteError):
        resampling_p_value(null, math.inf)
    with pytest.raises(NonFiniteError):
        resampling_p_value(np.array([0.1, math.nan]), 0.2)


@pytest.mark.parametrize(
    ("call", "names"),
    [
        (lambda: benjamini_hochberg([1.5]), "1.5 (index 0)"),
        (lambda: benjamini_hochberg([0.2, np.nan, -0.1]), "-0.1 (index 2)"),
        (lambda: bootstrap_ci(np.arange(5.0), confidence=1.5), "confidence=1.5"),
        (lambda: bootstrap_ci(np.arange(5.0), confidence=0), "confidence=0"),
        (lambda: bootstrap_ci(np.arange(5.0), n_resamples=0), "n_resamples=0"),
        (lambda: bootstrap_ci(np.arange(5.0), method="bca-ish"), "method='bca-ish'"),
        (lambda: bootstrap_ci((np.arange(3.0), np.arange(4.0)), lambda a, b, axis=-1: a.mean(axis)), "[3, 4]"),
        (lambda: bootstrap_mean_ci(np.ones((4, 2)), confidence=True), "confidence=True"),
        (lambda: bootstrap_items_ci(5, lambda i: 1.0, confidence=-1), "confidence=-1"),
        (lambda: bootstrap_percentile(np.mean, 4, n_resamples=3, rng=np.random.default_rng(), confidence=2), "=2"),
        (lambda: percentile_interval(np.ones((4, 2)), confidence=3), "confidence=3"),
        (lambda: random_cosine_null(5, confidence=2.0), "confidence=2.0"),
        (lambda: linear_cka(np.ones((3, 2)), np.ones((4, 2))), "3 inputs and y 4"),
        (lambda: linear_cka(np.ones(3), np.ones(3)), "2-D"),
        (lambda: cka_matrix(np.ones((2, 3, 2)), np.ones((2, 4, 2))), "3 inputs and y 4"),
        (lambda: kendall([1.0, 2.0, 3.0], [1.0, 2.0]), "3 values and y 2"),
        (lambda: spearman_along(np.ones((2, 3)), np.ones((2, 4))), "6 values and y 8"),
        (lambda: agreement([1.0, 2.0], [1.0, 2.0, 3.0]), "2 values and y 3"),
        (lambda: sign_flip_test(np.arange(5.0), alternative="bigger"), "alternative='bigger'"),
        (lambda: sign_flip_test(np.arange(5.0), n_resamples=-1), "n_resamples=-1"),
        (lambda: paired_effect(np.arange(5.0), confidence=95), "confidence=95"),
        (lambda: paired_effect(np.arange(5.0), n_boot=0), "n_boot=0"),
    ],
)
def test_statistics_validate_their_arguments(call, names):
    """Each wrong argument is an InputError naming the argument and its value where it enters (before: raw
    scipy/numpy ValueErrors, an IndexError, or a NaN band for confidence=2)."""
    with pytest.raises(InputError) as err:
        call()
    assert names in str(err.value)


def test_argument_checks_leave_numbers_unchanged():
    # hand-computed: BH of (0.01, 0.04, 0.03) = sorted p·m/rank with the running minimum from the top
    assert benjamini_hochberg([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.04, 0.04])
    assert benjamini_hochberg([0.0, 1.0, np.nan])[:2] == pytest.approx([0.0, 1.0])
    assert linear_cka(np.eye(3), np.eye(3) * 2.0) == pytest.approx(1.0)
