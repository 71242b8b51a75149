"""Localise a probe factor's effect: direct reward attribution and activation patching, per component.

For a factor's pairs, two complementary per-component measures of the mean Δ = r(biased) − r(neutral):

* **Direct reward attribution (DRA)** — each component's direct contribution to the reward (its output at
  the reward position, read through the final norm with each run's own scale frozen, dotted with
  ``W_R_eff``), biased minus neutral, averaged over pairs.  Over the full decomposition (embeddings,
  every attention layer and MLP) the attributions sum to the mean Δ exactly (``b_R`` cancels).  Per head
  the same is done with the heads split through ``W_O``.
* **Activation patching** — run the neutral text with one component's output *at the reward position*
  replaced by its value from the biased run, and record ``r(patched) − r(neutral)``, averaged over pairs.
  Only the reward position is patched, and it is aligned explicitly (biased row ``i``'s reward position
  into neutral row ``i``'s reward position), so pairs of different lengths are never patched position by
  position.  This captures the component's direct effect plus its effect through later components *at
  that position*, and the change of the final norm's scale; it does not capture what the component
  writes at earlier positions (a head that reads the padding at the reward position is caught; an early
  MLP that processes padding tokens before they are attended to is not).

The two are shown side by side with their Spearman rank agreement over components.  DRA is read with
:func:`hooked_reward.analysis.attribution.attribution_from_cache` (heads split through ``W_O``; rows sum to
Δreward); patching uses :func:`hooked_reward.analysis.patching.run_patched` per pair with
``align="reward"`` and only the reward position patched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from hooked_reward.analysis.attribution import Granularity, attribution_from_cache
from hooked_reward.analysis.patching import Patch, reward_alignment, row_reward_position, run_patched
from hooked_reward.analysis.results import LabeledTensor
from hooked_reward.analysis.stats import spearman
from hooked_reward.errors import InputError
from hooked_reward.names import Component
from hooked_reward.outputs import select_output

__all__ = ["FactorLocalisation", "localise_pairs", "component_hook"]


@dataclass(repr=False)
class FactorLocalisation(LabeledTensor):
    """Per-component DRA and patching of one factor's mean Δ, a `LabeledTensor`.

    `values [method, component]`: row "dra" (direct reward attribution) and row "patch" (patching at the reward
    position) over `components`; `head_dra` / `head_patch` `[head]` over `head_labels` the same per head.
    `spearman` / `head_spearman`: Spearman ρ of DRA vs patching over components / heads (`analysis.stats`).
    """

    factor: str = ""
    spearman: float = math.nan
    head_labels: list[str] = field(default_factory=list)
    head_dra: Float[np.ndarray, " head"] = field(default_factory=lambda: np.zeros(0))
    head_patch: Float[np.ndarray, " head"] = field(default_factory=lambda: np.zeros(0))
    head_spearman: float = math.nan
    mean_delta: float = math.nan
    value_name: str = "Δ reward"

    @classmethod
    def build(
        cls,
        factor: str,
        components: Sequence[str],
        dra: Float[np.ndarray, " comp"],
        patch: Float[np.ndarray, " comp"],
        **fields: object,
    ) -> FactorLocalisation:
        """The result from its two per-component vectors (and any of the other fields by name)."""
        values = torch.from_numpy(np.stack([np.asarray(dra, np.float64), np.asarray(patch, np.float64)]))
        labels = {"method": ["dra", "patch"], "component": list(components)}
        return cls(values=values, dims=("method", "component"), labels=labels, factor=factor, **fields)  # type: ignore[arg-type]

    @property
    def components(self) -> list[str]:
        """The component labels (embed, `{l}_attn_out`, `{l}_mlp_out`, ...)."""
        return self.axis_labels("component")

    @property
    def dra(self) -> Float[np.ndarray, " comp"]:
        """Direct reward attribution of the mean Δ per component."""
        return self.values[0].numpy()

    @property
    def patch(self) -> Float[np.ndarray, " comp"]:
        """Reward-position patching effect of the mean Δ per component (NaN where not patched)."""
        return self.values[1].numpy()

    def to_frame(self):
        """Long table: one row per component or head, with its DRA and patching effect."""
        import pandas as pd

        rows = [
            {"factor": self.factor, "component": c, "kind": "component", "dra": float(a), "patch": float(p)}
            for c, a, p in zip(self.components, self.dra, self.patch, strict=True)
        ]
        rows += [
            {"factor": self.factor, "component": c, "kind": "head", "dra": float(a), "patch": float(p)}
            for c, a, p in zip(self.head_labels, self.head_dra, self.head_patch, strict=True)
        ]
        return pd.DataFrame(rows)

    def top(self, k: int = 3, heads: bool = False, measure: str = "dra") -> list[str]:
        """The ``k`` components (or heads) with the largest |DRA| (``measure="dra"``) or |patching| effect."""
        if measure not in ("dra", "patch"):
            raise InputError(f"measure must be 'dra' or 'patch', got {measure!r}")
        if heads:
            labels, vals = self.head_labels, (self.head_dra if measure == "dra" else self.head_patch)
        else:
            labels, vals = self.components, (self.dra if measure == "dra" else self.patch)
        order = np.argsort(-np.nan_to_num(np.abs(vals), nan=-1.0))
        return [labels[i] for i in order[:k]]

    def plot(self, ax=None, heads: bool = False):
        """Grouped bars: DRA and patching per component (or head)."""
        import matplotlib.pyplot as plt

        labels, a, p = (
            (self.head_labels, self.head_dra, self.head_patch) if heads else (self.components, self.dra, self.patch)
        )
        if ax is None:
            _, ax = plt.subplots(figsize=(max(4, 0.45 * len(labels) + 1), 3))
        x = np.arange(len(labels))
        ax.bar(x - 0.2, a, 0.4, label="direct attribution")
        ax.bar(x + 0.2, p, 0.4, label="patching (reward pos)")
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xticks(x, labels, rotation=90, fontsize=7)
        rho = self.head_spearman if heads else self.spearman
        ax.set_title(f"{self.factor}: mean Δ={self.mean_delta:.3g}, Spearman ρ={rho:.2f}", fontsize=9)
        ax.set_ylabel("Δ reward")
        ax.legend(fontsize=7)
        return ax


def component_hook(label: Component) -> tuple[str, int | None]:
    """TransformerLens hook name (and head index, for heads) of a component (a `names.Component`, as
    attribution results label their rows). Bias rows have no activation of their own: `InputError`."""
    if not isinstance(label, Component):
        raise InputError(f"{label!r} is a plain string; pass a names.Component (as attribution results carry).")
    if label.kind not in ("embed", "pos_embed", "attn_out", "mlp_out", "head"):
        raise InputError(f"Component {str(label)!r} ({label.kind}) has no activation of its own to patch.")
    return label.hook_name, label.head


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman ρ (`analysis.stats.spearman`) over the components both methods measured: rows never patched
    (bias rows, or patching off) are NaN by construction and left out."""
    return spearman(a, b, nan_policy="omit", what="DRA vs patching per component")


