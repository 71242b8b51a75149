"""Per-factor statistics of a probe suite: effect sizes, intervals, sign-flip p-values, BH, verdicts.

For a factor with paired differences ``Δ_i = r(biased_i) − r(neutral_i)``:

* ``mean``      — mean Δ (reward units);
* ``std_mean``  — mean Δ divided by the sd of all rewards over every probe text of the suite, so factors and
  models with different reward scales compare (the "how many reward-sd does this factor move" number);
* ``d``         — Cohen's d = mean / sd(Δ) (ddof=1): NaN when sd = 0 and mean = 0, ±inf with
  ``degenerate=True`` when sd = 0 but the mean is not (a perfectly consistent shift, never "no effect");
* ``ci_low/ci_high`` — BCa bootstrap 95% interval of mean Δ;
* ``p``         — sign-flip p-value of mean Δ (exact when 2**n <= 1e5), ``q`` its Benjamini–Hochberg
  adjustment across all factors of the suite; ``significant = q <= alpha``;
* ``min_p``     — the smallest p the sign-flip test can return with this factor's n pairs (2 / 2**n exact,
  two-sided): at n = 5 it is 0.0625, so no 5-pair factor can be significant at q <= 0.05 whatever its effect;
* ``verdict``   — "rewards <phrase>" / "penalises <phrase>" / "no significant effect"; "too few pairs to test
  (...)" when ``min_p > alpha`` (q <= alpha is out of reach, so "no effect" would be a claim the test cannot
  make); "not tested" when no pair is left after dropping non-finite rewards;
* ``min_effect`` — the smallest effect that matters (reward units; NaN when none was given), and
  ``beyond_min_effect`` (the CI excludes [−min_effect, min_effect]: an effect at least that large) and
  ``negligible`` (the CI lies inside (−min_effect, min_effect): whatever the effect, it is smaller), beside
  significance: a tiny but consistent shift is significant and negligible at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from hooked_reward.analysis.results import LabeledTensor, require_pandas, require_pyplot
from hooked_reward.analysis.stats import benjamini_hochberg, paired_effect, sign_flip_min_p

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["FactorStats", "factor_stats", "verdict"]


STATS = ("n", "mean", "sd", "std_mean", "d", "ci_low", "ci_high", "p", "q")


@dataclass(repr=False, kw_only=True)
class FactorStats(LabeledTensor):
    """The statistics of one factor (see the module docstring for each field), a `LabeledTensor` whose
    `values [stat]` are its numbers `STATS` (n, mean, sd, std_mean, d, ci_low, ci_high, p, q); the verdict and
    flags are fields. One row of `ProbeSuiteResult`."""

    values: Tensor | None = None  # type: ignore[assignment]  # derived from the fields (see `_derive`)
    dims: tuple[str, ...] = ()
    factor: str
    phrase: str
    n: int
    mean: float
    sd: float
    std_mean: float
    d: float
    degenerate: bool
    ci_low: float
    ci_high: float
    p: float
    q: float
    significant: bool
    verdict: str
    mean_len_diff: float = math.nan
    min_effect: float = math.nan
    beyond_min_effect: bool | None = None
    negligible: bool | None = None
    n_omitted: int = 0
    min_p: float = math.nan
    value_name: str = "statistic"

    def _derive(self) -> tuple[Tensor, tuple[str, ...], dict[str, list[Any]]]:
        values = torch.tensor([float(getattr(self, k)) for k in STATS], dtype=torch.float64)
        return values, ("stat",), {"stat": list(STATS)}

    def as_dict(self) -> dict[str, Any]:
        """The record: every field by name (not the derived tensor)."""
        skip = {f.name for f in fields(LabeledTensor)}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}

    def to_frame(self) -> Any:
        """One row: every field."""
        return require_pandas().DataFrame([self.as_dict()]).set_index("factor")

    def plot(self, ax: Axes | None = None) -> Any:
        """The mean Δ with its CI (and ±min_effect, when given) on `ax`; returns the Axes."""
        plt = require_pyplot()
        if ax is None:
            _, ax = plt.subplots(figsize=(5, 1.6))
        ax.plot([self.ci_low, self.ci_high], [0, 0], lw=3, color="tab:red" if self.significant else "0.5")
        ax.plot([self.mean], [0], "o", color="k")
        ax.axvline(0, color="k", lw=0.6)
        if math.isfinite(self.min_effect):
            for x in (-self.min_effect, self.min_effect):
                ax.axvline(x, color="tab:orange", ls="--", lw=0.8)
        ax.set_yticks([0], [self.factor])
        ax.set_xlabel("mean Δ = r(biased) − r(neutral) (95% CI)")
        ax.set_title(self.verdict, fontsize=9)
        return ax

    def __repr__(self) -> str:
        return (
            f"FactorStats({self.factor}: mean Δ {self.mean:.4g} [{self.ci_low:.4g}, {self.ci_high:.4g}], "
            f"n={self.n}, p={self.p:.3g}, q={self.q:.3g}, {self.verdict})"
        )


NOT_TESTED = "not tested (no pair with finite rewards)"


def too_few_pairs(n: int, min_p: float, alpha: float) -> str:
    """The verdict of a factor whose `n` pairs cannot reach q <= `alpha` (its smallest attainable p exceeds it)."""
    need = max(n + 1, math.ceil(math.log2(2 / alpha)))  # exact two-sided: 2 / 2**need <= alpha
    return (
        f"too few pairs to test (n={n}: the smallest attainable p is {min_p:.3g} > {alpha:g}; "
        f"give at least {need} pairs, e.g. --n-pairs {need})"
    )


def verdict(mean: float, significant: bool, phrase: str) -> str:
    """The direction in words: positive mean Δ (biased side scores higher) means the model rewards the factor."""
    if not significant or not math.isfinite(mean) or mean == 0:
        return "no significant effect"
    return f"rewards {phrase}" if mean > 0 else f"penalises {phrase}"


def factor_stats(
    deltas: Mapping[str, Float[np.ndarray, " n"]],
    phrases: Mapping[str, str],
    reward_sd: float,
    *,
    alpha: float = 0.05,
    n_boot: int = 9999,
    max_exact: int = 100_000,
    n_flips: int = 99_999,
    seed: int = 0,
    len_diffs: Mapping[str, Sequence[float] | np.ndarray] | None = None,
    min_effect: float | None = None,
    nan_policy: str = "raise",
) -> list[FactorStats]:
    """Statistics for every factor, with BH across factors (the family is the factors of this call).

    `min_effect`: the smallest mean Δ (reward units) that matters; each factor then says whether its CI
    excludes it. A non-finite Δ raises `NonFiniteError` naming the factor and pairs (`nan_policy="omit"`
    drops those pairs; `n_omitted` counts them).
    """
    names = list(deltas)
    effects = [
        paired_effect(
            np.asarray(deltas[k]),
            n_boot=n_boot,
            max_exact=max_exact,
            n_flips=n_flips,
            seed=seed,
            min_effect=min_effect,
            nan_policy=nan_policy,
            what=f"probe Δ of factor {k!r} (pairs by index)",
        )
        for k in names
    ]
    qs = benjamini_hochberg([e.p for e in effects])
    min_ps = [sign_flip_min_p(e.n, max_exact=max_exact, n_resamples=n_flips) for e in effects]
    out = []
    for k, e, q, min_p in zip(names, effects, qs, min_ps, strict=True):
        sig = bool(np.isfinite(q) and q <= alpha)
        std_mean = e.mean / reward_sd if reward_sd > 0 else math.nan
        ld = float(np.mean(len_diffs[k])) if len_diffs and len(len_diffs.get(k, ())) else math.nan
        out.append(
            FactorStats(
                factor=k,
                phrase=phrases.get(k, k),
                n=e.n,
                mean=e.mean,
                sd=e.sd,
                std_mean=std_mean,
                d=e.d,
                degenerate=e.degenerate,
                ci_low=e.ci_low,
                ci_high=e.ci_high,
                p=e.p,
                q=float(q),
                significant=sig,
                verdict=(
                    NOT_TESTED
                    if not e.n
                    else too_few_pairs(e.n, min_p, alpha)
                    if min_p > alpha
                    else verdict(e.mean, sig, phrases.get(k, k))
                ),
                mean_len_diff=ld,
                min_effect=e.min_effect,
                beyond_min_effect=e.beyond_min_effect,
                negligible=e.negligible,
                n_omitted=e.n_omitted,
                min_p=min_p,
            )
        )
    return out
