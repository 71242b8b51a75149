"""Every statistic of the library, once: effect sizes, bootstrap intervals, sign-flip tests, FDR control,
Spearman's ρ, linear CKA, accuracy and agreement of margins, and the check for non-finite values.

Every function here is a thin, documented wrapper over scipy (``scipy.stats.bootstrap``,
``scipy.stats.permutation_test``, ``scipy.stats.false_discovery_control``, ``scipy.stats.spearmanr``) that
fixes the conventions the analyses rely on and defines the degenerate cases scipy leaves as warnings or NaNs.

**Non-finite values** (NaN, ±inf) never enter a statistic. Every function that aggregates takes
``nan_policy``: ``"raise"`` (the default) raises :class:`~hooked_reward.errors.NonFiniteError` naming the rows;
``"omit"`` drops those rows first (callers report how many, see :func:`finite_rows`); ``"propagate"``
returns NaN (never a number computed from a non-finite value: an infinite Δ never gives p = 0).

**Degenerate cases**, defined here and nowhere else:

* Cohen's d of a paired difference is ``mean(Δ) / sd(Δ)`` with ``ddof=1``.  When ``sd(Δ) == 0`` it is
  **NaN** if the mean is also 0 (no information) and **±inf** if the mean is nonzero (a perfectly
  consistent effect: the largest possible effect, never "no effect").  ``effect_is_degenerate`` flags this.
* The bootstrap interval of constant data is the point itself (scipy's BCa returns NaN there).
* The sign-flip test is exact (all ``2**n`` sign patterns) when ``2**n <= max_exact``; otherwise it draws
  ``n_resamples`` random sign patterns and scipy adds the +1 correction to numerator and denominator.
  One pair: p = 1 two-sided (both patterns are as extreme). All Δ = 0: p = 1.
* Spearman's ρ uses average ranks for ties (scipy). It is **NaN** for fewer than ``MIN_PAIRS_SPEARMAN`` (3)
  pairs (with two points every ρ is ±1, a number that says nothing) and when either side is constant (all
  tied: the rank variance is 0, so there is no ordering to correlate).
* Linear CKA of a **constant** representation (every input mapped to one point, e.g. the embedding of a
  reward token that is always the same) has a zero centred Gram matrix, so the formula is 0/0. Defined: **1**
  when both representations are constant (they induce the same, empty, similarity structure; so
  ``CKA(X, X) = 1`` always) and **0** when only one is (one separates the inputs, the other none of them).
  "Constant" means a centred norm at most ``CONSTANT_RTOL`` times the raw norm (float noise of a mean).
* Accuracy and agreement of margins count ties (margin exactly 0) as not preferring the chosen side
  (accuracy) and as agreeing only when both margins are 0 (agreement, by sign).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float
from scipy import stats

from hooked_reward.errors import InputError, NonFiniteError

__all__ = [
    "NanPolicy",
    "finite_rows",
    "check_nan_policy",
    "spearman",
    "spearman_test",
    "spearman_along",
    "pearson_along",
    "kendall",
    "random_cosine_null",
    "linear_cka",
    "cka_matrix",
    "accuracy",
    "agreement",
    "bootstrap_ci",
    "bootstrap_items_ci",
    "bootstrap_mean_ci",
    "bootstrap_percentile",
    "percentile_interval",
    "cohens_d",
    "effect_is_degenerate",
    "sign_flip_test",
    "sign_flip_min_p",
    "wilcoxon_test",
    "resampling_p_value",
    "benjamini_hochberg",
    "PairedEffect",
    "paired_effect",
    "against_min_effect",
]

ZERO_SD_RTOL = 1e-12
MIN_PAIRS_SPEARMAN = 3
CONSTANT_RTOL = 1e-9

NanPolicy = Literal["raise", "omit", "propagate"]
NAN_POLICIES = ("raise", "omit", "propagate")


# ---------------------------------------------------------------------------------------------- arguments
# Every public function checks its arguments here, where they enter, so a wrong one is an InputError that names
# the argument, the value and the fix, never a bare scipy/numpy error from deep inside a resampling loop.
BOOTSTRAP_METHODS = ("BCa", "percentile", "basic")


def _check_confidence(confidence: object) -> None:
    """InputError unless `confidence` is a number strictly between 0 and 1 (a coverage level such as 0.95)."""
    ok = isinstance(confidence, int | float | np.floating) and not isinstance(confidence, bool)
    if not (ok and isinstance(confidence, int | float | np.floating) and 0 < float(confidence) < 1):
        raise InputError(
            f"confidence={confidence!r}: give a coverage level strictly between 0 and 1, e.g. 0.95 for a 95% interval."
        )


def _check_count(value: object, name: str, minimum: int = 1) -> None:
    """InputError unless `value` is an integer >= `minimum` (numbers of resamples, items, sign patterns)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or int(value) < minimum:
        raise InputError(f"{name}={value!r}: give a whole number >= {minimum}.")