def _pair_dra(cache_b, cache_n, by: Granularity, output: int | str | None) -> tuple[list[Component], np.ndarray]:
    """Mean over pairs of DRA(biased) − DRA(neutral) per row of granularity ``by`` ("component"/"head").

    Uses :func:`hooked_reward.analysis.attribution.attribution_from_cache` (heads split with ``W_O``, bias
    rows kept so rows sum to Δreward); rows are labelled with `names.Component`s.
    """
    vb, labels = attribution_from_cache(cache_b, by=by, output=output)  # [row, batch, n_outputs]
    vn, _ = attribution_from_cache(cache_n, by=by, output=output)
    diff = (vb.float() - vn.float()).mean(1)
    diff = diff[:, 0] if diff.ndim == 2 and diff.shape[-1] == 1 else diff
    return list(labels), diff.cpu().numpy().astype(np.float64)


@torch.no_grad()
def _patch_at_reward(
    model,
    biased: tuple[Tensor, Tensor],
    neutral: tuple[Tensor, Tensor],
    r_neutral: Tensor,
    items: Sequence[tuple[str, int | None]],
    output: int | str | None,
) -> np.ndarray:
    """Mean over pairs of ``r(neutral with item patched from biased at the reward position) − r(neutral)``,
    with :func:`hooked_reward.analysis.patching.run_patched`: per pair, the neutral row (unpadded) is the
    target, the biased row's activations the source, aligned with ``align="reward"`` (reward position ↔
    reward position), one patched row per item."""
    (tb, mb), (tn, mn) = biased, neutral
    hooks = sorted({h for h, _ in items})
    _, cache = model.run_with_cache(tb, attention_mask=mb, names_filter=hooks)
    sums = np.zeros(len(items))
    for i in range(tb.shape[0]):
        keep_b, keep_n = mb[i].bool(), mn[i].bool()
        target = tn[i][keep_n.to(tn.device)]
        sources = {h: cache[h][i][keep_b.to(cache[h].device)] for h in hooks}
        source = tb[i][keep_b.to(tb.device)]
        align = reward_alignment(model, target, source, "reward")
        at = row_reward_position(model, target)
        sets = [[Patch(h, (at,), hd)] for h, hd in items]
        r = run_patched(model, target, sources, sets, align, output=output, progress=False)
        sums += r.numpy().astype(np.float64) - float(r_neutral[i])
    return sums / tb.shape[0]


