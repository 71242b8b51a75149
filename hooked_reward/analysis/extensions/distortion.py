"""Distortion index: how far a reward model's preferences fall short of (or invert) each named dimension.

For each dimension k, probe pairs (preferred, dispreferred on k) give margins m = r(pref) − r(disp):

    AUC_k = P(r(pref) > r(disp)) = mean(1[m > 0] + ½·1[m = 0])
    c_k   = 2·AUC_k − 1 = mean(sign(m))            ∈ [−1, 1]   (coverage; BCa bootstrap CI over pairs)
    D_k   = 1 − max(0, c_k)                         ∈ [0, 1]    (distortion; 0 = always prefers the right side)
    inverted_k  ⇔  the CI of c_k lies below 0        (the model systematically prefers the wrong side)
    D     = Σ_k w_k D_k / Σ_k w_k                               (user importance weights, default equal)

No dimension is forced to be the worst: a model that gets every pair right has D_k = 0 everywhere.

Mechanistic view (optional, needs a linear head): each dimension's mean-difference direction at the final
residual, δ_k = mean_i (h(pref_i) − h(disp_i)) at the reward position, in the normed basis (centred for
LayerNorm, divided by the frozen `ln_final.hook_scale`; or the raw pre-norm `blocks.{L-1}.hook_resid_post`),
and its cosine with `W_R_eff`, against the exact random-direction null at width d (cos² ~ Beta(½, (d−1)/2)).
In the normed basis δ_k · W_R_eff equals the mean margin exactly (`readout`), a built-in check.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from hooked_reward.analysis.extensions._common import (
    cosine,
    figure,
    final_normed,
    frame,
    reward_direction_or_none,
    sign_score,
)
from hooked_reward.analysis.results import LabeledTensor
from hooked_reward.analysis.stats import (
    bootstrap_ci,
    check_nan_policy,
    finite_rows,
    percentile_interval,
    random_cosine_null,
)
from hooked_reward.errors import InputError
from hooked_reward.final_norm import final_norm_centre
from hooked_reward.outputs import select_output
from hooked_reward.pairs import PreferencePair, as_pairs

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from hooked_reward.model import HookedRewardModel

__all__ = ["DistortionResult", "distortion_from_margins", "distortion_index", "dimensions_from_tagged"]

#: A pair as `distortion_index` takes it: a `PreferencePair` (chosen = preferred), or a `(preferred, dispreferred)`
#: tuple of full texts (anything `pairs.as_pairs` reads).
Pair = PreferencePair | tuple[str, str]


@dataclass(repr=False, kw_only=True)
class DistortionResult(LabeledTensor):
    """Per-dimension coverage and distortion with intervals, the weighted overall index, and (optionally) the
    mechanistic cosines. Arrays are `[n_dims]`, in the order of `names`."""

    values: Tensor | None = None  # type: ignore[assignment]  # derived from `coverage` (see `_derive`)
    dims: tuple[str, ...] = ()

    names: list[str]
    n_pairs: np.ndarray
    auc: np.ndarray
    coverage: np.ndarray
    coverage_low: np.ndarray
    coverage_high: np.ndarray
    distortion: np.ndarray
    distortion_low: np.ndarray
    distortion_high: np.ndarray
    inverted: np.ndarray
    weights: np.ndarray
    overall: float
    overall_low: float
    overall_high: float
    mean_margin: np.ndarray
    confidence: float = 0.95
    mechanistic: dict[str, np.ndarray] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def _derive(self) -> tuple[Tensor, tuple[str, ...], dict[str, list[Any]]]:
        return (
            torch.from_numpy(np.asarray(self.coverage, dtype=np.float64)),
            ("dimension",),
            {"dimension": list(self.names)},
        )

    def to_frame(self) -> Any:
        """One row per dimension: n, AUC, coverage (+CI), distortion (+CI), inverted, weight, mechanistic cols."""
        rows = []
        for i, name in enumerate(self.names):
            row = {
                "dimension": name,
                "n_pairs": int(self.n_pairs[i]),
                "mean_margin": float(self.mean_margin[i]),
                "auc": float(self.auc[i]),
                "coverage": float(self.coverage[i]),
                "coverage_low": float(self.coverage_low[i]),
                "coverage_high": float(self.coverage_high[i]),
                "distortion": float(self.distortion[i]),
                "distortion_low": float(self.distortion_low[i]),
                "distortion_high": float(self.distortion_high[i]),
                "inverted": bool(self.inverted[i]),
                "weight": float(self.weights[i]),
            }
            if self.mechanistic is not None:
                for key, values in self.mechanistic.items():
                    row[key] = float(values[i])
            rows.append(row)
        return frame(rows)

    def summary(self) -> dict[str, Any]:
        """The overall index and its interval, plus the inverted dimensions (a JSON-friendly dict)."""
        return {
            "overall": self.overall,
            "overall_low": self.overall_low,
            "overall_high": self.overall_high,
            "inverted": [n for n, inv in zip(self.names, self.inverted, strict=True) if inv],
            "confidence": self.confidence,
        }

    def plot(self, ax: Axes | None = None) -> Any:
        """Coverage per dimension (`values`) with its CI, bars below 0 (inverted) red, on `ax` (a new figure's
        when None); returns the Axes."""
        if ax is None:
            _, ax = figure(1)
        x = np.arange(len(self.names))
        colors = ["tab:red" if inv else "tab:blue" for inv in self.inverted]
        err = np.vstack([self.coverage - self.coverage_low, self.coverage_high - self.coverage])
        ax.bar(x, self.coverage, color=colors, yerr=np.clip(err, 0, None), capsize=3)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_ylim(-1.05, 1.05)
        ax.set_xticks(x, self.names, rotation=45, ha="right")
        ax.set_ylabel("coverage c = 2·AUC − 1")
        ax.set_title(f"distortion D = {self.overall:.3f} [{self.overall_low:.3f}, {self.overall_high:.3f}]")
        return ax

    def plot_panels(self, fig: Any = None) -> Any:
        """Coverage per dimension with its CI; the mechanistic cosines, when present, in a second panel with
        the null band. Returns the Figure."""
        n = 2 if self.mechanistic is not None else 1
        if fig is None:
            fig, axes = figure(n)
        else:
            axes = fig.subplots(1, n)
        axes = list(axes) if n > 1 else [axes]
        self.plot(ax=axes[0])
        if self.mechanistic is not None:
            x = np.arange(len(self.names))
            m = self.mechanistic
            axes[1].bar(x, m["cos_w_r"], color="tab:gray")
            axes[1].axhspan(
                float(m["null_low"][0]),
                float(m["null_high"][0]),
                color="tab:orange",
                alpha=0.3,
                label="random-direction 95% band",
            )
            axes[1].set_xticks(x, self.names, rotation=45, ha="right")
            axes[1].set_ylabel("cos(mean Δ resid, W_R_eff)")
            axes[1].legend(fontsize="small")
        fig.tight_layout()
        return fig


def dimensions_from_tagged(pairs: Sequence[tuple[str, str, Sequence[str] | str]]) -> dict[str, list[Pair]]:
    """`[(preferred, dispreferred, tags), ...]` -> `{dimension: [(preferred, dispreferred), ...]}`; a pair
    tagged with several dimensions counts in each."""
    dims: dict[str, list[Pair]] = {}
    for pref, disp, tags in pairs:
        for tag in [tags] if isinstance(tags, str) else tags:
            dims.setdefault(tag, []).append((pref, disp))
    return dims


def _weights(names: Sequence[str], weights: Mapping[str, float] | Sequence[float] | None) -> np.ndarray:
    if weights is None:
        w = np.ones(len(names))
    elif isinstance(weights, Mapping):
        unknown = set(weights) - set(names)
        if unknown:
            raise InputError(f"Weights given for unknown dimensions {sorted(unknown)}; dimensions are {list(names)}.")
        w = np.array([float(weights.get(n, 1.0)) for n in names])
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (len(names),):
            raise InputError(f"{w.size} weights for {len(names)} dimensions.")
    if (w < 0).any() or w.sum() <= 0:
        raise InputError("Importance weights must be non-negative with a positive sum.")
    return w


def distortion_from_margins(
    margins: Mapping[str, Float[np.ndarray, " n"] | Sequence[float]],
    weights: Mapping[str, float] | Sequence[float] | None = None,
    *,
    confidence: float = 0.95,
    n_boot: int = 9999,
    seed: int = 0,
    nan_policy: str = "raise",
) -> DistortionResult:
    """The model-free distortion index from per-pair margins `{dimension: r(pref) − r(disp) per pair}`.

    Coverage CIs are BCa (scipy) over pairs; the overall index's CI resamples each dimension's pairs
    independently (percentile, `n_boot` draws). Example: margins (+1,+1,+1,+1) -> D = 0; (+1,−1,+1,−1) -> D = 1
    (a coin); (−1,−1,−1,−1) -> D = 1 and inverted. A non-finite margin raises `NonFiniteError` naming the
    dimension and pairs; `nan_policy="omit"` drops it (`meta["n_omitted"]` per dimension).
    """
    check_nan_policy(nan_policy, allowed=("raise", "omit"))
    n_omitted: dict[str, int] = {}
    names = list(margins)
    if not names:
        raise InputError("No dimensions given.")
    signs = []
    for name in names:
        m = np.asarray(margins[name], dtype=np.float64).ravel()
        m = m[finite_rows(m, what=f"distortion dimension {name!r}: margins (pairs by index)", nan_policy=nan_policy)]
        if m.size == 0:
            raise InputError(f"Dimension {name!r} has no (finite) margins.")
        n_omitted[name] = int(np.asarray(margins[name]).size - m.size)
        signs.append(sign_score(m))
    w = _weights(names, weights)
    cov = np.array([s.mean() for s in signs])
    cis = np.array([bootstrap_ci(s, confidence=confidence, n_resamples=n_boot, seed=seed) for s in signs])
    lo, hi = cis[:, 0], cis[:, 1]
    dist = 1.0 - np.maximum(0.0, cov)
    rng = np.random.default_rng(seed)
    boot_d = np.zeros(n_boot)
    for k, s in enumerate(signs):
        c_b = s[rng.integers(0, s.size, size=(n_boot, s.size))].mean(1)
        boot_d += w[k] * (1.0 - np.maximum(0.0, c_b))
    boot_d /= w.sum()
    overall_ci = percentile_interval(boot_d, confidence)
    return DistortionResult(
        names=names,
        n_pairs=np.array([s.size for s in signs]),
        auc=(cov + 1) / 2,
        coverage=cov,
        coverage_low=lo,
        coverage_high=hi,
        distortion=dist,
        distortion_low=1.0 - np.maximum(0.0, hi),
        distortion_high=1.0 - np.maximum(0.0, lo),
        inverted=hi < 0,
        weights=w,
        overall=float((w * dist).sum() / w.sum()),
        overall_low=float(overall_ci[0]),
        overall_high=float(overall_ci[1]),
        mean_margin=np.array([float(np.mean(np.asarray(margins[n], dtype=np.float64))) for n in names]),
        confidence=confidence,
        meta={"n_omitted": n_omitted},
    )


@torch.no_grad()
def distortion_index(
    model: HookedRewardModel,
    dimensions: Mapping[str, Sequence[Pair]] | Sequence[tuple[str, str, Sequence[str] | str]],
    weights: Mapping[str, float] | Sequence[float] | None = None,
    *,
    mechanistic: bool = True,
    basis: str = "normed",
    output: int | str | None = None,
    confidence: float = 0.95,
    n_boot: int = 9999,
    batch_size: int = 64,
    seed: int = 0,
    nan_policy: str = "raise",
) -> DistortionResult:
    """The distortion index of `model` on probe pairs, `{dimension: [(preferred, dispreferred), ...]}` (or
    tagged pairs, see `dimensions_from_tagged`). Texts are scored once each, even when shared by dimensions.

    `mechanistic`: also the cosine of each dimension's mean-difference direction at the final residual with
    `W_R_eff` (`basis="normed"`: the head's own basis, where δ·W_R_eff is the mean margin exactly; `"raw"`:
    the pre-norm `blocks.{L-1}.hook_resid_post`, centred for LayerNorm), with the random-direction null.
    `output` picks one output of a multi-output head.
    """
    if basis not in ("normed", "raw"):
        raise InputError(f"basis must be 'normed' or 'raw', got {basis!r}.")
    given = dict(dimensions) if isinstance(dimensions, Mapping) else dimensions_from_tagged(dimensions)
    dims = {name: [p.render(model) for p in as_pairs(items, label=name)] for name, items in given.items()}
    texts = list(dict.fromkeys(t for pairs in dims.values() for pair in pairs for t in pair))
    index = {t: i for i, t in enumerate(texts)}
    rewards, normed, raw, _ = final_normed(model, texts, batch_size=batch_size)
    rewards = select_output(rewards, output, names=model.output_names)
    margins = {}
    for name, pairs in dims.items():
        if not pairs:
            raise InputError(f"Dimension {name!r} has no pairs.")
        pref = torch.tensor([index[p] for p, _ in pairs])
        disp = torch.tensor([index[d] for _, d in pairs])
        margins[name] = (rewards[pref] - rewards[disp]).double().numpy()
    result = distortion_from_margins(
        margins, weights, confidence=confidence, n_boot=n_boot, seed=seed, nan_policy=nan_policy
    )
    w_r = reward_direction_or_none(model, output) if mechanistic else None
    if w_r is not None:
        raw = final_norm_centre(model, raw)
        acts = normed if basis == "normed" else raw
        cos, p, readout = [], [], []
        null = random_cosine_null(acts.shape[-1], confidence=confidence)
        for pairs in dims.values():
            pref = torch.tensor([index[p] for p, _ in pairs])
            disp = torch.tensor([index[d] for _, d in pairs])
            delta = (acts[pref] - acts[disp]).double().mean(0)
            cos.append(cosine(delta, w_r))
            p.append(random_cosine_null(acts.shape[-1], cos[-1])["p_value"])
            readout.append(float((normed[pref] - normed[disp]).double().mean(0) @ w_r.double()))
        k = len(dims)
        result.mechanistic = {
            "cos_w_r": np.array(cos),
            "cos_p_value": np.array(p),
            "readout": np.array(readout),
            "null_low": np.full(k, null["band_low"]),
            "null_high": np.full(k, null["band_high"]),
        }
        result.meta["basis"] = basis
    elif mechanistic:
        result.meta["mechanistic_skipped"] = "the head is not one affine map with a single output (no W_R_eff)"
    result.meta["n_texts"] = len(texts)
    result.meta["nan_note"] = (
        "inverted uses the coverage CI; NaN CIs mean fewer than 2 pairs"
        if any(math.isnan(x) for x in result.coverage_low)
        else ""
    )
    return result