def _check_choice(value: object, name: str, allowed: Sequence[str]) -> None:
    """InputError unless `value` is one of `allowed` (compared case-insensitively, as scipy does)."""
    if not isinstance(value, str) or value.lower() not in {a.lower() for a in allowed}:
        raise InputError(f"{name}={value!r}: choose from {tuple(allowed)}.")


def _check_same_length(a: np.ndarray, b: np.ndarray, what: str) -> None:
    """InputError unless two paired samples have the same number of values."""
    if a.shape != b.shape:
        raise InputError(f"{what}: x has {a.size} values and y {b.size}; they must be paired, one y per x.")


def _check_representations(x: np.ndarray, y: np.ndarray, what: str = "linear CKA") -> None:
    """InputError unless `x` ``[..., m, d1]`` and `y` ``[..., m, d2]`` hold the same number ``m`` of inputs."""
    if x.ndim < 2 or y.ndim < 2:
        raise InputError(
            f"{what}: representations must be 2-D [inputs, width]; got shapes {x.shape} and {y.shape}. "
            "Reshape a single vector per input to [m, 1]."
        )
    if x.shape[-2] != y.shape[-2]:
        raise InputError(
            f"{what}: x represents {x.shape[-2]} inputs and y {y.shape[-2]}; CKA compares two representations of "
            "the same inputs, so both need one row per input, in the same order."
        )


# ---------------------------------------------------------------------------------------------- non-finite
def check_nan_policy(nan_policy: str, allowed: Sequence[str] = NAN_POLICIES) -> None:
    """InputError unless `nan_policy` is one of `allowed` (default "raise", "omit", "propagate")."""
    if nan_policy not in allowed:
        raise InputError(f"nan_policy={nan_policy!r}: choose from {tuple(allowed)}.")


def _as_numpy(x: object) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _describe_rows(bad: np.ndarray, labels: Sequence[object] | None) -> str:
    idx = np.flatnonzero(bad)
    shown = [labels[i] if labels is not None else int(i) for i in idx[:10]]
    return ", ".join(map(str, shown)) + (f" ... ({idx.size} in all)" if idx.size > 10 else "")


def _describe_values(values: np.ndarray, bad: np.ndarray) -> str:
    """The first few offending values with their indices, e.g. ``1.5 (index 0)``."""
    flat, mask = values.ravel(), bad.ravel()
    idx = np.flatnonzero(mask)
    shown = [f"{float(flat[i])!r} (index {int(i)})" for i in idx[:5]]
    return ", ".join(shown) + (f" ... ({idx.size} in all)" if idx.size > 5 else "")


def finite_rows(
    *arrays: object,
    what: str = "values",
    nan_policy: str = "raise",
    row_labels: Sequence[object] | None = None,
) -> np.ndarray:
    """Which rows (first axis) of `arrays` are finite everywhere: a bool mask `[n]`.

    `nan_policy="raise"` (default): a non-finite entry in any row raises `NonFiniteError` naming the rows
    (by `row_labels` when given, else by index) and `what` they are; `"omit"` and `"propagate"` return the
    mask (the caller drops or NaN-fills those rows and reports `(~mask).sum()`, the number omitted).
    """
    check_nan_policy(nan_policy)
    if not arrays:
        return np.ones(0, dtype=bool)
    mats = [_as_numpy(a) for a in arrays]
    n = mats[0].shape[0] if mats[0].ndim else 1
    ok = np.ones(n, dtype=bool)
    for m in mats:
        m = m.reshape(n, int(np.prod(m.shape[1:]))) if m.ndim else m.reshape(1, 1)
        if m.shape[0] != n:
            raise InputError(f"{what}: arrays of {n} and {m.shape[0]} rows cannot be checked together.")
        ok &= np.isfinite(m).all(axis=1)
    if nan_policy == "raise" and not ok.all():
        kinds = sorted({str(v) for m in mats for v in np.unique(m[~np.isfinite(m)])})
        raise NonFiniteError(
            f"{what}: row(s) {_describe_rows(~ok, row_labels)} of {n} are not finite ({', '.join(kinds)}); no "
            "statistic, verdict or p-value is computed from them. Fix the model or inputs that produced them, or "
            "pass nan_policy='omit' to drop those rows (the result says how many were dropped)."
        )
    return ok