@torch.no_grad()
def localise_pairs(
    model,
    biased: tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]],
    neutral: tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]],
    factor: str = "",
    *,
    heads: bool = True,
    patching: bool = True,
    output: int | str | None = None,
) -> FactorLocalisation:
    """DRA and reward-position patching of ``mean(r(biased) − r(neutral))`` per component (and head).

    ``biased`` / ``neutral`` are ``(tokens, attention_mask)`` of the two sides, row ``i`` a pair.  One
    cached run per side plus one patched run per component (and head).
    """
    (tb, mb), (tn, mn) = biased, neutral
    rb, cb = model.run_with_cache(tb, attention_mask=mb, positions="reward")
    rn, cn = model.run_with_cache(tn, attention_mask=mn, positions="reward")
    rb = select_output(rb, output, names=model.output_names).float()
    rn = select_output(rn, output, names=model.output_names).float()
    labels, dra = _pair_dra(cb, cn, "component", output)

    def patch_all(labs: list[Component]) -> np.ndarray:
        vals = np.full(len(labs), np.nan)
        items: list[tuple[int, str, int | None]] = []
        for i, lab in enumerate(labs):
            try:
                hook, head = component_hook(lab)
            except ValueError:  # bias rows (e.g. "0_attn_bias") have no activation to patch
                continue
            if hook in cb.cache_dict:
                items.append((i, hook, head))
        if not items:
            return vals
        effects = _patch_at_reward(model, (tb, mb), (tn, mn), rn, [(h, hd) for _, h, hd in items], output)
        for (i, _, _), e in zip(items, effects, strict=True):
            vals[i] = e
        return vals

    patch_vals = patch_all(labels) if patching else np.full(len(labels), np.nan)
    head_labels: list[Component] = []
    head_dra = np.zeros(0)
    head_patch = np.zeros(0)
    if heads:
        all_labels, all_dra = _pair_dra(cb, cn, "head", output)
        keep = [i for i, lab in enumerate(all_labels) if lab.kind == "head"]
        head_labels = [all_labels[i] for i in keep]
        head_dra = all_dra[keep]
        head_patch = patch_all(head_labels) if patching else np.full(len(head_labels), np.nan)

    return FactorLocalisation.build(
        factor,
        list(labels),
        dra,
        patch_vals,
        spearman=_spearman(dra, patch_vals),
        head_labels=list(head_labels),
        head_dra=head_dra,
        head_patch=head_patch,
        head_spearman=_spearman(head_dra, head_patch) if heads else math.nan,
        mean_delta=float((rb - rn).mean()),
    )


def concat_localisations(parts: Sequence[FactorLocalisation], weights: Sequence[int]) -> FactorLocalisation:
    """Weighted mean of per-batch localisations of the same factor (weights = rows per batch)."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()

    def avg(attr: str) -> np.ndarray:
        return np.sum([wi * getattr(p, attr) for wi, p in zip(w, parts, strict=True)], axis=0)

    first = parts[0]
    dra, patch, hd, hp = avg("dra"), avg("patch"), avg("head_dra"), avg("head_patch")
    return FactorLocalisation.build(
        first.factor,
        first.components,
        dra,
        patch,
        spearman=_spearman(dra, patch),
        head_labels=first.head_labels,
        head_dra=hd,
        head_patch=hp,
        head_spearman=_spearman(hd, hp),
        mean_delta=float(np.sum([wi * p.mean_delta for wi, p in zip(w, parts, strict=True)])),
    )
