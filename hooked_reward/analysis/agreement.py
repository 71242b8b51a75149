"""The paper's question, per mechanism: do observational attribution (DRA) and causal patching name the same
components? Aggregates `faithfulness_study` (per pair: ΔDRA and the denoising patching effect of every attention
layer, MLP and head) over all pairs of a mechanism, with bootstrap intervals, and compares the two rankings.

Two agreement statistics, both Spearman ρ between DRA and patching effects over components (or heads):
* per pair: ρ of each pair's two vectors; the mean over pairs with a BCa bootstrap interval;
* pooled: ρ of the two mean-over-pairs vectors; a percentile bootstrap interval over pairs.

(`report.agreement` words them: `verdict`.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from jaxtyping import Float

from hooked_reward.analysis.stats import bootstrap_mean_ci, percentile_interval, spearman, spearman_along
from hooked_reward.names import Component

if TYPE_CHECKING:
    from hooked_reward.analysis.faithfulness import FaithfulnessResult

__all__ = ["Agreement", "agreement"]


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    return spearman(x, y, nan_policy="omit", what="DRA vs patching")


def _pooled_ci(
    dra: Float[np.ndarray, "pair component"],
    patching: Float[np.ndarray, "pair component"],
    n_resamples: int = 1999,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval (pairs resampled) of the Spearman ρ between the mean-over-pairs DRA and
    patching vectors, every resample at once (`stats.spearman_along`)."""
    n = len(dra)
    if n < 2:
        return (math.nan, math.nan)
    idx = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    rho = np.asarray(spearman_along(dra[idx].mean(1), patching[idx].mean(1)), dtype=float)
    if np.isfinite(rho).sum() < n_resamples // 2:  # mostly constant resamples: no interval
        return (math.nan, math.nan)
    low, high = percentile_interval(rho, confidence, ignore_nan=True)
    return (float(low), float(high))


@dataclass
class Agreement:
    """DRA and patching of one mechanism at one granularity (`by`: "component" or "head"), over its pairs.

    `dra`, `patching [pair, component]` in reward units (Δreward of chosen over rejected; patching = the reward
    change when the chosen run's activation is patched into the rejected run); `*_mean/_low/_high` their means
    over pairs with 95% bootstrap intervals; `rho_pair [pair]` per-pair ρ and `rho_mean`, `rho_ci` its mean and
    interval; `rho_pooled`, `rho_pooled_ci` the ρ of the means and its interval; `gap` mean reward margin.
    """

    by: str
    labels: list[Component]
    dra: Float[np.ndarray, "pair component"]
    patching: Float[np.ndarray, "pair component"]
    rho_pair: Float[np.ndarray, " pair"]
    gap: float
    dra_mean: np.ndarray = field(init=False)
    dra_low: np.ndarray = field(init=False)
    dra_high: np.ndarray = field(init=False)
    patch_mean: np.ndarray = field(init=False)
    patch_low: np.ndarray = field(init=False)
    patch_high: np.ndarray = field(init=False)
    rho_mean: float = field(init=False)
    rho_ci: tuple[float, float] = field(init=False)
    rho_pooled: float = field(init=False)
    rho_pooled_ci: tuple[float, float] = field(init=False)

    def __post_init__(self) -> None:
        self.dra_mean = self.dra.mean(0)
        self.patch_mean = self.patching.mean(0)
        self.dra_low, self.dra_high = bootstrap_mean_ci(self.dra, n_resamples=1999)
        self.patch_low, self.patch_high = bootstrap_mean_ci(self.patching, n_resamples=1999)
        finite = self.rho_pair[np.isfinite(self.rho_pair)]
        self.rho_mean = float(finite.mean()) if finite.size else math.nan
        if finite.size >= 2 and np.ptp(finite) > 0:
            low, high = bootstrap_mean_ci(finite[:, None], n_resamples=1999)
            self.rho_ci = (float(low[0]), float(high[0]))
        else:
            self.rho_ci = (math.nan, math.nan)
        self.rho_pooled = _spearman(self.dra_mean, self.patch_mean)
        self.rho_pooled_ci = _pooled_ci(self.dra, self.patching)

    def rank(self, label: Component, by: str = "patching") -> int:
        """1-based rank of `label` by mean effect (largest first) under patching or DRA."""
        values = self.patch_mean if by == "patching" else self.dra_mean
        order = list(np.argsort(-values, kind="stable"))
        return order.index(self.labels.index(label)) + 1

    def top(self, by: str = "patching") -> Component:
        """The component with the largest mean effect under patching or DRA."""
        values = self.patch_mean if by == "patching" else self.dra_mean
        return self.labels[int(np.argmax(values))]

    def to_json(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "labels": self.labels,
            "dra": self.dra,
            "patching": self.patching,
            "dra_mean": self.dra_mean,
            "dra_ci": [self.dra_low, self.dra_high],
            "patching_mean": self.patch_mean,
            "patching_ci": [self.patch_low, self.patch_high],
            "rho_per_pair": self.rho_pair,
            "rho_mean": self.rho_mean,
            "rho_ci": list(self.rho_ci),
            "rho_pooled": self.rho_pooled,
            "rho_pooled_ci": list(self.rho_pooled_ci),
            "mean_gap": self.gap,
        }


def agreement(result: FaithfulnessResult) -> Agreement:
    """An `Agreement` from a `faithfulness_study` result (NaN entries, from unaligned sites, read as 0 effect)."""
    gaps = result.meta.get("reward_gap", [])
    return Agreement(
        by=result.by,
        labels=list(result.components),
        dra=np.nan_to_num(result.attribution.double().numpy()),
        patching=np.nan_to_num(result.patching.double().numpy()),
        rho_pair=result.rho.double().numpy(),
        gap=float(np.mean(gaps)) if len(gaps) else math.nan,
    )
