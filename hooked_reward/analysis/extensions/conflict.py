"""Reward-term conflict: do a reward model's objectives (or user-named terms) pull against each other?

Multi-objective heads (ArmoRM: per-objective rewards r = W·ĥ, transformed t = r·T, gate g(x), score = Σ_k g_k t_k):

* **On data**: the correlation of the objectives' transformed scores t_k over texts, with bootstrap CIs.
* **In weight space**: the whitened cosine of the objectives' effective rows R_k = (Tᵀ W_eff)_k (normed basis),

      cos_Σ(R_i, R_j) = R_i Σ R_jᵀ / sqrt(R_i Σ R_iᵀ · R_j Σ R_jᵀ),

  Σ the LedoitWolf-shrunk covariance of reward-position normed residuals on the texts: the correlation the
  rows *would* give on data like these (plain cosine when Σ = I). CIs resample texts (shrinkage held fixed).
* **The gate**: mean weight per objective, entropy of the normalised gate per prompt, variance across prompts,
  and the per-prompt effective direction w(x) = Σ_k g_k(x) R_k (score = ĥ · w(x) exactly, gate fixed).
* **Pairs** (a, b): Δscore = Σ_k ḡ_k Δt_k + Σ_k Δg_k t̄_k exactly (ḡ, t̄ the means of the two runs): per-objective
  terms with the gate held at its mean, plus the gate-change term. Two objectives *conflict* on a pair when
  their terms have opposite signs; we report how often, and which one's sign Δscore follows (which wins).

Single-output heads: the same on user-given term directions U_k (normed basis): term scores ĥ·U_k, whitened
cosines of U, and Δscore = Σ_k c_k Δ(ĥ·U_k) + Δĥ·(W_R_eff − Σ_k c_k U_k), with c the least-squares fit of
W_R_eff on the U_k (the last part, "remainder", is what the terms do not span). No gate.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float
from sklearn.covariance import ledoit_wolf_shrinkage
from torch import Tensor

from hooked_reward.analysis.extensions._common import (
    figure,
    frame,
    reward_direction_or_none,
)
from hooked_reward.analysis.results import LabeledTensor
from hooked_reward.analysis.stats import bootstrap_percentile
from hooked_reward.cache import RewardActivationCache
from hooked_reward.errors import InputError
from hooked_reward.final_norm import frozen_final_norm
from hooked_reward.names import FINAL_SCALE, final_resid_hook
from hooked_reward.pairs import PreferencePair, as_pairs

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from hooked_reward.model import HookedRewardModel

__all__ = ["ConflictResult", "whitened_cosine", "conflict_analysis", "has_gated_terms"]


def has_gated_terms(model: HookedRewardModel) -> bool:
    """Whether the model's head sums named terms under a gate (`head.term_names()`, e.g. ArmoRM's objectives) and
    the model has the hooks its `terms` read: then conflicts are analysed between those terms."""
    head = model.head
    return bool(head.term_names()) and all(h in model.hook_dict for h in head.term_hooks())


def whitened_cosine(
    rows: Float[Tensor, "k d"] | np.ndarray, cov: Float[Tensor, "d d"] | np.ndarray | None = None
) -> Float[np.ndarray, "k k"]:
    """`R Σ Rᵀ` normalised to unit diagonal: the correlation of the scores `x·R_k` for x with covariance Σ
    (Σ = I when None: plain cosine). Example: rows (1,0,0), (−1,1,0), (0,0,2), Σ = I -> −0.7071, 0, 0."""
    r = np.asarray(rows, dtype=np.float64)
    c = r @ r.T if cov is None else r @ np.asarray(cov, dtype=np.float64) @ r.T
    return _corr_from_cov(c)


def _corr_from_cov(c: np.ndarray) -> np.ndarray:
    sd = np.sqrt(np.clip(np.diag(c), 0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = c / np.outer(sd, sd)
    out[~np.isfinite(out)] = 0.0
    np.fill_diagonal(out, 1.0)
    return out


@dataclass(repr=False, kw_only=True)
class ConflictResult(LabeledTensor):
    """Everything `conflict_analysis` measured; `[K, K]` matrices in the order of `names`.

    `correlation`/`corr_low`/`corr_high`: data correlation of term scores with its CI; `whitened`/`wc_low`/
    `wc_high`: whitened cosine of the term rows with its CI; gate fields are None for single-output heads;
    `terms` `[P, K]`, `gate_term` `[P]` (0 without a gate), `remainder` `[P]` (0 for multi-objective heads),
    `delta` `[P]` (Δscore) with `split_error` = max |Σ terms + gate + remainder − Δ|; `conflicts`: one dict per
    objective pair (how often their terms disagree, and how often each wins).
    """

    values: Tensor | None = None  # type: ignore[assignment]  # derived from `correlation` (see `_derive`)
    dims: tuple[str, ...] = ()

    names: list[str]
    correlation: np.ndarray
    corr_low: np.ndarray
    corr_high: np.ndarray
    whitened: np.ndarray
    wc_low: np.ndarray
    wc_high: np.ndarray
    scores: np.ndarray
    gate_mean: np.ndarray | None = None
    gate_var: np.ndarray | None = None
    gate_entropy: np.ndarray | None = None
    effective_directions: np.ndarray | None = None
    terms: np.ndarray | None = None
    gate_term: np.ndarray | None = None
    remainder: np.ndarray | None = None
    delta: np.ndarray | None = None
    split_error: float = float("nan")
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def _derive(self) -> tuple[Tensor, tuple[str, ...], dict[str, list[Any]]]:
        names = list(self.names)
        return (
            torch.from_numpy(np.asarray(self.correlation)),
            ("objective", "other"),
            {"objective": names, "other": names},
        )

    def to_frame(self) -> Any:
        """One row per objective pair (i < j): correlation and whitened cosine with CIs, conflict counts."""
        by_pair = {(c["i"], c["j"]): c for c in self.conflicts}
        rows = []
        for a, b in itertools.combinations(range(len(self.names)), 2):
            i, j = self.names[a], self.names[b]
            row = {
                "i": i,
                "j": j,
                "correlation": self.correlation[a, b],
                "corr_low": self.corr_low[a, b],
                "corr_high": self.corr_high[a, b],
                "whitened_cos": self.whitened[a, b],
                "wc_low": self.wc_low[a, b],
                "wc_high": self.wc_high[a, b],
            }
            row.update({k: v for k, v in by_pair.get((i, j), {}).items() if k not in ("i", "j")})
            rows.append(row)
        return frame(rows)

    def gate_frame(self) -> Any:
        """One row per objective: mean gate weight and its variance across prompts (empty without a gate)."""
        if self.gate_mean is None or self.gate_var is None:
            return frame([])
        return frame(
            [
                {"objective": n, "gate_mean": float(m), "gate_var": float(v)}
                for n, m, v in zip(self.names, self.gate_mean, self.gate_var, strict=True)
            ]
        )

    def plot(self, ax: Axes | None = None, which: str = "correlation") -> Any:
        """Heatmap of the score correlation (`values`; `which="whitened"`: the whitened cosine of the rows) on
        `ax` (a new figure's when None); returns the Axes."""
        if which not in ("correlation", "whitened"):
            raise InputError(f"which={which!r}: choose 'correlation' or 'whitened'.")
        if ax is None:
            _, ax = figure(1, width=4.6)
        k = np.arange(len(self.names))
        mat, title = (
            (self.correlation, "score correlation")
            if which == "correlation"
            else (
                self.whitened,
                "whitened cosine of rows",
            )
        )
        im = ax.imshow(mat, vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set_xticks(k, self.names, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(k, self.names, fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.figure.colorbar(im, ax=ax)
        return ax

    def plot_panels(self, fig: Any = None) -> Any:
        """Data correlation and whitened cosine heatmaps, and the mean per-objective terms of the pairs;
        returns the Figure."""
        n_panels = 3 if self.terms is not None else 2
        if fig is None:
            fig, axes = figure(n_panels, width=4.6)
        else:
            axes = fig.subplots(1, n_panels)
        self.plot(ax=axes[0], which="correlation")
        self.plot(ax=axes[1], which="whitened")
        if all(x is not None for x in (self.terms, self.gate_term, self.remainder, self.delta)):
            assert self.terms is not None and self.gate_term is not None  # (narrowed for the type checker)
            assert self.remainder is not None and self.delta is not None
            labels = list(self.names) + ["gate", "remainder"]
            vals = np.concatenate([self.terms.mean(0), [self.gate_term.mean(), self.remainder.mean()]])
            axes[2].bar(np.arange(len(labels)), vals, color=["tab:blue"] * len(self.names) + ["tab:orange", "tab:gray"])
            axes[2].set_xticks(np.arange(len(labels)), labels, rotation=45, ha="right", fontsize=7)
            axes[2].set_title(f"mean Δscore split (sums to {self.delta.mean():.3g})", fontsize=9)
        fig.tight_layout()
        return fig


def _whitened_with_ci(
    rows: np.ndarray, x: np.ndarray, n_boot: int, rng: np.random.Generator, confidence: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Whitened cosine of `rows` under the LedoitWolf covariance of `x` `[n, d]`, with a bootstrap CI over
    rows of x (the shrinkage intensity δ fixed at its full-data value). Uses Σ_LW = (1−δ)S + δ·tr(S)/d·I, so
    only the projections x·R_kᵀ and tr(S) are needed per resample."""
    n, d = x.shape
    delta = float(ledoit_wolf_shrinkage(x - x.mean(0)))

    def compute(idx: np.ndarray) -> np.ndarray:
        xs = x[idx]
        xc = xs - xs.mean(0)
        proj = xc @ rows.T
        mu = float((xc**2).sum() / n / d)
        c = (1 - delta) * proj.T @ proj / n + delta * mu * rows @ rows.T
        return _corr_from_cov(c)

    point = compute(np.arange(n))
    lo, hi = bootstrap_percentile(compute, n, n_resamples=n_boot, rng=rng, confidence=confidence)
    return point, lo, hi, delta


def _conflicts(names: list[str], terms: np.ndarray, delta: np.ndarray, tol: float) -> list[dict[str, Any]]:
    out = []
    for a, b in itertools.combinations(range(len(names)), 2):
        ta, tb = terms[:, a], terms[:, b]
        active = (np.abs(ta) > tol) & (np.abs(tb) > tol)
        disagree = active & (np.sign(ta) != np.sign(tb))
        n_dis = int(disagree.sum())
        a_wins = int((disagree & (np.sign(delta) == np.sign(ta))).sum())
        b_wins = int((disagree & (np.sign(delta) == np.sign(tb))).sum())
        out.append(
            {
                "i": names[a],
                "j": names[b],
                "n_pairs": int(len(delta)),
                "n_disagree": n_dis,
                "disagree_rate": n_dis / len(delta) if len(delta) else math.nan,
                "i_wins": a_wins / n_dis if n_dis else math.nan,
                "j_wins": b_wins / n_dis if n_dis else math.nan,
            }
        )
    return out


@torch.no_grad()
def _run(
    model: HookedRewardModel, texts: Any, hooks: Sequence[str], batch_size: int
) -> tuple[Tensor, dict[str, Tensor]]:
    tokens, mask = model.prepare(texts)
    final = final_resid_hook(model)
    rewards: list[Tensor] = []
    store: dict[str, list[Tensor]] = {h: [] for h in [*hooks, "normed"]}
    for s in range(0, tokens.shape[0], batch_size):
        tok, msk = tokens[s : s + batch_size], mask[s : s + batch_size]
        r, cache = model.run_with_cache(
            tok, attention_mask=msk, names_filter=[*hooks, final, FINAL_SCALE], positions="reward"
        )
        rewards.append(r.float().cpu())
        for h in hooks:
            store[h].append(cache[h].float().cpu())
        store["normed"].append(frozen_final_norm(model, cache[final][:, 0], cache[FINAL_SCALE].reshape(-1, 1)).cpu())
    return torch.cat(rewards), {h: torch.cat(v) for h, v in store.items()}


def _acts_cache(model: HookedRewardModel, acts: dict[str, Tensor]) -> RewardActivationCache:
    """`_run`'s per-text activations (one row per text, at the reward position) as a cache, for the head's
    `terms` and `pair_split`."""
    return RewardActivationCache(dict(acts), model, reward_pos=torch.zeros(len(acts["normed"]), dtype=torch.long))


def _is_batch_pair(pairs: Any) -> bool:
    return (
        isinstance(pairs, tuple)
        and len(pairs) == 2
        and isinstance(pairs[0], tuple)
        and len(pairs[0]) == 2
        and isinstance(pairs[0][0], Tensor)
    )


def conflict_analysis(
    model: HookedRewardModel,
    texts: Any,
    pairs: Sequence[PreferencePair | Mapping[str, Any] | tuple[str, str]] | tuple[Any, Any] | None = None,
    *,
    directions: Float[Tensor, "k d_model"] | None = None,
    names: Sequence[str] | None = None,
    use_transform: bool = True,
    confidence: float = 0.95,
    n_boot: int = 999,
    tol: float = 1e-6,
    batch_size: int = 64,
    seed: int = 0,
) -> ConflictResult:
    """Conflict between a model's reward terms on `texts` (and, with `pairs`, the exact split of each
        Δscore = score(chosen) − score(rejected) into per-term pieces). `pairs`: `PreferencePair`s, mappings with
        `chosen`/`rejected`, or `(chosen, rejected)` tuples (the one tuple order of `pairs.as_pairs`, preferred side
        first; a prompt is rendered as `PreferencePair.render` does). `pairs` may also be two equally long batches
    `((tokens_a, mask_a), (tokens_b, mask_b))`. Per-objective pair terms always use the transformed objectives
    (what the score sums).

        Multi-objective heads with a gate (ArmoRM) are read through their hooks; `use_transform` uses the
        transformed objectives t = r·T (what the gate combines) rather than the raw r. Single-output heads need
        `directions` `[K, d_model]` in the normed basis (the basis of `W_R_eff`) and optional `names`.
    """
    rng = np.random.default_rng(seed)
    head = model.head
    term_hooks = head.term_hooks()
    gated = has_gated_terms(model)
    if gated and directions is None:
        names = head.term_names()  # e.g. the objectives, which the gate weighs
        w_eff = model.W_R_eff.detach().float().cpu().reshape(len(names), -1).double()
        transformed = head.term_directions(w_eff, transformed=True)  # ArmoRM: Tᵀ W_R_eff
        rows = (transformed if use_transform else w_eff).numpy()
        rewards, acts = _run(model, texts, term_hooks, batch_size)
        head_terms = head.terms(_acts_cache(model, acts), transformed=use_transform)
        scores = head_terms.values.double().numpy()
        g = head_terms.weights.double().numpy()
        p = g / g.sum(1, keepdims=True)
        entropy = -(np.where(p > 0, p * np.log(p), 0.0)).sum(1)
        eff = g @ transformed.numpy()
        result_gate = dict(
            gate_mean=g.mean(0),
            gate_var=g.var(0, ddof=1) if len(g) > 1 else np.zeros(len(names)),
            gate_entropy=entropy,
            effective_directions=eff,
        )
    else:
        if directions is None:
            raise InputError(
                "This head has no gated objectives; pass directions=[K, d_model] (term directions in the normed "
                "basis of W_R_eff) to analyse conflicts between named terms."
            )
        rows = np.asarray(torch.as_tensor(directions).detach().float().cpu(), dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != model.cfg.d_model:
            raise InputError(f"directions must be [K, {model.cfg.d_model}], got {tuple(rows.shape)}.")
        names = list(names) if names is not None else [f"term_{i}" for i in range(rows.shape[0])]
        rewards, acts = _run(model, texts, [], batch_size)
        scores = acts["normed"].double().numpy() @ rows.T
        result_gate = {}
    x = acts["normed"].double().numpy()
    corr = _corr_from_cov(np.cov(scores, rowvar=False))
    corr_lo, corr_hi = bootstrap_percentile(
        lambda i: _corr_from_cov(np.cov(scores[i], rowvar=False)),
        len(scores),
        n_resamples=n_boot,
        rng=rng,
        confidence=confidence,
    )
    wc, wc_lo, wc_hi, shrink = _whitened_with_ci(rows, x, n_boot, rng, confidence)
    result = ConflictResult(
        names=names,
        correlation=corr,
        corr_low=corr_lo,
        corr_high=corr_hi,
        whitened=wc,
        wc_low=wc_lo,
        wc_high=wc_hi,
        scores=scores,
        **result_gate,
    )
    result.meta.update(shrinkage=shrink, n_texts=int(x.shape[0]), gated=gated and directions is None)
    if pairs:
        if _is_batch_pair(pairs):
            a_texts, b_texts = pairs
        else:
            rendered = [p.render(model) for p in as_pairs(pairs, where="pairs")]
            a_texts, b_texts = [a for a, _ in rendered], [b for _, b in rendered]
        hooks = term_hooks if result.meta["gated"] else []
        r_a, acts_a = _run(model, a_texts, hooks, batch_size)
        r_b, acts_b = _run(model, b_texts, hooks, batch_size)
        delta = (r_a - r_b).double().numpy()
        if result.meta["gated"]:  # the head's own split of Δscore: per-term pieces and its gate's term
            split = head.pair_split(_acts_cache(model, acts_a), _acts_cache(model, acts_b)).detail
            terms = split["objectives"].double().numpy()
            gate_term = split["gate"].double().numpy().sum(1)
            remainder = np.zeros(len(delta))
        else:
            dx = (acts_a["normed"] - acts_b["normed"]).double().numpy()
            w_r = reward_direction_or_none(model)
            if w_r is None:
                raise InputError("Splitting Δscore on term directions needs a single-output linear head (W_R_eff).")
            w_np = w_r.double().numpy()
            coef, *_ = np.linalg.lstsq(rows.T, w_np, rcond=None)
            terms = (dx @ rows.T) * coef
            remainder = dx @ (w_np - coef @ rows)
            gate_term = np.zeros(len(delta))
            result.meta["term_coefficients"] = coef
        result.terms, result.gate_term, result.remainder, result.delta = terms, gate_term, remainder, delta
        result.split_error = float(np.abs(terms.sum(1) + gate_term + remainder - delta).max())
        result.conflicts = _conflicts(names, terms, delta, tol)
    return result
