"""Divergence-aware patching: is a patched run still on the model's own activation distribution?

A patch (zero-ablation, mean-ablation, a transplanted activation) can push the residual stream somewhere the
model never goes on real text; the reward it then reports says little about the clean mechanism. We fit the
distribution of reward-position residuals on reference texts, per layer:

    x ∈ R^d  ─centre (μ)─▶  z = V_k (x − μ) ∈ R^k            (PCA, top k directions of the reference set)
             (+ e = ‖(x − μ) − V_kᵀ z‖, the energy outside the k directions, when k < d)
    f = (z, e)  ~  N(m, Σ),  Σ = sklearn LedoitWolf (shrunk) covariance of f on the reference set
    D(x) = sqrt((f − m)ᵀ Σ⁻¹ (f − m))                        (Mahalanobis distance)

The score of a run is S = max over layers downstream of the patch site of D_l / median_l (each layer's
distance over its held-out median, so layers are comparable), and the flag threshold is the 99th percentile
of S over *held-out clean texts* (not a constant: a cut-off of 2 flags everything in 4096 dimensions). The
threshold is computed for the same set of layers as the run it is compared with, so a clean run is flagged
at the nominal rate (≈1%) whichever site is patched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float
from sklearn.covariance import LedoitWolf
from torch import Tensor

from hooked_reward.analysis.extensions._common import (
    figure,
    frame,
    reward_position_acts,
)
from hooked_reward.analysis.patching import reward_position_hook
from hooked_reward.analysis.results import LabeledTensor
from hooked_reward.errors import InputError
from hooked_reward.names import act_name, layer_of
from hooked_reward.positions import position_choice

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from hooked_reward.model import HookedRewardModel

__all__ = [
    "GaussianDensity",
    "ResidualDensity",
    "DivergenceResult",
    "fit_residual_density",
    "score_patched_runs",
    "ablation_hooks",
    "ablation_sweep",
]


@dataclass
class GaussianDensity:
    """One layer's reference distribution: mean `[d]`, PCA basis `[k, d]`, LedoitWolf fit on the features."""

    mean: Float[np.ndarray, " d"]
    basis: Float[np.ndarray, "k d"]
    complement: bool
    location: Float[np.ndarray, " f"]
    precision: Float[np.ndarray, "f f"]
    shrinkage: float

    @classmethod
    def fit(cls, x: Float[np.ndarray, "n d"], k: int = 32) -> GaussianDensity:
        """Fit on reference rows `x` `[n, d]`: PCA to `min(k, n − 1, d)` dims, plus the off-subspace energy
        as one more feature when that is fewer than d, then LedoitWolf."""
        x = np.asarray(x, dtype=np.float64)
        n, d = x.shape
        if n < 3:
            raise InputError(f"Fitting a residual density needs at least 3 reference rows, got {n}.")
        mean = x.mean(0)
        xc = x - mean
        k = int(min(k, n - 1, d))
        _, _, vt = np.linalg.svd(xc, full_matrices=False)
        basis = vt[:k]
        density = cls(mean, basis, k < d, np.zeros(0), np.zeros((0, 0)), 0.0)
        feats = density.features(x)
        lw = LedoitWolf().fit(feats)
        density.location, density.precision, density.shrinkage = lw.location_, lw.precision_, float(lw.shrinkage_)
        return density

    def features(self, x: Float[np.ndarray, "n d"]) -> Float[np.ndarray, "n f"]:
        """PCA coordinates (and the off-subspace energy when `complement`)."""
        xc = np.asarray(x, dtype=np.float64) - self.mean
        z = xc @ self.basis.T
        if not self.complement:
            return z
        rest = np.linalg.norm(xc - z @ self.basis, axis=1, keepdims=True)
        return np.concatenate([z, rest], axis=1)

    def distance(self, x: Float[np.ndarray, "n d"]) -> Float[np.ndarray, " n"]:
        """Mahalanobis distance of each row under the fitted (shrunk) Gaussian."""
        f = self.features(x) - self.location
        return np.sqrt(np.maximum(np.einsum("nf,fg,ng->n", f, self.precision, f), 0.0))


