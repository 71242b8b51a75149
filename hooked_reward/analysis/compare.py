"""Compare two reward models (or two checkpoints of one) on the same preference pairs.

Four views, each number with a bootstrap confidence interval over pairs:

* **Behaviour** — margins ``m = r(chosen) − r(rejected)`` of each model; their Pearson, Spearman and
  Kendall τ correlation (BCa bootstrap, pairs resampled jointly); the rate at which both models prefer the
  same response; each model's accuracy on labelled pairs (chosen is the labelled-better response).
* **Formation** — the norm-exact reward lens of the margin per layer: the residual stream accumulated up to
  each layer at the reward position, divided by that run's frozen final-norm scale (``ln_final.hook_scale``,
  centred first for LayerNorm) and dotted with ``W_R_eff`` (``cache.reward_attrs(cache.accumulated_resid())``),
  chosen minus rejected.  The last point equals the model's margin exactly.  Curves are plotted on relative
  depth ``layer / n_layers`` (0 = embeddings, 1 = final residual) so models of different depth overlay.  The
  *formation depth* is the first relative depth at which the mean lens margin reaches half the final mean
  margin in the final margin's direction.
* **Mechanism** — attribution profile: each component's share of the per-pair |Δ| of direct reward
  attribution of the margin (``mean_i |a_ci| / Σ_c mean_i |a_ci|``), summed in bins of relative depth;
  the two profiles compared by ``1 − total variation distance`` (1 = identical).
* **Geometry** — linear CKA between the models' reward-position residuals for every pair of layers
  (chosen and rejected texts pooled; invariant to rotations and isotropic scaling, and defined across
  different widths).  Only when the residual bases are shared (same ``d_model`` and architecture, and the
  user says so or the embedding matrices are near-identical — two checkpoints of one model), the cosine of
  the norm-folded reward directions ``W_R_eff``, raw and whitened by the data covariance Σ (Ledoit–Wolf, on
  the final residual after the norm's centring and scale, before its gain — the space ``W_R_eff`` reads).
  The whitened cosine is ``cos(Σ^{1/2} w_a, Σ^{1/2} w_b) = w_aᵀΣw_b / sqrt(w_aᵀΣw_a · w_bᵀΣw_b)``: whitening
  the data (x → Σ^{-1/2}x) maps a read-out direction w to Σ^{1/2}w, and the number equals the correlation,
  over the data, of the two directions' read-outs.  With Σ = diag(4, 1), w_a = (1, 0), w_b = (1, 1): raw
  0.7071, whitened 0.8944.  Across different bases a cosine is meaningless and is refused.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Bool, Float
from sklearn.covariance import LedoitWolf
from tqdm.auto import tqdm

from hooked_reward.analysis.probes.suite import render_and_tokenize
from hooked_reward.analysis.results import LabeledTensor, require_pyplot
from hooked_reward.analysis.stats import (
    accuracy,
    agreement,
    bootstrap_ci,
    bootstrap_items_ci,
    bootstrap_mean_ci,
    check_nan_policy,
    cka_matrix,
    finite_rows,
    kendall,
    linear_cka,
    pearson_along,
    percentile_interval,
    spearman_along,
)
from hooked_reward.errors import InputError
from hooked_reward.final_norm import reward_direction
from hooked_reward.names import Component
from hooked_reward.outputs import output_index, select_output
from hooked_reward.pairs import PreferencePair, as_pairs

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "CompareResult",
    "ModelRun",
    "collect_run",
    "compare_models",
    "linear_cka",
    "cka_matrix",
    "whitened_cosine",
    "reward_direction_cosines",
    "shared_basis",
    "formation_depth",
]

Render = Callable[[str, str], str]
Estimate = tuple[float, float, float]  # value, ci_low, ci_high


# ----------------------------------------------------------------------------------------- data collection
@dataclass
class ModelRun:
    """What one model computed on the pairs (``n`` pairs, ``L`` layers, components ``C``).

    ``lens_*``: ``[L+1, n]`` reward lens (without ``b_R_eff``) of chosen / rejected; the last row plus
    ``b_R_eff`` is the reward.  ``attr_*``: ``[C, n]`` direct reward attribution per component.
    ``resid_*``: ``[L+1, n, d_model]`` accumulated residual at the reward position.  ``xnorm_*``: ``[n,
    d_model]`` final residual through the norm's centring and frozen scale (no gain).
    """

    name: str
    r_chosen: np.ndarray
    r_rejected: np.ndarray
    lens_chosen: np.ndarray
    lens_rejected: np.ndarray
    attr_chosen: np.ndarray
    attr_rejected: np.ndarray
    labels: list[Component]
    resid_chosen: np.ndarray
    resid_rejected: np.ndarray
    xnorm_chosen: np.ndarray
    xnorm_rejected: np.ndarray
    n_layers: int
    w_eff: np.ndarray

    @property
    def margins(self) -> Float[np.ndarray, " n"]:
        return self.r_chosen - self.r_rejected

    @property
    def lens_margin(self) -> Float[np.ndarray, "n layer"]:
        """Per-pair lens of the margin, ``[n, L+1]``."""
        return (self.lens_chosen - self.lens_rejected).T

    @property
    def attr_margin(self) -> Float[np.ndarray, "n comp"]:
        return (self.attr_chosen - self.attr_rejected).T

    def row_parts(self) -> list[np.ndarray]:
        """Every per-pair array with the pair as its first axis (for the finite-value check)."""
        parts = [self.r_chosen, self.r_rejected, self.xnorm_chosen, self.xnorm_rejected]
        parts += [self.lens_chosen.T, self.lens_rejected.T, self.attr_chosen.T, self.attr_rejected.T]
        return parts + [self.resid_chosen.transpose(1, 0, 2), self.resid_rejected.transpose(1, 0, 2)]

    def take(self, keep: Bool[np.ndarray, " n"]) -> ModelRun:
        """The same run restricted to the pairs where `keep` is True."""
        return replace(
            self,
            r_chosen=self.r_chosen[keep],
            r_rejected=self.r_rejected[keep],
            lens_chosen=self.lens_chosen[:, keep],
            lens_rejected=self.lens_rejected[:, keep],
            attr_chosen=self.attr_chosen[:, keep],
            attr_rejected=self.attr_rejected[:, keep],
            resid_chosen=self.resid_chosen[:, keep],
            resid_rejected=self.resid_rejected[:, keep],
            xnorm_chosen=self.xnorm_chosen[keep],
            xnorm_rejected=self.xnorm_rejected[keep],
        )


def _frozen_lens(cache, acc: torch.Tensor, output: int | str | None) -> torch.Tensor:
    """Norm-exact (frozen-scale) reward lens at the reward position, ``[L+1, batch]``, without ``b_R_eff``.

    Uses :mod:`hooked_reward.analysis.lens` (``reward_lens_from_cache``, frozen variant, block boundaries)
    and subtracts ``b_R_eff`` so that lens values and attributions share one convention; falls back to the
    cache's own ``reward_attrs`` (the same numbers) when the lens module is unavailable.
    """
    try:
        from hooked_reward.analysis.lens import reward_lens_from_cache
    except ImportError:  # pragma: no cover - lens ships with the package
        return cache.reward_attrs(acc, output=output)
    res = reward_lens_from_cache(cache, variants="frozen", sublayers=False, output=output)
    vals = res.values[0]  # [batch, point]
    b = cache.model.b_R_eff.detach().float().reshape(-1)
    b = b[output_index(output, cache.model.head.readout_names()[: b.numel()]) or 0]
    return (vals - b.to(vals.device)).T


@torch.no_grad()
def _collect_side(model, prompts, responses, render, batch_size, output, progress, desc):
    r_all, lens_all, attr_all, resid_all, xn_all = [], [], [], [], []
    labels: list[Component] = []
    starts = range(0, len(prompts), batch_size)
    for s in tqdm(starts, desc=desc, disable=not progress, leave=False):
        tokens, mask = render_and_tokenize(model, prompts[s : s + batch_size], responses[s : s + batch_size], render)
        # non-finite rows are kept here: compare applies its own nan_policy to aligned pairs of both models
        r, cache = model.run_with_cache(tokens, attention_mask=mask, positions="reward", nan_policy="propagate")
        r = select_output(r, output, names=model.output_names)
        acc = cache.accumulated_resid()  # [L+1, batch, 1, d]: each block's resid_pre, then the final resid_post
        lens = _frozen_lens(cache, acc, output)  # [L+1, batch]
        attrs, labels = cache.decompose_reward(output=output)
        r_all.append(r.float().cpu().numpy())
        lens_all.append(lens.float().cpu().numpy())
        attr_all.append(attrs.float().cpu().numpy())
        resid_all.append(acc[:, :, 0].float().cpu().numpy())
        xn_all.append(cache.apply_final_ln_at_reward(acc[-1:])[0].float().cpu().numpy())
    return (
        np.concatenate(r_all).astype(np.float64),
        np.concatenate(lens_all, axis=1).astype(np.float64),
        np.concatenate(attr_all, axis=1).astype(np.float64),
        list(labels),
        np.concatenate(resid_all, axis=1).astype(np.float64),
        np.concatenate(xn_all, axis=0).astype(np.float64),
    )


def collect_run(
    model,
    prompts: Sequence[str],
    chosen: Sequence[str],
    rejected: Sequence[str],
    *,
    name: str = "model",
    render: Render | None = None,
    batch_size: int = 16,
    output: int | str | None = None,
    progress: bool = True,
) -> ModelRun:
    """Run ``model`` on every pair once per side (cache at the reward position only) and keep what the
    comparisons need (see :class:`ModelRun`)."""
    rc, lc, ac, labels, xc, nc = _collect_side(
        model, prompts, chosen, render, batch_size, output, progress, f"{name}: chosen"
    )
    rr, lr, ar, _, xr, nr = _collect_side(
        model, prompts, rejected, render, batch_size, output, progress, f"{name}: rejected"
    )
    w = reward_direction(model, output).cpu().numpy()
    return ModelRun(name, rc, rr, lc, lr, ac, ar, labels, xc, xr, nc, nr, int(model.cfg.n_layers), w.astype(np.float64))


# ----------------------------------------------------------------------------------------- statistics
def _estimate(value: float, ci: tuple[float, float]) -> Estimate:
    return (float(value), float(ci[0]), float(ci[1]))


def behaviour_stats(ma: np.ndarray, mb: np.ndarray, labelled: bool, n_boot: int, seed: int) -> dict[str, Estimate]:
    """Correlations of margins, agreement rate and accuracies, each with a bootstrap CI over pairs (finite
    margins only: a non-finite one raises `NonFiniteError`)."""
    finite_rows(ma, mb, what="margins of the two models")
    out: dict[str, Estimate] = {}
    for key, fn, vec, nb in (
        ("pearson", pearson_along, True, n_boot),
        ("spearman", spearman_along, True, n_boot),
        ("kendall", kendall, False, min(n_boot, 1999)),
    ):
        val = fn(ma, mb)
        out[key] = _estimate(float(val), bootstrap_ci((ma, mb), fn, vectorized=vec, n_resamples=nb, seed=seed))
    agree = agreement(ma, mb)
    out["agreement"] = _estimate(agree.mean(), bootstrap_ci(agree, n_resamples=n_boot, seed=seed))
    for tag, m in (("a", ma), ("b", mb)):
        if labelled:
            acc = (m > 0).astype(np.float64)
            out[f"accuracy_{tag}"] = _estimate(accuracy(m), bootstrap_ci(acc, n_resamples=n_boot, seed=seed))
        else:
            out[f"accuracy_{tag}"] = (math.nan, math.nan, math.nan)
    return out


def formation_depth(curve: Float[np.ndarray, " layer"]) -> float:
    """First relative depth ``l / L`` where ``curve`` reaches half of its last value, in the last value's
    direction (``sign(final) * curve[l] >= |final| / 2``).  NaN when the final value is 0."""
    final = float(curve[-1])
    if final == 0 or not math.isfinite(final):
        return math.nan
    reached = np.nonzero(np.sign(final) * curve >= abs(final) / 2)[0]
    return float(reached[0]) / (len(curve) - 1)


def _depth_of(label: Component, n_layers: int) -> float:
    """Relative depth of a component (`names.Component`): embeddings 0, layer l's attention/MLP (l + 1) / L."""
    return 0.0 if label.layer is None else (label.layer + 1) / n_layers


