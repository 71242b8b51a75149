"""Attribute the reward (or a chosen - rejected reward gap) to SAE features, and check it causally.

Two estimators, chosen by where the SAE reads (``method="auto"``):

**linear** (exact) -- at the final residual (``blocks.{L-1}.hook_resid_post`` / ``ln_final.hook_in``) the
reward is ``r = W_R_eff . norm(h) + b_R_eff`` with ``norm(h) = centre(h) / scale`` (centring only for a
LayerNorm final norm; ``scale`` = ``ln_final.hook_scale`` at the reward position). With the SAE spliced in
(error term kept), ``h = sum_f a_f W_dec[f] + b_dec + error``, so with the scale frozen at its value on this
text, feature ``f`` contributes exactly::

    attribution[i, f] = a[i, f] * (centre(W_dec[f]) . W_R_eff) / scale[i]        (a at the reward position)

and ``sum_f attribution + remainder = r`` (the remainder is the ``b_dec``, error and bias part). At
``hook_reward_resid`` (already normalised) it is ``a[i, f] * W_dec[f] . W_R``. Ablating feature ``f`` with
the norm scale frozen changes the reward by exactly ``-attribution[i, f]``; unfrozen, the scale moves too,
which the causal check measures.

**gradient** (attribution patching, first order) -- anywhere else: with the SAE spliced in (error term
kept, so the forward pass is the clean one), ``attribution[i, f] = sum_pos dr/da[i, pos, f] * a[i, pos, f]``
over the attributed positions (``positions="all"``: every non-padding token; ``"reward"``: the reward
position only); it estimates the reward lost by zero-ablating the feature there. For pairs,
``sum_pos 1/2 (g_chosen + g_rejected) * (a_chosen - a_rejected)`` (the midpoint rule, exact for quadratic
dependence) estimates the change in ``r_chosen - r_rejected`` from patching the feature across.

Pairs are aligned explicitly: ``positions="reward"`` compares the two reward positions; ``positions="all"``
needs identical attention masks (same length and padding) and is refused otherwise.

:func:`check_attribution` runs the causal experiment for the top features (zero-ablation per text, or
patching chosen <-> rejected per pair) and reports the Spearman correlation between attributions and
measured effects.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from hooked_reward.analysis.patching import write_at_positions
from hooked_reward.analysis.results import LabeledTensor
from hooked_reward.analysis.stats import spearman_test
from hooked_reward.errors import InputError
from hooked_reward.final_norm import final_norm_centre, frozen_final_scale, reward_direction
from hooked_reward.names import FINAL_NORM_IN, FINAL_SCALE, REWARD_RESID, act_name
from hooked_reward.outputs import OutputArg, select_output
from hooked_reward.positions import position_choice
from hooked_reward.sae.autoencoder import SparseAutoencoder
from hooked_reward.sae.splice import _label_texts, _require_pandas, splice_sae
from hooked_reward.tl_compat import FwdHooks

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from transformer_lens.hook_points import HookPoint

    from hooked_reward.model import HookedRewardModel

Positions = Literal["all", "reward"] | None
Method = Literal["auto", "linear", "gradient"]


# ---------------------------------------------------------------------------------------------- results
@dataclass(repr=False, kw_only=True)
class FeatureAttribution(LabeledTensor):
    """Per-item feature attributions, a `LabeledTensor` with dims ``("item", "feature")``.

    Attributes:
        values: ``[n_items, d_sae]`` attribution of each item's reward (or pair's reward gap) to each feature.
        labels: ``labels["item"]``, one label per item (text, or ``chosen | rejected`` for pairs).
        targets: ``[n_items]`` the reward (or gap ``r_chosen - r_rejected``) being attributed.
        activations: ``[n_items, d_sae]`` the feature activation summed over the attributed positions (for
            pairs: chosen minus rejected).
        hook_name, method (``"linear"`` | ``"gradient"``), positions, kind (``"text"`` | ``"pair"``).
        remainder: ``[n_items]`` for the linear method, ``target - values.sum(-1)`` (bias, ``b_dec`` and error
            term); None for the gradient method.
    """

    targets: Float[Tensor, " n"]
    activations: Float[Tensor, "n d_sae"]
    hook_name: str
    method: str
    positions: Literal["all", "reward"]
    kind: str
    remainder: Float[Tensor, " n"] | None = None
    output: OutputArg = None
    _inputs: dict[str, Tensor] = field(default_factory=dict, repr=False)

    def mean(self) -> Float[Tensor, " d_sae"]:
        """Mean attribution over items, per feature."""
        return self.values.mean(0)

    def ranking(self, k: int | None = None, sort: Literal["abs", "signed", "negative"] = "abs") -> Int[Tensor, " k"]:
        """Feature ids ranked by mean attribution: ``"abs"`` (largest magnitude), ``"signed"`` (most positive),
        ``"negative"`` (most negative)."""
        m = self.mean()
        if sort not in ("abs", "signed", "negative"):
            raise InputError(f"sort must be 'abs', 'signed' or 'negative', got {sort!r}.")
        key = m.abs() if sort == "abs" else (m if sort == "signed" else -m)
        order = torch.argsort(key, descending=True)
        return order[:k] if k is not None else order

    def top(self, k: int = 10, sort: Literal["abs", "signed", "negative"] = "abs") -> list[tuple[int, float]]:
        """``[(feature, mean attribution)]`` for the top ``k`` features."""
        m = self.mean()
        return [(int(f), float(m[f])) for f in self.ranking(k, sort)]

    def to_frame(self, k: int | None = None) -> Any:
        """A pandas DataFrame, one row per feature ranked by mean |attribution| (top ``k`` if given)."""
        pd = _require_pandas()
        idx = self.ranking(k)
        active = (self.activations[:, idx] != 0).float().mean(0)
        return pd.DataFrame(
            {
                "rank": range(1, len(idx) + 1),
                "feature": idx.numpy(),
                "mean_attribution": self.values[:, idx].mean(0).numpy(),
                "mean_abs_attribution": self.values[:, idx].abs().mean(0).numpy(),
                "mean_activation": self.activations[:, idx].mean(0).numpy(),
                "frac_items_active": active.numpy(),
            }
        )

    def plot(self, ax: Axes | None = None, k: int = 20) -> Any:
        """Horizontal bar chart of the top ``k`` features' mean attribution (with per-item std), on `ax`;
        returns the Axes."""
        import matplotlib.pyplot as plt

        idx = self.ranking(k)
        if ax is None:
            _, ax = plt.subplots(figsize=(5, 0.25 * len(idx) + 1.2))
        mean = self.values[:, idx].mean(0).numpy()
        std = self.values[:, idx].std(0).nan_to_num().numpy() if self.values.shape[0] > 1 else None
        ax.barh(
            [f"f{int(f)}" for f in idx][::-1],
            mean[::-1],
            xerr=None if std is None else std[::-1],
            color=["tab:blue" if v >= 0 else "tab:red" for v in mean[::-1]],
        )
        ax.axvline(0, color="grey", lw=0.8)
        what = "reward gap" if self.kind == "pair" else "reward"
        ax.set_xlabel(f"attribution to {what} ({self.method})")
        ax.set_title(f"SAE features at {self.hook_name}")
        return ax


@dataclass(repr=False, kw_only=True)
class CausalCheck(LabeledTensor):
    """Attribution vs measured causal effect for the top features, a `LabeledTensor` with dims
    ``("feature", "measure")``.

    Attributes:
        values: ``[k, 2]`` = (mean attribution, mean measured effect) per checked feature.
        labels: ``labels["feature"]`` = ``["f12", ...]``, ``labels["measure"]`` = attribution, effect;
            ``features``: ``[k]`` ids.
        per_item_attribution, per_item_effect: ``[n_items, k]``.
        spearman, pvalue: Spearman rank correlation of the two columns of ``values`` (and its p-value).
        spearman_items: Spearman over the ``n_items * k`` (item, feature) cells where either value is nonzero.
        kind: ``"ablation"`` (effect = reward lost when the feature is zeroed) or ``"patching"`` (effect =
            reward gap lost when the feature is patched between chosen and rejected).
        max_abs_error: ``max |attribution - effect|`` over cells.
    """

    features: Int[Tensor, " k"]
    per_item_attribution: Float[Tensor, "n k"]
    per_item_effect: Float[Tensor, "n k"]
    spearman: float
    pvalue: float
    spearman_items: float
    kind: str
    freeze_norm_scale: bool

    @property
    def max_abs_error(self) -> float:
        return float((self.per_item_attribution - self.per_item_effect).abs().max())

    def to_frame(self) -> Any:
        pd = _require_pandas()
        return pd.DataFrame(
            {
                "feature": self.features.numpy(),
                "attribution": self.values[:, 0].numpy(),
                "effect": self.values[:, 1].numpy(),
            }
        )

    def plot(self, ax: Axes | None = None) -> Any:
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(4.5, 4))
        v = self.values.numpy()
        ax.scatter(v[:, 0], v[:, 1], s=14)
        for (x, y), lab in zip(v, self.axis_labels("feature"), strict=True):
            ax.annotate(lab, (x, y), fontsize=7)
        lo, hi = float(v.min()), float(v.max())
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8)
        ax.set_xlabel("attribution")
        ax.set_ylabel(f"measured effect ({self.kind})")
        ax.set_title(f"Spearman {self.spearman:.2f} (p={self.pvalue:.2g})")
        return ax


# ---------------------------------------------------------------------------------------------- helpers
def linear_path(model: HookedRewardModel, hook_name: str) -> Literal["final_resid", "reward_resid"] | None:
    """Whether the reward is a linear function of the activation at ``hook_name`` (norm scale frozen)."""
    if hook_name in (act_name("resid_post", model.cfg.n_layers - 1), FINAL_NORM_IN):
        return "final_resid"
    if hook_name == REWARD_RESID:
        return "reward_resid"
    return None


def reward_axis_weights(
    model: HookedRewardModel, sae: SparseAutoencoder, output: OutputArg = None
) -> Float[Tensor, " d_sae"]:
    """Reward per unit activation of each feature before the norm scale: ``centre(W_dec[f]) . W_R_eff``.

    (At ``hook_reward_resid``: ``W_dec[f] . W_R``.) Needs the SAE at a linear-path hook and an affine head.
    """
    name = sae.cfg.hook_name or ""
    path = linear_path(model, name)
    if path is None:
        raise InputError(f"{name!r} is not on the linear path to the reward (final residual or hook_reward_resid).")
    w = reward_direction(model, output, basis="normed" if path == "final_resid" else "final")
    dec = sae.W_dec.detach().float().to(w.device)
    if path == "final_resid":
        dec = final_norm_centre(model, dec)
    return dec @ w


def _position_mask(mask: Tensor, reward_pos: Tensor, positions: Literal["all", "reward"]) -> Float[Tensor, "batch pos"]:
    if positions == "all":
        return mask.float()
    if positions == "reward":
        out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
        out[torch.arange(mask.shape[0], device=mask.device), reward_pos.to(mask.device)] = 1.0
        return out
    raise InputError(f"positions must be 'all' or 'reward', got {positions!r}.")


@dataclass
class _Run:
    acts: Float[Tensor, "batch pos d_sae"]
    grads: Float[Tensor, "batch pos d_sae"] | None
    rewards: Float[Tensor, " batch"]
    scale: Float[Tensor, " batch"] | None  # ln_final scale at the reward position
    reward_pos: Int[Tensor, " batch"]
    mask: Int[Tensor, "batch pos"]


def _run(
    model: HookedRewardModel,
    sae: SparseAutoencoder,
    tokens: Tensor,
    mask: Tensor,
    *,
    grad: bool,
    output: int | str | None,
    edit: Any = None,
    scale_override: Tensor | None = None,
) -> _Run:
    """One spliced forward pass (error term kept); optionally edit the feature acts and/or the final scale."""
    name = f"{sae.cfg.hook_name}.hook_sae_acts"
    store: dict[str, Tensor] = {}

    def grab_acts(t: Tensor, hook: HookPoint) -> Tensor:
        a = t.detach().requires_grad_(grad)
        store["acts"] = a
        return edit(a) if edit is not None else a

    def grab_scale(t: Tensor, hook: HookPoint) -> None:
        store["scale"] = t.detach()

    hooks: FwdHooks = [(name, grab_acts)]
    if FINAL_SCALE in model.hook_dict:
        hooks.append((FINAL_SCALE, grab_scale))
    frozen = frozen_final_scale(model, scale_override) if scale_override is not None else nullcontext()
    with splice_sae(model, sae, use_error_term=True), torch.set_grad_enabled(grad), frozen:
        rewards = model.run_with_hooks(tokens, attention_mask=mask, fwd_hooks=hooks)
        r = select_output(rewards, output, names=model.output_names)
        g = torch.autograd.grad(r.sum(), store["acts"], allow_unused=True)[0] if grad else None
    acts = store["acts"].detach()
    reward_pos = model.reward_positions(mask, tokens).to(acts.device)
    if acts.ndim == 2:  # hook_reward_resid: [batch, d_sae], one position
        acts = acts[:, None]
        g = g[:, None] if g is not None else None
        reward_pos = torch.zeros_like(reward_pos)
        mask = torch.ones(acts.shape[:2], dtype=torch.long, device=acts.device)
    if g is None and grad:
        g = torch.zeros_like(acts)
    scale = store.get("scale")
    if scale is not None:
        scale = scale.reshape(scale.shape[0], -1)[torch.arange(scale.shape[0]), reward_pos.to(scale.device)]
    return _Run(
        acts.float(), None if g is None else g.float(), r.detach().float(), scale, reward_pos, mask.to(acts.device)
    )


def _has_direction(model: HookedRewardModel, output: int | str | None) -> bool:
    try:
        reward_direction(model, output)
    except InputError:
        return False
    return True


def _resolve_method(
    model: HookedRewardModel, sae: SparseAutoencoder, method: Method, output: OutputArg
) -> Literal["linear", "gradient"]:
    path = linear_path(model, sae.cfg.hook_name or "")
    linear_ok = path is not None and _has_direction(model, output)
    if method == "auto":
        return "linear" if linear_ok else "gradient"
    if method == "linear" and not linear_ok:
        raise InputError(
            f"method='linear' needs the SAE on the final residual (blocks.{model.cfg.n_layers - 1}.hook_resid_post)"
            f" or hook_reward_resid and an affine reward head; {sae.cfg.hook_name!r} is not. Use 'gradient'."
        )
    if method not in ("linear", "gradient"):
        raise InputError(f"method must be 'auto', 'linear' or 'gradient', got {method!r}.")
    return method


def _linear_values(
    model: HookedRewardModel, sae: SparseAutoencoder, run: _Run, output: OutputArg
) -> tuple[Tensor, Tensor]:
    """``(attribution [b, d_sae], activation at the reward position [b, d_sae])`` on the linear path."""
    b = run.acts.shape[0]
    a = run.acts[torch.arange(b), run.reward_pos]
    weights = reward_axis_weights(model, sae, output).to(a.device)
    if linear_path(model, sae.cfg.hook_name or "") == "final_resid":
        if run.scale is None:
            raise InputError("ln_final.hook_scale did not fire; the linear method needs the final norm's scale.")
        return a * weights / run.scale.float()[:, None].to(a.device), a
    return a * weights, a


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


# ---------------------------------------------------------------------------------------------- public API
def attribute_features(
    model: HookedRewardModel,
    sae: SparseAutoencoder,
    inputs: Sequence[str] | Tensor,
    *,
    attention_mask: Tensor | None = None,
    positions: Positions = "all",
    method: Method = "auto",
    output: int | str | None = None,
    batch_size: int = 16,
) -> FeatureAttribution:
    """Attribute each text's reward to the SAE's features: :class:`FeatureAttribution` with ``[n, d_sae]``.

    ``method="auto"`` uses the exact linear decomposition on the linear path (``positions`` is then moot:
    only the reward position reads into the reward) and attribution patching elsewhere.
    """
    positions = position_choice(positions)
    tokens, mask = model.prepare(inputs, attention_mask=attention_mask)
    method = _resolve_method(model, sae, method, output)
    vals, acts_out, targets, rem = [], [], [], []
    for sl in _chunks(tokens.shape[0], batch_size):
        run = _run(model, sae, tokens[sl], mask[sl], grad=method == "gradient", output=output)
        if method == "linear":
            v, a = _linear_values(model, sae, run, output)
            rem.append(run.rewards - v.sum(-1))
        else:
            pm = _position_mask(run.mask, run.reward_pos, positions)[..., None]
            assert run.grads is not None
            v = (run.grads * run.acts * pm).sum(1)
            a = (run.acts * pm).sum(1)
        vals.append(v.cpu())
        acts_out.append(a.cpu())
        targets.append(run.rewards.cpu())
    return FeatureAttribution(
        values=torch.cat(vals),
        dims=("item", "feature"),
        labels={"item": _label_texts(inputs, tokens.shape[0])},
        targets=torch.cat(targets),
        activations=torch.cat(acts_out),
        hook_name=str(sae.cfg.hook_name),
        method=method,
        positions="reward" if method == "linear" else positions,
        kind="text",
        remainder=torch.cat(rem).cpu() if rem else None,
        output=output,
        _inputs={"tokens": tokens, "mask": mask},
    )


def _aligned(mask_c: Tensor, mask_r: Tensor, positions: Literal["all", "reward"]) -> None:
    if positions == "all" and (mask_c.shape != mask_r.shape or not bool((mask_c == mask_r).all())):
        raise InputError(
            "positions='all' patches position by position, which needs chosen and rejected to have identical "
            "attention masks (same length and padding); these differ, so positions would be misaligned. Use "
            "positions='reward' (the two reward positions are aligned by definition) or equal-length pairs."
        )


def attribute_pairs(
    model: HookedRewardModel,
    sae: SparseAutoencoder,
    chosen: Sequence[str] | Tensor,
    rejected: Sequence[str] | Tensor,
    *,
    chosen_mask: Tensor | None = None,
    rejected_mask: Tensor | None = None,
    positions: Positions = "reward",
    method: Method = "auto",
    output: int | str | None = None,
    batch_size: int = 16,
) -> FeatureAttribution:
    """Attribute each pair's reward gap ``r(chosen) - r(rejected)`` to the SAE's features (``[n_pairs, d_sae]``).

    Linear path: the exact difference of the two linear decompositions (each with its own frozen scale).
    Elsewhere: ``sum_pos 1/2 (g_c + g_r) * (a_c - a_r)`` over aligned positions (see the module docstring).
    """
    positions = position_choice(positions)
    tc, mc = model.prepare(chosen, attention_mask=chosen_mask)
    tr, mr = model.prepare(rejected, attention_mask=rejected_mask)
    if tc.shape[0] != tr.shape[0]:
        raise InputError(f"{tc.shape[0]} chosen vs {tr.shape[0]} rejected: pairs must match one to one.")
    method = _resolve_method(model, sae, method, output)
    if method == "gradient":
        _aligned(mc, mr, positions)
    vals, acts_out, targets, rem = [], [], [], []
    for sl in _chunks(tc.shape[0], batch_size):
        rc = _run(model, sae, tc[sl], mc[sl], grad=method == "gradient", output=output)
        rr = _run(model, sae, tr[sl], mr[sl], grad=method == "gradient", output=output)
        if method == "linear":
            vc, ac = _linear_values(model, sae, rc, output)
            vr, ar = _linear_values(model, sae, rr, output)
            v, a = vc - vr, ac - ar
            rem.append((rc.rewards - rr.rewards) - v.sum(-1))
        else:
            assert rc.grads is not None and rr.grads is not None
            if positions == "reward":
                b = torch.arange(rc.acts.shape[0])
                ac, ar = rc.acts[b, rc.reward_pos], rr.acts[b, rr.reward_pos]
                gc, gr = rc.grads[b, rc.reward_pos], rr.grads[b, rr.reward_pos]
                v, a = 0.5 * (gc + gr) * (ac - ar), ac - ar
            else:
                pm = rc.mask.float()[..., None]
                da = (rc.acts - rr.acts) * pm
                v, a = (0.5 * (rc.grads + rr.grads) * da).sum(1), da.sum(1)
        vals.append(v.cpu())
        acts_out.append(a.cpu())
        targets.append((rc.rewards - rr.rewards).cpu())
    lc, lr = _label_texts(chosen, tc.shape[0]), _label_texts(rejected, tr.shape[0])
    return FeatureAttribution(
        values=torch.cat(vals),
        dims=("item", "feature"),
        labels={"item": [f"{a} | {b}" for a, b in zip(lc, lr, strict=True)]},
        targets=torch.cat(targets),
        activations=torch.cat(acts_out),
        hook_name=str(sae.cfg.hook_name),
        method=method,
        positions="reward" if method == "linear" else positions,
        kind="pair",
        remainder=torch.cat(rem).cpu() if rem else None,
        output=output,
        _inputs={"tokens": tc, "mask": mc, "tokens_rejected": tr, "mask_rejected": mr},
    )


def _spearman(x: Tensor, y: Tensor) -> tuple[float, float]:
    return spearman_test(x, y, what="SAE attribution vs causal effect")


def ablate_features(
    model: HookedRewardModel,
    sae: SparseAutoencoder,
    tokens: Tensor,
    mask: Tensor,
    features: Sequence[int] | Tensor,
    *,
    positions: Positions = "all",
    freeze_norm_scale: bool = False,
    output: int | str | None = None,
) -> Float[Tensor, "n k"]:
    """Reward lost by zero-ablating each feature (one at a time) at ``positions``: ``r_clean - r_ablated``.

    The SAE's error term is kept, so only the feature's decoder contribution is removed. With
    ``freeze_norm_scale`` the final norm's scale is held at its clean value (the linear path's assumption).
    """
    positions = position_choice(positions)
    clean = _run(model, sae, tokens, mask, grad=False, output=output)
    pm = _position_mask(mask, model.reward_positions(mask, tokens), positions)
    scale_full = _clean_scale(model, sae, tokens, mask) if freeze_norm_scale else None
    effects = []
    for f in [int(f) for f in features]:

        def edit(a: Tensor, _f: int = f) -> Tensor:
            a = a.clone()
            keep = 1.0 - (pm if a.ndim == 3 else torch.ones(a.shape[0], device=a.device)).to(a.dtype)
            a[..., _f] = a[..., _f] * keep
            return a

        abl = _run(model, sae, tokens, mask, grad=False, output=output, edit=edit, scale_override=scale_full)
        effects.append(clean.rewards - abl.rewards)
    return torch.stack(effects, dim=-1).cpu()


def _clean_scale(model: HookedRewardModel, sae: SparseAutoencoder, tokens: Tensor, mask: Tensor) -> Tensor:
    store: dict[str, Tensor] = {}

    def grab(t: Tensor, hook: HookPoint) -> None:
        store["s"] = t.detach().clone()

    if FINAL_SCALE not in model.hook_dict:
        raise InputError(f"freeze_norm_scale needs {FINAL_SCALE} on the model.")
    with splice_sae(model, sae, use_error_term=True), torch.no_grad():
        model.run_with_hooks(tokens, attention_mask=mask, fwd_hooks=[(FINAL_SCALE, grab)])
    return store["s"]


def patch_features(
    model: HookedRewardModel,
    sae: SparseAutoencoder,
    tokens_chosen: Tensor,
    mask_chosen: Tensor,
    tokens_rejected: Tensor,
    mask_rejected: Tensor,
    features: Sequence[int] | Tensor,
    *,
    positions: Positions = "reward",
    output: int | str | None = None,
) -> Float[Tensor, "n k"]:
    """Reward gap lost by patching each feature between chosen and rejected (aligned positions).

    effect = 1/2 [(r_c - r_c[f <- rejected]) + (r_r[f <- chosen] - r_r)], averaging the two directions.
    """
    positions = position_choice(positions)
    _aligned(mask_chosen, mask_rejected, positions)
    rc = _run(model, sae, tokens_chosen, mask_chosen, grad=False, output=output)
    rr = _run(model, sae, tokens_rejected, mask_rejected, grad=False, output=output)
    b = torch.arange(tokens_chosen.shape[0])
    effects = []
    for f in [int(f) for f in features]:

        def put(src: _Run, dst: _Run, _f: int = f) -> Any:
            def edit(a: Tensor) -> Tensor:
                squeeze = a.ndim == 2
                a3 = a[:, None] if squeeze else a
                if positions == "reward":
                    a3 = write_at_positions(a3, dst.reward_pos, src.acts[b, src.reward_pos, _f], index=_f)
                else:
                    a3 = a3.clone()
                    m = dst.mask.bool()
                    a3[..., _f] = torch.where(m, src.acts[..., _f].to(a.dtype), a3[..., _f])
                return a3[:, 0] if squeeze else a3

            return edit

        c_p = _run(model, sae, tokens_chosen, mask_chosen, grad=False, output=output, edit=put(rr, rc))
        r_p = _run(model, sae, tokens_rejected, mask_rejected, grad=False, output=output, edit=put(rc, rr))
        effects.append(0.5 * ((rc.rewards - c_p.rewards) + (r_p.rewards - rr.rewards)))
    return torch.stack(effects, dim=-1).cpu()


def check_attribution(
    model: HookedRewardModel,
    sae: SparseAutoencoder,
    attribution: FeatureAttribution,
    *,
    top_k: int = 20,
    features: Sequence[int] | Tensor | None = None,
    freeze_norm_scale: bool = False,
) -> CausalCheck:
    """Measure the causal effect of the top-``k`` features (by mean |attribution|) and compare rankings.

    Texts: zero-ablation at the attributed positions (:func:`ablate_features`). Pairs: patching between
    chosen and rejected (:func:`patch_features`). Returns a :class:`CausalCheck` with Spearman correlations.
    """
    feats = torch.as_tensor(features) if features is not None else attribution.ranking(top_k)
    inp = attribution._inputs
    if not inp:
        raise InputError("This attribution carries no inputs (it was not made by attribute_features/_pairs).")
    if attribution.kind == "pair":
        if freeze_norm_scale:
            raise InputError("freeze_norm_scale is only supported for text ablations.")
        eff = patch_features(
            model,
            sae,
            inp["tokens"],
            inp["mask"],
            inp["tokens_rejected"],
            inp["mask_rejected"],
            feats,
            positions=attribution.positions,
            output=attribution.output,
        )
        kind = "patching"
    else:
        eff = ablate_features(
            model,
            sae,
            inp["tokens"],
            inp["mask"],
            feats,
            positions=attribution.positions,
            freeze_norm_scale=freeze_norm_scale,
            output=attribution.output,
        )
        kind = "ablation"
    att = attribution.values[:, feats]
    values = torch.stack([att.mean(0), eff.mean(0)], dim=-1)
    rho, p = _spearman(values[:, 0], values[:, 1])
    # Over (item, feature) cells, leaving out cells where both are ~0 (inactive features: ties at 0).
    a_flat, e_flat = att.flatten(), eff.flatten()
    tol = 1e-6 * float(torch.cat([a_flat.abs(), e_flat.abs()]).max().clamp_min(1e-12))
    live = (a_flat.abs() > tol) | (e_flat.abs() > tol)
    rho_items, _ = _spearman(a_flat[live], e_flat[live])
    return CausalCheck(
        values=values,
        dims=("feature", "measure"),
        labels={"feature": [f"f{int(f)}" for f in feats], "measure": ["attribution", "effect"]},
        features=feats,
        per_item_attribution=att,
        per_item_effect=eff,
        spearman=rho,
        pvalue=p,
        spearman_items=rho_items if not math.isnan(rho_items) else float("nan"),
        kind=kind,
        freeze_norm_scale=freeze_norm_scale,
    )