@dataclass
class ResidualDensity:
    """Per-layer densities of reward-position residuals and their held-out calibration.

    `hooks`: the residual hooks fitted (in layer order); `held_out`: held-out clean distances over each
    layer's held-out median, `[n_held_out, n_hooks]`, from which thresholds are read.
    """

    hooks: list[str]
    densities: list[GaussianDensity]
    medians: np.ndarray
    held_out: np.ndarray
    quantile: float = 0.99
    meta: dict[str, Any] = field(default_factory=dict)

    def layers_from(self, layer: int) -> list[int]:
        """Indices of the fitted hooks at or downstream of block `layer`."""
        idx = [i for i, h in enumerate(self.hooks) if layer_of(h) >= layer]
        if not idx:
            raise InputError(f"No fitted residual hook lies at or after layer {layer}; fitted: {self.hooks}.")
        return idx

    def threshold(self, layer: int = -1) -> float:
        """The `quantile` of the held-out score over the hooks from `layer` on (the flag threshold)."""
        return float(np.quantile(self.held_out[:, self.layers_from(layer)].max(1), self.quantile))

    def layer_distances(self, acts: Mapping[str, Tensor | np.ndarray]) -> Float[np.ndarray, "n n_hooks"]:
        """Mahalanobis distance per layer `[n, n_hooks]` of reward-position residuals `{hook: [n, d]}`."""
        pairs = zip(self.hooks, self.densities, strict=True)
        cols = [dens.distance(np.asarray(acts[h], dtype=np.float64)) for h, dens in pairs]
        return np.stack(cols, axis=1)

    def score(self, acts: Mapping[str, Tensor | np.ndarray], layer: int = -1) -> Float[np.ndarray, " n"]:
        """The run score S: max over hooks from `layer` on of distance / held-out median."""
        idx = self.layers_from(layer)
        return (self.layer_distances(acts) / self.medians)[:, idx].max(1)


def fit_residual_density(
    model: HookedRewardModel,
    reference: Any,
    held_out: Any,
    *,
    hooks: Sequence[str] | None = None,
    k: int = 32,
    quantile: float = 0.99,
    batch_size: int = 64,
) -> ResidualDensity:
    """Fit per-layer reward-position residual densities on `reference` texts (or `(tokens, mask)`), and
    calibrate on `held_out` clean texts (disjoint from the reference; a few hundred make the 99th percentile
    meaningful: with n held-out texts its resolution is 1/n). `hooks` default: every `blocks.{l}.hook_resid_post`.
    """
    hooks = list(hooks) if hooks is not None else [act_name("resid_post", i) for i in range(model.cfg.n_layers)]
    _, ref = reward_position_acts(model, reference, hooks, batch_size=batch_size)
    _, held = reward_position_acts(model, held_out, hooks, batch_size=batch_size)
    densities = [GaussianDensity.fit(ref[h].double().numpy(), k=k) for h in hooks]
    dist = np.stack([d.distance(held[h].double().numpy()) for h, d in zip(hooks, densities, strict=False)], axis=1)
    medians = np.median(dist, axis=0)
    medians = np.where(medians > 0, medians, 1.0)
    return ResidualDensity(
        hooks,
        densities,
        medians,
        dist / medians,
        quantile,
        meta={"n_reference": int(ref[hooks[0]].shape[0]), "n_held_out": int(dist.shape[0]), "k": k},
    )