def attribution_profile(
    attr_margin: Float[np.ndarray, "n comp"], labels: Sequence[Component], n_layers: int, bins: np.ndarray
) -> Float[np.ndarray, "bin"]:
    """Share of per-pair |attribution| in each relative-depth bin (sums to 1)."""
    share = np.abs(attr_margin).mean(0)
    total = share.sum()
    share = share / total if total > 0 else share
    depth = np.array([_depth_of(lab, n_layers) for lab in labels])
    idx = np.clip(np.digitize(depth, bins[1:-1], right=True), 0, len(bins) - 2)
    return np.bincount(idx, weights=share, minlength=len(bins) - 1)


def whitened_cosine(w_a: Float[np.ndarray, " d"], w_b: Float[np.ndarray, " d"], cov: Float[np.ndarray, "d d"]) -> float:
    """``cos(Σ^{1/2} w_a, Σ^{1/2} w_b) = w_aᵀΣw_b / sqrt(w_aᵀΣw_a · w_bᵀΣw_b)`` (no square root needed)."""
    ab, aa, bb = w_a @ cov @ w_b, w_a @ cov @ w_a, w_b @ cov @ w_b
    return float(ab / math.sqrt(aa * bb)) if aa > 0 and bb > 0 else math.nan


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    den = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / den) if den > 0 else math.nan


