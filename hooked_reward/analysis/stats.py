"""Small, shared statistics helpers: effect sizes, bootstrap intervals, sign-flip tests, FDR control.

Every function here is a thin, documented wrapper over scipy (``scipy.stats.bootstrap``,
``scipy.stats.permutation_test``, ``scipy.stats.false_discovery_control``) that fixes the conventions the
analyses rely on and handles the degenerate cases scipy leaves as warnings or NaNs:

* Cohen's d of a paired difference is ``mean(Δ) / sd(Δ)`` with ``ddof=1``.  When ``sd(Δ) == 0`` it is
  **NaN** if the mean is also 0 (no information) and **±inf** if the mean is nonzero (a perfectly
  consistent effect: the largest possible effect, never "no effect").  ``effect_is_degenerate`` flags this.
* The bootstrap interval of constant data is the point itself (scipy's BCa returns NaN there).
* The sign-flip test is exact (all ``2**n`` sign patterns) when ``2**n <= max_exact``; otherwise it draws
  ``n_resamples`` random sign patterns and scipy adds the +1 correction to numerator and denominator.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from jaxtyping import Float
from scipy import stats

__all__ = [
    "bootstrap_ci",
    "bootstrap_items_ci",
    "bootstrap_mean_ci",
    "cohens_d",
    "effect_is_degenerate",
    "sign_flip_test",
    "benjamini_hochberg",
    "PairedEffect",
    "paired_effect",
]

ZERO_SD_RTOL = 1e-12


def _sd_is_zero(x: np.ndarray) -> bool:
    """True when the spread of ``x`` is zero up to floating-point noise relative to its magnitude."""
    if x.size < 2:
        return True
    scale = max(1.0, float(np.max(np.abs(x))))
    return float(np.std(x, ddof=1)) <= ZERO_SD_RTOL * scale


def cohens_d(delta: Float[np.ndarray, "n"]) -> float:
    """Cohen's d of paired differences: ``mean(Δ) / sd(Δ, ddof=1)``.

    Returns NaN when ``sd == 0`` and ``mean == 0`` (or fewer than 2 values), and ``±inf`` when ``sd == 0`` but
    the mean is nonzero: every pair moved by the same amount, the most consistent effect there is.  Callers
    should report ``effect_is_degenerate(delta)`` alongside so an infinite d is read as "flagged", not as a
    number to average.
    """
    x = np.asarray(delta, dtype=np.float64).ravel()
    if x.size < 2:
        return math.nan
    mean = float(x.mean())
    if _sd_is_zero(x):
        if mean == 0.0 or abs(mean) <= ZERO_SD_RTOL * max(1.0, float(np.max(np.abs(x)))):
            return math.nan
        return math.copysign(math.inf, mean)
    return mean / float(np.std(x, ddof=1))


def effect_is_degenerate(delta: Float[np.ndarray, "n"]) -> bool:
    """True when the differences have zero spread (Cohen's d is NaN or infinite rather than finite)."""
    return _sd_is_zero(np.asarray(delta, dtype=np.float64).ravel())


def bootstrap_ci(
    data: Float[np.ndarray, "n"] | Sequence[Float[np.ndarray, "n"]],
    statistic: Callable[..., np.ndarray] | None = None,
    *,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    method: str = "BCa",
    paired: bool = True,
    vectorized: bool | None = None,
    seed: int | np.random.Generator | None = 0,
) -> tuple[float, float]:
    """Bootstrap confidence interval of ``statistic`` over observations (scipy ``bootstrap``, BCa by default).

    ``data`` is one 1-D array (then ``statistic`` defaults to the mean) or a sequence of equally long arrays
    resampled together when ``paired`` (e.g. the margins of two models on the same pairs).  ``statistic``
    follows scipy's convention: ``statistic(*samples, axis=-1)`` when vectorized.

    Degenerate inputs: fewer than 2 observations give ``(nan, nan)``; when every resample gives the same
    value (e.g. constant data) the interval is that value, where scipy's BCa would return NaN.
    """
    samples = (data,) if isinstance(data, np.ndarray) or np.isscalar(data[0]) else tuple(data)
    samples = tuple(np.asarray(s, dtype=np.float64) for s in samples)
    if statistic is None:
        statistic = np.mean
        vectorized = True
    n = samples[0].shape[0]
    if n < 2 or any(np.isnan(s).any() for s in samples):
        return (math.nan, math.nan)  # too few observations, or a missing value: no interval, not a partial one
    if all(np.ptp(s) == 0 for s in samples) and len(samples) == 1:
        value = float(statistic(samples[0], axis=-1)) if vectorized else float(statistic(samples[0]))
        return (value, value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=stats.DegenerateDataWarning)
        warnings.simplefilter("ignore", category=RuntimeWarning)
        res = stats.bootstrap(
            samples,
            statistic,
            confidence_level=confidence,
            n_resamples=n_resamples,
            method=method,
            paired=paired,
            vectorized=vectorized,
            random_state=seed,
        )
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if math.isnan(lo) or math.isnan(hi):
        # BCa is undefined when the bootstrap distribution is degenerate (all resamples equal, or the
        # statistic is undefined on some resamples). Fall back to the percentile interval of the finite
        # resamples, which is the point itself when all resamples agree.
        dist = np.asarray(res.bootstrap_distribution, dtype=np.float64)
        dist = dist[np.isfinite(dist)]
        if dist.size == 0:
            return (math.nan, math.nan)
        alpha = (1 - confidence) / 2
        lo, hi = float(np.quantile(dist, alpha)), float(np.quantile(dist, 1 - alpha))
    return (lo, hi)


def bootstrap_items_ci(
    n_items: int,
    statistic: Callable[[np.ndarray], float],
    *,
    confidence: float = 0.95,
    n_resamples: int = 1999,
    method: str = "percentile",
    seed: int | np.random.Generator | None = 0,
) -> tuple[float, float]:
    """Bootstrap interval of a statistic of whole items (rows of any array), resampling item indices.

    ``statistic(idx)`` receives an integer index array of length ``n_items`` (with repeats) and returns a
    scalar computed from those rows, e.g. the formation layer of the mean lens curve, or CKA of resampled
    residuals.  This is scipy's ``bootstrap`` run on the index vector; percentile by default because such
    statistics are often discrete or expensive (BCa needs a jackknife of ``n_items`` extra evaluations).
    """
    if n_items < 2:
        return (math.nan, math.nan)
    idx = np.arange(n_items, dtype=np.float64)

    def _stat(i: np.ndarray) -> float:
        return float(statistic(i.astype(np.int64)))

    return bootstrap_ci(
        (idx,),
        _stat,
        confidence=confidence,
        n_resamples=n_resamples,
        method=method,
        vectorized=False,
        seed=seed,
    )


def bootstrap_mean_ci(
    x: Float[np.ndarray, "n ..."],
    *,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    method: str = "BCa",
    seed: int | np.random.Generator | None = 0,
) -> tuple[Float[np.ndarray, "..."], Float[np.ndarray, "..."]]:
    """Bootstrap CI of the mean over the first axis, for every remaining entry at once (e.g. a lens curve
    ``[n_pairs, n_layers]`` gives per-layer intervals).  Resamples rows jointly (scipy ``bootstrap`` with
    ``axis=0``); entries where every row is equal get the point itself, where BCa is undefined."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(0)
    if x.shape[0] < 2:
        nan = np.full_like(mean, np.nan)
        return nan, nan.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=stats.DegenerateDataWarning)
        warnings.simplefilter("ignore", category=RuntimeWarning)
        res = stats.bootstrap(
            (x,),
            np.mean,
            axis=0,
            confidence_level=confidence,
            n_resamples=n_resamples,
            method=method,
            vectorized=True,
            random_state=seed,
        )
    lo = np.asarray(res.confidence_interval.low, dtype=np.float64).copy()
    hi = np.asarray(res.confidence_interval.high, dtype=np.float64).copy()
    bad = ~(np.isfinite(lo) & np.isfinite(hi))
    if bad.any():
        dist = np.asarray(res.bootstrap_distribution, dtype=np.float64)  # [..., n_resamples]
        alpha = (1 - confidence) / 2
        lo[bad] = np.quantile(dist, alpha, axis=-1)[bad]
        hi[bad] = np.quantile(dist, 1 - alpha, axis=-1)[bad]
    const = np.ptp(x, axis=0) == 0
    lo[const], hi[const] = mean[const], mean[const]
    return lo, hi


def sign_flip_test(
    delta: Float[np.ndarray, "n"],
    *,
    alternative: str = "two-sided",
    max_exact: int = 100_000,
    n_resamples: int = 99_999,
    seed: int | np.random.Generator | None = 0,
) -> float:
    """P-value of "mean Δ = 0" against the sign-flip null (paired differences symmetric about 0).

    Uses ``scipy.stats.permutation_test`` with ``permutation_type="samples"`` on the single sample Δ, which
    flips the sign of each observation independently.  With ``2**n <= max_exact`` all sign patterns are
    enumerated (an exact test); otherwise ``n_resamples`` random patterns are drawn and the p-value is
    ``(count + 1) / (n_resamples + 1)``, never 0 (the default 99,999 keeps that floor, 2e-5 two-sided, below the
    exact floor at n = 16, so more pairs never give a larger smallest p). One pair: p = 1 (two-sided; both
    patterns are as extreme). A NaN Δ gives NaN.

    Example: Δ = (0.5, 1.5) has sign-pattern means (1, 0.5, -0.5, -1); two-sided p = 2 · P(mean >= 1) = 0.5.
    """
    x = np.asarray(delta, dtype=np.float64).ravel()
    n = x.size
    if n == 0 or np.isnan(x).any():
        return math.nan  # a missing Δ makes every sign pattern's mean NaN: no test, not p = 0
    if np.all(x == 0):
        return 1.0
    if n == 1:  # two patterns, ±x (scipy refuses one observation)
        toward = (x[0] > 0 and alternative == "greater") or (x[0] < 0 and alternative == "less")
        return 1.0 if alternative == "two-sided" else (0.5 if toward else 1.0)
    exact = n < 63 and 2**n <= max_exact
    res = stats.permutation_test(
        (x,),
        lambda s, axis=-1: np.mean(s, axis=axis),
        permutation_type="samples",
        vectorized=True,
        n_resamples=(2**n if exact else n_resamples),
        alternative=alternative,
        random_state=seed,
    )
    return float(res.pvalue)


def benjamini_hochberg(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (``scipy.stats.false_discovery_control``, method="bh").

    NaN p-values (tests that could not be run) stay NaN and do not count towards the number of tests.
    Reject at level q by ``adjusted <= q``.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = stats.false_discovery_control(p[ok], method="bh")
    return out


@dataclass(frozen=True)
class PairedEffect:
    """Summary of paired differences Δ: mean, Cohen's d, bootstrap CI of the mean, sign-flip p-value."""

    n: int
    mean: float
    sd: float
    d: float
    degenerate: bool
    ci_low: float
    ci_high: float
    p: float


def paired_effect(
    delta: Float[np.ndarray, "n"],
    *,
    confidence: float = 0.95,
    n_boot: int = 9999,
    max_exact: int = 100_000,
    n_flips: int = 99_999,
    seed: int = 0,
) -> PairedEffect:
    """All the per-factor statistics of a vector of paired differences in one call."""
    x = np.asarray(delta, dtype=np.float64).ravel()
    lo, hi = bootstrap_ci(x, confidence=confidence, n_resamples=n_boot, seed=seed)
    return PairedEffect(
        n=int(x.size),
        mean=float(x.mean()) if x.size else math.nan,
        sd=float(np.std(x, ddof=1)) if x.size > 1 else math.nan,
        d=cohens_d(x),
        degenerate=effect_is_degenerate(x),
        ci_low=lo,
        ci_high=hi,
        p=sign_flip_test(x, max_exact=max_exact, n_resamples=n_flips, seed=seed),
    )
