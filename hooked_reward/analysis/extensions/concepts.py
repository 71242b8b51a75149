"""Concept vectors: a direction for a named concept at a hook point, how well it separates held-out texts,
how it lines up with the reward direction, and what adding it does to the reward.

    u      = normalise(mean_pos − mean_neg)          at the reward position of `hook` (or Σ⁻¹(mean_pos −
                                                      mean_neg) with a LedoitWolf within-class Σ, or a
                                                      logistic probe's weights), fitted on a train split only
    AUC    = P(u·x_pos > u·x_neg) on the held-out split, bootstrap CI (positives and negatives resampled)
    align  = cos(u_c, W_R_eff) at the final residual, u_c = u centred for LayerNorm (what the norm sees),
             against the exact random-direction null at width d (cos² ~ Beta(½, (d−1)/2))
    dose   = r(x with α·s·u added at `hook`, reward position) for α on a grid, s = the median residual norm
             there; slope per text (least squares over α), mean slope with a BCa CI over texts

With the final norm's scale frozen (`freeze_norm=True`: `ln_final.hook_scale` replaced by the clean run's),
the reward is affine in the final residual, so at the final residual the slope is exactly
s · (u_c · W_R_eff) / σ per text (σ that text's frozen scale): `predicted_slope`. Without freezing, the norm
rescales the addition and the curve bends (saturates) — the difference is the norm's own effect.

Sign convention: `positive` texts are the ones that *have* the concept (its name); u points from the negative
texts to the positive ones, so a positive dose slope means "more of the concept, more reward".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float
from sklearn.covariance import LedoitWolf
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from torch import Tensor

from hooked_reward.analysis.extensions._common import (
    cosine,
    figure,
    frame,
    reward_direction_or_none,
    reward_position_acts,
)
from hooked_reward.analysis.patching import reward_position_hook
from hooked_reward.analysis.results import LabeledTensor
from hooked_reward.analysis.stats import bootstrap_ci, bootstrap_percentile, random_cosine_null
from hooked_reward.errors import InputError
from hooked_reward.final_norm import final_norm_centre, frozen_final_scale
from hooked_reward.names import FINAL_SCALE, final_resid_hook

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from hooked_reward.model import HookedRewardModel

__all__ = ["ConceptVector", "DoseResponse", "fit_concept", "dose_response"]


@dataclass(repr=False, kw_only=True)
class ConceptVector(LabeledTensor):
    """A fitted concept direction `u` `[d]` (unit norm) at `hook`, with its held-out separability and, at the
    final residual, its alignment with `W_R_eff` against the random-direction null."""

    values: Tensor | None = None  # type: ignore[assignment]  # derived from `direction` (see `_derive`)
    dims: tuple[str, ...] = ()

    name: str
    hook: str
    direction: Float[Tensor, " d"]
    method: str
    typical_norm: float
    train_auc: float
    test_auc: float
    test_auc_low: float
    test_auc_high: float
    n_train: tuple[int, int]
    n_test: tuple[int, int]
    alignment: float = float("nan")
    alignment_p: float = float("nan")
    null_band: tuple[float, float] = (float("nan"), float("nan"))
    meta: dict[str, Any] = field(default_factory=dict)

    def _derive(self) -> tuple[Tensor, tuple[str, ...], dict[str, list[Any]]]:
        return self.direction, ("d_model",), {}

    def to_frame(self) -> Any:
        """One row: the concept's separability and alignment numbers."""
        return frame(
            [
                {
                    "concept": self.name,
                    "hook": self.hook,
                    "method": self.method,
                    "typical_norm": self.typical_norm,
                    "train_auc": self.train_auc,
                    "test_auc": self.test_auc,
                    "test_auc_low": self.test_auc_low,
                    "test_auc_high": self.test_auc_high,
                    "n_test_pos": self.n_test[0],
                    "n_test_neg": self.n_test[1],
                    "cos_w_r": self.alignment,
                    "cos_p_value": self.alignment_p,
                    "null_low": self.null_band[0],
                    "null_high": self.null_band[1],
                }
            ]
        )

    def plot(self, ax: Axes | None = None) -> Any:
        """Held-out projections u·x of positives and negatives (histograms), on `ax`; returns the Axes."""
        if ax is None:
            _, ax = figure()
        pos, neg = self.meta.get("test_scores", (np.zeros(0), np.zeros(0)))
        bins = np.histogram_bin_edges(np.concatenate([pos, neg]) if len(pos) + len(neg) else [0, 1], 20).tolist()
        ax.hist(pos, bins=bins, alpha=0.6, label=f"{self.name} (positive)")
        ax.hist(neg, bins=bins, alpha=0.6, label=f"not {self.name} (negative)")
        ax.set_xlabel(f"u · resid at {self.hook} (held out)")
        ax.set_title(
            f"AUC {self.test_auc:.3f} [{self.test_auc_low:.3f}, {self.test_auc_high:.3f}]; "
            f"cos(u, W_R_eff) {self.alignment:.3f}",
            fontsize=9,
        )
        ax.legend(fontsize="small")
        return ax