def shared_basis(model_a, model_b, assert_shared: bool | None = None, tol: float = 0.1) -> tuple[bool, str]:
    """Whether the two models' residual streams share a basis, and why (or why not).

    Requires the same ``d_model`` and architecture; then ``assert_shared=True`` (the user knows they are
    checkpoints of one model) or embedding matrices with relative difference ``||E_a − E_b|| / ||E_a||``
    below ``tol``.  ``assert_shared=False`` always answers no.
    """
    ca, cb = model_a.cfg, model_b.cfg
    if assert_shared is False:
        return False, "shared_basis=False was given"
    if ca.d_model != cb.d_model:
        return False, f"d_model differs ({ca.d_model} vs {cb.d_model})"
    arch_a, arch_b = getattr(ca, "architecture", None), getattr(cb, "architecture", None)
    if arch_a != arch_b:
        return False, f"architectures differ ({arch_a} vs {arch_b})"
    if assert_shared:
        return True, "asserted by the caller"
    ea, eb = model_a.W_E.detach().float().cpu(), model_b.W_E.detach().float().cpu()
    if ea.shape != eb.shape:
        return False, f"embedding shapes differ ({tuple(ea.shape)} vs {tuple(eb.shape)})"
    rel = float((ea - eb).norm() / ea.norm().clamp_min(1e-12))
    if rel < tol:
        return True, f"embeddings near-identical (relative difference {rel:.3g} < {tol})"
    return False, f"embeddings differ (relative difference {rel:.3g} >= {tol}); pass shared_basis=True if you know"