def _finite_1d(x: object, what: str, nan_policy: str) -> tuple[np.ndarray, bool]:
    """`(finite values, had_non_finite)` of a flat array under `nan_policy` (raising for "raise")."""
    arr = _as_numpy(x).ravel()
    ok = finite_rows(arr, what=what, nan_policy=nan_policy)
    return arr[ok], bool((~ok).any())


# ---------------------------------------------------------------------------------------------- correlation
def spearman_test(
    x: Float[np.ndarray, " n"] | Float[torch.Tensor, " n"],
    y: Float[np.ndarray, " n"] | Float[torch.Tensor, " n"],
    *,
    nan_policy: str = "raise",
    what: str = "Spearman ρ",
) -> tuple[float, float]:
    """Spearman's ρ of paired values and its two-sided p-value (``scipy.stats.spearmanr``, average ranks for
    ties). `(nan, nan)` for fewer than 3 pairs or a constant side (see the module docstring). A non-finite
    pair raises (default), is dropped (`"omit"`) or makes the answer NaN (`"propagate"`)."""
    xa, ya = _as_numpy(x).ravel(), _as_numpy(y).ravel()
    _check_same_length(xa, ya, what)
    ok = finite_rows(xa, ya, what=what, nan_policy=nan_policy)
    if nan_policy == "propagate" and not ok.all():
        return (math.nan, math.nan)
    xa, ya = xa[ok], ya[ok]
    if xa.size < MIN_PAIRS_SPEARMAN or np.ptp(xa) == 0 or np.ptp(ya) == 0:
        return (math.nan, math.nan)
    res = stats.spearmanr(xa, ya)
    return (float(res.statistic), float(res.pvalue))


def spearman(
    x: Float[np.ndarray, " n"], y: Float[np.ndarray, " n"], *, nan_policy: str = "raise", what: str = "Spearman ρ"
) -> float:
    """Spearman's ρ (see :func:`spearman_test`; NaN for n < 3 or a constant side)."""
    return spearman_test(x, y, nan_policy=nan_policy, what=what)[0]


def spearman_along(
    x: Float[np.ndarray, "... n"], y: Float[np.ndarray, "... n"], axis: int = -1
) -> Float[np.ndarray, "..."] | float:
    """Spearman's ρ along `axis` for many rows at once (bootstrap resamples): Pearson's r of average ranks,
    which is scipy's definition, with the same degenerate rules as :func:`spearman` (finite inputs only)."""
    x, y = np.asarray(x), np.asarray(y)
    _check_same_length(x, y, "Spearman ρ along an axis")
    rx, ry = stats.rankdata(x, axis=axis), stats.rankdata(y, axis=axis)
    rx = rx - rx.mean(axis=axis, keepdims=True)
    ry = ry - ry.mean(axis=axis, keepdims=True)
    num = (rx * ry).sum(axis)
    den = np.sqrt((rx**2).sum(axis) * (ry**2).sum(axis))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    if np.shape(x)[axis] < MIN_PAIRS_SPEARMAN:
        rho = np.full_like(rho, np.nan)
    return rho if np.ndim(rho) else float(rho)