def _split(n: int, train_frac: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    perm = rng.permutation(n)
    k = min(max(1, int(round(train_frac * n))), n - 1)
    return perm[:k], perm[k:]


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(pos > neg), ties ½ (Mann–Whitney)."""
    return float(roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg]))


def fit_concept(
    model: HookedRewardModel,
    positive: Sequence[str] | Any,
    negative: Sequence[str] | Any,
    *,
    hook: str | None = None,
    name: str = "concept",
    method: str = "mean_diff",
    train_frac: float = 0.5,
    confidence: float = 0.95,
    n_boot: int = 999,
    batch_size: int = 64,
    seed: int = 0,
) -> ConceptVector:
    """Fit a concept direction at `hook` (default: the final residual `blocks.{L-1}.hook_resid_post`) from
    `positive` (texts with the concept) and `negative` texts, on a seeded `train_frac` split of each side;
    the AUC is reported on the other part.

    `method`: "mean_diff" (difference of class means, normalised), "lda" (the mean difference whitened by the
    LedoitWolf pooled within-class covariance, Σ⁻¹(μ₊ − μ₋): the better separator when other features vary more
    than the concept) or "logistic" (sklearn logistic regression on the raw activations; its weight vector).
    """
    if method not in ("mean_diff", "lda", "logistic"):
        raise InputError(f"method must be 'mean_diff', 'lda' or 'logistic', got {method!r}.")
    hook = hook or final_resid_hook(model)
    _, pos_acts = reward_position_acts(model, positive, [hook], batch_size=batch_size)
    _, neg_acts = reward_position_acts(model, negative, [hook], batch_size=batch_size)
    xp, xn = pos_acts[hook].double().numpy(), neg_acts[hook].double().numpy()
    if len(xp) < 2 or len(xn) < 2:
        raise InputError("Each side needs at least 2 texts (one to fit, one to test).")
    rng = np.random.default_rng(seed)
    tp, hp = _split(len(xp), train_frac, rng)
    tn, hn = _split(len(xn), train_frac, rng)
    if method == "mean_diff":
        u = xp[tp].mean(0) - xn[tn].mean(0)
    elif method == "lda":
        x_train = np.r_[xp[tp] - xp[tp].mean(0), xn[tn] - xn[tn].mean(0)]
        cov = LedoitWolf(assume_centered=True).fit(x_train).covariance_
        u = np.linalg.solve(cov, xp[tp].mean(0) - xn[tn].mean(0))
    else:
        clf = LogisticRegression(max_iter=2000).fit(np.r_[xp[tp], xn[tn]], np.r_[np.ones(len(tp)), np.zeros(len(tn))])
        u = clf.coef_[0]
    norm = float(np.linalg.norm(u))
    if norm == 0:
        raise InputError("The two sides have identical activations at this hook: the concept direction is zero.")
    u = u / norm
    test_pos, test_neg = xp[hp] @ u, xn[hn] @ u
    lo, hi = bootstrap_percentile(
        lambda i, j: _auc(test_pos[i], test_neg[j]),
        (len(test_pos), len(test_neg)),
        n_resamples=n_boot,
        rng=rng,
        confidence=confidence,
    )
    typical = float(np.median(np.linalg.norm(np.r_[xp[tp], xn[tn]], axis=1)))
    result = ConceptVector(
        name=name,
        hook=hook,
        direction=torch.from_numpy(u).float(),
        method=method,
        typical_norm=typical,
        train_auc=_auc(xp[tp] @ u, xn[tn] @ u),
        test_auc=_auc(test_pos, test_neg),
        test_auc_low=lo,
        test_auc_high=hi,
        n_train=(len(tp), len(tn)),
        n_test=(len(hp), len(hn)),
        meta={"test_scores": (test_pos, test_neg)},
    )
    w_r = reward_direction_or_none(model)
    if hook == final_resid_hook(model) and w_r is not None:
        u_c = final_norm_centre(model, result.direction)
        result.alignment = cosine(u_c, w_r)
        null = random_cosine_null(len(u), result.alignment, confidence)
        result.alignment_p = null["p_value"]
        result.null_band = (null["band_low"], null["band_high"])
    return result


@dataclass(repr=False, kw_only=True)
class DoseResponse(LabeledTensor):
    """Rewards `[n_alpha, n_texts]` after adding α·s·u, the per-text slopes (reward per unit α), their mean with
    a CI, and at the final residual with a frozen norm the exact linear prediction."""

    values: Tensor | None = None  # type: ignore[assignment]  # derived from `rewards` (see `_derive`)
    dims: tuple[str, ...] = ()

    concept: str
    alphas: np.ndarray
    rewards: np.ndarray
    slopes: np.ndarray
    slope: float
    slope_low: float
    slope_high: float
    freeze_norm: bool
    predicted_slopes: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def _derive(self) -> tuple[Tensor, tuple[str, ...], dict[str, list[Any]]]:
        alphas = [float(a) for a in np.asarray(self.alphas)]
        return torch.from_numpy(np.asarray(self.rewards, dtype=np.float64)), ("alpha", "text"), {"alpha": alphas}

    @property
    def predicted_slope(self) -> float:
        return float(self.predicted_slopes.mean()) if self.predicted_slopes is not None else math.nan

    def to_frame(self) -> Any:
        """One row per α: mean reward change from α = 0 and its spread over texts."""
        base = self.rewards[np.argmin(np.abs(self.alphas))]
        d = self.rewards - base
        return frame(
            [
                {
                    "concept": self.concept,
                    "alpha": float(a),
                    "mean_reward": float(self.rewards[i].mean()),
                    "mean_change": float(d[i].mean()),
                    "sd_change": float(d[i].std(ddof=1)) if d.shape[1] > 1 else math.nan,
                    "freeze_norm": self.freeze_norm,
                }
                for i, a in enumerate(self.alphas)
            ]
        )

    def plot(self, ax: Axes | None = None) -> Any:
        """Mean reward change vs α (band: ±1 sd over texts), with the linear prediction when available."""
        if ax is None:
            _, ax = figure()
        base = self.rewards[np.argmin(np.abs(self.alphas))]
        d = self.rewards - base
        ax.plot(self.alphas, d.mean(1), marker="o", label="measured")
        if d.shape[1] > 1:
            ax.fill_between(self.alphas, d.mean(1) - d.std(1), d.mean(1) + d.std(1), alpha=0.2)
        if self.predicted_slopes is not None:
            ax.plot(self.alphas, self.alphas * self.predicted_slope, ls="--", label="linear (frozen norm)")
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xlabel("α (multiples of the typical residual norm)")
        ax.set_ylabel("reward change")
        ax.set_title(
            f"{self.concept}: slope {self.slope:.3g} [{self.slope_low:.3g}, {self.slope_high:.3g}]"
            f"{' (norm frozen)' if self.freeze_norm else ''}",
            fontsize=9,
        )
        ax.legend(fontsize="small")
        return ax


@torch.no_grad()
def dose_response(
    model: HookedRewardModel,
    concept: ConceptVector,
    texts: Any,
    alphas: Sequence[float] = (-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0),
    *,
    freeze_norm: bool = False,
    scale: float | None = None,
    confidence: float = 0.95,
    n_boot: int = 1999,
    seed: int = 0,
) -> DoseResponse:
    """Add `α · s · u` at `concept.hook`, at each row's reward position, for each α; s = `scale` or the concept's
    typical residual norm. `freeze_norm` holds `ln_final.hook_scale` at the clean run's values."""
    tokens, mask = model.prepare(texts)
    levels = np.asarray(sorted(set(float(a) for a in alphas) | {0.0}))
    s = float(scale if scale is not None else concept.typical_norm)
    u = concept.direction.float()
    rpos = model.reward_positions(mask, tokens)
    clean_r, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=[FINAL_SCALE])
    clean_scale = cache[FINAL_SCALE]
    rows = []
    for a in levels:

        def shift(x: Tensor, _b: Tensor, a: float = float(a)) -> Tensor:
            return x + a * s * u.to(x.device, x.dtype)

        add = reward_position_hook(rpos, shift)
        with model.hooks(fwd_hooks=[(concept.hook, add)]):
            if freeze_norm:
                with frozen_final_scale(model, clean_scale):
                    r = model(tokens, attention_mask=mask)
            else:
                r = model(tokens, attention_mask=mask)
        if r.ndim == 2:
            raise InputError("dose_response needs a single-output reward head.")
        rows.append(r.detach().double().cpu().numpy())
    rewards = np.stack(rows)
    x = levels - levels.mean()
    slopes = (x[:, None] * (rewards - rewards.mean(0))).sum(0) / (x**2).sum()
    lo, hi = (
        bootstrap_ci(slopes, confidence=confidence, n_resamples=n_boot, seed=seed)
        if len(slopes) > 1
        else (math.nan, math.nan)
    )
    predicted = None
    w_r = reward_direction_or_none(model)
    if concept.hook == final_resid_hook(model) and w_r is not None:
        u_c = final_norm_centre(model, u)
        sigma = clean_scale[torch.arange(len(rpos)), rpos.to(clean_scale.device)].reshape(-1).double().cpu()
        predicted = (s * float(u_c.double() @ w_r.double()) / sigma).numpy()
    return DoseResponse(
        concept=concept.name,
        alphas=levels,
        rewards=rewards,
        slopes=slopes,
        slope=float(slopes.mean()),
        slope_low=lo,
        slope_high=hi,
        freeze_norm=freeze_norm,
        predicted_slopes=predicted,
        meta={"scale": s, "hook": concept.hook},
    )