def reward_direction_cosines(
    run_a: ModelRun, run_b: ModelRun, *, n_boot: int = 200, seed: int = 0
) -> dict[str, Estimate]:
    """Raw cosine of the norm-folded reward directions (weights only: no CI) and the whitened cosine with
    Σ = Ledoit–Wolf covariance of both models' normalised final residuals pooled (percentile CI over pairs).

    Callers must have checked :func:`shared_basis`: this function only checks the widths.
    """
    if run_a.w_eff.shape != run_b.w_eff.shape:
        raise InputError(
            f"Reward directions live in different residual bases (d_model {run_a.w_eff.shape[0]} vs "
            f"{run_b.w_eff.shape[0]}); their cosine is meaningless. Compare with CKA instead."
        )
    n = run_a.r_chosen.shape[0]

    def pooled(idx: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [run_a.xnorm_chosen[idx], run_a.xnorm_rejected[idx], run_b.xnorm_chosen[idx], run_b.xnorm_rejected[idx]]
        )

    def white(idx: np.ndarray) -> float:
        cov = LedoitWolf().fit(pooled(idx)).covariance_
        return whitened_cosine(run_a.w_eff, run_b.w_eff, cov)

    all_idx = np.arange(n)
    return {
        "cosine_raw": (_cos(run_a.w_eff, run_b.w_eff), math.nan, math.nan),
        "cosine_whitened": _estimate(white(all_idx), bootstrap_items_ci(n, white, n_resamples=n_boot, seed=seed)),
    }