def pearson_along(
    x: Float[np.ndarray, "... n"], y: Float[np.ndarray, "... n"], axis: int = -1
) -> Float[np.ndarray, "..."]:
    """Pearson's r along `axis` for many rows at once (bootstrap resamples); NaN for a constant side."""
    x, y = np.asarray(x), np.asarray(y)
    _check_same_length(x, y, "Pearson r along an axis")
    xc = x - x.mean(axis=axis, keepdims=True)
    yc = y - y.mean(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (xc * yc).sum(axis) / np.sqrt((xc**2).sum(axis) * (yc**2).sum(axis))


def kendall(x: Float[np.ndarray, " n"], y: Float[np.ndarray, " n"]) -> float:
    """Kendall's τ-b (``scipy.stats.kendalltau``; NaN for a constant side)."""
    _check_same_length(np.asarray(x).ravel(), np.asarray(y).ravel(), "Kendall τ")
    return float(stats.kendalltau(x, y).statistic)


def random_cosine_null(d: int, observed: float | None = None, confidence: float = 0.95) -> dict[str, float]:
    """The random-direction null for a cosine with a fixed vector in `d` dimensions.

    For a Gaussian random direction u ~ N(0, I_d) and any fixed w, cos(u, w)² ~ Beta(1/2, (d−1)/2) exactly
    (the null's sd is 1/√d). Returns the symmetric `confidence` band `(−q, q)` and, when `observed` is
    given, the two-sided p-value P(|cos| ≥ |observed|) under that null. Exact, so no sampling.
    """
    if d < 2:
        raise InputError(f"A cosine null needs d >= 2, got {d}.")
    _check_confidence(confidence)
    beta = stats.beta(0.5, (d - 1) / 2)
    q = math.sqrt(float(beta.ppf(confidence)))
    out = {"d": float(d), "null_sd": 1 / math.sqrt(d), "band_low": -q, "band_high": q}
    if observed is not None:
        out["p_value"] = float(beta.sf(min(1.0, float(observed) ** 2))) if math.isfinite(observed) else math.nan
    return out


# ---------------------------------------------------------------------------------------------- CKA
def _centred(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows centred over the inputs axis (-2) and whether each representation is constant (``[...]``)."""
    xc = x - x.mean(-2, keepdims=True)
    raw = np.sqrt((x**2).sum((-2, -1)))
    cen = np.sqrt((xc**2).sum((-2, -1)))
    return xc, cen <= CONSTANT_RTOL * raw


def linear_cka(x: Float[np.ndarray, "m d1"], y: Float[np.ndarray, "m d2"]) -> float:
    """Linear CKA of two representations of the same ``m`` inputs (widths may differ):
    ``<K_c, L_c>_F / (||K_c||_F ||L_c||_F)`` with centred Gram matrices; 1 for ``y = x Q`` (Q orthogonal).
    Constant representations: 1 when both are, 0 when one is (module docstring)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2:
        raise InputError(
            f"linear CKA: representations must be 2-D [inputs, width]; got shapes {x.shape} and {y.shape}. "
            "Reshape a single value per input to [m, 1]."
        )
    _check_representations(x, y)
    return float(cka_matrix(x[None], y[None])[0, 0])


def cka_matrix(
    xa: Float[np.ndarray, "la m d1"], xb: Float[np.ndarray, "lb m d2"], idx: np.ndarray | None = None
) -> Float[np.ndarray, "la lb"]:
    """Linear CKA for every pair of layers (rows ``idx`` of the inputs, with repeats, if given).
    Constant layers follow the module docstring's rule (1 if both constant, 0 if one is), never NaN."""
    xa, xb = np.asarray(xa, np.float64), np.asarray(xb, np.float64)
    if xa.ndim != 3 or xb.ndim != 3:
        raise InputError(
            f"CKA matrix: give stacks of representations [layers, inputs, width]; got shapes {xa.shape} and {xb.shape}."
        )
    _check_representations(xa, xb, "CKA matrix")
    if idx is not None:
        xa, xb = xa[:, idx], xb[:, idx]
    ca, const_a = _centred(xa)
    cb, const_b = _centred(xb)
    ka = (ca @ np.swapaxes(ca, -1, -2)).reshape(xa.shape[0], -1)
    kb = (cb @ np.swapaxes(cb, -1, -2)).reshape(xb.shape[0], -1)
    na, nb = np.linalg.norm(ka, axis=1), np.linalg.norm(kb, axis=1)
    den = np.outer(na, nb)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (ka @ kb.T) / np.where(den > 0, den, 1.0)
    either = const_a[:, None] | const_b[None, :]
    both = const_a[:, None] & const_b[None, :]
    out[either] = 0.0
    out[both] = 1.0
    return out


# ---------------------------------------------------------------------------------------------- margins
def accuracy(margins: Float[np.ndarray, " n"], *, nan_policy: str = "raise", what: str = "margins") -> float:
    """Fraction of margins ``r(chosen) − r(rejected)`` above 0 (a tie is not a win). NaN for no pairs; a
    non-finite margin raises (default), is dropped (`"omit"`) or gives NaN (`"propagate"`)."""
    m, bad = _finite_1d(margins, what, nan_policy)
    if (bad and nan_policy == "propagate") or m.size == 0:
        return math.nan
    return float((m > 0).mean())


def agreement(
    margins_a: Float[np.ndarray, " n"], margins_b: Float[np.ndarray, " n"], *, nan_policy: str = "raise"
) -> Float[np.ndarray, " n"]:
    """Per pair, 1.0 where two models' margins have the same sign (0 counts as its own sign), else 0.0.
    Rows with a non-finite margin raise (default), are dropped (`"omit"`) or are NaN (`"propagate"`)."""
    a, b = _as_numpy(margins_a).ravel(), _as_numpy(margins_b).ravel()
    _check_same_length(a, b, "agreement of margins")
    ok = finite_rows(a, b, what="margins of the two models", nan_policy=nan_policy)
    same = (np.sign(a) == np.sign(b)).astype(np.float64)
    if nan_policy == "propagate":
        return np.where(ok, same, np.nan)
    return same[ok]


def _sd_is_zero(x: np.ndarray) -> bool:
    """True when the spread of ``x`` is zero up to floating-point noise relative to its magnitude."""
    if x.size < 2:
        return True
    scale = max(1.0, float(np.max(np.abs(x))))
    return float(np.std(x, ddof=1)) <= ZERO_SD_RTOL * scale


def cohens_d(delta: Float[np.ndarray, " n"], *, nan_policy: str = "raise") -> float:
    """Cohen's d of paired differences: ``mean(Δ) / sd(Δ, ddof=1)``.

    Returns NaN when ``sd == 0`` and ``mean == 0`` (or fewer than 2 values), and ``±inf`` when ``sd == 0`` but
    the mean is nonzero: every pair moved by the same amount, the most consistent effect there is.  Callers
    should report ``effect_is_degenerate(delta)`` alongside so an infinite d is read as "flagged", not as a
    number to average. Non-finite Δ: see `nan_policy` in the module docstring.
    """
    x, bad = _finite_1d(delta, "paired differences (Cohen's d)", nan_policy)
    if x.size < 2 or (bad and nan_policy == "propagate"):
        return math.nan
    mean = float(x.mean())
    if _sd_is_zero(x):
        if mean == 0.0 or abs(mean) <= ZERO_SD_RTOL * max(1.0, float(np.max(np.abs(x)))):
            return math.nan
        return math.copysign(math.inf, mean)
    return mean / float(np.std(x, ddof=1))


def effect_is_degenerate(delta: Float[np.ndarray, " n"]) -> bool:
    """True when the differences have zero spread (Cohen's d is NaN or infinite rather than finite)."""
    return _sd_is_zero(np.asarray(delta, dtype=np.float64).ravel())


def bootstrap_ci(
    data: Float[np.ndarray, " n"] | Sequence[Float[np.ndarray, " n"]],
    statistic: Callable[..., np.ndarray | float] | None = None,
    *,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    method: str = "BCa",
    paired: bool = True,
    vectorized: bool | None = None,
    seed: int | np.random.Generator | None = 0,
    nan_policy: str = "raise",
) -> tuple[float, float]:
    """Bootstrap confidence interval of ``statistic`` over observations (scipy ``bootstrap``, BCa by default).

    ``data`` is one 1-D array (then ``statistic`` defaults to the mean) or a sequence of equally long arrays
    resampled together when ``paired`` (e.g. the margins of two models on the same pairs).  ``statistic``
    follows scipy's convention: ``statistic(*samples, axis=-1)`` when vectorized.

    Degenerate inputs: fewer than 2 observations give ``(nan, nan)``; when every resample gives the same
    value (e.g. constant data) the interval is that value, where scipy's BCa would return NaN. Non-finite
    observations (rows across paired samples): ``nan_policy`` (raise, omit, or ``(nan, nan)`` for propagate).
    """
    _check_confidence(confidence)
    _check_count(n_resamples, "n_resamples")
    _check_choice(method, "method", BOOTSTRAP_METHODS)
    if not isinstance(data, np.ndarray | torch.Tensor) and len(data) == 0:
        return (math.nan, math.nan)  # no observations
    samples = (data,) if isinstance(data, np.ndarray) or np.isscalar(data[0]) else tuple(data)
    samples = tuple(np.asarray(s, dtype=np.float64) for s in samples)
    if paired and len({s.shape[0] if s.ndim else 1 for s in samples}) > 1:
        raise InputError(
            f"bootstrap: paired samples of {[s.shape[0] for s in samples]} observations; paired samples are "
            "resampled together, so give them one value per observation each (or pass paired=False)."
        )
    if statistic is None:
        statistic = np.mean
        vectorized = True
    ok = finite_rows(*samples, what="bootstrap observations", nan_policy=nan_policy)
    if not ok.all():
        if nan_policy == "propagate":
            return (math.nan, math.nan)  # a missing value: no interval, not a partial one
        samples = tuple(s[ok] for s in samples)
    n = samples[0].shape[0]
    if n < 2:
        return (math.nan, math.nan)  # too few observations
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
    _check_count(n_items, "n_items", minimum=0)
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


def percentile_interval(
    resamples: Float[np.ndarray, "n_resamples ..."], confidence: float = 0.95, *, ignore_nan: bool = False
) -> tuple[Float[np.ndarray, "..."], Float[np.ndarray, "..."]]:
    """The percentile interval of bootstrap resamples over their first axis, for every remaining entry
    (``ignore_nan``: quantiles of the finite resamples only, for statistics undefined on some resamples)."""
    _check_confidence(confidence)
    alpha = (1 - confidence) / 2
    q = np.nanquantile if ignore_nan else np.quantile
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN entry stays NaN
        return q(resamples, alpha, axis=0), q(resamples, 1 - alpha, axis=0)


def bootstrap_percentile(
    statistic: Callable[..., np.ndarray | float],
    sizes: int | Sequence[int],
    *,
    n_resamples: int,
    rng: np.random.Generator,
    confidence: float = 0.95,
) -> tuple[Any, Any]:
    """Percentile bootstrap interval of an array-valued statistic of whole rows (a matrix of correlations,
    an AUC of two samples): each resample draws, for each group of size ``sizes[g]``, that many row indices
    with replacement (``rng.integers``, group by group) and calls ``statistic(*indices)``. Used where scipy's
    ``bootstrap`` (scalar statistics of 1-D samples) does not fit. Returns floats for a scalar statistic, else
    arrays of the statistic's shape."""
    _check_confidence(confidence)
    _check_count(n_resamples, "n_resamples")
    sizes = [sizes] if isinstance(sizes, int | np.integer) else list(sizes)
    for n in sizes:
        _check_count(n, "sizes (rows per group)")
    boots = [
        np.asarray(statistic(*[rng.integers(0, n, n) for n in sizes]), dtype=np.float64) for _ in range(n_resamples)
    ]
    lo, hi = percentile_interval(np.stack(boots), confidence)
    return (float(lo), float(hi)) if np.ndim(lo) == 0 else (lo, hi)


def bootstrap_mean_ci(
    x: Float[np.ndarray, "n ..."],
    *,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    method: str = "BCa",
    seed: int | np.random.Generator | None = 0,
    nan_policy: str = "raise",
) -> tuple[Float[np.ndarray, "..."], Float[np.ndarray, "..."]]:
    """Bootstrap CI of the mean over the first axis, for every remaining entry at once (e.g. a lens curve
    ``[n_pairs, n_layers]`` gives per-layer intervals).  Resamples rows jointly (scipy ``bootstrap`` with
    ``axis=0``); entries where every row is equal get the point itself, where BCa is undefined."""
    _check_confidence(confidence)
    _check_count(n_resamples, "n_resamples")
    _check_choice(method, "method", BOOTSTRAP_METHODS)
    x = np.asarray(x, dtype=np.float64)
    ok = finite_rows(x, what="bootstrap rows", nan_policy=nan_policy)
    if not ok.all():
        if nan_policy == "propagate":
            nan = np.full(x.shape[1:], np.nan)
            return nan, nan.copy()
        x = x[ok]
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
    delta: Float[np.ndarray, " n"],
    *,
    alternative: str = "two-sided",
    max_exact: int = 100_000,
    n_resamples: int = 99_999,
    seed: int | np.random.Generator | None = 0,
    nan_policy: str = "raise",
) -> float:
    """P-value of "mean Δ = 0" against the sign-flip null (paired differences symmetric about 0).

    Uses ``scipy.stats.permutation_test`` with ``permutation_type="samples"`` on the single sample Δ, which
    flips the sign of each observation independently.  With ``2**n <= max_exact`` all sign patterns are
    enumerated (an exact test); otherwise ``n_resamples`` random patterns are drawn and the p-value is
    ``(count + 1) / (n_resamples + 1)``, never 0 (the default 99,999 keeps that floor, 2e-5 two-sided, below the
    exact floor at n = 16, so more pairs never give a larger smallest p). One pair: p = 1 (two-sided; both
    patterns are as extreme). A NaN or infinite Δ raises `NonFiniteError` (default), is dropped
    (``nan_policy="omit"``) or gives NaN (``"propagate"``): never p = 0 from an infinite Δ.

    Example: Δ = (0.5, 1.5) has sign-pattern means (1, 0.5, -0.5, -1); two-sided p = 2 · P(mean >= 1) = 0.5.
    """
    _check_choice(alternative, "alternative", ("two-sided", "greater", "less"))
    _check_count(max_exact, "max_exact")
    _check_count(n_resamples, "n_resamples")
    x, bad = _finite_1d(delta, "paired differences (sign-flip test)", nan_policy)
    n = x.size
    if n == 0 or (bad and nan_policy == "propagate"):
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


def sign_flip_min_p(
    n: int, *, alternative: str = "two-sided", max_exact: int = 100_000, n_resamples: int = 99_999
) -> float:
    """The smallest p-value :func:`sign_flip_test` can return for ``n`` paired differences, whatever they are.

    Exact test (``2**n <= max_exact``): one sign pattern of ``2**n`` is the most extreme, so ``1 / 2**n`` one-sided
    and ``2 / 2**n`` two-sided (capped at 1; so 0.0625 at n = 5: no 5-pair factor can reach p <= 0.05). Random
    flips: ``1 / (n_resamples + 1)`` one-sided, twice that two-sided (the +1 correction). NaN for n = 0.
    A test whose smallest attainable p exceeds the level cannot reject, so "not significant" there says nothing.
    """
    _check_count(n, "n", minimum=0)
    _check_choice(alternative, "alternative", ("two-sided", "greater", "less"))
    _check_count(max_exact, "max_exact")
    _check_count(n_resamples, "n_resamples")
    if n == 0:
        return math.nan
    sides = 2.0 if alternative == "two-sided" else 1.0
    if n == 1:
        return 1.0 if alternative == "two-sided" else 0.5
    exact = n < 63 and 2**n <= max_exact
    return min(1.0, sides / 2**n if exact else sides / (n_resamples + 1))


def wilcoxon_test(x: Float[np.ndarray, " n"], *, nan_policy: str = "raise") -> float:
    """Two-sided Wilcoxon signed-rank p-value of "x is centred on 0" (``scipy.stats.wilcoxon``). NaN for fewer
    than 2 values or when every value is 0 (no signed ranks); non-finite values: ``nan_policy``."""
    v, bad = _finite_1d(x, "values (Wilcoxon test)", nan_policy)
    if v.size < 2 or not np.any(v != 0) or (bad and nan_policy == "propagate"):
        return math.nan
    return float(stats.wilcoxon(v).pvalue)


def resampling_p_value(
    null: Float[np.ndarray, " n_resamples"],
    observed: float,
    *,
    alternative: Literal["greater", "less"] = "greater",
    atol: float = 1e-12,
) -> float:
    """Monte Carlo p-value of `observed` against `n` draws of a null distribution, with the +1 correction
    (``scipy.stats.permutation_test``'s convention, for nulls built by hand, e.g. permuted profiles):
    ``(1 + #{null ≥ observed − atol}) / (1 + n)`` for "greater" (``≤ observed + atol`` for "less"); never 0,
    ties within `atol` count as extreme. A non-finite observed value or null draw raises `NonFiniteError`."""
    draws = _as_numpy(null).ravel()
    finite_rows(draws, what="null distribution draws")
    if not math.isfinite(observed):
        raise NonFiniteError(f"observed statistic {observed!r} is not finite; no p-value is computed from it.")
    if alternative == "greater":
        hits = int((draws >= observed - atol).sum())
    elif alternative == "less":
        hits = int((draws <= observed + atol).sum())
    else:
        raise InputError(f"alternative={alternative!r}: choose 'greater' or 'less'.")
    return float((1 + hits) / (1 + draws.size))


def benjamini_hochberg(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (``scipy.stats.false_discovery_control``, method="bh").

    NaN p-values (tests that could not be run) stay NaN and do not count towards the number of tests.
    Reject at level q by ``adjusted <= q``.
    """
    try:
        p = np.asarray(pvalues, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InputError(f"benjamini_hochberg: p-values must be numbers; {e}.") from None
    ok = np.isfinite(p)
    wrong = ~np.isnan(p) & ~((p >= 0) & (p <= 1))
    if wrong.any():
        raise InputError(
            f"benjamini_hochberg: p-values must lie in [0, 1] (NaN for a test not run); got "
            f"{_describe_values(p, wrong)}. Pass the raw p-values of the tests (not statistics or log p-values)."
        )
    out = np.full_like(p, np.nan)
    if ok.any():
        out[ok] = stats.false_discovery_control(p[ok], method="bh")
    return out


@dataclass(frozen=True)
class PairedEffect:
    """Summary of paired differences Δ: mean, Cohen's d, bootstrap CI of the mean, sign-flip p-value.

    With a minimum effect of interest δ = `min_effect` (reward units, > 0): `beyond_min_effect` is True when
    the CI excludes [−δ, δ] entirely (the effect is at least δ in size, with the stated confidence) and
    `negligible` when the CI lies inside (−δ, δ) (an equivalence test: any effect is smaller than δ); both
    are False when the CI straddles ±δ, and None without a δ or without a CI. `n_omitted`: non-finite Δ
    dropped under ``nan_policy="omit"``.
    """

    n: int
    mean: float
    sd: float
    d: float
    degenerate: bool
    ci_low: float
    ci_high: float
    p: float
    min_effect: float = math.nan
    beyond_min_effect: bool | None = None
    negligible: bool | None = None
    n_omitted: int = 0


def against_min_effect(ci_low: float, ci_high: float, min_effect: float | None) -> tuple[bool | None, bool | None]:
    """`(beyond, negligible)` of a CI against a minimum effect of interest δ: beyond when the CI excludes
    [−δ, δ], negligible when it lies inside (−δ, δ); None for no δ or a NaN interval."""
    if min_effect is None:
        return None, None
    if not (math.isfinite(min_effect) and min_effect >= 0):
        raise InputError(f"min_effect={min_effect!r}: give a finite size >= 0 in reward units (or None).")
    if not math.isfinite(ci_low) or not math.isfinite(ci_high):
        return None, None
    beyond = ci_low > min_effect or ci_high < -min_effect
    negligible = -min_effect < ci_low and ci_high < min_effect
    return beyond, negligible


def paired_effect(
    delta: Float[np.ndarray, " n"],
    *,
    confidence: float = 0.95,
    n_boot: int = 9999,
    max_exact: int = 100_000,
    n_flips: int = 99_999,
    seed: int = 0,
    min_effect: float | None = None,
    nan_policy: str = "raise",
    what: str = "paired differences",
) -> PairedEffect:
    """All the per-factor statistics of a vector of paired differences in one call (see `PairedEffect`)."""
    _check_confidence(confidence)
    _check_count(n_boot, "n_boot")
    _check_count(n_flips, "n_flips")
    _check_count(max_exact, "max_exact")
    raw = _as_numpy(delta).ravel()
    ok = finite_rows(raw, what=what, nan_policy=nan_policy)
    if nan_policy == "propagate" and not ok.all():
        nan = math.nan
        return PairedEffect(int(raw.size), nan, nan, nan, False, nan, nan, nan, min_effect or nan)
    x = raw[ok]
    lo, hi = bootstrap_ci(x, confidence=confidence, n_resamples=n_boot, seed=seed)
    beyond, negligible = against_min_effect(lo, hi, min_effect)
    return PairedEffect(
        n=int(x.size),
        mean=float(x.mean()) if x.size else math.nan,
        sd=float(np.std(x, ddof=1)) if x.size > 1 else math.nan,
        d=cohens_d(x),
        degenerate=effect_is_degenerate(x),
        ci_low=lo,
        ci_high=hi,
        p=sign_flip_test(x, max_exact=max_exact, n_resamples=n_flips, seed=seed),
        min_effect=math.nan if min_effect is None else float(min_effect),
        beyond_min_effect=beyond,
        negligible=negligible,
        n_omitted=int((~ok).sum()),
    )