@dataclass(repr=False, kw_only=True)
class DivergenceResult(LabeledTensor):
    """One row per patched run: its reward change, divergence score and flag.

    `scores` is `[n_runs, batch]` (per input row), `reward_change` `[n_runs, batch]` (patched − clean),
    `thresholds` `[n_runs]` (each run's threshold for its downstream layers). A run is `flagged` when more
    than half its rows score above the threshold (`frac_flagged` gives the exact rate).
    """

    values: Tensor | None = None  # type: ignore[assignment]  # derived from `scores` (see `_derive`)
    dims: tuple[str, ...] = ()

    names: list[str]
    scores: np.ndarray
    reward_change: np.ndarray
    thresholds: np.ndarray
    from_layer: list[int]
    meta: dict[str, Any] = field(default_factory=dict)

    def _derive(self) -> tuple[Tensor, tuple[str, ...], dict[str, list[Any]]]:
        return torch.from_numpy(np.asarray(self.scores, dtype=np.float64)), ("run", "row"), {"run": list(self.names)}

    @property
    def frac_flagged(self) -> np.ndarray:
        return (self.scores > self.thresholds[:, None]).mean(1)

    @property
    def flagged(self) -> np.ndarray:
        return self.frac_flagged > 0.5

    def to_frame(self) -> Any:
        """One row per run: name, mean Δreward, median score, threshold, fraction of rows flagged, flagged."""
        return frame(
            [
                {
                    "patch": name,
                    "from_layer": self.from_layer[i],
                    "mean_reward_change": float(self.reward_change[i].mean()),
                    "median_divergence": float(np.median(self.scores[i])),
                    "threshold": float(self.thresholds[i]),
                    "frac_flagged": float(self.frac_flagged[i]),
                    "flagged": bool(self.flagged[i]),
                    **{k: v[i] for k, v in self.meta.get("columns", {}).items()},
                }
                for i, name in enumerate(self.names)
            ]
        )

    def plot(self, ax: Axes | None = None) -> Any:
        """Reward change against divergence (median over rows, log scale), flagged runs in red, threshold
        lines, on `ax` (a new figure's when None); returns the Axes."""
        if ax is None:
            _, ax = figure()
        med = np.median(self.scores, axis=1)
        change = self.reward_change.mean(1)
        colors = ["tab:red" if f else "tab:blue" for f in self.flagged]
        ax.scatter(med, change, c=colors)
        for i, name in enumerate(self.names):
            ax.annotate(name, (med[i], change[i]), fontsize=7)
        for t in np.unique(self.thresholds):
            ax.axvline(t, color="tab:orange", ls="--", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("divergence S (median over rows; dashed: 99% clean threshold)")
        ax.set_ylabel("mean reward change")
        return ax


def score_patched_runs(
    model: HookedRewardModel,
    tokens: Any,
    mask: Tensor | None,
    fwd_hooks_list: Sequence[Sequence[tuple[str, Callable]]],
    density: ResidualDensity,
    *,
    names: Sequence[str] | None = None,
    from_layers: Sequence[int] | None = None,
    batch_size: int = 64,
) -> DivergenceResult:
    """Run `tokens` once clean and once under each set of forward hooks (a patch), and score each patched
    run's downstream reward-position residuals against `density`.

    Each hook set sees the whole batch in one forward pass (hooks may hold per-row sources).
    `from_layers[i]`: the first layer whose residual the i-th patch can change (default: the smallest block
    index among its hook names; hooks before the blocks, e.g. `hook_embed`, give every layer).
    """
    tokens, mask = model.prepare(tokens, attention_mask=mask)
    clean_r, _ = reward_position_acts(model, tokens, [density.hooks[0]], attention_mask=mask, batch_size=batch_size)
    names = list(names) if names is not None else [f"patch_{i}" for i in range(len(fwd_hooks_list))]
    scores, changes, thresholds, layers = [], [], [], []
    for i, hooks in enumerate(fwd_hooks_list):
        layer = from_layers[i] if from_layers is not None else min((layer_of(h) for h, _ in hooks), default=-1)
        # the hooks are built for the whole batch (per-row sources), so a patched run is one forward pass
        r, acts = reward_position_acts(
            model, tokens, density.hooks, attention_mask=mask, batch_size=tokens.shape[0], fwd_hooks=hooks
        )
        scores.append(density.score(acts, layer))
        changes.append((r - clean_r).double().numpy().reshape(r.shape[0], -1).mean(-1))
        thresholds.append(density.threshold(layer))
        layers.append(layer)
    return DivergenceResult(
        names=names,
        scores=np.stack(scores),
        reward_change=np.stack(changes),
        thresholds=np.array(thresholds),
        from_layer=layers,
    )


def ablation_hooks(
    model: HookedRewardModel,
    hook: str,
    tokens: Tensor,
    mask: Tensor,
    mode: str = "zero",
    *,
    reference: Any = None,
    positions: str = "reward",
    seed: int = 0,
) -> list[tuple[str, Callable]]:
    """Forward hooks that ablate `hook` for the batch `(tokens, mask)`.

    `mode="zero"`: zeros. `mode="resample"`: each row gets the activation of a randomly drawn `reference` text
    (a resample ablation: a value the component really takes, so the run should stay on-distribution).
    `positions="reward"`: only at each row's reward position (resampling then reads the reference's reward
    position, so lengths need not match); `"all"`: every position (resampling then needs equal lengths).
    """
    if mode not in ("zero", "resample"):
        raise InputError(f"mode must be 'zero' or 'resample', got {mode!r}.")
    positions = position_choice(positions)
    rpos = model.reward_positions(mask, tokens)
    if mode == "zero":
        if positions == "all":
            return [(hook, lambda act, hook: torch.zeros_like(act))]
        return [(hook, reward_position_hook(rpos, lambda rows, _b: torch.zeros_like(rows)))]
    if reference is None:
        raise InputError("Resample ablation needs reference texts (reference=...).")
    ref_tok, ref_mask = model.prepare(reference)
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randint(0, ref_tok.shape[0], (tokens.shape[0],), generator=gen)
    if positions == "reward":
        _, acts = reward_position_acts(model, (ref_tok, ref_mask), [hook])
        src = acts[hook][pick]
        return [(hook, reward_position_hook(rpos, lambda rows, _b: src.to(rows.device).reshape(rows.shape)))]
    if ref_tok.shape[1] != tokens.shape[1]:
        raise InputError("Resampling at every position needs reference texts of the same padded length.")
    with torch.no_grad():
        _, cache = model.run_with_cache(ref_tok, attention_mask=ref_mask, names_filter=[hook])
    full = cache[hook][pick]
    return [(hook, lambda act, hook: full.to(act.device, act.dtype).reshape(act.shape))]


def ablation_sweep(
    model: HookedRewardModel,
    texts: Any,
    density: ResidualDensity,
    components: Sequence[str],
    *,
    reference: Any,
    modes: Sequence[str] = ("zero", "resample"),
    positions: str = "reward",
    batch_size: int = 64,
    seed: int = 0,
) -> DivergenceResult:
    """Zero- and resample-ablate each component hook (e.g. `blocks.{l}.hook_attn_out`, `hook_mlp_out`) on
    `texts`; reward changes side by side with each run's divergence. A large zero-ablation effect that is
    flagged while the resample effect is small is an off-distribution artefact, not a mechanism."""
    tokens, mask = model.prepare(texts)
    hooks_list, names = [], []
    for comp in components:
        for mode in modes:
            hooks_list.append(
                ablation_hooks(model, comp, tokens, mask, mode, reference=reference, positions=positions, seed=seed)
            )
            names.append(f"{comp}:{mode}")
    res = score_patched_runs(model, tokens, mask, hooks_list, density, names=names, batch_size=batch_size)
    res.meta["columns"] = {"component": [n.split(":")[0] for n in names], "mode": [n.split(":")[1] for n in names]}
    return res