# ----------------------------------------------------------------------------------------- result
@dataclass(repr=False)
class CompareResult(LabeledTensor):
    """Every comparison of two models on the same pairs (see the module docstring), a `LabeledTensor`.

    ``values`` = ``cka`` ``[layer_a, layer_b]`` (``L_a+1`` by ``L_b+1``: embeddings, then each block), with
    ``cka_ci`` its interval arrays. ``behaviour`` / ``geometry_scalars`` / ``mechanism_scalars``: metric ->
    (value, ci_low, ci_high). ``lens_*``: mean lens margin per layer with CI (``[L+1]``), on ``depth_*``
    (``l / L``). ``profile_*``: attribution share per depth bin with CI.
    """

    names: tuple[str, str] = ("A", "B")
    margins: tuple[np.ndarray, np.ndarray] = field(default_factory=lambda: (np.zeros(0), np.zeros(0)))
    behaviour: dict[str, Estimate] = field(default_factory=dict)
    depth_a: np.ndarray = field(default_factory=lambda: np.zeros(0))
    depth_b: np.ndarray = field(default_factory=lambda: np.zeros(0))
    lens_a: tuple[np.ndarray, ...] = field(default_factory=tuple)  # (mean, low, high)
    lens_b: tuple[np.ndarray, ...] = field(default_factory=tuple)  # (mean, low, high)
    formation: dict[str, Estimate] = field(default_factory=dict)
    bins: np.ndarray = field(default_factory=lambda: np.zeros(0))
    profile_a: tuple[np.ndarray, ...] = field(default_factory=tuple)  # (mean, low, high)
    profile_b: tuple[np.ndarray, ...] = field(default_factory=tuple)  # (mean, low, high)
    mechanism_scalars: dict[str, Estimate] = field(default_factory=dict)
    cka_ci: tuple[np.ndarray, ...] = field(default_factory=tuple)  # (low, high)
    geometry_scalars: dict[str, Estimate] = field(default_factory=dict)
    shared_basis: bool = False
    basis_reason: str = ""
    notes: list[str] = field(default_factory=list)
    value_name: str = "linear CKA"

    @property
    def cka(self) -> Float[np.ndarray, "layer_a layer_b"]:
        """Linear CKA of the reward-position residuals for every pair of layers (= `values`, as numpy)."""
        return self.values.numpy()

    def scalars(self) -> dict[str, Estimate]:
        """All scalar metrics in one dict."""
        diag = self._cka_diag()
        return {
            **{f"behaviour.{k}": v for k, v in self.behaviour.items()},
            **{f"formation.{k}": v for k, v in self.formation.items()},
            **{f"mechanism.{k}": v for k, v in self.mechanism_scalars.items()},
            **{f"geometry.{k}": v for k, v in self.geometry_scalars.items()},
            "geometry.cka_final": diag,
        }

    def _cka_diag(self) -> Estimate:
        return (float(self.cka[-1, -1]), float(self.cka_ci[0][-1, -1]), float(self.cka_ci[1][-1, -1]))

    def to_frame(self):
        """One row per scalar metric: value, ci_low, ci_high (pandas DataFrame indexed by metric)."""
        import pandas as pd

        rows = [{"metric": k, "value": v[0], "ci_low": v[1], "ci_high": v[2]} for k, v in self.scalars().items()]
        return pd.DataFrame(rows).set_index("metric")

    def _json_extra(self) -> dict[str, Any]:
        return {"scalars": self.scalars(), "cka": self.values}

    def plot(self, ax: Axes | None = None) -> Any:
        """The CKA matrix (layer of A × layer of B) on `ax`; returns the Axes. All four views: `plot_panels`."""
        plt = require_pyplot()
        if ax is None:
            _, ax = plt.subplots(figsize=(5, 4))
        im = ax.imshow(self.cka, origin="lower", vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.figure.colorbar(im, ax=ax)
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # layers are whole numbers
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(f"{self.names[1]} layer")
        ax.set_ylabel(f"{self.names[0]} layer")
        ax.set_title("linear CKA of reward-position residuals", fontsize=9)
        return ax

    def plot_panels(self, fig: Any = None) -> Any:
        """Four panels: margins scatter, lens-margin curves on relative depth, attribution profiles, CKA;
        returns the Figure."""
        plt = require_pyplot()
        fig = fig or plt.figure(figsize=(13, 9))
        axes = fig.subplots(2, 2)
        na, nb = self.names
        ax = axes[0, 0]
        ax.scatter(self.margins[0], self.margins[1], s=10)
        ax.axhline(0, color="k", lw=0.5)
        ax.axvline(0, color="k", lw=0.5)
        p, s_, k = self.behaviour["pearson"], self.behaviour["spearman"], self.behaviour["kendall"]
        ag = self.behaviour["agreement"]
        ax.set_title(
            f"margins: r={p[0]:.2f} [{p[1]:.2f},{p[2]:.2f}], ρ={s_[0]:.2f}, τ={k[0]:.2f}, "
            f"agree={ag[0]:.2f} [{ag[1]:.2f},{ag[2]:.2f}]",
            fontsize=9,
        )
        ax.set_xlabel(f"margin {na}")
        ax.set_ylabel(f"margin {nb}")
        ax = axes[0, 1]
        for depth, (m, lo, hi), lab in ((self.depth_a, self.lens_a, na), (self.depth_b, self.lens_b, nb)):
            line = ax.plot(depth, m, marker="o", ms=3, label=lab)[0]
            ax.fill_between(depth, lo, hi, color=line.get_color(), alpha=0.2)
        for key in ("depth_a", "depth_b"):
            v = self.formation[key]
            if math.isfinite(v[0]):
                ax.axvline(v[0], ls="--", lw=0.8, color="C0" if key == "depth_a" else "C1")
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xlabel("relative depth (layer / n_layers)")
        ax.set_ylabel("reward-lens margin (mean, 95% CI)")
        ax.set_title("formation (dashed: half of final margin reached)", fontsize=9)
        ax.legend(fontsize=8)
        ax = axes[1, 0]
        centers = (self.bins[:-1] + self.bins[1:]) / 2
        width = (self.bins[1] - self.bins[0]) * 0.4
        for off, (m, lo, hi), lab in ((-width / 2, self.profile_a, na), (width / 2, self.profile_b, nb)):
            ax.bar(centers + off, m, width, yerr=[m - lo, hi - m], label=lab, capsize=2)
        sim = self.mechanism_scalars["profile_similarity"]
        ax.set_title(f"attribution share by depth; 1−TV={sim[0]:.2f} [{sim[1]:.2f},{sim[2]:.2f}]", fontsize=9)
        ax.set_xlabel("relative depth bin")
        ax.legend(fontsize=8)
        self.plot(ax=axes[1, 1])
        fig.tight_layout()
        return fig


# ----------------------------------------------------------------------------------------- entry point
def _unpack_pairs(pairs) -> tuple[list[str], list[str], list[str]]:
    """`(prompts, chosen, rejected)` of text pairs (each model renders them with its own `render`)."""
    pairs = as_pairs(pairs)
    conversations = [i for i, p in enumerate(pairs) if p.is_conversation]
    if conversations:
        raise InputError(
            f"pairs {conversations[:5]} are conversations; compare_models renders (prompt, response) per model with "
            "render_a / render_b: pass text pairs (PreferencePair(prompt, chosen, rejected) with strings)."
        )
    return [p.prompt for p in pairs], [p.chosen for p in pairs], [p.rejected for p in pairs]


def compare_models(
    model_a,
    model_b,
    pairs: Sequence[PreferencePair | dict | tuple[str, str, str]],
    *,
    names: tuple[str, str] = ("A", "B"),
    labelled: bool = True,
    shared_basis_: bool | None = None,
    render_a: Render | None = None,
    render_b: Render | None = None,
    output_a: int | None = None,
    output_b: int | None = None,
    n_bins: int = 5,
    n_boot: int = 1999,
    n_boot_geometry: int = 200,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = True,
    nan_policy: str = "raise",
) -> CompareResult:
    """Compare two HookedRewardModels on the same preference pairs.

    Args:
        pairs: `PreferencePair`s with text sides (or what `pairs.as_pairs` reads: dicts with ``prompt``
            (optional), ``chosen``, ``rejected``, or ``(prompt, chosen, rejected)`` tuples).
        labelled: whether ``chosen`` is the labelled-better response (accuracy is reported then).
        shared_basis_: None = decide from ``d_model``/architecture/embeddings; True = assert the residual
            bases are shared (checkpoints of one model); False = never compare reward directions.
        render_a, render_b: per-model ``(prompt, response) -> text`` (default: each model's chat template).
        n_boot: resamples for behaviour/formation/mechanism intervals; ``n_boot_geometry`` for CKA and the
            whitened cosine (each resample recomputes Gram matrices / a covariance).
        nan_policy: a pair with a non-finite reward, lens value, attribution or residual in either model
            raises `NonFiniteError` naming it ("raise"), or is dropped with a note saying how many ("omit").
    """
    prompts, chosen, rejected = _unpack_pairs(pairs)
    n = len(prompts)
    if n < 3:
        raise InputError(f"need at least 3 pairs for intervals, got {n}.")
    ra = collect_run(
        model_a,
        prompts,
        chosen,
        rejected,
        name=names[0],
        render=render_a,
        batch_size=batch_size,
        output=output_a,
        progress=progress,
    )
    rb = collect_run(
        model_b,
        prompts,
        chosen,
        rejected,
        name=names[1],
        render=render_b,
        batch_size=batch_size,
        output=output_b,
        progress=progress,
    )
    return compare_runs(
        ra,
        rb,
        model_a=model_a,
        model_b=model_b,
        labelled=labelled,
        shared_basis_=shared_basis_,
        n_bins=n_bins,
        n_boot=n_boot,
        n_boot_geometry=n_boot_geometry,
        seed=seed,
        nan_policy=nan_policy,
    )


def compare_runs(ra: ModelRun, rb: ModelRun, **kwargs) -> CompareResult:
    """The statistics of :func:`compare_models` from already collected runs (see :func:`_compare_runs`).

    Small problems run BLAS single-threaded: the bootstrap loops do many small matrix products, for which
    thread start-up dominates (15x slower with two threads on a busy machine); large ones keep all threads.
    """
    small = max(ra.resid_chosen.shape[-1], rb.resid_chosen.shape[-1]) <= 1024 and ra.r_chosen.shape[0] <= 2048
    if small:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1), np.errstate(invalid="ignore", divide="ignore"):
            return _compare_runs(ra, rb, **kwargs)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _compare_runs(ra, rb, **kwargs)


def _compare_runs(
    ra: ModelRun,
    rb: ModelRun,
    *,
    model_a=None,
    model_b=None,
    labelled: bool = True,
    shared_basis_: bool | None = None,
    n_bins: int = 5,
    n_boot: int = 1999,
    n_boot_geometry: int = 200,
    seed: int = 0,
    nan_policy: str = "raise",
) -> CompareResult:
    """Behaviour, formation, mechanism and geometry statistics from two collected runs."""
    check_nan_policy(nan_policy, allowed=("raise", "omit"))
    notes: list[str] = []
    keep = finite_rows(
        *ra.row_parts(),
        *rb.row_parts(),
        what=f"compare {ra.name} vs {rb.name}: pairs (rewards, lens, attributions or residuals)",
        nan_policy=nan_policy,
    )
    n_omitted = int((~keep).sum())
    if n_omitted:
        ra, rb = ra.take(keep), rb.take(keep)
        notes.append(f"{n_omitted} pair(s) with non-finite values were dropped (nan_policy='omit').")
    n = ra.r_chosen.shape[0]
    if n < 3:
        raise InputError(f"need at least 3 pairs with finite values for intervals, got {n}.")
    ma, mb = ra.margins, rb.margins
    behaviour = behaviour_stats(ma, mb, labelled, n_boot, seed)

    # formation
    la, lb = ra.lens_margin, rb.lens_margin  # [n, L+1]
    lens_a = (la.mean(0), *bootstrap_mean_ci(la, n_resamples=n_boot, seed=seed))
    lens_b = (lb.mean(0), *bootstrap_mean_ci(lb, n_resamples=n_boot, seed=seed))
    formation: dict[str, Estimate] = {}
    for key, lm in (("depth_a", la), ("depth_b", lb)):

        def depth_of_items(i: np.ndarray, lm: np.ndarray = lm) -> float:
            return formation_depth(lm[i].mean(0))

        formation[key] = _estimate(
            formation_depth(lm.mean(0)), bootstrap_items_ci(n, depth_of_items, n_resamples=n_boot, seed=seed)
        )
    formation["depth_difference"] = _estimate(
        formation["depth_a"][0] - formation["depth_b"][0],
        bootstrap_items_ci(
            n, lambda i: formation_depth(la[i].mean(0)) - formation_depth(lb[i].mean(0)), n_resamples=n_boot, seed=seed
        ),
    )

    # mechanism
    bins = np.linspace(0.0, 1.0, n_bins + 1)
    aa, ab = ra.attr_margin, rb.attr_margin

    def prof_a(i):
        return attribution_profile(aa[i], ra.labels, ra.n_layers, bins)

    def prof_b(i):
        return attribution_profile(ab[i], rb.labels, rb.n_layers, bins)

    def similarity(i):
        return 1.0 - 0.5 * np.abs(prof_a(i) - prof_b(i)).sum()

    all_i = np.arange(n)
    rng = np.random.default_rng(seed)
    boot_idx = rng.integers(0, n, size=(n_boot_geometry, n))
    pa_boot = np.stack([prof_a(i) for i in boot_idx])
    pb_boot = np.stack([prof_b(i) for i in boot_idx])
    profile_a = (prof_a(all_i), *percentile_interval(pa_boot))
    profile_b = (prof_b(all_i), *percentile_interval(pb_boot))
    mechanism = {
        "profile_similarity": _estimate(
            similarity(all_i), bootstrap_items_ci(n, similarity, n_resamples=n_boot_geometry, seed=seed)
        )
    }

    # geometry: CKA over chosen and rejected texts of each pair, resampling pairs
    xa = np.concatenate([ra.resid_chosen, ra.resid_rejected], axis=1)  # [La+1, 2n, d]
    xb = np.concatenate([rb.resid_chosen, rb.resid_rejected], axis=1)
    cka = cka_matrix(xa, xb)
    boots = np.stack([cka_matrix(xa, xb, np.concatenate([i, i + n])) for i in boot_idx])
    cka_ci = percentile_interval(boots)  # never NaN: constant layers have a defined CKA (analysis.stats)
    geometry: dict[str, Estimate] = {}
    if model_a is not None and model_b is not None:
        shared, reason = shared_basis(model_a, model_b, shared_basis_)
    else:
        shared = bool(shared_basis_) and ra.w_eff.shape == rb.w_eff.shape
        reason = "asserted by the caller" if shared else "no models given to check the basis"
    if shared:
        geometry.update(reward_direction_cosines(ra, rb, n_boot=n_boot_geometry, seed=seed))
    else:
        notes.append(
            f"Reward-direction cosines not computed: the residual bases are not shared ({reason}). "
            "Directions of different models are only comparable through CKA."
        )
        geometry["cosine_raw"] = geometry["cosine_whitened"] = (math.nan, math.nan, math.nan)

    return CompareResult(
        names=(ra.name, rb.name),
        margins=(ma, mb),
        behaviour=behaviour,
        depth_a=np.arange(ra.n_layers + 1) / ra.n_layers,
        depth_b=np.arange(rb.n_layers + 1) / rb.n_layers,
        lens_a=lens_a,
        lens_b=lens_b,
        formation=formation,
        bins=bins,
        profile_a=profile_a,
        profile_b=profile_b,
        mechanism_scalars=mechanism,
        values=torch.from_numpy(cka),
        dims=("layer_a", "layer_b"),
        cka_ci=cka_ci,
        geometry_scalars=geometry,
        shared_basis=shared,
        basis_reason=reason,
        notes=notes,
    )
